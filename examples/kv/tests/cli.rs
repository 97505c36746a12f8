//! The commands every service binary gets from the runtime, run as `kv`: `cluster up` starts
//! three node processes, `admin status` (table and JSON) and `top --once` read them, `call`
//! writes through them, `call watch --key-prefix` follows the writes under a prefix, and Ctrl-C
//! stops them all.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use runtime::raft::status::NodeStatus;

const EXE: &str = env!("CARGO_BIN_EXE_kv");

/// A `kv cluster up` process; interrupted (then killed, if it must be) when dropped.
struct Up(Child);

impl Up {
    /// Sends SIGINT and waits up to 30 s for the process to exit; whether it exited cleanly.
    fn interrupt(&mut self) -> bool {
        let _ = Command::new("kill")
            .args(["-INT", &self.0.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.0.try_wait() {
                return status.success();
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        false
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        if !matches!(self.0.try_wait(), Ok(Some(_))) && !self.interrupt() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// Runs `kv ARGS` with the cluster's secret; (success, stdout, stderr).
fn kv(secret: &str, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(EXE)
        .args(args)
        .env(runtime::ops::host::SECRET_ENV, secret)
        .output()
        .expect("run kv");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The value of `key=` in `line`.
fn field<'a>(line: &'a str, key: &str) -> &'a str {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(key))
        .unwrap_or_else(|| panic!("no {key} in {line:?}"))
}

#[test]
fn kv_gets_cluster_up_admin_and_top_from_the_runtime() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut up = Up(Command::new(EXE)
        .args(["cluster", "up", "--nodes", "3", "--dir"])
        .arg(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("kv cluster up"));
    let mut lines = BufReader::new(up.0.stdout.take().expect("stdout")).lines();
    let mut secret = String::new();
    let mut nodes = Vec::new();
    while nodes.len() < 3 {
        let line = lines
            .next()
            .expect("cluster up ended before printing three nodes")
            .expect("read cluster up");
        if let Some(s) = line.strip_prefix("secret: ") {
            secret = s.to_string();
        } else if line.starts_with("node ") {
            nodes.push((
                field(&line, "api=").to_string(),
                field(&line, "raft=").to_string(),
            ));
        }
    }
    assert!(!secret.is_empty(), "no secret printed");
    let (api, raft) = nodes[1].clone();

    // The table names one leader among three members, once one is elected.
    let deadline = Instant::now() + Duration::from_secs(60);
    let table = loop {
        let (ok, out, err) = kv(&secret, &["admin", "--connect", &raft, "status"]);
        if ok && out.matches("Leader").count() == 1 && out.matches("Follower").count() == 2 {
            break out;
        }
        assert!(
            Instant::now() < deadline,
            "no leader in the table: {out}{err}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(table.starts_with("id"), "{table}");

    // A write through a follower or the leader, by `kv call`.
    let (ok, out, err) = kv(
        &secret,
        &[
            "call",
            "put",
            "--key",
            "k",
            "--value",
            "v",
            "--connect",
            &api,
        ],
    );
    assert!(ok, "{out}{err}");

    // The JSON report is this node's NodeStatus: three voters, the write applied.
    let (ok, out, err) = kv(&secret, &["admin", "--connect", &raft, "status", "--json"]);
    assert!(ok, "{err}");
    let status: NodeStatus = serde_json::from_str(&out).expect("a NodeStatus");
    assert_eq!(status.members.len(), 3, "{status:?}");
    assert!(
        status.members.keys().all(|id| status.is_voter(*id)),
        "{status:?}"
    );

    // `top --once`: one frame as text, the leader named.
    let (ok, out, err) = kv(&secret, &["top", "--connect", &raft, "--once"]);
    assert!(ok, "{err}");
    assert!(out.contains("leader: node"), "{out}");
    assert_eq!(out.matches("Leader").count(), 1, "{out}");

    // A wrong secret is refused with a clear error, not a hang.
    let (ok, _, err) = kv(
        "not-the-secret-0123456789",
        &["admin", "--connect", &raft, "status"],
    );
    assert!(!ok);
    assert!(err.contains("kv: "), "{err}");

    // `kv call watch --key-prefix`: the puts under a prefix, in order, from the start.
    for key in ["users/1", "orders/1", "users/2"] {
        let (ok, out, err) = kv(
            &secret,
            &[
                "call",
                "put",
                "--key",
                key,
                "--value",
                "x",
                "--connect",
                &api,
            ],
        );
        assert!(ok, "{out}{err}");
    }
    let mut watch = Command::new(EXE)
        .args(["call", "--connect", &api, "--json", "watch", "--from", "1"])
        .args(["--key-prefix", "users/"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("kv call watch");
    let events: Vec<serde_json::Value> = BufReader::new(watch.stdout.take().expect("stdout"))
        .lines()
        .take(2)
        .map(|line| serde_json::from_str(&line.expect("a line")).expect("JSON"))
        .collect();
    let _ = watch.kill();
    let _ = watch.wait();
    let keys: Vec<&str> = events
        .iter()
        .map(|e| e["command"]["key"].as_str().expect("a key"))
        .collect();
    assert_eq!(keys, ["users/1", "users/2"], "{events:?}");
    assert!(events[0]["index"].as_u64() < events[1]["index"].as_u64());

    // Ctrl-C stops the cluster: the process exits cleanly and its nodes are gone.
    assert!(up.interrupt(), "cluster up did not stop cleanly on SIGINT");
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    assert!(rest.iter().any(|l| l == "cluster stopped"), "{rest:?}");
    let (ok, _, _) = kv(&secret, &["admin", "--connect", &raft, "status", "--json"]);
    assert!(!ok, "a node still answers after cluster up stopped");
}
