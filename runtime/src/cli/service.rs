//! The commands every service binary has besides `call`: `node`, `cluster up`, `admin` and
//! `top`. [`main`] is a whole service binary; [`main_with`] the same for a binary that adds
//! commands of its own (a demo, benchmarks, fault runs, …).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches, Subcommand};

use crate::ops::host::{HostError, HostedService, LogFormat, NodeArgs, init_logging};
use crate::raft::auth::AuthCommand;
use crate::raft::network::AdminRequest;
use crate::raft::rpc::RaftCredentials;
use crate::raft::types::{NodeAddr, NodeId};

/// A whole service binary: `node`, `call`, `cluster up`, `admin` and `top`, with `--config`
/// files expanded for `node`. `call` is the generated crate's `cli::main`.
pub fn main(
    binary: &'static str,
    about: &'static str,
    service: &dyn HostedService,
    call: fn(&str, Vec<String>) -> ExitCode,
) -> ExitCode {
    main_with(
        binary,
        about,
        service,
        call,
        |none: NoCommands| match none {},
    )
}

/// [`main`] for a binary with commands of its own, `X`: `own` runs them.
pub fn main_with<X: Subcommand + std::fmt::Debug>(
    binary: &'static str,
    about: &'static str,
    service: &dyn HostedService,
    call: fn(&str, Vec<String>) -> ExitCode,
    own: impl FnOnce(X) -> ExitCode,
) -> ExitCode {
    let argv = match crate::ops::config::expand(std::env::args_os().collect()) {
        Ok(argv) => argv,
        Err(e) => {
            eprintln!("{binary}: {e}");
            return ExitCode::from(2);
        }
    };
    let matches = Cli::<X>::command()
        .name(binary)
        .about(about)
        .version(env!("CARGO_PKG_VERSION"))
        .get_matches_from(argv);
    match Cli::<X>::from_arg_matches(&matches).map(|cli| cli.entry) {
        Ok(Entry::Call { args }) => call(binary, args),
        Ok(Entry::Common(common)) => common.main(binary, service),
        Ok(Entry::Own(command)) => own(command),
        Err(e) => e.exit(),
    }
}

/// The commands of a service that has none of its own.
#[derive(Debug, Subcommand)]
pub enum NoCommands {}

/// The command line of [`main_with`] (its name and description are the service's).
#[derive(Debug, clap::Parser)]
struct Cli<X: Subcommand> {
    #[command(subcommand)]
    entry: Entry<X>,
}

/// The commands of [`main_with`].
#[derive(Debug, Subcommand)]
enum Entry<X: Subcommand> {
    /// Call one operation on a node, e.g. `call <operation> --<param> VALUE --connect ADDR`
    /// (`call --help` lists the operations; exit code 3 when the service refuses, 4 when the
    /// call fails).
    #[command(disable_help_flag = true)]
    Call {
        /// The operation, its flags, and `--connect ADDR [--transport grpc|jsonrpc] [--json]
        /// [--tls-ca FILE]`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, num_args = 0..)]
        args: Vec<String>,
    },
    #[command(flatten)]
    Common(Box<Common>),
    #[command(flatten)]
    Own(X),
}

/// The commands every service has besides `call`.
#[derive(Debug, Subcommand)]
pub enum Common {
    /// Run one node (gRPC and JSON-RPC API, raft on its own listener) until Ctrl-C or SIGTERM.
    Node(Box<NodeArgs>),
    /// Local clusters of node processes.
    Cluster {
        /// What to do.
        #[command(subcommand)]
        command: ClusterCommand,
    },
    /// Administer a cluster through any node's raft address.
    Admin {
        /// Where and how.
        #[command(flatten)]
        access: ClusterAccess,
        /// What to do.
        #[command(subcommand)]
        verb: AdminVerb,
    },
    /// With the node stopped, after it refused to start because its raft log is damaged: keep
    /// the longest prefix of the log that checks, move the damaged segment files aside (to
    /// `raft-log.damaged-TIME/`, never deleted), and let the node rejoin without voting until
    /// its leader has brought it up to date. Prints what it did as JSON.
    RepairLog {
        /// The node's data directory.
        #[arg(long)]
        data_dir: std::path::PathBuf,
    },
    /// A live view of a cluster (every member's role, term, applied index, lag and ops/s,
    /// refreshed each second; q quits).
    #[cfg(feature = "top")]
    Top {
        /// Where and how.
        #[command(flatten)]
        access: ClusterAccess,
        /// Print one view as text and exit (no terminal needed).
        #[arg(long)]
        once: bool,
    },
}

/// `cluster` subcommands.
#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Start N node processes of this binary under DIR, print their addresses, run until Ctrl-C.
    Up {
        /// How many nodes.
        #[arg(long, default_value_t = 3)]
        nodes: usize,
        /// Where the nodes' data directories go.
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
        /// TLS on every listener: a fresh CA (`DIR/tls/ca.pem`) signs each node's certificate
        /// and an admin client's (`DIR/tls/admin.pem`, `admin.key`).
        #[arg(long)]
        tls: bool,
        /// Nodes with `--auth`, and a user `admin` (role `admin`) whose token is printed.
        #[arg(long)]
        auth: bool,
    },
}

/// How to reach a cluster's raft service: any member's address and the credentials.
#[derive(Debug, clap::Args)]
pub struct ClusterAccess {
    /// Any member's raft address.
    #[arg(long, value_name = "ADDR")]
    pub connect: String,
    /// The cluster's shared secret (default: $RAFT_SECRET).
    #[arg(long, env = crate::ops::host::SECRET_ENV, hide_env_values = true)]
    pub secret: String,
    /// On a TLS cluster: the CA and a certificate it signed (`cluster up --tls` writes
    /// `DIR/tls/admin.pem` and `admin.key`).
    #[command(flatten)]
    pub tls: crate::net::tls::TlsArgs,
}

impl ClusterAccess {
    /// The credentials these flags name.
    pub fn credentials(&self) -> Result<RaftCredentials, HostError> {
        Ok(RaftCredentials {
            secret: self.secret.clone(),
            tls: self
                .tls
                .load()
                .map_err(|e| HostError::Config(e.to_string()))?,
        })
    }
}

/// `admin` verbs.
#[derive(Debug, Subcommand)]
pub enum AdminVerb {
    /// Every member's id, role, term, addresses, applied index, lag and last snapshot, as a
    /// table (each member asked in turn); `--json`: this node's own report.
    Status {
        /// Print the node's report as JSON instead.
        #[arg(long)]
        json: bool,
    },
    /// Add a learner.
    AddLearner {
        /// Its id.
        id: NodeId,
        /// Its gRPC API address.
        api: String,
        /// Its raft address.
        raft: String,
    },
    /// Make learners voters.
    Promote {
        /// Their ids.
        ids: Vec<NodeId>,
    },
    /// Remove a node.
    Remove {
        /// Its id.
        id: NodeId,
    },
    /// Hand leadership to another voter.
    TransferLeader {
        /// The new leader.
        id: NodeId,
    },
    /// Build a snapshot now.
    Snapshot,
    /// The digest of the node's state.
    Digest,
    /// A consistent copy of the node's state database, written to FILE (checked against the
    /// node's SHA-256); `node --restore FILE --init` starts a new cluster from it.
    Backup {
        /// Where to write it.
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
    /// Set a failpoint on this node (a build with the `failpoints` feature; see
    /// `runtime::failpoint` for the points), e.g. `raft_log::commit return`; `off` clears it.
    Failpoint {
        /// The point's name.
        name: String,
        /// Its actions, as the `fail` crate reads them.
        actions: String,
    },
    /// Users and their roles (the schema's roles, or `admin`), kept in the replicated state.
    #[command(subcommand)]
    User(UserVerb),
    /// Bearer tokens of users: issued (shown once; the cluster keeps its hash) and revoked.
    #[command(subcommand)]
    Token(TokenVerb),
}

/// `admin user` verbs.
#[derive(Debug, Subcommand)]
pub enum UserVerb {
    /// Add a user, or replace its roles.
    Add {
        /// Its name.
        name: String,
        /// A role (repeatable): one the schema declares, or `admin`.
        #[arg(long = "role", value_name = "ROLE")]
        roles: Vec<String>,
    },
    /// Remove a user and every token it holds.
    Remove {
        /// Its name.
        name: String,
    },
    /// Every user with its roles and its tokens' ids.
    List,
}

/// `admin token` verbs.
#[derive(Debug, Subcommand)]
pub enum TokenVerb {
    /// Issue a token for a user and print it (once: the cluster keeps only its hash).
    Issue {
        /// The user.
        user: String,
    },
    /// Revoke a token by its id (`admin user list` shows them).
    Revoke {
        /// The token's id.
        id: String,
    },
}

impl Common {
    /// Runs the command as `binary`, whose nodes serve `service`: prints what it returns, or
    /// the error (exit code 1).
    pub fn main(self, binary: &str, service: &dyn HostedService) -> ExitCode {
        init_logging(match &self {
            Common::Node(args) => args.log_format,
            _ => LogFormat::Text,
        });
        match self.run(service) {
            Ok(text) => {
                if !text.is_empty() {
                    println!("{text}");
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{binary}: {e}");
                ExitCode::FAILURE
            }
        }
    }

    /// Runs the command; what to print on success.
    pub fn run(self, service: &dyn HostedService) -> Result<String, HostError> {
        // A node sizes its own runtime (`--worker-threads`); every other command builds this.
        let runtime = || {
            tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .map_err(|e| HostError::Config(format!("cannot start the async runtime: {e}")))
        };
        match self {
            Common::Node(args) => {
                crate::ops::host::run_blocking(*args, service)?;
                Ok("node stopped".into())
            }
            Common::Cluster {
                command:
                    ClusterCommand::Up {
                        nodes,
                        dir,
                        tls,
                        auth,
                    },
            } => runtime()?.block_on(cluster_up(nodes, &dir, tls, auth)),
            Common::Admin { access, verb } => {
                let credentials = access.credentials()?;
                runtime()?.block_on(admin(&access.connect, &credentials, verb))
            }
            Common::RepairLog { data_dir } => {
                match crate::raft::log_store::repair::repair(&data_dir)
                    .map_err(|e| HostError::Node(e.into()))?
                {
                    None => Ok("the raft log checks: nothing to repair".into()),
                    Some(repair) => serde_json::to_string_pretty(&repair)
                        .map_err(|e| HostError::Config(e.to_string())),
                }
            }
            #[cfg(feature = "top")]
            Common::Top { access, once } => {
                let credentials = access.credentials()?;
                let runtime = runtime()?;
                if once {
                    runtime.block_on(crate::ops::top::once(&access.connect, &credentials))
                } else {
                    runtime.block_on(crate::ops::top::run(&access.connect, &credentials))?;
                    Ok(String::new())
                }
            }
        }
    }
}

/// `cluster up`: starts the nodes, prints their addresses, waits for Ctrl-C.
async fn cluster_up(
    nodes: usize,
    dir: &std::path::Path,
    tls: bool,
    auth: bool,
) -> Result<String, HostError> {
    use crate::ops::cluster::LocalCluster;
    let exe = std::env::current_exe()
        .map_err(|e| HostError::Config(format!("cannot find this binary: {e}")))?;
    let args = if auth {
        vec!["--auth".to_string()]
    } else {
        Vec::new()
    };
    let cluster = if tls {
        LocalCluster::start_with_tls(&exe, dir, nodes, args).await?
    } else {
        LocalCluster::start(&exe, dir, nodes, args).await?
    };
    println!("secret: {}", cluster.credentials.secret);
    if auth {
        println!(
            "token: {} (user admin, role admin; send it as x-token, or $RAFT_TOKEN for `call`)",
            cluster.user_token("admin", &["admin"]).await?
        );
    }
    if tls {
        let tls_dir = dir.join("tls");
        println!(
            "tls: ca={} admin-cert={} admin-key={}",
            tls_dir.join("ca.pem").display(),
            tls_dir.join("admin.pem").display(),
            tls_dir.join("admin.key").display()
        );
    }
    for n in &cluster.nodes {
        println!(
            "node {} api={} jsonrpc={} raft={} metrics={}",
            n.id, n.api, n.jsonrpc, n.raft, n.metrics
        );
    }
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| HostError::Config(format!("cannot watch SIGTERM: {e}")))?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
    drop(cluster);
    Ok("cluster stopped".into())
}

/// `admin <verb>` against the node at `connect`.
async fn admin(
    connect: &str,
    credentials: &RaftCredentials,
    verb: AdminVerb,
) -> Result<String, HostError> {
    let request = match verb {
        AdminVerb::Status { json: false } => {
            return crate::ops::admin::status_table(connect, credentials).await;
        }
        AdminVerb::Status { json: true } => AdminRequest::Status,
        AdminVerb::Backup { out } => {
            let report = crate::ops::admin::backup(connect, credentials, &out).await?;
            return Ok(format!(
                "backup of applied index {} ({} bytes, digest {}) written to {}",
                report["applied_index"],
                report["len"],
                report["digest"].as_str().unwrap_or("?"),
                out.display()
            ));
        }
        AdminVerb::AddLearner { id, api, raft } => AdminRequest::AddLearner {
            id,
            addr: NodeAddr {
                raft,
                api: [("grpc".to_string(), api)].into(),
            },
        },
        AdminVerb::Promote { ids } => AdminRequest::Promote { ids },
        AdminVerb::Remove { id } => AdminRequest::Remove { id },
        AdminVerb::TransferLeader { id } => AdminRequest::TransferLeader { to: id },
        AdminVerb::Snapshot => AdminRequest::Snapshot,
        AdminVerb::Digest => AdminRequest::Digest,
        AdminVerb::Failpoint { name, actions } => AdminRequest::Failpoint { name, actions },
        AdminVerb::User(UserVerb::Add { name, roles }) => {
            AdminRequest::Auth(AuthCommand::UserAdd { name, roles })
        }
        AdminVerb::User(UserVerb::Remove { name }) => {
            AdminRequest::Auth(AuthCommand::UserRemove { name })
        }
        AdminVerb::User(UserVerb::List) => AdminRequest::Users,
        AdminVerb::Token(TokenVerb::Issue { user }) => {
            let (token, id) = crate::raft::auth::new_token()
                .map_err(|e| HostError::Admin(format!("cannot make a token: {e}")))?;
            let hash = crate::raft::auth::token_hash(&token);
            let issue = AdminRequest::Auth(AuthCommand::TokenIssue {
                user: user.clone(),
                id: id.clone(),
                hash,
            });
            crate::ops::admin::admin(connect, credentials, issue).await?;
            return Ok(format!(
                "token {id} for {user} (shown once; send it as x-token, or --token / $RAFT_TOKEN):\n{token}"
            ));
        }
        AdminVerb::Token(TokenVerb::Revoke { id }) => {
            AdminRequest::Auth(AuthCommand::TokenRevoke { id })
        }
    };
    let value = crate::ops::admin::admin(connect, credentials, request).await?;
    serde_json::to_string_pretty(&value).map_err(|e| HostError::Admin(e.to_string()))
}
