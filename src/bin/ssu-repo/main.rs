//! `ssu-repo`: create and publish the TUF repositories ssu-agent updates from
//! (see `docs/ssu-repo.md`; the work is done by `ssu_agent::repo`).

use std::num::NonZeroU64;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use jiff::Timestamp;
use jiff::civil::Date;
use ssu_agent::metadata::schema::{Cve, DeviceMeta, Kind, Replacement};
use ssu_agent::repo::{
    self, AddOptions, ApproveOptions, BundleFields, Expiries, Expiry, InitOptions, RefreshOptions,
    RepoError, RepoRole, RotateOptions, WarnWindows,
};
use tough::schema::RoleType;

mod reports;

/// Publish signed security updates (GSMA FS.25) as a static TUF repository.
#[derive(Parser)]
#[command(version, after_help = EXIT_CODES)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

const EXIT_CODES: &str = "Exit codes: 0 success; 1 refused or failed (the repository is \
unchanged when refused); 2 usage error; 3 (verify) verified, but some metadata expires within \
its warning window.";

/// `verify`'s exit code when the repository verifies but something expires soon.
const EXIT_EXPIRING: u8 = 3;

#[derive(Subcommand)]
enum Command {
    /// Create keys, root.json and an empty signed repository in a new directory.
    Init(InitArgs),
    /// Publish a RAUC bundle as bundles/<compatible>/<version>.raucb (manufacturer).
    Add(AddArgs),
    /// Publish a model's support period and rollout wave as devices/<hardware-id>.json.
    Device(DeviceArgs),
    /// List a manufacturer's target unchanged in this operator repository (approval).
    Approve(ApproveArgs),
    /// Sign a new snapshot and timestamp (run before the timestamp expires).
    Refresh(RefreshArgs),
    /// Load the public repository as a device would, check every target, and warn about
    /// metadata that expires soon (exit code 3).
    Verify {
        /// Repository directory (or a bare public directory).
        dir: PathBuf,
        /// Warn when a role expires within DURATION (all roles) or ROLE=DURATION (one role);
        /// repeatable. Defaults: root=90d, targets=30d, snapshot=7d, timestamp=1d.
        #[arg(long, value_name = "[ROLE=]DURATION")]
        warn_within: Vec<String>,
    },
    /// Create signing keys (FILE, 0600 PKCS#8) and their public keys (FILE.pub), e.g. for an
    /// offline root key or a second key of a role with threshold 2.
    Keygen {
        /// New files (never overwritten).
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Replace a role's keys: publishes the next root (signed by the old root keys and, for
    /// root, the new ones) and re-signs the role's metadata with the new keys.
    Rotate(RotateArgs),
    /// Publish the next root with the same keys and a fresh expiry (repo.toml's root expiry).
    RenewRoot(RenewRootArgs),
    /// Sign a prepared root with root keys (the offline machine; needs no repository).
    SignRoot(SignRootArgs),
    /// Publish a root signed elsewhere (after `rotate --prepare` / `renew-root --prepare` and
    /// `sign-root`), checked as devices will check it.
    ImportRoot(ImportRootArgs),
    /// Write a static HTML security bulletin (OUT_DIR/index.html) from the verified metadata.
    Bulletin(BulletinArgs),
    /// Check a device's signed patch-status report (`ssuctl report --json`): signature, nonce,
    /// counter — and say what that proves and what it cannot.
    VerifyReport(reports::VerifyReportArgs),
    /// Enrol a device's public key in a report store: its delivered reports are accepted.
    EnrollDevice(reports::EnrollDeviceArgs),
    /// Verify a delivered report against its enrolled device and store it in DIR.
    AcceptReport(reports::AcceptReportArgs),
    /// Receive reports the agents deliver (`[report] url`): an HTTP server that verifies
    /// each POSTed report and stores it in DIR. Plain HTTP: put TLS in front (docs/report.md).
    ServeReports(reports::ServeReportsArgs),
    /// Write a static HTML page (OUT_DIR/index.html) of each device's newest verified report.
    Fleet(reports::FleetArgs),
}

#[derive(Args)]
struct RotateArgs {
    /// The repository directory.
    dir: PathBuf,
    /// The role whose keys change.
    #[arg(value_parser = parse_tuf_role, value_name = "root|targets|snapshot|timestamp")]
    role: RoleType,
    /// A key of the role's new set (repeat for several): a private key (.pk8) or, with
    /// --prepare or for root, a public key (.pub). Keep a current key by naming its file.
    /// Default: one new key generated into DIR/keys/.
    #[arg(long = "key", value_name = "FILE")]
    keys: Vec<PathBuf>,
    /// Signatures needed from the new keys [default: the role's current threshold].
    #[arg(long, value_name = "N")]
    threshold: Option<NonZeroU64>,
    #[command(flatten)]
    root: RootArgs,
}

#[derive(Args)]
struct RenewRootArgs {
    /// The repository directory.
    dir: PathBuf,
    #[command(flatten)]
    root: RootArgs,
}

#[derive(Args)]
struct RootArgs {
    /// A root key kept outside DIR/keys/ (repeatable).
    #[arg(long = "root-key", value_name = "FILE")]
    root_keys: Vec<PathBuf>,
    /// Write the unsigned next root to OUT and change nothing (offline root key: sign OUT with
    /// sign-root, then import-root it).
    #[arg(long, value_name = "OUT")]
    prepare: Option<PathBuf>,
}

#[derive(Args)]
struct SignRootArgs {
    /// The prepared root (signed in place).
    file: PathBuf,
    /// A root key (.pk8) of this root or of the previous one (repeatable).
    #[arg(long = "key", value_name = "FILE", required = true)]
    keys: Vec<PathBuf>,
    /// The previous root (N.root.json from the repository): to sign with a root key the new
    /// root drops, and to report its signature count.
    #[arg(long, value_name = "ROOT")]
    previous: Option<PathBuf>,
}

#[derive(Args)]
struct ImportRootArgs {
    /// The repository directory.
    dir: PathBuf,
    /// The signed root.
    file: PathBuf,
    /// A private key of a role this root changes, stored into DIR/keys/ (repeatable).
    #[arg(long = "key", value_name = "FILE")]
    keys: Vec<PathBuf>,
}

#[derive(Args)]
struct BulletinArgs {
    /// Repository directory (or a bare public directory); it must pass verify.
    dir: PathBuf,
    /// Where index.html goes (created if missing).
    out_dir: PathBuf,
    /// RFC 3339 time shown on the page and used for "support ended" [default: now].
    #[arg(long)]
    generated_at: Option<Timestamp>,
}

#[derive(Args)]
struct InitArgs {
    /// A new or empty directory.
    dir: PathBuf,
    /// Whose update server this is.
    #[arg(long, value_parser = parse_role, value_name = "manufacturer|operator")]
    role: RepoRole,
    /// Shown by verify; defaults to the directory's name.
    #[arg(long)]
    name: Option<String>,
    /// Validity of root.json (y = 365 days, d, h, m, s); renew it with renew-root.
    #[arg(long, default_value = "1y")]
    root_expires: String,
    #[arg(long, default_value = "1y")]
    targets_expires: String,
    #[arg(long, default_value = "30d")]
    snapshot_expires: String,
    #[arg(long, default_value = "7d")]
    timestamp_expires: String,
}

#[derive(Args)]
struct AddArgs {
    /// The repository directory.
    dir: PathBuf,
    /// The RAUC bundle; its manifest gives compatible and version.
    bundle: PathBuf,
    /// TOML with BundleMeta's fields (minus version and compatible); flags override it.
    #[arg(long)]
    descriptor: Option<PathBuf>,
    #[arg(long, value_parser = parse_kind, value_name = "security|feature|maintenance")]
    kind: Option<Kind>,
    /// The feature release this bundle patches (defaults to the version for kind=feature).
    #[arg(long)]
    base_version: Option<String>,
    /// YYYY-MM-DD.
    #[arg(long, value_parser = parse_date)]
    security_patch_level: Option<Date>,
    /// ID:SEVERITY[:CVSS]:SUMMARY, repeatable (replaces the descriptor's list).
    #[arg(long = "cve", value_parser = repo::parse_cve_flag)]
    cves: Vec<Cve>,
    /// https:// release notes.
    #[arg(long)]
    notes_url: Option<String>,
    /// Whether installing needs a reboot [default: true].
    #[arg(long, value_name = "true|false")]
    reboot: Option<bool>,
    /// Expected downtime while applying, e.g. 90s or 5m.
    #[arg(long, value_parser = parse_downtime)]
    downtime: Option<u32>,
    /// RFC 3339 [default: now].
    #[arg(long)]
    released: Option<Timestamp>,
    /// Repeatable (replaces the descriptor's list); none means every device with compatible.
    #[arg(long = "hardware-id")]
    hardware_ids: Vec<String>,
    /// Allow different content or fields under an already published name.
    #[arg(long)]
    replace: bool,
    /// The rauc executable.
    #[arg(long, default_value = "rauc")]
    rauc: PathBuf,
}

#[derive(Args)]
struct DeviceArgs {
    /// The repository directory.
    dir: PathBuf,
    #[arg(long)]
    hardware_id: String,
    /// Model designation shown to users.
    #[arg(long)]
    model: String,
    /// YYYY-MM-DD.
    #[arg(long, value_parser = parse_date)]
    launch_date: Date,
    /// YYYY-MM-DD, at least launch + 36 months.
    #[arg(long, value_parser = parse_date)]
    support_end: Date,
    #[arg(long)]
    replacement_text: Option<String>,
    /// https:// (needs --replacement-text).
    #[arg(long, requires = "replacement_text")]
    replacement_url: Option<String>,
    /// RFC 3339: devices of this model download nothing before.
    #[arg(long)]
    wave_start: Option<Timestamp>,
}

#[derive(Args)]
struct ApproveArgs {
    /// The operator's repository directory.
    dir: PathBuf,
    /// The manufacturer's public directory.
    #[arg(long)]
    from: PathBuf,
    /// The manufacturer's root.json to trust [default: FROM/metadata/1.root.json].
    #[arg(long)]
    root: Option<PathBuf>,
    /// E.g. bundles/ssu-sandbox/1.0.1.raucb.
    target: String,
    /// Allow different content or fields under an already listed name.
    #[arg(long)]
    replace: bool,
}

#[derive(Args)]
struct RefreshArgs {
    /// The repository directory.
    dir: PathBuf,
    /// Overrides repo.toml's timestamp expiry this once.
    #[arg(long, allow_hyphen_values = true)]
    timestamp_expires: Option<String>,
    /// Overrides repo.toml's snapshot expiry this once.
    #[arg(long, allow_hyphen_values = true)]
    snapshot_expires: Option<String>,
    /// TEST FIXTURES ONLY: accept zero or negative expiries (publishes expired metadata).
    #[arg(long, hide = true)]
    allow_expired: bool,
    /// TEST FIXTURES ONLY: sign the timestamp with this version (a fast-forward).
    #[arg(long, hide = true)]
    timestamp_version: Option<NonZeroU64>,
}

fn main() -> ExitCode {
    if ssu_agent::manpage::requested() {
        return ssu_agent::manpage::print(
            <Cli as clap::CommandFactory>::command(),
            "ssu-repo",
            "1",
        );
    }
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build();
    let result = match runtime {
        Ok(rt) => rt.block_on(run(cli.command)),
        Err(e) => Err(format!("cannot start: {e}")),
    };
    match result {
        Ok(Exit::Ok) => ExitCode::SUCCESS,
        Ok(Exit::Expiring) => ExitCode::from(EXIT_EXPIRING),
        Err(message) => {
            eprintln!("ssu-repo: {message}");
            ExitCode::FAILURE
        }
    }
}

enum Exit {
    Ok,
    Expiring,
}

async fn run(command: Command) -> Result<Exit, String> {
    let now = Timestamp::now();
    let text = |e: RepoError| e.to_string();
    match command {
        Command::Init(a) => {
            let opts = InitOptions {
                role: a.role,
                name: a.name,
                expires: Expiries {
                    root: expiry("root", &a.root_expires, false)?,
                    targets: expiry("targets", &a.targets_expires, false)?,
                    snapshot: expiry("snapshot", &a.snapshot_expires, false)?,
                    timestamp: expiry("timestamp", &a.timestamp_expires, false)?,
                },
            };
            println!("{}", repo::init(&a.dir, &opts, now).await.map_err(text)?);
        }
        Command::Add(a) => {
            let dir = a.dir.clone();
            let opts = add_options(a);
            println!("{}", repo::add(&dir, &opts, now).await.map_err(text)?);
        }
        Command::Device(a) => {
            let meta = DeviceMeta {
                hardware_id: a.hardware_id,
                model: a.model,
                launch_date: a.launch_date,
                support_end: a.support_end,
                replacement: a.replacement_text.map(|text| Replacement {
                    text,
                    url: a.replacement_url,
                }),
                wave_start: a.wave_start,
            };
            println!("{}", repo::device(&a.dir, &meta, now).await.map_err(text)?);
        }
        Command::Approve(a) => {
            let opts = ApproveOptions {
                from: a.from,
                root: a.root,
                target: a.target,
                replace: a.replace,
            };
            println!("{}", repo::approve(&a.dir, &opts, now).await.map_err(text)?);
        }
        Command::Refresh(a) => {
            let opt = |role, v: &Option<String>| {
                v.as_deref()
                    .map(|s| expiry(role, s, a.allow_expired))
                    .transpose()
            };
            let opts = RefreshOptions {
                snapshot_expires: opt("snapshot", &a.snapshot_expires)?,
                timestamp_expires: opt("timestamp", &a.timestamp_expires)?,
                timestamp_version: a.timestamp_version,
            };
            println!("{}", repo::refresh(&a.dir, &opts, now).await.map_err(text)?);
        }
        Command::Verify { dir, warn_within } => {
            let mut windows = WarnWindows::default();
            for w in &warn_within {
                windows.set(w).map_err(text)?;
            }
            let report = repo::verify(&dir).await.map_err(text)?;
            println!("{report}");
            if !report.is_ok() {
                return Err(format!("{}: verification found problems", dir.display()));
            }
            let warnings = repo::expiry_warnings(&report.roles, &windows, now);
            for w in &warnings {
                println!("warning: {w}");
            }
            if !warnings.is_empty() {
                return Ok(Exit::Expiring);
            }
        }
        Command::Keygen { files } => println!("{}", repo::keygen(&files).map_err(text)?),
        Command::Rotate(a) => {
            let opts = RotateOptions {
                role: Some(a.role),
                keys: a.keys,
                threshold: a.threshold,
                root_keys: a.root.root_keys,
                prepare: a.root.prepare,
            };
            println!("{}", repo::rotate(&a.dir, &opts, now).await.map_err(text)?);
        }
        Command::RenewRoot(a) => {
            let opts = RotateOptions {
                role: None,
                keys: Vec::new(),
                threshold: None,
                root_keys: a.root.root_keys,
                prepare: a.root.prepare,
            };
            println!("{}", repo::rotate(&a.dir, &opts, now).await.map_err(text)?);
        }
        Command::SignRoot(a) => {
            let done = repo::sign_root(&a.file, &a.keys, a.previous.as_deref())
                .await
                .map_err(text)?;
            println!("{done}");
        }
        Command::ImportRoot(a) => {
            let done = repo::import_root(&a.dir, &a.file, &a.keys, now)
                .await
                .map_err(text)?;
            println!("{done}");
        }
        Command::VerifyReport(a) => reports::verify_report(a)?,
        Command::EnrollDevice(a) => reports::enroll_device(a)?,
        Command::ServeReports(a) => reports::serve_reports(a).await?,
        Command::Fleet(a) => reports::fleet_page(a, now)?,
        Command::AcceptReport(a) => reports::accept_report(a, now)?,
        Command::Bulletin(a) => {
            let at = a.generated_at.unwrap_or(now);
            let written = repo::bulletin(&a.dir, &a.out_dir, at)
                .await
                .map_err(|e| e.to_string())?;
            println!("{written}");
        }
    }
    Ok(Exit::Ok)
}

fn add_options(a: AddArgs) -> AddOptions {
    AddOptions {
        bundle: a.bundle,
        descriptor: a.descriptor,
        flags: BundleFields {
            kind: a.kind,
            base_version: a.base_version,
            security_patch_level: a.security_patch_level,
            hardware_ids: list(a.hardware_ids),
            released: a.released,
            cves: list(a.cves),
            notes_url: a.notes_url,
            requires_reboot: a.reboot,
            expected_downtime_s: a.downtime,
        },
        replace: a.replace,
        rauc: a.rauc,
    }
}

/// An empty repeatable flag means "not given" (the descriptor's list stands).
fn list<T>(v: Vec<T>) -> Option<Vec<T>> {
    if v.is_empty() { None } else { Some(v) }
}

fn expiry(role: &'static str, s: &str, allow_expired: bool) -> Result<Expiry, String> {
    Expiry::parse(role, s, allow_expired).map_err(|e| e.to_string())
}

fn parse_tuf_role(s: &str) -> Result<RoleType, String> {
    match s {
        "root" => Ok(RoleType::Root),
        "targets" => Ok(RoleType::Targets),
        "snapshot" => Ok(RoleType::Snapshot),
        "timestamp" => Ok(RoleType::Timestamp),
        _ => Err(format!(
            "{s:?}: expected root, targets, snapshot or timestamp"
        )),
    }
}

fn parse_role(s: &str) -> Result<RepoRole, String> {
    s.parse()
}

fn parse_kind(s: &str) -> Result<Kind, String> {
    serde_json::from_value(serde_json::Value::String(s.into()))
        .map_err(|_| format!("{s:?}: expected security, feature or maintenance"))
}

fn parse_date(s: &str) -> Result<Date, String> {
    ssu_agent::config::parse_date(s)
}

fn parse_downtime(s: &str) -> Result<u32, String> {
    let d = ssu_agent::config::parse_duration(s)?;
    u32::try_from(d.as_secs()).map_err(|_| format!("{s:?}: too long"))
}
