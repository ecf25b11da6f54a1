//! Durable destinations (issue 10) against a real S3-compatible server (SeaweedFS, started
//! per test on 127.0.0.1), a real PostgreSQL and real Docker volumes, checked the way a user
//! checks them: what the bucket holds, the step's exit code, outputs and messages, and after
//! a rollback from the bucket alone the database's content checksums and the volume tree.
//!
//! - [`s3_round_trip_survives_a_wiped_workspace`]
//! - [`s3_encrypted_backup_is_verifiable_without_the_identity_and_restores_only_with_it`]
//! - [`wrong_secret_fails_with_exit_3_naming_the_variable_never_the_secret`]
//! - [`missing_bucket_is_a_clear_error_and_nothing_is_made`]
//! - [`url_with_credentials_is_refused`]
//! - [`tampered_object_is_refused_before_anything_changes`]
//! - [`server_killed_mid_upload_leaves_no_manifest_and_keeps_the_local_copy`]
//! - [`two_concurrent_backups_to_one_destination_never_interleave`]
//! - [`without_a_destination_the_summary_says_the_backup_will_not_outlive_the_workspace`]

use std::sync::Arc;
use std::time::{Duration, Instant};

use predeploy_backup::manifest::{Manifest, FILE_NAME, POINTER_FILE};

use crate::support::action::Action;
use crate::support::age::{age_decrypt_bytes, assert_secret_nowhere, keygen};
use crate::support::docker::{Container, Pg, TreeSpec, Volume};
use crate::support::fixtures::gunzip;
use crate::support::rollback_db;
use crate::support::seaweed::{Seaweed, ACCESS_KEY, SECRET_KEY};
use crate::support::{Outcome, Workspace};

const BUCKET: &str = "deploy-backups";
const PREFIX: &str = "prod/app";

/// The S3 settings of a step: destination, endpoint, keys in the environment.
fn with_s3(a: Action, s: &Seaweed) -> Action {
    a.input("destination", format!("s3://{}/{PREFIX}", s.bucket))
        .input("s3-endpoint", s.endpoint())
        .env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
        .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
}

/// Everything the step wrote except the `::add-mask::` commands (which hand the secret to
/// the runner so that it hides it everywhere).
fn text_but_masks(o: &Outcome) -> String {
    o.all_text()
        .lines()
        .filter(|l| !l.starts_with("::add-mask::"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn assert_no_secret(o: &Outcome) {
    assert!(
        !text_but_masks(o).contains(SECRET_KEY),
        "the secret appears in the step's output:\n{o}"
    );
}

/// Keys of complete backups' manifests in the bucket.
fn manifests(s: &Seaweed) -> Vec<String> {
    s.keys()
        .into_iter()
        .filter(|k| k.ends_with(FILE_NAME))
        .collect()
}

/// Wipes the workspace as `actions/checkout` (`git clean -ffdx`) does on a self-hosted runner.
fn wipe(ws: &Workspace) {
    for e in std::fs::read_dir(ws.path()).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            std::fs::remove_dir_all(&p).unwrap();
        } else {
            std::fs::remove_file(&p).unwrap();
        }
    }
    assert!(ws.pointer().is_none());
}

#[test]
fn s3_round_trip_survives_a_wiped_workspace() {
    let test = "dest-roundtrip";
    let s3 = Seaweed::start(BUCKET);
    let (pg, vol) = std::thread::scope(|s| {
        let pg = s.spawn(|| Pg::seeded(test));
        let vol = Volume::with_tree(test, &TreeSpec::awkward());
        (pg.join().unwrap(), vol)
    });
    let app = Container::sleeper(
        &format!("{test}-app"),
        &[&format!("{}:/data", vol.name)],
        &["--init"],
    );
    let db_before = rollback_db::fingerprint(&pg);
    let vol_before = vol.fingerprint();
    let ws = Workspace::new();

    let o = with_s3(ws.action("backup"), &s3)
        .input("postgres-container", pg.name())
        .input("postgres-db", &pg.db)
        .input("postgres-user", &pg.user)
        .input("postgres-password", &pg.password)
        .input("volumes", &vol.name)
        .input("stop-containers", &app.name)
        .run();
    o.assert_code(0);
    assert_eq!(o.out("verified"), "true", "{o}");
    assert_no_secret(&o);
    let folder_url = o.out("destination-url").to_string();
    let prefix = format!("s3://{BUCKET}/{PREFIX}/pre-deployment-");
    assert!(folder_url.starts_with(&prefix), "{folder_url}");
    let folder = folder_url.rsplit('/').next().unwrap().to_string();
    assert!(o.out("db-backup-url").starts_with(&folder_url), "{o}");
    assert!(o.out("volume-backup-urls").starts_with(&folder_url), "{o}");
    // The bucket holds the files, byte for byte the local ones, and the manifest.
    let keys = s3.keys();
    let local = ws.join(o.out("backup-dir"));
    let m = Manifest::load(&local.join(FILE_NAME)).unwrap();
    assert_eq!(m.destination.as_deref(), Some(folder_url.as_str()));
    for f in m.files() {
        let key = format!("{PREFIX}/{folder}/{}", f.path);
        assert!(keys.contains(&key), "{key} not in {keys:?}");
        assert_eq!(
            predeploy_backup::archive::hash::sha256_hex(&s3.object(&key)),
            f.sha256
        );
    }
    let stored = s3.object(&format!("{PREFIX}/{folder}/{FILE_NAME}"));
    let stored = String::from_utf8(stored).unwrap();
    assert!(!stored.contains(SECRET_KEY) && !stored.contains(ACCESS_KEY));
    assert!(stored.contains(&folder_url));
    assert!(o.summary_text().contains(&folder_url), "{o}");

    // The next checkout wipes the workspace; a bad deploy changes everything.
    wipe(&ws);
    pg.psql(
        "DELETE FROM public.events WHERE id > 100; UPDATE public.customers SET name = 'changed'",
    );
    let out = app.exec(&["sh", "-c", "rm -rf /data/deep && echo new > /data/new.txt"]);
    assert!(out.status.success());
    assert_ne!(rollback_db::fingerprint(&pg), db_before);

    // Rollback from the bucket alone, by run id.
    let r = with_s3(ws.action("rollback"), &s3)
        .input("run-id", "4242")
        .input("postgres-container", pg.name())
        .input("postgres-password", &pg.password)
        .input("volumes", &vol.name)
        .input("stop-containers", &app.name)
        .input("restore-special-bits", "true")
        .run();
    r.assert_code(0);
    assert_eq!(r.out("restored"), "true", "{r}");
    assert_no_secret(&r);
    rollback_db::fingerprint(&pg).assert_same(&db_before, "after the rollback from S3");
    vol.fingerprint()
        .assert_same(&vol_before, "after the rollback from S3");
    // The safety backup went to the same bucket: two complete backups now.
    assert_eq!(manifests(&s3).len(), 2, "{:?}", s3.keys());

    // info lists them from the bucket alone, with a ready-to-run rollback command.
    wipe(&ws);
    let i = with_s3(ws.action("info"), &s3).run();
    i.assert_code(0);
    i.assert_mentions(&folder).assert_mentions("--run-id 4242");
}

/// Encrypted backups (issue 14) through S3: the bucket holds only `….age` objects, which the
/// reference `age -d` opens; their SHA-256 (the read-back's, and `verify`'s on a copy of the
/// bucket) needs no key; a rollback from the bucket alone is refused without the identity
/// (exit 2, nothing touched, nothing stored) and restores identical tables and tree with it.
#[test]
fn s3_encrypted_backup_is_verifiable_without_the_identity_and_restores_only_with_it() {
    let test = "dest-encrypted";
    let s3 = Seaweed::start(BUCKET);
    let (pg, vol) = std::thread::scope(|s| {
        let pg = s.spawn(|| Pg::seeded(test));
        let vol = Volume::with_tree(test, &TreeSpec::awkward());
        (pg.join().unwrap(), vol)
    });
    let key = keygen("ops");
    let db_before = rollback_db::fingerprint(&pg);
    let vol_before = vol.fingerprint();
    let ws = Workspace::new();

    let o = with_s3(ws.action("backup"), &s3)
        .input("postgres-container", pg.name())
        .input("postgres-db", &pg.db)
        .input("postgres-user", &pg.user)
        .input("postgres-password", &pg.password)
        .input("volumes", &vol.name)
        .input("encrypt-recipients", &key.public)
        .run();
    o.assert_code(0);
    assert_eq!(o.out("verified"), "true", "{o}");
    assert_no_secret(&o);
    let folder_url = o.out("destination-url").to_string();
    let folder = folder_url.rsplit('/').next().unwrap().to_string();
    assert!(o.out("db-backup-url").ends_with(".sql.gz.age"), "{o}");
    assert!(o.out("volume-backup-urls").ends_with(".tar.gz.age"), "{o}");

    // The bucket holds the encrypted files only, byte for byte what the manifest records.
    let local = ws.join(o.out("backup-dir"));
    let m = Manifest::load(&local.join(FILE_NAME)).unwrap();
    let in_folder: Vec<String> = s3
        .keys()
        .into_iter()
        .filter(|k| k.starts_with(&format!("{PREFIX}/{folder}/")) && !k.ends_with(FILE_NAME))
        .collect();
    assert_eq!(in_folder.len(), 2, "{in_folder:?}");
    for f in m.files() {
        let k = format!("{PREFIX}/{folder}/{}", f.path);
        assert!(
            k.ends_with(".age") && in_folder.contains(&k),
            "{k} {in_folder:?}"
        );
        let bytes = s3.object(&k);
        assert!(bytes.starts_with(b"age-encryption.org/v1\n"), "{k}");
        assert_eq!(
            predeploy_backup::archive::hash::sha256_hex(&bytes),
            f.sha256
        );
    }
    // One downloaded object opens with the reference CLI: a complete dump.
    let db_key = format!(
        "{PREFIX}/{folder}/{}",
        m.database.as_ref().unwrap().file.path
    );
    let sql = gunzip(&age_decrypt_bytes(&key, &s3.object(&db_key)));
    assert!(String::from_utf8_lossy(&sql).contains("PostgreSQL database dump complete"));
    let stored = String::from_utf8(s3.object(&format!("{PREFIX}/{folder}/{FILE_NAME}"))).unwrap();
    assert!(
        stored.contains("encrypted: age") && stored.contains(&key.public),
        "{stored}"
    );

    // The workspace is wiped. Whoever holds a copy of the bucket but not the key can verify
    // it: `verify` without the identity checks each object's age header, size and SHA-256.
    wipe(&ws);
    let copy = ws.join("from-bucket").join(&folder);
    std::fs::create_dir_all(&copy).unwrap();
    for f in m.files() {
        let k = format!("{PREFIX}/{folder}/{}", f.path);
        std::fs::write(copy.join(&f.path), s3.object(&k)).unwrap();
    }
    let manifest_bytes = s3.object(&format!("{PREFIX}/{folder}/{FILE_NAME}"));
    std::fs::write(copy.join(FILE_NAME), manifest_bytes).unwrap();
    let db_name = &m.database.as_ref().unwrap().file.path;
    let vol_name = &m.volumes[0].file.path;
    let v = ws
        .action("verify")
        .input("db-backup", copy.join(db_name).display().to_string())
        .input("volume-backups", copy.join(vol_name).display().to_string())
        .without_env("PREDEPLOY_AGE_IDENTITY")
        .run();
    v.assert_code(0);
    assert_eq!(v.out("verified"), "true", "{v}");
    v.assert_mentions("not their content");
    wipe(&ws);

    // A bad deploy; a rollback from the bucket alone without the identity: exit 2, the
    // recipient named, nothing touched, nothing stored (no safety backup).
    pg.psql(
        "DELETE FROM public.events WHERE id > 100; UPDATE public.customers SET name = 'changed'",
    );
    let out = vol.busybox("rm -rf /data/deep && echo new > /data/new.txt", &[], false);
    assert!(out.status.success(), "{out:?}");
    let db_changed = rollback_db::fingerprint(&pg);
    let vol_changed = vol.fingerprint();
    assert_ne!(db_changed, db_before);
    let rollback = || {
        with_s3(ws.action("rollback"), &s3)
            .input("run-id", "4242")
            .input("postgres-container", pg.name())
            .input("postgres-password", &pg.password)
            .input("volumes", &vol.name)
            .input("restore-special-bits", "true")
            .without_env("PREDEPLOY_AGE_IDENTITY")
    };
    let no_key = rollback().run();
    no_key.assert_code(2);
    no_key
        .assert_mentions(&key.public)
        .assert_mentions("pass the matching identity in decrypt-identity");
    assert_eq!(no_key.out("restored"), "false");
    rollback_db::fingerprint(&pg).assert_same(&db_changed, "after a refused rollback");
    vol.fingerprint()
        .assert_same(&vol_changed, "after a refused rollback");
    assert_eq!(manifests(&s3).len(), 1, "{:?}", s3.keys());

    // With the identity: restored from the bucket alone.
    let r = rollback().input("decrypt-identity", &key.secret).run();
    r.assert_code(0);
    assert_eq!(r.out("restored"), "true", "{r}");
    assert_no_secret(&r);
    rollback_db::fingerprint(&pg).assert_same(&db_before, "after the rollback from S3");
    vol.fingerprint()
        .assert_same(&vol_before, "after the rollback from S3");
    // The safety backup went to the bucket encrypted too: no backup file in clear there.
    assert_eq!(manifests(&s3).len(), 2, "{:?}", s3.keys());
    let files: Vec<String> = s3
        .keys()
        .into_iter()
        .filter(|k| k.contains("/pre-deployment-") && !k.ends_with(FILE_NAME))
        .collect();
    assert_eq!(files.len(), 4, "{files:?}");
    assert!(files.iter().all(|k| k.ends_with(".age")), "{files:?}");
    assert_secret_nowhere(&key.secret, &[&r], &ws);
}

#[test]
fn wrong_secret_fails_with_exit_3_naming_the_variable_never_the_secret() {
    let s3 = Seaweed::start(BUCKET);
    let ws = Workspace::new();
    let wrong = "wrong-secret-ZZZ-0123456789";
    std::fs::create_dir_all(ws.join("site")).unwrap();
    std::fs::write(ws.join("site/index.html"), vec![b'x'; 4096]).unwrap();
    let o = with_s3(ws.action("backup"), &s3)
        .env("AWS_SECRET_ACCESS_KEY", wrong)
        .input("paths", "site")
        .run();
    o.assert_code(3);
    o.assert_mentions("AWS_ACCESS_KEY_ID");
    assert!(!text_but_masks(&o).contains(wrong), "{o}");
    assert_eq!(o.out("verified"), "false");
    assert!(manifests(&s3).is_empty());
}

#[test]
fn missing_bucket_is_a_clear_error_and_nothing_is_made() {
    let s3 = Seaweed::start_with(BUCKET, false);
    let ws = Workspace::new();
    std::fs::create_dir_all(ws.join("site")).unwrap();
    std::fs::write(ws.join("site/index.html"), vec![b'x'; 4096]).unwrap();
    let o = with_s3(ws.action("backup"), &s3)
        .input("paths", "site")
        .run();
    o.assert_code(3);
    o.assert_mentions("does not exist");
    assert!(ws.backup_folders("backups").is_empty(), "{o}");
}

#[test]
fn url_with_credentials_is_refused() {
    let ws = Workspace::new();
    let o = ws
        .action("backup")
        .input("destination", "s3://AKIAEXAMPLE:hunter2-secret@bucket/p")
        .input("paths", "site")
        .run();
    o.assert_code(2);
    o.assert_mentions("credentials");
    assert!(!o.all_text().contains("hunter2-secret"), "{o}");
}

#[test]
fn tampered_object_is_refused_before_anything_changes() {
    let test = "dest-tamper";
    let s3 = Seaweed::start(BUCKET);
    let vol = Volume::with_tree(test, &TreeSpec::awkward());
    let ws = Workspace::new();
    let o = with_s3(ws.action("backup"), &s3)
        .input("volumes", &vol.name)
        .run();
    o.assert_code(0);
    let url = o.out("volume-backup-urls").to_string();
    let key = url
        .strip_prefix(&format!("s3://{BUCKET}/"))
        .unwrap()
        .to_string();
    let mut bytes = s3.object(&key);
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x55;
    s3.tamper(&key, &bytes);
    // The volume changes after the backup; a refused rollback must leave it so.
    let out = crate::support::docker::docker_ok(&[
        "run",
        "--rm",
        "-v",
        &format!("{}:/data", vol.name),
        crate::support::docker::BUSYBOX,
        "sh",
        "-c",
        "echo after > /data/after.txt",
    ]);
    let _ = out;
    let changed = vol.fingerprint();
    wipe(&ws);
    let r = with_s3(ws.action("rollback"), &s3)
        .input("run-id", "4242")
        .input("volumes", &vol.name)
        .run();
    r.assert_code(1);
    r.assert_mentions("sha256");
    assert_eq!(r.out("restored"), "false");
    vol.fingerprint()
        .assert_same(&changed, "after a refused rollback");
    // Nothing was added to the bucket (no safety backup: nothing was going to change).
    assert_eq!(manifests(&s3).len(), 1);
}

#[test]
fn server_killed_mid_upload_leaves_no_manifest_and_keeps_the_local_copy() {
    let test = "dest-killed";
    let mut s3 = Seaweed::start(BUCKET);
    let vol = Volume::with_tree(test, &TreeSpec::random(400));
    let ws: Arc<Workspace> = Workspace::new();
    let mut running = with_s3(ws.action("backup"), &s3)
        .input("volumes", &vol.name)
        .input("compression", "none")
        .input("min-volume-size", "1")
        .spawn();
    // Kill the server once the multipart upload is under way.
    let deadline = Instant::now() + Duration::from_secs(240);
    loop {
        let uploading = s3
            .filer_get(&format!("/buckets/{BUCKET}/.uploads/"))
            .is_some_and(|(code, body)| {
                code == 200 && String::from_utf8_lossy(&body).contains("FullPath")
            });
        if uploading {
            std::thread::sleep(Duration::from_millis(200));
            s3.kill();
            break;
        }
        assert!(
            running.is_running(),
            "the backup ended before the upload began"
        );
        assert!(Instant::now() < deadline, "no multipart upload started");
        std::thread::sleep(Duration::from_millis(50));
    }
    let o = running.wait();
    o.assert_code(3);
    assert_eq!(o.out("verified"), "false");
    o.assert_mentions("local copy is kept");
    // The local copy is there, whole, and named in the error.
    let folders = ws.backup_folders("backups");
    assert_eq!(folders.len(), 1, "{o}");
    o.assert_mentions(&folders[0]);
    // Not a restore point: no pointer to it.
    assert!(!ws.join(POINTER_FILE).exists(), "{o}");
    // Restarted on the same data: no manifest, no completed volume object.
    let s3 = Seaweed::restart(s3);
    let keys = s3.keys();
    assert!(
        keys.iter()
            .all(|k| !k.ends_with(FILE_NAME) && !k.contains("volume_")),
        "{keys:?}"
    );
}

#[test]
fn two_concurrent_backups_to_one_destination_never_interleave() {
    let test = "dest-concurrent";
    let s3 = Seaweed::start(BUCKET);
    let vol = Volume::with_tree(test, &TreeSpec::random(150));
    let ws_a = Workspace::new();
    let ws_b = Workspace::new();
    let backup = |ws: &Arc<Workspace>| {
        with_s3(ws.action("backup"), &s3)
            .input("volumes", &vol.name)
            .input("compression", "none")
            .input("min-volume-size", "1")
    };
    let mut a = backup(&ws_a).spawn();
    // B starts once A holds the lease.
    let deadline = Instant::now() + Duration::from_secs(120);
    while !s3
        .keys()
        .iter()
        .any(|k| k == &format!("{PREFIX}/predeploy-backup.lock"))
    {
        assert!(a.is_running(), "A ended before it took the lock");
        assert!(Instant::now() < deadline, "A never took the lock");
        std::thread::sleep(Duration::from_millis(50));
    }
    let b = backup(&ws_b).spawn();
    let (oa, ob) = (a.wait(), b.wait());
    oa.assert_code(0);
    ob.assert_code(0);
    ob.assert_mentions("Waiting for the lock");
    // Two complete backups, in two folders; B made its backup only after A had released.
    let a_url = oa.out("destination-url").to_string();
    let b_url = ob.out("destination-url").to_string();
    assert_ne!(a_url, b_url);
    let created = |ws: &Workspace, o: &Outcome| {
        Manifest::load(&ws.join(o.out("backup-dir")).join(FILE_NAME))
            .unwrap()
            .created_at
    };
    let a_done = std::fs::metadata(ws_a.join(oa.out("backup-dir")).join(FILE_NAME))
        .unwrap()
        .modified()
        .unwrap();
    assert!(
        chrono::DateTime::<chrono::Utc>::from(a_done) <= created(&ws_b, &ob),
        "B started its backup before A had committed its manifest"
    );
    assert_eq!(manifests(&s3).len(), 2, "{:?}", s3.keys());
    // The lease is gone at the end.
    assert!(!s3
        .keys()
        .iter()
        .any(|k| k.ends_with("predeploy-backup.lock")));
}

#[test]
fn without_a_destination_the_summary_says_the_backup_will_not_outlive_the_workspace() {
    let ws = Workspace::new();
    std::fs::create_dir_all(ws.join("site")).unwrap();
    std::fs::write(ws.join("site/index.html"), vec![b'x'; 4096]).unwrap();
    // 4 KiB of one byte compresses below the default minimum archive size.
    let o = ws
        .action("backup")
        .input("paths", "site")
        .input("min-volume-size", "1")
        .run();
    o.assert_code(0);
    let summary = o.summary_text();
    assert!(
        summary.contains("will not outlive") || summary.contains("lives only in the workspace"),
        "{o}"
    );
    assert!(summary.contains("destination"), "{o}");
    assert!(
        !o.output_names().contains(&"destination-url".to_string()),
        "{o}"
    );
}
