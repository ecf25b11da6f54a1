//! age keys made by the reference tools (Debian's `age` package and OpenSSH's `ssh-keygen`,
//! installed by scripts/test), the reference `age -d`, and the check that an identity appears
//! nowhere a user or a log reader can see it.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::{random_hex, run_ok, ssh_keygen_into, target_tmp, Outcome, Workspace};

/// A key pair kept outside the workspace: `file` is the identity file (`age-keygen -o`'s, or
/// an OpenSSH private key), `secret` what goes into `decrypt-identity`, `public` what goes
/// into `encrypt-recipients`.
pub struct Key {
    pub file: PathBuf,
    pub secret: String,
    pub public: String,
}

fn key_dir() -> PathBuf {
    let dir = target_tmp().join(format!("age-keys-{}", random_hex(8)));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// `age-keygen -o name.txt`: an x25519 identity and its `age1…` public key.
pub fn keygen(name: &str) -> Key {
    let file = key_dir().join(format!("{name}.txt"));
    run_ok(Command::new("age-keygen").arg("-o").arg(&file));
    let text = std::fs::read_to_string(&file).unwrap();
    let secret = text
        .lines()
        .find(|l| l.starts_with("AGE-SECRET-KEY-1"))
        .expect("an identity line")
        .to_string();
    let public = run_ok(Command::new("age-keygen").arg("-y").arg(&file))
        .trim()
        .to_string();
    assert!(public.starts_with("age1"), "{public}");
    Key {
        file,
        secret,
        public,
    }
}

/// `ssh-keygen -t ed25519 -N ''`: the OpenSSH private key (whole, as a secret holds it) and
/// the `.pub` line.
pub fn ssh_keygen(name: &str) -> Key {
    let file = key_dir().join(name);
    ssh_keygen_into(&file, "deploy@example");
    let secret = std::fs::read_to_string(&file).unwrap();
    assert!(secret.contains("-----BEGIN OPENSSH PRIVATE KEY-----"));
    let public = std::fs::read_to_string(file.with_extension("pub"))
        .unwrap()
        .trim()
        .to_string();
    assert!(public.starts_with("ssh-ed25519 "), "{public}");
    Key {
        file,
        secret,
        public,
    }
}

/// `ssh-keygen -l`'s fingerprint of an ssh key: `SHA256:…`.
pub fn ssh_fingerprint(key: &Key) -> String {
    let out = run_ok(Command::new("ssh-keygen").arg("-lf").arg(&key.file));
    out.split_whitespace()
        .find(|w| w.starts_with("SHA256:"))
        .expect("a SHA256 fingerprint")
        .to_string()
}

/// `age -d -i KEY` of `data` (the reference CLI).
pub fn age_decrypt_bytes(key: &Key, data: &[u8]) -> Vec<u8> {
    let f = key_dir().join("sealed.age");
    std::fs::write(&f, data).unwrap();
    age_decrypt(key, &f)
}

/// `age -d -i KEY FILE` (the reference CLI).
pub fn age_decrypt(key: &Key, file: &Path) -> Vec<u8> {
    let out = Command::new("age")
        .arg("-d")
        .arg("-i")
        .arg(&key.file)
        .arg(file)
        .output()
        .expect("age runs");
    assert!(
        out.status.success(),
        "age -d {}: {}",
        file.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// `bash -o pipefail -c script`, its stdout.
pub fn sh(script: &str) -> String {
    run_ok(Command::new("bash").args(["-o", "pipefail", "-c", script]))
}

/// Every file under `dir`, recursively.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = vec![];
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let Ok(ft) = e.file_type() else { continue };
            if ft.is_dir() {
                todo.push(e.path());
            } else if ft.is_file() {
                out.push(e.path());
            }
        }
    }
    out
}

/// What must not appear of a secret: an age identity whole and a stretch of its middle; of
/// an OpenSSH private key, every line of its base64 body.
fn secret_parts(secret: &str) -> Vec<&str> {
    let secret = secret.trim();
    if secret.contains('\n') {
        let parts: Vec<&str> = secret
            .lines()
            .map(str::trim)
            .filter(|l| !l.starts_with("-----") && l.len() >= 20)
            .collect();
        assert!(!parts.is_empty());
        parts
    } else {
        vec![secret, &secret[16..40]]
    }
}

/// The identity appears nowhere a user or a log reader can see it: not in stdout (but the
/// runner's `::add-mask::` command, which the runner consumes), stderr, outputs, summary,
/// nor in any file of the workspace (manifests, pointer, backups).
pub fn assert_secret_nowhere(secret: &str, outcomes: &[&Outcome], ws: &Workspace) {
    let parts = secret_parts(secret);
    let mut masked = false;
    for o in outcomes {
        let stdout: String = o
            .stdout
            .lines()
            .filter(|l| {
                let m = l.starts_with("::add-mask::");
                masked |= m && l.contains(parts[0]);
                !m
            })
            .collect::<Vec<_>>()
            .join("\n");
        for (what, text) in [
            ("stdout", stdout.as_str()),
            ("stderr", o.stderr.as_str()),
            ("$GITHUB_OUTPUT", o.raw_output.as_str()),
            ("summary", o.summary.as_str()),
        ] {
            for p in &parts {
                assert!(!text.contains(p), "the identity appears in {what}\n{o}");
            }
        }
    }
    assert!(masked, "the identity was never masked with ::add-mask::");
    for f in files_under(ws.path()) {
        let bytes = std::fs::read(&f).unwrap_or_default();
        for p in &parts {
            assert!(
                !bytes.windows(p.len()).any(|w| w == p.as_bytes()),
                "the identity is written in {}",
                f.display()
            );
        }
    }
}
