//! `volume://NAME[/PREFIX]` and `host:///ABS/PATH`: a named volume, or a folder on the Docker
//! host, read and written through the engine, so that no host path needs to be visible to
//! the action's container.
//!
//! One helper container per opened destination, from an image already present that has
//! `/bin/sh` (the same need as restore's; never pulled), mounts the volume (or binds the host
//! folder) at `/data` and runs `sh` waiting on its stdin. We hold that stdin open: when this
//! process ends, or the store is dropped, `sh` reads EOF, exits, and the engine removes the
//! container (auto-remove), so a killed run leaves no helper behind. Every operation is one
//! `exec` of a small `sh` script in it (`cat`, `mv`, `ln`, `find`, `stat`, `sha256sum`):
//!
//! - write: the bytes stream into `cat > TMP` through the exec's stdin (memory stays flat:
//!   a multipart upload's parts are fed in order as they come, no size needed up front), in a
//!   hidden temporary name beside the object (`.NAME.predeploy-tmp-ID`); the commit checks
//!   the size written and renames it (`mv`), so a reader never sees a half-written object;
//! - read: `cat` streamed from the exec's stdout, checked against the size `stat` gave;
//! - list: `find … -exec stat -c '%s %Y %n'` (size, mtime, name), nothing is downloaded;
//! - remove: `rm -f`, then the folders it leaves empty.
//!
//! Conditional writes (the lease of [`super::lease`]) are atomic on the destination's own
//! file system: create-if-absent is a hard link `ln TMP NAME` (fails if NAME exists);
//! replace-if-unchanged takes a `mkdir NAME.predeploy-cas` mutex (stale after a minute),
//! compares the version and renames. An object's version (`e_tag`) is the SHA-256 of its
//! content up to 64 KiB (the lease), size-mtime-inode above. A file system without hard links
//! reports the operation as unsupported, so the lease's message (and `lock: none`) applies.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use bollard::query_parameters::{AttachContainerOptions, RemoveContainerOptions};
use bytes::Bytes;
use chrono::{DateTime, TimeZone, Utc};
use futures_util::stream::BoxStream;
use futures_util::{FutureExt, StreamExt};
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, GetResultPayload, ListResult, MultipartUpload, ObjectMeta,
    PutMode, PutMultipartOptions, PutOptions, PutPayload, PutResult, UploadPart,
};
use tokio::sync::{mpsc, oneshot, Mutex};

use super::{Destination, Store, StoreError};
use crate::docker::{DockerError, Engine};

/// Where the destination is mounted in the helper.
const ROOT: &str = "/data";

/// Functions every script shares: `tag FILE` prints the object's version.
const PRELUDE: &str = r#"cd /data || exit 90
tag() { s=$(stat -c %s "$1") || return 1
  if [ "$s" -le 65536 ]; then sha256sum < "$1" | cut -c1-64; else stat -c '%s-%Y-%i' "$1"; fi; }
"#;

/// `$1` the temporary file: stdin into it.
const WRITE: &str = r#"mkdir -p "$(dirname "$1")" || exit 91
cat > "$1""#;

/// `$1` temporary, `$2` object, `$3` bytes sent, `$4` overwrite|create|update, `$5` version.
const COMMIT: &str = r#"n=$(stat -c %s "$1") || exit 92
if [ "$n" != "$3" ]; then rm -f "$1"; echo "$n of $3 bytes arrived" >&2; exit 93; fi
case "$4" in
overwrite) mv -f "$1" "$2" || exit 94 ;;
create)
  if ! ln "$1" "$2" 2>/dev/null; then
    rm -f "$1"; [ -e "$2" ] && exit 17
    echo "hard links are not supported here" >&2; exit 95
  fi
  rm -f "$1" ;;
update)
  m="$2.predeploy-cas"
  if ! mkdir "$m" 2>/dev/null; then
    if [ -n "$(find "$m" -maxdepth 0 -mmin +1 2>/dev/null)" ]; then rmdir "$m"; mkdir "$m" || { rm -f "$1"; exit 12; }
    else rm -f "$1"; exit 12; fi
  fi
  if [ -f "$2" ] && [ "$(tag "$2")" = "$5" ]; then mv -f "$1" "$2"; r=$?; else rm -f "$1"; r=12; fi
  rmdir "$m"; [ $r = 0 ] || exit $r ;;
esac
tag "$2""#;

/// `$1` object: size, mtime, version (exit 44 when absent).
const STAT: &str = r#"[ -f "$1" ] || exit 44
stat -c '%s %Y' "$1" && tag "$1""#;

/// `$1` object: its bytes (exit 44 when absent, also when it goes away between the test
/// and the read: a lease released meanwhile).
const CAT: &str = r#"[ -f "$1" ] || exit 44
cat < "$1" && exit 0
[ -e "$1" ] || exit 44
exit 1"#;

/// Objects up to this size are versioned by their content's SHA-256 (see `tag` in
/// [`PRELUDE`]): the lease. They are read whole, with a version that is checked against
/// the bytes read.
const SMALL: u64 = 65536;

/// `$1` folder: one `size mtime path` line per file under it (names with a newline skipped;
/// [`parse_list`] skips the other names that cannot be keys).
const LIST: &str = r#"[ -d "$1" ] || exit 0
find "$1" -type f ! -name "$(printf '*\n*')" -exec stat -c '%s %Y %n' {} +"#;

/// `$1` object: removed, and the folders it leaves empty.
const REMOVE: &str = r#"rm -f "$1" || exit 96
rmdir -p "$(dirname "$1")" 2>/dev/null; exit 0"#;

/// Opens a `volume://` or `host://` destination: checks the volume exists, finds a helper
/// image, and starts the helper.
pub async fn open(engine: &Engine, dest: &Destination) -> Result<Store, StoreError> {
    let (bind_source, prefix, url) = match dest {
        Destination::Volume { name, prefix } => {
            engine.check_volume(name).await.map_err(|e| match e {
                DockerError::NoSuchVolume(_) => StoreError::BadInput(format!(
                    "destination volume://{name}: the volume `{name}` does not exist on the Docker engine. Create it once with `docker volume create {name}` (it then outlives every job), or fix the name (`docker volume ls`)"
                )),
                other => engine_error(&format!("volume://{name}"), other),
            })?;
            let url = if prefix.is_empty() {
                format!("volume://{name}")
            } else {
                format!("volume://{name}/{prefix}")
            };
            (name.clone(), prefix.clone(), url)
        }
        Destination::Host { path } => {
            let path = path.trim_end_matches('/').to_string();
            let path = if path.is_empty() { "/".into() } else { path };
            (path.clone(), String::new(), format!("host://{path}"))
        }
        _ => unreachable!("engine::open takes volume:// and host:// only"),
    };
    let image = engine.helper_image(&[], true).await.map_err(|e| {
        StoreError::BadInput(format!(
            "destination {url} is written through a helper container, which needs an image already present with /bin/sh and the usual tools (cat, mv, ln, find, stat, sha256sum; busybox has them), as restore does: {e}"
        ))
    })?;
    let helper = Helper::start(engine, &bind_source, &image)
        .await
        .map_err(|e| engine_error(&url, e))?;
    Ok(Store::new(
        Arc::new(EngineStore {
            helper: Arc::new(helper),
            url: url.clone(),
        }),
        &prefix,
        url,
    )
    .without_ranged_reads())
}

fn engine_error(url: &str, e: DockerError) -> StoreError {
    StoreError::Backend {
        op: "opening".into(),
        url: url.into(),
        hint: "the Docker engine refused the helper container of this destination".into(),
        detail: e.to_string(),
        source_kind: super::BackendKind::Other,
    }
}

/// The running helper; its container goes away when `stdin` is dropped.
struct Helper {
    engine: Engine,
    id: String,
    /// Held open: `sh` in the helper waits on it (and the connection it shares with
    /// `_output`).
    _stdin: Mutex<std::pin::Pin<Box<dyn tokio::io::AsyncWrite + Send>>>,
    _output:
        Mutex<BoxStream<'static, Result<bollard::container::LogOutput, bollard::errors::Error>>>,
}

impl Helper {
    async fn start(engine: &Engine, source: &str, image: &str) -> Result<Helper, DockerError> {
        let d = engine.client();
        let api = |action: &'static str| {
            move |e: bollard::errors::Error| DockerError::Api {
                action: action.into(),
                detail: e.to_string(),
            }
        };
        let id = engine
            .create_helper(&crate::docker::HelperSpec {
                name_prefix: "predeploy-backup-store",
                image,
                bind: format!("{source}:{ROOT}"),
                cmd: vec!["/bin/sh".into()],
                // `sh` waits on the stdin we hold; the engine removes it when it ends.
                interactive: true,
            })
            .await?;
        let remove = || async {
            let _ = d
                .remove_container(
                    &id,
                    Some(RemoveContainerOptions {
                        force: true,
                        ..Default::default()
                    }),
                )
                .await;
        };
        let attached = match d
            .attach_container(
                &id,
                Some(AttachContainerOptions {
                    stdin: true,
                    stream: true,
                    ..Default::default()
                }),
            )
            .await
        {
            Ok(a) => a,
            Err(e) => {
                remove().await;
                return Err(api("attach helper")(e));
            }
        };
        if let Err(e) = d
            .start_container(
                &id,
                None::<bollard::query_parameters::StartContainerOptions>,
            )
            .await
        {
            remove().await;
            return Err(api("start helper")(e));
        }
        Ok(Helper {
            engine: engine.clone(),
            id,
            _stdin: Mutex::new(attached.input),
            _output: Mutex::new(attached.output),
        })
    }

    /// Runs `sh -c PRELUDE+script sh args…`.
    async fn sh(
        &self,
        script: &str,
        args: &[&str],
        stdin: Option<mpsc::Receiver<Bytes>>,
        stdout: Option<mpsc::Sender<Bytes>>,
    ) -> Result<crate::docker::ExecOutcome, object_store::Error> {
        let mut cmd = vec![
            "/bin/sh".to_string(),
            "-c".into(),
            format!("{PRELUDE}{script}"),
            "sh".into(),
        ];
        cmd.extend(args.iter().map(|a| a.to_string()));
        self.engine
            .exec(&self.id, cmd, vec![], stdin, stdout)
            .await
            .map_err(|e| generic(e.to_string()))
    }

    /// Runs a script that prints something small, and returns it.
    async fn output(
        &self,
        script: &str,
        args: &[&str],
    ) -> Result<(i64, String, String), object_store::Error> {
        let (code, out, err) = self.output_bytes(script, args).await?;
        Ok((code, String::from_utf8_lossy(&out).into_owned(), err))
    }

    /// [`Helper::output`] as bytes.
    async fn output_bytes(
        &self,
        script: &str,
        args: &[&str],
    ) -> Result<(i64, Vec<u8>, String), object_store::Error> {
        let (tx, mut rx) = mpsc::channel::<Bytes>(16);
        let collect = async move {
            let mut out = Vec::new();
            while let Some(b) = rx.recv().await {
                out.extend_from_slice(&b);
            }
            out
        };
        let (done, out) = tokio::join!(self.sh(script, args, None, Some(tx)), collect);
        let done = done?;
        Ok((done.exit_code, out, done.stderr))
    }

    /// A small object ([`SMALL`]) whole, with metadata whose version (`e_tag`, the SHA-256)
    /// is the one of the bytes returned. The stat and the read are two execs: an object
    /// replaced in between (a lease renewed by its holder) is read again, so that the
    /// version given out is never another content's.
    async fn read_small(
        &self,
        location: &Path,
        mut meta: ObjectMeta,
    ) -> Result<(ObjectMeta, Bytes), object_store::Error> {
        use sha2::Digest;
        let path = rel(location);
        for _ in 0..8 {
            let (code, out, err) = self.output_bytes(CAT, &[&path]).await?;
            if code != 0 {
                return Err(script_error(code, location, &err));
            }
            let sha = hex::encode(sha2::Sha256::digest(&out));
            if out.len() as u64 == meta.size && meta.e_tag.as_deref() == Some(sha.as_str()) {
                return Ok((meta, Bytes::from(out)));
            }
            let (code, out, err) = self.output(STAT, &[&path]).await?;
            if code != 0 {
                return Err(script_error(code, location, &err));
            }
            meta = parse_stat(location, &out)?;
            if meta.size > SMALL {
                break;
            }
        }
        Err(generic(format!(
            "{location} changed every time it was read; try again"
        )))
    }
}

/// The path of an object in the helper: always `./…`, so that no name reads as an option.
fn rel(p: &Path) -> String {
    if p.as_ref().is_empty() {
        ".".into()
    } else {
        format!("./{}", p.as_ref())
    }
}

/// The hidden temporary name beside `p` that an upload writes first.
fn temp_of(p: &Path) -> String {
    let r = rel(p);
    let (dir, name) = r.rsplit_once('/').unwrap_or((".", &r));
    format!(
        "{dir}/.{name}.predeploy-tmp-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    )
}

fn generic(msg: impl Into<String>) -> object_store::Error {
    object_store::Error::Generic {
        store: "engine",
        source: msg.into().into(),
    }
}

/// The error of a script that ended with `code`.
fn script_error(code: i64, path: &Path, stderr: &str) -> object_store::Error {
    let path = path.to_string();
    let source =
        || -> Box<dyn std::error::Error + Send + Sync> { format!("exit {code}: {stderr}").into() };
    match code {
        44 => object_store::Error::NotFound {
            path,
            source: source(),
        },
        17 => object_store::Error::AlreadyExists {
            path,
            source: source(),
        },
        12 => object_store::Error::Precondition {
            path,
            source: source(),
        },
        95 => object_store::Error::NotSupported { source: source() },
        90 => generic(format!(
            "the helper container cannot enter {ROOT} (exit {code}): {stderr}"
        )),
        127 => generic(format!(
            "the helper image lacks a tool the destination needs (cat, mv, ln, find, stat, sha256sum): {stderr}; name one that has them with env PREDEPLOY_HELPER_IMAGE (e.g. busybox)"
        )),
        _ => generic(format!("{path}: exit {code}: {stderr}")),
    }
}

/// Parses `size mtime ./path` lines (the output of [`LIST`]).
fn parse_list(text: &str) -> Result<Vec<ObjectMeta>, object_store::Error> {
    let mut out = vec![];
    for line in text.lines().filter(|l| !l.is_empty()) {
        let mut it = line.splitn(3, ' ');
        let (Some(size), Some(mtime), Some(name)) = (it.next(), it.next(), it.next()) else {
            return Err(generic(format!("unreadable listing line `{line}`")));
        };
        let (Ok(size), Ok(mtime)) = (size.parse::<u64>(), mtime.parse::<i64>()) else {
            return Err(generic(format!("unreadable listing line `{line}`")));
        };
        // A name that cannot be a key (a control character in it) is not ours: skipped.
        let Ok(location) = Path::parse(name.trim_start_matches("./")) else {
            continue;
        };
        out.push(ObjectMeta {
            location,
            last_modified: time(mtime),
            size,
            e_tag: None,
            version: None,
        });
    }
    Ok(out)
}

fn time(secs: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(secs, 0).single().unwrap_or_default()
}

/// One level of a recursive listing under `prefix`: the objects right there and the
/// "folders" (common prefixes) below it.
fn one_level(all: Vec<ObjectMeta>, prefix: Option<&Path>) -> ListResult {
    let base = prefix.map(|p| p.as_ref().to_string()).unwrap_or_default();
    let mut common = std::collections::BTreeSet::new();
    let mut objects = vec![];
    for m in all {
        let full = m.location.as_ref().to_string();
        let rest = if base.is_empty() {
            full.as_str()
        } else {
            match full.strip_prefix(&base).and_then(|r| r.strip_prefix('/')) {
                Some(r) => r,
                None => continue,
            }
        };
        match rest.split_once('/') {
            Some((dir, _)) => {
                let p = if base.is_empty() {
                    dir.to_string()
                } else {
                    format!("{base}/{dir}")
                };
                common.insert(p);
            }
            None => objects.push(m),
        }
    }
    ListResult {
        common_prefixes: common
            .into_iter()
            .filter_map(|p| Path::parse(p).ok())
            .collect(),
        objects,
        extensions: Default::default(),
    }
}

struct EngineStore {
    helper: Arc<Helper>,
    url: String,
}

impl fmt::Debug for EngineStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EngineStore({})", self.url)
    }
}

impl fmt::Display for EngineStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.url)
    }
}

/// A write in progress: bytes go to `cat > TMP` in order; [`Upload::commit`] renames.
struct Upload {
    helper: Arc<Helper>,
    location: Path,
    temp: String,
    /// Parts, in call order, to the feeder; each is acknowledged once handed to the exec.
    parts: Option<mpsc::UnboundedSender<(PutPayload, oneshot::Sender<bool>)>>,
    writer:
        Option<tokio::task::JoinHandle<Result<crate::docker::ExecOutcome, object_store::Error>>>,
    sent: u64,
    /// Committed, or aborted and cleaned up: nothing of it is left to remove on drop.
    settled: bool,
}

/// An upload dropped before it was committed or aborted (the future holding it was
/// cancelled: a lease's renewal stopped when its run ended, a cancelled run) removes its
/// temporary file, best effort, once its writer is done: otherwise the hidden
/// `.NAME.predeploy-tmp-ID` would stay in the destination for good.
impl Drop for Upload {
    fn drop(&mut self) {
        if self.settled {
            return;
        }
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        self.parts = None;
        let (helper, temp, writer) = (self.helper.clone(), self.temp.clone(), self.writer.take());
        rt.spawn(async move {
            if let Some(w) = writer {
                let _ = w.await;
            }
            let _ = helper.output(REMOVE, &[&temp]).await;
        });
    }
}

impl Upload {
    fn start(helper: Arc<Helper>, location: &Path) -> Upload {
        let temp = temp_of(location);
        let (stdin_tx, stdin_rx) = mpsc::channel::<Bytes>(8);
        let (parts_tx, mut parts_rx) =
            mpsc::unbounded_channel::<(PutPayload, oneshot::Sender<bool>)>();
        let writer = {
            let helper = helper.clone();
            let temp = temp.clone();
            tokio::spawn(async move {
                let feed = async move {
                    while let Some((payload, ack)) = parts_rx.recv().await {
                        let mut ok = true;
                        for b in payload {
                            if stdin_tx.send(b).await.is_err() {
                                ok = false;
                                break;
                            }
                        }
                        let _ = ack.send(ok);
                        if !ok {
                            break;
                        }
                    }
                    // stdin_tx dropped here: the exec's stdin closes.
                };
                let args = [temp.as_str()];
                let (r, ()) = tokio::join!(helper.sh(WRITE, &args, Some(stdin_rx), None), feed);
                r
            })
        };
        Upload {
            helper,
            location: location.clone(),
            temp,
            parts: Some(parts_tx),
            writer: Some(writer),
            sent: 0,
            settled: false,
        }
    }

    fn part(&mut self, data: PutPayload) -> UploadPart {
        let (ack_tx, ack_rx) = oneshot::channel();
        self.sent += data.content_length() as u64;
        let queued = self
            .parts
            .as_ref()
            .is_some_and(|p| p.send((data, ack_tx)).is_ok());
        async move {
            if queued && ack_rx.await.unwrap_or(false) {
                Ok(())
            } else {
                Err(generic("the helper container stopped taking the upload"))
            }
        }
        .boxed()
    }

    async fn commit(&mut self, mode: &PutMode) -> Result<PutResult, object_store::Error> {
        self.parts = None;
        let written = match self.writer.take() {
            Some(w) => w
                .await
                .map_err(|e| generic(format!("the upload task failed: {e}")))?,
            None => return Err(generic("the upload was already completed or aborted")),
        };
        let written = match written {
            Ok(w) => w,
            Err(e) => {
                self.cleanup().await;
                return Err(e);
            }
        };
        if written.exit_code != 0 {
            self.cleanup().await;
            return Err(script_error(
                written.exit_code,
                &self.location,
                &written.stderr,
            ));
        }
        let (how, version) = match mode {
            PutMode::Overwrite => ("overwrite", String::new()),
            PutMode::Create => ("create", String::new()),
            PutMode::Update(v) => ("update", v.e_tag.clone().unwrap_or_default()),
        };
        let sent = self.sent.to_string();
        let target = rel(&self.location);
        let (code, out, err) = self
            .helper
            .output(COMMIT, &[&self.temp, &target, &sent, how, &version])
            .await?;
        if code != 0 {
            return Err(script_error(code, &self.location, &err));
        }
        self.settled = true;
        Ok(PutResult {
            e_tag: Some(out.trim().to_string()),
            version: None,
            extensions: Default::default(),
        })
    }

    async fn cleanup(&mut self) {
        if self.helper.output(REMOVE, &[&self.temp]).await.is_ok() {
            self.settled = true;
        }
    }
}

impl fmt::Debug for Upload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Upload({})", self.location)
    }
}

#[async_trait]
impl MultipartUpload for Upload {
    fn put_part(&mut self, data: PutPayload) -> UploadPart {
        self.part(data)
    }

    async fn complete(&mut self) -> object_store::Result<PutResult> {
        self.commit(&PutMode::Overwrite).await
    }

    async fn abort(&mut self) -> object_store::Result<()> {
        self.parts = None;
        if let Some(w) = self.writer.take() {
            let _ = w.await;
        }
        self.cleanup().await;
        Ok(())
    }
}

#[async_trait]
impl object_store::ObjectStore for EngineStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        let mut up = Upload::start(self.helper.clone(), location);
        if let Err(e) = up.part(payload).await {
            let _ = up.abort().await;
            return Err(e);
        }
        up.commit(&opts.mode).await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        _opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        Ok(Box::new(Upload::start(self.helper.clone(), location)))
    }

    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        if options.range.is_some()
            || options.if_match.is_some()
            || options.if_none_match.is_some()
            || options.if_modified_since.is_some()
            || options.if_unmodified_since.is_some()
            || options.version.is_some()
        {
            return Err(object_store::Error::NotImplemented {
                operation: "conditional or ranged get".into(),
                implementer: "engine".into(),
            });
        }
        let path = rel(location);
        let (code, out, err) = self.helper.output(STAT, &[&path]).await?;
        if code != 0 {
            return Err(script_error(code, location, &err));
        }
        let meta = parse_stat(location, &out)?;
        if !options.head && meta.size <= SMALL {
            let (meta, bytes) = self.helper.read_small(location, meta).await?;
            let size = meta.size;
            return Ok(GetResult {
                payload: GetResultPayload::Stream(
                    futures_util::stream::once(async move { Ok(bytes) }).boxed(),
                ),
                range: 0..size,
                meta,
                attributes: Default::default(),
                extensions: Default::default(),
            });
        }
        let size = meta.size;
        let stream: BoxStream<'static, object_store::Result<Bytes>> = if options.head {
            futures_util::stream::empty().boxed()
        } else {
            let (tx, rx) = mpsc::channel::<Bytes>(8);
            let helper = self.helper.clone();
            let loc = location.clone();
            let reader =
                tokio::spawn(async move { helper.sh(CAT, &[&path], None, Some(tx)).await });
            let body = futures_util::stream::unfold(rx, |mut rx| async move {
                rx.recv()
                    .await
                    .map(|b| (Ok::<_, object_store::Error>(b), rx))
            });
            // After the bytes: the exec's exit code and the count decide.
            let end = futures_util::stream::once(async move {
                match reader.await {
                    Ok(Ok(o)) if o.exit_code == 0 && o.stdout_bytes == size => None,
                    Ok(Ok(o)) if o.exit_code == 0 => Some(Err(generic(format!(
                        "{loc}: read {} bytes, the object has {size}",
                        o.stdout_bytes
                    )))),
                    Ok(Ok(o)) => Some(Err(script_error(o.exit_code, &loc, &o.stderr))),
                    Ok(Err(e)) => Some(Err(e)),
                    Err(e) => Some(Err(generic(format!("the read task failed: {e}")))),
                }
            })
            .filter_map(futures_util::future::ready);
            body.chain(end).boxed()
        };
        Ok(GetResult {
            payload: GetResultPayload::Stream(stream),
            range: 0..size,
            meta,
            attributes: Default::default(),
            extensions: Default::default(),
        })
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        let helper = self.helper.clone();
        locations
            .then(move |p| {
                let helper = helper.clone();
                async move {
                    let p = p?;
                    let (code, _, err) = helper.output(REMOVE, &[&rel(&p)]).await?;
                    if code != 0 {
                        return Err(script_error(code, &p, &err));
                    }
                    Ok(p)
                }
            })
            .boxed()
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        let helper = self.helper.clone();
        let dir = prefix.map(rel).unwrap_or_else(|| ".".into());
        futures_util::stream::once(async move {
            let (code, out, err) = helper.output(LIST, &[&dir]).await?;
            if code != 0 {
                return Err(script_error(code, &Path::from(dir.as_str()), &err));
            }
            parse_list(&out)
        })
        .map(|r| match r {
            Ok(v) => futures_util::stream::iter(v.into_iter().map(Ok)).boxed(),
            Err(e) => futures_util::stream::once(async { Err(e) }).boxed(),
        })
        .flatten()
        .boxed()
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        use futures_util::TryStreamExt;
        let all: Vec<ObjectMeta> = self.list(prefix).try_collect().await?;
        Ok(one_level(all, prefix))
    }

    async fn copy_opts(
        &self,
        _from: &Path,
        _to: &Path,
        _options: CopyOptions,
    ) -> object_store::Result<()> {
        Err(object_store::Error::NotImplemented {
            operation: "copy".into(),
            implementer: "engine".into(),
        })
    }
}

/// Parses [`STAT`]'s output: `size mtime` then the version.
fn parse_stat(location: &Path, out: &str) -> Result<ObjectMeta, object_store::Error> {
    let mut lines = out.lines();
    let first = lines.next().unwrap_or_default();
    let tag = lines.next().unwrap_or_default().trim();
    let mut it = first.split(' ');
    match (
        it.next().and_then(|s| s.parse::<u64>().ok()),
        it.next().and_then(|s| s.parse::<i64>().ok()),
    ) {
        (Some(size), Some(mtime)) if !tag.is_empty() => Ok(ObjectMeta {
            location: location.clone(),
            last_modified: time(mtime),
            size,
            e_tag: Some(tag.to_string()),
            version: None,
        }),
        _ => Err(generic(format!("unreadable stat of {location}: `{out}`"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_map_to_relative_paths_and_temporaries_sit_beside_them() {
        assert_eq!(rel(&Path::from("a/b/manifest.yml")), "./a/b/manifest.yml");
        assert_eq!(rel(&Path::from("-rf")), "./-rf");
        assert_eq!(rel(&Path::from("")), ".");
        let t = temp_of(&Path::from("p/pre-deployment-1/db.sql.gz"));
        assert!(
            t.starts_with("./p/pre-deployment-1/.db.sql.gz.predeploy-tmp-"),
            "{t}"
        );
        let t = temp_of(&Path::from("predeploy-backup.lock"));
        assert!(
            t.starts_with("./.predeploy-backup.lock.predeploy-tmp-"),
            "{t}"
        );
    }

    #[test]
    fn listings_parse_and_fold_into_one_level() {
        let text = "12 1700000000 ./prod/pre-deployment-1/manifest.yml\n\
                    3 1700000001 ./prod/pre-deployment-1/has space.tar.gz\n\
                    5 1700000002 ./prod/predeploy-backup.lock\n\
                    7 1700000003 ./prod/pre-deployment-2/db.sql.gz\n";
        let all = parse_list(text).unwrap();
        assert_eq!(all.len(), 4);
        assert_eq!(
            all[1].location.as_ref(),
            "prod/pre-deployment-1/has space.tar.gz"
        );
        assert_eq!(all[1].size, 3);
        assert_eq!(all[0].last_modified.timestamp(), 1_700_000_000);
        let one = one_level(all.clone(), Some(&Path::from("prod")));
        let dirs: Vec<&str> = one.common_prefixes.iter().map(|p| p.as_ref()).collect();
        assert_eq!(dirs, ["prod/pre-deployment-1", "prod/pre-deployment-2"]);
        assert_eq!(one.objects.len(), 1);
        assert_eq!(
            one.objects[0].location.as_ref(),
            "prod/predeploy-backup.lock"
        );
        let top = one_level(all, None);
        assert_eq!(top.common_prefixes, [Path::from("prod")]);
        assert!(top.objects.is_empty());
        assert!(parse_list("1 2 ./a\tb\n").unwrap().is_empty());
        assert!(parse_list("x y\n").is_err());
        assert!(parse_list("1 2\n").is_err());
        assert!(parse_list("").unwrap().is_empty());
        let m = parse_stat(&Path::from("k"), "5 1700000000\nabc\n").unwrap();
        assert_eq!((m.size, m.e_tag.as_deref()), (5, Some("abc")));
        assert!(parse_stat(&Path::from("k"), "5 1700000000\n").is_err());
    }
}
