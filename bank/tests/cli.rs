//! The `bank` binary as a user runs it: failures that must say what went wrong (address in use,
//! nothing listening, unknown variant, missing `--connect`) and one end-to-end run with a server
//! and a validator in two separate processes.
//!
//! Every child process is owned by a [`Child`] guard that kills and reaps it on drop, so a failing
//! assertion never leaves a server running.

use std::io::{BufRead, BufReader, Read};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

/// How long any one process may take before the test gives up on it.
const DEADLINE: Duration = Duration::from_secs(60);

fn bank() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_bank"));
    cmd.env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

/// A child process that is killed and waited for when dropped.
struct Child {
    child: std::process::Child,
    what: String,
}

impl Child {
    fn spawn(mut cmd: Command, what: &str) -> Child {
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start `{what}`: {e}"));
        Child {
            child,
            what: what.to_string(),
        }
    }

    /// The first line the process prints on stdout (a node's ready line), waited for up to
    /// `DEADLINE`.
    fn ready_line(&mut self) -> String {
        let stdout = self.child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        rx.recv_timeout(DEADLINE)
            .unwrap_or_else(|e| panic!("no line from `{}` ({e})", self.what))
    }

    /// Waits (polling, up to `DEADLINE`) for the process to exit, then collects its output.
    fn finish(mut self) -> Output {
        let start = Instant::now();
        // Drain both pipes on threads so a chatty child never blocks on a full pipe.
        let stdout = drain(self.child.stdout.take());
        let stderr = drain(self.child.stderr.take());
        let status = loop {
            match self.child.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) if start.elapsed() < DEADLINE => {
                    thread::sleep(Duration::from_millis(20));
                }
                Ok(None) => panic!("`{}` still running after {DEADLINE:?}", self.what),
                Err(e) => panic!("waiting for `{}`: {e}", self.what),
            }
        };
        Output {
            status,
            stdout: stdout.join().expect("stdout reader"),
            stderr: stderr.join().expect("stderr reader"),
        }
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn drain(pipe: Option<impl Read + Send + 'static>) -> thread::JoinHandle<String> {
    thread::spawn(move || {
        let mut text = String::new();
        if let Some(mut pipe) = pipe {
            let mut bytes = Vec::new();
            let _ = pipe.read_to_end(&mut bytes);
            text = String::from_utf8_lossy(&bytes).into_owned();
        }
        text
    })
}

struct Output {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

impl std::fmt::Display for Output {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "status: {}\n--- stdout\n{}\n--- stderr\n{}",
            self.status, self.stdout, self.stderr
        )
    }
}

fn run(args: &[&str]) -> Output {
    let mut cmd = bank();
    cmd.args(args);
    Child::spawn(cmd, &format!("bank {}", args.join(" "))).finish()
}

/// A port on 127.0.0.1 that nothing listens on (bound once by the OS, then released).
fn closed_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    drop(listener);
    port
}

#[test]
fn serve_on_an_address_in_use_fails_naming_it() {
    let taken = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr").to_string();
    for variant in ["tcp", "grpc", "jsonrpc", "zmq"] {
        let out = run(&["serve", "--variant", variant, "--listen", &addr]);
        assert!(!out.status.success(), "{variant}: expected failure\n{out}");
        assert!(
            out.stderr.contains(&addr),
            "{variant}: stderr should name {addr}\n{out}"
        );
        let lower = out.stderr.to_lowercase();
        assert!(
            lower.contains("in use"),
            "{variant}: stderr should say the address is in use\n{out}"
        );
        assert!(
            !out.stdout.contains("listening on"),
            "{variant}: must not claim to listen\n{out}"
        );
    }
    drop(taken);
}

/// A raft secret anyone could guess is refused before anything is created, and so are
/// election timeouts that make no sense.
#[test]
fn a_node_refuses_a_short_secret_and_a_bad_election_range() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("n1");
    let data = data.to_str().expect("utf-8 path");
    let out = run(&[
        "node",
        "--id",
        "1",
        "--data-dir",
        data,
        "--secret",
        "short",
        "--init",
    ]);
    assert!(!out.status.success(), "{out}");
    assert!(out.stderr.contains("at least 16 bytes"), "{out}");
    assert!(
        !dir.path().join("n1").exists(),
        "a refused node created its data\n{out}"
    );
    for range in ["3000-1500", "0-10", "fast"] {
        let out = run(&[
            "node",
            "--id",
            "1",
            "--data-dir",
            data,
            "--secret",
            "0123456789abcdef",
            "--election-timeout-ms",
            range,
        ]);
        assert!(!out.status.success(), "{range}: {out}");
        assert!(out.stderr.contains(range), "{range}: {out}");
    }
}

#[test]
fn serve_with_a_malformed_listen_address_fails() {
    let out = run(&["serve", "--variant", "tcp", "--listen", "not-an-address"]);
    assert!(!out.status.success(), "{out}");
    assert!(out.stderr.contains("not-an-address"), "{out}");
}

#[test]
fn validate_grpc_against_a_closed_port_says_cannot_connect() {
    let addr = format!("127.0.0.1:{}", closed_port());
    let out = run(&["validate", "--variant", "grpc", "--connect", &addr]);
    assert!(!out.status.success(), "{out}");
    assert!(out.stderr.contains("cannot connect"), "{out}");
    assert!(
        out.stderr.contains(&addr),
        "stderr should name {addr}\n{out}"
    );
    assert!(!out.stdout.contains("validation passed"), "{out}");
}

#[test]
fn validate_tcp_against_a_closed_port_says_cannot_connect() {
    let addr = format!("127.0.0.1:{}", closed_port());
    let out = run(&["validate", "--variant", "tcp", "--connect", &addr]);
    assert!(!out.status.success(), "{out}");
    assert!(out.stderr.contains("cannot connect"), "{out}");
    assert!(
        out.stderr.contains(&addr),
        "stderr should name {addr}\n{out}"
    );
}

#[test]
fn validate_with_an_unknown_variant_lists_the_valid_ones() {
    let out = run(&["validate", "--variant", "nope"]);
    assert_eq!(out.status.code(), Some(2), "clap's usage exit code\n{out}");
    assert!(out.stderr.contains("invalid value 'nope'"), "{out}");
    for valid in [
        "direct",
        "collector",
        "tcp",
        "grpc",
        "jsonrpc",
        "zmq",
        "grpc-facade",
        "jsonrpc-facade",
    ] {
        assert!(
            out.stderr.contains(valid),
            "the error should list `{valid}`\n{out}"
        );
    }
}

#[test]
fn validate_a_networked_variant_without_connect_is_a_usage_error() {
    let out = run(&["validate", "--variant", "tcp"]);
    assert!(!out.status.success(), "{out}");
    assert!(out.stderr.contains("needs --connect"), "{out}");
    assert!(out.stderr.contains("bank serve"), "{out}");
    assert!(!out.stdout.contains("validation passed"), "{out}");
}

#[test]
fn validate_an_in_process_variant_with_connect_is_a_usage_error() {
    let out = run(&[
        "validate",
        "--variant",
        "direct",
        "--connect",
        "127.0.0.1:1",
    ]);
    assert!(!out.status.success(), "{out}");
    assert!(out.stderr.contains("drop --connect"), "{out}");
}

/// A `bank serve` process, the address it announced, and the lines of its stdout so far.
struct Server {
    child: Child,
    addr: String,
}

impl Server {
    fn start(variant: &str, db: &Path) -> Server {
        let mut cmd = bank();
        cmd.args([
            "serve",
            "--variant",
            variant,
            "--listen",
            "127.0.0.1:0",
            "--db",
        ])
        .arg(db);
        let mut child = Child::spawn(cmd, &format!("bank serve --variant {variant}"));
        let stdout = child.child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let start = Instant::now();
        let prefix = "listening on ";
        let line = loop {
            let left = DEADLINE.saturating_sub(start.elapsed());
            match rx.recv_timeout(left) {
                Ok(line) if line.starts_with(prefix) => break line,
                Ok(_) => continue,
                Err(e) => {
                    let status = child.child.try_wait();
                    panic!("no `listening on` line from the server ({e}); status {status:?}")
                }
            }
        };
        let rest = &line[prefix.len()..];
        let (addr, label) = rest
            .split_once(' ')
            .unwrap_or_else(|| panic!("malformed line `{line}`"));
        assert_eq!(label, format!("({variant})"), "line `{line}`");
        assert!(addr.starts_with("127.0.0.1:"), "line `{line}`");
        assert_ne!(addr, "127.0.0.1:0", "the real port, not 0: `{line}`");
        Server {
            child,
            addr: addr.to_string(),
        }
    }
}

fn end_to_end(variant: &str) {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("bank.db");
    let server = Server::start(variant, &db);

    let out = run(&["validate", "--variant", variant, "--connect", &server.addr]);
    assert!(out.status.success(), "{out}");
    assert!(
        out.stdout
            .contains(&format!("validation passed: variant={variant} steps=10")),
        "{out}"
    );
    // A second run against the same server meets the first run's customer.
    let again = run(&["validate", "--variant", variant, "--connect", &server.addr]);
    assert!(again.status.success(), "{again}");
    assert!(again.stdout.contains("customer=2"), "{again}");

    // The server is still up after both validators have gone.
    let mut server = server;
    assert!(
        matches!(server.child.child.try_wait(), Ok(None)),
        "the server exited early"
    );
    drop(server);
    assert!(db.exists(), "the --db file was created");
}

#[test]
fn serve_and_validate_tcp_in_two_processes() {
    end_to_end("tcp");
}

#[test]
fn serve_and_validate_grpc_in_two_processes() {
    end_to_end("grpc");
}

#[test]
fn serve_and_validate_jsonrpc_in_two_processes() {
    end_to_end("jsonrpc");
}

#[test]
fn serve_and_validate_zmq_in_two_processes() {
    end_to_end("zmq");
}

/// The JSON a successful `bank call` printed.
fn answer(out: &Output) -> serde_json::Value {
    assert!(out.status.success(), "{out}");
    serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("not JSON ({e}):\n{out}"))
}

/// `bank call`, the generated command line of the bank's API: typed flags, the answer as JSON,
/// a refusal with its kind and exit code 3, a bad flag with exit code 2, and `--json` in
/// JSON-RPC's form, over gRPC and JSON-RPC.
#[test]
fn bank_call_runs_one_operation_and_says_how_it_ended() {
    let dir = tempfile::tempdir().expect("temp dir");
    let grpc = Server::start("grpc", &dir.path().join("grpc.db"));
    let call = |args: &[&str]| {
        let mut all = vec!["call"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["--connect", &grpc.addr]);
        run(&all)
    };
    let customer = answer(&call(&[
        "create_customer",
        "--first-name",
        "Ada",
        "--last-name",
        "Lovelace",
        "--address",
        "12 St James's Square",
    ]));
    let customer_id = customer["customer_id"].to_string();
    let account = answer(&call(&[
        "create-account",
        "--customer-id",
        &customer_id,
        "--account-type",
        "checking",
    ]));
    let account_id = account["account_id"].to_string();
    let balance = answer(&call(&[
        "deposit",
        "--account-id",
        &account_id,
        "--amount",
        "10.00",
    ]));
    assert_eq!(balance, serde_json::json!("10.00"));

    let refused = call(&["withdraw", "--account-id", &account_id, "--amount", "25.00"]);
    assert_eq!(refused.status.code(), Some(3), "{refused}");
    assert!(refused.stderr.contains("InsufficientFunds"), "{refused}");
    let bad = call(&["deposit", "--account-id", "one", "--amount", "1.00"]);
    assert_eq!(bad.status.code(), Some(2), "{bad}");
    assert!(bad.stderr.contains("--account-id"), "{bad}");
    let missing = call(&["deposit", "--amount", "1.00"]);
    assert_eq!(missing.status.code(), Some(2), "{missing}");

    let jsonrpc = Server::start("jsonrpc", &dir.path().join("jsonrpc.db"));
    let json_call = |args: &[&str]| {
        let mut all = vec!["call"];
        all.extend_from_slice(args);
        all.extend_from_slice(&[
            "--connect",
            &jsonrpc.addr,
            "--transport",
            "jsonrpc",
            "--json",
        ]);
        run(&all)
    };
    assert_eq!(
        answer(&json_call(&["get_customer_count"])),
        serde_json::json!({"result": 0})
    );
    let not_found = json_call(&["deposit", "--account-id", "99", "--amount", "1.00"]);
    assert_eq!(not_found.status.code(), Some(3), "{not_found}");
    let error: serde_json::Value =
        serde_json::from_str(&not_found.stdout).unwrap_or_else(|e| panic!("{e}: {not_found}"));
    assert_eq!(error["error"]["data"]["kind"], "NotFound", "{not_found}");
    assert!(error["error"]["code"].as_i64().is_some(), "{not_found}");

    let help = run(&["call", "--help"]);
    assert!(help.status.success(), "{help}");
    assert!(help.stdout.contains("deposit"), "{help}");
}

/// `bank node --config FILE`: the file's keys are the node's flags, the command line overrides
/// them, and an unknown key is refused at its line and column before anything is created.
#[test]
fn a_node_reads_its_flags_from_a_config_file() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("n1");
    let config = dir.path().join("node.toml");
    std::fs::write(
        &config,
        format!(
            "id = 1\ndata_dir = {:?}\nheartbeat = 100\n",
            data.to_str().expect("utf-8 path")
        ),
    )
    .expect("write config");
    let config_arg = config.to_str().expect("utf-8 path");
    let out = run(&["node", "--config", config_arg]);
    assert_eq!(out.status.code(), Some(2), "{out}");
    assert!(
        out.stderr
            .contains("node.toml:3:1: unknown key `heartbeat`"),
        "{out}"
    );
    assert!(!data.exists(), "a refused node created its data\n{out}");

    // A short secret in the file, overridden by the command line: the node starts.
    std::fs::write(
        &config,
        format!(
            "id = 1\ndata_dir = {:?}\nlisten = \"127.0.0.1:0\"\nraft_listen = \"127.0.0.1:0\"\n\
             secret = \"short\"\ninit = true\n",
            data.to_str().expect("utf-8 path")
        ),
    )
    .expect("write config");
    let mut cmd = bank();
    cmd.args([
        "node",
        "--config",
        config_arg,
        "--secret",
        "0123456789abcdef",
    ]);
    let mut node = Child::spawn(cmd, "bank node --config");
    let line = node.ready_line();
    assert!(line.starts_with("node 1 api=127.0.0.1:"), "{line}");
    assert!(data.exists(), "the node made no data directory");
}

/// `--log-format json`: one JSON object per line, and a request's events carry its span
/// (operation and request id).
#[test]
fn a_node_logs_json_with_the_request_span() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("n1");
    let mut cmd = bank();
    cmd.env("RUST_LOG", "runtime::api::sink=debug").args([
        "node",
        "--id",
        "1",
        "--data-dir",
        data.to_str().expect("utf-8 path"),
        "--secret",
        "0123456789abcdef",
        "--init",
        "--log-format",
        "json",
    ]);
    let mut node = Child::spawn(cmd, "bank node --log-format json");
    let ready = node.ready_line();
    let stderr = node.child.stderr.take().expect("stderr");
    let api = ready
        .split_whitespace()
        .find_map(|w| w.strip_prefix("api="))
        .expect("api address")
        .to_string();
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let out = run(&["call", "get_customer_count", "--connect", &api]);
    assert!(out.status.success(), "{out}");
    let start = Instant::now();
    let event = loop {
        let line = rx
            .recv_timeout(DEADLINE.saturating_sub(start.elapsed()))
            .expect("a log line for the request");
        let value: serde_json::Value =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"));
        if value["fields"]["message"] == "answered" {
            break value;
        }
    };
    assert_eq!(event["span"]["name"], "request", "{event}");
    assert_eq!(event["span"]["operation"], "get_customer_count", "{event}");
    assert_eq!(event["fields"]["outcome"], "ok", "{event}");
}
