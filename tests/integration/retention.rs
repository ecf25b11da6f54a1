//! Retention on real folders: real manifests written by `Manifest::write`, a real pointer
//! file, foreign folders and files, and a folder that the kernel refuses to delete.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use chrono::{DateTime, Duration, Utc};
use predeploy_backup::actions::summary::RetentionSummary;
use predeploy_backup::manifest::{self, Git, Manifest, Origin, Pointer, DIR_PREFIX};
use predeploy_backup::retention::{prune, Policy, PruneReport, Verdict, PRUNING_MARKER};

fn now() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2024-12-01T12:00:00Z")
        .unwrap()
        .with_timezone(&Utc)
}

struct Ws {
    tmp: tempfile::TempDir,
}

impl Ws {
    fn new() -> Ws {
        let tmp = tempfile::tempdir().unwrap();
        fs::create_dir_all(tmp.path().join("backups")).unwrap();
        Ws { tmp }
    }
    fn path(&self) -> &Path {
        self.tmp.path()
    }
    fn root(&self) -> PathBuf {
        self.tmp.path().join("backups")
    }

    /// A backup folder made `age_days` before [`now`], named after its manifest's time.
    fn backup(&self, age_days: i64, verified: bool) -> PathBuf {
        self.backup_named(age_days, verified, None)
    }

    fn backup_named(&self, age_days: i64, verified: bool, name: Option<&str>) -> PathBuf {
        let created = now() - Duration::days(age_days);
        let name = name
            .map(str::to_string)
            .unwrap_or_else(|| format!("{DIR_PREFIX}{}", manifest::timestamp(created)));
        let dir = self.root().join(name);
        fs::create_dir_all(dir.join("sub")).unwrap();
        fs::write(dir.join("db_x.sql.gz"), vec![7u8; 2048]).unwrap();
        fs::write(dir.join("sub/volume.tar.gz"), vec![8u8; 1024]).unwrap();
        let mut m = Manifest::new(
            Origin::Backup,
            created,
            format!("backups/{}", dir.file_name().unwrap().to_string_lossy()),
            Git {
                commit: Some("abc1234".into()),
                branch: Some("main".into()),
            },
        );
        m.verified = verified;
        m.write(&dir).unwrap();
        dir
    }
}

fn policy(retention_days: u32, keep_last: usize) -> Policy {
    Policy {
        retention_days,
        keep_last,
        dry_run: false,
    }
}

fn decision(r: &PruneReport, dir: &Path) -> (Verdict, String) {
    let d = r
        .decisions
        .iter()
        .find(|d| d.dir == dir)
        .unwrap_or_else(|| panic!("no decision for {}: {:#?}", dir.display(), r.decisions));
    (d.verdict, d.reason.clone())
}

fn assert_kept(r: &PruneReport, dir: &Path, reason_contains: &str) {
    let (v, why) = decision(r, dir);
    assert_eq!(v, Verdict::Keep, "{}: {why}", dir.display());
    assert!(
        why.contains(reason_contains),
        "{}: reason `{why}` lacks `{reason_contains}`",
        dir.display()
    );
    assert!(dir.exists(), "{} was deleted", dir.display());
}

fn assert_deleted(r: &PruneReport, dir: &Path, reason_contains: &str) {
    let (v, why) = decision(r, dir);
    assert_eq!(v, Verdict::Delete, "{}: {why}", dir.display());
    assert!(
        why.contains(reason_contains),
        "{}: reason `{why}` lacks `{reason_contains}`",
        dir.display()
    );
    assert!(!dir.exists(), "{} still exists", dir.display());
    assert!(r.deleted.contains(&dir.to_path_buf()));
}

#[test]
fn deletes_by_manifest_age_and_keeps_the_newest() {
    let ws = Ws::new();
    let fresh = ws.backup(1, true);
    let b10 = ws.backup(10, true);
    let b20 = ws.backup(20, true);
    let b30 = ws.backup(30, true);
    // Named as if made today, mtime today, but its manifest says 40 days: the manifest wins.
    let renamed = ws.backup_named(
        40,
        true,
        Some(&format!(
            "{DIR_PREFIX}{}",
            manifest::timestamp(now() - Duration::hours(1))
        )),
    );
    let r = prune(&ws.root(), ws.path(), &policy(7, 2), now()).unwrap();
    assert_kept(&r, &fresh, "one of the newest 2 verified backups");
    assert_kept(&r, &b10, "one of the newest 2 verified backups");
    assert_deleted(&r, &b20, "older than 7 days (created 2024-11-11 12:00 UTC)");
    assert_deleted(&r, &b30, "older than 7 days");
    assert_deleted(
        &r,
        &renamed,
        "older than 7 days (created 2024-10-22 12:00 UTC)",
    );
    assert!(r.ok());
    let log = r.log_lines().join("\n");
    assert!(
        log.contains(&format!("deleted: {}", b20.display())),
        "{log}"
    );
    assert!(log.contains(&format!("kept: {}", fresh.display())), "{log}");
    assert!(log.ends_with("Retention: 3 deleted, 2 kept."), "{log}");
    let md = r.markdown();
    assert!(md.contains("| Folder | Created | Action | Why |"), "{md}");
    assert!(md.contains("| deleted | older than 7 days"), "{md}");
}

#[test]
fn recent_backups_stay_beyond_keep_last() {
    let ws = Ws::new();
    let a = ws.backup(1, true);
    let b = ws.backup(2, true);
    let c = ws.backup(3, true);
    let r = prune(&ws.root(), ws.path(), &policy(7, 1), now()).unwrap();
    assert_kept(&r, &a, "one of the newest 1 verified backups");
    assert_kept(&r, &b, "within 7 days");
    assert_kept(&r, &c, "within 7 days");
    assert!(r.deleted.is_empty());
}

#[test]
fn foreign_folders_and_files_are_never_touched() {
    let ws = Ws::new();
    let root = ws.root();
    let newest = ws.backup(1, true);
    // A folder with our prefix but no manifest, one with someone else's manifest, one
    // with a name that is not ours, a file, our lock file, a partial folder, and a link.
    let no_manifest = root.join(format!("{DIR_PREFIX}20200101_000000"));
    fs::create_dir_all(&no_manifest).unwrap();
    fs::write(no_manifest.join("data.sql.gz"), b"x").unwrap();
    let other_tool = root.join(format!("{DIR_PREFIX}20200102_000000"));
    fs::create_dir_all(&other_tool).unwrap();
    fs::write(
        other_tool.join("manifest.yml"),
        "schema_version: 1\ntool:\n  name: other-backup\n  version: '1'\n",
    )
    .unwrap();
    let garbled = root.join(format!("{DIR_PREFIX}20200103_000000"));
    fs::create_dir_all(&garbled).unwrap();
    fs::write(garbled.join("manifest.yml"), "{{{ not yaml").unwrap();
    let foreign_dir = root.join("postgres-dumps");
    fs::create_dir_all(&foreign_dir).unwrap();
    let foreign_file = root.join("pre-deployment-notes.txt");
    fs::write(&foreign_file, b"keep me").unwrap();
    let lock = root.join(".predeploy-backup.lock");
    fs::write(&lock, b"").unwrap();
    let partial = root.join(format!(".{DIR_PREFIX}20200104_000000.partial"));
    fs::create_dir_all(&partial).unwrap();
    // An old backup of ours outside the root, linked in under our prefix.
    let outside = ws.path().join("elsewhere");
    fs::create_dir_all(&outside).unwrap();
    let mut m = Manifest::new(
        Origin::Backup,
        now() - Duration::days(99),
        "x".into(),
        Git::default(),
    );
    m.verified = true;
    m.write(&outside).unwrap();
    let link = root.join(format!("{DIR_PREFIX}20200105_000000"));
    std::os::unix::fs::symlink(&outside, &link).unwrap();

    let r = prune(&root, ws.path(), &policy(0, 0), now()).unwrap();
    assert_kept(&r, &newest, "would leave no verified backup");
    assert_kept(&r, &no_manifest, "not ours: no predeploy-backup manifest");
    assert_kept(
        &r,
        &other_tool,
        "not ours: no predeploy-backup manifest (written by `other-backup`)",
    );
    assert_kept(&r, &garbled, "manifest cannot be parsed");
    assert_kept(&r, &foreign_dir, "not ours");
    assert_kept(&r, &foreign_file, "not ours: a file");
    // Our own lock file is machinery, not an entry to judge: untouched and not listed.
    assert!(lock.exists(), "the lock file was deleted");
    assert!(
        r.decisions.iter().all(|d| d.dir != lock),
        "the lock file was listed as a backup decision"
    );
    assert_kept(&r, &partial, "not ours: a hidden or partly written folder");
    assert_kept(&r, &link, "not ours: a symbolic link");
    assert!(outside.join("manifest.yml").exists());
    assert_eq!(fs::read(&foreign_file).unwrap(), b"keep me");
    assert!(no_manifest.join("data.sql.gz").exists());
    assert!(r.deleted.is_empty() && r.failed.is_empty());
    assert_eq!(
        r.decisions.len(),
        8,
        "one decision per entry, the lock file excepted"
    );
}

#[test]
fn unverified_backups_do_not_count_towards_keep_last() {
    let ws = Ws::new();
    let unverified_new = ws.backup(0, false);
    let unverified_old = ws.backup(9, false);
    let verified_a = ws.backup(10, true);
    let verified_b = ws.backup(11, true);
    let verified_c = ws.backup(12, true);
    let r = prune(&ws.root(), ws.path(), &policy(7, 2), now()).unwrap();
    // The two newest *verified* ones are kept, though two unverified ones are newer.
    assert_kept(&r, &verified_a, "one of the newest 2 verified backups");
    assert_kept(&r, &verified_b, "one of the newest 2 verified backups");
    assert_deleted(&r, &verified_c, "older than 7 days");
    assert_kept(&r, &unverified_new, "within 7 days");
    assert_deleted(
        &r,
        &unverified_old,
        "unverified (manifest says verified: false)",
    );
}

#[test]
fn the_pointed_to_backup_is_kept_however_old() {
    let ws = Ws::new();
    let newest = ws.backup(1, true);
    let pointed = ws.backup(60, true);
    let other_old = ws.backup(61, true);
    let name = pointed.file_name().unwrap().to_string_lossy().into_owned();
    Pointer {
        deployment_timestamp: name.trim_start_matches(DIR_PREFIX).into(),
        backup_dir: format!("./backups/{name}"),
        manifest: format!("./backups/{name}/manifest.yml"),
        ..Default::default()
    }
    .write(ws.path())
    .unwrap();
    // The root given through a path that is not canonical: the comparison still holds.
    let root = ws.path().join("backups/../backups");
    let r = prune(&root, ws.path(), &policy(7, 1), now()).unwrap();
    let in_report = |p: &Path| root.join(p.file_name().unwrap());
    assert_kept(
        &r,
        &in_report(&newest),
        "one of the newest 1 verified backups",
    );
    assert_kept(&r, &in_report(&pointed), "named by .last-deployment-backup");
    assert_deleted(&r, &in_report(&other_old), "older than 7 days");
}

#[test]
fn keep_last_larger_than_what_exists() {
    let ws = Ws::new();
    let dirs: Vec<PathBuf> = (0..3).map(|i| ws.backup(30 + i, true)).collect();
    let r = prune(&ws.root(), ws.path(), &policy(7, 10), now()).unwrap();
    for d in &dirs {
        assert_kept(&r, d, "one of the newest 10 verified backups");
    }
    assert!(r.deleted.is_empty());
}

#[test]
fn never_deletes_them_all() {
    let ws = Ws::new();
    let a = ws.backup(30, true);
    let b = ws.backup(40, true);
    let r = prune(&ws.root(), ws.path(), &policy(7, 0), now()).unwrap();
    assert_kept(&r, &a, "would leave no verified backup");
    assert_deleted(&r, &b, "older than 7 days");

    // Only unverified ones: the newest stays all the same.
    let ws = Ws::new();
    let a = ws.backup(30, false);
    let b = ws.backup(40, false);
    let r = prune(&ws.root(), ws.path(), &policy(7, 3), now()).unwrap();
    assert_kept(&r, &a, "would leave no backup at all");
    assert_deleted(&r, &b, "unverified");
}

#[test]
fn dry_run_deletes_nothing() {
    let ws = Ws::new();
    let a = ws.backup(1, true);
    let b = ws.backup(30, true);
    let c = ws.backup(31, false);
    let r = prune(
        &ws.root(),
        ws.path(),
        &Policy {
            dry_run: true,
            ..policy(7, 1)
        },
        now(),
    )
    .unwrap();
    assert_eq!(decision(&r, &b).0, Verdict::Delete);
    assert_eq!(decision(&r, &c).0, Verdict::Delete);
    assert_eq!(decision(&r, &a).0, Verdict::Keep);
    assert!(a.exists() && b.exists() && c.exists());
    assert!(!b.join(PRUNING_MARKER).exists());
    assert!(r.deleted.is_empty());
    let log = r.log_lines().join("\n");
    assert!(
        log.contains(&format!("would delete: {}", b.display())),
        "{log}"
    );
    assert!(
        log.ends_with("Retention (dry run, nothing deleted): 2 would be deleted, 1 kept."),
        "{log}"
    );
    assert!(r.markdown().contains("| would delete |"));
}

/// `chattr +i` on a file inside the folder: as root, permission bits stop nothing, but the
/// immutable attribute makes unlink fail with EPERM even for root.
struct Immutable(PathBuf);

impl Immutable {
    fn set(path: &Path) -> Immutable {
        let out = Command::new("chattr")
            .arg("+i")
            .arg(path)
            .output()
            .expect("chattr (e2fsprogs) is needed for this test: apt-get install e2fsprogs");
        assert!(
            out.status.success(),
            "chattr +i {} failed: {}; this test needs a filesystem with the immutable attribute (ext4, xfs, btrfs)",
            path.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        Immutable(path.to_path_buf())
    }
}

impl Drop for Immutable {
    fn drop(&mut self) {
        let _ = Command::new("chattr").arg("-i").arg(&self.0).status();
    }
}

#[test]
fn a_folder_that_cannot_be_deleted_is_reported_and_the_rest_goes_on() {
    let ws = Ws::new();
    let newest = ws.backup(1, true);
    let stuck = ws.backup(30, true);
    let old = ws.backup(31, true);
    let pinned = stuck.join("sub/volume.tar.gz");
    let guard = Immutable::set(&pinned);

    let r = prune(&ws.root(), ws.path(), &policy(7, 1), now()).unwrap();
    assert!(!r.ok());
    assert_kept(&r, &newest, "one of the newest 1 verified backups");
    assert_deleted(&r, &old, "older than 7 days");
    assert_eq!(r.failed.len(), 1, "{:?}", r.failed);
    let (dir, msg) = &r.failed[0];
    assert_eq!(dir, &stuck);
    assert!(msg.contains("Operation not permitted"), "{msg}");
    assert!(msg.contains("chattr -i"), "{msg}");
    // Its manifest is still there (it goes last), but the folder is marked: never counted as
    // a restore point again, and the next prune finishes it.
    assert!(stuck.join("manifest.yml").exists());
    assert!(stuck.join(PRUNING_MARKER).exists());
    let log = r.log_lines().join("\n");
    assert!(
        log.contains(&format!("NOT deleted: {}", stuck.display())),
        "{log}"
    );
    assert!(
        log.ends_with("Retention: 1 deleted, 1 kept, 1 could not be deleted."),
        "{log}"
    );
    assert!(r.markdown().contains("| NOT deleted |"));

    // Even with keep-last large enough to keep it, a half-deleted folder is no restore point.
    let r = prune(&ws.root(), ws.path(), &policy(7, 5), now()).unwrap();
    assert_eq!(decision(&r, &stuck).0, Verdict::Delete);
    assert!(decision(&r, &stuck).1.contains("interrupted"));
    assert_eq!(r.failed.len(), 1);

    drop(guard);
    let r = prune(&ws.root(), ws.path(), &policy(7, 5), now()).unwrap();
    assert!(r.ok(), "{:?}", r.failed);
    assert_deleted(&r, &stuck, "interrupted");
    assert_kept(&r, &newest, "one of the newest 5 verified backups");
}

#[test]
fn an_undeletable_folder_itself_is_left_whole() {
    let ws = Ws::new();
    ws.backup(1, true);
    let stuck = ws.backup(30, true);
    let guard = Immutable::set(&stuck);
    let r = prune(&ws.root(), ws.path(), &policy(7, 1), now()).unwrap();
    assert_eq!(r.failed.len(), 1);
    assert!(
        r.failed[0].1.contains("nothing in it was removed"),
        "{}",
        r.failed[0].1
    );
    drop(guard);
    // Untouched: every file still there, no marker.
    assert!(stuck.join("db_x.sql.gz").exists() && stuck.join("sub/volume.tar.gz").exists());
    assert!(!stuck.join(PRUNING_MARKER).exists());
    let m = Manifest::load(&stuck.join("manifest.yml")).unwrap();
    assert!(m.verified);
}
