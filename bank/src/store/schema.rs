//! The bank's tables: the SQL schema, its version, and the digest over every row.

use bank_generated::BankServiceError;
use rusqlite::Connection;

use super::rows::*;
use super::{SCHEMA_VERSION, StoreError};

pub(super) const SCHEMA: &str = "
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
pub(super) const TABLES: [(&str, &str); 5] = [
    ("meta", "id"),
    ("customers", "customer_id"),
    ("accounts", "account_id"),
    ("transactions", "transaction_id"),
    ("statements", "account_id, statement_date"),
];

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

/// The digest of [`Bank::digest`] computed on any connection to a bank database.
pub fn digest_of(conn: &Connection) -> Result<String, BankServiceError> {
    runtime::api::local::digest_tables(conn, &TABLES).map_err(internal)
}
