//! gRPC: the `.proto` file, its tonic/prost code (compiled here, at generation time, with protox,
//! so building the workspace needs no protobuf compiler), the adapters between proto messages and
//! native types, a server over any `{Service}Api` and a client implementing it.
//!
//! Mapping (documented in the emitted `.proto` too): decimals, dates (`YYYY-MM-DD`), datetimes
//! (RFC 3339, UTC) and durations (`"86400s"`) are strings; enums are proto enums whose value 0 is
//! `UNSPECIFIED` (rejected); `list<T>` is `repeated`; `option<T>` is `optional`; parameters with a
//! default are `optional` and take the default when absent; every reply is `{Op}Response` with the
//! result in field `value = 1`.

use std::fmt::Write as _;
use std::path::PathBuf;

use heck::{ToShoutySnakeCase, ToSnakeCase, ToUpperCamelCase};
use proc_macro2::TokenStream;
use quote::{format_ident, quote};

use super::{ident, service_ident};
use crate::model::{Api, Field, OpKind, Ty, TypeBody};

/// The protobuf package of a service, e.g. `bank.v1`.
pub fn package(api: &Api) -> String {
    format!("{}.v1", api.service.to_snake_case())
}

fn is_enum(api: &Api, name: &str) -> bool {
    matches!(
        api.type_decl(name).map(|t| &t.body),
        Some(TypeBody::Enum(_))
    )
}

fn proto_scalar(ty: &Ty) -> String {
    match ty {
        Ty::Bool => "bool".into(),
        Ty::I32 => "int32".into(),
        Ty::I64 => "int64".into(),
        Ty::U32 => "uint32".into(),
        Ty::U64 => "uint64".into(),
        Ty::F64 => "double".into(),
        Ty::Bytes => "bytes".into(),
        Ty::String | Ty::Decimal | Ty::Date | Ty::DateTime | Ty::Duration => "string".into(),
        Ty::Named(n) => n.clone(),
        // Validation guarantees containers hold scalars or named types only.
        Ty::List(t) | Ty::Option(t) | Ty::Map(t) => proto_scalar(t),
    }
}

fn proto_field(api: &Api, name: &str, ty: &Ty, tag: u32, optional: bool) -> String {
    match ty {
        Ty::List(t) => format!("repeated {} {name} = {tag};", proto_scalar(t)),
        Ty::Map(t) => format!("map<string, {}> {name} = {tag};", proto_scalar(t)),
        Ty::Option(t) => format!("optional {} {name} = {tag};", proto_scalar(t)),
        Ty::Named(n) if !is_enum(api, n) => format!("{n} {name} = {tag};"),
        t if optional => format!("optional {} {name} = {tag};", proto_scalar(t)),
        t => format!("{} {name} = {tag};", proto_scalar(t)),
    }
}

/// A field declaration (`… = 3;`) with `[deprecated = true]` when it is.
fn deprecated_field(field: String, deprecated: bool) -> String {
    match field.strip_suffix(';') {
        Some(decl) if deprecated => format!("{decl} [deprecated = true];"),
        _ => field,
    }
}

fn comment(out: &mut String, indent: &str, doc: Option<&str>) {
    for line in doc.unwrap_or_default().lines() {
        let _ = writeln!(out, "{indent}// {line}");
    }
}

/// The `.proto` text, headed by `stamp` (what generated it, from which schema).
pub fn proto(api: &Api, stamp: &str) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "// {stamp}");
    let _ = writeln!(out, "//");
    let _ = writeln!(
        out,
        "// Decimals, dates (YYYY-MM-DD), datetimes (RFC 3339, UTC) and durations (\"86400s\") are strings."
    );
    let _ = writeln!(
        out,
        "// Errors: the gRPC status code plus the error kind in the `x-error-kind` response metadata."
    );
    let _ = writeln!(out, "syntax = \"proto3\";\n\npackage {};\n", package(api));
    for t in &api.types {
        comment(&mut out, "", t.doc.as_deref());
        match &t.body {
            TypeBody::Struct(fields) => {
                let _ = writeln!(out, "message {} {{", t.name);
                for f in fields {
                    comment(&mut out, "  ", f.doc.as_deref());
                    let field = proto_field(api, &f.name, &f.ty, f.tag, false);
                    let _ = writeln!(out, "  {}", deprecated_field(field, f.deprecated));
                }
                let _ = writeln!(out, "}}\n");
            }
            TypeBody::Enum(variants) => {
                let prefix = t.name.to_shouty_snake_case();
                let _ = writeln!(out, "enum {} {{", t.name);
                let _ = writeln!(out, "  {prefix}_UNSPECIFIED = 0;");
                for v in variants {
                    comment(&mut out, "  ", v.doc.as_deref());
                    let _ = writeln!(
                        out,
                        "  {prefix}_{} = {};",
                        v.name.to_shouty_snake_case(),
                        v.tag
                    );
                }
                let _ = writeln!(out, "}}\n");
            }
        }
    }
    for op in &api.operations {
        let camel = op.name.to_upper_camel_case();
        let _ = writeln!(out, "message {camel}Request {{");
        for p in &op.params {
            comment(&mut out, "  ", p.doc.as_deref());
            let optional = p.default.is_some() && !matches!(p.ty, Ty::Option(_));
            let field = proto_field(api, &p.name, &p.ty, p.tag, optional);
            let _ = writeln!(out, "  {}", deprecated_field(field, p.deprecated));
        }
        let _ = writeln!(out, "}}\n");
        let _ = writeln!(out, "message {camel}Response {{");
        if let Some(ret) = &op.returns {
            let _ = writeln!(out, "  {}", proto_field(api, "value", ret, 1, false));
        }
        let _ = writeln!(out, "}}\n");
    }
    comment(&mut out, "", api.doc.as_deref());
    let _ = writeln!(out, "service {} {{", api.service);
    for op in &api.operations {
        comment(&mut out, "  ", op.doc.as_deref());
        let _ = writeln!(out, "  // Allowed: {}.", op.allowed());
        let camel = op.name.to_upper_camel_case();
        let options = if op.deprecated {
            " { option deprecated = true; }"
        } else {
            ";"
        };
        let _ = writeln!(
            out,
            "  rpc {camel}({camel}Request) returns ({camel}Response){options}"
        );
    }
    let _ = writeln!(out, "}}");
    watch_proto(api, &mut out);
    out
}

/// The change feed's messages and service (served by replicated nodes only).
fn watch_proto(api: &Api, out: &mut String) {
    let s = &api.service;
    let commands: Vec<_> = api
        .operations
        .iter()
        .filter(|o| o.kind == OpKind::Command)
        .collect();
    if commands.is_empty() {
        // Nothing is ever applied: no feed (and a oneof needs a field).
        return;
    }
    let _ = writeln!(
        out,
        "\n// Where a watch starts and what it passes.\nmessage {s}WatchRequest {{\n  \
         // The first log index to deliver; 0 starts at the next command applied.\n  \
         uint64 from_index = 1;\n  // Only these operations (empty: every command).\n  \
         repeated string operations = 2;\n  // Only events with a watch key equal to this (empty: any).\n  \
         string key = 3;\n  // Only events with a watch key starting with this (empty: any).\n  \
         string key_prefix = 4;\n}}\n"
    );
    let _ = writeln!(
        out,
        "// The arguments of an event's command, by operation (field numbers are operation tags).\n\
         message {s}EventCommand {{\n  oneof call {{"
    );
    for op in &commands {
        let camel = op.name.to_upper_camel_case();
        let _ = writeln!(out, "    {camel}Request {} = {};", op.name, op.tag);
    }
    let _ = writeln!(out, "  }}\n}}\n");
    let _ = writeln!(
        out,
        "// The value an event's command answered, by operation (field numbers are operation tags).\n\
         message {s}EventReply {{\n  oneof value {{"
    );
    for op in &commands {
        let camel = op.name.to_upper_camel_case();
        let _ = writeln!(out, "    {camel}Response {} = {};", op.name, op.tag);
    }
    let _ = writeln!(out, "  }}\n}}\n");
    let _ = writeln!(
        out,
        "// The error a command was refused with.\nmessage {s}EventError {{\n  string kind = 1;\n  \
         string message = 2;\n}}\n\n\
         // One command a node applied.\nmessage {s}Event {{\n  // Its log index.\n  uint64 index = 1;\n  \
         string operation = 2;\n  // The leader's time when it was proposed (RFC 3339, UTC).\n  \
         string applied_at = 3;\n  {s}EventCommand command = 4;\n  oneof outcome {{\n    \
         {s}EventReply reply = 5;\n    {s}EventError error = 6;\n  }}\n}}\n\n\
         // The change feed of a replicated node.\nservice {s}Watch {{\n  \
         // Every command the node applies, in log order, from `from_index`, then live. Ends with\n  \
         // OUT_OF_RANGE (metadata x-watch-error: compacted, x-first-available: N) when that\n  \
         // position is gone, RESOURCE_EXHAUSTED (too_slow) when the reader falls behind.\n  \
         rpc Watch({s}WatchRequest) returns (stream {s}Event);\n}}"
    );
}

/// Compiles the service's `.proto` with protox and tonic-prost-build; returns the Rust module
/// text and the encoded file descriptor set (for gRPC reflection).
pub fn compile(api: &Api, proto_text: &str) -> std::io::Result<(String, Vec<u8>)> {
    compile_proto(
        &format!("{}.proto", api.service.to_snake_case()),
        &package(api),
        proto_text,
    )
}

/// Compiles one `.proto` file (`file_name` declaring `package`) into its tonic/prost module and
/// encoded descriptor set, without a system `protoc`.
pub fn compile_proto(
    file_name: &str,
    package: &str,
    proto_text: &str,
) -> std::io::Result<(String, Vec<u8>)> {
    let dir = scratch_dir()?;
    let result = compile_in(&dir, file_name, package, proto_text);
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn scratch_dir() -> std::io::Result<PathBuf> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let dir = std::env::temp_dir().join(format!("codegen-proto-{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(dir.join("out"))?;
    Ok(dir)
}

fn compile_in(
    dir: &std::path::Path,
    file_name: &str,
    package: &str,
    proto_text: &str,
) -> std::io::Result<(String, Vec<u8>)> {
    std::fs::write(dir.join(file_name), proto_text)?;
    let fds =
        protox::compile([file_name], [dir]).map_err(|e| std::io::Error::other(e.to_string()))?;
    let encoded = prost::Message::encode_to_vec(&fds);
    tonic_prost_build::configure()
        .out_dir(dir.join("out"))
        .btree_map(".")
        .emit_rerun_if_changed(false)
        .build_transport(false)
        .compile_fds(fds)?;
    let rust = std::fs::read_to_string(dir.join("out").join(format!("{package}.rs")))?;
    Ok((rust, encoded))
}

/// The descriptor set as a Rust constant.
pub fn descriptor_rs(bytes: &[u8]) -> String {
    let mut out = String::from(
        "/// The encoded `FileDescriptorSet` of the service's `.proto`, served by gRPC reflection.\n\
         pub const FILE_DESCRIPTOR_SET: &[u8] = b\"\\\n",
    );
    for chunk in bytes.chunks(32) {
        out.push_str("    ");
        for b in chunk {
            let _ = write!(out, "\\x{b:02x}");
        }
        out.push_str("\\\n");
    }
    out.push_str("\";\n");
    out
}

/// An expression converting a native value `e` (type `ty`, not a field wrapper) to its proto value.
fn conv_to(api: &Api, e: TokenStream, ty: &Ty) -> TokenStream {
    match ty {
        Ty::Decimal | Ty::Duration => quote!(#e.to_string()),
        Ty::Date => quote!(#e.format("%Y-%m-%d").to_string()),
        Ty::DateTime => quote!(#e.to_rfc3339_opts(::chrono::SecondsFormat::AutoSi, true)),
        Ty::Named(n) if is_enum(api, n) => {
            let f = format_ident!("{}_to_pb", n.to_snake_case());
            quote!(#f(#e))
        }
        Ty::Named(n) => {
            let n = ident(n);
            quote!(pb::#n::from(#e))
        }
        _ => e,
    }
}

/// An expression of type `Result<native, String>` converting a proto value `e`.
fn conv_from(api: &Api, e: TokenStream, ty: &Ty, path: &str) -> TokenStream {
    match ty {
        Ty::Decimal => quote!(runtime::codegen::decimal_from(#e, #path)),
        Ty::Date => quote!(runtime::codegen::date_from(&#e, #path)),
        Ty::DateTime => quote!(runtime::codegen::datetime_from(&#e, #path)),
        Ty::Duration => quote!(runtime::codegen::duration_from(&#e, #path)),
        Ty::Named(n) if is_enum(api, n) => {
            let f = format_ident!("{}_from_pb", n.to_snake_case());
            quote!(#f(#e, #path))
        }
        Ty::Named(n) => {
            let n = ident(n);
            quote!(crate::#n::try_from(#e))
        }
        _ => quote!(Ok::<_, String>(#e)),
    }
}

/// Whether native and proto values are the same type (no conversion needed).
fn is_plain(ty: &Ty) -> bool {
    matches!(
        ty,
        Ty::Bool | Ty::I32 | Ty::I64 | Ty::U32 | Ty::U64 | Ty::F64 | Ty::String | Ty::Bytes
    )
}

/// Native value → proto field value (wrapping singular messages in `Some`).
fn field_to(api: &Api, e: TokenStream, ty: &Ty, optional: bool) -> TokenStream {
    let v = quote!(v);
    match ty {
        Ty::List(t) | Ty::Map(t) | Ty::Option(t) if is_plain(t) => e,
        Ty::List(t) => {
            let c = conv_to(api, v.clone(), t);
            quote!(#e.into_iter().map(|v| #c).collect())
        }
        Ty::Map(t) => {
            let c = conv_to(api, v.clone(), t);
            quote!(#e.into_iter().map(|(k, v)| (k, #c)).collect())
        }
        Ty::Option(t) => {
            let c = conv_to(api, v.clone(), t);
            quote!(#e.map(|v| #c))
        }
        Ty::Named(n) if !is_enum(api, n) => {
            let c = conv_to(api, e, ty);
            quote!(Some(#c))
        }
        t if optional => {
            let c = conv_to(api, e, t);
            quote!(Some(#c))
        }
        t => conv_to(api, e, t),
    }
}

/// Proto field value → native value, as an expression that uses `?` (inside a fn returning
/// `Result<_, String>`). `default` is the expression used when an optional param is absent.
fn field_from(
    api: &Api,
    e: TokenStream,
    ty: &Ty,
    path: &str,
    default: Option<TokenStream>,
) -> TokenStream {
    let v = quote!(v);
    match ty {
        Ty::List(t) => {
            let c = conv_from(api, v.clone(), t, path);
            quote!(#e.into_iter().map(|v| #c).collect::<Result<Vec<_>, String>>()?)
        }
        Ty::Map(t) => {
            let c = conv_from(api, v.clone(), t, path);
            quote!(#e.into_iter().map(|(k, v)| Ok((k, #c?))).collect::<Result<::std::collections::BTreeMap<_, _>, String>>()?)
        }
        Ty::Option(t) => {
            let c = conv_from(api, v.clone(), t, path);
            quote!(#e.map(|v| #c).transpose()?)
        }
        Ty::Named(n) if !is_enum(api, n) => {
            let c = conv_from(api, v, ty, path);
            quote!(match #e { Some(v) => #c?, None => return Err(format!("`{}` is required", #path)) })
        }
        t => match default {
            Some(d) => {
                let c = conv_from(api, v, t, path);
                quote!(match #e { Some(v) => #c?, None => #d })
            }
            None => {
                let c = conv_from(api, e, t, path);
                quote!(#c?)
            }
        },
    }
}

fn default_of(op: &str, p: &Field) -> Option<TokenStream> {
    if p.default.is_none() || matches!(p.ty, Ty::Option(_)) {
        return None;
    }
    let f = format_ident!("{}_{}", op, p.name);
    Some(quote!(crate::defaults::#f()))
}

/// The Rust adapters, server and client (everything but the tonic/prost output).
pub fn adapters(api: &Api) -> TokenStream {
    let api_trait = service_ident(api, "Api");
    let call_error = service_ident(api, "CallError");
    let service = ident(&api.service);
    let server_mod = format_ident!("{}_server", api.service.to_snake_case());
    let client_mod = format_ident!("{}_client", api.service.to_snake_case());
    let server_trait = service.clone();
    let server_struct = format_ident!("{}Server", api.service);
    let client_struct = format_ident!("{}Client", api.service);

    let mut items = Vec::new();
    for t in &api.types {
        let name = ident(&t.name);
        match &t.body {
            TypeBody::Struct(fields) => {
                let names: Vec<_> = fields.iter().map(|f| ident(&f.name)).collect();
                let to: Vec<_> = fields
                    .iter()
                    .map(|f| {
                        let n = ident(&f.name);
                        field_to(api, quote!(v.#n), &f.ty, false)
                    })
                    .collect();
                let from: Vec<_> = fields
                    .iter()
                    .map(|f| {
                        let n = ident(&f.name);
                        field_from(
                            api,
                            quote!(v.#n),
                            &f.ty,
                            &format!("{}.{}", t.name, f.name),
                            None,
                        )
                    })
                    .collect();
                items.push(quote! {
                    impl From<crate::#name> for pb::#name {
                        fn from(v: crate::#name) -> Self {
                            pb::#name { #( #names: #to, )* }
                        }
                    }

                    impl TryFrom<pb::#name> for crate::#name {
                        type Error = String;
                        fn try_from(v: pb::#name) -> Result<Self, String> {
                            Ok(crate::#name { #( #names: #from, )* })
                        }
                    }
                });
            }
            TypeBody::Enum(variants) => {
                let to_fn = format_ident!("{}_to_pb", t.name.to_snake_case());
                let from_fn = format_ident!("{}_from_pb", t.name.to_snake_case());
                let vs: Vec<_> = variants
                    .iter()
                    .map(|v| ident(&v.name.to_upper_camel_case()))
                    .collect();
                let tname = &t.name;
                items.push(quote! {
                    fn #to_fn(v: crate::#name) -> i32 {
                        match v { #( crate::#name::#vs => pb::#name::#vs as i32, )* }
                    }

                    fn #from_fn(v: i32, path: &str) -> Result<crate::#name, String> {
                        match pb::#name::try_from(v) {
                            #( Ok(pb::#name::#vs) => Ok(crate::#name::#vs), )*
                            _ => Err(format!("`{path}`: {v} is not a valid {}", #tname)),
                        }
                    }
                });
            }
        }
    }

    let mut server_methods = Vec::new();
    let mut client_methods = Vec::new();
    for op in &api.operations {
        let camel = op.name.to_upper_camel_case();
        let req = format_ident!("{camel}Request");
        let resp = format_ident!("{camel}Response");
        let method = ident(&op.name);
        let names: Vec<_> = op.params.iter().map(|p| ident(&p.name)).collect();
        let arg_types: Vec<_> = op.params.iter().map(|p| super::rust_ty(&p.ty)).collect();
        let inits: Vec<_> = op
            .params
            .iter()
            .map(|p| {
                let n = ident(&p.name);
                let optional = p.default.is_some() && !matches!(p.ty, Ty::Option(_));
                let to = field_to(api, quote!(#n), &p.ty, optional);
                if to.to_string() == p.name {
                    quote!(#n)
                } else {
                    quote!(#n: #to)
                }
            })
            .collect();
        let from: Vec<_> = op
            .params
            .iter()
            .map(|p| {
                let n = ident(&p.name);
                field_from(api, quote!(r.#n), &p.ty, &p.name, default_of(&op.name, p))
            })
            .collect();
        let ret = super::return_ty(op.returns.as_ref());
        let kind = match op.kind {
            crate::model::OpKind::Command => quote!(runtime::codegen::CallKind::Command),
            crate::model::OpKind::Query => quote!(runtime::codegen::CallKind::Query),
        };
        let (resp_to, resp_from) = match &op.returns {
            Some(t) => {
                let to = field_to(api, quote!(value), t, false);
                let from = field_from(api, quote!(r.value), t, "value", None);
                let init = if to.to_string() == "value" {
                    quote!(value)
                } else {
                    quote!(value: #to)
                };
                (quote!(pb::#resp { #init }), quote!(Ok(#from)))
            }
            None => (
                quote!({ let () = value; pb::#resp {} }),
                quote!({
                    let _ = r;
                    Ok(())
                }),
            ),
        };
        items.push(quote! {
            impl pb::#req {
                fn from_native(#( #names: #arg_types ),*) -> Self {
                    pb::#req { #( #inits, )* }
                }

                #[allow(unused_parens)]
                fn into_native(self) -> Result<( #(#arg_types,)* ), String> {
                    let r = self;
                    let _ = &r;
                    Ok(( #( #from, )* ))
                }
            }

            impl pb::#resp {
                fn from_native(value: #ret) -> Self {
                    #resp_to
                }

                fn into_native(self) -> Result<#ret, String> {
                    let r = self;
                    #resp_from
                }
            }
        });
        server_methods.push(quote! {
            async fn #method(
                &self,
                request: tonic::Request<pb::#req>,
            ) -> Result<tonic::Response<pb::#resp>, tonic::Status> {
                let context = runtime::codegen::context_from_metadata(request.metadata())?;
                let ( #(#names,)* ) = request.into_inner().into_native().map_err(tonic::Status::invalid_argument)?;
                let value = runtime::codegen::with_context(context, self.api.#method(#(#names),*))
                    .await
                    .map_err(status_from_error)?;
                Ok(tonic::Response::new(pb::#resp::from_native(value)))
            }
        });
        client_methods.push(quote! {
            async fn #method(&self, #( #names: #arg_types ),*) -> Result<#ret, crate::#call_error> {
                let request = pb::#req::from_native(#(#names),*);
                let response = self
                    .call(
                        #kind,
                        request,
                        |channel, request| async move { pb::#client_mod::#client_struct::new(channel).#method(request).await },
                        classify,
                    )
                    .await?;
                response.into_native().map_err(|e| runtime::codegen::Failure::Transport(e).into())
            }
        });
    }

    let has_commands = api.operations.iter().any(|o| o.kind == OpKind::Command);
    let watch = watch_adapters(api, has_commands);
    let serve_node_body = if has_commands {
        quote! {
            runtime::codegen::serve_grpc_with(
                listener,
                GrpcService::new(api).into_server(max_message_size),
                WatchService::new(node).into_server(max_message_size),
                FILE_DESCRIPTOR_SET,
                shutdown,
            )
            .await
        }
    } else {
        quote! {
            // No commands, so no feed to serve.
            let _ = node;
            serve(listener, api, max_message_size, shutdown).await
        }
    };
    // Status codes: canonical names map to their gRPC codes, other domain errors are
    // FAILED_PRECONDITION; the kind itself travels in metadata.
    let service_name = format!("{}.{}", package(api), api.service);

    quote! {
        //! gRPC for the service: adapters between proto messages and native types, a server over any
        //! API implementation and a client implementing the API. Errors travel as a status code plus
        //! the error kind in the `x-error-kind` metadata entry.

        // Conversions are emitted uniformly per field; some come out more verbose than needed.
        #![allow(clippy::needless_question_mark, clippy::redundant_closure, clippy::type_complexity)]

        use std::sync::Arc;

        #[allow(clippy::all, missing_docs)]
        #[rustfmt::skip]
        /// The tonic/prost code generated from the service's `.proto`.
        pub mod pb {
            include!("grpc/proto.rs");
        }

        #[rustfmt::skip]
        mod descriptor {
            include!("grpc/descriptor.rs");
        }

        pub use descriptor::FILE_DESCRIPTOR_SET;

        /// The fully qualified gRPC service name.
        pub const SERVICE_NAME: &str = #service_name;

        pub use runtime::codegen::ERROR_KIND_KEY;

        #(#items)*

        /// The status an error travels as: its code, its message and its kind in metadata.
        pub fn status_from_error(e: crate::#call_error) -> tonic::Status {
            runtime::codegen::to_status(&e)
        }

        /// Rebuilds an error from a status.
        pub fn error_from_status(status: tonic::Status) -> crate::#call_error {
            runtime::codegen::from_status(&status)
        }

        /// Serves any API implementation over gRPC.
        pub struct GrpcService<A> {
            api: Arc<A>,
        }

        impl<A> GrpcService<A> {
            /// Wraps an API implementation.
            pub fn new(api: Arc<A>) -> Self {
                GrpcService { api }
            }

            /// The tonic service, with the given request size limit.
            pub fn into_server(self, max_message_size: usize) -> pb::#server_mod::#server_struct<Self>
            where
                A: crate::#api_trait + 'static,
            {
                pb::#server_mod::#server_struct::new(self)
                    .max_decoding_message_size(max_message_size)
                    .max_encoding_message_size(max_message_size)
            }
        }

        #[tonic::async_trait]
        impl<A: crate::#api_trait + 'static> pb::#server_mod::#server_trait for GrpcService<A> {
            #(#server_methods)*
        }

        pub use runtime::codegen::GrpcClient;

        /// What a failed status means to the client policy.
        fn classify<T>(status: tonic::Status) -> runtime::codegen::Attempt<T, crate::#call_error> {
            error_from_status(status).into_attempt("grpc")
        }

        impl crate::#api_trait for GrpcClient {
            #(#client_methods)*
        }

        #watch

        /// Serves `api` on `listener` (with the standard health service and reflection, so
        /// `grpcurl` works; over TLS when the listener has it) until `shutdown` resolves.
        /// Requests larger than `max_message_size` bytes are refused with `RESOURCE_EXHAUSTED`.
        pub async fn serve<A: crate::#api_trait + 'static>(
            listener: impl Into<runtime::codegen::Listener>,
            api: Arc<A>,
            max_message_size: usize,
            shutdown: impl ::std::future::Future<Output = ()> + Send,
        ) -> Result<(), runtime::codegen::ServeError> {
            runtime::codegen::serve_grpc(
                listener,
                GrpcService::new(api).into_server(max_message_size),
                FILE_DESCRIPTOR_SET,
                shutdown,
            )
            .await
        }

        /// [`serve`] on a replicated node: its API, and beside it the node's change feed
        /// ([`WatchService`]).
        pub async fn serve_node<A: crate::#api_trait + 'static>(
            listener: impl Into<runtime::codegen::Listener>,
            api: Arc<A>,
            node: Arc<runtime::codegen::RaftNode>,
            max_message_size: usize,
            shutdown: impl ::std::future::Future<Output = ()> + Send,
        ) -> Result<(), runtime::codegen::ServeError> {
            #serve_node_body
        }
    }
}

/// The change feed over gRPC: conversions of events, the `Watch` service of a node, and the
/// resuming client.
fn watch_adapters(api: &Api, has_commands: bool) -> TokenStream {
    let s = &api.service;
    if !has_commands {
        let event = service_ident(api, "Event");
        let why =
            format!("`{s}` has no commands: nothing is applied, so there is nothing to watch");
        return quote! {
            /// `{S}` has no commands, so its nodes keep no feed: the stream is one `Refused`.
            pub fn watch(
                _target: runtime::codegen::WatchTarget,
                _from: u64,
                _filter: runtime::codegen::WatchFilter,
            ) -> impl runtime::codegen::Stream<Item = Result<crate::#event, runtime::codegen::WatchError>> + Send + 'static {
                runtime::codegen::refused_watch(#why)
            }
        };
    }
    let command = service_ident(api, "Command");
    let reply = service_ident(api, "Reply");
    let event = service_ident(api, "Event");
    let call_error = service_ident(api, "CallError");
    let pb_event = format_ident!("{s}Event");
    let pb_request = format_ident!("{s}WatchRequest");
    let pb_command = format_ident!("{s}EventCommand");
    let pb_reply = format_ident!("{s}EventReply");
    let pb_error = format_ident!("{s}EventError");
    let event_mod = format_ident!("{}_event", s.to_snake_case());
    let command_mod = format_ident!("{}_event_command", s.to_snake_case());
    let reply_mod = format_ident!("{}_event_reply", s.to_snake_case());
    let watch_server_mod = format_ident!("{}_watch_server", s.to_snake_case());
    let watch_client_mod = format_ident!("{}_watch_client", s.to_snake_case());
    let watch_trait = format_ident!("{s}Watch");
    let watch_server = format_ident!("{s}WatchServer");
    let watch_client = format_ident!("{s}WatchClient");
    let commands: Vec<_> = api
        .operations
        .iter()
        .filter(|o| o.kind == OpKind::Command)
        .collect();
    let variants: Vec<_> = commands.iter().map(|o| ident(&o.variant())).collect();
    let reqs: Vec<_> = commands
        .iter()
        .map(|o| format_ident!("{}Request", o.name.to_upper_camel_case()))
        .collect();
    let resps: Vec<_> = commands
        .iter()
        .map(|o| format_ident!("{}Response", o.name.to_upper_camel_case()))
        .collect();
    let names: Vec<Vec<_>> = commands
        .iter()
        .map(|o| o.params.iter().map(|p| ident(&p.name)).collect())
        .collect();
    let all_commands = commands.len() == api.operations.len();
    let other_command = (!all_commands).then(|| quote!(_ => None,));
    quote! {
        impl From<crate::#event> for pb::#pb_event {
            fn from(e: crate::#event) -> Self {
                let operation = e.command.name().to_string();
                let call = match e.command {
                    #( crate::#command::#variants { #(#names,)* } => Some(pb::#command_mod::Call::#variants(pb::#reqs::from_native(#(#names),*))), )*
                    #other_command
                };
                let outcome = match e.reply {
                    Ok(reply) => pb::#event_mod::Outcome::Reply(pb::#pb_reply {
                        value: match reply {
                            #( crate::#reply::#variants(value) => Some(pb::#reply_mod::Value::#variants(pb::#resps::from_native(value))), )*
                            #other_command
                        },
                    }),
                    Err(error) => pb::#event_mod::Outcome::Error(pb::#pb_error {
                        kind: error.kind().to_string(),
                        message: error.message(),
                    }),
                };
                pb::#pb_event {
                    index: e.index,
                    operation,
                    applied_at: e.applied_at.to_rfc3339_opts(::chrono::SecondsFormat::Micros, true),
                    command: Some(pb::#pb_command { call }),
                    outcome: Some(outcome),
                }
            }
        }

        impl TryFrom<pb::#pb_event> for crate::#event {
            type Error = String;

            fn try_from(e: pb::#pb_event) -> Result<Self, String> {
                let (index, operation) = (e.index, e.operation);
                let command = match e.command.and_then(|c| c.call) {
                    #( Some(pb::#command_mod::Call::#variants(r)) => {
                        let ( #(#names,)* ) = r.into_native()?;
                        crate::#command::#variants { #(#names),* }
                    } )*
                    None => return Err(format!("event {index}: no command (`{operation}` unknown to this build?)")),
                };
                let reply = match e.outcome {
                    Some(pb::#event_mod::Outcome::Reply(r)) => match r.value {
                        #( Some(pb::#reply_mod::Value::#variants(v)) => Ok(crate::#reply::#variants(v.into_native()?)), )*
                        None => return Err(format!("event {index}: no reply value")),
                    },
                    Some(pb::#event_mod::Outcome::Error(err)) => Err(
                        crate::#call_error::from_kind(&err.kind, err.message.clone())
                            .unwrap_or_else(|| crate::#call_error::internal(err.message)),
                    ),
                    None => return Err(format!("event {index}: no outcome")),
                };
                Ok(crate::#event {
                    index,
                    applied_at: runtime::codegen::datetime_from(&e.applied_at, "applied_at")?,
                    command,
                    reply,
                })
            }
        }

        /// Serves a node's change feed (the `Watch` RPC): what the node applies, in log order,
        /// from the asked-for index, then live; watch errors as statuses
        /// (`runtime::codegen::watch_status`).
        #[derive(Debug, Clone)]
        pub struct WatchService {
            node: Arc<runtime::codegen::RaftNode>,
        }

        impl WatchService {
            /// The feed of `node`.
            pub fn new(node: Arc<runtime::codegen::RaftNode>) -> Self {
                WatchService { node }
            }

            /// The tonic service, with the given message size limit.
            pub fn into_server(self, max_message_size: usize) -> pb::#watch_server_mod::#watch_server<Self> {
                pb::#watch_server_mod::#watch_server::new(self)
                    .max_decoding_message_size(max_message_size)
                    .max_encoding_message_size(max_message_size)
            }
        }

        #[tonic::async_trait]
        impl pb::#watch_server_mod::#watch_trait for WatchService {
            type WatchStream = runtime::codegen::GrpcFeed<pb::#pb_event>;

            async fn watch(
                &self,
                request: tonic::Request<pb::#pb_request>,
            ) -> Result<tonic::Response<Self::WatchStream>, tonic::Status> {
                let token = runtime::codegen::token_from_metadata(request.metadata());
                let r = request.into_inner();
                let filter = runtime::codegen::filter_for(crate::OPERATIONS, r.operations, r.key, r.key_prefix)
                    .map_err(|e| runtime::codegen::watch_status(&e))?;
                let filter = self
                    .node
                    .authorize_watch(token.as_ref().map(|t| t.0.as_str()), filter)
                    .map_err(runtime::codegen::failure_status)?;
                let events = self.node.watch(r.from_index, filter);
                if let Some(refused) = events.refused() {
                    return Err(runtime::codegen::watch_status(refused));
                }
                Ok(tonic::Response::new(runtime::codegen::grpc_feed(events, |event| {
                    crate::#event::from_feed(event).map(pb::#pb_event::from).map_err(|e| e.to_string())
                })))
            }
        }

        /// Watches the change feed of the nodes at `target` from index `from` (0: from the next
        /// command), the events `filter` passes. It resumes by itself after a transport failure,
        /// a node stopping or a cut-off, on the next node, from the index after the last event it
        /// delivered: no gap, no duplicate. It ends after `Compacted`, `Refused`, or
        /// `Unavailable` once no node answered for the target's `give_up_after`.
        pub fn watch(
            target: runtime::codegen::WatchTarget,
            from: u64,
            filter: runtime::codegen::WatchFilter,
        ) -> impl runtime::codegen::Stream<Item = Result<crate::#event, runtime::codegen::WatchError>> + Send + 'static {
            let request = pb::#pb_request {
                from_index: 0,
                operations: filter.operations,
                key: filter.key.unwrap_or_default(),
                key_prefix: filter.key_prefix.unwrap_or_default(),
            };
            let token = target.token.clone();
            runtime::codegen::resuming_watch(target, from, move |channel, from| {
                let mut request = tonic::Request::new(pb::#pb_request { from_index: from, ..request.clone() });
                runtime::codegen::insert_token(request.metadata_mut(), token.as_ref());
                async move {
                    let events = pb::#watch_client_mod::#watch_client::new(channel)
                        .max_decoding_message_size(runtime::codegen::MAX_API_MESSAGE)
                        .watch(request)
                        .await?
                        .into_inner();
                    Ok(runtime::codegen::decode_feed(events, crate::#event::try_from))
                }
            })
        }
    }
}
