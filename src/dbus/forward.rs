//! The tasks that turn the engine's output into signals: its notices into the agent's own
//! signals, each new status snapshot into one `PropertiesChanged`.

use std::collections::{BTreeMap, HashMap};

use tokio::sync::{broadcast, watch};
use zbus::object_server::SignalEmitter;
use zbus::{Connection, OwnedVariant, Variant};

use super::{Agent1, INTERFACE, OBJECT_PATH, view};
use crate::engine::Notice;
use crate::status::Status;

/// Emits the engine's notices as signals. Runs until the engine stops.
pub async fn forward_notices(conn: Connection, mut notices: broadcast::Receiver<Notice>) {
    let emitter = match SignalEmitter::new(&conn, OBJECT_PATH) {
        Ok(e) => e,
        Err(e) => {
            tracing::error!(error = %e, "cannot emit signals");
            return;
        }
    };
    loop {
        let sent = match notices.recv().await {
            Ok(Notice::UpdateAvailable(offer)) => {
                Agent1::update_available(&emitter, view::offer(&offer)).await
            }
            Ok(Notice::InstallFinished(f)) => {
                Agent1::install_finished(&emitter, view::finished(&f)).await
            }
            Ok(Notice::SubscriptionChanged(c)) => {
                Agent1::subscription_switched(&emitter, view::subscription_change(&c)).await
            }
            Ok(Notice::IntegrityChanged(i)) => {
                Agent1::integrity_changed(&emitter, i.state.as_str(), view::findings(&i.findings))
                    .await
            }
            Ok(Notice::RebootPending(p)) => {
                Agent1::reboot_pending(&emitter, view::reboot_plan(&p)).await
            }
            Ok(Notice::StoreRecovered(r)) => {
                Agent1::store_recovered(&emitter, view::recovery(&r)).await
            }
            Err(broadcast::error::RecvError::Lagged(n)) => {
                tracing::warn!("{n} notices were dropped");
                continue;
            }
            Err(broadcast::error::RecvError::Closed) => return,
        };
        if let Err(e) = sent {
            tracing::warn!(error = %e, "cannot emit a signal");
        }
    }
}

/// Emits `PropertiesChanged` for every published status change, naming only the properties
/// whose values changed. Runs until the engine stops publishing.
pub async fn forward_changes(conn: Connection, mut status: watch::Receiver<Status>) {
    let mut last: BTreeMap<&'static str, OwnedVariant> = view::properties(&status.borrow());
    let emitter = match SignalEmitter::new(&conn, OBJECT_PATH) {
        Ok(e) => e,
        Err(e) => {
            tracing::error!(error = %e, "cannot emit signals");
            return;
        }
    };
    while status.changed().await.is_ok() {
        let now = view::properties(&status.borrow_and_update());
        let changed: HashMap<&str, Variant<'_>> = now
            .iter()
            .filter(|(k, v)| last.get(*k) != Some(*v))
            .map(|(k, v)| (*k, Variant::from(v.clone())))
            .collect();
        if !changed.is_empty() {
            let iface = zbus::names::InterfaceName::from_static_str_unchecked(INTERFACE);
            if let Err(e) = zbus::fdo::Properties::properties_changed(
                &emitter,
                iface,
                changed,
                std::borrow::Cow::Borrowed(&[]),
            )
            .await
            {
                tracing::warn!(error = %e, "cannot emit PropertiesChanged");
            }
        }
        last = now;
    }
}
