//! What "verified" means (PRODUCT.md "Verification").
//!
//! [`verify_file`] runs every check on a backup file in **one streaming read**, with
//! constant memory (a few 1 MiB read buffers, one 256 KiB inflate buffer, one tar header):
//!
//! 1. `exists`, `regular-file` (a symlink is refused too: the bytes we check must be the
//!    bytes stored under this name), `min-size`;
//! 2. `gzip`: every member decodes, its CRC-32 and length match, nothing (not even zero
//!    padding) follows the last member ([`super::inflate`]);
//! 3. for a dump, `sql-header` and `sql-complete` ([`super::sql`]); for a volume archive,
//!    `tar`: every header to the end-of-archive marker ([`super::tarwalk`]);
//! 4. `sha256` of the file's bytes.
//!
//! Two threads share the work: one reads the file in 1 MiB blocks and hashes them, the
//! calling thread inflates, CRCs and parses the same blocks as they arrive. A problem never
//! panics and never returns `Err`: it becomes the report's `failure`, naming the check and
//! saying what is wrong and what to do.
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufRead, Read};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, Sender, SyncSender};

use sha2::{Digest, Sha256};

use super::inflate::{self, GzError};
use super::sql::SqlScanner;
use super::tarwalk::TarWalker;

/// What a file is expected to contain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expect {
    /// gzip of pg_dump plain-format SQL.
    SqlDump,
    /// gzip of a tar archive.
    Tar,
}

/// One check of PRODUCT.md's list; the `as_str` names appear in the manifest and annotations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Check {
    Exists,
    RegularFile,
    MinSize,
    Gzip,
    SqlHeader,
    SqlComplete,
    Tar,
    Sha256,
}

impl Check {
    pub fn as_str(self) -> &'static str {
        match self {
            Check::Exists => "exists",
            Check::RegularFile => "regular-file",
            Check::MinSize => "min-size",
            Check::Gzip => "gzip",
            Check::SqlHeader => "sql-header",
            Check::SqlComplete => "sql-complete",
            Check::Tar => "tar",
            Check::Sha256 => "sha256",
        }
    }
}

/// The failed check and a message that says what is wrong and what to do.
#[derive(Clone, Debug)]
pub struct CheckFailure {
    pub check: Check,
    pub message: String,
}

/// Facts read from a pg_dump plain-format dump while verifying it.
#[derive(Clone, Debug, Default)]
pub struct SqlSummary {
    /// "Dumped from database version X"
    pub server_version: Option<String>,
    /// "Dumped by pg_dump version Y"
    pub dump_version: Option<String>,
    /// Rows per table, counted from the dump's `COPY ... FROM stdin;` blocks, keyed `schema.table`.
    pub tables: BTreeMap<String, u64>,
}

/// Facts read from a tar archive while verifying it.
#[derive(Clone, Debug, Default)]
pub struct TarSummary {
    /// Number of entries (files, folders, links).
    pub entries: u64,
    /// Sum of regular-file sizes.
    pub total_bytes: u64,
}

/// The result of verifying one file.
#[derive(Clone, Debug)]
pub struct FileReport {
    pub path: PathBuf,
    pub expect: Expect,
    /// File size in bytes (0 when it could not be read).
    pub size: u64,
    /// Lowercase hex SHA-256 of the file; set only when every check passed.
    pub sha256: Option<String>,
    /// Checks that passed, in order.
    pub passed: Vec<Check>,
    pub failure: Option<CheckFailure>,
    pub sql: Option<SqlSummary>,
    pub tar: Option<TarSummary>,
}

impl FileReport {
    pub fn verified(&self) -> bool {
        self.failure.is_none() && self.sha256.is_some()
    }
}


/// Read block size, and how many blocks may be in flight between the two threads.
const BLOCK: usize = 1 << 20;
const POOL: usize = 4;
/// Inflate output block.
const OUT: usize = 256 * 1024;

impl FileReport {
    fn new(path: &Path, expect: Expect) -> Self {
        FileReport {
            path: path.to_path_buf(),
            expect,
            size: 0,
            sha256: None,
            passed: Vec::new(),
            failure: None,
            sql: None,
            tar: None,
        }
    }

    fn fail(&mut self, check: Check, message: String) {
        if self.failure.is_none() {
            self.failure = Some(CheckFailure { check, message });
        }
    }

    fn pass(&mut self, check: Check) {
        self.passed.push(check);
    }
}

impl Expect {
    fn what(self) -> &'static str {
        match self {
            Expect::SqlDump => "database dump",
            Expect::Tar => "volume archive",
        }
    }
}

/// Verifies one file; never panics, never fails: problems are in `failure`.
///
/// `min_size` is the smallest acceptable file size in bytes (the compressed size).
pub fn verify_file(path: &Path, expect: Expect, min_size: u64) -> FileReport {
    let mut report = FileReport::new(path, expect);
    let shown = path.display();

    // exists
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            report.fail(
                Check::Exists,
                format!("{shown} does not exist: the {} was never written or was moved; take a new backup", expect.what()),
            );
            return report;
        }
        Err(e) => {
            report.fail(
                Check::Exists,
                format!("{shown} cannot be examined ({e}): check the path and its permissions"),
            );
            return report;
        }
    };
    report.pass(Check::Exists);

    // regular-file (never through a symlink: the checked bytes must be the stored ones)
    let ft = meta.file_type();
    if !ft.is_file() {
        let what = if ft.is_symlink() {
            match std::fs::read_link(path) {
                Ok(t) => format!(
                    "a symbolic link (to {}), not a file; links are refused so that the verified bytes are the stored ones: give the real file's path",
                    t.display()
                ),
                Err(_) => "a symbolic link, not a file; give the real file's path".into(),
            }
        } else if ft.is_dir() {
            "a folder, not a file: give the path of the backup file inside it".into()
        } else {
            "a device, FIFO or socket, not a regular file: give the path of the backup file".into()
        };
        report.fail(Check::RegularFile, format!("{shown} is {what}"));
        return report;
    }
    let file = match open_nofollow(path) {
        Ok(f) => f,
        Err(e) => {
            report.fail(
                Check::RegularFile,
                format!("{shown} cannot be opened ({e}): check its permissions"),
            );
            return report;
        }
    };
    let fmeta = match file.metadata() {
        Ok(m) if m.is_file() => m,
        Ok(_) => {
            report.fail(
                Check::RegularFile,
                format!("{shown} was replaced by something that is not a regular file while it was being verified; verify again"),
            );
            return report;
        }
        Err(e) => {
            report.fail(Check::RegularFile, format!("{shown} cannot be examined ({e})"));
            return report;
        }
    };
    report.pass(Check::RegularFile);

    // min-size
    let size = fmeta.len();
    report.size = size;
    if size < min_size {
        report.fail(
            Check::MinSize,
            format!(
                "{shown} is {size} bytes, less than the minimum of {min_size} bytes for a {}: {}",
                expect.what(),
                match expect {
                    Expect::SqlDump => "the dump is empty or nearly so (wrong database, or pg_dump failed); check the database and take a new backup, or lower `min-db-size` if the database really is that small",
                    Expect::Tar => "the archive is empty or nearly so (wrong volume, or the archive failed); check the volume and take a new backup, or lower `min-volume-size`",
                }
            ),
        );
        return report;
    }
    report.pass(Check::MinSize);

    verify_stream(file, Some(size), &mut report);
    report
}

/// Verifies a stream instead of a file: the content checks (`gzip`, `sql-*` or `tar`) and
/// `sha256`, without `exists`, `regular-file` or `min-size`. `size` is the number of bytes
/// read. Used by fuzzing, and usable on data that is not (yet) a file.
pub fn verify_reader<R: Read + Send>(reader: R, expect: Expect) -> FileReport {
    let mut report = FileReport::new(Path::new("-"), expect);
    verify_stream(reader, None, &mut report);
    report
}

#[cfg(unix)]
fn open_nofollow(path: &Path) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
        .open(path)
}

#[cfg(not(unix))]
fn open_nofollow(path: &Path) -> io::Result<File> {
    File::open(path)
}

type Block = io::Result<(Vec<u8>, usize)>;

/// The consumer side of the reader thread: a `BufRead` over the blocks it sends.
struct Blocks {
    rx: Receiver<Block>,
    free: Sender<Vec<u8>>,
    cur: Option<Vec<u8>>,
    len: usize,
    pos: usize,
    done: bool,
}

impl Read for Blocks {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let buf = self.fill_buf()?;
        let n = buf.len().min(out.len());
        out[..n].copy_from_slice(&buf[..n]);
        self.consume(n);
        Ok(n)
    }
}

impl BufRead for Blocks {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        if self.pos >= self.len {
            if let Some(buf) = self.cur.take() {
                let _ = self.free.send(buf);
            }
            self.len = 0;
            self.pos = 0;
            if !self.done {
                match self.rx.recv() {
                    Ok(Ok((buf, n))) => {
                        self.cur = Some(buf);
                        self.len = n;
                    }
                    Ok(Err(e)) => {
                        self.done = true;
                        return Err(e);
                    }
                    Err(_) => self.done = true,
                }
            }
        }
        match &self.cur {
            Some(buf) => Ok(&buf[self.pos..self.len]),
            None => Ok(&[]),
        }
    }

    fn consume(&mut self, n: usize) {
        self.pos = (self.pos + n).min(self.len);
    }
}

/// Reads `reader` to its end in `BLOCK`-sized blocks, hashing each and passing it on.
/// Returns the byte count and, when the end was reached, the SHA-256.
fn read_and_hash<R: Read>(
    mut reader: R,
    tx: SyncSender<Block>,
    free: Receiver<Vec<u8>>,
) -> (u64, Option<String>) {
    let mut hasher = Sha256::new();
    let mut total = 0u64;
    loop {
        let Ok(mut buf) = free.recv() else {
            return (total, None); // the consumer stopped
        };
        if buf.is_empty() {
            buf = vec![0; BLOCK];
        }
        let mut n = 0;
        let mut eof = false;
        while n < buf.len() {
            match reader.read(&mut buf[n..]) {
                Ok(0) => {
                    eof = true;
                    break;
                }
                Ok(k) => n += k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    let _ = tx.send(Err(e));
                    return (total, None);
                }
            }
        }
        hasher.update(&buf[..n]);
        total += n as u64;
        if n > 0 && tx.send(Ok((buf, n))).is_err() {
            return (total, None);
        }
        if eof {
            return (total, Some(hex::encode(hasher.finalize())));
        }
    }
}

/// The content checks and the hash, in one pass over `reader`.
fn verify_stream<R: Read + Send>(reader: R, expect_size: Option<u64>, report: &mut FileReport) {
    let expect = report.expect;
    let (tx, rx) = mpsc::sync_channel::<Block>(POOL);
    let (free_tx, free_rx) = mpsc::channel::<Vec<u8>>();
    for _ in 0..POOL {
        // Allocated by the reader on first use (an empty Vec here costs nothing).
        let _ = free_tx.send(Vec::new());
    }

    let mut scanner = (expect == Expect::SqlDump).then(SqlScanner::new);
    let mut walker = (expect == Expect::Tar).then(TarWalker::new);

    let (gz, (total, sha)) = std::thread::scope(|s| {
        let hasher = std::thread::Builder::new()
            .name("verify-read".into())
            .spawn_scoped(s, move || read_and_hash(reader, tx, free_rx));
        let hasher = match hasher {
            Ok(h) => h,
            Err(e) => {
                return (
                    Err(GzError::Io {
                        offset: 0,
                        error: io::Error::other(format!("cannot start the reader thread: {e}")),
                    }),
                    (0, None),
                )
            }
        };
        let mut blocks = Blocks {
            rx,
            free: free_tx,
            cur: None,
            len: 0,
            pos: 0,
            done: false,
        };
        let mut out = vec![0u8; OUT];
        let mut sink = |data: &[u8]| -> bool {
            if let Some(sc) = scanner.as_mut() {
                if !sc.header_failed() {
                    sc.feed(data);
                }
            }
            if let Some(w) = walker.as_mut() {
                if !w.failed() {
                    let _ = w.feed(data, &mut |_| Ok(()));
                }
            }
            true
        };
        let gz = inflate::decode(&mut blocks, &mut out, &mut sink);
        drop(blocks); // lets the reader stop early after a failure
        let hashed = hasher.join().unwrap_or((0, None));
        (gz, hashed)
    });

    let file_size = expect_size.unwrap_or(total);
    report.size = file_size;
    match gz {
        Err(e) => {
            report.fail(Check::Gzip, gzip_message(&e, file_size, expect));
            return;
        }
        Ok(_) => report.pass(Check::Gzip),
    }

    if let Some(sc) = scanner {
        let scan = sc.finish();
        report.sql = Some(scan.summary);
        if let Err(m) = scan.header {
            report.fail(Check::SqlHeader, m);
            return;
        }
        report.pass(Check::SqlHeader);
        if let Err(m) = scan.complete {
            report.fail(Check::SqlComplete, m);
            return;
        }
        report.pass(Check::SqlComplete);
    }
    if let Some(mut w) = walker {
        match w.finish() {
            Err(e) => {
                report.fail(
                    Check::Tar,
                    format!("the tar archive inside is not intact: {e}; take a new backup"),
                );
                return;
            }
            Ok(c) => {
                report.tar = Some(TarSummary {
                    entries: c.entries,
                    total_bytes: c.file_bytes,
                });
                report.pass(Check::Tar);
            }
        }
    }

    match sha {
        Some(hex) if expect_size.is_none_or(|s| s == total) => {
            report.sha256 = Some(hex);
            report.pass(Check::Sha256);
        }
        Some(_) => report.fail(
            Check::Sha256,
            format!(
                "the file changed while it was being verified ({} bytes at the start, {total} read): something is still writing it; verify again once it is complete",
                file_size
            ),
        ),
        None => report.fail(
            Check::Sha256,
            "the file could not be read to its end, so its SHA-256 is unknown; verify again".into(),
        ),
    }
}

/// The `gzip` failure message: what is wrong, where, and what to do.
fn gzip_message(e: &GzError, file_size: u64, expect: Expect) -> String {
    let new_backup = "take a new backup";
    match e {
        GzError::Empty => format!("the file is empty: the {} was never written; {new_backup}", expect.what()),
        GzError::NotGzip { first_bytes } => {
            let hint = if first_bytes.starts_with(b"--") || first_bytes.starts_with(b"SET ") {
                " (an uncompressed SQL dump?)"
            } else if first_bytes.len() > 262 && &first_bytes[257..262] == b"ustar" {
                " (an uncompressed tar archive?)"
            } else {
                ""
            };
            format!(
                "the file is not gzip-compressed: it starts with {}{hint}; a .gz backup must be gzip data: {new_backup}",
                inflate::describe_start(first_bytes)
            )
        }
        GzError::Truncated {
            member,
            offset,
            ..
        } => format!(
            "gzip member {member} is truncated at byte {offset} of {file_size}: the file was cut short while being written or copied; {new_backup}"
        ),
        GzError::Trailing { zeros: true, .. } => format!(
            "{e}; a complete gzip file ends with its last member, so the file was padded by a copy or a crash; {new_backup}"
        ),
        GzError::Trailing { .. } => format!(
            "{e}: something was appended to the file, or it was overwritten; {new_backup}"
        ),
        GzError::Io { offset, error } => format!(
            "reading the file failed at byte {offset} of {file_size} ({error}): check the disk, then verify again"
        ),
        _ => format!("{e}: the file is corrupt (damaged on disk or in transit); {new_backup}"),
    }
}
