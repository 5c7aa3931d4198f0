//! NetworkManager adapter (read-only): whether the link costs money.
//!
//! Reads `Metered` of `/org/freedesktop/NetworkManager` (NMMetered: 0 unknown, 1 yes, 2 no,
//! 3 guess-yes, 4 guess-no) and follows its `PropertiesChanged` with the shared watcher loop
//! ([`buswatch::follow`]). `yes` and `guess-yes` count as metered — NetworkManager guesses
//! "yes" for cellular links, which is exactly the case to be careful about. NetworkManager
//! absent (many embedded images use something else) means "not known", which defers nothing.

use tokio::sync::Notify;
use zbus::fdo::PropertiesChanged;
use zbus::message::Type as MessageType;
use zbus::names::{InterfaceName, OwnedUniqueName};
use zbus::proxy::CacheProperties;
use zbus::{Connection, MatchRule, Message, fdo};

use crate::buswatch::{self, Service};
use crate::status::{Availability, NetworkInfo};

/// Well-known bus name of NetworkManager.
pub const BUS_NAME: &str = "org.freedesktop.NetworkManager";
/// The manager object.
pub const PATH: &str = "/org/freedesktop/NetworkManager";
/// The manager's interface (where `Metered` lives).
pub const INTERFACE: &str = "org.freedesktop.NetworkManager";

/// An error from talking to NetworkManager.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NetworkError {
    /// Nobody owns the name.
    #[error("NetworkManager is not on the bus: {0}")]
    Unavailable(String),
    /// It answered with an error, or the reply had the wrong shape.
    #[error("NetworkManager: cannot read Metered: {0}")]
    Bus(String),
}

/// `Metered` (NMMetered) as this agent reads it: `Some(true)` for yes/guess-yes,
/// `Some(false)` for no/guess-no, `None` for unknown and values NetworkManager does not define.
pub fn metered_from(value: u32) -> Option<bool> {
    match value {
        1 | 3 => Some(true),
        2 | 4 => Some(false),
        _ => None,
    }
}

/// What NetworkManager reports now, with availability `Running`.
pub async fn snapshot(conn: &Connection) -> Result<NetworkInfo, NetworkError> {
    let props = fdo::PropertiesProxy::builder(conn)
        .destination(BUS_NAME)
        .path(PATH)
        .cache_properties(CacheProperties::No)
        .build()
        .await
        .map_err(|e| NetworkError::Bus(e.to_string()))?;
    let value = props
        .get(
            InterfaceName::from_static_str_unchecked(INTERFACE),
            "Metered",
        )
        .await;
    let metered = match value {
        Ok(v) => u32::try_from(v).ok().and_then(metered_from),
        Err(fdo::Error::ServiceUnknown(d) | fdo::Error::NameHasNoOwner(d)) => {
            return Err(NetworkError::Unavailable(d));
        }
        // An old NetworkManager without the property, or a hostile reply: unknown.
        Err(fdo::Error::InvalidArgs(_) | fdo::Error::UnknownProperty(_)) => None,
        Err(e) => return Err(NetworkError::Bus(e.to_string())),
    };
    Ok(NetworkInfo {
        availability: Availability::Running,
        metered,
    })
}

/// Follow NetworkManager and call `on_change` with each [`NetworkInfo`] that differs from the
/// previous one; `Unavailable` (metered unknown) while it is not on the bus. Runs until the
/// bus connection closes.
pub async fn watch(conn: Connection, on_change: impl FnMut(NetworkInfo) + Send) {
    let refresh = Notify::new();
    buswatch::follow(&conn, NetworkManager { conn: &conn }, &refresh, on_change).await
}

struct NetworkManager<'a> {
    conn: &'a Connection,
}

impl Service for NetworkManager<'_> {
    type Info = NetworkInfo;
    type Error = NetworkError;

    const LABEL: &'static str = "NetworkManager";
    const BUS_NAME: &'static str = BUS_NAME;
    const SUBSCRIBE_FAILED: &'static str =
        "cannot subscribe to NetworkManager's signals; not watching it";
    // Not started: it configures the device's network, which is not the agent's to decide
    // (an image may use another network manager); the agent only reads Metered, and unknown
    // defers nothing.
    const ACTIVATE: bool = false;

    fn signals_rule() -> MatchRule<'static> {
        MatchRule::builder()
            .msg_type(MessageType::Signal)
            .sender(BUS_NAME)
            .path(PATH)
            .build()
            .expect("static match rule is valid")
    }

    fn wants_refresh(msg: &Message, owner: Option<&OwnedUniqueName>) -> bool {
        wants_refresh(msg, owner)
    }

    fn unavailable() -> NetworkInfo {
        NetworkInfo {
            availability: Availability::Unavailable,
            metered: None,
        }
    }

    fn is_unavailable(error: &NetworkError) -> bool {
        matches!(error, NetworkError::Unavailable(_))
    }

    async fn snapshot(&self, _last: Option<&NetworkInfo>) -> Result<NetworkInfo, NetworkError> {
        snapshot(self.conn).await
    }
}

/// Only a change of `Metered` on the manager's interface, from the current owner.
fn wants_refresh(msg: &Message, owner: Option<&OwnedUniqueName>) -> bool {
    if buswatch::from_stranger(msg, owner) {
        return false;
    }
    let Some(changed) = PropertiesChanged::from_message(msg.clone()) else {
        return false;
    };
    let Ok(args) = changed.args() else {
        return false;
    };
    args.interface_name().as_str() == INTERFACE
        && (args.changed_properties().contains_key("Metered")
            || args.invalidated_properties().contains(&"Metered"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use zbus::Variant;

    #[test]
    fn metered_values() {
        for (v, want) in [
            (0, None),
            (1, Some(true)),
            (2, Some(false)),
            (3, Some(true)),
            (4, Some(false)),
            (5, None),
            (u32::MAX, None),
        ] {
            assert_eq!(metered_from(v), want, "{v}");
        }
    }

    fn changed(iface: &str, key: &str, sender: &str) -> Message {
        let props = HashMap::from([(key, Variant::from(1u32))]);
        Message::signal(PATH, "org.freedesktop.DBus.Properties", "PropertiesChanged")
            .sender(sender)
            .build(&(iface, props, Vec::<&str>::new()))
            .unwrap()
    }

    #[test]
    fn only_metered_changes_refresh() {
        assert!(wants_refresh(&changed(INTERFACE, "Metered", ":1.5"), None));
        assert!(!wants_refresh(
            &changed(INTERFACE, "Connectivity", ":1.5"),
            None
        ));
        assert!(!wants_refresh(
            &changed("org.freedesktop.NetworkManager.Device", "Metered", ":1.5"),
            None
        ));
        let owner = OwnedUniqueName::try_from(":1.2").unwrap();
        assert!(!wants_refresh(
            &changed(INTERFACE, "Metered", ":1.5"),
            Some(&owner)
        ));
        assert!(wants_refresh(
            &changed(INTERFACE, "Metered", ":1.2"),
            Some(&owner)
        ));
    }
}
