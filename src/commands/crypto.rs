//! The age inputs of every mode: `encrypt-recipients(-file)` for `backup`, `decrypt-identity`
//! (or env `PREDEPLOY_AGE_IDENTITY`) for `rollback`, `verify` and `verify-restore`, and the
//! checks that refuse a run before anything is touched (exit 2) when the identity and the
//! backup do not go together.

use std::path::Path;
use std::sync::Arc;

use anyhow::Result;

use super::Context;
use crate::actions::commands::Workflow;
use crate::archive::crypt::{self, Access, Identity, Recipients};
use crate::archive::verify::FileReport;
use crate::cli::{Decrypt, Encrypt};
use crate::error::usage;
use crate::manifest::Manifest;

/// The environment variable read when `decrypt-identity` is not given.
pub const IDENTITY_ENV: &str = "PREDEPLOY_AGE_IDENTITY";

/// Where the identity came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Given {
    None,
    /// The `decrypt-identity` input: the user asked for it in this step.
    Input,
    /// `PREDEPLOY_AGE_IDENTITY`: ambient, maybe set for the whole job.
    Env,
}

/// The recipients of `encrypt-recipients` and `encrypt-recipients-file`, if any.
pub fn recipients(ctx: &Context, e: &Encrypt) -> Result<Option<Arc<Recipients>>> {
    let mut text = e.encrypt_recipients.clone().unwrap_or_default();
    if let Some(p) = &e.encrypt_recipients_file {
        let path = ctx.resolve(p);
        let body = std::fs::read_to_string(&path).map_err(|err| {
            usage(format!(
                "encrypt-recipients-file {} cannot be read ({err}): give the path of a file of age public keys (age1…) or ssh-ed25519 public keys, one a line",
                path.display()
            ))
        })?;
        text.push('\n');
        text.push_str(&body);
    }
    if text.trim().is_empty() {
        if e.encrypt_recipients.is_some() || e.encrypt_recipients_file.is_some() {
            return Err(usage(
                "encrypt-recipients (or its file) is set but names no key: give age public keys (age1…) or ssh-ed25519 public keys",
            ));
        }
        return Ok(None);
    }
    let r = Recipients::parse(&text).map_err(usage)?;
    Ok(Some(Arc::new(r)))
}

/// Reads, masks and parses the identity: where it came from, and the identity itself, which
/// the caller hands to everything that opens a `….age` file of this run.
pub fn identity(d: &Decrypt, wf: &Workflow) -> Result<(Given, Option<Arc<Identity>>)> {
    let (value, given) = match d
        .decrypt_identity
        .as_deref()
        .filter(|v| !v.trim().is_empty())
    {
        Some(v) => (v.to_string(), Given::Input),
        None => match std::env::var(IDENTITY_ENV)
            .ok()
            .filter(|v| !v.trim().is_empty())
        {
            Some(v) => (v, Given::Env),
            None => return Ok((Given::None, None)),
        },
    };
    mask_all(wf, &value);
    let what = match given {
        Given::Input => "decrypt-identity",
        _ => IDENTITY_ENV,
    };
    let text = if looks_like_a_key(&value) {
        value
    } else {
        // A path (CLI use: `--decrypt-identity key.txt`).
        let body = std::fs::read_to_string(value.trim()).map_err(|_| {
            usage(format!(
                "{what} is neither an age identity (AGE-SECRET-KEY-1…) nor the path of a readable identity file"
            ))
        })?;
        mask_all(wf, &body);
        body
    };
    let id = Identity::parse(&text).map_err(|e| usage(e.replace("decrypt-identity", what)))?;
    Ok((given, Some(Arc::new(id))))
}

fn looks_like_a_key(v: &str) -> bool {
    v.contains("AGE-SECRET-KEY-") || v.contains("-----BEGIN") || v.contains('\n')
}

/// Masks the whole value and each line of it (Actions masks line by line).
fn mask_all(wf: &Workflow, v: &str) {
    wf.mask(v);
    for line in v.lines() {
        wf.mask(line);
    }
}

/// What a rollback of `m` encrypts its safety backup to: nothing when the backup is in clear
/// text; else the backup's own age recipients and the identity's public key, so that the
/// safety backup (production data, stored where the backup came from, a bucket say) is no
/// less protected than the backup and opens with the identity that restored it. An ssh
/// recipient is recorded by its fingerprint only, so it is kept only when it is the
/// identity's own key.
pub fn safety_recipients(
    m: &Manifest,
    identity: Option<&Identity>,
) -> Result<Option<Arc<Recipients>>> {
    let files = m.files();
    if files.iter().all(|f| f.encrypted.is_none()) {
        return Ok(None);
    }
    let mut keys: Vec<String> = files
        .iter()
        .flat_map(|f| f.recipients.iter())
        .filter(|r| r.starts_with("age1") && Recipients::parse(r).is_ok())
        .cloned()
        .collect();
    if let Some(id) = identity {
        keys.extend(id.recipients.iter().cloned());
    }
    let r = Recipients::parse(&keys.join("\n")).map_err(|_| {
        usage(
            "the backup is encrypted but no public key to encrypt the safety backup to is known (the manifest records none and the identity shows none): pass an age identity (AGE-SECRET-KEY-1…) or an unprotected ssh-ed25519 key in decrypt-identity; nothing was changed",
        )
    })?;
    Ok(Some(Arc::new(r)))
}

/// Who `files` are encrypted to, for messages.
fn recipients_of(m: &Manifest) -> String {
    let mut all: Vec<&str> = vec![];
    for f in m.files() {
        for r in &f.recipients {
            if !all.contains(&r.as_str()) {
                all.push(r);
            }
        }
    }
    if all.is_empty() {
        "an age key (the manifest does not say which)".into()
    } else {
        all.join(", ")
    }
}

/// Before a rollback touches anything: the manifest's `encrypted` agrees with the file
/// names, an encrypted backup has an identity that opens every file, and an identity given
/// on purpose is not given for a backup in clear text. Every refusal is exit 2. Without
/// `need_key` (`verify` of a stored backup), no identity at all is fine: the files' sizes
/// and SHA-256 are then checked, not their content.
pub fn preflight_manifest(
    m: &Manifest,
    dir: &Path,
    source: &str,
    given: Given,
    identity: Option<&Identity>,
    need_key: bool,
    wf: &Workflow,
) -> Result<()> {
    for f in m.files() {
        let named = crypt::is_sealed(Path::new(&f.path));
        let recorded = f.encrypted.is_some();
        if f.encrypted.as_deref().is_some_and(|e| e != crypt::SCHEME) {
            return Err(usage(format!(
                "the manifest of {source} says {} is encrypted with `{}`, which this version cannot decrypt (only age): use a newer predeploy-backup",
                f.path,
                f.encrypted.as_deref().unwrap_or_default()
            )));
        }
        if named != recorded {
            return Err(usage(format!(
                "the manifest of {source} is inconsistent: {} {} but the manifest says it is {}: refusing to use it, nothing was changed",
                f.path,
                if named { "is named as an age file" } else { "is not named as an age file (.age)" },
                if recorded { "encrypted" } else { "not encrypted" }
            )));
        }
    }
    let encrypted: Vec<_> = m
        .files()
        .into_iter()
        .filter(|f| f.encrypted.is_some())
        .collect();
    let paths: Vec<_> = encrypted.iter().map(|f| dir.join(&f.path)).collect();
    preflight(
        &paths,
        &format!(
            "this backup ({source}) is encrypted to {}",
            recipients_of(m)
        ),
        source,
        given,
        identity,
        need_key,
        wf,
    )
}

/// [`preflight_manifest`] for files named on their own (`verify`): `paths` are the
/// encrypted ones among them; without `need_key`, no identity at all is fine.
pub fn preflight(
    paths: &[std::path::PathBuf],
    encrypted_to: &str,
    source: &str,
    given: Given,
    identity: Option<&Identity>,
    need_key: bool,
    wf: &Workflow,
) -> Result<()> {
    if paths.is_empty() {
        match given {
            Given::Input => {
                return Err(usage(format!(
                    "decrypt-identity was given but {source} is not encrypted: remove decrypt-identity (an identity is only needed for backups whose files end in .age); nothing was changed"
                )))
            }
            Given::Env => wf.log(&format!(
                "{IDENTITY_ENV} is set but {source} is not encrypted: the identity is not used"
            )),
            Given::None => {}
        }
        return Ok(());
    }
    let Some(id) = identity else {
        if !need_key {
            return Ok(());
        }
        return Err(usage(format!(
            "{encrypted_to}; pass the matching identity in decrypt-identity (or env {IDENTITY_ENV}): nothing was changed"
        )));
    };
    for p in paths {
        match crypt::check_access(p, id) {
            Ok(()) => {}
            Err(Access::NoMatchingKey) => {
                let mine = if id.public.is_empty() {
                    String::new()
                } else {
                    format!(" (its public key is {})", id.public.join(", "))
                };
                return Err(usage(format!(
                    "{encrypted_to}, and the identity given does not open {}{mine}; pass the matching identity in decrypt-identity (or env {IDENTITY_ENV}): nothing was changed",
                    p.display()
                )));
            }
            // A damaged or missing file is the checksum checks' to report (exit 1).
            Err(Access::Damaged(_) | Access::Io(_)) => {}
        }
    }
    Ok(())
}

/// For each encrypted file that `dir`'s manifest records: its size and SHA-256 must be the
/// recorded ones (the `sha256` check fails otherwise), and the recorded recipients are kept.
/// Files in clear text, and folders without a manifest, are left as they are.
pub fn against_manifest(
    dir: &Path,
    db: Option<FileReport>,
    volumes: Vec<FileReport>,
) -> (Option<FileReport>, Vec<FileReport>) {
    let path = dir.join(crate::manifest::FILE_NAME);
    let Ok(m) = Manifest::load(&path) else {
        return (db, volumes);
    };
    let check = |mut r: FileReport| {
        if r.encrypted.is_none() {
            return r;
        }
        let Some(name) = r.path.file_name().map(|n| n.to_string_lossy().to_string()) else {
            return r;
        };
        let Some(rec) = m.files().into_iter().find(|f| f.path == name) else {
            return r;
        };
        if let Some(rs) = r.encrypted.as_mut().filter(|rs| rs.is_empty()) {
            rs.clone_from(&rec.recipients);
        }
        let shown = r.path.display().to_string();
        r.expect_recorded(rec.size, &rec.sha256, |size, actual| {
            format!(
                "{shown} is {size} bytes with SHA-256 {actual}, but {} records {} bytes with SHA-256 {}: the encrypted file was altered since the backup; take a new backup",
                path.display(),
                rec.size,
                rec.sha256
            )
        });
        r
    };
    (db.map(&check), volumes.into_iter().map(&check).collect())
}
