//! Per-call context that travels from a transport's server stub down to the Raft sink without
//! every layer passing it along: the caller's request id, which makes a retried write
//! idempotent end to end, and the read level the caller asked for.

use std::future::Future;

/// The metadata key (gRPC) that carries the client's id.
pub const CLIENT_ID_KEY: &str = "x-client-id";
/// The metadata key (gRPC) that carries the request's sequence number.
pub const REQUEST_SEQ_KEY: &str = "x-request-seq";
/// The metadata key (gRPC) that carries the client's acknowledgement: every request of its
/// session below this sequence number has been answered, so their records can go.
pub const REQUEST_ACK_KEY: &str = "x-request-ack";
/// The metadata key (gRPC) that carries a query's read level: `linearizable`, `lease` or
/// `stale`.
pub const READ_LEVEL_KEY: &str = "x-read-level";
/// The metadata key (gRPC), and JSON-RPC named parameter, that carries the caller's bearer
/// token (see `admin token issue`).
pub const TOKEN_KEY: &str = "x-token";

/// A bearer token: what `admin token issue` printed. Its `Debug` form hides it.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(pub String);

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(…)")
    }
}

/// The consistency of a read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ReadLevel {
    /// Sees every write acknowledged before the read started (read index on the leader).
    #[default]
    Linearizable,
    /// Linearizable while the leader's lease holds, without a round of messages: assumes the
    /// nodes' clocks advance at about the same rate (no pause or clock jump longer than the
    /// election timeout). Falls back to a read index when the lease has lapsed.
    Lease,
    /// The local replica's committed state, possibly behind the leader (and, by up to the
    /// node's `--commit-within-ms`, behind what the replica has applied).
    Stale,
}

impl ReadLevel {
    /// The level's name on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            ReadLevel::Linearizable => "linearizable",
            ReadLevel::Lease => "lease",
            ReadLevel::Stale => "stale",
        }
    }

    /// Parses a level's name.
    pub fn parse(text: &str) -> Option<ReadLevel> {
        match text {
            "linearizable" => Some(ReadLevel::Linearizable),
            "lease" => Some(ReadLevel::Lease),
            "stale" => Some(ReadLevel::Stale),
            _ => None,
        }
    }
}

/// What the caller asked for, beyond the call's arguments.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CallContext {
    /// The caller's request id (commands).
    pub request: Option<RequestId>,
    /// The caller's read level (queries); `None` is the node's default.
    pub read_level: Option<ReadLevel>,
    /// The caller's bearer token, if it sent one.
    pub token: Option<Token>,
}

/// A request id chosen by the client: a retry reuses it, and the write is applied at most once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestId {
    /// The client's session id (random, unique per client instance).
    pub client: String,
    /// The request's sequence number within the session.
    pub seq: u64,
    /// Every request of the session below this number has been answered (0: none is known to
    /// be), so the service may drop their deduplication records.
    pub ack: u64,
}

tokio::task_local! {
    static CONTEXT: CallContext;
}

/// Runs `f` with `context` as the current call's context.
pub async fn with_context<F: Future>(context: CallContext, f: F) -> F::Output {
    if context == CallContext::default() {
        f.await
    } else {
        CONTEXT.scope(context, f).await
    }
}

/// The request id of the call being served, if its client sent one.
pub fn current_request() -> Option<RequestId> {
    CONTEXT.try_with(|c| c.request.clone()).ok().flatten()
}

/// The read level the current call asked for, if any.
pub fn current_read_level() -> Option<ReadLevel> {
    CONTEXT.try_with(|c| c.read_level).ok().flatten()
}

/// The bearer token the current call carries, if any.
pub fn current_token() -> Option<Token> {
    CONTEXT.try_with(|c| c.token.clone()).ok().flatten()
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

/// A client's session: its id, and the sequence numbers of its requests still waiting for an
/// answer (which bound its acknowledgement). Cloning shares it.
#[derive(Debug, Clone)]
pub struct Session {
    inner: std::sync::Arc<SessionState>,
}

#[derive(Debug)]
struct SessionState {
    id: String,
    /// The next sequence number, and the ones handed out and not yet finished.
    numbers: std::sync::Mutex<(u64, std::collections::BTreeSet<u64>)>,
}

impl Default for Session {
    fn default() -> Self {
        Session {
            inner: std::sync::Arc::new(SessionState {
                id: new_client_id(),
                numbers: std::sync::Mutex::new((1, std::collections::BTreeSet::new())),
            }),
        }
    }
}

/// A request of a [`Session`] in flight: dropping it (answered, failed for good, or cancelled)
/// lets the session's acknowledgement move past it.
#[derive(Debug)]
pub struct InFlight {
    /// The request's id, with the session's acknowledgement when it was issued.
    pub id: RequestId,
    session: Session,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.session
            .inner
            .numbers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .1
            .remove(&self.id.seq);
    }
}

impl Session {
    /// Issues the next request id. Its `ack` is the oldest request still in flight (this one
    /// included), taken under the same lock that numbers it, so no acknowledgement ever passes
    /// a request that has not been answered.
    pub fn begin(&self) -> InFlight {
        // The numbers stay consistent whatever panicked while holding the lock.
        let mut numbers = self
            .inner
            .numbers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let seq = numbers.0;
        numbers.0 += 1;
        numbers.1.insert(seq);
        let ack = numbers.1.first().copied().unwrap_or(seq);
        drop(numbers);
        InFlight {
            id: RequestId {
                client: self.inner.id.clone(),
                seq,
                ack,
            },
            session: self.clone(),
        }
    }
}

/// Reads a call's context from named values (gRPC metadata, or the same names among a JSON-RPC
/// call's parameters): `get` returns a name's value if the call sent it. Nothing sent is the
/// default context; a malformed request id or an unknown read level is an error, never a
/// silent fallback.
pub fn parse_context<'a>(get: impl Fn(&str) -> Option<&'a str>) -> Result<CallContext, String> {
    let number = |key: &str| -> Result<Option<u64>, String> {
        get(key)
            .map(|text| {
                text.parse()
                    .map_err(|_| format!("`{key}` must be an unsigned integer, not `{text}`"))
            })
            .transpose()
    };
    let request = match (get(CLIENT_ID_KEY), number(REQUEST_SEQ_KEY)?) {
        (Some(client), Some(seq)) => {
            if client.is_empty() || client.len() > MAX_CLIENT_ID {
                return Err(format!(
                    "`{CLIENT_ID_KEY}` must be 1 to {MAX_CLIENT_ID} bytes"
                ));
            }
            Some(RequestId {
                client: client.to_string(),
                seq,
                ack: number(REQUEST_ACK_KEY)?.unwrap_or(0),
            })
        }
        (None, None) => None,
        _ => {
            return Err(format!(
                "`{CLIENT_ID_KEY}` and `{REQUEST_SEQ_KEY}` go together"
            ));
        }
    };
    let read_level = get(READ_LEVEL_KEY)
        .map(|text| {
            ReadLevel::parse(text).ok_or_else(|| {
                format!("`{READ_LEVEL_KEY}` is `linearizable`, `lease` or `stale`, not `{text}`")
            })
        })
        .transpose()?;
    let token = get(TOKEN_KEY).map(|t| Token(t.to_string()));
    Ok(CallContext {
        request,
        read_level,
        token,
    })
}

/// The longest client id a caller may send.
pub const MAX_CLIENT_ID: usize = 128;

/// The context a gRPC caller sent in metadata (request id, read level); a malformed one is
/// `INVALID_ARGUMENT`.
pub fn context_from_metadata(
    metadata: &tonic::metadata::MetadataMap,
) -> Result<CallContext, tonic::Status> {
    parse_context(|key| metadata.get(key).and_then(|v| v.to_str().ok())).map_err(|reason| {
        crate::wire::codes::failure_status(crate::wire::error::Failure::Rejected(reason))
    })
}

/// Writes a call's context into gRPC metadata (what [`context_from_metadata`] reads back).
pub fn context_to_metadata(context: &CallContext, metadata: &mut tonic::metadata::MetadataMap) {
    if let Some(id) = &context.request
        && let Ok(client) = id.client.parse()
    {
        metadata.insert(CLIENT_ID_KEY, client);
        metadata.insert(REQUEST_SEQ_KEY, id.seq.into());
        if id.ack > 0 {
            metadata.insert(REQUEST_ACK_KEY, id.ack.into());
        }
    }
    if let Some(level) = context.read_level {
        metadata.insert(
            READ_LEVEL_KEY,
            tonic::metadata::MetadataValue::from_static(level.as_str()),
        );
    }
    insert_token(metadata, context.token.as_ref());
}

/// Writes `token` (if any) into gRPC metadata.
pub fn insert_token(metadata: &mut tonic::metadata::MetadataMap, token: Option<&Token>) {
    if let Some(Ok(token)) = token.map(|t| t.0.parse()) {
        metadata.insert(TOKEN_KEY, token);
    }
}

/// The token a gRPC caller sent, if any.
pub fn token_from_metadata(metadata: &tonic::metadata::MetadataMap) -> Option<Token> {
    metadata
        .get(TOKEN_KEY)
        .and_then(|v| v.to_str().ok())
        .map(|t| Token(t.to_string()))
}

/// The names a call's context travels under: gRPC metadata keys, and the same names among a
/// JSON-RPC call's named parameters (where no schema parameter can take them: they are not
/// identifiers).
const CONTEXT_KEYS: [&str; 5] = [
    CLIENT_ID_KEY,
    REQUEST_SEQ_KEY,
    REQUEST_ACK_KEY,
    READ_LEVEL_KEY,
    TOKEN_KEY,
];

/// Writes a call's context among a JSON-RPC call's named parameters (what
/// [`context_from_params`] takes back out).
pub fn context_to_params(
    context: &CallContext,
    params: &mut serde_json::Map<String, serde_json::Value>,
) {
    if let Some(id) = &context.request {
        params.insert(CLIENT_ID_KEY.into(), id.client.clone().into());
        params.insert(REQUEST_SEQ_KEY.into(), id.seq.into());
        if id.ack > 0 {
            params.insert(REQUEST_ACK_KEY.into(), id.ack.into());
        }
    }
    if let Some(level) = context.read_level {
        params.insert(READ_LEVEL_KEY.into(), level.as_str().into());
    }
    if let Some(token) = &context.token {
        params.insert(TOKEN_KEY.into(), token.0.clone().into());
    }
}

/// Takes a call's context (request id, read level) out of a JSON-RPC call's named parameters,
/// leaving the operation's own; a malformed one is an error, as in [`parse_context`].
pub fn context_from_params(args: &mut Option<serde_json::Value>) -> Result<CallContext, String> {
    let Some(serde_json::Value::Object(map)) = args else {
        return Ok(CallContext::default());
    };
    let mut sent = std::collections::HashMap::new();
    for key in CONTEXT_KEYS {
        match map.remove(key) {
            None => {}
            Some(serde_json::Value::String(text)) => {
                sent.insert(key, text);
            }
            Some(serde_json::Value::Number(n)) => {
                sent.insert(key, n.to_string());
            }
            Some(other) => {
                return Err(format!("`{key}` must be a string or a number, not {other}"));
            }
        }
    }
    parse_context(|key| sent.get(key).map(String::as_str))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_context_survives_metadata() {
        let session = Session::default();
        let (first, second) = (session.begin(), session.begin());
        assert_eq!((first.id.seq, second.id.seq), (1, 2));
        // The first is still in flight: the second acknowledges nothing past it.
        assert_eq!((first.id.ack, second.id.ack), (1, 1));
        drop(first);
        let third = session.begin();
        assert_eq!(
            (third.id.seq, third.id.ack),
            (3, 2),
            "the answered first is acknowledged"
        );
        drop(second);
        drop(third);
        assert_eq!(
            session.begin().id.ack,
            4,
            "nothing in flight but the new one"
        );
        let second = RequestId {
            client: "c".into(),
            seq: 2,
            ack: 1,
        };
        let context = CallContext {
            request: Some(second),
            read_level: Some(ReadLevel::Stale),
            token: Some(Token("rt_secret".into())),
        };
        assert_eq!(format!("{:?}", context.token), "Some(Token(…))");
        let mut metadata = tonic::metadata::MetadataMap::new();
        context_to_metadata(&context, &mut metadata);
        assert_eq!(context_from_metadata(&metadata).ok(), Some(context.clone()));
        let mut params = serde_json::Map::new();
        context_to_params(&context, &mut params);
        params.insert("amount".into(), "1.00".into());
        let mut args = Some(serde_json::Value::Object(params));
        assert_eq!(context_from_params(&mut args).ok(), Some(context));
        assert_eq!(
            args,
            Some(serde_json::json!({"amount": "1.00"})),
            "only the operation's own"
        );
        metadata.insert(REQUEST_SEQ_KEY, "not a number".parse().unwrap());
        assert!(context_from_metadata(&metadata).is_err());
    }

    #[test]
    fn an_unknown_read_level_or_half_a_request_id_is_refused() {
        let mut metadata = tonic::metadata::MetadataMap::new();
        metadata.insert(READ_LEVEL_KEY, "eventual".parse().unwrap());
        let refused = context_from_metadata(&metadata).expect_err("unknown level");
        assert_eq!(refused.code(), tonic::Code::InvalidArgument);
        assert!(refused.message().contains("eventual"), "{refused:?}");

        let mut metadata = tonic::metadata::MetadataMap::new();
        metadata.insert(CLIENT_ID_KEY, "c".parse().unwrap());
        assert!(
            context_from_metadata(&metadata).is_err(),
            "an id without a seq"
        );
        metadata.insert(
            CLIENT_ID_KEY,
            "c".repeat(MAX_CLIENT_ID + 1).parse().unwrap(),
        );
        metadata.insert(REQUEST_SEQ_KEY, 1.into());
        assert!(
            context_from_metadata(&metadata).is_err(),
            "a client id too long"
        );
    }
}
