//! Workflow artifacts through the Actions results service (the "v4" protocol that
//! `actions/upload-artifact@v4` and later use).
//!
//! Two halves, as in `@actions/artifact`:
//!
//! 1. Twirp JSON RPCs to `<origin of ACTIONS_RESULTS_URL>/twirp/github.actions.results.api.v1.
//!    ArtifactService/<Method>` with `Authorization: Bearer $ACTIONS_RUNTIME_TOKEN`: request
//!    keys in snake_case, int64 as strings; responses accepted in snake_case (github.com) and
//!    lowerCamelCase (act, Gitea), int64 as string or number.
//! 2. The bytes go to (or come from) a signed blob URL, never with our token: Azure Put Block
//!    (`comp=block`, 8 MiB, sequentially: act appends blocks in arrival order) then Put Block
//!    List (`comp=blocklist`).
//!
//! The zip is produced while it is uploaded (a writer thread feeds 8 MiB blocks through a
//! bounded channel), so neither memory nor the disk ever holds a second copy of the backups.
//! Downloads are streamed to a private temporary file while hashed, checked against the
//! recorded digest, and only then unpacked, refusing any entry that would leave the target.
//! The REST path ([`super::rest`]) uses the same download, check and unpack code.
//!
//! This file is the client (the token's backend ids, the RPCs, retries, the Azure blocks);
//! [`pack`] writes the zip as it is uploaded, [`unpack`] downloads, checks and unpacks.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize};
use sha2::{Digest as _, Sha256};
use url::Url;

use super::commands::Workflow;

mod pack;
mod unpack;

use pack::{plan_entries, write_zip, ZipEntry};
pub(crate) use unpack::fetch_verify_unpack;

const SERVICE_PATH: &str = "twirp/github.actions.results.api.v1.ArtifactService";
/// Size of one Azure block (and of the zip writer's hand-off to the uploader).
pub const BLOCK_SIZE: usize = 8 * 1024 * 1024;
/// Attempts per request (the first try included), as `@actions/artifact`.
pub const MAX_ATTEMPTS: u32 = 5;
/// Production back-off base: 3 s × 1.5^n, with jitter, as `@actions/artifact`.
pub const DEFAULT_RETRY_BASE: Duration = Duration::from_secs(3);
/// Environment variable (milliseconds) that overrides [`DEFAULT_RETRY_BASE`] (tests, impatient CI).
pub const RETRY_BASE_ENV: &str = "PREDEPLOY_RETRY_BASE_MS";
const RETRY_MULTIPLIER: f64 = 1.5;
/// Characters GitHub refuses in artifact names (toolkit `path-and-artifact-name-validation.ts`).
pub const FORBIDDEN_NAME_CHARS: [char; 11] =
    ['"', ':', '<', '>', '|', '*', '?', '\r', '\n', '\\', '/'];
/// Characters refused in a path inside the artifact (same list, minus the separators).
const FORBIDDEN_PATH_CHARS: [char; 9] = ['"', ':', '<', '>', '|', '*', '?', '\r', '\n'];

/// Errors of the artifact service.
#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    /// Bad input: a name GitHub would refuse, a runtime token without its claims, a file that
    /// is missing. Nothing was sent.
    #[error("{0}")]
    Invalid(String),
    /// The artifact does not exist (in this run).
    #[error("{0}")]
    NotFound(String),
    /// The service, the storage or the network failed.
    #[error("{0}")]
    Service(String),
    /// The downloaded bytes differ from the digest recorded at upload: refused, nothing unpacked.
    #[error("{0}")]
    Digest(String),
    /// The archive is corrupt, or has an entry that would write outside the destination.
    #[error("{0}")]
    Unsafe(String),
}

impl crate::error::Classify for ArtifactError {
    fn exit_kind(&self) -> crate::error::ExitKind {
        match self {
            ArtifactError::Invalid(_) | ArtifactError::NotFound(_) => crate::error::ExitKind::Usage,
            ArtifactError::Service(_) => crate::error::ExitKind::Environment,
            ArtifactError::Digest(_) | ArtifactError::Unsafe(_) => {
                crate::error::ExitKind::Unverified
            }
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
    /// Where it was unpacked (the `dest` given).
    pub dir: PathBuf,
    /// Lowercase hex SHA-256 of the zip as downloaded.
    pub digest: String,
    /// The unpacked files (full paths under `dir`), in archive order.
    pub files: Vec<PathBuf>,
}

/// `https://github.com/<repo>/actions/runs/<run>/artifacts/<id>`: upload-artifact's
/// `artifact-url` output.
pub fn artifact_url(
    server_url: &str,
    repository: &str,
    run_id: impl fmt::Display,
    artifact_id: i64,
) -> String {
    let server = server_url.trim().trim_end_matches('/');
    let server = if server.is_empty() {
        "https://github.com"
    } else {
        server
    };
    format!("{server}/{repository}/actions/runs/{run_id}/artifacts/{artifact_id}")
}

/// Checks an artifact name as GitHub does: not empty, none of [`FORBIDDEN_NAME_CHARS`].
pub fn validate_name(name: &str) -> Result<(), ArtifactError> {
    if name.trim().is_empty() {
        return Err(ArtifactError::Invalid(
            "the artifact name is empty: set artifact-name (the default is predeploy-backup)"
                .into(),
        ));
    }
    let found: Vec<&str> = FORBIDDEN_NAME_CHARS
        .iter()
        .filter(|c| name.contains(**c))
        .map(|c| describe_char(*c))
        .collect();
    if !found.is_empty() {
        return Err(ArtifactError::Invalid(format!(
            "the artifact name \"{}\" is not valid: it contains {}. GitHub refuses these \
             characters in artifact names: double quote \", colon :, less than <, greater than >, \
             vertical bar |, asterisk *, question mark ?, carriage return \\r, line feed \\n, \
             backslash \\, forward slash /. Choose another artifact-name.",
            name.escape_debug(),
            found.join(", ")
        )));
    }
    Ok(())
}

fn describe_char(c: char) -> &'static str {
    match c {
        '"' => "a double quote \"",
        ':' => "a colon :",
        '<' => "a less than <",
        '>' => "a greater than >",
        '|' => "a vertical bar |",
        '*' => "an asterisk *",
        '?' => "a question mark ?",
        '\r' => "a carriage return \\r",
        '\n' => "a line feed \\n",
        '\\' => "a backslash \\",
        '/' => "a forward slash /",
        _ => "a forbidden character",
    }
}

// ---------------------------------------------------------------------------------------------
// Retries and HTTP clients (shared with the REST path)

/// Back-off policy: `base × 1.5^n`, jittered up to × 1.5, for [`MAX_ATTEMPTS`] attempts.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Retry {
    pub base: Duration,
    pub attempts: u32,
}

impl Retry {
    /// [`DEFAULT_RETRY_BASE`], or `PREDEPLOY_RETRY_BASE_MS` when set.
    pub(crate) fn from_env() -> Self {
        let base = std::env::var(RETRY_BASE_ENV)
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_millis)
            .unwrap_or(DEFAULT_RETRY_BASE);
        Retry {
            base,
            attempts: MAX_ATTEMPTS,
        }
    }

    /// The wait before retry number `n` (0 for the first retry).
    pub(crate) fn delay(&self, n: u32) -> Duration {
        let min = self.base.as_secs_f64() * RETRY_MULTIPLIER.powi(n as i32);
        let max = min * RETRY_MULTIPLIER;
        Duration::from_secs_f64(min + (max - min) * random_unit())
    }

    /// Sleeps before attempt `attempt` (0-based; no wait before the first), logging why.
    pub(crate) async fn wait(&self, wf: &Workflow, attempt: u32, why: &str) {
        if attempt == 0 {
            return;
        }
        let d = self.delay(attempt - 1);
        wf.log(&format!(
            "{why}; retrying in {:.1} s (attempt {} of {})",
            d.as_secs_f64(),
            attempt + 1,
            self.attempts
        ));
        tokio::time::sleep(d).await;
    }
}

fn random_unit() -> f64 {
    let r = (uuid::Uuid::new_v4().as_u128() >> 64) as u64;
    (r >> 11) as f64 / (1u64 << 53) as f64
}

/// 429 and any 5xx are worth another try.
pub(crate) fn is_retryable(status: reqwest::StatusCode) -> bool {
    status == reqwest::StatusCode::TOO_MANY_REQUESTS || status.is_server_error()
}

pub(crate) use crate::http::{error_chain, http_client};

/// A reqwest error without the URL it carries (a signed URL must never be printed).
pub(crate) fn req_error(e: reqwest::Error) -> String {
    let e = e.without_url();
    error_chain(&e)
}

/// Registers a signed URL's secret parts with the masker.
pub(crate) fn mask_signed_url(wf: &Workflow, u: &Url) {
    for (k, v) in u.query_pairs() {
        if k.eq_ignore_ascii_case("sig") || k.eq_ignore_ascii_case("signature") {
            wf.mask(&v);
            // As it appears, percent-encoded, in the URL text.
            let enc: String = url::form_urlencoded::byte_serialize(v.as_bytes()).collect();
            wf.mask(&enc);
        }
    }
}

/// `scheme://host:port/path`, without the query (which holds the signature).
pub(crate) fn describe_url(u: &Url) -> String {
    let mut s = format!("{}://{}", u.scheme(), u.host_str().unwrap_or(""));
    if let Some(p) = u.port() {
        s.push_str(&format!(":{p}"));
    }
    s.push_str(u.path());
    s
}

fn snippet(wf: &Workflow, body: &str) -> String {
    let t: String = body.trim().chars().take(300).collect();
    wf.redact(&t)
}

// ---------------------------------------------------------------------------------------------
// Lenient deserialisation: int64 as string or number, null as default, StringValue wrappers

fn de_i64<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    use serde::de::Error;
    match serde_json::Value::deserialize(d)? {
        serde_json::Value::Null => Ok(0),
        serde_json::Value::Number(n) => n
            .as_i64()
            .or_else(|| n.as_f64().filter(|f| f.fract() == 0.0).map(|f| f as i64))
            .ok_or_else(|| D::Error::custom(format!("not an int64: {n}"))),
        serde_json::Value::String(s) => s
            .trim()
            .parse::<i64>()
            .map_err(|_| D::Error::custom(format!("not an int64: {s:?}"))),
        other => Err(D::Error::custom(format!("not an int64: {other}"))),
    }
}

fn de_string<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    Ok(de_opt_string(d)?.unwrap_or_default())
}

/// A string, `null`, or a `{"value": "..."}` wrapper.
fn de_opt_string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(match serde_json::Value::deserialize(d)? {
        serde_json::Value::String(s) => Some(s),
        serde_json::Value::Object(m) => m.get("value").and_then(|v| v.as_str()).map(String::from),
        serde_json::Value::Number(n) => Some(n.to_string()),
        _ => None,
    })
}

fn de_vec<'de, D: Deserializer<'de>, T: DeserializeOwned>(d: D) -> Result<Vec<T>, D::Error> {
    Ok(Option::<Vec<T>>::deserialize(d)?.unwrap_or_default())
}

#[derive(Serialize)]
struct CreateArtifactRequest<'a> {
    workflow_run_backend_id: &'a str,
    workflow_job_run_backend_id: &'a str,
    name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    expires_at: Option<String>,
    version: i32,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct CreateArtifactResponse {
    ok: bool,
    #[serde(alias = "signedUploadUrl", deserialize_with = "de_string")]
    signed_upload_url: String,
}

#[derive(Serialize)]
struct FinalizeArtifactRequest<'a> {
    workflow_run_backend_id: &'a str,
    workflow_job_run_backend_id: &'a str,
    name: &'a str,
    /// int64, as a string.
    size: String,
    hash: String,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct FinalizeArtifactResponse {
    ok: bool,
    #[serde(alias = "artifactId", deserialize_with = "de_i64")]
    artifact_id: i64,
}

#[derive(Serialize)]
struct ListArtifactsRequest<'a> {
    workflow_run_backend_id: &'a str,
    workflow_job_run_backend_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    name_filter: Option<&'a str>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct ListArtifactsResponse {
    #[serde(deserialize_with = "de_vec")]
    artifacts: Vec<ListedArtifact>,
}

#[derive(Deserialize, Default, Clone, Debug)]
#[serde(default)]
struct ListedArtifact {
    #[serde(alias = "workflowRunBackendId", deserialize_with = "de_string")]
    workflow_run_backend_id: String,
    #[serde(alias = "workflowJobRunBackendId", deserialize_with = "de_string")]
    workflow_job_run_backend_id: String,
    #[serde(alias = "databaseId", deserialize_with = "de_i64")]
    database_id: i64,
    #[serde(deserialize_with = "de_string")]
    name: String,
    #[serde(deserialize_with = "de_i64")]
    size: i64,
    #[serde(deserialize_with = "de_opt_string")]
    digest: Option<String>,
}

#[derive(Serialize)]
struct GetSignedArtifactUrlRequest<'a> {
    workflow_run_backend_id: &'a str,
    workflow_job_run_backend_id: &'a str,
    name: &'a str,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct GetSignedArtifactUrlResponse {
    #[serde(alias = "signedUrl", deserialize_with = "de_string")]
    signed_url: String,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct TwirpError {
    #[serde(deserialize_with = "de_string")]
    code: String,
    #[serde(deserialize_with = "de_string")]
    msg: String,
}

// ---------------------------------------------------------------------------------------------
// The runtime token

const TOKEN_HELP: &str = "artifacts can be uploaded or downloaded only inside a GitHub Actions \
     job, which gives the step ACTIONS_RUNTIME_TOKEN and ACTIONS_RESULTS_URL; under act, pass \
     --artifact-server-path <dir> so that act starts its artifact server and hands out a token. \
     Outside Actions set upload-artifact: false";

fn backend_ids(token: &str) -> Result<(String, String), ArtifactError> {
    let invalid = |why: &str| {
        ArtifactError::Invalid(format!(
            "the Actions runtime token (ACTIONS_RUNTIME_TOKEN) is invalid and/or missing claims \
             ({why}): {TOKEN_HELP}"
        ))
    };
    let token = token.trim();
    if token.is_empty() {
        return Err(invalid("it is empty"));
    }
    let parts: Vec<&str> = token.split('.').collect();
    if parts.len() != 3 {
        return Err(invalid("it is not a JWT of three dot-separated parts"));
    }
    let lenient = base64::engine::GeneralPurpose::new(
        &base64::alphabet::URL_SAFE,
        base64::engine::GeneralPurposeConfig::new()
            .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
    );
    let payload = lenient
        .decode(parts[1])
        .map_err(|_| invalid("its payload is not base64url"))?;
    let claims: serde_json::Value =
        serde_json::from_slice(&payload).map_err(|_| invalid("its payload is not JSON"))?;
    let scp = match claims.get("scp") {
        Some(serde_json::Value::String(s)) => s.clone(),
        Some(serde_json::Value::Array(a)) => a
            .iter()
            .filter_map(|v| v.as_str())
            .collect::<Vec<_>>()
            .join(" "),
        _ => return Err(invalid("it has no `scp` claim")),
    };
    for scope in scp.split_whitespace() {
        if scope.starts_with("Actions.Results:") {
            let p: Vec<&str> = scope.split(':').collect();
            if p.len() == 3 && !p[1].is_empty() && !p[2].is_empty() {
                return Ok((p[1].to_string(), p[2].to_string()));
            }
            return Err(invalid(
                "its `Actions.Results` scope is not `Actions.Results:<run>:<job>`",
            ));
        }
    }
    Err(invalid(
        "its `scp` claim has no `Actions.Results:<run>:<job>` scope",
    ))
}

// ---------------------------------------------------------------------------------------------
// The client

/// A client of the results service, built from the runtime's URL and token.
pub struct ArtifactClient {
    origin: String,
    token: String,
    run_backend_id: String,
    job_backend_id: String,
    api: reqwest::Client,
    blob: reqwest::Client,
    retry: Retry,
    retention_cap: Option<u32>,
    /// The run's log and secrets (the token and signed URLs are masked there).
    wf: Workflow,
}

impl fmt::Debug for ArtifactClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ArtifactClient")
            .field("origin", &self.origin)
            .field("run_backend_id", &self.run_backend_id)
            .field("job_backend_id", &self.job_backend_id)
            .field("retry", &self.retry)
            .field("retention_cap", &self.retention_cap)
            .finish_non_exhaustive()
    }
}

impl ArtifactClient {
    /// `results_url` is `ACTIONS_RESULTS_URL` (only its origin is used); `runtime_token` is
    /// `ACTIONS_RUNTIME_TOKEN`, whose `scp` claim names the run and job. The token is masked.
    /// The retry base comes from `PREDEPLOY_RETRY_BASE_MS` (default 3 s) and the retention cap
    /// from `GITHUB_RETENTION_DAYS`; both can be overridden with the `with_*` methods.
    /// Progress is logged, and secrets masked, through `wf`.
    pub fn new(
        results_url: &str,
        runtime_token: &str,
        wf: &Workflow,
    ) -> Result<Self, ArtifactError> {
        let token = runtime_token.trim().to_string();
        wf.mask(&token);
        let (run_backend_id, job_backend_id) = backend_ids(&token)?;
        if token.chars().any(|c| c.is_control() || !c.is_ascii()) {
            return Err(ArtifactError::Invalid(format!(
                "the Actions runtime token (ACTIONS_RUNTIME_TOKEN) is invalid: it contains \
                 characters that cannot be sent in an HTTP header: {TOKEN_HELP}"
            )));
        }
        let url = Url::parse(results_url.trim()).map_err(|e| {
            ArtifactError::Invalid(format!(
                "ACTIONS_RESULTS_URL `{}` is not a URL ({e}): {TOKEN_HELP}",
                wf.redact(results_url.trim())
            ))
        })?;
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
            return Err(ArtifactError::Invalid(format!(
                "ACTIONS_RESULTS_URL `{}` is not an http(s) URL: {TOKEN_HELP}",
                wf.redact(results_url.trim())
            )));
        }
        let origin = url.origin().ascii_serialization();
        let api = http_client(false).map_err(ArtifactError::Service)?;
        let blob = http_client(true).map_err(ArtifactError::Service)?;
        let retention_cap = std::env::var("GITHUB_RETENTION_DAYS")
            .ok()
            .and_then(|v| v.trim().parse::<u32>().ok())
            .filter(|d| *d > 0);
        Ok(ArtifactClient {
            origin,
            token,
            run_backend_id,
            job_backend_id,
            api,
            blob,
            retry: Retry::from_env(),
            retention_cap,
            wf: wf.clone(),
        })
    }

    /// Sets the back-off base (production: 3 s; tests: a few ms).
    pub fn with_retry_base(mut self, base: Duration) -> Self {
        self.retry.base = base;
        self
    }

    /// Sets the repository's maximum retention (`GITHUB_RETENTION_DAYS`); `None` for no cap.
    pub fn with_retention_cap(mut self, cap: Option<u32>) -> Self {
        self.retention_cap = cap.filter(|d| *d > 0);
        self
    }

    /// The `(workflow run, workflow job run)` backend IDs read from the token.
    pub fn backend_ids(&self) -> (&str, &str) {
        (&self.run_backend_id, &self.job_backend_id)
    }

    /// The origin all RPCs go to.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// Uploads `files` (path inside the zip, file on disk) as the artifact `name`.
    ///
    /// `.gz`/`.tar.gz` (and other already compressed) entries are stored, the rest deflated.
    /// The zip is streamed in 8 MiB blocks while it is written; nothing is held whole.
    /// `retention_days`: `None` or 0 leaves the repository's default.
    pub async fn upload(
        &self,
        name: &str,
        files: &[(String, PathBuf)],
        retention_days: Option<u32>,
    ) -> Result<UploadedArtifact, ArtifactError> {
        validate_name(name)?;
        let entries = plan_entries(files)?;
        let expires_at = self.expires_at(retention_days);
        self.wf.log(&format!(
            "Uploading artifact `{name}` ({} file{})",
            entries.len(),
            if entries.len() == 1 { "" } else { "s" }
        ));

        let created: CreateArtifactResponse = self
            .twirp(
                "CreateArtifact",
                &CreateArtifactRequest {
                    workflow_run_backend_id: &self.run_backend_id,
                    workflow_job_run_backend_id: &self.job_backend_id,
                    name,
                    expires_at,
                    version: 4,
                },
            )
            .await?;
        if !created.ok || created.signed_upload_url.is_empty() {
            return Err(ArtifactError::Service(format!(
                "the results service did not accept the artifact `{name}` (CreateArtifact \
                 answered ok=false): an artifact of that name may already exist in this run \
                 (names must be unique per run; choose another artifact-name)"
            )));
        }
        let signed = Url::parse(&created.signed_upload_url).map_err(|e| {
            ArtifactError::Service(format!(
                "CreateArtifact returned an upload URL that is not a URL: {e}"
            ))
        })?;
        mask_signed_url(&self.wf, &signed);

        let (size, digest) = self.upload_zip(&signed, entries).await?;

        let fin: FinalizeArtifactResponse = self
            .twirp(
                "FinalizeArtifact",
                &FinalizeArtifactRequest {
                    workflow_run_backend_id: &self.run_backend_id,
                    workflow_job_run_backend_id: &self.job_backend_id,
                    name,
                    size: size.to_string(),
                    hash: format!("sha256:{digest}"),
                },
            )
            .await?;
        if !fin.ok {
            return Err(ArtifactError::Service(format!(
                "the results service did not finalize the artifact `{name}` (FinalizeArtifact \
                 answered ok=false) after {size} bytes were uploaded"
            )));
        }
        self.wf.log(&format!(
            "Uploaded artifact `{name}`: id {}, {size} bytes, sha256:{digest}",
            fin.artifact_id
        ));
        Ok(UploadedArtifact {
            id: fin.artifact_id,
            digest,
            size,
        })
    }

    /// Downloads the newest artifact `name` of this run into `dest` (created if needed),
    /// refusing it if its SHA-256 differs from the digest the service recorded.
    pub async fn download(
        &self,
        name: &str,
        dest: &Path,
    ) -> Result<DownloadedArtifact, ArtifactError> {
        validate_name(name)?;
        let run = std::env::var("GITHUB_RUN_ID")
            .ok()
            .filter(|v| !v.trim().is_empty())
            .map(|v| format!("run {v}"))
            .unwrap_or_else(|| format!("the current run (backend id {})", self.run_backend_id));
        let list: ListArtifactsResponse = self
            .twirp(
                "ListArtifacts",
                &ListArtifactsRequest {
                    workflow_run_backend_id: &self.run_backend_id,
                    workflow_job_run_backend_id: &self.job_backend_id,
                    name_filter: Some(name),
                },
            )
            .await?;
        let Some(found) = list
            .artifacts
            .into_iter()
            .filter(|a| a.name == name)
            .max_by_key(|a| a.database_id)
        else {
            return Err(ArtifactError::NotFound(format!(
                "{run} has no artifact named `{name}`: the backup step of this run did not \
                 upload it (upload-artifact: false, or it has not run yet), or it was deleted. \
                 To restore a backup of another run, pass run-id (with github-token that has \
                 actions: read), or manifest with the path of a local manifest.yml"
            )));
        };
        let run_id = if found.workflow_run_backend_id.is_empty() {
            self.run_backend_id.as_str()
        } else {
            found.workflow_run_backend_id.as_str()
        };
        let job_id = if found.workflow_job_run_backend_id.is_empty() {
            self.job_backend_id.as_str()
        } else {
            found.workflow_job_run_backend_id.as_str()
        };
        let signed: GetSignedArtifactUrlResponse = self
            .twirp(
                "GetSignedArtifactURL",
                &GetSignedArtifactUrlRequest {
                    workflow_run_backend_id: run_id,
                    workflow_job_run_backend_id: job_id,
                    name,
                },
            )
            .await?;
        if signed.signed_url.is_empty() {
            return Err(ArtifactError::Service(format!(
                "GetSignedArtifactURL returned no URL for the artifact `{name}` of {run}"
            )));
        }
        let url = Url::parse(&signed.signed_url).map_err(|e| {
            ArtifactError::Service(format!(
                "GetSignedArtifactURL returned a download URL that is not a URL: {e}"
            ))
        })?;
        mask_signed_url(&self.wf, &url);
        let what = format!("the artifact `{name}` (id {}) of {run}", found.database_id);
        fetch_verify_unpack(
            &self.blob,
            self.retry,
            &self.wf,
            &url,
            found.digest.as_deref(),
            &what,
            dest,
        )
        .await
    }

    fn expires_at(&self, retention_days: Option<u32>) -> Option<String> {
        let mut days = retention_days.filter(|d| *d > 0)?;
        if let Some(cap) = self.retention_cap {
            if days > cap {
                self.wf.warning(
                    "Artifact retention",
                    None,
                    &format!(
                        "retention-days {days} is more than this repository's maximum of {cap} \
                         days (GITHUB_RETENTION_DAYS): the artifact will be kept {cap} days"
                    ),
                );
                days = cap;
            }
        }
        let at = chrono::Utc::now() + chrono::Duration::days(i64::from(days));
        Some(at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
    }

    /// One Twirp RPC, with retries on 429, 5xx, transport errors and unreadable answers.
    async fn twirp<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        method: &str,
        req: &Req,
    ) -> Result<Resp, ArtifactError> {
        let url = format!("{}/{SERVICE_PATH}/{method}", self.origin);
        let body = Bytes::from(
            serde_json::to_vec(req).map_err(|e| ArtifactError::Service(e.to_string()))?,
        );
        let mut last = String::new();
        for attempt in 0..self.retry.attempts {
            self.retry.wait(&self.wf, attempt, &last).await;
            let sent = self
                .api
                .post(&url)
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .header(reqwest::header::ACCEPT, "application/json")
                .bearer_auth(&self.token)
                .body(body.clone())
                .send()
                .await;
            let resp = match sent {
                Ok(r) => r,
                Err(e) => {
                    last = format!(
                        "could not reach the results service at {} for {method}: {}",
                        self.origin,
                        req_error(e)
                    );
                    continue;
                }
            };
            let status = resp.status();
            let text = match resp.bytes().await {
                Ok(b) => b,
                Err(e) => {
                    last = format!("{method}: the answer was cut short: {}", req_error(e));
                    continue;
                }
            };
            if status.is_success() {
                match serde_json::from_slice::<Resp>(&text) {
                    Ok(v) => return Ok(v),
                    Err(e) => {
                        last = format!(
                            "{method} answered {status} with a body that is not the expected \
                             JSON ({e}): {}",
                            snippet(&self.wf, &String::from_utf8_lossy(&text))
                        );
                        continue;
                    }
                }
            }
            let twirp: TwirpError = serde_json::from_slice(&text).unwrap_or_default();
            let detail = if twirp.msg.is_empty() {
                snippet(&self.wf, &String::from_utf8_lossy(&text))
            } else if twirp.code.is_empty() {
                self.wf.redact(&twirp.msg)
            } else {
                self.wf.redact(&format!("{} ({})", twirp.msg, twirp.code))
            };
            let detail = if detail.is_empty() {
                String::new()
            } else {
                format!(": {detail}")
            };
            if twirp.msg.contains("insufficient usage") {
                return Err(ArtifactError::Service(format!(
                    "the results service refused {method}{detail}: the account's artifact \
                     storage quota is used up; delete old artifacts or lower retention-days"
                )));
            }
            if is_retryable(status) {
                last = format!("{method} answered {status}{detail}");
                continue;
            }
            if status == reqwest::StatusCode::UNAUTHORIZED
                || status == reqwest::StatusCode::FORBIDDEN
            {
                return Err(ArtifactError::Service(format!(
                    "the results service refused the runtime token ({method} answered \
                     {status}{detail}): the token is invalid or has expired; {TOKEN_HELP}"
                )));
            }
            return Err(ArtifactError::Service(format!(
                "the results service refused {method} with {status}{detail}"
            )));
        }
        Err(ArtifactError::Service(format!(
            "the Actions results service failed {} times; last: {last}. Check ACTIONS_RESULTS_URL \
             ({}); under act, the artifact server (--artifact-server-path, \
             --artifact-server-addr) must be reachable from the action's container",
            self.retry.attempts, self.origin
        )))
    }

    /// Writes the zip on a blocking thread and uploads it block by block as it comes.
    async fn upload_zip(
        &self,
        signed: &Url,
        entries: Vec<ZipEntry>,
    ) -> Result<(u64, String), ArtifactError> {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Bytes>(1);
        let writer = tokio::task::spawn_blocking(move || write_zip(entries, tx));
        let mut hasher = Sha256::new();
        let mut size = 0u64;
        let mut ids: Vec<String> = Vec::new();
        while let Some(block) = rx.recv().await {
            hasher.update(&block);
            size += block.len() as u64;
            let id = block_id(ids.len());
            let mut url = signed.clone();
            url.query_pairs_mut()
                .append_pair("comp", "block")
                .append_pair("blockid", &id);
            let what = format!("block {} ({} bytes)", ids.len() + 1, block.len());
            self.put_blob(&url, block, None, &what).await?;
            ids.push(id);
        }
        match writer.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(e),
            Err(e) => {
                return Err(ArtifactError::Service(format!(
                    "the zip writer stopped unexpectedly: {e}"
                )))
            }
        }
        let mut xml = String::from(r#"<?xml version="1.0" encoding="utf-8"?><BlockList>"#);
        for id in &ids {
            xml.push_str("<Latest>");
            xml.push_str(id);
            xml.push_str("</Latest>");
        }
        xml.push_str("</BlockList>");
        let mut url = signed.clone();
        url.query_pairs_mut().append_pair("comp", "blocklist");
        self.put_blob(&url, Bytes::from(xml), Some("zip"), "the block list")
            .await?;
        Ok((size, hex::encode(hasher.finalize())))
    }

    /// One PUT to the blob storage (no credentials but the URL's signature), with retries.
    async fn put_blob(
        &self,
        url: &Url,
        body: Bytes,
        blob_content_type: Option<&str>,
        what: &str,
    ) -> Result<(), ArtifactError> {
        let mut last = String::new();
        for attempt in 0..self.retry.attempts {
            self.retry.wait(&self.wf, attempt, &last).await;
            let mut req = self.blob.put(url.clone()).body(body.clone());
            if let Some(ct) = blob_content_type {
                req = req
                    .header("x-ms-blob-content-type", ct)
                    .header(reqwest::header::CONTENT_TYPE, "application/xml");
            }
            match req.send().await {
                Err(e) => {
                    last = format!(
                        "uploading {what} to {} failed: {}",
                        describe_url(url),
                        req_error(e)
                    )
                }
                Ok(r) => {
                    let status = r.status();
                    if status.is_success() {
                        return Ok(());
                    }
                    let text = r.text().await.unwrap_or_default();
                    let detail = azure_error(&self.wf, &text);
                    if is_retryable(status) {
                        last = format!("the artifact storage answered {status} to {what}{detail}");
                        continue;
                    }
                    return Err(ArtifactError::Service(format!(
                        "the artifact storage ({}) refused {what} with {status}{detail}; the \
                         signed upload URL may have expired",
                        describe_url(url)
                    )));
                }
            }
        }
        Err(ArtifactError::Service(format!(
            "uploading the artifact failed {} times; last: {last}",
            self.retry.attempts
        )))
    }
}

/// Equal-length block IDs (Azure requires it), base64 of a fixed-width counter.
fn block_id(index: usize) -> String {
    base64::engine::general_purpose::STANDARD.encode(format!("predeploy-block-{index:08}"))
}

/// `: <Code>: <Message>` from an Azure storage error body, if any.
fn azure_error(wf: &Workflow, body: &str) -> String {
    let tag = |t: &str| -> Option<String> {
        let open = format!("<{t}>");
        let close = format!("</{t}>");
        let s = body.find(&open)? + open.len();
        let e = body[s..].find(&close)? + s;
        Some(body[s..e].lines().next().unwrap_or("").trim().to_string())
    };
    match (tag("Code"), tag("Message")) {
        (Some(c), Some(m)) => wf.redact(&format!(": {c}: {m}")),
        (Some(c), None) => wf.redact(&format!(": {c}")),
        _ if body.trim().is_empty() => String::new(),
        _ => format!(": {}", snippet(wf, body)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jwt(payload: &str) -> String {
        let e = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        format!(
            "{}.{}.sig",
            e.encode(r#"{"alg":"HS256"}"#),
            e.encode(payload)
        )
    }

    #[test]
    fn backend_ids_from_scp() {
        let t = jwt(r#"{"scp":"Actions.ExampleScope Actions.Results:ce7f54c7:ca395085"}"#);
        assert_eq!(
            backend_ids(&t).unwrap(),
            ("ce7f54c7".into(), "ca395085".into())
        );
        assert!(backend_ids("a.b").is_err());
        assert!(backend_ids(&jwt(r#"{"sub":"x"}"#)).is_err());
        assert!(backend_ids(&jwt(r#"{"scp":"Actions.Results:1"}"#)).is_err());
    }

    #[test]
    fn lenient_responses() {
        let a: FinalizeArtifactResponse =
            serde_json::from_str(r#"{"ok":true,"artifactId":"42"}"#).unwrap();
        assert_eq!(a.artifact_id, 42);
        let b: FinalizeArtifactResponse =
            serde_json::from_str(r#"{"ok":true,"artifact_id":43}"#).unwrap();
        assert_eq!(b.artifact_id, 43);
        let l: ListArtifactsResponse = serde_json::from_str(r#"{"artifacts":null}"#).unwrap();
        assert!(l.artifacts.is_empty());
        let l: ListArtifactsResponse = serde_json::from_str(r#"{}"#).unwrap();
        assert!(l.artifacts.is_empty());
    }

    #[test]
    fn names_and_block_ids() {
        assert!(validate_name("predeploy-backup").is_ok());
        for bad in ["", " ", "a:b", "a/b", "a\\b", "a\nb", "a?", "x\"y"] {
            assert!(validate_name(bad).is_err(), "{bad:?}");
        }
        assert_eq!(block_id(0).len(), block_id(123_456).len());
    }
}
