//! The messages between nodes and their encoding (see the parent's module docs): raft RPCs,
//! forwarded writes and reads, admin requests, snapshot chunks, and the answers.

use super::*;

/// A message to a node's raft service.
#[derive(Debug, Serialize, Deserialize)]
pub enum Message {
    /// openraft append-entries (also heartbeats).
    Append(AppendEntriesRequest<C>),
    /// openraft vote.
    Vote(VoteRequest<C>),
    /// The chunks of transfer `id` have all been sent: install them as this snapshot, once the
    /// received file is exactly `len` bytes with this SHA-256.
    InstallSnapshot {
        /// The transfer.
        id: u64,
        /// The leader's vote.
        vote: Vote,
        /// What the snapshot holds.
        meta: SnapshotMeta,
        /// The snapshot file's length in bytes.
        len: u64,
        /// The snapshot file's SHA-256.
        sha256: [u8; 32],
    },
    /// A write a follower forwards to the leader.
    Forward(Envelope),
    /// A follower asks the leader for a linearizable read index.
    ReadIndex,
    /// Cluster administration.
    Admin(AdminRequest),
    /// openraft pre-vote: would the receiver vote for this candidate? (Nothing is persisted.)
    PreVote(VoteRequest<C>),
    /// Up to [`SNAPSHOT_CHUNK`] bytes of the backup `name` (made by [`AdminRequest::Backup`])
    /// from `offset`.
    ReadBackup {
        /// The backup's file name, as the backup's report gave it.
        name: String,
        /// Where to read from.
        offset: u64,
    },
    /// What does this node's build of the service know (its leader's version gate asks)?
    Schema,
}

/// Administrative requests (what an `admin` command of a service binary sends).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum AdminRequest {
    /// Role, term, leader, indexes, members and lag.
    Status,
    /// Add a non-voting member that starts receiving the log.
    AddLearner {
        /// Its id.
        id: NodeId,
        /// Its addresses.
        addr: NodeAddr,
    },
    /// Make the given learners voters (the rest of the voters stay).
    Promote {
        /// The ids.
        ids: Vec<NodeId>,
    },
    /// Remove a node from the cluster.
    Remove {
        /// Its id.
        id: NodeId,
    },
    /// Add a node as learner, wait until it caught up, and promote it.
    Join {
        /// Its id.
        id: NodeId,
        /// Its addresses.
        addr: NodeAddr,
    },
    /// Hand leadership to another voter.
    TransferLeader {
        /// The new leader.
        to: NodeId,
    },
    /// Build a snapshot now (and purge the log it covers).
    Snapshot,
    /// The digest of this node's application state.
    Digest,
    /// Write a consistent copy of this node's state database to its data directory and report
    /// its name, length, SHA-256, applied index and digest (read it with
    /// [`Message::ReadBackup`]; the previous backup is removed).
    Backup,
    /// Set a failpoint on this node (see [`crate::failpoint`]; refused by a build without the
    /// `failpoints` feature).
    Failpoint {
        /// The point's name.
        name: String,
        /// Its actions (`off` clears them).
        actions: String,
    },
    /// Change the users or tokens (through the log, on the leader; see
    /// [`crate::raft::auth`]).
    Auth(crate::raft::auth::AuthCommand),
    /// The users, their roles and their tokens' ids, as this node has applied them.
    Users,
}

impl AdminRequest {
    /// How long a caller waits for the answer: a report comes at once (a node that does not
    /// answer within the RPC timeout is down for this purpose); a membership change or a
    /// snapshot may take as long as the node's admin bound allows (a learner's catch-up).
    pub fn timeout(&self) -> std::time::Duration {
        match self {
            AdminRequest::Status
            | AdminRequest::Digest
            | AdminRequest::Failpoint { .. }
            | AdminRequest::Users => crate::raft::rpc::RPC_TIMEOUT,
            _ => ADMIN_TIMEOUT.saturating_add(std::time::Duration::from_secs(5)),
        }
    }
}

/// The answer to a [`Message`].
#[derive(Debug, Serialize, Deserialize)]
pub enum Answer {
    /// To [`Message::Append`].
    Append(AppendEntriesResponse<C>),
    /// To [`Message::Vote`].
    Vote(VoteResponse<C>),
    /// To [`Message::InstallSnapshot`].
    Snapshot(SnapshotResponse<C>),
    /// A chunk was stored.
    ChunkStored,
    /// To [`Message::Forward`]: the outcome of the write.
    Applied(Applied),
    /// To [`Message::ReadIndex`].
    ReadIndex(u64),
    /// This node is not the leader; the leader, if known.
    NotLeader(Option<(NodeId, NodeAddr)>),
    /// To an admin request: a report, as JSON text.
    Admin(String),
    /// The request failed.
    Failed(String),
    /// To [`Message::Forward`]: the write was refused as sent (its request id was used before
    /// for another command, or some member cannot apply it yet).
    Rejected(String),
    /// To [`Message::ReadBackup`]: the bytes (empty at the end of the file).
    Bytes(Vec<u8>),
    /// To [`Message::Schema`].
    Schema(crate::raft::version::Schema),
    /// To [`Message::Forward`]: the leader's storage is past its quota; nothing was written.
    /// (Last, so that builds before it decode every other answer alike.)
    NoSpace(String),
}

/// Encodes a message.
pub fn encode_message(m: &Message) -> Result<Vec<u8>, postcard::Error> {
    let mut out = vec![0u8];
    out.extend(encode(m)?);
    Ok(out)
}

/// Encodes a snapshot chunk.
pub fn encode_chunk(id: u64, offset: u64, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(17 + data.len());
    out.push(1u8);
    out.extend_from_slice(&id.to_be_bytes());
    out.extend_from_slice(&offset.to_be_bytes());
    out.extend_from_slice(data);
    out
}

/// A decoded payload.
pub enum Incoming {
    /// A message.
    Message(Message),
    /// A snapshot chunk.
    Chunk {
        /// Transfer id.
        id: u64,
        /// Byte offset in the snapshot file.
        offset: u64,
        /// The bytes.
        data: Vec<u8>,
    },
}

/// Decodes a payload.
pub fn decode(payload: &[u8]) -> Result<Incoming, String> {
    match payload.split_first() {
        Some((0, rest)) => crate::raft::types::decode(rest)
            .map(Incoming::Message)
            .map_err(|e| format!("malformed raft message: {e}")),
        Some((1, rest)) if rest.len() >= 16 => {
            let id = u64::from_be_bytes(rest[..8].try_into().map_err(|_| "chunk id")?);
            let offset = u64::from_be_bytes(rest[8..16].try_into().map_err(|_| "chunk offset")?);
            Ok(Incoming::Chunk {
                id,
                offset,
                data: rest[16..].to_vec(),
            })
        }
        _ => Err("malformed raft payload".into()),
    }
}
