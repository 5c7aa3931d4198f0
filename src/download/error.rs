//! [`DownloadError`]: why a bundle download failed, with the URL, path and offsets involved,
//! classified into retryable and permanent.

use std::io;
use std::path::PathBuf;
use std::time::Duration;

use url::Url;

/// Why [`super::Downloader::fetch`] (or [`super::Downloader::cleanup`]) failed.
///
/// [`DownloadError::is_retryable`] tells whether the same fetch may succeed later (network
/// trouble, a busy server); everything else is permanent for this target and server.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DownloadError {
    /// The configuration cannot work (e.g. `max_attempts` is 0, the CA file is unusable).
    #[error("download configuration: {0}")]
    Config(String),

    /// The HTTP client could not be built.
    #[error("cannot build the HTTP client: {0}")]
    Client(#[source] reqwest::Error),

    /// The server has no such file (404 or 410). Not retried.
    #[error("{url}: not found on the server (HTTP {status})")]
    NotFound { url: String, status: u16 },

    /// Any other unexpected HTTP status. 5xx, 408 and 429 are retryable.
    #[error("{url}: HTTP {status} at offset {offset}")]
    HttpStatus {
        url: String,
        status: u16,
        offset: u64,
    },

    /// Connection refused or reset, body cut off by the network, … Retryable.
    #[error("{url}: network error at offset {offset}: {source}")]
    Network {
        url: String,
        offset: u64,
        #[source]
        source: reqwest::Error,
    },

    /// The TLS handshake failed (most often: the server's certificate is not trusted).
    /// Not retried.
    #[error("{url}: TLS handshake failed: {source}")]
    Tls {
        url: String,
        #[source]
        source: reqwest::Error,
    },

    /// A redirect not followed: too many, or from https to http. Not retried.
    #[error("{url}: redirect refused: {}", crate::text::causes(source))]
    Redirect {
        url: String,
        #[source]
        source: reqwest::Error,
    },

    /// No response or no body data for `timeout`. Retryable.
    #[error("{url}: no data for {timeout:?} at offset {offset}")]
    ReadTimeout {
        url: String,
        offset: u64,
        timeout: Duration,
    },

    /// The transfer averaged below the configured low-speed limit over the window. Retryable.
    #[error(
        "{url}: only {bytes} bytes in {elapsed:?} at offset {offset}, below {min_bytes_per_sec} B/s"
    )]
    TooSlow {
        url: String,
        offset: u64,
        bytes: u64,
        elapsed: Duration,
        min_bytes_per_sec: u64,
    },

    /// The body ended before the target's length (connection closed early). Retryable.
    #[error("{url}: body ended at offset {offset} of {length}")]
    ShortBody {
        url: String,
        offset: u64,
        length: u64,
    },

    /// A `206` whose `Content-Range` does not answer our `Range` request. Retryable (the bytes
    /// were not accepted).
    #[error("{url}: asked for bytes from {offset}, got unusable range {content_range:?}")]
    BadRange {
        url: String,
        offset: u64,
        content_range: String,
    },

    /// The response is too long: it announced (`Content-Length`, `Content-Range`) or carried
    /// more bytes than the target has. `offset` is how far it reached: the announced end, or
    /// where reading stopped (at most one chunk past `length`). The partial file is deleted.
    /// Not retried: this is a broken or hostile server.
    #[error("{url}: response too long: it reached byte {offset}, the target has {length} bytes")]
    TooLong {
        url: String,
        length: u64,
        offset: u64,
    },

    /// The server's file has another length than the target. The partial file is deleted.
    /// Not retried.
    #[error("{url}: server's file is {actual} bytes, the target says {expected}")]
    LengthMismatch {
        url: String,
        expected: u64,
        actual: u64,
    },

    /// The complete file does not have the target's SHA-256. The partial file is deleted.
    /// Not retried.
    #[error("{url}: SHA-256 mismatch (expected {expected}, got {actual}); {path} deleted")]
    HashMismatch {
        url: String,
        path: PathBuf,
        expected: String,
        actual: String,
    },

    /// The cache filesystem has too little free space. Nothing was written.
    #[error("not enough space in {dir}: need {needed} bytes, {available} available")]
    NoSpace {
        dir: PathBuf,
        needed: u64,
        available: u64,
    },

    /// Another download of the same target holds the partial file's lock. Retryable.
    #[error("{path} is being written by another download")]
    Busy { path: PathBuf },

    /// A file operation in the cache directory failed (including a disk that filled up
    /// during the download). Not retried.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    /// Every attempt failed with a retryable error; `last` is the last one. Retryable: a later
    /// fetch resumes from the partial file.
    #[error("{url}: gave up after {attempts} attempts: {last}")]
    Exhausted {
        url: String,
        attempts: u32,
        #[source]
        last: Box<DownloadError>,
    },
}

impl DownloadError {
    /// Whether the same fetch may succeed if tried again (now or later).
    pub fn is_retryable(&self) -> bool {
        match self {
            DownloadError::HttpStatus { status, .. } => status_is_retryable(*status),
            DownloadError::Network { .. }
            | DownloadError::ReadTimeout { .. }
            | DownloadError::TooSlow { .. }
            | DownloadError::ShortBody { .. }
            | DownloadError::BadRange { .. }
            | DownloadError::Busy { .. }
            | DownloadError::Exhausted { .. } => true,
            DownloadError::Config(_)
            | DownloadError::Client(_)
            | DownloadError::NotFound { .. }
            | DownloadError::Tls { .. }
            | DownloadError::Redirect { .. }
            | DownloadError::TooLong { .. }
            | DownloadError::LengthMismatch { .. }
            | DownloadError::HashMismatch { .. }
            | DownloadError::NoSpace { .. }
            | DownloadError::Io { .. } => false,
        }
    }

    /// Whether the device's own storage failed (no room, a write error in the cache):
    /// nothing said about the server or the bytes.
    pub fn is_storage(&self) -> bool {
        matches!(
            self,
            DownloadError::NoSpace { .. } | DownloadError::Io { .. }
        )
    }

    /// The I/O error behind a storage failure, if there is one (for advice on what to do).
    pub fn storage_error(&self) -> Option<&io::Error> {
        match self {
            DownloadError::Io { source, .. } => Some(source),
            _ => None,
        }
    }

    /// Whether the bytes received so far are proven useless, so the partial file goes.
    pub(super) fn condemns_partial(&self) -> bool {
        matches!(
            self,
            DownloadError::TooLong { .. }
                | DownloadError::LengthMismatch { .. }
                | DownloadError::HashMismatch { .. }
        )
    }

    /// An I/O error on `path` (a disk that fills up during the download despite the check
    /// at the start is one: `StorageFull`).
    pub(super) fn io(path: impl Into<PathBuf>, source: io::Error) -> DownloadError {
        DownloadError::Io {
            path: path.into(),
            source,
        }
    }

    /// Classifies a `reqwest` failure of a request from `offset`.
    pub(super) fn from_reqwest(url: &Url, offset: u64, source: reqwest::Error) -> DownloadError {
        let url = url.to_string();
        if source.is_redirect() {
            DownloadError::Redirect { url, source }
        } else if source.is_connect() && is_tls_failure(&source) {
            DownloadError::Tls { url, source }
        } else {
            DownloadError::Network {
                url,
                offset,
                source,
            }
        }
    }
}

/// 5xx (server trouble), 408 (request timeout) and 429 (rate limited) may pass; other
/// statuses will not change by asking again.
pub(super) fn status_is_retryable(status: u16) -> bool {
    matches!(status, 408 | 429 | 500..=599)
}

/// A connect error is a TLS failure when its cause chain has an `InvalidData` I/O error: that
/// is how hyper-rustls reports a rejected handshake (bad certificate, alert), while TCP
/// failures are `ConnectionRefused`, `TimedOut` and the like. `io::Error::source` skips the
/// error it wraps, so wrapped I/O errors are unwrapped by hand.
fn is_tls_failure(error: &reqwest::Error) -> bool {
    let mut next = std::error::Error::source(error);
    while let Some(e) = next {
        if let Some(io) = e.downcast_ref::<io::Error>() {
            if io.kind() == io::ErrorKind::InvalidData {
                return true;
            }
            if let Some(inner) = io.get_ref() {
                next = Some(inner);
                continue;
            }
        }
        next = e.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url() -> String {
        "http://127.0.0.1/b.raucb".to_string()
    }

    #[test]
    fn http_statuses_are_classified() {
        for (status, retryable) in [
            (500, true),
            (502, true),
            (503, true),
            (599, true),
            (408, true),
            (429, true),
            (400, false),
            (401, false),
            (403, false),
            (451, false),
        ] {
            let e = DownloadError::HttpStatus {
                url: url(),
                status,
                offset: 0,
            };
            assert_eq!(e.is_retryable(), retryable, "HTTP {status}");
        }
        assert!(
            !DownloadError::NotFound {
                url: url(),
                status: 404
            }
            .is_retryable()
        );
    }

    #[test]
    fn integrity_failures_are_permanent_and_condemn_the_partial() {
        let errors = [
            DownloadError::TooLong {
                url: url(),
                length: 10,
                offset: 11,
            },
            DownloadError::LengthMismatch {
                url: url(),
                expected: 10,
                actual: 9,
            },
            DownloadError::HashMismatch {
                url: url(),
                path: "/x".into(),
                expected: "aa".into(),
                actual: "bb".into(),
            },
        ];
        for e in errors {
            assert!(!e.is_retryable(), "{e}");
            assert!(e.condemns_partial(), "{e}");
        }
        let short = DownloadError::ShortBody {
            url: url(),
            offset: 5,
            length: 10,
        };
        assert!(short.is_retryable());
        assert!(!short.condemns_partial());
    }

    #[test]
    fn exhausted_names_the_last_error() {
        let e = DownloadError::Exhausted {
            url: url(),
            attempts: 3,
            last: Box::new(DownloadError::ShortBody {
                url: url(),
                offset: 5,
                length: 10,
            }),
        };
        assert!(e.is_retryable());
        let text = e.to_string();
        assert!(text.contains("gave up after 3 attempts"), "{text}");
        assert!(text.contains("body ended at offset 5 of 10"), "{text}");
    }
}
