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
mod tests;
