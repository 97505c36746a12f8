//! One node: the openraft instance with its SQLite log and state machine, the raft service it
//! answers on its own listener, and the write / read / admin paths the API servers call.
//!
//! Writes: on the leader, proposed to the log; on a follower, forwarded to the leader over the
//! raft service and the outcome relayed back. Bounded attempts with backoff, no endless loops.
//! Reads never enter the log: [`ReadLevel::Linearizable`] (the default) takes a read index from
//! the leader (`ensure_linearizable`) and waits until the local state machine has applied it;
//! [`ReadLevel::Stale`] reads the local state as it is.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub use crate::wire::call::ReadLevel;
use crate::wire::call::Session;
use openraft::async_runtime::WatchReceiver;
use openraft::errors::InitializeError;
use openraft::{Config, ServerState, SnapshotPolicy};
use tonic::Status;

use super::log_store::repair::RejoinMarker;
use super::log_store::{LogStore, LogStoreError};
use super::network::{self, AdminRequest, Answer, Message, Network};
use super::read_index::ReadIndexRounds;
use super::state_machine::{Application, StateMachine};
use super::types::{NodeAddr, NodeId, Rejected};
use crate::raft::rpc::{RaftClient, RaftCredentials};
use crate::raft::version::{Gate, Schema};

mod admin;
mod incoming;
pub mod quota;
mod read;
mod rejoin;
mod write;

use super::files::{LOG_DIR, SNAPSHOT_DIR, STATE_DB};
use super::state_machine::Raft;

/// How long a write or read keeps retrying across a leader change before it gives up (several
/// election timeouts: a failover on a loaded machine fits well inside it).
const RETRY_FOR: Duration = Duration::from_secs(20);
/// The longest a read-index request from a follower is served.
const HANDLER_TIMEOUT: Duration = Duration::from_secs(10);

/// Settings of one node.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// The node's id (unique in the cluster, never reused).
    pub id: NodeId,
    /// Where the log, the database and snapshots live.
    pub data_dir: PathBuf,
    /// What the node presents to its peers (the secret every raft message carries, and TLS
    /// material on a TLS cluster); its raft listener asks the same of them.
    pub credentials: RaftCredentials,
    /// Leader heartbeat interval.
    pub heartbeat: Duration,
    /// Election timeout range (a follower waits a random time in it before campaigning).
    pub election_timeout: (Duration, Duration),
    /// Build a snapshot after this many applied entries since the last one.
    pub snapshot_every: u64,
    /// Log entries kept behind a snapshot (0 purges everything it covers).
    pub keep_logs: u64,
    /// On a follower, answer writes with the leader's address ([`NodeError::NotLeader`])
    /// instead of forwarding them.
    pub redirect_writes: bool,
    /// The cluster's name (openraft's `cluster_name`, shown in its logs).
    pub cluster_name: String,
    /// The largest serialized command a write may carry; a larger one is refused before it
    /// enters the log ([`DEFAULT_MAX_COMMAND_BYTES`], at most [`MAX_COMMAND_BYTES_LIMIT`]).
    pub max_command_bytes: usize,
    /// How the node keeps its change feed ([`crate::raft::feed`]).
    pub feed: crate::raft::feed::FeedConfig,
    /// When applied batches commit to the state database (group commit).
    pub commit: crate::raft::state_machine::CommitPolicy,
    /// Past this many bytes of raft state on disk, writes are refused ([`quota`]); `None`: no
    /// quota.
    pub quota_bytes: Option<u64>,
    /// The size of a raft log segment file (a batch larger than it gets a segment its size).
    pub log_segment_bytes: u64,
    /// Whether API calls need a token whose user's roles allow the operation
    /// ([`crate::raft::auth`]).
    pub auth: bool,
}

/// Default of [`NodeConfig::max_command_bytes`]: 4 MiB (a gRPC API call carries at most that
/// by default anyway).
pub const DEFAULT_MAX_COMMAND_BYTES: usize = 4 << 20;

/// The highest [`NodeConfig::max_command_bytes`] a node takes: any one entry must fit in a raft
/// message ([`crate::raft::network::MAX_MESSAGE`]) with room to spare.
pub const MAX_COMMAND_BYTES_LIMIT: usize = 64 << 20;

/// Default leader heartbeat interval, in milliseconds.
pub const DEFAULT_HEARTBEAT_MS: u64 = 100;

/// Default election timeout range, in milliseconds. A follower campaigns once the leader's
/// lease (the range's upper bound) and then a random time in the range have passed without a
/// heartbeat: 0.9–1.2 s after the leader's last one, nine missed heartbeats at the least.
pub const DEFAULT_ELECTION_TIMEOUT_MS: (u64, u64) = (300, 600);

impl NodeConfig {
    /// Defaults: [`DEFAULT_HEARTBEAT_MS`] heartbeats and [`DEFAULT_ELECTION_TIMEOUT_MS`]
    /// elections (a new leader about a second after the old one stops).
    pub fn new(id: NodeId, data_dir: PathBuf, credentials: RaftCredentials) -> Self {
        NodeConfig {
            id,
            data_dir,
            credentials,
            heartbeat: Duration::from_millis(DEFAULT_HEARTBEAT_MS),
            election_timeout: (
                Duration::from_millis(DEFAULT_ELECTION_TIMEOUT_MS.0),
                Duration::from_millis(DEFAULT_ELECTION_TIMEOUT_MS.1),
            ),
            snapshot_every: 10_000,
            keep_logs: 1_000,
            quota_bytes: Some(quota::DEFAULT_QUOTA_BYTES),
            log_segment_bytes: crate::raft::log_store::SEGMENT_BYTES,
            auth: false,
            redirect_writes: false,
            cluster_name: "raftgen".into(),
            max_command_bytes: DEFAULT_MAX_COMMAND_BYTES,
            feed: Default::default(),
            commit: Default::default(),
        }
    }
}

/// Why a node operation failed.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// Storage could not be opened or written.
    #[error("storage: {0}")]
    Storage(#[from] std::io::Error),
    /// The raft log could not be opened (or is in a format this build does not read).
    #[error(transparent)]
    Log(#[from] LogStoreError),
    /// The raft configuration is invalid.
    #[error("configuration: {0}")]
    Config(String),
    /// No leader could be reached in the allotted attempts.
    #[error("no leader available: {0}")]
    NoLeader(String),
    /// Raft refused or failed.
    #[error("raft: {0}")]
    Raft(String),
    /// This node is the leader but has not heard from a quorum within its lease: it takes no
    /// writes or reads until it does (or another leader is elected).
    #[error("node {0} is cut off from a quorum of its cluster")]
    NoQuorum(NodeId),
    /// The request id was used before for another command; nothing was applied.
    #[error("rejected: {0}")]
    Rejected(#[from] Rejected),
    /// The command is larger than the node's `--max-command-bytes`; nothing was applied.
    #[error(
        "the command is {size} bytes, more than this cluster's limit of {limit} (--max-command-bytes)"
    )]
    TooLarge {
        /// The command's size in bytes.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// The node's storage is past its quota (`--quota-bytes`): the write was refused before it
    /// entered the log.
    #[error("no space: {0}")]
    NoSpace(String),
    /// This node redirects writes: send them to the leader (if one is known).
    #[error("not the leader; the leader is {}", .0.as_ref().map_or("unknown".to_string(), |a| a.to_string()))]
    NotLeader(Option<NodeAddr>),
}

/// One running node.
pub struct RaftNode {
    id: NodeId,
    addr: NodeAddr,
    credentials: RaftCredentials,
    metrics: crate::raft::metrics::NodeMetrics,
    redirect_writes: bool,
    max_command_bytes: usize,
    raft: Raft,
    sm: StateMachine,
    snapshot_dir: PathBuf,
    /// This node's client session (a random id) for the writes it proposes on behalf of API
    /// callers that send no request id; it acknowledges what has been answered.
    session: Session,
    peers: Mutex<HashMap<String, RaftClient>>,
    /// Read-index rounds shared by concurrent linearizable reads (on the leader).
    read_rounds: Arc<ReadIndexRounds>,
    /// What this node's build of the service knows (advertised to the leader).
    schema: Arc<Schema>,
    /// What each member's build knows, as last asked (see [`crate::raft::version`]); the leader's
    /// gate reads it.
    gate: Gate,
    /// Set while the node rejoins after a log repair: it does not vote (see [`rejoin`]).
    rejoining: std::sync::atomic::AtomicBool,
    /// The storage quota and its alarm (see [`quota`]).
    quota: quota::Quota,
    /// The users and tokens, as this node has applied them.
    identities: Arc<crate::raft::auth::Identities>,
    /// Whether API calls need a token (`--auth`).
    auth: bool,
    /// The service's operations and who may call them.
    operations: &'static [crate::wire::service::OpInfo],
}

impl std::fmt::Debug for RaftNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RaftNode")
            .field("id", &self.id)
            .field("addr", &self.addr)
            .finish()
    }
}

/// The node's wall clock, in microseconds since the Unix epoch (skewed by the failpoint
/// `clock::offset_secs` in a build with failpoints).
fn now_us() -> i64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or_default();
    let offset_secs = crate::failpoint::fired("clock::offset_secs")
        .flatten()
        .and_then(|secs| secs.parse::<i64>().ok())
        .unwrap_or(0);
    now.saturating_add(offset_secs.saturating_mul(1_000_000))
}

impl RaftNode {
    /// Opens the node's storage and starts openraft. `addr` is what other nodes and clients use
    /// to reach it. Serve the returned node with [`crate::raft::rpc::serve_raft`] on the raft
    /// listener.
    pub async fn start(
        config: NodeConfig,
        addr: NodeAddr,
        app: Arc<dyn Application>,
    ) -> Result<Arc<RaftNode>, NodeError> {
        std::fs::create_dir_all(&config.data_dir)?;
        {
            // Only the node's user may enter its data directory.
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::set_permissions(&config.data_dir, std::fs::Permissions::from_mode(0o700))?;
        }
        let snapshot_dir = config.data_dir.join(SNAPSHOT_DIR);
        let log = LogStore::open_with_segment_bytes(
            &config.data_dir.join(LOG_DIR),
            config.log_segment_bytes,
        )?;
        let rejoin = RejoinMarker::read(&config.data_dir)?;
        if let Some(marker) = &rejoin {
            tracing::warn!(
                "rejoining after a log repair: no election and no vote until a leader of term {} \
                 or later has brought this node up to date",
                marker.term
            );
        }
        let identities = Arc::new(crate::raft::auth::Identities::default());
        let operations = app.operations();
        let app: Arc<dyn Application> =
            Arc::new(crate::raft::auth::AuthApp::new(app, identities.clone()));
        let sm = StateMachine::open_with_feed(
            app,
            &config.data_dir.join(STATE_DB),
            &snapshot_dir,
            config.feed,
        )?;
        sm.set_commit_policy(config.commit)?;
        let storage_metrics = crate::raft::metrics::StorageMetrics {
            log_commit_seconds: log.commit_seconds(),
            state_machine: sm.metrics(),
        };
        let raft_config = Config {
            cluster_name: config.cluster_name.clone(),
            heartbeat_interval: config.heartbeat.as_millis() as u64,
            election_timeout_min: config.election_timeout.0.as_millis() as u64,
            election_timeout_max: config.election_timeout.1.as_millis() as u64,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(config.snapshot_every),
            max_in_snapshot_log_to_keep: config.keep_logs,
            // Replicate what is appended at once, without waiting for the leader's own fsync:
            // the follower's write overlaps the leader's.
            broadcast_submitted_on_append: Some(true),
            // A node that cannot win (cut off, or behind) asks before it raises its term, so
            // its return does not depose a healthy leader.
            enable_pre_vote: Some(true),
            // A node rejoining after a repair neither starts an election nor takes back a
            // leadership its kept vote may record: its log may lack what it had committed.
            enable_elect: rejoin.is_none(),
            enable_leader_restore: Some(rejoin.is_none()),
            ..Default::default()
        }
        .validate()
        .map_err(|e| NodeError::Config(e.to_string()))?;
        // A peer that cannot be reached is retried after a heartbeat, then less and less often,
        // up to the election timeout (and probed every heartbeat meanwhile).
        let network = Network::new(
            config.credentials.clone(),
            config.heartbeat,
            config.election_timeout.0,
        );
        let raft = Raft::new(config.id, Arc::new(raft_config), network, log, sm.clone())
            .await
            .map_err(|e| NodeError::Raft(e.to_string()))?;
        let schema = Arc::new(sm.schema());
        let gate = Gate::default();
        gate.record(config.id, Some((*schema).clone()));
        let node = Arc::new(RaftNode {
            id: config.id,
            addr,
            credentials: config.credentials,
            metrics: crate::raft::metrics::NodeMetrics::new(storage_metrics),
            redirect_writes: config.redirect_writes,
            max_command_bytes: config.max_command_bytes,
            raft,
            sm,
            snapshot_dir,
            session: Session::default(),
            peers: Mutex::new(HashMap::new()),
            read_rounds: Arc::default(),
            schema,
            gate,
            rejoining: std::sync::atomic::AtomicBool::new(rejoin.is_some()),
            quota: quota::Quota::new(config.quota_bytes),
            identities,
            auth: config.auth,
            operations,
        });
        tokio::spawn(quota::watch(Arc::downgrade(&node), config.data_dir.clone()));
        if let Some(marker) = rejoin {
            tokio::spawn(rejoin::finish(
                Arc::downgrade(&node),
                config.data_dir.clone(),
                marker,
            ));
        }
        if !node.schema.is_opaque() {
            tokio::spawn(write::refresh_schemas(Arc::downgrade(&node)));
        }
        Ok(node)
    }

    /// Whether the caller with the token `token` reads may call `operation` here (with its
    /// user's name): always on a node without `--auth` (no name, and the token is not read),
    /// else as
    /// [`crate::raft::auth::Identities::authorize`] decides.
    pub fn authorize(
        &self,
        operation: &str,
        token: impl FnOnce() -> Option<crate::wire::call::Token>,
    ) -> Result<Option<String>, crate::wire::error::Failure> {
        if !self.auth {
            return Ok(None);
        }
        let token = token();
        self.identities
            .authorize(
                self.operations,
                operation,
                token.as_ref().map(|t| t.0.as_str()),
            )
            .map(Some)
    }

    /// What a watcher with `token` may see of `filter` here: all it asks on a node without
    /// `--auth`, else as [`crate::raft::auth::Identities::watch_filter`] decides.
    pub fn authorize_watch(
        &self,
        token: Option<&str>,
        filter: crate::raft::feed::WatchFilter,
    ) -> Result<crate::raft::feed::WatchFilter, crate::wire::error::Failure> {
        if !self.auth {
            return Ok(filter);
        }
        self.identities.watch_filter(self.operations, token, filter)
    }

    /// The node's id.
    pub fn id(&self) -> NodeId {
        self.id
    }

    /// The node's addresses.
    pub fn addr(&self) -> &NodeAddr {
        &self.addr
    }

    /// The openraft handle (metrics, waits).
    pub fn raft(&self) -> &Raft {
        &self.raft
    }

    /// The local state machine.
    pub fn state_machine(&self) -> &StateMachine {
        &self.sm
    }

    /// Watches what this node applies, from log index `from` (0: from the next command), the
    /// events `filter` passes ([`crate::raft::feed`]). A follower serves what it has applied.
    pub fn watch(
        &self,
        from: u64,
        filter: crate::raft::feed::WatchFilter,
    ) -> crate::raft::feed::WatchStream {
        self.sm.watch(from, filter)
    }

    /// Makes this node a one-member cluster (once, on a pristine node); others then join it.
    pub async fn init_cluster(&self) -> Result<(), NodeError> {
        let members = BTreeMap::from([(self.id, self.addr.clone())]);
        match self.raft.initialize(members).await {
            Ok(()) => Ok(()),
            Err(e) if matches!(e.api_error(), Some(InitializeError::NotAllowed(_))) => {
                tracing::info!("already initialized");
                Ok(())
            }
            Err(e) => Err(NodeError::Raft(e.to_string())),
        }
    }

    /// Asks the cluster reachable at `seed` (a raft address) to add this node as a voter.
    ///
    /// A node that its own membership already holds as a voter at its raft address (a member
    /// restarted) rejoins by itself, even while there is no leader: it returns at once, and
    /// asks in the background only if its API addresses changed (the leader records them).
    pub async fn join(self: &Arc<Self>, seed: &str) -> Result<(), NodeError> {
        // What the state machine applied (openraft's metrics may not hold it yet at start).
        let (_, stored) = openraft::storage::RaftStateMachine::applied_state(&mut self.sm.clone())
            .await
            .map_err(NodeError::from)?;
        let membership = stored.membership();
        let known = membership
            .voter_ids()
            .any(|v| v == self.id)
            .then(|| membership.get_node(&self.id).cloned())
            .flatten();
        match known {
            Some(addr) if addr == self.addr => return Ok(()),
            Some(addr) if addr.raft == self.addr.raft => {
                let (node, seed) = (self.clone(), seed.to_string());
                tokio::spawn(async move {
                    if let Err(e) = node.ask_to_join(&seed).await {
                        tracing::warn!("a member restarted with new API addresses: {e}");
                    }
                });
                return Ok(());
            }
            _ => {}
        }
        self.ask_to_join(seed).await
    }

    /// Asks the cluster reachable at `seed` to add (or update) this node as a voter.
    async fn ask_to_join(&self, seed: &str) -> Result<(), NodeError> {
        let join = AdminRequest::Join {
            id: self.id,
            addr: self.addr.clone(),
        };
        // Not the cached peer client: a join may take as long as the learner's catch-up.
        let timeout = join.timeout();
        let request = Message::Admin(join);
        let mut target = seed.to_string();
        let mut retry = Retry::new();
        while retry.next().await {
            let answer = match RaftClient::connect_for(&target, &self.credentials, timeout).await {
                Ok(client) => network::call(&client, &request).await,
                Err(status) => Err(status),
            };
            match answer {
                Ok(Answer::Admin(_)) => return Ok(()),
                Ok(Answer::NotLeader(Some((_, leader)))) => target = leader.raft,
                Ok(other) => tracing::warn!(?other, "join refused"),
                Err(e) => tracing::warn!(error = %e, %target, "join attempt failed"),
            }
        }
        Err(NodeError::NoLeader(format!(
            "could not join through {seed}"
        )))
    }

    /// Sends `message` to the leader `leader_id` at `addr` until `deadline`, and gives up
    /// early once this node knows another leader, or none: a write or read forwarded to a
    /// leader that was cut off must not wait out the transport's timeouts when the cluster has
    /// moved on.
    async fn ask_leader(
        &self,
        leader_id: NodeId,
        addr: &NodeAddr,
        message: &Message,
        deadline: tokio::time::Instant,
    ) -> Asked {
        tokio::select! {
            answer = tokio::time::timeout_at(deadline, self.send_to(&addr.raft, message)) => {
                answer.map_or(Asked::TimedOut, Asked::Answer)
            }
            () = self.leader_moved_from(leader_id) => Asked::Moved,
        }
    }

    /// Resolves once this node's view of the leader is no longer `leader_id`.
    async fn leader_moved_from(&self, leader_id: NodeId) {
        let mut metrics = self.raft.metrics();
        loop {
            if metrics.borrow_and_update().current_leader != Some(leader_id) {
                return;
            }
            if metrics.changed().await.is_err() {
                // Raft stopped: the call's own deadline ends the wait.
                return std::future::pending().await;
            }
        }
    }

    async fn send_to(&self, raft_addr: &str, message: &Message) -> Result<Answer, Status> {
        let client = self.peer(raft_addr).await?;
        let answer = network::call(&client, message).await;
        if answer.is_err()
            && let Ok(mut peers) = self.peers.lock()
        {
            peers.remove(raft_addr);
        }
        answer
    }

    async fn peer(&self, raft_addr: &str) -> Result<RaftClient, Status> {
        if let Some(c) = self
            .peers
            .lock()
            .ok()
            .and_then(|p| p.get(raft_addr).cloned())
        {
            return Ok(c);
        }
        let client = RaftClient::connect(raft_addr, &self.credentials).await?;
        if let Ok(mut peers) = self.peers.lock() {
            peers.insert(raft_addr.to_string(), client.clone());
        }
        Ok(client)
    }

    /// The current leader and its addresses, if known.
    pub fn leader(&self) -> Option<(NodeId, NodeAddr)> {
        // Borrow, not clone: this runs on every forwarded write.
        let watch = self.raft.metrics();
        let metrics = watch.borrow_watched();
        let id = metrics.current_leader?;
        let node = metrics
            .membership_config
            .membership()
            .get_node(&id)?
            .clone();
        Some((id, node))
    }

    /// What `pick` takes of each member of the current membership (voters and learners: all
    /// of them apply the log), this node included.
    fn members<T>(&self, pick: impl Fn(NodeId, &NodeAddr) -> Option<T>) -> Vec<T> {
        let watch = self.raft.metrics();
        let metrics = watch.borrow_watched();
        metrics
            .membership_config
            .membership()
            .nodes()
            .filter_map(|(id, node)| pick(*id, node))
            .collect()
    }

    /// Whether this node leads without having heard from a quorum within the leader lease
    /// (the election timeout's upper bound): what openraft's check-quorum refuses writes for.
    fn quorum_lost(&self) -> bool {
        let lease = Duration::from_millis(self.raft.config().election_timeout_max);
        let metrics = self.raft.metrics();
        let m = metrics.borrow_watched();
        m.state == ServerState::Leader
            && m.membership_config
                .membership()
                .voter_ids()
                .nth(1)
                .is_some()
            && m.last_quorum_acked
                .as_ref()
                .is_some_and(|acked| openraft::Instant::elapsed(&**acked) > lease)
    }

    fn is_leader(&self) -> bool {
        self.raft.metrics().borrow_watched().state == ServerState::Leader
    }

    /// What the node counts (see [`crate::raft::metrics`]).
    pub fn metrics(&self) -> &crate::raft::metrics::NodeMetrics {
        &self.metrics
    }

    /// Resolves when raft stops on a fatal error (a storage failure, say), with the error.
    pub async fn fatal(&self) -> String {
        let mut metrics = self.raft.metrics();
        loop {
            if let Err(fatal) = &metrics.borrow_and_update().running_state {
                return fatal.to_string();
            }
            if metrics.changed().await.is_err() {
                return "raft stopped".to_string();
            }
        }
    }

    /// Stops openraft.
    pub async fn shutdown(&self) {
        if let Err(e) = self.raft.shutdown().await {
            tracing::warn!(error = %e, "raft shutdown");
        }
    }
}

/// What asking the leader came to (see [`RaftNode::ask_leader`]).
enum Asked {
    /// The leader answered, or the transport failed.
    Answer(Result<Answer, Status>),
    /// This node learned of another leader, or lost the one it knew, first.
    Moved,
    /// The deadline passed first.
    TimedOut,
}

/// Paces a retry loop: attempts until [`RETRY_FOR`] has passed, waiting 50 ms doubling up to
/// 400 ms between them.
struct Retry {
    deadline: tokio::time::Instant,
    attempt: u32,
}

impl Retry {
    fn new() -> Self {
        Self::until(tokio::time::Instant::now() + RETRY_FOR)
    }

    fn until(deadline: tokio::time::Instant) -> Self {
        Retry {
            deadline,
            attempt: 0,
        }
    }

    /// Waits before every attempt but the first; false once the deadline has passed.
    async fn next(&mut self) -> bool {
        if self.attempt > 0 {
            let ms = (25u64 << self.attempt.min(5)).min(400);
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
        self.attempt += 1;
        tokio::time::Instant::now() < self.deadline
    }
}
