//! The artifact's zip, written while it is uploaded: entries planned from the backup files
//! (names checked, already-compressed files stored), then streamed in [`BLOCK_SIZE`](super::BLOCK_SIZE) pieces
//! through a bounded channel to the uploader, so that no second copy of the backups is ever
//! held in memory or on disk.

use std::collections::HashSet;
use std::fmt;
use std::fs::{self, File};
use std::io::{self, BufReader, Write};
use std::path::{Path, PathBuf};

use bytes::Bytes;

use super::unpack::safe_relative;
use super::{describe_char, ArtifactError, BLOCK_SIZE, FORBIDDEN_PATH_CHARS};

pub(super) struct ZipEntry {
    name: String,
    path: PathBuf,
    size: u64,
    stored: bool,
}

/// Already compressed: storing beats deflating again.
fn is_compressed(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    [
        ".gz", ".tgz", ".zip", ".zst", ".xz", ".bz2", ".7z", ".br", ".lz4",
    ]
    .iter()
    .any(|s| n.ends_with(s))
}

pub(super) fn plan_entries(files: &[(String, PathBuf)]) -> Result<Vec<ZipEntry>, ArtifactError> {
    if files.is_empty() {
        return Err(ArtifactError::Invalid(
            "there are no files to upload as an artifact".into(),
        ));
    }
    let mut seen = HashSet::new();
    let mut out = Vec::with_capacity(files.len());
    for (name, path) in files {
        let rel = safe_relative(name).map_err(|why| {
            ArtifactError::Invalid(format!(
                "cannot upload `{}` as \"{}\" in the artifact: the path {why}",
                path.display(),
                name.escape_debug()
            ))
        })?;
        if let Some(c) = FORBIDDEN_PATH_CHARS.iter().find(|c| name.contains(**c)) {
            return Err(ArtifactError::Invalid(format!(
                "cannot upload `{}` as \"{}\": the path contains {}, which GitHub refuses in \
                 artifact paths",
                path.display(),
                name.escape_debug(),
                describe_char(*c)
            )));
        }
        let key = rel.to_string_lossy().into_owned();
        if !seen.insert(key.clone()) {
            return Err(ArtifactError::Invalid(format!(
                "two files would be stored as `{key}` in the artifact"
            )));
        }
        let meta = fs::metadata(path).map_err(|e| {
            ArtifactError::Invalid(format!(
                "cannot upload `{}` in the artifact: {e}",
                path.display()
            ))
        })?;
        if !meta.is_file() {
            return Err(ArtifactError::Invalid(format!(
                "cannot upload `{}` in the artifact: it is not a regular file",
                path.display()
            )));
        }
        out.push(ZipEntry {
            name: key,
            path: path.clone(),
            size: meta.len(),
            stored: is_compressed(name),
        });
    }
    Ok(out)
}

/// Feeds the zip's bytes to the uploader in [`BLOCK_SIZE`] blocks.
struct BlockWriter {
    tx: tokio::sync::mpsc::Sender<Bytes>,
    buf: Vec<u8>,
}

impl BlockWriter {
    fn send(&mut self) -> io::Result<()> {
        let block = std::mem::replace(&mut self.buf, Vec::with_capacity(BLOCK_SIZE));
        self.tx
            .blocking_send(Bytes::from(block))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the artifact upload stopped"))
    }

    fn finish(mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            self.send()
        }
    }
}

impl Write for BlockWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = (BLOCK_SIZE - self.buf.len()).min(data.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == BLOCK_SIZE {
            self.send()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn zip_time(meta: &fs::Metadata) -> Option<zip::DateTime> {
    use chrono::{Datelike, Timelike};
    let t: chrono::DateTime<chrono::Utc> = meta.modified().ok()?.into();
    zip::DateTime::from_date_and_time(
        u16::try_from(t.year()).ok()?,
        t.month() as u8,
        t.day() as u8,
        t.hour() as u8,
        t.minute() as u8,
        t.second() as u8,
    )
    .ok()
}

pub(super) fn write_zip(
    entries: Vec<ZipEntry>,
    tx: tokio::sync::mpsc::Sender<Bytes>,
) -> Result<(), ArtifactError> {
    let out = BlockWriter {
        tx,
        buf: Vec::with_capacity(BLOCK_SIZE),
    };
    let mut zip = zip::ZipWriter::new_stream(out);
    let fail = |path: &Path, e: &dyn fmt::Display| {
        ArtifactError::Service(format!(
            "could not add `{}` to the artifact: {e}",
            path.display()
        ))
    };
    for e in &entries {
        let file = File::open(&e.path).map_err(|err| fail(&e.path, &err))?;
        let meta = file.metadata().map_err(|err| fail(&e.path, &err))?;
        let size = meta.len().max(e.size);
        let mut opts = zip::write::SimpleFileOptions::default()
            .compression_method(if e.stored {
                zip::CompressionMethod::Stored
            } else {
                zip::CompressionMethod::Deflated
            })
            .compression_level(if e.stored { None } else { Some(6) })
            .unix_permissions(0o644)
            // Deflate can grow incompressible data a little: leave a margin below 4 GiB.
            .large_file(size >= 0xF000_0000);
        if let Some(t) = zip_time(&meta) {
            opts = opts.last_modified_time(t);
        }
        zip.start_file(e.name.as_str(), opts)
            .map_err(|err| fail(&e.path, &err))?;
        let mut reader = BufReader::with_capacity(1 << 20, file);
        io::copy(&mut reader, &mut zip).map_err(|err| fail(&e.path, &err))?;
    }
    let inner = zip
        .finish()
        .map_err(|e| ArtifactError::Service(format!("could not finish the artifact zip: {e}")))?
        .into_inner();
    inner
        .finish()
        .map_err(|e| ArtifactError::Service(format!("could not finish the artifact zip: {e}")))
}
