//! Frames over TCP and ZeroMQ: garbage, unknown operations, bad arguments, wrong kinds,
//! oversized and broken frames; each refused with a typed error while the connection (or the
//! server) keeps serving.

use bank_generated::{BankCallError, BankCommand, BankError, BankReply, decode_reply};
use runtime::wire::frame::{self, FrameKind};
use runtime::{CallError, CallKind, Failure, Limits, ZmqClient};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::*;

// ------------------------------------------------------------------------------------------
// TCP frames
// ------------------------------------------------------------------------------------------

/// A raw TCP connection speaking frames.
struct RawFrames {
    stream: TcpStream,
}

impl RawFrames {
    async fn connect(addr: SocketAddr) -> RawFrames {
        RawFrames {
            stream: TcpStream::connect(addr).await.expect("connect"),
        }
    }

    async fn send(&mut self, id: u64, kind: FrameKind, payload: &[u8]) {
        frame::write_frame(&mut self.stream, id, kind, payload)
            .await
            .expect("write frame");
        self.stream.flush().await.expect("flush");
    }

    async fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("write");
        self.stream.flush().await.expect("flush");
    }

    /// The next frame; `None` when the server closed the connection.
    async fn next(&mut self) -> Option<frame::Frame> {
        let read = frame::read_frame(&mut self.stream, Limits::DEFAULT_MAX_FRAME);
        match tokio::time::timeout(IO_DEADLINE, read).await {
            Err(_) => panic!("no frame and no close within {IO_DEADLINE:?}"),
            Ok(Ok(frame)) => frame,
            // A reset counts as closed.
            Ok(Err(runtime::TransportError::Io(e)))
                if e.kind() == std::io::ErrorKind::ConnectionReset =>
            {
                None
            }
            Ok(Err(e)) => panic!("reading a frame: {e}"),
        }
    }

    /// The reply to request `id`, decoded.
    async fn reply(&mut self, id: u64) -> Result<BankReply, BankCallError> {
        let frame = self
            .next()
            .await
            .unwrap_or_else(|| panic!("the server closed instead of answering request {id}"));
        assert_eq!(frame.id, id, "the reply carries the request's id");
        assert_eq!(frame.kind, FrameKind::Reply);
        decode_reply(&frame.payload)
    }

    async fn assert_closed(&mut self, what: &str) {
        if let Some(frame) = self.next().await {
            panic!("{what}: expected the server to close, got {frame:?}");
        }
    }
}

fn encode(command: &BankCommand) -> Vec<u8> {
    command.encode().expect("encode command")
}

fn assert_transport_error(what: &str, reply: Result<BankReply, BankCallError>, needle: &str) {
    match reply {
        Err(CallError::Failure(Failure::Transport(message))) => assert!(
            message.contains(needle),
            "{what}: `{message}` should mention `{needle}`"
        ),
        other => panic!("{what}: expected a Transport error, got {other:?}"),
    }
}

fn command_frame() -> FrameKind {
    FrameKind::Call(CallKind::Command)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_bad_payloads_get_transport_errors_and_the_connection_stays_open() {
    let server = Server::start(Variant::Tcp, runtime::api::server::MAX_API_MESSAGE).await;
    let client = net::connect_tcp(&server.addr.to_string(), Limits::default())
        .await
        .expect("connect");
    let seeded = seed(&client).await;
    let before = snapshot(&client).await;
    let id = seeded.account_id;

    let mut raw = RawFrames::connect(server.addr).await;
    let cases: Vec<(&str, FrameKind, Vec<u8>, &str)> = vec![
        ("garbage bytes", command_frame(), vec![0xff, 0x00, 0x13, 0x37, b'{'], "malformed command"),
        ("empty payload", command_frame(), Vec::new(), "malformed command"),
        (
            "an unknown operation",
            command_frame(),
            br#"{"nope":{"account_id":1}}"#.to_vec(),
            "malformed command",
        ),
        (
            "a malformed amount",
            command_frame(),
            format!(r#"{{"deposit":{{"account_id":{id},"amount":"abc"}}}}"#).into_bytes(),
            "malformed command",
        ),
        (
            "an unknown field",
            command_frame(),
            format!(r#"{{"deposit":{{"account_id":{id},"amount":"1.00","x":1}}}}"#).into_bytes(),
            "malformed command",
        ),
        (
            "two operations in one command",
            command_frame(),
            format!(
                r#"{{"deposit":{{"account_id":{id},"amount":"1.00"}},"withdraw":{{"account_id":{id},"amount":"1.00"}}}}"#
            )
            .into_bytes(),
            "malformed command",
        ),
    ];
    for (n, (what, kind, payload, needle)) in cases.into_iter().enumerate() {
        let request_id = 100 + n as u64;
        raw.send(request_id, kind, &payload).await;
        assert_transport_error(what, raw.reply(request_id).await, needle);
    }

    // A valid command sent as a query is refused (queries never change state).
    let deposit = encode(&BankCommand::Deposit {
        account_id: id,
        amount: money("1.00"),
    });
    raw.send(200, FrameKind::Call(CallKind::Query), &deposit)
        .await;
    assert_transport_error(
        "a command sent as a query",
        raw.reply(200).await,
        "is a command",
    );
    // A valid query sent as a command is refused too (it would enter the log).
    let count = encode(&BankCommand::GetCustomerCount {});
    raw.send(202, command_frame(), &count).await;
    assert_transport_error(
        "a query sent as a command",
        raw.reply(202).await,
        "is a query",
    );
    // An application error travels typed.
    let unknown = encode(&BankCommand::Deposit {
        account_id: id + 1000,
        amount: money("1.00"),
    });
    raw.send(201, command_frame(), &unknown).await;
    let reply = raw.reply(201).await;
    assert!(
        matches!(reply, Err(CallError::Domain(BankError::NotFound(_)))),
        "{reply:?}"
    );

    // The same connection still answers a good request.
    raw.send(
        300,
        FrameKind::Call(CallKind::Query),
        &encode(&BankCommand::GetCustomerCount {}),
    )
    .await;
    assert_eq!(raw.reply(300).await, Ok(BankReply::GetCustomerCount(1)));
    drop(raw);

    assert_unchanged_then_validate("tcp", &client, &before, seeded).await;
    drop(client);
    server.stop().await;
}

/// The serialized command (the future log entry) documents decimals as strings; a JSON number
/// is a float on the wire and must be refused like any malformed command.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_amount_as_a_json_number_is_refused() {
    let server = Server::start(Variant::Tcp, runtime::api::server::MAX_API_MESSAGE).await;
    let client = net::connect_tcp(&server.addr.to_string(), Limits::default())
        .await
        .expect("connect");
    let seeded = seed(&client).await;
    let before = snapshot(&client).await;
    let id = seeded.account_id;
    let mut raw = RawFrames::connect(server.addr).await;
    let payload = format!(r#"{{"deposit":{{"account_id":{id},"amount":1.5}}}}"#);
    raw.send(1, command_frame(), payload.as_bytes()).await;
    assert_transport_error("amount 1.5", raw.reply(1).await, "malformed command");
    drop(raw);
    assert_unchanged_then_validate("tcp", &client, &before, seeded).await;
    drop(client);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_refused_and_broken_frames_close_only_their_connection() {
    let server = Server::start(Variant::Tcp, SMALL_LIMIT).await;
    let client = net::connect_tcp(&server.addr.to_string(), Limits::default())
        .await
        .expect("connect");
    let seeded = seed(&client).await;
    let before = snapshot(&client).await;
    let id = seeded.account_id;
    let deposit = encode(&BankCommand::Deposit {
        account_id: id,
        amount: money("1.00"),
    });

    // Oversized: a valid command larger than the server's limit gets a refusal under its id,
    // then the connection closes.
    let big = encode(&BankCommand::CreateCustomer {
        first_name: "x".repeat(10 * 1024),
        last_name: "Big".into(),
        address: "Nowhere".into(),
    });
    let mut raw = RawFrames::connect(server.addr).await;
    raw.send(1, command_frame(), &big).await;
    assert_transport_error("oversized frame", raw.reply(1).await, "exceeds");
    raw.assert_closed("after an oversized frame").await;

    // An unknown kind byte (7) in front of a valid deposit: refused, then closed.
    let mut raw = RawFrames::connect(server.addr).await;
    let mut bytes = frame::encode(2, command_frame(), &deposit).expect("encode");
    bytes[frame::HEADER_LEN - 1] = 7;
    raw.send_raw(&bytes).await;
    assert_transport_error("kind byte 7", raw.reply(2).await, "unknown frame kind 7");
    raw.assert_closed("after a bad kind byte").await;

    // A reply frame sent as a request: refused, then closed.
    let mut raw = RawFrames::connect(server.addr).await;
    raw.send(3, FrameKind::Reply, &deposit).await;
    assert_transport_error("a reply as a request", raw.reply(3).await, "reply");
    raw.assert_closed("after a reply frame").await;

    // Truncated: the header announces the whole deposit, half of it arrives, then the client
    // stops sending. No reply, the connection closes, and the half command is not applied.
    let mut raw = RawFrames::connect(server.addr).await;
    let bytes = frame::encode(4, command_frame(), &deposit).expect("encode");
    raw.send_raw(&bytes[..frame::HEADER_LEN + deposit.len() / 2])
        .await;
    raw.stream.shutdown().await.expect("shutdown write");
    raw.assert_closed("after a truncated frame").await;

    // A declared length below the header's 9 bytes: closed without a reply.
    let mut raw = RawFrames::connect(server.addr).await;
    raw.send_raw(&[0, 0, 0, 3, 1, 2, 3]).await;
    raw.assert_closed("after a length below 9").await;

    // A truncated header, then close.
    let mut raw = RawFrames::connect(server.addr).await;
    raw.send_raw(&[0, 0]).await;
    raw.stream.shutdown().await.expect("shutdown write");
    raw.assert_closed("after half a length prefix").await;

    // A new raw connection is served normally.
    let mut raw = RawFrames::connect(server.addr).await;
    raw.send(
        5,
        FrameKind::Call(CallKind::Query),
        &encode(&BankCommand::GetAccountCount {}),
    )
    .await;
    assert_eq!(raw.reply(5).await, Ok(BankReply::GetAccountCount(1)));
    drop(raw);

    // The client connected before all this was never disturbed.
    assert_unchanged_then_validate("tcp", &client, &before, seeded).await;
    drop(client);
    server.stop().await;
}

// ------------------------------------------------------------------------------------------
// ZeroMQ
// ------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zmq_bad_and_oversized_payloads_get_transport_errors() {
    let server = Server::start(Variant::Zmq, SMALL_LIMIT).await;
    let client = net::connect_zmq(&server.addr.to_string(), Limits::default())
        .await
        .expect("connect");
    let seeded = seed(&client).await;
    let before = snapshot(&client).await;
    let id = seeded.account_id;

    // A raw client with the default (larger) limit, so it sends what the server refuses.
    let raw = ZmqClient::connect(&format!("tcp://{}", server.addr), Limits::default())
        .await
        .expect("raw connect");
    let call = |kind: CallKind, payload: Vec<u8>| {
        let raw = raw.clone();
        async move {
            let bytes = tokio::time::timeout(IO_DEADLINE, raw.call(kind, payload))
                .await
                .expect("a reply within the deadline")
                .expect("the call itself succeeds");
            decode_reply(&bytes)
        }
    };

    let garbage = vec![0xff, 0x00, 0x13, 0x37, b'{'];
    assert_transport_error(
        "garbage",
        call(CallKind::Command, garbage).await,
        "malformed command",
    );
    assert_transport_error(
        "an unknown operation",
        call(CallKind::Command, br#"{"nope":{}}"#.to_vec()).await,
        "malformed command",
    );
    assert_transport_error(
        "a malformed amount",
        call(
            CallKind::Command,
            format!(r#"{{"deposit":{{"account_id":{id},"amount":"abc"}}}}"#).into_bytes(),
        )
        .await,
        "malformed command",
    );
    let big = encode(&BankCommand::CreateCustomer {
        first_name: "x".repeat(10 * 1024),
        last_name: "Big".into(),
        address: "Nowhere".into(),
    });
    assert_transport_error("oversized", call(CallKind::Command, big).await, "exceeds");
    let deposit = encode(&BankCommand::Deposit {
        account_id: id,
        amount: money("1.00"),
    });
    assert_transport_error(
        "a command sent as a query",
        call(CallKind::Query, deposit).await,
        "is a command",
    );

    // The same raw client is still served.
    assert_eq!(
        call(CallKind::Query, encode(&BankCommand::GetCustomerCount {})).await,
        Ok(BankReply::GetCustomerCount(1))
    );
    drop(raw);

    assert_unchanged_then_validate("zmq", &client, &before, seeded).await;
    drop(client);
    server.stop().await;
}
