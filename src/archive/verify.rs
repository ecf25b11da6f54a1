//! What "verified" means (PRODUCT.md "Verification").
//!
//! [`verify_file`] runs every check on a backup file in **one streaming read**, with
//! constant memory (a few 1 MiB read buffers, one 256 KiB inflate buffer, one tar header):
//!
//! 1. `exists`, `regular-file` (a symlink is refused too: the bytes we check must be the
//!    bytes stored under this name), `min-size`;
//! 2. `gzip`: every member decodes, its CRC-32 and length match, nothing (not even zero
//!    padding) follows the last member ([`super::inflate`]); or `zstd`: every frame decodes
//!    and carries a matching content checksum, declared sizes agree, nothing follows the last
//!    frame ([`super::codec`]); an uncompressed (`none`) file has no such check;
//! 3. for a dump, `sql-header` and `sql-complete` ([`super::sql`]); for a volume archive,
//!    `tar`: every header to the end-of-archive marker ([`super::tarwalk`]);
//! 4. `sha256` of the file's bytes.
//!
//! Two threads share the work: one reads the file in 1 MiB blocks and hashes them, the
//! calling thread inflates, CRCs and parses the same blocks as they arrive. A problem never
//! panics and never returns `Err`: it becomes the report's `failure`, naming the check and
//! saying what is wrong and what to do.
use std::fs::File;
use std::io::{self, BufRead, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, Sender, SyncSender};

use sha2::{Digest, Sha256};

use super::codec::{self, Codec, DecodeError, ZstdError};
use super::inflate::{self, GzError};
use super::sql::SqlScanner;
use super::tarwalk::TarWalker;

/// What a file is expected to contain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expect {
    /// pg_dump plain-format SQL (compressed with the report's codec).
    SqlDump,
    /// A tar archive (compressed with the report's codec).
    Tar,
}

/// One check of PRODUCT.md's list; the `as_str` names appear in the manifest and annotations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Check {
    Exists,
    RegularFile,
    MinSize,
    Gzip,
    Zstd,
    SqlHeader,
    SqlComplete,
    SqlSafety,
    Tar,
    /// An age file's header parses (checked without the key).
    AgeHeader,
    /// The identity opens it and every chunk authenticates (with the key).
    Age,
    Sha256,
}

impl Check {
    pub fn as_str(self) -> &'static str {
        match self {
            Check::Exists => "exists",
            Check::RegularFile => "regular-file",
            Check::MinSize => "min-size",
            Check::Gzip => "gzip",
            Check::Zstd => "zstd",
            Check::SqlHeader => "sql-header",
            Check::SqlComplete => "sql-complete",
            Check::SqlSafety => "sql-safety",
            Check::Tar => "tar",
            Check::AgeHeader => "age-header",
            Check::Age => "age",
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

/// Facts read from a dump: defined beside the scanner that reads them.
pub use super::sql::SqlSummary;

/// Facts read from a tar archive while verifying it.
#[derive(Clone, Debug, Default)]
pub struct TarSummary {
    /// Number of entries (files, folders, links).
    pub entries: u64,
    /// Sum of regular-file sizes.
    pub total_bytes: u64,
    /// The first entry a rollback's restore-safety check would refuse (1-based index, path
    /// as stored, why): the archive is intact, but it cannot be restored as it is.
    pub restore_refusal: Option<(u64, String, String)>,
}

/// The result of verifying one file.
#[derive(Clone, Debug)]
pub struct FileReport {
    pub path: PathBuf,
    pub expect: Expect,
    /// How the file is compressed (what its content checks decoded).
    pub codec: Codec,
    /// The level it was written at, when this run wrote it (recorded in the manifest).
    pub level: Option<u32>,
    /// File size in bytes (0 when it could not be read).
    pub size: u64,
    /// Lowercase hex SHA-256 of the file; set only when every check passed.
    pub sha256: Option<String>,
    /// Checks that passed, in order.
    pub passed: Vec<Check>,
    pub failure: Option<CheckFailure>,
    pub sql: Option<SqlSummary>,
    pub tar: Option<TarSummary>,
    /// `Some` for an age-encrypted file: the recipients recorded for it (public keys or
    /// ssh fingerprints; empty when not known).
    pub encrypted: Option<Vec<String>>,
}

impl FileReport {
    pub fn verified(&self) -> bool {
        self.failure.is_none() && self.sha256.is_some()
    }

    /// Holds a file that passed its checks to what a manifest recorded for it: another
    /// size or SHA-256 fails the `sha256` check (and drops the hash, so the file does not
    /// count as verified); `explain(size, sha256)` words the failure from what was found.
    /// After an earlier failure nothing changes: that failure is the one to report.
    pub fn expect_recorded(
        &mut self,
        size: u64,
        sha256: &str,
        explain: impl FnOnce(u64, &str) -> String,
    ) {
        if self.failure.is_some() || (self.size == size && self.sha256.as_deref() == Some(sha256)) {
            return;
        }
        let actual = self.sha256.take().unwrap_or_else(|| "?".into());
        self.passed.retain(|c| *c != Check::Sha256);
        let message = explain(self.size, &actual);
        self.fail(Check::Sha256, message);
    }
}

/// Read block size, and how many blocks may be in flight between the two threads.
const BLOCK: usize = 1 << 20;
/// Block size of [`StreamCheck`] (its blocks are copied into `BLOCK`s by the reader thread).
const TEE_BLOCK: usize = 256 * 1024;
const POOL: usize = 4;
/// Inflate output block.
const OUT: usize = 256 * 1024;

impl FileReport {
    pub(crate) fn new(path: &Path, expect: Expect, codec: Codec) -> Self {
        FileReport {
            path: path.to_path_buf(),
            expect,
            codec,
            level: None,
            size: 0,
            sha256: None,
            passed: Vec::new(),
            failure: None,
            sql: None,
            tar: None,
            encrypted: None,
        }
    }

    pub(crate) fn fail(&mut self, check: Check, message: String) {
        if self.failure.is_none() {
            self.failure = Some(CheckFailure { check, message });
        }
    }

    pub(crate) fn pass(&mut self, check: Check) {
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
/// `min_size` is the smallest acceptable file size in bytes (the compressed size). The
/// codec is the one the file name says ([`Codec::from_path`]).
pub fn verify_file(path: &Path, expect: Expect, min_size: u64) -> FileReport {
    verify_file_as(path, expect, Codec::from_path(path), min_size)
}

/// [`verify_file`] with the codec given (the one a manifest recorded), for a file read as it
/// is stored. An encrypted (`….age`) file goes through the age layer's `verify_file`, which
/// drives [`verify_file_opened`].
pub fn verify_file_as(path: &Path, expect: Expect, codec: Codec, min_size: u64) -> FileReport {
    verify_file_with(path, expect, codec, min_size, None, None)
}

/// The checks after `min-size` of a stored file that is not read as it is: given the file
/// (open at its start) and its size, they fill in the report (the age layer decrypts first,
/// then runs [`verify_stream`] on the plaintext).
pub type Opener<'a> = &'a dyn Fn(File, u64, &mut FileReport);

/// [`verify_file_as`] with the content checks left to `opener` (the file checks `exists`,
/// `regular-file` and `min-size` run as usual).
pub fn verify_file_opened(
    path: &Path,
    expect: Expect,
    codec: Codec,
    min_size: u64,
    opener: Opener<'_>,
) -> FileReport {
    verify_file_with(path, expect, codec, min_size, None, Some(opener))
}

/// [`verify_file_as`] for a file whose content checks and SHA-256 already ran on its
/// stored bytes, read back behind its writer (`streamed`, see
/// [`crate::pipe::encode_to_file_checked`]; `None`: they did not run, and the file is read
/// here): the file checks (`exists`, `regular-file`, `min-size`) run as usual, and the
/// report holds only if the file is still the size that was read. The result is the same
/// report, with the same checks in the same order, as [`verify_file_as`] would give,
/// without reading the file a second time.
pub fn verify_written(
    path: &Path,
    expect: Expect,
    codec: Codec,
    min_size: u64,
    streamed: Option<Streamed>,
) -> FileReport {
    verify_file_with(path, expect, codec, min_size, streamed, None)
}

fn verify_file_with(
    path: &Path,
    expect: Expect,
    codec: Codec,
    min_size: u64,
    streamed: Option<Streamed>,
    opener: Option<Opener<'_>>,
) -> FileReport {
    let mut report = FileReport::new(path, expect, codec);
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
            report.fail(
                Check::RegularFile,
                format!("{shown} cannot be examined ({e})"),
            );
            return report;
        }
    };
    report.pass(Check::RegularFile);

    // min-size
    let size = fmeta.len();
    report.size = size;
    let too_small = |size: u64| {
        format!(
            "{shown} is {size} bytes, less than the minimum of {min_size} bytes for a {}: {}",
            expect.what(),
            match expect {
                Expect::SqlDump => "the dump is incomplete or holds almost nothing (wrong database, or pg_dump failed); check the database and take a new backup, or lower `min-db-size` if the database really is that small",
                Expect::Tar => "the archive is empty or nearly so (wrong volume, or the archive failed); check the volume and take a new backup, or lower `min-volume-size`",
            }
        )
    };
    if size < min_size && matches!(expect, Expect::SqlDump) {
        // An empty database (a new app's first deploy) dumps to a few hundred bytes. A dump
        // that is complete (pg_dump wrote its last line) and holds no rows at all is exactly
        // that database, not a failed dump: it passes min-size on completeness instead.
        content(file, size, &mut report, streamed, opener);
        let complete_and_empty = report.failure.is_none()
            && report
                .sql
                .as_ref()
                .is_some_and(|s| s.tables.values().all(|&n| n == 0));
        if complete_and_empty {
            let at = report
                .passed
                .iter()
                .position(|c| matches!(c, Check::RegularFile))
                .map_or(0, |i| i + 1);
            report.passed.insert(at, Check::MinSize);
        } else {
            report.sha256 = None;
            report.failure = None;
            report
                .passed
                .retain(|c| matches!(c, Check::Exists | Check::RegularFile));
            report.fail(Check::MinSize, too_small(size));
        }
        return report;
    }
    if size < min_size {
        report.fail(Check::MinSize, too_small(size));
        return report;
    }
    report.pass(Check::MinSize);

    content(file, size, &mut report, streamed, opener);
    report
}

/// The content checks and `sha256` of an opened file: decoded here, or (`streamed`) taken
/// from the checks that ran on its stored bytes while it was written.
fn content(
    file: File,
    size: u64,
    report: &mut FileReport,
    streamed: Option<Streamed>,
    opener: Option<Opener<'_>>,
) {
    let Some(Streamed { report: s }) = streamed else {
        // Through the opener (decrypted first) when there is one.
        match opener {
            Some(open) => open(file, size, report),
            None => verify_stream(file, Some(size), report),
        }
        return;
    };
    report.sql = s.sql;
    report.tar = s.tar;
    for c in s.passed {
        if c != Check::Sha256 {
            report.pass(c);
        }
    }
    if let Some(f) = s.failure {
        report.fail(f.check, f.message);
        return;
    }
    let shown = report.path.display().to_string();
    match s.sha256 {
        _ if s.size != size => report.fail(
            Check::Sha256,
            format!(
                "{shown} changed while it was being verified ({} bytes read back behind the writer, {size} bytes now): something else is writing it; take a new backup",
                s.size
            ),
        ),
        Some(hex) => {
            report.sha256 = Some(hex);
            report.pass(Check::Sha256);
        }
        None => report.fail(
            Check::Sha256,
            format!("{shown}: the stored bytes could not be hashed; take a new backup"),
        ),
    }
}

/// What was verified while a file was written: the content checks and SHA-256 of its
/// stored bytes, read back behind the writer ([`crate::pipe::encode_to_file_checked`]);
/// `report.size` is the number of bytes read.
#[derive(Clone, Debug)]
pub struct Streamed {
    pub report: FileReport,
}

/// The content checks of [`verify_file`] (the codec's, the dump's or the tar's) and the
/// SHA-256, run on a file's bytes while they are written: a [`Write`] that passes what it
/// is given, in blocks, to a checking thread. [`StreamCheck::finish`] returns its report
/// (no `exists`, `regular-file` or `min-size`). The age layer checks the compressed
/// plaintext of an encrypted file with it, before it is sealed ([`super::crypt`]): the
/// stored ciphertext cannot be decoded without an identity. Writing never fails: a fault
/// found ends the checking and is reported.
/// Memory: a few blocks of 256 KiB here and 1 MiB in the checking threads.
pub struct StreamCheck {
    tx: Option<SyncSender<Block>>,
    free: Receiver<Vec<u8>>,
    cur: Vec<u8>,
    allocated: usize,
    worker: Option<std::thread::JoinHandle<FileReport>>,
    expect: Expect,
    codec: Codec,
}

impl StreamCheck {
    pub fn new(expect: Expect, codec: Codec) -> io::Result<Self> {
        let (tx, rx) = mpsc::sync_channel::<Block>(POOL);
        let (free_tx, free_rx) = mpsc::channel::<Vec<u8>>();
        let worker = std::thread::Builder::new()
            .name("verify-stream".into())
            .spawn(move || verify_reader_as(Blocks::new(rx, free_tx), expect, codec))?;
        Ok(StreamCheck {
            tx: Some(tx),
            free: free_rx,
            cur: Vec::with_capacity(TEE_BLOCK),
            allocated: 1,
            worker: Some(worker),
            expect,
            codec,
        })
    }

    /// Hands the current block to the checker and takes an empty one (waiting for one to
    /// come back when `POOL` are out: the checker's pace bounds the memory).
    fn send(&mut self) {
        let full = std::mem::take(&mut self.cur);
        let n = full.len();
        let back = match &self.tx {
            Some(tx) => match tx.send(Ok((full, n))) {
                Ok(()) => None,
                Err(mpsc::SendError(Ok((b, _)))) => {
                    self.tx = None; // the checker stopped (it has its verdict)
                    Some(b)
                }
                Err(_) => None,
            },
            None => Some(full),
        };
        let mut next = match back {
            Some(b) => b,
            None => match self.free.try_recv() {
                Ok(b) => b,
                Err(_) if self.allocated < POOL + 2 => {
                    self.allocated += 1;
                    Vec::with_capacity(TEE_BLOCK)
                }
                Err(_) => self
                    .free
                    .recv()
                    .unwrap_or_else(|_| Vec::with_capacity(TEE_BLOCK)),
            },
        };
        next.clear();
        self.cur = next;
    }

    /// Ends the stream and returns the checks' report (`size` is the bytes written).
    pub fn finish(mut self) -> FileReport {
        if !self.cur.is_empty() {
            self.send();
        }
        self.tx = None;
        let worker = self.worker.take();
        match worker.map(|w| w.join()) {
            Some(Ok(r)) => r,
            _ => {
                let mut r = FileReport::new(Path::new("-"), self.expect, self.codec);
                r.fail(
                    Check::Sha256,
                    "the check of the written bytes stopped unexpectedly; take a new backup".into(),
                );
                r
            }
        }
    }
}

impl io::Write for StreamCheck {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut rest = buf;
        while !rest.is_empty() {
            let take = (TEE_BLOCK - self.cur.len()).min(rest.len());
            self.cur.extend_from_slice(&rest[..take]);
            rest = &rest[take..];
            if self.cur.len() >= TEE_BLOCK {
                self.send();
            }
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Writes to `.0`, then the same bytes to the checks (`.1`): the one tee of a file that is
/// verified while it is written (clear, [`crate::pipe`], or sealed by the age layer).
pub struct Tee<W: Write>(pub W, pub StreamCheck);

impl<W: Write> Write for Tee<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.0.write(buf)?;
        self.1.write_all(&buf[..n])?;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

/// Verifies a stream instead of a file: the content checks (`gzip`, `sql-*` or `tar`) and
/// `sha256`, without `exists`, `regular-file` or `min-size`. `size` is the number of bytes
/// read. Used by fuzzing, and usable on data that is not (yet) a file.
pub fn verify_reader<R: Read + Send>(reader: R, expect: Expect) -> FileReport {
    verify_reader_as(reader, expect, Codec::Gzip)
}

/// [`verify_reader`] for a given codec.
pub fn verify_reader_as<R: Read + Send>(reader: R, expect: Expect, codec: Codec) -> FileReport {
    let mut report = FileReport::new(Path::new("-"), expect, codec);
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

impl Blocks {
    fn new(rx: Receiver<Block>, free: Sender<Vec<u8>>) -> Self {
        Blocks {
            rx,
            free,
            cur: None,
            len: 0,
            pos: 0,
            done: false,
        }
    }
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
pub(crate) fn verify_stream<R: Read + Send>(
    reader: R,
    expect_size: Option<u64>,
    report: &mut FileReport,
) {
    let expect = report.expect;
    let (tx, rx) = mpsc::sync_channel::<Block>(POOL);
    let (free_tx, free_rx) = mpsc::channel::<Vec<u8>>();
    for _ in 0..POOL {
        // Allocated by the reader on first use (an empty Vec here costs nothing).
        let _ = free_tx.send(Vec::new());
    }

    let mut scanner = (expect == Expect::SqlDump).then(SqlScanner::new);
    let mut walker = (expect == Expect::Tar).then(TarWalker::new);
    let mut safety = (expect == Expect::Tar).then(super::restore::SafetyCheck::new);

    let (gz, (total, sha)) = std::thread::scope(|s| {
        let hasher = std::thread::Builder::new()
            .name("verify-read".into())
            .spawn_scoped(s, move || read_and_hash(reader, tx, free_rx));
        let hasher = match hasher {
            Ok(h) => h,
            Err(e) => {
                return (
                    Err(DecodeError::Io {
                        offset: 0,
                        error: io::Error::other(format!("cannot start the reader thread: {e}")),
                    }),
                    (0, None),
                )
            }
        };
        let mut blocks = Blocks::new(rx, free_tx);
        let mut out = vec![0u8; OUT];
        let mut sink = |data: &[u8]| -> bool {
            if let Some(sc) = scanner.as_mut() {
                if !sc.header_failed() {
                    sc.feed(data);
                }
            }
            if let (Some(w), Some(safe)) = (walker.as_mut(), safety.as_mut()) {
                if !w.failed() {
                    let _ = w.feed(data, &mut |e| {
                        safe.entry(e);
                        Ok(())
                    });
                }
            }
            true
        };
        let gz = codec::decode(report.codec, &mut blocks, &mut out, &mut sink);
        drop(blocks); // lets the reader stop early after a failure
        let hashed = hasher.join().unwrap_or((0, None));
        (gz, hashed)
    });

    let file_size = expect_size.unwrap_or(total);
    report.size = file_size;
    let check = match report.codec {
        Codec::Gzip => Some(Check::Gzip),
        Codec::Zstd => Some(Check::Zstd),
        Codec::None => None,
    };
    match (gz, check) {
        (Err(DecodeError::Gzip(e)), _) => {
            report.fail(Check::Gzip, gzip_message(&e, file_size, expect));
            return;
        }
        (Err(DecodeError::Zstd(e)), _) => {
            report.fail(Check::Zstd, zstd_message(&e, file_size, expect));
            return;
        }
        (Err(DecodeError::Io { offset, error }), _) => {
            let check = if expect == Expect::SqlDump {
                Check::SqlComplete
            } else {
                Check::Tar
            };
            report.fail(
                check,
                format!("reading the file failed at byte {offset} of {file_size} ({error}): check the disk, then verify again"),
            );
            return;
        }
        (Ok(_), Some(c)) => report.pass(c),
        (Ok(_), None) => {}
    }

    if let Some(sc) = scanner {
        let scan = sc.finish();
        let fits = super::sql::dump_fits_server(
            scan.summary.server_version.as_deref(),
            scan.summary.dump_version.as_deref(),
        );
        report.sql = Some(scan.summary);
        if let Err(m) = scan.header.and(fits) {
            report.fail(Check::SqlHeader, m);
            return;
        }
        report.pass(Check::SqlHeader);
        if let Err(m) = scan.complete {
            report.fail(Check::SqlComplete, m);
            return;
        }
        report.pass(Check::SqlComplete);
        if let Err(m) = scan.guard {
            report.fail(Check::SqlSafety, m);
            return;
        }
        report.pass(Check::SqlSafety);
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
                    restore_refusal: safety.and_then(super::restore::SafetyCheck::finish),
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
            } else if first_bytes.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
                " (zstd data: a .zst file named or recorded as gzip?)"
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

/// The `zstd` failure message: what is wrong, where, and what to do.
fn zstd_message(e: &ZstdError, file_size: u64, expect: Expect) -> String {
    let new_backup = "take a new backup";
    match e {
        ZstdError::Empty => format!("the file is empty: the {} was never written; {new_backup}", expect.what()),
        ZstdError::NotZstd { first_bytes } => {
            let hint = if first_bytes.starts_with(&[0x1f, 0x8b]) {
                " (gzip data: a .gz file named or recorded as zstd?)"
            } else if first_bytes.starts_with(b"--") || first_bytes.starts_with(b"SET ") {
                " (an uncompressed SQL dump?)"
            } else if first_bytes.len() > 262 && &first_bytes[257..262] == b"ustar" {
                " (an uncompressed tar archive?)"
            } else {
                ""
            };
            format!(
                "the file is not zstd-compressed: it starts with {}{hint}; a .zst backup must be zstd data: {new_backup}",
                inflate::describe_start(first_bytes)
            )
        }
        ZstdError::Truncated { frame, offset } => format!(
            "zstd frame {frame} is truncated at byte {offset} of {file_size}: the file was cut short while being written or copied; {new_backup}"
        ),
        ZstdError::Trailing { zeros: true, .. } => format!(
            "{e}; a complete zstd file ends with its last frame, so the file was padded by a copy or a crash; {new_backup}"
        ),
        ZstdError::Trailing { .. } => format!(
            "{e}: something was appended to the file, or it was overwritten; {new_backup}"
        ),
        ZstdError::Skippable { .. } | ZstdError::NoChecksum { .. } => e.to_string(),
        ZstdError::Io { offset, error } => format!(
            "reading the file failed at byte {offset} of {file_size} ({error}): check the disk, then verify again"
        ),
        _ => format!("{e}: the file is corrupt (damaged on disk or in transit); {new_backup}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::archive::gzip::ParallelGzEncoder;
    use crate::archive::hash::sha256_hex;
    use crate::archive::testutil::*;
    use std::collections::BTreeMap;
    use std::io::Write;
    use tar::EntryType;

    const ALL_SQL: [Check; 8] = [
        Check::Exists,
        Check::RegularFile,
        Check::MinSize,
        Check::Gzip,
        Check::SqlHeader,
        Check::SqlComplete,
        Check::SqlSafety,
        Check::Sha256,
    ];
    const ALL_TAR: [Check; 6] = [
        Check::Exists,
        Check::RegularFile,
        Check::MinSize,
        Check::Gzip,
        Check::Tar,
        Check::Sha256,
    ];

    struct Dir(tempfile::TempDir);

    impl Dir {
        fn new() -> Self {
            Dir(tempfile::tempdir().unwrap())
        }
        fn file(&self, name: &str, bytes: &[u8]) -> PathBuf {
            let p = self.0.path().join(name);
            std::fs::write(&p, bytes).unwrap();
            p
        }
    }

    fn verify_bytes(bytes: &[u8], expect: Expect) -> FileReport {
        let d = Dir::new();
        verify_file(&d.file("f.gz", bytes), expect, 0)
    }

    /// Fails closed: the named check failed, nothing after it passed, no hash recorded.
    #[track_caller]
    fn assert_fails(r: &FileReport, check: Check, needle: &str) {
        let f = r
            .failure
            .as_ref()
            .unwrap_or_else(|| panic!("expected {check:?} to fail: {r:?}"));
        assert_eq!(f.check, check, "{}", f.message);
        assert!(
            f.message.contains(needle),
            "message for {check:?} lacks {needle:?}: {}",
            f.message
        );
        assert!(!r.verified());
        assert!(r.sha256.is_none());
        assert!(!r.passed.contains(&check));
        assert!(!r.passed.contains(&Check::Sha256));
    }

    fn tables() -> Vec<(&'static str, usize)> {
        vec![
            ("public.users", 23),
            ("public.\"Order Items\"", 7),
            ("\"Audit\".\"log\"\"s\"", 0),
            ("plain", 3),
        ]
    }

    fn good_dump() -> Vec<u8> {
        gz(&dump_text(&tables(), None))
    }

    /// Nested folders, an empty folder, a symlink, a hard link, a 200-char name (GNU
    /// long name), a long symlink target, and a setuid file.
    fn good_tar() -> Vec<u8> {
        tar_of(|b| {
            b.append(&header("./", EntryType::Directory, 0), &[][..])
                .unwrap();
            b.append(&header("a/", EntryType::Directory, 0), &[][..])
                .unwrap();
            b.append(&header("a/b/", EntryType::Directory, 0), &[][..])
                .unwrap();
            b.append(&header("a/b/empty/", EntryType::Directory, 0), &[][..])
                .unwrap();
            b.append(
                &header("a/b/file.pdf", EntryType::Regular, 1000),
                &[7u8; 1000][..],
            )
            .unwrap();
            let long = format!("a/{}", "n".repeat(198));
            let mut h = header("x", EntryType::Regular, 5);
            b.append_data(&mut h, &long, &b"hello"[..]).unwrap();
            let mut h = header("a/link", EntryType::Symlink, 0);
            h.set_link_name("b/file.pdf").unwrap();
            h.set_cksum();
            b.append(&h, &[][..]).unwrap();
            let mut h = header("a/longlink", EntryType::Symlink, 0);
            b.append_link(
                &mut h,
                "a/longlink",
                format!("b/{}", "../b/".repeat(30)) + "file.pdf",
            )
            .unwrap();
            let mut h = header("a/hard", EntryType::Link, 0);
            h.set_link_name("a/b/file.pdf").unwrap();
            h.set_cksum();
            b.append(&h, &[][..]).unwrap();
            let mut h = header("a/suid", EntryType::Regular, 3);
            h.set_mode(0o4755);
            h.set_uid(70);
            h.set_gid(70);
            h.set_cksum();
            b.append(&h, &b"abc"[..]).unwrap();
        })
    }

    /// An intact archive whose link climbs above the root (`/../../../etc/shadow`) is
    /// verified (nothing is wrong with the file) but reports the entry a rollback's
    /// restore-safety check refuses; links that stay inside (absolute ones too: `/` is the
    /// volume root) report nothing.
    #[test]
    fn an_intact_archive_that_restore_refuses_is_verified_and_names_the_entry() {
        let with_link = |target: &str| {
            gz(&tar_of(|b| {
                b.append(&header("./", EntryType::Directory, 0), &[][..])
                    .unwrap();
                b.append(&header("keep.txt", EntryType::Regular, 3), &b"abc"[..])
                    .unwrap();
                let mut h = header("evil", EntryType::Symlink, 0);
                h.set_link_name(target).unwrap();
                h.set_cksum();
                b.append(&h, &[][..]).unwrap();
            }))
        };
        let r = verify_bytes(&with_link("/../../../etc/shadow"), Expect::Tar);
        assert!(r.verified(), "{:?}", r.failure);
        let (index, path, reason) = r.tar.unwrap().restore_refusal.expect("named");
        assert_eq!((index, path.as_str()), (3, "evil"));
        assert!(reason.contains("outside the archive root"), "{reason}");
        for inside in ["/etc/shadow", "keep.txt", "./a/../keep.txt"] {
            let r = verify_bytes(&with_link(inside), Expect::Tar);
            assert!(r.verified(), "{:?}", r.failure);
            assert_eq!(r.tar.unwrap().restore_refusal, None, "{inside}");
        }
    }

    /// The same checks through zstd and uncompressed files, the codec taken from the name;
    /// a file whose content is another codec than its name says fails that codec's check.
    #[test]
    fn zstd_and_uncompressed_files_pass_the_same_checks() {
        use crate::archive::codec::Encoder;
        let d = Dir::new();
        let text = dump_text(&tables(), None);
        let mut e = Encoder::new(Vec::new(), Codec::Zstd, 3).unwrap();
        e.write_all(&text).unwrap();
        let z = e.finish().unwrap();
        let r = verify_file(&d.file("db.sql.zst", &z), Expect::SqlDump, 0);
        assert!(r.verified(), "{:?}", r.failure);
        assert_eq!(r.codec, Codec::Zstd);
        assert_eq!(r.passed[3], Check::Zstd);
        assert_eq!(r.sql.unwrap().tables.get("public.users"), Some(&23));
        let r = verify_file(&d.file("db.sql", &text), Expect::SqlDump, 0);
        assert!(r.verified(), "{:?}", r.failure);
        assert_eq!(
            &r.passed[3..],
            [
                Check::SqlHeader,
                Check::SqlComplete,
                Check::SqlSafety,
                Check::Sha256
            ]
        );
        let t = good_tar();
        let r = verify_file(&d.file("v.tar", &t), Expect::Tar, 0);
        assert!(r.verified(), "{:?}", r.failure);
        let r = verify_file(&d.file("v.tar", &t[..t.len() - 1024]), Expect::Tar, 0);
        assert_fails(&r, Check::Tar, "tar");
        // Mixed up: zstd named .gz, gzip named .zst.
        let r = verify_file(&d.file("x.sql.gz", &z), Expect::SqlDump, 0);
        assert_fails(&r, Check::Gzip, "zstd data");
        let r = verify_file(&d.file("x.sql.zst", &good_dump()), Expect::SqlDump, 0);
        assert_fails(&r, Check::Zstd, "gzip data");
        // A truncated frame names the frame and the byte.
        let r = verify_file(&d.file("t.sql.zst", &z[..z.len() / 2]), Expect::SqlDump, 0);
        assert_fails(&r, Check::Zstd, "zstd frame 1 is truncated");
    }

    #[test]
    fn a_valid_dump_passes_every_check_and_is_summarised() {
        let d = Dir::new();
        let bytes = good_dump();
        let p = d.file("db.sql.gz", &bytes);
        let r = verify_file(&p, Expect::SqlDump, 100);
        assert!(r.failure.is_none(), "{:?}", r.failure);
        assert!(r.verified());
        assert_eq!(r.passed, ALL_SQL);
        assert_eq!(r.size, bytes.len() as u64);
        assert_eq!(r.sha256.as_deref(), Some(sha256_hex(&bytes).as_str()));
        let sql = r.sql.unwrap();
        assert_eq!(
            sql.server_version.as_deref(),
            Some("16.4 (Debian 16.4-1.pgdg120+2)")
        );
        assert_eq!(
            sql.dump_version.as_deref(),
            Some("16.4 (Debian 16.4-1.pgdg120+2)")
        );
        let want: BTreeMap<String, u64> = [
            ("public.users", 23),
            ("public.Order Items", 7),
            ("Audit.log\"s", 0),
            ("plain", 3),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        assert_eq!(sql.tables, want);
        assert!(r.tar.is_none());
    }

    /// Stores `bytes` as `name` and verifies it with the report of its bytes checked as a
    /// writer's check-behind reads them (in uneven pieces); the tee the age layer uses
    /// ([`StreamCheck`], fed as an encoder feeds it) must give the same report.
    fn verify_streamed(
        d: &Dir,
        name: &str,
        bytes: &[u8],
        expect: Expect,
        codec: Codec,
    ) -> FileReport {
        struct Uneven<'a>(&'a [u8]);
        impl Read for Uneven<'_> {
            fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
                let n = out.len().min(self.0.len()).min(70_001);
                out[..n].copy_from_slice(&self.0[..n]);
                self.0 = &self.0[n..];
                Ok(n)
            }
        }
        let behind = verify_reader_as(Uneven(bytes), expect, codec);
        let mut check = StreamCheck::new(expect, codec).unwrap();
        for piece in bytes.chunks(70_001) {
            check.write_all(piece).unwrap();
        }
        let tee = check.finish();
        assert_eq!(
            (&tee.passed, &tee.sha256, tee.size),
            (&behind.passed, &behind.sha256, behind.size)
        );
        assert_eq!(
            tee.failure.as_ref().map(|f| f.check),
            behind.failure.as_ref().map(|f| f.check)
        );
        let p = d.file(name, bytes);
        let r = verify_written(&p, expect, codec, 0, Some(Streamed { report: behind }));
        // Without the check-behind, the file is read here: the same report.
        let again = verify_written(&p, expect, codec, 0, None);
        assert_eq!((&r.passed, &r.sha256), (&again.passed, &again.sha256));
        r
    }

    #[test]
    fn checks_on_the_written_stream_give_the_read_back_report() {
        let d = Dir::new();
        // Larger than a block, several blocks in flight.
        let big: Vec<(&str, usize)> = vec![("public.big", 120_000), ("public.small", 3)];
        let text = dump_text(&big, None);
        for (bytes, expect, codec) in [
            (good_dump(), Expect::SqlDump, Codec::Gzip),
            (gz(&text), Expect::SqlDump, Codec::Gzip),
            (
                zstd::encode_all(&text[..], 3).unwrap(),
                Expect::SqlDump,
                Codec::Zstd,
            ),
            (text.clone(), Expect::SqlDump, Codec::None),
            (good_tar(), Expect::Tar, Codec::None),
            (gz(&good_tar()), Expect::Tar, Codec::Gzip),
        ] {
            // The zstd CLI's default: checksums on (encode_all leaves them off).
            let bytes = if codec == Codec::Zstd {
                let mut e = zstd::stream::write::Encoder::new(Vec::new(), 3).unwrap();
                e.include_checksum(true).unwrap();
                e.write_all(&text).unwrap();
                e.finish().unwrap()
            } else {
                bytes
            };
            let read_back = verify_file_as(&d.file("a", &bytes), expect, codec, 0);
            let streamed = verify_streamed(&d, "b", &bytes, expect, codec);
            assert!(read_back.verified(), "{:?}", read_back.failure);
            assert_eq!(streamed.passed, read_back.passed, "{:?}", streamed.failure);
            assert_eq!(streamed.sha256, read_back.sha256);
            assert_eq!(streamed.size, read_back.size);
            assert_eq!(
                streamed.sql.as_ref().map(|s| s.tables.clone()),
                read_back.sql.as_ref().map(|s| s.tables.clone())
            );
            assert_eq!(
                streamed.tar.as_ref().map(|t| (t.entries, t.total_bytes)),
                read_back.tar.as_ref().map(|t| (t.entries, t.total_bytes))
            );
        }
    }

    #[test]
    fn a_file_that_grew_after_it_was_checked_fails_sha256() {
        let d = Dir::new();
        let bytes = good_dump();
        let behind = Streamed {
            report: verify_reader_as(&bytes[..], Expect::SqlDump, Codec::Gzip),
        };
        assert!(
            behind.report.failure.is_none(),
            "{:?}",
            behind.report.failure
        );
        // Something appended to the file after the check-behind reached the writer's end.
        let mut longer = bytes.clone();
        longer.push(0);
        let p = d.file("g.sql.gz", &longer);
        let r = verify_written(&p, Expect::SqlDump, Codec::Gzip, 0, Some(behind.clone()));
        assert_fails(&r, Check::Sha256, "changed while it was being verified");
        assert_eq!(r.sha256, None);
        // Cut short.
        let p = d.file("h.sql.gz", &bytes[..bytes.len() - 1]);
        let r = verify_written(&p, Expect::SqlDump, Codec::Gzip, 0, Some(behind));
        assert_fails(&r, Check::Sha256, "changed while it was being verified");
    }

    #[test]
    fn a_fault_in_the_written_stream_fails_as_on_read_back() {
        let d = Dir::new();
        let bytes = good_dump();
        let cut = &bytes[..bytes.len() - 9];
        let r = verify_streamed(&d, "f.sql.gz", cut, Expect::SqlDump, Codec::Gzip);
        assert_fails(&r, Check::Gzip, "truncated");
        let read_back = verify_file_as(&d.file("g.sql.gz", cut), Expect::SqlDump, Codec::Gzip, 0);
        assert_eq!(r.passed, read_back.passed);
        assert_eq!(
            r.failure.as_ref().map(|f| f.check),
            read_back.failure.as_ref().map(|f| f.check)
        );
        // A dump without its completion line, well compressed.
        let text = String::from_utf8(dump_text(&tables(), None)).unwrap();
        let cut = text.replace("--\n-- PostgreSQL database dump complete\n--\n\n", "");
        let r = verify_streamed(
            &d,
            "h.sql.gz",
            &gz(cut.as_bytes()),
            Expect::SqlDump,
            Codec::Gzip,
        );
        assert_fails(&r, Check::SqlComplete, "");
        // A small complete empty dump still passes min-size on completeness.
        let empty = gz(&dump_text(&[], None));
        let p = d.file("e.sql.gz", &empty);
        let streamed = Streamed {
            report: verify_reader_as(&empty[..], Expect::SqlDump, Codec::Gzip),
        };
        let r = verify_written(&p, Expect::SqlDump, Codec::Gzip, 1 << 20, Some(streamed));
        assert!(r.verified(), "{:?}", r.failure);
        assert!(r.passed.contains(&Check::MinSize));
    }

    #[test]
    fn pg_17_6_restrict_dump_passes_and_checks_the_key() {
        let key = "aZ3kQ9xW2mP7vL1nB8cD4fG6hJ0kR5sT";
        let r = verify_bytes(&gz(&dump_text(&tables(), Some(key))), Expect::SqlDump);
        assert_eq!(r.passed, ALL_SQL, "{:?}", r.failure);

        let text = String::from_utf8(dump_text(&tables(), Some(key))).unwrap();
        let wrong = text.replace(&format!("\\unrestrict {key}"), "\\unrestrict otherkey");
        let r = verify_bytes(&gz(wrong.as_bytes()), Expect::SqlDump);
        assert_fails(&r, Check::SqlComplete, "does not match");

        let cut = text.replace(&format!("\\unrestrict {key}\n"), "");
        let r = verify_bytes(&gz(cut.as_bytes()), Expect::SqlDump);
        assert_fails(&r, Check::SqlComplete, "unrestrict");
    }

    #[test]
    fn a_dump_with_no_tables_passes() {
        let r = verify_bytes(&gz(&dump_text(&[], None)), Expect::SqlDump);
        assert_eq!(r.passed, ALL_SQL, "{:?}", r.failure);
        assert!(r.sql.unwrap().tables.is_empty());
    }

    #[test]
    fn multi_member_gzip_passes() {
        let text = dump_text(&tables(), None);
        let (a, b) = text.split_at(text.len() / 3);
        let mut bytes = gz(a);
        bytes.extend(gz(b));
        bytes.extend(gz(b""));
        let r = verify_bytes(&bytes, Expect::SqlDump);
        assert_eq!(r.passed, ALL_SQL, "{:?}", r.failure);
        assert_eq!(r.sql.unwrap().tables["public.users"], 23);
    }

    #[test]
    fn a_large_dump_from_the_parallel_encoder_passes_with_exact_counts() {
        // Several MiB: many read blocks, many gzip members, lines split everywhere.
        let text = dump_text(&[("public.big", 250_000), ("public.small", 1)], None);
        assert!(text.len() > 5 << 20, "{}", text.len());
        let mut e = ParallelGzEncoder::with_options(Vec::new(), 1, 2, 256 * 1024);
        e.write_all(&text).unwrap();
        let bytes = e.finish().unwrap();
        let r = verify_bytes(&bytes, Expect::SqlDump);
        assert_eq!(r.passed, ALL_SQL, "{:?}", r.failure);
        let t = r.sql.unwrap().tables;
        assert_eq!((t["public.big"], t["public.small"]), (250_000, 1));
    }

    #[test]
    fn a_truncated_gzip_fails_gzip() {
        let bytes = good_dump();
        let cut = &bytes[..bytes.len() * 2 / 3];
        let r = verify_bytes(cut, Expect::SqlDump);
        assert_fails(
            &r,
            Check::Gzip,
            &format!("truncated at byte {} of {}", cut.len(), cut.len()),
        );
        assert!(r.failure.unwrap().message.contains("take a new backup"));
        // Cut inside the trailer and inside the header too.
        assert_fails(
            &verify_bytes(&bytes[..bytes.len() - 3], Expect::SqlDump),
            Check::Gzip,
            "truncated",
        );
        assert_fails(
            &verify_bytes(&bytes[..5], Expect::SqlDump),
            Check::Gzip,
            "truncated",
        );
    }

    #[test]
    fn a_flipped_byte_in_the_deflate_data_fails_gzip() {
        let bytes = good_dump();
        for at in [20, bytes.len() / 2, bytes.len() - 12] {
            let mut b = bytes.clone();
            b[at] ^= 0x10;
            assert_fails(
                &verify_bytes(&b, Expect::SqlDump),
                Check::Gzip,
                "gzip member 1",
            );
        }
    }

    #[test]
    fn wrong_crc_or_length_fields_fail_gzip() {
        let bytes = good_dump();
        let n = bytes.len();
        let mut b = bytes.clone();
        b[n - 8] ^= 1;
        assert_fails(&verify_bytes(&b, Expect::SqlDump), Check::Gzip, "CRC-32");
        let mut b = bytes.clone();
        b[n - 4] ^= 1;
        assert_fails(
            &verify_bytes(&b, Expect::SqlDump),
            Check::Gzip,
            "wrong length",
        );
    }

    #[test]
    fn bytes_after_the_last_member_fail_gzip_even_zeros() {
        let mut b = good_dump();
        b.extend_from_slice(b"garbage");
        assert_fails(
            &verify_bytes(&b, Expect::SqlDump),
            Check::Gzip,
            "follows member 1",
        );
        let mut b = good_dump();
        b.extend_from_slice(&[0u8; 512]);
        assert_fails(
            &verify_bytes(&b, Expect::SqlDump),
            Check::Gzip,
            "512 zero bytes",
        );
        let mut b = good_dump();
        b.push(0x1f);
        assert_fails(
            &verify_bytes(&b, Expect::SqlDump),
            Check::Gzip,
            "follows member 1",
        );
    }

    #[test]
    fn an_empty_file_fails() {
        let d = Dir::new();
        let p = d.file("e.gz", b"");
        assert_fails(&verify_file(&p, Expect::SqlDump, 0), Check::Gzip, "empty");
        assert_fails(
            &verify_file(&p, Expect::Tar, 512),
            Check::MinSize,
            "0 bytes",
        );
    }

    #[test]
    fn a_file_under_the_minimum_fails_min_size() {
        let d = Dir::new();
        let bytes = good_dump();
        let p = d.file("db.sql.gz", &bytes);
        let r = verify_file(&p, Expect::SqlDump, bytes.len() as u64 + 1);
        assert_fails(&r, Check::MinSize, "less than the minimum");
        assert_eq!(r.passed, [Check::Exists, Check::RegularFile]);
        assert_eq!(r.size, bytes.len() as u64);
        // Exactly the minimum passes.
        assert!(verify_file(&p, Expect::SqlDump, bytes.len() as u64).verified());
    }

    #[test]
    fn plain_text_where_gzip_is_expected_fails_gzip() {
        let r = verify_bytes(&dump_text(&tables(), None), Expect::SqlDump);
        assert_fails(&r, Check::Gzip, "not gzip-compressed");
        assert!(r.failure.unwrap().message.contains("plain text"));
    }

    #[test]
    fn an_uncompressed_tar_where_tar_gz_is_expected_fails_gzip() {
        let r = verify_bytes(&good_tar(), Expect::Tar);
        assert_fails(&r, Check::Gzip, "uncompressed tar archive");
    }

    #[test]
    fn a_dump_without_its_completion_line_fails_sql_complete() {
        let text = String::from_utf8(dump_text(&tables(), None)).unwrap();
        let cut = text.replace("-- PostgreSQL database dump complete\n", "");
        let r = verify_bytes(&gz(cut.as_bytes()), Expect::SqlDump);
        assert_fails(&r, Check::SqlComplete, "completion line");
        assert_eq!(&r.passed[3..], [Check::Gzip, Check::SqlHeader]);
        // Cut at a statement boundary well before the end.
        let at = text.find("ALTER TABLE").unwrap();
        let r = verify_bytes(&gz(&text.as_bytes()[..at]), Expect::SqlDump);
        assert_fails(&r, Check::SqlComplete, "missing");
    }

    #[test]
    fn a_dump_cut_inside_copy_data_fails_sql_complete() {
        let text = dump_text(&tables(), None);
        let row = b"plain text row 10\n".as_slice();
        let at = text.windows(row.len()).position(|w| w == row).unwrap() + row.len();
        let r = verify_bytes(&gz(&text[..at]), Expect::SqlDump);
        assert_fails(
            &r,
            Check::SqlComplete,
            "inside the data of table public.users",
        );
    }

    #[test]
    fn sql_after_the_completion_line_fails_sql_complete() {
        let mut text = dump_text(&tables(), None);
        text.extend_from_slice(b"DROP TABLE public.users;\n");
        let r = verify_bytes(&gz(&text), Expect::SqlDump);
        assert_fails(&r, Check::SqlComplete, "follows the completion line");
        // Two dumps concatenated.
        let mut two = dump_text(&tables(), None);
        two.extend(dump_text(&tables(), None));
        assert_fails(
            &verify_bytes(&gz(&two), Expect::SqlDump),
            Check::SqlComplete,
            "follows the completion",
        );
    }

    #[test]
    fn gzip_of_random_bytes_where_a_dump_is_expected_fails_sql_header() {
        let r = verify_bytes(&gz(&Rng::new(7).bytes(100_000)), Expect::SqlDump);
        assert_fails(&r, Check::SqlHeader, "header");
        assert_eq!(&r.passed[3..], [Check::Gzip]);
        // And some other SQL that is not a pg_dump dump.
        let r = verify_bytes(&gz(b"SELECT 1;\n"), Expect::SqlDump);
        assert_fails(&r, Check::SqlHeader, "not a pg_dump");
    }

    #[test]
    fn a_valid_tar_passes_with_long_names_links_and_empty_folders() {
        let d = Dir::new();
        let bytes = gz(&good_tar());
        let p = d.file("v.tar.gz", &bytes);
        let r = verify_file(&p, Expect::Tar, 100);
        assert_eq!(r.passed, ALL_TAR, "{:?}", r.failure);
        let t = r.tar.unwrap();
        assert_eq!((t.entries, t.total_bytes), (10, 1008));
        assert_eq!(r.sha256.unwrap(), sha256_hex(&bytes));
    }

    #[test]
    fn docker_style_pax_headers_and_record_padding_pass() {
        let mut t = Vec::new();
        let long = format!("data/{}", "p".repeat(150));
        let mut pax = pax_record("path", long.as_bytes());
        pax.extend(pax_record("mtime", b"1700000000.123456789"));
        pax.extend(pax_record("SCHILY.xattr.user.k", b"v"));
        push(
            &mut t,
            &raw_header(b"PaxHeaders.0/ppp", b'x', pax.len() as u64, b""),
            &pax,
        );
        push(&mut t, &raw_header(b"ppp", b'0', 3, b""), b"abc");
        push(&mut t, &raw_header(b"data/f", b'0', 600, b""), &[1u8; 600]);
        end(&mut t);
        t.extend(std::iter::repeat_n(0u8, 10240 - t.len() % 10240));
        let r = verify_bytes(&gz(&t), Expect::Tar);
        assert_eq!(
            &r.passed[3..],
            [Check::Gzip, Check::Tar, Check::Sha256],
            "{:?}",
            r.failure
        );
        assert_eq!(r.tar.unwrap().total_bytes, 603);
    }

    #[test]
    fn a_gnu_tar_archive_of_a_real_folder_passes() {
        let d = Dir::new();
        let root = d.0.path().join("vol");
        std::fs::create_dir_all(root.join("a/b/empty")).unwrap();
        std::fs::write(root.join("a/b/f.pdf"), Rng::new(3).bytes(70_000)).unwrap();
        std::fs::write(root.join(format!("a/{}", "n".repeat(200))), b"x").unwrap();
        std::os::unix::fs::symlink("b/f.pdf", root.join("a/link")).unwrap();
        std::fs::hard_link(root.join("a/b/f.pdf"), root.join("a/hard")).unwrap();
        let out = d.0.path().join("vol.tar.gz");
        for format in ["gnu", "posix"] {
            let st = std::process::Command::new("tar")
                .arg(format!("--format={format}"))
                .arg("-czf")
                .arg(&out)
                .arg("-C")
                .arg(&root)
                .arg(".")
                .status()
                .unwrap();
            assert!(st.success());
            let r = verify_file(&out, Expect::Tar, 512);
            assert_eq!(r.passed, ALL_TAR, "{format}: {:?}", r.failure);
            assert_eq!(r.tar.unwrap().entries, 8, "{format}");
        }
    }

    #[test]
    fn a_tar_cut_mid_entry_fails_tar() {
        let t = good_tar();
        let r = verify_bytes(&gz(&t[..512 * 5 + 300]), Expect::Tar);
        assert_fails(&r, Check::Tar, "ends inside this entry's data");
        assert!(r.failure.unwrap().message.contains("a/b/file.pdf"));
        let r = verify_bytes(&gz(&t[..512 * 5 + 100]), Expect::Tar);
        assert_fails(&r, Check::Tar, "of 1000 bytes present");
    }

    #[test]
    fn a_bad_header_checksum_fails_tar() {
        let mut t = good_tar();
        t[512 * 2 + 10] ^= 0x01; // inside the third header's name
        assert_fails(&verify_bytes(&gz(&t), Expect::Tar), Check::Tar, "checksum");
    }

    #[test]
    fn a_tar_without_its_end_marker_fails_tar() {
        let t = good_tar();
        let body = t.len() - 1024;
        assert!(t[body..].iter().all(|&b| b == 0));
        assert_fails(
            &verify_bytes(&gz(&t[..body]), Expect::Tar),
            Check::Tar,
            "end-of-archive marker is missing",
        );
        assert_fails(
            &verify_bytes(&gz(&t[..body + 512]), Expect::Tar),
            Check::Tar,
            "only one",
        );
        let mut extra = t.clone();
        extra.extend_from_slice(b"trailing");
        assert_fails(
            &verify_bytes(&gz(&extra), Expect::Tar),
            Check::Tar,
            "follows the end-of-archive",
        );
    }

    #[test]
    fn random_bytes_where_a_tar_is_expected_fail_tar() {
        let r = verify_bytes(&gz(&Rng::new(11).bytes(50_000)), Expect::Tar);
        assert_fails(&r, Check::Tar, "checksum");
        assert_fails(&verify_bytes(&gz(b""), Expect::Tar), Check::Tar, "empty");
        let r = verify_bytes(&gz(&dump_text(&tables(), None)), Expect::Tar);
        assert_fails(&r, Check::Tar, "");
    }

    #[test]
    fn pax_size_smuggling_fails_tar() {
        let mut t = Vec::new();
        let pax = pax_record("size", b"1024");
        push(
            &mut t,
            &raw_header(b"PaxHeaders/x", b'x', pax.len() as u64, b""),
            &pax,
        );
        push(&mut t, &raw_header(b"x", b'0', 0, b""), &[5u8; 1024]);
        end(&mut t);
        assert_fails(&verify_bytes(&gz(&t), Expect::Tar), Check::Tar, "PAX size");
    }

    #[test]
    fn a_missing_file_fails_exists() {
        let d = Dir::new();
        let r = verify_file(&d.0.path().join("nope.sql.gz"), Expect::SqlDump, 0);
        assert_fails(&r, Check::Exists, "does not exist");
        assert!(r.passed.is_empty());
    }

    #[test]
    fn a_folder_or_a_symlink_where_a_file_is_expected_fails_regular_file() {
        let d = Dir::new();
        let r = verify_file(d.0.path(), Expect::Tar, 0);
        assert_fails(&r, Check::RegularFile, "a folder");
        assert_eq!(r.passed, [Check::Exists]);
        let real = d.file("real.gz", &good_dump());
        let link = d.0.path().join("link.gz");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        assert_fails(
            &verify_file(&link, Expect::SqlDump, 0),
            Check::RegularFile,
            "symbolic link",
        );
        let dangling = d.0.path().join("dangling.gz");
        std::os::unix::fs::symlink("missing", &dangling).unwrap();
        assert_fails(
            &verify_file(&dangling, Expect::SqlDump, 0),
            Check::RegularFile,
            "symbolic link",
        );
        assert_fails(
            &verify_file(Path::new("/dev/null"), Expect::SqlDump, 0),
            Check::RegularFile,
            "device",
        );
    }

    #[test]
    fn verify_reader_checks_a_stream() {
        let bytes = good_dump();
        let r = verify_reader(&bytes[..], Expect::SqlDump);
        assert_eq!(
            r.passed,
            [
                Check::Gzip,
                Check::SqlHeader,
                Check::SqlComplete,
                Check::SqlSafety,
                Check::Sha256
            ]
        );
        assert_eq!(r.size, bytes.len() as u64);
        let r = verify_reader(&bytes[..100], Expect::SqlDump);
        assert_fails(&r, Check::Gzip, "truncated at byte 100 of 100");
    }

    /// Random mutations of valid files never panic, and a mutated file is either refused or
    /// verified with its own (new) SHA-256.
    #[test]
    fn random_mutations_fail_closed() {
        let sql = gz(&dump_text(&tables(), Some("k3y")));
        let tar = gz(&good_tar());
        let mut rng = Rng::new(0x5eed);
        let mut still_valid = 0;
        for round in 0..400 {
            let (orig, expect) = if round % 2 == 0 {
                (&sql, Expect::SqlDump)
            } else {
                (&tar, Expect::Tar)
            };
            let mut b = orig.clone();
            match rng.below(6) {
                0 => {
                    let i = rng.below(b.len() as u64) as usize;
                    b[i] ^= 1 << rng.below(8);
                }
                1 => {
                    for _ in 0..1 + rng.below(8) {
                        let i = rng.below(b.len() as u64) as usize;
                        b[i] = rng.next() as u8;
                    }
                }
                2 => b.truncate(rng.below(b.len() as u64) as usize),
                3 => {
                    let i = rng.below(b.len() as u64) as usize;
                    let n = 1 + rng.below(16) as usize;
                    b.splice(i..i, rng.bytes(n));
                }
                4 => {
                    let i = rng.below(b.len() as u64) as usize;
                    let n = (1 + rng.below(16) as usize).min(b.len() - i);
                    b.drain(i..i + n);
                }
                _ => {
                    // The gzip header's mtime/OS fields: harmless changes.
                    let i = [4, 5, 6, 7, 9][rng.below(5) as usize];
                    b[i] = rng.next() as u8;
                }
            }
            if b == *orig {
                continue;
            }
            let r = verify_bytes(&b, expect);
            if r.verified() {
                still_valid += 1;
                assert_eq!(r.sha256.as_deref(), Some(sha256_hex(&b).as_str()));
                assert_ne!(r.sha256.as_deref(), Some(sha256_hex(orig).as_str()));
            } else {
                assert!(r.failure.is_some() && r.sha256.is_none());
            }
        }
        // Header mtime/OS changes stay valid; nearly everything else must not.
        assert!(still_valid > 0 && still_valid < 150, "{still_valid}");
    }
}
