//! GitHub's REST API: the manifest artifact of another run (what `actions/download-artifact`
//! does with `run-id`, `repository` and `github-token`).
//!
//! 1. `GET /repos/{o}/{r}/actions/runs/{run}/artifacts?name=<name>&per_page=100`: deserialised
//!    here (octocrab's model drops `digest`), the highest `id` with exactly that name wins.
//! 2. `GET /repos/{o}/{r}/actions/artifacts/{id}/zip` answers 302 with a short-lived signed
//!    blob URL. octocrab is built without `follow-redirect`, so we see the 302 and take its
//!    `Location`; 410 means expired.
//! 3. The blob is fetched with a plain HTTP client that carries no `Authorization` header,
//!    hashed while streamed to disk, compared with `digest`, and unpacked safely: the same code
//!    as the results-service path ([`super::artifact`]).
//!
//! The token goes only to the API host, and is masked in the log.

use std::path::Path;
use std::time::Duration;

use serde::Deserialize;
use url::Url;

use super::artifact::{self, ArtifactError, DownloadedArtifact, Retry};
use super::commands;

#[derive(Debug, thiserror::Error)]
pub enum RestError {
    /// Bad input (repository, artifact name, token); nothing was sent.
    #[error("{0}")]
    Invalid(String),
    /// No such run, or no artifact of that name in it.
    #[error("{0}")]
    NotFound(String),
    /// The artifact is there but has expired (`retention-days`).
    #[error("{0}")]
    Expired(String),
    /// The token was refused, or may not read the repository's Actions artifacts.
    #[error("{0}")]
    Auth(String),
    /// The download's SHA-256 differs from the recorded digest: refused, nothing unpacked.
    #[error("{0}")]
    Digest(String),
    /// The archive is corrupt or would write outside its target.
    #[error("{0}")]
    Unsafe(String),
    /// GitHub, the blob storage, the network or the disk failed.
    #[error("{0}")]
    Service(String),
}

impl crate::error::Classify for RestError {
    fn exit_kind(&self) -> crate::error::ExitKind {
        match self {
            RestError::Invalid(_)
            | RestError::NotFound(_)
            | RestError::Expired(_)
            | RestError::Auth(_) => crate::error::ExitKind::Usage,
            RestError::Digest(_) | RestError::Unsafe(_) => crate::error::ExitKind::Unverified,
            RestError::Service(_) => crate::error::ExitKind::Environment,
        }
    }
}

impl From<ArtifactError> for RestError {
    fn from(e: ArtifactError) -> Self {
        match e {
            ArtifactError::Invalid(m) => RestError::Invalid(m),
            ArtifactError::NotFound(m) => RestError::NotFound(m),
            ArtifactError::Service(m) => RestError::Service(m),
            ArtifactError::Digest(m) => RestError::Digest(m),
            ArtifactError::Unsafe(m) => RestError::Unsafe(m),
        }
    }
}

/// One artifact as the REST API lists it.
#[derive(Deserialize, Clone, Debug)]
struct RestArtifact {
    id: u64,
    name: String,
    #[serde(default)]
    size_in_bytes: Option<u64>,
    #[serde(default)]
    expired: bool,
    #[serde(default)]
    expires_at: Option<String>,
    /// `sha256:<hex>`, for artifacts uploaded by v4+ clients; null before.
    #[serde(default)]
    digest: Option<String>,
}

#[derive(Deserialize)]
struct ArtifactList {
    #[serde(default)]
    total_count: Option<u64>,
    #[serde(default)]
    artifacts: Option<Vec<RestArtifact>>,
}

#[derive(Deserialize, Default)]
struct GithubMessage {
    #[serde(default)]
    message: Option<String>,
}

const PER_PAGE: usize = 100;
const MAX_PAGES: usize = 20;

const TOKEN_HELP: &str = "pass github-token with `actions: read` (in a workflow: \
     `github-token: ${{ github.token }}` and `permissions: actions: read`; for another \
     repository, a personal access token or an app token that can read its Actions)";

pub struct RestClient {
    octo: octocrab::Octocrab,
    api: Url,
    blob: reqwest::Client,
    retry: Retry,
}

impl std::fmt::Debug for RestClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RestClient")
            .field("api", &self.api.as_str())
            .field("retry", &self.retry)
            .finish_non_exhaustive()
    }
}

impl RestClient {
    /// `api_url` is `GITHUB_API_URL` (e.g. `https://api.github.com`, or `https://ghe/api/v3`);
    /// `token` is the `github-token` input, masked from now on. The retry base comes from
    /// `PREDEPLOY_RETRY_BASE_MS` (default 3 s), or [`RestClient::with_retry_base`].
    pub fn new(api_url: &str, token: &str) -> Result<Self, RestError> {
        let token = token.trim();
        if token.is_empty() {
            return Err(RestError::Invalid(format!(
                "github-token is empty: the backup of another run is downloaded through \
                 GitHub's REST API, which needs a token; {TOKEN_HELP}"
            )));
        }
        commands::mask(token);
        if token
            .chars()
            .any(|c| c.is_control() || !c.is_ascii() || c == ' ')
        {
            return Err(RestError::Invalid(
                "github-token contains spaces or characters that cannot be sent in an HTTP \
                 header: pass the token alone"
                    .into(),
            ));
        }
        let api_str = api_url.trim();
        let api_str = if api_str.is_empty() {
            "https://api.github.com"
        } else {
            api_str
        };
        let api = Url::parse(api_str).map_err(|e| {
            RestError::Invalid(format!(
                "GITHUB_API_URL `{}` is not a URL ({e})",
                commands::redact(api_str)
            ))
        })?;
        if !matches!(api.scheme(), "http" | "https")
            || api.host_str().is_none()
            || api.query().is_some()
        {
            return Err(RestError::Invalid(format!(
                "GITHUB_API_URL `{}` is not an http(s) URL without a query",
                commands::redact(api_str)
            )));
        }
        let _ = rustls::crypto::ring::default_provider().install_default();
        let base = api.as_str().trim_end_matches('/').to_string();
        let octo = octocrab::Octocrab::builder()
            .base_uri(base.as_str())
            .map_err(|e| RestError::Invalid(format!("GITHUB_API_URL `{base}` is not usable: {e}")))?
            .personal_token(token.to_string())
            .add_retry_config(octocrab::service::middleware::retry::RetryConfig::None)
            .set_connect_timeout(Some(Duration::from_secs(30)))
            .set_read_timeout(Some(Duration::from_secs(120)))
            .build()
            .map_err(|e| {
                RestError::Service(format!(
                    "could not set up the GitHub API client: {}; the image needs CA \
                     certificates (ca-certificates)",
                    artifact::error_chain(&e)
                ))
            })?;
        let blob = artifact::http_client(true).map_err(RestError::Service)?;
        Ok(RestClient {
            octo,
            api,
            blob,
            retry: Retry::from_env(),
        })
    }

    /// Sets the back-off base (production: 3 s; tests: a few ms).
    pub fn with_retry_base(mut self, base: Duration) -> Self {
        self.retry.base = base;
        self
    }

    /// Downloads the newest artifact `name` of run `run_id` of `repository` (`owner/name`)
    /// into `dest`, refusing it if its SHA-256 differs from the digest GitHub recorded.
    pub async fn download_run_artifact(
        &self,
        repository: &str,
        run_id: u64,
        name: &str,
        dest: &Path,
    ) -> Result<DownloadedArtifact, RestError> {
        let (owner, repo) = split_repository(repository)?;
        artifact::validate_name(name)?;
        let repository = format!("{owner}/{repo}");
        let found = self.find(owner, repo, run_id, name).await?;
        let what = format!(
            "the artifact `{name}` (id {}) of run {run_id} of {repository}",
            found.id
        );
        if found.expired {
            return Err(RestError::Expired(expired_message(
                &what,
                found.expires_at.as_deref(),
            )));
        }
        commands::log(&format!(
            "Downloading {what}{}",
            found
                .size_in_bytes
                .map(|s| format!(" ({s} bytes)"))
                .unwrap_or_default()
        ));
        let location = self.zip_location(owner, repo, found.id, &what).await?;
        artifact::mask_signed_url(&location);
        artifact::fetch_verify_unpack(
            &self.blob,
            self.retry,
            &location,
            found.digest.as_deref(),
            &what,
            dest,
        )
        .await
        .map_err(RestError::from)
    }

    /// Lists the run's artifacts named `name` (all pages) and picks the highest id.
    async fn find(
        &self,
        owner: &str,
        repo: &str,
        run_id: u64,
        name: &str,
    ) -> Result<RestArtifact, RestError> {
        let enc_name: String = url::form_urlencoded::byte_serialize(name.as_bytes()).collect();
        let mut all: Vec<RestArtifact> = Vec::new();
        for page in 1..=MAX_PAGES {
            let path = format!(
                "/repos/{owner}/{repo}/actions/runs/{run_id}/artifacts?name={enc_name}\
                 &per_page={PER_PAGE}&page={page}"
            );
            let (status, _, body) = self.get(&path).await?;
            let ctx = format!("listing the artifacts of run {run_id} of {owner}/{repo}");
            match status.as_u16() {
                200 => {}
                404 => {
                    return Err(RestError::NotFound(format!(
                        "GitHub answered 404 Not Found when {ctx}: the repository or the run \
                         does not exist, or github-token cannot see it ({TOKEN_HELP})"
                    )))
                }
                _ => return Err(status_error(status, &body, &ctx)),
            }
            let list: ArtifactList = serde_json::from_str(&body).map_err(|e| {
                RestError::Service(format!(
                    "GitHub's answer when {ctx} is not the documented JSON ({e})"
                ))
            })?;
            let items = list.artifacts.unwrap_or_default();
            let n = items.len();
            all.extend(items);
            let total = list.total_count.unwrap_or(0) as usize;
            if n < PER_PAGE || all.len() >= total {
                break;
            }
        }
        all.into_iter()
            .filter(|a| a.name == name)
            .max_by_key(|a| a.id)
            .ok_or_else(|| {
                RestError::NotFound(format!(
                    "run {run_id} of {owner}/{repo} has no artifact named {name}: was the backup \
                     made in that run (with upload-artifact and this artifact-name), and has the \
                     artifact expired (retention-days)?"
                ))
            })
    }

    /// The signed blob URL that `/actions/artifacts/{id}/zip` redirects to.
    async fn zip_location(
        &self,
        owner: &str,
        repo: &str,
        id: u64,
        what: &str,
    ) -> Result<Url, RestError> {
        let path = format!("/repos/{owner}/{repo}/actions/artifacts/{id}/zip");
        let (status, headers, body) = self.get(&path).await?;
        let ctx = format!("requesting the download of {what}");
        match status.as_u16() {
            301 | 302 | 303 | 307 | 308 => {}
            410 => {
                return Err(RestError::Expired(expired_message(what, None)));
            }
            404 => {
                return Err(RestError::NotFound(format!(
                    "GitHub answered 404 Not Found when {ctx}: it was deleted, or github-token \
                     lacks `actions: read` ({TOKEN_HELP})"
                )))
            }
            200..=299 => {
                return Err(RestError::Service(format!(
                    "GitHub answered {status} instead of a redirect when {ctx}"
                )))
            }
            _ => return Err(status_error(status, &body, &ctx)),
        }
        let loc = headers
            .get(reqwest::header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| {
                RestError::Service(format!(
                    "GitHub answered {status} without a Location header when {ctx}"
                ))
            })?;
        let url = self.api.join(loc).map_err(|e| {
            RestError::Service(format!(
                "GitHub redirected to a Location that is not a URL when {ctx} ({e})"
            ))
        })?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(RestError::Service(format!(
                "GitHub redirected to a {} URL when {ctx}",
                url.scheme()
            )));
        }
        Ok(url)
    }

    /// A GET to the API (with the token), retried on 429, 5xx and transport errors.
    async fn get(
        &self,
        path_and_query: &str,
    ) -> Result<(reqwest::StatusCode, reqwest::header::HeaderMap, String), RestError> {
        let mut extra = reqwest::header::HeaderMap::new();
        extra.insert(
            reqwest::header::ACCEPT,
            reqwest::header::HeaderValue::from_static("application/vnd.github+json"),
        );
        let endpoint = path_and_query.split('?').next().unwrap_or(path_and_query);
        let mut last = String::new();
        for attempt in 0..self.retry.attempts {
            self.retry.wait(attempt, &last).await;
            let resp = match self
                .octo
                ._get_with_headers(path_and_query, Some(extra.clone()))
                .await
            {
                Ok(r) => r,
                Err(e) => {
                    last = format!(
                        "could not reach the GitHub API at {} for {endpoint}: {}",
                        artifact::describe_url(&self.api),
                        artifact::error_chain(&e)
                    );
                    continue;
                }
            };
            let status = resp.status();
            let headers = resp.headers().clone();
            let body = match self.octo.body_to_string(resp).await {
                Ok(b) => b,
                Err(e) => {
                    last = format!(
                        "the GitHub API's answer for {endpoint} was cut short: {}",
                        artifact::error_chain(&e)
                    );
                    continue;
                }
            };
            if artifact::is_retryable(status) {
                last = format!(
                    "the GitHub API answered {status} for {endpoint}{}",
                    github_message(&body)
                );
                continue;
            }
            return Ok((status, headers, body));
        }
        Err(RestError::Service(format!(
            "the GitHub API failed {} times; last: {last}",
            self.retry.attempts
        )))
    }
}

fn split_repository(repository: &str) -> Result<(&str, &str), RestError> {
    let r = repository.trim();
    let ok_part = |p: &str| {
        !p.is_empty()
            && p != "."
            && p != ".."
            && p.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    };
    match r.split_once('/') {
        Some((o, n)) if ok_part(o) && ok_part(n) => Ok((o, n)),
        _ => Err(RestError::Invalid(format!(
            "repository \"{}\" is not of the form owner/name",
            r.escape_debug()
        ))),
    }
}

fn expired_message(what: &str, expires_at: Option<&str>) -> String {
    format!(
        "{what} has expired{}: GitHub deletes artifacts after their retention-days. Pick a \
         newer run, or restore from the backup folder on the deploy host with `manifest:` (the \
         path of its manifest.yml)",
        expires_at.map(|t| format!(" (at {t})")).unwrap_or_default()
    )
}

fn github_message(body: &str) -> String {
    let m: GithubMessage = serde_json::from_str(body).unwrap_or_default();
    match m.message.filter(|s| !s.trim().is_empty()) {
        Some(s) => format!(": {}", commands::redact(s.trim())),
        None => String::new(),
    }
}

fn status_error(status: reqwest::StatusCode, body: &str, ctx: &str) -> RestError {
    let msg = github_message(body);
    match status.as_u16() {
        401 => RestError::Auth(format!(
            "GitHub refused github-token (401{msg}) when {ctx}: it is invalid or has expired; \
             {TOKEN_HELP}"
        )),
        403 => RestError::Auth(format!(
            "GitHub forbade {ctx} (403{msg}): github-token lacks `actions: read` for this \
             repository, or the API rate limit is used up; {TOKEN_HELP}"
        )),
        410 => RestError::Expired(format!("GitHub answered 410 Gone{msg} when {ctx}")),
        _ => RestError::Service(format!("GitHub answered {status}{msg} when {ctx}")),
    }
}
