//! The runtime's floors (ARCHITECTURE.md, "The runtime, folder by folder"): no module imports
//! one from a floor above it, so there is no circle between folders. Read from the sources:
//! every `crate::<module>` path outside comments, in every file under `src/`.

use std::path::{Path, PathBuf};

/// Each top-level module's floor; a module may name only modules on its floor or below, and on
/// the ground floor only itself.
const FLOORS: &[(&str, u32)] = &[
    ("wire", 0),
    ("net", 0),
    ("lab", 0),
    ("util", 0),
    ("failpoint", 0),
    ("raft", 1),
    ("api", 2),
    ("ops", 3),
    ("cli", 4),
    ("codegen", 5),
];

fn floor(module: &str) -> Option<u32> {
    FLOORS.iter().find(|(m, _)| *m == module).map(|(_, f)| *f)
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    for entry in entries {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn no_module_imports_one_from_a_floor_above_it() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut wrong = Vec::new();
    for file in &files {
        let rel = file.strip_prefix(&src).expect("under src");
        let module = rel
            .components()
            .next()
            .map(|c| {
                c.as_os_str()
                    .to_string_lossy()
                    .trim_end_matches(".rs")
                    .to_string()
            })
            .unwrap_or_default();
        if module == "lib" {
            continue; // declares the folders and re-exports their names
        }
        let own = floor(&module)
            .unwrap_or_else(|| panic!("{}: module `{module}` has no floor", rel.display()));
        let text = std::fs::read_to_string(file).expect("read");
        for (n, line) in text.lines().enumerate() {
            if line.trim_start().starts_with("//") {
                continue;
            }
            assert!(
                !line.contains("crate::{"),
                "{}:{}: name the defining module, not the crate root: {line}",
                rel.display(),
                n + 1
            );
            for (at, _) in line.match_indices("crate::") {
                let name: String = line[at + 7..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                let Some(target) = floor(&name) else {
                    wrong.push(format!(
                        "{}:{}: `crate::{name}` is a root re-export; name its module",
                        rel.display(),
                        n + 1
                    ));
                    continue;
                };
                if name != module && (target > own || (target == own && own == 0)) {
                    wrong.push(format!(
                        "{}:{}: `{module}` (floor {own}) names `{name}` (floor {target})",
                        rel.display(),
                        n + 1
                    ));
                }
            }
        }
    }
    assert!(files.len() > 40, "read only {} files", files.len());
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}
