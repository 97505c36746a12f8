//! Every node of a `LocalCluster` serves Prometheus metrics, `/health` and `/ready`: after a few
//! writes the request counters moved, by operation and outcome, and the raft gauges agree with
//! `admin status`.

use std::io::{Read, Write};
use std::path::Path;
use std::time::Duration;

use bank_generated::grpc::GrpcClient;
use bank_generated::{AccountType, BankApi};
use runtime::ops::cluster::LocalCluster;
use rust_decimal::Decimal;

const EXE: &str = env!("CARGO_BIN_EXE_bank");

/// GETs `path` from `addr`: the status code and the body.
fn get(addr: &str, path: &str) -> (u16, String) {
    let mut stream = std::net::TcpStream::connect(addr).unwrap_or_else(|e| panic!("{addr}: {e}"));
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .expect("request");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("response");
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line: {response}"));
    let body = response
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_string();
    (status, body)
}

/// The value of the sample `name` (with its labels, as written) in a scrape.
fn sample(scrape: &str, name: &str) -> Option<f64> {
    scrape
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_node_serves_metrics_that_agree_with_admin_status() {
    let dir = tempfile::tempdir().expect("temp dir");
    let c = LocalCluster::start(Path::new(EXE), dir.path(), 3, Vec::new())
        .await
        .unwrap_or_else(|e| panic!("cluster: {e}"));
    let leader = c
        .wait_for_leader(Duration::from_secs(60))
        .await
        .expect("leader");
    let node = &c.nodes[0];
    let client = GrpcClient::connect(&node.api).await.expect("connect");
    let customer = client
        .create_customer("Metric".into(), "Counter".into(), "1 Gauge Road".into())
        .await
        .expect("customer");
    let account = client
        .create_account(customer.customer_id, AccountType::Checking)
        .await
        .expect("account")
        .account_id;
    for _ in 0..3 {
        client
            .deposit(account, Decimal::ONE)
            .await
            .expect("deposit");
    }
    assert!(client.deposit(9999, Decimal::ONE).await.is_err());
    // A linearizable read waits for its read index.
    client.list_accounts(0, 10).await.expect("a read");
    let replicas = c
        .converged(Duration::from_secs(60))
        .await
        .expect("converged");

    let (status, scrape) = get(&node.metrics, "/metrics");
    assert_eq!(status, 200, "{scrape}");
    let deposits = r#"requests_total{operation="deposit",kind="command",outcome="ok"}"#;
    assert_eq!(sample(&scrape, deposits), Some(3.0), "{scrape}");
    let refused = r#"requests_total{operation="deposit",kind="command",outcome="NotFound"}"#;
    assert_eq!(sample(&scrape, refused), Some(1.0), "{scrape}");
    assert!(
        scrape.contains(r#"request_seconds_count{operation="deposit",kind="command"} 4"#),
        "{scrape}"
    );
    assert!(
        sample(&scrape, "read_index_seconds_count") >= Some(1.0),
        "{scrape}"
    );
    assert_eq!(sample(&scrape, "dedup_hits_total"), Some(0.0), "{scrape}");

    let mut leaders = 0;
    for n in &c.nodes {
        let (_, scrape) = get(&n.metrics, "/metrics");
        let status = c.status(n.id).await.expect("status");
        for (metric, value) in [
            ("raft_term", Some(status.term)),
            ("raft_applied_index", status.last_applied_index),
            ("raft_last_log_index", status.last_log_index),
            ("raft_leader_id", status.leader),
        ] {
            let reported = value.map(|v| v as f64);
            assert_eq!(
                sample(&scrape, metric),
                reported,
                "node {} {metric}\n{scrape}",
                n.id
            );
        }
        assert_eq!(
            sample(&scrape, "raft_applied_index"),
            Some(replicas[0].1 as f64),
            "node {}",
            n.id
        );
        // Every node logged and applied the writes.
        assert!(
            sample(&scrape, "raft_log_commit_seconds_count") >= Some(1.0),
            "{scrape}"
        );
        assert!(
            sample(&scrape, "raft_apply_seconds_count") >= Some(1.0),
            "{scrape}"
        );
        if sample(&scrape, r#"raft_role{role="Leader"}"#) == Some(1.0) {
            leaders += 1;
            assert_eq!(n.id, leader);
        }
        assert_eq!(get(&n.metrics, "/health").0, 200);
        let (ready, why) = get(&n.metrics, "/ready");
        assert_eq!(ready, 200, "node {}: {why}", n.id);
    }
    assert_eq!(leaders, 1);

    // A snapshot is counted with its size.
    let (_, before) = get(&node.metrics, "/metrics");
    assert_eq!(
        sample(&before, "raft_snapshots_built_total"),
        Some(0.0),
        "{before}"
    );
    runtime::ops::admin::admin(
        &node.raft,
        &c.credentials,
        runtime::raft::network::AdminRequest::Snapshot,
    )
    .await
    .expect("snapshot");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let scrape = loop {
        let (_, scrape) = get(&node.metrics, "/metrics");
        if sample(&scrape, "raft_snapshots_built_total") == Some(1.0) {
            break scrape;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no snapshot counted\n{scrape}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let on_disk: u64 = std::fs::read_dir(node.data_dir.join("snapshots"))
        .expect("snapshot dir")
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".db"))
        .map(|e| e.metadata().expect("metadata").len())
        .sum();
    assert!(on_disk > 0);
    assert_eq!(
        sample(&scrape, "raft_snapshot_bytes"),
        Some(on_disk as f64),
        "{scrape}"
    );
    assert_eq!(
        sample(&scrape, "raft_snapshots_installed_total"),
        Some(0.0),
        "{scrape}"
    );
}
