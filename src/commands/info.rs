//! `info`: what the seed's `scripts/get-last-backup.sh` showed — the last backup's time,
//! folder, commit, branch, file sizes — and the commands that restore it.

use anyhow::{Context as _, Result};

use super::record::rollback_instructions;
use super::Context;
use crate::actions::summary::human_size;
use crate::cli::InfoArgs;
use crate::error::usage;
use crate::manifest::{Manifest, Origin, Pointer, SourceKind, POINTER_FILE};

pub async fn run(ctx: &mut Context, args: InfoArgs) -> Result<()> {
    if let Some(store) = super::destination::open(ctx, &args.location.destination).await? {
        return from_destination(ctx, &store).await;
    }
    let Some(p) =
        Pointer::read(&ctx.workspace).with_context(|| format!("cannot read {POINTER_FILE}"))?
    else {
        return Err(usage(format!(
            "no {POINTER_FILE} in {}: no verified backup has been made from this workspace yet (run `predeploy-backup backup`), or pass --workspace",
            ctx.workspace.display()
        )));
    };
    let manifest_path = ctx.resolve(std::path::Path::new(&p.manifest));
    let dir = ctx.resolve(std::path::Path::new(&p.backup_dir));
    let m = Manifest::load(&manifest_path)?;
    let mut text = String::new();
    text.push_str("=== Last Deployment Backup ===\n");
    text.push_str(&format!(
        "Timestamp:  {} ({})\n",
        p.deployment_timestamp,
        m.created_at.format("%Y-%m-%d %H:%M:%S UTC")
    ));
    text.push_str(&format!("Directory:  {}\n", p.backup_dir));
    text.push_str(&format!("Git commit: {}\n", p.git_commit));
    text.push_str(&format!("Git branch: {}\n", p.git_branch));
    text.push_str(&format!("Verified:   {}\n", m.verified));
    if let Some(run) = m.run.as_ref().and_then(|r| r.url.clone()) {
        text.push_str(&format!("Run:        {run}\n"));
    }
    text.push_str("\n=== Backup Files ===\n");
    for f in m.files() {
        let path = dir.join(&f.path);
        let now = std::fs::metadata(&path).map(|m| m.len()).ok();
        let state = match now {
            Some(n) if n == f.size => String::new(),
            Some(n) => format!("  (!) now {n} bytes: changed since the backup"),
            None => "  (!) missing".into(),
        };
        text.push_str(&format!(
            "{}  {}  sha256 {}{state}\n",
            human_size(f.size),
            f.path,
            f.sha256
        ));
    }
    text.push_str("\n=== Usage for Rollback ===\n");
    text.push_str(
        &rollback_instructions(&m, &ctx.workspace, &ctx.runtime, &dir)
            .replace("```sh\n", "")
            .replace("```\n", ""),
    );
    ctx.wf.print_report(&text);
    ctx.summary
        .heading(2, "Last deployment backup")
        .code("", &text);
    ctx.outputs
        .set("backup-dir", p.backup_dir.trim_start_matches("./"));
    ctx.outputs
        .set("manifest-path", p.manifest.trim_start_matches("./"));
    ctx.outputs.set("commit", p.git_commit);
    ctx.outputs.set("branch", p.git_branch);
    ctx.outputs.set("timestamp", p.deployment_timestamp);
    ctx.outputs.set("verified", m.verified.to_string());
    Ok(())
}

/// `info` with a destination: every complete backup there (time, commit, branch, sizes,
/// verified) and the commands that restore the newest one, from the destination alone.
async fn from_destination(ctx: &mut Context, store: &crate::store::Store) -> Result<()> {
    let all = super::destination::backups(store, &ctx.wf).await?;
    let Some(last) = all.iter().rev().find(|f| f.manifest.mode != Origin::Safety) else {
        return Err(usage(format!(
            "no complete backup in {}: run `predeploy-backup backup --destination {}` first",
            store.url(),
            store.url()
        )));
    };
    let mut text = format!("=== Backups in {} ===\n", store.url());
    for f in &all {
        let m = &f.manifest;
        let size: u64 = m.files().iter().map(|f| f.size).sum();
        text.push_str(&format!(
            "{}  {}  run {}  commit {}  branch {}  {}  verified {}{}\n",
            m.created_at.format("%Y-%m-%d %H:%M:%S UTC"),
            f.folder,
            m.run
                .as_ref()
                .and_then(|r| r.run_id.clone())
                .unwrap_or_else(|| "-".into()),
            m.git.commit.as_deref().unwrap_or("-"),
            m.git.branch.as_deref().unwrap_or("-"),
            human_size(size),
            m.verified,
            if m.mode == Origin::Safety {
                "  (safety backup)"
            } else {
                ""
            }
        ));
    }
    let m = &last.manifest;
    text.push_str("\n=== Usage for Rollback (the newest backup) ===\n");
    let by = match m.run.as_ref().and_then(|r| r.run_id.clone()) {
        Some(id) => format!("--run-id {id}"),
        None => format!(
            "--manifest {}",
            store.url_of(&format!("{}/{}", last.folder, crate::manifest::FILE_NAME))
        ),
    };
    text.push_str(&format!(
        "predeploy-backup rollback --destination {} {by} --volumes '{}'{}\n",
        store.url(),
        m.volumes
            .iter()
            .filter(|v| v.kind == SourceKind::Volume)
            .map(|v| v.name.as_str())
            .collect::<Vec<_>>()
            .join(","),
        m.database
            .as_ref()
            .and_then(|d| d.container.as_deref())
            .map(|c| format!(" --postgres-container {c}"))
            .unwrap_or_default()
    ));
    ctx.wf.print_report(&text);
    ctx.summary
        .heading(2, "Backups in the destination")
        .code("", &text);
    ctx.outputs
        .set("destination-url", store.url_of(&last.folder));
    ctx.outputs
        .set("commit", m.git.commit.clone().unwrap_or_default());
    ctx.outputs
        .set("branch", m.git.branch.clone().unwrap_or_default());
    ctx.outputs.set("timestamp", m.timestamp.clone());
    ctx.outputs.set("verified", m.verified.to_string());
    Ok(())
}
