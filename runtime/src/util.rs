//! Small helpers shared by the transports.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use futures_util::FutureExt;
use tokio::task::JoinHandle;

use crate::{CallKind, Handler};

/// Makes the entries of directory `dir` (files created, renamed or removed in it) durable.
pub(crate) fn sync_dir(dir: &std::path::Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// Makes `path` readable and writable by its owner only (0600): a node's databases, snapshots
/// and backups hold all of the service's data.
pub(crate) fn owner_only(path: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
}

/// Creates `path` anew as a file only its owner can read and write (0600). Whatever was there is
/// removed first (a symbolic link itself, never its target) and the file is created exclusively,
/// so the data never goes through a link or into a file someone else opened.
pub(crate) fn create_owner_only(path: &std::path::Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt as _;
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
}

/// Aborts the task when dropped, so a task's lifetime can be tied to its owner's.
pub(crate) struct AbortOnDrop<T>(pub(crate) JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Runs the handler; a panicking handler gets the caller a refusal instead of no reply at all.
pub(crate) async fn handle_guarded<H: Handler>(
    handler: Arc<H>,
    kind: CallKind,
    payload: Vec<u8>,
) -> Vec<u8> {
    match AssertUnwindSafe(handler.handle(kind, payload))
        .catch_unwind()
        .await
    {
        Ok(reply) => reply,
        Err(_) => {
            tracing::error!("the request handler panicked");
            handler.refuse("the server failed while handling the request")
        }
    }
}

/// Lower-case hex of `bytes`.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The length and SHA-256 of the file at `path`, read a chunk at a time.
pub(crate) async fn file_sha256(path: &std::path::Path) -> std::io::Result<(u64, [u8; 32])> {
    use sha2::Digest as _;
    use tokio::io::AsyncReadExt as _;
    let mut file = tokio::fs::File::open(path).await?;
    let mut hasher = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut len = 0u64;
    loop {
        let n = file.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        len += n as u64;
    }
    Ok((len, hasher.finalize().into()))
}

/// The accept loop every listener served connection by connection shares: accepts on
/// `listener` (see [`crate::conn::incoming`]: a slot of `cap` per connection, one over the cap
/// closed at once, the `idle` timeout, accept errors paused on) until `shutdown`, running
/// `serve` for each connection as a task of the returned set (the caller decides whether to
/// wait for them or end them).
pub(crate) async fn accept_connections<F>(
    listener: tokio::net::TcpListener,
    cap: Arc<tokio::sync::Semaphore>,
    idle: Option<std::time::Duration>,
    what: &'static str,
    shutdown: impl Future<Output = ()>,
    mut serve: impl FnMut(crate::conn::Guarded<tokio::net::TcpStream>, std::net::SocketAddr) -> F,
) -> tokio::task::JoinSet<()>
where
    F: Future<Output = ()> + Send + 'static,
{
    use futures_util::StreamExt as _;
    let mut shutdown = std::pin::pin!(shutdown);
    let mut incoming = std::pin::pin!(crate::conn::incoming(listener, cap, idle, what));
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
