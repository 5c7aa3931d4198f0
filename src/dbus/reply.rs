//! Replies of the report methods (`GetReport`, `GetPublicKey`), whose argument errors use the
//! bus's standard name.

use zbus::message::Header;

use super::AgentError;
use crate::report::ReportError;

/// `GetReport`'s errors: a bad nonce is the bus's standard `InvalidArgs` (the caller passed
/// a wrong argument, like a wrong signature would be), everything else an [`AgentError`].
/// zbus names an `AgentError::ZBus` `org.freedesktop.zbus.Error`, hence this wrapper.
#[derive(Debug)]
pub enum ReportReply {
    InvalidArgs(zbus::fdo::Error),
    Agent(AgentError),
}

impl From<ReportError> for ReportReply {
    fn from(e: ReportError) -> ReportReply {
        match e {
            ReportError::Nonce(_) => {
                ReportReply::InvalidArgs(zbus::fdo::Error::InvalidArgs(e.to_string()))
            }
            ReportError::NoKey(_) => ReportReply::Agent(AgentError::Unavailable(e.to_string())),
            other => ReportReply::Agent(AgentError::Internal(other.to_string())),
        }
    }
}

impl From<zbus::Error> for ReportReply {
    fn from(e: zbus::Error) -> ReportReply {
        ReportReply::Agent(AgentError::ZBus(e))
    }
}

impl std::fmt::Display for ReportReply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReportReply::InvalidArgs(e) => e.fmt(f),
            ReportReply::Agent(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for ReportReply {}

impl zbus::DBusError for ReportReply {
    fn name(&self) -> zbus::names::ErrorName<'_> {
        match self {
            ReportReply::InvalidArgs(e) => e.name(),
            ReportReply::Agent(e) => e.name(),
        }
    }

    fn description(&self) -> Option<&str> {
        match self {
            ReportReply::InvalidArgs(e) => e.description(),
            ReportReply::Agent(e) => e.description(),
        }
    }

    fn create_reply(&self, call: &Header<'_>) -> zbus::Result<zbus::message::Message> {
        match self {
            ReportReply::InvalidArgs(e) => e.create_reply(call),
            ReportReply::Agent(e) => e.create_reply(call),
        }
    }
}
