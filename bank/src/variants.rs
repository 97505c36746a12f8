//! In-process ways to reach the bank through the generated client API.
//!
//! - [`Direct`] implements [`BankApi`] by calling the [`BankService`] methods of the store.
//! - [`LocalSink`] implements [`CommandSink`]: it takes encoded commands, as a transport would
//!   deliver them, and answers encoded replies; [`collector`] puts the generated [`Collector`]
//!   client in front of it, so the whole encode / dispatch / decode path is exercised.
//!
//! Both play the leader of a one-node cluster through [`LocalNode`], the one place where a
//! command is stamped with its [`ApplyContext`] (a log index and the leader's wall-clock time).

use std::sync::{Mutex, MutexGuard};

use bank_generated::{
    Account, AccountType, ApplyContext, BankApi, BankCommand, BankError, BankReply, BankService,
    Collector, CommandSink, Customer, Dispatcher, Duration, OpKind, Statement, TransferResult,
    encode_reply,
};
use chrono::{DateTime, NaiveDate, Utc};
use rust_decimal::Decimal;

use crate::store::{Bank, BankState};

/// A one-node "cluster": the bank behind a mutex, and the leader's command counter.
#[derive(Debug)]
pub struct LocalNode {
    inner: Mutex<NodeInner>,
}

#[derive(Debug)]
struct NodeInner {
    bank: Bank,
    /// The index given to the last command stamped (counted from this process's start).
    last_index: u64,
}

impl LocalNode {
    /// Wraps `bank`; the first command stamped gets index 1.
    pub fn new(bank: Bank) -> Self {
        LocalNode {
            inner: Mutex::new(NodeInner {
                bank,
                last_index: 0,
            }),
        }
    }

    fn lock(&self) -> Result<MutexGuard<'_, NodeInner>, BankError> {
        self.inner
            .lock()
            .map_err(|_| BankError::Internal("the bank's lock is poisoned".into()))
    }

    /// Stamps the next command as the leader does: the next log index and the leader's wall
    /// clock (read here, outside the deterministic apply), then applies it with `f` inside
    /// [`Bank::command`].
    pub fn command<T>(
        &self,
        f: impl FnOnce(&mut BankState<'_>, &ApplyContext) -> Result<T, BankError>,
    ) -> Result<T, BankError> {
        let mut inner = self.lock()?;
        inner.last_index += 1;
        let ctx = ApplyContext {
            index: inner.last_index,
            time: Utc::now(),
        };
        inner.bank.command(&ctx, |state| f(state, &ctx))
    }

    /// Runs a read-only `f` inside [`Bank::query`].
    pub fn query<T>(
        &self,
        f: impl FnOnce(&BankState<'_>) -> Result<T, BankError>,
    ) -> Result<T, BankError> {
        self.lock()?.bank.query(f)
    }

    /// Runs `f` on the bank itself (for [`Bank::digest`] and the like).
    pub fn with_bank<T>(&self, f: impl FnOnce(&Bank) -> T) -> Result<T, BankError> {
        Ok(f(&self.lock()?.bank))
    }
}

/// [`BankApi`] in process: every call goes straight to the store's [`BankService`] methods.
#[derive(Debug)]
pub struct Direct {
    node: LocalNode,
}

impl Direct {
    /// The direct variant over `bank`.
    pub fn new(bank: Bank) -> Self {
        Direct {
            node: LocalNode::new(bank),
        }
    }

    /// The node behind this client.
    pub fn node(&self) -> &LocalNode {
        &self.node
    }
}

impl BankApi for Direct {
    async fn create_customer(
        &self,
        first_name: String,
        last_name: String,
        address: String,
    ) -> Result<Customer, BankError> {
        self.node
            .command(|s, ctx| s.create_customer(ctx, first_name, last_name, address))
    }

    async fn create_account(
        &self,
        customer_id: u64,
        account_type: AccountType,
    ) -> Result<Account, BankError> {
        self.node
            .command(|s, ctx| s.create_account(ctx, customer_id, account_type))
    }

    async fn deposit(&self, account_id: u64, amount: Decimal) -> Result<Decimal, BankError> {
        self.node
            .command(|s, ctx| s.deposit(ctx, account_id, amount))
    }

    async fn withdraw(&self, account_id: u64, amount: Decimal) -> Result<Decimal, BankError> {
        self.node
            .command(|s, ctx| s.withdraw(ctx, account_id, amount))
    }

    async fn transfer(
        &self,
        from_account_id: u64,
        to_account_id: u64,
        amount: Decimal,
    ) -> Result<TransferResult, BankError> {
        self.node
            .command(|s, ctx| s.transfer(ctx, from_account_id, to_account_id, amount))
    }

    async fn cash_check(&self, account_id: u64, amount: Decimal) -> Result<Decimal, BankError> {
        self.node
            .command(|s, ctx| s.cash_check(ctx, account_id, amount))
    }

    async fn advance_time(&self, delta: Duration) -> Result<DateTime<Utc>, BankError> {
        self.node.command(|s, ctx| s.advance_time(ctx, delta))
    }

    async fn list_customers(&self, offset: u32, limit: u32) -> Result<Vec<Customer>, BankError> {
        self.node.query(|s| s.list_customers(offset, limit))
    }

    async fn list_accounts(&self, offset: u32, limit: u32) -> Result<Vec<Account>, BankError> {
        self.node.query(|s| s.list_accounts(offset, limit))
    }

    async fn get_accounts(&self, customer_id: u64) -> Result<Vec<u64>, BankError> {
        self.node.query(|s| s.get_accounts(customer_id))
    }

    async fn list_statements(&self, account_id: u64) -> Result<Vec<NaiveDate>, BankError> {
        self.node.query(|s| s.list_statements(account_id))
    }

    async fn get_statement(
        &self,
        account_id: u64,
        statement_date: NaiveDate,
    ) -> Result<Statement, BankError> {
        self.node
            .query(|s| s.get_statement(account_id, statement_date))
    }

    async fn get_customer_count(&self) -> Result<u64, BankError> {
        self.node.query(|s| s.get_customer_count())
    }

    async fn get_account_count(&self) -> Result<u64, BankError> {
        self.node.query(|s| s.get_account_count())
    }
}

/// A [`CommandSink`] that applies encoded commands to a local bank and answers encoded
/// replies: commands through [`Dispatcher::execute`] inside [`Bank::command`], queries through
/// [`Dispatcher::query`] inside [`Bank::query`].
#[derive(Debug)]
pub struct LocalSink {
    node: LocalNode,
}

impl LocalSink {
    /// The sink over `bank`.
    pub fn new(bank: Bank) -> Self {
        LocalSink {
            node: LocalNode::new(bank),
        }
    }

    /// The node behind this sink.
    pub fn node(&self) -> &LocalNode {
        &self.node
    }

    /// Decodes and applies one submitted operation.
    fn apply(&self, kind: OpKind, bytes: &[u8]) -> Result<BankReply, BankError> {
        let command = BankCommand::decode(bytes)?;
        match (kind, command.kind()) {
            (OpKind::Command, OpKind::Command) => self
                .node
                .command(|state, ctx| Dispatcher::execute(state, ctx, command)),
            (OpKind::Query, OpKind::Query) => {
                self.node.query(|state| Dispatcher::query(state, command))
            }
            (submitted, actual) => Err(BankError::InvalidArgument(format!(
                "{} submitted as {submitted:?} but is a {actual:?}",
                command.name()
            ))),
        }
    }
}

impl CommandSink for LocalSink {
    async fn submit(&self, kind: OpKind, command: Vec<u8>) -> Result<Vec<u8>, BankError> {
        Ok(encode_reply(&self.apply(kind, &command)))
    }
}

/// The generated [`Collector`] client over a [`LocalSink`] on `bank`.
pub fn collector(bank: Bank) -> Collector<LocalSink> {
    Collector::new(LocalSink::new(bank))
}
