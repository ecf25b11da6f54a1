//! Restore-time archive checks. (stub)

/// An archive entry that restore refuses.
#[derive(Debug, thiserror::Error)]
#[error("refusing to restore {archive}: entry {index} `{path}`: {reason}")]
pub struct UnsafeArchive {
    pub archive: String,
    pub index: u64,
    pub path: String,
    pub reason: String,
}

impl crate::error::Classify for UnsafeArchive {
    fn exit_kind(&self) -> crate::error::ExitKind {
        crate::error::ExitKind::Unverified
    }
}
