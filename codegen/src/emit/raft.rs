//! The service on the Raft runtime: a `CommandSink` whose commands go through the replicated log
//! of a `runtime::raft::node::RaftNode` and whose queries are answered at a chosen read level.

use proc_macro2::TokenStream;
use quote::quote;

use super::service_ident;
use crate::model::Api;

pub fn module(api: &Api) -> TokenStream {
    let error = service_ident(api, "Error");
    quote! {
        //! The service replicated with Raft: commands go through the log of a `RaftNode` (forwarded
        //! to the leader when this node is a follower); queries are answered locally at the sink's
        //! read level and never enter the log.

        use std::sync::Arc;

        pub use runtime::raft::node::{RaftNode, ReadLevel};

        /// Sends commands into the Raft log and answers queries at `level`.
        #[derive(Debug, Clone)]
        pub struct RaftSink {
            node: Arc<RaftNode>,
            level: ReadLevel,
        }

        impl RaftSink {
            /// A sink over `node` reading at `level`.
            pub fn new(node: Arc<RaftNode>, level: ReadLevel) -> Self {
                RaftSink { node, level }
            }

            /// The node.
            pub fn node(&self) -> &Arc<RaftNode> {
                &self.node
            }
        }

        impl crate::CommandSink for RaftSink {
            async fn submit(&self, kind: crate::OpKind, command: Vec<u8>) -> Result<Vec<u8>, crate::#error> {
                let result = match kind {
                    crate::OpKind::Command => self
                        .node
                        .write(command, runtime::call::current_request())
                        .await
                        .map(|applied| applied.reply),
                    crate::OpKind::Query => {
                        let level = runtime::call::current_read_level().unwrap_or(self.level);
                        self.node.read(command, level).await
                    }
                };
                result.map_err(|e| match e {
                    runtime::raft::node::NodeError::NotLeader(Some(leader)) => {
                        crate::#error::Redirect(format!("grpc={} jsonrpc={}", leader.api, leader.jsonrpc))
                    }
                    other => crate::#error::Transport(other.to_string()),
                })
            }
        }

        /// The API of the replicated service on this node: what its gRPC and JSON-RPC servers serve.
        pub fn replicated(node: Arc<RaftNode>, level: ReadLevel) -> crate::Collector<RaftSink> {
            crate::Collector::new(RaftSink::new(node, level))
        }
    }
}
