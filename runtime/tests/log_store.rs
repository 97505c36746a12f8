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
    dir.join("data").join("raft-log")
}

/// The segment files of the log in `dir`, oldest first.
fn segment_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("log dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .collect();
    files.sort();
    files
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

    // One preallocated segment file, the owner's only, starting with the magic.
    use std::os::unix::fs::PermissionsExt as _;
    let files = segment_files(&path);
    assert_eq!(files.len(), 1, "{files:?}");
    let meta = std::fs::metadata(&files[0]).expect("segment");
    assert_eq!(meta.len(), runtime::raft::log_store::SEGMENT_BYTES);
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    let bytes = std::fs::read(&files[0]).expect("read segment");
    assert_eq!(&bytes[..8], runtime::raft::log_store::MAGIC);
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

/// Rewrites the payload byte at `at` (counted from the first record's payload) of the first
/// record of `file`, and its CRC, so the record still checks.
fn rewrite_header_byte(file: &Path, at: usize, value: u8) {
    let mut bytes = std::fs::read(file).expect("read segment");
    let len = u32::from_le_bytes(bytes[8..12].try_into().expect("len")) as usize;
    bytes[8 + 8 + 1 + at] = value;
    let crc = crc32fast::hash(&bytes[16..16 + len]);
    bytes[12..16].copy_from_slice(&crc.to_le_bytes());
    std::fs::write(file, bytes).expect("write segment");
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

    // A segment recorded as another format (the header's first field, a varint).
    rewrite_header_byte(&segment_files(&path)[0], 0, 9);
    match LogStore::open(&path) {
        Err(LogStoreError::Format { found, .. }) => assert_eq!(found, "9"),
        other => panic!("expected a format error, got {other:?}"),
    }
}

#[tokio::test]
async fn the_sqlite_log_of_an_older_build_is_refused_with_what_to_do() {
    use runtime::raft::log_store::LogStoreError;

    let dir = tempfile::tempdir().expect("tempdir");
    let path = db_path(dir.path());
    std::fs::create_dir_all(dir.path().join("data")).expect("data dir");
    std::fs::write(path.with_extension("db"), b"SQLite format 3\0").expect("old log");
    let err = LogStore::open(&path).expect_err("an old SQLite log is refused");
    assert!(matches!(err, LogStoreError::OldSqlite { .. }), "{err:?}");
    assert!(err.to_string().contains("new data directory"), "{err}");
    assert!(!path.exists(), "a new log was made beside the old one");
}

/// The last byte that is not zero in `file`, plus one: where its records end.
fn written_end(file: &Path) -> usize {
    let bytes = std::fs::read(file).expect("read segment");
    bytes.iter().rposition(|b| *b != 0).map_or(0, |i| i + 1)
}

#[tokio::test]
async fn a_torn_tail_is_cut_and_the_log_goes_on() {
    use std::os::unix::fs::FileExt as _;

    let dir = tempfile::tempdir().expect("tempdir");
    let path = db_path(dir.path());
    {
        let mut store = LogStore::open(&path).expect("open");
        append_durable(&mut store, normals(1, 1, 5)).await;
    }
    // Half a record after the last one, as a crash in the middle of a write leaves it: a frame
    // that promises 300 bytes, a wrong CRC, and 40 bytes of payload.
    let file = segment_files(&path)[0].clone();
    let end = written_end(&file);
    let mut torn = 300u32.to_le_bytes().to_vec();
    torn.extend_from_slice(&0xdead_beef_u32.to_le_bytes());
    torn.push(2);
    torn.extend_from_slice(&[0x55; 40]);
    std::fs::OpenOptions::new()
        .write(true)
        .open(&file)
        .expect("open segment")
        .write_all_at(&torn, end as u64)
        .expect("tear");

    let mut store = LogStore::open(&path).expect("a torn tail is repaired, not refused");
    assert_eq!(
        ids(&read(&mut store, ..).await),
        (1..=5).map(|i| lid(1, i)).collect::<Vec<_>>()
    );
    assert_eq!(written_end(&file), end, "the torn bytes are gone");
    append_durable(&mut store, normals(1, 6, 7)).await;
    drop(store);

    let mut store = LogStore::open(&path).expect("reopen");
    assert_eq!(
        ids(&read(&mut store, ..).await),
        (1..=7).map(|i| lid(1, i)).collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn a_corrupt_record_before_the_tail_is_refused_with_its_position() {
    use runtime::raft::log_store::LogStoreError;

    let dir = tempfile::tempdir().expect("tempdir");
    let path = db_path(dir.path());
    {
        let mut store = LogStore::open(&path).expect("open");
        append_durable(&mut store, normals(1, 1, 5)).await;
    }
    // One flipped bit inside entry 3's command.
    let file = segment_files(&path)[0].clone();
    let mut bytes = std::fs::read(&file).expect("read");
    let needle = br#""n": 3}"#;
    let at = bytes
        .windows(needle.len())
        .position(|w| w == needle)
        .expect("entry 3 in the segment");
    bytes[at + 1] ^= 0x01;
    std::fs::write(&file, &bytes).expect("write");

    let err = LogStore::open(&path).expect_err("a corrupt middle is refused");
    match &err {
        LogStoreError::Corrupt { offset, path, .. } => {
            assert!(
                *offset > 8 && (*offset as usize) < at,
                "offset {offset}, entry at {at}"
            );
            assert!(path.ends_with(".seg"), "{path}");
        }
        other => panic!("expected a corrupt log, got {other:?}"),
    }
    assert!(err.to_string().contains("damaged at byte"), "{err}");
    // Nothing was cut: the bytes are as the test left them.
    assert_eq!(std::fs::read(&file).expect("read"), bytes);
}

#[tokio::test]
async fn purge_deletes_whole_segments_and_a_restart_reads_the_rest() {
    const MIB: usize = 1 << 20;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = db_path(dir.path());
    let big = |index: u64| {
        let mut entry = normal(1, index);
        if let EntryPayload::Normal(env) = &mut entry.payload {
            env.command = vec![b'x'; MIB];
        }
        entry
    };
    let mut store = LogStore::open(&path).expect("open");
    for index in 1..=40 {
        append_durable(&mut store, vec![big(index)]).await;
    }
    let before = segment_files(&path).len();
    assert!(before >= 3, "40 MiB in {before} segments");
    assert_eq!(store.segment_count(), before as u64);

    store.purge(lid(1, 30)).await.expect("purge");
    let after = segment_files(&path).len();
    assert!(
        after < before,
        "purge deleted no segment: {before} -> {after}"
    );
    assert!(after >= 1);
    drop(store);

    let mut store = LogStore::open(&path).expect("reopen");
    assert_eq!(
        state(&mut store).await,
        LogState {
            last_purged_log_id: Some(lid(1, 30)),
            last_log_id: Some(lid(1, 40)),
        }
    );
    // Read back from the files (the tail cache is empty after a reopen).
    let rest = read(&mut store, 31..=40).await;
    assert_eq!(ids(&rest), (31..=40).map(|i| lid(1, i)).collect::<Vec<_>>());
    for entry in &rest {
        match &entry.payload {
            EntryPayload::Normal(env) => assert_eq!(env.command.len(), MIB),
            other => panic!("expected a normal entry, got {other:?}"),
        }
    }
}

/// The offsets of the entry records in `file`: where their frames start (a record's kind byte
/// is 2, and its payload starts with the entry's log id: term 1, node 1, then the index).
fn entry_record_offsets(bytes: &[u8], count: u64) -> Vec<usize> {
    (1..=count)
        .map(|index| {
            let needle = [2u8, 1, 1, index as u8];
            bytes
                .windows(needle.len())
                .position(|w| w == needle)
                .map(|at| at - 8)
                .unwrap_or_else(|| panic!("entry {index} in the segment"))
        })
        .collect()
}

#[tokio::test]
async fn a_flipped_bit_in_a_record_length_is_refused_not_cut() {
    use runtime::raft::log_store::LogStoreError;

    let dir = tempfile::tempdir().expect("tempdir");
    let path = db_path(dir.path());
    {
        let mut store = LogStore::open(&path).expect("open");
        // 21 entries, each acknowledged on its own, with a vote between them.
        for index in 1..=21 {
            append_durable(&mut store, vec![normal(1, index)]).await;
            if index == 12 {
                within("vote", store.save_vote(&Vote::new(2, 1)))
                    .await
                    .expect("vote");
            }
        }
    }
    let file = segment_files(&path)[0].clone();
    let mut bytes = std::fs::read(&file).expect("read");
    // One bit of entry 8's length field: the length now points into the records after it.
    let at = entry_record_offsets(&bytes, 21)[7];
    bytes[at + 1] ^= 0x01;
    std::fs::write(&file, &bytes).expect("write");

    let err = LogStore::open(&path).expect_err("a damaged length is refused");
    match &err {
        LogStoreError::Corrupt { offset, .. } => assert_eq!(*offset as usize, at, "{err}"),
        other => panic!("expected a corrupt log, got {other:?}"),
    }
    assert!(err.to_string().contains("checks"), "{err}");
    // Nothing was cut or zeroed, and a second try says the same.
    assert_eq!(std::fs::read(&file).expect("read"), bytes);
    assert!(matches!(
        LogStore::open(&path),
        Err(LogStoreError::Corrupt { .. })
    ));
}

/// A replication stream may read a range its leader has just purged (openraft resumes a payload
/// chosen before the purge; `bank chaos` left a follower behind for good when that read came
/// back empty). It gets the entries it asked for, from the tail, or none after a restart: never
/// a run that starts after where it asked. Other readers see the purge as openraft's storage
/// suite requires.
#[tokio::test]
async fn a_replication_read_of_a_just_purged_range_gets_it_whole_or_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = db_path(dir.path());
    let mut store = LogStore::open(&path).expect("open");
    append_durable(&mut store, normals(1, 1, 100)).await;
    within("purge", store.purge(lid(1, 50)))
        .await
        .expect("purge");
    assert_eq!(
        ids(&read(&mut store, 40..=60).await),
        (51..=60).map(|i| lid(1, i)).collect::<Vec<_>>(),
        "a plain read sees the purge"
    );
    let streamed = within("replication read", store.limited_get_log_entries(40, 61))
        .await
        .expect("replication read");
    assert_eq!(
        ids(&streamed),
        (40..=60).map(|i| lid(1, i)).collect::<Vec<_>>()
    );
    drop(store);

    let mut store = LogStore::open(&path).expect("reopen");
    let streamed = within("replication read", store.limited_get_log_entries(40, 61))
        .await
        .expect("replication read");
    assert!(
        streamed.is_empty(),
        "not a run from entry 51: {:?}",
        ids(&streamed)
    );
    let streamed = within("replication read", store.limited_get_log_entries(51, 61))
        .await
        .expect("replication read");
    assert_eq!(
        ids(&streamed),
        (51..=60).map(|i| lid(1, i)).collect::<Vec<_>>()
    );
}

/// Large commands do not make the tail cache gigabytes: it holds at most `TAIL_BYTES` of
/// entries, and the older ones are read back from the files.
#[tokio::test]
async fn the_tail_cache_is_bounded_in_bytes() {
    use runtime::raft::log_store::TAIL_BYTES;

    let dir = tempfile::tempdir().expect("tempdir");
    let path = db_path(dir.path());
    let mut store = LogStore::open(&path).expect("open");
    let big = |index: u64| {
        Entry::new_normal(
            lid(1, index),
            Envelope {
                client: "big".into(),
                seq: index,
                ack: 0,
                time_us: 0,
                command: vec![index as u8; 2 << 20],
            },
        )
    };
    for index in 1..=48 {
        append_durable(&mut store, vec![big(index)]).await;
    }
    let held = store.tail_bytes();
    assert!(
        held <= TAIL_BYTES && held > TAIL_BYTES / 2,
        "the tail holds {held} bytes of 96 MiB appended"
    );
    let all = read(&mut store, ..).await;
    assert_eq!(ids(&all), (1..=48).map(|i| lid(1, i)).collect::<Vec<_>>());
    within("truncate", store.truncate_after(Some(lid(1, 40))))
        .await
        .expect("truncate");
    assert!(store.tail_bytes() < held, "a truncation frees its bytes");
}
