//! Workflow artifacts through the Actions results service ("v4" protocol). (stub)
use std::path::{Path, PathBuf};

/// Errors of the artifact service.
#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Service(String),
}

impl crate::error::Classify for ArtifactError {
    fn exit_kind(&self) -> crate::error::ExitKind {
        match self {
            ArtifactError::Invalid(_) => crate::error::ExitKind::Usage,
            ArtifactError::Service(_) => crate::error::ExitKind::Environment,
        }
    }
}

/// What an upload produced (upload-artifact's outputs).
#[derive(Clone, Debug)]
pub struct UploadedArtifact {
    pub id: i64,
    /// Lowercase hex SHA-256 of the uploaded zip.
    pub digest: String,
    pub size: u64,
}

/// An artifact fetched and unpacked.
#[derive(Clone, Debug)]
pub struct DownloadedArtifact {
    pub dir: PathBuf,
    pub digest: String,
    pub files: Vec<PathBuf>,
}

/// A client of the results service, built from the runtime's URL and token.
pub struct ArtifactClient;

impl ArtifactClient {
    pub fn new(results_url: &str, runtime_token: &str) -> Result<Self, ArtifactError> {
        let _ = (results_url, runtime_token);
        Ok(ArtifactClient)
    }

    pub async fn upload(
        &self,
        name: &str,
        files: &[(String, PathBuf)],
        retention_days: Option<u32>,
    ) -> Result<UploadedArtifact, ArtifactError> {
        let _ = (name, files, retention_days);
        Err(ArtifactError::Service("not implemented".into()))
    }

    pub async fn download(
        &self,
        name: &str,
        dest: &Path,
    ) -> Result<DownloadedArtifact, ArtifactError> {
        let _ = (name, dest);
        Err(ArtifactError::Service("not implemented".into()))
    }
}
