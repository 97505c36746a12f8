//! The ZeroMQ transport over real sockets on 127.0.0.1: what only ZeroMQ has (raw and malformed
//! messages, a closed endpoint). What TCP and ZeroMQ share is in `transports.rs`.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{TestHandler, expected_reply, refusal, within};
use runtime::{CallKind, Limits, TransportError, ZmqClient, serve_zmq};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use zeromq::{DealerSocket, Socket, SocketRecv, SocketSend, ZmqMessage};

struct Server {
    endpoint: String,
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

async fn start(limits: Limits) -> Server {
    let handler = TestHandler::new();
    let (stop, stopped) = oneshot::channel::<()>();
    let (endpoint, task) = within(
        "bind",
        serve_zmq("tcp://127.0.0.1:0", handler.clone(), limits, async {
            let _ = stopped.await;
        }),
    )
    .await
    .expect("serve_zmq");
    assert!(
        endpoint.starts_with("tcp://127.0.0.1:") && !endpoint.ends_with(":0"),
        "bound endpoint {endpoint}"
    );
    Server {
        endpoint,
        stop,
        task,
    }
}

impl Server {
    async fn stop(self) {
        let _ = self.stop.send(());
        within("server shutdown", self.task)
            .await
            .expect("server task");
    }

    async fn client(&self) -> ZmqClient {
        within(
            "connect",
            ZmqClient::connect(&self.endpoint, Limits::default()),
        )
        .await
        .expect("connect")
    }
}

async fn ping(client: &ZmqClient, text: &str) {
    let reply = within(
        "ping",
        client.call(CallKind::Query, text.as_bytes().to_vec()),
    )
    .await
    .expect("ping call");
    assert_eq!(reply, expected_reply(CallKind::Query, text.as_bytes()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_message_gets_the_refusal_and_the_server_keeps_serving() {
    let limits = Limits {
        max_frame: 1024,
        ..Limits::default()
    };
    let server = start(limits).await;
    let generous = Limits {
        max_frame: 1 << 20,
        ..Limits::default()
    };
    let client = within("connect", ZmqClient::connect(&server.endpoint, generous))
        .await
        .expect("connect");

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
    ping(&client, "same client, after").await;
    let fresh = server.client().await;
    ping(&fresh, "new client").await;

    drop((client, fresh));
    server.stop().await;
}

/// zeromq's decoder reserves a frame's declared length before reading it: without the guard in
/// front of the ROUTER, this declaration of a 2^46-byte frame aborts the whole process.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_declaring_a_huge_frame_is_cut_off_and_the_server_keeps_serving() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let server = start(Limits::default()).await;
    let addr = server.endpoint.trim_start_matches("tcp://").to_string();
    let mut raw = within("raw connect", tokio::net::TcpStream::connect(&addr))
        .await
        .expect("raw connect");
    let mut greeting = vec![0u8; 64];
    greeting[0] = 0xff;
    greeting[9] = 0x7f;
    greeting[10] = 3;
    greeting[12..16].copy_from_slice(b"NULL");
    let mut attack = greeting;
    attack.push(0x02); // a long message frame
    attack.extend((1u64 << 46).to_be_bytes());
    within("send", raw.write_all(&attack))
        .await
        .expect("send the declaration");
    // The server answers with its own greeting, then closes the connection.
    let mut sink = Vec::new();
    within("closed by the server", raw.read_to_end(&mut sink))
        .await
        .expect("the connection ends cleanly");

    let client = server.client().await;
    ping(&client, "after the huge declaration").await;
    drop(client);
    server.stop().await;
}

fn message(parts: &[&[u8]]) -> ZmqMessage {
    let parts: Vec<Bytes> = parts
        .iter()
        .map(|part| Bytes::copy_from_slice(part))
        .collect();
    ZmqMessage::try_from(parts).expect("non-empty message")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_messages_are_dropped_or_refused_and_the_server_keeps_serving() {
    let server = start(Limits::default()).await;
    let bystander = server.client().await;

    let mut raw = DealerSocket::new();
    within("raw connect", raw.connect(&server.endpoint))
        .await
        .expect("raw connect");
    // No readable id: dropped without a reply.
    raw.send(message(&[b"garbage"])).await.expect("send");
    raw.send(message(&[b"short", &[0], b"x"]))
        .await
        .expect("send");
    // A readable id but an unknown kind, or missing parts: refused under that id.
    let bad_kind = 11u64.to_be_bytes();
    raw.send(message(&[&bad_kind, &[9], b"x"]))
        .await
        .expect("send");
    let missing = 12u64.to_be_bytes();
    raw.send(message(&[&missing, &[0]])).await.expect("send");
    // A good request on the same socket is still answered.
    let good = 13u64.to_be_bytes();
    raw.send(message(&[&good, &[1], b"abc"]))
        .await
        .expect("send");

    let mut replies = Vec::new();
    for _ in 0..3 {
        let reply = within("raw reply", raw.recv()).await.expect("recv");
        let parts = reply.into_vec();
        assert_eq!(parts.len(), 3, "{parts:?}");
        assert_eq!(parts[1].as_ref(), &[2], "reply kind");
        let id = u64::from_be_bytes(parts[0].as_ref().try_into().expect("8-byte id"));
        replies.push((id, parts[2].to_vec()));
    }
    replies.sort();
    assert_eq!(
        replies,
        vec![
            (
                11,
                refusal("malformed frame: unknown call kind 9 in request 11")
            ),
            (
                12,
                refusal(
                    "malformed frame: request 12 has 1 parts after its id; expected 2 (kind, payload)"
                )
            ),
            (13, expected_reply(CallKind::Query, b"abc")),
        ]
    );

    ping(&bystander, "bystander").await;
    drop((raw, bystander));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connecting_to_a_closed_endpoint_names_it() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    drop(listener);
    let endpoint = format!("tcp://127.0.0.1:{port}");

    let limits = Limits {
        connect_timeout: Duration::from_millis(300),
        ..Limits::default()
    };
    let error = within(
        "connect to a closed endpoint",
        ZmqClient::connect(&endpoint, limits),
    )
    .await
    .expect_err("nothing listens there");
    match &error {
        TransportError::Connect { addr, .. } => assert_eq!(addr, &endpoint),
        other => panic!("expected Connect, got {other:?}"),
    }
    assert!(error.to_string().contains(&endpoint), "{error}");
}

/// The resident memory of this process, in bytes.
fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .expect("VmRSS")
        * 1024
}

/// zeromq collects every frame of a multipart message before it delivers any: a peer that
/// sends 2,000 frames of 64 KiB marked "more" (125 MiB) is cut off by the guard once they add
/// up past the frame limit, and the server neither holds them nor stops serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_of_endless_continuation_frames_is_cut_off_with_bounded_memory() {
    use tokio::io::AsyncWriteExt as _;

    let server = start(Limits::default()).await;
    let before = rss_bytes();
    let addr = server.endpoint.trim_start_matches("tcp://").to_string();
    let mut raw = within("raw connect", tokio::net::TcpStream::connect(&addr))
        .await
        .expect("raw connect");
    // A ZMTP 3.0 greeting (NULL mechanism) and a READY command for a DEALER socket, so zeromq
    // takes the frames that follow as a message.
    let mut stream = vec![0u8; 64];
    stream[0] = 0xff;
    stream[9] = 0x7f;
    stream[10] = 3;
    stream[12..16].copy_from_slice(b"NULL");
    let mut ready = vec![5u8];
    ready.extend(b"READY");
    ready.push(11);
    ready.extend(b"Socket-Type");
    ready.extend(6u32.to_be_bytes());
    ready.extend(b"DEALER");
    stream.extend([0x04, ready.len() as u8]);
    stream.extend(ready);
    let chunk = vec![7u8; 64 * 1024];
    let mut frame = vec![0x03]; // "more", long length
    frame.extend((chunk.len() as u64).to_be_bytes());
    frame.extend(&chunk);
    let sent = tokio::time::timeout(Duration::from_secs(60), async {
        raw.write_all(&stream).await?;
        for _ in 0..2000 {
            raw.write_all(&frame).await?;
        }
        raw.flush().await
    })
    .await;
    eprintln!("send of 2,000 x 64 KiB frames marked more: {sent:?}");
    assert!(
        matches!(sent, Ok(Err(_))),
        "the server took 125 MiB of one message: {sent:?}"
    );
    drop(raw);
    let client = server.client().await;
    ping(&client, "after the endless message").await;
    let grown = rss_bytes().saturating_sub(before);
    eprintln!("resident memory grew by {} KiB", grown / 1024);
    assert!(
        grown < 48 << 20,
        "the server held the message: resident memory grew by {} MiB",
        grown >> 20
    );
    drop(client);
    server.stop().await;
}
