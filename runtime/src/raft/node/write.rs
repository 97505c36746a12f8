//! The write path: a command proposed on the leader, or forwarded to it from a follower, after
//! the version gate admits it.

use std::time::Duration;

use openraft::errors::ClientWriteError;

use super::{Asked, NodeError, RaftNode, Retry, now_us};
use crate::raft::network::{Answer, Message};
use crate::raft::types::{Applied, Envelope, NodeAddr, NodeId, Rejected};
use crate::raft::version::Shape;

impl RaftNode {
    /// Proposes a serialized command (from an API caller) and waits for its outcome. With the
    /// caller's own request id the write is idempotent end to end (a retry with the same id is
    /// answered from the session record); without one, this node's session numbers it.
    pub async fn write(
        &self,
        command: Vec<u8>,
        request: Option<crate::wire::call::RequestId>,
    ) -> Result<Applied, NodeError> {
        if self.redirect_writes && !self.is_leader() {
            return Err(NodeError::NotLeader(self.leader().map(|(_, addr)| addr)));
        }
        // Without the caller's id, this node's session numbers the write; the guard keeps its
        // acknowledgement below the write until the outcome is in (or the call is dropped).
        // The caller's ids and this node's session live in separate namespaces: no caller can
        // pick an id that collides with the node's.
        let (id, client, in_flight) = match request {
            Some(id) => {
                let client = format!("c:{}", id.client);
                (id, client, None)
            }
            None => {
                let in_flight = self.session.begin();
                let client = format!("n:{}", in_flight.id.client);
                (in_flight.id.clone(), client, Some(in_flight))
            }
        };
        let envelope = Envelope {
            client,
            seq: id.seq,
            ack: id.ack.min(id.seq),
            time_us: now_us(),
            command,
        };
        let outcome = self.propose(envelope).await;
        drop(in_flight);
        outcome
    }

    /// Proposes an envelope with the caller's own client id and sequence number: a retry with
    /// the same pair is applied at most once and gets the original outcome.
    pub async fn propose(&self, envelope: Envelope) -> Result<Applied, NodeError> {
        // Bounded where it enters: on the node the client reached, and again on the leader
        // (whose limit is the one that counts for the log).
        if envelope.command.len() > self.max_command_bytes {
            return Err(NodeError::TooLarge {
                size: envelope.command.len(),
                limit: self.max_command_bytes,
            });
        }
        // Every member stores what enters the log: the node the client reached refuses while
        // its storage is past its quota, and so does the leader (this same check, on a
        // forwarded write).
        self.quota.admit()?;
        let mut last_error = String::from("no attempt made");
        let mut retry = Retry::new();
        let deadline = retry.deadline;
        while retry.next().await {
            if self.is_leader() {
                self.admit(&envelope.command).await?;
                let mut env = envelope.clone();
                env.time_us = now_us();
                let written = tokio::time::timeout_at(deadline, self.raft.client_write(env)).await;
                let Ok(written) = written else {
                    last_error = "no quorum before the deadline".into();
                    break;
                };
                match written {
                    Ok(response) => return Ok(response.data?),
                    Err(e) => match e.api_error() {
                        Some(ClientWriteError::ForwardToLeader(to)) => {
                            // Check-quorum: a leader that has not heard from a quorum within
                            // its lease says so now, and the client can try another node. (A
                            // leader just elected may refuse the same way for a moment: that
                            // one has heard from no quorum yet, and is retried.)
                            if to.leader_id.is_none() && self.quorum_lost() {
                                return Err(NodeError::NoQuorum(self.id));
                            }
                            last_error = "leadership moved".into();
                        }
                        Some(ClientWriteError::LogEntryDiscarded(_)) => {
                            // Unknown outcome: the retry is deduplicated by (client, seq).
                            last_error = "entry discarded by a leader change".into();
                        }
                        _ => return Err(NodeError::Raft(e.to_string())),
                    },
                }
            } else if let Some((leader_id, leader)) = self.leader() {
                let forward = Message::Forward(envelope.clone());
                let forwarded = match self
                    .ask_leader(leader_id, &leader, &forward, deadline)
                    .await
                {
                    Asked::Answer(answer) => answer,
                    Asked::Moved => {
                        last_error = format!("leadership moved from node {leader_id}");
                        continue;
                    }
                    Asked::TimedOut => {
                        last_error = format!("node {leader_id} did not answer before the deadline");
                        break;
                    }
                };
                match forwarded {
                    Ok(Answer::Applied(applied)) => return Ok(applied),
                    Ok(Answer::Rejected(reason)) => return Err(Rejected(reason).into()),
                    Ok(Answer::NoSpace(reason)) => return Err(NodeError::NoSpace(reason)),
                    Ok(Answer::NotLeader(_)) => {
                        last_error = format!("node {leader_id} is no longer leader")
                    }
                    Ok(Answer::Failed(e)) => last_error = e,
                    Ok(other) => last_error = format!("unexpected answer {other:?}"),
                    Err(status) => last_error = format!("forwarding to node {leader_id}: {status}"),
                }
            } else {
                last_error = "no leader elected".into();
            }
        }
        Err(NodeError::NoLeader(last_error))
    }

    /// The version gate (see [`crate::raft::version`]): refuses a command some member's build
    /// cannot apply, naming it, or that this build cannot decode. Members never heard from, and
    /// those that seemed to lack the command (they may just have been upgraded), are asked
    /// first.
    async fn admit(&self, command: &[u8]) -> Result<(), NodeError> {
        if self.schema.is_opaque() {
            return Ok(());
        }
        self.check_members(command).await?;
        // Only what this build decodes enters the log: an entry no replica can read would stop
        // them all.
        self.sm
            .admit(command)
            .map_err(|refused| Rejected(refused.to_string()).into())
    }

    /// The members' half of [`RaftNode::admit`]. When every member runs this build's schema,
    /// this build's own decode (the other half) speaks for all of them, and the command is not
    /// read here at all.
    async fn check_members(&self, command: &[u8]) -> Result<(), NodeError> {
        let ids = self.members(|id, _| Some(id));
        if self.gate.all_run(&self.schema.version, &ids) {
            return Ok(());
        }
        let shape = Shape::of(command).map_err(Rejected)?;
        let verdict = self.gate.check(&shape, &ids);
        if verdict.admits() {
            return Ok(());
        }
        let ask = self.members(|id, addr| {
            let ask = id != self.id
                && (verdict.unasked.contains(&id)
                    || verdict.lacking.iter().any(|(lacking, ..)| *lacking == id));
            ask.then(|| (id, addr.clone()))
        });
        self.ask_schemas(ask).await;
        match self.gate.check(&shape, &ids).refusal() {
            Some(refused) => Err(refused.into()),
            None => Ok(()),
        }
    }

    /// Asks `members` for their schemas at once and records the answers (no answer within
    /// [`SCHEMA_TIMEOUT`] is recorded as silence).
    async fn ask_schemas(&self, members: Vec<(NodeId, NodeAddr)>) {
        let asked = members.into_iter().map(|(id, addr)| async move {
            let answer =
                tokio::time::timeout(SCHEMA_TIMEOUT, self.send_to(&addr.raft, &Message::Schema))
                    .await;
            let schema = match answer {
                Ok(Ok(Answer::Schema(schema))) => Some(schema),
                _ => None,
            };
            self.gate.record(id, schema);
        });
        futures_util::future::join_all(asked).await;
    }
}

/// How long the version gate waits for a member's schema on a write.
const SCHEMA_TIMEOUT: Duration = Duration::from_secs(1);

/// How often a node asks every member for its schema again.
const SCHEMA_REFRESH: Duration = Duration::from_secs(3);

/// While the node lives, asks every other member for its schema every [`SCHEMA_REFRESH`], so
/// that the gate sees upgrades, downgrades and new members, and a follower that becomes leader
/// knows its members already (its first writes wait for nobody).
pub(super) async fn refresh_schemas(node: std::sync::Weak<RaftNode>) {
    loop {
        tokio::time::sleep(SCHEMA_REFRESH).await;
        let Some(node) = node.upgrade() else {
            return;
        };
        node.gate.retain(&node.members(|id, _| Some(id)));
        let others = node.members(|id, addr| (id != node.id).then(|| (id, addr.clone())));
        node.ask_schemas(others).await;
    }
}
