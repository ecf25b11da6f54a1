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
use crate::actions::rest::{check_provenance, RestClient, TrustPolicy};
use crate::actions::summary::{self as md, human_size};
use crate::archive::verify::{verify_file, Expect};
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
        check_free_space: true,
    };
    let spec = Spec {
        mode: "safety",
        backup_root: &args.location.backup_root,
        target: &safety_target,
        thresholds: &thresholds,
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
        "the safety backup of the state before this rollback is in {safety_dir}; to put it back: predeploy-backup rollback --manifest {safety_dir}/{FILE_NAME}{}",
        if stop.is_empty() {
            String::new()
        } else {
            format!(" --stop-containers '{}'", stop.join(","))
        }
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
            for v in m.volumes.iter().filter(|v| v.kind == "volume") {
                let archive = chosen.dir.join(&v.file.path);
                match stage_volume(e, &image, &v.name, &archive).await {
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
                wf::group(&format!("Restoring database {}", d.creds.db));
                // Load into a scratch database; the live one is replaced only once the load
                // succeeded, so a dump that fails halfway leaves it as it was.
                let scratch = format!(
                    "predeploy_restore_{}",
                    &uuid::Uuid::new_v4().simple().to_string()[..12]
                );
                d.server.create_database(&d.creds, &scratch).await?;
                let loaded = async {
                    let (rx, reader) = pipe::gunzip_file(&path);
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
    let not_restarted = crate::docker::restart(&stopped).await;
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
    wf::log(&format!("Restored. {undo}"));
    Ok(())
}

/// Finds the manifest: `manifest`, else the artifact of `run-id`, else the pointer.
async fn choose(ctx: &mut Context, args: &RollbackArgs) -> Result<Chosen> {
    let root = ctx.backup_root(&args.location.backup_root)?;
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
            let client = RestClient::new(&api, token)?;
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
            wf::log(&format!(
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
        if !has_files && !dir.is_dir() {
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
                let r = verify_file(&dir.join(&d.file.path), Expect::SqlDump, 0);
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

/// A volume archive unpacked into a staging folder on the volume itself, not yet live.
struct Staged {
    engine: Engine,
    image: String,
    volume: String,
    /// `.predeploy-restore-<id>` (our own random name) at the volume root.
    stage: String,
    root: Option<(u32, u64, u64)>,
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

/// Unpacks `archive` into a staging folder on `volume`, leaving the live content untouched:
/// the archive is checked again (the file may have changed since), its size compared with
/// the volume's free space, then written. On any failure the staging folder is removed.
async fn stage_volume(
    engine: &Engine,
    image: &str,
    volume: &str,
    archive: &Path,
) -> Result<Staged> {
    wf::log(&format!(
        "Unpacking the backup of volume {volume} next to its live data"
    ));
    let path = archive.to_path_buf();
    let name = archive.display().to_string();
    let plan = tokio::task::spawn_blocking(move || {
        let f = std::fs::File::open(&path)?;
        crate::archive::restore::check_archive(std::io::BufReader::new(f), &name)
            .map_err(anyhow::Error::from)
    })
    .await??;
    let root = root_entry(archive)?;
    let staged = Staged {
        engine: engine.clone(),
        image: image.to_string(),
        volume: volume.to_string(),
        stage: format!(
            ".predeploy-restore-{}",
            &uuid::Uuid::new_v4().simple().to_string()[..12]
        ),
        root,
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
        let file = tokio::fs::File::open(archive).await?;
        let stream = tokio_util::io::ReaderStream::with_capacity(file, 256 * 1024);
        prep.upload_to(&format!("/data/{}", staged.stage), stream)
            .await
            .with_context(|| {
                format!("writing the backup of volume {volume} failed (is the volume full?); its live data was not touched")
            })
    }
    .await;
    prep.remove().await;
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
            Ok((code, log)) => wf::warning(
                "Staging folder left behind",
                None,
                &format!(
                    "could not remove /{} from volume {} (exit {code}): {log}; delete it by hand",
                    self.stage, self.volume
                ),
            ),
            Err(e) => wf::warning(
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
        wf::log(&format!("Restoring volume {}", self.volume));
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

/// Owner and mode of the archive's root entry (`./`), when it has one.
fn root_entry(archive: &Path) -> Result<Option<(u32, u64, u64)>> {
    let f = std::fs::File::open(archive)?;
    let gz = flate2::read::MultiGzDecoder::new(std::io::BufReader::new(f));
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
