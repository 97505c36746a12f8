//! The application adapters: the `{S}Store` trait an application implements to run its service
//! on SQLite, the runtime `Application` built on it (what the Raft state machine and the local
//! sink apply), the in-process `Direct` client, and the replicated API of a node.

use heck::ToSnakeCase;
use proc_macro2::TokenStream;
use quote::quote;

use super::core::{param_names, params};
use super::{doc_str, ident, return_ty, service_ident};
use crate::model::{Api, OpKind};

pub fn module(api: &Api) -> TokenStream {
    let call_error = service_ident(api, "CallError");
    let service_error = service_ident(api, "ServiceError");
    let command = service_ident(api, "Command");
    let reply = service_ident(api, "Reply");
    let api_trait = service_ident(api, "Api");
    let service_trait = service_ident(api, "Service");
    let store = service_ident(api, "Store");
    let app = service_ident(api, "App");
    let node = service_ident(api, "Node");
    let name = api.service.to_snake_case();
    let s = &api.service;
    let store_doc = doc_str(&format!(
        "What an application implements to run the `{s}` service on SQLite: its tables, its \
         `{s}Service` over a connection, and a digest of its state. The in-process variants \
         ([`Direct`], the local sink) and the Raft state machine all run on it."
    ));
    let app_doc = doc_str(&format!(
        "A [`{s}Store`] as the runtime's `Application`: serialized commands decoded and dispatched \
         to the service. A store failure reported as `Internal` is a machine failure, not a \
         refusal: the runtime stops rather than let this replica diverge."
    ));
    let direct_doc = doc_str(&format!(
        "`{s}Api` in process (`runtime::codegen::Direct` over a [`{s}Store`]): every call goes \
         straight to the store's `{s}Service`, each command in its own transaction."
    ));
    let node_doc = doc_str(&format!(
        "The `{s}` service as a node host runs it (`runtime::codegen::run_host`): the store's application \
         in the state machine, and the gRPC and JSON-RPC servers of its replicated API."
    ));
    let methods = api.operations.iter().map(|op| {
        let name = ident(&op.name);
        let ps = params(op);
        let names = param_names(op);
        let ret = return_ty(op.returns.as_ref());
        match op.kind {
            OpKind::Command => quote! {
                async fn #name(&self, #(#ps),*) -> Result<#ret, crate::#call_error> {
                    self.command(|conn, store, ctx| store.command(conn, ctx, |s| s.#name(ctx, #(#names),*)))
                }
            },
            OpKind::Query => quote! {
                async fn #name(&self, #(#ps),*) -> Result<#ret, crate::#call_error> {
                    self.query(|conn, store| store.query(conn, |s| s.#name(#(#names),*)))
                }
            },
        }
    });
    quote! {
        //! The application adapters: what an application implements to run the service on SQLite,
        //! and the in-process, local-sink and replicated forms built on it.

        use std::sync::Arc;

        use runtime::codegen::rusqlite::Connection;

        #store_doc
        pub trait #store: Send + Sync + 'static {
            /// Creates the application's tables if they are missing (or checks their version).
            fn init(&self, conn: &Connection) -> Result<(), String>;

            /// Runs `f` on the service for one command at `ctx`. `conn` is inside a transaction
            /// or savepoint that the caller rolls back when the result is an error.
            fn command<R>(
                &self,
                conn: &Connection,
                ctx: &crate::ApplyContext,
                f: impl FnOnce(&mut dyn crate::#service_trait) -> Result<R, crate::#service_error>,
            ) -> Result<R, crate::#service_error>;

            /// Runs `f` on the service for one query, read-only.
            fn query<R>(
                &self,
                conn: &Connection,
                f: impl FnOnce(&dyn crate::#service_trait) -> Result<R, crate::#service_error>,
            ) -> Result<R, crate::#service_error>;

            /// A digest of the application's state: equal on replicas that hold equal state.
            fn digest(&self, conn: &Connection) -> Result<String, String>;
        }

        #app_doc
        #[derive(Debug, Clone, Copy, Default)]
        pub struct #app<St>(pub St);

        impl<St: #store> runtime::codegen::Application for #app<St> {
            fn init(&self, conn: &Connection) -> Result<(), String> {
                self.0.init(conn)
            }

            fn apply(
                &self,
                conn: &Connection,
                ctx: &crate::ApplyContext,
                command: &[u8],
            ) -> Result<runtime::codegen::Applied, String> {
                // Refusals are alike on every replica: answered, and the command's changes rolled
                // back. A fault of the machine is not answered: the runtime stops instead. So is an
                // entry this build cannot read (a newer build's operation or parameter, let past
                // the leader's version gate): refusing it here while newer replicas apply it would
                // make the replicas diverge.
                let command = crate::#command::decode(command).map_err(|e| {
                    format!("{e}: this build (schema {}) cannot apply the entry; run a build that knows it", crate::SCHEMA_VERSION)
                })?;
                let result: Result<crate::#reply, crate::#call_error> = match runtime::codegen::check_kind(command.name(), command.kind(), runtime::codegen::CallKind::Command) {
                    Err(refused) => Err(refused.into()),
                    Ok(()) => match self.0.command(conn, ctx, |service| crate::Dispatcher::execute(service, ctx, command)) {
                        Ok(reply) => Ok(reply),
                        Err(runtime::codegen::ServiceError::Domain(e)) => Err(e.into()),
                        Err(runtime::codegen::ServiceError::Fault(fault)) => return Err(fault),
                    },
                };
                Ok(runtime::codegen::Applied {
                    ok: result.is_ok(),
                    reply: crate::encode_reply(&result),
                })
            }

            fn query(&self, conn: &Connection, query: &[u8]) -> Vec<u8> {
                let result: Result<crate::#reply, crate::#call_error> = match crate::#command::decode_as(query, runtime::codegen::CallKind::Query) {
                    Err(refused) => Err(refused.into()),
                    Ok(query) => self.0.query(conn, |service| crate::Dispatcher::query(service, query)).map_err(Into::into),
                };
                crate::encode_reply(&result)
            }

            fn digest(&self, conn: &Connection) -> Result<String, String> {
                self.0.digest(conn)
            }

            fn admit(&self, command: &[u8]) -> Result<(), runtime::codegen::Failure> {
                crate::#command::decode_as(command, runtime::codegen::CallKind::Command).map(drop)
            }

            fn schema(&self) -> runtime::codegen::Schema {
                runtime::codegen::Schema::new(crate::SCHEMA_VERSION, crate::OPERATIONS)
            }

            fn operations(&self) -> &'static [runtime::codegen::OpInfo] {
                crate::OPERATIONS
            }

            fn watch_info(&self, command: &[u8]) -> runtime::codegen::WatchInfo {
                match crate::#command::decode(command) {
                    Ok(command) => runtime::codegen::WatchInfo {
                        operation: command.name(),
                        keys: command.watch_keys(),
                    },
                    Err(_) => runtime::codegen::WatchInfo::default(),
                }
            }
        }

        #direct_doc
        pub use runtime::codegen::Direct;

        impl<St: #store> crate::#api_trait for runtime::codegen::Direct<St> {
            #(#methods)*
        }

        /// The generated `Collector` over a local sink: every call encoded, applied through
        /// [`#app`] in its own transaction, and its reply decoded, all in process.
        pub fn local<St: #store>(
            db: runtime::codegen::LocalDb,
            store: St,
        ) -> crate::Collector<runtime::codegen::LocalSink<#app<St>>> {
            crate::Collector::new(runtime::codegen::LocalSink::new(db, #app(store)))
        }

        #node_doc
        #[derive(Debug, Clone, Copy, Default)]
        pub struct #node<St>(pub St);

        impl<St: #store + Clone> runtime::codegen::HostedService for #node<St> {
            fn name(&self) -> &'static str {
                #name
            }

            fn application(&self) -> Arc<dyn runtime::codegen::Application> {
                Arc::new(#app(self.0.clone()))
            }

            fn serve(
                &self,
                protocol: runtime::codegen::Protocol,
                listener: runtime::codegen::Listener,
                node: Arc<runtime::codegen::RaftNode>,
                level: runtime::codegen::ReadLevel,
                shutdown: runtime::codegen::Shutdown,
            ) -> runtime::codegen::Serving {
                let api = Arc::new(replicated(node.clone(), level));
                let max = runtime::codegen::MAX_API_MESSAGE;
                match protocol {
                    runtime::codegen::Protocol::Grpc => Box::pin(async move {
                        crate::grpc::serve_node(listener, api, node, max, shutdown).await.map_err(|e| e.to_string())
                    }),
                    runtime::codegen::Protocol::JsonRpc => Box::pin(async move {
                        crate::jsonrpc::serve_node(listener, api, node, max, shutdown).await.map_err(|e| e.to_string())
                    }),
                }
            }
        }

        /// The API of the replicated service on a node: commands into its Raft log, queries at
        /// `level` (unless a call asks for another). What the node's gRPC and JSON-RPC servers serve.
        pub fn replicated(
            node: Arc<runtime::codegen::RaftNode>,
            level: runtime::codegen::ReadLevel,
        ) -> crate::Collector<runtime::codegen::RaftSink> {
            crate::Collector::new(runtime::codegen::RaftSink::new(node, level))
        }
    }
}
