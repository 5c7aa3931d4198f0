//! Following RAUC on the bus: appear, disappear, change.
//!
//! Signal-driven. The watcher wakes for `NameOwnerChanged` of `de.pengutronix.rauc`, for
//! signals from RAUC's object, and for an explicit refresh; the only timer is a slow retry
//! while RAUC is on the bus but answering with errors.

use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{FutureExt, StreamExt};
use tokio::sync::Notify;
use tokio::time::Instant;
use zbus::fdo::{DBusProxy, PropertiesChanged};
use zbus::names::{BusName, OwnedUniqueName, WellKnownName};
use zbus::{Connection, Message, MessageStream};

use crate::status::{Availability, RaucInfo};

use super::proxy::{BUS_NAME, Completed, INTERFACE};
use super::{RaucClient, rauc_signals_rule};

/// How long to wait before asking again when RAUC is on the bus but failed to answer.
/// Anything RAUC does in between (a signal, a restart) triggers a refresh sooner.
const RETRY_AFTER_ERROR: Duration = Duration::from_secs(60);

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
    let client = RaucClient::new(conn.clone());
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
            MessageStream::for_match_rule(rauc_signals_rule(), &conn, NonZeroUsize::new(64))
                .await?;
        Ok::<_, zbus::Error>((dbus, owners, signals))
    }
    .await;
    let (dbus, mut owners, mut signals) = match subscribed {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "cannot subscribe to RAUC's signals; not watching RAUC");
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
        tracing::info!("RAUC ({BUS_NAME}) is not on the bus; waiting for it");
        reporter.report(unavailable());
    }
    let mut failing = false;
    let mut retry_at: Option<Instant> = None;

    loop {
        if refresh_due {
            refresh_due = false;
            // While RAUC installs it refuses GetSlotStatus: keep the slots we have (none yet if
            // the agent started mid-installation) rather than calling RAUC unavailable.
            let previous_slots = reporter
                .last
                .as_ref()
                .filter(|i| i.availability == Availability::Running)
                .map(|i| i.slots.clone())
                .unwrap_or_default();
            match client.snapshot(Some(&previous_slots)).await {
                Ok(info) => {
                    if failing {
                        tracing::info!("RAUC answers again");
                    }
                    failing = false;
                    retry_at = None;
                    reporter.report(info);
                }
                Err(e) if e.is_unavailable() => {
                    // It left between the owner check and the call; NameOwnerChanged follows
                    // and its return will bring the next refresh.
                    tracing::debug!(error = %e, "RAUC left while being asked");
                    reporter.report(unavailable());
                }
                Err(e) => {
                    if !failing {
                        tracing::warn!(error = %e, "RAUC did not answer; reporting it unavailable");
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
                    tracing::info!("RAUC appeared on the bus");
                    refresh_due = true;
                } else {
                    tracing::info!("RAUC left the bus");
                    failing = false;
                    retry_at = None;
                    reporter.report(unavailable());
                }
            }
            msg = signals.next() => {
                let Some(msg) = msg else { break };
                if msg.is_ok_and(|m| wants_refresh(&m, owner.as_ref())) {
                    refresh_due = true;
                    // Coalesce a burst (e.g. Operation + LastError at install start) into one
                    // refresh: whatever else is already queued is covered by it.
                    while let Some(Some(_)) = signals.next().now_or_never() {}
                }
            }
            () = refresh.notified() => refresh_due = true,
            () = tokio::time::sleep_until(retry_at.unwrap_or_else(Instant::now)),
                if retry_at.is_some() => refresh_due = true,
        }
    }
    tracing::warn!("bus connection closed; no longer watching RAUC");
    reporter.report(unavailable());
}

/// Whether a signal from RAUC's object can change a [`RaucInfo`].
fn wants_refresh(msg: &Message, owner: Option<&OwnedUniqueName>) -> bool {
    // The bus routed it by the well-known name; drop anything from a previous owner (or a
    // foreign sender that matched another subscription on this connection).
    if let (Some(owner), Some(sender)) = (owner, msg.header().sender())
        && sender.as_str() != owner.as_str()
    {
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

fn unavailable() -> RaucInfo {
    RaucInfo {
        availability: Availability::Unavailable,
        ..RaucInfo::default()
    }
}

/// Calls `on_change` only for a snapshot that differs from the last one reported.
struct Reporter<F> {
    last: Option<RaucInfo>,
    on_change: F,
}

impl<F: FnMut(RaucInfo)> Reporter<F> {
    fn report(&mut self, info: RaucInfo) {
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

    #[test]
    fn reporter_reports_only_changes() {
        let mut seen = Vec::new();
        let mut r = Reporter {
            last: None,
            on_change: |i: RaucInfo| seen.push(i.availability),
        };
        r.report(unavailable());
        r.report(unavailable());
        r.report(RaucInfo {
            availability: Availability::Running,
            ..RaucInfo::default()
        });
        r.report(unavailable());
        drop(r);
        assert_eq!(
            seen,
            [
                Availability::Unavailable,
                Availability::Running,
                Availability::Unavailable
            ]
        );
    }
}
