//! Serving a generated service's API: gRPC with the standard health service and reflection (so
//! `grpcurl` works without a `.proto`), and JSON-RPC 2.0 over HTTP. Both stop gracefully when
//! their shutdown future resolves, and both speak TLS on a [`Listener`] that has it.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;

use tokio::net::TcpListener;
use tonic::body::Body;
use tonic::codegen::Service;
use tonic::codegen::http::{Request, Response};
use tonic::server::NamedService;
use tonic::service::Routes;

use crate::net::tls::{Tls, TlsError};

/// The largest API message (request or reply) a node's servers and clients accept.
pub const MAX_API_MESSAGE: usize = 4 << 20;

/// A listener could not be bound.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {addr}: {source}")]
pub struct BindError {
    /// The address asked for.
    pub addr: String,
    /// The OS error.
    #[source]
    pub source: std::io::Error,
}

/// Binds `addr` (`HOST:PORT`; port 0 picks a free port); returns the listener and the address
/// it actually got.
pub async fn bind(addr: &str) -> Result<(TcpListener, std::net::SocketAddr), BindError> {
    let bind_error = |source| BindError {
        addr: addr.to_string(),
        source,
    };
    let listener = TcpListener::bind(addr).await.map_err(bind_error)?;
    let local = listener.local_addr().map_err(bind_error)?;
    Ok((listener, local))
}

/// An API listener: a bound socket, on a TLS node the node's TLS material (the server
/// presents its certificate; clients need none), and what its connections may hold (see
/// [`crate::net::conn`]).
#[derive(Debug)]
pub struct Listener {
    /// The bound socket.
    pub tcp: TcpListener,
    /// TLS material; `None` serves plaintext.
    pub tls: Option<Tls>,
    /// The connection slots it draws from, and their idle timeout (a node's API listeners
    /// share one pool).
    pub pool: crate::net::conn::Pool,
}

impl From<TcpListener> for Listener {
    /// Plaintext, with [`MAX_CONNECTIONS`] slots of its own and the default idle timeout.
    fn from(tcp: TcpListener) -> Self {
        Listener {
            tcp,
            tls: None,
            pool: crate::net::conn::Pool::new(
                MAX_CONNECTIONS as usize,
                crate::net::conn::API_IDLE_TIMEOUT,
            ),
        }
    }
}

/// Why an API server could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The reflection service could not read the file descriptor set.
    #[error("gRPC reflection: {0}")]
    Reflection(String),
    /// The gRPC server failed.
    #[error("gRPC server: {0}")]
    Grpc(#[from] tonic::transport::Error),
    /// The JSON-RPC server failed.
    #[error("JSON-RPC server: {0}")]
    JsonRpc(String),
    /// The TLS material is unusable.
    #[error(transparent)]
    Tls(#[from] TlsError),
}

/// A generated tonic service, as the gRPC server takes it.
pub trait GrpcService:
    Service<Request<Body>, Response = Response<Body>, Error = Infallible, Future: Send + 'static>
    + NamedService
    + Clone
    + Send
    + Sync
    + 'static
{
}

impl<S> GrpcService for S where
    S: Service<
            Request<Body>,
            Response = Response<Body>,
            Error = Infallible,
            Future: Send + 'static,
        > + NamedService
        + Clone
        + Send
        + Sync
        + 'static
{
}

/// Serves one generated tonic service on `listener`, with health (the service marked serving)
/// and reflection over `descriptor` (the encoded `FileDescriptorSet`), until `shutdown`.
pub async fn serve_grpc<S: GrpcService>(
    listener: impl Into<Listener>,
    service: S,
    descriptor: &'static [u8],
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServeError> {
    serve_routes::<S>(listener, Routes::new(service), descriptor, shutdown).await
}

/// [`serve_grpc`] with a second service beside the API: a node's change feed.
pub async fn serve_grpc_with<S: GrpcService, W: GrpcService>(
    listener: impl Into<Listener>,
    service: S,
    extra: W,
    descriptor: &'static [u8],
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServeError> {
    let routes = Routes::new(service).add_service(extra);
    serve_routes::<S>(listener, routes, descriptor, shutdown).await
}

/// Serves `routes` with health (reporting `S`) and reflection.
async fn serve_routes<S: NamedService>(
    listener: impl Into<Listener>,
    routes: Routes,
    descriptor: &'static [u8],
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServeError> {
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter.set_serving::<S>().await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(descriptor)
        .build_v1()
        .map_err(|e| ServeError::Reflection(e.to_string()))?;
    let Listener { tcp, tls, pool } = listener.into();
    let incoming = crate::net::conn::incoming(tcp, pool.slots, Some(pool.idle), "grpc");
    let mut server = tonic::transport::Server::builder().max_concurrent_streams(pool.streams);
    if let Some(tls) = tls {
        server = server.tls_config(tls.api_grpc())?;
    }
    server
        .add_routes(routes)
        .add_service(health)
        .add_service(reflection)
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await?;
    Ok(())
}

/// The most calls one JSON-RPC batch may hold.
pub const MAX_BATCH: u32 = 64;
/// The most connections a JSON-RPC listener serves at once.
pub const MAX_CONNECTIONS: u32 = 1024;

/// Serves a jsonrpsee module over HTTP (and WebSocket, for subscriptions) on `listener` until
/// `shutdown`. Request bodies larger
/// than `max_request_size` bytes are refused, and so are answers larger than that (a batch, at
/// most [`MAX_BATCH`] calls, is answered as one body).
pub async fn serve_jsonrpc<Ctx: Send + Sync + 'static>(
    listener: impl Into<Listener>,
    module: jsonrpsee::RpcModule<Ctx>,
    max_request_size: usize,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServeError> {
    let Listener { tcp, tls, pool } = listener.into();
    let limit = u32::try_from(max_request_size).unwrap_or(u32::MAX);
    let config = jsonrpsee::server::ServerConfig::builder()
        .max_request_body_size(limit)
        .max_response_body_size(limit)
        .set_batch_request_config(jsonrpsee::server::BatchRequestConfig::Limit(MAX_BATCH))
        .max_connections(MAX_CONNECTIONS)
        .max_subscriptions_per_connection(pool.streams)
        // WebSocket for subscriptions (a node's change feed), pinged so that a quiet watch is
        // not closed as idle.
        .enable_ws_ping(jsonrpsee::server::PingConfig::new().ping_interval(WS_PING))
        .build();
    let acceptor = match tls {
        Some(tls) => Some(tokio_rustls::TlsAcceptor::from(tls.rustls_server()?)),
        None => None,
    };
    let methods: jsonrpsee::Methods = module.into();
    let (stop_handle, server_handle) = jsonrpsee::server::stop_channel();
    let services = jsonrpsee::server::Server::builder()
        .set_config(config)
        .to_service_builder();
    // Every connection, plaintext or TLS, is accepted here, so each holds a slot of the
    // listener's pool and is closed once idle (jsonrpsee's own server would keep a connection
    // that sent one request for as long as the client holds it).
    let idle = pool.idle;
    let serve = |mut stream: crate::net::conn::Guarded<tokio::net::TcpStream>,
                 peer: std::net::SocketAddr| {
        let acceptor = acceptor.clone();
        let activity = Arc::new(Activity::default());
        // The watchdog lives apart from the server's future: jsonrpsee serves an upgraded
        // WebSocket on a task of its own.
        let closer = stream.closer();
        tokio::spawn(activity.clone().close_when_idle(idle, closer, peer));
        let track = activity.clone();
        let service = services
            .clone()
            .set_rpc_middleware(
                jsonrpsee::server::middleware::rpc::RpcServiceBuilder::new().layer_fn(
                    move |inner| Track {
                        inner,
                        activity: track.clone(),
                    },
                ),
            )
            .build(methods.clone(), stop_handle.clone());
        let stopped = stop_handle.clone().shutdown();
        async move {
            let served = async {
                match acceptor {
                    Some(acceptor) => {
                        let handshake = tokio::time::timeout(
                            crate::net::tls::TLS_HANDSHAKE_TIMEOUT,
                            acceptor.accept(stream),
                        )
                        .await;
                        let stream = match handshake {
                            Ok(Ok(stream)) => stream,
                            Ok(Err(e)) => return Err(format!("TLS handshake failed: {e}").into()),
                            Err(_) => return Err("TLS handshake timed out".into()),
                        };
                        jsonrpsee::server::serve_with_graceful_shutdown(stream, service, stopped)
                            .await
                    }
                    None => {
                        jsonrpsee::server::serve_with_graceful_shutdown(stream, service, stopped)
                            .await
                    }
                }
            };
            if let Err(e) = served.await {
                tracing::debug!(%peer, error = %e, "JSON-RPC connection ended");
            }
        }
    };
    let mut connections = crate::net::conn::accept_connections(
        tcp,
        pool.slots,
        Some(pool.idle),
        "jsonrpc",
        shutdown,
        serve,
    )
    .await;
    let _ = server_handle.stop();
    while connections.join_next().await.is_some() {}
    Ok(())
}

/// What one JSON-RPC connection does, for its idle close: when it last made a call, and how
/// many calls in flight and watches it holds. A WebSocket answers pings, so bytes alone never
/// make it idle; a connection that makes no call and holds nothing for the idle timeout is
/// closed.
#[derive(Debug)]
pub(crate) struct Activity {
    last_call: std::sync::Mutex<tokio::time::Instant>,
    busy: std::sync::atomic::AtomicUsize,
}

impl Default for Activity {
    fn default() -> Self {
        Activity {
            last_call: std::sync::Mutex::new(tokio::time::Instant::now()),
            busy: Default::default(),
        }
    }
}

impl Activity {
    fn touch(&self) {
        if let Ok(mut last) = self.last_call.lock() {
            *last = tokio::time::Instant::now();
        }
    }

    /// Counts a call in flight or a watch on this connection until the guard drops.
    pub(crate) fn busy(self: &Arc<Self>) -> Busy {
        self.busy.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        Busy(self.clone())
    }

    fn last_call(&self) -> tokio::time::Instant {
        self.last_call
            .lock()
            .map_or_else(|_| tokio::time::Instant::now(), |last| *last)
    }

    /// Closes the connection once it has made no call for `idle` and holds no watch; ends
    /// as soon as the connection is gone.
    async fn close_when_idle(
        self: Arc<Self>,
        idle: std::time::Duration,
        connection: Arc<crate::net::conn::Closer>,
        peer: std::net::SocketAddr,
    ) {
        loop {
            let busy = self.busy.load(std::sync::atomic::Ordering::Acquire) > 0;
            let until = if busy {
                tokio::time::Instant::now() + idle
            } else {
                self.last_call() + idle
            };
            tokio::select! {
                () = connection.gone() => return,
                () = tokio::time::sleep_until(until) => {}
            }
            let busy = self.busy.load(std::sync::atomic::Ordering::Acquire) > 0;
            if !busy && self.last_call() + idle <= tokio::time::Instant::now() {
                tracing::debug!(%peer, "JSON-RPC connection closed: no call and no watch for the idle timeout");
                return connection.close();
            }
        }
    }
}

/// One call in flight or watch of a connection's [`Activity`].
#[derive(Debug)]
pub(crate) struct Busy(Arc<Activity>);

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.touch();
        self.0
            .busy
            .fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
}

/// The RPC middleware that records a connection's calls in its [`Activity`], and hands the
/// activity to the methods (in the request's extensions) so a watch can count itself.
#[derive(Debug, Clone)]
struct Track<S> {
    inner: S,
    activity: Arc<Activity>,
}

impl<S> jsonrpsee::server::middleware::rpc::RpcServiceT for Track<S>
where
    S: jsonrpsee::server::middleware::rpc::RpcServiceT + Send + Sync,
{
    type MethodResponse = S::MethodResponse;
    type NotificationResponse = S::NotificationResponse;
    type BatchResponse = S::BatchResponse;

    fn call<'a>(
        &self,
        mut request: jsonrpsee::types::Request<'a>,
    ) -> impl Future<Output = Self::MethodResponse> + Send + 'a {
        self.activity.touch();
        request.extensions_mut().insert(self.activity.clone());
        let busy = self.activity.busy();
        let call = self.inner.call(request);
        async move {
            let answer = call.await;
            drop(busy);
            answer
        }
    }

    fn batch<'a>(
        &self,
        requests: jsonrpsee::core::middleware::Batch<'a>,
    ) -> impl Future<Output = Self::BatchResponse> + Send + 'a {
        let busy = self.activity.busy();
        let batch = self.inner.batch(requests);
        async move {
            let answers = batch.await;
            drop(busy);
            answers
        }
    }

    fn notification<'a>(
        &self,
        n: jsonrpsee::core::middleware::Notification<'a>,
    ) -> impl Future<Output = Self::NotificationResponse> + Send + 'a {
        self.activity.touch();
        self.inner.notification(n)
    }
}

/// How often a WebSocket connection is pinged.
const WS_PING: std::time::Duration = std::time::Duration::from_secs(20);

/// A jsonrpsee module with one method per operation, each answered by `handle` (given the API,
/// the operation's name and its parameters as JSON, absent when the call sent none), plus
/// `rpc.discover`, which answers the OpenRPC document `openrpc`.
pub fn rpc_module<A, F, Fut>(
    api: std::sync::Arc<A>,
    operations: &[crate::wire::service::OpInfo],
    openrpc: &str,
    handle: F,
) -> Result<jsonrpsee::RpcModule<A>, ServeError>
where
    A: Send + Sync + 'static,
    F: Fn(std::sync::Arc<A>, &'static str, Option<serde_json::Value>) -> Fut
        + Clone
        + Send
        + Sync
        + 'static,
    Fut: Future<Output = Result<serde_json::Value, jsonrpsee::types::ErrorObjectOwned>>
        + Send
        + 'static,
{
    let openrpc: serde_json::Value = serde_json::from_str(openrpc)
        .map_err(|e| ServeError::JsonRpc(format!("OpenRPC document: {e}")))?;
    let mut module = jsonrpsee::RpcModule::from_arc(api);
    for op in operations {
        let name = op.name;
        let handle = handle.clone();
        module
            .register_async_method(name, move |params, api, _| {
                let handle = handle.clone();
                async move {
                    let mut args = params
                        .as_str()
                        .map(serde_json::from_str::<serde_json::Value>)
                        .transpose()
                        .map_err(crate::wire::codes::invalid_params)?;
                    let context =
                        crate::wire::call::context_from_params(&mut args).map_err(|reason| {
                            crate::wire::codes::failure_error_object(
                                crate::wire::error::Failure::Rejected(reason),
                            )
                        })?;
                    crate::wire::call::with_context(context, handle(api, name, args)).await
                }
            })
            .map_err(|e| ServeError::JsonRpc(format!("registering `{name}`: {e}")))?;
    }
    module
        .register_method("rpc.discover", move |_, _, _| openrpc.clone())
        .map_err(|e| ServeError::JsonRpc(format!("registering `rpc.discover`: {e}")))?;
    Ok(module)
}
