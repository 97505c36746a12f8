//! The checker: every rule a schema must follow (names, tags, types, defaults, errors), with a
//! diagnostic at file:line:col and a hint for each problem, all collected before giving up.

use std::collections::{BTreeMap, BTreeSet};

use heck::{ToLowerCamelCase, ToUpperCamelCase};

use super::ty::{KnownTypes, flat_containers, parse_ty};
use super::*;
use crate::diag::Diagnostic;
use crate::document::{Document, FieldDef, OpKindDef, OperationDef, Pos, Sp};

pub(super) struct Checker<'s> {
    pub(super) diags: Vec<Diagnostic>,
    pub(super) source: &'s str,
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

    pub(super) fn check(&mut self, doc: &Document) -> Api {
        let service = doc.service.value.clone();
        self.ident(&doc.service, Case::Upper, "service");

        // Declared type names first, so references can be resolved in any order.
        let mut type_names: BTreeMap<String, Pos> = BTreeMap::new();
        let mut enum_variants: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let reserved: Vec<String> = [
            "Api",
            "Service",
            "Command",
            "Reply",
            "Error",
            "Event",
            "Watch",
            "WatchRequest",
            "EventCommand",
            "EventReply",
            "EventError",
        ]
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
            if o.name.value == "watch" {
                self.push(
                    Diagnostic::new(
                        "schema::reserved_name",
                        o.name.pos,
                        &o.name.value,
                        "operation name `watch` is the change feed's (`call watch`)".to_string(),
                    )
                    .hint("rename it, e.g. `watch_item`"),
                );
            }
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
                    for builtin in [
                        "Transport",
                        "Redirect",
                        "Deadline",
                        "Internal",
                        "Rejected",
                        "NoSpace",
                        "Unauthenticated",
                        "PermissionDenied",
                    ] {
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
                                     `Redirect`, `Deadline`, `Internal`, `Rejected`, `NoSpace`, \
                                     `Unauthenticated` or `PermissionDenied`",
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
                            "error tags 10, 11 (batch limits), 50..=55 (Transport, Redirect, Deadline, \
                             NoSpace, Unauthenticated, PermissionDenied) and 600..=603, 700 \
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

        let roles = self.roles(doc);
        let known_roles: Vec<String> = roles
            .iter()
            .map(|r| r.name.clone())
            .chain([ANY_ROLE.to_string()])
            .collect();
        let default_allow = match &doc.allow {
            Some(allow) => self.allow(allow, &known_roles),
            None => vec![ANY_ROLE.to_string()],
        };

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
                self.watch_keys(o, &params);
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
                    watch_keys: o.watch_keys.iter().map(|k| k.value.clone()).collect(),
                    allow: match &o.allow {
                        Some(allow) => self.allow(allow, &known_roles),
                        None => default_allow.clone(),
                    },
                }
            })
            .collect();

        Api {
            service,
            doc: doc.doc.clone(),
            types,
            errors,
            roles,
            operations,
        }
    }

    /// Checks the declared roles: snake_case, unique, not a built-in one.
    fn roles(&mut self, doc: &Document) -> Vec<Role> {
        let mut names = BTreeMap::new();
        doc.roles
            .iter()
            .filter(|r| {
                if [ADMIN_ROLE, ANY_ROLE].contains(&r.name.value.as_str()) {
                    self.push(
                        Diagnostic::new(
                            "schema::reserved_name",
                            r.name.pos,
                            &r.name.value,
                            format!("role `{}` is built in", r.name.value),
                        )
                        .hint(
                            "remove it: `admin` may call every operation, and `any` is every \
                             authenticated caller",
                        ),
                    );
                    return false;
                }
                self.ident(&r.name, Case::Snake, "role") && self.unique(&mut names, &r.name, "role")
            })
            .map(|r| Role {
                name: r.name.value.clone(),
                doc: r.doc.clone(),
            })
            .collect()
    }

    /// Checks an `allow` list against the roles `known` (declared ones and `any`); the names,
    /// once each.
    fn allow(&mut self, allow: &[Sp<String>], known: &[String]) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for role in allow {
            if role.value == ADMIN_ROLE {
                self.push(
                    Diagnostic::new(
                        "schema::admin_in_allow",
                        role.pos,
                        &role.value,
                        "`admin` may call every operation already".to_string(),
                    )
                    .hint("remove it from `allow`"),
                );
            } else if !known.contains(&role.value) {
                self.push(
                    Diagnostic::new(
                        "schema::unknown_role",
                        role.pos,
                        &role.value,
                        format!("unknown role `{}`", role.value),
                    )
                    .hint(format!(
                        "{}; a new role is declared under `roles:`",
                        suggest(&role.value, known.iter().collect(), "roles")
                    )),
                );
            } else if !out.contains(&role.value) {
                out.push(role.value.clone());
            }
        }
        out
    }

    /// Checks an operation's `watch_keys`: each names one of its parameters, once, of an integer
    /// or string type, and only a command has them (queries are not in the feed).
    fn watch_keys(&mut self, o: &OperationDef, params: &[Field]) {
        let mut seen = BTreeSet::new();
        for key in &o.watch_keys {
            if o.kind.value == OpKindDef::Query {
                self.push(
                    Diagnostic::new(
                        "schema::watch_key_on_query",
                        key.pos,
                        &key.value,
                        format!("query `{}` has watch keys", o.name.value),
                    )
                    .hint("only commands are in the watch feed; remove `watch_keys`"),
                );
                return;
            }
            let Some(param) = params.iter().find(|p| p.name == key.value) else {
                self.push(
                    Diagnostic::new(
                        "schema::unknown_watch_key",
                        key.pos,
                        &key.value,
                        format!("`{}` is not a parameter of `{}`", key.value, o.name.value),
                    )
                    .hint(suggest(
                        &key.value,
                        params.iter().map(|p| &p.name).collect(),
                        "its parameters",
                    )),
                );
                continue;
            };
            if !matches!(param.ty, Ty::I32 | Ty::I64 | Ty::U32 | Ty::U64 | Ty::String) {
                self.push(
                    Diagnostic::new(
                        "schema::bad_watch_key",
                        key.pos,
                        &key.value,
                        format!(
                            "watch key `{}` is a {}; a key is an integer or a string",
                            key.value,
                            ty_text(&param.ty)
                        ),
                    )
                    .hint("key the events by an id or name parameter"),
                );
            }
            if !seen.insert(key.value.as_str()) {
                self.push(
                    Diagnostic::new(
                        "schema::duplicate_watch_key",
                        key.pos,
                        &key.value,
                        format!("watch key `{}` is listed twice", key.value),
                    )
                    .hint("list each parameter once"),
                );
            }
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

fn is_decimal(s: &str) -> bool {
    let s = s.strip_prefix('-').unwrap_or(s);
    let (int, frac) = s.split_once('.').unwrap_or((s, ""));
    !int.is_empty()
        && int.chars().all(|c| c.is_ascii_digit())
        && frac.chars().all(|c| c.is_ascii_digit())
}
