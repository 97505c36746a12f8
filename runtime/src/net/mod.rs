//! What every listener and dialer shares, below the API and the raft messages: connection caps,
//! idle timeouts and the open-file limit ([`conn`]), and TLS ([`tls`]).

pub mod conn;
pub mod tls;
