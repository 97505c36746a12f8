//! The type expression parser: `map<string, list<Account>>` and the like, against the
//! primitives and the declared types.

use std::collections::{BTreeMap, BTreeSet};

use super::*;

pub(super) struct KnownTypes {
    pub(super) names: BTreeSet<String>,
    pub(super) enums: BTreeMap<String, Vec<String>>,
}

pub(super) struct TyError {
    pub(super) offset: usize,
    pub(super) token: String,
    pub(super) code: &'static str,
    pub(super) message: String,
    pub(super) hint: String,
}

/// Parses a whole type expression such as `map<string, list<Account>>`.
pub(super) fn parse_ty(text: &str, known: &KnownTypes) -> Result<Ty, TyError> {
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
pub(super) fn flat_containers(ty: &Ty, text: &str) -> Result<(), TyError> {
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
