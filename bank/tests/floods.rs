//! Connections that hold a node's sockets without saying anything: 300 silent TCP connections
//! to the leader's raft listener (no secret needed to open one). The node closes each one that
//! makes no authenticated request within its handshake time, never lets them hold more than a
//! few dozen slots, and meanwhile `admin status` (a new connection) answers, replication and
//! writes go on, and what it logs stays bounded.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use bank_generated::BankApi;
use common::client_with_account;
use runtime::ops::cluster::LocalCluster;
use rust_decimal::Decimal;
use tokio::io::AsyncReadExt as _;

const EXE: &str = env!("CARGO_BIN_EXE_bank");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_connections_to_the_raft_port_are_closed_and_peers_and_admin_get_in() {
    let dir = tempfile::tempdir().expect("temp dir");
    let c = LocalCluster::start(Path::new(EXE), dir.path(), 3, Vec::new())
        .await
        .unwrap_or_else(|e| panic!("cluster did not start: {e}"));
    let leader = c
        .wait_for_leader(Duration::from_secs(60))
        .await
        .expect("leader");
    let node = c.node(leader).expect("leader");
    let (client, account) = client_with_account(&node.api).await;
    let lines_before = std::fs::read_to_string(node.log_file())
        .unwrap_or_default()
        .lines()
        .count();

    // 300 connections that never send a byte (more than the raft listener's 256 slots).
    let mut silent = Vec::new();
    for _ in 0..300 {
        match tokio::net::TcpStream::connect(&node.raft).await {
            Ok(stream) => silent.push(stream),
            Err(e) => panic!("connect to the raft port: {e}"),
        }
    }
    let flooded = Instant::now();

    // An operator gets in during the flood: a new connection that authenticates at once.
    let status = runtime::ops::admin::status_table(&node.raft, &c.credentials)
        .await
        .expect("admin status during the flood");
    assert!(status.contains("Leader"), "{status}");
    // Writes (replication to both followers) go on.
    for _ in 0..20 {
        client
            .deposit(account, Decimal::ONE)
            .await
            .expect("a deposit during the flood");
    }

    // Every silent connection is closed by the node, within its handshake time (10 s) and a
    // margin for a loaded machine.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    for (i, stream) in silent.iter_mut().enumerate() {
        // What the server sends first (its HTTP/2 settings) is read past, up to the close.
        let mut sink = Vec::new();
        let read = tokio::time::timeout_at(deadline, stream.read_to_end(&mut sink)).await;
        assert!(read.is_ok(), "silent connection {i} still open after 30 s");
    }
    let closed_after = flooded.elapsed();
    eprintln!("300 silent raft connections closed within {closed_after:?}");

    // What the flood cost in log lines: the refusals over the cap are said once, not per
    // connection.
    let logged = std::fs::read_to_string(node.log_file())
        .unwrap_or_default()
        .lines()
        .count()
        - lines_before;
    assert!(
        logged <= 10,
        "the leader logged {logged} lines for the flood"
    );
    // Closed for their handshake: all that were accepted (over the pool's cap, a connection is
    // closed at its accept, uncounted).
    let status = c.status(leader).await.expect("status");
    assert!(
        (200..=300).contains(&status.unauthenticated_closed),
        "{status:?}"
    );
    let replicas = c
        .converged(Duration::from_secs(60))
        .await
        .expect("converged");
    assert_eq!(replicas.len(), 3);
}
