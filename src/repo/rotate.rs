//! The next root: building it (a role's keys replaced, or the same keys with a new expiry),
//! signing it, and checking it the way a device will before anything is published.
//!
//! A device follows a root rotation only if version N+1 is signed by a threshold of version
//! N's root keys *and* a threshold of its own (TUF 5.3.4). Everything here is checked against
//! both, so `ssu-repo` never publishes a root the devices would refuse (and lock themselves
//! to the old one).

use std::collections::{HashMap, HashSet};
use std::num::NonZeroU64;

use aws_lc_rs::rand::SystemRandom;
use jiff::Timestamp;
use olpc_cjson::CanonicalFormatter;
use serde::Serialize;
use tough::key_source::KeySource;
use tough::schema::decoded::{Decoded, Hex};
use tough::schema::key::Key;
use tough::schema::{RoleKeys, RoleType, Root, Signature, Signed};

use super::RepoError;
use super::keys::short_id;

/// What changes in the next root.
#[derive(Debug, Clone)]
pub enum Change {
    /// Same keys and thresholds; a new version and expiry (`renew-root`).
    Renew,
    /// `role`'s keys become `keys` with `threshold`.
    Keys {
        role: RoleType,
        keys: Vec<Key>,
        threshold: NonZeroU64,
    },
}

/// Root version N+1 of `current` with `change` applied, expiring at `expires`. Keys no role
/// lists any more are dropped. Refused: a threshold above the number of distinct keys, no
/// keys, or a change that changes nothing.
pub fn next_root(current: &Root, change: &Change, expires: Timestamp) -> Result<Root, RepoError> {
    let version = current
        .version
        .checked_add(1)
        .ok_or_else(|| RepoError::bad_arg("root", "version number exhausted"))?;
    let mut root = current.clone();
    root.version = version;
    root.expires = expires;
    if let Change::Keys {
        role,
        keys,
        threshold,
    } = change
    {
        let mut ids = Vec::new();
        for key in keys {
            let id = key
                .key_id()
                .map_err(|e| RepoError::bad_arg("--key", format!("no key id: {e}")))?;
            if !ids.contains(&id) {
                root.keys.insert(id.clone(), key.clone());
                ids.push(id);
            }
        }
        if ids.is_empty() {
            return Err(RepoError::bad_arg(format!("{role} keys"), "none given"));
        }
        if threshold.get() > ids.len() as u64 {
            return Err(RepoError::bad_arg(
                "--threshold",
                format!(
                    "{threshold} is more than the {} distinct {role} key(s) given; no device \
                     could ever verify that",
                    ids.len()
                ),
            ));
        }
        ids.sort();
        let old = current.roles.get(role);
        let same = old.is_some_and(|o| {
            let mut was = o.keyids.clone();
            was.sort();
            was == ids && o.threshold == *threshold
        });
        if same {
            return Err(RepoError::bad_arg(
                format!("rotate {role}"),
                "these are the role's current keys and threshold (renew-root extends the \
                 root's expiry without a change)",
            ));
        }
        root.roles.insert(
            *role,
            RoleKeys {
                keyids: ids,
                threshold: *threshold,
                _extra: HashMap::new(),
            },
        );
        let used: HashSet<&Decoded<Hex>> = root.roles.values().flat_map(|r| &r.keyids).collect();
        let keep: HashMap<_, _> = root
            .keys
            .iter()
            .filter(|(id, _)| used.contains(id))
            .map(|(id, k)| (id.clone(), k.clone()))
            .collect();
        root.keys = keep;
    }
    Ok(root)
}

/// The roles other than root whose keys or threshold differ between `old` and `new`: their
/// metadata must be signed again under `new`.
pub fn changed_roles(old: &Root, new: &Root) -> Vec<RoleType> {
    let norm = |r: &Root, role| {
        r.roles.get(&role).map(|k| {
            let mut ids = k.keyids.clone();
            ids.sort();
            (ids, k.threshold)
        })
    };
    [RoleType::Targets, RoleType::Snapshot, RoleType::Timestamp]
        .into_iter()
        .filter(|&role| norm(old, role) != norm(new, role))
        .collect()
}

/// The canonical JSON a root signature covers.
pub fn canonical(root: &Root) -> Result<Vec<u8>, RepoError> {
    let mut data = Vec::new();
    let mut ser = serde_json::Serializer::with_formatter(&mut data, CanonicalFormatter::new());
    root.serialize(&mut ser)
        .map_err(|e| RepoError::bad_arg("root", format!("cannot serialize: {e}")))?;
    Ok(data)
}

/// Adds a signature by each of `signers` to `signed` (replacing an earlier signature by the
/// same key). Returns the key ids that signed.
pub async fn add_signatures(
    signed: &mut Signed<Root>,
    signers: &[Box<dyn KeySource>],
) -> Result<Vec<Decoded<Hex>>, RepoError> {
    let data = canonical(&signed.signed)?;
    let rng = SystemRandom::new();
    let mut ids = Vec::new();
    for source in signers {
        let pair = source
            .as_sign()
            .await
            .map_err(|e| RepoError::bad_arg("key", e.to_string()))?;
        let id = pair
            .tuf_key()
            .key_id()
            .map_err(|e| RepoError::bad_arg("key", e.to_string()))?;
        let sig = pair
            .sign(&data, &rng)
            .await
            .map_err(|e| RepoError::bad_arg("key", format!("cannot sign: {e}")))?;
        signed.signatures.retain(|s| s.keyid != id);
        signed.signatures.push(Signature {
            keyid: id.clone(),
            sig: sig.into(),
        });
        ids.push(id);
    }
    Ok(ids)
}

/// How many valid signatures `signed` carries by `by`'s root keys, and how many `by` needs.
pub fn root_signatures(by: &Root, signed: &Signed<Root>) -> (u64, u64) {
    let Some(keys) = by.roles.get(&RoleType::Root) else {
        return (0, u64::MAX);
    };
    let need = keys.threshold.get();
    // tough's own verification (what the device runs), with a threshold nothing reaches, so
    // that its refusal reports the number of valid signatures. Signatures by one key are
    // counted once.
    let mut probe = by.clone();
    probe.roles.insert(
        RoleType::Root,
        RoleKeys {
            keyids: keys.keyids.clone(),
            threshold: NonZeroU64::MAX,
            _extra: HashMap::new(),
        },
    );
    let mut unique = signed.clone();
    let mut seen = HashSet::new();
    unique.signatures.retain(|s| seen.insert(s.keyid.clone()));
    match probe.verify_role(&unique) {
        Err(tough::schema::Error::SignatureThreshold { valid, .. }) => (valid, need),
        _ => (0, need),
    }
}

/// Checks `next` the way a device will before it trusts it after `current`: version N+1,
/// signed by a threshold of `current`'s root keys and of its own, every threshold reachable,
/// not expired at `now`.
pub fn check_next(
    current: &Signed<Root>,
    next: &Signed<Root>,
    now: Timestamp,
) -> Result<(), RepoError> {
    let (n, m) = (current.signed.version, next.signed.version);
    let refuse = |reason: String| RepoError::bad_arg(format!("root v{m}"), reason);
    if current.signed.version.checked_add(1) != Some(m) {
        return Err(refuse(format!(
            "the repository's root is v{n}; only v{} can follow it",
            n.saturating_add(1)
        )));
    }
    let (valid, need) = root_signatures(&current.signed, next);
    if valid < need {
        return Err(refuse(format!(
            "signed by {valid} of root v{n}'s root keys; devices trusting v{n} need {need} \
             (sign it with `ssu-repo sign-root` and v{n}'s root key)"
        )));
    }
    let (valid, need) = root_signatures(&next.signed, next);
    if valid < need {
        return Err(refuse(format!(
            "signed by {valid} of its own root keys; it needs {need}"
        )));
    }
    for role in [
        RoleType::Root,
        RoleType::Targets,
        RoleType::Snapshot,
        RoleType::Timestamp,
    ] {
        let Some(keys) = next.signed.roles.get(&role) else {
            return Err(refuse(format!("lists no {role} keys")));
        };
        let listed = keys
            .keyids
            .iter()
            .filter(|id| next.signed.keys.contains_key(*id))
            .collect::<HashSet<_>>()
            .len();
        if keys.threshold.get() > listed as u64 {
            return Err(refuse(format!(
                "{role} threshold {} is more than its {listed} key(s)",
                keys.threshold
            )));
        }
    }
    if next.signed.expires <= now {
        return Err(refuse(format!("expired at {}", next.signed.expires)));
    }
    Ok(())
}

/// `id…` for messages: the short ids of `ids`.
pub fn ids_text(ids: &[Decoded<Hex>]) -> String {
    ids.iter().map(short_id).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repo::keys::new_key;

    fn key() -> Key {
        new_key().unwrap().1
    }

    fn root() -> Root {
        let mut root = Root {
            spec_version: "1.0.0".into(),
            consistent_snapshot: true,
            version: NonZeroU64::MIN,
            expires: "2030-01-01T00:00:00Z".parse().unwrap(),
            keys: HashMap::new(),
            roles: HashMap::new(),
            _extra: HashMap::new(),
        };
        for role in [
            RoleType::Root,
            RoleType::Targets,
            RoleType::Snapshot,
            RoleType::Timestamp,
        ] {
            let k = key();
            let id = k.key_id().unwrap();
            root.keys.insert(id.clone(), k);
            root.roles.insert(
                role,
                RoleKeys {
                    keyids: vec![id],
                    threshold: NonZeroU64::MIN,
                    _extra: HashMap::new(),
                },
            );
        }
        root
    }

    fn two() -> NonZeroU64 {
        NonZeroU64::new(2).unwrap()
    }

    #[test]
    fn a_key_change_replaces_the_role_keys_and_drops_unused_keys() {
        let old = root();
        let (a, b) = (key(), key());
        let expires = "2031-01-01T00:00:00Z".parse().unwrap();
        let change = Change::Keys {
            role: RoleType::Targets,
            keys: vec![a.clone(), b.clone(), a.clone()],
            threshold: two(),
        };
        let new = next_root(&old, &change, expires).unwrap();
        assert_eq!(new.version.get(), 2);
        assert_eq!(new.expires, expires);
        let t = &new.roles[&RoleType::Targets];
        assert_eq!((t.keyids.len(), t.threshold), (2, two()));
        assert_eq!(
            new.keys.len(),
            5,
            "root, snapshot, timestamp, and two targets keys"
        );
        let old_targets = &old.roles[&RoleType::Targets].keyids[0];
        assert!(!new.keys.contains_key(old_targets));
        assert_eq!(changed_roles(&old, &new), [RoleType::Targets]);
        assert_eq!(new.roles[&RoleType::Root], old.roles[&RoleType::Root]);
    }

    #[test]
    fn renewing_changes_only_version_and_expiry() {
        let old = root();
        let expires = "2031-01-01T00:00:00Z".parse().unwrap();
        let new = next_root(&old, &Change::Renew, expires).unwrap();
        assert_eq!((new.version.get(), new.expires), (2, expires));
        assert_eq!(
            (new.keys.clone(), new.roles.clone()),
            (old.keys.clone(), old.roles.clone())
        );
        assert!(changed_roles(&old, &new).is_empty());
    }

    #[test]
    fn impossible_thresholds_and_no_op_changes_are_refused() {
        let old = root();
        let expires = "2031-01-01T00:00:00Z".parse().unwrap();
        let k = key();
        let err = next_root(
            &old,
            &Change::Keys {
                role: RoleType::Snapshot,
                keys: vec![k.clone(), k],
                threshold: two(),
            },
            expires,
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("2 is more than the 1 distinct snapshot key"),
            "{err}"
        );

        let current = old.keys[&old.roles[&RoleType::Timestamp].keyids[0]].clone();
        let err = next_root(
            &old,
            &Change::Keys {
                role: RoleType::Timestamp,
                keys: vec![current],
                threshold: NonZeroU64::MIN,
            },
            expires,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("current keys and threshold"), "{err}");
    }

    #[test]
    fn a_threshold_change_alone_is_a_change() {
        let mut old = root();
        let (a, b) = (key(), key());
        for k in [&a, &b] {
            old.keys.insert(k.key_id().unwrap(), k.clone());
        }
        old.roles.get_mut(&RoleType::Targets).unwrap().keyids =
            vec![a.key_id().unwrap(), b.key_id().unwrap()];
        let expires = "2031-01-01T00:00:00Z".parse().unwrap();
        let new = next_root(
            &old,
            &Change::Keys {
                role: RoleType::Targets,
                keys: vec![b, a],
                threshold: two(),
            },
            expires,
        )
        .unwrap();
        assert_eq!(changed_roles(&old, &new), [RoleType::Targets]);
    }

    /// A key whose private half is in a file (what `add_signatures` signs with).
    fn key_file(dir: &std::path::Path, name: &str) -> (Key, std::path::PathBuf) {
        let (pkcs8, key) = new_key().unwrap();
        let path = dir.join(name);
        std::fs::write(&path, pkcs8).unwrap();
        (key, path)
    }

    async fn sign(next: &Root, paths: &[&std::path::PathBuf]) -> Signed<Root> {
        let mut s = Signed {
            signed: next.clone(),
            signatures: Vec::new(),
        };
        for path in paths {
            let source: Box<dyn KeySource> = Box::new(tough::key_source::LocalKeySource {
                path: (*path).clone(),
            });
            add_signatures(&mut s, &[source]).await.unwrap();
        }
        s
    }

    #[tokio::test]
    async fn the_next_root_needs_the_old_and_the_new_threshold() {
        let dir = tempfile::tempdir().unwrap();
        let (old_key, old_source) = key_file(dir.path(), "old");
        let (new_key_, new_source) = key_file(dir.path(), "new");
        let mut v1 = root();
        let old_id = old_key.key_id().unwrap();
        v1.keys.insert(old_id.clone(), old_key);
        v1.roles.get_mut(&RoleType::Root).unwrap().keyids = vec![old_id];
        let current = sign(&v1, &[&old_source]).await;
        let now: Timestamp = "2029-01-01T00:00:00Z".parse().unwrap();
        let change = Change::Keys {
            role: RoleType::Root,
            keys: vec![new_key_],
            threshold: NonZeroU64::MIN,
        };
        let next = next_root(&v1, &change, "2030-06-01T00:00:00Z".parse().unwrap()).unwrap();
        let both = sign(&next, &[&old_source, &new_source]).await;
        assert_eq!(root_signatures(&v1, &both), (1, 1));
        assert_eq!(root_signatures(&both.signed, &both), (1, 1));
        check_next(&current, &both, now).unwrap();

        let only_new = sign(&next, &[&new_source]).await;
        let err = check_next(&current, &only_new, now)
            .unwrap_err()
            .to_string();
        assert!(err.contains("signed by 0 of root v1's root keys"), "{err}");
        let only_old = sign(&next, &[&old_source]).await;
        let err = check_next(&current, &only_old, now)
            .unwrap_err()
            .to_string();
        assert!(err.contains("signed by 0 of its own root keys"), "{err}");

        // The same key signing twice counts once.
        let mut twice = only_new.clone();
        twice.signatures.push(twice.signatures[0].clone());
        assert_eq!(root_signatures(&twice.signed, &twice), (1, 1));

        let err = check_next(&current, &both, "2031-01-01T00:00:00Z".parse().unwrap())
            .unwrap_err()
            .to_string();
        assert!(err.contains("expired"), "{err}");
        let err = check_next(&both, &both, now).unwrap_err().to_string();
        assert!(err.contains("only v3 can follow"), "{err}");
    }
}
