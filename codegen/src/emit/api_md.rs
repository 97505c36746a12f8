//! `API.md`: the API reference a user reads instead of the schema. Per operation: its doc,
//! kind, parameters (types, defaults), return type, errors with their gRPC status and JSON-RPC
//! code, the gRPC method, the JSON-RPC method, and an example request and response; then the
//! types and the error kinds.

use std::fmt::Write as _;

use heck::ToUpperCamelCase;
use serde_json::{Value, json};

use super::grpc::package;
use crate::model::error_code;
use crate::model::{Api, DefaultValue, OpKind, Ty, TypeBody, ty_text};

/// Domain error kinds named after a gRPC code travel as that code; every other kind as
/// `FAILED_PRECONDITION`. The runtime's `codes::grpc_code` holds the same table (a test in
/// `xtask` checks that they agree).
pub const CANONICAL_STATUS: &[(&str, &str)] = &[
    ("NotFound", "NOT_FOUND"),
    ("InvalidArgument", "INVALID_ARGUMENT"),
    ("AlreadyExists", "ALREADY_EXISTS"),
    ("PermissionDenied", "PERMISSION_DENIED"),
    ("Unauthenticated", "UNAUTHENTICATED"),
    ("ResourceExhausted", "RESOURCE_EXHAUSTED"),
    ("Aborted", "ABORTED"),
    ("OutOfRange", "OUT_OF_RANGE"),
    ("Unimplemented", "UNIMPLEMENTED"),
];

/// The gRPC status a domain error kind travels as.
pub fn grpc_status(kind: &str) -> &'static str {
    CANONICAL_STATUS
        .iter()
        .find_map(|(name, status)| (*name == kind).then_some(*status))
        .unwrap_or("FAILED_PRECONDITION")
}

/// An example JSON value of `ty` (named types expanded `depth` levels deep).
fn example(api: &Api, ty: &Ty, depth: u32) -> Value {
    match ty {
        Ty::Bool => json!(true),
        Ty::I32 | Ty::I64 => json!(-1),
        Ty::U32 | Ty::U64 => json!(1),
        Ty::F64 => json!(1.5),
        Ty::String => json!("text"),
        Ty::Bytes => json!([104, 105]),
        Ty::Decimal => json!("10.00"),
        Ty::Date => json!("2024-01-31"),
        Ty::DateTime => json!("2024-01-31T12:00:00Z"),
        Ty::Duration => json!("3600s"),
        Ty::List(t) => json!([example(api, t, depth)]),
        Ty::Option(t) => example(api, t, depth),
        Ty::Map(t) => json!({ "key": example(api, t, depth) }),
        Ty::Named(name) => match api.type_decl(name).map(|t| &t.body) {
            Some(TypeBody::Enum(variants)) => {
                json!(variants.first().map_or("", |v| v.name.as_str()))
            }
            Some(TypeBody::Struct(fields)) if depth > 0 => Value::Object(
                fields
                    .iter()
                    .map(|f| (f.name.clone(), example(api, &f.ty, depth - 1)))
                    .collect(),
            ),
            _ => json!({}),
        },
    }
}

fn default_text(value: &DefaultValue) -> String {
    match value {
        DefaultValue::Bool(b) => b.to_string(),
        DefaultValue::Int(i) => i.to_string(),
        DefaultValue::Float(f) => f.to_string(),
        DefaultValue::Str(s) => format!("{s:?}"),
        DefaultValue::Decimal(d) => format!("\"{d}\""),
        DefaultValue::Variant(v) => format!("\"{v}\""),
        DefaultValue::Null => "null".into(),
    }
}

/// A cell of a Markdown table: one line, pipes escaped.
fn cell(text: &str) -> String {
    text.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .replace('|', "\\|")
}

fn kind_name(kind: OpKind) -> &'static str {
    match kind {
        OpKind::Command => "command",
        OpKind::Query => "query",
    }
}

/// The text of `API.md`, headed by `stamp` (what generated it, from which schema).
pub fn api_md(api: &Api, stamp: &str) -> String {
    let service = &api.service;
    let grpc_service = format!("{}.{service}", package(api));
    let mut out = format!(
        "<!-- {stamp} -->\n\n\
         # {service} API\n\n"
    );
    if let Some(doc) = &api.doc {
        let _ = writeln!(out, "{}\n", doc.trim());
    }
    let _ = writeln!(
        out,
        "Every operation is served over gRPC (service `{grpc_service}`, with health and \
         reflection) and over JSON-RPC 2.0 on HTTP (the method is the operation's name; \
         parameters by name). A **command** is a replicated write: it goes through the Raft log \
         and is applied on every replica, at most once per request id. A **query** never enters \
         the log.\n\n\
         Besides the errors listed per operation, any call can fail with a built-in failure: \
         `Transport` (gRPC `UNAVAILABLE`, JSON-RPC -32050), `Redirect` (`UNAVAILABLE`, -32051), \
         `Deadline` (`DEADLINE_EXCEEDED`, -32052), `Rejected` (`INVALID_ARGUMENT`, -32602), \
         `NoSpace` (`RESOURCE_EXHAUSTED`, -32053: a command refused because the node's storage is \
         past its quota or its disk is full; nothing was written, queries go on), \
         `Unauthenticated` (`UNAUTHENTICATED`, -32054: no token, or one the cluster does not know, \
         on a node started with `--auth`), `PermissionDenied` (`PERMISSION_DENIED`, -32055: the \
         caller's roles do not allow the operation) or \
         `Internal` (`INTERNAL`, -32603).\n"
    );
    if !api.roles.is_empty() {
        let _ = writeln!(
            out,
            "## Roles\n\nWho may call what: each operation names the roles allowed to call it \
             (`admin` may call every one).\n"
        );
        for role in &api.roles {
            let doc = role.doc.as_deref().map(str::trim).unwrap_or_default();
            let _ = writeln!(out, "- `{}`: {doc}", role.name);
        }
        out.push('\n');
    }
    let _ = writeln!(out, "## Operations\n");
    for op in &api.operations {
        let _ = writeln!(
            out,
            "- [`{}`](#{}) ({})",
            op.name,
            op.name,
            kind_name(op.kind)
        );
    }
    out.push('\n');
    for op in &api.operations {
        let method = op.name.to_upper_camel_case();
        let _ = writeln!(out, "### {}\n", op.name);
        let _ = writeln!(
            out,
            "{} · tag {} · gRPC `/{grpc_service}/{method}` · JSON-RPC `{}`\n",
            kind_name(op.kind),
            op.tag,
            op.name
        );
        let _ = writeln!(out, "Allowed: {}.\n", op.allowed());
        if op.deprecated {
            let _ = writeln!(out, "**Deprecated**: still served; move callers off it.\n");
        }
        if let Some(doc) = &op.doc {
            let _ = writeln!(out, "{}\n", doc.trim());
        }
        if !op.watch_keys.is_empty() {
            let keys: Vec<String> = op.watch_keys.iter().map(|k| format!("`{k}`")).collect();
            let _ = writeln!(
                out,
                "Watch keys: {} (see [Watching changes](#watching-changes)).\n",
                keys.join(", ")
            );
        }
        if op.params.is_empty() {
            let _ = writeln!(out, "No parameters.\n");
        } else {
            let _ = writeln!(out, "| parameter | type | default | description |");
            let _ = writeln!(out, "|---|---|---|---|");
            for p in &op.params {
                let default = match (&p.default, &p.ty) {
                    (Some(d), _) => format!("`{}`", default_text(d)),
                    (None, Ty::Option(_)) => "`null`".into(),
                    (None, _) => "required".into(),
                };
                let _ = writeln!(
                    out,
                    "| `{}` | `{}` | {default} | {}{} |",
                    p.name,
                    ty_text(&p.ty),
                    if p.deprecated { "**Deprecated.** " } else { "" },
                    cell(p.doc.as_deref().unwrap_or(""))
                );
            }
            out.push('\n');
        }
        let _ = writeln!(
            out,
            "Returns: {}.\n",
            op.returns
                .as_ref()
                .map_or_else(|| "nothing".to_string(), |t| format!("`{}`", ty_text(t)))
        );
        if !op.errors.is_empty() {
            let _ = writeln!(out, "| error | gRPC status | JSON-RPC code |");
            let _ = writeln!(out, "|---|---|---|");
            for name in &op.errors {
                if let Some(e) = api.errors.iter().find(|e| e.name == *name) {
                    let _ = writeln!(
                        out,
                        "| `{name}` | `{}` | {} |",
                        grpc_status(name),
                        error_code(e.tag)
                    );
                }
            }
            out.push('\n');
        }
        let params: serde_json::Map<String, Value> = op
            .params
            .iter()
            .map(|p| (p.name.clone(), example(api, &p.ty, 2)))
            .collect();
        let request = json!({"jsonrpc": "2.0", "id": 1, "method": op.name, "params": params});
        let result = op
            .returns
            .as_ref()
            .map_or(Value::Null, |t| example(api, t, 2));
        let response = json!({"jsonrpc": "2.0", "id": 1, "result": result});
        let _ = writeln!(
            out,
            "Example (JSON-RPC):\n\n```json\n{}\n```\n\n```json\n{}\n```\n",
            serde_json::to_string(&request).unwrap_or_default(),
            serde_json::to_string(&response).unwrap_or_default()
        );
    }
    if api.operations.iter().any(|o| o.kind == OpKind::Command) {
        watching(&mut out, service, &package(api));
    }
    if !api.types.is_empty() {
        let _ = writeln!(out, "## Types\n");
    }
    for t in &api.types {
        let _ = writeln!(out, "### {}\n", t.name);
        if let Some(doc) = &t.doc {
            let _ = writeln!(out, "{}\n", doc.trim());
        }
        match &t.body {
            TypeBody::Struct(fields) => {
                let _ = writeln!(out, "| field | type | tag | description |");
                let _ = writeln!(out, "|---|---|---|---|");
                for f in fields {
                    let _ = writeln!(
                        out,
                        "| `{}` | `{}` | {} | {}{} |",
                        f.name,
                        ty_text(&f.ty),
                        f.tag,
                        if f.deprecated { "**Deprecated.** " } else { "" },
                        cell(f.doc.as_deref().unwrap_or(""))
                    );
                }
            }
            TypeBody::Enum(variants) => {
                let _ = writeln!(out, "| variant | tag | description |");
                let _ = writeln!(out, "|---|---|---|");
                for v in variants {
                    let _ = writeln!(
                        out,
                        "| `{}` | {} | {} |",
                        v.name,
                        v.tag,
                        cell(v.doc.as_deref().unwrap_or(""))
                    );
                }
            }
        }
        out.push('\n');
    }
    if !api.errors.is_empty() {
        let _ = writeln!(out, "## Errors\n");
        let _ = writeln!(
            out,
            "| error | tag | gRPC status | JSON-RPC code | description |"
        );
        let _ = writeln!(out, "|---|---|---|---|---|");
        for e in &api.errors {
            let _ = writeln!(
                out,
                "| `{}` | {} | `{}` | {} | {} |",
                e.name,
                e.tag,
                grpc_status(&e.name),
                error_code(e.tag),
                cell(e.doc.as_deref().unwrap_or(""))
            );
        }
    }
    while out.ends_with("\n\n") {
        out.pop();
    }
    out
}

/// The "Watching changes" section: the change feed of a replicated node on both wires.
fn watching(out: &mut String, service: &str, package: &str) {
    let _ = writeln!(
        out,
        "## Watching changes\n\n\
         A replicated node serves its change feed: every command it applies, in log order, from \
         a log index (0: the next command), then live; no gap, no duplicate. Any node serves it \
         (a follower serves what it has applied). Filters: a list of operations, and a key \
         (exact or prefix) matched against the operations' watch keys.\n\n\
         - **gRPC**: `/{package}.{service}Watch/Watch`, request `{service}WatchRequest` \
         (`from_index`, `operations`, `key`, `key_prefix`), a stream of `{service}Event` \
         (`index`, `operation`, `applied_at`, the typed `command` and a `reply` or `error`). A \
         position older than the node keeps ends the stream with `OUT_OF_RANGE` and the \
         trailers `x-watch-error: compacted`, `x-first-available: N`; a reader that falls behind \
         by the node's whole buffer for its stall limit gets `RESOURCE_EXHAUSTED` \
         (`too_slow`); a stopping node ends it with `UNAVAILABLE` (`stopped`). Resume from the \
         last index received plus one.\n\
         - **JSON-RPC** (WebSocket on the JSON-RPC port): subscribe with `rpc.watch` \
         (`{{\"from\":N,\"operations\":[…],\"key\":…,\"key_prefix\":…}}`, all optional; an \
         unknown operation is -32602), then one `rpc.event` notification per event; end with \
         `rpc.unwatch`. An error closes the subscription with a notification carrying `error`: \
         `{{\"kind\":\"compacted\",\"message\":…,\"first_available\":N}}`.\n\n\
         An event as JSON (`rpc.event`'s `result`, `call watch --json`):\n\n\
         ```json\n\
         {{\"index\":42,\"operation\":\"…\",\"applied_at\":\"2026-01-02T03:04:05.000000Z\",\
         \"command\":{{…arguments…}},\"reply\":{{\"ok\":…}}}}\n\
         ```\n\n\
         A refused command is an event too: `\"reply\":{{\"error\":{{\"kind\":…,\"message\":…}}}}`.\n"
    );
}
