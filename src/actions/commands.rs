//! Workflow commands on stdout (`::error`, `::add-mask`, `::group`) and secret redaction.
//!
//! The runner parses these from the step's stdout (runner `ActionCommand.cs`): data escapes
//! `%`, CR and LF; property values also `:` and `,`. Outside Actions they would be noise, so
//! annotations fall back to plain `error:` lines on stderr.
//!
//! All of it goes through a [`Workflow`]: a value the run creates (in `main`), holding the
//! run's [`Secrets`] and whether we are inside Actions. Secrets (passwords, tokens, URLs
//! with credentials) are registered once with [`Workflow::mask`]: the runner then hides them
//! in the log, and [`Workflow::redact`] removes them from every message we write ourselves
//! (summary, alerts, manifest, errors), so they are never stored anywhere.

use std::sync::Arc;

use crate::report::Reporter;
use crate::secrets::Secrets;

/// Escapes workflow-command data.
pub fn escape_data(s: &str) -> String {
    s.replace('%', "%25")
        .replace('\r', "%0D")
        .replace('\n', "%0A")
}

/// Makes a line safe to print where the runner parses workflow commands (stdout and, for
/// container actions, stderr too): the runner trims leading whitespace and treats a line
/// starting with `::` (or the legacy `##[`) as a command, so such a line gets a `> ` in
/// front. Only our own commands (printed by this module) start with `::`.
fn guard(line: &str) -> String {
    let t = line.trim_start();
    if t.starts_with("::") || t.starts_with("##[") {
        format!("> {line}")
    } else {
        line.to_string()
    }
}

/// Text that is printed as one line: CR, LF and `%` escaped as the toolkit does
/// (`%0D`, `%0A`, `%25`), and never starting with a workflow command.
pub fn one_line(s: &str) -> String {
    guard(&escape_data(s))
}

/// Text printed as several lines (a report): every line (split at LF and CR, as the
/// runner splits) is guarded so that no value can start a workflow command.
pub fn safe_lines(s: &str) -> String {
    s.split(['\n', '\r'])
        .map(guard)
        .collect::<Vec<_>>()
        .join("\n")
}

/// Escapes a workflow-command property value.
pub fn escape_property(s: &str) -> String {
    escape_data(s).replace(':', "%3A").replace(',', "%2C")
}

/// How this run talks to the runner (or the terminal): workflow commands on stdout inside
/// GitHub Actions, plain lines on stderr outside, with the run's secrets redacted. Cheap to
/// clone (the secrets are shared).
#[derive(Clone, Default)]
pub struct Workflow {
    secrets: Secrets,
    in_actions: bool,
}

impl Workflow {
    pub fn new(secrets: Secrets, in_actions: bool) -> Self {
        Workflow {
            secrets,
            in_actions,
        }
    }

    /// Inside Actions when `GITHUB_ACTIONS` is `true`.
    pub fn from_env(secrets: Secrets) -> Self {
        Self::new(
            secrets,
            std::env::var("GITHUB_ACTIONS").as_deref() == Ok("true"),
        )
    }

    /// The run's secrets (shared: what is masked here is redacted by every clone).
    pub fn secrets(&self) -> &Secrets {
        &self.secrets
    }

    /// See [`Secrets::redact`].
    pub fn redact(&self, s: &str) -> String {
        self.secrets.redact(s)
    }

    /// Registers a secret: masked in the Actions log from now on, and removed by
    /// [`Self::redact`]. Also registers the password part of a URL with credentials.
    pub fn mask(&self, secret: &str) {
        let new = self.secrets.register(secret);
        if self.in_actions {
            for p in new {
                for line in p.lines() {
                    println!("::add-mask::{}", escape_data(line));
                }
            }
        }
    }

    /// The reporter the engine is given: workflow commands inside GitHub Actions, plain
    /// lines on a terminal ([`crate::report::Terminal`]).
    pub fn reporter(&self) -> Arc<dyn Reporter> {
        if self.in_actions {
            Arc::new(self.clone())
        } else {
            Arc::new(crate::report::Terminal {
                secrets: self.secrets.clone(),
            })
        }
    }

    /// Prints a report to stdout, every line guarded ([`safe_lines`]).
    pub fn print_report(&self, text: &str) {
        println!("{}", safe_lines(&self.redact(text)));
    }

    /// An `::error` annotation naming the file and the failed check (or `error:` on stderr).
    pub fn error(&self, title: &str, file: Option<&str>, message: &str) {
        self.annotate("error", title, file, message)
    }

    /// A `::warning` annotation.
    pub fn warning(&self, title: &str, file: Option<&str>, message: &str) {
        self.annotate("warning", title, file, message)
    }

    /// A `::notice` annotation.
    pub fn notice(&self, title: &str, message: &str) {
        self.annotate("notice", title, None, message)
    }

    fn annotate(&self, level: &str, title: &str, file: Option<&str>, message: &str) {
        let message = self.redact(message);
        let title = self.redact(title);
        if self.in_actions {
            let mut props = vec![format!("title={}", escape_property(&title))];
            if let Some(f) = file {
                props.insert(0, format!("file={}", escape_property(f)));
            }
            println!("::{level} {}::{}", props.join(","), escape_data(&message));
        } else {
            let at = file.map(|f| format!(" [{f}]")).unwrap_or_default();
            eprintln!(
                "{}",
                safe_lines(&format!("{level}: {title}{at}: {message}"))
            );
        }
    }

    /// A log line (stderr, so stdout stays clean for workflow commands and `info` output).
    /// Inside Actions a message is one line (CR/LF escaped); on a terminal its lines are
    /// kept but each is guarded. Either way no value can start a workflow command.
    pub fn log(&self, message: &str) {
        let message = self.redact(message);
        if self.in_actions {
            eprintln!("{}", one_line(&message));
        } else {
            eprintln!("{}", safe_lines(&message));
        }
    }

    /// Starts a collapsible log group (Actions) or a heading (CLI).
    pub fn group(&self, title: &str) {
        if self.in_actions {
            println!("::group::{}", escape_data(title));
        } else {
            eprintln!("== {}", one_line(title));
        }
    }

    /// Ends the group started by [`Self::group`].
    pub fn end_group(&self) {
        if self.in_actions {
            println!("::endgroup::");
        }
    }
}

/// What the engine reports, as workflow commands: log lines, `::warning` / `::error`
/// annotations, `::add-mask`.
impl Reporter for Workflow {
    fn info(&self, message: &str) {
        self.log(message)
    }
    fn warning(&self, title: &str, file: Option<&str>, message: &str) {
        Workflow::warning(self, title, file, message)
    }
    fn error(&self, title: &str, file: Option<&str>, message: &str) {
        Workflow::error(self, title, file, message)
    }
    fn mask(&self, secret: &str) {
        Workflow::mask(self, secret)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping() {
        assert_eq!(escape_data("a%b\r\nc"), "a%25b%0D%0Ac");
        assert_eq!(escape_property("x:y,z%"), "x%3Ay%2Cz%25");
    }

    #[test]
    fn no_value_starts_a_command_line() {
        let evil = "main\n::error::x\r::add-mask::y\n  ##[set-output name=a;]b";
        assert_eq!(
            one_line(evil),
            "main%0A::error::x%0D::add-mask::y%0A  ##[set-output name=a;]b"
        );
        assert_eq!(one_line("::error::x"), "> ::error::x");
        assert_eq!(one_line(" ::stop-commands::t"), ">  ::stop-commands::t");
        let lines = safe_lines(evil);
        assert_eq!(lines.lines().count(), 4);
        for l in lines.lines() {
            let t = l.trim_start();
            assert!(!t.starts_with("::") && !t.starts_with("##["), "{l}");
        }
        assert!(lines.contains("> ::error::x"));
    }

    #[test]
    fn redacts_registered_secrets_and_url_passwords() {
        let wf = Workflow::new(Secrets::new(), false);
        wf.mask("s3cr3t-value");
        assert_eq!(wf.redact("pw=s3cr3t-value!"), "pw=***!");
        assert_eq!(
            wf.redact("postgres://app:hunter22@db:5432/x and more"),
            "postgres://app:***@db:5432/x and more"
        );
        assert_eq!(wf.redact("http://host/path"), "http://host/path");
    }
}
