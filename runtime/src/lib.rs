//! The runtime of every generated service: everything that does not change when a schema does.
//! A generated crate (from `cargo xtask gen` or `codegen::Generator`) holds what does; an
//! application holds its store. By concern:
//!
//! - what services share: [`service`] (apply context, durations, operation facts, reply and
//!   parameter encodings), [`error`] (domain errors, call failures, service faults), [`codes`]
//!   (how errors travel on gRPC and JSON-RPC), [`wire`] (scalar forms on typed wires), [`call`]
//!   (request ids and read levels of a call);
//! - clients: [`client`] (gRPC and JSON-RPC clients of any service, and the redirect, resend and
//!   deadline policy they share), [`sink`] (the `Collector` and where it sends command bytes);
//! - in process: [`local`] (a SQLite database, the `Direct` client, the local sink);
//! - servers: [`server`] (gRPC with health and reflection, JSON-RPC), [`tcp`] and [`zmq`]
//!   (command bytes in frames);
//! - replication: [`raft`] (the segmented log and the SQLite state machine on openraft, the network, the
//!   node), [`raft_rpc`] (the raft message service), [`host`] (a node with its listeners, the
//!   `node` command line), [`cluster`] (local clusters of node processes).
//!
//! The frame transports move opaque byte payloads: on the client side a `Collector` turns API
//! calls into command or query bytes and hands them to [`tcp::TcpClient::call`] or
//! [`zmq::ZmqClient::call`]; on the server side a [`Handler`] (a [`sink::SinkHandler`] over the
//! service's dispatcher) turns each request payload into a reply payload.
//!
//! Two transports share the same request model:
//!
//! - [`tcp`]: length-prefixed frames (see [`frame`]) over one TCP connection per client, with many
//!   requests in flight at once, matched to their replies by a request id.
//! - [`zmq`]: the same id-matching scheme over ZeroMQ, a ROUTER socket on the server and a DEALER
//!   socket on the client.
//!
//! Both servers handle requests concurrently, so replies can complete out of order; both clients
//! fail every pending call with [`TransportError::Closed`] when the connection drops, and fail
//! later calls fast instead of hanging.
//!
//! ```
//! use std::sync::Arc;
//! use runtime::{CallKind, Handler, Limits, TcpClient, serve_tcp};
//!
//! /// Replies with the payload reversed.
//! struct Reverse;
//!
//! impl Handler for Reverse {
//!     async fn handle(&self, _kind: CallKind, mut payload: Vec<u8>) -> Vec<u8> {
//!         payload.reverse();
//!         payload
//!     }
//!     fn refuse(&self, reason: &str) -> Vec<u8> {
//!         format!("refused: {reason}").into_bytes()
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let addr = listener.local_addr()?;
//! let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
//! let server = tokio::spawn(serve_tcp(listener, Arc::new(Reverse), Limits::default(), async {
//!     let _ = stopped.await;
//! }));
//!
//! let client = TcpClient::connect(addr, Limits::default()).await?;
//! assert_eq!(client.call(CallKind::Query, b"abc".to_vec()).await?, b"cba");
//!
//! let _ = stop.send(());
//! server.await??;
//! # Ok(())
//! # }
//! ```

#![warn(missing_docs)]

use std::future::Future;
use std::io;
use std::time::Duration;

pub mod call;
pub mod cli;
pub mod client;
pub mod cluster;
pub mod codegen;
pub mod codes;
pub mod config;
pub mod conn;
pub mod delay;
pub mod error;
pub mod failpoint;
pub mod frame;
pub mod health;
pub mod host;
pub mod local;
pub mod log_limit;
pub mod metrics;
pub mod netns;
mod pending;
pub mod raft;
pub mod raft_rpc;
pub mod server;
pub mod service;
pub mod sink;
pub mod tcp;
pub mod tls;
pub mod top;
mod util;
pub mod version;
pub mod wire;
pub mod zmq;

pub use error::{CallError, DomainError, Failure, Leader, ServiceError};
/// The SQLite binding the runtime and the applications' stores share.
pub use rusqlite;
pub use sink::CommandSink;
pub use tcp::{TcpClient, serve_tcp};
pub use zmq::{ZmqClient, serve_zmq};

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

/// The server side: turns one request payload into one reply payload.
///
/// Implemented by generated code (the `Dispatcher` over the application's service). The
/// transports call [`Handler::handle`] concurrently for many requests, so an implementation that
/// needs exclusive access to its state must arrange it itself.
pub trait Handler: Send + Sync + 'static {
    /// Handles one request and returns its reply payload.
    fn handle(&self, kind: CallKind, payload: Vec<u8>) -> impl Future<Output = Vec<u8>> + Send;

    /// The reply payload for a request the transport itself refused (oversized, malformed
    /// kind...), encoded in the service's own reply format so the client sees a typed error.
    fn refuse(&self, reason: &str) -> Vec<u8>;
}

/// Limits shared by the servers and clients of both transports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The largest frame accepted or sent, in bytes: the 8-byte request id, the 1-byte kind and
    /// the payload (the TCP length prefix itself is not counted). Default 4 MiB.
    pub max_frame: usize,
    /// Client side: how long one call may take, from sending to receiving its reply.
    /// Default 30 s.
    pub request_timeout: Duration,
    /// Client side: how long connecting may take before it fails with
    /// [`TransportError::Connect`]. Default 10 s.
    pub connect_timeout: Duration,
    /// Server side: how many requests one TCP connection (or the whole ZeroMQ server) handles at
    /// once; further requests wait to be read until one finishes. Default 1024.
    pub max_in_flight: usize,
    /// Server side (TCP): how many connections are served at once; a connection over the limit
    /// is closed as soon as it is accepted. Default 1024.
    pub max_connections: usize,
}

impl Limits {
    /// Default for [`Limits::max_frame`]: 4 MiB.
    pub const DEFAULT_MAX_FRAME: usize = 4 * 1024 * 1024;
    /// Default for [`Limits::request_timeout`]: 30 s.
    pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
    /// Default for [`Limits::connect_timeout`]: 10 s.
    pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
    /// Default for [`Limits::max_in_flight`]: 1024.
    pub const DEFAULT_MAX_IN_FLIGHT: usize = 1024;
    /// Default for [`Limits::max_connections`]: 1024.
    pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_frame: Self::DEFAULT_MAX_FRAME,
            request_timeout: Self::DEFAULT_REQUEST_TIMEOUT,
            connect_timeout: Self::DEFAULT_CONNECT_TIMEOUT,
            max_in_flight: Self::DEFAULT_MAX_IN_FLIGHT,
            max_connections: Self::DEFAULT_MAX_CONNECTIONS,
        }
    }
}

/// Everything that can go wrong while moving a payload.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// The client could not connect to the server.
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        /// The address (or ZeroMQ endpoint) that was dialled.
        addr: String,
        /// Why the connection failed.
        #[source]
        source: io::Error,
    },
    /// Reading or writing the connection failed.
    #[error("transport I/O error: {0}")]
    Io(#[from] io::Error),
    /// The connection is closed: the call could not be sent, or its reply will never come.
    #[error("the connection to the server is closed")]
    Closed,
    /// A frame is larger than the configured limit.
    #[error("frame of {size} bytes exceeds the limit of {limit}")]
    FrameTooLarge {
        /// The frame's size in bytes (id + kind + payload).
        size: usize,
        /// The limit it exceeds ([`Limits::max_frame`]).
        limit: usize,
    },
    /// Bytes that do not follow the wire format.
    #[error("malformed frame: {0}")]
    Malformed(String),
    /// No reply came within [`Limits::request_timeout`].
    #[error("the request timed out")]
    Timeout,
    /// A ZeroMQ socket operation failed.
    #[error("ZeroMQ error: {0}")]
    Zmq(String),
}
