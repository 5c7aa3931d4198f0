//! The engine: one task that owns all of the agent's state.
//!
//! Everything that changes state arrives here as an input — a [`Command`] from the D-Bus
//! service, a new [`RaucInfo`] or [`ModemInfo`] from an adapter's watcher, or a timer — and is
//! handled one at a time, so there are no locks around state and no interleavings to reason
//! about. The engine asks [`crate::policy`] what to do, writes every transition to the
//! [`Store`] before acting on it, and publishes the resulting [`Status`] through a
//! `watch` channel that the D-Bus service reads.

use std::future::Future;
use std::sync::Arc;

use jiff::Timestamp;
use tokio::sync::{mpsc, oneshot, watch};

use crate::clock::Clock;
use crate::config::Config;
use crate::policy::{self, Cadence, schedule::CheckHistory};
use crate::status::{CheckRecord, Installed, ModemInfo, RaucInfo, Staleness, Status, UpdateState};
use crate::store::{HistoryEntry, Store, StoreError};

/// Store key of the time of the last check whose metadata verified.
const LAST_VERIFIED_KEY: &str = "last_verified_at";
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
    /// Answered as soon as the engine gets to it: proves the loop is alive (watchdog).
    Ping { reply: oneshot::Sender<()> },
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
    /// The engine has stopped (the daemon is shutting down).
    #[error("the engine has stopped")]
    Stopped,
}

/// What other tasks hold to talk to the engine. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Handle {
    commands: mpsc::Sender<Command>,
    status: watch::Receiver<Status>,
}

impl Handle {
    /// The latest published status.
    pub fn status(&self) -> Status {
        self.status.borrow().clone()
    }

    /// A receiver that wakes on every published change.
    pub fn subscribe(&self) -> watch::Receiver<Status> {
        self.status.clone()
    }

    async fn ask<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, EngineError> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(make(tx))
            .await
            .map_err(|_| EngineError::Stopped)?;
        rx.await.map_err(|_| EngineError::Stopped)
    }

    pub async fn check_now(&self) -> Result<(), EngineError> {
        self.ask(|reply| Command::CheckNow { reply }).await?
    }

    pub async fn history(&self, limit: usize) -> Result<Vec<HistoryEntry>, EngineError> {
        self.ask(|reply| Command::History { limit, reply }).await?
    }

    pub async fn ping(&self) -> Result<(), EngineError> {
        self.ask(|reply| Command::Ping { reply }).await
    }
}

/// What the adapters' watchers publish. A `watch` channel keeps only the latest value, which
/// is all the engine needs, and never grows however chatty the other side is.
#[derive(Debug)]
pub struct Inputs {
    pub rauc: watch::Receiver<RaucInfo>,
    pub modem: watch::Receiver<ModemInfo>,
}

/// The engine task's state. Construct with [`Engine::new`], then `run` it.
pub struct Engine<C: Clock> {
    config: Arc<Config>,
    cadence: Cadence,
    store: Store,
    clock: C,
    commands: mpsc::Receiver<Command>,
    inputs: Inputs,
    status: Status,
    publish: watch::Sender<Status>,
    checks: CheckHistory,
    last_verified: Option<Timestamp>,
    seed: u64,
}

impl<C: Clock> Engine<C> {
    /// Builds the engine from the store's records and the configuration. `seed` spreads the
    /// check times of a fleet (see [`policy::schedule`]).
    pub fn new(
        config: Arc<Config>,
        store: Store,
        clock: C,
        inputs: Inputs,
        seed: u64,
    ) -> Result<(Engine<C>, Handle), EngineError> {
        let now = clock.now();
        let installed = store.installed()?.or_else(|| factory_image(&config));
        let last_check = store.last_check()?;
        let last_verified = store
            .state(LAST_VERIFIED_KEY)?
            .and_then(|s| s.parse::<Timestamp>().ok());
        let auto_install = store
            .setting(AUTO_INSTALL_KEY)?
            .map(|v| v != "false")
            .unwrap_or(true);
        let status = Status {
            state: UpdateState::Idle,
            progress: 0,
            installed,
            last_check,
            staleness: Staleness::Unverified,
            model: config.device.model.clone(),
            hardware_id: config.device.hardware_id.clone(),
            auto_install,
            postponed_until: None,
            last_error: String::new(),
            rauc: inputs.rauc.borrow().clone(),
            modem: inputs.modem.borrow().clone(),
        };
        let (publish, status_rx) = watch::channel(status.clone());
        let (commands_tx, commands) = mpsc::channel(32);
        let mut engine = Engine {
            cadence: Cadence::from(&config.check),
            config,
            store,
            clock,
            commands,
            inputs,
            status,
            publish,
            checks: CheckHistory {
                started: now,
                last_attempt: None,
                consecutive_failures: 0,
            },
            last_verified,
            seed,
        };
        engine.refresh_derived();
        engine.publish();
        let handle = Handle {
            commands: commands_tx,
            status: status_rx,
        };
        Ok((engine, handle))
    }

    /// Runs until `shutdown` completes or every [`Handle`] is dropped.
    pub async fn run(mut self, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        loop {
            let next = policy::next_check(&self.cadence, &self.checks, self.seed);
            let wait = next
                .duration_since(self.clock.now())
                .max(jiff::SignedDuration::ZERO);
            let wait = std::time::Duration::try_from(wait).unwrap_or_default();
            tokio::select! {
                () = &mut shutdown => break,
                cmd = self.commands.recv() => match cmd {
                    Some(cmd) => self.handle(cmd).await,
                    None => break,
                },
                Ok(()) = self.inputs.rauc.changed() => {
                    self.status.rauc = self.inputs.rauc.borrow_and_update().clone();
                }
                Ok(()) = self.inputs.modem.changed() => {
                    self.status.modem = self.inputs.modem.borrow_and_update().clone();
                }
                () = tokio::time::sleep(wait) => self.check(),
            }
            self.refresh_derived();
            self.publish();
        }
        tracing::debug!("engine stopped");
    }

    async fn handle(&mut self, cmd: Command) {
        match cmd {
            Command::CheckNow { reply } => {
                let result = if self.is_busy() {
                    Err(EngineError::Busy(format!(
                        "an operation is running ({})",
                        self.status.state.as_str()
                    )))
                } else {
                    self.check();
                    Ok(())
                };
                let _ = reply.send(result);
            }
            Command::History { limit, reply } => {
                let result = self
                    .store
                    .history(limit.min(HISTORY_LIMIT))
                    .map_err(EngineError::from);
                let _ = reply.send(result);
            }
            Command::Ping { reply } => {
                let _ = reply.send(());
            }
        }
    }

    fn is_busy(&self) -> bool {
        !matches!(
            self.status.state,
            UpdateState::Idle
                | UpdateState::Available
                | UpdateState::Deferred
                | UpdateState::Failed
                | UpdateState::RolledBack
        )
    }

    /// One check for updates.
    ///
    /// No update source is wired in yet, so nothing can be verified; the outcome is recorded
    /// as exactly that, and staleness stays `unverified` — never "up to date".
    fn check(&mut self) {
        let now = self.clock.now();
        let record = CheckRecord {
            at: now,
            verified: false,
            message: "no update source configured".to_owned(),
        };
        // Persist first: the record must survive a crash right after it is shown.
        if let Err(e) = self.store.set_last_check(&record) {
            tracing::error!(error = %e, "cannot record the check");
            self.status.last_error = e.to_string();
        }
        tracing::info!(verified = record.verified, "{}", record.message);
        self.checks.last_attempt = Some(now);
        // Not retryable: nothing will change until the configuration does, so the next
        // attempt waits a full interval instead of backing off from 5 minutes.
        self.checks.consecutive_failures = 0;
        self.status.last_check = Some(record);
        self.status.state = UpdateState::Idle;
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

    /// The configuration the engine runs with.
    pub fn config(&self) -> &Config {
        &self.config
    }
}

/// The factory image as the configuration describes it, until the store knows better.
fn factory_image(config: &Config) -> Option<Installed> {
    let level = config.device.security_patch_level?;
    Some(Installed {
        version: config.device.version.clone(),
        security_patch_level: level.0,
        applied_at: None,
    })
}

#[cfg(test)]
mod tests;
