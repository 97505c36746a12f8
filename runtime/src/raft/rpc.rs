//! The raft message service: one gRPC method (bytes in, bytes out) on a listener of its own,
//! separate from every API listener, so API clients cannot reach raft traffic.
//!
//! Every call must carry the cluster's shared secret in the [`SECRET_KEY`] metadata entry; a call
//! without it (or with another) is refused with `UNAUTHENTICATED` before any handler runs. On a
//! TLS cluster the listener also takes only peers whose certificate the cluster's CA signed
//! (mutual TLS, see [`crate::net::tls`]).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures_util::{Stream, StreamExt};
use tonic::{Request, Response, Status};

use crate::net::tls::Tls;

/// The tonic/prost code generated from `runtime/proto/raft.proto`.
#[allow(clippy::all, missing_docs)]
pub mod pb {
    include!("rpc_pb.rs");
}

/// The metadata key that carries the cluster's shared secret.
pub const SECRET_KEY: &str = "x-raft-secret";

/// What a node or an admin client presents to a raft listener: the cluster's shared secret and,
/// on a TLS cluster, its certificate (and the CA it checks the listener's certificate against).
#[derive(Debug, Clone)]
pub struct RaftCredentials {
    /// The shared secret every message carries.
    pub secret: String,
    /// TLS material; `None` on a plaintext cluster.
    pub tls: Option<Tls>,
}

impl RaftCredentials {
    /// Credentials of a plaintext cluster.
    pub fn plain(secret: impl Into<String>) -> Self {
        RaftCredentials {
            secret: secret.into(),
            tls: None,
        }
    }
}

/// A stream of serialized messages or answers.
pub type PayloadStream = Pin<Box<dyn Stream<Item = Result<Vec<u8>, Status>> + Send>>;

/// What a node does with raft messages.
pub trait RaftHandler: Send + Sync + 'static {
    /// Handles one serialized raft message and returns the serialized answer.
    fn handle(&self, payload: Vec<u8>) -> impl Future<Output = Result<Vec<u8>, Status>> + Send;

    /// Handles a replication stream: serialized append-entries requests in, their serialized
    /// answers out, in order. Without an implementation, the stream is refused.
    fn append_stream(&self, requests: PayloadStream) -> Result<PayloadStream, Status> {
        drop(requests);
        Err(Status::unimplemented(
            "this node takes no replication streams",
        ))
    }
}

/// Answers every message with itself: a stand-in for a raft node behind the raft service, to
/// try the service and its secret without a cluster (a demo server's facade variants).
#[derive(Debug, Clone, Copy, Default)]
pub struct Echo;

impl RaftHandler for Echo {
    async fn handle(&self, payload: Vec<u8>) -> Result<Vec<u8>, Status> {
        Ok(payload)
    }
}

struct Service<H> {
    handler: Arc<H>,
}

#[tonic::async_trait]
impl<H: RaftHandler> pb::raft_server::Raft for Service<H> {
    async fn raft_message(
        &self,
        request: Request<pb::RaftRequest>,
    ) -> Result<Response<pb::RaftReply>, Status> {
        let payload = self.handler.handle(request.into_inner().payload).await?;
        Ok(Response::new(pb::RaftReply { payload }))
    }

    type AppendStreamStream = Pin<Box<dyn Stream<Item = Result<pb::RaftReply, Status>> + Send>>;

    async fn append_stream(
        &self,
        request: Request<tonic::Streaming<pb::RaftRequest>>,
    ) -> Result<Response<Self::AppendStreamStream>, Status> {
        let requests = request.into_inner().map(|r| r.map(|r| r.payload));
        let answers = self.handler.append_stream(Box::pin(requests))?;
        Ok(Response::new(Box::pin(
            answers.map(|a| a.map(|payload| pb::RaftReply { payload })),
        )))
    }
}

/// Compares in time independent of where the first difference is.
fn same_secret(given: &[u8], expected: &[u8]) -> bool {
    given.len() == expected.len()
        && given
            .iter()
            .zip(expected)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

/// How many streams a peer may have reset before the raft server reads them.
const MAX_RESET_STREAMS: usize = 4096;

/// Serves the raft message service on `listener` until `shutdown` resolves; calls must carry
/// the credentials' secret, and with TLS come from a peer whose certificate the CA signed.
/// Connections draw from `pool` (a node's raft listener has a pool of its own, so a flood of
/// API connections cannot take its peers' slots).
pub async fn serve_raft<H: RaftHandler>(
    listener: tokio::net::TcpListener,
    pool: crate::net::conn::Pool,
    handler: Arc<H>,
    credentials: RaftCredentials,
    max_message_size: usize,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    let expected = credentials.secret.into_bytes();
    let check = move |request: Request<()>| {
        let given = request.metadata().get(SECRET_KEY).map(|v| v.as_bytes());
        match given {
            Some(given) if same_secret(given, &expected) => {
                // The connection is a peer's or an operator's: it may stay.
                if let Some(handshake) = crate::net::conn::ConnInfo::of(&request)
                    .and_then(|info| info.handshake.as_ref())
                {
                    handshake.authenticated();
                }
                Ok(request)
            }
            Some(_) => Err(Status::unauthenticated("wrong raft secret")),
            None => Err(Status::unauthenticated("missing raft secret")),
        }
    };
    let service = pb::raft_server::RaftServer::new(Service { handler })
        .max_decoding_message_size(max_message_size)
        .max_encoding_message_size(max_message_size);
    let incoming = crate::net::conn::incoming_authenticated(
        listener,
        pool,
        crate::net::conn::RAFT_HANDSHAKE,
        crate::net::conn::RAFT_NEWCOMERS,
        "raft",
    );
    let mut server = tonic::transport::Server::builder();
    if let Some(tls) = &credentials.tls {
        server = server.tls_config(tls.raft_server())?;
    }
    server
        // After a partition heals, TCP delivers every call a peer gave up on during it (each a
        // reset stream) at once; h2's default of 20 would close the connection for that.
        .http2_max_pending_accept_reset_streams(Some(MAX_RESET_STREAMS))
        .add_service(tonic::service::interceptor::InterceptedService::new(
            service, check,
        ))
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await
}

/// Connections dropped because they reached their own socket (see [`dial`]).
static SELF_CONNECTS: AtomicU64 = AtomicU64::new(0);

/// How many dials [`dial`] dropped because they had connected to themselves.
pub fn self_connects() -> u64 {
    SELF_CONNECTS.load(Ordering::Relaxed)
}

/// Dials `addr` over TCP (no delay), refusing a connection to itself.
///
/// On one host, a dial of a port nobody listens on can pick that very port as its source port
/// (when it lies in the ephemeral range) and connect to itself (TCP's simultaneous open). Kept,
/// such a connection holds the port, and the peer that should listen there cannot bind it. Such
/// a connection is closed at once (freeing the port), counted, and reported as refused.
pub async fn dial(addr: &str) -> std::io::Result<tokio::net::TcpStream> {
    let stream = refuse_self(tokio::net::TcpStream::connect(addr).await?)?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// The stream, unless it is connected to itself (then it is closed and counted).
fn refuse_self(stream: tokio::net::TcpStream) -> std::io::Result<tokio::net::TcpStream> {
    let local = stream.local_addr()?;
    if local == stream.peer_addr()? {
        SELF_CONNECTS.fetch_add(1, Ordering::Relaxed);
        drop(stream);
        return Err(std::io::Error::new(
            std::io::ErrorKind::ConnectionRefused,
            format!("{local}: the dial connected to itself (nobody listens there); dropped"),
        ));
    }
    Ok(stream)
}

/// tonic's connector over [`dial`] (TLS, when configured, is layered on top by tonic).
#[derive(Debug, Clone, Copy)]
struct Dialer;

impl tonic::codegen::Service<tonic::codegen::http::Uri> for Dialer {
    type Response = hyper_util::rt::TokioIo<tokio::net::TcpStream>;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = std::io::Result<Self::Response>> + Send>>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: tonic::codegen::http::Uri) -> Self::Future {
        Box::pin(async move {
            let (Some(host), Some(port)) = (uri.host(), uri.port_u16()) else {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    format!("`{uri}` names no host and port"),
                ));
            };
            dial(&format!("{host}:{port}"))
                .await
                .map(hyper_util::rt::TokioIo::new)
        })
    }
}

/// How long a raft call may take on a client made by [`RaftClient::connect`].
pub const RPC_TIMEOUT: Duration = Duration::from_secs(10);

/// A client of a node's raft message service. Cloning is cheap and shares the connection.
#[derive(Debug, Clone)]
pub struct RaftClient {
    inner: pb::raft_client::RaftClient<tonic::transport::Channel>,
    secret: tonic::metadata::MetadataValue<tonic::metadata::Ascii>,
}

impl RaftClient {
    /// Connects to the raft listener at `addr` (`host:port`), presenting `credentials`; every
    /// call times out after [`RPC_TIMEOUT`].
    pub async fn connect(addr: &str, credentials: &RaftCredentials) -> Result<Self, Status> {
        Self::connect_for(addr, credentials, RPC_TIMEOUT).await
    }

    /// Like [`RaftClient::connect`], with calls that may take up to `timeout` (administration,
    /// such as a join that waits for a learner to catch up).
    pub async fn connect_for(
        addr: &str,
        credentials: &RaftCredentials,
        timeout: Duration,
    ) -> Result<Self, Status> {
        let scheme = if credentials.tls.is_some() {
            "https"
        } else {
            "http"
        };
        let mut endpoint = tonic::transport::Endpoint::from_shared(format!("{scheme}://{addr}"))
            .map_err(|e| Status::invalid_argument(format!("bad address `{addr}`: {e}")))?
            .connect_timeout(std::time::Duration::from_secs(5))
            // No call waits forever on a peer that stopped answering.
            .timeout(timeout)
            .http2_keep_alive_interval(std::time::Duration::from_secs(2))
            .keep_alive_timeout(std::time::Duration::from_secs(5));
        if let Some(tls) = &credentials.tls {
            endpoint = endpoint
                .tls_config(tls.raft_client())
                .map_err(|e| Status::invalid_argument(format!("TLS for {addr}: {e}")))?;
        }
        let channel = endpoint
            .connect_with_connector(Dialer)
            .await
            .map_err(|e| Status::unavailable(format!("cannot connect to {addr}: {e}")))?;
        let secret = credentials
            .secret
            .parse()
            .map_err(|_| Status::invalid_argument("the raft secret must be printable ASCII"))?;
        Ok(RaftClient {
            inner: pb::raft_client::RaftClient::new(channel),
            secret,
        })
    }

    /// Opens a replication stream: `requests` go out as they come, the answers come back in
    /// order.
    pub async fn append_stream(
        &self,
        requests: impl Stream<Item = Vec<u8>> + Send + 'static,
    ) -> Result<PayloadStream, Status> {
        let mut request = Request::new(requests.map(|payload| pb::RaftRequest { payload }));
        request
            .metadata_mut()
            .insert(SECRET_KEY, self.secret.clone());
        let answers = self.inner.clone().append_stream(request).await?;
        Ok(Box::pin(
            answers.into_inner().map(|a| a.map(|reply| reply.payload)),
        ))
    }

    /// Sends one raft message and returns the answer.
    pub async fn send(&self, payload: Vec<u8>) -> Result<Vec<u8>, Status> {
        let mut request = Request::new(pb::RaftRequest { payload });
        request
            .metadata_mut()
            .insert(SECRET_KEY, self.secret.clone());
        let reply = self.inner.clone().raft_message(request).await?;
        Ok(reply.into_inner().payload)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A socket bound to the port it dials connects to itself (TCP's simultaneous open), as a
    /// dial whose ephemeral source port happens to be the dead peer's port does: such a
    /// connection is dropped (the port is free again) and counted.
    #[tokio::test]
    async fn a_connection_to_itself_is_dropped_and_counted() {
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket.set_reuseaddr(true).expect("reuseaddr");
        socket
            .bind("127.0.0.1:0".parse().expect("addr"))
            .expect("bind");
        let addr = socket.local_addr().expect("local addr");
        let stream = socket.connect(addr).await.expect("a self-connect");
        let before = self_connects();
        let refused = refuse_self(stream).expect_err("refused");
        assert_eq!(refused.kind(), std::io::ErrorKind::ConnectionRefused);
        assert_eq!(self_connects(), before + 1);
        // The port is free again: a node can listen on it.
        tokio::net::TcpListener::bind(addr)
            .await
            .expect("the port is free after the self-connection was dropped");
    }
}
