//! The security support period (FS.25 SEC-0030/0040, ETSI 5.3-13): whether this model still
//! gets security updates, from the end date in signed per-model metadata (or the
//! configuration's fallback). Pure: `today` is an argument.

use jiff::civil::Date;
use jiff::{SignedDuration, ToSpan};
use serde::Serialize;

/// Where the device stands in its support period. The string forms are part of the D-Bus
/// contract (`SupportState`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum SupportState {
    /// No end date is known (no signed metadata for this model, no fallback configured).
    #[default]
    Unknown,
    Supported,
    /// The end is within the configured warning window.
    EndingSoon,
    /// The end date has passed: no more security updates (end of life).
    Ended,
}

impl SupportState {
    pub fn as_str(self) -> &'static str {
        match self {
            SupportState::Unknown => "unknown",
            SupportState::Supported => "supported",
            SupportState::EndingSoon => "ending-soon",
            SupportState::Ended => "ended",
        }
    }
}

/// The state on `today` for a period ending on `end` (the last supported day, inclusive),
/// warning `ending_soon` ahead.
pub fn support_state(today: Date, end: Option<Date>, ending_soon: SignedDuration) -> SupportState {
    let Some(end) = end else {
        return SupportState::Unknown;
    };
    if today > end {
        return SupportState::Ended;
    }
    let days = ending_soon.as_hours() / 24;
    let warn_from = end.checked_sub(days.days()).unwrap_or(Date::MIN);
    if today > warn_from {
        SupportState::EndingSoon
    } else {
        SupportState::Supported
    }
}

/// What verified metadata says about whether this model is still published for (SEC-0040).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Publishing {
    /// Bundle targets in the repository, for any device.
    pub bundles_total: usize,
    /// Bundle targets of any kind for this device (its compatible and hardware id).
    pub bundles_for_device: usize,
    /// Per-model records (`ssu-repo device`) in the repository.
    pub models_listed: usize,
    /// This model's record is among them.
    pub this_model_listed: bool,
    /// This model's record was in earlier verified metadata.
    pub listed_before: bool,
    /// The installed patch level is older than `[check] overdue_after`.
    pub overdue: bool,
}

/// Why this device cannot be updated any more, if it cannot (SEC-0040: "where a device
/// cannot be updated … it should be replaceable" — so it must be told like end of life):
///
/// - the manufacturer stopped publishing for the model: its signed per-model record, seen
///   before, is gone while others are still listed;
/// - nothing is published for it: the repository holds bundles, none for this device, and
///   its patch level is overdue (a new model before its first update is not overdue).
pub fn cannot_update(p: &Publishing) -> Option<&'static str> {
    if p.listed_before && !p.this_model_listed && p.models_listed > 0 {
        return Some(
            "the manufacturer no longer publishes for this model (its signed record is gone)",
        );
    }
    if p.bundles_total > 0 && p.bundles_for_device == 0 && p.overdue {
        return Some(
            "no update for this device is published and its security patch level is overdue",
        );
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Date {
        s.parse().unwrap()
    }

    #[test]
    fn support_state_table() {
        let soon = SignedDuration::from_hours(90 * 24);
        let end = Some(d("2027-06-30"));
        let table = [
            ("2026-01-01", None, SupportState::Unknown),
            ("2026-01-01", end, SupportState::Supported),
            ("2027-04-01", end, SupportState::Supported),
            ("2027-04-02", end, SupportState::EndingSoon),
            ("2027-06-30", end, SupportState::EndingSoon),
            ("2027-07-01", end, SupportState::Ended),
            ("9999-12-31", end, SupportState::Ended),
            ("2026-01-01", Some(Date::MIN), SupportState::Ended),
        ];
        for (today, end, want) in table {
            assert_eq!(support_state(d(today), end, soon), want, "{today} {end:?}");
        }
        // No warning window: supported up to and including the last day.
        assert_eq!(
            support_state(d("2027-06-30"), end, SignedDuration::ZERO),
            SupportState::Supported
        );
    }

    #[test]
    fn a_device_that_can_no_longer_be_updated_is_detected() {
        let base = Publishing {
            bundles_total: 3,
            bundles_for_device: 1,
            models_listed: 2,
            this_model_listed: true,
            listed_before: true,
            overdue: false,
        };
        // (what, publishing, detected reason fragment or "")
        let cases = [
            ("published for", base, ""),
            (
                "record gone",
                Publishing {
                    this_model_listed: false,
                    ..base
                },
                "no longer publishes",
            ),
            (
                "never listed: not a drop",
                Publishing {
                    this_model_listed: false,
                    listed_before: false,
                    ..base
                },
                "",
            ),
            (
                "no records at all (older repository): not a drop",
                Publishing {
                    this_model_listed: false,
                    models_listed: 0,
                    ..base
                },
                "",
            ),
            (
                "nothing for this device, overdue",
                Publishing {
                    bundles_for_device: 0,
                    overdue: true,
                    ..base
                },
                "no update for this device",
            ),
            (
                "nothing for this device yet, not overdue (a new model)",
                Publishing {
                    bundles_for_device: 0,
                    ..base
                },
                "",
            ),
            (
                "an empty repository says nothing",
                Publishing {
                    bundles_total: 0,
                    bundles_for_device: 0,
                    overdue: true,
                    ..base
                },
                "",
            ),
        ];
        for (what, p, want) in cases {
            match cannot_update(&p) {
                None => assert_eq!(want, "", "{what}"),
                Some(r) => assert!(!want.is_empty() && r.contains(want), "{what}: {r}"),
            }
        }
    }
}
