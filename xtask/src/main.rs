//! `cargo xtask gen [--check]`: regenerate (or verify) everything derived from a schema.
//!
//! - every generated crate in [`TARGETS`] (the bank, the kv example, the kitchen sink), each
//!   swapped in whole;
//! - `schema/service.schema.json`, the JSON Schema of the description format;
//! - `runtime/src/raft_pb.rs`, the runtime's raft message service.
//!
//! With `--check` nothing is written; the exit code is 1 and the stale files are listed when the
//! checked-in output differs from what the schemas produce.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

const USAGE: &str = "\
usage: cargo xtask gen [--check]

Regenerates every generated crate from its schema, the JSON Schema of the description format
and the runtime's raft message service. Nothing is written when a schema has a problem.

options:
  --check   write nothing; list stale files and exit with 1 if any output is out of date
  -h, --help  print this help";

/// One generated crate: its schema, its output directory and the path from that directory to
/// the runtime crate (all relative to the project root).
struct Target {
    schema: &'static str,
    out: &'static str,
    runtime: &'static str,
}

/// Every generated crate of the project.
const TARGETS: &[Target] = &[
    Target {
        schema: "schema/bank.yaml",
        out: "generated",
        runtime: "../runtime",
    },
    Target {
        schema: "examples/kv/schema/kv.yaml",
        out: "examples/kv/generated",
        runtime: "../../../runtime",
    },
    Target {
        schema: "codegen/tests/golden/kitchen_sink.yaml",
        out: "codegen/tests/golden/kitchen_sink",
        runtime: "../../../../runtime",
    },
];

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(code) => code,
        Err(message) => {
            eprintln!("{message}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &[String]) -> Result<ExitCode, String> {
    let mut check = false;
    match args.first().map(String::as_str) {
        Some("gen") => {}
        Some("-h" | "--help" | "help") => {
            println!("{USAGE}");
            return Ok(ExitCode::SUCCESS);
        }
        _ => return Err(USAGE.into()),
    }
    for arg in &args[1..] {
        match arg.as_str() {
            "--check" => check = true,
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(ExitCode::SUCCESS);
            }
            other => return Err(format!("unknown argument `{other}`\n\n{USAGE}")),
        }
    }
    // Work from the project root so messages name files as `schema/bank.yaml:LINE:COL`.
    let root = project_root();
    std::env::set_current_dir(&root).map_err(|e| format!("{}: {e}", root.display()))?;
    let started = Instant::now();
    let report = xtask_gen(Path::new("."), check).map_err(|e| e.to_string())?;
    let elapsed = started.elapsed().as_millis();
    if !check {
        let outs: Vec<&str> = TARGETS.iter().map(|t| t.out).collect();
        println!("wrote {} ({elapsed} ms)", outs.join(", "));
        return Ok(ExitCode::SUCCESS);
    }
    if report.is_empty() {
        println!("generated code is up to date ({elapsed} ms)");
        return Ok(ExitCode::SUCCESS);
    }
    for line in &report {
        eprintln!("error: {line}");
    }
    eprintln!("run `cargo xtask gen` and commit the schemas and their generated crates together");
    Ok(ExitCode::FAILURE)
}

/// Generates (or checks) every output; returns the stale-file report in check mode. Every
/// schema is loaded and rendered before anything is written, so one bad schema writes nothing.
fn xtask_gen(root: &Path, check: bool) -> Result<Vec<String>, codegen::Error> {
    let mut crates = Vec::new();
    for target in TARGETS {
        let generator = codegen::Generator::new(root.join(target.schema), root.join(target.out))
            .source_name(target.schema)
            .runtime(codegen::RuntimeDep::Path(target.runtime.into()));
        let files = generator.render()?;
        crates.push((generator, files));
    }
    // Single files outside the generated crates: the format's JSON Schema and the runtime's
    // raft message service.
    let singles = [
        (
            root.join("schema/service.schema.json"),
            codegen::format_schema(),
        ),
        (
            root.join("runtime/src/raft_pb.rs"),
            codegen::proto_module(
                &root.join("runtime/proto/raft.proto"),
                "runtime/proto/raft.proto",
                "raft.v1",
            )?,
        ),
    ];
    if check {
        let mut stale = Vec::new();
        for (generator, files) in &crates {
            stale.extend(codegen::check(generator.out_dir(), files)?);
        }
        for (path, text) in &singles {
            if std::fs::read_to_string(path).ok().as_deref() != Some(text.as_str()) {
                stale.push(format!("{} is out of date", path.display()));
            }
        }
        Ok(stale)
    } else {
        for (generator, files) in &crates {
            codegen::write(generator.out_dir(), files)?;
        }
        for (path, text) in &singles {
            codegen::write_file(path, text)?;
        }
        Ok(Vec::new())
    }
}

fn project_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

#[cfg(test)]
mod tests {
    /// `cargo test` fails when the checked-in output is stale (rust-analyzer's habit).
    #[test]
    fn generated_code_is_fresh() {
        let report =
            super::xtask_gen(&super::project_root(), true).unwrap_or_else(|e| panic!("{e}"));
        assert!(
            report.is_empty(),
            "run `cargo xtask gen` and commit the result:\n{}",
            report.join("\n")
        );
    }
}
