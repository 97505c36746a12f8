//! Disk and network faults injected into running `bank node` processes through failpoints
//! (`runtime::failpoint`, set with `AdminRequest::Failpoint`; the tests build the binary with the
//! `failpoints` feature). The tests in this file run one at a time (each starts processes).

use std::path::Path;
use std::time::{Duration, Instant};

use bank_generated::grpc::GrpcClient;
use bank_generated::{AccountType, BankApi};
use runtime::ops::cluster::LocalCluster;
use runtime::raft::network::AdminRequest;
use rust_decimal::Decimal;
use tokio::sync::Mutex;

static ONE_AT_A_TIME: Mutex<()> = Mutex::const_new(());

const EXE: &str = env!("CARGO_BIN_EXE_bank");

async fn cluster(dir: &Path, args: &[&str]) -> LocalCluster {
    LocalCluster::start(
        Path::new(EXE),
        dir,
        3,
        args.iter().map(|s| s.to_string()).collect(),
    )
    .await
    .unwrap_or_else(|e| panic!("cluster did not start: {e}"))
}

/// The leader's raft log stops committing (its fsync fails): the node stops with an error
/// instead of serving, another leader takes the writes, and after a restart from what was
/// durable every replica agrees and no acknowledged deposit is lost or applied twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_whose_log_cannot_commit_stops_and_loses_no_acknowledged_write() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let mut c = cluster(dir.path(), &[]).await;
    let leader = c
        .wait_for_leader(Duration::from_secs(60))
        .await
        .expect("leader");
    let follower = c
        .nodes
        .iter()
        .find(|n| n.id != leader)
        .expect("follower")
        .api
        .clone();
    let client = GrpcClient::connect(&follower)
        .await
        .expect("connect")
        .retrying(10);
    let customer = client
        .create_customer("Disk".into(), "Full".into(), "3 Lane".into())
        .await
        .expect("customer");
    let account = client
        .create_account(customer.customer_id, AccountType::Checking)
        .await
        .expect("account")
        .account_id;
    let one = Decimal::ONE;
    let (mut acked, mut indeterminate) = (Decimal::ZERO, Decimal::ZERO);
    for _ in 0..5 {
        client.deposit(account, one).await.expect("deposit");
        acked += one;
    }

    c.set_failpoint(leader, "raft_log::commit", "return")
        .await
        .unwrap_or_else(|e| panic!("failpoint {}: {e}", "raft_log::commit"));
    let mut acked_after = 0;
    for _ in 0..10 {
        match client.deposit(account, one).await {
            Ok(_) => {
                acked += one;
                acked_after += 1;
            }
            Err(e) => {
                eprintln!("deposit during the fault: {e}");
                indeterminate += one;
            }
        }
    }
    assert!(
        acked_after > 0,
        "no deposit was acknowledged after the leader's disk failed"
    );

    // The broken node exits with an error rather than serving.
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = c.nodes[c_index(leader)].exited() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "node {leader} still runs with a failed log"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(!status.success(), "node {leader} exited with {status}");
    let others: Vec<u64> = c
        .nodes
        .iter()
        .map(|n| n.id)
        .filter(|id| *id != leader)
        .collect();
    let new_leader = c
        .wait_for_leader_among(&others, Duration::from_secs(60))
        .await
        .expect("a new leader");
    assert_ne!(new_leader, leader);

    // Restarted (the failpoint lives in the old process only), it recovers what is durable.
    c.restart(leader).await.expect("restart");
    let replicas = c
        .converged(Duration::from_secs(90))
        .await
        .expect("converged");
    assert_eq!(replicas.len(), 3);
    let balance = client
        .list_accounts(0, 10)
        .await
        .expect("accounts")
        .into_iter()
        .find(|a| a.account_id == account)
        .expect("the account")
        .balance;
    assert!(
        acked <= balance && balance <= acked + indeterminate,
        "balance {balance}, acknowledged {acked}, indeterminate {indeterminate}"
    );
}

/// Node ids are positions + 1.
fn c_index(id: u64) -> usize {
    usize::try_from(id - 1).expect("node id")
}

/// The leader drops a chunk of the snapshot it sends a new member: the member refuses the
/// transfer (its length and SHA-256 do not match), the leader sends it again, and the member
/// ends with the same state as everyone else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_with_a_dropped_chunk_is_refused_and_sent_again() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let mut c = cluster(dir.path(), &["--keep-logs", "0"]).await;
    let leader = c
        .wait_for_leader(Duration::from_secs(60))
        .await
        .expect("leader");
    let client = GrpcClient::connect(&c.node(leader).expect("leader").api)
        .await
        .expect("connect");
    bank::validator::run(&client).await.expect("walk-through");
    runtime::ops::admin::admin(
        &c.node(leader).expect("leader").raft,
        &c.credentials,
        AdminRequest::Snapshot,
    )
    .await
    .expect("snapshot");
    c.wait_purged(leader, Duration::from_secs(60))
        .await
        .expect("the leader purges its log");

    c.set_failpoint(leader, "snapshot::drop_chunk", "1*return")
        .await
        .unwrap_or_else(|e| panic!("failpoint {}: {e}", "snapshot::drop_chunk"));
    c.add_member(4, Duration::from_secs(90))
        .await
        .expect("node 4 joins and is promoted");
    let replicas = c
        .converged(Duration::from_secs(60))
        .await
        .expect("converged");
    assert_eq!(replicas.len(), 4);
    let log = std::fs::read_to_string(c.node(4).expect("node 4").data_dir.join("node.log"))
        .expect("node 4's log");
    assert!(
        log.contains("snapshot transfer refused"),
        "node 4 never refused the damaged transfer:\n{log}"
    );
}
