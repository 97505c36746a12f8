//! A node that starts after a log repair (see [`crate::raft::log_store::repair`]) rejoins
//! without voting: it starts no election and refuses vote and pre-vote requests until a leader
//! of at least the marker's term has brought it up to date; then it removes the marker and
//! votes again.

use std::path::PathBuf;
use std::sync::Weak;
use std::sync::atomic::Ordering;
use std::time::Duration;

use openraft::async_runtime::WatchReceiver;

use super::RaftNode;
use crate::raft::log_store::repair::RejoinMarker;

/// How often a rejoining node checks whether it has caught up.
const CHECK_EVERY: Duration = Duration::from_millis(500);

/// How long one check may wait for the leader's read index and its apply.
const CHECK_WITHIN: Duration = Duration::from_secs(10);

impl RaftNode {
    /// Whether this node is rejoining after a log repair (it does not vote).
    pub fn rejoining(&self) -> bool {
        self.rejoining.load(Ordering::Acquire)
    }

    /// Whether this node, rejoining, has heard from a leader of term `term` or later and
    /// applied everything that leader has committed (its read index, asked now).
    async fn caught_up(&self, term: u64) -> bool {
        let (leader, current_term) = {
            let m = self.raft.metrics();
            let m = m.borrow_watched();
            (m.current_leader, m.current_term)
        };
        if leader.is_none_or(|l| l == self.id) || current_term < term {
            return false;
        }
        let deadline = tokio::time::Instant::now() + CHECK_WITHIN;
        let Ok(index) = self.read_index(deadline).await else {
            return false;
        };
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        self.sm.wait_applied(index, left).await.is_ok()
    }
}

/// Waits until the node has caught up (see [`RaftNode::caught_up`]), then lets it vote again:
/// the marker goes (durably), and elections are enabled.
pub(super) async fn finish(node: Weak<RaftNode>, data_dir: PathBuf, marker: RejoinMarker) {
    loop {
        tokio::time::sleep(CHECK_EVERY).await;
        let Some(node) = node.upgrade() else {
            return;
        };
        if !node.caught_up(marker.term).await {
            continue;
        }
        // Caught up: the node votes now. A marker that cannot be removed only makes the next
        // start rejoin again (harmless), so it is said once, not retried.
        if let Err(e) = RejoinMarker::remove(&data_dir) {
            tracing::error!(
                "the repair's marker cannot be removed ({e}): the next start rejoins again"
            );
        }
        node.rejoining.store(false, Ordering::Release);
        node.raft.runtime_config().elect(true);
        tracing::warn!(
            "rejoined after the log repair: caught up with a leader of term {} or later; this \
             node votes again (the damaged files stay in {})",
            marker.term,
            marker.damaged.display()
        );
        return;
    }
}
