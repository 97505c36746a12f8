//! The kitchen sink's generated crate at work, in process: every type form and every kind of
//! default goes through the command bytes (Collector → local sink → Dispatcher), gRPC and
//! JSON-RPC, and comes back equal. Errors keep their kind on every path.

use std::collections::BTreeMap;
use std::sync::Arc;

use jsonrpsee::core::client::ClientT;
use kitchen_sink_generated::grpc::{GrpcClient, pb};
use kitchen_sink_generated::jsonrpc::JsonRpcClient;
use kitchen_sink_generated::{
    ApplyContext, Direct, Duration, DynKitchenSinkApi, Everything, KitchenSinkApi,
    KitchenSinkError, KitchenSinkService, KitchenSinkServiceError, KitchenSinkStore, Level, local,
};
use runtime::CallError;
use runtime::api::local::LocalDb;
use runtime::rusqlite::Connection;
use rust_decimal::Decimal;

/// A service that echoes: `put_everything` returns its argument (`Nope` for the label
/// "nope"), and `find` returns one value built from its parameters, so defaults show.
struct Echo;

impl KitchenSinkService for Echo {
    fn put_everything(
        &mut self,
        _ctx: &ApplyContext,
        value: Everything,
    ) -> Result<Everything, KitchenSinkServiceError> {
        if value.label == "nope" {
            return Err(KitchenSinkError::Nope("refused".into()).into());
        }
        Ok(value)
    }

    fn reset(&mut self, _ctx: &ApplyContext) -> Result<(), KitchenSinkServiceError> {
        Ok(())
    }

    fn find(
        &self,
        flag: bool,
        small: i32,
        ratio: f64,
        label: String,
        money: Decimal,
        level: Level,
        maybe: Option<u64>,
    ) -> Result<Vec<Everything>, KitchenSinkServiceError> {
        let mut value = sparse();
        value.flag = flag;
        value.small = small;
        value.ratio = ratio;
        value.label = label;
        value.money = money;
        value.nested = Some(level);
        value.id = maybe.unwrap_or(u64::MAX);
        Ok(vec![value])
    }
}

/// The echo service on a database it never touches.
#[derive(Clone, Copy)]
struct EchoStore;

impl KitchenSinkStore for EchoStore {
    fn init(&self, _conn: &Connection) -> Result<(), String> {
        Ok(())
    }

    fn command<R>(
        &self,
        _conn: &Connection,
        _ctx: &ApplyContext,
        f: impl FnOnce(&mut dyn KitchenSinkService) -> Result<R, KitchenSinkServiceError>,
    ) -> Result<R, KitchenSinkServiceError> {
        f(&mut Echo)
    }

    fn query<R>(
        &self,
        _conn: &Connection,
        f: impl FnOnce(&dyn KitchenSinkService) -> Result<R, KitchenSinkServiceError>,
    ) -> Result<R, KitchenSinkServiceError> {
        f(&Echo)
    }

    fn digest(&self, _conn: &Connection) -> Result<String, String> {
        Ok(String::new())
    }
}

fn db() -> LocalDb {
    LocalDb::open_in_memory().expect("in-memory database")
}

/// Every field set, with values that are easy to get wrong on a wire.
fn full() -> Everything {
    Everything {
        flag: true,
        small: i32::MIN,
        big: i64::MAX,
        count: u32::MAX,
        id: u64::MAX,
        ratio: 0.1 + 0.2,
        label: "tab\there, quote \" and ünïcødé".into(),
        blob: vec![0, 1, 127, 128, 255],
        money: "12345678901234.50".parse().expect("decimal"),
        day: "2024-02-29".parse().expect("date"),
        at: "2024-03-31T23:59:59.123456789Z".parse().expect("time"),
        span: "-1.5s".parse().expect("duration"),
        levels: vec![Level::HighV2, Level::Low, Level::HighV2],
        maybe: Some(String::new()),
        by_name: BTreeMap::from([("a".into(), Level::Low), ("b".into(), Level::HighV2)]),
        nested: Some(Level::Low),
    }
}

/// Every optional field empty, every collection empty, zeros.
fn sparse() -> Everything {
    Everything {
        flag: false,
        small: 0,
        big: 0,
        count: 0,
        id: 0,
        ratio: 0.0,
        label: String::new(),
        blob: Vec::new(),
        money: Decimal::ZERO,
        day: "1970-01-01".parse().expect("date"),
        at: "1970-01-01T00:00:00Z".parse().expect("time"),
        span: Duration::seconds(0),
        levels: Vec::new(),
        maybe: None,
        by_name: BTreeMap::new(),
        nested: None,
    }
}

/// What `find` answers when every parameter takes its schema default.
fn defaults() -> Everything {
    let mut value = sparse();
    value.flag = true;
    value.small = -3;
    value.ratio = 0.5;
    value.label = "any".into();
    value.money = "1.50".parse().expect("decimal");
    value.nested = Some(Level::HighV2);
    value.id = u64::MAX;
    value
}

/// The same checks through any client of the API.
async fn round_trips(api: &impl KitchenSinkApi, path: &str) {
    for value in [full(), sparse()] {
        let back = api.put_everything(value.clone()).await;
        assert_eq!(back.as_ref(), Ok(&value), "{path}");
        // Decimals keep their scale, not only their value.
        assert_eq!(
            back.expect("echo").money.to_string(),
            value.money.to_string()
        );
    }
    let mut refused = full();
    refused.label = "nope".into();
    match api.put_everything(refused).await {
        Err(CallError::Domain(KitchenSinkError::Nope(m))) => assert_eq!(m, "refused", "{path}"),
        other => panic!("{path}: expected Nope, got {other:?}"),
    }
    // `reset` is deprecated in the schema: callers are warned, and it is still served.
    #[allow(deprecated)]
    let reset = api.reset().await;
    assert_eq!(reset, Ok(()), "{path}");
    let explicit = api
        .find(
            false,
            7,
            2.5,
            "x".into(),
            Decimal::new(3, 0),
            Level::Low,
            Some(9),
        )
        .await
        .expect("find");
    assert_eq!(
        (explicit[0].small, explicit[0].id, explicit[0].nested),
        (7, 9, Some(Level::Low)),
        "{path}"
    );
}

#[tokio::test]
async fn every_form_round_trips_through_the_command_bytes() {
    round_trips(&local(db(), EchoStore), "command bytes").await;
    round_trips(&Direct::new(db(), EchoStore), "direct").await;
    // A client picked at run time, as a trait object.
    let picked: Arc<dyn DynKitchenSinkApi> = Arc::new(local(db(), EchoStore));
    round_trips(&picked, "dyn").await;
    // Omitted parameters take their defaults when a command is built from JSON-RPC params.
    let command = kitchen_sink_generated::KitchenSinkCommand::from_params("find", None)
        .expect("all parameters have defaults");
    let reply = kitchen_sink_generated::invoke(&local(db(), EchoStore), command).await;
    assert_eq!(
        reply,
        Ok(kitchen_sink_generated::KitchenSinkReply::Find(vec![
            defaults()
        ]))
    );
}

async fn listener() -> (tokio::net::TcpListener, String) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("address").to_string();
    (listener, addr)
}

#[tokio::test]
async fn every_form_round_trips_through_grpc() {
    let (listener, addr) = listener().await;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let api = Arc::new(local(db(), EchoStore));
    let server = tokio::spawn(kitchen_sink_generated::grpc::serve(
        listener,
        api,
        1 << 20,
        async {
            let _ = stopped.await;
        },
    ));
    let client = GrpcClient::connect(&addr).await.expect("connect");
    round_trips(&client, "gRPC").await;
    // A request with every optional field unset gets the schema's defaults.
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .expect("endpoint")
        .connect()
        .await
        .expect("channel");
    let mut raw = pb::kitchen_sink_client::KitchenSinkClient::new(channel);
    let found = raw
        .find(pb::FindRequest::default())
        .await
        .expect("find with defaults")
        .into_inner();
    let native: Vec<Everything> = found
        .value
        .into_iter()
        .map(|v| Everything::try_from(v).expect("a valid message"))
        .collect();
    assert_eq!(native, vec![defaults()]);
    let _ = stop.send(());
    server.await.expect("server task").expect("server");
}

#[tokio::test]
async fn every_form_round_trips_through_jsonrpc() {
    let (listener, addr) = listener().await;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let api = Arc::new(local(db(), EchoStore));
    let server = tokio::spawn(kitchen_sink_generated::jsonrpc::serve(
        listener,
        api,
        1 << 20,
        async {
            let _ = stopped.await;
        },
    ));
    let client = JsonRpcClient::new(&addr).expect("client");
    round_trips(&client, "JSON-RPC").await;
    // No parameters at all: every one takes its default.
    let raw = jsonrpsee_http_client::HttpClient::builder()
        .build(format!("http://{addr}"))
        .expect("raw client");
    let found: Vec<Everything> = raw
        .request("find", jsonrpsee::rpc_params![])
        .await
        .expect("find with defaults");
    assert_eq!(found, vec![defaults()]);
    let _ = stop.send(());
    server.await.expect("server task").expect("server");
}
