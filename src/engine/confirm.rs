//! After the reboot: settle what a persisted record says happened while the agent was not
//! running (an interrupted installation, a reboot into the new slot or back), confirm the new
//! slot with health checks and `Mark(good)` — or mark it bad and roll back — and close the
//! attempt in one transaction.

use super::pending::{Pending, Phase};
use super::ports::System;
use super::{Clock, Engine, Finished, Internal, Notice, Ports, ROLLED_BACK_KEY, stall};
use crate::metadata::client::Verified;
use crate::rauc::{MarkState, Rauc};
use crate::status::{Availability, Installed, Offer, UpdateState};
use crate::store::NewHistoryEntry;

/// How the post-reboot confirmation ended.
#[derive(Debug)]
pub(super) enum Confirmation {
    /// Health checks passed and the slot is marked good.
    Confirmed,
    /// Health checks failed; the slot is marked bad (reason).
    Rejected(String),
    /// RAUC would not mark the slot; try again later.
    MarkFailed(String),
}

impl<C: Clock, P: Ports> Engine<C, P> {
    // ---- after reboot ---------------------------------------------------------------

    /// Settles a persisted update once RAUC's view is known.
    pub(super) fn on_rauc_changed(&mut self) {
        if self.busy {
            self.rauc_changed_while_busy = true;
            return;
        }
        if self.status.rauc.availability != Availability::Running {
            return;
        }
        let Some(p) = self.pending.clone() else {
            self.judge_deferred();
            return;
        };
        let rebooted = self.ports.system.boot_id() != p.boot_id;
        match p.phase {
            Phase::Downloading => {}
            Phase::Installing => self.settle_interrupted_install(p),
            Phase::Installed if !rebooted => {
                self.status.state = UpdateState::RebootRequired;
                // After a restart nothing else plans the reboot again (the window's, the
                // user's scheduled one); announced once, like any plan.
                self.consider_reboot();
            }
            Phase::Installed | Phase::Confirming => self.confirm(p),
            Phase::RollingBack if rebooted => {
                if self.save_pending(None) {
                    self.status.state = UpdateState::RolledBack;
                    self.status.available = None;
                    // Back on the old slot: what the fleet server must hear (the report
                    // sent before the reboot still named the rejected slot as booted).
                    self.want_report("rolled-back");
                }
            }
            Phase::RollingBack if !self.reboot_requested => self.reboot(),
            Phase::RollingBack => {}
        }
    }

    /// The agent stopped while RAUC was (or was about to be) installing.
    pub(super) fn settle_interrupted_install(&mut self, p: Pending) {
        let rauc = &self.status.rauc;
        if rauc.operation == "installing" {
            // RAUC is still at it; its PropertiesChanged will bring us back here.
            self.status.state = UpdateState::Installing;
            return;
        }
        let done = rauc
            .slots
            .iter()
            .any(|s| s.state != "booted" && s.bundle_version == p.target.meta.version);
        if done {
            self.on_installed(Ok(()));
        } else if !rauc.last_error.is_empty() {
            let message = format!("installation failed: {}", rauc.last_error);
            self.on_installed(Err(message));
        } else {
            // RAUC never got the job: fetch the (cached) bundle again and install it.
            self.start_download(Offer::new(p.target, p.source));
        }
    }

    pub(super) fn confirm(&mut self, mut p: Pending) {
        let booted = self.status.rauc.boot_slot.clone();
        if booted.is_empty() {
            return;
        }
        if booted == p.booted_slot {
            // The bootloader fell back: the new slot never came up.
            let reason = format!("the new slot did not boot; slot {booted} is running again");
            self.finish(&p, "rolled-back", &reason, None, None);
            self.status.state = UpdateState::RolledBack;
            return;
        }
        p.phase = Phase::Confirming;
        if !self.save_pending(Some(p.clone())) {
            return;
        }
        self.status.state = UpdateState::Confirming;
        let holds_target = self
            .status
            .rauc
            .slots
            .iter()
            .any(|s| s.state == "booted" && s.bundle_version == p.target.meta.version);
        let rauc = self.ports.rauc.clone();
        let system = self.ports.system.clone();
        let version = p.target.meta.version.clone();
        let install = &self.config.install;
        let mark_limit = stall::call_limit(install);
        // Each health check has its own limit; then one Mark.
        let checks = u32::try_from(install.health_checks.len()).unwrap_or(u32::MAX);
        let limit = install
            .health_check_timeout
            .0
            .unsigned_abs()
            .saturating_mul(checks)
            .saturating_add(mark_limit);
        let tx = self.internal_tx.clone();
        self.spawn_within(Some(limit), async move {
            let health = if holds_target {
                system.health_check().await
            } else {
                Err(format!("the booted slot does not hold version {version}"))
            };
            let mark = |state: MarkState| {
                let rauc = rauc.clone();
                let tx = tx.clone();
                async move {
                    match tokio::time::timeout(mark_limit, rauc.mark(state, "booted")).await {
                        Ok(r) => r.map(|_| ()).map_err(|e| e.to_string()),
                        Err(_) => {
                            let what = format!("Mark({state})");
                            Err(stall::rauc_stopped_answering(&tx, &what, mark_limit, None))
                        }
                    }
                }
            };
            let outcome = match health {
                Ok(()) => match mark(MarkState::Good).await {
                    Ok(()) => Confirmation::Confirmed,
                    Err(e) => Confirmation::MarkFailed(e),
                },
                Err(reason) => {
                    if let Err(e) = mark(MarkState::Bad).await {
                        tracing::error!("cannot mark the booted slot bad: {e}");
                    }
                    Confirmation::Rejected(reason)
                }
            };
            Internal::HealthChecked(outcome)
        });
    }

    pub(super) fn on_confirmation(&mut self, outcome: Confirmation) {
        let Some(mut p) = self.pending.clone() else {
            return;
        };
        match outcome {
            Confirmation::Confirmed => {
                let now = self.clock.now();
                let meta = &p.target.meta;
                let installed = Installed {
                    version: meta.version.clone(),
                    feature_release: meta.base_version.clone(),
                    security_patch_level: meta.security_patch_level,
                    applied_at: Some(now),
                };
                let detail = format!("from the {} update server", p.source);
                if self.finish(&p, "installed", &detail, None, Some(installed.clone())) {
                    tracing::info!(
                        version = %installed.version,
                        patch_level = %installed.security_patch_level,
                        "update confirmed"
                    );
                    self.status.installed = Some(installed);
                    self.note_installed_in_last_check(&p.target.meta);
                    self.status.state = UpdateState::Idle;
                    self.status.last_error.clear();
                }
            }
            Confirmation::Rejected(reason) => {
                tracing::error!("new slot rejected: {reason}; rolling back");
                p.phase = Phase::RollingBack;
                p.boot_id = self.ports.system.boot_id();
                p.reason = reason.clone();
                let detail = format!("{reason}; rolled back to the previous slot");
                if self.finish(&p, "rolled-back", &detail, Some(p.clone()), None) {
                    self.status.state = UpdateState::RolledBack;
                    self.status.last_error = detail;
                    self.reboot();
                }
            }
            Confirmation::MarkFailed(e) => {
                // Stays Confirming: the next RAUC change or restart tries again.
                let message = format!("cannot mark the new slot good: {e}");
                tracing::error!("{message}");
                self.status.last_error = message;
            }
        }
    }

    /// Ends the update attempt: the history entry, the installed record (when confirmed),
    /// the rolled-back list and the next pending record (`None`, or a rollback that still has
    /// a reboot to go) in one transaction; then the InstallFinished notice.
    pub(super) fn finish(
        &mut self,
        p: &Pending,
        outcome: &'static str,
        detail: &str,
        next: Option<Pending>,
        installed: Option<Installed>,
    ) -> bool {
        let meta = &p.target.meta;
        let cves: Vec<String> = meta.cves.iter().map(|c| c.id.clone()).collect();
        let entry = NewHistoryEntry {
            at: self.clock.now(),
            kind: meta.kind.as_str().to_owned(),
            action: outcome.to_owned(),
            version: Some(meta.version.clone()),
            security_patch_level: Some(meta.security_patch_level),
            detail: detail.to_owned(),
            cves: cves.clone(),
        };
        let next_json = next.as_ref().map(Pending::to_json);
        let mut blocked = self.rolled_back_targets();
        if outcome == "rolled-back" {
            blocked.push(hex::encode(p.target.sha256));
            blocked.sort();
            blocked.dedup();
        }
        let blocked_json = serde_json::to_string(&blocked).unwrap_or_default();
        let result = self.store.transaction(|tx| {
            tx.set_state(ROLLED_BACK_KEY, Some(&blocked_json))?;
            if let Some(i) = &installed {
                tx.set_installed(i)?;
            }
            tx.append_history(&entry)?;
            tx.set_state(super::pending::KEY, next_json.as_deref())
        });
        if let Err(e) = result {
            self.store_failed("cannot record the end of the update", e);
            return false;
        }
        self.pending = next;
        self.status.available = None;
        self.status.progress = 0;
        self.notify(Notice::InstallFinished(Finished {
            outcome,
            version: meta.version.clone(),
            security_patch_level: meta.security_patch_level.to_string(),
            detail: detail.to_owned(),
            cves,
        }));
        true
    }

    /// Raises the installed record to the release RAUC's booted slot holds, when verified
    /// metadata gives that release a higher patch level than the record. Normally the two
    /// agree; they differ when the store was replaced and no floors copy survived (the record
    /// fell back to the factory image), or after an install outside the agent. Only ever
    /// raises: the patch level is the floor that refuses older releases.
    pub(super) fn adopt_booted_release(
        &mut self,
        now: jiff::Timestamp,
        v: &Verified,
        compatible: &str,
    ) {
        if self.pending.is_some() {
            return;
        }
        let Some(booted) = self
            .status
            .rauc
            .slots
            .iter()
            .find(|s| s.state == "booted" && !s.bundle_version.is_empty())
        else {
            return;
        };
        let Some(meta) = v
            .bundles
            .iter()
            .map(|b| &b.meta)
            .find(|m| m.version == booted.bundle_version && m.compatible == compatible)
        else {
            return;
        };
        let current = self.status.installed.as_ref();
        if current.is_some_and(|i| i.security_patch_level >= meta.security_patch_level) {
            return;
        }
        let installed = Installed {
            version: meta.version.clone(),
            feature_release: meta.base_version.clone(),
            security_patch_level: meta.security_patch_level,
            applied_at: Some(booted.installed_timestamp.parse().unwrap_or(now)),
        };
        let entry = NewHistoryEntry {
            at: now,
            kind: "event".to_owned(),
            action: "release-recognised".to_owned(),
            version: Some(meta.version.clone()),
            security_patch_level: Some(meta.security_patch_level),
            detail: format!(
                "the booted slot holds {} (RAUC), which verified metadata gives patch level {}; \
                 recorded as installed (was {})",
                meta.version,
                meta.security_patch_level,
                current.map_or_else(
                    || "unknown".to_owned(),
                    |i| i.security_patch_level.to_string()
                )
            ),
            cves: Vec::new(),
        };
        let result = self.store.transaction(|tx| {
            tx.set_installed(&installed)?;
            tx.append_history(&entry).map(drop)
        });
        match result {
            Ok(()) => {
                tracing::warn!("{}", entry.detail);
                self.status.installed = Some(installed);
            }
            Err(e) => self.store_failed("cannot record the booted release", e),
        }
    }
}
