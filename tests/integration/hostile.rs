//! A backup is data, never code or configuration (issue 11, items 1-3): forged backups whose
//! manifest and files match each other (sizes and SHA-256 correct), restored into a real
//! PostgreSQL container and real volumes, and what a user would check afterwards.
//!
//! - [`meta_commands_and_server_programs_in_a_dump_are_refused_and_nothing_runs`]
//! - [`a_meta_command_in_the_middle_of_a_line_cannot_act_under_our_restrict_key`]
//! - [`a_database_name_with_connection_syntax_connects_nowhere`]
//! - [`only_the_volumes_the_inputs_name_are_restored`]
//! - [`a_commit_with_a_newline_is_refused`]
//! - [`special_bits_are_dropped_unless_asked_for`]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use predeploy_backup::manifest::{Manifest, FILE_NAME};

use crate::support::docker::{docker_ok, Pg, TreeSpec, Volume, BUSYBOX};
use crate::support::fixtures::gunzip;
use crate::support::rollback_corpus::{self as corpus, TarBuilder};
use crate::support::rollback_db;
use crate::support::{random_hex, Outcome, Workspace};

/// A seeded database and a verified backup of it; returns the backup folder and the dump's
/// file name.
fn db_backup(ws: &Arc<Workspace>, pg: &Pg) -> (PathBuf, String) {
    let o = ws
        .action("backup")
        .input("postgres-container", pg.name())
        .input("postgres-db", &pg.db)
        .input("postgres-user", &pg.user)
        .input("postgres-password", &pg.password)
        .run();
    o.assert_code(0);
    let dir = o.path(o.out("backup-dir"));
    let dump = Path::new(o.out("db-backup-path"))
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    (dir, dump)
}

/// A copy of the backup in `dir` whose dump has `payload` inserted before its first `SET`
/// line (right after pg_dump's header and `\restrict` line), the manifest re-recorded.
fn forged(ws: &Workspace, dir: &Path, dump: &str, tag: &str, payload: &str) -> PathBuf {
    let copy = ws.join(format!("forged-{tag}"));
    corpus::copy_dir(dir, &copy);
    let sql = String::from_utf8(gunzip(&std::fs::read(copy.join(dump)).unwrap())).unwrap();
    let at = sql.find("\nSET ").expect("pg_dump's SET lines") + 1;
    let text = format!("{}{payload}\n{}", &sql[..at], &sql[at..]);
    std::fs::write(copy.join(dump), corpus::gzip(text.as_bytes())).unwrap();
    corpus::refresh_manifest(&copy)
}

/// The line of the first `SET` in a forged dump (the payload's lines come right before it).
fn payload_line(manifest: &Path, dump: &str) -> usize {
    let sql = gunzip(&std::fs::read(manifest.parent().unwrap().join(dump)).unwrap());
    let sql = String::from_utf8(sql).unwrap();
    let at = sql.find("\nSET ").unwrap() + 1;
    sql[..at].lines().count() + 1
}

fn marker_exists(pg: &Pg, path: &str) -> bool {
    pg.container.exec(&["test", "-e", path]).status.success()
}

fn rollback(ws: &Arc<Workspace>, pg: &Pg, manifest: &Path) -> Outcome {
    ws.action("rollback")
        .input("manifest", manifest.display().to_string())
        .input("postgres-container", pg.name())
        .input("postgres-password", &pg.password)
        .run()
}

#[test]
fn meta_commands_and_server_programs_in_a_dump_are_refused_and_nothing_runs() {
    let pg = Pg::seeded("hs-meta");
    let ws = Workspace::new();
    let (dir, dump) = db_backup(&ws, &pg);
    let before = rollback_db::fingerprint(&pg);
    let m = random_hex(6);
    // `\i` would run this script (it leaves its own marker).
    let script = format!("/tmp/pbt-{m}-script.sql");
    pg.container.exec_ok(&[
        "sh",
        "-c",
        &format!("printf '\\\\! touch /tmp/pbt-{m}-i\\n' > {script}"),
    ]);
    // (tag, payload, marker the payload leaves if it runs, rule the message names)
    let cases: Vec<(&str, String, Option<String>, &str)> = vec![
        (
            "bang",
            format!("\\! touch /tmp/pbt-{m}-bang"),
            Some("bang".into()),
            "meta-command",
        ),
        (
            "o",
            format!("\\o /tmp/pbt-{m}-o"),
            Some("o".into()),
            "meta-command",
        ),
        ("c", "\\c postgres".into(), None, "meta-command"),
        ("connect", "\\connect postgres".into(), None, "meta-command"),
        (
            "copy",
            format!("\\copy (SELECT 1) TO '/tmp/pbt-{m}-copy'"),
            Some("copy".into()),
            "meta-command",
        ),
        (
            "i",
            format!("\\i {script}"),
            Some("i".into()),
            "meta-command",
        ),
        ("set", "\\set ON_ERROR_STOP 0".into(), None, "meta-command"),
        (
            "w",
            format!("\\w /tmp/pbt-{m}-w"),
            Some("w".into()),
            "meta-command",
        ),
        (
            "unrestrict",
            "\\unrestrict anykey".into(),
            None,
            "meta-command",
        ),
        (
            "program",
            format!("COPY (SELECT 1) TO PROGRAM 'touch /tmp/pbt-{m}-program';"),
            Some("program".into()),
            "TO PROGRAM",
        ),
        (
            "program-split",
            format!("COPY (SELECT 1) TO\n  program\n  'touch /tmp/pbt-{m}-program-split';"),
            Some("program-split".into()),
            "TO PROGRAM",
        ),
        (
            "lo_export",
            format!("SELECT lo_export(lo_from_bytea(0, 'x'), '/tmp/pbt-{m}-lo_export');"),
            Some("lo_export".into()),
            "lo_export",
        ),
    ];
    let mut failures = vec![];
    for (tag, payload, marker, rule) in &cases {
        let manifest = forged(&ws, &dir, &dump, tag, payload);
        // Found on the payload's last line (where `'` follows `PROGRAM` in the split case).
        let line = payload_line(&manifest, &dump) - 1;
        let o = rollback(&ws, &pg, &manifest);
        let mut problems = vec![];
        if o.code != 1 {
            problems.push(format!("exit {} instead of 1", o.code));
        }
        let text = o.all_text();
        for needle in [
            "sql-safety".to_string(),
            dump.clone(),
            format!("line {line}:"),
            rule.to_string(),
        ] {
            if !text.contains(&needle) {
                problems.push(format!("the message does not name {needle:?}"));
            }
        }
        if o.outputs.get("restored").map(String::as_str) == Some("true") {
            problems.push("restored=true".into());
        }
        if o.outputs.contains_key("safety-backup-dir") {
            problems.push("a safety backup was made (the check came too late)".into());
        }
        if let Some(mk) = marker {
            let path = format!("/tmp/pbt-{m}-{mk}");
            if marker_exists(&pg, &path) {
                problems.push(format!("{path} exists: the payload ran"));
            }
        }
        if !problems.is_empty() {
            failures.push(format!("{tag}: {}\n{o}", problems.join("; ")));
        }
    }
    rollback_db::fingerprint(&pg).assert_same(&before, "after the refused rollbacks");
    assert!(
        failures.is_empty(),
        "{} of {} hostile dumps were not refused properly:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n\n")
    );
    // The negative control: the same backup, untouched, restores (so the refusals above are
    // about the payloads, not the setup).
    let o = rollback(&ws, &pg, &dir.join(FILE_NAME));
    o.assert_code(0);
    assert_eq!(o.out("restored"), "true");
}

#[test]
fn a_meta_command_in_the_middle_of_a_line_cannot_act_under_our_restrict_key() {
    let pg = Pg::seeded("hs-mid");
    let version = pg.container.exec_ok(&["psql", "--version"]);
    let ws = Workspace::new();
    let (dir, dump) = db_backup(&ws, &pg);
    let before = rollback_db::fingerprint(&pg);
    let m = random_hex(6);
    // psql reads a backslash anywhere outside quotes as a meta-command; the line check only
    // sees line starts, the restrict key covers the rest.
    let manifest = forged(
        &ws,
        &dir,
        &dump,
        "mid",
        &format!("SELECT 1 \\! touch /tmp/pbt-{m}-mid\n;"),
    );
    let o = rollback(&ws, &pg, &manifest);
    assert!(
        !marker_exists(&pg, &format!("/tmp/pbt-{m}-mid")),
        "the meta-command ran ({version})\n{o}"
    );
    assert_ne!(o.code, 0, "{o}");
    assert_ne!(o.outputs.get("restored").map(String::as_str), Some("true"));
    rollback_db::fingerprint(&pg).assert_same(&before, "after the failed load");
}

/// A TCP listener that counts connections.
struct Listener {
    port: u16,
    connects: Arc<AtomicUsize>,
}

impl Listener {
    fn start() -> Listener {
        let l = TcpListener::bind("0.0.0.0:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let connects = Arc::new(AtomicUsize::new(0));
        let c = connects.clone();
        std::thread::spawn(move || {
            for s in l.incoming() {
                c.fetch_add(1, Ordering::SeqCst);
                drop(s);
            }
        });
        Listener { port, connects }
    }

    fn count(&self) -> usize {
        self.connects.load(Ordering::SeqCst)
    }
}

#[test]
fn a_database_name_with_connection_syntax_connects_nowhere() {
    // On Docker's default bridge, so that psql in the container can reach this host.
    let pg = Pg::builder("hs-conn").network("bridge").start();
    pg.load_seed();
    let gateway = docker_ok(&["inspect", "-f", "{{.NetworkSettings.Gateway}}", pg.name()]);
    let listener = Listener::start();
    let ws = Workspace::new();
    let (dir, _) = db_backup(&ws, &pg);
    let evil_name = format!("host={gateway} port={} dbname=appdb", listener.port);
    let mut m = Manifest::load(&dir.join(FILE_NAME)).unwrap();
    m.database.as_mut().unwrap().name = Some(evil_name.clone());
    m.write(&dir).unwrap();

    // The control: that connection string, used from the container, reaches the listener.
    let _ = pg.container.exec(&[
        "psql",
        "-X",
        &format!(
            "dbname=x host={gateway} port={} connect_timeout=3",
            listener.port
        ),
        "-c",
        "select 1",
    ]);
    crate::support::wait_for(
        "the control connection from the container",
        Duration::from_secs(10),
        Duration::from_millis(50),
        || (listener.count() > 0).then_some(()),
    );
    let control = listener.count();

    for dry in [true, false] {
        let o = ws
            .action("rollback")
            .input("manifest", dir.join(FILE_NAME).display().to_string())
            .input("postgres-container", pg.name())
            .input("postgres-password", &pg.password)
            .input("dry-run", dry.to_string())
            .run();
        o.assert_code(2);
        o.assert_mentions("database.name");
        o.assert_mentions("not a plain name");
        assert_ne!(o.outputs.get("restored").map(String::as_str), Some("true"));
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(
            listener.count(),
            control,
            "the rollback (dry-run {dry}) connected to the address in the manifest\n{o}"
        );
    }
}

#[test]
fn only_the_volumes_the_inputs_name_are_restored() {
    let ws = Workspace::new();
    let (named, unnamed) = std::thread::scope(|s| {
        let a = s.spawn(|| Volume::with_tree("hs-named", &TreeSpec::awkward()));
        let b = s.spawn(|| Volume::with_tree("hs-unnamed", &TreeSpec::awkward()));
        (a.join().unwrap(), b.join().unwrap())
    });
    let o = ws
        .action("backup")
        .input("volumes", format!("{},{}", named.name, unnamed.name))
        .env("PREDEPLOY_HELPER_IMAGE", BUSYBOX)
        .run();
    o.assert_code(0);
    let original = named.fingerprint();
    for v in [&named, &unnamed] {
        let out = v.busybox(
            "echo changed >> /data/README.txt && echo new > /data/new.txt",
            &[],
            false,
        );
        assert!(out.status.success());
    }
    let unnamed_changed = unnamed.fingerprint();

    // Nothing named: nothing restored, and the step says how to name targets.
    let o = ws
        .action("rollback")
        .env("PREDEPLOY_HELPER_IMAGE", BUSYBOX)
        .run();
    o.assert_code(2);
    o.assert_mentions("nothing to restore");
    unnamed
        .fingerprint()
        .assert_same(&unnamed_changed, "no target named");

    // Only `named`: the other is skipped, reported, and byte for byte as it was.
    let o = ws
        .action("rollback")
        .input("volumes", &named.name)
        .input("restore-special-bits", "true") // the awkward tree has setgid and sticky folders
        .env("PREDEPLOY_HELPER_IMAGE", BUSYBOX)
        .run();
    o.assert_code(0);
    assert_eq!(o.out("restored"), "true");
    named
        .fingerprint()
        .assert_same(&original, "the named volume");
    unnamed
        .fingerprint()
        .assert_same(&unnamed_changed, "the volume that was not named");
    assert!(
        o.summary_text()
            .contains(&format!("volume {}: not restored", unnamed.name)),
        "the summary does not report the skipped volume\n{o}"
    );

    // A forged manifest naming a volume that was never backed up: untouched either way.
    let victim = Volume::with_tree("hs-victim", &TreeSpec::awkward());
    let victim_before = victim.fingerprint();
    let tar = TarBuilder::new()
        .dir("./", 0o777)
        .file("./planted.txt", b"planted")
        .finish();
    let manifest = corpus::volume_backup(&ws.join("forged-victim"), &victim.name, &tar);
    for (inputs, code) in [
        (vec![], 2),
        (vec![("volumes", named.name.clone())], 2),
        (vec![("restore-volumes", named.name.clone())], 2),
    ] {
        let mut a = ws
            .action("rollback")
            .input("manifest", manifest.display().to_string())
            .env("PREDEPLOY_HELPER_IMAGE", BUSYBOX);
        for (k, v) in &inputs {
            a = a.input(k, v);
        }
        let o = a.run();
        o.assert_code(code);
        assert_ne!(o.outputs.get("restored").map(String::as_str), Some("true"));
        victim
            .fingerprint()
            .assert_same(&victim_before, "a volume only the manifest names");
    }
}

#[test]
fn a_commit_with_a_newline_is_refused() {
    let ws = Workspace::new();
    let vol = Volume::with_tree("hs-commit", &TreeSpec::awkward());
    let before = vol.fingerprint();
    let tar = TarBuilder::new()
        .dir("./", 0o755)
        .file("./a.txt", b"a")
        .finish();
    let dir = ws.join("forged-commit");
    let manifest = corpus::volume_backup(&dir, &vol.name, &tar);
    for (field, value) in [
        (
            "commit",
            "0123456789abcdef0123456789abcdef01234567\n::error::forged",
        ),
        ("commit", "main"),
        ("branch", "main\nbranch=evil"),
    ] {
        let mut m = Manifest::load(&manifest).unwrap();
        m.git.commit = Some("0123456789abcdef0123456789abcdef01234567".into());
        m.git.branch = Some("main".into());
        if field == "commit" {
            m.git.commit = Some(value.into());
        } else {
            m.git.branch = Some(value.into());
        }
        m.write(&dir).unwrap();
        for dry in ["true", "false"] {
            let o = ws
                .action("rollback")
                .input("manifest", manifest.display().to_string())
                .input("volumes", &vol.name)
                .input("dry-run", dry)
                .env("PREDEPLOY_HELPER_IMAGE", BUSYBOX)
                .run();
            o.assert_code(1);
            o.assert_mentions(&format!("records {field}"));
            assert!(
                !o.outputs.contains_key(field) || o.out(field).is_empty(),
                "{field} was output\n{o}"
            );
            assert!(
                !o.stdout.lines().any(|l| l.starts_with("::error::forged")),
                "a forged workflow command reached the runner\n{o}"
            );
            vol.fingerprint().assert_same(&before, "after the refusal");
        }
    }
}

/// `stat -c %a` of paths in the volume.
fn modes(v: &Volume, paths: &str) -> String {
    let o = v.busybox(&format!("cd /data && stat -c '%n %a' {paths}"), &[], true);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

#[test]
fn special_bits_are_dropped_unless_asked_for() {
    let ws = Workspace::new();
    let vol = Volume::with_tree("hs-suid", &TreeSpec::awkward());
    let o = vol.busybox(
        "cp /bin/busybox /data/suid && chmod 4755 /data/suid && mkdir /data/shared && chmod 3777 /data/shared",
        &[],
        false,
    );
    assert!(o.status.success());
    let paths = "suid shared README.txt";
    let original = modes(&vol, paths);
    assert_eq!(
        original.lines().take(2).collect::<Vec<_>>(),
        ["suid 4755", "shared 3777"]
    );
    let b = ws
        .action("backup")
        .input("volumes", &vol.name)
        .env("PREDEPLOY_HELPER_IMAGE", BUSYBOX)
        .run();
    b.assert_code(0);
    let manifest = b.path(b.out("manifest-path")).display().to_string();

    let o = ws
        .action("rollback")
        .input("manifest", &manifest)
        .input("volumes", &vol.name)
        .env("PREDEPLOY_HELPER_IMAGE", BUSYBOX)
        .run();
    o.assert_code(0);
    o.assert_mentions("restore-special-bits");
    let got = modes(&vol, paths);
    assert_eq!(
        got.lines().take(2).collect::<Vec<_>>(),
        ["suid 755", "shared 777"],
        "{o}"
    );
    assert_eq!(got.lines().nth(2), original.lines().nth(2));

    let o = ws
        .action("rollback")
        .input("manifest", &manifest)
        .input("volumes", &vol.name)
        .input("restore-special-bits", "true")
        .env("PREDEPLOY_HELPER_IMAGE", BUSYBOX)
        .run();
    o.assert_code(0);
    assert_eq!(modes(&vol, paths), original, "{o}");
}
