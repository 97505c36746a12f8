//! `kv node ...`: one node of the replicated key-value store. This file is the whole glue
//! between the generated crate, the runtime and the store.

use std::process::ExitCode;

use clap::Parser;

/// A replicated key-value store.
#[derive(Debug, Parser)]
#[command(name = "kv")]
enum Cli {
    /// Run one node (gRPC and JSON-RPC API, raft on its own listener).
    Node(runtime::host::NodeArgs),
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let Cli::Node(args) = Cli::parse();
    match runtime::host::run_blocking(args, &kv_generated::KvNode(kv::KvTables)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kv: {e}");
            ExitCode::FAILURE
        }
    }
}
