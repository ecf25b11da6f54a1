//! A local server that answers as GitHub's REST API documents the artifact endpoints
//! (https://docs.github.com/rest/actions/artifacts), plus a separate "blob storage" server on
//! another address that the zip endpoint redirects to, like GitHub's signed blob URLs.
//!
//! - `GET /repos/{o}/{r}/actions/runs/{run}/artifacts?name=&per_page=&page=`:
//!   `{total_count, artifacts: [{id, node_id, name, size_in_bytes, url,
//!   archive_download_url, expired, created_at, updated_at, expires_at, digest, workflow_run}]}`
//! - `GET /repos/{o}/{r}/actions/artifacts/{id}/zip`: 302 with `Location` to the blob host,
//!   410 when expired, 404 when unknown.
//! - `GET /repos/{o}/{r}/actions/runs/{run}`: the workflow run as documented at
//!   https://docs.github.com/rest/actions/workflow-runs#get-a-workflow-run (`id`, `name`,
//!   `head_branch`, `head_sha`, `path`, `event`, `status`, `conclusion`, `repository`,
//!   `head_repository`, …). Runs added with [`RestFake::add_run`]; a run that only has
//!   artifacts is a push of `.github/workflows/deploy.yml` on `main` of the repository itself.
//! - 401 without the right bearer token.
//!
//! This is a local test server that follows GitHub's documented responses; it is not GitHub.
#![allow(dead_code)]

use std::sync::{Arc, Mutex};

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::artifact_http::{HttpServer, Request, Response};

#[derive(Clone, Debug)]
pub struct Artifact {
    pub id: u64,
    pub run_id: u64,
    pub name: String,
    pub data: Vec<u8>,
    /// `expired: true` in the listing.
    pub expired: bool,
    /// The zip endpoint answers 410 Gone.
    pub gone: bool,
    /// The zip endpoint answers 404.
    pub zip_missing: bool,
    /// Listed digest instead of the real one (`Some(None)` lists `null`).
    pub digest_override: Option<Option<String>>,
}

impl Artifact {
    pub fn new(id: u64, run_id: u64, name: &str, data: Vec<u8>) -> Self {
        Artifact {
            id,
            run_id,
            name: name.to_string(),
            data,
            expired: false,
            gone: false,
            zip_missing: false,
            digest_override: None,
        }
    }
}

/// A workflow run as the runs endpoint describes it.
#[derive(Clone, Debug)]
pub struct Run {
    pub id: u64,
    pub event: String,
    pub path: String,
    pub head_branch: String,
    /// `repository.full_name`; `None`: the server's repository.
    pub repository: Option<String>,
    /// `head_repository.full_name`; `Some(None)`: `null` (a deleted fork); `None`: the
    /// server's repository.
    pub head_repository: Option<Option<String>>,
}

impl Run {
    /// A push of `.github/workflows/deploy.yml` on `main` of the repository itself.
    pub fn push(id: u64) -> Self {
        Run {
            id,
            event: "push".into(),
            path: ".github/workflows/deploy.yml".into(),
            head_branch: "main".into(),
            repository: None,
            head_repository: None,
        }
    }
}

#[derive(Default)]
pub struct RestState {
    pub runs: Vec<Run>,
    pub token: String,
    pub repo: String,
    pub artifacts: Vec<Artifact>,
    /// Answer 500 to the next N list requests.
    pub list_failures: u32,
}

pub struct RestFake {
    pub api: HttpServer,
    pub blob: HttpServer,
    pub state: Arc<Mutex<RestState>>,
}

impl RestFake {
    /// API on 127.0.0.1, blob storage on 127.0.0.2 (another host), each on its own port.
    pub async fn start(repo: &str, token: &str) -> RestFake {
        let state = Arc::new(Mutex::new(RestState {
            token: token.to_string(),
            repo: repo.to_string(),
            ..RestState::default()
        }));
        let st = state.clone();
        let blob =
            HttpServer::start(blob_ip(), Arc::new(move |r: &Request| blob_handle(&st, r))).await;
        let blob_base = blob.url();
        let st = state.clone();
        let api = HttpServer::start(
            "127.0.0.1",
            Arc::new(move |r: &Request| api_handle(&st, &blob_base, r)),
        )
        .await;
        RestFake { api, blob, state }
    }

    pub fn add(&self, a: Artifact) {
        self.state.lock().unwrap().artifacts.push(a);
    }

    pub fn add_run(&self, r: Run) {
        self.state.lock().unwrap().runs.push(r);
    }
}

/// 127.0.0.2 where the loopback takes it (Linux), else 127.0.0.1 (still another port).
fn blob_ip() -> &'static str {
    if std::net::TcpListener::bind(("127.0.0.2", 0)).is_ok() {
        "127.0.0.2"
    } else {
        "127.0.0.1"
    }
}

fn digest_of(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

fn gh_error(status: u16, message: &str) -> Response {
    Response::json(
        status,
        &json!({"message": message, "documentation_url": "https://docs.github.com/rest/actions/artifacts"}),
    )
}

fn api_handle(state: &Arc<Mutex<RestState>>, blob_base: &str, r: &Request) -> Response {
    let mut st = state.lock().unwrap();
    if r.method != "GET" {
        return gh_error(404, "Not Found");
    }
    let auth_ok = matches!(
        r.header("authorization"),
        Some(v) if v == format!("Bearer {}", st.token) || v == format!("token {}", st.token)
    );
    if !auth_ok {
        return gh_error(401, "Bad credentials");
    }
    let prefix = format!("/repos/{}/actions/", st.repo);
    let Some(rest) = r.path.strip_prefix(&prefix) else {
        return gh_error(404, "Not Found");
    };
    let parts: Vec<&str> = rest.split('/').collect();
    match parts.as_slice() {
        ["runs", run] => {
            let Ok(id) = run.parse::<u64>() else {
                return gh_error(404, "Not Found");
            };
            let run = st.runs.iter().find(|r| r.id == id).cloned().or_else(|| {
                st.artifacts
                    .iter()
                    .any(|a| a.run_id == id)
                    .then(|| Run::push(id))
            });
            match run {
                Some(run) => Response::json(200, &run_json(&st.repo, &run)),
                None => gh_error(404, "Not Found"),
            }
        }
        ["runs", run, "artifacts"] => {
            if st.list_failures > 0 {
                st.list_failures -= 1;
                return gh_error(500, "Server Error");
            }
            let Ok(run) = run.parse::<u64>() else {
                return gh_error(404, "Not Found");
            };
            let per_page: usize = r
                .query("per_page")
                .and_then(|v| v.parse().ok())
                .unwrap_or(30)
                .min(100);
            let page: usize = r.query("page").and_then(|v| v.parse().ok()).unwrap_or(1);
            let matching: Vec<&Artifact> = st
                .artifacts
                .iter()
                .filter(|a| a.run_id == run)
                .filter(|a| r.query("name").is_none_or(|n| n == a.name))
                .collect();
            let items: Vec<Value> = matching
                .iter()
                .skip((page.max(1) - 1) * per_page)
                .take(per_page)
                .map(|a| artifact_json(&st.repo, r.header("host").unwrap_or(""), a))
                .collect();
            Response::json(
                200,
                &json!({"total_count": matching.len(), "artifacts": items}),
            )
        }
        ["artifacts", id, "zip"] => {
            let Some(a) = id
                .parse::<u64>()
                .ok()
                .and_then(|id| st.artifacts.iter().find(|a| a.id == id))
            else {
                return gh_error(404, "Not Found");
            };
            if a.zip_missing {
                return gh_error(404, "Not Found");
            }
            if a.gone || a.expired {
                return gh_error(410, "Artifact has expired");
            }
            Response::new(302).header(
                "Location",
                &format!(
                    "{blob_base}/actions-results/blob-{}.zip?sv=2025-01-05&se=2099-01-01&sig=BLOBSIG{}%2Bx%3D",
                    a.id, a.id
                ),
            )
        }
        _ => gh_error(404, "Not Found"),
    }
}

fn repo_json(full_name: &str) -> Value {
    let (owner, name) = full_name.split_once('/').unwrap_or(("", full_name));
    json!({"id": 1, "node_id": "R_kgDOA", "name": name, "full_name": full_name,
           "owner": {"login": owner, "id": 1, "type": "Organization"}, "private": true,
           "html_url": format!("https://github.com/{full_name}"), "fork": false})
}

fn run_json(repo: &str, r: &Run) -> Value {
    let repository = r.repository.clone().unwrap_or_else(|| repo.to_string());
    let head = match &r.head_repository {
        None => json!(repo_json(repo)),
        Some(None) => Value::Null,
        Some(Some(h)) => repo_json(h),
    };
    json!({
        "id": r.id,
        "name": "Deploy",
        "node_id": format!("WFR_kwLO{}", r.id),
        "head_branch": r.head_branch,
        "head_sha": "0123456789abcdef0123456789abcdef01234567",
        "path": r.path,
        "display_title": "Deploy",
        "run_number": 12,
        "event": r.event,
        "status": "completed",
        "conclusion": "success",
        "workflow_id": 161335,
        "run_attempt": 1,
        "url": format!("https://api.github.com/repos/{repository}/actions/runs/{}", r.id),
        "html_url": format!("https://github.com/{repository}/actions/runs/{}", r.id),
        "created_at": "2026-05-01T12:00:00Z",
        "updated_at": "2026-05-01T12:05:00Z",
        "repository": repo_json(&repository),
        "head_repository": head,
    })
}

fn artifact_json(repo: &str, host: &str, a: &Artifact) -> Value {
    let digest = match &a.digest_override {
        Some(d) => json!(d),
        None => json!(digest_of(&a.data)),
    };
    json!({
        "id": a.id,
        "node_id": format!("MDg6QXJ0aWZhY3Q{}", a.id),
        "name": a.name,
        "size_in_bytes": a.data.len(),
        "url": format!("http://{host}/repos/{repo}/actions/artifacts/{}", a.id),
        "archive_download_url": format!("http://{host}/repos/{repo}/actions/artifacts/{}/zip", a.id),
        "expired": a.expired,
        "created_at": "2026-05-01T12:00:00Z",
        "updated_at": "2026-05-01T12:00:00Z",
        "expires_at": "2026-05-08T12:00:00Z",
        "digest": digest,
        "workflow_run": {"id": a.run_id, "repository_id": 1, "head_repository_id": 1,
                         "head_branch": "main", "head_sha": "0123456789abcdef0123456789abcdef01234567"}
    })
}

fn blob_handle(state: &Arc<Mutex<RestState>>, r: &Request) -> Response {
    let st = state.lock().unwrap();
    if r.method != "GET" {
        return Response::new(405);
    }
    let id = r
        .path
        .strip_prefix("/actions-results/blob-")
        .and_then(|s| s.strip_suffix(".zip"))
        .and_then(|s| s.parse::<u64>().ok());
    let Some(a) = id.and_then(|id| st.artifacts.iter().find(|a| a.id == id)) else {
        return Response::new(404);
    };
    if r.query("sig") != Some(&format!("BLOBSIG{}+x=", a.id)) {
        return Response::new(403).body("<Error><Code>AuthenticationFailed</Code></Error>");
    }
    Response::new(200)
        .header("Content-Type", "application/zip")
        .body(a.data.clone())
}
