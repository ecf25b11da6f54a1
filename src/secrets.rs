//! The secrets of this run (passwords, tokens, URLs with credentials): registered once
//! ([`register`], through a [`crate::report::Reporter`]'s `mask`, which also tells the
//! runner to hide them), and removed by [`redact`] from every text we write ourselves
//! (summary, alerts, manifest, errors), so they are never stored anywhere.

use std::sync::Mutex;

static SECRETS: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// Registers a secret, and the password part of a URL with credentials; returns the parts
/// that were not registered yet (what the runner must be told to mask).
pub fn register(secret: &str) -> Vec<String> {
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
    let mut all = SECRETS.lock().unwrap();
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

fn urlencoding_decode(s: &str) -> Result<String, ()> {
    let bytes: Vec<u8> = url::form_urlencoded::parse(format!("x={s}").as_bytes())
        .next()
        .map(|(_, v)| v.into_owned().into_bytes())
        .ok_or(())?;
    String::from_utf8(bytes).map_err(|_| ())
}

/// Replaces every registered secret, and the password of any URL, with `***`.
pub fn redact(s: &str) -> String {
    let mut out = s.to_string();
    for secret in SECRETS.lock().unwrap().iter() {
        out = out.replace(secret.as_str(), "***");
    }
    redact_url_passwords(&out)
}

/// `scheme://user:password@host` → `scheme://user:***@host`, wherever it appears in text.
fn redact_url_passwords(s: &str) -> String {
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
