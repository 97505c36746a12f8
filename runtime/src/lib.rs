//! The runtime of every generated service: everything that does not change when a schema does.
//! A generated crate (from `cargo xtask gen` or `codegen::Generator`) holds what does; an
//! application holds its store. Its folders, from the bottom floor up (a module uses only
//! those below it; `runtime/tests/layers.rs` holds that):
//!
//! - [`wire`]: what every service shares on the wire: [`wire::service`] (apply context,
//!   durations, operation facts, reply and parameter encodings), [`wire::error`] (domain
//!   errors, call failures, service faults), [`wire::codes`] (how errors travel on gRPC and
//!   JSON-RPC), [`wire::scalar`] (scalar forms on typed wires), [`wire::call`] (request ids and
//!   read levels of a call), [`wire::frame`] and [`wire::transport`] (the frame transports);
//! - [`net`]: what connections may hold ([`net::conn`]: pools, idle and handshake timeouts)
//!   and TLS ([`net::tls`]); [`lab`]: network namespaces and delayed links for fault tests;
//! - [`raft`]: the segmented log and the SQLite state machine on openraft, the network, the
//!   change feed, the node, and the raft message service ([`raft::rpc`]);
//! - [`api`]: clients of any service ([`api::client`]: gRPC and JSON-RPC, with the redirect,
//!   resend and deadline policy they share), [`api::sink`] (the `Collector` and where it sends
//!   command bytes), [`api::local`] (a SQLite database, the `Direct` client, the local sink),
//!   [`api::server`] (gRPC with health and reflection, JSON-RPC), [`api::watch`] (the change
//!   feed on the wire), [`api::tcp`] and `api::zmq` (command bytes in frames);
//! - [`ops`]: running nodes: [`ops::host`] (a node with its listeners, the `node` command
//!   line), [`ops::admin`], [`ops::cluster`] (local clusters of node processes);
//! - [`cli`]: the command line of every service binary; [`codegen`]: the one module generated
//!   code imports.
//!
//! The frame transports move opaque byte payloads: on the client side a `Collector` turns API
//! calls into command or query bytes and hands them to [`api::tcp::TcpClient::call`] or
//! `ZmqClient::call`; on the server side a [`Handler`] (a [`api::sink::SinkHandler`] over the
//! service's dispatcher) turns each request payload into a reply payload.
//!
//! Two transports share the same request model:
//!
//! - [`api::tcp`]: length-prefixed frames (see [`wire::frame`]) over one TCP connection per
//!   client, with many requests in flight at once, matched to their replies by a request id.
//! - `api::zmq` (the `zmq` feature): the same id-matching scheme over ZeroMQ, a ROUTER socket on the server and a DEALER
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
