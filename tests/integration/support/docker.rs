//! Real Docker for the tests, through the `docker` CLI: the local images, PostgreSQL
//! containers, volumes with an awkward tree, networks, and fingerprints that say whether a
//! restored database or volume is the same as the original. Everything a test creates is
//! named `pbt-<test>-<random>`, labelled, and removed on drop, also when the test panics;
//! what a killed test process left behind is removed by the next test process.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub const PG_IMAGE: &str = "predeploy-test/postgres:15";
pub const BUSYBOX: &str = "predeploy-test/busybox:latest";
/// Every container, volume and network a test makes carries this label ...
pub const LABEL: &str = "predeploy-backup-test";
/// ... and this one with the test process's pid, so that leftovers of a dead process can be
/// told from those of a running one.
pub const PID_LABEL: &str = "predeploy-backup-test.pid";

// ---------------------------------------------------------------------------------------
// The docker CLI

/// Runs `docker <args>`.
pub fn docker<S: AsRef<OsStr>>(args: &[S]) -> Output {
    Command::new("docker")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("the docker CLI runs")
}

/// Runs `docker <args>` and returns its trimmed stdout; panics with its stderr on failure.
pub fn docker_ok<S: AsRef<OsStr>>(args: &[S]) -> String {
    let out = docker(args);
    if !out.status.success() {
        let shown: Vec<String> = args
            .iter()
            .map(|a| a.as_ref().to_string_lossy().to_string())
            .collect();
        panic!(
            "docker {} failed ({}):\n{}{}",
            shown.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Runs `docker <args>` with `input` on stdin.
pub fn docker_stdin<S: AsRef<OsStr>>(
    args: &[S],
    input: impl std::io::Read + Send + 'static,
) -> Output {
    let mut child = Command::new("docker")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the docker CLI runs");
    let mut stdin = child.stdin.take().unwrap();
    let feeder = std::thread::spawn(move || {
        let mut input = input;
        let _ = std::io::copy(&mut input, &mut stdin);
        let _ = stdin.flush();
    });
    let out = child.wait_with_output().expect("docker finishes");
    let _ = feeder.join();
    out
}

pub fn label_args() -> Vec<String> {
    vec![
        "--label".into(),
        format!("{LABEL}=1"),
        "--label".into(),
        format!("{PID_LABEL}={}", std::process::id()),
    ]
}

/// `pbt-<test>-<random>`: unique, and valid as a container, volume and network name.
pub fn unique_name(test: &str) -> String {
    let clean: String = test
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    format!("pbt-{}-{}", clean.trim_matches('-'), super::random_hex(8))
}

/// Runs `scripts/images.sh ARGS` unless `have()` says the images exist, under a file lock so
/// that parallel test processes do not build at the same time (checked again once locked).
pub fn build_images_unless(have: impl Fn() -> bool, args: &[&str]) {
    if have() {
        return;
    }
    let dir = super::target_tmp();
    std::fs::create_dir_all(&dir).unwrap();
    // Not scripts/images.sh's own lock file: it takes that one itself.
    let lock = std::fs::File::create(dir.join("pbt-images.lock")).unwrap();
    lock.lock().expect("lock the images build");
    if have() {
        return;
    }
    let out = Command::new(super::repo_root().join("scripts/images.sh"))
        .args(args)
        .current_dir(super::repo_root())
        .output()
        .expect("scripts/images.sh runs");
    assert!(
        out.status.success(),
        "scripts/images.sh {} failed:\n{}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Makes sure the local images exist (building them with `scripts/images.sh` once if not;
/// a file lock keeps parallel test processes from building at the same time) and removes
/// what test processes that no longer run left behind.
pub fn ensure_images() {
    static READY: OnceLock<()> = OnceLock::new();
    READY.get_or_init(|| {
        let have = |image: &str| docker(&["image", "inspect", image]).status.success();
        build_images_unless(|| have(PG_IMAGE) && have(BUSYBOX), &[]);
        reap_leftovers();
    });
}

/// Removes containers, volumes and networks labelled by a test process that is gone.
fn reap_leftovers() {
    let dead = |pid: &str| {
        let pid = pid.trim();
        !pid.is_empty()
            && pid.bytes().all(|b| b.is_ascii_digit())
            && !Path::new(&format!("/proc/{pid}")).exists()
    };
    let filter = format!("label={LABEL}");
    let list = |args: &[&str]| -> Vec<(String, String)> {
        let out = docker(args);
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split_once(' '))
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    };
    let fmt = format!("{{{{.Names}}}} {{{{.Label \"{PID_LABEL}\"}}}}");
    for (name, pid) in list(&["ps", "-a", "--filter", &filter, "--format", &fmt]) {
        if dead(&pid) {
            let _ = docker(&["rm", "-f", "-v", &name]);
        }
    }
    let fmt = format!("{{{{.Name}}}} {{{{.Label \"{PID_LABEL}\"}}}}");
    for (name, pid) in list(&["volume", "ls", "--filter", &filter, "--format", &fmt]) {
        if dead(&pid) {
            let _ = docker(&["volume", "rm", "-f", &name]);
        }
    }
    for (name, pid) in list(&["network", "ls", "--filter", &filter, "--format", &fmt]) {
        if dead(&pid) {
            let _ = docker(&["network", "rm", &name]);
        }
    }
}

// ---------------------------------------------------------------------------------------
// Containers

/// A container, removed (with its anonymous volumes) on drop.
pub struct Container {
    pub name: String,
}

impl Container {
    /// `docker run -d --name <name> <labels> <args...>` (args: options, image, command).
    pub fn run<S: AsRef<str>>(name: &str, args: &[S]) -> Container {
        ensure_images();
        let c = Container {
            name: name.to_string(),
        };
        let mut all: Vec<String> = vec!["run".into(), "-d".into(), "--name".into(), name.into()];
        all.extend(label_args());
        all.extend(args.iter().map(|a| a.as_ref().to_string()));
        docker_ok(&all);
        c
    }

    /// A busybox container that sleeps (and stops at once on SIGTERM) with `mounts`
    /// (`volume:/path` strings) — stands in for an app that uses a volume.
    pub fn sleeper(test: &str, mounts: &[&str], extra: &[&str]) -> Container {
        let mut args: Vec<String> = vec!["--network".into(), "none".into()];
        for m in mounts {
            args.push("-v".into());
            args.push(m.to_string());
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        args.push(BUSYBOX.into());
        args.extend(
            [
                "sh",
                "-c",
                "trap 'exit 0' TERM INT; while :; do sleep 1; done",
            ]
            .map(String::from),
        );
        Container::run(&unique_name(test), &args)
    }

    pub fn exec<S: AsRef<OsStr>>(&self, args: &[S]) -> Output {
        let mut all: Vec<&OsStr> = vec![OsStr::new("exec"), OsStr::new(&self.name)];
        all.extend(args.iter().map(|a| a.as_ref()));
        docker(&all)
    }

    pub fn exec_ok<S: AsRef<OsStr>>(&self, args: &[S]) -> String {
        let mut all: Vec<&OsStr> = vec![OsStr::new("exec"), OsStr::new(&self.name)];
        all.extend(args.iter().map(|a| a.as_ref()));
        docker_ok(&all)
    }

    /// `docker inspect -f <format>`.
    pub fn inspect(&self, format: &str) -> String {
        docker_ok(&["inspect", "-f", format, &self.name])
    }

    pub fn id(&self) -> String {
        self.inspect("{{.Id}}")
    }

    pub fn is_running(&self) -> bool {
        self.inspect("{{.State.Running}}") == "true"
    }

    /// `.State.StartedAt`: changes when the container is started again.
    pub fn started_at(&self) -> String {
        self.inspect("{{.State.StartedAt}}")
    }

    pub fn logs(&self) -> String {
        let out = docker(&["logs", "--tail", "40", &self.name]);
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = docker(&["rm", "-f", "-v", &self.name]);
    }
}

// ---------------------------------------------------------------------------------------
// PostgreSQL

/// A running PostgreSQL container (`predeploy-test/postgres:15`), ready for queries.
pub struct Pg {
    pub container: Container,
    pub user: String,
    pub db: String,
    pub password: String,
    /// The published port on 127.0.0.1, when asked for.
    pub host_port: Option<u16>,
}

/// How to start a [`Pg`].
pub struct PgBuilder {
    test: String,
    user: String,
    db: String,
    password: String,
    labels: Vec<(String, String)>,
    publish: bool,
    network: Option<String>,
    extra: Vec<String>,
    image: Option<String>,
}

impl PgBuilder {
    /// Another image than [`PG_IMAGE`] (e.g. a `predeploy-test/postgres-bin:N` of the matrix).
    pub fn image(mut self, image: &str) -> Self {
        self.image = Some(image.into());
        self
    }
    pub fn user(mut self, u: &str) -> Self {
        self.user = u.into();
        self
    }
    pub fn db(mut self, d: &str) -> Self {
        self.db = d.into();
        self
    }
    pub fn password(mut self, p: &str) -> Self {
        self.password = p.into();
        self
    }
    /// A container label (e.g. the compose project and service labels).
    pub fn label(mut self, k: &str, v: &str) -> Self {
        self.labels.push((k.into(), v.into()));
        self
    }
    /// Publish 5432 on a free port of 127.0.0.1.
    pub fn publish(mut self) -> Self {
        self.publish = true;
        self
    }
    pub fn network(mut self, n: &str) -> Self {
        self.network = Some(n.into());
        self
    }
    /// More `docker run` options.
    pub fn arg(mut self, a: &str) -> Self {
        self.extra.push(a.into());
        self
    }

    pub fn start(self) -> Pg {
        let name = unique_name(&self.test);
        let mut args: Vec<String> = vec![
            "-e".into(),
            format!("POSTGRES_USER={}", self.user),
            "-e".into(),
            format!("POSTGRES_PASSWORD={}", self.password),
            "-e".into(),
            format!("POSTGRES_DB={}", self.db),
        ];
        for (k, v) in &self.labels {
            args.push("--label".into());
            args.push(format!("{k}={v}"));
        }
        if self.publish {
            args.push("-p".into());
            args.push("127.0.0.1::5432".into());
        }
        match &self.network {
            Some(n) => {
                args.push("--network".into());
                args.push(n.clone());
            }
            None if !self.publish => {
                // Nothing needs to reach it over TCP.
                args.push("--network".into());
                args.push("none".into());
            }
            None => {}
        }
        args.extend(self.extra.iter().cloned());
        args.push(self.image.clone().unwrap_or_else(|| PG_IMAGE.into()));
        // Faster for throwaway test data; not durable, which tests do not need.
        args.extend(
            [
                "-c",
                "fsync=off",
                "-c",
                "synchronous_commit=off",
                "-c",
                "full_page_writes=off",
            ]
            .map(String::from),
        );
        let container = Container::run(&name, &args);
        let mut pg = Pg {
            container,
            user: self.user,
            db: self.db,
            password: self.password,
            host_port: None,
        };
        pg.wait_ready();
        if self.publish {
            let port = docker_ok(&["port", &pg.container.name, "5432/tcp"]);
            let port = port
                .lines()
                .find(|l| l.starts_with("127.0.0.1:"))
                .and_then(|l| l.rsplit(':').next())
                .and_then(|p| p.trim().parse().ok())
                .unwrap_or_else(|| panic!("no 127.0.0.1 port published: {port}"));
            pg.host_port = Some(port);
        }
        pg
    }
}

impl Pg {
    /// User and database `schedgen`, a random password, no network.
    pub fn builder(test: &str) -> PgBuilder {
        PgBuilder {
            test: test.into(),
            user: "schedgen".into(),
            db: "schedgen".into(),
            password: format!("pw-{}", super::random_hex(12)),
            labels: vec![],
            publish: false,
            network: None,
            extra: vec![],
            image: None,
        }
    }

    pub fn start(test: &str) -> Pg {
        Pg::builder(test).start()
    }

    /// A started, seeded (`tests/fixtures/seed.sql`) database.
    pub fn seeded(test: &str) -> Pg {
        let pg = Pg::start(test);
        pg.load_seed();
        pg
    }

    /// A seeded database ([`Pg::seeded`]) and a volume with `spec`'s tree, made side by side
    /// (the database's start is the slow part): what a backup of "the stack" needs.
    pub fn seeded_with_volume(test: &str, spec: &TreeSpec) -> (Pg, Volume) {
        std::thread::scope(|s| {
            let pg = s.spawn(|| Pg::seeded(test));
            let vol = Volume::with_tree(test, spec);
            (pg.join().expect("PostgreSQL starts"), vol)
        })
    }

    pub fn name(&self) -> &str {
        &self.container.name
    }

    /// Waits until the real server (not the init-time one) answers a query over the socket:
    /// the image restarts the server once during initialisation.
    fn wait_ready(&self) {
        let start = Instant::now();
        let timeout = Duration::from_secs(180);
        loop {
            let state = docker(&["inspect", "-f", "{{.State.Status}}", self.name()]);
            let state = String::from_utf8_lossy(&state.stdout).trim().to_string();
            if state != "running" {
                panic!(
                    "PostgreSQL container {} is `{state}` while starting:\n{}",
                    self.name(),
                    self.container.logs()
                );
            }
            let ready = self
                .container
                .exec(&["pg_isready", "-q", "-U", &self.user, "-d", &self.db])
                .status
                .success()
                && {
                    let o = self.container.exec(&[
                        "psql", "-X", "-q", "-t", "-A", "-U", &self.user, "-d", &self.db, "-c",
                        "select 1",
                    ]);
                    o.status.success() && String::from_utf8_lossy(&o.stdout).trim() == "1"
                };
            if ready {
                return;
            }
            if start.elapsed() > timeout {
                panic!(
                    "PostgreSQL in {} not ready after {timeout:?}:\n{}",
                    self.name(),
                    self.container.logs()
                );
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// Runs SQL in the test database; returns unaligned, tuples-only output.
    pub fn psql(&self, sql: &str) -> String {
        self.psql_in(&self.db, sql)
    }

    /// Runs SQL in database `db`.
    pub fn psql_in(&self, db: &str, sql: &str) -> String {
        self.container.exec_ok(&[
            "psql",
            "-X",
            "-q",
            "-t",
            "-A",
            "-F",
            "\u{1f}",
            "-v",
            "ON_ERROR_STOP=1",
            "-U",
            &self.user,
            "-d",
            db,
            "-c",
            sql,
        ])
    }

    /// Feeds SQL to psql on stdin (stops at the first error, which fails the test).
    pub fn load(&self, sql: impl std::io::Read + Send + 'static) {
        let out = docker_stdin(
            &[
                "exec",
                "-i",
                self.name(),
                "psql",
                "-X",
                "-q",
                "-v",
                "ON_ERROR_STOP=1",
                "-U",
                &self.user,
                "-d",
                &self.db,
            ],
            sql,
        );
        assert!(
            out.status.success(),
            "loading SQL into {} failed:\n{}",
            self.name(),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Loads `tests/fixtures/seed.sql`.
    pub fn load_seed(&self) {
        let f = std::fs::File::open(super::fixtures::seed_sql_path()).expect("seed.sql");
        self.load(f);
    }

    /// Restores a gzipped plain-SQL dump the way the seed's manual rollback does:
    /// `gunzip -c FILE | docker exec -i C psql -U USER -d DB` (GNU gzip, stop at the first
    /// error so that a broken restore fails the test).
    pub fn restore_gz(&self, dump: &Path) {
        let mut gunzip = Command::new("gzip")
            .arg("-dc")
            .arg(dump)
            .stdout(Stdio::piped())
            .spawn()
            .expect("gzip runs");
        let stdout = gunzip.stdout.take().unwrap();
        self.load(stdout);
        assert!(
            gunzip.wait().unwrap().success(),
            "gzip -dc {} failed",
            dump.display()
        );
    }

    /// Per-table row counts and content checksums, sequence values and the list of schema
    /// objects of every non-system schema: equal fingerprints mean equal data.
    pub fn fingerprint(&self) -> DbFingerprint {
        self.fingerprint_of(&self.db)
    }

    pub fn fingerprint_of(&self, db: &str) -> DbFingerprint {
        const USER_SCHEMAS: &str =
            "NOT IN ('pg_catalog', 'information_schema', 'pg_toast') AND {} NOT LIKE 'pg_temp%' AND {} NOT LIKE 'pg_toast_temp%'";
        let cond = |col: &str| format!("{col} {}", USER_SCHEMAS.replace("{}", col));
        let tables = self.psql_in(
            db,
            &format!(
                "SELECT schemaname, tablename FROM pg_tables WHERE {} ORDER BY 1, 2",
                cond("schemaname")
            ),
        );
        let mut fp = DbFingerprint::default();
        let mut selects = vec![];
        for line in tables.lines().filter(|l| !l.is_empty()) {
            let (schema, table) = line.split_once('\u{1f}').expect("schema\\x1ftable");
            let key = format!("{schema}.{table}");
            selects.push(format!(
                "SELECT {}, count(*), md5(coalesce(string_agg(t::text, E'\\n' ORDER BY t::text), '')) FROM {}.{} AS t",
                literal(&key),
                ident(schema),
                ident(table)
            ));
        }
        if !selects.is_empty() {
            for line in self.psql_in(db, &selects.join(" UNION ALL ")).lines() {
                let parts: Vec<&str> = line.split('\u{1f}').collect();
                if let [name, count, md5] = parts[..] {
                    fp.tables
                        .insert(name.to_string(), (count.parse().unwrap(), md5.to_string()));
                }
            }
        }
        for line in self
            .psql_in(
                db,
                &format!(
                    "SELECT schemaname || '.' || sequencename, coalesce(last_value::text, 'not called') FROM pg_sequences WHERE {} ORDER BY 1",
                    cond("schemaname")
                ),
            )
            .lines()
        {
            if let Some((k, v)) = line.split_once('\u{1f}') {
                fp.sequences.insert(k.to_string(), v.to_string());
            }
        }
        let objects = self.psql_in(
            db,
            &format!(
                "SELECT n.nspname || '.' || c.relname || ' ' || c.relkind::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE {} \
                 UNION ALL SELECT n.nspname || '.' || p.proname || '()' FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE {} \
                 UNION ALL SELECT n.nspname || '.' || t.typname || ' type ' || t.typtype::text FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace WHERE t.typtype = 'e' AND {} \
                 UNION ALL SELECT 'comment on ' || c.relname || ': ' || d.description FROM pg_description d JOIN pg_class c ON c.oid = d.objoid AND d.classoid = 'pg_class'::regclass JOIN pg_namespace n ON n.oid = c.relnamespace WHERE {} \
                 ORDER BY 1",
                cond("n.nspname"),
                cond("n.nspname"),
                cond("n.nspname"),
                cond("n.nspname")
            ),
        );
        fp.objects = objects.lines().map(String::from).collect();
        fp
    }

    /// `postgres://user:password@127.0.0.1:port/db` (needs [`PgBuilder::publish`]).
    pub fn url(&self, password: &str) -> String {
        format!(
            "postgres://{}:{}@127.0.0.1:{}/{}",
            self.user,
            password,
            self.host_port.expect("started with .publish()"),
            self.db
        )
    }
}

/// `"name"` with embedded quotes doubled.
pub fn ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// `'text'` with embedded quotes doubled.
pub fn literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// What [`Pg::fingerprint`] found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DbFingerprint {
    /// `schema.table` → (rows, md5 of the sorted rows' text).
    pub tables: BTreeMap<String, (u64, String)>,
    /// `schema.sequence` → last value.
    pub sequences: BTreeMap<String, String>,
    /// Relations (with their kind), functions, enum types and table comments.
    pub objects: Vec<String>,
}

impl DbFingerprint {
    pub fn row_counts(&self) -> BTreeMap<String, u64> {
        self.tables
            .iter()
            .map(|(k, (n, _))| (k.clone(), *n))
            .collect()
    }

    /// Human-readable differences (empty when equal).
    pub fn diff(&self, other: &DbFingerprint) -> Vec<String> {
        let mut d = vec![];
        diff_maps("table", &self.tables, &other.tables, &mut d);
        diff_maps("sequence", &self.sequences, &other.sequences, &mut d);
        let a: std::collections::BTreeSet<_> = self.objects.iter().collect();
        let b: std::collections::BTreeSet<_> = other.objects.iter().collect();
        for x in a.difference(&b) {
            d.push(format!("object only in the first: {x}"));
        }
        for x in b.difference(&a) {
            d.push(format!("object only in the second: {x}"));
        }
        d
    }

    pub fn assert_same(&self, other: &DbFingerprint, what: &str) {
        let d = self.diff(other);
        assert!(
            d.is_empty(),
            "{what}: the databases differ:\n{}",
            d.join("\n")
        );
    }
}

fn diff_maps<V: PartialEq + std::fmt::Debug>(
    what: &str,
    a: &BTreeMap<String, V>,
    b: &BTreeMap<String, V>,
    out: &mut Vec<String>,
) {
    for (k, v) in a {
        match b.get(k) {
            None => out.push(format!("{what} {k}: only in the first ({v:?})")),
            Some(w) if w != v => out.push(format!("{what} {k}: {v:?} vs {w:?}")),
            _ => {}
        }
    }
    for (k, w) in b {
        if !a.contains_key(k) {
            out.push(format!("{what} {k}: only in the second ({w:?})"));
        }
    }
}

// ---------------------------------------------------------------------------------------
// Volumes

/// A Docker volume, removed on drop (after the test's containers that use it).
pub struct Volume {
    pub name: String,
}

/// What to put in a volume.
#[derive(Clone, Debug)]
pub struct TreeSpec {
    /// Nested folders, symlinks, a hard link, empty folders, a 200-character name inside a
    /// 200-character folder, hidden files, files owned by 70:70 and 1000:1000, modes 0640,
    /// 0750, 0400, 0755, a setgid folder and a sticky one.
    pub awkward: bool,
    /// Fake PDFs (`%PDF-1.4`, random bytes, `%%EOF`) under `schedgen-pdfs/schedules/`.
    pub pdfs: usize,
    pub pdf_kib: usize,
    /// One incompressible file of this many MiB (`random.bin`).
    pub random_mib: usize,
}

impl TreeSpec {
    /// The awkward tree with a dozen PDFs.
    pub fn awkward() -> TreeSpec {
        TreeSpec {
            awkward: true,
            pdfs: 12,
            pdf_kib: 24,
            random_mib: 0,
        }
    }

    /// Only `n` incompressible MiB (plus a small README), for size-bound tests.
    pub fn random(mib: usize) -> TreeSpec {
        TreeSpec {
            awkward: false,
            pdfs: 0,
            pdf_kib: 0,
            random_mib: mib,
        }
    }

    /// The shell script (busybox sh) that builds the tree under `/data`.
    pub fn script(&self) -> String {
        let mut s = String::from("set -eu\ncd /data\n");
        s.push_str("printf 'predeploy-backup test volume\\n' > README.txt\n");
        if self.awkward {
            let long_dir = format!("dir-{}", "d".repeat(196));
            let long_file = format!("file-{}", "f".repeat(191));
            assert_eq!(long_dir.len(), 200);
            assert_eq!(long_file.len(), 196);
            let long_name = format!("{long_file}.txt");
            assert_eq!(long_name.len(), 200);
            s.push_str(&format!(
                r#"mkdir -p deep/a/b/c/d/e/f/g/h empty-dir 'nested empty/inner/innermost' 'with space/ünï cödé' .minio.sys/buckets
printf 'the deepest file\n' > deep/a/b/c/d/e/f/g/h/leaf.txt
printf 'spaces and unicode\n' > 'with space/ünï cödé/file name.txt'
printf '{{"version":"1","format":"fs"}}\n' > .minio.sys/format.json
printf 'hidden\n' > .hidden
: > empty-file
ln -s deep/a/b/c/d/e/f/g/h/leaf.txt link-to-leaf
ln -s empty-dir link-to-dir
ln -s ../h/leaf.txt deep/a/b/c/d/e/f/g/relative-link
ln -s no-such-file dangling-link
ln deep/a/b/c/d/e/f/g/h/leaf.txt hard-link-to-leaf
mkdir -p {long_dir}
printf 'a long name in a long folder\n' > {long_dir}/{long_name}
printf 'long name at the top\n' > {long_name}
mkdir owned-70
printf 'secret\n' > owned-70/secret.txt
chown -R 70:70 owned-70
chmod 0640 owned-70/secret.txt
chmod 0750 owned-70
mkdir shared-setgid
chown 0:70 shared-setgid
chmod 2775 shared-setgid
printf 'inherits group 70\n' > shared-setgid/inherited.txt
mkdir sticky
chmod 1777 sticky
printf 'read only\n' > read-only.txt
chmod 0400 read-only.txt
printf '#!/bin/sh\necho hi\n' > run.sh
chmod 0755 run.sh
"#
            ));
        }
        if self.pdfs > 0 {
            s.push_str(&format!(
                r#"mkdir -p schedgen-pdfs/schedules/2024/09 'schedgen-pdfs/exports/2024 Q3'
i=0
while [ $i -lt {n} ]; do
  i=$((i + 1))
  f=schedgen-pdfs/schedules/2024/09/schedule-$i.pdf
  {{ printf '%%PDF-1.4\n%%\342\343\317\323\n'; head -c $(( {kib} * 1024 + i * 97 )) /dev/urandom; printf '\n%%%%EOF\n'; }} > "$f"
done
{{ printf '%%PDF-1.4\n'; head -c 3000 /dev/urandom; printf '\n%%%%EOF\n'; }} > 'schedgen-pdfs/exports/2024 Q3/private.pdf'
chown -R 1000:1000 schedgen-pdfs
chmod 0640 'schedgen-pdfs/exports/2024 Q3/private.pdf'
chmod 0750 'schedgen-pdfs/exports/2024 Q3'
"#,
                n = self.pdfs,
                kib = self.pdf_kib
            ));
        }
        if self.random_mib > 0 {
            s.push_str(&format!(
                "head -c {} /dev/urandom > random.bin\n",
                self.random_mib * 1024 * 1024
            ));
        }
        s
    }
}

impl Volume {
    /// A new, empty volume `pbt-<test>-<random>`.
    pub fn create(test: &str) -> Volume {
        Volume::create_named(&unique_name(test))
    }

    /// A new, empty volume with exactly this name.
    pub fn create_named(name: &str) -> Volume {
        ensure_images();
        let mut args: Vec<String> = vec!["volume".into(), "create".into()];
        args.extend(label_args());
        args.push(name.into());
        let v = Volume { name: name.into() };
        docker_ok(&args);
        v
    }

    /// A new volume filled by [`TreeSpec::script`].
    pub fn with_tree(test: &str, spec: &TreeSpec) -> Volume {
        let v = Volume::create(test);
        v.populate(spec);
        v
    }

    pub fn populate(&self, spec: &TreeSpec) {
        let out = self.busybox(&spec.script(), &[], false);
        assert!(
            out.status.success(),
            "filling volume {} failed:\n{}",
            self.name,
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Runs a busybox `sh -c script` with this volume at `/data` (read-only if asked) and
    /// more `-v` mounts.
    pub fn busybox(&self, script: &str, mounts: &[String], read_only: bool) -> Output {
        let mut all = vec![format!(
            "{}:/data{}",
            self.name,
            if read_only { ":ro" } else { "" }
        )];
        all.extend(mounts.iter().cloned());
        busybox_run(&all, script)
    }

    /// Extracts a `.tar.gz` into this volume the way the seed's manual rollback does:
    /// `tar xzf /backup/FILE -C /data` in a busybox container, as root (owners and modes
    /// as in the archive).
    pub fn restore_tar_gz(&self, archive: &Path) {
        let dir = archive.parent().unwrap().canonicalize().unwrap();
        let file = archive.file_name().unwrap().to_string_lossy().to_string();
        let out = self.busybox(
            &format!("tar xzf /backup/'{file}' -C /data"),
            &[format!("{}:/backup:ro", dir.display())],
            false,
        );
        assert!(
            out.status.success(),
            "tar xzf {} into {} failed:\n{}",
            archive.display(),
            self.name,
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Every entry as one line that any name survives (newlines included): the name and
    /// the symlink target in hex, type and mode, owner, group, size, and the content's MD5;
    /// sorted. For trees whose names [`tree_fingerprint`]'s line format cannot hold.
    pub fn exact_listing(&self) -> String {
        let script = r#"cd /data
find . -exec sh -c '
hex() { od -An -tx1 | tr -d " \n"; }
for f do
  n=$(printf %s "$f" | hex)
  t=$(stat -c "%f|%u|%g|%s" "$f")
  if [ -L "$f" ]; then c=$(readlink "$f" | hex)
  elif [ -f "$f" ]; then c=$(md5sum < "$f" | cut -d" " -f1)
  else c=-; fi
  echo "$n|$t|$c"
done' sh {} + | sort
"#;
        let out = self.busybox(script, &[], true);
        assert!(
            out.status.success(),
            "listing {} failed:\n{}",
            self.name,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// See [`tree_fingerprint`].
    pub fn fingerprint(&self) -> TreeFingerprint {
        tree_fingerprint(&self.name)
    }
}

/// Runs `sh -c script` in a throwaway busybox container (no network) with `-v` mounts.
pub fn busybox_run(mounts: &[String], script: &str) -> Output {
    ensure_images();
    let mut args: Vec<String> = vec![
        "run".into(),
        "--rm".into(),
        "--network".into(),
        "none".into(),
    ];
    args.extend(label_args());
    for m in mounts {
        args.push("-v".into());
        args.push(m.clone());
    }
    args.extend([
        BUSYBOX.to_string(),
        "sh".into(),
        "-c".into(),
        script.to_string(),
    ]);
    docker(&args)
}

/// Every entry's type, owner, group, mode (with setuid/setgid/sticky), size, link count
/// and hard-link group, symlink target and content hash, read by busybox `stat`, `md5sum`
/// and `readlink` in a container that mounts `source` (a volume name, or an absolute host
/// folder) read-only at `/data`.
pub fn tree_fingerprint(source: &str) -> TreeFingerprint {
    let script = r#"cd /data
find . -exec stat -c '%n|%f|%u|%g|%s|%h|%i|%F' {} +
echo '--md5--'
find . -type f -exec md5sum {} +
echo '--links--'
find . -type l -exec sh -c 'for l do printf "%s|%s\n" "$l" "$(readlink "$l")"; done' sh {} +
"#;
    let out = busybox_run(&[format!("{source}:/data:ro")], script);
    assert!(
        out.status.success(),
        "fingerprint of {source} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    TreeFingerprint::parse(&String::from_utf8_lossy(&out.stdout))
}

impl Drop for Volume {
    fn drop(&mut self) {
        // Our own containers that still use it go first.
        let ids = docker(&[
            "ps",
            "-aq",
            "--filter",
            &format!("volume={}", self.name),
            "--filter",
            &format!("label={LABEL}"),
        ]);
        for id in String::from_utf8_lossy(&ids.stdout).split_whitespace() {
            let _ = docker(&["rm", "-f", "-v", id]);
        }
        let _ = docker(&["volume", "rm", "-f", &self.name]);
    }
}

/// One entry of a [`TreeFingerprint`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TreeEntry {
    /// `regular file`, `directory`, `symbolic link`, ...
    pub kind: String,
    /// Permission bits with setuid/setgid/sticky, octal (`2775`).
    pub mode: String,
    pub uid: u32,
    pub gid: u32,
    /// Size of files and links (folder sizes depend on the file system's history).
    pub size: Option<u64>,
    /// Link count of non-folders (a hard link shows as 2).
    pub nlink: Option<u64>,
    pub symlink_target: Option<String>,
    pub md5: Option<String>,
    /// The other names of the same inode (hard links).
    pub hard_links: Vec<String>,
}

/// A volume's tree as [`Volume::fingerprint`] read it, keyed by path (`.`, `./a/b`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TreeFingerprint {
    pub entries: BTreeMap<String, TreeEntry>,
}

impl TreeFingerprint {
    fn parse(text: &str) -> TreeFingerprint {
        let mut fp = TreeFingerprint::default();
        let mut inodes: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let mut section = 0;
        for line in text.lines() {
            match line {
                "--md5--" => section = 1,
                "--links--" => section = 2,
                _ if section == 0 => {
                    let p: Vec<&str> = line.rsplitn(8, '|').collect();
                    let [kind, inode, nlink, size, gid, uid, mode_hex, name] = p[..] else {
                        panic!("unexpected stat line {line:?}");
                    };
                    let mode = u32::from_str_radix(mode_hex, 16).unwrap();
                    let is_dir = kind == "directory";
                    let nlink: u64 = nlink.parse().unwrap();
                    if !is_dir && nlink > 1 {
                        inodes
                            .entry(inode.to_string())
                            .or_default()
                            .push(name.to_string());
                    }
                    fp.entries.insert(
                        name.to_string(),
                        TreeEntry {
                            kind: kind.to_string(),
                            mode: format!("{:04o}", mode & 0o7777),
                            uid: uid.parse().unwrap(),
                            gid: gid.parse().unwrap(),
                            size: (!is_dir).then(|| size.parse().unwrap()),
                            nlink: (!is_dir).then_some(nlink),
                            ..Default::default()
                        },
                    );
                }
                _ if section == 1 => {
                    if let Some((hash, name)) = line.split_once("  ") {
                        if let Some(e) = fp.entries.get_mut(name) {
                            e.md5 = Some(hash.to_string());
                        }
                    }
                }
                _ => {
                    if let Some((name, target)) = line.split_once('|') {
                        if let Some(e) = fp.entries.get_mut(name) {
                            e.symlink_target = Some(target.to_string());
                        }
                    }
                }
            }
        }
        for names in inodes.values() {
            for n in names {
                let others: Vec<String> = names.iter().filter(|o| *o != n).cloned().collect();
                if let Some(e) = fp.entries.get_mut(n) {
                    e.hard_links = others;
                }
            }
        }
        fp
    }

    /// Human-readable differences (empty when equal).
    pub fn diff(&self, other: &TreeFingerprint) -> Vec<String> {
        let mut d = vec![];
        diff_maps("entry", &self.entries, &other.entries, &mut d);
        d
    }

    pub fn assert_same(&self, other: &TreeFingerprint, what: &str) {
        let d = self.diff(other);
        assert!(d.is_empty(), "{what}: the trees differ:\n{}", d.join("\n"));
    }

    /// Sum of regular-file sizes, each hard-linked inode counted once (as a tar stores it).
    pub fn file_bytes(&self) -> u64 {
        self.entries
            .iter()
            .filter(|(_, e)| e.kind.starts_with("regular"))
            .filter(|(name, e)| e.hard_links.iter().all(|o| o > *name))
            .filter_map(|(_, e)| e.size)
            .sum()
    }

    /// The same tree with the hard-link information left out (link counts and groups).
    pub fn without_hard_links(&self) -> TreeFingerprint {
        let mut f = self.clone();
        for e in f.entries.values_mut() {
            e.hard_links.clear();
            if e.nlink.is_some() {
                e.nlink = Some(1);
            }
        }
        f
    }
}

// ---------------------------------------------------------------------------------------
// Networks and events

/// A user-defined bridge network, removed on drop.
pub struct Network {
    pub name: String,
}

impl Network {
    pub fn create(test: &str) -> Network {
        ensure_images();
        let name = unique_name(test);
        let mut args: Vec<String> = vec!["network".into(), "create".into()];
        args.extend(label_args());
        args.push(name.clone());
        let n = Network { name };
        docker_ok(&args);
        n
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        let _ = docker(&["network", "rm", &self.name]);
    }
}

/// One Docker engine event.
#[derive(Clone, Debug)]
pub struct Event {
    pub time_nano: u128,
    /// `container`, `volume`, ...
    pub kind: String,
    /// `create`, `start`, `die`, `stop`, `destroy`, ...
    pub action: String,
    /// The actor's `name` attribute (container name).
    pub name: String,
}

/// Seconds since the epoch with nanoseconds, as `docker events --since/--until` take them.
pub fn docker_time_now() -> String {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    format!("{}.{:09}", d.as_secs(), d.subsec_nanos())
}

/// Container events between two [`docker_time_now`] instants, oldest first.
pub fn container_events(since: &str, until: &str) -> Vec<Event> {
    let out = docker_ok(&[
        "events",
        "--since",
        since,
        "--until",
        until,
        "--filter",
        "type=container",
        "--format",
        "{{.TimeNano}}|{{.Type}}|{{.Action}}|{{.Actor.Attributes.name}}",
    ]);
    let mut v: Vec<Event> = out
        .lines()
        .filter_map(|l| {
            let p: Vec<&str> = l.splitn(4, '|').collect();
            Some(Event {
                time_nano: p.first()?.parse().ok()?,
                kind: p.get(1)?.to_string(),
                action: p.get(2)?.to_string(),
                name: p.get(3)?.to_string(),
            })
        })
        .collect();
    v.sort_by_key(|e| e.time_nano);
    v
}
