//! Turns a service description (`schema/*.yaml` or `.json`) into the generated crate.
//!
//! The pipeline is: [`load`] (parse + validate into the [`model::Api`], collecting every problem
//! as a [`Diagnostics`] with file:line:col and a hint) → [`render`] (emit every file in memory) →
//! [`write`] (swap the whole output directory in at once) or [`check`] (compare, write nothing).
//! With a lock ([`Generator::lock`]), the schema is also checked against what it promised before
//! ([`lock`]), and the new lock is rendered with the files.

pub mod diag;
pub mod document;
pub mod emit;
pub mod lock;
pub mod model;

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

pub use diag::{Diagnostic, Diagnostics};
pub use emit::GeneratedFile;
pub use model::Api;

use document::{Document, Pos};

/// Why generation failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The description has problems; nothing was written.
    #[error("{0}")]
    Schema(#[from] Diagnostics),
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// The lock file is unreadable.
    #[error("{path}: {message}")]
    Lock {
        /// The lock file.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// The emitted Rust did not parse (a bug in the generator).
    #[error("internal generator error in {file}: {source}")]
    Emit {
        /// The file being emitted.
        file: String,
        /// The parse error.
        source: syn::Error,
    },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Reads and validates a description file. YAML and JSON are both accepted (JSON is YAML).
pub fn load(path: &Path) -> Result<Api, Error> {
    let source = fs::read_to_string(path).map_err(io_err(path))?;
    Ok(parse(path, &source)?)
}

/// Parses and validates description text; `path` is only used in messages.
pub fn parse(path: &Path, source: &str) -> Result<Api, Diagnostics> {
    parse_document(path, source).map(|(_, api)| api)
}

/// Like [`parse`], keeping the document as written (with positions) beside the model.
fn parse_document(path: &Path, source: &str) -> Result<(Document, Api), Diagnostics> {
    let doc: Document =
        serde_saphyr::from_str(source).map_err(|e| syntax_error(path, source, &e))?;
    let api = Api::from_document(&doc, source).map_err(|items| located(path, source, items))?;
    Ok((doc, api))
}

fn located(path: &Path, source: &str, items: Vec<Diagnostic>) -> Diagnostics {
    let items = items.into_iter().map(|d| fix_quoted(source, d)).collect();
    Diagnostics::new(path, source, items)
}

/// Checks description text against a lock: every incompatible change, at its place in `source`.
pub fn check_lock(path: &Path, source: &str, lock: &lock::Lock) -> Result<Api, Diagnostics> {
    let (doc, api) = parse_document(path, source)?;
    let items = lock::check(&doc, &api, lock);
    if items.is_empty() {
        Ok(api)
    } else {
        Err(located(path, source, items))
    }
}

/// Positions of quoted scalars point at the quote; move them onto the token itself.
fn fix_quoted(source: &str, mut d: Diagnostic) -> Diagnostic {
    if let Some(line) = source.lines().nth((d.pos.line as usize).saturating_sub(1)) {
        let col = (d.pos.col as usize).saturating_sub(1);
        let at = line.chars().nth(col);
        let token_start = d.token.chars().next();
        if matches!(at, Some('"') | Some('\'')) && token_start != at {
            d.pos.col += 1;
        }
    }
    d
}

fn syntax_error(path: &Path, source: &str, e: &serde_saphyr::Error) -> Diagnostics {
    let pos = e
        .location()
        .map(|l| Pos {
            line: l.line(),
            col: l.column(),
        })
        .unwrap_or_default();
    let text = e.to_string();
    let first = text.lines().next().unwrap_or("invalid description").trim();
    // serde-saphyr prefixes its message with `error: line L column C: `; we print our own.
    let message = match first.find(" column ") {
        Some(at) => first[at..]
            .split_once(": ")
            .map_or(first, |(_, rest)| rest)
            .to_string(),
        None => first.trim_start_matches("error: ").to_string(),
    };
    let token = source
        .lines()
        .nth((pos.line as usize).saturating_sub(1))
        .map(|l| {
            l.chars()
                .skip((pos.col as usize).saturating_sub(1))
                .take_while(|c| !c.is_whitespace() && *c != ':')
                .collect::<String>()
        })
        .unwrap_or_default();
    let hint = "the format is described by schema/service.schema.json: top-level keys are \
                service, doc, types, errors, operations";
    Diagnostics::new(
        path,
        source,
        vec![Diagnostic::new("schema::syntax", pos, token, message).hint(hint)],
    )
}

/// How the generated crate depends on the runtime crate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RuntimeDep {
    /// A path, relative to the generated crate's directory (inside one workspace).
    Path(String),
    /// A version requirement (the runtime from a registry).
    Version(String),
}

/// Generates one service crate from one description: the library form of `raftgen gen` (and of
/// this repository's `cargo xtask gen`), usable from any build tool.
///
/// ```no_run
/// let written = codegen::Generator::new("schema/kv.yaml", "generated")
///     .crate_name("kv-generated")
///     .runtime(codegen::RuntimeDep::Version("0.1".into()))
///     .generate()?;
/// # Ok::<(), codegen::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct Generator {
    schema: PathBuf,
    out: PathBuf,
    source_name: Option<String>,
    options: emit::Options,
    lock: Option<PathBuf>,
    accept_breaking: bool,
}

/// Everything one [`Generator`] renders.
#[derive(Debug, Clone)]
pub struct Rendered {
    /// The generated crate's files.
    pub files: Vec<GeneratedFile>,
    /// The lock file and its new text, with [`Generator::lock`].
    pub lock: Option<(PathBuf, String)>,
    /// The breaking changes let through by [`Generator::accept_breaking`], one line each.
    pub accepted: Vec<String>,
    /// What [`Generator::generate`] wrote or removed: the crate's files (relative to its
    /// directory) and the lock; empty when everything was up to date, and from a render.
    pub changed: Vec<String>,
}

impl Generator {
    /// Generates from the description at `schema` into the crate directory `out`. Defaults: the
    /// crate is named `<service>-generated` and depends on the runtime at `../runtime`.
    pub fn new(schema: impl Into<PathBuf>, out: impl Into<PathBuf>) -> Self {
        Generator {
            schema: schema.into(),
            out: out.into(),
            source_name: None,
            options: emit::Options::default(),
            lock: None,
            accept_breaking: false,
        }
    }

    /// Checks the schema against the lock file at `path` (when it exists) and renders its new
    /// text: an incompatible change fails like any schema error, and nothing is written.
    pub fn lock(mut self, path: impl Into<PathBuf>) -> Self {
        self.lock = Some(path.into());
        self
    }

    /// Lets incompatible changes through (they are listed in [`Rendered::accepted`]) and
    /// rewrites the lock: for a deliberate break.
    pub fn accept_breaking(mut self, accept: bool) -> Self {
        self.accept_breaking = accept;
        self
    }

    /// The generated package's name.
    pub fn crate_name(mut self, name: impl Into<String>) -> Self {
        self.options.crate_name = Some(name.into());
        self
    }

    /// How the generated crate depends on the runtime.
    pub fn runtime(mut self, dep: RuntimeDep) -> Self {
        self.options.runtime = dep;
        self
    }

    /// The schema's name in the generated headers and messages (default: the path as given).
    pub fn source_name(mut self, name: impl Into<String>) -> Self {
        self.source_name = Some(name.into());
        self
    }

    /// The command that regenerates the crate, named in every generated file's header
    /// (default `raftgen gen`).
    pub fn tool(mut self, command: impl Into<String>) -> Self {
        self.options.tool = command.into();
        self
    }

    /// The directory the crate is written to.
    pub fn out_dir(&self) -> &Path {
        &self.out
    }

    /// Loads and validates the description and emits every file in memory; writes nothing.
    pub fn render(&self) -> Result<Vec<GeneratedFile>, Error> {
        Ok(self.render_all()?.files)
    }

    /// Like [`Generator::render`], with the lock checked and its new text rendered.
    pub fn render_all(&self) -> Result<Rendered, Error> {
        let source = fs::read_to_string(&self.schema).map_err(io_err(&self.schema))?;
        let (doc, api) = parse_document(&self.schema, &source)?;
        let mut accepted = Vec::new();
        let lock = match &self.lock {
            None => None,
            Some(path) => {
                if let Some(old) = read_lock(path)? {
                    let items = lock::check(&doc, &api, &old);
                    if !items.is_empty() {
                        let found = located(&self.schema, &source, items);
                        if !self.accept_breaking {
                            return Err(Error::Schema(found));
                        }
                        accepted = found.summary();
                    }
                }
                Some((path.clone(), lock::Lock::of(&api).to_json()))
            }
        };
        let source_name = self
            .source_name
            .clone()
            .unwrap_or_else(|| self.schema.to_string_lossy().replace('\\', "/"));
        Ok(Rendered {
            files: emit::crate_files(&api, &source_name, &self.options)?,
            lock,
            accepted,
            changed: Vec::new(),
        })
    }

    /// Renders and swaps the crate into the output directory (all files or none, only when
    /// something changed: see [`write`]), then writes the lock. A bad description writes
    /// nothing.
    pub fn generate(&self) -> Result<Rendered, Error> {
        let mut rendered = self.render_all()?;
        rendered.changed = write(&self.out, &rendered.files)?;
        if let Some((path, text)) = &rendered.lock
            && fs::read_to_string(path).ok().as_deref() != Some(text.as_str())
        {
            write_file(path, text)?;
            rendered.changed.push(path.display().to_string());
        }
        Ok(rendered)
    }

    /// Renders and compares with the output directory and the lock; returns what is stale
    /// (empty when up to date). Writes nothing.
    pub fn check(&self) -> Result<Vec<String>, Error> {
        let rendered = self.render_all()?;
        let mut stale = check(&self.out, &rendered.files)?;
        if let Some((path, text)) = &rendered.lock
            && fs::read_to_string(path).ok().as_deref() != Some(text.as_str())
        {
            stale.push(format!("{} is out of date", path.display()));
        }
        Ok(stale)
    }
}

/// The lock at `path`, or `None` when there is none yet.
fn read_lock(path: &Path) -> Result<Option<lock::Lock>, Error> {
    match fs::read_to_string(path) {
        Ok(text) => lock::Lock::from_json(&text)
            .map(Some)
            .map_err(|message| Error::Lock {
                path: path.to_path_buf(),
                message,
            }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_err(path)(e)),
    }
}

/// Emits every file of the generated crate for an already loaded description, with the default
/// options (crate `<service>-generated`, runtime at `../runtime`).
pub fn render(api: &Api, source_name: &str) -> Result<Vec<GeneratedFile>, Error> {
    emit::crate_files(api, source_name, &emit::Options::default())
}

/// The tonic/prost module of a hand-written `.proto` file declaring `package`, with the
/// generated-file header naming `source_name` (used for the runtime's own services).
pub fn proto_module(proto: &Path, source_name: &str, package: &str) -> Result<String, Error> {
    let text = fs::read_to_string(proto).map_err(io_err(proto))?;
    let file_name = proto
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let (rust, _) = emit::grpc::compile_proto(&file_name, package, &text).map_err(io_err(proto))?;
    Ok(format!(
        "// @generated by `cargo xtask gen` from {source_name}. DO NOT EDIT.\n\n{rust}"
    ))
}

/// The JSON Schema (draft-07) of the description format.
pub fn format_schema() -> String {
    document::json_schema()
}

/// Replaces `out_dir` with exactly `files` and returns what changed (files written or removed,
/// relative to `out_dir`; empty when the directory was already up to date, and then nothing is
/// touched). The new tree is assembled in a sibling directory and swapped in with renames, so an
/// interrupted run leaves either the old or the new tree; unchanged files are hard-linked into
/// it, so they keep their modification times and a build does not recompile what did not
/// change.
pub fn write(out_dir: &Path, files: &[GeneratedFile]) -> Result<Vec<String>, Error> {
    // In `files`' order, then the files to remove.
    let compared = compare(out_dir, files)?;
    let mut changed: Vec<String> = compared
        .iter()
        .filter(|(_, state)| *state != FileState::Same)
        .map(|(rel, _)| rel.clone())
        .collect();
    if changed.is_empty() {
        return Ok(changed);
    }
    let parent = out_dir.parent().unwrap_or(Path::new("."));
    let name = out_dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "generated".into());
    let staging = parent.join(format!(".{name}.new"));
    let old = parent.join(format!(".{name}.old"));
    for dir in [&staging, &old] {
        if dir.exists() {
            fs::remove_dir_all(dir).map_err(io_err(dir))?;
        }
    }
    for (f, (_, state)) in files.iter().zip(&compared) {
        let path = staging.join(&f.path);
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir).map_err(io_err(dir))?;
        }
        let kept = *state == FileState::Same && fs::hard_link(out_dir.join(&f.path), &path).is_ok();
        if !kept {
            fs::write(&path, &f.text).map_err(io_err(&path))?;
        }
    }
    if out_dir.exists() {
        fs::rename(out_dir, &old).map_err(io_err(out_dir))?;
    }
    fs::rename(&staging, out_dir).map_err(io_err(out_dir))?;
    if old.exists() {
        fs::remove_dir_all(&old).map_err(io_err(&old))?;
    }
    changed.sort();
    Ok(changed)
}

/// Writes one file through a temporary sibling and a rename.
pub fn write_file(path: &Path, text: &str) -> Result<(), Error> {
    let tmp = path.with_extension("tmp");
    fs::write(&tmp, text).map_err(io_err(&tmp))?;
    fs::rename(&tmp, path).map_err(io_err(path))
}

/// Lists what differs between `out_dir` and `files`: stale or missing files, and files that
/// generation would not produce. Writes nothing.
pub fn check(out_dir: &Path, files: &[GeneratedFile]) -> Result<Vec<String>, Error> {
    Ok(compare(out_dir, files)?
        .into_iter()
        .filter_map(|(rel, state)| {
            let path = out_dir.join(rel);
            match state {
                FileState::Same => None,
                FileState::Stale => Some(format!("{} is out of date", path.display())),
                FileState::Missing => Some(format!("{} is missing", path.display())),
                FileState::Extra => Some(format!("{} is not generated", path.display())),
            }
        })
        .collect())
}

/// How a file of the output directory compares with what generation produces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FileState {
    /// On disk as generated (line endings aside).
    Same,
    /// On disk with other text.
    Stale,
    /// Generated, not on disk.
    Missing,
    /// On disk, not generated.
    Extra,
}

/// Every generated file's state in `out_dir`, then the files there that generation would not
/// produce; paths relative to `out_dir`.
fn compare(out_dir: &Path, files: &[GeneratedFile]) -> Result<Vec<(String, FileState)>, Error> {
    let mut out = Vec::new();
    for f in files {
        let path = out_dir.join(&f.path);
        let state = match fs::read_to_string(&path) {
            Ok(text) if text.replace("\r\n", "\n") == f.text => FileState::Same,
            Ok(_) => FileState::Stale,
            Err(e) if e.kind() == io::ErrorKind::InvalidData => FileState::Stale,
            Err(e) if e.kind() == io::ErrorKind::NotFound => FileState::Missing,
            Err(e) => return Err(io_err(&path)(e)),
        };
        out.push((f.path.clone(), state));
    }
    let mut existing = Vec::new();
    list_files(out_dir, out_dir, &mut existing).map_err(io_err(out_dir))?;
    for rel in existing {
        if !files.iter().any(|f| f.path == rel) {
            out.push((rel, FileState::Extra));
        }
    }
    Ok(out)
}

fn list_files(root: &Path, dir: &Path, out: &mut Vec<String>) -> io::Result<()> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    let mut entries: Vec<_> = entries.collect::<Result<_, _>>()?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let path = entry.path();
        if entry.file_type()?.is_dir() {
            list_files(root, &path, out)?;
        } else if let Ok(rel) = path.strip_prefix(root) {
            out.push(rel.to_string_lossy().replace('\\', "/"));
        }
    }
    Ok(())
}
