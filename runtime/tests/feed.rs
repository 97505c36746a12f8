//! The change feed against a state machine in process: a watcher that subscribes while a batch
//! is being applied still gets that batch (no gap), however the batch was started.

mod common;

use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use openraft::entry::RaftEntry;
use openraft::storage::RaftStateMachine;
use openraft::testing::log_id;
use runtime::raft::feed::WatchFilter;
use runtime::raft::state_machine::{Application, StateMachine};
use runtime::raft::types::{Applied, C, Entry, Envelope};
use runtime::rusqlite::Connection;
use runtime::wire::service::ApplyContext;

/// Applies anything; a `hold` command waits, inside its apply, until the test lets it go.
struct Held {
    entered: Mutex<mpsc::Sender<()>>,
    release: Mutex<mpsc::Receiver<()>>,
}

impl Application for Held {
    fn init(&self, _conn: &Connection) -> Result<(), String> {
        Ok(())
    }
    fn apply(
        &self,
        _conn: &Connection,
        _ctx: &ApplyContext,
        cmd: &[u8],
    ) -> Result<Applied, String> {
        if cmd == b"hold" {
            let _ = self.entered.lock().map_err(|e| e.to_string())?.send(());
            let _ = self.release.lock().map_err(|e| e.to_string())?.recv();
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

fn entry(index: u64, command: &[u8]) -> Entry {
    Entry::new_normal(
        log_id::<C>(1, 1, index),
        Envelope {
            client: "c:t".into(),
            seq: index,
            ack: 0,
            time_us: 0,
            command: command.to_vec(),
        },
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watcher_that_subscribes_during_a_batch_gets_that_batch() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (entered_tx, entered) = mpsc::channel();
    let (release, release_rx) = mpsc::channel();
    let app = Arc::new(Held {
        entered: Mutex::new(entered_tx),
        release: Mutex::new(release_rx),
    });
    let sm = StateMachine::open(app, &dir.path().join("state.db"), &dir.path().join("snaps"))
        .expect("state machine");

    // Entry 1 starts applying with nobody watching, and is held inside its apply.
    let mut applying = sm.clone();
    let first = tokio::spawn(async move {
        let entries = futures_util::stream::iter([Ok((entry(1, b"hold"), None))]);
        applying.apply(entries).await.expect("apply 1");
    });
    tokio::task::spawn_blocking(move || entered.recv())
        .await
        .expect("join")
        .expect("entry 1 is being applied");

    // A watcher from index 1 subscribes now and reads the history, which lacks entry 1.
    let mut events = sm.watch(1, WatchFilter::default());
    let nothing_yet = tokio::time::timeout(Duration::from_millis(300), events.next()).await;
    assert!(nothing_yet.is_err(), "an event before entry 1 committed");

    // Entry 1 commits, then entry 2.
    release.send(()).expect("release");
    common::within("entry 1", first).await.expect("join");
    let mut applying = sm.clone();
    let entries = futures_util::stream::iter([Ok((entry(2, b"plain"), None))]);
    applying.apply(entries).await.expect("apply 2");

    let mut indexes = Vec::new();
    for _ in 0..2 {
        let event = common::within("an event", events.next())
            .await
            .expect("the stream goes on")
            .expect("an event");
        indexes.push(event.index);
    }
    assert_eq!(indexes, [1, 2]);
}
