//! Rolling upgrades: what each node's build of a service knows, and the leader's gate that keeps
//! a command out of the log until every member can apply it.
//!
//! Every node advertises its [`Schema`]: the schema version (a hash of the service's
//! compatibility lock) and every command with the parameters it knows. Before a leader proposes
//! a command it reads the command's shape (its operation and the arguments it carries; a
//! parameter at its default is left out of the encoding, so an old and a new build encode it
//! alike) and checks it against every member's schema, its own included. When every member runs
//! the leader's version, the leader's own decode of the command answers for all of them, and
//! nothing is read. A member known to lack the operation or one of the arguments refuses the
//! command with [`Rejected`] naming the member and its version, until it runs a build that has
//! them.
//!
//! Every node asks every member for its schema (`Message::Schema`) every few seconds, so a
//! follower that becomes leader knows them already. A leader asks at once a member it has not
//! heard from, and again a member that seemed to lack something (it may just have been
//! upgraded). A member that does not answer does not block writes (a cluster keeps writing with
//! a node down). If such a member, or one downgraded since it was last asked, does meet an entry
//! it cannot read, its state machine stops rather than refuse it while the others apply it: the
//! replicas never diverge, and the node catches up once it runs a build that knows the entry.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::raft::types::{NodeId, Rejected};
use crate::wire::service::OpInfo;

/// What one build of a service knows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Schema {
    /// The schema version (a hash of the compatibility lock); empty for an application whose
    /// commands are opaque bytes (then no command is checked).
    pub version: String,
    /// Every command (an operation of kind `command`) with its parameter names.
    pub commands: BTreeMap<String, Vec<String>>,
    /// Every query's name (a query submitted as a command is named as such).
    pub queries: Vec<String>,
}

impl Schema {
    /// The schema of a generated service: its version and the commands among `operations`.
    pub fn new(version: &str, operations: &[OpInfo]) -> Schema {
        Schema {
            version: version.to_string(),
            commands: operations
                .iter()
                .filter(|o| o.kind == crate::wire::CallKind::Command)
                .map(|o| {
                    let params = o.params.iter().map(|p| p.to_string()).collect();
                    (o.name.to_string(), params)
                })
                .collect(),
            queries: operations
                .iter()
                .filter(|o| o.kind == crate::wire::CallKind::Query)
                .map(|o| o.name.to_string())
                .collect(),
        }
    }

    /// The schema of an application whose commands are opaque bytes: nothing is checked.
    pub fn opaque() -> Schema {
        Schema {
            version: String::new(),
            commands: BTreeMap::new(),
            queries: Vec::new(),
        }
    }

    /// Whether commands are opaque bytes (see [`Schema::opaque`]).
    pub fn is_opaque(&self) -> bool {
        self.version.is_empty()
    }

    /// What of `shape` this build does not know (the operation, or an argument), if anything.
    pub fn lacks(&self, shape: &Shape) -> Option<String> {
        let Some(params) = self.commands.get(&shape.operation) else {
            if self.queries.contains(&shape.operation) {
                return Some(format!(
                    "`{}` as a command (it is a query)",
                    shape.operation
                ));
            }
            return Some(format!("operation `{}`", shape.operation));
        };
        let unknown: Vec<&str> = shape
            .arguments
            .iter()
            .filter(|a| !params.contains(a))
            .map(String::as_str)
            .collect();
        (!unknown.is_empty()).then(|| {
            format!(
                "parameter{} `{}` of `{}`",
                if unknown.len() > 1 { "s" } else { "" },
                unknown.join("`, `"),
                shape.operation
            )
        })
    }
}

/// A serialized command's operation and the names of the arguments it carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shape {
    /// The operation.
    pub operation: String,
    /// The arguments present in the encoding (a parameter at its default is absent).
    pub arguments: Vec<String>,
}

impl Shape {
    /// Reads the shape of `{"<operation>": {<arguments>}}` without decoding the values.
    pub fn of(command: &[u8]) -> Result<Shape, String> {
        type Arguments = BTreeMap<String, serde::de::IgnoredAny>;
        let outer: BTreeMap<String, Arguments> =
            serde_json::from_slice(command).map_err(|e| format!("malformed command: {e}"))?;
        let mut calls = outer.into_iter();
        match (calls.next(), calls.next()) {
            (Some((operation, arguments)), None) => Ok(Shape {
                operation,
                arguments: arguments.into_keys().collect(),
            }),
            _ => Err("malformed command: not one operation".into()),
        }
    }
}

/// What a node last heard of a member's schema.
#[derive(Debug, Clone)]
enum Seen {
    Known(Schema),
    /// It did not answer when last asked.
    Silent,
}

/// What the gate says of a command.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Verdict {
    /// Members known to lack part of it: id, version, what they lack.
    pub lacking: Vec<(NodeId, String, String)>,
    /// Members never heard from (ask them, then check again).
    pub unasked: Vec<NodeId>,
}

impl Verdict {
    /// Nothing stands in the way.
    pub fn admits(&self) -> bool {
        self.lacking.is_empty() && self.unasked.is_empty()
    }

    /// The refusal of a command some member lacks (`None` if none does).
    pub fn refusal(&self) -> Option<Rejected> {
        let names: Vec<String> = self
            .lacking
            .iter()
            .map(|(id, version, what)| format!("node {id} (schema {version}) does not know {what}"))
            .collect();
        (!names.is_empty()).then(|| {
            Rejected(format!(
                "not every member can apply this command yet: {}; upgrade {} first",
                names.join("; "),
                if names.len() > 1 { "them" } else { "it" }
            ))
        })
    }
}

/// A node's view of its members' schemas (see the module docs).
#[derive(Debug, Default)]
pub struct Gate {
    seen: Mutex<HashMap<NodeId, Seen>>,
}

impl Gate {
    /// Records what member `id` answered when asked for its schema (`None`: no answer).
    pub fn record(&self, id: NodeId, schema: Option<Schema>) {
        let seen = match schema {
            Some(schema) => Seen::Known(schema),
            None => Seen::Silent,
        };
        if let Ok(mut map) = self.seen.lock() {
            map.insert(id, seen);
        }
    }

    /// Forgets members no longer in `members`.
    pub fn retain(&self, members: &[NodeId]) {
        if let Ok(mut map) = self.seen.lock() {
            map.retain(|id, _| members.contains(id));
        }
    }

    /// Whether every member of `members` last said it runs schema `version`.
    pub fn all_run(&self, version: &str, members: &[NodeId]) -> bool {
        let Ok(map) = self.seen.lock() else {
            return false;
        };
        members
            .iter()
            .all(|id| matches!(map.get(id), Some(Seen::Known(s)) if s.version == version))
    }

    /// Checks `shape` against every member of `members` (silent ones pass).
    pub fn check(&self, shape: &Shape, members: &[NodeId]) -> Verdict {
        let mut verdict = Verdict::default();
        let Ok(map) = self.seen.lock() else {
            return verdict;
        };
        for &id in members {
            match map.get(&id) {
                Some(Seen::Known(schema)) => {
                    if let Some(what) = schema.lacks(shape) {
                        verdict.lacking.push((id, schema.version.clone(), what));
                    }
                }
                Some(Seen::Silent) => {}
                None => verdict.unasked.push(id),
            }
        }
        verdict
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::CallKind;

    const V1: &[OpInfo] = &[
        OpInfo {
            name: "put",
            tag: 1,
            kind: CallKind::Command,
            params: &["key", "value"],
            allow: &["any"],
        },
        OpInfo {
            name: "get",
            tag: 2,
            kind: CallKind::Query,
            params: &["key"],
            allow: &["any"],
        },
    ];
    const V2: &[OpInfo] = &[
        OpInfo {
            name: "put",
            tag: 1,
            kind: CallKind::Command,
            params: &["key", "value", "if_absent"],
            allow: &["any"],
        },
        OpInfo {
            name: "get",
            tag: 2,
            kind: CallKind::Query,
            params: &["key"],
            allow: &["any"],
        },
        OpInfo {
            name: "append",
            tag: 3,
            kind: CallKind::Command,
            params: &["key", "suffix"],
            allow: &["any"],
        },
    ];

    fn shape(json: &str) -> Shape {
        Shape::of(json.as_bytes()).expect("a command")
    }

    #[test]
    fn a_shape_is_the_operation_and_the_arguments_present() {
        let s = shape(r#"{"put":{"value":{"nested":[1,2]},"key":"a"}}"#);
        assert_eq!(s.operation, "put");
        assert_eq!(s.arguments, ["key", "value"]);
        for bad in [r#"{}"#, r#"{"a":{},"b":{}}"#, r#"{"put":1}"#, "garbage", ""] {
            assert!(Shape::of(bad.as_bytes()).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_schema_knows_its_commands_and_their_parameters_not_its_queries() {
        let v1 = Schema::new("1111", V1);
        assert_eq!(v1.commands.len(), 1);
        assert_eq!(v1.lacks(&shape(r#"{"put":{"key":"a","value":"b"}}"#)), None);
        assert_eq!(
            v1.lacks(&shape(r#"{"append":{"key":"a","suffix":"b"}}"#)),
            Some("operation `append`".into())
        );
        assert_eq!(
            v1.lacks(&shape(
                r#"{"put":{"key":"a","value":"b","if_absent":true}}"#
            )),
            Some("parameter `if_absent` of `put`".into())
        );
        assert_eq!(
            v1.lacks(&shape(r#"{"get":{"key":"a"}}"#)),
            Some("`get` as a command (it is a query)".into())
        );
        assert!(Schema::opaque().is_opaque() && !v1.is_opaque());
    }

    #[test]
    fn the_gate_refuses_what_a_member_lacks_naming_it_and_asks_the_unknown() {
        let gate = Gate::default();
        gate.record(1, Some(Schema::new("2222", V2)));
        gate.record(2, Some(Schema::new("2222", V2)));
        gate.record(3, Some(Schema::new("1111", V1)));
        let members = [1, 2, 3];
        // An old operation, at its old shape, is fine everywhere.
        assert!(
            gate.check(&shape(r#"{"put":{"key":"a","value":"b"}}"#), &members)
                .admits()
        );
        // A new operation, or an old one with a new argument, is not.
        for (json, what) in [
            (
                r#"{"append":{"key":"a","suffix":"b"}}"#,
                "operation `append`",
            ),
            (
                r#"{"put":{"key":"a","value":"b","if_absent":true}}"#,
                "parameter `if_absent` of `put`",
            ),
        ] {
            let verdict = gate.check(&shape(json), &members);
            assert_eq!(verdict.lacking, [(3, "1111".to_string(), what.to_string())]);
            let refusal = verdict.refusal().expect("refused").0;
            assert!(refusal.contains("node 3 (schema 1111)"), "{refusal}");
            assert!(refusal.contains(what), "{refusal}");
        }
        // Once node 3 runs the new build, it passes.
        gate.record(3, Some(Schema::new("2222", V2)));
        assert!(
            gate.check(&shape(r#"{"append":{"key":"a","suffix":"b"}}"#), &members)
                .admits()
        );
        // A member never asked is to be asked; a silent one passes.
        let verdict = gate.check(&shape(r#"{"put":{"key":"a","value":"b"}}"#), &[1, 4]);
        assert_eq!(verdict.unasked, [4]);
        assert_eq!(verdict.refusal(), None);
        gate.record(4, None);
        assert!(
            gate.check(&shape(r#"{"append":{"key":"a","suffix":"b"}}"#), &[1, 4])
                .admits()
        );
        // Every member on one version: nothing to read of a command.
        assert!(gate.all_run("2222", &[1, 2, 3]));
        assert!(!gate.all_run("2222", &[1, 4]), "node 4 is silent");
        assert!(!gate.all_run("1111", &[1]));
        gate.retain(&[1]);
        assert_eq!(gate.check(&shape(r#"{"put":{}}"#), &[1, 4]).unasked, [4]);
    }
}
