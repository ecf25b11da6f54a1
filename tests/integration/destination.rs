//! Durable destinations (issue 10) against a real S3-compatible server (SeaweedFS, started
//! per test on 127.0.0.1), a real Docker volume and a real host folder (through the engine),
//! a real PostgreSQL and real Docker volumes, checked the way a user
//! checks them: what the bucket holds, the step's exit code, outputs and messages, and after
//! a rollback from the bucket alone the database's content checksums and the volume tree.
//!
//! - [`s3_round_trip_survives_a_wiped_workspace`], and the same through `volume://`
//!   ([`volume_round_trip_survives_a_wiped_workspace`]) and `host://`
//!   ([`host_folder_round_trip_survives_a_wiped_workspace`])
//! - [`missing_destination_volume_is_exit_2_naming_the_command_that_creates_it`]
//! - [`tampered_object_in_a_volume_is_refused_before_anything_changes`]
//! - [`s3_encrypted_backup_is_verifiable_without_the_identity_and_restores_only_with_it`]
//! - [`wrong_secret_fails_with_exit_3_naming_the_variable_never_the_secret`]
//! - [`missing_bucket_is_a_clear_error_and_nothing_is_made`]
//! - [`url_with_credentials_is_refused`]
//! - [`tampered_object_is_refused_before_anything_changes`]
//! - [`server_killed_mid_upload_leaves_no_manifest_and_keeps_the_local_copy`], and while a
//!   later file is still being made
//!   ([`server_killed_while_a_later_file_is_made_keeps_the_local_backup_and_leaves_nothing`])
//! - [`two_concurrent_backups_to_one_destination_never_interleave`], and the same started at
//!   one moment through `volume://` ([`two_backups_at_once_to_one_volume_never_interleave`])
//!   and `host://` ([`two_backups_at_once_to_one_host_folder_never_interleave`])
//! - [`engine_lease_is_renewed_and_an_expired_one_is_taken_over_by_one_run`]
//! - [`a_failed_backup_gives_the_lease_back_and_the_next_one_does_not_wait`], and
//!   [`rollback_waits_for_the_destination_lease_before_stopping_anything`]
//! - [`verify_checks_a_backup_in_the_bucket_and_changes_nothing`]
//! - [`verify_refuses_a_zst_file_recorded_as_gzip_and_a_gz_file_recorded_as_zstd`]
//! - [`link_leaving_the_volume_is_warned_at_backup_and_refused_at_rollback`]
//! - [`without_a_destination_the_summary_says_the_backup_will_not_outlive_the_workspace`]
//! - [`retention_in_the_bucket_follows_the_manifests_dates`]
//! - [`retention_clears_the_incomplete_upload_of_a_killed_run`]
//! - [`hostile_names_round_trip_through_the_bucket`]

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

/// One object's bytes, by key.
type ReadObject<'a> = Box<dyn Fn(&str) -> Vec<u8> + 'a>;

/// A durable destination as a round trip sees it.
struct Dest<'a> {
    /// Sets the destination inputs of a step.
    apply: Box<dyn Fn(Action) -> Action + 'a>,
    /// Its URL, as the outputs name it (`s3://BUCKET/PREFIX`, `volume://NAME/PREFIX`, ...).
    url: String,
    /// Every object's key, relative to `url`, read with a tool of our own (not the product).
    keys: Box<dyn Fn() -> Vec<String> + 'a>,
    /// One object's bytes, by key relative to `url`.
    object: ReadObject<'a>,
}

impl Dest<'_> {
    fn manifests(&self) -> Vec<String> {
        (self.keys)()
            .into_iter()
            .filter(|k| k.ends_with(FILE_NAME))
            .collect()
    }
}

fn s3_dest(s3: &Seaweed) -> Dest<'_> {
    let in_prefix = |k: String| k.strip_prefix(&format!("{PREFIX}/")).map(String::from);
    Dest {
        apply: Box::new(move |a| with_s3(a, s3)),
        url: format!("s3://{}/{PREFIX}", s3.bucket),
        keys: Box::new(move || s3.keys().into_iter().filter_map(in_prefix).collect()),
        object: Box::new(move |k| s3.object(&format!("{PREFIX}/{k}"))),
    }
}

/// Every file under `dir` of a Docker volume, relative to it, listed by busybox `find`.
fn volume_keys(volume: &str, dir: &str) -> Vec<String> {
    let out = crate::support::docker::busybox_run(
        &[format!("{volume}:/data:ro")],
        &format!("cd /data/{dir} 2>/dev/null || exit 0; find . -type f"),
    );
    assert!(out.status.success(), "{out:?}");
    let mut keys: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.trim_start_matches("./").to_string())
        .collect();
    keys.sort();
    keys
}

fn volume_object(volume: &str, path: &str) -> Vec<u8> {
    let out = crate::support::docker::busybox_run(
        &[format!("{volume}:/data:ro")],
        &format!("cat '/data/{path}'"),
    );
    assert!(out.status.success(), "cat {path} in {volume}: {out:?}");
    out.stdout
}

fn volume_dest(volume: &str) -> Dest<'_> {
    let url = format!("volume://{volume}/{PREFIX}");
    Dest {
        apply: Box::new({
            let url = url.clone();
            move |a| a.input("destination", url.clone())
        }),
        url,
        keys: Box::new(move || volume_keys(volume, PREFIX)),
        object: Box::new(move |k| volume_object(volume, &format!("{PREFIX}/{k}"))),
    }
}

/// A `host://` destination root for `test`: a folder that does not exist yet (the engine
/// store creates it) inside a fresh temporary folder on this machine, the Docker host (the
/// tests talk to a local engine). Keep the `TempDir`: dropping it removes the folder.
fn host_root(test: &str) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::Builder::new()
        .prefix(&format!("pbt-{test}-"))
        .tempdir()
        .unwrap();
    let root = dir.path().join("srv/backups");
    (dir, root)
}

/// A folder on the Docker host (this machine: the tests talk to a local engine), read
/// directly from the host's file system.
fn host_dest(dir: &std::path::Path) -> Dest<'_> {
    let url = format!("host://{}", dir.display());
    let walk = move || {
        let mut keys = vec![];
        let mut stack = vec![dir.to_path_buf()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
                let p = e.path();
                if p.is_dir() {
                    stack.push(p);
                } else {
                    keys.push(p.strip_prefix(dir).unwrap().to_string_lossy().to_string());
                }
            }
        }
        keys.sort();
        keys
    };
    Dest {
        apply: Box::new({
            let url = url.clone();
            move |a| a.input("destination", url.clone())
        }),
        url,
        keys: Box::new(walk),
        object: Box::new(move |k| std::fs::read(dir.join(k)).unwrap()),
    }
}

/// Backup to `d` → the workspace wiped as checkout would → a bad deploy → rollback by run
/// id from the destination alone → tables (content checksums) and the volume tree (owners,
/// modes, links) identical; then `info` from the destination alone.
fn round_trip(test: &str, d: &Dest) {
    let (pg, vol) = Pg::seeded_with_volume(test, &TreeSpec::awkward());
    let app = Container::sleeper(
        &format!("{test}-app"),
        &[&format!("{}:/data", vol.name)],
        &["--init"],
    );
    let db_before = rollback_db::fingerprint(&pg);
    let vol_before = vol.fingerprint();
    let ws = Workspace::new();

    let o = (d.apply)(ws.action("backup"))
        .postgres(&pg)
        .input("volumes", &vol.name)
        .input("stop-containers", &app.name)
        .run();
    o.assert_code(0);
    assert_eq!(o.out("verified"), "true", "{o}");
    assert_no_secret(&o);
    let folder_url = o.out("destination-url").to_string();
    let prefix = format!("{}/pre-deployment-", d.url);
    assert!(folder_url.starts_with(&prefix), "{folder_url}");
    let folder = folder_url.rsplit('/').next().unwrap().to_string();
    assert!(o.out("db-backup-url").starts_with(&folder_url), "{o}");
    assert!(o.out("volume-backup-urls").starts_with(&folder_url), "{o}");
    // The destination holds the files, byte for byte the local ones, and the manifest.
    let keys = (d.keys)();
    let local = ws.join(o.out("backup-dir"));
    let m = Manifest::load(&local.join(FILE_NAME)).unwrap();
    assert_eq!(m.destination.as_deref(), Some(folder_url.as_str()));
    for f in m.files() {
        let key = format!("{folder}/{}", f.path);
        assert!(keys.contains(&key), "{key} not in {keys:?}");
        assert_eq!(
            predeploy_backup::archive::hash::sha256_hex(&(d.object)(&key)),
            f.sha256
        );
    }
    let stored = (d.object)(&format!("{folder}/{FILE_NAME}"));
    let stored = String::from_utf8(stored).unwrap();
    assert!(!stored.contains(SECRET_KEY) && !stored.contains(ACCESS_KEY));
    assert!(stored.contains(&folder_url));
    assert!(o.summary_text().contains(&folder_url), "{o}");
    // Nothing but the backup is left there: no temporary file, no lease.
    assert_eq!(
        keys.len(),
        m.files().len() + 1,
        "more than the backup's files and its manifest: {keys:?}"
    );

    // The next checkout wipes the workspace; a bad deploy changes everything.
    wipe(&ws);
    pg.psql(
        "DELETE FROM public.events WHERE id > 100; UPDATE public.customers SET name = 'changed'",
    );
    let out = app.exec(&["sh", "-c", "rm -rf /data/deep && echo new > /data/new.txt"]);
    assert!(out.status.success());
    assert_ne!(rollback_db::fingerprint(&pg), db_before);

    // Rollback from the destination alone, by run id.
    let r = (d.apply)(ws.action("rollback"))
        .input("run-id", "4242")
        .postgres_target(&pg)
        .input("volumes", &vol.name)
        .input("stop-containers", &app.name)
        .input("restore-special-bits", "true")
        .run();
    r.assert_code(0);
    assert_eq!(r.out("restored"), "true", "{r}");
    assert_no_secret(&r);
    rollback_db::fingerprint(&pg)
        .assert_same(&db_before, "after the rollback from the destination");
    vol.fingerprint()
        .assert_same(&vol_before, "after the rollback from the destination");
    // The safety backup went to the same destination: two complete backups now.
    assert_eq!(d.manifests().len(), 2, "{:?}", (d.keys)());

    // info lists them from the destination alone, with a ready-to-run rollback command.
    wipe(&ws);
    let i = (d.apply)(ws.action("info")).run();
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
    let (pg, vol) = Pg::seeded_with_volume(test, &TreeSpec::awkward());
    let key = keygen("ops");
    let db_before = rollback_db::fingerprint(&pg);
    let vol_before = vol.fingerprint();
    let ws = Workspace::new();

    let o = with_s3(ws.action("backup"), &s3)
        .postgres(&pg)
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
            .postgres_target(&pg)
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
fn s3_round_trip_survives_a_wiped_workspace() {
    let s3 = Seaweed::start(BUCKET);
    round_trip("dest-roundtrip", &s3_dest(&s3));
}

/// Helper containers of the engine store that mount `source` (none once a run has ended:
/// the engine removes them when the run's process goes away).
fn store_helpers(source: &str) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let out = crate::support::docker::docker_ok(&[
            "ps",
            "-aq",
            "--filter",
            "label=org.predeploy-backup.helper",
            "--filter",
            &format!("volume={source}"),
        ]);
        let ids: Vec<String> = out.split_whitespace().map(String::from).collect();
        if ids.is_empty() || Instant::now() > deadline {
            return ids;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn volume_round_trip_survives_a_wiped_workspace() {
    let store = Volume::create("dest-vol-store");
    round_trip("dest-vol-roundtrip", &volume_dest(&store.name));
    assert!(
        store_helpers(&store.name).is_empty(),
        "a helper container was left behind"
    );
}

#[test]
fn host_folder_round_trip_survives_a_wiped_workspace() {
    let (_dir, root) = host_root("dest-host-roundtrip");
    round_trip("dest-host-roundtrip", &host_dest(&root));
}

#[test]
fn missing_destination_volume_is_exit_2_naming_the_command_that_creates_it() {
    let ws = Workspace::new();
    std::fs::create_dir_all(ws.join("site")).unwrap();
    std::fs::write(ws.join("site/index.html"), vec![b'x'; 4096]).unwrap();
    let name = crate::support::docker::unique_name("dest-no-vol");
    let o = ws
        .action("backup")
        .input("destination", format!("volume://{name}/app"))
        .input("paths", "site")
        .run();
    o.assert_code(2);
    o.assert_mentions(&format!("docker volume create {name}"));
    assert_eq!(o.out("verified"), "false", "{o}");
    // Nothing was made: no backup, and no volume created behind the user's back.
    assert!(ws.backup_folders("backups").is_empty(), "{o}");
    let inspect = crate::support::docker::docker(&["volume", "inspect", &name]);
    assert!(!inspect.status.success(), "the volume {name} was created");
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
fn tampered_object_in_a_volume_is_refused_before_anything_changes() {
    let test = "dest-vol-tamper";
    let store = Volume::create("dest-vol-tamper-store");
    let d = volume_dest(&store.name);
    let vol = Volume::with_tree(test, &TreeSpec::awkward());
    let ws = Workspace::new();
    let o = (d.apply)(ws.action("backup"))
        .input("volumes", &vol.name)
        .run();
    o.assert_code(0);
    let url = o.out("volume-backup-urls").to_string();
    let key = url
        .strip_prefix(&format!("volume://{}/", store.name))
        .unwrap();
    // Eight bytes overwritten in the middle of the archive, in the destination volume.
    let out = store.busybox(
        &format!(
            "f='/data/{key}'; n=$(stat -c %s \"$f\"); printf 'ZZZZZZZZ' | dd of=\"$f\" bs=1 seek=$((n / 2)) conv=notrunc"
        ),
        &[],
        false,
    );
    assert!(out.status.success(), "{out:?}");
    vol.busybox("echo after > /data/after.txt", &[], false);
    let changed = vol.fingerprint();
    wipe(&ws);
    let r = (d.apply)(ws.action("rollback"))
        .input("run-id", "4242")
        .input("volumes", &vol.name)
        .run();
    r.assert_code(1);
    r.assert_mentions("sha256");
    assert_eq!(r.out("restored"), "false");
    vol.fingerprint()
        .assert_same(&changed, "after a refused rollback");
    assert_eq!(d.manifests().len(), 1, "{:?}", (d.keys)());
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

/// The server dies while a later file is still being made: the dump is already stored (a
/// complete object) and the volume's upload is under way while the volume is archived. The
/// server comes back before the run ends. The local backup goes on to its end, complete and
/// verified; the step fails (exit 3, verified=false) naming it; the bucket keeps nothing of
/// this run: no manifest, no object (the stored dump is removed), no incomplete upload.
#[test]
fn server_killed_while_a_later_file_is_made_keeps_the_local_backup_and_leaves_nothing() {
    let test = "dest-killed-later";
    let mut s3 = Seaweed::start(BUCKET);
    // Big enough that archiving it takes seconds after its upload began, on a quiet machine
    // too (at about 200 MB/s, 500 MiB was done within the wait below).
    let (pg, vol) = Pg::seeded_with_volume(test, &TreeSpec::random(1200));
    let ws: Arc<Workspace> = Workspace::new();
    let mut running = with_s3(ws.action("backup"), &s3)
        .postgres(&pg)
        .input("volumes", &vol.name)
        .input("min-volume-size", "1")
        .spawn();
    let ours = |s: &Seaweed| -> Vec<String> {
        s.keys()
            .into_iter()
            .filter(|k| k.starts_with(&format!("{PREFIX}/pre-deployment-")))
            .collect()
    };
    let deadline = Instant::now() + Duration::from_secs(240);
    loop {
        let dump_stored = ours(&s3).iter().any(|k| k.contains("/db_"));
        if dump_stored && s3.incomplete_uploads() > 0 {
            break;
        }
        assert!(
            running.is_running(),
            "the backup ended before the volume's upload began"
        );
        assert!(
            Instant::now() < deadline,
            "the dump was not stored or the volume's upload did not start: {:?}",
            s3.keys()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    s3.kill();
    // Long enough for the upload's retries to give up (3 retries, backoff from 100 ms): it
    // fails, and is not resumed.
    std::thread::sleep(Duration::from_millis(2000));
    // The run is frozen while the server starts again, so that it comes back before the
    // run ends whatever the machine's speed; the volume must still be being made.
    let signal = |sig: &str| {
        let status = std::process::Command::new("kill")
            .args([sig, &running.pid().to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill {sig}");
    };
    signal("-STOP");
    let making = ws
        .backup_folders("backups")
        .iter()
        .any(|f| f.starts_with(".pre-deployment-") && f.ends_with(".partial"));
    if !making {
        signal("-CONT");
    }
    assert!(
        making,
        "the volume was archived within 3 s of its upload's start: make it bigger"
    );
    let s3 = Seaweed::restart(s3);
    signal("-CONT");
    let o = running.wait();
    o.assert_code(3);
    assert_eq!(o.out("verified"), "false", "{o}");
    o.assert_mentions("local copy is kept");
    // The local backup is complete and verified, and named in the error.
    let folders = ws.backup_folders("backups");
    assert_eq!(folders.len(), 1, "{o}");
    assert!(folders[0].starts_with("pre-deployment-"), "{folders:?}");
    o.assert_mentions(&folders[0]);
    let local = ws.join("backups").join(&folders[0]);
    let m = Manifest::load(&local.join(FILE_NAME)).unwrap();
    assert!(m.verified, "{o}");
    assert_eq!(m.destination, None, "{o}");
    assert!(m.database.is_some() && m.volumes.len() == 1, "{o}");
    for f in m.files() {
        let bytes = std::fs::read(local.join(&f.path)).unwrap();
        assert_eq!(bytes.len() as u64, f.size, "{}", f.path);
        assert_eq!(
            predeploy_backup::archive::hash::sha256_hex(&bytes),
            f.sha256,
            "{}",
            f.path
        );
    }
    let dump = gunzip(&std::fs::read(local.join(&m.database.as_ref().unwrap().file.path)).unwrap());
    assert!(
        String::from_utf8_lossy(&dump).contains("PostgreSQL database dump complete"),
        "the local dump is not whole"
    );
    assert!(!ws.join(POINTER_FILE).exists(), "{o}");
    // Nothing of this run in the bucket: not the dump stored before the failure, not the
    // volume, no manifest, no incomplete upload.
    assert_eq!(ours(&s3), Vec::<String>::new(), "{o}");
    assert_eq!(s3.incomplete_uploads(), 0, "{o}");
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

/// A backup that fails after it took the destination's lease gives the lease back: the
/// retry (the user's next push, minutes later) starts at once instead of waiting for the
/// failed run's lease to expire.
#[test]
fn a_failed_backup_gives_the_lease_back_and_the_next_one_does_not_wait() {
    let s3 = Seaweed::start(BUCKET);
    let ws = Workspace::new();
    std::fs::create_dir_all(ws.join("site")).unwrap();
    std::fs::write(ws.join("site/index.html"), vec![b'x'; 4096]).unwrap();
    let lock_key = format!("{PREFIX}/predeploy-backup.lock");
    // Fails in its own checks, after the lease was taken (the archive is below the minimum).
    let o = with_s3(ws.action("backup"), &s3)
        .input("paths", "site")
        .input("min-volume-size", "100000000")
        .run();
    o.assert_code(1);
    o.assert_mentions("min-volume-size");
    assert!(
        !s3.keys().contains(&lock_key),
        "the failed run left its lease: {:?}\n{o}",
        s3.keys()
    );
    assert!(manifests(&s3).is_empty(), "{:?}", s3.keys());
    let o = with_s3(ws.action("backup"), &s3)
        .input("paths", "site")
        .input("min-volume-size", "1")
        .run();
    o.assert_code(0);
    assert!(
        !o.all_text().contains("Waiting for the lock"),
        "the next run waited for the failed run's lease\n{o}"
    );
    assert_eq!(manifests(&s3).len(), 1, "{:?}", s3.keys());
}

/// A rollback from a destination sends its safety backup there under the destination's
/// lease, and takes it before it stops anything: while another run holds it, the app keeps
/// running and nothing changes; once it is released the rollback goes on, restores, and
/// gives the lease back.
#[test]
fn rollback_waits_for_the_destination_lease_before_stopping_anything() {
    let test = "dest-rb-lease";
    let s3 = Seaweed::start(BUCKET);
    let vol = Volume::with_tree(test, &TreeSpec::random(40));
    let app = Container::sleeper(
        &format!("{test}-app"),
        &[&format!("{}:/data", vol.name)],
        &["--init"],
    );
    let ws = Workspace::new();
    let o = with_s3(ws.action("backup"), &s3)
        .input("volumes", &vol.name)
        .input("min-volume-size", "1")
        .input("stop-containers", &app.name)
        .run();
    o.assert_code(0);
    let before = vol.fingerprint();
    let out = app.exec(&["sh", "-c", "echo bad-deploy > /data/new.txt"]);
    assert!(out.status.success());
    let changed = vol.fingerprint();
    let started = app.started_at();

    // Another run (a backup of the next deploy) holds the lease.
    let lock_key = format!("{PREFIX}/predeploy-backup.lock");
    let until = chrono::Utc::now() + chrono::Duration::minutes(10);
    s3.put(
        &lock_key,
        format!(
            r#"{{"owner":"other-run","holder":"run 77 of acme/app","expires_at":"{}"}}"#,
            until.to_rfc3339()
        )
        .as_bytes(),
    );
    let mut r = with_s3(ws.action("rollback"), &s3)
        .input("run-id", "4242")
        .input("volumes", &vol.name)
        .input("stop-containers", &app.name)
        .spawn();
    std::thread::sleep(Duration::from_secs(4));
    assert!(r.is_running(), "the rollback did not wait for the lease");
    assert!(
        app.is_running(),
        "the app was stopped while the rollback waited"
    );
    assert_eq!(app.started_at(), started);
    vol.fingerprint()
        .assert_same(&changed, "while the rollback waited for the lease");
    assert_eq!(manifests(&s3).len(), 1, "{:?}", s3.keys());

    // The other run ends.
    s3.delete(&lock_key);
    let r = r.wait();
    r.assert_code(0);
    assert_eq!(r.out("restored"), "true", "{r}");
    r.assert_mentions("run 77 of acme/app");
    vol.fingerprint().assert_same(&before, "after the rollback");
    // The safety backup is stored there, and the lease given back.
    assert_eq!(manifests(&s3).len(), 2, "{:?}", s3.keys());
    assert!(!s3.keys().contains(&lock_key), "{:?}", s3.keys());
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

/// A small folder to back up (paths input), incompressible so it passes min-volume-size.
fn site(ws: &Workspace) {
    std::fs::create_dir_all(ws.join("site")).unwrap();
    let noise: Vec<u8> = (0..8192u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    std::fs::write(ws.join("site/index.html"), noise).unwrap();
}

/// Folders (`pre-deployment-…`) whose manifest is in the bucket, sorted.
fn backup_folders(s: &Seaweed) -> Vec<String> {
    manifests(s)
        .iter()
        .map(|k| {
            k.trim_start_matches(&format!("{PREFIX}/"))
                .trim_end_matches(&format!("/{FILE_NAME}"))
                .to_string()
        })
        .collect()
}

/// Copies the complete backup `from` in the bucket to a new folder whose manifest says it
/// was made `days` days ago (negative: in the future), verified or not, as the local
/// retention tests forge back-dated folders. Returns the new folder's name.
fn forge(s: &Seaweed, from: &str, days: i64, verified: bool) -> String {
    let created = chrono::Utc::now() - chrono::Duration::days(days);
    let folder = format!(
        "{}{}",
        predeploy_backup::manifest::DIR_PREFIX,
        predeploy_backup::manifest::timestamp(created)
    );
    let text = String::from_utf8(s.object(&format!("{PREFIX}/{from}/{FILE_NAME}"))).unwrap();
    let mut m = Manifest::parse(&text, std::path::Path::new(FILE_NAME)).unwrap();
    m.created_at = created;
    m.timestamp = predeploy_backup::manifest::timestamp(created);
    m.verified = verified;
    m.destination = Some(format!("s3://{BUCKET}/{PREFIX}/{folder}"));
    for f in m.files() {
        let bytes = s.object(&format!("{PREFIX}/{from}/{}", f.path));
        s.put(&format!("{PREFIX}/{folder}/{}", f.path), &bytes);
    }
    s.put(
        &format!("{PREFIX}/{folder}/{FILE_NAME}"),
        m.to_yaml().as_bytes(),
    );
    folder
}

/// Retention in the bucket, by the manifests' dates (back-dated copies of a real backup):
/// `retention-days` deletes the old ones, `keep-last` keeps the newest verified ones whatever
/// their age, never all of them, never the backup the run just made, and nothing that is not
/// a complete backup of ours.
#[test]
fn retention_in_the_bucket_follows_the_manifests_dates() {
    let s3 = Seaweed::start(BUCKET);
    let ws = Workspace::new();
    site(&ws);
    let backup = |retention: &str, keep: &str| {
        let o = with_s3(ws.action("backup"), &s3)
            .input("paths", "site")
            .input("retention-days", retention)
            .input("keep-last", keep)
            .run();
        o.assert_code(0);
        let url = o.out("destination-url").to_string();
        (o, url.rsplit('/').next().unwrap().to_string())
    };
    let (_, first) = backup("7", "3");
    let d9 = forge(&s3, &first, 9, true);
    let d10 = forge(&s3, &first, 10, true);
    let d20 = forge(&s3, &first, 20, true);
    let d30 = forge(&s3, &first, 30, true);
    let unverified = forge(&s3, &first, 8, false);
    // Not complete backups of ours: a folder without manifest (its objects are fresh, so it
    // may be a run in progress) and a foreign object.
    s3.put(
        &format!("{PREFIX}/pre-deployment-20200101_000000/db.sql.gz"),
        b"partial",
    );
    s3.put(&format!("{PREFIX}/other/file.txt"), b"not ours");
    std::thread::sleep(Duration::from_millis(1100)); // a new second, a new folder name

    // keep-last 3: the new one, the first and the 9-day-old one stay; the rest is older than
    // 7 days and goes, the unverified one too.
    let (o, second) = backup("7", "3");
    assert_eq!(backup_folders(&s3), {
        let mut v = vec![first.clone(), second.clone(), d9.clone()];
        v.sort();
        v
    });
    for gone in [&d10, &d20, &d30, &unverified] {
        assert!(
            !s3.keys().iter().any(|k| k.contains(gone.as_str())),
            "{gone} left objects behind: {:?}",
            s3.keys()
        );
    }
    o.assert_mentions(&format!("{d30}: deleted"));
    assert!(o.summary_text().contains(&d30), "{o}");
    let keys = s3.keys();
    assert!(keys.contains(&format!(
        "{PREFIX}/pre-deployment-20200101_000000/db.sql.gz"
    )));
    assert!(keys.contains(&format!("{PREFIX}/other/file.txt")));

    // prune mode, dry run: says, deletes nothing.
    let before = s3.keys();
    let p = with_s3(ws.action("prune"), &s3)
        .input("retention-days", "0")
        .input("keep-last", "0")
        .input("dry-run", "true")
        .run();
    p.assert_code(0);
    p.assert_mentions(&format!("{d9}: would delete"));
    assert_eq!(s3.keys(), before);

    // Everything is older than 0 days and keep-last is 0: never all, the newest stays.
    let p = with_s3(ws.action("prune"), &s3)
        .input("retention-days", "0")
        .input("keep-last", "0")
        .run();
    p.assert_code(0);
    assert_eq!(backup_folders(&s3), vec![second.clone()], "{p}");

    // A manifest that claims to be newer than anything (a clock ahead) cannot push out the
    // backup this run makes.
    let ahead = forge(&s3, &second, -1, true);
    std::thread::sleep(Duration::from_millis(1100));
    let (o, third) = backup("0", "0");
    let mut want = vec![ahead.clone(), third.clone()];
    want.sort();
    assert_eq!(backup_folders(&s3), want, "{o}");
    o.assert_mentions(&format!("{third}: kept (made by this run)"));
}

/// A run SIGKILLed mid-upload cannot abort its multipart upload: the parts stay in the
/// bucket, invisible to listings. Retention clears such uploads of ours once they are older
/// than the stale threshold (24 h; lowered here, as a test server cannot back-date an
/// upload) — and not before.
#[test]
fn retention_clears_the_incomplete_upload_of_a_killed_run() {
    let test = "dest-killed-run";
    let s3 = Seaweed::start(BUCKET);
    let vol = Volume::with_tree(test, &TreeSpec::random(64));
    let ws: Arc<Workspace> = Workspace::new();
    let mut running = with_s3(ws.action("backup"), &s3)
        .input("volumes", &vol.name)
        .input("compression", "none")
        .input("min-volume-size", "1")
        .spawn();
    let deadline = Instant::now() + Duration::from_secs(240);
    while s3.incomplete_uploads() == 0 {
        assert!(
            running.is_running(),
            "the backup ended before the upload began"
        );
        assert!(Instant::now() < deadline, "no multipart upload started");
        std::thread::sleep(Duration::from_millis(50));
    }
    let status = std::process::Command::new("kill")
        .args(["-KILL", &running.pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let _ = running.wait();
    // A killed run cannot remove its archive helper if it still had one (users find such
    // leftovers by the label); here the test removes it, or its volume would stay in use.
    let left = crate::support::docker::docker_ok(&[
        "ps",
        "-aq",
        "--filter",
        "label=org.predeploy-backup.helper",
        "--filter",
        &format!("volume={}", vol.name),
    ]);
    for id in left.split_whitespace() {
        crate::support::docker::docker_ok(&["rm", "-f", id]);
    }
    assert_eq!(s3.incomplete_uploads(), 1, "{:?}", s3.keys());
    assert!(manifests(&s3).is_empty());
    // The killed run's lease would expire in two minutes; the lease tests cover that, so
    // here it is removed as its expiry would.
    s3.delete(&format!("{PREFIX}/predeploy-backup.lock"));

    // A young upload (it could be a run's that is still going) is left alone.
    let site_ws = Workspace::new();
    site(&site_ws);
    let o = with_s3(site_ws.action("backup"), &s3)
        .input("paths", "site")
        .run();
    o.assert_code(0);
    assert_eq!(s3.incomplete_uploads(), 1, "{o}");

    // Past the threshold it is aborted, and said so.
    let o = with_s3(site_ws.action("backup"), &s3)
        .input("paths", "site")
        .env("PREDEPLOY_BACKUP_TEST_STALE_SECONDS", "0")
        .run();
    o.assert_code(0);
    assert_eq!(s3.incomplete_uploads(), 0, "{o}");
    o.assert_mentions("incomplete upload started");
    assert!(o.summary_text().contains("incomplete upload"), "{o}");
    assert_eq!(manifests(&s3).len(), 2);
}

/// Names a shell or a line-based tool trips over, and links that point out of the volume
/// by absolute path, through the bucket and back: backup, workspace wiped, rollback by run
/// id from the bucket alone, the tree identical to the byte (names compared in hex).
#[test]
fn hostile_names_round_trip_through_the_bucket() {
    let test = "dest-hostile";
    let s3 = Seaweed::start(BUCKET);
    let vol = Volume::create(test);
    let script = r#"set -eu
cd /data
printf 'dash\n' > ./-rf
printf 'help\n' > ./--help
mkdir -p ./-dir ' lead space' 'trail space ' 'with space/ünï cödé 日本語 🎉'
printf 'nl\n' > "$(printf 'new\nline')"
printf 'tab\n' > "$(printf 'tab\tname')"
printf 'cr\n' > "$(printf 'cr\rname')"
printf 'q\n' > "it's \"quoted\" \\ back"
printf 'sub\n' > '$(touch pwned) `id` ;rm -rf ~ &&'
printf 'glob\n' > '*?[a]'
printf 'u\n' > 'with space/ünï cödé 日本語 🎉/fïlé'
printf 'x\n' > ./-dir/--
ln -s /etc/passwd abs-passwd
ln -s /etc/ssl/../shadow abs-up-inside
ln -s "$(printf 'new\nline')" link-to-newline
ln -s ./-rf ./-link
"#;
    let out = vol.busybox(script, &[], false);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let before = vol.exact_listing();
    assert!(before.lines().count() >= 18, "{before}");
    // (A link like `/../etc` — `..` above the volume root — backs up but is refused by the
    // rollback's restore-safety check, fail closed: not part of a round trip.)
    let ws = Workspace::new();
    let o = with_s3(ws.action("backup"), &s3)
        .input("volumes", &vol.name)
        .input("min-volume-size", "1")
        .run();
    o.assert_code(0);
    assert_eq!(o.out("verified"), "true", "{o}");

    wipe(&ws);
    let out = vol.busybox(
        "rm -rf /data/* /data/.[!.]* 2>/dev/null; echo gone > /data/after",
        &[],
        false,
    );
    assert!(out.status.success());
    assert_ne!(vol.exact_listing(), before);

    let r = with_s3(ws.action("rollback"), &s3)
        .input("run-id", "4242")
        .input("volumes", &vol.name)
        .run();
    r.assert_code(0);
    assert_eq!(r.out("restored"), "true", "{r}");
    assert_eq!(
        vol.exact_listing(),
        before,
        "the tree after the rollback from S3"
    );
    // Nothing named in the tree ran anywhere.
    assert!(!ws.join("pwned").exists());
}

/// Every object of the bucket and its SHA-256, to show that a step changed nothing there.
fn bucket_state(s: &Seaweed) -> Vec<(String, String)> {
    s.keys()
        .into_iter()
        .map(|k| {
            let sha = predeploy_backup::archive::hash::sha256_hex(&s.object(&k));
            (k, sha)
        })
        .collect()
}

/// `verify` with a destination checks a backup stored there from the bucket alone (an empty
/// workspace): the newest by default, or the one `run-id` or `manifest` names; every object
/// is read back, its SHA-256 must be the manifest's and its content must pass every check,
/// so a damaged object is caught even when its manifest was rewritten to match it. Nothing
/// changes, in the bucket or in the workspace.
#[test]
fn verify_checks_a_backup_in_the_bucket_and_changes_nothing() {
    let test = "dest-verify";
    let s3 = Seaweed::start(BUCKET);
    let (pg, vol) = Pg::seeded_with_volume(test, &TreeSpec::awkward());
    let ws = Workspace::new();
    let o = with_s3(ws.action("backup"), &s3)
        .postgres(&pg)
        .input("volumes", &vol.name)
        .run();
    o.assert_code(0);
    let folder_url = o.out("destination-url").to_string();
    let folder = folder_url.rsplit('/').next().unwrap().to_string();
    wipe(&ws);
    let before = bucket_state(&s3);
    let unchanged = |o: &Outcome, before: &[(String, String)]| {
        assert_eq!(bucket_state(&s3), before, "the bucket changed:\n{o}");
        assert!(
            crate::support::list_dir(ws.path()).is_empty(),
            "verify left files in the workspace: {:?}\n{o}",
            crate::support::list_dir(ws.path())
        );
    };

    // The newest backup, by default.
    let v = with_s3(ws.action("verify"), &s3).run();
    v.assert_code(0);
    assert_eq!(v.out("verified"), "true", "{v}");
    assert_eq!(v.out("destination-url"), folder_url, "{v}");
    assert_eq!(v.out("db-backup-url"), o.out("db-backup-url"), "{v}");
    assert_eq!(
        v.out("volume-backup-urls"),
        o.out("volume-backup-urls"),
        "{v}"
    );
    assert_eq!(v.out("db-backup-sha256"), o.out("db-backup-sha256"), "{v}");
    assert!(v.summary_text().contains(&folder_url), "{v}");
    assert_no_secret(&v);
    unchanged(&v, &before);

    // By the run id its manifest records, and by its manifest's URL.
    let v = with_s3(ws.action("verify"), &s3)
        .input("run-id", "4242")
        .run();
    v.assert_code(0);
    assert_eq!(v.out("destination-url"), folder_url, "{v}");
    let v = with_s3(ws.action("verify"), &s3)
        .input("manifest", format!("{folder_url}/{FILE_NAME}"))
        .run();
    v.assert_code(0);
    assert_eq!(v.out("verified"), "true", "{v}");
    let v = with_s3(ws.action("verify"), &s3)
        .input("run-id", "999")
        .run();
    v.assert_code(2);
    v.assert_mentions("run 999");
    // Local files and a destination at once: which to check is unclear, so refused.
    let v = with_s3(ws.action("verify"), &s3)
        .input("db-backup", "backups/x/db.sql.gz")
        .run();
    v.assert_code(2);
    v.assert_mentions("verify those without destination");
    unchanged(&v, &before);

    // The dump cut short in the bucket, and its manifest rewritten to match the cut object:
    // the SHA-256 agrees, the content check does not.
    let db_url = o.out("db-backup-url").to_string();
    let db_key = db_url
        .strip_prefix(&format!("s3://{BUCKET}/"))
        .unwrap()
        .to_string();
    let manifest_key = format!("{PREFIX}/{folder}/{FILE_NAME}");
    let good_db = s3.object(&db_key);
    let good_manifest = s3.object(&manifest_key);
    let cut = &good_db[..good_db.len() - 200];
    let mut m = Manifest::parse(
        &String::from_utf8(good_manifest.clone()).unwrap(),
        std::path::Path::new(FILE_NAME),
    )
    .unwrap();
    let rec = &mut m.database.as_mut().unwrap().file;
    rec.size = cut.len() as u64;
    rec.sha256 = predeploy_backup::archive::hash::sha256_hex(cut);
    s3.tamper(&db_key, cut);
    s3.put(&manifest_key, m.to_yaml().as_bytes());
    let before = bucket_state(&s3);
    let v = with_s3(ws.action("verify"), &s3).run();
    v.assert_code(1);
    assert_eq!(v.out("verified"), "false", "{v}");
    v.assert_mentions(&db_url).assert_mentions("gzip");
    unchanged(&v, &before);

    // The dump restored; one byte of the volume archive flipped, the manifest as it was.
    s3.tamper(&db_key, &good_db);
    s3.put(&manifest_key, &good_manifest);
    let vol_url = o.out("volume-backup-urls").to_string();
    let vol_key = vol_url
        .strip_prefix(&format!("s3://{BUCKET}/"))
        .unwrap()
        .to_string();
    let mut bytes = s3.object(&vol_key);
    let last = bytes.len() - 1;
    bytes[last] ^= 0x01;
    s3.tamper(&vol_key, &bytes);
    let before = bucket_state(&s3);
    let v = with_s3(ws.action("verify"), &s3).run();
    v.assert_code(1);
    assert_eq!(v.out("verified"), "false", "{v}");
    v.assert_mentions(&vol_url);
    unchanged(&v, &before);
}

/// Issue 15's bad input, in a destination (`host://`): a `.zst` backup whose manifest says
/// gzip, and a `.gz` one whose manifest says zstd (the SHA-256 and size still the
/// manifest's, as after a hand-edited or mixed-up manifest). `verify` reads each file as its
/// manifest says, so exit 1, `verified=false`, an error naming the object that says what it
/// really holds; nothing in the destination is changed or deleted.
#[test]
fn verify_refuses_a_zst_file_recorded_as_gzip_and_a_gz_file_recorded_as_zstd() {
    use predeploy_backup::archive::codec::Codec;
    let test = "dest-codec-mixup";
    let (pg, vol) = Pg::seeded_with_volume(test, &TreeSpec::awkward());
    let (_dir, root) = host_root(test);
    let d = host_dest(&root);
    let ws = Workspace::new();
    let state = || -> Vec<(String, String)> {
        (d.keys)()
            .into_iter()
            .map(|k| {
                let sha = predeploy_backup::archive::hash::sha256_hex(&(d.object)(&k));
                (k, sha)
            })
            .collect()
    };
    for (made, recorded, hint) in [
        (
            Codec::Zstd,
            Codec::Gzip,
            "zstd data: a .zst file named or recorded as gzip?",
        ),
        (
            Codec::Gzip,
            Codec::Zstd,
            "gzip data: a .gz file named or recorded as zstd?",
        ),
    ] {
        let o = (d.apply)(ws.action("backup"))
            .postgres(&pg)
            .input("volumes", &vol.name)
            .input("compression", made.as_str())
            .run();
        o.assert_code(0);
        let folder_url = o.out("destination-url").to_string();
        let folder = folder_url.rsplit('/').next().unwrap().to_string();
        let db_url = o.out("db-backup-url").to_string();
        assert!(db_url.ends_with(&format!(".sql{}", made.ext())), "{o}");
        // The manifest in the destination now records the other codec for every file.
        let path = root.join(&folder).join(FILE_NAME);
        let mut m = Manifest::load(&path).unwrap();
        m.database.as_mut().unwrap().file.compression = recorded;
        for v in &mut m.volumes {
            v.file.compression = recorded;
        }
        std::fs::write(&path, m.to_yaml()).unwrap();
        let before = state();

        let v = (d.apply)(ws.action("verify"))
            .input("manifest", format!("{folder_url}/{FILE_NAME}"))
            .run();
        v.assert_code(1);
        assert_eq!(v.out("verified"), "false", "{v}");
        let db_error = v
            .errors()
            .into_iter()
            .find(|a| a.file() == Some(db_url.as_str()))
            .unwrap_or_else(|| panic!("no ::error naming {db_url}\n{v}"));
        assert!(
            db_error.message.contains(hint),
            "the error does not say what the file holds ({hint}): {}",
            db_error.message
        );
        v.assert_mentions(o.out("volume-backup-urls"))
            .assert_mentions("do not roll back to it");
        assert_eq!(state(), before, "verify changed the destination:\n{v}");
    }
}

/// A link that leaves the volume by an absolute path with `..` above the volume root
/// (`/../../../etc/shadow`) is stored and verified like any entry, but rollback's
/// restore-safety check refuses it, and with it the whole rollback. The user learns it
/// when the backup is made, not when it is needed: backup warns naming the entry (and so do
/// `verify` of the local copy and `verify` in the bucket); rollback refuses before changing
/// anything.
#[test]
fn link_leaving_the_volume_is_warned_at_backup_and_refused_at_rollback() {
    let test = "dest-escaping-link";
    let s3 = Seaweed::start(BUCKET);
    let vol = Volume::create(test);
    let out = vol.busybox(
        "set -eu; cd /data; echo keep > keep.txt; ln -s /../../../etc/shadow evil; ln -s /etc/passwd inside",
        &[],
        false,
    );
    assert!(out.status.success(), "{out:?}");
    let warned = |o: &Outcome| {
        let w: Vec<_> = o
            .commands()
            .into_iter()
            .filter(|a| a.command == "warning" && a.message.contains("/evil`"))
            .collect();
        assert_eq!(w.len(), 1, "one warning naming the entry\n{o}");
        assert!(
            w[0].message.contains("refused by rollback") && w[0].message.contains("outside"),
            "{o}"
        );
        assert!(o.summary_text().contains("/evil`"), "{o}");
        // A link that stays inside (the volume's own /etc) is not named.
        assert!(!o.all_text().contains("/inside`"), "{o}");
    };
    let ws = Workspace::new();
    let o = with_s3(ws.action("backup"), &s3)
        .input("volumes", &vol.name)
        .input("min-volume-size", "1")
        .run();
    o.assert_code(0);
    assert_eq!(o.out("verified"), "true", "{o}");
    warned(&o);

    // verify of a copy of the archive, and verify of the backup in the bucket.
    let archive = ws.join(o.out("volume-backup-paths"));
    let copy = ws.join("copy").join(archive.file_name().unwrap());
    std::fs::create_dir_all(copy.parent().unwrap()).unwrap();
    std::fs::copy(&archive, &copy).unwrap();
    let v = ws
        .action("verify")
        .input("volume-backups", copy.display().to_string())
        .input("min-volume-size", "1")
        .run();
    v.assert_code(0);
    warned(&v);
    let v = with_s3(ws.action("verify"), &s3)
        .input("min-volume-size", "1")
        .run();
    v.assert_code(0);
    assert_eq!(v.out("verified"), "true", "{v}");
    warned(&v);

    // As warned: rollback from the bucket refuses, and nothing changes.
    let out = vol.busybox("echo after > /data/after.txt", &[], false);
    assert!(out.status.success(), "{out:?}");
    let before = vol.exact_listing();
    wipe(&ws);
    let r = with_s3(ws.action("rollback"), &s3)
        .input("run-id", "4242")
        .input("volumes", &vol.name)
        .run();
    r.assert_code(1);
    r.assert_mentions("evil");
    assert_eq!(r.out("restored"), "false", "{r}");
    assert_eq!(
        vol.exact_listing(),
        before,
        "a refused rollback changed the volume"
    );
}

/// Two backups started at the same moment against one engine destination: one takes the
/// lease, the other waits for it (and says so) and makes its backup only after the first
/// committed its manifest; both complete, in two folders, and each is whole: `verify` with
/// the destination reads every object of each back and checks it. No lease and no
/// temporary object is left.
fn concurrent_backups_never_interleave(test: &str, d: &Dest) {
    let vol = Volume::with_tree(test, &TreeSpec::random(150));
    let ws_a = Workspace::new();
    let ws_b = Workspace::new();
    let backup = |ws: &Arc<Workspace>| {
        (d.apply)(ws.action("backup"))
            .input("volumes", &vol.name)
            .input("compression", "none")
            .input("min-volume-size", "1")
    };
    let (a, b) = (backup(&ws_a).spawn(), backup(&ws_b).spawn());
    let (oa, ob) = (a.wait(), b.wait());
    oa.assert_code(0);
    ob.assert_code(0);
    let waited = |o: &Outcome| o.all_text().contains("Waiting for the lock");
    assert!(
        waited(&oa) != waited(&ob),
        "exactly one run must have waited for the other's lock\n{oa}\n{ob}"
    );
    let ((first, ws_first), (second, ws_second)) = if waited(&ob) {
        ((&oa, &ws_a), (&ob, &ws_b))
    } else {
        ((&ob, &ws_b), (&oa, &ws_a))
    };
    // The second began its backup only after the first had committed its manifest.
    let local_manifest = |ws: &Workspace, o: &Outcome| ws.join(o.out("backup-dir")).join(FILE_NAME);
    let committed = std::fs::metadata(local_manifest(ws_first, first))
        .unwrap()
        .modified()
        .unwrap();
    let second_created = Manifest::load(&local_manifest(ws_second, second))
        .unwrap()
        .created_at;
    assert!(
        chrono::DateTime::<chrono::Utc>::from(committed)
            <= second_created + chrono::Duration::seconds(1),
        "the second run made its backup before the first had committed\n{first}\n{second}"
    );
    let urls = [first.out("destination-url"), second.out("destination-url")];
    assert_ne!(urls[0], urls[1]);
    // Exactly the two backups' files and manifests: no lease, no temporary object.
    let mut expected = 0;
    for (o, ws) in [(first, ws_first), (second, ws_second)] {
        expected += Manifest::load(&local_manifest(ws, o))
            .unwrap()
            .files()
            .len()
            + 1;
    }
    let keys = (d.keys)();
    assert_eq!(keys.len(), expected, "{keys:?}");
    assert_eq!(d.manifests().len(), 2, "{keys:?}");
    // Each is whole, read back from the destination alone.
    for url in urls {
        let ws = Workspace::new();
        let v = (d.apply)(ws.action("verify"))
            .input("manifest", format!("{url}/{FILE_NAME}"))
            .input("min-volume-size", "1")
            .run();
        v.assert_code(0);
        assert_eq!(v.out("verified"), "true", "{v}");
        assert_eq!(v.out("destination-url"), url, "{v}");
    }
}

#[test]
fn two_backups_at_once_to_one_volume_never_interleave() {
    let store = Volume::create("dest-vol-concurrent-store");
    concurrent_backups_never_interleave("dest-vol-concurrent", &volume_dest(&store.name));
}

#[test]
fn two_backups_at_once_to_one_host_folder_never_interleave() {
    let (_dir, root) = host_root("dest-host-concurrent");
    concurrent_backups_never_interleave("dest-host-concurrent", &host_dest(&root));
}

/// The lease through the engine store (its conditional writes: create-if-absent is `ln`,
/// replace-if-unchanged a `mkdir` mutex), on a real volume through the real engine, with
/// short lease times: a held lease is renewed past its first expiry (another run that does
/// not wait is refused, naming the holder); a killed holder's lease is taken over once it
/// has expired; and of several runs that find an expired lease at the same moment exactly
/// one takes it over.
#[test]
fn engine_lease_is_renewed_and_an_expired_one_is_taken_over_by_one_run() {
    use predeploy_backup::store::lease::{Lease, LeaseError, KEY};
    use predeploy_backup::store::Destination;
    let vol = Volume::create("dest-lease-store");
    let lease_file = format!("{PREFIX}/{KEY}");
    let holder_in_file = |name: &str| -> (String, chrono::DateTime<chrono::Utc>) {
        let body: serde_json::Value =
            serde_json::from_slice(&volume_object(name, &lease_file)).unwrap();
        (
            body["holder"].as_str().unwrap().to_string(),
            body["expires_at"].as_str().unwrap().parse().unwrap(),
        )
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let engine = predeploy_backup::docker::Engine::connect(&Default::default())
            .await
            .unwrap();
        let dest = Destination::parse(&format!("volume://{}/{PREFIX}", vol.name)).unwrap();
        let store = dest.open(&Default::default(), Some(&engine)).await.unwrap();
        // Renewed every 2 s: long enough for the helper's execs on a loaded machine.
        let ttl = Duration::from_secs(6);

        // Held for more than twice its lifetime: renewed.
        let a = Lease::acquire(&store, "run A", ttl, Duration::ZERO, |_| {})
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_secs(14)).await;
        assert!(a.held(), "A's renewal failed");
        let (who, until) = holder_in_file(&vol.name);
        assert_eq!(who, "run A");
        assert!(until > chrono::Utc::now(), "A's lease was not renewed");
        let e = Lease::acquire(&store, "run B", ttl, Duration::ZERO, |_| {})
            .await
            .err()
            .expect("B must not get A's lease");
        assert!(matches!(e, LeaseError::Busy { .. }), "{e}");
        assert!(e.to_string().contains("run A"), "{e}");

        // A is killed: its renewal stops and its lease stays behind. B waits for it to
        // expire, says so, and takes it over.
        drop(a);
        tokio::time::sleep(Duration::from_millis(500)).await;
        let (_, until) = holder_in_file(&vol.name);
        let mut told = vec![];
        let b = Lease::acquire(&store, "run B", ttl, Duration::from_secs(30), |m| {
            told.push(m.to_string())
        })
        .await
        .unwrap();
        assert!(
            chrono::Utc::now() >= until,
            "B took the lease before A's expired"
        );
        assert_eq!(told.len(), 1, "{told:?}");
        assert!(told[0].contains("run A"), "{told:?}");
        assert_eq!(holder_in_file(&vol.name).0, "run B");
        b.release().await;
        assert!(
            !volume_keys(&vol.name, PREFIX).contains(&KEY.to_string()),
            "the released lease is still there"
        );

        // A lease a killed run left long ago, and four runs at the same moment.
        let expired = serde_json::json!({
            "owner": "0000",
            "holder": "a killed run",
            "expires_at": "2020-01-01T00:00:00Z",
        });
        store
            .save_bytes(KEY, serde_json::to_vec(&expired).unwrap())
            .await
            .unwrap();
        let runs = (0..4).map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                let name = format!("racer {i}");
                let r = Lease::acquire(
                    &store,
                    &name,
                    Duration::from_secs(60),
                    Duration::ZERO,
                    |_| {},
                )
                .await;
                (name, r)
            })
        });
        let mut winners = vec![];
        let mut held = vec![];
        for r in futures_util::future::join_all(runs).await {
            let (name, r) = r.unwrap();
            match r {
                Ok(l) => {
                    winners.push(name);
                    held.push(l);
                }
                Err(e) => assert!(matches!(e, LeaseError::Busy { .. }), "{name}: {e}"),
            }
        }
        assert_eq!(
            winners.len(),
            1,
            "exactly one run takes the lease over: {winners:?}"
        );
        assert_eq!(holder_in_file(&vol.name).0, winners[0]);
        for l in held {
            l.release().await;
        }
        // Nothing is left: no lease, no mutex folder, no temporary file.
        let out = crate::support::docker::busybox_run(
            &[format!("{}:/data:ro", vol.name)],
            "find /data -mindepth 1 ! -type d -o -name '*.predeploy-cas'",
        );
        assert!(out.status.success(), "{out:?}");
        assert_eq!(String::from_utf8_lossy(&out.stdout), "", "left behind");
    });
}
