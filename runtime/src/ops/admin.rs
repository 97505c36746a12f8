//! The admin side of a cluster, as a client of any member's raft listener: every member's
//! status ([`member_statuses`], the table of `admin status`), backups fetched to a directory
//! ([`backup`]), and the other `admin` requests ([`admin`]).

use crate::ops::host::HostError;
use crate::raft::network::{AdminRequest, Answer, Message, call};
use crate::raft::rpc::{RaftClient, RaftCredentials};
use crate::raft::status::{Membership, NodeStatus};
use crate::raft::types::NodeId;

/// One member of a cluster as it reports itself.
#[derive(Debug, Clone)]
pub struct MemberStatus {
    /// Its id.
    pub id: NodeId,
    /// Its gRPC API address.
    pub api: String,
    /// Its raft address.
    pub raft: String,
    /// Whether it is a learner (not a voter).
    pub learner: bool,
    /// Its own status report; `None` when it did not answer.
    pub status: Option<NodeStatus>,
    /// How far behind the leader's log it is, in the leader's view.
    pub lag: Option<u64>,
}

/// The status of the node at `raft_addr`.
pub async fn status(
    raft_addr: &str,
    credentials: &RaftCredentials,
) -> Result<NodeStatus, HostError> {
    let report = admin(raft_addr, credentials, AdminRequest::Status).await?;
    serde_json::from_value(report)
        .map_err(|e| HostError::Admin(format!("{raft_addr}: malformed status: {e}")))
}

/// Every member's status, asked of each member in turn through the membership the node at
/// `raft_addr` knows.
pub async fn member_statuses(
    raft_addr: &str,
    credentials: &RaftCredentials,
) -> Result<Vec<MemberStatus>, HostError> {
    let first = status(raft_addr, credentials).await?;
    let mut out = Vec::new();
    for (id, member) in &first.members {
        out.push(MemberStatus {
            id: *id,
            api: member
                .api
                .get("grpc")
                .map_or("-", String::as_str)
                .to_string(),
            raft: member.raft.clone(),
            learner: member.role == Membership::Learner,
            status: status(&member.raft, credentials).await.ok(),
            lag: None,
        });
    }
    let leader_lag = out
        .iter()
        .filter_map(|m| m.status.as_ref())
        .find(|s| s.is_leader())
        .map(|s| s.lag.clone());
    if let Some(lag) = leader_lag {
        for m in &mut out {
            m.lag = lag.get(&m.id).copied();
        }
    }
    Ok(out)
}

/// A member's role as a table shows it: the role it reports, marked when it is a learner or
/// (a leader) cut off from a quorum; `unreachable` when it did not answer.
pub fn role_text(member: &MemberStatus) -> String {
    let Some(s) = &member.status else {
        return "unreachable".into();
    };
    let mut role = s.role.name().to_string();
    if member.learner {
        role.push_str(" (learner)");
    }
    if s.quorum_lost {
        role.push_str(" (no quorum)");
    }
    if s.rejoining {
        role.push_str(" (rejoining, not voting)");
    }
    role
}

/// A member's storage as a table shows it, in one word: the raft state's disk space, of its
/// quota (`12.0MiB/8.0GiB`), and `(NOSPACE)` while the alarm refuses writes.
fn disk_text(s: &NodeStatus) -> String {
    let mut text = crate::util::bytes_text(s.storage_bytes);
    if let Some(quota) = s.quota_bytes {
        text = format!("{text}/{}", crate::util::bytes_text(quota));
    }
    if s.nospace {
        text.push_str("(NOSPACE)");
    }
    text
}

/// Every member's status as a table ([`member_statuses`]): id, role, term, API and raft
/// addresses, applied index, lag behind the leader, last snapshot index (and how many snapshot
/// builds and installs failed, if any did), the raft state's disk space (of the quota, and
/// `NOSPACE` while writes are refused), and the schema version
/// its build runs (a rolling upgrade shows which members still run the old one).
pub async fn status_table(
    raft_addr: &str,
    credentials: &RaftCredentials,
) -> Result<String, HostError> {
    let number = |v: Option<u64>| v.map_or("-".to_string(), |n| n.to_string());
    let mut rows = vec![
        [
            "id", "role", "term", "api", "raft", "applied", "lag", "snapshot", "disk", "schema",
        ]
        .map(String::from),
    ];
    for m in member_statuses(raft_addr, credentials).await? {
        let s = m.status.as_ref();
        rows.push([
            m.id.to_string(),
            role_text(&m),
            number(s.map(|s| s.term)),
            m.api.clone(),
            m.raft.clone(),
            number(s.and_then(|s| s.last_applied_index)),
            number(m.lag),
            match s {
                Some(s) if s.snapshot_failures > 0 => format!(
                    "{} ({} failed)",
                    number(s.snapshot_index),
                    s.snapshot_failures
                ),
                _ => number(s.and_then(|s| s.snapshot_index)),
            },
            s.map_or_else(|| "-".to_string(), disk_text),
            s.map_or("-", |s| s.schema.as_str()).to_string(),
        ]);
    }
    let widths: Vec<usize> = (0..rows[0].len())
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    let lines: Vec<String> = rows
        .iter()
        .map(|r| {
            r.iter()
                .zip(&widths)
                .map(|(cell, w)| format!("{cell:<w$}"))
                .collect::<Vec<_>>()
                .join("  ")
                .trim_end()
                .to_string()
        })
        .collect();
    Ok(lines.join("\n"))
}

/// Takes a backup of the node at `raft_addr` ([`AdminRequest::Backup`]) and writes it to `out`:
/// read in chunks, checked against the node's length and SHA-256, fsynced, then renamed into
/// place. Returns the node's report (name, length, SHA-256, applied index, digest).
pub async fn backup(
    raft_addr: &str,
    credentials: &RaftCredentials,
    out: &std::path::Path,
) -> Result<serde_json::Value, HostError> {
    use sha2::Digest as _;
    use std::io::Write as _;
    let report = admin(raft_addr, credentials, AdminRequest::Backup).await?;
    let name = report["name"].as_str().unwrap_or_default().to_string();
    let file_error = |e: std::io::Error| HostError::Admin(format!("{}: {e}", out.display()));
    let part = out.with_extension("part");
    // A `.part` left by an earlier attempt is replaced, but a symlink there (which could point
    // the backup, all of the service's data, anywhere) is refused: someone put it there.
    if std::fs::symlink_metadata(&part).is_ok_and(|m| m.file_type().is_symlink()) {
        return Err(HostError::Admin(format!(
            "{} is a symbolic link; refusing to write the backup through it",
            part.display()
        )));
    }
    let mut file = crate::util::create_owner_only(&part).map_err(file_error)?;
    let client = RaftClient::connect(raft_addr, credentials)
        .await
        .map_err(|s| HostError::Admin(format!("{raft_addr}: {}", s.message())))?;
    let mut hasher = sha2::Sha256::new();
    let mut len = 0u64;
    loop {
        let message = Message::ReadBackup {
            name: name.clone(),
            offset: len,
        };
        let bytes = match call(&client, &message).await {
            Ok(Answer::Bytes(bytes)) => bytes,
            Ok(Answer::Failed(e)) => return Err(HostError::Admin(e)),
            Ok(other) => return Err(HostError::Admin(format!("unexpected answer {other:?}"))),
            Err(s) => return Err(HostError::Admin(format!("{raft_addr}: {}", s.message()))),
        };
        if bytes.is_empty() {
            break;
        }
        hasher.update(&bytes);
        file.write_all(&bytes).map_err(file_error)?;
        len += bytes.len() as u64;
    }
    let sha256 = crate::util::hex(&hasher.finalize());
    if Some(len) != report["len"].as_u64() || report["sha256"] != sha256.as_str() {
        let _ = std::fs::remove_file(&part);
        return Err(HostError::Admin(format!(
            "the backup arrived damaged: {len} bytes with SHA-256 {sha256}, not {report}"
        )));
    }
    file.sync_all().map_err(file_error)?;
    std::fs::rename(&part, out).map_err(file_error)?;
    Ok(report)
}

/// Sends an admin request to the node at `raft_addr`, following redirects to the leader for
/// requests only the leader can run. A call may take up to [`AdminRequest::timeout`]: a join
/// waits for the learner to catch up.
pub async fn admin(
    raft_addr: &str,
    credentials: &RaftCredentials,
    request: AdminRequest,
) -> Result<serde_json::Value, HostError> {
    let mut target = raft_addr.to_string();
    for _ in 0..5 {
        let client = RaftClient::connect_for(&target, credentials, request.timeout())
            .await
            .map_err(|s| HostError::Admin(format!("{target}: {}", s.message())))?;
        match call(&client, &Message::Admin(request.clone()))
            .await
            .map_err(|s| HostError::Admin(format!("{target}: {}", s.message())))?
        {
            Answer::Admin(json) => {
                return serde_json::from_str(&json)
                    .map_err(|e| HostError::Admin(format!("{target}: malformed report: {e}")));
            }
            Answer::NotLeader(Some((_, leader))) => target = leader.raft,
            Answer::NotLeader(None) => {
                return Err(HostError::Admin("no leader elected yet".into()));
            }
            Answer::Failed(e) => return Err(HostError::Admin(e)),
            other => return Err(HostError::Admin(format!("unexpected answer {other:?}"))),
        }
    }
    Err(HostError::Admin("too many redirects".into()))
}
