//! The description format as written by hand: what `schema/*.yaml` (or `.json`) deserializes into.
//!
//! Every user-supplied scalar that validation may complain about is wrapped in [`Sp`], which keeps
//! the line and column it came from. The JSON Schema of this format (`schema/service.schema.json`)
//! is derived from these types, so the editor's completion and the parser never disagree.

use std::borrow::Cow;

use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde::Deserialize;

/// A 1-based line and column in the description file; `0:0` when unknown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default, Hash)]
pub struct Pos {
    /// 1-based line.
    pub line: u64,
    /// 1-based column (in characters).
    pub col: u64,
}

impl std::fmt::Display for Pos {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.line, self.col)
    }
}

/// A value together with the position of the YAML node it was read from.
#[derive(Debug, Clone, PartialEq)]
pub struct Sp<T> {
    /// The value.
    pub value: T,
    /// Where it was written.
    pub pos: Pos,
}

impl<T> Sp<T> {
    /// A value with a position (used by tests and by programs that build documents).
    pub fn new(value: T, pos: Pos) -> Self {
        Sp { value, pos }
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Sp<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = serde_saphyr::Spanned::<T>::deserialize(d)?;
        Ok(Sp {
            value: s.value,
            pos: Pos {
                line: s.referenced.line(),
                col: s.referenced.column(),
            },
        })
    }
}

impl<T: JsonSchema> JsonSchema for Sp<T> {
    fn schema_name() -> Cow<'static, str> {
        T::schema_name()
    }
    fn inline_schema() -> bool {
        T::inline_schema()
    }
    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        T::json_schema(generator)
    }
}

/// A service description: its types, error kinds and operations.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Document {
    /// Name of the service in UpperCamelCase (e.g. `Bank`); prefixes the generated
    /// `{Service}Api`, `{Service}Service`, `{Service}Command`, `{Service}Reply`, `{Service}Error`.
    pub service: Sp<String>,
    /// Documentation of the service.
    #[serde(default)]
    pub doc: Option<String>,
    /// Named types: structs (with `fields`) and enums (with `variants`).
    #[serde(default)]
    pub types: Vec<TypeDef>,
    /// Domain error kinds an operation may raise.
    #[serde(default)]
    pub errors: Vec<ErrorDef>,
    /// Roles a caller may hold (granted to users by an administrator); operations name the
    /// roles that may call them in `allow`. `admin` (every operation, and the users) and `any`
    /// (every authenticated caller) are built in.
    #[serde(default)]
    pub roles: Vec<RoleDef>,
    /// Who may call an operation that has no `allow` of its own: role names, or `any`.
    /// Without it: `any`.
    #[serde(default)]
    pub allow: Option<Vec<Sp<String>>>,
    /// Operations of the service, in the order they are presented.
    #[serde(default)]
    pub operations: Vec<OperationDef>,
    /// Tags of removed operations and errors: never used again (old log entries and clients
    /// may still carry them).
    #[serde(default)]
    pub reserved: ReservedDef,
}

/// Tags of removed top-level items.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReservedDef {
    /// Tags of removed operations.
    #[serde(default)]
    pub operations: Vec<Sp<u64>>,
    /// Tags of removed errors.
    #[serde(default)]
    pub errors: Vec<Sp<u64>>,
}

/// A named type: a struct when it has `fields`, an enum when it has `variants`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TypeDef {
    /// UpperCamelCase type name.
    pub name: Sp<String>,
    /// Documentation.
    #[serde(default)]
    pub doc: Option<String>,
    /// Struct fields, in order.
    #[serde(default)]
    pub fields: Option<Sp<Vec<FieldDef>>>,
    /// Enum variants (unit variants; the name is the wire name, snake_case).
    #[serde(default)]
    pub variants: Option<Sp<Vec<VariantDef>>>,
    /// Tags of removed fields or variants: never used again.
    #[serde(default)]
    pub reserved: Vec<Sp<u64>>,
}

/// A struct field or an operation parameter.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FieldDef {
    /// snake_case name.
    pub name: Sp<String>,
    /// Type: a primitive (`bool`, `i32`, `i64`, `u32`, `u64`, `f64`, `string`, `bytes`, `decimal`,
    /// `date`, `datetime`, `duration`), a named type, `list<T>`, `option<T>` or `map<string,T>`.
    #[serde(rename = "type")]
    pub ty: Sp<String>,
    /// Stable number (1..=536870911), unique in its list; never change or reuse it.
    pub tag: Option<Sp<u64>>,
    /// Documentation.
    #[serde(default)]
    pub doc: Option<String>,
    /// Default value used when a caller omits the parameter (parameters only).
    #[serde(default)]
    pub default: Option<Sp<serde_json::Value>>,
    /// Still accepted and still locked, but marked deprecated in every generated layer
    /// (rustdoc, proto, OpenRPC, API.md): callers should move off it.
    #[serde(default)]
    pub deprecated: bool,
}

/// One variant of an enum.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct VariantDef {
    /// snake_case wire name; the Rust variant is its UpperCamelCase form.
    pub name: Sp<String>,
    /// Stable number, unique in the enum.
    pub tag: Option<Sp<u64>>,
    /// Documentation.
    #[serde(default)]
    pub doc: Option<String>,
}

/// A role callers may hold.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RoleDef {
    /// snake_case name (not `admin` or `any`, which are built in).
    pub name: Sp<String>,
    /// What the role is for.
    #[serde(default)]
    pub doc: Option<String>,
}

/// A domain error kind.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ErrorDef {
    /// UpperCamelCase name.
    pub name: Sp<String>,
    /// Stable number, unique among errors; it selects the transport error code.
    pub tag: Option<Sp<u64>>,
    /// Documentation.
    #[serde(default)]
    pub doc: Option<String>,
}

/// Whether an operation changes state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum OpKindDef {
    /// A replicated write: goes through the log and is applied on every replica.
    Command,
    /// A read: never enters the log.
    Query,
}

/// An operation.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OperationDef {
    /// snake_case name; also the JSON-RPC method name.
    pub name: Sp<String>,
    /// Stable number, unique among operations.
    pub tag: Option<Sp<u64>>,
    /// `command` or `query`.
    pub kind: Sp<OpKindDef>,
    /// Documentation.
    #[serde(default)]
    pub doc: Option<String>,
    /// Parameters, in order.
    #[serde(default)]
    pub params: Vec<FieldDef>,
    /// Return type (any type expression); omitted means no value.
    #[serde(default)]
    pub returns: Option<Sp<String>>,
    /// Error kinds this operation may raise (names from `errors`).
    #[serde(default)]
    pub errors: Vec<Sp<String>>,
    /// Tags of removed parameters: never used again.
    #[serde(default)]
    pub reserved: Vec<Sp<u64>>,
    /// Still served and still locked, but marked deprecated in every generated layer
    /// (`#[deprecated]` on the client method, proto `deprecated = true`, OpenRPC `deprecated`,
    /// API.md, the `call` help): callers should move off it.
    #[serde(default)]
    pub deprecated: bool,
    /// Parameters (integers or strings) whose values key this command's events in the watch
    /// feed: a watcher asking for key `K` sees the commands with any of them equal to `K`
    /// (e.g. `watch_keys: [account_id]`, or both accounts of a transfer). Commands only.
    #[serde(default)]
    pub watch_keys: Vec<Sp<String>>,
    /// The roles that may call it (or `any`); without it, the schema's `allow`. `admin` may
    /// call every operation.
    #[serde(default)]
    pub allow: Option<Vec<Sp<String>>>,
}

/// The JSON Schema (draft-07) of the description format, pretty-printed.
pub fn json_schema() -> String {
    let settings = schemars::generate::SchemaSettings::draft07();
    let schema = settings.into_generator().into_root_schema_for::<Document>();
    let mut text = serde_json::to_string_pretty(&schema).unwrap_or_default();
    text.push('\n');
    text
}
