//! The change feed on the wire: a [`WatchError`] as a gRPC status and back, and the client side
//! of a watch that resumes by itself ([`resuming_watch`]): after a transport failure, a node
//! stopping or a cut-off, it reconnects (to the next node it knows) from the index after the
//! last event it delivered, so what it yields has no gap and no duplicate.

use std::future::Future;
use std::time::{Duration, Instant};

use futures_util::{Stream, StreamExt};
use tokio::sync::mpsc;
use tonic::transport::Channel;

use crate::api::client::endpoint;
use crate::net::tls::ServerCa;
pub use crate::raft::feed::WatchError;

/// Metadata key of a watch error's kind on a gRPC status.
pub const WATCH_ERROR_KEY: &str = "x-watch-error";
/// Metadata key of the first available index on a `compacted` status.
pub const FIRST_AVAILABLE_KEY: &str = "x-first-available";

/// The status a watch error travels as: a code, the message, and its kind (with the first
/// available index of `Compacted`) in metadata.
pub fn watch_status(error: &WatchError) -> tonic::Status {
    let code = match error {
        WatchError::Compacted { .. } => tonic::Code::OutOfRange,
        WatchError::TooSlow { .. } | WatchError::TooMany { .. } => tonic::Code::ResourceExhausted,
        WatchError::Disabled => tonic::Code::FailedPrecondition,
        WatchError::Stopped | WatchError::Unavailable(_) => tonic::Code::Unavailable,
        WatchError::Storage(_) => tonic::Code::Internal,
        WatchError::Refused(_) => tonic::Code::InvalidArgument,
    };
    let mut status = tonic::Status::new(code, error.to_string());
    let meta = status.metadata_mut();
    meta.insert(
        WATCH_ERROR_KEY,
        tonic::metadata::MetadataValue::from_static(error.kind()),
    );
    if let WatchError::Compacted { first_available } = error {
        meta.insert(FIRST_AVAILABLE_KEY, (*first_available).into());
    }
    status
}

/// What a status ending a watch means: the watch error it carries, or for any other status,
/// `Refused` when asking again cannot help (a bad request, no such service) and `Unavailable`
/// otherwise.
pub fn watch_error_from_status(status: &tonic::Status) -> WatchError {
    let meta = status.metadata();
    let text = |key: &str| meta.get(key).and_then(|v| v.to_str().ok());
    let message = status.message().to_string();
    match text(WATCH_ERROR_KEY) {
        Some("compacted") => WatchError::Compacted {
            first_available: text(FIRST_AVAILABLE_KEY)
                .and_then(|v| v.parse().ok())
                .unwrap_or(0),
        },
        Some("too_slow") => WatchError::TooSlow {
            buffered: 0,
            stall_ms: 0,
        },
        Some("disabled") => WatchError::Disabled,
        Some("too_many") => WatchError::TooMany { cap: 0 },
        Some("stopped") => WatchError::Stopped,
        Some("storage") => WatchError::Storage(message),
        _ => match status.code() {
            tonic::Code::InvalidArgument
            | tonic::Code::Unimplemented
            | tonic::Code::PermissionDenied
            | tonic::Code::Unauthenticated
            | tonic::Code::DataLoss => WatchError::Refused(message),
            _ => WatchError::Unavailable(message),
        },
    }
}

impl WatchError {
    /// Its kind on every wire (gRPC's `x-watch-error`, JSON-RPC's `kind`).
    pub fn kind(&self) -> &'static str {
        match self {
            WatchError::Compacted { .. } => "compacted",
            WatchError::TooSlow { .. } => "too_slow",
            WatchError::Disabled => "disabled",
            WatchError::TooMany { .. } => "too_many",
            WatchError::Stopped => "stopped",
            WatchError::Storage(_) => "storage",
            WatchError::Unavailable(_) => "unavailable",
            WatchError::Refused(_) => "refused",
        }
    }

    /// Whether a resuming watch asks again (elsewhere) after it, rather than ending with it
    /// (another node may have room for one more watcher).
    pub fn is_resumable(&self) -> bool {
        matches!(
            self,
            WatchError::TooSlow { .. }
                | WatchError::TooMany { .. }
                | WatchError::Stopped
                | WatchError::Storage(_)
                | WatchError::Unavailable(_)
        )
    }
}

/// Where a resuming watch connects: the API addresses of the nodes it may use (it starts with
/// the first and moves to the next after a failure), and the CA of a TLS cluster.
#[derive(Debug, Clone, Default)]
pub struct WatchTarget {
    /// gRPC addresses (`host:port` or URLs).
    pub endpoints: Vec<String>,
    /// The CA that signed the nodes' certificates, on a TLS cluster.
    pub tls: Option<ServerCa>,
    /// How long it keeps trying without delivering anything before it ends with
    /// [`WatchError::Unavailable`].
    pub give_up_after: Duration,
    /// The watcher's token, for nodes started with `--auth`.
    pub token: Option<crate::wire::call::Token>,
}

impl WatchTarget {
    /// The nodes at `endpoints`, without TLS, giving up after 20 s without a node.
    pub fn new(endpoints: impl IntoIterator<Item = impl Into<String>>) -> Self {
        WatchTarget {
            endpoints: endpoints.into_iter().map(Into::into).collect(),
            tls: None,
            give_up_after: Duration::from_secs(20),
            token: None,
        }
    }
}

/// An event as the generated code decodes it: what a resuming watch needs to know of it.
pub trait Indexed {
    /// Its log index.
    fn index(&self) -> u64;
}

/// How often a resuming watch pings its node over HTTP/2 (well inside a node's default idle
/// timeout of 120 s).
const KEEP_ALIVE: Duration = Duration::from_secs(30);

/// How many decoded events a resuming watch holds ahead of its consumer.
const AHEAD: usize = 64;

/// Watches from `from` (0: from the next command), resuming as the module docs say. `open`
/// starts the service's gRPC watch on a channel from an index; the stream ends after an error
/// that resuming cannot help (`Compacted`, `Disabled`, `Refused`, or `Unavailable` after
/// `give_up_after` without a node). Resuming from 0 before the first event starts again at the
/// next command of the node it reaches: name an index to never miss one.
pub fn resuming_watch<T, S, F, Fut>(
    target: WatchTarget,
    from: u64,
    open: F,
) -> impl Stream<Item = Result<T, WatchError>> + Send + 'static
where
    T: Indexed + Send + 'static,
    S: Stream<Item = Result<T, tonic::Status>> + Send + Unpin + 'static,
    F: Fn(Channel, u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<S, tonic::Status>> + Send + 'static,
{
    let (tx, rx) = mpsc::channel(AHEAD);
    tokio::spawn(async move {
        let mut next = from;
        let mut node = 0usize;
        let mut failing_since: Option<Instant> = None;
        let mut backoff = Duration::from_millis(50);
        loop {
            let Some(addr) = target.endpoints.get(node % target.endpoints.len().max(1)) else {
                drop(
                    tx.send(Err(WatchError::Refused("no endpoint to watch".into())))
                        .await,
                );
                return;
            };
            let channel = match endpoint(addr, target.tls.as_ref()) {
                Ok(endpoint) => endpoint
                    // A quiet watch sends nothing: pings keep the node from closing it as idle.
                    .http2_keep_alive_interval(KEEP_ALIVE)
                    .keep_alive_while_idle(true)
                    .connect()
                    .await
                    .map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            let last_error = match channel {
                Err(e) => WatchError::Unavailable(format!("{addr}: {e}")),
                Ok(channel) => match open(channel, next).await {
                    Err(status) => watch_error_from_status(&status),
                    Ok(mut events) => loop {
                        let item = tokio::select! {
                            item = events.next() => item,
                            () = tx.closed() => return,
                        };
                        match item {
                            Some(Ok(event)) => {
                                failing_since = None;
                                backoff = Duration::from_millis(50);
                                next = event.index() + 1;
                                if tx.send(Ok(event)).await.is_err() {
                                    return;
                                }
                            }
                            Some(Err(status)) => break watch_error_from_status(&status),
                            None => {
                                break WatchError::Unavailable(format!("{addr} ended the watch"));
                            }
                        }
                    },
                },
            };
            if !last_error.is_resumable() {
                drop(tx.send(Err(last_error)).await);
                return;
            }
            tracing::debug!(%addr, error = %last_error, next, "watch: resuming on the next node");
            let since = *failing_since.get_or_insert_with(Instant::now);
            if since.elapsed() > target.give_up_after {
                drop(
                    tx.send(Err(WatchError::Unavailable(format!(
                        "no node served the watch for {:?}; last: {last_error}",
                        target.give_up_after
                    ))))
                    .await,
                );
                return;
            }
            node += 1;
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(1));
        }
    });
    receiver_stream(rx)
}

/// A watch that is refused before it starts (a service with no commands), as one error.
pub fn refused_watch<T: Send + 'static>(
    why: &str,
) -> impl Stream<Item = Result<T, WatchError>> + Send + 'static {
    futures_util::stream::once(std::future::ready(Err(WatchError::Refused(
        why.to_string(),
    ))))
}

/// The receiver as a stream.
fn receiver_stream<T>(mut rx: mpsc::Receiver<T>) -> impl Stream<Item = T> {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

/// A node's feed as a gRPC response stream.
pub type GrpcFeed<T> = std::pin::Pin<Box<dyn Stream<Item = Result<T, tonic::Status>> + Send>>;

/// Serves `events` as a gRPC response stream: each event as `encode` makes it, once per live
/// event for all the node's watchers ([`crate::raft::feed::Event::shared`]; one it cannot
/// encode ends the stream with `DATA_LOSS`), a watch error as its status ([`watch_status`]).
pub fn grpc_feed<T: Clone + Send + Sync + 'static>(
    events: crate::raft::feed::WatchStream,
    encode: impl Fn(&crate::raft::feed::Event) -> Result<T, String> + Send + 'static,
) -> GrpcFeed<T> {
    Box::pin(events.map(move |item| {
        match item {
            Ok(event) => event
                .shared(&encode)
                .map(|message| T::clone(&message))
                .map_err(tonic::Status::data_loss),
            Err(e) => Err(watch_status(&e)),
        }
    }))
}

/// A gRPC watch response as a stream of decoded events (one that does not decode ends the
/// watch with `DATA_LOSS`, which is not resumed).
pub fn decode_feed<P: Send + 'static, T: Send + 'static>(
    events: tonic::Streaming<P>,
    decode: fn(P) -> Result<T, String>,
) -> impl Stream<Item = Result<T, tonic::Status>> + Send + Unpin + 'static {
    events.map(move |item| item.and_then(|p| decode(p).map_err(tonic::Status::data_loss)))
}

/// The filter a watch request asks for, its operations checked against the service's commands
/// (an unknown one is [`WatchError::Refused`]); empty strings mean "any".
pub fn filter_for(
    operations: &[crate::wire::service::OpInfo],
    asked: Vec<String>,
    key: String,
    key_prefix: String,
) -> Result<crate::raft::feed::WatchFilter, WatchError> {
    let commands = || {
        operations
            .iter()
            .filter(|o| o.kind == crate::wire::CallKind::Command)
    };
    if let Some(unknown) = asked.iter().find(|a| !commands().any(|o| o.name == *a)) {
        let names: Vec<&str> = commands().map(|o| o.name).collect();
        return Err(WatchError::Refused(format!(
            "`{unknown}` is not a command of this service; watch one of: {}",
            names.join(", ")
        )));
    }
    Ok(crate::raft::feed::WatchFilter {
        operations: asked,
        key: (!key.is_empty()).then_some(key),
        key_prefix: (!key_prefix.is_empty()).then_some(key_prefix),
    })
}

/// The JSON-RPC method that starts a watch (a subscription, over WebSocket).
pub const JSONRPC_WATCH: &str = "rpc.watch";
/// The notification that carries each event.
pub const JSONRPC_EVENT: &str = "rpc.event";
/// The method that ends a watch.
pub const JSONRPC_UNWATCH: &str = "rpc.unwatch";

/// The JSON-RPC code of a watch refused because the node (or the connection) serves as many
/// watchers as it takes: jsonrpsee's own "too many subscriptions" code, which its per-connection
/// limit answers with too.
pub const TOO_MANY_WATCHERS_CODE: i32 = jsonrpsee::types::error::TOO_MANY_SUBSCRIPTIONS_CODE;

/// The parameters of [`JSONRPC_WATCH`], by name.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
struct WatchParams {
    from: u64,
    operations: Vec<String>,
    key: String,
    key_prefix: String,
    #[serde(rename = "x-token")]
    token: Option<String>,
}

/// The error a watch ends with, as JSON: `{"kind":…,"message":…}` plus `first_available` for
/// `compacted`.
fn watch_error_json(error: &WatchError) -> serde_json::Value {
    let mut json = serde_json::json!({ "kind": error.kind(), "message": error.to_string() });
    if let WatchError::Compacted { first_available } = error {
        json["first_available"] = (*first_available).into();
    }
    json
}

/// Adds the change feed of `node` to a JSON-RPC module as a subscription: [`JSONRPC_WATCH`]
/// with `{"from":N,"operations":[…],"key":…,"key_prefix":…,"x-token":…}` (all optional), then one
/// [`JSONRPC_EVENT`] notification per event (as `encode` writes it); a watch error closes the
/// subscription with an error notification (see [`watch_error_json`]). A bad filter is refused
/// with `-32602`.
pub fn add_jsonrpc_watch<Ctx: Send + Sync + 'static>(
    module: &mut jsonrpsee::RpcModule<Ctx>,
    operations: &'static [crate::wire::service::OpInfo],
    node: std::sync::Arc<crate::raft::node::RaftNode>,
    encode: fn(&crate::raft::feed::Event) -> Result<serde_json::Value, String>,
) -> Result<(), crate::api::server::ServeError> {
    use jsonrpsee::core::SubscriptionError;
    use jsonrpsee::core::server::SubscriptionCloseResponse as Close;
    let to_error = |value: serde_json::Value| {
        serde_json::value::to_raw_value(&value)
            .map(SubscriptionError::from_json)
            .unwrap_or_else(|e| SubscriptionError::from(e.to_string()))
    };
    module
        .register_subscription(
            JSONRPC_WATCH,
            JSONRPC_EVENT,
            JSONRPC_UNWATCH,
            move |params, pending, _, extensions| {
                let node = node.clone();
                // Counted on its connection while it lasts: a connection that holds a watch is
                // not idle.
                let watching = extensions
                    .get::<std::sync::Arc<crate::api::server::Activity>>()
                    .map(|activity| activity.busy());
                async move {
                    let _watching = watching;
                    let args: WatchParams = if params.is_object() {
                        match params.parse() {
                            Ok(args) => args,
                            Err(e) => {
                                pending.reject(e).await;
                                return Close::None;
                            }
                        }
                    } else {
                        WatchParams::default()
                    };
                    let filter =
                        match filter_for(operations, args.operations, args.key, args.key_prefix) {
                            Ok(filter) => filter,
                            Err(e) => {
                                pending.reject(crate::wire::codes::invalid_params(e)).await;
                                return Close::None;
                            }
                        };
                    let filter = match node.authorize_watch(args.token.as_deref(), filter) {
                        Ok(filter) => filter,
                        Err(refused) => {
                            pending
                                .reject(crate::wire::codes::failure_error_object(refused))
                                .await;
                            return Close::None;
                        }
                    };
                    let mut events = node.watch(args.from, filter);
                    if let Some(refused) = events.refused() {
                        let code = match refused {
                            WatchError::TooMany { .. } => TOO_MANY_WATCHERS_CODE,
                            _ => crate::wire::codes::INVALID_PARAMS_CODE,
                        };
                        let data = serde_json::json!({ "kind": refused.kind() });
                        let error = jsonrpsee::types::ErrorObjectOwned::owned(
                            code,
                            refused.to_string(),
                            Some(data),
                        );
                        pending.reject(error).await;
                        return Close::None;
                    }
                    let Ok(sink) = pending.accept().await else {
                        return Close::None;
                    };
                    let end = loop {
                        let item = tokio::select! {
                            item = events.next() => item,
                            () = sink.closed() => return Close::None,
                        };
                        let event = match item {
                            Some(Ok(event)) => event,
                            Some(Err(e)) => break watch_error_json(&e),
                            None => return Close::None,
                        };
                        // Made once per live event for all the node's subscribers.
                        let message = event.shared(|event| {
                            encode(event).and_then(|value| {
                                serde_json::value::to_raw_value(&value).map_err(|e| e.to_string())
                            })
                        });
                        match message {
                            Ok(message) => {
                                if sink.send(Box::clone(&message)).await.is_err() {
                                    return Close::None;
                                }
                            }
                            Err(e) => {
                                break serde_json::json!({ "kind": "data_loss", "message": e });
                            }
                        }
                    };
                    // The closing notification carries the error.
                    Close::NotifErr(to_error(end))
                }
            },
        )
        .map_err(|e| {
            crate::api::server::ServeError::JsonRpc(format!("registering the watch: {e}"))
        })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_watch_error_keeps_its_kind_through_a_status() {
        for error in [
            WatchError::Compacted {
                first_available: 42,
            },
            WatchError::TooSlow {
                buffered: 1,
                stall_ms: 2,
            },
            WatchError::Disabled,
            WatchError::TooMany { cap: 3 },
            WatchError::Stopped,
            WatchError::Storage("disk".into()),
            WatchError::Unavailable("gone".into()),
            WatchError::Refused("bad".into()),
        ] {
            let back = watch_error_from_status(&watch_status(&error));
            assert_eq!(back.kind(), error.kind(), "{error:?}");
            assert_eq!(watch_error_json(&error)["kind"], error.kind());
        }
        assert_eq!(
            watch_error_from_status(&watch_status(&WatchError::Compacted {
                first_available: 42
            })),
            WatchError::Compacted {
                first_available: 42
            }
        );
    }
}
