//! What applying a committed write costs a replica, in process: the state machine's whole apply
//! (exactly-once records, client watermarks, the command, the applied id, one SQLite
//! transaction shared by batches) for a key-value put from one of 64 clients, in batches of 8
//! as a busy leader commits them, with a commit per batch and with group commit (the default),
//! the change feed on. Prints CPU and wall µs per entry. The pages it writes per entry:
//! `strace -f -c -e trace=pwrite64` on the bench binary (two writes per WAL frame).
//!
//! `cargo bench -p runtime --bench apply`

use std::sync::Arc;
use std::time::Instant;

use openraft::entry::RaftEntry;
use openraft::storage::RaftStateMachine;
use openraft::testing::log_id;
use runtime::raft::state_machine::{Application, CommitPolicy, StateMachine};
use runtime::raft::types::Applied;
use runtime::raft::types::{C, Entry, Envelope};
use runtime::rusqlite::{Connection, params};
use runtime::wire::service::ApplyContext;

const CLIENTS: u64 = 64;
const BATCH: u64 = 8;
const ENTRIES: u64 = 40_000;

/// A key-value put per command: `key=value`.
struct Puts;

impl Application for Puts {
    fn init(&self, conn: &Connection) -> Result<(), String> {
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;",
        )
        .map_err(|e| e.to_string())
    }

    fn apply(
        &self,
        conn: &Connection,
        _ctx: &ApplyContext,
        command: &[u8],
    ) -> Result<Applied, String> {
        let text = std::str::from_utf8(command).map_err(|e| e.to_string())?;
        let (key, value) = text.split_once('=').ok_or("not key=value")?;
        conn.prepare_cached(
            "INSERT INTO kv (key, value) VALUES (?1, ?2) ON CONFLICT (key) DO UPDATE SET value = ?2",
        )
        .and_then(|mut s| s.execute(params![key, value]))
        .map_err(|e| e.to_string())?;
        Ok(Applied {
            ok: true,
            reply: Vec::new(),
        })
    }

    fn query(&self, _conn: &Connection, _query: &[u8]) -> Vec<u8> {
        Vec::new()
    }

    fn digest(&self, _conn: &Connection) -> Result<String, String> {
        Ok(String::new())
    }
}

/// CPU time of this process so far, µs.
fn cpu_us() -> f64 {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::uninit();
    // SAFETY: getrusage fills the struct it is given.
    let usage = unsafe {
        libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr());
        usage.assume_init()
    };
    let us = |t: libc::timeval| t.tv_sec as f64 * 1e6 + t.tv_usec as f64;
    us(usage.ru_utime) + us(usage.ru_stime)
}

fn entry(index: u64) -> Entry {
    let client = index % CLIENTS;
    let seq = index / CLIENTS + 1;
    Entry::new_normal(
        log_id::<C>(1, 1, index),
        Envelope {
            client: format!("client-{client:04}"),
            seq,
            ack: seq - 1,
            time_us: 1_800_000_000_000_000,
            command: format!("c{client}-{}={}", index % 1000, "v".repeat(100)).into_bytes(),
        },
    )
}

/// Applies every entry on a fresh state machine committing as `policy` says (the last commit
/// included); returns the CPU and wall µs per entry.
async fn run(policy: CommitPolicy) -> (f64, f64) {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("state.db");
    let mut sm = StateMachine::open(Arc::new(Puts), &db, &dir.path().join("snapshots"))
        .expect("state machine");
    sm.set_commit_policy(policy).expect("policy");
    let (started, cpu) = (Instant::now(), cpu_us());
    for first in (1..=ENTRIES).step_by(BATCH as usize) {
        let batch: Vec<_> = (first..first + BATCH)
            .map(|i| Ok((entry(i), None)))
            .collect();
        sm.apply(futures_util::stream::iter(batch))
            .await
            .expect("apply");
    }
    sm.flush().await.expect("flush");
    let (wall, cpu) = (started.elapsed().as_secs_f64(), cpu_us() - cpu);
    (cpu / ENTRIES as f64, wall * 1e6 / ENTRIES as f64)
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    // Alternated, so that drift on a shared machine falls on both.
    let group = CommitPolicy::default();
    let per_batch = CommitPolicy {
        entries: 1,
        ..group
    };
    for round in 1..=2 {
        for (name, policy) in [
            ("a commit per batch (--commit-entries 1)", per_batch),
            ("group commit (default)", group),
        ] {
            let (cpu, wall) = run(policy).await;
            println!(
                "apply, {name}, round {round}: {ENTRIES} entries from {CLIENTS} clients in \
                 batches of {BATCH}: {cpu:.1} µs CPU per entry, {wall:.1} µs wall per entry",
            );
        }
    }
}
