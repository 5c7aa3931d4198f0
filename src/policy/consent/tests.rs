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
