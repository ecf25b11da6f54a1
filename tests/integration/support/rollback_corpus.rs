//! Hand-made backups for the rollback tests: tar archives built header by header (the
//! malicious-archive corpus of backup-anchors.md §5 needs names, links and sizes that no
//! well-behaved tar writer produces), and backup folders whose `manifest.yml` describes their
//! files exactly (sizes and SHA-256 correct), so that rollback's checksum checks pass and the
//! archive's *content* is what gets judged.

use std::io::Write;
use std::path::{Path, PathBuf};

use predeploy_backup::archive::hash::sha256_file;
use predeploy_backup::manifest::{
    FileRecord, Git, Manifest, Origin, SourceKind, VolumeRecord, FILE_NAME,
};

/// An uncompressed tar archive, written header by header.
#[derive(Default)]
pub struct TarBuilder {
    buf: Vec<u8>,
}

/// A ustar (or GNU, for long-name records) header with the name and link target written
/// byte for byte: `tar::Header::set_path` would refuse `/abs` and `..`, which is the point here.
fn header(
    gnu: bool,
    kind: tar::EntryType,
    name: &[u8],
    link: &[u8],
    size: u64,
    mode: u32,
) -> tar::Header {
    assert!(
        name.len() <= 100 && link.len() <= 100,
        "use a long-name record for longer names"
    );
    let mut h = if gnu {
        tar::Header::new_gnu()
    } else {
        tar::Header::new_ustar()
    };
    {
        let (n, l) = if gnu {
            let g = h.as_gnu_mut().unwrap();
            (&mut g.name, &mut g.linkname)
        } else {
            let u = h.as_ustar_mut().unwrap();
            (&mut u.name, &mut u.linkname)
        };
        n[..name.len()].copy_from_slice(name);
        l[..link.len()].copy_from_slice(link);
    }
    h.set_entry_type(kind);
    h.set_size(size);
    h.set_mode(mode);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(1_700_000_000);
    h.set_cksum();
    h
}

/// One PAX record: `"<len> <key>=<value>\n"`, where `<len>` counts the whole record.
pub fn pax_record(key: &str, value: &str) -> Vec<u8> {
    let body = format!(" {key}={value}\n");
    let mut len = body.len() + 1;
    while format!("{len}{body}").len() != len {
        len += 1;
    }
    format!("{len}{body}").into_bytes()
}

impl TarBuilder {
    pub fn new() -> TarBuilder {
        TarBuilder::default()
    }

    /// A header (checksum set) and its data, padded to 512 bytes. `size` is what the header
    /// claims; `data` is what follows it (they differ only in smuggling cases).
    pub fn entry(mut self, h: tar::Header, data: &[u8]) -> TarBuilder {
        self.buf.extend_from_slice(h.as_bytes());
        self.buf.extend_from_slice(data);
        let pad = (512 - data.len() % 512) % 512;
        self.buf.extend(std::iter::repeat_n(0u8, pad));
        self
    }

    pub fn raw(
        self,
        kind: tar::EntryType,
        name: &[u8],
        link: &[u8],
        data: &[u8],
        mode: u32,
    ) -> TarBuilder {
        let h = header(false, kind, name, link, data.len() as u64, mode);
        self.entry(h, data)
    }

    pub fn dir(self, name: &str, mode: u32) -> TarBuilder {
        self.raw(tar::EntryType::Directory, name.as_bytes(), b"", b"", mode)
    }

    pub fn file(self, name: &str, data: &[u8]) -> TarBuilder {
        self.raw(tar::EntryType::Regular, name.as_bytes(), b"", data, 0o644)
    }

    pub fn symlink(self, name: &str, target: &str) -> TarBuilder {
        self.raw(
            tar::EntryType::Symlink,
            name.as_bytes(),
            target.as_bytes(),
            b"",
            0o777,
        )
    }

    pub fn hardlink(self, name: &str, target: &str) -> TarBuilder {
        self.raw(
            tar::EntryType::Link,
            name.as_bytes(),
            target.as_bytes(),
            b"",
            0o644,
        )
    }

    /// A character (`char_dev`) or block device node.
    pub fn device(self, name: &str, char_dev: bool, major: u32, minor: u32) -> TarBuilder {
        let kind = if char_dev {
            tar::EntryType::Char
        } else {
            tar::EntryType::Block
        };
        let mut h = header(false, kind, name.as_bytes(), b"", 0, 0o666);
        h.set_device_major(major).unwrap();
        h.set_device_minor(minor).unwrap();
        h.set_cksum();
        self.entry(h, b"")
    }

    pub fn fifo(self, name: &str) -> TarBuilder {
        self.raw(tar::EntryType::Fifo, name.as_bytes(), b"", b"", 0o644)
    }

    /// A PAX extended header (`x`) that applies to the next entry.
    pub fn pax(self, records: &[(&str, &str)]) -> TarBuilder {
        let data: Vec<u8> = records.iter().flat_map(|(k, v)| pax_record(k, v)).collect();
        self.raw(
            tar::EntryType::XHeader,
            b"./PaxHeaders/entry",
            b"",
            &data,
            0o644,
        )
    }

    /// A GNU long-name record (`././@LongLink`, type `L`) for the next entry.
    pub fn gnu_long_name(self, name: &[u8]) -> TarBuilder {
        let mut data = name.to_vec();
        data.push(0);
        let h = header(
            true,
            tar::EntryType::GNULongName,
            b"././@LongLink",
            b"",
            data.len() as u64,
            0o644,
        );
        self.entry(h, &data)
    }

    /// A regular-file header that claims `claimed` bytes, followed by `data` (any length).
    pub fn file_claiming(self, name: &str, claimed: u64, data: &[u8]) -> TarBuilder {
        let h = header(
            false,
            tar::EntryType::Regular,
            name.as_bytes(),
            b"",
            claimed,
            0o644,
        );
        self.entry(h, data)
    }

    /// The end-of-archive marker (two zero blocks) and the archive.
    pub fn finish(mut self) -> Vec<u8> {
        self.buf.extend(std::iter::repeat_n(0u8, 1024));
        self.buf
    }
}

/// gzip (flate2, level 6).
pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(6));
    enc.write_all(data).unwrap();
    enc.finish().unwrap()
}

/// A file record with the file's real size and SHA-256 (computed by the product's own
/// `sha256_file`; the tests compare with `sha256sum` where it matters).
pub fn record(dir: &Path, rel: &str, checks: &[&str]) -> FileRecord {
    let (size, sha256) = sha256_file(&dir.join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"));
    FileRecord {
        path: rel.to_string(),
        size,
        sha256,
        checks: checks.iter().map(|c| c.to_string()).collect(),
        compression: predeploy_backup::archive::codec::Codec::from_path(Path::new(rel)),
        compression_level: None,
        encrypted: predeploy_backup::archive::crypt::is_sealed(Path::new(rel))
            .then(|| "age".to_string()),
        recipients: vec![],
    }
}

/// Writes `dir/<archive name>` (the gzipped `tar`) and a verified manifest that restores it
/// into Docker volume `volume`; returns the manifest's path.
pub fn volume_backup(dir: &Path, volume: &str, tar: &[u8]) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let now = chrono::Utc::now();
    let ts = predeploy_backup::manifest::timestamp(now);
    let rel = format!("volume_{volume}_{ts}.tar.gz");
    std::fs::write(dir.join(&rel), gzip(tar)).unwrap();
    let mut m = Manifest::new(
        Origin::Backup,
        now,
        dir.display().to_string(),
        Git {
            commit: Some("0123456789abcdef0123456789abcdef01234567".into()),
            branch: Some("main".into()),
        },
    );
    m.verified = true;
    m.volumes.push(VolumeRecord {
        file: record(dir, &rel, &["exists", "size", "gzip", "tar"]),
        name: volume.to_string(),
        kind: SourceKind::Volume,
        entries: 0,
        total_bytes: 0,
    });
    m.write(dir).unwrap()
}

/// Re-records the size and SHA-256 of every file of the manifest in `dir` (after a file was
/// edited on purpose), keeping everything else; returns the manifest's path.
pub fn refresh_manifest(dir: &Path) -> PathBuf {
    let path = dir.join(FILE_NAME);
    let mut m = Manifest::load(&path).unwrap();
    if let Some(d) = m.database.as_mut() {
        let (size, sha) = sha256_file(&dir.join(&d.file.path)).unwrap();
        d.file.size = size;
        d.file.sha256 = sha;
    }
    for v in &mut m.volumes {
        let (size, sha) = sha256_file(&dir.join(&v.file.path)).unwrap();
        v.file.size = size;
        v.file.sha256 = sha;
    }
    m.write(dir).unwrap()
}

/// `cp -a src dst` (ownership, modes and times kept).
pub fn copy_dir(src: &Path, dst: &Path) {
    let out = std::process::Command::new("cp")
        .arg("-a")
        .arg(src)
        .arg(dst)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "cp -a failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Flips every bit of the byte at `offset`.
pub fn flip_byte(path: &Path, offset: usize) {
    let mut b = std::fs::read(path).unwrap();
    assert!(offset < b.len());
    b[offset] ^= 0xff;
    std::fs::write(path, b).unwrap();
}

/// Appends bytes at the end of a file.
pub fn append(path: &Path, extra: &[u8]) {
    let mut f = std::fs::OpenOptions::new().append(true).open(path).unwrap();
    f.write_all(extra).unwrap();
}
