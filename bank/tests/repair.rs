//! A damaged raft log on a real node: one flipped bit in a record's length field makes the node
//! refuse to start, changing nothing; `bank repair-log` keeps the longest prefix that checks
//! and moves the damaged files aside; the node then rejoins without voting until a leader has
//! brought it up to date, and ends with every acknowledged write.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bank_generated::BankApi;
use bank_generated::grpc::GrpcClient;
use common::client_with_account;
use runtime::ops::cluster::LocalCluster;
use rust_decimal::Decimal;

const EXE: &str = env!("CARGO_BIN_EXE_bank");

/// The newest segment file of the log in `data_dir`.
fn newest_segment(data_dir: &Path) -> PathBuf {
    let mut files: Vec<PathBuf> = std::fs::read_dir(data_dir.join("raft-log"))
        .expect("log dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .collect();
    files.sort();
    files.pop().expect("a segment")
}

/// Where the batches of a segment start: after the magic and the header record, each batch is
/// a 21-byte batch record whose payload starts with the batch's whole length.
fn batch_starts(bytes: &[u8]) -> Vec<usize> {
    let header_len = u32::from_le_bytes(bytes[8..12].try_into().expect("len")) as usize;
    let mut pos = 16 + header_len;
    let mut starts = Vec::new();
    while bytes.get(pos..pos + 4).is_some_and(|l| l != [0, 0, 0, 0]) {
        starts.push(pos);
        let len = u32::from_le_bytes(bytes[pos + 9..pos + 13].try_into().expect("len")) as usize;
        pos += len;
    }
    starts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_log_is_refused_then_repaired_and_the_node_rejoins_without_voting() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut c = LocalCluster::start(Path::new(EXE), dir.path(), 3, Vec::new())
        .await
        .expect("cluster");
    let leader = c
        .wait_for_leader(Duration::from_secs(60))
        .await
        .expect("leader");
    let (client, account) = client_with_account(&c.node(leader).expect("leader").api).await;
    let mut balance = Decimal::ZERO;
    for _ in 0..30 {
        balance = client
            .deposit(account, Decimal::ONE)
            .await
            .expect("deposit");
    }
    c.wait_caught_up(Duration::from_secs(60))
        .await
        .expect("every node applied every deposit");
    let ids: Vec<u64> = c.nodes.iter().map(|n| n.id).collect();
    let victim = *ids.iter().find(|&&id| id != leader).expect("a follower");
    let other = *ids
        .iter()
        .find(|&&id| id != leader && id != victim)
        .expect("another follower");
    let data_dir = c.node(victim).expect("victim").data_dir.clone();
    let repair = || {
        std::process::Command::new(EXE)
            .args(["repair-log", "--data-dir"])
            .arg(&data_dir)
            .output()
            .expect("run repair-log")
    };
    // Not under a running node.
    let refused = repair();
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("uses this data directory"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    c.kill(victim).expect("stop the victim");

    // One bit of the length field of the first record of a batch in the middle.
    let segment = newest_segment(&data_dir);
    let mut bytes = std::fs::read(&segment).expect("read segment");
    let starts = batch_starts(&bytes);
    assert!(starts.len() >= 10, "{} batches", starts.len());
    let at = starts[starts.len() / 2] + 21;
    bytes[at] ^= 0x10;
    std::fs::write(&segment, &bytes).expect("damage");

    // Refused, and nothing changed.
    let refused = c.restart(victim).await;
    assert!(refused.is_err(), "a node with a damaged log started");
    let log = std::fs::read_to_string(data_dir.join("node.log")).expect("node log");
    assert!(log.contains("damaged at byte"), "{log}");
    assert_eq!(
        std::fs::read(&segment).expect("read"),
        bytes,
        "the refusal changed the log"
    );

    // The repair keeps the prefix and moves the damaged file aside, untouched.
    let out = repair();
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{report}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_str(&report).expect("a JSON report");
    let moved_to = PathBuf::from(report["moved_to"].as_str().expect("moved_to"));
    let name = segment.file_name().expect("name");
    assert_eq!(
        std::fs::read(moved_to.join(name)).expect("the damaged segment, moved"),
        bytes
    );
    assert!(data_dir.join("rejoin.json").exists());

    // With only the repaired node and one other, no leader: the repaired node does not vote.
    c.kill(leader).expect("stop the leader");
    c.kill(other).expect("stop the other follower");
    c.restart(victim).await.expect("the repaired node starts");
    if let Err(e) = c.restart(other).await {
        let log = std::fs::read_to_string(c.node(other).expect("other").data_dir.join("node.log"));
        panic!("the other follower starts: {e}\n{log:?}");
    }
    c.wait_status(victim, Duration::from_secs(30), "rejoin", |s| s.rejoining)
        .await
        .expect("the repaired node says it is rejoining");
    let quiet = Instant::now() + Duration::from_secs(8);
    while Instant::now() < quiet {
        for id in [victim, other] {
            let s = c.status(id).await.expect("status");
            assert!(
                !s.is_leader(),
                "node {id} was elected with the repaired node's vote: {s:?}"
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    // The third node comes back: a leader, the repaired node catches up and votes again.
    c.restart(leader).await.expect("the old leader starts");
    let leader = c
        .wait_for_leader(Duration::from_secs(60))
        .await
        .expect("a leader once two healthy nodes run");
    assert_ne!(leader, victim);
    c.wait_status(victim, Duration::from_secs(60), "vote again", |s| {
        !s.rejoining
    })
    .await
    .expect("the repaired node caught up");
    assert!(!data_dir.join("rejoin.json").exists());
    let replicas = c
        .converged(Duration::from_secs(60))
        .await
        .expect("converged");
    assert_eq!(replicas.len(), 3);
    let client = GrpcClient::connect(&c.node(leader).expect("leader").api)
        .await
        .expect("connect")
        .retrying(10);
    let after = client
        .deposit(account, Decimal::ONE)
        .await
        .expect("a deposit after the repair");
    assert_eq!(after, balance + Decimal::ONE);
}
