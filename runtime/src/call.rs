//! Per-call context that travels from a transport's server stub down to the Raft sink without
//! every layer passing it along: the caller's request id, which makes a retried write
//! idempotent end to end.

use std::future::Future;

/// The metadata key (gRPC) that carries the client's id.
pub const CLIENT_ID_KEY: &str = "x-client-id";
/// The metadata key (gRPC) that carries the request's sequence number.
pub const REQUEST_SEQ_KEY: &str = "x-request-seq";

/// A request id chosen by the client: a retry reuses it, and the write is applied at most once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestId {
    /// The client's session id (random, unique per client instance).
    pub client: String,
    /// The request's sequence number within the session.
    pub seq: u64,
}

tokio::task_local! {
    static REQUEST: RequestId;
}

/// Runs `f` with `id` as the current request id (if any).
pub async fn with_request<F: Future>(id: Option<RequestId>, f: F) -> F::Output {
    match id {
        Some(id) => REQUEST.scope(id, f).await,
        None => f.await,
    }
}

/// The request id of the call being served, if its client sent one.
pub fn current_request() -> Option<RequestId> {
    REQUEST.try_with(Clone::clone).ok()
}

/// A fresh client session id: 128 random bits from the standard library's per-process random
/// hasher keys, hex encoded.
pub fn new_client_id() -> String {
    use std::collections::hash_map::RandomState;
    use std::hash::{BuildHasher, Hasher};
    let word = |salt: u64| {
        let mut h = RandomState::new().build_hasher();
        h.write_u64(salt);
        h.finish()
    };
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or_default();
    format!(
        "{:016x}{:016x}",
        word(nanos),
        word(nanos.rotate_left(17) ^ 0x9e37_79b9)
    )
}
