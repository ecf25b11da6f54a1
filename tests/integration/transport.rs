//! Reaching the Docker engine the way a hosted runner reaches a deploy host: over TLS
//! (`DOCKER_HOST=tcp://…:2376`, client certificates) and over SSH (`DOCKER_HOST=ssh://…`),
//! against real endpoints on 127.0.0.1 in front of the local engine (see
//! `support/transport.rs`): a rustls proxy that requires a client certificate, and Debian's
//! `sshd` where `docker system dial-stdio` runs.
//!
//! - [`tls_backup_and_rollback_round_trip`]
//! - [`tls_refuses_a_wrong_ca_and_a_missing_client_certificate`]
//! - [`tls_without_verify_encrypts_and_warns`]
//! - [`ssh_backup_and_rollback_round_trip`]
//! - [`ssh_refuses_unknown_and_changed_host_keys_and_a_wrong_user_key`]
//! - [`docker_host_empty_is_unset_bad_scheme_is_usage_unreachable_names_the_host`]

use std::sync::Arc;

use crate::support::docker::{Container, DbFingerprint, Pg, TreeFingerprint, TreeSpec, Volume};
use crate::support::rollback_db;
use crate::support::transport::{free_port, Pki, Sshd, TlsProxy};
use crate::support::{timed, Action, Outcome, Workspace};

/// A deployed stack: a seeded PostgreSQL, a volume, and an app container using the volume.
struct Stack {
    ws: Arc<Workspace>,
    pg: Pg,
    vol: Volume,
    app: Container,
}

impl Stack {
    fn new(test: &str) -> Stack {
        let (pg, vol) = Pg::seeded_with_volume(test, &TreeSpec::awkward());
        let app = Container::sleeper(
            &format!("{test}-app"),
            &[&format!("{}:/data", vol.name)],
            &["--init"],
        );
        Stack {
            ws: Workspace::new(),
            pg,
            vol,
            app,
        }
    }

    fn state(&self) -> (DbFingerprint, TreeFingerprint) {
        (rollback_db::fingerprint(&self.pg), self.vol.fingerprint())
    }

    fn backup(&self) -> Action {
        self.ws
            .action("backup")
            .postgres(&self.pg)
            .input("volumes", &self.vol.name)
            .input("stop-containers", &self.app.name)
    }

    fn rollback(&self) -> Action {
        self.ws
            .action("rollback")
            .postgres_target(&self.pg)
            .input("volumes", &self.vol.name)
            .input("stop-containers", &self.app.name)
            .input("restore-special-bits", "true")
    }

    /// What a bad deploy does.
    fn change(&self) {
        self.pg.psql(
            "DELETE FROM public.events WHERE id > 4000; UPDATE public.schedules SET title = 'bad deploy' WHERE id = 3",
        );
        let out = self.app.exec(&[
            "sh",
            "-c",
            "set -e; printf 'bad\\n' >> /data/README.txt; rm -rf /data/deep; printf x > /data/added",
        ]);
        assert!(out.status.success(), "{out:?}");
    }

    /// backup → change → rollback through `with(action)`, checked as a user checks it.
    fn round_trip(&self, what: &str, with: impl Fn(Action) -> Action, secrets: &[&str]) {
        let before = self.state();
        let b = timed(&format!("{what}: backup"), with(self.backup()));
        b.assert_code(0);
        assert_eq!(b.out("verified"), "true", "{b}");
        assert!(b.errors().is_empty(), "{b}");
        assert!(self.app.is_running(), "the app was started again");
        self.change();
        let changed = self.state();
        assert!(!changed.0.diff(&before.0).is_empty());
        assert!(!changed.1.diff(&before.1).is_empty());

        let r = timed(&format!("{what}: rollback"), with(self.rollback()));
        r.assert_code(0);
        assert_eq!(r.out("restored"), "true", "{r}");
        assert_eq!(r.out("backup-dir"), b.out("backup-dir"));
        let after = self.state();
        after
            .0
            .assert_same(&before.0, &format!("{what}: database after the rollback"));
        after
            .1
            .assert_same(&before.1, &format!("{what}: volume after the rollback"));
        assert!(self.app.is_running(), "the app was started again");
        for o in [&b, &r] {
            assert_secrets_only_masked(o, secrets);
        }
    }
}

/// A secret may appear only in `::add-mask::` commands, nowhere else a user reads.
fn assert_secrets_only_masked(o: &Outcome, secrets: &[&str]) {
    let shown: String = o
        .stdout
        .lines()
        .filter(|l| !l.starts_with("::add-mask::"))
        .chain(o.stderr.lines())
        .chain(o.summary.lines())
        .collect::<Vec<_>>()
        .join("\n");
    for s in secrets {
        for line in s
            .lines()
            .filter(|l| l.len() > 20 && !l.starts_with("-----"))
        {
            assert!(!shown.contains(line), "a secret line leaked: {line}\n{o}");
        }
        for line in s
            .lines()
            .filter(|l| !l.starts_with("-----") && l.len() > 20)
        {
            assert!(
                o.stdout.contains(&format!("::add-mask::{line}")),
                "secret line not masked: {line}\n{o}"
            );
        }
    }
}

/// A backup of one small volume through whatever `with` sets (for the refusal tests).
fn volume_backup(ws: &Arc<Workspace>, vol: &Volume) -> Action {
    ws.action("backup").input("volumes", &vol.name)
}

fn warnings(o: &Outcome) -> Vec<String> {
    o.commands()
        .into_iter()
        .filter(|a| a.command == "warning")
        .map(|a| a.message.clone())
        .collect()
}

// -----------------------------------------------------------------------------------------
// TLS

#[test]
fn tls_backup_and_rollback_round_trip() {
    let pki = Pki::new();
    let proxy = TlsProxy::start(&pki);
    let s = Stack::new("tr-tls");
    // Inputs with PEM contents (the action's way), verified against the CA.
    s.round_trip(
        "tls inputs",
        |a| {
            a.env("DOCKER_HOST", proxy.docker_host())
                .env("DOCKER_TLS_VERIFY", "1")
                .input("docker-tls-ca", &pki.ca)
                .input("docker-tls-cert", &pki.client_cert)
                .input("docker-tls-key", &pki.client_key)
        },
        &[&pki.client_key],
    );
    // The docker CLI's way: DOCKER_CERT_PATH with ca.pem, cert.pem, key.pem.
    let dir = pki.cert_path();
    let o = volume_backup(&s.ws, &s.vol)
        .env("DOCKER_HOST", proxy.docker_host())
        .env("DOCKER_TLS_VERIFY", "1")
        .env("DOCKER_CERT_PATH", dir.display().to_string())
        .run();
    o.assert_code(0);
    assert!(warnings(&o).iter().all(|w| !w.contains("TLS")), "{o}");
}

#[test]
fn tls_refuses_a_wrong_ca_and_a_missing_client_certificate() {
    let pki = Pki::new();
    let proxy = TlsProxy::start(&pki);
    let ws = Workspace::new();
    let vol = Volume::with_tree("tr-tls-neg", &TreeSpec::awkward());
    let host = format!("127.0.0.1:{}", proxy.port);
    let base = || {
        volume_backup(&ws, &vol)
            .env("DOCKER_HOST", proxy.docker_host())
            .env("DOCKER_TLS_VERIFY", "1")
    };

    // The server's certificate is checked against the CA given: another CA is refused.
    let o = base()
        .input("docker-tls-ca", &pki.other_ca)
        .input("docker-tls-cert", &pki.client_cert)
        .input("docker-tls-key", &pki.client_key)
        .run();
    o.assert_code(3);
    o.assert_mentions(&host);
    o.assert_mentions("not signed by the CA");
    assert_secrets_only_masked(&o, &[&pki.client_key]);

    // No client certificate: the engine (proxy) refuses the handshake.
    let o = base().input("docker-tls-ca", &pki.ca).run();
    o.assert_code(3);
    o.assert_mentions(&host);
    o.assert_mentions("docker-tls-cert");

    // A client certificate of another CA: refused too.
    let o = base()
        .input("docker-tls-ca", &pki.ca)
        .input("docker-tls-cert", &pki.other_client_cert)
        .input("docker-tls-key", &pki.other_client_key)
        .run();
    o.assert_code(3);
    o.assert_mentions(&host);

    // Plain HTTP against the TLS port (no TLS material, no DOCKER_TLS_VERIFY): fails, exit 3.
    let o = volume_backup(&ws, &vol)
        .env("DOCKER_HOST", proxy.docker_host())
        .run();
    o.assert_code(3);
    o.assert_mentions(&host);

    // DOCKER_TLS_VERIFY without any CA: a usage error that says what to give.
    let o = base().env("HOME", ws.path().display().to_string()).run();
    o.assert_code(2);
    o.assert_mentions("docker-tls-ca");

    // A key without its certificate: usage.
    let o = base()
        .input("docker-tls-ca", &pki.ca)
        .input("docker-tls-key", &pki.client_key)
        .run();
    o.assert_code(2);
    o.assert_mentions("docker-tls-key is set without docker-tls-cert");
    assert_secrets_only_masked(&o, &[&pki.client_key]);
}

#[test]
fn tls_without_verify_encrypts_and_warns() {
    let pki = Pki::new();
    let proxy = TlsProxy::start(&pki);
    let ws = Workspace::new();
    let vol = Volume::with_tree("tr-tls-nv", &TreeSpec::awkward());
    // Like `docker --tls`: the wrong CA does not matter, the link is encrypted, and the
    // user is told that the server was not verified.
    let o = volume_backup(&ws, &vol)
        .env("DOCKER_HOST", proxy.docker_host())
        .input("docker-tls-ca", &pki.other_ca)
        .input("docker-tls-cert", &pki.client_cert)
        .input("docker-tls-key", &pki.client_key)
        .run();
    o.assert_code(0);
    let w = warnings(&o);
    assert!(
        w.iter()
            .any(|w| w.contains("NOT verified") && w.contains("DOCKER_TLS_VERIFY=1")),
        "{o}"
    );
}

// -----------------------------------------------------------------------------------------
// SSH

#[test]
fn ssh_backup_and_rollback_round_trip() {
    let sshd = Sshd::start();
    let s = Stack::new("tr-ssh");
    s.round_trip(
        "ssh",
        |a| {
            a.env("DOCKER_HOST", sshd.docker_host())
                .input("ssh-private-key", &sshd.user_key)
                .input("ssh-known-hosts", &sshd.known_hosts)
        },
        &[&sshd.user_key],
    );
    let log = sshd.log();
    assert!(log.contains("Accepted publickey for root"), "{log}");
}

#[test]
fn ssh_refuses_unknown_and_changed_host_keys_and_a_wrong_user_key() {
    let sshd = Sshd::start();
    let ws = Workspace::new();
    let vol = Volume::with_tree("tr-ssh-neg", &TreeSpec::awkward());
    let base = || {
        volume_backup(&ws, &vol)
            .env("DOCKER_HOST", sshd.docker_host())
            .input("ssh-private-key", &sshd.user_key)
    };

    // Unknown host key: refused, with the fingerprint ssh-keygen shows and the line to pin.
    let o = base().run();
    o.assert_code(3);
    o.assert_mentions(&sshd.host_fingerprint);
    o.assert_mentions(sshd.known_hosts.trim());
    o.assert_mentions("ssh-known-hosts");
    assert_secrets_only_masked(&o, &[&sshd.user_key]);
    assert!(ws.backup_folders("backups").is_empty());

    // Changed host key: refused even with ssh-accept-new-host-key.
    let o = base()
        .input("ssh-known-hosts", sshd.wrong_known_hosts())
        .input("ssh-accept-new-host-key", "true")
        .run();
    o.assert_code(3);
    o.assert_mentions("CHANGED");
    o.assert_mentions(&sshd.host_fingerprint);

    // Trust on first use only when asked, and then said.
    let o = base().input("ssh-accept-new-host-key", "true").run();
    o.assert_code(0);
    assert!(
        warnings(&o)
            .iter()
            .any(|w| w.contains(&sshd.host_fingerprint) && w.contains("first use")),
        "{o}"
    );

    // A key the server does not authorize.
    let o = volume_backup(&ws, &vol)
        .env("DOCKER_HOST", sshd.docker_host())
        .input("ssh-private-key", &sshd.other_key)
        .input("ssh-known-hosts", &sshd.known_hosts)
        .run();
    o.assert_code(3);
    o.assert_mentions("refused the key");
    o.assert_mentions(&format!("127.0.0.1:{}", sshd.port));
    assert_secrets_only_masked(&o, &[&sshd.other_key]);

    // No key at all: a usage error.
    let o = volume_backup(&ws, &vol)
        .env("DOCKER_HOST", sshd.docker_host())
        .input("ssh-known-hosts", &sshd.known_hosts)
        .run();
    o.assert_code(2);
    o.assert_mentions("ssh-private-key");
}

// -----------------------------------------------------------------------------------------
// DOCKER_HOST itself

#[test]
fn docker_host_empty_is_unset_bad_scheme_is_usage_unreachable_names_the_host() {
    let ws = Workspace::new();
    let vol = Volume::with_tree("tr-host", &TreeSpec::awkward());
    // Empty (a secret that is not set) means the default socket, as for the docker CLI.
    let o = volume_backup(&ws, &vol).env("DOCKER_HOST", "").run();
    o.assert_code(0);

    for bad in ["https://127.0.0.1:2376", "npipe:////./pipe/docker_engine"] {
        let o = volume_backup(&ws, &vol).env("DOCKER_HOST", bad).run();
        o.assert_code(2);
        o.assert_mentions("unsupported scheme");
        o.assert_mentions("ssh://USER@HOST");
    }

    // Nobody listens: exit 3, naming the host; over SSH the key is never shown.
    let port = free_port();
    let o = volume_backup(&ws, &vol)
        .env("DOCKER_HOST", format!("tcp://127.0.0.1:{port}"))
        .run();
    o.assert_code(3);
    o.assert_mentions(&format!("127.0.0.1:{port}"));
    let key = {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("k");
        crate::support::ssh_keygen_into(&p, "predeploy-test");
        std::fs::read_to_string(&p).unwrap()
    };
    let o = volume_backup(&ws, &vol)
        .env("DOCKER_HOST", format!("ssh://deploy@127.0.0.1:{port}"))
        .input("ssh-private-key", &key)
        .run();
    o.assert_code(3);
    o.assert_mentions(&format!("deploy@127.0.0.1:{port}"));
    // The error's help (what to check) follows its message in the annotation.
    assert!(
        o.errors()
            .iter()
            .any(|a| a.message.contains("\nhelp: check DOCKER_HOST")),
        "{o}"
    );
    assert_secrets_only_masked(&o, &[&key]);
}
