//! Running the integrity probes ([`crate::integrity`]) for the engine: at start, at the
//! beginning of every check (before its decisions), and whenever RAUC's view changes.
//!
//! The probes read files (a directory walk among them), so they run on a blocking thread and
//! report back on the engine's internal channel; the engine stays responsive meanwhile. One
//! run at a time: a trigger during a run asks for one more run afterwards, so bursts of RAUC
//! changes cost at most two runs.
//!
//! A verdict that differs from the last one recorded on this device (store key
//! [`STATE_KEY`]) is a change, except `unknown`, which says only that the probes cannot tell
//! right now: a history entry (kind `event`) and `IntegrityChanged`. The
//! very first verdict on a device is its baseline: recorded and published as
//! `IntegrityState`, but no change. An agent restart is no change either, because the
//! comparison is with the stored verdict, not with "not probed yet".

use super::pending::Phase;
use super::ports::System;
use super::{Clock, Engine, Internal, Notice, Ports};
use crate::status::{Integrity, IntegrityState};
use crate::store::NewHistoryEntry;

/// Store key of the last integrity verdict.
pub const STATE_KEY: &str = "integrity_state";

/// One probe run, claimed by [`Engine::claim_probe`]; its result must reach
/// [`Engine::on_probed`] (as `Internal::Probed`).
pub(super) struct ProbeJob {
    config: std::sync::Arc<crate::config::Config>,
    rauc: crate::status::RaucInfo,
    judging_booted_slot: bool,
}

impl ProbeJob {
    /// Runs the probes on a blocking thread (they read files and walk directories).
    pub(super) async fn run(self) -> Integrity {
        tokio::task::spawn_blocking(move || {
            crate::integrity::run(&self.config.integrity, &self.rauc, self.judging_booted_slot)
        })
        .await
        // A probe that panicked proves nothing either way.
        .unwrap_or_default()
    }
}

/// Bookkeeping of the probe runs.
#[derive(Debug, Default)]
pub(super) struct Probing {
    /// A run is in progress on a blocking thread.
    running: bool,
    /// Something changed during that run: probe again when it reports.
    again: bool,
}

impl<C: Clock, P: Ports> Engine<C, P> {
    /// Starts a probe run, or asks for one after the running one.
    pub(super) fn start_probe(&mut self) {
        let job = self.claim_probe();
        self.run_probe(job);
    }

    /// Runs a claimed probe run in the background.
    pub(super) fn run_probe(&mut self, job: Option<ProbeJob>) {
        if let Some(job) = job {
            let tx = self.internal_tx.clone();
            tokio::task::spawn(async move {
                let _ = tx.send(Internal::Probed(job.run().await));
            });
        }
    }

    /// Claims the next probe run for the caller to run (a check runs it before fetching, so
    /// that its decisions — the operator channel above all — see a verdict from this moment,
    /// not one from before a device was rooted). `None` when probing is off, or when a run is
    /// already going (one more is then queued after it).
    pub(super) fn claim_probe(&mut self) -> Option<ProbeJob> {
        if self.config.integrity.probes.is_empty() {
            return None;
        }
        if self.probing.running {
            self.probing.again = true;
            return None;
        }
        self.probing.running = true;
        Some(ProbeJob {
            config: self.config.clone(),
            rauc: self.status.rauc.clone(),
            judging_booted_slot: self.judging_booted_slot(),
        })
    }

    /// Whether the booted slot is the update this agent is confirming (it may mark it bad)
    /// or has rejected and is rolling back from (it did mark it bad): `Installed` or
    /// `Confirming` after a reboot into another slot than the install ran on, or
    /// `RollingBack` before its reboot.
    fn judging_booted_slot(&self) -> bool {
        let Some(p) = &self.pending else {
            return false;
        };
        let rebooted = self.ports.system.boot_id() != p.boot_id;
        match p.phase {
            Phase::Installed | Phase::Confirming => {
                rebooted && self.status.rauc.boot_slot != p.booted_slot
            }
            Phase::RollingBack => !rebooted,
            Phase::Downloading | Phase::Installing => false,
        }
    }

    /// A probe run reported.
    pub(super) fn on_probed(&mut self, result: Integrity) {
        self.probing.running = false;
        let state = result.state;
        self.status.integrity = result;
        // `unknown`: the probes cannot tell (after a boot RAUC is started on demand and has
        // not answered yet). Shown as such, but no change of integrity, neither recorded nor
        // announced, so the next real verdict is compared with the last real one.
        if state != IntegrityState::Unknown {
            self.record_verdict(state);
        }
        if std::mem::take(&mut self.probing.again) {
            self.start_probe();
        }
    }

    /// Compares a real verdict with the stored one: a change is recorded and announced.
    fn record_verdict(&mut self, state: IntegrityState) {
        match self.store.state(STATE_KEY) {
            Ok(recorded) if recorded.as_deref() == Some(state.as_str()) => {}
            Ok(recorded) => self.integrity_changed(recorded.as_deref(), state),
            // The verdict is still published; only its history waits for the next run.
            Err(e) => tracing::error!(error = %e, "cannot read the last integrity verdict"),
        }
    }

    fn integrity_changed(&mut self, recorded: Option<&str>, state: IntegrityState) {
        let failing: Vec<String> = self
            .status
            .integrity
            .findings
            .iter()
            .filter(|f| f.outcome == "fail")
            .map(|f| format!("{}: {}", f.probe, f.evidence))
            .collect();
        let mut detail = match recorded {
            Some(before) => format!("{} (was {before})", state.as_str()),
            None => state.as_str().to_owned(),
        };
        if !failing.is_empty() {
            detail = format!("{detail}: {}", failing.join("; "));
        }
        if state == IntegrityState::Compromised {
            tracing::error!("device integrity {detail}");
        } else {
            tracing::info!("device integrity {detail}");
        }
        let value = Some(state.as_str());
        if recorded.is_none() {
            // The baseline: remembered, not announced as a change.
            if let Err(e) = self.store.set_state(STATE_KEY, value) {
                tracing::error!(error = %e, "cannot record the integrity verdict");
            }
            return;
        }
        let entry = NewHistoryEntry {
            at: self.clock.now(),
            kind: "event".to_owned(),
            action: "integrity-changed".to_owned(),
            version: None,
            security_patch_level: None,
            detail,
            cves: Vec::new(),
        };
        let saved = self.store.transaction(|tx| {
            tx.append_history(&entry)?;
            tx.set_state(STATE_KEY, value)
        });
        if let Err(e) = saved {
            // Announced anyway: clients must learn of a compromise even with a broken store.
            tracing::error!(error = %e, "cannot record the integrity change");
        }
        self.notify(Notice::IntegrityChanged(self.status.integrity.clone()));
    }
}
