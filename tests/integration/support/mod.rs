//! The shared test harness: run the built binary exactly as the GitHub runner runs a Docker
//! container action (or as a plain CLI), read what it left behind the way the runner reads
//! it, and drive real Docker containers and volumes with RAII cleanup.
//!
//! - [`action`]: [`Action`] (cleared environment, `GITHUB_*`, every `INPUT_<NAME>` of
//!   `action.yml`, empty unless given), [`Cli`], [`Outcome`], [`Workspace`].
//! - [`gh_output`]: a strict parser of `$GITHUB_OUTPUT` (the runner's file-command rules) and
//!   of workflow-command annotations (`::error file=...::...`).
//! - [`age`]: keys made by `age-keygen` and `ssh-keygen`, the reference `age -d`, and
//!   [`age::assert_secret_nowhere`] (an identity appears in no output and no file).
//! - [`docker`]: images, PostgreSQL containers, volumes with an awkward tree, networks,
//!   content fingerprints of a database and of a volume, all removed on drop.
//! - [`docker_proxy`]: a proxy in front of the engine's socket (`DOCKER_HOST=tcp://...`) that
//!   slows, stalls or holds chosen requests.
//! - [`fixtures`]: `tests/fixtures/seed.sql` and its expected row counts, a real `pg_dump` of
//!   it (cached), awkward host trees and GNU `tar`/`gzip` helpers, small byte utilities.

#![allow(dead_code)]

pub mod action;
pub mod age;
pub mod docker;
pub mod docker_proxy;
pub mod fixtures;
pub mod gh_output;
pub mod rollback_corpus;
pub mod rollback_db;
pub mod seaweed;
pub mod transport;

pub use action::{Action, Cli, Outcome, Workspace};
#[allow(unused_imports)]
pub use gh_output::{parse_github_output, Annotation};

use std::path::{Path, PathBuf};

/// The repository root (where `Cargo.toml` is).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A per-build scratch folder that cargo gives integration tests (`target/tmp`).
pub fn target_tmp() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
}

/// Runs `cmd`, which must succeed; its stdout.
pub fn run_ok(cmd: &mut std::process::Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{cmd:?} runs (installed by scripts/test): {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// `ssh-keygen -t ed25519 -N ''`: an unencrypted ed25519 key in `file`, its public key in
/// `file.pub`.
pub fn ssh_keygen_into(file: &Path, comment: &str) {
    run_ok(
        std::process::Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", comment, "-f"])
            .arg(file)
            .stdout(std::process::Stdio::null()),
    );
}

/// Hex SHA-256 of a file, as `sha256sum` prints it (computed by `sha256sum` itself, so the
/// product is compared with an independent tool).
pub fn sha256sum(path: &Path) -> String {
    let out = std::process::Command::new("sha256sum")
        .arg(path)
        .output()
        .expect("sha256sum runs");
    assert!(
        out.status.success(),
        "sha256sum {}: {:?}",
        path.display(),
        out
    );
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string()
}

/// Size of a file in bytes.
pub fn file_size(path: &Path) -> u64 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .len()
}

/// A short random hex string (for unique names).
pub fn random_hex(n: usize) -> String {
    let s = uuid::Uuid::new_v4().simple().to_string();
    s[..n.min(32)].to_string()
}

/// Names of the entries of `dir` (empty when it does not exist), sorted.
pub fn list_dir(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = match std::fs::read_dir(dir) {
        Ok(rd) => rd
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().to_string())
            .collect(),
        Err(_) => vec![],
    };
    v.sort();
    v
}

/// Polls `f` every `step` until it returns `Some`, or panics after `timeout` with `what`.
pub fn wait_for<T>(
    what: &str,
    timeout: std::time::Duration,
    step: std::time::Duration,
    mut f: impl FnMut() -> Option<T>,
) -> T {
    let start = std::time::Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        if start.elapsed() > timeout {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(step);
    }
}

/// Runs a step and logs how long it took (the suite's timings, `[timing] WHAT: exit N in
/// T`); with `PBT_SHOW_STEPS` set, also everything the step printed.
pub fn timed(what: &str, a: Action) -> Outcome {
    let t = std::time::Instant::now();
    let o = a.run();
    eprintln!("[timing] {what}: exit {} in {:.1?}", o.code, t.elapsed());
    if std::env::var_os("PBT_SHOW_STEPS").is_some() {
        eprintln!("{o}");
    }
    o
}
