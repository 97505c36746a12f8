//! Diagnostics for description files: every problem with its file, line, column, offending
//! token and a hint, rendered the way rustc renders its errors.

use std::fmt;
use std::path::{Path, PathBuf};

use crate::document::Pos;

/// One problem found in a description.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// Stable error code, e.g. `schema::unknown_type`.
    pub code: &'static str,
    /// What is wrong.
    pub message: String,
    /// Where the offending token starts.
    pub pos: Pos,
    /// The offending token as written (used to underline it).
    pub token: String,
    /// How to fix it.
    pub hint: Option<String>,
    /// A second place that matters (e.g. the first definition of a duplicate).
    pub related: Option<(Pos, String)>,
}

impl Diagnostic {
    /// A diagnostic at `pos` about `token`.
    pub fn new(code: &'static str, pos: Pos, token: impl Into<String>, message: String) -> Self {
        Diagnostic {
            code,
            message,
            pos,
            token: token.into(),
            hint: None,
            related: None,
        }
    }

    /// Adds a hint.
    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    /// Adds a related position with a label.
    pub fn related(mut self, pos: Pos, label: impl Into<String>) -> Self {
        self.related = Some((pos, label.into()));
        self
    }
}

/// All the problems of one description file; generation refuses to write anything while any exist.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.render())]
pub struct Diagnostics {
    /// The description file, as given.
    pub file: PathBuf,
    /// Its text (for the source snippets).
    pub text: String,
    /// The problems, sorted by position.
    pub items: Vec<Diagnostic>,
}

impl Diagnostics {
    /// Sorts the items by position so the report reads top to bottom.
    pub fn new(file: &Path, source: &str, mut items: Vec<Diagnostic>) -> Self {
        items.sort_by(|a, b| (a.pos, a.code).cmp(&(b.pos, b.code)));
        items.dedup();
        Diagnostics {
            file: file.to_path_buf(),
            text: source.to_string(),
            items,
        }
    }

    /// One `file:line:col: code: message` line per problem (handy for tests and tools).
    pub fn summary(&self) -> Vec<String> {
        self.items
            .iter()
            .map(|d| {
                format!(
                    "{}:{}: {}: {}",
                    self.file.display(),
                    d.pos,
                    d.code,
                    d.message
                )
            })
            .collect()
    }

    /// The full report with source snippets, underlines and hints.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for d in &self.items {
            render_one(&mut out, &self.file, &self.text, d);
        }
        out.push_str(&format!(
            "error: {} problem{} in {}; nothing was written\n",
            self.items.len(),
            if self.items.len() == 1 { "" } else { "s" },
            self.file.display()
        ));
        out
    }
}

fn render_one(out: &mut String, file: &Path, source: &str, d: &Diagnostic) {
    use fmt::Write;
    let _ = writeln!(out, "error[{}]: {}", d.code, d.message);
    let _ = writeln!(out, "  --> {}:{}", file.display(), d.pos);
    if let Some(line) = source.lines().nth((d.pos.line as usize).saturating_sub(1))
        && d.pos.line > 0
    {
        let num = d.pos.line.to_string();
        let pad = " ".repeat(num.len());
        let col = (d.pos.col as usize).saturating_sub(1);
        let width = d.token.chars().count().max(1);
        let _ = writeln!(out, "{pad} |");
        let _ = writeln!(out, "{num} | {line}");
        let _ = writeln!(out, "{pad} | {}{}", " ".repeat(col), "^".repeat(width));
    }
    if let Some((pos, label)) = &d.related {
        let _ = writeln!(out, "  = note: {label} at {}:{pos}", file.display());
    }
    if let Some(hint) = &d.hint {
        let _ = writeln!(out, "  = hint: {hint}");
    }
    out.push('\n');
}
