//! The networked variants of the seed's stepwise process: start a server for one of them, or
//! connect a client to one. Every client implements [`BankApi`], so the validator runs unchanged.
//!
//! | variant | server side |
//! |---|---|
//! | `grpc`, `jsonrpc` | the transport stub straight to the service ([`Direct`]) |
//! | `grpc-facade`, `jsonrpc-facade` | the transport, then a server-side `Collector` → `Dispatcher` (each call serialized exactly as a log entry) |

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use bank_generated::{BankApi, BankError, grpc};
use clap::ValueEnum;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::store::Bank;
use crate::validator::{self, Report, ValidationError};
use crate::variants::{Direct, collector};

/// The largest request a server accepts by default (bytes).
pub const DEFAULT_MAX_REQUEST: usize = 4 << 20;

/// A variant reached over the network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum NetVariant {
    /// gRPC (tonic) straight to the service.
    Grpc,
    /// gRPC through a server-side Collector and Dispatcher.
    GrpcFacade,
}

impl NetVariant {
    /// The variant's name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            NetVariant::Grpc => "grpc",
            NetVariant::GrpcFacade => "grpc-facade",
        }
    }
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
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The client could not reach the server.
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        /// The address.
        addr: String,
        /// What went wrong.
        source: BankError,
    },
    /// The server stopped with an error.
    #[error("server failed: {0}")]
    Server(BankError),
    /// The validator failed.
    #[error(transparent)]
    Validation(#[from] ValidationError),
}

/// Limits a server enforces.
#[derive(Debug, Clone, Copy)]
pub struct ServerLimits {
    /// The largest request accepted, in bytes.
    pub max_request: usize,
}

impl Default for ServerLimits {
    fn default() -> Self {
        ServerLimits {
            max_request: DEFAULT_MAX_REQUEST,
        }
    }
}

/// A running server: its address, and the means to stop it.
pub struct RunningServer {
    /// Where clients connect.
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), BankError>>,
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
            Err(e) => Err(NetError::Server(BankError::Internal(format!(
                "server task: {e}"
            )))),
        }
    }
}

async fn bind(listen: &str) -> Result<TcpListener, NetError> {
    let addr: SocketAddr = listen.parse().map_err(|e| NetError::BadAddress {
        addr: listen.to_string(),
        reason: format!("{e} (expected IP:PORT, e.g. 127.0.0.1:50051)"),
    })?;
    TcpListener::bind(addr)
        .await
        .map_err(|source| NetError::Bind {
            addr: listen.to_string(),
            source,
        })
}

/// Starts a server for `variant` on `listen` (use port 0 for any free port) over `bank`.
pub async fn serve(
    variant: NetVariant,
    listen: &str,
    bank: Bank,
    limits: ServerLimits,
) -> Result<RunningServer, NetError> {
    let listener = bind(listen).await?;
    let addr = listener.local_addr().map_err(|source| NetError::Bind {
        addr: listen.to_string(),
        source,
    })?;
    let (stop, stopped) = oneshot::channel::<()>();
    let shutdown = async move {
        let _ = stopped.await;
    };
    let task = match variant {
        NetVariant::Grpc => spawn_grpc(listener, Arc::new(Direct::new(bank)), limits, shutdown),
        NetVariant::GrpcFacade => spawn_grpc(listener, Arc::new(collector(bank)), limits, shutdown),
    };
    tracing::info!(variant = variant.name(), %addr, "serving");
    Ok(RunningServer {
        addr,
        stop: Some(stop),
        task,
    })
}

fn spawn_grpc<A: BankApi + 'static>(
    listener: TcpListener,
    api: Arc<A>,
    limits: ServerLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> JoinHandle<Result<(), BankError>> {
    tokio::spawn(grpc::serve(listener, api, limits.max_request, shutdown))
}

/// Connects a client for `variant` to `addr` and runs the validator walk-through through it.
pub async fn validate(variant: NetVariant, addr: &str) -> Result<Report, NetError> {
    let connect_err = |source| NetError::Connect {
        addr: addr.to_string(),
        source,
    };
    let report = match variant {
        NetVariant::Grpc | NetVariant::GrpcFacade => {
            let client = grpc::GrpcClient::connect(addr).await.map_err(connect_err)?;
            validator::run(&client).await?
        }
    };
    Ok(report)
}
