//! The checked model of a service: what the emitters read. Built from a [`Document`] by
//! [`Api::from_document`], which collects every problem before giving up.

use std::collections::{BTreeMap, BTreeSet};

use heck::{ToLowerCamelCase, ToUpperCamelCase};

use crate::diag::Diagnostic;
use crate::document::{Document, FieldDef, OpKindDef, Pos, Sp};

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
    /// Operations in declaration order.
    pub operations: Vec<Operation>,
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
        let mut cx = Checker {
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

struct Checker<'s> {
    diags: Vec<Diagnostic>,
    source: &'s str,
}

/// The kind of name being checked, which decides its case rule.
#[derive(Clone, Copy)]
enum Case {
    /// Types, errors, the service.
    Upper,
    /// Operations, fields, params, variants.
    Snake,
}

impl Checker<'_> {
    fn push(&mut self, d: Diagnostic) {
        self.diags.push(d);
    }

    fn check(&mut self, doc: &Document) -> Api {
        let service = doc.service.value.clone();
        self.ident(&doc.service, Case::Upper, "service");

        // Declared type names first, so references can be resolved in any order.
        let mut type_names: BTreeMap<String, Pos> = BTreeMap::new();
        let mut enum_variants: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let reserved: Vec<String> = ["Api", "Service", "Command", "Reply", "Error"]
            .iter()
            .map(|s| format!("{service}{s}"))
            .chain(PRELUDE_NAMES.iter().map(|s| s.to_string()))
            .collect();
        for t in &doc.types {
            let ok = self.ident(&t.name, Case::Upper, "type");
            if ok && reserved.contains(&t.name.value) {
                self.push(
                    Diagnostic::new(
                        "schema::reserved_name",
                        t.name.pos,
                        &t.name.value,
                        format!("type name `{}` is used by the generated code", t.name.value),
                    )
                    .hint(format!("rename it, e.g. `{}Info`", t.name.value)),
                );
            }
            self.unique(&mut type_names, &t.name, "type");
            if let Some(vs) = &t.variants {
                enum_variants.insert(
                    t.name.value.clone(),
                    vs.value.iter().map(|v| v.name.value.clone()).collect(),
                );
            }
        }
        for o in &doc.operations {
            let camel = o.name.value.to_upper_camel_case();
            for suffix in ["Request", "Response"] {
                let generated = format!("{camel}{suffix}");
                if let Some(pos) = type_names.get(&generated) {
                    self.push(
                        Diagnostic::new(
                            "schema::reserved_name",
                            *pos,
                            &generated,
                            format!(
                                "type name `{generated}` is the gRPC message of operation `{}`",
                                o.name.value
                            ),
                        )
                        .hint(format!("rename the type, e.g. `{camel}{suffix}Info`")),
                    );
                }
            }
        }
        let known = KnownTypes {
            names: type_names.keys().cloned().collect(),
            enums: enum_variants,
        };

        let types = doc
            .types
            .iter()
            .map(|t| {
                let body = match (&t.fields, &t.variants) {
                    (Some(fields), None) => {
                        if fields.value.is_empty() {
                            self.push(
                                Diagnostic::new(
                                    "schema::empty_type",
                                    t.name.pos,
                                    &t.name.value,
                                    format!("struct `{}` has no fields", t.name.value),
                                )
                                .hint("add at least one field, or remove the type"),
                            );
                        }
                        TypeBody::Struct(self.fields(
                            &fields.value,
                            &t.reserved,
                            &known,
                            "field",
                            false,
                        ))
                    }
                    (None, Some(vs)) => {
                        if vs.value.is_empty() {
                            self.push(
                                Diagnostic::new(
                                    "schema::empty_type",
                                    t.name.pos,
                                    &t.name.value,
                                    format!("enum `{}` has no variants", t.name.value),
                                )
                                .hint("add at least one variant, or remove the type"),
                            );
                        }
                        TypeBody::Enum(self.variants(&vs.value, &t.reserved))
                    }
                    (Some(_), Some(_)) | (None, None) => {
                        self.push(
                            Diagnostic::new(
                                "schema::type_shape",
                                t.name.pos,
                                &t.name.value,
                                format!(
                                    "type `{}` must have exactly one of `fields` (a struct) or `variants` (an enum)",
                                    t.name.value
                                ),
                            )
                            .hint("keep `fields:` for a struct or `variants:` for an enum"),
                        );
                        TypeBody::Struct(Vec::new())
                    }
                };
                TypeDecl {
                    name: t.name.value.clone(),
                    doc: t.doc.clone(),
                    body,
                }
            })
            .collect();

        let mut error_names = BTreeMap::new();
        let mut error_tags = TagSet::new(
            doc.errors.iter().map(|e| e.tag.as_ref()),
            &doc.reserved.errors,
        );
        let errors = doc
            .errors
            .iter()
            .map(|e| {
                if self.ident(&e.name, Case::Upper, "error") {
                    for builtin in ["Transport", "Redirect", "Deadline", "Internal"] {
                        if e.name.value == builtin {
                            self.push(
                                Diagnostic::new(
                                    "schema::reserved_name",
                                    e.name.pos,
                                    &e.name.value,
                                    format!("error kind `{builtin}` is built in"),
                                )
                                .hint(
                                    "remove it: a call can always fail with `Transport`, \
                                     `Redirect`, `Deadline` or `Internal`",
                                ),
                            );
                        }
                    }
                }
                self.unique(&mut error_names, &e.name, "error");
                let tag = error_tags.take(self, e.tag.as_ref(), &e.name, "error");
                if let Some(t) = e.tag.as_ref().filter(|_| JSONRPC_TAKEN_TAGS.contains(&tag)) {
                    self.push(
                        Diagnostic::new(
                            "schema::reserved_error_code",
                            t.pos,
                            tag.to_string(),
                            format!(
                                "error `{}` would have JSON-RPC code {}, which is taken",
                                e.name.value,
                                error_code(tag)
                            ),
                        )
                        .hint(
                            "error tags 50, 51, 52 (Transport, Redirect, Deadline) and 600..=603, 700 \
                             (JSON-RPC's standard codes) are taken; use another tag",
                        ),
                    );
                }
                ErrorKind {
                    name: e.name.value.clone(),
                    tag,
                    doc: e.doc.clone(),
                }
            })
            .collect();

        let mut op_names = BTreeMap::new();
        let mut op_variants: BTreeMap<String, Sp<String>> = BTreeMap::new();
        let mut op_tags = TagSet::new(
            doc.operations.iter().map(|o| o.tag.as_ref()),
            &doc.reserved.operations,
        );
        let operations = doc
            .operations
            .iter()
            .map(|o| {
                if self.ident(&o.name, Case::Snake, "operation")
                    && self.unique(&mut op_names, &o.name, "operation")
                {
                    self.collision(
                        &mut op_variants,
                        &o.name,
                        o.name.value.to_upper_camel_case(),
                        "operation",
                    );
                }
                let tag = op_tags.take(self, o.tag.as_ref(), &o.name, "operation");
                let params = self.fields(&o.params, &o.reserved, &known, "parameter", true);
                let returns = o.returns.as_ref().and_then(|r| self.ty(r, &known));
                for e in &o.errors {
                    if !error_names.contains_key(&e.value) {
                        let names: Vec<&String> = error_names.keys().collect();
                        self.push(
                            Diagnostic::new(
                                "schema::unknown_error",
                                e.pos,
                                &e.value,
                                format!("unknown error kind `{}`", e.value),
                            )
                            .hint(suggest(
                                &e.value,
                                names,
                                "declared errors",
                            )),
                        );
                    }
                }
                Operation {
                    name: o.name.value.clone(),
                    tag,
                    kind: match o.kind.value {
                        OpKindDef::Command => OpKind::Command,
                        OpKindDef::Query => OpKind::Query,
                    },
                    doc: o.doc.clone(),
                    params,
                    returns,
                    errors: o.errors.iter().map(|e| e.value.clone()).collect(),
                    deprecated: o.deprecated,
                }
            })
            .collect();

        Api {
            service,
            doc: doc.doc.clone(),
            types,
            errors,
            operations,
        }
    }

    /// Checks a name's spelling and case; returns whether it is usable.
    fn ident(&mut self, name: &Sp<String>, case: Case, what: &str) -> bool {
        let s = name.value.as_str();
        let (ok, rule, fixed) = match case {
            Case::Upper => (
                s.chars().next().is_some_and(|c| c.is_ascii_uppercase())
                    && s.chars().all(|c| c.is_ascii_alphanumeric()),
                "UpperCamelCase (letters and digits, starting with a capital)",
                s.to_upper_camel_case(),
            ),
            Case::Snake => (
                s.chars().next().is_some_and(|c| c.is_ascii_lowercase())
                    && s.chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'),
                "snake_case (lowercase letters, digits and `_`, starting with a letter)",
                heck::ToSnakeCase::to_snake_case(s),
            ),
        };
        if !ok {
            let fixed = if fixed.is_empty() || fixed.starts_with(|c: char| c.is_ascii_digit()) {
                format!("x{fixed}")
            } else {
                fixed
            };
            self.push(
                Diagnostic::new(
                    "schema::bad_identifier",
                    name.pos,
                    s,
                    format!("{what} name `{s}` is not a valid identifier"),
                )
                .hint(format!("{what} names are {rule}; try `{fixed}`")),
            );
            return false;
        }
        if RUST_KEYWORDS.contains(&s) {
            self.push(
                Diagnostic::new(
                    "schema::keyword",
                    name.pos,
                    s,
                    format!("{what} name `{s}` is a Rust keyword"),
                )
                .hint(format!("rename it, e.g. `{s}_value` or `{s}_kind`")),
            );
            return false;
        }
        true
    }

    /// Records a name; reports a duplicate. Returns whether the name was new.
    fn unique(&mut self, seen: &mut BTreeMap<String, Pos>, name: &Sp<String>, what: &str) -> bool {
        if let Some(first) = seen.get(&name.value) {
            self.push(
                Diagnostic::new(
                    "schema::duplicate",
                    name.pos,
                    &name.value,
                    format!("duplicate {what} `{}`", name.value),
                )
                .related(*first, "first defined")
                .hint(format!("rename or remove one of the two {what}s")),
            );
            false
        } else {
            seen.insert(name.value.clone(), name.pos);
            true
        }
    }

    /// Reports two distinct names that become the same identifier after case conversion.
    fn collision(
        &mut self,
        seen: &mut BTreeMap<String, Sp<String>>,
        name: &Sp<String>,
        converted: String,
        what: &str,
    ) {
        if let Some(first) = seen.get(&converted) {
            self.push(
                Diagnostic::new(
                    "schema::case_collision",
                    name.pos,
                    &name.value,
                    format!(
                        "{what} `{}` and `{}` both become `{converted}` in generated code",
                        first.value, name.value
                    ),
                )
                .related(first.pos, format!("`{}` defined", first.value))
                .hint("rename one so they differ by more than `_` and case"),
            );
        } else {
            seen.insert(converted, name.clone());
        }
    }

    fn fields(
        &mut self,
        defs: &[FieldDef],
        reserved: &[Sp<u64>],
        known: &KnownTypes,
        what: &str,
        defaults: bool,
    ) -> Vec<Field> {
        let mut names = BTreeMap::new();
        let mut camel = BTreeMap::new();
        let mut tags = TagSet::new(defs.iter().map(|f| f.tag.as_ref()), reserved);
        defs.iter()
            .map(|f| {
                if self.ident(&f.name, Case::Snake, what) && self.unique(&mut names, &f.name, what)
                {
                    self.collision(
                        &mut camel,
                        &f.name,
                        f.name.value.to_lower_camel_case(),
                        what,
                    );
                }
                let tag = tags.take(self, f.tag.as_ref(), &f.name, what);
                let ty = self.ty(&f.ty, known);
                let default = match (&f.default, defaults) {
                    (Some(d), false) => {
                        self.push(
                            Diagnostic::new(
                                "schema::bad_default",
                                d.pos,
                                d.value.to_string(),
                                format!("{what} `{}` cannot have a default", f.name.value),
                            )
                            .hint("defaults apply to operation parameters only; remove `default`"),
                        );
                        None
                    }
                    (Some(d), true) => ty
                        .as_ref()
                        .and_then(|ty| self.default_value(d, ty, known, &f.name.value)),
                    (None, _) => None,
                };
                Field {
                    name: f.name.value.clone(),
                    ty: ty.unwrap_or(Ty::Bool),
                    tag,
                    doc: f.doc.clone(),
                    default,
                    deprecated: f.deprecated,
                }
            })
            .collect()
    }

    fn variants(
        &mut self,
        defs: &[crate::document::VariantDef],
        reserved: &[Sp<u64>],
    ) -> Vec<Variant> {
        let mut names = BTreeMap::new();
        let mut camel = BTreeMap::new();
        let mut tags = TagSet::new(defs.iter().map(|v| v.tag.as_ref()), reserved);
        defs.iter()
            .map(|v| {
                if self.ident(&v.name, Case::Snake, "variant")
                    && self.unique(&mut names, &v.name, "variant")
                {
                    self.collision(
                        &mut camel,
                        &v.name,
                        v.name.value.to_upper_camel_case(),
                        "variant",
                    );
                }
                Variant {
                    name: v.name.value.clone(),
                    tag: tags.take(self, v.tag.as_ref(), &v.name, "variant"),
                    doc: v.doc.clone(),
                }
            })
            .collect()
    }

    fn ty(&mut self, text: &Sp<String>, known: &KnownTypes) -> Option<Ty> {
        match parse_ty(&text.value, known)
            .and_then(|ty| flat_containers(&ty, &text.value).map(|()| ty))
        {
            Ok(ty) => Some(ty),
            Err(e) => {
                // A quoted scalar's position is its opening quote.
                let quoted = self
                    .source
                    .lines()
                    .nth((text.pos.line as usize).saturating_sub(1))
                    .and_then(|l| l.chars().nth((text.pos.col as usize).saturating_sub(1)))
                    .is_some_and(|c| c == '"' || c == '\'');
                let pos = Pos {
                    line: text.pos.line,
                    col: text.pos.col + e.offset as u64 + u64::from(quoted),
                };
                self.push(Diagnostic::new(e.code, pos, e.token, e.message).hint(e.hint));
                None
            }
        }
    }

    fn default_value(
        &mut self,
        d: &Sp<serde_json::Value>,
        ty: &Ty,
        known: &KnownTypes,
        param: &str,
    ) -> Option<DefaultValue> {
        use serde_json::Value;
        let value = match (ty, &d.value) {
            (Ty::Bool, Value::Bool(b)) => Some(DefaultValue::Bool(*b)),
            (Ty::I32 | Ty::I64 | Ty::U32 | Ty::U64, Value::Number(n)) => {
                let (lo, hi): (i128, i128) = match ty {
                    Ty::I32 => (i32::MIN.into(), i32::MAX.into()),
                    Ty::I64 => (i64::MIN.into(), i64::MAX.into()),
                    Ty::U32 => (0, u32::MAX.into()),
                    _ => (0, u64::MAX.into()),
                };
                n.as_i64()
                    .map(i128::from)
                    .or_else(|| n.as_u64().map(i128::from))
                    .filter(|v| (lo..=hi).contains(v))
                    .map(DefaultValue::Int)
            }
            (Ty::F64, Value::Number(n)) => n.as_f64().map(DefaultValue::Float),
            (Ty::String, Value::String(s)) => Some(DefaultValue::Str(s.clone())),
            (Ty::Decimal, Value::String(s)) if is_decimal(s) => {
                Some(DefaultValue::Decimal(s.clone()))
            }
            (Ty::Decimal, Value::Number(n)) if is_decimal(&n.to_string()) => {
                Some(DefaultValue::Decimal(n.to_string()))
            }
            (Ty::Option(_), Value::Null) => Some(DefaultValue::Null),
            (Ty::Named(name), Value::String(s))
                if known.enums.get(name).is_some_and(|vs| vs.contains(s)) =>
            {
                Some(DefaultValue::Variant(s.clone()))
            }
            _ => None,
        };
        if value.is_none() {
            let expected = match ty {
                Ty::Named(name) => match known.enums.get(name) {
                    Some(vs) => format!("one of the variants of `{name}`: {}", vs.join(", ")),
                    None => format!("no default: `{name}` is a struct"),
                },
                Ty::Bool => "`true` or `false`".into(),
                Ty::I32 | Ty::I64 | Ty::U32 | Ty::U64 => {
                    format!("an integer in the range of {}", ty_text(ty))
                }
                Ty::F64 => "a number".into(),
                Ty::String => "a quoted string".into(),
                Ty::Decimal => "a decimal such as \"0.00\"".into(),
                Ty::Option(_) => "`null`".into(),
                _ => format!(
                    "no default: defaults are not supported for `{}`",
                    ty_text(ty)
                ),
            };
            let shown = match &d.value {
                Value::String(s) => s.clone(),
                v => v.to_string(),
            };
            self.push(
                Diagnostic::new(
                    "schema::bad_default",
                    d.pos,
                    &shown,
                    format!(
                        "default `{shown}` of `{param}` does not fit its type `{}`",
                        ty_text(ty)
                    ),
                )
                .hint(format!("expected {expected}")),
            );
        }
        value
    }
}

/// The JSON-RPC error code of a schema error kind: `-32000 - tag`.
pub fn error_code(tag: u32) -> i64 {
    -32000 - i64::from(tag)
}

/// Error tags whose JSON-RPC code (`-32000 - tag`) is taken: `Transport` (-32050), `Redirect`
/// (-32051), `Deadline` (-32052), JSON-RPC's standard codes (-32600..=-32603, -32700) and the
/// server's batch limits (-32010, -32011).
/// `runtime::codes::RESERVED_CODES` as tags; codegen does not link the runtime, so a test
/// (`codegen/tests/validation.rs`) holds the two lists equal.
pub const JSONRPC_TAKEN_TAGS: &[u32] = &[10, 11, 50, 51, 52, 600, 601, 602, 603, 700];

/// Assigns checked tags for one list (operations, fields of a struct, …).
struct TagSet {
    seen: BTreeMap<u64, Pos>,
    /// Tags of removed items, where the schema reserves them.
    reserved: BTreeMap<u64, Pos>,
    next_free: u64,
}

impl TagSet {
    fn new<'a>(tags: impl Iterator<Item = Option<&'a Sp<u64>>>, reserved: &'a [Sp<u64>]) -> Self {
        let max = tags
            .flatten()
            .chain(reserved)
            .map(|t| t.value)
            .filter(|t| *t <= MAX_TAG)
            .max()
            .unwrap_or(0);
        TagSet {
            seen: BTreeMap::new(),
            reserved: reserved.iter().map(|t| (t.value, t.pos)).collect(),
            next_free: max + 1,
        }
    }

    fn take(
        &mut self,
        cx: &mut Checker<'_>,
        tag: Option<&Sp<u64>>,
        owner: &Sp<String>,
        what: &str,
    ) -> u32 {
        let Some(tag) = tag else {
            cx.push(
                Diagnostic::new(
                    "schema::missing_tag",
                    owner.pos,
                    &owner.value,
                    format!("{what} `{}` has no tag", owner.value),
                )
                .hint(format!(
                    "add `tag: {}` (the next free tag here); tags keep the wire form stable, never reuse one",
                    self.next_free
                )),
            );
            return 0;
        };
        if tag.value == 0 || tag.value > MAX_TAG || RESERVED_TAGS.contains(&tag.value) {
            cx.push(
                Diagnostic::new(
                    "schema::bad_tag",
                    tag.pos,
                    tag.value.to_string(),
                    format!(
                        "tag {} of {what} `{}` is out of range",
                        tag.value, owner.value
                    ),
                )
                .hint(format!(
                    "tags are 1..={MAX_TAG} except 19000..=19999; the next free tag here is {}",
                    self.next_free
                )),
            );
            return 0;
        }
        if let Some(reserved) = self.reserved.get(&tag.value) {
            cx.push(
                Diagnostic::new(
                    "schema::reserved_tag",
                    tag.pos,
                    tag.value.to_string(),
                    format!(
                        "tag {} of {what} `{}` is reserved: a removed {what} had it",
                        tag.value, owner.value
                    ),
                )
                .related(*reserved, "reserved")
                .hint(format!(
                    "old log entries, snapshots and clients may still carry it; use the next \
                     free tag, {}",
                    self.next_free
                )),
            );
            return tag.value as u32;
        }
        if let Some(first) = self.seen.get(&tag.value) {
            cx.push(
                Diagnostic::new(
                    "schema::duplicate_tag",
                    tag.pos,
                    tag.value.to_string(),
                    format!(
                        "tag {} of {what} `{}` is already used",
                        tag.value, owner.value
                    ),
                )
                .related(*first, "first used")
                .hint(format!("use the next free tag, {}", self.next_free)),
            );
            self.next_free += 1;
        } else {
            self.seen.insert(tag.value, tag.pos);
        }
        tag.value as u32
    }
}

struct KnownTypes {
    names: BTreeSet<String>,
    enums: BTreeMap<String, Vec<String>>,
}

struct TyError {
    offset: usize,
    token: String,
    code: &'static str,
    message: String,
    hint: String,
}

/// Parses a whole type expression such as `map<string, list<Account>>`.
fn parse_ty(text: &str, known: &KnownTypes) -> Result<Ty, TyError> {
    let mut p = TyParser { text, at: 0, known };
    let ty = p.ty()?;
    p.skip_ws();
    if p.at < text.len() {
        return Err(p.err_here(
            "schema::bad_type",
            "unexpected text after the type",
            "remove it",
        ));
    }
    Ok(ty)
}

struct TyParser<'a> {
    text: &'a str,
    at: usize,
    known: &'a KnownTypes,
}

impl TyParser<'_> {
    fn skip_ws(&mut self) {
        while self.text[self.at..].starts_with(' ') {
            self.at += 1;
        }
    }

    fn err_here(&self, code: &'static str, message: &str, hint: &str) -> TyError {
        let rest = &self.text[self.at..];
        TyError {
            offset: self.at,
            token: rest.chars().take(1).collect::<String>(),
            code,
            message: format!("{message} in type `{}`", self.text),
            hint: hint.into(),
        }
    }

    fn expect(&mut self, c: char) -> Result<(), TyError> {
        self.skip_ws();
        if self.text[self.at..].starts_with(c) {
            self.at += 1;
            Ok(())
        } else {
            Err(self.err_here(
                "schema::bad_type",
                &format!("expected `{c}`"),
                "type expressions look like `list<T>`, `option<T>` or `map<string,T>`",
            ))
        }
    }

    fn ty(&mut self) -> Result<Ty, TyError> {
        self.skip_ws();
        let start = self.at;
        let len = self.text[start..]
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(self.text.len() - start);
        if len == 0 {
            return Err(self.err_here(
                "schema::bad_type",
                "expected a type name",
                "write a primitive, a declared type, or `list<T>`",
            ));
        }
        let word = &self.text[start..start + len];
        self.at += len;
        match word {
            "list" | "option" => {
                self.expect('<')?;
                let inner = self.ty()?;
                self.expect('>')?;
                Ok(if word == "list" {
                    Ty::List(Box::new(inner))
                } else {
                    Ty::Option(Box::new(inner))
                })
            }
            "map" => {
                self.expect('<')?;
                self.skip_ws();
                let key_at = self.at;
                let key = self.ty()?;
                if key != Ty::String {
                    return Err(TyError {
                        offset: key_at,
                        token: self.text[key_at..self.at].to_string(),
                        code: "schema::bad_type",
                        message: format!("map keys must be `string` in type `{}`", self.text),
                        hint: "write `map<string, T>`; use a list of structs for other keys".into(),
                    });
                }
                self.expect(',')?;
                let value = self.ty()?;
                self.expect('>')?;
                Ok(Ty::Map(Box::new(value)))
            }
            _ => {
                if let Some((_, ty)) = PRIMITIVES.iter().find(|(n, _)| *n == word) {
                    return Ok(ty.clone());
                }
                if self.known.names.contains(word) {
                    return Ok(Ty::Named(word.to_string()));
                }
                // A misspelled primitive gets its "did you mean" as a misspelled name does.
                let primitives: Vec<String> =
                    PRIMITIVES.iter().map(|(n, _)| n.to_string()).collect();
                let candidates: Vec<&String> = primitives.iter().chain(&self.known.names).collect();
                Err(TyError {
                    offset: start,
                    token: word.to_string(),
                    code: "schema::unknown_type",
                    message: format!("unknown type `{word}`"),
                    hint: suggest(word, candidates, "types (primitives, then declared)"),
                })
            }
        }
    }
}

/// Containers hold scalars or named types only (`list<list<T>>` has no protobuf form); a named
/// struct wraps the inner collection instead.
fn flat_containers(ty: &Ty, text: &str) -> Result<(), TyError> {
    let inner = match ty {
        Ty::List(t) | Ty::Option(t) | Ty::Map(t) => t,
        _ => return Ok(()),
    };
    if matches!(**inner, Ty::List(_) | Ty::Option(_) | Ty::Map(_)) {
        let word = ty_text(inner);
        return Err(TyError {
            offset: text.find(word.split('<').next().unwrap_or("")).unwrap_or(0),
            token: word.clone(),
            code: "schema::unsupported_type",
            message: format!("`{}` nests a container in a container", ty_text(ty)),
            hint: format!("declare a struct with a `{word}` field and use it here"),
        });
    }
    Ok(())
}

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

fn is_decimal(s: &str) -> bool {
    let s = s.strip_prefix('-').unwrap_or(s);
    let (int, frac) = s.split_once('.').unwrap_or((s, ""));
    !int.is_empty()
        && int.chars().all(|c| c.is_ascii_digit())
        && frac.chars().all(|c| c.is_ascii_digit())
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
