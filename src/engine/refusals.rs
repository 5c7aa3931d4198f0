//! Refused targets in the history: each refusal once, not at every check.
//!
//! A server keeps old bundles listed (the factory image, earlier fixes); once the device is
//! past them, every check refuses them again as rollbacks. The history is for what happened,
//! so a refusal is recorded the first time it is seen — kept in the store (state key
//! [`KEY`]), so a restart (every reboot into an update is one) does not record it again.
//! What counts as "the same refusal" is the history entry's detail, target name and reason:
//! the same bundle refused for another reason (after the next update, say) is news.

use std::collections::VecDeque;

use jiff::Timestamp;

use super::{Clock, Engine, Ports};
use crate::metadata::schema::BundleMeta;
use crate::store::{NewHistoryEntry, Store};

/// Store `state` key of the refusals already recorded (a JSON array of details).
const KEY: &str = "refusals_recorded";

/// How many refusals are remembered. More than a repository lists; the oldest is forgotten
/// first (and would be recorded once more if it came back).
const REMEMBERED: usize = 256;

/// The refusals already in the history, oldest first.
#[derive(Debug, Default)]
pub(super) struct Recorded(VecDeque<String>);

impl Recorded {
    /// What the store remembers; an unreadable record is treated as empty (at worst a
    /// refusal is recorded once more).
    pub(super) fn load(store: &Store) -> Recorded {
        let list = store
            .state(KEY)
            .ok()
            .flatten()
            .and_then(|s| serde_json::from_str::<VecDeque<String>>(&s).ok())
            .unwrap_or_default();
        Recorded(list)
    }

    /// Adds `detail`; false when it was already there.
    fn insert(&mut self, detail: &str) -> bool {
        if self.0.iter().any(|d| d == detail) {
            return false;
        }
        self.0.push_back(detail.to_owned());
        while self.0.len() > REMEMBERED {
            self.0.pop_front();
        }
        true
    }

    fn to_json(&self) -> String {
        serde_json::to_string(&self.0).unwrap_or_default()
    }
}

impl<C: Clock, P: Ports> Engine<C, P> {
    /// Reports a refused target (log, `LastError`) and records it in the history the first
    /// time this refusal is seen.
    pub(super) fn record_refusal(
        &mut self,
        now: Timestamp,
        name: &str,
        meta: Option<&BundleMeta>,
        reason: &str,
    ) {
        tracing::warn!(target = name, "refused: {reason}");
        self.status.last_error = format!("refused {name}: {reason}");
        let detail = format!("{name}: {reason}");
        if !self.refused_seen.insert(&detail) {
            return;
        }
        let entry = NewHistoryEntry {
            at: now,
            kind: meta.map_or("event", |m| m.kind.as_str()).to_owned(),
            action: "refused".to_owned(),
            version: meta.map(|m| m.version.clone()),
            security_patch_level: meta.map(|m| m.security_patch_level),
            detail,
            cves: meta.map_or_else(Vec::new, |m| m.cves.iter().map(|c| c.id.clone()).collect()),
        };
        let seen = self.refused_seen.to_json();
        // Both or neither: a refusal remembered but not in the history would be lost.
        let result = self.store.transaction(|tx| {
            tx.append_history(&entry)?;
            tx.set_state(KEY, Some(&seen))
        });
        if let Err(e) = result {
            self.store_failed("cannot record a refused update", e);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_each_detail_once_and_forgets_the_oldest_beyond_the_bound() {
        let mut r = Recorded::default();
        assert!(r.insert("a: old"));
        assert!(!r.insert("a: old"));
        assert!(r.insert("a: other reason"));
        for i in 0..REMEMBERED {
            r.insert(&format!("x{i}"));
        }
        assert_eq!(r.0.len(), REMEMBERED);
        // "a: old" was the oldest: forgotten, so it counts as new again.
        assert!(r.insert("a: old"));
    }
}
