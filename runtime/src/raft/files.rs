//! What a node keeps in its data directory, by name.

use std::path::{Path, PathBuf};

/// The state database's file name in a node's data directory.
pub const STATE_DB: &str = "state.db";

/// The raft log's directory (of segment files) in a node's data directory. Older builds kept
/// the log in a SQLite file of this name plus `.db`, which a node refuses to start beside.
pub const LOG_DIR: &str = "raft-log";

/// The snapshots' directory in a node's data directory.
pub const SNAPSHOT_DIR: &str = "snapshots";

/// Where a node keeps the backup it made last, in its data directory.
pub const BACKUP_DIR: &str = "backups";

/// The raft state in `data_dir`: its log (or an older build's log database), its state
/// database (with its WAL files), and every file in its snapshots' directory. Empty for a new
/// node.
pub fn raft_state_in(data_dir: &Path) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(data_dir)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .filter(|e| {
            let name = e.file_name();
            let name = name.to_string_lossy();
            name.starts_with(LOG_DIR) || name.starts_with(STATE_DB)
        })
        .map(|e| e.path())
        .collect();
    found.extend(
        std::fs::read_dir(data_dir.join(SNAPSHOT_DIR))
            .into_iter()
            .flatten()
            .filter_map(|e| e.ok())
            .map(|e| e.path()),
    );
    found.sort();
    found
}
