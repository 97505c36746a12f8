//! The bank: customers, accounts, a simulated clock and monthly statements, kept in SQLite.
//!
//! - [`store`]: the deterministic state machine ([`Bank`], [`BankState`]), implementing the
//!   generated [`bank_generated::BankService`] trait.
//! - [`variants`]: in-process clients implementing the generated
//!   [`bank_generated::BankApi`] trait ([`Direct`], and [`collector`] = the generated
//!   `Collector` over a [`LocalSink`]).
//! - [`validator`]: the walk-through of the bank's semantics, run unchanged against any
//!   [`bank_generated::BankApi`].

#![warn(missing_docs)]

pub mod bench;
pub mod cluster;
pub mod demo;
pub mod net;
pub mod store;
pub mod validator;
pub mod variants;

pub use store::{Bank, BankState, StoreError};
pub use validator::{Report, StepTiming, ValidationError};
pub use variants::{Direct, LocalNode, LocalSink, collector};
