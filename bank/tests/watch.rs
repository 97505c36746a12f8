//! The change feed (`watch`) on real `bank node` processes: a watcher on a follower sees every
//! acknowledged write once, in log order, across the SIGKILL of the node it watches; a compacted
//! position is refused with the first available index (gRPC and `bank call watch`); a watcher
//! that never reads is cut off with `too_slow` and costs its node a bounded amount of memory.
//! The tests in this file run one at a time (each starts processes).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bank_generated::grpc::{GrpcClient, pb};
use bank_generated::{AccountType, BankApi, BankCommand, BankEvent};
use futures_util::StreamExt;
use runtime::ops::cluster::{LocalCluster, NodeProcess};
use runtime::raft::feed::{WatchError, WatchFilter};
use rust_decimal::Decimal;

static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const EXE: &str = env!("CARGO_BIN_EXE_bank");

async fn cluster(dir: &Path, n: usize, args: &[&str]) -> LocalCluster {
    LocalCluster::start(
        Path::new(EXE),
        dir,
        n,
        args.iter().map(|s| s.to_string()).collect(),
    )
    .await
    .unwrap_or_else(|e| panic!("cluster did not start: {e}"))
}

/// Waits for `cond` to hold, polling, for at most `timeout`.
async fn wait_until(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A customer with `n` accounts; returns the account ids.
async fn accounts(client: &GrpcClient, n: usize) -> Vec<u64> {
    let customer = client
        .create_customer("Watch".into(), "Test".into(), "1 Road".into())
        .await
        .expect("customer");
    let mut ids = Vec::new();
    for _ in 0..n {
        let a = client
            .create_account(customer.customer_id, AccountType::Checking)
            .await
            .expect("account");
        ids.push(a.account_id);
    }
    ids
}

/// The node's resident memory, in KiB.
fn rss_kib(node: &NodeProcess) -> u64 {
    let pid = node.pid().expect("a running node");
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmRSS")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watcher_sees_every_acknowledged_write_once_across_the_sigkill_of_its_node() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let mut c = cluster(dir.path(), 3, &[]).await;
    let leader = c
        .wait_for_leader(Duration::from_secs(60))
        .await
        .expect("leader");
    let leader_api = c.node(leader).expect("leader").api.clone();
    let followers: Vec<(u64, String)> = c
        .nodes
        .iter()
        .filter(|n| n.id != leader)
        .map(|n| (n.id, n.api.clone()))
        .collect();
    let setup = GrpcClient::connect(&leader_api).await.expect("connect");
    let accounts = accounts(&setup, 3).await;

    // The watcher starts on the first follower and knows the second.
    let seen: Arc<Mutex<Vec<BankEvent>>> = Arc::default();
    let target = runtime::api::watch::WatchTarget::new([&followers[0].1, &followers[1].1]);
    let filter = WatchFilter {
        operations: vec!["deposit".into()],
        ..Default::default()
    };
    let mut events = Box::pin(bank_generated::grpc::watch(target, 1, filter));
    let watcher = {
        let seen = seen.clone();
        tokio::spawn(async move {
            while let Some(item) = events.next().await {
                match item {
                    Ok(event) => seen.lock().expect("lock").push(event),
                    Err(e) => return Some(e),
                }
            }
            None
        })
    };

    // Three writers on the leader, each deposit an amount no other write uses.
    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for w in 0..3i64 {
        let (addr, stop, account) = (leader_api.clone(), stop.clone(), accounts[w as usize]);
        writers.push(tokio::spawn(async move {
            let client = GrpcClient::connect(&addr).await.expect("connect");
            let mut acked = Vec::new();
            let mut i = 0i64;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                let amount = Decimal::new(w * 1_000_000 + i, 2);
                client.deposit(account, amount).await.expect("deposit");
                acked.push((account, amount));
            }
            acked
        }));
    }
    wait_until(
        "the watcher's first events",
        Duration::from_secs(60),
        || seen.lock().expect("lock").len() >= 20,
    )
    .await;
    let before_kill = seen.lock().expect("lock").len();
    c.kill(followers[0].0).expect("kill the watched follower");
    let killed_at = Instant::now();
    wait_until(
        "events after the kill (resumed on the other follower)",
        Duration::from_secs(60),
        || seen.lock().expect("lock").len() >= before_kill + 50,
    )
    .await;
    let resumed_after = killed_at.elapsed();
    stop.store(true, Ordering::Relaxed);
    let mut acked = Vec::new();
    for w in writers {
        acked.extend(w.await.expect("writer"));
    }

    // Every acknowledged deposit arrives.
    let wanted = acked.len();
    wait_until("every acknowledged write", Duration::from_secs(60), || {
        let seen = seen.lock().expect("lock");
        seen.iter()
            .filter(|e| matches!(e.command, BankCommand::Deposit { .. }))
            .count()
            >= wanted
    })
    .await;
    watcher.abort();
    let seen = seen.lock().expect("lock").clone();
    for pair in seen.windows(2) {
        assert!(
            pair[0].index < pair[1].index,
            "events out of order or repeated: {} then {}",
            pair[0].index,
            pair[1].index
        );
    }
    let mut count: BTreeMap<(u64, Decimal), usize> = BTreeMap::new();
    for event in &seen {
        let BankCommand::Deposit { account_id, amount } = event.command else {
            panic!("the filter let through {:?}", event.command);
        };
        assert!(event.reply.is_ok(), "a deposit was refused: {event:?}");
        *count.entry((account_id, amount)).or_default() += 1;
    }
    for write in &acked {
        assert_eq!(
            count.get(write).copied(),
            Some(1),
            "acknowledged deposit {write:?} seen {:?} times",
            count.get(write)
        );
    }
    // What the fault cost the watcher: the time from the kill to 50 more events.
    eprintln!(
        "{} acknowledged deposits, {} events; 50 events after the kill within {resumed_after:?}",
        acked.len(),
        seen.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compacted_position_is_refused_with_the_first_available_index() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let c = cluster(dir.path(), 1, &["--watch-retain", "8"]).await;
    c.wait_for_leader(Duration::from_secs(60))
        .await
        .expect("leader");
    let api = c.nodes[0].api.clone();
    let client = GrpcClient::connect(&api).await.expect("connect");
    let account = accounts(&client, 1).await[0];
    for i in 1..=40 {
        client
            .deposit(account, Decimal::new(i, 0))
            .await
            .expect("deposit");
    }

    // The Rust client: the error, and nothing else.
    let mut events = Box::pin(bank_generated::grpc::watch(
        runtime::api::watch::WatchTarget::new([&api]),
        1,
        WatchFilter::default(),
    ));
    let first_available = match events.next().await {
        Some(Err(WatchError::Compacted { first_available })) => first_available,
        other => panic!("expected Compacted, got {other:?}"),
    };
    assert!(first_available > 1, "first available {first_available}");
    assert!(
        events.next().await.is_none(),
        "the watch goes on after Compacted"
    );

    // From there, the history is whole: the last deposits, in order, up to the 40th.
    let mut events = Box::pin(bank_generated::grpc::watch(
        runtime::api::watch::WatchTarget::new([&api]),
        first_available,
        WatchFilter {
            key: Some(account.to_string()),
            ..Default::default()
        },
    ));
    let mut last_amount = Decimal::ZERO;
    let mut next_index = first_available;
    while last_amount != Decimal::new(40, 0) {
        let event = tokio::time::timeout(Duration::from_secs(30), events.next())
            .await
            .expect("an event in time")
            .expect("the stream goes on")
            .expect("an event");
        assert!(event.index >= next_index, "index {} went back", event.index);
        next_index = event.index + 1;
        let BankCommand::Deposit { amount, .. } = event.command else {
            panic!("the key filter let through {:?}", event.command);
        };
        last_amount = amount;
    }

    // The CLI says the same, with a failure exit code.
    let out = Command::new(EXE)
        .args(["call", "--connect", &api, "watch", "--from", "1"])
        .output()
        .expect("bank call watch");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "exit status {:?}", out.status);
    assert!(
        stderr.contains("compacted away; watch from there")
            && stderr.contains(&first_available.to_string()),
        "stderr: {stderr}"
    );
    // And prints one JSON line per event from a position it still has.
    let mut child = Command::new(EXE)
        .args(["call", "--connect", &api, "--json", "watch"])
        .args([
            "--from",
            &first_available.to_string(),
            "--operation",
            "deposit",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("bank call watch");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("a line");
    let _ = child.kill();
    let _ = child.wait();
    let json: serde_json::Value = serde_json::from_str(&line).expect("JSON");
    assert_eq!(json["operation"], "deposit", "{line}");
    assert!(
        json["index"].as_u64().is_some_and(|i| i >= first_available),
        "{line}"
    );
    assert_eq!(json["command"]["account_id"], account, "{line}");
    assert!(json["reply"]["ok"].is_string(), "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watcher_that_never_reads_is_cut_off_and_holds_bounded_memory() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let c = cluster(dir.path(), 1, &["--watch-stall-ms", "1000"]).await;
    c.wait_for_leader(Duration::from_secs(60))
        .await
        .expect("leader");
    let node = &c.nodes[0];
    let api = node.api.clone();
    let client = GrpcClient::connect(&api).await.expect("connect");
    let ids = accounts(&client, 8).await;
    let writes = |n: usize| {
        let (api, ids) = (api.clone(), ids.clone());
        async move {
            let mut tasks = Vec::new();
            for w in 0..16 {
                let (api, ids) = (api.clone(), ids.clone());
                tasks.push(tokio::spawn(async move {
                    let client = GrpcClient::connect(&api).await.expect("connect");
                    for i in 0..n / 16 {
                        client
                            .deposit(ids[(w + i) % ids.len()], Decimal::new(1, 2))
                            .await
                            .expect("deposit");
                    }
                }));
            }
            for t in tasks {
                t.await.expect("writer");
            }
        }
    };
    // Warm up (caches, pools) before the baseline.
    writes(2_000).await;
    let baseline = rss_kib(node);

    // A watcher from the start that never reads, with HTTP/2's smallest windows (64 KiB), so
    // its transport holds little and the node's buffer fills.
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{api}"))
        .expect("endpoint")
        .initial_stream_window_size(65_535)
        .initial_connection_window_size(65_535)
        .connect()
        .await
        .expect("connect");
    let mut stream = pb::bank_watch_client::BankWatchClient::new(channel)
        .watch(pb::BankWatchRequest {
            from_index: 1,
            ..Default::default()
        })
        .await
        .expect("watch")
        .into_inner();
    let started = Instant::now();
    writes(6_000).await;
    let write_time = started.elapsed();
    let log = node.log_file();
    wait_until(
        "the cut-off in the node's log",
        Duration::from_secs(60),
        || std::fs::read_to_string(&log).is_ok_and(|l| l.contains("cut off")),
    )
    .await;
    let grown = rss_kib(node).saturating_sub(baseline);
    eprintln!(
        "6,000 writes with a stalled watcher in {write_time:?}; the node's RSS grew {grown} KiB"
    );
    // The bound: 1,024 buffered events (~300 bytes each here) and one HTTP/2 stream window,
    // well under 16 MiB; the same writes without the watcher grow it by little (warm caches).
    assert!(grown < 16 * 1024, "RSS grew {grown} KiB");

    // What it holds arrives, then the typed error.
    let mut received = 0usize;
    let status = loop {
        match tokio::time::timeout(Duration::from_secs(30), stream.message()).await {
            Ok(Ok(Some(_))) => received += 1,
            Ok(Ok(None)) => panic!("the stream ended without an error after {received} events"),
            Ok(Err(status)) => break status,
            Err(_) => panic!("no end after {received} events"),
        }
    };
    assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
    assert!(
        matches!(
            runtime::api::watch::watch_error_from_status(&status),
            WatchError::TooSlow { .. }
        ),
        "{status:?}"
    );
    assert!(
        received > 0 && received < 8_000,
        "{received} events before the cut-off"
    );
}

/// A JSON-RPC WebSocket connection (soketto over tokio): send a text message, read the next one.
struct Ws {
    sender: soketto::connection::Sender<tokio_util::compat::Compat<tokio::net::TcpStream>>,
    receiver: soketto::connection::Receiver<tokio_util::compat::Compat<tokio::net::TcpStream>>,
}

impl Ws {
    async fn connect(addr: &str) -> Ws {
        use tokio_util::compat::TokioAsyncReadCompatExt as _;
        let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let mut client = soketto::handshake::Client::new(tcp.compat(), addr, "/");
        match client.handshake().await.expect("handshake") {
            soketto::handshake::ServerResponse::Accepted { .. } => {}
            other => panic!("WebSocket refused: {other:?}"),
        }
        let (sender, receiver) = client.into_builder().finish();
        Ws { sender, receiver }
    }

    async fn send(&mut self, json: serde_json::Value) {
        self.sender.send_text(json.to_string()).await.expect("send");
        self.sender.flush().await.expect("flush");
    }

    async fn next(&mut self) -> serde_json::Value {
        let mut data = Vec::new();
        tokio::time::timeout(
            Duration::from_secs(30),
            self.receiver.receive_data(&mut data),
        )
        .await
        .expect("a message in time")
        .expect("a message");
        serde_json::from_slice(&data).expect("JSON")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jsonrpc_subscribers_get_the_same_events_over_websocket() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let c = cluster(dir.path(), 1, &["--watch-retain", "8"]).await;
    c.wait_for_leader(Duration::from_secs(60))
        .await
        .expect("leader");
    let node = &c.nodes[0];
    let client = GrpcClient::connect(&node.api).await.expect("connect");
    let account = accounts(&client, 1).await[0];

    // Live: subscribed from the next command, then three deposits.
    let mut ws = Ws::connect(&node.jsonrpc).await;
    ws.send(serde_json::json!({
        "jsonrpc": "2.0", "id": 1, "method": "rpc.watch",
        "params": { "operations": ["deposit"], "key": account.to_string() },
    }))
    .await;
    let subscribed = ws.next().await;
    let subscription = subscribed["result"].clone();
    assert!(!subscription.is_null(), "{subscribed}");
    let mut balances = Vec::new();
    for cents in [150, 275, 300] {
        balances.push(
            client
                .deposit(account, Decimal::new(cents, 2))
                .await
                .expect("deposit"),
        );
    }
    let mut last = 0;
    for (cents, balance) in [150, 275, 300].into_iter().zip(balances) {
        let note = ws.next().await;
        assert_eq!(note["method"], "rpc.event", "{note}");
        assert_eq!(note["params"]["subscription"], subscription, "{note}");
        let event = &note["params"]["result"];
        let index = event["index"].as_u64().expect("index");
        assert!(index > last, "{note}");
        last = index;
        assert_eq!(event["operation"], "deposit", "{note}");
        assert_eq!(event["command"]["account_id"], account, "{note}");
        assert_eq!(
            event["command"]["amount"],
            Decimal::new(cents, 2).to_string(),
            "{note}"
        );
        assert_eq!(event["reply"]["ok"], balance.to_string(), "{note}");
    }

    // A filter naming no command is refused as invalid params.
    let mut ws = Ws::connect(&node.jsonrpc).await;
    ws.send(serde_json::json!({
        "jsonrpc": "2.0", "id": 2, "method": "rpc.watch", "params": { "operations": ["nope"] },
    }))
    .await;
    let refused = ws.next().await;
    assert_eq!(refused["error"]["code"], -32602, "{refused}");

    // After the history moved on, position 1 is gone: the subscription closes with the error.
    for _ in 0..20 {
        client
            .deposit(account, Decimal::new(1, 0))
            .await
            .expect("deposit");
    }
    ws.send(serde_json::json!({
        "jsonrpc": "2.0", "id": 3, "method": "rpc.watch", "params": { "from": 1 },
    }))
    .await;
    let subscribed = ws.next().await;
    assert!(!subscribed["result"].is_null(), "{subscribed}");
    let closed = ws.next().await;
    assert_eq!(closed["params"]["error"]["kind"], "compacted", "{closed}");
    assert!(
        closed["params"]["error"]["first_available"]
            .as_u64()
            .is_some_and(|f| f > 1),
        "{closed}"
    );
}

/// A watch stream never ends by itself: a node asked to stop ends its watches (`stopped`, so
/// clients resume elsewhere) and drains, instead of waiting out its grace period on them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_stops_ends_its_watches_and_drains() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let mut c = cluster(dir.path(), 1, &[]).await;
    c.wait_for_leader(Duration::from_secs(60))
        .await
        .expect("leader");
    let api = c.nodes[0].api.clone();
    let client = GrpcClient::connect(&api).await.expect("connect");
    let account = accounts(&client, 1).await[0];
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{api}"))
        .expect("endpoint")
        .connect()
        .await
        .expect("connect");
    let mut stream = pb::bank_watch_client::BankWatchClient::new(channel)
        .watch(pb::BankWatchRequest::default())
        .await
        .expect("watch")
        .into_inner();
    client
        .deposit(account, Decimal::new(1, 0))
        .await
        .expect("deposit");
    let first = tokio::time::timeout(Duration::from_secs(30), stream.message())
        .await
        .expect("an event in time")
        .expect("an event")
        .expect("the stream goes on");
    assert_eq!(first.operation, "deposit");

    let pid = c.nodes[0].pid().expect("running");
    let status = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let ended = tokio::time::timeout(Duration::from_secs(30), stream.message())
        .await
        .expect("the watch ends in time");
    let status = ended.expect_err("the watch ends with a status");
    assert!(
        matches!(
            runtime::api::watch::watch_error_from_status(&status),
            WatchError::Stopped
        ),
        "{status:?}"
    );
    let node = &mut c.nodes[0];
    wait_until("the node to exit", Duration::from_secs(30), || {
        node.exited().is_some()
    })
    .await;
    let log = std::fs::read_to_string(node.log_file()).expect("node log");
    assert!(!log.contains("did not drain"), "{log}");
}

/// A follower that installs a snapshot while watched: the watcher re-reads the history that came
/// with the snapshot and goes on, with no gap and no duplicate. (The leader drops its snapshot
/// chunks until the watcher is following, so the install happens under it.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watcher_goes_on_across_a_snapshot_install_under_it() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let mut c = cluster(dir.path(), 3, &["--keep-logs", "0"]).await;
    let leader = c
        .wait_for_leader(Duration::from_secs(60))
        .await
        .expect("leader");
    let leader_node = c.node(leader).expect("leader");
    let (leader_api, leader_raft) = (leader_node.api.clone(), leader_node.raft.clone());
    let follower = c
        .nodes
        .iter()
        .find(|n| n.id != leader)
        .expect("a follower")
        .id;
    let client = GrpcClient::connect(&leader_api).await.expect("connect");
    let account = accounts(&client, 1).await[0];
    let mut acked = Vec::new();
    let deposit = async |cents: i64, acked: &mut Vec<Decimal>| {
        let amount = Decimal::new(cents, 2);
        client.deposit(account, amount).await.expect("deposit");
        acked.push(amount);
    };
    for cents in 1..=10 {
        deposit(cents, &mut acked).await;
    }
    c.wait_caught_up(Duration::from_secs(60))
        .await
        .expect("caught up");

    // The follower misses 200 deposits that the leader then snapshots and purges.
    c.kill(follower).expect("kill");
    for cents in 11..=210 {
        deposit(cents, &mut acked).await;
    }
    runtime::ops::admin::admin(
        &leader_raft,
        &c.credentials,
        runtime::raft::network::AdminRequest::Snapshot,
    )
    .await
    .expect("snapshot");
    c.wait_purged(leader, Duration::from_secs(60))
        .await
        .expect("the leader purges its log");
    c.set_failpoint(leader, "snapshot::drop_chunk", "return")
        .await
        .expect("failpoint");
    c.restart(follower).await.expect("restart");

    // A watcher on the follower delivers the follower's own history, then waits.
    let seen: Arc<Mutex<Vec<BankEvent>>> = Arc::default();
    let target = runtime::api::watch::WatchTarget::new([&c.node(follower).expect("f").api]);
    let filter = WatchFilter {
        operations: vec!["deposit".into()],
        ..Default::default()
    };
    let mut events = Box::pin(bank_generated::grpc::watch(target, 1, filter));
    let watcher = {
        let seen = seen.clone();
        tokio::spawn(async move {
            while let Some(item) = events.next().await {
                match item {
                    Ok(event) => seen.lock().expect("lock").push(event),
                    Err(e) => return Some(e),
                }
            }
            None
        })
    };
    wait_until(
        "the follower's own history",
        Duration::from_secs(60),
        || seen.lock().expect("lock").len() >= 10,
    )
    .await;

    // Now the install goes through, under the watcher; then more writes.
    c.set_failpoint(leader, "snapshot::drop_chunk", "off")
        .await
        .expect("failpoint off");
    for cents in 211..=230 {
        deposit(cents, &mut acked).await;
    }
    wait_until("every deposit", Duration::from_secs(90), || {
        seen.lock().expect("lock").len() >= acked.len()
    })
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    watcher.abort();
    let seen = seen.lock().expect("lock").clone();
    let amounts: Vec<Decimal> = seen
        .iter()
        .map(|e| match e.command {
            BankCommand::Deposit { amount, .. } => amount,
            ref other => panic!("the filter let through {other:?}"),
        })
        .collect();
    assert_eq!(
        amounts, acked,
        "the watcher's deposits are not the acknowledged ones, once each, in order"
    );
    assert!(seen.windows(2).all(|w| w[0].index < w[1].index));
    let log = std::fs::read_to_string(c.node(follower).expect("f").log_file()).expect("log");
    assert!(
        log.contains("snapshot"),
        "the follower installed no snapshot:\n{log}"
    );
}

/// 2,000 gRPC watchers that never read, over connections of 16 streams each, and a WebSocket
/// asking for 20 subscriptions: the WebSocket gets 16 (the connection's cap, -32006 after), the
/// node serves 300 watchers in all (`--max-watchers`) and refuses every other one at once with
/// `RESOURCE_EXHAUSTED` / `too_many`, counted; its memory stays bounded, and writes go on while
/// the watchers hold their full buffers (64 KiB each).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watchers_are_capped_per_node_and_per_connection_and_hold_bounded_bytes() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let c = cluster(
        dir.path(),
        1,
        &[
            "--max-watchers",
            "300",
            "--max-streams-per-connection",
            "16",
            "--watch-buffer-bytes",
            "64KiB",
            "--watch-stall-ms",
            "600000",
        ],
    )
    .await;
    c.wait_for_leader(Duration::from_secs(60))
        .await
        .expect("leader");
    let node = &c.nodes[0];
    let client = GrpcClient::connect(&node.api).await.expect("connect");
    let ids = accounts(&client, 4).await;
    let baseline = rss_kib(node);

    // One WebSocket: 16 subscriptions, then refusals.
    let mut ws = Ws::connect(&node.jsonrpc).await;
    for id in 1..=20 {
        ws.send(serde_json::json!({ "jsonrpc": "2.0", "id": id, "method": "rpc.watch" }))
            .await;
        let answer = ws.next().await;
        if id <= 16 {
            assert!(!answer["result"].is_null(), "subscription {id}: {answer}");
        } else {
            assert_eq!(
                answer["error"]["code"], -32006,
                "subscription {id}: {answer}"
            );
        }
    }

    // 2,000 gRPC watches, 16 per connection.
    let mut held = Vec::new();
    let mut refused = 0u32;
    for _ in 0..125 {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", node.api))
            .expect("endpoint")
            .connect()
            .await
            .expect("connect");
        for _ in 0..16 {
            let mut watcher = pb::bank_watch_client::BankWatchClient::new(channel.clone());
            let watch = watcher.watch(pb::BankWatchRequest::default());
            match tokio::time::timeout(Duration::from_secs(30), watch).await {
                Ok(Ok(stream)) => held.push(stream.into_inner()),
                Ok(Err(status)) => {
                    assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
                    assert!(
                        matches!(
                            runtime::api::watch::watch_error_from_status(&status),
                            WatchError::TooMany { .. }
                        ),
                        "{status:?}"
                    );
                    refused += 1;
                }
                Err(_) => panic!("a watch neither started nor was refused within 30 s"),
            }
        }
    }
    assert_eq!(
        held.len(),
        300 - 16,
        "the node's cap counts the WebSocket's 16"
    );
    assert_eq!(refused, 2_000 - 284);
    let status = c.status(1).await.expect("status");
    assert_eq!((status.watchers, status.watchers_refused), (300, 1_716));

    // Writes go on while 300 watchers that never read fill their buffers.
    let started = Instant::now();
    for i in 0..1_000 {
        client
            .deposit(ids[i % ids.len()], Decimal::new(1, 2))
            .await
            .expect("a deposit with 300 stalled watchers");
    }
    let grown = rss_kib(node).saturating_sub(baseline);
    eprintln!(
        "1,000 deposits with 300 stalled watchers in {:?}; RSS grew {grown} KiB",
        started.elapsed()
    );
    // At most 300 buffers of 64 KiB (19 MiB) and their HTTP/2 stream windows, the tasks and
    // connections: under 48 MiB (8 MiB measured). Buffers counted in events only (1,024 of
    // ~300 bytes each) would hold 90 MiB.
    assert!(grown < 48 * 1024, "RSS grew {grown} KiB");
    drop(held);
}

/// Two WebSockets whose clients ping the node every 200 ms (so bytes move both ways and the
/// byte-level idle timeout never fires): the one that makes no call and holds no watch is
/// closed after the idle timeout (2 s here); the one that holds a watch stays open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_that_answers_pings_but_does_nothing_is_closed_and_a_watching_one_stays() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let c = cluster(dir.path(), 1, &["--idle-timeout-secs", "2"]).await;
    c.wait_for_leader(Duration::from_secs(60))
        .await
        .expect("leader");
    let node = &c.nodes[0];
    let mut watching = Ws::connect(&node.jsonrpc).await;
    watching
        .send(serde_json::json!({ "jsonrpc": "2.0", "id": 1, "method": "rpc.watch" }))
        .await;
    let subscribed = watching.next().await;
    assert!(!subscribed["result"].is_null(), "{subscribed}");
    // Taken before the connection: the node counts its idle time from its accept.
    let started = Instant::now();
    let idle = Ws::connect(&node.jsonrpc).await;

    // Each connection: a reader that reports when the node closes it, and a pinger.
    let mut closed_after = Vec::new();
    for ws in [idle, watching] {
        let Ws {
            mut sender,
            mut receiver,
        } = ws;
        let (tx, rx) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            let mut data = Vec::new();
            while receiver.receive_data(&mut data).await.is_ok() {
                data.clear();
            }
            let _ = tx.send(started.elapsed());
        });
        tokio::spawn(async move {
            let ping = || soketto::data::ByteSlice125::try_from(&b"ping"[..]).expect("ping");
            while sender.send_ping(ping()).await.is_ok() && sender.flush().await.is_ok() {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        });
        closed_after.push(rx);
    }
    let watching_closed = closed_after.pop().expect("watching");
    let idle_closed = closed_after.pop().expect("idle");
    let idle_after = tokio::time::timeout(Duration::from_secs(30), idle_closed)
        .await
        .expect("the idle WebSocket was not closed within 30 s")
        .expect("its reader");
    assert!(
        idle_after >= Duration::from_secs(2),
        "closed before the idle timeout: {idle_after:?}"
    );
    // The watching one outlives the idle one by more than an idle timeout.
    let outlived = tokio::time::timeout(Duration::from_secs(4), watching_closed).await;
    assert!(
        outlived.is_err(),
        "the WebSocket holding a watch was closed: {outlived:?}"
    );
}
