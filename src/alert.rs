//! Alerts that always go out.
//!
//! Any failure, in any mode, is sent to a webhook (`alert-webhook-url`) and/or by email
//! (`alert-email` through `smtp-url`); success too with `alert-on: always`. The webhook gets
//! a JSON POST that Slack and Teams-style incoming webhooks accept (a `text` field) plus the
//! same facts as structured fields; the email is plain text with the same content.
//!
//! An alert is a side channel: a failing one is retried with back-off under a timeout, then
//! reported by [`send`]'s [`Delivery`] results, and never hides the original error or changes
//! the exit code. Every text is redacted with the run's [`Secrets`] (carried by the
//! [`AlertConfig`]'s `run_secrets`), and the webhook and SMTP URLs are
//! secrets themselves (a Slack webhook URL carries a token): they are masked, and no error
//! returned here names them.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::report::Reporter;
use crate::secrets::Secrets;

/// When to alert.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum AlertOn {
    /// Only when the run failed (the default).
    #[default]
    Failure,
    /// After every run.
    Always,
}

impl AlertOn {
    /// `failure` or `always` (case and surrounding blanks ignored; empty means `failure`).
    pub fn parse(s: &str) -> Result<AlertOn, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "" | "failure" | "failures" | "on-failure" => Ok(AlertOn::Failure),
            "always" => Ok(AlertOn::Always),
            other => Err(format!(
                "alert-on must be `failure` or `always`, not `{other}`"
            )),
        }
    }
}

/// Where and when alerts go, and how hard to try.
#[derive(Clone, Debug)]
pub struct AlertConfig {
    pub webhook_url: Option<String>,
    /// One address, or several separated by commas.
    pub email: Option<String>,
    pub smtp_url: Option<String>,
    pub on: AlertOn,
    /// The email's From (env `BACKUP_ALERT_FROM`, or `?from=` on the SMTP URL);
    /// default `predeploy-backup <predeploy-backup@localhost>`.
    pub from: Option<String>,
    /// Tries per channel (first try included).
    pub attempts: u32,
    /// Back-off before the second try; doubled for each further one.
    pub retry_base: Duration,
    /// The run's secrets: redacted from every text an alert sends or an error names.
    pub run_secrets: Secrets,
    /// Connecting to the webhook's host.
    pub connect_timeout: Duration,
    /// One whole try (webhook request, or each SMTP command).
    pub timeout: Duration,
}

impl Default for AlertConfig {
    fn default() -> Self {
        AlertConfig {
            webhook_url: None,
            email: None,
            smtp_url: None,
            on: AlertOn::Failure,
            from: None,
            attempts: 4,
            retry_base: Duration::from_secs(1),
            connect_timeout: Duration::from_secs(5),
            timeout: Duration::from_secs(10),
            run_secrets: Secrets::default(),
        }
    }
}

impl AlertConfig {
    /// From the inputs, falling back to `BACKUP_ALERT_WEBHOOK_URL`, `BACKUP_ALERT_EMAIL` and
    /// `SMTP_URL` (empty means unset). Masks the webhook and SMTP URLs ([`Self::secrets`])
    /// through `report`, and keeps the run's `secrets` to redact with. An unknown `on`
    /// means `failure` (the CLI validates it; see [`AlertOn::parse`]).
    pub fn from_inputs(
        webhook: Option<&str>,
        email: Option<&str>,
        smtp: Option<&str>,
        on: &str,
        report: &dyn Reporter,
        secrets: &Secrets,
    ) -> Self {
        let mut c = Self::from_lookup(webhook, email, smtp, on, |k| std::env::var(k).ok());
        for secret in c.secrets() {
            report.mask(secret);
        }
        c.run_secrets = secrets.clone();
        c
    }

    /// The webhook and SMTP URLs: secrets (a Slack webhook URL carries a token).
    pub fn secrets(&self) -> impl Iterator<Item = &str> {
        self.webhook_url
            .iter()
            .chain(self.smtp_url.iter())
            .map(String::as_str)
    }

    /// [`from_inputs`](Self::from_inputs) with the environment read through `env`.
    /// Also reads `BACKUP_ALERT_FROM`, and `PREDEPLOY_RETRY_BASE_MS` /
    /// `PREDEPLOY_ALERT_TIMEOUT_MS` (for tests of the whole program).
    pub fn from_lookup(
        webhook: Option<&str>,
        email: Option<&str>,
        smtp: Option<&str>,
        on: &str,
        env: impl Fn(&str) -> Option<String>,
    ) -> Self {
        let pick = |input: Option<&str>, var: &str| -> Option<String> {
            input
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .or_else(|| env(var).map(|s| s.trim().to_string()))
                .filter(|s| !s.is_empty())
        };
        let webhook_url = pick(webhook, "BACKUP_ALERT_WEBHOOK_URL");
        let smtp_url = pick(smtp, "SMTP_URL");
        let ms = |var: &str| {
            env(var)
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(Duration::from_millis)
        };
        let mut c = AlertConfig {
            webhook_url,
            email: pick(email, "BACKUP_ALERT_EMAIL"),
            smtp_url,
            on: AlertOn::parse(on).unwrap_or_default(),
            from: pick(None, "BACKUP_ALERT_FROM"),
            ..Default::default()
        };
        if let Some(d) = ms("PREDEPLOY_RETRY_BASE_MS") {
            c.retry_base = d;
        }
        if let Some(d) = ms("PREDEPLOY_ALERT_TIMEOUT_MS") {
            c.timeout = d;
            c.connect_timeout = c.connect_timeout.min(d);
        }
        c
    }

    /// Whether any channel is configured.
    pub fn any(&self) -> bool {
        self.webhook_url.is_some() || self.email.is_some()
    }
}

/// What happened, for the alert.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Alert {
    pub success: bool,
    /// `backup`, `verify`, `rollback`, `info`, `prune`.
    pub mode: String,
    pub repository: Option<String>,
    pub run_url: Option<String>,
    pub commit: Option<String>,
    pub branch: Option<String>,
    pub backup_dir: Option<String>,
    /// The check that failed (`gzip`, `sql-complete`, `min-size`, `dump`, `upload`, …).
    pub failed_check: Option<String>,
    pub message: String,
}

/// The result of one channel.
#[derive(Clone, Debug, PartialEq)]
pub struct Delivery {
    /// `webhook` or `email`.
    pub channel: String,
    /// `Err` says what went wrong and never names the webhook or SMTP URL.
    pub result: Result<(), String>,
}

impl Alert {
    /// Every text field redacted (and trimmed; empty ones dropped).
    fn redacted(&self, secrets: &Secrets) -> Alert {
        let redact = |s: &str| secrets.redact(s);
        let r = |o: &Option<String>| {
            o.as_deref()
                .map(|s| redact(s.trim()))
                .filter(|s| !s.is_empty())
        };
        Alert {
            success: self.success,
            mode: redact(self.mode.trim()),
            repository: r(&self.repository),
            run_url: r(&self.run_url),
            commit: r(&self.commit),
            branch: r(&self.branch),
            backup_dir: r(&self.backup_dir),
            failed_check: r(&self.failed_check),
            message: redact(self.message.trim()),
        }
    }

    /// Every value escaped with [`chat_escape`]; the run URL (ours) kept as is.
    fn chat_escaped(&self) -> Alert {
        let e = |o: &Option<String>| o.as_deref().map(chat_escape);
        Alert {
            success: self.success,
            mode: chat_escape(&self.mode),
            repository: e(&self.repository),
            run_url: self.run_url.clone(),
            commit: e(&self.commit),
            branch: e(&self.branch),
            backup_dir: e(&self.backup_dir),
            failed_check: e(&self.failed_check),
            message: chat_escape(&self.message),
        }
    }

    fn status(&self) -> &'static str {
        if self.success {
            "success"
        } else {
            "failure"
        }
    }

    fn verb(&self) -> &'static str {
        if self.success {
            "OK"
        } else {
            "FAILED"
        }
    }

    /// `org/repo@main (abc1234)`.
    fn target(&self) -> String {
        let mut s = self
            .repository
            .clone()
            .unwrap_or_else(|| "unknown repository".into());
        if let Some(b) = &self.branch {
            s.push('@');
            s.push_str(b);
        }
        if let Some(c) = &self.commit {
            s.push_str(&format!(" ({})", short(c)));
        }
        s
    }

    /// `[predeploy-backup] FAILED backup on org/repo@main (abc1234)` (redacted).
    pub fn subject(&self, secrets: &Secrets) -> String {
        let a = self.redacted(secrets);
        one_line(&format!(
            "[{}] {} {} on {}",
            crate::manifest::TOOL_NAME,
            a.verb(),
            mode_or_run(&a.mode),
            a.target()
        ))
    }

    /// One readable paragraph: the webhook's `text` (redacted). Every value is escaped for
    /// chat markup ([`chat_escape`]): Slack and Teams render this text.
    pub fn text(&self, secrets: &Secrets) -> String {
        let a = self.redacted(secrets).chat_escaped();
        let mut s = format!(
            "predeploy-backup {}: {} on {}.",
            a.verb(),
            mode_or_run(&a.mode),
            a.target()
        );
        if let Some(c) = &a.failed_check {
            s.push_str(&format!(" Failed check: {c}."));
        }
        if !a.message.is_empty() {
            s.push(' ');
            s.push_str(&one_line(&a.message));
            if !s.ends_with(['.', '!', '?']) {
                s.push('.');
            }
        }
        if let Some(d) = &a.backup_dir {
            s.push_str(&format!(" Backup folder: {d}."));
        }
        if let Some(u) = &a.run_url {
            s.push_str(&format!(" Run: {u}"));
        }
        s
    }

    /// The webhook's JSON body (redacted).
    pub fn json(&self, secrets: &Secrets) -> serde_json::Value {
        let a = self.redacted(secrets);
        json!({
            "text": self.text(secrets),
            "status": a.status(),
            "mode": a.mode,
            "repository": a.repository,
            "run_url": a.run_url,
            "commit": a.commit,
            "branch": a.branch,
            "backup_dir": a.backup_dir,
            "failed_check": a.failed_check,
            "message": a.message,
        })
    }

    /// The email's plain-text body (redacted).
    pub fn email_body(&self, secrets: &Secrets) -> String {
        let a = self.redacted(secrets);
        let mut s = format!(
            "predeploy-backup: {} {}\n\n",
            mode_or_run(&a.mode),
            if a.success { "succeeded" } else { "FAILED" }
        );
        let rows = [
            ("Status", Some(a.status().to_string())),
            ("Mode", Some(a.mode.clone()).filter(|m| !m.is_empty())),
            ("Repository", a.repository.clone()),
            ("Branch", a.branch.clone()),
            ("Commit", a.commit.clone()),
            ("Backup folder", a.backup_dir.clone()),
            ("Failed check", a.failed_check.clone()),
            ("Run", a.run_url.clone()),
        ];
        for (k, v) in rows {
            if let Some(v) = v {
                s.push_str(&format!("{:<15}{}\n", format!("{k}:"), one_line(&v)));
            }
        }
        s.push_str("\nWhat happened:\n");
        for line in a.message.lines() {
            s.push_str(&wrap(line, 72, "  "));
        }
        if !a.success {
            s.push('\n');
            s.push_str(&wrap(
                "The step failed, so the deploy that depends on it should not have gone ahead. \
                 The run's log and job summary have the details and what to do.",
                72,
                "",
            ));
        }
        s.push_str(&format!(
            "\n-- \nSent by predeploy-backup {} (alert-on: failure|always).\n",
            env!("CARGO_PKG_VERSION")
        ));
        s
    }
}

fn mode_or_run(mode: &str) -> &str {
    if mode.is_empty() {
        "run"
    } else {
        mode
    }
}

fn short(commit: &str) -> &str {
    let is_sha = commit.len() >= 12 && commit.chars().all(|c| c.is_ascii_hexdigit());
    if is_sha {
        &commit[..7]
    } else {
        commit
    }
}

/// Word-wraps one line of text at `width` columns (a longer word stays whole), each output
/// line starting with `indent`: plain-text mail stays readable, and 7-bit when it can.
fn wrap(text: &str, width: usize, indent: &str) -> String {
    let mut out = String::new();
    let mut line = String::new();
    for word in text.split_whitespace() {
        if !line.is_empty() && indent.len() + line.len() + 1 + word.len() > width {
            out.push_str(indent);
            out.push_str(&line);
            out.push('\n');
            line.clear();
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    out.push_str(indent);
    out.push_str(&line);
    out.push('\n');
    out
}

/// A value escaped for Slack/Teams/Discord text: `&`, `<`, `>` as entities (Slack's
/// documented escaping; this is what stops `<!channel>`, `<@U123>` and `<at>` tags),
/// backticks and link brackets backslash-escaped, and a word joiner after `@` in `@here`,
/// `@channel` and `@everyone` so that they notify no one.
pub fn chat_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 8);
    for (i, c) in s.char_indices() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '@' => {
                out.push('@');
                let rest = s[i + 1..].to_ascii_lowercase();
                if ["here", "channel", "everyone"]
                    .iter()
                    .any(|w| rest.starts_with(w))
                {
                    out.push('\u{2060}');
                }
            }
            '`' | '[' | ']' => {
                out.push('\\');
                out.push(c);
            }
            c => out.push(c),
        }
    }
    out
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Sends `alert` on every configured channel (when `alert-on` asks for it) and says how each
/// went. Never panics, never fails: the caller logs the results ([`log_deliveries`]).
pub async fn send(config: &AlertConfig, alert: &Alert) -> Vec<Delivery> {
    if alert.success && config.on != AlertOn::Always {
        return vec![];
    }
    let webhook = async {
        match &config.webhook_url {
            Some(url) => Some(Delivery {
                channel: "webhook".into(),
                result: send_webhook(config, url, alert)
                    .await
                    .map_err(|e| scrub(config, &e)),
            }),
            None => None,
        }
    };
    let email = async {
        match &config.email {
            Some(to) => Some(Delivery {
                channel: "email".into(),
                result: send_email(config, to, alert)
                    .await
                    .map_err(|e| scrub(config, &e)),
            }),
            None => None,
        }
    };
    let (w, e) = tokio::join!(webhook, email);
    w.into_iter().chain(e).collect()
}

/// Redacts an error message, and makes sure neither URL appears in it whatever `mask` did.
fn scrub(config: &AlertConfig, msg: &str) -> String {
    let mut s = msg.to_string();
    for u in config.webhook_url.iter().chain(config.smtp_url.iter()) {
        if !u.is_empty() {
            s = s.replace(u.as_str(), "<url>");
        }
    }
    config.run_secrets.redact(&s)
}

/// The back-off before try `n + 1` (after `n` failed tries).
fn backoff(config: &AlertConfig, n: u32) -> Duration {
    config.retry_base * 2u32.saturating_pow(n.saturating_sub(1).min(10))
}

/// Describes a reqwest error without its URL.
fn describe_http_error(e: reqwest::Error, config: &AlertConfig) -> String {
    let e = e.without_url();
    if e.is_timeout() {
        return format!("the webhook did not answer within {:?}", config.timeout);
    }
    let mut chain = vec![];
    let mut src: Option<&dyn std::error::Error> = std::error::Error::source(&e);
    while let Some(s) = src {
        let t = s.to_string();
        if !chain.contains(&t) {
            chain.push(t);
        }
        src = s.source();
    }
    let cause = if chain.is_empty() {
        e.to_string()
    } else {
        chain.join(": ")
    };
    if e.is_connect() {
        format!("cannot connect to the webhook's host: {cause}")
    } else {
        format!("the webhook request failed: {cause}")
    }
}

async fn send_webhook(config: &AlertConfig, url: &str, alert: &Alert) -> Result<(), String> {
    let parsed = url::Url::parse(url)
        .map_err(|e| format!("alert-webhook-url is not a valid URL ({e}); give the full https:// URL of the incoming webhook"))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(format!(
            "alert-webhook-url must be an http:// or https:// URL, not {}://",
            parsed.scheme()
        ));
    }
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = reqwest::Client::builder()
        .connect_timeout(config.connect_timeout)
        .timeout(config.timeout)
        .user_agent(concat!("predeploy-backup/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| format!("cannot set up the HTTP client: {}", e.without_url()))?;
    let body = alert.json(&config.run_secrets);
    let attempts = config.attempts.max(1);
    let started = Instant::now();
    let mut last = String::new();
    for n in 1..=attempts {
        let mut wait = backoff(config, n);
        match client.post(parsed.clone()).json(&body).send().await {
            Ok(resp) if resp.status().is_success() => return Ok(()),
            Ok(resp) => {
                let status = resp.status();
                let retry = status.is_server_error() || status.as_u16() == 429;
                if let Some(secs) = resp
                    .headers()
                    .get(reqwest::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.trim().parse::<u64>().ok())
                {
                    // Honour Retry-After, within reason: an alert must not hold the job.
                    wait = wait.max(Duration::from_secs(secs.min(30)));
                }
                let detail: String = resp
                    .text()
                    .await
                    .map(|t| one_line(&t).chars().take(200).collect())
                    .unwrap_or_default();
                let detail = if detail.is_empty() {
                    String::new()
                } else {
                    format!(" ({detail})")
                };
                if !retry {
                    return Err(format!(
                        "webhook returned HTTP {}{detail}; not retried: check alert-webhook-url",
                        status.as_u16()
                    ));
                }
                last = format!("webhook returned HTTP {}{detail}", status.as_u16());
            }
            Err(e) => last = describe_http_error(e, config),
        }
        if n < attempts {
            tokio::time::sleep(wait).await;
        }
    }
    Err(format!(
        "{last} after {attempts} attempts ({:.1} s)",
        started.elapsed().as_secs_f64()
    ))
}

/// Splits `a@x, b@y` into addresses.
fn recipients(to: &str) -> Result<Vec<lettre::message::Mailbox>, String> {
    let list: Vec<&str> = to
        .split([',', ';', '\n'])
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    if list.is_empty() {
        return Err("alert-email is empty".into());
    }
    list.iter()
        .map(|a| {
            a.parse::<lettre::message::Mailbox>()
                .map_err(|e| format!("alert-email `{a}` is not an email address ({e})"))
        })
        .collect()
}

fn build_message(config: &AlertConfig, to: &str, alert: &Alert) -> Result<lettre::Message, String> {
    use lettre::message::header::ContentType;
    let from_url = config.smtp_url.as_deref().and_then(|u| {
        url::Url::parse(u).ok().and_then(|u| {
            u.query_pairs()
                .find(|(k, _)| k == "from")
                .map(|(_, v)| v.into_owned())
        })
    });
    let from_text = config
        .from
        .clone()
        .or(from_url)
        .unwrap_or_else(|| "predeploy-backup <predeploy-backup@localhost>".into());
    let from: lettre::message::Mailbox = from_text.parse().map_err(|e| {
        format!("the sender `{from_text}` (BACKUP_ALERT_FROM) is not an email address ({e})")
    })?;
    let mut b = lettre::Message::builder()
        .from(from)
        .subject(alert.subject(&config.run_secrets))
        .header(ContentType::TEXT_PLAIN);
    for r in recipients(to)? {
        b = b.to(r);
    }
    b.body(alert.email_body(&config.run_secrets))
        .map_err(|e| format!("cannot build the email: {e}"))
}

fn smtp_send(
    config: &AlertConfig,
    smtp_url: &str,
    message: &lettre::Message,
) -> Result<(), String> {
    use lettre::Transport;
    let _ = rustls::crypto::ring::default_provider().install_default();
    // STARTTLS (`smtp://…?tls=required`), implicit TLS (`smtps://`), authentication (user and
    // password in the URL) and plain SMTP for a local relay are lettre's, chosen by the URL.
    let transport = lettre::transport::smtp::SmtpTransport::from_url(smtp_url)
        .map_err(|e| {
            format!("smtp-url is not usable ({e}); use smtp://user:password@host:587?tls=required, smtps://user:password@host:465 or smtp://host:25")
        })?
        .timeout(Some(config.timeout))
        .build();
    let attempts = config.attempts.max(1);
    let mut last = String::new();
    for n in 1..=attempts {
        match transport.send(message) {
            Ok(_) => return Ok(()),
            Err(e) => {
                let permanent = e.is_permanent() || e.is_client();
                last = if e.is_permanent() {
                    format!("the SMTP server refused the alert: {e}")
                } else if e.is_client() {
                    format!("the alert email could not be sent: {e}")
                } else if e.is_transient() {
                    format!("the SMTP server failed temporarily: {e}")
                } else if e.is_timeout() {
                    format!(
                        "the SMTP server did not answer within {:?}: {e}",
                        config.timeout
                    )
                } else {
                    format!("cannot talk to the SMTP server: {e}")
                };
                if permanent {
                    return Err(format!(
                        "{last}; not retried: check smtp-url, its credentials and alert-email"
                    ));
                }
            }
        }
        if n < attempts {
            std::thread::sleep(backoff(config, n));
        }
    }
    Err(format!("{last} after {attempts} attempts"))
}

async fn send_email(config: &AlertConfig, to: &str, alert: &Alert) -> Result<(), String> {
    let Some(smtp_url) = config.smtp_url.clone() else {
        return Err(
            "alert-email is set but smtp-url (or SMTP_URL) is not: set smtp-url to send email alerts"
                .into(),
        );
    };
    let message = build_message(config, to, alert)?;
    let c = config.clone();
    // lettre's blocking transport on a blocking thread: the crate's lettre has no tokio
    // feature, and an alert is one message.
    let task = tokio::task::spawn_blocking(move || smtp_send(&c, &smtp_url, &message));
    // A hard ceiling over all tries, in case a server trickles bytes forever.
    let ceiling = (config.timeout * 3 + config.retry_base * 8) * config.attempts.max(1);
    match tokio::time::timeout(ceiling, task).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => Err(format!("the email could not be sent: {e}")),
        Err(_) => Err(format!(
            "the SMTP server did not finish within {:?}",
            ceiling
        )),
    }
}

/// Logs each delivery: a line for those sent, a warning annotation for those that were not
/// (which never changes the run's result). Returns summary lines for the failures, with
/// `secrets` redacted.
pub fn log_deliveries(
    deliveries: &[Delivery],
    report: &dyn Reporter,
    secrets: &Secrets,
) -> Vec<String> {
    let mut lines = vec![];
    for d in deliveries {
        match &d.result {
            Ok(()) => report.info(&format!("Alert sent by {}", d.channel)),
            Err(msg) => {
                report.warning(
                    "Alert not delivered",
                    None,
                    &format!("{}: {msg} (the run's own result is unchanged)", d.channel),
                );
                lines.push(format!(
                    "The {} alert could not be delivered: {}",
                    d.channel,
                    secrets.redact(msg)
                ));
            }
        }
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failure() -> Alert {
        Alert {
            success: false,
            mode: "backup".into(),
            repository: Some("org/repo".into()),
            run_url: Some("https://github.com/org/repo/actions/runs/42".into()),
            commit: Some("abc1234def5678abc1234def5678abc1234def56".into()),
            branch: Some("main".into()),
            backup_dir: Some("backups/pre-deployment-20241130_143022".into()),
            failed_check: Some("gzip".into()),
            message: "db_x.sql.gz: CRC mismatch\nfrom postgres://u:pw-secret@h/db".into(),
        }
    }

    #[test]
    fn chat_markup_in_values_is_escaped() {
        let a = Alert {
            branch: Some("<!channel> @here [x](http://e)".into()),
            message: "failed <@U123> & <at>Bob</at> `code`".into(),
            ..failure()
        };
        let t = a.text(&Secrets::new());
        for bad in ["<!channel>", "<@U123>", "<at>", "@here", "[x](", " `code`"] {
            assert!(!t.contains(bad), "{bad} in {t}");
        }
        assert!(t.contains("&lt;!channel&gt;"), "{t}");
        assert!(t.contains("&amp;"), "{t}");
    }

    #[test]
    fn texts() {
        let a = failure();
        assert_eq!(
            a.subject(&Secrets::new()),
            "[predeploy-backup] FAILED backup on org/repo@main (abc1234)"
        );
        let t = a.text(&Secrets::new());
        assert!(t.starts_with("predeploy-backup FAILED: backup on org/repo@main (abc1234). Failed check: gzip. db_x.sql.gz: CRC mismatch from postgres://u:***@h/db."), "{t}");
        assert!(t.ends_with("Run: https://github.com/org/repo/actions/runs/42"));
        assert!(!t.contains('\n'));
        let j = a.json(&Secrets::new());
        assert_eq!(j["status"], "failure");
        assert_eq!(j["failed_check"], "gzip");
        let body = a.email_body(&Secrets::new());
        assert!(body.contains("Failed check:  gzip\n"), "{body}");
        assert!(!body.contains("pw-secret") && !j.to_string().contains("pw-secret"));
    }

    #[test]
    fn config_from_inputs_and_env() {
        let env = |k: &str| match k {
            "BACKUP_ALERT_WEBHOOK_URL" => Some("https://hooks.example/T0/B0/tok3n-abc".into()),
            "BACKUP_ALERT_EMAIL" => Some(" ".into()),
            "SMTP_URL" => Some("smtp://u:smtp-pass-123@mail:587?tls=required".into()),
            "PREDEPLOY_RETRY_BASE_MS" => Some("5".into()),
            _ => None,
        };
        let c = AlertConfig::from_lookup(None, None, Some(""), "always", env);
        assert_eq!(
            c.webhook_url.as_deref(),
            Some("https://hooks.example/T0/B0/tok3n-abc")
        );
        assert_eq!(c.email, None);
        assert!(c.smtp_url.is_some());
        assert_eq!(c.on, AlertOn::Always);
        assert_eq!(c.retry_base, Duration::from_millis(5));
        assert_eq!(
            c.secrets().collect::<Vec<_>>(),
            [
                "https://hooks.example/T0/B0/tok3n-abc",
                "smtp://u:smtp-pass-123@mail:587?tls=required"
            ]
        );
        let c = AlertConfig::from_lookup(
            Some("https://in.put/x"),
            Some("a@b.c"),
            None,
            "failure",
            env,
        );
        assert_eq!(c.webhook_url.as_deref(), Some("https://in.put/x"));
        assert_eq!(c.on, AlertOn::Failure);
        assert!(AlertOn::parse("sometimes").is_err());
    }

    #[test]
    fn recipients_and_backoff() {
        assert_eq!(recipients("a@b.c, d@e.f").unwrap().len(), 2);
        assert!(recipients("not an address").is_err());
        let c = AlertConfig::default();
        assert_eq!(backoff(&c, 1), Duration::from_secs(1));
        assert_eq!(backoff(&c, 3), Duration::from_secs(4));
    }

    #[tokio::test]
    async fn nothing_configured_or_success_without_always() {
        assert!(send(&AlertConfig::default(), &failure()).await.is_empty());
        let c = AlertConfig {
            webhook_url: Some("http://127.0.0.1:9/".into()),
            ..Default::default()
        };
        let ok = Alert {
            success: true,
            ..failure()
        };
        assert!(send(&c, &ok).await.is_empty());
    }
}
