//! The replicated bank as separate `bank node` processes on 127.0.0.1: the walk-through against
//! every node, failover under load, restart, snapshot catch-up, exactly-once retries and the
//! raft listener's secret. The tests in this file run one at a time (each starts processes).

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bank::validator;
use bank_generated::grpc::GrpcClient;
use bank_generated::{
    AccountType, BankApi, BankCallError, BankCommand, BankError, BankReply, decode_reply,
};
use runtime::ops::cluster::LocalCluster;
use runtime::raft::network::{Answer, Message, call};
use runtime::raft::rpc::{RaftClient, RaftCredentials};
use runtime::raft::types::Envelope;
use runtime::{CallError, Failure};
use rust_decimal::Decimal;
use tokio::sync::Mutex;

static ONE_AT_A_TIME: Mutex<()> = Mutex::const_new(());

const EXE: &str = env!("CARGO_BIN_EXE_bank");

async fn cluster(dir: &Path, n: usize, args: &[&str]) -> LocalCluster {
    LocalCluster::start(
        Path::new(EXE),
        dir,
        n,
        args.iter().map(|s| s.to_string()).collect(),
    )
    .await
    .unwrap_or_else(|e| panic!("cluster did not start: {e}"))
}

fn dec(s: &str) -> Decimal {
    s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn walkthrough_passes_against_every_node() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let c = cluster(dir.path(), 3, &[]).await;
    for node in &c.nodes {
        let client = GrpcClient::connect(&node.api).await.expect("connect");
        validator::run(&client)
            .await
            .unwrap_or_else(|e| panic!("node {}: {e}", node.id));
    }
    // `bank call` reaches a node as it reaches a single server (a follower forwards the write).
    let leader = c
        .wait_for_leader(Duration::from_secs(60))
        .await
        .expect("leader");
    let follower = c.nodes.iter().find(|n| n.id != leader).expect("a follower");
    let out = std::process::Command::new(EXE)
        .args(["call", "deposit", "--account-id", "1", "--amount", "10.00"])
        .args(["--connect", &follower.api])
        .output()
        .expect("bank call");
    assert!(
        out.status.success(),
        "bank call: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let balance: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON answer");
    assert!(balance.is_string(), "{balance}");
    let replicas = c
        .converged(Duration::from_secs(60))
        .await
        .expect("converged");
    assert_eq!(replicas.len(), 3);
    // `admin status`'s table: a header and one row per member, exactly one of them the leader,
    // every one at the converged applied index.
    let table = runtime::ops::admin::status_table(&follower.raft, &c.credentials)
        .await
        .expect("status table");
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 4, "{table}");
    assert!(lines[0].starts_with("id  role"), "{table}");
    assert_eq!(
        lines.iter().filter(|l| l.contains(" Leader ")).count(),
        1,
        "{table}"
    );
    let applied = replicas[0].1.to_string();
    for row in &lines[1..] {
        let cells: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(cells.get(5), Some(&applied.as_str()), "{table}");
        assert!(
            cells.get(8).is_some_and(|disk| disk.ends_with("/8.0GiB")),
            "the disk column shows the default quota: {table}"
        );
        assert_eq!(
            cells.get(9),
            Some(&bank_generated::SCHEMA_VERSION),
            "{table}"
        );
    }
}

/// Deposits and withdrawals from several clients against the followers while the leader is
/// killed: every acknowledged write is there afterwards and the money adds up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_under_load_loses_no_acknowledged_write() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let mut c = cluster(dir.path(), 3, &[]).await;
    let leader = c
        .wait_for_leader(Duration::from_secs(60))
        .await
        .expect("leader");
    let followers: Vec<String> = c
        .nodes
        .iter()
        .filter(|n| n.id != leader)
        .map(|n| n.api.clone())
        .collect();

    let setup = GrpcClient::connect(&followers[0]).await.expect("connect");
    let customer = setup
        .create_customer("Load".into(), "Test".into(), "1 Road".into())
        .await
        .expect("customer");
    let mut accounts = Vec::new();
    for _ in 0..4 {
        let a = setup
            .create_account(customer.customer_id, AccountType::Checking)
            .await
            .expect("account");
        setup
            .deposit(a.account_id, dec("1000.00"))
            .await
            .expect("seed deposit");
        accounts.push(a.account_id);
    }
    let initial = dec("4000.00");

    let stop = Arc::new(AtomicBool::new(false));
    let mut workers = Vec::new();
    for w in 0..4usize {
        let addr = followers[w % followers.len()].clone();
        let accounts = accounts.clone();
        let stop = stop.clone();
        workers.push(tokio::spawn(async move {
            let client = GrpcClient::connect(&addr).await.expect("connect");
            let (mut net, mut acked, mut failed) = (Decimal::ZERO, 0u32, Vec::new());
            let mut i = 0usize;
            while !stop.load(Ordering::Relaxed) {
                let account = accounts[(i + w) % accounts.len()];
                let amount = Decimal::new(((i % 7) as i64 + 1) * 100, 2);
                let result = if i % 3 == 2 {
                    client.withdraw(account, amount).await.map(|_| -amount)
                } else {
                    client.deposit(account, amount).await.map(|_| amount)
                };
                match result {
                    Ok(change) => {
                        net += change;
                        acked += 1;
                    }
                    Err(CallError::Domain(BankError::InsufficientFunds(_))) => {}
                    Err(e) => failed.push(e.to_string()),
                }
                i += 1;
            }
            (net, acked, failed)
        }));
    }
    // Let the load run, kill the leader in the middle of it, let it run on.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    c.kill(leader).expect("kill");
    let new_leader = c
        .wait_for_leader(Duration::from_secs(60))
        .await
        .expect("new leader");
    assert_ne!(new_leader, leader);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop.store(true, Ordering::Relaxed);

    let (mut net, mut acked, mut failed) = (Decimal::ZERO, 0u32, Vec::new());
    for w in workers {
        let (n, a, f) = w.await.expect("worker");
        net += n;
        acked += a;
        failed.extend(f);
    }
    assert!(acked > 0, "no write was acknowledged");
    assert!(
        failed.is_empty(),
        "writes failed during failover: {failed:?}"
    );

    let replicas = c
        .converged(Duration::from_secs(60))
        .await
        .expect("replicas converge");
    assert_eq!(replicas.len(), 2);
    let reader = GrpcClient::connect(&followers[1]).await.expect("connect");
    let all = reader.list_accounts(0, 1000).await.expect("accounts");
    let total: Decimal = all
        .iter()
        .filter(|a| accounts.contains(&a.account_id))
        .map(|a| a.balance)
        .sum();
    assert_eq!(total, initial + net, "{acked} acknowledged writes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_node_restarts_from_its_data_and_catches_up() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let mut c = cluster(dir.path(), 3, &[]).await;
    let leader = c
        .wait_for_leader(Duration::from_secs(60))
        .await
        .expect("leader");
    let victim = c
        .nodes
        .iter()
        .map(|n| n.id)
        .find(|id| *id != leader)
        .expect("follower");
    let client = GrpcClient::connect(&c.node(leader).expect("leader").api)
        .await
        .expect("connect");
    validator::run(&client).await.expect("walk-through before");
    c.kill(victim).expect("kill");
    validator::run(&client)
        .await
        .expect("walk-through while a node is down");
    c.restart(victim).await.expect("restart");
    let replicas = c
        .converged(Duration::from_secs(60))
        .await
        .expect("converged");
    assert_eq!(replicas.len(), 3);
    // Same digest everywhere: nothing was applied twice on the restarted node.
    let digests: BTreeSet<&String> = replicas.iter().map(|(_, _, d)| d).collect();
    assert_eq!(digests.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_learner_catches_up_from_a_snapshot_after_the_log_is_purged() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let mut c = cluster(dir.path(), 3, &["--keep-logs", "0"]).await;
    let leader = c
        .wait_for_leader(Duration::from_secs(60))
        .await
        .expect("leader");
    let client = GrpcClient::connect(&c.node(leader).expect("leader").api)
        .await
        .expect("connect");
    validator::run(&client).await.expect("walk-through");
    for n in &c.nodes {
        runtime::ops::admin::admin(
            &n.raft,
            &c.credentials,
            runtime::raft::network::AdminRequest::Snapshot,
        )
        .await
        .expect("snapshot");
    }
    c.wait_purged(leader, Duration::from_secs(60))
        .await
        .expect("the leader purges its log");
    c.add_member(4, Duration::from_secs(60))
        .await
        .expect("node 4 joins and is promoted");
    let replicas = c
        .converged(Duration::from_secs(60))
        .await
        .expect("converged");
    assert_eq!(replicas.len(), 4);
    let status4 = c.status(4).await.expect("status");
    assert!(
        status4.snapshot_index.unwrap_or(0) > 0,
        "node 4 did not install a snapshot: {status4:?}"
    );
}

/// The balance of `account`, read through `api`.
async fn balance_of(api: &GrpcClient, account: u64) -> Decimal {
    api.list_accounts(0, 1000)
        .await
        .expect("accounts")
        .into_iter()
        .find(|a| a.account_id == account)
        .expect("account")
        .balance
}

fn deposit_envelope(account: u64, seq: u64) -> Envelope {
    let command = BankCommand::Deposit {
        account_id: account,
        amount: dec("10.00"),
    }
    .encode()
    .expect("encode");
    Envelope {
        client: "retrying-client".into(),
        seq,
        ack: 0,
        time_us: 0,
        command,
    }
}

/// Forwards a write with an explicit request id as a node would, following "not the leader"
/// answers; returns the leader's answer.
async fn forward(c: &LocalCluster, raft_addr: &str, env: Envelope) -> Answer {
    let mut target = raft_addr.to_string();
    for _ in 0..10 {
        let client = RaftClient::connect(&target, &c.credentials)
            .await
            .expect("connect");
        match call(&client, &Message::Forward(env.clone()))
            .await
            .expect("raft call")
        {
            Answer::NotLeader(Some((_, leader))) => target = leader.raft,
            Answer::NotLeader(None) => tokio::time::sleep(Duration::from_millis(200)).await,
            answer => return answer,
        }
    }
    panic!("no leader took the write")
}

/// Sends a write with an explicit request id; the reply it was applied with.
async fn send(
    c: &LocalCluster,
    raft_addr: &str,
    env: Envelope,
) -> Result<BankReply, BankCallError> {
    match forward(c, raft_addr, env).await {
        Answer::Applied(applied) => decode_reply(&applied.reply),
        other => panic!("unexpected answer {other:?}"),
    }
}

/// A command the leader's build cannot decode never enters the log (a replica stops at an
/// entry it cannot read, rather than refuse what others apply): it is refused as sent, nothing
/// changes, and every node keeps running.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_the_leader_cannot_decode_is_refused_before_the_log() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let mut c = cluster(dir.path(), 3, &[]).await;
    let leader = c
        .wait_for_leader(Duration::from_secs(60))
        .await
        .expect("leader");
    let follower = c.nodes.iter().find(|n| n.id != leader).expect("follower");
    let raft = follower.raft.clone();
    let before = c
        .converged(Duration::from_secs(60))
        .await
        .expect("converged");
    let malformed: [&[u8]; 5] = [
        b"garbage",
        br#"{"deposit":{"account_id":1,"amount":1.5}}"#,
        br#"{"deposit":{"account_id":1,"amount":"1.00","memo":"x"}}"#,
        br#"{"no_such_operation":{}}"#,
        br#"{"list_accounts":{}}"#,
    ];
    for (seq, command) in (1..).zip(malformed) {
        let env = Envelope {
            client: "malformed".into(),
            seq,
            ack: 0,
            time_us: 0,
            command: command.to_vec(),
        };
        let text = String::from_utf8_lossy(command);
        match forward(&c, &raft, env).await {
            Answer::Rejected(reason) => assert!(!reason.is_empty(), "{text}"),
            other => panic!("{text}: expected a refusal, got {other:?}"),
        }
    }
    let after = c
        .converged(Duration::from_secs(60))
        .await
        .expect("converged");
    assert_eq!(before[0].2, after[0].2, "nothing was applied");
    for n in &mut c.nodes {
        assert_eq!(n.exited(), None, "node {} stopped", n.id);
    }
}

/// A client whose reply was lost resends the same request id: one application, the original
/// reply — also when the resend goes to a new leader after the old one was killed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resent_request_is_applied_once_and_gets_the_original_reply() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let mut c = cluster(dir.path(), 3, &[]).await;
    let leader = c
        .wait_for_leader(Duration::from_secs(60))
        .await
        .expect("leader");
    let leader_raft = c.node(leader).expect("leader").raft.clone();
    let api = GrpcClient::connect(&c.node(leader).expect("leader").api)
        .await
        .expect("connect");
    let customer = api
        .create_customer("Once".into(), "Only".into(), "2 Way".into())
        .await
        .expect("customer");
    let account = api
        .create_account(customer.customer_id, AccountType::Savings)
        .await
        .expect("account");

    // The first reply is "lost": the client resends the same (client, seq).
    let first = send(&c, &leader_raft, deposit_envelope(account.account_id, 1))
        .await
        .expect("first");
    let resent = send(&c, &leader_raft, deposit_envelope(account.account_id, 1))
        .await
        .expect("resent");
    assert_eq!(first, BankReply::Deposit(dec("10.00")));
    assert_eq!(resent, first);

    // A new request, then the leader dies before the client sees the reply; the client resends
    // to a survivor.
    let second = send(&c, &leader_raft, deposit_envelope(account.account_id, 2))
        .await
        .expect("second");
    assert_eq!(second, BankReply::Deposit(dec("20.00")));
    c.kill(leader).expect("kill");
    c.wait_for_leader(Duration::from_secs(60))
        .await
        .expect("new leader");
    let survivor = c.nodes.iter().find(|n| n.is_running()).expect("survivor");
    let after_failover = send(&c, &survivor.raft, deposit_envelope(account.account_id, 2))
        .await
        .expect("resent after failover");
    assert_eq!(after_failover, second);

    let reader = GrpcClient::connect(&survivor.api).await.expect("connect");
    assert_eq!(
        balance_of(&reader, account.account_id).await,
        dec("20.00"),
        "each request applied exactly once"
    );
}

/// Once a client has acknowledged an answer (and its record is gone), a late copy of that
/// request (a node still resending it on the client's behalf) is refused, not applied again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_copy_of_an_acknowledged_request_is_not_applied_again() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let c = cluster(dir.path(), 3, &[]).await;
    let leader = c
        .wait_for_leader(Duration::from_secs(60))
        .await
        .expect("leader");
    let node = c.node(leader).expect("leader");
    let api = GrpcClient::connect(&node.api).await.expect("connect");
    let customer = api
        .create_customer("Late".into(), "Copy".into(), "3 Echo Lane".into())
        .await
        .expect("customer");
    let account = api
        .create_account(customer.customer_id, AccountType::Checking)
        .await
        .expect("account")
        .account_id;
    let first = deposit_envelope(account, 1);
    assert_eq!(
        send(&c, &node.raft, first.clone()).await.expect("first"),
        BankReply::Deposit(dec("10.00"))
    );
    // The next request acknowledges the first answer.
    let second = Envelope {
        ack: 2,
        ..deposit_envelope(account, 2)
    };
    assert_eq!(
        send(&c, &node.raft, second).await.expect("second"),
        BankReply::Deposit(dec("20.00"))
    );
    match forward(&c, &node.raft, first).await {
        Answer::Rejected(reason) => assert!(reason.contains("acknowledged"), "{reason}"),
        other => panic!("a late copy must be refused, got {other:?}"),
    }
    assert_eq!(
        balance_of(&api, account).await,
        dec("20.00"),
        "the late copy was not applied"
    );
    c.converged(Duration::from_secs(60))
        .await
        .expect("converged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raft_traffic_needs_the_secret_and_is_not_on_the_api_listener() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let c = cluster(dir.path(), 3, &[]).await;
    let node = &c.nodes[0];
    let status = Message::Admin(runtime::raft::network::AdminRequest::Status);

    let without = RaftClient::connect(&node.raft, &RaftCredentials::plain("not-the-secret"))
        .await
        .expect("connect");
    let refused = call(&without, &status)
        .await
        .expect_err("a wrong secret must be refused");
    assert_eq!(refused.code(), tonic::Code::Unauthenticated);

    let via_api = RaftClient::connect(&node.api, &c.credentials)
        .await
        .expect("connect");
    let absent = call(&via_api, &status)
        .await
        .expect_err("no raft service on the API listener");
    assert_eq!(absent.code(), tonic::Code::Unimplemented);

    let with = RaftClient::connect(&node.raft, &c.credentials)
        .await
        .expect("connect");
    assert!(matches!(call(&with, &status).await, Ok(Answer::Admin(_))));
}

/// With `--redirect-writes`, a follower answers writes with the leader's address and the
/// generated clients follow it: the walk-through passes through a follower on both protocols.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_follow_redirects_to_the_leader() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let c = cluster(dir.path(), 3, &["--redirect-writes"]).await;
    let leader = c
        .wait_for_leader(Duration::from_secs(60))
        .await
        .expect("leader");
    let follower = c.nodes.iter().find(|n| n.id != leader).expect("follower");

    // A raw call to the follower gets the typed redirect, naming the leader.
    let leader_api = c.node(leader).expect("leader").api.clone();
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", follower.api))
        .expect("uri")
        .connect()
        .await
        .expect("channel");
    let mut stub = bank_generated::grpc::pb::bank_client::BankClient::new(channel);
    let status = stub
        .create_customer(bank_generated::grpc::pb::CreateCustomerRequest {
            first_name: "R".into(),
            last_name: "D".into(),
            address: "1 Way".into(),
        })
        .await
        .expect_err("a follower redirects writes");
    let error = bank_generated::grpc::error_from_status(status);
    match &error {
        CallError::Failure(Failure::Redirect(leader)) => {
            assert_eq!(leader.addr("grpc"), Some(leader_api.as_str()), "{error}")
        }
        other => panic!("expected a typed redirect, got {other:?}"),
    }

    let grpc = GrpcClient::connect(&follower.api).await.expect("connect");
    validator::run(&grpc)
        .await
        .expect("walk-through over gRPC via a redirecting follower");
    let jsonrpc = bank_generated::jsonrpc::JsonRpcClient::new(&follower.jsonrpc).expect("client");
    validator::run(&jsonrpc)
        .await
        .expect("walk-through over JSON-RPC via a redirecting follower");

    let replicas = c
        .converged(Duration::from_secs(60))
        .await
        .expect("converged");
    assert_eq!(replicas.len(), 3);
}

/// A request id reaches the log from both wires: the same id sent twice (a reply lost on the way
/// back) is applied once and answered with the original reply, on any node; the same id with
/// another command is rejected (kind `Rejected`) and applies nothing. gRPC carries the id in
/// metadata, JSON-RPC among the named parameters.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_id_makes_a_resent_write_idempotent_and_cannot_be_reused() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let c = cluster(dir.path(), 3, &[]).await;
    let leader = c
        .wait_for_leader(Duration::from_secs(60))
        .await
        .expect("leader");
    let follower = c.nodes.iter().find(|n| n.id != leader).expect("follower");
    let api = GrpcClient::connect(&follower.api).await.expect("connect");
    let customer = api
        .create_customer("Id".into(), "Em".into(), "3 Path".into())
        .await
        .expect("customer");
    let account = api
        .create_account(customer.customer_id, AccountType::Checking)
        .await
        .expect("account");

    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", follower.api))
        .expect("uri")
        .connect()
        .await
        .expect("channel");
    let stub = bank_generated::grpc::pb::bank_client::BankClient::new(channel);
    let deposit = |seq: &'static str, amount: &'static str| {
        let mut stub = stub.clone();
        let mut request = tonic::Request::new(bank_generated::grpc::pb::DepositRequest {
            account_id: account.account_id,
            amount: amount.into(),
        });
        request.metadata_mut().insert(
            runtime::wire::call::CLIENT_ID_KEY,
            "test-client-1".parse().expect("ascii"),
        );
        request.metadata_mut().insert(
            runtime::wire::call::REQUEST_SEQ_KEY,
            seq.parse().expect("ascii"),
        );
        async move { stub.deposit(request).await.map(|r| r.into_inner().value) }
    };
    let first = deposit("7", "10.00").await.expect("first");
    let resent = deposit("7", "10.00").await.expect("resent");
    let reused = deposit("7", "99.00").await;
    let next = deposit("8", "10.00").await.expect("next");
    assert_eq!(
        (first.as_str(), resent.as_str(), next.as_str()),
        ("10.00", "10.00", "20.00")
    );
    let reused = reused.expect_err("an id reused with another command");
    assert_eq!(reused.code(), tonic::Code::InvalidArgument, "{reused:?}");
    assert_eq!(
        reused
            .metadata()
            .get(runtime::wire::codes::ERROR_KIND_KEY)
            .and_then(|v| v.to_str().ok()),
        Some("Rejected")
    );

    // The same over JSON-RPC, through the raw wire: the id is among the parameters.
    let jsonrpc = |seq: u64, amount: &str| {
        let body = serde_json::json!({
            "jsonrpc": "2.0", "id": 1, "method": "deposit",
            "params": {
                "account_id": account.account_id, "amount": amount,
                "x-client-id": "test-client-2", "x-request-seq": seq,
            },
        });
        post_json(&follower.jsonrpc, body)
    };
    let first = jsonrpc(1, "5.00").await;
    let resent = jsonrpc(1, "5.00").await;
    let reused = jsonrpc(1, "7.00").await;
    assert_eq!(first["result"], "25.00", "{first}");
    assert_eq!(resent["result"], "25.00", "{resent}");
    assert_eq!(reused["error"]["code"], -32602, "{reused}");
    assert_eq!(reused["error"]["data"]["kind"], "Rejected", "{reused}");
    // The rejected reuse applied nothing: the next deposit starts from 25.00.
    let next = jsonrpc(2, "1.00").await;
    assert_eq!(next["result"], "26.00", "{next}");
}

/// POSTs one JSON-RPC request to `addr` and returns the answer.
async fn post_json(addr: &str, body: serde_json::Value) -> serde_json::Value {
    use http_body_util::{BodyExt, Full};
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::TokioExecutor;
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<bytes::Bytes>>();
    let request = hyper::Request::post(format!("http://{addr}/"))
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .body(Full::new(bytes::Bytes::from(body.to_string())))
        .expect("an HTTP request");
    let answer = async {
        let response = client.request(request).await.expect("an HTTP answer");
        response
            .into_body()
            .collect()
            .await
            .expect("the HTTP body")
            .to_bytes()
    };
    let bytes = tokio::time::timeout(Duration::from_secs(30), answer)
        .await
        .expect("no JSON-RPC answer within 30 s");
    serde_json::from_slice(&bytes).expect("a JSON answer")
}

/// The read level is per call: with two of three nodes gone, a linearizable read on the
/// survivor fails (no quorum for a read index) while a stale read answers from its local state.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_reads_are_a_per_call_choice() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let mut c = cluster(dir.path(), 3, &[]).await;
    let leader = c
        .wait_for_leader(Duration::from_secs(60))
        .await
        .expect("leader");
    let survivor = c
        .nodes
        .iter()
        .map(|n| n.id)
        .find(|id| *id != leader)
        .expect("follower");
    let api = GrpcClient::connect(&c.node(survivor).expect("survivor").api)
        .await
        .expect("connect");
    api.create_customer("Stale".into(), "Read".into(), "4 Lane".into())
        .await
        .expect("customer");
    let before = api
        .get_customer_count()
        .await
        .expect("linearizable read with a quorum");
    c.converged(Duration::from_secs(60))
        .await
        .expect("converged");

    for id in c
        .nodes
        .iter()
        .map(|n| n.id)
        .filter(|id| *id != survivor)
        .collect::<Vec<_>>()
    {
        c.kill(id).expect("kill");
    }
    let stale = api
        .clone()
        .with_read_level(runtime::wire::call::ReadLevel::Stale)
        .get_customer_count()
        .await
        .expect("a stale read needs no quorum");
    assert_eq!(stale, before);
    let linearizable = api.get_customer_count().await;
    assert!(
        matches!(linearizable, Err(CallError::Failure(_))),
        "a linearizable read without a quorum must fail: {linearizable:?}"
    );
    // A lease is the leader's: a cut-off follower has none to read under.
    let lease = api
        .clone()
        .with_read_level(runtime::wire::call::ReadLevel::Lease)
        .get_customer_count()
        .await;
    assert!(
        matches!(lease, Err(CallError::Failure(_))),
        "a lease read without a leader must fail: {lease:?}"
    );
}

/// Session records (deduplication rows) per client in a node's state database.
fn session_rows(state_db: &Path) -> Vec<(String, i64)> {
    let conn =
        rusqlite::Connection::open_with_flags(state_db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .expect("open the state database");
    conn.prepare("SELECT client, count(*) FROM _raft_requests GROUP BY client")
        .expect("prepare")
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("rows")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_requests_leave_no_session_records_behind() {
    const WRITES: u64 = 40;
    let _serial = ONE_AT_A_TIME.lock().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let c = cluster(dir.path(), 3, &[]).await;
    let leader = c
        .wait_for_leader(Duration::from_secs(60))
        .await
        .expect("leader");
    let node = c.node(leader).expect("leader node");
    // Both clients send their own request ids and acknowledgements.
    let grpc = GrpcClient::connect(&node.api).await.expect("gRPC");
    let jsonrpc = bank_generated::jsonrpc::JsonRpcClient::new(&node.jsonrpc).expect("JSON-RPC");
    let customer = grpc
        .create_customer("Ack".into(), "Session".into(), "6 Lane".into())
        .await
        .expect("customer")
        .customer_id;
    let account = grpc
        .create_account(customer, AccountType::Checking)
        .await
        .expect("account")
        .account_id;
    for _ in 0..WRITES {
        grpc.deposit(account, dec("1.00"))
            .await
            .expect("gRPC deposit");
        jsonrpc
            .deposit(account, dec("1.00"))
            .await
            .expect("JSON-RPC deposit");
    }
    c.converged(Duration::from_secs(60))
        .await
        .expect("converged");
    let rows = session_rows(&node.data_dir.join("state.db"));
    assert_eq!(rows.len(), 2, "one session per client: {rows:?}");
    for (client, count) in rows {
        // Each write acknowledges every earlier one: only the last write's record stays.
        assert!(
            count <= 2,
            "{client} left {count} session records for {WRITES} writes"
        );
    }
}

/// Sends SIGSTOP or SIGCONT to a node process: a real stall (a long GC or VM pause, a frozen
/// disk) that its peers see as a node cut off.
fn signal(node: &runtime::ops::cluster::NodeProcess, sig: &str) {
    let pid = node.pid().expect("a running node");
    let status = std::process::Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .expect("kill");
    assert!(status.success(), "kill {sig} {pid}");
}

/// A leader cut off from both followers stops taking writes within its lease and says so at
/// once (UNAVAILABLE, kind `Transport`: try another node), instead of holding the call for the
/// whole retry window; once the followers are back, the cluster takes writes again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_cut_off_from_its_quorum_answers_at_once() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let c = cluster(dir.path(), 3, &[]).await;
    let leader = c
        .wait_for_leader(Duration::from_secs(60))
        .await
        .expect("leader");
    let api = GrpcClient::connect(&c.node(leader).expect("leader").api)
        .await
        .expect("connect");
    api.create_customer("Cut".into(), "Off".into(), "2 Island".into())
        .await
        .expect("customer");
    let followers: Vec<_> = c.nodes.iter().filter(|n| n.id != leader).collect();
    for f in &followers {
        signal(f, "-STOP");
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let status = c.status(leader).await.expect("leader status");
        if status.quorum_lost {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the leader never noticed it was cut off: {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let write = api
        .create_customer("No".into(), "Quorum".into(), "3 Island".into())
        .await;
    let read = api.get_customer_count().await;
    for f in &followers {
        signal(f, "-CONT");
    }
    for (what, outcome) in [("write", write.map(drop)), ("read", read.map(drop))] {
        match outcome {
            Err(CallError::Failure(Failure::Transport(message))) => {
                assert!(message.contains("cut off"), "{what}: {message}")
            }
            other => panic!("{what} on a cut-off leader: {other:?}"),
        }
    }
    // Healed: some leader takes writes again. Until it has heard from a quorum again, a leader
    // still refuses at once with a transport failure, which a client resends.
    let leader = c
        .wait_for_leader(Duration::from_secs(60))
        .await
        .expect("a leader after the heal");
    let api = GrpcClient::connect(&c.node(leader).expect("leader").api)
        .await
        .expect("connect")
        .retrying(5);
    api.create_customer("Back".into(), "Again".into(), "4 Mainland".into())
        .await
        .expect("a write after the heal");
}
