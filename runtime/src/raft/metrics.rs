//! A node's metrics, served in Prometheus' text format on `--metrics-listen ADDR`
//! (`/metrics`), beside `/health` (the process serves) and `/ready` (it knows a leader and has
//! applied everything committed it knows of).
//!
//! - raft, read from openraft's metrics at each scrape: `raft_role` (one gauge per role, 1 for
//!   the current one), `raft_term`, `raft_leader_id`, `raft_last_log_index`,
//!   `raft_committed_index`, `raft_applied_index`, `raft_snapshot_index`, `raft_purged_index`,
//!   `raft_replication_lag{follower}` (on the leader), `raft_quorum_lost`,
//!   `raft_self_connects` (dials of a peer that connected to themselves, dropped);
//! - storage: `raft_storage_bytes` (the raft state's disk space), `raft_quota_bytes` and
//!   `raft_nospace_alarm` (1 while writes are refused for the quota, see
//!   [`crate::raft::node::quota`]);
//! - the change feed: `watchers` (now) and `watchers_refused` (over `--max-watchers`);
//! - `raft_unauthenticated_closed`: raft connections closed without an authenticated request;
//! - requests, counted where the API meets the node: `requests_total{operation, kind,
//!   outcome}` (outcome `ok`, a schema error kind, or a failure such as `Transport`) and
//!   `request_seconds{operation, kind}`;
//! - storage and apply: `raft_log_commit_seconds` (a log batch's commit, fsync included),
//!   `raft_apply_seconds` (an applied batch), `dedup_hits_total` (retries answered from a
//!   request record, late copies of acknowledged requests refused), `read_index_seconds` (a linearizable read's wait for its read index);
//! - snapshots: `raft_snapshots_built_total`, `raft_snapshots_installed_total`,
//!   `raft_snapshot_failures_total` (builds and installs that failed and are tried again) and
//!   `raft_snapshot_bytes` (the last one's size).

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::raft::status::{NodeStatus, Role};
use crate::wire::CallKind;

/// Labels of a request counter.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    operation: String,
    kind: String,
    outcome: String,
}

/// Labels of a request latency histogram.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OperationLabels {
    operation: String,
    kind: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RoleLabels {
    role: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FollowerLabels {
    follower: String,
}

/// The buckets every latency histogram of a node uses: 50 µs to ~3.3 s.
pub fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.00005, 2.0, 17))
}

/// What the node's storage counts itself (see [`NodeMetrics::new`]).
pub struct StorageMetrics {
    /// The raft log's commit latency.
    pub log_commit_seconds: Histogram,
    /// What the state machine counts.
    pub state_machine: StateMachineMetrics,
}

/// What the state machine counts; cloning shares the counters.
#[derive(Clone)]
pub struct StateMachineMetrics {
    /// Apply latency per batch.
    pub apply_seconds: Histogram,
    /// Commits of the state database (each holds one or more applied batches).
    pub commits: Counter,
    /// Retries answered from a request record, and late copies of acknowledged requests
    /// refused.
    pub dedup_hits: Counter,
    /// Snapshots this node built.
    pub snapshots_built: Counter,
    /// Snapshots this node installed from its leader.
    pub snapshots_installed: Counter,
    /// The size of the last snapshot built or installed, in bytes.
    pub snapshot_bytes: Gauge,
    /// Snapshot builds and installs that failed (each is tried again).
    pub snapshot_failures: Counter,
}

impl Default for StateMachineMetrics {
    fn default() -> Self {
        StateMachineMetrics {
            apply_seconds: latency_histogram(),
            commits: Counter::default(),
            dedup_hits: Counter::default(),
            snapshots_built: Counter::default(),
            snapshots_installed: Counter::default(),
            snapshot_bytes: Gauge::default(),
            snapshot_failures: Counter::default(),
        }
    }
}

impl StateMachineMetrics {
    /// Records a snapshot of `bytes` bytes, built here or installed from the leader.
    pub fn snapshot(&self, bytes: u64, installed: bool) {
        let counter = if installed {
            &self.snapshots_installed
        } else {
            &self.snapshots_built
        };
        counter.inc();
        self.snapshot_bytes.set(gauge_value(bytes));
    }
}

/// What a node counts; cheap to clone (every part is shared).
#[derive(Clone)]
pub struct NodeMetrics {
    registry: Arc<Registry>,
    requests: Family<RequestLabels, Counter>,
    request_seconds: Family<OperationLabels, Histogram, fn() -> Histogram>,
    /// The counter and histogram of every (operation, kind, outcome) seen, resolved once: a
    /// request then records with two lookups by `&str` and no allocation.
    resolved: Arc<RwLock<HashMap<String, Resolved>>>,
    role: Family<RoleLabels, Gauge>,
    lag: Family<FollowerLabels, Gauge>,
    gauges: Arc<RaftGauges>,
    read_index_seconds: Histogram,
}

impl std::fmt::Debug for NodeMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeMetrics").finish_non_exhaustive()
    }
}

/// One operation's resolved request metrics, per kind, by outcome.
#[derive(Default)]
struct Resolved {
    command: HashMap<String, (Counter, Histogram)>,
    query: HashMap<String, (Counter, Histogram)>,
}

impl Resolved {
    fn of(&mut self, kind: CallKind) -> &mut HashMap<String, (Counter, Histogram)> {
        match kind {
            CallKind::Command => &mut self.command,
            CallKind::Query => &mut self.query,
        }
    }

    fn get(&self, kind: CallKind, outcome: &str) -> Option<&(Counter, Histogram)> {
        match kind {
            CallKind::Command => self.command.get(outcome),
            CallKind::Query => self.query.get(outcome),
        }
    }
}

#[derive(Default)]
struct RaftGauges {
    term: Gauge,
    leader: Gauge,
    last_log: Gauge,
    committed: Gauge,
    applied: Gauge,
    snapshot: Gauge,
    purged: Gauge,
    quorum_lost: Gauge,
    self_connects: Gauge,
    storage: Gauge,
    quota: Gauge,
    nospace: Gauge,
    watchers: Gauge,
    watchers_refused: Gauge,
    unauthenticated_closed: Gauge,
}

impl NodeMetrics {
    /// The node's metrics, with what its storage counts itself.
    pub fn new(storage: StorageMetrics) -> Self {
        let mut registry = Registry::default();
        registry.register(
            "raft_log_commit_seconds",
            "Time to commit one batch of raft log writes, fsync included",
            storage.log_commit_seconds,
        );
        let sm = storage.state_machine;
        registry.register(
            "raft_apply_seconds",
            "Time to apply one batch of committed entries",
            sm.apply_seconds,
        );
        registry.register(
            "raft_state_commits",
            "Commits of the state database, each holding one or more applied batches",
            sm.commits,
        );
        registry.register(
            "dedup_hits",
            "Retried requests answered from their record, or late copies of acknowledged ones refused, instead of applied again",
            sm.dedup_hits,
        );
        registry.register(
            "raft_snapshots_built",
            "Snapshots this node built",
            sm.snapshots_built,
        );
        registry.register(
            "raft_snapshots_installed",
            "Snapshots this node installed from its leader",
            sm.snapshots_installed,
        );
        registry.register(
            "raft_snapshot_bytes",
            "The size of the last snapshot built or installed",
            sm.snapshot_bytes,
        );
        registry.register(
            "raft_snapshot_failures",
            "Snapshot builds and installs that failed (each is tried again)",
            sm.snapshot_failures,
        );
        let read_index_seconds = latency_histogram();
        registry.register(
            "read_index_seconds",
            "A linearizable read's wait for its read index (and for it to be applied)",
            read_index_seconds.clone(),
        );
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "requests",
            "API requests by operation, kind and outcome",
            requests.clone(),
        );
        let request_seconds =
            Family::<OperationLabels, Histogram, fn() -> Histogram>::new_with_constructor(
                latency_histogram,
            );
        registry.register(
            "request_seconds",
            "Time from a request reaching the node to its answer",
            request_seconds.clone(),
        );
        let role = Family::<RoleLabels, Gauge>::default();
        registry.register(
            "raft_role",
            "1 for the node's current raft role",
            role.clone(),
        );
        let lag = Family::<FollowerLabels, Gauge>::default();
        registry.register(
            "raft_replication_lag",
            "Entries a follower is behind the leader's log (on the leader)",
            lag.clone(),
        );
        let gauges = RaftGauges::default();
        for (name, help, gauge) in [
            ("raft_term", "The current term", &gauges.term),
            (
                "raft_leader_id",
                "The leader's id (0: none known)",
                &gauges.leader,
            ),
            (
                "raft_last_log_index",
                "The last log index",
                &gauges.last_log,
            ),
            (
                "raft_committed_index",
                "The last committed index known",
                &gauges.committed,
            ),
            (
                "raft_applied_index",
                "The last applied index",
                &gauges.applied,
            ),
            (
                "raft_snapshot_index",
                "The last snapshot's index",
                &gauges.snapshot,
            ),
            (
                "raft_purged_index",
                "The last purged log index",
                &gauges.purged,
            ),
            (
                "raft_quorum_lost",
                "1 when this leader has not heard from a quorum within its lease",
                &gauges.quorum_lost,
            ),
            (
                "raft_storage_bytes",
                "Disk space of the raft state (log segments, state database, snapshots)",
                &gauges.storage,
            ),
            (
                "raft_quota_bytes",
                "The storage quota (--quota-bytes; 0: none)",
                &gauges.quota,
            ),
            (
                "raft_nospace_alarm",
                "1 while the storage is at or past its quota and writes are refused (NoSpace)",
                &gauges.nospace,
            ),
            (
                "watchers",
                "Watchers of the change feed now",
                &gauges.watchers,
            ),
            (
                "watchers_refused",
                "Watches refused since the node started because it served --max-watchers already",
                &gauges.watchers_refused,
            ),
            (
                "raft_unauthenticated_closed",
                "Raft connections closed because they made no authenticated request in time",
                &gauges.unauthenticated_closed,
            ),
            (
                "raft_self_connects",
                "Dials of a peer that connected to themselves (the peer's port was free) and were dropped",
                &gauges.self_connects,
            ),
        ] {
            registry.register(name, help, gauge.clone());
        }
        NodeMetrics {
            registry: Arc::new(registry),
            requests,
            request_seconds,
            resolved: Arc::default(),
            role,
            lag,
            gauges: Arc::new(gauges),
            read_index_seconds,
        }
    }
}

fn kind_name(kind: CallKind) -> &'static str {
    match kind {
        CallKind::Command => "command",
        CallKind::Query => "query",
    }
}

fn gauge_value(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

impl NodeMetrics {
    /// Records one linearizable read's wait for its read index.
    pub fn read_index_wait(&self, elapsed: Duration) {
        self.read_index_seconds.observe(elapsed.as_secs_f64());
    }

    /// Counts one request of `operation` that ended with `outcome` after `elapsed`.
    pub fn request(&self, operation: &str, kind: CallKind, outcome: &str, elapsed: Duration) {
        let seconds = elapsed.as_secs_f64();
        if let Ok(resolved) = self.resolved.read()
            && let Some((count, latency)) =
                resolved.get(operation).and_then(|op| op.get(kind, outcome))
        {
            count.inc();
            latency.observe(seconds);
            return;
        }
        // The first request of its kind: resolve the labels once.
        let name = kind_name(kind);
        let count = self
            .requests
            .get_or_create(&RequestLabels {
                operation: operation.to_string(),
                kind: name.to_string(),
                outcome: outcome.to_string(),
            })
            .clone();
        let latency = self
            .request_seconds
            .get_or_create(&OperationLabels {
                operation: operation.to_string(),
                kind: name.to_string(),
            })
            .clone();
        count.inc();
        latency.observe(seconds);
        if let Ok(mut resolved) = self.resolved.write() {
            resolved
                .entry(operation.to_string())
                .or_default()
                .of(kind)
                .insert(outcome.to_string(), (count, latency));
        }
    }

    /// The Prometheus text of every metric, the raft ones from `status`.
    pub fn render(&self, status: &NodeStatus) -> String {
        let index = |value: Option<u64>| gauge_value(value.unwrap_or(0));
        let g = &self.gauges;
        g.term.set(gauge_value(status.term));
        g.leader.set(index(status.leader));
        g.last_log.set(index(status.last_log_index));
        g.committed.set(index(status.committed_index));
        g.applied.set(index(status.last_applied_index));
        g.snapshot.set(index(status.snapshot_index));
        g.purged.set(index(status.purged_index));
        g.quorum_lost.set(i64::from(status.quorum_lost));
        g.storage.set(gauge_value(status.storage_bytes));
        g.quota.set(index(status.quota_bytes));
        g.nospace.set(i64::from(status.nospace));
        g.watchers.set(gauge_value(status.watchers));
        g.watchers_refused.set(gauge_value(status.watchers_refused));
        g.unauthenticated_closed
            .set(gauge_value(status.unauthenticated_closed));
        g.self_connects
            .set(gauge_value(crate::raft::rpc::self_connects()));
        for role in Role::ALL {
            self.role
                .get_or_create(&RoleLabels {
                    role: role.name().into(),
                })
                .set(i64::from(role == status.role));
        }
        self.lag.clear();
        for (follower, behind) in &status.lag {
            self.lag
                .get_or_create(&FollowerLabels {
                    follower: follower.to_string(),
                })
                .set(gauge_value(*behind));
        }
        let mut text = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut text, &self.registry) {
            tracing::warn!(error = %e, "cannot encode the metrics");
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(metrics: &NodeMetrics) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &metrics.registry).expect("encode");
        text
    }

    /// Requests after the first of their (operation, kind, outcome) go through the resolved
    /// counters: they must be the registry's own.
    #[test]
    fn resolved_request_metrics_count_in_the_registry() {
        let metrics = NodeMetrics::new(StorageMetrics {
            log_commit_seconds: latency_histogram(),
            state_machine: StateMachineMetrics::default(),
        });
        let ms = Duration::from_millis(1);
        for _ in 0..3 {
            metrics.request("put", CallKind::Command, "ok", ms);
        }
        metrics.request("put", CallKind::Command, "Conflict", ms);
        metrics.request("put", CallKind::Query, "ok", ms);
        let text = text(&metrics);
        for line in [
            r#"requests_total{operation="put",kind="command",outcome="ok"} 3"#,
            r#"requests_total{operation="put",kind="command",outcome="Conflict"} 1"#,
            r#"requests_total{operation="put",kind="query",outcome="ok"} 1"#,
            r#"request_seconds_count{operation="put",kind="command"} 4"#,
            r#"request_seconds_count{operation="put",kind="query"} 1"#,
        ] {
            assert!(text.contains(line), "no `{line}` in\n{text}");
        }
    }
}
