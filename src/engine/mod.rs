//! The engine: one task that owns all of the agent's state.
//!
//! Everything that changes state arrives here as an input — a [`Command`] from the D-Bus
//! service, a new [`RaucInfo`] or [`ModemInfo`] from an adapter's watcher, the result of a
//! background step (metadata check, download, installation, health check), or a timer — and
//! is handled one at a time, so there are no locks around state and no interleavings to
//! reason about. The engine asks [`crate::policy`] what to do, writes every transition to the
//! [`Store`] before acting on it ([`pending`]), and publishes the resulting [`Status`]
//! through a `watch` channel that the D-Bus service reads. Long steps run as spawned tasks
//! that report back on an internal channel; at most one runs at a time.
//!
//! The update lifecycle itself is in [`lifecycle`]; the adapters it drives are the traits in
//! [`ports`].

mod cellular;
mod check;
mod confirm;
mod control;
mod delivery;
mod handle;
mod integrity;
mod lifecycle;
pub mod pending;
pub mod ports;
mod refusals;
mod stall;
mod startup;
mod support;

use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;

use jiff::Timestamp;
use tokio::sync::{broadcast, mpsc, oneshot, watch};

use crate::clock::Clock;
use crate::config::Config;
use crate::metadata::client::{RoleVersions, Verified};
use crate::policy::{self, Cadence, schedule::CheckHistory};
use crate::rauc::Rauc;
use crate::status::{
    CheckRecord, Integrity, ModemInfo, NetworkInfo, Offer, RaucInfo, Status, UpdateState,
};
use crate::store::{HistoryEntry, Recovery, Store, StoreError};
pub use cellular::SubscriptionChange;
pub use control::{MAX_INHIBITORS, RebootPlan, Request};
pub use handle::Handle;
use pending::Pending;
use ports::{BundleFetcher, Courier, FetchFailure, MetadataSource, System};

/// Store key of the time of the last check whose metadata verified.
const LAST_VERIFIED_KEY: &str = "last_verified_at";
/// Store key of the highest role versions verified (the rollback floor). The floors' keys are
/// the store's: it keeps a second copy of them (`store::floors`).
const FLOOR_KEY: &str = crate::store::floors::METADATA_FLOOR_KEY;
/// Store key of the latest time this device is sure has passed (clock ratchet).
const LATEST_KNOWN_TIME_KEY: &str = crate::store::floors::LATEST_KNOWN_TIME_KEY;
/// Store key of the targets rolled back on this device.
const ROLLED_BACK_KEY: &str = crate::store::floors::ROLLED_BACK_KEY;
/// Settings key for automatic installation (on unless the user turned it off).
const AUTO_INSTALL_KEY: &str = "auto_install";
/// Most history entries one `GetHistory` returns.
pub const HISTORY_LIMIT: usize = 1000;

/// A request to the engine, with the channel its answer goes back on.
#[derive(Debug)]
pub enum Command {
    /// Check for updates now.
    CheckNow {
        reply: oneshot::Sender<Result<(), EngineError>>,
    },
    /// The newest `limit` history entries, newest first.
    History {
        limit: usize,
        reply: oneshot::Sender<Result<Vec<HistoryEntry>, EngineError>>,
    },
    /// Answered as soon as the engine gets to it: proves the loop is alive, and `Err` when
    /// the running step outlived its limit (watchdog; see `stall.rs`).
    Ping {
        reply: oneshot::Sender<Result<(), EngineError>>,
    },
    /// A user's or host's request ([`Request`]).
    Control {
        request: Request,
        reply: oneshot::Sender<Result<(), EngineError>>,
    },
    /// Take a host inhibitor; the answer is its id for [`Request::Release`].
    Inhibit {
        reason: String,
        reply: oneshot::Sender<Result<u64, EngineError>>,
    },
    /// Runs a closure on the store inside the engine's task: the tests make the real
    /// database fail this way while the engine runs.
    #[cfg(test)]
    WithStore(StoreHook),
}

/// A closure for [`Command::WithStore`].
#[cfg(test)]
pub struct StoreHook(pub Box<dyn FnOnce(&Store) + Send>);

#[cfg(test)]
impl std::fmt::Debug for StoreHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StoreHook")
    }
}

/// Why the engine refused or failed a command.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    /// Another operation is running.
    #[error("busy: {0}")]
    Busy(String),
    /// The store failed; nothing was changed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The store failed while the request was being carried out: what could not be recorded
    /// was not acted on. The message names the write that failed and SQLite's reason.
    #[error("{0}")]
    StoreFailed(String),
    /// The engine has stopped (the daemon is shutting down).
    #[error("the engine has stopped")]
    Stopped,
    /// There is nothing to install (or reboot into).
    #[error("{0}")]
    NothingToInstall(String),
    /// A rule forbids the request (e.g. a postponement beyond the bound).
    #[error("{0}")]
    PolicyRefused(String),
    /// The engine runs, but its running step outlived its limit (watchdog).
    #[error("{0}")]
    Stalled(String),
    /// The device's own storage failed (a full disk): the message says where and what to do.
    /// Not the update's fault, and nothing about the update is judged by it.
    #[error("{0}")]
    Storage(String),
}

/// Events announced as D-Bus signals.
#[derive(Debug, Clone, PartialEq)]
pub enum Notice {
    /// A verified security update became available (COM-0010).
    UpdateAvailable(Box<Offer>),
    /// An update attempt ended: installed and confirmed, failed, or rolled back.
    InstallFinished(Finished),
    /// The SIM moved to another operator profile, or to none (TES-0010).
    SubscriptionChanged(SubscriptionChange),
    /// The integrity verdict differs from the last one recorded (see `integrity.rs`).
    IntegrityChanged(Integrity),
    /// A reboot into an installed update is planned (told before it happens).
    RebootPending(RebootPlan),
    /// The store was unusable and was replaced at startup, floors rebuilt (`store::recover`).
    StoreRecovered(Box<Recovery>),
}

/// How an update attempt ended.
#[derive(Debug, Clone, PartialEq)]
pub struct Finished {
    /// `installed`, `failed` or `rolled-back`.
    pub outcome: &'static str,
    pub version: String,
    pub security_patch_level: String,
    pub detail: String,
    pub cves: Vec<String>,
}

/// What the adapters' watchers publish. A `watch` channel keeps only the latest value, which
/// is all the engine needs, and never grows however chatty the other side is.
#[derive(Debug)]
pub struct Inputs {
    pub rauc: watch::Receiver<RaucInfo>,
    pub modem: watch::Receiver<ModemInfo>,
    pub network: watch::Receiver<NetworkInfo>,
}

/// The adapter types one engine drives.
pub trait Ports: 'static {
    type Rauc: Rauc;
    type Metadata: MetadataSource;
    type Fetcher: BundleFetcher;
    type System: System;
    type Courier: Courier;
}

/// The adapters themselves.
pub struct Adapters<P: Ports> {
    pub rauc: Arc<P::Rauc>,
    pub metadata: Arc<P::Metadata>,
    /// One metadata source per configured operator profile, by profile name.
    pub operators: BTreeMap<String, Arc<P::Metadata>>,
    pub fetcher: Arc<P::Fetcher>,
    pub system: Arc<P::System>,
    /// Signs reports and delivers them to the fleet server.
    pub courier: Arc<P::Courier>,
}

/// Results of background steps, back on the engine's task.
#[derive(Debug)]
enum Internal {
    Checked(Box<Result<Verified, crate::metadata::client::MetadataError>>),
    /// The active operator's repository (sent just before the manufacturer's `Checked`).
    OperatorChecked(
        String,
        Box<Result<Verified, crate::metadata::client::MetadataError>>,
    ),
    Progress(u32),
    Downloaded(Result<PathBuf, FetchFailure>),
    Installed(Result<(), String>),
    /// RAUC let a limit pass (sent just before the step's own outcome; see `stall.rs`).
    RaucUnresponsive(String),
    HealthChecked(confirm::Confirmation),
    /// An integrity probe run finished (it does not make the engine busy).
    Probed(Integrity),
    /// A report for the fleet server was signed (why it was wanted); not busy either.
    ReportSigned(String, Result<ports::Signed, String>),
    /// The fleet server answered a report, or did not; whether it went over a costly link.
    ReportPosted(Result<(u16, Vec<u8>), String>, bool),
}

/// The engine task's state. Construct with [`Engine::new`], then `run` it.
pub struct Engine<C: Clock, P: Ports> {
    config: Arc<Config>,
    cadence: Cadence,
    store: Store,
    clock: C,
    ports: Adapters<P>,
    commands: mpsc::Receiver<Command>,
    inputs: Inputs,
    internal_tx: mpsc::UnboundedSender<Internal>,
    internal: mpsc::UnboundedReceiver<Internal>,
    notices: broadcast::Sender<Notice>,
    status: Status,
    publish: watch::Sender<Status>,
    checks: CheckHistory,
    last_verified: Option<Timestamp>,
    floor: RoleVersions,
    /// The update in progress, as persisted.
    pending: Option<Pending>,
    /// Metadata verified while RAUC was unavailable (so not yet judged against this device).
    unjudged: Option<Verified>,
    /// A background step is running (at most one at a time).
    busy: bool,
    /// When the running step must have ended, if it has a limit (watchdog).
    step_deadline: Option<tokio::time::Instant>,
    /// RAUC let a limit pass and has not been heard from since (the message).
    rauc_stalled: Option<String>,
    /// The last attempt's outcome (`failed`, `rolled-back`), shown until a new one starts.
    outcome: Option<UpdateState>,
    /// That step is a metadata check.
    checking: bool,
    /// `CheckNow` callers waiting for the running check to finish. Answered by the run loop
    /// as soon as no check runs (see [`Engine::answer_check_waiters`]), whatever path the
    /// check ended on.
    check_waiters: Vec<oneshot::Sender<Result<(), EngineError>>>,
    /// The first store failure while handling the current input: a command or check that
    /// ran into it answers with it (what was not recorded was not acted on).
    store_error: Option<String>,
    /// The check that ended while handling the current input could not keep its metadata
    /// (the device's storage failed): its callers are answered with this.
    storage_error: Option<String>,
    /// RAUC's view changed while a step ran; settle the pending update after it.
    rauc_changed_while_busy: bool,
    /// This process already asked for a reboot (never twice).
    reboot_requested: bool,
    /// Refusals already in the history, so each is recorded once, not at every check.
    refused_seen: refusals::Recorded,
    /// Subscription, operator channel and link cost (see [`cellular`]).
    cellular: cellular::CellularState,
    seed: u64,
    /// Integrity probe runs (`integrity.rs`).
    probing: integrity::Probing,
    /// The user's and host's wishes (see `control.rs`).
    control: control::ControlState,
    /// Reports on their way to the fleet server (see `delivery.rs`).
    delivery: delivery::DeliveryState,
}

impl<C: Clock, P: Ports> Engine<C, P> {
    /// How long from the engine's clock until `t` (zero once it has passed).
    fn until(&self, t: Timestamp) -> std::time::Duration {
        let d = t
            .duration_since(self.clock.now())
            .max(jiff::SignedDuration::ZERO);
        std::time::Duration::try_from(d).unwrap_or_default()
    }

    /// Runs until `shutdown` completes or every [`Handle`] is dropped.
    pub async fn run(mut self, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        // Start from the watchers' latest view, not the one seen at construction.
        self.status.rauc = self.inputs.rauc.borrow_and_update().clone();
        self.status.modem = self.inputs.modem.borrow_and_update().clone();
        self.status.network = self.inputs.network.borrow_and_update().clone();
        // Told once the service is up, so that clients already waiting see it.
        if let Some(r) = self.store.take_recovery() {
            self.notify(Notice::StoreRecovered(Box::new(r)));
        }
        self.resume();
        self.on_modem_changed();
        self.start_probe();
        self.refresh_derived();
        self.publish();
        loop {
            self.store_error = None;
            self.storage_error = None;
            let wait = if self.busy {
                // The running step reports back; the schedule resumes after it.
                std::time::Duration::from_secs(24 * 3600)
            } else {
                let next = policy::next_check(&self.cadence, &self.checks, self.seed);
                // An update waiting for an operator's approval or server is looked at again
                // when that wait ends.
                // A wake time already past (its check failed) must not spin.
                let next = match self.cellular.wake_at {
                    Some(w) if w > self.clock.now() => w.min(next),
                    _ => next,
                };
                self.until(next)
            };
            let control_deadline = self.control_deadline();
            let control_wait = control_deadline.map(|t| self.until(t)).unwrap_or_default();
            let delivery_deadline = self.delivery_deadline();
            let delivery_wait = delivery_deadline.map(|t| self.until(t)).unwrap_or_default();
            tokio::select! {
                () = &mut shutdown => break,
                cmd = self.commands.recv() => match cmd {
                    Some(cmd) => self.handle(cmd),
                    None => break,
                },
                Some(event) = self.internal.recv() => self.on_internal(event),
                Ok(()) = self.inputs.rauc.changed() => {
                    self.status.rauc = self.inputs.rauc.borrow_and_update().clone();
                    self.on_rauc_heard();
                    self.on_rauc_changed();
                    self.start_probe();
                }
                Ok(()) = self.inputs.modem.changed() => {
                    self.status.modem = self.inputs.modem.borrow_and_update().clone();
                    self.on_modem_changed();
                }
                Ok(()) = self.inputs.network.changed() => {
                    self.status.network = self.inputs.network.borrow_and_update().clone();
                    self.on_network_changed();
                }
                () = tokio::time::sleep(wait), if !self.busy => self.start_check(),
                () = tokio::time::sleep(control_wait),
                    if !self.busy && control_deadline.is_some() => self.reconsider(),
                // Whatever is due is done by `tend_delivery` below.
                () = tokio::time::sleep(delivery_wait), if delivery_deadline.is_some() => {}
            }
            self.answer_check_waiters();
            self.refresh_derived();
            // Before publishing: what it changes (the queue's length) shows in this turn.
            self.tend_delivery();
            self.publish();
        }
        tracing::debug!("engine stopped");
    }

    fn handle(&mut self, cmd: Command) {
        match cmd {
            Command::CheckNow { reply } => {
                if self.checking {
                    self.check_waiters.push(reply);
                } else if self.busy {
                    let _ = reply.send(Err(EngineError::Busy(format!(
                        "an operation is running ({})",
                        self.status.state.as_str()
                    ))));
                } else {
                    // Answered when the check has finished (see `finish_check`).
                    self.check_waiters.push(reply);
                    self.start_check();
                }
            }
            Command::History { limit, reply } => {
                let result = self
                    .store
                    .history(limit.min(HISTORY_LIMIT))
                    .map_err(EngineError::from);
                let _ = reply.send(result);
            }
            Command::Ping { reply } => {
                let _ = reply.send(self.ping());
            }
            Command::Control { request, reply } => {
                let result = self.control(request);
                let _ = reply.send(self.unless_store_failed(result));
            }
            Command::Inhibit { reason, reply } => {
                let _ = reply.send(self.inhibit(reason));
            }
            #[cfg(test)]
            Command::WithStore(hook) => (hook.0)(&self.store),
        }
    }

    /// `result`, unless a store write failed while it was produced: then that failure.
    fn unless_store_failed<T>(&mut self, result: Result<T, EngineError>) -> Result<T, EngineError> {
        match (result, self.store_error.take()) {
            (Ok(_), Some(message)) => Err(EngineError::StoreFailed(message)),
            (result, _) => result,
        }
    }

    /// Answers every `CheckNow` caller once no check runs. Called by the run loop after every
    /// input, so a check that ends on any path — verified, refused, failed, or stopped by a
    /// store failure — answers its callers in the same turn: with the store's error when a
    /// write failed, with the storage failure when the metadata could not be kept, else `Ok`
    /// (the outcome itself is in `LastCheckResult`).
    fn answer_check_waiters(&mut self) {
        if self.checking || self.check_waiters.is_empty() {
            return;
        }
        for waiter in self.check_waiters.drain(..) {
            let answer = match (&self.store_error, &self.storage_error) {
                (Some(message), _) => Err(EngineError::StoreFailed(message.clone())),
                (None, Some(message)) => Err(EngineError::Storage(message.clone())),
                (None, None) => Ok(()),
            };
            let _ = waiter.send(answer);
        }
    }

    /// Recomputes what follows from the state and the time.
    fn refresh_derived(&mut self) {
        let level = self
            .status
            .installed
            .as_ref()
            .map(|i| i.security_patch_level);
        self.status.staleness =
            policy::staleness(self.clock.now(), level, self.last_verified, &self.cadence);
        self.refresh_source();
        self.refresh_support();
        self.refresh_postponement();
        self.refresh_rauc_availability();
    }

    fn publish(&self) {
        self.publish.send_if_modified(|current| {
            if *current == self.status {
                false
            } else {
                current.clone_from(&self.status);
                true
            }
        });
    }

    fn notify(&mut self, notice: Notice) {
        self.report_notice(&notice);
        // No subscriber (no D-Bus service in a test) is fine.
        let _ = self.notices.send(notice);
    }

    /// The configuration the engine runs with.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Records a store failure where a user sees it; the step that needed it stops, and the
    /// command or check being handled answers with it.
    fn store_failed(&mut self, what: &str, e: StoreError) {
        tracing::error!(error = %e, "{what}");
        let message = format!("{what}: {e}");
        self.store_error.get_or_insert_with(|| message.clone());
        self.status.last_error = message;
        self.status.state = UpdateState::Failed;
    }

    /// Records the outcome of a check: shown at once, stored when the store allows. Its
    /// callers are answered by the run loop ([`Engine::answer_check_waiters`]).
    fn record_check(&mut self, record: CheckRecord) {
        self.status.last_check = Some(record.clone());
        if let Err(e) = self.store.set_last_check(&record) {
            self.store_failed("cannot record the check", e);
        }
    }
}

#[cfg(test)]
mod tests;
