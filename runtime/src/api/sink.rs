//! Where serialized calls go: the [`CommandSink`] that a generated `Collector` hands command
//! bytes to, and every sink that needs no schema (TCP frames, ZeroMQ, the Raft log), plus the
//! server side that answers frames from any sink ([`SinkHandler`]).

use std::future::Future;
use std::sync::Arc;

use crate::api::tcp::TcpClient;
#[cfg(feature = "zmq")]
use crate::api::zmq::ZmqClient;
use crate::raft::node::{NodeError, RaftNode};
use crate::wire::CallKind;
use crate::wire::call::{self, ReadLevel};
use crate::wire::error::{Failure, Leader};
use crate::wire::transport::{Handler, TransportError};

impl From<TransportError> for Failure {
    fn from(e: TransportError) -> Self {
        match e {
            TransportError::Timeout => Failure::Deadline(e.to_string()),
            other => Failure::Transport(other.to_string()),
        }
    }
}

impl From<NodeError> for Failure {
    fn from(e: NodeError) -> Self {
        match e {
            NodeError::NotLeader(Some(leader)) => Failure::Redirect(Leader { api: leader.api }),
            NodeError::NoLeader(_) => Failure::Deadline(e.to_string()),
            NodeError::Rejected(r) => Failure::Rejected(r.0),
            NodeError::NoSpace(reason) => Failure::NoSpace(reason),
            // A definite no, like a rejection: nothing entered the log.
            NodeError::TooLarge { .. } => Failure::Rejected(e.to_string()),
            // The call did not reach a working leader (a leader cut off from its quorum
            // included): another node may take it.
            other => Failure::Transport(other.to_string()),
        }
    }
}

/// Where a `Collector` sends serialized calls: in process to a dispatcher, over a socket, or
/// into the Raft log. Returns the serialized `Result` the service answered.
pub trait CommandSink: Send + Sync {
    /// Delivers one serialized command or query and returns the serialized reply.
    fn submit(
        &self,
        kind: CallKind,
        command: Vec<u8>,
    ) -> impl Future<Output = Result<Vec<u8>, Failure>> + Send;
}

/// A client of any generated service that turns each call into command bytes and hands them to
/// a [`CommandSink`]: in process, over a socket, or into the Raft log. The
/// generated crate implements its API trait for it; the bytes are exactly a log entry's.
#[derive(Debug, Clone)]
pub struct Collector<S> {
    sink: S,
}

impl<S> Collector<S> {
    /// A collector that sends to `sink`.
    pub fn new(sink: S) -> Self {
        Collector { sink }
    }

    /// The sink commands go to.
    pub fn sink(&self) -> &S {
        &self.sink
    }
}

/// Encodes a failure as the service's own serialized `Err` reply (generated:
/// `encode_failure`), so that a transport can answer a refused frame in the schema's format.
pub type EncodeFailure = fn(&Failure) -> Vec<u8>;

/// Serves frames from any sink: each payload goes to the sink, its reply goes back; a failure
/// is answered in the schema's reply format.
#[derive(Debug)]
pub struct SinkHandler<S> {
    sink: S,
    encode_failure: EncodeFailure,
}

impl<S> SinkHandler<S> {
    /// Answers with `sink`, encoding failures with `encode_failure`.
    pub fn new(sink: S, encode_failure: EncodeFailure) -> Self {
        SinkHandler {
            sink,
            encode_failure,
        }
    }
}

impl<S: CommandSink + 'static> Handler for SinkHandler<S> {
    async fn handle(&self, kind: CallKind, payload: Vec<u8>) -> Vec<u8> {
        match self.sink.submit(kind, payload).await {
            Ok(reply) => reply,
            Err(e) => (self.encode_failure)(&e),
        }
    }

    fn refuse(&self, reason: &str) -> Vec<u8> {
        (self.encode_failure)(&Failure::Transport(reason.to_string()))
    }
}

/// Ships command bytes over one multiplexed TCP connection.
#[derive(Debug, Clone)]
pub struct TcpSink(pub TcpClient);

impl CommandSink for TcpSink {
    async fn submit(&self, kind: CallKind, command: Vec<u8>) -> Result<Vec<u8>, Failure> {
        Ok(self.0.call(kind, command).await?)
    }
}

/// Ships command bytes over a ZeroMQ DEALER socket.
#[derive(Debug, Clone)]
#[cfg(feature = "zmq")]
pub struct ZmqSink(pub ZmqClient);

#[cfg(feature = "zmq")]
impl CommandSink for ZmqSink {
    async fn submit(&self, kind: CallKind, command: Vec<u8>) -> Result<Vec<u8>, Failure> {
        Ok(self.0.call(kind, command).await?)
    }
}

/// Sends commands into the Raft log of a node (forwarded to the leader from a follower) and
/// answers queries locally at a read level; the caller's request id and read level, when its
/// transport carried them, come from the [`call`] context.
#[derive(Debug, Clone)]
pub struct RaftSink {
    node: Arc<RaftNode>,
    level: ReadLevel,
}

impl RaftSink {
    /// A sink over `node` reading at `level` unless a call asks for another.
    pub fn new(node: Arc<RaftNode>, level: ReadLevel) -> Self {
        RaftSink { node, level }
    }
}

impl RaftSink {
    async fn send(&self, kind: CallKind, command: Vec<u8>) -> Result<Vec<u8>, Failure> {
        Ok(match kind {
            CallKind::Command => {
                self.node
                    .write(command, call::current_request())
                    .await?
                    .reply
            }
            CallKind::Query => {
                let level = call::current_read_level().unwrap_or(self.level);
                self.node.read(command, level).await?
            }
        })
    }
}

impl CommandSink for RaftSink {
    /// Sends the call into the node and counts it in the node's metrics.
    async fn submit(&self, kind: CallKind, command: Vec<u8>) -> Result<Vec<u8>, Failure> {
        let started = std::time::Instant::now();
        let operation = crate::wire::service::operation_of(&command)
            .unwrap_or("unknown")
            .to_string();
        // One span per request, from the API listener through forwarding, propose and apply
        // (their spans nest in it) to the reply; `RUST_LOG` picks what is shown.
        let request = call::current_request();
        let span = tracing::info_span!(
            "request",
            operation = %operation,
            kind = ?kind,
            client = request.as_ref().map_or("", |r| r.client.as_str()),
            seq = request.as_ref().map_or(0, |r| r.seq),
            user = tracing::field::Empty,
        );
        // The node the client reached decides who may call what, before a command enters the
        // log or a query runs (the token is read only on a node that checks it).
        let authorized = self.node.authorize(&operation, call::current_token);
        let result = match authorized {
            Ok(user) => {
                if let Some(user) = user {
                    span.record("user", user.as_str());
                }
                tracing::Instrument::instrument(self.send(kind, command), span.clone()).await
            }
            Err(refused) => Err(refused),
        };
        let outcome = match &result {
            Ok(reply) => crate::wire::service::outcome_of(reply),
            Err(failure) => std::borrow::Cow::Borrowed(failure.kind()),
        };
        let elapsed = started.elapsed();
        span.in_scope(
            || tracing::debug!(%outcome, elapsed_us = elapsed.as_micros() as u64, "answered"),
        );
        self.node
            .metrics()
            .request(&operation, kind, &outcome, elapsed);
        result
    }
}
