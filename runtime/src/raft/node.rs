//! One node: the openraft instance with its SQLite log and state machine, the raft service it
//! answers on its own listener, and the write / read / admin paths the API servers call.
//!
//! Writes: on the leader, proposed to the log; on a follower, forwarded to the leader over the
//! raft service and the outcome relayed back. Bounded attempts with backoff, no endless loops.
//! Reads never enter the log: [`ReadLevel::Linearizable`] (the default) takes a read index from
//! the leader (`ensure_linearizable`) and waits until the local state machine has applied it;
//! [`ReadLevel::Stale`] reads the local state as it is.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub use crate::call::ReadLevel;
use crate::call::Session;
use openraft::async_runtime::WatchReceiver;
use openraft::errors::{ClientWriteError, InitializeError};
use openraft::{Config, ReadPolicy, ServerState, SnapshotPolicy};
use serde_json::json;
use tokio::io::AsyncWriteExt;
use tonic::Status;

use super::log_store::{LogStore, LogStoreError};
use super::network::{self, AdminRequest, Answer, Incoming, Message, Network};
use super::read_index::ReadIndexRounds;
use super::state_machine::{Application, SnapshotFile, StateMachine};
use super::types::{Applied, C, Envelope, NodeAddr, NodeId, Rejected};
use crate::raft_rpc::{RaftClient, RaftCredentials, RaftHandler};
use crate::version::{Gate, Schema, Shape};

/// The raft handle of a node.
pub type Raft = openraft::Raft<C, StateMachine>;

/// One answer on a replication stream: openraft's result, or the fatal error that stopped the
/// follower's raft.
pub type StreamAnswer = Result<openraft::raft::StreamAppendResult<C>, String>;

/// How long a write or read keeps retrying across a leader change before it gives up (several
/// election timeouts: a failover on a loaded machine fits well inside it).
const RETRY_FOR: Duration = Duration::from_secs(20);
/// The longest a read-index request from a follower is served.
const HANDLER_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest an admin request (e.g. adding a learner that must catch up) may take.
pub const ADMIN_TIMEOUT: Duration = Duration::from_secs(120);

/// The state database's file name in a node's data directory.
pub const STATE_DB: &str = "state.db";

/// The raft log's database in a node's data directory.
pub const LOG_DB: &str = "raft-log.db";

/// The snapshots' directory in a node's data directory.
pub const SNAPSHOT_DIR: &str = "snapshots";

/// The raft state in `data_dir`: its log, its state database (with their WAL files), and
/// every file in its snapshots' directory. Empty for a new node.
pub fn raft_state_in(data_dir: &Path) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(data_dir)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .filter(|e| {
            let name = e.file_name();
            let name = name.to_string_lossy();
            name.starts_with(LOG_DB) || name.starts_with(STATE_DB)
        })
        .map(|e| e.path())
        .collect();
    found.extend(
        std::fs::read_dir(data_dir.join(SNAPSHOT_DIR))
            .into_iter()
            .flatten()
            .filter_map(|e| e.ok())
            .map(|e| e.path()),
    );
    found.sort();
    found
}

/// Where a node keeps the backup it made last, in its data directory.
const BACKUP_DIR: &str = "backups";

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
}

/// Default of [`NodeConfig::max_command_bytes`]: 4 MiB (a gRPC API call carries at most that
/// by default anyway).
pub const DEFAULT_MAX_COMMAND_BYTES: usize = 4 << 20;

/// The highest [`NodeConfig::max_command_bytes`] a node takes: any one entry must fit in a raft
/// message ([`crate::raft::network::MAX_MESSAGE`]) with room to spare.
pub const MAX_COMMAND_BYTES_LIMIT: usize = 64 << 20;

impl NodeConfig {
    /// Defaults that tolerate a loaded 2-core machine: 250 ms heartbeats, 1.5–3 s elections.
    pub fn new(id: NodeId, data_dir: PathBuf, credentials: RaftCredentials) -> Self {
        NodeConfig {
            id,
            data_dir,
            credentials,
            heartbeat: Duration::from_millis(250),
            election_timeout: (Duration::from_millis(1500), Duration::from_millis(3000)),
            snapshot_every: 10_000,
            keep_logs: 1_000,
            redirect_writes: false,
            cluster_name: "raftgen".into(),
            max_command_bytes: DEFAULT_MAX_COMMAND_BYTES,
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
    /// This node redirects writes: send them to the leader (if one is known).
    #[error("not the leader; the leader is {}", .0.as_ref().map_or("unknown".to_string(), |a| a.to_string()))]
    NotLeader(Option<NodeAddr>),
}

/// One running node.
pub struct RaftNode {
    id: NodeId,
    addr: NodeAddr,
    credentials: RaftCredentials,
    metrics: crate::metrics::NodeMetrics,
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
    /// What each member's build knows, as last asked (see [`crate::version`]); the leader's
    /// gate reads it.
    gate: Gate,
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
    /// to reach it. Serve the returned node with [`crate::raft_rpc::serve_raft`] on the raft
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
        let log = LogStore::open(&config.data_dir.join(LOG_DB))?;
        let sm = StateMachine::open(app, &config.data_dir.join(STATE_DB), &snapshot_dir)?;
        let storage_metrics = crate::metrics::StorageMetrics {
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
            metrics: crate::metrics::NodeMetrics::new(storage_metrics),
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
        });
        if !node.schema.is_opaque() {
            tokio::spawn(refresh_schemas(Arc::downgrade(&node)));
        }
        Ok(node)
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
    pub async fn join(&self, seed: &str) -> Result<(), NodeError> {
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

    /// Proposes a serialized command (from an API caller) and waits for its outcome. With the
    /// caller's own request id the write is idempotent end to end (a retry with the same id is
    /// answered from the session record); without one, this node's session numbers it.
    pub async fn write(
        &self,
        command: Vec<u8>,
        request: Option<crate::call::RequestId>,
    ) -> Result<Applied, NodeError> {
        if self.redirect_writes && !self.is_leader() {
            return Err(NodeError::NotLeader(self.leader().map(|(_, addr)| addr)));
        }
        // Without the caller's id, this node's session numbers the write; the guard keeps its
        // acknowledgement below the write until the outcome is in (or the call is dropped).
        // The caller's ids and this node's session live in separate namespaces: no caller can
        // pick an id that collides with the node's.
        let (id, client, in_flight) = match request {
            Some(id) => {
                let client = format!("c:{}", id.client);
                (id, client, None)
            }
            None => {
                let in_flight = self.session.begin();
                let client = format!("n:{}", in_flight.id.client);
                (in_flight.id.clone(), client, Some(in_flight))
            }
        };
        let envelope = Envelope {
            client,
            seq: id.seq,
            ack: id.ack.min(id.seq),
            time_us: now_us(),
            command,
        };
        let outcome = self.propose(envelope).await;
        drop(in_flight);
        outcome
    }

    /// Proposes an envelope with the caller's own client id and sequence number: a retry with
    /// the same pair is applied at most once and gets the original outcome.
    pub async fn propose(&self, envelope: Envelope) -> Result<Applied, NodeError> {
        // Bounded where it enters: on the node the client reached, and again on the leader
        // (whose limit is the one that counts for the log).
        if envelope.command.len() > self.max_command_bytes {
            return Err(NodeError::TooLarge {
                size: envelope.command.len(),
                limit: self.max_command_bytes,
            });
        }
        let mut last_error = String::from("no attempt made");
        let mut retry = Retry::new();
        let deadline = retry.deadline;
        while retry.next().await {
            if self.is_leader() {
                self.admit(&envelope.command).await?;
                let mut env = envelope.clone();
                env.time_us = now_us();
                let written = tokio::time::timeout_at(deadline, self.raft.client_write(env)).await;
                let Ok(written) = written else {
                    last_error = "no quorum before the deadline".into();
                    break;
                };
                match written {
                    Ok(response) => return Ok(response.data?),
                    Err(e) => match e.api_error() {
                        Some(ClientWriteError::ForwardToLeader(to)) => {
                            // Check-quorum: a leader that has not heard from a quorum within
                            // its lease says so now, and the client can try another node. (A
                            // leader just elected may refuse the same way for a moment: that
                            // one has heard from no quorum yet, and is retried.)
                            if to.leader_id.is_none() && self.quorum_lost() {
                                return Err(NodeError::NoQuorum(self.id));
                            }
                            last_error = "leadership moved".into();
                        }
                        Some(ClientWriteError::LogEntryDiscarded(_)) => {
                            // Unknown outcome: the retry is deduplicated by (client, seq).
                            last_error = "entry discarded by a leader change".into();
                        }
                        _ => return Err(NodeError::Raft(e.to_string())),
                    },
                }
            } else if let Some((leader_id, leader)) = self.leader() {
                let forwarded = tokio::time::timeout_at(
                    deadline,
                    self.send_to(&leader.raft, &Message::Forward(envelope.clone())),
                )
                .await;
                let Ok(forwarded) = forwarded else {
                    last_error = format!("node {leader_id} did not answer before the deadline");
                    break;
                };
                match forwarded {
                    Ok(Answer::Applied(applied)) => return Ok(applied),
                    Ok(Answer::Rejected(reason)) => return Err(Rejected(reason).into()),
                    Ok(Answer::NotLeader(_)) => {
                        last_error = format!("node {leader_id} is no longer leader")
                    }
                    Ok(Answer::Failed(e)) => last_error = e,
                    Ok(other) => last_error = format!("unexpected answer {other:?}"),
                    Err(status) => last_error = format!("forwarding to node {leader_id}: {status}"),
                }
            } else {
                last_error = "no leader elected".into();
            }
        }
        Err(NodeError::NoLeader(last_error))
    }

    /// The version gate (see [`crate::version`]): refuses a command some member's build
    /// cannot apply, naming it, or that this build cannot decode. Members never heard from, and
    /// those that seemed to lack the command (they may just have been upgraded), are asked
    /// first.
    async fn admit(&self, command: &[u8]) -> Result<(), NodeError> {
        if self.schema.is_opaque() {
            return Ok(());
        }
        self.check_members(command).await?;
        // Only what this build decodes enters the log: an entry no replica can read would stop
        // them all.
        self.sm
            .admit(command)
            .map_err(|refused| Rejected(refused.to_string()).into())
    }

    /// The members' half of [`RaftNode::admit`]. When every member runs this build's schema,
    /// this build's own decode (the other half) speaks for all of them, and the command is not
    /// read here at all.
    async fn check_members(&self, command: &[u8]) -> Result<(), NodeError> {
        let ids = self.members(|id, _| Some(id));
        if self.gate.all_run(&self.schema.version, &ids) {
            return Ok(());
        }
        let shape = Shape::of(command).map_err(Rejected)?;
        let verdict = self.gate.check(&shape, &ids);
        if verdict.admits() {
            return Ok(());
        }
        let ask = self.members(|id, addr| {
            let ask = id != self.id
                && (verdict.unasked.contains(&id)
                    || verdict.lacking.iter().any(|(lacking, ..)| *lacking == id));
            ask.then(|| (id, addr.clone()))
        });
        self.ask_schemas(ask).await;
        match self.gate.check(&shape, &ids).refusal() {
            Some(refused) => Err(refused.into()),
            None => Ok(()),
        }
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

    /// Asks `members` for their schemas at once and records the answers (no answer within
    /// [`SCHEMA_TIMEOUT`] is recorded as silence).
    async fn ask_schemas(&self, members: Vec<(NodeId, NodeAddr)>) {
        let asked = members.into_iter().map(|(id, addr)| async move {
            let answer =
                tokio::time::timeout(SCHEMA_TIMEOUT, self.send_to(&addr.raft, &Message::Schema))
                    .await;
            let schema = match answer {
                Ok(Ok(Answer::Schema(schema))) => Some(schema),
                _ => None,
            };
            self.gate.record(id, schema);
        });
        futures_util::future::join_all(asked).await;
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

    /// Answers a serialized query at the given consistency level.
    /// Every wait in it ends by one deadline, [`RETRY_FOR`] after the call.
    pub async fn read(&self, query: Vec<u8>, level: ReadLevel) -> Result<Vec<u8>, NodeError> {
        let started = tokio::time::Instant::now();
        let deadline = started + RETRY_FOR;
        let index = match level {
            ReadLevel::Linearizable => Some(self.read_index(deadline).await?),
            ReadLevel::Lease => Some(self.lease_index(deadline).await?),
            ReadLevel::Stale => None,
        };
        if let Some(index) = index {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            self.raft
                .wait(Some(left))
                .applied_index_at_least(Some(index), "linearizable read")
                .await
                .map_err(|e| NodeError::NoLeader(format!("read index {index} not applied: {e}")))?;
            if level == ReadLevel::Linearizable {
                self.metrics.read_index_wait(started.elapsed());
            }
        }
        Ok(self.sm.query(query).await?)
    }

    /// A read index from the leader's lease, without a round of messages: valid while the
    /// leader's lease holds, which assumes the nodes' clocks advance at about the same rate
    /// (no clock jumps longer than the lease). Falls back to a read-index round when this node
    /// is not the leader or its lease has lapsed.
    async fn lease_index(&self, deadline: tokio::time::Instant) -> Result<u64, NodeError> {
        if self.is_leader()
            && let Ok(read_log_id) = self.raft.ensure_linearizable(ReadPolicy::LeaseRead).await
        {
            return Ok(read_log_id.index());
        }
        self.read_index(deadline).await
    }

    /// A log index that a linearizable read must wait for, asked until `deadline`.
    async fn read_index(&self, deadline: tokio::time::Instant) -> Result<u64, NodeError> {
        let mut last_error = String::from("no attempt made");
        let mut retry = Retry::until(deadline);
        while retry.next().await {
            if self.is_leader() {
                if self.quorum_lost() {
                    return Err(NodeError::NoQuorum(self.id));
                }
                let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                match self.read_rounds.index(&self.raft, left).await {
                    Ok(index) => return Ok(index),
                    Err(e) => last_error = e,
                }
            } else if let Some((_, leader)) = self.leader() {
                let asked = tokio::time::timeout_at(
                    deadline,
                    self.send_to(&leader.raft, &Message::ReadIndex),
                )
                .await;
                match asked {
                    Ok(Ok(Answer::ReadIndex(index))) => return Ok(index),
                    Ok(Ok(other)) => last_error = format!("{other:?}"),
                    Ok(Err(status)) => last_error = status.to_string(),
                    Err(_) => last_error = "the leader did not answer before the deadline".into(),
                }
            } else {
                last_error = "no leader elected".into();
            }
        }
        Err(NodeError::NoLeader(last_error))
    }

    /// Status of this node as JSON: role, term, leader, indexes, members and per-node lag.
    pub fn status(&self) -> serde_json::Value {
        let m = self.raft.metrics().borrow_watched().clone();
        let membership = m.membership_config.membership();
        let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
        let nodes: BTreeMap<String, serde_json::Value> = membership
            .nodes()
            .map(|(id, node)| {
                let role = if voters.contains(id) {
                    "voter"
                } else {
                    "learner"
                };
                (
                    id.to_string(),
                    json!({"role": role, "api": node.api, "raft": node.raft}),
                )
            })
            .collect();
        let last_log = m.last_log_index.unwrap_or_default();
        let lag: BTreeMap<String, u64> = m
            .replication
            .as_ref()
            .map(|r| {
                r.iter()
                    .map(|(id, matched)| {
                        let matched = matched.as_ref().map_or(0, |l| l.index);
                        (id.to_string(), last_log.saturating_sub(matched))
                    })
                    .collect()
            })
            .unwrap_or_default();
        json!({
            "id": self.id,
            "role": format!("{:?}", m.state),
            "term": m.current_term,
            "leader": m.current_leader,
            "quorum_lost": self.quorum_lost(),
            "last_log_index": m.last_log_index,
            "committed_index": m.local_committed.map(|l| l.index),
            "last_applied_index": m.last_applied.map(|l| l.index),
            "snapshot_index": m.snapshot.map(|l| l.index),
            "purged_index": m.purged.map(|l| l.index),
            "members": nodes,
            "lag": lag,
            "schema": self.schema.version,
            "open_files_limit": crate::conn::nofile_limit(),
        })
    }

    fn backup_dir(&self) -> PathBuf {
        self.snapshot_dir
            .parent()
            .map_or_else(|| PathBuf::from(BACKUP_DIR), |d| d.join(BACKUP_DIR))
    }

    /// Makes a backup (see [`AdminRequest::Backup`]) and reports it.
    async fn backup(&self) -> std::io::Result<serde_json::Value> {
        let dir = self.backup_dir();
        tokio::fs::create_dir_all(&dir).await?;
        // One backup at a time on disk: the previous one goes.
        let mut entries = tokio::fs::read_dir(&dir).await?;
        while let Some(entry) = entries.next_entry().await? {
            tokio::fs::remove_file(entry.path()).await?;
        }
        let name = format!("backup-{:016x}.db", crate::raft::network::rand_id());
        let path = dir.join(&name);
        let (applied, digest) = self.sm.backup(path.clone()).await?;
        let (len, sha256) = crate::util::file_sha256(&path).await?;
        Ok(json!({
            "name": name,
            "len": len,
            "sha256": crate::util::hex(&sha256),
            "applied_index": applied,
            "digest": digest,
        }))
    }

    /// Up to one chunk of the backup `name` from `offset`.
    async fn read_backup(&self, name: &str, offset: u64) -> std::io::Result<Vec<u8>> {
        use tokio::io::{AsyncReadExt, AsyncSeekExt};
        let valid = name.starts_with("backup-")
            && name.ends_with(".db")
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.');
        if !valid {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("`{name}` is not a backup's name"),
            ));
        }
        let mut file = tokio::fs::File::open(self.backup_dir().join(name)).await?;
        file.seek(std::io::SeekFrom::Start(offset)).await?;
        let mut buf = Vec::with_capacity(crate::raft::network::SNAPSHOT_CHUNK);
        file.take(crate::raft::network::SNAPSHOT_CHUNK as u64)
            .read_to_end(&mut buf)
            .await?;
        Ok(buf)
    }

    /// What the node counts (see [`crate::metrics`]).
    pub fn metrics(&self) -> &crate::metrics::NodeMetrics {
        &self.metrics
    }

    /// Whether the node can serve: it knows a leader, and has applied every entry it knows is
    /// committed; else why not.
    pub fn readiness(&self) -> Result<(), String> {
        let m = self.raft.metrics().borrow_watched().clone();
        if m.current_leader.is_none() {
            return Err("no leader known".into());
        }
        let committed = m.local_committed.map_or(0, |l| l.index);
        let applied = m.last_applied.map_or(0, |l| l.index);
        if applied < committed {
            return Err(format!(
                "applied {applied} of {committed} committed entries"
            ));
        }
        Ok(())
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

    /// Runs an admin request here (membership changes must run on the leader).
    pub async fn admin(&self, request: AdminRequest) -> Answer {
        let needs_leader = !matches!(
            request,
            AdminRequest::Status
                | AdminRequest::Snapshot
                | AdminRequest::Digest
                | AdminRequest::Backup
                | AdminRequest::Failpoint { .. }
        );
        if needs_leader && !self.is_leader() {
            return Answer::NotLeader(self.leader());
        }
        let result: Result<serde_json::Value, String> = match request {
            AdminRequest::Status => Ok(self.status()),
            AdminRequest::Backup => self.backup().await.map_err(|e| e.to_string()),
            AdminRequest::Failpoint { name, actions } => {
                crate::failpoint::configure(&name, &actions)
                    .map(|()| json!({"failpoint": name, "actions": actions}))
            }
            AdminRequest::Digest => self
                .sm
                .digest()
                .await
                .map(|(digest, applied)| json!({"digest": digest, "last_applied_index": applied}))
                .map_err(|e| e.to_string()),
            AdminRequest::Snapshot => match self.raft.trigger().snapshot().await {
                Ok(()) => Ok(json!({"snapshot": "triggered"})),
                Err(e) => Err(e.to_string()),
            },
            AdminRequest::AddLearner { id, addr } => self
                .raft
                .add_learner(id, addr, true)
                .await
                .map(|r| json!({"log_index": r.log_id.index}))
                .map_err(|e| e.to_string()),
            AdminRequest::Promote { ids } => {
                let add: BTreeSet<NodeId> = ids.into_iter().collect();
                self.raft
                    .change_membership(openraft::ChangeMembers::AddVoterIds(add), false)
                    .await
                    .map(|r| json!({"log_index": r.log_id.index}))
                    .map_err(|e| e.to_string())
            }
            AdminRequest::Remove { id } => {
                let ids = BTreeSet::from([id]);
                let demoted = self
                    .raft
                    .change_membership(openraft::ChangeMembers::RemoveVoters(ids.clone()), false)
                    .await;
                match demoted {
                    Err(e) => Err(e.to_string()),
                    Ok(_) => self
                        .raft
                        .change_membership(openraft::ChangeMembers::RemoveNodes(ids), false)
                        .await
                        .map(|r| json!({"removed": id, "log_index": r.log_id.index}))
                        .map_err(|e| e.to_string()),
                }
            }
            AdminRequest::Join { id, addr } => {
                let voters: BTreeSet<NodeId> = self
                    .raft
                    .metrics()
                    .borrow_watched()
                    .membership_config
                    .membership()
                    .voter_ids()
                    .collect();
                if voters.contains(&id) {
                    Ok(json!({"joined": id, "already": true}))
                } else {
                    match self.raft.add_learner(id, addr, true).await {
                        Err(e) => Err(e.to_string()),
                        Ok(_) => self
                            .raft
                            .change_membership(
                                openraft::ChangeMembers::AddVoterIds(BTreeSet::from([id])),
                                false,
                            )
                            .await
                            .map(|r| json!({"joined": id, "log_index": r.log_id.index}))
                            .map_err(|e| e.to_string()),
                    }
                }
            }
            AdminRequest::TransferLeader { to } => self
                .raft
                .trigger()
                .transfer_leader(to)
                .await
                .map(|()| json!({"transfer_to": to}))
                .map_err(|e| e.to_string()),
        };
        match result {
            Ok(v) => Answer::Admin(v.to_string()),
            Err(e) => Answer::Failed(e),
        }
    }

    async fn handle_message(&self, message: Message) -> Answer {
        match message {
            Message::Append(rpc) => match self.raft.append_entries(rpc).await {
                Ok(r) => Answer::Append(r),
                Err(e) => Answer::Failed(e.to_string()),
            },
            Message::Vote(rpc) => match self.raft.vote(rpc).await {
                Ok(r) => Answer::Vote(r),
                Err(e) => Answer::Failed(e.to_string()),
            },
            Message::PreVote(rpc) => match self.raft.pre_vote(rpc).await {
                Ok(r) => Answer::Vote(r),
                Err(e) => Answer::Failed(e.to_string()),
            },
            Message::InstallSnapshot {
                id,
                vote,
                meta,
                len,
                sha256,
            } => {
                let path = self.incoming_path(id);
                // Only the whole file, exactly as sent, may replace the state.
                if let Err(e) = verify_transfer(&path, len, &sha256).await {
                    let _ = tokio::fs::remove_file(&path).await;
                    tracing::warn!(error = %e, transfer = id, "snapshot transfer refused");
                    return Answer::Failed(format!("snapshot transfer {id:016x}: {e}"));
                }
                let snapshot = openraft::alias::SnapshotOf::<super::types::C, SnapshotFile> {
                    meta,
                    snapshot: SnapshotFile { path },
                };
                match self.raft.install_full_snapshot(vote, snapshot).await {
                    Ok(r) => Answer::Snapshot(r),
                    Err(e) => Answer::Failed(e.to_string()),
                }
            }
            Message::Forward(envelope) => {
                if !self.is_leader() {
                    return Answer::NotLeader(self.leader());
                }
                let span = tracing::info_span!(
                    "forwarded",
                    client = %envelope.client,
                    seq = envelope.seq
                );
                match tracing::Instrument::instrument(self.propose(envelope), span).await {
                    Ok(applied) => Answer::Applied(applied),
                    Err(NodeError::Rejected(Rejected(reason))) => Answer::Rejected(reason),
                    Err(e) => Answer::Failed(e.to_string()),
                }
            }
            Message::ReadIndex => {
                if !self.is_leader() {
                    return Answer::NotLeader(self.leader());
                }
                if self.quorum_lost() {
                    return Answer::Failed(NodeError::NoQuorum(self.id).to_string());
                }
                match self.read_rounds.index(&self.raft, HANDLER_TIMEOUT).await {
                    Ok(index) => Answer::ReadIndex(index),
                    Err(e) => Answer::Failed(e),
                }
            }
            Message::Schema => Answer::Schema((*self.schema).clone()),
            Message::ReadBackup { name, offset } => match self.read_backup(&name, offset).await {
                Ok(bytes) => Answer::Bytes(bytes),
                Err(e) => Answer::Failed(format!("backup {name}: {e}")),
            },
            Message::Admin(request) => {
                match tokio::time::timeout(ADMIN_TIMEOUT, self.admin(request)).await {
                    Ok(answer) => answer,
                    Err(_) => Answer::Failed("admin request timed out".into()),
                }
            }
        }
    }

    fn incoming_path(&self, id: u64) -> PathBuf {
        self.snapshot_dir.join(format!("incoming-{id:016x}.part"))
    }

    async fn store_chunk(&self, id: u64, offset: u64, data: &[u8]) -> std::io::Result<()> {
        let path = self.incoming_path(id);
        let mut file = if offset == 0 {
            // A new transfer: what earlier ones left behind will never complete (openraft
            // sends one snapshot at a time to a follower).
            crate::raft::state_machine::remove_partial_transfers(&self.snapshot_dir);
            tokio::fs::File::from_std(crate::util::create_owner_only(&path)?)
        } else {
            let file = tokio::fs::OpenOptions::new()
                .append(true)
                .open(&path)
                .await?;
            let len = file.metadata().await?.len();
            if len != offset {
                return Err(std::io::Error::other(format!(
                    "snapshot chunk at {offset} but {len} bytes received"
                )));
            }
            file
        };
        // Made durable once, when the whole file is verified.
        file.write_all(data).await?;
        file.flush().await
    }

    /// Stops openraft.
    pub async fn shutdown(&self) {
        if let Err(e) = self.raft.shutdown().await {
            tracing::warn!(error = %e, "raft shutdown");
        }
    }
}

/// How long the version gate waits for a member's schema on a write.
const SCHEMA_TIMEOUT: Duration = Duration::from_secs(1);

/// How often a node asks every member for its schema again.
const SCHEMA_REFRESH: Duration = Duration::from_secs(3);

/// While the node lives, asks every other member for its schema every [`SCHEMA_REFRESH`], so
/// that the gate sees upgrades, downgrades and new members, and a follower that becomes leader
/// knows its members already (its first writes wait for nobody).
async fn refresh_schemas(node: std::sync::Weak<RaftNode>) {
    loop {
        tokio::time::sleep(SCHEMA_REFRESH).await;
        let Some(node) = node.upgrade() else {
            return;
        };
        node.gate.retain(&node.members(|id, _| Some(id)));
        let others = node.members(|id, addr| (id != node.id).then(|| (id, addr.clone())));
        node.ask_schemas(others).await;
    }
}

/// Checks that the received snapshot file at `path` is `len` bytes with this SHA-256, then makes
/// it durable (one fsync for the whole transfer; the chunks are written without).
async fn verify_transfer(
    path: &std::path::Path,
    len: u64,
    sha256: &[u8; 32],
) -> std::io::Result<()> {
    let received = tokio::fs::metadata(path).await?.len();
    if received != len {
        return Err(std::io::Error::other(format!(
            "{received} bytes received, {len} sent"
        )));
    }
    if crate::util::file_sha256(path).await?.1 != *sha256 {
        return Err(std::io::Error::other(
            "the received bytes do not match the sender's SHA-256",
        ));
    }
    tokio::fs::File::open(path).await?.sync_all().await
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

impl RaftHandler for RaftNode {
    fn append_stream(
        &self,
        requests: crate::raft_rpc::PayloadStream,
    ) -> Result<crate::raft_rpc::PayloadStream, Status> {
        use futures_util::StreamExt;
        // A request that does not decode ends the input; its error then ends the answers.
        let malformed = Arc::new(Mutex::new(None::<Status>));
        let seen = malformed.clone();
        let input = requests.scan((), move |_, payload| {
            let decoded = payload.and_then(|p| {
                super::types::decode::<openraft::raft::AppendEntriesRequest<C>>(&p)
                    .map_err(|e| Status::invalid_argument(format!("malformed append: {e}")))
            });
            std::future::ready(match decoded {
                Ok(request) => Some(request),
                Err(status) => {
                    if let Ok(mut slot) = seen.lock() {
                        *slot = Some(status);
                    }
                    None
                }
            })
        });
        let answers = self.raft.stream_append(Box::pin(input)).map(|result| {
            let result: StreamAnswer = result.map_err(|fatal| fatal.to_string());
            super::types::encode(&result).map_err(|e| Status::internal(e.to_string()))
        });
        let trailer = futures_util::stream::once(async move {
            malformed.lock().ok().and_then(|mut slot| slot.take())
        })
        .filter_map(|status| std::future::ready(status.map(Err)));
        Ok(Box::pin(answers.chain(trailer)))
    }

    async fn handle(&self, payload: Vec<u8>) -> Result<Vec<u8>, Status> {
        let answer = match network::decode(&payload).map_err(Status::invalid_argument)? {
            Incoming::Message(message) => self.handle_message(message).await,
            Incoming::Chunk { id, offset, data } => match self.store_chunk(id, offset, &data).await
            {
                Ok(()) => Answer::ChunkStored,
                Err(e) => Answer::Failed(e.to_string()),
            },
        };
        super::types::encode(&answer).map_err(|e| Status::internal(e.to_string()))
    }
}
