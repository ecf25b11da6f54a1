//! age encryption at rest: one more layer on top of the codec (dump → compress → age → file).
//!
//! - **Writing** ([`SealingWriter`]): the codec's output is *teed*: one copy goes through age
//!   into the file (hashed on the way: the manifest records the SHA-256 of the stored,
//!   encrypted bytes), the other into the usual content checks (gzip/zstd, SQL completeness,
//!   tar walk) through the same tee as a clear file's ([`Tee`], [`StreamCheck`]). The
//!   plaintext is verified in the same pass that writes it; nothing is decrypted and read
//!   again.
//! - **Reading** ([`open`]): a `….age` file is decrypted with the identity the caller
//!   passes (the run's `decrypt-identity`, a value handed down, never a global); any other
//!   file is read as it is. Every reader of backup files (restore, verify-restore, the
//!   pre-restore checks) goes through it.
//! - **Verifying a stored file** ([`verify_stored`]): without an identity, the age header
//!   is parsed and the SHA-256/size of the ciphertext computed (what retention, `verify` and
//!   a destination's read-back need); with one, every chunk is authenticated and the
//!   plaintext checked fully.
//!
//! A file is encrypted when its name ends in `.age` (`db_….sql.gz.age`); the manifest
//! records `encrypted: age` and the recipients (public keys, or an ssh key's fingerprint),
//! never an identity. Identities never appear in messages: parse errors describe, they do
//! not quote.

use std::fmt;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Seek, Write};
use std::path::Path;
use std::str::FromStr;
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use sha2::{Digest, Sha256};

use super::codec::{Codec, Encoder};
use super::hash::Tally;
use super::verify::{Check, Expect, FileReport, StreamCheck, Tee};

/// The suffix of an encrypted file, after the codec's (`.sql.gz.age`).
pub const EXT: &str = ".age";
/// The manifest's `encrypted` value.
pub const SCHEME: &str = "age";

/// Whether a file's name says it is age-encrypted (`….age`).
pub fn is_sealed(path: &Path) -> bool {
    path.file_name()
        .map(|n| n.to_string_lossy().to_ascii_lowercase().ends_with(EXT))
        .unwrap_or(false)
}

// ---------------------------------------------------------------- recipients

enum Key {
    X25519(age::x25519::Recipient),
    Ssh(age::ssh::Recipient),
}

/// The public keys backups are encrypted to (`encrypt-recipients`).
pub struct Recipients {
    keys: Vec<Key>,
    /// What the manifest records: an `age1…` key itself (it is public and short), or
    /// `ssh-ed25519 SHA256:…` (the key's fingerprint, as `ssh-keygen -l` shows it).
    pub fingerprints: Vec<String>,
}

impl fmt::Debug for Recipients {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(&self.fingerprints).finish()
    }
}

/// At most the first characters of an entry that did not parse (it might be a secret
/// pasted into the wrong input: never shown whole).
fn shown_start(s: &str) -> String {
    let head: String = s.chars().take(12).collect();
    if head.len() < s.len() {
        format!("{head}…")
    } else {
        head
    }
}

impl Recipients {
    /// Parses `encrypt-recipients` (and the content of `encrypt-recipients-file`): age public
    /// keys (`age1…`) and `ssh-ed25519 AAAA… [comment]` lines, comma- or newline-separated;
    /// blank lines and `#` comments are skipped.
    pub fn parse(text: &str) -> Result<Recipients, String> {
        let mut r = Recipients {
            keys: vec![],
            fingerprints: vec![],
        };
        for entry in text
            .split(['\n', ','])
            .map(str::trim)
            .filter(|e| !e.is_empty() && !e.starts_with('#'))
        {
            let lower = entry.to_ascii_lowercase();
            let (key, fp) = if lower.starts_with("age-secret-key-") {
                return Err("encrypt-recipients holds an age identity (AGE-SECRET-KEY-1…), which is a secret: put its public key there instead (`age-keygen -y key.txt` prints it), keep the identity for decrypt-identity, and treat this one as leaked if the log is public".into());
            } else if lower.starts_with("age1") {
                let k = age::x25519::Recipient::from_str(entry).map_err(|e| {
                    format!(
                        "encrypt-recipients: `{}` is not an age public key ({e}): use the `age1…` line that `age-keygen` prints as \"Public key\"",
                        shown_start(entry)
                    )
                })?;
                let fp = k.to_string();
                (Key::X25519(k), fp)
            } else if lower.starts_with("ssh-ed25519 ") {
                let k = age::ssh::Recipient::from_str(entry).map_err(|e| {
                    format!(
                        "encrypt-recipients: `{}` is not a valid ssh-ed25519 public key ({e:?}): use a line of an `.pub` file",
                        shown_start(entry)
                    )
                })?;
                let fp = ssh_fingerprint(entry).ok_or_else(|| {
                    format!(
                        "encrypt-recipients: `{}` is not a valid ssh-ed25519 public key",
                        shown_start(entry)
                    )
                })?;
                (Key::Ssh(k), fp)
            } else if lower.starts_with("ssh-") || lower.starts_with("ecdsa-") {
                return Err(format!(
                    "encrypt-recipients: `{}` is not supported: use ssh-ed25519 keys or age keys (`age-keygen`)",
                    shown_start(entry)
                ));
            } else if lower.contains("private key") {
                return Err("encrypt-recipients holds a private key: put the public key there (the `.pub` file), never the private one".into());
            } else {
                return Err(format!(
                    "encrypt-recipients: `{}` is neither an age public key (age1…) nor an ssh-ed25519 public key",
                    shown_start(entry)
                ));
            };
            if !r.fingerprints.contains(&fp) {
                r.keys.push(key);
                r.fingerprints.push(fp);
            }
        }
        if r.keys.is_empty() {
            return Err("encrypt-recipients is set but names no key: give age public keys (age1…) or ssh-ed25519 public keys, comma- or newline-separated".into());
        }
        Ok(r)
    }

    fn iter(&self) -> impl Iterator<Item = &dyn age::Recipient> {
        self.keys.iter().map(|k| match k {
            Key::X25519(k) => k as &dyn age::Recipient,
            Key::Ssh(k) => k as &dyn age::Recipient,
        })
    }

    fn encryptor(&self) -> io::Result<age::Encryptor> {
        age::Encryptor::with_recipients(self.iter())
            .map_err(|e| io::Error::other(format!("age: {e}")))
    }
}

/// `ssh-ed25519 SHA256:<base64 of the SHA-256 of the key blob, unpadded>`.
fn ssh_fingerprint(line: &str) -> Option<String> {
    let mut parts = line.split_whitespace();
    let kind = parts.next()?;
    let blob = base64::engine::general_purpose::STANDARD
        .decode(parts.next()?)
        .ok()?;
    let digest = Sha256::digest(&blob);
    Some(format!(
        "{kind} SHA256:{}",
        base64::engine::general_purpose::STANDARD_NO_PAD.encode(digest)
    ))
}

// ---------------------------------------------------------------- identity

/// The secret key(s) of `decrypt-identity`.
pub struct Identity {
    keys: Vec<Box<dyn age::Identity + Send + Sync>>,
    /// What identifies them in messages and the manifest: an x25519 identity's public key
    /// (`age1…`), an ssh key's fingerprint (`ssh-ed25519 SHA256:…`).
    pub public: Vec<String>,
    /// Their public keys as [`Recipients::parse`] takes them (`age1…`, `ssh-ed25519 AAAA…`):
    /// what a rollback encrypts its safety backup to.
    pub recipients: Vec<String>,
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Identity({:?})", self.public)
    }
}

impl Identity {
    /// Parses an age identity file's content (`AGE-SECRET-KEY-1…` lines, `#` comments) or an
    /// unencrypted OpenSSH ed25519 private key. Errors never quote the text.
    pub fn parse(text: &str) -> Result<Identity, String> {
        if text.contains("-----BEGIN OPENSSH PRIVATE KEY-----") {
            let id = age::ssh::Identity::from_buffer(text.as_bytes(), None).map_err(|_| {
                "decrypt-identity looks like an OpenSSH private key but does not parse: paste the whole file, BEGIN and END lines included".to_string()
            })?;
            return match id {
                age::ssh::Identity::Unencrypted(_) => {
                    let line = openssh_public(text);
                    Ok(Identity {
                        keys: vec![Box::new(id)],
                        public: line.iter().filter_map(|l| ssh_fingerprint(l)).collect(),
                        recipients: line.into_iter().collect(),
                    })
                }
                age::ssh::Identity::Encrypted(_) => Err("decrypt-identity is a passphrase-protected ssh key, which cannot be used unattended: use an age identity (age-keygen) or an unprotected ssh-ed25519 key kept in a secret".into()),
                age::ssh::Identity::Unsupported(_) => Err("decrypt-identity is an ssh key of a type age cannot use: use an ssh-ed25519 key or an age identity (age-keygen)".into()),
            };
        }
        let mut id = Identity {
            keys: vec![],
            public: vec![],
            recipients: vec![],
        };
        for (i, line) in text
            .lines()
            .map(str::trim)
            .enumerate()
            .filter(|(_, l)| !l.is_empty() && !l.starts_with('#'))
        {
            if !line.starts_with("AGE-SECRET-KEY-1") {
                let hint = if line.starts_with("age1") {
                    " (that is a public key: decrypt-identity needs the secret key, the AGE-SECRET-KEY-1… line of the file age-keygen wrote)"
                } else {
                    ""
                };
                return Err(format!(
                    "decrypt-identity: line {} is not an age identity (AGE-SECRET-KEY-1…){hint}",
                    i + 1
                ));
            }
            let k = age::x25519::Identity::from_str(line).map_err(|e| {
                format!(
                    "decrypt-identity: line {} is not a valid age identity ({e}); copy the key again from the file age-keygen wrote",
                    i + 1
                )
            })?;
            let public = k.to_public().to_string();
            id.recipients.push(public.clone());
            id.public.push(public);
            id.keys.push(Box::new(k));
        }
        if id.keys.is_empty() {
            return Err(
                "decrypt-identity holds no key: give the AGE-SECRET-KEY-1… line of your age identity file".into(),
            );
        }
        Ok(id)
    }

    fn iter(&self) -> impl Iterator<Item = &dyn age::Identity> {
        self.keys.iter().map(|k| k.as_ref() as &dyn age::Identity)
    }

    /// Whether this identity decrypts what is encrypted to `r` (one tiny probe in memory).
    pub fn opens(&self, r: &Recipients) -> bool {
        let Ok(enc) = r.encryptor() else {
            return false;
        };
        let mut out = vec![];
        let sealed = enc.wrap_output(&mut out).and_then(|mut w| {
            w.write_all(b"probe")?;
            w.finish().map(|_| ())
        });
        sealed.is_ok()
            && age::Decryptor::new_buffered(&out[..])
                .ok()
                .and_then(|d| d.decrypt(self.iter()).ok())
                .is_some()
    }
}

/// The public key line (`ssh-ed25519 AAAA…`) of an unencrypted OpenSSH ed25519 private key:
/// the `openssh-key-v1` container keeps it in clear before the private section.
fn openssh_public(pem: &str) -> Option<String> {
    fn string(b: &[u8]) -> Option<(&[u8], &[u8])> {
        let n = u32::from_be_bytes(b.get(..4)?.try_into().ok()?) as usize;
        let end = n.checked_add(4)?;
        Some((b.get(4..end)?, b.get(end..)?))
    }
    let body: String = pem
        .lines()
        .map(str::trim)
        .skip_while(|l| !l.starts_with("-----BEGIN OPENSSH PRIVATE KEY-----"))
        .skip(1)
        .take_while(|l| !l.starts_with("-----END"))
        .collect();
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(body)
        .ok()?;
    let rest = bytes.strip_prefix(b"openssh-key-v1\0")?;
    let (_cipher, rest) = string(rest)?;
    let (_kdf, rest) = string(rest)?;
    let (_kdf_options, rest) = string(rest)?;
    if rest.get(..4)? != 1u32.to_be_bytes() {
        return None;
    }
    let (blob, _) = string(&rest[4..])?;
    let (kind, _) = string(blob)?;
    (kind == b"ssh-ed25519").then(|| {
        format!(
            "ssh-ed25519 {}",
            base64::engine::general_purpose::STANDARD.encode(blob)
        )
    })
}

/// Why a file cannot be opened with an identity.
#[derive(Debug)]
pub enum Access {
    /// The identity does not unlock it (the header names none of its keys).
    NoMatchingKey,
    /// The header is not an age header (damaged or not encrypted): a verification failure.
    Damaged(String),
    Io(io::Error),
}

/// Checks that `id` unlocks the age file at `path`: parses the header and unwraps the file
/// key, reading no payload.
pub fn check_access(path: &Path, id: &Identity) -> Result<(), Access> {
    let f = File::open(path).map_err(Access::Io)?;
    let d = age::Decryptor::new_buffered(BufReader::new(f))
        .map_err(|e| Access::Damaged(format!("its age header cannot be read ({e})")))?;
    match d.decrypt(id.iter()) {
        Ok(_) => Ok(()),
        Err(age::DecryptError::NoMatchingKeys) => Err(Access::NoMatchingKey),
        Err(e) => Err(Access::Damaged(format!(
            "its age header is not intact ({e})"
        ))),
    }
}

fn age_io(e: age::DecryptError) -> io::Error {
    match e {
        age::DecryptError::Io(e) => e,
        age::DecryptError::NoMatchingKeys => io::Error::other(
            "the identity in decrypt-identity does not match any recipient of this file",
        ),
        e => io::Error::other(format!("age: {e}")),
    }
}

/// Verifies one backup file ([`super::verify::verify_file_as`]); a `….age` one through this
/// layer: with `identity` its content is decrypted and checked too, without one its header
/// and stored bytes only ([`verify_stored`]).
pub fn verify_file(
    path: &Path,
    expect: Expect,
    codec: Codec,
    min_size: u64,
    identity: Option<&Identity>,
) -> FileReport {
    if !is_sealed(path) {
        return super::verify::verify_file_as(path, expect, codec, min_size);
    }
    let open = |file: File, size: u64, report: &mut FileReport| {
        verify_stored(file, size, report, identity)
    };
    super::verify::verify_file_opened(path, expect, codec, min_size, &open)
}

/// A backup file's stored content: decrypted with `identity` when the name ends in `.age`
/// (an error without one), else the file as it is.
pub fn open(path: &Path, identity: Option<&Identity>) -> io::Result<Box<dyn BufRead + Send>> {
    open_tallied(path, identity, None)
}

/// [`open`], with every stored byte read (before decryption) counted and hashed by `tally`:
/// the caller learns whether what it used is exactly the file the manifest describes, in the
/// same read.
pub fn open_tallied(
    path: &Path,
    identity: Option<&Identity>,
    tally: Option<&Tally>,
) -> io::Result<Box<dyn BufRead + Send>> {
    let file = File::open(path)?;
    let raw: Box<dyn Read + Send> = match tally {
        Some(t) => Box::new(t.reader(file)),
        None => Box::new(file),
    };
    let f = BufReader::with_capacity(1 << 20, raw);
    if !is_sealed(path) {
        return Ok(Box::new(f));
    }
    let id = identity.ok_or_else(|| {
        io::Error::other(format!(
            "{} is encrypted with age: pass the matching identity in decrypt-identity (or env PREDEPLOY_AGE_IDENTITY)",
            path.display()
        ))
    })?;
    let d = age::Decryptor::new_buffered(f).map_err(age_io)?;
    let r = d.decrypt(id.iter()).map_err(age_io)?;
    Ok(Box::new(BufReader::with_capacity(256 << 10, r)))
}

// ---------------------------------------------------------------- writer

/// Counts and hashes the bytes that reach the file.
struct HashWriter<W> {
    inner: W,
    hasher: Sha256,
    len: u64,
}

impl<W: Write> Write for HashWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// What [`SealingWriter::finish`] knows about the file it wrote.
pub struct Sealed {
    /// Bytes of content (before compression).
    pub raw: u64,
    /// Size and SHA-256 of the stored (encrypted) file.
    pub size: u64,
    pub sha256: String,
    /// The content checks of the compressed plaintext, made while it was written.
    pub content: FileReport,
    pub recipients: Vec<String>,
}

/// compress → tee (verify) → age → hash → `W`, in one pass.
pub struct SealingWriter<W: Write> {
    enc: Encoder<Tee<age::stream::StreamWriter<HashWriter<W>>>>,
    raw: u64,
    recipients: Vec<String>,
}

impl<W: Write> SealingWriter<W> {
    pub fn new(
        inner: W,
        codec: Codec,
        level: u32,
        expect: Expect,
        recipients: &Recipients,
    ) -> io::Result<Self> {
        let hashed = HashWriter {
            inner,
            hasher: Sha256::new(),
            len: 0,
        };
        let sealed = recipients.encryptor()?.wrap_output(hashed)?;
        let tee = Tee(sealed, StreamCheck::new(expect, codec)?);
        Ok(SealingWriter {
            enc: Encoder::new(tee, codec, level)?,
            raw: 0,
            recipients: recipients.fingerprints.clone(),
        })
    }

    /// Ends the compressed stream and the age stream, flushes `W`, and collects the
    /// verifier's report. Returns `W` (flushed) and what was written.
    pub fn finish(self) -> io::Result<(W, Sealed)> {
        let Tee(sealed, check) = self.enc.finish()?;
        let mut hashed = sealed.finish()?;
        hashed.flush()?;
        let content = check.finish();
        let HashWriter { inner, hasher, len } = hashed;
        Ok((
            inner,
            Sealed {
                raw: self.raw,
                size: len,
                sha256: hex::encode(hasher.finalize()),
                content,
                recipients: self.recipients,
            },
        ))
    }
}

impl<W: Write> Write for SealingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.enc.write(buf)?;
        self.raw += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.enc.flush()
    }
}

/// The report of a file this run wrote with [`SealingWriter`]: `exists`, `regular-file`
/// and `min-size` of the stored file, `age-header`, the content checks made while writing,
/// and the SHA-256 of the stored bytes.
pub fn written_report(path: &Path, expect: Expect, min_size: u64, sealed: Sealed) -> FileReport {
    let Sealed {
        size,
        sha256,
        content,
        recipients,
        ..
    } = sealed;
    let mut report = FileReport::new(path, expect, content.codec);
    report.encrypted = Some(recipients);
    report.size = size;
    let shown = path.display();
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_file() && m.len() == size => {
            report.pass(Check::Exists);
            report.pass(Check::RegularFile);
        }
        Ok(m) if m.is_file() => {
            report.pass(Check::Exists);
            report.pass(Check::RegularFile);
            report.fail(
                Check::Sha256,
                format!(
                    "{shown} is {} bytes but {size} were written: something else changed it; take a new backup",
                    m.len()
                ),
            );
            return report;
        }
        Ok(_) => {
            report.pass(Check::Exists);
            report.fail(Check::RegularFile, format!("{shown} is not a regular file"));
            return report;
        }
        Err(e) => {
            report.fail(Check::Exists, format!("{shown} cannot be examined ({e})"));
            return report;
        }
    }
    let complete_and_empty = content.failure.is_none()
        && content
            .sql
            .as_ref()
            .is_some_and(|s| s.tables.values().all(|&n| n == 0));
    if size < min_size && !(expect == Expect::SqlDump && complete_and_empty) {
        report.fail(
            Check::MinSize,
            format!(
                "{shown} is {size} bytes, less than the minimum of {min_size} bytes: the {} is empty or nearly so; check the source and take a new backup, or lower the minimum",
                match expect {
                    Expect::SqlDump => "database dump",
                    Expect::Tar => "volume archive",
                }
            ),
        );
        return report;
    }
    report.pass(Check::MinSize);
    report.pass(Check::AgeHeader);
    report.pass(Check::Age);
    for c in content.passed.iter().filter(|c| **c != Check::Sha256) {
        report.pass(*c);
    }
    report.sql = content.sql;
    report.tar = content.tar;
    if let Some(f) = content.failure {
        report.fail(f.check, f.message);
        return report;
    }
    report.sha256 = Some(sha256);
    report.pass(Check::Sha256);
    report
}

// ---------------------------------------------------------------- verifying a stored file

/// Remembers the first error of the decrypting reader (a chunk that fails authentication).
struct Watch<R> {
    inner: R,
    error: Arc<Mutex<Option<String>>>,
}

impl<R: Read> Read for Watch<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.inner.read(buf).inspect_err(|e| {
            if let Ok(mut slot) = self.error.lock() {
                slot.get_or_insert_with(|| e.to_string());
            }
        })
    }
}

/// The checks after `min-size` of a stored `….age` file (see the module doc). `file` is
/// open at its start; `size` is its length. With `identity` the content is decrypted and
/// checked too.
pub(crate) fn verify_stored(
    mut file: File,
    size: u64,
    report: &mut FileReport,
    identity: Option<&Identity>,
) {
    let shown = report.path.display().to_string();
    report.encrypted = Some(vec![]);
    // age-header
    let header = age::Decryptor::new_buffered(BufReader::new(&file)).map(|_| ());
    if let Err(e) = header {
        report.fail(
            Check::AgeHeader,
            format!("{shown} is not an intact age file: its header cannot be read ({e}); the file is damaged, or it is not encrypted although its name ends in .age"),
        );
        return;
    }
    report.pass(Check::AgeHeader);
    if let Err(e) = file.rewind() {
        report.fail(Check::Sha256, format!("{shown} cannot be read again ({e})"));
        return;
    }
    let Some(id) = identity else {
        // Without the key: the stored bytes only (size and SHA-256 against the manifest).
        let tally = Tally::new();
        let mut buf = vec![0u8; 1 << 20];
        loop {
            match file.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => tally.update(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    report.fail(
                        Check::Sha256,
                        format!("reading {shown} failed at byte {} ({e}); check the disk, then verify again", tally.digest().0),
                    );
                    return;
                }
            }
        }
        finish_hash(report, tally.digest(), size);
        return;
    };
    if let Some(r) = report.encrypted.as_mut() {
        r.clone_from(&id.public);
    }
    let tally = Tally::new();
    let hashed = BufReader::with_capacity(1 << 20, tally.reader(file));
    let decrypted = match age::Decryptor::new_buffered(hashed).and_then(|d| d.decrypt(id.iter())) {
        Ok(r) => r,
        Err(age::DecryptError::NoMatchingKeys) => {
            report.fail(
                Check::Age,
                format!("{shown} is not encrypted to the identity in decrypt-identity: pass the identity whose public key the manifest lists under recipients"),
            );
            return;
        }
        Err(e) => {
            report.fail(
                Check::Age,
                format!("{shown}: the age header does not open ({e}); the file is damaged"),
            );
            return;
        }
    };
    report.pass(Check::Age);
    let error = Arc::new(Mutex::new(None));
    let watched = Watch {
        inner: decrypted,
        error: error.clone(),
    };
    super::verify::verify_stream(watched, None, report);
    report.size = size;
    report.sha256 = None;
    if let Some(e) = error.lock().ok().and_then(|mut e| e.take()) {
        report.failure = None;
        report.passed.retain(|c| {
            matches!(
                c,
                Check::Exists | Check::RegularFile | Check::MinSize | Check::AgeHeader
            )
        });
        report.fail(
            Check::Age,
            format!("{shown} fails age authentication ({e}): the encrypted bytes were altered or cut short; take a new backup"),
        );
        return;
    }
    if report.failure.is_some() {
        return;
    }
    report.passed.retain(|c| *c != Check::Sha256);
    finish_hash(report, tally.digest(), size);
}

fn finish_hash(report: &mut FileReport, (len, sha): (u64, String), size: u64) {
    if len != size {
        report.fail(
            Check::Sha256,
            format!(
                "{} changed while it was being verified ({size} bytes at the start, {len} read); verify again once it is complete",
                report.path.display()
            ),
        );
        return;
    }
    report.sha256 = Some(sha);
    report.pass(Check::Sha256);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::archive::testutil::dump_text;

    fn pair() -> (Identity, Recipients) {
        let k = age::x25519::Identity::generate();
        let public = k.to_public().to_string();
        let secret = age::secrecy::ExposeSecret::expose_secret(&k.to_string()).to_string();
        (
            Identity::parse(&format!("# created: now\n{secret}\n")).unwrap(),
            Recipients::parse(&format!("{public}\n")).unwrap(),
        )
    }

    fn seal(data: &[u8], codec: Codec, expect: Expect, r: &Recipients) -> (Vec<u8>, Sealed) {
        let mut w = SealingWriter::new(Vec::new(), codec, 3, expect, r).unwrap();
        for c in data.chunks(7919) {
            w.write_all(c).unwrap();
        }
        w.finish().unwrap()
    }

    #[test]
    fn recipients_parse_and_refuse() {
        let (_, r) = pair();
        let key = r.fingerprints[0].clone();
        let ssh = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHsKLqeplhpW+uObz5dvMgjz1OxfM/XXUB+VHtZ6isGN comment";
        let both = Recipients::parse(&format!("{key}, {ssh}\n\n# note\n{key}")).unwrap();
        assert_eq!(both.fingerprints.len(), 2);
        assert!(both.fingerprints[1].starts_with("ssh-ed25519 SHA256:"));
        let secret = "AGE-SECRET-KEY-1QQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQQ";
        let e = Recipients::parse(secret).unwrap_err();
        assert!(!e.contains(secret), "{e}");
        assert!(Recipients::parse("ssh-rsa AAAAB3Nza x").is_err());
        assert!(Recipients::parse("age1nope").is_err());
        assert!(Recipients::parse(" , \n").is_err());
    }

    #[test]
    fn identity_errors_never_quote_the_key() {
        let bad = "AGE-SECRET-KEY-1THISISNOTAVALIDKEYATALLXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX";
        let e = Identity::parse(bad).unwrap_err();
        assert!(!e.contains("THISISNOT"), "{e}");
        assert!(Identity::parse("age1abc")
            .unwrap_err()
            .contains("public key"));
        let (id, r) = pair();
        assert!(id.opens(&r));
        let (_, other) = pair();
        assert!(!id.opens(&other));
    }

    #[test]
    fn sealed_stream_verifies_while_written_and_decrypts() {
        let (id, r) = pair();
        let dump = dump_text(&[("public.t", 2000)], None);
        for codec in Codec::ALL {
            let (bytes, sealed) = seal(&dump, codec, Expect::SqlDump, &r);
            assert!(
                sealed.content.failure.is_none(),
                "{:?}",
                sealed.content.failure
            );
            assert!(
                sealed
                    .content
                    .sql
                    .as_ref()
                    .unwrap()
                    .tables
                    .values()
                    .sum::<u64>()
                    > 0
            );
            assert_eq!(sealed.size, bytes.len() as u64);
            assert_eq!(sealed.sha256, hex::encode(Sha256::digest(&bytes)));
            assert_eq!(sealed.raw, dump.len() as u64);
            let d = age::Decryptor::new_buffered(io::Cursor::new(bytes.clone())).unwrap();
            let mut plain = BufReader::new(d.decrypt(id.iter()).unwrap());
            let (mut back, mut out) = (vec![], vec![0u8; 64 * 1024]);
            crate::archive::codec::restore(codec, &mut plain, &mut out, &mut |b| {
                back.extend_from_slice(b);
                true
            })
            .unwrap();
            assert_eq!(back, dump);
        }
    }

    #[test]
    fn a_cut_dump_fails_in_the_writing_pass() {
        let (_, r) = pair();
        let dump = dump_text(&[("public.t", 500)], None);
        let cut = &dump[..dump.len() - 40];
        let (_, sealed) = seal(cut, Codec::Gzip, Expect::SqlDump, &r);
        let f = sealed.content.failure.expect("a cut dump fails");
        assert_eq!(f.check, Check::SqlComplete);
    }
}
