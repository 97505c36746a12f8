//! A service's API, on every transport: the gRPC and JSON-RPC servers ([`server`]) and clients
//! ([`client`]), the `Collector`'s sinks ([`sink`]), the service in one process ([`local`]), and
//! the frame transports ([`tcp`], and [`zmq`] with the `zmq` feature), and the change feed on
//! the wire ([`watch`]).

pub mod client;
pub mod local;
mod pending;
pub mod server;
pub mod sink;
pub mod tcp;
pub mod watch;
#[cfg(feature = "zmq")]
pub mod zmq;
