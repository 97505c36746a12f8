//! One record of the raft log's segment files: `len: u32 LE | crc32: u32 LE | kind: u8 |
//! payload`, where `len` counts the kind and the payload and the CRC covers both. A zero `len`
//! is the end of what was written.
//!
//! Records after a segment's header are written in batches, one write and one sync each: a
//! [`Kind::Batch`] record (the batch's whole length and its number in the segment), the batch's
//! records, then the 8 bytes of [`TRAILER`]. The framing lets a replay tell a batch that never
//! reached the disk whole (a torn write) from one that did and was damaged later.

use std::io;

/// A record's frame: its length and its CRC.
pub(super) const FRAME: usize = 8;

/// What a record holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(super) enum Kind {
    /// The first record of a segment: its header (format, vote, committed, last purged).
    Header = 1,
    /// One log entry.
    Entry = 2,
    /// The vote.
    Vote = 3,
    /// The committed log id (`Option<LogId>`).
    Committed = 4,
    /// Entries after this log id (`Option<LogId>`; all when `None`) are gone.
    Truncate = 5,
    /// Entries up to this log id are gone.
    Purge = 6,
    /// The start of a batch: `len: u32 LE` (the whole batch, this record and the trailer
    /// included) and `seq: u64 LE` (1 for a segment's first batch, then one more each).
    Batch = 7,
}

/// The bytes of a [`Kind::Batch`] record: its frame, its kind and its 12-byte payload.
pub(super) const BATCH_RECORD: usize = FRAME + 1 + 12;

/// The last 8 bytes of every batch. None of them is zero, so a batch whose end never reached
/// the disk (zeros there) is told apart from a whole one.
pub(super) const TRAILER: &[u8; 8] = b"RAFTBEND";

/// The fixed bytes a batch adds to its records.
pub(super) const BATCH_OVERHEAD: usize = BATCH_RECORD + TRAILER.len();

/// Appends a batch record for a batch of `len` bytes numbered `seq`.
pub(super) fn batch_record(out: &mut Vec<u8>, len: u32, seq: u64) -> io::Result<()> {
    let mut payload = [0u8; 12];
    payload[..4].copy_from_slice(&len.to_le_bytes());
    payload[4..].copy_from_slice(&seq.to_le_bytes());
    frame(out, Kind::Batch, &payload)
}

/// The length and number of the batch whose record starts at `pos`, if one that checks is there.
pub(super) fn batch_at(bytes: &[u8], pos: usize) -> Option<(usize, u64)> {
    // Cheap tests first: a replay scans whole segments for batch records.
    if frame_len(bytes, pos)? != 1 + 12 || *bytes.get(pos + FRAME)? != Kind::Batch as u8 {
        return None;
    }
    match parse(bytes, pos) {
        Parsed::Record {
            kind: Kind::Batch,
            payload,
            ..
        } => {
            let len = u32::from_le_bytes(payload[..4].try_into().ok()?) as usize;
            let seq = u64::from_le_bytes(payload[4..].try_into().ok()?);
            Some((len, seq))
        }
        _ => None,
    }
}

/// Whether a record that checks (of any kind) starts at `pos`.
pub(super) fn checks_at(bytes: &[u8], pos: usize) -> bool {
    // The kind byte first: a scan over whole segments skips most offsets without a checksum.
    bytes
        .get(pos + FRAME)
        .copied()
        .and_then(Kind::from_byte)
        .is_some()
        && matches!(parse(bytes, pos), Parsed::Record { .. })
}

impl Kind {
    pub(super) fn from_byte(b: u8) -> Option<Self> {
        Some(match b {
            1 => Kind::Header,
            2 => Kind::Entry,
            3 => Kind::Vote,
            4 => Kind::Committed,
            5 => Kind::Truncate,
            6 => Kind::Purge,
            7 => Kind::Batch,
            _ => return None,
        })
    }
}

/// Appends the record of `kind` holding `payload` to `out`.
pub(super) fn frame(out: &mut Vec<u8>, kind: Kind, payload: &[u8]) -> io::Result<()> {
    let len = u32::try_from(1 + payload.len())
        .map_err(|_| io::Error::other("a raft log record over 4 GiB"))?;
    let mut crc = crc32fast::Hasher::new();
    crc.update(&[kind as u8]);
    crc.update(payload);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&crc.finalize().to_le_bytes());
    out.push(kind as u8);
    out.extend_from_slice(payload);
    Ok(())
}

/// One step of reading records.
pub(super) enum Parsed<'a> {
    /// The end of what was written.
    End,
    Record {
        kind: Kind,
        payload: &'a [u8],
        next: usize,
    },
    Bad(String),
}

/// The length field of the frame at `pos`, if it is there.
pub(super) fn frame_len(bytes: &[u8], pos: usize) -> Option<usize> {
    let field = bytes.get(pos..pos + 4)?;
    Some(u32::from_le_bytes(field.try_into().ok()?) as usize)
}

/// Reads the record at `pos`.
pub(super) fn parse(bytes: &[u8], pos: usize) -> Parsed<'_> {
    let Some(len) = frame_len(bytes, pos) else {
        return Parsed::End;
    };
    if len == 0 {
        return Parsed::End;
    }
    let Some(body) = bytes.get(pos + FRAME..pos + FRAME + len) else {
        return Parsed::Bad(format!(
            "a record of {len} bytes runs past the end of the file"
        ));
    };
    let mut crc = [0u8; 4];
    crc.copy_from_slice(&bytes[pos + 4..pos + 8]);
    if crc32fast::hash(body) != u32::from_le_bytes(crc) {
        return Parsed::Bad("the record's checksum does not match".into());
    }
    match Kind::from_byte(body[0]) {
        Some(kind) => Parsed::Record {
            kind,
            payload: &body[1..],
            next: pos + FRAME + len,
        },
        None => Parsed::Bad(format!("unknown record kind {}", body[0])),
    }
}
