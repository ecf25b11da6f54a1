//! Artifacts: the results service (v4 Twirp + blob blocks) and GitHub's REST API, each against
//! a real local HTTP server that follows the documented protocol.

#[path = "support/artifact_http.rs"]
mod artifact_http;
#[path = "support/artifact_rest_server.rs"]
mod artifact_rest_server;
#[path = "support/artifact_server.rs"]
mod artifact_server;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use predeploy_backup::actions::artifact::{
    artifact_url, ArtifactClient, ArtifactError, FORBIDDEN_NAME_CHARS,
};
use predeploy_backup::actions::commands::Workflow;
use predeploy_backup::actions::rest::{RestClient, RestError};
use predeploy_backup::commands::exit::kind as exit_kind;
use predeploy_backup::error::ExitKind;
use sha2::{Digest, Sha256};

use artifact_http::closed_port;
use artifact_rest_server::{Artifact, RestFake};
use artifact_server::{runtime_token, TwirpServer, PREFIX};

const FAST: Duration = Duration::from_millis(2);

fn kind<E: std::error::Error + Send + Sync + 'static>(e: E) -> ExitKind {
    exit_kind(&anyhow::Error::from(e))
}

fn sha(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// Incompressible bytes (xorshift), so that a .gz entry really is stored whole.
fn noise(len: usize, mut seed: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        out.extend_from_slice(&seed.to_le_bytes());
    }
    out.truncate(len);
    out
}

fn write(dir: &Path, name: &str, data: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, data).unwrap();
    p
}

fn make_zip(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let mut z = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    for (name, data) in entries {
        z.start_file(*name, zip::write::SimpleFileOptions::default())
            .unwrap();
        z.write_all(data).unwrap();
    }
    z.finish().unwrap().into_inner()
}

fn token() -> String {
    runtime_token("Actions.ExampleScope Actions.Results:42:43")
}

async fn client(server: &TwirpServer) -> ArtifactClient {
    ArtifactClient::new(&server.url(), &token(), &Workflow::default())
        .unwrap()
        .with_retry_base(FAST)
        .with_retention_cap(None)
}

// ---------------------------------------------------------------------------------------------
// Results service (Twirp)

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_then_download_round_trip() {
    let server = TwirpServer::start(Some(&token())).await;
    let c = client(&server).await;
    assert_eq!(c.backend_ids(), ("42", "43"));
    let tmp = tempfile::tempdir().unwrap();
    let manifest = b"schema: 1\nfiles:\n  - db.sql.gz\n".repeat(200);
    let db = noise(20 * 1024 * 1024 + 12345, 7); // three 8 MiB blocks
    let vol = noise(4096, 9);
    let files = vec![
        (
            "manifest.yml".to_string(),
            write(tmp.path(), "manifest.yml", &manifest),
        ),
        ("db.sql.gz".to_string(), write(tmp.path(), "db.sql.gz", &db)),
        (
            "volumes/v_20241130.tar.gz".to_string(),
            write(tmp.path(), "v.tar.gz", &vol),
        ),
    ];

    let up = c.upload("predeploy-backup", &files, Some(7)).await.unwrap();

    let stored = server.stored("predeploy-backup").unwrap();
    assert!(stored.finalized);
    assert_eq!(up.id, stored.id);
    assert_eq!(up.size, stored.data.len() as u64);
    assert_eq!(up.digest, sha(&stored.data));
    assert_eq!(
        stored.hash_claim.as_deref(),
        Some(format!("sha256:{}", up.digest).as_str())
    );
    assert_eq!(
        stored.size_claim,
        Some(serde_json::json!(up.size.to_string()))
    );
    assert_eq!(stored.version, Some(serde_json::json!(4)));
    // Blocks: 8 MiB each, sequential, equal-length ids, committed in order.
    assert_eq!(stored.blocks.len(), 3);
    let list = stored.blocklist.clone().unwrap();
    let mut at = 0;
    for id in &stored.blocks {
        assert_eq!(id.len(), stored.blocks[0].len());
        let pos = list[at..].find(&format!("<Latest>{id}</Latest>")).unwrap();
        at += pos + 1;
    }
    // Expiry: now + 7 days, RFC 3339 with Z.
    let exp = stored.expires_at.clone().unwrap();
    assert!(exp.ends_with('Z'), "{exp}");
    let exp = chrono::DateTime::parse_from_rfc3339(&exp).unwrap();
    let days = (exp.with_timezone(&chrono::Utc) - chrono::Utc::now()).num_hours();
    assert!((7 * 24 - 1..=7 * 24).contains(&days), "{days}");

    // The token went to the Twirp routes only; the blob PUTs carried none.
    for r in server.http.requests() {
        if r.path.ends_with("UploadArtifact") || r.path.ends_with("DownloadArtifact") {
            assert_eq!(r.header("authorization"), None, "{}", r.head_text());
        } else {
            assert_eq!(r.method, "POST");
            assert_eq!(
                r.header("authorization"),
                Some(format!("Bearer {}", token()).as_str())
            );
        }
    }

    // The zip: already compressed entries stored, the rest deflated.
    let mut z = zip::ZipArchive::new(std::io::Cursor::new(stored.data.clone())).unwrap();
    assert_eq!(
        z.by_name("db.sql.gz").unwrap().compression(),
        zip::CompressionMethod::Stored
    );
    assert_eq!(
        z.by_name("volumes/v_20241130.tar.gz")
            .unwrap()
            .compression(),
        zip::CompressionMethod::Stored
    );
    let mut m = z.by_name("manifest.yml").unwrap();
    assert_eq!(m.compression(), zip::CompressionMethod::Deflated);
    let mut text = Vec::new();
    m.read_to_end(&mut text).unwrap();
    assert_eq!(text, manifest);
    drop(m);

    // And back.
    let dest = tmp.path().join("restored");
    let down = c.download("predeploy-backup", &dest).await.unwrap();
    assert_eq!(down.digest, up.digest);
    assert_eq!(down.dir, dest);
    assert_eq!(
        down.files,
        vec![
            dest.join("manifest.yml"),
            dest.join("db.sql.gz"),
            dest.join("volumes/v_20241130.tar.gz")
        ]
    );
    assert_eq!(std::fs::read(dest.join("manifest.yml")).unwrap(), manifest);
    assert_eq!(std::fs::read(dest.join("db.sql.gz")).unwrap(), db);
    assert_eq!(
        std::fs::read(dest.join("volumes/v_20241130.tar.gz")).unwrap(),
        vol
    );

    assert_eq!(
        artifact_url("https://github.com/", "org/app", "123", up.id),
        format!(
            "https://github.com/org/app/actions/runs/123/artifacts/{}",
            up.id
        )
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snake_case_answers_with_numbers_are_accepted() {
    let server = TwirpServer::start(Some(&token())).await;
    server.state.lock().unwrap().snake_case = true;
    let c = client(&server).await;
    let tmp = tempfile::tempdir().unwrap();
    let f = write(tmp.path(), "manifest.yml", b"schema: 1\n");
    let up = c
        .upload("pb", &[("manifest.yml".into(), f)], None)
        .await
        .unwrap();
    assert_eq!(up.id, server.stored("pb").unwrap().id);
    assert_eq!(server.stored("pb").unwrap().expires_at, None);
    let down = c.download("pb", &tmp.path().join("d")).await.unwrap();
    assert_eq!(down.digest, up.digest);
    assert_eq!(std::fs::read(&down.files[0]).unwrap(), b"schema: 1\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_is_capped_by_the_repository() {
    let server = TwirpServer::start(None).await;
    let c = client(&server).await.with_retention_cap(Some(3));
    let tmp = tempfile::tempdir().unwrap();
    let f = write(tmp.path(), "m.yml", b"x: 1\n");
    c.upload("capped", &[("m.yml".into(), f)], Some(30))
        .await
        .unwrap();
    let exp = server.stored("capped").unwrap().expires_at.unwrap();
    let exp = chrono::DateTime::parse_from_rfc3339(&exp).unwrap();
    let hours = (exp.with_timezone(&chrono::Utc) - chrono::Utc::now()).num_hours();
    assert!((3 * 24 - 1..=3 * 24).contains(&hours), "{hours}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forbidden_name_fails_before_any_request() {
    let server = TwirpServer::start(None).await;
    let c = client(&server).await;
    let tmp = tempfile::tempdir().unwrap();
    let f = write(tmp.path(), "m.yml", b"x: 1\n");
    let mut names: Vec<String> = FORBIDDEN_NAME_CHARS
        .iter()
        .map(|ch| format!("backup{ch}x"))
        .collect();
    names.push(String::new());
    for name in &names {
        let e = c
            .upload(name, &[("m.yml".into(), f.clone())], None)
            .await
            .unwrap_err();
        assert!(matches!(e, ArtifactError::Invalid(_)), "{name:?}: {e}");
        assert!(e.to_string().contains("artifact name"), "{e}");
        assert_eq!(kind(e), ExitKind::Usage);
        let e = c.download(name, &tmp.path().join("d")).await.unwrap_err();
        assert!(matches!(e, ArtifactError::Invalid(_)), "{name:?}: {e}");
    }
    let e = c
        .upload("bad:name", &[("m.yml".into(), f.clone())], None)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("a colon :"), "{e}");
    assert!(server.http.requests().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_500_then_success_is_retried() {
    let server = TwirpServer::start(Some(&token())).await;
    server.fail("CreateArtifact", 500, 1);
    server.fail("UploadArtifact", 503, 1);
    server.fail("FinalizeArtifact", 429, 1);
    server.fail("ListArtifacts", 502, 1);
    let c = client(&server).await;
    let tmp = tempfile::tempdir().unwrap();
    let f = write(tmp.path(), "m.yml", b"x: 1\n");
    let up = c
        .upload("retried", &[("m.yml".into(), f)], None)
        .await
        .unwrap();
    assert_eq!(server.calls("CreateArtifact"), 2);
    assert_eq!(server.calls("FinalizeArtifact"), 2);
    let stored = server.stored("retried").unwrap();
    assert_eq!(stored.blocks.len(), 1, "a failed block must not count");
    assert_eq!(up.digest, sha(&stored.data));
    let down = c.download("retried", &tmp.path().join("d")).await.unwrap();
    assert_eq!(down.digest, up.digest);
    assert_eq!(server.calls("ListArtifacts"), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_that_keeps_failing_gives_up_after_five_attempts() {
    let server = TwirpServer::start(None).await;
    server.fail("CreateArtifact", 500, 100);
    let c = client(&server).await;
    let tmp = tempfile::tempdir().unwrap();
    let f = write(tmp.path(), "m.yml", b"x: 1\n");
    let e = c
        .upload("x", &[("m.yml".into(), f)], None)
        .await
        .unwrap_err();
    assert_eq!(server.calls("CreateArtifact"), 5);
    let msg = e.to_string();
    assert!(msg.contains("failed 5 times"), "{msg}");
    assert!(msg.contains("500"), "{msg}");
    assert_eq!(kind(e), ExitKind::Environment);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_4xx_fail_at_once_with_the_twirp_message() {
    let server = TwirpServer::start(None).await;
    let c = client(&server).await;
    let tmp = tempfile::tempdir().unwrap();
    let f = write(tmp.path(), "m.yml", b"x: 1\n");
    c.upload("dup", &[("m.yml".into(), f.clone())], None)
        .await
        .unwrap();
    let e = c
        .upload("dup", &[("m.yml".into(), f)], None)
        .await
        .unwrap_err();
    assert_eq!(server.calls("CreateArtifact"), 2);
    assert!(e.to_string().contains("artifact already exists"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_that_is_down_gives_a_clear_error() {
    let addr = closed_port("127.0.0.1").await;
    let c = ArtifactClient::new(&format!("http://{addr}/"), &token(), &Workflow::default())
        .unwrap()
        .with_retry_base(FAST);
    let tmp = tempfile::tempdir().unwrap();
    let f = write(tmp.path(), "m.yml", b"x: 1\n");
    let e = c
        .upload("x", &[("m.yml".into(), f)], None)
        .await
        .unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, ArtifactError::Service(_)), "{msg}");
    assert!(msg.contains("could not reach the results service"), "{msg}");
    assert!(msg.contains(&format!("http://{addr}")), "{msg}");
    assert!(msg.contains("ACTIONS_RESULTS_URL"), "{msg}");
    assert_eq!(kind(e), ExitKind::Environment);
    let e = c.download("x", &tmp.path().join("d")).await.unwrap_err();
    assert!(e.to_string().contains("could not reach"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_runtime_token_is_refused() {
    use base64::Engine;
    let e64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let no_scp = format!("{}.{}.x", e64.encode("{}"), e64.encode(r#"{"sub":"x"}"#));
    let no_results = runtime_token("Actions.GenericRead:1");
    let short = runtime_token("Actions.Results:1");
    for bad in [
        "",
        "not-a-jwt",
        "a.b",
        "a.!!!.c",
        &no_scp,
        &no_results,
        &short,
    ] {
        let e = ArtifactClient::new("http://127.0.0.1:1/", bad, &Workflow::default()).unwrap_err();
        let msg = e.to_string();
        assert!(matches!(e, ArtifactError::Invalid(_)), "{bad}: {msg}");
        assert!(msg.contains("runtime token"), "{msg}");
        assert!(msg.contains("invalid and/or missing claims"), "{msg}");
        assert!(msg.contains("--artifact-server-path"), "{msg}");
        assert_eq!(kind(e), ExitKind::Usage);
    }

    // Well-formed, but the service refuses it: no retry, a message about the token.
    let server = TwirpServer::start(Some("the-real-token")).await;
    let c = client(&server).await;
    let tmp = tempfile::tempdir().unwrap();
    let f = write(tmp.path(), "m.yml", b"x: 1\n");
    let e = c
        .upload("x", &[("m.yml".into(), f)], None)
        .await
        .unwrap_err();
    assert_eq!(server.calls("CreateArtifact"), 1);
    let msg = e.to_string();
    assert!(msg.contains("refused the runtime token"), "{msg}");
    assert!(msg.contains("401"), "{msg}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_download_whose_digest_differs_is_refused() {
    let server = TwirpServer::start(None).await;
    let c = client(&server).await;
    let tmp = tempfile::tempdir().unwrap();
    let f = write(tmp.path(), "m.yml", b"x: 1\n");
    c.upload("pb", &[("m.yml".into(), f)], None).await.unwrap();
    server.state.lock().unwrap().digest_override = Some(format!("sha256:{}", "0".repeat(64)));
    let dest = tmp.path().join("d");
    let e = c.download("pb", &dest).await.unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, ArtifactError::Digest(_)), "{msg}");
    assert!(msg.contains("nothing was unpacked"), "{msg}");
    assert_eq!(kind(e), ExitKind::Unverified);
    assert!(!dest.join("m.yml").exists());

    // No digest recorded (act): downloaded, not checked against one.
    {
        let mut st = server.state.lock().unwrap();
        st.digest_override = None;
        st.no_digest = true;
    }
    let down = c.download("pb", &dest).await.unwrap();
    assert_eq!(std::fs::read(dest.join("m.yml")).unwrap(), b"x: 1\n");
    assert_eq!(down.files, vec![dest.join("m.yml")]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_artifact_is_named() {
    let server = TwirpServer::start(None).await;
    let c = client(&server).await;
    let tmp = tempfile::tempdir().unwrap();
    let e = c
        .download("predeploy-backup", &tmp.path().join("d"))
        .await
        .unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, ArtifactError::NotFound(_)), "{msg}");
    assert!(
        msg.contains("no artifact named `predeploy-backup`"),
        "{msg}"
    );
    assert!(msg.contains("run"), "{msg}");
    assert_eq!(server.calls("GetSignedArtifactURL"), 0);
    assert!(server
        .http
        .requests()
        .iter()
        .all(|r| r.path.starts_with(PREFIX)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_file_is_refused_before_any_request() {
    let server = TwirpServer::start(None).await;
    let c = client(&server).await;
    let tmp = tempfile::tempdir().unwrap();
    let e = c
        .upload("x", &[("m.yml".into(), tmp.path().join("nope"))], None)
        .await
        .unwrap_err();
    assert!(matches!(e, ArtifactError::Invalid(_)), "{e}");
    let f = write(tmp.path(), "m.yml", b"x\n");
    let e = c
        .upload("x", &[("../m.yml".into(), f)], None)
        .await
        .unwrap_err();
    assert!(e.to_string().contains(".."), "{e}");
    assert!(server.http.requests().is_empty());
}

// ---------------------------------------------------------------------------------------------
// REST API (another run)

const REPO: &str = "org/app";
const GH_TOKEN: &str = "ghs_TestTokenValue0123456789";

async fn rest(fake: &RestFake, token: &str) -> RestClient {
    RestClient::new(&fake.api.url(), token, &Workflow::default())
        .unwrap()
        .with_retry_base(FAST)
}

fn manifest_zip(text: &str) -> Vec<u8> {
    make_zip(&[("manifest.yml", text.as_bytes())])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_downloads_the_newest_and_the_token_stays_on_the_api_host() {
    let fake = RestFake::start(REPO, GH_TOKEN).await;
    fake.add(Artifact::new(
        5,
        123,
        "predeploy-backup",
        manifest_zip("old\n"),
    ));
    fake.add(Artifact::new(
        9,
        123,
        "predeploy-backup",
        manifest_zip("new\n"),
    ));
    fake.add(Artifact::new(11, 123, "other", manifest_zip("other\n")));
    fake.add(Artifact::new(
        12,
        124,
        "predeploy-backup",
        manifest_zip("run124\n"),
    ));
    let c = rest(&fake, GH_TOKEN).await;
    let tmp = tempfile::tempdir().unwrap();
    let dest = tmp.path().join("m");
    let down = c
        .download_run_artifact(REPO, 123, "predeploy-backup", &dest)
        .await
        .unwrap();
    assert_eq!(
        std::fs::read_to_string(dest.join("manifest.yml")).unwrap(),
        "new\n"
    );
    assert_eq!(down.files, vec![dest.join("manifest.yml")]);
    assert_eq!(down.digest, sha(&manifest_zip("new\n")));

    let api = fake.api.requests();
    assert_eq!(api.len(), 2, "{api:?}");
    assert_eq!(api[0].path, "/repos/org/app/actions/runs/123/artifacts");
    assert_eq!(api[0].query("name"), Some("predeploy-backup"));
    assert_eq!(api[0].query("per_page"), Some("100"));
    assert_eq!(api[1].path, "/repos/org/app/actions/artifacts/9/zip");
    for r in &api {
        assert_eq!(
            r.header("authorization"),
            Some(format!("Bearer {GH_TOKEN}").as_str())
        );
    }
    let blob = fake.blob.requests();
    assert_eq!(blob.len(), 1);
    assert_ne!(fake.blob.addr, fake.api.addr);
    for r in &blob {
        assert_eq!(r.header("authorization"), None, "{}", r.head_text());
        assert!(!r.head_text().contains(GH_TOKEN), "{}", r.head_text());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_a_run_without_the_artifact_says_so() {
    let fake = RestFake::start(REPO, GH_TOKEN).await;
    fake.add(Artifact::new(11, 123, "other", manifest_zip("x\n")));
    let c = rest(&fake, GH_TOKEN).await;
    let tmp = tempfile::tempdir().unwrap();
    let e = c
        .download_run_artifact(REPO, 123, "predeploy-backup", tmp.path())
        .await
        .unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, RestError::NotFound(_)), "{msg}");
    assert!(
        msg.contains("run 123 of org/app has no artifact named predeploy-backup"),
        "{msg}"
    );
    assert!(msg.contains("retention-days"), "{msg}");
    assert_eq!(kind(e), ExitKind::Usage);
    assert!(fake.blob.requests().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_an_expired_artifact_says_so() {
    let fake = RestFake::start(REPO, GH_TOKEN).await;
    let mut a = Artifact::new(9, 123, "predeploy-backup", manifest_zip("x\n"));
    a.expired = true;
    fake.add(a);
    let mut b = Artifact::new(20, 200, "predeploy-backup", manifest_zip("x\n"));
    b.gone = true; // listed as live, but the zip endpoint answers 410
    fake.add(b);
    let c = rest(&fake, GH_TOKEN).await;
    let tmp = tempfile::tempdir().unwrap();

    let e = c
        .download_run_artifact(REPO, 123, "predeploy-backup", tmp.path())
        .await
        .unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, RestError::Expired(_)), "{msg}");
    assert!(msg.contains("has expired"), "{msg}");
    assert!(msg.contains("run 123 of org/app"), "{msg}");

    let e = c
        .download_run_artifact(REPO, 200, "predeploy-backup", tmp.path())
        .await
        .unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, RestError::Expired(_)), "{msg}");
    assert!(msg.contains("run 200 of org/app"), "{msg}");
    assert_eq!(kind(e), ExitKind::Usage);
    assert!(fake.blob.requests().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_a_404_on_the_zip_is_explained() {
    let fake = RestFake::start(REPO, GH_TOKEN).await;
    let mut a = Artifact::new(9, 123, "predeploy-backup", manifest_zip("x\n"));
    a.zip_missing = true;
    fake.add(a);
    let c = rest(&fake, GH_TOKEN).await;
    let tmp = tempfile::tempdir().unwrap();
    let e = c
        .download_run_artifact(REPO, 123, "predeploy-backup", tmp.path())
        .await
        .unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, RestError::NotFound(_)), "{msg}");
    assert!(msg.contains("actions: read"), "{msg}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_a_digest_mismatch_is_refused() {
    let fake = RestFake::start(REPO, GH_TOKEN).await;
    let mut a = Artifact::new(9, 123, "predeploy-backup", manifest_zip("x\n"));
    a.digest_override = Some(Some(format!("sha256:{}", "ab".repeat(32))));
    fake.add(a);
    let c = rest(&fake, GH_TOKEN).await;
    let tmp = tempfile::tempdir().unwrap();
    let dest = tmp.path().join("m");
    let e = c
        .download_run_artifact(REPO, 123, "predeploy-backup", &dest)
        .await
        .unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, RestError::Digest(_)), "{msg}");
    assert!(msg.contains(&"ab".repeat(32)), "{msg}");
    assert!(msg.contains("run 123 of org/app"), "{msg}");
    assert_eq!(kind(e), ExitKind::Unverified);
    assert!(!dest.exists(), "nothing may be unpacked");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_a_null_digest_still_downloads() {
    let fake = RestFake::start(REPO, GH_TOKEN).await;
    let mut a = Artifact::new(9, 123, "predeploy-backup", manifest_zip("old client\n"));
    a.digest_override = Some(None);
    fake.add(a);
    let c = rest(&fake, GH_TOKEN).await;
    let tmp = tempfile::tempdir().unwrap();
    let down = c
        .download_run_artifact(REPO, 123, "predeploy-backup", tmp.path())
        .await
        .unwrap();
    assert_eq!(
        std::fs::read_to_string(&down.files[0]).unwrap(),
        "old client\n"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_a_bad_token_is_explained() {
    let fake = RestFake::start(REPO, GH_TOKEN).await;
    fake.add(Artifact::new(
        9,
        123,
        "predeploy-backup",
        manifest_zip("x\n"),
    ));
    let c = rest(&fake, "ghs_wrong_token_value").await;
    let tmp = tempfile::tempdir().unwrap();
    let e = c
        .download_run_artifact(REPO, 123, "predeploy-backup", tmp.path())
        .await
        .unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, RestError::Auth(_)), "{msg}");
    assert!(msg.contains("401"), "{msg}");
    assert!(msg.contains("actions: read"), "{msg}");
    assert!(!msg.contains("ghs_wrong_token_value"), "{msg}");
    assert_eq!(kind(e), ExitKind::Usage);

    let e = RestClient::new(&fake.api.url(), "  ", &Workflow::default()).unwrap_err();
    assert!(matches!(e, RestError::Invalid(_)), "{e}");
    let e = c
        .download_run_artifact("not-a-repo", 1, "predeploy-backup", tmp.path())
        .await
        .unwrap_err();
    assert!(matches!(e, RestError::Invalid(_)), "{e}");
    let e = c
        .download_run_artifact(REPO, 1, "bad/name", tmp.path())
        .await
        .unwrap_err();
    assert!(matches!(e, RestError::Invalid(_)), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_a_500_then_success_is_retried() {
    let fake = RestFake::start(REPO, GH_TOKEN).await;
    fake.add(Artifact::new(
        9,
        123,
        "predeploy-backup",
        manifest_zip("x\n"),
    ));
    fake.state.lock().unwrap().list_failures = 2;
    let c = rest(&fake, GH_TOKEN).await;
    let tmp = tempfile::tempdir().unwrap();
    c.download_run_artifact(REPO, 123, "predeploy-backup", tmp.path())
        .await
        .unwrap();
    assert_eq!(fake.api.requests().len(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_an_entry_that_leaves_the_target_is_refused() {
    let fake = RestFake::start(REPO, GH_TOKEN).await;
    let tmp = tempfile::tempdir().unwrap();
    let dest = tmp.path().join("a/b");
    for (id, evil) in [(9u64, "../../evil.txt"), (10, "/tmp/evil-abs.txt")] {
        let zip = make_zip(&[("manifest.yml", b"ok\n"), (evil, b"pwned\n")]);
        fake.add(Artifact::new(id, id, "predeploy-backup", zip));
        let c = rest(&fake, GH_TOKEN).await;
        let e = c
            .download_run_artifact(REPO, id, "predeploy-backup", &dest)
            .await
            .unwrap_err();
        let msg = e.to_string();
        assert!(matches!(e, RestError::Unsafe(_)), "{msg}");
        assert_eq!(kind(e), ExitKind::Unverified);
        assert!(
            !dest.join("manifest.yml").exists(),
            "nothing may be unpacked"
        );
    }
    assert!(!tmp.path().join("evil.txt").exists());
}

#[tokio::test]
async fn the_futures_are_send() {
    fn send<T: Send>(_: &T) {}
    let c = ArtifactClient::new("http://127.0.0.1:1/", &token(), &Workflow::default()).unwrap();
    let r = RestClient::new("http://127.0.0.1:1", GH_TOKEN, &Workflow::default()).unwrap();
    let files: Vec<(String, PathBuf)> = Vec::new();
    let dest = PathBuf::from("/nonexistent");
    let up = c.upload("x", &files, None);
    let down = c.download("x", &dest);
    let rest = r.download_run_artifact(REPO, 1, "x", &dest);
    send(&up);
    send(&down);
    send(&rest);
}

// ---------------------------------------------------------------------------------------------
// Provenance of the run a rollback takes its backup from (issue 11)

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_provenance_refuses_forks_pull_requests_other_repos_and_untrusted_workflows() {
    use artifact_rest_server::Run;
    use predeploy_backup::actions::rest::{check_provenance, TrustPolicy};
    let fake = RestFake::start(REPO, GH_TOKEN).await;
    fake.add_run(Run::push(10));
    fake.add_run(Run {
        head_repository: Some(Some("attacker/app".into())),
        ..Run::push(11)
    });
    fake.add_run(Run {
        event: "pull_request".into(),
        ..Run::push(12)
    });
    fake.add_run(Run {
        repository: Some("other/app".into()),
        head_repository: Some(Some("other/app".into())),
        ..Run::push(13)
    });
    fake.add_run(Run {
        path: ".github/workflows/ci.yml".into(),
        ..Run::push(14)
    });
    fake.add_run(Run {
        head_branch: "feature/x".into(),
        ..Run::push(15)
    });
    let client = rest(&fake, GH_TOKEN).await;
    let policy = TrustPolicy {
        repository: REPO.into(),
        workflows: vec![".github/workflows/deploy.yml".into()],
        branches: vec!["main".into(), "release/*".into()],
    };
    let good = client.workflow_run(REPO, 10).await.unwrap();
    assert_eq!(good.path, ".github/workflows/deploy.yml");
    check_provenance(&good, &policy).unwrap();
    for (run, needle) in [
        (11, "attacker/app (a fork)"),
        (12, "`pull_request` event"),
        (13, "belongs to repository other/app"),
        (14, "not in trusted-workflows"),
        (15, "matches none of trusted-branches"),
    ] {
        let r = client.workflow_run(REPO, run).await.unwrap();
        let e = check_provenance(&r, &policy).unwrap_err();
        assert!(matches!(e, RestError::Untrusted(_)), "{e}");
        assert!(e.to_string().contains(needle), "run {run}: {e}");
        assert_eq!(kind(e), ExitKind::Usage);
    }
    let e = client.workflow_run(REPO, 99).await.unwrap_err();
    assert!(matches!(e, RestError::NotFound(_)), "{e}");
}

/// The whole step: a rollback naming a pull request's run is refused before any artifact is
/// listed or downloaded, exit 2, with a message that says why and what to set.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollback_by_run_id_of_a_pull_request_is_refused_before_downloading() {
    use crate::support::Action;
    use artifact_rest_server::Run;
    let fake = RestFake::start(REPO, GH_TOKEN).await;
    fake.add(Artifact::new(
        31,
        77,
        "predeploy-backup",
        manifest_zip("schema: 1\n"),
    ));
    fake.add_run(Run {
        event: "pull_request_target".into(),
        ..Run::push(77)
    });
    let api = fake.api.url();
    let o = tokio::task::spawn_blocking(move || {
        Action::new("rollback")
            .input("run-id", "77")
            .input("github-token", GH_TOKEN)
            .env("GITHUB_API_URL", api)
            .env("GITHUB_REPOSITORY", REPO)
            .env("GITHUB_RUN_ID", "78")
            .run()
    })
    .await
    .unwrap();
    o.assert_code(2);
    let text = o.all_text();
    assert!(text.contains("refusing the backup of run 77"), "{o}");
    assert!(text.contains("pull_request_target"), "{o}");
    assert!(text.contains("trusted-workflows"), "{o}");
    let paths: Vec<String> = fake.api.requests().iter().map(|r| r.path.clone()).collect();
    assert_eq!(
        paths,
        vec![format!("/repos/{REPO}/actions/runs/77")],
        "{paths:?}"
    );
    assert!(fake.blob.requests().is_empty());
}

/// A backup job on a hosted runner that uploads its artifact to the results service at
/// `results_url` (what every whole-chain test's backup job sets).
fn hosted_backup(a: crate::support::Action, results_url: &str) -> crate::support::Action {
    a.input("upload-artifact", "true")
        .env("RUNNER_ENVIRONMENT", "github-hosted")
        .env("ACTIONS_RESULTS_URL", results_url)
        .env("ACTIONS_RUNTIME_TOKEN", token())
}

/// The finalized artifact `backup` uploaded to `results`.
fn uploaded(results: &TwirpServer, backup: &crate::support::Outcome) -> Vec<u8> {
    backup.assert_code(0);
    let stored = results
        .stored("predeploy-backup")
        .unwrap_or_else(|| panic!("the artifact was uploaded\n{backup}"));
    assert!(stored.finalized, "{backup}");
    stored.data
}

/// GitHub's REST API as a later job sees it: the artifact `zip` (id `id`) of push run `run`.
async fn rest_with_run(id: u64, run: u64, zip: Vec<u8>) -> RestFake {
    let fake = RestFake::start(REPO, GH_TOKEN).await;
    fake.add(Artifact::new(id, run, "predeploy-backup", zip));
    fake.add_run(artifact_rest_server::Run::push(run));
    fake
}

/// A rollback job on a hosted runner (run `run + 1`) that fetches run `run`'s artifact
/// through the REST API at `api`.
fn rollback_by_run_id(a: crate::support::Action, api: &str, run: u64) -> crate::support::Action {
    a.input("run-id", run.to_string())
        .input("github-token", GH_TOKEN)
        .env("RUNNER_ENVIRONMENT", "github-hosted")
        .env("GITHUB_API_URL", api)
        .env("GITHUB_REPOSITORY", REPO)
        .env("GITHUB_RUN_ID", (run + 1).to_string())
}

/// The whole chain on a hosted runner: a backup job uploads its artifact with
/// `include-backups-in-artifact: false` (to the local results service), the job's disk is
/// gone, and a later job rolls back by that run's id (through the REST API). The artifact
/// holds only the manifest: the rollback says exactly that and how to fix it, exit 2, and
/// nothing is changed — not the `exists` check's wording, which reads like tampering.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollback_by_run_id_of_a_manifest_only_artifact_says_how_to_fix_it() {
    use crate::support::Workspace;
    let results = TwirpServer::start(Some(&token())).await;
    let results_url = results.url();
    let backup = tokio::task::spawn_blocking(move || {
        let ws = Workspace::new();
        std::fs::create_dir_all(ws.join("srv")).unwrap();
        std::fs::write(ws.join("srv/data.bin"), noise(64 * 1024, 7)).unwrap();
        hosted_backup(ws.action("backup"), &results_url)
            .input("paths", "srv")
            .input("include-backups-in-artifact", "false")
            .run()
        // The workspace (the hosted runner's disk) is dropped here.
    })
    .await
    .unwrap();
    let fake = rest_with_run(41, 88, uploaded(&results, &backup)).await;
    let api = fake.api.url();
    let o = tokio::task::spawn_blocking(move || {
        rollback_by_run_id(Workspace::new().action("rollback"), &api, 88).run()
    })
    .await
    .unwrap();
    o.assert_code(2);
    let text = o.all_text();
    assert!(text.contains("holds only the manifest"), "{o}");
    assert!(text.contains("include-backups-in-artifact: true"), "{o}");
    assert!(text.contains("durable destination"), "{o}");
    assert!(text.contains("Nothing was changed"), "{o}");
    assert!(
        !text.contains("exists"),
        "not the exists-check wording\n{o}"
    );
    assert_ne!(o.out("restored"), "true", "{o}");
    assert_eq!(fake.blob.requests().len(), 1, "the zip was fetched once");
}

/// The rollback job of a hosted runner needs only the run id: the backup went to a bucket
/// (`destination`), its manifest artifact records where, and a later job with the AWS
/// settings in its environment but no `destination` input fetches the files from there,
/// checks them against the artifact's manifest and restores.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollback_by_run_id_fetches_the_files_from_the_destination_the_manifest_records() {
    use crate::support::docker::{TreeSpec, Volume};
    use crate::support::seaweed::{Seaweed, ACCESS_KEY, SECRET_KEY};
    use crate::support::Workspace;
    let s3 = Seaweed::start("deploy-backups");
    let endpoint = s3.endpoint();
    let vol = Volume::with_tree("art-dest", &TreeSpec::awkward());
    let vol_name = vol.name.clone();
    let before = vol.fingerprint();
    let results = TwirpServer::start(Some(&token())).await;
    let results_url = results.url();
    let aws = move |a: crate::support::action::Action| {
        a.env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
            .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
            .env("AWS_ENDPOINT_URL", endpoint.clone())
    };
    let aws2 = aws.clone();
    let name = vol_name.clone();
    let backup = tokio::task::spawn_blocking(move || {
        let ws = Workspace::new();
        hosted_backup(aws(ws.action("backup")), &results_url)
            .input("destination", "s3://deploy-backups/prod")
            .input("volumes", name)
            .run()
        // The workspace (the hosted runner's disk) is dropped here.
    })
    .await
    .unwrap();
    let zip = uploaded(&results, &backup);
    let out = vol.busybox("rm -rf /data/deep && echo new > /data/new.txt", &[], false);
    assert!(out.status.success());

    let fake = rest_with_run(51, 98, zip).await;
    let api = fake.api.url();
    let o = tokio::task::spawn_blocking(move || {
        rollback_by_run_id(aws2(Workspace::new().action("rollback")), &api, 98)
            .input("volumes", vol_name)
            .input("restore-special-bits", "true")
            .run()
    })
    .await
    .unwrap();
    o.assert_code(0);
    assert_eq!(o.out("restored"), "true", "{o}");
    o.assert_mentions("the destination its manifest records: s3://deploy-backups/prod");
    vol.fingerprint()
        .assert_same(&before, "after the rollback from the recorded destination");
}

/// Encrypted backups (issue 14) through the artifact store: a backup job on a hosted runner
/// uploads `include-backups-in-artifact: true` with `encrypt-recipients`; the artifact holds
/// the encrypted files (the reference `age -d` opens them) and the clear-text manifest,
/// nothing in clear; a later job fetches it by run id and rolls back with the identity.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encrypted_backup_in_the_artifact_restores_with_the_identity() {
    use crate::support::age::{assert_secret_nowhere, keygen, sh};
    use crate::support::docker::{TreeSpec, Volume};
    use crate::support::Workspace;
    let key = keygen("ops");
    let public = key.public.clone();
    let results = TwirpServer::start(Some(&token())).await;
    let results_url = results.url();
    let (vol, before, backup) = tokio::task::spawn_blocking(move || {
        let vol = Volume::with_tree("art-encrypted", &TreeSpec::awkward());
        let before = vol.fingerprint();
        let ws = Workspace::new();
        let o = hosted_backup(ws.action("backup"), &results_url)
            .input("volumes", &vol.name)
            .input("encrypt-recipients", public)
            .input("include-backups-in-artifact", "true")
            .run();
        // The workspace (the hosted runner's disk) is dropped here.
        (vol, before, o)
    })
    .await
    .unwrap();
    let data = uploaded(&results, &backup);
    assert_eq!(backup.out("verified"), "true", "{backup}");

    // What the artifact holds: the manifest in clear, the backup file encrypted.
    let mut zip = zip::ZipArchive::new(std::io::Cursor::new(data.clone())).unwrap();
    let names: Vec<String> = zip
        .file_names()
        .map(|n| n.expect("a file name").to_string())
        .collect();
    let keys_dir = tempfile::tempdir().unwrap();
    let mut sealed = vec![];
    for name in &names {
        let mut data = vec![];
        zip.by_name(name).unwrap().read_to_end(&mut data).unwrap();
        if name.ends_with("manifest.yml") {
            let text = String::from_utf8(data).unwrap();
            assert!(text.contains("encrypted: age"), "{text}");
            continue;
        }
        assert!(name.ends_with(".tar.gz.age"), "{names:?}");
        assert!(data.starts_with(b"age-encryption.org/v1\n"), "{name}");
        let p = keys_dir.path().join(format!("{}.age", sealed.len()));
        std::fs::write(&p, &data).unwrap();
        sealed.push(p);
    }
    assert_eq!(sealed.len(), 1, "{names:?}");
    let listed = sh(&format!(
        "age -d -i '{}' '{}' | tar tz",
        key.file.display(),
        sealed[0].display()
    ));
    assert!(
        listed
            .lines()
            .any(|l| l.trim_start_matches("./") == "README.txt"),
        "{listed}"
    );

    // A bad deploy; a later job fetches the artifact of run 88 and rolls back.
    let fake = rest_with_run(41, 88, data).await;
    let api = fake.api.url();
    let secret = key.secret.clone();
    let (vol, before, ws, o) = tokio::task::spawn_blocking(move || {
        let out = vol.busybox(
            "rm -f /data/README.txt && echo x > /data/new.txt",
            &[],
            false,
        );
        assert!(out.status.success(), "{out:?}");
        let ws = Workspace::new();
        let o = rollback_by_run_id(ws.action("rollback"), &api, 88)
            .input("volumes", &vol.name)
            .input("restore-special-bits", "true")
            .input("decrypt-identity", secret)
            .without_env("PREDEPLOY_AGE_IDENTITY")
            .run();
        (vol, before, ws, o)
    })
    .await
    .unwrap();
    o.assert_code(0);
    assert_eq!(o.out("restored"), "true", "{o}");
    tokio::task::spawn_blocking(move || {
        vol.fingerprint()
            .assert_same(&before, "after the rollback from the artifact");
    })
    .await
    .unwrap();
    assert_secret_nowhere(&key.secret, &[&backup, &o], &ws);
}
