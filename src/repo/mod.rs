//! `ssu-repo`: the publisher for the manufacturer's and the operators' update servers.
//!
//! A repository is a directory (see [`layout`] for the files) holding signing keys, a
//! `repo.toml`, and `public/`: a TUF repository (consistent snapshots, Ed25519 keys, any
//! threshold) that any static web server can serve. Targets carry the FS.25 fields of
//! [`crate::metadata::schema`] under `custom.ssu`; every write goes through the same
//! validation the device applies, so the publisher cannot publish what devices refuse.
//!
//! The commands, each a function the `ssu-repo` binary and tests call:
//! - [`init`]: keys, root.json, an empty signed repository;
//! - [`add`]: a RAUC bundle as `bundles/<compatible>/<version>.raucb`;
//! - [`device`]: a per-model record as `devices/<hardware-id>.json`;
//! - [`approve`]: (operator) list a manufacturer's target with identical length and hashes;
//! - [`refresh`]: new snapshot and timestamp;
//! - [`keygen`], [`rotate`], [`sign_root`], [`import_root`]: the key lifecycle (rotations,
//!   thresholds, renewing root, the offline root key; see [`lifecycle`]);
//! - [`verify`]: load `public/` as a device would and check every target;
//! - [`bulletin`]: a static HTML security bulletin from the verified metadata.
//!
//! Every command checks everything before it writes anything: a refusal leaves the repository
//! as it was. Writes use tough's editor and signer; files are renamed into place with
//! `timestamp.json` last, under a lock on `repo.toml`.

pub mod bulletin;
mod bundle;
mod error;
mod expiry;
pub mod fleet;
mod keys;
pub mod layout;
mod lifecycle;
mod rotate;
mod settings;
mod tuf;
mod verify;

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

use jiff::Timestamp;
use tough::editor::signed::SignedRepository;
use tough::schema::{Hashes, Target};
use tough::{Repository, TargetName};

pub use bulletin::{Bulletin, BulletinError, bulletin};
pub use bundle::{BundleFields, BundleInfo, parse_cve_flag, rauc_info};
pub use error::RepoError;
pub use expiry::Expiry;
pub use keys::KEY_TYPE;
pub use layout::Layout;
pub use lifecycle::{Done, RotateOptions, import_root, keygen, rotate, sign_root};
pub use settings::{Expiries, RepoRole, Settings};
pub use tuf::Refreshed;
pub use verify::{
    Described, RoleStatus, TargetStatus, VerifyReport, WarnWindows, describe, expiry_warnings,
    verify,
};

use crate::metadata::schema::{BundleMeta, CUSTOM_KEY, DeviceMeta};
use layout::RepoLock;

// ---------------------------------------------------------------------------------------------
// init

/// `ssu-repo init`.
#[derive(Debug, Clone)]
pub struct InitOptions {
    pub role: RepoRole,
    /// Defaults to the directory's name.
    pub name: Option<String>,
    pub expires: Expiries,
}

/// What `init` created.
#[derive(Debug, Clone)]
pub struct Initialized {
    pub settings: Settings,
    pub layout: Layout,
}

impl fmt::Display for Initialized {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "initialized {} repository {:?} in {} ({KEY_TYPE} keys in {})\n\
             serve {}; devices ship {} as their trust root",
            self.settings.role,
            self.settings.name,
            self.layout.dir.display(),
            self.layout.keys.display(),
            self.layout.public.display(),
            self.layout.trusted_root().display(),
        )
    }
}

/// Creates keys, root.json and an empty signed repository in `dir`, which must be empty or
/// absent. On failure, whatever it created is removed again.
pub async fn init(
    dir: &Path,
    opts: &InitOptions,
    now: Timestamp,
) -> Result<Initialized, RepoError> {
    ensure_empty(dir)?;
    let layout = Layout::new(dir);
    let name = match &opts.name {
        Some(n) => n.clone(),
        None => dir_name(dir),
    };
    let settings = Settings {
        role: opts.role,
        name,
        expires: opts.expires.clone(),
    };
    let result = init_in(&layout, &settings, now).await;
    if result.is_err() {
        for p in [&layout.keys, &layout.public] {
            let _ = std::fs::remove_dir_all(p);
        }
        let _ = std::fs::remove_file(&layout.config);
    }
    result.map(|()| Initialized { settings, layout })
}

fn ensure_empty(dir: &Path) -> Result<(), RepoError> {
    match std::fs::read_dir(dir).map(|mut entries| entries.next().is_some()) {
        Ok(true) => Err(RepoError::NotEmpty {
            dir: dir.to_owned(),
        }),
        Ok(false) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(dir).map_err(RepoError::io(dir, "cannot create"))
        }
        Err(e) => Err(RepoError::io(dir, "cannot read")(e)),
    }
}

fn dir_name(dir: &Path) -> String {
    std::path::absolute(dir)
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "repository".into())
}

async fn init_in(layout: &Layout, settings: &Settings, now: Timestamp) -> Result<(), RepoError> {
    let public_keys = keys::generate(&layout.keys)?;
    for d in [&layout.metadata, &layout.targets] {
        std::fs::create_dir_all(d).map_err(RepoError::io(d, "cannot create"))?;
    }
    let root = tuf::sign_root(&public_keys, &layout.keys, settings.expires.root.from(now)?).await?;
    root.write(&layout.metadata, true)
        .await
        .map_err(RepoError::tuf("writing root.json"))?;
    let signed = tuf::sign_empty(layout, settings, now).await?;
    tuf::write(&signed, layout).await?;
    std::fs::write(&layout.config, settings.to_toml())
        .map_err(RepoError::io(&layout.config, "cannot write"))
}

// ---------------------------------------------------------------------------------------------
// publishing a target (add, device, approve)

/// What happened to a published target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A new target name.
    Added,
    /// Same bytes, new `custom` (e.g. a corrected CVE summary; `--replace`, or a device
    /// record).
    Updated,
    /// Different bytes under an existing name (`--replace`).
    Replaced,
    /// Exactly what was already published; nothing was signed.
    Unchanged,
}

impl Outcome {
    fn verb(self, approve: bool) -> &'static str {
        match (self, approve) {
            (Outcome::Unchanged, _) => "unchanged",
            (_, true) => "approved",
            (Outcome::Added, false) => "added",
            (Outcome::Updated, false) => "updated",
            (Outcome::Replaced, false) => "replaced",
        }
    }
}

/// What `add`, `device` or `approve` published.
#[derive(Debug, Clone)]
pub struct Published {
    pub target: String,
    pub outcome: Outcome,
    pub described: Described,
    pub length: u64,
    pub sha256: String,
    /// Set by `approve`: the manufacturer's public directory.
    pub approved_from: Option<PathBuf>,
}

impl fmt::Display for Published {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verb = self.outcome.verb(self.approved_from.is_some());
        write!(f, "{verb} {} ({})", self.target, self.described)?;
        if let Some(from) = &self.approved_from {
            write!(f, " from {}", from.display())?;
        }
        Ok(())
    }
}

/// The repository opened for a change: locked, settings read, current metadata loaded.
struct Open {
    layout: Layout,
    settings: Settings,
    repo: Repository,
    _lock: RepoLock,
}

async fn open(dir: &Path) -> Result<Open, RepoError> {
    let layout = Layout::new(dir);
    let lock = RepoLock::acquire(&layout.config)?;
    let settings = Settings::load(&layout.config)?;
    let repo = tuf::load_own(&layout).await?;
    Ok(Open {
        layout,
        settings,
        repo,
        _lock: lock,
    })
}

fn require_role(open: &Open, wanted: RepoRole, action: &'static str) -> Result<(), RepoError> {
    if open.settings.role == wanted {
        Ok(())
    } else {
        Err(RepoError::WrongRole {
            dir: open.layout.dir.clone(),
            action,
            wanted: wanted.as_str(),
            actual: open.settings.role.as_str(),
        })
    }
}

/// Compares with what is published under `name` (any difference needs `replace`) and, if
/// anything changes, signs the new metadata in memory.
async fn prepare(
    open: Open,
    name: &TargetName,
    target: &Target,
    replace: bool,
    now: Timestamp,
) -> Result<(Outcome, Option<(SignedRepository, Open)>), RepoError> {
    let outcome = match open.repo.targets().signed.targets.get(name) {
        None => Outcome::Added,
        Some(old) if old == target => return Ok((Outcome::Unchanged, None)),
        Some(old) => {
            let same_bytes =
                old.length == target.length && old.hashes.sha256 == target.hashes.sha256;
            if !replace {
                let difference = if same_bytes {
                    "the same content but different fields in custom.ssu".to_owned()
                } else {
                    format!(
                        "different content (length {}, sha256 {})",
                        old.length,
                        hex::encode(&old.hashes.sha256)
                    )
                };
                return Err(RepoError::TargetConflict {
                    target: name.raw().to_owned(),
                    difference,
                });
            }
            if same_bytes {
                Outcome::Updated
            } else {
                Outcome::Replaced
            }
        }
    };
    let signed = tuf::sign_with_targets(
        &open.layout,
        &open.settings,
        open.repo.clone(),
        vec![(name.clone(), target.clone())],
        now,
    )
    .await?;
    Ok((outcome, Some((signed, open))))
}

fn target_name(name: &str) -> Result<TargetName, RepoError> {
    let t = TargetName::new(name).map_err(|e| RepoError::bad_arg(name, e.to_string()))?;
    if t.resolved() != t.raw() {
        return Err(RepoError::bad_arg(name, "not a plain target name"));
    }
    Ok(t)
}

fn with_custom(mut target: Target, value: serde_json::Value) -> Target {
    target.custom = HashMap::from([(CUSTOM_KEY.to_owned(), value)]);
    target
}

fn published(
    name: &TargetName,
    target: &Target,
    outcome: Outcome,
    described: Described,
) -> Published {
    Published {
        target: name.raw().to_owned(),
        outcome,
        described,
        length: target.length,
        sha256: hex::encode(&target.hashes.sha256),
        approved_from: None,
    }
}

// ---------------------------------------------------------------------------------------------
// add

/// `ssu-repo add`.
#[derive(Debug, Clone)]
pub struct AddOptions {
    pub bundle: PathBuf,
    pub descriptor: Option<PathBuf>,
    /// Flags; each one set overrides the descriptor.
    pub flags: BundleFields,
    pub replace: bool,
    /// The `rauc` executable (`"rauc"` finds it on `PATH`).
    pub rauc: PathBuf,
}

/// Publishes a RAUC bundle (manufacturer repositories only; operators `approve`).
pub async fn add(dir: &Path, opts: &AddOptions, now: Timestamp) -> Result<Published, RepoError> {
    let open = open(dir).await?;
    require_role(&open, RepoRole::Manufacturer, "add")?;
    let meta = bundle_meta(opts, now).await?;
    let name = target_name(&meta.target_name())?;
    let target = Target::from_path(&opts.bundle)
        .await
        .map_err(RepoError::tuf(format!(
            "{}: reading",
            opts.bundle.display()
        )))?;
    let target = with_custom(target, to_json(&meta)?);
    let (outcome, signed) = prepare(open, &name, &target, opts.replace, now).await?;
    if let Some((signed, open)) = signed {
        layout::install_target_file(&opts.bundle, &open.layout.targets, name.raw(), &target)
            .await?;
        tuf::write(&signed, &open.layout).await?;
    }
    Ok(published(&name, &target, outcome, Described::Bundle(meta)))
}

async fn bundle_meta(opts: &AddOptions, now: Timestamp) -> Result<BundleMeta, RepoError> {
    let from_file = match &opts.descriptor {
        Some(path) => BundleFields::from_descriptor(path)?,
        None => BundleFields::default(),
    };
    let fields = from_file.overridden_by(opts.flags.clone());
    let info = rauc_info(&opts.rauc, &opts.bundle).await?;
    fields.into_meta(info, expiry::whole_seconds(now))
}

fn to_json<T: serde::Serialize>(value: &T) -> Result<serde_json::Value, RepoError> {
    serde_json::to_value(value).map_err(|e| RepoError::bad_arg("custom.ssu", e.to_string()))
}

// ---------------------------------------------------------------------------------------------
// device

/// Publishes a per-model record: the file is `meta`'s JSON, `custom.ssu` the same object.
pub async fn device(dir: &Path, meta: &DeviceMeta, now: Timestamp) -> Result<Published, RepoError> {
    meta.validate()
        .map_err(RepoError::invalid(meta.target_name()))?;
    let open = open(dir).await?;
    let name = target_name(&meta.target_name())?;
    let mut content = serde_json::to_vec_pretty(meta)
        .map_err(|e| RepoError::bad_arg(name.raw(), e.to_string()))?;
    content.push(b'\n');
    let target = with_custom(target_for_bytes(&content), to_json(meta)?);
    let (outcome, signed) = prepare(open, &name, &target, true, now).await?;
    if let Some((signed, open)) = signed {
        let stream = futures_util::stream::iter([Ok(tough::Bytes::from(content))]);
        layout::install_target_stream(stream, &open.layout.targets, name.raw(), &target).await?;
        tuf::write(&signed, &open.layout).await?;
    }
    Ok(published(
        &name,
        &target,
        outcome,
        Described::Device(meta.clone()),
    ))
}

fn target_for_bytes(bytes: &[u8]) -> Target {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes);
    Target {
        length: bytes.len() as u64,
        hashes: Hashes {
            sha256: digest.as_ref().to_vec().into(),
            _extra: HashMap::new(),
        },
        custom: HashMap::new(),
        _extra: HashMap::new(),
    }
}

// ---------------------------------------------------------------------------------------------
// approve

/// `ssu-repo approve`.
#[derive(Debug, Clone)]
pub struct ApproveOptions {
    /// The manufacturer's public directory (a copy of what its server serves).
    pub from: PathBuf,
    /// The manufacturer's root.json to trust; defaults to `FROM/metadata/1.root.json`. Pin it:
    /// the default trusts whatever that directory holds.
    pub root: Option<PathBuf>,
    pub target: String,
    pub replace: bool,
}

/// Lists a manufacturer's target in this operator repository with identical length, hashes and
/// custom (TAP 4 style: the device reads that as the operator's approval), copying the file.
pub async fn approve(
    dir: &Path,
    opts: &ApproveOptions,
    now: Timestamp,
) -> Result<Published, RepoError> {
    let open = open(dir).await?;
    require_role(&open, RepoRole::Operator, "approve")?;
    let name = target_name(&opts.target)?;
    let root = opts
        .root
        .clone()
        .unwrap_or_else(|| opts.from.join("metadata").join("1.root.json"));
    let upstream = tuf::load(&opts.from, &root, tough::ExpirationEnforcement::Safe).await?;
    let target = upstream
        .targets()
        .signed
        .targets
        .get(&name)
        .cloned()
        .ok_or_else(|| RepoError::NotListed {
            target: name.raw().to_owned(),
            repo: opts.from.clone(),
        })?;
    let described = describe(name.raw(), &target)?;
    let (outcome, signed) = prepare(open, &name, &target, opts.replace, now).await?;
    if let Some((signed, open)) = signed {
        let stream = upstream
            .read_target(&name)
            .await
            .map_err(RepoError::tuf(format!(
                "{}: fetching from {}",
                name.raw(),
                opts.from.display()
            )))?
            .ok_or_else(|| RepoError::NotListed {
                target: name.raw().to_owned(),
                repo: opts.from.clone(),
            })?;
        layout::install_target_stream(Box::pin(stream), &open.layout.targets, name.raw(), &target)
            .await?;
        tuf::write(&signed, &open.layout).await?;
    }
    Ok(Published {
        approved_from: Some(opts.from.clone()),
        ..published(&name, &target, outcome, described)
    })
}

// ---------------------------------------------------------------------------------------------
// refresh

/// `ssu-repo refresh`: one-off expiries override `repo.toml`'s.
#[derive(Debug, Clone, Default)]
pub struct RefreshOptions {
    pub snapshot_expires: Option<Expiry>,
    pub timestamp_expires: Option<Expiry>,
    /// Test fixtures only: the timestamp's version instead of the next one (e.g. 2^64−1, the
    /// fast-forward an attacker with the timestamp key can sign).
    pub timestamp_version: Option<std::num::NonZeroU64>,
}

impl fmt::Display for Refreshed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "refreshed snapshot v{} (expires {}), timestamp v{} (expires {})",
            self.snapshot_version,
            self.snapshot_expires,
            self.timestamp_version,
            self.timestamp_expires
        )
    }
}

/// Signs a new snapshot and timestamp (versions bumped); needs only those two keys.
pub async fn refresh(
    dir: &Path,
    opts: &RefreshOptions,
    now: Timestamp,
) -> Result<Refreshed, RepoError> {
    let open = open(dir).await?;
    let e = &open.settings.expires;
    let snapshot = opts
        .snapshot_expires
        .as_ref()
        .unwrap_or(&e.snapshot)
        .from(now)?;
    let timestamp = opts
        .timestamp_expires
        .as_ref()
        .unwrap_or(&e.timestamp)
        .from(now)?;
    tuf::refresh(
        &open.layout,
        &open.repo,
        (snapshot, timestamp),
        opts.timestamp_version,
    )
    .await
}
