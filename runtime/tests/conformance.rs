//! openraft's storage conformance suite against the SQLite log store and the SQLite state
//! machine, with a minimal application (a counter table) behind the state machine.

use std::sync::Arc;

use openraft::StorageError;
use openraft::testing::log::{StoreBuilder, Suite};
use runtime::raft::log_store::LogStore;
use runtime::raft::state_machine::{Application, StateMachine};
use runtime::raft::types::{Applied, C};
use rusqlite::Connection;

/// Counts applied commands; enough for the suite, which checks the runtime's bookkeeping.
struct Counter;

impl Application for Counter {
    fn init(&self, conn: &Connection) -> Result<(), String> {
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS counter (id INTEGER PRIMARY KEY, n INTEGER NOT NULL);
             INSERT OR IGNORE INTO counter (id, n) VALUES (1, 0);",
        )
        .map_err(|e| e.to_string())
    }

    fn apply(
        &self,
        conn: &Connection,
        _ctx: &runtime::wire::service::ApplyContext,
        _command: &[u8],
    ) -> Result<Applied, String> {
        conn.execute("UPDATE counter SET n = n + 1 WHERE id = 1", [])
            .map(|_| Applied {
                ok: true,
                reply: b"ok".to_vec(),
            })
            .map_err(|e| e.to_string())
    }

    fn query(&self, conn: &Connection, _query: &[u8]) -> Vec<u8> {
        conn.query_row("SELECT n FROM counter WHERE id = 1", [], |r| {
            r.get::<_, i64>(0)
        })
        .map(|n| n.to_string().into_bytes())
        .unwrap_or_default()
    }

    fn digest(&self, conn: &Connection) -> Result<String, String> {
        Ok(String::from_utf8_lossy(&self.query(conn, b"")).into_owned())
    }
}

struct Builder;

impl StoreBuilder<C, LogStore, StateMachine, tempfile::TempDir> for Builder {
    async fn build(&self) -> Result<(tempfile::TempDir, LogStore, StateMachine), StorageError<C>> {
        let io = |e: std::io::Error| {
            StorageError::from_io_error(
                openraft::ErrorSubject::Store,
                openraft::ErrorVerb::Write,
                e,
            )
        };
        let dir = tempfile::tempdir().map_err(io)?;
        let log = LogStore::open(&dir.path().join("raft-log")).map_err(|e| io(e.into()))?;
        let sm = StateMachine::open(
            Arc::new(Counter),
            &dir.path().join("state.db"),
            &dir.path().join("snapshots"),
        )
        .map_err(io)?;
        Ok((dir, log, sm))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_log_store_and_state_machine_pass_the_openraft_suite() {
    Suite::test_all(Builder)
        .await
        .unwrap_or_else(|e| panic!("conformance suite: {e}"));
}
