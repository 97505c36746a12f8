//! The durable raft log: one SQLite file, written by one dedicated thread with group commit.
//!
//! [`LogStore`] keeps the raft log, the vote, the committed log id and the last purged log id in
//! its own SQLite database (WAL journal, `synchronous=FULL`), separate from the application's
//! database. Schema:
//!
//! - `log(idx INTEGER PRIMARY KEY, term INTEGER NOT NULL, entry BLOB NOT NULL)`: one row per
//!   entry; `entry` is the whole [`Entry`] as JSON (the command stays readable).
//! - `meta(key TEXT PRIMARY KEY, value BLOB NOT NULL)`: `vote`, `committed` and `last_purged`,
//!   each as JSON.
//!
//! # Threading and group commit
//!
//! One `std::thread` owns the connection. Every [`LogStore`] clone sends requests to it over a
//! channel and awaits a reply. The thread blocks for one request, then takes every request
//! already queued, runs them in order inside one SQLite transaction and commits once (one
//! fsync). Only after that commit does it complete the [`IOFlushed`] callbacks of the appends of
//! that batch and answer the writes that must be durable (`save_vote`, `truncate_after`,
//! `purge`; `save_committed` is queued in order but not waited for). Appends that arrive
//! together are therefore made durable by one fsync, which [`LogStore::commit_count`] makes
//! observable.
//!
//! Reads are answered as soon as the thread reaches them, from the same connection and inside
//! the open transaction, so they see every earlier request, including appends that are not
//! committed yet (openraft may read what it has just appended, e.g. to replicate it). If a
//! commit fails, every callback and durable reply of the batch gets the error.
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

use openraft::storage::{IOFlushed, LogState, RaftLogStorage};
use openraft::{OptionalSend, RaftLogReader};
use rusqlite::{Connection, OptionalExtension, Transaction, params};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::oneshot;

use super::types::{C, Entry, LogId, Vote};

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
}

/// A change to the database.
enum WriteOp {
    /// Insert (or replace) these rows.
    Append(Vec<Row>),
    /// Save the vote.
    SaveVote(Vec<u8>),
    /// Save the committed log id, or forget it.
    SaveCommitted(Option<Vec<u8>>),
    /// Delete entries with `idx > after` (all when `None`).
    TruncateAfter(Option<i64>),
    /// Delete entries with `idx <= upto` and record `last_purged`.
    Purge {
        /// The last index to delete.
        upto: i64,
        /// The purged log id, as JSON.
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
    pub fn open(path: &Path) -> Result<Self, io::Error> {
        if let Some(parent) = path.parent()
            && !parent.as_os_str().is_empty()
        {
            std::fs::create_dir_all(parent)?;
        }
        let conn = Connection::open(path).map_err(io::Error::other)?;
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

        let (tx, rx) = mpsc::channel();
        let commits = Arc::new(AtomicU64::new(0));
        let thread_commits = Arc::clone(&commits);
        let thread = thread::Builder::new()
            .name("raft-log-writer".into())
            .spawn(move || writer_loop(conn, rx, &thread_commits))?;

        Ok(Self {
            shared: Arc::new(Shared {
                tx: Some(tx),
                thread: Some(thread),
                commits,
            }),
        })
    }

    /// How many SQLite transactions that changed the log have been committed (each one fsync)
    /// since [`LogStore::open`]. With group commit this grows more slowly than the number of
    /// appends when appends arrive faster than the disk syncs.
    pub fn commit_count(&self) -> u64 {
        self.shared.commits.load(Ordering::Acquire)
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

/// Serializes a value as JSON.
fn to_json<T: Serialize>(value: &T) -> Result<Vec<u8>, io::Error> {
    serde_json::to_vec(value).map_err(io::Error::other)
}

/// Deserializes a value from JSON.
fn from_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, io::Error> {
    serde_json::from_slice(bytes).map_err(io::Error::other)
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
fn writer_loop(mut conn: Connection, rx: mpsc::Receiver<Request>, commits: &AtomicU64) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        batch.extend(rx.try_iter());
        run_batch(&mut conn, batch, commits);
    }
    tracing::debug!("raft log writer thread stops: every LogStore was dropped");
}

/// Runs `batch` in order inside one transaction, commits once, then completes the writes.
fn run_batch(conn: &mut Connection, batch: Vec<Request>, commits: &AtomicU64) {
    let mut tx = match conn.transaction() {
        Ok(tx) => tx,
        Err(e) => {
            tracing::error!("raft log: cannot begin a transaction: {e}");
            for req in batch {
                req.fail(io::Error::other(format!(
                    "raft log: cannot begin a transaction: {e}"
                )));
            }
            return;
        }
    };

    let mut pending = Vec::new();
    for req in batch {
        match req {
            Request::Write { op, done } => match run_write(&mut tx, op) {
                Ok(()) => pending.push(done),
                Err(e) => {
                    tracing::error!("raft log: write failed: {e}");
                    done.complete(Err(e));
                }
            },
            Request::Read(op) => run_read(&tx, op),
        }
    }

    match tx.commit() {
        Ok(()) => {
            if !pending.is_empty() {
                commits.fetch_add(1, Ordering::AcqRel);
            }
            for p in pending {
                p.complete(Ok(()));
            }
        }
        Err(e) => {
            tracing::error!("raft log: commit failed: {e}");
            for p in pending {
                p.complete(Err(io::Error::other(format!(
                    "raft log: commit failed: {e}"
                ))));
            }
        }
    }
}

/// Runs one write inside its own savepoint of `tx`, so a failing write leaves the other writes
/// of the batch intact.
fn run_write(tx: &mut Transaction<'_>, op: WriteOp) -> Result<(), io::Error> {
    let sp = tx.savepoint().map_err(io::Error::other)?;
    match op {
        WriteOp::Append(rows) => {
            let mut stmt = sp
                .prepare_cached("INSERT OR REPLACE INTO log (idx, term, entry) VALUES (?1, ?2, ?3)")
                .map_err(io::Error::other)?;
            for row in rows {
                stmt.execute(params![row.idx, row.term, row.entry])
                    .map_err(io::Error::other)?;
            }
        }
        WriteOp::SaveVote(vote) => put_meta(&sp, KEY_VOTE, &vote)?,
        WriteOp::SaveCommitted(Some(committed)) => put_meta(&sp, KEY_COMMITTED, &committed)?,
        WriteOp::SaveCommitted(None) => {
            sp.execute("DELETE FROM meta WHERE key = ?1", [KEY_COMMITTED])
                .map_err(io::Error::other)?;
        }
        WriteOp::TruncateAfter(Some(after)) => {
            sp.execute("DELETE FROM log WHERE idx > ?1", [after])
                .map_err(io::Error::other)?;
        }
        WriteOp::TruncateAfter(None) => {
            sp.execute("DELETE FROM log", [])
                .map_err(io::Error::other)?;
        }
        WriteOp::Purge { upto, log_id } => {
            sp.execute("DELETE FROM log WHERE idx <= ?1", [upto])
                .map_err(io::Error::other)?;
            put_meta(&sp, KEY_LAST_PURGED, &log_id)?;
        }
    }
    sp.commit().map_err(io::Error::other)
}

/// Answers one read from inside the open transaction.
fn run_read(conn: &Connection, op: ReadOp) {
    match op {
        ReadOp::Entries { lo, hi, reply } => drop(reply.send(read_entries(conn, lo, hi))),
        ReadOp::LogState(reply) => drop(reply.send(read_log_state(conn))),
        ReadOp::Vote(reply) => drop(reply.send(get_meta(conn, KEY_VOTE))),
        ReadOp::Committed(reply) => drop(reply.send(get_meta(conn, KEY_COMMITTED))),
    }
}

/// Sets one `meta` value.
fn put_meta(conn: &Connection, key: &str, value: &[u8]) -> Result<(), io::Error> {
    conn.execute(
        "INSERT INTO meta (key, value) VALUES (?1, ?2)
         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        params![key, value],
    )
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
    bytes.map(|b| from_json(&b)).transpose()
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
        entries.push(from_json(&bytes)?);
    }
    Ok(entries)
}

/// Reads the last purged log id and the last log id.
fn read_log_state(conn: &Connection) -> Result<LogState<C>, io::Error> {
    /// Just the log id of a stored entry; the payload is skipped, not decoded.
    #[derive(serde::Deserialize)]
    struct EntryHead {
        log_id: LogId,
    }

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
        Some(bytes) => Some(from_json::<EntryHead>(&bytes)?.log_id),
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
        self.write(WriteOp::SaveVote(to_json(vote)?)).await
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), io::Error> {
        // The committed id only lets a restart re-apply sooner: a lost update leaves an older id
        // that was committed too. So it is not waited for: it is written in order with the next
        // batch, and the raft core goes on to apply without an fsync on its path.
        let committed = committed.as_ref().map(to_json).transpose()?;
        let (reply, _unwatched) = oneshot::channel();
        self.send(Request::Write {
            op: WriteOp::SaveCommitted(committed),
            done: Pending::Done(reply),
        })
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, io::Error> {
        self.read(ReadOp::Committed).await
    }

    async fn append<I>(&mut self, entries: I, callback: IOFlushed<C>) -> Result<(), io::Error>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let rows = entries
            .into_iter()
            .map(|entry| {
                let term = entry.log_id.leader_id.term;
                Ok(Row {
                    idx: sql_index(entry.log_id.index)?,
                    term: i64::try_from(term).map_err(|_| {
                        io::Error::other(format!("term {term} does not fit in SQLite"))
                    })?,
                    entry: to_json(&entry)?,
                })
            })
            .collect::<Result<Vec<_>, io::Error>>()?;
        // Returns at once; the writer completes `callback` after the commit.
        self.send(Request::Write {
            op: WriteOp::Append(rows),
            done: Pending::Flushed(callback),
        })
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogId>) -> Result<(), io::Error> {
        let after = last_log_id.map(|id| sql_index(id.index)).transpose()?;
        self.write(WriteOp::TruncateAfter(after)).await
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), io::Error> {
        let upto = sql_index(log_id.index)?;
        let log_id = to_json(&log_id)?;
        self.write(WriteOp::Purge { upto, log_id }).await
    }
}
