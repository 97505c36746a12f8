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
