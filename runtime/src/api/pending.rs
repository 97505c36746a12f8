//! The client side's table of calls waiting for their replies, shared by both transports.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

use tokio::sync::{mpsc, oneshot};

use crate::wire::frame::ID_AND_KIND_LEN;
use crate::wire::transport::{Limits, TransportError};

/// What a waiting call receives.
pub(crate) type Outcome = Result<Vec<u8>, TransportError>;

/// Calls in flight, keyed by request id, plus whether the connection is gone.
#[derive(Default)]
pub(crate) struct Pending {
    next_id: AtomicU64,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    closed: bool,
    calls: HashMap<u64, oneshot::Sender<Outcome>>,
}

impl Pending {
    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the map inconsistent (every operation is a
        // single insert/remove), so a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Assigns a fresh request id and registers a waiter for it; [`TransportError::Closed`] once
    /// the connection is gone. The returned guard forgets the call when dropped, so a timed-out or
    /// cancelled call does not leak its entry.
    pub(crate) fn register(&self) -> Result<Waiter<'_>, TransportError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        let mut state = self.state();
        if state.closed {
            return Err(TransportError::Closed);
        }
        state.calls.insert(id, tx);
        Ok(Waiter {
            pending: self,
            id,
            rx: Some(rx),
        })
    }

    /// Hands `outcome` to the call waiting for `id`; false if no call waits for it (it timed out,
    /// was cancelled, or the id is bogus).
    pub(crate) fn complete(&self, id: u64, outcome: Outcome) -> bool {
        let sender = self.state().calls.remove(&id);
        match sender {
            Some(sender) => sender.send(outcome).is_ok(),
            None => false,
        }
    }

    /// Marks the connection closed and fails every waiting call with [`TransportError::Closed`].
    pub(crate) fn close_all(&self) {
        let calls = {
            let mut state = self.state();
            state.closed = true;
            std::mem::take(&mut state.calls)
        };
        for (_, sender) in calls {
            let _ = sender.send(Err(TransportError::Closed));
        }
    }

    /// Whether the connection is known to be gone.
    pub(crate) fn is_closed(&self) -> bool {
        self.state().closed
    }

    fn forget(&self, id: u64) {
        self.state().calls.remove(&id);
    }
}

/// One registered call. Dropping it removes the call from the table.
pub(crate) struct Waiter<'a> {
    pending: &'a Pending,
    id: u64,
    rx: Option<oneshot::Receiver<Outcome>>,
}

impl Waiter<'_> {
    /// The call's request id.
    pub(crate) fn id(&self) -> u64 {
        self.id
    }

    /// Waits for the reply; [`TransportError::Closed`] if the connection went away first.
    pub(crate) async fn reply(&mut self) -> Outcome {
        match self.rx.as_mut() {
            Some(rx) => {
                let outcome = rx.await;
                self.rx = None;
                outcome.unwrap_or(Err(TransportError::Closed))
            }
            None => Err(TransportError::Closed),
        }
    }
}

impl Drop for Waiter<'_> {
    fn drop(&mut self) {
        if self.rx.is_some() {
            self.pending.forget(self.id);
        }
    }
}

/// One request/reply exchange on a multiplexed connection, the same for both transports:
/// refuses a request over [`Limits::max_frame`] without sending it, registers a waiter, queues
/// the message `build` makes from the request id, and waits for the reply within
/// [`Limits::request_timeout`].
pub(crate) async fn exchange<M>(
    pending: &Pending,
    outgoing: &mpsc::Sender<M>,
    limits: &Limits,
    payload_len: usize,
    build: impl FnOnce(u64) -> M,
) -> Outcome {
    let size = ID_AND_KIND_LEN.saturating_add(payload_len);
    if size > limits.max_frame {
        return Err(TransportError::FrameTooLarge {
            size,
            limit: limits.max_frame,
        });
    }
    let mut waiter = pending.register()?;
    let message = build(waiter.id());
    let exchange = async {
        outgoing
            .send(message)
            .await
            .map_err(|_| TransportError::Closed)?;
        waiter.reply().await
    };
    tokio::time::timeout(limits.request_timeout, exchange)
        .await
        .unwrap_or(Err(TransportError::Timeout))
}
