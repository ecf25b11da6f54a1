//! How a backup becomes a restore point: the verification reports are judged, and only when
//! every file passed are the manifest, `.last-deployment-backup`, the outputs, the summary
//! and the artifact written. `backup` and `verify` both end here, so "verified" means the
//! same thing whoever made the files.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};

use super::Context;
use crate::actions::artifact::{artifact_url, validate_name, ArtifactClient};
use crate::actions::summary::{self as md, human_size};
use crate::archive::codec::Codec;
use crate::archive::verify::FileReport;
use crate::cli::Publish;
use crate::error::VerificationFailed;
use crate::manifest::{DatabaseRecord, FileRecord, Manifest, Pointer, SourceKind, VolumeRecord};

/// What we know about the database besides its file.
#[derive(Clone, Debug, Default)]
pub struct DbMeta {
    pub name: Option<String>,
    pub user: Option<String>,
    pub container: Option<String>,
    pub compose_project: Option<String>,
    pub compose_service: Option<String>,
    pub url: Option<String>,
}

/// What we know about a volume besides its file.
#[derive(Clone, Debug)]
pub struct VolMeta {
    pub name: String,
    pub kind: SourceKind,
}

/// The files of one backup and their verification reports.
pub struct Verified {
    pub dir: PathBuf,
    pub db: Option<(FileReport, DbMeta)>,
    pub volumes: Vec<(FileReport, VolMeta)>,
}

impl Verified {
    fn reports(&self) -> impl Iterator<Item = &FileReport> {
        self.db
            .iter()
            .map(|(r, _)| r)
            .chain(self.volumes.iter().map(|(r, _)| r))
    }

    /// [`Self::report`], then [`Self::failures`], refused through [`reject`].
    pub fn judge(&self, ctx: &mut Context) -> Result<()> {
        self.report(ctx);
        match self.failures(ctx) {
            Some(rejected) => Err(reject(ctx, rejected)),
            None => Ok(()),
        }
    }

    /// Sets the file outputs and the summary's file table.
    pub fn report(&self, ctx: &mut Context) {
        self.set_file_outputs(ctx);
        self.summary_table(ctx, "Files");
        for (r, _) in &self.volumes {
            let shown = self.shown(ctx, &r.path);
            warn_restore_refusal(ctx, r, &shown);
        }
    }

    /// The same files after their folder was renamed.
    pub fn moved_to(mut self, dir: &Path) -> Verified {
        let re = |p: &mut PathBuf| {
            if let Some(name) = p.file_name() {
                *p = dir.join(name);
            }
        };
        if let Some((r, _)) = &mut self.db {
            re(&mut r.path);
        }
        for (r, _) in &mut self.volumes {
            re(&mut r.path);
        }
        self.dir = dir.to_path_buf();
        self
    }

    /// Why these files are not a restore point (`None` when every file is verified): what
    /// failed, as values; [`reject`] tells the runner.
    pub fn failures(&self, ctx: &Context) -> Option<Rejected> {
        let mut rejected = Rejected::default();
        let mut lines = vec![];
        for r in self.reports() {
            if let Some(f) = &r.failure {
                let shown = self.shown(ctx, &r.path);
                let message = self.message(&r.path, &f.message);
                let check = f.check.as_str();
                lines.push(format!("{shown}: {check} check failed: {message}"));
                rejected.failed.push(FailedCheck {
                    check: check.to_string(),
                    message: format!("{shown}: {message}"),
                    file: shown,
                });
            } else if !r.verified() {
                lines.push(format!("{}: not verified", self.shown(ctx, &r.path)));
            }
        }
        if lines.is_empty() {
            return None;
        }
        let total = self.reports().count();
        rejected.error = VerificationFailed(format!(
            "{} of {total} backup file(s) failed verification:\n{}\nThe backup is not a restore point; do not deploy. Take a new backup (check the disk and the source) and run again.",
            lines.len(),
            lines.join("\n")
        ));
        Some(rejected)
    }

    /// Whether these files are in the hidden `.partial` folder of a backup being made
    /// (deleted when it fails).
    fn partial(&self) -> bool {
        self.dir
            .file_name()
            .is_some_and(|n| n.to_string_lossy().ends_with(".partial"))
    }

    /// A file as the user reads it: for a failed backup in the making, its name only (the
    /// folder is deleted), else its path.
    fn shown(&self, ctx: &Context, p: &Path) -> String {
        if self.partial() {
            p.file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .to_string()
        } else {
            ctx.display(p)
        }
    }

    /// A check's message without a path of a deleted `.partial` folder in it.
    fn message(&self, p: &Path, msg: &str) -> String {
        if self.partial() {
            msg.replace(&p.display().to_string(), "the file")
        } else {
            msg.to_string()
        }
    }

    fn set_file_outputs(&self, ctx: &mut Context) {
        ctx.outputs.set("backup-dir", ctx.display(&self.dir));
        if let Some((r, _)) = &self.db {
            ctx.outputs.set("db-backup-path", ctx.display(&r.path));
            ctx.outputs.set("db-backup-size", r.size.to_string());
            ctx.outputs
                .set("db-backup-sha256", r.sha256.clone().unwrap_or_default());
        }
        let paths: Vec<String> = self
            .volumes
            .iter()
            .map(|(r, _)| ctx.display(&r.path))
            .collect();
        let sizes: Vec<String> = self
            .volumes
            .iter()
            .map(|(r, _)| r.size.to_string())
            .collect();
        ctx.outputs.set("volume-backup-paths", paths.join("\n"));
        ctx.outputs.set("volume-backup-sizes", sizes.join("\n"));
    }

    fn summary_table(&self, ctx: &mut Context, title: &str) {
        let partial = self.partial();
        let rows: Vec<Vec<String>> = self
            .reports()
            .map(|r| {
                let status = match &r.failure {
                    None if r.verified() => "✅".to_string(),
                    Some(f) => format!(
                        "❌ {}: {}",
                        f.check.as_str(),
                        md::text(&self.message(&r.path, &f.message))
                    ),
                    None => "❌ not verified".into(),
                };
                vec![
                    if partial {
                        // Deleted with the failed backup: its name, not a path that is gone.
                        format!(
                            "{} (not kept)",
                            md::code(&r.path.file_name().unwrap_or_default().to_string_lossy())
                        )
                    } else {
                        md::code(&ctx.display(&r.path))
                    },
                    human_size(r.size),
                    r.sha256
                        .as_deref()
                        .map(|s| format!("`{}…`", &s[..s.len().min(16)]))
                        .unwrap_or_else(|| "—".into()),
                    r.passed
                        .iter()
                        .map(|c| c.as_str())
                        .collect::<Vec<_>>()
                        .join(", "),
                    status,
                ]
            })
            .collect();
        ctx.summary.heading(3, title).table(
            &["File", "Size", "SHA-256", "Checks passed", "Result"],
            &rows,
        );
    }

    /// The manifest of a verified backup.
    pub fn manifest(&self, ctx: &Context, mut m: Manifest) -> Manifest {
        let rel = |r: &FileReport| {
            r.path
                .strip_prefix(&self.dir)
                .map(|p| p.display().to_string())
                .unwrap_or_else(|_| r.path.display().to_string())
        };
        let record = |r: &FileReport| FileRecord {
            path: rel(r),
            size: r.size,
            sha256: r.sha256.clone().unwrap_or_default(),
            checks: r.passed.iter().map(|c| c.as_str().to_string()).collect(),
            compression: r.codec,
            compression_level: r.level,
            encrypted: r
                .encrypted
                .as_ref()
                .map(|_| crate::archive::crypt::SCHEME.to_string()),
            recipients: r.encrypted.clone().unwrap_or_default(),
        };
        m.verified = self.reports().all(FileReport::verified);
        m.backup_dir = ctx.display(&self.dir);
        m.run = ctx.runtime.run_id.as_ref().map(|_| crate::manifest::Run {
            repository: ctx.runtime.repository.clone(),
            run_id: ctx.runtime.run_id.clone(),
            run_attempt: ctx.runtime.run_attempt.clone(),
            workflow: ctx.runtime.workflow.clone(),
            job: ctx.runtime.job.clone(),
            url: ctx.runtime.run_url(),
        });
        m.database = self.db.as_ref().map(|(r, meta)| {
            let sql = r.sql.clone().unwrap_or_default();
            DatabaseRecord {
                file: record(r),
                name: meta.name.clone(),
                user: meta.user.clone(),
                container: meta.container.clone(),
                compose_project: meta.compose_project.clone(),
                compose_service: meta.compose_service.clone(),
                url: meta.url.as_deref().map(|u| ctx.wf.redact(u)),
                server_version: sql.server_version,
                dump_tool_version: sql.dump_version,
                tables: sql.tables,
            }
        });
        m.volumes = self
            .volumes
            .iter()
            .map(|(r, meta)| {
                let t = r.tar.clone().unwrap_or_default();
                VolumeRecord {
                    file: record(r),
                    name: meta.name.clone(),
                    kind: meta.kind,
                    entries: t.entries,
                    total_bytes: t.total_bytes,
                }
            })
            .collect();
        m
    }
}

/// One file's failed check, as its annotation shows it.
#[derive(Debug)]
pub struct FailedCheck {
    /// The check's name (`gzip`, `sql-complete`, …).
    pub check: String,
    /// The file as the user reads it.
    pub file: String,
    pub message: String,
}

/// Files that are not a restore point ([`Verified::failures`]): each failed check, and the
/// error the run ends with.
#[derive(Debug, Default)]
pub struct Rejected {
    pub failed: Vec<FailedCheck>,
    pub error: VerificationFailed,
}

/// Tells the runner that a backup is not a restore point: one `::error` annotation per failed
/// check, the output `verified=false`, the first failed check kept for the alert. Returns
/// the error the run ends with (exit 1).
pub fn reject(ctx: &mut Context, rejected: Rejected) -> anyhow::Error {
    for f in &rejected.failed {
        ctx.wf.error(
            &format!("Backup check `{}` failed", f.check),
            Some(&f.file),
            &f.message,
        );
    }
    if let Some(f) = rejected.failed.first() {
        ctx.failed_check.get_or_insert_with(|| f.check.clone());
    }
    ctx.outputs.set("verified", "false");
    rejected.error.into()
}

/// Checks the artifact settings before any work is done, so that a bad artifact name or a
/// missing artifact service fails in a second, not after the backup.
pub fn check_publish(ctx: &Context, publish: &Publish) -> Result<()> {
    let upload = publish
        .upload_artifact
        .unwrap_or_else(|| ctx.runtime.has_artifact_service());
    if upload {
        validate_name(&publish.artifact_name)?;
        if !ctx.runtime.has_artifact_service() {
            return Err(crate::error::usage(
                "upload-artifact is true but the Actions artifact service is not available (ACTIONS_RESULTS_URL / ACTIONS_RUNTIME_TOKEN are not set): run inside GitHub Actions, or set upload-artifact: false",
            ));
        }
    }
    Ok(())
}

/// Writes the manifest (unless the caller already placed it) and the pointer, sets every
/// output, writes the success summary, and uploads the artifact.
pub async fn publish(
    ctx: &mut Context,
    manifest: &Manifest,
    dir: &Path,
    publish: &Publish,
    retention_days: u32,
) -> Result<()> {
    let manifest_path = dir.join(crate::manifest::FILE_NAME);
    if !manifest_path.exists() {
        manifest
            .write(dir)
            .with_context(|| format!("cannot write the manifest into {}", dir.display()))?;
    }
    let rel = |p: &str| ctx.pointer_form(&dir.join(p));
    let pointer = Pointer {
        deployment_timestamp: manifest.timestamp.clone(),
        backup_dir: ctx.pointer_form(dir),
        db_backup: manifest
            .database
            .as_ref()
            .map(|d| rel(&d.file.path))
            .unwrap_or_default(),
        minio_backup: manifest
            .volumes
            .first()
            .map(|v| rel(&v.file.path))
            .unwrap_or_default(),
        git_commit: manifest.git.commit.clone().unwrap_or_default(),
        git_branch: manifest.git.branch.clone().unwrap_or_default(),
        manifest: rel(crate::manifest::FILE_NAME),
    };
    let pointer_path = pointer.write(&ctx.workspace).with_context(|| {
        format!(
            "cannot write {} in the workspace",
            crate::manifest::POINTER_FILE
        )
    })?;
    ctx.give_to_workspace_owner(&pointer_path);
    // verify mode writes its manifest here.
    ctx.give_to_workspace_owner(&manifest_path);

    let o = &mut ctx.outputs;
    o.set("verified", "true");
    o.set("manifest-path", ctx_display(&ctx.workspace, &manifest_path));
    o.set("commit", manifest.git.commit.clone().unwrap_or_default());
    o.set("branch", manifest.git.branch.clone().unwrap_or_default());
    o.set("timestamp", manifest.timestamp.clone());

    let upload = publish
        .upload_artifact
        .unwrap_or_else(|| ctx.runtime.has_artifact_service());
    let mut artifact_note = String::from(
        "Artifact: not uploaded (outside GitHub Actions, or `upload-artifact: false`).",
    );
    if upload {
        let (Some(url), Some(token)) = (&ctx.runtime.results_url, &ctx.runtime.runtime_token)
        else {
            return Err(crate::error::usage(
                "upload-artifact is true but the Actions artifact service is not available (ACTIONS_RESULTS_URL / ACTIONS_RUNTIME_TOKEN are not set): run inside GitHub Actions, or set upload-artifact: false. The local backup is verified and kept.",
            ));
        };
        let folder = dir
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default();
        let mut files = vec![(
            format!("{folder}/{}", crate::manifest::FILE_NAME),
            manifest_path.clone(),
        )];
        if publish.include_backups_in_artifact {
            for f in manifest.files() {
                files.push((format!("{folder}/{}", f.path), dir.join(&f.path)));
            }
        }
        let client = ArtifactClient::new(url, token, &ctx.wf)?;
        let up = client
            .upload(&publish.artifact_name, &files, Some(retention_days))
            .await
            .context("the backup is verified and kept on disk, but uploading the manifest artifact failed, so a rollback from another run would not find it; re-run the job")?;
        let url = match (&ctx.runtime.repository, &ctx.runtime.run_id) {
            (Some(repo), Some(run)) => artifact_url(
                ctx.runtime
                    .server_url
                    .as_deref()
                    .unwrap_or("https://github.com"),
                repo,
                run,
                up.id,
            ),
            _ => String::new(),
        };
        ctx.outputs.set("artifact-id", up.id.to_string());
        ctx.outputs.set("artifact-url", url.clone());
        ctx.outputs.set("artifact-digest", up.digest.clone());
        artifact_note = format!(
            "Artifact {} uploaded (id {}, {}, sha256 `{}`){}.",
            md::code(&publish.artifact_name),
            up.id,
            human_size(up.size),
            up.digest,
            if url.is_empty() {
                String::new()
            } else {
                format!(": {url}")
            }
        );
    }

    let s = &mut ctx.summary;
    s.verdict("✅ Pre-deployment backup verified");
    s.list(&[
        format!(
            "Backup folder: {}",
            md::code(&ctx_display(&ctx.workspace, dir))
        ),
        format!(
            "Commit {} on branch {}",
            md::code(manifest.git.commit.as_deref().unwrap_or("unknown")),
            md::code(manifest.git.branch.as_deref().unwrap_or("unknown"))
        ),
        format!(
            "Manifest: {}",
            md::code(&ctx_display(&ctx.workspace, &manifest_path))
        ),
        artifact_note,
    ]);
    if let Some(db) = &manifest.database {
        if !db.tables.is_empty() {
            let rows: Vec<Vec<String>> = db
                .tables
                .iter()
                .map(|(t, n)| vec![md::code(t), n.to_string()])
                .collect();
            s.heading(3, "Rows per table (from the dump)")
                .table(&["Table", "Rows"], &rows);
        }
    }
    if !manifest.timings.is_empty() {
        let rows: Vec<Vec<String>> = manifest
            .timings
            .iter()
            .map(|(k, v)| vec![k.clone(), format!("{v:.2} s")])
            .collect();
        s.heading(3, "Timings").table(&["Phase", "Time"], &rows);
    }
    s.heading(3, "Rollback");
    let instructions = rollback_instructions(manifest, &ctx.workspace, &ctx.runtime, dir);
    s.paragraph(&instructions);
    Ok(())
}

fn ctx_display(workspace: &Path, p: &Path) -> String {
    p.strip_prefix(workspace)
        .map(|r| r.display().to_string())
        .unwrap_or_else(|_| p.display().to_string())
}

/// The exact ways back: the rollback workflow with this run's id, our CLI, and the seed's
/// manual commands. Markdown; used by the summary and by `info`.
pub fn rollback_instructions(
    m: &Manifest,
    workspace: &Path,
    rt: &crate::actions::Runtime,
    dir: &Path,
) -> String {
    let shown = super::pointer_form(workspace, dir);
    let run_id = m
        .run
        .as_ref()
        .and_then(|r| r.run_id.clone())
        .or_else(|| rt.run_id.clone());
    let mut out = String::new();
    if let Some(id) = run_id {
        let repo = m
            .run
            .as_ref()
            .and_then(|r| r.repository.clone())
            .or_else(|| rt.repository.clone());
        out.push_str("With the rollback workflow (see the README):\n\n```sh\n");
        out.push_str(&format!(
            "gh workflow run rollback.yml{} -f run-id={id}\n```\n\n",
            repo.map(|r| format!(" --repo {r}")).unwrap_or_default()
        ));
    }
    out.push_str("With the CLI on the deploy host:\n\n```sh\n");
    let encrypted = m.files().iter().any(|f| f.encrypted.is_some());
    out.push_str(&format!(
        "{}predeploy-backup rollback --manifest {shown}/{}\n```\n\n",
        if encrypted {
            "PREDEPLOY_AGE_IDENTITY=\"$(cat key.txt)\" "
        } else {
            ""
        },
        crate::manifest::FILE_NAME
    ));
    out.push_str("By hand (the seed's commands):\n\n```sh\n");
    out.push_str("# 1. stop the services that use the data\n");
    if let Some(db) = &m.database {
        let target = db
            .container
            .clone()
            .unwrap_or_else(|| "<postgres-container>".into());
        let user = db.user.as_deref().unwrap_or("postgres");
        let name = db.name.as_deref().unwrap_or("postgres");
        let quoted = crate::postgres::ident(name).replace('\'', "'\\''");
        out.push_str(&format!(
            "# 2. restore the database: recreate it empty, then load the dump (a plain dump has no DROP statements)\n\
             docker exec -i {target} psql -U {user} -d postgres -v ON_ERROR_STOP=1 \\\n  \
             -c 'DROP DATABASE IF EXISTS {quoted} WITH (FORCE)' -c 'CREATE DATABASE {quoted} OWNER {user}'\n\
             {read} | \\\n  docker exec -i {target} psql -U {user} -d {name} -v ON_ERROR_STOP=1 --single-transaction\n",
            read = read_command(&shown, &db.file),
        ));
    }
    for v in &m.volumes {
        let (what, target) = match v.kind {
            SourceKind::Volume => (format!("volume {}", v.name), format!("-v {}:/data", v.name)),
            SourceKind::Path => (
                format!("folder {}", v.name),
                format!("-v \"{}\":/data", v.name),
            ),
            SourceKind::File => (
                format!("{} (into its volume)", v.name),
                "-v <volume>:/data".to_string(),
            ),
        };
        let wipe = "rm -rf /data/* /data/.[!.]*";
        let host_dir = if shown.starts_with('/') {
            shown.clone()
        } else {
            format!("$(pwd)/{}", shown.trim_start_matches("./"))
        };
        out.push_str(&match v.file.compression {
            Codec::Gzip if v.file.encrypted.is_none() => format!(
                "# 3. restore {what}\ndocker run --rm {target} -v \"{host_dir}\":/backup <image with sh and tar> \\\n  sh -c '{wipe} && tar xzf /backup/{file} -C /data'\n",
                file = v.file.path
            ),
            // Decoded on the host: the helper image needs no zstd.
            _ => format!(
                "# 3. restore {what}\n{read} | docker run --rm -i {target} <image with sh and tar> \\\n  sh -c '{wipe} && tar xf - -C /data'\n",
                read = read_command(&shown, &v.file),
            ),
        });
    }
    if let Some(c) = &m.git.commit {
        out.push_str(&format!("# 4. revert the code\ngit checkout {c}\n"));
    }
    out.push_str("# 5. start the services again\n```\n");
    out
}

/// The shell command that writes a recorded file's plain content to stdout: `gunzip -c
/// dir/file`, or for an encrypted one `age -d -i key.txt dir/file | gunzip -c`.
fn read_command(shown: &str, f: &crate::manifest::FileRecord) -> String {
    let cat = f.compression.cat_command();
    if f.encrypted.is_some() {
        format!("age -d -i key.txt {shown}/{} | {cat}", f.path)
    } else {
        format!("{cat} {shown}/{}", f.path)
    }
}

/// A volume archive that is intact (verified) but holds an entry that a rollback's
/// restore-safety check refuses (a symbolic link that leaves the volume, say
/// `/../../etc/shadow`): rollback refuses the whole backup before it changes anything, so
/// the user learns it now, when the backup is made, not when it is needed: a `::warning`
/// naming the entry, and the same in the summary. `shown` is the archive as the user reads
/// it (its path or URL).
pub fn warn_restore_refusal(ctx: &mut Context, r: &FileReport, shown: &str) {
    let Some((index, path, reason)) = r.tar.as_ref().and_then(|t| t.restore_refusal.as_ref())
    else {
        return;
    };
    let message = format!(
        "{shown}: entry {index} `{}` will be refused by rollback: {reason}. A rollback to this backup is refused before it changes anything (the database too). The archive is intact and verified, but it is not a restore point as it is: change the entry in the volume (a link that stays inside it, e.g. a relative one, or remove it), then back up again.",
        crate::names::shown(path)
    );
    ctx.report
        .warning("Rollback will refuse this archive", Some(shown), &message);
    ctx.summary.paragraph(&format!("⚠️ {}", md::text(&message)));
}
