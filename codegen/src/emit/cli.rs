//! `src/cli.rs`: the `call` command of the service (see `runtime::cli`): every operation with
//! its parameters, their types and docs, and the function that sends a parsed call over gRPC or
//! JSON-RPC.

use proc_macro2::TokenStream;
use quote::quote;

use super::service_ident;
use crate::model::{Api, OpKind, Ty, TypeBody, ty_text};

/// How the command line reads a value of `ty` (see `runtime::cli::Wire`).
fn wire(api: &Api, ty: &Ty) -> TokenStream {
    match ty {
        Ty::String | Ty::Decimal | Ty::Date | Ty::DateTime | Ty::Duration => quote!(Text),
        Ty::Bool | Ty::I32 | Ty::I64 | Ty::U32 | Ty::U64 | Ty::F64 => quote!(Scalar),
        Ty::Option(inner) => wire(api, inner),
        Ty::Named(name)
            if matches!(
                api.type_decl(name).map(|t| &t.body),
                Some(TypeBody::Enum(_))
            ) =>
        {
            quote!(Text)
        }
        Ty::Bytes | Ty::List(_) | Ty::Map(_) | Ty::Named(_) => quote!(Json),
    }
}

pub fn module(api: &Api) -> TokenStream {
    let command = service_ident(api, "Command");
    let event = service_ident(api, "Event");
    let service = &api.service;
    let ops = api.operations.iter().map(|op| {
        let name = &op.name;
        let doc = match (&op.doc, op.deprecated) {
            (Some(doc), true) => format!("Deprecated. {doc}"),
            (None, true) => "Deprecated.".to_string(),
            (doc, false) => doc.clone().unwrap_or_default(),
        };
        let doc = format!("{}\n\nAllowed: {}.", doc.trim_end(), op.allowed());
        let kind = match op.kind {
            OpKind::Command => quote!(Command),
            OpKind::Query => quote!(Query),
        };
        let params = op.params.iter().map(|p| {
            let pname = &p.name;
            let ty = ty_text(&p.ty);
            let wire = wire(api, &p.ty);
            let required = p.default.is_none() && !matches!(p.ty, Ty::Option(_));
            let pdoc = match (&p.doc, p.deprecated) {
                (Some(doc), true) => format!("Deprecated. {doc}"),
                (None, true) => "Deprecated.".to_string(),
                (doc, false) => doc.clone().unwrap_or_default(),
            };
            quote! {
                runtime::codegen::ParamSpec {
                    name: #pname,
                    ty: #ty,
                    wire: runtime::codegen::Wire::#wire,
                    required: #required,
                    doc: #pdoc,
                }
            }
        });
        quote! {
            runtime::codegen::OpSpec {
                name: #name,
                kind: runtime::codegen::CallKind::#kind,
                doc: #doc,
                params: &[#(#params),*],
            }
        }
    });
    quote! {
        //! The `call` command: one subcommand per operation, a flag per parameter (see
        //! `runtime::cli`).

        /// Every operation, as the `call` command shows it.
        pub const OPERATIONS: &[runtime::codegen::OpSpec] = &[#(#ops),*];

        /// The `call` command (clap): one subcommand per operation.
        pub fn command() -> runtime::codegen::clap::Command {
            runtime::codegen::cli_command(#service, OPERATIONS)
        }

        /// The whole `<binary> call …` subcommand: `args` are what follows `call`.
        pub fn main(binary: &str, args: Vec<String>) -> ::std::process::ExitCode {
            runtime::codegen::run_blocking(binary, command(), args, |matches| async move {
                run(&matches).await
            })
        }

        /// Sends the call `matches` holds (from [`command`]) and says what to print and exit
        /// with.
        pub async fn run(matches: &runtime::codegen::clap::ArgMatches) -> runtime::codegen::Output {
            if let Some(watch) = runtime::codegen::WatchCall::parse(matches) {
                return match watch {
                    Ok(watch) => {
                        let events = crate::grpc::watch(watch.target.clone(), watch.from, watch.filter.clone());
                        watch.print(events, crate::#event::to_json).await
                    }
                    Err(e) => runtime::codegen::Output::usage(e),
                };
            }
            let call = match runtime::codegen::Call::parse(OPERATIONS, matches) {
                Ok(call) => call,
                Err(e) => return runtime::codegen::Output::usage(e),
            };
            let command = match crate::#command::from_params(call.operation.name, Some(call.params.clone())) {
                Ok(command) => command,
                Err(e) => return runtime::codegen::Output::usage(e),
            };
            let reply = match call.transport {
                runtime::codegen::Transport::Grpc => match call.grpc_client().await {
                    Ok(client) => crate::invoke(&client, command).await,
                    Err(failure) => Err(runtime::codegen::CallError::Failure(failure)),
                },
                runtime::codegen::Transport::JsonRpc => match call.jsonrpc_client() {
                    Ok(client) => crate::invoke(&client, command).await,
                    Err(failure) => Err(runtime::codegen::CallError::Failure(failure)),
                },
            };
            let value = reply.and_then(|r| r.into_value().map_err(runtime::codegen::CallError::Failure));
            runtime::codegen::Output::of(value, call.json)
        }
    }
}
