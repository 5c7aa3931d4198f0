//! The update lifecycle: check → download (verified) → announce → install → reboot →
//! confirm, or fail / roll back. Every step that has a side effect is preceded by writing
//! the [`Pending`] record, so a restart at any point resumes or settles cleanly and never
//! installs a target twice. See ARCHITECTURE.md, "Update lifecycle". This file covers the
//! way up to the reboot: the check itself is in `check.rs`, what happens after the reboot in
//! `confirm.rs`.

use super::pending::{Pending, Phase};
use super::ports::{BundleFetcher, FetchFailure, System};
use super::{Clock, Engine, Internal, Notice, Ports, stall};
use crate::metadata::schema::BundleMeta;
use crate::rauc::Rauc;
use crate::status::{Offer, UpdateState};

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
pub(super) fn offer_message(meta: &BundleMeta, what: &str) -> String {
    format!(
        "verified; security update {} (patch level {}) {what}",
        meta.version, meta.security_patch_level
    )
}
