//! `verify`: check backups that something else made (a deploy script, say), and record them
//! exactly as `backup` records its own.

use anyhow::{Context as _, Result};

use super::record::{publish, DbMeta, Verified, VolMeta};
use super::{revision, Context};
use crate::actions::summary::{self as md, human_size};
use crate::archive::codec::Codec;
use crate::archive::verify::Expect;
use crate::cli::{split_list, VerifyArgs};
use crate::error::{usage, VerificationFailed};
use crate::manifest::{parse_dir_timestamp, Git, Manifest, Origin, SourceKind};

pub async fn run(ctx: &mut Context, args: VerifyArgs) -> Result<()> {
    if args.location.destination.url().is_some() {
        return in_destination(ctx, args).await;
    }
    if args.run_id.is_some() || args.manifest.is_some() {
        return Err(usage(
            "run-id and manifest choose a backup stored in a destination: set destination too (s3://…, volume://… or host://…), or name local files with db-backup and volume-backups",
        ));
    }
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
    let (given, identity) = super::crypto::identity(&args.decrypt, &ctx.wf)?;
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
        identity.as_deref(),
        false,
        &ctx.wf,
    )?;
    if !sealed.is_empty() && identity.is_none() {
        ctx.wf.log(
            "The files are encrypted and no identity was given: their age header, size and SHA-256 are checked, not their content. Pass decrypt-identity to check the content too.",
        );
    }

    let started = std::time::Instant::now();
    let min_db = args.thresholds.min_db_size;
    let min_vol = args.thresholds.min_volume_size;
    let (db_report, vol_reports) = tokio::task::spawn_blocking(move || {
        let id = identity.as_deref();
        let verify = |p: &std::path::Path, expect, min| {
            crate::archive::crypt::verify_file(p, expect, Codec::from_path(p), min, id)
        };
        let d = db.map(|p| verify(&p, Expect::SqlDump, min_db));
        let v: Vec<_> = volumes
            .iter()
            .map(|p| verify(p, Expect::Tar, min_vol))
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

/// `verify` with a destination: checks one backup stored there — the one `manifest` (its
/// URL) or `run-id` names, else the newest — and changes nothing, there or here. Every file
/// is read back from the destination (streamed into a staging folder that is removed at
/// the end), its size and SHA-256 must be the manifest's, and it gets every check of a
/// local `verify` (gzip/zstd, dump completeness, tar to its end; the content of encrypted
/// files too when an identity is given). Any failure: exit 1, `verified=false`, an error
/// naming the object. No manifest is written and no artifact uploaded: the backup already
/// has both.
async fn in_destination(ctx: &mut Context, args: VerifyArgs) -> Result<()> {
    use super::destination as dest;
    if args.db_backup.is_some() || args.volume_backups.is_some() {
        return Err(usage(
            "verify with a destination checks a backup stored there (the newest, or the one run-id or manifest names); db-backup and volume-backups name local files: verify those without destination, or make the backup with mode backup and this destination to store it there",
        ));
    }
    let Some(store) = dest::open(ctx, &args.location.destination).await? else {
        return Err(usage("destination is empty: nothing to verify there"));
    };
    let manifest_url = args
        .manifest
        .as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty());
    let found = if let Some(url) = manifest_url {
        dest::find_manifest(&store, url).await?
    } else if let Some(id) = args.run_id {
        dest::find_run(&store, id, &ctx.wf).await?
    } else {
        dest::backups(&store, &ctx.wf)
            .await?
            .into_iter()
            .rev()
            .find(|f| f.manifest.mode != Origin::Safety)
            .ok_or_else(|| {
                usage(format!(
                    "{} holds no complete backup (a pre-deployment-* folder with its manifest): nothing to verify; nothing was changed",
                    store.url()
                ))
            })?
    };
    let url = store.url_of(&found.folder);
    let m = found.manifest.clone();
    ctx.backup_dir = Some(url.clone());
    ctx.revision = (m.git.commit.clone(), m.git.branch.clone());
    ctx.outputs.set("destination-url", url.clone());
    ctx.outputs
        .set("commit", m.git.commit.clone().unwrap_or_default());
    ctx.outputs
        .set("branch", m.git.branch.clone().unwrap_or_default());
    ctx.outputs.set("timestamp", m.timestamp.clone());
    ctx.wf.log(&format!(
        "Verifying {url} (made {} from commit {}), changing nothing",
        m.created_at.format("%Y-%m-%d %H:%M:%S UTC"),
        m.git.commit.as_deref().unwrap_or("unknown")
    ));
    let (given, identity) = super::crypto::identity(&args.decrypt, &ctx.wf)?;

    // The objects, streamed into a staging folder (next to the backups when that folder
    // exists, else the system's temporary folder), removed when this ends.
    let root = ctx.resolve(&args.location.backup_root);
    let tmp = if root.is_dir() {
        tempfile::Builder::new()
            .prefix(".predeploy-verify-")
            .tempdir_in(&root)
    } else {
        tempfile::Builder::new()
            .prefix("predeploy-verify-")
            .tempdir()
    }
    .context("cannot create a staging folder to check the backup in")?;
    let started = std::time::Instant::now();
    ctx.wf
        .group(&format!("Reading {url} back from the destination"));
    let dir = dest::download(&store, &found, tmp.path(), &ctx.wf).await;
    ctx.wf.end_group();
    let dir = dir.with_context(|| format!("cannot read {url} from the destination"))?;
    super::crypto::preflight_manifest(&m, &dir, &url, given, identity.as_deref(), false, &ctx.wf)?;
    let sealed = m.files().iter().any(|f| f.encrypted.is_some());
    if sealed && identity.is_none() {
        ctx.wf.log(
            "The files are encrypted and no identity was given: their age header, size and SHA-256 are checked, not their content. Pass decrypt-identity to check the content too.",
        );
    }

    let min_db = args.thresholds.min_db_size;
    let min_vol = args.thresholds.min_volume_size;
    let checked = {
        let m = m.clone();
        let dir = dir.clone();
        tokio::task::spawn_blocking(move || {
            let db = m
                .database
                .iter()
                .map(|d| (&d.file, Expect::SqlDump, min_db));
            let vols = m.volumes.iter().map(|v| (&v.file, Expect::Tar, min_vol));
            db.chain(vols)
                .map(|(rec, expect, min)| {
                    let path = dir.join(&rec.path);
                    let r = crate::archive::crypt::verify_file(
                        &path,
                        expect,
                        rec.compression,
                        min,
                        identity.as_deref(),
                    );
                    (rec.clone(), r)
                })
                .collect::<Vec<_>>()
        })
        .await?
    };
    let mut rows = vec![];
    let mut failures = vec![];
    let mut sizes = vec![];
    let mut urls = vec![];
    for (rec, mut r) in checked {
        let object = store.url_of(&format!("{}/{}", found.folder, rec.path));
        // The bytes the destination holds are the bytes the manifest recorded.
        r.expect_recorded(rec.size, &rec.sha256, |size, actual| {
            format!(
                "{object} is {size} bytes with SHA-256 {actual}, but its manifest records {} bytes with SHA-256 {}: the object was altered or damaged in the destination; do not roll back to it, take a new backup",
                rec.size, rec.sha256
            )
        });
        let local = r.path.display().to_string();
        let failure = r.failure.as_ref().map(|f| {
            (
                f.check.as_str().to_string(),
                f.message.replace(&local, &object),
            )
        });
        if let Some((check, message)) = &failure {
            ctx.wf.error(
                &format!("Backup check `{check}` failed"),
                Some(&object),
                message,
            );
            ctx.failed_check.get_or_insert_with(|| check.clone());
            failures.push(format!("{object}: {check} check failed: {message}"));
        }
        rows.push(vec![
            md::code(&object),
            human_size(r.size),
            if rec.sha256.is_empty() {
                "—".to_string()
            } else {
                format!("`{}…`", &rec.sha256[..rec.sha256.len().min(16)])
            },
            r.passed
                .iter()
                .map(|c| c.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            match &failure {
                None if r.verified() => "✅".to_string(),
                Some((check, message)) => format!("❌ {check}: {}", md::text(message)),
                None => "❌ not verified".into(),
            },
        ]);
        super::record::warn_restore_refusal(ctx, &r, &object);
        if r.expect == Expect::SqlDump {
            ctx.outputs.set("db-backup-url", object.clone());
            ctx.outputs.set("db-backup-size", r.size.to_string());
            ctx.outputs.set("db-backup-sha256", rec.sha256.clone());
        } else {
            urls.push(object);
            sizes.push(r.size.to_string());
        }
    }
    ctx.outputs.set("volume-backup-urls", urls.join("\n"));
    ctx.outputs.set("volume-backup-sizes", sizes.join("\n"));
    ctx.summary
        .heading(3, "Backup verified in the destination")
        .table(
            &["Object", "Size", "SHA-256", "Checks passed", "Result"],
            &rows,
        );
    if !m.verified && failures.is_empty() {
        failures.push(format!(
            "{url}: its manifest says the backup was not verified when it was made"
        ));
        ctx.failed_check.get_or_insert_with(|| "manifest".into());
    }
    if !failures.is_empty() {
        ctx.outputs.set("verified", "false");
        return Err(VerificationFailed(format!(
            "{} of the backup in {url} failed verification:\n{}\nIt is not a restore point: do not roll back to it. Take a new backup.",
            if failures.len() == 1 { "a check".to_string() } else { format!("{} checks", failures.len()) },
            failures.join("\n")
        ))
        .into());
    }
    ctx.outputs.set("verified", "true");
    ctx.summary.paragraph(&format!(
        "✅ {} verified in {:.1} s: every object was read back from the destination, its size and SHA-256 match the manifest, and each passed the checks above. Nothing was changed.",
        md::code(&url),
        started.elapsed().as_secs_f64()
    ));
    ctx.wf.log(&format!(
        "{url}: every file read back from the destination and verified; nothing was changed"
    ));
    Ok(())
}
