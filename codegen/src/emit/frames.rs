//! The command-bytes transports (TCP frames and ZeroMQ, from the `runtime` crate): the server
//! side hands each payload to a `CommandSink` (in the bank: the Dispatcher over the service), the
//! client side is the `Collector` over a sink that ships the bytes.

use proc_macro2::TokenStream;
use quote::quote;

use super::service_ident;
use crate::model::Api;

pub fn module(api: &Api) -> TokenStream {
    let error = service_ident(api, "Error");
    quote! {
        //! Command bytes over TCP frames or ZeroMQ: the `Collector` runs in the client, the
        //! serialized commands travel as they would into the Raft log, and a `CommandSink` (the
        //! Dispatcher over the service) answers them in the server.

        use std::sync::Arc;

        use crate::CommandSink;

        impl From<crate::OpKind> for runtime::CallKind {
            fn from(kind: crate::OpKind) -> Self {
                match kind {
                    crate::OpKind::Command => runtime::CallKind::Command,
                    crate::OpKind::Query => runtime::CallKind::Query,
                }
            }
        }

        impl From<runtime::CallKind> for crate::OpKind {
            fn from(kind: runtime::CallKind) -> Self {
                match kind {
                    runtime::CallKind::Command => crate::OpKind::Command,
                    runtime::CallKind::Query => crate::OpKind::Query,
                }
            }
        }

        impl From<runtime::TransportError> for crate::#error {
            fn from(e: runtime::TransportError) -> Self {
                crate::#error::Transport(e.to_string())
            }
        }

        /// Serves command bytes: each payload goes to the sink, its reply goes back.
        #[derive(Debug)]
        pub struct SinkHandler<S>(pub S);

        impl<S: CommandSink + 'static> runtime::Handler for SinkHandler<S> {
            async fn handle(&self, kind: runtime::CallKind, payload: Vec<u8>) -> Vec<u8> {
                match self.0.submit(kind.into(), payload).await {
                    Ok(reply) => reply,
                    Err(e) => crate::encode_reply(&Err(e)),
                }
            }

            fn refuse(&self, reason: &str) -> Vec<u8> {
                crate::encode_reply(&Err(crate::#error::Transport(reason.to_string())))
            }
        }

        /// Ships command bytes over one multiplexed TCP connection.
        #[derive(Debug, Clone)]
        pub struct TcpSink(pub runtime::TcpClient);

        impl CommandSink for TcpSink {
            async fn submit(&self, kind: crate::OpKind, command: Vec<u8>) -> Result<Vec<u8>, crate::#error> {
                Ok(self.0.call(kind.into(), command).await?)
            }
        }

        /// Ships command bytes over a ZeroMQ DEALER socket.
        #[derive(Debug, Clone)]
        pub struct ZmqSink(pub runtime::ZmqClient);

        impl CommandSink for ZmqSink {
            async fn submit(&self, kind: crate::OpKind, command: Vec<u8>) -> Result<Vec<u8>, crate::#error> {
                Ok(self.0.call(kind.into(), command).await?)
            }
        }

        /// Connects a Collector to a TCP command server at `addr`.
        pub async fn connect_tcp(addr: &str, limits: runtime::Limits) -> Result<crate::Collector<TcpSink>, crate::#error> {
            Ok(crate::Collector::new(TcpSink(runtime::TcpClient::connect(addr.to_string(), limits).await?)))
        }

        /// Connects a Collector to a ZeroMQ command server at `endpoint` (`tcp://host:port`).
        pub async fn connect_zmq(endpoint: &str, limits: runtime::Limits) -> Result<crate::Collector<ZmqSink>, crate::#error> {
            Ok(crate::Collector::new(ZmqSink(runtime::ZmqClient::connect(endpoint, limits).await?)))
        }

        /// Serves command bytes over TCP frames on `listener` until `shutdown` resolves.
        pub async fn serve_tcp<S: CommandSink + 'static>(
            listener: tokio::net::TcpListener,
            sink: S,
            limits: runtime::Limits,
            shutdown: impl ::std::future::Future<Output = ()> + Send,
        ) -> Result<(), crate::#error> {
            runtime::serve_tcp(listener, Arc::new(SinkHandler(sink)), limits, shutdown)
                .await
                .map_err(|e| crate::#error::Transport(format!("TCP server: {e}")))
        }

        /// Starts serving command bytes over ZeroMQ at `endpoint` (e.g. `tcp://127.0.0.1:0`);
        /// returns the bound endpoint and the serving task, which ends when `shutdown` resolves.
        pub async fn serve_zmq<S: CommandSink + 'static>(
            endpoint: &str,
            sink: S,
            limits: runtime::Limits,
            shutdown: impl ::std::future::Future<Output = ()> + Send + 'static,
        ) -> Result<(String, tokio::task::JoinHandle<()>), crate::#error> {
            Ok(runtime::serve_zmq(endpoint, Arc::new(SinkHandler(sink)), limits, shutdown).await?)
        }
    }
}
