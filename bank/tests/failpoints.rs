//! Disk and network faults injected into running `bank node` processes through failpoints
//! (`runtime::failpoint`, set with `AdminRequest::Failpoint`; the tests build the binary with the
//! `failpoints` feature). The tests in this file run one at a time (each starts processes).

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use bank_generated::BankApi;
use bank_generated::grpc::GrpcClient;
use common::client_with_account;
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
    let (client, account) = client_with_account(&follower).await;
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

/// Snapshot builds fail three times on every node (a failpoint, as a full disk or a lack of
/// file descriptors would): no node stops; they keep applying and serving, count and report
/// the failures, log the failure once, and the next build after the backoff succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_builds_that_fail_are_retried_and_the_node_goes_on() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let mut c = cluster(dir.path(), &["--snapshot-every", "20", "--keep-logs", "0"]).await;
    let leader = c
        .wait_for_leader(Duration::from_secs(60))
        .await
        .expect("leader");
    for id in 1..=3 {
        c.set_failpoint(id, "snapshot::build", "3*return")
            .await
            .unwrap_or_else(|e| panic!("failpoint on node {id}: {e}"));
    }
    let (client, account) = client_with_account(&c.node(leader).expect("leader").api).await;
    // Writes go on while builds fail; each deposit is acknowledged.
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut deposits = 0u32;
    let balance = loop {
        let balance = client
            .deposit(account, Decimal::ONE)
            .await
            .expect("a deposit while snapshot builds fail");
        deposits += 1;
        // Until every node has built one after its three failures: a build is tried again at
        // the next trigger after its backoff, and triggers come with new entries.
        let mut done = deposits >= 100;
        for id in 1..=3 {
            let status = c.status(id).await.expect("status");
            done &= status.snapshot_failures >= 3 && status.snapshot_index.is_some();
            assert!(
                Instant::now() < deadline,
                "node {id}: no snapshot after 3 failures: {status:?}"
            );
        }
        if done {
            break balance;
        }
    };
    assert_eq!(balance, Decimal::from(deposits));
    for id in 1..=3 {
        let s = c.status(id).await.expect("status");
        assert_eq!(s.snapshot_failures, 3, "node {id}: {s:?}");
        eprintln!("node {id}: {s:?}");
        let log = std::fs::read_to_string(c.node(id).expect("node").data_dir.join("node.log"))
            .expect("node log");
        assert_eq!(
            log.matches("a snapshot build failed").count(),
            1,
            "node {id} logs the failure once:\n{log}"
        );
        assert!(
            log.contains("a snapshot build succeeded after 3 failures"),
            "node {id}:\n{log}"
        );
    }
    let table =
        runtime::ops::admin::status_table(&c.node(leader).expect("leader").raft, &c.credentials)
            .await
            .expect("status table");
    assert!(table.contains("(3 failed)"), "{table}");
    c.converged(Duration::from_secs(60))
        .await
        .expect("converged");
    c.kill(leader).expect("stop");
}

/// A reader holds the leader's database for 11 s (past SQLite's 10 s busy timeout, as a backup
/// of a large database does) while a snapshot is built: the build neither fails nor waits for
/// it, and the node goes on applying.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_holding_the_database_does_not_stop_a_snapshot_build() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let c = cluster(dir.path(), &[]).await;
    let leader = c
        .wait_for_leader(Duration::from_secs(60))
        .await
        .expect("leader");
    let node = c.node(leader).expect("leader");
    let client = GrpcClient::connect(&node.api)
        .await
        .expect("connect")
        .retrying(10);
    bank::validator::run(&client).await.expect("walk-through");
    let db = node.data_dir.join(runtime::raft::files::STATE_DB);
    let held = Duration::from_secs(11);
    let (ready, reading) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        let conn =
            rusqlite::Connection::open_with_flags(&db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
                .expect("open the database");
        conn.execute_batch("BEGIN").expect("begin");
        let _: i64 = conn
            .query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get(0))
            .expect("read");
        ready.send(()).expect("signal");
        std::thread::sleep(held);
        conn.execute_batch("COMMIT").expect("end the read");
    });
    reading.recv().expect("the reader holds the database");
    // Writes after the reader began: a checkpoint that waits for readers waits for this one.
    for n in 0..5 {
        client
            .create_customer(format!("After{n}"), "Reader".into(), "3 WAL Way".into())
            .await
            .expect("a write while a reader holds the database");
    }
    let started = Instant::now();
    runtime::ops::admin::admin(&node.raft, &c.credentials, AdminRequest::Snapshot)
        .await
        .expect("snapshot");
    let status = c
        .wait_status(leader, Duration::from_secs(60), "build a snapshot", |s| {
            s.snapshot_index.is_some()
        })
        .await
        .expect("a snapshot");
    let took = started.elapsed();
    assert_eq!(status.snapshot_failures, 0, "{status:?}");
    // The node applies while the reader is still there.
    let customer = client
        .create_customer("Read".into(), "Er".into(), "2 Lock Lane".into())
        .await
        .expect("a write while a reader holds the database");
    eprintln!(
        "snapshot after {took:?} with a reader held for {held:?}; then customer {}",
        customer.customer_id
    );
    reader.join().expect("reader");
}
