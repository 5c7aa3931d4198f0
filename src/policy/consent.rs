//! The user's say (FS.25 COM-0040/0050, ETSI 5.3-3/5.3-13): how long an update may be
//! postponed, when the device may install, and when it may reboot.
//!
//! Pure rules: `now`, the time zone and every setting are arguments, nothing is read here.
//! The engine applies them (`src/engine/control.rs`).

use std::fmt;

use jiff::civil::Time;
use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp, ToSpan};
use serde::{Deserialize, Serialize};

/// A daily maintenance window in local time, `"HH:MM-HH:MM"`. A window whose end is not
/// after its start crosses midnight (`"23:00-01:00"`); equal ends are refused because they
/// mean either "never" or "always" and a reader cannot tell which.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub start: Time,
    pub end: Time,
}

impl Window {
    /// Parses `"HH:MM-HH:MM"` strictly (24-hour clock, two digits each).
    pub fn parse(s: &str) -> Result<Window, String> {
        let bad = || format!("invalid window {s:?}: expected HH:MM-HH:MM, e.g. 02:00-04:00");
        let (a, b) = s.split_once('-').ok_or_else(bad)?;
        let start = parse_hhmm(a).ok_or_else(bad)?;
        let end = parse_hhmm(b).ok_or_else(bad)?;
        if start == end {
            return Err(format!(
                "invalid window {s:?}: start and end are equal (leave the key out to allow any time)"
            ));
        }
        Ok(Window { start, end })
    }

    /// Whether local wall-clock time `t` lies inside the window (start inclusive, end
    /// exclusive).
    pub fn contains(&self, t: Time) -> bool {
        if self.start < self.end {
            self.start <= t && t < self.end
        } else {
            t >= self.start || t < self.end
        }
    }

    /// How long the window is open each day.
    pub fn length(&self) -> SignedDuration {
        let secs = |t: Time| i64::from(t.hour()) * 3600 + i64::from(t.minute()) * 60;
        SignedDuration::from_secs((secs(self.end) - secs(self.start)).rem_euclid(86_400))
    }

    /// The window with its opening moved later by `by` (a per-device spread, see
    /// [`super::spread`]), by at most half its length so every device keeps half the window.
    pub fn shifted(&self, by: SignedDuration) -> Window {
        let by = by.clamp(SignedDuration::ZERO, self.length() / 2);
        Window {
            start: self.start.wrapping_add(by),
            end: self.end,
        }
    }

    /// `now` when inside the window, otherwise the next time the window opens.
    pub fn next_open(&self, now: Timestamp, tz: &TimeZone) -> Timestamp {
        let zoned = now.to_zoned(tz.clone());
        if self.contains(zoned.time()) {
            return now;
        }
        let today = zoned.date();
        for days in 0..=2 {
            let Ok(date) = today.checked_add(days.days()) else {
                break;
            };
            // A start inside a DST gap resolves to the instant after the gap (jiff's
            // "compatible" rule), which is still inside the window.
            if let Ok(at) = date.to_datetime(self.start).to_zoned(tz.clone())
                && at.timestamp() > now
            {
                return at.timestamp();
            }
        }
        // Unreachable for valid windows; a day later is a safe answer.
        now + SignedDuration::from_hours(24)
    }
}

impl fmt::Display for Window {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:02}:{:02}-{:02}:{:02}",
            self.start.hour(),
            self.start.minute(),
            self.end.hour(),
            self.end.minute()
        )
    }
}

fn parse_hhmm(s: &str) -> Option<Time> {
    let b = s.as_bytes();
    if b.len() != 5
        || b[2] != b':'
        || !b
            .iter()
            .enumerate()
            .all(|(i, c)| i == 2 || c.is_ascii_digit())
    {
        return None;
    }
    let h: i8 = s[..2].parse().ok()?;
    let m: i8 = s[3..].parse().ok()?;
    Time::new(h, m, 0, 0).ok()
}

/// How far the user may push an update back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PostponeBounds {
    pub max: SignedDuration,
    /// Shorter bound while the update on offer fixes a critical vulnerability.
    pub max_critical: SignedDuration,
}

/// A postponement of automatic installation (COM-0040's user choice, ETSI 5.3-6), bounded
/// per update, not per call: repeated `Postpone` calls cannot push an update back beyond
/// `since + max`, and a critical fix on offer caps it to `max_critical` after the fix
/// arrived, even when the user postponed before it did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Postponement {
    /// When the user first postponed; later postpones keep it, an installation ends it.
    pub since: Timestamp,
    /// The time the user asked for.
    pub until: Timestamp,
    /// When a critical fix was first on offer during this postponement.
    #[serde(default)]
    pub critical_since: Option<Timestamp>,
}

impl Postponement {
    /// The latest time any postponement of this update may reach.
    pub fn limit(&self, bounds: &PostponeBounds) -> Timestamp {
        let general = add(self.since, bounds.max);
        match self.critical_since {
            Some(c) => general.min(add(c.max(self.since), bounds.max_critical)),
            None => general,
        }
    }

    /// Until when installation waits: the time asked for, capped by [`Self::limit`].
    pub fn effective_until(&self, bounds: &PostponeBounds) -> Timestamp {
        self.until.min(self.limit(bounds))
    }

    /// A critical fix is on offer at `now`: the critical bound applies from then on.
    pub fn critical_arrived(self, now: Timestamp) -> Postponement {
        Postponement {
            critical_since: self.critical_since.or(Some(now)),
            ..self
        }
    }
}

fn add(t: Timestamp, d: SignedDuration) -> Timestamp {
    t.checked_add(d).unwrap_or(Timestamp::MAX)
}

/// Why a postponement was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot postpone by {asked}: at most {bound} {what}")]
pub struct PostponeRefused {
    pub asked: String,
    pub bound: String,
    pub what: String,
}

/// The postponement after a `Postpone(seconds)` request (`0` ends it early, but the update's
/// total still counts from the first postponement).
///
/// `current` is the postponement on record; `offer_waiting` says an update is on offer (then
/// the record is this update's, even when its time has passed); `critical` says the update on
/// offer fixes a critical vulnerability.
pub fn postpone(
    now: Timestamp,
    seconds: u64,
    current: Option<Postponement>,
    offer_waiting: bool,
    critical: bool,
    bounds: &PostponeBounds,
) -> Result<Option<Postponement>, PostponeRefused> {
    // With nothing on offer an expired postponement is over: the next one starts afresh.
    let current = current.filter(|p| offer_waiting || p.effective_until(bounds) > now);
    if seconds == 0 {
        return Ok(current.map(|p| Postponement { until: now, ..p }));
    }
    let mut base = current.unwrap_or(Postponement {
        since: now,
        until: now,
        critical_since: None,
    });
    if critical {
        base = base.critical_arrived(now);
    }
    let (bound, what) = if base.critical_since.is_some() {
        (
            bounds.max_critical,
            "while a critical security update is waiting",
        )
    } else {
        (bounds.max, "in total for a security update")
    };
    let limit = base.limit(bounds);
    let refused = || PostponeRefused {
        asked: format!("{seconds}s"),
        bound: format!("{:#} ({}s)", bound, bound.as_secs()),
        what: format!(
            "{what} (postponed since {}: it installs at {limit} at the latest)",
            base.since
        ),
    };
    let asked = i64::try_from(seconds)
        .ok()
        .map(SignedDuration::from_secs)
        .and_then(|d| now.checked_add(d).ok())
        .filter(|t| *t <= limit)
        .ok_or_else(refused)?;
    Ok(Some(Postponement {
        until: asked,
        ..base
    }))
}

/// What stops an update that could be installed now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InstallGate {
    /// Install now.
    Go,
    /// A host inhibitor is held (e.g. the vehicle is driving).
    Inhibited,
    /// The user postponed it until then.
    Postponed(Timestamp),
    /// Automatic installation is off and the user has not asked.
    WaitForUser,
}

/// Whether to install the verified update on offer now.
///
/// Inhibitors win over everything (a moving vehicle stays untouched even when its driver
/// asked); the user's explicit `Install` wins over a postponement and over auto-install off.
pub fn may_install(
    now: Timestamp,
    auto_install: bool,
    postponed_until: Option<Timestamp>,
    user_asked: bool,
    inhibited: bool,
) -> InstallGate {
    if inhibited {
        return InstallGate::Inhibited;
    }
    if user_asked {
        return InstallGate::Go;
    }
    if !auto_install {
        return InstallGate::WaitForUser;
    }
    match postponed_until {
        Some(until) if until > now => InstallGate::Postponed(until),
        _ => InstallGate::Go,
    }
}

/// Whether and when to reboot into an installed update.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RebootGate {
    /// Reboot now.
    Go,
    /// Reboot at this time (a scheduled consent, or the maintenance window's next opening).
    At(Timestamp),
    /// Reboot at this time because the installed fix has waited for a reboot past the
    /// deadline (the maintenance window's first opening after it).
    Deadline(Timestamp),
    /// A host inhibitor is held; reboot once released (`then` is when it would have been).
    Inhibited { then: Timestamp },
    /// No consent, no automatic reboot and no deadline: wait for `Reboot`/`ScheduleReboot`.
    WaitForUser,
}

/// The inputs of [`may_reboot`].
#[derive(Debug, Clone)]
pub struct RebootInputs<'a> {
    pub now: Timestamp,
    /// The user consented to a reboot at this time (`Reboot` = now, `ScheduleReboot(t)`).
    pub consent: Option<Timestamp>,
    /// The integrator allowed automatic reboots (`[install] auto_reboot`).
    pub auto_reboot: bool,
    /// Automatic reboots only inside this window.
    pub window: Option<&'a Window>,
    pub tz: &'a TimeZone,
    pub inhibited: bool,
    /// An installed fix that is not running protects nothing (ETSI 5.3-8): from this time on
    /// the device reboots in the maintenance window even without consent or `auto_reboot`.
    /// `None`: no deadline.
    pub deadline: Option<Timestamp>,
}

/// Reboots happen with consent, or — when automatic reboots are allowed, or once the
/// deadline has passed — inside the maintenance window (or at any time without one); never
/// while an inhibitor is held.
pub fn may_reboot(i: &RebootInputs<'_>) -> RebootGate {
    let in_window = |from: Timestamp| i.window.map_or(from, |w| w.next_open(from, i.tz));
    let automatic = i.auto_reboot.then(|| in_window(i.now));
    let forced = i.deadline.map(|d| in_window(d.max(i.now)));
    let Some(when) = [i.consent, automatic, forced].into_iter().flatten().min() else {
        return RebootGate::WaitForUser;
    };
    if i.inhibited {
        RebootGate::Inhibited { then: when }
    } else if when <= i.now {
        RebootGate::Go
    } else if Some(when) == forced && Some(when) != i.consent && Some(when) != automatic {
        RebootGate::Deadline(when)
    } else {
        RebootGate::At(when)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn hm(h: i8, m: i8) -> Time {
        Time::new(h, m, 0, 0).unwrap()
    }

    #[test]
    fn windows_parse_strictly() {
        let ok = [
            ("02:00-04:00", hm(2, 0), hm(4, 0)),
            ("23:30-01:15", hm(23, 30), hm(1, 15)),
            ("00:00-23:59", hm(0, 0), hm(23, 59)),
        ];
        for (s, start, end) in ok {
            assert_eq!(Window::parse(s), Ok(Window { start, end }), "{s}");
            assert_eq!(Window::parse(s).unwrap().to_string(), s);
        }
        for bad in [
            "",
            "02:00",
            "2:00-4:00",
            "02:00-24:00",
            "02:60-03:00",
            "02:00-02:00",
            "02:00–04:00",
            "-02:00-04:00",
            "02:00-04:00-05:00",
            "aa:bb-cc:dd",
            "02:00 - 04:00",
            "+2:00-04:00",
            "٠٢:٠٠-٠٤:٠٠",
        ] {
            assert!(Window::parse(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn window_contains_and_next_open() {
        let utc = TimeZone::UTC;
        let day = Window::parse("02:00-04:00").unwrap();
        let night = Window::parse("23:00-01:00").unwrap();
        let table = [
            (&day, "2026-11-27T01:59:59Z", false, "2026-11-27T02:00:00Z"),
            (&day, "2026-11-27T02:00:00Z", true, "2026-11-27T02:00:00Z"),
            (&day, "2026-11-27T03:59:00Z", true, "2026-11-27T03:59:00Z"),
            (&day, "2026-11-27T04:00:00Z", false, "2026-11-28T02:00:00Z"),
            (
                &night,
                "2026-11-27T22:00:00Z",
                false,
                "2026-11-27T23:00:00Z",
            ),
            (&night, "2026-11-27T23:30:00Z", true, "2026-11-27T23:30:00Z"),
            (&night, "2026-11-28T00:30:00Z", true, "2026-11-28T00:30:00Z"),
            (
                &night,
                "2026-11-28T01:00:00Z",
                false,
                "2026-11-28T23:00:00Z",
            ),
        ];
        for (w, now, inside, next) in table {
            let now = t(now);
            let time = now.to_zoned(utc.clone()).time();
            assert_eq!(w.contains(time), inside, "{w} at {now}");
            assert_eq!(w.next_open(now, &utc), t(next), "{w} at {now}");
        }
    }

    #[test]
    fn a_shifted_window_opens_later_by_at_most_half_its_length() {
        let w = Window::parse("23:00-01:00").unwrap();
        assert_eq!(w.length(), SignedDuration::from_hours(2));
        // (shift, opening)
        let table = [
            (SignedDuration::ZERO, hm(23, 0)),
            (SignedDuration::from_mins(17), hm(23, 17)),
            (SignedDuration::from_mins(60), hm(0, 0)),
            (SignedDuration::from_hours(5), hm(0, 0)),
            (SignedDuration::from_secs(-60), hm(23, 0)),
        ];
        for (by, start) in table {
            let s = w.shifted(by);
            assert_eq!((s.start, s.end), (start, hm(1, 0)), "{by:?}");
        }
    }

    #[test]
    fn window_follows_the_local_time_zone() {
        let berlin = TimeZone::get("Europe/Berlin").unwrap_or(TimeZone::fixed(jiff::tz::offset(1)));
        let w = Window::parse("02:00-04:00").unwrap();
        // 01:30 UTC is 02:30 in Berlin in winter (UTC+1): inside.
        let now = t("2026-11-27T01:30:00Z");
        assert_eq!(w.next_open(now, &berlin), now);
        // 03:30 UTC is 04:30 local: outside; next opening is 02:00 local = 01:00 UTC.
        assert_eq!(
            w.next_open(t("2026-11-27T03:30:00Z"), &berlin),
            t("2026-11-28T01:00:00Z")
        );
    }

    fn bounds() -> PostponeBounds {
        PostponeBounds {
            max: SignedDuration::from_hours(7 * 24),
            max_critical: SignedDuration::from_hours(24),
        }
    }

    #[test]
    fn postponement_is_bounded_and_shorter_for_critical_updates() {
        let now = t("2026-11-27T12:00:00Z");
        let b = bounds();
        let week = 7 * 24 * 3600;
        // (seconds, critical) → Ok(postponed until) or Err(part of the message)
        type Want<'a> = Result<Option<&'a str>, &'a str>;
        let table: [(u64, bool, Want); 8] = [
            (0, false, Ok(None)),
            (0, true, Ok(None)),
            (3600, false, Ok(Some("2026-11-27T13:00:00Z"))),
            (week, false, Ok(Some("2026-12-04T12:00:00Z"))),
            (week + 1, false, Err("at most 168h")),
            (86400, true, Ok(Some("2026-11-28T12:00:00Z"))),
            (86401, true, Err("while a critical")),
            (u64::MAX, false, Err("at most")),
        ];
        for (secs, critical, want) in table {
            let got = postpone(now, secs, None, true, critical, &b);
            match want {
                Ok(w) => assert_eq!(
                    got.map(|p| p.map(|p| p.effective_until(&b))),
                    Ok(w.map(t)),
                    "{secs} {critical}"
                ),
                Err(text) => {
                    let e = got.expect_err("refused").to_string();
                    assert!(e.contains(text), "{secs} {critical}: {e}");
                }
            }
        }
    }

    #[test]
    fn postponement_is_bounded_per_update_not_per_call() {
        let b = bounds();
        let day = 86_400;
        let start = t("2026-11-01T00:00:00Z");
        // Six postpones by two days, each made when the last one ends: the bound is a week
        // from the first one, whatever the calls.
        let mut current = None;
        let mut now = start;
        let mut granted = Vec::new();
        for _ in 0..6 {
            match postpone(now, 2 * day, current, true, false, &b) {
                Ok(p) => {
                    let p = p.unwrap();
                    granted.push(p.until);
                    now = p.until;
                    current = Some(p);
                }
                Err(e) => {
                    assert!(e.to_string().contains("2026-11-08T00:00:00Z"), "{e}");
                    break;
                }
            }
        }
        assert_eq!(
            granted,
            [
                t("2026-11-03T00:00:00Z"),
                t("2026-11-05T00:00:00Z"),
                t("2026-11-07T00:00:00Z")
            ]
        );
        // What is left may still be taken, not a second more.
        let p = postpone(now, day, current, true, false, &b)
            .unwrap()
            .unwrap();
        assert_eq!(p.until, t("2026-11-08T00:00:00Z"));
        assert!(postpone(now, day + 1, current, true, false, &b).is_err());
        // Clearing does not reset the total while the update waits...
        let cleared = postpone(now, 0, Some(p), true, false, &b).unwrap().unwrap();
        assert_eq!(cleared.effective_until(&b), now);
        assert!(postpone(now, 2 * day, Some(cleared), true, false, &b).is_err());
        // ... but once nothing is on offer and the postponement is over, the next one is new.
        let later = t("2026-12-01T00:00:00Z");
        let fresh = postpone(later, 2 * day, Some(p), false, false, &b)
            .unwrap()
            .unwrap();
        assert_eq!(fresh.since, later);
    }

    #[test]
    fn a_critical_fix_caps_an_earlier_postponement() {
        let b = bounds();
        let since = t("2026-11-01T00:00:00Z");
        let week = Postponement {
            since,
            until: t("2026-11-08T00:00:00Z"),
            critical_since: None,
        };
        // (critical fix arrives at, effective until)
        let table = [
            ("2026-11-01T00:00:00Z", "2026-11-02T00:00:00Z"),
            ("2026-11-03T06:00:00Z", "2026-11-04T06:00:00Z"),
            // Arriving a day before the end: the end stays.
            ("2026-11-07T00:00:00Z", "2026-11-08T00:00:00Z"),
            ("2026-11-07T12:00:00Z", "2026-11-08T00:00:00Z"),
        ];
        for (arrives, until) in table {
            let p = week.critical_arrived(t(arrives));
            assert_eq!(p.effective_until(&b), t(until), "{arrives}");
            // A second arrival (the next check) does not restart the critical bound.
            let again = p.critical_arrived(t("2026-11-07T23:00:00Z"));
            assert_eq!(again.effective_until(&b), t(until), "{arrives} again");
        }
        // Postponing further while the critical fix waits: only within its bound.
        let p = week.critical_arrived(t("2026-11-03T00:00:00Z"));
        let now = t("2026-11-03T12:00:00Z");
        let e = postpone(now, 86_400, Some(p), true, true, &b).unwrap_err();
        assert!(e.to_string().contains("critical"), "{e}");
        let ok = postpone(now, 12 * 3600, Some(p), true, true, &b)
            .unwrap()
            .unwrap();
        assert_eq!(ok.effective_until(&b), t("2026-11-04T00:00:00Z"));
    }

    #[test]
    fn install_gate_table() {
        let now = t("2026-11-27T12:00:00Z");
        let later = t("2026-11-28T12:00:00Z");
        let earlier = t("2026-11-26T12:00:00Z");
        use InstallGate::*;
        // (auto, postponed, user asked, inhibited) → gate
        let table = [
            ((true, None, false, false), Go),
            ((true, Some(later), false, false), Postponed(later)),
            ((true, Some(earlier), false, false), Go),
            ((true, Some(now), false, false), Go),
            ((false, None, false, false), WaitForUser),
            ((false, Some(later), true, false), Go),
            ((true, Some(later), true, false), Go),
            ((true, None, false, true), Inhibited),
            ((true, None, true, true), Inhibited),
            ((false, None, true, true), Inhibited),
        ];
        for ((auto, post, asked, inh), want) in table {
            assert_eq!(
                may_install(now, auto, post, asked, inh),
                want,
                "{auto} {post:?} {asked} {inh}"
            );
        }
    }

    #[test]
    fn reboot_gate_table() {
        let utc = TimeZone::UTC;
        let now = t("2026-11-27T12:00:00Z");
        let soon = t("2026-11-27T13:00:00Z");
        let outside = Window::parse("02:00-04:00").unwrap();
        let inside = Window::parse("11:00-13:00").unwrap();
        let next_open = t("2026-11-28T02:00:00Z");
        use RebootGate::*;
        // (consent, auto_reboot, window, inhibited) → gate
        let table = [
            ((None, false, None, false), WaitForUser),
            ((None, false, Some(&outside), false), WaitForUser),
            ((Some(now), false, None, false), Go),
            ((Some(now), false, Some(&outside), false), Go),
            ((Some(soon), false, None, false), At(soon)),
            ((None, true, None, false), Go),
            ((None, true, Some(&inside), false), Go),
            ((None, true, Some(&outside), false), At(next_open)),
            ((Some(soon), true, Some(&outside), false), At(soon)),
            ((Some(now), false, None, true), Inhibited { then: now }),
            (
                (None, true, Some(&outside), true),
                Inhibited { then: next_open },
            ),
            ((None, false, None, true), WaitForUser),
        ];
        for ((consent, auto_reboot, window, inhibited), want) in table {
            let got = may_reboot(&RebootInputs {
                now,
                consent,
                auto_reboot,
                window,
                tz: &utc,
                inhibited,
                deadline: None,
            });
            assert_eq!(
                got, want,
                "{consent:?} {auto_reboot} {window:?} {inhibited}"
            );
        }
    }

    #[test]
    fn a_reboot_deadline_forces_the_reboot_into_the_next_window() {
        let utc = TimeZone::UTC;
        let now = t("2026-11-27T12:00:00Z");
        let past = t("2026-11-27T11:00:00Z");
        let soon = t("2026-11-27T13:00:00Z");
        let window = Window::parse("02:00-04:00").unwrap();
        let inside_now = Window::parse("11:00-13:00").unwrap();
        use RebootGate::*;
        // (deadline, window, consent, auto_reboot, inhibited) → gate
        type Case<'a> = (
            Option<Timestamp>,
            Option<&'a Window>,
            Option<Timestamp>,
            bool,
            bool,
        );
        let table: [(Case, RebootGate); 10] = [
            ((None, Some(&window), None, false, false), WaitForUser),
            // Deadline ahead: announced for the first opening after it.
            (
                (Some(soon), Some(&window), None, false, false),
                Deadline(t("2026-11-28T02:00:00Z")),
            ),
            // Deadline passed, window closed: its next opening.
            (
                (Some(past), Some(&window), None, false, false),
                Deadline(t("2026-11-28T02:00:00Z")),
            ),
            // Deadline passed inside the window: now.
            ((Some(past), Some(&inside_now), None, false, false), Go),
            // No window: at the deadline.
            ((Some(soon), None, None, false, false), Deadline(soon)),
            ((Some(past), None, None, false, false), Go),
            // Inhibitors still win.
            (
                (Some(past), None, None, false, true),
                Inhibited { then: now },
            ),
            // Consent earlier than the deadline's window: the consent.
            (
                (Some(past), Some(&window), Some(soon), false, false),
                At(soon),
            ),
            // Deadline in the window exactly at its opening: the same time as auto_reboot.
            (
                (Some(past), Some(&window), None, true, false),
                At(t("2026-11-28T02:00:00Z")),
            ),
            // A deadline days ahead waits for the window after it, not the next one.
            (
                (
                    Some(t("2026-11-30T03:00:00Z")),
                    Some(&window),
                    None,
                    false,
                    false,
                ),
                Deadline(t("2026-11-30T03:00:00Z")),
            ),
        ];
        for ((deadline, window, consent, auto_reboot, inhibited), want) in table {
            let got = may_reboot(&RebootInputs {
                now,
                consent,
                auto_reboot,
                window,
                tz: &utc,
                inhibited,
                deadline,
            });
            assert_eq!(
                got, want,
                "{deadline:?} {window:?} {consent:?} {auto_reboot}"
            );
        }
    }
}
