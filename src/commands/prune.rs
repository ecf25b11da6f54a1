//! `prune`: retention alone, and the prune that follows every verified backup.

use std::path::Path;

use anyhow::Result;

use super::Context;
use crate::actions::summary::RetentionSummary;
use crate::cli::{Keep, PruneArgs};
use crate::retention::{prune, Policy};

pub async fn run(ctx: &mut Context, args: PruneArgs) -> Result<()> {
    let root = ctx.backup_root(&args.location.backup_root)?;
    let policy = Policy {
        retention_days: args.keep.retention_days,
        keep_last: args.keep.keep_last,
        dry_run: args.dry_run,
    };
    let dest = &args.location.destination;
    if let Some(store) = super::destination::open(ctx, dest).await? {
        super::destination::prune_mode(ctx, &store, &policy, dest.lock == "auto").await?;
    }
    let _lock = crate::lock::acquire(&root, std::time::Duration::from_secs(600), &*ctx.report)?;
    let report = prune(&root, &ctx.workspace, &policy, chrono::Utc::now())?;
    report.log(&*ctx.report);
    report.write_summary(&mut ctx.summary);
    if !report.failed.is_empty() {
        ctx.failed_check = Some("prune".into());
        anyhow::bail!("{}", failed_folders(&report));
    }
    Ok(())
}

/// Retention after a verified backup (the caller holds the lock). A retention problem is
/// reported as a warning: the new backup is good and the deploy may go on.
pub async fn after_backup(ctx: &mut Context, root: &Path, keep: &Keep) {
    let policy = Policy {
        retention_days: keep.retention_days,
        keep_last: keep.keep_last,
        dry_run: false,
    };
    match prune(root, &ctx.workspace, &policy, chrono::Utc::now()) {
        Ok(report) => {
            report.log(&*ctx.report);
            report.write_summary(&mut ctx.summary);
            if !report.failed.is_empty() {
                ctx.failed_check.get_or_insert_with(|| "prune".into());
                ctx.degraded = Some(format!("retention: {}", failed_folders(&report)));
            }
        }
        Err(e) => {
            ctx.wf.warning("Retention skipped", None, &format!("{e}"));
            ctx.failed_check.get_or_insert_with(|| "prune".into());
            ctx.degraded = Some(format!("retention was skipped: {e}"));
        }
    }
}

/// "N old backup folder(s) could not be deleted: dir: why; …"
fn failed_folders(report: &crate::retention::PruneReport) -> String {
    format!(
        "{} old backup folder(s) could not be deleted: {}",
        report.failed.len(),
        report
            .failed
            .iter()
            .map(|(d, m)| format!("{}: {m}", d.display()))
            .collect::<Vec<_>>()
            .join("; ")
    )
}
