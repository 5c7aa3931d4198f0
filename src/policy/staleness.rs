//! May the device say it is current? (SEC-0020, ETSI 5.3-8)
//!
//! `unverified` wins over everything: without fresh signed metadata the agent does not know
//! whether an update is waiting, so it must not claim "up to date". Only with fresh
//! metadata does the age of the installed patch level decide between `current` and `overdue`.

use jiff::civil::Date;
use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp};

use super::Cadence;
use crate::status::Staleness;

/// Staleness at `now`, given the installed patch level and the time of the last verified
/// check. Fresh means verified within two intervals: one missed periodic check (a device
/// parked in a garage) is tolerated, two are not.
pub fn staleness(
    now: Timestamp,
    patch_level: Option<Date>,
    last_verified: Option<Timestamp>,
    cadence: &Cadence,
) -> Staleness {
    let fresh_for = cadence
        .interval
        .checked_mul(2)
        .unwrap_or(SignedDuration::MAX)
        .saturating_add(cadence.jitter);
    let fresh = last_verified.is_some_and(|at| {
        let age = now.duration_since(at);
        // A verification "from the future" means the clock stepped back: not trusted.
        age >= -SignedDuration::from_mins(5) && age <= fresh_for
    });
    if !fresh {
        return Staleness::Unverified;
    }
    let Some(level) = patch_level else {
        return Staleness::Overdue;
    };
    let today = now.to_zoned(TimeZone::UTC).date();
    let age_days = level.until(today).map(|s| s.get_days()).unwrap_or(i32::MAX);
    let max_days = cadence.overdue_after.as_secs() / 86_400;
    if i64::from(age_days) > max_days {
        Staleness::Overdue
    } else {
        Staleness::Current
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jiff::civil::date;

    fn cadence() -> Cadence {
        Cadence {
            boot_delay: SignedDuration::from_mins(2),
            first_check_spread: SignedDuration::ZERO,
            interval: SignedDuration::from_hours(24),
            jitter: SignedDuration::from_hours(1),
            overdue_after: SignedDuration::from_hours(90 * 24),
        }
    }

    #[test]
    fn table() {
        let now: Timestamp = "2026-11-27T12:00:00Z".parse().unwrap();
        let ago = |h: i64| Some(now - SignedDuration::from_hours(h));
        let recent = Some(date(2026, 11, 1));
        let old = Some(date(2026, 8, 1));
        let cases: &[(&str, Option<Date>, Option<Timestamp>, Staleness)] = &[
            ("never verified", recent, None, Staleness::Unverified),
            (
                "verified an hour ago, recent level",
                recent,
                ago(1),
                Staleness::Current,
            ),
            (
                "verified 48h ago still fresh",
                recent,
                ago(48),
                Staleness::Current,
            ),
            (
                "verified 50h ago is too old",
                recent,
                ago(50),
                Staleness::Unverified,
            ),
            (
                "verified in the future: clock stepped back",
                recent,
                ago(-2),
                Staleness::Unverified,
            ),
            (
                "fresh but level older than 90 days",
                old,
                ago(1),
                Staleness::Overdue,
            ),
            ("fresh but level unknown", None, ago(1), Staleness::Overdue),
            (
                "old level, never verified: unverified wins",
                old,
                None,
                Staleness::Unverified,
            ),
            (
                "level exactly 90 days old",
                Some(date(2026, 8, 29)),
                ago(1),
                Staleness::Current,
            ),
            (
                "level 91 days old",
                Some(date(2026, 8, 28)),
                ago(1),
                Staleness::Overdue,
            ),
        ];
        for (what, level, verified, want) in cases {
            assert_eq!(
                staleness(now, *level, *verified, &cadence()),
                *want,
                "{what}"
            );
        }
    }

    #[test]
    fn extreme_inputs_do_not_panic() {
        let c = cadence();
        staleness(Timestamp::MIN, Some(Date::MAX), Some(Timestamp::MAX), &c);
        staleness(Timestamp::MAX, Some(Date::MIN), Some(Timestamp::MIN), &c);
    }
}
