//! The durable raft log: one SQLite file, written by one dedicated thread with group commit.
//!
//! [`LogStore`] keeps the raft log, the vote, the committed log id and the last purged log id in
//! its own SQLite database (WAL journal, `synchronous=FULL`), separate from the application's
//! database. Schema:
//!
//! - `log(idx INTEGER PRIMARY KEY, term INTEGER NOT NULL, entry BLOB NOT NULL)`: one row per
//!   entry; `entry` is the whole [`Entry`], encoded by [`encode`](super::types::encode).
//! - `meta(key TEXT PRIMARY KEY, value BLOB NOT NULL)`: `vote`, `committed` and `last_purged`,
//!   encoded the same way, and `format`, the [`FORMAT_VERSION`] the log was written with. A log
//!   of another format (or one from before the format was recorded) is refused at open with
//!   [`LogStoreError::Format`], never misread.
//!
//! # Threading and group commit
//!
//! One `std::thread` owns the connection. Every [`LogStore`] clone sends requests to it over a
//! channel and awaits a reply. The thread blocks for one request, then takes every request
//! already queued, runs them in order inside one SQLite transaction and commits once (one
//! fsync). Only after that commit does it complete the [`IOFlushed`] callbacks of the appends of
//! that batch and answer the writes that must be durable (`save_vote`, `truncate_after`,
//! `purge`). Appends that arrive together are therefore made durable by one fsync, which
//! [`LogStore::commit_count`] makes observable. A batch is all or nothing: if one write of it
//! fails (a full disk), the transaction is rolled back and every write of the batch gets the
//! error, so the log never has a hole.
//!
//! `save_committed` costs no fsync of its own: the committed id only lets a restart re-apply
//! sooner (the state machine persists what it applied), so it is held by the writer and written
//! with the next batch that commits anyway.
//!
//! # The tail cache
//!
//! Every appended entry is also kept in memory (the newest [`TAIL_CAPACITY`] entries, trimmed on
//! truncate and purge). Replication and apply read the tail, so a read of recent entries
//! neither decodes a row nor waits behind the writer's fsync; only older entries are read from
//! SQLite, through the writer thread, inside its open transaction (so they see every earlier
//! request, including appends not committed yet). Both paths see the appends in the order
//! openraft made them.
//!
//! The thread exits, closing the database, when the last clone is dropped; that drop waits for
//! it, so the file can be reopened right away.

use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use std::collections::BTreeMap;
use std::sync::Mutex;

use openraft::storage::{IOFlushed, LogState, RaftLogStorage};
use openraft::{OptionalSend, RaftLogReader};
use rusqlite::{Connection, OptionalExtension, Transaction, params};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::oneshot;

use super::types::{C, Entry, FORMAT_VERSION, LogId, Vote};

/// How many of the newest entries the tail cache holds.
pub const TAIL_CAPACITY: usize = 16_384;

/// `meta` key of the log's format version.
const KEY_FORMAT: &str = "format";

/// Why a log cannot be opened.
#[derive(Debug, thiserror::Error)]
pub enum LogStoreError {
    /// The file could not be opened or set up.
    #[error("{path}: {source}")]
    Io {
        /// The log file.
        path: String,
        /// What failed.
        source: io::Error,
    },
    /// The log was written in another format than this build reads.
    #[error(
        "{path}: the raft log is in format {found}, this build reads format {FORMAT_VERSION}; \
         start the node on a new data directory and let it rejoin (it receives a snapshot), \
         or run the build that wrote it"
    )]
    Format {
        /// The log file.
        path: String,
        /// The format found (`1 (JSON, unversioned)` for logs from before versions).
        found: String,
    },
}

impl From<LogStoreError> for io::Error {
    fn from(e: LogStoreError) -> Self {
        match e {
            LogStoreError::Io { source, .. } => source,
            other => io::Error::new(io::ErrorKind::InvalidData, other.to_string()),
        }
    }
}

/// `meta` key of the vote.
const KEY_VOTE: &str = "vote";
/// `meta` key of the committed log id.
const KEY_COMMITTED: &str = "committed";
/// `meta` key of the last purged log id.
const KEY_LAST_PURGED: &str = "last_purged";

/// The durable raft log store; see the [module documentation](self).
///
/// Cheap to clone: all clones share one writer thread and one database connection. The writer
/// thread stops when the last clone is dropped.
#[derive(Clone)]
pub struct LogStore {
    shared: Arc<Shared>,
    tail: Arc<Mutex<BTreeMap<u64, Entry>>>,
}

impl Debug for LogStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogStore")
            .field("commit_count", &self.commit_count())
            .finish_non_exhaustive()
    }
}

/// What every clone shares.
struct Shared {
    /// The request channel to the writer thread; `None` only while dropping.
    tx: Option<mpsc::Sender<Request>>,
    /// The writer thread, joined on drop.
    thread: Option<thread::JoinHandle<()>>,
    /// SQLite commits of transactions that wrote something.
    commits: Arc<AtomicU64>,
    /// How long each committed batch took, its fsync included.
    commit_seconds: prometheus_client::metrics::histogram::Histogram,
}

impl Drop for Shared {
    fn drop(&mut self) {
        // Closing the channel makes the writer finish what is queued and exit.
        drop(self.tx.take());
        if let Some(handle) = self.thread.take()
            && handle.join().is_err()
        {
            tracing::error!("the raft log writer thread panicked");
        }
    }
}

/// A reply to one request.
type Reply<T> = oneshot::Sender<Result<T, io::Error>>;

/// One row of the `log` table, serialized by the caller.
struct Row {
    idx: i64,
    term: i64,
    entry: Vec<u8>,
}

/// A request to the writer thread.
enum Request {
    /// A change, answered (through `done`) only after the commit of its batch.
    Write {
        /// What to change.
        op: WriteOp,
        /// Whom to tell once it is durable.
        done: Pending,
    },
    /// A read, answered as soon as the writer reaches it.
    Read(ReadOp),
    /// The committed log id (encoded; `None` forgets it), written with the next batch.
    Committed(Option<Vec<u8>>),
}

/// A change to the database.
enum WriteOp {
    /// Insert (or replace) these rows.
    Append(Vec<Row>),
    /// Save the vote.
    SaveVote(Vec<u8>),
    /// Delete entries with `idx > after` (all when `None`).
    TruncateAfter(Option<i64>),
    /// Delete entries with `idx <= upto` and record `last_purged`.
    Purge {
        /// The last index to delete.
        upto: i64,
        /// The purged log id, encoded.
        log_id: Vec<u8>,
    },
}

/// A read, with its reply channel.
enum ReadOp {
    /// Entries with `lo <= idx <= hi`.
    Entries {
        lo: i64,
        hi: i64,
        reply: Reply<Vec<Entry>>,
    },
    /// The log state.
    LogState(Reply<LogState<C>>),
    /// The vote.
    Vote(Reply<Option<Vote>>),
    /// The committed log id.
    Committed(Reply<Option<LogId>>),
}

impl Request {
    /// Answers the request with `err` without running it.
    fn fail(self, err: io::Error) {
        match self {
            Request::Write { done, .. } => done.complete(Err(err)),
            Request::Read(ReadOp::Entries { reply, .. }) => drop(reply.send(Err(err))),
            Request::Read(ReadOp::LogState(reply)) => drop(reply.send(Err(err))),
            Request::Read(ReadOp::Vote(reply)) => drop(reply.send(Err(err))),
            Request::Read(ReadOp::Committed(reply)) => drop(reply.send(Err(err))),
            Request::Committed(_) => {}
        }
    }
}

/// Whom to tell when a write is durable (or failed).
enum Pending {
    /// An append's callback.
    Flushed(IOFlushed<C>),
    /// A durable write's reply.
    Done(Reply<()>),
}

/// The committed log id to write with the next batch (`None`: nothing new).
type HeldCommitted = Option<Option<Vec<u8>>>;

impl Pending {
    /// Delivers the outcome.
    fn complete(self, result: Result<(), io::Error>) {
        match self {
            Pending::Flushed(cb) => cb.io_completed(result),
            Pending::Done(reply) => drop(reply.send(result)),
        }
    }
}

impl LogStore {
    /// Opens (creating it if needed) the log database at `path`, e.g.
    /// `data_dir.join("raft-log.db")`, and starts its writer thread.
    ///
    /// Creates missing parent directories. Blocks briefly while it opens the file and sets the
    /// schema up, so call it before starting raft (or from `spawn_blocking`).
    pub fn open(path: &Path) -> Result<Self, LogStoreError> {
        let located = |source: io::Error| LogStoreError::Io {
            path: path.display().to_string(),
            source,
        };
        let conn = Self::open_db(path).map_err(located)?;
        check_format(&conn).map_err(|found| match found {
            Ok(found) => LogStoreError::Format {
                path: path.display().to_string(),
                found,
            },
            Err(e) => located(e),
        })?;

        let (tx, rx) = mpsc::channel();
        let commits = Arc::new(AtomicU64::new(0));
        let thread_commits = Arc::clone(&commits);
        let commit_seconds = crate::metrics::latency_histogram();
        let thread_seconds = commit_seconds.clone();
        let thread = thread::Builder::new()
            .name("raft-log-writer".into())
            .spawn(move || writer_loop(conn, rx, &thread_commits, &thread_seconds))
            .map_err(located)?;

        Ok(Self {
            shared: Arc::new(Shared {
                tx: Some(tx),
                thread: Some(thread),
                commits,
                commit_seconds,
            }),
            tail: Arc::new(Mutex::new(BTreeMap::new())),
        })
    }

    /// Opens the database and sets the schema up.
    fn open_db(path: &Path) -> Result<Connection, io::Error> {
        if let Some(parent) = path.parent()
            && !parent.as_os_str().is_empty()
        {
            std::fs::create_dir_all(parent)?;
        }
        let conn = Connection::open(path).map_err(io::Error::other)?;
        // Its WAL and shared-memory files take the database's mode.
        crate::util::owner_only(path)?;
        let mode: String = conn
            .pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))
            .map_err(io::Error::other)?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(io::Error::other(format!(
                "{}: cannot switch the raft log to WAL (journal_mode is {mode})",
                path.display()
            )));
        }
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(io::Error::other)?;
        conn.busy_timeout(Duration::from_secs(5))
            .map_err(io::Error::other)?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS log (
                 idx   INTEGER PRIMARY KEY,
                 term  INTEGER NOT NULL,
                 entry BLOB NOT NULL
             );
             CREATE TABLE IF NOT EXISTS meta (
                 key   TEXT PRIMARY KEY,
                 value BLOB NOT NULL
             );",
        )
        .map_err(io::Error::other)?;
        Ok(conn)
    }

    /// How long each batch that changed the log took to commit, its fsync included (the node
    /// exports it as `raft_log_commit_seconds`).
    pub fn commit_seconds(&self) -> prometheus_client::metrics::histogram::Histogram {
        self.shared.commit_seconds.clone()
    }

    /// How many SQLite transactions that changed the log have been committed (each one fsync)
    /// since [`LogStore::open`]. With group commit this grows more slowly than the number of
    /// appends when appends arrive faster than the disk syncs.
    pub fn commit_count(&self) -> u64 {
        self.shared.commits.load(Ordering::Acquire)
    }

    /// Runs `f` on the tail cache.
    fn with_tail<T>(&self, f: impl FnOnce(&mut BTreeMap<u64, Entry>) -> T) -> Result<T, io::Error> {
        let mut tail = self
            .tail
            .lock()
            .map_err(|_| io::Error::other("the raft log tail cache lock is poisoned"))?;
        Ok(f(&mut tail))
    }

    /// The entries `lo..=hi` from the tail cache, if it holds every entry of the log from `lo`
    /// on (the cache is the newest part of the log, without gaps).
    fn read_tail(&self, lo: u64, hi: u64) -> Option<Vec<Entry>> {
        let tail = self.tail.lock().ok()?;
        let (&first, _) = tail.first_key_value()?;
        (lo >= first).then(|| tail.range(lo..=hi).map(|(_, e)| e.clone()).collect())
    }

    /// Sends a request to the writer thread.
    fn send(&self, req: Request) -> Result<(), io::Error> {
        let Some(tx) = &self.shared.tx else {
            return Err(writer_gone());
        };
        tx.send(req).map_err(|_| writer_gone())
    }

    /// Sends a read and awaits its answer.
    async fn read<T>(&self, make: impl FnOnce(Reply<T>) -> ReadOp) -> Result<T, io::Error> {
        let (reply, rx) = oneshot::channel();
        self.send(Request::Read(make(reply)))?;
        rx.await.map_err(|_| writer_gone())?
    }

    /// Sends a write and awaits its commit.
    async fn write(&self, op: WriteOp) -> Result<(), io::Error> {
        let (reply, rx) = oneshot::channel();
        self.send(Request::Write {
            op,
            done: Pending::Done(reply),
        })?;
        rx.await.map_err(|_| writer_gone())?
    }
}

/// The error when the writer thread is not there to answer.
fn writer_gone() -> io::Error {
    io::Error::other("the raft log writer thread has stopped")
}

/// Encodes a value for a row.
fn to_row<T: Serialize>(value: &T) -> Result<Vec<u8>, io::Error> {
    super::types::encode(value).map_err(io::Error::other)
}

/// Decodes a row's value.
fn from_row<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, io::Error> {
    super::types::decode(bytes).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// Checks the log's format version, recording the current one in a new log. `Err(Ok(found))`
/// names the format of a log this build cannot read.
fn check_format(conn: &Connection) -> Result<(), Result<String, io::Error>> {
    let stored: Option<String> = conn
        .query_row(
            "SELECT CAST(value AS TEXT) FROM meta WHERE key = ?1",
            [KEY_FORMAT],
            |r| r.get(0),
        )
        .optional()
        .map_err(|e| Err(io::Error::other(e)))?;
    let current = FORMAT_VERSION.to_string();
    match stored {
        Some(found) if found == current => Ok(()),
        Some(found) => Err(Ok(found)),
        None => {
            let used: i64 = conn
                .query_row(
                    "SELECT (SELECT count(*) FROM log) + (SELECT count(*) FROM meta)",
                    [],
                    |r| r.get(0),
                )
                .map_err(|e| Err(io::Error::other(e)))?;
            if used > 0 {
                return Err(Ok("1 (JSON, unversioned)".into()));
            }
            put_meta(conn, KEY_FORMAT, current.as_bytes()).map_err(Err)
        }
    }
}

/// A log index as SQLite stores it.
fn sql_index(index: u64) -> Result<i64, io::Error> {
    i64::try_from(index)
        .map_err(|_| io::Error::other(format!("log index {index} does not fit in SQLite")))
}

/// The inclusive `[lo, hi]` SQLite index range of `range`, or `None` if it is empty.
fn sql_range<RB: RangeBounds<u64>>(range: &RB) -> Option<(i64, i64)> {
    let lo = match range.start_bound() {
        Bound::Included(&x) => x,
        Bound::Excluded(&x) => x.checked_add(1)?,
        Bound::Unbounded => 0,
    };
    let hi = match range.end_bound() {
        Bound::Included(&x) => x,
        Bound::Excluded(&x) => x.checked_sub(1)?,
        Bound::Unbounded => u64::MAX,
    };
    let lo = i64::try_from(lo).ok()?;
    let hi = i64::try_from(hi).unwrap_or(i64::MAX);
    (lo <= hi).then_some((lo, hi))
}

/// The writer thread: one batch (one transaction, one commit) per wake-up.
fn writer_loop(
    mut conn: Connection,
    rx: mpsc::Receiver<Request>,
    commits: &AtomicU64,
    commit_seconds: &prometheus_client::metrics::histogram::Histogram,
) {
    let mut committed: HeldCommitted = None;
    let mut broken: Option<String> = None;
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        batch.extend(rx.try_iter());
        if let Some(why) = &broken {
            // After a failed write nothing more is written: a later append would leave a hole.
            for req in batch {
                req.fail(io::Error::other(format!(
                    "raft log: refused after an earlier write failed ({why}); restart the node"
                )));
            }
            continue;
        }
        let (started, before) = (std::time::Instant::now(), commits.load(Ordering::Acquire));
        broken = run_batch(&mut conn, batch, &mut committed, commits);
        if commits.load(Ordering::Acquire) != before {
            commit_seconds.observe(started.elapsed().as_secs_f64());
        }
    }
    // Last chance for the held committed id (a clean shutdown keeps it).
    if let Some(value) = committed.take() {
        let _ = write_committed(&conn, value.as_deref());
    }
    tracing::debug!("raft log writer thread stops: every LogStore was dropped");
}

/// Writes (or forgets) the committed log id.
fn write_committed(conn: &Connection, value: Option<&[u8]>) -> Result<(), io::Error> {
    match value {
        Some(value) => put_meta(conn, KEY_COMMITTED, value),
        None => conn
            .execute("DELETE FROM meta WHERE key = ?1", [KEY_COMMITTED])
            .map(drop)
            .map_err(io::Error::other),
    }
}

/// Runs `batch` in order inside one transaction, commits once, then completes the writes. A
/// held committed id is written with the first batch that has other writes to commit. Returns
/// why the batch failed, if it did: the writer then refuses every later request.
fn run_batch(
    conn: &mut Connection,
    batch: Vec<Request>,
    committed: &mut HeldCommitted,
    commits: &AtomicU64,
) -> Option<String> {
    let tx = match conn.transaction() {
        Ok(tx) => tx,
        Err(e) => {
            tracing::error!("raft log: cannot begin a transaction: {e}");
            for req in batch {
                req.fail(io::Error::other(format!(
                    "raft log: cannot begin a transaction: {e}"
                )));
            }
            return Some(e.to_string());
        }
    };

    let mut pending = Vec::new();
    let mut requests = batch.into_iter();
    let mut failed = None;
    for req in requests.by_ref() {
        match req {
            Request::Write { op, done } => match run_write(&tx, op) {
                Ok(()) => pending.push(done),
                Err(e) => {
                    failed = Some((e, done));
                    break;
                }
            },
            Request::Read(op) => run_read(&tx, op, committed),
            Request::Committed(value) => *committed = Some(value),
        }
    }
    if let Some((e, done)) = failed {
        // All or nothing: nothing of this batch stays, every write of it hears why.
        tracing::error!("raft log: write failed, the batch is rolled back: {e}");
        drop(tx.rollback());
        let message = format!("raft log: a write of this batch failed: {e}");
        done.complete(Err(e));
        for p in pending {
            p.complete(Err(io::Error::other(message.clone())));
        }
        for req in requests {
            req.fail(io::Error::other(message.clone()));
        }
        return Some(message);
    }
    if pending.is_empty() {
        // Only reads (and perhaps a committed id, which waits for a real commit).
        drop(tx.rollback());
        return None;
    }
    if let Some(value) = committed.take()
        && let Err(e) = write_committed(&tx, value.as_deref())
    {
        tracing::warn!("raft log: cannot record the committed log id: {e}");
    }

    let commit = match crate::failpoint::fired("raft_log::commit") {
        Some(_) => {
            drop(tx.rollback());
            Err(rusqlite::Error::SqliteFailure(
                rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_IOERR_FSYNC),
                Some("failpoint raft_log::commit".into()),
            ))
        }
        None => tx.commit(),
    };
    match commit {
        Ok(()) => {
            commits.fetch_add(1, Ordering::AcqRel);
            for p in pending {
                p.complete(Ok(()));
            }
            None
        }
        Err(e) => {
            tracing::error!("raft log: commit failed: {e}");
            for p in pending {
                p.complete(Err(io::Error::other(format!(
                    "raft log: commit failed: {e}"
                ))));
            }
            Some(format!("commit failed: {e}"))
        }
    }
}

/// Runs one write inside the batch's transaction.
fn run_write(tx: &Transaction<'_>, op: WriteOp) -> Result<(), io::Error> {
    if crate::failpoint::fired("raft_log::write").is_some() {
        return Err(io::Error::new(
            io::ErrorKind::StorageFull,
            "failpoint raft_log::write: no space left on device",
        ));
    }
    match op {
        WriteOp::Append(rows) => {
            let mut stmt = tx
                .prepare_cached("INSERT OR REPLACE INTO log (idx, term, entry) VALUES (?1, ?2, ?3)")
                .map_err(io::Error::other)?;
            for row in rows {
                stmt.execute(params![row.idx, row.term, row.entry])
                    .map_err(io::Error::other)?;
            }
        }
        WriteOp::SaveVote(vote) => put_meta(tx, KEY_VOTE, &vote)?,
        WriteOp::TruncateAfter(Some(after)) => {
            tx.execute("DELETE FROM log WHERE idx > ?1", [after])
                .map_err(io::Error::other)?;
        }
        WriteOp::TruncateAfter(None) => {
            tx.execute("DELETE FROM log", [])
                .map_err(io::Error::other)?;
        }
        WriteOp::Purge { upto, log_id } => {
            tx.execute("DELETE FROM log WHERE idx <= ?1", [upto])
                .map_err(io::Error::other)?;
            put_meta(tx, KEY_LAST_PURGED, &log_id)?;
        }
    }
    Ok(())
}

/// Answers one read from inside the open transaction (the committed id may still be held).
fn run_read(conn: &Connection, op: ReadOp, committed: &HeldCommitted) {
    match op {
        ReadOp::Entries { lo, hi, reply } => drop(reply.send(read_entries(conn, lo, hi))),
        ReadOp::LogState(reply) => drop(reply.send(read_log_state(conn))),
        ReadOp::Vote(reply) => drop(reply.send(get_meta(conn, KEY_VOTE))),
        ReadOp::Committed(reply) => {
            let answer = match committed {
                Some(held) => held.as_deref().map(from_row).transpose(),
                None => get_meta(conn, KEY_COMMITTED),
            };
            drop(reply.send(answer))
        }
    }
}

/// Sets one `meta` value.
fn put_meta(conn: &Connection, key: &str, value: &[u8]) -> Result<(), io::Error> {
    conn.prepare_cached(
        "INSERT INTO meta (key, value) VALUES (?1, ?2)
         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
    )
    .and_then(|mut stmt| stmt.execute(params![key, value]))
    .map_err(io::Error::other)?;
    Ok(())
}

/// Reads and decodes one `meta` value.
fn get_meta<T: DeserializeOwned>(conn: &Connection, key: &str) -> Result<Option<T>, io::Error> {
    let bytes: Option<Vec<u8>> = conn
        .query_row("SELECT value FROM meta WHERE key = ?1", [key], |row| {
            row.get(0)
        })
        .optional()
        .map_err(io::Error::other)?;
    bytes.map(|b| from_row(&b)).transpose()
}

/// Reads the entries with `lo <= idx <= hi`, in index order.
fn read_entries(conn: &Connection, lo: i64, hi: i64) -> Result<Vec<Entry>, io::Error> {
    let mut stmt = conn
        .prepare_cached("SELECT entry FROM log WHERE idx >= ?1 AND idx <= ?2 ORDER BY idx")
        .map_err(io::Error::other)?;
    let rows = stmt
        .query_map([lo, hi], |row| row.get::<_, Vec<u8>>(0))
        .map_err(io::Error::other)?;
    let mut entries = Vec::new();
    for bytes in rows {
        let bytes = bytes.map_err(io::Error::other)?;
        entries.push(from_row(&bytes)?);
    }
    Ok(entries)
}

/// Reads the last purged log id and the last log id.
fn read_log_state(conn: &Connection) -> Result<LogState<C>, io::Error> {
    let last_purged: Option<LogId> = get_meta(conn, KEY_LAST_PURGED)?;
    let last: Option<Vec<u8>> = conn
        .query_row(
            "SELECT entry FROM log ORDER BY idx DESC LIMIT 1",
            [],
            |row| row.get(0),
        )
        .optional()
        .map_err(io::Error::other)?;
    let last_log_id = match last {
        Some(bytes) => Some(from_row::<Entry>(&bytes)?.log_id),
        None => last_purged,
    };
    Ok(LogState {
        last_purged_log_id: last_purged,
        last_log_id,
    })
}

impl RaftLogReader<C> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, io::Error> {
        let Some((lo, hi)) = sql_range(&range) else {
            return Ok(Vec::new());
        };
        if let Some(entries) = self.read_tail(lo as u64, hi as u64) {
            return Ok(entries);
        }
        self.read(|reply| ReadOp::Entries { lo, hi, reply }).await
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, io::Error> {
        self.read(ReadOp::Vote).await
    }
}

impl RaftLogStorage<C> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<C>, io::Error> {
        self.read(ReadOp::LogState).await
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), io::Error> {
        self.write(WriteOp::SaveVote(to_row(vote)?)).await
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), io::Error> {
        // The committed id only lets a restart re-apply sooner: a lost update leaves an older id
        // that was committed too. So it is not waited for, and costs no commit of its own: the
        // writer holds it and writes it with the next batch.
        let committed = committed.as_ref().map(to_row).transpose()?;
        self.send(Request::Committed(committed))
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, io::Error> {
        self.read(ReadOp::Committed).await
    }

    async fn append<I>(&mut self, entries: I, callback: IOFlushed<C>) -> Result<(), io::Error>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let entries: Vec<Entry> = entries.into_iter().collect();
        let rows = entries
            .iter()
            .map(|entry| {
                let term = entry.log_id.leader_id.term;
                Ok(Row {
                    idx: sql_index(entry.log_id.index)?,
                    term: i64::try_from(term).map_err(|_| {
                        io::Error::other(format!("term {term} does not fit in SQLite"))
                    })?,
                    entry: to_row(entry)?,
                })
            })
            .collect::<Result<Vec<_>, io::Error>>()?;
        self.with_tail(|tail| {
            for entry in entries {
                tail.insert(entry.log_id.index, entry);
            }
            while tail.len() > TAIL_CAPACITY {
                tail.pop_first();
            }
        })?;
        // Returns at once; the writer completes `callback` after the commit.
        self.send(Request::Write {
            op: WriteOp::Append(rows),
            done: Pending::Flushed(callback),
        })
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogId>) -> Result<(), io::Error> {
        let after = last_log_id.map(|id| sql_index(id.index)).transpose()?;
        let keep = last_log_id.map(|id| id.index);
        self.with_tail(|tail| match keep {
            Some(index) => drop(tail.split_off(&index.saturating_add(1))),
            None => tail.clear(),
        })?;
        self.write(WriteOp::TruncateAfter(after)).await
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), io::Error> {
        let upto = sql_index(log_id.index)?;
        let index = log_id.index;
        self.with_tail(|tail| *tail = tail.split_off(&index.saturating_add(1)))?;
        let log_id = to_row(&log_id)?;
        self.write(WriteOp::Purge { upto, log_id }).await
    }
}
