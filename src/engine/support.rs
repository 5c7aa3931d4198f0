//! The support period and whether this device can still be updated (FS.25 SEC-0030/0040,
//! ETSI 5.3-13): from signed per-model metadata, else the configuration; and, from what the
//! verified repository publishes, whether the manufacturer still publishes for this device
//! ([`crate::policy::support::cannot_update`]) — shown like end of life.

use jiff::tz::TimeZone;

use super::{Clock, Engine, Ports};
use crate::metadata::client::Verified;
use crate::policy::support::{Publishing, SupportState, cannot_update, support_state};
use crate::status::{Staleness, Support};

/// Default `[device] support_warning`.
const DEFAULT_SUPPORT_WARNING: jiff::SignedDuration = jiff::SignedDuration::from_hours(90 * 24);
/// Store key of why this device cannot be updated any more (absent: it can).
pub(super) const CANNOT_UPDATE_KEY: &str = "cannot_update";

impl<C: Clock, P: Ports> Engine<C, P> {
    /// Judges a verified repository for SEC-0040. `listed_before`: this model's signed record
    /// was known before this check.
    pub(super) fn judge_publishing(&mut self, v: &Verified, listed_before: bool) {
        let hw = &self.config.device.hardware_id;
        let compatible = &self.status.rauc.compatible;
        let this_model_listed = v.devices.iter().any(|d| &d.meta.hardware_id == hw);
        let for_device = v
            .bundles
            .iter()
            .filter(|b| {
                &b.meta.compatible == compatible
                    && (b.meta.hardware_ids.is_empty() || b.meta.hardware_ids.contains(hw))
            })
            .count();
        let now = self.clock.now();
        let level = self
            .status
            .installed
            .as_ref()
            .map(|i| i.security_patch_level);
        let overdue =
            crate::policy::staleness(now, level, Some(now), &self.cadence) == Staleness::Overdue;
        let p = Publishing {
            bundles_total: v.bundles.len(),
            // Unknown while RAUC is away: no verdict on bundles then.
            bundles_for_device: if compatible.is_empty() { 1 } else { for_device },
            models_listed: v.devices.len(),
            this_model_listed,
            listed_before,
            overdue,
        };
        let reason = cannot_update(&p).map(str::to_owned);
        if reason == self.control.cannot_update {
            return;
        }
        if let Some(r) = &reason {
            tracing::warn!("this device can no longer be updated: {r}");
        }
        if let Err(e) = self.store.set_state(CANNOT_UPDATE_KEY, reason.as_deref()) {
            tracing::warn!(error = %e, "cannot record whether the device can be updated");
        }
        self.control.cannot_update = reason;
    }

    /// The support period from signed metadata, else the configuration.
    pub(super) fn refresh_support(&mut self) {
        let d = &self.config.device;
        let mut s = match &self.control.device_meta {
            Some(m) => Support {
                end: Some(m.support_end),
                replacement_text: m
                    .replacement
                    .as_ref()
                    .map(|r| r.text.clone())
                    .unwrap_or_default(),
                replacement_url: m
                    .replacement
                    .as_ref()
                    .and_then(|r| r.url.clone())
                    .unwrap_or_default(),
                origin: "signed-metadata".into(),
                ..Support::default()
            },
            None => Support {
                end: d.support_end.map(|p| p.0),
                replacement_text: d.replacement_text.clone().unwrap_or_default(),
                replacement_url: d
                    .replacement_url
                    .as_ref()
                    .map(|u| u.to_string())
                    .unwrap_or_default(),
                origin: if d.support_end.is_some() {
                    "configuration".into()
                } else {
                    String::new()
                },
                ..Support::default()
            },
        };
        let warning = d.support_warning.map_or(DEFAULT_SUPPORT_WARNING, |w| w.0);
        let today = self.clock.now().to_zoned(TimeZone::UTC).date();
        s.state = support_state(today, s.end, warning);
        if let Some(reason) = &self.control.cannot_update {
            s.state = SupportState::Ended;
            s.cannot_update = reason.clone();
        }
        self.status.support = s;
    }
}
