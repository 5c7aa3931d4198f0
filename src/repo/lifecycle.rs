//! Key lifecycle: `keygen`, `rotate`, `renew-root`, and the offline-root flow (`rotate
//! --prepare` / `renew-root --prepare` on the online machine, `sign-root` where the root key
//! lives, `import-root` back online).
//!
//! Every root change goes through [`commit`]: the new root is checked as a device will check
//! it ([`rotate::check_next`]), the metadata of every role whose keys changed is signed again
//! under it, and all of it is published together, `timestamp.json` last. Refusals come
//! before anything is written.

use std::fmt;
use std::num::NonZeroU64;
use std::path::{Path, PathBuf};

use jiff::Timestamp;
use tough::key_source::{KeySource, LocalKeySource};
use tough::schema::{RoleType, Root, Signed};

use super::keys::{self, KeyFile, PrivateKey, short_id};
use super::layout::{Staging, publish_metadata};
use super::rotate::{self, Change, ids_text};
use super::{RepoError, open, tuf};

/// `ssu-repo rotate` / `renew-root`.
#[derive(Debug, Clone)]
pub struct RotateOptions {
    /// `None`: renew the root (same keys, new version and expiry).
    pub role: Option<RoleType>,
    /// The role's new keys: private (`.pk8`) or public (`.pub`) files. None: one new key is
    /// generated into `keys/` (not with `prepare`).
    pub keys: Vec<PathBuf>,
    /// Default: the role's current threshold.
    pub threshold: Option<NonZeroU64>,
    /// Root keys kept outside `keys/` (e.g. on a mounted token).
    pub root_keys: Vec<PathBuf>,
    /// Write the unsigned next root here instead (offline root key).
    pub prepare: Option<PathBuf>,
}

/// What a lifecycle command did, for the user.
#[derive(Debug, Clone)]
pub struct Done(pub Vec<String>);

impl fmt::Display for Done {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.join("\n"))
    }
}

/// `keygen FILE...`: a new Ed25519 key per file (and `FILE.pub`).
pub fn keygen(paths: &[PathBuf]) -> Result<Done, RepoError> {
    let mut lines = Vec::new();
    for path in paths {
        let k = keys::keygen(path)?;
        lines.push(format!(
            "{}: new ed25519 key {} (public key in {})",
            path.display(),
            hex::encode(&k.id),
            keys::public_path(path).display()
        ));
    }
    Ok(Done(lines))
}

/// A key for the role being rotated: read from a file, or generated and not yet stored.
struct NewKey {
    file: Option<KeyFile>,
    generated: Option<Vec<u8>>,
    key: tough::schema::key::Key,
}

/// `rotate DIR ROLE` and `renew-root DIR`.
pub async fn rotate(dir: &Path, opts: &RotateOptions, now: Timestamp) -> Result<Done, RepoError> {
    let open = open(dir).await?;
    let current = open.repo.root().clone();
    let expires = open.settings.expires.root.from(now)?;
    let mut new_keys = Vec::new();
    let change = match opts.role {
        None => Change::Renew,
        Some(role) => {
            for path in &opts.keys {
                let file = keys::read_key_file(path)?;
                new_keys.push(NewKey {
                    key: file.key().clone(),
                    file: Some(file),
                    generated: None,
                });
            }
            if new_keys.is_empty() {
                if opts.prepare.is_some() {
                    return Err(RepoError::bad_arg(
                        "--prepare",
                        "name the new keys with --key (make them with `ssu-repo keygen`)",
                    ));
                }
                let (pkcs8, key) = keys::new_key()?;
                new_keys.push(NewKey {
                    file: None,
                    generated: Some(pkcs8),
                    key,
                });
            }
            let threshold = match opts.threshold {
                Some(t) => t,
                None => current
                    .signed
                    .roles
                    .get(&role)
                    .map_or(NonZeroU64::MIN, |r| r.threshold),
            };
            Change::Keys {
                role,
                keys: new_keys.iter().map(|k| k.key.clone()).collect(),
                threshold,
            }
        }
    };
    let next = rotate::next_root(&current.signed, &change, expires)?;
    let version = next.version;

    if let Some(out) = &opts.prepare {
        return prepare(out, next, &current.signed, &open.layout.metadata);
    }

    // Signed by root keys of the current and of the next root: from keys/, --root-key, and
    // (rotating root) the new keys themselves.
    let ring = keys::ring(&open.layout.keys)?;
    let mut extra = Vec::new();
    for path in &opts.root_keys {
        extra.push(root_key(path, &current.signed, &next)?);
    }
    let mut signing: Vec<PrivateKey> = ring.clone();
    signing.extend(extra);
    for k in &new_keys {
        if let Some(KeyFile::Private(p)) = &k.file {
            signing.push(p.clone());
        }
    }
    let staged_generated = stage_generated(&open.layout.keys, opts.role, &new_keys)?;
    let result = async {
        let mut signing = signing;
        signing.extend(staged_generated.iter().cloned());
        let mut signed = Signed {
            signed: next,
            signatures: Vec::new(),
        };
        let sources = root_sources(&signing, &current.signed, &signed.signed);
        rotate::add_signatures(&mut signed, &sources).await?;
        let (have_old, need_old) = rotate::root_signatures(&current.signed, &signed);
        if have_old < need_old {
            return Err(RepoError::Key {
                path: open.layout.keys.clone(),
                reason: format!(
                    "root v{version} must be signed by {need_old} of root v{}'s root keys; \
                     found {have_old} (give --root-key FILE, or --prepare and sign it where \
                     the root key is kept)",
                    current.signed.version
                ),
            });
        }
        let (have_new, need_new) = rotate::root_signatures(&signed.signed, &signed);
        if have_new < need_new {
            return Err(RepoError::Key {
                path: open.layout.keys.clone(),
                reason: format!(
                    "root v{version} must be signed by {need_new} of its own root keys; found \
                     {have_new} private keys of them (the new root keys' .pk8 files are needed, \
                     or use --prepare and sign-root)"
                ),
            });
        }
        // Non-root private keys named outside keys/ are stored there: later commands need
        // them. Root keys stay where they are.
        let adopt: Vec<&PrivateKey> = match opts.role {
            Some(role) if role != RoleType::Root => new_keys
                .iter()
                .filter_map(|k| match &k.file {
                    Some(KeyFile::Private(p)) => Some(p),
                    _ => None,
                })
                .collect(),
            _ => Vec::new(),
        };
        commit(&open, signed, &adopt, now).await
    }
    .await;
    if result.is_err() {
        for k in &staged_generated {
            let _ = std::fs::remove_file(&k.path);
        }
    }
    result
}

/// Writes generated keys into `keys/` (needed as files to sign with); removed again if the
/// rotation fails.
fn stage_generated(
    keys_dir: &Path,
    role: Option<RoleType>,
    new_keys: &[NewKey],
) -> Result<Vec<PrivateKey>, RepoError> {
    let mut out = Vec::new();
    for k in new_keys {
        if let (Some(pkcs8), Some(role)) = (&k.generated, role) {
            let path = keys::store(keys_dir, role, pkcs8)?;
            match keys::read_key_file(&path)? {
                KeyFile::Private(p) => out.push(p),
                KeyFile::Public { .. } => {}
            }
        }
    }
    Ok(out)
}

/// A `--root-key` file: a private key that the current or the next root lists for root.
fn root_key(path: &Path, current: &Root, next: &Root) -> Result<PrivateKey, RepoError> {
    let fail = |reason: String| RepoError::Key {
        path: path.to_owned(),
        reason,
    };
    match keys::read_key_file(path)? {
        KeyFile::Private(k) => {
            if is_root_key(current, &k) || is_root_key(next, &k) {
                Ok(k)
            } else {
                Err(fail(format!(
                    "key {} is not a root key of root v{} (nor of v{})",
                    short_id(&k.id),
                    current.version,
                    next.version
                )))
            }
        }
        KeyFile::Public { .. } => Err(fail(
            "a public key; signing needs the private key (.pk8)".into(),
        )),
    }
}

fn is_root_key(root: &Root, k: &PrivateKey) -> bool {
    root.roles
        .get(&RoleType::Root)
        .is_some_and(|r| r.keyids.contains(&k.id))
        && root.keys.get(&k.id) == Some(&k.key)
}

/// Key sources for the keys among `keys` that are root keys of `current` or `next` (each
/// once).
fn root_sources(keys: &[PrivateKey], current: &Root, next: &Root) -> Vec<Box<dyn KeySource>> {
    let mut seen = std::collections::HashSet::new();
    keys.iter()
        .filter(|k| (is_root_key(current, k) || is_root_key(next, k)) && seen.insert(&k.id))
        .map(|k| {
            Box::new(LocalKeySource {
                path: k.path.clone(),
            }) as Box<dyn KeySource>
        })
        .collect()
}

/// `--prepare OUT`: the unsigned next root, for `sign-root` on the machine with the root key.
fn prepare(out: &Path, next: Root, current: &Root, metadata: &Path) -> Result<Done, RepoError> {
    let signed = Signed {
        signed: next,
        signatures: Vec::new(),
    };
    write_new(out, &signed)?;
    let n = current.version;
    let need = |r: &Root| {
        r.roles
            .get(&RoleType::Root)
            .map_or(0, |k| k.threshold.get())
    };
    Ok(Done(vec![
        format!(
            "wrote unsigned root v{} to {}",
            signed.signed.version,
            out.display()
        ),
        format!(
            "sign it where the root keys are: ssu-repo sign-root {} --key ROOT.pk8 --previous \
             {n}.root.json (needs {} of v{n}'s root keys and {} of v{}'s; {n}.root.json is {})",
            out.display(),
            need(current),
            need(&signed.signed),
            signed.signed.version,
            metadata.join(format!("{n}.root.json")).display()
        ),
        format!(
            "then publish it: ssu-repo import-root DIR {}",
            out.display()
        ),
    ]))
}

fn write_new(out: &Path, root: &Signed<Root>) -> Result<(), RepoError> {
    let mut json = serde_json::to_vec_pretty(root)
        .map_err(|e| RepoError::bad_arg("root", format!("cannot serialize: {e}")))?;
    json.push(b'\n');
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(out)
        .and_then(|mut f| std::io::Write::write_all(&mut f, &json))
        .map_err(RepoError::io(out, "cannot write (it must not exist yet)"))
}

/// `sign-root FILE --key KEY... [--previous ROOT]`: signs a prepared root; needs nothing but
/// the file and the keys (no repository). A key that is not a root key of the file's root is
/// refused when `previous` shows it is not one of the previous root's either.
pub async fn sign_root(
    file: &Path,
    key_paths: &[PathBuf],
    previous: Option<&Path>,
) -> Result<Done, RepoError> {
    let mut signed = tuf::read_root(file)?;
    let previous = previous.map(tuf::read_root).transpose()?;
    if let Some(p) = &previous
        && p.signed.version.checked_add(1) != Some(signed.signed.version)
    {
        return Err(RepoError::bad_arg(
            "--previous",
            format!(
                "is root v{}; {} is v{}",
                p.signed.version,
                file.display(),
                signed.signed.version
            ),
        ));
    }
    let mut lines = Vec::new();
    let mut sources: Vec<Box<dyn KeySource>> = Vec::new();
    for path in key_paths {
        let k = match keys::read_key_file(path)? {
            KeyFile::Private(k) => k,
            KeyFile::Public { .. } => {
                return Err(RepoError::Key {
                    path: path.clone(),
                    reason: "a public key; signing needs the private key (.pk8)".into(),
                });
            }
        };
        let in_next = is_root_key(&signed.signed, &k);
        let in_previous = previous
            .as_ref()
            .is_some_and(|p| is_root_key(&p.signed, &k));
        if !in_next && !in_previous {
            let why = match &previous {
                Some(p) => format!(
                    "key {} is a root key of neither root v{} nor v{}",
                    short_id(&k.id),
                    signed.signed.version,
                    p.signed.version
                ),
                None => format!(
                    "key {} is not a root key of root v{} (a key the new root drops counts \
                     only as the previous root's: pass --previous N.root.json)",
                    short_id(&k.id),
                    signed.signed.version
                ),
            };
            return Err(RepoError::Key {
                path: path.clone(),
                reason: why,
            });
        }
        sources.push(Box::new(LocalKeySource { path: k.path }));
    }
    let ids = rotate::add_signatures(&mut signed, &sources).await?;
    let bytes = serde_json::to_vec_pretty(&signed)
        .map_err(|e| RepoError::bad_arg("root", format!("cannot serialize: {e}")))?;
    let tmp = file.with_extension("json.tmp");
    std::fs::write(&tmp, [bytes.as_slice(), b"\n"].concat())
        .and_then(|()| std::fs::rename(&tmp, file))
        .map_err(RepoError::io(file, "cannot write"))?;
    let v = signed.signed.version;
    lines.push(format!(
        "signed root v{v} in {} with {}",
        file.display(),
        ids_text(&ids)
    ));
    let (have, need) = rotate::root_signatures(&signed.signed, &signed);
    lines.push(format!(
        "  v{v}'s own root keys: {have} of {need} signatures"
    ));
    if let Some(p) = &previous {
        let (have, need) = rotate::root_signatures(&p.signed, &signed);
        lines.push(format!(
            "  v{}'s root keys: {have} of {need} signatures",
            p.signed.version
        ));
    }
    Ok(Done(lines))
}

/// Largest root.json `import-root` reads (the agent's own cap is 64 KiB).
const MAX_ROOT_FILE: u64 = 64 * 1024;

/// `import-root DIR FILE [--key KEY...]`: publishes a root signed elsewhere, after checking
/// it as a device will; roles whose keys it changes are signed again (their private keys in
/// `keys/` or given with `--key`, which stores them there).
pub async fn import_root(
    dir: &Path,
    file: &Path,
    key_paths: &[PathBuf],
    now: Timestamp,
) -> Result<Done, RepoError> {
    let open = open(dir).await?;
    let size = std::fs::metadata(file)
        .map_err(RepoError::io(file, "cannot read"))?
        .len();
    if size > MAX_ROOT_FILE {
        return Err(RepoError::bad_arg(
            file.display().to_string(),
            format!("{size} bytes; devices refuse a root.json over {MAX_ROOT_FILE}"),
        ));
    }
    let next = tuf::read_root(file)?;
    let current = open.repo.root().clone();
    rotate::check_next(&current, &next, now)?;
    let mut adopt = Vec::new();
    for path in key_paths {
        match keys::read_key_file(path)? {
            KeyFile::Private(k) => {
                if listed_for(&next.signed, &k).is_none() {
                    return Err(RepoError::Key {
                        path: path.clone(),
                        reason: format!(
                            "key {} is not a targets, snapshot or timestamp key of root v{}",
                            short_id(&k.id),
                            next.signed.version
                        ),
                    });
                }
                adopt.push(k);
            }
            KeyFile::Public { .. } => {
                return Err(RepoError::Key {
                    path: path.clone(),
                    reason: "a public key; re-signing needs the private key (.pk8)".into(),
                });
            }
        }
    }
    let adopt: Vec<&PrivateKey> = adopt.iter().collect();
    commit(&open, next, &adopt, now).await
}

/// The online role (targets, snapshot or timestamp) `root` lists `k` for.
fn listed_for(root: &Root, k: &PrivateKey) -> Option<RoleType> {
    [RoleType::Targets, RoleType::Snapshot, RoleType::Timestamp]
        .into_iter()
        .find(|r| {
            root.roles
                .get(r)
                .is_some_and(|rk| rk.keyids.contains(&k.id))
        })
}

/// Publishes `next` (checked against the repository's root) with the metadata of every role
/// whose keys changed signed again under it; `adopt` are private keys to store in `keys/`
/// first. Keys the new root no longer lists move to `keys/retired/`.
async fn commit(
    open: &super::Open,
    next: Signed<Root>,
    adopt: &[&PrivateKey],
    now: Timestamp,
) -> Result<Done, RepoError> {
    let current = open.repo.root();
    rotate::check_next(current, &next, now)?;
    let layout = &open.layout;
    let changed = rotate::changed_roles(&current.signed, &next.signed);
    let v = next.signed.version;

    // Stored keys first (signing reads them from keys/); removed again on failure.
    let mut stored = Vec::new();
    let ring = keys::ring(&layout.keys)?;
    for k in adopt {
        if ring.iter().any(|r| r.id == k.id) {
            continue;
        }
        let Some(role) = listed_for(&next.signed, k) else {
            continue;
        };
        let bytes = std::fs::read(&k.path).map_err(RepoError::io(&k.path, "cannot read"))?;
        stored.push(keys::store(&layout.keys, role, &bytes)?);
    }
    let result = publish_root(open, &next, &changed, now).await;
    if result.is_err() {
        for p in &stored {
            let _ = std::fs::remove_file(p);
        }
    }
    let mut lines = result?;
    for p in keys::retire_unlisted(&layout.keys, &next.signed)? {
        lines.push(format!("retired {} (no longer listed)", p.display()));
    }
    for p in stored {
        lines.push(format!("stored {}", p.display()));
    }
    lines.insert(
        0,
        format!(
            "published root v{v} (expires {}), signed by {}",
            next.signed.expires,
            ids_text(
                &next
                    .signatures
                    .iter()
                    .map(|s| s.keyid.clone())
                    .collect::<Vec<_>>()
            )
        ),
    );
    Ok(Done(lines))
}

async fn publish_root(
    open: &super::Open,
    next: &Signed<Root>,
    changed: &[RoleType],
    now: Timestamp,
) -> Result<Vec<String>, RepoError> {
    let layout = &open.layout;
    let staging = Staging::new(&layout.metadata)?;
    let root_file = staging
        .path()
        .join(format!("{}.root.json", next.signed.version));
    let mut json = serde_json::to_vec_pretty(next)
        .map_err(|e| RepoError::bad_arg("root", format!("cannot serialize: {e}")))?;
    json.push(b'\n');
    std::fs::write(&root_file, json).map_err(RepoError::io(&root_file, "cannot write"))?;
    let mut lines = Vec::new();
    let e = &open.settings.expires;
    if changed.contains(&RoleType::Targets) {
        let signed = tuf::sign_all(
            layout,
            &open.settings,
            open.repo.clone(),
            &root_file,
            &next.signed,
            Vec::new(),
            now,
        )
        .await?;
        signed
            .write(staging.path())
            .await
            .map_err(RepoError::tuf("writing metadata"))?;
        let r = &open.repo;
        lines.push(format!(
            "signed targets v{}, snapshot v{}, timestamp v{} under it",
            r.targets().signed.version.get() + 1,
            r.snapshot().signed.version.get() + 1,
            r.timestamp().signed.version.get() + 1
        ));
    } else if !changed.is_empty() {
        let signed = tuf::sign_snapshot_timestamp(
            layout,
            &open.repo,
            &next.signed,
            (e.snapshot.from(now)?, e.timestamp.from(now)?),
            None,
        )
        .await?;
        tuf::write_snapshot_timestamp(&signed, staging.path(), next.signed.consistent_snapshot)
            .await?;
        lines.push(format!(
            "signed snapshot v{}, timestamp v{} under it",
            signed.0.signed().signed.version,
            signed.1.signed().signed.version
        ));
    }
    super::layout::link_spec_layout(&layout.targets)?;
    publish_metadata(&staging, &layout.metadata)?;
    Ok(lines)
}
