//! Client proxy for `de.pengutronix.rauc.Installer`.
//!
//! Generated with `zbus-xmlgen 6.0.0`:
//!
//! ```text
//! zbus-xmlgen file tests/data/rauc/de.pengutronix.rauc.Installer.xml -o src/rauc/proxy.rs
//! ```
//!
//! from the interface file of RAUC 1.8 (Debian 12's `rauc` 1.8-2, installed as
//! `/usr/share/dbus-1/interfaces/de.pengutronix.rauc.Installer.xml`), then typed by hand:
//!
//! - service and path fixed (`de.pengutronix.rauc` at `/`; `assume_defaults` would have guessed
//!   `/de/pengutronix/rauc/Installer`, which RAUC does not serve);
//! - `Progress` is a [`Progress`] struct instead of `(i32, String, i32)`;
//! - `GetSlotStatus` returns [`SlotStatusArray`];
//! - `InspectBundle` (RAUC ≥ 1.9) and `GetArtifactStatus` (newer upstream) are added by hand from
//!   upstream's interface file. They are only called after [`Capabilities`](super::Capabilities)
//!   says the running service has them; RAUC 1.8 answers `UnknownMethod`.
//!
//! Upstream also added the properties `LastBundle` and `LastTransaction`; we don't read them
//! (a RAUC 1.8 `GetAll` simply doesn't return them), so they are left out.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use zbus::{OwnedVariant, Type, Variant, proxy};

/// Well-known bus name of the RAUC service.
pub const BUS_NAME: &str = "de.pengutronix.rauc";
/// Object path RAUC serves its installer interface at.
pub const OBJECT_PATH: &str = "/";
/// The installer interface.
pub const INTERFACE: &str = "de.pengutronix.rauc.Installer";

/// `GetSlotStatus` reply: `a(sa{sv})`, one `(slot name, status dict)` per slot.
pub type SlotStatusArray = Vec<(String, HashMap<String, OwnedVariant>)>;

/// RAUC's `Progress` property, `(isi)`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, Type)]
pub struct Progress {
    /// 0..=100 for the whole installation.
    pub percentage: i32,
    /// What RAUC is doing, e.g. `Copying image to rootfs.1`.
    pub message: String,
    /// Nesting depth of the step the message belongs to (1 = top level).
    pub depth: i32,
}

#[proxy(
    interface = "de.pengutronix.rauc.Installer",
    default_service = "de.pengutronix.rauc",
    default_path = "/"
)]
pub trait Installer {
    /// Install method (deprecated upstream; kept as a fallback for very old services).
    fn install(&self, source: &str) -> zbus::Result<()>;

    /// InstallBundle method. Returns as soon as the installation has *started*; the outcome
    /// arrives as the `Completed` signal and the `LastError` property.
    fn install_bundle(&self, source: &str, args: HashMap<&str, Variant<'_>>) -> zbus::Result<()>;

    /// Info method: `(compatible, version)` of a bundle (deprecated since RAUC 1.9).
    fn info(&self, bundle: &str) -> zbus::Result<(String, String)>;

    /// InspectBundle method (RAUC ≥ 1.9): the nested dictionary of `rauc info
    /// --output-format=json-2`.
    fn inspect_bundle(
        &self,
        source: &str,
        args: HashMap<&str, Variant<'_>>,
    ) -> zbus::Result<HashMap<String, OwnedVariant>>;

    /// Mark method: `(slot name, message)`.
    fn mark(&self, state: &str, slot_identifier: &str) -> zbus::Result<(String, String)>;

    /// GetSlotStatus method.
    fn get_slot_status(&self) -> zbus::Result<SlotStatusArray>;

    /// GetArtifactStatus method (newer upstream, absent from 1.8–1.13).
    fn get_artifact_status(&self) -> zbus::Result<Vec<HashMap<String, OwnedVariant>>>;

    /// GetPrimary method: the *slot name* (e.g. `rootfs.1`) the bootloader will boot next.
    fn get_primary(&self) -> zbus::Result<String>;

    /// Operation property (`idle`, `installing`).
    #[zbus(property)]
    fn operation(&self) -> zbus::Result<String>;

    /// LastError property.
    #[zbus(property)]
    fn last_error(&self) -> zbus::Result<String>;

    /// Progress property.
    #[zbus(property)]
    fn progress(&self) -> zbus::Result<Progress>;

    /// Compatible property.
    #[zbus(property)]
    fn compatible(&self) -> zbus::Result<String>;

    /// Variant property.
    #[zbus(property)]
    fn variant(&self) -> zbus::Result<String>;

    /// BootSlot property (the bootname RAUC detected, e.g. `A`).
    #[zbus(property)]
    fn boot_slot(&self) -> zbus::Result<String>;

    /// Completed signal: installation finished, `result` 0 on success.
    #[zbus(signal)]
    fn completed(&self, result: i32) -> zbus::Result<()>;
}
