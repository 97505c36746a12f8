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

pub mod api;
pub mod cli;
pub mod codegen;
pub mod failpoint;
pub mod lab;
pub mod net;
pub mod ops;
pub mod raft;
mod util;
pub mod wire;

pub use api::sink::CommandSink;
pub use api::tcp::{TcpClient, serve_tcp};
#[cfg(feature = "zmq")]
pub use api::zmq::{ZmqClient, serve_zmq};
/// The SQLite binding the runtime and the applications' stores share.
pub use rusqlite;
pub use wire::CallKind;
pub use wire::error::{CallError, DomainError, Failure, Leader, ServiceError};
pub use wire::transport::{Handler, Limits, TransportError};
