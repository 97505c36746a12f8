//! Large commands: a follower that was down while 40 entries of 3 MiB were written catches up
//! (the leader sends them in byte-bounded messages, however many openraft batches), and a
//! command over `--max-command-bytes` is refused before the log, changing nothing.

use std::path::Path;
use std::time::Duration;

use kv_generated::KvApi;
use kv_generated::grpc::GrpcClient;
use runtime::ops::cluster::LocalCluster;
use runtime::{CallError, Failure};

const EXE: &str = env!("CARGO_BIN_EXE_kv");

/// 3 MiB, the size of every big value.
const BIG: usize = 3 << 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_catches_up_on_big_entries_and_an_oversized_command_is_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    // No snapshot while the follower is down: it must catch up from the log itself.
    let args = [
        "--snapshot-every",
        "100000",
        "--max-command-bytes",
        "3500000",
    ];
    let mut c = LocalCluster::start(
        Path::new(EXE),
        dir.path(),
        3,
        args.iter().map(|s| s.to_string()).collect(),
    )
    .await
    .unwrap_or_else(|e| panic!("cluster did not start: {e}"));
    let leader = c
        .wait_for_leader(Duration::from_secs(60))
        .await
        .expect("leader");
    let follower = c
        .nodes
        .iter()
        .find(|n| n.id != leader)
        .expect("a follower")
        .id;
    let client = GrpcClient::connect(&c.node(leader).expect("leader").api)
        .await
        .expect("connect")
        .retrying(10);

    let t0 = std::time::Instant::now();
    c.kill(follower).expect("kill the follower");
    for i in 0..40u8 {
        let value = char::from(b'a' + i % 26).to_string().repeat(BIG);
        client
            .put(format!("big-{i:02}"), value)
            .await
            .unwrap_or_else(|e| panic!("put big-{i:02}: {e}"));
    }
    eprintln!("written in {:?}", t0.elapsed());
    c.restart(follower).await.expect("restart the follower");
    c.wait_caught_up(Duration::from_secs(180))
        .await
        .expect("the follower catches up on 120 MiB of entries");
    eprintln!("caught up after {:?}", t0.elapsed());
    let replicas = c
        .converged(Duration::from_secs(60))
        .await
        .expect("converged");
    assert_eq!(replicas.len(), 3);
    assert!(
        replicas.iter().all(|r| r.2 == replicas[0].2),
        "every replica holds the same state: {replicas:?}"
    );

    // Over the limit (but under the gRPC listener's 4 MiB): refused as sent, nothing applied.
    let refused = client
        .put("too-big".into(), "x".repeat(3_600_000))
        .await
        .expect_err("a command over --max-command-bytes is refused");
    match &refused {
        CallError::Failure(Failure::Rejected(message)) => {
            assert!(message.contains("--max-command-bytes"), "{message}")
        }
        other => panic!("expected a rejection, got {other:?}"),
    }
    let after = c
        .converged(Duration::from_secs(60))
        .await
        .expect("converged");
    assert_eq!(
        after[0].1, replicas[0].1,
        "the refused command entered the log"
    );
}
