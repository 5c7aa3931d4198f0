//! The engine's cellular side: which subscription the SIM belongs to, which server an update
//! comes from ([`crate::policy::source`]), and whether the link lets a download start now
//! ([`crate::policy::linkcost`]).
//!
//! The manufacturer's repository stays the source of truth for what exists: the engine picks
//! the target from it ([`crate::policy::select`]) and only then asks where to get it. The
//! operator's repository of the active subscription is fetched in the same check; it counts
//! only as approvals. The subscription identity and the operator server's outage start are
//! persisted, so a restart neither forgets a SIM swap nor restarts the fallback clock.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use super::integrity::ProbeJob;
use super::ports::MetadataSource;
use super::{Clock, Engine, Internal, Notice, Ports};
use crate::metadata::client::{BundleTarget, MetadataError, RoleVersions, Verified};
use crate::policy::linkcost::{self, Download, LinkDecision, Waiting};
use crate::policy::source::{self, Decision, Observed, OperatorChannel, SourceInputs};
use crate::policy::spread::{self, Purpose};
use crate::status::{IntegrityState, Offer, UpdateSource, UpdateState};
use crate::store::NewHistoryEntry;

mod link;

/// Store key of the settled subscription (profile name or `none`).
pub(super) const SUBSCRIPTION_KEY: &str = "subscription";
/// Store key of the operator server's outage: `{"name": …, "since": …}`.
const OPERATOR_UNUSABLE_KEY: &str = "operator_unusable_since";
/// Source name of the manufacturer's server.
pub(super) const MANUFACTURER: &str = "manufacturer";

/// What the engine tracks for the cellular side.
#[derive(Debug, Default)]
pub(super) struct CellularState {
    /// The active operator's metadata from the last check that verified it.
    operator_verified: Option<Verified>,
    /// Since when the active operator's server is unusable.
    unusable_since: Option<Timestamp>,
    /// The manufacturer target an update is held back for (approval, outage, link), and
    /// the decision that holds it.
    held: Option<BundleTarget>,
    /// The last routing decision, shown as `UpdateSource` until the next check.
    routed: Option<UpdateSource>,
    /// The routing decision wakes the engine at this time (end of grace or outage limit).
    pub(super) wake_at: Option<Timestamp>,
    /// The running download goes over a metered or roaming link (counts against the budget).
    download_costly: bool,
    /// A download from the active operator's server failed (bundle missing or broken): its
    /// metadata verifying again does not end the outage, only a good download does.
    download_failed: bool,
    /// Targets whose approval timeout was recorded already (once per target per run).
    timed_out_seen: std::collections::BTreeSet<String>,
}

#[derive(Debug, Serialize, Deserialize)]
struct Outage {
    name: String,
    since: Timestamp,
}

impl<C: Clock, P: Ports> Engine<C, P> {
    /// Loads what the cellular side persisted (at construction).
    pub(super) fn load_cellular(&mut self) {
        let profile = self
            .store
            .state(SUBSCRIPTION_KEY)
            .ok()
            .flatten()
            .unwrap_or_default();
        self.status.subscription.profile = profile;
        let outage: Option<Outage> = self
            .store
            .state(OPERATOR_UNUSABLE_KEY)
            .ok()
            .flatten()
            .and_then(|s| serde_json::from_str(&s).ok());
        self.cellular.unusable_since = outage
            .filter(|o| o.name == self.status.subscription.profile)
            .map(|o| o.since);
    }

    /// The active operator profile: the settled subscription's, if it names a configured one.
    /// (Whether lost integrity drops it is the source policy's call.)
    fn active_operator(&self) -> Option<&crate::config::OperatorProfile> {
        let name = &self.status.subscription.profile;
        self.config.operators.iter().find(|p| &p.name == name)
    }

    fn operator_dropped(&self) -> bool {
        self.status.integrity.state == IntegrityState::Compromised
            && self.config.integrity.on_loss == crate::config::OnIntegrityLoss::DropOperatorChannel
    }

    /// What the check should also fetch: the active operator's repository and its floor.
    pub(super) fn operator_fetch(
        &self,
    ) -> Option<(String, std::sync::Arc<P::Metadata>, RoleVersions)> {
        if self.operator_dropped() {
            return None;
        }
        let name = self.active_operator()?.name.clone();
        let source = self.ports.operators.get(&name)?.clone();
        let floor = self
            .store
            .state(&floor_key(&name))
            .ok()
            .flatten()
            .and_then(|s| serde_json::from_str(&s).ok())
            .unwrap_or_default();
        Some((name, source, floor))
    }

    /// Spawns a check of the manufacturer's repository and, with an active operator, of the
    /// operator's (reported first, so the decision sees both).
    pub(super) fn spawn_check(&mut self, floor: RoleVersions, probe: Option<ProbeJob>) {
        let metadata = self.ports.metadata.clone();
        let operator = self.operator_fetch();
        let tx = self.internal_tx.clone();
        self.spawn(async move {
            if let Some(job) = probe {
                // Sent before the check's own result on the same channel, so the engine
                // judges what the check finds with this verdict.
                let _ = tx.send(Internal::Probed(job.run().await));
            }
            match operator {
                Some((name, source, op_floor)) => {
                    let (op, mfr) = tokio::join!(source.fetch(op_floor), metadata.fetch(floor));
                    let _ = tx.send(Internal::OperatorChecked(name, Box::new(op)));
                    Internal::Checked(Box::new(mfr))
                }
                None => Internal::Checked(Box::new(metadata.fetch(floor).await)),
            }
        });
    }

    /// The operator's repository verified or failed.
    pub(super) fn on_operator_checked(
        &mut self,
        name: String,
        result: Result<Verified, MetadataError>,
    ) {
        if self.active_operator().map(|p| &p.name) != Some(&name) {
            // The subscription changed while the check ran: its approvals do not apply.
            return;
        }
        let now = self.clock.now();
        match result {
            Ok(v) => {
                let floor = serde_json::to_string(&v.versions).unwrap_or_default();
                if let Err(e) = self.store.set_state(&floor_key(&name), Some(&floor)) {
                    tracing::warn!(error = %e, "cannot record the operator's metadata versions");
                }
                self.cellular.operator_verified = Some(v);
                if !self.cellular.download_failed {
                    self.set_unusable(None);
                }
            }
            // This device's disk, not the operator's server: no outage clock, no fallback.
            Err(e) if e.is_storage() => {
                tracing::warn!(operator = %name, "{e}");
            }
            Err(e) => {
                tracing::warn!(operator = %name, "operator server unusable: {e}");
                self.cellular.operator_verified = None;
                self.mark_operator_unusable(now);
            }
        }
    }

    /// Starts (or keeps) the active operator's outage clock.
    pub(super) fn mark_operator_unusable(&mut self, now: Timestamp) {
        if self.cellular.unusable_since.is_none() {
            self.set_unusable(Some(now));
        }
    }

    fn set_unusable(&mut self, since: Option<Timestamp>) {
        if self.cellular.unusable_since == since {
            return;
        }
        self.cellular.unusable_since = since;
        let json = since.map(|since| {
            serde_json::to_string(&Outage {
                name: self.status.subscription.profile.clone(),
                since,
            })
            .unwrap_or_default()
        });
        if let Err(e) = self.store.set_state(OPERATOR_UNUSABLE_KEY, json.as_deref()) {
            tracing::warn!(error = %e, "cannot record the operator server's outage");
        }
    }

    /// ModemManager's view changed: settle the subscription, re-judge a held download.
    pub(super) fn on_modem_changed(&mut self) {
        match source::subscription(&self.status.modem, &self.config.operators) {
            Observed::Unknown => self.status.subscription.known = false,
            Observed::Known(profile) => {
                self.status.subscription.known = true;
                let profile = profile.unwrap_or_else(|| "none".to_owned());
                if profile != self.status.subscription.profile {
                    self.subscription_changed(profile);
                }
            }
        }
        self.retry_held();
    }

    fn subscription_changed(&mut self, profile: String) {
        let previous = std::mem::replace(&mut self.status.subscription.profile, profile.clone());
        if let Err(e) = self.store.set_state(SUBSCRIPTION_KEY, Some(&profile)) {
            self.store_failed("cannot record the subscription", e);
            return;
        }
        // The old operator's approvals and outage no longer say anything.
        self.cellular.operator_verified = None;
        self.cellular.download_failed = false;
        self.set_unusable(None);
        self.cellular.routed = None;
        if previous.is_empty() {
            // The first SIM this device sees is where it starts, not a change.
            tracing::info!(subscription = %profile, "subscription detected");
            return;
        }
        let detail = format!("subscription changed from {previous} to {profile}");
        tracing::info!("{detail}");
        let entry = NewHistoryEntry {
            at: self.clock.now(),
            kind: "event".to_owned(),
            action: "subscription-changed".to_owned(),
            version: None,
            security_patch_level: None,
            detail,
            cves: Vec::new(),
        };
        if let Err(e) = self.store.append_history(&entry) {
            self.store_failed("cannot record the subscription change", e);
        }
        self.notify(Notice::SubscriptionChanged(SubscriptionChange {
            previous,
            profile,
        }));
        // The new channel decides from now on: look again (the check routes anew).
        if !self.busy && self.pending.is_none() && self.ports.metadata.configured() {
            self.start_check();
        }
    }

    /// NetworkManager's view changed: re-judge a download held back by the link.
    pub(super) fn on_network_changed(&mut self) {
        self.retry_held();
    }

    /// Re-routes the held target when nothing runs (the link may allow it now).
    fn retry_held(&mut self) {
        if self.busy || self.pending.is_some() {
            return;
        }
        if let Some(target) = self.cellular.held.clone() {
            let now = self.clock.now();
            self.route(now, target);
            self.settle_state_after_route();
        }
    }

    fn settle_state_after_route(&mut self) {
        if self.pending.is_none() && !self.busy {
            self.status.state = if self.cellular.held.is_some() {
                UpdateState::Deferred
            } else if self.status.available.is_some() {
                UpdateState::Available
            } else {
                UpdateState::Idle
            };
        }
    }

    /// An update is held back (waiting for approval, outage, link): the state to show.
    pub(super) fn held(&self) -> bool {
        self.cellular.held.is_some()
    }

    /// Forgets the last routing decision (a new check decides again).
    pub(super) fn clear_route(&mut self) {
        self.cellular.routed = None;
        self.cellular.held = None;
        self.cellular.wake_at = None;
    }

    /// Decides where the manufacturer's `target` comes from and whether the link lets it
    /// download now; starts the download or holds it back.
    pub(super) fn route(&mut self, now: Timestamp, target: BundleTarget) {
        // With integrity lost the policy drops this channel itself (and says so).
        let operator = self.active_operator();
        let approved_target = self.cellular.operator_verified.as_ref().and_then(|v| {
            v.bundles
                .iter()
                .find(|b| {
                    b.name == target.name && b.length == target.length && b.sha256 == target.sha256
                })
                .cloned()
        });
        let inputs = SourceInputs {
            operator: operator.map(|p| OperatorChannel {
                name: &p.name,
                // The fleet does not all fall back to the manufacturer in the same minute.
                approval_grace: p.approval_grace.0.saturating_add(spread::offset(
                    self.seed,
                    Purpose::ApprovalEnd,
                    self.config.spread.approval.0,
                )),
                fallback_after: p.fallback_after.0,
                approved: approved_target.is_some(),
                unusable_since: self.cellular.unusable_since,
            }),
            integrity: self.status.integrity.state,
            on_integrity_loss: self.config.integrity.on_loss,
            released: target.meta.released,
        };
        let decision = source::decide(now, &inputs);
        let (offer, url, reason) = match decision {
            Decision::Wait { until, reason } => {
                tracing::info!(target = %target.name, %until, "{reason}");
                let p = operator.map(|p| (p.name.clone(), p.url.to_string()));
                let (name, url) = p.unwrap_or_default();
                self.hold_until(target, until, name, url, reason);
                return;
            }
            Decision::Operator { name, reason } => {
                let url = operator.map(|p| p.url.to_string()).unwrap_or_default();
                let t = approved_target.unwrap_or(target.clone());
                (Offer::new(t, name), url, reason)
            }
            Decision::Manufacturer { reason } => {
                if reason.starts_with(source::APPROVAL_TIMED_OUT) {
                    self.record_timeout(now, &target, &reason);
                }
                let url = self
                    .config
                    .manufacturer
                    .as_ref()
                    .map(|m| m.url.to_string())
                    .unwrap_or_default();
                let offer = Offer::new(target.clone(), MANUFACTURER.to_owned());
                (offer, url, reason)
            }
        };
        self.cellular.wake_at = None;
        let wave = self.wave_start().and_then(|w| {
            w.checked_add(spread::offset(
                self.seed,
                Purpose::WaveStart,
                self.config.spread.wave.0,
            ))
            .ok()
        });
        let skip = self.config.check.wave_skip_severity;
        let fixes = offer.target.meta.max_severity();
        if let Some(until) = crate::policy::wave::wait_until(now, wave, fixes, skip) {
            // Looked at again when the wave starts (the engine wakes for `wake_at`).
            let reason = format!("{reason}; waiting for this model's rollout wave");
            tracing::info!(target = %target.name, %until, "{reason}");
            self.hold_until(target, until, offer.source, url, reason);
            return;
        }
        let link = self.link();
        let used = self.budget_used(now);
        let download = Download {
            bytes: offer.target.length,
            max_severity: offer.target.meta.max_severity(),
        };
        let waiting = Waiting {
            now,
            since: self.link_deferred_since(),
            user_asked: self.install_requested(),
        };
        let decision = linkcost::judge(&self.config.link_cost, link, download, used, waiting);
        let deferred = match &decision {
            LinkDecision::Proceed => String::new(),
            LinkDecision::Defer(d) => d.reason.clone(),
        };
        self.cellular.routed = Some(UpdateSource {
            source: offer.source.clone(),
            url,
            reason,
            waiting_until: None,
            deferred,
        });
        match decision {
            LinkDecision::Proceed => {
                self.cellular.held = None;
                self.cellular.download_costly = link.costly();
                self.set_link_deferred_since(None);
                self.start_download(offer);
            }
            LinkDecision::Defer(d) => self.defer_for_link(now, target, offer, d),
        }
    }

    /// Holds `target` back until `until` (the engine wakes then and routes it again), showing
    /// where it would come from and why it waits.
    fn hold_until(
        &mut self,
        target: BundleTarget,
        until: Timestamp,
        source: String,
        url: String,
        reason: String,
    ) {
        self.cellular.routed = Some(UpdateSource {
            source,
            url,
            reason,
            waiting_until: Some(until),
            deferred: String::new(),
        });
        self.cellular.wake_at = Some(until);
        self.cellular.held = Some(target);
    }

    fn record_timeout(&mut self, now: Timestamp, target: &BundleTarget, reason: &str) {
        if !self.cellular.timed_out_seen.insert(target.name.clone()) {
            return;
        }
        tracing::warn!(target = %target.name, "{reason}");
        let m = &target.meta;
        let entry = NewHistoryEntry {
            at: now,
            kind: m.kind.as_str().to_owned(),
            action: "operator-approval-timed-out".to_owned(),
            version: Some(m.version.clone()),
            security_patch_level: Some(m.security_patch_level),
            detail: format!(
                "{}: {reason}; installing from the manufacturer",
                target.name
            ),
            cves: m.cves.iter().map(|c| c.id.clone()).collect(),
        };
        if let Err(e) = self.store.append_history(&entry) {
            self.store_failed("cannot record the approval timeout", e);
        }
    }

    /// A download from `source` finished: a good operator download ends its outage; the bytes
    /// count against the budget if the link was costly.
    pub(super) fn count_download(&mut self, source: &str, bytes: u64) {
        if source != MANUFACTURER && std::mem::take(&mut self.cellular.download_failed) {
            self.set_unusable(None);
        }
        if !std::mem::take(&mut self.cellular.download_costly) {
            return;
        }
        let now = self.clock.now();
        self.count_costly_bytes(now, bytes);
    }

    /// A download from an operator's server failed: its outage clock starts.
    pub(super) fn operator_download_failed(&mut self, source: &str) {
        if source != MANUFACTURER && self.active_operator().is_some_and(|p| p.name == source) {
            self.cellular.download_failed = true;
            let now = self.clock.now();
            self.mark_operator_unusable(now);
        }
    }

    /// `UpdateSource` as it stands: the last routing decision, or the channel in use.
    pub(super) fn refresh_source(&mut self) {
        if let Some(r) = &self.cellular.routed {
            self.status.source = r.clone();
            return;
        }
        let sub = &self.status.subscription;
        self.status.source = match self.active_operator() {
            _ if !self.ports.metadata.configured() => UpdateSource::default(),
            Some(p) if self.operator_dropped() => UpdateSource {
                source: MANUFACTURER.to_owned(),
                url: self.manufacturer_url(),
                reason: format!(
                    "device integrity compromised: operator {} channel dropped",
                    p.name
                ),
                ..UpdateSource::default()
            },
            Some(p) => UpdateSource {
                source: p.name.clone(),
                url: p.url.to_string(),
                reason: format!(
                    "subscription {}{}; security updates need its approval within {:#}",
                    p.name,
                    if sub.known { "" } else { " (last known)" },
                    p.approval_grace.0
                ),
                ..UpdateSource::default()
            },
            None => UpdateSource {
                source: MANUFACTURER.to_owned(),
                url: self.manufacturer_url(),
                reason: "no operator channel for this subscription".to_owned(),
                ..UpdateSource::default()
            },
        };
    }

    fn manufacturer_url(&self) -> String {
        self.config
            .manufacturer
            .as_ref()
            .map(|m| m.url.to_string())
            .unwrap_or_default()
    }
}

fn floor_key(operator: &str) -> String {
    crate::store::floors::operator_floor_key(operator)
}

/// A subscription change (`SubscriptionChanged` signal).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionChange {
    /// The profile before (`none` for no profile).
    pub previous: String,
    /// The profile now (`none` for no profile).
    pub profile: String,
}
