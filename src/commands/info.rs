//! `info`: what the seed's `scripts/get-last-backup.sh` showed — the last backup's time,
//! folder, commit, branch, file sizes — and the commands that restore it.

use anyhow::{Context as _, Result};

use super::record::rollback_instructions;
use super::Context;
use crate::actions::summary::human_size;
use crate::cli::InfoArgs;
use crate::error::usage;
use crate::manifest::{Manifest, Pointer, POINTER_FILE};

pub async fn run(ctx: &mut Context, _args: InfoArgs) -> Result<()> {
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
    crate::actions::commands::print_report(&text);
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
