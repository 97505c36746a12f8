//! Backup and restore: a backup taken from a running cluster under writes is a consistent copy
//! (its digest is the digest of the state at its applied index), and a new cluster started from
//! it with `--restore` has exactly that state and takes writes.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bank_generated::grpc::GrpcClient;
use bank_generated::{AccountType, BankApi};
use runtime::cluster::LocalCluster;
use rust_decimal::Decimal;

const EXE: &str = env!("CARGO_BIN_EXE_bank");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_under_writes_restores_into_a_new_cluster_with_its_digest() {
    let dir = tempfile::tempdir().expect("temp dir");
    let old = LocalCluster::start(Path::new(EXE), &dir.path().join("old"), 3, Vec::new())
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
    let report = runtime::host::backup(&follower.raft, &old.credentials, &out)
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

    let restored = LocalCluster::start(
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

    // A restore never replaces a database.
    let again = std::process::Command::new(EXE)
        .args([
            "node",
            "--id",
            "1",
            "--init",
            "--secret",
            "0123456789abcdef",
        ])
        .arg("--data-dir")
        .arg(&restored.nodes[0].data_dir)
        .arg("--restore")
        .arg(&out)
        .output()
        .expect("bank node");
    assert!(!again.status.success());
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert!(
        stderr.contains("restore into an empty data directory"),
        "{stderr}"
    );
}
