//! SHA-256 while streaming. (stub)
use std::io::{self, Read, Write};
use std::path::Path;

/// A writer that hashes and counts what passes through it.
pub struct HashingWriter<W: Write> {
    pub inner: W,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.inner.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// (size, lowercase hex SHA-256) of a file.
pub fn sha256_file(path: &Path) -> io::Result<(u64, String)> {
    let mut f = std::fs::File::open(path)?;
    let mut buf = Vec::new();
    f.read_to_end(&mut buf)?;
    Ok((buf.len() as u64, String::new()))
}
