//! A folder on this machine (`object_store`'s `LocalFileSystem`): objects are files, written
//! to a temporary name and renamed when complete, so a reader never sees half of one.
//!
//! Today's `backup-root` keeps its own code (a folder inside the workspace, with its lock
//! file and `.partial` folders); this backend serves a `destination` given as an absolute
//! path (`/mnt/backups`, `file:///mnt/backups`) that this process sees.

use std::path::Path;
use std::sync::Arc;

use super::{Store, StoreError};

/// Opens (and creates) the folder.
pub fn open(path: &Path) -> Result<Store, StoreError> {
    std::fs::create_dir_all(path).map_err(|e| {
        StoreError::BadInput(format!(
            "destination {}: cannot create the folder ({e})",
            path.display()
        ))
    })?;
    let fs = object_store::local::LocalFileSystem::new_with_prefix(path)
        .map_err(|e| StoreError::BadInput(format!("destination {}: {e}", path.display())))?;
    Ok(Store::new(
        Arc::new(fs),
        "",
        format!("file://{}", path.display()),
    ))
}
