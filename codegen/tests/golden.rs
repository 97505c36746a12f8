//! Golden tests: the generator's output for small fixtures, checked in and compared byte for byte.
//! Refresh with `UPDATE_EXPECT=1 cargo test -p codegen --test golden` and review the diff.
//!
//! The kitchen-sink output is itself a workspace member, so it is compiled (and linted) by every
//! `cargo build` / `cargo clippy` of the workspace.

use std::path::Path;

fn golden(name: &str) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let schema = dir.join(format!("{name}.yaml"));
    let out = dir.join(name);
    // The options `cargo xtask gen` uses for this crate.
    let files = codegen::Generator::new(&schema, &out)
        .source_name(format!("codegen/tests/golden/{name}.yaml"))
        .runtime(codegen::RuntimeDep::Path("../../../../runtime".into()))
        .tool("cargo xtask gen")
        .render()
        .unwrap_or_else(|e| panic!("{e}"));
    if std::env::var_os("UPDATE_EXPECT").is_some() {
        codegen::write(&out, &files).unwrap_or_else(|e| panic!("{e}"));
    }
    let stale = codegen::check(&out, &files).unwrap_or_else(|e| panic!("{e}"));
    assert!(
        stale.is_empty(),
        "golden output differs (UPDATE_EXPECT=1 to refresh):\n{}",
        stale.join("\n")
    );
}

#[test]
fn kitchen_sink() {
    golden("kitchen_sink");
}

#[test]
fn output_is_a_pure_function_of_the_schema() {
    let schema = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/kitchen_sink.yaml");
    let api = codegen::load(&schema).unwrap_or_else(|e| panic!("{e}"));
    let first = codegen::render(&api, "x.yaml").unwrap_or_else(|e| panic!("{e}"));
    let again = codegen::load(&schema).unwrap_or_else(|e| panic!("{e}"));
    let second = codegen::render(&again, "x.yaml").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(first, second);
    for f in &first {
        // JSON has no comments: its marker is the `$comment` on the second line.
        let line = usize::from(f.path.ends_with(".json"));
        assert!(
            f.text
                .lines()
                .nth(line)
                .is_some_and(|l| l.contains("@generated") && l.contains("DO NOT EDIT")),
            "{} lacks the header",
            f.path
        );
    }
}
