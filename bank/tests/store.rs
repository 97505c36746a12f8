//! The store's rules: statements, failed commands changing nothing, transfer atomicity,
//! amount validation, dense ids, limits and the clock.

use bank::Bank;
use bank_generated::{
    AccountType, ApplyContext, BankError, BankService, BankServiceError, Duration, Statement,
};
use chrono::{DateTime, NaiveDate, TimeDelta, Utc};
use runtime::ServiceError;
use rust_decimal::Decimal;

fn dec(s: &str) -> Decimal {
    s.parse().unwrap()
}

fn at(s: &str) -> DateTime<Utc> {
    s.parse().unwrap()
}

fn date(s: &str) -> NaiveDate {
    s.parse().unwrap()
}

/// A bank in a temporary directory, with a helper to apply commands at fixed times.
struct Fixture {
    _dir: tempfile::TempDir,
    path: std::path::PathBuf,
    bank: Bank,
    index: u64,
}

impl Fixture {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bank.db");
        let bank = Bank::open(&path).unwrap();
        Fixture {
            _dir: dir,
            path,
            bank,
            index: 0,
        }
    }

    /// Applies one command stamped with `time`.
    fn at<T>(
        &mut self,
        time: &str,
        f: impl FnOnce(&mut bank::BankState<'_>, &ApplyContext) -> Result<T, BankServiceError>,
    ) -> Result<T, BankServiceError> {
        self.index += 1;
        let ctx = ApplyContext {
            index: self.index,
            time: at(time),
        };
        self.bank.command(&ctx, |s| f(s, &ctx))
    }

    fn balance(&self, account: u64) -> Decimal {
        self.bank
            .query(|s| s.list_accounts(0, 1000))
            .unwrap()
            .into_iter()
            .find(|a| a.account_id == account)
            .unwrap()
            .balance
    }

    fn transactions(&self, account: u64) -> usize {
        self.bank.query(|s| s.transactions(account)).unwrap().len()
    }

    fn statement(&self, account: u64, day: &str) -> Statement {
        self.bank
            .query(|s| s.get_statement(account, date(day)))
            .unwrap()
    }

    /// Customer 1 with a checking account (1) and a savings account (2), created at `time`.
    fn jane(&mut self, time: &str) -> (u64, u64) {
        let c = self
            .at(time, |s, ctx| {
                s.create_customer(ctx, "Jane".into(), "Doe".into(), "456 Elm Street".into())
            })
            .unwrap();
        let a = self
            .at(time, |s, ctx| {
                s.create_account(ctx, c.customer_id, AccountType::Checking)
            })
            .unwrap();
        let b = self
            .at(time, |s, ctx| {
                s.create_account(ctx, c.customer_id, AccountType::Savings)
            })
            .unwrap();
        (a.account_id, b.account_id)
    }
}

fn statement(
    account: u64,
    day: &str,
    start: &str,
    end: &str,
    credits: &str,
    debits: &str,
) -> Statement {
    Statement {
        account_id: account,
        statement_date: date(day),
        starting_balance: dec(start),
        ending_balance: dec(end),
        total_credits: dec(credits),
        total_debits: dec(debits),
    }
}

#[test]
fn statements_cover_every_month_ended() {
    let mut f = Fixture::new();
    let (chk, _) = f.jane("2024-01-10T09:00:00Z");
    f.at("2024-01-15T09:00:00Z", |s, c| s.deposit(c, chk, dec("100")))
        .unwrap();
    f.at("2024-01-31T23:59:59.999Z", |s, c| {
        s.withdraw(c, chk, dec("10"))
    })
    .unwrap();
    // Crosses the end of January: one statement.
    f.at("2024-02-10T09:00:00Z", |s, c| s.withdraw(c, chk, dec("30")))
        .unwrap();
    assert_eq!(
        f.bank.query(|s| s.list_statements(chk)).unwrap(),
        vec![date("2024-01-31")]
    );
    f.at("2024-02-20T09:00:00Z", |s, c| {
        s.deposit(c, chk, dec("50.25"))
    })
    .unwrap();
    // A later account, opened in March.
    let late = f
        .at("2024-03-05T00:00:00Z", |s, c| {
            s.create_account(c, 1, AccountType::Savings)
        })
        .unwrap()
        .account_id;
    f.at("2024-03-06T00:00:00Z", |s, c| {
        s.transfer(c, chk, late, dec("60.25"))
    })
    .unwrap();
    // One command on May 2nd crosses the ends of March and April at once.
    f.at("2024-05-02T00:00:00Z", |s, c| s.deposit(c, late, dec("1")))
        .unwrap();

    assert_eq!(
        f.bank.query(|s| s.list_statements(chk)).unwrap(),
        vec![
            date("2024-01-31"),
            date("2024-02-29"),
            date("2024-03-31"),
            date("2024-04-30")
        ]
    );
    assert_eq!(
        f.statement(chk, "2024-01-31"),
        statement(chk, "2024-01-31", "0", "90", "100", "10")
    );
    assert_eq!(
        f.statement(chk, "2024-02-29"),
        statement(chk, "2024-02-29", "90", "110.25", "50.25", "30")
    );
    assert_eq!(
        f.statement(chk, "2024-03-31"),
        statement(chk, "2024-03-31", "110.25", "50.00", "0", "60.25")
    );
    assert_eq!(
        f.statement(chk, "2024-04-30"),
        statement(chk, "2024-04-30", "50", "50", "0", "0")
    );
    assert_eq!(
        f.bank.query(|s| s.list_statements(late)).unwrap(),
        vec![date("2024-03-31"), date("2024-04-30")]
    );
    assert_eq!(
        f.statement(late, "2024-03-31"),
        statement(late, "2024-03-31", "0", "60.25", "60.25", "0")
    );
    // Printed with exactly two digits.
    let st = f.statement(chk, "2024-04-30");
    assert_eq!(st.starting_balance.to_string(), "50.00");
    assert_eq!(st.total_debits.to_string(), "0.00");
    // No statement for May yet, none for an unknown date or account.
    assert!(matches!(
        f.bank.query(|s| s.get_statement(chk, date("2024-05-31"))),
        Err(ServiceError::Domain(BankError::NotFound(_)))
    ));
    assert!(matches!(
        f.bank.query(|s| s.list_statements(99)),
        Err(ServiceError::Domain(BankError::NotFound(_)))
    ));
    assert!(matches!(
        f.bank.query(|s| s.get_statement(99, date("2024-01-31"))),
        Err(ServiceError::Domain(BankError::NotFound(_)))
    ));
}

#[test]
fn advance_time_produces_statements_and_keeps_its_offset() {
    let mut f = Fixture::new();
    let (chk, _) = f.jane("2024-01-10T00:00:00Z");
    f.at("2024-01-10T00:00:01Z", |s, c| s.deposit(c, chk, dec("5")))
        .unwrap();
    let now = f
        .at("2024-01-10T00:00:02Z", |s, c| {
            s.advance_time(c, Duration::from(TimeDelta::days(60)))
        })
        .unwrap();
    assert_eq!(now, at("2024-03-10T00:00:02Z"));
    assert_eq!(
        f.bank.query(|s| s.list_statements(chk)).unwrap(),
        vec![date("2024-01-31"), date("2024-02-29")]
    );
    // The offset persists: a leader time one day later is 60 days + 1 day ahead.
    let acct = f
        .at("2024-01-11T00:00:02Z", |s, c| {
            s.create_account(c, 1, AccountType::Checking)
        })
        .unwrap();
    assert_eq!(acct.create_time, at("2024-03-11T00:00:02Z"));
    // A leader time that went backwards does not move the clock back.
    let acct = f
        .at("2024-01-01T00:00:00Z", |s, c| {
            s.create_account(c, 1, AccountType::Checking)
        })
        .unwrap();
    assert_eq!(acct.create_time, at("2024-03-11T00:00:02Z"));
    assert_eq!(f.bank.now().unwrap(), Some(at("2024-03-11T00:00:02Z")));
    // Reopening keeps clock, offset and statements.
    drop(f.bank);
    f.bank = Bank::open(&f.path).unwrap();
    let acct = f
        .at("2024-01-12T00:00:02Z", |s, c| {
            s.create_account(c, 1, AccountType::Checking)
        })
        .unwrap();
    assert_eq!(acct.create_time, at("2024-03-12T00:00:02Z"));
    assert_eq!(f.bank.query(|s| s.list_statements(chk)).unwrap().len(), 2);
}

#[test]
fn advance_time_rejects_bad_durations_and_changes_nothing() {
    let mut f = Fixture::new();
    f.jane("2024-01-31T12:00:00Z");
    let digest = f.bank.digest().unwrap();
    for delta in [
        TimeDelta::zero(),
        TimeDelta::seconds(-1),
        TimeDelta::days(367),
    ] {
        // This command's leader time crosses a month end, but the failure rolls that back too.
        let got = f.at("2024-02-01T12:00:00Z", |s, c| {
            s.advance_time(c, Duration::from(delta))
        });
        assert!(
            matches!(
                got,
                Err(ServiceError::Domain(BankError::InvalidArgument(_)))
            ),
            "{delta}: {got:?}"
        );
    }
    assert_eq!(f.bank.digest().unwrap(), digest);
    assert_eq!(f.bank.query(|s| s.list_statements(1)).unwrap(), vec![]);
}

/// No client can stop the bank by moving its clock: each call moves it at most a year, the sum
/// of all calls at most 100 years, and once there every other command still works.
#[test]
fn advance_time_is_bounded_in_total_and_the_bank_keeps_working() {
    let mut f = Fixture::new();
    let (chk, _) = f.jane("2024-01-10T00:00:00Z");
    let year = Duration::from(TimeDelta::days(bank::store::MAX_ADVANCE_DAYS));
    let mut calls = 0;
    let refused = loop {
        match f.at("2024-01-10T00:00:01Z", |s, c| s.advance_time(c, year)) {
            Ok(_) => calls += 1,
            Err(e) => break e,
        }
        assert!(calls <= 100, "the clock never stopped advancing");
    };
    assert!(
        matches!(refused, ServiceError::Domain(BankError::InvalidArgument(_))),
        "{refused:?}"
    );
    assert_eq!(
        calls,
        bank::store::MAX_TOTAL_ADVANCE_DAYS / bank::store::MAX_ADVANCE_DAYS
    );
    let balance = f
        .at("2024-01-10T00:00:02Z", |s, c| {
            s.deposit(c, chk, dec("1.00"))
        })
        .expect("a deposit after the clock reached its bound");
    assert_eq!(balance, dec("1.00"));
}

/// Names and addresses are bounded (100 and 500 characters, counted after trimming): longer
/// ones are refused and change nothing.
#[test]
fn overlong_names_and_addresses_are_refused() {
    let mut f = Fixture::new();
    let digest = f.bank.digest().unwrap();
    let long = |n: usize| "é".repeat(n);
    for (first, last, address) in [
        (long(101), "Doe".to_string(), String::new()),
        ("Jane".to_string(), long(101), String::new()),
        ("Jane".to_string(), "Doe".to_string(), long(501)),
    ] {
        let got = f.at("2024-01-10T00:00:00Z", |s, c| {
            s.create_customer(c, first, last, address)
        });
        assert!(
            matches!(
                got,
                Err(ServiceError::Domain(BankError::InvalidArgument(_)))
            ),
            "{got:?}"
        );
    }
    assert_eq!(f.bank.digest().unwrap(), digest);
    let at_the_limit = f.at("2024-01-10T00:00:01Z", |s, c| {
        s.create_customer(c, long(100), format!("  {}  ", long(100)), long(500))
    });
    assert!(at_the_limit.is_ok(), "{at_the_limit:?}");
}

#[test]
fn insufficient_funds_change_nothing() {
    let mut f = Fixture::new();
    let (chk, sav) = f.jane("2024-01-10T00:00:00Z");
    f.at("2024-01-10T00:00:01Z", |s, c| {
        s.deposit(c, chk, dec("100.00"))
    })
    .unwrap();
    let digest = f.bank.digest().unwrap();
    for got in [
        f.at("2024-01-10T00:00:02Z", |s, c| {
            s.withdraw(c, chk, dec("100.01"))
        }),
        f.at("2024-01-10T00:00:03Z", |s, c| {
            s.cash_check(c, chk, dec("1000"))
        }),
        f.at("2024-01-10T00:00:04Z", |s, c| {
            s.transfer(c, chk, sav, dec("100.01"))
                .map(|r| r.from_balance)
        }),
        f.at("2024-01-10T00:00:05Z", |s, c| {
            s.withdraw(c, sav, dec("0.01"))
        }),
    ] {
        assert!(
            matches!(
                got,
                Err(ServiceError::Domain(BankError::InsufficientFunds(_)))
            ),
            "{got:?}"
        );
    }
    assert_eq!(f.balance(chk), dec("100"));
    assert_eq!(f.balance(chk).to_string(), "100.00");
    assert_eq!(f.transactions(chk), 1);
    assert_eq!(f.transactions(sav), 0);
    assert_eq!(f.bank.digest().unwrap(), digest);
    // Taking the balance to exactly zero is fine.
    assert_eq!(
        f.at("2024-01-10T00:00:06Z", |s, c| s.withdraw(
            c,
            chk,
            dec("100")
        ))
        .unwrap()
        .to_string(),
        "0.00"
    );
}

#[test]
fn transfer_is_both_legs_or_neither() {
    let mut f = Fixture::new();
    let (chk, sav) = f.jane("2024-01-10T00:00:00Z");
    f.at("2024-01-10T00:00:01Z", |s, c| s.deposit(c, chk, dec("100")))
        .unwrap();
    // The receiving account is full: the second leg fails, so the first is undone too.
    let max = Decimal::from(bank::store::MAX_MONEY_UNITS);
    f.at("2024-01-10T00:00:02Z", |s, c| s.deposit(c, sav, max))
        .unwrap();
    let digest = f.bank.digest().unwrap();
    let got = f.at("2024-01-10T00:00:03Z", |s, c| {
        s.transfer(c, chk, sav, dec("1"))
    });
    assert!(
        matches!(
            got,
            Err(ServiceError::Domain(BankError::InvalidArgument(_)))
        ),
        "{got:?}"
    );
    // Unknown receiving account, same account.
    let got = f.at("2024-01-10T00:00:04Z", |s, c| {
        s.transfer(c, chk, 99, dec("1"))
    });
    assert!(
        matches!(got, Err(ServiceError::Domain(BankError::NotFound(_)))),
        "{got:?}"
    );
    let got = f.at("2024-01-10T00:00:04Z", |s, c| {
        s.transfer(c, chk, chk, dec("1"))
    });
    assert!(
        matches!(
            got,
            Err(ServiceError::Domain(BankError::InvalidArgument(_)))
        ),
        "{got:?}"
    );
    assert_eq!(f.bank.digest().unwrap(), digest);
    assert_eq!(f.balance(chk), dec("100"));
    assert_eq!(f.transactions(chk), 1);

    // A good transfer records both legs.
    f.at("2024-01-10T00:00:05Z", |s, c| s.withdraw(c, sav, max))
        .unwrap();
    let r = f
        .at("2024-01-10T00:00:06Z", |s, c| {
            s.transfer(c, chk, sav, dec("40.5"))
        })
        .unwrap();
    assert_eq!(
        (r.from_balance.to_string(), r.to_balance.to_string()),
        ("59.50".to_string(), "40.50".to_string())
    );
    let legs = f.bank.query(|s| s.transactions(chk)).unwrap();
    let last = legs.last().unwrap();
    assert_eq!(
        (last.starting_balance, last.ending_balance, last.change),
        (dec("100"), dec("59.5"), dec("-40.5"))
    );
    assert_eq!(last.transaction_time, at("2024-01-10T00:00:06Z"));
    let legs = f.bank.query(|s| s.transactions(sav)).unwrap();
    assert_eq!(legs.last().unwrap().change, dec("40.50"));
    assert_eq!(legs.len(), 3);
}

#[test]
fn amounts_must_be_positive_with_at_most_two_digits() {
    let mut f = Fixture::new();
    let (chk, sav) = f.jane("2024-01-10T00:00:00Z");
    for bad in [
        "1.005",
        "0.001",
        "0",
        "0.00",
        "-5.00",
        "1000000000000000000.01",
    ] {
        let got = f.at("2024-01-10T00:00:01Z", |s, c| s.deposit(c, chk, dec(bad)));
        assert!(
            matches!(
                got,
                Err(ServiceError::Domain(BankError::InvalidArgument(_)))
            ),
            "{bad}: {got:?}"
        );
        let got = f.at("2024-01-10T00:00:01Z", |s, c| s.withdraw(c, chk, dec(bad)));
        assert!(
            matches!(
                got,
                Err(ServiceError::Domain(BankError::InvalidArgument(_)))
            ),
            "{bad}: {got:?}"
        );
        let got = f.at("2024-01-10T00:00:01Z", |s, c| {
            s.transfer(c, chk, sav, dec(bad)).map(|r| r.to_balance)
        });
        assert!(
            matches!(
                got,
                Err(ServiceError::Domain(BankError::InvalidArgument(_)))
            ),
            "{bad}: {got:?}"
        );
    }
    assert_eq!(f.transactions(chk), 0);
    // Trailing zeros are not fractional digits.
    let got = f
        .at("2024-01-10T00:00:02Z", |s, c| {
            s.deposit(c, chk, dec("1.500"))
        })
        .unwrap();
    assert_eq!(got.to_string(), "1.50");
    let got = f
        .at("2024-01-10T00:00:03Z", |s, c| s.deposit(c, chk, dec("2")))
        .unwrap();
    assert_eq!(got.to_string(), "3.50");
    // Unknown accounts, including ids past SQLite's integer range.
    for id in [99, u64::MAX] {
        let got = f.at("2024-01-10T00:00:04Z", |s, c| s.deposit(c, id, dec("1")));
        assert!(
            matches!(got, Err(ServiceError::Domain(BankError::NotFound(_)))),
            "{id}: {got:?}"
        );
    }
}

#[test]
fn ids_stay_dense_after_failed_creates() {
    let mut f = Fixture::new();
    let t = "2024-01-10T00:00:00Z";
    let first = f
        .at(t, |s, c| {
            s.create_customer(c, "A".into(), "B".into(), "".into())
        })
        .unwrap();
    assert_eq!(first.customer_id, 1);
    for (first, last) in [("  ", "B"), ("A", ""), ("", "")] {
        let got = f.at(t, |s, c| {
            s.create_customer(c, first.into(), last.into(), "x".into())
        });
        assert!(
            matches!(
                got,
                Err(ServiceError::Domain(BankError::InvalidArgument(_)))
            ),
            "{got:?}"
        );
    }
    let got = f.at(t, |s, c| s.create_account(c, 7, AccountType::Savings));
    assert!(
        matches!(got, Err(ServiceError::Domain(BankError::NotFound(_)))),
        "{got:?}"
    );
    let second = f
        .at(t, |s, c| {
            s.create_customer(c, " C ".into(), "D".into(), "".into())
        })
        .unwrap();
    assert_eq!(second.customer_id, 2);
    assert_eq!(second.first_name, "C");
    let acct = f
        .at(t, |s, c| s.create_account(c, 2, AccountType::Checking))
        .unwrap();
    assert_eq!(acct.account_id, 1);
    assert_eq!(acct.balance.to_string(), "0.00");
    let acct = f
        .at(t, |s, c| s.create_account(c, 1, AccountType::Savings))
        .unwrap();
    assert_eq!(acct.account_id, 2);
    assert_eq!(f.bank.query(|s| s.get_customer_count()), Ok(2));
    assert_eq!(f.bank.query(|s| s.get_account_count()), Ok(2));
    assert_eq!(f.bank.query(|s| s.get_accounts(2)), Ok(vec![1]));
    assert!(matches!(
        f.bank.query(|s| s.get_accounts(3)),
        Err(ServiceError::Domain(BankError::NotFound(_)))
    ));
    let customers = f.bank.query(|s| s.list_customers(0, 10)).unwrap();
    let ids: Vec<_> = customers
        .iter()
        .map(|c| (c.customer_id, c.accounts.clone()))
        .collect();
    assert_eq!(ids, vec![(1, vec![2]), (2, vec![1])]);
}

#[test]
fn listing_pages_and_limits() {
    let mut f = Fixture::new();
    for i in 0..5 {
        f.at("2024-01-10T00:00:00Z", |s, c| {
            s.create_customer(c, format!("F{i}"), "L".into(), "".into())
        })
        .unwrap();
    }
    let page = f.bank.query(|s| s.list_customers(1, 2)).unwrap();
    let names: Vec<_> = page.iter().map(|c| c.first_name.as_str()).collect();
    assert_eq!(names, ["F1", "F2"]);
    assert_eq!(f.bank.query(|s| s.list_customers(10, 2)), Ok(vec![]));
    assert_eq!(
        f.bank.query(|s| s.list_customers(0, 1000)).unwrap().len(),
        5
    );
    assert!(matches!(
        f.bank.query(|s| s.list_customers(0, 1001)),
        Err(ServiceError::Domain(BankError::InvalidArgument(_)))
    ));
    assert!(matches!(
        f.bank.query(|s| s.list_accounts(0, 1001)),
        Err(ServiceError::Domain(BankError::InvalidArgument(_)))
    ));
}

#[test]
fn a_newer_schema_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bank.db");
    drop(Bank::open(&path).unwrap());
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.pragma_update(None, "user_version", 99).unwrap();
    }
    assert!(matches!(
        Bank::open(&path),
        Err(bank::StoreError::UnsupportedSchema { found: 99, .. })
    ));
}
