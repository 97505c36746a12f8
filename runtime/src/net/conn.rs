//! What a node's listeners let connections hold: a cap on open connections, an idle timeout,
//! and the open-file limit they are sized from.
//!
//! - **The open-file limit.** At start a node raises its soft `RLIMIT_NOFILE` to the hard limit
//!   ([`raise_nofile_limit`]); `admin status` reports it (`open_files_limit`).
//! - **Caps** ([`Caps::for_nofile`]): the API listeners (gRPC, JSON-RPC, metrics) share one pool
//!   of connections; the raft listener has a pool of its own, so a flood of API connections
//!   never takes the slots that peers (replication, votes, snapshots, admin) need. What is left
//!   of the limit stays for files (the log, the state database, snapshots). A connection over
//!   its pool's cap is closed as soon as it is accepted.
//! - **Idle timeout** ([`Guarded`]): a connection that neither sends nor receives a byte for the
//!   idle timeout is closed; that bounds a stalled TLS handshake too. A raft connection is never
//!   idle (heartbeats), and a gRPC client that keeps its connection open sends keep-alive pings.
//! - **Handshake** ([`incoming_authenticated`], the raft listener): a connection must make an
//!   authenticated request (the cluster's secret) within [`RAFT_HANDSHAKE`] of being accepted,
//!   or it is closed; at most [`RAFT_NEWCOMERS`] connections wait for that at once, and one more
//!   closes the oldest of them. Silent or unauthenticated connections therefore hold at most
//!   that many slots, each for seconds, and a peer or an admin client that connects during a
//!   flood of them gets in (it authenticates within milliseconds).
//! - **Accept errors** (out of descriptors, ...) pause the listener briefly instead of ending it
//!   or spinning.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::Stream;
use futures_util::task::AtomicWaker;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};

/// Default idle timeout of API connections.
pub const API_IDLE_TIMEOUT: Duration = Duration::from_secs(120);

/// Idle timeout of raft connections (a peer's connection carries heartbeats many times a
/// second; an admin client's carries its call).
pub const RAFT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// How long a raft connection may take, from its accept, to make its first authenticated
/// request (its TLS handshake included). Peers and `admin` make it within milliseconds; the
/// margin is for a node starting or loaded (a peer's connection closed before its first request
/// is answered is a reconnect, and under enough load a loop of them).
pub const RAFT_HANDSHAKE: Duration = Duration::from_secs(10);

/// How many raft connections may wait for their first authenticated request at once.
pub const RAFT_NEWCOMERS: usize = 64;

/// Pause after an accept error that is not one connection's own (out of descriptors...).
const ACCEPT_PAUSE: Duration = Duration::from_millis(100);

/// The open-file limit [`raise_nofile_limit`] left in force (0 before it ran).
static NOFILE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// The open-file limit in force, as [`raise_nofile_limit`] left it (0 if it never ran).
pub fn nofile_limit() -> u64 {
    NOFILE.load(std::sync::atomic::Ordering::Relaxed)
}

/// How many connections a frame transport serves when asked for `wanted`: no more than a
/// node's API listeners would under the open-file limit in force (see [`api_connections`]).
pub fn connection_cap(wanted: usize) -> usize {
    wanted.min(api_connections(current_nofile()))
}

/// The soft open-file limit in force now (1024 if it cannot be read).
pub fn current_nofile() -> u64 {
    nofile_rlimit().map_or(1024, |l| l.rlim_cur)
}

/// The process's open-file limits, if they can be read.
fn nofile_rlimit() -> Option<libc::rlimit> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit only writes the struct passed to it.
    (unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0).then_some(limit)
}

/// Raises this process's soft open-file limit to its hard limit; returns the limit now in
/// force (the soft one, if raising failed).
pub fn raise_nofile_limit() -> u64 {
    let limit = raise();
    NOFILE.store(limit, std::sync::atomic::Ordering::Relaxed);
    limit
}

fn raise() -> u64 {
    let Some(mut limit) = nofile_rlimit() else {
        return 1024;
    };
    if limit.rlim_cur < limit.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: limit.rlim_max,
            rlim_max: limit.rlim_max,
        };
        // SAFETY: setrlimit only reads the struct passed to it.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            limit = raised;
        }
    }
    limit.rlim_cur
}

/// A pool of connection slots that one or more listeners draw from, the idle timeout of their
/// connections and the streams each may hold.
#[derive(Debug, Clone)]
pub struct Pool {
    /// One permit per open connection.
    pub slots: Arc<Semaphore>,
    /// How long a connection may stay idle.
    pub idle: Duration,
    /// The most streams one connection may have open: concurrent HTTP/2 streams (gRPC calls
    /// and watches), subscriptions on one JSON-RPC WebSocket.
    pub streams: u32,
}

/// Default of [`Pool::streams`].
pub const DEFAULT_STREAMS: u32 = 128;

impl Pool {
    /// A pool of `slots` connections, each closed after `idle`, of [`DEFAULT_STREAMS`] streams
    /// each.
    pub fn new(slots: usize, idle: Duration) -> Self {
        Pool {
            slots: Arc::new(Semaphore::new(slots)),
            idle,
            streams: DEFAULT_STREAMS,
        }
    }
}

/// A node's pools.
#[derive(Debug, Clone)]
pub struct Caps {
    /// The open-file limit the pools were sized from.
    pub nofile: u64,
    /// Shared by the API listeners (gRPC, JSON-RPC, metrics).
    pub api: Pool,
    /// The raft listener's own.
    pub raft: Pool,
}

impl Caps {
    /// Pools for an open-file limit of `nofile`: raft gets an eighth (16 to 256), the API three
    /// eighths (16 to 16,384), and the rest is left for files and outgoing connections.
    pub fn for_nofile(nofile: u64, api_idle: Duration) -> Self {
        Caps {
            nofile,
            api: Pool::new(api_connections(nofile), api_idle),
            raft: Pool::new(eighths(nofile, 1, 16, 256), RAFT_IDLE_TIMEOUT),
        }
    }
}

/// How many API connections an open-file limit of `nofile` allows: three eighths of it, 16 to
/// 16,384 (the frame transports' default cap too).
pub fn api_connections(nofile: u64) -> usize {
    eighths(nofile, 3, 16, 16_384)
}

/// `n` eighths of `nofile`, within `min..=max`.
fn eighths(nofile: u64, n: u64, min: u64, max: u64) -> usize {
    usize::try_from((nofile / 8 * n).clamp(min, max)).unwrap_or(16)
}

/// Accepted connections of `listener` as a stream for a server: each holds a slot of `cap`
/// while it is open (one over the cap is closed at once) and, with an `idle` timeout, is
/// closed after that long without a byte either way. The stream never ends and never fails:
/// accept errors pause it.
pub fn incoming(
    listener: TcpListener,
    cap: Arc<Semaphore>,
    idle: Option<Duration>,
    what: &'static str,
) -> impl Stream<Item = std::io::Result<Guarded<TcpStream>>> + Send + 'static {
    futures_util::stream::unfold(listener, move |listener| {
        let cap = cap.clone();
        async move {
            loop {
                match listener.accept().await {
                    Ok((stream, peer)) => match cap.clone().try_acquire_owned() {
                        Ok(permit) => {
                            let _ = stream.set_nodelay(true);
                            return Some((Ok(Guarded::new(stream, permit, idle)), listener));
                        }
                        Err(_) => {
                            // Without the peer in it, a flood's lines are one line to the
                            // repeat limit: one summary per window, however many peers.
                            tracing::debug!(%peer, what, "over the connection cap");
                            tracing::warn!(what, "too many connections; closing new ones");
                        }
                    },
                    Err(e) if is_connection_error(&e) => {
                        tracing::debug!(error = %e, what, "accepting a connection failed");
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, what, "accepting connections failed; pausing");
                        tokio::time::sleep(ACCEPT_PAUSE).await;
                    }
                }
            }
        }
    })
}

/// A connection's handshake on a listener that authenticates its connections: done once the
/// server has seen an authenticated request on it; until then the listener may close it
/// through its [`Closer`] to make room.
#[derive(Debug)]
pub struct Handshake {
    done: AtomicBool,
    closer: Arc<Closer>,
}

impl Handshake {
    /// The connection made an authenticated request: it stays (until idle).
    pub fn authenticated(&self) {
        self.done.store(true, Ordering::Release);
    }

    fn waiting(&self) -> bool {
        !self.done.load(Ordering::Acquire) && !self.closer.closed.load(Ordering::Acquire)
    }
}

/// [`incoming`] for a listener whose connections must authenticate (see the module docs): each
/// connection carries a [`Handshake`] (in its [`ConnInfo`], so the server can mark it), and is
/// closed unless it authenticates within `within`; at most `newcomers` wait at once, the
/// oldest closed for one more.
pub fn incoming_authenticated(
    listener: TcpListener,
    pool: Pool,
    within: Duration,
    newcomers: usize,
    what: &'static str,
) -> impl Stream<Item = std::io::Result<Guarded<TcpStream>>> + Send + 'static {
    use futures_util::StreamExt as _;
    let mut waiting: std::collections::VecDeque<Arc<Handshake>> = Default::default();
    incoming(listener, pool.slots, Some(pool.idle), what).map(move |conn| {
        let mut conn = conn?;
        waiting.retain(|h| h.waiting() && Arc::strong_count(h) > 1);
        while waiting.len() >= newcomers.max(1) {
            if let Some(oldest) = waiting.pop_front() {
                tracing::debug!(what, "a connection that has not authenticated makes room");
                UNAUTHENTICATED_CLOSED.fetch_add(1, Ordering::Relaxed);
                oldest.closer.close();
            }
        }
        let handshake = Arc::new(Handshake {
            done: AtomicBool::new(false),
            closer: conn.closer(),
        });
        waiting.push_back(handshake.clone());
        Ok(conn.with_handshake(handshake, within))
    })
}

/// What a server learns of a [`Guarded`] connection (tonic's connect info): its addresses, and
/// its [`Handshake`] on a listener that authenticates connections.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    /// The TCP addresses.
    pub tcp: tonic::transport::server::TcpConnectInfo,
    /// The handshake to mark, on a listener that authenticates its connections.
    pub handshake: Option<Arc<Handshake>>,
}

impl ConnInfo {
    /// The connect info a tonic request carries, over TLS or not.
    pub fn of<T>(request: &tonic::Request<T>) -> Option<&ConnInfo> {
        let extensions = request.extensions();
        extensions.get::<ConnInfo>().or_else(|| {
            extensions
                .get::<tonic::transport::server::TlsConnectInfo<ConnInfo>>()
                .map(|tls| tls.get_ref())
        })
    }
}

/// An axum listener over [`incoming`] (the metrics listener shares the API's pool).
pub struct AxumListener<S> {
    incoming: Pin<Box<S>>,
    local: std::net::SocketAddr,
}

impl<S> AxumListener<S> {
    fn new(incoming: S, local: std::net::SocketAddr) -> Self {
        AxumListener {
            incoming: Box::pin(incoming),
            local,
        }
    }
}

/// `listener`'s connections, drawing from `pool`, for an axum server.
pub fn axum_listener(
    listener: TcpListener,
    pool: Pool,
    what: &'static str,
) -> std::io::Result<AxumListener<impl Stream<Item = std::io::Result<Guarded<TcpStream>>> + Send>> {
    let local = listener.local_addr()?;
    Ok(AxumListener::new(
        incoming(listener, pool.slots, Some(pool.idle), what),
        local,
    ))
}

impl<S> axum::serve::Listener for AxumListener<S>
where
    S: Stream<Item = std::io::Result<Guarded<TcpStream>>> + Send + 'static,
{
    type Io = Guarded<TcpStream>;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        use futures_util::StreamExt as _;
        loop {
            // The stream never ends and yields no error (see `incoming`).
            if let Some(Ok(conn)) = self.incoming.next().await
                && let Ok(peer) = conn.peer_addr()
            {
                return (conn, peer);
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}

/// Errors that end one connection attempt, not the listener.
fn is_connection_error(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::ConnectionAborted
            | std::io::ErrorKind::ConnectionReset
            | std::io::ErrorKind::Interrupted
            | std::io::ErrorKind::WouldBlock
    )
}

/// A connection that holds a slot of its listener's pool while open, and (with an idle
/// timeout) fails with `TimedOut` once no byte has moved either way for that long.
#[derive(Debug)]
pub struct Guarded<IO> {
    inner: IO,
    slot: OwnedSemaphorePermit,
    /// The idle timeout and its timer.
    idle: Option<(Duration, Pin<Box<Sleep>>)>,
    last: Instant,
    /// Until the connection authenticates: its handshake and the deadline for it.
    handshake: Option<(Arc<Handshake>, Pin<Box<Sleep>>)>,
    /// Set once the handshake failed: every read and write fails.
    refused: bool,
    /// What the server holds to close the connection from outside (see [`Guarded::closer`]).
    closer: Option<CloserGuard>,
}

/// Closes a [`Guarded`] connection from outside its server (a server that hands an upgraded
/// connection to a task of its own, as jsonrpsee does with a WebSocket): its next read or write
/// fails. It also tells when the connection is gone.
#[derive(Debug, Default)]
pub struct Closer {
    closed: AtomicBool,
    waker: AtomicWaker,
    gone: tokio::sync::Notify,
}

impl Closer {
    /// Closes the connection.
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.waker.wake();
    }

    /// Resolves once the connection is gone (dropped, however it ended).
    pub async fn gone(&self) {
        self.gone.notified().await;
    }

    fn closed(&self, cx: &mut Context<'_>) -> bool {
        self.waker.register(cx.waker());
        self.closed.load(Ordering::Acquire)
    }
}

/// The connection's hold on its [`Closer`]: says the connection is gone when dropped.
#[derive(Debug)]
struct CloserGuard(Arc<Closer>);

impl Drop for CloserGuard {
    fn drop(&mut self) {
        self.0.gone.notify_one();
    }
}

/// Connections closed because they made no authenticated request in time (or were the oldest
/// waiting when another came), since the process started.
static UNAUTHENTICATED_CLOSED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// How many connections were closed for their handshake (see [`incoming_authenticated`]).
pub fn unauthenticated_closed() -> u64 {
    UNAUTHENTICATED_CLOSED.load(Ordering::Relaxed)
}

impl<IO> Guarded<IO> {
    fn new(inner: IO, slot: OwnedSemaphorePermit, idle: Option<Duration>) -> Self {
        let now = Instant::now();
        Guarded {
            inner,
            slot,
            idle: idle.map(|d| (d, Box::pin(tokio::time::sleep_until(now + d)))),
            last: now,
            handshake: None,
            refused: false,
            closer: None,
        }
    }

    /// A handle that closes this connection and tells when it is gone.
    pub fn closer(&mut self) -> Arc<Closer> {
        self.closer
            .get_or_insert_with(|| CloserGuard(Arc::default()))
            .0
            .clone()
    }

    /// The connection is closed unless `handshake` is done within `within`, or once the
    /// listener closes it to make room.
    fn with_handshake(mut self, handshake: Arc<Handshake>, within: Duration) -> Self {
        self.handshake = Some((handshake, Box::pin(tokio::time::sleep(within))));
        self
    }

    /// Whether the connection must close: closed from outside (its [`Closer`]), or its
    /// handshake not done by its deadline (counted once). Once done, the handshake is
    /// forgotten.
    fn must_close(&mut self, cx: &mut Context<'_>) -> bool {
        if self.closer.as_ref().is_some_and(|c| c.0.closed(cx)) {
            return true;
        }
        let Some((handshake, deadline)) = &mut self.handshake else {
            return self.refused;
        };
        if handshake.done.load(Ordering::Acquire) {
            self.handshake = None;
            return false;
        }
        if deadline.as_mut().poll(cx).is_ready() {
            UNAUTHENTICATED_CLOSED.fetch_add(1, Ordering::Relaxed);
            self.handshake = None;
            self.refused = true;
        }
        self.refused
    }

    fn closed<T>() -> Poll<std::io::Result<T>> {
        Poll::Ready(Err(std::io::Error::new(
            std::io::ErrorKind::ConnectionAborted,
            "closed by the server: no authenticated request in time, or idle",
        )))
    }

    /// The connection and its slot, for a server that reads and writes it by halves (it then
    /// has no idle timeout; the slot is held as long as the permit is).
    pub fn into_parts(self) -> (IO, OwnedSemaphorePermit) {
        (self.inner, self.slot)
    }

    /// Whether the connection has been idle too long; otherwise arms the timer (so the task
    /// wakes when it would be).
    fn idle_expired(&mut self, cx: &mut Context<'_>) -> bool {
        let last = self.last;
        let Some((idle, timer)) = &mut self.idle else {
            return false;
        };
        loop {
            let deadline = last + *idle;
            if timer.deadline() != deadline {
                timer.as_mut().reset(deadline);
            }
            match timer.as_mut().poll(cx) {
                Poll::Pending => return false,
                Poll::Ready(()) if deadline <= Instant::now() => return true,
                Poll::Ready(()) => {}
            }
        }
    }

    fn timed_out<T>() -> Poll<std::io::Result<T>> {
        Poll::Ready(Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "the connection was idle too long",
        )))
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Guarded<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if self.must_close(cx) {
            return Self::closed();
        }
        let before = buf.filled().len();
        match Pin::new(&mut self.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) if buf.filled().len() > before => {
                self.last = Instant::now();
                Poll::Ready(Ok(()))
            }
            Poll::Pending if self.idle_expired(cx) => Self::timed_out(),
            other => other,
        }
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Guarded<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        if self.must_close(cx) {
            return Self::closed();
        }
        match Pin::new(&mut self.inner).poll_write(cx, buf) {
            Poll::Ready(Ok(n)) if n > 0 => {
                self.last = Instant::now();
                Poll::Ready(Ok(n))
            }
            Poll::Pending if self.idle_expired(cx) => Self::timed_out(),
            other => other,
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        if self.must_close(cx) {
            return Self::closed();
        }
        match Pin::new(&mut self.inner).poll_write_vectored(cx, bufs) {
            Poll::Ready(Ok(n)) if n > 0 => {
                self.last = Instant::now();
                Poll::Ready(Ok(n))
            }
            Poll::Pending if self.idle_expired(cx) => Self::timed_out(),
            other => other,
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

impl Guarded<TcpStream> {
    /// The peer's address.
    pub fn peer_addr(&self) -> std::io::Result<std::net::SocketAddr> {
        self.inner.peer_addr()
    }
}

impl tonic::transport::server::Connected for Guarded<TcpStream> {
    type ConnectInfo = ConnInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        ConnInfo {
            tcp: self.inner.connect_info(),
            handshake: self.handshake.as_ref().map(|(h, _)| h.clone()),
        }
    }
}

/// The accept loop every listener served connection by connection shares: accepts on
/// `listener` (see [`incoming`]: a slot of `cap` per connection, one over the cap
/// closed at once, the `idle` timeout, accept errors paused on) until `shutdown`, running
/// `serve` for each connection as a task of the returned set (the caller decides whether to
/// wait for them or end them).
pub(crate) async fn accept_connections<F>(
    listener: tokio::net::TcpListener,
    cap: Arc<tokio::sync::Semaphore>,
    idle: Option<std::time::Duration>,
    what: &'static str,
    shutdown: impl Future<Output = ()>,
    mut serve: impl FnMut(Guarded<tokio::net::TcpStream>, std::net::SocketAddr) -> F,
) -> tokio::task::JoinSet<()>
where
    F: Future<Output = ()> + Send + 'static,
{
    use futures_util::StreamExt as _;
    let mut shutdown = std::pin::pin!(shutdown);
    let mut incoming = std::pin::pin!(incoming(listener, cap, idle, what));
    let mut connections = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            Some(Ok(conn)) = incoming.next() => {
                match conn.peer_addr() {
                    Ok(peer) => {
                        connections.spawn(serve(conn, peer));
                    }
                    Err(e) => tracing::debug!(error = %e, what, "a connection left at once"),
                }
            }
            Some(finished) = connections.join_next(), if !connections.is_empty() => {
                if let Err(e) = finished
                    && e.is_panic()
                {
                    tracing::error!(error = %e, what, "a connection task panicked");
                }
            }
        }
    }
    connections
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A connection over the cap is closed at once; one that stays silent is closed after the
    /// idle timeout, and its slot is free again.
    #[tokio::test]
    async fn connections_are_capped_and_idle_ones_closed() {
        use futures_util::StreamExt;
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let cap = Arc::new(Semaphore::new(1));
        let mut accepted = Box::pin(incoming(
            listener,
            cap.clone(),
            Some(Duration::from_millis(300)),
            "test",
        ));
        let server = tokio::spawn(async move {
            while let Some(Ok(mut conn)) = accepted.next().await {
                tokio::spawn(async move {
                    let mut buf = [0u8; 16];
                    // Echo until the peer leaves or the connection idles out.
                    while let Ok(n) = conn.read(&mut buf).await {
                        if n == 0 || conn.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
        let mut first = TcpStream::connect(addr).await.expect("first");
        first.write_all(b"hi").await.expect("write");
        let mut echo = [0u8; 2];
        first.read_exact(&mut echo).await.expect("echo");
        assert_eq!(&echo, b"hi");
        // Over the cap: closed by the server without an answer.
        let mut second = TcpStream::connect(addr).await.expect("second");
        let mut byte = [0u8; 1];
        let closed = tokio::time::timeout(Duration::from_secs(5), second.read(&mut byte)).await;
        assert!(matches!(closed, Ok(Ok(0)) | Ok(Err(_))), "{closed:?}");
        // The first, left silent, is closed after the idle timeout, and frees its slot.
        let closed = tokio::time::timeout(Duration::from_secs(5), first.read(&mut byte)).await;
        assert!(matches!(closed, Ok(Ok(0)) | Ok(Err(_))), "{closed:?}");
        let deadline = Instant::now() + Duration::from_secs(5);
        while cap.available_permits() == 0 {
            assert!(
                Instant::now() < deadline,
                "the idle connection kept its slot"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        server.abort();
    }
}
