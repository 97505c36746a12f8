//! The compatibility lock: `schema/<name>.lock.json`, written by the generator (`raftgen gen`, or
//! `cargo xtask gen` in this repository) beside its
//! schema, records every operation, type, field, variant and error with its tag, kind and wire
//! type. A later schema is checked against it, because a replicated service cannot take back
//! what it has written: commands sit in raft logs and snapshots by name (the log encodes a
//! command as JSON), and old clients keep calling by name and tag.
//!
//! Refused (each at the place in the schema that breaks it, with a hint):
//! - a changed tag (`lock::changed_tag`);
//! - a changed type of a parameter, field or return value, or a struct turned enum
//!   (`lock::changed_type`);
//! - a command turned query or back (`lock::changed_kind`);
//! - a removed operation, parameter, field, variant or error whose tag is not listed under
//!   `reserved` (`lock::removed`);
//! - a new parameter of an existing operation with neither a default nor an `option<…>` type:
//!   old log entries do not have it (`lock::required_param`);
//! - a new field of a struct that a command's parameters carry (`lock::added_field`): old log
//!   entries lack it, and a replica of the old build would silently drop it;
//! - a new field of any other struct that is not an `option<…>` (`lock::required_field`):
//!   stored replies and servers of the old build do not send it;
//! - a watch key taken off an operation (`lock::removed_watch_key`): watchers filtering on it
//!   would silently stop seeing its events;
//! - a new variant of an enum that a command's parameters carry (`lock::added_variant`): the
//!   version gate sees operations and parameter names, not values, so a command using it would
//!   enter the log while a replica of the old build runs, and that replica would stop on it.
//!
//! Everything else may change: new operations, types and errors, variants of enums no command
//! carries, optional fields of structs no command carries, parameters with a default, docs,
//! `deprecated: true`, and removals whose tag is reserved.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::diag::Diagnostic;
use crate::document::{Document, FieldDef, Sp};
use crate::model::{Api, Field, OpKind, Ty, TypeBody, ty_text};

/// The lock file's format version.
pub const FORMAT: u32 = 1;

/// What a schema has promised: see the module docs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Lock {
    /// [`FORMAT`].
    pub format: u32,
    /// The service's name.
    pub service: String,
    /// Operations by name.
    pub operations: BTreeMap<String, OperationLock>,
    /// Named types by name.
    pub types: BTreeMap<String, TypeLock>,
    /// Error kinds by name, with their tags.
    pub errors: BTreeMap<String, u32>,
}

/// A locked operation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OperationLock {
    /// Its tag.
    pub tag: u32,
    /// `command` or `query`.
    pub kind: String,
    /// Parameters by name.
    pub params: BTreeMap<String, FieldLock>,
    /// The return type, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub returns: Option<String>,
    /// The parameters that key its events in the watch feed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub watch_keys: Vec<String>,
}

/// A locked parameter or struct field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FieldLock {
    /// Its tag.
    pub tag: u32,
    /// Its type, as written in the schema's canonical form (`list<Account>`).
    #[serde(rename = "type")]
    pub ty: String,
}

/// A locked named type: a struct's fields or an enum's variants.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TypeLock {
    /// Struct fields by name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fields: Option<BTreeMap<String, FieldLock>>,
    /// Enum variants by name, with their tags.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variants: Option<BTreeMap<String, u32>>,
}

fn kind_name(kind: OpKind) -> &'static str {
    match kind {
        OpKind::Command => "command",
        OpKind::Query => "query",
    }
}

fn field_locks(fields: &[Field]) -> BTreeMap<String, FieldLock> {
    fields
        .iter()
        .map(|f| {
            (
                f.name.clone(),
                FieldLock {
                    tag: f.tag,
                    ty: ty_text(&f.ty),
                },
            )
        })
        .collect()
}

impl Lock {
    /// The lock of a validated schema.
    pub fn of(api: &Api) -> Lock {
        Lock {
            format: FORMAT,
            service: api.service.clone(),
            operations: api
                .operations
                .iter()
                .map(|o| {
                    let lock = OperationLock {
                        tag: o.tag,
                        kind: kind_name(o.kind).to_string(),
                        params: field_locks(&o.params),
                        returns: o.returns.as_ref().map(ty_text),
                        watch_keys: o.watch_keys.clone(),
                    };
                    (o.name.clone(), lock)
                })
                .collect(),
            types: api
                .types
                .iter()
                .map(|t| {
                    let lock = match &t.body {
                        TypeBody::Struct(fields) => TypeLock {
                            fields: Some(field_locks(fields)),
                            variants: None,
                        },
                        TypeBody::Enum(variants) => TypeLock {
                            fields: None,
                            variants: Some(
                                variants.iter().map(|v| (v.name.clone(), v.tag)).collect(),
                            ),
                        },
                    };
                    (t.name.clone(), lock)
                })
                .collect(),
            errors: api.errors.iter().map(|e| (e.name.clone(), e.tag)).collect(),
        }
    }

    /// The lock file's text (pretty JSON, keys sorted, a final newline).
    pub fn to_json(&self) -> String {
        let mut text = serde_json::to_string_pretty(self).unwrap_or_default();
        text.push('\n');
        text
    }

    /// The schema version a node advertises: the first 16 hex digits of the SHA-256 of the
    /// lock's text. Two schemas with equal locks are one version to a cluster.
    pub fn version(&self) -> String {
        use sha2::Digest;
        // Watch keys filter the feed on a node; the log and the wire do not see them, so they
        // leave the version (and the gate between builds) as it was.
        let mut wire = self.clone();
        for op in wire.operations.values_mut() {
            op.watch_keys.clear();
        }
        let digest = sha2::Sha256::digest(wire.to_json().as_bytes());
        digest[..8].iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Reads a lock file's text.
    pub fn from_json(text: &str) -> Result<Lock, String> {
        let lock: Lock = serde_json::from_str(text).map_err(|e| e.to_string())?;
        if lock.format != FORMAT {
            return Err(format!(
                "lock format {} is not {FORMAT}, the one this generator reads",
                lock.format
            ));
        }
        Ok(lock)
    }
}

const ACCEPT: &str = "if the break is meant (no log, snapshot or client of the old schema \
                      remains), run the generator again with `--accept-breaking`: it lets the break \
                      through and rewrites the lock";

fn is_reserved(reserved: &[Sp<u64>], tag: u32) -> bool {
    reserved.iter().any(|t| t.value == u64::from(tag))
}

/// Every incompatible difference between the schema `doc` (validated as `api`) and `lock`, each
/// at the place in `doc` that makes it.
pub fn check(doc: &Document, api: &Api, lock: &Lock) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    let carried = carried_by_commands(api);
    for (name, old) in &lock.operations {
        let now = doc
            .operations
            .iter()
            .zip(&api.operations)
            .find(|(def, _)| def.name.value == *name);
        let Some((def, op)) = now else {
            if !is_reserved(&doc.reserved.operations, old.tag) {
                out.push(removed(
                    &doc.service,
                    "operation",
                    name,
                    old.tag,
                    "reserved: operations: [..]",
                ));
            }
            continue;
        };
        changed_tag(
            &mut out,
            def.tag.as_ref(),
            &def.name,
            "operation",
            old.tag,
            op.tag,
        );
        let kind = kind_name(op.kind);
        if kind != old.kind {
            out.push(
                Diagnostic::new(
                    "lock::changed_kind",
                    def.kind.pos,
                    kind,
                    format!("operation `{name}` was a {}, now a {kind}", old.kind),
                )
                .hint(format!(
                    "a command's entries are in logs and snapshots and a query's are not; add a new \
                     operation instead. {ACCEPT}"
                )),
            );
        }
        let returns = op.returns.as_ref().map(ty_text);
        if returns != old.returns {
            let (pos, token) = def
                .returns
                .as_ref()
                .map_or((def.name.pos, def.name.value.clone()), |r| {
                    (r.pos, r.value.clone())
                });
            out.push(
                Diagnostic::new(
                    "lock::changed_type",
                    pos,
                    token,
                    format!(
                        "operation `{name}` returned {}, now {}",
                        old.returns.as_deref().unwrap_or("nothing"),
                        returns.as_deref().unwrap_or("nothing")
                    ),
                )
                .hint(format!(
                    "clients of the old schema decode the old type. {ACCEPT}"
                )),
            );
        }
        fields(
            &mut out,
            (&def.params, &op.params),
            &old.params,
            (&def.reserved, &def.name),
            "parameter",
        );
        for key in old.watch_keys.iter().filter(|k| !op.watch_keys.contains(k)) {
            out.push(
                Diagnostic::new(
                    "lock::removed_watch_key",
                    def.name.pos,
                    &def.name.value,
                    format!("operation `{name}` no longer keys its events by `{key}`"),
                )
                .hint(format!(
                    "watchers filtering on `{key}` would silently stop seeing `{name}`; keep it \
                     in `watch_keys`. {ACCEPT}"
                )),
            );
        }
    }
    for (name, old) in &lock.types {
        let now = doc
            .types
            .iter()
            .zip(&api.types)
            .find(|(def, _)| def.name.value == *name);
        // A type no longer declared is caught where it was used (a changed or removed field).
        let Some((def, decl)) = now else { continue };
        match (&old.fields, &old.variants, &decl.body) {
            (Some(old_fields), _, TypeBody::Struct(now_fields)) => {
                let defs = def.fields.as_ref().map_or(&[][..], |f| &f.value[..]);
                fields(
                    &mut out,
                    (defs, now_fields),
                    old_fields,
                    (&def.reserved, &def.name),
                    "field",
                );
                new_fields(
                    &mut out,
                    (defs, now_fields),
                    old_fields,
                    &def.name,
                    carried.contains(name),
                );
            }
            (_, Some(old_variants), TypeBody::Enum(now_variants)) => {
                let defs = def.variants.as_ref().map_or(&[][..], |v| &v.value[..]);
                for (variant, tag) in old_variants {
                    match defs
                        .iter()
                        .zip(now_variants)
                        .find(|(d, _)| d.name.value == *variant)
                    {
                        Some((d, v)) => {
                            changed_tag(&mut out, d.tag.as_ref(), &d.name, "variant", *tag, v.tag)
                        }
                        None if is_reserved(&def.reserved, *tag) => {}
                        None => out.push(removed(
                            &def.name,
                            "variant",
                            variant,
                            *tag,
                            "reserved: [..]",
                        )),
                    }
                }
                if carried.contains(name) {
                    for d in defs
                        .iter()
                        .filter(|d| !old_variants.contains_key(&d.name.value))
                    {
                        out.push(
                            Diagnostic::new(
                                "lock::added_variant",
                                d.name.pos,
                                &d.name.value,
                                format!(
                                    "new variant `{}` of `{name}`, which commands carry",
                                    d.name.value
                                ),
                            )
                            .hint(format!(
                                "the version gate checks operations and parameters, not values: \
                                 a command using it would reach a replica of the old build during \
                                 a rolling upgrade, which stops on it. Add a new type and a \
                                 parameter with a default instead. {ACCEPT}"
                            )),
                        );
                    }
                }
            }
            _ => out.push(
                Diagnostic::new(
                    "lock::changed_type",
                    def.name.pos,
                    &def.name.value,
                    format!(
                        "type `{name}` was a {}, now a {}",
                        if old.fields.is_some() {
                            "struct"
                        } else {
                            "enum"
                        },
                        if matches!(decl.body, TypeBody::Struct(_)) {
                            "struct"
                        } else {
                            "enum"
                        }
                    ),
                )
                .hint(format!("declare a new type instead. {ACCEPT}")),
            ),
        }
    }
    for (name, tag) in &lock.errors {
        let now = doc
            .errors
            .iter()
            .zip(&api.errors)
            .find(|(def, _)| def.name.value == *name);
        match now {
            Some((def, e)) => {
                changed_tag(&mut out, def.tag.as_ref(), &def.name, "error", *tag, e.tag)
            }
            None if is_reserved(&doc.reserved.errors, *tag) => {}
            None => out.push(removed(
                &doc.service,
                "error",
                name,
                *tag,
                "reserved: errors: [..]",
            )),
        }
    }
    out
}

/// The struct types a command's parameters carry, directly or nested.
fn carried_by_commands(api: &Api) -> BTreeSet<String> {
    let mut carried = BTreeSet::new();
    let mut pending: Vec<&Ty> = api
        .operations
        .iter()
        .filter(|o| o.kind == OpKind::Command)
        .flat_map(|o| o.params.iter().map(|p| &p.ty))
        .collect();
    while let Some(ty) = pending.pop() {
        match ty {
            Ty::List(inner) | Ty::Option(inner) | Ty::Map(inner) => pending.push(inner),
            Ty::Named(name) => {
                if !carried.insert(name.clone()) {
                    continue;
                }
                if let Some(TypeBody::Struct(fields)) =
                    api.types.iter().find(|t| t.name == *name).map(|t| &t.body)
                {
                    pending.extend(fields.iter().map(|f| &f.ty));
                }
            }
            _ => {}
        }
    }
    carried
}

/// Checks the fields added to a locked struct: none where commands carry it (old entries lack
/// them, and an old build would drop them: the version gate sees parameters, not fields), and
/// only `option<…>` ones elsewhere (stored replies and old servers do not send them).
fn new_fields(
    out: &mut Vec<Diagnostic>,
    (defs, now): (&[FieldDef], &[Field]),
    old: &BTreeMap<String, FieldLock>,
    owner: &Sp<String>,
    carried: bool,
) {
    for (d, f) in defs.iter().zip(now) {
        if old.contains_key(&f.name) {
            continue;
        }
        let problem = if carried {
            Diagnostic::new(
                "lock::added_field",
                d.name.pos,
                &d.name.value,
                format!(
                    "new field `{}` of `{}`, which commands carry",
                    f.name, owner.value
                ),
            )
            .hint(format!(
                "commands already in the log lack it, and a replica of the old build would drop \
                 it: add a parameter with a default to the operations instead, or a new type. \
                 {ACCEPT}"
            ))
        } else if !matches!(f.ty, Ty::Option(_)) {
            Diagnostic::new(
                "lock::required_field",
                d.name.pos,
                &d.name.value,
                format!("new field `{}` of `{}` is required", f.name, owner.value),
            )
            .hint(format!(
                "replies already stored, and servers of the old build, do not have it: make it                  `option<{}>`. {ACCEPT}",
                ty_text(&f.ty)
            ))
        } else {
            continue;
        };
        out.push(problem);
    }
}

/// Checks the parameters of an operation or the fields of a struct against their lock.
fn fields(
    out: &mut Vec<Diagnostic>,
    (defs, now): (&[FieldDef], &[Field]),
    old: &BTreeMap<String, FieldLock>,
    (reserved, owner): (&[Sp<u64>], &Sp<String>),
    what: &str,
) {
    for (name, old) in old {
        match defs.iter().zip(now).find(|(d, _)| d.name.value == *name) {
            Some((d, f)) => {
                changed_tag(out, d.tag.as_ref(), &d.name, what, old.tag, f.tag);
                let ty = ty_text(&f.ty);
                if ty != old.ty {
                    out.push(
                        Diagnostic::new(
                            "lock::changed_type",
                            d.ty.pos,
                            &d.ty.value,
                            format!(
                                "{what} `{name}` of `{}` was {}, now {ty}",
                                owner.value, old.ty
                            ),
                        )
                        .hint(format!(
                            "old log entries and clients carry the old type; add a new {what} with \
                             a new name and tag instead. {ACCEPT}"
                        )),
                    );
                }
            }
            None if is_reserved(reserved, old.tag) => {}
            None => out.push(removed(owner, what, name, old.tag, "reserved: [..]")),
        }
    }
    if what != "parameter" {
        return;
    }
    for (d, f) in defs.iter().zip(now) {
        let required = f.default.is_none() && !matches!(f.ty, Ty::Option(_));
        if required && !old.contains_key(&f.name) {
            out.push(
                Diagnostic::new(
                    "lock::required_param",
                    d.name.pos,
                    &d.name.value,
                    format!(
                        "new parameter `{}` of operation `{}` has no default",
                        f.name, owner.value
                    ),
                )
                .hint(format!(
                    "entries already in the log do not have it: give it a `default:` or make it \
                     `option<{}>`. {ACCEPT}",
                    ty_text(&f.ty)
                )),
            );
        }
    }
}

fn changed_tag(
    out: &mut Vec<Diagnostic>,
    tag: Option<&Sp<u64>>,
    name: &Sp<String>,
    what: &str,
    old: u32,
    now: u32,
) {
    if old == now {
        return;
    }
    let (pos, token) = tag.map_or((name.pos, name.value.clone()), |t| {
        (t.pos, t.value.to_string())
    });
    out.push(
        Diagnostic::new(
            "lock::changed_tag",
            pos,
            token,
            format!("the tag of {what} `{}` was {old}, now {now}", name.value),
        )
        .hint(format!(
            "tags identify it on the gRPC wire to clients of the old schema: put back `tag: \
             {old}`. {ACCEPT}"
        )),
    );
}

fn removed(owner: &Sp<String>, what: &str, name: &str, tag: u32, reserve: &str) -> Diagnostic {
    Diagnostic::new(
        "lock::removed",
        owner.pos,
        &owner.value,
        format!(
            "{what} `{name}` (tag {tag}) was removed from `{}`",
            owner.value
        ),
    )
    .hint(format!(
        "logs, snapshots and clients of the old schema may still use it: keep it (marked \
         `deprecated: true`), or list its tag under `{reserve}` here so it is never reused. \
         {ACCEPT}"
    ))
}
