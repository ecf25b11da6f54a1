//! `backup` mode through the binary, run as the GitHub runner runs the action, against real
//! PostgreSQL containers and Docker volumes: what it writes restores to identical data,
//! containers are found by compose labels, `stop-containers` really stops them around the
//! archive (and always starts them again), every failure has its exit code and leaves
//! nothing that looks like a backup, and two runs on one root do not interleave.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::support::action::{REF_NAME, SHA};
use crate::support::docker::{
    self, container_events, docker_ok, docker_time_now, unique_name, Container, Pg, TreeSpec,
    Volume, BUSYBOX,
};
use crate::support::fixtures::{self, Tmpfs};
use crate::support::{file_size, sha256sum, wait_for, Action, Outcome, Workspace};

fn manifest(o: &Outcome) -> serde_json::Value {
    let path = o.path(o.out("manifest-path"));
    let text =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}\n{o}", path.display()));
    serde_saphyr::from_str(&text)
        .unwrap_or_else(|e| panic!("manifest.yml is not YAML: {e}\n{text}"))
}

/// `backup` of a database container (user, database and password as started).
fn backup_of(ws: &std::sync::Arc<Workspace>, pg: &Pg) -> Action {
    ws.action("backup")
        .input("postgres-container", pg.name())
        .input("postgres-db", &pg.db)
        .input("postgres-user", &pg.user)
        .input("postgres-password", &pg.password)
}

/// A failed backup: the exit code, `verified=false`, and nothing that looks like a backup
/// (no `pre-deployment-*` folder, no hidden `.partial` one, no pointer).
fn assert_failed_cleanly(o: &Outcome, code: i32) {
    o.assert_code(code);
    assert_eq!(
        o.outputs.get("verified").map(String::as_str),
        Some("false"),
        "verified=false\n{o}"
    );
    assert!(
        !o.output_list
            .iter()
            .any(|(k, v)| k == "verified" && v == "true"),
        "verified=true written\n{o}"
    );
    let left = o.ws.backup_folders("backups");
    assert!(left.is_empty(), "left behind in backups/: {left:?}\n{o}");
    assert!(
        o.ws.pointer().is_none(),
        ".last-deployment-backup written\n{o}"
    );
    for k in ["db-backup-path", "volume-backup-paths", "manifest-path"] {
        if let Some(v) = o.outputs.get(k).filter(|v| !v.is_empty()) {
            for p in v.lines() {
                assert!(
                    !o.path(p).exists(),
                    "output {k} points at a file that exists: {p}\n{o}"
                );
            }
        }
    }
    assert!(!o.errors().is_empty(), "an ::error annotation\n{o}");
}

/// No helper container of the product still mounts `volume`.
fn assert_no_helpers_left(volume: &str) {
    let left = docker_ok(&[
        "ps",
        "-a",
        "--filter",
        &format!("volume={volume}"),
        "--filter",
        "label=org.predeploy-backup.helper",
        "--format",
        "{{.Names}}",
    ]);
    assert!(left.is_empty(), "helper containers left behind: {left}");
}

/// A folder name `pre-deployment-YYYYMMDD_HHMMSS`, and its timestamp.
fn folder_timestamp(dir: &str) -> String {
    let name = Path::new(dir)
        .file_name()
        .unwrap()
        .to_string_lossy()
        .to_string();
    let ts = name
        .strip_prefix("pre-deployment-")
        .unwrap_or_else(|| panic!("backup folder {dir} is not pre-deployment-*"));
    assert!(
        ts.len() == 15
            && ts.as_bytes()[8] == b'_'
            && ts.chars().filter(|c| c.is_ascii_digit()).count() == 14,
        "timestamp {ts} is not YYYYMMDD_HHMMSS"
    );
    ts.to_string()
}

/// A small table so that a dump passes the default 1 KiB minimum.
fn small_table(pg: &Pg, rows: u32) {
    pg.psql(&format!(
        "CREATE TABLE public.items AS SELECT i AS id, md5(i::text) AS h FROM generate_series(1, {rows}) AS i"
    ));
}

#[test]
fn backup_restores_identically_into_fresh_containers() {
    // The restore target starts while the source is seeded and backed up.
    let fresh = std::thread::spawn(|| Pg::start("restore-target"));
    let pg = Pg::seeded("backup-src");
    let vol = Volume::with_tree("backup-vol", &TreeSpec::awkward());
    let ws = Workspace::new();

    // As a workflow would call it; the runner fills action.yml's defaults.
    let o = backup_of(&ws, &pg)
        .input("volumes", &vol.name)
        .runner_defaults()
        .run();
    o.assert_code(0);
    assert!(o.errors().is_empty(), "{o}");
    assert_eq!(o.out("verified"), "true");

    // Outputs point at what is on disk.
    let dir = o.out("backup-dir").to_string();
    assert!(dir.starts_with("backups/pre-deployment-"), "{o}");
    let ts = folder_timestamp(&dir);
    assert_eq!(o.out("timestamp"), ts);
    assert_eq!(o.out("commit"), SHA);
    assert_eq!(o.out("branch"), REF_NAME);
    let dump = o.path(o.out("db-backup-path"));
    let archive = o.path(o.out("volume-backup-paths"));
    assert_eq!(dump.parent().unwrap(), o.path(&dir));
    assert_eq!(archive.parent().unwrap(), o.path(&dir));
    assert_eq!(o.out("db-backup-size"), file_size(&dump).to_string());
    assert_eq!(o.out("db-backup-sha256"), sha256sum(&dump));
    assert_eq!(
        o.out("volume-backup-sizes"),
        file_size(&archive).to_string()
    );
    assert!(dump
        .file_name()
        .unwrap()
        .to_string_lossy()
        .ends_with(".sql.gz"));
    assert!(archive
        .file_name()
        .unwrap()
        .to_string_lossy()
        .ends_with(".tar.gz"));
    assert!(
        archive
            .file_name()
            .unwrap()
            .to_string_lossy()
            .contains(&vol.name),
        "archive named after the volume"
    );
    // One folder, nothing hidden next to it.
    assert_eq!(
        ws.backup_folders("backups"),
        vec![Path::new(&dir)
            .file_name()
            .unwrap()
            .to_string_lossy()
            .to_string()]
    );
    let mut files = crate::support::list_dir(&o.path(&dir));
    files.sort();
    let mut want = vec![
        dump.file_name().unwrap().to_string_lossy().to_string(),
        archive.file_name().unwrap().to_string_lossy().to_string(),
        "manifest.yml".to_string(),
    ];
    want.sort();
    assert_eq!(
        files, want,
        "the backup folder holds the two files and the manifest"
    );

    // The manifest.
    let m = manifest(&o);
    assert_eq!(m["verified"], true);
    assert_eq!(m["mode"], "backup");
    assert_eq!(m["database"]["container"], pg.name());
    assert_eq!(m["database"]["name"], pg.db.as_str());
    assert_eq!(m["database"]["file"]["sha256"], sha256sum(&dump));
    let tables: std::collections::BTreeMap<String, u64> = m["database"]["tables"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_u64().unwrap()))
        .collect();
    assert_eq!(
        tables,
        fixtures::seed_row_counts(),
        "row counts from the dump"
    );
    assert_eq!(m["volumes"][0]["name"], vol.name.as_str());
    assert_eq!(m["volumes"][0]["kind"], "volume");
    assert_eq!(m["volumes"][0]["file"]["sha256"], sha256sum(&archive));
    let source_tree = vol.fingerprint();
    assert_eq!(
        m["volumes"][0]["total_bytes"],
        source_tree.file_bytes(),
        "{m:#}"
    );
    // The password is never written anywhere.
    let manifest_text = std::fs::read_to_string(o.path(o.out("manifest-path"))).unwrap();
    for (what, text) in [
        ("manifest", manifest_text.as_str()),
        ("pointer", &ws.pointer().unwrap()),
        ("summary", &o.summary),
        ("stderr", &o.stderr),
        ("outputs", &o.raw_output),
    ] {
        assert!(
            !text.contains(&pg.password),
            "the password appears in the {what}"
        );
    }
    let stdout_without_masks: String = o
        .stdout
        .lines()
        .filter(|l| !l.starts_with("::add-mask::"))
        .collect::<Vec<_>>()
        .join("\n");
    assert!(
        !stdout_without_masks.contains(&pg.password),
        "the password appears on stdout\n{o}"
    );
    assert_no_helpers_left(&vol.name);

    // The dump restores into a fresh database with identical content.
    let fresh = fresh.join().unwrap();
    fresh.restore_gz(&dump);
    let original = pg.fingerprint();
    let restored = fresh.fingerprint();
    restored.assert_same(
        &original,
        "fresh database restored from the dump vs the source",
    );
    assert_eq!(restored.row_counts(), fixtures::seed_row_counts());

    // The archive unpacks into a fresh volume to an identical tree.
    let target = Volume::create("backup-vol-restored");
    target.restore_tar_gz(&archive);
    target.fingerprint().assert_same(
        &source_tree,
        "fresh volume restored from the archive vs the source",
    );
    assert!(
        source_tree.entries.len() > 30,
        "the awkward tree is there: {source_tree:?}"
    );
}

#[test]
fn backup_of_host_paths_restores_identically() {
    let ws = Workspace::new();
    let src = ws.join("uploads");
    fixtures::make_host_tree(&src);
    let o = ws.action("backup").input("paths", "uploads").run();
    o.assert_code(0);
    assert_eq!(o.out("verified"), "true");
    let archive = o.path(o.out("volume-backup-paths"));
    let m = manifest(&o);
    assert_eq!(m["volumes"][0]["kind"], "path", "{m:#}");
    // Unpack with GNU tar as root (owners, modes, links as archived) and compare.
    let out_dir = tempfile::tempdir().unwrap();
    let st = std::process::Command::new("tar")
        .args(["--same-owner", "--same-permissions", "-xzf"])
        .arg(&archive)
        .arg("-C")
        .arg(out_dir.path())
        .status()
        .unwrap();
    assert!(st.success());
    let a = docker::tree_fingerprint(&src.display().to_string());
    let b = docker::tree_fingerprint(&out_dir.path().display().to_string());
    // The extraction folder itself is a tempdir: its own mode is not part of the backup.
    let strip_root = |mut f: docker::TreeFingerprint| {
        f.entries.remove(".");
        f
    };
    // Hard links: see `backup_of_host_paths_keeps_hard_links` (ignored, a product gap).
    strip_root(b.without_hard_links()).assert_same(
        &strip_root(a.without_hard_links()),
        "host folder restored from the archive vs the source",
    );
}

/// The same as above for hard links: a hard-linked file must come back as one inode with
/// two names (as from a Docker volume), not as two copies.
#[test]
fn backup_of_host_paths_keeps_hard_links() {
    let ws = Workspace::new();
    let src = ws.join("uploads");
    fixtures::make_host_tree(&src);
    let o = ws.action("backup").input("paths", "uploads").run();
    o.assert_code(0);
    let archive = o.path(o.out("volume-backup-paths"));
    let listed = std::process::Command::new("tar")
        .arg("-tvzf")
        .arg(&archive)
        .output()
        .unwrap();
    let listed = String::from_utf8_lossy(&listed.stdout);
    assert!(
        listed
            .lines()
            .any(|l| l.starts_with('h') && l.contains("hard-link-to-leaf")),
        "the archive stores hard-link-to-leaf as a hard link:\n{listed}"
    );
}

#[test]
fn compose_labels_select_the_database_container() {
    let project = unique_name("proj");
    let pg = Pg::builder("compose-db")
        .label("com.docker.compose.project", &project)
        .label("com.docker.compose.service", "db")
        .start();
    small_table(&pg, 3000);
    let ws = Workspace::new();
    let o = ws
        .action("backup")
        .input("compose-project", &project)
        .input("postgres-service", "db")
        .input("postgres-db", &pg.db)
        .input("postgres-user", &pg.user)
        .run();
    o.assert_code(0);
    let m = manifest(&o);
    assert_eq!(m["database"]["container"], pg.name(), "{m:#}");
    assert_eq!(m["database"]["compose_project"], project.as_str());
    assert_eq!(m["database"]["compose_service"], "db");
    assert_eq!(m["database"]["tables"]["public.items"], 3000);

    // A service that does not run there: a usage error that says which labels it looked for.
    let o = ws
        .action("backup")
        .input("compose-project", &project)
        .input("postgres-service", "no-such-service")
        .input("postgres-user", &pg.user)
        .run();
    o.assert_code(2);
    o.assert_mentions("no-such-service")
        .assert_mentions(&project);
    // A project without a service.
    let o = Action::new("backup")
        .input("compose-project", &project)
        .run();
    o.assert_code(2);
    o.assert_mentions("postgres-service");
}

/// An app that uses the volume: on SIGTERM it writes `/data/.app-stopped` and exits; when
/// it starts it removes that file. So the file is in an archive exactly when the archive
/// was read while the app was stopped, and it is gone again once the app runs.
fn app_using(test: &str, vol: &Volume) -> Container {
    Container::run(
        &unique_name(test),
        &[
            "--network",
            "none",
            "-v",
            &format!("{}:/data", vol.name),
            BUSYBOX,
            "sh",
            "-c",
            "rm -f /data/.app-stopped; trap 'date > /data/.app-stopped; exit 0' TERM INT; while :; do sleep 1 & wait $!; done",
        ],
    )
}

fn archive_lists(archive: &Path) -> Vec<String> {
    let out = std::process::Command::new("tar")
        .arg("-tzf")
        .arg(archive)
        .output()
        .unwrap();
    assert!(out.status.success(), "tar -tzf {}", archive.display());
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(String::from)
        .collect()
}

fn app_stopped_file_present(app: &Container) -> bool {
    app.exec(&["test", "-e", "/data/.app-stopped"])
        .status
        .success()
}

#[test]
fn stop_containers_are_stopped_during_the_archive_and_started_again() {
    let pg = Pg::start("stop-db");
    small_table(&pg, 2000);
    let vol = Volume::with_tree(
        "stop-vol",
        &TreeSpec {
            awkward: false,
            pdfs: 6,
            pdf_kib: 16,
            random_mib: 0,
        },
    );
    let app = app_using("stop-app", &vol);
    wait_for(
        "the app to run",
        Duration::from_secs(20),
        Duration::from_millis(100),
        || app.is_running().then_some(()),
    );
    let started = app.started_at();
    let ws = Workspace::new();

    let since = docker_time_now();
    let o = backup_of(&ws, &pg)
        .input("volumes", &vol.name)
        .input("stop-containers", &app.name)
        .run();
    let until = docker_time_now();
    o.assert_code(0);
    assert!(app.is_running(), "the app runs again after the backup\n{o}");
    assert_ne!(app.started_at(), started, "the app was started again");
    assert!(
        !app_stopped_file_present(&app),
        "the app is running (it removed its stop marker)"
    );
    // The archive was read while the app was stopped.
    let archive = o.path(o.out("volume-backup-paths"));
    let listed = archive_lists(&archive);
    assert!(
        listed
            .iter()
            .any(|l| l.trim_start_matches("./") == ".app-stopped"),
        "the archive was taken while the app was stopped: {listed:?}\n{o}"
    );
    // And the engine saw it: the app died, then started again.
    let ev: Vec<_> = container_events(&since, &until)
        .into_iter()
        .filter(|e| e.name == app.name)
        .map(|e| e.action)
        .collect();
    let die = ev.iter().position(|a| a == "die");
    let start = ev.iter().rposition(|a| a == "start");
    assert!(
        matches!((die, start), (Some(d), Some(s)) if d < s),
        "events of the app: {ev:?}"
    );
    assert_no_helpers_left(&vol.name);

    // A failed backup (wrong database name) leaves the app running.
    let started = app.started_at();
    let o = backup_of(&ws, &pg)
        .input("postgres-db", "no_such_database")
        .input("volumes", &vol.name)
        .input("stop-containers", &app.name)
        .run();
    assert!(app.is_running(), "the app runs after a failed backup\n{o}");
    o.assert_mentions("no_such_database");
    assert_eq!(o.code, 2, "{o}");
    assert_eq!(
        app.started_at(),
        started,
        "nothing to stop when the database check fails first"
    );
    assert_eq!(
        ws.backup_folders("backups").len(),
        1,
        "only the first, good backup\n{o}"
    );

    // A backup that fails after the archive (a volume under its minimum size): the app
    // was stopped and is running again, and the failed folder is gone.
    let o = ws
        .action("backup")
        .input("volumes", &vol.name)
        .input("stop-containers", &app.name)
        .input("min-volume-size", "1GiB")
        .run();
    o.assert_code(1);
    assert!(
        app.is_running(),
        "the app runs after a failed verification\n{o}"
    );
    assert_ne!(
        app.started_at(),
        started,
        "it was stopped for the archive and started again"
    );
    assert_eq!(
        ws.backup_folders("backups").len(),
        1,
        "the failed backup left nothing\n{o}"
    );
    o.assert_mentions("min-size");
    assert_no_helpers_left(&vol.name);
}

#[test]
fn wrong_password_over_database_url() {
    // The image trusts local socket connections (as the official image does), so a password
    // is only ever checked over TCP: use database-url and the host's pg_dump 15.
    let pg = Pg::builder("url-db")
        .publish()
        .password("Right-Pa55-7a1c")
        .start();
    small_table(&pg, 2000);

    let ws = Workspace::new();
    let o = ws
        .action("backup")
        .input("database-url", pg.url(&pg.password))
        .run();
    o.assert_code(0);
    let m = manifest(&o);
    assert_eq!(m["database"]["tables"]["public.items"], 2000, "{m:#}");
    let text = std::fs::read_to_string(o.path(o.out("manifest-path"))).unwrap();
    assert!(
        !text.contains(&pg.password),
        "password in the manifest:\n{text}"
    );
    assert!(
        !o.summary.contains(&pg.password) && !o.stderr.contains(&pg.password),
        "{o}"
    );

    let wrong = "Wr0ng-Pa55-9f3e";
    for (how, a) in [
        (
            "in the URL",
            Action::new("backup").input("database-url", pg.url(wrong)),
        ),
        (
            "as postgres-password",
            Action::new("backup")
                .input(
                    "database-url",
                    format!(
                        "postgres://{}@127.0.0.1:{}/{}",
                        pg.user,
                        pg.host_port.unwrap(),
                        pg.db
                    ),
                )
                .input("postgres-password", wrong),
        ),
    ] {
        let o = a.run();
        assert_failed_cleanly(&o, 2);
        o.assert_mentions("password");
        let visible: String = o
            .all_text()
            .lines()
            .filter(|l| !l.starts_with("::add-mask::"))
            .collect::<Vec<_>>()
            .join("\n");
        assert!(
            !visible.contains(wrong),
            "the password ({how}) is shown\n{o}"
        );
        assert!(
            !o.raw_output.contains(wrong),
            "the password ({how}) is in the outputs\n{o}"
        );
        assert!(
            o.stdout.contains(&format!("::add-mask::{wrong}")),
            "the password ({how}) is registered as a secret\n{o}"
        );
    }
}

#[test]
fn missing_container_is_a_usage_error() {
    let name = unique_name("no-such-container");
    let o = Action::new("backup")
        .input("postgres-container", &name)
        .run();
    assert_failed_cleanly(&o, 2);
    o.assert_mentions(&name);
}

#[test]
fn missing_volume_is_a_usage_error() {
    let name = unique_name("no-such-volume");
    let o = Action::new("backup").input("volumes", &name).run();
    assert_failed_cleanly(&o, 2);
    o.assert_mentions(&name);
}

#[test]
fn docker_unreachable_is_an_environment_failure() {
    let o = Action::new("backup")
        .input("postgres-container", "schedgen-postgres-1")
        .input("volumes", "schedgen_minio_data")
        .env("DOCKER_HOST", "unix:///nonexistent.sock")
        .run();
    assert_failed_cleanly(&o, 3);
    o.assert_mentions("/nonexistent.sock");
    assert!(
        o.all_text().to_lowercase().contains("docker"),
        "says it is Docker\n{o}"
    );
}

#[test]
fn pg_dump_killed_midway_is_an_environment_failure() {
    let pg = Pg::start("kill-db");
    // ~230 MB on disk: the dump takes seconds, time enough to kill it.
    pg.psql("CREATE TABLE public.big AS SELECT i, repeat(md5(i::text), 6) AS payload FROM generate_series(1, 1000000) AS i");
    let ws = Workspace::new();
    let mut run = backup_of(&ws, &pg).input("compression-level", "9").spawn();
    let find_and_kill = r#"for p in /proc/[0-9]*; do if [[ "$(cat "$p/comm" 2>/dev/null)" == pg_dump ]]; then kill -KILL "${p#/proc/}" && echo "${p#/proc/}"; fi; done"#;
    let find = r#"for p in /proc/[0-9]*; do if [[ "$(cat "$p/comm" 2>/dev/null)" == pg_dump ]]; then echo "${p#/proc/}"; fi; done"#;
    wait_for(
        "pg_dump to start in the container",
        Duration::from_secs(60),
        Duration::from_millis(50),
        || {
            assert!(run.is_running(), "the backup ended before pg_dump was seen");
            let out = pg.container.exec(&["bash", "-c", find]);
            (!String::from_utf8_lossy(&out.stdout).trim().is_empty()).then_some(())
        },
    );
    // Let it write for a moment, then kill it.
    std::thread::sleep(Duration::from_millis(700));
    let killed = pg.container.exec_ok(&["bash", "-c", find_and_kill]);
    assert!(
        !killed.is_empty(),
        "pg_dump had already finished: make the table bigger"
    );
    let o = run.wait();
    assert_failed_cleanly(&o, 3);
    o.assert_mentions("pg_dump");
}

#[test]
fn full_backup_root_is_an_environment_failure_and_leaves_nothing() {
    let vol = Volume::with_tree("full-vol", &TreeSpec::random(4));
    let app = app_using("full-app", &vol);
    let ws = Workspace::new();
    let _small = Tmpfs::mount(&ws.join("backups"), "2m");
    let o = ws
        .action("backup")
        .input("volumes", &vol.name)
        .input("stop-containers", &app.name)
        .run();
    assert_failed_cleanly(&o, 3);
    assert!(
        o.all_text().contains("No space left") || o.all_text().to_lowercase().contains("space"),
        "says the disk is full\n{o}"
    );
    assert!(
        app.is_running(),
        "the app runs again after the failure\n{o}"
    );
    // Only the lock file is left in the backup root, and the space is free again.
    let left: Vec<String> = crate::support::list_dir(&ws.join("backups"))
        .into_iter()
        .filter(|n| n != ".predeploy-backup.lock")
        .collect();
    assert!(left.is_empty(), "left in the full backup root: {left:?}");
    assert_no_helpers_left(&vol.name);
}

#[test]
fn two_backups_at_once_do_not_interleave() {
    let vol = Volume::with_tree("concurrent-vol", &TreeSpec::random(24));
    let ws = Workspace::new();
    let a = ws.action("backup").input("volumes", &vol.name).spawn();
    let b = ws.action("backup").input("volumes", &vol.name).spawn();
    let (a, b) = (a.wait(), b.wait());
    a.assert_code(0);
    b.assert_code(0);
    let dirs: BTreeSet<String> = [a.out("backup-dir"), b.out("backup-dir")]
        .iter()
        .map(|s| s.to_string())
        .collect();
    assert_eq!(dirs.len(), 2, "two distinct folders\n{a}\n{b}");
    let folders = ws.backup_folders("backups");
    assert_eq!(
        folders.len(),
        2,
        "exactly two folders, nothing hidden: {folders:?}"
    );
    for o in [&a, &b] {
        // Each folder holds exactly its own files, each matching its manifest.
        let m = manifest(o);
        assert_eq!(m["verified"], true);
        let dir = o.path(o.out("backup-dir"));
        let mut want: Vec<String> = vec!["manifest.yml".into()];
        for v in m["volumes"].as_array().unwrap() {
            let f = v["file"]["path"].as_str().unwrap();
            assert_eq!(v["file"]["sha256"], sha256sum(&dir.join(f)));
            assert_eq!(v["file"]["size"], file_size(&dir.join(f)));
            want.push(f.to_string());
        }
        want.sort();
        assert_eq!(
            crate::support::list_dir(&dir),
            want,
            "files of {}",
            dir.display()
        );
        let archive: PathBuf = o.path(o.out("volume-backup-paths"));
        assert!(archive_lists(&archive)
            .iter()
            .any(|l| l.ends_with("random.bin")));
    }
    let p = ws.source_pointer();
    assert!(
        dirs.contains(p["BACKUP_DIR"].trim_start_matches("./")),
        "the pointer names one of them: {p:?}"
    );
}

#[test]
fn backup_with_nothing_to_back_up_is_a_usage_error() {
    // A workflow step with no `with:` at all: every input empty, the mode defaulting to
    // backup as action.yml says.
    let o = Action::new("").run();
    assert_failed_cleanly(&o, 2);
    o.assert_mentions("postgres-container")
        .assert_mentions("volumes");
}
