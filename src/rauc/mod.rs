//! RAUC adapter: our bindings to `rauc service`'s D-Bus API (`de.pengutronix.rauc.Installer`
//! at `/` on the system bus).
//!
//! - [`proxy`]: the zbus proxy, generated from RAUC 1.8's interface file and typed by hand.
//! - [`RaucClient`]: the calls the agent makes (`info`, `install`, `mark`, …), with errors
//!   classified into [`RaucError`] (RAUC absent vs. RAUC said no).
//! - [`Rauc`]: the trait the engine depends on; [`RaucClient`] is the real implementation and
//!   [`fake::FakeRauc`] the test double.
//! - [`watch()`]: follows RAUC appearing, disappearing and changing, reporting [`RaucInfo`]
//!   snapshots; signal-driven, no polling.
//!
//! # RAUC versions
//!
//! The baseline is RAUC 1.8 (Debian 12). Newer methods are used only when the running service
//! has them: [`RaucClient::capabilities`] introspects `/` once and reports e.g.
//! [`Capabilities::inspect_bundle`] (RAUC ≥ 1.9). Behaviour of 1.8 worth knowing, seen on a live
//! `rauc service`:
//!
//! - `InstallBundle` returns at once; the outcome is the `Completed(i)` signal (0 = success)
//!   and the `LastError` property. While installing, RAUC refuses `GetSlotStatus`, `Mark`,
//!   `Info` and another install with "already processing a different method"
//!   ([`RaucError::is_busy`]).
//! - `Progress` changes ~20 times per installation, each as its own `PropertiesChanged`.
//! - `Mark` emits no signal at all: whoever marks must refresh (see [`watch_with_refresh`]).
//! - `GetPrimary` returns a slot *name* (`rootfs.1`), `BootSlot` a *bootname* (`A`).
//! - Errors RAUC returns have GLib's unmapped name
//!   (`org.gtk.GDBus.UnmappedGError.Quark._g_2dio_2derror_2dquark.Code30`); only the message
//!   tells them apart.

mod error;
pub mod fake;
mod parse;
pub mod proxy;
mod watch;

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

use tokio::sync::OnceCell;
use zbus::fdo::{IntrospectableProxy, PropertiesChanged, PropertiesProxy};
use zbus::message::Type as MessageType;
use zbus::names::InterfaceName;
use zbus::proxy::CacheProperties;
use zbus::{Connection, MatchRule, Message};

pub use error::{RaucError, Subject};
pub use parse::{
    BundleInfo, Capabilities, bundle_info_from_inspect, capabilities_from_introspection, info_from,
    progress_from, slot_from, slots_from,
};
pub use proxy::Progress;
pub use watch::{watch, watch_with_refresh};

use crate::buswatch::{Owned, OwnedSignals};
use crate::status::{RaucInfo, SlotInfo};
use proxy::{BUS_NAME, Completed, INTERFACE, InstallerProxy, OBJECT_PATH};

/// What `Mark` should do to a slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MarkState {
    /// Keep the slot bootable (confirm a boot).
    Good,
    /// Make the slot unbootable (reject a boot).
    Bad,
    /// Boot this slot next.
    Active,
}

impl MarkState {
    /// The string RAUC expects.
    pub fn as_str(self) -> &'static str {
        match self {
            MarkState::Good => "good",
            MarkState::Bad => "bad",
            MarkState::Active => "active",
        }
    }
}

impl fmt::Display for MarkState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for MarkState {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "good" => Ok(MarkState::Good),
            "bad" => Ok(MarkState::Bad),
            "active" => Ok(MarkState::Active),
            other => Err(format!(
                "unknown mark state {other:?} (expected good, bad or active)"
            )),
        }
    }
}

/// A signal from RAUC, in the order RAUC sent them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RaucEvent {
    /// The `Progress` property changed.
    Progress(Progress),
    /// `Completed(result)`: an installation finished, 0 on success.
    Completed(i32),
}

/// The RAUC operations the engine uses. [`RaucClient`] talks to the real service;
/// [`fake::FakeRauc`] records calls and returns scripted results.
pub trait Rauc: Send + Sync + 'static {
    /// A fresh snapshot of RAUC's state and slots.
    fn info(&self) -> impl Future<Output = Result<RaucInfo, RaucError>> + Send;

    /// Start installing `bundle` (an absolute path). `Ok` means RAUC accepted the job, not that
    /// it succeeded; see [`Rauc::install_and_wait`].
    fn install(&self, bundle: &Path) -> impl Future<Output = Result<(), RaucError>> + Send;

    /// Install `bundle` and wait until RAUC reports completion, passing progress along.
    /// Fails with [`RaucError::InstallFailed`] (carrying `LastError`) when RAUC reports failure,
    /// and with [`RaucError::Unavailable`] if RAUC leaves the bus meanwhile.
    fn install_and_wait(
        &self,
        bundle: &Path,
        on_progress: impl FnMut(Progress) + Send,
    ) -> impl Future<Output = Result<(), RaucError>> + Send;

    /// `Mark(state, slot)`; `slot` is `booted`, `other` or a slot name. Returns RAUC's
    /// `(slot name, message)`, e.g. `("rootfs.0", "marked slot rootfs.0 as good")`.
    fn mark(
        &self,
        state: MarkState,
        slot: &str,
    ) -> impl Future<Output = Result<(String, String), RaucError>> + Send;

    /// The slot name the bootloader boots next (`GetPrimary`).
    fn primary(&self) -> impl Future<Output = Result<String, RaucError>> + Send;

    /// Compatible and version of a bundle file, as RAUC verifies it.
    fn bundle_info(
        &self,
        bundle: &Path,
    ) -> impl Future<Output = Result<BundleInfo, RaucError>> + Send;
}

/// Client for the RAUC service on a bus connection. Cheap to clone.
#[derive(Debug, Clone)]
pub struct RaucClient {
    conn: Connection,
    /// Introspected once per client; an OS update that changes RAUC also reboots the agent.
    capabilities: Arc<OnceCell<Capabilities>>,
    /// Poked after `Mark`, which RAUC announces with no signal, so a
    /// [`watch_with_refresh`] watcher re-reads the slots.
    refresh: Option<Arc<tokio::sync::Notify>>,
}

impl RaucClient {
    /// A client on `conn` (normally the system bus). Makes no call yet.
    pub fn new(conn: Connection) -> RaucClient {
        RaucClient {
            conn,
            capabilities: Arc::new(OnceCell::new()),
            refresh: None,
        }
    }

    /// Pokes `refresh` after every successful `Mark` (see [`watch_with_refresh`]).
    pub fn with_refresh(mut self, refresh: Arc<tokio::sync::Notify>) -> RaucClient {
        self.refresh = Some(refresh);
        self
    }

    /// The bus connection.
    pub fn connection(&self) -> &Connection {
        &self.conn
    }

    async fn installer(&self) -> Result<InstallerProxy<'static>, RaucError> {
        InstallerProxy::builder(&self.conn)
            // No cache: every read is a fresh call, and no hidden background task.
            .cache_properties(CacheProperties::No)
            .build()
            .await
            .map_err(|e| RaucError::from_zbus("(proxy)", Subject::None, e))
    }

    async fn properties(&self) -> Result<PropertiesProxy<'static>, RaucError> {
        PropertiesProxy::builder(&self.conn)
            .destination(BUS_NAME)
            .path(OBJECT_PATH)
            .cache_properties(CacheProperties::No)
            .build()
            .await
            .map_err(|e| RaucError::from_zbus("(proxy)", Subject::None, e))
    }

    /// Which optional methods the running RAUC has. Introspects `/` on first use; a failure
    /// (RAUC absent) is not cached, so a later call tries again.
    pub async fn capabilities(&self) -> Result<Capabilities, RaucError> {
        self.capabilities
            .get_or_try_init(|| async {
                let proxy = IntrospectableProxy::builder(&self.conn)
                    .destination(BUS_NAME)
                    .path(OBJECT_PATH)
                    .build()
                    .await
                    .map_err(|e| RaucError::from_zbus("Introspect", Subject::None, e))?;
                let xml = proxy
                    .introspect()
                    .await
                    .map_err(|e| RaucError::from_fdo("Introspect", Subject::None, e))?;
                Ok(capabilities_from_introspection(&xml))
            })
            .await
            .copied()
    }

    /// A fresh [`RaucInfo`]: `Compatible`, `BootSlot`, `Operation`, `LastError` (one `GetAll`)
    /// and `GetSlotStatus`. While RAUC installs, `GetSlotStatus` is refused
    /// ([`RaucError::is_busy`]).
    pub async fn info(&self) -> Result<RaucInfo, RaucError> {
        self.snapshot(None).await
    }

    /// Like [`info`](Self::info), but while RAUC is busy installing, reuse `previous_slots`
    /// instead of asking (and being refused).
    pub(crate) async fn snapshot(
        &self,
        previous_slots: Option<&[SlotInfo]>,
    ) -> Result<RaucInfo, RaucError> {
        let props = self
            .properties()
            .await?
            .get_all(InterfaceName::from_static_str_unchecked(INTERFACE))
            .await
            .map_err(|e| RaucError::from_fdo("GetAll", Subject::None, e))?;
        let idle = parse::string_entry(&props, "Operation") == "idle";
        let slots = match previous_slots {
            Some(previous) if !idle => previous.to_vec(),
            _ => match self.installer().await?.get_slot_status().await {
                Ok(status) => slots_from(&status),
                Err(e) => {
                    let e = RaucError::from_zbus("GetSlotStatus", Subject::None, e);
                    match previous_slots {
                        Some(previous) if e.is_busy() => previous.to_vec(),
                        _ => return Err(e),
                    }
                }
            },
        };
        Ok(info_from(&props, slots))
    }

    /// Start installing `bundle` with `InstallBundle(path, {})`, falling back to the old
    /// `Install(path)` when the service doesn't know `InstallBundle`.
    pub async fn install(&self, bundle: &Path) -> Result<(), RaucError> {
        let source = bundle_arg(bundle)?;
        let subject = || Subject::Bundle(bundle.to_owned());
        let proxy = self.installer().await?;
        match proxy.install_bundle(source, HashMap::new()).await {
            Ok(()) => Ok(()),
            Err(e) => match RaucError::from_zbus("InstallBundle", subject(), e) {
                RaucError::Unsupported { .. } => proxy
                    .install(source)
                    .await
                    .map_err(|e| RaucError::from_zbus("Install", subject(), e)),
                other => Err(other),
            },
        }
    }

    /// See [`Rauc::install_and_wait`]. Only RAUC's own signals count: a `Completed` from
    /// anyone but the current owner of `de.pengutronix.rauc` is ignored ([`OwnedSignals`]), so
    /// another local user cannot end an installation RAUC has not finished.
    pub async fn install_and_wait(
        &self,
        bundle: &Path,
        mut on_progress: impl FnMut(Progress) + Send,
    ) -> Result<(), RaucError> {
        let subject = || Subject::Bundle(bundle.to_owned());
        // Subscribe before starting, so neither the result nor RAUC's exit can slip by.
        let mut signals = OwnedSignals::subscribe(&self.conn, BUS_NAME, rauc_signals_rule())
            .await
            .map_err(|e| RaucError::from_zbus("AddMatch", subject(), e))?;
        self.install(bundle).await?;
        loop {
            match signals.next().await {
                Some(Owned::Signal(msg)) => match event_from(&msg) {
                    Some(RaucEvent::Progress(p)) => on_progress(p),
                    Some(RaucEvent::Completed(0)) => return Ok(()),
                    Some(RaucEvent::Completed(code)) => {
                        let message = self
                            .last_error()
                            .await
                            .unwrap_or_else(|e| format!("(LastError unreadable: {e})"));
                        return Err(RaucError::InstallFailed {
                            bundle: bundle.to_owned(),
                            code,
                            message,
                        });
                    }
                    None => {}
                },
                // RAUC was started by our call (bus activation): from now on it is the owner.
                Some(Owned::OwnerChanged(Some(_))) => {}
                Some(Owned::OwnerChanged(None)) => {
                    return Err(RaucError::Unavailable {
                        method: "InstallBundle",
                        subject: subject(),
                        detail: "RAUC left the bus during the installation".into(),
                    });
                }
                None => {
                    return Err(RaucError::Bus {
                        method: "InstallBundle",
                        subject: subject(),
                        detail: "bus connection closed during installation".into(),
                    });
                }
            }
        }
    }

    /// `Mark(state, slot)`; see [`Rauc::mark`]. RAUC emits no signal for it, so a
    /// [`watch_with_refresh`] watcher should be poked afterwards.
    pub async fn mark(&self, state: MarkState, slot: &str) -> Result<(String, String), RaucError> {
        let marked = self
            .installer()
            .await?
            .mark(state.as_str(), slot)
            .await
            .map_err(|e| RaucError::from_zbus("Mark", Subject::Slot(slot.to_owned()), e))?;
        if let Some(refresh) = &self.refresh {
            refresh.notify_one();
        }
        Ok(marked)
    }

    /// `GetPrimary`: the slot *name* the bootloader boots next.
    pub async fn primary(&self) -> Result<String, RaucError> {
        self.installer()
            .await?
            .get_primary()
            .await
            .map_err(|e| RaucError::from_zbus("GetPrimary", Subject::None, e))
    }

    /// Compatible and version of `bundle` via `InspectBundle` (RAUC ≥ 1.9) or `Info` (1.8).
    /// RAUC checks the bundle's signature either way.
    pub async fn bundle_info(&self, bundle: &Path) -> Result<BundleInfo, RaucError> {
        let source = bundle_arg(bundle)?;
        let subject = || Subject::Bundle(bundle.to_owned());
        let proxy = self.installer().await?;
        if self.capabilities().await?.inspect_bundle {
            match proxy.inspect_bundle(source, HashMap::new()).await {
                Ok(info) => return Ok(bundle_info_from_inspect(&info)),
                Err(e) => match RaucError::from_zbus("InspectBundle", subject(), e) {
                    RaucError::Unsupported { .. } => {} // Introspection lied; use Info.
                    other => return Err(other),
                },
            }
        }
        let (compatible, version) = proxy
            .info(source)
            .await
            .map_err(|e| RaucError::from_zbus("Info", subject(), e))?;
        Ok(BundleInfo {
            compatible,
            version,
            manifest_hash: String::new(),
        })
    }

    /// The `Progress` property.
    pub async fn progress(&self) -> Result<Progress, RaucError> {
        self.installer()
            .await?
            .progress()
            .await
            .map_err(|e| RaucError::from_zbus("Get(Progress)", Subject::None, e))
    }

    /// The `LastError` property.
    pub async fn last_error(&self) -> Result<String, RaucError> {
        self.installer()
            .await?
            .last_error()
            .await
            .map_err(|e| RaucError::from_zbus("Get(LastError)", Subject::None, e))
    }
}

/// Every signal RAUC's object sends (`PropertiesChanged`, `Completed`).
///
/// The bus matches `sender` against the current owner of the well-known name for broadcasts;
/// a signal addressed to the agent passes it anyway, so whoever reads these signals must go
/// through [`OwnedSignals`], which believes only the current owner.
pub(crate) fn rauc_signals_rule() -> MatchRule<'static> {
    MatchRule::builder()
        .msg_type(MessageType::Signal)
        .sender(BUS_NAME)
        .path(OBJECT_PATH)
        .build()
        .expect("static match rule is valid")
}

/// A [`RaucEvent`] from a signal message, if it is one.
fn event_from(msg: &Message) -> Option<RaucEvent> {
    if let Some(completed) = Completed::from_message(msg.clone()) {
        return completed
            .args()
            .ok()
            .map(|a| RaucEvent::Completed(a.result));
    }
    let changed = PropertiesChanged::from_message(msg.clone())?;
    let args = changed.args().ok()?;
    if args.interface_name().as_str() != INTERFACE {
        return None;
    }
    args.changed_properties()
        .get("Progress")
        .and_then(progress_from)
        .map(RaucEvent::Progress)
}

/// The bundle path as RAUC needs it: absolute (RAUC resolves relative paths against its own
/// working directory) and UTF-8 (D-Bus strings are).
fn bundle_arg(bundle: &Path) -> Result<&str, RaucError> {
    match bundle.to_str() {
        Some(s) if bundle.is_absolute() => Ok(s),
        _ => Err(RaucError::InvalidPath(PathBuf::from(bundle))),
    }
}

impl Rauc for RaucClient {
    async fn info(&self) -> Result<RaucInfo, RaucError> {
        RaucClient::info(self).await
    }

    async fn install(&self, bundle: &Path) -> Result<(), RaucError> {
        RaucClient::install(self, bundle).await
    }

    async fn install_and_wait(
        &self,
        bundle: &Path,
        on_progress: impl FnMut(Progress) + Send,
    ) -> Result<(), RaucError> {
        RaucClient::install_and_wait(self, bundle, on_progress).await
    }

    async fn mark(&self, state: MarkState, slot: &str) -> Result<(String, String), RaucError> {
        RaucClient::mark(self, state, slot).await
    }

    async fn primary(&self) -> Result<String, RaucError> {
        RaucClient::primary(self).await
    }

    async fn bundle_info(&self, bundle: &Path) -> Result<BundleInfo, RaucError> {
        RaucClient::bundle_info(self, bundle).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mark_state_strings() {
        for s in [MarkState::Good, MarkState::Bad, MarkState::Active] {
            assert_eq!(s.as_str().parse::<MarkState>(), Ok(s));
            assert_eq!(s.to_string(), s.as_str());
        }
        assert!("maybe".parse::<MarkState>().is_err());
    }

    #[test]
    fn bundle_paths_must_be_absolute() {
        assert_eq!(bundle_arg(Path::new("/data/u.raucb")), Ok("/data/u.raucb"));
        assert_eq!(
            bundle_arg(Path::new("u.raucb")),
            Err(RaucError::InvalidPath("u.raucb".into()))
        );
        #[cfg(unix)]
        {
            use std::os::unix::ffi::OsStrExt;
            let p = Path::new(std::ffi::OsStr::from_bytes(b"/data/\xff.raucb"));
            assert!(matches!(bundle_arg(p), Err(RaucError::InvalidPath(_))));
        }
    }

    #[test]
    fn the_signal_rule_is_what_the_bus_expects() {
        assert_eq!(
            rauc_signals_rule().to_string(),
            "type='signal',sender='de.pengutronix.rauc',path='/'"
        );
    }
}
