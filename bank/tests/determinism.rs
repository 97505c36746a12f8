//! Applying the same commands with the same contexts gives the same database on every
//! replica; different commands give a different one.

use bank::Bank;
use bank_generated::{
    AccountType, ApplyContext, BankCommand, BankReply, BankServiceError, Dispatcher, Duration,
};
use chrono::{DateTime, TimeDelta, Utc};
use rust_decimal::Decimal;

fn dec(s: &str) -> Decimal {
    s.parse().unwrap()
}

fn at(s: &str) -> DateTime<Utc> {
    s.parse().unwrap()
}

/// A log: commands at fixed leader times, crossing several month ends, with some failures.
fn script() -> Vec<(ApplyContext, BankCommand)> {
    use BankCommand as C;
    let entries = vec![
        (
            "2024-01-30T23:00:00Z",
            C::CreateCustomer {
                first_name: "Jane".into(),
                last_name: "Doe".into(),
                address: "456 Elm Street".into(),
            },
        ),
        (
            "2024-01-30T23:00:01Z",
            C::CreateCustomer {
                first_name: " ".into(),
                last_name: "Nobody".into(),
                address: "".into(),
            },
        ),
        (
            "2024-01-30T23:00:02Z",
            C::CreateAccount {
                customer_id: 1,
                account_type: AccountType::Checking,
            },
        ),
        (
            "2024-01-30T23:00:03Z",
            C::CreateAccount {
                customer_id: 1,
                account_type: AccountType::Savings,
            },
        ),
        (
            "2024-01-30T23:00:04Z",
            C::CreateAccount {
                customer_id: 9,
                account_type: AccountType::Savings,
            },
        ),
        (
            "2024-01-31T10:00:00Z",
            C::Deposit {
                account_id: 1,
                amount: dec("1000.00"),
            },
        ),
        (
            "2024-01-31T10:00:01Z",
            C::Deposit {
                account_id: 2,
                amount: dec("500"),
            },
        ),
        (
            "2024-01-31T10:00:02Z",
            C::Withdraw {
                account_id: 1,
                amount: dec("10000.00"),
            },
        ),
        (
            "2024-01-31T10:00:03Z",
            C::Deposit {
                account_id: 1,
                amount: dec("1.005"),
            },
        ),
        (
            "2024-02-01T00:00:00Z",
            C::Withdraw {
                account_id: 1,
                amount: dec("100.00"),
            },
        ),
        (
            "2024-02-01T00:00:01Z",
            C::Transfer {
                from_account_id: 1,
                to_account_id: 2,
                amount: dec("200.00"),
            },
        ),
        (
            "2024-02-01T00:00:02Z",
            C::Transfer {
                from_account_id: 1,
                to_account_id: 1,
                amount: dec("1"),
            },
        ),
        (
            "2024-01-15T00:00:00Z",
            C::CashCheck {
                account_id: 1,
                amount: dec("50.00"),
            },
        ),
        (
            "2024-02-02T00:00:00Z",
            C::AdvanceTime {
                delta: Duration::from(TimeDelta::days(95)),
            },
        ),
        (
            "2024-02-02T00:00:01Z",
            C::AdvanceTime {
                delta: Duration::from(TimeDelta::zero()),
            },
        ),
        (
            "2024-02-03T00:00:00Z",
            C::Deposit {
                account_id: 2,
                amount: dec("0.01"),
            },
        ),
        (
            "2024-02-03T00:00:01Z",
            C::CreateCustomer {
                first_name: "John".into(),
                last_name: "Roe".into(),
                address: "1 Main St".into(),
            },
        ),
        (
            "2024-02-03T00:00:02Z",
            C::CreateAccount {
                customer_id: 2,
                account_type: AccountType::Checking,
            },
        ),
        (
            "2024-03-01T00:00:00Z",
            C::Transfer {
                from_account_id: 2,
                to_account_id: 3,
                amount: dec("99.99"),
            },
        ),
        ("2024-03-01T00:00:01Z", C::GetCustomerCount {}),
    ];
    entries
        .into_iter()
        .enumerate()
        .map(|(i, (time, command))| {
            let ctx = ApplyContext {
                index: i as u64 + 1,
                time: at(time),
            };
            (ctx, command)
        })
        .collect()
}

/// Applies `log` to `bank` the way a replica does; returns every result.
fn apply(
    bank: &mut Bank,
    log: &[(ApplyContext, BankCommand)],
) -> Vec<Result<BankReply, BankServiceError>> {
    log.iter()
        .map(|(ctx, command)| {
            // Through the wire form, as a replica receives it.
            let bytes = command.encode().unwrap();
            let command = BankCommand::decode(&bytes).unwrap();
            bank.command(ctx, |state| Dispatcher::execute(state, ctx, command))
        })
        .collect()
}

fn replica(dir: &tempfile::TempDir, name: &str) -> Bank {
    Bank::open(dir.path().join(name)).unwrap()
}

#[test]
fn same_log_same_digest() {
    let dir = tempfile::tempdir().unwrap();
    let log = script();
    let mut a = replica(&dir, "a.db");
    let mut b = replica(&dir, "b.db");
    let mut c = Bank::open_in_memory().unwrap();
    let results_a = apply(&mut a, &log);
    let results_b = apply(&mut b, &log);
    let results_c = apply(&mut c, &log);
    assert_eq!(results_a, results_b);
    assert_eq!(results_a, results_c);
    let failures = results_a.iter().filter(|r| r.is_err()).count();
    assert_eq!(failures, 6, "{results_a:#?}");
    assert_eq!(a.digest().unwrap(), b.digest().unwrap());
    assert_eq!(a.digest().unwrap(), c.digest().unwrap());
    assert_eq!(a.digest().unwrap().len(), 64);

    // The log crossed five month ends (January to May): one statement for each.
    use bank_generated::BankService;
    let dates = a.query(|s| s.list_statements(1)).unwrap();
    assert_eq!(dates.len(), 5, "{dates:?}");
    // Account 3 was opened in May (simulated) and got May's statement from the command of
    // June 4th, whose own transfer belongs to June.
    let may = "2024-05-31".parse().unwrap();
    assert_eq!(a.query(|s| s.list_statements(3)).unwrap(), vec![may]);
    let st = a.query(|s| s.get_statement(3, may)).unwrap();
    assert_eq!(
        (
            st.starting_balance.to_string(),
            st.ending_balance.to_string()
        ),
        ("0.00".to_string(), "0.00".to_string())
    );
    assert_eq!(results_a[19], Ok(BankReply::GetCustomerCount(2)));

    // A replica reopened from its file still has the same digest.
    let before = a.digest().unwrap();
    drop(a);
    assert_eq!(replica(&dir, "a.db").digest().unwrap(), before);
}

#[test]
fn different_log_different_digest() {
    let dir = tempfile::tempdir().unwrap();
    let log = script();
    let mut a = replica(&dir, "a.db");
    apply(&mut a, &log);
    let digest = a.digest().unwrap();

    // One amount differs.
    let mut changed = script();
    changed[6].1 = BankCommand::Deposit {
        account_id: 2,
        amount: dec("500.01"),
    };
    let mut b = replica(&dir, "b.db");
    apply(&mut b, &changed);
    assert_ne!(b.digest().unwrap(), digest);

    // Only a leader time differs.
    let mut retimed = script();
    retimed[15].0.time = at("2024-02-03T00:00:00.5Z");
    let mut c = replica(&dir, "c.db");
    apply(&mut c, &retimed);
    assert_ne!(c.digest().unwrap(), digest);

    // A prefix of the log.
    let mut d = replica(&dir, "d.db");
    apply(&mut d, &log[..log.len() - 2]);
    assert_ne!(d.digest().unwrap(), digest);
}
