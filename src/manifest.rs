//! `manifest.yml`, the full record of one backup, and `.last-deployment-backup`, the seed's
//! pointer to the last good one.
//!
//! The manifest is what rollback trusts: every file's path (relative to the backup folder),
//! size and SHA-256, what was checked, the database's per-table row counts and versions, each
//! volume's entry count and bytes, the git revision and the Actions run. Its schema is
//! versioned so that a newer tool can still read an older backup and an older tool refuses a
//! newer one instead of misreading it. No secret is ever stored in it.
//!
//! Both files are written to a temporary name and renamed into place, so a reader never sees
//! half of one.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// The schema this tool writes; it reads this and every older one.
pub const SCHEMA_VERSION: u32 = 1;
/// File name of the manifest inside a backup folder.
pub const FILE_NAME: &str = "manifest.yml";
/// The pointer file at the workspace root.
pub const POINTER_FILE: &str = ".last-deployment-backup";
/// Backup folders are `pre-deployment-<UTC YYYYMMDD_HHMMSS>`.
pub const DIR_PREFIX: &str = "pre-deployment-";
/// The `tool.name` that marks a manifest as ours (retention deletes only such folders).
pub const TOOL_NAME: &str = "predeploy-backup";

#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// The I/O error is the source, printed once by `{:#}` after what to do.
    #[error("cannot read {path}{}", read_hint(source))]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a predeploy-backup manifest ({detail}); point `manifest` at the manifest.yml inside a pre-deployment-* folder")]
    Parse { path: PathBuf, detail: String },
    #[error("{path} has schema version {found}, newer than this tool's {SCHEMA_VERSION}: use a newer predeploy-backup to restore it")]
    TooNew { path: PathBuf, found: u32 },
}

fn read_hint(e: &std::io::Error) -> &'static str {
    match e.kind() {
        std::io::ErrorKind::NotFound => {
            " (it does not exist: check the path, or run a backup first)"
        }
        std::io::ErrorKind::PermissionDenied => " (not readable by this user)",
        _ => "",
    }
}

impl crate::error::Classify for ManifestError {
    fn exit_kind(&self) -> crate::error::ExitKind {
        // PRODUCT.md: a manifest that is missing, not ours or of a newer schema is bad input.
        crate::error::ExitKind::Usage
    }
}

/// Who made a backup's files (the manifest's `mode`). The names on disk are the
/// lower-case variant names; a manifest with another value is not one this tool wrote.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Origin {
    /// The `backup` mode.
    Backup,
    /// The `verify` mode, recording files another step made.
    Verify,
    /// The backup `rollback` takes of the current state before it restores (never a
    /// rollback target by default, never counted as the last good backup).
    Safety,
}

/// What a [`VolumeRecord`]'s archive holds (its `kind`).
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum SourceKind {
    /// A named Docker volume (`name` is the volume).
    Volume,
    /// A folder of the host (`name` is its path).
    Path,
    /// An archive `verify` was given by file only (`name` is its file name).
    File,
}

impl SourceKind {
    /// The name written in the manifest.
    pub fn as_str(self) -> &'static str {
        match self {
            SourceKind::Volume => "volume",
            SourceKind::Path => "path",
            SourceKind::File => "file",
        }
    }
}

impl std::fmt::Display for SourceKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The full record of one backup.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Manifest {
    pub schema_version: u32,
    pub tool: Tool,
    /// Who made the files: `backup`, `verify`, or `safety` (a rollback's own backup first).
    pub mode: Origin,
    /// True only when every file passed every check.
    pub verified: bool,
    pub created_at: DateTime<Utc>,
    /// `YYYYMMDD_HHMMSS`, UTC, as in the folder name.
    pub timestamp: String,
    /// The backup folder, relative to the workspace when it is inside it.
    pub backup_dir: String,
    pub git: Git,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run: Option<Run>,
    /// The backup's folder in its durable destination (`s3://bucket/prefix/pre-deployment-…`),
    /// never with credentials; absent when it lives only in `backup_dir`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database: Option<DatabaseRecord>,
    #[serde(default)]
    pub volumes: Vec<VolumeRecord>,
    /// `verify-restore`: the dump was loaded into a throwaway database and compared.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore_check: Option<RestoreCheck>,
    /// Seconds spent per phase.
    #[serde(default)]
    pub timings: BTreeMap<String, f64>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Tool {
    pub name: String,
    pub version: String,
}

impl Default for Tool {
    fn default() -> Self {
        Tool {
            name: TOOL_NAME.into(),
            version: env!("CARGO_PKG_VERSION").into(),
        }
    }
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Git {
    pub commit: Option<String>,
    pub branch: Option<String>,
}

/// The Actions run that made the backup.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Run {
    pub repository: Option<String>,
    pub run_id: Option<String>,
    pub run_attempt: Option<String>,
    pub workflow: Option<String>,
    pub job: Option<String>,
    pub url: Option<String>,
}

/// One file of the backup.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct FileRecord {
    /// Relative to the backup folder.
    pub path: String,
    pub size: u64,
    pub sha256: String,
    /// The checks it passed (`exists`, `gzip`, `sql-complete`, `tar`, …).
    pub checks: Vec<String>,
    /// `gzip`, `zstd` or `none` (absent in older manifests: gzip).
    #[serde(default)]
    pub compression: crate::archive::codec::Codec,
    /// The level it was written at (absent for files `verify` recorded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compression_level: Option<u32>,
    /// `age` when the file is encrypted (its name then ends in `.age`); absent: clear text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encrypted: Option<String>,
    /// Who can decrypt it: age public keys (`age1…`) and ssh keys' fingerprints
    /// (`ssh-ed25519 SHA256:…`). Never an identity.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub recipients: Vec<String>,
}

/// The database dump.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct DatabaseRecord {
    pub file: FileRecord,
    /// Database name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Container the dump ran in (rollback restores there by default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compose_project: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compose_service: Option<String>,
    /// A `database-url` with its password removed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dump_tool_version: Option<String>,
    /// Rows per table (`schema.table`), counted from the dump's COPY blocks.
    #[serde(default)]
    pub tables: BTreeMap<String, u64>,
}

/// One volume (or host path) archive.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct VolumeRecord {
    pub file: FileRecord,
    /// Docker volume name, or host path.
    pub name: String,
    /// What was archived: `volume`, `path` or `file`.
    pub kind: SourceKind,
    pub entries: u64,
    pub total_bytes: u64,
}

/// The result of `verify-restore`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct RestoreCheck {
    pub passed: bool,
    /// Throwaway database it was restored into (dropped afterwards).
    pub database: String,
    /// `schema.table` → (rows in the dump, rows after restore).
    pub tables: BTreeMap<String, (u64, u64)>,
}

impl Manifest {
    /// A fresh manifest for a backup made now.
    pub fn new(mode: Origin, created_at: DateTime<Utc>, backup_dir: String, git: Git) -> Self {
        Manifest {
            schema_version: SCHEMA_VERSION,
            tool: Tool::default(),
            mode,
            verified: false,
            created_at,
            timestamp: timestamp(created_at),
            backup_dir,
            git,
            run: None,
            destination: None,
            database: None,
            volumes: vec![],
            restore_check: None,
            timings: BTreeMap::new(),
        }
    }

    /// Reads and checks a manifest.
    pub fn load(path: &Path) -> Result<Manifest, ManifestError> {
        let text = fs::read_to_string(path).map_err(|source| ManifestError::Read {
            path: path.into(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Parses manifest text (`path` is for messages).
    pub fn parse(text: &str, path: &Path) -> Result<Manifest, ManifestError> {
        #[derive(Deserialize)]
        struct Head {
            schema_version: u32,
            tool: Tool,
        }
        let head: Head = serde_saphyr::from_str(text).map_err(|e| ManifestError::Parse {
            path: path.into(),
            detail: first_line(&e.to_string()),
        })?;
        if head.tool.name != TOOL_NAME {
            return Err(ManifestError::Parse {
                path: path.into(),
                detail: format!("written by `{}`", head.tool.name),
            });
        }
        if head.schema_version > SCHEMA_VERSION {
            return Err(ManifestError::TooNew {
                path: path.into(),
                found: head.schema_version,
            });
        }
        serde_saphyr::from_str(text).map_err(|e| ManifestError::Parse {
            path: path.into(),
            detail: first_line(&e.to_string()),
        })
    }

    /// YAML text.
    pub fn to_yaml(&self) -> String {
        let body = serde_saphyr::to_string(self).expect("manifest serializes");
        format!("# predeploy-backup manifest: the record rollback trusts. Do not edit.\n{body}")
    }

    /// Writes `manifest.yml` into `dir` atomically; returns its path.
    pub fn write(&self, dir: &Path) -> std::io::Result<PathBuf> {
        let path = dir.join(FILE_NAME);
        write_atomic(&path, self.to_yaml().as_bytes())?;
        Ok(path)
    }

    /// All files of the backup, database first.
    pub fn files(&self) -> Vec<&FileRecord> {
        self.database
            .iter()
            .map(|d| &d.file)
            .chain(self.volumes.iter().map(|v| &v.file))
            .collect()
    }
}

fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or("").to_string()
}

/// `YYYYMMDD_HHMMSS` in UTC.
pub fn timestamp(t: DateTime<Utc>) -> String {
    t.format("%Y%m%d_%H%M%S").to_string()
}

/// Parses a `pre-deployment-YYYYMMDD_HHMMSS` folder name.
pub fn parse_dir_timestamp(name: &str) -> Option<DateTime<Utc>> {
    let ts = name.strip_prefix(DIR_PREFIX)?;
    chrono::NaiveDateTime::parse_from_str(ts, "%Y%m%d_%H%M%S")
        .ok()
        .map(|n| n.and_utc())
}

/// Writes `bytes` to `path` through a temporary file in the same folder, fsynced, then
/// renamed: readers see the old file or the new one, never half of one.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    {
        let mut f = fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    fs::rename(&tmp, path).inspect_err(|_| {
        let _ = fs::remove_file(&tmp);
    })?;
    if let Ok(d) = fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// `.last-deployment-backup`: the seed's keys, one `KEY='value'` a line, so `source` works.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Pointer {
    pub deployment_timestamp: String,
    pub backup_dir: String,
    pub db_backup: String,
    pub minio_backup: String,
    pub git_commit: String,
    pub git_branch: String,
    pub manifest: String,
}

impl Pointer {
    const KEYS: [&'static str; 7] = [
        "DEPLOYMENT_TIMESTAMP",
        "BACKUP_DIR",
        "DB_BACKUP",
        "MINIO_BACKUP",
        "GIT_COMMIT",
        "GIT_BRANCH",
        "MANIFEST",
    ];

    fn values(&self) -> [&String; 7] {
        [
            &self.deployment_timestamp,
            &self.backup_dir,
            &self.db_backup,
            &self.minio_backup,
            &self.git_commit,
            &self.git_branch,
            &self.manifest,
        ]
    }

    /// The file's text.
    pub fn render(&self) -> String {
        let mut s = String::from(
            "# Written by predeploy-backup; `source` it. Points at the last verified backup.\n",
        );
        for (k, v) in Self::KEYS.iter().zip(self.values()) {
            s.push_str(&format!("{k}={}\n", shell_quote(v)));
        }
        s
    }

    /// Writes it atomically at the workspace root.
    pub fn write(&self, workspace: &Path) -> std::io::Result<PathBuf> {
        let path = workspace.join(POINTER_FILE);
        write_atomic(&path, self.render().as_bytes())?;
        Ok(path)
    }

    /// Reads it back (`None` if there is none).
    pub fn read(workspace: &Path) -> std::io::Result<Option<Pointer>> {
        let path = workspace.join(POINTER_FILE);
        let text = match fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let mut p = Pointer::default();
        for line in text.lines() {
            let Some((k, v)) = line.split_once('=') else {
                continue;
            };
            let v = shell_unquote(v.trim());
            match k.trim() {
                "DEPLOYMENT_TIMESTAMP" => p.deployment_timestamp = v,
                "BACKUP_DIR" => p.backup_dir = v,
                "DB_BACKUP" => p.db_backup = v,
                "MINIO_BACKUP" => p.minio_backup = v,
                "GIT_COMMIT" => p.git_commit = v,
                "GIT_BRANCH" => p.git_branch = v,
                "MANIFEST" => p.manifest = v,
                _ => {}
            }
        }
        Ok(Some(p))
    }
}

/// POSIX single-quoting: `it's` → `'it'\''s'`.
pub fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// The inverse of [`shell_quote`] (and plain unquoted words).
fn shell_unquote(s: &str) -> String {
    let mut out = String::new();
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                for c in chars.by_ref() {
                    if c == '\'' {
                        break;
                    }
                    out.push(c);
                }
            }
            '\\' => {
                if let Some(n) = chars.next() {
                    out.push(n);
                }
            }
            '"' => {}
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Manifest {
        let t = DateTime::parse_from_rfc3339("2024-11-30T14:30:22Z")
            .unwrap()
            .with_timezone(&Utc);
        let mut m = Manifest::new(
            Origin::Backup,
            t,
            "backups/pre-deployment-20241130_143022".into(),
            Git {
                commit: Some("abc".into()),
                branch: Some("main".into()),
            },
        );
        m.verified = true;
        m.database = Some(DatabaseRecord {
            file: FileRecord {
                path: "db_x_20241130_143022.sql.gz".into(),
                size: 2048,
                sha256: "ab".repeat(32),
                checks: vec!["gzip".into(), "sql-complete".into()],
                compression: Default::default(),
                compression_level: Some(6),
                encrypted: None,
                recipients: vec![],
            },
            name: Some("x".into()),
            user: None,
            container: Some("pg".into()),
            compose_project: None,
            compose_service: None,
            url: None,
            server_version: Some("15.8".into()),
            dump_tool_version: Some("15.8".into()),
            tables: [("public.t".to_string(), 3u64)].into_iter().collect(),
        });
        m
    }

    #[test]
    fn round_trips() {
        let m = sample();
        assert_eq!(m.timestamp, "20241130_143022");
        let back = Manifest::parse(&m.to_yaml(), Path::new("m")).unwrap();
        assert_eq!(back, m);
    }

    #[test]
    fn refuses_newer_schema_and_foreign_files() {
        let text = sample()
            .to_yaml()
            .replace("schema_version: 1", "schema_version: 99");
        assert!(matches!(
            Manifest::parse(&text, Path::new("m")),
            Err(ManifestError::TooNew { found: 99, .. })
        ));
        assert!(Manifest::parse("a: 1\n", Path::new("m")).is_err());
    }

    /// Manifests as release 0.1.0 wrote them (tests/fixtures/manifests, written by that
    /// release's code, every mode and volume kind it records): read with today's types, and
    /// written back the same, so the names on disk have not changed.
    #[test]
    fn reads_manifests_written_by_the_current_release() {
        use SourceKind::*;
        let fixtures: [(&str, &str, Origin, &[SourceKind]); 3] = [
            (
                "backup.yml",
                include_str!("../tests/fixtures/manifests/backup.yml"),
                Origin::Backup,
                &[Volume, Path],
            ),
            (
                "verify.yml",
                include_str!("../tests/fixtures/manifests/verify.yml"),
                Origin::Verify,
                &[Volume, File],
            ),
            (
                "safety.yml",
                include_str!("../tests/fixtures/manifests/safety.yml"),
                Origin::Safety,
                &[Volume],
            ),
        ];
        for (name, text, mode, kinds) in fixtures {
            let m = Manifest::parse(text, std::path::Path::new(name)).unwrap();
            assert_eq!(m.mode, mode, "{name}");
            let read: Vec<SourceKind> = m.volumes.iter().map(|v| v.kind).collect();
            assert_eq!(read, kinds, "{name}");
            assert!(m.verified, "{name}");
            assert_eq!(m.to_yaml(), text, "{name} is not written back as it was");
        }
        let backup = fixtures[0].1;
        let m = Manifest::parse(backup, std::path::Path::new("backup.yml")).unwrap();
        assert_eq!(m.database.unwrap().tables["public.customers"], 8);
        assert_eq!(m.restore_check.unwrap().tables["public.customers"], (8, 8));
        // What messages print is what the manifest says.
        for k in [Volume, Path, File] {
            let written = serde_saphyr::to_string(&k).unwrap();
            assert_eq!(written.trim(), k.to_string());
        }
        // A value this tool never wrote is not guessed at.
        for (from, to) in [
            ("mode: backup", "mode: restore"),
            ("kind: path", "kind: bucket"),
        ] {
            assert!(matches!(
                Manifest::parse(&backup.replace(from, to), std::path::Path::new("m")),
                Err(ManifestError::Parse { .. })
            ));
        }
    }

    #[test]
    fn pointer_is_sourceable_and_round_trips() {
        let p = Pointer {
            deployment_timestamp: "20241130_143022".into(),
            backup_dir: "./backups/pre-deployment-20241130_143022".into(),
            git_branch: "it's $(rm -rf /)".into(),
            ..Default::default()
        };
        let text = p.render();
        assert!(text.contains("GIT_BRANCH='it'\\''s $(rm -rf /)'"));
        let dir = tempfile::tempdir().unwrap();
        p.write(dir.path()).unwrap();
        assert_eq!(Pointer::read(dir.path()).unwrap().unwrap(), p);
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!(
                ". {}/{POINTER_FILE}; printf %s \"$GIT_BRANCH\"",
                dir.path().display()
            ))
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), "it's $(rm -rf /)");
    }

    #[test]
    fn dir_names() {
        assert!(parse_dir_timestamp("pre-deployment-20241130_143022").is_some());
        assert!(parse_dir_timestamp("pre-deployment-x").is_none());
        assert!(parse_dir_timestamp("other").is_none());
    }
}
