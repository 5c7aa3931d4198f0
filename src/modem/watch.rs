//! Following ModemManager on the bus: appear, disappear, modems and SIMs changing.
//!
//! Signal-driven, like the RAUC watcher: `NameOwnerChanged` of ModemManager's name,
//! `InterfacesAdded`/`InterfacesRemoved` (modem plugged, removed, SIM swapped) and
//! `PropertiesChanged` of the properties [`ModemInfo`] shows. The only timer is a slow retry
//! while ModemManager is on the bus but answering with errors. The loop itself is
//! [`buswatch::follow`], shared with RAUC's watcher; this module says what is ModemManager's.

use tokio::sync::Notify;
use zbus::fdo::{InterfacesAdded, InterfacesRemoved, PropertiesChanged};
use zbus::message::Type as MessageType;
use zbus::{Connection, MatchRule, Message};

use crate::buswatch::{self, Service};
use crate::status::{Availability, ModemInfo};

use super::proxy::{BUS_NAME, MANAGER_PATH, MODEM_3GPP_INTERFACE, MODEM_INTERFACE, SIM_INTERFACE};
use super::{ModemError, snapshot};

/// Properties whose change can change a [`ModemInfo`]. Everything else ModemManager announces
/// (signal quality, access technology, bearers, …) is ignored without a D-Bus call.
const RELEVANT: &[(&str, &[&str])] = &[
    (MODEM_INTERFACE, &["Model", "Sim"]),
    (MODEM_3GPP_INTERFACE, &["RegistrationState", "OperatorCode"]),
    (
        SIM_INTERFACE,
        &["OperatorIdentifier", "OperatorName", "SimIdentifier"],
    ),
];

/// Follow ModemManager and call `on_change` with each [`ModemInfo`] that differs from the
/// previous one:
///
/// - `availability: Unavailable` (other fields empty) while ModemManager has no owner or
///   answers with errors — one `warn!` per such transition, not per retry;
/// - a fresh snapshot when it (re)appears, on `InterfacesAdded`/`InterfacesRemoved`, and on
///   `PropertiesChanged` of a property we show, from any of its objects (modems and SIMs).
///
/// Tolerates ModemManager absent at start, restarting, no modem and no SIM. Runs until the
/// bus connection closes (then reports `Unavailable` and returns).
pub async fn watch(conn: Connection, on_change: impl FnMut(ModemInfo) + Send) {
    // Nothing asks ModemManager's watcher for a refresh: its signals cover every change.
    let refresh = Notify::new();
    buswatch::follow(&conn, ModemManager { conn: &conn }, &refresh, on_change).await
}

/// ModemManager as [`buswatch::follow`] sees it.
struct ModemManager<'a> {
    conn: &'a Connection,
}

impl Service for ModemManager<'_> {
    type Info = ModemInfo;
    type Error = ModemError;

    const LABEL: &'static str = "ModemManager";
    const BUS_NAME: &'static str = BUS_NAME;
    const SUBSCRIBE_FAILED: &'static str =
        "cannot subscribe to ModemManager's signals; not watching it";
    // Its activation file points at its systemd unit (SystemdService=), so on systemd this
    // starts ModemManager only where the image enabled it; elsewhere the bus runs it.
    const ACTIVATE: bool = true;

    fn signals_rule() -> MatchRule<'static> {
        signals_rule()
    }

    fn wants_refresh(msg: &Message) -> bool {
        wants_refresh(msg)
    }

    fn unavailable() -> ModemInfo {
        ModemInfo {
            availability: Availability::Unavailable,
            ..ModemInfo::default()
        }
    }

    fn is_unavailable(error: &ModemError) -> bool {
        error.is_unavailable()
    }

    async fn snapshot(&self, _last: Option<&ModemInfo>) -> Result<ModemInfo, ModemError> {
        snapshot(self.conn).await
    }
}

/// Every signal ModemManager sends from its objects (all live under [`MANAGER_PATH`]).
///
/// The bus matches `sender` against the current owner of the well-known name; zbus cannot check
/// a well-known sender itself, so the path namespace keeps other services' signals out, and
/// [`wants_refresh`] compares the sender with the owner it knows.
fn signals_rule() -> MatchRule<'static> {
    MatchRule::builder()
        .msg_type(MessageType::Signal)
        .sender(BUS_NAME)
        .path_namespace(MANAGER_PATH)
        .build()
        .expect("static match rule is valid")
}

/// Whether a signal from ModemManager can change a [`ModemInfo`].
fn wants_refresh(msg: &Message) -> bool {
    if InterfacesAdded::from_message(msg.clone()).is_some()
        || InterfacesRemoved::from_message(msg.clone()).is_some()
    {
        return true;
    }
    // The network sent its time (NITZ): trusted time for the clock ratchet.
    let header = msg.header();
    if header
        .interface()
        .is_some_and(|i| i.as_str() == super::TIME_INTERFACE)
        && header
            .member()
            .is_some_and(|m| m.as_str() == "NetworkTimeChanged")
    {
        return true;
    }
    let Some(changed) = PropertiesChanged::from_message(msg.clone()) else {
        return false;
    };
    let Ok(args) = changed.args() else {
        return false;
    };
    let Some((_, relevant)) = RELEVANT
        .iter()
        .find(|(iface, _)| *iface == args.interface_name().as_str())
    else {
        return false;
    };
    args.invalidated_properties()
        .iter()
        .chain(args.changed_properties().keys())
        .any(|k| relevant.contains(k))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use zbus::{ObjectPath, Variant};

    fn properties_changed(path: &str, iface: &str, changed: HashMap<&str, Variant<'_>>) -> Message {
        Message::signal(path, "org.freedesktop.DBus.Properties", "PropertiesChanged")
            .sender(":1.9")
            .build(&(iface, changed, Vec::<&str>::new()))
            .unwrap()
    }

    #[test]
    fn only_shown_properties_refresh() {
        let modem = "/org/freedesktop/ModemManager1/Modems/8";
        let quality = HashMap::from([("SignalQuality", Variant::from((70u32, true)))]);
        assert!(!wants_refresh(&properties_changed(
            modem,
            MODEM_INTERFACE,
            quality
        )));
        let sim = HashMap::from([("Sim", Variant::from(ObjectPath::try_from("/").unwrap()))]);
        assert!(wants_refresh(&properties_changed(
            modem,
            MODEM_INTERFACE,
            sim
        )));
        let reg = HashMap::from([("RegistrationState", Variant::from(5u32))]);
        assert!(wants_refresh(&properties_changed(
            modem,
            MODEM_3GPP_INTERFACE,
            reg.clone()
        )));
        // Same name on an interface we don't read.
        assert!(!wants_refresh(&properties_changed(
            modem,
            "org.freedesktop.ModemManager1.Modem.Voice",
            reg.clone()
        )));
        let sim_ops = HashMap::from([("OperatorIdentifier", Variant::from("26202"))]);
        assert!(wants_refresh(&properties_changed(
            "/org/freedesktop/ModemManager1/SIM/2",
            SIM_INTERFACE,
            sim_ops
        )));
    }

    #[test]
    fn object_manager_signals_refresh() {
        let removed = Message::signal(
            MANAGER_PATH,
            "org.freedesktop.DBus.ObjectManager",
            "InterfacesRemoved",
        )
        .sender(":1.9")
        .build(&(
            ObjectPath::try_from("/org/freedesktop/ModemManager1/Modems/8").unwrap(),
            vec![MODEM_INTERFACE],
        ))
        .unwrap();
        assert!(wants_refresh(&removed));
    }

    #[test]
    fn the_signal_rule_is_what_the_bus_expects() {
        assert_eq!(
            signals_rule().to_string(),
            "type='signal',sender='org.freedesktop.ModemManager1',\
             path_namespace='/org/freedesktop/ModemManager1'"
        );
    }
}
