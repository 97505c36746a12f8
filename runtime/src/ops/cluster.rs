//! A local cluster of node processes for tests, demos and benchmarks: any service binary whose
//! `node` subcommand takes [`NodeArgs`](crate::ops::host::NodeArgs) and prints the host's ready line.
//! Processes get ephemeral ports on 127.0.0.1 (or on their address in a [`crate::lab::netns`] lab)
//! and their own data directories; dropping the cluster kills every process.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::lab::delay::DelayLink;
use crate::lab::netns::NetHost;
use crate::net::tls::{CertAuthority, TlsArgs, hosts_for};
use crate::ops::admin::admin;
use crate::ops::host::{HostError, SECRET_ENV};
use crate::raft::network::AdminRequest;
use crate::raft::rpc::RaftCredentials;
use crate::raft::status::NodeStatus;
use crate::raft::types::NodeId;

/// The log file in each node's data directory.
const NODE_LOG: &str = "node.log";

/// How long a node process may take to print its ready line.
const READY_TIMEOUT: Duration = Duration::from_secs(90);

/// A port on 127.0.0.1 that was free a moment ago (bound, then released).
fn free_port() -> Result<String, HostError> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.to_string())
        .map_err(|e| HostError::Process(format!("no free port: {e}")))
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
    /// Metrics address (`/metrics`, `/health`, `/ready`).
    pub metrics: String,
    /// Its data directory.
    pub data_dir: PathBuf,
    child: Option<Child>,
    /// The delayed link in front of its raft listener, if the cluster has one.
    link: Option<DelayLink>,
}

impl NodeProcess {
    /// Kills the process (SIGKILL) and waits for it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The CPU time (user and system) the process has used so far, in seconds, read from
    /// `/proc/<pid>/stat` (in clock ticks of 1/100 s, Linux's `USER_HZ`); `None` when it does
    /// not run or there is no `/proc`.
    pub fn cpu_seconds(&self) -> Option<f64> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid()?)).ok()?;
        // The fields after the command name (which may hold spaces) start with field 3; utime
        // is field 14 and stime field 15.
        let (_, rest) = stat.rsplit_once(')')?;
        let mut fields = rest.split_whitespace().skip(14 - 3);
        let utime: u64 = fields.next()?.parse().ok()?;
        let stime: u64 = fields.next()?.parse().ok()?;
        Some((utime + stime) as f64 / 100.0)
    }

    /// The file the process logs to (its stderr).
    pub fn log_file(&self) -> PathBuf {
        self.data_dir.join(NODE_LOG)
    }

    /// Whether the process is running.
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// The exit status, once the process has ended by itself (it then no longer counts as
    /// running).
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        let status = self.child.as_mut()?.try_wait().ok().flatten()?;
        self.child = None;
        Some(status)
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A cluster of node processes (`<binary> node ...`) on 127.0.0.1, each with its own data directory. Dropping
/// it kills every process.
#[derive(Debug)]
pub struct LocalCluster {
    /// The nodes, by position (node id = position + 1).
    pub nodes: Vec<NodeProcess>,
    /// What an admin client of the cluster presents: the shared secret and, on a TLS cluster,
    /// a client certificate.
    pub credentials: RaftCredentials,
    /// The CA that signs each node's certificate on a TLS cluster.
    authority: Option<CertAuthority>,
    exe: PathBuf,
    dir: PathBuf,
    /// Extra arguments for every node (e.g. snapshot settings).
    pub node_args: Vec<String>,
    /// Where each node runs (node 1 first); empty: every node on 127.0.0.1 here.
    hosts: Vec<NetHost>,
    /// A one-way delay on every raft link (see [`LocalCluster::start_delayed`]).
    delay: Option<Duration>,
}

impl LocalCluster {
    /// Starts `n` nodes under `dir` with the service binary `exe`: node 1 initializes the
    /// cluster, the others join it; returns once every node is a voter.
    pub async fn start(
        exe: &Path,
        dir: &Path,
        n: usize,
        node_args: Vec<String>,
    ) -> Result<LocalCluster, HostError> {
        Self::start_on(exe, dir, n, node_args, Vec::new(), None, false).await
    }

    /// Like [`LocalCluster::start`], with TLS on every listener: a new CA (its certificate in
    /// `dir/tls/ca.pem`) signs a certificate for each node and one for the cluster's admin
    /// client; nodes authenticate each other with them (mutual TLS).
    pub async fn start_with_tls(
        exe: &Path,
        dir: &Path,
        n: usize,
        node_args: Vec<String>,
    ) -> Result<LocalCluster, HostError> {
        Self::start_on(exe, dir, n, node_args, Vec::new(), None, true).await
    }

    /// Like [`LocalCluster::start`], with node `i` in the network namespace `hosts[i - 1]`
    /// (listening on its address there), one node per host.
    pub async fn start_in(
        exe: &Path,
        dir: &Path,
        hosts: Vec<NetHost>,
        node_args: Vec<String>,
    ) -> Result<LocalCluster, HostError> {
        Self::start_on(exe, dir, hosts.len(), node_args, hosts, None, false).await
    }

    /// Like [`LocalCluster::start`], with every node's raft traffic (replication, votes,
    /// forwarded writes) reaching it through a [`DelayLink`] of one-way `delay`: a cluster
    /// whose nodes are that far apart. API clients reach the nodes directly.
    pub async fn start_delayed(
        exe: &Path,
        dir: &Path,
        n: usize,
        node_args: Vec<String>,
        delay: Duration,
    ) -> Result<LocalCluster, HostError> {
        Self::start_on(exe, dir, n, node_args, Vec::new(), Some(delay), false).await
    }

    async fn start_on(
        exe: &Path,
        dir: &Path,
        n: usize,
        node_args: Vec<String>,
        hosts: Vec<NetHost>,
        delay: Option<Duration>,
        tls: bool,
    ) -> Result<LocalCluster, HostError> {
        let secret = crate::util::random_hex128()
            .map_err(|e| HostError::Process(format!("cannot read /dev/urandom: {e}")))?;
        let mut credentials = RaftCredentials::plain(secret);
        let authority = if tls {
            let authority = CertAuthority::new("local")?;
            let files = authority.write(&dir.join("tls"), "admin", &hosts_for("127.0.0.1"))?;
            credentials.tls = files.load()?;
            Some(authority)
        } else {
            None
        };
        let mut cluster = LocalCluster {
            nodes: Vec::new(),
            credentials,
            authority,
            exe: exe.to_path_buf(),
            dir: dir.to_path_buf(),
            node_args,
            hosts,
            delay,
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
    pub async fn spawn(&self, id: NodeId, init: bool) -> Result<NodeProcess, HostError> {
        let link = match self.delay {
            Some(delay) => Some(
                DelayLink::bind("127.0.0.1:0", delay)
                    .await
                    .map_err(|e| HostError::Process(format!("delay link: {e}")))?,
            ),
            None => None,
        };
        self.spawn_at(id, init, None, link).await
    }

    /// Like [`LocalCluster::spawn`], on the given (api, jsonrpc, raft) addresses: a restarted
    /// member must come back where the cluster knows it.
    async fn spawn_at(
        &self,
        id: NodeId,
        init: bool,
        addrs: Option<(String, String, String)>,
        link: Option<DelayLink>,
    ) -> Result<NodeProcess, HostError> {
        let data_dir = self.dir.join(format!("node{id}"));
        let host = usize::try_from(id)
            .ok()
            .and_then(|i| self.hosts.get(i.wrapping_sub(1)));
        let any = format!("{}:0", host.map_or("127.0.0.1", |h| h.ip.as_str()));
        let (api, jsonrpc, mut raft) =
            addrs.unwrap_or_else(|| (any.clone(), any.clone(), any.clone()));
        if let Some(link) = &link
            && link.target().is_none()
        {
            // The link must lead to the node before it joins (the leader replicates to it
            // through the link while it joins): give it a port known in advance.
            raft = free_port()?;
            link.connect_to(&raft);
        }
        std::fs::create_dir_all(&data_dir)
            .map_err(|e| HostError::Process(format!("{}: {e}", data_dir.display())))?;
        let tls = match &self.authority {
            Some(authority) => authority.write(
                &data_dir.join("tls"),
                &format!("node{id}"),
                &hosts_for(host.map_or("127.0.0.1", |h| h.ip.as_str())),
            )?,
            None => TlsArgs::default(),
        };
        // Each node logs to a file in its data directory (RUST_LOG picks the level).
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(data_dir.join(NODE_LOG))
            .map_err(|e| HostError::Process(format!("node log: {e}")))?;
        let mut cmd = match host {
            // `ip netns exec` execs the binary: the child is the node itself.
            Some(host) => {
                let mut cmd = Command::new("ip");
                cmd.args(["netns", "exec", &host.netns]).arg(&self.exe);
                cmd
            }
            None => Command::new(&self.exe),
        };
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
                "--metrics-listen",
                &any,
            ])
            .args(&self.node_args)
            .args(tls.to_args())
            .args(
                link.iter()
                    .flat_map(|l| ["--advertise-raft".to_string(), l.addr().to_string()]),
            )
            .env(SECRET_ENV, &self.credentials.secret)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log));
        if init {
            cmd.arg("--init");
        } else if let Some(seed) = self.nodes.iter().find(|n| n.is_running() && n.id != id) {
            cmd.arg("--join").arg(&seed.raft);
        }
        let mut child = cmd
            .spawn()
            .map_err(|e| HostError::Process(format!("cannot start {}: {e}", self.exe.display())))?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| HostError::Process("no stdout".into()))?;
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
            Ok(Ok(Err(e))) => return Err(HostError::Process(e.to_string())),
            Ok(Err(e)) => return Err(HostError::Process(e.to_string())),
            Err(_) => {
                // Killing the node closes its stdout, which ends the blocked read.
                let _ = child.kill();
                let _ = child.wait();
                return Err(HostError::Timeout(format!("node {id} to start")));
            }
        };
        let field = |name: &str| {
            line.split_whitespace()
                .find_map(|w| w.strip_prefix(&format!("{name}=")).map(str::to_string))
                .ok_or_else(|| HostError::Process(format!("node {id} did not start: {line:?}")))
        };
        let raft = match &link {
            Some(link) => link.addr().to_string(),
            None => field("raft")?,
        };
        Ok(NodeProcess {
            id,
            api: field("api")?,
            jsonrpc: field("jsonrpc")?,
            raft,
            metrics: field("metrics")?,
            data_dir,
            child: Some(child),
            link,
        })
    }

    /// Runs `exe` at every later start or restart of a node: with [`LocalCluster::restart`],
    /// node by node, a rolling upgrade (or downgrade) of the service's build.
    pub fn set_exe(&mut self, exe: &Path) {
        self.exe = exe.to_path_buf();
    }

    /// Restarts a stopped node from its data directory (it rejoins as the member it was).
    pub async fn restart(&mut self, id: NodeId) -> Result<(), HostError> {
        let index = self.position(id)?;
        self.nodes[index].kill();
        let old = &mut self.nodes[index];
        // Behind a delay link, the node listens where the link leads; the link stays.
        let link = old.link.take();
        let raft = link
            .as_ref()
            .and_then(DelayLink::target)
            .unwrap_or_else(|| old.raft.clone());
        let addrs = (old.api.clone(), old.jsonrpc.clone(), raft);
        let process = self.spawn_at(id, false, Some(addrs), link).await?;
        self.nodes[index] = process;
        Ok(())
    }

    fn position(&self, id: NodeId) -> Result<usize, HostError> {
        self.nodes
            .iter()
            .position(|n| n.id == id)
            .ok_or_else(|| HostError::Process(format!("no node {id}")))
    }

    /// Adds (or updates) `user` with `roles` through the leader and issues it a token; the
    /// token (for nodes started with `--auth`).
    pub async fn user_token(&self, user: &str, roles: &[&str]) -> Result<String, HostError> {
        use crate::raft::auth::{AuthCommand, new_token, token_hash};
        let leader = self.wait_for_leader(Duration::from_secs(60)).await?;
        let raft = self.node(leader)?.raft.clone();
        let add = AdminRequest::Auth(AuthCommand::UserAdd {
            name: user.into(),
            roles: roles.iter().map(|r| r.to_string()).collect(),
        });
        crate::ops::admin::admin(&raft, &self.credentials, add).await?;
        let (token, id) = new_token().map_err(|e| HostError::Admin(e.to_string()))?;
        let issue = AdminRequest::Auth(AuthCommand::TokenIssue {
            user: user.into(),
            id,
            hash: token_hash(&token),
        });
        crate::ops::admin::admin(&raft, &self.credentials, issue).await?;
        Ok(token)
    }

    /// The node with this id.
    pub fn node(&self, id: NodeId) -> Result<&NodeProcess, HostError> {
        Ok(&self.nodes[self.position(id)?])
    }

    /// Kills node `id` with SIGKILL.
    pub fn kill(&mut self, id: NodeId) -> Result<(), HostError> {
        let index = self.position(id)?;
        self.nodes[index].kill();
        Ok(())
    }

    /// Status of one node.
    pub async fn status(&self, id: NodeId) -> Result<NodeStatus, HostError> {
        crate::ops::admin::status(&self.node(id)?.raft, &self.credentials).await
    }

    /// Waits until the running nodes agree on a leader; returns its id.
    pub async fn wait_for_leader(&self, timeout: Duration) -> Result<NodeId, HostError> {
        let running: Vec<NodeId> = self
            .nodes
            .iter()
            .filter(|n| n.is_running())
            .map(|n| n.id)
            .collect();
        self.wait_for_leader_among(&running, timeout).await
    }

    /// Waits until a node of `ids` calls itself the leader and a majority of the cluster, all
    /// among `ids`, names it so; returns its id. Naming the nodes leaves out one that is cut
    /// off, and the majority leaves out a deposed leader that has not heard of its successor.
    pub async fn wait_for_leader_among(
        &self,
        ids: &[NodeId],
        timeout: Duration,
    ) -> Result<NodeId, HostError> {
        let majority = self.nodes.len() / 2 + 1;
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            let mut views = Vec::new();
            for &id in ids {
                if let Ok(status) = self.status(id).await {
                    views.push((id, status.is_leader(), status.leader));
                }
            }
            let agreed = views.iter().find(|(id, leads, _)| {
                *leads
                    && views
                        .iter()
                        .filter(|(_, _, named)| *named == Some(*id))
                        .count()
                        >= majority
            });
            if let Some((id, _, _)) = agreed {
                return Ok(*id);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Err(HostError::Timeout(format!("a leader among {ids:?}")))
    }

    /// Waits until every running node has applied what the leader had logged when this was
    /// called. Unlike [`LocalCluster::converged`], it holds while writes go on.
    pub async fn wait_caught_up(&self, timeout: Duration) -> Result<(), HostError> {
        let deadline = Instant::now() + timeout;
        let leader = self.wait_for_leader(timeout).await?;
        let target = self.status(leader).await?.last_log_index.unwrap_or(0);
        for n in self.nodes.iter().filter(|n| n.is_running()) {
            loop {
                let applied = self
                    .status(n.id)
                    .await
                    .ok()
                    .and_then(|s| s.last_applied_index);
                if applied.is_some_and(|a| a >= target) {
                    break;
                }
                if Instant::now() > deadline {
                    return Err(HostError::Timeout(format!(
                        "node {} to apply index {target}",
                        n.id
                    )));
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        Ok(())
    }

    /// Starts node `id` as a new member (it joins through a running node) and waits until
    /// every node, it included, is a voter.
    pub async fn add_member(&mut self, id: NodeId, timeout: Duration) -> Result<(), HostError> {
        let process = self.spawn(id, false).await?;
        self.nodes.push(process);
        let ids: Vec<NodeId> = self.nodes.iter().map(|n| n.id).collect();
        self.wait_for_voters(&ids, timeout).await
    }

    /// Sets a failpoint on node `id` (its binary built with `failpoints`; see
    /// [`crate::failpoint`]); `off` clears it.
    pub async fn set_failpoint(
        &self,
        id: NodeId,
        name: &str,
        actions: &str,
    ) -> Result<(), HostError> {
        let request = AdminRequest::Failpoint {
            name: name.into(),
            actions: actions.into(),
        };
        admin(&self.node(id)?.raft, &self.credentials, request)
            .await
            .map(drop)
    }

    /// Waits until node `id` has purged some of its log (after a snapshot).
    pub async fn wait_purged(&self, id: NodeId, timeout: Duration) -> Result<(), HostError> {
        self.wait_status(id, timeout, "purge its log", |s| {
            s.purged_index.unwrap_or(0) > 0
        })
        .await
        .map(drop)
    }

    /// Waits until node `id`'s status satisfies `check` (asked every 100 ms; a node that does
    /// not answer is asked again); returns that status, or a timeout naming `what` with the
    /// last status or error seen.
    pub async fn wait_status(
        &self,
        id: NodeId,
        timeout: Duration,
        what: &str,
        check: impl Fn(&NodeStatus) -> bool,
    ) -> Result<NodeStatus, HostError> {
        let deadline = Instant::now() + timeout;
        loop {
            let status = self.status(id).await;
            if let Ok(s) = &status
                && check(s)
            {
                return status;
            }
            if Instant::now() > deadline {
                return Err(HostError::Timeout(format!(
                    "node {id} to {what}: {status:?}"
                )));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until `ids` are all voters in the leader's membership.
    pub async fn wait_for_voters(
        &self,
        ids: &[NodeId],
        timeout: Duration,
    ) -> Result<(), HostError> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(leader) = self
                .wait_for_leader(deadline.saturating_duration_since(Instant::now()))
                .await
                && let Ok(status) = self.status(leader).await
                && ids.iter().all(|id| status.is_voter(*id))
            {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(HostError::Timeout(format!("voters {ids:?}")))
    }

    /// Waits until every running node has applied the same index as the leader's last log
    /// index, then returns each running node's (id, applied index, digest).
    pub async fn converged(
        &self,
        timeout: Duration,
    ) -> Result<Vec<(NodeId, u64, String)>, HostError> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            let leader = self
                .wait_for_leader(deadline.saturating_duration_since(Instant::now()))
                .await?;
            let target = self.status(leader).await?.last_log_index.unwrap_or(0);
            let mut out = Vec::new();
            for n in self.nodes.iter().filter(|n| n.is_running()) {
                let d = admin(&n.raft, &self.credentials, AdminRequest::Digest).await?;
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
        Err(HostError::Timeout("replicas to converge".into()))
    }
}
