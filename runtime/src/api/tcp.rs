//! Request/reply over TCP with length-prefixed [frames](crate::wire::frame).
//!
//! One connection carries many requests at once: the client tags each request with an id, the
//! server handles requests concurrently and tags each reply with its request's id, so replies may
//! come back in any order.
//!
//! - Server: [`serve_tcp`] accepts connections until its shutdown future resolves, at most
//!   [`Limits::max_connections`] open at once (and no more than the open-file limit allows, see
//!   [`crate::net::conn::connection_cap`]; one more is closed on accept); a connection
//!   that neither sends nor receives a byte for [`Limits::idle_timeout`] is closed. Per connection,
//!   a reader reads frames and spawns one task per request; the replies go through a channel to a
//!   single writer task. A frame larger than [`Limits::max_frame`], or with a kind byte that is
//!   not a command or a query, gets the [`Handler::refuse`] reply under its id and then the
//!   connection is closed. A frame whose length is malformed, or a connection that ends in the
//!   middle of a frame, closes that connection only. On shutdown every connection is closed.
//! - Client: [`TcpClient`] keeps one connection with a writer task, a reader task and a table of
//!   pending calls keyed by id. When the connection drops, every pending call fails with
//!   [`TransportError::Closed`] and later calls fail at once.

use std::fmt::Display;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufWriter};
use tokio::net::tcp::OwnedReadHalf;
use tokio::net::{TcpListener, TcpStream, ToSocketAddrs};
use tokio::sync::mpsc;
use tokio::task::{AbortHandle, JoinSet};

use crate::api::pending::{self, Pending};
use crate::util::AbortOnDrop;
use crate::wire::CallKind;
use crate::wire::frame::{self, Frame, FrameHeader, FrameKind, ID_AND_KIND_LEN};
use crate::wire::transport::handle_guarded;
use crate::wire::transport::{Handler, Limits, TransportError};

/// How many frames may wait for a connection's writer before senders wait.
const OUTGOING_QUEUE: usize = 1024;
/// After refusing a frame, how long the server keeps reading (and discarding) what the client
/// still sends, so that closing does not reset the connection before the client reads the refusal.
const LINGER: Duration = Duration::from_secs(2);

/// Serves requests from `listener` with `handler` until `shutdown` resolves.
///
/// Every connection is served concurrently, and so is every request on a connection. When
/// `shutdown` resolves, the listener is closed and every open connection is closed at once;
/// requests still being handled are abandoned, and their clients see
/// [`TransportError::Closed`].
///
/// Errors on one connection (malformed or truncated frames, I/O errors) are logged with
/// `tracing` and close that connection only.
pub async fn serve_tcp<H: Handler>(
    listener: TcpListener,
    handler: Arc<H>,
    limits: Limits,
    shutdown: impl Future<Output = ()> + Send,
) -> io::Result<()> {
    let cap = Arc::new(tokio::sync::Semaphore::new(
        crate::net::conn::connection_cap(limits.max_connections),
    ));
    let idle = Some(limits.idle_timeout);
    let mut connections =
        crate::net::conn::accept_connections(listener, cap, idle, "tcp", shutdown, |conn, peer| {
            // The guarded stream holds its slot, and ends after the idle timeout.
            serve_connection(conn, peer, handler.clone(), limits)
        })
        .await;
    tracing::debug!(
        open = connections.len(),
        "tcp server shutting down; closing connections"
    );
    connections.shutdown().await;
    Ok(())
}

/// Why a connection's reader stopped.
enum ConnectionEnd {
    /// The client closed its side cleanly between frames.
    Eof,
    /// A frame was refused with a reply; the client may still be sending its body.
    Refused(TransportError),
    /// The stream is unusable: malformed length, truncated frame, I/O error.
    Broken(TransportError),
    /// The writer stopped (the client no longer reads replies).
    WriterGone,
}

async fn serve_connection<H: Handler, S: AsyncRead + AsyncWrite + Send + 'static>(
    stream: S,
    peer: SocketAddr,
    handler: Arc<H>,
    limits: Limits,
) {
    let (mut reader, writer) = tokio::io::split(stream);
    let (tx, rx) = mpsc::channel(OUTGOING_QUEUE);
    let mut writer = AbortOnDrop(tokio::spawn(write_loop(writer, rx)));
    let mut requests = JoinSet::new();

    let end = tokio::select! {
        end = read_requests(&mut reader, &handler, &limits, &tx, &mut requests) => end,
        () = tx.closed() => ConnectionEnd::WriterGone,
    };
    let linger = match &end {
        ConnectionEnd::Eof => {
            tracing::debug!(%peer, "client closed the connection");
            false
        }
        ConnectionEnd::Refused(e) => {
            tracing::warn!(%peer, error = %e, "refused a frame; closing the connection");
            true
        }
        ConnectionEnd::Broken(e) => {
            tracing::warn!(%peer, error = %e, "bad input; closing the connection");
            matches!(e, TransportError::Malformed(_))
        }
        ConnectionEnd::WriterGone => false,
    };

    // Let the requests already read finish and reply, then let the writer flush and send FIN.
    drop(tx);
    while let Some(finished) = requests.join_next().await {
        log_request_end(finished);
    }
    match (&mut writer.0).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "writing replies failed"),
        Err(e) => tracing::error!(%peer, error = %e, "the writer task failed"),
    }
    if linger {
        discard_until_eof(&mut reader).await;
    }
}

async fn read_requests<H: Handler, R: AsyncRead + Unpin>(
    reader: &mut R,
    handler: &Arc<H>,
    limits: &Limits,
    tx: &mpsc::Sender<Frame>,
    requests: &mut JoinSet<()>,
) -> ConnectionEnd {
    loop {
        while let Some(finished) = requests.try_join_next() {
            log_request_end(finished);
        }
        while requests.len() >= limits.max_in_flight.max(1) {
            if let Some(finished) = requests.join_next().await {
                log_request_end(finished);
            }
        }

        let header = match frame::read_header(reader).await {
            Ok(Some(header)) => header,
            Ok(None) => return ConnectionEnd::Eof,
            Err(e) => return ConnectionEnd::Broken(e),
        };
        let kind = match header.kind() {
            Ok(FrameKind::Call(kind)) => kind,
            Ok(FrameKind::Reply) => {
                let e = TransportError::Malformed(format!(
                    "frame {} is a reply, but a request was expected",
                    header.id
                ));
                return refuse(handler, tx, &header, e).await;
            }
            Err(e) => return refuse(handler, tx, &header, e).await,
        };
        if let Err(e) = header.check_size(limits.max_frame) {
            return refuse(handler, tx, &header, e).await;
        }
        let payload = match frame::read_payload(reader, &header).await {
            Ok(payload) => payload,
            Err(e) => return ConnectionEnd::Broken(e),
        };

        let handler = handler.clone();
        let tx = tx.clone();
        let id = header.id;
        let max_frame = limits.max_frame;
        requests.spawn(async move {
            let reply = handle_guarded(handler.clone(), kind, payload).await;
            let reply = checked_reply(&*handler, reply, max_frame);
            // A send error means the connection is closing; the reply has nowhere to go.
            let _ = tx
                .send(Frame {
                    id,
                    kind: FrameKind::Reply,
                    payload: reply,
                })
                .await;
        });
    }
}

/// Queues the refusal for the frame and ends the connection.
async fn refuse<H: Handler>(
    handler: &Arc<H>,
    tx: &mpsc::Sender<Frame>,
    header: &FrameHeader,
    error: TransportError,
) -> ConnectionEnd {
    let reason = error.to_string();
    let reply = Frame {
        id: header.id,
        kind: FrameKind::Reply,
        payload: handler.refuse(&reason),
    };
    if tx.send(reply).await.is_err() {
        return ConnectionEnd::WriterGone;
    }
    ConnectionEnd::Refused(error)
}

/// The reply as sent: a refusal instead if the reply would exceed the frame limit (the client
/// would otherwise have to drop the connection).
pub(crate) fn checked_reply<H: Handler>(handler: &H, reply: Vec<u8>, max_frame: usize) -> Vec<u8> {
    let size = ID_AND_KIND_LEN.saturating_add(reply.len());
    if size > max_frame {
        let e = TransportError::FrameTooLarge {
            size,
            limit: max_frame,
        };
        tracing::warn!(error = %e, "reply too large; sending a refusal instead");
        handler.refuse(&format!("reply {e}"))
    } else {
        reply
    }
}

fn log_request_end(finished: Result<(), tokio::task::JoinError>) {
    if let Err(e) = finished
        && e.is_panic()
    {
        tracing::error!(error = %e, "a request task panicked");
    }
}

/// Reads and drops whatever the peer still sends, until it closes, fails, or [`LINGER`] passes.
async fn discard_until_eof(reader: &mut (impl AsyncRead + Unpin)) {
    let mut scratch = vec![0u8; 64 * 1024];
    let drain = async {
        loop {
            match reader.read(&mut scratch).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    };
    let _ = tokio::time::timeout(LINGER, drain).await;
}

/// Writes every queued frame, flushing whenever the queue runs dry; sends FIN once every sender
/// is gone.
async fn write_loop<W: AsyncWrite + Unpin>(
    writer: W,
    mut rx: mpsc::Receiver<Frame>,
) -> io::Result<()> {
    let mut writer = BufWriter::new(writer);
    while let Some(frame) = rx.recv().await {
        write_one(&mut writer, &frame).await?;
        while let Ok(frame) = rx.try_recv() {
            write_one(&mut writer, &frame).await?;
        }
        writer.flush().await?;
    }
    writer.shutdown().await
}

async fn write_one<W: AsyncWrite + Unpin>(
    writer: &mut BufWriter<W>,
    frame: &Frame,
) -> io::Result<()> {
    frame::write_frame(writer, frame.id, frame.kind, &frame.payload)
        .await
        .map_err(|e| match e {
            TransportError::Io(e) => e,
            other => io::Error::new(io::ErrorKind::InvalidData, other.to_string()),
        })
}

/// A client of [`serve_tcp`]: many calls in flight at once on one connection.
///
/// Cloning is cheap and every clone shares the connection. The connection is closed when the last
/// clone is dropped.
#[derive(Clone)]
pub struct TcpClient {
    inner: Arc<ClientInner>,
}

struct ClientInner {
    addr: String,
    limits: Limits,
    pending: Arc<Pending>,
    outgoing: mpsc::Sender<Frame>,
    _reader: AbortOnDrop<()>,
    _writer: AbortOnDrop<()>,
}

impl std::fmt::Debug for TcpClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TcpClient")
            .field("addr", &self.inner.addr)
            .field("closed", &self.inner.pending.is_closed())
            .finish_non_exhaustive()
    }
}

impl TcpClient {
    /// Connects to a server at `addr`.
    ///
    /// Fails with [`TransportError::Connect`], naming `addr`, when the server cannot be reached
    /// within [`Limits::connect_timeout`].
    pub async fn connect(
        addr: impl ToSocketAddrs + Display,
        limits: Limits,
    ) -> Result<Self, TransportError> {
        let addr_text = addr.to_string();
        let stream =
            match tokio::time::timeout(limits.connect_timeout, TcpStream::connect(addr)).await {
                Ok(Ok(stream)) => stream,
                Ok(Err(source)) => {
                    return Err(TransportError::Connect {
                        addr: addr_text,
                        source,
                    });
                }
                Err(_) => {
                    return Err(TransportError::Connect {
                        addr: addr_text,
                        source: io::Error::new(
                            io::ErrorKind::TimedOut,
                            format!("no connection within {:?}", limits.connect_timeout),
                        ),
                    });
                }
            };
        stream.set_nodelay(true)?;
        let (reader, writer) = stream.into_split();
        let pending = Arc::new(Pending::default());
        let (outgoing, rx) = mpsc::channel(OUTGOING_QUEUE);

        let writer_pending = pending.clone();
        let writer_addr = addr_text.clone();
        let writer = tokio::spawn(async move {
            if let Err(e) = write_loop(writer, rx).await {
                tracing::warn!(addr = %writer_addr, error = %e, "sending requests failed");
                writer_pending.close_all();
            }
        });
        let reader = tokio::spawn(read_replies(
            reader,
            pending.clone(),
            limits.max_frame,
            writer.abort_handle(),
            addr_text.clone(),
        ));
        Ok(Self {
            inner: Arc::new(ClientInner {
                addr: addr_text,
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
    /// [`TransportError::Closed`] if the connection is or becomes closed before the reply.
    pub async fn call(&self, kind: CallKind, payload: Vec<u8>) -> Result<Vec<u8>, TransportError> {
        let inner = &*self.inner;
        pending::exchange(
            &inner.pending,
            &inner.outgoing,
            &inner.limits,
            payload.len(),
            |id| Frame {
                id,
                kind: FrameKind::Call(kind),
                payload,
            },
        )
        .await
    }

    /// The address this client was connected to, as given to [`TcpClient::connect`].
    pub fn addr(&self) -> &str {
        &self.inner.addr
    }

    /// Whether the connection is known to be closed (every call would fail with
    /// [`TransportError::Closed`]).
    pub fn is_closed(&self) -> bool {
        self.inner.pending.is_closed()
    }
}

/// The client's reader: hands each reply to its call; on any end, fails every pending call and
/// stops the writer (which closes the connection).
async fn read_replies(
    mut reader: OwnedReadHalf,
    pending: Arc<Pending>,
    max_frame: usize,
    writer: AbortHandle,
    addr: String,
) {
    let end = loop {
        let header = match frame::read_header(&mut reader).await {
            Ok(Some(header)) => header,
            Ok(None) => break None,
            Err(e) => break Some(e),
        };
        match header.kind() {
            Ok(FrameKind::Reply) => {}
            Ok(FrameKind::Call(_)) => {
                break Some(TransportError::Malformed(format!(
                    "frame {} from the server is a request, not a reply",
                    header.id
                )));
            }
            Err(e) => break Some(e),
        }
        if let Err(e) = header.check_size(max_frame) {
            pending.complete(
                header.id,
                Err(TransportError::FrameTooLarge {
                    size: header.size(),
                    limit: max_frame,
                }),
            );
            break Some(e);
        }
        match frame::read_payload(&mut reader, &header).await {
            Ok(payload) => {
                if !pending.complete(header.id, Ok(payload)) {
                    tracing::debug!(%addr, id = header.id, "reply for a call no longer waiting");
                }
            }
            Err(e) => break Some(e),
        }
    };
    match end {
        None => tracing::debug!(%addr, "server closed the connection"),
        Some(e) => tracing::warn!(%addr, error = %e, "connection to the server failed"),
    }
    pending.close_all();
    writer.abort();
}
