//! The `call` command of every generated service: `<binary> call <operation> [--param value …]
//! --connect ADDR [--transport grpc|jsonrpc] [--json] [--tls-ca FILE]`, one subcommand per
//! operation with a flag per parameter and help from the schema's docs. The generated crate
//! describes its operations ([`OpSpec`]) and sends the call; this module builds the command
//! line, reads it into JSON parameters, and renders the outcome.
//!
//! Exit codes: 0 for an answer, [`EXIT_USAGE`] for a bad command line or bad parameters,
//! [`EXIT_DOMAIN`] when the service refused (a schema error kind), [`EXIT_FAILURE`] when the
//! call failed (transport, deadline, ...), [`EXIT_NOSPACE`] when a node refused a write for its
//! storage quota, [`EXIT_DENIED`] when it refused the caller's credential or roles.

use std::path::PathBuf;

pub use clap;
use clap::{Arg, ArgAction, ArgMatches, Command};
use serde_json::{Value, json};
pub use service::{AdminVerb, ClusterAccess, ClusterCommand, Common, NoCommands, main, main_with};

use crate::api::client::{GrpcClient, JsonRpcClient};
use crate::net::tls::ServerCa;
use crate::wire::CallKind;
use crate::wire::error::{CallError, DomainError, Failure};

mod service;

/// Exit code of a bad command line or bad parameters.
pub const EXIT_USAGE: u8 = 2;
/// Exit code of a refusal by the service (one of the schema's error kinds).
pub const EXIT_DOMAIN: u8 = 3;
/// Exit code of a call that failed on its way (transport, redirect, deadline, internal).
pub const EXIT_FAILURE: u8 = 4;
/// Exit code of a write refused because a node's storage is past its quota (`NoSpace`): nothing
/// was written, and the same call succeeds once space is freed.
pub const EXIT_NOSPACE: u8 = 5;
/// Exit code of a call refused for its credential: no token or an unknown one, or roles that
/// do not allow the operation.
pub const EXIT_DENIED: u8 = 6;

/// How a parameter's flag value becomes JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wire {
    /// As a JSON string, exactly as typed (strings, decimals, dates, times, durations, enums).
    Text,
    /// As a number or a boolean, read the way a person types it: `01` is 1, `+5` is 5,
    /// `true`/`false` are booleans (the type's range is checked where the value is decoded).
    Scalar,
    /// As JSON text (lists, maps, structs, bytes).
    Json,
}

/// One parameter of an operation, as the command line shows it.
#[derive(Debug, Clone, Copy)]
pub struct ParamSpec {
    /// Its name (the flag is its kebab-case form).
    pub name: &'static str,
    /// Its type as the schema writes it.
    pub ty: &'static str,
    /// How its value is read.
    pub wire: Wire,
    /// Whether it must be given (no default, not an option).
    pub required: bool,
    /// Its documentation.
    pub doc: &'static str,
}

/// One operation, as the command line shows it.
#[derive(Debug, Clone, Copy)]
pub struct OpSpec {
    /// Its name (the subcommand).
    pub name: &'static str,
    /// Command or query.
    pub kind: CallKind,
    /// Its documentation.
    pub doc: &'static str,
    /// Its parameters, in order.
    pub params: &'static [ParamSpec],
}

/// The transport a call goes over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// gRPC.
    Grpc,
    /// JSON-RPC over HTTP.
    JsonRpc,
}

fn flag(name: &str) -> String {
    name.replace('_', "-")
}

/// The `call` command of `service`, with one subcommand per operation in `ops`.
pub fn command(service: &str, ops: &'static [OpSpec]) -> Command {
    let mut call = Command::new("call")
        .about(format!(
            "Call one operation of the {service} service on a server or a cluster node"
        ))
        .subcommand_required(true)
        .arg_required_else_help(true)
        .arg(
            Arg::new("connect")
                .long("connect")
                .value_name("ADDR")
                // Global flags cannot be required in clap: `Call::parse` asks for it.
                .global(true)
                .help("The server or node to call (its gRPC or JSON-RPC address)"),
        )
        .arg(
            Arg::new("transport")
                .long("transport")
                .value_parser(["grpc", "jsonrpc"])
                .default_value("grpc")
                .global(true)
                .help("The protocol to call over"),
        )
        .arg(
            Arg::new("json")
                .long("json")
                .action(ArgAction::SetTrue)
                .global(true)
                .help("Print the answer in JSON-RPC's form: {\"result\": …} or {\"error\": …}"),
        )
        .arg(
            Arg::new("tls-ca")
                .long("tls-ca")
                .value_name("FILE")
                .value_parser(clap::value_parser!(PathBuf))
                .global(true)
                .help("Call over TLS, trusting the servers this CA (PEM) signed"),
        )
        .arg(
            Arg::new("token")
                .long("token")
                .value_name("TOKEN")
                .env(TOKEN_ENV)
                .hide_env_values(true)
                .global(true)
                .help(
                    "The caller's token (from `admin token issue`), for a node started with --auth",
                ),
        );
    for op in ops {
        let kind = match op.kind {
            CallKind::Command => "command",
            CallKind::Query => "query",
        };
        let summary = op.doc.lines().next().unwrap_or("").trim().to_string();
        let mut sub = Command::new(op.name)
            .about(format!("{summary} [{kind}]"))
            .long_about(format!("{} [{kind}]", op.doc.trim()));
        if op.name.contains('_') {
            sub = sub.alias(flag(op.name));
        }
        for p in op.params {
            let doc = p.doc.split_whitespace().collect::<Vec<_>>().join(" ");
            sub = sub.arg(
                Arg::new(p.name)
                    .long(flag(p.name))
                    .value_name(p.ty.to_uppercase())
                    .required(p.required)
                    .help(if doc.is_empty() {
                        format!("[{}]", p.ty)
                    } else {
                        format!("{doc} [{}]", p.ty)
                    }),
            );
        }
        call = call.subcommand(sub);
    }
    call.subcommand(
        Command::new(WATCH)
            .about("Print every command the cluster applies, one line each, until interrupted")
            .long_about(
                "Print every command the cluster applies, one line each (`INDEX TIME OPERATION \
                 ARGUMENTS -> REPLY`, or the event's JSON with --json), until interrupted, like \
                 `etcdctl watch`. Over gRPC. With several --connect addresses (comma-separated) \
                 it resumes on the next one when a node goes away, from the index after the last \
                 one printed.",
            )
            .arg(
                Arg::new("from")
                    .long("from")
                    .value_name("INDEX")
                    .value_parser(clap::value_parser!(u64))
                    .default_value("0")
                    .help("The first log index to print; 0 starts at the next command"),
            )
            .arg(
                Arg::new("operation")
                    .long("operation")
                    .value_name("NAME")
                    .action(ArgAction::Append)
                    .help("Only this operation (repeat for several)"),
            )
            .arg(
                Arg::new("key")
                    .long("key")
                    .value_name("KEY")
                    .help("Only commands whose watch key (the schema's `watch_keys`) is KEY"),
            )
            .arg(
                Arg::new("key-prefix")
                    .long("key-prefix")
                    .value_name("PREFIX")
                    .help("Only commands with a watch key starting with PREFIX"),
            ),
    )
}

/// The name of the `call` subcommand that watches the change feed.
pub const WATCH: &str = "watch";

/// A `call watch` read from the command line.
#[derive(Debug, Clone)]
pub struct WatchCall {
    /// Where it connects and resumes.
    pub target: crate::api::watch::WatchTarget,
    /// The first index.
    pub from: u64,
    /// What it passes.
    pub filter: crate::raft::feed::WatchFilter,
    /// Print each event's JSON.
    pub json: bool,
}

impl WatchCall {
    /// Reads the `watch` subcommand of `matches` (of [`command`]); `None` when another
    /// subcommand was given.
    pub fn parse(matches: &ArgMatches) -> Option<Result<WatchCall, String>> {
        let (WATCH, sub) = matches.subcommand()? else {
            return None;
        };
        Some((|| {
            if matches.get_one::<String>("transport").map(String::as_str) == Some("jsonrpc") {
                return Err(
                    "watch runs over gRPC here; over JSON-RPC, subscribe to `rpc.watch` \
                            on a WebSocket"
                        .to_string(),
                );
            }
            let connect = matches
                .get_one::<String>("connect")
                .ok_or_else(|| "--connect ADDR[,ADDR…] is required".to_string())?;
            let mut target = crate::api::watch::WatchTarget::new(
                connect.split(',').map(str::trim).filter(|a| !a.is_empty()),
            );
            target.tls = matches
                .get_one::<PathBuf>("tls-ca")
                .map(|path| ServerCa::load(path))
                .transpose()
                .map_err(|e| e.to_string())?;
            target.token = matches
                .get_one::<String>("token")
                .map(|t| crate::wire::call::Token(t.clone()));
            Ok(WatchCall {
                target,
                from: sub.get_one::<u64>("from").copied().unwrap_or(0),
                filter: crate::raft::feed::WatchFilter {
                    operations: sub
                        .get_many::<String>("operation")
                        .map(|ops| ops.cloned().collect())
                        .unwrap_or_default(),
                    key: sub.get_one::<String>("key").cloned(),
                    key_prefix: sub.get_one::<String>("key-prefix").cloned(),
                },
                json: matches.get_flag("json"),
            })
        })())
    }

    /// Prints `events` one line each as they come (to stdout, flushed), until the stream ends;
    /// says how it ended. `to_json` is the event's JSON form.
    pub async fn print<T>(
        &self,
        events: impl futures_util::Stream<Item = Result<T, crate::raft::feed::WatchError>>,
        to_json: impl Fn(&T) -> Value,
    ) -> Output {
        use futures_util::StreamExt as _;
        use std::io::Write as _;
        let mut events = std::pin::pin!(events);
        let stdout = std::io::stdout();
        while let Some(item) = events.next().await {
            match item {
                Ok(event) => {
                    let json = to_json(&event);
                    let line = if self.json {
                        json.to_string()
                    } else {
                        event_line(&json)
                    };
                    let mut out = stdout.lock();
                    if writeln!(out, "{line}").and_then(|()| out.flush()).is_err() {
                        // The reader went away (a closed pipe): done.
                        return Output::done();
                    }
                }
                Err(e) => {
                    return Output {
                        text: format!("error: {e}"),
                        to_stderr: true,
                        code: EXIT_FAILURE,
                    };
                }
            }
        }
        Output::done()
    }
}

/// One event in human form: `INDEX TIME OPERATION ARGUMENTS -> REPLY`.
fn event_line(json: &Value) -> String {
    let reply = match (&json["reply"]["ok"], &json["reply"]["error"]) {
        (Value::Null, Value::Null) => "ok".to_string(),
        (Value::Null, error) => format!(
            "error {}: {}",
            error["kind"].as_str().unwrap_or("?"),
            error["message"].as_str().unwrap_or("")
        ),
        (ok, _) => ok.to_string(),
    };
    format!(
        "{} {} {} {} -> {reply}",
        json["index"],
        json["applied_at"].as_str().unwrap_or("?"),
        json["operation"].as_str().unwrap_or("?"),
        json["command"]
    )
}

/// A call read from the command line.
#[derive(Debug, Clone)]
pub struct Call {
    /// The operation.
    pub operation: &'static OpSpec,
    /// Its parameters, as a JSON object (absent ones left out: their defaults apply).
    pub params: Value,
    /// The address called.
    pub connect: String,
    /// The protocol.
    pub transport: Transport,
    /// Print the JSON-RPC form.
    pub json: bool,
    /// The CA to trust, for TLS.
    pub tls_ca: Option<PathBuf>,
    /// The caller's token.
    pub token: Option<String>,
}

/// The environment variable `call --token` falls back to.
pub const TOKEN_ENV: &str = "RAFT_TOKEN";

impl Call {
    /// Reads `matches` (of [`command`] over `ops`) into a call.
    pub fn parse(ops: &'static [OpSpec], matches: &ArgMatches) -> Result<Call, String> {
        let (name, sub) = matches
            .subcommand()
            .ok_or_else(|| "name an operation".to_string())?;
        let operation = ops
            .iter()
            .find(|o| o.name == name || flag(o.name) == name)
            .ok_or_else(|| format!("unknown operation `{name}`"))?;
        let mut params = serde_json::Map::new();
        for p in operation.params {
            let Some(text) = sub.get_one::<String>(p.name) else {
                continue;
            };
            let value = match p.wire {
                Wire::Text => Value::String(text.clone()),
                Wire::Scalar => scalar(text, p.ty)
                    .map_err(|e| format!("--{}: `{text}` is not a {} ({e})", flag(p.name), p.ty))?,
                Wire::Json => serde_json::from_str(text)
                    .map_err(|e| format!("--{}: `{text}` is not a {} ({e})", flag(p.name), p.ty))?,
            };
            params.insert(p.name.to_string(), value);
        }
        let connect = matches
            .get_one::<String>("connect")
            .cloned()
            .ok_or_else(|| "--connect ADDR is required".to_string())?;
        let transport = match matches.get_one::<String>("transport").map(String::as_str) {
            Some("jsonrpc") => Transport::JsonRpc,
            _ => Transport::Grpc,
        };
        Ok(Call {
            operation,
            params: Value::Object(params),
            connect,
            transport,
            json: matches.get_flag("json"),
            tls_ca: matches.get_one::<PathBuf>("tls-ca").cloned(),
            token: matches.get_one::<String>("token").cloned(),
        })
    }

    fn ca(&self) -> Result<Option<ServerCa>, Failure> {
        self.tls_ca
            .as_deref()
            .map(ServerCa::load)
            .transpose()
            .map_err(|e| Failure::Transport(e.to_string()))
    }

    /// A gRPC client of the address called (over TLS with `--tls-ca`).
    pub async fn grpc_client(&self) -> Result<GrpcClient, Failure> {
        let client = match self.ca()? {
            Some(ca) => GrpcClient::connect_tls(&self.connect, ca).await,
            None => GrpcClient::connect(&self.connect).await,
        }?;
        Ok(match &self.token {
            Some(token) => client.with_token(token.clone()),
            None => client,
        })
    }

    /// A JSON-RPC client of the address called (over TLS with `--tls-ca`).
    pub fn jsonrpc_client(&self) -> Result<JsonRpcClient, Failure> {
        let client = match self.ca()? {
            Some(ca) => JsonRpcClient::with_tls(&self.connect, ca),
            None => JsonRpcClient::new(&self.connect),
        }?;
        Ok(match &self.token {
            Some(token) => client.with_token(token.clone()),
            None => client,
        })
    }
}

/// What the `call` command prints and exits with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output {
    /// The text to print.
    pub text: String,
    /// Whether it goes to stderr (an error in human form).
    pub to_stderr: bool,
    /// The process's exit code.
    pub code: u8,
}

impl Output {
    /// Nothing more to print; success.
    pub fn done() -> Output {
        Output {
            text: String::new(),
            to_stderr: false,
            code: 0,
        }
    }

    /// A bad command line or bad parameters.
    pub fn usage(message: impl std::fmt::Display) -> Output {
        Output {
            text: format!("error: {message}"),
            to_stderr: true,
            code: EXIT_USAGE,
        }
    }

    /// The outcome of a call: the answer (pretty JSON), or the error with its kind, in human
    /// form or (with `json`) in JSON-RPC's form.
    pub fn of<E: DomainError>(outcome: Result<Value, CallError<E>>, json: bool) -> Output {
        match outcome {
            Ok(value) => Output {
                text: pretty(&if json {
                    json!({ "result": value })
                } else {
                    value
                }),
                to_stderr: false,
                code: 0,
            },
            Err(e) => {
                let code = match e {
                    CallError::Domain(_) => EXIT_DOMAIN,
                    CallError::Failure(Failure::NoSpace(_)) => EXIT_NOSPACE,
                    CallError::Failure(
                        Failure::Unauthenticated(_) | Failure::PermissionDenied(_),
                    ) => EXIT_DENIED,
                    CallError::Failure(_) => EXIT_FAILURE,
                };
                if json {
                    let object = crate::wire::codes::to_error_object(&e);
                    let error = json!({
                        "code": object.code(),
                        "message": object.message(),
                        "data": object.data().and_then(|d| serde_json::from_str::<Value>(d.get()).ok()),
                    });
                    Output {
                        text: pretty(&json!({ "error": error })),
                        to_stderr: false,
                        code,
                    }
                } else {
                    Output {
                        text: format!("error: {e}"),
                        to_stderr: true,
                        code,
                    }
                }
            }
        }
    }
}

/// The whole `call` subcommand of a binary: reads `args` (what follows `<binary> call`) with
/// `command`, sends the call with `run` on a runtime of its own, prints the outcome, and returns
/// the exit code.
pub fn run_blocking<F>(
    binary: &str,
    command: Command,
    args: Vec<String>,
    run: impl FnOnce(ArgMatches) -> F,
) -> std::process::ExitCode
where
    F: std::future::Future<Output = Output>,
{
    let argv = std::iter::once(format!("{binary} call")).chain(args);
    let output = match command.try_get_matches_from(argv) {
        Ok(matches) => match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(runtime) => runtime.block_on(run(matches)),
            Err(e) => Output {
                text: format!("error: cannot start a runtime: {e}"),
                to_stderr: true,
                code: EXIT_FAILURE,
            },
        },
        Err(e) => {
            // Help and version go to stdout with 0; usage errors to stderr with 2.
            let _ = e.print();
            return std::process::ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(EXIT_USAGE));
        }
    };
    if output.to_stderr {
        eprintln!("{}", output.text);
    } else if !output.text.is_empty() {
        println!("{}", output.text);
    }
    std::process::ExitCode::from(output.code)
}

/// A number or boolean flag of type `ty` (`u64`, `option<i32>`, `f64`, `bool`, ...) as JSON.
fn scalar(text: &str, ty: &str) -> Result<Value, String> {
    let t = text.trim();
    let base = ty
        .strip_prefix("option<")
        .and_then(|rest| rest.strip_suffix('>'))
        .unwrap_or(ty);
    if base != ty && t == "null" {
        return Ok(Value::Null);
    }
    match base {
        "bool" => t
            .parse::<bool>()
            .map(Value::Bool)
            .map_err(|_| "expected true or false".to_string()),
        "f64" => t
            .parse::<f64>()
            .ok()
            .and_then(serde_json::Number::from_f64)
            .map(Value::Number)
            .ok_or_else(|| "expected a finite number".to_string()),
        _ if t.starts_with('-') => t.parse::<i64>().map(Value::from).map_err(|e| e.to_string()),
        _ => t
            .trim_start_matches('+')
            .parse::<u64>()
            .map(Value::from)
            .map_err(|e| e.to_string()),
    }
}

fn pretty(value: &Value) -> String {
    serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    const OPS: &[OpSpec] = &[OpSpec {
        name: "put_item",
        kind: CallKind::Command,
        doc: "Stores an item.\nMore words.",
        params: &[
            ParamSpec {
                name: "item_id",
                ty: "u64",
                wire: Wire::Scalar,
                required: true,
                doc: "Its id.",
            },
            ParamSpec {
                name: "price",
                ty: "decimal",
                wire: Wire::Text,
                required: false,
                doc: "",
            },
            ParamSpec {
                name: "tags",
                ty: "list<string>",
                wire: Wire::Json,
                required: false,
                doc: "",
            },
        ],
    }];

    fn parse(args: &[&str]) -> Result<Call, String> {
        let matches = command("Shop", OPS)
            .try_get_matches_from(std::iter::once("call").chain(args.iter().copied()))
            .map_err(|e| e.to_string())?;
        Call::parse(OPS, &matches)
    }

    #[test]
    fn flags_become_typed_json_parameters() {
        let call = parse(&[
            "put-item",
            "--item-id",
            "7",
            "--price",
            "10.50",
            "--tags",
            r#"["a","b"]"#,
            "--connect",
            "127.0.0.1:1",
            "--transport",
            "jsonrpc",
            "--json",
        ])
        .expect("parses");
        assert_eq!(call.operation.name, "put_item");
        assert_eq!(
            call.params,
            json!({"item_id": 7, "price": "10.50", "tags": ["a", "b"]})
        );
        assert_eq!(call.transport, Transport::JsonRpc);
        assert!(call.json);
    }

    #[test]
    fn a_missing_required_flag_or_a_bad_value_is_a_usage_error() {
        let missing = parse(&["put_item", "--connect", "127.0.0.1:1"]).expect_err("missing");
        assert!(missing.contains("--item-id"), "{missing}");
        let bad = parse(&["put_item", "--item-id", "seven", "--connect", "x:1"]).expect_err("bad");
        assert!(bad.contains("--item-id: `seven` is not a u64"), "{bad}");
    }

    #[test]
    fn numbers_and_booleans_are_read_as_typed_not_as_json() {
        let item_id = |text: &str| {
            parse(&["put-item", "--item-id", text, "--connect", "x:1"]).map(|c| c.params)
        };
        assert_eq!(item_id("01").expect("01"), json!({"item_id": 1}));
        assert_eq!(item_id("+5").expect("+5"), json!({"item_id": 5}));
        assert_eq!(item_id(" 42 ").expect("spaces"), json!({"item_id": 42}));
        assert!(item_id("1.5").is_err());
        assert_eq!(scalar("-3", "i32"), Ok(json!(-3)));
        assert_eq!(scalar("007", "option<u32>"), Ok(json!(7)));
        assert_eq!(scalar("null", "option<u32>"), Ok(Value::Null));
        assert!(scalar("null", "u32").is_err());
        assert_eq!(scalar("true", "bool"), Ok(json!(true)));
        assert!(scalar("yes", "bool").is_err());
        assert_eq!(scalar("2.50", "f64"), Ok(json!(2.5)));
        assert!(scalar("NaN", "f64").is_err());
    }
}
