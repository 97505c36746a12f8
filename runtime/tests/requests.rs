//! Exactly-once in the state machine: request records expire by log position, never by a
//! leader's clock. (A request id reused with another command: `bank/tests/cluster.rs`.)

mod common;

use std::sync::Arc;

use common::{Rows, open_rows};
use openraft::entry::RaftEntry;
use openraft::storage::RaftStateMachine;
use openraft::testing::log_id;
use runtime::raft::state_machine::StateMachine;
use runtime::raft::types::{C, Entry, Envelope};

const HOUR_US: i64 = 3_600_000_000;

fn entry(index: u64, client: &str, seq: u64, time_us: i64, command: &[u8]) -> Entry {
    Entry::new_normal(
        log_id::<C>(1, 1, index),
        Envelope {
            client: client.into(),
            seq,
            ack: 0,
            time_us,
            command: command.to_vec(),
        },
    )
}

async fn apply(sm: &mut StateMachine, entries: Vec<Entry>) {
    let stream = futures_util::stream::iter(entries.into_iter().map(|e| Ok((e, None))));
    sm.apply(stream).await.expect("apply");
}

/// How many commands the application has applied.
async fn applied(sm: &StateMachine) -> String {
    sm.digest().await.expect("digest").0
}

#[tokio::test]
async fn a_leader_clock_hours_ahead_does_not_expire_a_request_record() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut sm = open_rows(dir.path());
    let t = 1_800_000_000_000_000;
    apply(&mut sm, vec![entry(1, "c:a", 1, t, b"deposit 1")]).await;
    // A new leader whose clock runs two hours ahead stamps the next entries.
    apply(
        &mut sm,
        vec![
            entry(2, "c:b", 1, t + 2 * HOUR_US, b"deposit 2"),
            // The first request's resend, carried by that leader: answered, not applied.
            entry(3, "c:a", 1, t + 2 * HOUR_US, b"deposit 1"),
        ],
    )
    .await;
    assert_eq!(
        applied(&sm).await,
        "2",
        "a resend was applied a second time"
    );
}

/// Every batch is applied on the state machine's one thread (`state-machine`), not on whichever
/// thread of a blocking pool is free: no thread is started or woken per batch but that one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_batch_is_applied_on_the_state_machines_one_thread() {
    use runtime::raft::state_machine::Application;
    use runtime::raft::types::Applied;
    use runtime::rusqlite::Connection;
    use std::sync::Mutex;

    /// Records the thread of every apply.
    #[derive(Default)]
    struct Threads(Mutex<Vec<(std::thread::ThreadId, Option<String>)>>);
    impl Application for Threads {
        fn init(&self, _conn: &Connection) -> Result<(), String> {
            Ok(())
        }
        fn apply(
            &self,
            _conn: &Connection,
            _ctx: &runtime::wire::service::ApplyContext,
            _command: &[u8],
        ) -> Result<Applied, String> {
            let me = std::thread::current();
            if let Ok(mut seen) = self.0.lock() {
                seen.push((me.id(), me.name().map(str::to_owned)));
            }
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

    let dir = tempfile::tempdir().expect("tempdir");
    let app = Arc::new(Threads::default());
    let mut sm = StateMachine::open(
        app.clone(),
        &dir.path().join("state.db"),
        &dir.path().join("snapshots"),
    )
    .expect("state machine");
    for batch in 0..20u64 {
        let entries = (1..=4)
            .map(|i| entry(batch * 4 + i, "c:t", batch * 4 + i, 0, b"x"))
            .collect();
        apply(&mut sm, entries).await;
    }
    let seen = app.0.lock().expect("threads").clone();
    assert_eq!(seen.len(), 80);
    let first = &seen[0];
    assert_eq!(first.1.as_deref(), Some("state-machine"), "{seen:?}");
    assert!(
        seen.iter().all(|t| t.0 == first.0),
        "applied on several threads: {seen:?}"
    );
}

/// A replica that saw a client before it installed a snapshot still answers that client's
/// resends from the installed records: what it remembered of the client's sequence numbers is
/// dropped with the database it was about.
#[tokio::test]
async fn a_resend_after_a_snapshot_install_is_answered_from_the_installed_records() {
    use openraft::storage::{RaftSnapshotBuilder, RaftStateMachine as _};
    let dir = tempfile::tempdir().expect("tempdir");
    let open = |name: &str| {
        StateMachine::open(
            Arc::new(Rows),
            &dir.path().join(format!("{name}.db")),
            &dir.path().join(format!("{name}-snapshots")),
        )
        .expect("state machine")
    };
    let t = 1_800_000_000_000_000;
    // The leader applied the client's requests 1 to 5.
    let mut leader = open("leader");
    let sent: Vec<Entry> = (1..=5)
        .map(|seq| entry(seq, "c:a", seq, t, b"deposit 1"))
        .collect();
    apply(&mut leader, sent).await;
    let snapshot = leader.build_snapshot().await.expect("build snapshot");

    // The follower had applied only the first before it fell behind.
    let mut follower = open("follower");
    apply(&mut follower, vec![entry(1, "c:a", 1, t, b"deposit 1")]).await;
    follower
        .install_snapshot(&snapshot.meta, snapshot.snapshot)
        .await
        .expect("install");
    assert_eq!(applied(&follower).await, "5");

    // The resend of request 5 is answered, not applied a sixth time.
    apply(&mut follower, vec![entry(6, "c:a", 5, t, b"deposit 1")]).await;
    assert_eq!(
        applied(&follower).await,
        "5",
        "a resend was applied a second time"
    );
}

/// A database from before the request tables were `WITHOUT ROWID` is rebuilt when opened: the
/// tables change layout, their records stay, and a resend is still answered from its record.
#[tokio::test]
async fn request_tables_of_an_older_database_are_rebuilt_with_their_records() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("state.db");
    {
        let mut sm = StateMachine::open(Arc::new(Rows), &db, &dir.path().join("snapshots"))
            .expect("state machine");
        apply(&mut sm, vec![entry(1, "c:a", 1, 0, b"deposit 1")]).await;
    }
    // Back to the old layout: the same rows in rowid tables.
    {
        let conn = runtime::rusqlite::Connection::open(&db).expect("open");
        conn.execute_batch(
            "ALTER TABLE _raft_requests RENAME TO r; DROP INDEX _raft_requests_by_index;
             CREATE TABLE _raft_requests (client TEXT NOT NULL, seq INTEGER NOT NULL,
                 command_hash BLOB, ok INTEGER NOT NULL, reply BLOB NOT NULL,
                 log_index INTEGER NOT NULL, PRIMARY KEY (client, seq));
             CREATE INDEX _raft_requests_by_index ON _raft_requests (log_index);
             INSERT INTO _raft_requests SELECT * FROM r; DROP TABLE r;
             ALTER TABLE _raft_clients RENAME TO c; DROP INDEX _raft_clients_by_index;
             CREATE TABLE _raft_clients (client TEXT PRIMARY KEY, acked INTEGER NOT NULL,
                 log_index INTEGER NOT NULL);
             CREATE INDEX _raft_clients_by_index ON _raft_clients (log_index);
             INSERT INTO _raft_clients SELECT * FROM c; DROP TABLE c;",
        )
        .expect("old layout");
    }
    let layout = |db: &std::path::Path| -> Vec<(String, bool)> {
        let conn = runtime::rusqlite::Connection::open(db).expect("open");
        let mut stmt = conn
            .prepare(
                "SELECT name, sql FROM sqlite_master WHERE name IN \
                 ('_raft_requests', '_raft_clients', '_raft_requests_by_index', \
                  '_raft_clients_by_index') ORDER BY name",
            )
            .expect("prepare");
        stmt.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?.contains("WITHOUT ROWID"),
            ))
        })
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("rows")
    };
    assert!(layout(&db).iter().all(|(_, clustered)| !clustered));

    let mut sm = StateMachine::open(Arc::new(Rows), &db, &dir.path().join("snapshots"))
        .expect("state machine");
    assert_eq!(
        layout(&db),
        [
            ("_raft_clients".to_string(), true),
            ("_raft_clients_by_index".to_string(), false),
            ("_raft_requests".to_string(), true),
            ("_raft_requests_by_index".to_string(), false),
        ]
    );
    // The record came along: the resend is answered from it, not applied again.
    let before = applied(&sm).await;
    apply(&mut sm, vec![entry(2, "c:a", 1, 0, b"deposit 1")]).await;
    assert_eq!(applied(&sm).await, before);
}

/// A client's watermark that expired is gone for a replica that remembers it too: a late copy
/// of an acknowledged request is then treated as the database says (applied, as on a replica
/// that just started), not refused by what apply remembered of the client.
#[tokio::test]
async fn an_expired_watermark_is_forgotten_by_apply_as_well() {
    use runtime::raft::state_machine::REQUEST_TTL_ENTRIES;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut sm = open_rows(dir.path());
    let acking = |index: u64, seq: u64, ack: u64| {
        let mut e = entry(index, "c:a", seq, 0, b"deposit 1");
        if let openraft::EntryPayload::Normal(env) = &mut e.payload {
            env.ack = ack;
        }
        e
    };
    // Request 2 acknowledges request 1: its watermark is 2.
    apply(&mut sm, vec![acking(1, 1, 0), acking(2, 2, 2)]).await;
    // While the watermark lasts, a late copy of request 1 is refused.
    apply(&mut sm, vec![acking(3, 1, 0)]).await;
    assert_eq!(applied(&sm).await, "2");
    // Far later (the log's positions need not be dense here), the watermark expires with the
    // client's record at the first expiry position past its lifetime.
    let expiry = (REQUEST_TTL_ENTRIES / 1024 + 2) * 1024;
    apply(&mut sm, vec![entry(expiry, "c:b", 1, 0, b"deposit 1")]).await;
    assert_eq!(applied(&sm).await, "3");
    // A late copy of request 1 now: no record, no watermark, so it is applied, as on a
    // replica that reads the client afresh.
    apply(&mut sm, vec![acking(expiry + 1, 1, 0)]).await;
    assert_eq!(
        applied(&sm).await,
        "4",
        "refused by a watermark the database no longer has"
    );
}
