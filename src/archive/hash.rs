//! SHA-256 while streaming.
//!
//! `sha2` 0.10 picks the x86 SHA extensions (SHA-NI) or ARMv8 crypto instructions at run
//! time when the CPU has them, so hashing runs at well over 1 GB/s on current servers.

use std::io::{self, Read};
use std::path::Path;
use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};

/// Read/hash block size for [`sha256_file`].
const BLOCK: usize = 1 << 20;

/// SHA-256 and byte count of what passes through a reader (or a stream of chunks) that
/// someone else owns: a decryptor, a decoder or an upload takes the reader, the tally stays
/// with the caller, who reads the digest once the stream is done. This is how a file is
/// checked against its manifest in the same read that uses it (a rollback restores exactly
/// the bytes it hashed; verification hashes the ciphertext it decrypts).
#[derive(Clone, Default)]
pub struct Tally(Arc<Mutex<(Sha256, u64)>>);

impl Tally {
    pub fn new() -> Self {
        Self::default()
    }

    /// Counts and hashes `data`.
    pub fn update(&self, data: &[u8]) {
        let mut s = self.0.lock().unwrap_or_else(|p| p.into_inner());
        s.0.update(data);
        s.1 += data.len() as u64;
    }

    /// `inner`, with everything read through it counted here.
    pub fn reader<R: Read>(&self, inner: R) -> Tallied<R> {
        Tallied {
            inner,
            tally: self.clone(),
        }
    }

    /// Reads `rest` (the reader this tally counts, or one built on it) to its end, so that
    /// the bytes a decoder did not need are counted too, then gives [`Tally::digest`].
    pub fn finish(&self, mut rest: impl Read) -> io::Result<(u64, String)> {
        io::copy(&mut rest, &mut io::sink())?;
        Ok(self.digest())
    }

    /// (bytes, lowercase hex SHA-256) of everything so far.
    pub fn digest(&self) -> (u64, String) {
        let s = self.0.lock().unwrap_or_else(|p| p.into_inner());
        (s.1, hex::encode(s.0.clone().finalize()))
    }
}

/// A reader whose bytes a [`Tally`] counts and hashes.
pub struct Tallied<R> {
    inner: R,
    tally: Tally,
}

impl<R: Read> Read for Tallied<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.tally.update(&buf[..n]);
        Ok(n)
    }
}

/// Lowercase hex SHA-256 of a byte slice.
pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// (size, lowercase hex SHA-256) of a file, streamed in 1 MiB blocks.
pub fn sha256_file(path: &Path) -> io::Result<(u64, String)> {
    let mut f = std::fs::File::open(path)?;
    sha256_reader(&mut f)
}

/// (size, lowercase hex SHA-256) of everything a reader yields.
pub fn sha256_reader<R: Read + ?Sized>(r: &mut R) -> io::Result<(u64, String)> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; BLOCK];
    let mut count = 0u64;
    loop {
        let n = match r.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        hasher.update(&buf[..n]);
        count += n as u64;
    }
    Ok((count, hex::encode(hasher.finalize())))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ABC: &str = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
    const EMPTY: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn reader_and_file_agree_with_known_digests() {
        let tally = Tally::new();
        let mut out = Vec::new();
        tally.reader(&b"ab"[..]).read_to_end(&mut out).unwrap();
        tally.update(b"c");
        assert_eq!(tally.digest(), (3, ABC.to_string()));
        assert_eq!(Tally::new().digest(), (0, EMPTY.to_string()));

        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, b"abc").unwrap();
        assert_eq!(sha256_file(&p).unwrap(), (3, ABC.to_string()));
        std::fs::write(&p, b"").unwrap();
        assert_eq!(sha256_file(&p).unwrap(), (0, EMPTY.to_string()));
        assert_eq!(sha256_hex(b"abc"), ABC);
    }
}
