//! `backup` (the default mode): dump the database and archive the volumes, verify what was
//! written, and only then make it a restore point.
//!
//! The order matters for safety:
//! 1. check every input and the environment (Docker, containers, volumes, free space) before
//!    creating anything;
//! 2. take the lock on the backup root, so two runs cannot interleave;
//! 3. write everything into a hidden `.pre-deployment-<ts>.partial/` folder: a crash leaves
//!    nothing that looks like a backup;
//! 4. stop `stop-containers` only around the volume archives, and start them again at once
//!    (and on every failure path, and on SIGTERM: see `docker::Stopped`);
//! 5. read every file back with the `verify` machinery; optionally restore the dump into a
//!    throwaway database;
//! 6. only then write the manifest, rename the folder into place, publish, and prune.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use chrono::Utc;

use super::record::{publish, DbMeta, Verified, VolMeta};
use super::{revision, Context};
use crate::actions::commands::Workflow;
use crate::actions::summary::human_size;
use crate::archive::codec::Codec;
use crate::archive::verify::{verify_written, Expect, FileReport};
use crate::cli::{split_list, BackupArgs, Target, Thresholds};
use crate::docker::{ContainerInfo, Engine};
use crate::error::{usage, VerificationFailed};
use crate::manifest::{self, Git, Manifest, Origin, RestoreCheck, SourceKind};
use crate::pipe;
use crate::postgres::{Credentials, Server};

/// How long to wait for another run's lock on the backup root.
const LOCK_WAIT: Duration = Duration::from_secs(600);

/// The database side of a backup, resolved from the inputs.
pub struct Database {
    pub server: Server,
    pub creds: Credentials,
    pub meta: DbMeta,
    /// On-disk size, read when the connection was checked.
    pub size: u64,
}

/// Resolves the database inputs (container, compose labels or URL) and checks the server
/// answers. `None` when no database was asked for.
pub async fn resolve_database(
    wf: &Workflow,
    engine: Option<&Engine>,
    t: &crate::cli::Target,
) -> Result<Option<Database>> {
    let password = t
        .postgres_password
        .clone()
        .or_else(|| std::env::var("POSTGRES_PASSWORD").ok())
        .filter(|p| !p.is_empty());
    if let Some(p) = &password {
        wf.mask(p);
    }
    let by_container = t.postgres_container.is_some() || t.compose_project.is_some();
    if by_container && t.database_url.is_some() {
        return Err(usage(
            "postgres-container (or compose-project) and database-url both given: choose one way to reach the database",
        ));
    }
    if let Some(url) = &t.database_url {
        wf.mask(url);
        let parsed = url::Url::parse(url).map_err(|e| {
            usage(format!(
                "database-url is not a URL ({e}): write postgres://user:password@host:5432/dbname"
            ))
        })?;
        if !matches!(parsed.scheme(), "postgres" | "postgresql") {
            return Err(usage(
                "database-url must start with postgres:// or postgresql://",
            ));
        }
        let user = t
            .postgres_user
            .clone()
            .or_else(|| Some(parsed.username().to_string()).filter(|u| !u.is_empty()))
            .unwrap_or_else(|| "postgres".into());
        let db = t
            .postgres_db
            .clone()
            .filter(|d| d != "-")
            .or_else(|| {
                Some(parsed.path().trim_start_matches('/').to_string()).filter(|d| !d.is_empty())
            })
            .unwrap_or_else(|| user.clone());
        let creds = Credentials {
            db: db.clone(),
            user: user.clone(),
            password,
        };
        let mut server = Server::Url {
            url: url.clone(),
            bin_dir: None,
        };
        let size = server.database_size(&creds).await?;
        if let Some((path, version)) = server.pick_pg_dump(&creds).await? {
            wf.log(&format!("Using {} ({version})", path.display()));
        }
        return Ok(Some(Database {
            server,
            size,
            meta: DbMeta {
                name: Some(db),
                user: Some(user),
                url: Some(wf.redact(url)),
                ..Default::default()
            },
            creds,
        }));
    }
    if !by_container {
        return Ok(None);
    }
    let engine = engine.expect("engine connected when a container is named");
    let info: ContainerInfo =
        match (
            &t.postgres_container,
            &t.compose_project,
            &t.postgres_service,
        ) {
            (Some(name), _, _) => engine.container(name).await?,
            (None, Some(p), Some(s)) => engine.compose_service(p, s).await?,
            _ => return Err(usage(
                "compose-project needs postgres-service too (the service name in the compose file)",
            )),
        };
    if !info.running {
        return Err(crate::docker::DockerError::NotRunning(info.name.clone()).into());
    }
    let user = t.postgres_user.clone().unwrap_or_else(|| "postgres".into());
    let db = t
        .postgres_db
        .clone()
        .filter(|d| d != "-")
        .unwrap_or_else(|| user.clone());
    let creds = Credentials {
        db: db.clone(),
        user: user.clone(),
        password,
    };
    let meta = DbMeta {
        name: Some(db),
        user: Some(user),
        container: Some(info.name.clone()),
        compose_project: info.labels.get("com.docker.compose.project").cloned(),
        compose_service: info.labels.get("com.docker.compose.service").cloned(),
        url: None,
    };
    let server = Server::Container {
        engine: engine.clone(),
        info: Box::new(info),
    };
    // One query proves the connection, the credentials and the database, and sizes it.
    let size = server.database_size(&creds).await?;
    Ok(Some(Database {
        server,
        creds,
        meta,
        size,
    }))
}

/// A name safe for a file name: `[A-Za-z0-9._-]`, others become `_`.
pub fn file_safe(s: &str) -> String {
    let s: String = s
        .trim_matches('/')
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    if s.is_empty() {
        "root".into()
    } else {
        s
    }
}

/// The file names of one backup. Every name is handed out once: two sources whose names
/// clean up to the same text (`srv/a/b` and `srv/a_b`, or a volume and a folder both named
/// `data`) get `name`, `name-2`, … so no archive can overwrite another.
#[derive(Default)]
pub struct FileNames {
    used: std::collections::HashSet<String>,
}

impl FileNames {
    /// `{prefix}_{file_safe(source)}[-n]_{ts}{ext}`, never returned twice.
    pub fn allocate(&mut self, prefix: &str, source: &str, ts: &str, ext: &str) -> String {
        let base = file_safe(source);
        let mut n = 1;
        loop {
            let stem = if n == 1 {
                base.clone()
            } else {
                format!("{base}-{n}")
            };
            let name = format!("{prefix}_{stem}_{ts}{ext}");
            if self.used.insert(name.clone()) {
                return name;
            }
            n += 1;
        }
    }
}

/// What to back up, from `backup`'s inputs or from `rollback` (its safety backup).
pub struct Spec<'a> {
    /// Recorded as the manifest's `mode`: `backup`, or `safety` before a rollback.
    pub mode: Origin,
    pub backup_root: &'a Path,
    pub target: &'a Target,
    pub thresholds: &'a Thresholds,
    pub compression: Codec,
    pub compression_level: u32,
    pub verify_restore: bool,
    pub revision: (Option<String>, Option<String>),
    /// Encrypt every file to these recipients (`….age`).
    pub encrypt: Option<std::sync::Arc<crate::archive::crypt::Recipients>>,
    /// With a destination: every file is sent there while it is written (see
    /// [`super::destination::Shipping`]); the caller commits or discards it after `take`.
    pub shipping: Option<&'a super::destination::Shipping>,
    /// What verify-restore decrypts the dump with when it is encrypted.
    pub decrypt: Option<std::sync::Arc<crate::archive::crypt::Identity>>,
}

/// A verified backup, in place, with the backup root still locked.
pub struct Taken {
    pub dir: PathBuf,
    pub manifest: Manifest,
    pub root: PathBuf,
    pub lock: crate::lock::RootLock,
}

pub async fn run(ctx: &mut Context, args: BackupArgs) -> Result<()> {
    super::record::check_publish(ctx, &args.publish)?;
    if std::env::var("RUNNER_ENVIRONMENT").as_deref() == Ok("github-hosted")
        && !args.publish.include_backups_in_artifact
    {
        ctx.wf.warning(
            "Backup files will not outlive this job",
            None,
            "this is a GitHub-hosted runner: its disk, and the backup files on it, are deleted when the job ends, and the artifact holds only the manifest. Set include-backups-in-artifact: true (or a durable destination) to be able to roll back from another job",
        );
    }
    let compression = Codec::parse(&args.compression).map_err(usage)?;
    let compression_level = compression.level(args.compression_level).map_err(usage)?;
    let encrypt = super::crypto::recipients(ctx, &args.encrypt)?;
    let (given, identity) = super::crypto::identity(&args.decrypt, &ctx.wf)?;
    match (&encrypt, args.verify_restore) {
        (Some(r), true) => match identity.as_deref() {
            None => {
                return Err(usage(format!(
                    "verify-restore reads the dump back, and the dump will be encrypted to {}: pass the matching identity in decrypt-identity (or env {}), or set verify-restore: false",
                    r.fingerprints.join(", "),
                    super::crypto::IDENTITY_ENV
                )))
            }
            Some(id) if !id.opens(r) => {
                return Err(usage(format!(
                    "the identity in decrypt-identity does not open files encrypted to {}: pass the identity of one of encrypt-recipients",
                    r.fingerprints.join(", ")
                )))
            }
            Some(_) => {}
        },
        (None, _) if given == super::crypto::Given::Input => ctx.wf.warning(
            "decrypt-identity is not used",
            None,
            "decrypt-identity only serves verify-restore of encrypted backups (encrypt-recipients): it is ignored here",
        ),
        _ => {}
    }
    if let Some(r) = &encrypt {
        ctx.wf.log(&format!(
            "Encrypting the backup files with age to {}",
            r.fingerprints.join(", ")
        ));
    }
    let (commit, branch) = revision(ctx, &args.revision);
    ctx.revision = (commit.clone(), branch.clone());
    // The destination answers (and the keys work) before anything is made.
    let store = super::destination::open(ctx, &args.location.destination).await?;
    // Two runs on one destination never interleave.
    let lease = match (&store, args.location.destination.lock.as_str()) {
        (Some(store), "auto") => Some(super::destination::lock(ctx, store).await?),
        _ => None,
    };
    // Whatever happens next, the lease is given back when this run is done with the
    // destination: a failed run must not make the next one wait for its expiry.
    let done = async {
        // A backup with a destination counts only once every file is verified there.
        let full = args.location.destination.verify_destination != "size";
        let shipping = store
            .as_ref()
            .map(|s| super::destination::Shipping::new(s, full));
        let spec = Spec {
            mode: Origin::Backup,
            backup_root: &args.location.backup_root,
            target: &args.target,
            thresholds: &args.thresholds,
            compression,
            compression_level,
            verify_restore: args.verify_restore,
            revision: (commit, branch),
            encrypt,
            shipping: shipping.as_ref(),
            decrypt: identity,
        };
        let taken = take(ctx, &spec).await;
        let (taken, stored) = match (taken, shipping) {
            (Ok(mut t), Some(s)) => {
                let stored = s
                    .commit(&t.dir, &mut t.manifest, lease.as_ref(), &ctx.wf)
                    .await?;
                (t, Some(stored))
            }
            (Ok(t), None) => (t, None),
            (Err(e), s) => {
                // Nothing of a failed backup stays in the destination.
                if let Some(s) = s {
                    s.discard().await;
                }
                return Err(e);
            }
        };
        publish(
            ctx,
            &taken.manifest,
            &taken.dir,
            &args.publish,
            args.keep.retention_days,
        )
        .await?;
        match &stored {
            Some(s) => super::destination::report(ctx, s, full),
            None => super::destination::warn_no_destination(ctx),
        }
        super::prune::after_backup(ctx, &taken.root, &args.keep).await;
        if let Some(store) = &store {
            let own = taken
                .dir
                .file_name()
                .map(|n| n.to_string_lossy().to_string())
                .unwrap_or_default();
            super::destination::prune_after_backup(ctx, store, &args.keep, &own).await;
        }
        drop(taken.lock);
        Ok(())
    }
    .await;
    if let Some(l) = lease {
        l.release().await;
    }
    done
}

/// Makes one verified backup: checks, dump, archives, read-back, manifest, rename.
pub async fn take(ctx: &mut Context, spec: &Spec<'_>) -> Result<Taken> {
    let t = spec.target;
    let volumes = split_list(t.volumes.as_deref());
    let paths = split_list(t.paths.as_deref());
    let stop = split_list(t.stop_containers.as_deref());
    let wants_db =
        t.postgres_container.is_some() || t.compose_project.is_some() || t.database_url.is_some();
    if !wants_db && volumes.is_empty() && paths.is_empty() {
        return Err(usage(
            "nothing to back up: set postgres-container (or compose-project + postgres-service, or database-url) and/or volumes or paths",
        ));
    }
    let mut timings = std::collections::BTreeMap::new();

    // 1. Everything checked before anything is created.
    let needs_docker = t.postgres_container.is_some()
        || t.compose_project.is_some()
        || !volumes.is_empty()
        || !stop.is_empty();
    let engine = if needs_docker {
        Some(ctx.connect_engine().await?)
    } else {
        None
    };
    let db = resolve_database(&ctx.wf, engine.as_ref(), t).await?;
    let mut volume_users: Vec<ContainerInfo> = vec![];
    if let Some(e) = &engine {
        for v in &volumes {
            e.check_volume(v).await?;
            volume_users.extend(e.containers_using_volume(v).await?);
        }
        for c in &stop {
            e.container(c).await?;
        }
    }
    let host_paths: Vec<PathBuf> = paths.iter().map(|p| ctx.resolve(Path::new(p))).collect();
    for p in &host_paths {
        if !p.is_dir() {
            return Err(usage(format!(
                "paths: {} is not a folder on this machine (inside the action's container only the workspace is visible; use volumes for Docker volumes)",
                p.display()
            )));
        }
    }
    let helper_image = match (&engine, volumes.is_empty()) {
        (Some(e), false) => {
            let mut hint = volume_users.clone();
            if let Some(Database {
                server: Server::Container { info, .. },
                ..
            }) = &db
            {
                hint.push((**info).clone());
            }
            Some(e.helper_image(&hint, false).await?)
        }
        _ => None,
    };

    // 2. The lock, and a fresh timestamped folder.
    let root = ctx.backup_root(spec.backup_root)?;
    let lock = crate::lock::acquire(&root, LOCK_WAIT, &*ctx.report)?;
    ctx.give_to_workspace_owner(&root.join(crate::lock::LOCK_FILE));
    remove_stale_partials(&ctx.wf, &root);
    let (created_at, ts, final_dir) = loop {
        let now = Utc::now();
        let ts = manifest::timestamp(now);
        let dir = root.join(format!("{}{ts}", manifest::DIR_PREFIX));
        if !dir.exists() {
            break (now, ts, dir);
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    ctx.backup_dir = Some(ctx.display(&final_dir));
    // The destination's keys use the name the folder will have, not the work folder's.
    if let Some(s) = spec.shipping {
        s.begin(&format!("{}{ts}", manifest::DIR_PREFIX));
    }
    if spec.thresholds.check_free_space {
        check_space(&root, db.as_ref()).await?;
    }
    let work = root.join(format!(".{}{ts}.partial", manifest::DIR_PREFIX));
    std::fs::create_dir_all(&work).with_context(|| {
        format!(
            "cannot create {}; check that the backup root is writable",
            work.display()
        )
    })?;

    let result = make(
        ctx,
        spec,
        &work,
        &ts,
        db.as_ref(),
        engine.as_ref(),
        helper_image.as_deref(),
        &volumes,
        &host_paths,
        &stop,
        &mut timings,
    )
    .await;
    let checked = result.and_then(|(verified, restore_check)| {
        if let Some(rejected) = verified.failures(ctx) {
            let e = super::record::reject(ctx, rejected);
            verified.report(ctx);
            return Err(e);
        }
        Ok((verified, restore_check))
    });
    let (verified, restore_check) = match checked {
        Ok(v) => v,
        Err(e) => {
            // Nothing that looks like a backup is left behind.
            let _ = std::fs::remove_dir_all(&work);
            // The files are gone: no output may point at them or describe them.
            ctx.outputs.values.retain(|(k, _)| {
                !(k.starts_with("db-backup-")
                    || k.starts_with("volume-backup-")
                    || k == "backup-dir")
            });
            return Err(e);
        }
    };

    // The record, then the folder appears whole.
    let (commit, branch) = spec.revision.clone();
    let mut m = verified.manifest(
        ctx,
        Manifest::new(spec.mode, created_at, String::new(), Git { commit, branch }),
    );
    m.backup_dir = ctx.display(&final_dir);
    m.timings = timings;
    m.restore_check = restore_check;
    let placed = m
        .write(&work)
        .context("cannot write the manifest")
        .and_then(|_| {
            std::fs::rename(&work, &final_dir)
                .with_context(|| format!("cannot move the backup into {}", final_dir.display()))
        });
    if let Err(e) = placed {
        let _ = std::fs::remove_dir_all(&work);
        return Err(e);
    }
    if let Ok(d) = std::fs::File::open(&root) {
        let _ = d.sync_all();
    }
    ctx.give_to_workspace_owner(&final_dir);
    let verified = verified.moved_to(&final_dir);
    verified.report(ctx);
    Ok(Taken {
        dir: final_dir,
        manifest: m,
        root,
        lock,
    })
}

/// A run that was killed (SIGKILL, power loss) leaves its hidden `.partial` folder behind;
/// with the lock held no other run is writing one, so they can go.
fn remove_stale_partials(wf: &Workflow, root: &Path) {
    let Ok(entries) = std::fs::read_dir(root) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        if name.starts_with(&format!(".{}", manifest::DIR_PREFIX)) && name.ends_with(".partial") {
            wf.log(&format!("Removing {name}, left by an interrupted run"));
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

/// Refuses to start when the backup root's file system clearly cannot hold the backup:
/// the previous backup's size plus a quarter when there is one (the best estimate there
/// is), else half the database's on-disk size (a dump is smaller than tables plus indexes,
/// and gzip shrinks it further). Volume sizes are not known in advance without walking them
/// (`docker system df` takes many seconds on a busy engine); a volume that does not fit
/// fails while it is written, with the same exit code and nothing left behind. The input
/// `check-free-space: false` skips this estimate.
async fn check_space(root: &Path, db: Option<&Database>) -> Result<()> {
    let db_size = db.map(|d| d.size).unwrap_or(0);
    let previous = previous_backup_size(root);
    let (estimate, basis) = match previous {
        Some(p) => (
            p + p / 4,
            format!("the previous backup is {}", human_size(p)),
        ),
        None => (
            db_size / 2,
            format!("the database is {} on disk", human_size(db_size)),
        ),
    };
    let need = estimate + (1 << 20);
    let st = rustix::fs::statvfs(root).context("cannot read the free space of the backup root")?;
    let avail = st.f_bavail.saturating_mul(st.f_frsize);
    if need > avail {
        anyhow::bail!(
            "not enough free space in {}: about {} needed ({basis}), {} available; free some space, point backup-root at a larger disk, or set check-free-space: false if the estimate is wrong",
            root.display(),
            human_size(need),
            human_size(avail)
        );
    }
    Ok(())
}

/// Total size of the files of the newest `pre-deployment-*` folder, if any.
fn previous_backup_size(root: &Path) -> Option<u64> {
    let newest = std::fs::read_dir(root)
        .ok()?
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with(manifest::DIR_PREFIX)
                && e.path().join(manifest::FILE_NAME).is_file()
        })
        .max_by_key(|e| e.file_name())?;
    let total = std::fs::read_dir(newest.path())
        .ok()?
        .flatten()
        .filter_map(|e| e.metadata().ok())
        .filter(|m| m.is_file())
        .map(|m| m.len())
        .sum();
    Some(total)
}

/// Writes and verifies every file in `work`. Returns the reports (all of them, failed or
/// not) and the `verify-restore` result.
#[allow(clippy::too_many_arguments)]
async fn make(
    ctx: &mut Context,
    spec: &Spec<'_>,
    work: &Path,
    ts: &str,
    db: Option<&Database>,
    engine: Option<&Engine>,
    helper_image: Option<&str>,
    volumes: &[String],
    host_paths: &[PathBuf],
    stop: &[String],
    timings: &mut std::collections::BTreeMap<String, f64>,
) -> Result<(Verified, Option<RestoreCheck>)> {
    let level = spec.compression_level;
    let codec = spec.compression;
    // Encrypted files are verified while they are written (see `crypt`): their reports.
    let seal_ext = if spec.encrypt.is_some() {
        crate::archive::crypt::EXT
    } else {
        ""
    };
    let seal = || spec.encrypt.clone();
    // Each file goes to the destination (if any) while it is written.
    let ship = |p: &Path| spec.shipping.and_then(|s| s.ship(p));

    // The database, while everything is still running.
    let mut db_file = None;
    let mut db_checked = None;
    if let Some(d) = db {
        let name = d.creds.db.clone();
        let path = work.join(format!(
            "db_{}_{ts}.sql{}{seal_ext}",
            file_safe(&name),
            codec.ext()
        ));
        ctx.wf.group(&format!(
            "Dumping database {name} ({})",
            d.server.describe(ctx.wf.secrets())
        ));
        let started = Instant::now();
        let (tx, writer) = pipe::write_backup_file(
            path.clone(),
            codec,
            level,
            Expect::SqlDump,
            seal(),
            ship(&path),
        );
        let dumped = d.server.dump(&d.creds, tx).await;
        let written = writer.await?;
        ctx.wf.end_group();
        dumped?;
        let (raw, checked) = written.with_context(|| format!("cannot write {}", path.display()))?;
        timings.insert("database dump".into(), started.elapsed().as_secs_f64());
        ctx.wf.log(&format!(
            "Dumped {} of SQL in {:.1} s",
            human_size(raw),
            started.elapsed().as_secs_f64()
        ));
        db_file = Some((path, d.meta.clone()));
        db_checked = Some(checked);
    }

    // The volumes, with their users stopped (and started again right after).
    let mut vol_files: Vec<(PathBuf, VolMeta)> = vec![];
    let mut vol_checked = vec![];
    if !volumes.is_empty() || !host_paths.is_empty() {
        let started = Instant::now();
        let mut stopped = vec![];
        if let (Some(e), false) = (engine, stop.is_empty()) {
            stopped = e.stop(stop, &ctx.stopped, &*ctx.report).await?;
        }
        let archived = archive_all(
            &ctx.wf,
            work,
            ts,
            (codec, level),
            spec.encrypt.as_ref(),
            spec.shipping,
            engine,
            helper_image,
            volumes,
            host_paths,
        )
        .await;
        // Only what this backup stopped: a caller (rollback) may keep others stopped.
        let not_restarted = ctx.stopped.restart(&stopped, &*ctx.report).await;
        (vol_files, vol_checked) = archived?.into_iter().map(|(p, m, c)| ((p, m), c)).unzip();
        if !not_restarted.is_empty() {
            anyhow::bail!(
                "containers could not be started again after the volume archives: {}; start them by hand with `docker start`",
                not_restarted.join(", ")
            );
        }
        timings.insert("volume archives".into(), started.elapsed().as_secs_f64());
    }

    // Verify: the checks that ran behind the writers, held to the files as they are now
    // (or, where they did not run, a read of the file here).
    let started = Instant::now();
    let (min_db, min_vol) = (spec.thresholds.min_db_size, spec.thresholds.min_volume_size);
    let db_paths = db_file.clone();
    let vol_paths = vol_files.clone();
    // The files reach the disk (fsync) while they are verified; both are done before the
    // manifest is written and the folder renamed.
    let to_sync: Vec<PathBuf> = db_file
        .iter()
        .map(|(p, _)| p.clone())
        .chain(vol_files.iter().map(|(p, _)| p.clone()))
        .collect();
    let synced = tokio::task::spawn_blocking(move || -> std::io::Result<()> {
        for p in to_sync {
            std::fs::File::open(&p)?.sync_all()?;
        }
        Ok(())
    });
    // The content checks and SHA-256 ran on the stored bytes while the files were written:
    // each file must still be the size that was read back.
    let (db_report, vol_reports) = tokio::task::spawn_blocking(move || {
        let check = |p: &Path, e: Expect, min: u64, w: pipe::Written| match w {
            pipe::Written::Sealed(s) => crate::archive::crypt::written_report(p, e, min, s),
            pipe::Written::Checked(c) => verify_written(p, e, codec, min, c),
        };
        let d = db_paths
            .zip(db_checked)
            .map(|((p, _), c)| check(&p, Expect::SqlDump, min_db, c));
        let v: Vec<FileReport> = vol_paths
            .iter()
            .zip(vol_checked)
            .map(|((p, _), c)| check(p, Expect::Tar, min_vol, c))
            .collect();
        (d, v)
    })
    .await?;
    synced
        .await?
        .context("cannot flush the backup files to disk")?;
    timings.insert("verification".into(), started.elapsed().as_secs_f64());
    let (db_report, vol_reports) = {
        let mut d = db_report;
        let mut v = vol_reports;
        for r in d.iter_mut().chain(v.iter_mut()) {
            r.level = (codec != Codec::None).then_some(level);
        }
        (d, v)
    };
    let verified = Verified {
        dir: work.to_path_buf(),
        db: db_report.zip(db_file.map(|(_, m)| m)),
        volumes: vol_reports
            .into_iter()
            .zip(vol_files.into_iter().map(|(_, m)| m))
            .collect(),
    };

    if let Some((r, meta)) = &verified.db {
        if r.verified()
            && r.sql
                .as_ref()
                .is_some_and(|s| s.tables.values().all(|&n| n == 0))
        {
            ctx.wf.warning(
                "The database is empty",
                None,
                &format!(
                    "database `{}` has no rows: the dump is complete, so it is kept as a backup of an empty database. If it should hold data, check postgres-db",
                    meta.name.as_deref().unwrap_or("?")
                ),
            );
        }
    }

    // Optionally prove the dump loads.
    let mut restore_check = None;
    if spec.verify_restore {
        let all_ok = verified.db.as_ref().is_some_and(|(r, _)| r.verified());
        if let (Some(d), Some((report, _)), true) = (db, &verified.db, all_ok) {
            let started = Instant::now();
            let rc = verify_restore(ctx, d, report, spec.decrypt.clone()).await?;
            timings.insert("verify-restore".into(), started.elapsed().as_secs_f64());
            if !rc.passed {
                verified.report(ctx);
                ctx.failed_check = Some("verify-restore".into());
                let diff: Vec<String> = rc
                    .tables
                    .iter()
                    .filter(|(_, (a, b))| a != b)
                    .map(|(t, (a, b))| format!("{t}: {a} rows in the dump, {b} after restore"))
                    .collect();
                return Err(VerificationFailed(format!(
                    "verify-restore: the dump loaded but its row counts differ:\n{}",
                    diff.join("\n")
                ))
                .into());
            }
            restore_check = Some(rc);
        } else if db.is_none() {
            return Err(usage(
                "verify-restore needs a database to restore (postgres-container or database-url)",
            ));
        }
    }
    Ok((verified, restore_check))
}

/// Archives each volume (through a helper container) and host path into `work`.
#[allow(clippy::too_many_arguments)]
async fn archive_all(
    wf: &Workflow,
    work: &Path,
    ts: &str,
    (codec, level): (Codec, u32),
    encrypt: Option<&std::sync::Arc<crate::archive::crypt::Recipients>>,
    shipping: Option<&super::destination::Shipping>,
    engine: Option<&Engine>,
    helper_image: Option<&str>,
    volumes: &[String],
    host_paths: &[PathBuf],
) -> Result<Vec<(PathBuf, VolMeta, pipe::Written)>> {
    let mut out = vec![];
    let mut names = FileNames::default();
    let ext = format!(
        ".tar{}{}",
        codec.ext(),
        if encrypt.is_some() {
            crate::archive::crypt::EXT
        } else {
            ""
        }
    );
    let seal = || encrypt.cloned();
    let ship = |p: &Path| shipping.and_then(|s| s.ship(p));
    for v in volumes {
        let engine = engine.expect("docker connected for volumes");
        let image = helper_image.expect("helper image chosen for volumes");
        let path = work.join(names.allocate("volume", v, ts, &ext));
        wf.log(&format!("Archiving volume {v}"));
        let helper = engine.helper(v, image, true, None).await?;
        let (tx, writer) =
            pipe::write_backup_file(path.clone(), codec, level, Expect::Tar, seal(), ship(&path));
        let copied = pipe::forward_batched(helper.download(), &tx).await;
        drop(tx);
        // The helper goes while the last blocks are compressed and written.
        let (_, written) = tokio::join!(helper.remove(), writer);
        let written = written?;
        copied.with_context(|| format!("reading volume {v} failed"))?;
        let (_, checked) = written.with_context(|| format!("cannot write {}", path.display()))?;
        out.push((
            path,
            VolMeta {
                name: v.clone(),
                kind: SourceKind::Volume,
            },
            checked,
        ));
    }
    for p in host_paths {
        let path = work.join(names.allocate("volume", &p.display().to_string(), ts, &ext));
        wf.log(&format!("Archiving folder {}", p.display()));
        let (mut rx, reader) = pipe::tar_folder(p.clone());
        let (tx, writer) =
            pipe::write_backup_file(path.clone(), codec, level, Expect::Tar, seal(), ship(&path));
        while let Some(chunk) = rx.recv().await {
            if tx.send(chunk).await.is_err() {
                break;
            }
        }
        drop(tx);
        let read = reader.await?;
        let written = writer.await?;
        read.with_context(|| format!("reading {} failed", p.display()))?;
        let (_, checked) = written.with_context(|| format!("cannot write {}", path.display()))?;
        out.push((
            path,
            VolMeta {
                name: p.display().to_string(),
                kind: SourceKind::Path,
            },
            checked,
        ));
    }
    Ok(out)
}

/// Loads the dump into a throwaway database on the same server, compares per-table row
/// counts with the dump's, and always drops the throwaway database.
async fn verify_restore(
    ctx: &mut Context,
    d: &Database,
    report: &FileReport,
    identity: Option<std::sync::Arc<crate::archive::crypt::Identity>>,
) -> Result<RestoreCheck> {
    let scratch = format!(
        "predeploy_verify_{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    );
    ctx.wf.group(&format!(
        "verify-restore: loading the dump into throwaway database {scratch}"
    ));
    d.server
        .create_database(&d.creds, &scratch)
        .await
        .with_context(|| {
            format!(
                "verify-restore needs a throwaway database and could not create one: grant CREATEDB to `{user}` (ALTER ROLE {user} CREATEDB) or set verify-restore: false",
                user = d.creds.user
            )
        })?;
    let outcome = async {
        let (rx, reader) = pipe::decode_file(&report.path, report.codec, identity);
        let loaded = d.server.load(&d.creds, &scratch, rx, &*ctx.report).await;
        let read = reader.await?;
        loaded.context("verify-restore: the dump does not load into a fresh database")?;
        let (size, sha) = read?;
        if Some(&sha) != report.sha256.as_ref() || size != report.size {
            anyhow::bail!(
                "verify-restore: {} changed after it was verified (SHA-256 {sha}, {size} bytes); something else is writing the backup folder",
                report.path.display()
            );
        }
        let expected = report.sql.clone().unwrap_or_default().tables;
        let names: Vec<String> = expected.keys().cloned().collect();
        let actual = d.server.count_rows(&d.creds, &scratch, &names).await?;
        let tables: std::collections::BTreeMap<String, (u64, u64)> = expected
            .iter()
            .map(|(t, n)| (t.clone(), (*n, actual.get(t).copied().unwrap_or(0))))
            .collect();
        Ok::<_, anyhow::Error>(tables)
    }
    .await;
    let dropped = d.server.drop_database(&d.creds, &scratch).await;
    ctx.wf.end_group();
    if let Err(e) = dropped {
        ctx.wf.warning(
            "Throwaway database not dropped",
            None,
            &format!("could not drop {scratch}: {e}; drop it by hand"),
        );
    }
    let tables = match outcome {
        Ok(t) => t,
        Err(e) => {
            ctx.failed_check = Some("verify-restore".into());
            return Err(VerificationFailed(format!("{e:#}")).into());
        }
    };
    let passed = tables.values().all(|(a, b)| a == b);
    let rows: Vec<Vec<String>> = tables
        .iter()
        .map(|(t, (a, b))| {
            vec![
                format!("`{t}`"),
                a.to_string(),
                b.to_string(),
                if a == b { "✅" } else { "❌" }.into(),
            ]
        })
        .collect();
    ctx.summary
        .heading(3, "verify-restore: row counts (dump vs. restored)")
        .table(&["Table", "In the dump", "After restore", ""], &rows);
    Ok(RestoreCheck {
        passed,
        database: scratch,
        tables,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_sources_never_share_a_file_name() {
        let mut n = FileNames::default();
        let a = n.allocate("volume", "/ws/srv/a/b", "T", ".tar.gz");
        let b = n.allocate("volume", "/ws/srv/a_b", "T", ".tar.gz");
        let c = n.allocate("volume", "/ws/srv/a/b", "T", ".tar.gz");
        assert_eq!(a, "volume_ws_srv_a_b_T.tar.gz");
        assert_eq!(b, "volume_ws_srv_a_b-2_T.tar.gz");
        assert_eq!(c, "volume_ws_srv_a_b-3_T.tar.gz");
    }

    #[test]
    fn file_safe_keeps_a_portable_name_and_never_an_empty_one() {
        assert_eq!(file_safe("/srv/data/"), "srv_data");
        assert_eq!(file_safe("my vol:1"), "my_vol_1");
        assert_eq!(file_safe("app.db-2_x"), "app.db-2_x");
        assert_eq!(file_safe("été"), "_t_");
        assert_eq!(file_safe("/"), "root");
        assert_eq!(file_safe(""), "root");
    }

    /// A backup folder under `root`: its files (name, size), a manifest unless `complete` is
    /// false.
    fn folder(root: &Path, name: &str, files: &[(&str, usize)], complete: bool) {
        let dir = root.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        for (f, n) in files {
            std::fs::write(dir.join(f), vec![b'x'; *n]).unwrap();
        }
        if complete {
            std::fs::write(dir.join(manifest::FILE_NAME), b"m: 1\n").unwrap();
        }
    }

    #[test]
    fn the_space_estimate_uses_the_newest_complete_backup() {
        let root = tempfile::tempdir().unwrap();
        assert_eq!(previous_backup_size(root.path()), None);
        folder(
            root.path(),
            "pre-deployment-20260101_000000",
            &[("a", 5000)],
            true,
        );
        folder(
            root.path(),
            "pre-deployment-20260102_000000",
            &[("a", 100), ("b", 20)],
            true,
        );
        // Newer, but without its manifest (a run that failed): not a basis.
        folder(
            root.path(),
            "pre-deployment-20260103_000000",
            &[("a", 9000)],
            false,
        );
        folder(
            root.path(),
            ".pre-deployment-20260104_000000.partial",
            &[("a", 9000)],
            false,
        );
        // The newest complete one: its files and its manifest (5 bytes).
        assert_eq!(previous_backup_size(root.path()), Some(125));
    }

    #[tokio::test]
    async fn a_backup_root_that_cannot_hold_the_estimate_is_refused_before_anything_is_made() {
        let root = tempfile::tempdir().unwrap();
        check_space(root.path(), None).await.unwrap();
        // The previous backup was 4 TiB (a sparse file: no disk is used).
        folder(root.path(), "pre-deployment-20260101_000000", &[], true);
        std::fs::File::create(root.path().join("pre-deployment-20260101_000000/db.sql.gz"))
            .unwrap()
            .set_len(4 << 40)
            .unwrap();
        let e = check_space(root.path(), None)
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("not enough free space"), "{e}");
        assert!(e.contains("the previous backup is"), "{e}");
        assert!(e.contains("check-free-space: false"), "{e}");
    }

    #[test]
    fn only_our_interrupted_folders_are_removed() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        folder(
            r,
            ".pre-deployment-20260101_000000.partial",
            &[("a", 10)],
            false,
        );
        folder(r, "pre-deployment-20260102_000000", &[("a", 10)], true);
        folder(r, ".other.partial", &[("a", 10)], false);
        folder(
            r,
            "pre-deployment-20260103_000000.partial",
            &[("a", 10)],
            false,
        );
        remove_stale_partials(&Workflow::new(Default::default(), false), r);
        let mut left: Vec<String> = std::fs::read_dir(r)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
            .collect();
        left.sort();
        assert_eq!(
            left,
            [
                ".other.partial",
                "pre-deployment-20260102_000000",
                "pre-deployment-20260103_000000.partial"
            ]
        );
    }
}
