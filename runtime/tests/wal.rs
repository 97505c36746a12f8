//! The state database's WAL is copied back by the state machine's checkpointer, beside apply:
//! apply itself never stops for a checkpoint, and the WAL is reused instead of growing.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::Rows;
use openraft::entry::RaftEntry;
use openraft::storage::RaftStateMachine;
use openraft::testing::log_id;
use runtime::raft::state_machine::StateMachine;
use runtime::raft::types::{C, Entry, Envelope};

fn entry(index: u64) -> Entry {
    Entry::new_normal(
        log_id::<C>(1, 1, index),
        Envelope {
            client: format!("c:{}", index % 64),
            seq: index / 64 + 1,
            ack: 0,
            time_us: 1_800_000_000_000_000,
            command: b"add".to_vec(),
        },
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_wal_is_checkpointed_beside_apply_and_reused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("state.db");
    let mut sm = StateMachine::open(Arc::new(Rows), &db, &dir.path().join("snapshots"))
        .expect("state machine");
    let wal = dir.path().join("state.db-wal");
    let mut index = 0;
    let mut sizes = Vec::new();
    for _round in 0..6 {
        for _batch in 0..60 {
            let batch: Vec<_> = (0..8)
                .map(|_| {
                    index += 1;
                    Ok((entry(index), None))
                })
                .collect();
            sm.apply(futures_util::stream::iter(batch))
                .await
                .expect("apply");
        }
        // Two checkpoints after the round: the second began after everything was written.
        let seen = sm.metrics().wal_checkpoints.get();
        let deadline = Instant::now() + Duration::from_secs(30);
        while sm.metrics().wal_checkpoints.get() < seen + 2 {
            assert!(Instant::now() < deadline, "no checkpoint within 30 s");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        sizes.push(std::fs::metadata(&wal).expect("the WAL").len());
    }
    assert_eq!(sm.digest().await.expect("digest").0, index.to_string());
    // Each round starts the WAL over; without checkpoints it would hold all six rounds.
    let (first, last) = (sizes[0], sizes[sizes.len() - 1]);
    assert!(first > 0, "{sizes:?}");
    assert!(
        last < first * 2,
        "the WAL grew round after round: {sizes:?}"
    );
}
