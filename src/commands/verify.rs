//! `verify`: check backups that something else made (a deploy script, say), and record them
//! exactly as `backup` records its own.

use anyhow::Result;

use super::record::{publish, DbMeta, Verified, VolMeta};
use super::{revision, Context};
use crate::archive::verify::{verify_file, Expect};
use crate::cli::{split_list, VerifyArgs};
use crate::error::usage;
use crate::manifest::{parse_dir_timestamp, Git, Manifest, Origin, SourceKind};

pub async fn run(ctx: &mut Context, args: VerifyArgs) -> Result<()> {
    super::record::check_publish(ctx, &args.publish)?;
    let db = args.db_backup.as_deref().map(|p| ctx.resolve(p));
    let volumes: Vec<_> = split_list(args.volume_backups.as_deref())
        .iter()
        .map(|p| ctx.resolve(std::path::Path::new(p)))
        .collect();
    let Some(first) = db.clone().or_else(|| volumes.first().cloned()) else {
        return Err(usage(
            "verify needs the backups to check: set `db-backup` (the .sql.gz, .sql.zst or .sql) and/or `volume-backups` (the .tar.gz, .tar.zst or .tar files, comma- or newline-separated)",
        ));
    };
    let dir = first
        .parent()
        .map(|p| p.to_path_buf())
        .unwrap_or_else(|| ctx.workspace.clone());
    ctx.backup_dir = Some(ctx.display(&dir));
    let (commit, branch) = revision(ctx, &args.revision);
    ctx.revision = (commit.clone(), branch.clone());

    // Encrypted files (`….age`): with an identity, it must open them (else exit 2) and the
    // content is checked too; without one, the stored bytes only.
    let given = super::crypto::identity(&args.decrypt)?;
    let sealed: Vec<_> = db
        .iter()
        .chain(volumes.iter())
        .filter(|p| crate::archive::crypt::is_sealed(p))
        .cloned()
        .collect();
    super::crypto::preflight(
        &sealed,
        "these backup files are encrypted with age",
        "the files to verify",
        given,
        false,
    )?;
    if !sealed.is_empty() && crate::archive::crypt::identity().is_none() {
        crate::actions::commands::log(
            "The files are encrypted and no identity was given: their age header, size and SHA-256 are checked, not their content. Pass decrypt-identity to check the content too.",
        );
    }

    let started = std::time::Instant::now();
    let min_db = args.thresholds.min_db_size;
    let min_vol = args.thresholds.min_volume_size;
    let (db_report, vol_reports) = tokio::task::spawn_blocking(move || {
        let d = db.map(|p| verify_file(&p, Expect::SqlDump, min_db));
        let v: Vec<_> = volumes
            .iter()
            .map(|p| verify_file(p, Expect::Tar, min_vol))
            .collect();
        (d, v)
    })
    .await?;
    // Encrypted files that sit in a backup folder: its manifest's size and SHA-256 are the
    // check that works without the key (a flipped ciphertext byte fails here).
    let (db_report, vol_reports) = super::crypto::against_manifest(&dir, db_report, vol_reports);
    // What the files belong to, when the caller says: rollback can then restore them.
    let db_meta = DbMeta {
        name: args.postgres_db.clone().filter(|d| d != "-"),
        user: args.postgres_user.clone(),
        container: args.postgres_container.clone(),
        ..Default::default()
    };
    let names = split_list(args.volumes.as_deref());
    if !names.is_empty() && names.len() != vol_reports.len() {
        return Err(usage(format!(
            "volumes names {} volume(s) but volume-backups lists {} archive(s): give one volume name per archive, in the same order",
            names.len(),
            vol_reports.len()
        )));
    }
    let verified = Verified {
        dir: dir.clone(),
        db: db_report.map(|r| (r, db_meta)),
        volumes: vol_reports
            .into_iter()
            .enumerate()
            .map(|(i, r)| {
                let meta = match names.get(i) {
                    Some(v) => VolMeta {
                        name: v.clone(),
                        kind: SourceKind::Volume,
                    },
                    None => VolMeta {
                        name: r
                            .path
                            .file_name()
                            .map(|n| n.to_string_lossy().to_string())
                            .unwrap_or_default(),
                        kind: SourceKind::File,
                    },
                };
                (r, meta)
            })
            .collect(),
    };
    verified.judge(ctx)?;

    let created_at = dir
        .file_name()
        .and_then(|n| parse_dir_timestamp(&n.to_string_lossy()))
        .unwrap_or_else(chrono::Utc::now);
    let mut m = verified.manifest(
        ctx,
        Manifest::new(
            Origin::Verify,
            created_at,
            String::new(),
            Git { commit, branch },
        ),
    );
    m.timings
        .insert("verify".into(), started.elapsed().as_secs_f64());
    publish(ctx, &m, &dir, &args.publish, args.retention_days).await
}
