//! Issue 12, "the first hour on a real stack": what a new user hits first, each against the
//! real engine and a real PostgreSQL — helper images without CMD, files the runner's own
//! user can clean, absolute backup roots, unique file names, inputs a mode ignores, exit
//! codes and hints of common mistakes, an empty first database, the free-space estimate,
//! the summary's verdict first, a read-only backup root, SIGTERM during a stop and during the
//! restart, volume transfers over a throttled engine connection (slow but moving, stalled).

use std::process::Command;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::support::docker::{self, docker_ok, unique_name, Container, Pg, TreeSpec, Volume};
use crate::support::docker_proxy::{self, DockerProxy, Rule};
use crate::support::fixtures::Tmpfs;
use crate::support::{random_hex, wait_for, Outcome, Workspace};

/// An image made with `docker import` from busybox's file system: a shell, but no CMD and no
/// ENTRYPOINT. Removed on drop.
struct ImportedImage(String);

impl ImportedImage {
    fn new() -> ImportedImage {
        docker::ensure_images();
        let name = format!("pbt-nocmd-{}:latest", random_hex(8));
        let c = docker_ok(&["create", docker::BUSYBOX, "true"]);
        let script = format!("docker export {} | docker import - {name}", c.trim());
        let out = Command::new("sh").arg("-c").arg(&script).output().unwrap();
        let _ = docker::docker(&["rm", "-f", c.trim()]);
        assert!(out.status.success(), "{script}: {out:?}");
        let cmd = docker_ok(&[
            "image",
            "inspect",
            "-f",
            "{{json .Config.Cmd}}|{{json .Config.Entrypoint}}",
            &name,
        ]);
        assert_eq!(
            cmd.trim(),
            "null|null",
            "the imported image has no CMD/ENTRYPOINT"
        );
        ImportedImage(name)
    }
}

impl Drop for ImportedImage {
    fn drop(&mut self) {
        let _ = docker::docker(&["rmi", "-f", &self.0]);
    }
}

/// The first line of the job summary.
fn first_line(o: &Outcome) -> &str {
    o.summary.lines().next().unwrap_or("")
}

/// A workspace with a small host folder to back up (no Docker needed for it).
fn ws_with_folder(dirs: &[&str]) -> std::sync::Arc<Workspace> {
    let ws = Workspace::new();
    for (i, d) in dirs.iter().enumerate() {
        std::fs::create_dir_all(ws.join(d)).unwrap();
        // Incompressible, so that each archive is over min-volume-size.
        let bytes: Vec<u8> = (0..256)
            .flat_map(|_| *uuid::Uuid::new_v4().as_bytes())
            .collect();
        std::fs::write(ws.join(d).join(format!("f{i}.bin")), bytes).unwrap();
    }
    ws
}

// 1 ------------------------------------------------------------------------------------

#[test]
fn a_helper_image_without_cmd_backs_up_and_restores_a_volume() {
    let img = ImportedImage::new();
    let vol = Volume::with_tree("nocmd-vol", &TreeSpec::awkward());
    let before = vol.fingerprint();
    let ws = Workspace::new();
    let o = ws
        .action("backup")
        .input("volumes", &vol.name)
        .env("PREDEPLOY_HELPER_IMAGE", &img.0)
        .run();
    o.assert_code(0);
    assert_eq!(o.out("verified"), "true", "{o}");
    assert!(!o.all_text().contains("No command specified"), "{o}");

    vol.populate(&TreeSpec::random(1));
    let r = ws
        .action("rollback")
        .input("manifest", format!("{}/manifest.yml", o.out("backup-dir")))
        .input("volumes", &vol.name)
        .input("restore-special-bits", "true")
        .env("PREDEPLOY_HELPER_IMAGE", &img.0)
        .run();
    r.assert_code(0);
    assert_eq!(r.out("restored"), "true", "{r}");
    assert_eq!(vol.fingerprint(), before, "the volume is as backed up\n{r}");
    // 4: the undo command has no empty --stop-containers.
    assert!(!r.all_text().contains("--stop-containers ''"), "{r}");
}

// 2 ------------------------------------------------------------------------------------

#[test]
fn a_non_root_runner_can_git_clean_the_workspace_after_a_backup() {
    let ws = ws_with_folder(&["srv/data"]);
    let as_runner = |args: &[&str]| {
        let out = Command::new("setpriv")
            .args(["--reuid=1000", "--regid=1000", "--clear-groups", "--"])
            .args(args)
            .current_dir(ws.path())
            .env("HOME", ws.path())
            .output()
            .unwrap();
        assert!(out.status.success(), "{args:?}: {out:?}");
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    Command::new("chown")
        .args(["-R", "1000:1000"])
        .arg(ws.path())
        .status()
        .unwrap();
    as_runner(&["git", "init", "-q", "."]);
    let o = ws.action("backup").input("paths", "srv/data").run();
    o.assert_code(0);
    assert!(ws.pointer().is_some());
    as_runner(&["git", "clean", "-ffdxq"]);
    assert!(!ws.join("backups").exists(), "backups/ was cleaned");
    assert!(
        !ws.join(".last-deployment-backup").exists(),
        "the pointer was cleaned"
    );
}

// 3 ------------------------------------------------------------------------------------

#[test]
fn an_absolute_backup_root_in_the_action_is_bad_input_and_on_the_host_is_recorded_as_is() {
    let ws = ws_with_folder(&["srv"]);
    let outside = tempfile::tempdir().unwrap();
    let root = outside.path().join("bk");
    let o = ws
        .action("backup")
        .input("paths", "srv")
        .input("backup-root", root.display().to_string())
        .run();
    o.assert_code(2).assert_mentions("destination");
    assert!(
        !root.exists(),
        "nothing written to the container's own disk\n{o}"
    );
    assert_eq!(o.outputs.get("verified").map(String::as_str), Some("false"));

    // The CLI on the host: the pointer names the absolute folder, and info reads it back.
    let o = ws
        .cli(&[
            "backup",
            "--paths=srv",
            &format!("--backup-root={}", root.display()),
        ])
        .run();
    o.assert_code(0);
    let p = ws.source_pointer();
    assert!(
        p["BACKUP_DIR"].starts_with(&root.display().to_string()),
        "{p:?}"
    );
    assert!(
        !ws.pointer().unwrap().contains(".//"),
        "{}",
        ws.pointer().unwrap()
    );
    ws.cli(&["info"]).run().assert_code(0);
}

// 6 ------------------------------------------------------------------------------------

#[test]
fn two_sources_with_one_clean_name_get_two_files() {
    let ws = ws_with_folder(&["srv/a/b", "srv/a_b"]);
    let o = ws.action("backup").input("paths", "srv/a/b,srv/a_b").run();
    o.assert_code(0);
    let files: Vec<&str> = o.out("volume-backup-paths").lines().collect();
    assert_eq!(files.len(), 2, "{o}");
    assert_ne!(files[0], files[1], "{o}");
    assert_ne!(
        crate::support::sha256sum(&o.path(files[0])),
        crate::support::sha256sum(&o.path(files[1])),
        "each archive holds its own folder"
    );
}

// 7 ------------------------------------------------------------------------------------

#[test]
fn an_input_the_mode_ignores_is_reported_and_parser_errors_name_inputs() {
    let ws = ws_with_folder(&["srv"]);
    let o = ws
        .action("backup")
        .input("paths", "srv")
        .input("dry-run", "true")
        .run();
    o.assert_code(0);
    let warned = o.commands().into_iter().any(|a| {
        a.command == "warning"
            && a.message
                .contains("input dry-run has no effect in mode backup")
    });
    assert!(warned, "a ::warning names the ignored input\n{o}");

    let o = ws
        .action("backup")
        .input("paths", "srv")
        .input("keep-last", "many")
        .run();
    o.assert_code(2).assert_mentions("input keep-last");
    assert!(!o.all_text().contains("--keep-last"), "{o}");
}

// 8 ------------------------------------------------------------------------------------

#[test]
fn the_official_image_user_mistake_says_to_set_postgres_user() {
    let pg = Pg::builder("user-app").user("app").db("app").start();
    let ws = Workspace::new();
    let o = ws
        .action("backup")
        .input("postgres-container", pg.name())
        .input("postgres-db", "app")
        .input("postgres-password", &pg.password)
        .run();
    o.assert_code(2).assert_mentions("postgres-user");
    assert!(ws.backup_folders("backups").is_empty(), "{o}");
}

#[test]
fn a_container_that_is_not_postgres_and_a_missing_manifest_are_clear_usage_errors() {
    let app = Container::sleeper("not-pg", &[], &[]);
    let ws = Workspace::new();
    let o = ws
        .action("backup")
        .input("postgres-container", &app.name)
        .run();
    o.assert_code(2)
        .assert_mentions("not the PostgreSQL container");
    assert!(!o.all_text().contains("(no message)"), "{o}");

    let o = ws
        .action("rollback")
        .input("manifest", "nope/manifest.yml")
        .run();
    o.assert_code(2);
    let msg = o
        .errors()
        .into_iter()
        .map(|a| a.message)
        .collect::<String>();
    assert_eq!(msg.matches("os error 2").count(), 1, "{o}");
}

// 9 ------------------------------------------------------------------------------------

#[test]
fn an_empty_first_database_backs_up_and_the_free_space_estimate_can_be_turned_off() {
    let pg = Pg::start("empty-db");
    let ws = Workspace::new();
    let backup = || {
        ws.action("backup")
            .input("postgres-container", pg.name())
            .input("postgres-db", &pg.db)
            .input("postgres-user", &pg.user)
            .input("postgres-password", &pg.password)
            .runner_defaults()
    };
    let o = backup().run();
    o.assert_code(0);
    assert_eq!(o.out("verified"), "true");
    assert!(
        crate::support::file_size(&o.path(o.out("db-backup-path"))) < 1024,
        "{o}"
    );
    o.assert_mentions("has no rows");

    // A small disk: without a previous backup the estimate (half the database's on-disk size)
    // refuses; check-free-space: false goes ahead; then the previous backup is the estimate.
    let ws2 = Workspace::new();
    let _small = Tmpfs::mount(&ws2.join("backups"), "3m");
    let in_ws2 = |check: &str| {
        ws2.action("backup")
            .input("postgres-container", pg.name())
            .input("postgres-db", &pg.db)
            .input("postgres-user", &pg.user)
            .input("postgres-password", &pg.password)
            .input("check-free-space", check)
            .run()
    };
    let o = in_ws2("true");
    o.assert_code(3).assert_mentions("check-free-space: false");
    in_ws2("false").assert_code(0);
    in_ws2("true").assert_code(0);
}

// 10 -----------------------------------------------------------------------------------

#[test]
fn a_backup_on_a_hosted_runner_warns_that_its_files_go_with_the_job() {
    let ws = ws_with_folder(&["srv"]);
    let o = ws
        .action("backup")
        .input("paths", "srv")
        .env("RUNNER_ENVIRONMENT", "github-hosted")
        .run();
    o.assert_code(0);
    assert!(
        o.commands()
            .into_iter()
            .any(|a| a.command == "warning"
                && a.message.contains("include-backups-in-artifact: true")),
        "{o}"
    );
}

// 11 -----------------------------------------------------------------------------------

#[test]
fn the_summary_starts_with_its_verdict() {
    let ws = ws_with_folder(&["srv"]);
    let o = ws.action("backup").input("paths", "srv").run();
    o.assert_code(0);
    assert_eq!(
        first_line(&o),
        "## ✅ Pre-deployment backup verified",
        "{}",
        o.summary
    );

    let o = ws
        .action("backup")
        .input("paths", "srv")
        .input("min-volume-size", "1GB")
        .run();
    o.assert_code(1);
    assert_eq!(
        first_line(&o),
        "## ❌ predeploy-backup backup failed: Backup not verified",
        "{}",
        o.summary
    );
    assert!(!o.summary.contains(".partial"), "{}", o.summary);
}

// 12 -----------------------------------------------------------------------------------

#[test]
fn a_read_only_backup_root_says_so_once() {
    let ws = ws_with_folder(&["srv"]);
    let root = ws.join("backups");
    let _ro = Tmpfs::mount(&root, "1m");
    let out = Command::new("mount")
        .args(["-o", "remount,ro"])
        .arg(&root)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let o = ws.action("backup").input("paths", "srv").run();
    o.assert_code(3).assert_mentions("read-only file system");
    let msg = o
        .errors()
        .into_iter()
        .map(|a| a.message)
        .collect::<String>();
    assert_eq!(
        msg.to_lowercase().matches("read-only file system").count(),
        1,
        "{o}"
    );
}

// 5 ------------------------------------------------------------------------------------

#[test]
fn sigterm_while_a_slow_stop_is_in_progress_still_starts_the_container_again() {
    // PID 1 ignores TERM: the engine kills it after the 30 s grace period.
    let vol = Volume::with_tree("sigterm-vol", &TreeSpec::random(1));
    let name = unique_name("slow-stop");
    let app = Container::run(
        &name,
        &[
            "--network",
            "none",
            "-v",
            &format!("{}:/data", vol.name),
            docker::BUSYBOX,
            "sh",
            "-c",
            "trap '' TERM; while :; do sleep 1; done",
        ],
    );
    let ws = Workspace::new();
    let run = ws
        .action("backup")
        .input("volumes", &vol.name)
        .input("stop-containers", &app.name)
        .timeout(Duration::from_secs(120))
        .spawn();
    let pid = run.pid();
    // The stop has been asked for once the engine reports the TERM signal.
    wait_for(
        "the stop to begin",
        Duration::from_secs(60),
        Duration::from_millis(200),
        || {
            let s = docker_ok(&["inspect", "-f", "{{.State.Running}}", &app.name]);
            let events = docker::docker(&[
                "events",
                "--since",
                "60s",
                "--until",
                "0s",
                "--filter",
                &format!("container={}", app.name),
                "--filter",
                "event=kill",
            ]);
            (s.trim() == "true" && !String::from_utf8_lossy(&events.stdout).trim().is_empty())
                .then_some(())
        },
    );
    Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    let o = run.wait();
    assert_ne!(o.code, 0, "{o}");
    // The engine finishes its stop (up to 30 s); the container must run afterwards.
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        app.is_running(),
        "the container runs after the cancelled stop\n{o}"
    );
}

/// A volume holding one incompressible file of `kib` KiB.
fn volume_of_kib(test: &str, kib: usize) -> Volume {
    let vol = Volume::create(test);
    let out = vol.busybox(
        &format!(
            "head -c {} /dev/urandom > /data/blob && chmod 0640 /data/blob",
            kib * 1024
        ),
        &[],
        false,
    );
    assert!(out.status.success(), "{out:?}");
    vol
}

/// The idle limit the throttled-engine tests set (env PREDEPLOY_IDLE_TIMEOUT), in seconds.
const IDLE_SECS: u64 = 4;

// 4 ------------------------------------------------------------------------------------

/// A slow link to the engine that keeps moving (512 KiB/s) carries a rollback's safety
/// backup (a download of 7 MiB) and its restore (an upload of 6 MiB): each takes three
/// times the 4 s idle limit or more, and neither is cut off.
///
/// The upload's progress is seen by the client (the connection taking the next chunk); on
/// TCP the kernel takes megabytes at once, so the whole body may be "sent" at once and then
/// drain for seconds: the limit after the body allows one idle period per MiB that may still
/// be in flight (`docker::drain_limit`). Found by this test: a 3 MiB restore at 100 KiB/s
/// was cut off 4 s in.
#[test]
fn a_slow_volume_transfer_that_keeps_moving_is_not_cut_off() {
    let vol = volume_of_kib("slow-link", 6 * 1024);
    let before = vol.fingerprint();
    let ws = Workspace::new();
    let o = ws.action("backup").input("volumes", &vol.name).run();
    o.assert_code(0);
    let manifest = format!("{}/manifest.yml", o.out("backup-dir"));

    vol.populate(&TreeSpec::random(1));
    let proxy = DockerProxy::start(Rule::Trickle {
        matches: docker_proxy::archive_transfer(),
        bytes: 128 * 1024,
        every: Duration::from_millis(250),
    });
    let started = Instant::now();
    let r = ws
        .action("rollback")
        .input("manifest", &manifest)
        .input("volumes", &vol.name)
        .env("DOCKER_HOST", proxy.docker_host())
        .env("PREDEPLOY_IDLE_TIMEOUT", IDLE_SECS.to_string())
        .timeout(Duration::from_secs(240))
        .run();
    let took = started.elapsed();
    r.assert_code(0);
    assert_eq!(r.out("restored"), "true", "{r}");
    assert!(!r.all_text().contains("stalled"), "{r}");
    assert_eq!(vol.fingerprint(), before, "the volume is as backed up\n{r}");
    // Both transfers went through the trickle: the 7 MiB safety backup and the 6 MiB
    // restore, each far longer than the idle limit.
    let moved = proxy.seen.bytes.load(Ordering::SeqCst);
    assert!(
        moved > 13 * 1024 * 1024,
        "{moved} bytes through the trickle\n{r}"
    );
    assert!(
        took > Duration::from_secs(6 * IDLE_SECS),
        "took {took:?}: the trickle was not in the way\n{r}"
    );
    eprintln!("slow link: {moved} bytes in {took:?} with a {IDLE_SECS} s idle limit");
}

/// The link stops dead 64 KiB into the restore's upload: after the idle limit the run
/// fails with the "stalled" message and the environment exit code (3), and the volume is
/// byte-identical to what it was before the rollback (the upload went to a staging folder,
/// which is removed).
#[test]
fn a_stalled_volume_restore_fails_and_leaves_the_volume_as_it_was() {
    let vol = volume_of_kib("stalled-link", 512);
    let ws = Workspace::new();
    let o = ws.action("backup").input("volumes", &vol.name).run();
    o.assert_code(0);
    let manifest = format!("{}/manifest.yml", o.out("backup-dir"));

    vol.populate(&TreeSpec::random(1));
    let before = vol.fingerprint();
    let proxy = DockerProxy::start(Rule::Stall {
        matches: docker_proxy::archive_upload(),
        after: 64 * 1024,
    });
    let started = Instant::now();
    let r = ws
        .action("rollback")
        .input("manifest", &manifest)
        .input("volumes", &vol.name)
        .env("DOCKER_HOST", proxy.docker_host())
        .env("PREDEPLOY_IDLE_TIMEOUT", IDLE_SECS.to_string())
        .timeout(Duration::from_secs(120))
        .run();
    let took = started.elapsed();
    assert_eq!(proxy.seen.stalled.load(Ordering::SeqCst), 1, "{r}");
    // The whole 512 KiB body fits in the connection's buffers, so the limit is the one after
    // the body (`docker::drain_limit`: two idle periods).
    r.assert_code(3)
        .assert_mentions(&format!("stalled: no data moved for {} s", 2 * IDLE_SECS))
        .assert_mentions("its live data was not touched");
    assert_ne!(r.out("restored"), "true", "{r}");
    let after = vol.fingerprint();
    assert_eq!(
        after,
        before,
        "the volume is untouched: {:?}\n{r}",
        after.diff(&before)
    );
    eprintln!("stalled link: failed after {took:?} with a {IDLE_SECS} s idle limit");
}

// 5 ------------------------------------------------------------------------------------

/// SIGTERM while the container stopped for the backup is being started again (the engine
/// holds the start request): the cancel handler starts it, and the log says so truthfully.
#[test]
fn sigterm_while_the_container_is_being_started_again_leaves_it_running() {
    let vol = volume_of_kib("sigterm-restart", 64);
    let name = unique_name("slow-start");
    // Stops within a second on TERM.
    let app = Container::run(
        &name,
        &[
            "--network",
            "none",
            "-v",
            &format!("{}:/data", vol.name),
            docker::BUSYBOX,
            "sh",
            "-c",
            "trap 'exit 0' TERM; while :; do sleep 1; done",
        ],
    );
    // The first start of the container waits a minute in the proxy before the engine sees it.
    let proxy = DockerProxy::start(Rule::Hold {
        matches: docker_proxy::container_start(&app.name),
        hold: Duration::from_secs(60),
        times: 1,
    });
    let ws = Workspace::new();
    let run = ws
        .action("backup")
        .input("volumes", &vol.name)
        .input("stop-containers", &app.name)
        .env("DOCKER_HOST", proxy.docker_host())
        .timeout(Duration::from_secs(120))
        .spawn();
    let pid = run.pid();
    wait_for(
        "the restart to be under way",
        Duration::from_secs(60),
        Duration::from_millis(100),
        || (proxy.seen.holding.load(Ordering::SeqCst) == 1).then_some(()),
    );
    assert!(!app.is_running(), "stopped for the backup, not started yet");
    Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    let o = run.wait();
    o.assert_code(3);
    assert!(
        app.is_running(),
        "the container runs after the cancelled restart\n{o}"
    );
    let text = o.all_text();
    assert!(
        text.contains("containers stopped for the backup were started again"),
        "{o}"
    );
    assert!(!text.contains("start these containers by hand"), "{o}");
    assert!(!text.contains("Container not restarted"), "{o}");
}
