//! ModemManager adapter (read-only): which subscription the device is on.
//!
//! - [`snapshot`]: one `GetManagedObjects` for all modems plus one `GetAll` for the first
//!   modem's SIM (ModemManager does not list SIMs as managed objects), turned into a
//!   [`ModemInfo`] by the pure [`modem_info_from`].
//! - [`watch()`]: follows ModemManager appearing, disappearing and its modems/SIMs changing;
//!   signal-driven, no polling.
//! - [`mask_identifier`]: IMSI, ICCID and IMEI never leave this module whole. [`ModemInfo`]
//!   carries only the masked ICCID; IMSI and IMEI are not carried at all.
//! - [`proxy`]: hand-written proxies for the interfaces we read.

mod parse;
pub mod proxy;
mod watch;

use std::collections::HashMap;

use zbus::fdo::{ObjectManagerProxy, PropertiesProxy};
use zbus::names::InterfaceName;
use zbus::proxy::CacheProperties;
use zbus::{Connection, DBusError, OwnedVariant, fdo};

pub use parse::{mask_identifier, modem_info_from, sim_path_of};
pub use watch::watch;

use crate::status::ModemInfo;
use proxy::{BUS_NAME, MANAGER_PATH, SIM_INTERFACE};

/// An error from talking to ModemManager.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ModemError {
    /// Nobody owns `org.freedesktop.ModemManager1` (`ServiceUnknown`/`NameHasNoOwner`).
    #[error("ModemManager is not on the bus ({method}): {detail}")]
    Unavailable {
        method: &'static str,
        detail: String,
    },
    /// ModemManager answered with an error.
    #[error("ModemManager refused {method} on {path}: {error_name}: {message}")]
    Rejected {
        method: &'static str,
        path: String,
        error_name: String,
        message: String,
    },
    /// The call did not complete at the D-Bus level, or the reply had the wrong shape.
    #[error("D-Bus error calling ModemManager {method} on {path}: {detail}")]
    Bus {
        method: &'static str,
        path: String,
        detail: String,
    },
}

impl ModemError {
    /// ModemManager is not on the bus; the call may work once it (re)appears.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, ModemError::Unavailable { .. })
    }

    /// Worth trying again later without changing anything.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            ModemError::Unavailable { .. } | ModemError::Bus { .. }
        )
    }

    fn from_fdo(method: &'static str, path: &str, err: fdo::Error) -> ModemError {
        match err {
            fdo::Error::ZBus(zbus::Error::FDO(inner)) => Self::from_fdo(method, path, *inner),
            fdo::Error::ZBus(zbus::Error::MethodError(name, message, _)) => ModemError::Rejected {
                method,
                path: path.to_owned(),
                error_name: name.to_string(),
                message: message.unwrap_or_default(),
            },
            fdo::Error::ServiceUnknown(detail) | fdo::Error::NameHasNoOwner(detail) => {
                ModemError::Unavailable { method, detail }
            }
            fdo::Error::ZBus(_)
            | fdo::Error::NoReply(_)
            | fdo::Error::Timeout(_)
            | fdo::Error::TimedOut(_)
            | fdo::Error::Disconnected(_)
            | fdo::Error::IOError(_)
            | fdo::Error::NoServer(_) => ModemError::Bus {
                method,
                path: path.to_owned(),
                detail: err.to_string(),
            },
            other => ModemError::Rejected {
                method,
                path: path.to_owned(),
                error_name: other.name().to_string(),
                message: other.description().unwrap_or_default().to_owned(),
            },
        }
    }

    fn from_zbus(method: &'static str, path: &str, err: zbus::Error) -> ModemError {
        Self::from_fdo(method, path, fdo::Error::ZBus(err))
    }
}

/// What ModemManager reports right now, as a [`ModemInfo`] with availability `Running`.
///
/// A SIM that vanishes between the two calls (SIM swap) or refuses `GetAll` leaves the SIM
/// fields empty rather than failing the snapshot.
pub async fn snapshot(conn: &Connection) -> Result<ModemInfo, ModemError> {
    let manager = ObjectManagerProxy::builder(conn)
        .destination(BUS_NAME)
        .path(MANAGER_PATH)
        .build()
        .await
        .map_err(|e| ModemError::from_zbus("(proxy)", MANAGER_PATH, e))?;
    let objects = manager
        .get_managed_objects()
        .await
        .map_err(|e| ModemError::from_fdo("GetManagedObjects", MANAGER_PATH, e))?;
    let sim = match sim_path_of(&objects) {
        None => None,
        Some(path) => match sim_properties(conn, path.as_str()).await {
            Ok(props) => Some(props),
            Err(e) if e.is_unavailable() => return Err(e),
            Err(e) => {
                tracing::debug!(error = %e, "SIM properties unreadable; reporting no SIM data");
                None
            }
        },
    };
    let mut info = modem_info_from(&objects, sim.as_ref());
    if let Some(path) = parse::first_modem(&objects) {
        info.network_time_offset_s = network_time_offset(conn, path.as_str()).await;
    }
    Ok(info)
}

/// The network's time minus the system clock, from `Modem.Time.GetNetworkTime`; `None` when
/// the modem has no such interface, the network gives no time, or the answer is garbage.
async fn network_time_offset(conn: &Connection, path: &str) -> Option<i64> {
    let reply = conn
        .call_method(
            Some(BUS_NAME),
            path,
            Some(TIME_INTERFACE),
            "GetNetworkTime",
            &(),
        )
        .await
        .ok()?;
    let text: String = reply.body().deserialize().ok()?;
    let at = parse::network_time(&text)?;
    Some(at.duration_since(jiff::Timestamp::now()).as_secs())
}

/// ModemManager's interface giving the network's time.
pub const TIME_INTERFACE: &str = "org.freedesktop.ModemManager1.Modem.Time";

async fn sim_properties(
    conn: &Connection,
    path: &str,
) -> Result<HashMap<String, OwnedVariant>, ModemError> {
    let props = PropertiesProxy::builder(conn)
        .destination(BUS_NAME)
        .path(path)
        .cache_properties(CacheProperties::No)
        .build()
        .await
        .map_err(|e| ModemError::from_zbus("(proxy)", path, e))?;
    props
        .get_all(InterfaceName::from_static_str_unchecked(SIM_INTERFACE))
        .await
        .map_err(|e| ModemError::from_fdo("GetAll", path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_classification() {
        let e = ModemError::from_fdo(
            "GetManagedObjects",
            MANAGER_PATH,
            fdo::Error::ServiceUnknown("The name is not activatable".into()),
        );
        assert!(e.is_unavailable());
        let e = ModemError::from_zbus(
            "GetManagedObjects",
            MANAGER_PATH,
            zbus::Error::from(fdo::Error::NameHasNoOwner("gone".into())),
        );
        assert!(e.is_unavailable());
        let e = ModemError::from_fdo(
            "GetAll",
            "/org/freedesktop/ModemManager1/SIM/2",
            fdo::Error::UnknownObject("no such object".into()),
        );
        assert!(!e.is_unavailable());
        assert!(!e.is_retryable());
        assert_eq!(
            e.to_string(),
            "ModemManager refused GetAll on /org/freedesktop/ModemManager1/SIM/2: \
             org.freedesktop.DBus.Error.UnknownObject: no such object"
        );
        let e = ModemError::from_fdo("GetAll", "/", fdo::Error::NoReply("timeout".into()));
        assert!(e.is_retryable());
    }
}
