//! The GitHub Actions runtime, as a Docker container action sees it.
//!
//! Everything the runner gives us arrives in the environment: `GITHUB_*` facts about the
//! run, file-command paths (`GITHUB_OUTPUT`, `GITHUB_STEP_SUMMARY`), and the results-service
//! URL and token for artifacts. On github.com the paths are under `/github/…`; under `act`
//! they are host paths: so nothing here hard-codes a path, everything is read from the
//! environment. Outside Actions the same program runs as a CLI and all of it is optional.

pub mod artifact;
pub mod commands;
pub mod outputs;
pub mod rest;
pub mod summary;

use std::path::PathBuf;

/// What the runner told us about this run. Every field is optional outside Actions.
#[derive(Clone, Debug, Default)]
pub struct Runtime {
    /// `GITHUB_ACTIONS=true`.
    pub in_actions: bool,
    pub workspace: Option<PathBuf>,
    pub output_file: Option<PathBuf>,
    pub summary_file: Option<PathBuf>,
    pub repository: Option<String>,
    pub run_id: Option<String>,
    pub run_attempt: Option<String>,
    pub workflow: Option<String>,
    pub job: Option<String>,
    pub server_url: Option<String>,
    pub api_url: Option<String>,
    pub sha: Option<String>,
    pub ref_name: Option<String>,
    /// `ACTIONS_RESULTS_URL`: where the artifact service lives.
    pub results_url: Option<String>,
    /// `ACTIONS_RUNTIME_TOKEN`: the artifact service's bearer token (masked).
    pub runtime_token: Option<String>,
    /// `GITHUB_RETENTION_DAYS`: the repository's maximum artifact retention.
    pub retention_days_cap: Option<u32>,
}

impl Runtime {
    /// Reads the runtime from the process environment.
    pub fn from_env() -> Self {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    /// Reads the runtime through `get`, so that tests can give their own environment.
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Self {
        let s = |k: &str| get(k).filter(|v| !v.trim().is_empty());
        Runtime {
            in_actions: s("GITHUB_ACTIONS").as_deref() == Some("true"),
            workspace: s("GITHUB_WORKSPACE").map(PathBuf::from),
            output_file: s("GITHUB_OUTPUT").map(PathBuf::from),
            summary_file: s("GITHUB_STEP_SUMMARY").map(PathBuf::from),
            repository: s("GITHUB_REPOSITORY"),
            run_id: s("GITHUB_RUN_ID"),
            run_attempt: s("GITHUB_RUN_ATTEMPT"),
            workflow: s("GITHUB_WORKFLOW"),
            job: s("GITHUB_JOB"),
            server_url: s("GITHUB_SERVER_URL"),
            api_url: s("GITHUB_API_URL"),
            sha: s("GITHUB_SHA"),
            ref_name: s("GITHUB_REF_NAME"),
            results_url: s("ACTIONS_RESULTS_URL"),
            runtime_token: s("ACTIONS_RUNTIME_TOKEN"),
            retention_days_cap: s("GITHUB_RETENTION_DAYS").and_then(|v| v.trim().parse().ok()),
        }
    }

    /// `https://github.com/<repo>/actions/runs/<id>`, when we know it.
    pub fn run_url(&self) -> Option<String> {
        Some(format!(
            "{}/{}/actions/runs/{}",
            self.server_url.as_deref().unwrap_or("https://github.com"),
            self.repository.as_ref()?,
            self.run_id.as_ref()?
        ))
    }

    /// The artifact service is reachable only when both its URL and token were given.
    pub fn has_artifact_service(&self) -> bool {
        self.results_url.is_some() && self.runtime_token.is_some()
    }
}
