//! The openraft type configuration shared by every service: the log carries opaque, already
//! serialized commands in an [`Envelope`], so the runtime needs to know nothing about any schema.
//!
//! Log entries and raft messages are encoded with [`postcard`] (see [`encode`] and [`decode`]):
//! compact, no field names, and one encoding for the log rows and the raft wire, so an entry
//! read from the log goes out without being re-encoded into another format.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// Where a node can be reached: its raft listener, and each API listener by protocol name.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeAddr {
    /// The raft listener, for raft traffic and forwarded writes.
    pub raft: String,
    /// The API listeners by protocol (`"grpc"`, `"jsonrpc"`, ...), for clients and redirects.
    #[serde(default)]
    pub api: BTreeMap<String, String>,
}

impl fmt::Display for NodeAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "raft={}", self.raft)?;
        for (protocol, addr) in &self.api {
            write!(f, " {protocol}={addr}")?;
        }
        Ok(())
    }
}

/// One log entry's payload: a command plus what makes applying it deterministic and
/// exactly-once.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Envelope {
    /// The client session; with `seq`, identifies the request for deduplication.
    pub client: String,
    /// The client's request sequence number; a retry reuses it.
    pub seq: u64,
    /// Every sequence number of this client below `ack` has been answered: their session records
    /// can go (0 = nothing acknowledged).
    #[serde(default)]
    pub ack: u64,
    /// The leader's wall-clock time when it accepted the command, in microseconds since the Unix
    /// epoch. Apply uses this and never its own clock.
    pub time_us: i64,
    /// The service's serialized command, kept verbatim.
    #[serde(with = "bytes")]
    pub command: Vec<u8>,
}

impl fmt::Display for Envelope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let head = &self.command[..self.command.len().min(48)];
        write!(
            f,
            "{}#{} {}",
            self.client,
            self.seq,
            String::from_utf8_lossy(head)
        )
    }
}

/// The version of the encoding of log entries (and raft messages). Stored in every log; a node
/// refuses a log of another version instead of misreading it. Version 1 was JSON.
pub const FORMAT_VERSION: u32 = 2;

/// Encodes a log entry or raft message.
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, postcard::Error> {
    postcard::to_allocvec(value)
}

/// Decodes what [`encode`] wrote.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, postcard::Error> {
    postcard::from_bytes(bytes)
}

/// What applying one entry produced, handed back to the proposer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Applied {
    /// Whether the command succeeded (a failed command changed nothing).
    pub ok: bool,
    /// The service's serialized reply.
    #[serde(with = "bytes")]
    pub reply: Vec<u8>,
}

/// Why the runtime refused to apply a proposal: its request id was used before for another
/// command. Every replica refuses it alike; nothing was applied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{0}")]
pub struct Rejected(pub String);

/// What a proposal came to: the service's outcome, or the runtime's refusal.
pub type Outcome = Result<Applied, Rejected>;

openraft::declare_raft_types!(
    /// The type configuration of every node.
    pub TypeConfig:
        D = Envelope,
        R = Outcome,
        Node = NodeAddr,
);

/// A byte vector serialized as bytes, not as a sequence of numbers. To postcard the two are the
/// same encoding (a length, then the bytes), so entries written either way read alike; as bytes
/// it is one copy instead of a serializer call per byte (a 3 MiB command took ~100 ms to encode
/// in a debug build, on the thread that also sends heartbeats).
mod bytes {
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(bytes)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<u8>, D::Error> {
        deserializer.deserialize_byte_buf(Visitor)
    }

    struct Visitor;

    impl<'de> serde::de::Visitor<'de> for Visitor {
        type Value = Vec<u8>;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("bytes")
        }

        fn visit_bytes<E>(self, v: &[u8]) -> Result<Vec<u8>, E> {
            Ok(v.to_vec())
        }

        fn visit_byte_buf<E>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
            Ok(v)
        }

        fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<u8>, A::Error> {
            let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1 << 20));
            while let Some(b) = seq.next_element()? {
                out.push(b);
            }
            Ok(out)
        }
    }
}

/// Shorthand for the config.
pub type C = TypeConfig;
/// A raft log entry.
pub type Entry = openraft::alias::EntryOf<C>;
/// A log id.
pub type LogId = openraft::alias::LogIdOf<C>;
/// A vote.
pub type Vote = openraft::alias::VoteOf<C>;
/// A node id.
pub type NodeId = u64;
/// Stored membership.
pub type StoredMembership = openraft::alias::StoredMembershipOf<C>;
/// Snapshot metadata.
pub type SnapshotMeta = openraft::alias::SnapshotMetaOf<C>;

/// One answer on a replication stream: openraft's result, or the fatal error that stopped the
/// follower's raft.
pub type StreamAnswer = Result<openraft::raft::StreamAppendResult<C>, String>;

#[cfg(test)]
mod tests {
    use super::*;

    /// The envelope as it was encoded before its bytes were serialized as bytes.
    #[derive(Serialize, Deserialize)]
    struct Before {
        client: String,
        seq: u64,
        ack: u64,
        time_us: i64,
        command: Vec<u8>,
    }

    /// Logs written before and after read alike: the encodings are the same bytes.
    #[test]
    fn bytes_encode_as_a_sequence_of_u8_did() {
        let before = Before {
            client: "c:1".into(),
            seq: 7,
            ack: 6,
            time_us: -5,
            command: (0..=255u8).chain(0..10).collect(),
        };
        let old = encode(&before).expect("encode");
        let envelope: Envelope = decode(&old).expect("an old envelope decodes");
        assert_eq!(envelope.command, before.command);
        assert_eq!(encode(&envelope).expect("encode"), old);
        let applied = Applied {
            ok: true,
            reply: vec![1, 2, 3],
        };
        let again: Applied = decode(&encode(&applied).expect("encode")).expect("decode");
        assert_eq!(again, applied);
    }
}
