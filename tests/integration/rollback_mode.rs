//! `mode: rollback` against a real PostgreSQL container and real Docker volumes, checked the
//! way a user would check a rollback: the database's per-table content checksums, the
//! volume's tree (content hashes, owners, modes, links), the consumer container's state, the
//! step's exit code, outputs and annotations, and what is (or is not) left on disk.
//!
//! - [`round_trip_restores_database_and_volume_and_restarts_the_consumer`]
//! - [`dry_run_by_manifest_path_changes_nothing_then_restores_that_backup`]
//! - [`tampered_backup_files_are_refused_before_any_change`]
//! - [`an_archive_replaced_after_its_check_is_not_restored`]
//! - [`malicious_archives_are_refused_before_any_byte_is_written`]
//! - [`running_consumer_blocks_unless_named_in_stop_containers`]
//! - [`rollback_empties_the_volume_when_the_consumer_image_runs_as_non_root`]
//! - [`dump_failing_halfway_keeps_the_safety_backup_and_it_restores`]
//! - [`verify_restore_compares_row_counts_and_catches_dumps_that_do_not_load`]
//! - [`verify_restore_loads_a_zstd_dump_and_catches_one_that_does_not_load`]
//!
//! `rollback` with the `run-id` of the current run is covered by the act end-to-end tests.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use predeploy_backup::manifest::{Manifest, FILE_NAME, POINTER_FILE};

use crate::support::action::{Action, SHA};
use crate::support::docker::{
    container_events, docker, docker_ok, docker_time_now, Container, DbFingerprint, Pg,
    TreeFingerprint, TreeSpec, Volume, BUSYBOX,
};
use crate::support::fixtures::{gunzip, seed_row_counts};
use crate::support::rollback_corpus::{self as corpus, TarBuilder};
use crate::support::rollback_db;
use crate::support::{file_size, random_hex, sha256sum, timed, Outcome, Workspace};

/// What the backup records as its code revision (the rollback step runs at another commit,
/// `SHA`, so the `commit` output can only come from the backup).
const BACKUP_COMMIT: &str = "a1b2c3d4e5f60718293a4b5c6d7e8f9012345678";
const BACKUP_BRANCH: &str = "release/2024.11";

/// A deployed stack: a seeded PostgreSQL, a volume with the awkward tree, and a running app
/// container that mounts the volume (a plain `sleep`: nothing rewrites files at start).
struct Stack {
    test: String,
    ws: Arc<Workspace>,
    pg: Option<Pg>,
    vol: Volume,
    consumer: Container,
}

/// Fingerprints of the database (if any) and the volume.
#[derive(Clone, Debug, PartialEq)]
struct State {
    db: Option<DbFingerprint>,
    vol: TreeFingerprint,
}

impl State {
    fn assert_same(&self, other: &State, what: &str) {
        if let (Some(a), Some(b)) = (&self.db, &other.db) {
            a.assert_same(b, what);
        }
        self.vol.assert_same(&other.vol, what);
    }
}

impl Stack {
    fn new(test: &str, with_db: bool) -> Stack {
        let (pg, vol) = if with_db {
            let (pg, vol) = Pg::seeded_with_volume(test, &TreeSpec::awkward());
            (Some(pg), vol)
        } else {
            (None, Volume::with_tree(test, &TreeSpec::awkward()))
        };
        // `--init`: the shell is not PID 1, so a SIGTERM ends it at once even when it arrives
        // before the shell has set its trap (a container stopped right after it was started);
        // a PID-1 shell would ignore it and the stop would take the product's 30-s timeout.
        let consumer = Container::sleeper(
            &format!("{test}-app"),
            &[&format!("{}:/data", vol.name)],
            &["--init"],
        );
        Stack {
            test: test.into(),
            ws: Workspace::new(),
            pg,
            vol,
            consumer,
        }
    }

    fn pg(&self) -> &Pg {
        self.pg.as_ref().expect("a stack with a database")
    }

    fn state(&self) -> State {
        State {
            db: self.pg.as_ref().map(rollback_db::fingerprint),
            vol: self.vol.fingerprint(),
        }
    }

    /// `mode: backup` of the database and the volume, the consumer stopped around the archive.
    fn backup(&self, commit: &str, branch: &str) -> Outcome {
        self.backup_with(commit, branch, &[])
    }

    /// [`Self::backup`] with extra inputs (`compression`, …).
    fn backup_with(&self, commit: &str, branch: &str, extra: &[(&str, &str)]) -> Outcome {
        let mut a = self
            .ws
            .action("backup")
            .input("volumes", &self.vol.name)
            .input("stop-containers", &self.consumer.name)
            .input("commit", commit)
            .input("branch", branch);
        if let Some(pg) = &self.pg {
            a = a.postgres(pg);
        }
        for (k, v) in extra {
            a = a.input(k, *v);
        }
        let o = timed(&format!("{}: backup", self.test), a);
        o.assert_code(0);
        assert_eq!(o.out("verified"), "true", "{o}");
        o
    }

    /// A `mode: rollback` step naming its targets as the README's rollback workflow does
    /// (the volume and the database container; name and user from the manifest).
    fn rollback(&self) -> Action {
        // The awkward tree has setgid and sticky folders, compared exactly.
        let a = self
            .ws
            .action("rollback")
            .input("volumes", &self.vol.name)
            .input("restore-special-bits", "true");
        match &self.pg {
            Some(pg) => a.postgres_target(pg),
            None => a,
        }
    }

    /// Changes the database and the volume the way a bad deploy would.
    fn change(&self, tag: &str) {
        if let Some(pg) = &self.pg {
            pg.psql(&format!(
                "INSERT INTO public.customers (name, email, created_at) VALUES ('Added {tag}', 'added-{tag}@example.com', '2025-01-01 00:00:00+00'); \
                 UPDATE public.schedules SET title = 'Renamed {tag}', status = 'archived' WHERE id = 3; \
                 DELETE FROM public.events WHERE id > 4500; \
                 UPDATE billing.invoices SET memo = 'edited {tag}' WHERE id = 1007"
            ));
        }
        let script = format!(
            r#"set -e
cd /data
printf 'added {tag}\n' > 'added-{tag}.txt'
printf 'changed {tag}\n' >> README.txt
rm -f schedgen-pdfs/schedules/2024/09/schedule-3.pdf
chown 1234:1234 owned-70/secret.txt
chmod 0600 run.sh
mkdir -p 'new-dir-{tag}/inner'
printf x > 'new-dir-{tag}/inner/f'
ln -sfn README.txt link-to-leaf
printf 'rewritten {tag}\n' > deep/a/b/c/d/e/f/g/h/leaf.txt
"#
        );
        let out = self.consumer.exec(&["sh", "-c", &script]);
        assert!(
            out.status.success(),
            "changing the volume failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Schema changes on top of [`Stack::change`]: a dropped table and an added column.
    fn change_schema(&self) {
        self.pg().psql(
            "DROP TABLE public.lookalikes; \
             ALTER TABLE public.customers ADD COLUMN loyalty_points integer NOT NULL DEFAULT 7",
        );
        let out = self
            .consumer
            .exec(&["sh", "-c", "rmdir /data/empty-dir && chmod 0711 /data"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn backup_folders(&self) -> Vec<String> {
        self.ws.backup_folders("backups")
    }
}

/// The `::error` annotation whose `file` ends with `file_name`, if any.
fn error_for(o: &Outcome, file_name: &str) -> Option<crate::support::Annotation> {
    o.errors()
        .into_iter()
        .find(|a| a.file().is_some_and(|f| f.ends_with(file_name)))
}

/// Helper containers of the product that still mount `volume` (there must be none after a run).
fn leftover_helpers(volume: &str) -> Vec<String> {
    let out = docker_ok(&[
        "ps",
        "-aq",
        "--filter",
        "label=org.predeploy-backup.helper=true",
        "--filter",
        &format!("volume={volume}"),
    ]);
    out.split_whitespace().map(String::from).collect()
}

/// A safety backup folder: it exists, its manifest says verified, and every file's size and
/// SHA-256 (by `sha256sum`) match the manifest.
fn assert_verified_backup(dir: &Path) -> Manifest {
    assert!(dir.is_dir(), "{} is not a folder", dir.display());
    let m =
        Manifest::load(&dir.join(FILE_NAME)).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    assert!(
        m.verified,
        "the manifest in {} is not verified",
        dir.display()
    );
    assert!(!m.files().is_empty());
    for f in m.files() {
        let p = dir.join(&f.path);
        assert_eq!(file_size(&p), f.size, "{}", p.display());
        assert_eq!(sha256sum(&p), f.sha256, "{}", p.display());
    }
    m
}

fn column_exists(pg: &Pg, table: &str, column: &str) -> bool {
    pg.psql(&format!(
        "SELECT count(*) FROM information_schema.columns WHERE table_schema = 'public' AND table_name = '{table}' AND column_name = '{column}'"
    )) == "1"
}

// -----------------------------------------------------------------------------------------
// 1. Round trip

#[test]
fn round_trip_restores_database_and_volume_and_restarts_the_consumer() {
    let s = Stack::new("rb-roundtrip", true);
    let before = s.state();
    let b = s.backup(BACKUP_COMMIT, BACKUP_BRANCH);
    let backup_dir = b.out("backup-dir").to_string();
    let pointer =
        s.ws.pointer()
            .expect("the backup wrote .last-deployment-backup");
    // The backup itself changed nothing.
    s.state().assert_same(&before, "after the backup");

    s.change("after-backup");
    s.change_schema();
    let changed = s.state();
    assert!(
        changed
            .db
            .as_ref()
            .unwrap()
            .diff(before.db.as_ref().unwrap())
            .len()
            >= 4
    );
    assert!(
        changed.vol.diff(&before.vol).len() >= 6,
        "{:#?}",
        changed.vol.diff(&before.vol)
    );
    assert!(column_exists(s.pg(), "customers", "loyalty_points"));
    let started = s.consumer.started_at();

    let o = timed(
        "roundtrip: rollback",
        s.rollback().input("stop-containers", &s.consumer.name),
    );
    o.assert_code(0);
    assert_eq!(o.out("restored"), "true", "{o}");
    assert_eq!(o.out("commit"), BACKUP_COMMIT);
    assert_eq!(o.out("branch"), BACKUP_BRANCH);
    assert_ne!(
        o.out("commit"),
        SHA,
        "the commit comes from the backup, not the rollback run"
    );
    assert_eq!(o.out("backup-dir"), backup_dir);
    assert!(o.errors().is_empty(), "{o}");

    // The safety backup holds the state *before* the rollback.
    let safety = o.path(o.out("safety-backup-dir"));
    assert_ne!(safety, o.path(&backup_dir));
    let sm = assert_verified_backup(&safety);
    let db = sm
        .database
        .as_ref()
        .expect("the safety backup has the database");
    assert!(
        !db.tables.contains_key("public.lookalikes"),
        "{:?}",
        db.tables
    );
    assert_eq!(db.tables.get("public.customers"), Some(&9));
    assert_eq!(db.tables.get("public.events"), Some(&4500));
    assert_eq!(sm.volumes.len(), 1);
    assert_eq!(sm.volumes[0].name, s.vol.name);

    // The database and the volume are the backup's again.
    let after = s.state();
    after.assert_same(&before, "after the rollback");
    assert!(after
        .db
        .as_ref()
        .unwrap()
        .tables
        .contains_key("public.lookalikes"));
    assert!(!column_exists(s.pg(), "customers", "loyalty_points"));

    // The consumer runs again, and was restarted.
    assert!(s.consumer.is_running(), "the consumer is not running:\n{o}");
    assert_ne!(
        s.consumer.started_at(),
        started,
        "the consumer was not stopped for the restore"
    );
    assert!(
        leftover_helpers(&s.vol.name).is_empty(),
        "helper containers left behind"
    );
    // The pointer still names the deployment backup, not the safety backup.
    assert_eq!(s.ws.pointer().as_deref(), Some(pointer.as_str()));
    assert_eq!(s.backup_folders().len(), 2, "{:?}", s.backup_folders());
}

/// `compression: zstd` and `none`: the files are `.sql.zst`/`.tar.zst` (`.sql`/`.tar`), the
/// reference `zstd` CLI reads them, the manifest records the codec and level, and rollback
/// restores the database and the volume from them.
#[test]
fn zstd_and_uncompressed_backups_round_trip() {
    let s = Stack::new("rb-zstd", true);
    let before = s.state();
    for (codec, level, ext) in [("zstd", "5", ".zst"), ("none", "", "")] {
        let mut extra = vec![("compression", codec)];
        if !level.is_empty() {
            extra.push(("compression-level", level));
        }
        let b = s.backup_with(BACKUP_COMMIT, BACKUP_BRANCH, &extra);
        let dump = b.path(b.out("db-backup-path"));
        let archive = b.path(b.out("volume-backup-paths"));
        let name = |p: &Path| p.file_name().unwrap().to_string_lossy().to_string();
        assert!(
            name(&dump).ends_with(&format!(".sql{ext}")),
            "{}",
            dump.display()
        );
        assert!(
            name(&archive).ends_with(&format!(".tar{ext}")),
            "{}",
            archive.display()
        );
        let m = assert_verified_backup(&b.path(b.out("backup-dir")));
        let db = m.database.as_ref().unwrap();
        assert_eq!(db.file.compression.as_str(), codec);
        assert_eq!(m.volumes[0].file.compression.as_str(), codec);
        if codec == "zstd" {
            assert_eq!(db.file.compression_level, Some(5));
            assert!(
                db.file.checks.contains(&"zstd".to_string()),
                "{:?}",
                db.file.checks
            );
            // The reference CLI decodes both files; the summary says how.
            let sql = std::process::Command::new("zstd")
                .arg("-dcq")
                .arg(&dump)
                .output()
                .unwrap();
            assert!(sql.status.success());
            assert!(
                String::from_utf8_lossy(&sql.stdout).contains("PostgreSQL database dump complete")
            );
            let t = std::process::Command::new("zstd")
                .arg("-tq")
                .arg(&archive)
                .status()
                .unwrap();
            assert!(t.success());
            assert!(b.summary.contains("zstd -dc"), "{}", b.summary);
        } else {
            assert!(std::fs::read_to_string(&dump)
                .unwrap()
                .contains("PostgreSQL database dump complete"));
        }
        s.change(&format!("after-{codec}"));
        assert!(
            s.state()
                .db
                .as_ref()
                .unwrap()
                .diff(before.db.as_ref().unwrap())
                .len()
                >= 2
        );
        let o = timed(
            &format!("zstd: rollback ({codec})"),
            s.rollback().input("stop-containers", &s.consumer.name),
        );
        o.assert_code(0);
        assert_eq!(o.out("restored"), "true", "{o}");
        s.state().assert_same(
            &before,
            &format!("after the rollback of the {codec} backup"),
        );
    }
}

// -----------------------------------------------------------------------------------------
// 2. By manifest path, dry run

#[test]
fn dry_run_by_manifest_path_changes_nothing_then_restores_that_backup() {
    let s = Stack::new("rb-dryrun", true);
    let original = s.state();
    let a = s.backup(BACKUP_COMMIT, BACKUP_BRANCH);
    let manifest_a = a.out("manifest-path").to_string();
    let db_file_a = Path::new(a.out("db-backup-path"))
        .file_name()
        .unwrap()
        .to_string_lossy()
        .to_string();
    s.change("one");
    // A later backup B: `.last-deployment-backup` now names B, so restoring A proves that the
    // `manifest` input was used.
    let b = s.backup("bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb", "main");
    assert_ne!(b.out("manifest-path"), manifest_a);
    s.change("two");
    let changed = s.state();
    let folders = s.backup_folders();
    let started = s.consumer.started_at();

    let o = timed(
        "dryrun: rollback --dry-run",
        s.rollback()
            .input("manifest", &manifest_a)
            .input("dry-run", "true")
            .input("stop-containers", &s.consumer.name),
    );
    o.assert_code(0);
    assert_eq!(o.out("restored"), "false");
    assert_eq!(o.out("commit"), BACKUP_COMMIT);
    assert_eq!(o.out("branch"), BACKUP_BRANCH);
    assert!(
        !o.outputs.contains_key("safety-backup-dir"),
        "a dry run takes no safety backup\n{o}"
    );
    // The plan: what would be dropped and refilled, from which files.
    o.assert_mentions("dropped and recreated from")
        .assert_mentions(&db_file_a)
        .assert_mentions(&format!(
            "volume `{}`: emptied and refilled from",
            s.vol.name
        ))
        .assert_mentions(&format!("check out commit {BACKUP_COMMIT}"))
        .assert_mentions("dry run");
    assert!(
        o.summary_text().contains(&db_file_a),
        "the plan is in the summary\n{o}"
    );
    // Nothing changed.
    s.state().assert_same(&changed, "after the dry run");
    assert_eq!(s.backup_folders(), folders);
    assert_eq!(
        s.consumer.started_at(),
        started,
        "a dry run stopped the consumer"
    );
    assert!(s.consumer.is_running());

    // The same manifest, for real: A's state, not B's.
    let o = timed(
        "dryrun: rollback --manifest A",
        s.rollback()
            .input("manifest", &manifest_a)
            .input("stop-containers", &s.consumer.name),
    );
    o.assert_code(0);
    assert_eq!(o.out("restored"), "true");
    assert_eq!(o.out("commit"), BACKUP_COMMIT);
    s.state()
        .assert_same(&original, "after restoring backup A by its manifest");
    assert!(s.consumer.is_running());
}

// -----------------------------------------------------------------------------------------
// 3. Tampered files

#[test]
fn tampered_backup_files_are_refused_before_any_change() {
    let s = Stack::new("rb-tamper", true);
    let b = s.backup(BACKUP_COMMIT, BACKUP_BRANCH);
    let dir = b.path(b.out("backup-dir"));
    let db_name = Path::new(b.out("db-backup-path"))
        .file_name()
        .unwrap()
        .to_string_lossy()
        .to_string();
    let vol_name = Path::new(b.out("volume-backup-paths"))
        .file_name()
        .unwrap()
        .to_string_lossy()
        .to_string();
    s.change("after-backup");
    let changed = s.state();
    let folders = s.backup_folders();
    let started = s.consumer.started_at();

    // (case, file, the check the annotation must name, how to break it)
    type Tamper = Box<dyn Fn(&Path)>;
    let cases: Vec<(&str, &str, &str, Tamper)> = vec![
        (
            "flipped-sql",
            &db_name,
            "sha256",
            Box::new(|p: &Path| corpus::flip_byte(p, file_size(p) as usize / 2)),
        ),
        (
            "flipped-tar",
            &vol_name,
            "sha256",
            Box::new(|p: &Path| corpus::flip_byte(p, file_size(p) as usize / 2)),
        ),
        (
            "appended-sql",
            &db_name,
            "size",
            Box::new(|p: &Path| corpus::append(p, b"\0\0extra")),
        ),
        (
            "missing-tar",
            &vol_name,
            "exists",
            Box::new(|p: &Path| std::fs::remove_file(p).unwrap()),
        ),
    ];
    let mut failures = vec![];
    for (case, file, check, tamper) in &cases {
        let copy = s.ws.join(format!("tampered-{case}"));
        corpus::copy_dir(&dir, &copy);
        tamper(&copy.join(file));
        let o = timed(
            &format!("tamper: {case}"),
            s.rollback()
                .input("manifest", format!("tampered-{case}/{FILE_NAME}"))
                .input("stop-containers", &s.consumer.name),
        );
        let mut problems = vec![];
        if o.code != 1 {
            problems.push(format!("exit {} instead of 1", o.code));
        }
        match error_for(&o, file) {
            None => problems.push(format!("no ::error annotation with file=…{file}")),
            Some(a) if !a.title().contains(check) && !a.message.contains(check) => problems.push(
                format!("the annotation does not name the `{check}` check: {a:?}"),
            ),
            Some(_) => {}
        }
        if o.outputs.get("restored").map(String::as_str) == Some("true") {
            problems.push("restored=true".into());
        }
        if o.outputs.contains_key("safety-backup-dir") || s.backup_folders() != folders {
            problems.push(format!(
                "a safety backup was made: {:?}",
                s.backup_folders()
            ));
        }
        let now = s.state();
        if now != changed {
            problems.push(format!(
                "the database or volume changed: {:?} {:?}",
                now.db.as_ref().unwrap().diff(changed.db.as_ref().unwrap()),
                now.vol.diff(&changed.vol)
            ));
        }
        if s.consumer.started_at() != started || !s.consumer.is_running() {
            problems.push("the consumer was stopped".into());
        }
        if !problems.is_empty() {
            failures.push(format!("{case}: {}\n{o}", problems.join("; ")));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));

    // A manifest that says its backup was never verified.
    let copy = s.ws.join("unverified");
    corpus::copy_dir(&dir, &copy);
    let mut m = Manifest::load(&copy.join(FILE_NAME)).unwrap();
    m.verified = false;
    m.write(&copy).unwrap();
    let o = timed(
        "tamper: unverified manifest",
        s.rollback()
            .input("manifest", format!("unverified/{FILE_NAME}"))
            .input("stop-containers", &s.consumer.name),
    );
    o.assert_code(1).assert_mentions("never verified");
    assert!(!o.errors().is_empty(), "{o}");
    assert_eq!(s.backup_folders(), folders, "a safety backup was made");
    assert_eq!(s.state(), changed, "the database or volume changed");
    assert_eq!(s.consumer.started_at(), started);
}

/// The check before the stop and the restore are two reads of the archive. A file replaced
/// between them (here: one byte of a file's content, so the tar stays well-formed and the
/// size the same) is caught by the restore's own read: its SHA-256 is not the manifest's.
/// Nothing staged goes live, the consumer runs again, and the error says what happened.
#[test]
fn an_archive_replaced_after_its_check_is_not_restored() {
    let s = Stack::new("rb-swapped", false);
    let b = s.backup_with(BACKUP_COMMIT, BACKUP_BRANCH, &[("compression", "none")]);
    let archive = b.path(b.out("volume-backup-paths"));
    s.change("after-backup");
    let changed = s.state();
    // Where the first regular file's content starts in the plain tar.
    let offset = {
        let mut a = tar::Archive::new(std::fs::File::open(&archive).unwrap());
        let e = a
            .entries()
            .unwrap()
            .map(Result::unwrap)
            .find(|e| e.header().entry_type().is_file() && e.size() > 0)
            .expect("a file with content in the archive");
        e.raw_file_position() as usize
    };
    let backups = s.ws.join("backups");
    let safety_started = || {
        std::fs::read_dir(&backups).unwrap().flatten().any(|e| {
            let n = e.file_name().to_string_lossy().to_string();
            n.starts_with(".pre-deployment-") && n.ends_with(".partial")
        })
    };
    let mut r = s
        .rollback()
        .input(
            "manifest",
            b.out("backup-dir").to_string() + "/" + FILE_NAME,
        )
        .input("stop-containers", &s.consumer.name)
        .spawn();
    // The check is done once the safety backup has started: alter the archive now.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while !safety_started() {
        assert!(
            r.is_running(),
            "the rollback ended before its safety backup"
        );
        assert!(
            std::time::Instant::now() < deadline,
            "no safety backup started"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    corpus::flip_byte(&archive, offset);
    let o = r.wait();
    o.assert_code(1)
        .assert_mentions("changed after it was checked");
    assert_eq!(o.out("restored"), "false", "{o}");
    s.state().assert_same(&changed, "after the refused restore");
    assert!(
        s.consumer.is_running(),
        "the consumer was not started again\n{o}"
    );
    assert!(
        leftover_helpers(&s.vol.name).is_empty(),
        "helpers left behind"
    );
}

// -----------------------------------------------------------------------------------------
// 4. Malicious archives

/// One archive of the corpus: what it is, the entry the refusal must name, host paths it
/// would create or change if extracted naively, and names that must not appear in the volume.
struct Evil {
    name: &'static str,
    tar: Vec<u8>,
    entry: String,
    outside: Vec<PathBuf>,
    inside: Vec<String>,
}

#[test]
fn malicious_archives_are_refused_before_any_byte_is_written() {
    let test = "rb-evil";
    let ws = Workspace::new();
    let vol = Volume::with_tree(test, &TreeSpec::awkward());
    let mountpoint = PathBuf::from(docker_ok(&[
        "volume",
        "inspect",
        "-f",
        "{{.Mountpoint}}",
        &vol.name,
    ]));
    let vol_parent = mountpoint.parent().unwrap().to_path_buf();
    let vol_parent_listing = crate::support::list_dir(&vol_parent);
    let m = random_hex(8);
    let tmp = |n: &str| PathBuf::from(format!("/tmp/pbt-evil-{m}-{n}"));
    // An outside folder whose mode a "symlink then folder" archive would change.
    let outside_dir = tmp("dir");
    std::fs::create_dir_all(&outside_dir).unwrap();
    std::fs::set_permissions(
        &outside_dir,
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    )
    .unwrap();
    let passwd_hash = sha256sum(Path::new("/etc/passwd"));
    // Entries before the bad one: harmless, but must not be written either.
    let start = || {
        TarBuilder::new()
            .dir("./", 0o755)
            .file(&format!("./before-{m}.txt"), b"harmless")
    };
    let inner = TarBuilder::new()
        .file(&format!("../pbt-evil-{m}-smuggled.txt"), b"smuggled")
        .finish();
    let inner = &inner[..inner.len() - 1024]; // one entry, no end marker
    let long = format!("{}/../../../pbt-evil-{m}-long.txt", "d".repeat(120));

    let corpus: Vec<Evil> = vec![
        Evil {
            name: "absolute path",
            tar: start()
                .file(&format!("/tmp/pbt-evil-{m}-abs.txt"), b"pwned")
                .finish(),
            entry: format!("/tmp/pbt-evil-{m}-abs.txt"),
            outside: vec![tmp("abs.txt")],
            inside: vec!["./tmp".into()],
        },
        Evil {
            name: "../ escape",
            tar: start()
                .file(&format!("./../../pbt-evil-{m}-dotdot.txt"), b"pwned")
                .finish(),
            entry: format!("./../../pbt-evil-{m}-dotdot.txt"),
            outside: vec![
                vol_parent.join(format!("pbt-evil-{m}-dotdot.txt")),
                vol_parent
                    .parent()
                    .unwrap()
                    .join(format!("pbt-evil-{m}-dotdot.txt")),
                PathBuf::from(format!("/pbt-evil-{m}-dotdot.txt")),
            ],
            inside: vec![],
        },
        Evil {
            name: "symlink to / then a file through it",
            tar: start()
                .symlink("root-link", "/")
                .file(
                    &format!("root-link/tmp/pbt-evil-{m}-via-root.txt"),
                    b"pwned",
                )
                .finish(),
            entry: format!("root-link/tmp/pbt-evil-{m}-via-root.txt"),
            outside: vec![tmp("via-root.txt")],
            inside: vec!["./root-link".into()],
        },
        Evil {
            name: "symlink to .. then link/x",
            tar: start()
                .symlink("parent-link", "..")
                .file(
                    &format!("parent-link/pbt-evil-{m}-via-parent/foo/bar"),
                    b"pwned",
                )
                .finish(),
            entry: "parent-link".into(),
            outside: vec![vol_parent.join(format!("pbt-evil-{m}-via-parent"))],
            inside: vec!["./parent-link".into()],
        },
        Evil {
            name: "hard link to /etc/passwd",
            tar: start().hardlink("passwd", "/etc/passwd").finish(),
            entry: "passwd".into(),
            outside: vec![],
            inside: vec!["./passwd".into()],
        },
        Evil {
            name: "duplicate entry: link then file",
            tar: start()
                .symlink(&format!("dup-{m}"), &format!("/tmp/pbt-evil-{m}-dup.txt"))
                .file(&format!("dup-{m}"), b"pwned through the link")
                .finish(),
            entry: format!("dup-{m}"),
            outside: vec![tmp("dup.txt")],
            inside: vec![format!("./dup-{m}")],
        },
        Evil {
            name: "symlink then folder with the same name",
            tar: start()
                .symlink(&format!("sd-{m}"), &outside_dir.display().to_string())
                .dir(&format!("sd-{m}"), 0o777)
                .finish(),
            entry: format!("sd-{m}"),
            outside: vec![],
            inside: vec![format!("./sd-{m}")],
        },
        Evil {
            name: "PAX size smuggling: ustar 0, PAX N",
            tar: start()
                .pax(&[("size", &inner.len().to_string())])
                .file_claiming(&format!("smuggled-{m}.txt"), 0, inner)
                .finish(),
            entry: format!("smuggled-{m}.txt"),
            outside: vec![vol_parent.join(format!("pbt-evil-{m}-smuggled.txt"))],
            inside: vec![format!("./smuggled-{m}.txt")],
        },
        Evil {
            name: "PAX size smuggling: ustar N, PAX 0",
            tar: start()
                .pax(&[("size", "0")])
                .file_claiming(&format!("smuggled2-{m}.txt"), inner.len() as u64, inner)
                .finish(),
            entry: format!("smuggled2-{m}.txt"),
            outside: vec![vol_parent.join(format!("pbt-evil-{m}-smuggled.txt"))],
            inside: vec![format!("./smuggled2-{m}.txt")],
        },
        Evil {
            name: "character device node",
            tar: start().device(&format!("null-{m}"), true, 1, 3).finish(),
            entry: format!("null-{m}"),
            outside: vec![],
            inside: vec![format!("./null-{m}")],
        },
        Evil {
            name: "FIFO",
            tar: start().fifo(&format!("fifo-{m}")).finish(),
            entry: format!("fifo-{m}"),
            outside: vec![],
            inside: vec![format!("./fifo-{m}")],
        },
        Evil {
            name: "GNU long name with ..",
            tar: start()
                .gnu_long_name(long.as_bytes())
                .file(&long[..100], b"pwned")
                .finish(),
            entry: long.clone(),
            outside: vec![vol_parent
                .parent()
                .unwrap()
                .join(format!("pbt-evil-{m}-long.txt"))],
            inside: vec![format!("./{}", "d".repeat(120))],
        },
    ];

    // The negative control: the same builder, a harmless archive (folders, a file, links that
    // stay inside, a hard link to an earlier file) passes every check.
    let good = TarBuilder::new()
        .dir("./", 0o755)
        .dir("./docs", 0o750)
        .file("./docs/a.txt", b"fine")
        .hardlink("./docs/b.txt", "./docs/a.txt")
        .symlink("./docs/link", "a.txt")
        .symlink("./abs-link", "/data/docs/a.txt")
        .finish();
    let manifest = corpus::volume_backup(&ws.join("good"), &vol.name, &good);
    let o = timed(
        "evil: negative control (dry run)",
        ws.action("rollback")
            .input("manifest", manifest.display().to_string())
            .input("volumes", &vol.name)
            .input("dry-run", "true"),
    );
    o.assert_code(0);
    assert_eq!(o.out("restored"), "false");
    // ... and restores as built (the volume's old content replaced).
    let o = timed(
        "evil: negative control (restore)",
        ws.action("rollback")
            .input("manifest", manifest.display().to_string())
            .input("restore-volumes", &vol.name)
            // No container uses this volume, so the product would pick "any local image" with
            // a shell for its helper; name one, so that images other tests build do not matter.
            .env("PREDEPLOY_HELPER_IMAGE", BUSYBOX),
    );
    o.assert_code(0);
    assert_eq!(o.out("restored"), "true");
    let before = vol.fingerprint();
    let e = |p: &str| {
        before
            .entries
            .get(p)
            .unwrap_or_else(|| panic!("{p} missing: {:#?}", before.entries))
    };
    assert_eq!(e("./docs").mode, "0750");
    // md5 of "fine"
    assert_eq!(
        e("./docs/a.txt").md5.as_deref(),
        Some("fff25994ee3941b225ba898fd17d186f")
    );
    assert_eq!(
        e("./docs/a.txt").hard_links,
        vec!["./docs/b.txt".to_string()]
    );
    assert_eq!(e("./docs/link").symlink_target.as_deref(), Some("a.txt"));
    assert_eq!(
        e("./abs-link").symlink_target.as_deref(),
        Some("/data/docs/a.txt")
    );
    assert!(
        !before.entries.contains_key("./README.txt"),
        "the old content was not removed"
    );
    let folders = ws.backup_folders("backups");

    let mut failures = vec![];
    for (i, evil) in corpus.iter().enumerate() {
        let dir = ws.join(format!("evil-{i}"));
        let manifest = corpus::volume_backup(&dir, &vol.name, &evil.tar);
        let archive = Manifest::load(&manifest).unwrap().volumes[0]
            .file
            .path
            .clone();
        let o = timed(
            &format!("evil: {}", evil.name),
            ws.action("rollback")
                .input("manifest", manifest.display().to_string()),
        );
        let mut problems = vec![];
        if o.code != 1 {
            problems.push(format!("exit {} instead of 1", o.code));
        }
        let named = format!("`{}`", evil.entry);
        match error_for(&o, &archive) {
            None => problems.push(format!("no ::error annotation with file=…{archive}")),
            Some(a) if !a.message.contains(&named) => problems.push(format!(
                "the annotation does not name the entry {named}: {}",
                a.message
            )),
            Some(_) => {}
        }
        if o.outputs.get("restored").map(String::as_str) == Some("true") {
            problems.push("restored=true".into());
        }
        if o.outputs.contains_key("safety-backup-dir") || ws.backup_folders("backups") != folders {
            problems.push("a safety backup was made".into());
        }
        let now = vol.fingerprint();
        let diff = now.diff(&before);
        if !diff.is_empty() {
            problems.push(format!("the volume changed: {diff:?}"));
        }
        for n in evil
            .inside
            .iter()
            .chain(std::iter::once(&format!("./before-{m}.txt")))
        {
            if now.entries.contains_key(n) {
                problems.push(format!("{n} was created in the volume"));
            }
        }
        for p in &evil.outside {
            if p.symlink_metadata().is_ok() {
                problems.push(format!("{} was created outside the volume", p.display()));
            }
        }
        if crate::support::list_dir(&vol_parent) != vol_parent_listing {
            problems.push(format!(
                "{} changed: {:?}",
                vol_parent.display(),
                crate::support::list_dir(&vol_parent)
            ));
        }
        let mode = std::fs::metadata(&outside_dir).unwrap().permissions();
        if std::os::unix::fs::PermissionsExt::mode(&mode) & 0o7777 != 0o700 {
            problems.push(format!("the mode of {} changed", outside_dir.display()));
        }
        if sha256sum(Path::new("/etc/passwd")) != passwd_hash {
            problems.push("/etc/passwd changed".into());
        }
        if !leftover_helpers(&vol.name).is_empty() {
            problems.push("helper containers left behind".into());
        }
        if !problems.is_empty() {
            failures.push(format!("{}: {}\n{o}", evil.name, problems.join("; ")));
        }
    }
    let _ = std::fs::remove_dir_all(&outside_dir);
    assert!(
        failures.is_empty(),
        "{} of {} malicious archives were not refused properly:\n{}",
        failures.len(),
        corpus.len(),
        failures.join("\n\n")
    );
}

// -----------------------------------------------------------------------------------------
// 5. Running consumers

#[test]
fn running_consumer_blocks_unless_named_in_stop_containers() {
    let s = Stack::new("rb-consumer", false);
    // Another user of the volume that is stopped: it does not block, and is not started.
    let idle = Container::sleeper("rb-consumer-idle", &[&format!("{}:/data", s.vol.name)], &[]);
    docker_ok(&["stop", "-t", "1", &idle.name]);
    let original = s.state();
    s.backup(BACKUP_COMMIT, BACKUP_BRANCH);
    s.change("after-backup");
    let changed = s.state();
    let folders = s.backup_folders();
    let started = s.consumer.started_at();

    let o = timed("consumer: rollback without stop-containers", s.rollback());
    o.assert_code(2);
    o.assert_mentions(&s.consumer.name)
        .assert_mentions("stop-containers");
    assert!(
        !o.all_text().contains(&format!("{} (uses", idle.name)),
        "a stopped container blocked\n{o}"
    );
    assert!(!o.errors().is_empty(), "no ::error annotation\n{o}");
    assert_ne!(o.outputs.get("restored").map(String::as_str), Some("true"));
    s.state()
        .assert_same(&changed, "after the refused rollback");
    assert_eq!(s.backup_folders(), folders, "a safety backup was made");
    assert_eq!(s.consumer.started_at(), started);
    assert!(s.consumer.is_running());

    let since = docker_time_now();
    let o = timed(
        "consumer: rollback with stop-containers",
        s.rollback().input("stop-containers", &s.consumer.name),
    );
    let until = docker_time_now();
    o.assert_code(0);
    assert_eq!(o.out("restored"), "true");
    s.state().assert_same(&original, "after the rollback");
    assert!(
        s.consumer.is_running(),
        "the consumer was not started again\n{o}"
    );
    assert_ne!(
        s.consumer.started_at(),
        started,
        "the consumer was not stopped"
    );
    assert!(
        !idle.is_running(),
        "the rollback started a container it had not stopped"
    );
    assert!(leftover_helpers(&s.vol.name).is_empty());

    // Stopped once, for the safety backup *and* the restore, and started once at the end:
    // had it run in between, whatever it wrote after the safety backup would be in neither
    // the safety backup nor the restored volume.
    let events: Vec<String> = container_events(&since, &until)
        .into_iter()
        .filter(|e| e.name == s.consumer.name && matches!(e.action.as_str(), "start" | "stop"))
        .map(|e| e.action)
        .collect();
    assert_eq!(
        events,
        ["stop", "start"],
        "the consumer must stay stopped from the safety backup to the end of the restore\n{o}"
    );
}

/// A local image `FROM predeploy-test/busybox` whose default user is 1000:1000, like most
/// application images (`USER node`, `USER 1001`, ...); removed on drop.
struct NonRootImage {
    tag: String,
}

impl NonRootImage {
    fn build() -> NonRootImage {
        let tag = format!("predeploy-test/nonroot-{}:latest", random_hex(8));
        let out = crate::support::docker::docker_stdin(
            &["build", "-q", "-t", &tag, "-"],
            std::io::Cursor::new(format!("FROM {BUSYBOX}\nUSER 1000:1000\n").into_bytes()),
        );
        assert!(
            out.status.success(),
            "docker build: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        NonRootImage { tag }
    }
}

impl Drop for NonRootImage {
    fn drop(&mut self) {
        let _ = docker(&["rmi", "-f", &self.tag]);
    }
}

#[test]
fn rollback_empties_the_volume_when_the_consumer_image_runs_as_non_root() {
    let test = "rb-nonroot";
    let image = NonRootImage::build();
    let ws = Workspace::new();
    let vol = Volume::with_tree(test, &TreeSpec::awkward());
    let consumer = Container::run(
        &crate::support::docker::unique_name(&format!("{test}-app")),
        &[
            "--init",
            "--network",
            "none",
            "-v",
            &format!("{}:/data", vol.name),
            &image.tag,
            "sh",
            "-c",
            "while :; do sleep 1; done",
        ],
    );
    let original = vol.fingerprint();
    let b = timed(
        "nonroot: backup",
        ws.action("backup")
            .input("volumes", &vol.name)
            .input("stop-containers", &consumer.name),
    );
    b.assert_code(0);
    let out = vol.busybox(
        "echo changed >> /data/README.txt && echo new > /data/new.txt",
        &[],
        false,
    );
    assert!(out.status.success());
    let o = timed(
        "nonroot: rollback",
        ws.action("rollback")
            .input("volumes", &vol.name)
            .input("restore-special-bits", "true")
            .input("stop-containers", &consumer.name),
    );
    // The helper that empties the volume runs in the consumer's image: as its default user
    // (1000) it cannot delete root's files. It must run as root, whatever the image says.
    o.assert_code(0);
    assert_eq!(o.out("restored"), "true");
    vol.fingerprint()
        .assert_same(&original, "after the rollback");
    assert!(consumer.is_running());
    drop(consumer);
}

// -----------------------------------------------------------------------------------------
// 6. A dump that fails halfway through psql

#[test]
fn dump_failing_halfway_keeps_the_safety_backup_and_it_restores() {
    let s = Stack::new("rb-halfway", true);
    let b = s.backup(BACKUP_COMMIT, BACKUP_BRANCH);
    let dir = b.path(b.out("backup-dir"));
    let db_name = Path::new(b.out("db-backup-path"))
        .file_name()
        .unwrap()
        .to_string_lossy()
        .to_string();
    s.change("after-backup");
    let changed = s.state();

    // A copy whose dump has an invalid statement between two COPY blocks in the middle;
    // header and completion line intact, manifest sizes and SHA-256 recomputed.
    let bad = s.ws.join("backups-broken/pre-deployment-broken");
    std::fs::create_dir_all(bad.parent().unwrap()).unwrap();
    corpus::copy_dir(&dir, &bad);
    let sql = String::from_utf8(gunzip(&std::fs::read(bad.join(&db_name)).unwrap())).unwrap();
    let ends: Vec<usize> = sql.match_indices("\n\\.\n").map(|(i, _)| i + 4).collect();
    assert!(ends.len() >= 6, "the dump has {} COPY blocks", ends.len());
    let at = ends[ends.len() / 2];
    let broken = format!(
        "{}\nTHIS IS NOT A VALID STATEMENT;\n{}",
        &sql[..at],
        &sql[at..]
    );
    std::fs::write(bad.join(&db_name), corpus::gzip(broken.as_bytes())).unwrap();
    let manifest = corpus::refresh_manifest(&bad);

    let o = timed(
        "halfway: rollback with a dump that fails",
        s.rollback()
            .input("manifest", manifest.display().to_string())
            .input("stop-containers", &s.consumer.name),
    );
    assert_ne!(o.code, 0, "{o}");
    assert_ne!(o.outputs.get("restored").map(String::as_str), Some("true"));
    let safety_rel = o.out("safety-backup-dir").to_string();
    let safety = o.path(&safety_rel);
    // The failure message points at the safety backup.
    let err = o
        .errors()
        .into_iter()
        .map(|a| a.message)
        .collect::<Vec<_>>()
        .join("\n");
    assert!(
        err.contains(&safety_rel),
        "the ::error does not name the safety backup {safety_rel}\n{o}"
    );
    assert!(
        err.contains("THIS IS NOT A VALID STATEMENT") || err.contains("syntax error"),
        "{o}"
    );
    let sm = assert_verified_backup(&safety);
    assert_eq!(
        sm.database.as_ref().unwrap().tables.get("public.customers"),
        Some(&9)
    );
    // Not half-restored: the database is either untouched or empty (one transaction), never
    // a mix; the volume (restored after the database) is untouched.
    let now = s.state();
    let db = now.db.as_ref().unwrap();
    assert!(
        db.tables.is_empty() || db.diff(changed.db.as_ref().unwrap()).is_empty(),
        "the database was left half-restored: {:?}",
        db.tables.keys().collect::<Vec<_>>()
    );
    now.vol
        .assert_same(&changed.vol, "the volume after the failed rollback");
    assert!(
        s.consumer.is_running(),
        "the consumer was not started again\n{o}"
    );

    // The undo the message describes: rolling back to the safety backup restores the state
    // from just before the failed rollback.
    let o = timed(
        "halfway: rollback to the safety backup",
        s.rollback()
            .input("manifest", format!("{safety_rel}/{FILE_NAME}"))
            .input("stop-containers", &s.consumer.name),
    );
    o.assert_code(0);
    assert_eq!(o.out("restored"), "true");
    s.state()
        .assert_same(&changed, "after restoring the safety backup");
    assert!(s.consumer.is_running());
}

// -----------------------------------------------------------------------------------------
// 7. verify-restore in backup mode

/// A schema whose own `pg_dump` does not load: `allocations` has a CHECK constraint that
/// calls a function reading `zones`. pg_dump writes the constraint inline with the table and
/// loads table data in name order, so `allocations`' rows arrive while `zones` is still empty
/// and every row fails the check. (PostgreSQL's documentation warns that CHECK constraints
/// must not depend on other rows or tables for exactly this reason: dump and restore.)
const TRAP_SCHEMA: &str = "\
CREATE TABLE public.zones (code text PRIMARY KEY); \
CREATE FUNCTION public.zone_exists(c text) RETURNS boolean LANGUAGE sql STABLE \
    AS $$ SELECT EXISTS (SELECT 1 FROM public.zones WHERE code = c) $$; \
CREATE TABLE public.allocations (id integer PRIMARY KEY, zone text NOT NULL CHECK (public.zone_exists(zone)), note text); \
INSERT INTO public.zones VALUES ('north'), ('south'); \
INSERT INTO public.allocations SELECT i, CASE WHEN i % 2 = 0 THEN 'north' ELSE 'south' END, md5(i::text) \
    FROM generate_series(1, 300) AS i";

/// The [`TRAP_SCHEMA`] in a new database `trap` on `pg`'s server.
fn create_trap_database(pg: &Pg) {
    pg.psql_in("postgres", "CREATE DATABASE trap");
    pg.psql_in("trap", TRAP_SCHEMA);
}

/// How many of verify-restore's throwaway databases are left on `pg`'s server ("0").
fn leftover_scratch(pg: &Pg) -> String {
    pg.psql_in(
        "postgres",
        "SELECT count(*) FROM pg_database WHERE datname LIKE 'predeploy_verify_%'",
    )
}

/// A verify-restore of the seed database that passed: exit 0, verified; the summary's
/// comparison table has every table with equal counts; the manifest records the passed
/// check with the seed's row counts in the dump and after the restore; the throwaway
/// database is gone. Returns the manifest.
fn assert_restore_check_passed(o: &Outcome, pg: &Pg) -> Manifest {
    o.assert_code(0);
    assert_eq!(o.out("verified"), "true", "{o}");
    o.assert_mentions("verify-restore: row counts (dump vs. restored)");
    let expected = seed_row_counts();
    for (t, n) in &expected {
        let row = format!("| `{t}` | {n} | {n} | ✅ |");
        assert!(
            o.summary_text().contains(&row),
            "the summary lacks {row}\n{o}"
        );
    }
    let m = Manifest::load(&o.path(o.out("manifest-path"))).unwrap();
    let rc = m
        .restore_check
        .as_ref()
        .expect("the manifest records the restore check");
    assert!(rc.passed, "{rc:?}");
    let counts = |pick: fn(&(u64, u64)) -> u64| -> std::collections::BTreeMap<String, u64> {
        rc.tables
            .iter()
            .map(|(k, v)| (k.clone(), pick(v)))
            .collect()
    };
    assert_eq!(counts(|c| c.0), expected, "rows in the dump");
    assert_eq!(counts(|c| c.1), expected, "rows in the throwaway database");
    assert_eq!(
        leftover_scratch(pg),
        "0",
        "the throwaway database was not dropped"
    );
    m
}

/// A backup of the `trap` database ([`create_trap_database`]), whose dump does not load:
/// exit 1, verified=false, the load error named in an `::error`; no backup folder and no
/// pointer left; the throwaway database dropped.
fn assert_dump_that_does_not_load_is_refused(o: &Outcome, ws: &Workspace, pg: &Pg) {
    o.assert_code(1);
    assert_eq!(o.out("verified"), "false", "{o}");
    o.assert_mentions("does not load")
        .assert_mentions("violates check constraint");
    assert!(!o.errors().is_empty(), "no ::error annotation\n{o}");
    assert!(
        ws.backup_folders("backups").is_empty(),
        "a backup folder was left: {:?}",
        ws.backup_folders("backups")
    );
    assert!(
        ws.pointer().is_none(),
        "{POINTER_FILE} was written for an unverified backup"
    );
    assert_eq!(
        leftover_scratch(pg),
        "0",
        "the throwaway database was not dropped"
    );
}

#[test]
fn verify_restore_compares_row_counts_and_catches_dumps_that_do_not_load() {
    let pg = Pg::seeded("rb-verify-restore");
    let backup = |ws: &Arc<Workspace>, db: &str, user: &str, password: &str| {
        ws.action("backup")
            .input("postgres-container", pg.name())
            .input("postgres-db", db)
            .input("postgres-user", user)
            .input("postgres-password", password)
            .input("verify-restore", "true")
    };

    // A good backup passes, and the summary shows the comparison table.
    let ws = Workspace::new();
    let o = timed(
        "verify-restore: good",
        backup(&ws, &pg.db, &pg.user, &pg.password),
    );
    assert_restore_check_passed(&o, &pg);

    // (a) pg_dump's own output that does not load.
    create_trap_database(&pg);
    let ws = Workspace::new();
    let o = timed(
        "verify-restore: dump that does not load",
        backup(&ws, "trap", &pg.user, &pg.password),
    );
    assert_dump_that_does_not_load_is_refused(&o, &ws, &pg);
    // The database itself is fine: it was only read.
    assert_eq!(
        pg.psql_in("trap", "SELECT count(*) FROM public.allocations"),
        "300"
    );

    // (b) The throwaway database cannot be created (a role without CREATEDB): an environment
    // failure (exit 3) that says why.
    pg.psql_in(
        "postgres",
        "CREATE ROLE app LOGIN PASSWORD 'app-pw' NOCREATEDB",
    );
    pg.psql_in("postgres", "CREATE DATABASE appdb OWNER app");
    pg.psql_in(
        "appdb",
        "CREATE TABLE public.notes (id integer PRIMARY KEY, body text); \
         INSERT INTO public.notes SELECT i, md5(i::text) FROM generate_series(1, 300) AS i; \
         ALTER TABLE public.notes OWNER TO app",
    );
    let ws = Workspace::new();
    let o = timed(
        "verify-restore: no CREATEDB",
        backup(&ws, "appdb", "app", "app-pw"),
    );
    o.assert_code(3);
    assert_eq!(o.out("verified"), "false");
    o.assert_mentions("permission denied to create database");
    assert!(
        ws.backup_folders("backups").is_empty(),
        "a backup folder was left: {:?}",
        ws.backup_folders("backups")
    );
    assert_eq!(leftover_scratch(&pg), "0");
    // "Every message says what to do": that it is verify-restore's throwaway database that
    // could not be created, and how to fix it (grant CREATEDB, or turn verify-restore off).
    let err = o
        .errors()
        .into_iter()
        .map(|a| a.message)
        .collect::<Vec<_>>()
        .join("\n");
    assert!(
        err.contains("verify-restore") && err.contains("CREATEDB"),
        "the ::error does not say that verify-restore needs CREATEDB:\n{err}"
    );
}

/// `compression: zstd` with `verify-restore` (issue 15): the `.sql.zst` dump is decoded and
/// loaded into a throwaway database, the row counts match, and the manifest records the
/// passed restore check beside the codec. A zstd dump that does not load fails the backup
/// just as a gzip one does: the restore really ran on the decoded stream.
#[test]
fn verify_restore_loads_a_zstd_dump_and_catches_one_that_does_not_load() {
    let pg = Pg::seeded("rb-verify-restore-zstd");
    let backup = |ws: &Arc<Workspace>, db: &str| {
        ws.action("backup")
            .postgres(&pg)
            .input("postgres-db", db)
            .input("compression", "zstd")
            .input("verify-restore", "true")
    };

    let ws = Workspace::new();
    let o = timed("verify-restore zstd: good", backup(&ws, &pg.db));
    let m = assert_restore_check_passed(&o, &pg);
    assert!(o.out("db-backup-path").ends_with(".sql.zst"), "{o}");
    assert_verified_backup(&o.path(o.out("backup-dir")));
    let db = m.database.as_ref().expect("the manifest has the database");
    assert_eq!(db.file.compression.as_str(), "zstd");
    assert_eq!(db.file.compression_level, Some(3));

    // pg_dump's own output that does not load, compressed with zstd.
    create_trap_database(&pg);
    let ws = Workspace::new();
    let o = timed("verify-restore zstd: does not load", backup(&ws, "trap"));
    assert_dump_that_does_not_load_is_refused(&o, &ws, &pg);
}
