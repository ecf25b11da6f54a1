//! Retention that cannot hurt you. (stub)

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
