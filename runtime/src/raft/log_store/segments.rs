//! The raft log on disk: a directory of preallocated segment files of CRC-checked records, after
//! etcd's WAL. Owned by the log's writer thread; nothing here is shared or async. One file, over
//! 600 lines: the writer and the replay of one on-disk format, which must change together.
//!
//! # Files
//!
//! `NNNNNNNNNNNNNNNNNNNN.seg` (the segment's sequence number, zero-padded), each preallocated to
//! [`SEGMENT_BYTES`] (more if one batch needs it) so a write never grows the file and
//! `fdatasync` has no size to record. A segment starts with [`MAGIC`] and a header record that
//! carries the [`FORMAT_VERSION`] and the state at the time it was started (vote, committed and
//! last purged log ids), so older segments can be deleted without losing the state. A new
//! segment is written and synced as `*.seg.tmp` and renamed into place, so a crash never leaves
//! a half-made segment under a real name.
//!
//! # Records
//!
//! `len: u32 LE | crc32: u32 LE | kind: u8 | payload`, where `len` counts the kind and payload
//! and the CRC covers them. A zero `len` is the end of what was written (the preallocated rest
//! is zeros). Records are replayed in order: an entry at an index at or below the last one
//! replaces it and drops everything after it; `Truncate` and `Purge` drop entries; `Vote` and
//! `Committed` overwrite. The log is therefore append-only: truncation and purge are records,
//! and whole segments are deleted once a purge covers every entry in them (a prefix of the
//! segments only, so a later truncation record is never lost while the entries it cut remain).
//!
//! # Damage
//!
//! A record that does not check in the last segment is a torn write when nothing valid follows
//! it: the log is cut there (the cut is logged with its position) and the node starts. If a valid
//! record follows it, or it is in an older (sealed) segment, it is corruption: opening fails
//! with the file and byte offset. A flipped bit in the very last record cannot be told from a
//! torn write and is cut like one, as etcd does; that record was the last one written, and the
//! other replicas still hold it if it was committed.

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt as _, FileExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::LogStoreError;
use super::record::{FRAME, Kind, Parsed, frame, frame_len, parse};
use crate::raft::types::{self, C, Entry, FORMAT_VERSION, LogId, Vote};
use openraft::storage::LogState;

/// The first bytes of every segment file.
pub const MAGIC: &[u8; 8] = b"RAFTSEG1";

/// How many bytes a new segment file is given up front.
pub const SEGMENT_BYTES: u64 = 16 << 20;

/// The most bytes one `pread` of consecutive entries covers.
const READ_SPAN: u64 = 4 << 20;

/// The segment files' suffix.
const SUFFIX: &str = ".seg";

/// The state that outlives entries, written at the head of every segment.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Header {
    /// [`FORMAT_VERSION`] of the entries.
    format: u32,
    vote: Option<Vote>,
    committed: Option<LogId>,
    last_purged: Option<LogId>,
}

/// Where an entry is: its segment, the payload's offset and length, and its log id.
#[derive(Debug, Clone, Copy)]
struct Loc {
    seq: u64,
    offset: u64,
    len: u32,
    log_id: LogId,
}

/// One segment file.
#[derive(Debug)]
struct Segment {
    seq: u64,
    path: PathBuf,
    file: File,
    /// The largest entry index written in it.
    max_index: Option<u64>,
}

/// The log directory, opened and replayed; see the [module documentation](self).
#[derive(Debug)]
pub(super) struct Segments {
    dir: PathBuf,
    /// Oldest first; the last one is written to.
    segments: VecDeque<Segment>,
    /// Where the next write lands in the last segment.
    written: u64,
    /// The last segment's allocated size.
    size: u64,
    /// Staged records, not yet written.
    buf: Vec<u8>,
    /// The entries, contiguous from `first`.
    entries: VecDeque<Loc>,
    first: u64,
    vote: Option<Vote>,
    committed: Option<LogId>,
    /// Whether `committed` changed since it was last staged.
    committed_dirty: bool,
    last_purged: Option<LogId>,
    /// A purge staged in this batch: delete covered segments after the commit.
    purge_after_commit: Option<u64>,
}

/// An I/O error that names the file.
fn at(path: &Path, what: &str, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("{}: {what}: {e}", path.display()))
}

impl Segments {
    /// Opens the log in `dir` (created if missing), replays it and repairs a torn tail.
    pub(super) fn open(dir: &Path) -> Result<Self, LogStoreError> {
        let io_err = |source: io::Error| LogStoreError::Io {
            path: dir.display().to_string(),
            source,
        };
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(io_err)?;
        let mut seqs = Vec::new();
        for item in fs::read_dir(dir).map_err(io_err)? {
            let item = item.map_err(io_err)?;
            let name = item.file_name();
            let name = name.to_string_lossy();
            if name.ends_with(".seg.tmp") {
                // A segment whose creation did not finish: never used.
                fs::remove_file(item.path()).map_err(io_err)?;
            } else if let Some(seq) = name.strip_suffix(SUFFIX) {
                let seq = seq.parse::<u64>().map_err(|_| LogStoreError::Corrupt {
                    path: item.path().display().to_string(),
                    offset: 0,
                    why: "not a segment name this build writes".into(),
                })?;
                seqs.push(seq);
            }
        }
        seqs.sort_unstable();

        let mut log = Segments {
            dir: dir.to_path_buf(),
            segments: VecDeque::new(),
            written: 0,
            size: 0,
            buf: Vec::new(),
            entries: VecDeque::new(),
            first: 0,
            vote: None,
            committed: None,
            committed_dirty: false,
            last_purged: None,
            purge_after_commit: None,
        };
        let count = seqs.len();
        for (i, seq) in seqs.into_iter().enumerate() {
            log.replay(seq, i == 0, i + 1 == count)?;
        }
        if log.segments.is_empty() {
            log.roll(0).map_err(io_err)?;
        }
        Ok(log)
    }

    fn segment_path(&self, seq: u64) -> PathBuf {
        self.dir.join(format!("{seq:020}{SUFFIX}"))
    }

    /// Replays one segment. The first one's header sets the state; in the last one, a torn
    /// tail is cut off.
    fn replay(&mut self, seq: u64, first: bool, last: bool) -> Result<(), LogStoreError> {
        let path = self.segment_path(seq);
        let shown = path.display().to_string();
        let corrupt = |offset: usize, why: String| LogStoreError::Corrupt {
            path: shown.clone(),
            offset: offset as u64,
            why,
        };
        let io_err = |source: io::Error| LogStoreError::Io {
            path: shown.clone(),
            source,
        };
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(io_err)?;
        let mut bytes = Vec::new();
        io::Read::read_to_end(&mut file, &mut bytes).map_err(io_err)?;
        if bytes.len() < MAGIC.len() || &bytes[..MAGIC.len()] != MAGIC {
            return Err(corrupt(0, "not a raft log segment (no magic)".into()));
        }
        let mut segment = Segment {
            seq,
            path: path.clone(),
            file,
            max_index: None,
        };
        let mut pos = MAGIC.len();
        let mut records = 0usize;
        let end = loop {
            let record = match parse(&bytes, pos) {
                Parsed::End => break pos,
                Parsed::Record {
                    kind,
                    payload,
                    next,
                } => (kind, payload, next),
                Parsed::Bad(why) => {
                    let valid_after = match frame_len(&bytes, pos) {
                        Some(len) => {
                            matches!(parse(&bytes, pos + FRAME + len), Parsed::Record { .. })
                        }
                        None => false,
                    };
                    if !last || valid_after || records == 0 {
                        return Err(corrupt(pos, why));
                    }
                    let cut = bytes[pos..]
                        .iter()
                        .rposition(|b| *b != 0)
                        .map_or(0, |i| i + 1);
                    tracing::warn!(
                        "raft log: {shown}: a torn write at byte {pos} ({cut} bytes, {why}) is \
                         cut off; it was never acknowledged as durable"
                    );
                    let size = bytes.len() as u64;
                    segment.file.set_len(pos as u64).map_err(io_err)?;
                    allocate(&segment.file, size).map_err(io_err)?;
                    segment.file.sync_all().map_err(io_err)?;
                    break pos;
                }
            };
            let (kind, payload, next) = record;
            if records == 0 && kind != Kind::Header {
                return Err(corrupt(
                    pos,
                    "the first record is not a segment header".into(),
                ));
            }
            let decoded = self.apply(kind, payload, seq, pos, first && records == 0, &mut segment);
            decoded.map_err(|why| match why {
                Applied::Format(found) => LogStoreError::Format {
                    path: shown.clone(),
                    found,
                },
                Applied::Bad(why) => corrupt(pos, why),
            })?;
            records += 1;
            pos = next;
        };
        if records == 0 {
            return Err(corrupt(MAGIC.len(), "the segment has no header".into()));
        }
        if last {
            self.written = end as u64;
            self.size = bytes.len() as u64;
        }
        self.segments.push_back(segment);
        Ok(())
    }

    /// Applies one replayed record to the in-memory state.
    fn apply(
        &mut self,
        kind: Kind,
        payload: &[u8],
        seq: u64,
        pos: usize,
        first_header: bool,
        segment: &mut Segment,
    ) -> Result<(), Applied> {
        let bad = |e: postcard::Error| Applied::Bad(format!("cannot decode a {kind:?}: {e}"));
        match kind {
            Kind::Header => {
                let header: Header = types::decode(payload).map_err(bad)?;
                if header.format != FORMAT_VERSION {
                    return Err(Applied::Format(header.format.to_string()));
                }
                if first_header {
                    self.vote = header.vote;
                    self.committed = header.committed;
                    self.last_purged = header.last_purged;
                }
            }
            Kind::Entry => {
                // An entry's encoding starts with its log id (openraft's `Entry` serializes
                // `log_id` first): replay reads only that, not the whole command.
                let (log_id, _): (LogId, _) = postcard::take_from_bytes(payload).map_err(bad)?;
                let len = u32::try_from(payload.len())
                    .map_err(|_| Applied::Bad("an entry over 4 GiB".into()))?;
                let offset = (pos + FRAME + 1) as u64;
                self.place(Loc {
                    seq,
                    offset,
                    len,
                    log_id,
                })
                .map_err(Applied::Bad)?;
                segment.max_index = segment.max_index.max(Some(log_id.index));
            }
            Kind::Vote => self.vote = Some(types::decode(payload).map_err(bad)?),
            Kind::Committed => self.committed = types::decode(payload).map_err(bad)?,
            Kind::Truncate => {
                let after: Option<LogId> = types::decode(payload).map_err(bad)?;
                self.drop_after(after.map(|id| id.index));
            }
            Kind::Purge => {
                let upto: LogId = types::decode(payload).map_err(bad)?;
                self.drop_upto(upto);
            }
        }
        Ok(())
    }

    /// Records where an entry is: it replaces any entry at its index and drops all after it.
    fn place(&mut self, loc: Loc) -> Result<(), String> {
        let index = loc.log_id.index;
        if self.entries.is_empty() || index < self.first {
            self.entries.clear();
            self.first = index;
        } else {
            let next = self.first + self.entries.len() as u64;
            if index > next {
                return Err(format!(
                    "entry {index} leaves a gap after entry {}",
                    next - 1
                ));
            }
            self.entries.truncate((index - self.first) as usize);
        }
        self.entries.push_back(loc);
        Ok(())
    }

    fn drop_after(&mut self, after: Option<u64>) {
        match after {
            Some(after) if after >= self.first => {
                self.entries.truncate((after - self.first + 1) as usize);
            }
            _ => self.entries.clear(),
        }
    }

    fn drop_upto(&mut self, upto: LogId) {
        while self
            .entries
            .front()
            .is_some_and(|l| l.log_id.index <= upto.index)
        {
            self.entries.pop_front();
            self.first += 1;
        }
        if self.entries.is_empty() {
            self.first = upto.index + 1;
        }
        self.last_purged = Some(upto);
    }

    /// The log state: last purged and last log ids.
    pub(super) fn log_state(&self) -> LogState<C> {
        LogState {
            last_purged_log_id: self.last_purged,
            last_log_id: self.entries.back().map(|l| l.log_id).or(self.last_purged),
        }
    }

    pub(super) fn vote(&self) -> Option<Vote> {
        self.vote
    }

    pub(super) fn committed(&self) -> Option<LogId> {
        self.committed
    }

    /// Reads the entries with `lo <= index <= hi` that the log holds, in index order.
    pub(super) fn read(&self, lo: u64, hi: u64) -> io::Result<Vec<Entry>> {
        let start = lo.max(self.first);
        let end = hi.min((self.first + self.entries.len() as u64).saturating_sub(1));
        if self.entries.is_empty() || start > end {
            return Ok(Vec::new());
        }
        let locs: Vec<&Loc> = self
            .entries
            .range((start - self.first) as usize..=(end - self.first) as usize)
            .collect();
        let active = self.segments.back().map(|s| s.seq);
        let staged = |loc: &Loc| Some(loc.seq) == active && loc.offset >= self.written;
        let decode = |bytes: &[u8]| -> io::Result<Entry> {
            types::decode(bytes).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
        };
        let mut out = Vec::with_capacity(locs.len());
        let mut i = 0;
        while i < locs.len() {
            let first = locs[i];
            if staged(first) {
                // Staged in this batch, not written yet.
                let from = (first.offset - self.written) as usize;
                let bytes = self
                    .buf
                    .get(from..from + first.len as usize)
                    .ok_or_else(|| io::Error::other("raft log: a staged entry is missing"))?;
                out.push(decode(bytes)?);
                i += 1;
                continue;
            }
            // Entries that follow each other in one file are read with one `pread` of at most
            // READ_SPAN bytes (or of one larger entry).
            let mut next = i + 1;
            while let Some(loc) = locs.get(next)
                && loc.seq == first.seq
                && !staged(loc)
                && loc.offset > locs[next - 1].offset
                && loc.offset + u64::from(loc.len) - first.offset <= READ_SPAN
            {
                next += 1;
            }
            let last = locs[next - 1];
            let mut span = vec![0; (last.offset + u64::from(last.len) - first.offset) as usize];
            let segment = self.segment(first.seq)?;
            segment
                .file
                .read_exact_at(&mut span, first.offset)
                .map_err(|e| at(&segment.path, "read", e))?;
            for loc in &locs[i..next] {
                let from = (loc.offset - first.offset) as usize;
                out.push(decode(&span[from..from + loc.len as usize])?);
            }
            i = next;
        }
        Ok(out)
    }

    fn segment(&self, seq: u64) -> io::Result<&Segment> {
        let i = self
            .segments
            .binary_search_by_key(&seq, |s| s.seq)
            .map_err(|_| io::Error::other(format!("raft log: segment {seq} is gone")))?;
        Ok(&self.segments[i])
    }

    /// Stages an entry, already encoded.
    pub(super) fn stage_entry(&mut self, log_id: LogId, bytes: &[u8]) -> io::Result<()> {
        let (seq, offset) = self.stage(Kind::Entry, bytes)?;
        let len = u32::try_from(bytes.len())
            .map_err(|_| io::Error::other("a raft log entry over 4 GiB"))?;
        self.place(Loc {
            seq,
            offset,
            len,
            log_id,
        })
        .map_err(io::Error::other)?;
        if let Some(segment) = self.segments.back_mut() {
            segment.max_index = segment.max_index.max(Some(log_id.index));
        }
        Ok(())
    }

    pub(super) fn stage_vote(&mut self, vote: &Vote) -> io::Result<()> {
        self.stage_value(Kind::Vote, vote)?;
        self.vote = Some(*vote);
        Ok(())
    }

    pub(super) fn stage_truncate(&mut self, after: Option<LogId>) -> io::Result<()> {
        self.stage_value(Kind::Truncate, &after)?;
        self.drop_after(after.map(|id| id.index));
        Ok(())
    }

    pub(super) fn stage_purge(&mut self, upto: LogId) -> io::Result<()> {
        self.stage_value(Kind::Purge, &upto)?;
        self.drop_upto(upto);
        self.purge_after_commit = Some(upto.index);
        Ok(())
    }

    /// Remembers the committed log id; it is written with the next commit that writes anything
    /// else (it only lets a restart re-apply sooner, so it costs no sync of its own).
    pub(super) fn hold_committed(&mut self, committed: Option<LogId>) {
        self.committed = committed;
        self.committed_dirty = true;
    }

    fn stage_value<T: Serialize>(&mut self, kind: Kind, value: &T) -> io::Result<()> {
        let bytes = types::encode(value).map_err(io::Error::other)?;
        self.stage(kind, &bytes).map(drop)
    }

    /// Frames a record into the batch buffer; returns the segment and offset its payload will
    /// have. Starts a new segment first when the record does not fit in this one.
    fn stage(&mut self, kind: Kind, payload: &[u8]) -> io::Result<(u64, u64)> {
        let need = (FRAME + 1 + payload.len()) as u64;
        if self.written + self.buf.len() as u64 + need > self.size {
            self.write_and_sync()?;
            self.roll(need)?;
        }
        let start = self.written + self.buf.len() as u64;
        frame(&mut self.buf, kind, payload)?;
        let seq = self.segments.back().map_or(0, |s| s.seq);
        Ok((seq, start + FRAME as u64 + 1))
    }

    /// Writes the staged records (and a held committed id) with one write and one
    /// `fdatasync`, then deletes the segments a purge of this batch covered.
    pub(super) fn commit(&mut self) -> io::Result<()> {
        if self.committed_dirty {
            let committed = self.committed;
            self.stage_value(Kind::Committed, &committed)?;
            self.committed_dirty = false;
        }
        self.write_and_sync()?;
        if let Some(upto) = self.purge_after_commit.take() {
            self.delete_purged(upto)?;
        }
        Ok(())
    }

    fn write_and_sync(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let segment = self
            .segments
            .back()
            .ok_or_else(|| io::Error::other("raft log: no segment to write to"))?;
        if crate::failpoint::fired("raft_log::torn").is_some() {
            let half = &self.buf[..self.buf.len() / 2];
            segment.file.write_all_at(half, self.written)?;
            segment.file.sync_data()?;
            return Err(io::Error::other(
                "failpoint raft_log::torn: the write stopped halfway",
            ));
        }
        segment
            .file
            .write_all_at(&self.buf, self.written)
            .map_err(|e| at(&segment.path, "write", e))?;
        if crate::failpoint::fired("raft_log::commit").is_some() {
            return Err(io::Error::other(
                "failpoint raft_log::commit: fdatasync failed",
            ));
        }
        segment
            .file
            .sync_data()
            .map_err(|e| at(&segment.path, "fdatasync", e))?;
        self.written += self.buf.len() as u64;
        self.buf.clear();
        Ok(())
    }

    /// Starts the next segment, big enough for `need` more bytes after its header.
    fn roll(&mut self, need: u64) -> io::Result<()> {
        let seq = self.segments.back().map_or(1, |s| s.seq + 1);
        let path = self.segment_path(seq);
        let tmp = path.with_extension("seg.tmp");
        let header = types::encode(&Header {
            format: FORMAT_VERSION,
            vote: self.vote,
            committed: self.committed,
            last_purged: self.last_purged,
        })
        .map_err(io::Error::other)?;
        let mut head = MAGIC.to_vec();
        frame(&mut head, Kind::Header, &header)?;
        let size = SEGMENT_BYTES.max(head.len() as u64 + need);

        let _ = fs::remove_file(&tmp);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(|e| at(&tmp, "create", e))?;
        allocate(&file, size).map_err(|e| at(&tmp, "allocate", e))?;
        file.write_all_at(&head, 0)
            .map_err(|e| at(&tmp, "write", e))?;
        file.sync_all().map_err(|e| at(&tmp, "fsync", e))?;
        fs::rename(&tmp, &path).map_err(|e| at(&path, "rename", e))?;
        sync_dir(&self.dir)?;
        self.segments.push_back(Segment {
            seq,
            path,
            file,
            max_index: None,
        });
        self.written = head.len() as u64;
        self.size = size;
        self.committed_dirty = false;
        Ok(())
    }

    /// Deletes the oldest segments while every entry in them is purged (never the last one).
    fn delete_purged(&mut self, upto: u64) -> io::Result<()> {
        let mut deleted = false;
        while self.segments.len() > 1
            && self
                .segments
                .front()
                .is_some_and(|s| s.max_index.is_none_or(|max| max <= upto))
        {
            if let Some(segment) = self.segments.pop_front() {
                fs::remove_file(&segment.path).map_err(|e| at(&segment.path, "remove", e))?;
                deleted = true;
            }
        }
        if deleted {
            sync_dir(&self.dir)?;
        }
        Ok(())
    }

    /// How many segment files the log has.
    pub(super) fn segment_count(&self) -> usize {
        self.segments.len()
    }
}

/// Why a replayed record was refused.
enum Applied {
    Format(String),
    Bad(String),
}

/// Gives `file` `size` bytes of real blocks (zeros), so writes inside never grow it.
fn allocate(file: &File, size: u64) -> io::Result<()> {
    use std::os::fd::AsRawFd as _;
    let len = libc::off_t::try_from(size).map_err(io::Error::other)?;
    // SAFETY: the descriptor is open for writing for the duration of the call.
    match unsafe { libc::posix_fallocate(file.as_raw_fd(), 0, len) } {
        0 => Ok(()),
        libc::EOPNOTSUPP | libc::EINVAL => file.set_len(size),
        errno => Err(io::Error::from_raw_os_error(errno)),
    }
}

/// Makes the directory's entries (created, renamed, removed files) durable.
fn sync_dir(dir: &Path) -> io::Result<()> {
    crate::util::sync_dir(dir).map_err(|e| at(dir, "fsync", e))
}
