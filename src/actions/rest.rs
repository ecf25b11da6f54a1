//! GitHub's REST API: the manifest artifact of another run. (stub)
use std::path::Path;

use super::artifact::DownloadedArtifact;

#[derive(Debug, thiserror::Error)]
pub enum RestError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Service(String),
}

impl crate::error::Classify for RestError {
    fn exit_kind(&self) -> crate::error::ExitKind {
        match self {
            RestError::NotFound(_) => crate::error::ExitKind::Usage,
            RestError::Service(_) => crate::error::ExitKind::Environment,
        }
    }
}

pub struct RestClient;

impl RestClient {
    pub fn new(api_url: &str, token: &str) -> Result<Self, RestError> {
        let _ = (api_url, token);
        Ok(RestClient)
    }

    pub async fn download_run_artifact(
        &self,
        repository: &str,
        run_id: u64,
        name: &str,
        dest: &Path,
    ) -> Result<DownloadedArtifact, RestError> {
        let _ = (repository, run_id, name, dest);
        Err(RestError::Service("not implemented".into()))
    }
}
