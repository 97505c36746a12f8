//! `cargo xtask gen [--check]`: regenerate (or verify) everything derived from `schema/`.
//!
//! - `generated/` (the crate) from `schema/bank.yaml`, swapped in whole;
//! - `schema/service.schema.json`, the JSON Schema of the description format.
//!
//! With `--check` nothing is written; the exit code is 1 and the stale files are listed when the
//! checked-in output differs from what the schema produces.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

const USAGE: &str = "usage: cargo xtask gen [--check] [--schema PATH] [--out DIR]";

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
    let mut it = args.iter();
    if it.next().map(String::as_str) != Some("gen") {
        return Err(USAGE.into());
    }
    // Work from the project root so messages name files as `schema/bank.yaml:LINE:COL`.
    let root = project_root();
    std::env::set_current_dir(&root).map_err(|e| format!("{}: {e}", root.display()))?;
    let root = PathBuf::from(".");
    let mut check = false;
    let mut schema = PathBuf::from("schema/bank.yaml");
    let mut out = PathBuf::from("generated");
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--check" => check = true,
            "--schema" => schema = PathBuf::from(it.next().ok_or(USAGE)?),
            "--out" => out = PathBuf::from(it.next().ok_or(USAGE)?),
            other => return Err(format!("unknown argument `{other}`\n{USAGE}")),
        }
    }
    let format_schema = root.join("schema/service.schema.json");
    let started = Instant::now();
    let report =
        xtask_gen(&root, &schema, &out, &format_schema, check).map_err(|e| e.to_string())?;
    let elapsed = started.elapsed();
    if check {
        if report.is_empty() {
            println!("generated code is up to date ({} ms)", elapsed.as_millis());
            Ok(ExitCode::SUCCESS)
        } else {
            for line in &report {
                eprintln!("error: {line}");
            }
            eprintln!("run `cargo xtask gen` and commit schema/ and generated/ together");
            Ok(ExitCode::FAILURE)
        }
    } else {
        println!("wrote {} ({} ms)", out.display(), elapsed.as_millis());
        Ok(ExitCode::SUCCESS)
    }
}

/// Generates (or checks) both outputs; returns the stale-file report in check mode.
fn xtask_gen(
    root: &Path,
    schema: &Path,
    out: &Path,
    format_schema: &Path,
    check: bool,
) -> Result<Vec<String>, codegen::Error> {
    let api = codegen::load(schema)?;
    let source_name = schema
        .strip_prefix(root)
        .unwrap_or(schema)
        .to_string_lossy()
        .replace('\\', "/");
    let files = codegen::render(&api, &source_name, "../runtime")?;
    // Single files outside the generated crate: the format's JSON Schema and the runtime's
    // raft message service.
    let mut singles = vec![(format_schema.to_path_buf(), codegen::format_schema())];
    let raft_proto = root.join("runtime/proto/raft.proto");
    singles.push((
        root.join("runtime/src/raft_pb.rs"),
        codegen::proto_module(&raft_proto, "runtime/proto/raft.proto", "raft.v1")?,
    ));
    if check {
        let mut stale = codegen::check(out, &files)?;
        for (path, text) in &singles {
            if std::fs::read_to_string(path).ok().as_deref() != Some(text.as_str()) {
                stale.push(format!("{} is out of date", path.display()));
            }
        }
        Ok(stale)
    } else {
        codegen::write(out, &files)?;
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
        let root = super::project_root();
        let report = super::xtask_gen(
            &root,
            &root.join("schema/bank.yaml"),
            &root.join("generated"),
            &root.join("schema/service.schema.json"),
            true,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert!(
            report.is_empty(),
            "run `cargo xtask gen` and commit the result:\n{}",
            report.join("\n")
        );
    }
}
