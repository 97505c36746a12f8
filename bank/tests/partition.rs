//! Real network partitions: every node runs in its own network namespace on a bridge, and a
//! partition takes a node's link down (`runtime::lab::netns`). Needs root; where namespaces cannot be
//! made, each test says so on stderr and passes without running (it checks nothing then).
//!
//! The tests in this file run one at a time (each builds a lab and starts processes).

use std::path::Path;
use std::time::{Duration, Instant};

use bank_generated::grpc::GrpcClient;
use bank_generated::{AccountType, BankApi};
use runtime::lab::netns::NetLab;
use runtime::ops::cluster::LocalCluster;
use tokio::sync::Mutex;

static ONE_AT_A_TIME: Mutex<()> = Mutex::const_new(());

const EXE: &str = env!("CARGO_BIN_EXE_bank");

/// A lab of three namespaces, or `None` (and a note on stderr) where they cannot be made.
fn lab(tag: &str, subnet: u8) -> Option<NetLab> {
    match NetLab::create(tag, subnet, 3) {
        Ok(lab) => Some(lab),
        Err(e) => {
            eprintln!("SKIPPED: network namespaces are not available here ({e})");
            None
        }
    }
}

async fn cluster(lab: &NetLab, dir: &Path) -> LocalCluster {
    LocalCluster::start_in(Path::new(EXE), dir, lab.hosts.clone(), Vec::new())
        .await
        .unwrap_or_else(|e| panic!("cluster did not start: {e}"))
}

/// The leader's view of (leader, term).
async fn leader_and_term(c: &LocalCluster, leader: u64) -> (u64, u64) {
    let status = c.status(leader).await.expect("leader status");
    (status.leader.expect("leader id"), status.term)
}

/// A follower cut off for several election timeouts keeps campaigning in vain; when its link
/// comes back, the healthy leader stays leader in the same term (pre-vote: the follower asks
/// before it raises its term), and the follower catches up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_healed_follower_does_not_depose_a_healthy_leader() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let Some(lab) = lab("rgf", 1) else { return };
    let dir = tempfile::tempdir().expect("temp dir");
    let c = cluster(&lab, dir.path()).await;
    let leader = c
        .wait_for_leader(Duration::from_secs(60))
        .await
        .expect("leader");
    let api = GrpcClient::connect(&c.node(leader).expect("leader").api)
        .await
        .expect("connect");
    let customer = api
        .create_customer("Part".into(), "Ition".into(), "1 Bridge St".into())
        .await
        .expect("customer")
        .customer_id;
    let before = leader_and_term(&c, leader).await;
    for round in 0..2 {
        let follower = c
            .nodes
            .iter()
            .find(|n| n.id != leader)
            .expect("follower")
            .id;
        lab.set_connected(follower as usize, false).expect("cut");
        // Two of the longest election timeouts: the follower campaigns more than once.
        tokio::time::sleep(Duration::from_secs(6)).await;
        // The majority keeps working meanwhile.
        api.create_account(customer, AccountType::Checking)
            .await
            .expect("a write while a follower is cut off");
        lab.set_connected(follower as usize, true).expect("heal");
        c.converged(Duration::from_secs(60))
            .await
            .expect("the healed follower catches up");
        assert_eq!(
            leader_and_term(&c, leader).await,
            before,
            "round {round}: the healed follower changed the leader or its term"
        );
    }
}

/// A leader cut off from everyone: the other two elect a new leader and take writes; when the
/// old leader's link comes back it follows the new one and every replica converges, with every
/// acknowledged write present.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_isolated_leader_is_replaced_and_rejoins_as_a_follower() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let Some(lab) = lab("rgl", 2) else { return };
    let dir = tempfile::tempdir().expect("temp dir");
    let c = cluster(&lab, dir.path()).await;
    let old = c
        .wait_for_leader(Duration::from_secs(60))
        .await
        .expect("leader");
    let api = GrpcClient::connect(&c.node(old).expect("leader").api)
        .await
        .expect("connect");
    let customer = api
        .create_customer("Iso".into(), "Lated".into(), "2 Bridge St".into())
        .await
        .expect("customer")
        .customer_id;
    let (_, old_term) = leader_and_term(&c, old).await;

    lab.set_connected(old as usize, false).expect("cut");
    let cut = Instant::now();
    let survivors: Vec<u64> = c
        .nodes
        .iter()
        .map(|n| n.id)
        .filter(|&id| id != old)
        .collect();
    let new = c
        .wait_for_leader_among(&survivors, Duration::from_secs(60))
        .await
        .expect("the majority elects a leader");
    eprintln!("new leader {new} {:?} after the cut", cut.elapsed());
    let api = GrpcClient::connect(&c.node(new).expect("new leader").api)
        .await
        .expect("connect");
    let account = api
        .create_account(customer, AccountType::Savings)
        .await
        .expect("a write on the majority side")
        .account_id;

    lab.set_connected(old as usize, true).expect("heal");
    let replicas = c
        .converged(Duration::from_secs(60))
        .await
        .expect("every replica converges after the heal");
    assert_eq!(replicas.len(), 3, "{replicas:?}");
    let status = c.status(old).await.expect("old leader status");
    assert!(!status.is_leader(), "{status:?}");
    assert!(status.term > old_term, "{status:?}");
    let accounts = api.get_accounts(customer).await.expect("accounts");
    assert!(accounts.contains(&account), "{accounts:?}");
}

/// A bounded `bank chaos` run: every nemesis at least once under a workload over gRPC and
/// JSON-RPC, then the checks (converged digests, the pool's total, no negative balance, every
/// acknowledged deposit present once). The longer run is `bank chaos --duration S`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_chaos_run_keeps_every_invariant() {
    use bank::chaos::{self, ChaosConfig, Nemesis};
    let _serial = ONE_AT_A_TIME.lock().await;
    // The run builds its own lab; this one only finds out whether labs can be built here.
    if lab("rgp", 3).is_none() {
        return;
    }
    // The lossy link needs `iptables` (`.ci/run` installs it); without it, the rest runs.
    let nemeses = Nemesis::available();
    let lossy = nemeses.contains(&Nemesis::LossyLink);
    if !lossy {
        eprintln!("SKIPPED: the lossy link (iptables is not installed)");
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let config = ChaosConfig {
        exe: EXE.into(),
        dir: dir.path().to_path_buf(),
        duration: Duration::from_secs(45),
        // The tests build `bank` with failpoints, so clock skew is among them.
        nemeses,
        hold: Duration::from_secs(4),
        lab: ("rgc".into(), 4),
        node_args: Vec::new(),
        // Generous on a loaded test machine: this checks the invariants, not the catch-up time.
        catch_up: Duration::from_secs(60),
    };
    let report = chaos::run(config)
        .await
        .unwrap_or_else(|e| panic!("chaos run: {e}"));
    eprintln!("{}", chaos::render(&report));
    assert!(report.acknowledged > 0, "{report:?}");
    for name in [
        "isolate-leader",
        "isolate-follower",
        "kill-leader",
        "follower-down",
        "lossy-link",
        "clock-skew",
    ] {
        if name == "lossy-link" && !lossy {
            continue;
        }
        let figures = report
            .faults
            .get(name)
            .unwrap_or_else(|| panic!("{name} never ran"));
        assert!(figures.injected > 0, "{name}: {figures:?}");
        assert_eq!(figures.heal_leader_changes, 0, "{name}: {figures:?}");
    }
    assert_eq!(report.checks.len(), 4, "{:?}", report.checks);
    // While a follower was down, its leader stayed quiet (on the old code it logged tens of
    // thousands of lines a second).
    for cost in &report.faults["follower-down"].leader_costs {
        assert!(cost.log_bytes_per_minute < 100_000, "{cost:?}");
    }
}
