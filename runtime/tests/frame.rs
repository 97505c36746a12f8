//! The frame codec on in-memory readers.

use std::io;

use runtime::wire::frame::{self, Frame, FrameKind, read_frame, write_frame};
use runtime::{CallKind, TransportError};

fn raw(len: u32, id: u64, kind: u8, payload: &[u8]) -> Vec<u8> {
    let mut bytes = len.to_be_bytes().to_vec();
    bytes.extend_from_slice(&id.to_be_bytes());
    bytes.push(kind);
    bytes.extend_from_slice(payload);
    bytes
}

#[tokio::test]
async fn frames_round_trip_and_end_cleanly() {
    let mut wire = Vec::new();
    write_frame(&mut wire, 1, FrameKind::Call(CallKind::Command), b"deposit")
        .await
        .expect("write");
    write_frame(&mut wire, u64::MAX, FrameKind::Call(CallKind::Query), b"")
        .await
        .expect("write");
    write_frame(&mut wire, 1, FrameKind::Reply, b"ok")
        .await
        .expect("write");
    assert_eq!(&wire[..13], &raw(16, 1, 0, b"")[..13], "documented layout");
    assert_eq!(
        wire[..20].to_vec(),
        frame::encode(1, FrameKind::Call(CallKind::Command), b"deposit").expect("encode")
    );

    let mut reader = wire.as_slice();
    let expected = [
        Frame {
            id: 1,
            kind: FrameKind::Call(CallKind::Command),
            payload: b"deposit".to_vec(),
        },
        Frame {
            id: u64::MAX,
            kind: FrameKind::Call(CallKind::Query),
            payload: Vec::new(),
        },
        Frame {
            id: 1,
            kind: FrameKind::Reply,
            payload: b"ok".to_vec(),
        },
    ];
    for frame in expected {
        assert_eq!(
            read_frame(&mut reader, 1024).await.expect("read"),
            Some(frame)
        );
    }
    assert_eq!(
        read_frame(&mut reader, 1024).await.expect("clean end"),
        None
    );
}

#[tokio::test]
async fn an_oversized_frame_is_refused_from_its_header() {
    // Only the header is there: reading the body would fail with UnexpectedEof instead.
    let wire = raw(1 << 30, 3, 0, b"");
    let error = read_frame(&mut wire.as_slice(), 4096)
        .await
        .expect_err("too large");
    assert!(
        matches!(error, TransportError::FrameTooLarge { size, limit: 4096 } if size == 1 << 30),
        "{error:?}"
    );

    // Exactly at the limit is fine.
    let wire = raw(9 + 4, 3, 1, b"abcd");
    assert!(
        read_frame(&mut wire.as_slice(), 13)
            .await
            .expect("fits")
            .is_some()
    );
}

#[tokio::test]
async fn malformed_frames_are_rejected() {
    let short = raw(8, 0, 0, b"");
    let error = read_frame(&mut short.as_slice(), 1024)
        .await
        .expect_err("short");
    assert!(matches!(error, TransportError::Malformed(_)), "{error:?}");

    let bad_kind = raw(9, 4, 3, b"");
    let error = read_frame(&mut bad_kind.as_slice(), 1024)
        .await
        .expect_err("bad kind");
    assert!(matches!(error, TransportError::Malformed(_)), "{error:?}");
}

#[tokio::test]
async fn a_truncated_frame_is_an_unexpected_eof() {
    let whole = raw(9 + 10, 9, 0, &[5; 10]);
    for cut in [1, 3, 4, 8, 13, 20] {
        let error = read_frame(&mut &whole[..cut], 1024)
            .await
            .expect_err("truncated");
        assert!(
            matches!(&error, TransportError::Io(e) if e.kind() == io::ErrorKind::UnexpectedEof),
            "cut at {cut}: {error:?}"
        );
    }
}

#[test]
fn kinds_map_to_their_wire_bytes() {
    assert_eq!(CallKind::Command.to_byte(), 0);
    assert_eq!(CallKind::Query.to_byte(), 1);
    assert_eq!(FrameKind::Reply.to_byte(), 2);
    for byte in 0..=2 {
        let kind = FrameKind::from_byte(byte).expect("known");
        assert_eq!(kind.to_byte(), byte);
    }
    assert_eq!(FrameKind::from_byte(3), None);
    assert_eq!(CallKind::from_byte(2), None);
}
