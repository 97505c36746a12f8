//! Running nodes: the node host and its command line ([`host`], [`config`]), the admin client
//! ([`admin`]), the health and
//! metrics listener ([`health`]), rate-limited logs ([`log_limit`]), local clusters of node
//! processes ([`cluster`]) and the live view ([`top`], with the `top` feature).

pub mod admin;
pub mod cluster;
pub mod config;
pub mod health;
pub mod host;
pub mod log_limit;
#[cfg(feature = "top")]
pub mod top;
