//! The validator passes on every in-process variant, also on a database that already holds
//! other customers, and fails (naming the right step) when a value is wrong.

use bank::{Bank, Direct, ValidationError, collector, validator};
use bank_generated::{
    Account, AccountType, BankApi, BankError, Customer, Duration, Statement, TransferResult,
};
use chrono::{DateTime, NaiveDate, Utc};
use rust_decimal::Decimal;

fn temp_db() -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bank.db");
    (dir, path)
}

#[tokio::test]
async fn direct_passes_twice_on_the_same_file() {
    let (_dir, path) = temp_db();
    let first = validator::run(&Direct::new(Bank::open(&path).unwrap()))
        .await
        .unwrap();
    assert_eq!(first.steps.len(), 10);
    assert!(!first.statement_dates.is_empty());
    let second = validator::run(&Direct::new(Bank::open(&path).unwrap()))
        .await
        .unwrap();
    assert!(second.customer_id > first.customer_id);
    assert!(second.checking_id > first.savings_id);
    assert!(second.clock > first.clock);
}

#[tokio::test]
async fn collector_passes_twice_on_the_same_file() {
    let (_dir, path) = temp_db();
    let first = validator::run(&collector(Bank::open(&path).unwrap()))
        .await
        .unwrap();
    let second = validator::run(&collector(Bank::open(&path).unwrap()))
        .await
        .unwrap();
    assert_eq!(second.customer_id, first.customer_id + 1);
    assert_eq!(second.checking_id, first.savings_id + 1);
}

#[tokio::test]
async fn variants_share_one_database() {
    let (_dir, path) = temp_db();
    validator::run(&Direct::new(Bank::open(&path).unwrap()))
        .await
        .unwrap();
    let report = validator::run(&collector(Bank::open(&path).unwrap()))
        .await
        .unwrap();
    assert_eq!(report.customer_id, 2);
    let bank = Bank::open(&path).unwrap();
    let customers = bank.query(|s| {
        use bank_generated::BankService;
        s.get_customer_count()
    });
    assert_eq!(customers, Ok(2));
}

#[tokio::test]
async fn in_memory_passes() {
    validator::run(&Direct::new(Bank::open_in_memory().unwrap()))
        .await
        .unwrap();
    validator::run(&collector(Bank::open_in_memory().unwrap()))
        .await
        .unwrap();
}

/// Which value the adapter corrupts.
#[derive(Clone, Copy)]
enum Corruption {
    /// deposit returns the balance plus 0.01.
    DepositBalance,
    /// withdraw reports a balance without its trailing zeros ("900" instead of "900.00").
    WithdrawScale,
    /// get_accounts returns the ids in the wrong order.
    AccountOrder,
    /// get_statement reports one cent more of credits.
    StatementCredits,
    /// list_statements drops the last date.
    MissingStatement,
    /// a transfer to the same account answers NotFound.
    SameAccountError,
}

/// A [`BankApi`] that forwards to a real one and corrupts one value.
struct Corrupt<A> {
    inner: A,
    what: Corruption,
}

fn cent() -> Decimal {
    Decimal::new(1, 2)
}

impl<A: BankApi> BankApi for Corrupt<A> {
    async fn create_customer(
        &self,
        first_name: String,
        last_name: String,
        address: String,
    ) -> Result<Customer, BankError> {
        self.inner
            .create_customer(first_name, last_name, address)
            .await
    }
    async fn create_account(
        &self,
        customer_id: u64,
        account_type: AccountType,
    ) -> Result<Account, BankError> {
        self.inner.create_account(customer_id, account_type).await
    }
    async fn deposit(&self, account_id: u64, amount: Decimal) -> Result<Decimal, BankError> {
        let got = self.inner.deposit(account_id, amount).await?;
        Ok(match self.what {
            Corruption::DepositBalance => got + cent(),
            _ => got,
        })
    }
    async fn withdraw(&self, account_id: u64, amount: Decimal) -> Result<Decimal, BankError> {
        let got = self.inner.withdraw(account_id, amount).await?;
        Ok(match self.what {
            Corruption::WithdrawScale => got.normalize(),
            _ => got,
        })
    }
    async fn transfer(
        &self,
        from_account_id: u64,
        to_account_id: u64,
        amount: Decimal,
    ) -> Result<TransferResult, BankError> {
        let got = self
            .inner
            .transfer(from_account_id, to_account_id, amount)
            .await;
        match (self.what, got) {
            (Corruption::SameAccountError, Err(BankError::InvalidArgument(m))) => {
                Err(BankError::NotFound(m))
            }
            (_, got) => got,
        }
    }
    async fn cash_check(&self, account_id: u64, amount: Decimal) -> Result<Decimal, BankError> {
        self.inner.cash_check(account_id, amount).await
    }
    async fn advance_time(&self, delta: Duration) -> Result<DateTime<Utc>, BankError> {
        self.inner.advance_time(delta).await
    }
    async fn list_customers(&self, offset: u32, limit: u32) -> Result<Vec<Customer>, BankError> {
        self.inner.list_customers(offset, limit).await
    }
    async fn list_accounts(&self, offset: u32, limit: u32) -> Result<Vec<Account>, BankError> {
        self.inner.list_accounts(offset, limit).await
    }
    async fn get_accounts(&self, customer_id: u64) -> Result<Vec<u64>, BankError> {
        let mut got = self.inner.get_accounts(customer_id).await?;
        if let Corruption::AccountOrder = self.what {
            got.reverse();
        }
        Ok(got)
    }
    async fn list_statements(&self, account_id: u64) -> Result<Vec<NaiveDate>, BankError> {
        let mut got = self.inner.list_statements(account_id).await?;
        if let Corruption::MissingStatement = self.what {
            got.pop();
        }
        Ok(got)
    }
    async fn get_statement(
        &self,
        account_id: u64,
        statement_date: NaiveDate,
    ) -> Result<Statement, BankError> {
        let mut got = self.inner.get_statement(account_id, statement_date).await?;
        if let Corruption::StatementCredits = self.what {
            got.total_credits += cent();
        }
        Ok(got)
    }
    async fn get_customer_count(&self) -> Result<u64, BankError> {
        self.inner.get_customer_count().await
    }
    async fn get_account_count(&self) -> Result<u64, BankError> {
        self.inner.get_account_count().await
    }
}

async fn failure(what: Corruption) -> ValidationError {
    let api = Corrupt {
        inner: collector(Bank::open_in_memory().unwrap()),
        what,
    };
    validator::run(&api).await.unwrap_err()
}

#[tokio::test]
async fn a_wrong_deposit_balance_fails_step_3() {
    let err = failure(Corruption::DepositBalance).await;
    assert_eq!(err.step, 3, "{err}");
    assert_eq!(err.expected, "1000.00");
    assert_eq!(err.got, "1000.01");
    assert!(err.to_string().starts_with("step 3 failed"), "{err}");
}

#[tokio::test]
async fn a_balance_without_two_digits_fails_step_4() {
    let err = failure(Corruption::WithdrawScale).await;
    assert_eq!(err.step, 4, "{err}");
    assert_eq!((err.expected.as_str(), err.got.as_str()), ("900.00", "900"));
}

#[tokio::test]
async fn wrong_account_order_fails_step_7() {
    let err = failure(Corruption::AccountOrder).await;
    assert_eq!(err.step, 7, "{err}");
}

#[tokio::test]
async fn wrong_statement_values_fail_step_9() {
    let err = failure(Corruption::StatementCredits).await;
    assert_eq!(err.step, 9, "{err}");
    assert_eq!(err.expected, "1000.00");
    assert_eq!(err.got, "1000.01");
    let err = failure(Corruption::MissingStatement).await;
    assert_eq!(err.step, 9, "{err}");
    assert!(err.description.contains("statement dates"), "{err}");
}

#[tokio::test]
async fn a_wrong_error_kind_fails_step_10() {
    let err = failure(Corruption::SameAccountError).await;
    assert_eq!(err.step, 10, "{err}");
    assert_eq!(err.expected, "InvalidArgument");
    assert!(err.got.contains("NotFound"), "{err}");
}

#[test]
fn month_ends_are_listed_between_two_times() {
    let t = |s: &str| s.parse::<DateTime<Utc>>().unwrap();
    let d = |s: &str| s.parse::<NaiveDate>().unwrap();
    assert_eq!(
        validator::month_ends_between(t("2024-01-31T23:00:00Z"), t("2024-03-01T00:00:00Z")),
        vec![d("2024-01-31"), d("2024-02-29")]
    );
    assert!(
        validator::month_ends_between(t("2024-01-01T00:00:00Z"), t("2024-01-31T23:59:59Z"))
            .is_empty()
    );
    assert_eq!(
        validator::month_ends_between(t("2024-12-15T00:00:00Z"), t("2025-01-15T00:00:00Z")),
        vec![d("2024-12-31")]
    );
}
