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

/// The first wait after a failed snapshot build; it doubles with each failure in a row.
const RETRY_FIRST: std::time::Duration = std::time::Duration::from_secs(1);
/// The longest wait between snapshot builds that fail.
const RETRY_MAX: std::time::Duration = std::time::Duration::from_secs(60);

/// How long to wait after the `failures`-th failure in a row: 1 s, doubling, at most a minute.
pub(super) fn retry_delay(failures: u32) -> std::time::Duration {
    RETRY_FIRST
        .saturating_mul(1 << failures.saturating_sub(1).min(16))
        .min(RETRY_MAX)
}

/// Failed snapshot builds (and installs): a build that fails is not fatal (openraft would stop
/// the node); the next one waits for a backoff (1 s, doubling, at most a minute) unless a
/// follower needs it. Each failure counts in `raft_snapshot_failures_total` and `admin status`;
/// the log says so once per kind of failure, and once more when one succeeds again.
#[derive(Debug, Default)]
pub(super) struct SnapshotFaults {
    /// Failures since the last success.
    in_a_row: u32,
    /// No build that openraft's policy asks for before this instant.
    retry_at: Option<std::time::Instant>,
    /// The kind of failure last logged.
    logged: Option<String>,
}

impl SnapshotFaults {
    /// Whether a build may start now.
    pub(super) fn may_build(&self) -> bool {
        self.retry_at
            .is_none_or(|at| std::time::Instant::now() >= at)
    }

    /// Records a failure of `what`; logs it if its kind is new.
    pub(super) fn failed(&mut self, what: &str, e: &io::Error) {
        self.in_a_row = self.in_a_row.saturating_add(1);
        let delay = retry_delay(self.in_a_row);
        self.retry_at = Some(std::time::Instant::now() + delay);
        let kind = format!("{what}: {:?}/{:?}", e.kind(), e.raw_os_error());
        if self.logged.as_deref() == Some(kind.as_str()) {
            tracing::debug!("{what} failed again ({} in a row): {e}", self.in_a_row);
        } else {
            tracing::warn!(
                "{what} failed: {e}; the node goes on, and tries again in {delay:?} (further \
                 failures of this kind are counted in raft_snapshot_failures_total, not logged)"
            );
            self.logged = Some(kind);
        }
    }

    /// Records a success of `what`.
    pub(super) fn succeeded(&mut self, what: &str) {
        if self.in_a_row > 0 {
            tracing::warn!("{what} succeeded after {} failures", self.in_a_row);
        }
        *self = SnapshotFaults::default();
    }
}

/// The snapshot faults, even if a thread panicked holding them.
pub(super) fn lock_faults(shared: &Shared) -> std::sync::MutexGuard<'_, SnapshotFaults> {
    shared
        .snapshot_faults
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Records a failed snapshot build or install (`what`): counted, backed off, logged once per
/// kind.
pub(super) fn snapshot_failed(shared: &Shared, what: &str, e: &io::Error) {
    lock_faults(shared).failed(what, e);
    shared.metrics.snapshot_failures.inc();
}

impl RaftSnapshotBuilder<C> for StateMachine {
    type SnapshotData = SnapshotFile;

    /// Builds a snapshot. If that fails (a full disk, no file descriptors, an I/O error), the
    /// node goes on: the failure is counted and backed off (see [`SnapshotFaults`]), and the
    /// answer is the snapshot the node already has, which openraft takes as no new snapshot
    /// (its index is not above the current one), so it keeps the log and asks again later.
    async fn build_snapshot(
        &mut self,
    ) -> Result<openraft::alias::SnapshotOf<C, SnapshotFile>, io::Error> {
        const WHAT: &str = "a snapshot build";
        let built = self.build_snapshot_once().await;
        let e = match built {
            Ok(snapshot) => {
                lock_faults(&self.shared).succeeded(WHAT);
                return Ok(snapshot);
            }
            Err(e) => e,
        };
        snapshot_failed(&self.shared, WHAT, &e);
        let dir = self.shared.snapshot_dir.clone();
        let have = tokio::task::spawn_blocking(move || latest_snapshot(&dir))
            .await
            .map_err(io_err)?;
        let have = have.unwrap_or_else(|e| {
            tracing::warn!("reading the current snapshot after a failed build: {e}");
            None
        });
        Ok(
            have.unwrap_or_else(|| openraft::alias::SnapshotOf::<C, SnapshotFile> {
                meta: SnapshotMeta::default(),
                snapshot: SnapshotFile {
                    path: self.shared.snapshot_dir.join("snapshot-none.db"),
                },
            }),
        )
    }
}

impl StateMachine {
    /// One try at a snapshot build.
    async fn build_snapshot_once(
        &self,
    ) -> Result<openraft::alias::SnapshotOf<C, SnapshotFile>, io::Error> {
        let dir = self.shared.snapshot_dir.clone();
        self.blocking(move |shared, writer| {
            if let Some(arg) = crate::failpoint::fired("snapshot::build") {
                return Err(io::Error::other(format!(
                    "failpoint snapshot::build{}",
                    arg.map(|a| format!(" ({a})")).unwrap_or_default()
                )));
            }
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
            // Make everything applied so far durable (the log it came from may be purged after
            // this snapshot): a checkpoint that waits for no reader (one holding the database,
            // e.g. a backup, would stall apply for the busy timeout), then an fsync of both the
            // database and its WAL, which hold every committed transaction between them.
            // Then copy it consistently (the writer is locked by us).
            writer
                .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))
                .map_err(io_err)?;
            for file in [
                shared.db_path.clone(),
                PathBuf::from(format!("{}-wal", shared.db_path.display())),
            ] {
                if file.exists() {
                    std::fs::File::open(&file)?.sync_all()?;
                }
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
