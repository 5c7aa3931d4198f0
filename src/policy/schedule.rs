//! When to check for updates.
//!
//! After start the first check waits `boot_delay` (boot-time work settles first), then checks
//! repeat every `interval` moved by a per-device pseudo-random offset within `±jitter`, so a
//! fleet spreads its requests instead of hitting the servers in the same second. A failed check
//! is retried sooner, backing off from 5 minutes up to the interval.

use jiff::{SignedDuration, Timestamp};

/// The check cadence, from `[check]` in the configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cadence {
    pub boot_delay: SignedDuration,
    /// The first check moves later by a per-device offset up to this (`[spread] first_check`).
    pub first_check_spread: SignedDuration,
    pub interval: SignedDuration,
    pub jitter: SignedDuration,
    pub overdue_after: SignedDuration,
}

impl From<&crate::config::CheckConfig> for Cadence {
    fn from(c: &crate::config::CheckConfig) -> Cadence {
        Cadence {
            boot_delay: c.boot_delay.0,
            first_check_spread: SignedDuration::ZERO,
            interval: c.interval.0,
            jitter: c.jitter.0,
            overdue_after: c.overdue_after.0,
        }
    }
}

/// What the scheduler knows about past checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckHistory {
    /// When this agent process started.
    pub started: Timestamp,
    /// The last check attempt in this process, if any.
    pub last_attempt: Option<Timestamp>,
    /// Failed attempts since the last verified one (0 when the last attempt succeeded).
    pub consecutive_failures: u32,
}

/// First retry delay after a failed check.
const RETRY_BASE: SignedDuration = SignedDuration::from_mins(5);

/// The time of the next check.
///
/// `seed` makes the jitter differ between devices but stay the same for one device and one
/// attempt time, so the decision is reproducible.
pub fn next_check(cadence: &Cadence, history: &CheckHistory, seed: u64) -> Timestamp {
    let Some(last) = history.last_attempt else {
        let spread = super::spread::offset(
            seed,
            super::spread::Purpose::FirstCheck,
            cadence.first_check_spread,
        );
        return add(history.started, cadence.boot_delay.saturating_add(spread));
    };
    if history.consecutive_failures > 0 {
        let shift = history.consecutive_failures.saturating_sub(1).min(20);
        let backoff = RETRY_BASE
            .checked_mul(1i32 << shift)
            .unwrap_or(cadence.interval)
            .min(cadence.interval);
        return add(last, backoff);
    }
    let offset = jitter_offset(cadence.jitter, seed ^ last.as_second() as u64);
    add(last, cadence.interval.saturating_add(offset))
}

/// A deterministic offset in `[-jitter, +jitter]`.
fn jitter_offset(jitter: SignedDuration, seed: u64) -> SignedDuration {
    let span = jitter.as_secs();
    if span <= 0 {
        return SignedDuration::ZERO;
    }
    // splitmix64: a good spread from consecutive seeds, no dependency.
    let z = super::spread::mix(seed);
    let width = (2 * span + 1) as u64;
    SignedDuration::from_secs((z % width) as i64 - span)
}

fn add(t: Timestamp, d: SignedDuration) -> Timestamp {
    t.checked_add(d).unwrap_or(Timestamp::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cadence() -> Cadence {
        Cadence {
            boot_delay: SignedDuration::from_mins(2),
            first_check_spread: SignedDuration::ZERO,
            interval: SignedDuration::from_hours(24),
            jitter: SignedDuration::from_hours(1),
            overdue_after: SignedDuration::from_hours(90 * 24),
        }
    }

    fn t(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn first_check_waits_the_boot_delay() {
        let h = CheckHistory {
            started: t("2026-11-27T10:00:00Z"),
            last_attempt: None,
            consecutive_failures: 0,
        };
        assert_eq!(next_check(&cadence(), &h, 7), t("2026-11-27T10:02:00Z"));
        // With a spread, devices wake within [boot_delay, boot_delay + spread], apart.
        let spread = Cadence {
            first_check_spread: SignedDuration::from_mins(10),
            ..cadence()
        };
        let (a, b) = (next_check(&spread, &h, 1), next_check(&spread, &h, 2));
        assert_ne!(a, b);
        for at in [a, b] {
            assert!(at >= t("2026-11-27T10:02:00Z") && at <= t("2026-11-27T10:12:00Z"));
        }
    }

    #[test]
    fn periodic_check_is_interval_within_jitter_and_deterministic() {
        let last = t("2026-11-27T10:02:00Z");
        let h = CheckHistory {
            started: t("2026-11-27T10:00:00Z"),
            last_attempt: Some(last),
            consecutive_failures: 0,
        };
        let mut seen = std::collections::BTreeSet::new();
        for seed in 0..200u64 {
            let next = next_check(&cadence(), &h, seed);
            let gap = next.duration_since(last);
            assert!(gap >= SignedDuration::from_hours(23), "{gap:?}");
            assert!(gap <= SignedDuration::from_hours(25), "{gap:?}");
            assert_eq!(next, next_check(&cadence(), &h, seed));
            seen.insert(next);
        }
        assert!(
            seen.len() > 150,
            "jitter spreads devices: {} distinct",
            seen.len()
        );
    }

    #[test]
    fn failures_back_off_up_to_the_interval() {
        let last = t("2026-11-27T10:00:00Z");
        let cases = [
            (1, 5),
            (2, 10),
            (3, 20),
            (4, 40),
            (9, 1280),
            (10, 24 * 60),
            (40, 24 * 60),
        ];
        for (failures, minutes) in cases {
            let h = CheckHistory {
                started: last,
                last_attempt: Some(last),
                consecutive_failures: failures,
            };
            assert_eq!(
                next_check(&cadence(), &h, 1).duration_since(last),
                SignedDuration::from_mins(minutes),
                "after {failures} failures"
            );
        }
    }

    #[test]
    fn zero_jitter_and_extreme_times_do_not_panic() {
        let mut c = cadence();
        c.jitter = SignedDuration::ZERO;
        let h = CheckHistory {
            started: Timestamp::MAX,
            last_attempt: Some(Timestamp::MAX),
            consecutive_failures: 0,
        };
        assert_eq!(next_check(&c, &h, 0), Timestamp::MAX);
    }
}
