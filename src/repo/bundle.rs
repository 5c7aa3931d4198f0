//! A bundle's FS.25 fields: `compatible` and `version` from the bundle itself (`rauc info`),
//! the rest from a descriptor file and command-line flags (flags win).

use std::path::Path;

use jiff::Timestamp;
use jiff::civil::Date;
use serde::{Deserialize, Deserializer};

use super::RepoError;
use crate::config::parse_date;
use crate::metadata::schema::{BundleMeta, Cve, Kind, Severity};

/// What the bundle's own manifest says.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct BundleInfo {
    pub compatible: String,
    pub version: String,
}

/// Runs `rauc info --no-verify --output-format=json BUNDLE`. `--no-verify` because the
/// publisher need not hold the device keyring; the device's RAUC checks the signature.
pub async fn rauc_info(rauc: &Path, bundle: &Path) -> Result<BundleInfo, RepoError> {
    let fail = |reason: String| RepoError::Rauc {
        bundle: bundle.to_owned(),
        reason,
    };
    let out = tokio::process::Command::new(rauc)
        .args(["info", "--no-verify", "--output-format=json"])
        .arg(bundle)
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .map_err(|e| fail(format!("cannot run {}: {e}", rauc.display())))?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let last = stderr
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("");
        return Err(fail(format!("{}: {}", out.status, last.trim())));
    }
    parse_rauc_info(&out.stdout).map_err(fail)
}

/// RAUC 1.8 prints one JSON object: `{"compatible":…,"version":…,"description":…,"images":[…]}`.
fn parse_rauc_info(stdout: &[u8]) -> Result<BundleInfo, String> {
    #[derive(Deserialize)]
    struct Raw {
        compatible: Option<String>,
        version: Option<String>,
    }
    let raw: Raw = serde_json::from_slice(stdout)
        .map_err(|e| format!("unexpected output (not the JSON of RAUC ≥ 1.8): {e}"))?;
    Ok(BundleInfo {
        compatible: raw.compatible.ok_or("the manifest has no compatible")?,
        version: raw
            .version
            .ok_or("the manifest has no version (set [update] version=)")?,
    })
}

/// The publisher-supplied fields of [`BundleMeta`]: the descriptor file's schema (same names,
/// minus `version` and `compatible`, which only the bundle may say), and what the flags give.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BundleFields {
    pub kind: Option<Kind>,
    pub base_version: Option<String>,
    #[serde(default, deserialize_with = "toml_date")]
    pub security_patch_level: Option<Date>,
    pub hardware_ids: Option<Vec<String>>,
    #[serde(default, deserialize_with = "toml_timestamp")]
    pub released: Option<Timestamp>,
    pub cves: Option<Vec<Cve>>,
    pub notes_url: Option<String>,
    pub requires_reboot: Option<bool>,
    pub expected_downtime_s: Option<u32>,
}

impl BundleFields {
    /// Reads a descriptor; `version`/`compatible` get their own error because a publisher who
    /// writes them expects them to count.
    pub fn from_descriptor(path: &Path) -> Result<BundleFields, RepoError> {
        let fail = |reason: String| RepoError::Descriptor {
            path: path.to_owned(),
            reason,
        };
        let text = std::fs::read_to_string(path).map_err(|e| fail(format!("cannot read: {e}")))?;
        let table: toml::Table = toml::from_str(&text).map_err(|e| fail(e.to_string()))?;
        for key in ["version", "compatible"] {
            if table.contains_key(key) {
                return Err(fail(format!(
                    "`{key}` cannot be set here: it is read from the bundle's RAUC manifest"
                )));
            }
        }
        toml::from_str(&text).map_err(|e| fail(e.to_string()))
    }

    /// `self` with every field that `flags` sets replaced (lists are replaced, not merged).
    pub fn overridden_by(self, flags: BundleFields) -> BundleFields {
        BundleFields {
            kind: flags.kind.or(self.kind),
            base_version: flags.base_version.or(self.base_version),
            security_patch_level: flags.security_patch_level.or(self.security_patch_level),
            hardware_ids: flags.hardware_ids.or(self.hardware_ids),
            released: flags.released.or(self.released),
            cves: flags.cves.or(self.cves),
            notes_url: flags.notes_url.or(self.notes_url),
            requires_reboot: flags.requires_reboot.or(self.requires_reboot),
            expected_downtime_s: flags.expected_downtime_s.or(self.expected_downtime_s),
        }
    }

    /// The complete, validated metadata. Defaults: `released` = `now`, `requires_reboot` =
    /// true (an A/B update takes effect on reboot), `base_version` = the bundle's version for a
    /// feature release; `kind`, `security_patch_level` and `expected_downtime_s` must be given.
    pub fn into_meta(self, info: BundleInfo, now: Timestamp) -> Result<BundleMeta, RepoError> {
        let kind = self.kind.ok_or_else(|| missing("kind", "--kind"))?;
        let base_version = match (self.base_version, kind) {
            (Some(b), _) => b,
            (None, Kind::Feature) => info.version.clone(),
            (None, _) => return Err(missing("base_version", "--base-version")),
        };
        let meta = BundleMeta {
            kind,
            base_version,
            security_patch_level: self
                .security_patch_level
                .ok_or_else(|| missing("security_patch_level", "--security-patch-level"))?,
            hardware_ids: self.hardware_ids.unwrap_or_default(),
            released: self.released.unwrap_or(now),
            cves: self.cves.unwrap_or_default(),
            notes_url: self.notes_url,
            requires_reboot: self.requires_reboot.unwrap_or(true),
            expected_downtime_s: self
                .expected_downtime_s
                .ok_or_else(|| missing("expected_downtime_s", "--downtime"))?,
            version: info.version,
            compatible: info.compatible,
        };
        meta.validate()
            .map_err(RepoError::invalid(meta.target_name()))?;
        Ok(meta)
    }
}

fn missing(field: &str, flag: &str) -> RepoError {
    RepoError::bad_arg(
        field,
        format!("required: set it in the descriptor or with {flag}"),
    )
}

/// `--cve ID:SEVERITY[:CVSS]:SUMMARY`, e.g. `CVE-2026-1234:high:8.1:RCE in the web UI`. The
/// summary may contain `:`; ids that contain `:` need a descriptor.
pub fn parse_cve_flag(s: &str) -> Result<Cve, String> {
    let usage = || format!("{s:?}: expected ID:SEVERITY[:CVSS]:SUMMARY");
    let (id, rest) = s.split_once(':').ok_or_else(usage)?;
    let (severity, rest) = rest.split_once(':').ok_or_else(usage)?;
    let severity: Severity = serde_json::from_value(serde_json::Value::String(severity.into()))
        .map_err(|_| {
            format!("{severity:?}: severity must be none, low, medium, high or critical")
        })?;
    let (cvss, summary) = match rest.split_once(':') {
        Some((score, summary)) => match score.trim().parse::<f64>() {
            Ok(v) => (Some(v), summary),
            Err(_) => (None, rest),
        },
        None => (None, rest),
    };
    Ok(Cve {
        id: id.trim().to_owned(),
        severity,
        cvss,
        summary: summary.trim().to_owned(),
    })
}

/// A TOML date (`2026-11-01`) or the same as a string.
fn toml_date<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Date>, D::Error> {
    let text = toml_scalar(d)?;
    parse_date(&text)
        .map(Some)
        .map_err(serde::de::Error::custom)
}

/// A TOML offset date-time (`2026-11-05T10:00:00Z`) or the same as an RFC 3339 string.
fn toml_timestamp<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Timestamp>, D::Error> {
    let text = toml_scalar(d)?;
    text.parse::<Timestamp>()
        .map(Some)
        .map_err(|e| serde::de::Error::custom(format!("invalid time {text:?}: {e}")))
}

fn toml_scalar<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    match toml::Value::deserialize(d)? {
        toml::Value::String(s) => Ok(s),
        toml::Value::Datetime(dt) => Ok(dt.to_string()),
        other => Err(serde::de::Error::custom(format!(
            "expected a date or a string, found {}",
            other.type_str()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rauc_18_json_parses() {
        let out = br#"{"compatible":"ssu-sandbox","version":"1.0.1","description":null,"build":null,"hooks":[],"images":[{"rootfs":{"variant":null,"filename":"rootfs.img","checksum":"3e00","size":65536,"hooks":[],"adaptive":[]}}]}"#;
        let info = parse_rauc_info(out).unwrap();
        assert_eq!(info.compatible, "ssu-sandbox");
        assert_eq!(info.version, "1.0.1");
        assert!(parse_rauc_info(br#"{"compatible":"x"}"#).is_err());
        assert!(parse_rauc_info(b"Compatible: x").is_err());
    }

    #[test]
    fn cve_flags_parse_with_and_without_score() {
        let c = parse_cve_flag("CVE-2026-1:high:8.1:RCE: in the web UI").unwrap();
        assert_eq!(
            (c.id.as_str(), c.severity, c.cvss),
            ("CVE-2026-1", Severity::High, Some(8.1))
        );
        assert_eq!(c.summary, "RCE: in the web UI");
        let c = parse_cve_flag("CVE-2026-2:low:Info leak: minor").unwrap();
        assert_eq!((c.cvss, c.summary.as_str()), (None, "Info leak: minor"));
        assert!(parse_cve_flag("CVE-2026-3:urgent:x").is_err());
        assert!(parse_cve_flag("CVE-2026-3").is_err());
    }

    fn fields(toml_text: &str) -> Result<BundleFields, String> {
        toml::from_str(toml_text).map_err(|e| e.to_string())
    }

    #[test]
    fn descriptor_accepts_native_toml_dates_and_strings() {
        let a =
            fields("security_patch_level = 2026-11-01\nreleased = 2026-11-05T10:00:00Z").unwrap();
        let b =
            fields("security_patch_level = \"2026-11-01\"\nreleased = \"2026-11-05T10:00:00Z\"")
                .unwrap();
        assert_eq!(a, b);
        assert_eq!(a.security_patch_level, Some(jiff::civil::date(2026, 11, 1)));
        assert!(fields("security_patch_level = 2026-11-31").is_err());
        assert!(fields("security_patch_level = \"1 Nov 2026\"").is_err());
        assert!(
            fields("released = 2026-11-05T10:00:00").is_err(),
            "no offset"
        );
        assert!(fields("reboot = true").is_err(), "unknown key");
    }

    #[test]
    fn flags_override_the_descriptor_and_defaults_fill_in() {
        let desc = fields(
            "kind = \"maintenance\"\nbase_version = \"1.0\"\nsecurity_patch_level = 2026-10-01\n\
             expected_downtime_s = 60\nhardware_ids = [\"a\", \"b\"]",
        )
        .unwrap();
        let flags = BundleFields {
            security_patch_level: Some(jiff::civil::date(2026, 11, 1)),
            hardware_ids: Some(vec!["c".into()]),
            ..BundleFields::default()
        };
        let info = BundleInfo {
            compatible: "ssu-sandbox".into(),
            version: "1.0.1".into(),
        };
        let now: Timestamp = "2026-11-05T10:00:00Z".parse().unwrap();
        let m = desc
            .overridden_by(flags)
            .into_meta(info.clone(), now)
            .unwrap();
        assert_eq!(m.security_patch_level, jiff::civil::date(2026, 11, 1));
        assert_eq!(m.hardware_ids, vec!["c".to_string()]);
        assert_eq!((m.released, m.requires_reboot), (now, true));
        assert_eq!(m.target_name(), "bundles/ssu-sandbox/1.0.1.raucb");

        let feature = BundleFields {
            kind: Some(Kind::Feature),
            security_patch_level: Some(jiff::civil::date(2026, 11, 1)),
            expected_downtime_s: Some(0),
            ..BundleFields::default()
        };
        assert_eq!(
            feature.into_meta(info.clone(), now).unwrap().base_version,
            "1.0.1"
        );
        let security = BundleFields {
            kind: Some(Kind::Security),
            base_version: Some("1.0".into()),
            security_patch_level: Some(jiff::civil::date(2026, 11, 1)),
            expected_downtime_s: Some(0),
            ..BundleFields::default()
        };
        let err = security.into_meta(info, now).unwrap_err().to_string();
        assert!(err.contains("at least one CVE"), "{err}");
    }
}
