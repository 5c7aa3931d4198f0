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
}
