//! The variants of the seed's stepwise process ([`Variant`]): [`connect`] gives a client of
//! any of them (in process, or at an address), [`serve`] starts a server for the networked ones.
//! Every client implements [`BankApi`], so the validator runs unchanged.
//!
//! | variant | server side |
//! |---|---|
//! | `tcp`, `zmq` | command bytes from the client's `Collector`, answered by the `Dispatcher` (a [`LocalSink`]) |
//! | `grpc`, `jsonrpc` | the transport stub straight to the service ([`direct`]) |
//! | `grpc-facade`, `jsonrpc-facade` | the transport, then a server-side `Collector` → `Dispatcher` (each call serialized exactly as a log entry) |

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use bank_generated::{
    BankApi, BankApp, BankCallError, Collector, DynBankApi, encode_failure, grpc, jsonrpc,
};
use clap::ValueEnum;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::store::Bank;
use crate::validator::{self, Report, ValidationError};
use crate::{BankTables, collector, direct};
use runtime::Failure;
use runtime::api::local::LocalSink;
use runtime::api::sink::{SinkHandler, TcpSink, ZmqSink};

/// Every way to reach the bank: one per stage of the seed's stepwise process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Variant {
    /// In process: the store's service methods, called directly.
    Direct,
    /// In process: the generated Collector, encoded commands to a local sink.
    Collector,
    /// Serialized commands in length-prefixed TCP frames (the seed's "astream").
    Tcp,
    /// gRPC (tonic) straight to the service.
    Grpc,
    /// JSON-RPC 2.0 over HTTP straight to the service.
    Jsonrpc,
    /// Serialized commands over ZeroMQ.
    Zmq,
    /// gRPC through a server-side Collector and Dispatcher.
    GrpcFacade,
    /// JSON-RPC through a server-side Collector and Dispatcher.
    JsonrpcFacade,
    /// A node of the replicated bank, over gRPC (any node: leader or follower).
    Raft,
}

impl Variant {
    /// The variants `bank serve` starts a server for.
    pub const SERVED: &'static [Variant] = &[
        Variant::Tcp,
        Variant::Grpc,
        Variant::Jsonrpc,
        Variant::Zmq,
        Variant::GrpcFacade,
        Variant::JsonrpcFacade,
    ];

    /// The variant's name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Variant::Direct => "direct",
            Variant::Collector => "collector",
            Variant::Tcp => "tcp",
            Variant::Grpc => "grpc",
            Variant::Jsonrpc => "jsonrpc",
            Variant::Zmq => "zmq",
            Variant::GrpcFacade => "grpc-facade",
            Variant::JsonrpcFacade => "jsonrpc-facade",
            Variant::Raft => "raft",
        }
    }

    /// Whether the variant runs in this process (on a local database) rather than at an address.
    pub fn in_process(self) -> bool {
        matches!(self, Variant::Direct | Variant::Collector)
    }
}

/// Where a client reaches the bank: a local database (in-process variants) or an address.
#[derive(Debug)]
pub enum Endpoint<'a> {
    /// A bank in this process.
    Local(Bank),
    /// A server or a node, e.g. `127.0.0.1:50051`.
    Remote(&'a str),
}

/// Why a server could not start or a client could not connect.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// The listen address is malformed.
    #[error("bad listen address `{addr}`: {reason}")]
    BadAddress {
        /// What was given.
        addr: String,
        /// Why it is wrong.
        reason: String,
    },
    /// Binding failed (address in use, permission).
    #[error(transparent)]
    Bind(#[from] runtime::api::server::BindError),
    /// The client could not reach the server.
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        /// The address.
        addr: String,
        /// What went wrong.
        source: BankCallError,
    },
    /// The server stopped with an error.
    #[error("server failed: {0}")]
    Server(String),
    /// The validator failed.
    #[error(transparent)]
    Validation(#[from] ValidationError),
    /// The variant does not go with what was asked of it.
    #[error("{0}")]
    Usage(String),
}

/// A running server: its address, and the means to stop it.
pub struct RunningServer {
    /// Where clients connect.
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), String>>,
}

impl RunningServer {
    /// Stops accepting, finishes in-flight requests and waits for the server to end.
    pub async fn shutdown(mut self) -> Result<(), NetError> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.wait().await
    }

    /// Waits until the server ends by itself (or is stopped elsewhere).
    pub async fn wait(&mut self) -> Result<(), NetError> {
        match (&mut self.task).await {
            Ok(result) => result.map_err(NetError::Server),
            Err(e) => Err(NetError::Server(format!("server task: {e}"))),
        }
    }
}

/// Binds `listen` (an IP:PORT; port 0 picks a free port); returns the listener and the address
/// it actually got.
async fn bind(listen: &str) -> Result<(TcpListener, SocketAddr), NetError> {
    parse_addr(listen)?;
    Ok(runtime::api::server::bind(listen).await?)
}

fn parse_addr(listen: &str) -> Result<SocketAddr, NetError> {
    listen.parse().map_err(|e| NetError::BadAddress {
        addr: listen.to_string(),
        reason: format!("{e} (expected IP:PORT, e.g. 127.0.0.1:50051)"),
    })
}

/// A sender that stops a server, and the future the server waits on.
fn stop_signal() -> (
    oneshot::Sender<()>,
    impl Future<Output = ()> + Send + 'static,
) {
    let (stop, stopped) = oneshot::channel::<()>();
    (stop, async move {
        let _ = stopped.await;
    })
}

/// Starts a server for `variant` on `listen` (use port 0 for any free port) over `bank`.
pub async fn serve(
    variant: Variant,
    listen: &str,
    bank: Bank,
    limits: runtime::Limits,
) -> Result<RunningServer, NetError> {
    let (stop, shutdown) = stop_signal();
    let max = limits.max_frame;
    let (addr, task) = match variant {
        Variant::Zmq => serve_zmq(listen, bank, limits, shutdown).await?,
        Variant::Tcp => {
            let (listener, addr) = bind(listen).await?;
            let handler = Arc::new(sink_handler(bank));
            (
                addr,
                spawn(runtime::serve_tcp(listener, handler, limits, shutdown)),
            )
        }
        Variant::Grpc | Variant::GrpcFacade => {
            let (listener, addr) = bind(listen).await?;
            let task = if variant == Variant::Grpc {
                spawn(grpc::serve(listener, Arc::new(direct(bank)), max, shutdown))
            } else {
                spawn(grpc::serve(
                    listener,
                    Arc::new(collector(bank)),
                    max,
                    shutdown,
                ))
            };
            (addr, task)
        }
        Variant::Jsonrpc | Variant::JsonrpcFacade => {
            let (listener, addr) = bind(listen).await?;
            let task = if variant == Variant::Jsonrpc {
                spawn(jsonrpc::serve(
                    listener,
                    Arc::new(direct(bank)),
                    max,
                    shutdown,
                ))
            } else {
                spawn(jsonrpc::serve(
                    listener,
                    Arc::new(collector(bank)),
                    max,
                    shutdown,
                ))
            };
            (addr, task)
        }
        Variant::Direct | Variant::Collector | Variant::Raft => {
            let served: Vec<&str> = Variant::SERVED.iter().map(|v| v.name()).collect();
            return Err(NetError::Usage(format!(
                "variant `{}` has no server of its own; `bank serve` serves {}",
                variant.name(),
                served.join(", ")
            )));
        }
    };
    tracing::info!(variant = variant.name(), %addr, "serving");
    Ok(RunningServer {
        addr,
        stop: Some(stop),
        task,
    })
}

/// ZeroMQ binds its own socket (port 0 picks a free port) and reports the endpoint it got.
async fn serve_zmq(
    listen: &str,
    bank: Bank,
    limits: runtime::Limits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(SocketAddr, JoinHandle<Result<(), String>>), NetError> {
    let endpoint = format!("tcp://{}", parse_addr(listen)?);
    let (bound, serving) =
        runtime::serve_zmq(&endpoint, Arc::new(sink_handler(bank)), limits, shutdown)
            .await
            .map_err(|e| NetError::Server(e.to_string()))?;
    let addr = bound
        .trim_start_matches("tcp://")
        .parse()
        .map_err(|e| NetError::BadAddress {
            addr: bound.clone(),
            reason: format!("{e}"),
        })?;
    let task = tokio::spawn(async move {
        serving
            .await
            .map_err(|e| format!("ZeroMQ server task: {e}"))
    });
    Ok((addr, task))
}

/// Runs a server; its error, if it stops with one, as text.
fn spawn<E: std::fmt::Display>(
    serving: impl Future<Output = Result<(), E>> + Send + 'static,
) -> JoinHandle<Result<(), String>> {
    tokio::spawn(async move { serving.await.map_err(|e| e.to_string()) })
}

/// Answers command frames with the bank's dispatcher, in process.
fn sink_handler(bank: Bank) -> SinkHandler<LocalSink<BankApp<BankTables>>> {
    SinkHandler::new(
        LocalSink::new(bank.into_db(), BankApp(BankTables)),
        encode_failure,
    )
}

/// The generated `Collector` over TCP frames to a server at `addr`.
pub async fn connect_tcp(
    addr: &str,
    limits: runtime::Limits,
) -> Result<Collector<TcpSink>, BankCallError> {
    let client = runtime::TcpClient::connect(addr.to_string(), limits).await;
    Ok(Collector::new(TcpSink(client.map_err(Failure::from)?)))
}

/// The generated `Collector` over ZeroMQ to a server at `addr` (`HOST:PORT`).
pub async fn connect_zmq(
    addr: &str,
    limits: runtime::Limits,
) -> Result<Collector<ZmqSink>, BankCallError> {
    let client = runtime::ZmqClient::connect(&format!("tcp://{addr}"), limits).await;
    Ok(Collector::new(ZmqSink(client.map_err(Failure::from)?)))
}

/// Runs the validator through any client.
async fn run<A: BankApi>(client: A, addr: &str) -> Result<Report, NetError> {
    tracing::debug!(%addr, "validating");
    Ok(validator::run(&client).await?)
}

/// Starts the raft message service (step 4: it only echoes) on its own listener; calls must
/// carry `secret`.
pub async fn serve_raft_echo(listen: &str, secret: String) -> Result<RunningServer, NetError> {
    let (listener, addr) = bind(listen).await?;
    let (stop, shutdown) = stop_signal();
    let echo = Arc::new(runtime::raft::rpc::Echo);
    let task = spawn(runtime::raft::rpc::serve_raft(
        listener,
        runtime::net::conn::Pool::new(256, runtime::net::conn::RAFT_IDLE_TIMEOUT),
        echo,
        runtime::raft::rpc::RaftCredentials::plain(secret),
        runtime::api::server::MAX_API_MESSAGE,
        shutdown,
    ));
    tracing::info!(%addr, "serving the raft message service");
    Ok(RunningServer {
        addr,
        stop: Some(stop),
        task,
    })
}

/// Connects a client for `variant` to `addr` and runs the validator walk-through through it.
pub async fn validate(variant: Variant, endpoint: Endpoint<'_>) -> Result<Report, NetError> {
    let addr = match &endpoint {
        Endpoint::Remote(addr) => addr.to_string(),
        Endpoint::Local(_) => "this process".to_string(),
    };
    let client = connect(variant, endpoint).await?;
    run(client, &addr).await
}

/// A client of `variant` at `endpoint`: the one place a variant picks its client.
pub async fn connect(
    variant: Variant,
    endpoint: Endpoint<'_>,
) -> Result<Arc<dyn DynBankApi>, NetError> {
    let limits = runtime::Limits::default();
    let connected = |addr: &str| {
        let addr = addr.to_string();
        move |source: BankCallError| NetError::Connect { addr, source }
    };
    Ok(match (variant, endpoint) {
        (Variant::Direct, Endpoint::Local(bank)) => Arc::new(direct(bank)),
        (Variant::Collector, Endpoint::Local(bank)) => Arc::new(collector(bank)),
        (Variant::Tcp, Endpoint::Remote(addr)) => {
            Arc::new(connect_tcp(addr, limits).await.map_err(connected(addr))?)
        }
        (Variant::Zmq, Endpoint::Remote(addr)) => {
            Arc::new(connect_zmq(addr, limits).await.map_err(connected(addr))?)
        }
        (Variant::Grpc | Variant::GrpcFacade | Variant::Raft, Endpoint::Remote(addr)) => {
            let client = grpc::GrpcClient::connect(addr).await;
            Arc::new(client.map_err(|e| connected(addr)(e.into()))?)
        }
        (Variant::Jsonrpc | Variant::JsonrpcFacade, Endpoint::Remote(addr)) => {
            let client = jsonrpc::JsonRpcClient::new(addr);
            Arc::new(client.map_err(|e| connected(addr)(e.into()))?)
        }
        (variant, Endpoint::Remote(_)) => {
            return Err(NetError::Usage(format!(
                "variant `{}` runs in process; drop --connect",
                variant.name()
            )));
        }
        (variant, Endpoint::Local(_)) => {
            return Err(NetError::Usage(format!(
                "variant `{}` needs --connect ADDR (start one with `bank serve`)",
                variant.name()
            )));
        }
    })
}
