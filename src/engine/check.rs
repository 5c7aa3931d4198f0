//! The check step of the update lifecycle: verify the metadata (with trusted time), choose
//! what to offer, and record the result; `lifecycle.rs` takes the offer on from there
//! (download, install, reboot).

use jiff::Timestamp;

use super::lifecycle::offer_message;
use super::ports::MetadataSource;
use super::{
    Clock, Engine, FLOOR_KEY, LAST_VERIFIED_KEY, LATEST_KNOWN_TIME_KEY, Ports, ROLLED_BACK_KEY,
};
use crate::metadata::client::{MetadataError, Verified};
use crate::metadata::schema::BundleMeta;
use crate::policy::select::{Candidate, DeviceFacts, select};
use crate::policy::time::{self, Trusted, Verdict};
use crate::status::{CheckRecord, UpdateState};

impl<C: Clock, P: Ports> Engine<C, P> {
    pub(super) fn start_check(&mut self) {
        let now = self.clock.now();
        // Every check looks at the device's integrity first: its decisions depend on it.
        let probe = self.claim_probe();
        self.checks.last_attempt = Some(now);
        if !self.ports.metadata.configured() {
            // Nothing will change until the configuration does: wait a full interval.
            self.checks.consecutive_failures = 0;
            self.record_check(CheckRecord {
                at: now,
                verified: false,
                message: "no update source configured".to_owned(),
            });
            tracing::info!("no update source configured");
            self.run_probe(probe);
            return;
        }
        // Expiry checks mean nothing with a clock in the past: a replayed, long-expired
        // repository would look fresh. Unless trusted time settles it (`policy::time`) the
        // check waits for the clock — except that an HTTPS server's `Date` may settle it,
        // so with an HTTPS source the check runs and is judged when it returns.
        if let Verdict::Refuse(message) =
            time::judge(now, self.latest_known_time(), self.network_time(now))
            && !self.https_source()
        {
            self.checks.consecutive_failures += 1;
            tracing::warn!("{message}");
            self.record_check(CheckRecord {
                at: now,
                verified: false,
                message,
            });
            self.run_probe(probe);
            return;
        }
        if self.pending.is_none() {
            if matches!(
                self.status.state,
                UpdateState::Failed | UpdateState::RolledBack
            ) {
                self.outcome = Some(self.status.state);
            }
            self.status.state = UpdateState::Checking;
        }
        let floor = self.floor.clone();
        self.checking = true;
        self.spawn_check(floor, probe);
    }

    pub(super) fn latest_known_time(&self) -> Option<Timestamp> {
        self.store
            .state(LATEST_KNOWN_TIME_KEY)
            .ok()
            .flatten()
            .and_then(|s| s.parse().ok())
    }

    pub(super) fn on_checked(&mut self, result: Result<Verified, MetadataError>) {
        let now = self.clock.now();
        match result {
            Ok(verified) => self.on_verified(now, verified),
            Err(e) if e.is_storage() => {
                // The device's disk, not the server: what verified before still stands, and
                // the check says what to do rather than "did not verify".
                self.checks.consecutive_failures += 1;
                let message = format!("could not check for updates: {e}");
                self.storage_error = Some(message.clone());
                self.check_not_verified(now, message);
            }
            Err(e) => {
                self.checks.consecutive_failures += 1;
                if !e.is_retryable() {
                    // The server presents metadata that fails verification (rollback, freeze,
                    // bad signatures): what was verified before no longer vouches for now.
                    self.last_verified = None;
                    if let Err(se) = self.store.set_state(LAST_VERIFIED_KEY, None) {
                        self.store_failed("cannot record the check", se);
                    }
                }
                let mut message = format!("could not verify update metadata: {e}");
                // Checked only for the HTTPS server's Date (see start_check): when that did not
                // come, the clock is the reason to give — by a clock in 1970 no certificate is
                // valid yet, and "certificate not valid yet" alone does not say what to fix.
                if let Verdict::Refuse(clock) =
                    time::judge(now, self.latest_known_time(), self.network_time(now))
                {
                    message = format!(
                        "{clock}; the update server's HTTPS Date did not settle it ({message})"
                    );
                }
                self.check_not_verified(now, message);
            }
        }
    }

    /// The manufacturer's server is reached over HTTPS (its `Date` is trusted time).
    pub(super) fn https_source(&self) -> bool {
        self.config
            .manufacturer
            .as_ref()
            .is_some_and(|m| m.url.scheme() == "https")
    }

    /// The cellular network's time now, from the modem (trusted time).
    pub(super) fn network_time(&self, now: Timestamp) -> Option<Trusted> {
        let offset = self.status.modem.network_time_offset_s?;
        let at = now
            .checked_add(jiff::SignedDuration::from_secs(offset))
            .ok()?;
        Some(Trusted {
            at,
            source: time::Source::Network,
        })
    }

    /// A check whose metadata cannot be trusted: said in the journal and `LastCheckResult`,
    /// recorded as not verified; nothing from this source stands, including an earlier offer.
    pub(super) fn check_not_verified(&mut self, now: Timestamp, message: String) {
        tracing::warn!("{message}");
        if self.pending.is_none() {
            self.status.available = None;
        }
        self.status.last_error = message.clone();
        self.record_check(CheckRecord {
            at: now,
            verified: false,
            message,
        });
        self.settle_state();
    }

    /// Which time this verified metadata is judged by (`policy::time`); `Err` with the
    /// reason when the clock cannot be trusted or the metadata is expired by trusted time.
    pub(super) fn judge_time(&self, now: Timestamp, v: &Verified) -> Result<Timestamp, String> {
        // The network's time first: it does not depend on the server being judged.
        let trusted = self.network_time(now).or(v.server_time.map(|at| Trusted {
            at,
            source: time::Source::Https,
        }));
        match time::judge(now, self.latest_known_time(), trusted) {
            Verdict::Refuse(message) => Err(message),
            Verdict::Use {
                now: when,
                ratchet,
                recovered,
            } => {
                if when != now {
                    tracing::info!(
                        system_clock = %now,
                        trusted = %when,
                        source = trusted.map_or("", |t| t.source.as_str()),
                        "the system clock is wrong: the metadata is judged by trusted time"
                    );
                }
                if recovered {
                    tracing::info!(
                        %now,
                        "trusted time confirms the system clock: the latest known time, set \
                         by a clock that ran ahead, is corrected"
                    );
                }
                // The clock is wrong (1970): tough judged expiry by it, so judge it again.
                if v.expires < when {
                    return Err(format!(
                        "could not verify update metadata: it expired at {} (trusted time is \
                         {when}): replayed or stale metadata refused",
                        v.expires
                    ));
                }
                Ok(ratchet)
            }
        }
    }

    pub(super) fn on_verified(&mut self, now: Timestamp, v: Verified) {
        let latest = match self.judge_time(now, &v) {
            Ok(ratchet) => ratchet,
            Err(message) => {
                self.checks.consecutive_failures += 1;
                self.check_not_verified(now, message);
                return;
            }
        };
        self.checks.consecutive_failures = 0;
        // The source refused anything below the floor, except roles whose keys rotated
        // (TUF's fast-forward recovery), so what verified is the new floor.
        self.floor = v.versions.clone();
        let floor_json = serde_json::to_string(&self.floor).unwrap_or_default();
        let saved = self
            .store
            .set_state(FLOOR_KEY, Some(&floor_json))
            .and_then(|()| {
                self.store
                    .set_state(LAST_VERIFIED_KEY, Some(&now.to_string()))
            })
            .and_then(|()| {
                self.store
                    .set_state(LATEST_KNOWN_TIME_KEY, Some(&latest.to_string()))
            });
        if let Err(e) = saved {
            // Verified, but not recorded: nothing may act on it (a download under a rollback
            // floor that a restart would forget), and the check says so instead of keeping
            // the previous result.
            self.store_failed("cannot record verified metadata", e);
            let message = format!(
                "metadata verified but could not be recorded ({}); nothing acted on",
                self.status.last_error
            );
            tracing::warn!(source = %v.source, "{message}");
            self.record_check(CheckRecord {
                at: now,
                verified: false,
                message,
            });
            return;
        }
        self.last_verified = Some(now);
        self.status.verified = crate::status::VerifiedMetadata {
            at: Some(now),
            versions: self.floor.clone(),
        };
        self.status.last_error.clear();
        let listed_before = self.control.device_meta.is_some();
        self.remember_device(&v.devices);
        self.judge_publishing(&v, listed_before);

        for r in &v.refused {
            self.record_refusal(
                now,
                &r.name,
                None,
                &format!("invalid metadata: {}", r.reason),
            );
        }

        let compatible = self.status.rauc.compatible.clone();
        let message = if compatible.is_empty() {
            // Judged as soon as RAUC says what this device is (see `judge_deferred`).
            self.unjudged = Some(v.clone());
            "verified; RAUC is unavailable, so which updates apply is not known yet".to_owned()
        } else {
            self.unjudged = None;
            self.choose(now, &v, &compatible)
        };
        tracing::info!(source = %v.source, "{message}");
        self.record_check(CheckRecord {
            at: now,
            verified: true,
            message,
        });
        if !self.busy {
            self.settle_state();
        }
    }

    /// The state once no step runs: what the pending record says; `available` for an offer
    /// waiting for the user; otherwise the last outcome (`failed`, `rolled-back`) stays
    /// visible until something new happens, then `idle`.
    pub(super) fn settle_state(&mut self) {
        let settled = self.state_for_pending();
        self.status.state = match settled {
            // A held update may be on offer too (announced while it waits for the link).
            UpdateState::Idle if self.held() => UpdateState::Deferred,
            UpdateState::Idle if self.status.available.is_some() => UpdateState::Available,
            UpdateState::Idle => self.outcome.unwrap_or(UpdateState::Idle),
            other => other,
        };
    }

    /// Judges metadata verified while RAUC was unavailable, now that RAUC is back.
    pub(super) fn judge_deferred(&mut self) {
        if self.busy || self.pending.is_some() || self.status.rauc.compatible.is_empty() {
            return;
        }
        let Some(v) = self.unjudged.take() else {
            return;
        };
        let now = self.clock.now();
        let compatible = self.status.rauc.compatible.clone();
        let message = self.choose(now, &v, &compatible);
        tracing::info!(source = %v.source, "{message}");
        if let Some(check) = &mut self.status.last_check {
            check.message = message;
            let record = check.clone();
            if let Err(e) = self.store.set_last_check(&record) {
                self.store_failed("cannot record the check", e);
            }
        }
        if !self.busy {
            self.settle_state();
        }
    }

    /// Applies the selection policy to a verified repository; returns the check's message.
    pub(super) fn choose(&mut self, now: Timestamp, v: &Verified, compatible: &str) -> String {
        self.clear_route();
        self.adopt_booted_release(now, v, compatible);
        let installed = self.status.installed.clone();
        let facts = DeviceFacts {
            compatible,
            hardware_id: &self.config.device.hardware_id,
            feature_release: installed.as_ref().map_or("", |i| &i.feature_release),
            installed_version: installed.as_ref().map_or("", |i| &i.version),
            patch_level: installed.as_ref().map(|i| i.security_patch_level),
        };
        let blocked = self.rolled_back_targets();
        let candidates: Vec<Candidate<'_>> = v
            .bundles
            .iter()
            .filter(|b| !blocked.contains(&hex::encode(b.sha256)))
            .map(|b| Candidate {
                name: &b.name,
                meta: &b.meta,
            })
            .collect();
        let selection = select(&candidates, &facts);
        let refusals: Vec<(String, String)> = selection
            .refused
            .iter()
            .map(|(c, why)| (c.name.to_owned(), why.to_string()))
            .collect();
        let chosen = selection.chosen.map(|c| c.name.to_owned());
        for (name, why) in &refusals {
            let target = v.bundles.iter().find(|b| &b.name == name);
            self.record_refusal(now, name, target.map(|t| &t.meta), why);
        }
        let Some(name) = chosen else {
            if self.pending.is_none() {
                self.status.available = None;
            }
            return if refusals.is_empty() {
                "verified; no newer security update".to_owned()
            } else {
                format!("verified; refused: {}", refusals[0].1)
            };
        };
        let Some(target) = v.bundles.iter().find(|b| b.name == name).cloned() else {
            return "verified; no newer security update".to_owned();
        };
        let message = offer_message(&target.meta, "available");
        if self.pending.is_none() && !self.busy {
            // Which server it comes from, and whether the link allows it now.
            self.route(now, target);
        }
        message
    }

    /// A check said `meta` was available and it is now installed: the check's result says
    /// so, in the status and in the store, rather than sending the user looking for an update
    /// that is already there. Any other result (a later check's) is left as it is.
    pub(super) fn note_installed_in_last_check(&mut self, meta: &BundleMeta) {
        let Some(check) = &mut self.status.last_check else {
            return;
        };
        if check.message != offer_message(meta, "available") {
            return;
        }
        check.message = offer_message(meta, "installed");
        let record = check.clone();
        if let Err(e) = self.store.set_last_check(&record) {
            self.store_failed("cannot record the check", e);
        }
    }

    /// Targets (by SHA-256) that were installed and rolled back on this device: never
    /// installed again automatically, or a bad update would boot-loop the device daily.
    pub(super) fn rolled_back_targets(&self) -> Vec<String> {
        self.store
            .state(ROLLED_BACK_KEY)
            .ok()
            .flatten()
            .and_then(|s| serde_json::from_str(&s).ok())
            .unwrap_or_default()
    }

    // ---- download -------------------------------------------------------------------
}
