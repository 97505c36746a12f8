//! Queries on the state machine's read connections: many at once all answer, from the
//! committed state, and a query that panics fails alone (the reads after it still answer).

mod common;

use std::sync::Arc;

use common::within;
use openraft::entry::RaftEntry;
use openraft::storage::RaftStateMachine;
use openraft::testing::log_id;
use runtime::raft::state_machine::{Application, StateMachine};
use runtime::raft::types::{Applied, C, Entry, Envelope};
use runtime::rusqlite::Connection;
use runtime::wire::service::ApplyContext;

/// Every command adds a row; a query answers how many rows there are, or panics when it is
/// `panic`.
struct Counted;

impl Application for Counted {
    fn init(&self, conn: &Connection) -> Result<(), String> {
        conn.execute_batch("CREATE TABLE IF NOT EXISTS rows (n INTEGER NOT NULL)")
            .map_err(|e| e.to_string())
    }
    fn apply(&self, conn: &Connection, ctx: &ApplyContext, _: &[u8]) -> Result<Applied, String> {
        conn.execute("INSERT INTO rows (n) VALUES (?1)", [ctx.index as i64])
            .map_err(|e| e.to_string())?;
        Ok(Applied {
            ok: true,
            reply: Vec::new(),
        })
    }
    fn query(&self, conn: &Connection, query: &[u8]) -> Vec<u8> {
        assert_ne!(query, b"panic", "the query asked to panic");
        conn.query_row("SELECT count(*) FROM rows", [], |r| r.get::<_, i64>(0))
            .map(|n| n.to_string().into_bytes())
            .unwrap_or_default()
    }
    fn digest(&self, _: &Connection) -> Result<String, String> {
        Ok(String::new())
    }
}

async fn with_rows(dir: &std::path::Path, rows: u64) -> StateMachine {
    let mut sm = StateMachine::open(
        Arc::new(Counted),
        &dir.join("state.db"),
        &dir.join("snapshots"),
    )
    .expect("state machine");
    let entries = (1..=rows).map(|i| {
        Ok((
            Entry::new_normal(
                log_id::<C>(1, 1, i),
                Envelope {
                    client: "c:reads".into(),
                    seq: i,
                    ack: 0,
                    time_us: 0,
                    command: b"add".to_vec(),
                },
            ),
            None,
        ))
    });
    sm.apply(futures_util::stream::iter(entries))
        .await
        .expect("apply");
    sm.flush().await.expect("flush");
    sm
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_queries_at_once_all_answer_from_the_committed_state() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sm = with_rows(dir.path(), 7).await;
    let queries = (0..200).map(|_| {
        let sm = sm.clone();
        tokio::spawn(async move { sm.query(b"count".to_vec()).await })
    });
    let answers = within("200 queries", futures_util::future::join_all(queries)).await;
    for answer in answers {
        assert_eq!(answer.expect("task").expect("query"), b"7");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_that_panics_fails_alone() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sm = with_rows(dir.path(), 3).await;
    // More panics than there are readers: none of them takes a reader with it.
    for _ in 0..10 {
        let failed = within("a panicking query", sm.query(b"panic".to_vec())).await;
        assert!(failed.is_err(), "{failed:?}");
    }
    let answer = within("a query after them", sm.query(b"count".to_vec())).await;
    assert_eq!(answer.expect("query"), b"3");
}
