//! The storage quota (`--quota-bytes`) and its alarm, as etcd's `NOSPACE`.
//!
//! Every [`MEASURE_EVERY`] the node adds up the disk space (allocated blocks) of its raft state:
//! the log's segment files, the state database with its WAL, and the snapshots
//! ([`crate::raft::files::raft_state_in`]). At or past the quota the alarm is on: every write
//! this node receives, or is forwarded as the leader, is refused with
//! [`NodeError::NoSpace`](super::NodeError::NoSpace) before it enters the log, while reads and
//! watches go on. On the alarm the node compacts by itself (a snapshot, after which the log
//! behind it is purged, whole segments deleted) whenever it has applied entries its last
//! snapshot does not hold. The alarm clears by itself at the next measurement under the quota,
//! whoever freed the space (compaction, or an operator). There is no disarm command to forget.
//!
//! A real full disk is not this alarm: a log write or an apply that fails with `ENOSPC` stops
//! the node (what reached the disk of a failed log batch was never acknowledged, and is cut as a
//! torn tail at the next start); restarted once there is space, it catches up from the leader.

use std::path::{Path, PathBuf};
use std::sync::Weak;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use openraft::async_runtime::WatchReceiver;

use super::{NodeError, RaftNode};

/// How often a node measures its storage.
pub const MEASURE_EVERY: Duration = Duration::from_secs(1);

/// The default quota: 8 GiB (etcd's suggested maximum for its own quota).
pub const DEFAULT_QUOTA_BYTES: u64 = 8 << 30;

/// A node's storage use, its quota and the alarm.
#[derive(Debug, Default)]
pub struct Quota {
    /// `None`: no quota (the use is still measured and reported).
    limit: Option<u64>,
    used: AtomicU64,
    alarm: AtomicBool,
}

impl Quota {
    /// A quota of `limit` bytes (`None`: none).
    pub fn new(limit: Option<u64>) -> Self {
        Quota {
            limit,
            ..Quota::default()
        }
    }

    /// The quota in bytes, if there is one.
    pub fn limit(&self) -> Option<u64> {
        self.limit
    }

    /// The bytes the raft state held on disk at the last measurement.
    pub fn used(&self) -> u64 {
        self.used.load(Ordering::Acquire)
    }

    /// Whether the alarm is on (writes are refused).
    pub fn alarm(&self) -> bool {
        self.alarm.load(Ordering::Acquire)
    }

    /// Refuses a write while the alarm is on.
    pub fn admit(&self) -> Result<(), NodeError> {
        match self.limit {
            Some(limit) if self.alarm() => Err(NodeError::NoSpace(format!(
                "the node's storage holds {} bytes, at or past its quota of {limit} \
                 (--quota-bytes); writes are taken again once compaction or an operator frees \
                 space",
                self.used()
            ))),
            _ => Ok(()),
        }
    }

    /// Records a measurement: `Some(on)` when the alarm changed to `on`.
    fn record(&self, used: u64) -> Option<bool> {
        self.used.store(used, Ordering::Release);
        let on = self.limit.is_some_and(|limit| used >= limit);
        (self.alarm.swap(on, Ordering::AcqRel) != on).then_some(on)
    }
}

/// The disk space (allocated blocks) of `paths`: files, and every file under directories.
/// A file that goes while it is counted (a purged segment) counts nothing.
pub fn disk_bytes(paths: &[PathBuf]) -> u64 {
    paths.iter().map(|p| path_bytes(p)).sum()
}

fn path_bytes(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt as _;
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return 0;
    };
    if !meta.is_dir() {
        return meta.blocks().saturating_mul(512);
    }
    std::fs::read_dir(path)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .map(|e| path_bytes(&e.path()))
        .sum()
}

/// While the node lives: measures its storage every [`MEASURE_EVERY`], turns the alarm on and
/// off, and on the alarm compacts when a snapshot would hold more than the last one.
pub(super) async fn watch(node: Weak<RaftNode>, data_dir: PathBuf) {
    loop {
        let dir = data_dir.clone();
        let measured = tokio::task::spawn_blocking(move || {
            disk_bytes(&crate::raft::files::raft_state_in(&dir))
        })
        .await;
        let Some(node) = node.upgrade() else {
            return;
        };
        if let Ok(used) = measured {
            match node.quota.record(used) {
                Some(true) => tracing::warn!(
                    used,
                    quota = node.quota.limit(),
                    "NOSPACE alarm: the raft state holds {used} bytes, at or past the quota; \
                     writes are refused until compaction or an operator frees space"
                ),
                Some(false) => tracing::warn!(
                    used,
                    "NOSPACE alarm cleared: the raft state holds {used} bytes; writes are taken again"
                ),
                None => {}
            }
            if node.quota.alarm() {
                node.compact().await;
            }
        }
        drop(node);
        tokio::time::sleep(MEASURE_EVERY).await;
    }
}

impl RaftNode {
    /// The node's storage quota and its alarm.
    pub fn quota(&self) -> &Quota {
        &self.quota
    }

    /// Builds a snapshot if this node has applied entries its last snapshot does not hold;
    /// openraft then purges the log behind it (keeping `--keep-logs` entries).
    async fn compact(&self) {
        let (applied, snapshot) = {
            let m = self.raft.metrics();
            let m = m.borrow_watched();
            (m.last_applied.map(|l| l.index), m.snapshot.map(|l| l.index))
        };
        // Tried again every measurement while the alarm lasts: a failure is said at debug
        // (raft stopping is reported where it happens; a failed build is counted and backed off
        // by the snapshot builder).
        if applied > snapshot
            && let Err(e) = self.raft.trigger().snapshot().await
        {
            tracing::debug!(error = %e, "NOSPACE: cannot start a snapshot to compact the log");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_alarm_follows_the_measurements_and_refuses_writes_while_on() {
        let quota = Quota::new(Some(1_000));
        assert_eq!(quota.record(999), None);
        assert!(quota.admit().is_ok());
        assert_eq!(quota.record(1_000), Some(true));
        assert_eq!(quota.record(5_000), None);
        let refused = quota.admit().expect_err("refused at the quota");
        assert!(matches!(refused, NodeError::NoSpace(m) if m.contains("5000 bytes")));
        assert_eq!(quota.record(10), Some(false));
        assert!(quota.admit().is_ok());
        let none = Quota::new(None);
        assert_eq!(none.record(u64::MAX), None);
        assert!(none.admit().is_ok() && !none.alarm());
        assert_eq!(none.used(), u64::MAX);
    }

    #[test]
    fn disk_bytes_counts_allocated_blocks_under_directories() {
        let dir = tempfile::tempdir().expect("temp dir");
        let sub = dir.path().join("raft-log");
        std::fs::create_dir(&sub).expect("mkdir");
        std::fs::write(sub.join("a"), vec![1u8; 64 << 10]).expect("write");
        std::fs::write(dir.path().join("b"), vec![1u8; 64 << 10]).expect("write");
        let counted = disk_bytes(&[sub, dir.path().join("b"), dir.path().join("gone")]);
        assert!(
            (128 << 10..=160 << 10).contains(&counted),
            "two 64 KiB files counted as {counted} bytes"
        );
    }
}
