//! One file per mode, and what they share: the run context, how a run ends (outputs,
//! summary, alerts whatever happened), and how a verified backup is recorded.

pub mod backup;
pub mod crypto;
pub mod destination;
pub mod exit;
pub mod info;
pub mod prune;
pub mod record;
pub mod rollback;
pub mod verify;

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Result;

use crate::actions::commands as wf;
use crate::actions::outputs::Outputs;
use crate::actions::summary::Summary;
use crate::actions::Runtime;
use crate::cli::{Cli, Mode};

/// What every mode works with.
pub struct Context {
    pub runtime: Runtime,
    /// Absolute workspace folder: relative inputs and `.last-deployment-backup` live here.
    pub workspace: PathBuf,
    pub outputs: Outputs,
    pub summary: Summary,
    pub started: Instant,
    /// Set by a mode that knows which check failed, for the alert.
    pub failed_check: Option<String>,
    /// The backup folder this run made or used, for the alert.
    pub backup_dir: Option<String>,
    /// Commit and branch, once known, for the alert.
    pub revision: (Option<String>, Option<String>),
    /// Something failed that does not fail the run (retention after a good backup): it is
    /// still alerted on.
    pub degraded: Option<String>,
    /// How to reach the Docker engine (TLS material, SSH key), from the mode's inputs.
    pub engine: crate::transport::Settings,
    /// Engine warnings already shown (a rollback connects twice).
    engine_warned: Vec<String>,
    /// How this run talks to the runner, with the run's secrets ([`wf::Workflow`]).
    pub wf: wf::Workflow,
    /// Where the engine reports progress ([`wf::Workflow::reporter`]).
    pub report: std::sync::Arc<dyn crate::report::Reporter>,
    /// Containers this run stopped: started again at the end of the run, and by `main`
    /// when the job is cancelled (it holds a clone).
    pub stopped: crate::docker::Stopped,
}

impl Context {
    pub fn new(
        runtime: Runtime,
        workspace_arg: Option<&Path>,
        wf: wf::Workflow,
        stopped: crate::docker::Stopped,
    ) -> Result<Context> {
        let cwd = std::env::current_dir()?;
        let workspace = workspace_arg
            .map(Path::to_path_buf)
            .or_else(|| runtime.workspace.clone())
            .unwrap_or_else(|| cwd.clone());
        let workspace = if workspace.is_absolute() {
            workspace
        } else {
            cwd.join(workspace)
        };
        Ok(Context {
            runtime,
            workspace,
            outputs: Outputs::default(),
            summary: Summary::new(),
            started: Instant::now(),
            failed_check: None,
            backup_dir: None,
            revision: (None, None),
            degraded: None,
            engine: Default::default(),
            engine_warned: vec![],
            report: wf.reporter(),
            wf,
            stopped,
        })
    }

    /// Connects to the Docker engine with the mode's transport settings; its warnings are
    /// shown once.
    pub async fn connect_engine(&mut self) -> Result<crate::docker::Engine> {
        let engine = crate::docker::Engine::connect(&self.engine).await?;
        for w in engine.warnings() {
            if !self.engine_warned.contains(w) {
                self.wf.warning("Docker engine", None, w);
                self.engine_warned.push(w.clone());
            }
        }
        Ok(engine)
    }

    /// A path from an input: relative ones are relative to the workspace.
    pub fn resolve(&self, p: &Path) -> PathBuf {
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.workspace.join(p)
        }
    }

    /// How the pointer file and the instructions write a path, the way they read it back:
    /// `./rel` inside the workspace, else the absolute path (never `.//abs`).
    pub fn pointer_form(&self, p: &Path) -> String {
        pointer_form(&self.workspace, p)
    }

    /// The backup root an input names, resolved. Inside the action's container (a Docker
    /// container action sees only the workspace of the host), an absolute root outside the
    /// workspace is the container's own disk, gone when the step ends: refused, exit 2.
    pub fn backup_root(&self, p: &Path) -> Result<PathBuf> {
        let root = self.resolve(p);
        let in_container = self.runtime.in_actions && Path::new("/.dockerenv").exists();
        if in_container && p.is_absolute() && !root.starts_with(&self.workspace) {
            return Err(crate::error::usage(format!(
                "backup-root is {}, an absolute path outside the workspace: inside the action's container that is the container's own disk, deleted when the step ends. Use a path relative to the workspace (e.g. `backups`), or the destination input (host:///abs/path, volume://name or s3://...) to keep backups outside it",
                p.display()
            )));
        }
        Ok(root)
    }

    /// Gives what this run wrote into the workspace to the owner of the workspace folder
    /// (the runner's user), so that a non-root runner can `git clean -ffdx` it on the next
    /// checkout. `path` and everything under it, plus the folders between the workspace
    /// and `path` that we created. Nothing happens outside the workspace, or when the owner
    /// is already right; a failure (not root) only leaves things as they were.
    pub fn give_to_workspace_owner(&self, path: &Path) {
        use std::os::unix::fs::MetadataExt;
        let Ok(ws) = std::fs::metadata(&self.workspace) else {
            return;
        };
        let (uid, gid) = (ws.uid(), ws.gid());
        let Ok(rel) = path.strip_prefix(&self.workspace) else {
            return;
        };
        let fix = |p: &Path| {
            if let Ok(m) = std::fs::symlink_metadata(p) {
                if m.uid() != uid || m.gid() != gid {
                    let _ = std::os::unix::fs::lchown(p, Some(uid), Some(gid));
                }
            }
        };
        // The folders on the way (e.g. `backups/`).
        let mut at = self.workspace.clone();
        for part in rel.parent().into_iter().flat_map(|p| p.components()) {
            at.push(part);
            fix(&at);
        }
        let mut stack = vec![path.to_path_buf()];
        while let Some(p) = stack.pop() {
            fix(&p);
            if std::fs::symlink_metadata(&p).is_ok_and(|m| m.is_dir()) {
                if let Ok(rd) = std::fs::read_dir(&p) {
                    stack.extend(rd.flatten().map(|e| e.path()));
                }
            }
        }
    }

    /// How a path is shown to the user and recorded: relative to the workspace when inside
    /// it (the same on the runner and in the action's container), else absolute.
    pub fn display(&self, p: &Path) -> String {
        match p.strip_prefix(&self.workspace) {
            Ok(rel) if rel.as_os_str().is_empty() => ".".into(),
            Ok(rel) => rel.display().to_string(),
            Err(_) => p.display().to_string(),
        }
    }
}

/// See [`Context::pointer_form`].
pub fn pointer_form(workspace: &Path, p: &Path) -> String {
    match p.strip_prefix(workspace) {
        Ok(rel) if rel.as_os_str().is_empty() => ".".into(),
        Ok(rel) => format!("./{}", rel.display()),
        Err(_) => p.display().to_string(),
    }
}

/// Runs a parsed command line to the end: the mode, then (whatever happened) the outputs,
/// the summary and the alert. Returns the mode's error for `main` to report (through the
/// same `wf`, which holds every secret the run registered).
pub async fn run(cli: Cli, wf: wf::Workflow, stopped: crate::docker::Stopped) -> Result<()> {
    let runtime = Runtime::from_env();
    if let Some(t) = &runtime.runtime_token {
        wf.mask(t);
    }
    let mode = cli.mode;
    let mode_name = mode.name();
    let alerts = mode.alerts().clone();
    let workspace_arg = match &mode {
        Mode::Backup(a) => a.location.workspace.clone(),
        Mode::Verify(a) => a.location.workspace.clone(),
        Mode::Rollback(a) => a.location.workspace.clone(),
        Mode::Info(a) => a.location.workspace.clone(),
        Mode::Prune(a) => a.location.workspace.clone(),
    };
    let alert_config = crate::alert::AlertConfig::from_inputs(
        alerts.alert_webhook_url.as_deref(),
        alerts.alert_email.as_deref(),
        alerts.smtp_url.as_deref(),
        &alerts.alert_on,
        &*wf.reporter(),
        wf.secrets(),
    );
    let mut ctx = Context::new(runtime, workspace_arg.as_deref(), wf, stopped)?;
    if let Mode::Backup(crate::cli::BackupArgs { engine, .. })
    | Mode::Rollback(crate::cli::RollbackArgs { engine, .. }) = &mode
    {
        // The private keys are secrets: masked before anything can print them.
        for secret in [&engine.docker_tls_key, &engine.ssh_private_key]
            .into_iter()
            .flatten()
        {
            ctx.wf.mask(secret);
        }
        ctx.engine = engine.settings();
    }

    let result = match mode {
        Mode::Backup(a) => backup::run(&mut ctx, a).await,
        Mode::Verify(a) => verify::run(&mut ctx, a).await,
        Mode::Rollback(a) => rollback::run(&mut ctx, a).await,
        Mode::Info(a) => info::run(&mut ctx, a).await,
        Mode::Prune(a) => prune::run(&mut ctx, a).await,
    };

    // Whatever happened: containers we stopped are started again.
    let not_restarted = ctx.stopped.restart_all(&*ctx.report).await;
    let result = match (result, not_restarted.is_empty()) {
        (Ok(()), false) => Err(anyhow::anyhow!(
            "containers could not be started again: {}; start them by hand with `docker start`",
            not_restarted.join(", ")
        )),
        (r, _) => r,
    };

    if let Err(e) = &result {
        if matches!(mode_name, "backup" | "verify") {
            ctx.outputs.set("verified", "false");
        }
        let title = exit::kind(e).title();
        ctx.summary
            .verdict(&format!("❌ predeploy-backup {mode_name} failed: {title}"))
            .code("", &exit::message(e));
        if matches!(mode_name, "backup" | "verify") {
            ctx.summary
                .paragraph("Nothing was deleted. The deploy should not proceed: no verified restore point was made.");
        }
    }

    let alert = crate::alert::Alert {
        success: result.is_ok() && ctx.degraded.is_none(),
        mode: mode_name.to_string(),
        repository: ctx.runtime.repository.clone(),
        run_url: ctx.runtime.run_url(),
        commit: ctx.revision.0.clone(),
        branch: ctx.revision.1.clone(),
        backup_dir: ctx.backup_dir.clone(),
        failed_check: ctx.failed_check.clone(),
        message: match (&result, &ctx.degraded) {
            (Ok(()), None) => format!("predeploy-backup {mode_name} succeeded"),
            (Ok(()), Some(d)) => format!("predeploy-backup {mode_name} succeeded, but {d}"),
            (Err(e), _) => format!("{e:#}"),
        },
    };
    let deliveries = crate::alert::send(&alert_config, &alert).await;
    for line in crate::alert::log_deliveries(&deliveries, &*ctx.report, ctx.wf.secrets()) {
        ctx.summary
            .paragraph(&format!("⚠️ {}", crate::actions::summary::text(&line)));
    }

    finish(&ctx, mode_name);
    result
}

/// Writes outputs and summary where the runner reads them (and outputs to stdout for the
/// CLI). A failure to write them is reported but does not hide the mode's own result.
fn finish(ctx: &Context, mode_name: &str) {
    if let Some(path) = &ctx.runtime.output_file {
        if let Err(e) = ctx.outputs.write_to(path) {
            ctx.wf.error(
                "Outputs not written",
                None,
                &format!("cannot write step outputs to {}: {e}", path.display()),
            );
        }
    } else if !ctx.runtime.in_actions && mode_name != "info" {
        // The CLI prints what the action would set as outputs (`info` printed its report).
        for (k, v) in &ctx.outputs.values {
            ctx.wf
                .print_report(&format!("{k}={}", v.replace(['\n', '\r'], ",")));
        }
    }
    if let Some(path) = &ctx.runtime.summary_file {
        if let Err(e) = ctx.summary.write_to(path, ctx.wf.secrets()) {
            ctx.wf.warning(
                "Summary not written",
                None,
                &format!("cannot write the job summary to {}: {e}", path.display()),
            );
        }
    }
}

/// Commit and branch: inputs, else the runner's, else git's in the workspace.
pub fn revision(ctx: &Context, rev: &crate::cli::Revision) -> (Option<String>, Option<String>) {
    let git = |args: &[&str]| -> Option<String> {
        let out = std::process::Command::new("git")
            .args(args)
            .current_dir(&ctx.workspace)
            .stderr(std::process::Stdio::null())
            .output()
            .ok()?;
        let s = String::from_utf8_lossy(&out.stdout).trim().to_string();
        (out.status.success() && !s.is_empty() && s != "HEAD").then_some(s)
    };
    let commit = rev
        .commit
        .clone()
        .or_else(|| ctx.runtime.sha.clone())
        .or_else(|| git(&["rev-parse", "HEAD"]));
    let branch = rev
        .branch
        .clone()
        .or_else(|| ctx.runtime.ref_name.clone())
        .or_else(|| git(&["rev-parse", "--abbrev-ref", "HEAD"]));
    (commit, branch)
}
