//! The client-under-test of the TUF conformance suite (`../shared/third-party/tuf-conformance`,
//! its `CLIENT-CLI.md`), driving the agent's own metadata path: each `refresh` and `download`
//! is one check of the daemon ([`client::fetch`] / [`client::fetch_target`]: tough over the
//! agent's transport and byte bounds, the persisted trusted root, the spec-version check)
//! with the rollback floor read from and written to a real [`Store`] as the engine does it
//! (`metadata_floor`, copied to `floors.json`), and targets fetched by the agent's
//! [`Downloader`]. Not shipped; `tests/conformance.rs` builds and runs it.
//!
//! ```text
//! tuf-conformance-client --metadata-dir DIR init ROOT
//! tuf-conformance-client --metadata-dir DIR --metadata-url URL refresh
//! tuf-conformance-client --metadata-dir DIR --metadata-url URL --target-name NAME \
//!     --target-base-url URL --target-dir DIR download
//! ```
//!
//! The agent's state lives in `DIR/agent/` (the shipped root, tough's datastore `tuf/`, the
//! store, the download cache). The suite reads the trusted metadata from `DIR/<role>.json`, so
//! after every command those files are made to show what the agent trusts: `root.json` is the
//! root the next check starts from, the other roles are tough's trusted copies.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use ssu_agent::download::{DownloadConfig, DownloadError, Downloader, Target};
use ssu_agent::metadata::client::{self, DEFAULT_MAX_METADATA_BYTES, RoleVersions, Source};
use ssu_agent::metadata::trust;
use ssu_agent::store::Store;
use ssu_agent::store::floors::METADATA_FLOOR_KEY;
use url::Url;

#[derive(Parser)]
struct Cli {
    #[arg(long)]
    metadata_dir: PathBuf,
    #[arg(long)]
    metadata_url: Option<Url>,
    #[arg(long)]
    target_name: Option<String>,
    #[arg(long)]
    target_base_url: Option<Url>,
    #[arg(long)]
    target_dir: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    Init { trusted_root: PathBuf },
    Refresh,
    Download,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("tuf-conformance-client: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(&cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tuf-conformance-client: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The agent's files for one suite client, below the suite's metadata directory.
struct State {
    dir: PathBuf,
    agent: PathBuf,
}

impl State {
    fn new(dir: &Path) -> State {
        State {
            dir: dir.to_path_buf(),
            agent: dir.join("agent"),
        }
    }
    fn shipped_root(&self) -> PathBuf {
        self.agent.join("shipped-root.json")
    }
    fn datastore(&self) -> PathBuf {
        self.agent.join("tuf")
    }
}

async fn run(cli: &Cli) -> anyhow::Result<()> {
    let state = State::new(&cli.metadata_dir);
    if let Command::Init { trusted_root } = &cli.command {
        std::fs::create_dir_all(&state.agent)?;
        std::fs::copy(trusted_root, state.shipped_root())
            .with_context(|| format!("{}", trusted_root.display()))?;
        return export(&state);
    }
    let metadata_url = cli
        .metadata_url
        .clone()
        .context("--metadata-url is required")?;
    // The suite serves targets below their own base URL; for `refresh` any will do.
    let targets_url = cli
        .target_base_url
        .clone()
        .unwrap_or_else(|| metadata_url.clone());
    let source = Source {
        name: "manufacturer".into(),
        metadata_url: dir_url(metadata_url),
        targets_url: dir_url(targets_url),
        root: state.shipped_root(),
        max_metadata_bytes: DEFAULT_MAX_METADATA_BYTES,
    };
    let mut config = DownloadConfig::new(state.agent.join("downloads"));
    // One attempt: the suite's server answers at once or never.
    config.max_attempts = 1;
    let downloader = Downloader::new(config)?;
    let store = Store::open(&state.agent.join("agent.db"))?;
    let floor: RoleVersions = store
        .state(METADATA_FLOOR_KEY)?
        .map(|s| serde_json::from_str(&s))
        .transpose()
        .context("the stored floor")?
        .unwrap_or_default();

    let result = check(cli, &source, &downloader, &store, &state, &floor).await;
    // Whatever happened, show what is trusted now (a failed check may have advanced tough's
    // timestamp before a later step failed).
    export(&state)?;
    result
}

async fn check(
    cli: &Cli,
    source: &Source,
    downloader: &Downloader,
    store: &Store,
    state: &State,
    floor: &RoleVersions,
) -> anyhow::Result<()> {
    let datastore = state.datastore();
    let client = downloader.client();
    let (verified, target) = match cli.command {
        Command::Download => {
            let name = cli
                .target_name
                .as_deref()
                .context("--target-name is required")?;
            let (v, t) = client::fetch_target(source, client, &datastore, floor, name).await?;
            (
                v,
                Some(t.with_context(|| format!("{name}: no such target"))?),
            )
        }
        _ => (
            client::fetch(source, client, &datastore, floor).await?,
            None,
        ),
    };
    // As the engine does once a check verified: the new floor.
    store.set_state(
        METADATA_FLOOR_KEY,
        Some(&serde_json::to_string(&verified.versions)?),
    )?;
    let Some(t) = target else {
        return Ok(());
    };
    let target_dir = cli
        .target_dir
        .as_deref()
        .context("--target-dir is required")?;
    let mut file = Target {
        url: t.url.clone(),
        length: t.length,
        sha256: t.sha256,
    };
    let mut got = downloader.fetch(&file, &mut |_| {}).await;
    if let (Err(DownloadError::NotFound { .. }), Some(legacy)) = (&got, &t.legacy_url) {
        file.url = legacy.clone();
        got = downloader.fetch(&file, &mut |_| {}).await;
    }
    let path = got?;
    // The suite wants one file per target name; the cache is the agent's.
    let out = target_dir.join(encode(&t.name));
    // Written only when it changed: the suite orders the files by modification time.
    if std::fs::read(&out).ok() != Some(std::fs::read(&path)?) {
        std::fs::copy(&path, &out).with_context(|| format!("{}", out.display()))?;
    }
    Ok(())
}

/// A base URL as tough wants it (ending in `/`).
fn dir_url(url: Url) -> Url {
    if url.as_str().ends_with('/') {
        url
    } else {
        Url::parse(&format!("{url}/")).unwrap_or(url)
    }
}

/// A target or role name as one file name: everything but `[A-Za-z0-9_.-~]` percent-encoded
/// (Python's `urllib.parse.quote(name, "")`, as python-tuf and tough name their files).
fn encode(name: &str) -> String {
    let mut out = String::new();
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || b"_.-~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Writes `DIR/<role>.json` for every role the agent trusts, and removes those it no longer
/// does.
fn export(state: &State) -> anyhow::Result<()> {
    let shipped = std::fs::read(state.shipped_root())?;
    let datastore = state.datastore();
    let mut keep = vec![(
        "root.json".to_owned(),
        trust::start_root(&datastore, &shipped).bytes,
    )];
    if let Ok(entries) = std::fs::read_dir(&datastore) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let tough_internal = name == "root.json"
                || name == "latest_known_time.json"
                || name.starts_with("trusted-root.");
            if name.ends_with(".json") && !tough_internal && e.path().is_file() {
                keep.push((name, std::fs::read(e.path())?));
            }
        }
    }
    for e in std::fs::read_dir(&state.dir)?.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.ends_with(".json") && !keep.iter().any(|(k, _)| *k == name) {
            std::fs::remove_file(e.path())?;
        }
    }
    for (name, bytes) in keep {
        if name.contains('/') {
            bail!("{name}: not a file name");
        }
        std::fs::write(state.dir.join(name), bytes)?;
    }
    Ok(())
}
