//! Admin requests (status, membership, snapshots, backups, leadership transfer, failpoints)
//! and the node's health.

use std::collections::BTreeSet;
use std::path::PathBuf;

use openraft::async_runtime::WatchReceiver;
use serde_json::json;

use super::RaftNode;
use crate::raft::files::BACKUP_DIR;
use crate::raft::network::{AdminRequest, Answer, SNAPSHOT_CHUNK, rand_id};
use crate::raft::status::NodeStatus;
use crate::raft::types::NodeId;

impl RaftNode {
    /// This node's status: role, term, leader, indexes, members and (on a leader) their lag.
    pub fn status(&self) -> NodeStatus {
        NodeStatus {
            snapshot_failures: self.sm.metrics().snapshot_failures.get(),
            rejoining: self.rejoining(),
            storage_bytes: self.quota.used(),
            quota_bytes: self.quota.limit(),
            nospace: self.quota.alarm(),
            watchers: self.sm.watchers().count() as u64,
            watchers_refused: self.sm.watchers().refused(),
            unauthenticated_closed: crate::net::conn::unauthenticated_closed(),
            ..NodeStatus::from_metrics(
                &self.raft.metrics().borrow_watched(),
                self.quorum_lost(),
                self.schema.version.clone(),
                crate::net::conn::nofile_limit(),
            )
        }
    }

    fn backup_dir(&self) -> PathBuf {
        self.snapshot_dir
            .parent()
            .map_or_else(|| PathBuf::from(BACKUP_DIR), |d| d.join(BACKUP_DIR))
    }

    /// Why a user cannot get the roles `command` gives it, if one is no role of this service
    /// (`admin`, or a role some operation's `allow` names); `None` for an opaque service.
    fn unknown_roles(&self, command: &crate::raft::auth::AuthCommand) -> Option<String> {
        let crate::raft::auth::AuthCommand::UserAdd { roles, .. } = command else {
            return None;
        };
        if self.operations.is_empty() {
            return None;
        }
        let mut known: Vec<&str> = self
            .operations
            .iter()
            .flat_map(|o| o.allow.iter().copied())
            .filter(|r| *r != crate::raft::auth::ANY_ROLE)
            .chain([crate::raft::auth::ADMIN_ROLE])
            .collect();
        known.sort_unstable();
        known.dedup();
        let unknown: Vec<&str> = roles
            .iter()
            .map(String::as_str)
            .filter(|r| !known.contains(r))
            .collect();
        (!unknown.is_empty()).then(|| {
            format!(
                "unknown role {}: this service's roles are {}",
                unknown.join(", "),
                known.join(", ")
            )
        })
    }

    /// Makes a backup (see [`AdminRequest::Backup`]) and reports it.
    async fn backup(&self) -> std::io::Result<serde_json::Value> {
        let dir = self.backup_dir();
        tokio::fs::create_dir_all(&dir).await?;
        // One backup at a time on disk: the previous one goes.
        let mut entries = tokio::fs::read_dir(&dir).await?;
        while let Some(entry) = entries.next_entry().await? {
            tokio::fs::remove_file(entry.path()).await?;
        }
        let name = format!("backup-{:016x}.db", rand_id());
        let path = dir.join(&name);
        let (applied, digest) = self.sm.backup(path.clone()).await?;
        let (len, sha256) = crate::util::file_sha256(&path).await?;
        Ok(json!({
            "name": name,
            "len": len,
            "sha256": crate::util::hex(&sha256),
            "applied_index": applied,
            "digest": digest,
        }))
    }

    /// Up to one chunk of the backup `name` from `offset`.
    pub(super) async fn read_backup(&self, name: &str, offset: u64) -> std::io::Result<Vec<u8>> {
        use tokio::io::{AsyncReadExt, AsyncSeekExt};
        let valid = name.starts_with("backup-")
            && name.ends_with(".db")
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.');
        if !valid {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("`{name}` is not a backup's name"),
            ));
        }
        let mut file = tokio::fs::File::open(self.backup_dir().join(name)).await?;
        file.seek(std::io::SeekFrom::Start(offset)).await?;
        let mut buf = Vec::with_capacity(SNAPSHOT_CHUNK);
        file.take(SNAPSHOT_CHUNK as u64)
            .read_to_end(&mut buf)
            .await?;
        Ok(buf)
    }

    /// Whether the node can serve: it knows a leader, and has applied every entry it knows is
    /// committed; else why not.
    pub fn readiness(&self) -> Result<(), String> {
        let m = self.raft.metrics().borrow_watched().clone();
        if m.current_leader.is_none() {
            return Err("no leader known".into());
        }
        let committed = m.local_committed.map_or(0, |l| l.index);
        let applied = m.last_applied.map_or(0, |l| l.index);
        if applied < committed {
            return Err(format!(
                "applied {applied} of {committed} committed entries"
            ));
        }
        Ok(())
    }

    /// Runs an admin request here (membership changes must run on the leader).
    pub async fn admin(&self, request: AdminRequest) -> Answer {
        let needs_leader = !matches!(
            request,
            AdminRequest::Status
                | AdminRequest::Snapshot
                | AdminRequest::Digest
                | AdminRequest::Backup
                | AdminRequest::Failpoint { .. }
                // A node that is not the leader forwards the command, as any write.
                | AdminRequest::Auth(_)
                | AdminRequest::Users
        );
        if needs_leader && !self.is_leader() {
            return Answer::NotLeader(self.leader());
        }
        let result: Result<serde_json::Value, String> = match request {
            AdminRequest::Status => serde_json::to_value(self.status()).map_err(|e| e.to_string()),
            AdminRequest::Backup => self.backup().await.map_err(|e| e.to_string()),
            AdminRequest::Failpoint { name, actions } => {
                crate::failpoint::configure(&name, &actions)
                    .map(|()| json!({"failpoint": name, "actions": actions}))
            }
            AdminRequest::Digest => self
                .sm
                .digest()
                .await
                .map(|(digest, applied)| json!({"digest": digest, "last_applied_index": applied}))
                .map_err(|e| e.to_string()),
            AdminRequest::Snapshot => match self.raft.trigger().snapshot().await {
                Ok(()) => Ok(json!({"snapshot": "triggered"})),
                Err(e) => Err(e.to_string()),
            },
            AdminRequest::AddLearner { id, addr } => self
                .raft
                .add_learner(id, addr, true)
                .await
                .map(|r| json!({"log_index": r.log_id.index}))
                .map_err(|e| e.to_string()),
            AdminRequest::Promote { ids } => {
                let add: BTreeSet<NodeId> = ids.into_iter().collect();
                self.raft
                    .change_membership(openraft::ChangeMembers::AddVoterIds(add), false)
                    .await
                    .map(|r| json!({"log_index": r.log_id.index}))
                    .map_err(|e| e.to_string())
            }
            AdminRequest::Remove { id } => {
                let ids = BTreeSet::from([id]);
                let demoted = self
                    .raft
                    .change_membership(openraft::ChangeMembers::RemoveVoters(ids.clone()), false)
                    .await;
                match demoted {
                    Err(e) => Err(e.to_string()),
                    Ok(_) => self
                        .raft
                        .change_membership(openraft::ChangeMembers::RemoveNodes(ids), false)
                        .await
                        .map(|r| json!({"removed": id, "log_index": r.log_id.index}))
                        .map_err(|e| e.to_string()),
                }
            }
            AdminRequest::Join { id, addr } => {
                let voters: BTreeSet<NodeId> = self
                    .raft
                    .metrics()
                    .borrow_watched()
                    .membership_config
                    .membership()
                    .voter_ids()
                    .collect();
                if voters.contains(&id) {
                    Ok(json!({"joined": id, "already": true}))
                } else {
                    match self.raft.add_learner(id, addr, true).await {
                        Err(e) => Err(e.to_string()),
                        Ok(_) => self
                            .raft
                            .change_membership(
                                openraft::ChangeMembers::AddVoterIds(BTreeSet::from([id])),
                                false,
                            )
                            .await
                            .map(|r| json!({"joined": id, "log_index": r.log_id.index}))
                            .map_err(|e| e.to_string()),
                    }
                }
            }
            AdminRequest::Auth(command) => match self.unknown_roles(&command) {
                Some(refusal) => Err(refusal),
                None => match self.write(command.encode(), None).await {
                    Ok(applied) if applied.ok => Ok(json!({"applied": true})),
                    Ok(applied) => Err(serde_json::from_slice::<serde_json::Value>(&applied.reply)
                        .ok()
                        .and_then(|v| v["error"].as_str().map(str::to_string))
                        .unwrap_or_else(|| "refused".to_string())),
                    Err(e) => Err(e.to_string()),
                },
            },
            AdminRequest::Users => {
                serde_json::to_value(self.identities.users()).map_err(|e| e.to_string())
            }
            AdminRequest::TransferLeader { to } => self
                .raft
                .trigger()
                .transfer_leader(to)
                .await
                .map(|()| json!({"transfer_to": to}))
                .map_err(|e| e.to_string()),
        };
        match result {
            Ok(v) => Answer::Admin(v.to_string()),
            Err(e) => Answer::Failed(e),
        }
    }
}
