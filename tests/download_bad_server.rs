//! The download adapter against a real nginx (`scripts/sandbox http`) whose answers the
//! fault-injecting proxy of `tests/common/http.rs` spoils: a tampered body, endless data,
//! wrong lengths, error statuses, a server that ignores ranges.
//!
//! Bytes on the wire are counted at the proxy, i.e. at the server's side of the connection.

mod common;
mod download_fixture;

use std::fs;

use common::http::{Fault, GARBAGE_PIECE};
use download_fixture::{Fixture, HEAD, MIB, fetch, names};
use ssu_agent::download::{DownloadError, MAX_OVERREAD};

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
