//! The agent's own rollback floor: the highest verified version of each top-level role,
//! and the keys those versions were verified under.
//!
//! tough keeps its trusted metadata in a datastore that is written without fsync, so the
//! agent records the versions it verified in the store as well and refuses anything older
//! ([`RoleVersions::below`]). A floor must also be given up the way TUF gives up its trusted
//! files (spec 5.3.11, fast-forward recovery): when root rotates the timestamp keys, the
//! trusted timestamp is no longer trusted, so its version no longer bounds the next one;
//! likewise a snapshot key rotation releases the snapshot version and the targets version
//! (which TUF checks only against the snapshot). Without that, a version pushed to 2^64−1
//! with a stolen key would lock the device out forever, even after the repository rotated
//! the key. Hence each floor remembers a fingerprint of the keys it was verified under.

use serde::{Deserialize, Serialize};
use tough::schema::{RoleType, Root, Signed};

/// The highest verified version of each top-level role, and the keys they were verified
/// under.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoleVersions {
    pub root: u64,
    pub timestamp: u64,
    pub snapshot: u64,
    pub targets: u64,
    /// Absent in floors recorded before the agent tracked keys (then the trusted root the
    /// check started from stands in, see [`RoleVersions::released_by`]).
    #[serde(default, skip_serializing_if = "RoleKeys::is_unknown")]
    pub keys: RoleKeys,
}

/// Fingerprints of the timestamp and snapshot role keys (see [`RoleKeys::of`]); empty when
/// unknown.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoleKeys {
    #[serde(default)]
    pub timestamp: String,
    #[serde(default)]
    pub snapshot: String,
}

impl RoleKeys {
    /// The fingerprints of `root`'s timestamp and snapshot keys: SHA-256 over the sorted
    /// canonical public keys, so a new key, a removed key or a new threshold-free key set all
    /// count as a rotation, while re-ordering the key ids does not.
    pub fn of(root: &Signed<Root>) -> RoleKeys {
        RoleKeys {
            timestamp: fingerprint(root, RoleType::Timestamp),
            snapshot: fingerprint(root, RoleType::Snapshot),
        }
    }

    fn is_unknown(&self) -> bool {
        self.timestamp.is_empty() && self.snapshot.is_empty()
    }
}

fn fingerprint(root: &Signed<Root>, role: RoleType) -> String {
    let mut keys: Vec<String> = root
        .signed
        .keys(role)
        .map(|k| serde_json::to_string(k).unwrap_or_default())
        .collect();
    keys.sort();
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, keys.join("\n").as_bytes());
    hex::encode(digest.as_ref())
}

impl RoleVersions {
    /// The first role whose version is below `floor`'s, if any.
    pub fn below(&self, floor: &RoleVersions) -> Option<(&'static str, u64, u64)> {
        [
            ("root", self.root, floor.root),
            ("timestamp", self.timestamp, floor.timestamp),
            ("snapshot", self.snapshot, floor.snapshot),
            ("targets", self.targets, floor.targets),
        ]
        .into_iter()
        .find(|(_, have, min)| have < min)
    }

    /// Whether [`released_by`](Self::released_by) lowered any version of `self` in `standing`
    /// (a key rotation released it), as opposed to only learning the keys.
    pub fn released_in(&self, standing: &RoleVersions) -> bool {
        standing.below(self).is_some()
    }

    /// This floor as it still binds metadata verified under `now` (the keys of the root the
    /// check ended with). `before` are the keys of the trusted root the check started from:
    /// they stand in for a floor that does not know its keys. A role whose keys changed is
    /// released (TUF deletes its trusted file, spec 5.3.11): a timestamp rotation releases
    /// the timestamp version, a snapshot rotation the snapshot and targets versions.
    pub fn released_by(&self, before: &RoleKeys, now: &RoleKeys) -> RoleVersions {
        let then = if self.keys.is_unknown() {
            before
        } else {
            &self.keys
        };
        let mut out = self.clone();
        if !then.timestamp.is_empty() && then.timestamp != now.timestamp {
            out.timestamp = 0;
        }
        if !then.snapshot.is_empty() && then.snapshot != now.snapshot {
            out.snapshot = 0;
            out.targets = 0;
        }
        out.keys = now.clone();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(ts: &str, snap: &str) -> RoleKeys {
        RoleKeys {
            timestamp: ts.into(),
            snapshot: snap.into(),
        }
    }

    fn floor(k: RoleKeys) -> RoleVersions {
        RoleVersions {
            root: 2,
            timestamp: u64::MAX,
            snapshot: 1000,
            targets: 900,
            keys: k,
        }
    }

    #[test]
    fn floor_comparison_names_the_role() {
        let floor = RoleVersions {
            root: 1,
            timestamp: 5,
            snapshot: 3,
            targets: 3,
            keys: RoleKeys::default(),
        };
        let older = RoleVersions {
            timestamp: 4,
            ..floor.clone()
        };
        assert_eq!(older.below(&floor), Some(("timestamp", 4, 5)));
        assert_eq!(floor.below(&floor), None);
    }

    #[test]
    fn unchanged_keys_keep_the_whole_floor() {
        let f = floor(keys("t1", "s1"));
        let kept = f.released_by(&keys("t0", "s0"), &keys("t1", "s1"));
        assert_eq!(kept, f, "the floor's own keys win over the start root's");
    }

    #[test]
    fn a_timestamp_rotation_releases_only_the_timestamp_version() {
        let f = floor(keys("t1", "s1"));
        let r = f.released_by(&keys("t1", "s1"), &keys("t2", "s1"));
        assert_eq!(
            (r.root, r.timestamp, r.snapshot, r.targets),
            (2, 0, 1000, 900)
        );
        assert_eq!(r.keys, keys("t2", "s1"));
    }

    #[test]
    fn a_snapshot_rotation_releases_snapshot_and_targets() {
        let f = floor(keys("t1", "s1"));
        let r = f.released_by(&keys("t1", "s1"), &keys("t1", "s2"));
        assert_eq!(
            (r.root, r.timestamp, r.snapshot, r.targets),
            (2, u64::MAX, 0, 0)
        );
    }

    #[test]
    fn a_floor_without_keys_is_judged_by_the_start_root() {
        // Floors written before keys were tracked (devices already locked out by a
        // fast-forward) recover when the new root's keys differ from the start root's.
        let f = floor(RoleKeys::default());
        let r = f.released_by(&keys("t1", "s1"), &keys("t2", "s1"));
        assert_eq!(r.timestamp, 0);
        let r = f.released_by(&keys("t1", "s1"), &keys("t1", "s1"));
        assert_eq!(r.timestamp, u64::MAX);
        // Nothing known at all: nothing released.
        let r = f.released_by(&RoleKeys::default(), &keys("t2", "s2"));
        assert_eq!((r.timestamp, r.snapshot), (u64::MAX, 1000));
    }

    #[test]
    fn learning_the_keys_is_not_a_release() {
        // A fresh device (or a floor from before keys were tracked) only learns the keys:
        // nothing to announce as a rotation.
        let fresh = RoleVersions::default();
        let standing = fresh.released_by(&keys("t1", "s1"), &keys("t1", "s1"));
        assert_ne!(standing, fresh, "the keys are learnt");
        assert!(!fresh.released_in(&standing));
        let f = floor(keys("t1", "s1"));
        assert!(!f.released_in(&f.released_by(&keys("t1", "s1"), &keys("t1", "s1"))));
        assert!(f.released_in(&f.released_by(&keys("t1", "s1"), &keys("t2", "s1"))));
        assert!(f.released_in(&f.released_by(&keys("t1", "s1"), &keys("t1", "s2"))));
    }

    #[test]
    fn old_floors_still_parse() {
        let f: RoleVersions =
            serde_json::from_str(r#"{"root":1,"timestamp":5,"snapshot":3,"targets":3}"#).unwrap();
        assert_eq!(f.keys, RoleKeys::default());
        let json = serde_json::to_string(&f).unwrap();
        assert!(!json.contains("keys"), "{json}");
    }
}
