//! What travels: the errors every service shares and how they travel on gRPC and JSON-RPC, the
//! frames of the TCP transport, the per-call context (request id, read level), the service
//! facts and encodings every generated crate shares, and the string forms of scalars.
//! Nothing here opens a socket or knows of Raft.

pub mod call;
pub mod codes;
pub mod error;
pub mod frame;
pub mod scalar;
pub mod service;
pub mod transport;

/// Whether a payload is a command (replicated write) or a query.
///
/// On the wire: `0` = command, `1` = query.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CallKind {
    /// A state-changing operation; in the replicated form it goes through the log.
    Command,
    /// A read-only operation.
    Query,
}

impl CallKind {
    /// The byte that stands for this kind on the wire.
    pub const fn to_byte(self) -> u8 {
        match self {
            CallKind::Command => 0,
            CallKind::Query => 1,
        }
    }

    /// The kind a wire byte stands for, or `None` for any byte other than `0` or `1`.
    pub const fn from_byte(byte: u8) -> Option<Self> {
        match byte {
            0 => Some(CallKind::Command),
            1 => Some(CallKind::Query),
            _ => None,
        }
    }
}
