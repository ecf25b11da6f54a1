//! `rollback`: put the database and the volumes back as a backup recorded them, and tell the
//! next step which commit to check out.
//!
//! Nothing is changed until everything has been checked: the manifest is found (by run id,
//! by path, or through `.last-deployment-backup`), every file's size and SHA-256 matches it,
//! the dump is complete, every archive entry is safe to write (no path leaves the volume), and
//! no running container uses a volume unless it was named in `stop-containers`. Then a safety
//! backup of the current state is taken with the `backup` machinery, and only then is anything
//! restored. `dry-run` stops after the checks and says what would change.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};

use super::backup::{resolve_database, take, Spec};
use super::Context;
use crate::actions::artifact::ArtifactClient;
use crate::actions::commands as wf;
use crate::actions::outputs::Outputs;
use crate::actions::rest::RestClient;
use crate::actions::summary::human_size;
use crate::archive::codec::{self, Codec};
use crate::archive::verify::{verify_file_as, Expect};
use crate::cli::{split_list, RollbackArgs, Target, Thresholds};
use crate::docker::Engine;
use crate::error::{usage, VerificationFailed};
use crate::manifest::{Manifest, Pointer, FILE_NAME, POINTER_FILE};
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
}

pub async fn run(ctx: &mut Context, args: RollbackArgs) -> Result<()> {
    if let Some(t) = &args.github_token {
        wf::mask(t);
    }
    // Until the very end, a rollback has not restored anything (refusals included).
    ctx.outputs.set("restored", "false");
    let chosen = choose(ctx, &args).await?;
    let m = &chosen.manifest;
    ctx.backup_dir = Some(ctx.display(&chosen.dir));
    ctx.revision = (m.git.commit.clone(), m.git.branch.clone());
    wf::log(&format!(
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

    // 1. Every byte checked against the manifest, before anything is touched.
    check_files(ctx, &chosen).await?;

    // 2. Where to restore to: the inputs, else what the manifest recorded.
    let target = target_for(&args.target, m);
    let stop = split_list(args.target.stop_containers.as_deref());
    let volumes: Vec<String> = m
        .volumes
        .iter()
        .filter(|v| v.kind == "volume")
        .map(|v| v.name.clone())
        .collect();
    let skipped: Vec<String> = m
        .volumes
        .iter()
        .filter(|v| v.kind != "volume")
        .map(|v| format!("{} ({})", v.name, v.kind))
        .collect();
    let needs_docker = target.postgres_container.is_some()
        || target.compose_project.is_some()
        || !volumes.is_empty();
    let engine = if needs_docker {
        Some(Engine::connect().await?)
    } else {
        None
    };
    let db = if m.database.is_some() {
        let db = resolve_database(engine.as_ref(), &target).await?;
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
            d.server.describe(),
            rec.file.path,
            human_size(rec.file.size),
            rec.tables.len()
        ));
    }
    for v in m.volumes.iter().filter(|v| v.kind == "volume") {
        plan.push(format!(
            "volume `{}`: emptied and refilled from {} ({} entries, {})",
            v.name,
            v.file.path,
            v.entries,
            human_size(v.total_bytes)
        ));
    }
    for s in &skipped {
        plan.push(format!(
            "{s}: not restored (host folders are restored by hand: tar xzf … -C <folder>)"
        ));
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
        wf::log(&format!("  - {p}"));
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
        "Backup of {} from {}, commit `{}` on branch `{}`.",
        m.created_at.format("%Y-%m-%d %H:%M:%S UTC"),
        chosen.source,
        m.git.commit.as_deref().unwrap_or("unknown"),
        m.git.branch.as_deref().unwrap_or("unknown"),
    ));
    ctx.summary.list(&plan);
    let set_common = |o: &mut Outputs| {
        o.set("commit", m.git.commit.clone().unwrap_or_default());
        o.set("branch", m.git.branch.clone().unwrap_or_default());
        o.set("timestamp", m.timestamp.clone());
    };
    if args.dry_run {
        set_common(&mut ctx.outputs);
        ctx.outputs.set("restored", "false");
        ctx.outputs.set("backup-dir", ctx.display(&chosen.dir));
        wf::log("Dry run: every check passed; nothing was changed.");
        return Ok(());
    }

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
        stopped = e.stop(&to_stop).await?;
    }
    // A safety backup of the current state (the same machinery as `backup`).
    wf::group("Safety backup of the current state");
    ctx.summary.heading(3, "Safety backup of the current state");
    let mut safety_target = target.clone();
    safety_target.volumes = Some(volumes.join(","));
    safety_target.paths = None;
    safety_target.stop_containers = None;
    let thresholds = Thresholds {
        min_db_size: 0,
        min_volume_size: 0,
    };
    let spec = Spec {
        mode: "safety",
        backup_root: &args.location.backup_root,
        target: &safety_target,
        thresholds: &thresholds,
        compression: Codec::Gzip,
        compression_level: 1,
        verify_restore: false,
        revision: super::revision(ctx, &Default::default()),
    };
    let safety = take(ctx, &spec)
        .await
        .context("the safety backup of the current state failed, so nothing was restored")?;
    wf::end_group();
    // The safety backup set backup outputs; a rollback has its own.
    ctx.outputs = Outputs::default();
    let safety_dir = ctx.display(&safety.dir);
    ctx.outputs.set("safety-backup-dir", safety_dir.clone());
    ctx.outputs.set("restored", "false");
    set_common(&mut ctx.outputs);
    ctx.outputs.set("backup-dir", ctx.display(&chosen.dir));
    let undo = format!(
        "the safety backup of the state before this rollback is in {safety_dir}; to put it back: predeploy-backup rollback --manifest {safety_dir}/{FILE_NAME} --stop-containers '{}'",
        stop.join(",")
    );

    // 5. Restore (the named containers are stopped since before the safety backup).
    let restored = async {
        if let (Some(d), Some(rec)) = (&db, &m.database) {
            let path = chosen.dir.join(&rec.file.path);
            wf::group(&format!("Restoring database {}", d.creds.db));
            // Load into a scratch database; the live one is replaced only once the load
            // succeeded, so a dump that fails halfway leaves it as it was.
            let scratch = format!(
                "predeploy_restore_{}",
                &uuid::Uuid::new_v4().simple().to_string()[..12]
            );
            d.server.create_database(&d.creds, &scratch).await?;
            let loaded = async {
                let (rx, reader) = pipe::decode_file(&path, rec.file.compression);
                let loaded = d.server.load(&d.creds, &scratch, rx).await;
                let read = reader.await?;
                loaded?;
                read.with_context(|| format!("reading {}", path.display()))?;
                d.server.swap_in(&d.creds, &scratch, &d.creds.db).await?;
                Ok::<_, anyhow::Error>(())
            }
            .await;
            wf::end_group();
            if let Err(e) = loaded {
                let _ = d.server.drop_database(&d.creds, &scratch).await;
                return Err(e.context(format!(
                    "the dump did not load; database `{}` was left as it was",
                    d.creds.db
                )));
            }
        }
        if let Some(e) = &engine {
            let users: Vec<_> = {
                let mut all = vec![];
                for v in &volumes {
                    all.extend(e.containers_using_volume(v).await?);
                }
                all
            };
            let image = e.helper_image(&users, true).await?;
            for v in m.volumes.iter().filter(|v| v.kind == "volume") {
                restore_volume(
                    e,
                    &image,
                    &v.name,
                    &chosen.dir.join(&v.file.path),
                    v.file.compression,
                )
                .await?;
            }
        }
        Ok::<_, anyhow::Error>(())
    }
    .await;
    let not_restarted = crate::docker::restart(&stopped).await;
    drop(safety.lock);
    restored.with_context(|| format!("the rollback failed part way; {undo}"))?;
    if !not_restarted.is_empty() {
        anyhow::bail!("restored, but these containers could not be started again: {}; start them with `docker start`", not_restarted.join(", "));
    }
    ctx.outputs.set("restored", "true");
    ctx.summary.paragraph(&format!(
        "✅ Restored. Safety backup of the previous state: `{safety_dir}`. Next: check out commit `{}` and redeploy.",
        m.git.commit.as_deref().unwrap_or("unknown")
    ));
    wf::log(&format!("Restored. {undo}"));
    Ok(())
}

/// Finds the manifest: `manifest`, else the artifact of `run-id`, else the pointer.
async fn choose(ctx: &mut Context, args: &RollbackArgs) -> Result<Chosen> {
    let root = ctx.resolve(&args.location.backup_root);
    if let Some(p) = &args.manifest {
        let path = ctx.resolve(p);
        let manifest = Manifest::load(&path)?;
        let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        return Ok(Chosen {
            manifest,
            dir,
            source: format!("manifest {}", ctx.display(&path)),
            _download: None,
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
            RestClient::new(&api, token)?
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
        let dir = if has_files { beside } else { root.join(folder) };
        return Ok(Chosen {
            manifest,
            dir,
            source: format!("the artifact `{}` of run {run_id}", args.artifact_name),
            _download: Some(tmp),
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
    })
}

/// Size and SHA-256 of every file against the manifest, the dump's completeness, and the
/// safety of every archive entry. Any doubt refuses the rollback (exit 1).
async fn check_files(ctx: &mut Context, chosen: &Chosen) -> Result<()> {
    let m = chosen.manifest.clone();
    let dir = chosen.dir.clone();
    let problems = tokio::task::spawn_blocking(move || {
        let mut problems = vec![];
        for f in m.files() {
            let path = dir.join(&f.path);
            match crate::archive::hash::sha256_file(&path) {
                Err(e) => problems.push((
                    f.path.clone(),
                    "exists".to_string(),
                    format!("cannot read {}: {e}", path.display()),
                )),
                Ok((size, _)) if size != f.size => problems.push((
                    f.path.clone(),
                    "size".into(),
                    format!(
                        "{size} bytes, the manifest says {}: the file changed since the backup",
                        f.size
                    ),
                )),
                Ok((_, sha)) if sha != f.sha256 => problems.push((
                    f.path.clone(),
                    "sha256".into(),
                    format!(
                        "SHA-256 {sha} differs from the manifest's {}: the file was altered",
                        f.sha256
                    ),
                )),
                Ok(_) => {}
            }
        }
        if problems.is_empty() {
            if let Some(d) = &m.database {
                let r = verify_file_as(
                    &dir.join(&d.file.path),
                    Expect::SqlDump,
                    d.file.compression,
                    0,
                );
                if let Some(f) = r.failure {
                    problems.push((d.file.path.clone(), f.check.as_str().to_string(), f.message));
                }
            }
            for v in &m.volumes {
                let path = dir.join(&v.file.path);
                let checked = std::fs::File::open(&path)
                    .map_err(|e| e.to_string())
                    .and_then(|f| {
                        crate::archive::restore::check_archive(
                            std::io::BufReader::new(f),
                            v.file.compression,
                            &v.file.path,
                        )
                        .map(|_| ())
                        .map_err(|e| e.to_string())
                    });
                if let Err(msg) = checked {
                    problems.push((v.file.path.clone(), "restore-safety".into(), msg));
                }
            }
        }
        problems
    })
    .await?;
    if problems.is_empty() {
        return Ok(());
    }
    for (file, check, msg) in &problems {
        wf::error(
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

/// Empties a volume and refills it from its archive through the Docker archive API
/// (ownership, modes and links come back as archived; Docker reads a gzip itself, other
/// codecs are decoded here and sent as plain tar).
async fn restore_volume(
    engine: &Engine,
    image: &str,
    volume: &str,
    archive: &Path,
    compression: Codec,
) -> Result<()> {
    wf::log(&format!("Restoring volume {volume}"));
    // Docker's archive upload does not apply the root entry (`./`) to the target folder
    // itself, so the volume root's owner and mode are set while it is emptied.
    let root = root_entry(archive, compression)?;
    let mut wipe_script = "find /data -mindepth 1 -maxdepth 1 -exec rm -rf {} +".to_string();
    if let Some((mode, uid, gid)) = root {
        wipe_script.push_str(&format!(
            " && chown {uid}:{gid} /data && chmod {mode:o} /data"
        ));
    }
    let wipe = engine
        .helper(
            volume,
            image,
            false,
            Some(vec!["/bin/sh".into(), "-c".into(), wipe_script]),
        )
        .await?;
    let restored = async {
        let (code, log) = wipe.run_to_end().await?;
        if code != 0 {
            anyhow::bail!("could not empty volume {volume} (exit {code}): {log}");
        }
        // The same (now stopped) container still mounts the volume: refill it through it.
        if compression == Codec::Gzip {
            let file = tokio::fs::File::open(archive).await?;
            let stream = tokio_util::io::ReaderStream::with_capacity(file, 256 * 1024);
            return wipe
                .upload(stream)
                .await
                .with_context(|| format!("writing volume {volume} failed"));
        }
        let (rx, reader) = pipe::decode_file(archive, compression);
        let uploaded = wipe.upload(pipe::into_stream(rx)).await;
        let read = reader.await?;
        uploaded.with_context(|| format!("writing volume {volume} failed"))?;
        read.with_context(|| format!("reading {} failed", archive.display()))
    }
    .await;
    wipe.remove().await;
    restored
}

/// Owner and mode of the archive's root entry (`./`), when it has one.
fn root_entry(archive: &Path, compression: Codec) -> Result<Option<(u32, u64, u64)>> {
    let f = std::fs::File::open(archive)?;
    let gz = codec::reader(compression, std::io::BufReader::new(f))?;
    let mut tar = tar::Archive::new(gz);
    let Some(first) = tar.entries()?.next() else {
        return Ok(None);
    };
    let first = first?;
    let path = first.path()?.to_path_buf();
    let is_root = matches!(path.to_str(), Some("." | "./" | ""));
    if !is_root || first.header().entry_type() != tar::EntryType::Directory {
        return Ok(None);
    }
    let h = first.header();
    Ok(Some((h.mode()? & 0o7777, h.uid()?, h.gid()?)))
}
