//! GitHub's REST API: the manifest artifact of another run (what `actions/download-artifact`
//! does with `run-id`, `repository` and `github-token`).
//!
//! 1. `GET /repos/{o}/{r}/actions/runs/{run}/artifacts?name=<name>&per_page=100`: deserialised
//!    into [`ArtifactList`] (all pages), the highest `id` with exactly that name wins.
//! 2. `GET /repos/{o}/{r}/actions/artifacts/{id}/zip` answers 302 with a short-lived signed
//!    blob URL. The API client follows no redirect, so we see the 302 and take its
//!    `Location`; 410 means expired.
//! 3. The blob is fetched with a second client that carries no `Authorization` header,
//!    hashed while streamed to disk, compared with `digest`, and unpacked safely: the same code
//!    as the results-service path ([`super::artifact`]).
//!
//! The three calls go through the crate's one HTTP client setup ([`crate::http`], reqwest on
//! rustls with ring) with typed (serde) answers; an SDK such as octocrab would add a second
//! HTTP stack (its own hyper client, tower retry and timeout layers, base64 and getrandom
//! versions of its own) for three GETs, and its artifact model lacks `digest`.
//!
//! The token goes only to the API host, and is masked in the log.

use std::path::Path;
use std::time::Duration;

use serde::Deserialize;
use url::Url;

use super::artifact::{self, ArtifactError, DownloadedArtifact, Retry};
use super::commands::Workflow;

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
    /// The run is not one whose artifact a rollback may trust (another repository, a fork,
    /// a pull request, a workflow or branch outside `trusted-workflows`/`trusted-branches`).
    #[error("{0}")]
    Untrusted(String),
}

impl crate::error::Classify for RestError {
    fn exit_kind(&self) -> crate::error::ExitKind {
        match self {
            RestError::Invalid(_)
            | RestError::NotFound(_)
            | RestError::Expired(_)
            | RestError::Auth(_)
            | RestError::Untrusted(_) => crate::error::ExitKind::Usage,
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

/// A workflow run as `GET /repos/{owner}/{repo}/actions/runs/{run_id}` documents it
/// (https://docs.github.com/rest/actions/workflow-runs#get-a-workflow-run): only the fields
/// the provenance check reads.
#[derive(Deserialize, Clone, Debug, Default)]
pub struct WorkflowRun {
    pub id: u64,
    #[serde(default)]
    pub event: String,
    /// The workflow file, e.g. `.github/workflows/deploy.yml`.
    #[serde(default)]
    pub path: String,
    #[serde(default)]
    pub head_branch: Option<String>,
    #[serde(default)]
    pub repository: Option<RunRepository>,
    /// `null` when the head repository (a fork) was deleted.
    #[serde(default)]
    pub head_repository: Option<RunRepository>,
}

#[derive(Deserialize, Clone, Debug, Default)]
pub struct RunRepository {
    #[serde(default)]
    pub full_name: String,
}

/// Which runs a rollback may take a backup from.
#[derive(Clone, Debug, Default)]
pub struct TrustPolicy {
    /// `owner/name` the run must belong to and have run from (`GITHUB_REPOSITORY`).
    pub repository: String,
    /// Workflow files (`.github/workflows/deploy.yml` or just `deploy.yml`); empty: any.
    pub workflows: Vec<String>,
    /// Globs for the run's branch (`main`, `release/*`, `**`); empty: any.
    pub branches: Vec<String>,
}

/// Refuses a run whose artifact anyone but this repository's own workflows could have
/// uploaded: another repository, a fork, a `pull_request*` event, or a workflow or branch
/// outside the policy. Fails closed: a missing field is a refusal.
pub fn check_provenance(run: &WorkflowRun, policy: &TrustPolicy) -> Result<(), RestError> {
    let id = run.id;
    let refuse = |why: String| {
        RestError::Untrusted(format!(
            "refusing the backup of run {id}: {why}. A rollback restores only what this \
             repository's own workflows uploaded; pick the run id of a deploy run of {} (or set \
             trusted-workflows / trusted-branches to the workflow files and branches you deploy \
             from)",
            policy.repository
        ))
    };
    let same = |a: &str| a.eq_ignore_ascii_case(&policy.repository);
    let repo = run.repository.as_ref().map(|r| r.full_name.as_str());
    if !repo.is_some_and(same) {
        return Err(refuse(format!(
            "it belongs to repository {}, not {}",
            repo.unwrap_or("(unknown)"),
            policy.repository
        )));
    }
    let head = run.head_repository.as_ref().map(|r| r.full_name.as_str());
    if !head.is_some_and(same) {
        return Err(refuse(format!(
            "its code came from {} (a fork), not from {}",
            head.unwrap_or("a deleted repository"),
            policy.repository
        )));
    }
    if run.event.is_empty() || run.event.starts_with("pull_request") {
        return Err(refuse(format!(
            "it ran for a `{}` event, whose artifacts the pull request's author controls",
            if run.event.is_empty() {
                "(unknown)"
            } else {
                &run.event
            }
        )));
    }
    if !policy.workflows.is_empty() {
        let path = run
            .path
            .split('@')
            .next()
            .unwrap_or("")
            .trim_start_matches("./");
        let ok = policy.workflows.iter().any(|w| {
            let w = w.trim().trim_start_matches("./");
            !w.is_empty() && (path == w || (!w.contains('/') && path.rsplit('/').next() == Some(w)))
        });
        if !ok {
            return Err(refuse(format!(
                "it ran workflow `{}`, which is not in trusted-workflows ({})",
                path,
                policy.workflows.join(", ")
            )));
        }
    }
    if !policy.branches.is_empty() {
        let branch = run.head_branch.as_deref().unwrap_or("");
        if branch.is_empty() || !policy.branches.iter().any(|g| glob_match(g.trim(), branch)) {
            return Err(refuse(format!(
                "it ran on branch `{}`, which matches none of trusted-branches ({})",
                branch,
                policy.branches.join(", ")
            )));
        }
    }
    Ok(())
}

/// GitHub's branch-filter globs: `*` any characters but `/`, `**` any characters, `?` one
/// character but `/`. Patterns are short (at most 256 bytes).
pub fn glob_match(pattern: &str, text: &str) -> bool {
    fn go(p: &[u8], t: &[u8]) -> bool {
        if p.is_empty() {
            return t.is_empty();
        }
        if p.starts_with(b"**") {
            let rest = &p[2..];
            return (0..=t.len()).any(|i| go(rest, &t[i..]));
        }
        match p[0] {
            b'*' => {
                let rest = &p[1..];
                let stop = t.iter().position(|&c| c == b'/').unwrap_or(t.len());
                (0..=stop).any(|i| go(rest, &t[i..]))
            }
            b'?' => !t.is_empty() && t[0] != b'/' && go(&p[1..], &t[1..]),
            c => !t.is_empty() && t[0] == c && go(&p[1..], &t[1..]),
        }
    }
    !pattern.is_empty()
        && pattern.len() <= 256
        && pattern.matches('*').count() <= 8
        && go(pattern.as_bytes(), text.as_bytes())
}

const PER_PAGE: usize = 100;
/// One API call, connection to last byte (the answers are small JSON documents).
const API_TIMEOUT: Duration = Duration::from_secs(120);
const MAX_PAGES: usize = 20;

const TOKEN_HELP: &str = "pass github-token with `actions: read` (in a workflow: \
     `github-token: ${{ github.token }}` and `permissions: actions: read`; for another \
     repository, a personal access token or an app token that can read its Actions)";

pub struct RestClient {
    /// Follows no redirect: the zip endpoint's 302 is read, not followed.
    http: reqwest::Client,
    /// `Bearer <token>`, marked sensitive (never printed in a `Debug`).
    auth: reqwest::header::HeaderValue,
    /// `GITHUB_API_URL` without a trailing `/`; a path such as GHES's `/api/v3` is kept.
    base: String,
    api: Url,
    blob: reqwest::Client,
    retry: Retry,
    /// The run's log and secrets (the token and signed URLs are masked there).
    wf: Workflow,
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
    /// Progress is logged, and secrets masked, through `wf`.
    pub fn new(api_url: &str, token: &str, wf: &Workflow) -> Result<Self, RestError> {
        let token = token.trim();
        if token.is_empty() {
            return Err(RestError::Invalid(format!(
                "github-token is empty: the backup of another run is downloaded through \
                 GitHub's REST API, which needs a token; {TOKEN_HELP}"
            )));
        }
        wf.mask(token);
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
                wf.redact(api_str)
            ))
        })?;
        if !matches!(api.scheme(), "http" | "https")
            || api.host_str().is_none()
            || api.query().is_some()
        {
            return Err(RestError::Invalid(format!(
                "GITHUB_API_URL `{}` is not an http(s) URL without a query",
                wf.redact(api_str)
            )));
        }
        let base = api.as_str().trim_end_matches('/').to_string();
        let mut auth =
            reqwest::header::HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| {
                RestError::Invalid("github-token cannot be sent in an HTTP header".into())
            })?;
        auth.set_sensitive(true);
        let http = artifact::http_client(false).map_err(|e| {
            RestError::Service(format!(
                "could not set up the GitHub API client: {e}; the image needs CA certificates \
                 (ca-certificates)"
            ))
        })?;
        let blob = artifact::http_client(true).map_err(RestError::Service)?;
        Ok(RestClient {
            http,
            auth,
            base,
            api,
            blob,
            retry: Retry::from_env(),
            wf: wf.clone(),
        })
    }

    /// The run `run_id` of `repository`, as GitHub describes it (for [`check_provenance`]).
    pub async fn workflow_run(
        &self,
        repository: &str,
        run_id: u64,
    ) -> Result<WorkflowRun, RestError> {
        let (owner, name) = split_repository(repository)?;
        let ctx = format!("reading run {run_id} of {owner}/{name}");
        let (status, _, body) = self
            .get(&format!("/repos/{owner}/{name}/actions/runs/{run_id}"))
            .await?;
        if status.as_u16() == 404 {
            return Err(RestError::NotFound(format!(
                "GitHub knows no run {run_id} in {owner}/{name} (404{}): check run-id and \
                 repository, and that github-token can read that repository's Actions",
                github_message(&self.wf, &body)
            )));
        }
        if !status.is_success() {
            return Err(status_error(&self.wf, status, &body, &ctx));
        }
        serde_json::from_str(&body).map_err(|e| {
            RestError::Service(format!(
                "GitHub's answer when {ctx} is not a workflow run: {e}"
            ))
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
        self.wf.log(&format!(
            "Downloading {what}{}",
            found
                .size_in_bytes
                .map(|s| format!(" ({s} bytes)"))
                .unwrap_or_default()
        ));
        let location = self.zip_location(owner, repo, found.id, &what).await?;
        artifact::mask_signed_url(&self.wf, &location);
        artifact::fetch_verify_unpack(
            &self.blob,
            self.retry,
            &self.wf,
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
                _ => return Err(status_error(&self.wf, status, &body, &ctx)),
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
            _ => return Err(status_error(&self.wf, status, &body, &ctx)),
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

    /// A GET to the API (with the token), retried on 429, 5xx and transport errors. A
    /// redirect is returned as it is (status and `Location`), never followed.
    async fn get(
        &self,
        path_and_query: &str,
    ) -> Result<(reqwest::StatusCode, reqwest::header::HeaderMap, String), RestError> {
        let url = format!("{}{path_and_query}", self.base);
        let endpoint = path_and_query.split('?').next().unwrap_or(path_and_query);
        let mut last = String::new();
        for attempt in 0..self.retry.attempts {
            self.retry.wait(&self.wf, attempt, &last).await;
            let sent = self
                .http
                .get(&url)
                .header(reqwest::header::ACCEPT, "application/vnd.github+json")
                .header(reqwest::header::AUTHORIZATION, self.auth.clone())
                .timeout(API_TIMEOUT)
                .send()
                .await;
            let resp = match sent {
                Ok(r) => r,
                Err(e) => {
                    last = format!(
                        "could not reach the GitHub API at {} for {endpoint}: {}",
                        artifact::describe_url(&self.api),
                        artifact::req_error(e)
                    );
                    continue;
                }
            };
            let status = resp.status();
            let headers = resp.headers().clone();
            let body = match resp.text().await {
                Ok(b) => b,
                Err(e) => {
                    last = format!(
                        "the GitHub API's answer for {endpoint} was cut short: {}",
                        artifact::req_error(e)
                    );
                    continue;
                }
            };
            if artifact::is_retryable(status) {
                last = format!(
                    "the GitHub API answered {status} for {endpoint}{}",
                    github_message(&self.wf, &body)
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

fn github_message(wf: &Workflow, body: &str) -> String {
    let m: GithubMessage = serde_json::from_str(body).unwrap_or_default();
    match m.message.filter(|s| !s.trim().is_empty()) {
        Some(s) => format!(": {}", wf.redact(s.trim())),
        None => String::new(),
    }
}

fn status_error(wf: &Workflow, status: reqwest::StatusCode, body: &str, ctx: &str) -> RestError {
    let msg = github_message(wf, body);
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

#[cfg(test)]
mod provenance_tests {
    use super::*;

    fn run(repo: &str, head: Option<&str>, event: &str, path: &str, branch: &str) -> WorkflowRun {
        WorkflowRun {
            id: 7,
            event: event.into(),
            path: path.into(),
            head_branch: Some(branch.into()),
            repository: Some(RunRepository {
                full_name: repo.into(),
            }),
            head_repository: head.map(|h| RunRepository {
                full_name: h.into(),
            }),
        }
    }

    fn policy(workflows: &[&str], branches: &[&str]) -> TrustPolicy {
        TrustPolicy {
            repository: "org/app".into(),
            workflows: workflows.iter().map(|s| s.to_string()).collect(),
            branches: branches.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn runs_are_checked() {
        let wf = ".github/workflows/deploy.yml";
        let good = run("org/app", Some("org/app"), "push", wf, "main");
        check_provenance(&good, &policy(&[], &[])).unwrap();
        check_provenance(&good, &policy(&["deploy.yml"], &["main"])).unwrap();
        check_provenance(&good, &policy(&[wf], &["ma*"])).unwrap();
        let refused = |r: &WorkflowRun, p: &TrustPolicy, needle: &str| {
            let e = check_provenance(r, p).unwrap_err();
            assert!(matches!(e, RestError::Untrusted(_)), "{e}");
            assert!(e.to_string().contains(needle), "{e}");
        };
        let any = policy(&[], &[]);
        refused(
            &run("evil/app", Some("evil/app"), "push", wf, "main"),
            &any,
            "belongs to repository evil/app",
        );
        refused(
            &run("org/app", Some("fork/app"), "push", wf, "main"),
            &any,
            "fork",
        );
        refused(&run("org/app", None, "push", wf, "main"), &any, "deleted");
        refused(
            &run(
                "org/app",
                Some("org/app"),
                "pull_request_target",
                wf,
                "main",
            ),
            &any,
            "pull_request_target",
        );
        refused(
            &run("org/app", Some("org/app"), "pull_request", wf, "main"),
            &any,
            "`pull_request` event",
        );
        refused(
            &run("org/app", Some("org/app"), "", wf, "main"),
            &any,
            "(unknown)",
        );
        refused(
            &run(
                "org/app",
                Some("org/app"),
                "push",
                ".github/workflows/ci.yml",
                "main",
            ),
            &policy(&["deploy.yml"], &[]),
            "trusted-workflows",
        );
        refused(
            &run("org/app", Some("org/app"), "push", wf, "feature/x"),
            &policy(&[], &["main", "release/*"]),
            "trusted-branches",
        );
    }

    #[test]
    fn globs() {
        assert!(glob_match("release/*", "release/1.2"));
        assert!(!glob_match("release/*", "release/1/2"));
        assert!(glob_match("release/**", "release/1/2"));
        assert!(glob_match("v?", "v1"));
        assert!(!glob_match("main", "main2"));
        assert!(!glob_match("", "main"));
    }
}
