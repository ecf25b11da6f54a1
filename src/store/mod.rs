//! The storage seam: where backups live durably (restic's backend is the model).
//!
//! One small interface — [`Store::save`] (streamed from any `AsyncRead`; multipart above one
//! chunk, so memory stays flat at any size), [`Store::load`] (a stream), [`Store::list`],
//! [`Store::remove`], and the conditional write a lease needs ([`Store::put_if`]) — over a
//! backend:
//!
//! - [`s3`]: any S3-compatible service through `object_store` (ring, no second TLS stack);
//! - [`engine`]: `volume://NAME[/PREFIX]` and `host:///ABS/PATH` through a helper container
//!   on the Docker engine (no host path needs to be visible to this process);
//! - [`local`]: a folder on this machine;
//! - [`mem`]: in memory, for unit tests.
//!
//! Every backend is an `object_store::ObjectStore` behind [`Destination::open`]. Keys are `/`-separated and relative to the destination's prefix, e.g.
//! `pre-deployment-20241130_143022/manifest.yml`. The store never prints and never sees a
//! secret in its URL: [`Destination::parse`] refuses a URL with credentials in it.

pub mod engine;
pub mod lease;
pub mod local;
pub mod mem;
pub mod s3;

use std::sync::Arc;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures_util::TryStreamExt;
use object_store::path::Path as ObjPath;
use object_store::{
    ObjectStore, ObjectStoreExt, PutMode, PutOptions, UpdateVersion, WriteMultipart,
};
use tokio::io::{AsyncRead, AsyncReadExt};

/// Multipart part size: a part is buffered in memory while it is sent.
pub const CHUNK: usize = 8 << 20;
/// Parts in flight at once (memory: about `CHUNK * (PARTS + 1)`).
pub const PARTS: usize = 4;
/// A read-back ([`Store::digest`]) asks for the object in ranges of this size, with up to
/// [`RANGES`] in flight (memory: about `RANGE * (RANGES + 1)`).
pub const RANGE: u64 = 8 << 20;
pub const RANGES: usize = 4;

/// A failure of the destination, with what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The `destination` input (or its options) is wrong: nothing was touched.
    #[error("{0}")]
    BadInput(String),
    /// The backend refused or failed an operation.
    /// `detail` is the backend's own message (it already holds its causes, once).
    #[error("{op} {url} failed: {hint}\n{detail}")]
    Backend {
        op: String,
        url: String,
        hint: String,
        detail: String,
        source_kind: BackendKind,
    },
    /// Reading what was to be stored failed (the local file, the dump stream).
    #[error("reading the data for {url} failed")]
    Source {
        url: String,
        #[source]
        source: std::io::Error,
    },
}

impl crate::error::Classify for StoreError {
    fn exit_kind(&self) -> crate::error::ExitKind {
        match self {
            StoreError::BadInput(_) => crate::error::ExitKind::Usage,
            _ => crate::error::ExitKind::Environment,
        }
    }

    fn help(&self) -> Option<String> {
        match self {
            StoreError::Source { .. } => Some(
                "what was being uploaded could not be read (a local backup file, or the stream of the dump): check the disk of the backup root and run again; nothing incomplete is left at the destination".into(),
            ),
            _ => None,
        }
    }
}

/// The kind of a backend failure that callers act on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BackendKind {
    /// The server does not implement the operation (e.g. conditional writes).
    Unsupported,
    Other,
}

/// What a `destination` URL names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Destination {
    /// `s3://BUCKET/PREFIX`.
    S3 { bucket: String, prefix: String },
    /// `file:///ABS/PATH` (or a plain absolute path): a folder this process sees.
    Local { path: std::path::PathBuf },
    /// `volume://NAME`: a named Docker volume (through a helper container).
    Volume { name: String, prefix: String },
    /// `host:///ABS/PATH`: a folder on the Docker host (through a helper container).
    Host { path: String },
    /// `mem://NAME`: in memory (unit tests only).
    Mem,
}

impl Destination {
    /// Parses the `destination` input. A URL that carries credentials (`user:pass@`, or a
    /// query string) is refused: keys come from the environment, never from the URL.
    pub fn parse(s: &str) -> Result<Destination, StoreError> {
        let s = s.trim();
        if s.starts_with('/') {
            return Ok(Destination::Local { path: s.into() });
        }
        // The URL parser resolves `..` itself (s3://b/../x becomes s3://b/x): refuse it
        // before, so that a destination never names another place than the one written.
        if s.split(['/', '\\']).any(|seg| seg == ".." || seg == ".") {
            return Err(StoreError::BadInput(
                "destination must not contain `.` or `..` path segments: write the folder as it is, e.g. s3://bucket/backups/app".into(),
            ));
        }
        let url = url::Url::parse(s).map_err(|e| {
            StoreError::BadInput(format!(
                "destination is not a URL ({e}): write s3://bucket/prefix, volume://name or host:///abs/path"
            ))
        })?;
        if !url.username().is_empty() || url.password().is_some() || url.query().is_some() {
            return Err(StoreError::BadInput(
                "destination must not carry credentials (user:secret@ or ?key=...): remove them from the URL and pass keys as AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (secrets) in the step's env".into(),
            ));
        }
        let prefix = clean_prefix(url.path())?;
        match url.scheme() {
            "s3" => {
                let bucket = url.host_str().unwrap_or_default().to_string();
                if bucket.is_empty() {
                    return Err(StoreError::BadInput(
                        "destination s3:// needs a bucket: s3://bucket/prefix".into(),
                    ));
                }
                Ok(Destination::S3 { bucket, prefix })
            }
            "file" => Ok(Destination::Local {
                path: url.path().into(),
            }),
            "volume" => {
                let name = url.host_str().unwrap_or_default().to_string();
                if !crate::names::is_docker_name(&name) {
                    return Err(StoreError::BadInput(format!(
                        "destination volume://{} is not a Docker volume name",
                        crate::names::shown(&name)
                    )));
                }
                Ok(Destination::Volume { name, prefix })
            }
            "host" => {
                if url.host_str().is_some_and(|h| !h.is_empty()) || url.path().len() < 2 {
                    return Err(StoreError::BadInput(
                        "destination host:// takes an absolute path on the Docker host: host:///srv/backups (three slashes)".into(),
                    ));
                }
                Ok(Destination::Host {
                    path: url.path().into(),
                })
            }
            "mem" => Ok(Destination::Mem),
            other => Err(StoreError::BadInput(format!(
                "destination scheme `{other}://` is not supported: use s3://bucket/prefix, volume://name or host:///abs/path"
            ))),
        }
    }

    /// Whether it is reached through the Docker engine (`volume://`, `host://`).
    pub fn needs_engine(&self) -> bool {
        matches!(self, Destination::Volume { .. } | Destination::Host { .. })
    }

    /// Connects to it (for S3 no request is made yet: see [`Store::check`]; `volume://` and
    /// `host://` start their helper container on `engine`).
    pub async fn open(
        &self,
        s3_options: &s3::Options,
        engine: Option<&crate::docker::Engine>,
    ) -> Result<Store, StoreError> {
        match self {
            Destination::S3 { bucket, prefix } => s3::open(bucket, prefix, s3_options),
            Destination::Local { path } => local::open(path),
            Destination::Mem => Ok(mem::open()),
            Destination::Volume { .. } | Destination::Host { .. } => match engine {
                Some(e) => engine::open(e, self).await,
                None => Err(StoreError::BadInput(
                    "destination volume:// and host:// need the Docker engine".into(),
                )),
            },
        }
    }
}

/// `/a/b/` → `a/b`; refuses `..` and empty segments in the middle.
fn clean_prefix(p: &str) -> Result<String, StoreError> {
    let parts: Vec<&str> = p.split('/').filter(|s| !s.is_empty()).collect();
    if parts.iter().any(|s| *s == "." || *s == "..") {
        return Err(StoreError::BadInput(
            "destination prefix must not contain `.` or `..`".into(),
        ));
    }
    Ok(parts.join("/"))
}

/// One stored object.
#[derive(Clone, Debug, PartialEq)]
pub struct Entry {
    /// Relative to the destination's prefix.
    pub key: String,
    pub size: u64,
    pub modified: DateTime<Utc>,
}

/// An opaque version of an object, for [`Condition::At`].
#[derive(Clone, Debug)]
pub struct Version(UpdateVersion);

/// A durable destination, opened.
#[derive(Clone, Debug)]
pub struct Store {
    inner: Arc<dyn ObjectStore>,
    /// Key prefix inside the backend, without slashes around it ("" for none).
    prefix: String,
    /// The URL shown and recorded (never with credentials), without a trailing slash.
    url: String,
    /// Listing and aborting incomplete multipart uploads (S3 only).
    uploads: Option<Arc<s3::Uploads>>,
    /// Whether the backend serves ranged reads (the engine's helper streams whole files).
    ranged: bool,
}

/// An incomplete multipart upload under the destination's prefix (a run killed mid-upload).
#[derive(Clone, Debug)]
pub struct Incomplete {
    /// Relative to the destination's prefix, like [`Entry::key`].
    pub key: String,
    pub initiated: DateTime<Utc>,
    pending: s3::Pending,
}

impl Store {
    pub fn new(inner: Arc<dyn ObjectStore>, prefix: &str, url: String) -> Store {
        Store {
            inner,
            prefix: prefix.trim_matches('/').to_string(),
            url: url.trim_end_matches('/').to_string(),
            uploads: None,
            ranged: true,
        }
    }

    /// For a backend that reads objects only whole: [`Store::digest`] streams them.
    pub fn without_ranged_reads(mut self) -> Store {
        self.ranged = false;
        self
    }

    /// With a way to list and abort incomplete multipart uploads.
    pub fn with_uploads(mut self, uploads: Arc<s3::Uploads>) -> Store {
        self.uploads = Some(uploads);
        self
    }

    /// The destination's URL (no credentials).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The URL of one key.
    pub fn url_of(&self, key: &str) -> String {
        format!("{}/{}", self.url, key.trim_start_matches('/'))
    }

    fn path(&self, key: &str) -> Result<ObjPath, StoreError> {
        let key = key.trim_matches('/');
        let full = if self.prefix.is_empty() {
            key.to_string()
        } else if key.is_empty() {
            self.prefix.clone()
        } else {
            format!("{}/{key}", self.prefix)
        };
        ObjPath::parse(&full)
            .map_err(|e| StoreError::BadInput(format!("`{full}` is not a valid object key: {e}")))
    }

    fn key_of(&self, p: &ObjPath) -> String {
        self.relative(p.as_ref())
    }

    /// A key of the backend, relative to the prefix.
    fn relative(&self, s: &str) -> String {
        if self.prefix.is_empty() {
            s.to_string()
        } else {
            s.strip_prefix(&self.prefix)
                .unwrap_or(s)
                .trim_start_matches('/')
                .to_string()
        }
    }

    fn fail(&self, op: &str, key: &str, source: object_store::Error) -> StoreError {
        let unsupported = matches!(
            source,
            object_store::Error::NotImplemented { .. } | object_store::Error::NotSupported { .. }
        ) || source.to_string().contains("NotImplemented");
        StoreError::Backend {
            op: op.into(),
            url: self.url_of(key),
            hint: hint(&source, &self.url),
            detail: source.to_string(),
            source_kind: if unsupported {
                BackendKind::Unsupported
            } else {
                BackendKind::Other
            },
        }
    }

    /// Proves the destination answers and the credentials work, before anything is made:
    /// one listing of the prefix.
    pub async fn check(&self) -> Result<(), StoreError> {
        let prefix = self.path("")?;
        let prefix = (!self.prefix.is_empty()).then_some(prefix);
        self.inner
            .list_with_delimiter(prefix.as_ref())
            .await
            .map(|_| ())
            .map_err(|e| self.fail("listing", "", e))
    }

    /// Stores everything `reader` yields under `key`; returns the bytes stored. Above one
    /// [`CHUNK`] the upload is multipart with at most [`PARTS`] parts in flight, so memory
    /// stays flat; on any failure the multipart upload is aborted and nothing is left at
    /// `key` (an object exists only once it is complete).
    pub async fn save<R: AsyncRead + Unpin>(
        &self,
        key: &str,
        mut reader: R,
    ) -> Result<u64, StoreError> {
        let path = self.path(key)?;
        let source = |e| StoreError::Source {
            url: self.url_of(key),
            source: e,
        };
        // The first chunk decides: a small object is one PUT.
        let mut first = Vec::with_capacity(64 << 10);
        (&mut reader)
            .take(CHUNK as u64)
            .read_to_end(&mut first)
            .await
            .map_err(source)?;
        if first.len() < CHUNK {
            let n = first.len() as u64;
            self.inner
                .put(&path, Bytes::from(first).into())
                .await
                .map_err(|e| self.fail("uploading", key, e))?;
            return Ok(n);
        }
        let upload = self
            .inner
            .put_multipart(&path)
            .await
            .map_err(|e| self.fail("starting the upload of", key, e))?;
        let mut w = WriteMultipart::new_with_chunk_size(upload, CHUNK);
        let mut total = first.len() as u64;
        w.put(Bytes::from(first));
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = match reader.read(&mut buf).await {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) => {
                    let _ = w.abort().await;
                    return Err(source(e));
                }
            };
            if let Err(e) = w.wait_for_capacity(PARTS).await {
                let _ = w.abort().await;
                return Err(self.fail("uploading", key, e));
            }
            w.write(&buf[..n]);
            total += n as u64;
        }
        // `finish` aborts the upload itself when a part or the completion fails.
        w.finish()
            .await
            .map_err(|e| self.fail("completing the upload of", key, e))?;
        Ok(total)
    }

    /// Stores `bytes` under `key` in one request.
    pub async fn save_bytes(&self, key: &str, bytes: Vec<u8>) -> Result<(), StoreError> {
        let path = self.path(key)?;
        self.inner
            .put(&path, Bytes::from(bytes).into())
            .await
            .map(|_| ())
            .map_err(|e| self.fail("uploading", key, e))
    }

    /// A stream of the object's bytes.
    pub async fn load(
        &self,
        key: &str,
    ) -> Result<impl AsyncRead + Send + Unpin + 'static, StoreError> {
        let path = self.path(key)?;
        let got = self
            .inner
            .get(&path)
            .await
            .map_err(|e| self.fail("reading", key, e))?;
        let url = self.url_of(key);
        let stream = got
            .into_stream()
            .map_err(move |e| std::io::Error::other(format!("reading {url}: {e}")));
        Ok(tokio_util::io::StreamReader::new(stream))
    }

    /// The whole object, and its version (for [`Condition::At`]); `None` when absent.
    pub async fn get_small(&self, key: &str) -> Result<Option<(Vec<u8>, Version)>, StoreError> {
        let path = self.path(key)?;
        let got = match self.inner.get(&path).await {
            Ok(g) => g,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(self.fail("reading", key, e)),
        };
        let version = UpdateVersion {
            e_tag: got.meta.e_tag.clone(),
            version: got.meta.version.clone(),
        };
        let bytes = got
            .bytes()
            .await
            .map_err(|e| self.fail("reading", key, e))?;
        Ok(Some((bytes.to_vec(), Version(version))))
    }

    /// Size of the object, `None` when absent.
    pub async fn size(&self, key: &str) -> Result<Option<u64>, StoreError> {
        let path = self.path(key)?;
        match self.inner.head(&path).await {
            Ok(m) => Ok(Some(m.size)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.fail("reading the size of", key, e)),
        }
    }

    /// Size and SHA-256 (hex) of the object, read back in full: in [`RANGE`]s, up to
    /// [`RANGES`] requests in flight and hashed in order (a single stream is as slow as one
    /// connection; several keep the server and the network busy while memory stays
    /// bounded). A backend without ranged reads is read as one stream.
    pub async fn digest(&self, key: &str) -> Result<(u64, String), StoreError> {
        use futures_util::StreamExt;
        use sha2::Digest;
        if !self.ranged {
            return self.digest_streamed(key).await;
        }
        let path = self.path(key)?;
        let size = self
            .inner
            .head(&path)
            .await
            .map_err(|e| self.fail("reading", key, e))?
            .size;
        // Each range is fetched by a task of its own, so that all of them progress while
        // one is hashed.
        let mut parts = futures_util::stream::iter((0..size).step_by(RANGE as usize))
            .map(|start| {
                let (inner, path) = (self.inner.clone(), path.clone());
                let range = start..(start + RANGE).min(size);
                tokio::spawn(async move { inner.get_range(&path, range).await })
            })
            .buffered(RANGES);
        let mut h = sha2::Sha256::new();
        let mut n = 0u64;
        while let Some(part) = parts.next().await {
            let bytes = part
                .map_err(|e| StoreError::Source {
                    url: self.url_of(key),
                    source: std::io::Error::other(e),
                })?
                .map_err(|e| self.fail("reading", key, e))?;
            n += bytes.len() as u64;
            h = tokio::task::spawn_blocking(move || {
                h.update(&bytes);
                h
            })
            .await
            .map_err(|e| StoreError::Source {
                url: self.url_of(key),
                source: std::io::Error::other(e),
            })?;
        }
        Ok((n, hex::encode(h.finalize())))
    }

    /// [`Store::digest`] as one stream.
    async fn digest_streamed(&self, key: &str) -> Result<(u64, String), StoreError> {
        use sha2::Digest;
        let mut r = self.load(key).await?;
        let mut h = sha2::Sha256::new();
        let mut buf = vec![0u8; 1 << 20];
        let mut n = 0u64;
        loop {
            let k = r.read(&mut buf).await.map_err(|e| StoreError::Source {
                url: self.url_of(key),
                source: e,
            })?;
            if k == 0 {
                break;
            }
            h.update(&buf[..k]);
            n += k as u64;
        }
        Ok((n, hex::encode(h.finalize())))
    }

    /// Every object whose key starts with `prefix` (a folder: `pre-deployment-X/`), sorted.
    pub async fn list(&self, prefix: &str) -> Result<Vec<Entry>, StoreError> {
        let dir = prefix.trim_end_matches('/');
        let p = self.path(dir)?;
        let p = (!p.as_ref().is_empty()).then_some(p);
        let mut out: Vec<Entry> = self
            .inner
            .list(p.as_ref())
            .map_ok(|m| Entry {
                key: self.key_of(&m.location),
                size: m.size,
                modified: m.last_modified,
            })
            .try_collect()
            .await
            .map_err(|e| self.fail("listing", prefix, e))?;
        out.retain(|e| e.key.starts_with(prefix));
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    /// The "folders" right under the prefix (`pre-deployment-*`), sorted.
    pub async fn folders(&self) -> Result<Vec<String>, StoreError> {
        let p = self.path("")?;
        let p = (!p.as_ref().is_empty()).then_some(p);
        let listed = self
            .inner
            .list_with_delimiter(p.as_ref())
            .await
            .map_err(|e| self.fail("listing", "", e))?;
        let mut out: Vec<String> = listed
            .common_prefixes
            .iter()
            .map(|p| self.key_of(p))
            .collect();
        out.sort();
        Ok(out)
    }

    /// Removes one object (absent is fine).
    pub async fn remove(&self, key: &str) -> Result<(), StoreError> {
        let path = self.path(key)?;
        match self.inner.delete(&path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.fail("deleting", key, e)),
        }
    }

    /// The incomplete multipart uploads whose key starts with `prefix` (relative to the
    /// destination's prefix). None on a backend without multipart uploads that outlive a
    /// process (a folder, memory).
    pub async fn incomplete_uploads(&self, prefix: &str) -> Result<Vec<Incomplete>, StoreError> {
        let Some(u) = &self.uploads else {
            return Ok(vec![]);
        };
        let full = if self.prefix.is_empty() {
            prefix.to_string()
        } else {
            format!("{}/{prefix}", self.prefix)
        };
        let listed = u
            .list(&full)
            .await
            .map_err(|e| self.fail("listing the incomplete uploads in", prefix, e))?;
        Ok(listed
            .into_iter()
            .filter(|p| p.key.starts_with(&full))
            .map(|p| Incomplete {
                key: self.relative(&p.key),
                initiated: p.initiated,
                pending: p,
            })
            .collect())
    }

    /// Aborts an incomplete upload (its parts are freed).
    pub async fn abort_upload(&self, i: &Incomplete) -> Result<(), StoreError> {
        let Some(u) = &self.uploads else {
            return Ok(());
        };
        u.abort(&i.pending)
            .await
            .map_err(|e| self.fail("aborting the incomplete upload of", &i.key, e))
    }

    /// Removes every object under `prefix/`.
    pub async fn remove_all(&self, prefix: &str) -> Result<(), StoreError> {
        let dir = format!("{}/", prefix.trim_end_matches('/'));
        for e in self.list(&dir).await? {
            self.remove(&e.key).await?;
        }
        Ok(())
    }

    /// Writes `key` only if `condition` holds: `Ok(false)` when another writer got there
    /// first (the key exists, or is no longer at the version read). A backend without
    /// conditional writes is an error that says so (never silently racing).
    pub async fn put_if(
        &self,
        key: &str,
        bytes: Vec<u8>,
        condition: Condition<'_>,
    ) -> Result<bool, StoreError> {
        let path = self.path(key)?;
        let opts = PutOptions {
            mode: condition.mode(),
            ..Default::default()
        };
        match self
            .inner
            .put_opts(&path, Bytes::from(bytes).into(), opts)
            .await
        {
            Ok(_) => Ok(true),
            Err(e) if condition.lost_to(&e) => Ok(false),
            Err(e) => Err(self.fail(condition.op(), key, e)),
        }
    }
}

/// When a [`Store::put_if`] may write.
#[derive(Clone, Copy, Debug)]
pub enum Condition<'a> {
    /// Only if the key does not exist (S3 `If-None-Match: *`).
    Absent,
    /// Only if the key is still at this version, read by [`Store::get_small`] (S3 `If-Match`).
    At(&'a Version),
}

impl Condition<'_> {
    fn mode(self) -> PutMode {
        match self {
            Condition::Absent => PutMode::Create,
            Condition::At(v) => PutMode::Update(v.0.clone()),
        }
    }

    /// What the write is called in an error.
    fn op(self) -> &'static str {
        match self {
            Condition::Absent => "creating (conditionally)",
            Condition::At(_) => "replacing (conditionally)",
        }
    }

    /// Whether the backend's refusal means the condition did not hold (another writer was
    /// first), not a failure.
    fn lost_to(self, e: &object_store::Error) -> bool {
        use object_store::Error::{AlreadyExists, NotFound, Precondition};
        match self {
            Condition::Absent => matches!(e, AlreadyExists { .. } | Precondition { .. }),
            Condition::At(_) => matches!(e, Precondition { .. } | NotFound { .. }),
        }
    }
}

/// What to do about a backend error, in words a user acts on. Never includes a secret: the
/// source error names the URL, and the key id only by its variable.
fn hint(e: &object_store::Error, url: &str) -> String {
    let text = format!("{e}");
    let has = |s: &str| text.contains(s);
    if matches!(
        e,
        object_store::Error::Unauthenticated { .. } | object_store::Error::PermissionDenied { .. }
    ) || has("SignatureDoesNotMatch")
        || has("InvalidAccessKeyId")
        || has("AccessDenied")
        || has("403 Forbidden")
    {
        return format!(
            "the destination refused the credentials: check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (and AWS_SESSION_TOKEN for temporary keys) and that they may read and write {url}"
        );
    }
    if has("NoSuchBucket") {
        return format!(
            "the bucket of {url} does not exist: create it (predeploy-backup never creates buckets) or fix the destination input"
        );
    }
    if has("error sending request")
        || has("Connection refused")
        || has("connection")
        || has("timed out")
        || has("dns")
    {
        return "the storage server could not be reached: check s3-endpoint (or AWS_ENDPOINT_URL), the network, and that the service is up".into();
    }
    if matches!(e, object_store::Error::NotImplemented { .. })
        || has("NotImplemented")
        || has("not implemented")
    {
        return "the storage server does not support this operation".into();
    }
    "the storage server answered with an error (details below)".into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_with_credentials_are_refused() {
        for bad in [
            "s3://AKIA:hunter2@bucket/p",
            "s3://user@bucket/p",
            "s3://bucket/p?access_key=x",
        ] {
            let e = Destination::parse(bad).unwrap_err();
            assert!(matches!(e, StoreError::BadInput(_)), "{bad}");
            assert!(!e.to_string().contains("hunter2"), "{e}");
        }
        assert_eq!(
            Destination::parse("s3://b/a/b/").unwrap(),
            Destination::S3 {
                bucket: "b".into(),
                prefix: "a/b".into()
            }
        );
        assert!(Destination::parse("s3://b/../x").is_err());
        assert!(Destination::parse("ftp://x").is_err());
        assert!(Destination::parse("host://h/x").is_err());
        assert_eq!(
            Destination::parse("host:///srv/b").unwrap(),
            Destination::Host {
                path: "/srv/b".into()
            }
        );
    }

    #[tokio::test]
    async fn save_load_list_remove_and_conditional_create() {
        let s = mem::open();
        // Several chunks: multipart.
        let big: Vec<u8> = (0..(2 * CHUNK + 123)).map(|i| (i % 251) as u8).collect();
        let n = s.save("pre-deployment-1/big.bin", &big[..]).await.unwrap();
        assert_eq!(n, big.len() as u64);
        s.save("pre-deployment-1/small", &b"abc"[..]).await.unwrap();
        s.save("pre-deployment-2/x", &b"x"[..]).await.unwrap();
        let (size, sha) = s.digest("pre-deployment-1/big.bin").await.unwrap();
        assert_eq!(size, big.len() as u64);
        assert_eq!(sha, crate::archive::hash::sha256_hex(&big));
        let mut back = vec![];
        s.load("pre-deployment-1/small")
            .await
            .unwrap()
            .read_to_end(&mut back)
            .await
            .unwrap();
        assert_eq!(back, b"abc");
        let keys: Vec<String> = s
            .list("pre-deployment-1/")
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.key)
            .collect();
        assert_eq!(keys, ["pre-deployment-1/big.bin", "pre-deployment-1/small"]);
        assert_eq!(
            s.folders().await.unwrap(),
            ["pre-deployment-1", "pre-deployment-2"]
        );
        s.remove_all("pre-deployment-1").await.unwrap();
        assert!(s.list("pre-deployment-1/").await.unwrap().is_empty());
        assert_eq!(s.size("pre-deployment-2/x").await.unwrap(), Some(1));

        assert!(s
            .put_if("lock", b"a".to_vec(), Condition::Absent)
            .await
            .unwrap());
        assert!(!s
            .put_if("lock", b"b".to_vec(), Condition::Absent)
            .await
            .unwrap());
        let (body, v) = s.get_small("lock").await.unwrap().unwrap();
        assert_eq!(body, b"a");
        assert!(s
            .put_if("lock", b"c".to_vec(), Condition::At(&v))
            .await
            .unwrap());
        assert!(!s
            .put_if("lock", b"d".to_vec(), Condition::At(&v))
            .await
            .unwrap());
        assert_eq!(s.get_small("lock").await.unwrap().unwrap().0, b"c");
        s.remove("lock").await.unwrap();
        assert!(!s
            .put_if("lock", b"e".to_vec(), Condition::At(&v))
            .await
            .unwrap());
    }

    #[tokio::test]
    async fn a_failing_source_leaves_no_object() {
        struct Failing(usize);
        impl AsyncRead for Failing {
            fn poll_read(
                mut self: std::pin::Pin<&mut Self>,
                _: &mut std::task::Context<'_>,
                buf: &mut tokio::io::ReadBuf<'_>,
            ) -> std::task::Poll<std::io::Result<()>> {
                if self.0 == 0 {
                    return std::task::Poll::Ready(Err(std::io::Error::other("boom")));
                }
                let n = buf.remaining().min(self.0);
                buf.put_slice(&vec![7u8; n]);
                self.0 -= n;
                std::task::Poll::Ready(Ok(()))
            }
        }
        let s = mem::open();
        let e = s.save("d/f", Failing(CHUNK * 2)).await.unwrap_err();
        assert!(matches!(e, StoreError::Source { .. }), "{e}");
        assert!(s.list("d/").await.unwrap().is_empty());
    }
}
