//! `kv-next node ...`: one node of the key-value store's next version.

use std::process::ExitCode;

use clap::Parser;

/// The key-value store's next version.
#[derive(Debug, Parser)]
#[command(name = "kv-next")]
enum Cli {
    /// Run one node.
    Node(Box<runtime::host::NodeArgs>),
}

fn main() -> ExitCode {
    let Cli::Node(args) = Cli::parse();
    runtime::host::init_logging(args.log_format);
    match runtime::host::run_blocking(*args, &kv_next_generated::KvNode(kv_next::NextTables)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kv-next: {e}");
            ExitCode::FAILURE
        }
    }
}
