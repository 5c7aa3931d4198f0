//! Starting the services the agent needs the way D-Bus and systemd expect: by bus activation.
//!
//! On a systemd device RAUC (`de.pengutronix.rauc`) and polkit (`org.freedesktop.PolicyKit1`)
//! are usually *bus-activated*: nothing starts them at boot, the bus starts them when someone
//! asks (dbus-daemon hands the request to systemd through the `SystemdService=` of their
//! `.service` file). So "not on the bus right now" does not mean "not installed". A service
//! is one of three things, decided from `NameHasOwner` and `ListActivatableNames`
//! ([`presence_from`]):
//!
//! - running: use it;
//! - activatable: start it with `StartServiceByName` (the agent does not rely on zbus's auto
//!   start of a first method call: an explicit start has its own timeout and log line, and
//!   the watchers never make a call to an absent service);
//! - absent: the image does not have it; the agent copes without it.
//!
//! Every call to the bus here has a timeout: a bus that does not answer must not wedge a
//! watcher or an authorization.

use std::time::Duration;

use zbus::fdo::{DBusProxy, StartServiceReply};
use zbus::names::{BusName, WellKnownName};

/// How long the bus daemon gets to answer a question about names. It answers these itself.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a service gets to be started. dbus-daemon gives an activated service 25 s
/// (`service_start_timeout` of the system bus) before it answers with an error itself; this
/// is only the backstop for a bus that never answers.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);

/// Whether a service is there, as the bus sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Presence {
    /// Someone owns the name.
    Running,
    /// Nobody owns the name, but the bus can start a service for it.
    Activatable,
    /// Neither: the image does not have the service (or its bus configuration).
    Absent,
}

/// What [`ensure_running`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Started {
    /// It was already on the bus.
    AlreadyRunning,
    /// The bus started it.
    Activated,
    /// It is not on the bus and not activatable.
    Absent,
    /// Activatable, but systemd says its unit is missing or masked: the image installed it
    /// and turned it off (ModemManager on an image without a modem, say). Not retried.
    Disabled,
}

/// Why a service could not be looked at or started.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ActivationError {
    #[error("the bus did not answer {call} within {timeout:?}")]
    Timeout {
        call: &'static str,
        timeout: Duration,
    },
    /// The bus (or systemd behind it) answered with an error, e.g. the unit failed.
    #[error("{call} failed: {error}")]
    Bus { call: &'static str, error: String },
}

/// The pure decision: `name` is running if it has an owner, else activatable if the bus
/// lists it among its activatable names, else absent.
pub fn presence_from<S: AsRef<str>>(has_owner: bool, activatable: &[S], name: &str) -> Presence {
    if has_owner {
        Presence::Running
    } else if activatable.iter().any(|a| a.as_ref() == name) {
        Presence::Activatable
    } else {
        Presence::Absent
    }
}

/// Asks the bus whether `name` is running, activatable or absent.
pub async fn presence(
    dbus: &DBusProxy<'_>,
    name: &'static str,
) -> Result<Presence, ActivationError> {
    let bus_name = BusName::from(WellKnownName::from_static_str_unchecked(name));
    let has_owner =
        with_timeout("NameHasOwner", CALL_TIMEOUT, dbus.name_has_owner(bus_name)).await?;
    if has_owner {
        return Ok(Presence::Running);
    }
    let activatable = with_timeout(
        "ListActivatableNames",
        CALL_TIMEOUT,
        dbus.list_activatable_names(),
    )
    .await?;
    let activatable: Vec<&str> = activatable.iter().map(|n| n.as_str()).collect();
    Ok(presence_from(false, &activatable, name))
}

/// Makes sure `name` runs: nothing to do if it does, `StartServiceByName` if it is
/// activatable, [`Started::Absent`] if the image does not have it.
pub async fn ensure_running(
    dbus: &DBusProxy<'_>,
    name: &'static str,
) -> Result<Started, ActivationError> {
    match presence(dbus, name).await? {
        Presence::Running => Ok(Started::AlreadyRunning),
        Presence::Absent => Ok(Started::Absent),
        Presence::Activatable => {
            let well_known = WellKnownName::from_static_str_unchecked(name);
            let started =
                tokio::time::timeout(START_TIMEOUT, dbus.start_service_by_name(well_known, 0))
                    .await;
            let reply = match started {
                Ok(Ok(reply)) => reply,
                Ok(Err(e)) if is_disabled(&e) => return Ok(Started::Disabled),
                Ok(Err(e)) => {
                    return Err(ActivationError::Bus {
                        call: "StartServiceByName",
                        error: e.to_string(),
                    });
                }
                Err(_) => {
                    return Err(ActivationError::Timeout {
                        call: "StartServiceByName",
                        timeout: START_TIMEOUT,
                    });
                }
            };
            Ok(match reply {
                // Someone else started it between our two questions.
                StartServiceReply::AlreadyRunning => Started::AlreadyRunning,
                StartServiceReply::Success => Started::Activated,
            })
        }
    }
}

/// Whether a failed start means the service is turned off rather than broken: the bus passes
/// on systemd's error when the activation file's `SystemdService=` unit is not there (an alias
/// such as `dbus-org.freedesktop.ModemManager1.service` exists only while the service is
/// enabled) or is masked.
fn is_disabled(e: &zbus::fdo::Error) -> bool {
    match e {
        zbus::fdo::Error::ZBus(zbus::Error::MethodError(name, _, _)) => is_disabled_name(name),
        _ => false,
    }
}

fn is_disabled_name(name: &str) -> bool {
    matches!(
        name,
        "org.freedesktop.systemd1.NoSuchUnit" | "org.freedesktop.systemd1.UnitMasked"
    )
}

async fn with_timeout<T, E: std::fmt::Display>(
    call: &'static str,
    timeout: Duration,
    fut: impl Future<Output = Result<T, E>>,
) -> Result<T, ActivationError> {
    match tokio::time::timeout(timeout, fut).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(ActivationError::Bus {
            call,
            error: e.to_string(),
        }),
        Err(_) => Err(ActivationError::Timeout { call, timeout }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_or_masked_unit_means_disabled_anything_else_is_a_failure() {
        assert!(is_disabled_name("org.freedesktop.systemd1.NoSuchUnit"));
        assert!(is_disabled_name("org.freedesktop.systemd1.UnitMasked"));
        for other in [
            "org.freedesktop.DBus.Error.Spawn.ChildExited",
            "org.freedesktop.DBus.Error.TimedOut",
            "org.freedesktop.systemd1.NoSuchUnitX",
            "",
        ] {
            assert!(!is_disabled_name(other), "{other}");
        }
    }

    /// The error as zbus hands it to a caller of `StartServiceByName`.
    fn reply_error(name: &str) -> zbus::fdo::Error {
        let call = zbus::Message::method_call("/org/freedesktop/DBus", "StartServiceByName")
            .build(&())
            .unwrap();
        let reply = zbus::Message::error(&call.header(), name)
            .build(&("Unit dbus-org.freedesktop.ModemManager1.service not found.",))
            .unwrap();
        zbus::fdo::Error::from(zbus::Error::from(reply))
    }

    #[test]
    fn systemds_refusal_to_start_a_turned_off_unit_is_recognised() {
        assert!(is_disabled(&reply_error(
            "org.freedesktop.systemd1.NoSuchUnit"
        )));
        assert!(is_disabled(&reply_error(
            "org.freedesktop.systemd1.UnitMasked"
        )));
        assert!(!is_disabled(&reply_error(
            "org.freedesktop.DBus.Error.Spawn.ChildExited"
        )));
        assert!(!is_disabled(&reply_error(
            "org.freedesktop.DBus.Error.TimedOut"
        )));
    }

    #[test]
    fn running_activatable_or_absent() {
        let listed = ["org.freedesktop.DBus", "de.pengutronix.rauc"];
        let none: [&str; 0] = [];
        let table = [
            (true, &listed[..], "de.pengutronix.rauc", Presence::Running),
            // Running without an activation file (started by a unit or by hand).
            (true, &none[..], "de.pengutronix.rauc", Presence::Running),
            (
                false,
                &listed[..],
                "de.pengutronix.rauc",
                Presence::Activatable,
            ),
            (false, &none[..], "de.pengutronix.rauc", Presence::Absent),
            (
                false,
                &listed[..],
                "org.freedesktop.PolicyKit1",
                Presence::Absent,
            ),
            // Names are compared exactly: no prefix, no case folding.
            (false, &listed[..], "de.pengutronix", Presence::Absent),
            (false, &listed[..], "DE.pengutronix.rauc", Presence::Absent),
        ];
        for (has_owner, activatable, name, want) in table {
            assert_eq!(
                presence_from(has_owner, activatable, name),
                want,
                "{has_owner} {activatable:?} {name}"
            );
        }
    }
}
