//! The state machine: applies committed entries to the application's SQLite database.
//!
//! Invariants:
//! - Batches of entries are applied in SQLite transactions that hold whole batches, together
//!   with the last applied log id, the membership and the client-session records, so the
//!   database is always at exactly one log position. The transaction stays open across batches
//!   (group commit, like etcd's backend batching): it commits after [`CommitPolicy::entries`]
//!   entries, [`CommitPolicy::within`] after its first batch, as soon as a reader waits for an index
//!   it holds ([`StateMachine::wait_applied`]), and before any other work on the writer
//!   (snapshot builds, `applied_state`). Replies go out when a batch is applied, before its
//!   commit: the raft log, not the database, is what makes a write durable, and a node that
//!   stops with batches uncommitted re-applies them from its log (the database says where it
//!   is). Readers see only committed state: a linearizable read waits until its index is
//!   committed, not merely applied, and digests, backups and the feed's history pages commit
//!   what is applied before they read.
//! - The database runs WAL with `synchronous = NORMAL`: a power cut may take
//!   back the last batches, which openraft then re-applies from the durable log (it sees the
//!   older `last_applied`). Before a snapshot lets the log be purged, the database is
//!   checkpointed with an fsync, so nothing purged was ever only in the page cache.
//! - Each command runs in a savepoint: a failed command (domain error) rolls back only itself,
//!   and its typed error is the reply. It never stops the node.
//! - A request already applied (same client + sequence) is not applied again; the stored reply is
//!   returned. The record keeps a hash of the command: the same id with another command is
//!   [`Rejected`], not answered with the other command's reply. Records travel with snapshots
//!   (they live in the same database) and expire by log position, never by a clock: when the
//!   client acknowledges them, or [`REQUEST_TTL_ENTRIES`] entries after they were applied.
//!   What a client acknowledged is kept (`_raft_clients`, one row per client, expiring the same
//!   way): a late copy of an acknowledged request, whose record is gone, is [`Rejected`], not
//!   applied again.
//! - Apply reads no clock: time comes from the envelope, stamped by the leader.
//! - A snapshot is a consistent copy of the database (`VACUUM INTO`), installed by atomic rename.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, Weak};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use openraft::storage::{EntryResponder, RaftStateMachine};
use openraft::{EntryPayload, RaftSnapshotBuilder};
use rusqlite::{Connection, OptionalExtension, params};

use super::types::{
    Applied, C, Entry, Envelope, LogId, Outcome, Rejected, SnapshotMeta, StoredMembership,
};
use crate::wire::service::ApplyContext;
use chrono::DateTime;
use sha2::{Digest, Sha256};

/// The raft handle of a node.
pub type Raft = openraft::Raft<C, StateMachine>;

pub use requests::REQUEST_TTL_ENTRIES;
use requests::{apply_envelope, expire_requests};

mod events;
mod requests;
mod snapshot;

pub use snapshot::INCOMING_STALE;
pub(crate) use snapshot::remove_partial_transfers;
use snapshot::{latest_snapshot, prune_snapshots, snapshot_name, sync_dir, write_durably};

/// What the runtime needs from the application: apply a serialized command, answer a serialized
/// query, all on a SQLite connection the runtime manages.
pub trait Application: Send + Sync + 'static {
    /// Creates the application's tables if they are missing.
    fn init(&self, conn: &Connection) -> Result<(), String>;
    /// Applies one serialized command at `ctx` (its log index and the leader's time). `conn`
    /// is inside a savepoint (or, in process, a transaction) that the runtime rolls
    /// back when the result is not `ok`. Must be deterministic: a refusal (`ok: false`) must be
    /// one every replica makes. A failure of the machine itself (I/O, a full disk) is `Err`: the
    /// batch is not committed and the node stops, instead of diverging from its replicas.
    fn apply(
        &self,
        conn: &Connection,
        ctx: &ApplyContext,
        command: &[u8],
    ) -> Result<Applied, String>;
    /// Answers one serialized query, read-only.
    fn query(&self, conn: &Connection, query: &[u8]) -> Vec<u8>;
    /// A digest of the application's state (equal on replicas holding equal state).
    fn digest(&self, conn: &Connection) -> Result<String, String>;
    /// Checks that `command` is one this build can apply (it decodes as a command), before it
    /// is proposed or applied in process: what fails here is refused, and never reaches a log.
    /// The default, for opaque commands, admits everything.
    fn admit(&self, command: &[u8]) -> Result<(), crate::wire::error::Failure> {
        let _ = command;
        Ok(())
    }
    /// What this build of the service knows: its schema version and its commands, which the
    /// node advertises to its leader's version gate ([`crate::raft::version`]). The default, for
    /// an application whose commands are opaque bytes, checks nothing.
    fn schema(&self) -> crate::raft::version::Schema {
        crate::raft::version::Schema::opaque()
    }
    /// What a serialized command says about itself for the watch feed's filters: its
    /// operation and the values of its watch keys. The default, for opaque commands, says
    /// nothing (only an unfiltered watch sees them).
    fn watch_info(&self, command: &[u8]) -> crate::raft::feed::WatchInfo {
        let _ = command;
        crate::raft::feed::WatchInfo::default()
    }
    /// The service's operations (with who may call them), for the check of a call's
    /// credential ([`crate::raft::auth`]). The default, for opaque commands, names none.
    fn operations(&self) -> &'static [crate::wire::service::OpInfo] {
        &[]
    }
}

/// A snapshot on disk: a complete copy of the database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotFile {
    /// The snapshot's database file.
    pub path: PathBuf,
}

const RUNTIME_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS _raft_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS _raft_requests (
    client TEXT NOT NULL,
    seq INTEGER NOT NULL,
    command_hash BLOB,
    ok INTEGER NOT NULL,
    reply BLOB NOT NULL,
    log_index INTEGER NOT NULL,
    PRIMARY KEY (client, seq)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS _raft_requests_by_index ON _raft_requests (log_index);
CREATE TABLE IF NOT EXISTS _raft_clients (
    client TEXT PRIMARY KEY,
    acked INTEGER NOT NULL,
    log_index INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS _raft_clients_by_index ON _raft_clients (log_index);
";

/// Moves the request records of a database from before command hashes (expiring by the
/// leader's clock) into `_raft_requests`: no hash to compare, and expired at the first
/// expiry pass (as if applied at index 0).
const MIGRATE_SESSIONS: &str = "
INSERT OR IGNORE INTO _raft_requests (client, seq, command_hash, ok, reply, log_index)
    SELECT client, seq, NULL, ok, reply, 0 FROM _raft_sessions;
DROP TABLE _raft_sessions;
DELETE FROM _raft_meta WHERE key IN ('log_time', 'expired_at');
";

/// Rebuilds `_raft_requests` and `_raft_clients` of a database from before they were
/// `WITHOUT ROWID` (a quarter fewer page writes per entry: each row lives in its key's B-tree
/// instead of a rowid table plus that index). The rows are the same; only their layout changes,
/// so replicas that have and have not been rebuilt hold equal state.
fn cluster_request_tables(conn: &Connection) -> io::Result<()> {
    let mut moved = Vec::new();
    for (table, columns, index) in [
        (
            "_raft_requests",
            "client, seq, command_hash, ok, reply, log_index",
            "_raft_requests_by_index",
        ),
        (
            "_raft_clients",
            "client, acked, log_index",
            "_raft_clients_by_index",
        ),
    ] {
        let sql: String = conn
            .query_row(
                "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?1",
                [table],
                |r| r.get(0),
            )
            .map_err(io_err)?;
        if !sql.contains("WITHOUT ROWID") {
            conn.execute_batch(&format!(
                "ALTER TABLE {table} RENAME TO {table}_rowid; DROP INDEX {index};"
            ))
            .map_err(io_err)?;
            moved.push((table, columns));
        }
    }
    if moved.is_empty() {
        return Ok(());
    }
    // The current definitions, for the tables (and indexes) just moved aside.
    conn.execute_batch(RUNTIME_SCHEMA).map_err(io_err)?;
    for (table, columns) in moved {
        conn.execute_batch(&format!(
            "INSERT INTO {table} ({columns}) SELECT {columns} FROM {table}_rowid;
             DROP TABLE {table}_rowid;"
        ))
        .map_err(io_err)?;
    }
    Ok(())
}

fn io_err(e: impl std::fmt::Display) -> io::Error {
    io::Error::other(e.to_string())
}

/// The size the state database's WAL is cut back to after a checkpoint: 16 MiB.
const WAL_SIZE_LIMIT: i64 = 16 << 20;

fn open_db(path: &Path) -> io::Result<Connection> {
    let conn = Connection::open(path).map_err(io_err)?;
    // Its WAL and shared-memory files take the database's mode.
    crate::util::owner_only(path)?;
    conn.pragma_update(None, "journal_mode", "WAL")
        .map_err(io_err)?;
    // The log is the durable record; see the module docs.
    conn.pragma_update(None, "synchronous", "NORMAL")
        .map_err(io_err)?;
    conn.pragma_update(None, "foreign_keys", "ON")
        .map_err(io_err)?;
    // A WAL that grew past this (big entries, a long reader) is cut back after its next
    // checkpoint instead of keeping its largest size on disk (it counts toward the quota).
    conn.pragma_update(None, "journal_size_limit", WAL_SIZE_LIMIT)
        .map_err(io_err)?;
    conn.busy_timeout(std::time::Duration::from_secs(10))
        .map_err(io_err)?;
    // Room for every statement of the runtime and the application: none is parsed twice.
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    Ok(conn)
}

/// Prepared statements kept per connection.
const STATEMENT_CACHE: usize = 256;

/// Runs one parameterless statement, prepared once per connection.
fn run_cached(conn: &Connection, sql: &str) -> io::Result<()> {
    conn.prepare_cached(sql)
        .and_then(|mut stmt| stmt.execute([]))
        .map(drop)
        .map_err(io_err)
}

/// The writer connection behind its lock: applies, snapshot builds and installs use it.
type Db = Mutex<Writer>;

/// When the transaction that applied batches share commits (see the module docs: group
/// commit). Readers that wait for an index do not wait for it: it commits as soon as it holds
/// their index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommitPolicy {
    /// At most this many entries per commit (1: a commit per batch, as before group commit).
    pub entries: usize,
    /// At most this long from a transaction's first batch to its commit.
    pub within: Duration,
}

/// The default [`CommitPolicy::entries`].
pub const COMMIT_EVERY_ENTRIES: usize = 1_024;

/// The default [`CommitPolicy::within`], in milliseconds.
pub const COMMIT_WITHIN_MS: u64 = 10;

impl Default for CommitPolicy {
    fn default() -> Self {
        CommitPolicy {
            entries: COMMIT_EVERY_ENTRIES,
            within: Duration::from_millis(COMMIT_WITHIN_MS),
        }
    }
}

/// The writer connection and the transaction it keeps open across applied batches.
struct Writer {
    /// `None` while a snapshot install swaps the file.
    conn: Option<Connection>,
    /// Batches applied and not committed yet.
    pending: Option<Pending>,
    /// Why the open transaction was lost (a failed commit or apply; see [`Writer::fail`]).
    failed: Option<String>,
    /// When the open transaction commits.
    policy: CommitPolicy,
}

/// Applied batches inside the open transaction.
struct Pending {
    /// When its first batch was applied.
    since: Instant,
    /// Entries applied in it.
    entries: usize,
    /// The last index applied in it.
    last: u64,
    /// Its events for the live ring, sent at commit; `None` when one of its batches was
    /// applied with nobody watching (a watcher that came since re-reads the history).
    live: Option<Vec<crate::raft::feed::Event>>,
}

impl Writer {
    fn conn(&mut self) -> io::Result<&mut Connection> {
        if let Some(failed) = &self.failed {
            return Err(io::Error::other(failed.clone()));
        }
        self.conn
            .as_mut()
            .ok_or_else(|| io::Error::other("state machine database is closed"))
    }

    /// Commits the open transaction, if any: its applied index becomes visible to readers and
    /// its events go to the live ring.
    fn commit(&mut self, shared: &Shared) -> io::Result<()> {
        let Some(pending) = self.pending.take() else {
            return Ok(());
        };
        if let Err(e) = run_cached(self.conn()?, "COMMIT") {
            return Err(self.fail(
                shared,
                format!("committing the applied batches up to {}: {e}", pending.last),
            ));
        }
        shared.metrics.commits.inc();
        shared.visible.send_replace(pending.last);
        // No watcher left is fine: nothing waits on these sends.
        match pending.live {
            Some(live) if !live.is_empty() => {
                drop(
                    shared
                        .ring
                        .send(crate::raft::feed::Live::Batch(live.into())),
                );
            }
            // A watcher that subscribed after a batch was applied without copies may have read
            // the history before this commit: it re-reads it, now with these batches.
            None if shared.feed.retain > 0 && shared.ring.receiver_count() > 0 => {
                drop(shared.ring.send(crate::raft::feed::Live::Reset));
            }
            _ => {}
        }
        Ok(())
    }

    /// Rolls back the open transaction, whose batches were applied and answered, and keeps
    /// `why`: every later use of the writer fails with it, so the node stops instead of going
    /// on from a database that lost those batches (they are applied again from the log at the
    /// next start). Apply's memory of the clients goes with them.
    fn fail(&mut self, shared: &Shared, why: String) -> io::Error {
        tracing::error!("{why}");
        if let Some(conn) = &self.conn {
            drop(conn.execute_batch("ROLLBACK"));
        }
        self.pending = None;
        if let Ok(mut known) = shared.known_clients.lock() {
            known.forget();
        }
        self.failed = Some(why.clone());
        io::Error::other(why)
    }

    /// When the open transaction must commit at the latest.
    fn due_at(&self) -> Option<Instant> {
        self.pending.as_ref().map(|p| p.since + self.policy.within)
    }

    /// Whether the open transaction should commit now: it is full, its time is up, or a
    /// reader waits for an index that is not visible yet (then every batch commits until it
    /// is, as without group commit).
    fn due(&self, shared: &Shared) -> bool {
        self.pending.as_ref().is_some_and(|p| {
            p.entries >= self.policy.entries
                || p.since.elapsed() >= self.policy.within
                || shared.wanted.load(Ordering::Acquire) > *shared.visible.borrow()
        })
    }
}

/// How many queries run at once, each on a read connection of its own. Queries run while an
/// apply batch is in progress (WAL gives them the last commit).
const READERS: usize = 4;

/// A read for a read connection (or why there is none); returns whether the connection may be
/// used again.
type ReadJob = Box<dyn FnOnce(&Shared, io::Result<&mut Connection>) -> bool + Send>;

/// Reads waiting for a connection, and the runners taking them (see [`run_reads`]).
#[derive(Default)]
struct ReadQueue {
    waiting: std::collections::VecDeque<ReadJob>,
    /// Runners started and not finished, at most [`READERS`].
    runners: usize,
}

struct Shared {
    app: Arc<dyn Application>,
    db_path: PathBuf,
    snapshot_dir: PathBuf,
    writer: Db,
    /// Idle read connections (opened on demand, at most [`READERS`]).
    readers: Mutex<Vec<Connection>>,
    /// Held shared by every running query, exclusively by a snapshot install, which replaces
    /// the file under the read connections.
    read_gate: RwLock<()>,
    /// Reads waiting for a read connection.
    read_queue: Mutex<ReadQueue>,
    /// Apply latency, dedup hits and snapshots.
    metrics: crate::raft::metrics::StateMachineMetrics,
    /// Failed snapshot builds and installs: their backoff and what was logged.
    snapshot_faults: Mutex<snapshot::SnapshotFaults>,
    /// Per client, a bound on its request records' sequence numbers and its watermark, so
    /// that apply reads neither from the database (see [`requests::KnownClients`]).
    known_clients: Mutex<requests::KnownClients>,
    /// How the watch feed is kept.
    feed: crate::raft::feed::FeedConfig,
    /// The feed's live ring (see [`crate::raft::feed`]).
    ring: tokio::sync::broadcast::Sender<crate::raft::feed::Live>,
    /// The watchers served, against `feed.max_watchers`.
    watchers: Arc<crate::raft::feed::Watchers>,
    /// The oldest index the feed's history holds (as committed, or about to be).
    events_from: std::sync::atomic::AtomicU64,
    /// Set when the node stops: watchers end (see [`StateMachine::close_feed`]).
    feed_closed: std::sync::atomic::AtomicBool,
    /// The writer's thread: applies, snapshot builds and installs run there, one at a time,
    /// on one warm thread instead of a blocking-pool thread each; it also commits the open
    /// transaction when it is due. It stops when the last clone of the state machine is gone.
    jobs: std::sync::mpsc::Sender<Job>,
    /// The last applied index that is committed: what readers see.
    visible: tokio::sync::watch::Sender<u64>,
    /// The highest index a reader waits for: batches commit as they are applied until it is
    /// visible.
    wanted: AtomicU64,
}

impl Drop for Shared {
    /// Commits what is applied, so that a clean stop leaves nothing to re-apply.
    fn drop(&mut self) {
        if let Ok(writer) = self.writer.get_mut()
            && writer.pending.take().is_some()
            && writer.failed.is_none()
            && let Some(conn) = &writer.conn
            && let Err(e) = conn.execute_batch("COMMIT")
        {
            tracing::warn!("committing the applied batches at close: {e}");
        }
    }
}

/// Work for the writer's thread.
type Job = Box<dyn FnOnce() + Send>;

/// Starts the writer's thread: it runs the jobs in order and, after each job or when the open
/// transaction's time is up, commits it if due.
fn start_writer_thread(
    jobs: std::sync::mpsc::Receiver<Job>,
    shared: Weak<Shared>,
) -> io::Result<()> {
    use std::sync::mpsc::RecvTimeoutError;
    std::thread::Builder::new()
        .name("state-machine".into())
        .spawn(move || {
            loop {
                // No strong reference is held while waiting: the channel closes when the last
                // state machine goes.
                let due_at = shared
                    .upgrade()
                    .and_then(|shared| lock(&shared.writer).ok().and_then(|w| w.due_at()));
                let job = match due_at {
                    None => match jobs.recv() {
                        Ok(job) => Some(job),
                        Err(_) => return,
                    },
                    Some(at) => {
                        match jobs.recv_timeout(at.saturating_duration_since(Instant::now())) {
                            Ok(job) => Some(job),
                            Err(RecvTimeoutError::Timeout) => None,
                            Err(RecvTimeoutError::Disconnected) => return,
                        }
                    }
                };
                if let Some(job) = job {
                    job();
                }
                if let Some(shared) = shared.upgrade()
                    && let Ok(mut writer) = lock(&shared.writer)
                    && writer.due(&shared)
                {
                    // A failure is kept in the writer: the next job fails with it.
                    drop(writer.commit(&shared));
                }
            }
        })?;
    Ok(())
}

fn lock(db: &Db) -> io::Result<MutexGuard<'_, Writer>> {
    db.lock()
        .map_err(|_| io::Error::other("state machine lock poisoned"))
}

fn lock_readers(shared: &Shared) -> io::Result<MutexGuard<'_, Vec<Connection>>> {
    shared
        .readers
        .lock()
        .map_err(|_| io::Error::other("state machine lock poisoned"))
}

/// A runner: on a blocking thread, takes reads from the queue until none waits. Reads that
/// arrive together (those a read-index round releases at once) share a few runners instead of
/// starting a blocking task each.
fn run_reads(shared: &Shared) {
    loop {
        let job = {
            let Ok(mut queue) = shared.read_queue.lock() else {
                return;
            };
            match queue.waiting.pop_front() {
                Some(job) => job,
                None => {
                    queue.runners -= 1;
                    return;
                }
            }
        };
        // A read that panics drops its answer (its caller gets an error), not the runner.
        drop(std::panic::catch_unwind(std::panic::AssertUnwindSafe(
            || run_read(shared, job),
        )));
    }
}

/// Runs one read on an idle read connection (opened if none is idle) under the read gate.
fn run_read(shared: &Shared, job: ReadJob) {
    let gate = shared
        .read_gate
        .read()
        .map_err(|_| io::Error::other("state machine lock poisoned"));
    let conn = gate.and_then(|gate| {
        let idle = lock_readers(shared)?.pop();
        let conn = match idle {
            Some(conn) => conn,
            None => open_db(&shared.db_path)?,
        };
        Ok((gate, conn))
    });
    match conn {
        Ok((_gate, mut conn)) => {
            // A connection whose read failed may be left mid-transaction: it is not reused.
            if job(shared, Ok(&mut conn))
                && let Ok(mut readers) = shared.readers.lock()
            {
                readers.push(conn);
            }
        }
        Err(e) => {
            job(shared, Err(e));
        }
    }
}

/// The state machine of one node. Cloning shares it.
#[derive(Clone)]
pub struct StateMachine {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for StateMachine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateMachine")
            .field("db_path", &self.shared.db_path)
            .finish()
    }
}

impl StateMachine {
    /// Opens (creating if needed) the application database `db_path`; snapshots go in
    /// `snapshot_dir`.
    pub fn open(
        app: Arc<dyn Application>,
        db_path: &Path,
        snapshot_dir: &Path,
    ) -> io::Result<Self> {
        Self::open_with_feed(app, db_path, snapshot_dir, Default::default())
    }

    /// [`StateMachine::open`], keeping the watch feed as `feed` says.
    pub fn open_with_feed(
        app: Arc<dyn Application>,
        db_path: &Path,
        snapshot_dir: &Path,
        feed: crate::raft::feed::FeedConfig,
    ) -> io::Result<Self> {
        std::fs::create_dir_all(snapshot_dir)?;
        // Transfers interrupted by the last stop never complete: their senders start anew.
        remove_partial_transfers(snapshot_dir);
        let (writer, events_from) = Self::open_writer(app.as_ref(), db_path)?;
        let applied: Option<LogId> = read_meta(&writer, "last_applied")?;
        let (jobs, queue) = std::sync::mpsc::channel::<Job>();
        let shared = Arc::new(Shared {
            app,
            db_path: db_path.to_path_buf(),
            snapshot_dir: snapshot_dir.to_path_buf(),
            writer: Mutex::new(Writer {
                conn: Some(writer),
                pending: None,
                failed: None,
                policy: CommitPolicy::default(),
            }),
            readers: Mutex::new(Vec::new()),
            read_gate: RwLock::new(()),
            read_queue: Mutex::default(),
            metrics: Default::default(),
            snapshot_faults: Mutex::default(),
            known_clients: Mutex::default(),
            feed,
            ring: tokio::sync::broadcast::channel(feed.ring.max(1)).0,
            watchers: Arc::default(),
            events_from: events_from.into(),
            feed_closed: false.into(),
            jobs,
            visible: tokio::sync::watch::Sender::new(applied.map_or(0, |l| l.index)),
            wanted: AtomicU64::new(0),
        });
        start_writer_thread(queue, Arc::downgrade(&shared))?;
        Ok(StateMachine { shared })
    }

    /// Opens the writer connection, creating the runtime's tables; returns it with where the
    /// feed's history starts.
    fn open_writer(app: &dyn Application, db_path: &Path) -> io::Result<(Connection, u64)> {
        let mut writer = open_db(db_path)?;
        let tx = writer.transaction().map_err(io_err)?;
        tx.execute_batch(RUNTIME_SCHEMA).map_err(io_err)?;
        let old_sessions: i64 = tx
            .query_row(
                "SELECT count(*) FROM sqlite_master WHERE name = '_raft_sessions'",
                [],
                |r| r.get(0),
            )
            .map_err(io_err)?;
        if old_sessions > 0 {
            tx.execute_batch(MIGRATE_SESSIONS).map_err(io_err)?;
        }
        cluster_request_tables(&tx)?;
        let events_from = events::init(&tx)?;
        tx.commit().map_err(io_err)?;
        app.init(&writer).map_err(io::Error::other)?;
        Ok((writer, events_from))
    }

    /// Runs `f` on the writer's thread with the writer connection, after committing what is
    /// applied.
    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Shared, &mut Connection) -> io::Result<T> + Send + 'static,
    ) -> io::Result<T> {
        self.on_writer(move |shared, writer| {
            writer.commit(shared)?;
            f(shared, writer.conn()?)
        })
        .await
    }

    /// Runs `f` on the writer's thread with the writer (its open transaction as it is).
    async fn on_writer<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Shared, &mut Writer) -> io::Result<T> + Send + 'static,
    ) -> io::Result<T> {
        let shared = self.shared.clone();
        let (reply, answer) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move || {
            let result = lock(&shared.writer).and_then(|mut writer| f(&shared, &mut writer));
            drop(reply.send(result));
        });
        let gone = || io::Error::other("the state machine's writer thread has stopped");
        self.shared.jobs.send(job).map_err(|_| gone())?;
        answer.await.map_err(|_| gone())?
    }

    /// Runs `f` with an idle read connection on a blocking thread (at most [`READERS`] at
    /// once; see [`run_reads`]).
    async fn reading<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Shared, &mut Connection) -> io::Result<T> + Send + 'static,
    ) -> io::Result<T> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let job: ReadJob = Box::new(move |shared, conn| {
            let result = conn.and_then(|conn| f(shared, conn));
            let reuse = result.is_ok();
            drop(reply.send(result));
            reuse
        });
        let start = {
            let mut queue = self
                .shared
                .read_queue
                .lock()
                .map_err(|_| io::Error::other("state machine lock poisoned"))?;
            queue.waiting.push_back(job);
            let start = queue.runners < READERS;
            if start {
                queue.runners += 1;
            }
            start
        };
        if start {
            let shared = self.shared.clone();
            tokio::task::spawn_blocking(move || run_reads(&shared));
        }
        answer
            .await
            .map_err(|_| io::Error::other("the read stopped before it answered"))?
    }

    /// Waits until everything up to `index` is applied and committed, so that every reader
    /// sees it; the open transaction commits as soon as it holds `index`. Fails after `within`.
    pub async fn wait_applied(&self, index: u64, within: Duration) -> io::Result<()> {
        let mut visible = self.shared.visible.subscribe();
        if *visible.borrow_and_update() >= index {
            return Ok(());
        }
        // The writer's thread looks at what is due after every job: an empty one is a nudge.
        // A reader that raised `wanted` sent one already for a higher index; until it is
        // visible, every job the writer runs ends in a commit.
        if self.shared.wanted.fetch_max(index, Ordering::AcqRel) < index {
            drop(self.shared.jobs.send(Box::new(|| {})));
        }
        match tokio::time::timeout(within, visible.wait_for(|v| *v >= index)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(_)) => Err(io::Error::other("the state machine has stopped")),
            Err(_) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("index {index} was not applied within {within:?}"),
            )),
        }
    }

    /// Sets when applied batches commit (the default: [`CommitPolicy::default`]).
    pub fn set_commit_policy(&self, policy: CommitPolicy) -> io::Result<()> {
        lock(&self.shared.writer)?.policy = policy;
        Ok(())
    }

    /// Commits what is applied (readers see all of it afterwards).
    pub async fn flush(&self) -> io::Result<()> {
        self.blocking(|_, _| Ok(())).await
    }

    /// Answers a serialized query from the local state (no consistency check here: the node
    /// decides the read level before calling this).
    pub async fn query(&self, query: Vec<u8>) -> io::Result<Vec<u8>> {
        self.reading(move |shared, reader| {
            // One read transaction: the query sees one consistent state.
            run_cached(reader, "BEGIN")?;
            let answer = shared.app.query(reader, &query);
            run_cached(reader, "ROLLBACK")?;
            Ok(answer)
        })
        .await
    }

    /// The application's digest of the local state, with the index it reflects (both read in
    /// one transaction).
    pub async fn digest(&self) -> io::Result<(String, Option<u64>)> {
        self.flush().await?;
        self.reading(|shared, reader| {
            let tx = reader.unchecked_transaction().map_err(io_err)?;
            let applied: Option<LogId> = read_meta(&tx, "last_applied")?;
            let digest = shared.app.digest(&tx).map_err(io::Error::other)?;
            tx.rollback().map_err(io_err)?;
            Ok((digest, applied.map(|l| l.index)))
        })
        .await
    }

    /// Writes a consistent copy of the database to `to` (what one read transaction sees:
    /// everything applied when it starts), fsynced; returns the applied index it holds and the
    /// application's digest of it, read from the copy itself.
    pub async fn backup(&self, to: PathBuf) -> io::Result<(Option<u64>, String)> {
        self.flush().await?;
        self.reading(move |shared, reader| {
            if to.exists() {
                std::fs::remove_file(&to)?;
            }
            reader
                .execute("VACUUM INTO ?1", [to.to_string_lossy()])
                .map_err(io_err)?;
            crate::util::owner_only(&to)?;
            std::fs::File::open(&to)?.sync_all()?;
            let copy = Connection::open_with_flags(&to, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
                .map_err(io_err)?;
            let applied: Option<LogId> = read_meta(&copy, "last_applied")?;
            let digest = shared.app.digest(&copy).map_err(io::Error::other)?;
            Ok((applied.map(|l| l.index), digest))
        })
        .await
    }

    /// Makes the backup at `backup` the state database of a new cluster in `data_dir`: a copy,
    /// stripped of the old cluster's raft metadata (applied log id, membership) and request
    /// records, made durable before it takes the database's name. Refuses a directory holding
    /// any raft state ([`crate::raft::files::raft_state_in`]): an old log or snapshot would be
    /// replayed on top of the backup.
    pub fn restore(backup: &Path, data_dir: &Path) -> io::Result<()> {
        let leftover = crate::raft::files::raft_state_in(data_dir);
        if !leftover.is_empty() {
            let names: Vec<String> = leftover.iter().map(|p| p.display().to_string()).collect();
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!(
                    "{} holds raft state ({}); restore into a new, empty data directory",
                    data_dir.display(),
                    names.join(", ")
                ),
            ));
        }
        std::fs::create_dir_all(data_dir)?;
        let db_path = data_dir.join(crate::raft::files::STATE_DB);
        let db_path = db_path.as_path();
        let tmp = db_path.with_extension("restoring");
        std::fs::copy(backup, &tmp)?;
        crate::util::owner_only(&tmp)?;
        {
            let conn = Connection::open(&tmp).map_err(io_err)?;
            conn.execute_batch(&format!(
                "{RUNTIME_SCHEMA} DELETE FROM _raft_meta; DELETE FROM _raft_requests; \
                 DELETE FROM _raft_clients; DROP TABLE IF EXISTS _raft_events;"
            ))
            .map_err(io_err)?;
        }
        std::fs::File::open(&tmp)?.sync_all()?;
        std::fs::rename(&tmp, db_path)?;
        sync_dir(db_path)
    }

    /// Whether the application's build can apply `command` (see [`Application::admit`]).
    pub fn admit(&self, command: &[u8]) -> Result<(), crate::wire::error::Failure> {
        self.shared.app.admit(command)
    }

    /// What the application's build knows (see [`Application::schema`]).
    pub fn schema(&self) -> crate::raft::version::Schema {
        self.shared.app.schema()
    }

    /// Watches the commands this replica applies, from index `from` (0: from the next one),
    /// those `filter` passes (see [`crate::raft::feed`]).
    pub fn watch(
        &self,
        from: u64,
        filter: crate::raft::feed::WatchFilter,
    ) -> crate::raft::feed::WatchStream {
        crate::raft::feed::watch(
            self.shared.feed,
            self.clone(),
            &self.shared.ring,
            &self.shared.watchers,
            from,
            filter,
        )
    }

    /// The watchers this replica serves.
    pub fn watchers(&self) -> &crate::raft::feed::Watchers {
        &self.shared.watchers
    }

    /// Ends every watch (with [`crate::raft::feed::WatchError::Stopped`]) and refuses new ones:
    /// the node is stopping, and its API servers drain only once their streams end.
    pub fn close_feed(&self) {
        self.shared
            .feed_closed
            .store(true, std::sync::atomic::Ordering::Relaxed);
        drop(self.shared.ring.send(crate::raft::feed::Live::Stop));
    }

    /// What the state machine counts (apply latency, dedup hits, snapshots), shared.
    pub fn metrics(&self) -> crate::raft::metrics::StateMachineMetrics {
        self.shared.metrics.clone()
    }

    fn snapshot_paths(&self, meta_name: &str) -> (PathBuf, PathBuf) {
        let dir = &self.shared.snapshot_dir;
        (
            dir.join(format!("{meta_name}.db")),
            dir.join(format!("{meta_name}.json")),
        )
    }
}

impl crate::raft::feed::History for StateMachine {
    async fn page(&self, from: u64, limit: usize) -> Result<crate::raft::feed::Page, String> {
        // The history holds every command applied so far, as it did when the command's
        // writer got its answer.
        self.flush().await.map_err(|e| e.to_string())?;
        self.reading(move |_, reader| events::page(reader, from, limit))
            .await
            .map_err(|e| e.to_string())
    }

    fn info(&self, command: &[u8]) -> crate::raft::feed::WatchInfo {
        self.shared.app.watch_info(command)
    }

    fn stopping(&self) -> bool {
        self.shared
            .feed_closed
            .load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// Applies a batch inside the open transaction `pending`; returns the outcomes.
fn apply_batch(
    shared: &Shared,
    conn: &Connection,
    entries: &[Entry],
    pending: &mut Pending,
) -> io::Result<Vec<Outcome>> {
    // Held for the batch; taken after the writer, as a snapshot install does.
    let mut known = shared
        .known_clients
        .lock()
        .map_err(|_| io::Error::other("state machine lock poisoned"))?;
    let mut outcomes = Vec::with_capacity(entries.len());
    let mut last = None;
    let mut membership = None;
    let done = || {
        Ok(Applied {
            ok: true,
            reply: Vec::new(),
        })
    };
    for entry in entries {
        let index = entry.log_id.index;
        expire_requests(conn, &mut known, index)?;
        let outcome = match &entry.payload {
            EntryPayload::Blank => done(),
            EntryPayload::Normal(env) => {
                apply_envelope(shared, &mut known, conn, index, env, &mut pending.live)?
            }
            EntryPayload::Membership(m) => {
                membership = Some(StoredMembership::new(Some(entry.log_id), m.clone()));
                done()
            }
        };
        last = Some(entry.log_id);
        outcomes.push(outcome);
    }
    write_meta(conn, "last_applied", &last)?;
    if let Some(m) = &membership {
        write_meta(conn, "membership", m)?;
    }
    if let Some(last) = last {
        events::trim(shared, conn, last.index)?;
        pending.last = last.index;
    }
    pending.entries += entries.len();
    Ok(outcomes)
}

fn read_meta<T: serde::de::DeserializeOwned>(
    conn: &Connection,
    key: &str,
) -> io::Result<Option<T>> {
    let text: Option<String> = conn
        .prepare_cached("SELECT value FROM _raft_meta WHERE key = ?1")
        .and_then(|mut stmt| stmt.query_row([key], |r| r.get(0)).optional())
        .map_err(io_err)?;
    match text {
        Some(t) => serde_json::from_str(&t).map(Some).map_err(io_err),
        None => Ok(None),
    }
}

fn write_meta<T: serde::Serialize>(conn: &Connection, key: &str, value: &T) -> io::Result<()> {
    let text = serde_json::to_string(value).map_err(io_err)?;
    conn.prepare_cached(
        "INSERT INTO _raft_meta (key, value) VALUES (?1, ?2)
         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
    )
    .map_err(io_err)?
    .execute(params![key, text])
    .map_err(io_err)?;
    Ok(())
}

/// How many times a snapshot install is tried (with the builds' backoff between tries, about
/// four minutes in all) before the error goes to openraft, which stops the node.
const INSTALL_TRIES: u32 = 8;

/// One try at installing the received snapshot `snapshot` as the database; safe to try again
/// after a failure at any step.
fn install_once(
    shared: &Shared,
    snapshot: &SnapshotFile,
    db_copy: &Path,
    meta_path: &Path,
    meta: &SnapshotMeta,
    name: &str,
) -> io::Result<()> {
    // Hold the writer and the read gate throughout (writer first, as everywhere): no
    // apply, query, snapshot build or prune runs while we swap.
    let mut writer = lock(&shared.writer)?;
    let _gate = shared
        .read_gate
        .write()
        .map_err(|_| io::Error::other("state machine lock poisoned"))?;
    // Keep the received file as the current snapshot (an earlier try may have moved it
    // already), then install a copy of it.
    if snapshot.path != db_copy && (snapshot.path.exists() || !db_copy.exists()) {
        std::fs::rename(&snapshot.path, db_copy)?;
    }
    if let Some(arg) = crate::failpoint::fired("snapshot::install") {
        return Err(io::Error::other(format!(
            "failpoint snapshot::install{}",
            arg.map(|a| format!(" ({a})")).unwrap_or_default()
        )));
    }
    let staged = shared.db_path.with_extension("installing");
    std::fs::copy(db_copy, &staged)?;
    std::fs::File::open(&staged)?.sync_all()?;
    // Close every connection before the swap. Batches applied and not committed are
    // dropped with the connection: the snapshot is further along than they are.
    writer.conn.take();
    writer.pending = None;
    lock_readers(shared)?.clear();
    for suffix in ["-wal", "-shm"] {
        let side = PathBuf::from(format!("{}{suffix}", shared.db_path.display()));
        if side.exists() {
            std::fs::remove_file(side)?;
        }
    }
    std::fs::rename(&staged, &shared.db_path)?;
    sync_dir(&shared.db_path)?;
    let (opened, events_from) = StateMachine::open_writer(shared.app.as_ref(), &shared.db_path)?;
    let installed: Option<LogId> = read_meta(&opened, "last_applied")?;
    writer.conn = Some(opened);
    shared
        .visible
        .send_replace(installed.map_or(0, |l| l.index));
    shared
        .events_from
        .store(events_from, std::sync::atomic::Ordering::Relaxed);
    // Watchers re-read the history that came with it.
    drop(shared.ring.send(crate::raft::feed::Live::Reset));
    // The installed database has request records of its own.
    if let Ok(mut known) = shared.known_clients.lock() {
        known.forget();
    }
    // The metadata last: a snapshot without it is not considered complete.
    write_durably(meta_path, &serde_json::to_vec(meta).map_err(io_err)?)?;
    prune_snapshots(&shared.snapshot_dir, name);
    shared
        .metrics
        .snapshot(std::fs::metadata(db_copy)?.len(), true);
    Ok(())
}

impl RaftStateMachine<C> for StateMachine {
    type SnapshotData = SnapshotFile;
    type SnapshotBuilder = StateMachine;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), io::Error> {
        self.blocking(|_, writer| {
            let applied: Option<LogId> = read_meta(writer, "last_applied")?;
            let membership: Option<StoredMembership> = read_meta(writer, "membership")?;
            Ok((applied, membership.unwrap_or_default()))
        })
        .await
    }

    async fn apply<Strm>(&mut self, mut entries: Strm) -> Result<(), io::Error>
    where
        Strm: futures_util::Stream<Item = Result<EntryResponder<C>, io::Error>> + Unpin + Send,
    {
        let mut batch = Vec::new();
        while let Some(item) = entries.next().await {
            batch.push(item?);
        }
        if batch.is_empty() {
            return Ok(());
        }
        let (entries, responders): (Vec<_>, Vec<_>) = batch.into_iter().unzip();
        let started = std::time::Instant::now();
        let outcomes = self
            .on_writer(move |shared, writer| {
                let copies = shared.feed.retain > 0 && shared.ring.receiver_count() > 0;
                let mut pending = match writer.pending.take() {
                    Some(pending) => pending,
                    None => {
                        run_cached(writer.conn()?, "BEGIN IMMEDIATE")?;
                        Pending {
                            since: Instant::now(),
                            entries: 0,
                            last: 0,
                            live: Some(Vec::new()),
                        }
                    }
                };
                if !copies {
                    pending.live = None;
                }
                let applied = apply_batch(shared, writer.conn()?, &entries, &mut pending);
                match applied {
                    Ok(outcomes) => {
                        writer.pending = Some(pending);
                        Ok(outcomes)
                    }
                    Err(e) => Err(writer.fail(shared, e.to_string())),
                }
            })
            .await?;
        self.shared
            .metrics
            .apply_seconds
            .observe(started.elapsed().as_secs_f64());
        for (responder, outcome) in responders.into_iter().zip(outcomes) {
            if let Some(responder) = responder {
                responder.send(outcome);
            }
        }
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    /// A builder, unless builds failed lately and openraft's policy (not a follower's need,
    /// `force`) asks: then the build waits for its backoff (see [`snapshot::SnapshotFaults`]).
    async fn try_create_snapshot_builder(&mut self, force: bool) -> Option<Self::SnapshotBuilder> {
        if !force && !snapshot::lock_faults(&self.shared).may_build() {
            return None;
        }
        Some(self.clone())
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: SnapshotFile,
    ) -> Result<(), io::Error> {
        let name = snapshot_name(meta);
        let (db_copy, meta_path) = self.snapshot_paths(&name);
        let meta = meta.clone();
        let shared = self.shared.clone();
        tokio::task::spawn_blocking(move || {
            const WHAT: &str = "a snapshot install";
            let mut tries = 0;
            loop {
                match install_once(&shared, &snapshot, &db_copy, &meta_path, &meta, &name) {
                    Ok(()) => {
                        snapshot::lock_faults(&shared).succeeded(WHAT);
                        return Ok(());
                    }
                    Err(e) => {
                        tries += 1;
                        snapshot::snapshot_failed(&shared, WHAT, &e);
                        if tries >= INSTALL_TRIES {
                            return Err(e);
                        }
                        std::thread::sleep(snapshot::retry_delay(tries));
                    }
                }
            }
        })
        .await
        .map_err(io_err)?
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<openraft::alias::SnapshotOf<C, SnapshotFile>>, io::Error> {
        let dir = self.shared.snapshot_dir.clone();
        tokio::task::spawn_blocking(move || latest_snapshot(&dir))
            .await
            .map_err(io_err)?
    }
}
