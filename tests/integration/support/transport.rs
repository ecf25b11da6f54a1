//! Real remote endpoints for the local Docker engine, on 127.0.0.1:
//!
//! - [`Pki`]: a CA, a server certificate (`IP:127.0.0.1`, `DNS:localhost`, serverAuth), a
//!   client certificate (clientAuth) and a second, unrelated CA with its own client
//!   certificate, made by Debian's `openssl` (X.509 v3, P-256 keys in PKCS#8);
//! - [`TlsProxy`]: a TLS-terminating proxy (rustls, ring) in front of `/var/run/docker.sock`
//!   that requires a client certificate signed by its CA, like `dockerd --tlsverify`;
//! - [`Sshd`]: Debian's `sshd` with a throwaway host key and a throwaway user key for root,
//!   where the `docker` CLI answers `docker system dial-stdio`.
//!
//! Everything is removed (processes stopped, files deleted) on drop.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_rustls::rustls;

use super::run_ok;

/// A free TCP port on 127.0.0.1 (free when asked; the caller binds it soon after).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_for_port(port: u16, what: &str, child: &mut Child) {
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(20) {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("{what} exited early: {status}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("{what} did not listen on 127.0.0.1:{port} within 20 s");
}

// ---------------------------------------------------------------------------------------
// TLS

/// Test certificates, as PEM text.
pub struct Pki {
    pub dir: tempfile::TempDir,
    pub ca: String,
    pub server_cert: String,
    pub server_key: String,
    pub client_cert: String,
    pub client_key: String,
    /// An unrelated CA, and a client certificate it signed.
    pub other_ca: String,
    pub other_client_cert: String,
    pub other_client_key: String,
}

const PKI_SCRIPT: &str = r#"set -e
mk_ca() {
  openssl req -x509 -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -keyout "$1-ca.key" -out "$1-ca.pem" -days 2 -subj "/CN=$1 test CA" \
    -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign
}
mk_leaf() { # ca name extendedKeyUsage extra-extension
  openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -keyout "$2.key" -out "$2.csr" -subj "/CN=$2"
  printf 'basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=%s\n%s\n' "$3" "$4" > "$2.ext"
  openssl x509 -req -in "$2.csr" -CA "$1-ca.pem" -CAkey "$1-ca.key" -CAcreateserial \
    -out "$2.pem" -days 2 -extfile "$2.ext"
}
mk_ca good
mk_ca other
mk_leaf good server serverAuth "subjectAltName=IP:127.0.0.1,DNS:localhost"
mk_leaf good client clientAuth ""
mk_leaf other other-client clientAuth ""
"#;

impl Pki {
    pub fn new() -> Pki {
        let dir = tempfile::tempdir().unwrap();
        run_ok(
            Command::new("bash")
                .arg("-c")
                .arg(PKI_SCRIPT)
                .current_dir(dir.path())
                .stdout(Stdio::null()),
        );
        let read = |n: &str| std::fs::read_to_string(dir.path().join(n)).unwrap();
        Pki {
            ca: read("good-ca.pem"),
            server_cert: read("server.pem"),
            server_key: read("server.key"),
            client_cert: read("client.pem"),
            client_key: read("client.key"),
            other_ca: read("other-ca.pem"),
            other_client_cert: read("other-client.pem"),
            other_client_key: read("other-client.key"),
            dir,
        }
    }

    /// A `DOCKER_CERT_PATH` folder with `ca.pem`, `cert.pem`, `key.pem`, as the docker CLI
    /// expects it.
    pub fn cert_path(&self) -> PathBuf {
        let d = self.dir.path().join("docker-cert-path");
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("ca.pem"), &self.ca).unwrap();
        std::fs::write(d.join("cert.pem"), &self.client_cert).unwrap();
        std::fs::write(d.join("key.pem"), &self.client_key).unwrap();
        d
    }
}

/// `tcp://127.0.0.1:PORT` speaking TLS, requiring a client certificate of the [`Pki`]'s CA,
/// forwarding each connection to the local engine's socket.
pub struct TlsProxy {
    pub port: u16,
    runtime: Option<tokio::runtime::Runtime>,
}

impl TlsProxy {
    pub fn start(pki: &Pki) -> TlsProxy {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_slice(pki.ca.as_bytes()).unwrap())
            .unwrap();
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            roots.into(),
            provider.clone(),
        )
        .build()
        .unwrap();
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_client_cert_verifier(verifier)
            .with_single_cert(
                vec![CertificateDer::from_pem_slice(pki.server_cert.as_bytes()).unwrap()],
                PrivateKeyDer::from_pem_slice(pki.server_key.as_bytes()).unwrap(),
            )
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let port = listener.local_addr().unwrap().port();
        runtime.spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    // A refused handshake (no or a foreign client certificate) ends here, with
                    // the alert rustls sends.
                    let Ok(mut tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let Ok(mut engine) =
                        tokio::net::UnixStream::connect("/var/run/docker.sock").await
                    else {
                        return;
                    };
                    let _ = tokio::io::copy_bidirectional(&mut tls, &mut engine).await;
                });
            }
        });
        TlsProxy {
            port,
            runtime: Some(runtime),
        }
    }

    pub fn docker_host(&self) -> String {
        format!("tcp://127.0.0.1:{}", self.port)
    }
}

impl Drop for TlsProxy {
    fn drop(&mut self) {
        if let Some(r) = self.runtime.take() {
            r.shutdown_background();
        }
    }
}

// ---------------------------------------------------------------------------------------
// SSH

/// A real `sshd` on 127.0.0.1 for root, with throwaway keys.
pub struct Sshd {
    pub port: u16,
    pub dir: tempfile::TempDir,
    /// The user's private key (OpenSSH format).
    pub user_key: String,
    /// Another private key, not authorized.
    pub other_key: String,
    /// `[127.0.0.1]:PORT ssh-ed25519 AAAA…`
    pub known_hosts: String,
    /// `SHA256:…` of the host key, as `ssh-keygen -lf` prints it.
    pub host_fingerprint: String,
    child: Child,
}

fn keygen(path: &Path) {
    super::ssh_keygen_into(path, "predeploy-test");
}

impl Sshd {
    pub fn sshd_binary() -> &'static str {
        "/usr/sbin/sshd"
    }

    pub fn start() -> Sshd {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let host_key = d.join("host_key");
        let user_key = d.join("user_key");
        let other_key = d.join("other_key");
        keygen(&host_key);
        keygen(&user_key);
        keygen(&other_key);
        std::fs::copy(d.join("user_key.pub"), d.join("authorized_keys")).unwrap();
        let port = free_port();
        std::fs::create_dir_all("/run/sshd").unwrap();
        let config = format!(
            "Port {port}\nListenAddress 127.0.0.1\nHostKey {}\nAuthorizedKeysFile {}\n\
             PasswordAuthentication no\nKbdInteractiveAuthentication no\nPubkeyAuthentication yes\n\
             PermitRootLogin prohibit-password\nStrictModes no\nUsePAM no\nPidFile none\n\
             LogLevel VERBOSE\n",
            host_key.display(),
            d.join("authorized_keys").display()
        );
        std::fs::write(d.join("sshd_config"), config).unwrap();
        let mut child = Command::new(Sshd::sshd_binary())
            .args(["-D", "-e", "-f"])
            .arg(d.join("sshd_config"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(d.join("sshd.log")).unwrap())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start {} (Debian openssh-server; scripts/test installs it): {e}",
                    Sshd::sshd_binary()
                )
            });
        wait_for_port(port, "sshd", &mut child);
        let public = std::fs::read_to_string(d.join("host_key.pub")).unwrap();
        let mut fields = public.split_whitespace();
        let known_hosts = format!(
            "[127.0.0.1]:{port} {} {}\n",
            fields.next().unwrap(),
            fields.next().unwrap()
        );
        let fp = run_ok(
            Command::new("ssh-keygen")
                .arg("-lf")
                .arg(d.join("host_key.pub")),
        );
        let host_fingerprint = fp.split_whitespace().nth(1).unwrap().to_string();
        Sshd {
            port,
            user_key: std::fs::read_to_string(&user_key).unwrap(),
            other_key: std::fs::read_to_string(&other_key).unwrap(),
            known_hosts,
            host_fingerprint,
            dir,
            child,
        }
    }

    pub fn docker_host(&self) -> String {
        format!("ssh://root@127.0.0.1:{}", self.port)
    }

    /// A known_hosts line for this address with a different key (as after a man in the
    /// middle, or a reinstalled server).
    pub fn wrong_known_hosts(&self) -> String {
        let other = std::fs::read_to_string(self.dir.path().join("other_key.pub")).unwrap();
        let mut f = other.split_whitespace();
        format!(
            "[127.0.0.1]:{} {} {}\n",
            self.port,
            f.next().unwrap(),
            f.next().unwrap()
        )
    }

    /// What sshd logged (for failure messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("sshd.log")).unwrap_or_default()
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
