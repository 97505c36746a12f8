//! The raft log under random damage, as a seeded loop: random batches of random sizes, votes
//! between them, purges and truncations, over small segments so that cases roll and delete
//! files; then one fault on the closed files:
//!
//! - a crash during the last batch: the file cut at a random byte of it, its end zeroed from a
//!   random byte on, or some of its pages (4 KiB) never written, in any order;
//! - one bit flipped anywhere in any segment (magic, header, frame, payload, trailer, the zeros
//!   after the end).
//!
//! Reopening must give exactly the acknowledged log, or (after a crash) the log before the last
//! batch, which was never acknowledged, or a typed refusal that changed no byte. Never a log
//! missing an acknowledged batch, never an older vote. A log that reopens then takes one more
//! batch and reopens with it, so nothing stale comes back.
//!
//! `cargo test` runs [`DEFAULT_CASES`] cases; `LOG_PROPERTY_CASES=1000000 cargo test --release
//! -p runtime --test log_property -- --nocapture` runs a million (`LOG_PROPERTY_SEED` picks the
//! first seed; a failure prints the seed that reproduces it).

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

use openraft::entry::RaftEntry;
use openraft::storage::{IOFlushed, RaftLogStorage};
use openraft::testing::log_id;
use openraft::type_config::TypeConfigExt;
use openraft::{EntryPayload, RaftLogReader};
use runtime::raft::log_store::{LogStore, LogStoreError};
use runtime::raft::types::{C, Entry, Envelope, LogId, Vote};

/// Cases in a plain `cargo test`.
const DEFAULT_CASES: u64 = 300;

/// What the log holds, as the test acknowledged it.
#[derive(Debug, Clone, PartialEq, Default)]
struct Model {
    /// Index -> (log id, command bytes).
    entries: BTreeMap<u64, (LogId, Vec<u8>)>,
    vote: Option<Vote>,
    last_purged: Option<LogId>,
}

impl Model {
    fn last_index(&self) -> u64 {
        self.entries
            .keys()
            .next_back()
            .copied()
            .or(self.last_purged.map(|l| l.index))
            .unwrap_or(0)
    }
}

/// Where the last batch written lies: its file and the bytes it covers.
#[derive(Debug, Clone)]
struct Written {
    file: PathBuf,
    from: usize,
    to: usize,
    /// Whether segments were deleted after it was synced (a purge): a crash while it was written
    /// would have left them, so no crash is modelled then.
    deleted: bool,
}

fn segment_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("log dir")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .collect();
    files.sort();
    files
}

/// Where the records of `file` end: the last byte that is not zero, plus one.
fn written_end(file: &Path) -> usize {
    let bytes = std::fs::read(file).expect("read segment");
    bytes.iter().rposition(|b| *b != 0).map_or(0, |i| i + 1)
}

/// The end of the newest segment's header record (magic + frame + header).
fn header_end(file: &Path) -> usize {
    let bytes = std::fs::read(file).expect("read segment");
    let len = u32::from_le_bytes(bytes[8..12].try_into().expect("len")) as usize;
    16 + len
}

/// The newest segment and where its records end.
fn newest(dir: &Path) -> (PathBuf, usize) {
    let file = segment_files(dir).pop().expect("a segment");
    let end = written_end(&file);
    (file, end)
}

fn entry(id: LogId, command: Vec<u8>) -> Entry {
    Entry::new_normal(
        id,
        Envelope {
            client: "p".into(),
            seq: id.index,
            ack: 0,
            time_us: 0,
            command,
        },
    )
}

fn command_of(entry: &Entry) -> Vec<u8> {
    match &entry.payload {
        EntryPayload::Normal(envelope) => envelope.command.clone(),
        other => panic!("unexpected entry payload {other:?}"),
    }
}

async fn append(store: &mut LogStore, entries: Vec<Entry>) {
    let (tx, rx) = C::oneshot();
    store
        .append(entries, IOFlushed::signal(tx))
        .await
        .expect("append");
    rx.await.expect("callback").expect("flushed");
}

/// What a reopened log holds.
async fn observe(store: &mut LogStore) -> Model {
    let entries = store.try_get_log_entries(..).await.expect("read entries");
    let state = store.get_log_state().await.expect("log state");
    Model {
        entries: entries
            .iter()
            .map(|e| (e.log_id.index, (e.log_id, command_of(e))))
            .collect(),
        vote: store.read_vote().await.expect("vote"),
        last_purged: state.last_purged_log_id,
    }
}

/// Random bytes, mostly small, sometimes larger than a page or a segment.
fn command(rng: &mut fastrand::Rng) -> Vec<u8> {
    let len = match rng.u8(..10) {
        0 => rng.usize(4_000..20_000),
        1..=2 => 0,
        _ => rng.usize(1..600),
    };
    (0..len).map(|_| rng.u8(..)).collect()
}

/// Runs random operations, each awaited (one batch each); returns the acknowledged models
/// before and after the last one, and where the last batch lies.
async fn build(dir: &Path, rng: &mut fastrand::Rng) -> (Model, Model, Written) {
    let mut store =
        LogStore::open_with_segment_bytes(dir, rng.u64(2_000..40_000)).expect("open new log");
    let mut model = Model::default();
    let mut before = model.clone();
    let mut term = 1;
    let mut written = None;
    for _ in 0..rng.usize(1..30) {
        let acknowledged = model.clone();
        let (file_before, end_before) = newest(dir);
        let files_before = segment_files(dir);
        match rng.u8(..10) {
            0..=5 => {
                let next = model.last_index() + 1;
                let batch: Vec<Entry> = (next..next + rng.u64(1..6))
                    .map(|i| entry(log_id::<C>(term, 1, i), command(rng)))
                    .collect();
                for e in &batch {
                    model
                        .entries
                        .insert(e.log_id.index, (e.log_id, command_of(e)));
                }
                append(&mut store, batch).await;
            }
            6 => {
                term += rng.u64(0..2);
                let vote = Vote::new(term, rng.u64(1..4));
                store.save_vote(&vote).await.expect("save vote");
                model.vote = Some(vote);
            }
            7 if !model.entries.is_empty() => {
                let keys: Vec<u64> = model.entries.keys().copied().collect();
                let keep = keys[rng.usize(..keys.len())];
                let after = model.entries[&keep].0;
                store.truncate_after(Some(after)).await.expect("truncate");
                model.entries.retain(|i, _| *i <= keep);
            }
            8 if !model.entries.is_empty() => {
                let keys: Vec<u64> = model.entries.keys().copied().collect();
                let upto = model.entries[&keys[rng.usize(..keys.len())]].0;
                store.purge(upto).await.expect("purge");
                model.entries.retain(|i, _| *i > upto.index);
                model.last_purged = Some(upto);
            }
            _ => {
                term += 1;
                continue;
            }
        }
        before = acknowledged;
        let (file, to) = newest(dir);
        // Where the batch starts: the end of the one before (found as the last byte that is not
        // zero, which may fall inside the header, whose payload can end in zeros).
        let from = if file == file_before {
            end_before.max(header_end(&file))
        } else {
            header_end(&file)
        };
        let deleted = files_before.iter().any(|f| !f.exists());
        written = Some(Written {
            file,
            from,
            to,
            deleted,
        });
    }
    drop(store);
    let written = written.unwrap_or_else(|| {
        let (file, to) = newest(dir);
        Written {
            file,
            from: to,
            to,
            deleted: false,
        }
    });
    (before, model, written)
}

/// The fault a case applies to the closed files, as a sentence for the failure message.
fn apply_fault(dir: &Path, rng: &mut fastrand::Rng, last: &Written) -> (String, bool) {
    let crash = rng.bool() && last.to > last.from && !last.deleted;
    if crash {
        let mut bytes = std::fs::read(&last.file).expect("read");
        let at = rng.usize(last.from..last.to);
        let what = match rng.u8(..3) {
            0 => {
                bytes.truncate(at);
                format!("{} cut at byte {at}", last.file.display())
            }
            1 => {
                bytes[at..last.to].fill(0);
                format!("{} zeroed from byte {at}", last.file.display())
            }
            _ => {
                const PAGE: usize = 4096;
                let mut dropped = Vec::new();
                let mut page = last.from / PAGE * PAGE;
                while page < last.to {
                    if rng.bool() {
                        let lo = page.max(last.from);
                        let hi = (page + PAGE).min(last.to);
                        bytes[lo..hi].fill(0);
                        dropped.push(page);
                    }
                    page += PAGE;
                }
                format!("{}: pages {dropped:?} never written", last.file.display())
            }
        };
        std::fs::write(&last.file, &bytes).expect("write");
        (what, true)
    } else {
        let files = segment_files(dir);
        let file = &files[rng.usize(..files.len())];
        let mut bytes = std::fs::read(file).expect("read");
        // Anywhere in what was written, or a little past it.
        let span = (written_end(file) + 64).min(bytes.len());
        let at = rng.usize(..span);
        let bit = rng.u8(..8);
        bytes[at] ^= 1 << bit;
        std::fs::write(file, &bytes).expect("write");
        (
            format!("{} bit {bit} of byte {at} flipped", file.display()),
            false,
        )
    }
}

/// Every segment's bytes.
fn snapshot_files(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    segment_files(dir)
        .into_iter()
        .map(|f| {
            let bytes = std::fs::read(&f).expect("read");
            (f, bytes)
        })
        .collect()
}

/// What one case saw.
#[derive(Debug, Default)]
struct Tally {
    whole: u64,
    torn_cut: u64,
    refused: u64,
    /// Refusals after a crash (a plain power cut): allowed, but each one costs an operator.
    refused_after_crash: u64,
}

async fn case(seed: u64, tally: &mut Tally) {
    let mut rng = fastrand::Rng::with_seed(seed);
    let tmp = if Path::new("/dev/shm").is_dir() {
        tempfile::tempdir_in("/dev/shm")
    } else {
        tempfile::tempdir()
    }
    .expect("tempdir");
    let dir = tmp.path().join("raft-log");
    let (before, after, last) = build(&dir, &mut rng).await;
    let (fault, crash) = apply_fault(&dir, &mut rng, &last);
    let files = snapshot_files(&dir);
    let context = format!("seed {seed}: {fault}");

    let mut store = match LogStore::open(&dir) {
        Ok(store) => store,
        Err(e @ (LogStoreError::Corrupt { .. } | LogStoreError::Format { .. })) => {
            assert_eq!(
                snapshot_files(&dir),
                files,
                "{context}: refused ({e}) but changed the files"
            );
            tally.refused += 1;
            if crash {
                tally.refused_after_crash += 1;
                if std::env::var_os("LOG_PROPERTY_VERBOSE").is_some() {
                    eprintln!("{context}: refused after a crash: {e}");
                }
            }
            return;
        }
        Err(e) => panic!("{context}: refused with an untyped error: {e}"),
    };
    let seen = observe(&mut store).await;
    if seen == after {
        tally.whole += 1;
    } else if crash && (seen == before || part_of_the_last_append(&before, &seen, &after)) {
        tally.torn_cut += 1;
    } else {
        panic!(
            "{context}: reopened as neither the acknowledged log nor the one before an \
             unacknowledged crash\n seen: {:?}\n acknowledged: {:?}\n before the last batch: {:?}",
            summary(&seen),
            summary(&after),
            summary(&before)
        );
    }
    // One more batch, then a reopen holds it and nothing else came back.
    let mut expected = seen;
    let next = expected.last_index() + 1;
    let id = log_id::<C>(99, 1, next);
    append(&mut store, vec![entry(id, b"after".to_vec())]).await;
    expected.entries.insert(next, (id, b"after".to_vec()));
    drop(store);
    let mut store = LogStore::open(&dir)
        .unwrap_or_else(|e| panic!("{context}: reopen after a batch written on top: {e}"));
    assert_eq!(
        summary(&observe(&mut store).await),
        summary(&expected),
        "{context}: the reopened log after one more batch"
    );
}

/// Whether `seen` is `before` with a first part of the last operation: an append too large for
/// its segment is written as two batches, and the first may reach the disk alone.
fn part_of_the_last_append(before: &Model, seen: &Model, after: &Model) -> bool {
    let within = |small: &Model, big: &Model| {
        small
            .entries
            .iter()
            .all(|(i, e)| big.entries.get(i) == Some(e))
    };
    seen.vote == before.vote
        && seen.last_purged == before.last_purged
        && within(before, seen)
        && within(seen, after)
}

/// A model in brief: (index, term, command length) of each entry, the vote, the last purged id.
type Summary = (Vec<(u64, u64, usize)>, Option<Vote>, Option<LogId>);

/// A model in brief.
fn summary(model: &Model) -> Summary {
    (
        model
            .entries
            .values()
            .map(|(id, c)| (id.index, id.leader_id.term, c.len()))
            .collect(),
        model.vote,
        model.last_purged,
    )
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[tokio::test(flavor = "current_thread")]
async fn a_damaged_log_is_refused_and_only_an_unacknowledged_tail_is_cut() -> io::Result<()> {
    let cases = env_u64("LOG_PROPERTY_CASES", DEFAULT_CASES);
    let first = env_u64("LOG_PROPERTY_SEED", 1);
    let started = std::time::Instant::now();
    let mut tally = Tally::default();
    for seed in first..first + cases {
        case(seed, &mut tally).await;
    }
    eprintln!(
        "log property: {cases} cases in {:.1?}: {tally:?}",
        started.elapsed()
    );
    // Each outcome happened: the faults reach every branch of the replay.
    if cases >= DEFAULT_CASES {
        assert!(
            tally.whole > 0 && tally.torn_cut > 0 && tally.refused > 0,
            "{tally:?}"
        );
    }
    Ok(())
}
