//! Raft on openraft: a durable segmented log, a state machine that applies serialized commands to the
//! application's SQLite database, raft messages over the raft gRPC service, and the node that ties
//! them together.

pub mod auth;
pub mod feed;
pub mod files;
pub mod log_store;
pub mod metrics;
pub mod network;
pub mod node;
mod read_index;
pub mod rpc;
pub mod state_machine;
pub mod status;
pub mod types;
pub mod version;
