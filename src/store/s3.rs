//! Any S3-compatible service (AWS S3, MinIO, Cloudflare R2, Backblaze B2, Garage,
//! SeaweedFS) through `object_store`, with ring as the only rustls provider.
//!
//! Configuration the ecosystem's way: `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
//! `AWS_SESSION_TOKEN` (OIDC through aws-actions/configure-aws-credentials), `AWS_REGION` /
//! `AWS_DEFAULT_REGION`, `AWS_ENDPOINT_URL`; the inputs `s3-endpoint`, `s3-region` and
//! `s3-path-style` win over the environment. Secrets are masked in the log by the caller and
//! never leave this module except inside the signing client.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use object_store::aws::{AmazonS3, AmazonS3Builder, AwsAuthorizer};
use object_store::client::{HttpRequest, HttpRequestBody};

use super::{Store, StoreError};

/// The S3 inputs (each wins over its environment variable).
#[derive(Clone, Debug, Default)]
pub struct Options {
    pub endpoint: Option<String>,
    pub region: Option<String>,
    /// `None`: path-style requests when an endpoint is set (MinIO, Garage, SeaweedFS),
    /// virtual-hosted on AWS.
    pub path_style: Option<bool>,
}

fn env(k: &str) -> Option<String> {
    std::env::var(k).ok().filter(|v| !v.trim().is_empty())
}

/// Opens `s3://bucket/prefix`.
pub fn open(bucket: &str, prefix: &str, o: &Options) -> Result<Store, StoreError> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let endpoint = o
        .endpoint
        .clone()
        .filter(|e| !e.trim().is_empty())
        .or_else(|| env("AWS_ENDPOINT_URL_S3"))
        .or_else(|| env("AWS_ENDPOINT_URL"));
    if let Some(e) = &endpoint {
        let u = url::Url::parse(e).map_err(|err| {
            StoreError::BadInput(format!(
                "s3-endpoint (or AWS_ENDPOINT_URL) is not a URL ({err}): write e.g. https://s3.example.com or http://127.0.0.1:9000"
            ))
        })?;
        if !u.username().is_empty() || u.password().is_some() {
            return Err(StoreError::BadInput(
                "s3-endpoint must not carry credentials: pass them as AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY".into(),
            ));
        }
        if !matches!(u.scheme(), "http" | "https") {
            return Err(StoreError::BadInput(
                "s3-endpoint must start with https:// (or http:// for a local server)".into(),
            ));
        }
    }
    let region = o
        .region
        .clone()
        .filter(|r| !r.trim().is_empty())
        .or_else(|| env("AWS_REGION"))
        .or_else(|| env("AWS_DEFAULT_REGION"))
        .unwrap_or_else(|| "us-east-1".into());
    let key = env("AWS_ACCESS_KEY_ID");
    let secret = env("AWS_SECRET_ACCESS_KEY");
    if key.is_some() != secret.is_some() {
        return Err(StoreError::BadInput(format!(
            "only one of AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY is set ({} is missing): set both, or neither to use the runner's role",
            if key.is_none() { "AWS_ACCESS_KEY_ID" } else { "AWS_SECRET_ACCESS_KEY" }
        )));
    }
    // from_env reads the other AWS_* settings (web identity, container credentials, ...).
    let mut b = AmazonS3Builder::from_env()
        .with_bucket_name(bucket)
        .with_region(&region)
        .with_retry(object_store::RetryConfig {
            max_retries: 3,
            retry_timeout: Duration::from_secs(30),
            ..Default::default()
        });
    if let (Some(k), Some(s)) = (&key, &secret) {
        b = b.with_access_key_id(k).with_secret_access_key(s);
        if let Some(t) = env("AWS_SESSION_TOKEN") {
            b = b.with_token(t);
        }
    }
    let path_style = o.path_style.unwrap_or(true);
    if let Some(e) = &endpoint {
        b = b
            .with_endpoint(e.trim_end_matches('/'))
            .with_allow_http(e.starts_with("http://"));
    }
    b = b.with_virtual_hosted_style_request(!path_style);
    let s3 = b.build().map_err(|e| {
        StoreError::BadInput(format!(
            "destination s3://{bucket}: the S3 settings are incomplete ({e}); set AWS_REGION (or s3-region) and the keys"
        ))
    })?;
    let url = if prefix.is_empty() {
        format!("s3://{bucket}")
    } else {
        format!("s3://{bucket}/{prefix}")
    };
    // The bucket's base URL exactly as object_store forms it (builder.rs, `bucket_endpoint`).
    let bucket_url = match (&endpoint, path_style) {
        (Some(e), false) => e.trim_end_matches('/').to_string(),
        (Some(e), true) => format!("{}/{bucket}", e.trim_end_matches('/')),
        (None, false) => format!("https://{bucket}.s3.{region}.amazonaws.com"),
        (None, true) => format!("https://s3.{region}.amazonaws.com/{bucket}"),
    };
    let uploads = Uploads {
        s3: s3.clone(),
        bucket_url,
        region,
    };
    Ok(Store::new(Arc::new(s3), prefix, url).with_uploads(Arc::new(uploads)))
}

/// An incomplete multipart upload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pending {
    /// The object key in the bucket (with the destination's prefix).
    pub key: String,
    pub upload_id: String,
    pub initiated: DateTime<Utc>,
}

/// The two S3 calls `object_store` does not offer — ListMultipartUploads and
/// AbortMultipartUpload — for clearing the incomplete uploads that a killed run leaves behind.
/// Signed by `object_store`'s own SigV4 signer with the store's own credential provider
/// (static keys, session tokens, web identity: whatever the store resolved), endpoint, region
/// and addressing style, so they reach exactly what the store reaches.
#[derive(Debug)]
pub struct Uploads {
    s3: AmazonS3,
    /// `https://host/bucket` (path style) or `https://bucket.host` (virtual-hosted).
    bucket_url: String,
    region: String,
}

impl Uploads {
    /// One signed request with an empty body; the response body, or an error carrying the
    /// server's answer (so that [`super::hint`] can name the cause).
    async fn send(&self, method: reqwest::Method, url: url::Url) -> object_store::Result<String> {
        let fail = |what: String| object_store::Error::Generic {
            store: "S3",
            source: what.into(),
        };
        let credential = self.s3.credentials().get_credential().await?;
        let mut req = HttpRequest::new(HttpRequestBody::empty());
        *req.method_mut() = method.clone();
        *req.uri_mut() = url
            .as_str()
            .parse()
            .map_err(|e| fail(format!("{url} is not a valid request URI: {e}")))?;
        AwsAuthorizer::new(&credential, "s3", &self.region).try_authorize(&mut req, None)?;
        let client = crate::http::http_client(false).map_err(fail)?;
        let res = client
            .request(method, url.clone())
            .headers(req.headers().clone())
            .send()
            .await
            .map_err(|e| {
                fail(format!(
                    "error sending request to {url}: {}",
                    crate::http::error_chain(&e)
                ))
            })?;
        let status = res.status();
        let body = res
            .text()
            .await
            .map_err(|e| fail(format!("reading the answer of {url}: {e}")))?;
        if !status.is_success() {
            return Err(fail(format!("{status}: {}", body.trim())));
        }
        Ok(body)
    }

    fn url(&self, key: &str) -> Result<url::Url, object_store::Error> {
        let encoded: Vec<String> = key.split('/').map(encode_segment).collect();
        let s = format!("{}/{}", self.bucket_url, encoded.join("/"));
        url::Url::parse(&s).map_err(|e| object_store::Error::Generic {
            store: "S3",
            source: format!("{s} is not a URL: {e}").into(),
        })
    }

    /// Every incomplete multipart upload whose key starts with `prefix` (all pages).
    pub async fn list(&self, prefix: &str) -> object_store::Result<Vec<Pending>> {
        let mut out = vec![];
        let mut markers: Option<(String, String)> = None;
        loop {
            let mut url = self.url("")?;
            {
                let mut q = url.query_pairs_mut();
                q.append_pair("uploads", "");
                if !prefix.is_empty() {
                    q.append_pair("prefix", prefix);
                }
                if let Some((k, u)) = &markers {
                    q.append_pair("key-marker", k);
                    q.append_pair("upload-id-marker", u);
                }
            }
            let xml = self.send(reqwest::Method::GET, url).await?;
            let page = parse_uploads(&xml);
            out.extend(page.uploads);
            match page.next {
                Some(next) if markers.as_ref() != Some(&next) => markers = Some(next),
                _ => break,
            }
        }
        Ok(out)
    }

    /// Aborts one upload (its parts are freed).
    pub async fn abort(&self, p: &Pending) -> object_store::Result<()> {
        let mut url = self.url(&p.key)?;
        url.query_pairs_mut().append_pair("uploadId", &p.upload_id);
        self.send(reqwest::Method::DELETE, url).await.map(|_| ())
    }
}

/// RFC 3986 unreserved characters stay, everything else is percent-encoded (as S3 and
/// object_store's own key encoding want it).
fn encode_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// One page of a ListMultipartUploads answer.
#[derive(Debug, Default, PartialEq)]
struct Page {
    uploads: Vec<Pending>,
    /// `(NextKeyMarker, NextUploadIdMarker)` when the answer is truncated.
    next: Option<(String, String)>,
}

/// The text of the first `<name>…</name>` in `xml`, entities decoded.
fn tag(xml: &str, name: &str) -> Option<String> {
    let open = format!("<{name}>");
    let close = format!("</{name}>");
    let start = xml.find(&open)? + open.len();
    let end = start + xml[start..].find(&close)?;
    Some(unescape(&xml[start..end]))
}

fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('&') {
        out.push_str(&rest[..i]);
        rest = &rest[i..];
        let Some(end) = rest.find(';') else { break };
        let ent = &rest[1..end];
        let c = match ent {
            "amp" => Some('&'),
            "lt" => Some('<'),
            "gt" => Some('>'),
            "quot" => Some('"'),
            "apos" => Some('\''),
            _ => ent
                .strip_prefix("#x")
                .and_then(|h| u32::from_str_radix(h, 16).ok())
                .or_else(|| ent.strip_prefix('#').and_then(|d| d.parse().ok()))
                .and_then(char::from_u32),
        };
        match c {
            Some(c) => {
                out.push(c);
                rest = &rest[end + 1..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

fn parse_uploads(xml: &str) -> Page {
    let mut page = Page::default();
    let mut rest = xml;
    while let Some(i) = rest.find("<Upload>") {
        let body_start = i + "<Upload>".len();
        let Some(len) = rest[body_start..].find("</Upload>") else {
            break;
        };
        let body = &rest[body_start..body_start + len];
        rest = &rest[body_start + len..];
        let (Some(key), Some(upload_id)) = (tag(body, "Key"), tag(body, "UploadId")) else {
            continue;
        };
        // An upload whose start time cannot be read is never judged old.
        let Some(initiated) = tag(body, "Initiated")
            .and_then(|t| DateTime::parse_from_rfc3339(t.trim()).ok())
            .map(|t| t.with_timezone(&Utc))
        else {
            continue;
        };
        page.uploads.push(Pending {
            key,
            upload_id,
            initiated,
        });
    }
    if tag(xml, "IsTruncated").is_some_and(|t| t.trim() == "true") {
        if let (Some(k), Some(u)) = (tag(xml, "NextKeyMarker"), tag(xml, "NextUploadIdMarker")) {
            page.next = Some((k, u));
        }
    }
    page
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_multipart_uploads_answer_is_read() {
        // The example answer of the S3 API reference (ListMultipartUploads), trimmed, with
        // an entity in a key and an upload without a readable start time.
        let xml = r#"<?xml version="1.0" encoding="UTF-8"?>
<ListMultipartUploadsResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">
  <Bucket>bucket</Bucket>
  <KeyMarker></KeyMarker>
  <UploadIdMarker></UploadIdMarker>
  <NextKeyMarker>my-movie.m2ts</NextKeyMarker>
  <NextUploadIdMarker>YW55IGlkZWEgd2h5IGVsdmluZydzIHVwbG9hZCBmYWlsZWQ</NextUploadIdMarker>
  <MaxUploads>3</MaxUploads>
  <IsTruncated>true</IsTruncated>
  <Upload>
    <Key>my-divisor</Key>
    <UploadId>XMgbGlrZSBlbHZpbmcncyBub3QgaGF2aW5nIG11Y2ggbHVjaw</UploadId>
    <Initiator><ID>arn:aws:iam::111122223333:user/user1-11111a31-17b5-4fb7-9df5-b111111f13de</ID><DisplayName>user1-11111a31-17b5-4fb7-9df5-b111111f13de</DisplayName></Initiator>
    <StorageClass>REDUCED_REDUNDANCY</StorageClass>
    <Initiated>2010-11-10T20:48:33.000Z</Initiated>
  </Upload>
  <Upload>
    <Key>a &amp; b/c&#x20;d</Key>
    <UploadId>VXBsb2FkIElEIGZvciBlbHZpbmcncyBteS1tb3ZpZS5tMnRzIHVwbG9hZA</UploadId>
    <Initiated>2010-11-10T20:48:33Z</Initiated>
  </Upload>
  <Upload>
    <Key>no-time</Key>
    <UploadId>x</UploadId>
  </Upload>
</ListMultipartUploadsResult>"#;
        let page = parse_uploads(xml);
        assert_eq!(page.uploads.len(), 2);
        assert_eq!(page.uploads[0].key, "my-divisor");
        assert_eq!(
            page.uploads[0].initiated,
            DateTime::parse_from_rfc3339("2010-11-10T20:48:33Z").unwrap()
        );
        assert_eq!(page.uploads[1].key, "a & b/c d");
        assert_eq!(
            page.next,
            Some((
                "my-movie.m2ts".into(),
                "YW55IGlkZWEgd2h5IGVsdmluZydzIHVwbG9hZCBmYWlsZWQ".into()
            ))
        );
        assert_eq!(
            parse_uploads("<ListMultipartUploadsResult><IsTruncated>false</IsTruncated></ListMultipartUploadsResult>"),
            Page::default()
        );
        assert_eq!(
            encode_segment("pre-deployment-1 x+é"),
            "pre-deployment-1%20x%2B%C3%A9"
        );
    }
}
