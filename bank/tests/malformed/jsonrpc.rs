//! JSON-RPC over HTTP: protocol errors, bad parameters, batches, oversized bodies, the OpenRPC
//! document, and the walk-through as plain POSTs (sent with a real HTTP client, read with
//! serde_json).

use bank_generated::BankApi;
use bank_generated::jsonrpc::JsonRpcClient;
use serde_json::{Value as Json, json};

use crate::*;

/// One HTTP POST of `body` to `/` with a real HTTP client: (status, body).
async fn post(addr: SocketAddr, body: &str) -> (u16, String) {
    tokio::time::timeout(IO_DEADLINE, post_inner(addr, body.to_string()))
        .await
        .unwrap_or_else(|_| panic!("no HTTP answer within {IO_DEADLINE:?}"))
}

async fn post_inner(addr: SocketAddr, body: String) -> (u16, String) {
    use http_body_util::{BodyExt, Full};
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::TokioExecutor;
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<bytes::Bytes>>();
    let request = hyper::Request::post(format!("http://{addr}/"))
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .body(Full::new(bytes::Bytes::from(body)))
        .expect("an HTTP request");
    let response = client.request(request).await.expect("an HTTP answer");
    let status = response.status().as_u16();
    let bytes = response
        .into_body()
        .collect()
        .await
        .expect("the HTTP body")
        .to_bytes();
    (status, String::from_utf8_lossy(&bytes).into_owned())
}

/// POSTs `body` and parses the answer, which must be HTTP 200 with a JSON body.
async fn rpc(addr: SocketAddr, body: &str) -> Json {
    let (status, text) = post(addr, body).await;
    assert_eq!(status, 200, "POST {body}\n-> {status} {text}");
    serde_json::from_str::<Json>(&text)
        .unwrap_or_else(|e| panic!("POST {body}\n-> not JSON ({e}): {text}"))
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
            jsonrpc_setup(variant, runtime::api::server::MAX_API_MESSAGE).await;
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
            let response =
                serde_json::from_str::<Json>(&text).unwrap_or_else(|e| panic!("{v}: {e}: {text}"));
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
            jsonrpc_setup(variant, runtime::api::server::MAX_API_MESSAGE).await;
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
            jsonrpc_setup(variant, runtime::api::server::MAX_API_MESSAGE).await;
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
        let (server, client, seeded, _) =
            jsonrpc_setup(variant, runtime::api::server::MAX_API_MESSAGE).await;
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
        assert_eq!(accounts.as_array().map(Vec::len), Some(1));
        let accounts = ok(addr, "list_accounts", r#"{"offset":1}"#).await;
        assert_eq!(accounts.as_array().map(Vec::len), Some(0));
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
            jsonrpc_setup(variant, runtime::api::server::MAX_API_MESSAGE).await;
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
        let first = by_id(&json!(7));
        assert_eq!(first["result"].as_u64(), Some(1), "{v}: {first}");
        let second = by_id(&json!("two"));
        assert_rpc_error(&format!("{v}: batch deposit abc"), &second, -32602, None);
        let third = by_id(&json!(9));
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
        if let Ok(response) = serde_json::from_str::<Json>(&text) {
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
    let (server, client, _, _) =
        jsonrpc_setup(Variant::Jsonrpc, runtime::api::server::MAX_API_MESSAGE).await;
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
        serde_json::from_str::<Json>(bank_generated::jsonrpc::OPENRPC).expect("OPENRPC parses")
    );
    drop(client);
    server.stop().await;
}

/// The walk-through steps 1–7 driven with plain HTTP POSTs of JSON (no JSON-RPC client).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jsonrpc_walkthrough_with_plain_http_posts() {
    for variant in JSONRPC_VARIANTS {
        let server = Server::start(variant, runtime::api::server::MAX_API_MESSAGE).await;
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
        assert_eq!(jane["accounts"], json!([]));

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
        assert_eq!(ids, json!([c, s]));
        let customers = ok(addr, "list_customers", "{}").await;
        assert_eq!(customers[0]["accounts"], ids, "{customers}");

        server.stop().await;
    }
}

/// The call context among the named parameters is checked like the parameters: an unknown read
/// level or a malformed request id is -32602 with kind `Rejected`, and nothing is applied.
/// A batch is bounded too: one call over `runtime::api::server::MAX_BATCH` and the whole batch is
/// refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jsonrpc_a_malformed_call_context_or_an_oversized_batch_is_refused() {
    let (server, client, seeded, before) =
        jsonrpc_setup(Variant::Jsonrpc, runtime::api::server::MAX_API_MESSAGE).await;
    let addr = server.addr;
    let id = seeded.account_id;
    for (what, context) in [
        ("an unknown read level", r#""x-read-level":"eventual""#),
        (
            "a read level that is not a string",
            r#""x-read-level":["stale"]"#,
        ),
        ("a client id alone", r#""x-client-id":"c1""#),
        (
            "a sequence that is not a number",
            r#""x-client-id":"c1","x-request-seq":"seven""#,
        ),
    ] {
        let deposit = call(
            addr,
            "deposit",
            &format!(r#"{{"account_id":{id},"amount":"5.00",{context}}}"#),
        )
        .await;
        assert_rpc_error(what, &deposit, -32602, Some("Rejected"));
        let list = call(addr, "list_accounts", &format!("{{{context}}}")).await;
        assert_rpc_error(what, &list, -32602, Some("Rejected"));
    }
    // A well-formed context is taken out before the operation sees its parameters.
    ok(
        addr,
        "list_accounts",
        r#"{"x-read-level":"stale","x-client-id":"c1","x-request-seq":1}"#,
    )
    .await;

    let one = format!(
        r#"{{"jsonrpc":"2.0","id":1,"method":"deposit","params":{{"account_id":{id},"amount":"1.00"}}}}"#
    );
    let batch = format!(
        "[{}]",
        vec![one.as_str(); runtime::api::server::MAX_BATCH as usize + 1].join(",")
    );
    let response = rpc(addr, &batch).await;
    assert_rpc_error(
        "an oversized batch",
        &response,
        runtime::wire::codes::BATCH_TOO_LARGE_CODE.into(),
        None,
    );
    assert_unchanged_then_validate("jsonrpc", &client, &before, seeded).await;
    drop(client);
    server.stop().await;
}
