//! The `bank` command line:
//! - `bank validate --variant direct|collector [--db PATH]` runs the walk-through in process;
//! - `bank validate --variant <networked> --connect ADDR` runs it against a server;
//! - `bank serve --variant <networked> --listen ADDR [--db PATH]` runs a server.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use bank::net::{self, Endpoint, NetError, Variant};
use bank::{Bank, Report, StoreError, ValidationError};
use clap::Subcommand;

/// The bank's own commands, beside what every service binary has (`node`, `call`, `cluster
/// up`, `admin`, `top`).
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
    /// Start a 3-node cluster, run the walk-through, kill the leader, run it again, report.
    Demo {
        /// TLS on every listener: a fresh CA signs each node's certificate; nodes authenticate
        /// each other with them and the clients check the nodes'.
        #[arg(long)]
        tls: bool,
    },
    /// Measure a variant under load (or `bench layers`: the seed's layer table).
    #[command(args_conflicts_with_subcommands = true)]
    Bench {
        #[command(subcommand)]
        layers: Option<BenchSub>,
        #[command(flatten)]
        args: BenchArgs,
    },
    /// Faults on a 3-node cluster whose nodes each run in a network namespace (needs root,
    /// iproute2 and iptables): a workload of writes over gRPC and JSON-RPC while leaders and
    /// followers are cut off, leaders killed, a leader's link made lossy and (with failpoints)
    /// its clock skewed, in turn; then heal, check the invariants, and report per fault.
    Chaos {
        /// Seconds of fault injection.
        #[arg(long, default_value_t = 600.0)]
        duration: f64,
        /// The faults, injected in turn (repeatable; default: every one this build has;
        /// clock-skew needs the `failpoints` feature).
        #[arg(long = "nemesis", value_enum)]
        nemeses: Vec<bank::chaos::Nemesis>,
        /// Seconds each fault lasts.
        #[arg(long, default_value_t = 6.0)]
        hold: f64,
        /// Where the nodes' data directories go (default: a new temporary directory, removed
        /// after a run that passes and kept after one that fails).
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
        /// An extra argument for every node (repeatable), e.g.
        /// `--node-arg=--election-timeout-ms=500-1000`.
        #[arg(long = "node-arg", value_name = "ARG", allow_hyphen_values = true)]
        node_args: Vec<String>,
        /// Also write the report as JSON.
        #[arg(long, value_name = "FILE")]
        json: Option<PathBuf>,
    },
    /// Serve the bank over one of the networked variants until interrupted (Ctrl-C).
    Serve {
        /// The transport (and server-side path) to serve.
        #[arg(long, value_enum)]
        variant: Variant,
        /// Where to listen, e.g. 127.0.0.1:50051 (port 0 picks a free port).
        #[arg(long, value_name = "ADDR")]
        listen: String,
        /// The SQLite database file (created if missing); without it, in memory.
        #[arg(long, value_name = "PATH")]
        db: Option<PathBuf>,
        /// The largest request accepted, in bytes.
        #[arg(long, default_value_t = runtime::api::server::MAX_API_MESSAGE)]
        max_request: usize,
        /// Also serve the raft message service here (facade variants; it only echoes until the
        /// raft runtime is in place). Never the same address as --listen.
        #[arg(long, value_name = "ADDR")]
        raft_listen: Option<String>,
        /// The shared secret every raft message must carry (default: $RAFT_SECRET).
        #[arg(long, env = runtime::ops::host::SECRET_ENV, hide_env_values = true, default_value = "")]
        raft_secret: String,
    },
}

#[derive(Debug, Subcommand)]
enum BenchSub {
    /// One client, the walk-through, over direct, collector, tcp, grpc, jsonrpc, grpc-facade and
    /// a local 3-node raft cluster: mean, median, p99 and the multiple of direct.
    Layers {
        /// Operations per layer.
        #[arg(long, default_value_t = 2000)]
        ops: u64,
        /// Also write the reports as JSON.
        #[arg(long, value_name = "FILE")]
        json: Option<PathBuf>,
    },
    /// etcd, the kv example and the bank, each a 3-member durable cluster on 127.0.0.1, under
    /// the same load generator in one run: write latency, write and read throughput, CPU per
    /// write, and the ratios to etcd.
    Peers {
        /// Seconds per measured phase.
        #[arg(long, default_value_t = 5.0)]
        seconds: f64,
        /// Clients in the concurrent phases.
        #[arg(long, default_value_t = 64)]
        clients: usize,
        /// The kv binary (default: `kv` next to this binary).
        #[arg(long, value_name = "PATH")]
        kv_bin: Option<PathBuf>,
        /// The etcd binary.
        #[arg(long, value_name = "PATH", default_value = "etcd")]
        etcd_bin: PathBuf,
        /// Measure only these systems (repeatable; default: all three).
        #[arg(long = "only", value_enum)]
        only: Vec<bank::peers::System>,
        /// An extra argument for every kv and bank node (repeatable), e.g.
        /// `--node-arg=--worker-threads=2`.
        #[arg(long = "node-arg", value_name = "ARG", allow_hyphen_values = true)]
        node_args: Vec<String>,
        /// Also write the figures as JSON.
        #[arg(long, value_name = "FILE")]
        json: Option<PathBuf>,
        /// Also draw the latency distributions (CDFs, log time axis) of every system as SVG.
        #[arg(long, value_name = "FILE")]
        svg: Option<PathBuf>,
    },
}

#[derive(Debug, clap::Args)]
struct BenchArgs {
    /// The variant to measure.
    #[arg(long, value_enum, default_value = "direct")]
    variant: Variant,
    /// A running server or node (networked variants); without it one is started for the run.
    #[arg(long, value_name = "ADDR")]
    connect: Option<String>,
    /// Concurrent clients.
    #[arg(long, default_value_t = 1)]
    clients: usize,
    /// Run for this many seconds.
    #[arg(long, conflicts_with = "ops")]
    duration: Option<f64>,
    /// Run this many operations in total.
    #[arg(long)]
    ops: Option<u64>,
    /// What the clients do.
    #[arg(long, value_enum, default_value = "writes")]
    workload: bank::bench::Workload,
    /// A one-way delay in milliseconds on every link between the nodes of the raft cluster the
    /// run starts (a userspace proxy): how the cluster does with its nodes apart.
    #[arg(long, value_name = "MS")]
    latency_ms: Option<u64>,
    /// Watchers of the change feed during the run (raft), spread over the nodes: the feed's
    /// cost on the write path, and the events/s each one sees.
    #[arg(long, value_name = "N", default_value_t = 0)]
    watchers: usize,
    /// Start the raft cluster with `--auth`, and call (and watch) as a teller with a token:
    /// what checking every call costs.
    #[arg(long)]
    auth: bool,
    /// Also write the report as JSON.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
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
    runtime::cli::main_with(
        "bank",
        "The bank: customers, accounts, a simulated clock and monthly statements.",
        &bank_generated::BankNode(bank::BankTables),
        bank_generated::cli::main,
        own,
    )
}

/// Runs one of the bank's own commands.
fn own(command: Command) -> ExitCode {
    runtime::ops::host::init_logging(runtime::ops::host::LogFormat::Text);
    match run(command) {
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

fn run(command: Command) -> Result<String, CliError> {
    // A node sizes its own runtime (`--worker-threads`); every other command builds this one.
    let runtime = || {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
    };
    match command {
        Command::Validate {
            variant,
            db,
            connect,
        } => {
            let endpoint = match &connect {
                Some(addr) => Endpoint::Remote(addr),
                None => Endpoint::Local(open(db.as_ref())?),
            };
            let report = runtime()?.block_on(net::validate(variant, endpoint))?;
            Ok(summary(variant.name(), &report))
        }
        Command::Bench { layers, args } => runtime()?.block_on(run_bench(layers, args)),
        Command::Chaos {
            duration,
            nemeses,
            hold,
            dir,
            node_args,
            json,
        } => runtime()?.block_on(async {
            use bank::chaos::{self, ChaosConfig, Nemesis};
            let seconds = |s: f64, what: &str| {
                Duration::try_from_secs_f64(s)
                    .map_err(|_| CliError::Usage(format!("--{what} must be a number of seconds")))
            };
            let temp = tempfile::Builder::new().prefix("bank-chaos-").tempdir()?;
            let config = ChaosConfig {
                exe: std::env::current_exe()?,
                dir: dir.unwrap_or_else(|| temp.path().to_path_buf()),
                duration: seconds(duration, "duration")?,
                nemeses: if nemeses.is_empty() {
                    let available = Nemesis::available();
                    if !available.contains(&Nemesis::LossyLink) {
                        eprintln!("bank: no lossy link in this run: iptables is not installed");
                    }
                    available
                } else {
                    nemeses
                },
                hold: seconds(hold, "hold")?,
                lab: ("bkc".into(), 200),
                node_args,
                catch_up: chaos::CATCH_UP,
            };
            let data = config.dir.clone();
            let report = match chaos::run(config).await {
                Ok(report) => report,
                Err(e) => {
                    // What the nodes logged and kept is what explains a failure: keep it.
                    drop(temp.keep());
                    return Err(CliError::Usage(format!(
                        "chaos: {e} (the nodes' data directories and logs are kept in {})",
                        data.display()
                    )));
                }
            };
            if let Some(path) = &json {
                write_json(path, &report)?;
            }
            Ok(chaos::render(&report))
        }),
        Command::Demo { tls } => runtime()?.block_on(async {
            let exe = std::env::current_exe()?;
            bank::demo::run(&exe, tls)
                .await
                .map_err(|e| CliError::Usage(format!("demo failed: {e}")))
        }),
        Command::Serve {
            variant,
            listen,
            db,
            max_request,
            raft_listen,
            raft_secret,
        } => {
            let facade = matches!(variant, Variant::GrpcFacade | Variant::JsonrpcFacade);
            if raft_listen.is_some() && !facade {
                return Err(CliError::Usage(
                    "--raft-listen is for the facade variants (grpc-facade, jsonrpc-facade)".into(),
                ));
            }
            if raft_listen.is_some() && raft_secret.is_empty() {
                return Err(CliError::Usage(
                    "--raft-listen needs a secret: --raft-secret or $RAFT_SECRET".into(),
                ));
            }
            let bank = open(db.as_ref())?;
            runtime()?.block_on(async {
                let mut server = net::serve(
                    variant,
                    &listen,
                    bank,
                    runtime::Limits {
                        max_frame: max_request,
                        ..runtime::Limits::default()
                    },
                )
                .await?;
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

async fn run_bench(layers: Option<BenchSub>, args: BenchArgs) -> Result<String, CliError> {
    use bank::bench::{self, Stop, Target};
    let progress = std::io::stderr().is_terminal();
    match layers {
        Some(BenchSub::Layers { ops, json }) => {
            let (table, reports) = bench::layers(ops, progress)
                .await
                .map_err(|e| CliError::Usage(e.to_string()))?;
            if let Some(path) = &json {
                write_json(path, &reports)?;
            }
            return Ok(table);
        }
        Some(BenchSub::Peers {
            seconds,
            clients,
            kv_bin,
            etcd_bin,
            only,
            node_args,
            json,
            svg,
        }) => {
            let config = bank::peers::PeersConfig {
                seconds,
                clients,
                kv_bin: match kv_bin {
                    Some(path) => path,
                    None => std::env::current_exe()?.with_file_name("kv"),
                },
                etcd_bin,
                systems: if only.is_empty() {
                    <bank::peers::System as clap::ValueEnum>::value_variants().to_vec()
                } else {
                    only
                },
                node_args,
            };
            return run_peers(config, json, svg).await;
        }
        None => {}
    }
    if args.clients == 0 {
        return Err(CliError::Usage("--clients must be at least 1".into()));
    }
    let stop = match (args.duration, args.ops) {
        (Some(s), _) if s > 0.0 && s.is_finite() => {
            Stop::Duration(std::time::Duration::from_secs_f64(s))
        }
        (Some(_), _) => {
            return Err(CliError::Usage(
                "--duration must be a positive number of seconds".into(),
            ));
        }
        (None, Some(n)) => Stop::Ops(n),
        (None, None) => Stop::Duration(std::time::Duration::from_secs(10)),
    };
    if args.watchers > 0 && args.variant != Variant::Raft {
        return Err(CliError::Usage("--watchers is for --variant raft".into()));
    }
    if args.auth && (args.variant != Variant::Raft || args.connect.is_some()) {
        return Err(CliError::Usage(
            "--auth is for a raft cluster started by the run (--variant raft, no --connect)".into(),
        ));
    }
    if args.latency_ms.is_some() && (args.variant != Variant::Raft || args.connect.is_some()) {
        return Err(CliError::Usage(
            "--latency-ms is for a raft cluster started by the run (--variant raft, no --connect)"
                .into(),
        ));
    }
    let target = Target {
        variant: args.variant,
        connect: args.connect.clone(),
        link_delay: args.latency_ms.map(std::time::Duration::from_millis),
        watchers: args.watchers,
        auth: args.auth,
    };
    let report = bench::run_target(&target, args.clients, args.workload, stop, progress)
        .await
        .map_err(|e| CliError::Usage(e.to_string()))?;
    if let Some(path) = &args.json {
        write_json(path, &report)?;
    }
    Ok(bench::render(&report))
}

async fn run_peers(
    config: bank::peers::PeersConfig,
    json: Option<PathBuf>,
    svg: Option<PathBuf>,
) -> Result<String, CliError> {
    use bank::peers;
    if config.clients == 0 {
        return Err(CliError::Usage("--clients must be at least 1".into()));
    }
    if !(config.seconds > 0.0 && config.seconds.is_finite()) {
        return Err(CliError::Usage(
            "--seconds must be a positive number".into(),
        ));
    }
    let report = peers::run(&config)
        .await
        .map_err(|e| CliError::Usage(e.to_string()))?;
    if let Some(path) = &json {
        write_json(path, &report)?;
    }
    if let Some(path) = &svg {
        std::fs::write(path, peers::svg(&report)).map_err(CliError::Runtime)?;
    }
    Ok(peers::render(&report))
}

fn write_json<T: serde::Serialize>(path: &PathBuf, value: &T) -> Result<(), CliError> {
    let text = serde_json::to_string_pretty(value).map_err(|e| CliError::Usage(e.to_string()))?;
    std::fs::write(path, text).map_err(CliError::Runtime)
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
