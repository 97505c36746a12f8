//! The read path: a read index (from a round of heartbeats, or the leader's lease) that the
//! local state machine waits for, then the query on local state.

use openraft::ReadPolicy;

use super::{Asked, NodeError, RETRY_FOR, RaftNode, ReadLevel, Retry};
use crate::raft::network::{Answer, Message};

impl RaftNode {
    /// Answers a serialized query at the given consistency level.
    /// Every wait in it ends by one deadline, [`RETRY_FOR`] after the call.
    pub async fn read(&self, query: Vec<u8>, level: ReadLevel) -> Result<Vec<u8>, NodeError> {
        let started = tokio::time::Instant::now();
        let deadline = started + RETRY_FOR;
        let index = match level {
            ReadLevel::Linearizable => Some(self.read_index(deadline).await?),
            ReadLevel::Lease => Some(self.lease_index(deadline).await?),
            ReadLevel::Stale => None,
        };
        if let Some(index) = index {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            self.sm
                .wait_applied(index, left)
                .await
                .map_err(|e| NodeError::NoLeader(format!("read index {index} not applied: {e}")))?;
            if level == ReadLevel::Linearizable {
                self.metrics.read_index_wait(started.elapsed());
            }
        }
        Ok(self.sm.query(query).await?)
    }

    /// A read index from the leader's lease, without a round of messages: valid while the
    /// leader's lease holds, which assumes the nodes' clocks advance at about the same rate
    /// (no clock jumps longer than the lease). Falls back to a read-index round when this node
    /// is not the leader or its lease has lapsed.
    async fn lease_index(&self, deadline: tokio::time::Instant) -> Result<u64, NodeError> {
        if self.is_leader()
            && let Ok(read_log_id) = self.raft.ensure_linearizable(ReadPolicy::LeaseRead).await
        {
            return Ok(read_log_id.index());
        }
        self.read_index(deadline).await
    }

    /// A log index that a linearizable read must wait for, asked until `deadline`.
    pub(super) async fn read_index(
        &self,
        deadline: tokio::time::Instant,
    ) -> Result<u64, NodeError> {
        let mut last_error = String::from("no attempt made");
        let mut retry = Retry::until(deadline);
        while retry.next().await {
            if self.is_leader() {
                if self.quorum_lost() {
                    return Err(NodeError::NoQuorum(self.id));
                }
                let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                match self.read_rounds.index(&self.raft, left).await {
                    Ok(index) => return Ok(index),
                    Err(e) => last_error = e,
                }
            } else if let Some((leader_id, leader)) = self.leader() {
                match self
                    .ask_leader(leader_id, &leader, &Message::ReadIndex, deadline)
                    .await
                {
                    Asked::Answer(Ok(Answer::ReadIndex(index))) => return Ok(index),
                    Asked::Answer(Ok(other)) => last_error = format!("{other:?}"),
                    Asked::Answer(Err(status)) => last_error = status.to_string(),
                    Asked::Moved => last_error = format!("leadership moved from node {leader_id}"),
                    Asked::TimedOut => {
                        last_error = "the leader did not answer before the deadline".into()
                    }
                }
            } else {
                last_error = "no leader elected".into();
            }
        }
        Err(NodeError::NoLeader(last_error))
    }
}
