//! One run at a time per backup root.
//!
//! Two deploys that back up into the same folder at once could interleave their files, and
//! retention in one could judge the other's half-made backup. An exclusive `flock` on
//! `<backup-root>/.predeploy-backup.lock` serialises them; the kernel releases it when the
//! process dies, so a crash never leaves a stale lock behind.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::report::Reporter;

pub const LOCK_FILE: &str = ".predeploy-backup.lock";

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("another predeploy-backup run holds the lock on {path} ({holder}) and did not finish within {waited:?}; wait for it, or if none is running, check the folder's permissions")]
    Busy {
        path: PathBuf,
        holder: String,
        waited: Duration,
    },
    /// The cause is part of the message, once (no `source`: `{:#}` would print it again).
    #[error("{}", io_message(path, detail))]
    Io {
        path: PathBuf,
        detail: std::io::Error,
    },
    #[error("refusing to use the lock file {path}: {why}; delete it (predeploy-backup creates its own) and check who put it there")]
    Unsafe { path: PathBuf, why: String },
}

fn io_message(path: &Path, e: &std::io::Error) -> String {
    let root = if path.ends_with(LOCK_FILE) {
        path.parent().unwrap_or(path)
    } else {
        path
    };
    match e.kind() {
        std::io::ErrorKind::ReadOnlyFilesystem => format!(
            "the backup root {} is on a read-only file system: point backup-root at a writable folder",
            root.display()
        ),
        std::io::ErrorKind::PermissionDenied => format!(
            "the backup root {} is not writable by this user: fix its owner or permissions, or point backup-root at a writable folder",
            root.display()
        ),
        _ => format!(
            "cannot create {}: {e}; check that the backup root is writable",
            path.display()
        ),
    }
}

impl crate::error::Classify for LockError {
    fn exit_kind(&self) -> crate::error::ExitKind {
        crate::error::ExitKind::Environment
    }
}

/// Held for as long as it lives.
#[derive(Debug)]
pub struct RootLock {
    _file: File,
}

/// Takes the lock, waiting up to `timeout` for another run to finish.
pub fn acquire(
    root: &Path,
    timeout: Duration,
    report: &dyn Reporter,
) -> Result<RootLock, LockError> {
    std::fs::create_dir_all(root).map_err(|detail| LockError::Io {
        path: root.into(),
        detail,
    })?;
    let path = root.join(LOCK_FILE);
    let (mut file, created) = open_nofollow(&path)?;
    let start = Instant::now();
    let mut told = false;
    loop {
        match file.try_lock() {
            Ok(()) => break,
            Err(std::fs::TryLockError::WouldBlock) => {
                if start.elapsed() >= timeout {
                    let holder = std::fs::read_to_string(&path).unwrap_or_default();
                    return Err(LockError::Busy {
                        path,
                        holder: holder.trim().to_string(),
                        waited: timeout,
                    });
                }
                if !told {
                    report.info(&format!(
                        "Waiting for another predeploy-backup run to release {}",
                        path.display()
                    ));
                    told = true;
                }
                std::thread::sleep(Duration::from_millis(200));
            }
            Err(std::fs::TryLockError::Error(detail)) => {
                return Err(LockError::Io { path, detail });
            }
        }
    }
    // Only a file this tool wrote is rewritten: a planted file (a hard link to something
    // else, another user's file) is locked but never truncated or written to.
    if created || is_ours(&file) {
        let _ = file.set_len(0);
        let _ = writeln!(
            file,
            "pid {} since {}",
            std::process::id(),
            chrono::Utc::now().to_rfc3339()
        );
    }
    Ok(RootLock { _file: file })
}

/// Opens the lock file without following a symlink (`O_NOFOLLOW`): a checked-out repository
/// could plant `backups/.predeploy-backup.lock -> /anything`. Returns whether we created it.
fn open_nofollow(path: &Path) -> Result<(File, bool), LockError> {
    use std::os::unix::fs::OpenOptionsExt;
    let nofollow = rustix::fs::OFlags::NOFOLLOW.bits() as i32;
    let io = |detail| LockError::Io {
        path: path.into(),
        detail,
    };
    let refused = |why: &str| LockError::Unsafe {
        path: path.into(),
        why: why.to_string(),
    };
    let created = OpenOptions::new()
        .create_new(true)
        .read(true)
        .write(true)
        .custom_flags(nofollow)
        .open(path);
    let (file, created) = match created {
        Ok(f) => (f, true),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            match OpenOptions::new()
                .read(true)
                .write(true)
                .custom_flags(nofollow)
                .open(path)
            {
                Ok(f) => (f, false),
                Err(e) if e.raw_os_error() == Some(rustix::io::Errno::LOOP.raw_os_error()) => {
                    return Err(refused("it is a symbolic link"))
                }
                Err(e) => return Err(io(e)),
            }
        }
        Err(e) => return Err(io(e)),
    };
    let meta = file.metadata().map_err(io)?;
    if !meta.file_type().is_file() {
        return Err(refused("it is not a regular file"));
    }
    Ok((file, created))
}

/// A lock file an earlier run of this tool wrote: one link, owned by us, small, and holding
/// only our `pid N since TIME` line.
fn is_ours(file: &File) -> bool {
    use std::io::{Read, Seek};
    use std::os::unix::fs::MetadataExt;
    let Ok(meta) = file.metadata() else {
        return false;
    };
    if meta.nlink() != 1 || meta.uid() != rustix::process::geteuid().as_raw() || meta.len() > 200 {
        return false;
    }
    let mut text = String::new();
    let mut f = file;
    if f.read_to_string(&mut text).is_err() || f.rewind().is_err() {
        return false;
    }
    let mut words = text.trim_end().split(' ');
    matches!(
        (words.next(), words.next().map(|p| p.parse::<u32>().is_ok()), words.next(), words.next(), words.next()),
        (Some("pid"), Some(true), Some("since"), Some(t), None) if chrono::DateTime::parse_from_rfc3339(t).is_ok()
    ) || text.is_empty()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::Recorded;

    #[test]
    fn second_lock_waits_then_fails() {
        let dir = tempfile::tempdir().unwrap();
        let held = acquire(dir.path(), Duration::from_secs(1), &Recorded::default()).unwrap();
        let told = Recorded::default();
        let err = acquire(dir.path(), Duration::from_millis(300), &told).unwrap_err();
        assert!(matches!(err, LockError::Busy { .. }), "{err}");
        let told = told.0.into_inner().unwrap();
        assert_eq!(told.len(), 1, "{told:?}");
        assert!(
            told[0].starts_with("Waiting for another predeploy-backup run"),
            "{told:?}"
        );
        drop(held);
        acquire(dir.path(), Duration::from_millis(300), &Recorded::default()).unwrap();
    }

    #[test]
    fn a_planted_symlink_is_refused_and_its_target_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "precious\n").unwrap();
        let root = dir.path().join("backups");
        std::fs::create_dir(&root).unwrap();
        std::os::unix::fs::symlink(&victim, root.join(LOCK_FILE)).unwrap();
        let err = acquire(&root, Duration::from_millis(300), &Recorded::default()).unwrap_err();
        assert!(matches!(err, LockError::Unsafe { .. }), "{err}");
        assert!(err.to_string().contains("symbolic link"), "{err}");
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious\n");
        assert_eq!(std::fs::read_link(root.join(LOCK_FILE)).unwrap(), victim);
    }

    #[test]
    fn a_planted_hard_link_is_locked_but_never_truncated() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "precious\n").unwrap();
        let root = dir.path().join("backups");
        std::fs::create_dir(&root).unwrap();
        std::fs::hard_link(&victim, root.join(LOCK_FILE)).unwrap();
        let held = acquire(&root, Duration::from_millis(300), &Recorded::default()).unwrap();
        drop(held);
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious\n");
    }

    #[test]
    fn our_own_lock_file_is_rewritten() {
        let dir = tempfile::tempdir().unwrap();
        drop(acquire(dir.path(), Duration::from_millis(300), &Recorded::default()).unwrap());
        let first = std::fs::read_to_string(dir.path().join(LOCK_FILE)).unwrap();
        assert!(
            first.starts_with(&format!("pid {} since ", std::process::id())),
            "{first}"
        );
        std::thread::sleep(Duration::from_millis(5));
        drop(acquire(dir.path(), Duration::from_millis(300), &Recorded::default()).unwrap());
        let second = std::fs::read_to_string(dir.path().join(LOCK_FILE)).unwrap();
        assert!(second.starts_with("pid ") && second != first, "{second}");
        assert_eq!(second.lines().count(), 1);
    }
}
