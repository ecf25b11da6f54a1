//! PostgreSQL: pg_dump out, psql in, a few queries — inside the database container through
//! the Docker API, or over a `database-url` with local client programs.
//!
//! Both ways run a client program with optional stdin and a streamed stdout ([`Server::run`]),
//! so dump, restore and queries are written once. Running inside the container means the
//! dump tool is the server's own version: the most common failure of dump-based tools (a
//! `pg_dump` older than the server) cannot happen there; over a URL it is checked.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Stdio;

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

use crate::report::Reporter;

use crate::docker::{ContainerInfo, Engine};

/// Version checks of a dump's header live with the SQL scanner; named here too.
pub use crate::archive::sql::{dump_fits_server, major_of};

#[derive(Debug, thiserror::Error)]
pub enum PgError {
    #[error("{what} failed: password authentication failed for user `{user}`: check postgres-password (or env POSTGRES_PASSWORD)")]
    Auth { what: String, user: String },
    #[error("{what} failed: role `{user}` does not exist: set the input postgres-user to the user the database was created with (the official image's POSTGRES_USER, e.g. `postgres-user: app`)")]
    NoRole { what: String, user: String },
    #[error("{what} could not run in the database container (exit code {code}): it has no PostgreSQL client programs, so it is probably not the PostgreSQL container; point postgres-container (or compose-project + postgres-service) at the container that runs PostgreSQL")]
    NotPostgres { what: String, code: i64 },
    #[error("{what} failed: database `{db}` does not exist: check postgres-db")]
    NoDatabase { what: String, db: String },
    #[error("{what} failed (exit code {code}): {stderr}")]
    Failed {
        what: String,
        code: i64,
        stderr: String,
    },
    #[error("`{0}` was not found on PATH: install the PostgreSQL client of the server's major version (or set env PG_BIN_DIR to its bin directory), or use postgres-container to run it inside the database container")]
    NoClient(String),
    #[error("the server is PostgreSQL {server_major} but no pg_dump {server_major} was found ({found}): a newer pg_dump writes SQL an older server may reject (pg_dump 17+ writes `SET transaction_timeout`), so its dump could not be restored into this server, and an older pg_dump refuses a newer server. Install the PostgreSQL {server_major} client (e.g. `apt-get install postgresql-client-{server_major}` from apt.postgresql.org) and set env PG_BIN_DIR to its bin directory (e.g. /usr/lib/postgresql/{server_major}/bin), or use postgres-container to dump inside the database container")]
    ClientMismatch { server_major: u32, found: String },
    #[error("{0}")]
    Other(String),
}

impl crate::error::Classify for PgError {
    fn exit_kind(&self) -> crate::error::ExitKind {
        match self {
            PgError::Auth { .. }
            | PgError::NoRole { .. }
            | PgError::NotPostgres { .. }
            | PgError::NoDatabase { .. }
            | PgError::NoClient(_)
            | PgError::ClientMismatch { .. } => crate::error::ExitKind::Usage,
            _ => crate::error::ExitKind::Environment,
        }
    }

    fn help(&self) -> Option<String> {
        match self {
            PgError::Failed { .. } | PgError::Other(_) => Some(
                "the message above is PostgreSQL's: check that the server is up and that the user, password and database inputs name what it has (the same settings work with `psql`), then run again".into(),
            ),
            _ => None,
        }
    }
}

/// Who we connect as. The password is a registered secret; it travels only in `PGPASSWORD`.
#[derive(Clone, Debug)]
pub struct Credentials {
    pub db: String,
    pub user: String,
    pub password: Option<String>,
}

/// Where the server is.
#[derive(Clone)]
pub enum Server {
    /// Client programs run inside this container.
    Container {
        engine: Engine,
        info: Box<ContainerInfo>,
    },
    /// Client programs run here, connecting to this URL; from `bin_dir` when set (see
    /// [`Server::pick_pg_dump`]), else from PATH.
    Url {
        url: String,
        bin_dir: Option<PathBuf>,
    },
}

/// How a client program ended.
pub struct RunOutcome {
    pub code: i64,
    pub stderr: String,
}

impl Server {
    /// Runs a PostgreSQL client program (`pg_dump`, `psql`) with `args`; stdin from `stdin`,
    /// stdout to `stdout` (both optional, both streamed).
    pub async fn run(
        &self,
        creds: &Credentials,
        program: &str,
        args: Vec<String>,
        stdin: Option<mpsc::Receiver<Bytes>>,
        stdout: Option<mpsc::Sender<Bytes>>,
    ) -> Result<RunOutcome, PgError> {
        let mut env = vec!["PGCONNECT_TIMEOUT=15".to_string()];
        if let Some(p) = &creds.password {
            env.push(format!("PGPASSWORD={p}"));
        }
        match self {
            Server::Container { engine, info } => {
                let mut cmd = vec![program.to_string()];
                cmd.extend(args);
                let out = engine
                    .exec(&info.id, cmd, env, stdin, stdout)
                    .await
                    .map_err(|e| PgError::Other(e.to_string()))?;
                Ok(RunOutcome {
                    code: out.exit_code,
                    stderr: out.stderr,
                })
            }
            Server::Url { bin_dir, .. } => {
                run_local(bin_dir.as_deref(), program, args, env, stdin, stdout).await
            }
        }
    }

    /// The connection arguments for `db`.
    fn conn_args(&self, creds: &Credentials, db: &str) -> Vec<String> {
        match self {
            // A connection string we build: a name is a quoted value, never a keyword
            // (libpq reads a bare `--dbname` holding `=` as a whole connection string).
            Server::Container { .. } => vec![
                "--no-password".into(),
                format!(
                    "--dbname=dbname={} user={}",
                    crate::names::conninfo_value(db),
                    crate::names::conninfo_value(&creds.user)
                ),
            ],
            Server::Url { url, .. } => {
                let url = if db == creds.db {
                    url.clone()
                } else {
                    with_database(url, db)
                };
                vec!["--no-password".into(), format!("--dbname={url}")]
            }
        }
    }

    /// Streams a plain-format dump of the database into `stdout`.
    pub async fn dump(
        &self,
        creds: &Credentials,
        stdout: mpsc::Sender<Bytes>,
    ) -> Result<(), PgError> {
        let mut args = vec!["--format=plain".to_string()];
        args.extend(self.conn_args(creds, &creds.db));
        let out = self.run(creds, "pg_dump", args, None, Some(stdout)).await?;
        check("pg_dump", creds, &creds.db, out)
    }

    /// Runs SQL (`-c`) in `db` and returns stdout (unaligned, tuples only).
    pub async fn query(&self, creds: &Credentials, db: &str, sql: &str) -> Result<String, PgError> {
        let mut args = vec![
            "-X".to_string(),
            "-q".into(),
            "-A".into(),
            "-t".into(),
            "-v".into(),
            "ON_ERROR_STOP=1".into(),
            "-c".into(),
            sql.to_string(),
        ];
        args.extend(self.conn_args(creds, db));
        let (tx, mut rx) = mpsc::channel::<Bytes>(16);
        let collect = tokio::spawn(async move {
            let mut all = Vec::new();
            while let Some(b) = rx.recv().await {
                all.extend_from_slice(&b);
            }
            all
        });
        let out = self.run(creds, "psql", args, None, Some(tx)).await?;
        let stdout = collect.await.unwrap_or_default();
        check("psql", creds, db, out)?;
        Ok(String::from_utf8_lossy(&stdout).trim().to_string())
    }

    /// Feeds SQL from `stdin` into psql in `db`, stopping at the first error, in one
    /// transaction (a failed restore leaves the database as it was before the load).
    pub async fn load(
        &self,
        creds: &Credentials,
        db: &str,
        stdin: mpsc::Receiver<Bytes>,
        report: &dyn Reporter,
    ) -> Result<(), PgError> {
        let mut args = vec![
            "-X".to_string(),
            "-q".into(),
            "-v".into(),
            "ON_ERROR_STOP=1".into(),
            "--single-transaction".into(),
            "-o".into(),
            "/dev/null".into(),
        ];
        args.extend(self.conn_args(creds, db));
        // Defence in depth: where psql knows `\restrict`, the dump runs under a random key of
        // ours (its own `\restrict`/`\unrestrict` lines removed), so no meta-command can act.
        let stdin = if self.psql_has_restrict(creds).await {
            let key = uuid::Uuid::new_v4().simple().to_string();
            let (tx, rx) = mpsc::channel::<Bytes>(4);
            tokio::spawn(async move {
                let mut input = stdin;
                let mut filter = crate::archive::sql::RestrictFilter::new();
                if tx
                    .send(Bytes::from(format!("\\restrict {key}\n")))
                    .await
                    .is_err()
                {
                    return;
                }
                while let Some(chunk) = input.recv().await {
                    let out = filter.feed(&chunk);
                    if !out.is_empty() && tx.send(Bytes::from(out)).await.is_err() {
                        return;
                    }
                }
                let _ = tx.send(Bytes::from(filter.finish())).await;
            });
            rx
        } else {
            report.info(
                "psql here has no \\restrict (PostgreSQL before 17.6/16.10/15.14/14.19/13.22): the dump was checked for meta-commands, and loads without a restrict key",
            );
            stdin
        };
        let out = self.run(creds, "psql", args, Some(stdin), None).await?;
        check("psql (loading the dump)", creds, db, out)
    }

    /// Whether this psql has `\restrict` (PostgreSQL 18, 17.6, 16.10, 15.14, 14.19, 13.22 and
    /// later minor releases). Any doubt is `false`.
    pub async fn psql_has_restrict(&self, creds: &Credentials) -> bool {
        let (tx, mut rx) = mpsc::channel::<Bytes>(4);
        let collect = tokio::spawn(async move {
            let mut all = Vec::new();
            while let Some(b) = rx.recv().await {
                all.extend_from_slice(&b);
            }
            all
        });
        let ran = self
            .run(creds, "psql", vec!["--version".into()], None, Some(tx))
            .await;
        let text = collect.await.unwrap_or_default();
        matches!(ran, Ok(ref o) if o.code == 0) && has_restrict(&String::from_utf8_lossy(&text))
    }

    /// On-disk size of the database in bytes.
    pub async fn database_size(&self, creds: &Credentials) -> Result<u64, PgError> {
        let s = self
            .query(
                creds,
                &creds.db,
                "SELECT pg_database_size(current_database())",
            )
            .await?;
        s.trim()
            .parse()
            .map_err(|_| PgError::Other(format!("unexpected database size `{s}`")))
    }

    /// Puts `scratch` (fully loaded) in the place of `db`: ends the sessions of `db`, renames
    /// it aside, renames `scratch` to `db`, drops the old one. Until the renames, `db` is
    /// untouched, so a load that fails never leaves it empty or half-restored.
    pub async fn swap_in(
        &self,
        creds: &Credentials,
        scratch: &str,
        db: &str,
    ) -> Result<(), PgError> {
        let old = format!("{db}_predeploy_old");
        let lit = db.replace('\'', "''");
        let mut args = vec![
            "-X".to_string(),
            "-q".into(),
            "-v".into(),
            "ON_ERROR_STOP=1".into(),
        ];
        for sql in [
            format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", ident(&old)),
            format!("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = '{lit}' AND pid <> pg_backend_pid()"),
            format!("ALTER DATABASE {} RENAME TO {}", ident(db), ident(&old)),
            format!("ALTER DATABASE {} RENAME TO {}", ident(scratch), ident(db)),
            format!("DROP DATABASE {} WITH (FORCE)", ident(&old)),
        ] {
            args.push("-c".into());
            args.push(sql);
        }
        args.extend(self.conn_args(creds, "postgres"));
        let out = self.run(creds, "psql", args, None, None).await?;
        check(
            "psql (putting the restored database in place)",
            creds,
            "postgres",
            out,
        )
    }

    /// Creates an empty database owned by the user.
    pub async fn create_database(&self, creds: &Credentials, db: &str) -> Result<(), PgError> {
        self.query(
            creds,
            "postgres",
            &format!("CREATE DATABASE {} OWNER {}", ident(db), ident(&creds.user)),
        )
        .await
        .map(|_| ())
    }

    /// Drops a database if it exists.
    pub async fn drop_database(&self, creds: &Credentials, db: &str) -> Result<(), PgError> {
        self.query(
            creds,
            "postgres",
            &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", ident(db)),
        )
        .await
        .map(|_| ())
    }

    /// `count(*)` of each `schema.table` in `db`.
    pub async fn count_rows(
        &self,
        creds: &Credentials,
        db: &str,
        tables: &[String],
    ) -> Result<BTreeMap<String, u64>, PgError> {
        let mut out = BTreeMap::new();
        for chunk in tables.chunks(200) {
            let sql = chunk
                .iter()
                .map(|t| {
                    format!(
                        "SELECT '{}', count(*) FROM {}",
                        t.replace('\'', "''"),
                        qualified(t)
                    )
                })
                .collect::<Vec<_>>()
                .join(" UNION ALL ");
            let text = self.query(creds, db, &sql).await?;
            for line in text.lines() {
                if let Some((k, v)) = line.rsplit_once('|') {
                    out.insert(k.to_string(), v.trim().parse().unwrap_or(0));
                }
            }
        }
        Ok(out)
    }

    /// The server's major version (`server_version_num` / 10000; 9.6 → 9).
    pub async fn server_major(&self, creds: &Credentials) -> Result<u32, PgError> {
        let s = self
            .query(creds, &creds.db, "SHOW server_version_num")
            .await?;
        s.trim()
            .parse::<u32>()
            .map(|n| n / 10000)
            .map_err(|_| PgError::Other(format!("unexpected server_version_num `{s}`")))
    }

    /// `database-url` mode: finds a pg_dump of the server's major version (env `PG_BIN_DIR`,
    /// then PATH, then `/usr/lib/postgresql/N/bin`) and runs every client program from its
    /// directory from now on. A newer pg_dump's dump may not load into the server it came
    /// from, an older one refuses to dump: neither is used. Returns the pg_dump chosen and
    /// its version. Container mode always uses the server's own client: nothing to pick.
    pub async fn pick_pg_dump(
        &mut self,
        creds: &Credentials,
    ) -> Result<Option<(PathBuf, String)>, PgError> {
        if matches!(self, Server::Container { .. }) {
            return Ok(None);
        }
        let major = self.server_major(creds).await?;
        let mut candidates: Vec<PathBuf> = Vec::new();
        if let Some(dir) = std::env::var_os("PG_BIN_DIR").filter(|d| !d.is_empty()) {
            candidates.push(PathBuf::from(dir).join("pg_dump"));
        }
        if let Ok(p) = which::which("pg_dump") {
            candidates.push(p);
        }
        candidates.push(PathBuf::from(format!(
            "/usr/lib/postgresql/{major}/bin/pg_dump"
        )));
        let mut found = Vec::new();
        for path in candidates {
            if !path.is_file() {
                continue;
            }
            let Ok(out) = tokio::process::Command::new(&path)
                .arg("--version")
                .stdin(Stdio::null())
                .output()
                .await
            else {
                continue;
            };
            let version = String::from_utf8_lossy(&out.stdout).trim().to_string();
            if out.status.success() && major_of(&version) == Some(major) {
                if let Server::Url { bin_dir, .. } = self {
                    *bin_dir = path.parent().map(|p| p.to_path_buf());
                }
                return Ok(Some((path, version)));
            }
            found.push(format!("{} is `{version}`", path.display()));
        }
        if found.is_empty() {
            return Err(PgError::NoClient("pg_dump".into()));
        }
        Err(PgError::ClientMismatch {
            server_major: major,
            found: found.join(", "),
        })
    }

    /// A description for logs and the manifest, the run's `secrets` redacted.
    pub fn describe(&self, secrets: &crate::secrets::Secrets) -> String {
        match self {
            Server::Container { info, .. } => format!("container {}", info.name),
            Server::Url { url, .. } => secrets.redact(url),
        }
    }
}

/// From `psql (PostgreSQL) 16.10 (Debian …)`: whether that version has `\restrict`.
fn has_restrict(version: &str) -> bool {
    let Some(v) = version
        .split_once("(PostgreSQL) ")
        .and_then(|(_, r)| r.split_whitespace().next())
    else {
        return false;
    };
    let num = |s: &str| -> Option<u32> {
        let d: String = s.chars().take_while(char::is_ascii_digit).collect();
        d.parse().ok()
    };
    let Some(major) = num(v) else { return false };
    let minor = v.split_once('.').and_then(|(_, m)| num(m)).unwrap_or(0);
    match major {
        18.. => true,
        17 => minor >= 6,
        16 => minor >= 10,
        15 => minor >= 14,
        14 => minor >= 19,
        13 => minor >= 22,
        _ => false,
    }
}

/// `"name"` with embedded quotes doubled.
pub fn ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// `schema.table` → `"schema"."table"` (a name without a schema stays unqualified).
fn qualified(t: &str) -> String {
    match t.split_once('.') {
        Some((s, n)) => format!("{}.{}", ident(s), ident(n)),
        None => ident(t),
    }
}

/// The same URL pointing at another database.
fn with_database(url: &str, db: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) => {
            let enc: String = db
                .bytes()
                .map(|b| {
                    if b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-') {
                        (b as char).to_string()
                    } else {
                        format!("%{b:02X}")
                    }
                })
                .collect();
            u.set_path(&format!("/{enc}"));
            u.to_string()
        }
        Err(_) => url.to_string(),
    }
}

fn check(what: &str, creds: &Credentials, db: &str, out: RunOutcome) -> Result<(), PgError> {
    if out.code == 0 {
        return Ok(());
    }
    // What this module knows is secret (the password, a URL's password) is removed here; the
    // run's other secrets are removed wherever the error is shown.
    let mut stderr = crate::secrets::redact_url_passwords(&out.stderr);
    if let Some(p) = creds.password.as_deref().filter(|p| p.len() >= 3) {
        stderr = stderr.replace(p, "***");
    }
    if stderr.contains("password authentication failed") || stderr.contains("no password supplied")
    {
        return Err(PgError::Auth {
            what: what.into(),
            user: creds.user.clone(),
        });
    }
    if stderr.contains("does not exist") && stderr.contains(&format!("role \"{}\"", creds.user)) {
        return Err(PgError::NoRole {
            what: what.into(),
            user: creds.user.clone(),
        });
    }
    // 126/127: the engine could not execute the program (not found / not executable).
    if (out.code == 126 || out.code == 127)
        && (stderr.is_empty() || stderr.contains("not found") || stderr.contains("no such file"))
    {
        return Err(PgError::NotPostgres {
            what: what.into(),
            code: out.code,
        });
    }
    if stderr.contains("does not exist") && stderr.contains(&format!("database \"{db}\"")) {
        return Err(PgError::NoDatabase {
            what: what.into(),
            db: db.into(),
        });
    }
    let hint = if stderr.contains("server version mismatch") {
        ": the local client is older than the server; install a newer PostgreSQL client or use postgres-container"
    } else if out.code == 137 || out.code == 143 {
        ": the process was killed"
    } else {
        ""
    };
    Err(PgError::Failed {
        what: what.into(),
        code: out.code,
        stderr: format!(
            "{}{hint}",
            if stderr.is_empty() {
                "(no message)".to_string()
            } else {
                stderr
            }
        ),
    })
}

/// Runs a local client program: from `bin_dir` when it has one, else found on PATH.
async fn run_local(
    bin_dir: Option<&std::path::Path>,
    program: &str,
    args: Vec<String>,
    env: Vec<String>,
    stdin: Option<mpsc::Receiver<Bytes>>,
    stdout: Option<mpsc::Sender<Bytes>>,
) -> Result<RunOutcome, PgError> {
    let path: PathBuf = match bin_dir.map(|d| d.join(program)).filter(|p| p.is_file()) {
        Some(p) => p,
        None => which::which(program).map_err(|_| PgError::NoClient(program.into()))?,
    };
    let mut cmd = tokio::process::Command::new(path);
    cmd.args(&args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    for kv in env {
        if let Some((k, v)) = kv.split_once('=') {
            cmd.env(k, v);
        }
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| PgError::Other(format!("cannot start {program}: {e}")))?;
    let mut child_in = child.stdin.take();
    let mut child_out = child.stdout.take().expect("piped");
    let mut child_err = child.stderr.take().expect("piped");
    let feeder = async move {
        if let (Some(mut rx), Some(w)) = (stdin, child_in.as_mut()) {
            while let Some(chunk) = rx.recv().await {
                if w.write_all(&chunk).await.is_err() {
                    break;
                }
            }
        }
        drop(child_in);
    };
    let reader = async move {
        let mut buf = vec![0u8; 256 * 1024];
        let mut sink = stdout;
        loop {
            match child_out.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if let Some(tx) = &sink {
                        if tx.send(Bytes::copy_from_slice(&buf[..n])).await.is_err() {
                            sink = None;
                        }
                    }
                }
            }
        }
    };
    let errs = async move {
        let mut s = Vec::new();
        let _ = child_err.read_to_end(&mut s).await;
        s
    };
    let ((), (), err) = tokio::join!(feeder, reader, errs);
    let status = child
        .wait()
        .await
        .map_err(|e| PgError::Other(format!("{program}: {e}")))?;
    Ok(RunOutcome {
        code: status.code().map(i64::from).unwrap_or(-1),
        stderr: String::from_utf8_lossy(&err).trim().to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restrict_versions() {
        for (v, yes) in [
            ("psql (PostgreSQL) 16.10 (Debian 16.10-1.pgdg120+1)", true),
            ("psql (PostgreSQL) 16.9", false),
            ("psql (PostgreSQL) 15.14", true),
            ("psql (PostgreSQL) 15.13 (Debian 15.13-0+deb12u1)", false),
            ("psql (PostgreSQL) 17.6", true),
            ("psql (PostgreSQL) 18beta1", true),
            ("psql (PostgreSQL) 18.1", true),
            ("psql (PostgreSQL) 13.22", true),
            ("psql (PostgreSQL) 12.22", false),
            ("garbage", false),
        ] {
            assert_eq!(has_restrict(v), yes, "{v}");
        }
    }

    #[test]
    fn quoting() {
        assert_eq!(ident("a\"b"), "\"a\"\"b\"");
        assert_eq!(qualified("billing.invoices"), "\"billing\".\"invoices\"");
        assert_eq!(
            with_database("postgres://u:p@h:5432/app?sslmode=disable", "postgres"),
            "postgres://u:p@h:5432/postgres?sslmode=disable"
        );
        // A name with connection-string syntax stays one path segment.
        let u = with_database(
            "postgres://u:p@h:5432/app",
            "host=10.0.0.1 port=1 dbname=x?sslmode=disable/y",
        );
        assert!(
            u.starts_with("postgres://u:p@h:5432/host%3D10.0.0.1%20port%3D1"),
            "{u}"
        );
        assert!(
            !u.contains('?') && !u.contains(' ') && !u.contains("/y"),
            "{u}"
        );
    }

    #[test]
    fn versions() {
        assert_eq!(major_of("15.8 (Debian 15.8-1.pgdg120+1)"), Some(15));
        assert_eq!(major_of("pg_dump (PostgreSQL) 18.6"), Some(18));
        assert_eq!(major_of("9.6.24"), Some(9));
        assert_eq!(major_of("devel"), None);
        assert!(dump_fits_server(Some("15.19"), Some("15.14 (Debian)")).is_ok());
        assert!(dump_fits_server(Some("16.15"), Some("14.23")).is_ok());
        assert!(dump_fits_server(None, Some("18.6")).is_ok());
        let e = dump_fits_server(Some("15.19"), Some("18.6")).unwrap_err();
        assert!(
            e.contains("pg_dump 18.6") && e.contains("pg_dump 15"),
            "{e}"
        );
    }
}
