//! tough's [`Transport`] over our own `reqwest` client (the updog pattern: a custom transport
//! rather than a fork), so metadata and bundles share one TLS configuration and one
//! connection pool, and "not found" is told apart from other failures — tough relies on that
//! when it probes for the next `root.json`.
//!
//! Time is bounded here, per request, and so are sizes: tough stops reading at the length
//! that signed metadata declares (the timestamp declares the snapshot's, the snapshot the
//! targets'), but a repository whose keys signed a 400 MB snapshot length would have it
//! read that much. So the transport enforces its own bounds whatever is declared: a
//! maximum per metadata file ([`max_file_size`]) and a byte budget for the whole check
//! ([`HttpTransport::with_budget`]), and reports overruns as [`TooLarge`], which says the
//! repository is bad rather than the network.
//!
//! With consistent snapshots, `N.snapshot.json` and `N.targets.json` never change once
//! published, yet tough fetches them on every load. The transport can therefore keep the
//! ones that verified (see [`HttpTransport::with_cache`]) and serve them locally: a check
//! that finds nothing new then costs the root probe and `timestamp.json` only. tough still
//! verifies whatever the transport returns (signatures, versions, and the hashes and lengths
//! the timestamp and snapshot list), so a damaged cache fails verification like a bad server.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use futures_util::StreamExt;
use tough::{Transport, TransportError, TransportErrorKind, TransportStream};
use url::Url;

/// Largest versioned metadata file the cache keeps (tough's own limit for targets.json).
const MAX_CACHED: usize = 4 * 1024 * 1024;

/// A metadata file larger than the agent accepts, whatever signed metadata declared.
#[derive(Debug, thiserror::Error)]
#[error(
    "{file}: more metadata than the agent accepts ({limit} bytes {what}); the repository is \
     refused"
)]
pub struct TooLarge {
    pub file: String,
    pub limit: u64,
    pub what: &'static str,
}

/// The most bytes one metadata file may have, by its name: the same bounds tough applies
/// when no length is declared (see `client::limits`), now also when one is.
pub fn max_file_size(name: &str) -> u64 {
    if name == "timestamp.json" {
        16 * 1024
    } else if name.ends_with(".root.json") || name == "root.json" {
        64 * 1024
    } else if name.ends_with("snapshot.json") {
        256 * 1024
    } else {
        4 * 1024 * 1024
    }
}

/// Fetches metadata over HTTP(S), and `file://` for local repositories (tests, USB sticks).
#[derive(Debug, Clone)]
pub struct HttpTransport {
    client: reqwest::Client,
    /// Whole-request limit for one metadata file (they are small).
    timeout: Duration,
    /// Directory of verified versioned metadata, when caching.
    cache: Option<PathBuf>,
    /// Versioned metadata fetched from the network during this load, by file name; kept in
    /// the cache only once the whole load verified ([`HttpTransport::keep_fetched`]).
    fetched: Arc<Mutex<HashMap<String, Vec<u8>>>>,
    /// `N.root.json` files fetched during this load, by version: the root chain as far as
    /// the server offered it, for [`super::trust::newest_chained`] (see
    /// [`HttpTransport::fetched_roots`]).
    roots: Arc<Mutex<BTreeMap<u64, Vec<u8>>>>,
    /// Bytes the current check may still read from the network, and the whole budget.
    budget: Arc<AtomicU64>,
    budget_total: u64,
    /// The `Date` of the latest HTTPS response (authenticated by TLS; it counts as trusted
    /// time only once the metadata verified, see `policy::time`).
    date: Arc<Mutex<Option<jiff::Timestamp>>>,
}

impl HttpTransport {
    pub fn new(client: reqwest::Client, timeout: Duration) -> HttpTransport {
        HttpTransport {
            client,
            timeout,
            cache: None,
            fetched: Arc::default(),
            roots: Arc::default(),
            budget: Arc::new(AtomicU64::new(u64::MAX)),
            budget_total: u64::MAX,
            date: Arc::default(),
        }
    }

    /// Reads at most `bytes` of metadata from the network, over all files of this
    /// transport's lifetime (one check, with its retry).
    pub fn with_budget(mut self, bytes: u64) -> HttpTransport {
        self.budget = Arc::new(AtomicU64::new(bytes));
        self.budget_total = bytes;
        self
    }

    /// The `Date` of the latest HTTPS response of this load, if any.
    pub fn server_date(&self) -> Option<jiff::Timestamp> {
        *self.date.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Serves versioned snapshot and targets metadata from `dir` when present.
    pub fn with_cache(mut self, dir: PathBuf) -> HttpTransport {
        self.cache = Some(dir);
        self
    }

    /// Stores what this load fetched in the cache. Call only after tough verified the load.
    pub fn keep_fetched(&self) {
        let Some(dir) = &self.cache else {
            return;
        };
        let fetched = std::mem::take(&mut *self.fetched.lock().unwrap_or_else(|e| e.into_inner()));
        if fetched.is_empty() {
            return;
        }
        if let Err(e) = crate::fsutil::create_private_dir(dir) {
            tracing::debug!(error = %e, "metadata cache unavailable");
            return;
        }
        for (name, bytes) in fetched {
            // A cache: no fsync; a torn file fails verification and is fetched again.
            let tmp = dir.join(format!(".{name}.tmp"));
            let done =
                std::fs::write(&tmp, &bytes).and_then(|()| std::fs::rename(&tmp, dir.join(&name)));
            if let Err(e) = done {
                tracing::debug!(error = %e, file = name, "cannot cache metadata");
                let _ = std::fs::remove_file(&tmp);
            }
        }
    }

    /// The `N.root.json` files this load fetched (as received; a response cut short is
    /// incomplete and will not parse), and forgets them.
    pub fn fetched_roots(&self) -> BTreeMap<u64, Vec<u8>> {
        std::mem::take(&mut *self.roots.lock().unwrap_or_else(|e| e.into_inner()))
    }

    fn cached(&self, name: &str) -> Option<Vec<u8>> {
        let path = self.cache.as_ref()?.join(name);
        let bytes = read_bounded(&path)?;
        tracing::debug!(file = name, "metadata served from the cache");
        Some(bytes)
    }
}

/// An HTTP `Date` (IMF-fixdate, `Sun, 06 Nov 1994 08:49:37 GMT`, an RFC 2822 form).
pub fn parse_http_date(s: &str) -> Option<jiff::Timestamp> {
    jiff::fmt::rfc2822::parse(s).ok().map(|z| z.timestamp())
}

/// `N.snapshot.json` or `N.targets.json` with a version N ≥ 1: immutable once published.
pub fn is_versioned_metadata(name: &str) -> bool {
    let Some((version, rest)) = name.split_once('.') else {
        return false;
    };
    !version.is_empty()
        && !version.starts_with('0')
        && version.bytes().all(|b| b.is_ascii_digit())
        && matches!(rest, "snapshot.json" | "targets.json")
}

/// The version N of `N.root.json` (N ≥ 1).
pub fn root_version(name: &str) -> Option<u64> {
    let version = name.strip_suffix(".root.json")?;
    if version.starts_with('0') || !version.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    version.parse().ok()
}

fn read_bounded(path: &Path) -> Option<Vec<u8>> {
    let meta = std::fs::symlink_metadata(path).ok()?;
    if !meta.is_file() || meta.len() > MAX_CACHED as u64 {
        return None;
    }
    std::fs::read(path).ok()
}

#[async_trait]
impl Transport for HttpTransport {
    async fn fetch(&self, url: Url) -> Result<TransportStream, TransportError> {
        match url.scheme() {
            "http" | "https" => {}
            "file" => {
                let name = url.path_segments().and_then(|mut s| s.next_back());
                let version = name.and_then(root_version);
                let stream = tough::FilesystemTransport.fetch(url).await?;
                let Some(version) = version else {
                    return Ok(stream);
                };
                // Recorded as over HTTP (tough stops reading at its root size limit).
                let roots = self.roots.clone();
                roots
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(version, Vec::new());
                return Ok(Box::pin(stream.map(move |chunk| {
                    if let Ok(bytes) = &chunk {
                        let mut all = roots.lock().unwrap_or_else(|e| e.into_inner());
                        all.entry(version).or_default().extend_from_slice(bytes);
                    }
                    chunk
                })));
            }
            _ => {
                return Err(TransportError::new(
                    TransportErrorKind::UnsupportedUrlScheme,
                    url,
                ));
            }
        }
        let name = url
            .path_segments()
            .and_then(|mut s| s.next_back())
            .unwrap_or("")
            .to_owned();
        let versioned = self.cache.is_some() && is_versioned_metadata(&name);
        if versioned && let Some(bytes) = self.cached(&name) {
            let chunk: Result<bytes::Bytes, TransportError> = Ok(bytes::Bytes::from(bytes));
            return Ok(Box::pin(futures_util::stream::iter([chunk])));
        }
        let other = |e: reqwest::Error, url: &Url| {
            TransportError::new_with_cause(TransportErrorKind::Other, url, e)
        };
        let too_large = |limit: u64, what: &'static str, url: &Url| {
            TransportError::new_with_cause(
                TransportErrorKind::Other,
                url,
                TooLarge {
                    file: name.clone(),
                    limit,
                    what,
                },
            )
        };
        if self.budget.load(Ordering::Relaxed) == 0 {
            return Err(too_large(self.budget_total, "per check", &url));
        }
        let response = self
            .client
            .get(url.clone())
            .timeout(self.timeout)
            .send()
            .await
            .map_err(|e| other(e, &url))?;
        let status = response.status();
        if url.scheme() == "https"
            && let Some(date) = response
                .headers()
                .get(reqwest::header::DATE)
                .and_then(|v| v.to_str().ok())
                .and_then(parse_http_date)
        {
            *self.date.lock().unwrap_or_else(|e| e.into_inner()) = Some(date);
        }
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
        let fetched = versioned.then(|| {
            // A fresh buffer per fetch: bytes of an earlier, failed load never mix in.
            let mut all = self.fetched.lock().unwrap_or_else(|e| e.into_inner());
            all.insert(name.clone(), Vec::new());
            self.fetched.clone()
        });
        let root = root_version(&name).map(|v| {
            let mut all = self.roots.lock().unwrap_or_else(|e| e.into_inner());
            all.insert(v, Vec::new());
            (v, self.roots.clone())
        });
        let file_limit = max_file_size(&name);
        if response.content_length().is_some_and(|n| n > file_limit) {
            return Err(too_large(file_limit, "per file", &url));
        }
        let budget = self.budget.clone();
        let budget_total = self.budget_total;
        let mut read = 0u64;
        let mut failed = false;
        let stream = response.bytes_stream().map(move |chunk| {
            if failed {
                return Err(TransportError::new(TransportErrorKind::Other, &url));
            }
            if let Ok(bytes) = &chunk {
                let n = bytes.len() as u64;
                read += n;
                let left = budget.load(Ordering::Relaxed);
                let over = if read > file_limit {
                    Some((file_limit, "per file"))
                } else if n > left {
                    Some((budget_total, "per check"))
                } else {
                    None
                };
                budget.store(left.saturating_sub(n), Ordering::Relaxed);
                if let Some((limit, what)) = over {
                    // The stream ends here: nothing more is read from this response.
                    failed = true;
                    return Err(TransportError::new_with_cause(
                        TransportErrorKind::Other,
                        &url,
                        TooLarge {
                            file: name.clone(),
                            limit,
                            what,
                        },
                    ));
                }
            }
            if let (Some(fetched), Ok(bytes)) = (&fetched, &chunk) {
                let mut all = fetched.lock().unwrap_or_else(|e| e.into_inner());
                let buf = all.entry(name.clone()).or_default();
                if buf.len() + bytes.len() <= MAX_CACHED {
                    buf.extend_from_slice(bytes);
                }
            }
            if let (Some((version, roots)), Ok(bytes)) = (&root, &chunk) {
                // Bounded by the per-file limit checked above.
                let mut all = roots.lock().unwrap_or_else(|e| e.into_inner());
                all.entry(*version).or_default().extend_from_slice(bytes);
            }
            chunk.map_err(|e| TransportError::new_with_cause(TransportErrorKind::Other, &url, e))
        });
        Ok(Box::pin(stream))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_dates_parse_and_garbage_does_not() {
        assert_eq!(
            parse_http_date("Mon, 30 Nov 2026 07:30:00 GMT"),
            Some("2026-11-30T07:30:00Z".parse().unwrap())
        );
        for bad in ["", "yesterday", "Mon, 30 Nov 2026 25:00:00 GMT", "\u{0}"] {
            assert_eq!(parse_http_date(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn only_versioned_snapshot_and_targets_are_cacheable() {
        for yes in ["1.snapshot.json", "42.targets.json"] {
            assert!(is_versioned_metadata(yes), "{yes}");
        }
        for no in [
            "timestamp.json",
            "2.root.json",
            "snapshot.json",
            "0.snapshot.json",
            "01.targets.json",
            "x.targets.json",
            "1.targets.json.tmp",
            "../1.targets.json",
            "",
        ] {
            assert!(!is_versioned_metadata(no), "{no}");
        }
    }

    #[test]
    fn the_cache_keeps_only_what_a_load_handed_over_and_bounds_reads() {
        let dir = tempfile::tempdir().unwrap();
        let cache = dir.path().join("versioned");
        let t = HttpTransport::new(reqwest::Client::new(), Duration::from_secs(1))
            .with_cache(cache.clone());
        t.fetched
            .lock()
            .unwrap()
            .insert("3.targets.json".into(), b"{}".to_vec());
        assert_eq!(
            t.cached("3.targets.json"),
            None,
            "nothing kept before keep_fetched"
        );
        t.keep_fetched();
        assert_eq!(t.cached("3.targets.json"), Some(b"{}".to_vec()));
        std::fs::write(cache.join("4.targets.json"), vec![b' '; MAX_CACHED + 1]).unwrap();
        assert_eq!(
            t.cached("4.targets.json"),
            None,
            "oversized files are not served"
        );
    }
}
