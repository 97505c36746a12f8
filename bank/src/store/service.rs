//! The bank's operations: [`BankState`], the database as one command or query sees it, and
//! its implementation of the generated `BankService`.

use bank_generated::{
    Account, AccountType, ApplyContext, BankError, BankService, BankServiceError, Customer,
    Duration, Statement, Transaction, TransferResult,
};
use chrono::{DateTime, Datelike, NaiveDate, TimeDelta, Utc};
use rusqlite::{Connection, OptionalExtension, params};
use rust_decimal::Decimal;

use super::clock::*;
use super::rows::*;
use super::{
    MAX_ADDRESS_CHARS, MAX_ADVANCE_DAYS, MAX_LIST_LIMIT, MAX_NAME_CHARS, MAX_TOTAL_ADVANCE_DAYS,
};

/// The database as seen by one command (inside its transaction) or one query.
///
/// Obtained only through [`Bank::command`] (mutable, for commands) and [`Bank::query`]
/// (shared, for queries), so every write it makes is part of a transaction that a failure
/// rolls back.
#[derive(Debug)]
pub struct BankState<'c> {
    pub(super) conn: &'c Connection,
    pub(super) now: DateTime<Utc>,
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
        self.existing_key(
            "SELECT 1 FROM accounts WHERE account_id = ?1",
            "account",
            account_id,
        )
    }

    /// The SQLite key of an existing customer, or `NotFound`.
    fn customer_key(&self, customer_id: u64) -> Result<i64, BankServiceError> {
        self.existing_key(
            "SELECT 1 FROM customers WHERE customer_id = ?1",
            "customer",
            customer_id,
        )
    }

    /// `id` as an SQLite key if `exists` (a query on it) finds a row, else `NotFound` naming `what`.
    fn existing_key(&self, exists: &str, what: &str, id: u64) -> Result<i64, BankServiceError> {
        let not_found = || BankError::NotFound(format!("{what} {id}"));
        let key = i64::try_from(id).map_err(|_| not_found())?;
        let found = self
            .conn
            .prepare_cached(exists)
            .and_then(|mut stmt| stmt.exists([key]))
            .map_err(internal)?;
        if found {
            Ok(key)
        } else {
            Err(not_found().into())
        }
    }

    fn next_id(&self, table: &str, column: &str) -> Result<i64, BankServiceError> {
        self.conn
            .row(
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
            .row(
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
            .row(
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
            .row(&format!("SELECT COUNT(*) FROM {table}"), [], |row| {
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
        let address = address.trim();
        if first_name.is_empty() {
            return Err(BankError::InvalidArgument("first_name is empty".into()).into());
        }
        if last_name.is_empty() {
            return Err(BankError::InvalidArgument("last_name is empty".into()).into());
        }
        for (field, text, limit) in [
            ("first_name", first_name, MAX_NAME_CHARS),
            ("last_name", last_name, MAX_NAME_CHARS),
            ("address", address, MAX_ADDRESS_CHARS),
        ] {
            let chars = text.chars().count();
            if chars > limit {
                return Err(BankError::InvalidArgument(format!(
                    "{field} is {chars} characters; at most {limit}"
                ))
                .into());
            }
        }
        let id = self.next_id("customers", "customer_id")?;
        let now = time_to_sql(self.now)?;
        self.conn
            .run(
                "INSERT INTO customers (customer_id, first_name, last_name, address,
                     create_time, update_time)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?5)",
                params![id, first_name, last_name, address, now],
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
            .run(
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
            .run(
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
        if offset > TimeDelta::days(MAX_TOTAL_ADVANCE_DAYS) {
            return Err(BankError::InvalidArgument(format!(
                "the clock may run at most {MAX_TOTAL_ADVANCE_DAYS} days ahead in total; it is \
                 {} days ahead",
                clock.offset.num_days()
            ))
            .into());
        }
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
            .row(
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
