//! Malformed input on every networked transport: each bad request gets the right typed error,
//! the server keeps serving, and nothing is applied.
//!
//! Every test: a server on 127.0.0.1 (port 0) over a SQLite file in a temp dir, seeded through a
//! proper client (a customer, a checking account, a deposit of 100.00); then the bad inputs, sent
//! as raw as the transport allows (raw protobuf messages, hand-written HTTP/1.1 POSTs, hand-built
//! frames); then (a) the exact error class, (b) the bank unchanged, read back through the proper
//! client, and (c) the validator walk-through passing through that client afterwards.
//!
//! Servers are owned by [`Server`], which stops them when dropped, so a failing assertion never
//! leaves one running.

use std::net::SocketAddr;
use std::time::Duration;

use bank::Bank;
use bank::net::{self, RunningServer, ServerLimits, Variant};
use bank::validator;
use bank_generated::grpc::{ERROR_KIND_KEY, GrpcClient, pb};
use bank_generated::jsonrpc::JsonRpcClient;
use bank_generated::{
    Account, AccountType, BankApi, BankCallError, BankCommand, BankError, BankReply, Customer,
    decode_reply,
};
use json::Json;
use runtime::frame::{self, FrameKind};
use runtime::{CallError, CallKind, Failure, Limits, ZmqClient};
use rust_decimal::Decimal;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long any single network exchange may take before the test gives up.
const IO_DEADLINE: Duration = Duration::from_secs(20);

/// The small request limit of the servers that test oversized input.
const SMALL_LIMIT: usize = 4096;

// ------------------------------------------------------------------------------------------
// Servers, seeding and the "nothing changed" check
// ------------------------------------------------------------------------------------------

/// A running server over a temp-file database; stopped when dropped (dropping a
/// `RunningServer` signals its shutdown) or cleanly by [`Server::stop`].
struct Server {
    inner: Option<RunningServer>,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Server {
    async fn start(variant: Variant, max_request: usize) -> Server {
        let dir = tempfile::tempdir().expect("temp dir");
        let bank = Bank::open(dir.path().join("bank.db")).expect("open bank");
        let inner = net::serve(variant, "127.0.0.1:0", bank, ServerLimits { max_request })
            .await
            .unwrap_or_else(|e| panic!("{}: cannot serve: {e}", variant.name()));
        Server {
            addr: inner.addr,
            inner: Some(inner),
            _dir: dir,
        }
    }

    async fn stop(mut self) {
        if let Some(server) = self.inner.take() {
            server.shutdown().await.expect("clean shutdown");
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // Dropping the handle drops its stop sender, which stops the server.
        drop(self.inner.take());
    }
}

/// What the seeding created.
#[derive(Debug, Clone, Copy)]
struct Seeded {
    customer_id: u64,
    account_id: u64,
}

fn money(text: &str) -> Decimal {
    Decimal::from_str_exact(text).expect("decimal")
}

/// Creates a customer, a checking account and deposits 100.00, through a proper client.
async fn seed<A: BankApi>(api: &A) -> Seeded {
    let customer = api
        .create_customer("Seed".into(), "Customer".into(), "1 Test Road".into())
        .await
        .expect("seed: create_customer");
    let account = api
        .create_account(customer.customer_id, AccountType::Checking)
        .await
        .expect("seed: create_account");
    let balance = api
        .deposit(account.account_id, money("100.00"))
        .await
        .expect("seed: deposit");
    assert_eq!(balance.to_string(), "100.00");
    Seeded {
        customer_id: customer.customer_id,
        account_id: account.account_id,
    }
}

/// Everything a bad request could have changed, as a proper client sees it.
#[derive(Debug, PartialEq)]
struct Snapshot {
    customer_count: u64,
    account_count: u64,
    customers: Vec<Customer>,
    accounts: Vec<Account>,
}

async fn snapshot<A: BankApi>(api: &A) -> Snapshot {
    Snapshot {
        customer_count: api.get_customer_count().await.expect("get_customer_count"),
        account_count: api.get_account_count().await.expect("get_account_count"),
        customers: api.list_customers(0, 1000).await.expect("list_customers"),
        accounts: api.list_accounts(0, 1000).await.expect("list_accounts"),
    }
}

/// (c) nothing changed since `before` (the seeded balance is still 100.00), then (b) the
/// whole walk-through passes through the same proper client.
async fn assert_unchanged_then_validate<A: BankApi>(
    what: &str,
    api: &A,
    before: &Snapshot,
    seeded: Seeded,
) {
    let after = snapshot(api).await;
    assert_eq!(&after, before, "{what}: the bad inputs changed the bank");
    assert_eq!(after.customer_count, 1, "{what}");
    assert_eq!(after.account_count, 1, "{what}");
    let account = after
        .accounts
        .iter()
        .find(|a| a.account_id == seeded.account_id)
        .expect("the seeded account");
    assert_eq!(account.balance.to_string(), "100.00", "{what}");
    assert_eq!(account.customer_id, seeded.customer_id, "{what}");
    let report = validator::run(api)
        .await
        .unwrap_or_else(|e| panic!("{what}: validator after the bad inputs: {e}"));
    assert_eq!(report.customer_id, seeded.customer_id + 1, "{what}");
}

// ------------------------------------------------------------------------------------------
// gRPC
// ------------------------------------------------------------------------------------------

type RawGrpc = pb::bank_client::BankClient<tonic::transport::Channel>;

async fn channel(addr: SocketAddr) -> tonic::transport::Channel {
    tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .expect("endpoint")
        .connect()
        .await
        .expect("gRPC channel")
}

async fn raw_grpc(addr: SocketAddr) -> RawGrpc {
    pb::bank_client::BankClient::new(channel(addr).await)
}

/// The status of a call that must fail.
fn status_of<T: std::fmt::Debug>(what: &str, result: Result<T, tonic::Status>) -> tonic::Status {
    match result {
        Ok(response) => panic!("{what}: expected an error status, got {response:?}"),
        Err(status) => status,
    }
}

fn error_kind(status: &tonic::Status) -> Option<String> {
    status
        .metadata()
        .get(ERROR_KIND_KEY)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

fn assert_status(what: &str, status: &tonic::Status, code: tonic::Code, kind: Option<&str>) {
    assert_eq!(status.code(), code, "{what}: {status:?}");
    if let Some(kind) = kind {
        assert_eq!(
            error_kind(status).as_deref(),
            Some(kind),
            "{what}: {status:?}"
        );
    }
}

async fn grpc_rejects_malformed_fields(variant: Variant) {
    let server = Server::start(variant, net::DEFAULT_MAX_REQUEST).await;
    let client = GrpcClient::connect(&server.addr.to_string())
        .await
        .expect("connect");
    let seeded = seed(&client).await;
    let before = snapshot(&client).await;
    let mut raw = raw_grpc(server.addr).await;
    let id = seeded.account_id;
    let v = variant.name();

    // An amount that is not a decimal: refused by the transport adapter.
    let s = status_of(
        "deposit abc",
        raw.deposit(pb::DepositRequest {
            account_id: id,
            amount: "abc".into(),
        })
        .await,
    );
    assert_status(
        &format!("{v}: deposit abc"),
        &s,
        tonic::Code::InvalidArgument,
        None,
    );
    let s = status_of(
        "transfer abc",
        raw.transfer(pb::TransferRequest {
            from_account_id: id,
            to_account_id: id + 1,
            amount: "abc".into(),
        })
        .await,
    );
    assert_status(
        &format!("{v}: transfer abc"),
        &s,
        tonic::Code::InvalidArgument,
        None,
    );
    let s = status_of(
        "deposit empty amount",
        raw.deposit(pb::DepositRequest {
            account_id: id,
            amount: String::new(),
        })
        .await,
    );
    assert_status(
        &format!("{v}: deposit ''"),
        &s,
        tonic::Code::InvalidArgument,
        None,
    );

    // Three fractional digits: a decimal, but refused by the bank as InvalidArgument.
    for (what, result) in [
        (
            "deposit 1.005",
            raw.deposit(pb::DepositRequest {
                account_id: id,
                amount: "1.005".into(),
            })
            .await
            .map(|_| ()),
        ),
        (
            "withdraw 1.005",
            raw.withdraw(pb::WithdrawRequest {
                account_id: id,
                amount: "1.005".into(),
            })
            .await
            .map(|_| ()),
        ),
        (
            "cash_check 0.001",
            raw.cash_check(pb::CashCheckRequest {
                account_id: id,
                amount: "0.001".into(),
            })
            .await
            .map(|_| ()),
        ),
    ] {
        let s = status_of(what, result);
        assert_status(
            &format!("{v}: {what}"),
            &s,
            tonic::Code::InvalidArgument,
            Some("InvalidArgument"),
        );
    }

    // Enum values outside the schema: 0 (UNSPECIFIED) and 99 (unknown).
    for account_type in [0, 99] {
        let s = status_of(
            "create_account",
            raw.create_account(pb::CreateAccountRequest {
                customer_id: seeded.customer_id,
                account_type,
            })
            .await,
        );
        assert_status(
            &format!("{v}: create_account type {account_type}"),
            &s,
            tonic::Code::InvalidArgument,
            None,
        );
    }

    // Other malformed strings: a date, a duration.
    let s = status_of(
        "get_statement bad date",
        raw.get_statement(pb::GetStatementRequest {
            account_id: id,
            statement_date: "2024-02-30".into(),
        })
        .await,
    );
    assert_status(
        &format!("{v}: get_statement 2024-02-30"),
        &s,
        tonic::Code::InvalidArgument,
        None,
    );
    let s = status_of(
        "advance_time bad delta",
        raw.advance_time(pb::AdvanceTimeRequest {
            delta: "soon".into(),
        })
        .await,
    );
    assert_status(
        &format!("{v}: advance_time soon"),
        &s,
        tonic::Code::InvalidArgument,
        None,
    );

    // Unknown ids.
    let s = status_of(
        "deposit to an unknown account",
        raw.deposit(pb::DepositRequest {
            account_id: id + 1000,
            amount: "1.00".into(),
        })
        .await,
    );
    assert_status(
        &format!("{v}: deposit to an unknown account"),
        &s,
        tonic::Code::NotFound,
        Some("NotFound"),
    );
    let s = status_of(
        "create_account for an unknown customer",
        raw.create_account(pb::CreateAccountRequest {
            customer_id: seeded.customer_id + 1000,
            account_type: pb::AccountType::Checking as i32,
        })
        .await,
    );
    assert_status(
        &format!("{v}: create_account for an unknown customer"),
        &s,
        tonic::Code::NotFound,
        Some("NotFound"),
    );

    // Well-formed but refused by the rules.
    let s = status_of(
        "withdraw too much",
        raw.withdraw(pb::WithdrawRequest {
            account_id: id,
            amount: "100.01".into(),
        })
        .await,
    );
    assert_status(
        &format!("{v}: withdraw 100.01 of 100.00"),
        &s,
        tonic::Code::FailedPrecondition,
        Some("InsufficientFunds"),
    );

    assert_unchanged_then_validate(v, &client, &before, seeded).await;
    drop((raw, client));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_malformed_fields_get_typed_statuses() {
    grpc_rejects_malformed_fields(Variant::Grpc).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_facade_malformed_fields_get_typed_statuses() {
    grpc_rejects_malformed_fields(Variant::GrpcFacade).await;
}

async fn grpc_refuses_an_oversized_request(variant: Variant) {
    let server = Server::start(variant, SMALL_LIMIT).await;
    let client = GrpcClient::connect(&server.addr.to_string())
        .await
        .expect("connect");
    let seeded = seed(&client).await;
    let before = snapshot(&client).await;
    let mut raw = raw_grpc(server.addr).await;

    let s = status_of(
        "a 10 KB first_name",
        raw.create_customer(pb::CreateCustomerRequest {
            first_name: "x".repeat(10 * 1024),
            last_name: "Big".into(),
            address: "Nowhere".into(),
        })
        .await,
    );
    assert!(
        matches!(
            s.code(),
            tonic::Code::ResourceExhausted | tonic::Code::OutOfRange
        ),
        "{}: oversized request: {s:?}",
        variant.name()
    );
    // The same connection still carries requests under the limit.
    let count = raw
        .get_customer_count(pb::GetCustomerCountRequest {})
        .await
        .expect("a small request after the big one");
    assert_eq!(count.into_inner().value, 1);

    assert_unchanged_then_validate(variant.name(), &client, &before, seeded).await;
    drop((raw, client));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_oversized_request_is_refused_and_not_applied() {
    grpc_refuses_an_oversized_request(Variant::Grpc).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_facade_oversized_request_is_refused_and_not_applied() {
    grpc_refuses_an_oversized_request(Variant::GrpcFacade).await;
}

/// A codec for calls whose messages do not matter: it sends an empty message, and treats any
/// message in the answer as an error (an unknown method must not answer with one).
#[derive(Debug, Clone, Copy, Default)]
struct EmptyMessages;

impl tonic::codec::Codec for EmptyMessages {
    type Encode = ();
    type Decode = ();
    type Encoder = EmptyMessages;
    type Decoder = EmptyMessages;

    fn encoder(&mut self) -> Self::Encoder {
        EmptyMessages
    }

    fn decoder(&mut self) -> Self::Decoder {
        EmptyMessages
    }
}

impl tonic::codec::Encoder for EmptyMessages {
    type Item = ();
    type Error = tonic::Status;

    fn encode(
        &mut self,
        _item: (),
        _dst: &mut tonic::codec::EncodeBuf<'_>,
    ) -> Result<(), tonic::Status> {
        Ok(())
    }
}

impl tonic::codec::Decoder for EmptyMessages {
    type Item = ();
    type Error = tonic::Status;

    fn decode(
        &mut self,
        _src: &mut tonic::codec::DecodeBuf<'_>,
    ) -> Result<Option<()>, tonic::Status> {
        Err(tonic::Status::data_loss(
            "the server answered an unknown method with a message",
        ))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_unknown_method_is_unimplemented() {
    for variant in [Variant::Grpc, Variant::GrpcFacade] {
        let server = Server::start(variant, net::DEFAULT_MAX_REQUEST).await;
        let client = GrpcClient::connect(&server.addr.to_string())
            .await
            .expect("connect");
        let seeded = seed(&client).await;
        let before = snapshot(&client).await;

        let mut grpc = tonic::client::Grpc::new(channel(server.addr).await);
        for path in [
            "/bank.v1.Bank/Nope",
            "/bank.v1.Bank/deposit",
            "/bank.v1.Nope/Deposit",
        ] {
            grpc.ready().await.expect("ready");
            let result = grpc
                .unary(
                    tonic::Request::new(()),
                    tonic::codegen::http::uri::PathAndQuery::from_static(path),
                    EmptyMessages,
                )
                .await;
            let s = status_of(path, result);
            assert_status(
                &format!("{}: {path}", variant.name()),
                &s,
                tonic::Code::Unimplemented,
                None,
            );
        }

        assert_unchanged_then_validate(variant.name(), &client, &before, seeded).await;
        drop((grpc, client));
        server.stop().await;
    }
}

// ------------------------------------------------------------------------------------------
// JSON-RPC over hand-written HTTP/1.1
// ------------------------------------------------------------------------------------------

/// One HTTP/1.1 POST of `body` to `/`, `Connection: close`, read to EOF: (status, body).
async fn post(addr: SocketAddr, body: &str) -> (u16, String) {
    tokio::time::timeout(IO_DEADLINE, post_inner(addr, body.as_bytes()))
        .await
        .unwrap_or_else(|_| panic!("no HTTP answer within {IO_DEADLINE:?}"))
}

async fn post_inner(addr: SocketAddr, body: &[u8]) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let head = format!(
        "POST / HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.expect("write head");
    // The server may answer (413) and close before reading all of an oversized body.
    let _ = stream.write_all(body).await;
    let _ = stream.flush().await;
    let mut response = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        match stream.read(&mut chunk).await {
            Ok(0) => break,
            Ok(n) => response.extend_from_slice(&chunk[..n]),
            // A reset after the whole answer arrived (unread request body) is not a failure.
            Err(e) if !response.is_empty() => {
                eprintln!("read ended with {e} after {} bytes", response.len());
                break;
            }
            Err(e) => panic!("reading the HTTP answer: {e}"),
        }
    }
    parse_http_response(&response)
}

fn parse_http_response(bytes: &[u8]) -> (u16, String) {
    let text = String::from_utf8_lossy(bytes);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no end of HTTP headers in {text:?}"));
    let status_line = head.lines().next().expect("status line");
    let status: u16 = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
    let chunked = head.lines().any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("transfer-encoding:") && l.contains("chunked")
    });
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_string()
    };
    (status, body)
}

fn dechunk(mut rest: &str) -> String {
    let mut out = String::new();
    loop {
        let (size, after) = rest.split_once("\r\n").expect("chunk size line");
        let size = usize::from_str_radix(size.split(';').next().unwrap_or("").trim(), 16)
            .expect("chunk size");
        if size == 0 {
            return out;
        }
        out.push_str(&after[..size]);
        rest = &after[size..];
        rest = rest.strip_prefix("\r\n").unwrap_or(rest);
    }
}

/// POSTs `body` and parses the answer, which must be HTTP 200 with a JSON body.
async fn rpc(addr: SocketAddr, body: &str) -> Json {
    let (status, text) = post(addr, body).await;
    assert_eq!(status, 200, "POST {body}\n-> {status} {text}");
    Json::parse(&text).unwrap_or_else(|e| panic!("POST {body}\n-> not JSON ({e}): {text}"))
}

/// Calls `method` with `params` (raw JSON) under id 1; the whole response object.
async fn call(addr: SocketAddr, method: &str, params: &str) -> Json {
    let body = format!(r#"{{"jsonrpc":"2.0","id":1,"method":"{method}","params":{params}}}"#);
    let response = rpc(addr, &body).await;
    assert_eq!(response["jsonrpc"].as_str(), Some("2.0"), "{response}");
    response
}

/// The `result` of a call that must succeed.
async fn ok(addr: SocketAddr, method: &str, params: &str) -> Json {
    let response = call(addr, method, params).await;
    assert!(
        response.get("error").is_none(),
        "{method} {params}: unexpected error {response}"
    );
    assert_eq!(response["id"].as_i64(), Some(1), "{response}");
    response["result"].clone()
}

/// Asserts that `response` is an error with `code` (and, for application errors, `data.kind`).
fn assert_rpc_error(what: &str, response: &Json, code: i64, kind: Option<&str>) {
    assert!(
        response.get("result").is_none(),
        "{what}: expected error {code}, got {response}"
    );
    assert_eq!(
        response["error"]["code"].as_i64(),
        Some(code),
        "{what}: {response}"
    );
    assert!(
        response["error"]["message"].as_str().is_some(),
        "{what}: error without a message: {response}"
    );
    if let Some(kind) = kind {
        assert_eq!(
            response["error"]["data"]["kind"].as_str(),
            Some(kind),
            "{what}: {response}"
        );
    }
}

async fn jsonrpc_setup(
    variant: Variant,
    max_request: usize,
) -> (Server, JsonRpcClient, Seeded, Snapshot) {
    let server = Server::start(variant, max_request).await;
    let client = JsonRpcClient::new(&server.addr.to_string()).expect("client");
    let seeded = seed(&client).await;
    let before = snapshot(&client).await;
    (server, client, seeded, before)
}

const JSONRPC_VARIANTS: [Variant; 2] = [Variant::Jsonrpc, Variant::JsonrpcFacade];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jsonrpc_protocol_errors_have_standard_codes() {
    for variant in JSONRPC_VARIANTS {
        let (server, client, seeded, before) =
            jsonrpc_setup(variant, net::DEFAULT_MAX_REQUEST).await;
        let addr = server.addr;
        let v = variant.name();

        // -32700: not JSON at all, and JSON cut short.
        for body in [
            r#"{"jsonrpc":"2.0","id":1,"method":"deposit","params":{"account_id":1,"#,
            "this is not json",
        ] {
            // jsonrpsee answers a body that is not JSON at all with HTTP 400, JSON cut short
            // with 200; either way the body is the -32700 error.
            let (status, text) = post(addr, body).await;
            assert!(
                status == 200 || status == 400,
                "{v}: {body:?} -> {status} {text}"
            );
            let response = Json::parse(&text).unwrap_or_else(|e| panic!("{v}: {e}: {text}"));
            assert_rpc_error(
                &format!("{v}: parse error {body:?}"),
                &response,
                -32700,
                None,
            );
            assert!(response["id"].is_null(), "{v}: {response}");
        }

        // -32600: no method; a JSON-RPC version other than 2.0; an empty batch.
        for body in [
            r#"{"jsonrpc":"2.0","id":1}"#,
            r#"{"jsonrpc":"1.0","id":1,"method":"deposit","params":{"account_id":1,"amount":"1.00"}}"#,
            r#"{"id":1,"method":"deposit","params":{"account_id":1,"amount":"1.00"}}"#,
            "[]",
        ] {
            let response = rpc(addr, body).await;
            assert_rpc_error(
                &format!("{v}: invalid request {body}"),
                &response,
                -32600,
                None,
            );
        }

        // -32601: no such method (also a name that differs only in case).
        for method in ["nope", "Deposit", "rpc.nope"] {
            let response = call(addr, method, r#"{"account_id":1,"amount":"1.00"}"#).await;
            assert_rpc_error(&format!("{v}: method {method}"), &response, -32601, None);
            assert_eq!(response["id"].as_i64(), Some(1), "{response}");
        }

        assert_unchanged_then_validate(v, &client, &before, seeded).await;
        drop(client);
        server.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jsonrpc_bad_params_are_invalid_params_and_not_applied() {
    for variant in JSONRPC_VARIANTS {
        let (server, client, seeded, before) =
            jsonrpc_setup(variant, net::DEFAULT_MAX_REQUEST).await;
        let addr = server.addr;
        let v = variant.name();
        let id = seeded.account_id;
        let cid = seeded.customer_id;

        // -32602 (invalid params): wrong types, missing or extra parameters, malformed values.
        for (method, params) in [
            (
                "deposit",
                r#"{"account_id":"x","amount":"1.00"}"#.to_string(),
            ),
            ("deposit", format!(r#"{{"account_id":{id}}}"#)),
            ("deposit", r#"{"amount":"1.00"}"#.to_string()),
            (
                "deposit",
                format!(r#"{{"account_id":{id},"amount":"abc"}}"#),
            ),
            ("deposit", format!(r#"{{"account_id":{id},"amount":null}}"#)),
            (
                "deposit",
                format!(r#"{{"account_id":{id},"amount":"1.00","extra":1}}"#),
            ),
            ("deposit", format!(r#"[{id},"1.00",3]"#)),
            ("deposit", format!(r#"["{id}","1.00"]"#)),
            (
                "deposit",
                format!(r#"{{"account_id":-{id},"amount":"1.00"}}"#),
            ),
            ("deposit", r#""just a string""#.to_string()),
            (
                "withdraw",
                format!(r#"{{"account_id":{id},"amount":"ten"}}"#),
            ),
            (
                "transfer",
                format!(r#"{{"from_account_id":{id},"amount":"1.00"}}"#),
            ),
            (
                "create_account",
                format!(r#"{{"customer_id":{cid},"account_type":"gold"}}"#),
            ),
            (
                "create_account",
                format!(r#"{{"customer_id":{cid},"account_type":2}}"#),
            ),
            (
                "create_customer",
                r#"{"first_name":"A","last_name":"B"}"#.to_string(),
            ),
            ("advance_time", r#"{"delta":"soon"}"#.to_string()),
            (
                "get_statement",
                format!(r#"{{"account_id":{id},"statement_date":"2024-02-30"}}"#),
            ),
            ("list_customers", r#"{"limit":-1}"#.to_string()),
        ] {
            let response = call(addr, method, &params).await;
            assert_rpc_error(&format!("{v}: {method} {params}"), &response, -32602, None);
        }

        // Application errors: -32000 - tag, with data.kind.
        for (method, params, code, kind) in [
            (
                "deposit",
                format!(r#"{{"account_id":{id},"amount":"1.005"}}"#),
                -32003,
                "InvalidArgument",
            ),
            (
                "deposit",
                format!(r#"{{"account_id":{id},"amount":"-5.00"}}"#),
                -32003,
                "InvalidArgument",
            ),
            (
                "deposit",
                format!(r#"{{"account_id":{id},"amount":"0.00"}}"#),
                -32003,
                "InvalidArgument",
            ),
            (
                "create_customer",
                r#"{"first_name":"","last_name":"B","address":"C"}"#.to_string(),
                -32003,
                "InvalidArgument",
            ),
            (
                "list_accounts",
                r#"{"limit":1001}"#.to_string(),
                -32003,
                "InvalidArgument",
            ),
            (
                "deposit",
                format!(r#"{{"account_id":{},"amount":"1.00"}}"#, id + 1000),
                -32001,
                "NotFound",
            ),
            (
                "withdraw",
                format!(r#"{{"account_id":{id},"amount":"100.01"}}"#),
                -32002,
                "InsufficientFunds",
            ),
        ] {
            let response = call(addr, method, &params).await;
            assert_rpc_error(
                &format!("{v}: {method} {params}"),
                &response,
                code,
                Some(kind),
            );
        }

        assert_unchanged_then_validate(v, &client, &before, seeded).await;
        drop(client);
        server.stop().await;
    }
}

/// Money is an exact decimal on every wire, never a float: the OpenRPC document declares
/// `amount` a string, so a JSON number must be refused like any other malformed amount.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jsonrpc_amount_as_a_json_number_is_refused() {
    for variant in JSONRPC_VARIANTS {
        let (server, client, seeded, before) =
            jsonrpc_setup(variant, net::DEFAULT_MAX_REQUEST).await;
        let addr = server.addr;
        let v = variant.name();
        let id = seeded.account_id;
        for params in [
            format!(r#"{{"account_id":{id},"amount":1.5}}"#),
            format!(r#"{{"account_id":{id},"amount":10}}"#),
            format!(r#"[{id},2.25]"#),
        ] {
            let response = call(addr, "deposit", &params).await;
            assert_rpc_error(&format!("{v}: deposit {params}"), &response, -32602, None);
        }
        assert_unchanged_then_validate(v, &client, &before, seeded).await;
        drop(client);
        server.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jsonrpc_positional_params_and_defaults_work() {
    for variant in JSONRPC_VARIANTS {
        let (server, client, seeded, _) = jsonrpc_setup(variant, net::DEFAULT_MAX_REQUEST).await;
        let addr = server.addr;
        let id = seeded.account_id;

        // Positional parameters, in the schema's order.
        let balance = ok(addr, "deposit", &format!(r#"[{id},"10.00"]"#)).await;
        assert_eq!(balance.as_str(), Some("110.00"));
        let balance = ok(addr, "withdraw", &format!(r#"[{id},"0.50"]"#)).await;
        assert_eq!(balance.as_str(), Some("109.50"));

        // Defaults: no params at all, null, an empty object, an empty array.
        for params in [None, Some("null"), Some("{}"), Some("[]")] {
            let body = match params {
                None => r#"{"jsonrpc":"2.0","id":1,"method":"list_customers"}"#.to_string(),
                Some(p) => {
                    format!(r#"{{"jsonrpc":"2.0","id":1,"method":"list_customers","params":{p}}}"#)
                }
            };
            let response = rpc(addr, &body).await;
            let customers = response["result"]
                .as_array()
                .unwrap_or_else(|| panic!("{body} -> {response}"));
            assert_eq!(customers.len(), 1, "{body} -> {response}");
            assert_eq!(
                customers[0]["customer_id"].as_u64(),
                Some(seeded.customer_id)
            );
            assert_eq!(customers[0]["first_name"].as_str(), Some("Seed"));
        }
        // Only some parameters: the other takes its default.
        let accounts = ok(addr, "list_accounts", r#"{"offset":0}"#).await;
        assert_eq!(accounts.as_array().map(<[Json]>::len), Some(1));
        let accounts = ok(addr, "list_accounts", r#"{"offset":1}"#).await;
        assert_eq!(accounts.as_array().map(<[Json]>::len), Some(0));
        let count = ok(addr, "get_account_count", "{}").await;
        assert_eq!(count.as_u64(), Some(1));

        // The proper client sees what the positional calls did.
        let accounts = client.list_accounts(0, 100).await.expect("list_accounts");
        assert_eq!(accounts[0].balance, money("109.50"));
        validator::run(&client).await.expect("validator");
        drop(client);
        server.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jsonrpc_batch_answers_each_request_by_id() {
    for variant in JSONRPC_VARIANTS {
        let (server, client, seeded, before) =
            jsonrpc_setup(variant, net::DEFAULT_MAX_REQUEST).await;
        let addr = server.addr;
        let v = variant.name();
        let id = seeded.account_id;
        let body = format!(
            r#"[
                {{"jsonrpc":"2.0","id":7,"method":"get_account_count"}},
                {{"jsonrpc":"2.0","id":"two","method":"deposit","params":{{"account_id":{id},"amount":"abc"}}}},
                {{"jsonrpc":"2.0","id":9,"method":"nope","params":[]}}
            ]"#
        );
        let response = rpc(addr, &body).await;
        let answers = response
            .as_array()
            .unwrap_or_else(|| panic!("{v}: a batch answers with an array: {response}"));
        assert_eq!(answers.len(), 3, "{v}: {response}");
        let by_id = |want: &Json| {
            let found: Vec<&Json> = answers.iter().filter(|a| &a["id"] == want).collect();
            assert_eq!(found.len(), 1, "{v}: one answer with id {want}: {response}");
            found[0].clone()
        };
        let first = by_id(&Json::Num("7".into()));
        assert_eq!(first["result"].as_u64(), Some(1), "{v}: {first}");
        let second = by_id(&Json::Str("two".into()));
        assert_rpc_error(&format!("{v}: batch deposit abc"), &second, -32602, None);
        let third = by_id(&Json::Num("9".into()));
        assert_rpc_error(&format!("{v}: batch nope"), &third, -32601, None);

        assert_unchanged_then_validate(v, &client, &before, seeded).await;
        drop(client);
        server.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jsonrpc_body_over_the_limit_is_refused_and_not_applied() {
    for variant in JSONRPC_VARIANTS {
        let (server, client, seeded, before) = jsonrpc_setup(variant, SMALL_LIMIT).await;
        let addr = server.addr;
        let v = variant.name();
        let body = format!(
            r#"{{"jsonrpc":"2.0","id":1,"method":"create_customer","params":{{"first_name":"{}","last_name":"Big","address":"Nowhere"}}}}"#,
            "x".repeat(10 * 1024)
        );
        let (status, text) = post(addr, &body).await;
        assert_eq!(status, 413, "{v}: {text}");
        if let Ok(response) = Json::parse(&text) {
            assert!(response.get("result").is_none(), "{v}: {text}");
        }
        // A request under the limit on a new connection still works.
        let count = ok(addr, "get_customer_count", "{}").await;
        assert_eq!(count.as_u64(), Some(1));

        assert_unchanged_then_validate(v, &client, &before, seeded).await;
        drop(client);
        server.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jsonrpc_rpc_discover_returns_the_openrpc_document() {
    let (server, client, _, _) = jsonrpc_setup(Variant::Jsonrpc, net::DEFAULT_MAX_REQUEST).await;
    let doc = ok(server.addr, "rpc.discover", "[]").await;
    let version = doc["openrpc"]
        .as_str()
        .expect("an `openrpc` version string");
    assert!(version.starts_with('1'), "openrpc {version}");
    let methods = doc["methods"].as_array().expect("a `methods` array");
    let names: Vec<&str> = methods.iter().filter_map(|m| m["name"].as_str()).collect();
    for op in bank_generated::OPERATIONS {
        assert!(
            names.contains(&op.name),
            "rpc.discover lacks `{}`: {names:?}",
            op.name
        );
    }
    let deposit = methods
        .iter()
        .find(|m| m["name"].as_str() == Some("deposit"))
        .expect("deposit");
    let params: Vec<&str> = deposit["params"]
        .as_array()
        .expect("deposit params")
        .iter()
        .filter_map(|p| p["name"].as_str())
        .collect();
    assert_eq!(params, ["account_id", "amount"]);
    // It is the document the crate publishes.
    assert_eq!(
        doc,
        Json::parse(bank_generated::jsonrpc::OPENRPC).expect("OPENRPC parses")
    );
    drop(client);
    server.stop().await;
}

/// The walk-through steps 1–7 driven with plain HTTP POSTs of JSON (no JSON-RPC client).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jsonrpc_walkthrough_with_plain_http_posts() {
    for variant in JSONRPC_VARIANTS {
        let server = Server::start(variant, net::DEFAULT_MAX_REQUEST).await;
        let addr = server.addr;

        // 1.
        let jane = ok(
            addr,
            "create_customer",
            r#"{"first_name":"Jane","last_name":"Doe","address":"456 Elm Street"}"#,
        )
        .await;
        let cid = jane["customer_id"].as_u64().expect("customer_id");
        assert_eq!(jane["first_name"].as_str(), Some("Jane"));
        assert_eq!(jane["last_name"].as_str(), Some("Doe"));
        assert_eq!(jane["address"].as_str(), Some("456 Elm Street"));
        assert_eq!(jane["accounts"], Json::Arr(vec![]));

        // 2.
        let checking = ok(
            addr,
            "create_account",
            &format!(r#"{{"customer_id":{cid},"account_type":"checking"}}"#),
        )
        .await;
        let savings = ok(
            addr,
            "create_account",
            &format!(r#"{{"customer_id":{cid},"account_type":"savings"}}"#),
        )
        .await;
        for (account, kind) in [(&checking, "checking"), (&savings, "savings")] {
            assert_eq!(account["account_type"].as_str(), Some(kind), "{account}");
            assert_eq!(account["customer_id"].as_u64(), Some(cid), "{account}");
            assert_eq!(account["balance"].as_str(), Some("0.00"), "{account}");
        }
        let c = checking["account_id"].as_u64().expect("account_id");
        let s = savings["account_id"].as_u64().expect("account_id");
        assert_ne!(c, s);

        // 3.
        let r = ok(
            addr,
            "deposit",
            &format!(r#"{{"account_id":{c},"amount":"1000.00"}}"#),
        )
        .await;
        assert_eq!(r.as_str(), Some("1000.00"));
        let r = ok(
            addr,
            "deposit",
            &format!(r#"{{"account_id":{s},"amount":"500.00"}}"#),
        )
        .await;
        assert_eq!(r.as_str(), Some("500.00"));

        // 4.
        let r = ok(
            addr,
            "withdraw",
            &format!(r#"{{"account_id":{c},"amount":"100.00"}}"#),
        )
        .await;
        assert_eq!(r.as_str(), Some("900.00"));

        // 5.
        let r = ok(
            addr,
            "transfer",
            &format!(r#"{{"from_account_id":{c},"to_account_id":{s},"amount":"200.00"}}"#),
        )
        .await;
        assert_eq!(r["from_balance"].as_str(), Some("700.00"), "{r}");
        assert_eq!(r["to_balance"].as_str(), Some("700.00"), "{r}");

        // 6.
        let r = ok(
            addr,
            "cash_check",
            &format!(r#"{{"account_id":{c},"amount":"50.00"}}"#),
        )
        .await;
        assert_eq!(r.as_str(), Some("650.00"));

        // 7.
        let accounts = ok(addr, "list_accounts", "{}").await;
        let accounts = accounts.as_array().expect("array");
        let balance_of = |id: u64| {
            accounts
                .iter()
                .find(|a| a["account_id"].as_u64() == Some(id))
                .and_then(|a| a["balance"].as_str())
                .map(str::to_string)
        };
        assert_eq!(balance_of(c).as_deref(), Some("650.00"));
        assert_eq!(balance_of(s).as_deref(), Some("700.00"));
        let ids = ok(addr, "get_accounts", &format!(r#"{{"customer_id":{cid}}}"#)).await;
        assert_eq!(
            ids,
            Json::Arr(vec![Json::Num(c.to_string()), Json::Num(s.to_string())])
        );
        let customers = ok(addr, "list_customers", "{}").await;
        assert_eq!(customers[0]["accounts"], ids, "{customers}");

        server.stop().await;
    }
}

// ------------------------------------------------------------------------------------------
// TCP frames
// ------------------------------------------------------------------------------------------

/// A raw TCP connection speaking frames.
struct RawFrames {
    stream: TcpStream,
}

impl RawFrames {
    async fn connect(addr: SocketAddr) -> RawFrames {
        RawFrames {
            stream: TcpStream::connect(addr).await.expect("connect"),
        }
    }

    async fn send(&mut self, id: u64, kind: FrameKind, payload: &[u8]) {
        frame::write_frame(&mut self.stream, id, kind, payload)
            .await
            .expect("write frame");
        self.stream.flush().await.expect("flush");
    }

    async fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("write");
        self.stream.flush().await.expect("flush");
    }

    /// The next frame; `None` when the server closed the connection.
    async fn next(&mut self) -> Option<frame::Frame> {
        let read = frame::read_frame(&mut self.stream, Limits::DEFAULT_MAX_FRAME);
        match tokio::time::timeout(IO_DEADLINE, read).await {
            Err(_) => panic!("no frame and no close within {IO_DEADLINE:?}"),
            Ok(Ok(frame)) => frame,
            // A reset counts as closed.
            Ok(Err(runtime::TransportError::Io(e)))
                if e.kind() == std::io::ErrorKind::ConnectionReset =>
            {
                None
            }
            Ok(Err(e)) => panic!("reading a frame: {e}"),
        }
    }

    /// The reply to request `id`, decoded.
    async fn reply(&mut self, id: u64) -> Result<BankReply, BankCallError> {
        let frame = self
            .next()
            .await
            .unwrap_or_else(|| panic!("the server closed instead of answering request {id}"));
        assert_eq!(frame.id, id, "the reply carries the request's id");
        assert_eq!(frame.kind, FrameKind::Reply);
        decode_reply(&frame.payload)
    }

    async fn assert_closed(&mut self, what: &str) {
        if let Some(frame) = self.next().await {
            panic!("{what}: expected the server to close, got {frame:?}");
        }
    }
}

fn encode(command: &BankCommand) -> Vec<u8> {
    command.encode().expect("encode command")
}

fn assert_transport_error(what: &str, reply: Result<BankReply, BankCallError>, needle: &str) {
    match reply {
        Err(CallError::Failure(Failure::Transport(message))) => assert!(
            message.contains(needle),
            "{what}: `{message}` should mention `{needle}`"
        ),
        other => panic!("{what}: expected a Transport error, got {other:?}"),
    }
}

fn command_frame() -> FrameKind {
    FrameKind::Call(CallKind::Command)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_bad_payloads_get_transport_errors_and_the_connection_stays_open() {
    let server = Server::start(Variant::Tcp, net::DEFAULT_MAX_REQUEST).await;
    let client = net::connect_tcp(&server.addr.to_string(), Limits::default())
        .await
        .expect("connect");
    let seeded = seed(&client).await;
    let before = snapshot(&client).await;
    let id = seeded.account_id;

    let mut raw = RawFrames::connect(server.addr).await;
    let cases: Vec<(&str, FrameKind, Vec<u8>, &str)> = vec![
        ("garbage bytes", command_frame(), vec![0xff, 0x00, 0x13, 0x37, b'{'], "malformed command"),
        ("empty payload", command_frame(), Vec::new(), "malformed command"),
        (
            "an unknown operation",
            command_frame(),
            br#"{"nope":{"account_id":1}}"#.to_vec(),
            "malformed command",
        ),
        (
            "a malformed amount",
            command_frame(),
            format!(r#"{{"deposit":{{"account_id":{id},"amount":"abc"}}}}"#).into_bytes(),
            "malformed command",
        ),
        (
            "an unknown field",
            command_frame(),
            format!(r#"{{"deposit":{{"account_id":{id},"amount":"1.00","x":1}}}}"#).into_bytes(),
            "malformed command",
        ),
        (
            "two operations in one command",
            command_frame(),
            format!(
                r#"{{"deposit":{{"account_id":{id},"amount":"1.00"}},"withdraw":{{"account_id":{id},"amount":"1.00"}}}}"#
            )
            .into_bytes(),
            "malformed command",
        ),
    ];
    for (n, (what, kind, payload, needle)) in cases.into_iter().enumerate() {
        let request_id = 100 + n as u64;
        raw.send(request_id, kind, &payload).await;
        assert_transport_error(what, raw.reply(request_id).await, needle);
    }

    // A valid command sent as a query is refused (queries never change state).
    let deposit = encode(&BankCommand::Deposit {
        account_id: id,
        amount: money("1.00"),
    });
    raw.send(200, FrameKind::Call(CallKind::Query), &deposit)
        .await;
    assert_transport_error(
        "a command sent as a query",
        raw.reply(200).await,
        "is a command",
    );
    // A valid query sent as a command is refused too (it would enter the log).
    let count = encode(&BankCommand::GetCustomerCount {});
    raw.send(202, command_frame(), &count).await;
    assert_transport_error(
        "a query sent as a command",
        raw.reply(202).await,
        "is a query",
    );
    // An application error travels typed.
    let unknown = encode(&BankCommand::Deposit {
        account_id: id + 1000,
        amount: money("1.00"),
    });
    raw.send(201, command_frame(), &unknown).await;
    let reply = raw.reply(201).await;
    assert!(
        matches!(reply, Err(CallError::Domain(BankError::NotFound(_)))),
        "{reply:?}"
    );

    // The same connection still answers a good request.
    raw.send(
        300,
        FrameKind::Call(CallKind::Query),
        &encode(&BankCommand::GetCustomerCount {}),
    )
    .await;
    assert_eq!(raw.reply(300).await, Ok(BankReply::GetCustomerCount(1)));
    drop(raw);

    assert_unchanged_then_validate("tcp", &client, &before, seeded).await;
    drop(client);
    server.stop().await;
}

/// The serialized command (the future log entry) documents decimals as strings; a JSON number
/// is a float on the wire and must be refused like any malformed command.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_amount_as_a_json_number_is_refused() {
    let server = Server::start(Variant::Tcp, net::DEFAULT_MAX_REQUEST).await;
    let client = net::connect_tcp(&server.addr.to_string(), Limits::default())
        .await
        .expect("connect");
    let seeded = seed(&client).await;
    let before = snapshot(&client).await;
    let id = seeded.account_id;
    let mut raw = RawFrames::connect(server.addr).await;
    let payload = format!(r#"{{"deposit":{{"account_id":{id},"amount":1.5}}}}"#);
    raw.send(1, command_frame(), payload.as_bytes()).await;
    assert_transport_error("amount 1.5", raw.reply(1).await, "malformed command");
    drop(raw);
    assert_unchanged_then_validate("tcp", &client, &before, seeded).await;
    drop(client);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_refused_and_broken_frames_close_only_their_connection() {
    let server = Server::start(Variant::Tcp, SMALL_LIMIT).await;
    let client = net::connect_tcp(&server.addr.to_string(), Limits::default())
        .await
        .expect("connect");
    let seeded = seed(&client).await;
    let before = snapshot(&client).await;
    let id = seeded.account_id;
    let deposit = encode(&BankCommand::Deposit {
        account_id: id,
        amount: money("1.00"),
    });

    // Oversized: a valid command larger than the server's limit gets a refusal under its id,
    // then the connection closes.
    let big = encode(&BankCommand::CreateCustomer {
        first_name: "x".repeat(10 * 1024),
        last_name: "Big".into(),
        address: "Nowhere".into(),
    });
    let mut raw = RawFrames::connect(server.addr).await;
    raw.send(1, command_frame(), &big).await;
    assert_transport_error("oversized frame", raw.reply(1).await, "exceeds");
    raw.assert_closed("after an oversized frame").await;

    // An unknown kind byte (7) in front of a valid deposit: refused, then closed.
    let mut raw = RawFrames::connect(server.addr).await;
    let mut bytes = frame::encode(2, command_frame(), &deposit).expect("encode");
    bytes[frame::HEADER_LEN - 1] = 7;
    raw.send_raw(&bytes).await;
    assert_transport_error("kind byte 7", raw.reply(2).await, "unknown frame kind 7");
    raw.assert_closed("after a bad kind byte").await;

    // A reply frame sent as a request: refused, then closed.
    let mut raw = RawFrames::connect(server.addr).await;
    raw.send(3, FrameKind::Reply, &deposit).await;
    assert_transport_error("a reply as a request", raw.reply(3).await, "reply");
    raw.assert_closed("after a reply frame").await;

    // Truncated: the header announces the whole deposit, half of it arrives, then the client
    // stops sending. No reply, the connection closes, and the half command is not applied.
    let mut raw = RawFrames::connect(server.addr).await;
    let bytes = frame::encode(4, command_frame(), &deposit).expect("encode");
    raw.send_raw(&bytes[..frame::HEADER_LEN + deposit.len() / 2])
        .await;
    raw.stream.shutdown().await.expect("shutdown write");
    raw.assert_closed("after a truncated frame").await;

    // A declared length below the header's 9 bytes: closed without a reply.
    let mut raw = RawFrames::connect(server.addr).await;
    raw.send_raw(&[0, 0, 0, 3, 1, 2, 3]).await;
    raw.assert_closed("after a length below 9").await;

    // A truncated header, then close.
    let mut raw = RawFrames::connect(server.addr).await;
    raw.send_raw(&[0, 0]).await;
    raw.stream.shutdown().await.expect("shutdown write");
    raw.assert_closed("after half a length prefix").await;

    // A new raw connection is served normally.
    let mut raw = RawFrames::connect(server.addr).await;
    raw.send(
        5,
        FrameKind::Call(CallKind::Query),
        &encode(&BankCommand::GetAccountCount {}),
    )
    .await;
    assert_eq!(raw.reply(5).await, Ok(BankReply::GetAccountCount(1)));
    drop(raw);

    // The client connected before all this was never disturbed.
    assert_unchanged_then_validate("tcp", &client, &before, seeded).await;
    drop(client);
    server.stop().await;
}

// ------------------------------------------------------------------------------------------
// ZeroMQ
// ------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zmq_bad_and_oversized_payloads_get_transport_errors() {
    let server = Server::start(Variant::Zmq, SMALL_LIMIT).await;
    let client = net::connect_zmq(&server.addr.to_string(), Limits::default())
        .await
        .expect("connect");
    let seeded = seed(&client).await;
    let before = snapshot(&client).await;
    let id = seeded.account_id;

    // A raw client with the default (larger) limit, so it sends what the server refuses.
    let raw = ZmqClient::connect(&format!("tcp://{}", server.addr), Limits::default())
        .await
        .expect("raw connect");
    let call = |kind: CallKind, payload: Vec<u8>| {
        let raw = raw.clone();
        async move {
            let bytes = tokio::time::timeout(IO_DEADLINE, raw.call(kind, payload))
                .await
                .expect("a reply within the deadline")
                .expect("the call itself succeeds");
            decode_reply(&bytes)
        }
    };

    let garbage = vec![0xff, 0x00, 0x13, 0x37, b'{'];
    assert_transport_error(
        "garbage",
        call(CallKind::Command, garbage).await,
        "malformed command",
    );
    assert_transport_error(
        "an unknown operation",
        call(CallKind::Command, br#"{"nope":{}}"#.to_vec()).await,
        "malformed command",
    );
    assert_transport_error(
        "a malformed amount",
        call(
            CallKind::Command,
            format!(r#"{{"deposit":{{"account_id":{id},"amount":"abc"}}}}"#).into_bytes(),
        )
        .await,
        "malformed command",
    );
    let big = encode(&BankCommand::CreateCustomer {
        first_name: "x".repeat(10 * 1024),
        last_name: "Big".into(),
        address: "Nowhere".into(),
    });
    assert_transport_error("oversized", call(CallKind::Command, big).await, "exceeds");
    let deposit = encode(&BankCommand::Deposit {
        account_id: id,
        amount: money("1.00"),
    });
    assert_transport_error(
        "a command sent as a query",
        call(CallKind::Query, deposit).await,
        "is a command",
    );

    // The same raw client is still served.
    assert_eq!(
        call(CallKind::Query, encode(&BankCommand::GetCustomerCount {})).await,
        Ok(BankReply::GetCustomerCount(1))
    );
    drop(raw);

    assert_unchanged_then_validate("zmq", &client, &before, seeded).await;
    drop(client);
    server.stop().await;
}

// ------------------------------------------------------------------------------------------
// A small JSON reader (the bank crate does not depend on serde_json)
// ------------------------------------------------------------------------------------------

mod json {
    use std::fmt;

    /// A JSON value; numbers keep their text, objects their order.
    #[derive(Debug, Clone, PartialEq)]
    pub enum Json {
        Null,
        Bool(bool),
        Num(String),
        Str(String),
        Arr(Vec<Json>),
        Obj(Vec<(String, Json)>),
    }

    static NULL: Json = Json::Null;

    impl Json {
        pub fn parse(text: &str) -> Result<Json, String> {
            let mut p = Parser {
                bytes: text.as_bytes(),
                pos: 0,
            };
            let value = p.value()?;
            p.ws();
            if p.pos != p.bytes.len() {
                return Err(format!("trailing characters at {}", p.pos));
            }
            Ok(value)
        }

        /// The member `key` of an object.
        pub fn get(&self, key: &str) -> Option<&Json> {
            match self {
                Json::Obj(members) => members.iter().find(|(k, _)| k == key).map(|(_, v)| v),
                _ => None,
            }
        }

        pub fn as_str(&self) -> Option<&str> {
            match self {
                Json::Str(s) => Some(s),
                _ => None,
            }
        }

        pub fn as_i64(&self) -> Option<i64> {
            match self {
                Json::Num(n) => n.parse().ok(),
                _ => None,
            }
        }

        pub fn as_u64(&self) -> Option<u64> {
            match self {
                Json::Num(n) => n.parse().ok(),
                _ => None,
            }
        }

        pub fn as_array(&self) -> Option<&[Json]> {
            match self {
                Json::Arr(items) => Some(items),
                _ => None,
            }
        }

        pub fn is_null(&self) -> bool {
            matches!(self, Json::Null)
        }
    }

    /// `value["key"]`: the member, or `Null` when absent (as in serde_json).
    impl std::ops::Index<&str> for Json {
        type Output = Json;

        fn index(&self, key: &str) -> &Json {
            self.get(key).unwrap_or(&NULL)
        }
    }

    /// `value[i]`: the item, or `Null` when absent.
    impl std::ops::Index<usize> for Json {
        type Output = Json;

        fn index(&self, i: usize) -> &Json {
            self.as_array().and_then(|a| a.get(i)).unwrap_or(&NULL)
        }
    }

    impl fmt::Display for Json {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            match self {
                Json::Null => f.write_str("null"),
                Json::Bool(b) => write!(f, "{b}"),
                Json::Num(n) => f.write_str(n),
                Json::Str(s) => write!(f, "{s:?}"),
                Json::Arr(items) => {
                    f.write_str("[")?;
                    for (i, item) in items.iter().enumerate() {
                        if i > 0 {
                            f.write_str(",")?;
                        }
                        write!(f, "{item}")?;
                    }
                    f.write_str("]")
                }
                Json::Obj(members) => {
                    f.write_str("{")?;
                    for (i, (k, v)) in members.iter().enumerate() {
                        if i > 0 {
                            f.write_str(",")?;
                        }
                        write!(f, "{k:?}:{v}")?;
                    }
                    f.write_str("}")
                }
            }
        }
    }

    struct Parser<'a> {
        bytes: &'a [u8],
        pos: usize,
    }

    impl Parser<'_> {
        fn ws(&mut self) {
            while matches!(self.bytes.get(self.pos), Some(b' ' | b'\t' | b'\n' | b'\r')) {
                self.pos += 1;
            }
        }

        fn expect(&mut self, byte: u8) -> Result<(), String> {
            self.ws();
            if self.bytes.get(self.pos) == Some(&byte) {
                self.pos += 1;
                Ok(())
            } else {
                Err(format!("expected `{}` at {}", byte as char, self.pos))
            }
        }

        fn literal(&mut self, word: &str, value: Json) -> Result<Json, String> {
            if self.bytes[self.pos..].starts_with(word.as_bytes()) {
                self.pos += word.len();
                Ok(value)
            } else {
                Err(format!("bad literal at {}", self.pos))
            }
        }

        fn value(&mut self) -> Result<Json, String> {
            self.ws();
            match self.bytes.get(self.pos) {
                None => Err("unexpected end".into()),
                Some(b'n') => self.literal("null", Json::Null),
                Some(b't') => self.literal("true", Json::Bool(true)),
                Some(b'f') => self.literal("false", Json::Bool(false)),
                Some(b'"') => self.string().map(Json::Str),
                Some(b'[') => {
                    self.pos += 1;
                    let mut items = Vec::new();
                    self.ws();
                    if self.bytes.get(self.pos) == Some(&b']') {
                        self.pos += 1;
                        return Ok(Json::Arr(items));
                    }
                    loop {
                        items.push(self.value()?);
                        self.ws();
                        match self.bytes.get(self.pos) {
                            Some(b',') => self.pos += 1,
                            Some(b']') => {
                                self.pos += 1;
                                return Ok(Json::Arr(items));
                            }
                            _ => return Err(format!("bad array at {}", self.pos)),
                        }
                    }
                }
                Some(b'{') => {
                    self.pos += 1;
                    let mut members = Vec::new();
                    self.ws();
                    if self.bytes.get(self.pos) == Some(&b'}') {
                        self.pos += 1;
                        return Ok(Json::Obj(members));
                    }
                    loop {
                        self.ws();
                        let key = self.string()?;
                        self.expect(b':')?;
                        members.push((key, self.value()?));
                        self.ws();
                        match self.bytes.get(self.pos) {
                            Some(b',') => self.pos += 1,
                            Some(b'}') => {
                                self.pos += 1;
                                return Ok(Json::Obj(members));
                            }
                            _ => return Err(format!("bad object at {}", self.pos)),
                        }
                    }
                }
                Some(b'-' | b'0'..=b'9') => {
                    let start = self.pos;
                    while matches!(
                        self.bytes.get(self.pos),
                        Some(b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9')
                    ) {
                        self.pos += 1;
                    }
                    let text = std::str::from_utf8(&self.bytes[start..self.pos])
                        .map_err(|e| e.to_string())?;
                    text.parse::<f64>()
                        .map_err(|e| format!("bad number {text}: {e}"))?;
                    Ok(Json::Num(text.to_string()))
                }
                Some(other) => Err(format!("unexpected `{}` at {}", *other as char, self.pos)),
            }
        }

        fn string(&mut self) -> Result<String, String> {
            if self.bytes.get(self.pos) != Some(&b'"') {
                return Err(format!("expected a string at {}", self.pos));
            }
            self.pos += 1;
            let mut out = Vec::new();
            loop {
                let Some(&byte) = self.bytes.get(self.pos) else {
                    return Err("unterminated string".into());
                };
                self.pos += 1;
                match byte {
                    b'"' => return String::from_utf8(out).map_err(|e| e.to_string()),
                    b'\\' => {
                        let Some(&escaped) = self.bytes.get(self.pos) else {
                            return Err("unterminated escape".into());
                        };
                        self.pos += 1;
                        let c = match escaped {
                            b'"' => '"',
                            b'\\' => '\\',
                            b'/' => '/',
                            b'b' => '\u{8}',
                            b'f' => '\u{c}',
                            b'n' => '\n',
                            b'r' => '\r',
                            b't' => '\t',
                            b'u' => {
                                let mut code = self.hex4()?;
                                if (0xd800..0xdc00).contains(&code)
                                    && self.bytes[self.pos..].starts_with(b"\\u")
                                {
                                    self.pos += 2;
                                    let low = self.hex4()?;
                                    code = 0x10000 + ((code - 0xd800) << 10) + (low - 0xdc00);
                                }
                                char::from_u32(code).unwrap_or('\u{fffd}')
                            }
                            other => return Err(format!("bad escape `\\{}`", other as char)),
                        };
                        let mut buf = [0u8; 4];
                        out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                    }
                    other => out.push(other),
                }
            }
        }

        fn hex4(&mut self) -> Result<u32, String> {
            let digits = self
                .bytes
                .get(self.pos..self.pos + 4)
                .ok_or("short \\u escape")?;
            self.pos += 4;
            let text = std::str::from_utf8(digits).map_err(|e| e.to_string())?;
            u32::from_str_radix(text, 16).map_err(|e| e.to_string())
        }
    }

    #[test]
    fn parses_what_the_tests_need() {
        let v =
            Json::parse(r#" {"a":[1,-2.5e3,"x\"\u00e9\ud83d\ude00"],"b":{"c":null,"d":true}} "#)
                .unwrap();
        assert_eq!(v["a"][0].as_i64(), Some(1));
        assert_eq!(v["a"][1], Json::Num("-2.5e3".into()));
        assert_eq!(v["a"][2].as_str(), Some("x\"é😀"));
        assert!(v["b"]["c"].is_null());
        assert_eq!(v["b"]["d"], Json::Bool(true));
        assert!(v["missing"].is_null());
        assert!(Json::parse("{").is_err());
        assert!(Json::parse("[1,]").is_err());
        assert!(Json::parse("1 2").is_err());
    }
}
