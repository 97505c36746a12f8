//! JSON-RPC 2.0 over HTTP (jsonrpsee): a server over any `{Service}Api`, a client implementing it,
//! and the OpenRPC document of the service.
//!
//! Method names are operation names. Parameters are named (an object) or positional (an array);
//! omitted ones take their defaults. Errors: the standard codes for parse errors, invalid
//! requests, unknown methods and invalid parameters; each schema error kind has the application
//! code `-32000 - tag` with `{"kind": "<Kind>"}` as `data`; `Transport` is `-32050` and
//! `Internal` the standard `-32603`.

use heck::ToUpperCamelCase;
use proc_macro2::TokenStream;
use quote::quote;
use serde_json::{Value, json};

use super::service_ident;
use crate::model::{Api, OpKind, Ty, TypeBody, error_code, ty_text};

pub fn module(api: &Api) -> TokenStream {
    let api_trait = service_ident(api, "Api");
    let command = service_ident(api, "Command");
    let reply = service_ident(api, "Reply");
    let event = service_ident(api, "Event");
    let call_error = service_ident(api, "CallError");
    quote! {
        //! JSON-RPC 2.0 over HTTP: a server over any API implementation and a client implementing
        //! the API. Method names are operation names; parameters are named or positional; each
        //! error kind has its own application code (`runtime::wire::codes`).

        use std::sync::Arc;

        use jsonrpsee::types::ErrorObjectOwned;

        /// The OpenRPC document of the service (also served by `rpc.discover`).
        pub const OPENRPC: &str = include_str!("../openrpc.json");

        pub use runtime::codegen::{DEADLINE_CODE, INTERNAL_CODE, REDIRECT_CODE, TRANSPORT_CODE};

        /// The JSON-RPC error object of an error (`data` carries the kind).
        pub fn error_object(e: &crate::#call_error) -> ErrorObjectOwned {
            runtime::codegen::to_error_object(e)
        }

        /// Rebuilds an error from a JSON-RPC error object.
        pub fn error_from_object(e: &jsonrpsee::types::ErrorObject<'_>) -> crate::#call_error {
            runtime::codegen::from_error_object(e)
        }

        /// The jsonrpsee module serving every operation of `api`, plus `rpc.discover`.
        pub fn rpc_module<A: crate::#api_trait + 'static>(api: Arc<A>) -> Result<jsonrpsee::RpcModule<A>, runtime::codegen::ServeError> {
            runtime::codegen::rpc_module(api, crate::OPERATIONS, OPENRPC, |api, name, args| async move {
                let command = crate::#command::from_params(name, args).map_err(runtime::codegen::invalid_params)?;
                let reply = crate::invoke(&*api, command).await.map_err(|e| error_object(&e))?;
                reply.into_value().map_err(|e| error_object(&e.into()))
            })
        }

        /// Serves `api` over JSON-RPC 2.0 on HTTP at `listener` (HTTPS when the listener has
        /// TLS) until `shutdown` resolves. Request bodies larger than `max_request_size` bytes
        /// are refused.
        pub async fn serve<A: crate::#api_trait + 'static>(
            listener: impl Into<runtime::codegen::Listener>,
            api: Arc<A>,
            max_request_size: usize,
            shutdown: impl ::std::future::Future<Output = ()> + Send,
        ) -> Result<(), runtime::codegen::ServeError> {
            let module = rpc_module(api)?;
            runtime::codegen::serve_jsonrpc(listener, module, max_request_size, shutdown).await
        }

        /// [`serve`] on a replicated node: its API, and the node's change feed as the
        /// subscription `rpc.watch` over WebSocket (one `rpc.event` notification per event, in
        /// the form of the event's `to_json`).
        pub async fn serve_node<A: crate::#api_trait + 'static>(
            listener: impl Into<runtime::codegen::Listener>,
            api: Arc<A>,
            node: Arc<runtime::codegen::RaftNode>,
            max_request_size: usize,
            shutdown: impl ::std::future::Future<Output = ()> + Send,
        ) -> Result<(), runtime::codegen::ServeError> {
            let mut module = rpc_module(api)?;
            runtime::codegen::add_jsonrpc_watch(&mut module, crate::OPERATIONS, node, |event| {
                crate::#event::from_feed(event).map(|e| e.to_json()).map_err(|e| e.to_string())
            })?;
            runtime::codegen::serve_jsonrpc(listener, module, max_request_size, shutdown).await
        }

        pub use runtime::codegen::JsonRpcClient;

        impl crate::collector::CallCommand for JsonRpcClient {
            async fn call_command(&self, command: crate::#command) -> Result<crate::#reply, crate::#call_error> {
                let (name, kind) = (command.name(), command.kind());
                let params = command.into_params()?;
                let value = self
                    .call(kind, name, params, |e| error_from_object(e).into_attempt("jsonrpc"))
                    .await?;
                Ok(crate::#reply::from_value(name, value)?)
            }
        }

    }
}

/// JSON Schema of a type expression (components are referenced by name).
fn schema_of(ty: &Ty) -> Value {
    match ty {
        Ty::Bool => json!({"type": "boolean"}),
        Ty::I32 | Ty::I64 => json!({"type": "integer"}),
        Ty::U32 | Ty::U64 => json!({"type": "integer", "minimum": 0}),
        Ty::F64 => json!({"type": "number"}),
        Ty::String => json!({"type": "string"}),
        Ty::Bytes => {
            json!({"type": "array", "items": {"type": "integer", "minimum": 0, "maximum": 255}})
        }
        Ty::Decimal => json!({"type": "string", "pattern": "^-?[0-9]+(\\.[0-9]+)?$"}),
        Ty::Date => json!({"type": "string", "format": "date"}),
        Ty::DateTime => json!({"type": "string", "format": "date-time"}),
        Ty::Duration => json!({"type": "string", "pattern": "^-?[0-9]+(\\.[0-9]{1,9})?s$"}),
        Ty::List(t) => json!({"type": "array", "items": schema_of(t)}),
        Ty::Option(t) => json!({"oneOf": [schema_of(t), {"type": "null"}]}),
        Ty::Map(t) => json!({"type": "object", "additionalProperties": schema_of(t)}),
        Ty::Named(n) => json!({"$ref": format!("#/components/schemas/{n}")}),
    }
}

/// The OpenRPC 1.2 document of the service.
pub fn openrpc(api: &Api, stamp: &str) -> String {
    let mut schemas = serde_json::Map::new();
    for t in &api.types {
        let mut schema = match &t.body {
            TypeBody::Struct(fields) => {
                let props: serde_json::Map<String, Value> = fields
                    .iter()
                    .map(|f| {
                        let mut s = schema_of(&f.ty);
                        if let (Some(doc), Some(obj)) = (&f.doc, s.as_object_mut()) {
                            obj.insert("description".into(), json!(doc));
                        }
                        (f.name.clone(), s)
                    })
                    .collect();
                let required: Vec<&str> = fields
                    .iter()
                    .filter(|f| !matches!(f.ty, Ty::Option(_)))
                    .map(|f| f.name.as_str())
                    .collect();
                json!({"type": "object", "properties": props, "required": required})
            }
            TypeBody::Enum(vs) => {
                json!({"type": "string", "enum": vs.iter().map(|v| v.name.as_str()).collect::<Vec<_>>()})
            }
        };
        if let (Some(doc), Some(obj)) = (&t.doc, schema.as_object_mut()) {
            obj.insert("description".into(), json!(doc));
        }
        schemas.insert(t.name.clone(), schema);
    }
    let errors: Vec<Value> = api
        .errors
        .iter()
        .map(|e| json!({"code": error_code(e.tag), "message": e.name, "data": {"kind": e.name}}))
        .collect();
    let methods: Vec<Value> = api
        .operations
        .iter()
        .map(|op| {
            let params: Vec<Value> = op
                .params
                .iter()
                .map(|p| {
                    let mut param = json!({
                        "name": p.name,
                        "required": p.default.is_none() && !matches!(p.ty, Ty::Option(_)),
                        "schema": schema_of(&p.ty),
                    });
                    if let Some(doc) = &p.doc {
                        param["description"] = json!(doc);
                    }
                    if p.deprecated {
                        param["deprecated"] = json!(true);
                    }
                    param
                })
                .collect();
            let result_schema = op.returns.as_ref().map(schema_of).unwrap_or(json!({"type": "null"}));
            let method_errors: Vec<Value> = op
                .errors
                .iter()
                .filter_map(|name| errors.iter().find(|e| e["message"] == json!(name)).cloned())
                .collect();
            let mut method = json!({
                "name": op.name,
                "summary": op.doc.clone().unwrap_or_default(),
                "tags": [{"name": match op.kind { OpKind::Command => "command", OpKind::Query => "query" }}],
                "paramStructure": "either",
                "params": params,
                "result": {
                    "name": format!("{}Result", op.name.to_upper_camel_case()),
                    "schema": result_schema,
                    "description": op.returns.as_ref().map(ty_text).unwrap_or_else(|| "nothing".into()),
                },
                "errors": method_errors,
            });
            if op.deprecated {
                method["deprecated"] = json!(true);
            }
            method
        })
        .collect();
    let mut methods = methods;
    if api.operations.iter().any(|o| o.kind == OpKind::Command) {
        methods.push(watch_method());
    }
    let doc = json!({
        "$comment": stamp,
        "openrpc": "1.2.6",
        "info": {
            "title": api.service,
            "version": "1.0.0",
            "description": api.doc.clone().unwrap_or_default(),
        },
        "methods": methods,
        "components": {"schemas": schemas},
    });
    let mut text = serde_json::to_string_pretty(&doc).unwrap_or_default();
    text.push('\n');
    text
}

/// `rpc.watch`, the change feed's subscription (served by replicated nodes, over WebSocket).
fn watch_method() -> Value {
    json!({
        "name": "rpc.watch",
        "summary": "Subscribe to the change feed: every command the node applies, in log order, \
                    from `from` (0: the next command), then live. One `rpc.event` notification per \
                    event ({index, operation, applied_at, command, reply}); an error (kind \
                    `compacted` with `first_available`, `too_slow`, `stopped`) closes it. End it \
                    with `rpc.unwatch`. Replicated nodes only, over WebSocket.",
        "tags": [{"name": "subscription"}],
        "paramStructure": "by-name",
        "params": [
            {"name": "from", "required": false, "schema": {"type": "integer", "minimum": 0},
             "description": "The first log index; 0 (the default) starts at the next command."},
            {"name": "operations", "required": false,
             "schema": {"type": "array", "items": {"type": "string"}},
             "description": "Only these commands (default: all)."},
            {"name": "key", "required": false, "schema": {"type": "string"},
             "description": "Only events with a watch key equal to this."},
            {"name": "key_prefix", "required": false, "schema": {"type": "string"},
             "description": "Only events with a watch key starting with this."},
        ],
        "result": {"name": "subscription", "schema": {"type": "string"},
                   "description": "The subscription id the notifications carry."},
    })
}
