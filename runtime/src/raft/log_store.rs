//! The durable raft log: an append-only directory of segment files, written by one dedicated
//! thread with group commit.
//!
//! [`LogStore`] keeps the raft log, the vote, the committed log id and the last purged log id in
//! its own directory (`raft-log/` in a node's data directory), separate from the application's
//! database. The files and records are described in [`segments`]: preallocated segments of
//! CRC-checked records, a torn tail cut at start, a corrupt record before the tail refused with
//! its file and offset, purge by whole segments, and the format recorded in every segment (a log
//! of another format is refused with [`LogStoreError::Format`], never misread). A data directory
//! that still holds the SQLite log of older builds (`raft-log.db`) is refused with
//! [`LogStoreError::OldSqlite`], which says what to do: there is no migration, because a node
//! that starts empty receives a snapshot from the cluster, which is the same outcome.
//!
//! # Threading and group commit
//!
//! One `std::thread` owns the files. Every [`LogStore`] clone sends requests to it over a
//! channel. The thread blocks for one request, then takes every request already queued, stages
//! them in order into one buffer, and writes that buffer with one `write` and one `fdatasync`.
//! Only after that does it complete the [`IOFlushed`] callbacks of the appends of that batch and
//! answer the writes that must be durable (`save_vote`, `truncate_after`, `purge`). Appends that
//! arrive together are therefore made durable by one sync, which [`LogStore::commit_count`] makes
//! observable. A batch is all or nothing for its callers: if one write of it fails (a full disk,
//! a failed sync), every write of the batch gets the error and the writer refuses everything
//! after it, so the log never has a hole; what reached the disk of a failed batch is a torn tail
//! at the next start, and cut.
//!
//! `save_committed` costs no sync of its own: the committed id only lets a restart re-apply
//! sooner (the state machine persists what it applied), so it is held by the writer and written
//! with the next batch that syncs anyway.
//!
//! # The tail cache
//!
//! Every appended entry is also kept in memory (the newest [`TAIL_CAPACITY`] entries, and no
//! more than [`TAIL_BYTES`] of them, trimmed on truncate). Replication and apply read the tail,
//! so a read of recent entries neither decodes a record nor waits behind the writer's sync; only
//! older entries are read from the segment files, through the writer thread (so they see every
//! earlier request, including appends not synced yet). Both paths see the appends in the order
//! openraft made them.
//! The tail answers only when it holds the first index asked for and what follows it without a
//! gap; anything else is read from the files, which answer with the entries the log holds in
//! the range (openraft's storage suite asks for ranges that start below the log).
//!
//! A replication stream reads through `limited_get_log_entries`, which must never answer a
//! range with nothing, nor with a run that starts after where it asked (the stream would send
//! it as if it started there). openraft 0.10 can resume a stream's payload chosen before the
//! leader purged the entries it needs (a follower's stream errs, its inflight state is reset,
//! the purge waiting for it runs, and the stream re-adopts its last payload); read as nothing,
//! that stream sends empty requests every 10 ms forever and the follower never catches up
//! (`bank chaos` found it). So a purge keeps in the tail the entries it holds, for replication
//! only, and a replication read that the tail cannot answer gets nothing rather than a run that
//! starts after `start`.
//!
//! The thread exits, closing the files, when the last clone is dropped; that drop waits for
//! it, so the log can be reopened right away.

mod record;
pub mod repair;
mod segments;

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread;

use openraft::storage::{IOFlushed, LogState, RaftLogStorage};
use openraft::{OptionalSend, RaftLogReader};
use tokio::sync::oneshot;

use super::types::{C, Entry, FORMAT_VERSION, LogId, Vote};
use segments::Segments;

pub use segments::{MAGIC, SEGMENT_BYTES};

/// How many of the newest entries the tail cache holds at most.
pub const TAIL_CAPACITY: usize = 16_384;

/// How many bytes of entries (encoded) the tail cache holds at most: large commands would
/// otherwise make [`TAIL_CAPACITY`] entries gigabytes. The newest entry is always held.
pub const TAIL_BYTES: usize = 64 << 20;

/// Why a log cannot be opened.
#[derive(Debug, thiserror::Error)]
pub enum LogStoreError {
    /// A file could not be opened, read or set up.
    #[error("{path}: {source}")]
    Io {
        /// The log directory or file.
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
        /// The segment file.
        path: String,
        /// The format found.
        found: String,
    },
    /// A record before the end of the log does not check: the log is damaged, not torn.
    #[error(
        "{path}: the raft log is damaged at byte {offset}: {why}; move the data directory \
         aside, start the node on a new one and let it rejoin (it receives a snapshot)"
    )]
    Corrupt {
        /// The segment file.
        path: String,
        /// Where the bad record starts.
        offset: u64,
        /// What is wrong with it.
        why: String,
    },
    /// The data directory holds the SQLite raft log of an older build.
    #[error(
        "{path}: this is the SQLite raft log of an older build; this build keeps its log in \
         segment files. Start the node on a new data directory and let it rejoin (it receives \
         a snapshot), or run the older build"
    )]
    OldSqlite {
        /// The old log file.
        path: String,
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

/// The durable raft log store; see the [module documentation](self).
///
/// Cheap to clone: all clones share one writer thread. The writer thread stops when the last
/// clone is dropped.
#[derive(Clone)]
pub struct LogStore {
    shared: Arc<Shared>,
    tail: Arc<Mutex<Tail>>,
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
    /// Batches that wrote and synced something.
    commits: Arc<AtomicU64>,
    /// How many segment files the log has.
    segments: Arc<AtomicU64>,
    /// How long each committed batch took, its sync included.
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

/// A request to the writer thread.
enum Request {
    /// A change, answered (through `done`) only after the sync of its batch.
    Write {
        /// What to change.
        op: WriteOp,
        /// Whom to tell once it is durable.
        done: Pending,
    },
    /// A read, answered as soon as the writer reaches it.
    Read(ReadOp),
    /// The committed log id, written with the next batch.
    Committed(Option<LogId>),
}

/// A change to the log.
enum WriteOp {
    /// Append these entries, encoded by the caller.
    Append(Vec<(LogId, Vec<u8>)>),
    /// Save the vote.
    SaveVote(Vote),
    /// Drop entries after this log id (all when `None`).
    TruncateAfter(Option<LogId>),
    /// Drop entries up to this log id and record it as the last purged.
    Purge(LogId),
}

/// A read, with its reply channel.
enum ReadOp {
    /// Entries with `lo <= index <= hi`; with `from_lo`, none unless the log holds `lo`.
    Entries {
        lo: u64,
        hi: u64,
        from_lo: bool,
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
    /// Opens (creating it if needed) the log directory `dir`, e.g. `data_dir.join("raft-log")`,
    /// replays it, and starts its writer thread.
    ///
    /// Refuses a directory beside which the SQLite log of an older build (`dir` + `.db`) lies.
    /// Blocks while it reads the log, so call it before starting raft (or from
    /// `spawn_blocking`).
    pub fn open(dir: &Path) -> Result<Self, LogStoreError> {
        Self::open_with_segment_bytes(dir, SEGMENT_BYTES)
    }

    /// [`LogStore::open`] with new segment files of `segment_bytes` (more when one batch needs
    /// it) instead of [`SEGMENT_BYTES`]: small segments make tests and tools roll, purge and
    /// replay many files cheaply. Segments already there keep their size.
    pub fn open_with_segment_bytes(dir: &Path, segment_bytes: u64) -> Result<Self, LogStoreError> {
        let old = dir.with_extension("db");
        if old.exists() {
            return Err(LogStoreError::OldSqlite {
                path: old.display().to_string(),
            });
        }
        let log = Segments::open(dir, segment_bytes)?;

        let (tx, rx) = mpsc::channel();
        let commits = Arc::new(AtomicU64::new(0));
        let segments = Arc::new(AtomicU64::new(log.segment_count() as u64));
        let commit_seconds = crate::raft::metrics::latency_histogram();
        let counters = Counters {
            commits: Arc::clone(&commits),
            segments: Arc::clone(&segments),
            seconds: commit_seconds.clone(),
        };
        let thread = thread::Builder::new()
            .name("raft-log-writer".into())
            .spawn(move || writer_loop(log, rx, &counters))
            .map_err(|source| LogStoreError::Io {
                path: dir.display().to_string(),
                source,
            })?;

        Ok(Self {
            shared: Arc::new(Shared {
                tx: Some(tx),
                thread: Some(thread),
                commits,
                segments,
                commit_seconds,
            }),
            tail: Arc::new(Mutex::new(Tail::default())),
        })
    }

    /// How long each batch that changed the log took to write and sync (the node exports it as
    /// `raft_log_commit_seconds`).
    pub fn commit_seconds(&self) -> prometheus_client::metrics::histogram::Histogram {
        self.shared.commit_seconds.clone()
    }

    /// How many batches that changed the log have been written and synced since
    /// [`LogStore::open`]. With group commit this grows more slowly than the number of appends
    /// when appends arrive faster than the disk syncs.
    pub fn commit_count(&self) -> u64 {
        self.shared.commits.load(Ordering::Acquire)
    }

    /// How many bytes of entries (encoded) the tail cache holds now (at most [`TAIL_BYTES`],
    /// or one entry larger than that).
    pub fn tail_bytes(&self) -> usize {
        self.tail.lock().map_or(0, |t| t.bytes)
    }

    /// How many segment files the log has now.
    pub fn segment_count(&self) -> u64 {
        self.shared.segments.load(Ordering::Acquire)
    }

    /// Runs `f` on the tail cache.
    fn with_tail<T>(&self, f: impl FnOnce(&mut Tail) -> T) -> Result<T, io::Error> {
        let mut tail = self
            .tail
            .lock()
            .map_err(|_| io::Error::other("the raft log tail cache lock is poisoned"))?;
        Ok(f(&mut tail))
    }

    /// The entries `lo..=hi` from the tail cache, if it holds the entry at `lo` and those after
    /// it without a gap; purged entries only for a replication stream (`purged`).
    fn read_tail(&self, lo: u64, hi: u64, purged: bool) -> Option<Vec<Entry>> {
        let tail = self.tail.lock().ok()?;
        if !purged && tail.purged.is_some_and(|p| lo <= p) {
            return None;
        }
        let (&first, _) = tail.entries.first_key_value()?;
        let (&last, _) = tail.entries.last_key_value()?;
        if lo < first || lo > last {
            return None;
        }
        let entries: Vec<Entry> = tail
            .entries
            .range(lo..=hi)
            .map(|(_, (e, _))| e.clone())
            .collect();
        // Distinct indexes from `lo` to `min(hi, last)`: consecutive when there are that many.
        (entries.len() as u64 == hi.min(last) - lo + 1).then_some(entries)
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

    /// Sends a write and awaits its sync.
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

/// The newest entries of the log, in memory (see the module documentation): at most
/// [`TAIL_CAPACITY`] entries and [`TAIL_BYTES`] bytes.
#[derive(Default)]
struct Tail {
    /// Each entry with its encoded size.
    entries: BTreeMap<u64, (Entry, usize)>,
    /// The sum of the entries' encoded sizes.
    bytes: usize,
    /// The last index purged: entries at or below it are kept for replication streams only.
    purged: Option<u64>,
}

impl Tail {
    /// Adds `entry` (`size` bytes encoded), replacing any at its index, then drops the oldest
    /// entries past the bounds.
    fn insert(&mut self, entry: Entry, size: usize) {
        if let Some((_, old)) = self.entries.insert(entry.log_id.index, (entry, size)) {
            self.bytes -= old;
        }
        self.bytes += size;
        while self.entries.len() > TAIL_CAPACITY
            || (self.bytes > TAIL_BYTES && self.entries.len() > 1)
        {
            if let Some((_, (_, size))) = self.entries.pop_first() {
                self.bytes -= size;
            }
        }
    }

    /// Keeps only the entries at indexes `from` and above.
    fn keep_from(&mut self, from: u64) {
        self.entries = self.entries.split_off(&from);
        self.bytes = self.entries.values().map(|(_, size)| size).sum();
    }

    /// Drops the entries at indexes `from` and above.
    fn drop_from(&mut self, from: u64) {
        let dropped = self.entries.split_off(&from);
        self.bytes -= dropped.values().map(|(_, size)| size).sum::<usize>();
    }
}

/// The inclusive `[lo, hi]` index range of `range`, or `None` if it is empty.
fn index_range<RB: RangeBounds<u64>>(range: &RB) -> Option<(u64, u64)> {
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
    (lo <= hi).then_some((lo, hi))
}

/// What the writer thread reports.
struct Counters {
    commits: Arc<AtomicU64>,
    segments: Arc<AtomicU64>,
    seconds: prometheus_client::metrics::histogram::Histogram,
}

/// The writer thread: one batch (one write, one sync) per wake-up.
fn writer_loop(mut log: Segments, rx: mpsc::Receiver<Request>, counters: &Counters) {
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
        if let Err(why) = run_batch(&mut log, batch, counters) {
            broken = Some(why);
        }
        counters
            .segments
            .store(log.segment_count() as u64, Ordering::Release);
    }
    // Last chance for the held committed id (a clean shutdown keeps it).
    if broken.is_none()
        && let Err(e) = log.commit()
    {
        tracing::warn!("raft log: cannot record the committed log id at shutdown: {e}");
    }
    tracing::debug!("raft log writer thread stops: every LogStore was dropped");
}

/// Stages `batch` in order, writes and syncs it once, counts that, then completes the writes.
/// Returns why the batch failed, if it did: the writer then refuses every later request.
fn run_batch(log: &mut Segments, batch: Vec<Request>, counters: &Counters) -> Result<(), String> {
    let started = std::time::Instant::now();
    let mut pending = Vec::new();
    let mut requests = batch.into_iter();
    let mut failed = None;
    for req in requests.by_ref() {
        match req {
            Request::Write { op, done } => match stage(log, op) {
                Ok(()) => pending.push(done),
                Err(e) => {
                    failed = Some((e, Some(done)));
                    break;
                }
            },
            Request::Read(op) => answer(log, op),
            Request::Committed(value) => log.hold_committed(value),
        }
    }
    let failed = match failed {
        Some(failed) => Some(failed),
        // Only reads (and perhaps a committed id, which waits for a real write).
        None if pending.is_empty() => return Ok(()),
        None => log.commit().err().map(|e| (e, None)),
    };
    let Some((e, done)) = failed else {
        counters.commits.fetch_add(1, Ordering::AcqRel);
        counters.seconds.observe(started.elapsed().as_secs_f64());
        for p in pending {
            p.complete(Ok(()));
        }
        return Ok(());
    };
    // All or nothing: every write of this batch hears why, and nothing after it is written.
    tracing::error!("raft log: a write failed, the node must restart: {e}");
    let message = format!("raft log: a write of this batch failed: {e}");
    if let Some(done) = done {
        done.complete(Err(e));
    }
    for p in pending {
        p.complete(Err(io::Error::other(message.clone())));
    }
    for req in requests {
        req.fail(io::Error::other(message.clone()));
    }
    Err(message)
}

/// Stages one write into the batch.
fn stage(log: &mut Segments, op: WriteOp) -> Result<(), io::Error> {
    if crate::failpoint::fired("raft_log::write").is_some() {
        return Err(io::Error::new(
            io::ErrorKind::StorageFull,
            "failpoint raft_log::write: no space left on device",
        ));
    }
    match op {
        WriteOp::Append(entries) => {
            for (log_id, bytes) in entries {
                log.stage_entry(log_id, &bytes)?;
            }
            Ok(())
        }
        WriteOp::SaveVote(vote) => log.stage_vote(&vote),
        WriteOp::TruncateAfter(after) => log.stage_truncate(after),
        WriteOp::Purge(upto) => log.stage_purge(upto),
    }
}

/// Answers one read; it sees every request staged before it.
fn answer(log: &Segments, op: ReadOp) {
    match op {
        ReadOp::Entries {
            lo,
            hi,
            from_lo,
            reply,
        } => drop(reply.send(log.read(lo, hi, from_lo))),
        ReadOp::LogState(reply) => drop(reply.send(Ok(log.log_state()))),
        ReadOp::Vote(reply) => drop(reply.send(Ok(log.vote()))),
        ReadOp::Committed(reply) => drop(reply.send(Ok(log.committed()))),
    }
}

impl RaftLogReader<C> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, io::Error> {
        let Some((lo, hi)) = index_range(&range) else {
            return Ok(Vec::new());
        };
        if let Some(entries) = self.read_tail(lo, hi, false) {
            return Ok(entries);
        }
        self.read(|reply| ReadOp::Entries {
            lo,
            hi,
            from_lo: false,
            reply,
        })
        .await
    }

    /// What a replication stream reads: entries from `start` on, consecutive, never a run
    /// that starts elsewhere. A range just purged is still answered while the tail cache holds
    /// it: a stream may resume a payload that openraft chose before it purged (it then reads
    /// the range again and again, and the follower never catches up), and purged entries are
    /// committed, the same on every replica.
    async fn limited_get_log_entries(
        &mut self,
        start: u64,
        end: u64,
    ) -> Result<Vec<Entry>, io::Error> {
        let Some(hi) = end.checked_sub(1).filter(|hi| *hi >= start) else {
            return Ok(Vec::new());
        };
        if let Some(entries) = self.read_tail(start, hi, true) {
            return Ok(entries);
        }
        self.read(|reply| ReadOp::Entries {
            lo: start,
            hi,
            from_lo: true,
            reply,
        })
        .await
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
        self.write(WriteOp::SaveVote(*vote)).await
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), io::Error> {
        // The committed id only lets a restart re-apply sooner: a lost update leaves an older id
        // that was committed too. So it is not waited for, and costs no sync of its own: the
        // writer holds it and writes it with the next batch.
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
        // Encoded here, on the caller's thread, so the writer only copies bytes.
        let records = entries
            .iter()
            .map(|entry| {
                let bytes = super::types::encode(entry).map_err(io::Error::other)?;
                Ok((entry.log_id, bytes))
            })
            .collect::<Result<Vec<_>, io::Error>>()?;
        self.with_tail(|tail| {
            for (entry, (_, bytes)) in entries.into_iter().zip(&records) {
                tail.insert(entry, bytes.len());
            }
        })?;
        // Returns at once; the writer completes `callback` after the sync.
        self.send(Request::Write {
            op: WriteOp::Append(records),
            done: Pending::Flushed(callback),
        })
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogId>) -> Result<(), io::Error> {
        self.with_tail(|tail| {
            tail.drop_from(last_log_id.map_or(0, |id| id.index.saturating_add(1)))
        })?;
        self.write(WriteOp::TruncateAfter(last_log_id)).await
    }

    /// Purges the files. The tail cache keeps the purged entries it holds, for replication
    /// streams only, if it holds `log_id` itself, which proves them the committed ones (two
    /// logs that agree on an entry agree on all before it); otherwise, as after a snapshot
    /// install over a log that diverged, it drops them.
    async fn purge(&mut self, log_id: LogId) -> Result<(), io::Error> {
        let index = log_id.index;
        self.with_tail(|tail| {
            if tail
                .entries
                .get(&index)
                .is_none_or(|(e, _)| e.log_id != log_id)
            {
                tail.keep_from(index.saturating_add(1));
            }
            tail.purged = tail.purged.max(Some(index));
        })?;
        self.write(WriteOp::Purge(log_id)).await
    }
}
