//! A backup's way to its durable destination (the `destination` input), and back.
//!
//! Backup: the files are produced and verified locally exactly as without a destination,
//! and each is sent to the store while it is written ([`Shipping`]): its upload follows the
//! file as it grows, and once the file is complete its size and SHA-256 are read back *from
//! the store* (`verify-destination: full`; `size` checks sizes only) while the next file is
//! made. The manifest is written last: it is the commit marker, so a folder without one is
//! incomplete and never used. If the destination fails, the local backup still runs to its
//! end, the objects this run stored are removed (best effort), the step fails (exit 3) and
//! the local copy is kept and named in the error. Overlapping the upload with the making of
//! the files is what keeps a backup to a destination close to a local one in time: only the
//! last file's tail and read-back come after the local backup.
//!
//! Rollback and info: backups are found by listing the destination's `pre-deployment-*`
//! folders and reading their manifests; a backup is downloaded into a local staging folder,
//! where rollback checks every SHA-256 before it restores anything.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::{Context as _, Result};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use super::Context;
use crate::actions::commands::Workflow;
use crate::actions::summary::{self as md, human_size};
use crate::cli::DestinationArgs;
use crate::manifest::{Manifest, DIR_PREFIX, FILE_NAME};
use crate::pipe;
use crate::retention::{decide, Candidate, Policy, Verdict};
use crate::store::lease::Lease;
use crate::store::{s3, Destination, Store};

/// Parses and opens the `destination` input, and proves it answers (one listing) before
/// anything is made. `None` without a destination. `volume://` and `host://` connect to the
/// Docker engine with the run's transport settings.
pub async fn open(ctx: &mut Context, args: &DestinationArgs) -> Result<Option<Store>> {
    let Some(url) = args.url() else {
        return Ok(None);
    };
    let dest = Destination::parse(url)?;
    // The credentials the S3 client reads from the environment are secrets.
    for k in ["AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"] {
        if let Ok(v) = std::env::var(k) {
            ctx.wf.mask(&v);
        }
    }
    let opts = s3::Options {
        endpoint: args.s3_endpoint.clone(),
        region: args.s3_region.clone(),
        path_style: args.s3_path_style,
    };
    let engine = if dest.needs_engine() {
        Some(ctx.connect_engine().await?)
    } else {
        None
    };
    let store = dest.open(&opts, engine.as_ref()).await?;
    store.check().await.with_context(|| {
        format!(
            "the destination {} cannot be used, so nothing was backed up or changed",
            store.url()
        )
    })?;
    Ok(Some(store))
}

/// How long a lease is valid without a renewal, and how long to wait for another run's.
const LEASE_TTL: std::time::Duration = std::time::Duration::from_secs(120);
const LEASE_WAIT: std::time::Duration = std::time::Duration::from_secs(900);

/// Takes the destination's lease (see [`crate::store::lease`]) for this run.
pub async fn lock(ctx: &Context, store: &Store) -> Result<Lease> {
    let holder = match (&ctx.runtime.repository, &ctx.runtime.run_id) {
        (Some(repo), Some(id)) => format!("run {id} of {repo}"),
        _ => format!(
            "pid {} on {}",
            std::process::id(),
            std::fs::read_to_string("/etc/hostname")
                .map(|h| h.trim().to_string())
                .unwrap_or_else(|_| "this host".into())
        ),
    };
    Ok(Lease::acquire(store, &holder, LEASE_TTL, LEASE_WAIT, |m| ctx.wf.log(m)).await?)
}

/// Where one backup went.
pub struct Stored {
    /// The folder's URL (`s3://bucket/prefix/pre-deployment-…`).
    pub url: String,
    pub db_url: Option<String>,
    pub volume_urls: Vec<String>,
    pub seconds: f64,
    pub bytes: u64,
}

/// Uploads at once (each holds up to [`crate::store::CHUNK`] × ([`crate::store::PARTS`] + 1)
/// in memory) and read-backs at once (each up to [`crate::store::RANGE`] ×
/// [`crate::store::RANGES`]): one of each, so the upload of a file overlaps the read-back of
/// the one before it while memory stays flat whatever the number and size of the files.
const UPLOADS: usize = 1;
const READ_BACKS: usize = 1;

/// A backup on its way to the destination while it is made (`backup`, and `rollback`'s
/// safety backup): one per run, created before [`super::backup::take`] and handed to it.
///
/// Each file is sent while it is written: [`Shipping::ship`] hands the file's writer a
/// channel for a [`pipe::Follower`] of the file, and a task uploads what the follower reads
/// (multipart, flat memory) as the file grows; when the file is complete the upload is
/// completed, and its size and SHA-256 are read back *from the store* (`verify-destination:
/// full`; `size` checks the size only) while the next file is produced.
/// [`Shipping::commit`] then waits for every file, holds each to the size and SHA-256 the
/// local verification recorded in the manifest, checks the lease, and writes the manifest
/// last: it is the commit marker, so a folder without one is incomplete and never used.
///
/// A destination failure never stops or spoils the local backup: the files' writers do
/// not wait for their uploads (each reads the file with its own follower), the first failure
/// stops the other uploads (each aborts its multipart upload) and no further file is sent;
/// the local backup goes on to its end. Then [`Shipping::commit`] fails (exit 3), naming
/// the local copy, which is kept. Any failure, or [`Shipping::discard`] when the local
/// backup failed, removes every object this run stored (the manifest first) and aborts what
/// is left of its multipart uploads, as far as the destination answers.
pub struct Shipping {
    store: Store,
    verify_full: bool,
    /// The backup's folder in the destination (the final name, not the work folder's).
    folder: Mutex<String>,
    shipments: Mutex<Vec<Shipment>>,
    /// Set on the first failure, or by [`Shipping::discard`]: every upload stops.
    cancel: CancellationToken,
    failed: Arc<AtomicBool>,
    uploads: Arc<Semaphore>,
    read_backs: Arc<Semaphore>,
    started: Instant,
}

/// One file on its way.
struct Shipment {
    /// The file's name, as the manifest records it.
    file: String,
    key: String,
    task: tokio::task::JoinHandle<Result<Shipped, Failed>>,
}

/// A file stored and read back.
struct Shipped {
    bytes: u64,
    /// What the destination holds (`None`: no object there).
    size: Option<u64>,
    /// `None` with `verify-destination: size`.
    sha256: Option<String>,
    sent_seconds: f64,
    read_seconds: f64,
}

/// A shipment's failure; `first` when it was the run's first (the others were stopped by it).
struct Failed {
    error: anyhow::Error,
    first: bool,
}

impl Shipping {
    pub fn new(store: &Store, verify_full: bool) -> Shipping {
        Shipping {
            store: store.clone(),
            verify_full,
            folder: Mutex::new(String::new()),
            shipments: Mutex::new(vec![]),
            cancel: CancellationToken::new(),
            failed: Arc::new(AtomicBool::new(false)),
            uploads: Arc::new(Semaphore::new(UPLOADS)),
            read_backs: Arc::new(Semaphore::new(READ_BACKS)),
            started: Instant::now(),
        }
    }

    /// The backup's folder name (`pre-deployment-TS`): the files' keys are `{folder}/{file}`.
    pub fn begin(&self, folder: &str) {
        if let Ok(mut f) = self.folder.lock() {
            *f = folder.to_string();
        }
    }

    fn folder(&self) -> String {
        self.folder.lock().map(|f| f.clone()).unwrap_or_default()
    }

    /// Starts sending the backup file `path` (about to be written): the channel for its
    /// writer's follower. `None` once the destination failed (nothing more is sent; the
    /// local backup goes on).
    pub fn ship(&self, path: &Path) -> Option<pipe::Ship> {
        let file = path.file_name()?.to_string_lossy().to_string();
        if self.cancel.is_cancelled() {
            return None;
        }
        let key = format!("{}/{file}", self.folder());
        let (tx, rx) = tokio::sync::oneshot::channel();
        let task = {
            let (store, key, file) = (self.store.clone(), key.clone(), file.clone());
            let (cancel, failed) = (self.cancel.clone(), self.failed.clone());
            let (uploads, read_backs) = (self.uploads.clone(), self.read_backs.clone());
            let full = self.verify_full;
            tokio::spawn(async move {
                let r = ship_one(
                    &store,
                    &key,
                    &file,
                    rx,
                    &cancel,
                    (uploads, read_backs),
                    full,
                )
                .await;
                r.map_err(|error| {
                    // The others stop: this backup cannot be committed there any more.
                    cancel.cancel();
                    Failed {
                        error,
                        first: !failed.swap(true, Ordering::SeqCst),
                    }
                })
            })
        };
        if let Ok(mut s) = self.shipments.lock() {
            s.push(Shipment { file, key, task });
        }
        Some(tx)
    }

    /// Waits for every shipment; their results, in the order the files were made.
    async fn settle(&self) -> Vec<(Shipment, Result<Shipped, Failed>)> {
        let all = self
            .shipments
            .lock()
            .map(|mut s| std::mem::take(&mut *s))
            .unwrap_or_default();
        let mut out = vec![];
        for mut s in all {
            let r = (&mut s.task).await.unwrap_or_else(|e| {
                Err(Failed {
                    error: anyhow::anyhow!("sending {} failed: {e}", s.file),
                    first: false,
                })
            });
            out.push((s, r));
        }
        out
    }

    /// Removes what this run stored (the manifest first: a half-removed folder never looks
    /// like a backup) and aborts what is left of its multipart uploads. Best effort: what
    /// the destination does not answer for stays, and retention clears it once stale.
    async fn clean(&self, keys: &[String]) {
        let folder = self.folder();
        let _ = self.store.remove(&format!("{folder}/{FILE_NAME}")).await;
        for key in keys.iter().rev() {
            let _ = self.store.remove(key).await;
        }
        if !folder.is_empty() {
            if let Ok(left) = self.store.incomplete_uploads(&format!("{folder}/")).await {
                for u in left {
                    let _ = self.store.abort_upload(&u).await;
                }
            }
        }
    }

    /// The local backup failed (nothing was committed): every upload stops, and what this
    /// run stored in the destination is removed.
    pub async fn discard(self) {
        self.cancel.cancel();
        let settled = self.settle().await;
        let keys: Vec<String> = settled.into_iter().map(|(s, _)| s.key).collect();
        if !keys.is_empty() {
            self.clean(&keys).await;
        }
    }

    /// Commits the verified local backup in `dir` (its manifest `m`) to the destination:
    /// waits for every file's shipment, holds each object to the size and SHA-256 that
    /// `m` records, checks the lease, records the destination in the manifest (also the
    /// local one) and stores the manifest last. On failure what this run stored is removed
    /// and the kept local copy is named.
    pub async fn commit(
        self,
        dir: &Path,
        m: &mut Manifest,
        lease: Option<&Lease>,
        wf: &Workflow,
    ) -> Result<Stored> {
        let store = &self.store;
        let folder = self.folder();
        let settled = self.settle().await;
        let mut keys: Vec<String> = settled.iter().map(|(s, _)| s.key.clone()).collect();
        let result = async {
            let mut shipped = std::collections::HashMap::new();
            let mut failures = vec![];
            for (s, r) in settled {
                match r {
                    Ok(done) => {
                        shipped.insert(s.file, (s.key, done));
                    }
                    Err(f) => failures.push(f),
                }
            }
            // The failure that stopped the others says what happened.
            if !failures.is_empty() {
                let i = failures.iter().position(|f| f.first).unwrap_or(0);
                return Err(failures.swap_remove(i).error);
            }
            let mut bytes = 0;
            for f in m.files() {
                let Some((key, done)) = shipped.remove(&f.path) else {
                    anyhow::bail!(
                        "{} was not sent to the destination",
                        store.url_of(&format!("{folder}/{}", f.path))
                    );
                };
                if done.bytes != f.size || done.size != Some(f.size) {
                    anyhow::bail!(
                        "{} holds {} bytes after the upload, the backup file has {}: the destination did not store it whole",
                        store.url_of(&key),
                        done.size.map(|s| s.to_string()).unwrap_or_else(|| "no".into()),
                        f.size
                    );
                }
                if let Some(sha) = done.sha256.as_ref().filter(|s| **s != f.sha256) {
                    anyhow::bail!(
                        "{} reads back with SHA-256 {sha}, the backup file has {}: the destination altered it",
                        store.url_of(&key),
                        f.sha256
                    );
                }
                bytes += done.bytes;
                wf.log(&format!(
                    "Stored {} ({}): sent in {:.1} s while it was written, {} read back in {:.1} s",
                    store.url_of(&key),
                    human_size(done.bytes),
                    done.sent_seconds,
                    if self.verify_full {
                        "size and SHA-256"
                    } else {
                        "size"
                    },
                    done.read_seconds
                ));
            }
            if let Some(extra) = shipped.keys().next() {
                anyhow::bail!(
                    "{} was sent but is not part of the backup",
                    store.url_of(&format!("{folder}/{extra}"))
                );
            }
            if lease.is_some_and(|l| !l.held()) {
                anyhow::bail!(
                    "the lock on {} could not be renewed (another run may have taken it over): not committing this backup there",
                    store.url()
                );
            }
            // The commit marker, last.
            m.destination = Some(store.url_of(&folder));
            m.write(dir)
                .with_context(|| format!("cannot write the manifest into {}", dir.display()))?;
            let key = format!("{folder}/{FILE_NAME}");
            keys.push(key.clone());
            store.save_bytes(&key, m.to_yaml().into_bytes()).await?;
            Ok::<u64, anyhow::Error>(bytes)
        }
        .await;
        match result {
            Ok(bytes) => Ok(Stored {
                url: store.url_of(&folder),
                db_url: m
                    .database
                    .as_ref()
                    .map(|d| store.url_of(&format!("{folder}/{}", d.file.path))),
                volume_urls: m
                    .volumes
                    .iter()
                    .map(|v| store.url_of(&format!("{folder}/{}", v.file.path)))
                    .collect(),
                seconds: self.started.elapsed().as_secs_f64(),
                bytes,
            }),
            Err(e) => {
                self.clean(&keys).await;
                if m.destination.take().is_some() {
                    let _ = m.write(dir);
                }
                Err(e.context(format!(
                    "the backup could not be stored in {}; the verified local copy is kept in {}",
                    store.url_of(&folder),
                    dir.display()
                )))
            }
        }
    }
}

/// Sends one file: waits for its follower (the file exists), uploads what it reads as the
/// file grows (stopped by `cancel`: the upload then aborts itself), and reads the object
/// back.
async fn ship_one(
    store: &Store,
    key: &str,
    file: &str,
    follower: tokio::sync::oneshot::Receiver<pipe::Follower>,
    cancel: &CancellationToken,
    (uploads, read_backs): (Arc<Semaphore>, Arc<Semaphore>),
    verify_full: bool,
) -> Result<Shipped> {
    let stopped = || {
        anyhow::anyhow!(
            "sending {} stopped: another file of this backup failed to reach the destination",
            store.url_of(key)
        )
    };
    let follower = follower
        .await
        .map_err(|_| anyhow::anyhow!("{file} could not be created, so it was not sent"))?;
    let permit = tokio::select! {
        p = uploads.acquire_owned() => p?,
        _ = cancel.cancelled() => return Err(stopped()),
    };
    let t = Instant::now();
    // The bytes as the follower reads them, until the file ends or the shipping is
    // cancelled: then the reader fails, and `save` aborts the multipart upload.
    let data = pipe::follow(follower);
    let stream = futures_util::stream::unfold(
        (data, cancel.clone(), false),
        |(mut data, cancel, ended)| async move {
            if ended {
                return None;
            }
            tokio::select! {
                biased;
                _ = cancel.cancelled() => Some((
                    Err(std::io::Error::other("another file of this backup failed to reach the destination")),
                    (data, cancel, true),
                )),
                item = data.recv() => item.map(|i| (i, (data, cancel, false))),
            }
        },
    );
    let bytes = store
        .save(key, tokio_util::io::StreamReader::new(Box::pin(stream)))
        .await?;
    drop(permit);
    let sent_seconds = t.elapsed().as_secs_f64();
    let permit = tokio::select! {
        p = read_backs.acquire_owned() => p?,
        _ = cancel.cancelled() => return Err(stopped()),
    };
    let t = Instant::now();
    let (size, sha256) = if verify_full {
        let (s, h) = store.digest(key).await?;
        (Some(s), Some(h))
    } else {
        (store.size(key).await?, None)
    };
    drop(permit);
    Ok(Shipped {
        bytes,
        size,
        sha256,
        sent_seconds,
        read_seconds: t.elapsed().as_secs_f64(),
    })
}

/// Sets the destination outputs and says in the summary where the backup lives.
pub fn report(ctx: &mut Context, s: &Stored, verify_full: bool) {
    ctx.outputs.set("destination-url", s.url.clone());
    ctx.outputs
        .set("db-backup-url", s.db_url.clone().unwrap_or_default());
    ctx.outputs
        .set("volume-backup-urls", s.volume_urls.join("\n"));
    ctx.summary.heading(3, "Destination").paragraph(&format!(
        "Stored in {} ({} in {:.1} s); every object's {} read back from the destination and matched; the manifest was written last.",
        md::code(&s.url),
        human_size(s.bytes),
        s.seconds,
        if verify_full { "size and SHA-256 were" } else { "size was" }
    ));
}

/// In Actions without a destination: the summary says the backup will not outlive the
/// workspace, and how to fix it.
pub fn warn_no_destination(ctx: &mut Context) {
    if !ctx.runtime.in_actions {
        return;
    }
    ctx.summary.paragraph(
        "⚠️ This backup lives only in the workspace (`backup-root`): the next `actions/checkout` (`git clean -ffdx`) deletes it on a self-hosted runner, and a hosted runner's disk is gone when the job ends. Set the `destination` input (`s3://bucket/prefix` with AWS_* keys, `volume://name` or `host:///abs/path`) to keep backups that outlive the job.",
    );
}

/// One backup in the destination.
pub struct Found {
    pub folder: String,
    pub manifest: Manifest,
}

/// Every backup in the destination whose manifest is ours, oldest first (folders without a
/// readable manifest are incomplete and skipped).
pub async fn backups(store: &Store, wf: &Workflow) -> Result<Vec<Found>> {
    let mut out = vec![];
    for folder in store.folders().await? {
        if !folder.starts_with(DIR_PREFIX) {
            continue;
        }
        let key = format!("{folder}/{FILE_NAME}");
        let Some((bytes, _)) = store.get_small(&key).await? else {
            continue;
        };
        let text = String::from_utf8_lossy(&bytes);
        match Manifest::parse(&text, Path::new(&store.url_of(&key))) {
            Ok(manifest) => out.push(Found { folder, manifest }),
            Err(e) => wf.log(&format!("Skipping {}: {e}", store.url_of(&folder))),
        }
    }
    out.sort_by_key(|f| f.manifest.created_at);
    Ok(out)
}

/// The newest backup (not a rollback's safety backup) that the run `run_id` made.
pub async fn find_run(store: &Store, run_id: u64, wf: &Workflow) -> Result<Found> {
    let id = run_id.to_string();
    let all = backups(store, wf).await?;
    let count = all.len();
    all.into_iter()
        .rev()
        .find(|f| {
            f.manifest.mode != crate::manifest::Origin::Safety
                && f
                    .manifest
                    .run
                    .as_ref()
                    .is_some_and(|r| r.run_id.as_deref() == Some(id.as_str()))
        })
        .ok_or_else(|| {
            crate::error::usage(format!(
                "no backup in {} was made by run {run_id} ({count} complete backups there); nothing was changed. List them with `predeploy-backup info --destination {}`",
                store.url(),
                store.url()
            ))
        })
}

/// Reads one manifest by its URL inside the destination (`--manifest s3://…/manifest.yml`).
pub async fn find_manifest(store: &Store, url: &str) -> Result<Found> {
    let base = format!("{}/", store.url());
    let key = url.strip_prefix(&base).ok_or_else(|| {
        crate::error::usage(format!(
            "manifest {url} is not inside the destination {}: set destination to the URL it lives under",
            store.url()
        ))
    })?;
    let folder = key
        .strip_suffix(&format!("/{FILE_NAME}"))
        .ok_or_else(|| crate::error::usage(format!("manifest {url} must end in /{FILE_NAME}")))?
        .to_string();
    let Some((bytes, _)) = store.get_small(key).await? else {
        return Err(crate::error::usage(format!(
            "{url} does not exist: no complete backup there; nothing was changed"
        )));
    };
    let manifest = Manifest::parse(&String::from_utf8_lossy(&bytes), Path::new(url))?;
    Ok(Found { folder, manifest })
}

/// Downloads the files a manifest lists into `into` (streamed); the caller checks them.
pub async fn download(store: &Store, found: &Found, into: &Path, wf: &Workflow) -> Result<PathBuf> {
    let dir = into.join(&found.folder);
    tokio::fs::create_dir_all(&dir).await?;
    for f in found.manifest.files() {
        let rel = Path::new(&f.path);
        if rel.is_absolute()
            || rel
                .components()
                .any(|c| !matches!(c, std::path::Component::Normal(_)))
        {
            return Err(crate::error::VerificationFailed(format!(
                "the manifest of {} names the file `{}`, which is not a plain name: refusing it",
                store.url_of(&found.folder),
                f.path
            ))
            .into());
        }
        let key = format!("{}/{}", found.folder, f.path);
        let t = Instant::now();
        let mut r = store.load(&key).await?;
        let path = dir.join(rel);
        let mut out = tokio::fs::File::create(&path)
            .await
            .with_context(|| format!("cannot create {}", path.display()))?;
        let n = tokio::io::copy(&mut r, &mut out)
            .await
            .with_context(|| format!("downloading {}", store.url_of(&key)))?;
        wf.log(&format!(
            "Downloaded {} ({}) in {:.1} s",
            store.url_of(&key),
            human_size(n),
            t.elapsed().as_secs_f64()
        ));
    }
    let yaml = found.manifest.to_yaml();
    tokio::fs::write(dir.join(FILE_NAME), yaml).await?;
    Ok(dir)
}

/// How old an incomplete backup in the destination (a folder without its manifest, or a
/// multipart upload never completed or aborted: what a run killed mid-upload leaves) must be
/// before retention clears it: 24 hours, far beyond any run (the lease serializes runs, and
/// this margin also covers a run with `lock: none`). `PREDEPLOY_BACKUP_TEST_STALE_SECONDS`
/// lowers it, for tests only (a test server cannot back-date an upload).
fn stale_after() -> chrono::Duration {
    std::env::var("PREDEPLOY_BACKUP_TEST_STALE_SECONDS")
        .ok()
        .and_then(|v| v.trim().parse::<i64>().ok())
        .map(chrono::Duration::seconds)
        .unwrap_or_else(|| chrono::Duration::hours(24))
}

/// What retention decided and did in the destination.
#[derive(Debug, Default)]
pub struct Pruned {
    /// Every complete backup there, newest first: folder, verdict, why.
    pub decisions: Vec<(String, Verdict, String)>,
    /// Backups deleted (none in a dry run).
    pub deleted: Vec<String>,
    /// Incomplete folders (no manifest) removed, and incomplete uploads aborted (keys).
    pub cleared: Vec<String>,
    /// What could not be cleared (warnings: the backups' retention is done).
    pub problems: Vec<String>,
}

/// Retention in the destination, by the local rules ([`crate::retention::decide`]): only
/// folders that carry our manifest, age from the manifest (not object times), never the
/// newest `keep-last` verified ones, never all, never `own` (the backup this run made).
/// Incomplete backups (a folder without manifest, an incomplete multipart upload under a
/// `pre-deployment-*` key) are cleared once older than [`stale_after`]. The caller holds the
/// lease, so no other run is writing.
pub async fn prune(
    store: &Store,
    policy: &Policy,
    own: Option<&str>,
    now: chrono::DateTime<chrono::Utc>,
    wf: &Workflow,
) -> Result<Pruned> {
    let mut all = backups(store, wf).await?;
    all.sort_by(|a, b| {
        b.manifest
            .created_at
            .cmp(&a.manifest.created_at)
            .then(b.folder.cmp(&a.folder))
    });
    let candidates: Vec<Candidate> = all
        .iter()
        .map(|f| Candidate {
            created_at: f.manifest.created_at,
            verified: f.manifest.verified,
            interrupted: false,
            protected: (own == Some(f.folder.as_str())).then(|| "made by this run".to_string()),
            safety: f.manifest.mode == crate::manifest::Origin::Safety,
        })
        .collect();
    let mut out = Pruned::default();
    for (f, (verdict, why)) in all.iter().zip(decide(&candidates, policy, now)) {
        if verdict == Verdict::Delete && !policy.dry_run {
            // The manifest first: a half-deleted folder never looks like a backup.
            store.remove(&format!("{}/{FILE_NAME}", f.folder)).await?;
            store.remove_all(&f.folder).await?;
            out.deleted.push(f.folder.clone());
        }
        out.decisions.push((f.folder.clone(), verdict, why));
    }
    let stale = now - stale_after();
    let complete: std::collections::HashSet<&str> = all.iter().map(|f| f.folder.as_str()).collect();
    for folder in store.folders().await? {
        if !folder.starts_with(DIR_PREFIX) || complete.contains(folder.as_str()) {
            continue;
        }
        let objects = store.list(&format!("{folder}/")).await?;
        // A manifest that is there but not readable as ours (a newer schema, say) is not an
        // incomplete backup: left alone, as locally.
        let has_manifest = objects
            .iter()
            .any(|o| o.key == format!("{folder}/{FILE_NAME}"));
        if !has_manifest && !objects.is_empty() && objects.iter().all(|o| o.modified < stale) {
            if !policy.dry_run {
                store.remove_all(&folder).await?;
            }
            out.cleared.push(store.url_of(&folder));
        }
    }
    // A key without the rights to list or abort uploads costs their storage, not a backup:
    // a warning, and retention's work stands.
    let uploads = match store.incomplete_uploads(DIR_PREFIX).await {
        Ok(u) => u,
        Err(e) => {
            out.problems.push(format!(
                "incomplete uploads could not be listed (the key needs s3:ListBucketMultipartUploads and s3:AbortMultipartUpload to clear those of killed runs): {e}"
            ));
            vec![]
        }
    };
    for u in uploads {
        if u.initiated < stale && own.is_none_or(|o| !u.key.starts_with(&format!("{o}/"))) {
            if !policy.dry_run {
                if let Err(e) = store.abort_upload(&u).await {
                    out.problems.push(e.to_string());
                    continue;
                }
            }
            out.cleared.push(format!(
                "{} (incomplete upload started {})",
                store.url_of(&u.key),
                u.initiated.format("%Y-%m-%d %H:%M UTC")
            ));
        }
    }
    Ok(out)
}

/// Logs what [`prune`] decided and says in the summary what it deleted.
fn report_pruned(ctx: &mut Context, store: &Store, p: &Pruned, dry_run: bool) {
    let (deleted, cleared) = if dry_run {
        ("would delete", "would clear")
    } else {
        ("deleted", "cleared")
    };
    for (folder, verdict, why) in &p.decisions {
        let what = match verdict {
            Verdict::Keep => "kept",
            Verdict::Delete => deleted,
        };
        ctx.wf.log(&format!(
            "Retention in {}: {folder}: {what} ({why})",
            store.url()
        ));
    }
    for c in &p.cleared {
        ctx.wf.log(&format!(
            "Retention in {}: {cleared} the incomplete {c}",
            store.url()
        ));
    }
    for e in &p.problems {
        ctx.wf.warning("Retention in the destination", None, e);
    }
    let gone: Vec<&String> = p
        .decisions
        .iter()
        .filter(|d| d.1 == Verdict::Delete)
        .map(|d| &d.0)
        .collect();
    if !gone.is_empty() || !p.cleared.is_empty() {
        ctx.summary.paragraph(&format!(
            "Retention in the destination {deleted} {}{}.",
            if gone.is_empty() {
                "no backup".to_string()
            } else {
                gone.iter()
                    .map(|d| md::code(d))
                    .collect::<Vec<_>>()
                    .join(", ")
            },
            if p.cleared.is_empty() {
                String::new()
            } else {
                format!(
                    " and {cleared} {} incomplete upload(s) of killed runs",
                    p.cleared.len()
                )
            }
        ));
    }
}

/// `prune` mode with a destination: retention there, under its lease.
pub async fn prune_mode(
    ctx: &mut Context,
    store: &Store,
    policy: &Policy,
    lock: bool,
) -> Result<()> {
    let lease = if lock {
        Some(self::lock(ctx, store).await?)
    } else {
        None
    };
    let result = prune(store, policy, None, chrono::Utc::now(), &ctx.wf).await;
    if let Some(l) = lease {
        l.release().await;
    }
    let p = result.with_context(|| format!("retention in {} failed", store.url()))?;
    report_pruned(ctx, store, &p, policy.dry_run);
    Ok(())
}

/// [`prune`] after a backup (`own` is the folder it made): a problem is a warning (the new
/// backup is good).
pub async fn prune_after_backup(
    ctx: &mut Context,
    store: &Store,
    keep: &crate::cli::Keep,
    own: &str,
) {
    let policy = Policy {
        retention_days: keep.retention_days,
        keep_last: keep.keep_last,
        dry_run: false,
    };
    match prune(store, &policy, Some(own), chrono::Utc::now(), &ctx.wf).await {
        Ok(p) => report_pruned(ctx, store, &p, false),
        Err(e) => {
            ctx.wf.warning(
                "Retention in the destination skipped",
                None,
                &format!("{e:#}"),
            );
            ctx.failed_check.get_or_insert_with(|| "prune".into());
            ctx.degraded = Some(format!("retention in the destination failed: {e:#}"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::Git;

    async fn put_backup(store: &Store, days_ago: i64, verified: bool) -> String {
        let at = chrono::Utc::now() - chrono::Duration::days(days_ago);
        let mut m = Manifest::new(
            crate::manifest::Origin::Backup,
            at,
            String::new(),
            Git::default(),
        );
        m.verified = verified;
        let folder = format!("{DIR_PREFIX}{}", m.timestamp);
        store
            .save_bytes(&format!("{folder}/db.sql.gz"), b"x".to_vec())
            .await
            .unwrap();
        store
            .save_bytes(&format!("{folder}/{FILE_NAME}"), m.to_yaml().into_bytes())
            .await
            .unwrap();
        folder
    }

    #[tokio::test]
    async fn retention_in_the_destination_keeps_the_newest_and_never_all() {
        let s = crate::store::mem::open();
        let old1 = put_backup(&s, 30, true).await;
        let old2 = put_backup(&s, 20, true).await;
        let old3 = put_backup(&s, 10, true).await;
        let fresh = put_backup(&s, 0, false).await;
        // Not ours: never touched.
        s.save_bytes("other/file", b"y".to_vec()).await.unwrap();
        let keep = Policy {
            retention_days: 7,
            keep_last: 2,
            dry_run: false,
        };
        let deleted = prune(&s, &keep, None, chrono::Utc::now(), &Default::default())
            .await
            .unwrap()
            .deleted;
        assert_eq!(deleted, vec![old1.clone()]);
        let left = s.folders().await.unwrap();
        assert!(left.contains(&old2) && left.contains(&old3) && left.contains(&fresh));
        assert!(left.contains(&"other".to_string()));
        // keep-last 1: the newest *verified* one stays, even though it is old.
        let keep = Policy {
            retention_days: 7,
            keep_last: 1,
            dry_run: false,
        };
        let deleted = prune(&s, &keep, None, chrono::Utc::now(), &Default::default())
            .await
            .unwrap()
            .deleted;
        assert_eq!(deleted, vec![old2]);
        assert!(s.folders().await.unwrap().contains(&old3));
        // keep-last 0, everything old: never all, and never the run's own backup even when
        // another manifest claims to be newer.
        let future = put_backup(&s, -2, true).await;
        let keep = Policy {
            retention_days: 0,
            keep_last: 0,
            dry_run: false,
        };
        let p = prune(
            &s,
            &keep,
            Some(&old3),
            chrono::Utc::now(),
            &Default::default(),
        )
        .await
        .unwrap();
        let left = s.folders().await.unwrap();
        assert!(left.contains(&old3), "{p:?}");
        assert!(left.contains(&future), "{p:?}");
        assert!(!left.contains(&fresh), "{p:?}");
    }
}
