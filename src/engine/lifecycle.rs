//! The update lifecycle: check → download (verified) → announce → install → reboot →
//! confirm, or fail / roll back. Every step that has a side effect is preceded by writing
//! the [`Pending`] record, so a restart at any point resumes or settles cleanly and never
//! installs a target twice. See ARCHITECTURE.md, "Update lifecycle". This file covers the
//! way up to the reboot; what happens after it is in `confirm.rs`.

use jiff::Timestamp;

use super::pending::{Pending, Phase};
use super::ports::{BundleFetcher, FetchFailure, MetadataSource, System};
use super::{
    Clock, Engine, FLOOR_KEY, Internal, LAST_VERIFIED_KEY, LATEST_KNOWN_TIME_KEY, Notice, Ports,
    ROLLED_BACK_KEY, stall,
};
use crate::metadata::client::{MetadataError, Verified};
use crate::metadata::schema::BundleMeta;
use crate::policy::select::{Candidate, DeviceFacts, select};
use crate::policy::time::{self, Trusted, Verdict};
use crate::rauc::Rauc;
use crate::status::{CheckRecord, Offer, UpdateState};

impl<C: Clock, P: Ports> Engine<C, P> {
    /// The update on offer while a persisted record says it is being installed.
    pub(super) fn offer_for_pending(&self) -> Option<Offer> {
        self.pending
            .as_ref()
            .filter(|p| matches!(p.phase, Phase::Installing | Phase::Installed))
            .map(|p| Offer::new(p.target.clone(), p.source.clone()))
    }

    /// The state a persisted record puts the agent in.
    pub(super) fn state_for_pending(&self) -> UpdateState {
        match self.pending.as_ref().map(|p| p.phase) {
            None => UpdateState::Idle,
            Some(Phase::Downloading) => UpdateState::Downloading,
            Some(Phase::Installing) => UpdateState::Installing,
            Some(Phase::Installed) => UpdateState::RebootRequired,
            Some(Phase::Confirming) => UpdateState::Confirming,
            Some(Phase::RollingBack) => UpdateState::RolledBack,
        }
    }

    /// Picks up a persisted update after a start.
    pub(super) fn resume(&mut self) {
        let Some(p) = self.pending.clone() else {
            return;
        };
        tracing::info!(target = %p.target.name, phase = ?p.phase, "resuming update");
        match p.phase {
            Phase::Downloading => self.start_download(Offer::new(p.target, p.source)),
            _ => self.on_rauc_changed(),
        }
    }

    /// Persists `pending` (or its absence) before the caller acts on it.
    pub(super) fn save_pending(&mut self, pending: Option<Pending>) -> bool {
        let json = pending.as_ref().map(Pending::to_json);
        match self.store.set_state(super::pending::KEY, json.as_deref()) {
            Ok(()) => {
                self.pending = pending;
                true
            }
            Err(e) => {
                self.store_failed("cannot record the update's progress", e);
                false
            }
        }
    }

    pub(super) fn spawn(&mut self, f: impl Future<Output = Internal> + Send + 'static) {
        self.spawn_within(None, f);
    }

    /// [`Engine::spawn`] for a step that must end within `limit` (see `stall.rs`).
    pub(super) fn spawn_within(
        &mut self,
        limit: Option<std::time::Duration>,
        f: impl Future<Output = Internal> + Send + 'static,
    ) {
        self.busy = true;
        self.step_deadline = limit.map(|l| tokio::time::Instant::now() + l);
        let tx = self.internal_tx.clone();
        tokio::spawn(async move {
            let _ = tx.send(f.await);
        });
    }

    pub(super) fn on_internal(&mut self, event: Internal) {
        self.handle_internal(event);
        // A RAUC change that arrived while a step ran is looked at now.
        if !self.busy && std::mem::take(&mut self.rauc_changed_while_busy) {
            self.on_rauc_changed();
        }
        // What waited for the step (an Install() during a check) is looked at now.
        if !self.busy {
            self.reconsider();
        }
    }

    fn handle_internal(&mut self, event: Internal) {
        match event {
            Internal::Progress(p) => self.status.progress = p,
            Internal::OperatorChecked(name, result) => self.on_operator_checked(name, *result),
            Internal::Checked(result) => {
                self.busy = false;
                self.checking = false;
                self.on_checked(*result);
            }
            Internal::Downloaded(result) => {
                self.busy = false;
                self.on_downloaded(result);
            }
            Internal::Installed(result) => {
                self.busy = false;
                self.on_installed(result);
            }
            Internal::HealthChecked(result) => {
                self.busy = false;
                self.on_confirmation(result);
            }
            Internal::Probed(result) => self.on_probed(result),
            Internal::ReportSigned(reason, result) => self.on_report_signed(reason, result),
            Internal::ReportPosted(answer, costly) => self.on_report_posted(answer, costly),
            Internal::RaucUnresponsive(message) => self.on_rauc_unresponsive(message),
        }
    }

    // ---- check ----------------------------------------------------------------------

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

    fn latest_known_time(&self) -> Option<Timestamp> {
        self.store
            .state(LATEST_KNOWN_TIME_KEY)
            .ok()
            .flatten()
            .and_then(|s| s.parse().ok())
    }

    fn on_checked(&mut self, result: Result<Verified, MetadataError>) {
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
    fn https_source(&self) -> bool {
        self.config
            .manufacturer
            .as_ref()
            .is_some_and(|m| m.url.scheme() == "https")
    }

    /// The cellular network's time now, from the modem (trusted time).
    fn network_time(&self, now: Timestamp) -> Option<Trusted> {
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
    fn check_not_verified(&mut self, now: Timestamp, message: String) {
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
    fn judge_time(&self, now: Timestamp, v: &Verified) -> Result<Timestamp, String> {
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

    fn on_verified(&mut self, now: Timestamp, v: Verified) {
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
    fn settle_state(&mut self) {
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
    fn choose(&mut self, now: Timestamp, v: &Verified, compatible: &str) -> String {
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

    pub(super) fn start_download(&mut self, offer: Offer) {
        let pending = Pending {
            phase: Phase::Downloading,
            target: offer.target.clone(),
            source: offer.source.clone(),
            started: self
                .pending
                .as_ref()
                .map_or_else(|| self.clock.now(), |p| p.started),
            boot_id: String::new(),
            booted_slot: String::new(),
            reason: String::new(),
        };
        if !self.save_pending(Some(pending)) {
            return;
        }
        // Partial downloads of other (older, withdrawn) targets are stale now.
        self.ports.fetcher.cleanup(Some(&offer.target));
        tracing::info!(target = %offer.target.name, bytes = offer.target.length, "downloading");
        self.status.state = UpdateState::Downloading;
        self.outcome = None;
        self.status.progress = 0;
        let fetcher = self.ports.fetcher.clone();
        let tx = self.internal_tx.clone();
        let target = offer.target;
        self.spawn(async move {
            let mut last = u32::MAX;
            let progress = Box::new(move |done: u64, total: u64| {
                let pct = (done.saturating_mul(100) / total.max(1)).min(100) as u32;
                if pct != last {
                    last = pct;
                    let _ = tx.send(Internal::Progress(pct));
                }
            });
            Internal::Downloaded(fetcher.fetch(&target, progress).await)
        });
    }

    fn on_downloaded(&mut self, result: Result<std::path::PathBuf, FetchFailure>) {
        let Some(p) = self.pending.clone() else {
            return;
        };
        let path = match result {
            Ok(path) => path,
            Err(f) => {
                self.checks.consecutive_failures += 1;
                let message = format!("download of {} failed: {f}", p.target.name);
                tracing::warn!("{message}");
                // The device's disk is no fault of the server or the bundle: no fallback to
                // another server, no refusal (the partial file stays for the next check).
                if !f.storage {
                    self.operator_download_failed(&p.source);
                }
                if !f.retryable && !f.storage {
                    let now = self.clock.now();
                    self.record_refusal(now, &p.target.name, Some(&p.target.meta), &f.message);
                }
                self.status.last_error = message;
                if self.save_pending(None) {
                    self.status.state = UpdateState::Failed;
                }
                return;
            }
        };
        self.count_download(&p.source, p.target.length);
        // Verified bytes: now the update may be announced (COM-0010).
        let offer = Offer::new(p.target.clone(), p.source.clone());
        // Announced once: an update announced while it waited for the link is not new.
        let announced = self
            .status
            .available
            .as_ref()
            .is_some_and(|a| a.target == offer.target && a.source == offer.source);
        self.status.available = Some(offer.clone());
        if !announced {
            self.notify(Notice::UpdateAvailable(Box::new(offer)));
        }
        if self.may_install_now() {
            self.start_install(path);
        } else {
            // Waits for the user, a postponement's end or an inhibitor's release; the
            // download stays cached.
            self.save_pending(None);
            self.status.state = self.waiting_state();
        }
    }

    // ---- install --------------------------------------------------------------------

    pub(super) fn start_install(&mut self, bundle: std::path::PathBuf) {
        let Some(mut p) = self.pending.clone() else {
            return;
        };
        p.phase = Phase::Installing;
        p.boot_id = self.ports.system.boot_id();
        p.booted_slot = self.status.rauc.boot_slot.clone();
        // Persisted before RAUC is asked: a restart from here on never installs twice.
        if !self.save_pending(Some(p.clone())) {
            return;
        }
        self.end_postponement();
        tracing::info!(target = %p.target.name, "installing");
        self.status.state = UpdateState::Installing;
        self.status.progress = 0;
        let rauc = self.ports.rauc.clone();
        let tx = self.internal_tx.clone();
        let meta = p.target.meta.clone();
        // Checking the bundle and installing it each read all of it (see `stall.rs`).
        let limit = stall::bundle_limit(&self.config.install, p.target.length);
        self.spawn_within(Some(limit * 2), async move {
            // RAUC reads the bundle's own manifest: it must say what the signed metadata says,
            // or this is not the bundle the publisher described.
            let Ok(checked) = tokio::time::timeout(limit, rauc.bundle_info(&bundle)).await else {
                let what = "checking the bundle";
                let message = stall::rauc_stopped_answering(&tx, what, limit, None);
                return Internal::Installed(Err(message));
            };
            match checked {
                Ok(info) if info.compatible == meta.compatible && info.version == meta.version => {}
                Ok(info) => {
                    return Internal::Installed(Err(format!(
                        "bundle contents do not match the signed metadata: it is compatible \
                         {:?} version {:?}, metadata says {:?} {:?}; nothing installed",
                        info.compatible, info.version, meta.compatible, meta.version
                    )));
                }
                Err(e) => return Internal::Installed(Err(format!("RAUC refused the bundle: {e}"))),
            }
            let mut last = None;
            let install = rauc.install_and_wait(&bundle, |progress| {
                let pct = progress.percentage.clamp(0, 100) as u32;
                last = Some(pct);
                let _ = tx.send(Internal::Progress(pct));
            });
            let Ok(result) = tokio::time::timeout(limit, install).await else {
                let what = "the installation";
                let message = stall::rauc_stopped_answering(&tx, what, limit, last);
                return Internal::Installed(Err(message));
            };
            Internal::Installed(result.map_err(|e| e.to_string()))
        });
    }

    pub(super) fn on_installed(&mut self, result: Result<(), String>) {
        let Some(mut p) = self.pending.clone() else {
            return;
        };
        match result {
            Ok(()) => {
                p.phase = Phase::Installed;
                if !self.save_pending(Some(p.clone())) {
                    return;
                }
                tracing::info!(target = %p.target.name, "installed; reboot required");
                self.status.state = UpdateState::RebootRequired;
                self.status.progress = 100;
                self.ports.fetcher.cleanup(None);
                self.consider_reboot();
            }
            Err(message) => {
                tracing::error!(target = %p.target.name, "installation failed: {message}");
                self.finish(&p, "failed", &message, None, None);
                self.status.state = UpdateState::Failed;
                self.status.last_error = message;
            }
        }
    }

    pub(super) fn reboot(&mut self) {
        self.reboot_requested = true;
        tracing::info!("rebooting");
        if let Err(e) = self.ports.system.reboot() {
            tracing::error!("{e}");
            self.status.last_error = e;
        }
    }
}

/// A check's result naming one update: "verified; security update 1.0.1 (patch level
/// 2026-11-01) available" (or `installed`).
fn offer_message(meta: &BundleMeta, what: &str) -> String {
    format!(
        "verified; security update {} (patch level {}) {what}",
        meta.version, meta.security_patch_level
    )
}
