//! The secrets of one run (passwords, tokens, URLs with credentials): a [`Secrets`] value the
//! run creates and hands to whoever writes text the user reads (the reporters, the summary,
//! the alerts, the manifest, the errors at the edge). Registered once, through a
//! [`crate::report::Reporter`]'s `mask` (which also tells the runner to hide them), and
//! removed by [`Secrets::redact`] from every text we write ourselves, so they are never
//! stored anywhere. A value, not a global: two runs in one process (tests) never see each
//! other's secrets.

use std::sync::{Arc, Mutex};

/// The registered secrets, longest first. Cheap to clone: clones share one list, so a
/// secret registered through any of them is redacted by all.
#[derive(Clone, Debug, Default)]
pub struct Secrets(Arc<Mutex<Vec<String>>>);

impl Secrets {
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers a secret, and the password part of a URL with credentials; returns the
    /// parts that were not registered yet (what the runner must be told to mask).
    pub fn register(&self, secret: &str) -> Vec<String> {
        let secret = secret.trim();
        if secret.len() < 3 {
            // Masking 1-2 characters would blank out half the log; such a secret is no secret.
            return vec![];
        }
        let mut parts = vec![secret.to_string()];
        if let Ok(u) = url::Url::parse(secret) {
            if let Some(p) = u.password() {
                parts.push(p.to_string());
                if let Ok(decoded) = urlencoding_decode(p) {
                    parts.push(decoded);
                }
            }
        }
        let mut all = self.0.lock().unwrap();
        let mut new = vec![];
        for p in parts {
            if p.len() >= 3 && !all.contains(&p) {
                all.push(p.clone());
                new.push(p);
            }
        }
        // Longest first, so that a secret containing another is replaced whole.
        all.sort_by_key(|s| std::cmp::Reverse(s.len()));
        new
    }

    /// Replaces every registered secret, and the password of any URL, with `***`.
    pub fn redact(&self, s: &str) -> String {
        let mut out = s.to_string();
        for secret in self.0.lock().unwrap().iter() {
            out = out.replace(secret.as_str(), "***");
        }
        redact_url_passwords(&out)
    }
}

fn urlencoding_decode(s: &str) -> Result<String, ()> {
    let bytes: Vec<u8> = url::form_urlencoded::parse(format!("x={s}").as_bytes())
        .next()
        .map(|(_, v)| v.into_owned().into_bytes())
        .ok_or(())?;
    String::from_utf8(bytes).map_err(|_| ())
}

/// `scheme://user:password@host` → `scheme://user:***@host`, wherever it appears in text.
/// What the engine can remove without the run's [`Secrets`] (an error it builds from a
/// tool's output); the registered secrets are removed where the text is shown.
pub fn redact_url_passwords(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find("://") {
        let (head, tail) = rest.split_at(i + 3);
        out.push_str(head);
        let end = tail
            .find(|c: char| c.is_whitespace() || c == '/' || c == '"' || c == '\'')
            .unwrap_or(tail.len());
        let authority = &tail[..end];
        match (authority.rfind('@'), authority.find(':')) {
            (Some(at), Some(colon)) if colon < at => {
                out.push_str(&authority[..colon]);
                out.push_str(":***");
                out.push_str(&authority[at..]);
            }
            _ => out.push_str(authority),
        }
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clones_share_one_list_and_runs_do_not() {
        let run = Secrets::new();
        let shared = run.clone();
        assert_eq!(shared.register("s3cr3t-value"), vec!["s3cr3t-value"]);
        assert!(run.register("s3cr3t-value").is_empty());
        assert_eq!(run.redact("pw=s3cr3t-value!"), "pw=***!");
        assert_eq!(
            Secrets::new().redact("pw=s3cr3t-value!"),
            "pw=s3cr3t-value!"
        );
        assert!(run.register("ab").is_empty());
    }
}
