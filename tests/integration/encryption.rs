//! Encryption at rest with age (issue 14), against a real PostgreSQL container, a real Docker
//! volume and the reference `age` CLI (Debian's `age` package, installed by scripts/test):
//!
//! - [`encrypted_backup_round_trips_and_opens_with_the_reference_cli`]: our files decrypt
//!   with `age -d -i` and restore by hand (`| gunzip | psql`, `| tar tz`); `verify` with and
//!   without the identity; a rollback without or with the wrong identity is refused (exit 2,
//!   nothing touched), with the right one restores the tables and the tree; the identity
//!   appears nowhere (stdout, stderr, outputs, summary, manifest, any file of the workspace).
//! - [`reference_cli_files_are_accepted_and_faults_are_caught`]: files `age -r` wrote, named
//!   and recorded as ours, pass `verify` and restore; a flipped ciphertext byte is caught
//!   without the key (SHA-256 against the manifest); a truncated dump encrypted with the
//!   reference CLI (and a manifest forged with its right SHA-256) is caught with the key and
//!   not restored; an identity given for a backup in clear text is refused (exit 2).
//! - [`ssh_ed25519_key_works_end_to_end`]: a key from `ssh-keygen -t ed25519 -N ''`, its
//!   `.pub` line as the recipient, the OpenSSH private key as the identity: verify-restore,
//!   `age -d -i id_ed25519` (reference CLI), verify and rollback; the manifest records the
//!   key's fingerprint, never the key; the safety backup is encrypted to the same key.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;

use predeploy_backup::manifest::{Manifest, FILE_NAME};

use crate::support::action::Action;
use crate::support::age::{
    age_decrypt, assert_secret_nowhere, keygen, sh, ssh_fingerprint, ssh_keygen,
};
use crate::support::docker::{Pg, TreeSpec, Volume};
use crate::support::fixtures::{gunzip, seed_row_counts};
use crate::support::rollback_corpus::gzip;
use crate::support::rollback_db;
use crate::support::{file_size, sha256sum, Outcome, Workspace};

const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";

/// `age -r PUBLIC -o OUT` with `data` on stdin (the reference CLI).
fn age_encrypt(public: &str, data: &[u8], out: &Path) {
    use std::io::Write;
    let mut child = Command::new("age")
        .arg("-r")
        .arg(public)
        .arg("-o")
        .arg(out)
        .stdin(Stdio::piped())
        .spawn()
        .expect("age runs");
    child.stdin.take().unwrap().write_all(data).unwrap();
    assert!(child.wait().unwrap().success(), "age -r failed");
}

struct Stack {
    ws: Arc<Workspace>,
    pg: Pg,
    vol: Volume,
}

#[derive(Debug, PartialEq)]
struct State {
    db: crate::support::docker::DbFingerprint,
    vol: crate::support::docker::TreeFingerprint,
}

impl Stack {
    fn new(test: &str) -> Stack {
        let (pg, vol) = Pg::seeded_with_volume(test, &TreeSpec::awkward());
        Stack {
            ws: Workspace::new(),
            pg,
            vol,
        }
    }

    fn state(&self) -> State {
        State {
            db: rollback_db::fingerprint(&self.pg),
            vol: self.vol.fingerprint(),
        }
    }

    fn assert_state(&self, want: &State, what: &str) {
        let now = self.state();
        now.db.assert_same(&want.db, what);
        now.vol.assert_same(&want.vol, what);
    }

    fn backup(&self) -> Action {
        self.ws
            .action("backup")
            .postgres(&self.pg)
            .input("volumes", &self.vol.name)
            .input("commit", COMMIT)
            .input("branch", "main")
    }

    /// A backup encrypted to `recipients` whose verify-restore reads the dump back with
    /// `identity`: it succeeds, verified, and both files are age files (`….sql.gz.age`,
    /// `….tar.gz.age`). The outcome, the dump's path and the archive's.
    fn encrypted_backup(&self, recipients: &str, identity: &str) -> (Outcome, PathBuf, PathBuf) {
        let b = self
            .backup()
            .input("encrypt-recipients", recipients)
            .input("verify-restore", "true")
            .input("decrypt-identity", identity)
            .run();
        b.assert_code(0);
        assert_eq!(b.out("verified"), "true", "{b}");
        let db_path = b.path(b.out("db-backup-path"));
        let vol_path = b.path(b.out("volume-backup-paths"));
        for (p, ext) in [(&db_path, ".sql.gz.age"), (&vol_path, ".tar.gz.age")] {
            assert!(p.to_string_lossy().ends_with(ext), "{}", p.display());
            let head = std::fs::read(p).unwrap();
            assert!(
                head.starts_with(b"age-encryption.org/v1\n"),
                "{}",
                p.display()
            );
        }
        (b, db_path, vol_path)
    }

    fn rollback(&self) -> Action {
        self.ws
            .action("rollback")
            .input("volumes", &self.vol.name)
            .input("restore-special-bits", "true")
            .postgres_target(&self.pg)
            .without_env("PREDEPLOY_AGE_IDENTITY")
    }

    fn verify(&self, db: &Path, vol: &Path) -> Action {
        self.ws
            .action("verify")
            .input("db-backup", db.display().to_string())
            .input("volume-backups", vol.display().to_string())
            .without_env("PREDEPLOY_AGE_IDENTITY")
    }

    /// What a bad deploy does to the data.
    fn change(&self, tag: &str) {
        self.pg.psql(&format!(
            "DELETE FROM public.events WHERE id > 4500; UPDATE public.schedules SET title = 'changed {tag}' WHERE id = 3"
        ));
        let out = self.vol.busybox(
            &format!("printf 'x' > /data/added-{tag}.txt && rm -f /data/README.txt"),
            &[],
            false,
        );
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

// -----------------------------------------------------------------------------------------

#[test]
fn encrypted_backup_round_trips_and_opens_with_the_reference_cli() {
    let s = Stack::new("enc-roundtrip");
    let key = keygen("ops");
    let other = keygen("other");
    let before = s.state();

    // Encrypted to two recipients; verify-restore reads the dump back with the identity.
    let (b, db_path, vol_path) =
        s.encrypted_backup(&format!("{},\n{}", key.public, other.public), &key.secret);

    // The manifest: the SHA-256 of the stored (encrypted) bytes, `encrypted: age`, the
    // recipients' public keys, the plaintext checks made while writing.
    let m = Manifest::load(&b.path(b.out("manifest-path"))).unwrap();
    let dir = b.path(b.out("backup-dir"));
    let db = m.database.as_ref().unwrap();
    assert_eq!(db.tables, seed_row_counts());
    assert!(m.restore_check.as_ref().is_some_and(|r| r.passed));
    for f in m.files() {
        let p = dir.join(&f.path);
        assert_eq!(f.encrypted.as_deref(), Some("age"), "{f:?}");
        assert_eq!(f.recipients, vec![key.public.clone(), other.public.clone()]);
        assert_eq!(sha256sum(&p), f.sha256);
        assert_eq!(file_size(&p), f.size);
        for c in ["age-header", "age", "gzip", "sha256"] {
            assert!(
                f.checks.iter().any(|x| x == c),
                "{c} missing in {:?}",
                f.checks
            );
        }
    }
    assert!(db.file.checks.iter().any(|c| c == "sql-complete"));
    assert!(m.volumes[0].file.checks.iter().any(|c| c == "tar"));
    let text = std::fs::read_to_string(dir.join(FILE_NAME)).unwrap();
    assert!(text.contains("encrypted: age"), "{text}");

    // By hand with the reference CLI: `age -d -i key | gunzip | psql` gives the same tables…
    s.pg.psql("CREATE DATABASE byhand");
    sh(&format!(
        "age -d -i '{}' '{}' | gunzip -c | docker exec -i {} psql -X -q -v ON_ERROR_STOP=1 -U {} -d byhand",
        key.file.display(),
        db_path.display(),
        s.pg.name(),
        s.pg.user
    ));
    rollback_db::fingerprint_of(&s.pg, "byhand").assert_same(&before.db, "restored by hand");
    s.pg.psql("DROP DATABASE byhand");
    // … and `age -d | tar tz` lists the archive (also with the other recipient's key).
    let listed = sh(&format!(
        "age -d -i '{}' '{}' | tar tz",
        other.file.display(),
        vol_path.display()
    ));
    assert_eq!(
        listed.lines().count() as u64,
        m.volumes[0].entries,
        "{listed}"
    );
    assert!(listed
        .lines()
        .any(|l| l.trim_start_matches("./") == "README.txt"));

    // verify without the key: the stored bytes; with it: everything.
    let v = s.verify(&db_path, &vol_path).run();
    v.assert_code(0);
    assert_eq!(v.out("verified"), "true", "{v}");
    v.assert_mentions("not their content");
    let v2 = s
        .verify(&db_path, &vol_path)
        .input("decrypt-identity", &key.secret)
        .run();
    v2.assert_code(0);
    assert_eq!(v2.out("verified"), "true", "{v2}");
    assert!(!v2.all_text().contains("not their content"), "{v2}");

    s.change("deploy");
    let changed = s.state();
    let folders = s.backup_folders();

    // No identity: exit 2, the recipient named, nothing touched (not even a safety backup).
    let no_key = s.rollback().run();
    no_key.assert_code(2);
    no_key
        .assert_mentions(&key.public)
        .assert_mentions("pass the matching identity in decrypt-identity");
    assert_eq!(no_key.out("restored"), "false");
    s.assert_state(&changed, "after a rollback without the identity");
    assert_eq!(s.backup_folders(), folders);

    // The wrong identity: the same.
    let wrong_id = keygen("wrong");
    let wrong = s
        .rollback()
        .input("decrypt-identity", &wrong_id.secret)
        .run();
    wrong.assert_code(2);
    wrong
        .assert_mentions(&key.public)
        .assert_mentions("pass the matching identity in decrypt-identity");
    s.assert_state(&changed, "after a rollback with the wrong identity");
    assert_eq!(s.backup_folders(), folders);

    // The right one (from the environment, as a secret would be passed): restored.
    let ok = s
        .rollback()
        .env("PREDEPLOY_AGE_IDENTITY", &key.secret)
        .run();
    ok.assert_code(0);
    assert_eq!(ok.out("restored"), "true", "{ok}");
    assert_eq!(ok.out("commit"), COMMIT);
    s.assert_state(&before, "after the rollback");

    assert_secret_nowhere(&key.secret, &[&b, &v2, &ok], &s.ws);
    assert_secret_nowhere(&wrong_id.secret, &[&wrong], &s.ws);
}

/// Copies a backup folder (files and manifest) to `to`.
fn copy_backup(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

/// Rewrites `dir`'s manifest with the real size and SHA-256 of every file (a forged record).
fn reseal_manifest(dir: &Path) -> PathBuf {
    let path = dir.join(FILE_NAME);
    let mut m = Manifest::load(&path).unwrap();
    let fix = |f: &mut predeploy_backup::manifest::FileRecord| {
        f.size = file_size(&dir.join(&f.path));
        f.sha256 = sha256sum(&dir.join(&f.path));
    };
    if let Some(d) = m.database.as_mut() {
        fix(&mut d.file);
    }
    for v in &mut m.volumes {
        fix(&mut v.file);
    }
    std::fs::remove_file(&path).unwrap();
    m.write(dir).unwrap();
    path
}

#[test]
fn reference_cli_files_are_accepted_and_faults_are_caught() {
    let s = Stack::new("enc-interop");
    let key = keygen("ops");
    let before = s.state();
    let b = s.backup().input("encrypt-recipients", &key.public).run();
    b.assert_code(0);
    let dir = b.path(b.out("backup-dir"));
    let m = Manifest::load(&dir.join(FILE_NAME)).unwrap();
    let db_name = m.database.as_ref().unwrap().file.path.clone();
    let vol_name = m.volumes[0].file.path.clone();
    let plain_db = age_decrypt(&key, &dir.join(&db_name));
    let plain_vol = age_decrypt(&key, &dir.join(&vol_name));

    // 1. Files the reference CLI wrote (`age -r`), named and recorded as ours.
    let forged = s.ws.join("forged-ok");
    copy_backup(&dir, &forged);
    age_encrypt(&key.public, &plain_db, &forged.join(&db_name));
    age_encrypt(&key.public, &plain_vol, &forged.join(&vol_name));
    assert_ne!(
        sha256sum(&forged.join(&db_name)),
        sha256sum(&dir.join(&db_name))
    );
    let forged_manifest = reseal_manifest(&forged);
    let v = s
        .verify(&forged.join(&db_name), &forged.join(&vol_name))
        .input("decrypt-identity", &key.secret)
        .run();
    v.assert_code(0);
    assert_eq!(v.out("verified"), "true", "{v}");

    s.change("one");
    let ok = s
        .rollback()
        .input("manifest", forged_manifest.display().to_string())
        .input("decrypt-identity", &key.secret)
        .run();
    ok.assert_code(0);
    assert_eq!(ok.out("restored"), "true", "{ok}");
    s.assert_state(&before, "after restoring the reference CLI's files");

    // 2. One flipped ciphertext byte: caught without the key (SHA-256 against the manifest).
    let flipped = s.ws.join("flipped");
    copy_backup(&dir, &flipped);
    let f = flipped.join(&db_name);
    let mut bytes = std::fs::read(&f).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x01;
    std::fs::write(&f, &bytes).unwrap();
    let v = s.verify(&f, &flipped.join(&vol_name)).run();
    v.assert_code(1);
    assert_eq!(v.out("verified"), "false");
    v.assert_mentions("sha256").assert_mentions("altered");
    // With the key, age's authentication catches it too (the manifest forged to match).
    reseal_manifest(&flipped);
    let v = s
        .verify(&f, &flipped.join(&vol_name))
        .input("decrypt-identity", &key.secret)
        .run();
    v.assert_code(1);
    v.assert_mentions("age authentication");

    // 3. A plaintext fault: a dump cut short, encrypted with the reference CLI, its manifest
    //    forged with the right SHA-256. Without the key it looks fine; with it, it is not.
    let cut = s.ws.join("cut");
    copy_backup(&dir, &cut);
    let sql = gunzip(&plain_db);
    let short = &sql[..sql.len() - 300];
    age_encrypt(&key.public, &gzip(short), &cut.join(&db_name));
    let cut_manifest = reseal_manifest(&cut);
    let v = s.verify(&cut.join(&db_name), &cut.join(&vol_name)).run();
    v.assert_code(0);
    let v = s
        .verify(&cut.join(&db_name), &cut.join(&vol_name))
        .input("decrypt-identity", &key.secret)
        .run();
    v.assert_code(1);
    v.assert_mentions("sql-complete");
    s.change("two");
    let changed = s.state();
    let folders = s.backup_folders();
    let r = s
        .rollback()
        .input("manifest", cut_manifest.display().to_string())
        .input("decrypt-identity", &key.secret)
        .run();
    r.assert_code(1);
    r.assert_mentions("sql-complete");
    assert_eq!(r.out("restored"), "false");
    s.assert_state(&changed, "after refusing the cut dump");
    assert_eq!(s.backup_folders(), folders);

    // 4. An identity given on purpose for a backup in clear text: exit 2, nothing touched.
    let clear = s.backup().run();
    clear.assert_code(0);
    assert!(clear.out("db-backup-path").ends_with(".sql.gz"));
    s.change("three");
    let changed = s.state();
    let folders = s.backup_folders();
    let r = s.rollback().input("decrypt-identity", &key.secret).run();
    r.assert_code(2);
    r.assert_mentions("not encrypted");
    s.assert_state(&changed, "after refusing an identity for a clear backup");
    assert_eq!(s.backup_folders(), folders);
    // From the environment it is only noted, and the rollback goes ahead.
    let r = s
        .rollback()
        .env("PREDEPLOY_AGE_IDENTITY", &key.secret)
        .run();
    r.assert_code(0);
    assert_eq!(r.out("restored"), "true", "{r}");
    assert_secret_nowhere(&key.secret, &[&v, &r], &s.ws);
}

#[test]
fn ssh_ed25519_key_works_end_to_end() {
    let s = Stack::new("enc-ssh");
    let key = ssh_keygen("id_ed25519");
    let before = s.state();

    // The `.pub` line as the recipient; verify-restore reads the dump back with the
    // OpenSSH private key as the identity.
    let (b, db_path, vol_path) = s.encrypted_backup(&key.public, &key.secret);
    // The manifest records the key's fingerprint as `ssh-keygen -l` shows it, never the key.
    let manifest = b.path(b.out("manifest-path"));
    let m = Manifest::load(&manifest).unwrap();
    assert!(m.restore_check.as_ref().is_some_and(|r| r.passed), "{b}");
    let fp = format!("ssh-ed25519 {}", ssh_fingerprint(&key));
    for f in m.files() {
        assert_eq!(f.encrypted.as_deref(), Some("age"), "{f:?}");
        assert_eq!(f.recipients, vec![fp.clone()], "{f:?}");
    }
    let text = std::fs::read_to_string(&manifest).unwrap();
    let blob = key.public.split_whitespace().nth(1).unwrap();
    assert!(
        !text.contains(blob),
        "the public key itself is in the manifest\n{text}"
    );

    // The reference CLI opens the dump with the private key (`age -d -i id_ed25519`).
    let sql = gunzip(&age_decrypt(&key, &db_path));
    let sql = String::from_utf8_lossy(&sql);
    assert!(sql.contains("PostgreSQL database dump complete"), "{sql}");

    // verify with the ssh identity checks the content.
    let v = s
        .verify(&db_path, &vol_path)
        .input("decrypt-identity", &key.secret)
        .run();
    v.assert_code(0);
    assert_eq!(v.out("verified"), "true", "{v}");
    assert!(!v.all_text().contains("not their content"), "{v}");

    // Rollback with the OpenSSH private key restores tables and tree.
    s.change("deploy");
    let ok = s.rollback().input("decrypt-identity", &key.secret).run();
    ok.assert_code(0);
    assert_eq!(ok.out("restored"), "true", "{ok}");
    s.assert_state(&before, "after the rollback with the ssh key");

    // The safety backup (the changed state) is encrypted to the same key, and opens with it.
    let safety = ok.path(ok.out("safety-backup-dir"));
    let sm = Manifest::load(&safety.join(FILE_NAME)).unwrap();
    for f in sm.files() {
        assert!(f.path.ends_with(".age"), "{f:?}");
        assert_eq!(f.encrypted.as_deref(), Some("age"), "{f:?}");
        assert_eq!(f.recipients, vec![fp.clone()], "{f:?}");
    }
    let safety_db = safety.join(&sm.database.as_ref().unwrap().file.path);
    let sql = gunzip(&age_decrypt(&key, &safety_db));
    assert!(
        String::from_utf8_lossy(&sql).contains("changed deploy"),
        "the safety backup holds the state before the rollback"
    );

    assert_secret_nowhere(&key.secret, &[&b, &v, &ok], &s.ws);
}
