//! Building the engine: its state from the store's records (or the factory image the
//! configuration describes) and the configuration, its channels, and the first published
//! status.

use std::sync::Arc;

use jiff::Timestamp;
use tokio::sync::{broadcast, mpsc, watch};

use super::pending::{self, Pending};
use super::{
    AUTO_INSTALL_KEY, Adapters, Clock, Engine, EngineError, FLOOR_KEY, Handle, Inputs,
    LAST_VERIFIED_KEY, Ports, control, refusals,
};
use crate::config::Config;
use crate::policy::{Cadence, schedule::CheckHistory};
use crate::status::{Installed, Staleness, Status, UpdateState};
use crate::store::Store;

impl<C: Clock, P: Ports> Engine<C, P> {
    /// Builds the engine from the store's records and the configuration. `seed` spreads the
    /// check times of a fleet (see [`policy::schedule`](crate::policy::schedule)).
    pub fn new(
        config: Arc<Config>,
        store: Store,
        clock: C,
        ports: Adapters<P>,
        inputs: Inputs,
        seed: u64,
    ) -> Result<(Engine<C, P>, Handle), EngineError> {
        let now = clock.now();
        let installed = store.installed()?.or_else(|| factory_image(&config));
        let last_check = store.last_check()?;
        let last_verified = store
            .state(LAST_VERIFIED_KEY)?
            .and_then(|s| s.parse::<Timestamp>().ok());
        let floor: crate::metadata::client::RoleVersions = store
            .state(FLOOR_KEY)?
            .and_then(|s| serde_json::from_str(&s).ok())
            .unwrap_or_default();
        let auto_install = store
            .setting(AUTO_INSTALL_KEY)?
            .map(|v| v != "false")
            .unwrap_or(true);
        let control = control::ControlState::load(&store, &config, now, seed)?;
        let refused_seen = refusals::Recorded::load(&store);
        let mut last_error = String::new();
        let pending = match store.state(pending::KEY)? {
            Some(s) => match Pending::from_json(&s) {
                Ok(p) => Some(p),
                Err(e) => {
                    // Not guessed at: reported, and the next check starts afresh.
                    tracing::error!("{e}");
                    last_error = e;
                    None
                }
            },
            None => None,
        };
        let status = Status {
            state: UpdateState::Idle,
            progress: 0,
            installed,
            last_check,
            staleness: Staleness::Unverified,
            available: None,
            model: config.device.model.clone(),
            hardware_id: config.device.hardware_id.clone(),
            auto_install,
            postponed_until: None,
            last_error,
            rauc: inputs.rauc.borrow().clone(),
            modem: inputs.modem.borrow().clone(),
            integrity: Default::default(),
            network: inputs.network.borrow().clone(),
            subscription: Default::default(),
            source: Default::default(),
            inhibitors: Vec::new(),
            support: Default::default(),
            verified: crate::status::VerifiedMetadata {
                at: last_verified,
                versions: floor.clone(),
            },
            delivery: Default::default(),
        };
        let (publish, status_rx) = watch::channel(status.clone());
        let (commands_tx, commands) = mpsc::channel(32);
        let (internal_tx, internal) = mpsc::unbounded_channel();
        let (notices, _) = broadcast::channel(16);
        let mut engine = Engine {
            cadence: Cadence {
                first_check_spread: config.spread.first_check.0,
                ..Cadence::from(&config.check)
            },
            config,
            store,
            clock,
            ports,
            commands,
            inputs,
            internal_tx,
            internal,
            notices: notices.clone(),
            status,
            publish,
            checks: CheckHistory {
                started: now,
                last_attempt: None,
                consecutive_failures: 0,
            },
            last_verified,
            floor,
            pending,
            unjudged: None,
            busy: false,
            step_deadline: None,
            rauc_stalled: None,
            outcome: None,
            checking: false,
            check_waiters: Vec::new(),
            store_error: None,
            storage_error: None,
            rauc_changed_while_busy: false,
            reboot_requested: false,
            refused_seen,
            cellular: Default::default(),
            seed,
            probing: Default::default(),
            control,
            delivery: Default::default(),
        };
        engine.load_cellular();
        engine.load_delivery();
        engine.status.state = engine.state_for_pending();
        engine.status.available = engine.offer_for_pending();
        engine.refresh_derived();
        engine.publish();
        let handle = Handle {
            commands: commands_tx,
            status: status_rx,
            notices,
        };
        Ok((engine, handle))
    }
}

/// The factory image as the configuration describes it, until the store knows better.
fn factory_image(config: &Config) -> Option<Installed> {
    let level = config.device.security_patch_level?;
    Some(Installed {
        version: config.device.version.clone(),
        feature_release: config.device.feature_release().to_owned(),
        security_patch_level: level.0,
        applied_at: None,
    })
}
