//! What the TCP and ZeroMQ transports promise alike, checked on both: concurrent calls each get
//! their own reply, a held call does not block later ones, and a server shutdown fails the
//! pending and the later calls. What only one of them has (raw frames, raw ZeroMQ messages,
//! timeouts) is tested in `tcp.rs` and `zmq.rs`.

mod common;

use std::sync::Arc;

use common::{HOLD, TestHandler, call_number, expected_reply, within};
use runtime::{CallKind, Limits, TcpClient, TransportError, ZmqClient, serve_tcp, serve_zmq};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::{JoinHandle, JoinSet};

#[derive(Debug, Clone, Copy)]
enum Transport {
    Tcp,
    Zmq,
}

const BOTH: [Transport; 2] = [Transport::Tcp, Transport::Zmq];

/// A client of either transport.
#[derive(Debug, Clone)]
enum Client {
    Tcp(TcpClient),
    Zmq(ZmqClient),
}

impl Client {
    async fn call(&self, kind: CallKind, payload: Vec<u8>) -> Result<Vec<u8>, TransportError> {
        match self {
            Client::Tcp(c) => c.call(kind, payload).await,
            Client::Zmq(c) => c.call(kind, payload).await,
        }
    }
}

/// A server running in a task, stopped by [`Server::stop`].
struct Server {
    transport: Transport,
    addr: String,
    handler: Arc<TestHandler>,
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl Transport {
    async fn start(self) -> Server {
        let handler = TestHandler::new();
        let (stop, stopped) = oneshot::channel::<()>();
        let shutdown = async {
            let _ = stopped.await;
        };
        let (addr, task) = match self {
            Transport::Tcp => {
                let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
                let addr = listener.local_addr().expect("local addr").to_string();
                let serving = serve_tcp(listener, handler.clone(), Limits::default(), shutdown);
                let task = tokio::spawn(async move { serving.await.expect("serve_tcp result") });
                (addr, task)
            }
            Transport::Zmq => within(
                "bind",
                serve_zmq(
                    "tcp://127.0.0.1:0",
                    handler.clone(),
                    Limits::default(),
                    shutdown,
                ),
            )
            .await
            .expect("serve_zmq"),
        };
        Server {
            transport: self,
            addr,
            handler,
            stop,
            task,
        }
    }
}

impl Server {
    async fn stop(self) {
        let _ = self.stop.send(());
        within("server shutdown", self.task)
            .await
            .expect("server task");
    }

    async fn client(&self) -> Client {
        let limits = Limits::default();
        match self.transport {
            Transport::Tcp => Client::Tcp(
                within("connect", TcpClient::connect(self.addr.clone(), limits))
                    .await
                    .expect("connect"),
            ),
            Transport::Zmq => Client::Zmq(
                within("connect", ZmqClient::connect(&self.addr, limits))
                    .await
                    .expect("connect"),
            ),
        }
    }
}

async fn ping(client: &Client, text: &str) {
    let reply = within(
        "ping",
        client.call(CallKind::Query, text.as_bytes().to_vec()),
    )
    .await
    .expect("ping call");
    assert_eq!(reply, expected_reply(CallKind::Query, text.as_bytes()));
}

fn many_calls(client: Client, name: &'static str, count: usize) -> JoinSet<()> {
    let mut calls = JoinSet::new();
    for i in 0..count {
        let client = client.clone();
        calls.spawn(async move {
            let (kind, payload) = call_number(name, i);
            let reply = client.call(kind, payload.clone()).await.expect("call");
            assert_eq!(
                reply,
                expected_reply(kind, &payload),
                "reply to {name} call {i}"
            );
        });
    }
    calls
}

async fn join_all(mut calls: JoinSet<()>) {
    within("all calls", async {
        while let Some(done) = calls.join_next().await {
            done.expect("call task");
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_calls_on_one_connection_each_get_their_own_reply() {
    for transport in BOTH {
        let server = transport.start().await;
        let first = server.client().await;
        let second = server.client().await;

        let first_calls = many_calls(first.clone(), "first", 200);
        let second_calls = many_calls(second.clone(), "second", 100);
        join_all(first_calls).await;
        join_all(second_calls).await;
        assert_eq!(server.handler.handled(), 300, "{transport:?}");

        drop((first, second));
        server.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_call_does_not_block_later_calls_on_the_same_connection() {
    for transport in BOTH {
        let server = transport.start().await;
        let client = server.client().await;

        let held = tokio::spawn({
            let client = client.clone();
            async move { client.call(CallKind::Command, HOLD.to_vec()).await }
        });
        server.handler.wait_until_held().await;
        // Sent after the held call, answered before it: replies come back out of order.
        ping(&client, "overtaking").await;
        assert!(
            !held.is_finished(),
            "{transport:?}: the held call cannot finish before the gate opens"
        );

        server.handler.open_gate();
        let reply = within("held call", held)
            .await
            .expect("task")
            .expect("held call");
        assert_eq!(reply, expected_reply(CallKind::Command, HOLD));

        drop(client);
        server.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_shutdown_fails_pending_and_later_calls() {
    for transport in BOTH {
        let server = transport.start().await;
        let client = server.client().await;
        ping(&client, "warm up").await;

        let held = tokio::spawn({
            let client = client.clone();
            async move { client.call(CallKind::Command, HOLD.to_vec()).await }
        });
        server.handler.wait_until_held().await;
        let addr = server.addr.clone();
        server.stop().await;

        let pending = within("pending call after shutdown", held)
            .await
            .expect("task");
        assert!(
            matches!(pending, Err(TransportError::Closed)),
            "{transport:?}: expected Closed, got {pending:?}"
        );
        let later = within(
            "call after shutdown",
            client.call(CallKind::Query, b"x".to_vec()),
        )
        .await;
        assert!(
            matches!(later, Err(TransportError::Closed)),
            "{transport:?}: expected Closed, got {later:?}"
        );
        match &client {
            // Nothing listens any more: a new connection is refused, naming the address.
            Client::Tcp(_) => {
                let reconnect = within(
                    "connect after shutdown",
                    TcpClient::connect(addr, Limits::default()),
                )
                .await;
                assert!(
                    matches!(reconnect, Err(TransportError::Connect { .. })),
                    "expected Connect, got {reconnect:?}"
                );
            }
            Client::Zmq(zmq) => assert!(zmq.is_closed()),
        }
    }
}
