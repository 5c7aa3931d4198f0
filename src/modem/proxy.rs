//! Hand-written proxies for the parts of ModemManager's API we read.
//!
//! ModemManager installs no introspection XML here, so these follow its documentation
//! (`org.freedesktop.ModemManager1.*`). Only read-only properties; nothing here changes modem
//! state.

use zbus::{OwnedObjectPath, proxy};

/// Well-known bus name of ModemManager.
pub const BUS_NAME: &str = "org.freedesktop.ModemManager1";
/// The manager object; it implements `org.freedesktop.DBus.ObjectManager` for the modems.
pub const MANAGER_PATH: &str = "/org/freedesktop/ModemManager1";
/// Modem interface.
pub const MODEM_INTERFACE: &str = "org.freedesktop.ModemManager1.Modem";
/// 3GPP interface of a modem.
pub const MODEM_3GPP_INTERFACE: &str = "org.freedesktop.ModemManager1.Modem.Modem3gpp";
/// SIM interface. SIM objects are *not* in `GetManagedObjects`; a modem's `Sim` property
/// points at one (`/` when there is no SIM).
pub const SIM_INTERFACE: &str = "org.freedesktop.ModemManager1.Sim";

/// `org.freedesktop.ModemManager1.Modem` (object path required when building).
#[proxy(
    interface = "org.freedesktop.ModemManager1.Modem",
    default_service = "org.freedesktop.ModemManager1"
)]
pub trait Modem {
    /// Model string.
    #[zbus(property)]
    fn model(&self) -> zbus::Result<String>;

    /// Manufacturer string.
    #[zbus(property)]
    fn manufacturer(&self) -> zbus::Result<String>;

    /// The SIM object, `/` when none.
    #[zbus(property)]
    fn sim(&self) -> zbus::Result<OwnedObjectPath>;

    /// `MMModemState` (signed: `FAILED` is -1).
    #[zbus(property)]
    fn state(&self) -> zbus::Result<i32>;
}

/// `org.freedesktop.ModemManager1.Modem.Modem3gpp` (object path required when building).
#[proxy(
    interface = "org.freedesktop.ModemManager1.Modem.Modem3gpp",
    default_service = "org.freedesktop.ModemManager1"
)]
pub trait Modem3gpp {
    /// `MMModem3gppRegistrationState`.
    #[zbus(property)]
    fn registration_state(&self) -> zbus::Result<u32>;

    /// MCC-MNC of the network the modem is registered with.
    #[zbus(property)]
    fn operator_code(&self) -> zbus::Result<String>;

    /// Name of that network.
    #[zbus(property)]
    fn operator_name(&self) -> zbus::Result<String>;

    /// IMEI. Personal data: mask with [`mask_identifier`](super::mask_identifier).
    #[zbus(property)]
    fn imei(&self) -> zbus::Result<String>;
}

/// `org.freedesktop.ModemManager1.Sim` (object path required when building).
#[proxy(
    interface = "org.freedesktop.ModemManager1.Sim",
    default_service = "org.freedesktop.ModemManager1"
)]
pub trait Sim {
    /// MCC-MNC of the SIM's home operator.
    #[zbus(property)]
    fn operator_identifier(&self) -> zbus::Result<String>;

    /// Service provider name on the SIM.
    #[zbus(property)]
    fn operator_name(&self) -> zbus::Result<String>;

    /// ICCID. Personal data: mask with [`mask_identifier`](super::mask_identifier).
    #[zbus(property)]
    fn sim_identifier(&self) -> zbus::Result<String>;

    /// IMSI. Personal data: mask with [`mask_identifier`](super::mask_identifier).
    #[zbus(property)]
    fn imsi(&self) -> zbus::Result<String>;
}
