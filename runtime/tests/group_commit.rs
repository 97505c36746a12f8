//! Group commit in the state machine: applied batches share one transaction of the state
//! database, which readers see only once it commits; a reader that waits for an index makes
//! it commit at once, and otherwise it commits by its entry limit, its time limit, before any
//! other work on the writer, and when the state machine closes.

mod common;

use std::time::Duration;

use common::{STEP, open_rows, within};
use openraft::entry::RaftEntry;
use openraft::storage::RaftStateMachine;
use openraft::testing::log_id;
use runtime::raft::state_machine::{CommitPolicy, StateMachine};
use runtime::raft::types::{C, Entry, Envelope};
use runtime::rusqlite::Connection;

const HOUR: Duration = Duration::from_secs(3600);

fn open(dir: &std::path::Path, policy: CommitPolicy) -> StateMachine {
    let sm = open_rows(dir);
    sm.set_commit_policy(policy).expect("policy");
    sm
}

fn entry(index: u64) -> Entry {
    Entry::new_normal(
        log_id::<C>(1, 1, index),
        Envelope {
            client: "c:test".into(),
            seq: index,
            ack: index,
            time_us: 1_800_000_000_000_000,
            command: b"add".to_vec(),
        },
    )
}

/// Applies entries `from..=to` as one batch.
async fn apply(sm: &mut StateMachine, from: u64, to: u64) {
    let batch: Vec<_> = (from..=to).map(|i| Ok((entry(i), None))).collect();
    within("apply", sm.apply(futures_util::stream::iter(batch)))
        .await
        .expect("apply");
}

/// What a reader sees: the rows committed.
async fn seen(sm: &StateMachine) -> String {
    let answer = within("query", sm.query(Vec::new())).await.expect("query");
    String::from_utf8(answer).expect("utf-8")
}

/// Polls what readers see until it is `rows`, for at most [`STEP`].
async fn until_seen(sm: &StateMachine, rows: &str) {
    let deadline = tokio::time::Instant::now() + STEP;
    while seen(sm).await != rows {
        assert!(
            tokio::time::Instant::now() < deadline,
            "readers never saw {rows} rows (they see {})",
            seen(sm).await
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn batches_share_a_commit_that_a_waiting_reader_makes_at_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut sm = open(
        dir.path(),
        CommitPolicy {
            entries: 100_000,
            within: HOUR,
        },
    );
    for batch in 0..10 {
        apply(&mut sm, batch * 3 + 1, batch * 3 + 3).await;
    }
    assert_eq!(
        sm.metrics().commits.get(),
        0,
        "a batch committed on its own"
    );
    assert_eq!(seen(&sm).await, "0", "a reader saw uncommitted batches");
    within("a reader waiting for index 30", sm.wait_applied(30, STEP))
        .await
        .expect("index 30 committed");
    assert_eq!(seen(&sm).await, "30");
    assert_eq!(
        sm.metrics().commits.get(),
        1,
        "ten batches, one commit when the reader asked"
    );
    // Nothing is pending: a reader of an index already committed does not wait.
    sm.wait_applied(12, Duration::from_millis(1))
        .await
        .expect("committed already");
}

#[tokio::test]
async fn the_open_transaction_commits_when_its_time_is_up() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut sm = open(
        dir.path(),
        CommitPolicy {
            entries: 100_000,
            within: Duration::from_millis(50),
        },
    );
    apply(&mut sm, 1, 3).await;
    // Nobody asks: the writer's thread commits when the 50 ms are up.
    until_seen(&sm, "3").await;
    assert_eq!(sm.metrics().commits.get(), 1);
}

#[tokio::test]
async fn the_open_transaction_commits_at_its_entry_limit() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut sm = open(
        dir.path(),
        CommitPolicy {
            entries: 5,
            within: HOUR,
        },
    );
    apply(&mut sm, 1, 3).await;
    apply(&mut sm, 4, 6).await;
    // Six entries reached the limit of five: committed after the second batch, without a
    // reader or a timer.
    until_seen(&sm, "6").await;
    apply(&mut sm, 7, 9).await;
    assert_eq!(sm.metrics().commits.get(), 1);
    assert_eq!(seen(&sm).await, "6", "the third batch is below the limit");
}

#[tokio::test]
async fn the_writers_other_work_and_a_close_commit_first() {
    let dir = tempfile::tempdir().expect("tempdir");
    let policy = CommitPolicy {
        entries: 100_000,
        within: HOUR,
    };
    let mut sm = open(dir.path(), policy);
    apply(&mut sm, 1, 4).await;
    // What openraft asks of the state machine sees everything applied.
    let (applied, _) = within("applied_state", sm.applied_state())
        .await
        .expect("applied state");
    assert_eq!(applied.map(|l| l.index), Some(4));
    assert_eq!(seen(&sm).await, "4", "applied_state commits first");

    apply(&mut sm, 5, 7).await;
    drop(sm);
    // The close commits: the database itself says 7, with no state machine open.
    let conn = Connection::open(dir.path().join("state.db")).expect("open");
    let deadline = std::time::Instant::now() + STEP;
    loop {
        let rows: i64 = conn
            .query_row("SELECT count(*) FROM rows", [], |r| r.get(0))
            .expect("count");
        if rows == 7 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the batch applied before the close was not committed ({rows} rows)"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A batch that fails to apply rolls back the open transaction, and with it batches applied
/// before it and already answered: the writer refuses every later batch, as after a failed
/// commit, instead of applying them on top of a database that lost those batches.
#[tokio::test]
async fn a_batch_that_fails_stops_the_writer_like_a_failed_commit() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut sm = open(
        dir.path(),
        CommitPolicy {
            entries: 100_000,
            within: HOUR,
        },
    );
    apply(&mut sm, 1, 3).await;
    let mut failing = entry(4);
    if let openraft::EntryPayload::Normal(env) = &mut failing.payload {
        env.command = common::FAIL.to_vec();
    }
    let failed = within(
        "a failing batch",
        sm.apply(futures_util::stream::iter(vec![Ok((failing, None))])),
    )
    .await;
    assert!(failed.is_err(), "the failing batch applied");
    let later: Vec<_> = (5..=6).map(|i| Ok((entry(i), None))).collect();
    let later = within(
        "a batch after the failure",
        sm.apply(futures_util::stream::iter(later)),
    )
    .await;
    assert!(
        later.is_err(),
        "a batch applied after the open transaction (entries 1 to 3) was rolled back"
    );
}
