//! Bounded waits on RAUC, and what the engine does when RAUC stops answering.
//!
//! Every RAUC operation the engine starts has a limit: a call the fixed
//! `[install] rauc_timeout`; checking and installing a bundle that plus
//! `install_time_per_gib` per GiB (RAUC reads the whole bundle to verify it, and writes it
//! into the slot). A RAUC that lets a limit pass is reported — an error in the journal,
//! `LastError`, and `Components` says `unavailable` for rauc until RAUC is heard from again —
//! and the installation ends as `failed` with that reason; the next check offers the update
//! again. The watchdog ([`Engine::ping`]) stops being answered when a step outlives its limit
//! by [`WATCHDOG_GRACE`]: the engine's loop may run, but it is not getting anywhere.

use std::time::Duration;

use jiff::SignedDuration;

use super::{Clock, Engine, EngineError, Internal, Ports};
use crate::config::InstallConfig;
use crate::status::Availability;

/// How long past its limit a step may run before the watchdog stops being answered.
pub(super) const WATCHDOG_GRACE: Duration = Duration::from_secs(60);

/// The limit of one RAUC operation over a bundle of `bytes` (checking or installing it).
pub(super) fn bundle_limit(install: &InstallConfig, bytes: u64) -> Duration {
    let fixed = install.rauc_timeout.0.unsigned_abs();
    let per_gib = install.install_time_per_gib.0.unsigned_abs();
    let gib = bytes as f64 / (1u64 << 30) as f64;
    fixed.saturating_add(per_gib.mul_f64(gib))
}

/// The limit of a plain RAUC call (`Mark`, `GetPrimary`).
pub(super) fn call_limit(install: &InstallConfig) -> Duration {
    install.rauc_timeout.0.unsigned_abs()
}

/// `d` as a person reads it (`5m`, `1h 3m 20s`).
pub(super) fn show(d: Duration) -> String {
    let d = SignedDuration::try_from(Duration::from_secs(d.as_secs().max(1))).unwrap_or_default();
    format!("{d:#}")
}

/// What a step that found RAUC not answering reports: first [`Internal::RaucUnresponsive`]
/// (the engine marks RAUC unavailable), then `result` (the step's own outcome).
pub(super) fn rauc_stopped_answering(
    tx: &tokio::sync::mpsc::UnboundedSender<Internal>,
    what: &str,
    limit: Duration,
    progress: Option<u32>,
) -> String {
    let stopped_at = progress
        .map(|p| format!(" (its last progress: {p} %)"))
        .unwrap_or_default();
    let message = format!(
        "RAUC stopped answering: {what} did not finish within {}{stopped_at}",
        show(limit)
    );
    let _ = tx.send(Internal::RaucUnresponsive(message.clone()));
    message
}

impl<C: Clock, P: Ports> Engine<C, P> {
    /// RAUC let a limit pass: reported until RAUC is heard from again.
    pub(super) fn on_rauc_unresponsive(&mut self, message: String) {
        tracing::error!("{message}");
        self.status.last_error = message.clone();
        self.rauc_stalled = Some(message);
    }

    /// RAUC said something (a signal, a new owner): it answers again.
    pub(super) fn on_rauc_heard(&mut self) {
        if self.rauc_stalled.take().is_some() {
            tracing::info!("RAUC answers again");
        }
    }

    /// Shows a RAUC that stopped answering as unavailable (`Components`).
    pub(super) fn refresh_rauc_availability(&mut self) {
        if self.rauc_stalled.is_some() {
            self.status.rauc.availability = Availability::Unavailable;
        }
    }

    /// Answer to the watchdog: `Err` when the running step outlived its limit.
    pub(super) fn ping(&self) -> Result<(), EngineError> {
        match self.step_deadline {
            Some(deadline)
                if self.busy && tokio::time::Instant::now() > deadline + WATCHDOG_GRACE =>
            {
                Err(EngineError::Stalled(format!(
                    "the running step ({}) outlived its limit by more than {}",
                    self.status.state.as_str(),
                    show(WATCHDOG_GRACE)
                )))
            }
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_installation_s_limit_grows_with_the_bundle() {
        let install = InstallConfig {
            rauc_timeout: crate::config::Dur(SignedDuration::from_mins(5)),
            install_time_per_gib: crate::config::Dur(SignedDuration::from_mins(20)),
            ..InstallConfig::default()
        };
        assert_eq!(bundle_limit(&install, 0), Duration::from_secs(300));
        assert_eq!(bundle_limit(&install, 1 << 30), Duration::from_secs(1500));
        assert_eq!(bundle_limit(&install, 512 << 20), Duration::from_secs(900));
        assert_eq!(call_limit(&install), Duration::from_secs(300));
        assert_eq!(show(Duration::from_secs(1500)), "25m");
        assert_eq!(show(Duration::from_millis(10)), "1s");
    }
}
