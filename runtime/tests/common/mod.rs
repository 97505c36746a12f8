//! Shared test support: a handler that echoes, a gate to hold calls, and timeouts that turn a
//! hang into a failure.

#![allow(dead_code)]

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use runtime::{CallKind, Handler};
use tokio::sync::Notify;

/// How long any single step of a test may take before the test fails instead of hanging.
pub const STEP: Duration = Duration::from_secs(20);

/// Awaits `future`, failing the test if it takes longer than [`STEP`].
pub async fn within<T>(what: &str, future: impl Future<Output = T>) -> T {
    match tokio::time::timeout(STEP, future).await {
        Ok(value) => value,
        Err(_) => panic!("{what}: no result within {STEP:?}"),
    }
}

/// The payload that makes [`TestHandler`] wait until [`TestHandler::open_gate`].
pub const HOLD: &[u8] = b"hold";

/// Echoes the payload reversed, behind the kind byte, after a small pseudo-random pause so that
/// replies complete out of order. A [`HOLD`] payload waits for the gate.
#[derive(Default)]
pub struct TestHandler {
    gate: Notify,
    held: Notify,
    released: Notify,
    handled: AtomicUsize,
}

impl TestHandler {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Lets one held call (present or future) finish.
    pub fn open_gate(&self) {
        self.gate.notify_one();
    }

    /// Waits until a [`HOLD`] call has reached the handler.
    pub async fn wait_until_held(&self) {
        within("a held call reaching the handler", self.held.notified()).await;
    }

    /// Waits until a held call has passed the gate and finished.
    pub async fn wait_until_released(&self) {
        within("a held call finishing", self.released.notified()).await;
    }

    /// How many calls the handler has finished.
    pub fn handled(&self) -> usize {
        self.handled.load(Ordering::SeqCst)
    }
}

/// The reply [`TestHandler`] gives for `payload`.
pub fn expected_reply(kind: CallKind, payload: &[u8]) -> Vec<u8> {
    let mut reply = vec![kind.to_byte()];
    reply.extend(payload.iter().rev());
    reply
}

/// The reply [`TestHandler`] gives for a refused request.
pub fn refusal(reason: &str) -> Vec<u8> {
    format!("refused: {reason}").into_bytes()
}

/// A pause of 0 to 3 ms chosen from the payload (FNV-1a), so it varies between calls.
fn jitter(payload: &[u8]) -> Duration {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in payload {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    Duration::from_micros(hash % 3000)
}

impl Handler for TestHandler {
    async fn handle(&self, kind: CallKind, payload: Vec<u8>) -> Vec<u8> {
        if payload == HOLD {
            self.held.notify_one();
            self.gate.notified().await;
            self.handled.fetch_add(1, Ordering::SeqCst);
            self.released.notify_one();
        } else {
            tokio::time::sleep(jitter(&payload)).await;
            self.handled.fetch_add(1, Ordering::SeqCst);
        }
        expected_reply(kind, &payload)
    }

    fn refuse(&self, reason: &str) -> Vec<u8> {
        refusal(reason)
    }
}

/// The payload of call number `i` of client `client`, and its kind.
pub fn call_number(client: &str, i: usize) -> (CallKind, Vec<u8>) {
    let kind = if i.is_multiple_of(2) {
        CallKind::Command
    } else {
        CallKind::Query
    };
    (kind, format!("{client}-call-{i}").into_bytes())
}

/// A one-table application: every command adds a row; a query (and the digest) answers how
/// many rows there are. For fault tests, the command [`FAIL`] makes apply fail, as a storage
/// error would, and the query [`PANIC`] panics.
pub struct Rows;

/// The command that makes [`Rows`]' apply fail.
pub const FAIL: &[u8] = b"fail";

/// The query that makes [`Rows`]' query panic.
pub const PANIC: &[u8] = b"panic";

impl runtime::raft::state_machine::Application for Rows {
    fn init(&self, conn: &runtime::rusqlite::Connection) -> Result<(), String> {
        conn.execute_batch("CREATE TABLE IF NOT EXISTS rows (n INTEGER NOT NULL)")
            .map_err(|e| e.to_string())
    }

    fn apply(
        &self,
        conn: &runtime::rusqlite::Connection,
        ctx: &runtime::wire::service::ApplyContext,
        command: &[u8],
    ) -> Result<runtime::raft::types::Applied, String> {
        if command == FAIL {
            return Err("the command asked to fail".into());
        }
        conn.execute("INSERT INTO rows (n) VALUES (?1)", [ctx.index as i64])
            .map_err(|e| e.to_string())?;
        Ok(runtime::raft::types::Applied {
            ok: true,
            reply: Vec::new(),
        })
    }

    fn query(&self, conn: &runtime::rusqlite::Connection, query: &[u8]) -> Vec<u8> {
        assert_ne!(query, PANIC, "the query asked to panic");
        self.digest(conn).unwrap_or_default().into_bytes()
    }

    fn digest(&self, conn: &runtime::rusqlite::Connection) -> Result<String, String> {
        conn.query_row("SELECT count(*) FROM rows", [], |r| r.get::<_, i64>(0))
            .map(|n| n.to_string())
            .map_err(|e| e.to_string())
    }
}

/// A state machine of [`Rows`] in `dir` (`state.db`, `snapshots/`).
pub fn open_rows(dir: &std::path::Path) -> runtime::raft::state_machine::StateMachine {
    runtime::raft::state_machine::StateMachine::open(
        Arc::new(Rows),
        &dir.join("state.db"),
        &dir.join("snapshots"),
    )
    .expect("state machine")
}
