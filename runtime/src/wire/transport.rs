//! What the frame transports ([`tcp`](crate::api::tcp), [`zmq`](crate::api)) share: the server
//! side's [`Handler`], the [`Limits`] of both ends, and the [`TransportError`] of a payload on
//! its way.

use std::future::Future;
use std::io;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;

use super::CallKind;

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
    /// Server side (TCP and ZeroMQ): how many connections are served at once; a connection over
    /// the limit is closed as soon as it is accepted. Default 1024; the servers serve no more
    /// than three eighths of the process's open-file limit either (as a node's API listeners),
    /// so they never run out of descriptors for their files.
    pub max_connections: usize,
    /// Server side (TCP): how long a connection may stay idle (no byte either way) before it is
    /// closed. Default 120 s.
    pub idle_timeout: Duration,
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
    /// Default for [`Limits::idle_timeout`]: 120 s, as a node's API connections.
    pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(120);
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_frame: Self::DEFAULT_MAX_FRAME,
            request_timeout: Self::DEFAULT_REQUEST_TIMEOUT,
            connect_timeout: Self::DEFAULT_CONNECT_TIMEOUT,
            max_in_flight: Self::DEFAULT_MAX_IN_FLIGHT,
            max_connections: Self::DEFAULT_MAX_CONNECTIONS,
            idle_timeout: Self::DEFAULT_IDLE_TIMEOUT,
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

/// Runs the handler; a panicking handler gets the caller a refusal instead of no reply at all.
pub(crate) async fn handle_guarded<H: Handler>(
    handler: Arc<H>,
    kind: CallKind,
    payload: Vec<u8>,
) -> Vec<u8> {
    match AssertUnwindSafe(handler.handle(kind, payload))
        .catch_unwind()
        .await
    {
        Ok(reply) => reply,
        Err(_) => {
            tracing::error!("the request handler panicked");
            handler.refuse("the server failed while handling the request")
        }
    }
}
