//! What every generated service shares and no schema changes: the apply context, the schema's
//! `duration`, facts about an operation, and the error for an unknown enum spelling.

use std::fmt;

/// Static facts about one operation, from the schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpInfo {
    /// The operation's name (also its JSON-RPC method name).
    pub name: &'static str,
    /// Its stable tag.
    pub tag: u32,
    /// Command or query.
    pub kind: crate::wire::CallKind,
    /// Parameter names in order (by-position calls are matched against these).
    pub params: &'static [&'static str],
    /// The roles the schema allows to call it (`any`: every authenticated caller); `admin`
    /// may call every operation.
    pub allow: &'static [&'static str],
}

/// What a command is applied with. Everything non-deterministic (time) is fixed by the
/// proposer and carried here, so that every replica applies a command identically.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApplyContext {
    /// Position of the command in the log (or a local sequence number outside Raft).
    pub index: u64,
    /// Time stamped by the leader when the command was proposed. Apply code must use
    /// this and never read the wall clock.
    pub time: ::chrono::DateTime<::chrono::Utc>,
}

/// A signed span of time (the schema's `duration`). On every wire it is a string of
/// seconds with an `s` suffix, such as `"86400s"` or `"-1.5s"` (protobuf's JSON form).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Duration(pub ::chrono::TimeDelta);

impl Duration {
    /// A duration of whole seconds.
    pub fn seconds(seconds: i64) -> Self {
        Duration(::chrono::TimeDelta::seconds(seconds))
    }
}

impl From<::chrono::TimeDelta> for Duration {
    fn from(d: ::chrono::TimeDelta) -> Self {
        Duration(d)
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = self.0;
        let sign = if d < ::chrono::TimeDelta::zero() {
            "-"
        } else {
            ""
        };
        let d = d.abs();
        let secs = d.num_seconds();
        let nanos = d.subsec_nanos();
        if nanos == 0 {
            write!(f, "{sign}{secs}s")
        } else {
            let frac = format!("{nanos:09}");
            write!(f, "{sign}{secs}.{}s", frac.trim_end_matches('0'))
        }
    }
}

/// A duration string that is not `<seconds>[.<fraction>]s`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid duration `{0}`: expected seconds with an `s` suffix, like `86400s` or `0.5s`")]
pub struct ParseDurationError(pub String);

impl std::str::FromStr for Duration {
    type Err = ParseDurationError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || ParseDurationError(s.to_string());
        let body = s.strip_suffix('s').ok_or_else(bad)?;
        let (negative, body) = match body.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, body),
        };
        let (whole, frac) = body.split_once('.').unwrap_or((body, ""));
        let digits = |t: &str| t.chars().all(|c| c.is_ascii_digit());
        if whole.is_empty() || !digits(whole) || !digits(frac) || frac.len() > 9 {
            return Err(bad());
        }
        let secs: i64 = whole.parse().map_err(|_| bad())?;
        let nanos: i64 = if frac.is_empty() {
            0
        } else {
            format!("{frac:0<9}").parse().map_err(|_| bad())?
        };
        let d = ::chrono::TimeDelta::try_seconds(secs)
            .and_then(|d| d.checked_add(&::chrono::TimeDelta::nanoseconds(nanos)))
            .ok_or_else(bad)?;
        Ok(Duration(if negative { -d } else { d }))
    }
}

impl serde::Serialize for Duration {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Duration {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// A string that names no variant of a generated enum.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{value}` is not a {type_name}; expected one of: {expected}")]
pub struct UnknownVariant {
    /// The enum's name.
    pub type_name: &'static str,
    /// What was given.
    pub value: String,
    /// The accepted spellings, comma separated.
    pub expected: &'static str,
}

/// Serializes the outcome of a call: `{"Ok": {"<operation>": value}}` or
/// `{"Err": {"kind": ..., "message": ...}}`.
pub fn encode_reply<R: serde::Serialize, E: crate::wire::error::DomainError>(
    reply: &Result<R, crate::wire::error::CallError<E>>,
) -> Vec<u8> {
    serde_json::to_vec(reply).unwrap_or_else(|e| {
        let fallback: Result<(), crate::wire::error::CallError<E>> =
            Err(crate::wire::error::Failure::Internal(format!("cannot encode reply: {e}")).into());
        serde_json::to_vec(&fallback).unwrap_or_default()
    })
}

/// The operation a serialized command names (`{"<operation>": …}`), read without decoding the
/// rest (for metrics and logs).
pub fn operation_of(command: &[u8]) -> Option<&str> {
    let rest = command.strip_prefix(b"{\"")?;
    let end = rest.iter().position(|b| *b == b'"')?;
    std::str::from_utf8(&rest[..end]).ok()
}

/// What a serialized reply says: `ok`, or the kind of its error.
pub fn outcome_of(reply: &[u8]) -> std::borrow::Cow<'_, str> {
    use std::borrow::Cow;
    #[derive(serde::Deserialize)]
    struct Kind<'a> {
        #[serde(borrow)]
        kind: Cow<'a, str>,
    }
    #[derive(serde::Deserialize)]
    enum Outcome<'a> {
        Ok(serde::de::IgnoredAny),
        #[serde(borrow)]
        Err(Kind<'a>),
    }
    if reply.starts_with(b"{\"Ok\"") {
        return Cow::Borrowed("ok");
    }
    match serde_json::from_slice::<Outcome<'_>>(reply) {
        Ok(Outcome::Ok(_)) => Cow::Borrowed("ok"),
        Ok(Outcome::Err(e)) => e.kind,
        Err(_) => Cow::Borrowed("malformed"),
    }
}

/// Parses the outcome of a call; a malformed reply is a `Transport` failure.
pub fn decode_reply<R: serde::de::DeserializeOwned, E: crate::wire::error::DomainError>(
    bytes: &[u8],
) -> Result<R, crate::wire::error::CallError<E>> {
    serde_json::from_slice::<Result<R, crate::wire::error::CallError<E>>>(bytes)
        .map_err(|e| crate::wire::error::Failure::Transport(format!("malformed reply: {e}")))?
}

/// Builds the command `{"<name>": {<arguments>}}` of an operation from JSON-RPC style
/// parameters: an object of named arguments, an array of positional ones, or nothing. Omitted
/// parameters take their defaults (the command type's serde defaults). The error says what is
/// wrong with the parameters.
pub fn command_from_params<C: serde::de::DeserializeOwned>(
    operations: &[OpInfo],
    name: &str,
    params: Option<serde_json::Value>,
) -> Result<C, String> {
    use serde_json::Value;
    let op = operations
        .iter()
        .find(|o| o.name == name)
        .ok_or_else(|| format!("unknown operation `{name}`"))?;
    let args = match params {
        None | Some(Value::Null) => serde_json::Map::new(),
        Some(Value::Object(map)) => map,
        Some(Value::Array(items)) => {
            if items.len() > op.params.len() {
                return Err(format!(
                    "`{name}` takes {} parameters, {} given",
                    op.params.len(),
                    items.len()
                ));
            }
            op.params.iter().map(|p| p.to_string()).zip(items).collect()
        }
        Some(other) => {
            return Err(format!(
                "parameters must be an object or an array, not {other}"
            ));
        }
    };
    let mut object = serde_json::Map::new();
    object.insert(name.to_string(), Value::Object(args));
    serde_json::from_value(Value::Object(object)).map_err(|e| e.to_string())
}

/// The named arguments of a command `{"<name>": {<arguments>}}` (what a JSON-RPC client sends).
pub fn command_params<C: serde::Serialize>(
    command: &C,
) -> Result<serde_json::Map<String, serde_json::Value>, crate::wire::error::Failure> {
    match serde_json::to_value(command) {
        Ok(serde_json::Value::Object(outer)) => match outer.into_iter().next() {
            Some((_, serde_json::Value::Object(args))) => Ok(args),
            _ => Ok(serde_json::Map::new()),
        },
        Ok(_) => Ok(serde_json::Map::new()),
        Err(e) => Err(crate::wire::error::Failure::Internal(format!(
            "cannot encode arguments: {e}"
        ))),
    }
}

/// Refuses an operation submitted as the other kind (a query cannot enter the log, a command
/// cannot run as a query): a `Transport` failure naming it, the same on every replica.
pub fn check_kind(
    name: &str,
    actual: crate::wire::CallKind,
    submitted: crate::wire::CallKind,
) -> Result<(), crate::wire::error::Failure> {
    let word = |kind| match kind {
        crate::wire::CallKind::Command => "command",
        crate::wire::CallKind::Query => "query",
    };
    if actual == submitted {
        Ok(())
    } else {
        Err(crate::wire::error::Failure::Transport(format!(
            "`{name}` is a {}; it cannot run as a {}",
            word(actual),
            word(submitted)
        )))
    }
}
