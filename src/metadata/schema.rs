//! The FS.25 fields ssu-agent reads from TUF targets' `custom` (the format `ssu-repo` writes).
//!
//! Two kinds of target carry them, under the key [`CUSTOM_KEY`] (`"ssu"`):
//! - a RAUC bundle, named `bundles/<compatible>/<version>.raucb`, with [`BundleMeta`];
//! - a per-model record, named `devices/<hardware-id>.json`, with [`DeviceMeta`] (the file's
//!   content is the same JSON, so a person or the bulletin can fetch it too).
//!
//! Everything here arrives from the network, already signature-checked by TUF but still
//! written by a publisher that may err: parsing is strict (unknown fields are errors, every
//! string is bounded and free of control characters, URLs must be https) so that nothing
//! unexpected ever reaches a user's screen. [`BundleMeta::validate`] is the one gate; both
//! the agent and `ssu-repo` call it, so the publisher cannot write what the device refuses.

use jiff::Timestamp;
use jiff::civil::Date;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Key under a target's `custom` that holds our fields.
pub const CUSTOM_KEY: &str = "ssu";
/// Prefix of bundle target names.
pub const BUNDLE_PREFIX: &str = "bundles/";
/// Prefix of per-model target names.
pub const DEVICE_PREFIX: &str = "devices/";

/// Longest version / compatible / hardware id string accepted.
pub const MAX_SHORT: usize = 128;
/// Longest one-line CVE summary accepted.
pub const MAX_SUMMARY: usize = 300;
/// Longest free text (replacement plan) accepted.
pub const MAX_TEXT: usize = 2000;
/// Most CVEs one bundle may list.
pub const MAX_CVES: usize = 500;
/// Most hardware ids one bundle may list.
pub const MAX_HARDWARE_IDS: usize = 1000;

/// What a release is for (FS.25 SEC-0010).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// Fixes vulnerabilities only; must list CVEs and the feature release it patches.
    Security,
    /// Changes features (a new feature release).
    Feature,
    /// Bug fixes without security content.
    Maintenance,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Security => "security",
            Kind::Feature => "feature",
            Kind::Maintenance => "maintenance",
        }
    }
}

/// CVSS-style severity of one vulnerability.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    None,
    Low,
    Medium,
    High,
    Critical,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::None => "none",
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }
}

/// One vulnerability a release fixes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cve {
    /// `CVE-YYYY-NNNN…` or a vendor advisory id (letters, digits, `-`, `_`, `.`, `:`).
    pub id: String,
    pub severity: Severity,
    /// CVSS base score 0.0–10.0, when known. Written as a string (`"8.1"`): TUF signs
    /// canonical JSON, which has no floating-point numbers.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "cvss_string")]
    pub cvss: Option<f64>,
    /// One line, shown to users.
    pub summary: String,
}

/// `custom.ssu` of a bundle target.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BundleMeta {
    pub kind: Kind,
    /// The bundle's version (from its RAUC manifest).
    pub version: String,
    /// The feature release this bundle is built on. A security bundle is accepted only when
    /// it equals the device's installed feature release (SEC-0010).
    pub base_version: String,
    /// Android-style security patch level the device has after installing this bundle.
    #[serde(with = "date_string")]
    pub security_patch_level: Date,
    /// RAUC compatible string (from the bundle's manifest).
    pub compatible: String,
    /// Hardware ids this bundle is for; empty means every device with `compatible`.
    #[serde(default)]
    pub hardware_ids: Vec<String>,
    /// When the manufacturer released it (starts the operator's approval grace, TES-0010).
    pub released: Timestamp,
    #[serde(default)]
    pub cves: Vec<Cve>,
    /// Release notes for people (https only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notes_url: Option<String>,
    pub requires_reboot: bool,
    /// Expected downtime of the device while applying, in seconds.
    pub expected_downtime_s: u32,
}

/// The replacement plan published for a model (SEC-0040).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Replacement {
    pub text: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
}

/// `custom.ssu` (and content) of a `devices/<hardware-id>.json` target.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceMeta {
    pub hardware_id: String,
    /// Model designation for people.
    #[serde(default)]
    pub model: String,
    #[serde(with = "date_string")]
    pub launch_date: Date,
    /// End of the security support period (at least 36 months after launch, SEC-0030).
    #[serde(with = "date_string")]
    pub support_end: Date,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replacement: Option<Replacement>,
    /// Devices of this model download nothing before this time (SEC-0021 waves).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wave_start: Option<Timestamp>,
}

/// Why metadata was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct SchemaError {
    /// Dotted field path, e.g. `cves[2].summary`.
    pub field: String,
    pub reason: String,
}

fn bad(field: impl Into<String>, reason: impl Into<String>) -> SchemaError {
    SchemaError {
        field: field.into(),
        reason: reason.into(),
    }
}

/// A bounded, single-line, printable string.
fn check_line(field: &str, s: &str, max: usize, allow_empty: bool) -> Result<(), SchemaError> {
    if s.is_empty() && !allow_empty {
        return Err(bad(field, "must not be empty"));
    }
    if s.len() > max {
        return Err(bad(field, format!("longer than {max} bytes")));
    }
    if s.chars().any(crate::text::is_unsafe_char) {
        return Err(bad(
            field,
            "contains control, line-separator or bidirectional-override characters",
        ));
    }
    Ok(())
}

/// Version, compatible and hardware-id strings: no spaces, no path tricks.
fn check_token(field: &str, s: &str) -> Result<(), SchemaError> {
    check_line(field, s, MAX_SHORT, false)?;
    let ok = s
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"._-+~".contains(&b))
        && !s.starts_with('.');
    if ok {
        Ok(())
    } else {
        Err(bad(
            field,
            "may contain only letters, digits and . _ - + ~ (not starting with '.')",
        ))
    }
}

fn check_url(field: &str, s: &str) -> Result<(), SchemaError> {
    check_line(field, s, MAX_SHORT * 4, false)?;
    match url::Url::parse(s) {
        Ok(u) if u.scheme() == "https" && u.host().is_some() => Ok(()),
        Ok(_) => Err(bad(field, "must be an https:// URL")),
        Err(e) => Err(bad(field, format!("invalid URL: {e}"))),
    }
}

impl Cve {
    fn validate(&self, field: &str) -> Result<(), SchemaError> {
        check_line(&format!("{field}.id"), &self.id, 64, false)?;
        if !self
            .id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
        {
            return Err(bad(format!("{field}.id"), "not a CVE or advisory id"));
        }
        if let Some(score) = self.cvss
            && !(0.0..=10.0).contains(&score)
        {
            return Err(bad(format!("{field}.cvss"), "must be between 0.0 and 10.0"));
        }
        check_line(
            &format!("{field}.summary"),
            &self.summary,
            MAX_SUMMARY,
            false,
        )
    }
}

impl BundleMeta {
    /// Parses and validates `custom.ssu` of a bundle target.
    pub fn from_custom(value: &serde_json::Value) -> Result<BundleMeta, SchemaError> {
        let meta: BundleMeta =
            serde_json::from_value(value.clone()).map_err(|e| bad(CUSTOM_KEY, e.to_string()))?;
        meta.validate()?;
        Ok(meta)
    }

    /// The rules every published bundle follows.
    pub fn validate(&self) -> Result<(), SchemaError> {
        check_token("version", &self.version)?;
        check_token("base_version", &self.base_version)?;
        check_token("compatible", &self.compatible)?;
        if self.hardware_ids.len() > MAX_HARDWARE_IDS {
            return Err(bad("hardware_ids", "too many entries"));
        }
        for (i, h) in self.hardware_ids.iter().enumerate() {
            check_token(&format!("hardware_ids[{i}]"), h)?;
        }
        if self.cves.len() > MAX_CVES {
            return Err(bad("cves", "too many entries"));
        }
        for (i, c) in self.cves.iter().enumerate() {
            c.validate(&format!("cves[{i}]"))?;
        }
        if self.kind == Kind::Security && self.cves.is_empty() {
            return Err(bad(
                "cves",
                "a security update must list at least one CVE or advisory (SEC-0010)",
            ));
        }
        if let Some(u) = &self.notes_url {
            check_url("notes_url", u)?;
        }
        Ok(())
    }

    /// The highest severity among the CVEs, if any.
    pub fn max_severity(&self) -> Option<Severity> {
        self.cves.iter().map(|c| c.severity).max()
    }

    /// The conventional target name for this bundle.
    pub fn target_name(&self) -> String {
        format!("{BUNDLE_PREFIX}{}/{}.raucb", self.compatible, self.version)
    }
}

impl DeviceMeta {
    /// Parses and validates `custom.ssu` of a per-model target.
    pub fn from_custom(value: &serde_json::Value) -> Result<DeviceMeta, SchemaError> {
        let meta: DeviceMeta =
            serde_json::from_value(value.clone()).map_err(|e| bad(CUSTOM_KEY, e.to_string()))?;
        meta.validate()?;
        Ok(meta)
    }

    pub fn validate(&self) -> Result<(), SchemaError> {
        check_token("hardware_id", &self.hardware_id)?;
        check_line("model", &self.model, MAX_SHORT, true)?;
        if let Some(r) = &self.replacement {
            check_line("replacement.text", &r.text, MAX_TEXT, false)?;
            if let Some(u) = &r.url {
                check_url("replacement.url", u)?;
            }
        }
        let earliest_end = self
            .launch_date
            .checked_add(jiff::Span::new().months(36))
            .map_err(|e| bad("launch_date", e.to_string()))?;
        if self.support_end < earliest_end {
            return Err(bad(
                "support_end",
                format!(
                    "{} is earlier than launch + 36 months ({earliest_end}) (SEC-0030)",
                    self.support_end
                ),
            ));
        }
        Ok(())
    }

    /// The conventional target name for this record.
    pub fn target_name(&self) -> String {
        format!("{DEVICE_PREFIX}{}.json", self.hardware_id)
    }
}

/// CVSS scores as decimal strings (canonical JSON forbids floats); a JSON number is accepted
/// on input too.
mod cvss_string {
    use super::*;

    pub fn serialize<S: Serializer>(v: &Option<f64>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(score) => s.collect_str(score),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Score {
            Text(String),
            Number(f64),
        }
        match Option::<Score>::deserialize(d)? {
            None => Ok(None),
            Some(Score::Number(n)) => Ok(Some(n)),
            Some(Score::Text(t)) => t
                .parse()
                .map(Some)
                .map_err(|_| serde::de::Error::custom(format!("invalid CVSS score {t:?}"))),
        }
    }
}

/// A valid security bundle for `ssu-sandbox`, for unit tests of the code that consumes
/// metadata.
#[cfg(test)]
pub fn sample_security_bundle(version: &str, base: &str, level: Date) -> BundleMeta {
    BundleMeta {
        kind: Kind::Security,
        version: version.into(),
        base_version: base.into(),
        security_patch_level: level,
        compatible: "ssu-sandbox".into(),
        hardware_ids: vec![],
        released: "2026-11-20T00:00:00Z".parse().unwrap(),
        cves: vec![Cve {
            id: "CVE-2026-4242".into(),
            severity: Severity::Critical,
            cvss: Some(9.8),
            summary: "Remote code execution".into(),
        }],
        notes_url: None,
        requires_reboot: true,
        expected_downtime_s: 60,
    }
}

/// Dates as `"YYYY-MM-DD"` strings, strictly.
mod date_string {
    use super::*;

    pub fn serialize<S: Serializer>(d: &Date, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(d)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Date, D::Error> {
        let s = String::deserialize(d)?;
        crate::config::parse_date(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn bundle() -> serde_json::Value {
        json!({
            "kind": "security",
            "version": "1.0.1",
            "base_version": "1.0",
            "security_patch_level": "2026-11-01",
            "compatible": "ssu-sandbox",
            "hardware_ids": ["sandbox-gw-1"],
            "released": "2026-11-05T10:00:00Z",
            "cves": [{"id": "CVE-2026-1234", "severity": "high", "cvss": 8.1,
                      "summary": "Remote code execution in the web UI"}],
            "notes_url": "https://example.com/notes/1.0.1",
            "requires_reboot": true,
            "expected_downtime_s": 90
        })
    }

    #[test]
    fn a_good_bundle_parses_and_round_trips() {
        let m = BundleMeta::from_custom(&bundle()).unwrap();
        assert_eq!(m.kind, Kind::Security);
        assert_eq!(m.security_patch_level, jiff::civil::date(2026, 11, 1));
        assert_eq!(m.max_severity(), Some(Severity::High));
        assert_eq!(m.target_name(), "bundles/ssu-sandbox/1.0.1.raucb");
        let back = serde_json::to_value(&m).unwrap();
        assert_eq!(
            back["cves"][0]["cvss"], "8.1",
            "canonical JSON has no floats"
        );
        assert_eq!(BundleMeta::from_custom(&back).unwrap(), m);
    }

    #[test]
    fn hostile_or_malformed_bundles_are_refused_with_the_field() {
        let cases: Vec<(&str, serde_json::Value, &str)> = vec![
            ("unknown field", json!({"evil": 1}), "unknown field"),
            ("wrong kind", json!({"kind": "urgent"}), "unknown variant"),
            (
                "bad date",
                json!({"security_patch_level": "2026-13-01"}),
                "invalid date",
            ),
            ("bad time", json!({"released": "yesterday"}), "ssu"),
            (
                "path in version",
                json!({"version": "../../etc/passwd"}),
                "version",
            ),
            (
                "newline in summary",
                json!({"cves": [{"id": "CVE-1", "severity": "low",
                "summary": "fine\n\u{1b}[31mnot fine"}]}),
                "control",
            ),
            (
                // Found by `proptests::bundle_metadata_is_validated`.
                "right-to-left override in summary",
                json!({"cves": [{"id": "CVE-1", "severity": "low",
                "summary": "a\u{202e}b"}]}),
                "bidirectional",
            ),
            (
                "line separator in summary",
                json!({"cves": [{"id": "CVE-1", "severity": "low",
                "summary": "a\u{2028}b"}]}),
                "line-separator",
            ),
            (
                "huge summary",
                json!({"cves": [{"id": "CVE-1", "severity": "low",
                "summary": "x".repeat(400)}]}),
                "longer than",
            ),
            (
                "cvss out of range",
                json!({"cves": [{"id": "CVE-1", "severity": "low",
                "cvss": 11.0, "summary": "s"}]}),
                "between",
            ),
            (
                "security without CVEs",
                json!({"cves": []}),
                "at least one CVE",
            ),
            (
                "http notes",
                json!({"notes_url": "http://example.com"}),
                "https",
            ),
            (
                "javascript notes",
                json!({"notes_url": "javascript:alert(1)"}),
                "https",
            ),
            (
                "negative downtime",
                json!({"expected_downtime_s": -1}),
                "ssu",
            ),
            ("empty compatible", json!({"compatible": ""}), "compatible"),
        ];
        for (what, patch, want) in cases {
            let mut v = bundle();
            for (k, val) in patch.as_object().unwrap() {
                v[k] = val.clone();
            }
            let err = BundleMeta::from_custom(&v).expect_err(what).to_string();
            assert!(err.contains(want), "{what}: {err}");
        }
        assert!(BundleMeta::from_custom(&json!("a string")).is_err());
        assert!(BundleMeta::from_custom(&json!(null)).is_err());
    }

    #[test]
    fn maintenance_bundles_need_no_cves() {
        let mut v = bundle();
        v["kind"] = json!("maintenance");
        v["cves"] = json!([]);
        assert!(BundleMeta::from_custom(&v).is_ok());
    }

    #[test]
    fn device_support_must_last_36_months() {
        let good = json!({"hardware_id": "gw-1", "model": "Gateway", "launch_date": "2026-01-15",
            "support_end": "2029-01-15",
            "replacement": {"text": "Replace with Gateway 2", "url": "https://example.com/gw2"},
            "wave_start": "2026-11-01T00:00:00Z"});
        let d = DeviceMeta::from_custom(&good).unwrap();
        assert_eq!(d.target_name(), "devices/gw-1.json");
        let mut short = good.clone();
        short["support_end"] = json!("2029-01-14");
        let err = DeviceMeta::from_custom(&short).unwrap_err();
        assert_eq!(err.field, "support_end");
        let mut bad_url = good;
        bad_url["replacement"]["url"] = json!("ftp://x");
        assert!(DeviceMeta::from_custom(&bad_url).is_err());
    }
}
