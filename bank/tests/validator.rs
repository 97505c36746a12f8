//! The validator passes on every in-process variant, also on a database that already holds
//! other customers, and fails (naming the right step) when a value is wrong.

use bank::{Bank, BankTables, ValidationError, collector, direct, validator};
use bank_generated::{
    BankApp, BankCommand, BankError, BankReply, Collector, decode_reply, encode_reply,
};
use chrono::{DateTime, NaiveDate, Utc};
use runtime::api::local::LocalSink;
use runtime::{CallError, CallKind, CommandSink, Failure};
use rust_decimal::Decimal;

fn temp_db() -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bank.db");
    (dir, path)
}

#[tokio::test]
async fn direct_passes_twice_on_the_same_file() {
    let (_dir, path) = temp_db();
    let first = validator::run(&direct(Bank::open(&path).unwrap()))
        .await
        .unwrap();
    assert_eq!(first.steps.len(), 10);
    assert!(!first.statement_dates.is_empty());
    let second = validator::run(&direct(Bank::open(&path).unwrap()))
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
    validator::run(&direct(Bank::open(&path).unwrap()))
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
    validator::run(&direct(Bank::open_in_memory().unwrap()))
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

/// A sink that forwards to a real one and corrupts one value of the replies: it needs no method
/// per operation, so adding an operation leaves it alone.
struct Corrupt<S> {
    inner: S,
    what: Corruption,
}

fn cent() -> Decimal {
    Decimal::new(1, 2)
}

impl<S: CommandSink> CommandSink for Corrupt<S> {
    async fn submit(&self, kind: CallKind, command: Vec<u8>) -> Result<Vec<u8>, Failure> {
        let is_transfer = matches!(
            BankCommand::decode(&command),
            Ok(BankCommand::Transfer { .. })
        );
        let reply = self.inner.submit(kind, command).await?;
        let corrupted = match (self.what, decode_reply(&reply)) {
            (Corruption::DepositBalance, Ok(BankReply::Deposit(balance))) => {
                Ok(BankReply::Deposit(balance + cent()))
            }
            (Corruption::WithdrawScale, Ok(BankReply::Withdraw(balance))) => {
                Ok(BankReply::Withdraw(balance.normalize()))
            }
            (Corruption::AccountOrder, Ok(BankReply::GetAccounts(mut ids))) => {
                ids.reverse();
                Ok(BankReply::GetAccounts(ids))
            }
            (Corruption::StatementCredits, Ok(BankReply::GetStatement(mut statement))) => {
                statement.total_credits += cent();
                Ok(BankReply::GetStatement(statement))
            }
            (Corruption::MissingStatement, Ok(BankReply::ListStatements(mut dates))) => {
                dates.pop();
                Ok(BankReply::ListStatements(dates))
            }
            (
                Corruption::SameAccountError,
                Err(CallError::Domain(BankError::InvalidArgument(m))),
            ) if is_transfer => Err(CallError::Domain(BankError::NotFound(m))),
            _ => return Ok(reply),
        };
        Ok(encode_reply(&corrupted))
    }
}

async fn failure(what: Corruption) -> ValidationError {
    let sink = Corrupt {
        inner: LocalSink::new(
            Bank::open_in_memory().unwrap().into_db(),
            BankApp(BankTables),
        ),
        what,
    };
    let api = Collector::new(sink);
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
