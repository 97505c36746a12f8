//! `kv node ...`: one node of the replicated key-value store; `kv call ...`: one call of its
//! API. This file is the whole glue between the generated crate, the runtime and the store.

use std::process::ExitCode;

use clap::Parser;

/// A replicated key-value store.
#[derive(Debug, Parser)]
#[command(name = "kv")]
enum Cli {
    /// Run one node (gRPC and JSON-RPC API, raft on its own listener).
    Node(Box<runtime::host::NodeArgs>),
    /// Call one operation, e.g. `kv call put --key a --value b --connect ADDR` (`kv call
    /// --help` lists them).
    #[command(disable_help_flag = true)]
    Call {
        /// The operation, its flags, and `--connect ADDR [--transport grpc|jsonrpc] [--json]`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, num_args = 0..)]
        args: Vec<String>,
    },
}

fn main() -> ExitCode {
    // `kv node --config FILE`: the file's flags, then the command line's.
    let argv = match runtime::config::expand(std::env::args_os().collect()) {
        Ok(argv) => argv,
        Err(e) => {
            eprintln!("kv: {e}");
            return ExitCode::from(2);
        }
    };
    match Cli::parse_from(argv) {
        Cli::Node(args) => {
            runtime::host::node_main("kv", *args, &kv_generated::KvNode(kv::KvTables))
        }
        Cli::Call { args } => kv_generated::cli::main("kv", args),
    }
}
