//! `bank bench`: N concurrent clients run a workload against one variant for a duration or a
//! number of operations; every call is timed into a per-operation HDR histogram.
//!
//! Workloads: `walkthrough` (the seed's loop, each client on its own customer), `writes`
//! (deposits, withdrawals and transfers over pre-created accounts), `reads` (listing and
//! account queries), `mixed` (90 % reads, 10 % writes).

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bank_generated::{AccountType, BankApi, BankCallError};
use clap::ValueEnum;
use hdrhistogram::Histogram;
use rust_decimal::Decimal;
use serde::Serialize;

use crate::net::Variant;

/// What each client does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Workload {
    /// The seed's walk-through loop, each client on its own customer.
    Walkthrough,
    /// Deposits, withdrawals and transfers over pre-created accounts.
    Writes,
    /// Account listings and per-customer account queries.
    Reads,
    /// 90 % reads, 10 % writes.
    Mixed,
}

/// When a run stops.
#[derive(Debug, Clone, Copy)]
pub enum Stop {
    /// After this long.
    Duration(Duration),
    /// After this many operations in total.
    Ops(u64),
}

/// Latency summary in microseconds.
#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    /// Calls measured.
    pub count: u64,
    /// Failed calls (not in the latency figures).
    pub errors: u64,
    /// Mean.
    pub mean_us: f64,
    /// Median.
    pub p50_us: u64,
    /// 90th percentile.
    pub p90_us: u64,
    /// 99th percentile.
    pub p99_us: u64,
    /// Maximum.
    pub max_us: u64,
}

/// The result of one run.
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    /// The variant measured.
    pub variant: String,
    /// The workload.
    pub workload: Workload,
    /// Concurrent clients.
    pub clients: usize,
    /// Wall time of the measured phase, seconds.
    pub seconds: f64,
    /// Successful operations per second.
    pub ops_per_sec: f64,
    /// All operations together.
    pub overall: Latency,
    /// Per operation name.
    pub per_op: BTreeMap<String, Latency>,
    /// The first few error messages, if any.
    pub sample_errors: Vec<String>,
    /// Events each watcher of the run received (`--watchers`), in watcher order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub watcher_events: Vec<u64>,
}

#[derive(Default)]
struct Recorder {
    hists: BTreeMap<&'static str, Histogram<u64>>,
    errors: BTreeMap<&'static str, u64>,
    sample_errors: Vec<String>,
}

impl Recorder {
    fn hist(&mut self, op: &'static str) -> &mut Histogram<u64> {
        self.hists.entry(op).or_insert_with(new_histogram)
    }

    async fn time<T>(
        &mut self,
        op: &'static str,
        call: impl Future<Output = Result<T, BankCallError>>,
    ) -> Option<T> {
        let start = Instant::now();
        let result = call.await;
        let us = start.elapsed().as_micros().max(1) as u64;
        match result {
            Ok(v) => {
                let _ = self.hist(op).record(us);
                Some(v)
            }
            Err(e) => {
                *self.errors.entry(op).or_default() += 1;
                if self.sample_errors.len() < 5 {
                    self.sample_errors.push(format!("{op}: {e}"));
                }
                None
            }
        }
    }

    fn merge(&mut self, other: Recorder) {
        for (op, h) in other.hists {
            let _ = self.hist(op).add(h);
        }
        for (op, n) in other.errors {
            *self.errors.entry(op).or_default() += n;
        }
        for e in other.sample_errors {
            if self.sample_errors.len() < 5 {
                self.sample_errors.push(e);
            }
        }
    }
}

/// 1 µs .. 1 h at 3 significant digits.
pub(crate) fn new_histogram() -> Histogram<u64> {
    // Constant, valid bounds: this cannot fail.
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid histogram bounds")
}

fn latency(h: &Histogram<u64>, errors: u64) -> Latency {
    Latency {
        count: h.len(),
        errors,
        mean_us: h.mean(),
        p50_us: h.value_at_quantile(0.5),
        p90_us: h.value_at_quantile(0.9),
        p99_us: h.value_at_quantile(0.99),
        max_us: h.max(),
    }
}

/// An amount in cents.
fn cents(cents: i64) -> Decimal {
    Decimal::new(cents, 2)
}

/// Shared stop condition.
struct Budget {
    stop: Stop,
    started: Instant,
    done: AtomicU64,
    halted: AtomicBool,
}

impl Budget {
    /// Claims one more operation; false when the run is over.
    fn next(&self) -> bool {
        if self.halted.load(Ordering::Relaxed) {
            return false;
        }
        let more = match self.stop {
            Stop::Duration(d) => self.started.elapsed() < d,
            Stop::Ops(n) => self.done.fetch_add(1, Ordering::Relaxed) < n,
        };
        if !more {
            self.halted.store(true, Ordering::Relaxed);
        }
        more
    }
}

/// Per-client state prepared before the clock starts.
pub(crate) struct Fixture {
    /// The client's own customer.
    pub(crate) customer: u64,
    /// Its funded checking and savings accounts (none for the walk-through).
    pub(crate) accounts: Vec<u64>,
}

/// Creates client `client`'s customer and, except for the walk-through, two funded accounts.
pub(crate) async fn prepare<A: BankApi>(
    api: &A,
    workload: Workload,
    client: usize,
) -> Result<Fixture, BankCallError> {
    let customer = api
        .create_customer(
            format!("Bench{client}"),
            "Client".into(),
            format!("{client} Bench Road"),
        )
        .await?;
    let mut accounts = Vec::new();
    if workload != Workload::Walkthrough {
        for kind in [AccountType::Checking, AccountType::Savings] {
            let account = api.create_account(customer.customer_id, kind).await?;
            api.deposit(account.account_id, cents(100_000_000)).await?;
            accounts.push(account.account_id);
        }
    }
    Ok(Fixture {
        customer: customer.customer_id,
        accounts,
    })
}

async fn one_write<A: BankApi>(api: &A, rec: &mut Recorder, f: &Fixture, i: u64) {
    let (a, b) = (f.accounts[0], f.accounts[1]);
    match i % 3 {
        0 => {
            rec.time("deposit", api.deposit(a, cents(100))).await;
        }
        1 => {
            rec.time("withdraw", api.withdraw(a, cents(100))).await;
        }
        _ => {
            rec.time("transfer", api.transfer(a, b, cents(1))).await;
        }
    }
}

async fn one_read<A: BankApi>(api: &A, rec: &mut Recorder, f: &Fixture, i: u64) {
    if i.is_multiple_of(2) {
        rec.time("get_accounts", api.get_accounts(f.customer)).await;
    } else {
        rec.time("list_accounts", api.list_accounts(0, 10)).await;
    }
}

/// One iteration of the seed's loop on the client's own customer.
async fn walkthrough_round<A: BankApi>(api: &A, rec: &mut Recorder, f: &Fixture, budget: &Budget) {
    macro_rules! step {
        ($op:literal, $call:expr) => {{
            if !budget.next() {
                return;
            }
            rec.time($op, $call).await
        }};
    }
    let Some(checking) = step!(
        "create_account",
        api.create_account(f.customer, AccountType::Checking)
    ) else {
        return;
    };
    let Some(savings) = step!(
        "create_account",
        api.create_account(f.customer, AccountType::Savings)
    ) else {
        return;
    };
    let (c, s) = (checking.account_id, savings.account_id);
    step!("deposit", api.deposit(c, cents(100_000)));
    step!("deposit", api.deposit(s, cents(50_000)));
    step!("withdraw", api.withdraw(c, cents(10_000)));
    step!("transfer", api.transfer(c, s, cents(20_000)));
    step!("cash_check", api.cash_check(c, cents(5000)));
    step!("list_accounts", api.list_accounts(0, 10));
    step!("get_accounts", api.get_accounts(f.customer));
    step!("list_statements", api.list_statements(c));
    step!(
        "advance_time",
        api.advance_time(bank_generated::Duration::seconds(60))
    );
}

/// Runs the workload with `clients` clients made by `connect` and returns the report.
pub async fn run<A, E, F, Fut>(
    variant: &str,
    connect: F,
    clients: usize,
    workload: Workload,
    stop: Stop,
    progress: bool,
) -> Result<BenchReport, BankCallError>
where
    A: BankApi + 'static,
    BankCallError: From<E>,
    F: Fn(usize) -> Fut,
    Fut: Future<Output = Result<A, E>>,
{
    let mut prepared = Vec::with_capacity(clients);
    for c in 0..clients {
        let api = connect(c).await?;
        let fixture = prepare(&api, workload, c).await?;
        prepared.push((api, fixture));
    }
    let budget = Arc::new(Budget {
        stop,
        started: Instant::now(),
        done: AtomicU64::new(0),
        halted: AtomicBool::new(false),
    });
    let bar = progress.then(|| progress_bar(stop));
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(clients);
    for (api, fixture) in prepared {
        let budget = budget.clone();
        tasks.push(tokio::spawn(async move {
            let mut rec = Recorder::default();
            let mut i = 0u64;
            loop {
                if workload == Workload::Walkthrough {
                    if budget.halted.load(Ordering::Relaxed) {
                        break;
                    }
                    walkthrough_round(&api, &mut rec, &fixture, &budget).await;
                    continue;
                }
                if !budget.next() {
                    break;
                }
                match workload {
                    Workload::Writes => one_write(&api, &mut rec, &fixture, i).await,
                    Workload::Reads => one_read(&api, &mut rec, &fixture, i).await,
                    _ if i % 10 == 9 => one_write(&api, &mut rec, &fixture, i / 10).await,
                    _ => one_read(&api, &mut rec, &fixture, i).await,
                }
                i += 1;
            }
            rec
        }));
    }
    let ticker = bar.clone().map(|bar| {
        let budget = budget.clone();
        tokio::spawn(async move {
            while !budget.halted.load(Ordering::Relaxed) {
                tokio::time::sleep(Duration::from_millis(200)).await;
                match stop {
                    Stop::Duration(_) => {
                        bar.set_position(budget.started.elapsed().as_millis() as u64)
                    }
                    Stop::Ops(_) => bar.set_position(budget.done.load(Ordering::Relaxed)),
                }
            }
        })
    });
    let mut total = Recorder::default();
    for task in tasks {
        let rec = task
            .await
            .map_err(|e| BankCallError::internal(format!("bench client: {e}")))?;
        total.merge(rec);
    }
    let seconds = started.elapsed().as_secs_f64();
    if let Some(t) = ticker {
        t.abort();
    }
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    let mut overall = new_histogram();
    for h in total.hists.values() {
        let _ = overall.add(h);
    }
    let errors: u64 = total.errors.values().sum();
    let mut names: Vec<&'static str> = total.hists.keys().copied().collect();
    names.extend(total.errors.keys().copied());
    names.sort_unstable();
    names.dedup();
    let empty = new_histogram();
    let per_op = names
        .into_iter()
        .map(|op| {
            let h = total.hists.get(op).unwrap_or(&empty);
            (
                op.to_string(),
                latency(h, total.errors.get(op).copied().unwrap_or(0)),
            )
        })
        .collect();
    Ok(BenchReport {
        variant: variant.to_string(),
        workload,
        clients,
        seconds,
        ops_per_sec: overall.len() as f64 / seconds.max(1e-9),
        overall: latency(&overall, errors),
        per_op,
        sample_errors: total.sample_errors,
        watcher_events: Vec::new(),
    })
}

fn progress_bar(stop: Stop) -> indicatif::ProgressBar {
    let (len, unit) = match stop {
        Stop::Duration(d) => (d.as_millis() as u64, "ms"),
        Stop::Ops(n) => (n, "ops"),
    };
    let bar = indicatif::ProgressBar::new(len);
    let template = format!("{{spinner}} [{{elapsed_precise}}] {{wide_bar}} {{pos}}/{{len}} {unit}");
    if let Ok(style) = indicatif::ProgressStyle::with_template(&template) {
        bar.set_style(style);
    }
    bar
}

/// The human-readable table of a report.
pub fn render(report: &BenchReport) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{} / {:?} / {} client(s): {:.0} ops/s over {:.2} s, {} errors",
        report.variant,
        report.workload,
        report.clients,
        report.ops_per_sec,
        report.seconds,
        report.overall.errors
    );
    let _ = writeln!(
        out,
        "{:<16} {:>9} {:>7} {:>10} {:>9} {:>9} {:>9} {:>9}",
        "operation", "count", "errors", "mean µs", "p50 µs", "p90 µs", "p99 µs", "max µs"
    );
    let rows = report
        .per_op
        .iter()
        .map(|(k, v)| (k.as_str(), v))
        .chain(std::iter::once(("(all)", &report.overall)));
    for (name, l) in rows {
        let _ = writeln!(
            out,
            "{name:<16} {:>9} {:>7} {:>10.1} {:>9} {:>9} {:>9} {:>9}",
            l.count, l.errors, l.mean_us, l.p50_us, l.p90_us, l.p99_us, l.max_us
        );
    }
    if let (Some(min), Some(max)) = (
        report.watcher_events.iter().min(),
        report.watcher_events.iter().max(),
    ) {
        let _ = writeln!(
            out,
            "{} watchers: {min}–{max} events each ({:.0}–{:.0} events/s)",
            report.watcher_events.len(),
            *min as f64 / report.seconds,
            *max as f64 / report.seconds
        );
    }
    for e in &report.sample_errors {
        let _ = writeln!(out, "  error: {e}");
    }
    out
}

/// What a benchmark runs against: a variant at an address, or started for the run (in process
/// on a temporary database, a server in this process, or for `raft` a local 3-node cluster of
/// processes with durable settings, torn down after).
#[derive(Debug, Clone)]
pub struct Target {
    /// The variant.
    pub variant: Variant,
    /// A running server or node; `None` starts one for the run.
    pub connect: Option<String>,
    /// For a `raft` cluster started for the run: a one-way delay on every link between its
    /// nodes (a userspace proxy, [`runtime::lab::delay`]).
    pub link_delay: Option<Duration>,
    /// Watchers of the change feed during the run (raft only), spread over the nodes, each
    /// counting the events it receives.
    pub watchers: usize,
    /// For a `raft` cluster started for the run: nodes with `--auth`, and clients that call as
    /// a teller with a token.
    pub auth: bool,
}

impl Target {
    /// `variant`, started for the run.
    pub fn started(variant: Variant) -> Self {
        Target {
            variant,
            connect: None,
            link_delay: None,
            watchers: 0,
            auth: false,
        }
    }

    /// The name in reports.
    pub fn name(&self) -> String {
        self.variant.name().into()
    }
}

/// Why a benchmark could not run.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// Setting up the target failed.
    #[error("setup: {0}")]
    Setup(String),
    /// The service failed.
    #[error(transparent)]
    Bank(#[from] BankCallError),
}

fn setup(e: impl std::fmt::Display) -> BenchError {
    BenchError::Setup(e.to_string())
}

/// Runs a workload against a target (starting and stopping what it needs).
pub async fn run_target(
    target: &Target,
    clients: usize,
    workload: Workload,
    stop: Stop,
    progress: bool,
) -> Result<BenchReport, BenchError> {
    use crate::net::{self, Endpoint};
    let name = target.name();
    let variant = target.variant;
    let dir = tempfile::tempdir().map_err(setup)?;
    let db = dir.path().join("bench.db");
    let open = || crate::Bank::open(&db).map_err(setup);
    // What the run starts for itself, kept until it ends.
    let mut server = None;
    let mut cluster = None;
    let mut token = None;
    let addr = match (&target.connect, variant) {
        (Some(addr), _) => Some(addr.clone()),
        (None, v) if v.in_process() => None,
        (None, Variant::Raft) => {
            let exe = std::env::current_exe().map_err(setup)?;
            let args = if target.auth {
                vec!["--auth".to_string()]
            } else {
                Vec::new()
            };
            let (started, addr) = start_cluster(&exe, dir.path(), &args, target.link_delay)
                .await
                .map_err(setup)?;
            if target.auth {
                token = Some(
                    started
                        .user_token("bench", &["teller"])
                        .await
                        .map_err(setup)?,
                );
            }
            cluster = Some(started);
            Some(addr)
        }
        (None, v) => {
            let started = net::serve(v, "127.0.0.1:0", open()?, runtime::Limits::default())
                .await
                .map_err(setup)?;
            let addr = started.addr.to_string();
            server = Some(started);
            Some(addr)
        }
    };
    // Watchers from the next command on, one per node in turn.
    let endpoints: Vec<String> = match &cluster {
        Some(c) => c.nodes.iter().map(|n| n.api.clone()).collect(),
        None => addr.iter().cloned().collect(),
    };
    let mut watchers = Vec::new();
    for w in 0..target.watchers {
        let count = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let mut order = endpoints.clone();
        order.rotate_left(w % endpoints.len().max(1));
        let mut watch_target = runtime::api::watch::WatchTarget::new(order);
        watch_target.token = token.clone().map(runtime::wire::call::Token);
        let events = bank_generated::grpc::watch(watch_target, 0, Default::default());
        let counted = count.clone();
        let task = tokio::spawn(async move {
            use futures_util::StreamExt as _;
            let mut events = std::pin::pin!(events);
            while let Some(Ok(_)) = events.next().await {
                counted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        });
        watchers.push((count, task));
    }
    let report = match &addr {
        // In process: every client shares the one bank.
        None => {
            let api = net::connect(variant, Endpoint::Local(open()?))
                .await
                .map_err(setup)?;
            let shared = |_| std::future::ready(Ok::<_, BankCallError>(api.clone()));
            run(&name, shared, clients, workload, stop, progress).await
        }
        Some(addr) => {
            let token = &token;
            let connect = |_| async move {
                match token {
                    // The one client that carries a token: a teller's, on a cluster with --auth.
                    Some(token) => {
                        let client = bank_generated::grpc::GrpcClient::connect(addr).await?;
                        let api: std::sync::Arc<dyn bank_generated::DynBankApi> =
                            std::sync::Arc::new(client.with_token(token.clone()));
                        Ok(api)
                    }
                    None => net::connect(variant, Endpoint::Remote(addr))
                        .await
                        .map_err(|e| BankCallError::transport(e.to_string())),
                }
            };
            run(&name, connect, clients, workload, stop, progress).await
        }
    };
    let mut report = report?;
    for (count, task) in watchers {
        task.abort();
        report
            .watcher_events
            .push(count.load(std::sync::atomic::Ordering::Relaxed));
    }
    if let Some(server) = server {
        server.shutdown().await.map_err(setup)?;
    }
    drop(cluster);
    Ok(report)
}

/// Starts a 3-node cluster of `exe` under `dir` with `node_args` on every node (and `delay` on
/// every link between nodes); returns it with its leader's gRPC address.
pub(crate) async fn start_cluster(
    exe: &std::path::Path,
    dir: &std::path::Path,
    node_args: &[String],
    delay: Option<Duration>,
) -> Result<(runtime::ops::cluster::LocalCluster, String), runtime::ops::host::HostError> {
    use runtime::ops::cluster::LocalCluster;
    let cluster = match delay {
        Some(delay) => LocalCluster::start_delayed(exe, dir, 3, node_args.to_vec(), delay).await?,
        None => LocalCluster::start(exe, dir, 3, node_args.to_vec()).await?,
    };
    let leader = cluster.wait_for_leader(Duration::from_secs(60)).await?;
    let api = cluster.node(leader)?.api.clone();
    Ok((cluster, api))
}

/// `bank bench layers`: the seed's table, one client running the walk-through over each layer.
pub async fn layers(ops: u64, progress: bool) -> Result<(String, Vec<BenchReport>), BenchError> {
    let variants = [
        Variant::Direct,
        Variant::Collector,
        Variant::Tcp,
        Variant::Grpc,
        Variant::Jsonrpc,
        Variant::GrpcFacade,
        Variant::Raft,
    ];
    let mut reports = Vec::new();
    for variant in variants {
        let target = Target::started(variant);
        reports
            .push(run_target(&target, 1, Workload::Walkthrough, Stop::Ops(ops), progress).await?);
    }
    let base = reports
        .first()
        .map(|r| r.overall.mean_us)
        .unwrap_or(1.0)
        .max(1e-9);
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<16} {:>10} {:>10} {:>10} {:>12}",
        "layer", "mean µs", "median µs", "p99 µs", "× direct"
    );
    for r in &reports {
        let _ = writeln!(
            out,
            "{:<16} {:>10.1} {:>10} {:>10} {:>12.1}",
            r.variant,
            r.overall.mean_us,
            r.overall.p50_us,
            r.overall.p99_us,
            r.overall.mean_us / base
        );
    }
    Ok((out, reports))
}
