//! TLS for a cluster (rustls, with the ring provider).
//!
//! - **Raft listener: mutual TLS.** A node presents its certificate and accepts only peers
//!   (nodes, admin clients) whose certificate the cluster's CA signed; every message still
//!   carries the shared secret as well.
//! - **API listeners (gRPC and JSON-RPC): TLS.** A node presents its certificate; clients check
//!   it against the CA ([`ServerCa`]) and need no certificate of their own.
//!
//! A node has TLS when it is given `--tls-ca`, `--tls-cert` and `--tls-key` ([`TlsArgs`]).
//! [`CertAuthority`] makes a CA and certificates for local clusters (`cluster up --tls`), so a
//! cluster on one machine needs no other tool.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};

/// How long a client may take over the TLS handshake, on every listener.
pub const TLS_HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Why TLS material could not be read, made or used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    File {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A PEM file holds no usable certificate or key.
    #[error("{what}: {reason}")]
    Pem {
        /// Which of the files.
        what: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// rustls refused the material (a key that does not match its certificate, ...).
    #[error("TLS configuration: {0}")]
    Config(String),
    /// Certificates could not be generated.
    #[error("generating certificates: {0}")]
    Generate(String),
}

/// The TLS flags of a node and of an admin client: all three or none.
#[derive(Debug, Clone, Default, PartialEq, Eq, clap::Args)]
pub struct TlsArgs {
    /// The cluster's CA certificate (PEM). With `--tls-cert` and `--tls-key`, every listener
    /// speaks TLS, and raft peers must present a certificate this CA signed.
    #[arg(long, value_name = "FILE", requires_all = ["tls_cert", "tls_key"])]
    pub tls_ca: Option<PathBuf>,
    /// This node's (or admin client's) certificate (PEM), signed by the CA.
    #[arg(long, value_name = "FILE", requires_all = ["tls_ca", "tls_key"])]
    pub tls_cert: Option<PathBuf>,
    /// The private key of `--tls-cert` (PEM).
    #[arg(long, value_name = "FILE", requires_all = ["tls_ca", "tls_cert"])]
    pub tls_key: Option<PathBuf>,
}

impl TlsArgs {
    /// The material the flags name, or `None` when TLS is off.
    pub fn load(&self) -> Result<Option<Tls>, TlsError> {
        match (&self.tls_ca, &self.tls_cert, &self.tls_key) {
            (Some(ca), Some(cert), Some(key)) => Tls::load(ca, cert, key).map(Some),
            (None, None, None) => Ok(None),
            _ => Err(TlsError::Config(
                "--tls-ca, --tls-cert and --tls-key go together".into(),
            )),
        }
    }

    /// The flags as command-line arguments (for starting a node process).
    pub fn to_args(&self) -> Vec<String> {
        let mut args = Vec::new();
        for (flag, path) in [
            ("--tls-ca", &self.tls_ca),
            ("--tls-cert", &self.tls_cert),
            ("--tls-key", &self.tls_key),
        ] {
            if let Some(path) = path {
                args.push(flag.to_string());
                args.push(path.display().to_string());
            }
        }
        args
    }
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::File {
        path: path.to_path_buf(),
        source,
    })
}

fn certificates(what: &'static str, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem {
            what,
            reason: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::Pem {
            what,
            reason: "no certificate in it".into(),
        });
    }
    Ok(certs)
}

fn private_key(pem: &[u8]) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|e| TlsError::Pem {
        what: "the private key",
        reason: e.to_string(),
    })
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// What an API client trusts: the CA that signed the nodes' certificates.
#[derive(Clone)]
pub struct ServerCa {
    pem: Arc<[u8]>,
    roots: Arc<rustls::RootCertStore>,
}

impl std::fmt::Debug for ServerCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerCa").finish_non_exhaustive()
    }
}

impl ServerCa {
    /// The CA in the PEM file at `path`.
    pub fn load(path: &Path) -> Result<Self, TlsError> {
        Self::from_pem(read(path)?)
    }

    /// The CA in `pem`.
    pub fn from_pem(pem: Vec<u8>) -> Result<Self, TlsError> {
        let mut roots = rustls::RootCertStore::empty();
        for cert in certificates("the CA certificate", &pem)? {
            roots.add(cert).map_err(|e| TlsError::Pem {
                what: "the CA certificate",
                reason: e.to_string(),
            })?;
        }
        Ok(ServerCa {
            pem: pem.into(),
            roots: Arc::new(roots),
        })
    }

    /// tonic's client configuration: servers must present a certificate the CA signed.
    pub(crate) fn grpc(&self) -> ClientTlsConfig {
        ClientTlsConfig::new().ca_certificate(Certificate::from_pem(&*self.pem))
    }

    /// rustls's client configuration for HTTP clients (JSON-RPC).
    pub(crate) fn rustls_client(&self) -> Result<rustls::ClientConfig, TlsError> {
        Ok(rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Config(e.to_string()))?
            .with_root_certificates(self.roots.clone())
            .with_no_client_auth())
    }
}

/// A node's (or an admin client's) TLS material: the cluster's CA, its own certificate and key.
#[derive(Clone)]
pub struct Tls {
    ca: ServerCa,
    cert: Arc<[u8]>,
    key: Arc<[u8]>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls").finish_non_exhaustive()
    }
}

impl Tls {
    /// Reads the three PEM files and checks that they parse and that the key fits the
    /// certificate.
    pub fn load(ca: &Path, cert: &Path, key: &Path) -> Result<Self, TlsError> {
        Self::from_pem(read(ca)?, read(cert)?, read(key)?)
    }

    /// The material from PEM text, checked as [`Tls::load`] does.
    pub fn from_pem(ca: Vec<u8>, cert: Vec<u8>, key: Vec<u8>) -> Result<Self, TlsError> {
        let tls = Tls {
            ca: ServerCa::from_pem(ca)?,
            cert: cert.into(),
            key: key.into(),
        };
        tls.rustls_server()?;
        Ok(tls)
    }

    /// What a client of this node's API must trust.
    pub fn ca(&self) -> &ServerCa {
        &self.ca
    }

    fn identity(&self) -> Identity {
        Identity::from_pem(&*self.cert, &*self.key)
    }

    /// The raft listener's configuration: this node's certificate, and peers must present one
    /// the CA signed.
    pub(crate) fn raft_server(&self) -> ServerTlsConfig {
        ServerTlsConfig::new()
            .identity(self.identity())
            .client_ca_root(Certificate::from_pem(&*self.ca.pem))
            .timeout(TLS_HANDSHAKE_TIMEOUT)
    }

    /// A raft client's configuration: the peer must present a certificate the CA signed, and
    /// this one presents its own.
    pub(crate) fn raft_client(&self) -> ClientTlsConfig {
        self.ca.grpc().identity(self.identity())
    }

    /// The gRPC API listener's configuration: this node's certificate, no client certificate.
    pub(crate) fn api_grpc(&self) -> ServerTlsConfig {
        ServerTlsConfig::new()
            .identity(self.identity())
            .timeout(TLS_HANDSHAKE_TIMEOUT)
    }

    /// The JSON-RPC API listener's configuration (rustls directly: jsonrpsee has no TLS).
    pub(crate) fn rustls_server(&self) -> Result<Arc<rustls::ServerConfig>, TlsError> {
        let certs = certificates("the certificate", &self.cert)?;
        let key = private_key(&self.key)?;
        let mut config = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Config(e.to_string()))?
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .map_err(|e| TlsError::Config(e.to_string()))?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }
}

/// A certificate authority for local clusters: it signs node and client certificates valid for
/// the hosts given, for both TLS server and client authentication.
pub struct CertAuthority {
    issuer: rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
}

impl std::fmt::Debug for CertAuthority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertAuthority").finish_non_exhaustive()
    }
}

fn generate_error(e: rcgen::Error) -> TlsError {
    TlsError::Generate(e.to_string())
}

impl CertAuthority {
    /// A new CA with a fresh key (the key lives only in memory).
    pub fn new(name: &str) -> Result<Self, TlsError> {
        let mut params = rcgen::CertificateParams::default();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, format!("{name} cluster CA"));
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        let key = rcgen::KeyPair::generate().map_err(generate_error)?;
        let issuer = rcgen::CertifiedIssuer::self_signed(params, key).map_err(generate_error)?;
        Ok(CertAuthority { issuer })
    }

    /// The CA certificate, PEM.
    pub fn ca_pem(&self) -> String {
        self.issuer.pem()
    }

    /// A certificate and key (PEM) named `name`, valid for `hosts` (IP addresses or DNS names),
    /// for TLS servers and clients.
    pub fn issue(&self, name: &str, hosts: &[String]) -> Result<(String, String), TlsError> {
        let mut params = rcgen::CertificateParams::new(hosts.to_vec()).map_err(generate_error)?;
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name.to_string());
        params.extended_key_usages = vec![
            rcgen::ExtendedKeyUsagePurpose::ServerAuth,
            rcgen::ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let key = rcgen::KeyPair::generate().map_err(generate_error)?;
        let cert = params
            .signed_by(&key, &self.issuer)
            .map_err(generate_error)?;
        Ok((cert.pem(), key.serialize_pem()))
    }

    /// Writes the CA certificate to `dir/ca.pem` and a certificate for `name` to
    /// `dir/NAME.pem` and its key to `dir/NAME.key` (readable by the owner only); returns the
    /// flags that name them.
    pub fn write(&self, dir: &Path, name: &str, hosts: &[String]) -> Result<TlsArgs, TlsError> {
        let (cert, key) = self.issue(name, hosts)?;
        std::fs::create_dir_all(dir).map_err(|source| TlsError::File {
            path: dir.to_path_buf(),
            source,
        })?;
        let write = |path: PathBuf, text: &str, private: bool| {
            let written = if private {
                use std::io::Write as _;
                use std::os::unix::fs::OpenOptionsExt as _;
                std::fs::OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .mode(0o600)
                    .open(&path)
                    .and_then(|mut f| f.write_all(text.as_bytes()))
            } else {
                std::fs::write(&path, text)
            };
            written
                .map(|()| path.clone())
                .map_err(|source| TlsError::File { path, source })
        };
        Ok(TlsArgs {
            tls_ca: Some(write(dir.join("ca.pem"), &self.ca_pem(), false)?),
            tls_cert: Some(write(dir.join(format!("{name}.pem")), &cert, false)?),
            tls_key: Some(write(dir.join(format!("{name}.key")), &key, true)?),
        })
    }
}

/// The hosts a certificate for a node reached at `host` should name: it, `localhost` and
/// 127.0.0.1 (a node is also reached from its own machine).
pub fn hosts_for(host: &str) -> Vec<String> {
    let mut hosts = vec!["localhost".to_string(), "127.0.0.1".to_string()];
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if !host.is_empty() && !hosts.iter().any(|h| h == host) {
        hosts.push(host.to_string());
    }
    hosts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issued_material_loads_and_a_mismatched_key_is_refused() {
        let ca = CertAuthority::new("test").expect("ca");
        let (cert, key) = ca.issue("node1", &hosts_for("10.77.0.2")).expect("issue");
        let tls = Tls::from_pem(
            ca.ca_pem().into_bytes(),
            cert.clone().into_bytes(),
            key.into_bytes(),
        );
        assert!(tls.is_ok(), "{tls:?}");
        let (_, other_key) = ca.issue("node2", &hosts_for("127.0.0.1")).expect("issue");
        let mismatched = Tls::from_pem(
            ca.ca_pem().into_bytes(),
            cert.into_bytes(),
            other_key.into_bytes(),
        );
        assert!(
            matches!(mismatched, Err(TlsError::Config(_))),
            "{mismatched:?}"
        );
        let garbage = ServerCa::from_pem(b"not a certificate".to_vec());
        assert!(matches!(garbage, Err(TlsError::Pem { .. })), "{garbage:?}");
    }

    #[test]
    fn hosts_name_the_node_once() {
        assert_eq!(hosts_for("127.0.0.1"), ["localhost", "127.0.0.1"]);
        assert_eq!(
            hosts_for("10.77.1.2"),
            ["localhost", "127.0.0.1", "10.77.1.2"]
        );
    }
}
