//! Which time to trust when the system clock and the clock ratchet disagree (ETSI 5.3-8,
//! TUF's freeze and replay protection).
//!
//! The agent persists the latest time it is sure has passed (the ratchet), so that a clock
//! stepped back cannot make replayed, long-expired metadata look fresh: while the system
//! clock is behind it, the clock is not trusted. Two things break that on real devices:
//!
//! - a device without an RTC battery starts in 1970 and never checks again until something
//!   sets its clock; and
//! - a clock that ran ahead (and verified metadata then) pushed the ratchet into the future:
//!   after the clock is corrected every check is refused until the wrong time has passed.
//!
//! Trusted time settles both: the `Date` of an authenticated HTTPS response whose metadata
//! verified, and the cellular network's time from the modem. The rules:
//!
//! - The system clock at or past the ratchet (within [`TOLERANCE`]) is used as it is.
//! - Behind the ratchet, trusted time that agrees with the system clock (within
//!   `TOLERANCE`) proves the clock right and the ratchet wrong: the ratchet comes back to
//!   that time (the only way it ever moves backwards).
//! - Behind the ratchet, trusted time at or past the ratchet proves the system clock wrong:
//!   the trusted time is used instead — for expiry too, so replayed old metadata is still
//!   refused — but one source may not move time more than [`SINGLE_SOURCE_AHEAD`] past the
//!   ratchet: a lying network or server could otherwise declare every signature expired.
//! - A device that has never verified anything has no ratchet: a system clock at or past
//!   [`EARLIEST`] is used as it is, an earlier one (1970) is not a time at all. Then trusted
//!   time at or past `EARLIEST` is used instead (no upper bound: nothing verified yet bounds
//!   it, and a source far ahead can only make valid metadata look expired — refused, and
//!   nothing is kept), and without it the check is refused: by a clock in 1970 a replayed,
//!   long-expired repository would look fresh, and nothing else would refuse it.
//! - Otherwise the check is refused, saying what is wrong and what would fix it.

use jiff::{SignedDuration, Timestamp};

/// How far two clocks may differ and still agree.
pub const TOLERANCE: SignedDuration = SignedDuration::from_mins(5);

/// The most one trusted source may move the time past the ratchet on its own (a device
/// stored for a year still gets its time; beyond that it waits for its clock to be set).
pub const SINGLE_SOURCE_AHEAD: SignedDuration = SignedDuration::from_hours(400 * 24);

/// A time before this agent was written: a system clock behind it has never been set (a
/// device without an RTC battery starts in 1970). It only needs to be earlier than any real
/// time the agent runs at, so it never needs updating.
pub const EARLIEST: Timestamp = Timestamp::constant(1_767_225_600, 0); // 2026-01-01T00:00:00Z

/// Where a trusted time came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The `Date` header of an HTTPS response whose metadata verified.
    Https,
    /// The cellular network's time (ModemManager `Modem.Time`).
    Network,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Https => "the update server's HTTPS Date",
            Source::Network => "the cellular network's time",
        }
    }
}

/// A trusted time reading, already advanced to now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Trusted {
    pub at: Timestamp,
    pub source: Source,
}

/// What time to use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Use `now`; the ratchet becomes `ratchet` (never lower than before, except when
    /// `recovered` says trusted time proved it wrong).
    Use {
        now: Timestamp,
        ratchet: Timestamp,
        recovered: bool,
    },
    /// Do not check: why, and what will fix it.
    Refuse(String),
}

/// Decides the time for a check from the system clock, the ratchet and any trusted time.
pub fn judge(system: Timestamp, ratchet: Option<Timestamp>, trusted: Option<Trusted>) -> Verdict {
    let Some(latest) = ratchet else {
        return first_time(system, trusted);
    };
    if system >= latest - TOLERANCE {
        return Verdict::Use {
            now: system,
            ratchet: latest.max(system),
            recovered: false,
        };
    }
    let Some(t) = trusted else {
        return Verdict::Refuse(format!(
            "not checked: the system clock ({system}) is behind the latest time this device \
             has seen ({latest}): either the clock was set back (then replayed old metadata \
             could look fresh) or it ran ahead earlier. Checks resume once the clock passes \
             {latest}, or as soon as trusted time (the cellular network's time, or the update \
             server's HTTPS Date) confirms the clock"
        ));
    };
    let agrees = t.at.duration_since(system).abs() <= TOLERANCE;
    if agrees {
        return Verdict::Use {
            now: system,
            ratchet: system,
            recovered: true,
        };
    }
    if t.at >= latest - TOLERANCE
        && t.at
            <= latest
                .saturating_add(SINGLE_SOURCE_AHEAD)
                .unwrap_or(Timestamp::MAX)
    {
        return Verdict::Use {
            now: t.at,
            ratchet: latest.max(t.at),
            recovered: false,
        };
    }
    Verdict::Refuse(format!(
        "not checked: the system clock ({system}) is behind the latest time this device has \
         seen ({latest}), and {} ({}) confirms neither: set the system clock (NTP, or the \
         network's time) — checks resume once it passes {latest}",
        t.source.as_str(),
        t.at
    ))
}

/// The time of a device that has never verified anything (no ratchet yet).
fn first_time(system: Timestamp, trusted: Option<Trusted>) -> Verdict {
    if system >= EARLIEST {
        return Verdict::Use {
            now: system,
            ratchet: system,
            recovered: false,
        };
    }
    match trusted {
        Some(t) if t.at >= EARLIEST => Verdict::Use {
            now: t.at,
            ratchet: t.at,
            recovered: false,
        },
        Some(t) => Verdict::Refuse(format!(
            "not checked: the system clock ({system}) has never been set (it is before \
             {EARLIEST}), and {} ({}) is not a time either: set the system clock (NTP, or the \
             network's time) — checks resume once it is set",
            t.source.as_str(),
            t.at
        )),
        None => Verdict::Refuse(format!(
            "not checked: the system clock ({system}) has never been set (it is before \
             {EARLIEST}), and by it replayed, long-expired metadata would look fresh. Checks \
             resume once the clock is set, or as soon as trusted time (the cellular network's \
             time) gives the time"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn time_table() {
        let latest = t("2026-11-27T10:00:00Z");
        let right = t("2026-11-24T10:00:00Z"); // the clock ran 3 days ahead before
        let epoch = t("1970-01-01T00:00:10Z");
        let net = |s: &str| {
            Some(Trusted {
                at: t(s),
                source: Source::Network,
            })
        };
        // (what, system, ratchet, trusted, Ok((now, ratchet, recovered)) or Err(fragment))
        type Want<'a> = Result<(Timestamp, Timestamp, bool), &'a str>;
        type Case<'a> = (
            &'a str,
            Timestamp,
            Option<Timestamp>,
            Option<Trusted>,
            Want<'a>,
        );
        let cases: [Case; 14] = [
            (
                "no ratchet yet",
                right,
                None,
                None,
                Ok((right, right, false)),
            ),
            (
                "no ratchet yet, a clock just set: trusted time does not matter",
                EARLIEST,
                None,
                net("2026-11-30T08:00:00Z"),
                Ok((EARLIEST, EARLIEST, false)),
            ),
            (
                "no ratchet yet, 1970, nothing trusted",
                epoch,
                None,
                None,
                Err("never been set"),
            ),
            (
                "no ratchet yet, 1970, network time: used, however far ahead",
                epoch,
                None,
                net("2031-05-01T00:00:00Z"),
                Ok((t("2031-05-01T00:00:00Z"), t("2031-05-01T00:00:00Z"), false)),
            ),
            (
                "no ratchet yet, 1970, network time before this agent existed",
                epoch,
                None,
                net("1980-01-06T00:00:00Z"),
                Err("not a time either"),
            ),
            (
                "clock past the ratchet",
                t("2026-11-28T00:00:00Z"),
                Some(latest),
                None,
                Ok((t("2026-11-28T00:00:00Z"), t("2026-11-28T00:00:00Z"), false)),
            ),
            (
                "within tolerance: the ratchet stays",
                latest - SignedDuration::from_mins(4),
                Some(latest),
                None,
                Ok((latest - SignedDuration::from_mins(4), latest, false)),
            ),
            (
                "behind, nothing trusted",
                right,
                Some(latest),
                None,
                Err("confirms the clock"),
            ),
            (
                "behind, trusted time agrees: recovered",
                right,
                Some(latest),
                net("2026-11-24T10:03:00Z"),
                Ok((right, right, true)),
            ),
            (
                "1970, network time past the ratchet",
                epoch,
                Some(latest),
                net("2026-11-30T08:00:00Z"),
                Ok((t("2026-11-30T08:00:00Z"), t("2026-11-30T08:00:00Z"), false)),
            ),
            (
                "1970, network time behind the ratchet: a replay is not let in",
                epoch,
                Some(latest),
                net("2026-01-01T00:00:00Z"),
                Err("confirms neither"),
            ),
            (
                "one source far in the future",
                epoch,
                Some(latest),
                net("2030-01-01T00:00:00Z"),
                Err("confirms neither"),
            ),
            (
                "one source just inside the bound",
                epoch,
                Some(latest),
                net("2027-12-31T00:00:00Z"),
                Ok((t("2027-12-31T00:00:00Z"), t("2027-12-31T00:00:00Z"), false)),
            ),
            (
                "no overflow at the end of time",
                epoch,
                Some(Timestamp::MAX),
                net("2026-01-01T00:00:00Z"),
                Err("confirms neither"),
            ),
        ];
        for (what, system, ratchet, trusted, want) in cases {
            match (judge(system, ratchet, trusted), want) {
                (
                    Verdict::Use {
                        now,
                        ratchet,
                        recovered,
                    },
                    Ok(w),
                ) => assert_eq!((now, ratchet, recovered), w, "{what}"),
                (Verdict::Refuse(m), Err(frag)) => {
                    assert!(m.contains(frag), "{what}: {m}");
                    assert!(m.contains("resume"), "{what}: says what fixes it: {m}");
                }
                (got, want) => panic!("{what}: got {got:?}, want {want:?}"),
            }
        }
    }
}
