//! Download, verify, unpack, shared by the results-service path and the REST path
//! ([`crate::actions::rest`]). The zip is streamed to a private temporary file while it is
//! hashed, and checked against the recorded digest. Only then is it unpacked, and any entry
//! that would leave the target is refused.

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Component, Path, PathBuf};

use futures_util::StreamExt;
use sha2::{Digest as _, Sha256};
use tokio::io::AsyncWriteExt;
use url::Url;

use super::{
    azure_error, describe_url, is_retryable, req_error, ArtifactError, DownloadedArtifact, Retry,
};
use crate::actions::commands::Workflow;

/// A private temporary file, removed on drop.
struct TempFile(PathBuf);

impl TempFile {
    fn new(prefix: &str) -> io::Result<Self> {
        let path =
            std::env::temp_dir().join(format!("{prefix}-{}.zip", uuid::Uuid::new_v4().simple()));
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)?;
        Ok(TempFile(path))
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.0);
    }
}

/// `sha256:<hex>` (or bare hex) → lowercase hex; `None` for another algorithm or format.
pub(crate) fn parse_digest(d: &str) -> Option<String> {
    let d = d.trim();
    let hex = match d.split_once(':') {
        Some((alg, h)) if alg.trim().eq_ignore_ascii_case("sha256") => h.trim(),
        Some(_) => return None,
        None => d,
    };
    (hex.len() == 64 && hex.chars().all(|c| c.is_ascii_hexdigit()))
        .then(|| hex.to_ascii_lowercase())
}

/// Downloads `url` (no credentials) to a temporary file while hashing it, compares the hash
/// with `expected` (`sha256:<hex>`) when there is one, then unpacks it safely into `dest`.
/// `what` names the artifact in messages ("the artifact `x` (id 9) of run 123 of o/r").
pub(crate) async fn fetch_verify_unpack(
    http: &reqwest::Client,
    retry: Retry,
    wf: &Workflow,
    url: &Url,
    expected: Option<&str>,
    what: &str,
    dest: &Path,
) -> Result<DownloadedArtifact, ArtifactError> {
    let expected_hex = match expected.map(str::trim).filter(|d| !d.is_empty()) {
        None => {
            wf.log(&format!(
                "{what} has no recorded digest (uploaded by an older client): its zip is not \
                 checked against one; the manifest's checksums are still checked before restore"
            ));
            None
        }
        Some(d) => match parse_digest(d) {
            Some(h) => Some(h),
            None => {
                wf.warning(
                    "Artifact digest",
                    None,
                    &format!(
                        "{what} has a digest in a form this version cannot check ({}); the \
                         manifest's checksums are still checked before restore",
                        d.escape_debug()
                    ),
                );
                None
            }
        },
    };
    let tmp = TempFile::new("predeploy-artifact").map_err(|e| {
        ArtifactError::Service(format!(
            "cannot create a temporary file in {}: {e}",
            std::env::temp_dir().display()
        ))
    })?;
    let (size, digest) = download_to(http, retry, wf, url, &tmp.0, what).await?;
    if let Some(exp) = &expected_hex {
        if *exp != digest {
            return Err(ArtifactError::Digest(format!(
                "refusing {what}: the downloaded zip ({size} bytes) has SHA-256 {digest}, but \
                 sha256:{exp} was recorded when it was uploaded. The download is corrupt or the \
                 artifact was changed; nothing was unpacked"
            )));
        }
    }
    let zip_path = tmp.0.clone();
    let dest_owned = dest.to_path_buf();
    let what_owned = what.to_string();
    let files =
        tokio::task::spawn_blocking(move || unpack_zip(&zip_path, &dest_owned, &what_owned))
            .await
            .map_err(|e| ArtifactError::Service(format!("unpacking {what} stopped: {e}")))??;
    drop(tmp);
    Ok(DownloadedArtifact {
        dir: dest.to_path_buf(),
        digest,
        files,
    })
}

async fn download_to(
    http: &reqwest::Client,
    retry: Retry,
    wf: &Workflow,
    url: &Url,
    path: &Path,
    what: &str,
) -> Result<(u64, String), ArtifactError> {
    let io_err = |e: io::Error| {
        ArtifactError::Service(format!("cannot write {what} to {}: {e}", path.display()))
    };
    let mut last = String::new();
    for attempt in 0..retry.attempts {
        retry.wait(wf, attempt, &last).await;
        let resp = match http.get(url.clone()).send().await {
            Ok(r) => r,
            Err(e) => {
                last = format!(
                    "downloading {what} from {} failed: {}",
                    describe_url(url),
                    req_error(e)
                );
                continue;
            }
        };
        let status = resp.status();
        if !status.is_success() {
            let text = resp.text().await.unwrap_or_default();
            let detail = azure_error(wf, &text);
            if is_retryable(status) {
                last = format!("the artifact storage answered {status} for {what}{detail}");
                continue;
            }
            if status == reqwest::StatusCode::NOT_FOUND || status == reqwest::StatusCode::GONE {
                return Err(ArtifactError::NotFound(format!(
                    "the storage of {what} answered {status}{detail}: the artifact has expired \
                     or was deleted"
                )));
            }
            return Err(ArtifactError::Service(format!(
                "the artifact storage ({}) refused the download of {what} with {status}{detail}; \
                 the signed URL is valid only for a short time: try again",
                describe_url(url)
            )));
        }
        let mut file = tokio::fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(path)
            .await
            .map_err(io_err)?;
        let mut hasher = Sha256::new();
        let mut size = 0u64;
        let mut stream = resp.bytes_stream();
        let mut cut = None;
        while let Some(chunk) = stream.next().await {
            match chunk {
                Ok(c) => {
                    hasher.update(&c);
                    size += c.len() as u64;
                    file.write_all(&c).await.map_err(io_err)?;
                }
                Err(e) => {
                    cut = Some(req_error(e));
                    break;
                }
            }
        }
        if let Some(e) = cut {
            last = format!("the download of {what} was cut short after {size} bytes: {e}");
            continue;
        }
        file.flush().await.map_err(io_err)?;
        file.sync_all().await.map_err(io_err)?;
        return Ok((size, hex::encode(hasher.finalize())));
    }
    Err(ArtifactError::Service(format!(
        "downloading {what} failed {} times; last: {last}",
        retry.attempts
    )))
}

/// A zip entry name as a relative path that stays inside its target, or why not.
pub(super) fn safe_relative(name: &str) -> Result<PathBuf, &'static str> {
    if name.is_empty() {
        return Err("is empty");
    }
    if name.contains('\0') {
        return Err("contains a NUL byte");
    }
    if name.contains('\\') {
        return Err("contains a backslash");
    }
    if name.starts_with('/') {
        return Err("is absolute");
    }
    let b = name.as_bytes();
    if b.len() >= 2 && b[1] == b':' && b[0].is_ascii_alphabetic() {
        return Err("starts with a drive letter");
    }
    let mut out = PathBuf::new();
    for part in name.split('/') {
        match part {
            "" | "." => {}
            ".." => return Err("goes up with `..`"),
            p => out.push(p),
        }
    }
    if out.as_os_str().is_empty() {
        return Err("names no file");
    }
    debug_assert!(out.components().all(|c| matches!(c, Component::Normal(_))));
    Ok(out)
}

/// Creates `rel`'s directories under `dest`, refusing to go through a symbolic link or a file.
fn ensure_dirs(dest: &Path, rel: &Path) -> Result<(), String> {
    let mut cur = dest.to_path_buf();
    for c in rel.components() {
        cur.push(c);
        match fs::symlink_metadata(&cur) {
            Ok(m) if m.file_type().is_symlink() => {
                return Err(format!("`{}` is a symbolic link", cur.display()))
            }
            Ok(m) if m.is_dir() => {}
            Ok(_) => return Err(format!("`{}` exists and is not a directory", cur.display())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                fs::create_dir(&cur).map_err(|e| format!("cannot create {}: {e}", cur.display()))?
            }
            Err(e) => return Err(format!("cannot inspect {}: {e}", cur.display())),
        }
    }
    Ok(())
}

/// Unpacks a zip into `dest`. Every entry is checked before any byte is written: absolute
/// paths, `..`, backslashes, links, devices, encrypted and duplicate entries are refused.
pub(crate) fn unpack_zip(
    zip_path: &Path,
    dest: &Path,
    what: &str,
) -> Result<Vec<PathBuf>, ArtifactError> {
    let refuse =
        |m: String| ArtifactError::Unsafe(format!("refusing {what}: {m}; nothing was unpacked"));
    let file = File::open(zip_path)
        .map_err(|e| ArtifactError::Service(format!("cannot read the downloaded zip: {e}")))?;
    let mut zip = zip::ZipArchive::new(BufReader::new(file))
        .map_err(|e| refuse(format!("it is not a valid zip archive ({e})")))?;

    // 1. Check every entry.
    let mut plan: Vec<(usize, PathBuf, bool)> = Vec::with_capacity(zip.len());
    let mut seen = HashSet::new();
    for i in 0..zip.len() {
        let entry = zip
            .by_index_raw(i)
            .map_err(|e| refuse(format!("entry {i} cannot be read ({e})")))?;
        let name = String::from_utf8_lossy(entry.name_raw()).into_owned();
        let shown = name.escape_debug().to_string();
        let rel = safe_relative(&name).map_err(|why| refuse(format!("entry `{shown}` {why}")))?;
        if entry.encrypted() {
            return Err(refuse(format!("entry `{shown}` is encrypted")));
        }
        if entry.is_symlink() {
            return Err(refuse(format!("entry `{shown}` is a symbolic link")));
        }
        if let Some(mode) = entry.unix_mode() {
            let kind = mode & 0o170000;
            if kind != 0 && kind != 0o100000 && kind != 0o040000 {
                return Err(refuse(format!(
                    "entry `{shown}` is a device, FIFO or socket"
                )));
            }
        }
        let is_dir = entry.is_dir();
        if !seen.insert(rel.clone()) {
            return Err(refuse(format!("entry `{shown}` appears twice")));
        }
        plan.push((i, rel, is_dir));
    }
    let files_set: HashSet<&Path> = plan
        .iter()
        .filter(|p| !p.2)
        .map(|p| p.1.as_path())
        .collect();
    for (_, rel, _) in &plan {
        if let Some(a) = rel.ancestors().skip(1).find(|a| files_set.contains(a)) {
            return Err(refuse(format!(
                "`{}` is both a file and a directory",
                a.display()
            )));
        }
    }

    // 2. Write.
    fs::create_dir_all(dest)
        .map_err(|e| ArtifactError::Service(format!("cannot create {}: {e}", dest.display())))?;
    let unsafe_at = |m: String| ArtifactError::Unsafe(format!("refusing {what}: {m}"));
    let mut files = Vec::new();
    for (i, rel, is_dir) in plan {
        let dir_part = if is_dir {
            Some(rel.as_path())
        } else {
            rel.parent()
        };
        if let Some(d) = dir_part {
            ensure_dirs(dest, d).map_err(unsafe_at)?;
        }
        if is_dir {
            continue;
        }
        let target = dest.join(&rel);
        match fs::symlink_metadata(&target) {
            Ok(m) if m.file_type().is_symlink() || m.is_dir() => {
                return Err(unsafe_at(format!(
                    "`{}` already exists and is a link or a directory",
                    target.display()
                )))
            }
            _ => {}
        }
        let file_name = rel.file_name().map(|f| f.to_string_lossy().into_owned());
        let tmp = target.with_file_name(format!(
            ".{}.partial-{}",
            file_name.unwrap_or_default(),
            uuid::Uuid::new_v4().simple()
        ));
        let mut write = || -> Result<(), ArtifactError> {
            let mut out = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o644)
                .open(&tmp)
                .map_err(|e| {
                    ArtifactError::Service(format!("cannot write {}: {e}", tmp.display()))
                })?;
            let mut entry = zip.by_index(i).map_err(|e| {
                unsafe_at(format!("entry `{}` cannot be read ({e})", rel.display()))
            })?;
            io::copy(&mut entry, &mut out).map_err(|e| {
                if e.kind() == io::ErrorKind::InvalidData
                    || e.kind() == io::ErrorKind::UnexpectedEof
                {
                    unsafe_at(format!("entry `{}` is corrupt ({e})", rel.display()))
                } else {
                    ArtifactError::Service(format!("cannot write {}: {e}", tmp.display()))
                }
            })?;
            out.sync_all().map_err(|e| {
                ArtifactError::Service(format!("cannot write {}: {e}", tmp.display()))
            })?;
            Ok(())
        };
        if let Err(e) = write() {
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
        fs::rename(&tmp, &target).map_err(|e| {
            let _ = fs::remove_file(&tmp);
            ArtifactError::Service(format!("cannot write {}: {e}", target.display()))
        })?;
        files.push(target);
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_and_digests() {
        assert!(safe_relative("a/b.txt").is_ok());
        for bad in ["/etc/x", "../x", "a/../../x", "C:/x", "a\\b", ""] {
            assert!(safe_relative(bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            parse_digest("sha256:ABCDEF0123456789abcdef0123456789abcdef0123456789abcdef0123456789")
                .as_deref(),
            Some("abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789")
        );
        assert_eq!(parse_digest("md5:abc"), None);
    }
}
