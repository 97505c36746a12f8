//! A TLS cluster of `bank node` processes on 127.0.0.1: the API listeners speak only TLS and
//! the raft listeners only mutual TLS with a certificate the cluster's CA signed (the secret is
//! still required on top).

use std::path::Path;
use std::time::Duration;

use bank::validator;
use bank_generated::BankApi;
use bank_generated::grpc::GrpcClient;
use bank_generated::jsonrpc::JsonRpcClient;
use runtime::net::tls::{CertAuthority, Tls, hosts_for};
use runtime::ops::cluster::LocalCluster;
use runtime::raft::network::{AdminRequest, Answer, Message, call};
use runtime::raft::rpc::{RaftClient, RaftCredentials};

const EXE: &str = env!("CARGO_BIN_EXE_bank");

/// Asks node `raft` for its status with `credentials`: the answer, or why there is none.
async fn status(raft: &str, credentials: &RaftCredentials) -> Result<Answer, String> {
    let client = RaftClient::connect(raft, credentials)
        .await
        .map_err(|s| s.message().to_string())?;
    call(&client, &Message::Admin(AdminRequest::Status))
        .await
        .map_err(|s| s.message().to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_cluster_serves_its_api_over_tls_and_takes_only_peers_the_ca_signed() {
    let dir = tempfile::tempdir().expect("temp dir");
    let c = LocalCluster::start_with_tls(Path::new(EXE), dir.path(), 3, Vec::new())
        .await
        .unwrap_or_else(|e| panic!("TLS cluster did not start: {e}"));
    let leader = c
        .wait_for_leader(Duration::from_secs(60))
        .await
        .expect("leader");
    let tls = c.credentials.tls.clone().expect("the cluster has TLS");
    let ca = tls.ca().clone();

    // The walk-through over TLS, through a follower (forwarded writes) and through the leader.
    let follower = c.nodes.iter().find(|n| n.id != leader).expect("follower");
    let grpc = GrpcClient::connect_tls(&follower.api, ca.clone())
        .await
        .expect("TLS gRPC connect");
    validator::run(&grpc)
        .await
        .expect("walk-through over gRPC+TLS");
    let jsonrpc = JsonRpcClient::with_tls(&c.node(leader).expect("leader").jsonrpc, ca.clone())
        .expect("client");
    validator::run(&jsonrpc)
        .await
        .expect("walk-through over JSON-RPC+TLS");

    // Plaintext clients get nothing from the API listeners.
    let refused = match GrpcClient::connect(&follower.api).await {
        Err(e) => e.to_string(),
        Ok(plain) => match plain.list_accounts(0, 10).await {
            Err(e) => e.to_string(),
            Ok(accounts) => panic!("plaintext gRPC answered: {accounts:?}"),
        },
    };
    assert!(!refused.is_empty());
    let plain = JsonRpcClient::new(&follower.jsonrpc).expect("client");
    let answer = plain.list_accounts(0, 10).await;
    assert!(answer.is_err(), "plaintext JSON-RPC answered: {answer:?}");

    // The raft listener: the right secret is not enough without TLS, nor with a certificate
    // another CA signed; the cluster's own credentials are let in.
    let node = &c.nodes[0].raft;
    let plaintext = status(node, &RaftCredentials::plain(c.credentials.secret.clone())).await;
    assert!(plaintext.is_err(), "plaintext raft answered: {plaintext:?}");
    let intruder_ca = CertAuthority::new("intruder").expect("ca");
    let (cert, key) = intruder_ca
        .issue("intruder", &hosts_for("127.0.0.1"))
        .expect("issue");
    // It trusts the cluster's CA (so the node's certificate passes) but presents its own.
    let ca_pem = std::fs::read(dir.path().join("tls").join("ca.pem")).expect("ca.pem");
    let intruder = RaftCredentials {
        secret: c.credentials.secret.clone(),
        tls: Some(
            Tls::from_pem(ca_pem, cert.into_bytes(), key.into_bytes()).expect("intruder tls"),
        ),
    };
    let foreign = status(node, &intruder).await;
    assert!(
        foreign.is_err(),
        "a certificate from another CA was let in: {foreign:?}"
    );
    let admitted = status(node, &c.credentials).await;
    assert!(matches!(admitted, Ok(Answer::Admin(_))), "{admitted:?}");

    let replicas = c
        .converged(Duration::from_secs(60))
        .await
        .expect("replicas converge over mutual TLS");
    assert_eq!(replicas.len(), 3);

    // The peers' connections authenticated through TLS (the listener saw their secret) and
    // stay: past the handshake time, nodes 2 and 3 (which the refused clients above never
    // reached) have closed none.
    tokio::time::sleep(runtime::net::conn::RAFT_HANDSHAKE + Duration::from_secs(1)).await;
    for id in [2, 3] {
        let status = c.status(id).await.expect("status");
        assert_eq!(status.unauthenticated_closed, 0, "node {id}: {status:?}");
    }
}
