//! Three `kv node` processes: writes over gRPC (through a follower) and JSON-RPC (at the
//! leader), the leader killed with SIGKILL, writes to the survivors, then every acknowledged
//! write read back from every surviving node, whose replicas end with equal digests.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use kv_generated::grpc::GrpcClient;
use kv_generated::jsonrpc::JsonRpcClient;
use kv_generated::{KvApi, KvError};
use runtime::CallError;
use runtime::ops::cluster::LocalCluster;
use runtime::wire::call::ReadLevel;

const EXE: &str = env!("CARGO_BIN_EXE_kv");

/// Writes `count` keys `{prefix}-{i}` through `api`; returns what was acknowledged.
async fn write_keys(api: &impl KvApi, prefix: &str, count: usize) -> BTreeMap<String, String> {
    let mut acked = BTreeMap::new();
    for i in 0..count {
        let (key, value) = (
            format!("{prefix}-{i:03}"),
            format!("value {i} via {prefix}"),
        );
        api.put(key.clone(), value.clone())
            .await
            .unwrap_or_else(|e| panic!("put {key}: {e}"));
        acked.insert(key, value);
    }
    acked
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_write_survives_killing_the_leader() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut cluster = LocalCluster::start(Path::new(EXE), dir.path(), 3, Vec::new())
        .await
        .unwrap_or_else(|e| panic!("cluster did not start: {e}"));
    let leader = cluster
        .wait_for_leader(Duration::from_secs(60))
        .await
        .expect("leader");
    let follower = cluster
        .nodes
        .iter()
        .find(|n| n.id != leader)
        .expect("a follower");

    // gRPC through a follower (forwarded to the leader), JSON-RPC at the leader.
    let grpc = GrpcClient::connect(&follower.api).await.expect("gRPC");
    let mut acked = write_keys(&grpc, "grpc", 20).await;
    let leader_node = cluster.node(leader).expect("leader node");
    let jsonrpc = JsonRpcClient::new(&leader_node.jsonrpc).expect("JSON-RPC");
    acked.extend(write_keys(&jsonrpc, "jsonrpc", 20).await);

    // The typed errors travel too: a stale compare-and-swap is a Conflict on both wires.
    let revision = grpc
        .compare_and_swap("cas".into(), 0, "first".into())
        .await
        .expect("cas on a new key");
    assert!(revision > 0);
    match jsonrpc
        .compare_and_swap("cas".into(), 0, "second".into())
        .await
    {
        Err(CallError::Domain(KvError::Conflict(_))) => {}
        other => panic!("expected a Conflict, got {other:?}"),
    }
    acked.insert("cas".into(), "first".into());

    cluster.kill(leader).expect("kill the leader");
    let new_leader = cluster
        .wait_for_leader(Duration::from_secs(60))
        .await
        .expect("a new leader");
    assert_ne!(new_leader, leader);
    let survivor = cluster.node(new_leader).expect("new leader");
    let after = GrpcClient::connect(&survivor.api)
        .await
        .expect("gRPC to the new leader")
        .retrying(5);
    acked.extend(write_keys(&after, "after", 10).await);

    for node in cluster.nodes.iter().filter(|n| n.is_running()) {
        let client = GrpcClient::connect(&node.api)
            .await
            .expect("connect")
            .with_read_level(ReadLevel::Linearizable);
        for (key, value) in &acked {
            let entry = client.get(key.clone()).await.expect("get");
            let got = entry.map(|e| e.value);
            assert_eq!(got.as_ref(), Some(value), "node {}: {key}", node.id);
        }
        let listed = client.range("grpc-".into(), 100).await.expect("range");
        assert_eq!(listed.len(), 20, "node {}", node.id);
    }
    let replicas = cluster
        .converged(Duration::from_secs(60))
        .await
        .expect("replicas converge");
    assert_eq!(replicas.len(), 2);
}
