//! The raft message service of the facades: its own listener, a shared secret, and absent from
//! the API listener.

use bank::Bank;
use bank::net::{self, Variant};
use runtime::raft::rpc::RaftClient;
use tonic::Code;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raft_messages_need_the_secret_and_their_own_listener() {
    let bank = Bank::open_in_memory().expect("bank");
    let api = net::serve(
        Variant::GrpcFacade,
        "127.0.0.1:0",
        bank,
        runtime::Limits::default(),
    )
    .await
    .expect("api server");
    let raft = net::serve_raft_echo("127.0.0.1:0", "s3cret".into())
        .await
        .expect("raft server");
    let raft_addr = raft.addr.to_string();
    let api_addr = api.addr.to_string();

    let good = RaftClient::connect(
        &raft_addr,
        &runtime::raft::rpc::RaftCredentials::plain("s3cret"),
    )
    .await
    .expect("connect");
    let echoed = good.send(b"append-entries".to_vec()).await;

    let wrong = RaftClient::connect(
        &raft_addr,
        &runtime::raft::rpc::RaftCredentials::plain("guess"),
    )
    .await
    .expect("connect");
    let refused = wrong.send(b"vote".to_vec()).await;

    // The API listener does not serve raft traffic at all, secret or not.
    let via_api = RaftClient::connect(
        &api_addr,
        &runtime::raft::rpc::RaftCredentials::plain("s3cret"),
    )
    .await
    .expect("connect");
    let not_there = via_api.send(b"vote".to_vec()).await;

    raft.shutdown().await.expect("raft shutdown");
    api.shutdown().await.expect("api shutdown");

    assert_eq!(echoed.expect("echo"), b"append-entries");
    assert_eq!(
        refused.expect_err("wrong secret").code(),
        Code::Unauthenticated
    );
    assert_eq!(
        not_there.expect_err("no raft on the API listener").code(),
        Code::Unimplemented
    );
}
