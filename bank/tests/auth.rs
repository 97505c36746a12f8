//! Users, roles and tokens on a cluster of `bank node --auth` processes: on gRPC, JSON-RPC and
//! `bank call`, no token and an unknown one are `Unauthenticated`, a user without the role the
//! schema's `allow` names is `PermissionDenied`, a user with it is served; a token revoked
//! through one node is refused on all three once they have applied the revocation.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use bank_generated::grpc::{GrpcClient, pb};
use bank_generated::jsonrpc::JsonRpcClient;
use bank_generated::{AccountType, BankApi, BankCallError, BankCommand};
use chrono::TimeDelta;
use futures_util::StreamExt as _;
use runtime::Failure;
use runtime::ops::cluster::LocalCluster;
use runtime::raft::auth::AuthCommand;
use runtime::raft::network::AdminRequest;

const EXE: &str = env!("CARGO_BIN_EXE_bank");

fn unauthenticated<T: std::fmt::Debug>(outcome: &Result<T, BankCallError>) -> bool {
    matches!(
        outcome,
        Err(BankCallError::Failure(Failure::Unauthenticated(_)))
    )
}

fn denied<T: std::fmt::Debug>(outcome: &Result<T, BankCallError>) -> bool {
    matches!(
        outcome,
        Err(BankCallError::Failure(Failure::PermissionDenied(_)))
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_and_roles_decide_on_every_wire_and_a_revocation_holds_on_every_node() {
    let dir = tempfile::tempdir().expect("temp dir");
    let c = LocalCluster::start(Path::new(EXE), dir.path(), 3, vec!["--auth".into()])
        .await
        .unwrap_or_else(|e| panic!("cluster did not start: {e}"));
    let leader = c
        .wait_for_leader(Duration::from_secs(60))
        .await
        .expect("leader");
    let raft = c.node(leader).expect("leader").raft.clone();
    let add = AdminRequest::Auth(AuthCommand::UserAdd {
        name: "ann".into(),
        roles: vec!["teller".into()],
    });
    runtime::ops::admin::admin(&raft, &c.credentials, add)
        .await
        .expect("user added");
    // A role the schema does not have is refused, naming the ones it has.
    let typo = AdminRequest::Auth(AuthCommand::UserAdd {
        name: "cy".into(),
        roles: vec!["telller".into()],
    });
    let refused = runtime::ops::admin::admin(&raft, &c.credentials, typo).await;
    assert!(
        refused.is_err_and(|e| e.to_string().contains("admin, auditor, teller")),
        "a role the schema does not declare"
    );
    // A token for nobody is refused, typed, and changes nothing.
    let orphan = AdminRequest::Auth(AuthCommand::TokenIssue {
        user: "nobody".into(),
        id: "x".into(),
        hash: "y".into(),
    });
    let refused = runtime::ops::admin::admin(&raft, &c.credentials, orphan).await;
    assert!(
        refused.is_err_and(|e| e.to_string().contains("no user `nobody`")),
        "a token for a user that does not exist"
    );
    // Ann's token through the `admin` command line, the others through the admin API.
    let out = Command::new(EXE)
        .args(["admin", "--connect", &raft, "token", "issue", "ann"])
        .env(runtime::ops::host::SECRET_ENV, &c.credentials.secret)
        .output()
        .expect("bank admin token issue");
    assert!(out.status.success(), "{out:?}");
    let printed = String::from_utf8_lossy(&out.stdout);
    let ann = printed
        .split_whitespace()
        .find(|w| w.starts_with("rt_"))
        .expect("the token, printed once")
        .to_string();
    let ann_id = printed
        .split_whitespace()
        .nth(1)
        .expect("the token's id")
        .to_string();
    let bo = c.user_token("bo", &["auditor"]).await.expect("bo's token");
    let root = c
        .user_token("root", &["admin"])
        .await
        .expect("root's token");

    // gRPC, on a follower (its own decision, from what it has applied).
    let follower = c.nodes.iter().find(|n| n.id != leader).expect("follower");
    let deadline = Instant::now() + Duration::from_secs(30);
    let as_ann = GrpcClient::connect(&follower.api)
        .await
        .expect("connect")
        .with_token(ann.clone());
    let customer = loop {
        // The follower may not have applied the token yet.
        match as_ann
            .create_customer("Ann".into(), "Teller".into(), "1 Bank St".into())
            .await
        {
            Ok(customer) => break customer,
            Err(e) if Instant::now() < deadline => {
                eprintln!("not yet: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            Err(e) => panic!("ann's create_customer: {e}"),
        }
    };
    let anonymous = GrpcClient::connect(&follower.api).await.expect("connect");
    assert!(unauthenticated(&anonymous.get_customer_count().await));
    let forged = GrpcClient::connect(&follower.api)
        .await
        .expect("connect")
        .with_token("rt_0123456789abcdef0123456789abcdef");
    assert!(unauthenticated(&forged.get_customer_count().await));
    let as_bo = GrpcClient::connect(&follower.api)
        .await
        .expect("connect")
        .with_token(bo.clone());
    assert!(denied(
        &as_bo
            .create_customer("Bo".into(), "Auditor".into(), "2 Bank St".into())
            .await
    ));
    assert!(as_bo.get_customer_count().await.expect("an auditor reads") >= 1);
    // advance_time is admin only.
    let day = bank_generated::Duration::from(TimeDelta::hours(24));
    assert!(denied(&as_ann.advance_time(day).await));
    let as_root = GrpcClient::connect(&follower.api)
        .await
        .expect("connect")
        .with_token(root);
    as_root.advance_time(day).await.expect("admin may");

    // The change feed: a watcher needs a token, and sees only the commands its roles may call.
    let account = as_ann
        .create_account(customer.customer_id, AccountType::Checking)
        .await
        .expect("account");
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", follower.api))
        .expect("endpoint")
        .connect()
        .await
        .expect("connect");
    let watch = |token: Option<&str>| {
        let mut request = tonic::Request::new(pb::BankWatchRequest {
            from_index: 1,
            ..Default::default()
        });
        if let Some(token) = token {
            request
                .metadata_mut()
                .insert("x-token", token.parse().expect("ascii"));
        }
        let mut client = pb::bank_watch_client::BankWatchClient::new(channel.clone());
        async move { client.watch(request).await.map(|_| ()) }
    };
    let code = |outcome: Result<(), tonic::Status>| outcome.err().map(|s| s.code());
    assert_eq!(code(watch(None).await), Some(tonic::Code::Unauthenticated));
    // An auditor may call no command: nothing to watch.
    assert_eq!(
        code(watch(Some(&bo)).await),
        Some(tonic::Code::PermissionDenied)
    );
    let mut target = runtime::api::watch::WatchTarget::new([follower.api.clone()]);
    target.token = Some(runtime::wire::call::Token(ann.clone()));
    let mut events = Box::pin(bank_generated::grpc::watch(target, 1, Default::default()));
    loop {
        let event = tokio::time::timeout(Duration::from_secs(30), events.next())
            .await
            .expect("an event in time")
            .expect("the stream goes on")
            .expect("an event");
        assert!(
            !matches!(event.command, BankCommand::AdvanceTime { .. }),
            "a teller's watcher saw an admin-only command"
        );
        if matches!(event.command, BankCommand::CreateAccount { .. }) {
            break;
        }
    }
    assert!(account.account_id >= 1);

    // JSON-RPC.
    let node = c.node(leader).expect("leader");
    let anonymous = JsonRpcClient::new(&node.jsonrpc).expect("client");
    assert!(unauthenticated(&anonymous.get_customer_count().await));
    let as_bo_json = JsonRpcClient::new(&node.jsonrpc)
        .expect("client")
        .with_token(bo.clone());
    assert!(denied(
        &as_bo_json.deposit(1, rust_decimal::Decimal::ONE).await
    ));
    assert!(as_bo_json.get_customer_count().await.is_ok());

    // `bank call`: exit code 6 without a token, served with $RAFT_TOKEN.
    let call = |token: Option<&str>| {
        let mut cmd = Command::new(EXE);
        cmd.args(["call", "get_customer_count", "--connect", &node.api]);
        cmd.env_remove(runtime::cli::TOKEN_ENV);
        if let Some(token) = token {
            cmd.env(runtime::cli::TOKEN_ENV, token);
        }
        cmd.output().expect("bank call")
    };
    assert_eq!(call(None).status.code(), Some(6));
    assert_eq!(call(Some(&bo)).status.code(), Some(0));

    // Revoked through the last node; once every node has applied it, refused on all three.
    let last = &c.nodes[2];
    let revoke = AdminRequest::Auth(AuthCommand::TokenRevoke { id: ann_id.clone() });
    runtime::ops::admin::admin(&last.raft, &c.credentials, revoke)
        .await
        .expect("revoked");
    let deadline = Instant::now() + Duration::from_secs(30);
    for n in &c.nodes {
        loop {
            let users = runtime::ops::admin::admin(&n.raft, &c.credentials, AdminRequest::Users)
                .await
                .expect("users");
            let still = users.as_array().into_iter().flatten().any(|u| {
                u["tokens"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|t| *t == ann_id.as_str())
            });
            if !still {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "node {} never applied the revocation",
                n.id
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let as_ann = GrpcClient::connect(&n.api)
            .await
            .expect("connect")
            .with_token(ann.clone());
        assert!(
            unauthenticated(&as_ann.get_customer_count().await),
            "node {} took a revoked token",
            n.id
        );
    }
    assert!(customer.customer_id >= 1);
}

/// `--auth` without TLS on an address other than loopback is a configuration error, named,
/// unless the operator allows tokens in clear text.
#[test]
fn tokens_in_clear_text_off_loopback_need_the_operators_word() {
    let dir = tempfile::tempdir().expect("temp dir");
    let node = |extra: &[&str]| {
        let mut cmd = Command::new(EXE);
        cmd.args([
            "node",
            "--id",
            "1",
            "--secret",
            "0123456789abcdef",
            "--init",
        ])
        .arg("--data-dir")
        .arg(dir.path().join("n1"))
        .args(["--auth", "--listen", "0.0.0.0:0"])
        .args(extra);
        cmd
    };
    let out = node(&[]).output().expect("bank node");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--allow-plaintext-tokens"), "{stderr}");
    // With the operator's word it starts (and is stopped at once).
    let mut started = node(&["--allow-plaintext-tokens"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("bank node");
    let mut line = String::new();
    let stdout = started.stdout.take().expect("stdout");
    std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line)
        .expect("ready line");
    let _ = started.kill();
    let _ = started.wait();
    assert!(line.contains("api="), "{line}");
}
