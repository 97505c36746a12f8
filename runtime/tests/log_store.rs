//! The durable raft log store: reads, log state, durability across reopen, truncate and purge,
//! and group commit.

use std::collections::BTreeSet;
use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use openraft::entry::RaftEntry;
use openraft::storage::{IOFlushed, LogState, RaftLogStorage};
use openraft::testing::{blank_ent, log_id, membership_ent};
use openraft::type_config::TypeConfigExt;
use openraft::{EntryPayload, RaftLogReader};
use runtime::raft::log_store::LogStore;
use runtime::raft::types::{C, Entry, Envelope, LogId, Vote};

/// How long any single step may take before the test fails instead of hanging.
const STEP: Duration = Duration::from_secs(20);

/// Awaits `future`, failing the test if it takes longer than [`STEP`].
async fn within<T>(what: &str, future: impl Future<Output = T>) -> T {
    match tokio::time::timeout(STEP, future).await {
        Ok(value) => value,
        Err(_) => panic!("{what}: no result within {STEP:?}"),
    }
}

/// A callback and the receiver that learns when it was completed.
fn flushed() -> (
    IOFlushed<C>,
    impl Future<Output = Result<Result<(), io::Error>, impl std::fmt::Debug>>,
) {
    let (tx, rx) = C::oneshot();
    (IOFlushed::signal(tx), rx)
}

fn lid(term: u64, index: u64) -> LogId {
    log_id::<C>(term, 1, index)
}

/// A normal entry whose command is `{"op": "deposit", "n": <index>}`, spacing kept verbatim.
fn normal(term: u64, index: u64) -> Entry {
    let command = format!(r#"{{"op": "deposit",  "n": {index}}}"#).into_bytes();
    Entry::new_normal(
        lid(term, index),
        Envelope {
            client: "c1".into(),
            seq: index,
            ack: index - 1,
            time_us: 1_700_000_000_000_000 + index as i64,
            command,
        },
    )
}

/// Normal entries `from..=to` of `term`.
fn normals(term: u64, from: u64, to: u64) -> Vec<Entry> {
    (from..=to).map(|i| normal(term, i)).collect()
}

fn db_path(dir: &Path) -> PathBuf {
    dir.join("data").join("raft-log.db")
}

/// Appends `entries` and waits until they are durable.
async fn append_durable(store: &mut LogStore, entries: Vec<Entry>) {
    let (cb, done) = flushed();
    within("append", store.append(entries, cb))
        .await
        .expect("append");
    within("flush", done)
        .await
        .expect("callback completed")
        .expect("flushed");
}

/// The log ids of `entries`.
fn ids(entries: &[Entry]) -> Vec<LogId> {
    entries.iter().map(|e| e.log_id).collect()
}

async fn read(
    store: &mut LogStore,
    range: impl std::ops::RangeBounds<u64> + Clone + std::fmt::Debug + Send,
) -> Vec<Entry> {
    within("read", store.try_get_log_entries(range))
        .await
        .expect("read entries")
}

async fn state(store: &mut LogStore) -> LogState<C> {
    within("log state", store.get_log_state())
        .await
        .expect("log state")
}

#[tokio::test]
async fn append_reads_back_with_log_state() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut store = LogStore::open(&db_path(dir.path())).expect("open");

    assert_eq!(state(&mut store).await, LogState::default());
    assert!(read(&mut store, ..).await.is_empty());

    let mut entries = vec![
        blank_ent::<C>(1, 1, 1),
        membership_ent::<C>(1, 1, 2, vec![BTreeSet::from([1, 2, 3])]),
    ];
    entries.extend(normals(1, 3, 6));
    append_durable(&mut store, entries).await;

    let all = read(&mut store, ..).await;
    assert_eq!(ids(&all), (1..=6).map(|i| lid(1, i)).collect::<Vec<_>>());
    assert!(matches!(all[0].payload, EntryPayload::Blank));
    match &all[1].payload {
        EntryPayload::Membership(m) => {
            assert_eq!(
                m.voter_ids().collect::<BTreeSet<_>>(),
                BTreeSet::from([1, 2, 3])
            );
        }
        other => panic!("expected a membership entry, got {other:?}"),
    }
    match &all[3].payload {
        EntryPayload::Normal(env) => {
            assert_eq!(env.client, "c1");
            assert_eq!(env.seq, 4);
            assert_eq!(env.time_us, 1_700_000_000_000_004);
            assert_eq!(
                env.command, br#"{"op": "deposit",  "n": 4}"#,
                "kept verbatim"
            );
        }
        other => panic!("expected a normal entry, got {other:?}"),
    }

    // Range bounds of every kind.
    assert_eq!(
        ids(&read(&mut store, 2..4).await),
        vec![lid(1, 2), lid(1, 3)]
    );
    assert_eq!(
        ids(&read(&mut store, 5..).await),
        vec![lid(1, 5), lid(1, 6)]
    );
    assert_eq!(ids(&read(&mut store, ..=1).await), vec![lid(1, 1)]);
    assert_eq!(ids(&read(&mut store, 6..=6).await), vec![lid(1, 6)]);
    assert!(read(&mut store, 7..100).await.is_empty());
    assert!(read(&mut store, 3..3).await.is_empty());
    assert!(read(&mut store, ..0).await.is_empty());
    assert_eq!(read(&mut store, 0..=u64::MAX).await.len(), 6);

    assert_eq!(
        state(&mut store).await,
        LogState {
            last_purged_log_id: None,
            last_log_id: Some(lid(1, 6)),
        }
    );

    // The log reader is a view of the same log, and sees later appends.
    let mut reader = store.get_log_reader().await;
    append_durable(&mut store, normals(2, 7, 7)).await;
    assert_eq!(
        ids(&within("reader", reader.try_get_log_entries(6..))
            .await
            .expect("read")),
        vec![lid(1, 6), lid(2, 7)]
    );
}

#[tokio::test]
async fn reads_see_appends_before_their_commit() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut store = LogStore::open(&db_path(dir.path())).expect("open");

    let (cb, done) = flushed();
    store.append(normals(1, 1, 3), cb).await.expect("append");
    // Not awaiting the callback: the read is queued behind the append and sees it.
    assert_eq!(read(&mut store, ..).await.len(), 3);
    assert_eq!(state(&mut store).await.last_log_id, Some(lid(1, 3)));
    within("flush", done)
        .await
        .expect("callback completed")
        .expect("flushed");
}

#[tokio::test]
async fn everything_survives_a_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = db_path(dir.path());
    let vote = Vote::new_committed(3, 2);
    {
        let mut store = LogStore::open(&path).expect("open");
        assert_eq!(store.read_vote().await.expect("vote"), None);
        assert_eq!(store.read_committed().await.expect("committed"), None);

        append_durable(&mut store, normals(1, 1, 5)).await;
        append_durable(&mut store, normals(3, 6, 8)).await;
        store.save_vote(&vote).await.expect("save vote");
        store
            .save_committed(Some(lid(3, 7)))
            .await
            .expect("save committed");
        assert_eq!(store.read_vote().await.expect("vote"), Some(vote));
        assert_eq!(
            store.read_committed().await.expect("committed"),
            Some(lid(3, 7))
        );
        // Dropping the last clone stops the writer thread and closes the database.
    }

    let mut store = LogStore::open(&path).expect("reopen");
    let all = read(&mut store, ..).await;
    assert_eq!(
        ids(&all),
        (1..=5)
            .map(|i| lid(1, i))
            .chain((6..=8).map(|i| lid(3, i)))
            .collect::<Vec<_>>()
    );
    match &all[7].payload {
        EntryPayload::Normal(env) => {
            assert_eq!(env.command, br#"{"op": "deposit",  "n": 8}"#);
        }
        other => panic!("expected a normal entry, got {other:?}"),
    }
    assert_eq!(store.read_vote().await.expect("vote"), Some(vote));
    assert_eq!(
        store.read_committed().await.expect("committed"),
        Some(lid(3, 7))
    );
    assert_eq!(
        state(&mut store).await,
        LogState {
            last_purged_log_id: None,
            last_log_id: Some(lid(3, 8)),
        }
    );

    // Forgetting the committed log id is durable too.
    store.save_committed(None).await.expect("save committed");
    drop(store);
    let mut store = LogStore::open(&path).expect("reopen");
    assert_eq!(store.read_committed().await.expect("committed"), None);
    drop(store);

    // The file is a WAL-mode SQLite database with the documented schema.
    let conn = rusqlite::Connection::open(&path).expect("sqlite");
    let mode: String = conn
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .expect("journal mode");
    assert_eq!(mode, "wal");
    let (rows, max_idx, term): (i64, i64, i64) = conn
        .query_row(
            "SELECT count(*), max(idx), (SELECT term FROM log WHERE idx = 8) FROM log",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .expect("log table");
    assert_eq!((rows, max_idx, term), (8, 8, 3));
    let keys: Vec<String> = conn
        .prepare("SELECT key FROM meta ORDER BY key")
        .expect("prepare")
        .query_map([], |r| r.get(0))
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("meta keys");
    assert_eq!(keys, vec!["format".to_string(), "vote".to_string()]);
}

#[tokio::test]
async fn truncate_after_keeps_up_to_the_given_log_id() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = db_path(dir.path());
    let mut store = LogStore::open(&path).expect("open");
    append_durable(&mut store, normals(1, 1, 10)).await;

    store
        .truncate_after(Some(lid(1, 5)))
        .await
        .expect("truncate");
    assert_eq!(
        ids(&read(&mut store, ..).await),
        (1..=5).map(|i| lid(1, i)).collect::<Vec<_>>()
    );
    assert_eq!(state(&mut store).await.last_log_id, Some(lid(1, 5)));

    // A new leader's entries replace the truncated ones.
    append_durable(&mut store, normals(2, 6, 7)).await;
    assert_eq!(
        ids(&read(&mut store, 4..).await),
        vec![lid(1, 4), lid(1, 5), lid(2, 6), lid(2, 7)]
    );

    // Truncating past the end changes nothing.
    store
        .truncate_after(Some(lid(2, 20)))
        .await
        .expect("truncate");
    assert_eq!(read(&mut store, ..).await.len(), 7);

    drop(store);
    let mut store = LogStore::open(&path).expect("reopen");
    assert_eq!(state(&mut store).await.last_log_id, Some(lid(2, 7)));

    store.truncate_after(None).await.expect("truncate all");
    assert!(read(&mut store, ..).await.is_empty());
    assert_eq!(state(&mut store).await, LogState::default());
}

#[tokio::test]
async fn purge_deletes_up_to_and_remembers_last_purged() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = db_path(dir.path());
    let mut store = LogStore::open(&path).expect("open");
    append_durable(&mut store, normals(1, 1, 10)).await;

    store.purge(lid(1, 3)).await.expect("purge");
    assert_eq!(
        ids(&read(&mut store, ..).await),
        (4..=10).map(|i| lid(1, i)).collect::<Vec<_>>()
    );
    assert_eq!(
        state(&mut store).await,
        LogState {
            last_purged_log_id: Some(lid(1, 3)),
            last_log_id: Some(lid(1, 10)),
        }
    );

    drop(store);
    let mut store = LogStore::open(&path).expect("reopen");
    assert_eq!(
        state(&mut store).await,
        LogState {
            last_purged_log_id: Some(lid(1, 3)),
            last_log_id: Some(lid(1, 10)),
        }
    );

    // Purging everything: the last log id is the last purged one.
    store.purge(lid(1, 10)).await.expect("purge all");
    assert!(read(&mut store, ..).await.is_empty());
    let purged_all = LogState {
        last_purged_log_id: Some(lid(1, 10)),
        last_log_id: Some(lid(1, 10)),
    };
    assert_eq!(state(&mut store).await, purged_all);

    drop(store);
    let mut store = LogStore::open(&path).expect("reopen");
    assert_eq!(state(&mut store).await, purged_all);

    // Purging beyond the end (after installing a snapshot) moves both forward.
    store.purge(lid(2, 15)).await.expect("purge ahead");
    assert_eq!(
        state(&mut store).await,
        LogState {
            last_purged_log_id: Some(lid(2, 15)),
            last_log_id: Some(lid(2, 15)),
        }
    );

    // The log continues after the purged id.
    append_durable(&mut store, normals(2, 16, 17)).await;
    assert_eq!(
        ids(&read(&mut store, ..).await),
        vec![lid(2, 16), lid(2, 17)]
    );
    assert_eq!(
        state(&mut store).await,
        LogState {
            last_purged_log_id: Some(lid(2, 15)),
            last_log_id: Some(lid(2, 17)),
        }
    );
}

#[tokio::test]
async fn a_reader_clone_outlives_the_store() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut store = LogStore::open(&db_path(dir.path())).expect("open");
    append_durable(&mut store, normals(1, 1, 2)).await;
    let mut reader = store.get_log_reader().await;
    drop(store);
    assert_eq!(
        within("reader", reader.try_get_log_entries(..))
            .await
            .expect("read")
            .len(),
        2
    );
}

#[tokio::test]
async fn appends_queued_together_share_commits() {
    const APPENDS: u64 = 200;

    let dir = tempfile::tempdir().expect("tempdir");
    let mut store = LogStore::open(&db_path(dir.path())).expect("open");
    let before = store.commit_count();

    // 200 single-entry appends queued back to back, without awaiting their callbacks.
    let mut pending = Vec::new();
    for i in 1..=APPENDS {
        let (cb, done) = flushed();
        store.append(vec![normal(1, i)], cb).await.expect("append");
        pending.push(done);
    }
    for done in pending {
        within("flush", done)
            .await
            .expect("callback completed")
            .expect("flushed");
    }
    let commits = store.commit_count() - before;
    eprintln!("group commit: {APPENDS} appends durable after {commits} commits");
    assert!(commits >= 1);
    assert!(commits < APPENDS, "{commits} commits for {APPENDS} appends");

    assert_eq!(read(&mut store, ..).await.len() as u64, APPENDS);
    assert_eq!(state(&mut store).await.last_log_id, Some(lid(1, APPENDS)));

    // Awaited one at a time, each append is its own commit.
    let before = store.commit_count();
    for i in APPENDS + 1..=APPENDS + 5 {
        append_durable(&mut store, vec![normal(1, i)]).await;
    }
    let sequential = store.commit_count() - before;
    eprintln!("sequential: 5 awaited appends after {sequential} commits");
    assert_eq!(sequential, 5);
}

#[tokio::test]
async fn a_log_of_another_format_is_refused() {
    use runtime::raft::log_store::LogStoreError;

    let dir = tempfile::tempdir().expect("tempdir");
    let path = db_path(dir.path());
    {
        let mut store = LogStore::open(&path).expect("open a new log");
        append_durable(&mut store, normals(1, 1, 3)).await;
    }
    // Reopened as it was: fine.
    drop(LogStore::open(&path).expect("reopen"));

    // A log recorded as another format.
    let conn = rusqlite::Connection::open(&path).expect("sqlite");
    conn.execute("UPDATE meta SET value = '9' WHERE key = 'format'", [])
        .expect("edit");
    drop(conn);
    match LogStore::open(&path) {
        Err(LogStoreError::Format { found, .. }) => assert_eq!(found, "9"),
        other => panic!("expected a format error, got {other:?}"),
    }

    // A log from before formats were recorded (JSON entries, no `format` key).
    let conn = rusqlite::Connection::open(&path).expect("sqlite");
    conn.execute("DELETE FROM meta WHERE key = 'format'", [])
        .expect("edit");
    drop(conn);
    let err = LogStore::open(&path).expect_err("an unversioned log is refused");
    assert!(matches!(err, LogStoreError::Format { .. }), "{err:?}");
    assert!(err.to_string().contains("format 1"), "{err}");
}

#[tokio::test]
async fn a_failed_write_leaves_no_hole_and_stops_later_writes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = db_path(dir.path());
    let mut store = LogStore::open(&path).expect("open");
    append_durable(&mut store, normals(1, 1, 4)).await;

    // The disk "fails" on entry 5 (a trigger stands in for ENOSPC at that row).
    let conn = rusqlite::Connection::open(&path).expect("sqlite");
    conn.execute_batch(
        "CREATE TRIGGER fail_5 BEFORE INSERT ON log WHEN NEW.idx = 5
         BEGIN SELECT RAISE(ABORT, 'disk full'); END;",
    )
    .expect("trigger");
    drop(conn);

    // Entries 5 and 6 queued back to back, as openraft does without waiting.
    let mut pending = Vec::new();
    for i in 5..=6 {
        let (cb, done) = flushed();
        store.append(vec![normal(1, i)], cb).await.expect("queued");
        pending.push(done);
    }
    for done in pending {
        let outcome = within("flush", done).await.expect("callback completed");
        assert!(outcome.is_err(), "an append after the failure was stored");
    }
    let (cb, done) = flushed();
    store.append(vec![normal(1, 7)], cb).await.expect("queued");
    assert!(within("flush", done).await.expect("completed").is_err());
    drop(store);

    // Reopened: exactly 1..=4, no hole.
    let conn = rusqlite::Connection::open(&path).expect("sqlite");
    let stored: Vec<i64> = conn
        .prepare("SELECT idx FROM log ORDER BY idx")
        .expect("prepare")
        .query_map([], |r| r.get(0))
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("rows");
    assert_eq!(stored, vec![1, 2, 3, 4]);
}
