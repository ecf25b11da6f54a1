//! `info` mode: what the seed's `scripts/get-last-backup.sh` showed — the last backup's
//! time, folder, commit, branch, file sizes and ready-to-run rollback commands — after a
//! real backup, as the action and as the CLI; and a clear error when there is none.

use predeploy_backup::actions::summary::human_size;

use crate::support::action::{REF_NAME, SHA};
use crate::support::docker::{Pg, TreeSpec, Volume};
use crate::support::{file_size, Action, Cli, Workspace};

#[test]
fn info_after_a_backup_shows_it_and_how_to_roll_back() {
    let pg = Pg::start("info-db");
    pg.psql("CREATE TABLE public.items AS SELECT i AS id, md5(i::text) AS h FROM generate_series(1, 2000) AS i");
    let vol = Volume::with_tree(
        "info-vol",
        &TreeSpec {
            awkward: false,
            pdfs: 3,
            pdf_kib: 8,
            random_mib: 0,
        },
    );
    let ws = Workspace::new();
    let b = ws
        .action("backup")
        .input("postgres-container", pg.name())
        .input("postgres-db", &pg.db)
        .input("postgres-user", &pg.user)
        .input("volumes", &vol.name)
        .run();
    b.assert_code(0);
    let dir = b.out("backup-dir").to_string();
    let dump = b.path(b.out("db-backup-path"));
    let archive = b.path(b.out("volume-backup-paths"));
    let dump_name = dump.file_name().unwrap().to_string_lossy().to_string();
    let archive_name = archive.file_name().unwrap().to_string_lossy().to_string();

    let o = ws.action("info").run();
    o.assert_code(0);
    let text = &o.stdout;
    let expect = [
        b.out("timestamp").to_string(),
        dir.clone(),
        SHA.to_string(),
        REF_NAME.to_string(),
        format!("{}  {dump_name}", human_size(file_size(&dump))),
        format!("{}  {archive_name}", human_size(file_size(&archive))),
        // The ways back, ready to paste.
        format!("predeploy-backup rollback --manifest ./{dir}/manifest.yml"),
        "gh workflow run".to_string(),
        "-f run-id=4242".to_string(),
        format!("gunzip -c ./{dir}/{dump_name}"),
        format!(
            "docker exec -i {} psql -U {} -d {}",
            pg.name(),
            pg.user,
            pg.db
        ),
        format!("-v {}:/data", vol.name),
        format!("tar xzf /backup/{archive_name}"),
        format!("git checkout {SHA}"),
    ];
    for e in &expect {
        assert!(text.contains(e.as_str()), "info shows {e:?}\n{o}");
    }
    assert!(
        o.summary_text().contains(&dump_name) && o.summary_text().contains("rollback"),
        "and the summary\n{o}"
    );
    assert_eq!(o.out("backup-dir"), dir);
    assert_eq!(o.out("manifest-path"), b.out("manifest-path"));
    assert_eq!(o.out("commit"), SHA);
    assert_eq!(o.out("branch"), REF_NAME);
    assert_eq!(o.out("timestamp"), b.out("timestamp"));
    assert_eq!(o.out("verified"), "true");

    // The plain CLI, in the workspace and from elsewhere with --workspace.
    for cli in [
        ws.cli(&["info"]),
        Cli::new(&["info", "--workspace", &ws.path().display().to_string()])
            .current_dir(std::path::Path::new("/")),
    ] {
        let c = cli.run();
        c.assert_code(0);
        for e in &expect {
            assert!(c.stdout.contains(e.as_str()), "CLI info shows {e:?}\n{c}");
        }
    }

    // A file that went missing since the backup is flagged.
    std::fs::remove_file(&archive).unwrap();
    let o = ws.action("info").run();
    assert!(
        o.stdout
            .lines()
            .any(|l| l.contains(&archive_name) && l.contains("missing")),
        "info flags the missing archive\n{o}"
    );
}

#[test]
fn info_without_a_backup_is_a_usage_error() {
    let o = Action::new("info").run();
    o.assert_code(2);
    o.assert_mentions(".last-deployment-backup");
    assert!(
        o.all_text().contains("predeploy-backup backup") || o.all_text().contains("backup"),
        "{o}"
    );
    assert!(!o.errors().is_empty(), "an ::error annotation\n{o}");

    let ws = Workspace::new();
    let c = ws.cli(&["info"]).run();
    c.assert_code(2);
    assert!(c.stderr.contains(".last-deployment-backup"), "{c}");
}
