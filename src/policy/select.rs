//! Which verified target, if any, this device should install (SEC-0010, ETSI 5.3-2).
//!
//! Input: the bundle targets of one verified repository and what the device is. A target is
//! *not applicable* (silently skipped) when it is for other hardware or for other kinds of
//! release than security updates; it is *refused* (reported, recorded) when it is for this
//! device but breaks a rule: a lower patch level than installed (anti-rollback floor), or a
//! "security" update outside the installed feature release (scope violation). Among the
//! eligible targets the one with the highest patch level wins.
//!
//! SEC-0010 is judged on versions, not on the label alone: a security update must say it is
//! built on the installed feature release (`base_version`) *and* its version must belong to
//! that release's line — the feature release followed by a separator and more (`1.0` →
//! `1.0.1`, `1.0.10`, `1.0-sec2`; `1.0.0` → `1.0.0.1`, `1.0.0-p1`), see [`in_line`]. A
//! "security" 2.0.0 claiming base 1.0 is a feature release in disguise and is refused.

use jiff::civil::Date;

use crate::metadata::schema::{BundleMeta, Kind};

/// What the device is, for target selection.
#[derive(Debug, Clone, Copy)]
pub struct DeviceFacts<'a> {
    /// RAUC's compatible string.
    pub compatible: &'a str,
    pub hardware_id: &'a str,
    /// Installed feature release.
    pub feature_release: &'a str,
    pub installed_version: &'a str,
    /// Installed security patch level: the floor nothing may go below.
    pub patch_level: Option<Date>,
}

/// One target to judge.
#[derive(Debug, Clone, Copy)]
pub struct Candidate<'a> {
    pub name: &'a str,
    pub meta: &'a BundleMeta,
}

/// Why a target meant for this device is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// A "security" update that is built on another feature release (SEC-0010).
    ScopeViolation {
        base_version: String,
        installed: String,
    },
    /// Claims the installed feature release but its version is outside that release's line
    /// (SEC-0010: a new feature release labelled as a security update).
    OutsideFeatureRelease {
        version: String,
        feature_release: String,
    },
    /// Its patch level is lower than the installed one (anti-rollback).
    LowerPatchLevel { offered: Date, installed: Date },
}

/// Whether `version` belongs to feature release `feature_release`'s line: it starts with the
/// feature release, then one of `.` `-` `+` `~` `_`, then at least one more character.
/// Components compare as text, so `1.01` is not in `1.0`'s line, nor is `1.0` itself (that is
/// the feature release, not a security update on it).
pub fn in_line(version: &str, feature_release: &str) -> bool {
    if feature_release.is_empty() {
        return false;
    }
    version
        .strip_prefix(feature_release)
        .and_then(|rest| rest.strip_prefix(['.', '-', '+', '~', '_']))
        .is_some_and(|more| !more.is_empty())
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::ScopeViolation {
                base_version,
                installed,
            } => write!(
                f,
                "scope violation: labelled a security update but built on feature release \
                 {base_version}, while {installed} is installed (FS.25 SEC-0010)"
            ),
            Refusal::OutsideFeatureRelease {
                version,
                feature_release,
            } => write!(
                f,
                "scope violation: labelled a security update on feature release \
                 {feature_release}, but version {version} is not in that release's line \
                 ({feature_release}.…) — a new feature release (FS.25 SEC-0010)"
            ),
            Refusal::LowerPatchLevel { offered, installed } => write!(
                f,
                "security patch level {offered} is lower than the installed {installed} \
                 (rollback refused)"
            ),
        }
    }
}

/// The outcome for one repository.
#[derive(Debug, Clone, Default)]
pub struct Selection<'a> {
    pub chosen: Option<Candidate<'a>>,
    pub refused: Vec<(Candidate<'a>, Refusal)>,
}

/// Judges every candidate; see the module docs for the rules.
pub fn select<'a>(candidates: &[Candidate<'a>], device: &DeviceFacts<'_>) -> Selection<'a> {
    let mut out = Selection::default();
    for c in candidates {
        let m = c.meta;
        let for_this_device = m.compatible == device.compatible
            && (m.hardware_ids.is_empty()
                || m.hardware_ids.iter().any(|h| h == device.hardware_id));
        if !for_this_device || m.kind != Kind::Security {
            continue;
        }
        if let Some(installed) = device.patch_level {
            if m.security_patch_level < installed {
                out.refused.push((
                    *c,
                    Refusal::LowerPatchLevel {
                        offered: m.security_patch_level,
                        installed,
                    },
                ));
                continue;
            }
            if m.security_patch_level == installed {
                // Nothing newer: the installed release or a sibling with the same fixes.
                continue;
            }
        }
        if m.version == device.installed_version {
            continue;
        }
        if m.base_version != device.feature_release {
            out.refused.push((
                *c,
                Refusal::ScopeViolation {
                    base_version: m.base_version.clone(),
                    installed: device.feature_release.to_owned(),
                },
            ));
            continue;
        }
        if !in_line(&m.version, device.feature_release) {
            out.refused.push((
                *c,
                Refusal::OutsideFeatureRelease {
                    version: m.version.clone(),
                    feature_release: device.feature_release.to_owned(),
                },
            ));
            continue;
        }
        let better = match &out.chosen {
            None => true,
            Some(best) => {
                (m.security_patch_level, c.name) > (best.meta.security_patch_level, best.name)
            }
        };
        if better {
            out.chosen = Some(*c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use jiff::civil::date;

    use crate::metadata::schema::sample_security_bundle as meta;

    fn device() -> DeviceFacts<'static> {
        DeviceFacts {
            compatible: "ssu-sandbox",
            hardware_id: "gw-1",
            feature_release: "1.0",
            installed_version: "1.0.0",
            patch_level: Some(date(2026, 9, 1)),
        }
    }

    fn names(sel: &Selection<'_>) -> (Option<String>, Vec<String>) {
        (
            sel.chosen.map(|c| c.name.to_owned()),
            sel.refused.iter().map(|(c, _)| c.name.to_owned()).collect(),
        )
    }

    #[test]
    fn table() {
        let newer = meta("1.0.1", "1.0", date(2026, 11, 1));
        let newest = meta("1.0.2", "1.0", date(2026, 12, 1));
        let older = meta("0.9.9", "1.0", date(2026, 8, 1));
        let same = meta("1.0.0", "1.0", date(2026, 9, 1));
        let mislabelled = meta("2.0.0", "2.0", date(2026, 11, 1));
        let disguised = meta("2.0.0", "1.0", date(2026, 11, 1));
        let mut other_compat = meta("1.0.5", "1.0", date(2026, 12, 1));
        other_compat.compatible = "other-board".into();
        let mut other_hw = meta("1.0.6", "1.0", date(2026, 12, 1));
        other_hw.hardware_ids = vec!["gw-2".into()];
        let mut this_hw = meta("1.0.3", "1.0", date(2026, 11, 15));
        this_hw.hardware_ids = vec!["gw-2".into(), "gw-1".into()];
        let mut feature = meta("1.1.0", "1.1", date(2026, 12, 1));
        feature.kind = Kind::Feature;

        let c = |name, m| Candidate { name, meta: m };
        type Case<'a> = (&'a str, Vec<Candidate<'a>>, Option<&'a str>, Vec<&'a str>);
        let cases: Vec<Case<'_>> = vec![
            ("nothing published", vec![], None, vec![]),
            ("one newer", vec![c("a", &newer)], Some("a"), vec![]),
            (
                "newest wins",
                vec![c("a", &newer), c("b", &newest)],
                Some("b"),
                vec![],
            ),
            ("lower refused", vec![c("o", &older)], None, vec!["o"]),
            (
                "same level is nothing new",
                vec![c("s", &same)],
                None,
                vec![],
            ),
            (
                "scope violation refused",
                vec![c("m", &mislabelled)],
                None,
                vec!["m"],
            ),
            (
                "a 2.0.0 claiming base 1.0 refused",
                vec![c("d", &disguised)],
                None,
                vec!["d"],
            ),
            (
                "other compatible skipped",
                vec![c("x", &other_compat)],
                None,
                vec![],
            ),
            (
                "other hardware skipped",
                vec![c("h", &other_hw)],
                None,
                vec![],
            ),
            (
                "listed hardware chosen",
                vec![c("h", &this_hw)],
                Some("h"),
                vec![],
            ),
            (
                "feature releases not installed",
                vec![c("f", &feature)],
                None,
                vec![],
            ),
            (
                "refusals do not block a good target",
                vec![c("m", &mislabelled), c("o", &older), c("a", &newer)],
                Some("a"),
                vec!["m", "o"],
            ),
        ];
        for (what, cands, chosen, refused) in cases {
            let sel = select(&cands, &device());
            let (got_chosen, got_refused) = names(&sel);
            assert_eq!(got_chosen.as_deref(), chosen, "{what}");
            assert_eq!(got_refused, refused, "{what}");
        }
    }

    #[test]
    fn refusal_reasons_say_why() {
        let mislabelled = meta("2.0.0", "2.0", date(2026, 11, 1));
        let older = meta("0.9.9", "1.0", date(2026, 8, 1));
        let sel = select(
            &[
                Candidate {
                    name: "m",
                    meta: &mislabelled,
                },
                Candidate {
                    name: "o",
                    meta: &older,
                },
            ],
            &device(),
        );
        assert_eq!(
            sel.refused[0].1,
            Refusal::ScopeViolation {
                base_version: "2.0".into(),
                installed: "1.0".into()
            }
        );
        assert!(sel.refused[0].1.to_string().contains("SEC-0010"));
        assert!(
            sel.refused[1]
                .1
                .to_string()
                .contains("lower than the installed 2026-09-01")
        );
    }

    #[test]
    fn unknown_patch_level_accepts_any_level_but_keeps_scope() {
        let mut d = device();
        d.patch_level = None;
        let older = meta("1.0.9", "1.0", date(2020, 1, 1));
        let sel = select(
            &[Candidate {
                name: "o",
                meta: &older,
            }],
            &d,
        );
        assert_eq!(sel.chosen.map(|c| c.name), Some("o"));
    }

    #[test]
    fn a_security_version_must_belong_to_the_feature_release_line() {
        // (version, feature release, in line)
        let table = [
            ("1.0.1", "1.0", true),
            ("1.0.10", "1.0", true),
            ("1.0-sec2", "1.0", true),
            ("1.0+p1", "1.0", true),
            ("1.0~rc1", "1.0", true),
            ("1.0_1", "1.0", true),
            ("1.0.0.1", "1.0.0", true),
            ("1.0.0-p1", "1.0.0", true),
            ("1.0.1", "1.0.0", false),
            ("2.0.0", "1.0", false),
            ("1.1.0", "1.0", false),
            ("1.01", "1.0", false),
            ("1.00.1", "1.0", false),
            ("1.0", "1.0", false),
            ("1.0.", "1.0", false),
            ("11.0.1", "1.0", false),
            ("0.9.9", "1.0", false),
            ("1.0.1", "", false),
            ("", "1.0", false),
        ];
        for (version, release, want) in table {
            assert_eq!(in_line(version, release), want, "{version} in {release}");
        }
        let disguised = meta("2.0.0", "1.0", date(2026, 11, 1));
        let sel = select(
            &[Candidate {
                name: "d",
                meta: &disguised,
            }],
            &device(),
        );
        let why = sel.refused[0].1.to_string();
        assert!(why.contains("2.0.0") && why.contains("SEC-0010"), "{why}");
    }
}
