//! Download adapter: fetches one bundle [`Target`] (URL, length, SHA-256) into a cache
//! directory, resumably, and hands back the path of a file whose length and SHA-256 match.
//!
//! # Flow of [`Downloader::fetch`]
//!
//! 1. `<dir>/<sha256hex>.verified` already there with the right length → done (it was
//!    hashed when it was written; RAUC checks the bundle's signature before installing).
//! 2. Free-space check: the filesystem must have `length − already downloaded + margin`
//!    bytes free, else [`DownloadError::NoSpace`] before anything is written.
//! 3. `<dir>/<sha256hex>.partial` is opened (created, `O_NOFOLLOW`) and locked; if it holds
//!    N bytes from an earlier run (agent restart, reboot), those N bytes are hashed from disk —
//!    the only re-read — and the download resumes at N. A partial longer than the target is
//!    emptied.
//! 4. Attempts, up to `max_attempts`: `GET` with `Range: bytes=N-` when N > 0. Each response
//!    is checked before its body is read (`response.rs`): a `206` must carry
//!    `Content-Range: bytes N-…/length`; a `200` to a range request means the server ignores
//!    ranges, so the partial starts over from 0 (same attempt); a `416` can only mean the
//!    server's file is shorter. (A partial that already holds `length` bytes is verified
//!    without any request.) Body bytes are hashed (aws-lc-rs SHA-256, one pass) and written in
//!    1 MiB batches by a blocking job that runs while the next batch arrives (`files.rs`); the
//!    hasher state lives across attempts, so a dropped link costs no re-read. An attempt ends
//!    on `read_timeout` without data, or when it averages below the low-speed limit over a
//!    window. Between attempts: exponential backoff with full jitter (`pace.rs`).
//! 5. Once `length` bytes are in, the digest is compared; a match is `fsync`ed and renamed to
//!    `.verified` (then the directory is synced). A mismatch deletes the partial.
//!
//! # What a hostile server can make us read
//!
//! A response announcing more than is left (`Content-Length` > `length − N`) is refused before
//! its body is read. Otherwise the body is consumed chunk by chunk and the first chunk that
//! would go past the target's `length` (or past the range the `206` announced) ends the
//! attempt with [`DownloadError::TooLong`]: the partial is deleted, nothing is retried. So:
//!
//! - body bytes accepted (hashed, written) per response: at most `length − N`;
//! - body bytes taken off the connection per response: at most `length − N` plus
//!   [`MAX_OVERREAD`] = 417,792 bytes, one fill of hyper's HTTP/1 read buffer (hyper 1.x's
//!   default maximum, 8 KiB + 400 KiB; reqwest does not change it). `TooLong::offset` says
//!   where the body reading stopped (`offset − length` is the over-read, at most one chunk).
//!   Over TLS, rustls may in addition hold one TLS record (≤ 16 KiB of plaintext) it
//!   decrypted ahead;
//! - whatever the server pushed into the kernel's socket buffers after that is never read:
//!   the connection is dropped. Counted at the server, that part depends on the kernel's
//!   buffer sizes (up to a few MiB on loopback), not on us.
//!
//! # Errors
//!
//! [`DownloadError::is_retryable`] separates network trouble (connection reset, timeouts, 5xx,
//! body cut short) from permanent failures (404 → [`DownloadError::NotFound`], length or hash
//! mismatch, too long, no space, TLS). Within one fetch, retryable errors are retried up to
//! `max_attempts`, then reported as [`DownloadError::Exhausted`] — still retryable: the next
//! fetch resumes from the partial file.

mod error;
mod files;
mod pace;
mod response;

use std::io::Read;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use reqwest::header::{CONTENT_RANGE, RANGE};
use tokio::time::{Instant, timeout};
use tracing::{info, warn};
use url::Url;

pub use error::DownloadError;

use files::{Partial, Paths};
use pace::{Jitter, SpeedWatch};
use response::{Head, Plan};

/// The most bytes beyond a target's length that a response can make us take off the
/// connection: one read of hyper's HTTP/1 buffer (its default maximum, 8 KiB + 400 KiB).
/// See the module docs.
pub const MAX_OVERREAD: u64 = 8192 + 4096 * 100;

/// Progress is reported at least every this many bytes (and at each attempt's start and end).
const PROGRESS_STEP: u64 = 1 << 20;

/// The largest CA file we read.
const MAX_CA_FILE: u64 = 1 << 20;

/// What to download: the bundle target's URL and the length and SHA-256 the (verified)
/// metadata gives for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Where to get it (`http`/`https`; redirects are followed, at most 5, never from https to http).
    pub url: Url,
    /// Its exact length in bytes: never more is accepted.
    pub length: u64,
    /// Its SHA-256; also names its files in the cache directory.
    pub sha256: [u8; 32],
}

/// Where a download stands, reported through [`Downloader::fetch`]'s callback.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// Bytes received and hashed so far (including those resumed from an earlier run).
    pub done: u64,
    /// The target's length.
    pub total: u64,
    /// The current attempt, from 1; 0 when the file was already there.
    pub attempt: u32,
}

/// How [`Downloader`] behaves. [`DownloadConfig::new`] gives the defaults noted per field.
#[derive(Debug, Clone)]
pub struct DownloadConfig {
    /// Cache directory for `*.partial` and `*.verified` files; created if missing. It should
    /// hold nothing but our files (foreign files are left alone).
    pub dir: PathBuf,
    /// TCP (and TLS) connect timeout. Default 15 s (as `[download] connect_timeout`).
    pub connect_timeout: Duration,
    /// No response headers or no body bytes for this long aborts the attempt. Default 60 s
    /// (as `[download] read_timeout`).
    pub read_timeout: Duration,
    /// An attempt averaging fewer bytes per second than this over `low_speed_window` is
    /// aborted (0 disables). Default 1 KiB/s: below that a cellular link is not worth holding.
    pub low_speed_bytes_per_sec: u64,
    /// See `low_speed_bytes_per_sec`. Default 60 s.
    pub low_speed_window: Duration,
    /// Attempts per fetch (≥ 1). Default 8 (as `[download] max_attempts`).
    pub max_attempts: u32,
    /// First backoff cap; doubles per retry. Default 1 s.
    pub backoff_base: Duration,
    /// Largest backoff cap. Default 60 s.
    pub backoff_max: Duration,
    /// PEM file with extra trusted roots (a private CA of an operator's mirror), added to
    /// the system's. Default none.
    pub extra_root_ca: Option<PathBuf>,
    /// Free space to leave on the cache filesystem beyond the download. Default 16 MiB.
    pub min_free_bytes_margin: u64,
}

impl DownloadConfig {
    /// The defaults, caching in `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> DownloadConfig {
        DownloadConfig {
            dir: dir.into(),
            connect_timeout: Duration::from_secs(15),
            read_timeout: Duration::from_secs(60),
            low_speed_bytes_per_sec: 1024,
            low_speed_window: Duration::from_secs(60),
            max_attempts: 8,
            backoff_base: Duration::from_secs(1),
            backoff_max: Duration::from_secs(60),
            extra_root_ca: None,
            min_free_bytes_margin: 16 << 20,
        }
    }

    fn validate(&self) -> Result<(), DownloadError> {
        let problem = if self.max_attempts == 0 {
            "max_attempts must be at least 1"
        } else if self.read_timeout.is_zero() {
            "read_timeout must be positive"
        } else if self.connect_timeout.is_zero() {
            "connect_timeout must be positive"
        } else if self.low_speed_bytes_per_sec > 0 && self.low_speed_window.is_zero() {
            "low_speed_window must be positive when low_speed_bytes_per_sec is set"
        } else if self.backoff_base > self.backoff_max {
            "backoff_base must not exceed backoff_max"
        } else {
            return Ok(());
        };
        Err(DownloadError::Config(problem.to_string()))
    }
}

/// The most redirects one request follows.
pub const MAX_REDIRECTS: usize = 5;

/// Why a redirect is not followed; `None`: follow it. `previous` are the URLs already
/// requested (the configured one first). Leaving TLS is refused: a server reached over
/// https must not be able to send the agent's next request — a report's body, or which
/// bundle a device wants — in clear text, whatever it signs.
pub fn refuse_redirect(previous: &[Url], next: &Url) -> Option<String> {
    if previous.len() > MAX_REDIRECTS {
        Some(format!("more than {MAX_REDIRECTS} redirects"))
    } else if previous.iter().any(|u| u.scheme() == "https") && next.scheme() != "https" {
        Some(format!("refusing to leave https for {next}"))
    } else {
        None
    }
}

fn redirect_policy() -> reqwest::redirect::Policy {
    reqwest::redirect::Policy::custom(|attempt| {
        match refuse_redirect(attempt.previous(), attempt.url()) {
            Some(why) => attempt.error(why),
            None => attempt.follow(),
        }
    })
}

/// Builds the HTTP client `config` asks for: connect timeout, our user agent, the redirects
/// [`refuse_redirect`] allows, and the system's roots plus `extra_root_ca`. Share it (see
/// [`Downloader::client`]) rather than building another.
pub fn build_client(config: &DownloadConfig) -> Result<reqwest::Client, DownloadError> {
    let mut builder = reqwest::Client::builder()
        .connect_timeout(config.connect_timeout)
        .user_agent(concat!("ssu-agent/", env!("CARGO_PKG_VERSION")))
        .redirect(redirect_policy());
    if let Some(path) = &config.extra_root_ca {
        let mut pem = Vec::new();
        std::fs::File::open(path)
            .and_then(|f| f.take(MAX_CA_FILE + 1).read_to_end(&mut pem))
            .map_err(|e| DownloadError::io(path, e))?;
        if pem.len() as u64 > MAX_CA_FILE {
            return Err(DownloadError::Config(format!(
                "{}: larger than {MAX_CA_FILE} bytes",
                path.display()
            )));
        }
        let certs = reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| DownloadError::Config(format!("{}: {e}", path.display())))?;
        if certs.is_empty() {
            return Err(DownloadError::Config(format!(
                "{}: no PEM certificate in it",
                path.display()
            )));
        }
        // Merged with (not instead of) the platform's roots: reqwest then uses
        // rustls-platform-verifier's `new_with_extra_roots`.
        builder = builder.tls_certs_merge(certs);
    }
    builder.build().map_err(DownloadError::Client)
}

/// Downloads targets into the cache directory; one per process is enough (it holds the
/// connection pool). Cheap to share by reference; `fetch` takes `&self`.
#[derive(Debug)]
pub struct Downloader {
    config: DownloadConfig,
    client: reqwest::Client,
    jitter: Mutex<Jitter>,
}

impl Downloader {
    /// Validates `config`, creates its directory and builds the HTTP client. Backoff jitter
    /// is seeded from the clock and the pid; see [`Downloader::with_jitter_seed`].
    pub fn new(config: DownloadConfig) -> Result<Downloader, DownloadError> {
        config.validate()?;
        std::fs::create_dir_all(&config.dir).map_err(|e| DownloadError::io(&config.dir, e))?;
        let client = build_client(&config)?;
        let seed = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64)
            ^ (u64::from(std::process::id()) << 32);
        Ok(Downloader {
            config,
            client,
            jitter: Mutex::new(Jitter::new(seed)),
        })
    }

    /// Makes the backoff jitter reproducible.
    pub fn with_jitter_seed(self, seed: u64) -> Downloader {
        Downloader {
            jitter: Mutex::new(Jitter::new(seed)),
            ..self
        }
    }

    /// The HTTP client, for other adapters to share (one TLS configuration, one pool).
    pub fn client(&self) -> &reqwest::Client {
        &self.client
    }

    /// The configuration it was built with.
    pub fn config(&self) -> &DownloadConfig {
        &self.config
    }

    /// Where a verified download of `sha256` is (or will be).
    pub fn verified_path(&self, sha256: &[u8; 32]) -> PathBuf {
        Paths::new(&self.config.dir, sha256).verified
    }

    /// Downloads `target` (resuming what an earlier fetch left) and returns the path of the
    /// complete file, whose length and SHA-256 match the target. `progress` is called at
    /// each attempt's start and end and every 1 MiB in between; keep it cheap.
    ///
    /// Cancel-safe: dropping the future leaves the partial file for the next fetch (minus up
    /// to 1 MiB received but not yet handed to a write; a write in flight finishes, and the
    /// next fetch waits up to 2 s for it).
    pub async fn fetch(
        &self,
        target: &Target,
        progress: &mut (dyn FnMut(Progress) + Send),
    ) -> Result<PathBuf, DownloadError> {
        let dir = &self.config.dir;
        let paths = Paths::new(dir, &target.sha256);
        let length = target.length;
        if files::verified_exists(&paths.verified, length)? {
            info!(url = %target.url, path = %paths.verified.display(), "already downloaded and verified");
            progress(Progress {
                done: length,
                total: length,
                attempt: 0,
            });
            return Ok(paths.verified);
        }

        let have = files::partial_len(&paths.partial)?
            .filter(|&n| n <= length)
            .unwrap_or(0);
        let needed = (length - have).saturating_add(self.config.min_free_bytes_margin);
        let available = files::free_space(dir)?;
        if available < needed {
            return Err(DownloadError::NoSpace {
                dir: dir.clone(),
                needed,
                available,
            });
        }

        let mut partial = Partial::open(&paths.partial, length).await?;
        let started = Instant::now();
        let resumed_at = partial.accepted();
        match self.attempts(target, &mut partial, progress).await {
            Ok(received) => {
                partial
                    .finish(&target.url, &paths.verified, &target.sha256)
                    .await?;
                let seconds = started.elapsed().as_secs_f64();
                info!(
                    url = %target.url,
                    path = %paths.verified.display(),
                    bytes = received,
                    resumed_at,
                    seconds = format_args!("{seconds:.3}"),
                    mb_per_s = format_args!("{:.1}", received as f64 / 1e6 / seconds.max(1e-9)),
                    "download verified"
                );
                Ok(paths.verified)
            }
            Err(e) => {
                if e.condemns_partial() {
                    partial.discard();
                } else {
                    partial.keep().await;
                }
                Err(e)
            }
        }
    }

    /// Removes every `*.partial` and `*.verified` in the cache directory whose SHA-256 is not
    /// in `keep`, and returns what it removed. Never follows symlinks (a symlink under our
    /// name is removed as a link); ignores foreign files and directories; skips partial files
    /// a running download holds.
    pub fn cleanup(&self, keep: &[[u8; 32]]) -> Result<Vec<PathBuf>, DownloadError> {
        files::cleanup(&self.config.dir, keep)
    }

    /// Attempts until `partial` holds the whole target; returns the body bytes received.
    async fn attempts(
        &self,
        target: &Target,
        partial: &mut Partial,
        progress: &mut (dyn FnMut(Progress) + Send),
    ) -> Result<u64, DownloadError> {
        let mut received = 0;
        let mut attempt = 0;
        while partial.accepted() < target.length {
            attempt += 1;
            let result = self
                .attempt(target, partial, attempt, &mut received, progress)
                .await;
            let Err(e) = result else { continue };
            if !e.is_retryable() {
                return Err(e);
            }
            // What we have goes to disk now, so a restart during the backoff keeps it.
            partial.flush().await?;
            if attempt >= self.config.max_attempts {
                return Err(DownloadError::Exhausted {
                    url: target.url.to_string(),
                    attempts: attempt,
                    last: Box::new(e),
                });
            }
            let delay = self.backoff(attempt);
            warn!(url = %target.url, attempt, error = %e, retry_in = ?delay, "download attempt failed");
            tokio::time::sleep(delay).await;
        }
        Ok(received)
    }

    /// One request: checks the response, then takes its body into `partial`.
    async fn attempt(
        &self,
        target: &Target,
        partial: &mut Partial,
        attempt: u32,
        received: &mut u64,
        progress: &mut (dyn FnMut(Progress) + Send),
    ) -> Result<(), DownloadError> {
        let url = &target.url;
        let length = target.length;
        let offset = partial.accepted();
        if offset == 0 {
            info!(%url, attempt, length, "download starting");
        } else {
            info!(%url, attempt, offset, length, "download resuming");
        }
        let report = |done| Progress {
            done,
            total: length,
            attempt,
        };
        progress(report(offset));

        let read_timeout = self.config.read_timeout;
        let timed_out = |at| DownloadError::ReadTimeout {
            url: url.to_string(),
            offset: at,
            timeout: read_timeout,
        };
        let mut request = self.client.get(url.clone());
        if offset > 0 {
            request = request.header(RANGE, format!("bytes={offset}-"));
        }
        let mut response = timeout(read_timeout, request.send())
            .await
            .map_err(|_| timed_out(offset))?
            .map_err(|e| DownloadError::from_reqwest(url, offset, e))?;

        let head = Head {
            status: response.status().as_u16(),
            content_length: response.content_length(),
            content_range: response
                .headers()
                .get(CONTENT_RANGE)
                .and_then(|v| v.to_str().ok()),
        };
        let end = match response::check(url, offset, length, head)? {
            Plan::Append { end } => end,
            Plan::Restart => {
                warn!(%url, offset, "server ignored the Range request; starting over from 0");
                partial.restart().await?;
                length
            }
        };

        let mut speed = SpeedWatch::new(
            Instant::now(),
            self.config.low_speed_bytes_per_sec,
            self.config.low_speed_window,
        );
        let mut reported = partial.accepted();
        loop {
            let at = partial.accepted();
            let chunk = match timeout(read_timeout, response.chunk()).await {
                Err(_) => return Err(timed_out(at)),
                Ok(Err(e)) => return Err(DownloadError::from_reqwest(url, at, e)),
                Ok(Ok(None)) => break,
                Ok(Ok(Some(chunk))) => chunk,
            };
            let n = chunk.len() as u64;
            // The cap: never accept a byte past what the response may carry (≤ length).
            if n > end - at {
                return Err(DownloadError::TooLong {
                    url: url.to_string(),
                    length,
                    offset: at + n,
                });
            }
            partial.push(&chunk).await?;
            *received += n;
            if let Err(slow) = speed.record(Instant::now(), n) {
                return Err(DownloadError::TooSlow {
                    url: url.to_string(),
                    offset: partial.accepted(),
                    bytes: slow.bytes,
                    elapsed: slow.elapsed,
                    min_bytes_per_sec: self.config.low_speed_bytes_per_sec,
                });
            }
            if partial.accepted() - reported >= PROGRESS_STEP {
                reported = partial.accepted();
                progress(report(reported));
            }
        }
        let at = partial.accepted();
        progress(report(at));
        if at < length {
            return Err(DownloadError::ShortBody {
                url: url.to_string(),
                offset: at,
                length,
            });
        }
        Ok(())
    }

    fn backoff(&self, attempt: u32) -> Duration {
        let random = self
            .jitter
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .next_u64();
        pace::backoff(
            attempt,
            self.config.backoff_base,
            self.config.backoff_max,
            random,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The engine spawns downloads on the runtime: the future must be `Send`.
    #[allow(dead_code)]
    fn fetch_future_is_send(d: &Downloader, t: &Target, p: &mut (dyn FnMut(Progress) + Send)) {
        fn is_send<T: Send>(_: T) {}
        is_send(d.fetch(t, p));
    }

    #[test]
    fn redirects_may_not_leave_https_nor_go_on_forever() {
        let u = |s: &str| Url::parse(s).unwrap();
        let (tls, plain) = (u("https://fleet.example/r"), u("http://fleet.example/r"));
        // Followed: http to either, https to https, within the limit.
        assert_eq!(refuse_redirect(std::slice::from_ref(&plain), &plain), None);
        assert_eq!(refuse_redirect(std::slice::from_ref(&plain), &tls), None);
        assert_eq!(refuse_redirect(std::slice::from_ref(&tls), &tls), None);
        // Refused: out of https, directly or after an https hop, and to other schemes.
        for (previous, next) in [
            (vec![tls.clone()], plain.clone()),
            (vec![plain.clone(), tls.clone()], plain.clone()),
            (vec![tls.clone()], u("ftp://fleet.example/r")),
        ] {
            let why = refuse_redirect(&previous, &next).expect("refused");
            assert!(why.contains("refusing to leave https"), "{why}");
        }
        let hops = vec![tls.clone(); MAX_REDIRECTS];
        assert_eq!(refuse_redirect(&hops, &tls), None);
        let hops = vec![tls.clone(); MAX_REDIRECTS + 1];
        assert_eq!(
            refuse_redirect(&hops, &tls).as_deref(),
            Some("more than 5 redirects")
        );
    }

    #[test]
    fn config_problems_are_reported_before_anything_is_created() {
        let dir = tempfile::tempdir().unwrap();
        let cache = dir.path().join("cache");
        type Spoil = fn(&mut DownloadConfig);
        let cases: [(&str, Spoil); 4] = [
            ("max_attempts", |c| c.max_attempts = 0),
            ("read_timeout", |c| c.read_timeout = Duration::ZERO),
            ("low_speed_window", |c| c.low_speed_window = Duration::ZERO),
            ("backoff_base", |c| {
                c.backoff_base = Duration::from_secs(600)
            }),
        ];
        for (field, spoil) in cases {
            let mut config = DownloadConfig::new(&cache);
            spoil(&mut config);
            let err = Downloader::new(config).unwrap_err();
            assert!(matches!(err, DownloadError::Config(_)), "{err}");
            assert!(err.to_string().contains(field), "{err}");
            assert!(!cache.exists());
        }
        Downloader::new(DownloadConfig::new(&cache)).unwrap();
        assert!(cache.is_dir());
    }

    #[test]
    fn a_ca_file_without_certificates_is_a_config_error() {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, "not a certificate\n").unwrap();
        let mut config = DownloadConfig::new(dir.path().join("cache"));
        config.extra_root_ca = Some(ca.clone());
        let err = Downloader::new(config.clone()).unwrap_err();
        assert!(matches!(err, DownloadError::Config(_)), "{err}");
        assert!(err.to_string().contains("ca.pem"), "{err}");

        config.extra_root_ca = Some(dir.path().join("missing.pem"));
        let err = Downloader::new(config).unwrap_err();
        assert!(matches!(err, DownloadError::Io { .. }), "{err}");
    }
}
