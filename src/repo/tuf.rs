//! The TUF side, all through tough: load a repository from disk, build and sign root, re-sign
//! targets/snapshot/timestamp after an edit, refresh snapshot and timestamp.

use std::collections::HashMap;
use std::num::NonZeroU64;
use std::path::Path;

use aws_lc_rs::rand::SystemRandom;
use jiff::Timestamp;
use tough::editor::RepositoryEditor;
use tough::editor::signed::{SignedRepository, SignedRole};
use tough::schema::key::Key;
use tough::schema::{
    Hashes, KeyHolder, Metafile, RoleKeys, RoleType, Root, Signed, Snapshot, Target,
    Timestamp as TufTimestamp,
};
use tough::{ExpirationEnforcement, FilesystemTransport, Repository, RepositoryLoader, TargetName};
use url::Url;

use super::layout::{Layout, Staging, publish_metadata};
use super::{RepoError, Settings, keys};

const SPEC_VERSION: &str = "1.0.0";

/// Loads and verifies the repository under `public` from `file://` URLs, trusting `root`.
pub async fn load(
    public: &Path,
    root: &Path,
    expiration: ExpirationEnforcement,
) -> Result<Repository, RepoError> {
    let root_bytes = tokio::fs::read(root)
        .await
        .map_err(RepoError::io(root, "cannot read the trusted root"))?;
    let metadata = dir_url(&public.join("metadata"))?;
    let targets = dir_url(&public.join("targets"))?;
    RepositoryLoader::new(&root_bytes, metadata, targets)
        .transport(FilesystemTransport)
        .expiration_enforcement(expiration)
        .load()
        .await
        .map_err(RepoError::tuf(format!("{}: loading", public.display())))
}

/// Our own repository, expiry not enforced: `refresh` exists to fix expired metadata, and a
/// publisher must be able to edit a repository whose timestamp ran out over a weekend.
pub async fn load_own(layout: &Layout) -> Result<Repository, RepoError> {
    load(
        &layout.public,
        &layout.trusted_root(),
        ExpirationEnforcement::Unsafe,
    )
    .await
}

fn dir_url(path: &Path) -> Result<Url, RepoError> {
    let abs = std::fs::canonicalize(path).map_err(RepoError::io(path, "cannot open"))?;
    Url::from_directory_path(&abs).map_err(|()| RepoError::Io {
        path: abs,
        action: "cannot make a file:// URL",
        source: std::io::ErrorKind::InvalidInput.into(),
    })
}

/// Builds version 1 of root.json (one key per role, threshold 1, consistent snapshots) and
/// signs it with the root key.
pub async fn sign_root(
    public_keys: &[(RoleType, Key)],
    keys_dir: &Path,
    expires: Timestamp,
) -> Result<SignedRole<Root>, RepoError> {
    let mut root = Root {
        spec_version: SPEC_VERSION.into(),
        consistent_snapshot: true,
        version: NonZeroU64::MIN,
        expires,
        keys: HashMap::new(),
        roles: HashMap::new(),
        _extra: HashMap::new(),
    };
    for (role, key) in public_keys {
        let id = key.key_id().map_err(|e| RepoError::Key {
            path: keys::key_path(keys_dir, *role),
            reason: format!("cannot compute the key id: {e}"),
        })?;
        root.keys.insert(id.clone(), key.clone());
        root.roles.insert(
            *role,
            RoleKeys {
                keyids: vec![id],
                threshold: NonZeroU64::MIN,
                _extra: HashMap::new(),
            },
        );
    }
    let ring = keys::ring(keys_dir)?;
    let signer = keys::signers(keys_dir, &ring, &root, RoleType::Root)?;
    let holder = KeyHolder::Root(root.clone());
    SignedRole::new(root, &holder, &signer, &SystemRandom::new())
        .await
        .map_err(RepoError::tuf("signing root.json"))
}

/// Signs the first targets, snapshot and timestamp (all version 1, no targets).
pub async fn sign_empty(
    layout: &Layout,
    settings: &Settings,
    now: Timestamp,
) -> Result<SignedRepository, RepoError> {
    let root = read_root(&layout.trusted_root())?;
    let mut editor = RepositoryEditor::new(layout.trusted_root())
        .await
        .map_err(RepoError::tuf("reading root.json"))?;
    set_versions(&mut editor, settings, Versions::first(), now)?;
    sign_editor(editor, layout, &root.signed).await
}

/// Reads and parses a root.json (no signature check; callers check what they rely on).
pub fn read_root(path: &Path) -> Result<Signed<Root>, RepoError> {
    let bytes = std::fs::read(path).map_err(RepoError::io(path, "cannot read"))?;
    serde_json::from_slice(&bytes).map_err(|e| RepoError::Tuf {
        context: format!("{}: not a root.json", path.display()),
        source: Box::new(e),
    })
}

/// The versions the next signing gets.
#[derive(Debug, Clone, Copy)]
struct Versions {
    targets: NonZeroU64,
    snapshot: NonZeroU64,
    timestamp: NonZeroU64,
}

impl Versions {
    fn first() -> Versions {
        Versions {
            targets: NonZeroU64::MIN,
            snapshot: NonZeroU64::MIN,
            timestamp: NonZeroU64::MIN,
        }
    }

    fn after(repo: &Repository) -> Result<Versions, RepoError> {
        Ok(Versions {
            targets: bump(repo.targets().signed.version, "targets")?,
            snapshot: bump(repo.snapshot().signed.version, "snapshot")?,
            timestamp: bump(repo.timestamp().signed.version, "timestamp")?,
        })
    }
}

fn bump(v: NonZeroU64, role: &'static str) -> Result<NonZeroU64, RepoError> {
    v.checked_add(1).ok_or(RepoError::Expiry {
        role,
        value: v.to_string(),
        reason: "version number exhausted".into(),
    })
}

fn set_versions(
    editor: &mut RepositoryEditor,
    settings: &Settings,
    v: Versions,
    now: Timestamp,
) -> Result<(), RepoError> {
    let e = &settings.expires;
    editor
        .targets_version(v.targets)
        .map_err(RepoError::tuf("setting the targets version"))?;
    editor
        .targets_expires(e.targets.from(now)?)
        .map_err(RepoError::tuf("setting the targets expiry"))?;
    editor
        .snapshot_version(v.snapshot)
        .snapshot_expires(e.snapshot.from(now)?)
        .timestamp_version(v.timestamp)
        .timestamp_expires(e.timestamp.from(now)?);
    Ok(())
}

/// `repo` with `targets` added (or replaced), re-signed with bumped versions and fresh
/// expiries. Nothing is written.
pub async fn sign_with_targets(
    layout: &Layout,
    settings: &Settings,
    repo: Repository,
    targets: Vec<(TargetName, Target)>,
    now: Timestamp,
) -> Result<SignedRepository, RepoError> {
    let root_path = layout
        .metadata
        .join(format!("{}.root.json", repo.root().signed.version));
    let root = repo.root().clone();
    sign_all(
        layout,
        settings,
        repo,
        &root_path,
        &root.signed,
        targets,
        now,
    )
    .await
}

/// Like [`sign_with_targets`], signed under the root at `root_path` (a newer root than the
/// repository's when keys rotate).
pub async fn sign_all(
    layout: &Layout,
    settings: &Settings,
    repo: Repository,
    root_path: &Path,
    root: &Root,
    targets: Vec<(TargetName, Target)>,
    now: Timestamp,
) -> Result<SignedRepository, RepoError> {
    let versions = Versions::after(&repo)?;
    let mut editor = RepositoryEditor::from_repo(root_path, repo)
        .await
        .map_err(RepoError::tuf("loading the repository for editing"))?;
    for (name, target) in targets {
        let raw = name.raw().to_owned();
        editor
            .add_target(name, target)
            .map_err(RepoError::tuf(format!("{raw}: adding")))?;
    }
    set_versions(&mut editor, settings, versions, now)?;
    sign_editor(editor, layout, root).await
}

async fn sign_editor(
    editor: RepositoryEditor,
    layout: &Layout,
    root: &Root,
) -> Result<SignedRepository, RepoError> {
    let ring = keys::ring(&layout.keys)?;
    let mut signers = Vec::new();
    for role in [RoleType::Targets, RoleType::Snapshot, RoleType::Timestamp] {
        signers.extend(keys::signers(&layout.keys, &ring, root, role)?);
    }
    editor
        .sign(&signers)
        .await
        .map_err(RepoError::tuf("signing targets, snapshot and timestamp"))
}

/// Writes signed metadata into the repository, timestamp last.
pub async fn write(signed: &SignedRepository, layout: &Layout) -> Result<(), RepoError> {
    let staging = Staging::new(&layout.metadata)?;
    signed
        .write(staging.path())
        .await
        .map_err(RepoError::tuf("writing metadata"))?;
    // Every target at the specification's layout before the metadata naming it appears.
    super::layout::link_spec_layout(&layout.targets)?;
    publish_metadata(&staging, &layout.metadata)?;
    Ok(())
}

/// What `refresh` signed.
#[derive(Debug, Clone)]
pub struct Refreshed {
    pub snapshot_version: u64,
    pub snapshot_expires: Timestamp,
    pub timestamp_version: u64,
    pub timestamp_expires: Timestamp,
}

/// New snapshot and timestamp (versions bumped, same targets), signed with only the snapshot
/// and timestamp keys, so those can stay online while root and targets keys are kept offline.
pub async fn refresh(
    layout: &Layout,
    repo: &Repository,
    expires: (Timestamp, Timestamp),
    timestamp_version: Option<NonZeroU64>,
) -> Result<Refreshed, RepoError> {
    let signed = sign_snapshot_timestamp(
        layout,
        repo,
        &repo.root().signed,
        expires,
        timestamp_version,
    )
    .await?;
    let staging = Staging::new(&layout.metadata)?;
    write_snapshot_timestamp(
        &signed,
        staging.path(),
        repo.root().signed.consistent_snapshot,
    )
    .await?;
    publish_metadata(&staging, &layout.metadata)?;
    Ok(Refreshed {
        snapshot_version: signed.0.signed().signed.version.get(),
        snapshot_expires: expires.0,
        timestamp_version: signed.1.signed().signed.version.get(),
        timestamp_expires: expires.1,
    })
}

/// A signed snapshot and the timestamp naming it.
pub type SnapshotTimestamp = (SignedRole<Snapshot>, SignedRole<TufTimestamp>);

/// `repo`'s snapshot and timestamp with versions bumped (or the timestamp's set to
/// `timestamp_version`, for test fixtures) and `expires` (snapshot, timestamp), signed with
/// the keys `root` lists for them.
pub async fn sign_snapshot_timestamp(
    layout: &Layout,
    repo: &Repository,
    root: &Root,
    expires: (Timestamp, Timestamp),
    timestamp_version: Option<NonZeroU64>,
) -> Result<SnapshotTimestamp, RepoError> {
    let ring = keys::ring(&layout.keys)?;
    let mut signers = keys::signers(&layout.keys, &ring, root, RoleType::Snapshot)?;
    signers.extend(keys::signers(
        &layout.keys,
        &ring,
        root,
        RoleType::Timestamp,
    )?);
    let holder = KeyHolder::Root(root.clone());
    let rng = SystemRandom::new();

    let mut snapshot = repo.snapshot().signed.clone();
    snapshot.version = bump(snapshot.version, "snapshot")?;
    snapshot.expires = expires.0;
    let snapshot = SignedRole::new(snapshot, &holder, &signers, &rng)
        .await
        .map_err(RepoError::tuf("signing snapshot.json"))?;

    let mut timestamp = repo.timestamp().signed.clone();
    timestamp.version = match timestamp_version {
        Some(v) => v,
        None => bump(timestamp.version, "timestamp")?,
    };
    timestamp.expires = expires.1;
    timestamp.meta = HashMap::from([(
        "snapshot.json".to_owned(),
        Metafile {
            length: Some(*snapshot.length()),
            hashes: Some(Hashes {
                sha256: snapshot.sha256().to_vec().into(),
                _extra: HashMap::new(),
            }),
            version: snapshot.signed().signed.version,
            _extra: HashMap::new(),
        },
    )]);
    let timestamp = SignedRole::new(timestamp, &holder, &signers, &rng)
        .await
        .map_err(RepoError::tuf("signing timestamp.json"))?;
    Ok((snapshot, timestamp))
}

/// Writes a signed snapshot and timestamp into `dir` (a staging directory).
pub async fn write_snapshot_timestamp(
    signed: &SnapshotTimestamp,
    dir: &Path,
    consistent: bool,
) -> Result<(), RepoError> {
    signed
        .0
        .write(dir, consistent)
        .await
        .map_err(RepoError::tuf("writing snapshot.json"))?;
    signed
        .1
        .write(dir, consistent)
        .await
        .map_err(RepoError::tuf("writing timestamp.json"))
}
