//! The bank's state machine on SQLite.
//!
//! [`Bank`] owns one SQLite database ([`LocalDb`]). Every command runs inside ONE SQLite transaction
//! ([`Bank::command`]): it commits when the command succeeds and rolls back when it fails, so a
//! failed command changes nothing. [`BankState`] is the view of the database inside such a
//! transaction; it implements the generated [`BankService`] trait.
//!
//! Applying a command is deterministic: it reads only the database and the [`ApplyContext`]
//! stamped by the leader, never the wall clock, randomness or the iteration order of a hash
//! map, so every replica that applies the same commands with the same contexts ends with the
//! same database (compare [`Bank::digest`]).
//!
//! Storage rules: money is an exact [`Decimal`] stored as TEXT with exactly two fractional
//! digits (sums are computed in Rust, never by SQL over floats); times are stored as RFC 3339
//! TEXT with nanoseconds and a `Z` suffix, fixed width, so they sort as text; ids are assigned
//! explicitly as `MAX(id) + 1`.
//!
//! By concern: `schema` (the tables, their version, the digest), `rows` (row types and the
//! codecs of times, dates, money and ids), `clock` (the simulated clock and the monthly
//! statements it produces), `service` ([`BankState`] and its `BankService` methods).

use std::path::Path;

use bank_generated::{ApplyContext, BankService, BankServiceError, BankStore};
use chrono::{DateTime, Utc};
use runtime::api::local::LocalDb;
use rusqlite::Connection;

mod clock;
mod rows;
mod schema;
mod service;

use clock::*;
use rows::*;
pub use rows::{check_amount, money};
pub use schema::{digest_of, init_schema};
pub use service::BankState;

/// The schema version this build writes and understands (`PRAGMA user_version`).
pub const SCHEMA_VERSION: i64 = 1;

/// The longest first or last name, in characters (after trimming).
pub const MAX_NAME_CHARS: usize = 100;

/// The longest address, in characters (after trimming).
pub const MAX_ADDRESS_CHARS: usize = 500;

/// The largest `limit` accepted by `list_customers` and `list_accounts`.
pub const MAX_LIST_LIMIT: u32 = 1000;

/// The largest single `advance_time` delta, in days: one call crosses at most 13 month ends,
/// so it writes at most 13 statements per account in one apply.
pub const MAX_ADVANCE_DAYS: i64 = 366;

/// The furthest the simulated clock may run ahead of the leaders' time, summed over every
/// `advance_time`, in days (100 years): no client can push the clock to the end of the
/// representable years and stop every later command.
pub const MAX_TOTAL_ADVANCE_DAYS: i64 = 36_525;

/// The largest amount and the largest balance, in whole currency units (10^18).
pub const MAX_MONEY_UNITS: i64 = 1_000_000_000_000_000_000;

/// An error opening or migrating the database.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// SQLite refused an operation (cannot open the file, disk full, not a database, ...).
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// The database was written by a newer version of the bank.
    #[error("database schema version {found} is newer than the supported version {supported}")]
    UnsupportedSchema {
        /// The version found in the file.
        found: i64,
        /// The version this build supports.
        supported: i64,
    },
}

/// The bank: one SQLite database holding customers, accounts, transactions, statements and the
/// simulated clock, run in process on a [`LocalDb`].
#[derive(Debug)]
pub struct Bank {
    db: LocalDb,
}

impl Bank {
    /// Opens (creating if missing) the database file at `path`, in WAL mode with
    /// `synchronous = FULL`, and creates or checks its schema.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        Self::init(LocalDb::open(path)?)
    }

    /// Opens a new, empty database that lives in memory only.
    pub fn open_in_memory() -> Result<Self, StoreError> {
        Self::init(LocalDb::open_in_memory()?)
    }

    fn init(db: LocalDb) -> Result<Self, StoreError> {
        db.write(init_schema)??;
        Ok(Bank { db })
    }

    /// The database, for the generated in-process adapters (see [`crate::direct`]).
    pub fn into_db(self) -> LocalDb {
        self.db
    }

    /// Applies one command: inside one SQLite transaction, first moves the simulated clock to
    /// `max(stored now, ctx.time + offset)` (producing the statements of every month end
    /// crossed), then runs `f`. Commits when `f` returns `Ok`, rolls everything back (the clock
    /// move included) when it returns `Err`.
    pub fn command<T>(
        &self,
        ctx: &ApplyContext,
        f: impl FnOnce(&mut BankState<'_>) -> Result<T, BankServiceError>,
    ) -> Result<T, BankServiceError> {
        self.db
            .command_at(ctx, |conn, ctx| apply_on(conn, ctx, f))
            .map_err(internal)?
    }

    /// Runs a read-only `f` on a consistent snapshot of the database.
    pub fn query<T>(
        &self,
        f: impl FnOnce(&BankState<'_>) -> Result<T, BankServiceError>,
    ) -> Result<T, BankServiceError> {
        self.db.query(|conn| query_on(conn, f)).map_err(internal)?
    }

    /// The simulated clock, or `None` before the first command.
    pub fn now(&self) -> Result<Option<DateTime<Utc>>, BankServiceError> {
        self.db
            .query(|conn| read_clock(conn).map(|clock| clock.map(|c| c.now)))
            .map_err(internal)?
    }

    /// A SHA-256 (lowercase hex) over the schema version and every row of every table, in
    /// primary-key order. Two replicas hold the same data exactly when their digests are equal.
    pub fn digest(&self) -> Result<String, BankServiceError> {
        self.db.query(digest_of).map_err(internal)?
    }
}

/// The bank's tables as the generated [`BankStore`]: what the in-process variants and the Raft
/// state machine run the bank on.
#[derive(Debug, Clone, Copy, Default)]
pub struct BankTables;

impl BankStore for BankTables {
    fn init(&self, conn: &Connection) -> Result<(), String> {
        init_schema(conn).map_err(|e| e.to_string())
    }

    fn command<R>(
        &self,
        conn: &Connection,
        ctx: &ApplyContext,
        f: impl FnOnce(&mut dyn BankService) -> Result<R, BankServiceError>,
    ) -> Result<R, BankServiceError> {
        apply_on(conn, ctx, |state| f(state))
    }

    fn query<R>(
        &self,
        conn: &Connection,
        f: impl FnOnce(&dyn BankService) -> Result<R, BankServiceError>,
    ) -> Result<R, BankServiceError> {
        query_on(conn, |state| f(state))
    }

    fn digest(&self, conn: &Connection) -> Result<String, String> {
        digest_of(conn).map_err(|e| e.to_string())
    }
}

/// Applies one command on a connection whose transaction (or savepoint) the caller manages:
/// moves the simulated clock for `ctx` (writing the statements due), then runs `f`. On `Err` the
/// caller must roll back.
pub(crate) fn apply_on<T>(
    conn: &Connection,
    ctx: &ApplyContext,
    f: impl FnOnce(&mut BankState<'_>) -> Result<T, BankServiceError>,
) -> Result<T, BankServiceError> {
    let now = sync_clock(conn, ctx)?;
    f(&mut BankState { conn, now })
}

/// Runs a read-only `f` on `conn` (the caller provides the read transaction if it wants one).
pub(crate) fn query_on<T>(
    conn: &Connection,
    f: impl FnOnce(&BankState<'_>) -> Result<T, BankServiceError>,
) -> Result<T, BankServiceError> {
    let now = read_clock(conn)?.map_or(DateTime::UNIX_EPOCH, |clock| clock.now);
    f(&BankState { conn, now })
}
