//! Alerts against real receivers on 127.0.0.1: an HTTP server that records each request
//! (scripted to fail, recover, or never answer) and a real SMTP server (aiosmtpd).

#[path = "support/alert_http.rs"]
mod alert_http;
#[path = "support/smtp_server.rs"]
mod smtp_server;

use std::time::{Duration, Instant};

use alert_http::{Behaviour, Receiver};
use predeploy_backup::alert::{Alert, AlertConfig, AlertOn, Delivery};
use predeploy_backup::secrets::Secrets;
use smtp_server::SmtpServer;

/// Registered in the run's secrets as a real run registers `postgres-password`.
const DB_PASSWORD: &str = "hunter2-Very-Secret";

/// [`predeploy_backup::alert::send`] as a run sends: with the run's secrets, in which the
/// database password is registered.
async fn send(config: &AlertConfig, alert: &Alert) -> Vec<Delivery> {
    let run_secrets = Secrets::new();
    run_secrets.register(DB_PASSWORD);
    let config = AlertConfig {
        run_secrets,
        ..config.clone()
    };
    predeploy_backup::alert::send(&config, alert).await
}

fn failure() -> Alert {
    Alert {
        success: false,
        mode: "backup".into(),
        repository: Some("org/repo".into()),
        run_url: Some("https://github.com/org/repo/actions/runs/4242".into()),
        commit: Some("abc1234def5678abc1234def5678abc1234def56".into()),
        branch: Some("main".into()),
        backup_dir: Some("backups/pre-deployment-20241130_143022".into()),
        failed_check: Some("sql-complete".into()),
        message: format!(
            "db_schedgen_20241130_143022.sql.gz: the dump ends before pg_dump's completion line \
             (password {DB_PASSWORD} was used; url postgres://schedgen:pw-in-url@db:5432/schedgen)"
        ),
    }
}

/// Fast tries for tests: the production defaults are 4 tries, 1 s base, 5 s / 10 s.
fn fast(webhook: Option<&str>) -> AlertConfig {
    AlertConfig {
        webhook_url: webhook.map(str::to_string),
        retry_base: Duration::from_millis(20),
        connect_timeout: Duration::from_millis(500),
        timeout: Duration::from_millis(500),
        ..Default::default()
    }
}

/// The message with a quoted-printable body decoded (lettre picks it for long lines), so
/// that the assertions read what a mail client shows.
fn readable(raw: &str) -> String {
    let raw = raw.replace("\r\n", "\n");
    let Some((head, body)) = raw.split_once("\n\n") else {
        return raw;
    };
    if !head
        .to_ascii_lowercase()
        .contains("content-transfer-encoding: quoted-printable")
    {
        return raw;
    }
    let body = body.replace("=\n", "");
    let mut out = Vec::new();
    let b = body.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'=' && i + 2 < b.len() {
            if let Ok(v) = u8::from_str_radix(&body[i + 1..i + 3], 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    format!("{head}\n\n{}", String::from_utf8_lossy(&out))
}

fn assert_no_secrets(text: &str) {
    for s in [
        DB_PASSWORD,
        "pw-in-url",
        "s3cr3t-hook-token",
        "smtp-Pa55word",
    ] {
        assert!(!text.contains(s), "`{s}` leaked into: {text}");
    }
}

#[tokio::test]
async fn webhook_gets_slack_compatible_json_with_every_field() {
    let rx = Receiver::start(Behaviour::Statuses(vec![200])).await;
    let config = AlertConfig::from_lookup(Some(&rx.url), None, None, "failure", |_| None);
    let d = send(&config, &failure()).await;
    assert_eq!(d.len(), 1);
    assert_eq!(d[0].channel, "webhook");
    assert_eq!(d[0].result, Ok(()));

    let reqs = rx.requests();
    assert_eq!(reqs.len(), 1);
    let r = &reqs[0];
    assert_eq!(r.method, "POST");
    assert_eq!(r.path, "/hook/T000/B000/s3cr3t-hook-token");
    assert!(r
        .header("content-type")
        .unwrap()
        .starts_with("application/json"));
    let j = r.json();
    assert_eq!(j["status"], "failure");
    assert_eq!(j["mode"], "backup");
    assert_eq!(j["repository"], "org/repo");
    assert_eq!(
        j["run_url"],
        "https://github.com/org/repo/actions/runs/4242"
    );
    assert_eq!(j["commit"], "abc1234def5678abc1234def5678abc1234def56");
    assert_eq!(j["branch"], "main");
    assert_eq!(j["backup_dir"], "backups/pre-deployment-20241130_143022");
    assert_eq!(j["failed_check"], "sql-complete");
    let text = j["text"].as_str().unwrap();
    assert!(
        text.starts_with(
            "predeploy-backup FAILED: backup on org/repo@main (abc1234). Failed check: sql-complete. db_schedgen_20241130_143022.sql.gz: the dump ends before"
        ),
        "{text}"
    );
    assert!(text.contains("Run: https://github.com/org/repo/actions/runs/4242"));
    assert!(!text.contains('\n'));
    let message = j["message"].as_str().unwrap();
    assert!(message.contains("password *** was used"), "{message}");
    assert!(
        message.contains("postgres://schedgen:***@db:5432/schedgen"),
        "{message}"
    );
    assert_no_secrets(&r.body_text());
}

#[tokio::test]
async fn webhook_is_retried_after_a_500() {
    let rx = Receiver::start(Behaviour::Statuses(vec![500, 200])).await;
    let d = send(&fast(Some(&rx.url)), &failure()).await;
    assert_eq!(d[0].result, Ok(()), "{:?}", d[0].result);
    let reqs = rx.requests();
    assert_eq!(reqs.len(), 2);
    assert_eq!(reqs[0].body, reqs[1].body);
}

#[tokio::test]
async fn webhook_that_keeps_failing_is_reported_without_its_url() {
    let rx = Receiver::start(Behaviour::Statuses(vec![503])).await;
    let d = send(&fast(Some(&rx.url)), &failure()).await;
    let err = d[0].result.clone().unwrap_err();
    eprintln!("delivery error: {err}");
    assert!(err.starts_with("webhook returned HTTP 503"), "{err}");
    assert!(err.contains("after 4 attempts"), "{err}");
    assert!(
        !err.contains("127.0.0.1") && !err.contains("/hook/"),
        "{err}"
    );
    assert_no_secrets(&err);
    assert_eq!(rx.requests().len(), 4);

    // A client error is not retried.
    let rx = Receiver::start(Behaviour::Statuses(vec![404])).await;
    let d = send(&fast(Some(&rx.url)), &failure()).await;
    let err = d[0].result.clone().unwrap_err();
    eprintln!("delivery error: {err}");
    assert!(
        err.contains("HTTP 404") && err.contains("not retried"),
        "{err}"
    );
    assert_eq!(rx.requests().len(), 1);
}

#[tokio::test]
async fn webhook_that_never_answers_times_out() {
    let rx = Receiver::start(Behaviour::Hang).await;
    let started = Instant::now();
    let d = send(&fast(Some(&rx.url)), &failure()).await;
    let took = started.elapsed();
    let err = d[0].result.clone().unwrap_err();
    eprintln!("delivery error: {err}");
    assert!(err.contains("did not answer within 500ms"), "{err}");
    assert!(err.contains("after 4 attempts"), "{err}");
    assert_no_secrets(&err);
    // 4 tries of 0.5 s plus 20 + 40 + 80 ms of back-off.
    assert!(took >= Duration::from_millis(2000), "{took:?}");
    assert!(
        took < Duration::from_secs(4),
        "the timeout did not hold: {took:?}"
    );
    assert_eq!(rx.connections(), 4);
}

#[tokio::test]
async fn webhook_host_that_refuses_connections() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}/hook/s3cr3t-hook-token");
    let d = send(&fast(Some(&url)), &failure()).await;
    let err = d[0].result.clone().unwrap_err();
    eprintln!("delivery error: {err}");
    assert!(
        err.contains("cannot connect to the webhook's host"),
        "{err}"
    );
    assert!(!err.contains(&url), "{err}");
    assert_no_secrets(&err);
}

#[tokio::test]
async fn alert_on_failure_stays_quiet_on_success_and_always_does_not() {
    let rx = Receiver::start(Behaviour::Statuses(vec![200])).await;
    let ok = Alert {
        success: true,
        failed_check: None,
        message: "predeploy-backup backup succeeded".into(),
        ..failure()
    };
    let on_failure = fast(Some(&rx.url));
    assert_eq!(on_failure.on, AlertOn::Failure);
    assert!(send(&on_failure, &ok).await.is_empty());
    assert_eq!(rx.requests().len(), 0);

    let always = AlertConfig {
        on: AlertOn::Always,
        ..fast(Some(&rx.url))
    };
    let d = send(&always, &ok).await;
    assert_eq!(d.len(), 1);
    assert_eq!(d[0].result, Ok(()));
    let j = rx.requests()[0].json();
    assert_eq!(j["status"], "success");
    assert!(j["failed_check"].is_null());
    assert!(
        j["text"]
            .as_str()
            .unwrap()
            .starts_with("predeploy-backup OK: backup on org/repo@main (abc1234)."),
        "{j}"
    );
}

/// Plain SMTP to a local server; STARTTLS (`smtp://…?tls=required`), implicit TLS
/// (`smtps://`) and authentication are lettre's, selected by the same URL.
#[tokio::test]
async fn email_through_a_real_smtp_server() {
    let smtp = SmtpServer::start();
    let rx = Receiver::start(Behaviour::Statuses(vec![200])).await;
    let config = AlertConfig {
        email: Some("ops@example.com, oncall@example.com".into()),
        smtp_url: Some(format!("smtp://127.0.0.1:{}", smtp.port)),
        ..fast(Some(&rx.url))
    };
    let d = send(&config, &failure()).await;
    assert_eq!(d.len(), 2, "{d:?}");
    for x in &d {
        assert_eq!(
            x.result,
            Ok(()),
            "{}: {:?}\n{}",
            x.channel,
            x.result,
            smtp.log()
        );
    }
    assert_eq!(d[1].channel, "email");

    let msgs = smtp.wait_for(1, Duration::from_secs(10));
    assert_eq!(msgs.len(), 1, "{}", smtp.log());
    let m = &readable(&msgs[0]);
    assert!(
        m.contains("Subject: [predeploy-backup] FAILED backup on org/repo@main (abc1234)\n"),
        "{m}"
    );
    assert!(
        m.contains("From: predeploy-backup <predeploy-backup@localhost>"),
        "{m}"
    );
    assert!(
        m.contains("X-RcptTo: ops@example.com, oncall@example.com"),
        "{m}"
    );
    assert!(m.contains("Content-Type: text/plain"), "{m}");
    assert!(m.contains("predeploy-backup: backup FAILED"), "{m}");
    assert!(m.contains("Failed check:  sql-complete"), "{m}");
    assert!(m.contains("Repository:    org/repo"), "{m}");
    assert!(
        m.contains("Run:           https://github.com/org/repo/actions/runs/4242"),
        "{m}"
    );
    // The text is word-wrapped for plain-text mail.
    let flat = m.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(
        flat.contains("What happened: db_schedgen_20241130_143022.sql.gz: the dump ends before pg_dump's completion line (password *** was used; url postgres://schedgen:***@db:5432/schedgen)"),
        "{m}"
    );
    assert!(
        m.lines().all(|l| l.len() <= 78 || l.starts_with("X-")),
        "lines too long for plain text mail: {m}"
    );
    assert_no_secrets(m);
    // The webhook got the same alert.
    assert_eq!(rx.requests()[0].json()["failed_check"], "sql-complete");
}

#[tokio::test]
async fn email_failures_never_show_the_smtp_password() {
    let smtp = SmtpServer::start();
    // aiosmtpd offers no AUTH here, so a URL with credentials must fail: with a message that
    // does not carry them.
    let url = format!("smtp://alerts:smtp-Pa55word@127.0.0.1:{}", smtp.port);
    let config = AlertConfig {
        retry_base: Duration::from_millis(20),
        timeout: Duration::from_secs(2),
        ..AlertConfig::from_lookup(None, Some("ops@example.com"), Some(&url), "always", |_| {
            None
        })
    };
    let d = send(&config, &failure()).await;
    assert_eq!(d.len(), 1);
    let err = d[0].result.clone().unwrap_err();
    eprintln!("delivery error: {err}");
    assert!(
        err.contains("authentication") && err.contains("not retried"),
        "{err}"
    );
    assert_no_secrets(&err);
    assert!(smtp.messages().is_empty());

    // No server at all.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = AlertConfig {
        email: Some("ops@example.com".into()),
        smtp_url: Some(format!("smtp://alerts:smtp-Pa55word@127.0.0.1:{port}")),
        ..fast(None)
    };
    let d = send(&config, &failure()).await;
    let err = d[0].result.clone().unwrap_err();
    eprintln!("delivery error: {err}");
    assert!(
        err.starts_with("cannot talk to the SMTP server") && err.contains("after 4 attempts"),
        "{err}"
    );
    assert_no_secrets(&err);

    // An address but no server configured.
    let config = AlertConfig {
        email: Some("ops@example.com".into()),
        ..fast(None)
    };
    let d = send(&config, &failure()).await;
    assert!(d[0].result.clone().unwrap_err().contains("smtp-url"));
}
