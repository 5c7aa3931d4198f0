//! Shared by tests/download.rs and tests/download_bad_server.rs: a served bundle behind nginx
//! and the fault-injecting proxy of `tests/common/http.rs`, and helpers to fetch it.
#![allow(dead_code)]

use std::fs;
use std::path::Path;
use std::time::Duration;

use crate::common::http::{Exchange, Nginx, Proxy};
use aws_lc_rs::digest;
use ssu_agent::download::{DownloadConfig, DownloadError, Downloader, Progress, Target};
use url::Url;

pub const MIB: u64 = 1 << 20;
/// A few MiB and not a multiple of anything.
pub const LEN: u64 = 3 * MIB + 12_345;
/// Generous room for one response head (nginx sends ~250 bytes).
pub const HEAD: u64 = 1024;
pub const NAME: &str = "bundle.raucb";

/// Deterministic bytes (xorshift64).
pub fn bytes(len: u64, seed: u64) -> Vec<u8> {
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

pub fn sha256(data: &[u8]) -> [u8; 32] {
    digest::digest(&digest::SHA256, data)
        .as_ref()
        .try_into()
        .unwrap()
}

/// A served bundle, nginx, the proxy in front of it and an empty cache directory.
pub struct Fixture {
    pub data: Vec<u8>,
    pub cache: tempfile::TempDir,
    pub proxy: Proxy,
    pub nginx: Nginx,
    _root: tempfile::TempDir,
}

impl Fixture {
    pub fn new() -> Fixture {
        Fixture::with(LEN, false)
    }

    pub fn with(len: u64, tls: bool) -> Fixture {
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

    pub fn len(&self) -> u64 {
        self.data.len() as u64
    }

    /// The bundle, through the proxy.
    pub fn target(&self) -> Target {
        Target {
            url: Url::parse(&self.proxy.url()).unwrap().join(NAME).unwrap(),
            length: self.len(),
            sha256: sha256(&self.data),
        }
    }

    /// Fast timeouts and backoff, no free-space margin.
    pub fn config(&self) -> DownloadConfig {
        let mut c = DownloadConfig::new(self.cache.path());
        c.connect_timeout = Duration::from_secs(5);
        c.read_timeout = Duration::from_secs(10);
        c.backoff_base = Duration::from_millis(5);
        c.backoff_max = Duration::from_millis(20);
        c.max_attempts = 8;
        c.min_free_bytes_margin = 0;
        c
    }

    pub fn downloader(&self, config: DownloadConfig) -> Downloader {
        Downloader::new(config).unwrap().with_jitter_seed(1)
    }

    pub fn partial(&self) -> std::path::PathBuf {
        self.cache
            .path()
            .join(format!("{}.partial", hex::encode(sha256(&self.data))))
    }

    pub fn verified(&self) -> std::path::PathBuf {
        self.cache
            .path()
            .join(format!("{}.verified", hex::encode(sha256(&self.data))))
    }
}

pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Runs one fetch; returns its result and every progress report.
pub fn fetch(
    downloader: &Downloader,
    target: &Target,
) -> (Result<std::path::PathBuf, DownloadError>, Vec<Progress>) {
    let mut reports = Vec::new();
    let result = runtime().block_on(downloader.fetch(target, &mut |p| reports.push(p)));
    (result, reports)
}

/// The names in a directory, sorted.
pub fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// Waits (up to 10 s) until no download holds `path`'s lock: a cancelled fetch may leave its
/// last batch being written by a blocking job for a moment.
pub fn wait_unlocked(path: &Path) {
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

pub fn ranges(exchanges: &[Exchange]) -> Vec<Option<String>> {
    exchanges.iter().map(|e| e.range.clone()).collect()
}
