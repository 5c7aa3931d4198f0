//! The download adapter against a real nginx (`scripts/sandbox http`), through the
//! fault-injecting proxy of `tests/common/http.rs`: drops, stalls, endless data, tampering,
//! servers that ignore ranges, restarts, HTTPS with a private CA, a full disk.
//!
//! Bytes on the wire are counted at the proxy, i.e. at the server's side of the connection.

mod common;

use std::fs;
use std::path::Path;
use std::time::Duration;

use aws_lc_rs::digest;
use common::http::{Exchange, Fault, GARBAGE_PIECE, Nginx, Proxy};
use ssu_agent::download::{
    DownloadConfig, DownloadError, Downloader, MAX_OVERREAD, Progress, Target,
};
use url::Url;

const MIB: u64 = 1 << 20;
/// A few MiB and not a multiple of anything.
const LEN: u64 = 3 * MIB + 12_345;
/// Generous room for one response head (nginx sends ~250 bytes).
const HEAD: u64 = 1024;
const NAME: &str = "bundle.raucb";

/// Deterministic bytes (xorshift64).
fn bytes(len: u64, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 32) as u8
        })
        .collect()
}

fn sha256(data: &[u8]) -> [u8; 32] {
    digest::digest(&digest::SHA256, data)
        .as_ref()
        .try_into()
        .unwrap()
}

/// A served bundle, nginx, the proxy in front of it and an empty cache directory.
struct Fixture {
    data: Vec<u8>,
    cache: tempfile::TempDir,
    proxy: Proxy,
    nginx: Nginx,
    _root: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Fixture {
        Fixture::with(LEN, false)
    }

    fn with(len: u64, tls: bool) -> Fixture {
        let root = tempfile::tempdir().unwrap();
        let data = bytes(len, 0x5eed);
        fs::write(root.path().join(NAME), &data).unwrap();
        let nginx = if tls {
            Nginx::start_tls(root.path())
        } else {
            Nginx::start(root.path())
        };
        let proxy = Proxy::start(nginx.addr());
        Fixture {
            data,
            cache: tempfile::tempdir().unwrap(),
            proxy,
            nginx,
            _root: root,
        }
    }

    fn len(&self) -> u64 {
        self.data.len() as u64
    }

    /// The bundle, through the proxy.
    fn target(&self) -> Target {
        Target {
            url: Url::parse(&self.proxy.url()).unwrap().join(NAME).unwrap(),
            length: self.len(),
            sha256: sha256(&self.data),
        }
    }

    /// Fast timeouts and backoff, no free-space margin.
    fn config(&self) -> DownloadConfig {
        let mut c = DownloadConfig::new(self.cache.path());
        c.connect_timeout = Duration::from_secs(5);
        c.read_timeout = Duration::from_secs(10);
        c.backoff_base = Duration::from_millis(5);
        c.backoff_max = Duration::from_millis(20);
        c.max_attempts = 8;
        c.min_free_bytes_margin = 0;
        c
    }

    fn downloader(&self, config: DownloadConfig) -> Downloader {
        Downloader::new(config).unwrap().with_jitter_seed(1)
    }

    fn partial(&self) -> std::path::PathBuf {
        self.cache
            .path()
            .join(format!("{}.partial", hex::encode(sha256(&self.data))))
    }

    fn verified(&self) -> std::path::PathBuf {
        self.cache
            .path()
            .join(format!("{}.verified", hex::encode(sha256(&self.data))))
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Runs one fetch; returns its result and every progress report.
fn fetch(
    downloader: &Downloader,
    target: &Target,
) -> (Result<std::path::PathBuf, DownloadError>, Vec<Progress>) {
    let mut reports = Vec::new();
    let result = runtime().block_on(downloader.fetch(target, &mut |p| reports.push(p)));
    (result, reports)
}

/// The names in a directory, sorted.
fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// Waits (up to 10 s) until no download holds `path`'s lock: a cancelled fetch may leave its
/// last batch being written by a blocking job for a moment.
fn wait_unlocked(path: &Path) {
    let file = fs::File::open(path).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while let Err(fs::TryLockError::WouldBlock) = file.try_lock() {
        assert!(
            std::time::Instant::now() < deadline,
            "{} still locked",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn ranges(exchanges: &[Exchange]) -> Vec<Option<String>> {
    exchanges.iter().map(|e| e.range.clone()).collect()
}

#[test]
fn a_download_is_verified_and_renamed() {
    let fx = Fixture::new();
    let d = fx.downloader(fx.config());
    let (result, reports) = fetch(&d, &fx.target());

    let path = result.unwrap();
    assert_eq!(path, fx.verified());
    assert_eq!(fs::read(&path).unwrap(), fx.data);
    assert_eq!(
        names(fx.cache.path()),
        [format!("{}.verified", hex::encode(sha256(&fx.data)))]
    );
    let exchanges = fx.proxy.exchanges();
    assert_eq!(exchanges.len(), 1, "{exchanges:?}");
    assert_eq!(exchanges[0].range, None);
    assert_eq!(exchanges[0].status, 200);
    assert!(fx.proxy.bytes_sent() <= fx.len() + HEAD);

    // Progress: from 0 to the length, never backwards, all in attempt 1.
    let first = reports.first().unwrap();
    let last = reports.last().unwrap();
    assert_eq!((first.done, first.total, first.attempt), (0, fx.len(), 1));
    assert_eq!(
        (last.done, last.total, last.attempt),
        (fx.len(), fx.len(), 1)
    );
    assert!(reports.windows(2).all(|w| w[0].done <= w[1].done));
    assert!(reports.len() >= 3, "{reports:?}");

    // The nginx access log agrees with the proxy about what went over the wire.
    let log = fx.nginx.access_log();
    assert!(
        log.contains(&format!("\"GET /{NAME} HTTP/1.1\" 200")),
        "{log}"
    );

    // A second fetch finds the verified file and asks nobody.
    let (again, reports) = fetch(&d, &fx.target());
    assert_eq!(again.unwrap(), fx.verified());
    assert_eq!(fx.proxy.exchanges().len(), 1);
    assert_eq!(
        reports,
        [Progress {
            done: fx.len(),
            total: fx.len(),
            attempt: 0
        }]
    );
}

/// The acceptance line: five link drops, the download completes, and no more than
/// 2 % extra goes over the wire.
#[test]
fn five_dropped_links_complete_within_two_percent_extra() {
    let fx = Fixture::new();
    let each = fx.len() / 6;
    fx.proxy
        .script(vec![Fault::DropAfter(each); 5], Fault::None);
    let d = fx.downloader(fx.config());
    let (result, reports) = fetch(&d, &fx.target());

    assert_eq!(fs::read(result.unwrap()).unwrap(), fx.data);
    let exchanges = fx.proxy.exchanges();
    assert_eq!(exchanges.len(), 6, "{exchanges:?}");
    assert_eq!(exchanges[0].range, None);
    let offsets: Vec<u64> = exchanges[1..]
        .iter()
        .map(|e| {
            let range = e.range.as_deref().expect("a resumed request has a Range");
            assert_eq!(e.status, 206, "{e:?}");
            range
                .strip_prefix("bytes=")
                .and_then(|r| r.strip_suffix('-'))
                .unwrap()
                .parse()
                .unwrap()
        })
        .collect();
    assert!(offsets.windows(2).all(|w| w[0] < w[1]), "{offsets:?}");
    assert!(offsets[0] > 0);

    let sent = fx.proxy.bytes_sent();
    assert!(
        sent as f64 <= 1.02 * fx.len() as f64,
        "{sent} bytes on the wire for a {} byte file",
        fx.len()
    );
    eprintln!(
        "5 drops: {sent} bytes on the wire for {} ({:.4}x)",
        fx.len(),
        sent as f64 / fx.len() as f64
    );
    assert_eq!(reports.last().unwrap().attempt, 6);
}

/// An agent restart: the first downloader gives up with a partial file, a new one resumes it
/// with a Range request and fetches only the rest.
#[test]
fn a_new_downloader_resumes_the_partial_of_an_earlier_run() {
    let fx = Fixture::new();
    let cut = fx.len() * 2 / 5;
    fx.proxy
        .script([Fault::DropAfter(cut), Fault::DropAfter(cut)], Fault::None);
    let mut config = fx.config();
    config.max_attempts = 2;
    let (result, _) = fetch(&fx.downloader(config), &fx.target());
    let err = result.unwrap_err();
    assert!(
        matches!(err, DownloadError::Exhausted { attempts: 2, .. }),
        "{err}"
    );
    assert!(err.is_retryable());
    assert!(!fx.verified().exists());
    let have = fs::metadata(fx.partial()).unwrap().len();
    assert!(have > cut && have < fx.len(), "partial of {have} bytes");
    assert_eq!(fs::read(fx.partial()).unwrap(), fx.data[..have as usize]);
    let sent_before = fx.proxy.bytes_sent();

    let (result, reports) = fetch(&fx.downloader(fx.config()), &fx.target());
    assert_eq!(fs::read(result.unwrap()).unwrap(), fx.data);
    assert!(!fx.partial().exists());
    let exchanges = fx.proxy.exchanges();
    assert_eq!(exchanges.len(), 3, "{exchanges:?}");
    assert_eq!(exchanges[2].range, Some(format!("bytes={have}-")));
    assert_eq!(exchanges[2].status, 206);
    let second_run = fx.proxy.bytes_sent() - sent_before;
    let rest = fx.len() - have;
    assert!(
        (rest..=rest + HEAD).contains(&second_run),
        "second run: {second_run} bytes for the remaining {rest}"
    );
    assert_eq!(reports[0].done, have, "resumed from the partial's length");
}

/// Dropping the fetch future (the engine cancelling, the agent stopping) leaves a partial
/// that the next fetch resumes.
#[test]
fn a_cancelled_fetch_leaves_a_resumable_partial() {
    let fx = Fixture::new();
    // The first connection stalls before the end, so the fetch cannot finish on its own.
    fx.proxy.script(
        [Fault::Stall {
            after: fx.len() - MIB / 2,
            pause: Duration::from_secs(5),
        }],
        Fault::None,
    );
    let d = fx.downloader(fx.config());
    let target = fx.target();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    runtime().block_on(async {
        let mut report = move |p: Progress| {
            let _ = tx.send(p.done);
        };
        let fetching = d.fetch(&target, &mut report);
        tokio::pin!(fetching);
        loop {
            tokio::select! {
                r = &mut fetching => panic!("fetch ended before it was cancelled: {r:?}"),
                Some(done) = rx.recv() => if done >= 2 * MIB { break },
            }
        }
        // Leaving the block drops the fetch.
    });
    wait_unlocked(&fx.partial());
    let have = fs::metadata(fx.partial()).unwrap().len();
    assert!(
        have >= MIB && have < fx.len() - MIB / 2,
        "partial of {have}"
    );
    assert_eq!(fs::read(fx.partial()).unwrap(), fx.data[..have as usize]);

    let (result, _) = fetch(&fx.downloader(fx.config()), &fx.target());
    assert_eq!(fs::read(result.unwrap()).unwrap(), fx.data);
    let exchanges = fx.proxy.exchanges_now();
    assert_eq!(exchanges.len(), 2, "{exchanges:?}");
    assert_eq!(exchanges[1].range, Some(format!("bytes={have}-")));
}

#[test]
fn a_tampered_body_is_a_hash_mismatch_and_nothing_is_kept() {
    let fx = Fixture::new();
    fx.proxy.always(Fault::CorruptAt(fx.len() / 2));
    let (result, _) = fetch(&fx.downloader(fx.config()), &fx.target());
    let err = result.unwrap_err();
    assert!(matches!(err, DownloadError::HashMismatch { .. }), "{err}");
    assert!(!err.is_retryable());
    assert!(
        names(fx.cache.path()).is_empty(),
        "{:?}",
        names(fx.cache.path())
    );
    assert_eq!(fx.proxy.exchanges().len(), 1, "not retried");
}

/// "Endless data": a body without Content-Length that goes on past the file.
///
/// The agent's side of the bound: the error says where it stopped reading the body, at most
/// one chunk (≤ MAX_OVERREAD) past the length. The server's side, counted at the proxy: the
/// agent hung up long before the endless stream's 64 MiB; what was sent beyond the file is the
/// agent's over-read plus what the kernel's socket buffers took in the meantime (the garbage
/// is paced, so that is usually little, but a loaded machine may let it grow — hence the
/// SOCKET_SLACK on top of MAX_OVERREAD).
#[test]
fn endless_data_is_too_long_and_bounded() {
    const SOCKET_SLACK: u64 = 4 * MIB;
    let fx = Fixture::new();
    fx.proxy.always(Fault::Endless);
    let (result, _) = fetch(&fx.downloader(fx.config()), &fx.target());
    let err = result.unwrap_err();
    let DownloadError::TooLong { offset, length, .. } = err else {
        panic!("expected TooLong, got {err}");
    };
    assert_eq!(length, fx.len());
    assert!(
        offset > fx.len() && offset - fx.len() <= MAX_OVERREAD,
        "stopped reading at {offset}"
    );
    assert!(names(fx.cache.path()).is_empty());
    let exchanges = fx.proxy.exchanges();
    assert_eq!(exchanges.len(), 1, "not retried: {exchanges:?}");
    let beyond = exchanges[0].sent.saturating_sub(fx.len());
    eprintln!(
        "endless data: the agent read {} bytes past the file; the proxy sent {beyond} \
         (head included, garbage in {GARBAGE_PIECE} B pieces)",
        offset - fx.len()
    );
    assert!(
        beyond <= HEAD + MAX_OVERREAD + SOCKET_SLACK,
        "{beyond} bytes sent beyond the file's {}",
        fx.len()
    );
}

#[test]
fn a_content_length_beyond_the_target_is_refused_before_the_body() {
    let fx = Fixture::new();
    fx.proxy.always(Fault::ContentLength(fx.len() + 1));
    let (result, _) = fetch(&fx.downloader(fx.config()), &fx.target());
    let err = result.unwrap_err();
    assert!(matches!(err, DownloadError::TooLong { .. }), "{err}");
    assert!(names(fx.cache.path()).is_empty());
    assert_eq!(fx.proxy.exchanges().len(), 1);
}

#[test]
fn a_file_of_another_length_is_a_length_mismatch() {
    let fx = Fixture::new();
    let mut target = fx.target();
    target.length += 1;
    let (result, _) = fetch(&fx.downloader(fx.config()), &target);
    let err = result.unwrap_err();
    assert!(
        matches!(err, DownloadError::LengthMismatch { actual, .. } if actual == fx.len()),
        "{err}"
    );
    assert!(!err.is_retryable());
    assert!(names(fx.cache.path()).is_empty());
    assert_eq!(fx.proxy.exchanges().len(), 1);
}

#[test]
fn not_found_is_not_retried() {
    let fx = Fixture::new();
    let mut target = fx.target();
    target.url = target.url.join("missing.raucb").unwrap();
    let (result, _) = fetch(&fx.downloader(fx.config()), &target);
    let err = result.unwrap_err();
    assert!(
        matches!(err, DownloadError::NotFound { status: 404, .. }),
        "{err}"
    );
    assert!(!err.is_retryable());
    assert!(err.to_string().contains("missing.raucb"), "{err}");
    assert_eq!(fx.proxy.exchanges().len(), 1);
    assert!(names(fx.cache.path()).is_empty());
}

#[test]
fn server_errors_are_retried_and_client_errors_are_not() {
    let fx = Fixture::new();
    fx.proxy
        .script([Fault::Status(503), Fault::Status(500)], Fault::None);
    let d = fx.downloader(fx.config());
    let (result, _) = fetch(&d, &fx.target());
    assert_eq!(fs::read(result.unwrap()).unwrap(), fx.data);
    let statuses: Vec<u16> = fx.proxy.exchanges().iter().map(|e| e.status).collect();
    assert_eq!(statuses, [503, 500, 200]);

    let other = Fixture::new();
    other.proxy.always(Fault::Status(403));
    let (result, _) = fetch(&other.downloader(other.config()), &other.target());
    let err = result.unwrap_err();
    assert!(
        matches!(err, DownloadError::HttpStatus { status: 403, .. }),
        "{err}"
    );
    assert_eq!(other.proxy.exchanges().len(), 1);
}

/// A server that ignores Range answers 200 with the whole file: start over from 0.
#[test]
fn a_server_ignoring_range_is_restarted_from_zero() {
    let fx = Fixture::new();
    fx.proxy
        .script([Fault::DropAfter(fx.len() / 2)], Fault::IgnoreRange);
    let (result, reports) = fetch(&fx.downloader(fx.config()), &fx.target());
    assert_eq!(fs::read(result.unwrap()).unwrap(), fx.data);
    let exchanges = fx.proxy.exchanges();
    assert_eq!(exchanges.len(), 2, "{exchanges:?}");
    assert!(exchanges[1].range.is_some(), "the agent asked for a range");
    assert_eq!(exchanges[1].status, 200, "and got the whole file");
    // Progress went back to 0 within attempt 2.
    assert!(
        reports
            .iter()
            .any(|p| p.attempt == 2 && p.done < fx.len() / 2),
        "{reports:?}"
    );
}

#[test]
fn a_stalled_transfer_times_out_and_resumes() {
    let fx = Fixture::new();
    fx.proxy.script(
        [Fault::Stall {
            after: fx.len() / 2,
            pause: Duration::from_secs(3),
        }],
        Fault::None,
    );
    let mut config = fx.config();
    config.read_timeout = Duration::from_millis(300);
    let (result, _) = fetch(&fx.downloader(config.clone()), &fx.target());
    assert_eq!(fs::read(result.unwrap()).unwrap(), fx.data);
    let exchanges = fx.proxy.exchanges_now();
    assert_eq!(ranges(&exchanges).len(), 2, "{exchanges:?}");
    assert!(exchanges[1].range.is_some());

    // With a single attempt the read timeout is what is reported.
    let other = Fixture::new();
    other.proxy.always(Fault::Stall {
        after: other.len() / 2,
        pause: Duration::from_secs(3),
    });
    let mut config = other.config();
    config.read_timeout = Duration::from_millis(300);
    config.max_attempts = 1;
    let (result, _) = fetch(&other.downloader(config), &other.target());
    match result.unwrap_err() {
        DownloadError::Exhausted { last, .. } => {
            assert!(
                matches!(*last, DownloadError::ReadTimeout { offset, .. } if offset > 0),
                "{last}"
            )
        }
        e => panic!("expected Exhausted(ReadTimeout), got {e}"),
    }
}

#[test]
fn too_little_space_is_refused_before_anything_is_written() {
    let fx = Fixture::new();
    // A partial from an earlier run stays as it is.
    fs::write(fx.partial(), &fx.data[..1000]).unwrap();
    let mut config = fx.config();
    config.min_free_bytes_margin = 1 << 62;
    let (result, _) = fetch(&fx.downloader(config), &fx.target());
    match result.unwrap_err() {
        DownloadError::NoSpace {
            needed, available, ..
        } => {
            assert_eq!(needed, (1 << 62) + fx.len() - 1000);
            assert!(available < needed);
        }
        e => panic!("expected NoSpace, got {e}"),
    }
    assert!(fx.proxy.exchanges().is_empty(), "no request made");
    assert_eq!(fs::read(fx.partial()).unwrap(), &fx.data[..1000]);
    assert_eq!(names(fx.cache.path()).len(), 1);
}

#[test]
fn https_with_the_private_ca_works() {
    let fx = Fixture::with(LEN, true);
    let mut target = fx.target();
    target.url = Url::parse(fx.nginx.url()).unwrap().join(NAME).unwrap();
    assert_eq!(target.url.scheme(), "https");
    let mut config = fx.config();
    config.extra_root_ca = Some(fx.nginx.ca_pem());
    let (result, _) = fetch(&fx.downloader(config), &target);
    assert_eq!(fs::read(result.unwrap()).unwrap(), fx.data);
}

#[test]
fn https_without_the_ca_is_a_tls_error() {
    let fx = Fixture::with(LEN, true);
    let mut target = fx.target();
    target.url = Url::parse(fx.nginx.url()).unwrap().join(NAME).unwrap();
    let (result, _) = fetch(&fx.downloader(fx.config()), &target);
    let err = result.unwrap_err();
    assert!(matches!(err, DownloadError::Tls { .. }), "{err:?}");
    assert!(!err.is_retryable());
    assert!(names(fx.cache.path()).is_empty(), "no empty partial left");
}

#[test]
fn a_complete_partial_is_verified_without_a_request() {
    let fx = Fixture::new();
    fs::write(fx.partial(), &fx.data).unwrap();
    let (result, _) = fetch(&fx.downloader(fx.config()), &fx.target());
    assert_eq!(fs::read(result.unwrap()).unwrap(), fx.data);
    assert!(fx.proxy.exchanges().is_empty());

    // The same length with other bytes: a mismatch, and the partial is gone.
    let other = Fixture::new();
    let mut wrong = other.data.clone();
    wrong[7] ^= 1;
    fs::write(other.partial(), &wrong).unwrap();
    let (result, _) = fetch(&other.downloader(other.config()), &other.target());
    let err = result.unwrap_err();
    assert!(matches!(err, DownloadError::HashMismatch { .. }), "{err}");
    assert!(names(other.cache.path()).is_empty());
    assert!(other.proxy.exchanges().is_empty());
}

#[test]
fn a_partial_longer_than_the_target_is_replaced() {
    let fx = Fixture::new();
    fs::write(fx.partial(), bytes(fx.len() + 10, 99)).unwrap();
    let (result, _) = fetch(&fx.downloader(fx.config()), &fx.target());
    assert_eq!(fs::read(result.unwrap()).unwrap(), fx.data);
    let exchanges = fx.proxy.exchanges();
    assert_eq!(ranges(&exchanges), [None]);
}

#[test]
fn cleanup_removes_stale_downloads_only() {
    let cache = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    let d = Downloader::new(DownloadConfig::new(cache.path())).unwrap();
    let dir = cache.path();
    let keep = [0x11u8; 32];
    let stale = [0x22u8; 32];
    let linked = [0x33u8; 32];
    let name = |sha: &[u8; 32], ext: &str| format!("{}.{ext}", hex::encode(sha));
    for file in [
        name(&keep, "verified"),
        name(&keep, "partial"),
        name(&stale, "verified"),
        name(&stale, "partial"),
        "notes.txt".to_string(),
        format!("{}.partial", hex::encode_upper([0xabu8; 32])),
    ] {
        fs::write(dir.join(file), b"x").unwrap();
    }
    // A symlink under one of our names pointing out of the directory: the link goes, its
    // target stays. A directory under one of our names is foreign.
    let precious = outside.path().join("precious");
    fs::write(&precious, b"keep me").unwrap();
    std::os::unix::fs::symlink(&precious, dir.join(name(&linked, "verified"))).unwrap();
    fs::create_dir(dir.join(name(&linked, "partial"))).unwrap();
    fs::write(dir.join(name(&linked, "partial")).join("inner"), b"x").unwrap();

    let mut removed: Vec<String> = d
        .cleanup(&[keep])
        .unwrap()
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    removed.sort();
    let mut expected = vec![
        name(&stale, "partial"),
        name(&stale, "verified"),
        name(&linked, "verified"),
    ];
    expected.sort();
    assert_eq!(removed, expected);

    let mut left = vec![
        name(&keep, "partial"),
        name(&keep, "verified"),
        name(&linked, "partial"),
        "notes.txt".to_string(),
        format!("{}.partial", hex::encode_upper([0xabu8; 32])),
    ];
    left.sort();
    assert_eq!(names(dir), left);
    assert_eq!(fs::read(&precious).unwrap(), b"keep me");
    assert!(dir.join(name(&linked, "partial")).join("inner").exists());
}
