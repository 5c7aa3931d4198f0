//! Configuration: `/etc/ssu-agent/agent.toml` plus drop-ins in `agent.d/*.toml`.
//!
//! Files are read in order (the main file, then the drop-ins sorted by name); a key set in a
//! later file overrides the same key from an earlier one, table by table. Everything is
//! validated once, at start, into the typed [`Config`]; the daemon never re-reads a key later.
//!
//! Every error names the file, the key and the reason (`FILE:LINE: KEY: REASON`), because the
//! person reading it is an integrator editing a drop-in on a device, not a Rust developer.
//! Unknown keys are errors: a misspelt key silently falling back to a default is how a device
//! ends up never checking for updates.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use jiff::civil::Date;
use jiff::{SignedDuration, Span, SpanRelativeTo};
use serde::{Deserialize, Deserializer, Serialize};

mod load;
pub mod operator;
pub mod report;
pub use load::{Loaded, files_for, from_sources, load};
pub use operator::{LinkCostConfig, OperatorProfile};
pub use report::ReportConfig;

/// Where the daemon looks when `--config` is not given.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/ssu-agent/agent.toml";

/// Largest configuration file we read. Real files are a few KiB; the bound keeps a broken
/// symlink to a device node or a huge file from eating memory at boot.
const MAX_FILE_BYTES: u64 = 256 * 1024;

/// The validated configuration.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub agent: AgentConfig,
    pub device: DeviceConfig,
    pub check: CheckConfig,
    /// The manufacturer's update server; without it the agent cannot verify anything.
    pub manufacturer: Option<SourceConfig>,
    pub download: DownloadConfig,
    pub install: InstallConfig,
    pub integrity: IntegrityConfig,
    /// `[[operator]]`: mobile operators' update channels (see [`operator`]).
    #[serde(rename = "operator")]
    pub operators: Vec<OperatorProfile>,
    /// `[link_cost]`: deferring downloads on metered and roaming links.
    pub link_cost: LinkCostConfig,
    pub authorization: AuthorizationConfig,
    pub notify: NotifyConfig,
    /// `[spread]`: per-device offsets so a fleet does not move in lockstep.
    pub spread: SpreadConfig,
    /// `[report]`: delivering signed reports to a fleet server.
    pub report: ReportConfig,
}

/// `[spread]`: the most each per-device offset may delay (see [`crate::policy::spread`]).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct SpreadConfig {
    /// The first check after start (added to `[check] boot_delay`).
    pub first_check: Dur,
    /// The model's signed rollout wave start.
    pub wave: Dur,
    /// The end of an operator's approval grace (may exceed `approval_grace` by this much).
    pub approval: Dur,
    /// The maintenance window's opening (at most half the window).
    pub window: Dur,
}

impl Default for SpreadConfig {
    fn default() -> Self {
        SpreadConfig {
            first_check: Dur(SignedDuration::from_mins(10)),
            wave: Dur(SignedDuration::from_hours(6)),
            approval: Dur(SignedDuration::from_hours(1)),
            window: Dur(SignedDuration::from_hours(1)),
        }
    }
}

/// `[authorization]`: who may change what the agent does (check, install, configure).
///
/// With polkit on the bus it decides (actions `org.ssu.agent.*`). Without polkit, the
/// allowlist decides; with neither, every mutating method is refused — never open.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthorizationConfig {
    /// Ask polkit when it is on the bus. `false` makes the allowlist decide even then.
    pub polkit: bool,
    /// Users (names or numeric uids) allowed when polkit does not decide.
    pub allow_users: Vec<String>,
    /// Groups (names or numeric gids) whose members are allowed when polkit does not decide.
    pub allow_groups: Vec<String>,
}

impl Default for AuthorizationConfig {
    fn default() -> Self {
        AuthorizationConfig {
            polkit: true,
            allow_users: Vec::new(),
            allow_groups: Vec::new(),
        }
    }
}

/// `[notify]`: telling the people at the device.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct NotifyConfig {
    /// Show a desktop notification (org.freedesktop.Notifications) for a new security update.
    pub desktop: bool,
}

/// `[integrity]`: what rooting or modified firmware changes (FS.25 TES-0030's exception),
/// and how the probes look for it (`crate::integrity`, `docs/integrity.md`).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct IntegrityConfig {
    /// What the agent does when integrity is lost.
    pub on_loss: OnIntegrityLoss,
    /// The directory the probes treat as `/` (tests and the sandbox point it at a fixture).
    pub root: PathBuf,
    /// The probes that run (all by default).
    pub probes: Vec<crate::integrity::ProbeId>,
    /// `dm-verity`: the root filesystem must be a verity device (skipped when false).
    pub require_verity: bool,
    /// `kernel-taint`: taint bits this device's vendor legitimately sets (e.g. 0x1000, O).
    pub allowed_taint: u64,
    /// `secure-boot`: a kernel command line token (`key=value` or `key`) that the boot chain
    /// sets when verified boot is on.
    pub secure_boot_cmdline: Option<String>,
    /// `secure-boot`: a device-tree property (relative to /proc/device-tree) saying so.
    pub secure_boot_dt_property: Option<PathBuf>,
    /// The value that property has when verified boot is on.
    pub secure_boot_dt_value: String,
    /// `setuid`: directories searched for setuid/setgid executables and `su`.
    pub setuid_paths: Vec<PathBuf>,
    /// `setuid`: files the image legitimately ships with set-id bits (e.g. /usr/bin/passwd).
    pub setuid_allowed: Vec<PathBuf>,
    /// `bootloader-unlock`: a file whose existence means the bootloader is unlocked.
    pub unlock_marker: Option<PathBuf>,
    /// `bootloader-unlock`: a file that reads `lock_value` while the bootloader is locked.
    pub lock_variable: Option<PathBuf>,
    /// See `lock_variable`.
    pub lock_value: String,
}

impl Default for IntegrityConfig {
    fn default() -> Self {
        IntegrityConfig {
            on_loss: OnIntegrityLoss::default(),
            root: PathBuf::from("/"),
            probes: crate::integrity::ProbeId::ALL.to_vec(),
            require_verity: false,
            allowed_taint: 0,
            secure_boot_cmdline: None,
            secure_boot_dt_property: None,
            secure_boot_dt_value: "1".to_owned(),
            setuid_paths: Vec::new(),
            setuid_allowed: Vec::new(),
            unlock_marker: None,
            lock_variable: None,
            lock_value: "locked".to_owned(),
        }
    }
}

/// Policy when the device's integrity is lost (`[integrity] on_loss`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum OnIntegrityLoss {
    /// Stop using the operator's channel (its approvals no longer apply); keep installing the
    /// manufacturer's security updates and report the state. FS.25's default.
    #[default]
    DropOperatorChannel,
    /// Only report the state; keep every channel as it was.
    ReportOnly,
}

/// An update server: a TUF repository as `ssu-repo` publishes it.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    /// Base URL of the published directory (`metadata/` and `targets/` below it).
    pub url: url::Url,
    /// The repository's root of trust as shipped on the device (`1.root.json`).
    pub root: PathBuf,
}

/// `[download]`: fetching bundles.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct DownloadConfig {
    /// Partial and verified bundles. Must be absolute.
    pub cache_dir: PathBuf,
    /// Extra CA certificate (PEM) for update servers with a private CA.
    pub ca_file: Option<PathBuf>,
    /// Give up connecting after this long.
    pub connect_timeout: Dur,
    /// Abort an attempt that receives nothing for this long (it resumes on the next).
    pub read_timeout: Dur,
    /// Attempts per download before it counts as failed (each resumes where the last stopped).
    pub max_attempts: u32,
}

/// `[install]`: installing and confirming.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct InstallConfig {
    /// Reboot by itself after an installation (otherwise the user or host reboots).
    pub auto_reboot: bool,
    /// Command that reboots the device (argv).
    pub reboot_command: Vec<String>,
    /// Commands (argv) that must all succeed after booting a new slot, or it is rolled back.
    pub health_checks: Vec<Vec<String>>,
    /// Limit for each health check.
    pub health_check_timeout: Dur,
    /// File whose content changes with every boot.
    pub boot_id_file: PathBuf,
    /// Daily local-time window (`"HH:MM-HH:MM"`) for automatic reboots; outside it an
    /// automatic reboot waits for the next opening. Unset: any time.
    pub maintenance_window: Option<String>,
    /// Longest `Postpone` a user may ask for.
    pub max_postpone: Dur,
    /// Longest `Postpone` while the waiting update fixes a critical vulnerability.
    pub max_postpone_critical: Dur,
    /// How long an installed update may wait for a reboot (`reboot-required`); then the
    /// device reboots in the next maintenance window even without `auto_reboot` or consent.
    pub reboot_deadline: Dur,
    /// Limit for each call to RAUC, and the fixed part of an installation's limit.
    pub rauc_timeout: Dur,
    /// Added to an installation's limit (and to the bundle check's) per GiB of bundle.
    pub install_time_per_gib: Dur,
}

impl Default for DownloadConfig {
    fn default() -> Self {
        DownloadConfig {
            cache_dir: PathBuf::from("/var/cache/ssu-agent"),
            ca_file: None,
            connect_timeout: Dur(SignedDuration::from_secs(15)),
            read_timeout: Dur(SignedDuration::from_secs(60)),
            max_attempts: 8,
        }
    }
}

impl Default for InstallConfig {
    fn default() -> Self {
        InstallConfig {
            auto_reboot: false,
            reboot_command: vec!["systemctl".into(), "reboot".into()],
            health_checks: Vec::new(),
            health_check_timeout: Dur(SignedDuration::from_mins(2)),
            boot_id_file: PathBuf::from("/proc/sys/kernel/random/boot_id"),
            maintenance_window: None,
            max_postpone: Dur(SignedDuration::from_hours(7 * 24)),
            max_postpone_critical: Dur(SignedDuration::from_hours(24)),
            reboot_deadline: Dur(SignedDuration::from_hours(7 * 24)),
            rauc_timeout: Dur(SignedDuration::from_mins(5)),
            install_time_per_gib: Dur(SignedDuration::from_mins(20)),
        }
    }
}

/// `[agent]`: the daemon itself.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AgentConfig {
    /// SQLite store and metadata cache. Must be absolute.
    pub state_dir: PathBuf,
    /// Default log filter when `RUST_LOG` is not set.
    pub log_level: LogLevel,
}

/// `[device]`: what this device is and what its factory image contains.
///
/// `version` and `security_patch_level` describe the image as built (an image recipe writes
/// them into a drop-in); once the agent has applied an update, the store's record wins.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct DeviceConfig {
    /// Marketing model name, shown to users (ETSI 5.3-16).
    pub model: String,
    /// Hardware id used to pick targets and support periods from signed metadata.
    pub hardware_id: String,
    /// Version of the factory image.
    pub version: String,
    /// Feature release of the factory image (security updates must be built on it);
    /// defaults to `version`.
    pub feature_release: Option<String>,
    /// Security patch level of the factory image (YYYY-MM-DD).
    pub security_patch_level: Option<PatchDate>,
    /// End of the security support period, used only when signed metadata gives none.
    pub support_end: Option<PatchDate>,
    /// How long before the support end `SupportState` says `ending-soon` (default 90d).
    pub support_warning: Option<Dur>,
    /// Replacement plan after the support end (fallback for signed metadata).
    pub replacement_text: Option<String>,
    /// Where the replacement plan is explained (fallback for signed metadata).
    pub replacement_url: Option<url::Url>,
    /// The device identity key signing patch-status reports, as the integrator provisioned
    /// it (Ed25519, PKCS#8 DER, mode 0600); unset: a key generated into `state_dir`.
    pub identity_key: Option<PathBuf>,
}

impl DeviceConfig {
    /// The factory image's feature release (`feature_release`, or `version` when unset).
    pub fn feature_release(&self) -> &str {
        self.feature_release.as_deref().unwrap_or(&self.version)
    }
}

/// `[check]`: when the agent looks for updates (SEC-0020, ETSI 5.3-5).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct CheckConfig {
    /// Delay after start before the first check, so boot-time work settles first.
    pub boot_delay: Dur,
    /// Time between periodic checks.
    pub interval: Dur,
    /// Each periodic check moves by a random amount up to this, so a fleet does not hit the
    /// servers in the same second.
    pub jitter: Dur,
    /// A patch level older than this is reported as `overdue`.
    pub overdue_after: Dur,
    /// Updates fixing a CVE at least this severe do not wait for the model's rollout wave
    /// (SEC-0021); unset: every update waits for it.
    pub wave_skip_severity: Option<crate::metadata::schema::Severity>,
    /// The most metadata bytes one check reads from one update server, whatever its signed
    /// metadata declares (a hostile repository must not exhaust memory or a data plan).
    pub max_metadata_bytes: u64,
}

impl Default for AgentConfig {
    fn default() -> Self {
        AgentConfig {
            state_dir: PathBuf::from("/var/lib/ssu-agent"),
            log_level: LogLevel::Info,
        }
    }
}

impl Default for CheckConfig {
    fn default() -> Self {
        CheckConfig {
            boot_delay: Dur(SignedDuration::from_mins(2)),
            interval: Dur(SignedDuration::from_hours(24)),
            jitter: Dur(SignedDuration::from_hours(1)),
            overdue_after: Dur(SignedDuration::from_hours(90 * 24)),
            wave_skip_severity: None,
            max_metadata_bytes: crate::metadata::client::DEFAULT_MAX_METADATA_BYTES,
        }
    }
}

#[allow(clippy::derivable_impls)] // spelled out so the defaults sit in one place with the others
impl Default for Config {
    fn default() -> Self {
        Config {
            agent: AgentConfig::default(),
            device: DeviceConfig::default(),
            check: CheckConfig::default(),
            manufacturer: None,
            download: DownloadConfig::default(),
            install: InstallConfig::default(),
            integrity: IntegrityConfig::default(),
            operators: Vec::new(),
            link_cost: LinkCostConfig::default(),
            authorization: AuthorizationConfig::default(),
            notify: NotifyConfig::default(),
            spread: SpreadConfig::default(),
            report: ReportConfig::default(),
        }
    }
}

/// Log verbosity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

impl LogLevel {
    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Error => "error",
            LogLevel::Warn => "warn",
            LogLevel::Info => "info",
            LogLevel::Debug => "debug",
            LogLevel::Trace => "trace",
        }
    }
}

/// A calendar date written as `"YYYY-MM-DD"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct PatchDate(pub Date);

impl<'de> Deserialize<'de> for PatchDate {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        parse_date(&s)
            .map(PatchDate)
            .map_err(serde::de::Error::custom)
    }
}

/// Parses a strict `YYYY-MM-DD` date (no times, no offsets).
pub fn parse_date(s: &str) -> Result<Date, String> {
    let ok_shape = s.len() == 10
        && s.bytes().enumerate().all(|(i, b)| {
            if i == 4 || i == 7 {
                b == b'-'
            } else {
                b.is_ascii_digit()
            }
        });
    if !ok_shape {
        return Err(format!("invalid date {s:?}: expected YYYY-MM-DD"));
    }
    s.parse::<Date>()
        .map_err(|e| format!("invalid date {s:?}: {e}"))
}

/// A positive duration written like `"90s"`, `"5m"`, `"24h"`, `"30d"` or `"1h 30m"`.
/// Days count as 24 hours; months and years are refused because their length varies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(into = "String")]
pub struct Dur(pub SignedDuration);

impl From<Dur> for String {
    fn from(d: Dur) -> String {
        format!("{:#}", d.0)
    }
}

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        parse_duration(&s)
            .map(Dur)
            .map_err(serde::de::Error::custom)
    }
}

/// Parses a duration as [`Dur`] describes.
pub fn parse_duration(s: &str) -> Result<SignedDuration, String> {
    let span: Span = s
        .parse()
        .map_err(|e| format!("invalid duration {s:?}: {e}"))?;
    if span.get_years() != 0 || span.get_months() != 0 {
        return Err(format!(
            "invalid duration {s:?}: months and years vary in length; use days"
        ));
    }
    let d = span
        .to_duration(SpanRelativeTo::days_are_24_hours())
        .map_err(|e| format!("invalid duration {s:?}: {e}"))?;
    if d.is_negative() {
        return Err(format!("invalid duration {s:?}: must not be negative"));
    }
    Ok(d)
}

/// A configuration error: which file, which key, what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{path}: cannot read: {reason}")]
    Read { path: PathBuf, reason: String },
    /// The file is not valid TOML, or a key is unknown or of the wrong type.
    #[error("{}", describe_invalid(path, *line, key, reason))]
    Invalid {
        path: PathBuf,
        /// 1-based line of the offending value, 0 when unknown.
        line: usize,
        /// Dotted key path, e.g. `check.interval`; empty for syntax errors.
        key: String,
        reason: String,
    },
}

/// `FILE:LINE: KEY: REASON`, leaving out a line or key that is not known. Key and reason
/// echo what the file says: shown escaped (a U+2028 or U+0085 in a key must not break the
/// log line it lands in) and cut short (a 5 KB value need not be repeated whole).
fn describe_invalid(path: &Path, line: usize, key: &str, reason: &str) -> String {
    let mut s = path.display().to_string();
    if line > 0 {
        s.push_str(&format!(":{line}"));
    }
    if !key.is_empty() {
        s.push_str(&format!(": {}", shown(key, MAX_SHOWN_KEY)));
    }
    format!("{s}: {}", shown(reason, MAX_SHOWN_REASON))
}

/// Longest key and reason an error message repeats, in characters.
const MAX_SHOWN_KEY: usize = 120;
const MAX_SHOWN_REASON: usize = 400;

/// `text` with control characters, line separators and invisible formatting escaped
/// (`\u{2028}`), cut to `max` characters (saying how much was left out).
fn shown(text: &str, max: usize) -> String {
    let mut out = String::new();
    let total = text.chars().count();
    for c in text.chars().take(max) {
        let hidden = c.is_control()
            || matches!(
                c,
                '\u{200B}'..='\u{200F}'
                    | '\u{2028}'..='\u{202E}'
                    | '\u{2060}'..='\u{206F}'
                    | '\u{FEFF}'
            );
        match c {
            '\n' => out.push_str("\\n"),
            c if hidden => out.extend(c.escape_unicode()),
            c => out.push(c),
        }
    }
    if total > max {
        out.push_str(&format!("… ({} more characters)", total - max));
    }
    out
}

impl ConfigError {
    fn invalid(path: &Path, key: &str, reason: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            path: path.to_owned(),
            line: 0,
            key: key.to_owned(),
            reason: reason.into(),
        }
    }
}

impl fmt::Display for Dur {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#}", self.0)
    }
}

#[cfg(test)]
mod tests;
