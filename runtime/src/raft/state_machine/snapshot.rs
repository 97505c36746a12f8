//! Snapshots on disk: their names, the newest complete one, durable writes, pruning, and the
//! builder (a consistent copy of the database taken on the writer's thread).

use super::*;

pub(super) fn snapshot_name(meta: &SnapshotMeta) -> String {
    match &meta.last_log_id {
        Some(id) => format!("snapshot-{:020}", id.index),
        None => "snapshot-empty".to_string(),
    }
}

/// The newest complete snapshot in `dir` (its `.json` is written last).
pub(super) fn latest_snapshot(
    dir: &Path,
) -> io::Result<Option<openraft::alias::SnapshotOf<C, SnapshotFile>>> {
    let mut names: Vec<String> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str().map(str::to_string))
        .filter(|n| n.starts_with("snapshot-") && n.ends_with(".json"))
        .collect();
    names.sort();
    let Some(name) = names.pop() else {
        return Ok(None);
    };
    let meta: SnapshotMeta =
        serde_json::from_slice(&std::fs::read(dir.join(&name))?).map_err(io_err)?;
    let path = dir.join(name.replace(".json", ".db"));
    Ok(Some(openraft::alias::SnapshotOf::<C, SnapshotFile> {
        meta,
        snapshot: SnapshotFile { path },
    }))
}

/// Makes a rename in `path`'s directory durable.
pub(super) fn sync_dir(path: &Path) -> io::Result<()> {
    match path.parent() {
        Some(dir) => crate::util::sync_dir(dir),
        None => Ok(()),
    }
}

/// Writes `bytes` to `path` so that it survives a crash whole or not at all: a temporary file,
/// fsync, rename, fsync of the directory.
pub(super) fn write_durably(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let tmp = PathBuf::from(format!("{}.tmp", path.display()));
    {
        let mut file = crate::util::create_owner_only(&tmp)?;
        io::Write::write_all(&mut file, bytes)?;
        file.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    sync_dir(path)
}

/// How long a partly received snapshot (`incoming-*`) may sit untouched before it counts as the
/// leftover of an interrupted transfer. A transfer in progress writes a chunk far more often.
pub const INCOMING_STALE: std::time::Duration = std::time::Duration::from_secs(600);

/// Removes the partly received snapshots (`incoming-*`) in `dir`.
pub(crate) fn remove_partial_transfers(dir: &Path) {
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if entry.file_name().to_string_lossy().starts_with("incoming-") {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// Removes every snapshot but `keep`, and leftovers of interrupted transfers (never a transfer
/// still arriving).
pub(super) fn prune_snapshots(dir: &Path, keep: &str) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.filter_map(|e| e.ok()) {
        let name = entry.file_name().to_string_lossy().into_owned();
        let stale_snapshot = name.starts_with("snapshot-") && !name.starts_with(keep);
        let abandoned = name.starts_with("incoming-")
            && entry
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age > INCOMING_STALE);
        if stale_snapshot || abandoned {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

impl RaftSnapshotBuilder<C> for StateMachine {
    type SnapshotData = SnapshotFile;

    async fn build_snapshot(
        &mut self,
    ) -> Result<openraft::alias::SnapshotOf<C, SnapshotFile>, io::Error> {
        let dir = self.shared.snapshot_dir.clone();
        self.blocking(move |shared, writer| {
            let applied: Option<LogId> = read_meta(writer, "last_applied")?;
            let membership: Option<StoredMembership> = read_meta(writer, "membership")?;
            let meta = SnapshotMeta {
                last_log_id: applied,
                last_membership: membership.unwrap_or_default(),
            };
            let name = snapshot_name(&meta);
            let tmp = dir.join(format!("{name}.tmp"));
            if tmp.exists() {
                std::fs::remove_file(&tmp)?;
            }
            // Make everything applied so far durable in the database itself (the log it came
            // from may be purged after this snapshot), then copy it consistently (the writer is
            // locked by us).
            let busy: i64 = writer
                .query_row("PRAGMA wal_checkpoint(FULL)", [], |r| r.get(0))
                .map_err(io_err)?;
            if busy != 0 {
                return Err(io::Error::other(
                    "the WAL checkpoint before a snapshot did not finish",
                ));
            }
            writer
                .execute("VACUUM INTO ?1", [tmp.to_string_lossy()])
                .map_err(io_err)?;
            crate::util::owner_only(&tmp)?;
            let file = std::fs::File::open(&tmp)?;
            file.sync_all()?;
            let bytes = file.metadata()?.len();
            drop(file);
            let db = dir.join(format!("{name}.db"));
            std::fs::rename(&tmp, &db)?;
            // The metadata makes the snapshot count: durable (after the file it names) before
            // any older snapshot goes.
            write_durably(
                &dir.join(format!("{name}.json")),
                &serde_json::to_vec(&meta).map_err(io_err)?,
            )?;
            prune_snapshots(&dir, &name);
            shared.metrics.snapshot(bytes, false);
            Ok(openraft::alias::SnapshotOf::<C, SnapshotFile> {
                meta,
                snapshot: SnapshotFile { path: db },
            })
        })
        .await
    }
}
