//! Fault injection for tests and chaos runs, compiled in only with the cargo feature
//! `failpoints` (the `fail` crate, from TiKV). Without the feature every point is inert and
//! [`configure`] refuses.
//!
//! The points, configured on a running node with `AdminRequest::Failpoint` (`<binary> admin
//! failpoint NAME ACTIONS`; actions as the `fail` crate reads them, e.g. `return`, `1*return`,
//! `return(7200)`, `off`):
//!
//! | name | effect when it fires |
//! |---|---|
//! | `raft_log::write` | a raft log write fails as on a full disk; nothing of its batch is written |
//! | `raft_log::commit` | the raft log's sync (`fdatasync`) fails after its write |
//! | `raft_log::torn` | the raft log's write stops halfway (half the batch reaches the disk) |
//! | `snapshot::drop_chunk` | a snapshot sender skips a chunk as if the follower had stored it |
//! | `snapshot::build` | a snapshot build fails (as on a full disk); the node goes on and retries |
//! | `snapshot::install` | a snapshot install fails after the transfer; it is tried again |
//! | `clock::offset_secs` | `return(N)`: the node's wall clock reads N seconds ahead (or behind) |

/// Whether this build has failpoints (the `failpoints` feature).
pub const ENABLED: bool = cfg!(feature = "failpoints");

/// Whether the point `name` fires now, with the argument its `return(...)` action carries.
#[cfg(feature = "failpoints")]
pub(crate) fn fired(name: &str) -> Option<Option<String>> {
    fail::eval(name, |arg| arg)
}

/// Whether the point `name` fires now: never, in a build without the `failpoints` feature.
#[cfg(not(feature = "failpoints"))]
pub(crate) fn fired(_name: &str) -> Option<Option<String>> {
    None
}

/// Sets the actions of the point `name` (`off` clears it).
#[cfg(feature = "failpoints")]
pub fn configure(name: &str, actions: &str) -> Result<(), String> {
    if actions == "off" {
        fail::remove(name);
        return Ok(());
    }
    fail::cfg(name, actions)
}

/// Sets the actions of the point `name`: refused, in a build without the `failpoints` feature.
#[cfg(not(feature = "failpoints"))]
pub fn configure(name: &str, _actions: &str) -> Result<(), String> {
    Err(format!(
        "cannot set failpoint `{name}`: this node was built without the `failpoints` feature"
    ))
}
