//! The link to one peer: the backoff and probes every client openraft makes for that peer
//! shares, so a dead peer costs a probe per interval, not a busy loop.

use std::sync::Mutex;

use crate::raft::rpc::RaftCredentials;

/// The state of the link to one peer that every client openraft makes for it shares: whether
/// the peer can be reached, and when to try again.
///
/// After a failed connect or a call that found the connection gone, the next connect waits:
/// `probe_every`, then twice that, and so on up to `max_backoff`; any answer from the peer
/// resets it. While waiting, a bare TCP connect probes the peer every `probe_every`, so a
/// peer that listens again is dialed within one probe interval. A dead peer thus costs a
/// probe per interval and a failed attempt per backoff step, not a busy loop (openraft retries
/// a replication stream at once when `stream_append` fails before it reads the request stream,
/// and so does not apply its own backoff there).
///
/// The connections themselves are per client: the heartbeats never queue behind a replication
/// stream's large messages on one connection.
#[derive(Debug)]
pub(super) struct Link {
    pub(super) addr: String,
    pub(super) credentials: RaftCredentials,
    pub(super) probe_every: std::time::Duration,
    pub(super) max_backoff: std::time::Duration,
    pub(super) message_budget: usize,
    pub(super) state: Mutex<LinkState>,
}

#[derive(Debug, Default)]
pub(super) struct LinkState {
    /// Failures since the peer last answered.
    failures: u32,
    /// No connect before this instant (unless a probe finds the peer listening).
    retry_at: Option<tokio::time::Instant>,
}

impl Link {
    fn state(&self) -> std::sync::MutexGuard<'_, LinkState> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Waits until a connect may be tried: at once without a backoff, else at its end or as
    /// soon as a probe finds the peer listening.
    pub(super) async fn backoff(&self) {
        loop {
            let Some(retry_at) = self.state().retry_at else {
                return;
            };
            let now = tokio::time::Instant::now();
            if now >= retry_at {
                return;
            }
            let probe_at = (now + self.probe_every).min(retry_at);
            tokio::time::sleep_until(probe_at).await;
            if probe_at < retry_at && self.probe().await {
                return;
            }
        }
    }

    /// Whether something listens at the peer's address (a TCP connect, within one probe
    /// interval; a connection to ourselves does not count).
    pub(super) async fn probe(&self) -> bool {
        matches!(
            tokio::time::timeout(self.probe_every, crate::raft::rpc::dial(&self.addr)).await,
            Ok(Ok(_))
        )
    }

    /// The peer answered: no backoff.
    pub(super) fn answered(&self) {
        let mut state = self.state();
        if state.failures != 0 {
            state.failures = 0;
            state.retry_at = None;
        }
    }

    /// What a failed call says about the link: a transport failure (the peer is gone, or the
    /// connection broke) starts or extends the backoff; the peer's own refusals do not.
    pub(super) fn observe(&self, status: &tonic::Status) {
        if status.code() == tonic::Code::Unavailable {
            self.failed();
        }
    }

    /// The peer could not be reached: wait longer before the next connect.
    pub(super) fn failed(&self) {
        let mut state = self.state();
        state.failures = state.failures.saturating_add(1);
        let delay = self
            .probe_every
            .saturating_mul(1u32 << (state.failures - 1).min(16))
            .min(self.max_backoff);
        state.retry_at = Some(tokio::time::Instant::now() + delay);
    }
}
