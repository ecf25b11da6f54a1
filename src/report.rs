//! How the engine tells what it is doing: one small interface, passed in as
//! `&dyn Reporter`. The engine (docker, postgres, lock, retention, alert, ...) never prints
//! nor touches the runner's files; the Actions layer implements this with workflow commands
//! (`crate::actions::commands::Workflow`), and [`Terminal`] is the plain CLI one. Results
//! (a retention report, a verification report) are returned as values and rendered by the
//! caller. Secrets go through [`Reporter::mask`] into the run's [`Secrets`], which the
//! reporter holds and redacts with.

use crate::secrets::Secrets;

pub trait Reporter: Send + Sync {
    /// A line of progress (`Stopping container db`).
    fn info(&self, message: &str);
    /// Something the user should look at that does not fail the run; `file` names what it
    /// is about.
    fn warning(&self, title: &str, file: Option<&str>, message: &str);
    /// Something failed that the user must act on.
    fn error(&self, title: &str, file: Option<&str>, message: &str);
    /// A secret: never shown from now on (registered in the run's [`Secrets`], which remove
    /// it from every text we write).
    fn mask(&self, secret: &str);
}

/// Plain lines on stderr, the run's secrets redacted: the CLI outside GitHub Actions.
#[derive(Clone, Default)]
pub struct Terminal {
    pub secrets: Secrets,
}

impl Terminal {
    fn annotate(&self, level: &str, title: &str, file: Option<&str>, message: &str) {
        let at = file.map(|f| format!(" [{f}]")).unwrap_or_default();
        let r = |s| self.secrets.redact(s);
        eprintln!("{level}: {}{at}: {}", r(title), r(message));
    }
}

impl Reporter for Terminal {
    fn info(&self, message: &str) {
        eprintln!("{}", self.secrets.redact(message));
    }
    fn warning(&self, title: &str, file: Option<&str>, message: &str) {
        self.annotate("warning", title, file, message)
    }
    fn error(&self, title: &str, file: Option<&str>, message: &str) {
        self.annotate("error", title, file, message)
    }
    fn mask(&self, secret: &str) {
        self.secrets.register(secret);
    }
}

/// What was reported, kept (for tests of the engine).
#[cfg(test)]
#[derive(Default)]
pub struct Recorded(pub std::sync::Mutex<Vec<String>>);

#[cfg(test)]
impl Reporter for Recorded {
    fn info(&self, message: &str) {
        self.0.lock().unwrap().push(message.to_string());
    }
    fn warning(&self, title: &str, _: Option<&str>, message: &str) {
        self.0
            .lock()
            .unwrap()
            .push(format!("warning: {title}: {message}"));
    }
    fn error(&self, title: &str, _: Option<&str>, message: &str) {
        self.0
            .lock()
            .unwrap()
            .push(format!("error: {title}: {message}"));
    }
    fn mask(&self, secret: &str) {
        self.0.lock().unwrap().push(format!("mask: {secret}"));
    }
}
