//! Following ModemManager on the bus: appear, disappear, modems and SIMs changing.
//!
//! Signal-driven, like the RAUC watcher: `NameOwnerChanged` of ModemManager's name,
//! `InterfacesAdded`/`InterfacesRemoved` (modem plugged, removed, SIM swapped) and
//! `PropertiesChanged` of the properties [`ModemInfo`] shows. The only timer is a slow retry
//! while ModemManager is on the bus but answering with errors.

use std::num::NonZeroUsize;
use std::time::Duration;

use futures_util::{FutureExt, StreamExt};
use tokio::time::Instant;
use zbus::fdo::{DBusProxy, InterfacesAdded, InterfacesRemoved, PropertiesChanged};
use zbus::message::Type as MessageType;
use zbus::names::{BusName, OwnedUniqueName, WellKnownName};
use zbus::{Connection, MatchRule, Message, MessageStream};

use crate::status::{Availability, ModemInfo};

use super::proxy::{BUS_NAME, MANAGER_PATH, MODEM_3GPP_INTERFACE, MODEM_INTERFACE, SIM_INTERFACE};
use super::snapshot;

/// How long to wait before asking again when ModemManager is on the bus but failed to answer.
const RETRY_AFTER_ERROR: Duration = Duration::from_secs(60);

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
    let mut reporter = Reporter {
        last: None,
        on_change,
    };

    // Subscribe before the first look, so a change in between is not lost.
    let subscribed = async {
        let dbus = DBusProxy::new(&conn).await?;
        let owners = dbus
            .receive_name_owner_changed_with_args(&[(0, BUS_NAME)])
            .await?;
        let signals =
            MessageStream::for_match_rule(signals_rule(), &conn, NonZeroUsize::new(64)).await?;
        Ok::<_, zbus::Error>((dbus, owners, signals))
    }
    .await;
    let (dbus, mut owners, mut signals) = match subscribed {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "cannot subscribe to ModemManager's signals; not watching it");
            reporter.report(unavailable());
            return;
        }
    };

    let mut owner: Option<OwnedUniqueName> = dbus
        .get_name_owner(BusName::from(WellKnownName::from_static_str_unchecked(
            BUS_NAME,
        )))
        .await
        .ok();
    let mut refresh_due = owner.is_some();
    if owner.is_none() {
        tracing::info!("ModemManager ({BUS_NAME}) is not on the bus; waiting for it");
        reporter.report(unavailable());
    }
    let mut failing = false;
    let mut retry_at: Option<Instant> = None;

    loop {
        if refresh_due {
            refresh_due = false;
            match snapshot(&conn).await {
                Ok(info) => {
                    if failing {
                        tracing::info!("ModemManager answers again");
                    }
                    failing = false;
                    retry_at = None;
                    reporter.report(info);
                }
                Err(e) if e.is_unavailable() => {
                    // It left between the owner check and the call; NameOwnerChanged follows
                    // and its return will bring the next refresh.
                    tracing::debug!(error = %e, "ModemManager left while being asked");
                    reporter.report(unavailable());
                }
                Err(e) => {
                    if !failing {
                        tracing::warn!(error = %e, "ModemManager did not answer; reporting it unavailable");
                    }
                    failing = true;
                    retry_at = owner.is_some().then(|| Instant::now() + RETRY_AFTER_ERROR);
                    reporter.report(unavailable());
                }
            }
        }

        tokio::select! {
            change = owners.next() => {
                let Some(change) = change else { break };
                let Ok(args) = change.args() else { continue };
                owner = args.new_owner().as_ref().map(|u| u.to_owned().into());
                if owner.is_some() {
                    tracing::info!("ModemManager appeared on the bus");
                    refresh_due = true;
                } else {
                    tracing::info!("ModemManager left the bus");
                    failing = false;
                    retry_at = None;
                    reporter.report(unavailable());
                }
            }
            msg = signals.next() => {
                let Some(msg) = msg else { break };
                if msg.is_ok_and(|m| wants_refresh(&m, owner.as_ref())) {
                    refresh_due = true;
                    // One refresh covers whatever else is already queued.
                    while let Some(Some(_)) = signals.next().now_or_never() {}
                }
            }
            () = tokio::time::sleep_until(retry_at.unwrap_or_else(Instant::now)),
                if retry_at.is_some() => refresh_due = true,
        }
    }
    tracing::warn!("bus connection closed; no longer watching ModemManager");
    reporter.report(unavailable());
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
fn wants_refresh(msg: &Message, owner: Option<&OwnedUniqueName>) -> bool {
    if let (Some(owner), Some(sender)) = (owner, msg.header().sender())
        && sender.as_str() != owner.as_str()
    {
        return false;
    }
    if InterfacesAdded::from_message(msg.clone()).is_some()
        || InterfacesRemoved::from_message(msg.clone()).is_some()
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

fn unavailable() -> ModemInfo {
    ModemInfo {
        availability: Availability::Unavailable,
        ..ModemInfo::default()
    }
}

/// Calls `on_change` only for a snapshot that differs from the last one reported.
struct Reporter<F> {
    last: Option<ModemInfo>,
    on_change: F,
}

impl<F: FnMut(ModemInfo)> Reporter<F> {
    fn report(&mut self, info: ModemInfo) {
        if self.last.as_ref() != Some(&info) {
            self.last = Some(info.clone());
            (self.on_change)(info);
        }
    }
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
        assert!(!wants_refresh(
            &properties_changed(modem, MODEM_INTERFACE, quality),
            None
        ));
        let sim = HashMap::from([("Sim", Variant::from(ObjectPath::try_from("/").unwrap()))]);
        assert!(wants_refresh(
            &properties_changed(modem, MODEM_INTERFACE, sim),
            None
        ));
        let reg = HashMap::from([("RegistrationState", Variant::from(5u32))]);
        assert!(wants_refresh(
            &properties_changed(modem, MODEM_3GPP_INTERFACE, reg.clone()),
            None
        ));
        // Same name on an interface we don't read.
        assert!(!wants_refresh(
            &properties_changed(
                modem,
                "org.freedesktop.ModemManager1.Modem.Voice",
                reg.clone()
            ),
            None
        ));
        // From someone other than the current owner.
        let owner = OwnedUniqueName::try_from(":1.2").unwrap();
        assert!(!wants_refresh(
            &properties_changed(modem, MODEM_3GPP_INTERFACE, reg),
            Some(&owner)
        ));
        let sim_ops = HashMap::from([("OperatorIdentifier", Variant::from("26202"))]);
        assert!(wants_refresh(
            &properties_changed(
                "/org/freedesktop/ModemManager1/SIM/2",
                SIM_INTERFACE,
                sim_ops
            ),
            None
        ));
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
        assert!(wants_refresh(&removed, None));
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
