//! A node's status, typed: what `admin status` answers, `/metrics` exports, `top` draws and the
//! test cluster waits on. It travels as JSON (the admin answer), with the field names below.

use std::collections::BTreeMap;

use openraft::ServerState;
use serde::{Deserialize, Serialize};

use super::types::{C, NodeAddr, NodeId};

/// A node's role in raft.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Role {
    /// Replicates the log without a vote.
    Learner,
    /// A voter that follows a leader.
    Follower,
    /// A voter campaigning for leadership.
    Candidate,
    /// The leader.
    Leader,
    /// Stopped.
    Shutdown,
}

impl Role {
    /// Every role, in the order `/metrics` lists them.
    pub const ALL: [Role; 5] = [
        Role::Leader,
        Role::Follower,
        Role::Candidate,
        Role::Learner,
        Role::Shutdown,
    ];

    /// The role's name, as it is written in the status.
    pub fn name(self) -> &'static str {
        match self {
            Role::Learner => "Learner",
            Role::Follower => "Follower",
            Role::Candidate => "Candidate",
            Role::Leader => "Leader",
            Role::Shutdown => "Shutdown",
        }
    }
}

impl From<ServerState> for Role {
    fn from(state: ServerState) -> Self {
        match state {
            ServerState::Learner => Role::Learner,
            ServerState::Follower => Role::Follower,
            ServerState::Candidate => Role::Candidate,
            ServerState::Leader => Role::Leader,
            ServerState::Shutdown => Role::Shutdown,
        }
    }
}

/// Whether a member votes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Membership {
    /// Counts toward quorums.
    Voter,
    /// Replicates without a vote.
    Learner,
}

/// One member of the cluster as a node's membership knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// Voter or learner.
    pub role: Membership,
    /// Its API listeners by protocol.
    #[serde(default)]
    pub api: BTreeMap<String, String>,
    /// Its raft listener.
    pub raft: String,
}

impl Member {
    /// Its addresses.
    pub fn addr(&self) -> NodeAddr {
        NodeAddr {
            raft: self.raft.clone(),
            api: self.api.clone(),
        }
    }
}

/// One node's status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeStatus {
    /// The node's id.
    pub id: NodeId,
    /// Its role.
    pub role: Role,
    /// Its current term.
    pub term: u64,
    /// The leader it knows of.
    pub leader: Option<NodeId>,
    /// A leader that has not heard from a quorum within its lease (it takes no writes).
    pub quorum_lost: bool,
    /// Its last log entry's index.
    pub last_log_index: Option<u64>,
    /// The last index it knows is committed.
    pub committed_index: Option<u64>,
    /// The last index its state machine applied.
    pub last_applied_index: Option<u64>,
    /// The index its last snapshot covers.
    pub snapshot_index: Option<u64>,
    /// The last index purged from its log.
    pub purged_index: Option<u64>,
    /// The members of the cluster, by id.
    pub members: BTreeMap<NodeId, Member>,
    /// On a leader: how many entries each member is behind its last log index.
    #[serde(default)]
    pub lag: BTreeMap<NodeId, u64>,
    /// The schema version this node's build runs.
    pub schema: String,
    /// The open-files limit the node runs under.
    pub open_files_limit: u64,
    /// Snapshot builds and installs that failed since the node started (each is tried again).
    #[serde(default)]
    pub snapshot_failures: u64,
    /// Whether it is rejoining after a log repair: it does not vote until it has caught up.
    #[serde(default)]
    pub rejoining: bool,
    /// The disk space its raft state (log, database, snapshots) held at the last measurement.
    #[serde(default)]
    pub storage_bytes: u64,
    /// Its storage quota (`--quota-bytes`), if it has one.
    #[serde(default)]
    pub quota_bytes: Option<u64>,
    /// Whether its `NOSPACE` alarm is on: its storage is at or past the quota, and it refuses
    /// writes.
    #[serde(default)]
    pub nospace: bool,
    /// The watchers of its change feed now.
    #[serde(default)]
    pub watchers: u64,
    /// Watches it refused since it started because it served `--max-watchers` already.
    #[serde(default)]
    pub watchers_refused: u64,
    /// Raft connections it closed since it started because they made no authenticated
    /// request in time (see [`crate::net::conn::incoming_authenticated`]).
    #[serde(default)]
    pub unauthenticated_closed: u64,
}

impl NodeStatus {
    /// The status that openraft's metrics `m` describe, with what this node adds.
    pub fn from_metrics(
        m: &openraft::RaftMetrics<C>,
        quorum_lost: bool,
        schema: String,
        open_files_limit: u64,
    ) -> Self {
        let membership = m.membership_config.membership();
        let members = membership
            .nodes()
            .map(|(id, node)| {
                let role = if membership.voter_ids().any(|v| v == *id) {
                    Membership::Voter
                } else {
                    Membership::Learner
                };
                let member = Member {
                    role,
                    api: node.api.clone(),
                    raft: node.raft.clone(),
                };
                (*id, member)
            })
            .collect();
        let last_log = m.last_log_index.unwrap_or_default();
        let lag = m
            .replication
            .iter()
            .flatten()
            .map(|(id, matched)| {
                let matched = matched.as_ref().map_or(0, |l| l.index);
                (*id, last_log.saturating_sub(matched))
            })
            .collect();
        NodeStatus {
            id: m.id,
            role: m.state.into(),
            term: m.current_term,
            leader: m.current_leader,
            quorum_lost,
            last_log_index: m.last_log_index,
            committed_index: m.local_committed.map(|l| l.index),
            last_applied_index: m.last_applied.map(|l| l.index),
            snapshot_index: m.snapshot.map(|l| l.index),
            purged_index: m.purged.map(|l| l.index),
            members,
            lag,
            schema,
            open_files_limit,
            snapshot_failures: 0,
            rejoining: false,
            storage_bytes: 0,
            quota_bytes: None,
            nospace: false,
            watchers: 0,
            watchers_refused: 0,
            unauthenticated_closed: 0,
        }
    }

    /// Whether this node calls itself the leader.
    pub fn is_leader(&self) -> bool {
        self.role == Role::Leader
    }

    /// Whether `id` is a voter in this node's membership.
    pub fn is_voter(&self, id: NodeId) -> bool {
        self.members
            .get(&id)
            .is_some_and(|m| m.role == Membership::Voter)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_json_keeps_its_field_names() {
        let status = NodeStatus {
            id: 2,
            role: Role::Leader,
            term: 7,
            leader: Some(2),
            quorum_lost: false,
            last_log_index: Some(40),
            committed_index: Some(40),
            last_applied_index: Some(39),
            snapshot_index: None,
            purged_index: None,
            members: BTreeMap::from([(
                1,
                Member {
                    role: Membership::Learner,
                    api: BTreeMap::from([("grpc".into(), "127.0.0.1:1".into())]),
                    raft: "127.0.0.1:2".into(),
                },
            )]),
            lag: BTreeMap::from([(1, 3)]),
            schema: "v1".into(),
            open_files_limit: 1024,
            snapshot_failures: 2,
            rejoining: true,
            storage_bytes: 1 << 20,
            quota_bytes: Some(8 << 20),
            nospace: true,
            watchers: 3,
            watchers_refused: 1,
            unauthenticated_closed: 4,
        };
        let json = serde_json::to_value(&status).expect("encodes");
        assert_eq!(json["role"], "Leader");
        assert_eq!(json["members"]["1"]["role"], "learner");
        assert_eq!(json["members"]["1"]["api"]["grpc"], "127.0.0.1:1");
        assert_eq!(json["lag"]["1"], 3);
        assert_eq!(json["last_applied_index"], 39);
        let back: NodeStatus = serde_json::from_value(json).expect("decodes");
        assert_eq!(back, status);
        assert!(back.is_leader() && !back.is_voter(1) && !back.is_voter(9));
    }
}
