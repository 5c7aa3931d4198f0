//! tough's [`Transport`] over our own `reqwest` client (the updog pattern: a custom transport
//! rather than a fork), so metadata and bundles share one TLS configuration and one
//! connection pool, and "not found" is told apart from other failures — tough relies on that
//! when it probes for the next `root.json`.
//!
//! Sizes are bounded by tough (it stops reading a stream past its limit); time is bounded
//! here, per request.

use std::time::Duration;

use async_trait::async_trait;
use futures_util::StreamExt;
use tough::{Transport, TransportError, TransportErrorKind, TransportStream};
use url::Url;

/// Fetches metadata over HTTP(S), and `file://` for local repositories (tests, USB sticks).
#[derive(Debug, Clone)]
pub struct HttpTransport {
    client: reqwest::Client,
    /// Whole-request limit for one metadata file (they are small).
    timeout: Duration,
}

impl HttpTransport {
    pub fn new(client: reqwest::Client, timeout: Duration) -> HttpTransport {
        HttpTransport { client, timeout }
    }
}

#[async_trait]
impl Transport for HttpTransport {
    async fn fetch(&self, url: Url) -> Result<TransportStream, TransportError> {
        match url.scheme() {
            "http" | "https" => {}
            "file" => return tough::FilesystemTransport.fetch(url).await,
            _ => {
                return Err(TransportError::new(
                    TransportErrorKind::UnsupportedUrlScheme,
                    url,
                ));
            }
        }
        let other = |e: reqwest::Error, url: &Url| {
            TransportError::new_with_cause(TransportErrorKind::Other, url, e)
        };
        let response = self
            .client
            .get(url.clone())
            .timeout(self.timeout)
            .send()
            .await
            .map_err(|e| other(e, &url))?;
        let status = response.status();
        if status == reqwest::StatusCode::NOT_FOUND || status == reqwest::StatusCode::FORBIDDEN {
            // S3 and some CDNs answer 403 for a missing object.
            return Err(TransportError::new(TransportErrorKind::FileNotFound, url));
        }
        if !status.is_success() {
            return Err(TransportError::new_with_cause(
                TransportErrorKind::Other,
                &url,
                format!("HTTP status {status}"),
            ));
        }
        let stream = response.bytes_stream().map(move |chunk| {
            chunk.map_err(|e| TransportError::new_with_cause(TransportErrorKind::Other, &url, e))
        });
        Ok(Box::pin(stream))
    }
}
