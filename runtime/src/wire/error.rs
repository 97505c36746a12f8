//! The errors every generated service shares, split by who produced them.
//!
//! - A **service method** fails with a [`ServiceError`]: a refusal its schema describes (the
//!   generated domain error, e.g. `KvError`), or a fault of the machine (SQLite I/O, a full
//!   disk), which stops a replica instead of being replied.
//! - A **call** fails with a [`CallError`]: the service refused it (a domain error), or the call
//!   failed on its way ([`Failure`]: transport, redirect to a typed [`Leader`], deadline,
//!   internal). A service cannot return a failure, and a client sees both kinds apart.
//!
//! On every wire an error is a kind name and a message (see [`CallError::kind`]).

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A schema's domain error, as the runtime needs to see it. Generated error types implement it.
pub trait DomainError: Sized + fmt::Debug + fmt::Display {
    /// The kind's name, as written in the schema.
    fn kind(&self) -> &'static str;
    /// The human-readable message.
    fn message(&self) -> &str;
    /// The error of this kind name with `message`, or `None` if the schema has no such kind.
    fn from_kind(kind: &str, message: String) -> Option<Self>;
    /// The kind's stable tag in the schema.
    fn tag(&self) -> u32;
    /// The error of the kind with this tag, or `None` if the schema has no such kind.
    fn from_tag(tag: u32, message: String) -> Option<Self>;
}

/// No domain errors at all: what a server answers before any service is called can only be a
/// [`Failure`] (`CallError<Infallible>`).
impl DomainError for std::convert::Infallible {
    fn kind(&self) -> &'static str {
        match *self {}
    }
    fn message(&self) -> &str {
        match *self {}
    }
    fn from_kind(_: &str, _: String) -> Option<Self> {
        None
    }
    fn tag(&self) -> u32 {
        match *self {}
    }
    fn from_tag(_: u32, _: String) -> Option<Self> {
        None
    }
}

/// Where a redirect sends a client: the leader's API listeners by protocol.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Leader {
    /// Addresses by protocol name (`"grpc"`, `"jsonrpc"`).
    pub api: BTreeMap<String, String>,
}

impl Leader {
    /// The leader's address for `protocol`, if it serves it.
    pub fn addr(&self, protocol: &str) -> Option<&str> {
        self.api
            .get(protocol)
            .map(String::as_str)
            .filter(|a| !a.is_empty())
    }

    /// Reads the `protocol=ADDR` words of [`Leader`]'s display form; other words are ignored.
    pub fn parse(words: &str) -> Leader {
        let api = words
            .split_whitespace()
            .filter_map(|w| w.split_once('='))
            .map(|(p, a)| (p.to_string(), a.to_string()))
            .collect();
        Leader { api }
    }
}

impl fmt::Display for Leader {
    /// `grpc=ADDR jsonrpc=ADDR`: how a redirect's message names the leader.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let words: Vec<String> = self.api.iter().map(|(p, a)| format!("{p}={a}")).collect();
        f.write_str(&words.join(" "))
    }
}

/// Why a call failed without the service refusing it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Failure {
    /// The call did not reach the service, or its answer was lost or malformed.
    #[error("{0}")]
    Transport(String),
    /// This node does not take the call; the leader is there.
    #[error("{0}")]
    Redirect(Leader),
    /// The call ran out of time (no leader within the retry window, no reply in time).
    #[error("{0}")]
    Deadline(String),
    /// The service or the node failed in a way the schema does not describe.
    #[error("{0}")]
    Internal(String),
    /// The node refused the call as sent, before or instead of applying it: a request id reused
    /// with another command, a malformed request id, an unknown read level. Sending the same
    /// call again fails the same way.
    #[error("{0}")]
    Rejected(String),
    /// The node refused a write because its storage is past its quota (`--quota-bytes`) or
    /// its disk is full: nothing entered the log. Reads and watches go on; writes are taken
    /// again once compaction or an operator frees space (etcd's `NOSPACE` alarm).
    #[error("{0}")]
    NoSpace(String),
    /// The call carried no token, or one the cluster does not know (never issued, revoked, or
    /// its user removed), on a node that requires one (`--auth`).
    #[error("{0}")]
    Unauthenticated(String),
    /// The caller's roles do not allow the operation (the schema's `allow`).
    #[error("{0}")]
    PermissionDenied(String),
}

impl Failure {
    /// The kind's name on every wire.
    pub fn kind(&self) -> &'static str {
        match self {
            Failure::Transport(_) => "Transport",
            Failure::Redirect(_) => "Redirect",
            Failure::Deadline(_) => "Deadline",
            Failure::Internal(_) => "Internal",
            Failure::Rejected(_) => "Rejected",
            Failure::NoSpace(_) => "NoSpace",
            Failure::Unauthenticated(_) => "Unauthenticated",
            Failure::PermissionDenied(_) => "PermissionDenied",
        }
    }

    /// The failure of this kind name with `message`, or `None` for another name.
    pub fn from_kind(kind: &str, message: String) -> Option<Self> {
        Some(match kind {
            "Transport" => Failure::Transport(message),
            "Redirect" => Failure::Redirect(Leader::parse(&message)),
            "Deadline" => Failure::Deadline(message),
            "Internal" => Failure::Internal(message),
            "Rejected" => Failure::Rejected(message),
            "NoSpace" => Failure::NoSpace(message),
            "Unauthenticated" => Failure::Unauthenticated(message),
            "PermissionDenied" => Failure::PermissionDenied(message),
            _ => return None,
        })
    }
}

/// Why a call did not succeed: the service refused it, or the call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError<E> {
    /// The service refused the call with an error its schema describes.
    #[error("{0}")]
    Domain(E),
    /// The call failed on its way; the service may not have seen it.
    #[error("{kind}: {0}", kind = .0.kind())]
    Failure(#[from] Failure),
}

impl<E: DomainError> CallError<E> {
    /// The kind's name: the schema's for a domain error, else the failure's.
    pub fn kind(&self) -> &'static str {
        match self {
            CallError::Domain(e) => e.kind(),
            CallError::Failure(f) => f.kind(),
        }
    }

    /// The message (for a redirect, the leader's addresses as `protocol=ADDR` words).
    pub fn message(&self) -> String {
        match self {
            CallError::Domain(e) => e.message().to_string(),
            CallError::Failure(f) => f.to_string(),
        }
    }

    /// Rebuilds an error from its kind name and message (what every wire carries).
    pub fn from_kind(kind: &str, message: String) -> Option<Self> {
        match E::from_kind(kind, message.clone()) {
            Some(e) => Some(CallError::Domain(e)),
            None => Failure::from_kind(kind, message).map(CallError::Failure),
        }
    }
}

impl<E> CallError<E> {
    /// A transport failure with `message`.
    pub fn transport(message: impl Into<String>) -> Self {
        CallError::Failure(Failure::Transport(message.into()))
    }

    /// An internal failure with `message`.
    pub fn internal(message: impl Into<String>) -> Self {
        CallError::Failure(Failure::Internal(message.into()))
    }
}

/// The form of an error in a serialized reply: `{"kind": ..., "message": ...}`.
#[derive(Serialize, Deserialize)]
struct Wire {
    kind: String,
    message: String,
}

impl<E: DomainError> Serialize for CallError<E> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        Wire {
            kind: self.kind().to_string(),
            message: self.message(),
        }
        .serialize(s)
    }
}

impl<'de, E: DomainError> Deserialize<'de> for CallError<E> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let wire = Wire::deserialize(d)?;
        CallError::from_kind(&wire.kind, wire.message)
            .ok_or_else(|| serde::de::Error::custom(format!("unknown error kind `{}`", wire.kind)))
    }
}

/// Why a service method did not succeed: a refusal its schema describes (rolled back and
/// replied), or a fault of the machine (the replica stops rather than diverge).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ServiceError<E> {
    /// A refusal every replica makes alike.
    #[error("{0}")]
    Domain(E),
    /// The machine failed (storage I/O, corrupt state): not a refusal.
    #[error("fault: {0}")]
    Fault(String),
}

impl<E> From<E> for ServiceError<E> {
    fn from(e: E) -> Self {
        ServiceError::Domain(e)
    }
}

impl<E> From<ServiceError<E>> for CallError<E> {
    /// How a caller in the same process sees a service error: a fault is `Internal`.
    fn from(e: ServiceError<E>) -> Self {
        match e {
            ServiceError::Domain(e) => CallError::Domain(e),
            ServiceError::Fault(f) => CallError::Failure(Failure::Internal(f)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
    #[error("NotFound: {0}")]
    struct NotFound(String);

    impl DomainError for NotFound {
        fn kind(&self) -> &'static str {
            "NotFound"
        }
        fn message(&self) -> &str {
            &self.0
        }
        fn from_kind(kind: &str, message: String) -> Option<Self> {
            (kind == "NotFound").then_some(NotFound(message))
        }
        fn tag(&self) -> u32 {
            1
        }
        fn from_tag(tag: u32, message: String) -> Option<Self> {
            (tag == 1).then_some(NotFound(message))
        }
    }

    #[test]
    fn errors_keep_their_kind_through_the_wire_form() {
        let leader = Leader::parse("grpc=127.0.0.1:1 jsonrpc=127.0.0.1:2");
        assert_eq!(leader.addr("jsonrpc"), Some("127.0.0.1:2"));
        for e in [
            CallError::Domain(NotFound("account 7".into())),
            CallError::Failure(Failure::Redirect(leader)),
            CallError::Failure(Failure::Deadline("no leader".into())),
            CallError::Failure(Failure::Internal("disk".into())),
            CallError::Failure(Failure::NoSpace("quota".into())),
            CallError::Failure(Failure::Unauthenticated("no token".into())),
            CallError::Failure(Failure::PermissionDenied("auditor".into())),
        ] {
            let json = serde_json::to_string(&e).expect("encode");
            let back: CallError<NotFound> = serde_json::from_str(&json).expect("decode");
            assert_eq!(back, e, "{json}");
        }
        let unknown = serde_json::from_str::<CallError<NotFound>>(r#"{"kind":"X","message":""}"#);
        assert!(unknown.is_err());
    }
}
