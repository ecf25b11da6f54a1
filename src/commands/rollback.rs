//! `rollback`: put the database and the volumes back as a backup recorded them, and tell the
//! next step which commit to check out.
//!
//! Nothing is changed until everything has been checked: the manifest is found (by run id,
//! by path, or through `.last-deployment-backup`), every file's size and SHA-256 matches it,
//! the dump is complete, every archive entry is safe to write (no path leaves the volume), and
//! no running container uses a volume unless it was named in `stop-containers`. Then a safety
//! backup of the current state is taken with the `backup` machinery, and only then is anything
//! restored. `dry-run` stops after the checks and says what would change.
//!
//! Each file is read twice, and both reads are held to the manifest. The check is one pass
//! per file ([`check_files`]), made before anything is stopped, so that a bad backup costs no
//! downtime. The restore reads the file again into a scratch database or a hidden staging
//! folder. That read is checked as it goes ([`read_for_restore`], [`pipe::decode_file`]'s
//! tally), and only what hashed to the manifest's SHA-256 is swapped in. Why not re-check
//! before the restore instead: the file could change after that check. Why not restore from
//! the first read: it happens before the stop, and staging into a live volume would race the
//! app.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context as _, Result};

use super::backup::{resolve_database, take, Spec};
use super::Context;
use crate::actions::artifact::ArtifactClient;
use crate::actions::commands::Workflow;
use crate::actions::outputs::Outputs;
use crate::actions::rest::{check_provenance, RestClient, TrustPolicy};
use crate::actions::summary::{self as md, human_size};
use crate::archive::codec::{self, Codec};
use crate::archive::crypt::Identity;
use crate::archive::hash::Tally;
use crate::archive::restore::{Gate, RestorePlan};
use crate::archive::verify::Expect;
use crate::cli::{split_list, RollbackArgs, Target, Thresholds};
use crate::docker::Engine;
use crate::error::{usage, VerificationFailed};
use crate::manifest::{FileRecord, Manifest, Origin, Pointer, SourceKind, FILE_NAME, POINTER_FILE};
use crate::pipe;

/// The backup to restore: its trusted manifest and where its files are.
struct Chosen {
    manifest: Manifest,
    /// Folder holding the backup files.
    dir: PathBuf,
    /// Where it came from, for the log and the summary.
    source: String,
    /// Keeps a downloaded artifact alive while we use it.
    _download: Option<tempfile::TempDir>,
    /// The durable destination it came from (the safety backup goes there too).
    store: Option<crate::store::Store>,
}

pub async fn run(ctx: &mut Context, args: RollbackArgs) -> Result<()> {
    if let Some(t) = &args.github_token {
        ctx.wf.mask(t);
    }
    // Until the very end, a rollback has not restored anything (refusals included).
    ctx.outputs.set("restored", "false");
    let chosen = choose(ctx, &args).await?;
    let m = &chosen.manifest;
    // 0. The manifest's names and revision are data: checked before any is used.
    check_values(m, &chosen.source)?;
    ctx.backup_dir = Some(ctx.display(&chosen.dir));
    ctx.revision = (m.git.commit.clone(), m.git.branch.clone());
    ctx.wf.log(&format!(
        "Restoring the backup of {} ({})",
        m.created_at.format("%Y-%m-%d %H:%M:%S UTC"),
        chosen.source
    ));
    if !m.verified {
        return Err(VerificationFailed(format!(
            "the manifest of {} says this backup was never verified: refusing to restore it",
            chosen.source
        ))
        .into());
    }

    // 1. The identity fits the backup, and every byte is checked against the manifest,
    //    before anything is touched.
    let (given, identity) = super::crypto::identity(&args.decrypt, &ctx.wf)?;
    let id = identity.as_deref();
    super::crypto::preflight_manifest(m, &chosen.dir, &chosen.source, given, id, true, &ctx.wf)?;
    let safety_encrypt = super::crypto::safety_recipients(m, id)?;
    let mut plans = check_files(ctx, &chosen, identity.clone()).await?;

    // 2. What to restore, and where: only what the inputs name. The manifest fills in the
    //    database's container, name and user, never the choice of targets.
    let named = split_list(
        args.restore_volumes
            .as_deref()
            .or(args.target.volumes.as_deref()),
    );
    let restore_db = args.restore_database.unwrap_or(
        args.target.postgres_container.is_some()
            || args.target.compose_project.is_some()
            || args.target.database_url.is_some(),
    );
    let selection = select(m, &named, restore_db)?;
    let volumes = selection.volumes.clone();
    let skipped = selection.skipped.clone();
    let mut target = if restore_db {
        target_for(&args.target, m)
    } else {
        Target::default()
    };
    target.postgres_password = args.target.postgres_password.clone();
    let stop = split_list(args.target.stop_containers.as_deref());
    let needs_docker = target.postgres_container.is_some()
        || target.compose_project.is_some()
        || !volumes.is_empty();
    let engine = if needs_docker {
        Some(ctx.connect_engine().await?)
    } else {
        None
    };
    let db = if restore_db && m.database.is_some() {
        let db = resolve_database(&ctx.wf, engine.as_ref(), &target).await?;
        if db.is_none() {
            return Err(usage(
                "the backup has a database but no target to restore it to: set postgres-container (or compose-project + postgres-service, or database-url)",
            ));
        }
        db
    } else {
        None
    };
    let mut blocking = vec![];
    if let Some(e) = &engine {
        for v in &volumes {
            e.check_volume(v).await?;
            for c in e.containers_using_volume(v).await? {
                if c.running
                    && !stop
                        .iter()
                        .any(|s| s == &c.name || c.id.starts_with(s.as_str()))
                {
                    blocking.push(format!("{} (uses {v})", c.name));
                }
            }
        }
    }
    if !blocking.is_empty() {
        return Err(usage(format!(
            "refusing to restore volumes while containers use them: {}; stop them first, or name them in stop-containers (they are stopped for the restore and started again afterwards)",
            blocking.join(", ")
        )));
    }

    // 3. The plan.
    let mut plan = vec![];
    if let (Some(d), Some(rec)) = (&db, &m.database) {
        plan.push(format!(
            "database `{}` on {}: dropped and recreated from {} ({}, {} tables)",
            d.creds.db,
            d.server.describe(ctx.wf.secrets()),
            rec.file.path,
            human_size(rec.file.size),
            rec.tables.len()
        ));
    }
    for v in m
        .volumes
        .iter()
        .filter(|v| v.kind == SourceKind::Volume && volumes.contains(&v.name))
    {
        plan.push(format!(
            "volume `{}`: emptied and refilled from {} ({} entries, {})",
            v.name,
            v.file.path,
            v.entries,
            human_size(v.total_bytes)
        ));
    }
    for s in &skipped {
        plan.push(s.clone());
    }
    if !stop.is_empty() {
        plan.push(format!(
            "containers stopped during the restore and started again: {}",
            stop.join(", ")
        ));
    }
    if let Some(c) = &m.git.commit {
        plan.push(format!("code: check out commit {c} (the `commit` output)"));
    }
    for p in &plan {
        ctx.wf.log(&format!("  - {p}"));
    }
    ctx.summary.heading(
        2,
        if args.dry_run {
            "Rollback plan (dry run: nothing changed)"
        } else {
            "Rollback"
        },
    );
    ctx.summary.paragraph(&format!(
        "Backup of {} from {}, commit {} on branch {}.",
        m.created_at.format("%Y-%m-%d %H:%M:%S UTC"),
        md::text(&chosen.source),
        md::code(m.git.commit.as_deref().unwrap_or("unknown")),
        md::code(m.git.branch.as_deref().unwrap_or("unknown")),
    ));
    ctx.summary
        .list(&plan.iter().map(|p| md::text(p)).collect::<Vec<_>>());
    let set_common = |o: &mut Outputs| {
        o.set("commit", m.git.commit.clone().unwrap_or_default());
        o.set("branch", m.git.branch.clone().unwrap_or_default());
        o.set("timestamp", m.timestamp.clone());
    };
    if args.dry_run {
        set_common(&mut ctx.outputs);
        ctx.outputs.set("restored", "false");
        ctx.outputs.set("backup-dir", ctx.display(&chosen.dir));
        ctx.wf
            .log("Dry run: every check passed; nothing was changed.");
        return Ok(());
    }

    // The safety backup goes where the backup came from, under that destination's lease:
    // taken before anything is stopped, so a backup running there is waited for while the
    // app is still up.
    let lease = match (&chosen.store, args.location.destination.lock.as_str()) {
        (Some(store), "auto") => Some(super::destination::lock(ctx, store).await?),
        _ => None,
    };
    let release = |lease: Option<crate::store::lease::Lease>| async move {
        if let Some(l) = lease {
            l.release().await;
        }
    };

    // 4. Stop the named containers now and keep them stopped until the restore is done:
    //    anything they wrote after the safety backup would otherwise be lost.
    let mut stopped = vec![];
    if let (Some(e), false) = (&engine, stop.is_empty()) {
        let db_container = db.as_ref().and_then(|d| match &d.server {
            crate::postgres::Server::Container { info, .. } => Some(info.name.clone()),
            _ => None,
        });
        let to_stop: Vec<String> = stop
            .iter()
            .filter(|s| Some(*s) != db_container.as_ref())
            .cloned()
            .collect();
        stopped = match e.stop(&to_stop, &ctx.stopped, &*ctx.report).await {
            Ok(s) => s,
            Err(err) => {
                release(lease).await;
                return Err(err.into());
            }
        };
    }
    // A safety backup of the current state (the same machinery as `backup`).
    ctx.wf.group("Safety backup of the current state");
    ctx.summary.heading(3, "Safety backup of the current state");
    let mut safety_target = target.clone();
    safety_target.volumes = Some(volumes.join(","));
    if db.is_none() {
        safety_target.postgres_container = None;
        safety_target.compose_project = None;
        safety_target.postgres_service = None;
        safety_target.database_url = None;
    }
    safety_target.paths = None;
    safety_target.stop_containers = None;
    let thresholds = Thresholds {
        min_db_size: 0,
        min_volume_size: 0,
        check_free_space: true,
    };
    let shipping = chosen
        .store
        .as_ref()
        .map(|s| super::destination::Shipping::new(s, true));
    let spec = Spec {
        mode: Origin::Safety,
        backup_root: &args.location.backup_root,
        target: &safety_target,
        thresholds: &thresholds,
        compression: Codec::Gzip,
        compression_level: 1,
        verify_restore: false,
        revision: super::revision(ctx, &Default::default()),
        // Encrypted like the backup it replaces (it may go to the same destination).
        encrypt: safety_encrypt,
        // It goes where the restored one came from, sent while it is written.
        shipping: shipping.as_ref(),
        decrypt: None,
    };
    let taken = take(ctx, &spec).await;
    let safety = match (taken, shipping) {
        (Ok(mut t), Some(s)) => s
            .commit(&t.dir, &mut t.manifest, lease.as_ref(), &ctx.wf)
            .await
            .context(
                "the safety backup could not be stored in the destination, so nothing was restored",
            )
            .map(|stored| (t, Some(stored.url))),
        (Ok(t), None) => Ok((t, None)),
        (Err(e), s) => {
            if let Some(s) = s {
                s.discard().await;
            }
            Err(e.context("the safety backup of the current state failed, so nothing was restored"))
        }
    };
    release(lease).await;
    let (safety, safety_url) = safety?;
    ctx.wf.end_group();
    // The safety backup set backup outputs; a rollback has its own.
    ctx.outputs = Outputs::default();
    let safety_dir = ctx.display(&safety.dir);
    ctx.outputs.set("safety-backup-dir", safety_dir.clone());
    if let Some(u) = &safety_url {
        ctx.wf.log(&format!("Safety backup stored in {u}"));
        ctx.summary
            .paragraph(&format!("Safety backup stored in {}.", md::code(u)));
    }
    ctx.outputs.set("restored", "false");
    set_common(&mut ctx.outputs);
    ctx.outputs.set("backup-dir", ctx.display(&chosen.dir));
    let undo = format!(
        "the safety backup of the state before this rollback is in {safety_dir}; to put it back: predeploy-backup rollback --manifest {safety_dir}/{FILE_NAME}{}{}{}",
        if stop.is_empty() {
            String::new()
        } else {
            format!(" --stop-containers '{}'", stop.join(","))
        },
        if volumes.is_empty() {
            String::new()
        } else {
            format!(" --volumes '{}'", volumes.join(","))
        },
        if db.is_some() { " --restore-database true" } else { "" }
    );

    // 5. Restore (the named containers are stopped since before the safety backup).
    let restored = async {
        // Volumes are unpacked next to their live data first: a volume too small or an
        // archive the kernel refuses fails here, before anything live is touched.
        let mut staged = vec![];
        if let Some(e) = &engine {
            let users: Vec<_> = {
                let mut all = vec![];
                for v in &volumes {
                    all.extend(e.containers_using_volume(v).await?);
                }
                all
            };
            let image = e.helper_image(&users, true).await?;
            for v in m
                .volumes
                .iter()
                .filter(|v| v.kind == SourceKind::Volume && volumes.contains(&v.name))
            {
                let archive = chosen.dir.join(&v.file.path);
                match stage_volume(
                    &ctx.wf,
                    e,
                    &image,
                    &v.name,
                    &archive,
                    plans.remove(&v.file.path).unwrap_or_default(),
                    Reading {
                        file: v.file.clone(),
                        identity: identity.clone(),
                        special_bits: args.restore_special_bits,
                    },
                )
                .await
                {
                    Ok(s) => staged.push(s),
                    Err(err) => {
                        for s in staged {
                            s.discard().await;
                        }
                        return Err(err);
                    }
                }
            }
        }
        let db_loaded = async {
            if let (Some(d), Some(rec)) = (&db, &m.database) {
                let path = chosen.dir.join(&rec.file.path);
                ctx.wf.group(&format!("Restoring database {}", d.creds.db));
                // Load into a scratch database; the live one is replaced only once the load
                // succeeded, so a dump that fails halfway leaves it as it was.
                let scratch = format!(
                    "predeploy_restore_{}",
                    &uuid::Uuid::new_v4().simple().to_string()[..12]
                );
                d.server.create_database(&d.creds, &scratch).await?;
                let loaded = async {
                    let (rx, reader) =
                        pipe::decode_file(&path, rec.file.compression, identity.clone());
                    let loaded = d.server.load(&d.creds, &scratch, rx, &*ctx.report).await;
                    let read = reader.await?;
                    loaded?;
                    let (size, sha) =
                        read.with_context(|| format!("reading {}", path.display()))?;
                    // What was loaded is exactly what was checked, or it does not go live.
                    unchanged(&rec.file, &path, (size, sha))?;
                    d.server.swap_in(&d.creds, &scratch, &d.creds.db).await?;
                    Ok::<_, anyhow::Error>(())
                }
                .await;
                ctx.wf.end_group();
                if let Err(e) = loaded {
                    let _ = d.server.drop_database(&d.creds, &scratch).await;
                    return Err(e.context(format!(
                        "the dump did not load; database `{}` was left as it was",
                        d.creds.db
                    )));
                }
            }
            Ok::<_, anyhow::Error>(())
        }
        .await;
        if let Err(err) = db_loaded {
            for s in staged {
                s.discard().await;
            }
            return Err(err);
        }
        let mut staged = staged.into_iter();
        while let Some(s) = staged.next() {
            if let Err(err) = s.swap().await {
                for rest in staged {
                    rest.discard().await;
                }
                return Err(err);
            }
        }
        Ok::<_, anyhow::Error>(())
    }
    .await;
    let not_restarted = ctx.stopped.restart(&stopped, &*ctx.report).await;
    drop(safety.lock);
    restored.with_context(|| format!("the rollback failed part way; {undo}"))?;
    if !not_restarted.is_empty() {
        anyhow::bail!("restored, but these containers could not be started again: {}; start them with `docker start`", not_restarted.join(", "));
    }
    ctx.outputs.set("restored", "true");
    ctx.summary.paragraph(&format!(
        "✅ Restored. Safety backup of the previous state: {}. Next: check out commit {} and redeploy.",
        md::code(&safety_dir),
        md::code(m.git.commit.as_deref().unwrap_or("unknown"))
    ));
    ctx.wf.log(&format!("Restored. {undo}"));
    Ok(())
}

/// Finds the manifest: `manifest`, else the artifact of `run-id`, else the pointer. When
/// its files are not on this machine, no `destination` is given and the manifest records the
/// destination its backup was stored in, the files come from there (checked against this
/// manifest like any others): a rollback job needs only the run id.
async fn choose(ctx: &mut Context, args: &RollbackArgs) -> Result<Chosen> {
    let chosen = choose_source(ctx, args).await?;
    let given = args.location.destination.url().is_some();
    let here = chosen
        .manifest
        .files()
        .iter()
        .all(|f| chosen.dir.join(&f.path).is_file());
    let recorded = chosen.manifest.destination.clone();
    let (Some(url), None, false, false) = (recorded, &chosen.store, given, here) else {
        return Ok(chosen);
    };
    let Some((parent, folder)) = url.rsplit_once('/') else {
        return Ok(chosen);
    };
    let mut dest_args = args.location.destination.clone();
    dest_args.destination = Some(parent.to_string());
    ctx.wf.log(&format!(
        "The files of {} are not on this machine; no destination input is set, so they are fetched from the destination its manifest records: {parent}",
        chosen.source
    ));
    let Some(store) = super::destination::open(ctx, &dest_args).await? else {
        return Ok(chosen);
    };
    let found = super::destination::Found {
        folder: folder.to_string(),
        manifest: chosen.manifest,
    };
    let root = ctx.backup_root(&args.location.backup_root)?;
    let mut fetched = fetch(&root, store, found, &ctx.wf).await?;
    fetched.source = format!("{} (files from {url})", chosen.source);
    Ok(fetched)
}

async fn choose_source(ctx: &mut Context, args: &RollbackArgs) -> Result<Chosen> {
    let root = ctx.backup_root(&args.location.backup_root)?;
    // `manifest: s3://bucket/prefix/pre-deployment-…/manifest.yml` (or volume://, host://)
    // names its destination.
    let mut dest_args = args.location.destination.clone();
    if dest_args.url().is_none() {
        dest_args.destination = args
            .manifest
            .as_ref()
            .and_then(|p| p.to_str())
            .filter(|s| {
                ["s3://", "volume://", "host://"]
                    .iter()
                    .any(|p| s.starts_with(p))
            })
            .and_then(|u| u.rsplitn(3, '/').nth(2))
            .map(String::from);
    }
    if let Some(store) = super::destination::open(ctx, &dest_args).await? {
        if let Some(chosen) = choose_in_destination(ctx, args, &root, store).await? {
            return Ok(chosen);
        }
    }
    if let Some(p) = &args.manifest {
        let path = ctx.resolve(p);
        let manifest = Manifest::load(&path)?;
        let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        return Ok(Chosen {
            manifest,
            dir,
            source: format!("manifest {}", ctx.display(&path)),
            _download: None,
            store: None,
        });
    }
    if let Some(run_id) = args.run_id {
        let tmp = tempfile::Builder::new()
            .prefix("predeploy-artifact-")
            .tempdir()?;
        let same_run = ctx.runtime.run_id.as_deref() == Some(run_id.to_string().as_str());
        let downloaded = if same_run && ctx.runtime.has_artifact_service() {
            let client = ArtifactClient::new(
                ctx.runtime.results_url.as_deref().unwrap_or_default(),
                ctx.runtime.runtime_token.as_deref().unwrap_or_default(),
                &ctx.wf,
            )?;
            client.download(&args.artifact_name, tmp.path()).await?
        } else {
            let Some(token) = args.github_token.as_deref() else {
                return Err(usage(format!(
                    "run-id {run_id} is another run: its artifact is fetched through the REST API, which needs github-token (e.g. ${{{{ github.token }}}} with `permissions: actions: read`)"
                )));
            };
            let Some(repo) = args
                .repository
                .clone()
                .or_else(|| ctx.runtime.repository.clone())
            else {
                return Err(usage(
                    "set repository (owner/name) to fetch the artifact of another run",
                ));
            };
            let api = ctx
                .runtime
                .api_url
                .clone()
                .unwrap_or_else(|| "https://api.github.com".into());
            let client = RestClient::new(&api, token, &ctx.wf)?;
            // Provenance: the run must be this repository's own (not a fork's, not a pull
            // request's), narrowed by trusted-workflows / trusted-branches.
            let policy = TrustPolicy {
                repository: match (&args.repository, &ctx.runtime.repository) {
                    (Some(given), _) => given.trim().to_string(),
                    (None, Some(this)) => this.clone(),
                    (None, None) => repo.clone(),
                },
                workflows: split_list(args.trusted_workflows.as_deref()),
                branches: split_list(args.trusted_branches.as_deref()),
            };
            let run = client.workflow_run(&repo, run_id).await?;
            check_provenance(&run, &policy)?;
            ctx.wf.log(&format!(
                "Run {run_id}: {} on branch {} of {} ({} event)",
                run.path,
                run.head_branch.as_deref().unwrap_or("?"),
                policy.repository,
                run.event
            ));
            client
                .download_run_artifact(&repo, run_id, &args.artifact_name, tmp.path())
                .await?
        };
        let manifest_path = downloaded
            .files
            .iter()
            .find(|f| f.file_name().is_some_and(|n| n == FILE_NAME))
            .cloned()
            .ok_or_else(|| {
                usage(format!(
                    "the artifact `{}` of run {run_id} holds no {FILE_NAME}",
                    args.artifact_name
                ))
            })?;
        let manifest = Manifest::load(&manifest_path)?;
        // The backup files travel in the artifact (include-backups-in-artifact) or stayed on
        // this machine's disk (self-hosted runner): the artifact's manifest is the trusted
        // record either way, and every file is checked against it.
        let beside = manifest_path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default();
        let has_files = manifest
            .files()
            .iter()
            .all(|f| beside.join(&f.path).is_file());
        let folder = manifest_path
            .parent()
            .and_then(|p| p.file_name())
            .map(|n| n.to_owned())
            .unwrap_or_default();
        let dir = if has_files {
            beside
        } else {
            root.join(&folder)
        };
        if !has_files && !dir.is_dir() && manifest.destination.is_none() {
            return Err(usage(format!(
                "the artifact `{}` of run {run_id} holds only the manifest (that backup ran with include-backups-in-artifact: false), and its files are not on this machine ({} does not exist): on a GitHub-hosted runner they were deleted when that job ended. Nothing was changed. Back up with include-backups-in-artifact: true (or a durable destination) so that a rollback from another job can fetch them, or roll back on the machine that holds the folder",
                args.artifact_name,
                ctx.display(&dir)
            )));
        }
        return Ok(Chosen {
            manifest,
            dir,
            source: format!("the artifact `{}` of run {run_id}", args.artifact_name),
            _download: Some(tmp),
            store: None,
        });
    }
    let Some(p) = Pointer::read(&ctx.workspace)? else {
        return Err(usage(format!(
            "nothing to roll back to: no run-id or manifest was given and there is no {POINTER_FILE} in {}",
            ctx.workspace.display()
        )));
    };
    let path = ctx.resolve(Path::new(&p.manifest));
    let manifest = Manifest::load(&path)?;
    let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
    Ok(Chosen {
        manifest,
        dir,
        source: format!("{POINTER_FILE} ({})", p.backup_dir),
        _download: None,
        store: None,
    })
}

/// With a destination: the backup `manifest` (an URL in it) or `run-id` names, else the
/// newest one there when the workspace has no pointer; its files are downloaded into a
/// staging folder next to the backup root, and checked like local ones. `None`: use the
/// workspace's pointer.
async fn choose_in_destination(
    ctx: &mut Context,
    args: &RollbackArgs,
    root: &Path,
    store: crate::store::Store,
) -> Result<Option<Chosen>> {
    use super::destination as dest;
    let manifest_url = args
        .manifest
        .as_ref()
        .and_then(|p| p.to_str())
        .filter(|s| s.contains("://"));
    let found = if let Some(url) = manifest_url {
        dest::find_manifest(&store, url).await?
    } else if let Some(id) = args.run_id {
        dest::find_run(&store, id, &ctx.wf).await?
    } else if args.manifest.is_some() || Pointer::read(&ctx.workspace)?.is_some() {
        return Ok(None);
    } else {
        dest::backups(&store, &ctx.wf)
            .await?
            .into_iter()
            .rev()
            .find(|f| f.manifest.mode != Origin::Safety && f.manifest.verified)
            .ok_or_else(|| {
                usage(format!(
                    "nothing to roll back to: {} holds no complete backup and the workspace has no {POINTER_FILE}",
                    store.url()
                ))
            })?
    };
    fetch(root, store, found, &ctx.wf).await.map(Some)
}

/// Downloads the backup `found` names from `store` into a staging folder in `root`.
async fn fetch(
    root: &Path,
    store: crate::store::Store,
    found: super::destination::Found,
    wf: &Workflow,
) -> Result<Chosen> {
    std::fs::create_dir_all(root).with_context(|| format!("cannot create {}", root.display()))?;
    let tmp = tempfile::Builder::new()
        .prefix(".predeploy-download-")
        .tempdir_in(root)
        .with_context(|| format!("cannot create a staging folder in {}", root.display()))?;
    wf.group(&format!(
        "Downloading {} from the destination",
        store.url_of(&found.folder)
    ));
    let dir = super::destination::download(&store, &found, tmp.path(), wf).await;
    wf.end_group();
    let dir = dir?;
    Ok(Chosen {
        source: store.url_of(&found.folder),
        manifest: found.manifest,
        dir,
        _download: Some(tmp),
        store: Some(store),
    })
}

/// Size and SHA-256 of every file against the manifest, the dump's completeness, and the
/// safety of every archive entry, in one read of each file (a second one only to tell an
/// altered file from a damaged one, when a check failed). Any doubt refuses the rollback
/// (exit 1). Returns what each volume archive's restore will create, by file name.
async fn check_files(
    ctx: &mut Context,
    chosen: &Chosen,
    identity: Option<Arc<Identity>>,
) -> Result<HashMap<String, RestorePlan>> {
    let m = chosen.manifest.clone();
    let dir = chosen.dir.clone();
    let (problems, plans) = tokio::task::spawn_blocking(move || {
        let mut problems = vec![];
        let mut plans = HashMap::new();
        for f in m.files() {
            let path = dir.join(&f.path);
            // A file of the wrong size is not read at all.
            match std::fs::metadata(&path) {
                Err(e) => {
                    problems.push((
                        f.path.clone(),
                        "exists".to_string(),
                        format!("cannot read {}: {e}", path.display()),
                    ));
                    continue;
                }
                Ok(meta) if meta.len() != f.size => {
                    problems.push((
                        f.path.clone(),
                        "size".into(),
                        format!(
                            "{} bytes, the manifest says {}: the file changed since the backup",
                            meta.len(),
                            f.size
                        ),
                    ));
                    continue;
                }
                Ok(_) => {}
            }
            let is_db = m.database.as_ref().is_some_and(|d| d.file.path == f.path);
            let (read, content) = read_and_check(&path, f, is_db, identity.as_deref());
            // A file that is not the one the manifest describes is reported as such, whatever
            // else is wrong with it.
            let read = match read {
                Some(r) => Ok(r),
                None => crate::archive::hash::sha256_file(&path),
            };
            match read {
                Err(e) => problems.push((
                    f.path.clone(),
                    "exists".to_string(),
                    format!("cannot read {}: {e}", path.display()),
                )),
                Ok((size, sha)) if size != f.size || sha != f.sha256 => problems.push((
                    f.path.clone(),
                    "sha256".into(),
                    format!(
                        "SHA-256 {sha} ({size} bytes) differs from the manifest's {}: the file was altered",
                        f.sha256
                    ),
                )),
                Ok(_) => match content {
                    Ok(Some(plan)) => {
                        plans.insert(f.path.clone(), plan);
                    }
                    Ok(None) => {}
                    Err((check, msg)) => problems.push((f.path.clone(), check, msg)),
                },
            }
        }
        (problems, plans)
    })
    .await?;
    if problems.is_empty() {
        return Ok(plans);
    }
    for (file, check, msg) in &problems {
        ctx.wf.error(
            &format!("Rollback refused: `{check}` check"),
            Some(&ctx.display(&chosen.dir.join(file))),
            msg,
        );
    }
    ctx.failed_check = problems.first().map(|p| p.1.clone());
    Err(VerificationFailed(format!(
        "refusing to restore {}: nothing was changed.\n{}",
        chosen.source,
        problems
            .iter()
            .map(|(f, c, m)| format!("{f}: {c}: {m}"))
            .collect::<Vec<_>>()
            .join("\n")
    ))
    .into())
}

/// A file's content checks: what a volume archive's restore creates when they passed, else
/// the failed check's name and message.
type Verdict = Result<Option<RestorePlan>, (String, String)>;

/// One read of a backup file through its content checks (the dump's, or the archive's
/// restore-safety rules): the verdict, and the (size, SHA-256) of the whole file when that
/// read covered it all.
fn read_and_check(
    path: &Path,
    f: &FileRecord,
    is_db: bool,
    identity: Option<&Identity>,
) -> (Option<(u64, String)>, Verdict) {
    if is_db {
        let r =
            crate::archive::crypt::verify_file(path, Expect::SqlDump, f.compression, 0, identity);
        return match (r.failure, r.sha256) {
            (Some(fl), _) => (None, Err((fl.check.as_str().to_string(), fl.message))),
            (None, sha) => (sha.map(|s| (r.size, s)), Ok(None)),
        };
    }
    let tally = Tally::new();
    let mut input = match crate::archive::crypt::open_tallied(path, identity, Some(&tally)) {
        Ok(i) => i,
        Err(e) => return (None, Err(("restore-safety".into(), e.to_string()))),
    };
    let plan = crate::archive::restore::check_archive(&mut input, f.compression, &f.path)
        .map(Some)
        .map_err(|e| ("restore-safety".to_string(), e.to_string()));
    // The rest of the file (after a refusal, or bytes past the end of the stream) is hashed
    // too, so that an altered file is reported as altered.
    (tally.finish(input).ok(), plan)
}

/// Whether the bytes a restore read, (size, SHA-256) of every stored byte, are the file
/// `record` describes: a file that changed after its check is refused (exit 1), and what
/// was read from it never goes live.
fn unchanged(record: &FileRecord, path: &Path, (size, sha): (u64, String)) -> Result<()> {
    if size != record.size || sha != record.sha256 {
        return Err(VerificationFailed(format!(
            "refusing to restore {}: it changed after it was checked ({size} bytes with SHA-256 {sha} now, the manifest says {} bytes with {}); the live data was not touched",
            path.display(),
            record.size,
            record.sha256
        ))
        .into());
    }
    Ok(())
}

/// What a rollback restores: the named volumes, and why the rest is not restored.
struct Selection {
    volumes: Vec<String>,
    /// `name: not restored (why)`, for the plan.
    skipped: Vec<String>,
}

/// Picks the manifest entries the inputs name. A name the backup does not hold, or nothing
/// named at all, is a usage error; an entry not named is skipped and reported, never wiped.
fn select(m: &Manifest, named: &[String], restore_db: bool) -> Result<Selection> {
    let held: Vec<&str> = m
        .volumes
        .iter()
        .filter(|v| v.kind == SourceKind::Volume)
        .map(|v| v.name.as_str())
        .collect();
    if let Some(n) = named.iter().find(|n| !held.contains(&n.as_str())) {
        return Err(usage(format!(
            "volume `{}` is named in restore-volumes (or volumes) but this backup holds no archive of it (it holds: {}); nothing was changed",
            crate::names::shown(n),
            if held.is_empty() { "none".to_string() } else { held.join(", ") }
        )));
    }
    if restore_db && m.database.is_none() {
        return Err(usage(
            "restore-database is true (or a postgres target is named) but this backup holds no database dump; set restore-database: false",
        ));
    }
    let volumes: Vec<String> = held
        .iter()
        .filter(|h| named.iter().any(|n| n == *h))
        .map(|h| h.to_string())
        .collect();
    if volumes.is_empty() && !restore_db {
        let mut holds: Vec<String> = held.iter().map(|h| format!("volume {h}")).collect();
        if m.database.is_some() {
            holds.insert(0, "a database dump".into());
        }
        return Err(usage(format!(
            "nothing to restore: rollback restores only the targets its inputs name. This backup holds {}; name them with volumes (or restore-volumes) and postgres-container (or compose-project + postgres-service, database-url, or restore-database: true)",
            if holds.is_empty() { "nothing restorable".to_string() } else { holds.join(", ") }
        )));
    }
    let mut skipped = vec![];
    if let (Some(d), false) = (&m.database, restore_db) {
        skipped.push(format!(
            "database {}: not restored (no postgres target named; set postgres-container or restore-database: true)",
            d.name.as_deref().unwrap_or("?")
        ));
    }
    for v in &m.volumes {
        if v.kind != SourceKind::Volume {
            skipped.push(format!(
                "{} ({}): not restored (host folders are restored by hand: tar xzf … -C <folder>)",
                v.name, v.kind
            ));
        } else if !volumes.contains(&v.name) {
            skipped.push(format!(
                "volume {}: not restored (not named in volumes / restore-volumes)",
                v.name
            ));
        }
    }
    Ok(Selection { volumes, skipped })
}

/// The manifest's names must be names and its revision a revision (see [`crate::names`]):
/// a name that could form a connection string or an option is a usage error (exit 2), a
/// commit or branch that is not one fails the step (exit 1). Nothing has been used yet.
fn check_values(m: &Manifest, source: &str) -> Result<()> {
    use crate::names::{is_branch, is_commit, is_docker_name, is_pg_name, shown};
    let mut bad = vec![];
    if let Some(d) = &m.database {
        for (what, v, ok) in [
            ("database.name", &d.name, is_pg_name as fn(&str) -> bool),
            ("database.user", &d.user, is_pg_name),
            ("database.container", &d.container, is_docker_name),
            (
                "database.compose_project",
                &d.compose_project,
                is_docker_name,
            ),
            (
                "database.compose_service",
                &d.compose_service,
                is_docker_name,
            ),
        ] {
            if let Some(v) = v.as_deref().filter(|v| !ok(v)) {
                bad.push(format!("{what} `{}`", shown(v)));
            }
        }
    }
    for v in m.volumes.iter().filter(|v| v.kind == SourceKind::Volume) {
        if !is_docker_name(&v.name) {
            bad.push(format!("volume name `{}`", shown(&v.name)));
        }
    }
    if !bad.is_empty() {
        return Err(usage(format!(
            "the manifest of {source} holds {} that is not a plain name (PostgreSQL names: 1-63 of A-Z a-z 0-9 _ . -; Docker names: [a-zA-Z0-9][a-zA-Z0-9_.-]*): refusing to use it, nothing was changed. Name the target in the inputs instead (postgres-db, postgres-user, postgres-container), or restore from another backup",
            bad.join(", ")
        )));
    }
    if let Some(c) = m.git.commit.as_deref().filter(|c| !is_commit(c)) {
        return Err(VerificationFailed(format!(
            "the manifest of {source} records commit `{}`, which is not a 40- or 64-digit hexadecimal commit id: refusing to restore it or to output it",
            shown(c)
        ))
        .into());
    }
    if let Some(b) = m.git.branch.as_deref().filter(|b| !is_branch(b)) {
        return Err(VerificationFailed(format!(
            "the manifest of {source} records branch `{}`, which is not a git branch name: refusing to restore it or to output it",
            shown(b)
        ))
        .into());
    }
    Ok(())
}

/// The inputs' target, filled in from what the manifest recorded.
fn target_for(given: &Target, m: &Manifest) -> Target {
    let mut t = given.clone();
    if let Some(d) = &m.database {
        let given_any = t.postgres_container.is_some()
            || t.compose_project.is_some()
            || t.database_url.is_some();
        if !given_any {
            match (&d.compose_project, &d.compose_service) {
                (Some(p), Some(s)) => {
                    t.compose_project = Some(p.clone());
                    t.postgres_service = Some(s.clone());
                }
                _ => t.postgres_container = d.container.clone(),
            }
        }
        t.postgres_db = t.postgres_db.or_else(|| d.name.clone());
        t.postgres_user = t.postgres_user.or_else(|| d.user.clone());
    }
    t
}

/// A volume archive unpacked into a staging folder on the volume itself, not yet live.
struct Staged {
    engine: Engine,
    image: String,
    volume: String,
    /// `.predeploy-restore-<id>` (our own random name) at the volume root.
    stage: String,
    root: Option<(u32, u64, u64)>,
    wf: Workflow,
}

/// Space the restore needs beyond the archive's bytes: a block per entry (rounding of file
/// sizes, folders, links, inodes).
const PER_ENTRY_OVERHEAD: u64 = 4096;

/// The shell loop over every top-level entry of `$from` (dot files too) except `$S`/`$O`.
fn each_entry(from: &str, body: &str) -> String {
    format!(
        "for f in {from}/* {from}/.[!.]* {from}/..?*; do [ -e \"$f\" ] || [ -L \"$f\" ] || continue; case \"$f\" in \"$S\"|\"$O\") continue;; esac; {body}; done"
    )
}

/// How a volume's archive is read: the manifest's record of it (codec, size, SHA-256), the
/// identity that opens it when it is `….age`, and whether setuid/setgid/sticky bits are kept.
struct Reading {
    file: FileRecord,
    identity: Option<Arc<Identity>>,
    special_bits: bool,
}

/// Unpacks `archive` into a staging folder on `volume`, leaving the live content untouched.
/// The archive was checked before anything was stopped; it is read here once more, and that
/// read is checked as it goes: each entry by the restore-safety rules before its header is
/// sent, and the stored bytes against the manifest's size and SHA-256 at the end, so the
/// staged content is exactly what was checked even if the file changed in between. The free
/// space is compared with what [`check_files`] found the archive creates (`plan`) before
/// anything is written. On any failure the staging folder is removed.
async fn stage_volume(
    wf: &Workflow,
    engine: &Engine,
    image: &str,
    volume: &str,
    archive: &Path,
    plan: RestorePlan,
    reading: Reading,
) -> Result<Staged> {
    wf.log(&format!(
        "Unpacking the backup of volume {volume} next to its live data"
    ));
    let special_bits = reading.special_bits;
    let root = plan
        .root
        .map(|(mode, uid, gid)| (if special_bits { mode } else { mode & 0o777 }, uid, gid));
    let staged = Staged {
        engine: engine.clone(),
        image: image.to_string(),
        volume: volume.to_string(),
        stage: format!(
            ".predeploy-restore-{}",
            &uuid::Uuid::new_v4().simple().to_string()[..12]
        ),
        root,
        wf: wf.clone(),
    };
    let script = format!(
        "set -e; mkdir -m 700 /data/{s}; df -Pk /data | awk 'NR==2 {{ print \"free=\" $4 }}'",
        s = staged.stage
    );
    let prep = engine
        .helper(
            volume,
            image,
            false,
            Some(vec!["/bin/sh".into(), "-c".into(), script]),
        )
        .await?;
    let written = async {
        let (code, log) = prep.run_to_end().await?;
        let free_kib = log
            .lines()
            .find_map(|l| l.trim().strip_prefix("free="))
            .and_then(|v| v.trim().parse::<u64>().ok());
        if code != 0 {
            anyhow::bail!("could not prepare volume {volume} for the restore (exit {code}): {log}; nothing was changed");
        }
        let Some(free_kib) = free_kib else {
            anyhow::bail!("could not measure the free space of volume {volume} (`df` in the helper image said: {log}); nothing was changed. Set PREDEPLOY_HELPER_IMAGE to an image with sh, df and awk (e.g. busybox)");
        };
        let free = free_kib.saturating_mul(1024);
        let needed = plan
            .total_bytes
            .saturating_add(plan.entries.saturating_mul(PER_ENTRY_OVERHEAD));
        if needed > free {
            anyhow::bail!(
                "volume {volume} has {} free but restoring {} needs about {} ({} in {} entries) while its current data stays until the new data is complete; nothing was changed. Free space on the volume (or grow it) and run the rollback again",
                human_size(free),
                archive.display(),
                human_size(needed),
                human_size(plan.total_bytes),
                plan.entries
            );
        }
        // The same (now stopped) container still mounts the volume: write through it.
        let target = format!("/data/{}", staged.stage);
        let failed = || {
            format!("writing the backup of volume {volume} failed (is the volume full?); its live data was not touched")
        };
        let (rx, reader) = read_for_restore(archive, reading);
        let uploaded = prep.upload_to(&target, pipe::into_stream(rx)).await;
        if let Err(e @ crate::docker::DockerError::Stalled { .. }) = uploaded {
            // The reader was cut off by the stall: the stall is the news.
            return Err(anyhow::Error::from(e).context(format!(
                "writing the backup of volume {volume} stopped; its live data was not touched"
            )));
        }
        let (dropped, paths) = reader
            .await?
            .with_context(|| format!("reading {}", archive.display()))?;
        uploaded.with_context(failed)?;
        if dropped > 0 {
            wf.warning(
                "Special bits dropped",
                None,
                &format!(
                    "volume {volume}: setuid/setgid/sticky bits dropped from {dropped} entries (e.g. {}); set restore-special-bits: true to keep them",
                    paths.join(", ")
                ),
            );
        }
        Ok(())
    }
    .await;
    // After a stalled upload the engine's extraction holds the helper until the connection
    // closes (at exit): its removal must not wait for ever.
    let _ = tokio::time::timeout(crate::docker::idle_timeout(), prep.remove()).await;
    match written {
        Ok(()) => Ok(staged),
        Err(e) => {
            staged.discard().await;
            Err(e)
        }
    }
}

impl Staged {
    /// Runs `script` (with `$S` the staging folder and `$O` the old-content folder) in a
    /// helper that mounts the volume.
    async fn run(&self, script: &str) -> Result<(i64, String)> {
        let old = self.stage.replace("-restore-", "-old-");
        let script = format!("S=/data/{}; O=/data/{old}; {script}", self.stage);
        let h = self
            .engine
            .helper(
                &self.volume,
                &self.image,
                false,
                Some(vec!["/bin/sh".into(), "-c".into(), script]),
            )
            .await?;
        let r = h.run_to_end().await;
        h.remove().await;
        Ok(r?)
    }

    /// Removes the staging folder; the live content was never touched.
    async fn discard(self) {
        match self.run("rm -rf -- \"$S\"").await {
            Ok((0, _)) => {}
            Ok((code, log)) => self.wf.warning(
                "Staging folder left behind",
                None,
                &format!(
                    "could not remove /{} from volume {} (exit {code}): {log}; delete it by hand",
                    self.stage, self.volume
                ),
            ),
            Err(e) => self.wf.warning(
                "Staging folder left behind",
                None,
                &format!(
                    "could not remove /{} from volume {}: {e:#}; delete it by hand",
                    self.stage, self.volume
                ),
            ),
        }
    }

    /// Swaps the staged content in: the live entries move aside, the staged ones move in
    /// (renames on one filesystem), then the old ones are deleted. If a move fails, the moves
    /// are undone and the volume is left as it was.
    async fn swap(self) -> Result<()> {
        self.wf.log(&format!("Restoring volume {}", self.volume));
        // Docker's archive upload does not apply the root entry (`./`) to the target
        // folder itself, so the volume root's owner and mode are set here.
        let root = match self.root {
            Some((mode, uid, gid)) => format!("chown {uid}:{gid} /data && chmod {mode:o} /data"),
            None => "true".into(),
        };
        let back_old = each_entry("\"$O\"", "mv -- \"$f\" /data/");
        let back_new = each_entry("/data", "mv -- \"$f\" \"$S/\"");
        let aside = each_entry("/data", "mv -- \"$f\" \"$O/\" || exit 1");
        let bring_in = each_entry("\"$S\"", "mv -- \"$f\" /data/ || exit 1");
        let script = format!(
            "put_back() {{ {back_old}; rmdir \"$O\"; rm -rf -- \"$S\"; echo \"$1; the live data was put back\" >&2; exit 1; }}; \
             mkdir -m 700 \"$O\" || {{ rm -rf -- \"$S\"; echo 'cannot create the folder for the old data; nothing was changed' >&2; exit 1; }}; \
             ({aside}) || put_back 'moving the live data aside failed'; \
             ({bring_in}) || {{ {back_new}; put_back 'moving the restored data in failed'; }}; \
             rmdir \"$S\" || {{ {back_new}; put_back 'the staging folder is not empty'; }}; \
             {root} || echo 'could not set the owner and mode of the volume root' >&2; \
             rm -rf -- \"$O\""
        );
        let volume = self.volume.clone();
        match self.run(&script).await {
            Ok((0, _)) => Ok(()),
            Ok((code, log)) => {
                anyhow::bail!(
                    "could not swap the restored data into volume {volume} (exit {code}): {log}"
                )
            }
            Err(e) => Err(e.context(format!(
                "could not swap the restored data into volume {volume}"
            ))),
        }
    }
}

/// How many entries had a special bit dropped, and up to 10 of their paths.
type Dropped = tokio::task::JoinHandle<Result<(u64, Vec<String>)>>;

/// The archive read once for its restore, as a plain tar stream: the stored bytes are
/// tallied, decrypted when the file is `….age`, decoded, walked with the restore-safety
/// rules (a refused or malformed entry stops the stream before the chunk holding its header
/// is sent: nothing it names reaches the engine), and stripped of setuid/setgid/sticky bits
/// unless `special_bits`. The task fails (exit 1) when an entry was refused or the file is
/// not the one the manifest describes (size and SHA-256 of every stored byte); the caller
/// then discards what was staged. On success it returns how many entries had a special bit
/// dropped, and up to 10 of their paths.
fn read_for_restore(
    archive: &Path,
    reading: Reading,
) -> (tokio::sync::mpsc::Receiver<bytes::Bytes>, Dropped) {
    let path = archive.to_path_buf();
    let (tx, rx) = tokio::sync::mpsc::channel::<bytes::Bytes>(pipe::DEPTH);
    let task = tokio::task::spawn_blocking(move || {
        let Reading {
            file,
            identity,
            special_bits,
        } = reading;
        let tally = Tally::new();
        let mut input =
            crate::archive::crypt::open_tallied(&path, identity.as_deref(), Some(&tally))?;
        let mut gate = Gate::new(&path.display().to_string());
        let mut gated = false;
        let mut filter = crate::archive::special::SpecialBits::new();
        let mut buf = vec![0u8; 256 * 1024];
        let mut failed = None;
        let whole = codec::restore(file.compression, &mut input, &mut buf, &mut |d| {
            if !gate.feed(d) {
                gated = true;
                return false;
            }
            let out = if special_bits {
                d.to_vec()
            } else {
                match filter.feed(d) {
                    Ok(out) => out,
                    Err(e) => {
                        failed = Some(anyhow::Error::msg(e));
                        return false;
                    }
                }
            };
            tx.blocking_send(bytes::Bytes::from(out)).is_ok()
        });
        if !gated {
            if let Some(e) = failed {
                return Err(e);
            }
            if matches!(whole, Ok(false)) {
                anyhow::bail!("the upload stopped reading");
            }
        }
        // An entry the rules refuse, a malformed or damaged archive: refused (exit 1).
        let produced = whole
            .map(|_| ())
            .map_err(|e| format!("the stored stream is damaged: {e}"));
        gate.finish(produced).map_err(|e| {
            anyhow::Error::from(VerificationFailed(format!(
                "{e}; the live data was not touched"
            )))
        })?;
        unchanged(&file, &path, tally.finish(input)?)?;
        if special_bits {
            return Ok((0, vec![]));
        }
        let (dropped, paths) = (filter.dropped, filter.paths.clone());
        let rest = filter.finish().map_err(anyhow::Error::msg)?;
        if tx.blocking_send(bytes::Bytes::from(rest)).is_err() {
            anyhow::bail!("the upload stopped reading");
        }
        Ok((dropped, paths))
    });
    (rx, task)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::archive::hash::sha256_hex;
    use crate::archive::testutil::{end, gz, push, raw_header, Rng};

    /// A tar of `./`, a 600 KiB file (more than one decoded chunk), and `last`.
    fn tar_then(last: &[u8]) -> Vec<u8> {
        let mut t = vec![];
        push(&mut t, &raw_header(b"./", b'5', 0, b""), b"");
        let big = Rng::new(7).bytes(600 << 10);
        push(
            &mut t,
            &raw_header(b"./big.bin", b'0', big.len() as u64, b""),
            &big,
        );
        push(&mut t, &raw_header(last, b'0', 5, b""), b"hello");
        end(&mut t);
        t
    }

    /// Runs [`read_for_restore`] on `stored` (gzip) held to `manifest` (the bytes whose size and
    /// SHA-256 the manifest records): what reached the engine, and the outcome.
    async fn stage(stored: &[u8], manifest: &[u8]) -> (Vec<u8>, Result<(u64, Vec<String>)>) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("volume_x.tar.gz");
        std::fs::write(&path, stored).unwrap();
        let reading = Reading {
            file: FileRecord {
                path: "volume_x.tar.gz".into(),
                size: manifest.len() as u64,
                sha256: sha256_hex(manifest),
                checks: vec![],
                compression: Codec::Gzip,
                compression_level: None,
                encrypted: None,
                recipients: vec![],
            },
            identity: None,
            special_bits: true,
        };
        let (mut rx, task) = read_for_restore(&path, reading);
        let mut sent = vec![];
        while let Some(b) = rx.recv().await {
            sent.extend_from_slice(&b);
        }
        (sent, task.await.unwrap())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_staging_read_sends_the_checked_tar_and_holds_the_file_to_its_manifest() {
        let tar = tar_then(b"./last.txt");
        let stored = gz(&tar);
        let (sent, outcome) = stage(&stored, &stored).await;
        assert_eq!(outcome.unwrap(), (0, vec![]));
        assert!(
            sent == tar,
            "the engine did not get the archive's tar as it is"
        );

        // The same content, stored differently from what the manifest records (the file was
        // replaced after the check): refused, although the tar itself is fine.
        let other = gz(&tar_then(b"./other.txt"));
        let (_, outcome) = stage(&other, &stored).await;
        let e = outcome.unwrap_err();
        assert!(e.downcast_ref::<VerificationFailed>().is_some(), "{e:#}");
        assert!(
            format!("{e:#}").contains("changed after it was checked"),
            "{e:#}"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_unsafe_entry_stops_the_staging_stream_before_its_header_is_sent() {
        let stored = gz(&tar_then(b"../escape.txt"));
        // Even with the manifest's hash matching (a manifest written for the evil file).
        let (sent, outcome) = stage(&stored, &stored).await;
        let e = outcome.unwrap_err();
        assert!(e.downcast_ref::<VerificationFailed>().is_some(), "{e:#}");
        assert!(format!("{e:#}").contains("`../escape.txt`"), "{e:#}");
        assert!(
            sent.starts_with(&raw_header(b"./", b'5', 0, b"")),
            "nothing was streamed before the refusal"
        );
        assert!(
            !sent.windows(13).any(|w| w == b"../escape.txt"),
            "the refused entry reached the engine"
        );
    }
}
