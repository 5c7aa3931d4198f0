//! The status snapshot: everything the agent knows and shows, as plain data.
//!
//! The engine owns the one authoritative [`Status`] and publishes copies through a
//! `tokio::sync::watch` channel; the D-Bus service and tests only read it. Adapters report
//! what they observe as [`RaucInfo`] and [`ModemInfo`] values; these types carry no I/O.

use jiff::Timestamp;
use jiff::civil::Date;
use serde::Serialize;

use crate::metadata::client::BundleTarget;

/// Where the agent is in the update lifecycle (ARCHITECTURE.md, "Update lifecycle").
///
/// The string forms ([`UpdateState::as_str`]) are part of the D-Bus contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum UpdateState {
    Idle,
    Checking,
    Available,
    Deferred,
    Downloading,
    Verifying,
    Installing,
    RebootRequired,
    Confirming,
    Failed,
    RolledBack,
}

impl UpdateState {
    /// Stable name used on D-Bus, in the store and in `ssuctl`.
    pub fn as_str(self) -> &'static str {
        match self {
            UpdateState::Idle => "idle",
            UpdateState::Checking => "checking",
            UpdateState::Available => "available",
            UpdateState::Deferred => "deferred",
            UpdateState::Downloading => "downloading",
            UpdateState::Verifying => "verifying",
            UpdateState::Installing => "installing",
            UpdateState::RebootRequired => "reboot-required",
            UpdateState::Confirming => "confirming",
            UpdateState::Failed => "failed",
            UpdateState::RolledBack => "rolled-back",
        }
    }
}

/// How fresh the device's knowledge of available security updates is (SEC-0020).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Staleness {
    /// Fresh signed metadata was verified within the check interval and the patch level is
    /// not overdue.
    Current,
    /// The installed patch level is older than the cadence plus grace allows.
    Overdue,
    /// Fresh signed metadata could not be obtained: the agent cannot claim "up to date".
    Unverified,
}

impl Staleness {
    pub fn as_str(self) -> &'static str {
        match self {
            Staleness::Current => "current",
            Staleness::Overdue => "overdue",
            Staleness::Unverified => "unverified",
        }
    }
}

/// Whether an external component the agent depends on is reachable on the bus.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Availability {
    /// Not yet looked at.
    #[default]
    Unknown,
    /// The service owns its bus name and answered.
    Running,
    /// The service is not on the bus (or did not answer); the agent keeps going without it.
    Unavailable,
}

impl Availability {
    pub fn as_str(self) -> &'static str {
        match self {
            Availability::Unknown => "unknown",
            Availability::Running => "running",
            Availability::Unavailable => "unavailable",
        }
    }
}

/// One RAUC slot as reported by `GetSlotStatus`, with the fields a settings screen shows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Default)]
pub struct SlotInfo {
    /// RAUC slot name, e.g. `rootfs.0`.
    pub name: String,
    /// Slot class, e.g. `rootfs`.
    pub class: String,
    /// `booted`, `active` or `inactive` as RAUC says.
    pub state: String,
    /// Bootname (`A`/`B`), empty when RAUC gives none.
    pub bootname: String,
    /// `good`/`bad` from the bootloader, empty when unknown.
    pub boot_status: String,
    /// Version of the bundle last installed into this slot, empty when unknown.
    pub bundle_version: String,
    /// When RAUC installed into this slot (RFC 3339 as RAUC reports it), empty when unknown.
    pub installed_timestamp: String,
}

/// What RAUC reports through its D-Bus API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Default)]
pub struct RaucInfo {
    pub availability: Availability,
    /// `Compatible` property; empty while unknown.
    pub compatible: String,
    /// `BootSlot` property (a bootname); empty while unknown.
    pub boot_slot: String,
    /// `Operation` property (`idle`, `installing`).
    pub operation: String,
    /// `LastError` property.
    pub last_error: String,
    pub slots: Vec<SlotInfo>,
}

/// What ModemManager reports. Identifiers that name a subscriber (IMSI, ICCID, IMEI) are
/// masked by the adapter before they reach this struct.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Default)]
pub struct ModemInfo {
    pub availability: Availability,
    /// Number of modems ModemManager exports.
    pub modems: u32,
    /// Modem model string of the first modem, empty when unknown.
    pub model: String,
    /// Home operator of the SIM (`OperatorIdentifier`, MCC-MNC), empty when unknown.
    pub home_mcc_mnc: String,
    /// `OperatorName` of the SIM, empty when unknown.
    pub operator_name: String,
    /// ICCID masked to its last digits (e.g. `…1234`), empty when unknown.
    pub iccid_masked: String,
    /// The ICCID's issuer digits (its first 7: "89", country, issuer), for matching operator
    /// profiles; they name the SIM's issuer, not the subscriber. Empty when unknown.
    pub iccid_issuer: String,
    /// Serving network MCC-MNC (`3gpp.OperatorCode`), empty when unknown.
    pub serving_mcc_mnc: String,
    /// `RegistrationState` (MMModem3gppRegistrationState), `None` when unknown.
    pub registration_state: Option<u32>,
    /// The cellular network's time (`Modem.Time.GetNetworkTime`) minus the system clock when
    /// it was read, in seconds: trusted time for the clock ratchet (`policy::time`). `None`
    /// when the modem or network gives none.
    pub network_time_offset_s: Option<i64>,
}

/// What NetworkManager says about the default connection's cost.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Default)]
pub struct NetworkInfo {
    pub availability: Availability,
    /// `Metered` of NetworkManager: `yes` and `guess-yes` count as metered; `None` while
    /// unknown (NetworkManager absent or says unknown), which does not defer anything.
    pub metered: Option<bool>,
}

/// The subscription as the agent has settled it (FS.25 TES-0010): the matching operator
/// profile, persisted across restarts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Default)]
pub struct Subscription {
    /// Operator profile name, `none` when no profile matches, empty before the first SIM
    /// was ever seen.
    pub profile: String,
    /// False while the modem cannot tell (ModemManager away, no SIM, locked SIM): `profile`
    /// is then the last one known, kept rather than flip-flopping.
    pub known: bool,
}

/// Which server updates come from and why, and what holds an update back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Default)]
pub struct UpdateSource {
    /// `manufacturer` or an operator profile's name; empty while no server is configured.
    pub source: String,
    pub url: String,
    pub reason: String,
    /// Set while an update waits for the operator's approval or server.
    pub waiting_until: Option<Timestamp>,
    /// Why a download is deferred (metered, roaming, budget), empty when it is not.
    pub deferred: String,
}

/// Whether this device can still be trusted to run what was installed (FS.25 TES-0030's
/// exception: rooting or modified firmware). The string forms are part of the D-Bus contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum IntegrityState {
    /// Not probed yet, or no probe could give an answer.
    #[default]
    Unknown,
    /// Every probe that could answer passed.
    Trusted,
    /// At least one probe found evidence of rooting or modification.
    Compromised,
}

impl IntegrityState {
    pub fn as_str(self) -> &'static str {
        match self {
            IntegrityState::Unknown => "unknown",
            IntegrityState::Trusted => "trusted",
            IntegrityState::Compromised => "compromised",
        }
    }
}

/// What one integrity probe found (fwupd HSI style: a stable probe id, an outcome, evidence).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IntegrityFinding {
    /// Stable probe id, e.g. `kernel-taint`.
    pub probe: String,
    /// `pass`, `fail` or `unknown` (the probe could not tell, e.g. not exposed on this device).
    pub outcome: String,
    /// Human-readable evidence (what was read where).
    pub evidence: String,
}

/// The integrity verdict with its evidence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Default)]
pub struct Integrity {
    pub state: IntegrityState,
    pub findings: Vec<IntegrityFinding>,
}

/// An installed release as the store records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Installed {
    pub version: String,
    /// The feature release the installed version belongs to; a security update must be
    /// built on exactly this release (FS.25 SEC-0010).
    pub feature_release: String,
    /// Security patch level, Android convention (a date).
    pub security_patch_level: Date,
    /// When it was applied; `None` for the factory image.
    pub applied_at: Option<Timestamp>,
}

/// Outcome of the most recent check for updates.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CheckRecord {
    pub at: Timestamp,
    /// True when signed metadata was fetched and verified.
    pub verified: bool,
    /// Human-readable outcome (e.g. "no update source configured").
    pub message: String,
}

/// A verified update this device may install.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Offer {
    pub target: BundleTarget,
    /// Which update source lists it (`manufacturer` or an operator).
    pub source: String,
    /// Why its download waits for a cheaper link, and what taking it now costs; empty when
    /// it does not wait (a deferred update is announced too: COM-0010, ETSI 5.3-11).
    pub deferred: String,
    /// When a deferred download starts anyway (the maximum deferral), if it does.
    pub deferred_until: Option<Timestamp>,
}

impl Offer {
    /// An offer that does not wait for the link.
    pub fn new(target: BundleTarget, source: String) -> Offer {
        Offer {
            target,
            source,
            deferred: String::new(),
            deferred_until: None,
        }
    }
}

/// The whole snapshot the engine publishes.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Status {
    pub state: UpdateState,
    /// 0..=100 while an operation runs, 0 otherwise.
    pub progress: u32,
    pub installed: Option<Installed>,
    pub last_check: Option<CheckRecord>,
    pub staleness: Staleness,
    /// The update on offer, if any.
    pub available: Option<Offer>,
    pub model: String,
    pub hardware_id: String,
    pub auto_install: bool,
    pub postponed_until: Option<Timestamp>,
    /// Human-readable reason for the last failure, empty when none.
    pub last_error: String,
    pub rauc: RaucInfo,
    pub modem: ModemInfo,
    pub integrity: Integrity,
    pub network: NetworkInfo,
    pub subscription: Subscription,
    pub source: UpdateSource,
    /// Reasons of the host inhibitors held now (installation and reboot wait while any is).
    pub inhibitors: Vec<String>,
    /// The security support period of this model.
    pub support: Support,
    /// The newest signed metadata verified, and when (signed reports carry it).
    pub verified: VerifiedMetadata,
    /// Signed reports on their way to the fleet server (`[report] url`).
    pub delivery: ReportDelivery,
}

/// Delivery of signed reports to the fleet server, as a settings screen shows it: whether
/// reports reach the fleet, or pile up and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Default)]
pub struct ReportDelivery {
    /// `[report] url` is set; without it nothing else here changes.
    pub configured: bool,
    /// Reports in the queue, not yet acknowledged by the server.
    pub queued: u32,
    /// When the server last acknowledged a report (kept across restarts); `None`: never.
    pub last_delivered: Option<Timestamp>,
    /// Why the last attempt failed or the last report was refused, as one clean short line;
    /// empty after a delivery.
    pub last_error: String,
    /// Why queued reports wait instead of going out (the byte budget of a metered or roaming
    /// link is spent); empty while they may go out. Not a failure: nothing was attempted.
    pub waiting: String,
}

/// The highest role versions of the manufacturer's metadata this device verified (its
/// rollback floor, kept across restarts) and when a check last verified it; a hub judges
/// freshness by these.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Default)]
pub struct VerifiedMetadata {
    /// `None` before the first verified check.
    pub at: Option<Timestamp>,
    pub versions: crate::metadata::client::RoleVersions,
}

/// The support period as shown (SEC-0030/0040): from signed per-model metadata, or the
/// configuration's fallback.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Default)]
pub struct Support {
    /// Last day of security support, `None` when unknown.
    pub end: Option<Date>,
    pub state: crate::policy::support::SupportState,
    /// What replaces this model after the end; empty when unknown.
    pub replacement_text: String,
    pub replacement_url: String,
    /// `signed-metadata` or `configuration`; empty when unknown.
    pub origin: String,
    /// Why this device cannot be updated any more although its end date has not passed
    /// (SEC-0040); `state` is then `ended`. Empty otherwise.
    pub cannot_update: String,
}
