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
pub fn acquire(root: &Path, timeout: Duration) -> Result<RootLock, LockError> {
    std::fs::create_dir_all(root).map_err(|detail| LockError::Io {
        path: root.into(),
        detail,
    })?;
    let path = root.join(LOCK_FILE);
    let mut file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(&path)
        .map_err(|detail| LockError::Io {
            path: path.clone(),
            detail,
        })?;
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
                    crate::actions::commands::log(&format!(
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
    let _ = file.set_len(0);
    let _ = writeln!(
        file,
        "pid {} since {}",
        std::process::id(),
        chrono::Utc::now().to_rfc3339()
    );
    Ok(RootLock { _file: file })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_lock_waits_then_fails() {
        let dir = tempfile::tempdir().unwrap();
        let held = acquire(dir.path(), Duration::from_secs(1)).unwrap();
        let err = acquire(dir.path(), Duration::from_millis(300)).unwrap_err();
        assert!(matches!(err, LockError::Busy { .. }), "{err}");
        drop(held);
        acquire(dir.path(), Duration::from_millis(300)).unwrap();
    }
}
