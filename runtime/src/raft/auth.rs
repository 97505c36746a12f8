//! Users, their roles and their tokens, in the replicated state.
//!
//! An administrator (`admin user …`, `admin token …`, over the raft listener with the cluster's
//! secret) changes them with [`AuthCommand`]s, which go through the log like any command
//! (`{"_raft_auth": …}`, a name no operation can take), so every node decides alike and a
//! revocation holds on every node once it has applied it. They live in the state database
//! (`_raft_users`, `_raft_tokens`, so snapshots carry them) and, for the check on every call, in
//! memory ([`Identities`]), which [`AuthApp`] keeps equal to the tables: reloaded when the
//! database opens (at start, after a snapshot is installed) and changed as commands apply.
//!
//! A token is shown once, by the `admin` client that made it; the cluster keeps its SHA-256
//! only. A node started with `--auth` refuses an API call without a known token
//! ([`crate::wire::error::Failure::Unauthenticated`]) and one whose user's roles the operation's
//! `allow` does not name ([`crate::wire::error::Failure::PermissionDenied`]); `admin` may call
//! every operation. The node the client reached decides, before a command enters the log or a
//! query runs.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use rusqlite::{Connection, OptionalExtension as _, params};
use serde::{Deserialize, Serialize};
use sha2::Digest as _;

use crate::raft::state_machine::Application;
use crate::raft::types::Applied;
use crate::wire::error::Failure;
use crate::wire::service::{ApplyContext, OpInfo};

/// The name that marks an [`AuthCommand`] among a log's commands.
pub const AUTH_OP: &str = "_raft_auth";

/// The built-in role that may call every operation.
pub const ADMIN_ROLE: &str = "admin";

/// The built-in role every authenticated caller holds (in an operation's `allow`).
pub const ANY_ROLE: &str = "any";

/// A change to the users and tokens.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum AuthCommand {
    /// Adds a user, or replaces its roles.
    UserAdd {
        /// The user's name.
        name: String,
        /// Its roles (the schema's, or `admin`).
        roles: Vec<String>,
    },
    /// Removes a user and every token it holds.
    UserRemove {
        /// The user's name.
        name: String,
    },
    /// Records a token of `user` by its SHA-256 (hex); `id` names it for a revocation.
    TokenIssue {
        /// The token's user (who must exist).
        user: String,
        /// Its public id.
        id: String,
        /// The SHA-256 of the token, hex.
        hash: String,
    },
    /// Revokes the token with this id.
    TokenRevoke {
        /// The token's id.
        id: String,
    },
}

/// How an [`AuthCommand`] is written in the log.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Wrapped {
    #[serde(rename = "_raft_auth")]
    command: AuthCommand,
}

impl AuthCommand {
    /// The command's bytes in the log.
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(&Wrapped {
            command: self.clone(),
        })
        .unwrap_or_default()
    }

    /// The auth command in `bytes`: `None` when they are another command, an error when they
    /// are a malformed auth command.
    pub fn decode(bytes: &[u8]) -> Option<Result<AuthCommand, String>> {
        if crate::wire::service::operation_of(bytes) != Some(AUTH_OP) {
            return None;
        }
        Some(
            serde_json::from_slice::<Wrapped>(bytes)
                .map(|w| w.command)
                .map_err(|e| format!("a malformed {AUTH_OP} command: {e}")),
        )
    }
}

/// The SHA-256 of a token, hex: what the cluster keeps of it.
pub fn token_hash(token: &str) -> String {
    crate::util::hex(&sha2::Sha256::digest(token.as_bytes()))
}

/// A new token (`rt_` and 128 random bits, hex) and its public id (the first 12 hex digits of
/// its hash).
pub fn new_token() -> std::io::Result<(String, String)> {
    let token = format!("rt_{}", crate::util::random_hex128()?);
    let id = token_hash(&token)[..12].to_string();
    Ok((token, id))
}

/// A user as `admin user list` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    /// Its name.
    pub name: String,
    /// Its roles.
    pub roles: Vec<String>,
    /// The ids of its tokens.
    pub tokens: Vec<String>,
}

/// The users and tokens as a node holds them in memory.
#[derive(Debug, Default)]
pub struct Identities {
    inner: RwLock<Tables>,
}

#[derive(Debug, Default)]
struct Tables {
    /// Roles by user.
    users: HashMap<String, Vec<String>>,
    /// (id, user) by token hash.
    tokens: HashMap<String, (String, String)>,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS _raft_users (name TEXT PRIMARY KEY, roles TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS _raft_tokens (
    id TEXT PRIMARY KEY,
    hash TEXT NOT NULL UNIQUE,
    user TEXT NOT NULL
) WITHOUT ROWID;
";

impl Identities {
    /// Reads the tables into memory (creating them if missing).
    fn load(&self, conn: &Connection) -> Result<(), String> {
        conn.execute_batch(SCHEMA).map_err(|e| e.to_string())?;
        let mut tables = Tables::default();
        let mut users = conn
            .prepare("SELECT name, roles FROM _raft_users")
            .map_err(|e| e.to_string())?;
        let rows = users
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))
            .map_err(|e| e.to_string())?;
        for row in rows {
            let (name, roles) = row.map_err(|e| e.to_string())?;
            tables.users.insert(name, split_roles(&roles));
        }
        let mut tokens = conn
            .prepare("SELECT id, hash, user FROM _raft_tokens")
            .map_err(|e| e.to_string())?;
        let rows = tokens
            .query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                ))
            })
            .map_err(|e| e.to_string())?;
        for row in rows {
            let (id, hash, user) = row.map_err(|e| e.to_string())?;
            tables.tokens.insert(hash, (id, user));
        }
        *self.inner.write().map_err(|_| "identities lock poisoned")? = tables;
        Ok(())
    }

    /// Applies `command` to the tables (inside the entry's savepoint) and to memory; a refusal
    /// (an unknown user, a token id taken) changes nothing and is the reply.
    fn apply(&self, conn: &Connection, command: &AuthCommand) -> Result<Applied, String> {
        let sql = |e: rusqlite::Error| e.to_string();
        let refuse = |message: String| {
            Ok(Applied {
                ok: false,
                reply: serde_json::json!({ "error": message })
                    .to_string()
                    .into_bytes(),
            })
        };
        let mut tables = self
            .inner
            .write()
            .map_err(|_| "identities lock poisoned".to_string())?;
        match command {
            AuthCommand::UserAdd { name, roles } => {
                if name.is_empty() {
                    return refuse("a user needs a name".into());
                }
                conn.execute(
                    "INSERT INTO _raft_users (name, roles) VALUES (?1, ?2)
                     ON CONFLICT (name) DO UPDATE SET roles = excluded.roles",
                    params![name, roles.join(",")],
                )
                .map_err(sql)?;
                tables.users.insert(name.clone(), roles.clone());
            }
            AuthCommand::UserRemove { name } => {
                if tables.users.remove(name).is_none() {
                    return refuse(format!("no user `{name}`"));
                }
                conn.execute("DELETE FROM _raft_users WHERE name = ?1", params![name])
                    .map_err(sql)?;
                conn.execute("DELETE FROM _raft_tokens WHERE user = ?1", params![name])
                    .map_err(sql)?;
                tables.tokens.retain(|_, (_, user)| user != name);
            }
            AuthCommand::TokenIssue { user, id, hash } => {
                if !tables.users.contains_key(user) {
                    return refuse(format!("no user `{user}`"));
                }
                if tables.tokens.values().any(|(taken, _)| taken == id)
                    || tables.tokens.contains_key(hash)
                {
                    return refuse(format!("token `{id}` exists already"));
                }
                conn.execute(
                    "INSERT INTO _raft_tokens (id, hash, user) VALUES (?1, ?2, ?3)",
                    params![id, hash, user],
                )
                .map_err(sql)?;
                tables
                    .tokens
                    .insert(hash.clone(), (id.clone(), user.clone()));
            }
            AuthCommand::TokenRevoke { id } => {
                let found: Option<String> = conn
                    .query_row(
                        "DELETE FROM _raft_tokens WHERE id = ?1 RETURNING hash",
                        params![id],
                        |r| r.get(0),
                    )
                    .optional()
                    .map_err(sql)?;
                let Some(hash) = found else {
                    return refuse(format!("no token `{id}`"));
                };
                tables.tokens.remove(&hash);
            }
        }
        Ok(Applied {
            ok: true,
            reply: b"{}".to_vec(),
        })
    }

    /// The user `token` belongs to, with its roles.
    pub fn user_of(&self, token: &str) -> Option<(String, Vec<String>)> {
        let tables = self.inner.read().ok()?;
        let (_, user) = tables.tokens.get(&token_hash(token))?;
        let roles = tables.users.get(user)?.clone();
        Some((user.clone(), roles))
    }

    /// Every user, its roles and its tokens' ids, by name.
    pub fn users(&self) -> Vec<User> {
        let Ok(tables) = self.inner.read() else {
            return Vec::new();
        };
        let mut users: Vec<User> = tables
            .users
            .iter()
            .map(|(name, roles)| {
                let mut tokens: Vec<String> = tables
                    .tokens
                    .values()
                    .filter(|(_, user)| user == name)
                    .map(|(id, _)| id.clone())
                    .collect();
                tokens.sort();
                User {
                    name: name.clone(),
                    roles: roles.clone(),
                    tokens,
                }
            })
            .collect();
        users.sort_by(|a, b| a.name.cmp(&b.name));
        users
    }

    /// The user `token` belongs to and its roles, or why the caller is not authenticated.
    fn caller(&self, token: Option<&str>) -> Result<(String, Vec<String>), Failure> {
        let Some(token) = token else {
            return Err(Failure::Unauthenticated(
                "this node requires a token (x-token); ask an administrator for one".into(),
            ));
        };
        self.user_of(token).ok_or_else(|| {
            Failure::Unauthenticated(
                "the token is not known to this cluster (never issued, revoked, or its user \
                 removed)"
                    .into(),
            )
        })
    }

    /// Whether the caller with `token` may call `operation` of `operations`: its user's name,
    /// or the refusal.
    pub fn authorize(
        &self,
        operations: &[OpInfo],
        operation: &str,
        token: Option<&str>,
    ) -> Result<String, Failure> {
        let (user, roles) = self.caller(token)?;
        let allow = operations
            .iter()
            .find(|o| o.name == operation)
            .map_or(&[][..], |o| o.allow);
        if allows(allow, &roles) {
            return Ok(user);
        }
        Err(Failure::PermissionDenied(format!(
            "user `{user}` (roles: {}) may not call `{operation}` (allowed: {})",
            if roles.is_empty() {
                "none".to_string()
            } else {
                roles.join(", ")
            },
            allow
                .iter()
                .copied()
                .chain([ADMIN_ROLE])
                .collect::<Vec<_>>()
                .join(", ")
        )))
    }
}

/// Whether a caller with `roles` may call an operation whose `allow` is this.
fn allows(allow: &[&str], roles: &[String]) -> bool {
    roles.iter().any(|r| r == ADMIN_ROLE)
        || allow
            .iter()
            .any(|a| *a == ANY_ROLE || roles.iter().any(|r| r == a))
}

impl Identities {
    /// What a watcher with `token` may see of what `filter` asks for: an unknown caller is
    /// refused, and a known one sees only the commands its roles may call (`admin`: all).
    pub fn watch_filter(
        &self,
        operations: &[OpInfo],
        token: Option<&str>,
        mut filter: crate::raft::feed::WatchFilter,
    ) -> Result<crate::raft::feed::WatchFilter, Failure> {
        let (user, roles) = self.caller(token)?;
        if roles.iter().any(|r| r == ADMIN_ROLE) {
            return Ok(filter);
        }
        let allowed: Vec<&str> = operations
            .iter()
            .filter(|o| o.kind == crate::wire::CallKind::Command && allows(o.allow, &roles))
            .map(|o| o.name)
            .collect();
        let wanted: Vec<String> = if filter.operations.is_empty() {
            allowed.iter().map(|o| o.to_string()).collect()
        } else {
            filter
                .operations
                .into_iter()
                .filter(|o| allowed.contains(&o.as_str()))
                .collect()
        };
        if wanted.is_empty() {
            return Err(Failure::PermissionDenied(format!(
                "user `{user}` may watch none of the operations asked for (a watcher sees the \
                 commands its roles may call)"
            )));
        }
        filter.operations = wanted;
        Ok(filter)
    }
}

fn split_roles(roles: &str) -> Vec<String> {
    roles
        .split(',')
        .filter(|r| !r.is_empty())
        .map(str::to_string)
        .collect()
}

/// The application with the users and tokens beside it: auth commands are applied here, every
/// other call goes to the application.
pub struct AuthApp {
    inner: Arc<dyn Application>,
    identities: Arc<Identities>,
}

impl AuthApp {
    /// `inner` with `identities` kept equal to the database's tables.
    pub fn new(inner: Arc<dyn Application>, identities: Arc<Identities>) -> Self {
        AuthApp { inner, identities }
    }
}

impl Application for AuthApp {
    fn init(&self, conn: &Connection) -> Result<(), String> {
        self.inner.init(conn)?;
        self.identities.load(conn)
    }

    fn apply(
        &self,
        conn: &Connection,
        ctx: &ApplyContext,
        command: &[u8],
    ) -> Result<Applied, String> {
        match AuthCommand::decode(command) {
            Some(Ok(auth)) => self.identities.apply(conn, &auth),
            // Admitted before the log, so only a build that cannot read it gets here.
            Some(Err(e)) => Err(e),
            None => self.inner.apply(conn, ctx, command),
        }
    }

    fn query(&self, conn: &Connection, query: &[u8]) -> Vec<u8> {
        self.inner.query(conn, query)
    }

    fn digest(&self, conn: &Connection) -> Result<String, String> {
        self.inner.digest(conn)
    }

    fn admit(&self, command: &[u8]) -> Result<(), Failure> {
        match AuthCommand::decode(command) {
            Some(Ok(_)) => Ok(()),
            Some(Err(e)) => Err(Failure::Rejected(e)),
            None => self.inner.admit(command),
        }
    }

    /// The application's schema, with the auth command beside its commands: the version gate
    /// refuses one while a member's build does not know it.
    fn schema(&self) -> crate::raft::version::Schema {
        let mut schema = self.inner.schema();
        if !schema.is_opaque() {
            let variants = ["user_add", "user_remove", "token_issue", "token_revoke"];
            schema.commands.insert(
                AUTH_OP.to_string(),
                variants.iter().map(|v| v.to_string()).collect(),
            );
        }
        schema
    }

    fn watch_info(&self, command: &[u8]) -> crate::raft::feed::WatchInfo {
        self.inner.watch_info(command)
    }

    fn operations(&self) -> &'static [OpInfo] {
        self.inner.operations()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_auth_command_is_told_from_any_other_and_round_trips() {
        let command = AuthCommand::TokenRevoke { id: "abc".into() };
        let bytes = command.encode();
        assert_eq!(AuthCommand::decode(&bytes), Some(Ok(command)));
        assert_eq!(AuthCommand::decode(br#"{"deposit":{}}"#), None);
        assert!(matches!(
            AuthCommand::decode(br#"{"_raft_auth":{"nope":{}}}"#),
            Some(Err(_))
        ));
    }

    #[test]
    fn tokens_map_to_users_and_roles_decide() {
        let conn = Connection::open_in_memory().expect("db");
        let ids = Identities::default();
        ids.load(&conn).expect("load");
        let ops = [OpInfo {
            name: "deposit",
            tag: 1,
            kind: crate::wire::CallKind::Command,
            params: &[],
            allow: &["teller"],
        }];
        let apply = |c: AuthCommand| ids.apply(&conn, &c).expect("apply").ok;
        assert!(apply(AuthCommand::UserAdd {
            name: "ann".into(),
            roles: vec!["teller".into()],
        }));
        assert!(apply(AuthCommand::UserAdd {
            name: "bo".into(),
            roles: vec!["auditor".into()],
        }));
        let (ann, ann_id) = new_token().expect("token");
        let (bo, bo_id) = new_token().expect("token");
        for (user, token, id) in [("ann", &ann, &ann_id), ("bo", &bo, &bo_id)] {
            assert!(apply(AuthCommand::TokenIssue {
                user: user.into(),
                id: id.clone(),
                hash: token_hash(token),
            }));
        }
        assert!(!apply(AuthCommand::TokenIssue {
            user: "nobody".into(),
            id: "x".into(),
            hash: "y".into(),
        }));
        assert_eq!(
            ids.authorize(&ops, "deposit", Some(&ann)),
            Ok("ann".to_string())
        );
        assert!(matches!(
            ids.authorize(&ops, "deposit", Some(&bo)),
            Err(Failure::PermissionDenied(_))
        ));
        assert!(matches!(
            ids.authorize(&ops, "deposit", None),
            Err(Failure::Unauthenticated(_))
        ));
        assert!(apply(AuthCommand::TokenRevoke { id: ann_id }));
        assert!(matches!(
            ids.authorize(&ops, "deposit", Some(&ann)),
            Err(Failure::Unauthenticated(_))
        ));
        // What memory holds is what the tables hold.
        let reloaded = Identities::default();
        reloaded.load(&conn).expect("reload");
        assert_eq!(reloaded.users(), ids.users());
        assert!(apply(AuthCommand::UserRemove { name: "bo".into() }));
        assert!(ids.user_of(&bo).is_none());
    }
}
