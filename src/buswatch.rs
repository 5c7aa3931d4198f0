//! Following one service on the bus: appear, disappear, change — the loop shared by
//! [`rauc::watch`](crate::rauc::watch) and [`modem::watch`](crate::modem::watch).
//!
//! Signal-driven. The watcher wakes for `NameOwnerChanged` of the service's well-known name,
//! for the service's signals that can change what it reports, and for an explicit refresh; the
//! only timer is a slow retry while the service is on the bus but answering with errors.
//! What differs between services is behind [`Service`].

use std::fmt::Display;
use std::num::NonZeroUsize;
use std::pin::Pin;
use std::time::Duration;

use futures_util::{FutureExt, StreamExt};
use tokio::sync::Notify;
use tokio::time::Instant;
use zbus::fdo::DBusProxy;
use zbus::names::{BusName, OwnedUniqueName, WellKnownName};
use zbus::{Connection, MatchRule, Message, MessageStream};

use crate::activation::{self, ActivationError, Started};

/// How long to wait before asking again when the service is on the bus but failed to answer.
/// Anything it does in between (a signal, a restart) triggers a refresh sooner.
const RETRY_AFTER_ERROR: Duration = Duration::from_secs(60);

/// After a failed activation, the next attempt waits this long, doubling up to
/// [`MAX_ACTIVATION_BACKOFF`]: each failure is a line in the bus's (and systemd's) log, and a
/// service that is activatable but disabled fails every time.
const FIRST_ACTIVATION_BACKOFF: Duration = Duration::from_secs(60);
const MAX_ACTIVATION_BACKOFF: Duration = Duration::from_secs(3600);

/// A start by D-Bus activation in flight.
type Starting = Pin<Box<dyn Future<Output = Result<Started, ActivationError>> + Send>>;

/// What [`follow`] needs to know about one service.
pub(crate) trait Service {
    /// What the watcher reports (compared with the previous report; only changes are passed on).
    type Info: Clone + PartialEq;
    /// What a failed snapshot returns.
    type Error: Display;

    /// How logs call the service ("RAUC", "ModemManager").
    const LABEL: &'static str;
    /// Its well-known bus name, followed with `NameOwnerChanged`.
    const BUS_NAME: &'static str;
    /// What to log (with the error) when the watcher cannot subscribe to the service's signals.
    const SUBSCRIBE_FAILED: &'static str;
    /// Whether the watcher starts the service by D-Bus activation when it is not on the bus
    /// (see [`activation`]): at start, and again whenever it leaves.
    const ACTIVATE: bool;

    /// The signals worth looking at (each is then checked with [`Service::wants_refresh`]).
    fn signals_rule() -> MatchRule<'static>;
    /// Whether a signal from the service can change its [`Service::Info`]. `owner` is the
    /// current owner of [`Service::BUS_NAME`], if known.
    fn wants_refresh(msg: &Message, owner: Option<&OwnedUniqueName>) -> bool;
    /// What to report while the service has no owner or answers with errors.
    fn unavailable() -> Self::Info;
    /// Whether `error` means the service left the bus (rather than answered with an error).
    fn is_unavailable(error: &Self::Error) -> bool;
    /// A fresh snapshot; `last` is the last one reported, if any.
    fn snapshot(
        &self,
        last: Option<&Self::Info>,
    ) -> impl Future<Output = Result<Self::Info, Self::Error>> + Send;
}

/// Follow `service` and call `on_change` with each snapshot that differs from the previous
/// one:
///
/// - [`Service::unavailable`] while [`Service::BUS_NAME`] has no owner or the service answers
///   with errors — one `warn!` per such transition, not per retry;
/// - with [`Service::ACTIVATE`], a service that is not on the bus (at start, or after it left)
///   is started by D-Bus activation if the bus can; a failed start is tried again with a
///   backoff from [`FIRST_ACTIVATION_BACKOFF`] to [`MAX_ACTIVATION_BACKOFF`];
/// - a fresh [`Service::snapshot`] when the service (re)appears, on each signal it
///   [wants](Service::wants_refresh), whenever `refresh` is notified (`notify_one`), and every
///   [`RETRY_AFTER_ERROR`] after an error while it is on the bus.
///
/// Runs until the bus connection closes (then reports unavailable and returns).
pub(crate) async fn follow<S: Service>(
    conn: &Connection,
    service: S,
    refresh: &Notify,
    on_change: impl FnMut(S::Info),
) {
    let label = S::LABEL;
    let bus_name = S::BUS_NAME;
    let mut reporter = Reporter {
        last: None,
        on_change,
    };

    // Subscribe before the first look, so a change in between is not lost.
    let subscribed = async {
        let dbus = DBusProxy::new(conn).await?;
        let owners = dbus
            .receive_name_owner_changed_with_args(&[(0, bus_name)])
            .await?;
        let signals =
            MessageStream::for_match_rule(S::signals_rule(), conn, NonZeroUsize::new(64)).await?;
        Ok::<_, zbus::Error>((dbus, owners, signals))
    }
    .await;
    let (dbus, mut owners, mut signals) = match subscribed {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "{}", S::SUBSCRIBE_FAILED);
            reporter.report(S::unavailable());
            return;
        }
    };

    let mut owner: Option<OwnedUniqueName> = tokio::time::timeout(
        activation::CALL_TIMEOUT,
        dbus.get_name_owner(BusName::from(WellKnownName::from_static_str_unchecked(
            bus_name,
        ))),
    )
    .await
    .ok()
    .and_then(Result::ok);
    let mut refresh_due = owner.is_some();
    // A start by activation in flight, and when to try the next one.
    let mut starting: Option<Starting> = None;
    let mut activate_at: Option<Instant> = None;
    let mut backoff = FIRST_ACTIVATION_BACKOFF;
    if owner.is_none() {
        if S::ACTIVATE {
            activate_at = Some(Instant::now());
        } else {
            tracing::info!("{label} ({bus_name}) is not on the bus; waiting for it");
        }
        reporter.report(S::unavailable());
    }
    let mut failing = false;
    let mut retry_at: Option<Instant> = None;

    loop {
        if refresh_due {
            refresh_due = false;
            match service.snapshot(reporter.last.as_ref()).await {
                Ok(info) => {
                    if failing {
                        tracing::info!("{label} answers again");
                    }
                    failing = false;
                    retry_at = None;
                    reporter.report(info);
                }
                Err(e) if S::is_unavailable(&e) => {
                    // It left between the owner check and the call; NameOwnerChanged follows
                    // and its return will bring the next refresh.
                    tracing::debug!(error = %e, "{label} left while being asked");
                    reporter.report(S::unavailable());
                }
                Err(e) => {
                    if !failing {
                        tracing::warn!(error = %e, "{label} did not answer; reporting it unavailable");
                    }
                    failing = true;
                    retry_at = owner.is_some().then(|| Instant::now() + RETRY_AFTER_ERROR);
                    reporter.report(S::unavailable());
                }
            }
        }

        tokio::select! {
            change = owners.next() => {
                let Some(change) = change else { break };
                let Ok(args) = change.args() else { continue };
                owner = args.new_owner().as_ref().map(|u| u.to_owned().into());
                if owner.is_some() {
                    tracing::info!("{label} appeared on the bus");
                    refresh_due = true;
                    activate_at = None;
                    backoff = FIRST_ACTIVATION_BACKOFF;
                } else {
                    tracing::info!("{label} left the bus");
                    failing = false;
                    retry_at = None;
                    reporter.report(S::unavailable());
                    // The agent still needs it: start it again, as its next caller would.
                    if S::ACTIVATE && activate_at.is_none() {
                        activate_at = Some(Instant::now());
                    }
                }
            }
            () = tokio::time::sleep_until(activate_at.unwrap_or_else(Instant::now)),
                if activate_at.is_some() && starting.is_none() =>
            {
                activate_at = None;
                let dbus = dbus.clone();
                starting = Some(Box::pin(async move {
                    activation::ensure_running(&dbus, S::BUS_NAME).await
                }));
            }
            started = async { starting.as_mut().expect("guarded by the condition").await },
                if starting.is_some() =>
            {
                starting = None;
                match started {
                    Ok(Started::Activated) => {
                        // Its NameOwnerChanged (already queued) brings the first snapshot.
                        tracing::info!("{label} ({bus_name}) was not running; started it by D-Bus activation");
                    }
                    Ok(Started::AlreadyRunning) => {}
                    Ok(Started::Absent) => tracing::info!(
                        "{label} ({bus_name}) is not on the bus and not activatable; waiting for it"
                    ),
                    Ok(Started::Disabled) => tracing::info!(
                        "{label} ({bus_name}) is activatable but its systemd unit is missing or \
                         masked (turned off); waiting for it"
                    ),
                    Err(e) => {
                        log_activation_failure::<S>(&e, backoff);
                        if owner.is_none() {
                            activate_at = Some(Instant::now() + backoff);
                        }
                        backoff = (backoff * 2).min(MAX_ACTIVATION_BACKOFF);
                    }
                }
            }
            msg = signals.next() => {
                let Some(msg) = msg else { break };
                if msg.is_ok_and(|m| S::wants_refresh(&m, owner.as_ref())) {
                    refresh_due = true;
                    // Coalesce a burst (e.g. RAUC's Operation + LastError at install start)
                    // into one refresh: whatever else is already queued is covered by it.
                    while let Some(Some(_)) = signals.next().now_or_never() {}
                }
            }
            () = refresh.notified() => refresh_due = true,
            () = tokio::time::sleep_until(retry_at.unwrap_or_else(Instant::now)),
                if retry_at.is_some() => refresh_due = true,
        }
    }
    tracing::warn!("bus connection closed; no longer watching {label}");
    reporter.report(S::unavailable());
}

fn log_activation_failure<S: Service>(e: &ActivationError, retry_in: Duration) {
    tracing::warn!(
        error = %e,
        retry_in_s = retry_in.as_secs(),
        "cannot start {} ({}) by D-Bus activation; reporting it unavailable",
        S::LABEL,
        S::BUS_NAME
    );
}

/// Whether `msg` comes from someone other than the service's current `owner` (a previous
/// owner, or a foreign sender that matched another subscription on this connection): the bus
/// routes by the well-known name, zbus cannot check that, so each service's
/// [`Service::wants_refresh`] drops such signals with this.
pub(crate) fn from_stranger(msg: &Message, owner: Option<&OwnedUniqueName>) -> bool {
    matches!(
        (owner, msg.header().sender()),
        (Some(owner), Some(sender)) if sender.as_str() != owner.as_str()
    )
}

/// Calls `on_change` only for a snapshot that differs from the last one reported.
struct Reporter<T, F> {
    last: Option<T>,
    on_change: F,
}

impl<T: Clone + PartialEq, F: FnMut(T)> Reporter<T, F> {
    fn report(&mut self, info: T) {
        if self.last.as_ref() != Some(&info) {
            self.last = Some(info.clone());
            (self.on_change)(info);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reporter_reports_only_changes() {
        let mut seen = Vec::new();
        let mut r = Reporter {
            last: None,
            on_change: |i: &'static str| seen.push(i),
        };
        r.report("unavailable");
        r.report("unavailable");
        r.report("running");
        r.report("unavailable");
        assert_eq!(seen, ["unavailable", "running", "unavailable"]);
    }
}
