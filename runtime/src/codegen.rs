//! The runtime as generated code sees it: every item a generated crate names, in one flat
//! module. Generated code imports only `runtime::codegen::…`, so the runtime's modules can move
//! without regenerating any service; a move changes the `pub use` lines below and nothing else.
//!
//! Applications do not need this module: they use the generated crate (which re-exports what its
//! types need) and the runtime's own modules.

pub use crate::api::client::{Attempt, GrpcClient, JsonRpcClient};
pub use crate::api::local::{Direct, LocalDb, LocalSink};
pub use crate::api::server::{
    Listener, MAX_API_MESSAGE, ServeError, rpc_module, serve_grpc, serve_grpc_with, serve_jsonrpc,
};
pub use crate::api::sink::{Collector, CommandSink, RaftSink};
pub use crate::api::watch::{
    GrpcFeed, Indexed, WatchTarget, add_jsonrpc_watch, decode_feed, filter_for, grpc_feed,
    refused_watch, resuming_watch, watch_status,
};
pub use crate::cli::{
    Call, OpSpec, Output, ParamSpec, Transport, WatchCall, Wire, clap, command as cli_command,
    run_blocking,
};
pub use crate::ops::host::{HostedService, Protocol, Serving, Shutdown, run as run_host};
pub use crate::raft::feed::{Event, WatchError, WatchFilter, WatchInfo, WatchStream};
pub use crate::raft::node::RaftNode;
pub use crate::raft::state_machine::Application;
pub use crate::raft::types::Applied;
pub use crate::raft::version::Schema;
pub use crate::wire::CallKind;
pub use crate::wire::call::{
    ReadLevel, Token, context_from_metadata, insert_token, token_from_metadata, with_context,
};
pub use crate::wire::codes::{
    DEADLINE_CODE, ERROR_KIND_KEY, INTERNAL_CODE, REDIRECT_CODE, TRANSPORT_CODE, failure_status,
    from_error_object, from_status, invalid_params, to_error_object, to_status,
};
pub use crate::wire::error::{CallError, DomainError, Failure, ServiceError};
pub use crate::wire::scalar::{date_from, datetime_from, decimal_from, duration_from};
pub use crate::wire::service::{
    ApplyContext, Duration, OpInfo, ParseDurationError, UnknownVariant, check_kind,
    command_from_params, command_params, decode_reply, encode_reply,
};
pub use futures_util::Stream;
pub use rusqlite;
