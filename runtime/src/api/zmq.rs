//! Request/reply over ZeroMQ: a ROUTER socket on the server, a DEALER socket on the client.
//!
//! A request is a multipart message `[request id: u64 BE, 8 bytes][kind: 1 byte][payload]`, the
//! kind being `0` for a command and `1` for a query (see [`CallKind`]). The ROUTER sees it with the
//! client's identity in front, `[identity][id][kind][payload]`, and answers
//! `[identity][id][2][reply payload]`, which reaches the DEALER as `[id][2][reply payload]`.
//! As with [`tcp`](crate::api::tcp), the id lets many calls be in flight at once and complete in any
//! order.
//!
//! The size counted against [`Limits::max_frame`] is the same as on TCP: 9 bytes for the id and
//! kind, plus the payload.
//!
//! - Server ([`serve_zmq`]): clients connect to a small relay ([`guard`]) that closes a connection
//!   declaring a frame, or a multipart message, over [`Limits::max_frame`] + 64 KiB before
//!   zeromq's decoder allocates it, and holds the connections to [`Limits::max_connections`]. The server handles requests concurrently. A request whose payload is too large,
//!   whose kind is unknown, or that has the wrong number of parts gets the [`Handler::refuse`]
//!   reply under its id; a message without a readable id is logged and dropped. The server keeps
//!   serving either way.
//! - Client ([`ZmqClient`]): when the server disconnects, every pending call fails with
//!   [`TransportError::Closed`] and later calls fail at once (the client does not reconnect).

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::StreamExt;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::{AbortHandle, JoinHandle, JoinSet};
use zeromq::{
    DealerRecvHalf, DealerSocket, RouterSendHalf, RouterSocket, Socket, SocketEvent, SocketOptions,
    SocketRecv, SocketSend, ZmqError, ZmqMessage,
};

mod guard;

use crate::api::pending::{self, Pending};
use crate::api::tcp::checked_reply;
use crate::util::AbortOnDrop;
use crate::wire::CallKind;
use crate::wire::frame::{FrameKind, ID_AND_KIND_LEN};
use crate::wire::transport::handle_guarded;
use crate::wire::transport::{Handler, Limits, TransportError};

/// How far over [`Limits::max_frame`] a declared frame may be and still reach zeromq, so a
/// somewhat oversized request gets its typed refusal instead of a closed connection.
const GUARD_SLACK: usize = 64 * 1024;
/// How many messages may wait for the client's writer before callers wait.
const OUTGOING_QUEUE: usize = 1024;
const REPLY_KIND: [u8; 1] = [FrameKind::Reply.to_byte()];

/// Binds a ROUTER socket to `endpoint` and serves requests with `handler` until `shutdown`
/// resolves.
///
/// Returns once the socket is bound: the endpoint actually bound (so `tcp://127.0.0.1:0` tells
/// the caller its port) and the serving task. The task ends after `shutdown` resolves, abandoning
/// requests still being handled and closing every client's connection.
pub async fn serve_zmq<H: Handler>(
    endpoint: &str,
    handler: Arc<H>,
    limits: Limits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(String, JoinHandle<()>), TransportError> {
    let bind_error =
        |e: &dyn std::fmt::Display| TransportError::Zmq(format!("cannot bind {endpoint}: {e}"));
    let addr = endpoint
        .strip_prefix("tcp://")
        .ok_or_else(|| bind_error(&"only tcp:// endpoints are served"))?;
    let listener = TcpListener::bind(addr).await.map_err(|e| bind_error(&e))?;
    let public = listener.local_addr().map_err(|e| bind_error(&e))?;
    let mut socket = RouterSocket::new();
    let inner = socket
        .bind("tcp://127.0.0.1:0")
        .await
        .map_err(|e| bind_error(&e))?;
    let inner: SocketAddr = inner
        .to_string()
        .strip_prefix("tcp://")
        .and_then(|a| a.parse().ok())
        .ok_or_else(|| bind_error(&format!("the ROUTER bound {inner}, not a tcp address")))?;
    let frame_limit =
        u64::try_from(limits.max_frame.saturating_add(GUARD_SLACK)).unwrap_or(u64::MAX);
    let relay = AbortOnDrop(tokio::spawn(guard::relay(
        listener,
        inner,
        frame_limit,
        limits.max_connections,
    )));
    let bound = format!("tcp://{public}");
    let (sender, receiver) = socket.split();
    let serve = serve_loop(receiver, sender, handler, limits, shutdown, bound.clone());
    let task = tokio::spawn(async move {
        serve.await;
        drop(relay);
    });
    Ok((bound, task))
}

async fn serve_loop<H: Handler>(
    mut receiver: zeromq::RouterRecvHalf,
    sender: RouterSendHalf,
    handler: Arc<H>,
    limits: Limits,
    shutdown: impl Future<Output = ()> + Send,
    endpoint: String,
) {
    let mut shutdown = pin!(shutdown);
    let mut requests = JoinSet::new();
    let max_in_flight = limits.max_in_flight.max(1);
    loop {
        let message = tokio::select! {
            () = &mut shutdown => break,
            Some(finished) = requests.join_next(), if !requests.is_empty() => {
                if let Err(e) = finished
                    && e.is_panic()
                {
                    tracing::error!(error = %e, "a request task panicked");
                }
                continue;
            }
            message = receiver.recv(), if requests.len() < max_in_flight => message,
        };
        match message {
            Ok(message) => accept_request(message, &handler, &limits, &sender, &mut requests).await,
            Err(e) => {
                tracing::error!(%endpoint, error = %e, "receiving requests failed; stopping");
                break;
            }
        }
    }
    tracing::debug!(%endpoint, in_flight = requests.len(), "zmq server shutting down");
    requests.shutdown().await;
    // Dropping both halves shuts the socket down: it stops accepting and closes every connection.
    drop(receiver);
    drop(sender);
}

/// Checks one incoming message and spawns its handling, or refuses or drops it.
async fn accept_request<H: Handler>(
    message: ZmqMessage,
    handler: &Arc<H>,
    limits: &Limits,
    sender: &RouterSendHalf,
    requests: &mut JoinSet<()>,
) {
    let mut parts = message.into_vec().into_iter();
    let (Some(identity), Some(id_part)) = (parts.next(), parts.next()) else {
        tracing::warn!("dropping a message without a request id");
        return;
    };
    let Some(id) = decode_id(&id_part) else {
        tracing::warn!(
            len = id_part.len(),
            "dropping a message whose request id is not 8 bytes"
        );
        return;
    };
    let rest: Vec<Bytes> = parts.collect();
    let request = match check_request(id, &rest, limits.max_frame) {
        Ok(request) => request,
        Err(e) => {
            tracing::warn!(error = %e, "refusing a request");
            let refusal = handler.refuse(&e.to_string());
            send_reply(sender.clone(), identity, id, refusal).await;
            return;
        }
    };
    let (kind, payload) = request;
    let handler = handler.clone();
    let sender = sender.clone();
    let max_frame = limits.max_frame;
    requests.spawn(async move {
        let reply = handle_guarded(handler.clone(), kind, Vec::from(payload)).await;
        let reply = checked_reply(&*handler, reply, max_frame);
        send_reply(sender, identity, id, reply).await;
    });
}

/// The kind and payload of a request's parts after its id, or why they are refused.
fn check_request(
    id: u64,
    rest: &[Bytes],
    max_frame: usize,
) -> Result<(CallKind, Bytes), TransportError> {
    let [kind, payload] = rest else {
        return Err(TransportError::Malformed(format!(
            "request {id} has {} parts after its id; expected 2 (kind, payload)",
            rest.len()
        )));
    };
    let kind = match kind.as_ref() {
        [byte] => CallKind::from_byte(*byte).ok_or_else(|| {
            TransportError::Malformed(format!("unknown call kind {byte} in request {id}"))
        })?,
        other => {
            return Err(TransportError::Malformed(format!(
                "the kind part of request {id} is {} bytes; expected 1",
                other.len()
            )));
        }
    };
    let size = ID_AND_KIND_LEN.saturating_add(payload.len());
    if size > max_frame {
        return Err(TransportError::FrameTooLarge {
            size,
            limit: max_frame,
        });
    }
    Ok((kind, payload.clone()))
}

async fn send_reply(mut sender: RouterSendHalf, identity: Bytes, id: u64, reply: Vec<u8>) {
    let mut message = ZmqMessage::from(identity);
    message.push_back(Bytes::copy_from_slice(&id.to_be_bytes()));
    message.push_back(Bytes::from_static(&REPLY_KIND));
    message.push_back(Bytes::from(reply));
    if let Err(e) = sender.send(message).await {
        // The client went away; its reply has nowhere to go.
        tracing::debug!(id, error = %e, "cannot send a reply");
    }
}

fn decode_id(part: &[u8]) -> Option<u64> {
    <[u8; 8]>::try_from(part).ok().map(u64::from_be_bytes)
}

/// A client of [`serve_zmq`]: many calls in flight at once over one DEALER socket.
///
/// Cloning is cheap and every clone shares the socket. The socket is closed when the last clone
/// is dropped.
#[derive(Clone)]
pub struct ZmqClient {
    inner: Arc<ClientInner>,
}

struct ClientInner {
    endpoint: String,
    limits: Limits,
    pending: Arc<Pending>,
    outgoing: mpsc::Sender<ZmqMessage>,
    _reader: AbortOnDrop<()>,
    _writer: AbortOnDrop<()>,
}

impl std::fmt::Debug for ZmqClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ZmqClient")
            .field("endpoint", &self.inner.endpoint)
            .field("closed", &self.inner.pending.is_closed())
            .finish_non_exhaustive()
    }
}

impl ZmqClient {
    /// Connects a DEALER socket to the server at `endpoint` (for example `tcp://127.0.0.1:5555`).
    ///
    /// Fails with [`TransportError::Connect`], naming `endpoint`, when the server cannot be
    /// reached within [`Limits::connect_timeout`] or the endpoint is invalid.
    pub async fn connect(endpoint: &str, limits: Limits) -> Result<Self, TransportError> {
        let mut options = SocketOptions::default();
        options.connect_timeout(limits.connect_timeout);
        let mut socket = DealerSocket::with_options(options);
        let monitor = socket.monitor();
        socket
            .connect(endpoint)
            .await
            .map_err(|e| TransportError::Connect {
                addr: endpoint.to_string(),
                source: connect_error(e),
            })?;
        let (mut send_half, recv_half) = socket.split();
        let pending = Arc::new(Pending::default());
        let (outgoing, mut rx) = mpsc::channel::<ZmqMessage>(OUTGOING_QUEUE);

        let writer_pending = pending.clone();
        let writer_endpoint = endpoint.to_string();
        let writer = tokio::spawn(async move {
            while let Some(message) = rx.recv().await {
                if let Err(e) = send_half.send(message).await {
                    tracing::warn!(endpoint = %writer_endpoint, error = %e, "sending a request failed");
                    writer_pending.close_all();
                    break;
                }
            }
        });
        let reader = tokio::spawn(read_replies(
            recv_half,
            monitor,
            pending.clone(),
            limits.max_frame,
            writer.abort_handle(),
            endpoint.to_string(),
        ));
        Ok(Self {
            inner: Arc::new(ClientInner {
                endpoint: endpoint.to_string(),
                limits,
                pending,
                outgoing,
                _reader: AbortOnDrop(reader),
                _writer: AbortOnDrop(writer),
            }),
        })
    }

    /// Sends one request and waits for its reply payload.
    ///
    /// Fails with [`TransportError::FrameTooLarge`] (without sending) if the request exceeds
    /// [`Limits::max_frame`], [`TransportError::Timeout`] after [`Limits::request_timeout`], and
    /// [`TransportError::Closed`] if the server is or becomes disconnected before the reply.
    pub async fn call(&self, kind: CallKind, payload: Vec<u8>) -> Result<Vec<u8>, TransportError> {
        let inner = &*self.inner;
        pending::exchange(
            &inner.pending,
            &inner.outgoing,
            &inner.limits,
            payload.len(),
            |id| {
                let mut message = ZmqMessage::from(Bytes::copy_from_slice(&id.to_be_bytes()));
                message.push_back(Bytes::copy_from_slice(&[kind.to_byte()]));
                message.push_back(Bytes::from(payload));
                message
            },
        )
        .await
    }

    /// The endpoint this client was connected to, as given to [`ZmqClient::connect`].
    pub fn endpoint(&self) -> &str {
        &self.inner.endpoint
    }

    /// Whether the server is known to be disconnected (every call would fail with
    /// [`TransportError::Closed`]).
    pub fn is_closed(&self) -> bool {
        self.inner.pending.is_closed()
    }
}

fn connect_error(e: ZmqError) -> io::Error {
    match e {
        ZmqError::Network(e) => e,
        ZmqError::ConnectTimeout(after) => io::Error::new(
            io::ErrorKind::TimedOut,
            format!("no connection within {after:?}"),
        ),
        other => io::Error::other(other.to_string()),
    }
}

/// The client's reader: hands each reply to its call; when the server disconnects, fails every
/// pending call and stops the writer.
async fn read_replies(
    mut receiver: DealerRecvHalf,
    mut monitor: impl futures_util::Stream<Item = SocketEvent> + Unpin,
    pending: Arc<Pending>,
    max_frame: usize,
    writer: AbortHandle,
    endpoint: String,
) {
    loop {
        tokio::select! {
            message = receiver.recv() => match message {
                Ok(message) => deliver(message, &pending, max_frame, &endpoint),
                Err(e) => {
                    tracing::warn!(%endpoint, error = %e, "receiving replies failed");
                    break;
                }
            },
            event = monitor.next() => match event {
                Some(SocketEvent::Disconnected(_)) | None => {
                    tracing::debug!(%endpoint, "the server disconnected");
                    break;
                }
                Some(_) => {}
            },
        }
    }
    pending.close_all();
    writer.abort();
}

fn deliver(message: ZmqMessage, pending: &Pending, max_frame: usize, endpoint: &str) {
    let [id, kind, payload] = match <[Bytes; 3]>::try_from(message.into_vec()) {
        Ok(parts) => parts,
        Err(parts) => {
            tracing::warn!(%endpoint, parts = parts.len(), "dropping a reply with the wrong number of parts");
            return;
        }
    };
    let Some(id) = decode_id(&id) else {
        tracing::warn!(%endpoint, "dropping a reply whose request id is not 8 bytes");
        return;
    };
    let outcome = if kind.as_ref() != REPLY_KIND {
        Err(TransportError::Malformed(format!(
            "reply {id} has kind {kind:?}; expected {REPLY_KIND:?}"
        )))
    } else if ID_AND_KIND_LEN.saturating_add(payload.len()) > max_frame {
        Err(TransportError::FrameTooLarge {
            size: ID_AND_KIND_LEN.saturating_add(payload.len()),
            limit: max_frame,
        })
    } else {
        Ok(Vec::from(payload))
    };
    if !pending.complete(id, outcome) {
        tracing::debug!(%endpoint, id, "reply for a call no longer waiting");
    }
}
