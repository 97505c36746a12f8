//! A service in one process, on one SQLite database: the leader of a one-node "cluster" without
//! a log. [`LocalDb`] stamps each command with its [`ApplyContext`] (the next index and the wall
//! clock, read here, outside the deterministic apply) and runs it in its own transaction;
//! [`LocalSink`] answers serialized calls through the same [`Application`] the Raft state
//! machine uses, so the in-process variants exercise exactly the replicated apply path.

use std::path::Path;
use std::sync::{Mutex, MutexGuard, PoisonError};

use chrono::Utc;
use rusqlite::{Connection, TransactionBehavior};

use crate::api::sink::CommandSink;
use crate::raft::state_machine::Application;
use crate::wire::CallKind;
use crate::wire::error::{CallError, Failure, ServiceError};
use crate::wire::service::ApplyContext;

/// One SQLite database and the command counter of the process that owns it.
#[derive(Debug)]
pub struct LocalDb {
    inner: Mutex<Inner>,
}

#[derive(Debug)]
struct Inner {
    conn: Connection,
    /// The index given to the last command stamped (counted from this process's start).
    last_index: u64,
}

impl LocalDb {
    /// Opens (creating if missing) the database file at `path` in WAL mode with
    /// `synchronous = FULL` and foreign keys on. The application creates its tables with
    /// [`LocalDb::write`].
    pub fn open(path: impl AsRef<Path>) -> Result<Self, rusqlite::Error> {
        let conn = Connection::open(path)?;
        let mode: String =
            conn.pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            tracing::warn!(journal_mode = %mode, "SQLite refused WAL mode");
        }
        conn.pragma_update(None, "synchronous", "FULL")?;
        Self::with(conn)
    }

    /// A new, empty database that lives in memory only.
    pub fn open_in_memory() -> Result<Self, rusqlite::Error> {
        Self::with(Connection::open_in_memory()?)
    }

    fn with(conn: Connection) -> Result<Self, rusqlite::Error> {
        conn.pragma_update(None, "foreign_keys", "ON")?;
        Ok(LocalDb {
            inner: Mutex::new(Inner {
                conn,
                last_index: 0,
            }),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic inside `f` dropped its transaction, which rolled it back: the data is intact.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Stamps the next command as a leader does (the next index, the wall clock) and runs `f`
    /// in one transaction: committed when `f` returns `Ok`, rolled back when it returns `Err`.
    /// The outer `Err` is SQLite failing to begin or end the transaction.
    pub fn command<T, E>(
        &self,
        f: impl FnOnce(&Connection, &ApplyContext) -> Result<T, E>,
    ) -> Result<Result<T, E>, rusqlite::Error> {
        let mut inner = self.lock();
        inner.last_index += 1;
        let ctx = ApplyContext {
            index: inner.last_index,
            time: Utc::now(),
        };
        Self::transaction(&mut inner.conn, |conn| f(conn, &ctx))
    }

    /// Runs `f` as one command with a context the caller chose (replays, tests).
    pub fn command_at<T, E>(
        &self,
        ctx: &ApplyContext,
        f: impl FnOnce(&Connection, &ApplyContext) -> Result<T, E>,
    ) -> Result<Result<T, E>, rusqlite::Error> {
        Self::transaction(&mut self.lock().conn, |conn| f(conn, ctx))
    }

    /// Runs `f` in one write transaction that is not a command (creating tables, migrations):
    /// committed when `f` returns `Ok`, rolled back when it returns `Err`.
    pub fn write<T, E>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, E>,
    ) -> Result<Result<T, E>, rusqlite::Error> {
        Self::transaction(&mut self.lock().conn, f)
    }

    fn transaction<T, E>(
        conn: &mut Connection,
        f: impl FnOnce(&Connection) -> Result<T, E>,
    ) -> Result<Result<T, E>, rusqlite::Error> {
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let result = f(&tx);
        if result.is_ok() {
            tx.commit()?;
        } else {
            tx.rollback()?;
        }
        Ok(result)
    }

    /// Runs a read-only `f` on a consistent snapshot of the database.
    pub fn query<T>(&self, f: impl FnOnce(&Connection) -> T) -> Result<T, rusqlite::Error> {
        let inner = self.lock();
        let tx = inner.conn.unchecked_transaction()?;
        let result = f(&tx);
        // Nothing was written: ending the read transaction either way is the same.
        tx.rollback()?;
        Ok(result)
    }
}

/// A SHA-256 (lowercase hex) over the schema version (`PRAGMA user_version`) and every row of
/// `tables`, each `(name, primary-key order)`, in that order: two replicas hold the same data
/// exactly when their digests are equal. What an application's `digest` hook usually returns.
pub fn digest_tables(conn: &Connection, tables: &[(&str, &str)]) -> rusqlite::Result<String> {
    use rusqlite::types::ValueRef;
    use sha2::{Digest, Sha256};
    let mut hasher = Sha256::new();
    let version: i64 = conn.pragma_query_value(None, "user_version", |row| row.get(0))?;
    hasher.update(format!("user_version {version}\n"));
    for (table, order) in tables {
        hasher.update(format!("table {table}\n"));
        let mut stmt = conn.prepare(&format!("SELECT * FROM {table} ORDER BY {order}"))?;
        let columns = stmt.column_count();
        let mut rows = stmt.query([])?;
        while let Some(row) = rows.next()? {
            for i in 0..columns {
                match row.get_ref(i)? {
                    ValueRef::Null => hasher.update(b"N;"),
                    ValueRef::Integer(v) => hasher.update(format!("I{v};")),
                    ValueRef::Real(v) => hasher.update(format!("R{:016x};", v.to_bits())),
                    ValueRef::Text(t) => {
                        hasher.update(format!("T{}:", t.len()));
                        hasher.update(t);
                        hasher.update(b";");
                    }
                    ValueRef::Blob(b) => {
                        hasher.update(format!("B{}:", b.len()));
                        hasher.update(b);
                        hasher.update(b";");
                    }
                }
            }
            hasher.update(b"\n");
        }
    }
    Ok(format!("{:x}", hasher.finalize()))
}

/// A generated service's API in process, over an application's store on a [`LocalDb`]: the
/// generated crate implements its API trait for it, each call going straight to the store's
/// service, each command in its own transaction (no log, no replication).
#[derive(Debug)]
pub struct Direct<St> {
    db: LocalDb,
    store: St,
}

impl<St> Direct<St> {
    /// The direct client over `store` on `db`.
    pub fn new(db: LocalDb, store: St) -> Self {
        Direct { db, store }
    }

    /// Runs `f` as one command, in its own transaction (committed when `f` succeeds). A fault
    /// of the service reaches the caller as an `Internal` failure.
    pub fn command<R, E>(
        &self,
        f: impl FnOnce(&Connection, &St, &ApplyContext) -> Result<R, ServiceError<E>>,
    ) -> Result<R, CallError<E>> {
        self.db
            .command(|conn, ctx| f(conn, &self.store, ctx))
            .map_err(sqlite)?
            .map_err(CallError::from)
    }

    /// Runs `f` as one query, on a read transaction.
    pub fn query<R, E>(
        &self,
        f: impl FnOnce(&Connection, &St) -> Result<R, ServiceError<E>>,
    ) -> Result<R, CallError<E>> {
        self.db
            .query(|conn| f(conn, &self.store))
            .map_err(sqlite)?
            .map_err(CallError::from)
    }
}

fn sqlite(e: rusqlite::Error) -> Failure {
    Failure::Internal(format!("sqlite: {e}"))
}

/// A [`CommandSink`] that applies serialized calls to a [`LocalDb`] through an
/// [`Application`]: commands in their own transaction (rolled back when refused), queries on a
/// read transaction.
#[derive(Debug)]
pub struct LocalSink<A> {
    db: LocalDb,
    app: A,
}

impl<A: Application> LocalSink<A> {
    /// The sink applying `app` to `db`.
    pub fn new(db: LocalDb, app: A) -> Self {
        LocalSink { db, app }
    }
}

impl<A: Application> CommandSink for LocalSink<A> {
    async fn submit(&self, kind: CallKind, command: Vec<u8>) -> Result<Vec<u8>, Failure> {
        match kind {
            CallKind::Command => {
                self.app.admit(&command)?;
                let applied = self
                    .db
                    .command(|conn, ctx| match self.app.apply(conn, ctx, &command) {
                        Ok(applied) if applied.ok => Ok(applied.reply),
                        Ok(refused) => Err(Ok(refused.reply)),
                        Err(failure) => Err(Err(Failure::Internal(failure))),
                    })
                    .map_err(sqlite)?;
                match applied {
                    Ok(reply) | Err(Ok(reply)) => Ok(reply),
                    Err(Err(failure)) => Err(failure),
                }
            }
            CallKind::Query => self
                .db
                .query(|conn| self.app.query(conn, &command))
                .map_err(sqlite),
        }
    }
}
