//! The Docker Engine API. (stub)

#[derive(Debug, thiserror::Error)]
pub enum DockerError {
    #[error("{0}")]
    Unreachable(String),
}

impl crate::error::Classify for DockerError {
    fn exit_kind(&self) -> crate::error::ExitKind {
        crate::error::ExitKind::Environment
    }
}
