//! End to end through `act` (nektos/act, its real artifact server speaking the v4 protocol):
//! the action of this repository, as `uses: ./` in a real workflow run.
//!
//! The image is the static binary in a `FROM scratch` image (`scripts/act.sh image`), which
//! the workspace's action.yml names as `docker://…`, as a release does. The Dockerfile itself
//! is built by CI's `docker build` job.

use std::collections::HashMap;
use std::io::Read;
use std::path::Path;
use std::process::Command;

use crate::support::docker::{ensure_images, Pg, TreeSpec, Volume};
use crate::support::{repo_root, sha256sum};

const IMAGE: &str = "predeploy-backup:act-e2e";

fn sh(cmd: &mut Command) -> String {
    let out = cmd.output().expect("run command");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{cmd:?} failed:\n{text}");
    text
}

/// The JSON outputs a job printed as `<KEY>=<base64>`.
fn job_outputs(log: &str, key: &str) -> HashMap<String, String> {
    use base64::Engine as _;
    let line = log
        .lines()
        .find_map(|l| {
            l.split_once(&format!("{key}="))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| panic!("no {key} line in the act log:\n{log}"));
    let json = base64::engine::general_purpose::STANDARD
        .decode(line)
        .expect("base64");
    serde_json::from_slice(&json).expect("outputs JSON")
}

#[test]
fn action_under_act_backs_up_uploads_and_a_second_job_fetches_it_back() {
    ensure_images();
    let root = repo_root();
    let act = root.join("scripts/act.sh");
    sh(Command::new(&act).arg("setup"));
    sh(Command::new(&act).args(["image", IMAGE]));

    let pg = Pg::seeded("act-e2e");
    let vol = Volume::with_tree("act-e2e", &TreeSpec::awkward());
    let tmp = tempfile::tempdir().unwrap();
    let ws = tmp.path().join("ws");
    let artifacts = tmp.path().join("artifacts");
    sh(Command::new(&act)
        .arg("workspace")
        .arg(&ws)
        .args(["--image", IMAGE]));
    std::fs::create_dir_all(ws.join(".github/workflows")).unwrap();
    std::fs::copy(
        root.join("tests/act/e2e.yml"),
        ws.join(".github/workflows/e2e.yml"),
    )
    .unwrap();

    let out = Command::new(&act)
        .arg("run")
        .arg("-C")
        .arg(&ws)
        .arg("-W")
        .arg(ws.join(".github/workflows/e2e.yml"))
        .arg("--artifacts")
        .arg(&artifacts)
        .arg("--bind")
        .args(["--env", &format!("PG_CONTAINER={}", pg.name())])
        .args(["--env", &format!("PG_DB={}", pg.db)])
        .args(["--env", &format!("PG_USER={}", pg.user)])
        .args(["--env", &format!("VOLUMES={}", vol.name)])
        .env("ACT_SKIP_SETUP", "1")
        .output()
        .expect("run act");
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "the workflow failed under act:\n{log}"
    );

    // Job 1: the backup's outputs, read by a later step of the job.
    let backup = job_outputs(&log, "E2E_BACKUP_B64");
    assert_eq!(backup["verified"], "true", "{backup:?}");
    assert!(!backup["artifact-id"].is_empty(), "{backup:?}");
    let db_path = ws.join(&backup["db-backup-path"]);
    assert_eq!(sha256sum(&db_path), backup["db-backup-sha256"]);
    // The job summary was written (act logs it).
    assert!(
        log.contains("Pre-deployment backup verified"),
        "no summary in:\n{log}"
    );

    // act's artifact store holds the zip; its digest is the output, and the manifest inside
    // matches the files on disk.
    let zip_path = artifacts.join("1/predeploy-backup/predeploy-backup.zip");
    assert!(zip_path.is_file(), "no artifact at {}", zip_path.display());
    assert_eq!(sha256sum(&zip_path), backup["artifact-digest"]);
    let mut zip = zip::ZipArchive::new(std::fs::File::open(&zip_path).unwrap()).unwrap();
    let folder = Path::new(&backup["backup-dir"])
        .file_name()
        .unwrap()
        .to_string_lossy()
        .to_string();
    let mut text = String::new();
    zip.by_name(&format!("{folder}/manifest.yml"))
        .expect("manifest in the artifact")
        .read_to_string(&mut text)
        .unwrap();
    let m = predeploy_backup::manifest::Manifest::parse(&text, Path::new("artifact")).unwrap();
    assert!(m.verified);
    let dir = ws.join(&backup["backup-dir"]);
    for f in m.files() {
        let p = dir.join(&f.path);
        assert_eq!(sha256sum(&p), f.sha256, "{}", f.path);
        assert_eq!(std::fs::metadata(&p).unwrap().len(), f.size, "{}", f.path);
        assert!(
            zip.by_name(&format!("{folder}/{}", f.path)).is_ok(),
            "{} not uploaded",
            f.path
        );
    }

    // Job 2: fetched back through the results service (ListArtifacts, GetSignedArtifactURL),
    // every file checked against the manifest, nothing changed.
    let rollback = job_outputs(&log, "E2E_ROLLBACK_B64");
    assert_eq!(rollback["restored"], "false", "{rollback:?}\n{log}");
    assert_eq!(rollback["commit"], backup["commit"], "{rollback:?}");
    assert!(!rollback["commit"].is_empty());
}
