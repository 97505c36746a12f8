//! Read-index rounds shared by concurrent reads.
//!
//! A linearizable read needs a read index: a log index the leader confirmed, after the read
//! arrived, to be the commit point of a leader that still holds a quorum. One confirmation is a
//! round of heartbeats; instead of one round per read, reads that arrive while a round is under
//! way wait for the next round, and every read waiting when a round starts shares its result.
//! That keeps linearizability (each read's round starts after the read arrived) and makes the
//! rounds per second independent of the read rate.
//!
//! The rounds run in a task of their own, so a caller that goes away (a cancelled request) does
//! not cancel the round the others wait for.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use openraft::ReadPolicy;
use tokio::sync::oneshot;

use super::state_machine::Raft;

/// The answer to one read: its read index, or why there is none.
type Waiter = oneshot::Sender<Result<u64, String>>;

/// Coalesces read-index requests into rounds; see the [module documentation](self).
#[derive(Default)]
pub(crate) struct ReadIndexRounds {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// A round task is running (it takes `waiting` before each round).
    running: bool,
    /// Reads that arrived since the last round started.
    waiting: Vec<Waiter>,
}

impl ReadIndexRounds {
    /// A read index for a read that arrives now, from the next round of `raft` (which must be
    /// the leader; a round fails otherwise). A round gives up after `timeout`.
    pub(crate) async fn index(
        self: &Arc<Self>,
        raft: &Raft,
        timeout: Duration,
    ) -> Result<u64, String> {
        let (tx, rx) = oneshot::channel();
        let start = {
            let mut state = self
                .state
                .lock()
                .map_err(|_| "read index lock poisoned".to_string())?;
            state.waiting.push(tx);
            !std::mem::replace(&mut state.running, true)
        };
        if start {
            let rounds = Arc::clone(self);
            let raft = raft.clone();
            tokio::spawn(async move { rounds.run(raft, timeout).await });
        }
        rx.await
            .map_err(|_| "the read index round stopped".to_string())?
    }

    /// Runs rounds while reads wait.
    async fn run(&self, raft: Raft, timeout: Duration) {
        loop {
            let batch = {
                let Ok(mut state) = self.state.lock() else {
                    return;
                };
                if state.waiting.is_empty() {
                    state.running = false;
                    return;
                }
                std::mem::take(&mut state.waiting)
            };
            let round =
                tokio::time::timeout(timeout, raft.ensure_linearizable(ReadPolicy::ReadIndex))
                    .await;
            let result = match round {
                Ok(Ok(read_log_id)) => Ok(read_log_id.index()),
                Ok(Err(e)) => Err(e.to_string()),
                Err(_) => Err("no quorum for a read index".to_string()),
            };
            for waiter in batch {
                let _ = waiter.send(result.clone());
            }
        }
    }
}
