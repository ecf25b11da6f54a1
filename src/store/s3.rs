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

use object_store::aws::AmazonS3Builder;

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
    Ok(Store::new(Arc::new(s3), prefix, url))
}
