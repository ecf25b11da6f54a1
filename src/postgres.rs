//! PostgreSQL dump and restore. (stub)

#[derive(Debug, thiserror::Error)]
pub enum PgError {
    #[error("{0}")]
    Dump(String),
}

impl crate::error::Classify for PgError {
    fn exit_kind(&self) -> crate::error::ExitKind {
        crate::error::ExitKind::Environment
    }
}
