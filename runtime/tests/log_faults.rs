//! Disk faults in the raft log, injected with failpoints: a failed write, a failed sync and a
//! write torn halfway. Each one fails its batch and every write after it (no hole), and a
//! reopen finds exactly what was durable before the fault, and goes on.
//!
//! Failpoints are process-wide, so the tests of this file run one at a time.

use std::future::Future;
use std::io;
use std::path::Path;
use std::time::Duration;

use openraft::entry::RaftEntry;
use openraft::storage::{IOFlushed, RaftLogStorage};
use openraft::testing::log_id;
use openraft::type_config::TypeConfigExt;
use openraft::{EntryPayload, RaftLogReader};
use runtime::raft::log_store::LogStore;
use runtime::raft::types::{C, Entry, Envelope, LogId};
use tokio::sync::Mutex;

static ONE_AT_A_TIME: Mutex<()> = Mutex::const_new(());

const STEP: Duration = Duration::from_secs(20);

async fn within<T>(what: &str, future: impl Future<Output = T>) -> T {
    match tokio::time::timeout(STEP, future).await {
        Ok(value) => value,
        Err(_) => panic!("{what}: no result within {STEP:?}"),
    }
}

fn lid(index: u64) -> LogId {
    log_id::<C>(1, 1, index)
}

fn normal(index: u64) -> Entry {
    Entry::new_normal(
        lid(index),
        Envelope {
            client: "c1".into(),
            seq: index,
            ack: 0,
            time_us: 0,
            command: format!("command {index}").into_bytes(),
        },
    )
}

/// Appends entry `index` and returns whether it became durable.
async fn append(store: &mut LogStore, index: u64) -> Result<(), io::Error> {
    let (tx, rx) = C::oneshot();
    within(
        "append",
        store.append(vec![normal(index)], IOFlushed::signal(tx)),
    )
    .await?;
    within("flush", rx).await.expect("the callback completed")
}

/// The indexes a reopened log holds.
async fn indexes(path: &Path) -> Vec<u64> {
    let mut store = LogStore::open(path).expect("reopen after the fault");
    let entries = within("read", store.try_get_log_entries(..))
        .await
        .expect("read");
    for e in &entries {
        assert!(matches!(e.payload, EntryPayload::Normal(_)));
    }
    entries.iter().map(|e| e.log_id.index).collect()
}

/// Runs the fault `point` against entry 5 of a log that holds 1..=4.
async fn fault_at_entry_5(point: &str) {
    let _serial = ONE_AT_A_TIME.lock().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("raft-log");
    let mut store = LogStore::open(&path).expect("open");
    for i in 1..=4 {
        append(&mut store, i)
            .await
            .expect("durable before the fault");
    }

    runtime::failpoint::configure(point, "1*return").expect("failpoint");
    let failed = append(&mut store, 5).await;
    runtime::failpoint::configure(point, "off").expect("failpoint off");
    let err = failed.expect_err("the faulty write was reported durable");
    eprintln!("{point}: {err}");
    // Nothing after a failed write is written, even with the disk healthy again.
    let later = append(&mut store, 6).await;
    assert!(
        later.is_err(),
        "{point}: a write after the failure was stored"
    );
    assert!(
        within("vote", store.save_vote(&openraft::Vote::new(2, 1)))
            .await
            .is_err(),
        "{point}: a vote after the failure was stored"
    );
    drop(store);

    let held = indexes(&path).await;
    match point {
        // The sync failed after the write: the bytes may well have reached the disk (here they
        // did); either way there is no hole.
        "raft_log::commit" => assert!(
            held == vec![1, 2, 3, 4] || held == vec![1, 2, 3, 4, 5],
            "{point}: {held:?}"
        ),
        _ => assert_eq!(held, vec![1, 2, 3, 4], "{point}"),
    }

    // The reopened log goes on after what it holds.
    let mut store = LogStore::open(&path).expect("reopen");
    let next = held.len() as u64 + 1;
    append(&mut store, next)
        .await
        .expect("a write after the reopen");
    drop(store);
    assert_eq!(indexes(&path).await, (1..=next).collect::<Vec<_>>());
}

#[tokio::test]
async fn a_failed_write_leaves_no_hole_and_stops_later_writes() {
    fault_at_entry_5("raft_log::write").await;
}

#[tokio::test]
async fn a_failed_sync_leaves_no_hole_and_stops_later_writes() {
    fault_at_entry_5("raft_log::commit").await;
}

#[tokio::test]
async fn a_torn_write_is_cut_at_the_next_start() {
    fault_at_entry_5("raft_log::torn").await;
}
