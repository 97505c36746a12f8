//! The bank: customers, accounts, a simulated clock and monthly statements, kept in SQLite.
//!
//! - [`store`]: the deterministic state machine ([`Bank`], [`BankState`]), implementing the
//!   generated [`bank_generated::BankService`] trait.
//! - [`direct`] and [`collector`]: the in-process clients the toolkit generates, over the
//!   bank's tables ([`BankTables`]).
//! - [`validator`]: the walk-through of the bank's semantics, run unchanged against any
//!   [`bank_generated::BankApi`].

#![warn(missing_docs)]

pub mod bench;
pub mod cdf;
pub mod chaos;
pub mod demo;
pub mod net;
pub mod peers;
pub mod store;
pub mod validator;

pub use store::{Bank, BankState, BankTables, StoreError};
pub use validator::{Report, StepTiming, ValidationError};

use bank_generated::{BankApp, Collector};
use runtime::api::local::LocalSink;

/// The bank in process: every call straight to the store (the seed's step 1).
pub type Direct = bank_generated::Direct<BankTables>;

/// The bank through the generated `Collector`: every call encoded, applied and decoded in
/// process (the seed's step 3).
pub type LocalCollector = Collector<LocalSink<BankApp<BankTables>>>;

/// The direct variant over `bank`.
pub fn direct(bank: Bank) -> Direct {
    Direct::new(bank.into_db(), BankTables)
}

/// The collector variant over `bank`.
pub fn collector(bank: Bank) -> LocalCollector {
    bank_generated::local(bank.into_db(), BankTables)
}
