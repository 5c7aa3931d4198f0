//! The user's and the host's say over the update (FS.25 COM-0040/0050, ETSI 5.3-3/5.3-13):
//! auto-install on/off, postpone, install now, reboot now or later, host inhibitors — and
//! the support period shown with it. The rules are in [`crate::policy::consent`]; this file
//! applies them to the engine's state and tells the UI before a disruptive step
//! ([`RebootPlan`]).

use std::collections::BTreeMap;

use jiff::Timestamp;
use jiff::tz::TimeZone;

use super::pending::Phase;
use super::ports::System;
use super::{AUTO_INSTALL_KEY, Clock, Engine, EngineError, Notice, Ports};
use crate::metadata::schema::{DeviceMeta, Severity};
use crate::policy::consent::{
    self, InstallGate, PostponeBounds, Postponement, RebootGate, RebootInputs, Window,
};
use crate::policy::spread::{self, Purpose};
use crate::status::UpdateState;
use crate::store::Store;

/// Settings key of the postponement (JSON [`Postponement`]; an RFC 3339 time from an older
/// agent is read as a postponement starting when it is read; absent or empty: none).
const POSTPONED_KEY: &str = "postponed_until";
/// Store `state` key of the user's consent to reboot (RFC 3339; absent: none). Kept across a
/// restart: a reboot the user scheduled for the night must still happen if the agent was
/// restarted (upgraded, crashed, killed by the watchdog) in between.
const REBOOT_CONSENT_KEY: &str = "reboot_consent";
/// Store key of when the installed update started waiting for its reboot:
/// `{"target": name, "since": time}` (the reboot deadline counts from it).
const REBOOT_SINCE_KEY: &str = "reboot_required_since";
/// Store key of the signed per-model metadata last verified for this device.
pub(super) const DEVICE_META_KEY: &str = "device_meta";
/// Most inhibitors held at once: each holds a file descriptor of this process.
pub const MAX_INHIBITORS: usize = 64;

/// A user's or host's request (each one authorized by the D-Bus service first).
#[derive(Debug, Clone, PartialEq)]
pub enum Request {
    SetAutoInstall(bool),
    /// Postpone automatic installation by this many seconds (0 clears).
    Postpone(u64),
    /// Apply the available update now (one action, ETSI 5.3-3).
    Install,
    /// Consent to reboot now.
    Reboot,
    /// Consent to reboot at this time (seconds since the epoch; 0 withdraws consent).
    ScheduleReboot(u64),
    /// The host let go of inhibitor `id` (its file descriptor was closed).
    Release(u64),
}

/// What the UI is told before the device reboots into an update (`RebootPending`).
#[derive(Debug, Clone, PartialEq)]
pub struct RebootPlan {
    /// Why: `security-update`.
    pub reason: &'static str,
    /// The version the reboot activates.
    pub version: String,
    /// Expected downtime from the signed metadata.
    pub expected_downtime_s: u32,
    /// When the reboot will happen; `None` while it waits for inhibitors to be released.
    pub at: Option<Timestamp>,
    /// What it waits for: `inhibitor`, `maintenance-window`, `scheduled`, `deadline` (the
    /// reboot deadline forces it, in the maintenance window when one is set); empty: now.
    pub waiting_for: Vec<&'static str>,
    /// The reasons of the inhibitors held.
    pub inhibitors: Vec<String>,
}

/// The engine's record of the user's and host's wishes.
#[derive(Debug, Default)]
pub(super) struct ControlState {
    /// The user asked to install the update on offer (consumed when installation starts).
    install_requested: bool,
    /// The user consented to a reboot at this time.
    reboot_consent: Option<Timestamp>,
    /// A reboot decided for later (window or scheduled consent): the engine wakes then.
    reboot_at: Option<Timestamp>,
    /// Held inhibitors by id.
    inhibitors: BTreeMap<u64, String>,
    next_inhibitor: u64,
    /// The last plan announced, so each change is announced once.
    announced: Option<RebootPlan>,
    /// Signed per-model metadata for this device (support period, replacement).
    pub(super) device_meta: Option<DeviceMeta>,
    /// The maintenance window, its opening moved by this device's spread.
    window: Option<Window>,
    tz: Option<TimeZone>,
    /// Why this device cannot be updated any more (SEC-0040, see `support.rs`).
    pub(super) cannot_update: Option<String>,
    /// The user's postponement, bounded per update.
    postponement: Option<Postponement>,
    /// When the installed update started waiting for a reboot (target name, time).
    reboot_since: Option<RebootSince>,
}

/// The persisted start of `reboot-required`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct RebootSince {
    target: String,
    since: Timestamp,
}

impl ControlState {
    /// Restores what survives a restart: the postponement, the start of `reboot-required`,
    /// the user's consent to reboot and the per-model metadata. (A reboot planned for the
    /// maintenance window needs nothing more stored: it is planned again from the
    /// configuration and the pending update.) `seed` spreads the maintenance window's opening.
    pub(super) fn load(
        store: &Store,
        config: &crate::config::Config,
        now: Timestamp,
        seed: u64,
    ) -> Result<ControlState, EngineError> {
        let postponement = store.setting(POSTPONED_KEY)?.and_then(|s| {
            serde_json::from_str::<Postponement>(&s).ok().or_else(|| {
                s.parse::<Timestamp>().ok().map(|until| Postponement {
                    since: now.min(until),
                    until,
                    critical_since: None,
                })
            })
        });
        let reboot_since = store
            .state(REBOOT_SINCE_KEY)?
            .and_then(|s| serde_json::from_str::<RebootSince>(&s).ok());
        let device_meta = store
            .state(DEVICE_META_KEY)?
            .and_then(|s| serde_json::from_str::<DeviceMeta>(&s).ok())
            .filter(|m| m.hardware_id == config.device.hardware_id);
        // Validated at load; a window that does not parse here cannot occur.
        let window = config
            .install
            .maintenance_window
            .as_deref()
            .and_then(|w| Window::parse(w).ok())
            .map(|w| {
                w.shifted(spread::offset(
                    seed,
                    Purpose::WindowOpening,
                    config.spread.window.0,
                ))
            });
        let cannot_update = store.state(super::support::CANNOT_UPDATE_KEY)?;
        let reboot_consent = store
            .state(REBOOT_CONSENT_KEY)?
            .and_then(|s| s.parse::<Timestamp>().ok());
        Ok(ControlState {
            device_meta,
            cannot_update,
            window,
            postponement,
            reboot_since,
            reboot_consent,
            ..ControlState::default()
        })
    }

    fn tz(&self) -> TimeZone {
        self.tz.clone().unwrap_or_else(TimeZone::system)
    }
}

fn secs_to_ts(secs: u64) -> Timestamp {
    i64::try_from(secs)
        .ok()
        .and_then(|s| Timestamp::from_second(s).ok())
        .unwrap_or(Timestamp::MAX)
}

impl<C: Clock, P: Ports> Engine<C, P> {
    /// Uses `tz` for the maintenance window instead of the system's zone (tests).
    #[cfg(test)]
    pub(super) fn set_time_zone(&mut self, tz: TimeZone) {
        self.control.tz = Some(tz);
    }

    pub(super) fn control(&mut self, req: Request) -> Result<(), EngineError> {
        let now = self.clock.now();
        match req {
            Request::SetAutoInstall(on) => {
                self.store
                    .set_setting(AUTO_INSTALL_KEY, if on { "true" } else { "false" })?;
                self.status.auto_install = on;
            }
            Request::Postpone(seconds) => {
                let postponement = consent::postpone(
                    now,
                    seconds,
                    self.control.postponement,
                    self.status.available.is_some(),
                    self.critical_on_offer(),
                    &self.postpone_bounds(),
                )
                .map_err(|e| EngineError::PolicyRefused(e.to_string()))?;
                self.save_postponement(postponement)?;
            }
            Request::Install => self.request_install()?,
            Request::Reboot => {
                self.require_reboot_pending()?;
                self.set_reboot_consent(Some(now))?;
            }
            Request::ScheduleReboot(0) => self.set_reboot_consent(None)?,
            Request::ScheduleReboot(at) => {
                if self.pending.is_none() && self.status.available.is_none() {
                    return Err(EngineError::NothingToInstall(
                        "no update is waiting: nothing to reboot into".into(),
                    ));
                }
                self.set_reboot_consent(Some(secs_to_ts(at).max(now)))?;
            }
            Request::Release(id) => {
                if let Some(reason) = self.control.inhibitors.remove(&id) {
                    tracing::info!(%reason, "inhibitor released");
                }
                self.sync_inhibitors();
            }
        }
        self.reconsider();
        Ok(())
    }

    /// Records the user's consent to reboot (or its withdrawal) in the store, then in memory.
    fn set_reboot_consent(&mut self, at: Option<Timestamp>) -> Result<(), EngineError> {
        if self.control.reboot_consent != at {
            let value = at.map(|t| t.to_string());
            self.store.set_state(REBOOT_CONSENT_KEY, value.as_deref())?;
        }
        self.control.reboot_consent = at;
        Ok(())
    }

    fn postpone_bounds(&self) -> PostponeBounds {
        PostponeBounds {
            max: self.config.install.max_postpone.0,
            max_critical: self.config.install.max_postpone_critical.0,
        }
    }

    fn critical_on_offer(&self) -> bool {
        self.status
            .available
            .as_ref()
            .and_then(|o| o.target.meta.max_severity())
            == Some(Severity::Critical)
    }

    fn save_postponement(&mut self, p: Option<Postponement>) -> Result<(), EngineError> {
        let value = p
            .map(|p| serde_json::to_string(&p).unwrap_or_default())
            .unwrap_or_default();
        self.store.set_setting(POSTPONED_KEY, &value)?;
        self.control.postponement = p;
        self.show_postponement();
        Ok(())
    }

    fn show_postponement(&mut self) {
        let now = self.clock.now();
        let bounds = self.postpone_bounds();
        self.status.postponed_until = self
            .control
            .postponement
            .map(|p| p.effective_until(&bounds))
            .filter(|t| *t > now);
    }

    /// `PostponedUntil` as it stands; a critical fix that arrived caps the postponement
    /// (persisted, so a restart does not lift the cap).
    pub(super) fn refresh_postponement(&mut self) {
        let now = self.clock.now();
        if let Some(p) = self.control.postponement
            && p.critical_since.is_none()
            && self.critical_on_offer()
        {
            let capped = p.critical_arrived(now);
            tracing::info!("a critical fix is on offer: the postponement is capped");
            if let Err(e) = self.save_postponement(Some(capped)) {
                tracing::warn!(error = %e, "cannot record the capped postponement");
                self.control.postponement = Some(capped);
            }
        }
        self.show_postponement();
    }

    /// An installation starts: the postponement of this update is over.
    pub(super) fn end_postponement(&mut self) {
        if self.control.postponement.is_some()
            && let Err(e) = self.save_postponement(None)
        {
            tracing::warn!(error = %e, "cannot clear the postponement");
            self.control.postponement = None;
        }
    }

    fn request_install(&mut self) -> Result<(), EngineError> {
        match self.pending.as_ref().map(|p| p.phase) {
            Some(Phase::Downloading) => {
                self.control.install_requested = true;
                Ok(())
            }
            Some(Phase::Installing) => Ok(()),
            Some(Phase::Installed) => Err(EngineError::NothingToInstall(
                "the update is installed; it takes effect after a reboot (Reboot or \
                 ScheduleReboot)"
                    .into(),
            )),
            Some(Phase::Confirming | Phase::RollingBack) => Err(EngineError::Busy(
                "the last update is still being confirmed".into(),
            )),
            None if self.status.available.is_some() => {
                self.control.install_requested = true;
                Ok(())
            }
            None => Err(EngineError::NothingToInstall(
                "no verified update is available; run a check first".into(),
            )),
        }
    }

    fn require_reboot_pending(&self) -> Result<(), EngineError> {
        match &self.pending {
            Some(p) if p.phase == Phase::Installed => Ok(()),
            _ => Err(EngineError::NothingToInstall(
                "no installed update is waiting for a reboot".into(),
            )),
        }
    }

    /// Registers a host inhibitor; the caller releases it with [`Request::Release`]. At most
    /// [`MAX_INHIBITORS`]: checked here, where commands are handled one at a time, so
    /// concurrent callers cannot all pass a check made against the same snapshot.
    pub(super) fn inhibit(&mut self, reason: String) -> Result<u64, EngineError> {
        if self.control.inhibitors.len() >= MAX_INHIBITORS {
            return Err(EngineError::PolicyRefused(format!(
                "{MAX_INHIBITORS} inhibitors are held already"
            )));
        }
        self.control.next_inhibitor += 1;
        let id = self.control.next_inhibitor;
        tracing::info!(%reason, "inhibitor taken");
        self.control.inhibitors.insert(id, reason);
        self.sync_inhibitors();
        self.reconsider();
        Ok(id)
    }

    fn sync_inhibitors(&mut self) {
        self.status.inhibitors = self.control.inhibitors.values().cloned().collect();
    }

    fn inhibited(&self) -> bool {
        !self.control.inhibitors.is_empty()
    }

    /// Whether the just-downloaded update may be installed now; consumes the user's request.
    pub(super) fn may_install_now(&mut self) -> bool {
        let gate = self.install_gate();
        if gate == InstallGate::Go {
            self.control.install_requested = false;
            true
        } else {
            false
        }
    }

    /// The user asked to install the update on offer (not consumed yet).
    pub(super) fn install_requested(&self) -> bool {
        self.control.install_requested
    }

    fn install_gate(&self) -> InstallGate {
        let bounds = self.postpone_bounds();
        consent::may_install(
            self.clock.now(),
            self.status.auto_install,
            self.control
                .postponement
                .map(|p| p.effective_until(&bounds)),
            self.control.install_requested,
            self.inhibited(),
        )
    }

    /// The state of an offer that waits (see [`Engine::may_install_now`]).
    pub(super) fn waiting_state(&self) -> UpdateState {
        match self.install_gate() {
            InstallGate::WaitForUser | InstallGate::Go => UpdateState::Available,
            InstallGate::Inhibited | InstallGate::Postponed(_) => UpdateState::Deferred,
        }
    }

    /// Looks again at what waits for the user or host: an offer to install, an installed
    /// update to reboot into. Called after every request, inhibitor change and timer.
    pub(super) fn reconsider(&mut self) {
        if self.busy {
            return;
        }
        match self.pending.as_ref().map(|p| (p.phase, p.boot_id.clone())) {
            Some((Phase::Installed, boot_id)) if boot_id == self.ports.system.boot_id() => {
                self.consider_reboot();
            }
            Some(_) => {}
            None => {
                let Some(offer) = self.status.available.clone() else {
                    return;
                };
                if !matches!(
                    self.status.state,
                    UpdateState::Available | UpdateState::Deferred
                ) {
                    return;
                }
                if self.held() {
                    // Waiting for a cheaper link: only the user's Install takes it now, over
                    // the costly link (`take_over_costly_link` says what it costs).
                    if self.control.install_requested && !self.inhibited() {
                        self.take_over_costly_link(offer);
                    }
                    return;
                }
                if self.install_gate() == InstallGate::Go {
                    // The verified file is cached: this re-verifies it and installs.
                    self.start_download(offer);
                } else {
                    self.status.state = self.waiting_state();
                }
            }
        }
    }

    /// Decides whether to reboot into the installed update now, later, or not without the
    /// user; announces every new plan before acting on it.
    pub(super) fn consider_reboot(&mut self) {
        if self.reboot_requested {
            return;
        }
        let now = self.clock.now();
        let tz = self.control.tz();
        let deadline = self
            .reboot_required_since(now)
            .map(|since| since.saturating_add(self.config.install.reboot_deadline.0))
            .and_then(Result::ok);
        let gate = consent::may_reboot(&RebootInputs {
            now,
            consent: self.control.reboot_consent,
            auto_reboot: self.config.install.auto_reboot,
            window: self.control.window.as_ref(),
            tz: &tz,
            inhibited: self.inhibited(),
            deadline,
        });
        self.control.reboot_at = None;
        let (at, waiting_for) = match gate {
            RebootGate::WaitForUser => {
                self.control.announced = None;
                return;
            }
            RebootGate::Go => (Some(now), vec![]),
            RebootGate::At(t) => {
                self.control.reboot_at = Some(t);
                let why = if self.control.reboot_consent == Some(t) {
                    "scheduled"
                } else {
                    "maintenance-window"
                };
                (Some(t), vec![why])
            }
            RebootGate::Deadline(t) => {
                self.control.reboot_at = Some(t);
                let mut why = vec!["deadline"];
                if self.control.window.is_some() {
                    why.push("maintenance-window");
                }
                (Some(t), why)
            }
            RebootGate::Inhibited { .. } => (None, vec!["inhibitor"]),
        };
        if let Some(p) = &self.pending {
            let plan = RebootPlan {
                reason: "security-update",
                version: p.target.meta.version.clone(),
                expected_downtime_s: p.target.meta.expected_downtime_s,
                // `Go` is announced with its time; a later plan keeps the time it names.
                at,
                waiting_for,
                inhibitors: self.status.inhibitors.clone(),
            };
            let same = self.control.announced.as_ref().is_some_and(|a| {
                a.at == plan.at
                    && a.waiting_for == plan.waiting_for
                    && a.inhibitors == plan.inhibitors
            });
            if !same {
                tracing::info!(plan = ?plan, "reboot planned");
                self.control.announced = Some(plan.clone());
                self.notify(Notice::RebootPending(plan));
            }
        }
        if gate == RebootGate::Go {
            // Used up by this reboot: it must not reboot the next boot again.
            if let Err(e) = self.set_reboot_consent(None) {
                tracing::warn!(error = %e, "cannot clear the used reboot consent");
                self.control.reboot_consent = None;
            }
            self.reboot();
        }
    }

    /// When the installed update started waiting for its reboot (recorded the first time it
    /// is asked, so the deadline survives a restart).
    fn reboot_required_since(&mut self, now: Timestamp) -> Option<Timestamp> {
        let target = self.pending.as_ref()?.target.name.clone();
        if let Some(r) = &self.control.reboot_since
            && r.target == target
        {
            return Some(r.since);
        }
        let record = RebootSince { target, since: now };
        let json = serde_json::to_string(&record).unwrap_or_default();
        if let Err(e) = self.store.set_state(REBOOT_SINCE_KEY, Some(&json)) {
            // The deadline then counts from now again after a restart: later, never earlier.
            tracing::warn!(error = %e, "cannot record when the reboot became required");
        }
        self.control.reboot_since = Some(record);
        Some(now)
    }

    /// When the engine must wake for the user's wishes: a reboot time, a postponement's end.
    pub(super) fn control_deadline(&self) -> Option<Timestamp> {
        let now = self.clock.now();
        let bounds = self.postpone_bounds();
        let postponed = self
            .control
            .postponement
            .map(|p| p.effective_until(&bounds))
            .filter(|t| *t > now && self.status.state == UpdateState::Deferred);
        [self.control.reboot_at, postponed]
            .into_iter()
            .flatten()
            .min()
    }

    /// Keeps the signed per-model metadata for this device (support period, replacement).
    pub(super) fn remember_device(&mut self, devices: &[crate::metadata::client::DeviceTarget]) {
        let mine = devices
            .iter()
            .find(|d| d.meta.hardware_id == self.config.device.hardware_id)
            .map(|d| d.meta.clone());
        let Some(meta) = mine else {
            return;
        };
        if self.control.device_meta.as_ref() == Some(&meta) {
            return;
        }
        let json = serde_json::to_string(&meta).unwrap_or_default();
        if let Err(e) = self.store.set_state(DEVICE_META_KEY, Some(&json)) {
            tracing::warn!(error = %e, "cannot record the device metadata");
        }
        self.control.device_meta = Some(meta);
    }

    /// This model's rollout wave start from the signed per-model record (SEC-0021).
    pub(super) fn wave_start(&self) -> Option<jiff::Timestamp> {
        self.control.device_meta.as_ref().and_then(|m| m.wave_start)
    }
}
