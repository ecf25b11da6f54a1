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
use crate::archive::verify::{Expect, StreamCheck, Streamed, Tee};
use std::sync::{Condvar, Mutex};

/// Chunks in flight between a producer and a consumer (× up to 256 KiB each).
pub const DEPTH: usize = 32;

/// Compresses everything received into `path` (`codec` at `level`), with verification
/// running while the file is written: the content checks decode the bytes as they go to
/// the file ([`StreamCheck`]), and a read-behind thread reads the stored file back and
/// hashes it a little behind the writer. Returns the uncompressed byte count and both
/// results, for [`crate::archive::verify::verify_written`] once the file is complete
/// (the caller fsyncs it in parallel). The work is done on the other core while the source
/// (pg_dump, Docker) is still producing the data.
pub fn encode_to_file_checked(
    path: PathBuf,
    codec: Codec,
    level: u32,
    expect: Expect,
) -> (mpsc::Sender<Bytes>, JoinHandle<io::Result<(u64, Streamed)>>) {
    let (tx, rx) = mpsc::channel::<Bytes>(DEPTH);
    let task = tokio::task::spawn_blocking(move || {
        let file = File::create(&path)?;
        let progress = Arc::new(Progress::default());
        let behind = {
            let (path, progress) = (path.clone(), progress.clone());
            std::thread::Builder::new()
                .name("read-behind".into())
                .spawn(move || read_behind(&path, &progress))
                .ok()
        };
        let file = BufWriter::with_capacity(1 << 20, EarlySync::new(file, progress));
        let tee = Tee(file, StreamCheck::new(expect, codec)?);
        let (total, Tee(file, check)) = encode(rx, tee, codec, level)?;
        file.into_inner().map_err(|e| e.into_error())?.finish()?;
        let report = check.finish();
        // Without it (it failed to start or to read), verification hashes the file again.
        let stored = behind.and_then(|b| b.join().ok()).and_then(Result::ok);
        Ok((total, Streamed { report, stored }))
    });
    (tx, task)
}

/// What [`write_backup_file`] verified while it wrote: a clear file's streamed checks, or an
/// encrypted file's (checked on the compressed plaintext, hashed as stored ciphertext).
pub enum Written {
    Checked(Streamed),
    Sealed(crypt::Sealed),
}

/// A backup file: [`encode_to_file_checked`], or, with recipients, compress → (verify the
/// compressed plaintext as `expect`, in the same pass) → age → file ([`crypt::SealingWriter`]).
/// Returns the number of uncompressed bytes and what was verified on the way.
pub fn write_backup_file(
    path: PathBuf,
    codec: Codec,
    level: u32,
    expect: Expect,
    seal: Option<Arc<crypt::Recipients>>,
) -> (mpsc::Sender<Bytes>, JoinHandle<io::Result<(u64, Written)>>) {
    let Some(recipients) = seal else {
        let (tx, task) = encode_to_file_checked(path, codec, level, expect);
        let task = tokio::spawn(async move {
            task.await
                .map_err(io::Error::other)?
                .map(|(raw, c)| (raw, Written::Checked(c)))
        });
        return (tx, task);
    };
    let (tx, mut rx) = mpsc::channel::<Bytes>(DEPTH);
    let task = tokio::task::spawn_blocking(move || {
        let file = File::create(&path)?;
        // The ciphertext reaches the disk while it is written, as a clear file does; the
        // sealing writer hashes it on the way, so nothing reads it behind.
        let file = EarlySync::new(file, Arc::new(Progress::default()));
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
        file.into_inner().map_err(|e| e.into_error())?.finish()?;
        Ok((sealed.raw, Written::Sealed(sealed)))
    });
    (tx, task)
}

/// How much of the file the writer has written, and whether it is done.
#[derive(Default)]
struct Progress {
    state: Mutex<(u64, bool)>,
    moved: Condvar,
}

impl Progress {
    fn update(&self, add: u64, done: bool) {
        if let Ok(mut g) = self.state.lock() {
            g.0 += add;
            g.1 |= done;
        }
        self.moved.notify_all();
    }
}

/// Reads `path` back as the writer writes it and returns its (size, SHA-256) once the
/// writer is done and the end of the file is reached.
fn read_behind(path: &Path, progress: &Progress) -> io::Result<(u64, String)> {
    let mut file = crate::archive::hash::HashingReader::new(File::open(path)?);
    let mut buf = vec![0u8; 1 << 20];
    let mut read = 0u64;
    loop {
        let (written, done) = {
            let mut g = progress
                .state
                .lock()
                .map_err(|_| io::Error::other("writer failed"))?;
            while g.0 <= read && !g.1 {
                g = progress
                    .moved
                    .wait(g)
                    .map_err(|_| io::Error::other("writer failed"))?;
            }
            *g
        };
        // Up to what the writer wrote; once it is done, to the end of the file whatever
        // its length (anything else in the file is hashed too, and then fails the check).
        let want = if done {
            buf.len()
        } else {
            ((written - read) as usize).min(buf.len())
        };
        let n = match file.read(&mut buf[..want]) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if n == 0 {
            if done {
                let (_, size, sha) = file.finish();
                return Ok((size, sha));
            }
            return Err(io::Error::other(
                "the file is shorter than what was written",
            ));
        }
        read += n as u64;
    }
}

/// Bytes written between two early `fdatasync` requests.
const SYNC_EVERY: u64 = 32 << 20;

/// A file that reaches the disk while it is written: every [`SYNC_EVERY`] bytes a
/// background thread is asked to `fdatasync` what is there so far (a request is skipped
/// while the previous one runs), so the disk works while the data still arrives and the
/// caller's final `fsync` finds little left to write. A failed early sync fails the file
/// (it may be the only report of a write-back error). It also tells the read-behind
/// thread how far the file is written.
struct EarlySync {
    file: File,
    since: u64,
    progress: Option<Arc<Progress>>,
    kick: Option<std::sync::mpsc::SyncSender<()>>,
    worker: Option<std::thread::JoinHandle<io::Result<()>>>,
}

impl EarlySync {
    fn new(file: File, progress: Arc<Progress>) -> Self {
        let (kick, worker) = match file.try_clone() {
            Ok(f) => {
                let (tx, rx) = std::sync::mpsc::sync_channel::<()>(1);
                let worker = std::thread::Builder::new()
                    .name("early-sync".into())
                    .spawn(move || {
                        while rx.recv().is_ok() {
                            f.sync_data()?;
                        }
                        Ok(())
                    })
                    .ok();
                (worker.is_some().then_some(tx), worker)
            }
            Err(_) => (None, None), // no early sync: the final fsync does it all
        };
        EarlySync {
            file,
            since: 0,
            progress: Some(progress),
            kick,
            worker,
        }
    }

    /// Waits for the background sync; its error, if any.
    fn finish(mut self) -> io::Result<()> {
        self.kick = None;
        if let Some(p) = self.progress.take() {
            p.update(0, true);
        }
        match self.worker.take().map(|w| w.join()) {
            Some(Ok(r)) => r,
            Some(Err(_)) => Err(io::Error::other("the early-sync thread failed")),
            None => Ok(()),
        }
    }
}

impl Write for EarlySync {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.file.write(buf)?;
        self.since += n as u64;
        if let Some(p) = &self.progress {
            p.update(n as u64, false);
        }
        if self.since >= SYNC_EVERY {
            self.since = 0;
            if let Some(k) = &self.kick {
                if let Err(std::sync::mpsc::TrySendError::Disconnected(())) = k.try_send(()) {
                    // The thread stopped on an error: report it now.
                    self.kick = None;
                    if let Some(Ok(Err(e))) = self.worker.take().map(|w| w.join()) {
                        return Err(e);
                    }
                }
            }
        }
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

impl Drop for EarlySync {
    fn drop(&mut self) {
        self.kick = None;
        if let Some(p) = self.progress.take() {
            p.update(0, true);
        }
        if let Some(w) = self.worker.take() {
            let _ = w.join();
        }
    }
}

/// Compresses every chunk received into `out`; returns the uncompressed byte count and
/// `out`, flushed.
fn encode<W: Write>(
    mut rx: mpsc::Receiver<Bytes>,
    out: W,
    codec: Codec,
    level: u32,
) -> io::Result<(u64, W)> {
    let mut enc = Encoder::new(out, codec, level)?;
    let mut total = 0u64;
    while let Some(chunk) = rx.blocking_recv() {
        enc.write_all(&chunk)?;
        total += chunk.len() as u64;
    }
    Ok((total, enc.finish()?))
}

/// Streams the decoded content of a file written with `codec`, chunk by chunk; a `….age`
/// file is decrypted with `identity`.
pub fn decode_file(
    path: &Path,
    codec: Codec,
    identity: Option<Arc<crypt::Identity>>,
) -> (mpsc::Receiver<Bytes>, JoinHandle<io::Result<()>>) {
    let path = path.to_path_buf();
    let (tx, rx) = mpsc::channel::<Bytes>(DEPTH);
    let task = tokio::task::spawn_blocking(move || {
        // Decrypted on the way when the file is `….age`.
        let mut gz = codec::reader(codec, crypt::open(&path, identity.as_deref())?)?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::archive::testutil::dump_text;
    use crate::archive::verify::{verify_file_as, verify_written, Check};

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_file_checked_while_written_verifies_like_one_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let text = dump_text(&[("public.t", 300_000), ("public.u", 5)], None);
        for codec in Codec::ALL {
            let path = dir.path().join(format!("db.sql{}", codec.ext()));
            let (tx, writer) =
                encode_to_file_checked(path.clone(), codec, codec.default_level(), Expect::SqlDump);
            for piece in text.chunks(8191) {
                tx.send(Bytes::copy_from_slice(piece)).await.unwrap();
            }
            drop(tx);
            let (raw, streamed) = writer.await.unwrap().unwrap();
            assert_eq!(raw, text.len() as u64);
            let stored = streamed
                .stored
                .clone()
                .expect("read back behind the writer");
            let r = verify_written(&path, Expect::SqlDump, codec, 1, streamed);
            let again = verify_file_as(&path, Expect::SqlDump, codec, 1);
            assert!(r.verified(), "{codec}: {:?}", r.failure);
            assert_eq!(r.passed, again.passed);
            assert_eq!(r.sha256, again.sha256);
            assert_eq!(stored, crate::archive::hash::sha256_file(&path).unwrap());
            assert!(r.passed.contains(&Check::SqlComplete));
            assert_eq!(r.sql.unwrap().tables.get("public.t"), Some(&300_000));
        }
    }
}
