//! The trusted root, persisted: each check starts from the newest root verified so far.
//!
//! tough starts every load from the root it is handed and walks `N+1.root.json` from there,
//! so starting from the shipped `1.root.json` would cost a request per root version on every
//! check and lock the device out once the chain is longer than tough's cap on root updates.
//! The newest verified root is therefore written here, atomically and with fsync (tough's own
//! `root.json` in its datastore is neither), under a name that ties it to the shipped root
//! it descends from: a device whose configuration points at another repository starts from
//! that repository's shipped root, not from a root of the old one.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use tough::schema::{Root, Signed};

use super::floor::RoleKeys;

/// The root a check starts from.
#[derive(Debug)]
pub struct StartRoot {
    pub bytes: Vec<u8>,
    pub version: u64,
    /// Its timestamp and snapshot keys (empty when it does not even parse; tough then
    /// refuses it).
    pub keys: RoleKeys,
}

const PREFIX: &str = "trusted-root.";

fn path(datastore: &Path, shipped: &[u8]) -> PathBuf {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, shipped);
    datastore.join(format!(
        "{PREFIX}{}.json",
        hex::encode(&digest.as_ref()[..8])
    ))
}

fn parse(bytes: &[u8]) -> Option<Signed<Root>> {
    let root: Signed<Root> = serde_json::from_slice(bytes).ok()?;
    // Only a root that vouches for itself; tough checks the same before using it.
    root.signed.verify_role(&root).ok()?;
    Some(root)
}

/// The persisted root when it is there, verifies and is not older than the shipped one;
/// the shipped root otherwise.
pub fn start_root(datastore: &Path, shipped: &[u8]) -> StartRoot {
    let shipped_root = parse(shipped);
    let shipped_version = shipped_root.as_ref().map_or(0, |r| r.signed.version.get());
    let persisted = std::fs::read(path(datastore, shipped))
        .ok()
        .and_then(|b| parse(&b).map(|r| (b, r)))
        .filter(|(_, r)| r.signed.version.get() >= shipped_version);
    match persisted {
        Some((bytes, root)) => StartRoot {
            bytes,
            version: root.signed.version.get(),
            keys: RoleKeys::of(&root),
        },
        None => StartRoot {
            bytes: shipped.to_vec(),
            version: shipped_version,
            keys: shipped_root.as_ref().map(RoleKeys::of).unwrap_or_default(),
        },
    }
}

/// The newest root that `fetched` (root files by version, as a load received them) chains to
/// from `start` by TUF's root update rules (spec 5.3.4–5.3.5, as tough applies them): version
/// N+1 signed by a threshold of version N's root keys and of its own, and numbered exactly
/// N+1; it must also state a specification version the agent reads. `None` when not even
/// `start` parses or nothing newer chains.
///
/// A load that fails after rotating root (an expired final root, a bad timestamp) has still
/// established the newer roots; TUF persists each one as it is verified (5.3.8). Without
/// that, the next check would start from the older root again and trust its keys as long as
/// a server withholds the newer root files.
pub fn newest_chained(start: &[u8], fetched: &BTreeMap<u64, Vec<u8>>) -> Option<Signed<Root>> {
    let mut root = parse(start)?;
    let mut advanced = false;
    while let Some(bytes) = root
        .signed
        .version
        .get()
        .checked_add(1)
        .and_then(|next| fetched.get(&next))
    {
        let Ok(next) = serde_json::from_slice::<Signed<Root>>(bytes) else {
            break;
        };
        let chains = root.signed.verify_role(&next).is_ok()
            && next.signed.verify_role(&next).is_ok()
            && root.signed.version.get().checked_add(1) == Some(next.signed.version.get())
            && super::client::supported_spec_version(&next.signed.spec_version);
        if !chains {
            break;
        }
        root = next;
        advanced = true;
    }
    advanced.then_some(root)
}

/// Persists `root` (verified by tough) as the start of the next check. A failure is logged:
/// the next check then walks from the older root again, which is slower but safe.
pub fn persist_root(datastore: &Path, shipped: &[u8], root: &Signed<Root>) {
    let target = path(datastore, shipped);
    let tmp = target.with_extension("json.tmp");
    let written = serde_json::to_vec(root)
        .map_err(std::io::Error::other)
        .and_then(|bytes| {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&bytes)?;
            f.sync_all()
        })
        .and_then(|()| std::fs::rename(&tmp, &target))
        .and_then(|()| std::fs::File::open(datastore)?.sync_all());
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        tracing::warn!(error = %e, file = %target.display(), "cannot persist the trusted root");
    }
}

/// Removes tough's own files from the datastore, keeping the persisted root and the cache
/// of verified versioned metadata (`versioned/`).
pub fn clear_tough_files(datastore: &Path) {
    let Ok(entries) = std::fs::read_dir(datastore) else {
        return;
    };
    for e in entries.flatten() {
        let keep = e.file_name().to_string_lossy().starts_with(PREFIX)
            || e.file_type().is_ok_and(|t| t.is_dir());
        if !keep {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Made by tests/data/tuf/pyrepo.py (python-tuf): version 2 rotates the timestamp key.
    const V1: &[u8] = include_bytes!("../../tests/data/tuf/roots/1.root.json");
    const V2: &[u8] = include_bytes!("../../tests/data/tuf/roots/2.root.json");

    fn root(bytes: &[u8]) -> Signed<Root> {
        serde_json::from_slice(bytes).unwrap()
    }

    #[test]
    fn a_check_starts_from_the_newest_persisted_root_of_the_same_shipped_root() {
        let dir = tempfile::tempdir().unwrap();
        let ds = dir.path();
        let start = start_root(ds, V1);
        assert_eq!((start.version, start.bytes.as_slice()), (1, V1));
        assert_eq!(start.keys, RoleKeys::of(&root(V1)));

        persist_root(ds, V1, &root(V2));
        let start = start_root(ds, V1);
        assert_eq!(start.version, 2);
        assert_eq!(start.keys, RoleKeys::of(&root(V2)));
        assert_ne!(start.keys.timestamp, RoleKeys::of(&root(V1)).timestamp);
        assert_eq!(start.keys.snapshot, RoleKeys::of(&root(V1)).snapshot);

        // Another shipped root (another repository): its own chain, not this one's.
        assert_eq!(start_root(ds, V2).version, 2);
        let other = br#"{"not": "this repository"}"#;
        assert_eq!(start_root(ds, other).bytes, other);

        // A damaged persisted root is not used.
        std::fs::write(path(ds, V1), &V2[..100]).unwrap();
        assert_eq!(start_root(ds, V1).version, 1);
    }

    #[test]
    fn a_root_chain_is_followed_as_far_as_it_verifies() {
        let fetched = |files: &[(u64, &[u8])]| -> BTreeMap<u64, Vec<u8>> {
            files.iter().map(|(v, b)| (*v, b.to_vec())).collect()
        };
        let newest = newest_chained(V1, &fetched(&[(2, V2)])).unwrap();
        assert_eq!(newest.signed.version.get(), 2);
        // Nothing newer, a gap, a cut-off file, a file under the wrong version: no advance.
        assert!(newest_chained(V1, &fetched(&[])).is_none());
        assert!(newest_chained(V1, &fetched(&[(3, V2)])).is_none());
        assert!(newest_chained(V1, &fetched(&[(2, &V2[..V2.len() / 2])])).is_none());
        assert!(newest_chained(V2, &fetched(&[(3, V2)])).is_none());
        // Version 2 re-signed by nobody: the chain stops at version 1.
        let mut unsigned = root(V2);
        unsigned.signatures.clear();
        let unsigned = serde_json::to_vec(&unsigned).unwrap();
        assert!(newest_chained(V1, &fetched(&[(2, &unsigned)])).is_none());
        // A start root that does not parse: nothing.
        assert!(newest_chained(b"{}", &fetched(&[(2, V2)])).is_none());
    }

    #[test]
    fn clearing_the_datastore_keeps_the_root_and_the_verified_cache() {
        let dir = tempfile::tempdir().unwrap();
        let ds = dir.path();
        persist_root(ds, V1, &root(V2));
        std::fs::create_dir(ds.join("versioned")).unwrap();
        std::fs::write(ds.join("versioned/2.targets.json"), b"{}").unwrap();
        for f in ["root.json", "timestamp.json", "latest_known_time.json"] {
            std::fs::write(ds.join(f), b"x").unwrap();
        }
        clear_tough_files(ds);
        let mut left: Vec<String> = std::fs::read_dir(ds)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left.len(), 2, "{left:?}");
        assert!(
            left[0].starts_with(PREFIX) && left[1] == "versioned",
            "{left:?}"
        );
        assert_eq!(start_root(ds, V1).version, 2);
    }
}
