//! The storage quota (`--quota-bytes`) and a full disk. Past the quota a node refuses writes
//! with a typed `NoSpace` on every wire while reads go on, shows its alarm in `admin status` and
//! `/metrics`, and takes writes again by itself once space is freed: by an operator, or by the
//! compaction the alarm starts. A follower whose disk fills stops; the cluster keeps writing, and
//! the follower, restarted once there is space, catches up with a log that was never damaged.

use std::io::{Read as _, Write as _};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use kv_generated::KvApi;
use kv_generated::grpc::GrpcClient;
use runtime::ops::cluster::LocalCluster;
use runtime::{CallError, Failure};
use tokio::sync::Mutex;

const EXE: &str = env!("CARGO_BIN_EXE_kv");

/// The tests in this file start three nodes each: one at a time.
static ONE_AT_A_TIME: Mutex<()> = Mutex::const_new(());

/// The size of every value written: each put adds about this much to every node's log.
const VALUE: usize = 256 << 10;

async fn cluster(dir: &Path, args: &[&str]) -> LocalCluster {
    LocalCluster::start(
        Path::new(EXE),
        dir,
        3,
        args.iter().map(|s| s.to_string()).collect(),
    )
    .await
    .unwrap_or_else(|e| panic!("cluster did not start: {e}"))
}

/// `GET path` on `addr` (plain HTTP/1.0); the body.
fn http_get(addr: &str, path: &str) -> String {
    let mut stream = std::net::TcpStream::connect(addr).expect("connect to the metrics listener");
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").expect("send");
    let mut answer = String::new();
    stream.read_to_string(&mut answer).expect("read");
    answer
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_string())
        .unwrap_or_default()
}

/// Runs `kv ARGS`; (exit code, stdout).
fn kv(args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(EXE).args(args).output().expect("run kv");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// Puts values of [`VALUE`] bytes under `key` until a put is refused with `NoSpace` (any other
/// error fails the test); the number acknowledged and the refusal's message.
async fn put_until_refused(client: &GrpcClient, key: &str, within: Duration) -> (u32, String) {
    let deadline = Instant::now() + within;
    let mut acked = 0u32;
    loop {
        assert!(
            Instant::now() < deadline,
            "{acked} puts of {VALUE} bytes and no NoSpace refusal within {within:?}"
        );
        let value = char::from(b'a' + (acked % 26) as u8)
            .to_string()
            .repeat(VALUE);
        match client.put(key.to_string(), value).await {
            Ok(_) => acked += 1,
            Err(CallError::Failure(Failure::NoSpace(message))) => return (acked, message),
            Err(e) => panic!("put {acked}: expected success or NoSpace, got {e:?}"),
        }
    }
}

/// Puts a small value under `k` until the node takes it again (refused with `NoSpace` until
/// then; any other error fails the test); the revision.
async fn put_once_taken(client: &GrpcClient, within: Duration) -> u64 {
    let deadline = Instant::now() + within;
    loop {
        match client.put("k".into(), "small".into()).await {
            Ok(revision) => return revision,
            Err(CallError::Failure(Failure::NoSpace(_))) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            Err(e) => panic!("writes were not taken again within {within:?}: {e:?}"),
        }
    }
}

/// Ballast an operator can remove: a directory that counts toward the quota (a damaged log
/// moved aside by `repair-log` is one), with `bytes` of real blocks.
fn ballast(data_dir: &Path, bytes: usize) -> std::path::PathBuf {
    let dir = data_dir.join("raft-log.damaged-ballast");
    std::fs::create_dir_all(&dir).expect("ballast dir");
    std::fs::write(dir.join("old.seg"), vec![7u8; bytes]).expect("ballast");
    dir
}

/// The alarm held on by ballast that compaction cannot free: refused on gRPC, JSON-RPC and
/// `call` with their codes, reads served, the alarm in `admin status` and `/metrics`, logged
/// once; the operator removes the ballast and writes are taken again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_quota_writes_are_refused_typed_until_an_operator_frees_space() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let dir = tempfile::tempdir().expect("temp dir");
    // Every node starts with 18 MiB of ballast under a 24 MiB quota; the log keeps what a
    // snapshot holds, so compaction frees nothing.
    let ballasts: Vec<_> = (1..=3)
        .map(|id| ballast(&dir.path().join(format!("node{id}")), 18 << 20))
        .collect();
    let c = cluster(
        dir.path(),
        &[
            "--quota-bytes",
            "24MiB",
            "--log-segment-bytes",
            "1MiB",
            "--keep-logs",
            "100000",
            "--watch-retain",
            "0",
        ],
    )
    .await;
    let leader = c
        .wait_for_leader(Duration::from_secs(60))
        .await
        .expect("leader");
    let node = c.node(leader).expect("leader");
    let (api, jsonrpc, metrics) = (node.api.clone(), node.jsonrpc.clone(), node.metrics.clone());
    let client = GrpcClient::connect(&api).await.expect("connect");
    let (acked, message) = put_until_refused(&client, "k", Duration::from_secs(120)).await;
    assert!(acked > 0, "the first put was refused: {message}");
    assert!(message.contains("--quota-bytes"), "{message}");
    let log_lines = |c: &LocalCluster| {
        std::fs::read_to_string(c.node(leader).expect("leader").log_file())
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("NOSPACE"))
            .count()
    };
    let lines_at_refusal = log_lines(&c);

    // Reads go on, and see the last acknowledged put.
    let entry = client
        .get("k".into())
        .await
        .expect("a read past the quota")
        .expect("the key");
    assert_eq!(entry.value.len(), VALUE);

    // The alarm, seen the three ways an operator looks.
    let status = c.status(leader).await.expect("status");
    assert!(
        status.nospace && status.quota_bytes == Some(24 << 20) && status.storage_bytes >= 24 << 20,
        "{status:?}"
    );
    let text = http_get(&metrics, "/metrics");
    assert!(text.contains("raft_nospace_alarm 1"), "{text}");
    let raft = c.node(leader).expect("leader").raft.clone();
    let table = Command::new(EXE)
        .args(["admin", "--connect", &raft, "status"])
        .env(runtime::ops::host::SECRET_ENV, &c.credentials.secret)
        .output()
        .expect("kv admin status");
    let (code, table) = (
        table.status.code(),
        String::from_utf8_lossy(&table.stdout).into_owned(),
    );
    assert_eq!(code, Some(0), "{table}");
    assert!(table.contains("NOSPACE"), "{table}");

    // The other wires: JSON-RPC's code and `call`'s exit code.
    let (code, out) = kv(&[
        "call",
        "--connect",
        &jsonrpc,
        "--transport",
        "jsonrpc",
        "--json",
        "put",
        "--key",
        "k",
        "--value",
        "v",
    ]);
    assert_eq!(code, Some(5), "{out}");
    let answer: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(answer["error"]["code"], -32053, "{out}");
    assert_eq!(answer["error"]["data"]["kind"], "NoSpace", "{out}");
    let (code, out) = kv(&[
        "call",
        "--connect",
        &api,
        "put",
        "--key",
        "k",
        "--value",
        "v",
    ]);
    assert_eq!(code, Some(5), "{out}");

    // What the alarm costs while it lasts: refused writes log nothing.
    for _ in 0..20 {
        let refused = client.put("k".into(), "v".into()).await;
        assert!(
            matches!(refused, Err(CallError::Failure(Failure::NoSpace(_)))),
            "{refused:?}"
        );
    }
    assert!(
        log_lines(&c) <= lines_at_refusal + 1,
        "the refused writes were logged"
    );

    // The operator frees space: the alarm clears by itself and writes are taken again.
    for b in &ballasts {
        std::fs::remove_dir_all(b).expect("remove the ballast");
    }
    put_once_taken(&client, Duration::from_secs(30)).await;
    let status = c.status(leader).await.expect("status");
    assert!(!status.nospace, "{status:?}");
    assert!(http_get(&metrics, "/metrics").contains("raft_nospace_alarm 0"));
    let replicas = c
        .converged(Duration::from_secs(60))
        .await
        .expect("converged");
    assert!(
        replicas.iter().all(|r| r.2 == replicas[0].2),
        "{replicas:?}"
    );
}

/// No ballast: the log itself fills the quota. The alarm makes the node compact (a snapshot,
/// then the log behind it purged), and writes are taken again without anyone acting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_started_by_the_alarm_frees_the_log_and_writes_resume() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let c = cluster(
        dir.path(),
        &[
            "--quota-bytes",
            "16MiB",
            "--log-segment-bytes",
            "1MiB",
            "--keep-logs",
            "0",
            "--snapshot-every",
            "100000",
            "--watch-retain",
            "0",
        ],
    )
    .await;
    let leader = c
        .wait_for_leader(Duration::from_secs(60))
        .await
        .expect("leader");
    let client = GrpcClient::connect(&c.node(leader).expect("leader").api)
        .await
        .expect("connect");
    let (acked, _) = put_until_refused(&client, "k", Duration::from_secs(120)).await;
    assert!(acked > 0);
    let resumed = put_once_taken(&client, Duration::from_secs(60)).await;
    assert!(resumed > u64::from(acked));
    let status = c.status(leader).await.expect("status");
    assert!(
        status.snapshot_index.is_some() && status.purged_index.is_some(),
        "no compaction: {status:?}"
    );
    assert!(
        status.storage_bytes < 16 << 20 && !status.nospace,
        "{status:?}"
    );
    let log =
        std::fs::read_to_string(c.node(leader).expect("leader").log_file()).unwrap_or_default();
    assert!(log.contains("NOSPACE alarm cleared"), "{log}");
}

/// A tmpfs mounted for a test, unmounted when dropped (after the nodes on it: declare it first).
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    /// Mounts a tmpfs of `size` at `path`, or says why it cannot (not root, no `mount`).
    fn mount(path: &Path, size: &str) -> Result<Tmpfs, String> {
        std::fs::create_dir_all(path).map_err(|e| e.to_string())?;
        let out = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(path)
            .output()
            .map_err(|e| format!("mount: {e}"))?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).trim().to_string());
        }
        Ok(Tmpfs(path.to_path_buf()))
    }

    /// The bytes still free on it.
    fn available(&self) -> u64 {
        let out = Command::new("df")
            .args(["--output=avail", "-B1"])
            .arg(&self.0)
            .output()
            .expect("df");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .nth(1)
            .and_then(|l| l.trim().parse().ok())
            .expect("df's available bytes")
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// A follower's disk fills (a real `ENOSPC` on a tmpfs; root only, skipped with a message
/// elsewhere): the follower stops instead of serving with a log it cannot write, the cluster
/// keeps writing, and once space is freed the restarted follower (its log cut back to what it
/// had synced, never refused) catches up and holds the same state.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_whose_disk_fills_stops_and_catches_up_once_space_is_freed() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let dir = tempfile::tempdir().expect("temp dir");
    // Each node on its own small tmpfs (the leader is known only once they run).
    let mut mounts = Vec::new();
    for id in 1..=3 {
        match Tmpfs::mount(&dir.path().join(format!("node{id}")), "48m") {
            Ok(m) => mounts.push(m),
            Err(why) => {
                eprintln!("skipped: a full disk needs a tmpfs mount (root): {why}");
                return;
            }
        }
    }
    let mut c = cluster(
        dir.path(),
        &[
            "--log-segment-bytes",
            "1MiB",
            "--snapshot-every",
            "100000",
            "--watch-retain",
            "0",
        ],
    )
    .await;
    let leader = c
        .wait_for_leader(Duration::from_secs(60))
        .await
        .expect("leader");
    let follower = c
        .nodes
        .iter()
        .find(|n| n.id != leader)
        .expect("a follower")
        .id;
    let disk = &mounts[usize::try_from(follower - 1).expect("index")];
    // Leave it 3 MiB: a few puts, then a segment or the database cannot grow.
    let filler = disk.0.join("filler");
    let free = disk.available();
    std::fs::write(
        &filler,
        vec![0u8; usize::try_from(free - (3 << 20)).expect("size")],
    )
    .expect("fill the follower's disk");

    let client = GrpcClient::connect(&c.node(leader).expect("leader").api)
        .await
        .expect("connect")
        .retrying(10);
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut acked = 0u32;
    let status = loop {
        let value = char::from(b'a' + (acked % 26) as u8)
            .to_string()
            .repeat(VALUE);
        client
            .put(format!("k{}", acked % 4), value)
            .await
            .unwrap_or_else(|e| panic!("put {acked} while a follower's disk is full: {e}"));
        acked += 1;
        if let Some(status) = c.nodes[usize::try_from(follower - 1).expect("index")].exited() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "node {follower} still runs on a full disk after {acked} puts"
        );
    };
    assert!(!status.success(), "node {follower} exited with {status}");
    eprintln!("node {follower} stopped after {acked} puts: {status}");

    // The cluster goes on writing without it; what that costs the leader in log lines.
    let leader_log = || {
        std::fs::read_to_string(c.node(leader).expect("leader").log_file())
            .unwrap_or_default()
            .lines()
            .count()
    };
    let lines_before = leader_log();
    for i in 0..20 {
        client
            .put(format!("after-{i}"), "x".repeat(1024))
            .await
            .expect("a put with the follower down");
    }
    let logged = leader_log() - lines_before;
    // Repeated lines are said once per 10 s window, not per put.
    assert!(
        logged <= 30,
        "the leader logged {logged} lines for 20 puts with a follower down"
    );

    // Space is freed: restarted, the follower opens its log and catches up.
    std::fs::remove_file(&filler).expect("free the disk");
    c.restart(follower).await.expect("restart the follower");
    let replicas = c
        .converged(Duration::from_secs(120))
        .await
        .expect("converged after the disk was freed");
    assert_eq!(replicas.len(), 3);
    assert!(
        replicas.iter().all(|r| r.2 == replicas[0].2),
        "{replicas:?}"
    );
    drop(c);
}
