//! Queries on the state machine's read connections: many at once all answer, from the
//! committed state, and a query that panics fails alone (the reads after it still answer).

mod common;

use common::{PANIC, open_rows, within};
use openraft::entry::RaftEntry;
use openraft::storage::RaftStateMachine;
use openraft::testing::log_id;
use runtime::raft::state_machine::StateMachine;
use runtime::raft::types::{C, Entry, Envelope};

async fn with_rows(dir: &std::path::Path, rows: u64) -> StateMachine {
    let mut sm = open_rows(dir);
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
        let failed = within("a panicking query", sm.query(PANIC.to_vec())).await;
        assert!(failed.is_err(), "{failed:?}");
    }
    let answer = within("a query after them", sm.query(b"count".to_vec())).await;
    assert_eq!(answer.expect("query"), b"3");
}
