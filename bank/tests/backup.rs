//! Backup and restore: a backup taken from a running cluster under writes is a consistent copy
//! (its digest is the digest of the state at its applied index), and a new cluster started from
//! it with `--restore` has exactly that state and takes writes.

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bank_generated::grpc::GrpcClient;
use bank_generated::{AccountType, BankApi};
use runtime::ops::cluster::LocalCluster;
use rust_decimal::Decimal;

const EXE: &str = env!("CARGO_BIN_EXE_bank");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_under_writes_restores_into_a_new_cluster_with_its_digest() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut old = LocalCluster::start(Path::new(EXE), &dir.path().join("old"), 3, Vec::new())
        .await
        .unwrap_or_else(|e| panic!("cluster: {e}"));
    let leader = old
        .wait_for_leader(Duration::from_secs(60))
        .await
        .expect("leader");
    let client = GrpcClient::connect(&old.node(leader).expect("leader").api)
        .await
        .expect("connect");
    let customer = client
        .create_customer("Back".into(), "Up".into(), "1 Vault Street".into())
        .await
        .expect("customer");
    let account = client
        .create_account(customer.customer_id, AccountType::Savings)
        .await
        .expect("account")
        .account_id;

    // Writes keep coming while the backup is taken (from a follower).
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (client, stop) = (client.clone(), stop.clone());
        tokio::spawn(async move {
            let mut acknowledged = 0u32;
            while !stop.load(Ordering::Relaxed) {
                if client.deposit(account, Decimal::ONE).await.is_ok() {
                    acknowledged += 1;
                }
            }
            acknowledged
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let follower = old.nodes.iter().find(|n| n.id != leader).expect("follower");
    let out = dir.path().join("bank.backup");
    let report = runtime::ops::admin::backup(&follower.raft, &old.credentials, &out)
        .await
        .expect("backup");
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    let acknowledged = writer.await.expect("writer");
    let applied = report["applied_index"].as_u64().expect("applied index");
    let digest = report["digest"].as_str().expect("digest").to_string();
    assert!(out.exists() && applied > 0, "{report}");
    // The old cluster moved on after the backup: its state is not the backup's.
    let now = old
        .converged(Duration::from_secs(60))
        .await
        .expect("converged");
    assert!(now[0].1 > applied, "no write after the backup: {report}");
    assert!(acknowledged > 0);

    // The backup, the databases and the snapshots are the owner's only.
    let mode = |p: &Path| {
        std::fs::metadata(p)
            .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(mode(&out), 0o600, "the backup's mode");
    assert_eq!(mode(&follower.data_dir), 0o700, "the data directory's mode");
    assert_eq!(
        mode(&follower.data_dir.join("state.db")),
        0o600,
        "state.db's mode"
    );
    let log_dir = follower.data_dir.join("raft-log");
    assert_eq!(mode(&log_dir), 0o700, "the raft log directory's mode");
    for segment in std::fs::read_dir(&log_dir).expect("the raft log") {
        let segment = segment.expect("a segment").path();
        assert_eq!(mode(&segment), 0o600, "{}'s mode", segment.display());
    }
    // A `.part` that is a symbolic link is never written through.
    let elsewhere = dir.path().join("elsewhere");
    let linked = dir.path().join("linked.backup");
    std::os::unix::fs::symlink(&elsewhere, linked.with_extension("part")).expect("symlink");
    let refused = runtime::ops::admin::backup(&follower.raft, &old.credentials, &linked)
        .await
        .expect_err("a symlinked .part is refused");
    assert!(refused.to_string().contains("symbolic link"), "{refused}");
    assert!(!elsewhere.exists(), "the backup went through the symlink");

    // A partly received snapshot left by an interrupted transfer is removed at start.
    let follower_id = follower.id;
    let partial = follower
        .data_dir
        .join("snapshots")
        .join("incoming-00000000deadbeef.part");
    std::fs::write(&partial, b"half a snapshot").expect("a partial transfer");
    old.restart(follower_id).await.expect("restart");
    assert!(!partial.exists(), "a partial transfer survived a restart");

    // A restore refuses a directory holding raft state, not only a state database: a
    // leftover log would be replayed on top of the backup.
    let leftover = dir.path().join("leftover");
    std::fs::create_dir_all(leftover.join("raft-log")).expect("dir");
    let leader_log = old.node(leader).expect("leader").data_dir.join("raft-log");
    for segment in std::fs::read_dir(&leader_log).expect("the leader's log") {
        let segment = segment.expect("a segment").path();
        let name = segment.file_name().expect("a file name");
        std::fs::copy(&segment, leftover.join("raft-log").join(name)).expect("an old log");
    }
    let (ok, stderr) = node_briefly(&leftover, &out);
    assert!(!ok, "a restore beside an old log started: {stderr}");
    assert!(stderr.contains("holds raft state"), "{stderr}");

    let mut restored = LocalCluster::start(
        Path::new(EXE),
        &dir.path().join("new"),
        1,
        vec!["--restore".into(), out.display().to_string()],
    )
    .await
    .unwrap_or_else(|e| panic!("restored cluster: {e}"));
    let replicas = restored
        .converged(Duration::from_secs(60))
        .await
        .expect("restored converged");
    assert_eq!(
        replicas[0].2, digest,
        "restored state differs from the backup"
    );

    // The restored cluster is a cluster of its own: it takes writes on top of the backup.
    let new_client = GrpcClient::connect(&restored.nodes[0].api)
        .await
        .expect("connect");
    let accounts = new_client.list_accounts(0, 10).await.expect("accounts");
    let balance = accounts
        .iter()
        .find(|a| a.account_id == account)
        .expect("the account survives")
        .balance;
    let after = new_client
        .deposit(account, Decimal::ONE)
        .await
        .expect("a write on the restored cluster");
    assert_eq!(after, balance + Decimal::ONE);

    // A restore never replaces a database: not under a running node (it holds the directory),
    // nor once it has stopped.
    let data_dir = restored.nodes[0].data_dir.clone();
    let (ok, stderr) = node_briefly(&data_dir, &out);
    assert!(!ok);
    assert!(stderr.contains("uses this data directory"), "{stderr}");
    restored.kill(restored.nodes[0].id).expect("stop node 1");
    let (ok, stderr) = node_briefly(&data_dir, &out);
    assert!(!ok);
    assert!(stderr.contains("holds raft state"), "{stderr}");
}

/// Runs `bank node --restore backup` into `data_dir` on free ports for at most 20 s (a node
/// that starts is killed): whether it exited successfully, and its stderr.
fn node_briefly(data_dir: &Path, backup: &Path) -> (bool, String) {
    use std::io::Read as _;
    let mut child = std::process::Command::new(EXE)
        .args([
            "node",
            "--id",
            "1",
            "--init",
            "--secret",
            "0123456789abcdef",
        ])
        .args(["--listen", "127.0.0.1:0", "--raft-listen", "127.0.0.1:0"])
        .arg("--data-dir")
        .arg(data_dir)
        .arg("--restore")
        .arg(backup)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("bank node");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let ok = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status.success();
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break true;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stderr = String::new();
    if let Some(mut err) = child.stderr.take() {
        let _ = err.read_to_string(&mut stderr);
    }
    (ok, stderr)
}
