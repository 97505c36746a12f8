//! How errors travel, the same for every service: a gRPC status (its code, the message and the
//! kind in `x-error-kind` metadata) and a JSON-RPC error object (its code, the message and
//! `data: {"kind": ...}`). Domain errors whose name is a gRPC code's (`NotFound`,
//! `InvalidArgument`, ...) travel as that code, other domain errors as `FAILED_PRECONDITION`;
//! their JSON-RPC code is `-32000 - tag`.

use jsonrpsee::types::{ErrorObject, ErrorObjectOwned};
use tonic::Code;

use crate::wire::error::{CallError, DomainError, Failure, Leader};

/// The gRPC metadata key that carries the error kind.
pub const ERROR_KIND_KEY: &str = "x-error-kind";

/// JSON-RPC code of a [`Failure::Transport`].
pub const TRANSPORT_CODE: i32 = -32050;
/// JSON-RPC code of a [`Failure::Redirect`].
pub const REDIRECT_CODE: i32 = -32051;
/// JSON-RPC code of a [`Failure::Deadline`].
pub const DEADLINE_CODE: i32 = -32052;
/// JSON-RPC code of a [`Failure::NoSpace`].
pub const NOSPACE_CODE: i32 = -32053;
/// JSON-RPC code of a [`Failure::Unauthenticated`].
pub const UNAUTHENTICATED_CODE: i32 = -32054;
/// JSON-RPC code of a [`Failure::PermissionDenied`].
pub const PERMISSION_DENIED_CODE: i32 = -32055;
/// JSON-RPC code of a [`Failure::Internal`] (JSON-RPC's standard "internal error").
pub const INTERNAL_CODE: i32 = -32603;
/// JSON-RPC's standard "invalid params" code, also the code of a [`Failure::Rejected`].
pub const INVALID_PARAMS_CODE: i32 = -32602;

/// JSON-RPC code of a batch with more calls than the server takes.
pub const BATCH_TOO_LARGE_CODE: i32 = jsonrpsee::types::error::TOO_BIG_BATCH_REQUEST_CODE;
/// JSON-RPC code of a batch whose answers are larger than the server sends.
pub const BATCH_RESPONSE_TOO_LARGE_CODE: i32 = jsonrpsee::types::error::TOO_BIG_BATCH_RESPONSE_CODE;

/// The JSON-RPC codes no domain error may take: the failures' codes, JSON-RPC's standard ones
/// (parse error, invalid request, method not found, invalid params, internal error) and the
/// server's batch limits.
pub const RESERVED_CODES: [i32; 13] = [
    BATCH_TOO_LARGE_CODE,
    BATCH_RESPONSE_TOO_LARGE_CODE,
    TRANSPORT_CODE,
    REDIRECT_CODE,
    DEADLINE_CODE,
    NOSPACE_CODE,
    UNAUTHENTICATED_CODE,
    PERMISSION_DENIED_CODE,
    -32700,
    -32600,
    -32601,
    INVALID_PARAMS_CODE,
    INTERNAL_CODE,
];

/// Domain error names that are gRPC codes, with their code.
const CANONICAL: &[(&str, Code)] = &[
    ("NotFound", Code::NotFound),
    ("InvalidArgument", Code::InvalidArgument),
    ("AlreadyExists", Code::AlreadyExists),
    ("PermissionDenied", Code::PermissionDenied),
    ("Unauthenticated", Code::Unauthenticated),
    ("ResourceExhausted", Code::ResourceExhausted),
    ("Aborted", Code::Aborted),
    ("OutOfRange", Code::OutOfRange),
    ("Unimplemented", Code::Unimplemented),
];

/// The gRPC code a domain error kind travels as.
pub fn grpc_code(kind: &str) -> Code {
    CANONICAL
        .iter()
        .find_map(|(name, code)| (*name == kind).then_some(*code))
        .unwrap_or(Code::FailedPrecondition)
}

/// The status an error travels as.
pub fn to_status<E: DomainError>(e: &CallError<E>) -> tonic::Status {
    let code = match e {
        CallError::Domain(domain) => grpc_code(domain.kind()),
        CallError::Failure(Failure::Transport(_) | Failure::Redirect(_)) => Code::Unavailable,
        CallError::Failure(Failure::Deadline(_)) => Code::DeadlineExceeded,
        CallError::Failure(Failure::Internal(_)) => Code::Internal,
        CallError::Failure(Failure::Rejected(_)) => Code::InvalidArgument,
        CallError::Failure(Failure::NoSpace(_)) => Code::ResourceExhausted,
        CallError::Failure(Failure::Unauthenticated(_)) => Code::Unauthenticated,
        CallError::Failure(Failure::PermissionDenied(_)) => Code::PermissionDenied,
    };
    let mut status = tonic::Status::new(code, e.message());
    status.metadata_mut().insert(
        ERROR_KIND_KEY,
        tonic::metadata::MetadataValue::from_static(e.kind()),
    );
    status
}

/// Rebuilds an error from a status: by the kind in metadata when present, else by the code (a
/// status the transport itself produced, such as a malformed argument).
pub fn from_status<E: DomainError>(status: &tonic::Status) -> CallError<E> {
    let message = status.message().to_string();
    let kind = status
        .metadata()
        .get(ERROR_KIND_KEY)
        .and_then(|v| v.to_str().ok());
    if let Some(e) = kind.and_then(|k| CallError::from_kind(k, message.clone())) {
        return e;
    }
    let canonical = CANONICAL
        .iter()
        .find_map(|(name, code)| (*code == status.code()).then_some(*name));
    if let Some(e) = canonical.and_then(|name| E::from_kind(name, message.clone())) {
        return CallError::Domain(e);
    }
    CallError::Failure(match status.code() {
        Code::Internal | Code::Unknown | Code::DataLoss => Failure::Internal(message),
        Code::DeadlineExceeded => Failure::Deadline(message),
        Code::InvalidArgument => Failure::Rejected(message),
        Code::Unauthenticated => Failure::Unauthenticated(message),
        Code::PermissionDenied => Failure::PermissionDenied(message),
        code => Failure::Transport(format!("{code:?}: {message}")),
    })
}

/// The JSON-RPC code of the domain error with `tag`: `-32000 - tag` (schema tags are at most
/// 2^29 - 1, so it never saturates in practice).
pub fn domain_code(tag: u32) -> i32 {
    i32::try_from(-32000 - i64::from(tag)).unwrap_or(i32::MIN)
}

/// The tag of the domain error a JSON-RPC code stands for, if it can stand for one.
fn domain_tag(code: i32) -> Option<u32> {
    u32::try_from(-32000 - i64::from(code)).ok()
}

/// The JSON-RPC code of an error: `-32000 - tag` for domain errors, the codes above for
/// failures.
pub fn jsonrpc_code<E: DomainError>(e: &CallError<E>) -> i32 {
    match e {
        CallError::Domain(domain) => domain_code(domain.tag()),
        CallError::Failure(Failure::Transport(_)) => TRANSPORT_CODE,
        CallError::Failure(Failure::Redirect(_)) => REDIRECT_CODE,
        CallError::Failure(Failure::Deadline(_)) => DEADLINE_CODE,
        CallError::Failure(Failure::Internal(_)) => INTERNAL_CODE,
        CallError::Failure(Failure::Rejected(_)) => INVALID_PARAMS_CODE,
        CallError::Failure(Failure::NoSpace(_)) => NOSPACE_CODE,
        CallError::Failure(Failure::Unauthenticated(_)) => UNAUTHENTICATED_CODE,
        CallError::Failure(Failure::PermissionDenied(_)) => PERMISSION_DENIED_CODE,
    }
}

/// The JSON-RPC error object of an error (`data` carries the kind).
pub fn to_error_object<E: DomainError>(e: &CallError<E>) -> ErrorObjectOwned {
    ErrorObjectOwned::owned(
        jsonrpc_code(e),
        e.message(),
        Some(serde_json::json!({ "kind": e.kind() })),
    )
}

/// Rebuilds an error from a JSON-RPC error object: by the kind in `data`, else by its code.
pub fn from_error_object<E: DomainError>(e: &ErrorObject<'_>) -> CallError<E> {
    let message = e.message().to_string();
    let kind = e
        .data()
        .and_then(|d| serde_json::from_str::<serde_json::Value>(d.get()).ok())
        .and_then(|d| d.get("kind")?.as_str().map(str::to_string));
    if let Some(err) = kind.and_then(|k| CallError::from_kind(&k, message.clone())) {
        return err;
    }
    let tag = domain_tag(e.code());
    if let Some(domain) = tag.and_then(|t| E::from_tag(t, message.clone())) {
        return CallError::Domain(domain);
    }
    CallError::Failure(match e.code() {
        REDIRECT_CODE => Failure::Redirect(Leader::parse(&message)),
        DEADLINE_CODE => Failure::Deadline(message),
        INTERNAL_CODE => Failure::Internal(message),
        INVALID_PARAMS_CODE => Failure::Rejected(message),
        NOSPACE_CODE => Failure::NoSpace(message),
        UNAUTHENTICATED_CODE => Failure::Unauthenticated(message),
        PERMISSION_DENIED_CODE => Failure::PermissionDenied(message),
        code => Failure::Transport(format!("JSON-RPC error {code}: {message}")),
    })
}

/// An "invalid params" error object.
pub fn invalid_params(reason: impl std::fmt::Display) -> ErrorObjectOwned {
    ErrorObjectOwned::owned(
        INVALID_PARAMS_CODE,
        format!("invalid params: {reason}"),
        None::<()>,
    )
}

/// The status of a failure a server answers before any service is called (a malformed call
/// context): the same form as every other error's.
pub fn failure_status(failure: Failure) -> tonic::Status {
    to_status(&CallError::<std::convert::Infallible>::Failure(failure))
}

/// The JSON-RPC error object of a failure a server answers before any service is called.
pub fn failure_error_object(failure: Failure) -> ErrorObjectOwned {
    to_error_object(&CallError::<std::convert::Infallible>::Failure(failure))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::convert::Infallible;

    #[test]
    fn a_write_refused_for_space_is_resource_exhausted_and_its_own_jsonrpc_code() {
        let e = CallError::<Infallible>::Failure(Failure::NoSpace("past the quota".into()));
        let status = to_status(&e);
        assert_eq!(status.code(), Code::ResourceExhausted);
        assert_eq!(from_status::<Infallible>(&status), e);
        let object = to_error_object(&e);
        assert_eq!(object.code(), NOSPACE_CODE);
        assert_eq!(from_error_object::<Infallible>(&object), e);
        // Without the kind (another client's error object), the code alone tells it.
        let bare = ErrorObjectOwned::owned(NOSPACE_CODE, "past the quota", None::<()>);
        assert_eq!(from_error_object::<Infallible>(&bare), e);
    }
}
