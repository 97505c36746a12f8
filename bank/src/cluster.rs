//! The bank replicated with Raft (the seed's step 5): the bank as a runtime [`Application`], one
//! node with its API and raft listeners, and a local cluster of node processes.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bank_generated::{
    ApplyContext, BankCommand, BankError, Dispatcher, encode_reply, grpc, jsonrpc,
};
use chrono::DateTime;
use runtime::raft::network::{AdminRequest, Answer, Message, call};
use runtime::raft::node::{NodeConfig, RaftNode, ReadLevel};
use runtime::raft::state_machine::Application;
use runtime::raft::types::{Applied, NodeAddr, NodeId};
use runtime::raft_rpc::RaftClient;
use rusqlite::Connection;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::store;

/// The bank as the raft state machine sees it: serialized commands and queries on the SQLite
/// connection the runtime manages.
#[derive(Debug, Clone, Copy, Default)]
pub struct BankApp;

impl Application for BankApp {
    fn init(&self, conn: &Connection) -> Result<(), String> {
        store::init_schema(conn).map_err(|e| e.to_string())
    }

    fn apply(
        &self,
        conn: &Connection,
        index: u64,
        time_us: i64,
        command: &[u8],
    ) -> Result<Applied, String> {
        let ctx = ApplyContext {
            index,
            time: DateTime::from_timestamp_micros(time_us).unwrap_or(DateTime::UNIX_EPOCH),
        };
        let result = BankCommand::decode(command).and_then(|command| {
            store::apply_on(conn, &ctx, |state| {
                Dispatcher::execute(state, &ctx, command)
            })
        });
        match result {
            // The store reports its own failures (SQLite errors) as `Internal`: not a refusal
            // every replica makes, so not a reply; the runtime stops instead of diverging.
            Err(BankError::Internal(e)) => Err(e),
            result => Ok(Applied {
                ok: result.is_ok(),
                reply: encode_reply(&result),
            }),
        }
    }

    fn query(&self, conn: &Connection, query: &[u8]) -> Vec<u8> {
        let result = BankCommand::decode(query)
            .and_then(|query| store::query_on(conn, |state| Dispatcher::query(state, query)));
        encode_reply(&result)
    }

    fn digest(&self, conn: &Connection) -> Result<String, String> {
        store::digest_of(conn).map_err(|e| e.to_string())
    }
}

/// Why a node or a cluster could not start or answer.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// A listener could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The node failed.
    #[error("node: {0}")]
    Node(#[from] runtime::raft::node::NodeError),
    /// A server failed.
    #[error("server: {0}")]
    Server(BankError),
    /// A node process misbehaved.
    #[error("node process: {0}")]
    Process(String),
    /// An admin request failed.
    #[error("admin: {0}")]
    Admin(String),
    /// A condition was not reached in time.
    #[error("timed out waiting for {0}")]
    Timeout(String),
}

/// How to run one node.
#[derive(Debug, Clone)]
pub struct NodeOptions {
    /// The node's id.
    pub id: NodeId,
    /// Its data directory.
    pub data_dir: PathBuf,
    /// gRPC API listen address.
    pub listen: String,
    /// JSON-RPC API listen address (optional).
    pub jsonrpc_listen: Option<String>,
    /// Raft listen address (raft traffic, forwarded writes, admin).
    pub raft_listen: String,
    /// The cluster's shared secret.
    pub secret: String,
    /// Start a new cluster with this node as its only member.
    pub init: bool,
    /// Join the cluster reachable at this raft address.
    pub join: Option<String>,
    /// Default read level of the API.
    pub read_level: ReadLevel,
    /// Build a snapshot after this many entries.
    pub snapshot_every: u64,
    /// Entries kept behind a snapshot.
    pub keep_logs: u64,
    /// Answer writes on a follower with the leader's address instead of forwarding them.
    pub redirect_writes: bool,
}

/// A running node with its listeners.
pub struct RunningNode {
    /// The node.
    pub node: Arc<RaftNode>,
    /// gRPC API address.
    pub api: SocketAddr,
    /// JSON-RPC API address.
    pub jsonrpc: Option<SocketAddr>,
    /// Raft address.
    pub raft: SocketAddr,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

async fn bind(addr: &str) -> Result<TcpListener, ClusterError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| ClusterError::Bind {
            addr: addr.to_string(),
            source,
        })
}

fn local(listener: &TcpListener, addr: &str) -> Result<SocketAddr, ClusterError> {
    listener.local_addr().map_err(|source| ClusterError::Bind {
        addr: addr.to_string(),
        source,
    })
}

/// Starts a node: binds its listeners, opens its storage, serves raft and the API, then
/// initializes or joins a cluster as asked.
pub async fn start_node(opts: NodeOptions) -> Result<RunningNode, ClusterError> {
    let raft_listener = bind(&opts.raft_listen).await?;
    let api_listener = bind(&opts.listen).await?;
    let jsonrpc_listener = match &opts.jsonrpc_listen {
        Some(addr) => Some(bind(addr).await?),
        None => None,
    };
    let raft_addr = local(&raft_listener, &opts.raft_listen)?;
    let api_addr = local(&api_listener, &opts.listen)?;
    let jsonrpc_addr = match (&jsonrpc_listener, &opts.jsonrpc_listen) {
        (Some(l), Some(a)) => Some(local(l, a)?),
        _ => None,
    };
    let mut config = NodeConfig::new(opts.id, opts.data_dir.clone(), opts.secret.clone());
    config.snapshot_every = opts.snapshot_every;
    config.keep_logs = opts.keep_logs;
    config.redirect_writes = opts.redirect_writes;
    let addr = NodeAddr {
        api: api_addr.to_string(),
        raft: raft_addr.to_string(),
        jsonrpc: jsonrpc_addr.map(|a| a.to_string()).unwrap_or_default(),
    };
    let node = RaftNode::start(config, addr, Arc::new(BankApp)).await?;
    let (stop, stopped) = watch::channel(false);
    let until_stopped = move || {
        let mut rx = stopped.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };
    let mut tasks = Vec::new();
    let raft_node = node.clone();
    let secret = opts.secret.clone();
    let shutdown = until_stopped();
    tasks.push(tokio::spawn(async move {
        if let Err(e) =
            runtime::raft_rpc::serve_raft(raft_listener, raft_node, secret, 256 << 20, shutdown)
                .await
        {
            tracing::error!(error = %e, "raft service stopped");
        }
    }));
    let api = Arc::new(bank_generated::raft::replicated(
        node.clone(),
        opts.read_level,
    ));
    let shutdown = until_stopped();
    let grpc_api = api.clone();
    tasks.push(tokio::spawn(async move {
        if let Err(e) = grpc::serve(api_listener, grpc_api, 4 << 20, shutdown).await {
            tracing::error!(error = %e, "gRPC API stopped");
        }
    }));
    if let Some(listener) = jsonrpc_listener {
        let shutdown = until_stopped();
        tasks.push(tokio::spawn(async move {
            if let Err(e) = jsonrpc::serve(listener, api, 4 << 20, shutdown).await {
                tracing::error!(error = %e, "JSON-RPC API stopped");
            }
        }));
    }
    let running = RunningNode {
        node,
        api: api_addr,
        jsonrpc: jsonrpc_addr,
        raft: raft_addr,
        stop,
        tasks,
    };
    let joined = if opts.init {
        running.node.init_cluster().await
    } else if let Some(seed) = &opts.join {
        running.node.join(seed).await
    } else {
        Ok(())
    };
    match joined {
        Ok(()) => Ok(running),
        Err(e) => {
            running.shutdown().await;
            Err(e.into())
        }
    }
}

impl RunningNode {
    /// The line `bank node` prints once it serves (what [`LocalCluster`] parses).
    pub fn ready_line(&self) -> String {
        format!(
            "node {} api={} jsonrpc={} raft={}",
            self.node.id(),
            self.api,
            self.jsonrpc
                .map(|a| a.to_string())
                .unwrap_or_else(|| "-".into()),
            self.raft
        )
    }

    /// Stops serving and shuts raft down.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        for task in self.tasks {
            let _ = task.await;
        }
        self.node.shutdown().await;
    }
}

/// Sends an admin request to the node at `raft_addr`, following redirects to the leader for
/// requests only the leader can run.
pub async fn admin(
    raft_addr: &str,
    secret: &str,
    request: AdminRequest,
) -> Result<serde_json::Value, ClusterError> {
    let mut target = raft_addr.to_string();
    for _ in 0..5 {
        let client = RaftClient::connect(&target, secret)
            .await
            .map_err(|s| ClusterError::Admin(format!("{target}: {}", s.message())))?;
        match call(&client, &Message::Admin(request.clone()))
            .await
            .map_err(|s| ClusterError::Admin(format!("{target}: {}", s.message())))?
        {
            Answer::Admin(v) => return Ok(v),
            Answer::NotLeader(Some((_, leader))) => target = leader.raft,
            Answer::NotLeader(None) => {
                return Err(ClusterError::Admin("no leader elected yet".into()));
            }
            Answer::Failed(e) => return Err(ClusterError::Admin(e)),
            other => return Err(ClusterError::Admin(format!("unexpected answer {other:?}"))),
        }
    }
    Err(ClusterError::Admin("too many redirects".into()))
}

/// How long a node process may take to print its ready line.
const READY_TIMEOUT: Duration = Duration::from_secs(90);

/// 128 random bits, hex encoded, from the OS.
fn random_secret() -> Result<String, ClusterError> {
    use std::io::Read;
    let mut bytes = [0u8; 16];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(|e| ClusterError::Process(format!("cannot read /dev/urandom: {e}")))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// One node process of a [`LocalCluster`].
#[derive(Debug)]
pub struct NodeProcess {
    /// The node's id.
    pub id: NodeId,
    /// gRPC API address.
    pub api: String,
    /// JSON-RPC API address.
    pub jsonrpc: String,
    /// Raft address.
    pub raft: String,
    /// Its data directory.
    pub data_dir: PathBuf,
    child: Option<Child>,
}

impl NodeProcess {
    /// Kills the process (SIGKILL) and waits for it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Whether the process is running.
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A cluster of `bank node` processes on 127.0.0.1, each with its own data directory. Dropping
/// it kills every process.
#[derive(Debug)]
pub struct LocalCluster {
    /// The nodes, by position (node id = position + 1).
    pub nodes: Vec<NodeProcess>,
    /// The shared secret.
    pub secret: String,
    exe: PathBuf,
    dir: PathBuf,
    /// Extra arguments for every node (e.g. snapshot settings).
    pub node_args: Vec<String>,
}

impl LocalCluster {
    /// Starts `n` nodes under `dir` with the `bank` binary `exe`: node 1 initializes the
    /// cluster, the others join it; returns once every node is a voter.
    pub async fn start(
        exe: &Path,
        dir: &Path,
        n: usize,
        node_args: Vec<String>,
    ) -> Result<LocalCluster, ClusterError> {
        let secret = random_secret()?;
        let mut cluster = LocalCluster {
            nodes: Vec::new(),
            secret,
            exe: exe.to_path_buf(),
            dir: dir.to_path_buf(),
            node_args,
        };
        for id in 1..=n as NodeId {
            let process = cluster.spawn(id, id == 1).await?;
            cluster.nodes.push(process);
        }
        let ids: Vec<NodeId> = (1..=n as NodeId).collect();
        cluster
            .wait_for_voters(&ids, Duration::from_secs(60))
            .await?;
        Ok(cluster)
    }

    /// Starts node `id` (fresh or from its existing data dir). `init` starts a new cluster;
    /// otherwise it joins through the first other running node.
    pub async fn spawn(&self, id: NodeId, init: bool) -> Result<NodeProcess, ClusterError> {
        self.spawn_at(id, init, None).await
    }

    /// Like [`LocalCluster::spawn`], on the given (api, jsonrpc, raft) addresses: a restarted
    /// member must come back where the cluster knows it.
    async fn spawn_at(
        &self,
        id: NodeId,
        init: bool,
        addrs: Option<(String, String, String)>,
    ) -> Result<NodeProcess, ClusterError> {
        let data_dir = self.dir.join(format!("node{id}"));
        let (api, jsonrpc, raft) = addrs.unwrap_or_else(|| {
            (
                "127.0.0.1:0".into(),
                "127.0.0.1:0".into(),
                "127.0.0.1:0".into(),
            )
        });
        std::fs::create_dir_all(&data_dir)
            .map_err(|e| ClusterError::Process(format!("{}: {e}", data_dir.display())))?;
        // Each node logs to a file in its data directory (RUST_LOG picks the level).
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(data_dir.join("node.log"))
            .map_err(|e| ClusterError::Process(format!("node log: {e}")))?;
        let mut cmd = Command::new(&self.exe);
        cmd.arg("node")
            .arg("--id")
            .arg(id.to_string())
            .arg("--data-dir")
            .arg(&data_dir)
            .args([
                "--listen",
                &api,
                "--jsonrpc-listen",
                &jsonrpc,
                "--raft-listen",
                &raft,
            ])
            .args(&self.node_args)
            .env("BANK_RAFT_SECRET", &self.secret)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log));
        if init {
            cmd.arg("--init");
        } else if let Some(seed) = self.nodes.iter().find(|n| n.is_running() && n.id != id) {
            cmd.arg("--join").arg(&seed.raft);
        }
        let mut child = cmd.spawn().map_err(|e| {
            ClusterError::Process(format!("cannot start {}: {e}", self.exe.display()))
        })?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| ClusterError::Process("no stdout".into()))?;
        let reading = tokio::task::spawn_blocking(move || {
            let mut reader = BufReader::new(stdout);
            let mut line = String::new();
            let read = reader.read_line(&mut line);
            // Keep draining so the node never blocks on a full pipe.
            std::thread::spawn(move || {
                let mut sink = String::new();
                while reader.read_line(&mut sink).map(|n| n > 0).unwrap_or(false) {
                    sink.clear();
                }
            });
            read.map(|_| line)
        });
        let line = match tokio::time::timeout(READY_TIMEOUT, reading).await {
            Ok(Ok(Ok(line))) => line,
            Ok(Ok(Err(e))) => return Err(ClusterError::Process(e.to_string())),
            Ok(Err(e)) => return Err(ClusterError::Process(e.to_string())),
            Err(_) => {
                // Killing the node closes its stdout, which ends the blocked read.
                let _ = child.kill();
                let _ = child.wait();
                return Err(ClusterError::Timeout(format!("node {id} to start")));
            }
        };
        let field = |name: &str| {
            line.split_whitespace()
                .find_map(|w| w.strip_prefix(&format!("{name}=")).map(str::to_string))
                .ok_or_else(|| ClusterError::Process(format!("node {id} did not start: {line:?}")))
        };
        Ok(NodeProcess {
            id,
            api: field("api")?,
            jsonrpc: field("jsonrpc")?,
            raft: field("raft")?,
            data_dir,
            child: Some(child),
        })
    }

    /// Restarts a stopped node from its data directory (it rejoins as the member it was).
    pub async fn restart(&mut self, id: NodeId) -> Result<(), ClusterError> {
        let index = self.position(id)?;
        self.nodes[index].kill();
        let old = &self.nodes[index];
        let addrs = (old.api.clone(), old.jsonrpc.clone(), old.raft.clone());
        let process = self.spawn_at(id, false, Some(addrs)).await?;
        self.nodes[index] = process;
        Ok(())
    }

    fn position(&self, id: NodeId) -> Result<usize, ClusterError> {
        self.nodes
            .iter()
            .position(|n| n.id == id)
            .ok_or_else(|| ClusterError::Process(format!("no node {id}")))
    }

    /// The node with this id.
    pub fn node(&self, id: NodeId) -> Result<&NodeProcess, ClusterError> {
        Ok(&self.nodes[self.position(id)?])
    }

    /// Kills node `id` with SIGKILL.
    pub fn kill(&mut self, id: NodeId) -> Result<(), ClusterError> {
        let index = self.position(id)?;
        self.nodes[index].kill();
        Ok(())
    }

    /// Status of one node.
    pub async fn status(&self, id: NodeId) -> Result<serde_json::Value, ClusterError> {
        admin(&self.node(id)?.raft, &self.secret, AdminRequest::Status).await
    }

    /// Waits until a running node reports a leader that is itself running; returns its id.
    pub async fn wait_for_leader(&self, timeout: Duration) -> Result<NodeId, ClusterError> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            for n in self.nodes.iter().filter(|n| n.is_running()) {
                if let Ok(status) = self.status(n.id).await
                    && let Some(leader) = status["leader"].as_u64()
                    && self.nodes.iter().any(|m| m.id == leader && m.is_running())
                    && let Ok(leader_status) = self.status(leader).await
                    && leader_status["role"] == "Leader"
                {
                    return Ok(leader);
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(ClusterError::Timeout("a leader".into()))
    }

    /// Waits until `ids` are all voters in the leader's membership.
    pub async fn wait_for_voters(
        &self,
        ids: &[NodeId],
        timeout: Duration,
    ) -> Result<(), ClusterError> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(leader) = self
                .wait_for_leader(deadline.saturating_duration_since(Instant::now()))
                .await
                && let Ok(status) = self.status(leader).await
                && ids
                    .iter()
                    .all(|id| status["members"][id.to_string()]["role"] == "voter")
            {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(ClusterError::Timeout(format!("voters {ids:?}")))
    }

    /// Waits until every running node has applied the same index as the leader's last log
    /// index, then returns each running node's (id, applied index, digest).
    pub async fn converged(
        &self,
        timeout: Duration,
    ) -> Result<Vec<(NodeId, u64, String)>, ClusterError> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            let leader = self
                .wait_for_leader(deadline.saturating_duration_since(Instant::now()))
                .await?;
            let target = self.status(leader).await?["last_log_index"]
                .as_u64()
                .unwrap_or(0);
            let mut out = Vec::new();
            for n in self.nodes.iter().filter(|n| n.is_running()) {
                let d = admin(&n.raft, &self.secret, AdminRequest::Digest).await?;
                let applied = d["last_applied_index"].as_u64().unwrap_or(0);
                out.push((
                    n.id,
                    applied,
                    d["digest"].as_str().unwrap_or_default().to_string(),
                ));
            }
            if out.iter().all(|(_, applied, _)| *applied >= target) {
                let digests: std::collections::BTreeSet<&String> =
                    out.iter().map(|(_, _, d)| d).collect();
                if digests.len() == 1 {
                    return Ok(out);
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(ClusterError::Timeout("replicas to converge".into()))
    }
}
