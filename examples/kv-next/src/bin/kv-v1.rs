//! `kv-v1 node ...`: one node of the key-value store as it was (the `kv` example's node), built
//! beside `kv-next` so that the upgrade tests have both builds.

use std::process::ExitCode;

use clap::Parser;

/// The key-value store's previous version.
#[derive(Debug, Parser)]
#[command(name = "kv-v1")]
enum Cli {
    /// Run one node.
    Node(Box<runtime::host::NodeArgs>),
}

fn main() -> ExitCode {
    let Cli::Node(args) = Cli::parse();
    runtime::host::init_logging(args.log_format);
    match runtime::host::run_blocking(*args, &kv_generated::KvNode(kv::KvTables)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kv-v1: {e}");
            ExitCode::FAILURE
        }
    }
}
