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

/// The lock file in a node's data directory: a running node holds it, and so does `repair-log`,
/// so neither runs on a directory the other uses.
pub const LOCK_FILE: &str = "lock";

/// An exclusive lock on a node's data directory (`flock` on [`LOCK_FILE`]); released when
/// dropped, or when the process ends however it ends.
#[derive(Debug)]
pub struct DataDirLock {
    _file: std::fs::File,
}

impl DataDirLock {
    /// Takes the lock of `data_dir` (created, 0700, if missing), or fails at once if another
    /// process holds it.
    pub fn acquire(data_dir: &Path) -> std::io::Result<Self> {
        use std::os::fd::AsRawFd as _;
        use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(data_dir)?;
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(data_dir.join(LOCK_FILE))?;
        // SAFETY: flock on a descriptor this function owns; no memory is involved.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            let e = std::io::Error::last_os_error();
            return Err(if e.kind() == std::io::ErrorKind::WouldBlock {
                std::io::Error::new(
                    e.kind(),
                    format!(
                        "{}: another process (a running node?) uses this data directory",
                        data_dir.display()
                    ),
                )
            } else {
                e
            });
        }
        Ok(Self { _file: file })
    }
}
