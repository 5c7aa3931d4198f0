//! The download adapter against a real nginx (`scripts/sandbox http`), through the
//! fault-injecting proxy of `tests/common/http.rs`: drops, stalls, restarts, HTTPS with a
//! private CA, a full disk, partials left behind. Servers that answer wrongly (tampering,
//! endless data, wrong lengths, error statuses, ignored ranges): tests/download_bad_server.rs.
//!
//! Bytes on the wire are counted at the proxy, i.e. at the server's side of the connection.

mod common;
mod download_fixture;

use std::fs;
use std::time::Duration;

use common::http::Fault;
use download_fixture::{
    Fixture, HEAD, LEN, MIB, NAME, bytes, fetch, names, ranges, runtime, sha256, wait_unlocked,
};
use ssu_agent::download::{DownloadConfig, DownloadError, Downloader, Progress};
use url::Url;

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
