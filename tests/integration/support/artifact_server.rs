//! A small results service that follows the documented v4 artifact protocol the way act's
//! `pkg/artifacts/artifacts_v4.go` does: Twirp JSON routes answering in lowerCamelCase with
//! int64 as strings (or snake_case with numbers, like github.com may), signed URLs on the same
//! host, `UploadArtifact` appending `comp=block` bodies in arrival order, `comp=blocklist`
//! accepted, `DownloadArtifact` streaming the zip. Unlike act it checks the bearer token, the
//! request shapes and the finalize hash, so that the client is held to the protocol.
//! Failures can be injected: a status for the next N calls of a method.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::artifact_http::{HttpServer, Request, Response};

pub const PREFIX: &str = "/twirp/github.actions.results.api.v1.ArtifactService/";

#[derive(Clone, Debug, Default)]
pub struct Stored {
    pub id: i64,
    pub run: String,
    pub job: String,
    pub data: Vec<u8>,
    pub blocks: Vec<String>,
    pub blocklist: Option<String>,
    pub finalized: bool,
    pub expires_at: Option<String>,
    pub size_claim: Option<Value>,
    pub hash_claim: Option<String>,
    pub version: Option<Value>,
}

#[derive(Default)]
pub struct State {
    /// Required `Authorization: Bearer <token>`; `None` accepts anything (as act does).
    pub token: Option<String>,
    /// Answer like github.com (snake_case, int64 as JSON numbers) instead of like act.
    pub snake_case: bool,
    pub artifacts: BTreeMap<String, Stored>,
    /// (method, status, remaining): answer `status` to the next `remaining` calls of `method`
    /// ("UploadArtifact" for the blob PUTs).
    pub failures: Vec<(String, u16, u32)>,
    /// ListArtifacts reports this digest instead of the real one.
    pub digest_override: Option<String>,
    /// ListArtifacts omits digests (as act does).
    pub no_digest: bool,
    pub sig: String,
    next_id: i64,
}

pub struct TwirpServer {
    pub http: HttpServer,
    pub state: Arc<Mutex<State>>,
}

impl TwirpServer {
    pub async fn start(token: Option<&str>) -> TwirpServer {
        let state = Arc::new(Mutex::new(State {
            token: token.map(String::from),
            sig: format!("SIGsecret{}", std::process::id()),
            next_id: 1000,
            ..State::default()
        }));
        let st = state.clone();
        let http =
            HttpServer::start("127.0.0.1", Arc::new(move |r: &Request| handle(&st, r))).await;
        TwirpServer { http, state }
    }

    pub fn url(&self) -> String {
        // A path, which the client must drop (only the origin counts).
        format!("{}/some/path/", self.http.url())
    }

    pub fn fail(&self, method: &str, status: u16, times: u32) {
        self.state
            .lock()
            .unwrap()
            .failures
            .push((method.to_string(), status, times));
    }

    pub fn calls(&self, method: &str) -> usize {
        self.http
            .requests()
            .iter()
            .filter(|r| r.path == format!("{PREFIX}{method}"))
            .count()
    }

    pub fn stored(&self, name: &str) -> Option<Stored> {
        self.state.lock().unwrap().artifacts.get(name).cloned()
    }
}

fn twirp_error(status: u16, code: &str, msg: &str) -> Response {
    Response::json(status, &json!({"code": code, "msg": msg, "meta": {}}))
}

fn int64(st: &State, v: i64) -> Value {
    if st.snake_case {
        json!(v)
    } else {
        json!(v.to_string())
    }
}

fn key(st: &State, snake: &str, camel: &str) -> String {
    if st.snake_case {
        snake.to_string()
    } else {
        camel.to_string()
    }
}

fn handle(state: &Arc<Mutex<State>>, r: &Request) -> Response {
    let mut st = state.lock().unwrap();
    let Some(method) = r.path.strip_prefix(PREFIX) else {
        return Response::new(404);
    };
    let method = method.to_string();
    for f in st.failures.iter_mut() {
        if f.0 == method && f.2 > 0 {
            f.2 -= 1;
            return twirp_error(f.1, "internal", "injected failure");
        }
    }
    match (r.method.as_str(), method.as_str()) {
        ("PUT", "UploadArtifact") => return upload(&mut st, r),
        ("GET", "DownloadArtifact") => return download(&st, r),
        ("POST", _) => {}
        _ => return Response::new(405),
    }
    if let Some(t) = &st.token {
        if r.header("authorization") != Some(&format!("Bearer {t}")) {
            return twirp_error(401, "unauthenticated", "invalid or missing runtime token");
        }
    }
    if r.header("content-type") != Some("application/json") {
        return twirp_error(400, "malformed", "content-type must be application/json");
    }
    let Ok(body) = serde_json::from_slice::<Value>(&r.body) else {
        return twirp_error(400, "malformed", "body is not JSON");
    };
    let s = |k: &str| body.get(k).and_then(|v| v.as_str()).map(String::from);
    // Request keys must be snake_case (protobuf field names), as @actions/artifact sends them.
    let (Some(run), Some(job)) = (
        s("workflow_run_backend_id"),
        s("workflow_job_run_backend_id"),
    ) else {
        return twirp_error(400, "malformed", "missing backend ids");
    };
    if run.parse::<i64>().is_err() {
        // act: "workflow_run_backend_id must parse as int64"
        return twirp_error(400, "malformed", "invalid workflow run backend id");
    }
    let base = format!("http://{}", r.header("host").unwrap_or("127.0.0.1"));
    match method.as_str() {
        "CreateArtifact" => {
            let Some(name) = s("name") else {
                return twirp_error(400, "malformed", "missing name");
            };
            if st.artifacts.get(&name).is_some_and(|a| a.finalized) {
                return twirp_error(409, "already_exists", "artifact already exists");
            }
            st.next_id += 1;
            let stored = Stored {
                id: st.next_id,
                run: run.clone(),
                job,
                expires_at: s("expires_at"),
                version: body.get("version").cloned(),
                ..Stored::default()
            };
            st.artifacts.insert(name.clone(), stored);
            let url = format!(
                "{base}{PREFIX}UploadArtifact?sig={}&expires=2099-01-01&artifactName={}&taskID={run}",
                st.sig,
                urlenc(&name)
            );
            let k = key(&st, "signed_upload_url", "signedUploadUrl");
            Response::json(200, &json!({"ok": true, k: url}))
        }
        "FinalizeArtifact" => {
            let Some(name) = s("name") else {
                return twirp_error(400, "malformed", "missing name");
            };
            let snake = st.snake_case;
            let Some(a) = st.artifacts.get_mut(&name) else {
                return twirp_error(404, "not_found", "artifact not found");
            };
            a.size_claim = body.get("size").cloned();
            a.hash_claim = s("hash");
            // Like newer Gitea: check the hash against what was stored.
            let real = format!("sha256:{}", hex::encode(Sha256::digest(&a.data)));
            if a.hash_claim.as_deref() != Some(real.as_str()) {
                return twirp_error(400, "invalid_argument", "hash mismatch");
            }
            if a.size_claim != Some(json!(a.data.len().to_string())) {
                return twirp_error(400, "invalid_argument", "size mismatch");
            }
            a.finalized = true;
            let id = a.id;
            let k = if snake { "artifact_id" } else { "artifactId" };
            let v = if snake {
                json!(id)
            } else {
                json!(id.to_string())
            };
            Response::json(200, &json!({"ok": true, k: v}))
        }
        "ListArtifacts" => {
            let filter = s("name_filter");
            let items: Vec<Value> = st
                .artifacts
                .iter()
                .filter(|(n, a)| a.finalized && filter.as_ref().is_none_or(|f| f == *n))
                .map(|(n, a)| {
                    let mut m = serde_json::Map::new();
                    m.insert(
                        key(&st, "workflow_run_backend_id", "workflowRunBackendId"),
                        json!(a.run),
                    );
                    m.insert(
                        key(
                            &st,
                            "workflow_job_run_backend_id",
                            "workflowJobRunBackendId",
                        ),
                        json!(a.job),
                    );
                    m.insert(key(&st, "database_id", "databaseId"), int64(&st, a.id));
                    m.insert("name".into(), json!(n));
                    m.insert("size".into(), int64(&st, a.data.len() as i64));
                    m.insert(
                        key(&st, "created_at", "createdAt"),
                        json!("2026-05-01T12:00:00Z"),
                    );
                    if !st.no_digest {
                        let d = st.digest_override.clone().unwrap_or_else(|| {
                            format!("sha256:{}", hex::encode(Sha256::digest(&a.data)))
                        });
                        m.insert("digest".into(), json!(d));
                    }
                    Value::Object(m)
                })
                .collect();
            if items.is_empty() {
                // protojson leaves empty lists out
                Response::json(200, &json!({}))
            } else {
                Response::json(200, &json!({"artifacts": items}))
            }
        }
        "GetSignedArtifactURL" => {
            let Some(name) = s("name") else {
                return twirp_error(400, "malformed", "missing name");
            };
            if !st.artifacts.get(&name).is_some_and(|a| a.finalized) {
                return twirp_error(404, "not_found", "artifact not found");
            }
            let url = format!(
                "{base}{PREFIX}DownloadArtifact?sig={}&expires=2099-01-01&artifactName={}&taskID={run}",
                st.sig,
                urlenc(&name)
            );
            let k = key(&st, "signed_url", "signedUrl");
            Response::json(200, &json!({k: url}))
        }
        _ => twirp_error(404, "bad_route", "no such method"),
    }
}

fn urlenc(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

fn upload(st: &mut State, r: &Request) -> Response {
    if r.query("sig") != Some(st.sig.as_str()) {
        return Response::new(401).body("Unauthorized: bad signature");
    }
    let Some(name) = r.query("artifactName").map(String::from) else {
        return Response::new(400);
    };
    let Some(a) = st.artifacts.get_mut(&name) else {
        return Response::new(404);
    };
    match r.query("comp") {
        Some("block") | Some("appendBlock") => {
            a.data.extend_from_slice(&r.body);
            a.blocks.push(r.query("blockid").unwrap_or("").to_string());
            Response::new(201)
        }
        Some("blocklist") => {
            a.blocklist = Some(String::from_utf8_lossy(&r.body).into_owned());
            Response::new(201)
        }
        _ => Response::new(200),
    }
}

fn download(st: &State, r: &Request) -> Response {
    if r.query("sig") != Some(st.sig.as_str()) {
        return Response::new(401).body("Unauthorized: bad signature");
    }
    let name = r.query("artifactName").unwrap_or("");
    match st.artifacts.get(name) {
        Some(a) if a.finalized => Response::new(200)
            .header("Content-Type", "application/zip")
            .body(a.data.clone()),
        _ => Response::new(404),
    }
}

/// A JWT like act's: HS256 with an empty key (the signature is not checked by anyone).
pub fn runtime_token(scp: &str) -> String {
    use base64::Engine;
    let e = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    format!(
        "{}.{}.{}",
        e.encode(r#"{"alg":"HS256","typ":"JWT"}"#),
        e.encode(json!({"scp": scp, "exp": 4102444800u64}).to_string()),
        e.encode("not-checked")
    )
}
