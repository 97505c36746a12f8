//! `raftgen`: the generator as a command, for a service in any workspace.
//!
//! ```text
//! raftgen gen --schema schema/inventory.yaml --out generated [--check] [--accept-breaking]
//! ```
//!
//! The schema is checked against its compatibility lock (`<schema>.lock.json` beside it, or
//! `--lock FILE`), which is written on the first run and rewritten with every change. Only the
//! files whose text changed are written, so a build recompiles only when the schema changed.

use std::path::{Component, Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

/// Generates the crate of a Raft-replicated service from its description.
#[derive(Debug, Parser)]
#[command(name = "raftgen", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Generate (or check) a service's crate from its schema.
    Gen(Gen),
    /// Print the JSON Schema of the description format (for editors and validators).
    FormatSchema,
}

#[derive(Debug, Args)]
struct Gen {
    /// The service description (YAML or JSON).
    #[arg(long, value_name = "FILE")]
    schema: PathBuf,
    /// The directory of the generated crate; it is owned by the generator (files it would not
    /// write are removed).
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// The generated package's name (default `<service>-generated`).
    #[arg(long, value_name = "NAME")]
    crate_name: Option<String>,
    /// The runtime crate's directory (default: the runtime beside the codegen crate this
    /// `raftgen` was built from). Written into the generated manifest relative to `--out`.
    #[arg(long, value_name = "DIR", conflicts_with = "runtime_version")]
    runtime_path: Option<PathBuf>,
    /// Depend on the runtime from a registry, with this version requirement.
    #[arg(long, value_name = "VERSION")]
    runtime_version: Option<String>,
    /// The compatibility lock (default `<schema>.lock.json` beside the schema).
    #[arg(long, value_name = "FILE")]
    lock: Option<PathBuf>,
    /// Write nothing; list what is out of date and exit with 1 if anything is.
    #[arg(long, conflicts_with = "accept_breaking")]
    check: bool,
    /// Let incompatible changes through (they are listed) and rewrite the lock.
    #[arg(long)]
    accept_breaking: bool,
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::FormatSchema => {
            print!("{}", codegen::format_schema());
            ExitCode::SUCCESS
        }
        Command::Gen(args) => match gen_crate(&args) {
            Ok(code) => code,
            Err(e) => {
                eprintln!("{e}");
                ExitCode::FAILURE
            }
        },
    }
}

fn gen_crate(args: &Gen) -> Result<ExitCode, codegen::Error> {
    let runtime = match (&args.runtime_version, &args.runtime_path) {
        (Some(version), _) => codegen::RuntimeDep::Version(version.clone()),
        (None, Some(dir)) => codegen::RuntimeDep::Path(relative(&args.out, dir)),
        (None, None) => {
            let beside = Path::new(env!("CARGO_MANIFEST_DIR")).join("../runtime");
            codegen::RuntimeDep::Path(relative(&args.out, &beside))
        }
    };
    let lock = args
        .lock
        .clone()
        .unwrap_or_else(|| args.schema.with_extension("lock.json"));
    let mut generator = codegen::Generator::new(&args.schema, &args.out)
        .runtime(runtime)
        .lock(&lock)
        .accept_breaking(args.accept_breaking)
        .tool("raftgen gen");
    if let Some(name) = &args.crate_name {
        generator = generator.crate_name(name);
    }
    if args.check {
        let stale = generator.check()?;
        if stale.is_empty() {
            println!("{} is up to date", args.out.display());
            return Ok(ExitCode::SUCCESS);
        }
        for line in &stale {
            eprintln!("error: {line}");
        }
        eprintln!("run `raftgen gen` without --check and commit the schema and its crate together");
        return Ok(ExitCode::FAILURE);
    }
    let rendered = generator.generate()?;
    for line in &rendered.accepted {
        eprintln!("accepted breaking change: {line}");
    }
    if rendered.changed.is_empty() {
        println!("{} is up to date", args.out.display());
    } else {
        for file in &rendered.changed {
            println!("wrote {file}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `target` as a path relative to the directory `from` (both taken from the current directory
/// when relative), with `/` separators, for a manifest's `path = "…"`.
fn relative(from: &Path, target: &Path) -> String {
    let absolute = |p: &Path| {
        let p = std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
        // `..` is resolved by hand: the directories may not exist yet.
        let mut out = PathBuf::new();
        for c in p.components() {
            match c {
                Component::ParentDir => {
                    out.pop();
                }
                Component::CurDir => {}
                other => out.push(other),
            }
        }
        out
    };
    let (from, target) = (absolute(from), absolute(target));
    let common = from
        .components()
        .zip(target.components())
        .take_while(|(a, b)| a == b)
        .count();
    let mut parts: Vec<String> = vec!["..".into(); from.components().count() - common];
    parts.extend(
        target
            .components()
            .skip(common)
            .map(|c| c.as_os_str().to_string_lossy().into_owned()),
    );
    if parts.is_empty() {
        ".".into()
    } else {
        parts.join("/")
    }
}

#[cfg(test)]
mod tests {
    use super::relative;
    use std::path::Path;

    #[test]
    fn a_runtime_path_is_written_relative_to_the_crate() {
        assert_eq!(
            relative(
                Path::new("/w/app/generated"),
                Path::new("/src/toolkit/runtime")
            ),
            "../../../src/toolkit/runtime"
        );
        assert_eq!(
            relative(Path::new("/w/generated"), Path::new("/w/vendor/../runtime")),
            "../runtime"
        );
        assert_eq!(relative(Path::new("/w/a"), Path::new("/w/a")), ".");
    }
}
