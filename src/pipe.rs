//! Bridges between async byte streams (Docker, child processes) and the synchronous
//! archive code (gzip, tar), through bounded channels.
//!
//! A bounded channel is the whole memory story: when the disk (or psql, or Docker) is slower
//! than the producer, `send` waits, the producer stops reading its socket, and the source
//! (pg_dump, the Docker daemon) blocks. Memory stays flat whatever the size of the data.

use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::archive::codec::{self, Codec, Encoder};
use crate::archive::crypt;

/// Chunks in flight between a producer and a consumer (× up to 256 KiB each).
pub const DEPTH: usize = 32;

/// Compresses everything received into `path` (`codec` at `level`) and returns the number
/// of uncompressed bytes. The file is complete when this returns `Ok`; the caller fsyncs it
/// (in parallel with reading it back) before recording it.
pub fn encode_to_file(
    path: PathBuf,
    codec: Codec,
    level: u32,
) -> (mpsc::Sender<Bytes>, JoinHandle<io::Result<u64>>) {
    let (tx, mut rx) = mpsc::channel::<Bytes>(DEPTH);
    let task = tokio::task::spawn_blocking(move || {
        let file = File::create(&path)?;
        let mut gz = Encoder::new(BufWriter::with_capacity(1 << 20, file), codec, level)?;
        let mut total = 0u64;
        while let Some(chunk) = rx.blocking_recv() {
            gz.write_all(&chunk)?;
            total += chunk.len() as u64;
        }
        gz.finish()?.into_inner().map_err(|e| e.into_error())?;
        Ok(total)
    });
    (tx, task)
}

/// What [`write_backup_file`]'s task returns: uncompressed bytes, and the sealed file's facts.
pub type Written = JoinHandle<io::Result<(u64, Option<crypt::Sealed>)>>;

/// [`encode_to_file`], encrypted to `seal.1` when it is given: compress → (verify the
/// compressed plaintext as `seal.0`, in the same pass) → age → file. Returns the number of
/// uncompressed bytes and, when sealed, what was written ([`crypt::Sealed`]).
pub fn write_backup_file(
    path: PathBuf,
    codec: Codec,
    level: u32,
    seal: Option<(crate::archive::verify::Expect, Arc<crypt::Recipients>)>,
) -> (mpsc::Sender<Bytes>, Written) {
    let Some((expect, recipients)) = seal else {
        let (tx, task) = encode_to_file(path, codec, level);
        let task =
            tokio::spawn(
                async move { task.await.map_err(io::Error::other)?.map(|raw| (raw, None)) },
            );
        return (tx, task);
    };
    let (tx, mut rx) = mpsc::channel::<Bytes>(DEPTH);
    let task = tokio::task::spawn_blocking(move || {
        let file = File::create(&path)?;
        let mut w = crypt::SealingWriter::new(
            BufWriter::with_capacity(1 << 20, file),
            codec,
            level,
            expect,
            &recipients,
        )?;
        while let Some(chunk) = rx.blocking_recv() {
            w.write_all(&chunk)?;
        }
        let (file, sealed) = w.finish()?;
        file.into_inner().map_err(|e| e.into_error())?;
        Ok((sealed.raw, Some(sealed)))
    });
    (tx, task)
}

/// Streams the decoded content of a file written with `codec`, chunk by chunk.
pub fn decode_file(
    path: &Path,
    codec: Codec,
) -> (mpsc::Receiver<Bytes>, JoinHandle<io::Result<()>>) {
    let path = path.to_path_buf();
    let (tx, rx) = mpsc::channel::<Bytes>(DEPTH);
    let task = tokio::task::spawn_blocking(move || {
        // Decrypted on the way when the file is `….age`.
        let mut gz = codec::reader(codec, crypt::open(&path)?)?;
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let n = gz.read(&mut buf)?;
            if n == 0 {
                return Ok(());
            }
            if tx.blocking_send(Bytes::copy_from_slice(&buf[..n])).is_err() {
                return Err(io::Error::new(
                    io::ErrorKind::BrokenPipe,
                    "the reader stopped",
                ));
            }
        }
    });
    (rx, task)
}

/// A channel receiver as a `Stream` of `io::Result<Bytes>` (for HTTP bodies).
pub fn into_stream(
    rx: mpsc::Receiver<Bytes>,
) -> impl futures_util::Stream<Item = Result<Bytes, io::Error>> + Send + 'static {
    futures_util::stream::unfold(
        rx,
        |mut rx| async move { rx.recv().await.map(|b| (Ok(b), rx)) },
    )
}

/// Archives a host folder as tar into `tx` (entries relative to the folder; links kept as
/// links; ownership, modes and times kept).
pub fn tar_folder(dir: PathBuf) -> (mpsc::Receiver<Bytes>, JoinHandle<io::Result<()>>) {
    let (tx, rx) = mpsc::channel::<Bytes>(DEPTH);
    let task = tokio::task::spawn_blocking(move || {
        struct ChanWriter(mpsc::Sender<Bytes>, Vec<u8>);
        impl Write for ChanWriter {
            fn write(&mut self, b: &[u8]) -> io::Result<usize> {
                self.1.extend_from_slice(b);
                if self.1.len() >= 256 * 1024 {
                    self.flush()?;
                }
                Ok(b.len())
            }
            fn flush(&mut self) -> io::Result<()> {
                if !self.1.is_empty() {
                    let chunk = Bytes::from(std::mem::take(&mut self.1));
                    self.0.blocking_send(chunk).map_err(|_| {
                        io::Error::new(io::ErrorKind::BrokenPipe, "the writer stopped")
                    })?;
                }
                Ok(())
            }
        }
        let mut b = tar::Builder::new(ChanWriter(tx, Vec::new()));
        b.follow_symlinks(false);
        b.mode(tar::HeaderMode::Complete);
        let mut seen = std::collections::HashMap::new();
        append_tree(&mut b, &dir, Path::new("."), &mut seen)?;
        let mut w = b.into_inner()?;
        w.flush()
    });
    (rx, task)
}

/// Appends `root/rel` and, for a folder, everything below it, in name order. Links stay
/// links; a file with several names is stored once and its other names as hard-link
/// entries (as GNU tar and Docker do), so a restore gives back one file, not copies.
fn append_tree<W: Write>(
    b: &mut tar::Builder<W>,
    root: &Path,
    rel: &Path,
    seen: &mut std::collections::HashMap<(u64, u64), PathBuf>,
) -> io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let path = root.join(rel);
    let md = std::fs::symlink_metadata(&path)?;
    if md.is_file() && md.nlink() > 1 {
        let key = (md.dev(), md.ino());
        if let Some(first) = seen.get(&key) {
            let mut h = tar::Header::new_gnu();
            h.set_metadata_in_mode(&md, tar::HeaderMode::Complete);
            h.set_entry_type(tar::EntryType::Link);
            h.set_size(0);
            return b.append_link(&mut h, rel, first);
        }
        seen.insert(key, rel.to_path_buf());
    }
    b.append_path_with_name(&path, rel)?;
    if md.is_dir() {
        let mut names: Vec<_> = std::fs::read_dir(&path)?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<io::Result<_>>()?;
        names.sort();
        for n in names {
            // Children of the root are `name`, not `./name`: link targets use the same form.
            let child = if rel == Path::new(".") {
                PathBuf::from(n)
            } else {
                rel.join(n)
            };
            append_tree(b, root, &child, seen)?;
        }
    }
    Ok(())
}
