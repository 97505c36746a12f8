//! Malformed input on every networked transport: each bad request gets the right typed error,
//! the server keeps serving, and nothing is applied.
//!
//! One module per transport: [`grpc`], [`jsonrpc`], and [`frames`] (TCP and ZeroMQ).
//!
//! Every test: a server on 127.0.0.1 (port 0) over a SQLite file in a temp dir, seeded through a
//! proper client (a customer, a checking account, a deposit of 100.00); then the bad inputs, sent
//! as raw as the transport allows (raw protobuf messages, raw HTTP POSTs, hand-built
//! frames); then (a) the exact error class, (b) the bank unchanged, read back through the proper
//! client, and (c) the validator walk-through passing through that client afterwards.
//!
//! Servers are owned by [`Server`], which stops them when dropped, so a failing assertion never
//! leaves one running.

mod frames;
mod grpc;
mod jsonrpc;

use std::net::SocketAddr;
use std::time::Duration;

use bank::Bank;
use bank::net::{self, RunningServer, Variant};
use bank::validator;
use bank_generated::{Account, AccountType, BankApi, Customer};
use rust_decimal::Decimal;

/// How long any single network exchange may take before the test gives up.
pub(crate) const IO_DEADLINE: Duration = Duration::from_secs(20);

/// The small request limit of the servers that test oversized input.
pub(crate) const SMALL_LIMIT: usize = 4096;

// ------------------------------------------------------------------------------------------
// Servers, seeding and the "nothing changed" check
// ------------------------------------------------------------------------------------------

/// A running server over a temp-file database; stopped when dropped (dropping a
/// `RunningServer` signals its shutdown) or cleanly by [`Server::stop`].
pub(crate) struct Server {
    pub(crate) inner: Option<RunningServer>,
    pub(crate) addr: SocketAddr,
    pub(crate) _dir: tempfile::TempDir,
}

impl Server {
    async fn start(variant: Variant, max_request: usize) -> Server {
        let dir = tempfile::tempdir().expect("temp dir");
        let bank = Bank::open(dir.path().join("bank.db")).expect("open bank");
        let inner = net::serve(
            variant,
            "127.0.0.1:0",
            bank,
            runtime::Limits {
                max_frame: max_request,
                ..runtime::Limits::default()
            },
        )
        .await
        .unwrap_or_else(|e| panic!("{}: cannot serve: {e}", variant.name()));
        Server {
            addr: inner.addr,
            inner: Some(inner),
            _dir: dir,
        }
    }

    async fn stop(mut self) {
        if let Some(server) = self.inner.take() {
            server.shutdown().await.expect("clean shutdown");
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // Dropping the handle drops its stop sender, which stops the server.
        drop(self.inner.take());
    }
}

/// What the seeding created.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Seeded {
    pub(crate) customer_id: u64,
    pub(crate) account_id: u64,
}

pub(crate) fn money(text: &str) -> Decimal {
    Decimal::from_str_exact(text).expect("decimal")
}

/// Creates a customer, a checking account and deposits 100.00, through a proper client.
pub(crate) async fn seed<A: BankApi>(api: &A) -> Seeded {
    let customer = api
        .create_customer("Seed".into(), "Customer".into(), "1 Test Road".into())
        .await
        .expect("seed: create_customer");
    let account = api
        .create_account(customer.customer_id, AccountType::Checking)
        .await
        .expect("seed: create_account");
    let balance = api
        .deposit(account.account_id, money("100.00"))
        .await
        .expect("seed: deposit");
    assert_eq!(balance.to_string(), "100.00");
    Seeded {
        customer_id: customer.customer_id,
        account_id: account.account_id,
    }
}

/// Everything a bad request could have changed, as a proper client sees it.
#[derive(Debug, PartialEq)]
pub(crate) struct Snapshot {
    pub(crate) customer_count: u64,
    pub(crate) account_count: u64,
    pub(crate) customers: Vec<Customer>,
    pub(crate) accounts: Vec<Account>,
}

pub(crate) async fn snapshot<A: BankApi>(api: &A) -> Snapshot {
    Snapshot {
        customer_count: api.get_customer_count().await.expect("get_customer_count"),
        account_count: api.get_account_count().await.expect("get_account_count"),
        customers: api.list_customers(0, 1000).await.expect("list_customers"),
        accounts: api.list_accounts(0, 1000).await.expect("list_accounts"),
    }
}

/// (c) nothing changed since `before` (the seeded balance is still 100.00), then (b) the
/// whole walk-through passes through the same proper client.
pub(crate) async fn assert_unchanged_then_validate<A: BankApi>(
    what: &str,
    api: &A,
    before: &Snapshot,
    seeded: Seeded,
) {
    let after = snapshot(api).await;
    assert_eq!(&after, before, "{what}: the bad inputs changed the bank");
    assert_eq!(after.customer_count, 1, "{what}");
    assert_eq!(after.account_count, 1, "{what}");
    let account = after
        .accounts
        .iter()
        .find(|a| a.account_id == seeded.account_id)
        .expect("the seeded account");
    assert_eq!(account.balance.to_string(), "100.00", "{what}");
    assert_eq!(account.customer_id, seeded.customer_id, "{what}");
    let report = validator::run(api)
        .await
        .unwrap_or_else(|e| panic!("{what}: validator after the bad inputs: {e}"));
    assert_eq!(report.customer_id, seeded.customer_id + 1, "{what}");
}
