//! The node host: one node of a replicated service with its listeners. It binds the raft
//! listener and the API listeners, opens the node's storage, serves raft traffic and the API,
//! initializes or joins a cluster, and shuts down gracefully. [`NodeArgs`] is the command line
//! of a node binary and [`run`] the whole of its `main`; what depends on the schema comes from
//! a [`HostedService`], which generated code implements.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::api::server::{Listener, bind};
use crate::net::tls::TlsArgs;
use crate::raft::node::{NodeConfig, NodeError, RaftNode};
use crate::raft::rpc::RaftCredentials;
use crate::raft::state_machine::Application;
use crate::raft::types::{NodeAddr, NodeId};
use crate::wire::call::ReadLevel;

/// The environment variable a node reads its cluster secret from when `--secret` is not given.
pub const SECRET_ENV: &str = "RAFT_SECRET";

/// An API protocol a node can serve.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Protocol {
    /// gRPC (tonic), with health and reflection.
    Grpc,
    /// JSON-RPC 2.0 over HTTP.
    JsonRpc,
}

impl Protocol {
    /// The protocol's name in addresses and redirects: `grpc` or `jsonrpc`.
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Grpc => "grpc",
            Protocol::JsonRpc => "jsonrpc",
        }
    }
}

/// Resolves when the node is asked to stop.
pub type Shutdown = Pin<Box<dyn Future<Output = ()> + Send>>;

/// A server task: what serving one protocol returns.
pub type Serving = Pin<Box<dyn Future<Output = Result<(), String>> + Send>>;

/// A generated service as the host runs it: the application the state machine applies and the
/// servers of its API over a node.
pub trait HostedService: Send + Sync + 'static {
    /// The service's name (the cluster's name in openraft's logs).
    fn name(&self) -> &'static str;
    /// The application the node's state machine applies.
    fn application(&self) -> Arc<dyn Application>;
    /// Serves the replicated API of `node` over `protocol` on `listener` (with TLS when the
    /// listener has it), queries at `level`
    /// unless a call asks for another, until `shutdown` resolves.
    fn serve(
        &self,
        protocol: Protocol,
        listener: Listener,
        node: Arc<RaftNode>,
        level: ReadLevel,
        shutdown: Shutdown,
    ) -> Serving;
}

/// Why a node could not start or answer.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    /// A listener could not be bound.
    #[error(transparent)]
    Bind(#[from] crate::api::server::BindError),
    /// The node failed.
    #[error("node: {0}")]
    Node(#[from] NodeError),
    /// The configuration is unusable.
    #[error("configuration: {0}")]
    Config(String),
    /// TLS material could not be read or used.
    #[error(transparent)]
    Tls(#[from] crate::net::tls::TlsError),
    /// A node process misbehaved.
    #[error("node process: {0}")]
    Process(String),
    /// An admin request failed.
    #[error("admin: {0}")]
    Admin(String),
    /// A condition was not reached in time.
    #[error("timed out waiting for {0}")]
    Timeout(String),
}

/// The command line of a node (`<binary> node ...`). A later flag overrides an earlier one, so
/// flags after `--config FILE` override the file's ([`crate::ops::config::expand`]).
#[derive(Debug, Clone, clap::Args)]
#[command(args_override_self = true)]
pub struct NodeArgs {
    /// A TOML file of flags (keys are flag names: `data_dir = "n1"`); flags given here
    /// override it. The binary's `main` reads it (`runtime::ops::config::expand`).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// The node's id (unique in the cluster, never reused).
    #[arg(long)]
    pub id: NodeId,
    /// Where the node keeps its log, database and snapshots.
    #[arg(long, value_name = "DIR")]
    pub data_dir: PathBuf,
    /// gRPC API listen address (port 0 picks a free port).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:0")]
    pub listen: String,
    /// JSON-RPC API listen address.
    #[arg(long, value_name = "ADDR")]
    pub jsonrpc_listen: Option<String>,
    /// Metrics listen address: Prometheus text on `/metrics`, `/health` and `/ready` (see
    /// `runtime::raft::metrics`); none without it.
    #[arg(long, value_name = "ADDR")]
    pub metrics_listen: Option<String>,
    /// Raft listen address (raft traffic, forwarded writes, admin; never the API address).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:0")]
    pub raft_listen: String,
    /// The cluster's shared secret (default: $RAFT_SECRET).
    #[arg(long, env = SECRET_ENV, hide_env_values = true)]
    pub secret: String,
    /// Start a new cluster with this node as its only member.
    #[arg(long, conflicts_with = "join")]
    pub init: bool,
    /// Start the new cluster (with `--init`) from a backup (`admin backup --out FILE`): its
    /// state, without the old cluster's membership and request records. The data directory
    /// must be empty.
    #[arg(long, value_name = "FILE", requires = "init")]
    pub restore: Option<PathBuf>,
    /// Join the cluster through this node's raft address.
    #[arg(long, value_name = "ADDR")]
    pub join: Option<String>,
    /// The read level of queries that do not ask for one: `linearizable` (a read index),
    /// `lease` (the leader's lease; assumes clocks advance at about the same rate) or `stale`
    /// (the local replica as it is).
    #[arg(long, default_value = "linearizable", value_parser = parse_read_level)]
    pub read_level: ReadLevel,
    /// Build a snapshot after this many log entries.
    #[arg(long, default_value_t = 10_000)]
    pub snapshot_every: u64,
    /// Log entries kept behind a snapshot.
    #[arg(long, default_value_t = 1_000)]
    pub keep_logs: u64,
    /// The disk space the node's raft state (log, database, snapshots) may take, in bytes or
    /// with a unit (`512MiB`, `8GiB`); 0 for no quota. At or past it the node raises its
    /// `NOSPACE` alarm (`admin status`, `raft_nospace_alarm`): writes are refused (`NoSpace`:
    /// gRPC `RESOURCE_EXHAUSTED`, JSON-RPC -32053) and reads and watches go on; the node
    /// compacts (a snapshot, then the log behind it is purged) and the alarm clears by itself
    /// once the state is under the quota again.
    #[arg(long, value_name = "BYTES", default_value = "8GiB", value_parser = crate::util::parse_bytes)]
    pub quota_bytes: u64,
    /// The size of a raft log segment file, in bytes or with a unit (from 64KiB to 1GiB):
    /// segments are preallocated, and purged whole.
    #[arg(long, value_name = "BYTES", default_value = "16MiB", value_parser = parse_bounded_bytes)]
    pub log_segment_bytes: u64,
    /// Seconds an API connection (gRPC, JSON-RPC, metrics) may stay idle (no byte either way,
    /// a TLS handshake included) before it is closed. gRPC clients that keep a connection
    /// send keep-alive pings.
    #[arg(long, value_name = "SECONDS", default_value_t = 120,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub idle_timeout_secs: u64,
    /// The largest serialized command a write may carry, in bytes (at most 64 MiB): a larger
    /// one is refused (`Rejected`: gRPC `INVALID_ARGUMENT`, JSON-RPC -32602) before it enters
    /// the log. The API listeners' own request limits (4 MiB for gRPC) apply first.
    #[arg(long, value_name = "BYTES", default_value_t = crate::raft::node::DEFAULT_MAX_COMMAND_BYTES,
          value_parser = parse_command_bytes)]
    pub max_command_bytes: usize,
    /// On a follower, answer writes with the leader's address (clients follow it) instead of
    /// forwarding them to the leader.
    #[arg(long)]
    pub redirect_writes: bool,
    /// API calls need a token (`x-token`, from `admin token issue`) of a user whose roles the
    /// operation's `allow` names (`admin` may call everything): without one, `Unauthenticated`;
    /// without the role, `PermissionDenied`. The change feed is not covered yet.
    #[arg(long)]
    pub auth: bool,
    /// With `--auth` and no TLS, let the API listen on an address other than loopback (tokens
    /// then cross the network in clear text).
    #[arg(long, requires = "auth")]
    pub allow_plaintext_tokens: bool,
    /// Applied entries whose events the change feed keeps for watchers that resume or start
    /// in the past (a watcher asking for older ones gets `Compacted`). 0 turns the feed off
    /// and with it its cost on the write path (one row per command).
    #[arg(long, value_name = "ENTRIES", default_value_t = crate::raft::feed::DEFAULT_RETAIN)]
    pub watch_retain: u64,
    /// How long a watcher that reads nothing is waited for, with its buffer full, before it is
    /// cut off (`TooSlow`), in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 30_000,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub watch_stall_ms: u64,
    /// The most watchers the node serves at once; one more is refused (`too_many`: gRPC
    /// `RESOURCE_EXHAUSTED`, JSON-RPC -32006), counted in `admin status` and `/metrics`.
    #[arg(long, value_name = "WATCHERS", default_value_t = crate::raft::feed::DEFAULT_MAX_WATCHERS,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=1_000_000))]
    pub max_watchers: usize,
    /// The bytes of events one watcher holds for a consumer that has not read them, in bytes
    /// or with a unit (64KiB to 1GiB); an event larger than this is held alone.
    #[arg(long, value_name = "BYTES", default_value = "1MiB", value_parser = parse_bounded_bytes)]
    pub watch_buffer_bytes: u64,
    /// The most streams one API connection may have open at once: concurrent gRPC calls and
    /// watches (HTTP/2), JSON-RPC subscriptions on one WebSocket (one more is refused with
    /// -32006).
    #[arg(long, value_name = "STREAMS", default_value_t = crate::net::conn::DEFAULT_STREAMS,
          value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub max_streams_per_connection: u32,
    /// At most this many applied entries share one commit of the state database (1: a
    /// commit per applied batch). Replies do not wait for the commit; reads that need an
    /// entry make it commit at once.
    #[arg(long, value_name = "ENTRIES",
          default_value_t = crate::raft::state_machine::COMMIT_EVERY_ENTRIES as u64,
          value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub commit_entries: u64,
    /// At most this long from an applied batch to its commit of the state database, in
    /// milliseconds.
    #[arg(long, value_name = "MS", default_value_t = crate::raft::state_machine::COMMIT_WITHIN_MS,
          value_parser = clap::value_parser!(u64).range(0..=1_000))]
    pub commit_within_ms: u64,
    /// Leader heartbeat interval, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = crate::raft::node::DEFAULT_HEARTBEAT_MS)]
    pub heartbeat_ms: u64,
    /// Election timeout range, in milliseconds (`MIN-MAX`): a follower that hears no leader for
    /// a random time in it campaigns (after a pre-vote), and a leader's lease is `MAX`. The
    /// defaults (300-600, a new leader about a second after the old one stops) suit a LAN, even
    /// a loaded one; across zones, raise both with the round trip.
    #[arg(long, value_name = "MIN-MAX", default_value = DEFAULT_ELECTION_RANGE, value_parser = parse_range_ms)]
    pub election_timeout_ms: (u64, u64),
    /// The host other nodes and clients reach this node at, when it is not the one it listens
    /// on (a node listening on 0.0.0.0, or behind NAT): every listener is advertised on this
    /// host with its bound port.
    #[arg(long, value_name = "HOST")]
    pub advertise_host: Option<String>,
    /// The raft address other nodes reach this node at, when it differs from the listener's
    /// (a proxy, a port forward); overrides `--advertise-host` for raft traffic.
    #[arg(long, value_name = "ADDR")]
    pub advertise_raft: Option<String>,
    /// How the node writes its logs to stderr: `text`, or `json` (one object per line, with
    /// the request span's fields). `RUST_LOG` filters either (default `warn`).
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// TLS on every listener (mutual TLS between nodes).
    #[command(flatten)]
    pub tls: TlsArgs,
    /// Threads of the node's async runtime: 1 runs everything on one thread (the least
    /// hand-offs; SQLite work has threads of its own), more makes a work-stealing pool.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub worker_threads: u16,
}

/// How a process writes its logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines (coloured on a terminal).
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// Installs the process's log subscriber on stderr: `RUST_LOG` filters (default `warn`), in
/// `format`, with repeated lines rate-limited ([`crate::ops::log_limit`]). The first call wins.
pub fn init_logging(format: LogFormat) {
    use std::io::IsTerminal;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let lines = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let subscriber = tracing_subscriber::registry()
        .with(filter)
        .with(crate::ops::log_limit::RepeatLimit::default());
    let installed = match format {
        LogFormat::Text => subscriber
            .with(lines.with_ansi(std::io::stderr().is_terminal()))
            .try_init(),
        LogFormat::Json => subscriber.with(lines.json()).try_init(),
    };
    drop(installed);
}

/// Builds the async runtime `args` ask for and runs the node on it until SIGINT or SIGTERM:
/// the whole `main` of a node binary ([`run`] on a runtime of the right shape).
pub fn run_blocking(args: NodeArgs, service: &dyn HostedService) -> Result<(), HostError> {
    keep_freed_memory();
    let built = if args.worker_threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(usize::from(args.worker_threads))
            .enable_all()
            .build()
    };
    let runtime = built.map_err(|e| HostError::Config(format!("cannot start a runtime: {e}")))?;
    let result = runtime.block_on(run(args, service));
    // Tasks still running (a peer's open stream, a blocking call) do not hold the exit.
    runtime.shutdown_timeout(Duration::from_secs(1));
    result
}

/// How much free memory at the top of a glibc arena a node keeps instead of returning it to
/// the kernel: 64 MiB (glibc's default is 128 KiB).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const MALLOC_TRIM_THRESHOLD: libc::c_int = 64 << 20;

/// Stops glibc from handing freed memory back to the kernel after every apply batch. With its
/// default threshold, the state machine's thread trimmed its arena with `madvise` and grew it
/// again with the next batch: a third of apply's CPU on a leader under 64 writers
/// (`perf record -p <leader>` under 64 writers of the kv example: `__madvise` 7.6 % and
/// `sysmalloc` 4.9 % of the node's samples, none with this). The node's resident memory stays
/// at its peak instead of shrinking between batches.
fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: `mallopt` only sets a parameter of the allocator; any value is accepted.
    unsafe {
        libc::mallopt(libc::M_TRIM_THRESHOLD, MALLOC_TRIM_THRESHOLD);
    }
}

/// How long a stopping node lets its listeners drain. A follower's raft listener never drains by
/// itself: the leader keeps its replication stream open.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// `--max-command-bytes`: a byte count between 1 and the node's hard limit.
fn parse_command_bytes(s: &str) -> Result<usize, String> {
    let limit = crate::raft::node::MAX_COMMAND_BYTES_LIMIT;
    match s.parse::<usize>() {
        Ok(n) if (1..=limit).contains(&n) => Ok(n),
        _ => Err(format!("expected a number of bytes from 1 to {limit}")),
    }
}

/// A size (`--log-segment-bytes`, `--watch-buffer-bytes`) from 64 KiB to 1 GiB.
fn parse_bounded_bytes(s: &str) -> Result<u64, String> {
    match crate::util::parse_bytes(s)? {
        n if ((64 << 10)..=(1 << 30)).contains(&n) => Ok(n),
        n => Err(format!("{n} bytes: expected from 64KiB to 1GiB")),
    }
}

/// [`crate::raft::node::DEFAULT_ELECTION_TIMEOUT_MS`] as `--election-timeout-ms` takes it.
const DEFAULT_ELECTION_RANGE: &str = "300-600";

/// Parses `--election-timeout-ms` (`MIN-MAX`).
fn parse_range_ms(text: &str) -> Result<(u64, u64), String> {
    let bad = || format!("`{text}`: expected MIN-MAX in milliseconds, such as 300-600");
    let (min, max) = text.split_once('-').ok_or_else(bad)?;
    let (min, max) = (
        min.trim().parse().map_err(|_| bad())?,
        max.trim().parse().map_err(|_| bad())?,
    );
    if min == 0 || min >= max {
        return Err(format!("`{text}`: MIN must be above 0 and below MAX"));
    }
    Ok((min, max))
}

/// The shortest raft secret a node accepts.
pub const MIN_SECRET_LEN: usize = 16;

/// Parses `--read-level`.
fn parse_read_level(text: &str) -> Result<ReadLevel, String> {
    ReadLevel::parse(text).ok_or_else(|| format!("`{text}`: expected linearizable, lease or stale"))
}

/// A running node with its listeners.
pub struct RunningNode {
    /// The node.
    pub node: Arc<RaftNode>,
    /// The API listeners' addresses.
    pub api: Vec<(Protocol, SocketAddr)>,
    /// The raft listener's address.
    pub raft: SocketAddr,
    /// The metrics listener's address, if the node has one.
    pub metrics: Option<SocketAddr>,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    /// Held while the node runs: no other node or `repair-log` uses its data directory.
    _lock: crate::raft::files::DataDirLock,
}

/// Starts a node: binds its listeners, opens its storage, serves raft and the API, then
/// initializes or joins a cluster as `args` say.
pub async fn start(args: NodeArgs, service: &dyn HostedService) -> Result<RunningNode, HostError> {
    if args.secret.len() < MIN_SECRET_LEN {
        return Err(HostError::Config(format!(
            "the raft secret must be at least {MIN_SECRET_LEN} bytes (anyone who has it can \
             change the membership)"
        )));
    }
    let credentials = RaftCredentials {
        secret: args.secret.clone(),
        tls: args.tls.load()?,
    };
    let lock = crate::raft::files::DataDirLock::acquire(&args.data_dir)
        .map_err(|e| HostError::Config(e.to_string()))?;
    // Connections are bounded by the open-file limit: raise it as far as allowed, and size
    // the listeners' pools from it.
    let mut caps = crate::net::conn::Caps::for_nofile(
        crate::net::conn::raise_nofile_limit(),
        Duration::from_secs(args.idle_timeout_secs),
    );
    caps.api.streams = args.max_streams_per_connection;
    let (raft_listener, raft_addr) = bind(&args.raft_listen).await?;
    let mut listeners = vec![(Protocol::Grpc, bind(&args.listen).await?)];
    if let Some(addr) = &args.jsonrpc_listen {
        listeners.push((Protocol::JsonRpc, bind(addr).await?));
    }
    // A token in clear text is a password on the wire: with --auth and no TLS, the API listens
    // only on loopback unless the operator says otherwise.
    if args.auth
        && credentials.tls.is_none()
        && !args.allow_plaintext_tokens
        && let Some((_, (_, addr))) = listeners.iter().find(|(_, (_, a))| !a.ip().is_loopback())
    {
        return Err(HostError::Config(format!(
            "--auth without TLS on {addr}: tokens would cross the network in clear text; add \
             --tls-ca/--tls-cert/--tls-key, listen on 127.0.0.1, or pass --allow-plaintext-tokens"
        )));
    }
    let metrics_listener = match &args.metrics_listen {
        Some(addr) => Some(bind(addr).await?),
        None => None,
    };
    if let Some(backup) = &args.restore {
        crate::raft::state_machine::StateMachine::restore(backup, &args.data_dir)
            .map_err(|e| HostError::Config(format!("--restore {}: {e}", backup.display())))?;
    }
    let api_tls = credentials.tls.clone();
    let mut config = NodeConfig::new(args.id, args.data_dir.clone(), credentials.clone());
    config.snapshot_every = args.snapshot_every;
    config.keep_logs = args.keep_logs;
    config.quota_bytes = (args.quota_bytes > 0).then_some(args.quota_bytes);
    config.log_segment_bytes = args.log_segment_bytes;
    config.max_command_bytes = args.max_command_bytes;
    config.redirect_writes = args.redirect_writes;
    config.auth = args.auth;
    config.feed.retain = args.watch_retain;
    config.feed.stall = Duration::from_millis(args.watch_stall_ms);
    config.feed.max_watchers = args.max_watchers;
    // At most 1 GiB (the flag's range).
    config.feed.buffer_bytes = args.watch_buffer_bytes as usize;
    config.commit = crate::raft::state_machine::CommitPolicy {
        // At most 100,000 (the flag's range).
        entries: args.commit_entries as usize,
        within: Duration::from_millis(args.commit_within_ms),
    };
    config.cluster_name = service.name().to_string();
    config.heartbeat = Duration::from_millis(args.heartbeat_ms);
    config.election_timeout = (
        Duration::from_millis(args.election_timeout_ms.0),
        Duration::from_millis(args.election_timeout_ms.1),
    );
    let advertised = |bound: SocketAddr| match &args.advertise_host {
        Some(host) => format!("{host}:{}", bound.port()),
        None => bound.to_string(),
    };
    let addr = NodeAddr {
        raft: args
            .advertise_raft
            .clone()
            .unwrap_or_else(|| advertised(raft_addr)),
        api: listeners
            .iter()
            .map(|(p, (_, a))| (p.name().to_string(), advertised(*a)))
            .collect(),
    };
    let node = RaftNode::start(config, addr, service.application()).await?;
    let (stop, stopped) = watch::channel(false);
    let until_stopped = move || -> Shutdown {
        let mut rx = stopped.clone();
        Box::pin(async move {
            let _ = rx.wait_for(|s| *s).await;
        })
    };
    let mut tasks = Vec::new();
    let raft_node = node.clone();
    let shutdown = until_stopped();
    tasks.push(tokio::spawn(async move {
        let served = crate::raft::rpc::serve_raft(
            raft_listener,
            caps.raft.clone(),
            raft_node,
            credentials,
            crate::raft::network::MAX_MESSAGE,
            shutdown,
        );
        if let Err(e) = served.await {
            tracing::error!(error = %e, "raft service stopped");
        }
    }));
    let metrics = metrics_listener.as_ref().map(|(_, a)| *a);
    if let Some((listener, _)) = metrics_listener {
        let served =
            crate::ops::health::serve(listener, caps.api.clone(), node.clone(), until_stopped());
        tasks.push(tokio::spawn(async move {
            if let Err(e) = served.await {
                tracing::error!(error = %e, "metrics listener stopped");
            }
        }));
    }
    let level = args.read_level;
    let mut api = Vec::new();
    for (protocol, (listener, local)) in listeners {
        api.push((protocol, local));
        let listener = Listener {
            tcp: listener,
            tls: api_tls.clone(),
            pool: caps.api.clone(),
        };
        let serving = service.serve(protocol, listener, node.clone(), level, until_stopped());
        tasks.push(tokio::spawn(async move {
            if let Err(e) = serving.await {
                tracing::error!(error = %e, protocol = protocol.name(), "API server stopped");
            }
        }));
    }
    let running = RunningNode {
        node,
        api,
        raft: raft_addr,
        metrics,
        stop,
        tasks,
        _lock: lock,
    };
    let joined = if args.init {
        running.node.init_cluster().await
    } else if let Some(seed) = &args.join {
        running.node.join(seed).await
    } else {
        Ok(())
    };
    match joined {
        Ok(()) => Ok(running),
        Err(e) => {
            running.shutdown().await;
            Err(e.into())
        }
    }
}

impl RunningNode {
    /// The address of the API listener for `protocol`, if the node serves it.
    pub fn api(&self, protocol: Protocol) -> Option<SocketAddr> {
        self.api
            .iter()
            .find_map(|(p, a)| (*p == protocol).then_some(*a))
    }

    /// The line a node binary prints once it serves (what [`crate::ops::cluster::LocalCluster`]
    /// parses): `node ID api=ADDR jsonrpc=ADDR|- raft=ADDR metrics=ADDR|-`.
    pub fn ready_line(&self) -> String {
        let addr = |p| {
            self.api(p)
                .map_or_else(|| "-".to_string(), |a| a.to_string())
        };
        format!(
            "node {} api={} jsonrpc={} raft={} metrics={}",
            self.node.id(),
            addr(Protocol::Grpc),
            addr(Protocol::JsonRpc),
            self.raft,
            self.metrics
                .map_or_else(|| "-".to_string(), |a| a.to_string())
        )
    }

    /// Stops serving and shuts raft down.
    pub async fn shutdown(self) {
        // Watch streams never end by themselves: end them, or the servers would not drain.
        self.node.state_machine().close_feed();
        let _ = self.stop.send(true);
        for task in self.tasks {
            let _ = task.await;
        }
        self.node.shutdown().await;
    }
}

/// Runs one node until SIGINT or SIGTERM: starts it, prints its ready line on stdout, then
/// shuts it down gracefully. The whole `node` subcommand of a service binary.
pub async fn run(args: NodeArgs, service: &dyn HostedService) -> Result<(), HostError> {
    let running = start(args, service).await?;
    println!("{}", running.ready_line());
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| HostError::Config(format!("cannot watch SIGTERM: {e}")))?;
    let fatal = tokio::select! {
        _ = tokio::signal::ctrl_c() => None,
        _ = terminate.recv() => None,
        fatal = running.node.fatal() => Some(fatal),
    };
    if tokio::time::timeout(SHUTDOWN_GRACE, running.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("the listeners did not drain within {SHUTDOWN_GRACE:?}; stopping anyway");
    }
    match fatal {
        // Crash-only: a node whose storage failed stops, so a supervisor restarts it from what
        // is durable instead of it serving errors.
        Some(fatal) => Err(HostError::Node(NodeError::Raft(format!(
            "stopped: {fatal}"
        )))),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_flag_default_is_the_config_default() {
        assert_eq!(
            parse_range_ms(DEFAULT_ELECTION_RANGE),
            Ok(crate::raft::node::DEFAULT_ELECTION_TIMEOUT_MS)
        );
        assert!(parse_range_ms("600-300").is_err());
        assert!(parse_range_ms("0-300").is_err());
    }

    #[test]
    fn commit_flags_outside_their_range_are_refused() {
        #[derive(clap::Parser)]
        struct Node {
            #[command(flatten)]
            args: NodeArgs,
        }
        let parse = |extra: &[&str]| {
            let base = [
                "node",
                "--id",
                "1",
                "--data-dir",
                "/tmp/n1",
                "--secret",
                "s",
            ];
            <Node as clap::Parser>::try_parse_from(base.iter().chain(extra)).map(|n| n.args)
        };
        let defaults = parse(&[]).expect("defaults");
        assert_eq!(
            defaults.commit_entries,
            crate::raft::state_machine::COMMIT_EVERY_ENTRIES as u64
        );
        assert_eq!(
            parse(&["--commit-entries", "1"]).expect("1").commit_entries,
            1
        );
        for bad in [
            ["--commit-entries", "0"],
            ["--commit-entries", "100001"],
            ["--commit-within-ms", "1001"],
        ] {
            assert!(parse(&bad).is_err(), "{bad:?} accepted");
        }
    }
}
