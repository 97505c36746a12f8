//! Rows and codecs: how customers, accounts, times, dates, money and ids are stored.

use super::MAX_MONEY_UNITS;
use bank_generated::{Account, AccountType, BankError, BankServiceError};
use chrono::{DateTime, Datelike, NaiveDate, SecondsFormat, Utc};
use rust_decimal::Decimal;

pub(super) const CUSTOMER_COLUMNS: &str =
    "SELECT customer_id, first_name, last_name, address, create_time,
    update_time FROM customers";

pub(super) struct CustomerRow {
    pub(super) customer_id: i64,
    pub(super) first_name: String,
    pub(super) last_name: String,
    pub(super) address: String,
    pub(super) create_time: String,
    pub(super) update_time: String,
}

impl CustomerRow {
    pub(super) fn read(row: &rusqlite::Row<'_>) -> rusqlite::Result<Self> {
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

pub(super) const ACCOUNT_COLUMNS: &str =
    "SELECT account_id, account_type, customer_id, balance, create_time,
    update_time FROM accounts";

pub(super) struct AccountRow {
    pub(super) account_id: i64,
    pub(super) account_type: String,
    pub(super) customer_id: i64,
    pub(super) balance: String,
    pub(super) create_time: String,
    pub(super) update_time: String,
}

impl AccountRow {
    pub(super) fn read(row: &rusqlite::Row<'_>) -> rusqlite::Result<Self> {
        Ok(AccountRow {
            account_id: row.get(0)?,
            account_type: row.get(1)?,
            customer_id: row.get(2)?,
            balance: row.get(3)?,
            create_time: row.get(4)?,
            update_time: row.get(5)?,
        })
    }

    pub(super) fn into_account(self) -> Result<Account, BankServiceError> {
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

/// The last year the clock may reach (times are stored as fixed-width text).
pub(super) const MAX_YEAR: i32 = 9999;

pub(super) fn time_to_sql(t: DateTime<Utc>) -> Result<String, BankServiceError> {
    if !(1..=MAX_YEAR).contains(&t.year()) {
        return Err(BankError::InvalidArgument(format!(
            "time {t} is outside years 1..={MAX_YEAR}"
        ))
        .into());
    }
    Ok(t.to_rfc3339_opts(SecondsFormat::Nanos, true))
}

pub(super) fn time_from_sql(text: &str) -> Result<DateTime<Utc>, BankServiceError> {
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| BankServiceError::Fault(format!("stored time {text:?}: {e}")))
}

pub(super) fn date_to_sql(d: NaiveDate) -> String {
    d.format("%Y-%m-%d").to_string()
}

pub(super) fn date_from_sql(text: &str) -> Result<NaiveDate, BankServiceError> {
    NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .map_err(|e| BankServiceError::Fault(format!("stored date {text:?}: {e}")))
}

pub(super) fn money_from_sql(text: &str) -> Result<Decimal, BankServiceError> {
    text.parse::<Decimal>()
        .map(money)
        .map_err(|e| BankServiceError::Fault(format!("stored amount {text:?}: {e}")))
}

pub(super) fn id_from_sql(id: i64) -> Result<u64, BankServiceError> {
    u64::try_from(id).map_err(|_| BankServiceError::Fault(format!("stored id {id}")))
}

pub(super) fn internal(e: impl std::fmt::Display) -> BankServiceError {
    BankServiceError::Fault(e.to_string())
}

pub(super) fn max_money() -> Decimal {
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

/// Statements through the connection's statement cache: each SQL text is parsed once per
/// connection, not on every command (a parse costs more than the statement it runs here).
pub(super) trait Cached {
    /// `query_row`, cached.
    fn row<T, P: rusqlite::Params>(
        &self,
        sql: &str,
        params: P,
        f: impl FnOnce(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
    ) -> rusqlite::Result<T>;
    /// `execute`, cached.
    fn run<P: rusqlite::Params>(&self, sql: &str, params: P) -> rusqlite::Result<usize>;
}

impl Cached for rusqlite::Connection {
    fn row<T, P: rusqlite::Params>(
        &self,
        sql: &str,
        params: P,
        f: impl FnOnce(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
    ) -> rusqlite::Result<T> {
        self.prepare_cached(sql)?.query_row(params, f)
    }

    fn run<P: rusqlite::Params>(&self, sql: &str, params: P) -> rusqlite::Result<usize> {
        self.prepare_cached(sql)?.execute(params)
    }
}
