//! The TCP transport over real sockets on 127.0.0.1: what only frames have (raw, oversized,
//! truncated and malformed frames, timeouts, client limits). What TCP and ZeroMQ share is in
//! `transports.rs`.

mod common;

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use common::{HOLD, TestHandler, expected_reply, refusal, within};
use runtime::wire::frame::{self, Frame, FrameKind};
use runtime::{CallKind, Limits, TcpClient, TransportError, serve_tcp};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A server running in a task, stopped by [`Server::stop`].
struct Server {
    addr: SocketAddr,
    handler: Arc<TestHandler>,
    stop: oneshot::Sender<()>,
    task: JoinHandle<io::Result<()>>,
}

async fn start(limits: Limits) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local addr");
    let handler = TestHandler::new();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(serve_tcp(listener, handler.clone(), limits, async {
        let _ = stopped.await;
    }));
    Server {
        addr,
        handler,
        stop,
        task,
    }
}

impl Server {
    async fn stop(self) {
        let _ = self.stop.send(());
        within("server shutdown", self.task)
            .await
            .expect("server task")
            .expect("serve_tcp result");
    }

    async fn client(&self) -> TcpClient {
        within("connect", TcpClient::connect(self.addr, Limits::default()))
            .await
            .expect("connect")
    }
}

async fn ping(client: &TcpClient, text: &str) {
    let reply = within(
        "ping",
        client.call(CallKind::Query, text.as_bytes().to_vec()),
    )
    .await
    .expect("ping call");
    assert_eq!(reply, expected_reply(CallKind::Query, text.as_bytes()));
}

fn raw_frame(len: u32, id: u64, kind: u8, payload: &[u8]) -> Vec<u8> {
    let mut bytes = len.to_be_bytes().to_vec();
    bytes.extend_from_slice(&id.to_be_bytes());
    bytes.push(kind);
    bytes.extend_from_slice(payload);
    bytes
}

/// Reads everything until the server closes the connection.
async fn read_to_close(stream: &mut TcpStream) -> Vec<u8> {
    let mut rest = Vec::new();
    match within(
        "server closing the connection",
        stream.read_to_end(&mut rest),
    )
    .await
    {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {}
        Err(e) => panic!("reading until close: {e}"),
    }
    rest
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_frame_gets_the_refusal_and_the_server_keeps_serving() {
    let limits = Limits {
        max_frame: 1024,
        ..Limits::default()
    };
    let server = start(limits).await;
    let generous = Limits {
        max_frame: 1 << 20,
        ..Limits::default()
    };
    let client = within("connect", TcpClient::connect(server.addr, generous))
        .await
        .expect("connect");
    ping(&client, "before").await;

    let reply = within(
        "oversized call",
        client.call(CallKind::Command, vec![7; 2000]),
    )
    .await
    .expect("the refusal is a reply");
    assert_eq!(
        reply,
        refusal("frame of 2009 bytes exceeds the limit of 1024")
    );

    // The server closes that connection after the refusal; the client notices and fails fast.
    let after = within(
        "call after the refusal",
        client.call(CallKind::Query, b"x".to_vec()),
    )
    .await;
    assert!(
        matches!(after, Err(TransportError::Closed)),
        "expected Closed, got {after:?}"
    );
    assert!(client.is_closed());

    // New connections are served.
    let fresh = server.client().await;
    ping(&fresh, "after").await;

    drop((client, fresh));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_header_is_refused_without_waiting_for_the_body() {
    let limits = Limits {
        max_frame: 1024,
        ..Limits::default()
    };
    let server = start(limits).await;
    let mut raw = TcpStream::connect(server.addr).await.expect("raw connect");
    // Declares a 1 GiB frame and sends nothing more: the refusal must not wait for the body.
    raw.write_all(&raw_frame(1 << 30, 77, 0, &[]))
        .await
        .expect("write header");

    let refused = within("refusal", frame::read_frame(&mut raw, 1 << 20))
        .await
        .expect("read refusal")
        .expect("a refusal frame");
    assert_eq!(
        refused,
        Frame {
            id: 77,
            kind: FrameKind::Reply,
            payload: refusal(&format!(
                "frame of {} bytes exceeds the limit of 1024",
                1u32 << 30
            )),
        }
    );
    drop(raw);

    let client = server.client().await;
    ping(&client, "still serving").await;
    drop(client);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_truncated_frame_closes_only_its_connection() {
    let server = start(Limits::default()).await;
    let bystander = server.client().await;

    let mut raw = TcpStream::connect(server.addr).await.expect("raw connect");
    let whole = raw_frame(9 + 100, 5, 0, &[1; 100]);
    raw.write_all(&whole[..40])
        .await
        .expect("write half a frame");
    raw.shutdown().await.expect("shutdown");
    assert!(
        read_to_close(&mut raw).await.is_empty(),
        "no reply to a truncated frame"
    );

    ping(&bystander, "bystander").await;
    let fresh = server.client().await;
    ping(&fresh, "fresh").await;

    drop((bystander, fresh));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frame_shorter_than_its_header_closes_only_its_connection() {
    let server = start(Limits::default()).await;
    let bystander = server.client().await;

    let mut raw = TcpStream::connect(server.addr).await.expect("raw connect");
    raw.write_all(&[0, 0, 0, 3, 1, 2, 3]).await.expect("write");
    assert!(read_to_close(&mut raw).await.is_empty());

    ping(&bystander, "bystander").await;
    drop(bystander);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_kind_byte_is_refused_and_closes_only_its_connection() {
    let server = start(Limits::default()).await;
    let bystander = server.client().await;

    let mut raw = TcpStream::connect(server.addr).await.expect("raw connect");
    raw.write_all(&raw_frame(9 + 3, 42, 7, b"abc"))
        .await
        .expect("write");
    let refused = within("refusal", frame::read_frame(&mut raw, 1 << 20))
        .await
        .expect("read")
        .expect("a refusal frame");
    assert_eq!(refused.id, 42);
    assert_eq!(refused.kind, FrameKind::Reply);
    assert_eq!(
        refused.payload,
        refusal("malformed frame: unknown frame kind 7 in frame 42")
    );
    assert!(
        read_to_close(&mut raw).await.is_empty(),
        "then the connection closes"
    );

    ping(&bystander, "bystander").await;
    let fresh = server.client().await;
    ping(&fresh, "fresh").await;

    drop((bystander, fresh));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connecting_to_a_closed_port_names_the_address() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    drop(listener);

    let error = within(
        "connect to a closed port",
        TcpClient::connect(addr, Limits::default()),
    )
    .await
    .expect_err("nothing listens there");
    match &error {
        TransportError::Connect { addr: named, .. } => assert_eq!(named, &addr.to_string()),
        other => panic!("expected Connect, got {other:?}"),
    }
    assert!(error.to_string().contains(&addr.to_string()), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_times_out_and_the_connection_stays_usable() {
    let server = start(Limits::default()).await;
    let limits = Limits {
        request_timeout: Duration::from_millis(200),
        ..Limits::default()
    };
    let client = within("connect", TcpClient::connect(server.addr, limits))
        .await
        .expect("connect");

    let timed_out = within("held call", client.call(CallKind::Command, HOLD.to_vec())).await;
    assert!(
        matches!(timed_out, Err(TransportError::Timeout)),
        "expected Timeout, got {timed_out:?}"
    );
    ping(&client, "after the timeout").await;

    // The late reply to the abandoned call is dropped without disturbing the connection.
    server.handler.open_gate();
    server.handler.wait_until_released().await;
    ping(&client, "after the late reply").await;

    drop(client);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_over_the_client_limit_is_not_sent() {
    let server = start(Limits::default()).await;
    let limits = Limits {
        max_frame: 100,
        ..Limits::default()
    };
    let client = within("connect", TcpClient::connect(server.addr, limits))
        .await
        .expect("connect");
    let error = client
        .call(CallKind::Command, vec![0; 92])
        .await
        .expect_err("too large");
    assert!(
        matches!(
            error,
            TransportError::FrameTooLarge {
                size: 101,
                limit: 100
            }
        ),
        "{error:?}"
    );
    ping(&client, "still connected").await;
    drop(client);
    server.stop().await;
}

/// A connection over the server's limit is closed at once, and the ones within it keep working;
/// once one closes, a new one is served again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_limit_are_closed_and_the_others_served() {
    let limits = Limits {
        max_connections: 1,
        ..Limits::default()
    };
    let server = start(limits).await;
    let first = server.client().await;
    ping(&first, "first").await;
    let second = server.client().await;
    let refused = within(
        "a call over the connection limit",
        second.call(CallKind::Query, b"second".to_vec()),
    )
    .await;
    assert!(
        refused.is_err(),
        "a second connection was served: {refused:?}"
    );
    ping(&first, "still served").await;
    drop(first);
    drop(second);
    // The first connection's task ends shortly after its client goes: retry until it has.
    let deadline = tokio::time::Instant::now() + common::STEP;
    loop {
        let third = server.client().await;
        match third.call(CallKind::Query, b"third".to_vec()).await {
            Ok(_) => break,
            Err(e) => assert!(
                tokio::time::Instant::now() < deadline,
                "no connection served after the first closed: {e}"
            ),
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    server.stop().await;
}

/// A connection that sends nothing is closed after the idle timeout and gives back its slot;
/// one that keeps calling is not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_connection_is_closed_and_frees_its_slot() {
    use tokio::io::AsyncReadExt as _;

    let limits = Limits {
        max_connections: 1,
        idle_timeout: Duration::from_secs(1),
        ..Limits::default()
    };
    let server = start(limits).await;
    let mut silent = within("raw connect", tokio::net::TcpStream::connect(server.addr))
        .await
        .expect("raw connect");
    let mut sink = Vec::new();
    let closed = within("closed by the server", silent.read_to_end(&mut sink)).await;
    assert!(
        matches!(closed, Ok(0)),
        "the idle connection ended with {closed:?}"
    );
    // Its slot is free again: a client is served, and calls keep it from going idle.
    let client = server.client().await;
    for i in 0..15 {
        ping(&client, &format!("busy {i}")).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(client);
    server.stop().await;
}
