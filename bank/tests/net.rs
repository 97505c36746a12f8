//! The validator walk-through over every networked variant: a real server on 127.0.0.1 (port 0)
//! in its own task, a real client, and a SQLite file per server.

use bank::Bank;
use bank::net::{self, Endpoint, Variant};

async fn validate_over(variant: Variant) {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("bank.db");
    let bank = Bank::open(&db).expect("open bank");
    let server = net::serve(variant, "127.0.0.1:0", bank, runtime::Limits::default())
        .await
        .unwrap_or_else(|e| panic!("{}: cannot serve: {e}", variant.name()));
    let addr = server.addr.to_string();
    // Twice: the second run meets the first run's customers and must use its own ids.
    let first = net::validate(variant, Endpoint::Remote(&addr)).await;
    let second = net::validate(variant, Endpoint::Remote(&addr)).await;
    server.shutdown().await.expect("clean shutdown");
    let first = first.unwrap_or_else(|e| panic!("{}: {e}", variant.name()));
    let second = second.unwrap_or_else(|e| panic!("{}: second run: {e}", variant.name()));
    assert_ne!(first.customer_id, second.customer_id);

    // What the server acknowledged is in its database file.
    let reopened = Bank::open(&db).expect("reopen");
    let customers = reopened
        .query(|s| bank_generated::BankService::get_customer_count(s))
        .expect("count");
    assert_eq!(customers, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp() {
    validate_over(Variant::Tcp).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc() {
    validate_over(Variant::Grpc).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jsonrpc() {
    validate_over(Variant::Jsonrpc).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zmq() {
    validate_over(Variant::Zmq).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_facade() {
    validate_over(Variant::GrpcFacade).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jsonrpc_facade() {
    validate_over(Variant::JsonrpcFacade).await;
}
