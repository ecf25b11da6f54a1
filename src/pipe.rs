//! Bridges between async byte streams (Docker, child processes) and the synchronous
//! archive code (gzip, tar), through bounded channels.
//!
//! A bounded channel is the whole memory story: when the disk (or psql, or Docker) is slower
//! than the producer, `send` waits, the producer stops reading its socket, and the source
//! (pg_dump, the Docker daemon) blocks. Memory stays flat whatever the size of the data.
//!
//! A backup file is also read while it is written, by [`Follower`]s: blocking readers that
//! wait on the writer's progress, end with the file once the writer is done and fail if it
//! failed. One follows the file to verify it (the content checks and the SHA-256 of the
//! stored bytes); with a destination, another hands the bytes to the upload as the file
//! grows (see [`Follower`] for why two).

use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::archive::codec::{self, Codec, Encoder};
use crate::archive::crypt;
use crate::archive::verify::{verify_reader_as, Expect, Streamed};
use std::sync::{Condvar, Mutex};

/// Chunks in flight between a producer and a consumer (× up to 256 KiB each).
pub const DEPTH: usize = 32;

/// A backup file's way to a destination while it is written: the writer hands a
/// [`Follower`] of the file through it as soon as the file exists (dropped unsent when the
/// file could not be created).
pub type Ship = tokio::sync::oneshot::Sender<Follower>;

/// A backup file's writer: the number of uncompressed bytes it wrote, and what it verified
/// on the way.
pub type Writing<T> = JoinHandle<io::Result<(u64, T)>>;

/// Compresses everything received into `path` (`codec` at `level`), with verification
/// running while the file is written: a check-behind thread ([`Follower`]) reads the stored
/// file back a little behind the writer and runs the content checks (the codec's, the
/// dump's or the tar's) and the SHA-256 on exactly those bytes, in one pass. With `ship`, a
/// second follower of the file is handed out for the destination. Returns the uncompressed
/// byte count and that report (`None` when the thread could not start: verification then
/// reads the file itself), for [`crate::archive::verify::verify_written`] once the file is
/// complete (the caller fsyncs it in parallel). The work is done on the other core while
/// the source (pg_dump, Docker) is still producing the data.
///
/// Why the stored bytes and not the stream handed to the file: what is checked is then what
/// a restore will read, with one hash and no copy of the stream (checking the stream and
/// hashing the stored file again to prove the two equal cost a second SHA-256 pass and two
/// copies of every byte).
pub fn encode_to_file_checked(
    path: PathBuf,
    codec: Codec,
    level: u32,
    expect: Expect,
    ship: Option<Ship>,
) -> (mpsc::Sender<Bytes>, Writing<Option<Streamed>>) {
    let (tx, rx) = mpsc::channel::<Bytes>(DEPTH);
    let task = tokio::task::spawn_blocking(move || {
        let (file, progress) = create_followed(&path, ship)?;
        let behind = Follower::open(&path, progress).ok().and_then(|f| {
            std::thread::Builder::new()
                .name("check-behind".into())
                .spawn(move || verify_reader_as(f, expect, codec))
                .ok()
        });
        let file = BufWriter::with_capacity(1 << 20, file);
        let (total, file) = encode(rx, file, codec, level)?;
        file.into_inner().map_err(|e| e.into_error())?.finish()?;
        let checked = behind
            .and_then(|b| b.join().ok())
            .map(|report| Streamed { report });
        Ok((total, checked))
    });
    (tx, task)
}

/// What [`write_backup_file`] verified while it wrote: a clear file's checks of its stored
/// bytes (`None`: they did not run, and verification reads the file), or an encrypted
/// file's (checked on the compressed plaintext, hashed as stored ciphertext).
pub enum Written {
    Checked(Option<Streamed>),
    Sealed(crypt::Sealed),
}

/// A backup file: [`encode_to_file_checked`], or, with recipients, compress → (verify the
/// compressed plaintext as `expect`, in the same pass) → age → file ([`crypt::SealingWriter`]).
/// With `ship`, a [`Follower`] of the file (the ciphertext, for an encrypted one) is handed
/// out as soon as the file exists. Returns the number of uncompressed bytes and what was
/// verified on the way.
pub fn write_backup_file(
    path: PathBuf,
    codec: Codec,
    level: u32,
    expect: Expect,
    seal: Option<Arc<crypt::Recipients>>,
    ship: Option<Ship>,
) -> (mpsc::Sender<Bytes>, Writing<Written>) {
    let Some(recipients) = seal else {
        let (tx, task) = encode_to_file_checked(path, codec, level, expect, ship);
        let task = tokio::spawn(async move {
            task.await
                .map_err(io::Error::other)?
                .map(|(raw, c)| (raw, Written::Checked(c)))
        });
        return (tx, task);
    };
    let (tx, mut rx) = mpsc::channel::<Bytes>(DEPTH);
    let task = tokio::task::spawn_blocking(move || {
        // The ciphertext reaches the disk while it is written, as a clear file does; the
        // sealing writer hashes it on the way, so nothing reads it behind but the
        // destination's follower, if any.
        let (file, _) = create_followed(&path, ship)?;
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

/// Creates `path` for writing, with its [`Progress`]; with `ship`, hands out a [`Follower`]
/// of it (a follower that cannot be opened is not handed out: the destination then reports
/// the file as not sent, and the local file is written all the same).
fn create_followed(path: &Path, ship: Option<Ship>) -> io::Result<(EarlySync, Arc<Progress>)> {
    let file = File::create(path)?;
    let progress = Arc::new(Progress::default());
    if let Some(ship) = ship {
        if let Ok(f) = Follower::open(path, progress.clone()) {
            let _ = ship.send(f);
        }
    }
    Ok((EarlySync::new(file, progress.clone()), progress))
}

/// How a file's writer ended.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum End {
    #[default]
    Writing,
    /// Every byte is written: the file ends where it ends.
    Done,
    /// The writer stopped on an error (or was dropped unfinished): the file is not whole.
    Failed,
}

/// How much of a file its writer has written, and how it ended; followers wait on it.
#[derive(Default)]
struct Progress {
    state: Mutex<(u64, End)>,
    moved: Condvar,
}

impl Progress {
    fn wrote(&self, n: u64) {
        if let Ok(mut g) = self.state.lock() {
            g.0 += n;
        }
        self.moved.notify_all();
    }

    /// The first end counts (a writer dropped after it finished stays done).
    fn end(&self, end: End) {
        if let Ok(mut g) = self.state.lock() {
            if g.1 == End::Writing {
                g.1 = end;
            }
        }
        self.moved.notify_all();
    }

    /// Waits until more than `read` bytes are written or the writer ended.
    fn wait_past(&self, read: u64) -> io::Result<(u64, End)> {
        let gone = |_| io::Error::other("the writer of the file failed");
        let mut g = self.state.lock().map_err(gone)?;
        while g.0 <= read && g.1 == End::Writing {
            g = self.moved.wait(g).map_err(gone)?;
        }
        Ok(*g)
    }
}

/// A blocking reader of a file that is still being written: it reads what the writer has
/// written and waits for more; its end of file is the file's end once the writer is done
/// (anything beyond what was counted is read too, and then fails the checks that compare);
/// it fails if the writer failed, so that nothing downstream takes a partial file for a
/// whole one.
///
/// One mechanism serves both readers of a backup file: the check-behind of verification
/// ([`encode_to_file_checked`]) and the destination's upload. They are two followers, not
/// one reader that forwards: the check must finish with the file (the file's verification
/// waits for it), while an upload may lag behind or die; with its own follower
/// a slow or failed destination never holds up or fails the local backup, and the second
/// read costs little, the bytes having just been written (the page cache serves them).
pub struct Follower {
    file: File,
    progress: Arc<Progress>,
    read: u64,
}

impl Follower {
    fn open(path: &Path, progress: Arc<Progress>) -> io::Result<Follower> {
        Ok(Follower {
            file: File::open(path)?,
            progress,
            read: 0,
        })
    }
}

impl Read for Follower {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            let (written, end) = self.progress.wait_past(self.read)?;
            if end == End::Failed {
                return Err(io::Error::other(
                    "the file was not written whole: its writer failed",
                ));
            }
            // Up to what the writer wrote; once it is done, to the end of the file.
            let want = if end == End::Done {
                buf.len()
            } else {
                (written.saturating_sub(self.read) as usize).min(buf.len())
            };
            let n = match self.file.read(&mut buf[..want]) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if n == 0 && end != End::Done {
                return Err(io::Error::other(
                    "the file is shorter than what was written",
                ));
            }
            self.read += n as u64;
            return Ok(n);
        }
    }
}

/// Bytes per chunk a [`follow`]ed file is sent in, and chunks in flight.
const FOLLOW_CHUNK: usize = 1 << 20;
const FOLLOW_DEPTH: usize = 4;

/// A followed file as a stream of chunks (for an upload): a blocking thread reads it behind
/// its writer, and ends with the file, or with the follower's error (the writer failed:
/// the upload must then fail, not store a part of the file). It stops as soon as the
/// receiver is gone (the upload ended or died), without touching the file's writer. Memory:
/// [`FOLLOW_DEPTH`] chunks of [`FOLLOW_CHUNK`].
pub fn follow(mut f: Follower) -> mpsc::Receiver<io::Result<Bytes>> {
    let (tx, rx) = mpsc::channel::<io::Result<Bytes>>(FOLLOW_DEPTH);
    tokio::task::spawn_blocking(move || {
        let mut buf = vec![0u8; FOLLOW_CHUNK];
        loop {
            let item = match f.read(&mut buf) {
                Ok(0) => return,
                Ok(n) => Ok(Bytes::copy_from_slice(&buf[..n])),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => Err(e),
            };
            let failed = item.is_err();
            if tx.blocking_send(item).is_err() || failed {
                return;
            }
        }
    });
    rx
}

/// Bytes written between two early `fdatasync` requests.
const SYNC_EVERY: u64 = 32 << 20;

/// A file that reaches the disk while it is written: every [`SYNC_EVERY`] bytes a
/// background thread is asked to `fdatasync` what is there so far (a request is skipped
/// while the previous one runs), so the disk works while the data still arrives and the
/// caller's final `fsync` finds little left to write. A failed early sync fails the file
/// (it may be the only report of a write-back error). It also tells its followers how far
/// the file is written, and how the writing ended: done by [`EarlySync::finish`], failed
/// when dropped without it.
struct EarlySync {
    file: File,
    since: u64,
    progress: Arc<Progress>,
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
            progress,
            kick,
            worker,
        }
    }

    /// Every byte is written: the followers may read to the end while this waits for the
    /// background sync; its error, if any (the file then fails, and with it the backup:
    /// what a follower sent on is discarded with it).
    fn finish(mut self) -> io::Result<()> {
        self.kick = None;
        self.progress.end(End::Done);
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
        self.progress.wrote(n as u64);
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
        // After `finish` the file is done; dropped before, its writer failed.
        self.progress.end(End::Failed);
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
/// file is decrypted with `identity`. The task returns the stored file's (size, SHA-256),
/// read in the same pass, so that the caller can hold what it used to the manifest.
pub fn decode_file(
    path: &Path,
    codec: Codec,
    identity: Option<Arc<crypt::Identity>>,
) -> (mpsc::Receiver<Bytes>, JoinHandle<io::Result<(u64, String)>>) {
    let path = path.to_path_buf();
    let (tx, rx) = mpsc::channel::<Bytes>(DEPTH);
    let task = tokio::task::spawn_blocking(move || {
        // Decrypted on the way when the file is `….age`; the stored bytes are tallied.
        let tally = crate::archive::hash::Tally::new();
        let mut input = crypt::open_tallied(&path, identity.as_deref(), Some(&tally))?;
        let mut buf = vec![0u8; 256 * 1024];
        let whole = codec::restore(codec, &mut input, &mut buf, &mut |d| {
            tx.blocking_send(Bytes::copy_from_slice(d)).is_ok()
        })
        .map_err(io::Error::other)?;
        if !whole {
            return Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "the reader stopped",
            ));
        }
        // Whatever the decoder did not need is still part of the file.
        tally.finish(input)
    });
    (rx, task)
}

/// Largest chunk [`forward_batched`] sends (so at most [`DEPTH`] of them are in flight).
pub const BATCH: usize = 256 * 1024;

/// Forwards `stream` into `tx` in chunks of about [`BATCH`] bytes; returns whether the
/// receiver took everything (`false`: it stopped early, and reports why itself).
///
/// Why: the engine's HTTP body arrives in pieces of 4–64 KiB. Handed on one by one, every
/// piece costs a wake-up of the writer thread and of this task (measured: ~50,000 futex
/// calls for a 300 MiB volume, and the archive phase twice as long as the engine takes to
/// produce the tar). One copy into a batch is far cheaper than those hand-overs.
pub async fn forward_batched<E>(
    mut stream: impl futures_util::Stream<Item = Result<Bytes, E>> + Unpin,
    tx: &mpsc::Sender<Bytes>,
) -> Result<bool, E> {
    use futures_util::StreamExt;
    let mut batch = bytes::BytesMut::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk?;
        if batch.is_empty() && chunk.len() >= BATCH {
            if tx.send(chunk).await.is_err() {
                return Ok(false);
            }
            continue;
        }
        batch.extend_from_slice(&chunk);
        if batch.len() >= BATCH && tx.send(batch.split().freeze()).await.is_err() {
            return Ok(false);
        }
    }
    Ok(batch.is_empty() || tx.send(batch.freeze()).await.is_ok())
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
            let (tx, writer) = encode_to_file_checked(
                path.clone(),
                codec,
                codec.default_level(),
                Expect::SqlDump,
                None,
            );
            for piece in text.chunks(8191) {
                tx.send(Bytes::copy_from_slice(piece)).await.unwrap();
            }
            drop(tx);
            let (raw, streamed) = writer.await.unwrap().unwrap();
            assert_eq!(raw, text.len() as u64);
            let stored = streamed.clone().expect("checked behind the writer").report;
            let r = verify_written(&path, Expect::SqlDump, codec, 1, streamed);
            let again = verify_file_as(&path, Expect::SqlDump, codec, 1);
            assert!(r.verified(), "{codec}: {:?}", r.failure);
            assert_eq!(r.passed, again.passed);
            assert_eq!(r.sha256, again.sha256);
            let file = crate::archive::hash::sha256_file(&path).unwrap();
            assert_eq!((stored.size, stored.sha256), (file.0, Some(file.1)));
            assert!(r.passed.contains(&Check::SqlComplete));
            assert_eq!(r.sql.unwrap().tables.get("public.t"), Some(&300_000));
        }
    }

    /// A follower handed out for a destination reads exactly the stored file, following the
    /// writer (clear and encrypted alike); one of a writer that failed ends with an error, so
    /// an upload fed by it fails instead of storing part of a file.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_follower_reads_the_whole_file_or_fails_with_its_writer() {
        async fn followed(mut rx: mpsc::Receiver<io::Result<Bytes>>) -> io::Result<Vec<u8>> {
            let mut all = vec![];
            while let Some(chunk) = rx.recv().await {
                all.extend_from_slice(&chunk?);
            }
            Ok(all)
        }
        let dir = tempfile::tempdir().unwrap();
        let text = dump_text(&[("public.t", 200_000)], None);
        let public = age::x25519::Identity::generate().to_public().to_string();
        let recipients = crypt::Recipients::parse(&format!("{public}\n")).unwrap();
        for seal in [None, Some(Arc::new(recipients))] {
            let path = dir.path().join(format!("db.sql.gz{}", seal.is_some()));
            let (ship, follower) = tokio::sync::oneshot::channel();
            let (tx, writer) = write_backup_file(
                path.clone(),
                Codec::Gzip,
                1,
                Expect::SqlDump,
                seal.clone(),
                Some(ship),
            );
            let sent = tokio::spawn(async move { followed(follow(follower.await.unwrap())).await });
            for piece in text.chunks(65536) {
                tx.send(Bytes::copy_from_slice(piece)).await.unwrap();
            }
            drop(tx);
            writer.await.unwrap().unwrap();
            let sent = sent.await.unwrap().unwrap();
            assert_eq!(
                sent,
                std::fs::read(&path).unwrap(),
                "sealed: {}",
                seal.is_some()
            );
        }
        // A writer that fails (its input is not a dump): the follower fails too.
        let path = dir.path().join("bad.sql.gz");
        let progress = Arc::new(Progress::default());
        let file = File::create(&path).unwrap();
        let f = Follower::open(&path, progress.clone()).unwrap();
        let sent = tokio::spawn(async move { followed(follow(f)).await });
        {
            let mut w = EarlySync::new(file, progress);
            w.write_all(b"some bytes").unwrap();
            // dropped unfinished
        }
        let e = sent.await.unwrap().unwrap_err();
        assert!(e.to_string().contains("writer failed"), "{e}");
    }
}
