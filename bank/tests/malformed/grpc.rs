//! gRPC: raw protobuf messages with malformed fields, oversized requests, unknown methods.

use bank_generated::grpc::{ERROR_KIND_KEY, GrpcClient, pb};

use crate::*;

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
    let server = Server::start(variant, runtime::api::server::MAX_API_MESSAGE).await;
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
        let server = Server::start(variant, runtime::api::server::MAX_API_MESSAGE).await;
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

/// The call context in metadata is checked like the arguments: an unknown read level, half a
/// request id or a sequence that is not a number is INVALID_ARGUMENT (kind `Rejected`), never
/// a silent fallback to the node's default, and the call is not made.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_a_malformed_call_context_is_rejected() {
    let server = Server::start(Variant::Grpc, runtime::api::server::MAX_API_MESSAGE).await;
    let client = GrpcClient::connect(&server.addr.to_string())
        .await
        .expect("connect");
    let seeded = seed(&client).await;
    let before = snapshot(&client).await;
    let mut raw = raw_grpc(server.addr).await;
    let contexts: [(&str, &[(&str, &str)]); 4] = [
        (
            "an unknown read level",
            &[(runtime::wire::call::READ_LEVEL_KEY, "eventual")],
        ),
        (
            "a client id alone",
            &[(runtime::wire::call::CLIENT_ID_KEY, "c1")],
        ),
        (
            "a sequence that is not a number",
            &[
                (runtime::wire::call::CLIENT_ID_KEY, "c1"),
                (runtime::wire::call::REQUEST_SEQ_KEY, "seven"),
            ],
        ),
        (
            "an acknowledgement that is not a number",
            &[
                (runtime::wire::call::CLIENT_ID_KEY, "c1"),
                (runtime::wire::call::REQUEST_SEQ_KEY, "7"),
                (runtime::wire::call::REQUEST_ACK_KEY, "-1"),
            ],
        ),
    ];
    for (what, pairs) in contexts {
        let mut deposit = tonic::Request::new(pb::DepositRequest {
            account_id: seeded.account_id,
            amount: "5.00".into(),
        });
        let mut list = tonic::Request::new(pb::ListAccountsRequest::default());
        for (key, value) in pairs {
            let value: tonic::metadata::MetadataValue<_> = value.parse().expect("ascii");
            deposit.metadata_mut().insert(*key, value.clone());
            list.metadata_mut().insert(*key, value);
        }
        let s = status_of(what, raw.deposit(deposit).await);
        assert_status(what, &s, tonic::Code::InvalidArgument, Some("Rejected"));
        let s = status_of(what, raw.list_accounts(list).await);
        assert_status(what, &s, tonic::Code::InvalidArgument, Some("Rejected"));
    }
    assert_eq!(
        snapshot(&client).await,
        before,
        "a rejected call changed the bank"
    );
    server.stop().await;
}
