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
//! # Records and batches
//!
//! `len: u32 LE | crc32: u32 LE | kind: u8 | payload`, where `len` counts the kind and payload
//! and the CRC covers them. After the header, records are written in batches (one write and one
//! `fdatasync` each): a batch record (the batch's length and its number in the segment, 1, 2,
//! ...), the records, then an 8-byte trailer. A zero `len` where a batch would start is the end
//! of what was written, and everything after it is zeros (the preallocated rest, or a torn batch
//! zeroed at start), so no stale record can come back. Records are replayed in order: an entry
//! at an index at or below the last one replaces it and drops everything after it; `Truncate`
//! and `Purge` drop entries; `Vote` and `Committed` overwrite. A batch is replayed only once all
//! of it checks. The log is therefore append-only: truncation and purge are records, and whole
//! segments are deleted once a purge covers every entry in them (a prefix of the segments only,
//! so a later truncation record is never lost while the entries it cut remain).
//!
//! # Damage and torn writes
//!
//! A batch that does not check is cut (zeroed, with a warning) only when it is the last batch
//! of the last segment and part of it never reached the disk: no batch that checks follows it,
//! and its trailer is zeros, or the file ends inside it, or a sector of it is zeros (see
//! `torn_tail`). Such a batch was never synced, so none of it was acknowledged. Anything else
//! that does not check (a bit flipped in any batch that is all there, a header, a sealed
//! segment, a byte after the end that a later batch follows) is damage: opening fails with
//! [`LogStoreError::Corrupt`] naming the file, the byte offset and what was found, and changes
//! nothing on disk. A vote or an acknowledged entry is therefore never cut.

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt as _, FileExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::LogStoreError;
use super::record::{
    self, BATCH_OVERHEAD, BATCH_RECORD, FRAME, Kind, Parsed, TRAILER, batch_record, frame,
    frame_len, parse,
};
use crate::raft::types::{self, C, Entry, FORMAT_VERSION, LogId, Vote};
use openraft::storage::LogState;

/// The first bytes of every segment file.
pub const MAGIC: &[u8; 8] = b"RAFTSEG2";

/// The first bytes of the segments of older builds, whose records were not framed in batches.
const OLD_MAGIC: &[u8; 8] = b"RAFTSEG1";

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
    /// The size new segment files are given.
    segment_bytes: u64,
    /// Oldest first; the last one is written to.
    segments: VecDeque<Segment>,
    /// Where the next write lands in the last segment.
    written: u64,
    /// The last segment's allocated size.
    size: u64,
    /// Staged records, not yet written: a batch record to fill in, then the records.
    buf: Vec<u8>,
    /// The number of the last batch written to the last segment (0 before the first).
    batch_seq: u64,
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
    pub(super) fn open(dir: &Path, segment_bytes: u64) -> Result<Self, LogStoreError> {
        let io_err = |source: io::Error| LogStoreError::Io {
            path: dir.display().to_string(),
            source,
        };
        create_dir_durably(dir).map_err(io_err)?;
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
            segment_bytes,
            segments: VecDeque::new(),
            written: 0,
            size: 0,
            buf: Vec::new(),
            batch_seq: 0,
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
    /// tail is cut off (see [`torn_tail`]); anything else that does not check refuses the log.
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
        if bytes.starts_with(OLD_MAGIC) {
            return Err(LogStoreError::Format {
                path: shown.clone(),
                found: "1 (segments without batch framing)".into(),
            });
        }
        if !bytes.starts_with(MAGIC) {
            return Err(corrupt(0, "not a raft log segment (no magic)".into()));
        }
        let mut segment = Segment {
            seq,
            path: path.clone(),
            file,
            max_index: None,
        };
        let decoded = |pos: usize, result: Result<(), Applied>| {
            result.map_err(|why| match why {
                Applied::Format(found) => LogStoreError::Format {
                    path: shown.clone(),
                    found,
                },
                Applied::Bad(why) => corrupt(pos, why),
            })
        };
        // The header was written and synced before the segment got its name: never cut.
        let mut pos = MAGIC.len();
        match parse(&bytes, pos) {
            Parsed::Record {
                kind: Kind::Header,
                payload,
                next,
            } => {
                decoded(
                    pos,
                    self.apply(Kind::Header, payload, seq, pos, first, &mut segment),
                )?;
                pos = next;
            }
            Parsed::Record { .. } => {
                return Err(corrupt(
                    pos,
                    "the first record is not a segment header".into(),
                ));
            }
            Parsed::End => return Err(corrupt(pos, "the segment has no header".into())),
            Parsed::Bad(why) => {
                return Err(corrupt(pos, format!("the segment header: {why}")));
            }
        }
        let mut batch_seq = 0;
        let end = loop {
            match read_batch(&bytes, pos, batch_seq) {
                Ok(None) => break pos,
                Ok(Some(batch)) => {
                    for (kind, at, payload) in batch.records {
                        decoded(at, self.apply(kind, payload, seq, at, false, &mut segment))?;
                    }
                    batch_seq += 1;
                    pos = batch.end;
                }
                Err((at, why)) => {
                    if !last {
                        return Err(corrupt(
                            at,
                            format!(
                                "{why} (in a sealed segment, where every batch was written \
                                 whole)"
                            ),
                        ));
                    }
                    torn_tail(&bytes, pos, at, batch_seq)
                        .map_err(|damage| corrupt(at, format!("{why}; {damage}")))?;
                    let cut = bytes.iter().rposition(|b| *b != 0).map_or(pos, |i| i + 1);
                    tracing::warn!(
                        "raft log: {shown}: batch {} at byte {pos} never reached the disk whole \
                         ({why} at byte {at}); its {} bytes are zeroed: it was never \
                         acknowledged as durable",
                        batch_seq + 1,
                        cut - pos
                    );
                    segment
                        .file
                        .write_all_at(&vec![0; cut - pos], pos as u64)
                        .map_err(io_err)?;
                    segment.file.sync_data().map_err(io_err)?;
                    break pos;
                }
            }
        };
        if last {
            self.written = end as u64;
            self.size = bytes.len() as u64;
            self.batch_seq = batch_seq;
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
            // Read by `read_batch`, never handed here.
            Kind::Batch => return Err(Applied::Bad("a batch record out of place".into())),
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

    /// Reads the entries with `lo <= index <= hi` that the log holds, in index order; with
    /// `from_lo`, none unless the log holds `lo` itself.
    pub(super) fn read(&self, lo: u64, hi: u64, from_lo: bool) -> io::Result<Vec<Entry>> {
        if from_lo && lo < self.first {
            return Ok(Vec::new());
        }
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
        let opening = if self.buf.is_empty() {
            BATCH_OVERHEAD
        } else {
            TRAILER.len()
        } as u64;
        if self.written + self.buf.len() as u64 + opening + need > self.size {
            self.write_and_sync()?;
            self.roll(BATCH_OVERHEAD as u64 + need)?;
        }
        if self.buf.is_empty() {
            // The batch record, filled in when the batch is written.
            self.buf.resize(BATCH_RECORD, 0);
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

    /// Writes the staged batch, framed (its batch record filled in, its trailer added), with one
    /// write and one `fdatasync`.
    fn write_and_sync(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        self.buf.extend_from_slice(TRAILER);
        let len = u32::try_from(self.buf.len())
            .map_err(|_| io::Error::other("a raft log batch over 4 GiB"))?;
        let mut head = Vec::with_capacity(BATCH_RECORD);
        batch_record(&mut head, len, self.batch_seq + 1)?;
        self.buf[..BATCH_RECORD].copy_from_slice(&head);
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
        self.batch_seq += 1;
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
        let size = self.segment_bytes.max(head.len() as u64 + need);

        let _ = fs::remove_file(&tmp);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(|e| at(&tmp, "create", e))?;
        if let Err(e) = allocate(&file, size) {
            // What a failed allocation took (a full disk) is given back at once.
            let _ = fs::remove_file(&tmp);
            return Err(at(&tmp, "allocate", e));
        }
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
        self.batch_seq = 0;
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

/// Creates `dir` and any missing parent (0700), and syncs the parent of each one it created, so
/// a crash cannot lose a folder the log's files were already synced into.
fn create_dir_durably(dir: &Path) -> io::Result<()> {
    let missing: Vec<&Path> = dir.ancestors().take_while(|d| !d.exists()).collect();
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    for made in missing.iter().rev() {
        if let Some(parent) = made.parent().filter(|p| !p.as_os_str().is_empty()) {
            sync_dir(parent)?;
        }
    }
    Ok(())
}

/// Makes the directory's entries (created, renamed, removed files) durable.
fn sync_dir(dir: &Path) -> io::Result<()> {
    crate::util::sync_dir(dir).map_err(|e| at(dir, "fsync", e))
}

/// One batch that checks: where it ends and its records (kind, offset, payload).
struct Batch<'a> {
    end: usize,
    records: Vec<(Kind, usize, &'a [u8])>,
}

/// Reads the batch at `pos`, numbered `prev_seq + 1`: `Ok(None)` at the end of the log (zeros
/// to the end of the file), or where and why it does not check.
fn read_batch(
    bytes: &[u8],
    pos: usize,
    prev_seq: u64,
) -> Result<Option<Batch<'_>>, (usize, String)> {
    if frame_len(bytes, pos).is_none_or(|len| len == 0) {
        return match bytes[pos..].iter().position(|b| *b != 0) {
            None => Ok(None),
            Some(i) => Err((
                pos + i,
                "a byte that is not zero after the end of the log".into(),
            )),
        };
    }
    let Some((len, seq)) = record::batch_at(bytes, pos) else {
        let why = match parse(bytes, pos) {
            Parsed::Bad(why) => why,
            Parsed::Record { kind, .. } => format!("a {kind:?} record where a batch should start"),
            Parsed::End => "the end of the file inside a record".into(),
        };
        return Err((pos, why));
    };
    if seq != prev_seq + 1 {
        return Err((
            pos,
            format!("batch {seq} where batch {} belongs", prev_seq + 1),
        ));
    }
    let end = pos + len;
    if len < BATCH_OVERHEAD || end > bytes.len() {
        return Err((
            pos,
            format!("a batch of {len} bytes runs past the end of the file"),
        ));
    }
    let body_end = end - TRAILER.len();
    if &bytes[body_end..end] != TRAILER {
        return Err((body_end, "the batch's trailer is not there".into()));
    }
    let body = &bytes[..body_end];
    let mut records = Vec::new();
    let mut at = pos + BATCH_RECORD;
    while at < body_end {
        match parse(body, at) {
            Parsed::Record {
                kind: kind @ (Kind::Header | Kind::Batch),
                ..
            } => return Err((at, format!("a {kind:?} record inside a batch"))),
            Parsed::Record {
                kind,
                payload,
                next,
            } => {
                records.push((kind, at, payload));
                at = next;
            }
            Parsed::End => return Err((at, "a batch ends before its trailer".into())),
            Parsed::Bad(why) => return Err((at, why)),
        }
    }
    Ok(Some(Batch { end, records }))
}

/// Whether the batch at `start` of the last segment, which failed at `bad`, is a torn write that
/// may be cut: `Ok` if so, why it is damage if not.
///
/// Batches are written one after another, each synced before the next is written, so a batch
/// that checks after this one proves this one had been written whole: damage. Otherwise this is
/// the last batch, and it is torn if some of it never reached the disk: its trailer has zeros
/// (the write stopped before its end), the file ends inside it, its first bytes are zeros, or a
/// run of zeros meets a sector boundary in the record that failed (pages written out of order).
/// A batch that is all there and still does not check was damaged after it was written, and it
/// may have been acknowledged: damage. One case cannot be told apart, and is taken for a torn
/// write: a bit flipped in a record of the last batch whose own bytes hold 16 zeros at a sector
/// boundary.
fn torn_tail(bytes: &[u8], start: usize, bad: usize, prev_seq: u64) -> Result<(), String> {
    let later = |from: usize| {
        (from..bytes.len())
            .find(|&p| record::batch_at(bytes, p).is_some_and(|(_, seq)| seq > prev_seq))
    };
    match record::batch_at(bytes, start) {
        Some((len, seq)) if seq == prev_seq + 1 && len >= BATCH_OVERHEAD => {
            let end = start + len;
            if let Some(p) = later(end.min(bytes.len())) {
                return Err(format!(
                    "a later batch at byte {p} checks, so this one had been written whole"
                ));
            }
            let Some(trailer) = bytes.get(end - TRAILER.len()..end) else {
                return Ok(()); // the file ends inside the batch
            };
            // No byte of the trailer is zero, nor one bit away from zero: a zero there is a
            // write that stopped before the batch's end.
            if trailer.contains(&0) {
                return Ok(());
            }
            let failed = frame_len(bytes, bad)
                .filter(|len| *len > 0)
                .map_or(end, |len| (bad + FRAME + len).min(end));
            if missing_sector(bytes, bad, failed, end) {
                return Ok(());
            }
            Err(
                "the batch is all there (its trailer checks and no sector of it is zeros), so \
                 it was damaged after it was written"
                    .into(),
            )
        }
        _ => {
            if let Some(p) = later(start + 1) {
                return Err(format!(
                    "a later batch at byte {p} checks, so this one had been written whole"
                ));
            }
            // Its first sector never landed: zeros from its start to the end of its frame or of
            // that sector. A batch record's first byte is 13, its length, which no single
            // flipped bit makes zero.
            let head_end = (start + FRAME).min(start / SECTOR * SECTOR + SECTOR);
            let head = &bytes[start..head_end.min(bytes.len())];
            if !head.is_empty() && head.iter().all(|b| *b == 0) {
                return Ok(());
            }
            match (start + 1..bytes.len()).find(|&p| record::checks_at(bytes, p)) {
                None => Ok(()),
                Some(p) => Err(format!(
                    "a record at byte {p} checks after it, so this is damage, not a torn write"
                )),
            }
        }
    }
}

/// The disk's smallest unit of a write.
const SECTOR: usize = 512;

/// Whether a run of at least 16 zeros meets a sector boundary in `lo..=hi`: what a sector that
/// never reached the disk leaves. A run that starts there may go on to `limit` (the batch's
/// end): the bytes before `lo` checked, so they are there, but the sector may end past `hi`.
fn missing_sector(bytes: &[u8], lo: usize, hi: usize, limit: usize) -> bool {
    const RUN: usize = 16;
    let limit = limit.min(bytes.len());
    let zeros = |a: usize, b: usize| bytes[a..b].iter().all(|x| *x == 0);
    (lo.next_multiple_of(SECTOR)..=hi.min(limit))
        .step_by(SECTOR)
        .any(|b| (b >= lo + RUN && zeros(b - RUN, b)) || (b + RUN <= limit && zeros(b, b + RUN)))
}

/// Where the longest run of batches that check ends in the segment `bytes`: after its header
/// and every batch up to the first one that does not check (or the end of the log). `None` if
/// the segment's magic or header does not check.
pub(super) fn verified_prefix(bytes: &[u8]) -> Option<usize> {
    if !bytes.starts_with(MAGIC) {
        return None;
    }
    let Parsed::Record {
        kind: Kind::Header,
        next,
        ..
    } = parse(bytes, MAGIC.len())
    else {
        return None;
    };
    let (mut pos, mut seq) = (next, 0);
    while let Ok(Some(batch)) = read_batch(bytes, pos, seq) {
        pos = batch.end;
        seq += 1;
    }
    Some(pos)
}

/// The highest term of any record in `bytes` that checks, wherever it is (a vote, a header's
/// vote, an entry's log id): what a node may have voted in or seen, as far as its damaged
/// files still tell.
pub(super) fn highest_term(bytes: &[u8]) -> u64 {
    let mut highest = 0;
    for pos in 0..bytes.len() {
        if !record::checks_at(bytes, pos) {
            continue;
        }
        let Parsed::Record { kind, payload, .. } = parse(bytes, pos) else {
            continue;
        };
        let term = match kind {
            Kind::Vote => types::decode::<Vote>(payload)
                .ok()
                .map(|v| v.leader_id.term),
            Kind::Header => types::decode::<Header>(payload)
                .ok()
                .and_then(|h| h.vote)
                .map(|v| v.leader_id.term),
            Kind::Entry => postcard::take_from_bytes::<LogId>(payload)
                .ok()
                .map(|(id, _)| id.leader_id.term),
            _ => None,
        };
        highest = highest.max(term.unwrap_or(0));
    }
    highest
}

/// The segment files in `dir`, by sequence number, oldest first.
pub(super) fn segment_files(dir: &Path) -> io::Result<Vec<(u64, PathBuf)>> {
    let mut found = Vec::new();
    for item in fs::read_dir(dir)? {
        let item = item?;
        let name = item.file_name();
        if let Some(seq) = name.to_string_lossy().strip_suffix(SUFFIX)
            && let Ok(seq) = seq.parse::<u64>()
        {
            found.push((seq, item.path()));
        }
    }
    found.sort();
    Ok(found)
}
