//! Downloads one target with the agent's downloader and prints the throughput.
//!
//! ```text
//! cargo run --release --example fetch -- URL LENGTH SHA256 DIR [CA_PEM]
//! ```
//!
//! Prints `bytes=… seconds=… MB/s=…` (MB = 10^6 bytes) for the whole fetch: request,
//! streaming, hashing, writing, fsync and rename. The downloader's own log lines go to stderr
//! (`RUST_LOG`, default `info`). Used by `scripts/bench-download`.

use std::time::Instant;

use anyhow::{Context, bail};
use ssu_agent::download::{DownloadConfig, Downloader, Target};

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    if !(4..=5).contains(&args.len()) {
        bail!("usage: fetch URL LENGTH SHA256 DIR [CA_PEM]");
    }
    let url = args[0].parse().context("URL")?;
    let length = args[1].parse().context("LENGTH")?;
    let mut sha256 = [0u8; 32];
    hex::decode_to_slice(&args[2], &mut sha256).context("SHA256 (64 hex digits)")?;
    let mut config = DownloadConfig::new(&args[3]);
    config.extra_root_ca = args.get(4).map(Into::into);

    let target = Target {
        url,
        length,
        sha256,
    };
    let downloader = Downloader::new(config)?;
    if downloader.verified_path(&target.sha256).exists() {
        bail!("already downloaded: remove it from the cache directory to measure");
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let started = Instant::now();
    let path = runtime.block_on(downloader.fetch(&target, &mut |_| {}))?;
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "bytes={length} seconds={seconds:.3} MB/s={:.1} path={}",
        length as f64 / 1e6 / seconds,
        path.display()
    );
    Ok(())
}
