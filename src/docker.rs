//! The Docker Engine API: what backup and restore need of it, and nothing else.
//!
//! - `exec` streams a process's stdout into a sink as it comes (pg_dump's output is never
//!   buffered whole) and reads its exit code *after* the stream ends: EOF is not success.
//! - Volumes are read and written through the archive API of a helper container that is
//!   created but never started, with the volume mounted (read-only for a backup). No image is
//!   pulled: the helper uses an image that is already present.
//! - Containers we stop are recorded in the run's [`Stopped`] (a value `main` makes and
//!   shares with its cancellation handler) so that they are started again on success, on
//!   failure, and when the job is cancelled (SIGTERM; see `main.rs`).

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bollard::container::LogOutput;
use bollard::exec::{CreateExecOptions, StartExecOptions, StartExecResults};
use bollard::models::{ContainerCreateBody, HostConfig};
use bollard::query_parameters::{
    CreateContainerOptions, DownloadFromContainerOptions, ListContainersOptions,
    RemoveContainerOptions, StopContainerOptions, UploadToContainerOptions,
};
use bollard::Docker;
use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

use crate::report::Reporter;

/// Errors talking to Docker, each with what to do.
#[derive(Debug, thiserror::Error)]
pub enum DockerError {
    #[error("cannot reach the Docker engine ({host}): {detail}. On a self-hosted runner the socket must be mounted (container actions get /var/run/docker.sock) or DOCKER_HOST must point at the engine")]
    Unreachable { host: String, detail: String },
    #[error("container `{0}` not found: check the name with `docker ps -a` (or use compose-project + postgres-service)")]
    NoSuchContainer(String),
    #[error("container `{0}` is not running: start it (`docker start {0}`) before the backup")]
    NotRunning(String),
    #[error("no running container has the labels com.docker.compose.project={project} and com.docker.compose.service={service}: is the stack up (`docker compose -p {project} ps`)?")]
    NoComposeService { project: String, service: String },
    #[error("volume `{0}` not found: check the name with `docker volume ls` (compose prefixes it with the project name, e.g. myapp_minio_data)")]
    NoSuchVolume(String),
    #[error("no local image to create a helper container from{}: make one present (e.g. `docker pull busybox`) or name one with env PREDEPLOY_HELPER_IMAGE (no image is pulled automatically)", if *.0 { " that has /bin/sh (restore empties the volume with it)" } else { "" })]
    NoHelperImage(bool),
    #[error(transparent)]
    Transport(#[from] crate::transport::TransportError),
    #[error("Docker {action} failed: {detail}")]
    Api { action: String, detail: String },
    #[error("{what} stalled: no data moved for {secs} s, so it was stopped (a slow transfer that keeps moving is never cut off). Check the connection to the Docker engine; env PREDEPLOY_IDLE_TIMEOUT sets the limit in seconds")]
    Stalled { what: String, secs: u64 },
}

/// How long a volume transfer may go without moving a byte: env `PREDEPLOY_IDLE_TIMEOUT`
/// (seconds), default 300.
pub fn idle_timeout() -> Duration {
    let secs = std::env::var("PREDEPLOY_IDLE_TIMEOUT")
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .filter(|&s| s > 0)
        .unwrap_or(300);
    Duration::from_secs(secs)
}

impl crate::error::Classify for DockerError {
    fn exit_kind(&self) -> crate::error::ExitKind {
        match self {
            DockerError::NoSuchContainer(_)
            | DockerError::NoComposeService { .. }
            | DockerError::NoSuchVolume(_) => crate::error::ExitKind::Usage,
            DockerError::Transport(e) => crate::error::Classify::exit_kind(e),
            _ => crate::error::ExitKind::Environment,
        }
    }

    fn help(&self) -> Option<String> {
        match self {
            DockerError::Transport(e) => crate::error::Classify::help(e),
            DockerError::Api { .. } => Some(
                "the Docker engine refused or failed the request (its answer is above): check the engine (`docker info`, its log, free disk space) and run again; containers stopped for a backup are started again".into(),
            ),
            _ => None,
        }
    }
}

fn api(action: &str) -> impl Fn(bollard::errors::Error) -> DockerError + '_ {
    move |e| DockerError::Api {
        action: action.to_string(),
        detail: e.to_string(),
    }
}

fn is_not_found(e: &bollard::errors::Error) -> bool {
    matches!(
        e,
        bollard::errors::Error::DockerResponseServerError {
            status_code: 404,
            ..
        }
    )
}

/// What we need to know about a container.
#[derive(Clone, Debug)]
pub struct ContainerInfo {
    pub id: String,
    /// Without the leading `/`.
    pub name: String,
    /// The image reference it was created from.
    pub image: String,
    pub running: bool,
    /// Names of the volumes it mounts.
    pub volumes: Vec<String>,
    pub labels: HashMap<String, String>,
}

/// How an exec ended.
#[derive(Debug)]
pub struct ExecOutcome {
    pub exit_code: i64,
    /// The last 64 KiB of stderr.
    pub stderr: String,
    pub stdout_bytes: u64,
}

/// A connected engine.
#[derive(Clone)]
pub struct Engine {
    docker: Docker,
    warnings: Vec<String>,
}

/// A helper container: one image, one mount, no network, root, labelled as ours so that
/// tests and users can find leftovers (`docker ps -a --filter label=org.predeploy-backup.helper`).
pub struct HelperSpec<'a> {
    /// The container's name is this and a random suffix.
    pub name_prefix: &'a str,
    pub image: &'a str,
    /// `SOURCE:/data[:ro]`: a volume name or a host folder.
    pub bind: String,
    /// The command (the image's entrypoint is always replaced).
    pub cmd: Vec<String>,
    /// Stdin kept open for the command (attached by the caller), and the container removed
    /// by the engine when the command exits.
    pub interactive: bool,
}

impl HelperSpec<'_> {
    /// The container's body.
    pub fn body(&self) -> ContainerCreateBody {
        ContainerCreateBody {
            image: Some(self.image.to_string()),
            // Root whatever the image says: it must read and write every file of the
            // volume, whoever owns it (the image may be a consumer's with USER).
            user: Some("0:0".into()),
            // Always an entrypoint and a command of our own: an image without CMD (e.g. a
            // `docker import`ed one) is refused with "No command specified" otherwise.
            entrypoint: Some(vec![]),
            cmd: Some(self.cmd.clone()),
            open_stdin: self.interactive.then_some(true),
            stdin_once: self.interactive.then_some(true),
            attach_stdin: self.interactive.then_some(true),
            network_disabled: Some(true),
            labels: Some(HashMap::from([(
                "org.predeploy-backup.helper".to_string(),
                "true".to_string(),
            )])),
            host_config: Some(HostConfig {
                binds: Some(vec![self.bind.clone()]),
                network_mode: Some("none".into()),
                auto_remove: self.interactive.then_some(true),
                ..Default::default()
            }),
            ..Default::default()
        }
    }
}

impl Engine {
    /// Connects the way the docker CLI does (DOCKER_HOST: a unix socket, plain TCP, TLS or
    /// SSH; see `transport.rs`) and negotiates the API version, so that old and new engines
    /// both work.
    pub async fn connect(settings: &crate::transport::Settings) -> Result<Engine, DockerError> {
        let env = |k: &str| std::env::var(k).ok();
        let c = crate::transport::connect(settings, &env).await?;
        let (host, kind) = (c.host.clone(), c.kind);
        let unreachable = |e: bollard::errors::Error| -> DockerError {
            // The whole chain: hyper's own message ("connection error") hides the cause
            // (a TLS alert, a refused connection) in its source.
            let mut detail = e.to_string();
            let mut cause = std::error::Error::source(&e);
            while let Some(c) = cause {
                let text = c.to_string();
                if !detail.contains(&text) {
                    detail = format!("{detail}: {text}");
                }
                cause = c.source();
            }
            if matches!(kind, "unix" | "tcp") {
                DockerError::Unreachable {
                    host: host.clone(),
                    detail,
                }
            } else {
                let hint = crate::transport::hint(kind, &detail);
                crate::transport::TransportError::Unreachable {
                    host: host.clone(),
                    detail: format!("{detail}{hint}"),
                }
                .into()
            }
        };
        let docker = c.docker.negotiate_version().await.map_err(unreachable)?;
        docker.ping().await.map_err(unreachable)?;
        // No total timeout on a request (bollard's default, 120 s, covered a whole archive
        // upload: a slow but moving restore was cut off half-written). Transfers have an
        // idle timeout instead (see `idle_timeout`).
        let docker = docker.with_timeout(Duration::from_secs(7 * 24 * 3600));
        let engine = Engine {
            docker,
            warnings: c.warnings,
        };
        Ok(engine)
    }

    /// What the connection wants the user to know (an unverified TLS link, a host key
    /// trusted on first use).
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// The raw client, for the few callers that need more.
    pub fn client(&self) -> &Docker {
        &self.docker
    }

    /// Inspects a container by name or id.
    pub async fn container(&self, name: &str) -> Result<ContainerInfo, DockerError> {
        let c = self
            .docker
            .inspect_container(name, None)
            .await
            .map_err(|e| {
                if is_not_found(&e) {
                    DockerError::NoSuchContainer(name.to_string())
                } else {
                    api("inspect")(e)
                }
            })?;
        let config = c.config.unwrap_or_default();
        Ok(ContainerInfo {
            id: c.id.unwrap_or_default(),
            name: c
                .name
                .unwrap_or_default()
                .trim_start_matches('/')
                .to_string(),
            image: config.image.unwrap_or_default(),
            running: c.state.and_then(|s| s.running).unwrap_or(false),
            volumes: c
                .mounts
                .unwrap_or_default()
                .into_iter()
                .filter_map(|m| m.name)
                .collect(),
            labels: config.labels.unwrap_or_default(),
        })
    }

    /// The running container of a compose service.
    pub async fn compose_service(
        &self,
        project: &str,
        service: &str,
    ) -> Result<ContainerInfo, DockerError> {
        let filters = HashMap::from([(
            "label".to_string(),
            vec![
                format!("com.docker.compose.project={project}"),
                format!("com.docker.compose.service={service}"),
            ],
        )]);
        let list = self
            .docker
            .list_containers(Some(ListContainersOptions {
                all: false,
                filters: Some(filters),
                ..Default::default()
            }))
            .await
            .map_err(api("list containers"))?;
        let first =
            list.into_iter()
                .find_map(|c| c.id)
                .ok_or_else(|| DockerError::NoComposeService {
                    project: project.into(),
                    service: service.into(),
                })?;
        self.container(&first).await
    }

    /// Every container (running or not) that mounts `volume`.
    pub async fn containers_using_volume(
        &self,
        volume: &str,
    ) -> Result<Vec<ContainerInfo>, DockerError> {
        let filters = HashMap::from([("volume".to_string(), vec![volume.to_string()])]);
        let list = self
            .docker
            .list_containers(Some(ListContainersOptions {
                all: true,
                filters: Some(filters),
                ..Default::default()
            }))
            .await
            .map_err(api("list containers"))?;
        let mut out = vec![];
        for c in list {
            if let Some(id) = c.id {
                out.push(self.container(&id).await?);
            }
        }
        Ok(out)
    }

    /// Fails with a clear message when the volume does not exist.
    pub async fn check_volume(&self, name: &str) -> Result<(), DockerError> {
        self.docker.inspect_volume(name).await.map_err(|e| {
            if is_not_found(&e) {
                DockerError::NoSuchVolume(name.to_string())
            } else {
                api("inspect volume")(e)
            }
        })?;
        Ok(())
    }

    /// Runs `cmd` in a running container; stdout goes to `stdout` chunk by chunk (the
    /// receiver's pace is the producer's pace: nothing piles up in memory), `stdin` (if any)
    /// is fed from a channel and closed at its end. The exit code is read after the stream.
    pub async fn exec(
        &self,
        container: &str,
        cmd: Vec<String>,
        env: Vec<String>,
        stdin: Option<mpsc::Receiver<Bytes>>,
        stdout: Option<mpsc::Sender<Bytes>>,
    ) -> Result<ExecOutcome, DockerError> {
        let created = self
            .docker
            .create_exec(
                container,
                CreateExecOptions::<String> {
                    cmd: Some(cmd),
                    env: Some(env),
                    attach_stdin: Some(stdin.is_some()),
                    attach_stdout: Some(true),
                    attach_stderr: Some(true),
                    tty: Some(false),
                    ..Default::default()
                },
            )
            .await
            .map_err(api("exec"))?;
        let started = self
            .docker
            .start_exec(
                &created.id,
                Some(StartExecOptions {
                    detach: false,
                    tty: false,
                    output_capacity: Some(256 * 1024),
                }),
            )
            .await
            .map_err(api("exec start"))?;
        let StartExecResults::Attached { mut output, input } = started else {
            return Err(DockerError::Api {
                action: "exec".into(),
                detail: "the engine detached the exec".into(),
            });
        };
        let feeder = async move {
            let mut input = input;
            if let Some(mut rx) = stdin {
                while let Some(chunk) = rx.recv().await {
                    if input.write_all(&chunk).await.is_err() {
                        // The process stopped reading (it failed); its exit code says why.
                        break;
                    }
                }
            }
            let _ = input.shutdown().await;
        };
        let reader = async move {
            let mut stderr = Vec::new();
            let mut bytes = 0u64;
            let mut sink = stdout;
            while let Some(frame) = output.next().await {
                match frame.map_err(api("exec stream"))? {
                    LogOutput::StdOut { message } | LogOutput::Console { message } => {
                        bytes += message.len() as u64;
                        if let Some(tx) = &sink {
                            if tx.send(message).await.is_err() {
                                // The consumer failed; stop feeding it but drain the stream.
                                sink = None;
                            }
                        }
                    }
                    LogOutput::StdErr { message } => {
                        stderr.extend_from_slice(&message);
                        if stderr.len() > 64 * 1024 {
                            stderr.drain(..stderr.len() - 64 * 1024);
                        }
                    }
                    LogOutput::StdIn { .. } => {}
                }
            }
            Ok::<_, DockerError>((stderr, bytes))
        };
        let ((), read) = tokio::join!(feeder, reader);
        let (stderr, stdout_bytes) = read?;
        let inspect = self
            .docker
            .inspect_exec(&created.id)
            .await
            .map_err(api("exec inspect"))?;
        Ok(ExecOutcome {
            exit_code: inspect.exit_code.unwrap_or(-1),
            stderr: String::from_utf8_lossy(&stderr).trim().to_string(),
            stdout_bytes,
        })
    }

    /// Creates (never starts) a helper container that mounts `volume` at `/data`.
    pub async fn helper(
        &self,
        volume: &str,
        image: &str,
        read_only: bool,
        cmd: Option<Vec<String>>,
    ) -> Result<Helper, DockerError> {
        let spec = HelperSpec {
            name_prefix: "predeploy-backup-helper",
            image,
            bind: format!("{volume}:/data{}", if read_only { ":ro" } else { "" }),
            // A helper that is never started never runs it.
            cmd: cmd.unwrap_or_else(|| vec!["/predeploy-helper-never-started".into()]),
            interactive: false,
        };
        let id = self.create_helper(&spec).await?;
        Ok(Helper {
            engine: self.clone(),
            id,
        })
    }

    /// Creates (never starts) a helper container as `spec` says; returns its id. The one
    /// place that builds a helper's body: [`Engine::helper`] (archive and restore) and the
    /// engine destination's (`store::engine`) both come here.
    pub async fn create_helper(&self, spec: &HelperSpec<'_>) -> Result<String, DockerError> {
        let created = self
            .docker
            .create_container(
                Some(CreateContainerOptions {
                    name: Some(format!(
                        "{}-{}",
                        spec.name_prefix,
                        &uuid::Uuid::new_v4().simple().to_string()[..12]
                    )),
                    ..Default::default()
                }),
                spec.body(),
            )
            .await
            .map_err(api("create helper container"))?;
        Ok(created.id)
    }

    /// An image that is already present to create helper containers from: env
    /// `PREDEPLOY_HELPER_IMAGE`, else our own container's image (inside the action), else
    /// the images of the containers in `hint` (e.g. the ones that mount the volume), then
    /// any local image: the first present one when `need_shell` is false (a backup only
    /// reads through the archive API, the helper never runs), else the first with
    /// `/bin/sh`; else a clear error.
    pub async fn helper_image(
        &self,
        hint: &[ContainerInfo],
        need_shell: bool,
    ) -> Result<String, DockerError> {
        let mut candidates: Vec<String> = vec![];
        if let Ok(img) = std::env::var("PREDEPLOY_HELPER_IMAGE") {
            if !img.trim().is_empty() {
                candidates.push(img);
            }
        }
        if std::path::Path::new("/.dockerenv").exists() {
            if let Ok(me) = std::fs::read_to_string("/etc/hostname") {
                if let Ok(c) = self.container(me.trim()).await {
                    candidates.push(c.image);
                }
            }
        }
        candidates.extend(hint.iter().map(|c| c.image.clone()));
        if let Ok(images) = self
            .docker
            .list_images(None::<bollard::query_parameters::ListImagesOptions>)
            .await
        {
            for i in images {
                candidates.extend(i.repo_tags.into_iter().filter(|t| t != "<none>:<none>"));
                candidates.push(i.id);
            }
        }
        let mut seen = std::collections::HashSet::new();
        for image in candidates {
            if !seen.insert(image.clone()) {
                continue;
            }
            if self.docker.inspect_image(&image).await.is_err() {
                continue;
            }
            // The user's choice and our own image first. A helper that is never started
            // (archiving through the engine) runs nothing: the first image present will
            // do, without a probe container.
            if !need_shell || self.image_has_shell(&image).await {
                return Ok(image);
            }
        }
        Err(DockerError::NoHelperImage(need_shell))
    }

    async fn image_has_shell(&self, image: &str) -> bool {
        let Ok(created) = self
            .docker
            .create_container(
                None::<CreateContainerOptions>,
                ContainerCreateBody {
                    image: Some(image.to_string()),
                    entrypoint: Some(vec!["/bin/sh".into()]),
                    network_disabled: Some(true),
                    ..Default::default()
                },
            )
            .await
        else {
            return false;
        };
        let mut s = self.docker.download_from_container(
            &created.id,
            Some(DownloadFromContainerOptions {
                path: "/bin/sh".into(),
            }),
        );
        let ok = matches!(s.next().await, Some(Ok(_)));
        drop(s);
        let _ = self
            .docker
            .remove_container(
                &created.id,
                Some(RemoveContainerOptions {
                    force: true,
                    ..Default::default()
                }),
            )
            .await;
        ok
    }

    /// Stops running containers (those already stopped are left alone), records them in
    /// `registry` so that they are started again whatever happens (see
    /// [`Stopped::restart_all`]), and returns the ones it stopped, for [`Stopped::restart`].
    /// A name is recorded *before* the stop is asked for (a cancellation in between still
    /// restarts it) and marked confirmed only when the engine says the stop is done.
    pub async fn stop(
        &self,
        names: &[String],
        registry: &Stopped,
        report: &dyn Reporter,
    ) -> Result<Vec<String>, DockerError> {
        let mut stopped = vec![];
        for name in names {
            let c = self.container(name).await?;
            if !c.running {
                continue;
            }
            report.info(&format!("Stopping container {}", c.name));
            registry.record(self, &c.name);
            stopped.push(c.name.clone());
            self.docker
                .stop_container(
                    &c.name,
                    Some(StopContainerOptions {
                        t: Some(STOP_GRACE as i32),
                        ..Default::default()
                    }),
                )
                .await
                .map_err(api("stop container"))?;
            registry.confirm(&c.name);
        }
        Ok(stopped)
    }
}

/// What an upload's connection may still hold when its body has been handed over (hyper's
/// write buffer and the kernel's socket buffers), generously.
const IN_FLIGHT_BOUND: u64 = 8 << 20;

/// How long an upload may go quiet once its whole body (`bytes`) was handed over: the idle
/// limit for each MiB that may still be in the connection's buffers, plus one — the same rule
/// as while the body is read (a link that moves at least 1 MiB per idle period is never cut
/// off), applied to what the client can no longer see move.
fn drain_limit(idle: Duration, bytes: u64) -> Duration {
    let mib = bytes.min(IN_FLIGHT_BOUND).div_ceil(1 << 20);
    idle * (1 + mib as u32)
}

/// Seconds a container gets to stop before the engine kills it.
const STOP_GRACE: u64 = 30;

/// The containers a run stopped (or asked to stop) and must start again, and the engine
/// (with its transport) they were stopped through. Made by the run and shared with its
/// cancellation handler: cheap to clone, clones share one list. A name leaves the list only
/// when its start succeeded.
#[derive(Clone, Default)]
pub struct Stopped(Arc<Mutex<StoppedState>>);

#[derive(Default)]
struct StoppedState {
    /// `true` once the engine confirmed the stop.
    names: Vec<(String, bool)>,
    engine: Option<Engine>,
}

impl Stopped {
    pub fn new() -> Self {
        Self::default()
    }

    fn record(&self, engine: &Engine, name: &str) {
        let mut s = self.0.lock().unwrap();
        s.engine = Some(engine.clone());
        s.names.push((name.to_string(), false));
    }

    fn confirm(&self, name: &str) {
        for e in self.0.lock().unwrap().names.iter_mut() {
            if e.0 == name {
                e.1 = true;
            }
        }
    }

    fn confirmed(&self, name: &str) -> bool {
        self.0
            .lock()
            .unwrap()
            .names
            .iter()
            .any(|(n, ok)| n == name && *ok)
    }

    fn started(&self, name: &str) {
        self.0.lock().unwrap().names.retain(|(n, _)| n != name);
    }

    /// The containers stopped and not started again yet, oldest stop first.
    pub fn names(&self) -> Vec<String> {
        let s = self.0.lock().unwrap();
        s.names.iter().map(|(n, _)| n.clone()).collect()
    }

    /// Starts every container [`Engine::stop`] stopped and nobody started again yet;
    /// returns the ones that failed to start. Runs at the end of every run and on
    /// cancellation.
    pub async fn restart_all(&self, report: &dyn Reporter) -> Vec<String> {
        self.restart(&self.names(), report).await
    }

    /// Starts these containers (stopped by [`Engine::stop`]) again, newest stop first;
    /// returns the ones that failed to start. A stop that was asked for but not confirmed
    /// (cancelled mid-way; the engine carries on, up to the grace period) is waited for
    /// first, so that it cannot complete after the start and leave the container stopped.
    pub async fn restart(&self, names: &[String], report: &dyn Reporter) -> Vec<String> {
        if names.is_empty() {
            return vec![];
        }
        // The engine (and transport) that stopped them; a new connection only when none
        // is known.
        let known = self.0.lock().unwrap().engine.clone();
        let engine = match known {
            Some(e) => e,
            None => match Engine::connect(&Default::default()).await {
                Ok(e) => e,
                Err(_) => return names.to_vec(),
            },
        };
        let mut failed = vec![];
        for name in names.iter().rev() {
            if !self.confirmed(name) {
                let deadline = Instant::now() + Duration::from_secs(STOP_GRACE + 5);
                while Instant::now() < deadline {
                    match engine.container(name).await {
                        Ok(c) if c.running => tokio::time::sleep(Duration::from_millis(250)).await,
                        _ => break,
                    }
                }
            }
            report.info(&format!("Starting container {name} again"));
            match engine
                .docker
                .start_container(
                    name,
                    None::<bollard::query_parameters::StartContainerOptions>,
                )
                .await
            {
                Ok(()) => self.started(name),
                Err(e) => {
                    report.error(
                        "Container not restarted",
                        None,
                        &format!(
                            "could not start {name} again: {e}; start it by hand: docker start {name}"
                        ),
                    );
                    failed.push(name.clone());
                }
            }
        }
        failed
    }
}

/// A created, never-started container with a volume at `/data`; removed by [`Helper::remove`].
pub struct Helper {
    engine: Engine,
    pub id: String,
}

impl Helper {
    /// The volume's content as a tar stream whose entries are relative to the volume root
    /// (`./`, `./a/b`): the layout `tar xzf … -C /data` expects.
    /// A chunk that does not come within [`idle_timeout`] ends the stream with
    /// [`DockerError::Stalled`]; there is no limit on the whole.
    pub fn download(&self) -> Pin<Box<dyn Stream<Item = Result<Bytes, DockerError>> + Send>> {
        let idle = idle_timeout();
        let inner = Box::pin(self.engine.docker.download_from_container(
            &self.id,
            Some(DownloadFromContainerOptions {
                path: "/data/.".into(),
            }),
        ));
        Box::pin(futures_util::stream::unfold(
            Some(inner),
            move |state| async move {
                let mut s = state?;
                match tokio::time::timeout(idle, s.next()).await {
                    Ok(Some(r)) => Some((r.map_err(api("read volume")), Some(s))),
                    Ok(None) => None,
                    Err(_) => Some((
                        Err(DockerError::Stalled {
                            what: "reading the volume".into(),
                            secs: idle.as_secs(),
                        }),
                        None,
                    )),
                }
            },
        ))
    }

    /// Extracts a tar stream into the volume (ownership and modes as in the archive).
    pub async fn upload(
        &self,
        tar: impl Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static,
    ) -> Result<(), DockerError> {
        self.upload_to("/data", tar).await
    }

    /// Extracts a tar stream into `path` (an existing folder inside the container).
    /// Progress is the engine taking the next chunk; none for `idle_timeout` fails.
    ///
    /// Once the whole body has been handed over, what still sits in the connection's buffers
    /// (hyper's and the kernel's: a few hundred KiB on the unix socket, up to ~4 MiB on an
    /// autotuned TCP connection) drains with no progress the client can see: see
    /// [`drain_limit`]. So a slow link that keeps moving is not cut off at its end, and a
    /// stalled one still fails, later.
    pub async fn upload_to(
        &self,
        path: &str,
        tar: impl Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static,
    ) -> Result<(), DockerError> {
        let idle = idle_timeout();
        let start = Instant::now();
        let last = Arc::new(AtomicU64::new(0));
        let bytes = Arc::new(AtomicU64::new(0));
        let ended = Arc::new(AtomicU64::new(0));
        let (seen, counted, end) = (last.clone(), bytes.clone(), ended.clone());
        let tar = tar
            .inspect(move |chunk| {
                seen.store(start.elapsed().as_millis() as u64, Ordering::Relaxed);
                if let Ok(c) = chunk {
                    counted.fetch_add(c.len() as u64, Ordering::Relaxed);
                }
            })
            .chain(futures_util::stream::poll_fn(move |_| {
                end.store(start.elapsed().as_millis().max(1) as u64, Ordering::Relaxed);
                std::task::Poll::<Option<Result<Bytes, std::io::Error>>>::Ready(None)
            }));
        // The body belongs to the connection, which a stall leaves stuck: the source is
        // released here on a stall, so that whatever feeds it sees the end instead of
        // waiting for ever.
        type Source = Pin<Box<dyn Stream<Item = Result<Bytes, std::io::Error>> + Send>>;
        let source: Arc<Mutex<Option<Source>>> = Arc::new(Mutex::new(Some(Box::pin(tar))));
        let body = {
            let source = source.clone();
            futures_util::stream::poll_fn(move |cx| match source.lock().unwrap().as_mut() {
                Some(s) => s.as_mut().poll_next(cx),
                None => std::task::Poll::Ready(Some(Err(std::io::Error::other(
                    "the upload was stopped",
                )))),
            })
        };
        let upload = self.engine.docker.upload_to_container(
            &self.id,
            Some(UploadToContainerOptions {
                path: path.into(),
                ..Default::default()
            }),
            bollard::body_try_stream(body),
        );
        tokio::pin!(upload);
        loop {
            tokio::select! {
                r = &mut upload => return r.map_err(api("write volume")),
                _ = tokio::time::sleep(Duration::from_millis(250)) => {
                    let quiet = start.elapsed().as_millis() as u64 - last.load(Ordering::Relaxed);
                    let limit = match ended.load(Ordering::Relaxed) {
                        0 => idle,
                        _ => drain_limit(idle, bytes.load(Ordering::Relaxed)),
                    };
                    if quiet > limit.as_millis() as u64 {
                        drop(source.lock().unwrap().take());
                        return Err(DockerError::Stalled {
                            what: "writing the volume".into(),
                            secs: limit.as_secs(),
                        });
                    }
                }
            }
        }
    }

    /// Starts the helper (its command was given at creation), waits, returns the exit code
    /// and the end of its output.
    pub async fn run_to_end(&self) -> Result<(i64, String), DockerError> {
        let d = &self.engine.docker;
        d.start_container(
            &self.id,
            None::<bollard::query_parameters::StartContainerOptions>,
        )
        .await
        .map_err(api("start helper"))?;
        let mut wait = d.wait_container(
            &self.id,
            None::<bollard::query_parameters::WaitContainerOptions>,
        );
        let mut code = -1;
        while let Some(r) = wait.next().await {
            match r {
                Ok(w) => code = w.status_code,
                Err(bollard::errors::Error::DockerContainerWaitError { code: c, .. }) => code = c,
                Err(e) => return Err(api("wait helper")(e)),
            }
        }
        let mut logs = d.logs(
            &self.id,
            Some(bollard::query_parameters::LogsOptions {
                stdout: true,
                stderr: true,
                tail: "50".into(),
                ..Default::default()
            }),
        );
        let mut text = String::new();
        while let Some(Ok(l)) = logs.next().await {
            text.push_str(&l.to_string());
        }
        Ok((code, text.trim().to_string()))
    }

    /// Removes the helper container.
    pub async fn remove(self) {
        let _ = self
            .engine
            .docker
            .remove_container(
                &self.id,
                Some(RemoveContainerOptions {
                    force: true,
                    ..Default::default()
                }),
            )
            .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::Recorded;

    #[test]
    fn helper_runs_as_root_with_its_own_command_no_network_and_our_label() {
        let spec = HelperSpec {
            name_prefix: "predeploy-backup-helper",
            image: "app:with-user-and-no-cmd",
            bind: "vol:/data:ro".into(),
            cmd: vec!["/bin/sh".into(), "-c".into(), "true".into()],
            interactive: false,
        };
        let b = spec.body();
        // An image with a non-root USER, or without CMD, still works.
        assert_eq!(b.user.as_deref(), Some("0:0"));
        assert_eq!(b.entrypoint, Some(vec![]));
        assert_eq!(b.cmd, Some(spec.cmd.clone()));
        assert_eq!(b.network_disabled, Some(true));
        let labels = b.labels.unwrap();
        assert_eq!(labels["org.predeploy-backup.helper"], "true");
        let host = b.host_config.unwrap();
        assert_eq!(host.binds, Some(vec!["vol:/data:ro".to_string()]));
        assert_eq!(host.network_mode.as_deref(), Some("none"));
        // Only a helper fed through stdin removes itself; the others are removed by us.
        assert_eq!(host.auto_remove, None);
        assert_eq!(b.open_stdin, None);
        let fed = HelperSpec {
            interactive: true,
            ..spec
        }
        .body();
        assert_eq!(fed.open_stdin, Some(true));
        assert_eq!(fed.host_config.unwrap().auto_remove, Some(true));
    }

    #[test]
    fn drain_limit_gives_one_idle_period_per_mib_still_in_the_buffers() {
        let idle = Duration::from_secs(10);
        assert_eq!(drain_limit(idle, 0), idle);
        assert_eq!(drain_limit(idle, 1), idle * 2);
        assert_eq!(drain_limit(idle, 3 << 20), idle * 4);
        // What can still be in flight is bounded, whatever the body's size.
        assert_eq!(drain_limit(idle, 50 << 30), idle * 9);
    }

    #[tokio::test]
    async fn a_container_that_cannot_start_again_stays_listed_and_is_named_with_what_to_do() {
        // An engine nobody answers at: every start fails.
        let docker =
            Docker::connect_with_http("http://127.0.0.1:1", 2, bollard::API_DEFAULT_VERSION)
                .unwrap();
        let engine = Engine {
            docker,
            warnings: vec![],
        };
        let stopped = Stopped::new();
        let shared = stopped.clone();
        stopped.record(&engine, "db");
        stopped.record(&engine, "app");
        stopped.confirm("db");
        stopped.confirm("app");
        // Clones share one list (the cancellation handler holds one).
        assert_eq!(shared.names(), ["db", "app"]);
        let report = Recorded(Default::default());
        let failed = shared.restart_all(&report).await;
        // Newest stop first; both still listed, so the end of the run tries again.
        assert_eq!(failed, ["app", "db"]);
        assert_eq!(stopped.names(), ["db", "app"]);
        let said = report.0.lock().unwrap().join("\n");
        assert!(said.contains("docker start app"), "{said}");
        assert!(said.contains("docker start db"), "{said}");
        stopped.started("db");
        assert_eq!(shared.names(), ["app"]);
    }
}
