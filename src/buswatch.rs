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
use zbus::fdo::{DBusProxy, NameOwnerChanged};
use zbus::names::{BusName, OwnedUniqueName, WellKnownName};
use zbus::{Connection, MatchRule, Message, MessageStream};

use crate::activation::{self, ActivationError, Started};

/// How long to wait before asking again when the service is on the bus but failed to answer.
/// Anything it does in between (a signal, a restart) triggers a refresh sooner.
const RETRY_AFTER_ERROR: Duration = Duration::from_secs(60);

/// Longest a snapshot (the service's property reads, e.g. RAUC's `GetAll` and
/// `GetSlotStatus`) may take. A service that is on the bus but stopped (hung, or frozen with
/// SIGSTOP) never answers, and the bus does not time the call out for us: without a limit the
/// watcher would wait for ever and keep reporting the service as it last saw it.
pub(crate) const SNAPSHOT_TIMEOUT: Duration = Duration::from_secs(30);

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
    /// Whether a signal from the service can change its [`Service::Info`]. Only signals from
    /// the current owner of [`Service::BUS_NAME`] are asked about ([`OwnedSignals`]).
    fn wants_refresh(msg: &Message) -> bool;
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
/// - a snapshot that takes longer than [`SNAPSHOT_TIMEOUT`] counts as an error;
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

    let mut bus = match OwnedSignals::subscribe(conn, bus_name, S::signals_rule()).await {
        Ok(bus) => bus,
        Err(e) => {
            tracing::warn!(error = %e, "{}", S::SUBSCRIBE_FAILED);
            reporter.report(S::unavailable());
            return;
        }
    };
    let dbus = match DBusProxy::new(conn).await {
        Ok(dbus) => dbus,
        Err(e) => {
            tracing::warn!(error = %e, "{}", S::SUBSCRIBE_FAILED);
            reporter.report(S::unavailable());
            return;
        }
    };

    let mut refresh_due = bus.owner().is_some();
    // A start by activation in flight, and when to try the next one.
    let mut starting: Option<Starting> = None;
    let mut activate_at: Option<Instant> = None;
    let mut backoff = FIRST_ACTIVATION_BACKOFF;
    if !refresh_due {
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
            let snapshot = service.snapshot(reporter.last.as_ref());
            let error = match tokio::time::timeout(SNAPSHOT_TIMEOUT, snapshot).await {
                Ok(Ok(info)) => {
                    if failing {
                        tracing::info!("{label} answers again");
                    }
                    failing = false;
                    retry_at = None;
                    reporter.report(info);
                    None
                }
                Ok(Err(e)) if S::is_unavailable(&e) => {
                    // It left between the owner check and the call; NameOwnerChanged follows
                    // and its return will bring the next refresh.
                    tracing::debug!(error = %e, "{label} left while being asked");
                    reporter.report(S::unavailable());
                    None
                }
                Ok(Err(e)) => Some(e.to_string()),
                // On the bus but not answering: as unusable as answering with errors.
                Err(_) => Some(format!(
                    "no answer within {} s (is it hung?)",
                    SNAPSHOT_TIMEOUT.as_secs()
                )),
            };
            if let Some(e) = error {
                if !failing {
                    tracing::warn!(error = %e, "{label} did not answer; reporting it unavailable");
                }
                failing = true;
                retry_at = bus
                    .owner()
                    .is_some()
                    .then(|| Instant::now() + RETRY_AFTER_ERROR);
                reporter.report(S::unavailable());
            }
        }

        tokio::select! {
            event = bus.next() => match event {
                None => break,
                Some(Owned::OwnerChanged(Some(_))) => {
                    tracing::info!("{label} appeared on the bus");
                    refresh_due = true;
                    activate_at = None;
                    backoff = FIRST_ACTIVATION_BACKOFF;
                }
                Some(Owned::OwnerChanged(None)) => {
                    tracing::info!("{label} left the bus");
                    failing = false;
                    retry_at = None;
                    reporter.report(S::unavailable());
                    // The agent still needs it: start it again, as its next caller would.
                    if S::ACTIVATE && activate_at.is_none() {
                        activate_at = Some(Instant::now());
                    }
                }
                Some(Owned::Signal(msg)) => {
                    if S::wants_refresh(&msg) {
                        refresh_due = true;
                        // Coalesce a burst (e.g. RAUC's Operation + LastError at install
                        // start) into one refresh: whatever else is queued is covered by it.
                        bus.skip_queued_signals();
                    }
                }
            },
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
                        if bus.owner().is_none() {
                            activate_at = Some(Instant::now() + backoff);
                        }
                        backoff = (backoff * 2).min(MAX_ACTIVATION_BACKOFF);
                    }
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

/// The bus daemon's own name: the only sender whose `NameOwnerChanged` is believed. dbus-daemon
/// stamps every other message with its sender's unique name, so no peer can pose as it.
const BUS_DAEMON: &str = "org.freedesktop.DBus";

/// What [`OwnedSignals::next`] yields.
#[derive(Debug)]
pub(crate) enum Owned {
    /// A signal matching the subscription, sent by the current owner of the service's name.
    Signal(Message),
    /// The service's name got a new owner, or lost its owner (`None`).
    OwnerChanged(Option<OwnedUniqueName>),
}

/// A service's signals, believed only from the current owner of its well-known name: the one
/// place where every adapter (RAUC, ModemManager, NetworkManager) decides whom to believe.
///
/// Why it is needed: a match rule's `sender='de.pengutronix.rauc'` makes the *bus* route only
/// the owner's broadcasts to us, but any peer may send a signal addressed to the agent itself,
/// and zbus cannot match a well-known sender (it lets such a message through every stream whose
/// other fields match). So the owner is followed here — from `NameOwnerChanged` sent by the bus
/// daemon itself, never by a peer — and a signal counts only if its sender is that owner. With
/// no known owner, nothing is believed.
pub(crate) struct OwnedSignals {
    name: &'static str,
    owners: MessageStream,
    signals: MessageStream,
    owner: Option<OwnedUniqueName>,
    /// An owner change taken off the bus by [`OwnedSignals::skip_queued_signals`], not yet
    /// returned by [`OwnedSignals::next`].
    pending: Option<Option<OwnedUniqueName>>,
}

impl OwnedSignals {
    /// Subscribe to `rule`'s signals of the service that owns `name`, then look up the owner
    /// (in that order, so a change in between is not lost).
    pub(crate) async fn subscribe(
        conn: &Connection,
        name: &'static str,
        rule: MatchRule<'static>,
    ) -> zbus::Result<Self> {
        let owners_rule = MatchRule::builder()
            .msg_type(zbus::message::Type::Signal)
            .sender(BUS_DAEMON)
            .path("/org/freedesktop/DBus")
            .interface(BUS_DAEMON)
            .member("NameOwnerChanged")
            .add_arg(name)
            .build()?;
        let owners =
            MessageStream::for_match_rule(owners_rule, conn, NonZeroUsize::new(64)).await?;
        let signals = MessageStream::for_match_rule(rule, conn, NonZeroUsize::new(64)).await?;
        // An error (or no answer in time) means the name has no owner, or the bus would not
        // say: believe nobody until the bus announces an owner.
        let dbus = DBusProxy::new(conn).await?;
        let owner = tokio::time::timeout(
            activation::CALL_TIMEOUT,
            dbus.get_name_owner(BusName::from(WellKnownName::from_static_str_unchecked(
                name,
            ))),
        )
        .await
        .ok()
        .and_then(Result::ok);
        Ok(OwnedSignals {
            name,
            owners,
            signals,
            owner,
            pending: None,
        })
    }

    /// The current owner of the name, if it has one.
    pub(crate) fn owner(&self) -> Option<&OwnedUniqueName> {
        self.owner.as_ref()
    }

    /// Drop the signals already queued — a burst that one refresh covers — up to the next owner
    /// change, which [`OwnedSignals::next`] returns first.
    pub(crate) fn skip_queued_signals(&mut self) {
        while self.pending.is_none() {
            match self.owners.next().now_or_never() {
                Some(Some(Ok(msg))) => {
                    if let Some(owner) = owner_change(&msg, self.name) {
                        self.owner.clone_from(&owner);
                        self.pending = Some(owner);
                    }
                    continue;
                }
                Some(Some(Err(_))) => continue,
                // Closed: next() reports it.
                Some(None) => return,
                None => {}
            }
            match self.signals.next().now_or_never() {
                Some(Some(_)) => continue,
                _ => return,
            }
        }
    }

    /// The next owner change or signal from the owner; `None` once the bus connection closed.
    /// Cancel-safe: nothing is taken from the bus unless it is returned or dropped as foreign.
    pub(crate) async fn next(&mut self) -> Option<Owned> {
        if let Some(owner) = self.pending.take() {
            return Some(Owned::OwnerChanged(owner));
        }
        loop {
            tokio::select! {
                // Owner changes first: the bus queues a new owner's NameOwnerChanged before
                // anything that owner sends, so a queued change must be applied before the
                // signals behind it are judged.
                biased;
                msg = self.owners.next() => {
                    let Ok(msg) = msg? else { continue };
                    if let Some(owner) = owner_change(&msg, self.name) {
                        self.owner.clone_from(&owner);
                        return Some(Owned::OwnerChanged(owner));
                    }
                }
                msg = self.signals.next() => {
                    let Ok(msg) = msg? else { continue };
                    if from_owner(&msg, self.owner.as_ref()) {
                        return Some(Owned::Signal(msg));
                    }
                    tracing::debug!(
                        sender = ?msg.header().sender().map(|s| s.as_str()),
                        member = ?msg.header().member().map(|m| m.as_str()),
                        "ignored a signal that {} did not send", self.name
                    );
                }
            }
        }
    }
}

/// The new owner `msg` announces for `name`, if it is the bus daemon's `NameOwnerChanged` for
/// `name` (`Some(None)`: the name lost its owner).
fn owner_change(msg: &Message, name: &str) -> Option<Option<OwnedUniqueName>> {
    if msg.header().sender().map(|s| s.as_str()) != Some(BUS_DAEMON) {
        return None;
    }
    let signal = NameOwnerChanged::from_message(msg.clone())?;
    let args = signal.args().ok()?;
    (args.name().as_str() == name).then(|| args.new_owner().as_ref().map(|u| u.to_owned().into()))
}

/// Whether `msg` was sent by `owner`, the current owner of a service's well-known name. Nothing
/// is believed while the owner is unknown.
pub(crate) fn from_owner(msg: &Message, owner: Option<&OwnedUniqueName>) -> bool {
    matches!(
        (owner, msg.header().sender()),
        (Some(owner), Some(sender)) if sender.as_str() == owner.as_str()
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

    fn owner_changed(sender: &str, name: &str, new_owner: &str) -> Message {
        Message::signal("/org/freedesktop/DBus", BUS_DAEMON, "NameOwnerChanged")
            .sender(sender)
            .build(&(name, "", new_owner))
            .unwrap()
    }

    #[test]
    fn only_the_bus_daemon_announces_owners() {
        let rauc = "de.pengutronix.rauc";
        let owner = OwnedUniqueName::try_from(":1.7").unwrap();
        assert_eq!(
            owner_change(&owner_changed(BUS_DAEMON, rauc, ":1.7"), rauc),
            Some(Some(owner))
        );
        assert_eq!(
            owner_change(&owner_changed(BUS_DAEMON, rauc, ""), rauc),
            Some(None)
        );
        // Another name, or a peer posing as the bus daemon (its sender is its unique name).
        assert_eq!(
            owner_change(&owner_changed(BUS_DAEMON, "org.other", ":1.7"), rauc),
            None
        );
        assert_eq!(
            owner_change(&owner_changed(":1.66", rauc, ":1.66"), rauc),
            None
        );
    }

    #[test]
    fn only_the_owner_is_believed() {
        let signal = |sender: &str| {
            Message::signal("/", "de.pengutronix.rauc.Installer", "Completed")
                .sender(sender)
                .build(&(0i32,))
                .unwrap()
        };
        let owner = OwnedUniqueName::try_from(":1.7").unwrap();
        assert!(from_owner(&signal(":1.7"), Some(&owner)));
        assert!(!from_owner(&signal(":1.66"), Some(&owner)));
        // Nobody is believed while the owner is unknown.
        assert!(!from_owner(&signal(":1.7"), None));
    }

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
