//! `[[operator]]` profiles and `[link_cost]`: what makes the agent cellular-aware (FS.25
//! TES-0010/0020/0030, SEC-0020's note on constrained links).
//!
//! Single values are checked while they are read, so an error names the file and line
//! (`approval_grace` above 7 days, a malformed MCC-MNC); checks across profiles (duplicate
//! names, one MCC-MNC claimed by two profiles) run in [`validate`] once every file is merged.

use std::collections::BTreeMap;
use std::path::PathBuf;

use jiff::SignedDuration;
use serde::{Deserialize, Deserializer, Serialize};

use super::{Dur, parse_duration};
use crate::metadata::schema::Severity;

/// TES-0010: an operator may hold a security update back for approval at most this long.
pub const MAX_APPROVAL_GRACE: SignedDuration = SignedDuration::from_hours(7 * 24);

/// Default `[link_cost] max_deferral`: a week, so that with the postponement and reboot bounds
/// every monthly security update (SEC-0020) is active before the next one is published
/// (docs/configuration.md, "Timeliness").
pub const DEFAULT_MAX_DEFERRAL: SignedDuration = SignedDuration::from_hours(7 * 24);

/// Longest ICCID prefix a profile may name: "89", country code and issuer — the issuer
/// identification number. Longer prefixes would start naming individual SIMs, and the modem
/// adapter carries no more than these digits of the ICCID.
pub const MAX_ICCID_PREFIX: usize = 7;

/// One mobile operator's update channel (`[[operator]]`).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct OperatorProfile {
    /// Stable identity of the subscription (persisted, shown on D-Bus): letters, digits, '.',
    /// '_' and '-'.
    pub name: String,
    /// Home networks of this operator's SIMs (`MCC-MNC` as the SIM's `OperatorIdentifier`
    /// gives it: 5 or 6 digits, no separator). Several entries = one subscription (multi-IMSI).
    #[serde(deserialize_with = "mcc_mnc_list")]
    pub mcc_mnc: Vec<String>,
    /// Optional ICCID prefixes (issuer digits, 2–7) narrowing the match, e.g. an MVNO sharing
    /// its host's MCC-MNC. Empty: every SIM of the listed MCC-MNCs.
    #[serde(default, deserialize_with = "iccid_prefix_list")]
    pub iccid_prefixes: Vec<String>,
    /// The operator's TUF repository as `ssu-repo` publishes it (its approvals).
    pub url: url::Url,
    /// That repository's shipped root of trust.
    pub root: PathBuf,
    /// How long a security update waits for this operator's approval after the
    /// manufacturer released it (at most 7 days, TES-0010).
    #[serde(default = "default_grace", deserialize_with = "grace")]
    pub approval_grace: Dur,
    /// When the operator's server has been unusable (unreachable, invalid or expired
    /// metadata, missing bundle) this long, the manufacturer's server is used (TES-0020).
    #[serde(default = "default_fallback_after")]
    pub fallback_after: Dur,
}

fn default_grace() -> Dur {
    Dur(MAX_APPROVAL_GRACE)
}

fn default_fallback_after() -> Dur {
    Dur(SignedDuration::from_hours(24))
}

fn grace<'de, D: Deserializer<'de>>(d: D) -> Result<Dur, D::Error> {
    let s = String::deserialize(d)?;
    let v = parse_duration(&s).map_err(serde::de::Error::custom)?;
    if v > MAX_APPROVAL_GRACE {
        return Err(serde::de::Error::custom(format!(
            "{s:?} is longer than 7d: FS.25 TES-0010 lets an operator hold a security update \
             back for at most 7 days"
        )));
    }
    Ok(Dur(v))
}

fn digits(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

fn mcc_mnc_list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    let list = Vec::<String>::deserialize(d)?;
    if list.is_empty() {
        return Err(serde::de::Error::custom("must list at least one MCC-MNC"));
    }
    for m in &list {
        if !(digits(m) && (5..=6).contains(&m.len())) {
            return Err(serde::de::Error::custom(format!(
                "invalid MCC-MNC {m:?}: expected 5 or 6 digits (MCC then MNC, no separator)"
            )));
        }
    }
    Ok(list)
}

fn iccid_prefix_list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    let list = Vec::<String>::deserialize(d)?;
    for p in &list {
        if !(digits(p) && (2..=MAX_ICCID_PREFIX).contains(&p.len()) && p.starts_with("89")) {
            return Err(serde::de::Error::custom(format!(
                "invalid ICCID prefix {p:?}: expected 2 to {MAX_ICCID_PREFIX} digits starting \
                 with 89 (the issuer, never a whole ICCID)"
            )));
        }
    }
    Ok(list)
}

/// `[link_cost]`: what a metered or roaming link defers (SEC-0020's note on constrained links).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LinkCostConfig {
    /// Defer downloads below `override_severity` while NetworkManager says the link is metered
    /// (`yes` or `guess-yes`).
    pub defer_when_metered: bool,
    /// Defer downloads below `override_severity` while the modem is roaming.
    pub defer_when_roaming: bool,
    /// An update fixing a CVE at least this severe downloads on any link, whatever the budget.
    pub override_severity: Severity,
    /// Bytes a month the agent may download over a metered or roaming link for updates below
    /// `override_severity`; unset: no budget.
    pub monthly_budget_bytes: Option<u64>,
    /// Longest a security update waits for a cheaper link (counted from the first time a
    /// download was deferred for link cost); then it downloads over the costly link anyway,
    /// within the budget (SEC-0020 "timely", ETSI 5.3-8).
    pub max_deferral: Dur,
}

impl Default for LinkCostConfig {
    fn default() -> Self {
        LinkCostConfig {
            defer_when_metered: true,
            defer_when_roaming: true,
            override_severity: Severity::Critical,
            monthly_budget_bytes: None,
            max_deferral: Dur(DEFAULT_MAX_DEFERRAL),
        }
    }
}

/// Checks across profiles; returns the offending key and the reason.
pub(super) fn validate(profiles: &[OperatorProfile]) -> Result<(), (String, String)> {
    let mut names = BTreeMap::new();
    let mut networks: BTreeMap<(&str, &str), &str> = BTreeMap::new();
    for (i, p) in profiles.iter().enumerate() {
        let key = |k: &str| format!("operator[{i}].{k}");
        let name_ok = !p.name.is_empty()
            && p.name.len() <= 64
            && p.name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
        // "none" and "unknown" are the states a subscription reports without a profile.
        if !name_ok || matches!(p.name.as_str(), "none" | "unknown" | "manufacturer") {
            return Err((
                key("name"),
                format!(
                    "{:?}: 1 to 64 letters, digits, '.', '_' or '-', and not none, unknown or \
                     manufacturer",
                    p.name
                ),
            ));
        }
        if let Some(first) = names.insert(p.name.as_str(), i) {
            return Err((
                key("name"),
                format!("{:?} is already the name of operator[{first}]", p.name),
            ));
        }
        if !matches!(p.url.scheme(), "https" | "http" | "file") {
            return Err((
                key("url"),
                format!(
                    "unsupported scheme {:?} (https, http or file)",
                    p.url.scheme()
                ),
            ));
        }
        if !p.root.is_absolute() {
            return Err((key("root"), "must be an absolute path".to_owned()));
        }
        if p.fallback_after.0 < SignedDuration::from_secs(1) {
            return Err((key("fallback_after"), "must be at least 1s".to_owned()));
        }
        // Two profiles may share a network only when ICCID prefixes tell them apart; a SIM
        // that matched both would make the subscription depend on the order of the file.
        let prefixes: Vec<&str> = if p.iccid_prefixes.is_empty() {
            vec![""]
        } else {
            p.iccid_prefixes.iter().map(String::as_str).collect()
        };
        for m in &p.mcc_mnc {
            for pre in &prefixes {
                for ((other_m, other_pre), other) in &networks {
                    let overlap =
                        other_m == m && (other_pre.starts_with(pre) || pre.starts_with(other_pre));
                    if overlap && *other != p.name {
                        return Err((
                            key("mcc_mnc"),
                            format!(
                                "{m} is also claimed by operator {other:?} with overlapping \
                                 ICCID prefixes: a SIM would match both"
                            ),
                        ));
                    }
                }
            }
            for pre in &prefixes {
                networks.insert((m.as_str(), pre), p.name.as_str());
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use super::super::{ConfigError, from_sources};
    use super::*;

    const FILE: &str = "/etc/ssu-agent/agent.toml";

    fn one(text: &str) -> Result<super::super::Config, ConfigError> {
        from_sources(&[(PathBuf::from(FILE), text.to_owned())])
    }

    fn profile(name: &str, mcc_mnc: &str, extra: &str) -> String {
        format!(
            "[[operator]]\nname = \"{name}\"\nmcc_mnc = [{mcc_mnc}]\n\
             url = \"https://ops.example.com/{name}/\"\nroot = \"/etc/ssu/{name}.json\"\n{extra}\n"
        )
    }

    /// (line, key, reason) of an Invalid error, panicking on anything else.
    fn invalid(text: &str) -> (usize, String, String) {
        match one(text) {
            Err(ConfigError::Invalid {
                path,
                line,
                key,
                reason,
            }) => {
                assert_eq!(path, Path::new(FILE));
                (line, key, reason)
            }
            other => panic!("expected Invalid for {text}, got {other:?}"),
        }
    }

    #[test]
    fn a_profile_parses_with_documented_defaults() {
        let c = one(&profile("telenet", "\"26201\", \"262010\"", "")).unwrap();
        let p = &c.operators[0];
        assert_eq!(p.mcc_mnc, ["26201", "262010"]);
        assert!(p.iccid_prefixes.is_empty());
        assert_eq!(p.approval_grace.0, MAX_APPROVAL_GRACE);
        assert_eq!(p.fallback_after.0, SignedDuration::from_hours(24));
        assert_eq!(c.link_cost, LinkCostConfig::default());
        let c = one(&profile(
            "mvno",
            "\"26201\"",
            "iccid_prefixes = [\"894902\"]\napproval_grace = \"2d\"\nfallback_after = \"5s\"",
        ))
        .unwrap();
        assert_eq!(
            c.operators[0].approval_grace.0,
            SignedDuration::from_hours(48)
        );
        assert_eq!(
            c.operators[0].fallback_after.0,
            SignedDuration::from_secs(5)
        );
        assert!(one("").unwrap().operators.is_empty());
    }

    #[test]
    fn single_bad_values_name_file_line_and_key() {
        type Case<'a> = (&'a str, String, usize, &'a str, &'a str);
        let cases: Vec<Case<'_>> = vec![
            (
                "grace over 7 days",
                profile("a", "\"26201\"", "approval_grace = \"7d 1s\""),
                6,
                "operator[0].approval_grace",
                "longer than 7d",
            ),
            (
                "grace of 30 days",
                profile("a", "\"26201\"", "approval_grace = \"30d\""),
                6,
                "operator[0].approval_grace",
                "TES-0010",
            ),
            (
                "MCC-MNC with a dash",
                profile("a", "\"262-01\"", ""),
                3,
                "operator[0].mcc_mnc",
                "invalid MCC-MNC",
            ),
            (
                "MCC-MNC too short",
                profile("a", "\"2620\"", ""),
                3,
                "operator[0].mcc_mnc",
                "5 or 6 digits",
            ),
            (
                "MCC-MNC with non-ASCII digits",
                profile("a", "\"２６２０１\"", ""),
                3,
                "operator[0].mcc_mnc",
                "invalid MCC-MNC",
            ),
            (
                "no MCC-MNC",
                profile("a", "", ""),
                3,
                "operator[0].mcc_mnc",
                "at least one",
            ),
            (
                "whole ICCID as prefix",
                profile(
                    "a",
                    "\"26201\"",
                    "iccid_prefixes = [\"8949000000000001234\"]",
                ),
                6,
                "operator[0].iccid_prefixes",
                "never a whole ICCID",
            ),
            (
                "negative grace",
                profile("a", "\"26201\"", "approval_grace = \"-1d\""),
                6,
                "operator[0].approval_grace",
                "negative",
            ),
            (
                "unknown key",
                profile("a", "\"26201\"", "approve_everything = true"),
                6,
                "operator[0].approve_everything",
                "unknown field",
            ),
            (
                "bad override severity",
                "[link_cost]\noverride_severity = \"urgent\"\n".to_owned(),
                2,
                "link_cost.override_severity",
                "unknown variant",
            ),
            (
                "negative budget",
                "[link_cost]\nmonthly_budget_bytes = -5\n".to_owned(),
                2,
                "link_cost.monthly_budget_bytes",
                "",
            ),
        ];
        for (what, text, line, key, reason) in cases {
            let (l, k, r) = invalid(&text);
            assert_eq!((l, k.as_str()), (line, key), "{what}: {r}");
            assert!(r.contains(reason), "{what}: {r:?} lacks {reason:?}");
        }
        let shown = one(&profile("a", "\"26201\"", "approval_grace = \"8d\""))
            .unwrap_err()
            .to_string();
        assert!(
            shown.starts_with("/etc/ssu-agent/agent.toml:6: operator[0].approval_grace: "),
            "{shown}"
        );
    }

    #[test]
    fn conflicts_between_profiles_are_refused() {
        type Case<'a> = (&'a str, String, &'a str, &'a str);
        let cases: Vec<Case<'_>> = vec![
            (
                "duplicate names",
                profile("a", "\"26201\"", "") + &profile("a", "\"26202\"", ""),
                "operator[1].name",
                "already the name of operator[0]",
            ),
            (
                "overlapping MCC-MNC",
                profile("a", "\"26201\"", "") + &profile("b", "\"26203\", \"26201\"", ""),
                "operator[1].mcc_mnc",
                "also claimed by operator \"a\"",
            ),
            (
                "overlapping ICCID prefixes",
                profile("a", "\"26201\"", "iccid_prefixes = [\"8949\"]")
                    + &profile("b", "\"26201\"", "iccid_prefixes = [\"894902\"]"),
                "operator[1].mcc_mnc",
                "overlapping ICCID prefixes",
            ),
            (
                "prefix-less profile overlaps any prefix",
                profile("a", "\"26201\"", "iccid_prefixes = [\"8949\"]")
                    + &profile("b", "\"26201\"", ""),
                "operator[1].mcc_mnc",
                "also claimed",
            ),
            (
                "reserved name",
                profile("none", "\"26201\"", ""),
                "operator[0].name",
                "not none",
            ),
            (
                "name with a slash",
                profile("../x", "\"26201\"", ""),
                "operator[0].name",
                "letters, digits",
            ),
            (
                "relative root",
                profile("a", "\"26201\"", "").replace("/etc/ssu/a.json", "a.json"),
                "operator[0].root",
                "absolute",
            ),
            (
                "ftp url",
                profile("a", "\"26201\"", "").replace("https://", "ftp://"),
                "operator[0].url",
                "unsupported scheme",
            ),
            (
                "zero fallback",
                profile("a", "\"26201\"", "fallback_after = \"0s\""),
                "operator[0].fallback_after",
                "at least 1s",
            ),
        ];
        for (what, text, key, reason) in cases {
            let (_, k, r) = invalid(&text);
            assert_eq!(k, key, "{what}: {r}");
            assert!(r.contains(reason), "{what}: {r:?} lacks {reason:?}");
        }
        // Distinct prefixes on a shared network are fine (an MVNO on its host's network).
        let ok = profile("host", "\"26201\"", "iccid_prefixes = [\"894901\"]")
            + &profile("mvno", "\"26201\"", "iccid_prefixes = [\"894902\"]");
        assert_eq!(one(&ok).unwrap().operators.len(), 2);
    }
}
