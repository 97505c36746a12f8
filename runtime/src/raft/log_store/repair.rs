//! The way back from a damaged log (`<service> repair-log --data-dir DIR`, with the node
//! stopped): keep the longest prefix of the log that checks, move the damaged segment and every
//! later one aside (never deleted), and leave a [`RejoinMarker`] so that the node, when it starts
//! again, does not vote until its leader has brought it up to date.
//!
//! Why that is safe: the node may have lost entries and a vote it had acknowledged. Entries it
//! acknowledges after the repair are really on its disk, so counting them toward a commit is
//! sound; what is not sound is its vote: a node missing committed entries could elect a leader
//! without them, and a node that forgot its vote could vote twice in one term. A rejoining
//! node therefore starts no election and grants no vote (pre-vote or vote) until it has heard
//! from a leader whose term is at least the highest term its damaged files still show, and has
//! applied everything that leader had committed when it first heard from it. Then it removes
//! the marker and votes again. The one case this cannot see is a vote whose own record was
//! damaged in a term above every term the files still show.

use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::LogStoreError;
use super::segments::{self, Segments};

/// The file, in a node's data directory, that says the node is rejoining after a repair.
pub const REJOIN_MARKER: &str = "rejoin.json";

/// What a repair leaves for the node (as [`REJOIN_MARKER`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RejoinMarker {
    /// The node votes again only after hearing from a leader of at least this term.
    pub term: u64,
    /// Where the damaged files went.
    pub damaged: PathBuf,
}

impl RejoinMarker {
    /// The marker in `data_dir`, if there is one.
    pub fn read(data_dir: &Path) -> Result<Option<Self>, LogStoreError> {
        let path = data_dir.join(REJOIN_MARKER);
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(io_error(&path, source)),
        };
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| io_error(&path, io::Error::new(io::ErrorKind::InvalidData, e)))
    }

    /// Removes the marker in `data_dir` (durably): the node votes again.
    pub fn remove(data_dir: &Path) -> io::Result<()> {
        std::fs::remove_file(data_dir.join(REJOIN_MARKER))?;
        crate::util::sync_dir(data_dir)
    }
}

/// What a repair did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Repair {
    /// The segment file where the damage was found and the byte the kept prefix ends at.
    pub damaged_segment: PathBuf,
    /// Where the prefix that checks ends in it (0: none of it is kept).
    pub kept_bytes: u64,
    /// The folder the damaged segment and every later one were moved to.
    pub moved_to: PathBuf,
    /// How many segment files were moved.
    pub moved: usize,
    /// The last log index the kept log holds, if any.
    pub last_index: Option<u64>,
    /// What the node waits for before it votes again.
    pub marker: RejoinMarker,
}

fn io_error(path: &Path, source: io::Error) -> LogStoreError {
    LogStoreError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Repairs the log in `data_dir` (see the [module documentation](self)). `Ok(None)` if the log
/// opens as it is (nothing is changed); a log refused for another reason than damage (another
/// format, an I/O error) is refused here too, unchanged.
pub fn repair(data_dir: &Path) -> Result<Option<Repair>, LogStoreError> {
    // Never under a running node.
    let _lock =
        crate::raft::files::DataDirLock::acquire(data_dir).map_err(|e| io_error(data_dir, e))?;
    let dir = data_dir.join(crate::raft::files::LOG_DIR);
    let damaged = match Segments::open(&dir, super::SEGMENT_BYTES) {
        Ok(_) => return Ok(None),
        Err(LogStoreError::Corrupt { path, .. }) => PathBuf::from(path),
        Err(other) => return Err(other),
    };
    let files = segments::segment_files(&dir).map_err(|e| io_error(&dir, e))?;
    let Some(first_bad) = files.iter().position(|(_, path)| *path == damaged) else {
        return Err(io_error(
            &damaged,
            io::Error::other("the damaged segment is not in the log directory"),
        ));
    };
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let aside = data_dir.join(format!("{}.damaged-{stamp}", crate::raft::files::LOG_DIR));
    std::fs::create_dir(&aside).map_err(|e| io_error(&aside, e))?;

    let mut highest = 0;
    let mut kept = 0;
    for (i, (_, path)) in files.iter().enumerate().skip(first_bad) {
        let bytes = std::fs::read(path).map_err(|e| io_error(path, e))?;
        highest = highest.max(segments::highest_term(&bytes));
        let name = path.file_name().unwrap_or_default();
        let moved = aside.join(name);
        std::fs::rename(path, &moved).map_err(|e| io_error(path, e))?;
        if i == first_bad
            && let Some(end) = segments::verified_prefix(&bytes)
        {
            // The prefix that checks goes back under the segment's name, the rest zeros.
            let mut prefix = bytes[..end].to_vec();
            prefix.resize(bytes.len(), 0);
            let tmp = path.with_extension("seg.tmp");
            write_synced(&tmp, &prefix)?;
            std::fs::rename(&tmp, path).map_err(|e| io_error(path, e))?;
            kept = end as u64;
        }
    }
    crate::util::sync_dir(&aside).map_err(|e| io_error(&aside, e))?;
    crate::util::sync_dir(&dir).map_err(|e| io_error(&dir, e))?;

    // The kept log must open as it is now; its own terms count too.
    let log = Segments::open(&dir, super::SEGMENT_BYTES)?;
    for (_, path) in segments::segment_files(&dir).map_err(|e| io_error(&dir, e))? {
        let bytes = std::fs::read(&path).map_err(|e| io_error(&path, e))?;
        highest = highest.max(segments::highest_term(&bytes));
    }
    let last_index = log.log_state().last_log_id.map(|l| l.index);
    drop(log);

    let marker = RejoinMarker {
        term: highest,
        damaged: aside.clone(),
    };
    let marker_path = data_dir.join(REJOIN_MARKER);
    let json = serde_json::to_vec_pretty(&marker)
        .map_err(|e| io_error(&marker_path, io::Error::other(e)))?;
    let tmp = marker_path.with_extension("json.tmp");
    write_synced(&tmp, &json)?;
    std::fs::rename(&tmp, &marker_path).map_err(|e| io_error(&marker_path, e))?;
    crate::util::sync_dir(data_dir).map_err(|e| io_error(data_dir, e))?;
    tracing::warn!(
        "raft log repaired: {} kept up to byte {kept}; {} files moved to {}; the node votes \
         again once a leader of term {highest} or later has brought it up to date",
        damaged.display(),
        files.len() - first_bad,
        aside.display()
    );
    Ok(Some(Repair {
        damaged_segment: damaged,
        kept_bytes: kept,
        moved_to: aside,
        moved: files.len() - first_bad,
        last_index,
        marker,
    }))
}

/// Writes `bytes` to a new file at `path` (0600) and syncs it.
fn write_synced(path: &Path, bytes: &[u8]) -> Result<(), LogStoreError> {
    let mut file = crate::util::create_owner_only(path).map_err(|e| io_error(path, e))?;
    io::Write::write_all(&mut file, bytes).map_err(|e| io_error(path, e))?;
    file.sync_all().map_err(|e| io_error(path, e))
}
