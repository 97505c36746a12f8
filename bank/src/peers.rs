//! `bank bench peers`: etcd, the `kv` example and the bank, each a 3-member durable cluster on
//! 127.0.0.1, measured one after the other in one run by the same load generator.
//!
//! Every system gets the same phases, with every client connected to the leader:
//!
//! 1. a short warm-up (not measured);
//! 2. `write_1`: one client writing, one request at a time (latency);
//! 3. `write_64`: 64 clients writing at once (throughput, tail latency, and the CPU time the
//!    three member processes used, from `/proc/<pid>/stat`);
//! 4. `read_64`: 64 clients reading at once, linearizably.
//!
//! Writes are 100-byte values under per-client keys for etcd and `kv` (etcd `Put`, kv `put`);
//! for the bank, the deposit / withdraw / transfer mix of `bank bench --workload writes`. Reads
//! are etcd `Range` (linearizable, its default), kv `get` and bank `get_accounts` (both at the
//! default read level, linearizable).
//!
//! etcd is driven over its v3 gRPC API with tonic, like our own clients. The `etcd-client` crate
//! would compile etcd's protos at build time and so needs `protoc` on every machine that builds
//! the bank; the three calls used here are declared below instead ([`etcd`]).

use std::collections::BTreeMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bank_generated::BankApi;
use hdrhistogram::Histogram;
use kv_generated::KvApi;
use rust_decimal::Decimal;
use serde::Serialize;

use crate::bench::new_histogram;
use crate::cdf::Cdf;

/// Settings of a run.
#[derive(Debug, Clone)]
pub struct PeersConfig {
    /// Seconds per measured phase.
    pub seconds: f64,
    /// Concurrent clients in the 64-client phases.
    pub clients: usize,
    /// The `kv` binary.
    pub kv_bin: PathBuf,
    /// The `etcd` binary.
    pub etcd_bin: PathBuf,
    /// Which systems to measure (all three by default).
    pub systems: Vec<System>,
    /// Extra arguments for every kv and bank node (e.g. `--worker-threads=2`).
    pub node_args: Vec<String>,
}

/// One of the measured systems.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum System {
    /// etcd, from the `etcd` binary.
    Etcd,
    /// The toolkit's key-value example.
    Kv,
    /// The bank.
    Bank,
}

impl System {
    fn name(self) -> &'static str {
        match self {
            System::Etcd => "etcd",
            System::Kv => "kv",
            System::Bank => "bank",
        }
    }
}

/// One system's figures (the keys of `--json`).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Figures {
    /// One client: median write latency, µs.
    pub write_1_p50_us: u64,
    /// One client: 99th percentile write latency, µs.
    pub write_1_p99_us: u64,
    /// 64 clients: writes per second.
    pub write_64_ops_per_sec: f64,
    /// 64 clients: 99th percentile write latency, µs.
    pub write_64_p99_us: u64,
    /// 64 clients: linearizable reads per second.
    pub read_64_ops_per_sec: f64,
    /// CPU time of the member processes (user + system, summed) per 1,000 writes of the
    /// 64-client phase, ms.
    pub cpu_ms_per_1000_writes: f64,
    /// Context switches of the member processes' threads (voluntary and not, summed) per
    /// write of the 64-client phase: how often a write's work is handed from one thread to
    /// another and the CPU changes hands.
    pub switches_per_write: f64,
    /// Calls that failed in any phase (0 in a sound run).
    pub errors: u64,
    /// The latency distribution of each phase: 1-client writes, 64-client writes, 64-client
    /// linearizable reads.
    pub cdf: [Cdf; 3],
}

/// The phases whose distributions [`Figures::cdf`] holds, in its order.
pub const PHASES: [&str; 3] = [
    "1-client writes",
    "64-client writes",
    "64-client lin. reads",
];

/// The result of a run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PeersReport {
    /// Each measured system's figures, under its name (`etcd`, `kv`, `bank`).
    #[serde(flatten)]
    pub systems: BTreeMap<System, Figures>,
    /// `/proc/loadavg` before the run.
    pub load_before: String,
    /// `/proc/loadavg` after the run.
    pub load_after: String,
    /// Seconds per measured phase.
    pub seconds_per_phase: f64,
    /// Clients in the concurrent phases.
    pub clients: usize,
    /// The first few error messages, if any.
    pub sample_errors: Vec<String>,
}

/// Why the benchmark could not run.
#[derive(Debug, thiserror::Error)]
pub enum PeersError {
    /// The etcd binary is missing.
    #[error(
        "cannot run `{0}`: install etcd (Debian: `apt-get install etcd-server`) or pass --etcd-bin"
    )]
    NoEtcd(String),
    /// The kv binary is missing.
    #[error(
        "no kv binary at {0}: build it next to bank (`cargo build --release -p bank -p kv`) or pass --kv-bin"
    )]
    NoKv(String),
    /// Starting or talking to a cluster failed.
    #[error("{system}: {message}")]
    Setup {
        /// Which system.
        system: &'static str,
        /// What went wrong.
        message: String,
    },
}

fn setup(system: System) -> impl Fn(String) -> PeersError {
    move |message| PeersError::Setup {
        system: system.name(),
        message,
    }
}

/// What a load generator client does; one value per client.
trait Load: Send + Sync + 'static {
    /// The `i`-th write of this client.
    fn write(&self, i: u64) -> impl Future<Output = Result<(), String>> + Send;
    /// The `i`-th read of this client.
    fn read(&self, i: u64) -> impl Future<Output = Result<(), String>> + Send;
}

/// What one phase measured.
struct Phase {
    hist: Histogram<u64>,
    seconds: f64,
    errors: u64,
    sample_errors: Vec<String>,
}

impl Phase {
    fn ops_per_sec(&self) -> f64 {
        self.hist.len() as f64 / self.seconds.max(1e-9)
    }
}

/// Runs every client for `length`, writes or reads, and merges what they measured.
async fn phase<L: Load>(clients: &[Arc<L>], length: Duration, writes: bool) -> Phase {
    let started = Instant::now();
    let deadline = started + length;
    let tasks: Vec<_> = clients
        .iter()
        .cloned()
        .map(|client| {
            tokio::spawn(async move {
                let mut hist = new_histogram();
                let mut errors = Vec::new();
                let mut failed = 0u64;
                let mut i = 0u64;
                while Instant::now() < deadline {
                    let start = Instant::now();
                    let result = if writes {
                        client.write(i).await
                    } else {
                        client.read(i).await
                    };
                    match result {
                        Ok(()) => {
                            let _ = hist.record(start.elapsed().as_micros().max(1) as u64);
                        }
                        Err(e) => {
                            failed += 1;
                            if errors.len() < 3 {
                                errors.push(e);
                            }
                        }
                    }
                    i += 1;
                }
                (hist, failed, errors)
            })
        })
        .collect();
    let mut out = Phase {
        hist: new_histogram(),
        seconds: 0.0,
        errors: 0,
        sample_errors: Vec::new(),
    };
    for task in tasks {
        match task.await {
            Ok((hist, failed, errors)) => {
                let _ = out.hist.add(hist);
                out.errors += failed;
                out.sample_errors.extend(errors);
            }
            Err(e) => {
                out.errors += 1;
                out.sample_errors.push(format!("client task: {e}"));
            }
        }
    }
    out.seconds = started.elapsed().as_secs_f64();
    out.sample_errors.truncate(5);
    out
}

/// CPU time (user + system) a process has used so far, ms. Linux reports it in USER_HZ ticks,
/// 100 per second on every architecture's user ABI.
fn cpu_ms(pid: u32) -> Result<f64, String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map_err(|e| format!("reading /proc/{pid}/stat: {e}"))?;
    // The command name (field 2) may contain spaces: count fields after its closing paren.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .ok_or_else(|| format!("/proc/{pid}/stat: unexpected format"))?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the paren: state is field 3, so utime (14) and stime (15) are at 11 and 12.
    let tick = |i: usize| -> Result<f64, String> {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .map(|t| t as f64 * 10.0)
            .ok_or_else(|| format!("/proc/{pid}/stat: no field {}", i + 3))
    };
    Ok(tick(11)? + tick(12)?)
}

/// Context switches so far of every thread of process `pid` (voluntary and involuntary).
fn switches(pid: u32) -> Result<u64, String> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task"))
        .map_err(|e| format!("reading /proc/{pid}/task: {e}"))?;
    let mut total = 0;
    for task in tasks.flatten() {
        // A thread that exits meanwhile takes its count with it.
        let Ok(status) = std::fs::read_to_string(task.path().join("status")) else {
            continue;
        };
        total += status
            .lines()
            .filter(|l| l.contains("ctxt_switches:"))
            .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
            .sum::<u64>();
    }
    Ok(total)
}

/// Context switches of all `pids` together.
fn switches_total(pids: &[u32]) -> Result<u64, String> {
    pids.iter().map(|&pid| switches(pid)).sum()
}

/// CPU ms of all `pids` together.
fn cpu_total(pids: &[u32]) -> Result<f64, String> {
    pids.iter().map(|&pid| cpu_ms(pid)).sum()
}

/// Runs the four phases against one system's clients.
async fn measure<L: Load>(
    clients: Vec<Arc<L>>,
    pids: &[u32],
    seconds: f64,
    samples: &mut Vec<String>,
) -> Result<Figures, String> {
    let length = Duration::from_secs_f64(seconds);
    let one = &clients[..1];
    let _warm = phase(&clients, Duration::from_secs(1), true).await;
    let write_1 = phase(one, length, true).await;
    let (cpu_before, switches_before) = (cpu_total(pids)?, switches_total(pids)?);
    let write_64 = phase(&clients, length, true).await;
    let cpu_used = cpu_total(pids)? - cpu_before;
    let switched = switches_total(pids)?.saturating_sub(switches_before);
    let read_64 = phase(&clients, length, false).await;
    let mut errors = 0;
    for p in [&write_1, &write_64, &read_64] {
        errors += p.errors;
        samples.extend(p.sample_errors.iter().cloned());
    }
    samples.truncate(5);
    let writes = write_64.hist.len().max(1) as f64;
    Ok(Figures {
        write_1_p50_us: write_1.hist.value_at_quantile(0.5),
        write_1_p99_us: write_1.hist.value_at_quantile(0.99),
        write_64_ops_per_sec: write_64.ops_per_sec(),
        write_64_p99_us: write_64.hist.value_at_quantile(0.99),
        read_64_ops_per_sec: read_64.ops_per_sec(),
        cpu_ms_per_1000_writes: cpu_used / writes * 1000.0,
        switches_per_write: switched as f64 / writes,
        errors,
        cdf: [
            Cdf::of(&write_1.hist),
            Cdf::of(&write_64.hist),
            Cdf::of(&read_64.hist),
        ],
    })
}

/// A 100-byte value.
fn value(client: usize, i: u64) -> String {
    format!("{client:08}-{i:016}-{}", "v".repeat(75))
}

/// One `kv` client: its own connection and key space.
struct KvLoad {
    api: kv_generated::grpc::GrpcClient,
    client: usize,
}

impl Load for KvLoad {
    async fn write(&self, i: u64) -> Result<(), String> {
        let key = format!("c{}-{}", self.client, i % 1000);
        self.api
            .put(key, value(self.client, i))
            .await
            .map(drop)
            .map_err(|e| format!("put: {e}"))
    }

    async fn read(&self, i: u64) -> Result<(), String> {
        let key = format!("c{}-{}", self.client, i % 100);
        self.api
            .get(key)
            .await
            .map(drop)
            .map_err(|e| format!("get: {e}"))
    }
}

/// One bank client: its own customer with two funded accounts.
struct BankLoad {
    api: bank_generated::grpc::GrpcClient,
    customer: u64,
    accounts: [u64; 2],
}

impl Load for BankLoad {
    async fn write(&self, i: u64) -> Result<(), String> {
        let [a, b] = self.accounts;
        let cent = Decimal::new(100, 2);
        let done = match i % 3 {
            0 => self.api.deposit(a, cent).await.map(drop),
            1 => self.api.withdraw(a, cent).await.map(drop),
            _ => self.api.transfer(a, b, cent).await.map(drop),
        };
        done.map_err(|e| format!("write: {e}"))
    }

    async fn read(&self, _i: u64) -> Result<(), String> {
        self.api
            .get_accounts(self.customer)
            .await
            .map(drop)
            .map_err(|e| format!("get_accounts: {e}"))
    }
}

/// One etcd client: its own connection and key space.
struct EtcdLoad {
    api: etcd::Client,
    client: usize,
}

impl Load for EtcdLoad {
    async fn write(&self, i: u64) -> Result<(), String> {
        let key = format!("c{}-{}", self.client, i % 1000);
        self.api
            .put(key.into_bytes(), value(self.client, i).into_bytes())
            .await
            .map_err(|e| format!("put: {e}"))
    }

    async fn read(&self, i: u64) -> Result<(), String> {
        let key = format!("c{}-{}", self.client, i % 100);
        self.api
            .get(key.into_bytes())
            .await
            .map_err(|e| format!("range: {e}"))
    }
}

/// Runs the benchmark and returns the report.
pub async fn run(config: &PeersConfig) -> Result<PeersReport, PeersError> {
    if config.systems.contains(&System::Etcd) {
        etcd::check(&config.etcd_bin)?;
    }
    if config.systems.contains(&System::Kv) && !config.kv_bin.is_file() {
        return Err(PeersError::NoKv(config.kv_bin.display().to_string()));
    }
    let mut report = PeersReport {
        load_before: loadavg(),
        seconds_per_phase: config.seconds,
        clients: config.clients,
        ..PeersReport::default()
    };
    for &system in &config.systems {
        let dir = tempfile::tempdir().map_err(|e| setup(system)(e.to_string()))?;
        let samples = &mut report.sample_errors;
        let figures = match system {
            System::Etcd => run_etcd(config, dir.path(), samples).await,
            System::Kv => run_kv(config, dir.path(), samples).await,
            System::Bank => run_bank(config, dir.path(), samples).await,
        }
        .map_err(setup(system))?;
        report.systems.insert(system, figures);
    }
    report.load_after = loadavg();
    Ok(report)
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

async fn run_etcd(
    config: &PeersConfig,
    dir: &Path,
    samples: &mut Vec<String>,
) -> Result<Figures, String> {
    let cluster = etcd::Cluster::start(&config.etcd_bin, dir).await?;
    let leader = cluster.leader().await?;
    let mut clients = Vec::with_capacity(config.clients);
    for client in 0..config.clients {
        let api = etcd::Client::connect(leader).await?;
        clients.push(Arc::new(EtcdLoad { api, client }));
    }
    measure(clients, &cluster.pids(), config.seconds, samples).await
}

/// Starts a 3-node cluster of `exe`; returns it, its leader's gRPC address and its processes.
async fn start_cluster(
    exe: &Path,
    dir: &Path,
    node_args: &[String],
) -> Result<(runtime::ops::cluster::LocalCluster, String, Vec<u32>), String> {
    let (cluster, api) = crate::bench::start_cluster(exe, dir, node_args, None)
        .await
        .map_err(|e| e.to_string())?;
    let pids = cluster.nodes.iter().filter_map(|n| n.pid()).collect();
    Ok((cluster, api, pids))
}

async fn run_kv(
    config: &PeersConfig,
    dir: &Path,
    samples: &mut Vec<String>,
) -> Result<Figures, String> {
    let (_cluster, leader, pids) = start_cluster(&config.kv_bin, dir, &config.node_args).await?;
    let mut clients = Vec::with_capacity(config.clients);
    for client in 0..config.clients {
        let api = kv_generated::grpc::GrpcClient::connect(&leader)
            .await
            .map_err(|e| e.to_string())?;
        clients.push(Arc::new(KvLoad { api, client }));
    }
    measure(clients, &pids, config.seconds, samples).await
}

async fn run_bank(
    config: &PeersConfig,
    dir: &Path,
    samples: &mut Vec<String>,
) -> Result<Figures, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let (_cluster, leader, pids) = start_cluster(&exe, dir, &config.node_args).await?;
    let mut clients = Vec::with_capacity(config.clients);
    for client in 0..config.clients {
        let api = bank_generated::grpc::GrpcClient::connect(&leader)
            .await
            .map_err(|e| e.to_string())?;
        let fixture = crate::bench::prepare(&api, crate::bench::Workload::Writes, client)
            .await
            .map_err(|e| e.to_string())?;
        let [a, b] = fixture.accounts[..] else {
            return Err(format!("client {client} got no two accounts"));
        };
        clients.push(Arc::new(BankLoad {
            api,
            customer: fixture.customer,
            accounts: [a, b],
        }));
    }
    measure(clients, &pids, config.seconds, samples).await
}

/// The table of a report, with each figure's ratio to etcd's.
pub fn render(report: &PeersReport) -> String {
    use std::fmt::Write;
    type Get = fn(&Figures) -> f64;
    let rows: [(&str, Get); 7] = [
        ("1-client write p50 (µs)", |f| f.write_1_p50_us as f64),
        ("1-client write p99 (µs)", |f| f.write_1_p99_us as f64),
        ("64-client writes/s", |f| f.write_64_ops_per_sec),
        ("64-client write p99 (µs)", |f| f.write_64_p99_us as f64),
        ("64-client lin. reads/s", |f| f.read_64_ops_per_sec),
        ("CPU ms / 1000 writes", |f| f.cpu_ms_per_1000_writes),
        ("context switches / write", |f| f.switches_per_write),
    ];
    let etcd = report.systems.get(&System::Etcd);
    // A ratio column after every system but etcd, when etcd was measured.
    let ratio = |system: System| (system != System::Etcd).then_some(etcd).flatten();
    let mut out = String::new();
    let _ = write!(out, "{:<26}", "measure");
    for &system in report.systems.keys() {
        let _ = write!(out, " {:>10}", system.name());
        if ratio(system).is_some() {
            let _ = write!(out, " {:>7}", "×etcd");
        }
    }
    out.push('\n');
    for (label, get) in rows {
        let _ = write!(out, "{label:<26}");
        for (&system, f) in &report.systems {
            let v = get(f);
            let _ = if v < 100.0 {
                write!(out, " {v:>10.1}")
            } else {
                write!(out, " {v:>10.0}")
            };
            if let Some(etcd) = ratio(system) {
                let _ = write!(out, " {:>7.2}", get(f) / get(etcd).max(1e-9));
            }
        }
        out.push('\n');
    }
    let errors: u64 = report.systems.values().map(|f| f.errors).sum();
    let _ = writeln!(
        out,
        "{} s per phase, {} clients in the concurrent phases, all at the leader; \
         load average before {} / after {}; {errors} failed calls",
        report.seconds_per_phase, report.clients, report.load_before, report.load_after
    );
    for e in &report.sample_errors {
        let _ = writeln!(out, "  error: {e}");
    }
    out
}

/// The latency distributions of a run as an SVG: a panel per phase, a line per system.
pub fn svg(report: &PeersReport) -> String {
    use crate::cdf::{Line, Panel};
    let panels: Vec<Panel<'_>> = PHASES
        .iter()
        .enumerate()
        .map(|(i, title)| Panel {
            title,
            lines: report
                .systems
                .iter()
                .map(|(system, f)| Line {
                    name: system.name(),
                    cdf: &f.cdf[i],
                })
                .collect(),
        })
        .collect();
    let title = format!(
        "Latency CDFs: 3-member clusters on one machine, {} clients, {} s per phase (load {})",
        report.clients, report.seconds_per_phase, report.load_before
    );
    crate::cdf::render(&title, &panels)
}

/// A 3-member etcd cluster and the three etcd v3 calls the benchmark makes.
pub mod etcd {
    use super::*;
    use tonic::codegen::http::uri::PathAndQuery;
    use tonic::transport::Channel;

    /// `etcdserverpb.ResponseHeader`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ResponseHeader {
        /// The cluster.
        #[prost(uint64, tag = "1")]
        pub cluster_id: u64,
        /// The member that answered.
        #[prost(uint64, tag = "2")]
        pub member_id: u64,
    }

    /// `etcdserverpb.PutRequest` (the fields used).
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct PutRequest {
        /// The key.
        #[prost(bytes = "vec", tag = "1")]
        pub key: Vec<u8>,
        /// The value.
        #[prost(bytes = "vec", tag = "2")]
        pub value: Vec<u8>,
    }

    /// `etcdserverpb.PutResponse` (the fields used).
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct PutResponse {
        /// The header.
        #[prost(message, optional, tag = "1")]
        pub header: Option<ResponseHeader>,
    }

    /// `etcdserverpb.RangeRequest` (the fields used; `serializable` false = linearizable).
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct RangeRequest {
        /// The key.
        #[prost(bytes = "vec", tag = "1")]
        pub key: Vec<u8>,
        /// Serve from the member's local state (false: linearizable).
        #[prost(bool, tag = "7")]
        pub serializable: bool,
    }

    /// `mvccpb.KeyValue` (the fields used).
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct KeyValue {
        /// The key.
        #[prost(bytes = "vec", tag = "1")]
        pub key: Vec<u8>,
        /// The value.
        #[prost(bytes = "vec", tag = "5")]
        pub value: Vec<u8>,
    }

    /// `etcdserverpb.RangeResponse` (the fields used).
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct RangeResponse {
        /// The header.
        #[prost(message, optional, tag = "1")]
        pub header: Option<ResponseHeader>,
        /// The entries found.
        #[prost(message, repeated, tag = "2")]
        pub kvs: Vec<KeyValue>,
    }

    /// `etcdserverpb.StatusRequest`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct StatusRequest {}

    /// `etcdserverpb.StatusResponse` (the fields used).
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct StatusResponse {
        /// The header (its `member_id` is the answering member).
        #[prost(message, optional, tag = "1")]
        pub header: Option<ResponseHeader>,
        /// The leader's member id (0: none).
        #[prost(uint64, tag = "4")]
        pub leader: u64,
    }

    /// A client of one etcd member.
    #[derive(Debug, Clone)]
    pub struct Client {
        grpc: tonic::client::Grpc<Channel>,
    }

    impl Client {
        /// Connects to a member's client URL (`host:port`).
        pub async fn connect(addr: &str) -> Result<Self, String> {
            let channel = runtime::api::client::connect_channel(addr, None)
                .await
                .map_err(|e| e.to_string())?;
            Ok(Client {
                grpc: tonic::client::Grpc::new(channel),
            })
        }

        async fn unary<Req, Resp>(&self, path: &'static str, request: Req) -> Result<Resp, String>
        where
            Req: prost::Message + Send + Sync + 'static,
            Resp: prost::Message + Default + Send + Sync + 'static,
        {
            let mut grpc = self.grpc.clone();
            grpc.ready().await.map_err(|e| e.to_string())?;
            let codec = tonic_prost::ProstCodec::<Req, Resp>::default();
            grpc.unary(
                tonic::Request::new(request),
                PathAndQuery::from_static(path),
                codec,
            )
            .await
            .map(tonic::Response::into_inner)
            .map_err(|status| format!("{}: {}", status.code(), status.message()))
        }

        /// `KV.Put`.
        pub async fn put(&self, key: Vec<u8>, value: Vec<u8>) -> Result<(), String> {
            let _: PutResponse = self
                .unary("/etcdserverpb.KV/Put", PutRequest { key, value })
                .await?;
            Ok(())
        }

        /// `KV.Range` of one key, linearizable.
        pub async fn get(&self, key: Vec<u8>) -> Result<(), String> {
            let request = RangeRequest {
                key,
                serializable: false,
            };
            let _: RangeResponse = self.unary("/etcdserverpb.KV/Range", request).await?;
            Ok(())
        }

        /// `Maintenance.Status`: (this member's id, the leader's id).
        pub async fn status(&self) -> Result<(u64, u64), String> {
            let status: StatusResponse = self
                .unary("/etcdserverpb.Maintenance/Status", StatusRequest {})
                .await?;
            let member = status.header.map(|h| h.member_id).unwrap_or_default();
            Ok((member, status.leader))
        }
    }

    /// Checks that `bin` runs.
    pub fn check(bin: &Path) -> Result<(), PeersError> {
        let ran = Command::new(bin)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        match ran {
            Ok(status) if status.success() => Ok(()),
            _ => Err(PeersError::NoEtcd(bin.display().to_string())),
        }
    }

    /// A free port on 127.0.0.1 (the listener is closed again, so another process may take it
    /// first: good enough for a benchmark).
    fn free_port() -> Result<u16, String> {
        std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .map_err(|e| format!("no free port: {e}"))
    }

    /// Three etcd members on 127.0.0.1 with their default durability (every write fsynced to
    /// the WAL). Dropping the cluster kills them.
    pub struct Cluster {
        members: Vec<Child>,
        clients: Vec<String>,
    }

    impl Drop for Cluster {
        fn drop(&mut self) {
            for child in &mut self.members {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }

    impl Cluster {
        /// Starts the members under `dir` and waits until each answers.
        pub async fn start(bin: &Path, dir: &Path) -> Result<Cluster, String> {
            let mut peers = Vec::new();
            let mut clients = Vec::new();
            for _ in 0..3 {
                peers.push(format!("127.0.0.1:{}", free_port()?));
                clients.push(format!("127.0.0.1:{}", free_port()?));
            }
            let initial: Vec<String> = peers
                .iter()
                .enumerate()
                .map(|(i, p)| format!("m{i}=http://{p}"))
                .collect();
            let mut cluster = Cluster {
                members: Vec::new(),
                clients: clients.clone(),
            };
            for (i, (peer, client)) in peers.iter().zip(&clients).enumerate() {
                let log = std::fs::File::create(dir.join(format!("m{i}.log")))
                    .map_err(|e| e.to_string())?;
                let child = Command::new(bin)
                    .arg(format!("--name=m{i}"))
                    .arg(format!(
                        "--data-dir={}",
                        dir.join(format!("m{i}")).display()
                    ))
                    .arg(format!("--listen-peer-urls=http://{peer}"))
                    .arg(format!("--initial-advertise-peer-urls=http://{peer}"))
                    .arg(format!("--listen-client-urls=http://{client}"))
                    .arg(format!("--advertise-client-urls=http://{client}"))
                    .arg(format!("--initial-cluster={}", initial.join(",")))
                    .arg("--initial-cluster-state=new")
                    .arg("--initial-cluster-token=bank-bench-peers")
                    .arg("--log-level=error")
                    .arg("--logger=zap")
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(log)
                    .spawn()
                    .map_err(|e| format!("starting etcd: {e}"))?;
                cluster.members.push(child);
            }
            let deadline = Instant::now() + Duration::from_secs(60);
            for client in &clients {
                loop {
                    let answered = match Client::connect(client).await {
                        Ok(c) => c.status().await.map(|(_, leader)| leader != 0),
                        Err(e) => Err(e),
                    };
                    match answered {
                        Ok(true) => break,
                        _ if Instant::now() > deadline => {
                            return Err(format!(
                                "etcd member {client} not ready within 60 s (logs in {})",
                                dir.display()
                            ));
                        }
                        _ => tokio::time::sleep(Duration::from_millis(100)).await,
                    }
                }
            }
            Ok(cluster)
        }

        /// The leader's client address.
        pub async fn leader(&self) -> Result<&str, String> {
            for client in &self.clients {
                let (member, leader) = Client::connect(client).await?.status().await?;
                if member == leader {
                    return Ok(client);
                }
            }
            Err("no etcd member is the leader".into())
        }

        /// The members' process ids.
        pub fn pids(&self) -> Vec<u32> {
            self.members.iter().map(Child::id).collect()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_time_of_a_process_is_read_from_proc() {
        let pid = std::process::id();
        let before = cpu_ms(pid).expect("own stat");
        // Burn a little CPU so the counter moves (10 ms ticks).
        let start = Instant::now();
        let mut x = 0u64;
        while start.elapsed() < Duration::from_millis(60) {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
        }
        let after = cpu_ms(pid).expect("own stat");
        assert!(after > before, "{before} -> {after}");
        assert!(cpu_ms(u32::MAX).is_err());
    }

    #[tokio::test]
    async fn a_missing_etcd_names_the_package_to_install() {
        let config = PeersConfig {
            seconds: 1.0,
            clients: 1,
            kv_bin: PathBuf::from("/nonexistent/kv"),
            etcd_bin: PathBuf::from("/nonexistent/etcd"),
            systems: vec![System::Etcd, System::Kv],
            node_args: Vec::new(),
        };
        let err = run(&config).await.expect_err("no etcd here");
        assert!(matches!(err, PeersError::NoEtcd(_)), "{err}");
        assert!(err.to_string().contains("etcd-server"), "{err}");

        let config = PeersConfig {
            systems: vec![System::Kv],
            ..config
        };
        let err = run(&config).await.expect_err("no kv here");
        assert!(
            err.to_string()
                .contains("cargo build --release -p bank -p kv"),
            "{err}"
        );
    }
}
