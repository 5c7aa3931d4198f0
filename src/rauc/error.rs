//! Errors at the RAUC adapter boundary.

use std::fmt;
use std::path::PathBuf;

use zbus::{DBusError, fdo};

/// What a failed call was about, shown in error messages.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Subject {
    /// The call has no argument worth naming (`GetSlotStatus`, properties).
    #[default]
    None,
    /// A bundle file.
    Bundle(PathBuf),
    /// A slot identifier as passed to `Mark` (`booted`, `other` or a slot name).
    Slot(String),
}

impl fmt::Display for Subject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Subject::None => Ok(()),
            Subject::Bundle(path) => write!(f, " of bundle {}", path.display()),
            Subject::Slot(slot) => write!(f, " for slot {slot:?}"),
        }
    }
}

/// An error from talking to RAUC.
///
/// [`is_unavailable`](RaucError::is_unavailable) separates "RAUC is not on the bus" (the agent
/// keeps going and reports RAUC as unavailable) from errors RAUC itself returned
/// ([`RaucError::Rejected`], which carries RAUC's message verbatim).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RaucError {
    /// Nobody owns `de.pengutronix.rauc` (`org.freedesktop.DBus.Error.ServiceUnknown` or
    /// `NameHasNoOwner`): RAUC is not running or restarting.
    #[error("RAUC is not on the bus ({method}{subject}): {detail}")]
    Unavailable {
        method: &'static str,
        subject: Subject,
        detail: String,
    },
    /// RAUC answered the call with an error. `message` is RAUC's own text, e.g. `Invalid slot
    /// name format: 'foo'` or `already processing a different method`.
    #[error("RAUC refused {method}{subject}: {message}")]
    Rejected {
        method: &'static str,
        subject: Subject,
        /// The D-Bus error name. RAUC 1.8 sends GLib's unmapped name
        /// (`org.gtk.GDBus.UnmappedGError.Quark._g_2dio_2derror_2dquark.Code30`) for nearly
        /// everything, so only the message is informative.
        error_name: String,
        message: String,
    },
    /// The running RAUC does not implement the method (`UnknownMethod`), e.g. `InspectBundle`
    /// on RAUC 1.8.
    #[error("RAUC does not support {method}")]
    Unsupported { method: &'static str },
    /// The installation started but RAUC reported failure in its `Completed` signal.
    #[error("installing bundle {} failed (RAUC result {code}): {message}", bundle.display())]
    InstallFailed {
        bundle: PathBuf,
        code: i32,
        /// RAUC's `LastError` after the installation, e.g. `Installation error: Compatible
        /// mismatch: …`.
        message: String,
    },
    /// The call did not complete at the D-Bus level (connection lost, timeout, a reply that
    /// does not match the interface).
    #[error("D-Bus error calling RAUC {method}{subject}: {detail}")]
    Bus {
        method: &'static str,
        subject: Subject,
        detail: String,
    },
    /// The bundle path is relative (RAUC would resolve it against its own working directory)
    /// or not UTF-8 (D-Bus strings are).
    #[error("bundle path {} must be absolute and valid UTF-8", .0.display())]
    InvalidPath(PathBuf),
}

impl RaucError {
    /// RAUC is not on the bus; the call may work once it (re)appears.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, RaucError::Unavailable { .. })
    }

    /// RAUC refused because it is busy with another operation (an installation is running).
    /// RAUC 1.8 refuses `GetSlotStatus`, `Mark`, `Install*` and `Info` while installing.
    pub fn is_busy(&self) -> bool {
        match self {
            RaucError::Rejected { message, .. } => message
                .to_ascii_lowercase()
                .contains("already processing a different method"),
            _ => false,
        }
    }

    /// Worth trying again later without changing anything.
    pub fn is_retryable(&self) -> bool {
        match self {
            RaucError::Unavailable { .. } | RaucError::Bus { .. } => true,
            RaucError::Rejected { .. } => self.is_busy(),
            RaucError::Unsupported { .. }
            | RaucError::InstallFailed { .. }
            | RaucError::InvalidPath(_) => false,
        }
    }

    /// Classify a zbus error from calling `method`.
    pub(crate) fn from_zbus(method: &'static str, subject: Subject, err: zbus::Error) -> RaucError {
        match err {
            zbus::Error::FDO(e) => Self::from_fdo(method, subject, *e),
            zbus::Error::MethodError(name, message, _) => RaucError::Rejected {
                method,
                subject,
                error_name: name.to_string(),
                message: message.unwrap_or_default(),
            },
            other => RaucError::Bus {
                method,
                subject,
                detail: other.to_string(),
            },
        }
    }

    /// Classify an `org.freedesktop.DBus.Error.*` from calling `method`.
    pub(crate) fn from_fdo(method: &'static str, subject: Subject, err: fdo::Error) -> RaucError {
        let detail = err.description().unwrap_or_default().to_string();
        match err {
            fdo::Error::ZBus(e) => Self::from_zbus(method, subject, e),
            fdo::Error::ServiceUnknown(_) | fdo::Error::NameHasNoOwner(_) => {
                RaucError::Unavailable {
                    method,
                    subject,
                    detail,
                }
            }
            fdo::Error::UnknownMethod(_) => RaucError::Unsupported { method },
            fdo::Error::NoReply(_)
            | fdo::Error::Timeout(_)
            | fdo::Error::TimedOut(_)
            | fdo::Error::Disconnected(_)
            | fdo::Error::IOError(_)
            | fdo::Error::NoServer(_) => RaucError::Bus {
                method,
                subject,
                detail: err.to_string(),
            },
            other => RaucError::Rejected {
                method,
                subject,
                error_name: other.name().to_string(),
                message: detail,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_unknown_is_unavailable() {
        let e = RaucError::from_zbus(
            "GetSlotStatus",
            Subject::None,
            zbus::Error::from(fdo::Error::ServiceUnknown(
                "The name is not activatable".into(),
            )),
        );
        assert!(e.is_unavailable());
        assert!(e.is_retryable());
        let e = RaucError::from_fdo(
            "GetAll",
            Subject::None,
            fdo::Error::NameHasNoOwner("no owner".into()),
        );
        assert!(e.is_unavailable());
    }

    #[test]
    fn unknown_method_is_unsupported() {
        let e = RaucError::from_fdo(
            "InspectBundle",
            Subject::Bundle("/tmp/b.raucb".into()),
            fdo::Error::UnknownMethod("No such method “InspectBundle”".into()),
        );
        assert_eq!(
            e,
            RaucError::Unsupported {
                method: "InspectBundle"
            }
        );
        assert!(!e.is_retryable());
    }

    #[test]
    fn rejection_carries_raucs_message_and_context() {
        let e = RaucError::Rejected {
            method: "Mark",
            subject: Subject::Slot("foo".into()),
            error_name: "org.gtk.GDBus.UnmappedGError.Quark._g_2dio_2derror_2dquark.Code30".into(),
            message: "Invalid slot name format: 'foo'".into(),
        };
        assert!(!e.is_unavailable());
        assert!(!e.is_busy());
        assert_eq!(
            e.to_string(),
            "RAUC refused Mark for slot \"foo\": Invalid slot name format: 'foo'"
        );
    }

    #[test]
    fn busy_is_retryable() {
        let e = RaucError::Rejected {
            method: "GetSlotStatus",
            subject: Subject::None,
            error_name: "org.gtk.GDBus.UnmappedGError.Quark._g_2dio_2derror_2dquark.Code30".into(),
            message: "Already processing a different method".into(),
        };
        assert!(e.is_busy());
        assert!(e.is_retryable());
    }

    #[test]
    fn install_failure_names_the_bundle() {
        let e = RaucError::InstallFailed {
            bundle: "/data/u.raucb".into(),
            code: 1,
            message: "Installation error: Compatible mismatch".into(),
        };
        assert_eq!(
            e.to_string(),
            "installing bundle /data/u.raucb failed (RAUC result 1): \
             Installation error: Compatible mismatch"
        );
    }
}
