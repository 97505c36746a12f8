//! `bank demo`: a 3-node cluster of separate processes in a temporary directory, the
//! walk-through over gRPC via a follower and over JSON-RPC via the leader, the leader killed with
//! SIGKILL, a new leader elected, the walk-through again, and a report. With TLS, every
//! listener speaks it and the clients check the nodes' certificates against the cluster's CA.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use bank_generated::{grpc::GrpcClient, jsonrpc::JsonRpcClient};

use crate::validator;
use runtime::net::tls::ServerCa;
use runtime::ops::cluster::LocalCluster;
use runtime::ops::host::HostError as ClusterError;

/// Why the demo failed.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// The cluster misbehaved.
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    /// A client could not connect.
    #[error("client: {0}")]
    Client(runtime::Failure),
    /// The walk-through failed.
    #[error(transparent)]
    Validation(#[from] validator::ValidationError),
    /// The temporary directory could not be made.
    #[error("temporary directory: {0}")]
    Io(#[from] std::io::Error),
}

/// The clients of a demo cluster: plaintext, or TLS checked against the cluster's CA.
struct Clients(Option<ServerCa>);

impl Clients {
    async fn grpc(&self, addr: &str) -> Result<GrpcClient, DemoError> {
        match &self.0 {
            Some(ca) => GrpcClient::connect_tls(addr, ca.clone()).await,
            None => GrpcClient::connect(addr).await,
        }
        .map_err(DemoError::Client)
    }

    fn jsonrpc(&self, addr: &str) -> Result<JsonRpcClient, DemoError> {
        match &self.0 {
            Some(ca) => JsonRpcClient::with_tls(addr, ca.clone()),
            None => JsonRpcClient::new(addr),
        }
        .map_err(DemoError::Client)
    }
}

/// Runs the demo with the `bank` binary `exe` (`tls`: on every listener); returns the report.
pub async fn run(exe: &Path, tls: bool) -> Result<String, DemoError> {
    let dir = tempfile::tempdir()?;
    let mut out = String::new();
    let mut cluster = if tls {
        LocalCluster::start_with_tls(exe, dir.path(), 3, Vec::new()).await?
    } else {
        LocalCluster::start(exe, dir.path(), 3, Vec::new()).await?
    };
    let clients = Clients(cluster.credentials.tls.as_ref().map(|t| t.ca().clone()));
    let leader = cluster.wait_for_leader(Duration::from_secs(30)).await?;
    let term = cluster.status(leader).await?.term;
    let _ = writeln!(
        out,
        "cluster of 3 node processes up in {}{}",
        dir.path().display(),
        if tls {
            ", TLS on every listener (mutual between nodes)"
        } else {
            ""
        }
    );
    for n in &cluster.nodes {
        let _ = writeln!(
            out,
            "  node {}: gRPC {}  JSON-RPC {}  raft {}  metrics {}",
            n.id, n.api, n.jsonrpc, n.raft, n.metrics
        );
    }
    let _ = writeln!(out, "leader: node {leader} (term {term})");

    let follower = cluster
        .nodes
        .iter()
        .find(|n| n.id != leader)
        .map(|n| (n.id, n.api.clone()))
        .ok_or_else(|| ClusterError::Process("no follower".into()))?;
    let grpc = clients.grpc(&follower.1).await?;
    let report = validator::run(&grpc).await?;
    let _ = writeln!(
        out,
        "walk-through over gRPC via follower node {}: passed in {:?}",
        follower.0,
        report.elapsed()
    );
    let jsonrpc = clients.jsonrpc(&cluster.node(leader)?.jsonrpc)?;
    let report = validator::run(&jsonrpc).await?;
    let _ = writeln!(
        out,
        "walk-through over JSON-RPC via leader node {leader}: passed in {:?}",
        report.elapsed()
    );

    cluster.kill(leader)?;
    let _ = writeln!(out, "killed the leader, node {leader}, with SIGKILL");
    let new_leader = cluster.wait_for_leader(Duration::from_secs(60)).await?;
    let new_term = cluster.status(new_leader).await?.term;
    let _ = writeln!(out, "new leader: node {new_leader} (term {new_term})");
    let survivor = cluster
        .nodes
        .iter()
        .find(|n| n.is_running())
        .map(|n| (n.id, n.api.clone()))
        .ok_or_else(|| ClusterError::Process("no survivor".into()))?;
    let grpc = clients.grpc(&survivor.1).await?;
    let report = validator::run(&grpc).await?;
    let _ = writeln!(
        out,
        "walk-through over gRPC via node {} after failover: passed in {:?}",
        survivor.0,
        report.elapsed()
    );

    let replicas = cluster.converged(Duration::from_secs(30)).await?;
    for (id, applied, digest) in &replicas {
        let _ = writeln!(
            out,
            "  node {id}: applied index {applied}, digest {}",
            &digest[..16.min(digest.len())]
        );
    }
    let _ = writeln!(
        out,
        "replica digests equal: yes ({} live replicas)",
        replicas.len()
    );
    drop(cluster);
    Ok(out)
}
