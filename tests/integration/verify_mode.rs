//! `verify` mode through the binary, run as the GitHub runner runs the action: real files
//! made by real tools (a real `pg_dump` of the seed database, GNU `gzip` and `tar` on the
//! host), the fault corpus a user can meet (each turned from a good file into a broken one
//! here), output forging through `commit`/`branch`, and bad inputs.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::{Arc, OnceLock};

use crate::support::action::{REF_NAME, REPOSITORY, SHA};
use crate::support::fixtures::{self, gzip, random_bytes, tar_headers, zstd};
use crate::support::{file_size, sha256sum, Action, Cli, Outcome, Workspace};

const TS: &str = "20241130_143022";

fn backup_dir() -> String {
    format!("backups/pre-deployment-{TS}")
}
fn db_rel() -> String {
    format!("{}/db_schedgen_{TS}.sql.gz", backup_dir())
}
fn vol_rel() -> String {
    format!("{}/volume_schedgen_minio_data_{TS}.tar.gz", backup_dir())
}

/// Every output `verify` sets on success (no artifact outside the Actions runtime).
const SUCCESS_OUTPUTS: [&str; 11] = [
    "backup-dir",
    "branch",
    "commit",
    "db-backup-path",
    "db-backup-sha256",
    "db-backup-size",
    "manifest-path",
    "timestamp",
    "verified",
    "volume-backup-paths",
    "volume-backup-sizes",
];

/// Every output of the contract (PRODUCT.md "Outputs").
const ALL_OUTPUTS: [&str; 19] = [
    "verified",
    "backup-dir",
    "db-backup-path",
    "db-backup-size",
    "db-backup-sha256",
    "volume-backup-paths",
    "volume-backup-sizes",
    "manifest-path",
    "commit",
    "branch",
    "timestamp",
    "artifact-id",
    "artifact-url",
    "artifact-digest",
    "restored",
    "safety-backup-dir",
    "destination-url",
    "db-backup-url",
    "volume-backup-urls",
];

/// The good dump: `gzip -c -n -6` of a real pg_dump.
fn good_dump_gz() -> &'static [u8] {
    static GZ: OnceLock<Vec<u8>> = OnceLock::new();
    GZ.get_or_init(|| gzip(fixtures::seed_dump()))
}

/// A GNU tar (uncompressed) of the awkward host tree, what `tar -t` lists, and the sum of
/// its regular files' sizes (hard links counted once).
struct GoodTar {
    tar: Vec<u8>,
    pax: Vec<u8>,
    entries: usize,
    file_bytes: u64,
}

fn good_tar() -> &'static GoodTar {
    static TAR: OnceLock<GoodTar> = OnceLock::new();
    TAR.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        fixtures::make_host_tree(dir.path());
        let tar = fixtures::tar_of(dir.path(), "gnu");
        let pax = fixtures::tar_of(dir.path(), "pax");
        let listed = std::process::Command::new("tar")
            .args(["-tf", "-"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .and_then(|mut c| {
                use std::io::Write;
                c.stdin.take().unwrap().write_all(&tar)?;
                c.wait_with_output()
            })
            .unwrap();
        let entries = String::from_utf8_lossy(&listed.stdout).lines().count();
        let mut seen = BTreeSet::new();
        let mut file_bytes = 0;
        walk(dir.path(), &mut |p| {
            use std::os::unix::fs::MetadataExt;
            let m = std::fs::symlink_metadata(p).unwrap();
            if m.is_file() && seen.insert(m.ino()) {
                file_bytes += m.len();
            }
        });
        GoodTar {
            tar,
            pax,
            entries,
            file_bytes,
        }
    })
}

fn walk(p: &Path, f: &mut dyn FnMut(&Path)) {
    f(p);
    if std::fs::symlink_metadata(p).unwrap().is_dir() {
        for e in std::fs::read_dir(p).unwrap() {
            walk(&e.unwrap().path(), f);
        }
    }
}

fn good_tar_gz() -> Vec<u8> {
    gzip(&good_tar().tar)
}

/// What to place at a backup path.
enum Bad {
    Bytes(Vec<u8>),
    Missing,
    Folder,
}

fn place(ws: &Workspace, rel: &str, what: &Bad) {
    let p = ws.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    match what {
        Bad::Bytes(b) => std::fs::write(&p, b).unwrap(),
        Bad::Missing => {}
        Bad::Folder => {
            std::fs::create_dir_all(&p).unwrap();
            std::fs::write(p.join("inside.sql"), vec![b'x'; 4096]).unwrap();
        }
    }
}

/// A workspace with a good dump and a good volume archive at the usual paths.
fn good_workspace() -> Arc<Workspace> {
    let ws = Workspace::new();
    place(&ws, &db_rel(), &Bad::Bytes(good_dump_gz().to_vec()));
    place(&ws, &vol_rel(), &Bad::Bytes(good_tar_gz()));
    ws
}

fn verify_both(ws: &Arc<Workspace>) -> Action {
    ws.action("verify")
        .input("db-backup", db_rel())
        .input("volume-backups", vol_rel())
}

fn manifest_yaml(o: &Outcome) -> serde_json::Value {
    let path = o.path(o.out("manifest-path"));
    let text =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}\n{o}", path.display()));
    serde_saphyr::from_str(&text)
        .unwrap_or_else(|e| panic!("manifest.yml is not YAML: {e}\n{text}"))
}

fn manifest_tables(m: &serde_json::Value) -> BTreeMap<String, u64> {
    m["database"]["tables"]
        .as_object()
        .unwrap_or_else(|| panic!("manifest has no database.tables: {m:#}"))
        .iter()
        .map(|(k, v)| (k.clone(), v.as_u64().unwrap()))
        .collect()
}

#[test]
fn verify_good_dump_and_volume_archive() {
    let ws = Workspace::new();
    place(&ws, &db_rel(), &Bad::Bytes(good_dump_gz().to_vec()));
    // The volume archive straight from GNU `tar -czf`.
    let tree = tempfile::tempdir().unwrap();
    fixtures::make_host_tree(tree.path());
    fixtures::tar_gz(tree.path(), &ws.join(vol_rel()), "gnu");
    let db = ws.join(db_rel());
    let vol = ws.join(vol_rel());

    let o = verify_both(&ws).run();
    o.assert_code(0);
    assert!(o.errors().is_empty(), "no ::error on success\n{o}");

    // Outputs, as the next steps read them.
    assert_eq!(o.output_names(), SUCCESS_OUTPUTS.to_vec(), "{o}");
    assert_eq!(o.out("verified"), "true");
    assert_eq!(o.out("backup-dir"), backup_dir());
    assert_eq!(o.out("db-backup-path"), db_rel());
    assert_eq!(o.out("db-backup-size"), file_size(&db).to_string());
    assert_eq!(o.out("db-backup-sha256"), sha256sum(&db));
    assert_eq!(o.out("volume-backup-paths"), vol_rel());
    assert_eq!(o.out("volume-backup-sizes"), file_size(&vol).to_string());
    assert_eq!(
        o.out("manifest-path"),
        format!("{}/manifest.yml", backup_dir())
    );
    assert!(o.path(o.out("manifest-path")).is_file());
    assert_eq!(o.out("commit"), SHA);
    assert_eq!(o.out("branch"), REF_NAME);
    assert_eq!(o.out("timestamp"), TS);
    let dupes: Vec<_> = o.output_list.iter().map(|(k, _)| k).collect::<Vec<_>>();
    assert_eq!(
        dupes.len(),
        o.outputs.len(),
        "an output was written twice\n{o}"
    );

    // The manifest: a YAML document with the record of both files.
    let m = manifest_yaml(&o);
    assert_eq!(m["schema_version"], 1, "{m:#}");
    assert_eq!(m["tool"]["name"], "predeploy-backup");
    assert_eq!(m["verified"], true);
    assert_eq!(m["timestamp"], TS);
    assert_eq!(m["git"]["commit"], SHA);
    assert_eq!(m["git"]["branch"], REF_NAME);
    assert_eq!(m["run"]["repository"], REPOSITORY);
    assert_eq!(m["run"]["run_id"], "4242");
    let dbf = &m["database"]["file"];
    assert_eq!(dbf["path"], format!("db_schedgen_{TS}.sql.gz"));
    assert_eq!(dbf["size"], file_size(&db));
    assert_eq!(dbf["sha256"], sha256sum(&db));
    assert_eq!(
        manifest_tables(&m),
        fixtures::seed_row_counts(),
        "row counts per table"
    );
    assert!(
        m["database"]["server_version"]
            .as_str()
            .unwrap_or("")
            .starts_with("15"),
        "server version recorded: {m:#}"
    );
    assert!(
        m["database"]["dump_tool_version"]
            .as_str()
            .unwrap_or("")
            .starts_with("15"),
        "pg_dump version recorded: {m:#}"
    );
    let v = &m["volumes"][0];
    assert_eq!(
        v["file"]["path"],
        format!("volume_schedgen_minio_data_{TS}.tar.gz")
    );
    assert_eq!(v["file"]["size"], file_size(&vol));
    assert_eq!(v["file"]["sha256"], sha256sum(&vol));
    let entries = std::process::Command::new("tar")
        .arg("-tzf")
        .arg(&vol)
        .output()
        .unwrap();
    let listed = String::from_utf8_lossy(&entries.stdout).lines().count() as u64;
    assert_eq!(
        v["entries"], listed,
        "entries = what `tar -tzf` lists: {v:#}"
    );
    assert_eq!(v["total_bytes"], good_tar().file_bytes, "{v:#}");
    // The product's own reader (rollback trusts it) reads it back.
    predeploy_backup::manifest::Manifest::load(&o.path(o.out("manifest-path")))
        .expect("the manifest loads");

    // `.last-deployment-backup`: `source`-able, pointing at the files.
    let p = ws.source_pointer();
    assert_eq!(p["DEPLOYMENT_TIMESTAMP"], TS);
    assert_eq!(p["BACKUP_DIR"].trim_start_matches("./"), backup_dir());
    assert_eq!(p["DB_BACKUP"].trim_start_matches("./"), db_rel());
    assert_eq!(p["MINIO_BACKUP"].trim_start_matches("./"), vol_rel());
    assert_eq!(
        p["MANIFEST"].trim_start_matches("./"),
        o.out("manifest-path")
    );
    assert_eq!(p["GIT_COMMIT"], SHA);
    assert_eq!(p["GIT_BRANCH"], REF_NAME);
    for k in ["BACKUP_DIR", "DB_BACKUP", "MINIO_BACKUP", "MANIFEST"] {
        assert!(ws.join(&p[k]).exists(), "{k}={} does not exist", p[k]);
    }

    // The job summary: the file table and how to roll back.
    let s = &o.summary;
    assert!(s.contains("| File |"), "file table\n{s}");
    for name in [db_rel(), vol_rel()] {
        assert!(s.contains(&name), "summary names {name}\n{s}");
    }
    assert!(
        s.contains(&sha256sum(&db)[..16]),
        "summary shows the dump's SHA-256\n{s}"
    );
    assert!(
        s.contains(&format!("Commit `{SHA}`")) && s.contains("`main`"),
        "{s}"
    );
    assert!(
        s.contains("gh workflow run") && s.contains("run-id=4242"),
        "rollback workflow line\n{s}"
    );
    assert!(
        s.contains("gunzip -c") && s.contains(&db_rel()),
        "manual restore of the dump\n{s}"
    );
    assert!(
        s.contains(&format!(
            "predeploy-backup rollback --manifest ./{}/manifest.yml",
            backup_dir()
        )),
        "CLI rollback line\n{s}"
    );
}

/// PRODUCT.md "Job summary": "the exact rollback instructions: ... and the manual commands
/// of the seed" — the seed's manual commands restore the MinIO volume from its archive too.
#[test]
fn verify_summary_tells_how_to_restore_the_volume_archive() {
    let ws = good_workspace();
    let o = verify_both(&ws).run();
    o.assert_code(0);
    assert!(
        o.summary.contains("tar xzf")
            && o.summary
                .contains(&format!("volume_schedgen_minio_data_{TS}.tar.gz")),
        "manual restore of the volume archive\n{o}"
    );
}

#[test]
fn verify_via_plain_cli_prints_outputs() {
    let ws = good_workspace();
    let o = Cli::new(&[
        "verify",
        "--db-backup",
        &db_rel(),
        "--volume-backups",
        &vol_rel(),
        "--commit",
        "abc123",
        "--branch",
        "release",
    ])
    .current_dir(ws.path())
    .run();
    o.assert_code(0);
    assert!(o.stdout.contains("verified=true"), "{o}");
    assert!(
        o.stdout.contains(&format!("db-backup-path={}", db_rel())),
        "{o}"
    );
    let p = ws.source_pointer();
    assert_eq!(p["GIT_COMMIT"], "abc123");
    assert_eq!(p["GIT_BRANCH"], "release");
}

// ---------------------------------------------------------------------------------------
// The fault corpus

#[derive(Clone, Copy, PartialEq)]
enum Target {
    /// The dump alone is given, and broken.
    Db,
    /// A good dump and a broken volume archive.
    Volume,
}

fn run_fault(target: Target, checks: &[&str], bad: Bad, inputs: &[(&str, &str)]) {
    run_fault_as(target, ".gz", checks, bad, inputs);
}

/// [`run_fault`] with the broken file named `….sql<ext>` / `….tar<ext>` (the codec it claims).
/// Returns the step's outcome, for what a test checks beyond that.
fn run_fault_as(
    target: Target,
    ext: &str,
    checks: &[&str],
    bad: Bad,
    inputs: &[(&str, &str)],
) -> Outcome {
    let ws = Workspace::new();
    let with_ext = |rel: String| format!("{}{ext}", rel.strip_suffix(".gz").unwrap());
    let (db_rel, vol_rel) = (|| with_ext(db_rel()), || with_ext(vol_rel()));
    let bad_rel = match target {
        Target::Db => db_rel(),
        Target::Volume => {
            // The good dump beside the broken archive, in the same codec as its name says.
            let good = if ext == ".zst" {
                good_dump_zst()
            } else {
                good_dump_gz().to_vec()
            };
            place(&ws, &db_rel(), &Bad::Bytes(good));
            vol_rel()
        }
    };
    place(&ws, &bad_rel, &bad);
    let mut a = ws.action("verify");
    a = match target {
        Target::Db => a.input("db-backup", db_rel()),
        Target::Volume => a
            .input("db-backup", db_rel())
            .input("volume-backups", vol_rel()),
    };
    for (k, v) in inputs {
        a = a.input(k, *v);
    }
    let o = a.run();

    o.assert_code(1);
    assert_eq!(o.out("verified"), "false", "{o}");
    assert!(
        !o.output_list
            .iter()
            .any(|(k, v)| k == "verified" && v == "true"),
        "verified=true written at some point\n{o}"
    );
    // One annotation on the broken file, naming the check.
    let on_files: Vec<_> = o
        .errors()
        .into_iter()
        .filter(|a| a.file().is_some())
        .collect();
    assert_eq!(on_files.len(), 1, "exactly one ::error with file=\n{o}");
    let a = &on_files[0];
    assert_eq!(
        a.file(),
        Some(bad_rel.as_str()),
        "annotation names the file\n{o}"
    );
    let text = format!("{} {}", a.title(), a.message);
    assert!(
        checks
            .iter()
            .any(|c| text.contains(&format!("`{c}`")) || text.contains(&format!("{c} check"))),
        "annotation names the check (one of {checks:?}): {text}\n{o}"
    );
    let file_name = Path::new(&bad_rel)
        .file_name()
        .unwrap()
        .to_string_lossy()
        .to_string();
    assert!(
        a.message.contains(&file_name),
        "message names the file: {}",
        a.message
    );
    // The summary says the same.
    assert!(
        o.summary_text().contains(&file_name),
        "summary names the file\n{o}"
    );
    assert!(
        checks.iter().any(|c| o.summary_text().contains(c)),
        "summary names the check\n{o}"
    );
    // Not a restore point, and nothing deleted.
    assert!(
        ws.pointer().is_none(),
        ".last-deployment-backup written\n{o}"
    );
    assert!(
        !ws.join(backup_dir()).join("manifest.yml").exists(),
        "manifest written\n{o}"
    );
    match bad {
        Bad::Missing => {}
        _ => assert!(ws.join(&bad_rel).exists(), "the broken file was deleted"),
    }
    if target == Target::Volume {
        assert!(ws.join(db_rel()).exists(), "the good dump was deleted");
    }
    o
}

fn with_byte(mut b: Vec<u8>, at: usize, xor: u8) -> Vec<u8> {
    b[at] ^= xor;
    b
}

/// The dump without the completion block (`-- PostgreSQL database dump complete` and what
/// follows it).
fn dump_without_completion() -> Vec<u8> {
    let d = fixtures::seed_dump();
    let marker = b"\n-- PostgreSQL database dump complete";
    let at = d
        .windows(marker.len())
        .rposition(|w| w == marker)
        .expect("the dump has its completion line");
    // Also drop the `--` line just before it.
    let head = &d[..at];
    let cut = head[..head.len() - 1]
        .iter()
        .rposition(|b| *b == b'\n')
        .map(|i| i + 1)
        .unwrap_or(head.len());
    d[..cut].to_vec()
}

macro_rules! fault {
    ($name:ident, $target:expr, [$($check:literal),+], $bad:expr) => {
        fault!($name, $target, [$($check),+], $bad, []);
    };
    ($name:ident, $target:expr, [$($check:literal),+], $bad:expr, [$(($k:literal, $v:literal)),*]) => {
        #[test]
        fn $name() {
            run_fault($target, &[$($check),+], $bad, &[$(($k, $v)),*]);
        }
    };
}

// gzip layer
fault!(fault_truncated_gzip, Target::Db, ["gzip"], {
    let g = good_dump_gz();
    Bad::Bytes(g[..g.len() * 2 / 3].to_vec())
});
fault!(fault_flipped_byte, Target::Db, ["gzip"], {
    let g = good_dump_gz().to_vec();
    let at = g.len() / 2;
    Bad::Bytes(with_byte(g, at, 0x55))
});
fault!(fault_wrong_crc, Target::Db, ["gzip"], {
    let g = good_dump_gz().to_vec();
    let at = g.len() - 8;
    Bad::Bytes(with_byte(g, at, 0x01))
});
fault!(fault_wrong_isize, Target::Db, ["gzip"], {
    let g = good_dump_gz().to_vec();
    let at = g.len() - 4;
    Bad::Bytes(with_byte(g, at, 0x01))
});
fault!(
    fault_trailing_bytes_after_last_member,
    Target::Db,
    ["gzip"],
    {
        let mut g = good_dump_gz().to_vec();
        g.extend_from_slice(b"trailing garbage after the last gzip member\n");
        Bad::Bytes(g)
    }
);
fault!(fault_trailing_zero_padding, Target::Db, ["gzip"], {
    let mut g = good_dump_gz().to_vec();
    g.extend_from_slice(&[0u8; 512]);
    Bad::Bytes(g)
});
fault!(
    fault_empty_file,
    Target::Db,
    ["min-size"],
    Bad::Bytes(vec![])
);
fault!(
    fault_empty_file_without_minimum,
    Target::Db,
    ["gzip", "sql-header"],
    Bad::Bytes(vec![]),
    [("min-db-size", "0")]
);
fault!(
    fault_under_min_size,
    Target::Db,
    ["min-size"],
    Bad::Bytes(good_dump_gz().to_vec()),
    [("min-db-size", "10MB")]
);
fault!(
    fault_plain_text,
    Target::Db,
    ["gzip"],
    Bad::Bytes(fixtures::seed_dump().to_vec())
);
// SQL layer
fault!(
    fault_dump_without_completion_line,
    Target::Db,
    ["sql-complete"],
    Bad::Bytes(gzip(&dump_without_completion()))
);
fault!(
    fault_dump_cut_in_half_gzip_intact,
    Target::Db,
    ["sql-complete"],
    {
        let d = fixtures::seed_dump();
        Bad::Bytes(gzip(&d[..d.len() / 2]))
    }
);
fault!(
    fault_gzip_of_random_bytes_as_dump,
    Target::Db,
    ["sql-header"],
    Bad::Bytes(gzip(&random_bytes(64 * 1024, 7)))
);
// tar layer
fault!(fault_tar_cut_mid_entry, Target::Volume, ["tar"], {
    let t = &good_tar().tar;
    let (headers, _) = tar_headers(t);
    let h = headers
        .iter()
        .find(|h| (h.typeflag == b'0' || h.typeflag == 0) && h.size >= 2000)
        .expect("a file of some size in the tar");
    Bad::Bytes(gzip(&t[..h.offset + 512 + h.size as usize / 2]))
});
fault!(fault_tar_bad_header_checksum, Target::Volume, ["tar"], {
    let mut t = good_tar().tar.clone();
    let (headers, _) = tar_headers(&t);
    let h = headers[headers.len() / 2];
    t[h.offset + 1] ^= 0x20; // one letter of the name changes case; the checksum no longer matches
    Bad::Bytes(gzip(&t))
});
fault!(fault_tar_without_end_marker, Target::Volume, ["tar"], {
    let t = &good_tar().tar;
    let (_, end) = tar_headers(t);
    Bad::Bytes(gzip(&t[..end]))
});
fault!(
    fault_random_bytes_as_tar,
    Target::Volume,
    ["tar"],
    Bad::Bytes(gzip(&random_bytes(64 * 1024, 11)))
);
// zstd layer (files made by the reference `zstd` CLI, named .sql.zst / .tar.zst)
fn good_dump_zst() -> Vec<u8> {
    zstd(fixtures::seed_dump(), &["-3"])
}
macro_rules! zstd_fault {
    ($name:ident, $target:expr, [$($check:literal),+], $bad:expr) => {
        #[test]
        fn $name() {
            run_fault_as($target, ".zst", &[$($check),+], $bad, &[]);
        }
    };
}
zstd_fault!(fault_zstd_truncated_mid_frame, Target::Db, ["zstd"], {
    let z = good_dump_zst();
    Bad::Bytes(z[..z.len() / 2].to_vec())
});
zstd_fault!(fault_zstd_flipped_byte, Target::Db, ["zstd"], {
    let z = good_dump_zst();
    let at = z.len() / 2;
    Bad::Bytes(with_byte(z, at, 0x55))
});
zstd_fault!(fault_zstd_flipped_checksum_byte, Target::Db, ["zstd"], {
    let z = good_dump_zst();
    let at = z.len() - 1;
    Bad::Bytes(with_byte(z, at, 0x01))
});
zstd_fault!(
    fault_zstd_without_checksum_flag,
    Target::Db,
    ["zstd"],
    Bad::Bytes(zstd(fixtures::seed_dump(), &["-3", "--no-check"]))
);
zstd_fault!(fault_zstd_trailing_garbage, Target::Db, ["zstd"], {
    let mut z = good_dump_zst();
    z.extend_from_slice(b"trailing garbage after the last zstd frame\n");
    Bad::Bytes(z)
});
zstd_fault!(fault_zstd_skippable_frame, Target::Db, ["zstd"], {
    let mut z = good_dump_zst();
    z.extend_from_slice(&[0x50, 0x2a, 0x4d, 0x18, 4, 0, 0, 0, 1, 2, 3, 4]);
    Bad::Bytes(z)
});
/// Issue 15's mix-up: a gzip file named `.zst` (and [`fault_zstd_named_gz`], the reverse);
/// the error says what the file really holds.
#[test]
fn fault_gzip_named_zst() {
    let bad = Bad::Bytes(good_dump_gz().to_vec());
    run_fault_as(Target::Db, ".zst", &["zstd"], bad, &[])
        .assert_mentions("gzip data: a .gz file named or recorded as zstd?");
}
zstd_fault!(
    fault_zstd_dump_cut_in_half_frame_intact,
    Target::Db,
    ["sql-complete"],
    {
        let d = fixtures::seed_dump();
        Bad::Bytes(zstd(&d[..d.len() / 2], &["-3"]))
    }
);
zstd_fault!(
    fault_zstd_tar_without_end_marker,
    Target::Volume,
    ["tar"],
    {
        let t = &good_tar().tar;
        let (_, end) = tar_headers(t);
        Bad::Bytes(zstd(&t[..end], &["-3"]))
    }
);
#[test]
fn fault_zstd_named_gz() {
    run_fault_as(
        Target::Db,
        ".gz",
        &["gzip"],
        Bad::Bytes(good_dump_zst()),
        &[],
    )
    .assert_mentions("zstd data: a .zst file named or recorded as gzip?");
}

/// Concatenated zstd frames (as `cat a.zst b.zst` makes) and uncompressed files verify; the
/// manifest records each file's codec.
#[test]
fn valid_concatenated_zstd_and_uncompressed_files() {
    let ws = Workspace::new();
    let d = fixtures::seed_dump();
    let mut z = zstd(&d[..d.len() / 3], &["-1"]);
    z.extend(zstd(&d[d.len() / 3..], &["-19"]));
    let db = format!("{}/db_schedgen_{TS}.sql.zst", backup_dir());
    let vol = format!("{}/volume_schedgen_minio_data_{TS}.tar", backup_dir());
    place(&ws, &db, &Bad::Bytes(z));
    place(&ws, &vol, &Bad::Bytes(good_tar().tar.clone()));
    let o = assert_verifies(
        &ws,
        ws.action("verify")
            .input("db-backup", &db)
            .input("volume-backups", &vol),
    );
    let m = manifest_yaml(&o);
    assert_eq!(m["database"]["file"]["compression"], "zstd", "{m}");
    assert!(m["database"]["file"]["checks"]
        .as_array()
        .unwrap()
        .iter()
        .any(|c| c == "zstd"));
    assert_eq!(m["volumes"][0]["file"]["compression"], "none", "{m}");
    assert_eq!(manifest_tables(&m), fixtures::seed_row_counts());
}

// the file itself
fault!(fault_missing_file, Target::Db, ["exists"], Bad::Missing);
fault!(
    fault_missing_volume_archive,
    Target::Volume,
    ["exists"],
    Bad::Missing
);
fault!(
    fault_folder_where_a_file_is_expected,
    Target::Db,
    ["regular-file"],
    Bad::Folder
);

// ---------------------------------------------------------------------------------------
// Valid files that a naive checker might refuse

fn assert_verifies(ws: &Arc<Workspace>, a: Action) -> Outcome {
    let o = a.run();
    o.assert_code(0);
    assert_eq!(o.out("verified"), "true", "{o}");
    assert!(ws.pointer().is_some(), "{o}");
    o
}

#[test]
fn valid_multi_member_gzip_dump() {
    // `cat a.gz b.gz`: two gzip members, one stream (what gzip -d and zcat read).
    let d = fixtures::seed_dump();
    let mut two = gzip(&d[..d.len() / 3]);
    two.extend(gzip(&d[d.len() / 3..]));
    assert_eq!(
        fixtures::gunzip(&two),
        d,
        "GNU gzip reads both members as one stream"
    );
    let ws = Workspace::new();
    place(&ws, &db_rel(), &Bad::Bytes(two));
    let o = assert_verifies(&ws, ws.action("verify").input("db-backup", db_rel()));
    assert_eq!(
        manifest_tables(&manifest_yaml(&o)),
        fixtures::seed_row_counts()
    );
}

#[test]
fn valid_multi_member_tar_gz_with_links_long_names_and_empty_folders() {
    let t = &good_tar().tar;
    let mut three = gzip(&t[..t.len() / 5]);
    three.extend(gzip(&t[t.len() / 5..t.len() / 2]));
    three.extend(gzip(&t[t.len() / 2..]));
    let ws = Workspace::new();
    place(&ws, &vol_rel(), &Bad::Bytes(three));
    let o = assert_verifies(&ws, ws.action("verify").input("volume-backups", vol_rel()));
    let m = manifest_yaml(&o);
    assert_eq!(
        m["volumes"][0]["entries"],
        good_tar().entries as u64,
        "{m:#}"
    );
    assert!(
        m.get("database").is_none_or(|d| d.is_null()),
        "no database recorded: {m:#}"
    );
    // Without a dump the pointer's DB_BACKUP is empty, MINIO_BACKUP points at the archive.
    let p = ws.source_pointer();
    assert_eq!(p["MINIO_BACKUP"].trim_start_matches("./"), vol_rel());
}

#[test]
fn valid_pax_tar_and_several_volume_archives() {
    let ws = Workspace::new();
    place(&ws, &db_rel(), &Bad::Bytes(good_dump_gz().to_vec()));
    place(&ws, &vol_rel(), &Bad::Bytes(gzip(&good_tar().pax)));
    let second = format!("{}/volume_other_{TS}.tar.gz", backup_dir());
    place(&ws, &second, &Bad::Bytes(good_tar_gz()));
    let o = assert_verifies(
        &ws,
        ws.action("verify")
            .input("db-backup", db_rel())
            // Newline-separated with blank space around, as a YAML block scalar gives it.
            .input("volume-backups", format!("{}\n  {second}\n", vol_rel())),
    );
    assert_eq!(
        o.out("volume-backup-paths"),
        format!("{}\n{second}", vol_rel())
    );
    let sizes = format!(
        "{}\n{}",
        file_size(&ws.join(vol_rel())),
        file_size(&ws.join(&second))
    );
    assert_eq!(o.out("volume-backup-sizes"), sizes);
    let m = manifest_yaml(&o);
    assert_eq!(m["volumes"].as_array().unwrap().len(), 2, "{m:#}");
}

// ---------------------------------------------------------------------------------------
// Forging outputs through inputs

#[test]
fn newline_in_branch_or_commit_cannot_forge_outputs() {
    let branch = "main\nverified=false\nmanifest-path=/etc/passwd\n$(touch pwned-1)`touch pwned-2`';touch pwned-3;'";
    let commit = "abc123\nghadelimiter_x\nverified=false\nbackup-dir<<EOF\nforged\nEOF";
    let ws = good_workspace();
    let o = verify_both(&ws)
        .input("branch", branch)
        .input("commit", commit)
        .run();
    o.assert_code(0);
    // The harness parsed $GITHUB_OUTPUT as strictly as the runner: every value came back
    // whole, no name twice, no name that we did not set.
    let names: Vec<&String> = o.output_list.iter().map(|(k, _)| k).collect();
    assert_eq!(
        names.len(),
        o.outputs.len(),
        "an output name appears twice\n{o}"
    );
    assert_eq!(o.output_names(), SUCCESS_OUTPUTS.to_vec(), "{o}");
    assert_eq!(o.out("verified"), "true");
    assert_eq!(o.out("branch"), branch);
    assert_eq!(o.out("commit"), commit);
    assert_eq!(o.out("backup-dir"), backup_dir());
    assert_eq!(
        o.out("manifest-path"),
        format!("{}/manifest.yml", backup_dir())
    );
    // The manifest and the pointer keep them as data.
    let m = manifest_yaml(&o);
    assert_eq!(m["git"]["branch"], branch);
    assert_eq!(m["git"]["commit"], commit);
    let p = ws.source_pointer();
    assert_eq!(p["GIT_BRANCH"], branch);
    assert_eq!(p["GIT_COMMIT"], commit);
    for f in ["pwned-1", "pwned-2", "pwned-3"] {
        assert!(
            !ws.join(f).exists(),
            "sourcing the pointer ran a command ({f})"
        );
    }

    // A failed verification with the same inputs cannot come out as verified.
    let ws = Workspace::new();
    let g = good_dump_gz();
    place(&ws, &db_rel(), &Bad::Bytes(g[..g.len() / 2].to_vec()));
    let branch = "main\nverified=true";
    let commit = "abc\nghadelimiter_x\nverified=true\nx<<EOF";
    let o = ws
        .action("verify")
        .input("db-backup", db_rel())
        .input("branch", branch)
        .input("commit", commit)
        .run();
    o.assert_code(1);
    assert_eq!(o.out("verified"), "false");
    assert!(
        !o.output_list
            .iter()
            .any(|(k, v)| k == "verified" && v != "false"),
        "{o}"
    );
    for (k, _) in &o.output_list {
        assert!(ALL_OUTPUTS.contains(&k.as_str()), "unknown output {k}\n{o}");
    }
}

// ---------------------------------------------------------------------------------------
// Bad input

#[test]
fn unknown_mode_is_a_usage_error_naming_the_input() {
    let o = Action::new("nonsense").run();
    o.assert_code(2);
    let text = o.all_text();
    assert!(
        text.contains("mode") && text.contains("nonsense"),
        "names input `mode` and the value\n{o}"
    );
    assert!(
        text.contains("verify") && text.contains("backup"),
        "lists the valid modes\n{o}"
    );
    assert!(!o.errors().is_empty(), "an ::error annotation\n{o}");
}

#[test]
fn verify_without_paths_is_a_usage_error() {
    let o = Action::new("verify").run();
    o.assert_code(2);
    o.assert_mentions("db-backup")
        .assert_mentions("volume-backups");
    assert_eq!(
        o.outputs.get("verified").map(String::as_str),
        Some("false"),
        "{o}"
    );
    assert!(o.ws.pointer().is_none());
    // The plain CLI says the same.
    let o = Cli::new(&["verify"]).run();
    o.assert_code(2);
    assert!(o.stderr.contains("db-backup"), "{o}");
}

#[test]
fn bad_size_input_is_a_usage_error_naming_the_input() {
    let ws = good_workspace();
    let o = verify_both(&ws).input("min-db-size", "lots").run();
    o.assert_code(2);
    o.assert_mentions("min-db-size").assert_mentions("lots");
    assert!(ws.pointer().is_none());
}

/// A level outside the codec's range, or an unknown codec: exit 2 naming the range, before
/// any backup starts (no Docker needed to get there).
#[test]
fn compression_level_out_of_range_is_a_usage_error_naming_the_range() {
    for (codec, level, range) in [
        ("zstd", "20", "1–19"),
        ("zstd", "0", "1–19"),
        ("gzip", "10", "0–9"),
    ] {
        let ws = Workspace::new();
        let o = ws
            .action("backup")
            .input("postgres-container", "no-such-container")
            .input("compression", codec)
            .input("compression-level", level)
            .run();
        o.assert_code(2);
        o.assert_mentions("compression-level")
            .assert_mentions(range);
        assert!(ws.backup_folders("backups").is_empty(), "{o}");
    }
    let ws = Workspace::new();
    let o = ws
        .action("backup")
        .input("postgres-container", "no-such-container")
        .input("compression", "lz4")
        .run();
    o.assert_code(2);
    o.assert_mentions("lz4");
}

#[test]
fn action_yml_declares_the_contract() {
    // PRODUCT.md "Inputs" and "Outputs": the harness feeds exactly action.yml's inputs,
    // so action.yml must declare every one of them.
    const INPUTS: &[&str] = &[
        "mode",
        "backup-root",
        "postgres-container",
        "compose-project",
        "postgres-service",
        "database-url",
        "postgres-db",
        "postgres-user",
        "postgres-password",
        "volumes",
        "paths",
        "stop-containers",
        "db-backup",
        "volume-backups",
        "commit",
        "branch",
        "min-db-size",
        "min-volume-size",
        "check-free-space",
        "compression",
        "compression-level",
        "verify-restore",
        "encrypt-recipients",
        "encrypt-recipients-file",
        "decrypt-identity",
        "retention-days",
        "keep-last",
        "upload-artifact",
        "artifact-name",
        "include-backups-in-artifact",
        "destination",
        "s3-endpoint",
        "s3-region",
        "s3-path-style",
        "verify-destination",
        "lock",
        "run-id",
        "github-token",
        "repository",
        "trusted-workflows",
        "trusted-branches",
        "manifest",
        "dry-run",
        "restore-volumes",
        "restore-database",
        "restore-special-bits",
        "docker-tls-ca",
        "docker-tls-cert",
        "docker-tls-key",
        "ssh-private-key",
        "ssh-known-hosts",
        "ssh-accept-new-host-key",
        "alert-webhook-url",
        "alert-email",
        "smtp-url",
        "alert-on",
    ];
    let declared: BTreeSet<String> = crate::support::action::action_inputs()
        .iter()
        .map(|(k, _)| k.clone())
        .collect();
    let wanted: BTreeSet<String> = INPUTS.iter().map(|s| s.to_string()).collect();
    assert_eq!(declared, wanted, "action.yml inputs vs PRODUCT.md");
    let text = std::fs::read_to_string(crate::support::repo_root().join("action.yml")).unwrap();
    let doc: serde_json::Value = serde_saphyr::from_str(&text).unwrap();
    let outputs: BTreeSet<String> = doc["outputs"]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect();
    let wanted: BTreeSet<String> = ALL_OUTPUTS.iter().map(|s| s.to_string()).collect();
    assert_eq!(outputs, wanted, "action.yml outputs vs PRODUCT.md");
    // The defaults a user reads in PRODUCT.md.
    let defaults: BTreeMap<String, Option<String>> = crate::support::action::action_inputs()
        .iter()
        .cloned()
        .collect();
    for (k, v) in [
        ("mode", "backup"),
        ("backup-root", "backups"),
        ("min-db-size", "1KiB"),
        ("min-volume-size", "512B"),
        ("compression", "gzip"),
        ("retention-days", "7"),
        ("keep-last", "3"),
        ("alert-on", "failure"),
        ("verify-destination", "full"),
        ("lock", "auto"),
    ] {
        assert_eq!(defaults[k].as_deref(), Some(v), "default of {k}");
    }
    // Empty: each codec's own default level (gzip 6, zstd 3).
    assert_eq!(defaults["compression-level"], None);
}
