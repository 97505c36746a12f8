//! The key-value store's state on SQLite: the one part of a replicated service the toolkit
//! cannot write. [`KvTables`] implements the generated [`KvStore`]; [`KvState`] implements the
//! generated [`KvService`], one method per operation of `schema/kv.yaml`.
//!
//! Every successful write takes the next store revision (kept in `kv_meta`), so revisions are
//! dense, ordered and equal on every replica.

#![warn(missing_docs)]

use kv_generated::{ApplyContext, Entry, KvError, KvService, KvServiceError, KvStore};
use runtime::rusqlite::{self, Connection, OptionalExtension, params};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS kv (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL,
    revision INTEGER NOT NULL
) STRICT, WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS kv_meta (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    revision INTEGER NOT NULL
) STRICT;
INSERT OR IGNORE INTO kv_meta (id, revision) VALUES (1, 0);
";

/// The largest `limit` a range accepts.
pub const MAX_RANGE: u32 = 10_000;

/// The store's tables, as the runtime runs them (in process or replicated).
#[derive(Debug, Clone, Copy, Default)]
pub struct KvTables;

impl KvStore for KvTables {
    fn init(&self, conn: &Connection) -> Result<(), String> {
        conn.execute_batch(SCHEMA).map_err(|e| e.to_string())
    }

    fn command<R>(
        &self,
        conn: &Connection,
        _ctx: &ApplyContext,
        f: impl FnOnce(&mut dyn KvService) -> Result<R, KvServiceError>,
    ) -> Result<R, KvServiceError> {
        f(&mut KvState { conn })
    }

    fn query<R>(
        &self,
        conn: &Connection,
        f: impl FnOnce(&dyn KvService) -> Result<R, KvServiceError>,
    ) -> Result<R, KvServiceError> {
        f(&KvState { conn })
    }

    fn digest(&self, conn: &Connection) -> Result<String, String> {
        runtime::api::local::digest_tables(conn, &[("kv", "key"), ("kv_meta", "id")])
            .map_err(|e| e.to_string())
    }
}

/// The store as one command or query sees it.
#[derive(Debug)]
pub struct KvState<'c> {
    conn: &'c Connection,
}

impl<'c> KvState<'c> {
    /// The store on `conn` (its tables created by [`KvTables`]).
    pub fn new(conn: &'c Connection) -> Self {
        KvState { conn }
    }
}

/// SQLite failing is a fault of the machine, not a refusal: it stops the replica.
fn internal(e: rusqlite::Error) -> KvServiceError {
    KvServiceError::Fault(format!("sqlite: {e}"))
}

fn non_empty(key: &str) -> Result<(), KvServiceError> {
    if key.is_empty() {
        return Err(KvError::InvalidArgument("the key must not be empty".into()).into());
    }
    Ok(())
}

impl KvState<'_> {
    fn entry_revision(&self, key: &str) -> Result<Option<u64>, KvServiceError> {
        self.conn
            .prepare_cached("SELECT revision FROM kv WHERE key = ?1")
            .and_then(|mut s| s.query_row([key], |r| r.get::<_, i64>(0)).optional())
            .map(|r| r.map(|r| r as u64))
            .map_err(internal)
    }

    /// Takes the next store revision.
    fn next_revision(&mut self) -> Result<u64, KvServiceError> {
        self.conn
            .prepare_cached(
                "UPDATE kv_meta SET revision = revision + 1 WHERE id = 1 RETURNING revision",
            )
            .and_then(|mut s| s.query_row([], |r| r.get::<_, i64>(0)))
            .map(|r| r as u64)
            .map_err(internal)
    }

    fn write(&mut self, key: &str, value: &str) -> Result<u64, KvServiceError> {
        let revision = self.next_revision()?;
        self.conn
            .prepare_cached(
                "INSERT INTO kv (key, value, revision) VALUES (?1, ?2, ?3)
                 ON CONFLICT (key) DO UPDATE SET value = ?2, revision = ?3",
            )
            .and_then(|mut s| s.execute(params![key, value, revision as i64]))
            .map_err(internal)?;
        Ok(revision)
    }
}

fn entry(row: &rusqlite::Row<'_>) -> rusqlite::Result<Entry> {
    Ok(Entry {
        key: row.get(0)?,
        value: row.get(1)?,
        revision: row.get::<_, i64>(2)? as u64,
    })
}

impl KvService for KvState<'_> {
    fn put(
        &mut self,
        _ctx: &ApplyContext,
        key: String,
        value: String,
    ) -> Result<u64, KvServiceError> {
        non_empty(&key)?;
        self.write(&key, &value)
    }

    fn delete(&mut self, _ctx: &ApplyContext, key: String) -> Result<bool, KvServiceError> {
        if self.entry_revision(&key)?.is_none() {
            return Ok(false);
        }
        self.next_revision()?;
        self.conn
            .prepare_cached("DELETE FROM kv WHERE key = ?1")
            .and_then(|mut s| s.execute([key]))
            .map_err(internal)?;
        Ok(true)
    }

    fn compare_and_swap(
        &mut self,
        _ctx: &ApplyContext,
        key: String,
        expected_revision: u64,
        value: String,
    ) -> Result<u64, KvServiceError> {
        non_empty(&key)?;
        let found = self.entry_revision(&key)?.unwrap_or(0);
        if found != expected_revision {
            return Err(KvError::Conflict(format!(
                "`{key}` is at revision {found}, not {expected_revision}"
            ))
            .into());
        }
        self.write(&key, &value)
    }

    fn get(&self, key: String) -> Result<Option<Entry>, KvServiceError> {
        self.conn
            .prepare_cached("SELECT key, value, revision FROM kv WHERE key = ?1")
            .and_then(|mut s| s.query_row([key], entry).optional())
            .map_err(internal)
    }

    fn range(&self, prefix: String, limit: u32) -> Result<Vec<Entry>, KvServiceError> {
        if !(1..=MAX_RANGE).contains(&limit) {
            return Err(KvError::InvalidArgument(format!(
                "limit must be 1 to {MAX_RANGE}, not {limit}"
            ))
            .into());
        }
        // Keys in [prefix, prefix + U+10FFFF): every key that starts with `prefix`.
        let end = format!("{prefix}\u{10FFFF}");
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT key, value, revision FROM kv WHERE key >= ?1 AND key < ?2
                 ORDER BY key LIMIT ?3",
            )
            .map_err(internal)?;
        let rows = stmt
            .query_map(params![prefix, end, limit], entry)
            .map_err(internal)?;
        rows.collect::<Result<_, _>>().map_err(internal)
    }
}
