//! The link-cost side of the cellular engine: what the link is, this month's budget of bytes
//! over costly links, and holding a download back for a cheaper link (with the time the
//! maximum deferral counts from, kept across restarts) until the user takes it now
//! ([`crate::policy::linkcost`] decides).

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use super::super::{Clock, Engine, Notice, Ports};
use crate::metadata::client::BundleTarget;
use crate::policy::linkcost::{self, Deferral, Link};
use crate::status::Offer;

/// Store key of bytes downloaded over costly links: `{"month": "YYYY-MM", "bytes": N}`.
const BUDGET_KEY: &str = "link_budget";
/// Store key of when a security update was first deferred for link cost (RFC 3339; cleared
/// when a download starts): the maximum deferral counts from it, across restarts and newer
/// updates superseding the deferred one.
const LINK_DEFERRED_KEY: &str = "link_deferred_since";

#[derive(Debug, Serialize, Deserialize, Default)]
struct Budget {
    month: String,
    bytes: u64,
}

fn month_of(t: Timestamp) -> String {
    t.strftime("%Y-%m").to_string()
}

impl<C: Clock, P: Ports> Engine<C, P> {
    /// Holds `offer` back for a cheaper link, and announces it with why and what it costs
    /// (COM-0010: a deferred security update is still news; the user may take it now).
    pub(super) fn defer_for_link(
        &mut self,
        now: Timestamp,
        target: BundleTarget,
        offer: Offer,
        d: Deferral,
    ) {
        tracing::info!(target = %target.name, "download deferred: {}", d.reason);
        if self.link_deferred_since().is_none() {
            self.set_link_deferred_since(Some(now));
        }
        // Looked at again when the maximum deferral ends (the engine wakes for `wake_at`).
        self.cellular.wake_at = d.until;
        self.cellular.held = Some(target);
        let offer = Offer {
            deferred: d.reason,
            deferred_until: d.until,
            ..offer
        };
        let known = self
            .status
            .available
            .as_ref()
            .is_some_and(|a| a.target == offer.target && a.source == offer.source);
        self.status.available = Some(offer.clone());
        if !known {
            self.notify(Notice::UpdateAvailable(Box::new(offer)));
        }
    }

    /// The user's `Install` for an update held for the link: downloads it now over the
    /// costly link (the bytes count against the budget).
    pub(in crate::engine) fn take_over_costly_link(&mut self, offer: Offer) {
        let link = self.link();
        tracing::info!(
            target = %offer.target.name,
            bytes = offer.target.length,
            metered = link.metered,
            roaming = link.roaming,
            "the user takes the deferred update now"
        );
        self.cellular.held = None;
        self.cellular.wake_at = None;
        self.cellular.download_costly = link.costly();
        if let Some(r) = &mut self.cellular.routed {
            r.deferred.clear();
        }
        self.set_link_deferred_since(None);
        self.start_download(Offer::new(offer.target, offer.source));
    }

    pub(super) fn link_deferred_since(&self) -> Option<Timestamp> {
        self.store
            .state(LINK_DEFERRED_KEY)
            .ok()
            .flatten()
            .and_then(|s| s.parse().ok())
    }

    pub(super) fn set_link_deferred_since(&mut self, since: Option<Timestamp>) {
        if since.is_none() && self.link_deferred_since().is_none() {
            return;
        }
        let value = since.map(|t| t.to_string());
        if let Err(e) = self.store.set_state(LINK_DEFERRED_KEY, value.as_deref()) {
            // Not fatal: the maximum deferral then counts from the next deferral.
            tracing::warn!(error = %e, "cannot record the link deferral");
        }
    }

    pub(in crate::engine) fn link(&self) -> Link {
        Link {
            metered: self.status.network.metered == Some(true),
            roaming: linkcost::is_roaming(self.status.modem.registration_state),
        }
    }

    pub(in crate::engine) fn budget_used(&self, now: Timestamp) -> u64 {
        let b: Budget = self
            .store
            .state(BUDGET_KEY)
            .ok()
            .flatten()
            .and_then(|s| serde_json::from_str(&s).ok())
            .unwrap_or_default();
        if b.month == month_of(now) { b.bytes } else { 0 }
    }

    /// Adds `bytes` sent or received over a costly link to this month's budget.
    pub(in crate::engine) fn count_costly_bytes(&mut self, now: Timestamp, bytes: u64) {
        let b = Budget {
            month: month_of(now),
            bytes: self.budget_used(now).saturating_add(bytes),
        };
        let json = serde_json::to_string(&b).unwrap_or_default();
        if let Err(e) = self.store.set_state(BUDGET_KEY, Some(&json)) {
            tracing::warn!(error = %e, "cannot record the download budget");
        }
    }
}
