//! Following RAUC on the bus: appear, disappear, change.
//!
//! Signal-driven. The watcher wakes for `NameOwnerChanged` of `de.pengutronix.rauc`, for
//! signals from RAUC's object, and for an explicit refresh; the only timer is a slow retry
//! while RAUC is on the bus but answering with errors. The loop itself is
//! [`buswatch::follow`], shared with ModemManager's watcher; this module says what is RAUC's.

use std::sync::Arc;

use tokio::sync::Notify;
use zbus::fdo::PropertiesChanged;
use zbus::names::OwnedUniqueName;
use zbus::{Connection, MatchRule, Message};

use crate::buswatch::{self, Service};
use crate::status::{Availability, RaucInfo};

use super::proxy::{BUS_NAME, Completed, INTERFACE};
use super::{RaucClient, RaucError, rauc_signals_rule};

/// Follow RAUC and call `on_change` with each new [`RaucInfo`]; see [`watch_with_refresh`].
pub async fn watch(conn: Connection, on_change: impl FnMut(RaucInfo) + Send) {
    watch_with_refresh(conn, Arc::new(Notify::new()), on_change).await
}

/// Follow RAUC and call `on_change` with each snapshot that differs from the previous one:
///
/// - `availability: Unavailable` (other fields empty) while `de.pengutronix.rauc` has no owner
///   or RAUC answers with errors — one `warn!` per such transition, not per retry;
/// - a full fresh snapshot when RAUC (re)appears, whenever it emits `PropertiesChanged`
///   (except changes of `Progress` alone, ~20 per installation) or `Completed`, and whenever
///   `refresh` is notified (`notify_one`). RAUC emits nothing for `Mark`, so whoever marks a
///   slot should notify `refresh` afterwards.
///
/// While RAUC installs it refuses `GetSlotStatus`; the snapshot then keeps the slots it had
/// (and `operation` says `installing`).
///
/// Runs until the bus connection closes (then reports `Unavailable` and returns).
pub async fn watch_with_refresh(
    conn: Connection,
    refresh: Arc<Notify>,
    on_change: impl FnMut(RaucInfo) + Send,
) {
    let rauc = Rauc {
        client: RaucClient::new(conn.clone()),
    };
    buswatch::follow(&conn, rauc, &refresh, on_change).await
}

/// RAUC as [`buswatch::follow`] sees it.
struct Rauc {
    client: RaucClient,
}

impl Service for Rauc {
    type Info = RaucInfo;
    type Error = RaucError;

    const LABEL: &'static str = "RAUC";
    const BUS_NAME: &'static str = BUS_NAME;
    const SUBSCRIBE_FAILED: &'static str = "cannot subscribe to RAUC's signals; not watching RAUC";
    // Debian's and meta-rauc's rauc.service are D-Bus activated (Type=dbus) and nothing else
    // starts them: without this a freshly booted slot is never confirmed.
    const ACTIVATE: bool = true;

    fn signals_rule() -> MatchRule<'static> {
        rauc_signals_rule()
    }

    fn wants_refresh(msg: &Message, owner: Option<&OwnedUniqueName>) -> bool {
        wants_refresh(msg, owner)
    }

    fn unavailable() -> RaucInfo {
        RaucInfo {
            availability: Availability::Unavailable,
            ..RaucInfo::default()
        }
    }

    fn is_unavailable(error: &RaucError) -> bool {
        error.is_unavailable()
    }

    async fn snapshot(&self, last: Option<&RaucInfo>) -> Result<RaucInfo, RaucError> {
        // While RAUC installs it refuses GetSlotStatus: keep the slots we have (none yet if
        // the agent started mid-installation) rather than calling RAUC unavailable.
        let previous_slots = last
            .filter(|i| i.availability == Availability::Running)
            .map(|i| i.slots.clone())
            .unwrap_or_default();
        self.client.snapshot(Some(&previous_slots)).await
    }
}

/// Whether a signal from RAUC's object can change a [`RaucInfo`].
fn wants_refresh(msg: &Message, owner: Option<&OwnedUniqueName>) -> bool {
    if buswatch::from_stranger(msg, owner) {
        return false;
    }
    if Completed::from_message(msg.clone()).is_some() {
        return true;
    }
    let Some(changed) = PropertiesChanged::from_message(msg.clone()) else {
        return false;
    };
    let Ok(args) = changed.args() else {
        return false;
    };
    args.interface_name().as_str() == INTERFACE
        && (!args.invalidated_properties().is_empty()
            || args.changed_properties().keys().any(|k| *k != "Progress"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use zbus::Variant;

    fn properties_changed(sender: &str, changed: HashMap<&str, Variant<'_>>) -> Message {
        Message::signal("/", "org.freedesktop.DBus.Properties", "PropertiesChanged")
            .sender(sender)
            .build(&(INTERFACE, changed, Vec::<&str>::new()))
            .unwrap()
    }

    #[test]
    fn progress_alone_does_not_refresh() {
        let owner: OwnedUniqueName = OwnedUniqueName::try_from(":1.7").unwrap();
        let progress = HashMap::from([("Progress", Variant::from((20i32, "Checking", 2i32)))]);
        assert!(!wants_refresh(
            &properties_changed(":1.7", progress),
            Some(&owner)
        ));
        let operation = HashMap::from([("Operation", Variant::from("idle"))]);
        assert!(wants_refresh(
            &properties_changed(":1.7", operation.clone()),
            Some(&owner)
        ));
        // From a previous owner: ignored (the owner change itself triggers a refresh).
        assert!(!wants_refresh(
            &properties_changed(":1.3", operation.clone()),
            Some(&owner)
        ));
        // Owner not known yet: accepted.
        assert!(wants_refresh(&properties_changed(":1.3", operation), None));
    }

    #[test]
    fn completed_refreshes() {
        let msg = Message::signal("/", INTERFACE, "Completed")
            .sender(":1.7")
            .build(&(1i32,))
            .unwrap();
        assert!(wants_refresh(&msg, None));
    }
}
