//! Small helpers shared by the transports.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use futures_util::FutureExt;
use tokio::task::JoinHandle;

use crate::{CallKind, Handler};

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
