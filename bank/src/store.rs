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

use std::path::Path;

use bank_generated::{
    Account, AccountType, ApplyContext, BankError, BankService, BankServiceError, BankStore,
    Customer, Duration, Statement, Transaction, TransferResult,
};
use chrono::{DateTime, Datelike, NaiveDate, SecondsFormat, TimeDelta, Utc};
use runtime::local::LocalDb;
use rusqlite::types::ValueRef;
use rusqlite::{Connection, OptionalExtension, params};
use rust_decimal::Decimal;
use sha2::{Digest, Sha256};

/// The schema version this build writes and understands (`PRAGMA user_version`).
pub const SCHEMA_VERSION: i64 = 1;

/// The largest `limit` accepted by `list_customers` and `list_accounts`.
pub const MAX_LIST_LIMIT: u32 = 1000;

/// The largest single `advance_time` delta, in days (about 100 years).
pub const MAX_ADVANCE_DAYS: i64 = 36_500;

/// The largest amount and the largest balance, in whole currency units (10^18).
pub const MAX_MONEY_UNITS: i64 = 1_000_000_000_000_000_000;

const SCHEMA: &str = "
CREATE TABLE meta (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    now TEXT NOT NULL,
    offset_secs INTEGER NOT NULL,
    offset_nanos INTEGER NOT NULL
) STRICT;
CREATE TABLE customers (
    customer_id INTEGER PRIMARY KEY,
    first_name TEXT NOT NULL,
    last_name TEXT NOT NULL,
    address TEXT NOT NULL,
    create_time TEXT NOT NULL,
    update_time TEXT NOT NULL
) STRICT;
CREATE TABLE accounts (
    account_id INTEGER PRIMARY KEY,
    account_type TEXT NOT NULL CHECK (account_type IN ('savings', 'checking')),
    customer_id INTEGER NOT NULL REFERENCES customers (customer_id),
    balance TEXT NOT NULL,
    create_time TEXT NOT NULL,
    update_time TEXT NOT NULL
) STRICT;
CREATE INDEX accounts_by_customer ON accounts (customer_id, account_id);
CREATE TABLE transactions (
    transaction_id INTEGER PRIMARY KEY,
    account_id INTEGER NOT NULL REFERENCES accounts (account_id),
    starting_balance TEXT NOT NULL,
    ending_balance TEXT NOT NULL,
    change TEXT NOT NULL,
    transaction_time TEXT NOT NULL
) STRICT;
CREATE INDEX transactions_by_account_time
    ON transactions (account_id, transaction_time, transaction_id);
CREATE TABLE statements (
    account_id INTEGER NOT NULL REFERENCES accounts (account_id),
    statement_date TEXT NOT NULL,
    starting_balance TEXT NOT NULL,
    ending_balance TEXT NOT NULL,
    total_credits TEXT NOT NULL,
    total_debits TEXT NOT NULL,
    PRIMARY KEY (account_id, statement_date)
) STRICT, WITHOUT ROWID;
";

/// Every table with its primary-key order, in the order [`Bank::digest`] dumps them.
const TABLES: [(&str, &str); 5] = [
    ("meta", "id"),
    ("customers", "customer_id"),
    ("accounts", "account_id"),
    ("transactions", "transaction_id"),
    ("statements", "account_id, statement_date"),
];

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

/// Creates the bank's tables in `conn` if missing, or checks their version. For hosts that own
/// the connection (the raft state machine); [`Bank::open`] does this itself.
pub fn init_schema(conn: &Connection) -> Result<(), StoreError> {
    let version: i64 = conn.pragma_query_value(None, "user_version", |row| row.get(0))?;
    if version > SCHEMA_VERSION {
        return Err(StoreError::UnsupportedSchema {
            found: version,
            supported: SCHEMA_VERSION,
        });
    }
    if version < 1 {
        conn.execute_batch(SCHEMA)?;
        conn.pragma_update(None, "user_version", SCHEMA_VERSION)?;
    }
    Ok(())
}

/// Applies one command on a connection whose transaction (or savepoint) the caller manages:
/// moves the simulated clock for `ctx` (writing the statements due), then runs `f`. On `Err` the
/// caller must roll back.
pub fn apply_on<T>(
    conn: &Connection,
    ctx: &ApplyContext,
    f: impl FnOnce(&mut BankState<'_>) -> Result<T, BankServiceError>,
) -> Result<T, BankServiceError> {
    let now = sync_clock(conn, ctx)?;
    f(&mut BankState { conn, now })
}

/// Runs a read-only `f` on `conn` (the caller provides the read transaction if it wants one).
pub fn query_on<T>(
    conn: &Connection,
    f: impl FnOnce(&BankState<'_>) -> Result<T, BankServiceError>,
) -> Result<T, BankServiceError> {
    let now = read_clock(conn)?.map_or(DateTime::UNIX_EPOCH, |clock| clock.now);
    f(&BankState { conn, now })
}

/// The digest of [`Bank::digest`] computed on any connection to a bank database.
pub fn digest_of(conn: &Connection) -> Result<String, BankServiceError> {
    let mut hasher = Sha256::new();
    let version: i64 = conn
        .pragma_query_value(None, "user_version", |row| row.get(0))
        .map_err(internal)?;
    hasher.update(format!("user_version {version}\n"));
    for (table, order) in TABLES {
        hasher.update(format!("table {table}\n"));
        let mut stmt = conn
            .prepare(&format!("SELECT * FROM {table} ORDER BY {order}"))
            .map_err(internal)?;
        let columns = stmt.column_count();
        let mut rows = stmt.query([]).map_err(internal)?;
        while let Some(row) = rows.next().map_err(internal)? {
            for i in 0..columns {
                match row.get_ref(i).map_err(internal)? {
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

/// The database as seen by one command (inside its transaction) or one query.
///
/// Obtained only through [`Bank::command`] (mutable, for commands) and [`Bank::query`]
/// (shared, for queries), so every write it makes is part of a transaction that a failure
/// rolls back.
#[derive(Debug)]
pub struct BankState<'c> {
    conn: &'c Connection,
    now: DateTime<Utc>,
}

impl BankState<'_> {
    /// The simulated clock as this command sees it (for a query: the stored clock, or the Unix
    /// epoch before the first command).
    pub fn now(&self) -> DateTime<Utc> {
        self.now
    }

    /// Every transaction recorded on `account_id`, oldest first.
    pub fn transactions(&self, account_id: u64) -> Result<Vec<Transaction>, BankServiceError> {
        let id = self.account_key(account_id)?;
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT starting_balance, ending_balance, change, transaction_time
                 FROM transactions WHERE account_id = ?1 ORDER BY transaction_id",
            )
            .map_err(internal)?;
        let rows = stmt
            .query_map([id], |row| {
                Ok((
                    row.get::<_, String>(0)?,
                    row.get::<_, String>(1)?,
                    row.get::<_, String>(2)?,
                    row.get::<_, String>(3)?,
                ))
            })
            .map_err(internal)?;
        let mut out = Vec::new();
        for row in rows {
            let (start, end, change, time) = row.map_err(internal)?;
            out.push(Transaction {
                account_id,
                starting_balance: money_from_sql(&start)?,
                ending_balance: money_from_sql(&end)?,
                change: money_from_sql(&change)?,
                transaction_time: time_from_sql(&time)?,
            });
        }
        Ok(out)
    }

    /// The SQLite key of an existing account, or `NotFound`.
    fn account_key(&self, account_id: u64) -> Result<i64, BankServiceError> {
        let not_found = || BankError::NotFound(format!("account {account_id}"));
        let id = i64::try_from(account_id).map_err(|_| not_found())?;
        let exists = self
            .conn
            .prepare_cached("SELECT 1 FROM accounts WHERE account_id = ?1")
            .and_then(|mut stmt| stmt.exists([id]))
            .map_err(internal)?;
        if exists {
            Ok(id)
        } else {
            Err(not_found().into())
        }
    }

    /// The SQLite key of an existing customer, or `NotFound`.
    fn customer_key(&self, customer_id: u64) -> Result<i64, BankServiceError> {
        let not_found = || BankError::NotFound(format!("customer {customer_id}"));
        let id = i64::try_from(customer_id).map_err(|_| not_found())?;
        let exists = self
            .conn
            .prepare_cached("SELECT 1 FROM customers WHERE customer_id = ?1")
            .and_then(|mut stmt| stmt.exists([id]))
            .map_err(internal)?;
        if exists {
            Ok(id)
        } else {
            Err(not_found().into())
        }
    }

    fn next_id(&self, table: &str, column: &str) -> Result<i64, BankServiceError> {
        self.conn
            .query_row(
                &format!("SELECT COALESCE(MAX({column}), 0) + 1 FROM {table}"),
                [],
                |row| row.get(0),
            )
            .map_err(internal)
    }

    fn account_ids_of(&self, customer: i64) -> Result<Vec<u64>, BankServiceError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT account_id FROM accounts WHERE customer_id = ?1 ORDER BY account_id",
            )
            .map_err(internal)?;
        let rows = stmt
            .query_map([customer], |row| row.get::<_, i64>(0))
            .map_err(internal)?;
        let mut out = Vec::new();
        for row in rows {
            out.push(id_from_sql(row.map_err(internal)?)?);
        }
        Ok(out)
    }

    fn load_account(&self, account_id: u64) -> Result<Account, BankServiceError> {
        let not_found = || BankError::NotFound(format!("account {account_id}"));
        let id = i64::try_from(account_id).map_err(|_| not_found())?;
        let row = self
            .conn
            .query_row(
                &format!("{ACCOUNT_COLUMNS} WHERE account_id = ?1"),
                [id],
                AccountRow::read,
            )
            .optional()
            .map_err(internal)?;
        row.ok_or_else(not_found)?.into_account()
    }

    fn load_customer(&self, id: i64) -> Result<Customer, BankServiceError> {
        let row = self
            .conn
            .query_row(
                &format!("{CUSTOMER_COLUMNS} WHERE customer_id = ?1"),
                [id],
                CustomerRow::read,
            )
            .map_err(internal)?;
        self.customer_from_row(row)
    }

    fn customer_from_row(&self, row: CustomerRow) -> Result<Customer, BankServiceError> {
        Ok(Customer {
            customer_id: id_from_sql(row.customer_id)?,
            first_name: row.first_name,
            last_name: row.last_name,
            address: row.address,
            accounts: self.account_ids_of(row.customer_id)?,
            create_time: time_from_sql(&row.create_time)?,
            update_time: time_from_sql(&row.update_time)?,
        })
    }

    /// Changes one balance by `change` and records the transaction. Fails (and the caller's
    /// transaction is rolled back) when the balance would go below zero or above the maximum.
    fn apply_change(
        &mut self,
        account: &Account,
        change: Decimal,
    ) -> Result<Decimal, BankServiceError> {
        let start = account.balance;
        let end = start
            .checked_add(change)
            .ok_or_else(|| BankError::InvalidArgument("balance out of range".into()))?;
        if end < Decimal::ZERO {
            return Err(BankError::InsufficientFunds(format!(
                "account {} has {}, cannot take {}",
                account.account_id,
                money(start),
                money(-change)
            ))
            .into());
        }
        if end > max_money() {
            return Err(BankError::InvalidArgument(format!(
                "balance of account {} would exceed {}",
                account.account_id,
                money(max_money())
            ))
            .into());
        }
        let end = money(end);
        let id = i64::try_from(account.account_id).map_err(internal)?;
        let now = time_to_sql(self.now)?;
        self.conn
            .prepare_cached(
                "UPDATE accounts SET balance = ?2, update_time = ?3 WHERE account_id = ?1",
            )
            .and_then(|mut stmt| stmt.execute(params![id, end.to_string(), now]))
            .map_err(internal)?;
        let tx_id = self.next_id("transactions", "transaction_id")?;
        self.conn
            .prepare_cached(
                "INSERT INTO transactions (transaction_id, account_id, starting_balance,
                     ending_balance, change, transaction_time)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )
            .and_then(|mut stmt| {
                stmt.execute(params![
                    tx_id,
                    id,
                    money(start).to_string(),
                    end.to_string(),
                    money(change).to_string(),
                    now
                ])
            })
            .map_err(internal)?;
        Ok(end)
    }

    fn debit(&mut self, account_id: u64, amount: Decimal) -> Result<Decimal, BankServiceError> {
        let amount = check_amount(amount)?;
        let account = self.load_account(account_id)?;
        self.apply_change(&account, -amount)
    }

    fn list_page(offset: u32, limit: u32) -> Result<(i64, i64), BankServiceError> {
        if limit > MAX_LIST_LIMIT {
            return Err(BankError::InvalidArgument(format!(
                "limit {limit} is over {MAX_LIST_LIMIT}"
            ))
            .into());
        }
        Ok((i64::from(offset), i64::from(limit)))
    }

    fn count(&self, table: &str) -> Result<u64, BankServiceError> {
        let n: i64 = self
            .conn
            .query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |row| {
                row.get(0)
            })
            .map_err(internal)?;
        u64::try_from(n).map_err(internal)
    }
}

impl BankService for BankState<'_> {
    fn create_customer(
        &mut self,
        _ctx: &ApplyContext,
        first_name: String,
        last_name: String,
        address: String,
    ) -> Result<Customer, BankServiceError> {
        let first_name = first_name.trim();
        let last_name = last_name.trim();
        if first_name.is_empty() {
            return Err(BankError::InvalidArgument("first_name is empty".into()).into());
        }
        if last_name.is_empty() {
            return Err(BankError::InvalidArgument("last_name is empty".into()).into());
        }
        let id = self.next_id("customers", "customer_id")?;
        let now = time_to_sql(self.now)?;
        self.conn
            .execute(
                "INSERT INTO customers (customer_id, first_name, last_name, address,
                     create_time, update_time)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?5)",
                params![id, first_name, last_name, address.trim(), now],
            )
            .map_err(internal)?;
        self.load_customer(id)
    }

    fn create_account(
        &mut self,
        _ctx: &ApplyContext,
        customer_id: u64,
        account_type: AccountType,
    ) -> Result<Account, BankServiceError> {
        let customer = self.customer_key(customer_id)?;
        let id = self.next_id("accounts", "account_id")?;
        let now = time_to_sql(self.now)?;
        self.conn
            .execute(
                "INSERT INTO accounts (account_id, account_type, customer_id, balance,
                     create_time, update_time)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?5)",
                params![
                    id,
                    account_type.as_str(),
                    customer,
                    money(Decimal::ZERO).to_string(),
                    now
                ],
            )
            .map_err(internal)?;
        self.conn
            .execute(
                "UPDATE customers SET update_time = ?2 WHERE customer_id = ?1",
                params![customer, now],
            )
            .map_err(internal)?;
        self.load_account(id_from_sql(id)?)
    }

    fn deposit(
        &mut self,
        _ctx: &ApplyContext,
        account_id: u64,
        amount: Decimal,
    ) -> Result<Decimal, BankServiceError> {
        let amount = check_amount(amount)?;
        let account = self.load_account(account_id)?;
        self.apply_change(&account, amount)
    }

    fn withdraw(
        &mut self,
        _ctx: &ApplyContext,
        account_id: u64,
        amount: Decimal,
    ) -> Result<Decimal, BankServiceError> {
        self.debit(account_id, amount)
    }

    fn transfer(
        &mut self,
        _ctx: &ApplyContext,
        from_account_id: u64,
        to_account_id: u64,
        amount: Decimal,
    ) -> Result<TransferResult, BankServiceError> {
        if from_account_id == to_account_id {
            return Err(BankError::InvalidArgument(format!(
                "transfer from account {from_account_id} to itself"
            ))
            .into());
        }
        let amount = check_amount(amount)?;
        let from = self.load_account(from_account_id)?;
        let to = self.load_account(to_account_id)?;
        let from_balance = self.apply_change(&from, -amount)?;
        let to_balance = self.apply_change(&to, amount)?;
        Ok(TransferResult {
            from_balance,
            to_balance,
        })
    }

    fn cash_check(
        &mut self,
        _ctx: &ApplyContext,
        account_id: u64,
        amount: Decimal,
    ) -> Result<Decimal, BankServiceError> {
        self.debit(account_id, amount)
    }

    fn advance_time(
        &mut self,
        _ctx: &ApplyContext,
        delta: Duration,
    ) -> Result<DateTime<Utc>, BankServiceError> {
        let delta = delta.0;
        if delta <= TimeDelta::zero() {
            return Err(BankError::InvalidArgument(format!(
                "duration must be greater than zero, got {delta}"
            ))
            .into());
        }
        if delta > TimeDelta::days(MAX_ADVANCE_DAYS) {
            return Err(BankError::InvalidArgument(format!(
                "duration must be at most {MAX_ADVANCE_DAYS} days, got {delta}"
            ))
            .into());
        }
        let clock = read_clock(self.conn)?
            .ok_or_else(|| BankServiceError::Fault("clock missing inside a command".into()))?;
        let out_of_range =
            || BankError::InvalidArgument(format!("the clock would pass year {MAX_YEAR}"));
        let now = self
            .now
            .checked_add_signed(delta)
            .filter(|t| t.year() <= MAX_YEAR)
            .ok_or_else(out_of_range)?;
        let offset = clock.offset.checked_add(&delta).ok_or_else(out_of_range)?;
        produce_statements(self.conn, self.now, now)?;
        write_clock(self.conn, &Clock { now, offset })?;
        self.now = now;
        Ok(now)
    }

    fn list_customers(&self, offset: u32, limit: u32) -> Result<Vec<Customer>, BankServiceError> {
        let (offset, limit) = Self::list_page(offset, limit)?;
        let rows = {
            let mut stmt = self
                .conn
                .prepare_cached(&format!(
                    "{CUSTOMER_COLUMNS} ORDER BY customer_id LIMIT ?1 OFFSET ?2"
                ))
                .map_err(internal)?;
            stmt.query_map([limit, offset], CustomerRow::read)
                .map_err(internal)?
                .collect::<Result<Vec<_>, _>>()
                .map_err(internal)?
        };
        rows.into_iter()
            .map(|row| self.customer_from_row(row))
            .collect()
    }

    fn list_accounts(&self, offset: u32, limit: u32) -> Result<Vec<Account>, BankServiceError> {
        let (offset, limit) = Self::list_page(offset, limit)?;
        let mut stmt = self
            .conn
            .prepare_cached(&format!(
                "{ACCOUNT_COLUMNS} ORDER BY account_id LIMIT ?1 OFFSET ?2"
            ))
            .map_err(internal)?;
        let rows = stmt
            .query_map([limit, offset], AccountRow::read)
            .map_err(internal)?;
        let mut out = Vec::new();
        for row in rows {
            out.push(row.map_err(internal)?.into_account()?);
        }
        Ok(out)
    }

    fn get_accounts(&self, customer_id: u64) -> Result<Vec<u64>, BankServiceError> {
        let customer = self.customer_key(customer_id)?;
        self.account_ids_of(customer)
    }

    fn list_statements(&self, account_id: u64) -> Result<Vec<NaiveDate>, BankServiceError> {
        let id = self.account_key(account_id)?;
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT statement_date FROM statements WHERE account_id = ?1
                 ORDER BY statement_date",
            )
            .map_err(internal)?;
        let rows = stmt
            .query_map([id], |row| row.get::<_, String>(0))
            .map_err(internal)?;
        let mut out = Vec::new();
        for row in rows {
            out.push(date_from_sql(&row.map_err(internal)?)?);
        }
        Ok(out)
    }

    fn get_statement(
        &self,
        account_id: u64,
        statement_date: NaiveDate,
    ) -> Result<Statement, BankServiceError> {
        let id = self.account_key(account_id)?;
        let row = self
            .conn
            .query_row(
                "SELECT starting_balance, ending_balance, total_credits, total_debits
                 FROM statements WHERE account_id = ?1 AND statement_date = ?2",
                params![id, date_to_sql(statement_date)],
                |row| {
                    Ok((
                        row.get::<_, String>(0)?,
                        row.get::<_, String>(1)?,
                        row.get::<_, String>(2)?,
                        row.get::<_, String>(3)?,
                    ))
                },
            )
            .optional()
            .map_err(internal)?;
        let (start, end, credits, debits) = row.ok_or_else(|| {
            BankError::NotFound(format!(
                "no statement of account {account_id} for {statement_date}"
            ))
        })?;
        Ok(Statement {
            account_id,
            statement_date,
            starting_balance: money_from_sql(&start)?,
            ending_balance: money_from_sql(&end)?,
            total_credits: money_from_sql(&credits)?,
            total_debits: money_from_sql(&debits)?,
        })
    }

    fn get_customer_count(&self) -> Result<u64, BankServiceError> {
        self.count("customers")
    }

    fn get_account_count(&self) -> Result<u64, BankServiceError> {
        self.count("accounts")
    }
}

const CUSTOMER_COLUMNS: &str = "SELECT customer_id, first_name, last_name, address, create_time,
    update_time FROM customers";

struct CustomerRow {
    customer_id: i64,
    first_name: String,
    last_name: String,
    address: String,
    create_time: String,
    update_time: String,
}

impl CustomerRow {
    fn read(row: &rusqlite::Row<'_>) -> rusqlite::Result<Self> {
        Ok(CustomerRow {
            customer_id: row.get(0)?,
            first_name: row.get(1)?,
            last_name: row.get(2)?,
            address: row.get(3)?,
            create_time: row.get(4)?,
            update_time: row.get(5)?,
        })
    }
}

const ACCOUNT_COLUMNS: &str = "SELECT account_id, account_type, customer_id, balance, create_time,
    update_time FROM accounts";

struct AccountRow {
    account_id: i64,
    account_type: String,
    customer_id: i64,
    balance: String,
    create_time: String,
    update_time: String,
}

impl AccountRow {
    fn read(row: &rusqlite::Row<'_>) -> rusqlite::Result<Self> {
        Ok(AccountRow {
            account_id: row.get(0)?,
            account_type: row.get(1)?,
            customer_id: row.get(2)?,
            balance: row.get(3)?,
            create_time: row.get(4)?,
            update_time: row.get(5)?,
        })
    }

    fn into_account(self) -> Result<Account, BankServiceError> {
        let account_type = self.account_type.parse::<AccountType>().map_err(|_| {
            BankServiceError::Fault(format!("stored account type {:?}", self.account_type))
        })?;
        Ok(Account {
            account_id: id_from_sql(self.account_id)?,
            account_type,
            customer_id: id_from_sql(self.customer_id)?,
            balance: money_from_sql(&self.balance)?,
            create_time: time_from_sql(&self.create_time)?,
            update_time: time_from_sql(&self.update_time)?,
        })
    }
}

/// The persisted simulated clock.
struct Clock {
    now: DateTime<Utc>,
    /// The sum of every `advance_time` delta: the simulated clock runs this far ahead of the
    /// leader's clock.
    offset: TimeDelta,
}

fn read_clock(conn: &Connection) -> Result<Option<Clock>, BankServiceError> {
    let row = conn
        .query_row(
            "SELECT now, offset_secs, offset_nanos FROM meta WHERE id = 1",
            [],
            |row| {
                Ok((
                    row.get::<_, String>(0)?,
                    row.get::<_, i64>(1)?,
                    row.get::<_, i64>(2)?,
                ))
            },
        )
        .optional()
        .map_err(internal)?;
    let Some((now, secs, nanos)) = row else {
        return Ok(None);
    };
    let offset = TimeDelta::try_seconds(secs)
        .and_then(|s| s.checked_add(&TimeDelta::nanoseconds(nanos)))
        .ok_or_else(|| BankServiceError::Fault(format!("stored clock offset {secs}s {nanos}ns")))?;
    Ok(Some(Clock {
        now: time_from_sql(&now)?,
        offset,
    }))
}

fn write_clock(conn: &Connection, clock: &Clock) -> Result<(), BankServiceError> {
    conn.execute(
        "INSERT INTO meta (id, now, offset_secs, offset_nanos) VALUES (1, ?1, ?2, ?3)
         ON CONFLICT (id) DO UPDATE SET now = excluded.now, offset_secs = excluded.offset_secs,
             offset_nanos = excluded.offset_nanos",
        params![
            time_to_sql(clock.now)?,
            clock.offset.num_seconds(),
            i64::from(clock.offset.subsec_nanos())
        ],
    )
    .map_err(internal)?;
    Ok(())
}

/// Moves the clock to `max(stored now, ctx.time + offset)` and produces the statements of the
/// month ends crossed. Returns the new now.
fn sync_clock(conn: &Connection, ctx: &ApplyContext) -> Result<DateTime<Utc>, BankServiceError> {
    let Some(clock) = read_clock(conn)? else {
        let clock = Clock {
            now: ctx.time,
            offset: TimeDelta::zero(),
        };
        write_clock(conn, &clock)?;
        return Ok(clock.now);
    };
    let target = ctx.time.checked_add_signed(clock.offset).ok_or_else(|| {
        BankError::InvalidArgument(format!("command time {} out of range", ctx.time))
    })?;
    if target <= clock.now {
        return Ok(clock.now);
    }
    produce_statements(conn, clock.now, target)?;
    write_clock(
        conn,
        &Clock {
            now: target,
            offset: clock.offset,
        },
    )?;
    Ok(target)
}

/// The first instant of the month after the one holding `t`.
fn next_month_start(t: DateTime<Utc>) -> Result<DateTime<Utc>, BankServiceError> {
    let (year, month) = if t.month() == 12 {
        (t.year() + 1, 1)
    } else {
        (t.year(), t.month() + 1)
    };
    NaiveDate::from_ymd_opt(year, month, 1)
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|d| d.and_utc())
        .ok_or_else(|| BankServiceError::Fault(format!("no month after {t}")))
}

/// The first instant of the month before the month starting at `boundary`.
fn previous_month_start(boundary: DateTime<Utc>) -> Result<DateTime<Utc>, BankServiceError> {
    let (year, month) = if boundary.month() == 1 {
        (boundary.year() - 1, 12)
    } else {
        (boundary.year(), boundary.month() - 1)
    };
    NaiveDate::from_ymd_opt(year, month, 1)
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|d| d.and_utc())
        .ok_or_else(|| BankServiceError::Fault(format!("no month before {boundary}")))
}

/// Writes the statements of every month that ends in `(from, to]`: for each such month end (the
/// first instant of the next month), one statement for every account created before it.
fn produce_statements(
    conn: &Connection,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<(), BankServiceError> {
    let mut boundaries = Vec::new();
    let mut boundary = next_month_start(from)?;
    while boundary <= to {
        boundaries.push(boundary);
        boundary = next_month_start(boundary)?;
    }
    let (Some(&first), Some(&last)) = (boundaries.first(), boundaries.last()) else {
        return Ok(());
    };
    let first_month_start = time_to_sql(previous_month_start(first)?)?;
    let last_sql = time_to_sql(last)?;

    let accounts: Vec<(i64, String)> = {
        let mut stmt = conn
            .prepare_cached(
                "SELECT account_id, create_time FROM accounts WHERE create_time < ?1
                 ORDER BY account_id",
            )
            .map_err(internal)?;
        stmt.query_map([&last_sql], |row| Ok((row.get(0)?, row.get(1)?)))
            .map_err(internal)?
            .collect::<Result<_, _>>()
            .map_err(internal)?
    };
    let mut before_stmt = conn
        .prepare_cached(
            "SELECT ending_balance FROM transactions
             WHERE account_id = ?1 AND transaction_time < ?2
             ORDER BY transaction_time DESC, transaction_id DESC LIMIT 1",
        )
        .map_err(internal)?;
    let mut month_stmt = conn
        .prepare_cached(
            "SELECT transaction_time, change, ending_balance FROM transactions
             WHERE account_id = ?1 AND transaction_time >= ?2 AND transaction_time < ?3
             ORDER BY transaction_time, transaction_id",
        )
        .map_err(internal)?;
    let mut insert = conn
        .prepare_cached(
            "INSERT INTO statements (account_id, statement_date, starting_balance,
                 ending_balance, total_credits, total_debits)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )
        .map_err(internal)?;
    let overflow = || BankServiceError::Fault("monthly total out of range".into());

    for (account, create_time) in accounts {
        let create_time = time_from_sql(&create_time)?;
        let mut balance = match before_stmt
            .query_row(params![account, first_month_start], |row| {
                row.get::<_, String>(0)
            })
            .optional()
            .map_err(internal)?
        {
            Some(text) => money_from_sql(&text)?,
            None => Decimal::ZERO,
        };
        let changes: Vec<(DateTime<Utc>, Decimal, Decimal)> = {
            let rows = month_stmt
                .query_map(params![account, first_month_start, last_sql], |row| {
                    Ok((
                        row.get::<_, String>(0)?,
                        row.get::<_, String>(1)?,
                        row.get::<_, String>(2)?,
                    ))
                })
                .map_err(internal)?;
            let mut out = Vec::new();
            for row in rows {
                let (time, change, end) = row.map_err(internal)?;
                out.push((
                    time_from_sql(&time)?,
                    money_from_sql(&change)?,
                    money_from_sql(&end)?,
                ));
            }
            out
        };
        let mut next = 0;
        for &boundary in &boundaries {
            let starting = balance;
            let mut credits = Decimal::ZERO;
            let mut debits = Decimal::ZERO;
            while let Some(&(time, change, end)) = changes.get(next) {
                if time >= boundary {
                    break;
                }
                if change > Decimal::ZERO {
                    credits = credits.checked_add(change).ok_or_else(overflow)?;
                } else {
                    debits = debits.checked_sub(change).ok_or_else(overflow)?;
                }
                balance = end;
                next += 1;
            }
            if create_time >= boundary {
                continue;
            }
            let date = boundary
                .date_naive()
                .pred_opt()
                .ok_or_else(|| BankServiceError::Fault(format!("no day before {boundary}")))?;
            insert
                .execute(params![
                    account,
                    date_to_sql(date),
                    money(starting).to_string(),
                    money(balance).to_string(),
                    money(credits).to_string(),
                    money(debits).to_string(),
                ])
                .map_err(internal)?;
        }
    }
    Ok(())
}

/// The last year the clock may reach (times are stored as fixed-width text).
const MAX_YEAR: i32 = 9999;

fn time_to_sql(t: DateTime<Utc>) -> Result<String, BankServiceError> {
    if !(1..=MAX_YEAR).contains(&t.year()) {
        return Err(BankError::InvalidArgument(format!(
            "time {t} is outside years 1..={MAX_YEAR}"
        ))
        .into());
    }
    Ok(t.to_rfc3339_opts(SecondsFormat::Nanos, true))
}

fn time_from_sql(text: &str) -> Result<DateTime<Utc>, BankServiceError> {
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| BankServiceError::Fault(format!("stored time {text:?}: {e}")))
}

fn date_to_sql(d: NaiveDate) -> String {
    d.format("%Y-%m-%d").to_string()
}

fn date_from_sql(text: &str) -> Result<NaiveDate, BankServiceError> {
    NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .map_err(|e| BankServiceError::Fault(format!("stored date {text:?}: {e}")))
}

fn money_from_sql(text: &str) -> Result<Decimal, BankServiceError> {
    text.parse::<Decimal>()
        .map(money)
        .map_err(|e| BankServiceError::Fault(format!("stored amount {text:?}: {e}")))
}

fn id_from_sql(id: i64) -> Result<u64, BankServiceError> {
    u64::try_from(id).map_err(|_| BankServiceError::Fault(format!("stored id {id}")))
}

fn internal(e: impl std::fmt::Display) -> BankServiceError {
    BankServiceError::Fault(e.to_string())
}

fn max_money() -> Decimal {
    Decimal::from(MAX_MONEY_UNITS)
}

/// `d` rounded and rescaled to exactly 2 fractional digits, so it prints as `1000.00`.
pub fn money(d: Decimal) -> Decimal {
    let mut d = d.round_dp(2);
    d.rescale(2);
    d
}

/// Checks an amount argument: greater than zero, at most 2 fractional digits (trailing zeros
/// do not count), at most [`MAX_MONEY_UNITS`]. Returns it with exactly 2 fractional digits.
pub fn check_amount(amount: Decimal) -> Result<Decimal, BankServiceError> {
    if amount <= Decimal::ZERO {
        return Err(BankError::InvalidArgument(format!(
            "amount must be greater than zero, got {amount}"
        ))
        .into());
    }
    if amount.normalize().scale() > 2 {
        return Err(BankError::InvalidArgument(format!(
            "amount {amount} has more than 2 fractional digits"
        ))
        .into());
    }
    if amount > max_money() {
        return Err(BankError::InvalidArgument(format!(
            "amount {amount} is over {}",
            money(max_money())
        ))
        .into());
    }
    Ok(money(amount))
}
