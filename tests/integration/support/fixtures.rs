//! Test data made by real tools: the seed database and a real `pg_dump` of it, awkward
//! folder trees on the host, GNU `gzip` and `tar` output, and the byte surgery that turns a
//! good file into a broken one.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::{chown, symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use sha2::{Digest, Sha256};

use super::docker::{docker_ok, Pg, PG_IMAGE};

pub fn seed_sql_path() -> PathBuf {
    super::repo_root().join("tests/fixtures/seed.sql")
}

/// The row counts that `seed.sql`'s header promises, keyed `schema.table` without quotes
/// (`public.Order Items`), as the manifest records them.
pub fn seed_row_counts() -> BTreeMap<String, u64> {
    let text = std::fs::read_to_string(seed_sql_path()).expect("seed.sql");
    let mut out = BTreeMap::new();
    let mut inside = false;
    for line in text.lines() {
        if line.starts_with("-- Expected row counts") {
            inside = true;
            continue;
        }
        if !inside {
            continue;
        }
        let Some(rest) = line.strip_prefix("--   ") else {
            break;
        };
        let rest = rest.trim_end();
        let Some((name, n)) = rest.rsplit_once(char::is_whitespace) else {
            break;
        };
        let Ok(n) = n.parse::<u64>() else { break };
        out.insert(name.trim().replace('"', ""), n);
    }
    assert!(
        out.len() >= 5,
        "seed.sql's header lists no row counts: {out:?}"
    );
    out
}

/// A real `pg_dump` (plain SQL, PostgreSQL 15, inside the image's container) of a database
/// loaded with `seed.sql`, user and database `schedgen`. Made once and cached in
/// `target/tmp` under a key of seed.sql's content and the image id, so later runs reuse it.
pub fn seed_dump() -> &'static [u8] {
    static DUMP: OnceLock<Vec<u8>> = OnceLock::new();
    DUMP.get_or_init(|| {
        super::docker::ensure_images();
        let image = docker_ok(&["image", "inspect", "-f", "{{.Id}}", PG_IMAGE]);
        let mut h = Sha256::new();
        h.update(std::fs::read(seed_sql_path()).unwrap());
        h.update(image.as_bytes());
        let key = hex::encode(&h.finalize()[..8]);
        let dir = super::target_tmp().join("pbt-cache");
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("seed-dump-{key}.sql"));
        if let Ok(b) = std::fs::read(&path) {
            if b.ends_with(b"\n") && !b.is_empty() {
                return b;
            }
        }
        let pg = Pg::seeded("seed-dump");
        let dump = pg
            .container
            .exec(&["pg_dump", "-U", &pg.user, "-d", &pg.db]);
        assert!(
            dump.status.success(),
            "pg_dump failed: {}",
            String::from_utf8_lossy(&dump.stderr)
        );
        let tmp = dir.join(format!(".seed-dump-{key}.{}", std::process::id()));
        std::fs::write(&tmp, &dump.stdout).unwrap();
        std::fs::rename(&tmp, &path).unwrap();
        dump.stdout
    })
}

/// `gzip -c -n -6` (GNU gzip) of `data`.
pub fn gzip(data: &[u8]) -> Vec<u8> {
    pipe_through(Command::new("gzip").args(["-c", "-n", "-6"]), data)
}

/// `zstd -c -q` (the reference CLI) of `data`, with `args` (`-3`, `--no-check`, …).
pub fn zstd(data: &[u8], args: &[&str]) -> Vec<u8> {
    pipe_through(Command::new("zstd").args(["-c", "-q"]).args(args), data)
}

/// `gzip -dc` (GNU gzip) of `data`.
pub fn gunzip(data: &[u8]) -> Vec<u8> {
    pipe_through(Command::new("gzip").args(["-dc"]), data)
}

fn pipe_through(cmd: &mut Command, data: &[u8]) -> Vec<u8> {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("tool runs");
    let mut stdin = child.stdin.take().unwrap();
    let input = data.to_vec();
    let feeder = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let out = child.wait_with_output().unwrap();
    feeder.join().unwrap();
    assert!(out.status.success(), "{cmd:?} failed");
    out.stdout
}

/// Deterministic incompressible bytes (xorshift64).
pub fn random_bytes(len: usize, mut seed: u64) -> Vec<u8> {
    seed |= 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        out.extend_from_slice(&seed.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Builds on the host the same kind of awkward tree as [`super::docker::TreeSpec::awkward`]:
/// nested folders, symlinks (one dangling), a hard link, empty folders, a 200-character
/// name inside a 200-character folder, files owned by 70:70 and 1000:1000, modes 0640,
/// 0750, 0400, a setgid folder, fake PDFs. Needs root (the tests run as root).
pub fn make_host_tree(root: &Path) {
    let w = |p: &str, data: &[u8]| {
        let p = root.join(p);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, data).unwrap();
    };
    let mode = |p: &str, m: u32| {
        std::fs::set_permissions(root.join(p), std::fs::Permissions::from_mode(m)).unwrap()
    };
    std::fs::create_dir_all(root.join("deep/a/b/c/d/e/f/g/h")).unwrap();
    std::fs::create_dir_all(root.join("empty-dir")).unwrap();
    std::fs::create_dir_all(root.join("nested empty/inner/innermost")).unwrap();
    w("deep/a/b/c/d/e/f/g/h/leaf.txt", b"the deepest file\n");
    w("with space/ünï cödé/file name.txt", b"spaces and unicode\n");
    w(".hidden", b"hidden\n");
    w("empty-file", b"");
    symlink("deep/a/b/c/d/e/f/g/h/leaf.txt", root.join("link-to-leaf")).unwrap();
    symlink("empty-dir", root.join("link-to-dir")).unwrap();
    symlink("no-such-file", root.join("dangling-link")).unwrap();
    std::fs::hard_link(
        root.join("deep/a/b/c/d/e/f/g/h/leaf.txt"),
        root.join("hard-link-to-leaf"),
    )
    .unwrap();
    let long_dir = format!("dir-{}", "d".repeat(196));
    let long_name = format!("file-{}.txt", "f".repeat(191));
    w(
        &format!("{long_dir}/{long_name}"),
        b"a long name in a long folder\n",
    );
    w(&long_name, b"long name at the top\n");
    w("owned-70/secret.txt", b"secret\n");
    chown(root.join("owned-70/secret.txt"), Some(70), Some(70)).unwrap();
    chown(root.join("owned-70"), Some(70), Some(70)).unwrap();
    mode("owned-70/secret.txt", 0o640);
    mode("owned-70", 0o750);
    std::fs::create_dir_all(root.join("shared-setgid")).unwrap();
    chown(root.join("shared-setgid"), Some(0), Some(70)).unwrap();
    mode("shared-setgid", 0o2775);
    w("read-only.txt", b"read only\n");
    mode("read-only.txt", 0o400);
    for i in 1..=6u64 {
        let mut pdf = b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n".to_vec();
        pdf.extend(random_bytes(4000 + 977 * i as usize, i));
        pdf.extend_from_slice(b"\n%%EOF\n");
        let p = format!("schedgen-pdfs/schedules/2024/09/schedule-{i}.pdf");
        w(&p, &pdf);
        chown(root.join(&p), Some(1000), Some(1000)).unwrap();
    }
}

/// `tar -c -C dir .` (GNU tar) in `format` (`gnu`, `pax`, ...), uncompressed.
pub fn tar_of(dir: &Path, format: &str) -> Vec<u8> {
    let out = Command::new("tar")
        .arg(format!("--format={format}"))
        .args(["-c", "-f", "-", "-C"])
        .arg(dir)
        .arg(".")
        .output()
        .expect("tar runs");
    assert!(
        out.status.success(),
        "tar failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// `tar -czf dst -C dir .` (GNU tar, gzip).
pub fn tar_gz(dir: &Path, dst: &Path, format: &str) {
    let out = Command::new("tar")
        .arg(format!("--format={format}"))
        .args(["-czf"])
        .arg(dst)
        .arg("-C")
        .arg(dir)
        .arg(".")
        .output()
        .expect("tar runs");
    assert!(
        out.status.success(),
        "tar failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn octal(field: &[u8]) -> u64 {
    let s: String = field
        .iter()
        .take_while(|b| **b != 0 && **b != b' ')
        .map(|b| *b as char)
        .collect();
    u64::from_str_radix(s.trim(), 8).unwrap_or(0)
}

/// One header of a tar archive: its offset, type flag and data size.
#[derive(Clone, Copy, Debug)]
pub struct TarHeader {
    pub offset: usize,
    pub typeflag: u8,
    pub size: u64,
}

/// Walks the headers of an uncompressed tar (every header, extended ones included) and
/// returns them and the offset of the end-of-archive marker.
pub fn tar_headers(tar: &[u8]) -> (Vec<TarHeader>, usize) {
    let mut off = 0;
    let mut v = vec![];
    while off + 512 <= tar.len() {
        let h = &tar[off..off + 512];
        if h.iter().all(|b| *b == 0) {
            return (v, off);
        }
        let size = octal(&h[124..136]);
        v.push(TarHeader {
            offset: off,
            typeflag: h[156],
            size,
        });
        off += 512 + (size as usize).div_ceil(512) * 512;
    }
    panic!("no end-of-archive marker in the tar");
}

/// Recomputes a ustar header's checksum (after editing it).
pub fn fix_tar_checksum(header: &mut [u8]) {
    header[148..156].copy_from_slice(b"        ");
    let sum: u32 = header.iter().map(|b| *b as u32).sum();
    let field = format!("{sum:06o}\0 ");
    header[148..156].copy_from_slice(field.as_bytes());
}

/// A mounted tmpfs, unmounted (lazily) and removed on drop.
pub struct Tmpfs {
    pub path: PathBuf,
}

impl Tmpfs {
    /// `mount -t tmpfs -o size=<size> tmpfs <path>` (root only).
    pub fn mount(path: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(path).unwrap();
        let out = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0755"),
                "tmpfs",
            ])
            .arg(path)
            .output()
            .expect("mount runs");
        assert!(
            out.status.success(),
            "mounting a tmpfs on {} failed (the tests need root): {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        Tmpfs {
            path: path.to_path_buf(),
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).output();
    }
}
