//! Retention that cannot hurt you.
//!
//! After a verified backup (and in `prune` mode) old backup folders are deleted, under rules
//! that make a mistake impossible rather than unlikely (PRODUCT.md, "Safety rules"):
//!
//! - only direct subfolders of `backup-root` named `pre-deployment-*` whose `manifest.yml` is
//!   one of ours (`tool.name: predeploy-backup`) are ever considered; anything else there
//!   (foreign folders and files, our lock file, hidden partial folders, symbolic links, a
//!   folder whose manifest cannot be read) is left alone and reported as kept;
//! - age is the manifest's `created_at`, never a file's mtime (a copy or `touch` changes it);
//! - the newest `keep-last` verified backups are kept; unverified ones are not restore points,
//!   so they never count towards `keep-last` and may go once they are past the limit;
//! - the folder `.last-deployment-backup` names is never deleted;
//! - pruning never leaves no verified backup behind (nor, when none is verified, no backup);
//! - a folder that cannot be deleted is reported with what to do, and the rest goes on.
//!
//! Deleting is done so that an interruption cannot leave something that looks like a good
//! backup: a marker file goes in first (a folder carrying it is "being pruned", never a
//! restore point, and the next prune finishes the job), then the backup files, and the
//! manifest last.

use std::fs;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Duration, Utc};

use crate::lock::LOCK_FILE;
use crate::manifest::{self, Manifest, ManifestError, Pointer, DIR_PREFIX, POINTER_FILE};
use crate::report::Reporter;

/// Written into a folder before its files are deleted; see the module documentation.
pub const PRUNING_MARKER: &str = ".predeploy-backup-pruning";

#[derive(Debug, thiserror::Error)]
pub enum RetentionError {
    #[error("{0}")]
    Io(String),
}

impl crate::error::Classify for RetentionError {
    fn exit_kind(&self) -> crate::error::ExitKind {
        crate::error::ExitKind::Environment
    }
}

/// The `retention-days`, `keep-last` and `dry-run` inputs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    /// Delete our backups older than this many days.
    pub retention_days: u32,
    /// Never delete the newest this-many verified backups.
    pub keep_last: usize,
    /// Decide and report, delete nothing.
    pub dry_run: bool,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            retention_days: 7,
            keep_last: 3,
            dry_run: false,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Delete,
    Keep,
}

/// What retention decided about one entry of `backup-root`, and why.
#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    pub dir: PathBuf,
    pub verdict: Verdict,
    pub reason: String,
    /// From the manifest (or, for a folder that is not ours, its name), when known.
    pub created_at: Option<DateTime<Utc>>,
}

/// What `prune` decided and did.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PruneReport {
    /// One per entry of `backup-root`: ours newest first, then everything else by name.
    pub decisions: Vec<Decision>,
    /// Folders actually deleted (none in a dry run).
    pub deleted: Vec<PathBuf>,
    /// Folders that should have gone but could not, with what happened and what to do.
    pub failed: Vec<(PathBuf, String)>,
    /// Whether this was a dry run (decisions only).
    pub dry_run: bool,
}

/// `2024-11-20 14:30 UTC`.
pub fn when(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M UTC").to_string()
}

fn days(n: u32) -> String {
    if n == 1 {
        "1 day".into()
    } else {
        format!("{n} days")
    }
}

/// One of our backups as retention judges it, wherever it lives (a folder of `backup-root`
/// or of a durable destination): [`decide`] is the one set of rules for both.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidate {
    /// The manifest's `created_at` (never an mtime).
    pub created_at: DateTime<Utc>,
    pub verified: bool,
    /// An earlier prune started deleting it: never a restore point, finished now.
    pub interrupted: bool,
    /// Never deleted, for this reason: the backup `.last-deployment-backup` names, or the
    /// one this run just made.
    pub protected: Option<String>,
    /// A rollback's safety backup (`mode: safety`): kept for `retention-days` like any
    /// backup, but it never takes one of the `keep-last` places of the deploy backups.
    pub safety: bool,
}

/// The verdicts of the rules (module documentation) on `ours`, which must be sorted newest
/// first; one `(verdict, reason)` per candidate, in the same order.
pub fn decide(ours: &[Candidate], policy: &Policy, now: DateTime<Utc>) -> Vec<(Verdict, String)> {
    let limit = now - Duration::days(i64::from(policy.retention_days));
    let mut decisions: Vec<(Verdict, String)> = vec![];
    let mut verified_seen = 0usize;
    for o in ours {
        let created = when(o.created_at);
        let decision = if let Some(why) = &o.protected {
            (Verdict::Keep, why.clone())
        } else if o.verified && !o.safety && verified_seen < policy.keep_last {
            (
                Verdict::Keep,
                format!("one of the newest {} verified backups", policy.keep_last),
            )
        } else if o.interrupted {
            (
                Verdict::Delete,
                "an earlier prune was interrupted while deleting it".to_string(),
            )
        } else if o.created_at >= limit {
            (
                Verdict::Keep,
                format!("within {}", days(policy.retention_days)),
            )
        } else if !o.verified {
            (
                Verdict::Delete,
                format!(
                    "unverified (manifest says verified: false), not a restore point, and older than {} (created {created})",
                    days(policy.retention_days)
                ),
            )
        } else {
            (
                Verdict::Delete,
                format!(
                    "older than {} (created {created})",
                    days(policy.retention_days)
                ),
            )
        };
        if o.verified && !o.safety {
            verified_seen += 1;
        }
        decisions.push(decision);
    }

    // Never all of them: the newest verified backup stays if nothing verified would; with
    // none verified, the newest of ours stays.
    let kept_verified = ours
        .iter()
        .zip(&decisions)
        .any(|(o, d)| o.verified && d.0 == Verdict::Keep);
    if !kept_verified {
        if let Some(i) = ours.iter().position(|o| o.verified) {
            decisions[i] = (
                Verdict::Keep,
                "would leave no verified backup: the newest is kept".into(),
            );
        } else if !decisions.iter().any(|d| d.0 == Verdict::Keep) {
            if let Some(i) = ours.iter().position(|o| !o.interrupted) {
                decisions[i] = (
                    Verdict::Keep,
                    "would leave no backup at all: the newest is kept".into(),
                );
            }
        }
    }
    decisions
}

/// Applies `policy` to `backup_root` at time `now`. `workspace` is where
/// `.last-deployment-backup` lives. Returns `Err` only when nothing could be judged (the
/// folder or the pointer cannot be read); a folder that cannot be deleted is listed in
/// [`PruneReport::failed`] and the rest goes on: the caller decides the exit code.
pub fn prune(
    backup_root: &Path,
    workspace: &Path,
    policy: &Policy,
    now: DateTime<Utc>,
) -> Result<PruneReport, RetentionError> {
    let mut report = PruneReport {
        dry_run: policy.dry_run,
        ..Default::default()
    };
    let entries = match fs::read_dir(backup_root) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(report),
        Err(e) => {
            return Err(RetentionError::Io(format!(
                "cannot list the backup root {}: {e}; nothing was pruned. Check that the folder is readable",
                backup_root.display()
            )))
        }
    };
    let protected = pointed_to(workspace)?;

    let mut ours: Vec<(PathBuf, Candidate)> = vec![];
    let mut others: Vec<Decision> = vec![];
    for entry in entries {
        let entry = entry.map_err(|e| {
            RetentionError::Io(format!(
                "cannot list the backup root {}: {e}; nothing was pruned",
                backup_root.display()
            ))
        })?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let dir = backup_root.join(entry.file_name());
        let keep = |reason: String| Decision {
            dir: dir.clone(),
            verdict: Verdict::Keep,
            reason,
            created_at: manifest::parse_dir_timestamp(&name),
        };
        // symlink_metadata: a link is judged as a link, never by what it points at.
        let meta = match fs::symlink_metadata(&dir) {
            Ok(m) => m,
            Err(e) => {
                others.push(keep(format!("not ours: cannot be examined ({e})")));
                continue;
            }
        };
        let ft = meta.file_type();
        if name == LOCK_FILE {
            // Our own lock file is part of the backup root's machinery, not an entry to judge.
            continue;
        }
        if name.starts_with('.') {
            others.push(keep(
                "not ours: a hidden or partly written folder (backups in progress are never touched)"
                    .into(),
            ));
            continue;
        }
        if ft.is_symlink() {
            others.push(keep("not ours: a symbolic link".into()));
            continue;
        }
        if !ft.is_dir() {
            others.push(keep("not ours: a file, not a backup folder".into()));
            continue;
        }
        if !name.starts_with(DIR_PREFIX) {
            others.push(keep(format!(
                "not ours: the name does not start with `{DIR_PREFIX}`"
            )));
            continue;
        }
        let interrupted = dir.join(PRUNING_MARKER).is_file();
        let manifest_path = dir.join(manifest::FILE_NAME);
        let is_protected = protected
            .iter()
            .any(|p| same_dir(p, &dir))
            .then(|| format!("named by {POINTER_FILE}"));
        match Manifest::load(&manifest_path) {
            Ok(m) => ours.push((
                dir,
                Candidate {
                    created_at: m.created_at,
                    verified: m.verified && !interrupted,
                    interrupted,
                    protected: is_protected,
                    safety: m.mode == crate::manifest::Origin::Safety,
                },
            )),
            // Only a folder whose marker we wrote ourselves, and whose manifest went
            // already: the rest of an interrupted prune.
            Err(ManifestError::Read { source, .. })
                if interrupted && source.kind() == std::io::ErrorKind::NotFound =>
            {
                match manifest::parse_dir_timestamp(&name) {
                    Some(created_at) => ours.push((
                        dir,
                        Candidate {
                            created_at,
                            verified: false,
                            interrupted,
                            protected: is_protected,
                            safety: false,
                        },
                    )),
                    None => others.push(keep(
                        "an earlier prune was interrupted here, but the name carries no timestamp: delete it by hand".into(),
                    )),
                }
            }
            Err(ManifestError::Read { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound =>
            {
                others.push(keep(format!(
                    "not ours: no {} manifest",
                    manifest::TOOL_NAME
                )));
            }
            Err(ManifestError::Read { source, .. }) => others.push(keep(format!(
                "its manifest cannot be read ({source}): kept; check the folder's permissions"
            ))),
            Err(ManifestError::Parse { detail, .. }) if detail.starts_with("written by") => {
                others.push(keep(format!(
                    "not ours: no {} manifest ({detail})",
                    manifest::TOOL_NAME
                )))
            }
            Err(ManifestError::Parse { detail, .. }) => others.push(keep(format!(
                "its manifest cannot be parsed ({detail}): kept; check it, and delete the folder by hand if it is not needed"
            ))),
            Err(ManifestError::TooNew { found, .. }) => others.push(keep(format!(
                "written by a newer predeploy-backup (manifest schema {found}): kept; prune with that version"
            ))),
        }
    }

    // Newest first (ties: by name, newest name first).
    ours.sort_by(|a, b| b.1.created_at.cmp(&a.1.created_at).then(b.0.cmp(&a.0)));
    let candidates: Vec<Candidate> = ours.iter().map(|(_, c)| c.clone()).collect();
    let mut decisions: Vec<Decision> = ours
        .iter()
        .zip(decide(&candidates, policy, now))
        .map(|((dir, c), (verdict, reason))| Decision {
            dir: dir.clone(),
            verdict,
            reason,
            created_at: Some(c.created_at),
        })
        .collect();

    if !policy.dry_run {
        for d in decisions.iter().filter(|d| d.verdict == Verdict::Delete) {
            match delete_backup(&d.dir) {
                Ok(()) => report.deleted.push(d.dir.clone()),
                Err(msg) => report.failed.push((d.dir.clone(), msg)),
            }
        }
    }

    others.sort_by(|a, b| a.dir.cmp(&b.dir));
    decisions.extend(others);
    report.decisions = decisions;
    Ok(report)
}

/// The folders `.last-deployment-backup` names (its `BACKUP_DIR`, and the folder of its
/// `MANIFEST`), canonicalized; those that do not exist need no protection.
fn pointed_to(workspace: &Path) -> Result<Vec<PathBuf>, RetentionError> {
    let pointer = Pointer::read(workspace).map_err(|e| {
        RetentionError::Io(format!(
            "cannot read {}: {e}; nothing was pruned, because the backup it names could not be protected. Check the file's permissions",
            workspace.join(POINTER_FILE).display()
        ))
    })?;
    let Some(p) = pointer else {
        return Ok(vec![]);
    };
    let resolve = |s: &str| -> Option<PathBuf> {
        let s = s.trim();
        if s.is_empty() {
            return None;
        }
        let p = Path::new(s);
        let p = if p.is_absolute() {
            p.to_path_buf()
        } else {
            workspace.join(p)
        };
        Some(fs::canonicalize(&p).unwrap_or(p))
    };
    let mut out = vec![];
    out.extend(resolve(&p.backup_dir));
    if let Some(m) = resolve(&p.manifest) {
        if let Some(parent) = m.parent() {
            out.push(parent.to_path_buf());
        }
    }
    Ok(out)
}

/// Whether `dir` is `protected` (already canonical), comparing canonical paths.
fn same_dir(protected: &Path, dir: &Path) -> bool {
    match fs::canonicalize(dir) {
        Ok(c) => c == protected,
        Err(_) => dir == protected,
    }
}

/// Deletes one of our backup folders: re-checks that it is still ours, marks it as being
/// pruned, removes the backup files, the manifest last, then the folder.
fn delete_backup(dir: &Path) -> Result<(), String> {
    let what_to_do = "check its permissions and attributes (`ls -ld`, `lsattr -d`; `chattr -i` removes the immutable flag) and whether something is mounted inside it, or delete it by hand";
    let manifest_path = dir.join(manifest::FILE_NAME);
    let marker = dir.join(PRUNING_MARKER);
    match fs::symlink_metadata(dir) {
        Ok(m) if m.file_type().is_dir() => {}
        Ok(_) => return Err("it is no longer a folder; left alone".into()),
        Err(e) => return Err(format!("it can no longer be examined ({e}); left alone")),
    }
    let has_manifest = manifest_path.exists();
    if has_manifest {
        if let Err(e) = Manifest::load(&manifest_path) {
            return Err(format!(
                "its manifest changed while pruning and is no longer ours ({e}); left alone"
            ));
        }
    } else if !marker.is_file() {
        return Err("its manifest disappeared while pruning; left alone".into());
    }
    if let Err(e) = fs::write(&marker, b"predeploy-backup is deleting this folder\n") {
        return Err(format!(
            "cannot delete {}: {e}; nothing in it was removed. {what_to_do}",
            dir.display()
        ));
    }
    let fail = |what: &Path, e: std::io::Error| {
        format!(
            "cannot delete {}: {e} (at {}); it is marked as being pruned and is no longer counted as a restore point, the next prune finishes it. To fix: {what_to_do}",
            dir.display(),
            what.display()
        )
    };
    let entries = fs::read_dir(dir).map_err(|e| fail(dir, e))?;
    let mut first_error = None;
    for entry in entries {
        let entry = match entry {
            Ok(e) => e,
            Err(e) => {
                first_error.get_or_insert_with(|| fail(dir, e));
                continue;
            }
        };
        let path = entry.path();
        if path == manifest_path || path == marker {
            continue;
        }
        // remove_dir_all does not follow symbolic links.
        let r = match fs::symlink_metadata(&path) {
            Ok(m) if m.file_type().is_dir() => fs::remove_dir_all(&path),
            Ok(_) => fs::remove_file(&path),
            Err(e) => Err(e),
        };
        if let Err(e) = r {
            first_error.get_or_insert_with(|| fail(&path, e));
        }
    }
    if let Some(msg) = first_error {
        return Err(msg);
    }
    if has_manifest {
        fs::remove_file(&manifest_path).map_err(|e| fail(&manifest_path, e))?;
    }
    fs::remove_file(&marker).map_err(|e| fail(&marker, e))?;
    fs::remove_dir(dir).map_err(|e| fail(dir, e))?;
    Ok(())
}

impl PruneReport {
    /// Whether every folder that should have gone did (always true in a dry run).
    pub fn ok(&self) -> bool {
        self.failed.is_empty()
    }

    /// Why `dir` could not be deleted, if it could not.
    pub fn failure(&self, dir: &Path) -> Option<&str> {
        self.failed
            .iter()
            .find(|(d, _)| d == dir)
            .map(|(_, m)| m.as_str())
    }

    /// What happened to one decision: `deleted`, `would delete`, `FAILED`, `kept`.
    pub fn action(&self, d: &Decision) -> &'static str {
        match d.verdict {
            Verdict::Keep => "kept",
            Verdict::Delete if self.dry_run => "would delete",
            Verdict::Delete if self.failure(&d.dir).is_some() => "NOT deleted",
            Verdict::Delete => "deleted",
        }
    }

    /// One log line per entry, and a closing count.
    pub fn log_lines(&self) -> Vec<String> {
        let mut lines: Vec<String> = self
            .decisions
            .iter()
            .map(|d| {
                let mut line = format!("{}: {} ({})", self.action(d), d.dir.display(), d.reason);
                if let Some(msg) = self.failure(&d.dir) {
                    line.push_str(&format!(": {msg}"));
                }
                line
            })
            .collect();
        lines.push(self.headline());
        lines
    }

    /// `Retention: 2 deleted, 3 kept, 1 could not be deleted.`
    pub fn headline(&self) -> String {
        let kept = self
            .decisions
            .iter()
            .filter(|d| d.verdict == Verdict::Keep)
            .count();
        let mut s = if self.dry_run {
            let would = self.decisions.len() - kept;
            format!("Retention (dry run, nothing deleted): {would} would be deleted, {kept} kept")
        } else {
            format!("Retention: {} deleted, {kept} kept", self.deleted.len())
        };
        if !self.failed.is_empty() {
            s.push_str(&format!(", {} could not be deleted", self.failed.len()));
        }
        s.push('.');
        s
    }

    /// Reports the log lines, and a warning per folder that could not be deleted.
    pub fn log(&self, report: &dyn Reporter) {
        for line in self.log_lines() {
            report.info(&line);
        }
        for (dir, msg) in &self.failed {
            report.warning(
                "Old backup not deleted",
                Some(&dir.display().to_string()),
                msg,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::actions::summary::RetentionSummary;
    use crate::manifest::Git;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn backup(root: &Path, created: DateTime<Utc>, verified: bool) -> PathBuf {
        let dir = root.join(format!("{DIR_PREFIX}{}", manifest::timestamp(created)));
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("db.sql.gz"), b"x").unwrap();
        let mut m = Manifest::new(
            crate::manifest::Origin::Backup,
            created,
            dir.display().to_string(),
            Git::default(),
        );
        m.verified = verified;
        m.write(&dir).unwrap();
        dir
    }

    fn verdict(r: &PruneReport, dir: &Path) -> (Verdict, String) {
        let d = r.decisions.iter().find(|d| d.dir == dir).unwrap();
        (d.verdict, d.reason.clone())
    }

    #[test]
    fn keeps_newest_and_recent_deletes_old() {
        let ws = tempfile::tempdir().unwrap();
        let root = ws.path().join("backups");
        let now = at("2024-12-01T12:00:00Z");
        let d1 = backup(&root, at("2024-11-30T12:00:00Z"), true);
        let d2 = backup(&root, at("2024-11-20T12:00:00Z"), true);
        let d3 = backup(&root, at("2024-11-10T12:00:00Z"), true);
        let d4 = backup(&root, at("2024-11-01T12:00:00Z"), true);
        let policy = Policy {
            retention_days: 7,
            keep_last: 1,
            dry_run: false,
        };
        let r = prune(&root, ws.path(), &policy, now).unwrap();
        assert_eq!(verdict(&r, &d1).0, Verdict::Keep);
        for d in [&d2, &d3, &d4] {
            let (v, why) = verdict(&r, d);
            assert_eq!(v, Verdict::Delete, "{why}");
            assert!(
                why.starts_with("older than 7 days (created 2024-11-"),
                "{why}"
            );
            assert!(!d.exists());
        }
        assert_eq!(r.deleted.len(), 3);
        assert!(r.ok());
        assert!(r
            .markdown()
            .contains("| `pre-deployment-20241130_120000` |"));
    }

    #[test]
    fn never_all_and_missing_root() {
        let ws = tempfile::tempdir().unwrap();
        let root = ws.path().join("backups");
        let r = prune(&root, ws.path(), &Policy::default(), Utc::now()).unwrap();
        assert!(r.decisions.is_empty());
        let old = backup(&root, at("2020-01-01T00:00:00Z"), true);
        let older = backup(&root, at("2019-01-01T00:00:00Z"), true);
        let policy = Policy {
            retention_days: 1,
            keep_last: 0,
            dry_run: false,
        };
        let r = prune(&root, ws.path(), &policy, Utc::now()).unwrap();
        assert_eq!(verdict(&r, &old).0, Verdict::Keep);
        assert!(verdict(&r, &old)
            .1
            .contains("would leave no verified backup"));
        assert!(old.exists() && !older.exists());
    }

    #[test]
    fn interrupted_prune_is_finished_and_not_a_restore_point() {
        let ws = tempfile::tempdir().unwrap();
        let root = ws.path().join("backups");
        let now = at("2024-12-01T12:00:00Z");
        let newest = backup(&root, at("2024-11-30T12:00:00Z"), true);
        let half = backup(&root, at("2024-11-29T12:00:00Z"), true);
        fs::write(half.join(PRUNING_MARKER), b"").unwrap();
        fs::remove_file(half.join("db.sql.gz")).unwrap();
        let policy = Policy {
            retention_days: 30,
            keep_last: 2,
            dry_run: false,
        };
        let r = prune(&root, ws.path(), &policy, now).unwrap();
        assert_eq!(verdict(&r, &newest).0, Verdict::Keep);
        assert_eq!(verdict(&r, &half).0, Verdict::Delete);
        assert!(!half.exists());
    }
}
