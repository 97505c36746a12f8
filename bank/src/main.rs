//! The `bank` command line: `bank validate --variant direct|collector [--db PATH]`.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use bank::{Bank, Direct, Report, StoreError, ValidationError, collector, validator};
use clap::{Parser, Subcommand, ValueEnum};
use tracing_subscriber::EnvFilter;

/// The bank: customers, accounts, a simulated clock and monthly statements.
#[derive(Debug, Parser)]
#[command(name = "bank", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the validator walk-through against one variant of the bank.
    Validate {
        /// The way to reach the bank.
        #[arg(long, value_enum)]
        variant: Variant,
        /// The SQLite database file (created if missing); without it, a temporary in-memory
        /// database.
        #[arg(long, value_name = "PATH")]
        db: Option<PathBuf>,
    },
}

/// The ways to reach the bank.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Variant {
    /// Call the store's service methods in process.
    Direct,
    /// The generated Collector client over encoded commands to a local sink.
    Collector,
}

#[derive(Debug, thiserror::Error)]
enum CliError {
    #[error("cannot open the database: {0}")]
    Store(#[from] StoreError),
    #[error("cannot start the async runtime: {0}")]
    Runtime(#[from] std::io::Error),
    #[error("validation failed: {0}")]
    Validation(#[from] ValidationError),
}

fn main() -> ExitCode {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match run(cli) {
        Ok(summary) => {
            println!("{summary}");
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("bank: {err}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<String, CliError> {
    match cli.command {
        Command::Validate { variant, db } => {
            let bank = match &db {
                Some(path) => Bank::open(path)?,
                None => Bank::open_in_memory()?,
            };
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let report = runtime.block_on(async {
                match variant {
                    Variant::Direct => validator::run(&Direct::new(bank)).await,
                    Variant::Collector => validator::run(&collector(bank)).await,
                }
            })?;
            Ok(summary(variant, &report))
        }
    }
}

fn summary(variant: Variant, report: &Report) -> String {
    let name = match variant {
        Variant::Direct => "direct",
        Variant::Collector => "collector",
    };
    format!(
        "validation passed: variant={name} steps={} customer={} checking={} savings={} \
         statements={} clock={} elapsed={:?}",
        report.steps.len(),
        report.customer_id,
        report.checking_id,
        report.savings_id,
        report.statement_dates.len(),
        report.clock.to_rfc3339(),
        report.elapsed(),
    )
}
