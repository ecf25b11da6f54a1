//! The one HTTP client setup (reqwest on rustls with ring) and how its errors read, shared by
//! the Actions layer (artifacts, GitHub REST) and the engine (the S3 calls object_store lacks).
//! It lives outside `actions` so that engine modules never import the Actions layer.

use std::time::Duration;

/// An HTTP client with our user agent. `follow` redirects only for blob downloads (reqwest
/// would drop credentials across hosts, and we never give it any for blobs anyway).
pub(crate) fn http_client(follow: bool) -> Result<reqwest::Client, String> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .user_agent(concat!("predeploy-backup/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(Duration::from_secs(30))
        .read_timeout(Duration::from_secs(300))
        .redirect(if follow {
            reqwest::redirect::Policy::limited(5)
        } else {
            reqwest::redirect::Policy::none()
        })
        .build()
        .map_err(|e| format!("could not set up the HTTP client: {}", error_chain(&e)))
}

/// An error and its sources on one line (reqwest's own message is terse), URL passwords
/// redacted (the run's registered secrets are removed wherever the text is shown).
pub(crate) fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        let s_txt = s.to_string();
        if !out.contains(&s_txt) {
            out.push_str(": ");
            out.push_str(&s_txt);
        }
        cur = s.source();
    }
    crate::secrets::redact_url_passwords(&out)
}
