//! Golden files (issue 16): the shape of everything users and later jobs read — `manifest.yml`,
//! the job summary (success and failure), the outputs file, `.last-deployment-backup`,
//! `info`'s output and every `--help` — is pinned by `insta` snapshots under
//! `tests/integration/snapshots/`, from a real backup (real engine, real PostgreSQL, a real
//! volume and a host folder). What changes from run to run (timestamps, hashes, sizes,
//! durations, temporary paths, generated names) is redacted, so a snapshot changes only when
//! the shape does.
//!
//! The snapshots run with plain `cargo test` (no `cargo insta` needed); a mismatch fails the
//! test and, outside CI, leaves a `.snap.new` beside the snapshot. To accept a deliberate
//! change: `INSTA_UPDATE=always cargo test --test integration golden` (or `cargo insta
//! review`), then commit the snapshots.

use std::sync::Arc;

use crate::support::docker::{Pg, Volume};
use crate::support::{Cli, Outcome, Workspace};

/// The names of generated things, replaced by stable ones before the filters run.
struct Names(Vec<(String, &'static str)>);

impl Names {
    fn apply(&self, text: &str) -> String {
        let mut t = text.to_string();
        for (from, to) in &self.0 {
            if !from.is_empty() {
                t = t.replace(from.as_str(), to);
            }
        }
        t
    }
}

/// What varies from run to run, in the order it is replaced.
fn filters() -> Vec<(&'static str, &'static str)> {
    vec![
        // 2026-12-03T15:45:55Z, 2026-12-03T15:45:55.123+00:00, 2026-12-03 15:45 UTC
        (
            r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:?\d{2}| UTC)?",
            "[time]",
        ),
        // Hashes before stamps: a hash may hold 14 digits in a row that look like a stamp.
        (r"\b[0-9a-f]{64}\b", "[sha256]"),
        // The summary's short hashes.
        (r"`[0-9a-f]{16}…`", "`[sha256-prefix]…`"),
        // File sizes and timings in manifest.yml (`size: 697974`, `  database dump: 0.68`),
        // before stamps: a timing's digits (`1.20261204015530`) may look like a stamp.
        (r"(?m)^(\s*size: )\d+$", "${1}[size]"),
        (r"(?m)^(  [a-z ]+: )\d+\.\d+$", "${1}[seconds]"),
        // The backup folder's stamp: pre-deployment-20261203_154555 (and its files).
        (r"\d{8}[-_T]?\d{6}", "[stamp]"),
        // Sizes in the outputs file (one line per file).
        (
            r"(?m)^(db-backup-size=|volume-backup-sizes=)?\d+$",
            "${1}[size]",
        ),
        // Sizes, rates and durations in text.
        (r"\b\d+(\.\d+)? ?(MB/s|MiB/s)", "[rate]"),
        (
            r"\b\d+(\.\d+)? ?(B|KiB|MiB|GiB|KB|MB|GB|bytes|byte)\b",
            "[size]",
        ),
        (r"\b\d+(\.\d+)? ?(s|ms|seconds)\b", "[duration]"),
    ]
}

/// Snapshot `$text` as `$name`, generated names replaced first, then the [`filters`].
macro_rules! golden {
    ($name:expr, $names:expr, $text:expr) => {{
        let text = $names.apply(&$text);
        insta::with_settings!({
            prepend_module_to_snapshot => true,
            omit_expression => true,
            filters => filters(),
        }, {
            insta::assert_snapshot!($name, text);
        });
    }};
}

/// The outputs file as the runner reads it: one `name=value` per output, sorted.
fn outputs_text(o: &Outcome) -> String {
    let mut names = o.output_names();
    names.sort();
    names
        .iter()
        .map(|n| format!("{n}={}\n", o.out(n)))
        .collect()
}

/// One backup of everything (database, volume, host folder) and what it left behind.
struct Backed {
    ws: Arc<Workspace>,
    ok: Outcome,
    names: Names,
    pg: Pg,
    vol: Volume,
}

fn backed_up() -> Backed {
    let pg = Pg::seeded("golden-db");
    let vol = Volume::create("golden-vol");
    let out = vol.busybox(
        "mkdir -p /data/objects && seq 1 20000 > /data/objects/numbers.txt && echo hello > /data/README",
        &[],
        false,
    );
    assert!(out.status.success(), "{out:?}");
    let ws = Workspace::new();
    std::fs::create_dir_all(ws.join("srv/uploads")).unwrap();
    let page: String = (0..4000).map(|i| format!("line {i}\n")).collect();
    std::fs::write(ws.join("srv/uploads/page.txt"), page).unwrap();
    let ok = ws
        .action("backup")
        .input("postgres-container", pg.name())
        .input("postgres-db", &pg.db)
        .input("postgres-user", &pg.user)
        .input("volumes", &vol.name)
        .input("paths", "srv/uploads")
        .run();
    ok.assert_code(0);
    // A host folder's archive is named after its path (`tmp_pbt-ws-XXXX_srv_uploads`).
    let ws_clean = ws
        .path()
        .display()
        .to_string()
        .trim_start_matches('/')
        .replace('/', "_");
    let names = Names(vec![
        (ws.path().display().to_string(), "[workspace]"),
        (ws_clean, "[workspace-name]"),
        (ws.runner_temp().display().to_string(), "[runner-temp]"),
        (pg.name().to_string(), "[pg-container]"),
        (vol.name.clone(), "[volume]"),
    ]);
    Backed {
        ws,
        ok,
        names,
        pg,
        vol,
    }
}

#[test]
fn golden_files_of_a_backup_and_of_info() {
    let b = backed_up();
    let o = &b.ok;
    let dir = b.ws.join(o.out("backup-dir"));
    golden!(
        "manifest.yml",
        &b.names,
        std::fs::read_to_string(dir.join("manifest.yml")).unwrap()
    );
    golden!("summary-success.md", &b.names, o.summary);
    golden!("outputs-backup.txt", &b.names, outputs_text(o));
    golden!(
        "last-deployment-backup",
        &b.names,
        b.ws.pointer().expect("the pointer file")
    );

    let info = b.ws.action("info").run();
    info.assert_code(0);
    golden!("info-action-stdout.txt", &b.names, info.stdout);
    let cli = b.ws.cli(&["info"]).run();
    cli.assert_code(0);
    golden!("info-cli-stdout.txt", &b.names, cli.stdout);

    // A failed backup: the summary leads with its verdict and names no `.partial` folder.
    let failed =
        b.ws.action("backup")
            .input("paths", "srv/uploads")
            .input("min-volume-size", "1GB")
            .run();
    failed.assert_code(1);
    golden!("summary-failure.md", &b.names, failed.summary);
    golden!("outputs-failure.txt", &b.names, outputs_text(&failed));
}

/// The summary of a `compression: zstd` backup (issue 15): its manual restore commands read
/// the `.sql.zst` and `.tar.zst` files with `zstd -dc` on the host (a helper image needs no
/// zstd), never with `gunzip` or `tar xz`.
#[test]
fn golden_summary_of_a_zstd_backup() {
    let b = backed_up();
    let z =
        b.ws.action("backup")
            .postgres(&b.pg)
            .input("volumes", &b.vol.name)
            .input("paths", "srv/uploads")
            .input("compression", "zstd")
            .run();
    z.assert_code(0);
    let dump = z.out("db-backup-path");
    assert!(dump.ends_with(".sql.zst"), "{z}");
    let by_hand = z
        .summary
        .split("By hand")
        .nth(1)
        .unwrap_or_else(|| panic!("no manual restore commands in the summary\n{z}"));
    assert!(
        by_hand.contains(&format!("zstd -dc ./{dump} |")),
        "the dump is not read with zstd -dc:\n{by_hand}"
    );
    for archive in z.out("volume-backup-paths").lines() {
        assert!(archive.ends_with(".tar.zst"), "{z}");
        assert!(
            by_hand.contains(&format!("zstd -dc ./{archive} |")),
            "{archive} is not read with zstd -dc:\n{by_hand}"
        );
    }
    assert!(
        !by_hand.contains("gunzip") && !by_hand.contains("tar xz"),
        "{by_hand}"
    );
    golden!("summary-success-zstd.md", &b.names, z.summary);
}

#[test]
fn golden_help_of_every_mode() {
    for args in [
        vec!["--help"],
        vec!["backup", "--help"],
        vec!["verify", "--help"],
        vec!["rollback", "--help"],
        vec!["info", "--help"],
        vec!["prune", "--help"],
    ] {
        let o = Cli::new(&args).env("COLUMNS", "100").run();
        o.assert_code(0);
        let name = match args[0] {
            "--help" => "help".to_string(),
            mode => format!("help-{mode}"),
        };
        // Nothing varies in a help text: no filters.
        insta::with_settings!({ omit_expression => true }, {
            insta::assert_snapshot!(name, o.stdout);
        });
    }
}
