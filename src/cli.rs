//! The command line, and how GitHub Actions inputs become it.
//!
//! The action and the CLI are one program with one parser. Inside Actions the runner passes
//! no arguments, only `INPUT_<NAME>` variables (upper-cased, hyphens kept) for every input,
//! with `""` for inputs the workflow left out and that have no default. [`argv_with_inputs`]
//! turns every non-empty `INPUT_<LONG-FLAG>` the chosen mode declares into `--long-flag=value`
//! and `INPUT_MODE` into the subcommand, so clap validates both paths the same way and an
//! error names the input the user got wrong.

use std::ffi::OsString;
use std::path::PathBuf;

use clap::{ArgAction, Args, CommandFactory, Parser, Subcommand};

/// A verified restore point (PostgreSQL dump + Docker volume archives) before every deploy,
/// and a one-step rollback to it.
#[derive(Debug, Parser)]
#[command(name = "predeploy-backup", version, about, long_about = None, max_term_width = 100)]
pub struct Cli {
    #[command(subcommand)]
    pub mode: Mode,
}

/// One input `mode`, one subcommand.
#[derive(Debug, Subcommand)]
pub enum Mode {
    /// Dump the database and archive the volumes, verify them, write the manifest, publish, prune.
    Backup(BackupArgs),
    /// Verify backups that something else created, and record them like `backup` does.
    Verify(VerifyArgs),
    /// Restore the database and volumes from a backup, after checking every checksum.
    Rollback(RollbackArgs),
    /// Show the last backup and the commands that restore it.
    Info(InfoArgs),
    /// Apply the retention policy alone.
    Prune(PruneArgs),
}

impl Mode {
    pub fn name(&self) -> &'static str {
        match self {
            Mode::Backup(_) => "backup",
            Mode::Verify(_) => "verify",
            Mode::Rollback(_) => "rollback",
            Mode::Info(_) => "info",
            Mode::Prune(_) => "prune",
        }
    }

    /// The alert settings, which every mode takes.
    pub fn alerts(&self) -> &AlertArgs {
        match self {
            Mode::Backup(a) => &a.alerts,
            Mode::Verify(a) => &a.alerts,
            Mode::Rollback(a) => &a.alerts,
            Mode::Info(a) => &a.alerts,
            Mode::Prune(a) => &a.alerts,
        }
    }
}

/// Where backups live.
#[derive(Debug, Args, Clone)]
pub struct Location {
    /// Folder (relative to the workspace) that holds `pre-deployment-<UTC timestamp>/`.
    #[arg(long, default_value = "backups", value_name = "DIR")]
    pub backup_root: PathBuf,
    /// The workspace: where `.last-deployment-backup` is written and relative paths start
    /// [default: $GITHUB_WORKSPACE, else the current folder].
    #[arg(long, value_name = "DIR")]
    pub workspace: Option<PathBuf>,
    #[command(flatten)]
    pub destination: DestinationArgs,
}

/// A durable destination for the backups (beyond the workspace's `backup-root`).
#[derive(Debug, Args, Clone, Default)]
pub struct DestinationArgs {
    /// Where backups live durably: s3://BUCKET/PREFIX (keys from AWS_ACCESS_KEY_ID /
    /// AWS_SECRET_ACCESS_KEY / AWS_SESSION_TOKEN), volume://NAME[/PREFIX] (a named Docker
    /// volume), host:///ABS/PATH (a folder on the Docker host; both through a helper container
    /// from a local image with /bin/sh) or an absolute folder [default: none, the local
    /// backup-root only].
    #[arg(long, value_name = "URL")]
    pub destination: Option<String>,
    /// S3 endpoint for S3-compatible services [default: env AWS_ENDPOINT_URL, else AWS].
    #[arg(long, value_name = "URL")]
    pub s3_endpoint: Option<String>,
    /// S3 region [default: env AWS_REGION, else AWS_DEFAULT_REGION, else us-east-1].
    #[arg(long, value_name = "REGION")]
    pub s3_region: Option<String>,
    /// Path-style requests (https://host/bucket/key) instead of virtual-hosted ones
    /// [default: true].
    #[arg(long, action = ArgAction::Set, value_parser = clap::builder::BoolishValueParser::new(), value_name = "BOOL")]
    pub s3_path_style: Option<bool>,
    /// `full`: re-read every stored object and check its size and SHA-256; `size`: sizes only.
    #[arg(long, default_value = "full", value_parser = ["full", "size"], value_name = "HOW")]
    pub verify_destination: String,
    /// `auto`: two runs on one destination never interleave (a lease object made with a
    /// conditional create); `none`: no lock (a server without conditional writes, one writer).
    #[arg(long, default_value = "auto", value_parser = ["auto", "none"], value_name = "HOW")]
    pub lock: String,
}

impl DestinationArgs {
    /// The `destination` URL, trimmed; `None` when unset or blank (an empty action input).
    pub fn url(&self) -> Option<&str> {
        self.destination
            .as_deref()
            .map(str::trim)
            .filter(|u| !u.is_empty())
    }
}

/// What the database and volumes are, for `backup` (and the target of `rollback`).
#[derive(Debug, Args, Clone, Default)]
pub struct Target {
    /// Name or id of the running PostgreSQL container; pg_dump runs inside it.
    #[arg(long, value_name = "NAME")]
    pub postgres_container: Option<String>,
    /// Find the PostgreSQL container by compose labels: the project ...
    #[arg(long, value_name = "PROJECT", requires = "postgres_service")]
    pub compose_project: Option<String>,
    /// ... and the service name.
    #[arg(long, value_name = "SERVICE", requires = "compose_project")]
    pub postgres_service: Option<String>,
    /// Or dump over a connection with a local `pg_dump` found on PATH (postgres://...).
    #[arg(long, value_name = "URL")]
    pub database_url: Option<String>,
    /// Database name [default: the user name, as PostgreSQL does].
    #[arg(long, value_name = "NAME")]
    pub postgres_db: Option<String>,
    /// Database user.
    #[arg(long, value_name = "USER")]
    pub postgres_user: Option<String>,
    /// Password [default: env POSTGRES_PASSWORD]. Masked in logs, never written anywhere.
    #[arg(long, value_name = "SECRET", hide_env_values = true)]
    pub postgres_password: Option<String>,
    /// Docker volume names to archive, comma- or newline-separated.
    #[arg(long, value_name = "LIST")]
    pub volumes: Option<String>,
    /// Host folders to archive (bind mounts), comma- or newline-separated.
    #[arg(long, value_name = "LIST")]
    pub paths: Option<String>,
    /// Containers stopped while volumes are archived or restored, always started again.
    #[arg(long, value_name = "LIST")]
    pub stop_containers: Option<String>,
}

/// Thresholds of the verification.
#[derive(Debug, Args, Clone)]
pub struct Thresholds {
    /// Minimum size of the database dump (e.g. 1KiB, 2MB, 4096).
    #[arg(long, default_value = "1KiB", value_parser = parse_size, value_name = "SIZE")]
    pub min_db_size: u64,
    /// Minimum size of each volume archive.
    #[arg(long, default_value = "512B", value_parser = parse_size, value_name = "SIZE")]
    pub min_volume_size: u64,
    /// Refuse to start when the backup root's disk looks too small (estimated from the
    /// previous backup's size, else from the database's); `false` skips the estimate.
    #[arg(long, default_value = "true", action = ArgAction::Set, value_parser = clap::builder::BoolishValueParser::new(), value_name = "BOOL")]
    pub check_free_space: bool,
}

/// What the manifest records about the code.
#[derive(Debug, Args, Clone, Default)]
pub struct Revision {
    /// Git commit recorded in the manifest [default: $GITHUB_SHA, else `git rev-parse HEAD`].
    #[arg(long, value_name = "SHA")]
    pub commit: Option<String>,
    /// Git branch [default: $GITHUB_REF_NAME, else the current git branch].
    #[arg(long, value_name = "NAME")]
    pub branch: Option<String>,
}

/// The workflow artifact.
#[derive(Debug, Args, Clone)]
pub struct Publish {
    /// Upload the manifest as a workflow artifact [default: true when the Actions runtime is present].
    #[arg(long, action = ArgAction::Set, value_parser = clap::builder::BoolishValueParser::new(), value_name = "BOOL")]
    pub upload_artifact: Option<bool>,
    /// Name of the artifact.
    #[arg(long, default_value = "predeploy-backup", value_name = "NAME")]
    pub artifact_name: String,
    /// Also upload the backup files (for hosted runners, whose disk is gone after the job).
    #[arg(long, default_value = "false", action = ArgAction::Set, value_parser = clap::builder::BoolishValueParser::new(), value_name = "BOOL")]
    pub include_backups_in_artifact: bool,
}

/// Retention.
#[derive(Debug, Args, Clone)]
pub struct Keep {
    /// Delete our backup folders older than this many days (also the artifact's retention).
    #[arg(long, default_value = "7", value_name = "DAYS")]
    pub retention_days: u32,
    /// Never delete the newest N verified backups.
    #[arg(long, default_value = "3", value_name = "N")]
    pub keep_last: usize,
}

/// How to reach a remote Docker engine (DOCKER_HOST=tcp://HOST:2376 with TLS, or
/// ssh://USER@HOST[:PORT]).
#[derive(Debug, Args, Clone, Default)]
pub struct EngineArgs {
    /// PEM contents of the CA that signed the engine's TLS certificate (with env
    /// DOCKER_TLS_VERIFY=1) [default: $DOCKER_CERT_PATH/ca.pem].
    #[arg(long, value_name = "PEM", hide_env_values = true)]
    pub docker_tls_ca: Option<String>,
    /// PEM contents of the client certificate for the engine [default: $DOCKER_CERT_PATH/cert.pem].
    #[arg(long, value_name = "PEM", hide_env_values = true)]
    pub docker_tls_cert: Option<String>,
    /// PEM contents of the client certificate's private key; masked [default: $DOCKER_CERT_PATH/key.pem].
    #[arg(long, value_name = "PEM", hide_env_values = true)]
    pub docker_tls_key: Option<String>,
    /// OpenSSH private key (contents) for DOCKER_HOST=ssh://USER@HOST; masked.
    #[arg(long, value_name = "KEY", hide_env_values = true)]
    pub ssh_private_key: Option<String>,
    /// known_hosts lines that pin the SSH host's key [default: ~/.ssh/known_hosts].
    #[arg(long, value_name = "LINES")]
    pub ssh_known_hosts: Option<String>,
    /// Trust an SSH host key seen for the first time (a changed key is always refused).
    #[arg(long, default_value = "false", action = ArgAction::Set, value_parser = clap::builder::BoolishValueParser::new(), value_name = "BOOL")]
    pub ssh_accept_new_host_key: bool,
}

impl EngineArgs {
    /// The transport settings.
    pub fn settings(&self) -> crate::transport::Settings {
        crate::transport::Settings {
            tls_ca: self.docker_tls_ca.clone(),
            tls_cert: self.docker_tls_cert.clone(),
            tls_key: self.docker_tls_key.clone(),
            ssh_private_key: self.ssh_private_key.clone(),
            ssh_known_hosts: self.ssh_known_hosts.clone(),
            ssh_accept_new_host_key: self.ssh_accept_new_host_key,
        }
    }
}

/// Alerts on failure (or always).
#[derive(Debug, Args, Clone, Default)]
pub struct AlertArgs {
    /// POST a JSON alert here [default: env BACKUP_ALERT_WEBHOOK_URL].
    #[arg(long, value_name = "URL")]
    pub alert_webhook_url: Option<String>,
    /// Email the alert to this address [default: env BACKUP_ALERT_EMAIL].
    #[arg(long, value_name = "ADDRESS")]
    pub alert_email: Option<String>,
    /// SMTP server for email alerts: smtp://, smtps:// or smtp://...?tls=required [default: env SMTP_URL].
    #[arg(long, value_name = "URL")]
    pub smtp_url: Option<String>,
    /// When to alert: `failure` or `always`.
    #[arg(long, default_value = "failure", value_parser = ["failure", "always"], value_name = "WHEN")]
    pub alert_on: String,
}

/// age encryption of the backup files (`backup`).
#[derive(Debug, Args, Clone, Default)]
pub struct Encrypt {
    /// Encrypt every backup file to these age public keys (`age1…`) and ssh-ed25519 public
    /// keys, comma- or newline-separated: files are written as `….age`.
    #[arg(long, value_name = "KEYS")]
    pub encrypt_recipients: Option<String>,
    /// Or (and): a file of such keys, one a line (`#` comments allowed).
    #[arg(long, value_name = "FILE")]
    pub encrypt_recipients_file: Option<PathBuf>,
}

/// The age identity that opens encrypted backups.
#[derive(Debug, Args, Clone, Default)]
pub struct Decrypt {
    /// age identity (`AGE-SECRET-KEY-1…`, or an unprotected ssh-ed25519 private key, or the
    /// path of a file holding one) for rollback, verify-restore and a full verify of
    /// encrypted backups [default: env PREDEPLOY_AGE_IDENTITY]. Masked, never stored.
    #[arg(long, value_name = "SECRET", hide_env_values = true)]
    pub decrypt_identity: Option<String>,
}

#[derive(Debug, Args)]
pub struct BackupArgs {
    #[command(flatten)]
    pub location: Location,
    #[command(flatten)]
    pub target: Target,
    #[command(flatten)]
    pub thresholds: Thresholds,
    #[command(flatten)]
    pub revision: Revision,
    /// `gzip` (.sql.gz, .tar.gz), `zstd` (.sql.zst, .tar.zst) or `none` (.sql, .tar).
    #[arg(long, default_value = "gzip", value_parser = ["gzip", "zstd", "none"], value_name = "CODEC")]
    pub compression: String,
    /// Level for the codec: gzip 0–9 (default 6), zstd 1–19 (default 3).
    #[arg(long, value_name = "LEVEL")]
    pub compression_level: Option<u32>,
    /// Also restore the dump into a throwaway database and compare row counts.
    #[arg(long, default_value = "false", action = ArgAction::Set, value_parser = clap::builder::BoolishValueParser::new(), value_name = "BOOL")]
    pub verify_restore: bool,
    #[command(flatten)]
    pub encrypt: Encrypt,
    #[command(flatten)]
    pub decrypt: Decrypt,
    #[command(flatten)]
    pub publish: Publish,
    #[command(flatten)]
    pub keep: Keep,
    #[command(flatten)]
    pub engine: EngineArgs,
    #[command(flatten)]
    pub alerts: AlertArgs,
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    #[command(flatten)]
    pub location: Location,
    /// Path of an existing database dump (.sql.gz, .sql.zst or .sql: the name says the codec).
    #[arg(long, value_name = "FILE")]
    pub db_backup: Option<PathBuf>,
    /// Paths of existing volume archives (.tar.gz, .tar.zst or .tar), comma- or newline-separated.
    #[arg(long, value_name = "LIST")]
    pub volume_backups: Option<String>,
    /// The Docker volumes those archives hold, in the same order: recorded so that
    /// `rollback` can restore them.
    #[arg(long, value_name = "LIST")]
    pub volumes: Option<String>,
    /// The container the dump came from (recorded for `rollback` and the instructions).
    #[arg(long, value_name = "NAME")]
    pub postgres_container: Option<String>,
    /// The database the dump came from.
    #[arg(long, value_name = "NAME")]
    pub postgres_db: Option<String>,
    /// The user that owns it.
    #[arg(long, value_name = "USER")]
    pub postgres_user: Option<String>,
    /// With a destination: check the backup there that this workflow run made
    /// [default: the newest backup there].
    #[arg(long, value_name = "ID")]
    pub run_id: Option<u64>,
    /// With a destination: check the backup whose manifest.yml has this URL (inside the
    /// destination) [default: the newest backup there].
    #[arg(long, value_name = "URL")]
    pub manifest: Option<String>,
    #[command(flatten)]
    pub thresholds: Thresholds,
    #[command(flatten)]
    pub revision: Revision,
    #[command(flatten)]
    pub decrypt: Decrypt,
    #[command(flatten)]
    pub publish: Publish,
    /// Retention days of the artifact.
    #[arg(long, default_value = "7", value_name = "DAYS")]
    pub retention_days: u32,
    #[command(flatten)]
    pub alerts: AlertArgs,
}

#[derive(Debug, Args)]
pub struct RollbackArgs {
    #[command(flatten)]
    pub location: Location,
    /// Restore the backup whose manifest artifact this workflow run uploaded.
    #[arg(long, value_name = "ID")]
    pub run_id: Option<u64>,
    /// Token with `actions: read` to fetch the artifact of another run.
    #[arg(long, value_name = "TOKEN", hide_env_values = true)]
    pub github_token: Option<String>,
    /// owner/name of the repository of that run [default: $GITHUB_REPOSITORY].
    #[arg(long, value_name = "OWNER/NAME")]
    pub repository: Option<String>,
    /// Workflow files whose runs `run-id` may name (comma or newline separated).
    #[arg(long, value_name = "FILES")]
    pub trusted_workflows: Option<String>,
    /// Branch globs the run of `run-id` must have run on (comma or newline separated).
    #[arg(long, value_name = "GLOBS")]
    pub trusted_branches: Option<String>,
    /// Or: path of the manifest.yml to restore [default: the one .last-deployment-backup names].
    #[arg(long, value_name = "FILE")]
    pub manifest: Option<PathBuf>,
    /// Name of the manifest artifact.
    #[arg(long, default_value = "predeploy-backup", value_name = "NAME")]
    pub artifact_name: String,
    /// Check everything, change nothing.
    #[arg(long, default_value = "false", num_args = 0..=1, default_missing_value = "true", action = ArgAction::Set, value_parser = clap::builder::BoolishValueParser::new(), value_name = "BOOL")]
    pub dry_run: bool,
    /// Volumes to restore [default: the `volumes` input]; a volume of the backup not named is
    /// not touched.
    #[arg(long, value_name = "LIST")]
    pub restore_volumes: Option<String>,
    /// Restore the database [default: true when postgres-container, compose-project or
    /// database-url is given]; with true alone, into the container the backup recorded.
    #[arg(long, action = ArgAction::Set, value_parser = clap::builder::BoolishValueParser::new(), value_name = "BOOL")]
    pub restore_database: Option<bool>,
    /// Keep setuid/setgid/sticky bits of restored volume entries (dropped by default).
    #[arg(long, default_value = "false", action = ArgAction::Set, value_parser = clap::builder::BoolishValueParser::new(), value_name = "BOOL")]
    pub restore_special_bits: bool,
    #[command(flatten)]
    pub decrypt: Decrypt,
    /// Where to restore to: only the targets named here are restored (the manifest fills in
    /// the database's container, name and user).
    #[command(flatten)]
    pub target: Target,
    #[command(flatten)]
    pub engine: EngineArgs,
    #[command(flatten)]
    pub alerts: AlertArgs,
}

#[derive(Debug, Args)]
pub struct InfoArgs {
    #[command(flatten)]
    pub location: Location,
    #[command(flatten)]
    pub alerts: AlertArgs,
}

#[derive(Debug, Args)]
pub struct PruneArgs {
    #[command(flatten)]
    pub location: Location,
    #[command(flatten)]
    pub keep: Keep,
    /// Show what would be deleted, delete nothing.
    #[arg(long, default_value = "false", num_args = 0..=1, default_missing_value = "true", action = ArgAction::Set, value_parser = clap::builder::BoolishValueParser::new(), value_name = "BOOL")]
    pub dry_run: bool,
    #[command(flatten)]
    pub alerts: AlertArgs,
}

/// Parses `1KiB`, `512B`, `2MB`, `1.5GiB`, `4096` into bytes (KB/MB/GB are powers of 1000).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a size: write e.g. 1KiB, 512B, 2MB or 4096"))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" => 1 << 10,
        "kb" => 1000,
        "m" | "mib" => 1 << 20,
        "mb" => 1_000_000,
        "g" | "gib" => 1 << 30,
        "gb" => 1_000_000_000,
        other => {
            return Err(format!(
                "unknown size unit `{other}` in `{s}`: use B, KiB, MiB, GiB, KB, MB or GB"
            ))
        }
    };
    Ok((n * mult as f64).round() as u64)
}

/// Splits a comma- or newline-separated input into trimmed, non-empty items.
pub fn split_list(s: Option<&str>) -> Vec<String> {
    s.unwrap_or("")
        .split([',', '\n'])
        .map(str::trim)
        .filter(|x| !x.is_empty())
        .map(String::from)
        .collect()
}

/// Builds the argument vector clap parses: the real arguments, plus the mode from
/// `INPUT_MODE` when none was given and we run as an action, plus `--flag=value` for every
/// non-empty `INPUT_FLAG` that the mode declares and the command line did not give.
pub fn argv_with_inputs(
    args: Vec<OsString>,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Vec<OsString>, String> {
    let cmd = Cli::command();
    let modes: Vec<String> = cmd
        .get_subcommands()
        .map(|c| c.get_name().to_string())
        .collect();
    let mut argv = args;
    if argv.is_empty() {
        argv.push("predeploy-backup".into());
    }
    let given_mode = argv
        .iter()
        .skip(1)
        .find(|a| !a.to_string_lossy().starts_with('-'))
        .map(|a| a.to_string_lossy().to_string());
    let mode = match given_mode {
        Some(m) => m,
        None => {
            let input = env("INPUT_MODE").filter(|v| !v.trim().is_empty());
            let in_actions = env("GITHUB_ACTIONS").as_deref() == Some("true");
            match input {
                Some(m) => {
                    let m = m.trim().to_string();
                    if !modes.contains(&m) {
                        return Err(format!(
                            "input `mode` is `{m}`: use one of {}",
                            modes.join(", ")
                        ));
                    }
                    argv.insert(1, m.clone().into());
                    m
                }
                None if in_actions => {
                    argv.insert(1, "backup".into());
                    "backup".into()
                }
                None => return Ok(argv),
            }
        }
    };
    let Some(sub) = cmd.find_subcommand(&mode) else {
        return Ok(argv);
    };
    let given: Vec<String> = argv
        .iter()
        .map(|a| a.to_string_lossy().to_string())
        .collect();
    for arg in sub.get_arguments() {
        let Some(long) = arg.get_long() else { continue };
        let flag = format!("--{long}");
        if given
            .iter()
            .any(|g| g == &flag || g.starts_with(&format!("{flag}=")))
        {
            continue;
        }
        let var = format!("INPUT_{}", long.to_ascii_uppercase());
        if let Some(value) = env(&var) {
            // A multi-line input keeps its newlines (lists may be newline-separated); only
            // surrounding blank space is dropped.
            let value = value.trim().to_string();
            if !value.is_empty() {
                argv.push(format!("{flag}={value}").into());
            }
        }
    }
    Ok(argv)
}

/// Inputs a mode declares (they come with a shared group of flags) but does not use.
/// Everything else a mode does not declare is found from the parser itself.
const DECLARED_BUT_UNUSED: &[(&str, &[&str])] = &[
    // rollback restores the volumes `volumes`/`restore-volumes` name; host paths are never
    // restored by it.
    ("rollback", &["paths"]),
    // verify writes no new files but the manifest.
    ("verify", &["check-free-space"]),
];

/// Which mode `argv` (as [`argv_with_inputs`] built it) runs.
fn mode_of(argv: &[OsString]) -> Option<String> {
    argv.iter()
        .skip(1)
        .map(|a| a.to_string_lossy().to_string())
        .find(|a| !a.starts_with('-'))
}

/// One table, input → the modes that use it, from the parser: every input that is set (and
/// not to `action.yml`'s default, which the runner passes whether or not the workflow wrote
/// it) but has no effect in the chosen mode gives one sentence to report as a warning.
pub fn ignored_inputs(argv: &[OsString], env: impl Fn(&str) -> Option<String>) -> Vec<String> {
    let cmd = Cli::command();
    let Some(mode) = mode_of(argv) else {
        return vec![];
    };
    let Some(sub) = cmd.find_subcommand(&mode) else {
        return vec![];
    };
    let unused: &[&str] = DECLARED_BUT_UNUSED
        .iter()
        .find(|(m, _)| *m == mode)
        .map(|(_, l)| *l)
        .unwrap_or(&[]);
    let used: std::collections::BTreeSet<String> = sub
        .get_arguments()
        .filter_map(|a| a.get_long())
        .filter(|l| !unused.contains(l))
        .map(String::from)
        .collect();
    // input name → its default anywhere it is declared
    let mut all: std::collections::BTreeMap<String, Option<String>> = Default::default();
    for c in cmd.get_subcommands() {
        for a in c.get_arguments() {
            if let Some(l) = a.get_long() {
                let d = a
                    .get_default_values()
                    .first()
                    .map(|v| v.to_string_lossy().to_string());
                all.entry(l.to_string()).or_insert(d);
            }
        }
    }
    let mut out = vec![];
    for (name, default) in all {
        if used.contains(&name) {
            continue;
        }
        let Some(v) = env(&format!("INPUT_{}", name.to_ascii_uppercase())) else {
            continue;
        };
        let v = v.trim();
        if v.is_empty() || default.as_deref() == Some(v) {
            continue;
        }
        let users: Vec<String> = cmd
            .get_subcommands()
            .filter(|c| {
                c.get_arguments()
                    .any(|a| a.get_long() == Some(name.as_str()))
                    && !DECLARED_BUT_UNUSED
                        .iter()
                        .any(|(m, l)| *m == c.get_name() && l.contains(&name.as_str()))
            })
            .map(|c| c.get_name().to_string())
            .collect();
        out.push(format!(
            "input {name} has no effect in mode {mode} (it is used by mode {}): remove it from `with:` or set the mode that uses it",
            users.join(", ")
        ));
    }
    out
}

/// A parser error as an action user reads it: inputs, not `--flags`, and no CLI usage lines.
pub fn error_for_inputs(rendered: &str) -> String {
    let cmd = Cli::command();
    let mut longs: Vec<(String, Option<String>)> = vec![];
    for c in cmd.get_subcommands() {
        for a in c.get_arguments() {
            if let Some(l) = a.get_long() {
                let v = a
                    .get_value_names()
                    .and_then(|v| v.first())
                    .map(|v| v.to_string());
                longs.push((l.to_string(), v));
            }
        }
    }
    longs.sort_by_key(|(l, _)| std::cmp::Reverse(l.len()));
    longs.dedup();
    let mut text: String = rendered
        .lines()
        .take_while(|l| !l.starts_with("Usage:"))
        .filter(|l| !l.contains("--help"))
        .collect::<Vec<_>>()
        .join("\n");
    for (l, v) in longs {
        if let Some(v) = v {
            text = text.replace(&format!("--{l} <{v}>"), &format!("input {l}"));
        }
        text = text.replace(&format!("--{l}"), &format!("input {l}"));
    }
    text.trim().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn every_ignored_input_is_reported_once() {
        let env = env_of(&[
            ("GITHUB_ACTIONS", "true"),
            ("INPUT_MODE", "backup"),
            ("INPUT_DRY-RUN", "true"),
            ("INPUT_RUN-ID", "12"),
            ("INPUT_RETENTION-DAYS", "7"),
            ("INPUT_VOLUMES", "v"),
        ]);
        let argv = argv_with_inputs(vec!["x".into()], &env).unwrap();
        let w = ignored_inputs(&argv, &env);
        assert_eq!(w.len(), 2, "{w:?}");
        assert!(
            w[0].starts_with("input dry-run has no effect in mode backup"),
            "{w:?}"
        );
        assert!(
            w[1].starts_with("input run-id has no effect in mode backup"),
            "{w:?}"
        );

        let env = env_of(&[
            ("INPUT_MODE", "rollback"),
            ("INPUT_PATHS", "srv/data"),
            ("INPUT_VOLUMES", "v"),
            ("INPUT_KEEP-LAST", "5"),
            ("INPUT_DRY-RUN", "false"),
        ]);
        let argv = argv_with_inputs(vec!["x".into()], &env).unwrap();
        let w = ignored_inputs(&argv, &env);
        assert_eq!(w.len(), 2, "{w:?}");
        assert!(
            w[0].starts_with("input keep-last has no effect in mode rollback"),
            "{w:?}"
        );
        assert!(
            w[1].starts_with("input paths has no effect in mode rollback"),
            "{w:?}"
        );
    }

    #[test]
    fn parser_errors_name_inputs() {
        let env = env_of(&[("INPUT_MODE", "backup"), ("INPUT_KEEP-LAST", "many")]);
        let argv = argv_with_inputs(vec!["x".into()], &env).unwrap();
        let e = Cli::try_parse_from(&argv).unwrap_err().render().to_string();
        let msg = error_for_inputs(&e);
        assert!(msg.contains("input keep-last"), "{msg}");
        assert!(!msg.contains("--"), "{msg}");
    }

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| m.get(k).cloned()
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("1KiB").unwrap(), 1024);
        assert_eq!(parse_size("512B").unwrap(), 512);
        assert_eq!(parse_size("2MB").unwrap(), 2_000_000);
        assert_eq!(parse_size("4096").unwrap(), 4096);
        assert!(parse_size("lots").is_err());
        assert!(parse_size("3 parsecs").is_err());
    }

    #[test]
    fn inputs_become_flags_and_empty_inputs_are_unset() {
        let env = env_of(&[
            ("GITHUB_ACTIONS", "true"),
            ("INPUT_MODE", "verify"),
            ("INPUT_DB-BACKUP", "backups/x/db.sql.gz"),
            ("INPUT_COMMIT", ""),
            ("INPUT_VOLUMES", "ignored-by-verify"),
        ]);
        let argv = argv_with_inputs(vec!["predeploy-backup".into()], env).unwrap();
        let cli = Cli::try_parse_from(&argv).unwrap();
        match cli.mode {
            Mode::Verify(v) => {
                assert_eq!(v.db_backup.unwrap(), PathBuf::from("backups/x/db.sql.gz"));
                assert!(v.revision.commit.is_none());
            }
            other => panic!("wrong mode {other:?}"),
        }
    }

    #[test]
    fn bad_mode_is_named() {
        let env = env_of(&[("INPUT_MODE", "restore")]);
        let err = argv_with_inputs(vec!["x".into()], env).unwrap_err();
        assert!(
            err.contains("`restore`") && err.contains("rollback"),
            "{err}"
        );
    }

    #[test]
    fn command_line_wins_over_inputs() {
        let env = env_of(&[("INPUT_BACKUP-ROOT", "from-env")]);
        let argv = argv_with_inputs(
            vec!["x".into(), "prune".into(), "--backup-root=cli".into()],
            env,
        )
        .unwrap();
        let Mode::Prune(p) = Cli::try_parse_from(&argv).unwrap().mode else {
            panic!()
        };
        assert_eq!(p.location.backup_root, PathBuf::from("cli"));
    }

    #[test]
    fn lists() {
        assert_eq!(split_list(Some("a, b\nc,,\n")), vec!["a", "b", "c"]);
        assert!(split_list(None).is_empty());
    }
}
