//! Runs the built binary the way the GitHub runner runs a Docker container action, or as a
//! plain CLI, and collects everything a user (or the runner) would look at afterwards.
//!
//! The runner starts the action's container with *only* what it passes: `GITHUB_*` facts,
//! the file-command paths, and one `INPUT_<NAME>` per input declared in `action.yml`
//! (upper-cased, hyphens kept), with `""` for an input the workflow did not set. So
//! [`Action`] clears the environment and sets exactly that; [`Action::runner_defaults`]
//! additionally fills the `default:`s of `action.yml` the way the runner does.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use super::gh_output::{parse_commands, parse_github_output, Annotation};

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_predeploy-backup");

/// What the runner passes for the commit and branch unless a test says otherwise.
pub const SHA: &str = "8f14e45fceea167a5a36dedd4bea2543a1b2c3d4";
pub const REF_NAME: &str = "main";
pub const REPOSITORY: &str = "org/schedgen";

/// How long one run may take before the test kills it and fails.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(240);

/// The inputs of `action.yml`, in file order, with their defaults (if any).
pub fn action_inputs() -> &'static Vec<(String, Option<String>)> {
    static INPUTS: OnceLock<Vec<(String, Option<String>)>> = OnceLock::new();
    INPUTS.get_or_init(|| {
        let path = super::repo_root().join("action.yml");
        let text =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let doc: serde_json::Value = serde_saphyr::from_str(&text)
            .unwrap_or_else(|e| panic!("action.yml does not parse: {e}"));
        let inputs = doc
            .get("inputs")
            .and_then(|i| i.as_object())
            .expect("action.yml has inputs");
        // serde_json's map is sorted; keep the file's order by scanning the text.
        let mut names: Vec<(usize, String)> = inputs
            .keys()
            .map(|k| {
                (
                    text.find(&format!("\n  {k}:")).unwrap_or(usize::MAX),
                    k.clone(),
                )
            })
            .collect();
        names.sort();
        names
            .into_iter()
            .map(|(_, k)| {
                let default = inputs[&k].get("default").map(|d| match d {
                    serde_json::Value::String(s) => s.clone(),
                    other => other.to_string(),
                });
                (k, default)
            })
            .collect()
    })
}

/// A workspace (`GITHUB_WORKSPACE`, the working folder) and, beside it, the runner's temp
/// folder for the file-command files. Removed on drop.
pub struct Workspace {
    dir: tempfile::TempDir,
    runner_temp: tempfile::TempDir,
}

impl Workspace {
    pub fn new() -> Arc<Workspace> {
        let dir = tempfile::Builder::new()
            .prefix("pbt-ws-")
            .tempdir()
            .expect("workspace");
        let runner_temp = tempfile::Builder::new()
            .prefix("pbt-runner-")
            .tempdir()
            .expect("runner temp");
        Arc::new(Workspace { dir, runner_temp })
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn join(&self, rel: impl AsRef<Path>) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn runner_temp(&self) -> &Path {
        self.runner_temp.path()
    }

    /// `.last-deployment-backup`, if it exists.
    pub fn pointer(&self) -> Option<String> {
        std::fs::read_to_string(self.join(".last-deployment-backup")).ok()
    }

    /// Entries of the backup root that look like a backup, finished or not:
    /// `pre-deployment-*` and hidden `.pre-deployment-*` (e.g. `.partial`) folders.
    pub fn backup_folders(&self, root: &str) -> Vec<String> {
        super::list_dir(&self.join(root))
            .into_iter()
            .filter(|n| n.starts_with("pre-deployment-") || n.starts_with(".pre-deployment-"))
            .collect()
    }

    /// Sources `.last-deployment-backup` with `sh` and returns the seed's keys as `sh` sees
    /// them (the file must be valid shell that sets them, and nothing else runs).
    pub fn source_pointer(&self) -> BTreeMap<String, String> {
        const KEYS: [&str; 7] = [
            "DEPLOYMENT_TIMESTAMP",
            "BACKUP_DIR",
            "DB_BACKUP",
            "MINIO_BACKUP",
            "GIT_COMMIT",
            "GIT_BRANCH",
            "MANIFEST",
        ];
        // NUL-separated so that values with newlines come back whole.
        let script = format!(
            "set -eu; . ./.last-deployment-backup; for k in {}; do eval \"v=\\${{$k}}\"; printf '%s=%s\\0' \"$k\" \"$v\"; done",
            KEYS.join(" ")
        );
        let out = Command::new("sh")
            .arg("-c")
            .arg(script)
            .current_dir(self.path())
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .output()
            .expect("sh runs");
        assert!(
            out.status.success(),
            "sourcing .last-deployment-backup with sh failed: {}\n--- file ---\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.pointer().unwrap_or_default()
        );
        String::from_utf8_lossy(&out.stdout)
            .split('\0')
            .filter(|s| !s.is_empty())
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    pub fn action(self: &Arc<Self>, mode: &str) -> Action {
        Action::in_workspace(self, mode)
    }

    pub fn cli<S: AsRef<str>>(self: &Arc<Self>, args: &[S]) -> Cli {
        Cli::new(args).current_dir(self.path()).keep(self)
    }
}

/// One action step: `Action::new("backup").input("volumes", "x").run()`.
pub struct Action {
    mode: Option<String>,
    inputs: BTreeMap<String, String>,
    env: BTreeMap<String, String>,
    ws: Arc<Workspace>,
    runner_defaults: bool,
    timeout: Duration,
}

impl Action {
    /// A step in a fresh workspace. `mode` becomes `INPUT_MODE` (`""` leaves it unset).
    pub fn new(mode: &str) -> Action {
        Action::in_workspace(&Workspace::new(), mode)
    }

    /// A step in an existing workspace (a later step of the same job).
    pub fn in_workspace(ws: &Arc<Workspace>, mode: &str) -> Action {
        let mut env = BTreeMap::new();
        for (k, v) in [
            ("GITHUB_SHA", SHA),
            ("GITHUB_REF_NAME", REF_NAME),
            ("GITHUB_REPOSITORY", REPOSITORY),
            ("GITHUB_RUN_ID", "4242"),
            ("GITHUB_RUN_ATTEMPT", "1"),
            ("GITHUB_WORKFLOW", "deploy"),
            ("GITHUB_JOB", "deploy"),
            ("GITHUB_SERVER_URL", "https://github.com"),
            ("GITHUB_API_URL", "https://api.github.com"),
            ("RUNNER_OS", "Linux"),
        ] {
            env.insert(k.to_string(), v.to_string());
        }
        Action {
            mode: Some(mode.to_string()),
            inputs: BTreeMap::new(),
            env,
            ws: ws.clone(),
            runner_defaults: false,
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// Sets an input (`with:`). Names are as in `action.yml` (`db-backup`).
    pub fn input(mut self, name: &str, value: impl Into<String>) -> Action {
        self.inputs.insert(name.to_string(), value.into());
        self
    }

    /// The database inputs of a backup of `pg`: its container, database, user and password.
    pub fn postgres(self, pg: &crate::support::docker::Pg) -> Action {
        self.input("postgres-container", pg.name())
            .input("postgres-db", &pg.db)
            .input("postgres-user", &pg.user)
            .input("postgres-password", &pg.password)
    }

    /// The database inputs of a rollback into `pg`: its container and password (the
    /// database and user come from the manifest, as in the README's rollback workflow).
    pub fn postgres_target(self, pg: &crate::support::docker::Pg) -> Action {
        self.input("postgres-container", pg.name())
            .input("postgres-password", &pg.password)
    }

    /// Sets (or, with `None`, removes) an extra environment variable.
    pub fn env(mut self, key: &str, value: impl Into<String>) -> Action {
        self.env.insert(key.to_string(), value.into());
        self
    }

    pub fn without_env(mut self, key: &str) -> Action {
        self.env.remove(key);
        self
    }

    /// Unset inputs get `action.yml`'s `default:` (as the runner does) instead of `""`.
    pub fn runner_defaults(mut self) -> Action {
        self.runner_defaults = true;
        self
    }

    pub fn timeout(mut self, t: Duration) -> Action {
        self.timeout = t;
        self
    }

    pub fn workspace(&self) -> &Arc<Workspace> {
        &self.ws
    }

    /// The environment the binary gets, in full.
    pub fn environment(&self) -> BTreeMap<String, String> {
        let mut env = self.env.clone();
        let ws = self.ws.path().display().to_string();
        env.insert("GITHUB_ACTIONS".into(), "true".into());
        env.insert("CI".into(), "true".into());
        env.insert("GITHUB_WORKSPACE".into(), ws);
        // The runner's /github/home: a folder of its own that exists.
        let home = self.ws.runner_temp().join("home");
        let _ = std::fs::create_dir_all(&home);
        env.insert("HOME".into(), home.display().to_string());
        env.insert(
            "PATH".into(),
            std::env::var("PATH").unwrap_or_else(|_| "/usr/bin:/bin".into()),
        );
        let mut declared = std::collections::HashSet::new();
        for (name, default) in action_inputs() {
            declared.insert(name.clone());
            let value = match (self.inputs.get(name), name.as_str(), &self.mode) {
                (Some(v), _, _) => v.clone(),
                (None, "mode", Some(m)) => m.clone(),
                (None, _, _) if self.runner_defaults => default.clone().unwrap_or_default(),
                _ => String::new(),
            };
            env.insert(format!("INPUT_{}", name.to_ascii_uppercase()), value);
        }
        // An input action.yml does not declare still reaches the binary (the runner warns
        // "Unexpected input" and passes it anyway).
        for (name, v) in &self.inputs {
            if !declared.contains(name) {
                env.insert(format!("INPUT_{}", name.to_ascii_uppercase()), v.clone());
            }
        }
        env
    }

    fn command(&self, output: &Path, summary: &Path) -> Command {
        let mut cmd = Command::new(BIN);
        cmd.env_clear()
            .envs(self.environment())
            .env("GITHUB_OUTPUT", output)
            .env("GITHUB_STEP_SUMMARY", summary)
            .current_dir(self.ws.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        cmd
    }

    /// Starts the step and returns at once (for tests that act while it runs).
    pub fn spawn(self) -> Running {
        let id = super::random_hex(8);
        let output = self.ws.runner_temp().join(format!("set_output_{id}"));
        let summary = self.ws.runner_temp().join(format!("step_summary_{id}"));
        // The runner creates both files empty before the step.
        std::fs::write(&output, "").unwrap();
        std::fs::write(&summary, "").unwrap();
        let child = self
            .command(&output, &summary)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {BIN}: {e}"));
        Running::new(
            child,
            self.timeout,
            Some((output, summary)),
            self.ws.clone(),
            format!("action mode={:?} inputs={:?}", self.mode, self.inputs),
        )
    }

    /// Runs the step to its end.
    pub fn run(self) -> Outcome {
        self.spawn().wait()
    }
}

/// The plain CLI: `predeploy-backup <args>`, no `GITHUB_*`, no `INPUT_*`.
pub struct Cli {
    args: Vec<String>,
    env: BTreeMap<String, String>,
    dir: Option<PathBuf>,
    ws: Option<Arc<Workspace>>,
    timeout: Duration,
}

impl Cli {
    pub fn new<S: AsRef<str>>(args: &[S]) -> Cli {
        let mut env = BTreeMap::new();
        env.insert(
            "PATH".to_string(),
            std::env::var("PATH").unwrap_or_else(|_| "/usr/bin:/bin".into()),
        );
        env.insert("HOME".to_string(), "/root".to_string());
        Cli {
            args: args.iter().map(|a| a.as_ref().to_string()).collect(),
            env,
            dir: None,
            ws: None,
            timeout: DEFAULT_TIMEOUT,
        }
    }

    pub fn env(mut self, k: &str, v: impl Into<String>) -> Cli {
        self.env.insert(k.to_string(), v.into());
        self
    }

    pub fn current_dir(mut self, d: &Path) -> Cli {
        self.dir = Some(d.to_path_buf());
        self
    }

    fn keep(mut self, ws: &Arc<Workspace>) -> Cli {
        self.ws = Some(ws.clone());
        self
    }

    pub fn spawn(self) -> Running {
        let ws = self.ws.clone().unwrap_or_else(Workspace::new);
        let dir = self.dir.clone().unwrap_or_else(|| ws.path().to_path_buf());
        let child = Command::new(BIN)
            .args(&self.args)
            .env_clear()
            .envs(&self.env)
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {BIN}: {e}"));
        Running::new(
            child,
            self.timeout,
            None,
            ws,
            format!("cli {:?}", self.args),
        )
    }

    pub fn run(self) -> Outcome {
        self.spawn().wait()
    }
}

/// A started step.
pub struct Running {
    child: Child,
    started: Instant,
    timeout: Duration,
    files: Option<(PathBuf, PathBuf)>,
    ws: Arc<Workspace>,
    what: String,
    stdout: Option<std::thread::JoinHandle<String>>,
    stderr: Option<std::thread::JoinHandle<String>>,
}

impl Running {
    fn new(
        mut child: Child,
        timeout: Duration,
        files: Option<(PathBuf, PathBuf)>,
        ws: Arc<Workspace>,
        what: String,
    ) -> Running {
        let drain = |mut r: Box<dyn Read + Send>| {
            std::thread::spawn(move || {
                let mut buf = Vec::new();
                let _ = r.read_to_end(&mut buf);
                String::from_utf8_lossy(&buf).to_string()
            })
        };
        let stdout = child.stdout.take().map(|s| drain(Box::new(s)));
        let stderr = child.stderr.take().map(|s| drain(Box::new(s)));
        Running {
            child,
            started: Instant::now(),
            timeout,
            files,
            ws,
            what,
            stdout,
            stderr,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Waits for the end (killing the process after the timeout, which fails the test).
    pub fn wait(mut self) -> Outcome {
        let status = loop {
            if let Some(s) = self.child.try_wait().expect("wait") {
                break Some(s);
            }
            if self.started.elapsed() > self.timeout {
                let _ = self.child.kill();
                let _ = self.child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let elapsed = self.started.elapsed();
        let stdout = self
            .stdout
            .take()
            .map(|h| h.join().unwrap())
            .unwrap_or_default();
        let stderr = self
            .stderr
            .take()
            .map(|h| h.join().unwrap())
            .unwrap_or_default();
        let Some(status) = status else {
            panic!(
                "{} did not finish within {:?}\n--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}",
                self.what, self.timeout
            );
        };
        let (raw_output, summary) = match &self.files {
            Some((o, s)) => (
                std::fs::read_to_string(o).unwrap_or_default(),
                std::fs::read_to_string(s).unwrap_or_default(),
            ),
            None => (String::new(), String::new()),
        };
        let mut o = Outcome {
            code: status.code().unwrap_or(-1),
            stdout,
            stderr,
            outputs: HashMap::new(),
            output_list: vec![],
            raw_output,
            summary,
            ws: self.ws.clone(),
            elapsed,
            what: self.what.clone(),
        };
        match parse_github_output(&o.raw_output) {
            Ok(list) => {
                o.outputs = list.iter().cloned().collect();
                o.output_list = list;
            }
            Err(e) => panic!("the runner would reject $GITHUB_OUTPUT: {e}\n{o}"),
        }
        o
    }
}

/// Everything a step left behind.
pub struct Outcome {
    /// Exit code (`-1` when killed by a signal).
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
    /// Outputs as the runner sees them (the last value of a name wins).
    pub outputs: HashMap<String, String>,
    /// Every `name=value` of `$GITHUB_OUTPUT`, in order, duplicates included.
    pub output_list: Vec<(String, String)>,
    /// `$GITHUB_OUTPUT` as written.
    pub raw_output: String,
    /// `$GITHUB_STEP_SUMMARY` as written.
    pub summary: String,
    pub ws: Arc<Workspace>,
    pub elapsed: Duration,
    what: String,
}

impl Outcome {
    /// The job summary as a reader sees it rendered: Markdown backslash escapes and the
    /// word joiner that breaks `@mentions` removed (values are escaped when written).
    pub fn summary_text(&self) -> String {
        let mut out = String::with_capacity(self.summary.len());
        let mut chars = self.summary.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '\\' if chars.peek().is_some_and(|n| n.is_ascii_punctuation()) => {
                    out.push(chars.next().unwrap())
                }
                '\u{2060}' => {}
                c => out.push(c),
            }
        }
        out
    }

    /// An output that must be there.
    pub fn out(&self, name: &str) -> &str {
        match self.outputs.get(name) {
            Some(v) => v,
            None => panic!("output `{name}` not set\n{self}"),
        }
    }

    /// Output names, sorted.
    pub fn output_names(&self) -> Vec<String> {
        let mut v: Vec<String> = self.outputs.keys().cloned().collect();
        v.sort();
        v
    }

    /// Workflow commands (`::error ...`) on stdout.
    pub fn commands(&self) -> Vec<Annotation> {
        parse_commands(&self.stdout)
    }

    /// `::error` annotations.
    pub fn errors(&self) -> Vec<Annotation> {
        self.commands()
            .into_iter()
            .filter(|a| a.command == "error")
            .collect()
    }

    /// Everything the user reads: stdout, stderr and the summary.
    pub fn all_text(&self) -> String {
        format!("{}\n{}\n{}", self.stdout, self.stderr, self.summary)
    }

    /// Asserts the exit code, printing everything when it differs.
    pub fn assert_code(&self, code: i32) -> &Self {
        assert_eq!(self.code, code, "unexpected exit code\n{self}");
        self
    }

    /// Asserts `text` appears in stdout, stderr or the summary.
    pub fn assert_mentions(&self, text: &str) -> &Self {
        assert!(
            self.all_text().contains(text),
            "expected the step to mention {text:?}\n{self}"
        );
        self
    }

    /// The path of a workspace-relative output (or an absolute one).
    pub fn path(&self, rel: &str) -> PathBuf {
        let p = Path::new(rel);
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.ws.join(p)
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "=== {} → exit {} in {:.1?}",
            self.what, self.code, self.elapsed
        )?;
        writeln!(f, "--- stdout ---\n{}", self.stdout)?;
        writeln!(f, "--- stderr ---\n{}", self.stderr)?;
        writeln!(f, "--- $GITHUB_OUTPUT ---\n{}", self.raw_output)?;
        writeln!(f, "--- $GITHUB_STEP_SUMMARY ---\n{}", self.summary)
    }
}
