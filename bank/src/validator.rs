//! The validator: the walk-through of the bank's semantics, written once against the generated
//! client trait [`BankApi`] and run unchanged against every variant.
//!
//! It asserts every value of steps 1 to 10 and uses only the ids the bank hands out, so it
//! also passes on a database that already holds other customers.

use std::fmt::Debug;
use std::time::Instant;

use bank_generated::{AccountType, BankApi, BankCallError, Duration};
use chrono::{DateTime, Datelike, NaiveDate, TimeDelta, Utc};
use rust_decimal::Decimal;

/// The first failed check: which step, what was checked, what was expected and what came back.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("step {step} failed: {description}: expected {expected}, got {got}")]
pub struct ValidationError {
    /// The step of the walk-through (1 to 10).
    pub step: u8,
    /// What was checked.
    pub description: String,
    /// The expected value.
    pub expected: String,
    /// The value (or error) the bank returned.
    pub got: String,
}

/// How long one step took.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepTiming {
    /// The step number.
    pub step: u8,
    /// The step's title.
    pub title: &'static str,
    /// The wall-clock time the step took.
    pub elapsed: std::time::Duration,
}

/// What a successful walk-through created and saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// Jane Doe's customer id.
    pub customer_id: u64,
    /// Her checking account.
    pub checking_id: u64,
    /// Her savings account.
    pub savings_id: u64,
    /// The statement dates of the checking account after step 9.
    pub statement_dates: Vec<NaiveDate>,
    /// The simulated time returned by the last advance_time.
    pub clock: DateTime<Utc>,
    /// Per-step timings, in order.
    pub steps: Vec<StepTiming>,
}

impl Report {
    /// The total wall-clock time of all steps.
    pub fn elapsed(&self) -> std::time::Duration {
        self.steps.iter().map(|s| s.elapsed).sum()
    }
}

const TITLES: [&str; 10] = [
    "create customer",
    "create accounts",
    "deposits",
    "withdraw",
    "transfer",
    "cash check",
    "list accounts",
    "advance one day",
    "statements",
    "errors",
];

/// Runs steps 1 to 10 of the walk-through against `api`; the first failed check ends it.
pub async fn run<A: BankApi>(api: &A) -> Result<Report, ValidationError> {
    let mut walk = Walk {
        step: 0,
        started: Instant::now(),
        steps: Vec::new(),
    };

    // 1. A customer with no accounts.
    walk.start(1);
    let customer = walk.ok(
        "create_customer(Jane, Doe, 456 Elm Street)",
        api.create_customer("Jane".into(), "Doe".into(), "456 Elm Street".into())
            .await,
    )?;
    let cid = customer.customer_id;
    walk.check("customer id is at least 1", &true, &(cid >= 1))?;
    walk.check("first_name", &"Jane", &customer.first_name.as_str())?;
    walk.check("last_name", &"Doe", &customer.last_name.as_str())?;
    walk.check("address", &"456 Elm Street", &customer.address.as_str())?;
    walk.check(
        "accounts of a new customer",
        &Vec::<u64>::new(),
        &customer.accounts,
    )?;

    // 2. Two accounts with zero balances.
    walk.start(2);
    let checking = walk.ok(
        "create_account(checking)",
        api.create_account(cid, AccountType::Checking).await,
    )?;
    let savings = walk.ok(
        "create_account(savings)",
        api.create_account(cid, AccountType::Savings).await,
    )?;
    let (chk, sav) = (checking.account_id, savings.account_id);
    for (account, kind) in [
        (&checking, AccountType::Checking),
        (&savings, AccountType::Savings),
    ] {
        walk.check("account type", &kind, &account.account_type)?;
        walk.check("account's customer", &cid, &account.customer_id)?;
        walk.money("balance of a new account", "0.00", account.balance)?;
    }
    walk.check(
        "savings id is after checking id",
        &true,
        &(chk >= 1 && sav > chk),
    )?;

    // 3. Deposits.
    walk.start(3);
    let got = walk.ok(
        "deposit(checking, 1000.00)",
        api.deposit(chk, dec("1000.00")?).await,
    )?;
    walk.money("balance after deposit(checking, 1000.00)", "1000.00", got)?;
    let got = walk.ok(
        "deposit(savings, 500.00)",
        api.deposit(sav, dec("500.00")?).await,
    )?;
    walk.money("balance after deposit(savings, 500.00)", "500.00", got)?;

    // 4. Withdraw.
    walk.start(4);
    let got = walk.ok(
        "withdraw(checking, 100.00)",
        api.withdraw(chk, dec("100.00")?).await,
    )?;
    walk.money("balance after withdraw(checking, 100.00)", "900.00", got)?;

    // 5. Transfer.
    walk.start(5);
    let got = walk.ok(
        "transfer(checking -> savings, 200.00)",
        api.transfer(chk, sav, dec("200.00")?).await,
    )?;
    walk.money("from_balance after transfer", "700.00", got.from_balance)?;
    walk.money("to_balance after transfer", "700.00", got.to_balance)?;

    // 6. Cash a check.
    walk.start(6);
    let got = walk.ok(
        "cash_check(checking, 50.00)",
        api.cash_check(chk, dec("50.00")?).await,
    )?;
    walk.money("balance after cash_check(checking, 50.00)", "650.00", got)?;

    // 7. Listings.
    walk.start(7);
    let offset = walk.ok(
        "checking id fits a list offset",
        u32::try_from(chk.saturating_sub(1)).map_err(|e| BankCallError::internal(e.to_string())),
    )?;
    let limit = u32::try_from(sav - chk + 1).map_or(1000, |n| n.min(1000));
    let accounts = walk.ok(
        "list_accounts(from checking)",
        api.list_accounts(offset, limit).await,
    )?;
    let ids: Vec<u64> = accounts.iter().map(|a| a.account_id).collect();
    for (id, balance, kind) in [
        (chk, "650.00", AccountType::Checking),
        (sav, "700.00", AccountType::Savings),
    ] {
        let Some(account) = accounts.iter().find(|a| a.account_id == id) else {
            return Err(walk.fail(
                "list_accounts contains the account",
                format!("account {id}"),
                format!("ids {ids:?}"),
            ));
        };
        walk.check("listed account type", &kind, &account.account_type)?;
        walk.check("listed account's customer", &cid, &account.customer_id)?;
        walk.money("listed balance", balance, account.balance)?;
    }
    let got = walk.ok("get_accounts(customer)", api.get_accounts(cid).await)?;
    walk.check("get_accounts(customer)", &vec![chk, sav], &got)?;
    let offset = walk.ok(
        "customer id fits a list offset",
        u32::try_from(cid.saturating_sub(1)).map_err(|e| BankCallError::internal(e.to_string())),
    )?;
    let customers = walk.ok(
        "list_customers(from customer)",
        api.list_customers(offset, 1).await,
    )?;
    let listed: Vec<(u64, Vec<u64>)> = customers
        .iter()
        .map(|c| (c.customer_id, c.accounts.clone()))
        .collect();
    walk.check(
        "list_customers shows her with both accounts",
        &vec![(cid, vec![chk, sav])],
        &listed,
    )?;
    let count = walk.ok("get_customer_count", api.get_customer_count().await)?;
    walk.check("customer count covers her id", &true, &(count >= cid))?;
    let count = walk.ok("get_account_count", api.get_account_count().await)?;
    walk.check("account count covers both ids", &true, &(count >= sav))?;

    // 8. No statement yet; one day later.
    walk.start(8);
    let dates = walk.ok("list_statements(checking)", api.list_statements(chk).await)?;
    walk.check(
        "statements before any month end",
        &Vec::<NaiveDate>::new(),
        &dates,
    )?;
    let t8 = walk.ok(
        "advance_time(24 hours)",
        api.advance_time(Duration::from(TimeDelta::hours(24))).await,
    )?;
    let earliest = checking.create_time + TimeDelta::hours(24);
    if t8 < earliest {
        return Err(walk.fail(
            "clock after advance_time(24 hours)",
            format!("at least {earliest}"),
            t8.to_string(),
        ));
    }

    // 9. Past the next month end: one statement per month ended.
    walk.start(9);
    let t9 = walk.ok(
        "advance_time(32 days)",
        api.advance_time(Duration::from(TimeDelta::days(32))).await,
    )?;
    let earliest = t8 + TimeDelta::days(32);
    if t9 < earliest {
        return Err(walk.fail(
            "clock after advance_time(32 days)",
            format!("at least {earliest}"),
            t9.to_string(),
        ));
    }
    let dates = walk.ok("list_statements(checking)", api.list_statements(chk).await)?;
    let expected = month_ends_between(checking.create_time, t9);
    walk.check("checking statement dates", &expected, &dates)?;
    for (i, &date) in dates.iter().enumerate() {
        let st = walk.ok(
            "get_statement(checking)",
            api.get_statement(chk, date).await,
        )?;
        walk.check("statement account", &chk, &st.account_id)?;
        walk.check("statement date", &date, &st.statement_date)?;
        let (start, credits, debits) = if i == 0 {
            ("0.00", "1000.00", "350.00")
        } else {
            ("650.00", "0.00", "0.00")
        };
        walk.money(
            &format!("{date} starting_balance"),
            start,
            st.starting_balance,
        )?;
        walk.money(
            &format!("{date} ending_balance"),
            "650.00",
            st.ending_balance,
        )?;
        walk.money(&format!("{date} total_credits"), credits, st.total_credits)?;
        walk.money(&format!("{date} total_debits"), debits, st.total_debits)?;
    }
    let dates_savings = walk.ok("list_statements(savings)", api.list_statements(sav).await)?;
    let expected = month_ends_between(savings.create_time, t9);
    walk.check("savings statement dates", &expected, &dates_savings)?;
    if let Some(&first) = dates_savings.first() {
        let st = walk.ok(
            "get_statement(savings)",
            api.get_statement(sav, first).await,
        )?;
        walk.money("savings starting_balance", "0.00", st.starting_balance)?;
        walk.money("savings ending_balance", "700.00", st.ending_balance)?;
        walk.money("savings total_credits", "700.00", st.total_credits)?;
        walk.money("savings total_debits", "0.00", st.total_debits)?;
    }

    // 10. Errors, which change nothing.
    walk.start(10);
    walk.err(
        "deposit to an unknown account",
        "NotFound",
        api.deposit(u64::MAX, dec("1.00")?).await,
    )?;
    walk.err(
        "withdraw(checking, 10000.00)",
        "InsufficientFunds",
        api.withdraw(chk, dec("10000.00")?).await,
    )?;
    walk.balance(api, chk, "balance after the failed withdraw", "650.00")
        .await?;
    walk.err(
        "deposit(checking, -5.00)",
        "InvalidArgument",
        api.deposit(chk, dec("-5.00")?).await,
    )?;
    walk.err(
        "transfer(checking -> checking, 1.00)",
        "InvalidArgument",
        api.transfer(chk, chk, dec("1.00")?).await,
    )?;
    walk.balance(api, chk, "balance after the failed operations", "650.00")
        .await?;
    walk.finish();

    Ok(Report {
        customer_id: cid,
        checking_id: chk,
        savings_id: sav,
        statement_dates: dates,
        clock: t9,
        steps: walk.steps,
    })
}

/// The last day of every month whose end (the first instant of the next month) lies in
/// `(start, end]`.
pub fn month_ends_between(start: DateTime<Utc>, end: DateTime<Utc>) -> Vec<NaiveDate> {
    let mut out = Vec::new();
    let (mut year, mut month) = (start.year(), start.month());
    loop {
        (year, month) = if month == 12 {
            (year + 1, 1)
        } else {
            (year, month + 1)
        };
        let Some(first) = NaiveDate::from_ymd_opt(year, month, 1) else {
            return out;
        };
        if first.and_time(chrono::NaiveTime::MIN).and_utc() > end {
            return out;
        }
        if let Some(last) = first.pred_opt() {
            out.push(last);
        }
    }
}

fn dec(text: &str) -> Result<Decimal, ValidationError> {
    text.parse().map_err(|e| ValidationError {
        step: 0,
        description: format!("parse {text}"),
        expected: "a decimal".into(),
        got: format!("{e}"),
    })
}

struct Walk {
    step: u8,
    started: Instant,
    steps: Vec<StepTiming>,
}

impl Walk {
    fn title(step: u8) -> &'static str {
        TITLES
            .get(usize::from(step).wrapping_sub(1))
            .copied()
            .unwrap_or("")
    }

    fn finish(&mut self) {
        if self.step > 0 {
            let elapsed = self.started.elapsed();
            tracing::info!(
                step = self.step,
                title = Self::title(self.step),
                ?elapsed,
                "step passed"
            );
            self.steps.push(StepTiming {
                step: self.step,
                title: Self::title(self.step),
                elapsed,
            });
        }
    }

    fn start(&mut self, step: u8) {
        self.finish();
        self.step = step;
        self.started = Instant::now();
        tracing::debug!(step, title = Self::title(step), "step started");
    }

    fn fail(
        &self,
        description: &str,
        expected: impl ToString,
        got: impl ToString,
    ) -> ValidationError {
        let err = ValidationError {
            step: self.step,
            description: description.to_string(),
            expected: expected.to_string(),
            got: got.to_string(),
        };
        tracing::error!(step = self.step, %err, "step failed");
        err
    }

    fn ok<T>(
        &self,
        description: &str,
        result: Result<T, BankCallError>,
    ) -> Result<T, ValidationError> {
        result.map_err(|e| self.fail(description, "success", format!("error {e:?}")))
    }

    fn check<T: PartialEq + Debug + ?Sized>(
        &self,
        description: &str,
        expected: &T,
        got: &T,
    ) -> Result<(), ValidationError> {
        if expected == got {
            Ok(())
        } else {
            Err(self.fail(description, format!("{expected:?}"), format!("{got:?}")))
        }
    }

    /// Money must match in value and print with exactly the expected digits ("650.00").
    fn money(
        &self,
        description: &str,
        expected: &str,
        got: Decimal,
    ) -> Result<(), ValidationError> {
        if got.to_string() == expected {
            Ok(())
        } else {
            Err(self.fail(description, expected, got))
        }
    }

    fn err<T: Debug>(
        &self,
        description: &str,
        expected: &str,
        result: Result<T, BankCallError>,
    ) -> Result<(), ValidationError> {
        match result {
            Err(e) if e.kind() == expected => Ok(()),
            Err(e) => Err(self.fail(description, expected, format!("error {e:?}"))),
            Ok(v) => Err(self.fail(description, expected, format!("success {v:?}"))),
        }
    }

    /// Reads one account's balance through list_accounts (ids are dense from 1).
    async fn balance<A: BankApi>(
        &self,
        api: &A,
        account_id: u64,
        description: &str,
        expected: &str,
    ) -> Result<(), ValidationError> {
        let offset = self.ok(
            "account id fits a list offset",
            u32::try_from(account_id.saturating_sub(1))
                .map_err(|e| BankCallError::internal(e.to_string())),
        )?;
        let listed = self.ok(description, api.list_accounts(offset, 1).await)?;
        match listed.as_slice() {
            [account] if account.account_id == account_id => {
                self.money(description, expected, account.balance)
            }
            other => Err(self.fail(
                description,
                format!("account {account_id}"),
                format!("{other:?}"),
            )),
        }
    }
}
