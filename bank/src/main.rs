//! The `bank` command line:
//! - `bank validate --variant direct|collector [--db PATH]` runs the walk-through in process;
//! - `bank validate --variant <networked> --connect ADDR` runs it against a server;
//! - `bank serve --variant <networked> --listen ADDR [--db PATH]` runs a server.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use bank::net::{self, NetError, NetVariant, ServerLimits};
use bank::{Bank, Direct, Report, StoreError, ValidationError, collector, validator};
use clap::{Parser, Subcommand, ValueEnum};
use tracing_subscriber::EnvFilter;

/// The bank: customers, accounts, a simulated clock and monthly statements.
#[derive(Debug, Parser)]
#[command(name = "bank", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the validator walk-through against one variant of the bank.
    Validate {
        /// The way to reach the bank.
        #[arg(long, value_enum)]
        variant: Variant,
        /// The SQLite database file (created if missing); without it, a temporary in-memory
        /// database. In-process variants only.
        #[arg(long, value_name = "PATH", conflicts_with = "connect")]
        db: Option<PathBuf>,
        /// The server to validate (networked variants only), e.g. 127.0.0.1:50051.
        #[arg(long, value_name = "ADDR")]
        connect: Option<String>,
    },
    /// Serve the bank over one of the networked variants until interrupted (Ctrl-C).
    Serve {
        /// The transport (and server-side path) to serve.
        #[arg(long, value_enum)]
        variant: NetVariant,
        /// Where to listen, e.g. 127.0.0.1:50051 (port 0 picks a free port).
        #[arg(long, value_name = "ADDR")]
        listen: String,
        /// The SQLite database file (created if missing); without it, in memory.
        #[arg(long, value_name = "PATH")]
        db: Option<PathBuf>,
        /// The largest request accepted, in bytes.
        #[arg(long, default_value_t = net::DEFAULT_MAX_REQUEST)]
        max_request: usize,
        /// Also serve the raft message service here (facade variants; it only echoes until the
        /// raft runtime is in place). Never the same address as --listen.
        #[arg(long, value_name = "ADDR")]
        raft_listen: Option<String>,
        /// The shared secret every raft message must carry (default: $BANK_RAFT_SECRET).
        #[arg(
            long,
            env = "BANK_RAFT_SECRET",
            hide_env_values = true,
            default_value = ""
        )]
        raft_secret: String,
    },
}

/// The ways to reach the bank.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Variant {
    /// Call the store's service methods in process.
    Direct,
    /// The generated Collector client over encoded commands to a local sink.
    Collector,
    /// Serialized commands in TCP frames (needs --connect).
    Tcp,
    /// gRPC straight to the service (needs --connect).
    Grpc,
    /// JSON-RPC 2.0 over HTTP straight to the service (needs --connect).
    Jsonrpc,
    /// Serialized commands over ZeroMQ (needs --connect).
    Zmq,
    /// gRPC through a server-side Collector and Dispatcher (needs --connect).
    GrpcFacade,
    /// JSON-RPC through a server-side Collector and Dispatcher (needs --connect).
    JsonrpcFacade,
}

impl Variant {
    fn name(self) -> &'static str {
        match (self, self.networked()) {
            (_, Some(net)) => net.name(),
            (Variant::Collector, None) => "collector",
            _ => "direct",
        }
    }

    fn networked(self) -> Option<NetVariant> {
        match self {
            Variant::Direct | Variant::Collector => None,
            Variant::Tcp => Some(NetVariant::Tcp),
            Variant::Grpc => Some(NetVariant::Grpc),
            Variant::Jsonrpc => Some(NetVariant::Jsonrpc),
            Variant::Zmq => Some(NetVariant::Zmq),
            Variant::GrpcFacade => Some(NetVariant::GrpcFacade),
            Variant::JsonrpcFacade => Some(NetVariant::JsonrpcFacade),
        }
    }
}

#[derive(Debug, thiserror::Error)]
enum CliError {
    #[error("cannot open the database: {0}")]
    Store(#[from] StoreError),
    #[error("cannot start the async runtime: {0}")]
    Runtime(#[from] std::io::Error),
    #[error("validation failed: {0}")]
    Validation(#[from] ValidationError),
    #[error("{0}")]
    Net(#[from] NetError),
    #[error("{0}")]
    Usage(String),
}

fn main() -> ExitCode {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match run(cli) {
        Ok(summary) => {
            println!("{summary}");
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("bank: {err}");
            ExitCode::FAILURE
        }
    }
}

fn open(db: Option<&PathBuf>) -> Result<Bank, StoreError> {
    match db {
        Some(path) => Bank::open(path),
        None => Bank::open_in_memory(),
    }
}

fn run(cli: Cli) -> Result<String, CliError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match cli.command {
        Command::Validate {
            variant,
            db,
            connect,
        } => {
            let report = match (variant.networked(), connect) {
                (None, None) => {
                    let bank = open(db.as_ref())?;
                    runtime.block_on(async {
                        match variant {
                            Variant::Collector => validator::run(&collector(bank)).await,
                            _ => validator::run(&Direct::new(bank)).await,
                        }
                    })?
                }
                (Some(net_variant), Some(addr)) => {
                    runtime.block_on(net::validate(net_variant, &addr))?
                }
                (None, Some(_)) => {
                    return Err(CliError::Usage(format!(
                        "variant `{}` runs in process; drop --connect",
                        variant.name()
                    )));
                }
                (Some(_), None) => {
                    return Err(CliError::Usage(format!(
                        "variant `{}` needs --connect ADDR (start one with `bank serve`)",
                        variant.name()
                    )));
                }
            };
            Ok(summary(variant.name(), &report))
        }
        Command::Serve {
            variant,
            listen,
            db,
            max_request,
            raft_listen,
            raft_secret,
        } => {
            let facade = matches!(variant, NetVariant::GrpcFacade | NetVariant::JsonrpcFacade);
            if raft_listen.is_some() && !facade {
                return Err(CliError::Usage(
                    "--raft-listen is for the facade variants (grpc-facade, jsonrpc-facade)".into(),
                ));
            }
            if raft_listen.is_some() && raft_secret.is_empty() {
                return Err(CliError::Usage(
                    "--raft-listen needs a secret: --raft-secret or $BANK_RAFT_SECRET".into(),
                ));
            }
            let bank = open(db.as_ref())?;
            runtime.block_on(async {
                let mut server =
                    net::serve(variant, &listen, bank, ServerLimits { max_request }).await?;
                let raft = match &raft_listen {
                    Some(addr) => Some(net::serve_raft_echo(addr, raft_secret).await?),
                    None => None,
                };
                // The address lines are what scripts and tests wait for.
                if let Some(raft) = &raft {
                    println!("raft service on {}", raft.addr);
                }
                println!("listening on {} ({})", server.addr, variant.name());
                let interrupted = tokio::select! {
                    _ = tokio::signal::ctrl_c() => true,
                    result = server.wait() => { result?; false }
                };
                if interrupted {
                    server.shutdown().await?;
                }
                if let Some(raft) = raft {
                    raft.shutdown().await?;
                }
                Ok::<_, CliError>(())
            })?;
            Ok("server stopped".into())
        }
    }
}

fn summary(name: &str, report: &Report) -> String {
    format!(
        "validation passed: variant={name} steps={} customer={} checking={} savings={} \
         statements={} clock={} elapsed={:?}",
        report.steps.len(),
        report.customer_id,
        report.checking_id,
        report.savings_id,
        report.statement_dates.len(),
        report.clock.to_rfc3339(),
        report.elapsed(),
    )
}
