//! How we reach the Docker engine: the local socket, plain TCP, TLS, or SSH.
//!
//! `DOCKER_HOST` is read the way the docker CLI reads it (empty means unset):
//! - `unix:///path` (the default, `/var/run/docker.sock`) and plain `tcp://` go through
//!   bollard's own clients;
//! - `tcp://host:port` with TLS material (inputs `docker-tls-*`, or `DOCKER_CERT_PATH` with
//!   `ca.pem`, `cert.pem`, `key.pem`) or with `DOCKER_TLS_VERIFY` set speaks HTTPS with
//!   rustls (ring). With `DOCKER_TLS_VERIFY` the server's certificate must chain to the given
//!   CA and name the host; without it the link is encrypted but not verified (the CLI's
//!   `--tls`), which is reported as a warning;
//! - `ssh://user@host[:port]` opens one SSH session (pure Rust, no `ssh` binary) and, per
//!   HTTP connection, a channel that runs `docker system dial-stdio` on the remote host, as the
//!   docker CLI does. The host key must be in `ssh-known-hosts` (or `~/.ssh/known_hosts`);
//!   an unknown key is refused with its fingerprint unless `ssh-accept-new-host-key` is true,
//!   a changed key always.
//!
//! Every request gets its own connection (HTTP/1.1 with upgrades, for exec). There is no
//! total timeout on a request: a long transfer is watched by the idle timeout in `docker.rs`.
//! Secrets (the private keys) never appear in an error: only host names and fingerprints.
// The host-key errors carry what the user needs to pin the key (host, port, fingerprint, the
// known_hosts line): large, but only on the one cold path that ends the run.
#![allow(clippy::result_large_err)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bollard::{BollardRequest, Docker};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, HOST};
use hyper::Response;
use hyper_util::rt::TokioIo;
use russh::keys::{HashAlg, PrivateKeyWithHashAlg, PublicKey, PublicKeyOrCertificate};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio::io::{AsyncRead, AsyncWrite};

/// The engine's default socket.
pub const DEFAULT_HOST: &str = "unix:///var/run/docker.sock";

/// How long opening a TCP connection (TLS or SSH) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// The command the docker CLI runs on an `ssh://` host: it bridges stdin/stdout to the
/// engine's socket.
const DIAL_STDIO: &str = "docker system dial-stdio";

/// What the inputs add to `DOCKER_HOST`: TLS material and SSH keys, as contents (not paths).
#[derive(Clone, Debug, Default)]
pub struct Settings {
    /// PEM: the CA that signed the engine's certificate.
    pub tls_ca: Option<String>,
    /// PEM: our client certificate.
    pub tls_cert: Option<String>,
    /// PEM: its private key (a secret).
    pub tls_key: Option<String>,
    /// OpenSSH private key (a secret).
    pub ssh_private_key: Option<String>,
    /// known_hosts lines.
    pub ssh_known_hosts: Option<String>,
    /// Trust a host key seen for the first time (never a changed one).
    pub ssh_accept_new_host_key: bool,
}

/// Why the engine could not be reached, each with what to do.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("DOCKER_HOST `{0}` has an unsupported scheme: use unix:///var/run/docker.sock, tcp://HOST:PORT (TLS with DOCKER_TLS_VERIFY=1 and docker-tls-ca/-cert/-key or DOCKER_CERT_PATH) or ssh://USER@HOST[:PORT]")]
    UnsupportedScheme(String),
    #[error("{0}")]
    BadInput(String),
    #[error("cannot reach the Docker engine at {host}: {detail}")]
    Unreachable { host: String, detail: String },
    #[error("the SSH host key of {host} is not known: {algorithm} {fingerprint}. If that is your server's key (on the server: `ssh-keygen -lf /etc/ssh/ssh_host_{short}_key.pub`), pin it with input ssh-known-hosts (e.g. from `ssh-keyscan{port_flag} {hostname}`) set to the line\n{line}\nor trust a first-seen key with ssh-accept-new-host-key: true")]
    HostKeyUnknown {
        host: String,
        hostname: String,
        port_flag: String,
        algorithm: String,
        short: String,
        fingerprint: String,
        line: String,
    },
    #[error("the SSH host key of {host} has CHANGED: it is now {algorithm} {fingerprint}, which ssh-known-hosts does not list for this host. Someone may be intercepting the connection; if the server's key was really replaced, update ssh-known-hosts (ssh-accept-new-host-key never trusts a changed key)")]
    HostKeyChanged {
        host: String,
        algorithm: String,
        fingerprint: String,
    },
    #[error("the SSH server {host} refused the key in ssh-private-key ({fingerprint}) for user {user}: add its public key to ~{user}/.ssh/authorized_keys on the server, or check the user in DOCKER_HOST")]
    AuthRefused {
        host: String,
        user: String,
        fingerprint: String,
    },
}

impl crate::error::Classify for TransportError {
    fn exit_kind(&self) -> crate::error::ExitKind {
        match self {
            TransportError::UnsupportedScheme(_) | TransportError::BadInput(_) => {
                crate::error::ExitKind::Usage
            }
            _ => crate::error::ExitKind::Environment,
        }
    }

    fn help(&self) -> Option<String> {
        match self {
            TransportError::Unreachable { .. } => Some(
                "check DOCKER_HOST (or the docker-host input) and that the engine answers there (`docker -H <host> info` from the runner)".into(),
            ),
            _ => None,
        }
    }
}

fn bad(msg: impl Into<String>) -> TransportError {
    TransportError::BadInput(msg.into())
}

/// A client for the engine, and what to tell the user about it.
pub struct Connected {
    pub docker: Docker,
    /// Where the engine is, for messages (never a secret).
    pub host: String,
    /// `unix`, `tcp`, `tls`, `tls-unverified` or `ssh`.
    pub kind: &'static str,
    /// Warnings for the log (an unverified TLS link, a host key trusted on first use).
    pub warnings: Vec<String>,
}

/// Where `DOCKER_HOST` points.
#[derive(Debug, PartialEq, Eq)]
enum Target {
    Local(String),
    Tcp {
        host: String,
        port: u16,
    },
    Ssh {
        user: String,
        host: String,
        port: u16,
    },
}

fn parse_host(raw: &str) -> Result<Target, TransportError> {
    let (scheme, rest) = raw
        .split_once("://")
        .ok_or_else(|| TransportError::UnsupportedScheme(raw.to_string()))?;
    match scheme {
        "unix" => Ok(Target::Local(raw.to_string())),
        "tcp" | "http" => {
            let url = url::Url::parse(&format!("tcp://{rest}"))
                .map_err(|e| bad(format!("DOCKER_HOST `{raw}` is not a host: {e}")))?;
            let host = host_of(&url, raw)?;
            Ok(Target::Tcp {
                host,
                port: url.port().unwrap_or(2376),
            })
        }
        "ssh" => {
            let url = url::Url::parse(raw)
                .map_err(|e| bad(format!("DOCKER_HOST `{raw}` is not a host: {e}")))?;
            if url.password().is_some() {
                return Err(bad(
                    "DOCKER_HOST must not hold an SSH password: give the key in ssh-private-key",
                ));
            }
            let user = url.username().to_string();
            if user.is_empty() {
                return Err(bad(format!(
                    "DOCKER_HOST `{raw}` names no user: write ssh://USER@HOST[:PORT]"
                )));
            }
            if !matches!(url.path(), "" | "/") {
                return Err(bad(format!(
                    "DOCKER_HOST `{raw}` has a path: write ssh://USER@HOST[:PORT] (the remote `docker` finds its engine itself)"
                )));
            }
            Ok(Target::Ssh {
                user,
                host: host_of(&url, raw)?,
                port: url.port().unwrap_or(22),
            })
        }
        _ => Err(TransportError::UnsupportedScheme(raw.to_string())),
    }
}

fn host_of(url: &url::Url, raw: &str) -> Result<String, TransportError> {
    let h = url
        .host_str()
        .filter(|h| !h.is_empty())
        .ok_or_else(|| bad(format!("DOCKER_HOST `{raw}` names no host")))?;
    Ok(h.trim_start_matches('[').trim_end_matches(']').to_string())
}

/// The TLS material: from the inputs, else from `DOCKER_CERT_PATH` (or `~/.docker` when
/// `DOCKER_TLS_VERIFY` is set), as the docker CLI does.
struct TlsMaterial {
    ca: Option<Vec<u8>>,
    cert: Option<Vec<u8>>,
    key: Option<Vec<u8>>,
}

fn tls_material(
    s: &Settings,
    env: &(dyn Fn(&str) -> Option<String> + Sync),
    verify: bool,
) -> Result<Option<TlsMaterial>, TransportError> {
    let given = |v: &Option<String>| {
        v.as_ref()
            .filter(|v| !v.trim().is_empty())
            .map(|v| v.as_bytes().to_vec())
    };
    let mut m = TlsMaterial {
        ca: given(&s.tls_ca),
        cert: given(&s.tls_cert),
        key: given(&s.tls_key),
    };
    let dir = env("DOCKER_CERT_PATH")
        .filter(|d| !d.is_empty())
        .or_else(|| {
            verify
                .then(|| env("HOME").map(|h| format!("{h}/.docker")))
                .flatten()
        });
    if let Some(dir) = dir {
        let read = |name: &str| -> Result<Option<Vec<u8>>, TransportError> {
            let p = std::path::Path::new(&dir).join(name);
            match std::fs::read(&p) {
                Ok(b) => Ok(Some(b)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(bad(format!("cannot read {}: {e}", p.display()))),
            }
        };
        if m.ca.is_none() {
            m.ca = read("ca.pem")?;
        }
        if m.cert.is_none() && m.key.is_none() {
            m.cert = read("cert.pem")?;
            m.key = read("key.pem")?;
        }
    }
    if m.ca.is_none() && m.cert.is_none() && m.key.is_none() {
        return Ok(None);
    }
    Ok(Some(m))
}

/// Connects to the engine `DOCKER_HOST` names (read through `env`).
pub async fn connect(
    s: &Settings,
    env: &(dyn Fn(&str) -> Option<String> + Sync),
) -> Result<Connected, TransportError> {
    let raw = env("DOCKER_HOST")
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| DEFAULT_HOST.to_string());
    let target = parse_host(&raw)?;
    let ssh_given = s
        .ssh_private_key
        .as_deref()
        .is_some_and(|k| !k.trim().is_empty());
    let verify = env("DOCKER_TLS_VERIFY").is_some_and(|v| !v.is_empty());
    let mut warnings = vec![];
    if ssh_given && !matches!(target, Target::Ssh { .. }) {
        return Err(bad(format!(
            "ssh-private-key is set but DOCKER_HOST is `{raw}`: set DOCKER_HOST to ssh://USER@HOST[:PORT]"
        )));
    }
    match target {
        Target::Local(h) => {
            let tls_inputs = [&s.tls_ca, &s.tls_cert, &s.tls_key]
                .iter()
                .any(|v| v.as_deref().is_some_and(|v| !v.trim().is_empty()));
            if tls_inputs {
                return Err(bad(format!(
                    "docker-tls-* inputs are set but DOCKER_HOST is `{h}`: TLS needs DOCKER_HOST=tcp://HOST:2376"
                )));
            }
            let docker =
                Docker::connect_with_host(&h).map_err(|e| TransportError::Unreachable {
                    host: h.clone(),
                    detail: e.to_string(),
                })?;
            Ok(Connected {
                docker,
                host: h,
                kind: "unix",
                warnings,
            })
        }
        Target::Tcp { host, port } => {
            let shown = format!("{host}:{port}");
            let Some(m) = tls_material(s, env, verify)? else {
                if verify {
                    return Err(bad(format!(
                        "DOCKER_TLS_VERIFY is set but there is no CA to verify {shown} with: give input docker-tls-ca (and docker-tls-cert, docker-tls-key), or DOCKER_CERT_PATH with ca.pem, cert.pem, key.pem"
                    )));
                }
                let docker = Docker::connect_with_host(&format!("tcp://{shown}")).map_err(|e| {
                    TransportError::Unreachable {
                        host: shown.clone(),
                        detail: e.to_string(),
                    }
                })?;
                return Ok(Connected {
                    docker,
                    host: shown,
                    kind: "tcp",
                    warnings,
                });
            };
            let config = tls_config(&m, verify, &shown)?;
            if !verify {
                warnings.push(format!(
                    "TLS to the Docker engine at {shown} is encrypted but the server's certificate is NOT verified (DOCKER_TLS_VERIFY is not set): set env DOCKER_TLS_VERIFY=1 so that a server without a certificate from docker-tls-ca is refused"
                ));
            }
            let name = ServerName::try_from(host.clone())
                .map_err(|_| bad(format!("`{host}` in DOCKER_HOST is not a host name")))?;
            let dialer = Dialer::Tls {
                addr: shown.clone(),
                name,
                connector: tokio_rustls::TlsConnector::from(Arc::new(config)),
            };
            Ok(Connected {
                docker: custom(dialer, &format!("https://{shown}"))?,
                host: shown,
                kind: if verify { "tls" } else { "tls-unverified" },
                warnings,
            })
        }
        Target::Ssh { user, host, port } => {
            let shown = if port == 22 {
                format!("{user}@{host}")
            } else {
                format!("{user}@{host}:{port}")
            };
            let handle = ssh_session(s, env, &user, &host, port, &mut warnings).await?;
            Ok(Connected {
                docker: custom(
                    Dialer::Ssh {
                        handle: Arc::new(handle),
                    },
                    "http://docker",
                )?,
                host: shown,
                kind: "ssh",
                warnings,
            })
        }
    }
}

// ---------------------------------------------------------------------------------------
// HTTP over our own streams

trait Io: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Io for T {}

enum Dialer {
    Tls {
        addr: String,
        name: ServerName<'static>,
        connector: tokio_rustls::TlsConnector,
    },
    Ssh {
        handle: Arc<russh::client::Handle<HostKeyCheck>>,
    },
}

impl Dialer {
    async fn dial(&self) -> std::io::Result<Box<dyn Io>> {
        match self {
            Dialer::Tls {
                addr,
                name,
                connector,
            } => {
                let tcp =
                    tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(addr))
                        .await
                        .map_err(|_| {
                            std::io::Error::new(
                                std::io::ErrorKind::TimedOut,
                                format!("no TCP connection within {} s", CONNECT_TIMEOUT.as_secs()),
                            )
                        })??;
                let _ = tcp.set_nodelay(true);
                let tls =
                    tokio::time::timeout(CONNECT_TIMEOUT, connector.connect(name.clone(), tcp))
                        .await
                        .map_err(|_| {
                            std::io::Error::new(
                                std::io::ErrorKind::TimedOut,
                                "TLS handshake timed out",
                            )
                        })?
                        .map_err(|e| {
                            std::io::Error::new(e.kind(), format!("TLS handshake failed: {e}"))
                        })?;
                Ok(Box::new(tls))
            }
            Dialer::Ssh { handle } => {
                let channel = handle
                    .channel_open_session()
                    .await
                    .map_err(|e| std::io::Error::other(format!("SSH channel: {e}")))?;
                channel
                    .exec(true, DIAL_STDIO)
                    .await
                    .map_err(|e| std::io::Error::other(format!("SSH exec: {e}")))?;
                Ok(Box::new(channel.into_stream()))
            }
        }
    }

    async fn request(
        &self,
        req: BollardRequest,
    ) -> Result<Response<Incoming>, bollard::errors::Error> {
        let io = self.dial().await?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io)).await?;
        // The connection's own error says why a request could not be sent (a TLS alert the
        // engine sent after the handshake, e.g. for a missing client certificate).
        let (done, conn_result) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            let _ = done.send(conn.with_upgrades().await);
        });
        let (mut parts, body) = req.into_parts();
        let authority = parts
            .uri
            .authority()
            .map(|a| a.to_string())
            .unwrap_or_else(|| "docker".into());
        let path = parts
            .uri
            .path_and_query()
            .map(|p| p.as_str().to_string())
            .unwrap_or_else(|| "/".into());
        parts.uri = path
            .parse()
            .map_err(|err| bollard::errors::Error::InvalidURIError { err })?;
        if let Ok(v) = HeaderValue::from_str(&authority) {
            parts.headers.insert(HOST, v);
        }
        match sender
            .send_request(hyper::Request::from_parts(parts, body))
            .await
        {
            Ok(r) => Ok(r),
            Err(e) => match tokio::time::timeout(Duration::from_secs(5), conn_result).await {
                Ok(Ok(Err(conn_error))) => Err(conn_error.into()),
                _ => Err(e.into()),
            },
        }
    }
}

fn custom(dialer: Dialer, addr: &str) -> Result<Docker, TransportError> {
    let dialer = Arc::new(dialer);
    Docker::connect_with_custom_transport(
        move |req: BollardRequest| {
            let d = Arc::clone(&dialer);
            async move { d.request(req).await }
        },
        Some(addr),
        120,
        bollard::API_DEFAULT_VERSION,
    )
    .map_err(|e| bad(format!("cannot set up the Docker client: {e}")))
}

// ---------------------------------------------------------------------------------------
// TLS

fn tls_config(m: &TlsMaterial, verify: bool, shown: &str) -> Result<ClientConfig, TransportError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| bad(format!("TLS setup: {e}")))?;
    let builder = if verify {
        let ca = m.ca.as_ref().ok_or_else(|| {
            bad(format!(
                "DOCKER_TLS_VERIFY is set but there is no CA to verify {shown} with: give input docker-tls-ca or ca.pem in DOCKER_CERT_PATH"
            ))
        })?;
        let mut roots = RootCertStore::empty();
        let certs = pem_certs(ca, "docker-tls-ca (ca.pem)")?;
        for c in certs {
            roots.add(c).map_err(|e| {
                bad(format!(
                    "docker-tls-ca (ca.pem) is not a usable CA certificate: {e}"
                ))
            })?;
        }
        builder.with_root_certificates(roots)
    } else {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerify(provider)))
    };
    match (&m.cert, &m.key) {
        (Some(c), Some(k)) => {
            let certs = pem_certs(c, "docker-tls-cert (cert.pem)")?;
            let key = PrivateKeyDer::from_pem_slice(k).map_err(|_| {
                bad("docker-tls-key (key.pem) holds no PEM private key (PKCS#8, PKCS#1 RSA or SEC1 EC)")
            })?;
            builder.with_client_auth_cert(certs, key).map_err(|e| {
                bad(format!(
                    "docker-tls-cert and docker-tls-key do not go together: {e}"
                ))
            })
        }
        (None, None) => Ok(builder.with_no_client_auth()),
        (Some(_), None) => Err(bad(
            "docker-tls-cert is set without docker-tls-key (key.pem): give both",
        )),
        (None, Some(_)) => Err(bad(
            "docker-tls-key is set without docker-tls-cert (cert.pem): give both",
        )),
    }
}

fn pem_certs(pem: &[u8], what: &str) -> Result<Vec<CertificateDer<'static>>, TransportError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(format!("{what} is not PEM: {e}")))?;
    if certs.is_empty() {
        return Err(bad(format!(
            "{what} holds no certificate (-----BEGIN CERTIFICATE-----)"
        )));
    }
    Ok(certs)
}

/// `--tls` without `--tlsverify`: any certificate, but the handshake signatures are still
/// checked (the link is encrypted to whoever holds that certificate's key).
#[derive(Debug)]
struct NoVerify(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

// ---------------------------------------------------------------------------------------
// SSH

/// What the host-key check saw.
#[derive(Clone, Debug)]
enum Verdict {
    Known,
    AcceptedNew(PublicKey),
    Unknown(PublicKey),
    Changed(PublicKey),
    Certificate,
}

pub(crate) struct HostKeyCheck {
    known: Vec<PublicKey>,
    accept_new: bool,
    verdict: Arc<Mutex<Option<Verdict>>>,
}

impl russh::client::Handler for HostKeyCheck {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        key: &PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        let PublicKeyOrCertificate::PublicKey { key, .. } = key else {
            *self.verdict.lock().unwrap() = Some(Verdict::Certificate);
            return Ok(false);
        };
        let verdict = if self.known.iter().any(|k| k.key_data() == key.key_data()) {
            Verdict::Known
        } else if !self.known.is_empty() {
            Verdict::Changed(key.clone())
        } else if self.accept_new {
            Verdict::AcceptedNew(key.clone())
        } else {
            Verdict::Unknown(key.clone())
        };
        let ok = matches!(verdict, Verdict::Known | Verdict::AcceptedNew(_));
        *self.verdict.lock().unwrap() = Some(verdict);
        Ok(ok)
    }
}

/// The `[host]:port` (or `host` for port 22) that known_hosts files name.
fn known_hosts_name(host: &str, port: u16) -> String {
    if port == 22 {
        host.to_string()
    } else {
        format!("[{host}]:{port}")
    }
}

/// The keys `known_hosts` lists for the host (plain or hashed names; lines whose key we
/// cannot read are skipped; `@cert-authority`/`@revoked` lines are not used).
fn known_keys(known_hosts: &str, host: &str, port: u16) -> Result<Vec<PublicKey>, TransportError> {
    // Normalised to one space between fields, for russh's reader (which also knows hashed
    // names), through a private temporary file.
    let mut clean = String::new();
    for line in known_hosts.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() < 3 || fields[0].starts_with('#') || fields[0].starts_with('@') {
            continue;
        }
        if russh::keys::parse_public_key_base64(fields[2]).is_err() {
            continue;
        }
        clean.push_str(&format!("{} {} {}\n", fields[0], fields[1], fields[2]));
    }
    let file = tempfile::NamedTempFile::new()
        .map_err(|e| bad(format!("cannot write a temporary file: {e}")))?;
    std::fs::write(file.path(), clean)
        .map_err(|e| bad(format!("cannot write a temporary file: {e}")))?;
    let keys = russh::keys::known_hosts::known_host_keys_path(host, port, file.path())
        .map_err(|e| bad(format!("ssh-known-hosts cannot be read: {e}")))?;
    Ok(keys.into_iter().map(|(_, k)| k).collect())
}

fn algorithm_names(key: &PublicKey) -> (String, String) {
    let alg = key.algorithm();
    let name = alg.as_str().to_string();
    let short = match name.as_str() {
        "ssh-ed25519" => "ed25519",
        "ssh-rsa" => "rsa",
        n if n.starts_with("ecdsa") => "ecdsa",
        _ => "*",
    };
    (name.to_uppercase(), short.to_string())
}

async fn ssh_session(
    s: &Settings,
    env: &(dyn Fn(&str) -> Option<String> + Sync),
    user: &str,
    host: &str,
    port: u16,
    warnings: &mut Vec<String>,
) -> Result<russh::client::Handle<HostKeyCheck>, TransportError> {
    let shown = format!("{host}:{port}");
    let key_text = s
        .ssh_private_key
        .as_deref()
        .filter(|k| !k.trim().is_empty())
        .ok_or_else(|| {
            bad(format!(
                "DOCKER_HOST is ssh://{user}@{shown} but input ssh-private-key is empty: give the private key (contents, from a secret) of a user that may run `docker` there"
            ))
        })?;
    let key = russh::keys::decode_secret_key(key_text.trim(), None).map_err(|e| {
        bad(format!(
            "ssh-private-key is not an unencrypted OpenSSH private key ({}); use an ed25519 or ECDSA key without a passphrase (`ssh-keygen -t ed25519 -N ''`)",
            match e {
                russh::keys::Error::KeyIsEncrypted => "it has a passphrase".to_string(),
                _ => "unreadable".to_string(),
            }
        ))
    })?;
    let key_fp = key.public_key().fingerprint(HashAlg::Sha256).to_string();
    let known_text = match s
        .ssh_known_hosts
        .as_deref()
        .filter(|k| !k.trim().is_empty())
    {
        Some(t) => t.to_string(),
        None => env("HOME")
            .and_then(|h| std::fs::read_to_string(format!("{h}/.ssh/known_hosts")).ok())
            .unwrap_or_default(),
    };
    let known = known_keys(&known_text, host, port)?;
    let verdict = Arc::new(Mutex::new(None));
    let check = HostKeyCheck {
        known,
        accept_new: s.ssh_accept_new_host_key,
        verdict: verdict.clone(),
    };
    let config = Arc::new(russh::client::Config {
        // A dead link is noticed within ~2 minutes; a slow one is never cut.
        keepalive_interval: Some(Duration::from_secs(30)),
        keepalive_max: 4,
        inactivity_timeout: None,
        nodelay: true,
        ..Default::default()
    });
    let unreachable = |detail: String| TransportError::Unreachable {
        host: format!("ssh://{user}@{shown}"),
        detail,
    };
    let connected = tokio::time::timeout(
        CONNECT_TIMEOUT,
        russh::client::connect(config, (host, port), check),
    )
    .await
    .map_err(|_| {
        unreachable(format!(
            "no SSH session within {} s",
            CONNECT_TIMEOUT.as_secs()
        ))
    })?;
    let seen = verdict.lock().unwrap().clone();
    let mut handle = match (connected, seen) {
        (Ok(h), Some(Verdict::AcceptedNew(k))) => {
            let (alg, _) = algorithm_names(&k);
            warnings.push(format!(
                "trusted the SSH host key of {shown} on first use (ssh-accept-new-host-key: true): {alg} {}. Pin it with input ssh-known-hosts: {} {}",
                k.fingerprint(HashAlg::Sha256),
                known_hosts_name(host, port),
                k.to_openssh().unwrap_or_default()
            ));
            h
        }
        (Ok(h), _) => h,
        (Err(_), Some(Verdict::Unknown(k))) => {
            let (algorithm, short) = algorithm_names(&k);
            return Err(TransportError::HostKeyUnknown {
                host: shown,
                hostname: host.to_string(),
                port_flag: if port == 22 {
                    String::new()
                } else {
                    format!(" -p {port}")
                },
                algorithm,
                short,
                fingerprint: k.fingerprint(HashAlg::Sha256).to_string(),
                line: format!(
                    "{} {}",
                    known_hosts_name(host, port),
                    k.to_openssh().unwrap_or_default()
                ),
            });
        }
        (Err(_), Some(Verdict::Changed(k))) => {
            let (algorithm, _) = algorithm_names(&k);
            return Err(TransportError::HostKeyChanged {
                host: shown,
                algorithm,
                fingerprint: k.fingerprint(HashAlg::Sha256).to_string(),
            });
        }
        (Err(_), Some(Verdict::Certificate)) => {
            return Err(unreachable(
                "the server offered an SSH host certificate, which is not supported: pin its plain host key in ssh-known-hosts".into(),
            ))
        }
        (Err(e), _) => return Err(unreachable(e.to_string())),
    };
    let hash = if key.algorithm().is_rsa() {
        handle
            .best_supported_rsa_hash()
            .await
            .map_err(|e| unreachable(e.to_string()))?
            .flatten()
    } else {
        None
    };
    let auth = handle
        .authenticate_publickey(user, PrivateKeyWithHashAlg::new(Arc::new(key), hash))
        .await
        .map_err(|e| unreachable(format!("SSH authentication failed: {e}")))?;
    if !auth.success() {
        return Err(TransportError::AuthRefused {
            host: shown,
            user: user.to_string(),
            fingerprint: key_fp,
        });
    }
    Ok(handle)
}

/// A hint for a failed first request over `kind`, from the error's text.
pub fn hint(kind: &str, detail: &str) -> &'static str {
    let d = detail.to_ascii_lowercase();
    match kind {
        "tls" | "tls-unverified" => {
            if d.contains("unknownissuer") || d.contains("invalid peer certificate") {
                " (the engine's certificate is not signed by the CA in docker-tls-ca / ca.pem, or does not name this host: check the CA and the certificate's subjectAltName)"
            } else if d.contains("certificaterequired")
                || d.contains("alert")
                || d.contains("handshake")
            {
                " (the engine refused the TLS handshake: give docker-tls-cert and docker-tls-key, a client certificate signed by the CA the engine trusts, `dockerd --tlsverify --tlscacert`)"
            } else if d.contains("connection closed")
                || d.contains("incomplete")
                || d.contains("not ready")
                || d.contains("canceled")
            {
                " (the engine closed the connection: is it serving TLS on that port, and did it get a client certificate it trusts in docker-tls-cert and docker-tls-key?)"
            } else {
                ""
            }
        }
        "ssh" => " (over SSH, `docker system dial-stdio` runs on the remote host: the user needs the docker CLI there and access to the engine, e.g. membership of the docker group)",
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_parse_like_the_docker_cli() {
        assert_eq!(
            parse_host("unix:///var/run/docker.sock").unwrap(),
            Target::Local("unix:///var/run/docker.sock".into())
        );
        assert_eq!(
            parse_host("tcp://10.0.0.5:2376").unwrap(),
            Target::Tcp {
                host: "10.0.0.5".into(),
                port: 2376
            }
        );
        assert_eq!(
            parse_host("ssh://deploy@example.com").unwrap(),
            Target::Ssh {
                user: "deploy".into(),
                host: "example.com".into(),
                port: 22
            }
        );
        assert_eq!(
            parse_host("ssh://deploy@example.com:2222").unwrap(),
            Target::Ssh {
                user: "deploy".into(),
                host: "example.com".into(),
                port: 2222
            }
        );
        for bad_scheme in ["https://x:2376", "npipe:////./pipe/docker_engine", "x"] {
            let e = parse_host(bad_scheme).unwrap_err();
            assert!(matches!(e, TransportError::UnsupportedScheme(_)), "{e}");
            assert!(e.to_string().contains("ssh://USER@HOST"), "{e}");
        }
        assert!(parse_host("ssh://example.com").is_err());
        assert!(parse_host("ssh://u:pw@example.com").is_err());
    }

    #[test]
    fn known_hosts_match_plain_and_ported_names() {
        let k = "AAAAC3NzaC1lZDI1NTE5AAAAIGyAOGPs3WM5pD2sUbhs4xvvbmsKC9ebObAAVtV4a0xU";
        let text = format!(
            "# comment\nexample.com ssh-ed25519 {k}\n[example.com]:2222\tssh-ed25519 {k} c\nbroken line\nother ssh-ed25519 {k}\n"
        );
        assert_eq!(known_keys(&text, "example.com", 22).unwrap().len(), 1);
        assert_eq!(known_keys(&text, "example.com", 2222).unwrap().len(), 1);
        assert!(known_keys(&text, "example.org", 22).unwrap().is_empty());
    }
}
