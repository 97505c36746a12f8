//! `cargo xtask gen [--check]`: regenerate (or verify) everything derived from a schema.
//!
//! - every generated crate in [`TARGETS`] (the bank, the kv example and its next version, the
//!   kitchen sink), each swapped in whole, after its schema is checked against its lock
//!   (`<schema>.lock.json`, rewritten with the crate);
//! - `schema/service.schema.json`, the JSON Schema of the description format;
//! - `runtime/src/raft/rpc_pb.rs`, the runtime's raft message service.
//!
//! With `--check` nothing is written; the exit code is 1 and the stale files are listed when the
//! checked-in output differs from what the schemas produce.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

const USAGE: &str = "\
usage: cargo xtask gen [--check | --accept-breaking]

Regenerates every generated crate from its schema, the JSON Schema of the description format
and the runtime's raft message service. Each schema is first checked against its lock
(schema/<name>.lock.json: every operation, type, field, variant and error with its tag, kind
and type); an incompatible change (a changed tag, type or kind, a removal whose tag is not
reserved, a new parameter without a default) is an error at its line and column. Nothing is
written when a schema has a problem.

options:
  --check            write nothing; list stale files and exit with 1 if any output is out of date
  --accept-breaking  let incompatible changes through, list them, and rewrite the locks
  -h, --help         print this help";

/// One generated crate: its schema, its output directory and the path from that directory to
/// the runtime crate (all relative to the project root).
struct Target {
    schema: &'static str,
    out: &'static str,
    runtime: &'static str,
    /// The package's name, when not `<service>-generated`.
    crate_name: Option<&'static str>,
}

/// Every generated crate of the project.
const TARGETS: &[Target] = &[
    Target {
        schema: "schema/bank.yaml",
        out: "generated",
        runtime: "../runtime",
        crate_name: None,
    },
    Target {
        schema: "examples/kv/schema/kv.yaml",
        out: "examples/kv/generated",
        runtime: "../../../runtime",
        crate_name: None,
    },
    Target {
        schema: "examples/kv-next/schema/kv.yaml",
        out: "examples/kv-next/generated",
        runtime: "../../../runtime",
        crate_name: Some("kv-next-generated"),
    },
    Target {
        schema: "codegen/tests/golden/kitchen_sink.yaml",
        out: "codegen/tests/golden/kitchen_sink",
        runtime: "../../../../runtime",
        crate_name: None,
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
    let (mut check, mut accept_breaking) = (false, false);
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
            "--accept-breaking" => accept_breaking = true,
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
    if check && accept_breaking {
        return Err(format!(
            "--check and --accept-breaking exclude each other\n\n{USAGE}"
        ));
    }
    let report = xtask_gen(Path::new("."), check, accept_breaking).map_err(|e| e.to_string())?;
    let elapsed = started.elapsed().as_millis();
    if !check {
        for file in &report {
            println!("wrote {file}");
        }
        println!(
            "{} file(s) changed, the rest up to date ({elapsed} ms)",
            report.len()
        );
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

/// The lock file of a schema: `x.yaml` → `x.lock.json`.
fn lock_path(schema: &Path) -> PathBuf {
    schema.with_extension("lock.json")
}

/// Generates (or checks) every output; returns the stale-file report in check mode and the files
/// written (only those whose text changed) otherwise. Every
/// schema is loaded, checked against its lock and rendered before anything is written, so one
/// bad schema writes nothing.
fn xtask_gen(
    root: &Path,
    check: bool,
    accept_breaking: bool,
) -> Result<Vec<String>, codegen::Error> {
    let mut crates = Vec::new();
    for target in TARGETS {
        let schema = root.join(target.schema);
        let mut generator = codegen::Generator::new(&schema, root.join(target.out))
            .source_name(target.schema)
            .runtime(codegen::RuntimeDep::Path(target.runtime.into()))
            .tool("cargo xtask gen")
            .lock(lock_path(&schema))
            .accept_breaking(accept_breaking);
        if let Some(name) = target.crate_name {
            generator = generator.crate_name(name);
        }
        let rendered = generator.render_all()?;
        for line in &rendered.accepted {
            eprintln!("accepted breaking change: {line}");
        }
        crates.push((generator, rendered));
    }
    // Single files outside the generated crates: the format's JSON Schema and the runtime's
    // raft message service.
    let singles = [
        (
            root.join("schema/service.schema.json"),
            codegen::format_schema(),
        ),
        (
            root.join("runtime/src/raft/rpc_pb.rs"),
            codegen::proto_module(
                &root.join("runtime/proto/raft.proto"),
                "runtime/proto/raft.proto",
                "raft.v1",
            )?,
        ),
    ];
    let locks: Vec<(PathBuf, String)> = crates
        .iter()
        .filter_map(|(_, rendered)| rendered.lock.clone())
        .collect();
    if check {
        let mut stale = Vec::new();
        for (generator, rendered) in &crates {
            stale.extend(codegen::check(generator.out_dir(), &rendered.files)?);
        }
        for (path, text) in singles.iter().chain(&locks) {
            if std::fs::read_to_string(path).ok().as_deref() != Some(text.as_str()) {
                stale.push(format!("{} is out of date", path.display()));
            }
        }
        Ok(stale)
    } else {
        let mut changed = Vec::new();
        for (generator, rendered) in &crates {
            for file in codegen::write(generator.out_dir(), &rendered.files)? {
                changed.push(generator.out_dir().join(file).display().to_string());
            }
        }
        for (path, text) in singles.iter().chain(&locks) {
            if std::fs::read_to_string(path).ok().as_deref() != Some(text.as_str()) {
                codegen::write_file(path, text)?;
                changed.push(path.display().to_string());
            }
        }
        Ok(changed)
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
            super::xtask_gen(&super::project_root(), true, false).unwrap_or_else(|e| panic!("{e}"));
        assert!(
            report.is_empty(),
            "run `cargo xtask gen` and commit the result:\n{}",
            report.join("\n")
        );
    }
    /// `API.md` states the gRPC status each domain error travels as: the runtime's table.
    #[test]
    fn the_api_reference_names_the_status_the_runtime_sends() {
        let screaming = |debug: String| {
            let mut out = String::new();
            for (i, c) in debug.chars().enumerate() {
                if c.is_ascii_uppercase() && i > 0 {
                    out.push('_');
                }
                out.push(c.to_ascii_uppercase());
            }
            out
        };
        let cases = codegen::emit::api_md::CANONICAL_STATUS
            .iter()
            .map(|(name, _)| *name)
            .chain(["Overdrawn", "Frozen"]);
        for name in cases {
            let sent = screaming(format!("{:?}", runtime::wire::codes::grpc_code(name)));
            assert_eq!(codegen::emit::api_md::grpc_status(name), sent, "{name}");
        }
    }
}
