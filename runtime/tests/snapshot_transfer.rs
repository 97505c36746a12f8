//! Snapshot transfer between nodes: a follower installs a snapshot only when the file it
//! received is the whole file the leader sent, and building a snapshot never deletes a transfer
//! that is still arriving.
//!
//! The follower here is a real `RaftNode` behind its real raft listener; the test plays the
//! leader by sending the chunks and the install message a leader sends.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;

use common::{Rows, within};
use openraft::RaftSnapshotBuilder;
use openraft::testing::log_id;
use runtime::raft::network::{self, Answer, Message};
use runtime::raft::node::{NodeConfig, RaftNode};
use runtime::raft::rpc::{RaftClient, RaftCredentials};
use runtime::raft::state_machine::StateMachine;
use runtime::raft::types::{C, NodeAddr, SnapshotMeta, StoredMembership, Vote};
use runtime::rusqlite::Connection;
use sha2::{Digest, Sha256};

const SECRET: &str = "snapshot-test-secret";

/// A real snapshot file of a database holding `rows` rows, applied up to [`meta`]'s log id.
async fn snapshot_bytes(dir: &Path, rows: i64) -> Vec<u8> {
    let mut sm = StateMachine::open(
        Arc::new(Rows),
        &dir.join("source.db"),
        &dir.join("source-snapshots"),
    )
    .expect("source state machine");
    let built = sm.build_snapshot().await.expect("build snapshot");
    let conn = Connection::open(&built.snapshot.path).expect("open snapshot copy");
    for n in 0..rows {
        conn.execute("INSERT INTO rows (n) VALUES (?1)", [n])
            .expect("row");
    }
    let last = serde_json::to_string(&meta().last_log_id).expect("log id");
    conn.execute(
        "INSERT INTO _raft_meta (key, value) VALUES ('last_applied', ?1)",
        [last],
    )
    .expect("last applied");
    drop(conn);
    std::fs::read(&built.snapshot.path).expect("read snapshot")
}

/// What a leader (node 1, term 1) says the snapshot covers: up to index 5.
fn meta() -> SnapshotMeta {
    let last = log_id::<C>(1, 1, 5);
    let membership = openraft::Membership::new_with_defaults(vec![BTreeSet::from([1u64, 2])], []);
    SnapshotMeta {
        last_log_id: Some(last),
        last_membership: StoredMembership::new(Some(last), membership),
    }
}

async fn call(client: &RaftClient, payload: Vec<u8>) -> Answer {
    let bytes = within("a raft message", client.send(payload))
        .await
        .expect("raft message delivered");
    runtime::raft::types::decode(&bytes).expect("answer decodes")
}

/// Sends `sent` as transfer `id` in two chunks, then the install message describing `described`.
async fn transfer(client: &RaftClient, id: u64, sent: &[u8], described: &[u8]) -> Answer {
    let half = sent.len() / 2;
    for (offset, chunk) in [(0, &sent[..half]), (half, &sent[half..])] {
        let stored = call(client, network::encode_chunk(id, offset as u64, chunk)).await;
        assert!(matches!(stored, Answer::ChunkStored), "{stored:?}");
    }
    let install = Message::InstallSnapshot {
        id,
        vote: Vote::new_committed(1, 1),
        meta: meta(),
        len: described.len() as u64,
        sha256: Sha256::digest(described).into(),
    };
    call(client, network::encode_message(&install).expect("encode")).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_truncated_or_altered_snapshot_is_refused_and_the_whole_one_installed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let whole = snapshot_bytes(dir.path(), 3).await;

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = NodeAddr {
        raft: listener.local_addr().expect("addr").to_string(),
        api: BTreeMap::new(),
    };
    let config = NodeConfig::new(2, dir.path().join("node2"), RaftCredentials::plain(SECRET));
    let node = RaftNode::start(config, addr.clone(), Arc::new(Rows))
        .await
        .expect("node starts");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(runtime::raft::rpc::serve_raft(
        listener,
        runtime::net::conn::Pool::new(64, runtime::net::conn::RAFT_IDLE_TIMEOUT),
        node.clone(),
        RaftCredentials::plain(SECRET),
        16 << 20,
        async move {
            let _ = stopped.await;
        },
    ));
    let client = RaftClient::connect(&addr.raft, &RaftCredentials::plain(SECRET))
        .await
        .expect("connect");

    // The tail never arrived: the file is shorter than the sender's length.
    let truncated = transfer(&client, 1, &whole[..whole.len() / 2], &whole).await;
    let after_truncated = node.state_machine().digest().await.expect("digest");

    // Every byte arrived, but one of them differs from what was sent.
    let mut altered = whole.clone();
    let middle = altered.len() / 2;
    altered[middle] ^= 0xff;
    let corrupted = transfer(&client, 2, &altered, &whole).await;
    let after_corrupted = node.state_machine().digest().await.expect("digest");

    let installed = transfer(&client, 3, &whole, &whole).await;
    let after_whole = node.state_machine().digest().await.expect("digest");

    let leftovers: Vec<String> = std::fs::read_dir(dir.path().join("node2/snapshots"))
        .expect("snapshot dir")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("incoming-"))
        .collect();

    let _ = stop.send(());
    node.shutdown().await;
    let _ = within("raft server stop", server).await;

    assert!(
        matches!(&truncated, Answer::Failed(e) if e.contains("bytes received")),
        "{truncated:?}"
    );
    assert_eq!(after_truncated, ("0".to_string(), None));
    assert!(
        matches!(&corrupted, Answer::Failed(e) if e.contains("SHA-256")),
        "{corrupted:?}"
    );
    assert_eq!(after_corrupted, ("0".to_string(), None));
    assert!(matches!(installed, Answer::Snapshot(_)), "{installed:?}");
    assert_eq!(after_whole, ("3".to_string(), Some(5)));
    assert!(leftovers.is_empty(), "refused transfers left {leftovers:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn building_a_snapshot_keeps_a_transfer_still_arriving() {
    let dir = tempfile::tempdir().expect("tempdir");
    let snapshots = dir.path().join("snapshots");
    let mut sm = StateMachine::open(Arc::new(Rows), &dir.path().join("state.db"), &snapshots)
        .expect("state machine");
    let arriving = snapshots.join("incoming-00000000000000aa.part");
    std::fs::write(&arriving, b"first chunk").expect("partial transfer");

    sm.build_snapshot().await.expect("first snapshot");
    sm.build_snapshot().await.expect("second snapshot");

    assert!(
        arriving.exists(),
        "a snapshot build deleted a transfer in progress"
    );
}
