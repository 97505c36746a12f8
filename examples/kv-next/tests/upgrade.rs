//! The key-value store's old build (`kv-v1`) and its next one (`kv-next`: `put` gains
//! `if_absent`, `append` is new) on the same data, as separate node processes:
//!
//! - the next build replays the old build's whole log, and restores the old build's snapshot
//!   and replays the log after it, to the old build's digest;
//! - a cluster upgraded node by node refuses the new operation and the new parameter, naming
//!   the node that lacks them, and changes nothing; old operations go on; once every node runs
//!   the next build, the new ones are taken;
//! - a node that meets an entry its build cannot read stops rather than diverge, and catches up
//!   once it runs a build that can.

use std::path::Path;
use std::time::Duration;

use runtime::ops::cluster::LocalCluster;
use runtime::raft::network::AdminRequest;

const V1: &str = env!("CARGO_BIN_EXE_kv-v1");
const NEXT: &str = env!("CARGO_BIN_EXE_kv-next");
const WAIT: Duration = Duration::from_secs(90);

/// Old operations through an old client: puts, compare-and-swaps and deletes.
async fn old_writes(c: &LocalCluster, prefix: &str) {
    use kv_generated::KvApi;
    let leader = c.wait_for_leader(WAIT).await.expect("leader");
    let api = kv_generated::grpc::GrpcClient::connect(&c.node(leader).expect("leader").api)
        .await
        .expect("connect");
    for i in 0..20 {
        let key = format!("{prefix}-{i:02}");
        let revision = api.put(key.clone(), format!("v{i}")).await.expect("put");
        if i % 3 == 0 {
            api.compare_and_swap(key.clone(), revision, format!("swapped {i}"))
                .await
                .expect("cas");
        }
        if i % 5 == 0 {
            assert!(api.delete(key).await.expect("delete"));
        }
    }
}

/// The digest every running replica agrees on.
async fn digest(c: &LocalCluster) -> String {
    let replicas = c.converged(WAIT).await.expect("converged");
    replicas[0].2.clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_next_build_replays_the_old_log_and_restores_the_old_snapshot() {
    let dir = tempfile::tempdir().expect("temp dir");
    let keep_none = vec!["--keep-logs".to_string(), "0".to_string()];
    let mut c = LocalCluster::start(Path::new(V1), dir.path(), 3, keep_none)
        .await
        .unwrap_or_else(|e| panic!("cluster: {e}"));
    old_writes(&c, "before").await;
    let old = digest(&c).await;

    // A new member on the next build replays the old build's whole log (nothing is purged yet).
    c.set_exe(Path::new(NEXT));
    c.add_member(4, WAIT).await.expect("node 4 joins");
    assert_eq!(digest(&c).await, old, "node 4 replayed the old log");

    // Every node snapshots and purges its log; the log goes on after the snapshot.
    for id in 1..=4 {
        runtime::ops::admin::admin(
            &c.node(id).expect("node").raft,
            &c.credentials,
            AdminRequest::Snapshot,
        )
        .await
        .expect("snapshot");
    }
    for id in 1..=4 {
        c.wait_purged(id, WAIT).await.expect("purged");
    }
    old_writes(&c, "after").await;
    let old = digest(&c).await;

    // A new member restores the snapshot (old data, whichever build leads) and replays the
    // old entries after it; then the old nodes restart on the next build, one by one, on
    // their old databases and logs.
    c.add_member(5, WAIT).await.expect("node 5 joins");
    assert_eq!(digest(&c).await, old, "node 5 restored the snapshot");
    for id in 1..=3 {
        c.restart(id).await.expect("restart");
        c.wait_for_leader(WAIT).await.expect("leader");
    }
    assert_eq!(
        digest(&c).await,
        old,
        "the upgraded nodes hold the old state"
    );

    // The new operation and parameter work on the old data.
    use kv_next_generated::KvApi;
    let leader = c.wait_for_leader(WAIT).await.expect("leader");
    let api = kv_next_generated::grpc::GrpcClient::connect(&c.node(leader).expect("node").api)
        .await
        .expect("connect");
    api.append("after-01".into(), "+more".into())
        .await
        .expect("append");
    let conflict = api
        .put("after-01".into(), "again".into(), true)
        .await
        .expect_err("if_absent on an existing key");
    assert!(conflict.to_string().contains("Conflict"), "{conflict}");
    let entry = api.get("after-01".into()).await.expect("get").expect("key");
    assert_eq!(entry.value, "v1+more");
    digest(&c).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_upgrade_takes_new_operations_only_once_every_node_has_them() {
    use kv_next_generated::KvApi;
    let dir = tempfile::tempdir().expect("temp dir");
    let mut c = LocalCluster::start(Path::new(V1), dir.path(), 3, Vec::new())
        .await
        .unwrap_or_else(|e| panic!("cluster: {e}"));
    old_writes(&c, "old").await;

    // Nodes 1 and 2 run the next build; node 3 still runs the old one.
    c.set_exe(Path::new(NEXT));
    for id in [1, 2] {
        c.restart(id).await.expect("restart");
        c.wait_for_leader(WAIT).await.expect("leader");
    }
    let before = digest(&c).await;
    let api = kv_next_generated::grpc::GrpcClient::connect(&c.node(1).expect("node 1").api)
        .await
        .expect("connect");
    // Whichever node leads, node 3 is named: as a member that lacks them, or as the leader.
    let refused = api
        .append("old-01".into(), "+new".into())
        .await
        .expect_err("append before node 3 has it");
    let message = refused.to_string();
    assert!(
        message.contains("node 3 (schema") && message.contains("operation `append`"),
        "{message}"
    );
    let refused = api
        .put("fresh".into(), "x".into(), true)
        .await
        .expect_err("if_absent before node 3 has it");
    let message = refused.to_string();
    assert!(
        message.contains("node 3 (schema") && message.contains("`if_absent`"),
        "{message}"
    );
    assert_eq!(
        digest(&c).await,
        before,
        "a refused command changed nothing"
    );
    // An old operation from a new client (the defaulted parameter left out) goes through.
    api.put("fresh".into(), "x".into(), false)
        .await
        .expect("put at the old shape");

    // Node 3 upgraded: the new operation is taken everywhere.
    c.restart(3).await.expect("restart node 3");
    c.wait_for_leader(WAIT).await.expect("leader");
    api.append("old-01".into(), "+new".into())
        .await
        .expect("append once every node has it");
    let entry = api.get("old-01".into()).await.expect("get").expect("key");
    assert_eq!(entry.value, "v1+new");
    digest(&c).await;
    let versions = schema_versions(&c).await;
    assert!(
        versions
            .iter()
            .all(|v| v == kv_next_generated::SCHEMA_VERSION),
        "every node reports the next build's schema version: {versions:?}"
    );
}

/// The schema version each node reports in its status.
async fn schema_versions(c: &LocalCluster) -> Vec<String> {
    let mut versions = Vec::new();
    for n in &c.nodes {
        let status = c.status(n.id).await.expect("status");
        versions.push(status.schema);
    }
    versions
}

/// A node that meets an entry its build cannot read (here: downgraded while it was away) stops,
/// instead of refusing the entry while the others applied it; on the right build it catches up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_cannot_read_an_entry_stops_instead_of_diverging() {
    use kv_next_generated::KvApi;
    let dir = tempfile::tempdir().expect("temp dir");
    let mut c = LocalCluster::start(Path::new(NEXT), dir.path(), 3, Vec::new())
        .await
        .unwrap_or_else(|e| panic!("cluster: {e}"));
    old_writes(&c, "old").await;
    digest(&c).await;
    // Node 3 is away while an `append` is written (it runs the next build, as far as the
    // leader last heard).
    c.kill(3).expect("kill node 3");
    let leader = c.wait_for_leader(WAIT).await.expect("leader");
    let api = kv_next_generated::grpc::GrpcClient::connect(&c.node(leader).expect("leader").api)
        .await
        .expect("connect");
    api.append("old-01".into(), "+new".into())
        .await
        .expect("append");
    // It comes back on the old build: it stops at the entry.
    c.set_exe(Path::new(V1));
    c.restart(3).await.expect("restart node 3 on the old build");
    let deadline = std::time::Instant::now() + WAIT;
    let status = loop {
        if let Some(status) = c.nodes[2].exited() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let log = std::fs::read_to_string(c.nodes[2].data_dir.join("node.log"));
            panic!("node 3 still runs on a build that cannot read the log: {log:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(!status.success(), "node 3 exited with {status}");
    let log = std::fs::read_to_string(c.nodes[2].data_dir.join("node.log")).expect("log");
    assert!(log.contains("cannot apply the entry"), "{log}");
    // Back on the next build, it catches up to the same state.
    c.set_exe(Path::new(NEXT));
    c.restart(3)
        .await
        .expect("restart node 3 on the next build");
    digest(&c).await;
    let entry = api.get("old-01".into()).await.expect("get").expect("key");
    assert_eq!(entry.value, "v1+new");
}
