//! The persisted record of an update in progress.
//!
//! Written to the store (key [`KEY`]) *before* each step's side effect, so that after a power
//! cut or `kill -9` the engine knows exactly where it was: resume a download, wait for an
//! installation RAUC is still running, avoid installing twice, or confirm a new slot after
//! the reboot.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::metadata::client::BundleTarget;

/// Store `state` key of the record.
pub const KEY: &str = "pending_update";

/// Where an update is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    /// Fetching the bundle (resumable).
    Downloading,
    /// RAUC has been (or is about to be) asked to install it.
    Installing,
    /// RAUC installed it into the other slot; waiting for the reboot.
    Installed,
    /// Booted after the install; health checks and `Mark(good)` are under way.
    Confirming,
    /// The new slot failed its checks; marked bad, rebooting back.
    RollingBack,
}

/// The record itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pending {
    pub phase: Phase,
    pub target: BundleTarget,
    /// Which update source it came from.
    pub source: String,
    pub started: Timestamp,
    /// Boot id and RAUC booted slot (bootname) when RAUC was asked to install; a different
    /// boot id later means the device rebooted since.
    #[serde(default)]
    pub boot_id: String,
    #[serde(default)]
    pub booted_slot: String,
    /// Why the new slot was rejected (RollingBack).
    #[serde(default)]
    pub reason: String,
}

impl Pending {
    pub fn to_json(&self) -> String {
        // Serialising plain data cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Parses a stored record; a record this agent cannot read is reported, not guessed at.
    pub fn from_json(s: &str) -> Result<Pending, String> {
        serde_json::from_str(s).map_err(|e| format!("unreadable pending update record: {e}"))
    }
}
