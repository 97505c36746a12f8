//! The clients every generated service uses, and the policy they follow whatever the protocol:
//! which node they call (a redirect moves them there for this call and the later ones), how many
//! redirects one call follows, and which failures they resend under the same request id.
//!
//! [`GrpcClient`] and [`JsonRpcClient`] know no schema: the generated crate implements its API
//! trait for them, one method per operation, each a call through [`GrpcClient::call`] or
//! [`JsonRpcClient::call`].

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jsonrpsee::core::client::ClientT;
use tonic::transport::{Channel, Endpoint};

use crate::net::tls::ServerCa;
use crate::wire::CallKind;
use crate::wire::call::{self, CallContext, InFlight, ReadLevel, Session};
use crate::wire::error::{CallError, Failure};

/// How one attempt of a call ended, as the policy sees it.
#[derive(Debug)]
pub enum Attempt<T, E> {
    /// An answer to return as it is: a value or an error.
    Done(Result<T, E>),
    /// The node sends the call to its leader at this address (for the client's protocol).
    Redirect(String),
    /// The call may not have reached the service: resent when the policy allows it.
    Transport(E),
}

/// Redirect and resend limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// How many redirects one call follows before it fails.
    pub max_redirects: usize,
    /// How many times a call that carries a request id is resent after a transport failure.
    pub retries: u32,
    /// The wait before the first resend; it doubles with each one (at most 32 times).
    pub backoff: Duration,
    /// How long one call may take in all, redirects and resends included; past it the call
    /// fails with [`Failure::Deadline`]. `None` waits as long as the transport does.
    pub deadline: Option<Duration>,
}

impl Policy {
    /// Default for [`Policy::max_redirects`]: 3.
    pub const DEFAULT_MAX_REDIRECTS: usize = 3;
    /// Default for [`Policy::deadline`]: 60 s, longer than a node's own 20 s window for
    /// finding a leader, so a node's answer arrives before the client gives up.
    pub const DEFAULT_DEADLINE: Duration = Duration::from_secs(60);
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            max_redirects: Self::DEFAULT_MAX_REDIRECTS,
            retries: 0,
            backoff: Duration::from_millis(100),
            deadline: Some(Self::DEFAULT_DEADLINE),
        }
    }
}

/// The node a client calls: the one it was pointed at, or the leader a redirect named.
#[derive(Debug)]
pub struct Target<C> {
    home: C,
    redirected: Mutex<Option<C>>,
}

impl<C: Clone> Target<C> {
    /// A target that starts at `home`.
    pub fn new(home: C) -> Self {
        Target {
            home,
            redirected: Mutex::new(None),
        }
    }

    /// The connection calls go to now.
    pub fn current(&self) -> C {
        match self.redirected.lock() {
            Ok(guard) => guard.clone().unwrap_or_else(|| self.home.clone()),
            Err(_) => self.home.clone(),
        }
    }

    fn redirect(&self, to: C) {
        if let Ok(mut guard) = self.redirected.lock() {
            *guard = Some(to);
        }
    }
}

impl Policy {
    /// Runs one call. `attempt` sends it to a connection; a [`Attempt::Redirect`] connects to
    /// the named leader with `connect` (which later calls keep using) and sends it there, at
    /// most [`Policy::max_redirects`] times, after which the call fails with a
    /// [`Failure::Transport`]; a
    /// [`Attempt::Transport`] failure is resent after a backoff when `resend` is true (the call
    /// carries a request id, so the server applies it once), at most [`Policy::retries`] times.
    /// All of it within [`Policy::deadline`].
    pub async fn call<C, T, E, AF, KF>(
        &self,
        target: &Target<C>,
        resend: bool,
        attempt: impl Fn(C) -> AF,
        connect: impl Fn(String) -> KF,
    ) -> Result<T, E>
    where
        C: Clone,
        E: From<Failure>,
        AF: Future<Output = Attempt<T, E>>,
        KF: Future<Output = Result<C, E>>,
    {
        let run = async {
            let mut conn = target.current();
            let (mut redirects, mut retries) = (0, 0);
            loop {
                match attempt(conn.clone()).await {
                    Attempt::Done(result) => return result,
                    Attempt::Redirect(addr) if redirects < self.max_redirects => {
                        redirects += 1;
                        conn = connect(addr).await?;
                        target.redirect(conn.clone());
                    }
                    Attempt::Redirect(_) => {
                        return Err(E::from(Failure::Transport(format!(
                            "more than {} redirects",
                            self.max_redirects
                        ))));
                    }
                    Attempt::Transport(_) if resend && retries < self.retries => {
                        retries += 1;
                        tokio::time::sleep(self.backoff * (1 << retries.min(5))).await;
                    }
                    Attempt::Transport(e) => return Err(e),
                }
            }
        };
        match self.deadline {
            None => run.await,
            Some(deadline) => tokio::time::timeout(deadline, run)
                .await
                .unwrap_or_else(|_| {
                    Err(E::from(Failure::Deadline(format!(
                        "no answer within {deadline:?}"
                    ))))
                }),
        }
    }
}

impl<E> CallError<E> {
    /// How the client policy treats this error on `protocol`: a redirect to follow, a transport
    /// failure that may be resent, or an answer.
    pub fn into_attempt<T>(self, protocol: &str) -> Attempt<T, Self> {
        match self {
            CallError::Failure(Failure::Redirect(leader)) => match leader.addr(protocol) {
                Some(addr) => Attempt::Redirect(addr.to_string()),
                None => Attempt::Done(Err(CallError::Failure(Failure::Redirect(leader)))),
            },
            CallError::Failure(Failure::Transport(m)) => {
                Attempt::Transport(CallError::Failure(Failure::Transport(m)))
            }
            other => Attempt::Done(Err(other)),
        }
    }
}

/// `addr` as a URL: `host:port` gets `http://` (`https://` with `tls`), a URL stays as it is.
/// With `tls`, an explicit `http://` URL is refused: it would quietly go in plaintext.
fn http_url(addr: &str, tls: bool) -> Result<String, Failure> {
    if tls && addr.starts_with("http://") {
        return Err(Failure::Transport(format!(
            "`{addr}` is a plaintext URL but a TLS CA was given; use https:// or host:port"
        )));
    }
    Ok(if addr.contains("://") {
        addr.to_string()
    } else if tls {
        format!("https://{addr}")
    } else {
        format!("http://{addr}")
    })
}

/// Connects a gRPC channel to `addr` (`host:port` or a URL), with TCP_NODELAY; with `tls`, over
/// TLS to a server whose certificate that CA signed.
pub async fn connect_channel(addr: &str, tls: Option<&ServerCa>) -> Result<Channel, Failure> {
    endpoint(addr, tls)?
        .connect()
        .await
        .map_err(|e| Failure::Transport(format!("cannot connect to {addr}: {e}")))
}

/// The endpoint [`connect_channel`] connects.
pub(crate) fn endpoint(addr: &str, tls: Option<&ServerCa>) -> Result<Endpoint, Failure> {
    let mut endpoint = Endpoint::from_shared(http_url(addr, tls.is_some())?)
        .map_err(|e| Failure::Transport(format!("bad address `{addr}`: {e}")))?
        .tcp_nodelay(true)
        .connect_timeout(Duration::from_secs(5));
    if let Some(ca) = tls {
        endpoint = endpoint
            .tls_config(ca.grpc())
            .map_err(|e| Failure::Transport(format!("TLS for {addr}: {e}")))?;
    }
    Ok(endpoint)
}

/// A gRPC client of any generated service. Cloning is cheap and shares the connection.
///
/// Every command carries a request id (`x-client-id` + `x-request-seq`); a replicated node
/// applies a command at most once per id. With [`GrpcClient::retrying`], a command that fails
/// with a transport error is resent under the same id: only do that against servers that
/// deduplicate, i.e. Raft nodes.
#[derive(Debug, Clone)]
pub struct GrpcClient {
    target: Arc<Target<Channel>>,
    calls: Calls,
}

/// What both clients keep besides their connection: the session that numbers commands, the
/// redirect and resend policy, the read level of queries, and the CA of a TLS cluster (a
/// redirect connects with it too).
#[derive(Debug, Clone, Default)]
struct Calls {
    session: Session,
    policy: Policy,
    read_level: Option<ReadLevel>,
    tls: Option<ServerCa>,
    /// The caller's bearer token, sent with every call.
    token: Option<crate::wire::call::Token>,
}

impl Calls {
    /// The context of a `kind` call: a request id for a command, held in flight (which keeps
    /// the session's acknowledgement below it) until the returned guard is dropped when the
    /// call has its outcome or is cancelled; the read level for a query.
    fn begin(&self, kind: CallKind) -> (Option<InFlight>, CallContext) {
        let in_flight = (kind == CallKind::Command).then(|| self.session.begin());
        let context = CallContext {
            request: in_flight.as_ref().map(|f| f.id.clone()),
            read_level: self.read_level.filter(|_| kind == CallKind::Query),
            token: self.token.clone(),
        };
        (in_flight, context)
    }
}

impl GrpcClient {
    /// A client over an existing channel.
    pub fn new(channel: Channel) -> Self {
        GrpcClient {
            target: Arc::new(Target::new(channel)),
            calls: Calls::default(),
        }
    }

    /// Connects to `addr` (`host:port` or `http://host:port`).
    pub async fn connect(addr: &str) -> Result<Self, Failure> {
        Ok(Self::new(connect_channel(addr, None).await?))
    }

    /// Connects to `addr` over TLS: the server (and any leader a redirect names) must present
    /// a certificate `ca` signed.
    pub async fn connect_tls(addr: &str, ca: ServerCa) -> Result<Self, Failure> {
        let mut client = Self::new(connect_channel(addr, Some(&ca)).await?);
        client.calls.tls = Some(ca);
        Ok(client)
    }

    /// Asks for this read level on every query (on replicated nodes: `Stale` reads the node's
    /// local state without a read index).
    pub fn with_read_level(mut self, level: ReadLevel) -> Self {
        self.calls.read_level = Some(level);
        self
    }

    /// Sends `token` (what `admin token issue` printed) with every call.
    pub fn with_token(mut self, token: impl Into<String>) -> Self {
        self.calls.token = Some(crate::wire::call::Token(token.into()));
        self
    }

    /// Resends a command that failed with a transport error up to `retries` times (with
    /// backoff), under the same request id. For servers that deduplicate.
    pub fn retrying(mut self, retries: u32) -> Self {
        self.calls.policy.retries = retries;
        self
    }

    /// Makes one call under the policy: commands get a request id, queries the client's read
    /// level. `send` makes the call on a channel; `classify` says what a failed status means.
    pub async fn call<Req, Resp, E, Fut>(
        &self,
        kind: CallKind,
        request: Req,
        send: impl Fn(Channel, tonic::Request<Req>) -> Fut,
        classify: impl Fn(tonic::Status) -> Attempt<Resp, E>,
    ) -> Result<Resp, E>
    where
        Req: Clone,
        E: From<Failure>,
        Fut: Future<Output = Result<tonic::Response<Resp>, tonic::Status>>,
    {
        let (in_flight, context) = self.calls.begin(kind);
        let tls = self.calls.tls.as_ref();
        let attempt = |channel: Channel| {
            let mut r = tonic::Request::new(request.clone());
            call::context_to_metadata(&context, r.metadata_mut());
            let sent = send(channel, r);
            let classify = &classify;
            async move {
                match sent.await {
                    Ok(response) => Attempt::Done(Ok(response.into_inner())),
                    Err(status) => classify(status),
                }
            }
        };
        let outcome = self
            .calls
            .policy
            .call(
                &self.target,
                in_flight.is_some(),
                attempt,
                |addr| async move { connect_channel(&addr, tls).await.map_err(E::from) },
            )
            .await;
        drop(in_flight);
        outcome
    }
}

type Http = Arc<jsonrpsee_http_client::HttpClient>;

fn http(addr: &str, tls: Option<&ServerCa>) -> Result<Http, Failure> {
    let url = http_url(addr, tls.is_some())?;
    let mut builder = jsonrpsee_http_client::HttpClient::builder()
        .max_response_size(u32::try_from(crate::api::server::MAX_API_MESSAGE).unwrap_or(u32::MAX));
    if let Some(ca) = tls {
        let config = ca
            .rustls_client()
            .map_err(|e| Failure::Transport(format!("TLS for {addr}: {e}")))?;
        builder = builder.with_custom_cert_store(config);
    }
    let client = builder
        .build(&url)
        .map_err(|e| Failure::Transport(format!("bad address `{addr}`: {e}")))?;
    Ok(Arc::new(client))
}

/// A JSON-RPC 2.0 client (over HTTP) of any generated service. Cloning is cheap and shares the
/// session. Like [`GrpcClient`], it gives every command a request id (sent among the named
/// parameters under the gRPC metadata names, `x-client-id`, `x-request-seq`, `x-request-ack`),
/// so with [`JsonRpcClient::retrying`] a command that failed on its way is resent and applied
/// once; a query carries the client's read level as `x-read-level`.
#[derive(Debug, Clone)]
pub struct JsonRpcClient {
    target: Arc<Target<Http>>,
    calls: Calls,
}

impl JsonRpcClient {
    /// A client for the server at `addr` (`host:port` or an `http://` URL).
    pub fn new(addr: &str) -> Result<Self, Failure> {
        Ok(JsonRpcClient {
            target: Arc::new(Target::new(http(addr, None)?)),
            calls: Calls::default(),
        })
    }

    /// A client for the server at `addr` over TLS (HTTPS): the server (and any leader a
    /// redirect names) must present a certificate `ca` signed.
    pub fn with_tls(addr: &str, ca: ServerCa) -> Result<Self, Failure> {
        Ok(JsonRpcClient {
            target: Arc::new(Target::new(http(addr, Some(&ca))?)),
            calls: Calls {
                tls: Some(ca),
                ..Calls::default()
            },
        })
    }

    /// Asks for this read level on every query.
    pub fn with_read_level(mut self, level: ReadLevel) -> Self {
        self.calls.read_level = Some(level);
        self
    }

    /// Sends `token` (what `admin token issue` printed) with every call.
    pub fn with_token(mut self, token: impl Into<String>) -> Self {
        self.calls.token = Some(crate::wire::call::Token(token.into()));
        self
    }

    /// Resends a command that failed with a transport error up to `retries` times (with
    /// backoff), under the same request id. For servers that deduplicate.
    pub fn retrying(mut self, retries: u32) -> Self {
        self.calls.policy.retries = retries;
        self
    }

    /// Calls `method` (a `kind` call) with named `params` under the policy; `classify` says
    /// what an error object from the server means.
    pub async fn call<E: From<Failure>>(
        &self,
        kind: CallKind,
        method: &str,
        mut params: serde_json::Map<String, serde_json::Value>,
        classify: impl Fn(&jsonrpsee::types::ErrorObject<'_>) -> Attempt<serde_json::Value, E>,
    ) -> Result<serde_json::Value, E> {
        let (in_flight, context) = self.calls.begin(kind);
        call::context_to_params(&context, &mut params);
        let params = &params;
        let tls = self.calls.tls.as_ref();
        let attempt = |client: Http| {
            let classify = &classify;
            async move {
                match client
                    .request::<serde_json::Value, _>(method, params.clone())
                    .await
                {
                    Ok(value) => Attempt::Done(Ok(value)),
                    Err(jsonrpsee::core::ClientError::Call(e)) => classify(&e),
                    Err(e) => {
                        Attempt::Transport(E::from(Failure::Transport(format!("`{method}`: {e}"))))
                    }
                }
            }
        };
        let outcome = self
            .calls
            .policy
            .call(
                &self.target,
                in_flight.is_some(),
                attempt,
                |addr| async move { http(&addr, tls).map_err(E::from) },
            )
            .await;
        drop(in_flight);
        outcome
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    fn policy(retries: u32) -> Policy {
        Policy {
            retries,
            backoff: Duration::from_millis(1),
            ..Policy::default()
        }
    }

    /// Errors of the tests: a message, or the failure the policy made.
    #[derive(Debug, PartialEq)]
    enum E {
        Said(String),
        Failed(Failure),
    }

    impl From<Failure> for E {
        fn from(f: Failure) -> Self {
            E::Failed(f)
        }
    }

    #[tokio::test]
    async fn a_call_past_its_deadline_fails_with_deadline() {
        let policy = Policy {
            deadline: Some(Duration::from_millis(50)),
            ..Policy::default()
        };
        let answer: Result<(), E> = policy
            .call(
                &Target::new(()),
                false,
                |()| async { std::future::pending::<Attempt<(), E>>().await },
                |_| async { Ok(()) },
            )
            .await;
        assert!(
            matches!(answer, Err(E::Failed(Failure::Deadline(_)))),
            "{answer:?}"
        );
    }

    #[test]
    fn a_redirect_is_followed_only_when_it_names_the_protocol() {
        let redirect = |words: &str| {
            CallError::<String>::Failure(Failure::Redirect(crate::wire::error::Leader::parse(
                words,
            )))
        };
        assert!(matches!(
            redirect("grpc=a:1").into_attempt::<()>("grpc"),
            Attempt::Redirect(addr) if addr == "a:1"
        ));
        assert!(matches!(
            redirect("grpc=a:1").into_attempt::<()>("jsonrpc"),
            Attempt::Done(Err(_))
        ));
    }

    #[tokio::test]
    async fn a_redirect_moves_this_call_and_the_next_ones() {
        let target = Target::new("follower".to_string());
        let answer = policy(0)
            .call(
                &target,
                false,
                |conn: String| async move {
                    match conn.as_str() {
                        "leader" => Attempt::Done(Ok::<_, E>("done")),
                        _ => Attempt::Redirect("leader".into()),
                    }
                },
                |addr| async move { Ok(addr) },
            )
            .await;
        assert_eq!(answer, Ok("done"));
        assert_eq!(target.current(), "leader");
    }

    #[tokio::test]
    async fn redirects_are_bounded() {
        let target = Target::new(0u32);
        let answer: Result<(), E> = policy(0)
            .call(
                &target,
                false,
                |n: u32| async move { Attempt::Redirect(format!("{}", n + 1)) },
                |addr| async move { addr.parse::<u32>().map_err(|e| E::Said(e.to_string())) },
            )
            .await;
        assert_eq!(
            answer,
            Err(E::Failed(Failure::Transport(
                "more than 3 redirects".into()
            )))
        );
        assert_eq!(target.current(), 3);
    }

    #[tokio::test]
    async fn transport_failures_are_resent_only_with_an_id() {
        for (resend, expected_sends) in [(true, 3), (false, 1)] {
            let sends = AtomicU32::new(0);
            let answer: Result<(), E> = policy(2)
                .call(
                    &Target::new(()),
                    resend,
                    |()| {
                        sends.fetch_add(1, Ordering::Relaxed);
                        async { Attempt::Transport(E::Said("down".into())) }
                    },
                    |_| async { Ok(()) },
                )
                .await;
            assert_eq!(answer, Err(E::Said("down".into())));
            assert_eq!(
                sends.load(Ordering::Relaxed),
                expected_sends,
                "resend={resend}"
            );
        }
    }

    /// With a TLS CA, `http://` is refused rather than used in plaintext; `host:port` and
    /// `https://` get TLS.
    #[test]
    fn a_plaintext_url_is_refused_when_tls_is_asked_for() {
        assert!(matches!(
            http_url("http://127.0.0.1:1", true),
            Err(Failure::Transport(m)) if m.contains("plaintext")
        ));
        assert_eq!(
            http_url("127.0.0.1:1", true).ok().as_deref(),
            Some("https://127.0.0.1:1")
        );
        assert_eq!(
            http_url("https://h:1", true).ok().as_deref(),
            Some("https://h:1")
        );
        assert_eq!(
            http_url("http://h:1", false).ok().as_deref(),
            Some("http://h:1")
        );
    }
}
