//! End to end through `act` (nektos/act, its real artifact server speaking the v4 protocol):
//! the action of this repository, as `uses: ./` in a real workflow run.
//!
//! The image is the static binary in a `FROM scratch` image (`scripts/act.sh image`), which
//! the workspace's action.yml names as `docker://…`, as a release does. The Dockerfile itself
//! is built by CI's `docker build` job.
//!
//! - [`action_under_act_backs_up_uploads_and_a_second_job_fetches_it_back`]: the artifact
//!   server (tests/act/e2e.yml).
//! - [`action_under_act_backs_up_to_s3_and_a_manual_run_restores_from_the_bucket_alone`]: an S3
//!   destination, SeaweedFS in a container on a Docker network that act puts the job on
//!   (tests/act/s3.yml).

use std::collections::HashMap;
use std::io::Read;
use std::path::Path;
use std::process::Command;

use predeploy_backup::manifest::{Manifest, FILE_NAME};

use crate::support::docker::{ensure_images, unique_name, Network, Pg, TreeSpec, Volume};
use crate::support::rollback_db;
use crate::support::seaweed::{Seaweed, ACCESS_KEY, SECRET_KEY};
use crate::support::{random_hex, repo_root, sha256sum};

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

/// act installed, its images built and the action image `IMAGE` made, once per process.
fn act() -> std::path::PathBuf {
    static READY: std::sync::OnceLock<()> = std::sync::OnceLock::new();
    let act = repo_root().join("scripts/act.sh");
    READY.get_or_init(|| {
        ensure_images();
        sh(Command::new(&act).arg("setup"));
        sh(Command::new(&act).args(["image", IMAGE]));
    });
    act
}

/// A scratch repository at `ws` holding the action (image `IMAGE`) and `tests/act/WORKFLOW`
/// as its only workflow; returns the workflow's path.
fn workspace(ws: &Path, workflow: &str) -> std::path::PathBuf {
    sh(Command::new(act())
        .arg("workspace")
        .arg(ws)
        .args(["--image", IMAGE]));
    let dir = ws.join(".github/workflows");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(
        repo_root().join("tests/act").join(workflow),
        dir.join(workflow),
    )
    .unwrap();
    dir.join(workflow)
}

/// `scripts/act.sh run -C WS -W WORKFLOW --bind ARGS…`: the log, asserted successful.
fn act_run(ws: &Path, workflow: &Path, args: &[String]) -> String {
    let out = Command::new(act())
        .arg("run")
        .arg("-C")
        .arg(ws)
        .arg("-W")
        .arg(workflow)
        .arg("--bind")
        .args(args)
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
    log
}

/// The `--env` arguments naming the database and the volume, as the workflows read them.
fn target_env(pg: &Pg, vol: &Volume) -> Vec<String> {
    [
        format!("PG_CONTAINER={}", pg.name()),
        format!("PG_DB={}", pg.db),
        format!("PG_USER={}", pg.user),
        format!("VOLUMES={}", vol.name),
    ]
    .into_iter()
    .flat_map(|e| ["--env".to_string(), e])
    .collect()
}

#[test]
fn action_under_act_backs_up_uploads_and_a_second_job_fetches_it_back() {
    let pg = Pg::seeded("act-e2e");
    let vol = Volume::with_tree("act-e2e", &TreeSpec::awkward());
    let tmp = tempfile::tempdir().unwrap();
    let ws = tmp.path().join("ws");
    let artifacts = tmp.path().join("artifacts");
    let workflow = workspace(&ws, "e2e.yml");
    let mut args = vec!["--artifacts".to_string(), artifacts.display().to_string()];
    args.extend(target_env(&pg, &vol));
    let log = act_run(&ws, &workflow, &args);

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

#[test]
fn action_under_act_backs_up_to_s3_and_a_manual_run_restores_from_the_bucket_alone() {
    const BUCKET: &str = "deploy-backups";
    let test = "act-s3";
    let net = Network::create(test);
    let s3 = Seaweed::in_container(BUCKET, &net.name, &unique_name(&format!("{test}-s3")));
    let pg = Pg::seeded(test);
    let vol = Volume::with_tree(test, &TreeSpec::awkward());
    let db_before = rollback_db::fingerprint(&pg);
    let vol_before = vol.fingerprint();
    let tmp = tempfile::tempdir().unwrap();
    // Run ids as GitHub numbers them: the deploy's, then the manual rollback's.
    let deploy_run: u32 = 1000 + u32::from_str_radix(&random_hex(4), 16).unwrap();
    // What every run passes: the network, the S3 settings (keys as secrets) and the targets.
    let common = |run_id: u32| {
        let mut a: Vec<String> = [
            "--network",
            &net.name,
            "-s",
            &format!("S3_ACCESS_KEY_ID={ACCESS_KEY}"),
            "-s",
            &format!("S3_SECRET_ACCESS_KEY={SECRET_KEY}"),
            "-s",
            &format!("PG_PASSWORD={}", pg.password),
            "--env",
            &format!("S3_ENDPOINT={}", s3.network_endpoint()),
            "--env",
            &format!("S3_BUCKET={BUCKET}"),
            "--env",
            &format!("GITHUB_RUN_ID={run_id}"),
        ]
        .map(String::from)
        .to_vec();
        a.extend(target_env(&pg, &vol));
        a
    };

    // The deploy: a push backs up to the bucket, no artifact.
    let ws = tmp.path().join("deploy");
    let workflow = workspace(&ws, "s3.yml");
    let log = act_run(&ws, &workflow, &common(deploy_run));
    assert!(
        !log.contains(SECRET_KEY),
        "the secret is in the log:\n{log}"
    );
    let backup = job_outputs(&log, "E2E_S3_BACKUP_B64");
    assert_eq!(backup["verified"], "true", "{backup:?}");
    let folder_url = &backup["destination-url"];
    let prefix = format!("s3://{BUCKET}/prod/app/pre-deployment-");
    assert!(folder_url.starts_with(&prefix), "{backup:?}");
    assert!(
        backup["db-backup-url"].starts_with(folder_url.as_str()),
        "{backup:?}"
    );
    let vol_urls: Vec<&str> = backup["volume-backup-urls"].lines().collect();
    assert_eq!(vol_urls.len(), 1, "{backup:?}");
    assert!(vol_urls[0].starts_with(folder_url.as_str()), "{backup:?}");

    // The bucket, read from the host: the manifest (committed last) names every file, each
    // stored byte for byte, the dump the same as the one the step reported.
    let folder = folder_url.strip_prefix(&format!("s3://{BUCKET}/")).unwrap();
    let keys = s3.keys();
    let text = String::from_utf8(s3.object(&format!("{folder}/{FILE_NAME}"))).unwrap();
    assert!(!text.contains(SECRET_KEY) && !text.contains(ACCESS_KEY));
    let m = Manifest::parse(&text, Path::new("bucket")).unwrap();
    assert!(m.verified);
    assert_eq!(m.destination.as_deref(), Some(folder_url.as_str()));
    let files = m.files();
    assert!(files.len() >= 2, "{text}");
    for f in &files {
        let key = format!("{folder}/{}", f.path);
        assert!(keys.contains(&key), "{key} not in {keys:?}");
        let bytes = s3.object(&key);
        assert_eq!(bytes.len() as u64, f.size, "{key}");
        assert_eq!(
            predeploy_backup::archive::hash::sha256_hex(&bytes),
            f.sha256,
            "{key}"
        );
    }
    let db_key = backup["db-backup-url"]
        .strip_prefix(&format!("s3://{BUCKET}/"))
        .unwrap();
    assert_eq!(
        predeploy_backup::archive::hash::sha256_hex(&s3.object(db_key)),
        backup["db-backup-sha256"]
    );

    // A bad deploy changes the database and the volume.
    pg.psql(
        "DELETE FROM public.events WHERE id > 100; UPDATE public.customers SET name = 'changed'",
    );
    let out = vol.busybox("rm -rf /data/deep && echo new > /data/new.txt", &[], false);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_ne!(rollback_db::fingerprint(&pg), db_before);
    assert_ne!(vol.fingerprint(), vol_before);

    // The rollback: a manual run in a fresh workspace (no backups, no pointer, no artifact)
    // restores the deploy's backup, found by run id in the bucket.
    let ws = tmp.path().join("rollback");
    let workflow = workspace(&ws, "s3.yml");
    let mut args = common(deploy_run + 7);
    args.extend(["--event", "workflow_dispatch", "--input"].map(String::from));
    args.push(format!("run-id={deploy_run}"));
    let log = act_run(&ws, &workflow, &args);
    assert!(
        !log.contains(SECRET_KEY),
        "the secret is in the log:\n{log}"
    );
    let rollback = job_outputs(&log, "E2E_S3_ROLLBACK_B64");
    assert_eq!(rollback["restored"], "true", "{rollback:?}\n{log}");
    assert_eq!(rollback["commit"], backup["commit"], "{rollback:?}");
    rollback_db::fingerprint(&pg).assert_same(&db_before, "after the rollback under act");
    vol.fingerprint()
        .assert_same(&vol_before, "after the rollback under act");
    // Its safety backup went to the same bucket: two complete backups there now.
    let manifests = s3
        .keys()
        .into_iter()
        .filter(|k| k.ends_with(FILE_NAME))
        .count();
    assert_eq!(manifests, 2, "{:?}", s3.keys());
}
