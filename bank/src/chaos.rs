//! `bank chaos`: a 3-node bank cluster with every node in its own network namespace
//! ([`runtime::lab::netns`]), a workload of writes over gRPC and JSON-RPC with retries, and faults
//! injected one after another (nemeses: see [`Nemesis`]). At the end the faults are healed and the invariants
//! checked:
//!
//! - replicas converge to equal digests;
//! - the pool's transfers conserve its total and no balance is negative;
//! - every worker's acknowledged deposits are in its account, and no deposit was applied twice
//!   (`acknowledged <= balance <= acknowledged + indeterminate`, every deposit being 1.00).
//!
//! Figures per nemesis: how many were injected, the time until the majority had a new leader,
//! and the leader changes a heal caused (goal 0). The longest write unavailability is the
//! longest time no worker had a write acknowledged. After each heal every node must apply what
//! the leader held within [`ChaosConfig::catch_up`] ([`CATCH_UP`] from the command line), or
//! the run fails naming the node left behind.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bank_generated::grpc::GrpcClient;
use bank_generated::jsonrpc::JsonRpcClient;
use bank_generated::{AccountType, BankApi, BankCallError};
use runtime::lab::netns::NetLab;
use runtime::ops::cluster::LocalCluster;
use runtime::raft::types::NodeId;
use runtime::{CallError, Failure};
use rust_decimal::Decimal;

/// A kind of fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum)]
pub enum Nemesis {
    /// Take the leader's link down for the hold time, then bring it back.
    IsolateLeader,
    /// Take a follower's link down for the hold time, then bring it back.
    IsolateFollower,
    /// SIGKILL the leader, then restart it from its data directory.
    KillLeader,
    /// SIGKILL a follower and leave it down for the hold time (hold it for minutes to see what
    /// a lasting fault costs), then restart it. Reports the leader's CPU and log bytes per
    /// minute while it is down, against the leader's CPU just before.
    FollowerDown,
    /// The leader loses 30 % of the packets it sends and receives (`iptables` in its
    /// namespace) for the hold time.
    LossyLink,
    /// The leader's clock runs two hours ahead for the hold time (a failpoint: needs a `bank`
    /// built with the `failpoints` feature). Commands it stamps move the bank's clock, and no
    /// request record may expire early: a retry must still be recognised.
    ClockSkew,
}

impl Nemesis {
    fn name(self) -> &'static str {
        match self {
            Nemesis::IsolateLeader => "isolate-leader",
            Nemesis::IsolateFollower => "isolate-follower",
            Nemesis::KillLeader => "kill-leader",
            Nemesis::FollowerDown => "follower-down",
            Nemesis::LossyLink => "lossy-link",
            Nemesis::ClockSkew => "clock-skew",
        }
    }

    /// Every nemesis this build can inject on this machine (a lossy link needs `iptables`,
    /// clock skew needs failpoints).
    pub fn available() -> Vec<Nemesis> {
        let mut all = vec![
            Nemesis::IsolateLeader,
            Nemesis::IsolateFollower,
            Nemesis::KillLeader,
            Nemesis::FollowerDown,
        ];
        if runtime::lab::netns::iptables().is_some() {
            all.push(Nemesis::LossyLink);
        }
        if runtime::failpoint::ENABLED {
            all.push(Nemesis::ClockSkew);
        }
        all
    }
}

/// Packets the lossy link drops, in percent.
const LOSS_PERCENT: u8 = 30;
/// How far ahead the skewed clock runs, in seconds.
const CLOCK_SKEW_SECS: i64 = 2 * 3600;

/// What a chaos run does.
#[derive(Debug, Clone)]
pub struct ChaosConfig {
    /// The node binary (`bank`).
    pub exe: PathBuf,
    /// Where the nodes' data directories go.
    pub dir: PathBuf,
    /// How long faults keep being injected (the run then heals and checks).
    pub duration: Duration,
    /// The faults, injected in turn.
    pub nemeses: Vec<Nemesis>,
    /// How long each fault lasts.
    pub hold: Duration,
    /// The lab's name tag (at most 6 characters) and subnet (`10.77.<subnet>.0/24`).
    pub lab: (String, u8),
    /// Extra arguments for every node (e.g. `--election-timeout-ms=500-1000`).
    pub node_args: Vec<String>,
    /// How long a node may stay behind the leader after a heal ([`CATCH_UP`] for the command).
    pub catch_up: Duration,
}

/// The figures of one nemesis.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct FaultFigures {
    /// How many times it was injected.
    pub injected: u32,
    /// Milliseconds from the fault to a new leader on the majority side (leader faults).
    pub new_leader_ms: Vec<u64>,
    /// Heals after which the leader or its term had changed (follower isolation; goal 0).
    pub heal_leader_changes: u32,
    /// What a follower down cost its leader, per injection (follower-down).
    pub leader_costs: Vec<LeaderCost>,
    /// Per injection, the longest time no worker had a write acknowledged, in milliseconds:
    /// the longest gap between acknowledgements that ended from the fault to its heal (and the
    /// catch-up after it).
    pub outage_ms: Vec<u64>,
    /// Per injection, milliseconds from the heal until every node had applied what the leader
    /// held at the heal (more than [`ChaosConfig::catch_up`] fails the run).
    pub catch_up_ms: Vec<u64>,
}

/// What the leader spent while a follower was down, beside what it spent just before.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct LeaderCost {
    /// The leader's CPU, in percent of one core, over the few seconds before the fault.
    pub cpu_percent_before: f64,
    /// The leader's CPU, in percent of one core, while the follower was down.
    pub cpu_percent: f64,
    /// Bytes the leader logged per minute while the follower was down.
    pub log_bytes_per_minute: u64,
}

/// Measures the leader's CPU (percent of a core) and log bytes over `window`; `None` when its
/// process cannot be read (it stopped).
async fn leader_cost(c: &LocalCluster, leader: NodeId, window: Duration) -> Option<(f64, u64)> {
    let node = c.node(leader).ok()?;
    let log_len = || std::fs::metadata(node.log_file()).map_or(0, |m| m.len());
    let (cpu, log, start) = (node.cpu_seconds()?, log_len(), Instant::now());
    tokio::time::sleep(window).await;
    let elapsed = start.elapsed().as_secs_f64();
    Some((
        100.0 * (node.cpu_seconds()? - cpu) / elapsed,
        log_len().saturating_sub(log),
    ))
}

/// What a chaos run saw.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ChaosReport {
    /// Writes attempted.
    pub ops: u64,
    /// Writes acknowledged.
    pub acknowledged: u64,
    /// Writes refused by the bank (a definite no: nothing applied).
    pub refused: u64,
    /// Writes whose outcome is unknown (a transport failure or a deadline).
    pub indeterminate: u64,
    /// The longest time no worker had a write acknowledged, in milliseconds.
    pub longest_unavailable_ms: u64,
    /// Figures per nemesis.
    pub faults: BTreeMap<String, FaultFigures>,
    /// The checks, each with what it found.
    pub checks: Vec<String>,
}

/// Why a chaos run could not run, or found a broken invariant.
#[derive(Debug, thiserror::Error)]
pub enum ChaosError {
    /// The network lab could not be built (needs root and iproute2).
    #[error("network namespaces: {0}")]
    Lab(#[from] runtime::lab::netns::NetLabError),
    /// The cluster failed to start, elect or converge.
    #[error("cluster: {0}")]
    Cluster(#[from] runtime::ops::host::HostError),
    /// A call the run depends on failed.
    #[error("{0}")]
    Call(String),
    /// An invariant does not hold.
    #[error("invariant broken: {0}")]
    Invariant(String),
}

/// Workers: gRPC clients, then JSON-RPC clients.
const GRPC_WORKERS: usize = 4;
const JSONRPC_WORKERS: usize = 2;
/// Accounts the workers transfer between, and what each starts with.
const POOL: usize = 4;
const POOL_START: i64 = 1000;

/// Tallies shared by the workers.
#[derive(Default)]
struct Tally {
    ops: AtomicU64,
    acknowledged: AtomicU64,
    refused: AtomicU64,
    indeterminate: AtomicU64,
    /// The gaps between acknowledged writes.
    gaps: Mutex<Gaps>,
}

/// The gaps between acknowledged writes (of any worker).
#[derive(Default)]
struct Gaps {
    /// When a write was last acknowledged.
    last: Option<Instant>,
    /// The longest gap of the whole run.
    longest: Duration,
    /// The longest gap since [`Tally::take_window`] was last called.
    window: Duration,
}

impl Tally {
    fn acknowledged(&self) {
        self.acknowledged.fetch_add(1, Ordering::Relaxed);
        let now = Instant::now();
        if let Ok(mut g) = self.gaps.lock() {
            let gap = g.last.map_or(Duration::ZERO, |at| now - at);
            g.last = Some(now);
            g.longest = g.longest.max(gap);
            g.window = g.window.max(gap);
        }
    }

    /// The longest gap between acknowledgements since the last call; starts a new window.
    fn take_window(&self) -> Duration {
        self.gaps
            .lock()
            .map(|mut g| std::mem::take(&mut g.window))
            .unwrap_or_default()
    }
}

/// What happened to one write.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Acknowledged,
    Refused,
    Indeterminate,
}

fn outcome<T>(result: &Result<T, BankCallError>) -> Outcome {
    match result {
        Ok(_) => Outcome::Acknowledged,
        Err(CallError::Domain(_)) | Err(CallError::Failure(Failure::Rejected(_))) => {
            Outcome::Refused
        }
        Err(CallError::Failure(_)) => Outcome::Indeterminate,
    }
}

/// A worker: deposits 1.00 into its own account and transfers between pool accounts, until
/// `stop`. Returns (acknowledged, indeterminate) deposits.
async fn work<A: BankApi>(
    api: A,
    own: u64,
    pool: Vec<u64>,
    seed: u64,
    tally: Arc<Tally>,
    stop: Arc<AtomicBool>,
) -> (u64, u64) {
    let (mut acked, mut unknown) = (0, 0);
    let mut state = seed | 1;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut i = 0u64;
    while !stop.load(Ordering::Relaxed) {
        i += 1;
        tally.ops.fetch_add(1, Ordering::Relaxed);
        let result = if i.is_multiple_of(2) {
            let result = outcome(&api.deposit(own, Decimal::ONE).await);
            acked += u64::from(result == Outcome::Acknowledged);
            unknown += u64::from(result == Outcome::Indeterminate);
            result
        } else {
            let from = pool[(next() % POOL as u64) as usize];
            let to = pool[(next() % POOL as u64) as usize];
            let to = if to == from {
                pool[(pool.iter().position(|&p| p == from).unwrap_or(0) + 1) % POOL]
            } else {
                to
            };
            let amount = Decimal::from(1 + next() % 5);
            outcome(&api.transfer(from, to, amount).await)
        };
        match result {
            Outcome::Acknowledged => tally.acknowledged(),
            Outcome::Refused => {
                tally.refused.fetch_add(1, Ordering::Relaxed);
            }
            Outcome::Indeterminate => {
                tally.indeterminate.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    (acked, unknown)
}

async fn term_of(c: &LocalCluster, id: NodeId) -> Option<u64> {
    c.status(id).await.ok().map(|s| s.term)
}

const ELECTION: Duration = Duration::from_secs(60);

/// How long `bank chaos` lets a node stay behind the leader after a heal before the run fails: a
/// node left behind (its log no longer replicated to it) is a failure, not slowness.
pub const CATCH_UP: Duration = Duration::from_secs(20);

/// Injects one fault, heals it and waits until every node has caught up; records its figures.
async fn inject(
    nemesis: Nemesis,
    c: &mut LocalCluster,
    lab: &NetLab,
    hold: Duration,
    catch_up: Duration,
    figures: &mut FaultFigures,
) -> Result<(), ChaosError> {
    let leader = c.wait_for_leader(ELECTION).await?;
    let others: Vec<NodeId> = c
        .nodes
        .iter()
        .map(|n| n.id)
        .filter(|&id| id != leader)
        .collect();
    let term = term_of(c, leader).await;
    let before = if nemesis == Nemesis::FollowerDown {
        leader_cost(c, leader, (hold / 4).min(Duration::from_secs(10))).await
    } else {
        None
    };
    figures.injected += 1;
    let cut = Instant::now();
    match nemesis {
        Nemesis::IsolateLeader => lab.set_connected(leader as usize, false)?,
        Nemesis::KillLeader => c.kill(leader)?,
        Nemesis::IsolateFollower => lab.set_connected(others[0] as usize, false)?,
        Nemesis::FollowerDown => c.kill(others[0])?,
        Nemesis::LossyLink => lab.set_loss(leader as usize, LOSS_PERCENT)?,
        Nemesis::ClockSkew => {
            let offset = format!("return({CLOCK_SKEW_SECS})");
            c.set_failpoint(leader, "clock::offset_secs", &offset)
                .await?;
        }
    }
    let deposes = matches!(nemesis, Nemesis::IsolateLeader | Nemesis::KillLeader);
    if deposes && c.wait_for_leader_among(&others, ELECTION).await.is_ok() {
        figures.new_leader_ms.push(cut.elapsed().as_millis() as u64);
    }
    let rest = hold.saturating_sub(cut.elapsed());
    if let (Some((cpu_before, _)), Some((cpu, log_bytes))) =
        (before, leader_cost(c, leader, rest).await)
    {
        figures.leader_costs.push(LeaderCost {
            cpu_percent_before: cpu_before,
            cpu_percent: cpu,
            log_bytes_per_minute: (log_bytes as f64 * 60.0 / rest.as_secs_f64().max(0.001)) as u64,
        });
    }
    tokio::time::sleep(hold.saturating_sub(cut.elapsed())).await;
    match nemesis {
        Nemesis::IsolateLeader => lab.set_connected(leader as usize, true)?,
        Nemesis::KillLeader => c.restart(leader).await?,
        Nemesis::IsolateFollower => lab.set_connected(others[0] as usize, true)?,
        Nemesis::FollowerDown => c.restart(others[0]).await?,
        Nemesis::LossyLink => lab.set_loss(leader as usize, 0)?,
        Nemesis::ClockSkew => c.set_failpoint(leader, "clock::offset_secs", "off").await?,
    }
    let healed = Instant::now();
    c.wait_caught_up(catch_up).await.map_err(|e| {
        ChaosError::Invariant(format!(
            "a node stayed behind after the heal of {}: {e}",
            nemesis.name()
        ))
    })?;
    figures
        .catch_up_ms
        .push(healed.elapsed().as_millis() as u64);
    if matches!(nemesis, Nemesis::IsolateFollower | Nemesis::FollowerDown)
        && (c.wait_for_leader(ELECTION).await.ok() != Some(leader)
            || term_of(c, leader).await != term)
    {
        figures.heal_leader_changes += 1;
    }
    Ok(())
}

/// Runs the workload and the nemeses, heals, checks; see the module docs.
pub async fn run(config: ChaosConfig) -> Result<ChaosReport, ChaosError> {
    let lab = NetLab::create(&config.lab.0, config.lab.1, 3)?;
    let mut c = LocalCluster::start_in(
        &config.exe,
        &config.dir,
        lab.hosts.clone(),
        config.node_args.clone(),
    )
    .await?;
    let leader = c.wait_for_leader(ELECTION).await?;
    let setup = GrpcClient::connect(&c.node(leader)?.api)
        .await
        .map_err(|e| ChaosError::Call(format!("connect: {e}")))?
        .retrying(5);
    let call =
        |what: &'static str| move |e: BankCallError| ChaosError::Call(format!("{what}: {e}"));
    let customer = setup
        .create_customer("Chaos".into(), "Monkey".into(), "1 Fault Line".into())
        .await
        .map_err(call("customer"))?
        .customer_id;
    let mut pool = Vec::new();
    for _ in 0..POOL {
        let id = setup
            .create_account(customer, AccountType::Checking)
            .await
            .map_err(call("pool account"))?
            .account_id;
        setup
            .deposit(id, Decimal::from(POOL_START))
            .await
            .map_err(call("pool deposit"))?;
        pool.push(id);
    }
    let tally = Arc::new(Tally::default());
    let stop = Arc::new(AtomicBool::new(false));
    let mut workers = Vec::new();
    for w in 0..GRPC_WORKERS + JSONRPC_WORKERS {
        let own = setup
            .create_account(customer, AccountType::Savings)
            .await
            .map_err(call("worker account"))?
            .account_id;
        // Workers are spread over the nodes: a cut-off node's clients see the fault.
        let node = &c.nodes[w % c.nodes.len()];
        let (pool, tally, stop) = (pool.clone(), tally.clone(), stop.clone());
        let seed = 0x9e37_79b9_7f4a_7c15 ^ (w as u64 + 1);
        let task = if w < GRPC_WORKERS {
            let api = GrpcClient::connect(&node.api)
                .await
                .map_err(|e| ChaosError::Call(format!("connect: {e}")))?
                .retrying(3);
            tokio::spawn(work(api, own, pool, seed, tally, stop))
        } else {
            let api = JsonRpcClient::new(&node.jsonrpc)
                .map_err(|e| ChaosError::Call(format!("connect: {e}")))?
                .retrying(3);
            tokio::spawn(work(api, own, pool, seed, tally, stop))
        };
        workers.push((own, task));
    }

    let mut faults: BTreeMap<Nemesis, FaultFigures> = BTreeMap::new();
    let started = Instant::now();
    let mut turn = 0;
    while started.elapsed() < config.duration && !config.nemeses.is_empty() {
        let nemesis = config.nemeses[turn % config.nemeses.len()];
        turn += 1;
        let figures = faults.entry(nemesis).or_default();
        tally.take_window();
        inject(nemesis, &mut c, &lab, config.hold, config.catch_up, figures).await?;
        figures
            .outage_ms
            .push(tally.take_window().as_millis() as u64);
        tracing::info!(nemesis = nemesis.name(), "fault healed");
    }
    if config.nemeses.is_empty() {
        tokio::time::sleep(config.duration).await;
    }
    stop.store(true, Ordering::Relaxed);
    let mut deposits = Vec::new();
    for (own, task) in workers {
        let (acked, unknown) = task
            .await
            .map_err(|e| ChaosError::Call(format!("worker: {e}")))?;
        deposits.push((own, acked, unknown));
    }

    // Checks, on the healed cluster.
    let mut checks = Vec::new();
    let replicas = c.converged(ELECTION).await?;
    checks.push(format!(
        "replicas converged: {} nodes at index {}, one digest",
        replicas.len(),
        replicas.first().map_or(0, |r| r.1)
    ));
    let leader = c.wait_for_leader(ELECTION).await?;
    let reader = GrpcClient::connect(&c.node(leader)?.api)
        .await
        .map_err(|e| ChaosError::Call(format!("connect: {e}")))?;
    let accounts = reader
        .list_accounts(0, 1000)
        .await
        .map_err(call("list accounts"))?;
    let balance = |id: u64| {
        accounts
            .iter()
            .find(|a| a.account_id == id)
            .map(|a| a.balance)
            .ok_or_else(|| ChaosError::Invariant(format!("account {id} is missing")))
    };
    if let Some(negative) = accounts.iter().find(|a| a.balance < Decimal::ZERO) {
        return Err(ChaosError::Invariant(format!(
            "account {} has a negative balance {}",
            negative.account_id, negative.balance
        )));
    }
    checks.push(format!(
        "no negative balance among {} accounts",
        accounts.len()
    ));
    let mut total = Decimal::ZERO;
    for &id in &pool {
        total += balance(id)?;
    }
    let expected = Decimal::from(POOL_START * POOL as i64);
    if total != expected {
        return Err(ChaosError::Invariant(format!(
            "the pool holds {total}, not {expected}"
        )));
    }
    checks.push(format!("transfers conserved the pool's {expected}"));
    for (own, acked, unknown) in deposits {
        let got = balance(own)?;
        let (low, high) = (Decimal::from(acked), Decimal::from(acked + unknown));
        if got < low || got > high {
            return Err(ChaosError::Invariant(format!(
                "account {own} holds {got}: {acked} deposits acknowledged, {unknown} \
                 indeterminate (a write lost or applied twice)"
            )));
        }
    }
    checks.push(
        "every acknowledged deposit present once, none applied twice (per worker account)".into(),
    );

    let longest = tally.gaps.lock().map(|g| g.longest).unwrap_or_default();
    Ok(ChaosReport {
        ops: tally.ops.load(Ordering::Relaxed),
        acknowledged: tally.acknowledged.load(Ordering::Relaxed),
        refused: tally.refused.load(Ordering::Relaxed),
        indeterminate: tally.indeterminate.load(Ordering::Relaxed),
        longest_unavailable_ms: longest.as_millis() as u64,
        faults: faults
            .into_iter()
            .map(|(n, f)| (n.name().to_string(), f))
            .collect(),
        checks,
    })
}

/// The report as a table.
pub fn render(report: &ChaosReport) -> String {
    let mut out = format!(
        "writes: {} attempted, {} acknowledged, {} refused, {} indeterminate; longest write \
         unavailability {} ms\n",
        report.ops,
        report.acknowledged,
        report.refused,
        report.indeterminate,
        report.longest_unavailable_ms
    );
    out.push_str(
        "nemesis            injected  new leader ms (min/median/max)  write outage ms (min/median/max)  catch-up ms (min/median/max)  heal leader changes\n",
    );
    let spread = |values: &[u64]| {
        let mut ms = values.to_vec();
        ms.sort_unstable();
        match (ms.first(), ms.get(ms.len() / 2), ms.last()) {
            (Some(min), Some(median), Some(max)) => format!("{min}/{median}/{max}"),
            _ => "-".into(),
        }
    };
    for (name, f) in &report.faults {
        out.push_str(&format!(
            "{name:<18} {:>8}  {:>30}  {:>32}  {:>28}  {:>19}\n",
            f.injected,
            spread(&f.new_leader_ms),
            spread(&f.outage_ms),
            spread(&f.catch_up_ms),
            f.heal_leader_changes
        ));
    }
    for (name, f) in &report.faults {
        for cost in &f.leader_costs {
            out.push_str(&format!(
                "{name}: leader CPU {:.1} % of a core while down ({:.1} % before), {} log bytes/min\n",
                cost.cpu_percent, cost.cpu_percent_before, cost.log_bytes_per_minute
            ));
        }
    }
    for check in &report.checks {
        out.push_str(&format!("ok: {check}\n"));
    }
    out
}
