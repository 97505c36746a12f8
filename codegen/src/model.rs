//! The checked model of a service: what the emitters read. Built from a [`Document`] by
//! [`Api::from_document`], which collects every problem before giving up.

use std::collections::BTreeMap;

use heck::ToUpperCamelCase;

use crate::diag::Diagnostic;
use crate::document::Document;

mod check;
mod ty;

/// Largest tag a protobuf field number allows.
pub const MAX_TAG: u64 = 536_870_911;
/// Tags protobuf reserves for itself.
const RESERVED_TAGS: std::ops::RangeInclusive<u64> = 19_000..=19_999;

/// A validated service description.
#[derive(Debug, Clone, PartialEq)]
pub struct Api {
    /// UpperCamelCase service name, e.g. `Bank`.
    pub service: String,
    /// Service documentation.
    pub doc: Option<String>,
    /// Named types in declaration order.
    pub types: Vec<TypeDecl>,
    /// Domain error kinds in declaration order.
    pub errors: Vec<ErrorKind>,
    /// Declared roles in declaration order (the built-in [`ADMIN_ROLE`] and [`ANY_ROLE`] are
    /// not among them).
    pub roles: Vec<Role>,
    /// Operations in declaration order.
    pub operations: Vec<Operation>,
}

impl Operation {
    /// Who may call it, in words: `teller, auditor, admin`, or `any authenticated caller`.
    pub fn allowed(&self) -> String {
        if self.allow.iter().any(|r| r == ANY_ROLE) {
            return "any authenticated caller".to_string();
        }
        let mut roles: Vec<&str> = self.allow.iter().map(String::as_str).collect();
        roles.push(ADMIN_ROLE);
        roles.join(", ")
    }
}

/// The built-in role that may call every operation (and administers users).
pub const ADMIN_ROLE: &str = "admin";

/// The built-in role every authenticated caller holds.
pub const ANY_ROLE: &str = "any";

/// A role callers may hold.
#[derive(Debug, Clone, PartialEq)]
pub struct Role {
    /// snake_case name.
    pub name: String,
    /// Documentation.
    pub doc: Option<String>,
}

/// A named type.
#[derive(Debug, Clone, PartialEq)]
pub struct TypeDecl {
    /// UpperCamelCase name.
    pub name: String,
    /// Documentation.
    pub doc: Option<String>,
    /// Struct or enum.
    pub body: TypeBody,
}

/// The shape of a named type.
#[derive(Debug, Clone, PartialEq)]
pub enum TypeBody {
    /// A struct with ordered fields.
    Struct(Vec<Field>),
    /// An enum of unit variants.
    Enum(Vec<Variant>),
}

/// A struct field or an operation parameter.
#[derive(Debug, Clone, PartialEq)]
pub struct Field {
    /// snake_case name.
    pub name: String,
    /// Its type.
    pub ty: Ty,
    /// Stable tag.
    pub tag: u32,
    /// Documentation.
    pub doc: Option<String>,
    /// Default for an omitted parameter.
    pub default: Option<DefaultValue>,
    /// Marked deprecated.
    pub deprecated: bool,
}

/// An enum variant.
#[derive(Debug, Clone, PartialEq)]
pub struct Variant {
    /// snake_case wire name.
    pub name: String,
    /// Stable tag.
    pub tag: u32,
    /// Documentation.
    pub doc: Option<String>,
}

/// A domain error kind.
#[derive(Debug, Clone, PartialEq)]
pub struct ErrorKind {
    /// UpperCamelCase name.
    pub name: String,
    /// Stable tag.
    pub tag: u32,
    /// Documentation.
    pub doc: Option<String>,
}

/// Whether an operation writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpKind {
    /// Replicated write.
    Command,
    /// Read.
    Query,
}

/// An operation.
#[derive(Debug, Clone, PartialEq)]
pub struct Operation {
    /// snake_case name.
    pub name: String,
    /// Stable tag.
    pub tag: u32,
    /// Command or query.
    pub kind: OpKind,
    /// Documentation.
    pub doc: Option<String>,
    /// Ordered parameters.
    pub params: Vec<Field>,
    /// Return type; `None` is the unit type.
    pub returns: Option<Ty>,
    /// Error kinds it may raise.
    pub errors: Vec<String>,
    /// Marked deprecated.
    pub deprecated: bool,
    /// Parameters whose values key its events in the watch feed (commands only).
    pub watch_keys: Vec<String>,
    /// The roles that may call it (declared roles or [`ANY_ROLE`]), resolved: its own
    /// `allow`, else the schema's, else `any`. [`ADMIN_ROLE`] may call it too, always.
    pub allow: Vec<String>,
}

/// A type expression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ty {
    /// `bool`
    Bool,
    /// `i32`
    I32,
    /// `i64`
    I64,
    /// `u32`
    U32,
    /// `u64`
    U64,
    /// `f64`
    F64,
    /// `string`
    String,
    /// `bytes`
    Bytes,
    /// `decimal`: exact, carried as a string on every wire.
    Decimal,
    /// `date`: a calendar date.
    Date,
    /// `datetime`: an instant in UTC.
    DateTime,
    /// `duration`: a signed span of time.
    Duration,
    /// `list<T>`
    List(Box<Ty>),
    /// `option<T>`
    Option(Box<Ty>),
    /// `map<string,T>` (ordered by key).
    Map(Box<Ty>),
    /// A type declared in `types`.
    Named(String),
}

/// A validated default value.
#[derive(Debug, Clone, PartialEq)]
pub enum DefaultValue {
    /// `true` / `false`.
    Bool(bool),
    /// An integer that fits the parameter's type.
    Int(i128),
    /// A float.
    Float(f64),
    /// A string.
    Str(String),
    /// A decimal literal.
    Decimal(String),
    /// An enum variant (wire name).
    Variant(String),
    /// `null` for an option.
    Null,
}

const PRIMITIVES: &[(&str, Ty)] = &[
    ("bool", Ty::Bool),
    ("i32", Ty::I32),
    ("i64", Ty::I64),
    ("u32", Ty::U32),
    ("u64", Ty::U64),
    ("f64", Ty::F64),
    ("string", Ty::String),
    ("bytes", Ty::Bytes),
    ("decimal", Ty::Decimal),
    ("date", Ty::Date),
    ("datetime", Ty::DateTime),
    ("duration", Ty::Duration),
];

const RUST_KEYWORDS: &[&str] = &[
    "as", "break", "const", "continue", "crate", "else", "enum", "extern", "false", "fn", "for",
    "if", "impl", "in", "let", "loop", "match", "mod", "move", "mut", "pub", "ref", "return",
    "self", "Self", "static", "struct", "super", "trait", "true", "type", "unsafe", "use", "where",
    "while", "async", "await", "dyn", "abstract", "become", "box", "do", "final", "macro",
    "override", "priv", "typeof", "unsized", "virtual", "yield", "try", "gen",
];

/// Names the generated code defines or relies on, which a declared type may not take.
const PRELUDE_NAMES: &[&str] = &[
    "Option",
    "Result",
    "String",
    "Vec",
    "Box",
    "Ok",
    "Err",
    "Some",
    "None",
    "Send",
    "Sync",
    "Clone",
    "Copy",
    "Debug",
    "Default",
    "Collector",
    "Dispatcher",
    "CommandSink",
    "ApplyContext",
    "OpKind",
    "Duration",
    "Outcome",
];

impl Api {
    /// Checks a document and builds the model, or returns every problem found.
    /// `source` is the text the document was parsed from (used to place columns exactly).
    pub fn from_document(doc: &Document, source: &str) -> Result<Api, Vec<Diagnostic>> {
        let mut cx = check::Checker {
            diags: Vec::new(),
            source,
        };
        let api = cx.check(doc);
        if cx.diags.is_empty() {
            Ok(api)
        } else {
            Err(cx.diags)
        }
    }

    /// The operations that are commands.
    pub fn commands(&self) -> impl Iterator<Item = &Operation> {
        self.operations.iter().filter(|o| o.kind == OpKind::Command)
    }

    /// Looks up a declared type.
    pub fn type_decl(&self, name: &str) -> Option<&TypeDecl> {
        self.types.iter().find(|t| t.name == name)
    }

    /// Every stable tag in the model, keyed by a path such as `op:deposit/param:amount`.
    pub fn tags(&self) -> BTreeMap<String, u32> {
        let mut tags = BTreeMap::new();
        for t in &self.types {
            match &t.body {
                TypeBody::Struct(fields) => {
                    for f in fields {
                        tags.insert(format!("type:{}/field:{}", t.name, f.name), f.tag);
                    }
                }
                TypeBody::Enum(vs) => {
                    for v in vs {
                        tags.insert(format!("type:{}/variant:{}", t.name, v.name), v.tag);
                    }
                }
            }
        }
        for e in &self.errors {
            tags.insert(format!("error:{}", e.name), e.tag);
        }
        for o in &self.operations {
            tags.insert(format!("op:{}", o.name), o.tag);
            for p in &o.params {
                tags.insert(format!("op:{}/param:{}", o.name, p.name), p.tag);
            }
        }
        tags
    }
}

impl Operation {
    /// UpperCamelCase name: the variant in the command and reply enums.
    pub fn variant(&self) -> String {
        self.name.to_upper_camel_case()
    }
}

/// The JSON-RPC error code of a schema error kind: `-32000 - tag`.
pub fn error_code(tag: u32) -> i64 {
    -32000 - i64::from(tag)
}

/// Error tags whose JSON-RPC code (`-32000 - tag`) is taken: `Transport` (-32050), `Redirect`
/// (-32051), `Deadline` (-32052), `NoSpace` (-32053), `Unauthenticated` (-32054), `PermissionDenied` (-32055), JSON-RPC's standard codes (-32600..=-32603, -32700) and the
/// server's batch limits (-32010, -32011).
/// `runtime::wire::codes::RESERVED_CODES` as tags; codegen does not link the runtime, so a test
/// (`codegen/tests/validation.rs`) holds the two lists equal.
pub const JSONRPC_TAKEN_TAGS: &[u32] = &[10, 11, 50, 51, 52, 53, 54, 55, 600, 601, 602, 603, 700];

/// The schema spelling of a type.
pub fn ty_text(ty: &Ty) -> String {
    match ty {
        Ty::List(t) => format!("list<{}>", ty_text(t)),
        Ty::Option(t) => format!("option<{}>", ty_text(t)),
        Ty::Map(t) => format!("map<string,{}>", ty_text(t)),
        Ty::Named(n) => n.clone(),
        other => PRIMITIVES
            .iter()
            .find(|(_, t)| t == other)
            .map(|(n, _)| n.to_string())
            .unwrap_or_default(),
    }
}

/// "did you mean" from the closest candidate by edit distance, plus the list.
fn suggest(word: &str, candidates: Vec<&String>, what: &str) -> String {
    let best = candidates
        .iter()
        .map(|c| (edit_distance(&word.to_lowercase(), &c.to_lowercase()), *c))
        .filter(|(d, _)| *d <= 3)
        .min();
    let list = candidates
        .iter()
        .map(|c| c.as_str())
        .collect::<Vec<_>>()
        .join(", ");
    let known = if list.is_empty() {
        format!("known {what}: none")
    } else {
        format!("known {what}: {list}")
    };
    match best {
        Some((_, c)) => format!("did you mean `{c}`? {known}"),
        None => known,
    }
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = if ca == *cb {
                prev
            } else {
                1 + prev.min(row[j]).min(cur)
            };
            prev = cur;
        }
    }
    row[b.len()]
}
