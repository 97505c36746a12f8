//! The transport-independent layers: types, errors, the two traits, the command and reply enums,
//! the Collector and the Dispatcher.

use heck::ToUpperCamelCase;
use proc_macro2::{Literal, TokenStream};
use quote::{format_ident, quote};

use super::{default_expr, doc, doc_str, ident, return_ty, rust_ty, service_ident};
use crate::model::{Api, OpKind, Operation, Ty, TypeBody};

pub(super) fn types(api: &Api) -> TokenStream {
    let decls = api.types.iter().map(|t| {
        let name = ident(&t.name);
        let docs = doc(t.doc.as_deref());
        match &t.body {
            TypeBody::Struct(fields) => {
                let fields = fields.iter().map(|f| {
                    let fname = ident(&f.name);
                    let ty = rust_ty(&f.ty);
                    let fdoc = doc(f.doc.as_deref());
                    let attrs = match f.ty {
                        Ty::Option(_) => quote!(#[serde(default, skip_serializing_if = "Option::is_none")]),
                        _ => quote!(),
                    };
                    quote! { #fdoc #attrs pub #fname: #ty, }
                });
                quote! {
                    #docs
                    #[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
                    pub struct #name { #(#fields)* }
                }
            }
            TypeBody::Enum(variants) => {
                let vnames: Vec<_> = variants.iter().map(|v| ident(&v.name.to_upper_camel_case())).collect();
                let wire: Vec<&str> = variants.iter().map(|v| v.name.as_str()).collect();
                let tags: Vec<Literal> = variants.iter().map(|v| Literal::u32_unsuffixed(v.tag)).collect();
                let vdocs = variants.iter().map(|v| doc(v.doc.as_deref()));
                let type_name = &t.name;
                let expected = wire.join(", ");
                quote! {
                    #docs
                    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
                    pub enum #name {
                        #( #vdocs #[serde(rename = #wire)] #vnames, )*
                    }

                    impl #name {
                        /// Every variant, in schema order.
                        pub const ALL: &'static [#name] = &[#(#name::#vnames),*];

                        /// The wire name of the variant.
                        pub fn as_str(&self) -> &'static str {
                            match self { #( #name::#vnames => #wire, )* }
                        }

                        /// The stable tag of the variant.
                        pub fn tag(&self) -> u32 {
                            match self { #( #name::#vnames => #tags, )* }
                        }

                        /// The variant with this tag.
                        pub fn from_tag(tag: u32) -> Option<Self> {
                            match tag { #( #tags => Some(#name::#vnames), )* _ => None }
                        }
                    }

                    impl std::fmt::Display for #name {
                        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                            f.write_str(self.as_str())
                        }
                    }

                    impl std::str::FromStr for #name {
                        type Err = crate::UnknownVariant;
                        fn from_str(s: &str) -> Result<Self, Self::Err> {
                            match s {
                                #( #wire => Ok(#name::#vnames), )*
                                _ => Err(crate::UnknownVariant { type_name: #type_name, value: s.to_string(), expected: #expected }),
                            }
                        }
                    }
                }
            }
        }
    });

    let error = service_ident(api, "Error");
    let enames: Vec<_> = api.errors.iter().map(|e| ident(&e.name)).collect();
    let ekinds: Vec<&str> = api.errors.iter().map(|e| e.name.as_str()).collect();
    let etags: Vec<Literal> = api
        .errors
        .iter()
        .map(|e| Literal::u32_unsuffixed(e.tag))
        .collect();
    let edocs = api.errors.iter().map(|e| doc(e.doc.as_deref()));
    let efmt = ekinds.iter().map(|k| format!("{k}: {{0}}"));
    let call_error = service_ident(api, "CallError");
    let service_error = service_ident(api, "ServiceError");
    let error_doc = doc_str(&format!(
        "The refusals a `{s}` operation can answer: the schema's error kinds. A service method \
         fails with a [`{s}ServiceError`] (one of these, or a fault of the machine); a call fails \
         with a [`{s}CallError`] (one of these, or a call failure).",
        s = api.service
    ));
    let call_error_doc = doc_str(&format!(
        "How a call to a `{s}` operation fails: the service refused it with a [`{s}Error`], or \
         the call failed on its way (transport, redirect, deadline, internal).",
        s = api.service
    ));
    let service_error_doc = doc_str(&format!(
        "How a `{s}Service` method fails: a [`{s}Error`] (rolled back and answered), or a fault \
         of the machine (the replica stops rather than diverge).",
        s = api.service
    ));
    let defaults = api.operations.iter().flat_map(|o| {
        o.params.iter().filter_map(move |p| {
            let value = p.default.as_ref()?;
            let fname = format_ident!("{}_{}", o.name, p.name);
            let ty = rust_ty(&p.ty);
            let expr = default_expr(value, &p.ty);
            let d = doc_str(&format!("Default of `{}` in `{}`.", p.name, o.name));
            let is_fname = format_ident!("is_{}_{}", o.name, p.name);
            let is_d = doc_str(&format!(
                "Whether `{}` in `{}` is its default (then it is left out of the serialized command).",
                p.name, o.name
            ));
            Some(quote! {
                #d pub fn #fname() -> #ty { #expr }
                #is_d pub fn #is_fname(value: &#ty) -> bool { *value == #fname() }
            })
        })
    });

    quote! {
        //! The service's types and its error type.

        #(#decls)*

        #error_doc
        #[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
        pub enum #error {
            #( #edocs #[error(#efmt)] #enames(String), )*
        }

        impl #error {
            /// The kind's name, as written in the schema.
            pub fn kind(&self) -> &'static str {
                match self {
                    #( #error::#enames(_) => #ekinds, )*
                }
            }

            /// The human-readable message.
            pub fn message(&self) -> &str {
                match self {
                    #( #error::#enames(m) )|* => m,
                }
            }

            /// The kind's stable tag in the schema.
            pub fn tag(&self) -> u32 {
                match self {
                    #( #error::#enames(_) => #etags, )*
                }
            }
        }

        impl runtime::codegen::DomainError for #error {
            fn kind(&self) -> &'static str {
                #error::kind(self)
            }

            fn message(&self) -> &str {
                #error::message(self)
            }

            fn from_kind(kind: &str, message: String) -> Option<Self> {
                match kind {
                    #( #ekinds => Some(#error::#enames(message)), )*
                    _ => None,
                }
            }

            fn tag(&self) -> u32 {
                #error::tag(self)
            }

            fn from_tag(tag: u32, message: String) -> Option<Self> {
                match tag {
                    #( #etags => Some(#error::#enames(message)), )*
                    _ => None,
                }
            }
        }

        #call_error_doc
        pub type #call_error = runtime::codegen::CallError<#error>;

        #service_error_doc
        pub type #service_error = runtime::codegen::ServiceError<#error>;

        impl From<#error> for #call_error {
            fn from(e: #error) -> Self {
                runtime::codegen::CallError::Domain(e)
            }
        }

        /// Defaults of operation parameters, used when a caller omits them.
        pub mod defaults {
            #(#defaults)*
        }
    }
}

/// The parameters of an operation as `name: Type` pairs.
pub(super) fn params(op: &Operation) -> Vec<TokenStream> {
    op.params
        .iter()
        .map(|p| {
            let n = ident(&p.name);
            let t = rust_ty(&p.ty);
            quote!(#n: #t)
        })
        .collect()
}

pub(super) fn param_names(op: &Operation) -> Vec<proc_macro2::Ident> {
    op.params.iter().map(|p| ident(&p.name)).collect()
}

fn op_doc(op: &Operation) -> TokenStream {
    let mut text = op.doc.clone().unwrap_or_default();
    if !op.errors.is_empty() {
        if !text.is_empty() {
            text.push_str("\n\n");
        }
        text.push_str(&format!(
            "Errors: {}.",
            op.errors
                .iter()
                .map(|e| format!("`{e}`"))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    doc(Some(&text).filter(|t| !t.is_empty()).map(|t| t.as_str()))
}

/// `#[deprecated]` for a client method of a deprecated operation.
fn deprecated_attr(op: &crate::model::Operation) -> TokenStream {
    if op.deprecated {
        let note = format!("`{}` is deprecated in the schema", op.name);
        quote!(#[deprecated(note = #note)])
    } else {
        TokenStream::new()
    }
}

pub(super) fn traits(api: &Api) -> TokenStream {
    let api_trait = service_ident(api, "Api");
    let service_trait = service_ident(api, "Service");
    let call_error = service_ident(api, "CallError");
    let service_error = service_ident(api, "ServiceError");
    let client_methods = api.operations.iter().map(|op| {
        let name = ident(&op.name);
        let ps = params(op);
        let ret = return_ty(op.returns.as_ref());
        let d = op_doc(op);
        let deprecated = deprecated_attr(op);
        quote! {
            #d
            #deprecated
            fn #name(&self, #(#ps),*) -> impl ::std::future::Future<Output = Result<#ret, crate::#call_error>> + Send;
        }
    });
    let server_methods = api.operations.iter().map(|op| {
        let name = ident(&op.name);
        let ps = params(op);
        let ret = return_ty(op.returns.as_ref());
        let d = op_doc(op);
        match op.kind {
            OpKind::Command => quote! {
                #d
                fn #name(&mut self, ctx: &crate::ApplyContext, #(#ps),*) -> Result<#ret, crate::#service_error>;
            },
            OpKind::Query => quote! {
                #d
                fn #name(&self, #(#ps),*) -> Result<#ret, crate::#service_error>;
            },
        }
    });
    let forward_methods = api.operations.iter().map(|op| {
        let name = ident(&op.name);
        let ps = params(op);
        let names = param_names(op);
        let ret = return_ty(op.returns.as_ref());
        quote! {
            fn #name(&self, #(#ps),*) -> impl ::std::future::Future<Output = Result<#ret, crate::#call_error>> + Send {
                (**self).#name(#(#names),*)
            }
        }
    });
    let dyn_trait = format_ident!("Dyn{}Api", api.service);
    let dyn_methods = api.operations.iter().map(|op| {
        let name = ident(&op.name);
        let ps = params(op);
        let ret = return_ty(op.returns.as_ref());
        let d = op_doc(op);
        let deprecated = deprecated_attr(op);
        quote! {
            #d
            #deprecated
            fn #name(&self, #(#ps),*) -> ::std::pin::Pin<Box<dyn ::std::future::Future<Output = Result<#ret, crate::#call_error>> + Send + '_>>;
        }
    });
    let boxing_methods = api.operations.iter().map(|op| {
        let name = ident(&op.name);
        let ps = params(op);
        let names = param_names(op);
        let ret = return_ty(op.returns.as_ref());
        quote! {
            fn #name(&self, #(#ps),*) -> ::std::pin::Pin<Box<dyn ::std::future::Future<Output = Result<#ret, crate::#call_error>> + Send + '_>> {
                Box::pin(#api_trait::#name(self, #(#names),*))
            }
        }
    });
    let unboxing_methods = api.operations.iter().map(|op| {
        let name = ident(&op.name);
        let ps = params(op);
        let names = param_names(op);
        let ret = return_ty(op.returns.as_ref());
        quote! {
            fn #name(&self, #(#ps),*) -> impl ::std::future::Future<Output = Result<#ret, crate::#call_error>> + Send {
                #dyn_trait::#name(self, #(#names),*)
            }
        }
    });
    let dyn_doc = doc_str(&format!(
        "`{s}Api` as a trait object, for code that picks a client at run time: every `{s}Api` is \
         one, and `dyn {dyn}` (so `Arc<dyn {dyn}>`) is a `{s}Api` again.",
        s = api.service,
        dyn = dyn_trait
    ));
    let api_doc = doc_str(&format!(
        "The `{s}` API as a client sees it: one async method per operation. Implemented in-process, \
         by the `Collector`, and by every transport's client, so one validator can drive them all.",
        s = api.service
    ));
    let service_doc = doc_str(&format!(
        "The `{s}` service as the application implements it. Commands get mutable state and an \
         [`ApplyContext`](crate::ApplyContext) and must be deterministic: same state + same command + \
         same context = same result on every replica. Queries get read-only state. A command that \
         returns an error must leave the state unchanged (the caller rolls back its transaction).",
        s = api.service
    ));
    quote! {
        //! The client-side and server-side traits.

        #api_doc
        pub trait #api_trait: Send + Sync {
            #(#client_methods)*
        }

        /// A shared API is an API: clients can share one implementation.
        impl<T: #api_trait + ?Sized> #api_trait for ::std::sync::Arc<T> {
            #(#forward_methods)*
        }

        #dyn_doc
        pub trait #dyn_trait: Send + Sync {
            #(#dyn_methods)*
        }

        impl<T: #api_trait> #dyn_trait for T {
            #(#boxing_methods)*
        }

        impl #api_trait for dyn #dyn_trait {
            #(#unboxing_methods)*
        }

        #service_doc
        pub trait #service_trait {
            #(#server_methods)*
        }
    }
}

pub(super) fn command(api: &Api) -> TokenStream {
    let command = service_ident(api, "Command");
    let event = service_ident(api, "Event");
    let event_doc = doc_str(
        "One command a node applied, from its change feed (`watch` on every wire): in log order, \
         each once. A refused command is an event too; its `reply` is the domain error.",
    );
    let reply = service_ident(api, "Reply");
    let call_error = service_ident(api, "CallError");
    let variants: Vec<_> = api.operations.iter().map(|o| ident(&o.variant())).collect();
    let wire: Vec<&str> = api.operations.iter().map(|o| o.name.as_str()).collect();
    let tags: Vec<Literal> = api
        .operations
        .iter()
        .map(|o| Literal::u32_unsuffixed(o.tag))
        .collect();
    let kinds: Vec<TokenStream> = api
        .operations
        .iter()
        .map(|o| match o.kind {
            OpKind::Command => quote!(runtime::codegen::CallKind::Command),
            OpKind::Query => quote!(runtime::codegen::CallKind::Query),
        })
        .collect();
    let param_lists: Vec<TokenStream> = api
        .operations
        .iter()
        .map(|o| {
            let names = o.params.iter().map(|p| p.name.as_str());
            quote!(&[#(#names),*])
        })
        .collect();
    let allow_lists: Vec<TokenStream> = api
        .operations
        .iter()
        .map(|o| {
            let roles = o.allow.iter().map(String::as_str);
            quote!(&[#(#roles),*])
        })
        .collect();
    let schema_version = crate::lock::Lock::of(api).version();
    let api_trait = service_ident(api, "Api");
    let invoke_arms = api.operations.iter().map(|op| {
        let v = ident(&op.variant());
        let name = ident(&op.name);
        let names = param_names(op);
        quote!(#command::#v { #(#names),* } => api.#name(#(#names),*).await.map(#reply::#v),)
    });
    let value_arms = api.operations.iter().map(|op| {
        let v = ident(&op.variant());
        quote!(#reply::#v(v) => serde_json::to_value(v),)
    });
    let command_variants = api.operations.iter().map(|op| {
        let v = ident(&op.variant());
        let w = &op.name;
        let d = doc_str(&format!("`{}`", op.name));
        let fields = op.params.iter().map(|p| {
            let n = ident(&p.name);
            let t = rust_ty(&p.ty);
            // A parameter at its default is left out, so that a command encodes the same
            // before and after a defaulted parameter is added (a replica that does not know
            // the parameter yet can apply it; see `runtime::raft::version`).
            let attr = if p.default.is_some() {
                let path = format!("crate::defaults::{}_{}", op.name, p.name);
                let is_default = format!("crate::defaults::is_{}_{}", op.name, p.name);
                quote!(#[serde(default = #path, skip_serializing_if = #is_default)])
            } else if matches!(p.ty, Ty::Option(_)) {
                quote!(#[serde(default, skip_serializing_if = "Option::is_none")])
            } else {
                quote!()
            };
            quote!(#attr #n: #t)
        });
        quote! { #d #[serde(rename = #w)] #v { #(#fields),* } }
    });
    let reply_variants = api.operations.iter().map(|op| {
        let v = ident(&op.variant());
        let w = &op.name;
        let t = return_ty(op.returns.as_ref());
        quote! { #[serde(rename = #w)] #v(#t) }
    });
    // Each operation's watch keys, as strings (see `watch_keys` in the schema).
    let watch_key_arms = api.operations.iter().map(|op| {
        let v = ident(&op.variant());
        let keys: Vec<_> = op.watch_keys.iter().map(|k| ident(k)).collect();
        if keys.is_empty() {
            quote! { #command::#v { .. } => Vec::new(), }
        } else {
            quote! { #command::#v { #(#keys,)* .. } => vec![#(#keys.to_string()),*], }
        }
    });
    // Examples from the schema itself: its first operation, its first error kind.
    let example_op = api.operations.first();
    let example_name = example_op.map_or("operation", |o| o.name.as_str());
    let example_args = example_op
        .map(|o| {
            o.params
                .iter()
                .map(|p| format!("\"{}\":…", p.name))
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default();
    let example_kind = api.errors.first().map_or("Transport", |e| e.name.as_str());
    let command_doc = doc_str(&format!(
        "One call of a `{s}` operation with its arguments: the payload of a Raft log entry.\n\n\
         Serialized form (stable, documented): UTF-8 JSON of an object with one key, the operation \
         name, whose value is an object of the named arguments; e.g. \
         `{{\"{example_name}\":{{{example_args}}}}}`. Decimals, dates, datetimes \
         (RFC 3339, UTC) and durations (`\"86400s\"`) are strings. Adding an operation, or a parameter \
         with a default, keeps every existing entry decodable.",
        s = api.service
    ));
    let reply_doc = doc_str(&format!(
        "The successful answer to a `{s}Command`: one variant per operation. On the wire a reply is \
         `Result<{s}Reply, {s}CallError>` as JSON: `{{\"Ok\":{{\"{example_name}\":…}}}}` or \
         `{{\"Err\":{{\"kind\":\"{example_kind}\",\"message\":\"…\"}}}}`.",
        s = api.service
    ));
    let encode_doc = doc_str(&format!(
        "Serializes the outcome of a call (see [`{}Reply`]).",
        api.service
    ));
    quote! {
        //! The serialized form of every call and of every answer.

        /// The schema's version: a hash of its compatibility lock (every operation, type,
        /// field, variant and error with its tag, kind and type). Nodes advertise it.
        pub const SCHEMA_VERSION: &str = #schema_version;

        /// Every operation of the service, in schema order.
        pub const OPERATIONS: &[crate::OpInfo] = &[
            #( crate::OpInfo { name: #wire, tag: #tags, kind: #kinds, params: #param_lists, allow: #allow_lists }, )*
        ];

        #command_doc
        #[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        pub enum #command {
            #(#command_variants,)*
        }

        impl #command {
            /// The operation's name.
            pub fn name(&self) -> &'static str {
                match self { #( #command::#variants { .. } => #wire, )* }
            }

            /// The operation's stable tag.
            pub fn tag(&self) -> u32 {
                match self { #( #command::#variants { .. } => #tags, )* }
            }

            /// Command (goes through the log) or query.
            pub fn kind(&self) -> runtime::codegen::CallKind {
                match self { #( #command::#variants { .. } => #kinds, )* }
            }

            /// The values of the operation's watch keys (the schema's `watch_keys`), which a
            /// watcher can filter its events on.
            pub fn watch_keys(&self) -> Vec<String> {
                match self { #(#watch_key_arms)* }
            }

            /// The serialized form (see the type's documentation).
            pub fn encode(&self) -> Result<Vec<u8>, runtime::codegen::Failure> {
                serde_json::to_vec(self).map_err(|e| runtime::codegen::Failure::Internal(format!("cannot encode command: {e}")))
            }

            /// Parses a call submitted as `kind`; a malformed command, or one of the other kind,
            /// is a `Transport` failure.
            pub fn decode_as(bytes: &[u8], kind: runtime::codegen::CallKind) -> Result<Self, runtime::codegen::Failure> {
                let command = Self::decode(bytes)?;
                runtime::codegen::check_kind(command.name(), command.kind(), kind)?;
                Ok(command)
            }

            /// Parses the serialized form; a malformed command is a `Transport` error.
            pub fn decode(bytes: &[u8]) -> Result<Self, runtime::codegen::Failure> {
                serde_json::from_slice(bytes).map_err(|e| runtime::codegen::Failure::Transport(format!("malformed command: {e}")))
            }
        }

        #reply_doc
        #[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
        pub enum #reply {
            #(#reply_variants,)*
        }

        impl #reply {
            /// The name of the operation this answers.
            pub fn name(&self) -> &'static str {
                match self { #( #reply::#variants(_) => #wire, )* }
            }

            /// The result value alone, as JSON (what JSON-RPC returns).
            pub fn into_value(self) -> Result<serde_json::Value, runtime::codegen::Failure> {
                match self { #(#value_arms)* }
                    .map_err(|e| runtime::codegen::Failure::Internal(format!("cannot encode result: {e}")))
            }

            /// Rebuilds a reply from the operation's name and its result value.
            pub fn from_value(name: &str, value: serde_json::Value) -> Result<Self, runtime::codegen::Failure> {
                let mut object = serde_json::Map::new();
                object.insert(name.to_string(), value);
                serde_json::from_value(serde_json::Value::Object(object))
                    .map_err(|e| runtime::codegen::Failure::Transport(format!("malformed result of `{name}`: {e}")))
            }
        }

        impl #command {
            /// Builds a command from an operation name and JSON-RPC style parameters: an object of
            /// named arguments, an array of positional ones, or nothing. Omitted parameters take
            /// their defaults. The error says what is wrong with the parameters.
            pub fn from_params(name: &str, params: Option<serde_json::Value>) -> Result<Self, String> {
                runtime::codegen::command_from_params(OPERATIONS, name, params)
            }

            /// The named arguments as a JSON object (what a JSON-RPC client sends).
            pub fn into_params(self) -> Result<serde_json::Map<String, serde_json::Value>, runtime::codegen::Failure> {
                runtime::codegen::command_params(&self)
            }
        }

        /// Calls the operation a command names on any API implementation (how servers that
        /// receive commands or their parameters reach the service).
        pub async fn invoke<A: crate::#api_trait + ?Sized>(api: &A, command: #command) -> Result<#reply, crate::#call_error> {
            match command {
                #(#invoke_arms)*
            }
        }

        #encode_doc
        pub fn encode_reply(reply: &Result<#reply, crate::#call_error>) -> Vec<u8> {
            runtime::codegen::encode_reply(reply)
        }

        /// A failure of the runtime (transport, redirect, node) as a serialized `Err` reply.
        pub fn encode_failure(failure: &runtime::codegen::Failure) -> Vec<u8> {
            encode_reply(&Err(failure.clone().into()))
        }

        /// Parses the outcome of a call; a malformed reply is a `Transport` error.
        pub fn decode_reply(bytes: &[u8]) -> Result<#reply, crate::#call_error> {
            runtime::codegen::decode_reply(bytes)
        }

        #event_doc
        #[derive(Debug, Clone, PartialEq)]
        pub struct #event {
            /// Its position in the log.
            pub index: u64,
            /// The leader's time when it was proposed (the command's "now").
            pub applied_at: ::chrono::DateTime<::chrono::Utc>,
            /// The command with its arguments.
            pub command: #command,
            /// What it answered: its value, or the domain error it was refused with.
            pub reply: Result<#reply, crate::#call_error>,
        }

        impl #event {
            /// Decodes an event of a node's feed.
            pub fn from_feed(event: &runtime::codegen::Event) -> Result<Self, runtime::codegen::Failure> {
                Ok(#event {
                    index: event.index,
                    applied_at: ::chrono::DateTime::from_timestamp_micros(event.time_us).unwrap_or_default(),
                    command: #command::decode(&event.command)?,
                    reply: decode_reply(&event.reply),
                })
            }

            /// The operation's name.
            pub fn operation(&self) -> &'static str {
                self.command.name()
            }

            /// The event as JSON, the form of the JSON-RPC subscription and of `call watch --json`:
            /// `{"index":…,"operation":…,"applied_at":…,"command":{…arguments…},"reply":{"ok":…}}`,
            /// or `"reply":{"error":{"kind":…,"message":…}}` for a refused command.
            pub fn to_json(&self) -> serde_json::Value {
                let arguments = match serde_json::to_value(&self.command) {
                    Ok(serde_json::Value::Object(mut m)) => m.remove(self.operation()).unwrap_or_default(),
                    _ => serde_json::Value::Null,
                };
                let error = |kind: &str, message: String| serde_json::json!({ "error": { "kind": kind, "message": message } });
                let reply = match self.reply.clone().map(#reply::into_value) {
                    Ok(Ok(value)) => serde_json::json!({ "ok": value }),
                    Ok(Err(f)) => error(f.kind(), f.to_string()),
                    Err(e) => error(e.kind(), e.message()),
                };
                serde_json::json!({
                    "index": self.index,
                    "operation": self.operation(),
                    "applied_at": self.applied_at.to_rfc3339_opts(::chrono::SecondsFormat::Micros, true),
                    "command": arguments,
                    "reply": reply,
                })
            }
        }

        impl runtime::codegen::Indexed for #event {
            fn index(&self) -> u64 {
                self.index
            }
        }
    }
}

/// The API methods of a client that implements the crate's `CallCommand`: each builds its
/// command, calls, and unpacks the matching reply (the Collector and the JSON-RPC client share
/// them).
pub(super) fn methods_via_call(api: &Api) -> Vec<TokenStream> {
    let command = service_ident(api, "Command");
    let reply = service_ident(api, "Reply");
    let call_error = service_ident(api, "CallError");
    api.operations
        .iter()
        .map(|op| {
            let name = ident(&op.name);
            let v = ident(&op.variant());
            let ps = params(op);
            let names = param_names(op);
            let ret = return_ty(op.returns.as_ref());
            let wire = &op.name;
            quote! {
                async fn #name(&self, #(#ps),*) -> Result<#ret, crate::#call_error> {
                    match crate::collector::CallCommand::call_command(self, crate::#command::#v { #(#names),* }).await? {
                        crate::#reply::#v(value) => Ok(value),
                        other => Err(runtime::codegen::Failure::Transport(format!("reply to `{}` answers `{}`", #wire, other.name())).into()),
                    }
                }
            }
        })
        .collect()
}

pub(super) fn collector(api: &Api) -> TokenStream {
    let api_trait = service_ident(api, "Api");
    let command = service_ident(api, "Command");
    let reply = service_ident(api, "Reply");
    let call_error = service_ident(api, "CallError");
    let methods = methods_via_call(api);
    quote! {
        //! The Collector: calls in, serialized commands out, for any sink.

        pub use runtime::codegen::Collector;

        /// A client that carries whole commands: the Collector, and the JSON-RPC client.
        pub(crate) trait CallCommand {
            /// Sends one command and returns its reply.
            fn call_command(&self, command: crate::#command)
                -> impl ::std::future::Future<Output = Result<crate::#reply, crate::#call_error>> + Send;
        }

        impl<S: runtime::codegen::CommandSink> CallCommand for Collector<S> {
            async fn call_command(&self, command: crate::#command) -> Result<crate::#reply, crate::#call_error> {
                let bytes = command.encode()?;
                let reply = self.sink().submit(command.kind(), bytes).await?;
                crate::decode_reply(&reply)
            }
        }

        /// Every client that carries whole commands implements the API the same way.
        impl<C: CallCommand + Send + Sync> crate::#api_trait for C {
            #(#methods)*
        }
    }
}

pub(super) fn dispatcher(api: &Api) -> TokenStream {
    let service_trait = service_ident(api, "Service");
    let command = service_ident(api, "Command");
    let reply = service_ident(api, "Reply");
    let service_error = service_ident(api, "ServiceError");
    let arm = |op: &Operation, receiver: TokenStream| {
        let name = ident(&op.name);
        let v = ident(&op.variant());
        let names = param_names(op);
        let ctx = match op.kind {
            OpKind::Command => quote!(ctx,),
            OpKind::Query => quote!(),
        };
        quote! {
            crate::#command::#v { #(#names),* } => #receiver.#name(#ctx #(#names),*).map(crate::#reply::#v),
        }
    };
    let execute_arms = api.operations.iter().map(|op| arm(op, quote!(service)));
    let query_arms = api
        .operations
        .iter()
        .filter(|op| op.kind == OpKind::Query)
        .map(|op| arm(op, quote!(service)));
    let has_commands = api.commands().next().is_some();
    let command_arm = has_commands.then(|| {
        quote! {
            // Callers check the kind first (`{S}App` answers a command sent as a query with a
            // `Transport` failure); reaching this arm is a bug of the caller.
            other => Err(runtime::codegen::ServiceError::Fault(format!("`{}` is a command; it cannot run as a query", other.name()))),
        }
    });
    let unused =
        (api.operations.iter().all(|o| o.kind == OpKind::Query)).then(|| quote!(let _ = ctx;));
    quote! {
        //! The Dispatcher: serialized commands in, calls on the service out.

        /// Decodes commands and calls the matching service method.
        #[derive(Debug, Clone, Copy, Default)]
        pub struct Dispatcher;

        impl Dispatcher {
            /// Runs any operation: commands get `ctx`, queries ignore it.
            pub fn execute<S: crate::#service_trait + ?Sized>(
                service: &mut S,
                ctx: &crate::ApplyContext,
                command: crate::#command,
            ) -> Result<crate::#reply, crate::#service_error> {
                #unused
                match command {
                    #(#execute_arms)*
                }
            }

            /// Runs a query against read-only state; a command is refused as a fault.
            pub fn query<S: crate::#service_trait + ?Sized>(
                service: &S,
                command: crate::#command,
            ) -> Result<crate::#reply, crate::#service_error> {
                match command {
                    #(#query_arms)*
                    #command_arm
                }
            }
        }
    }
}
