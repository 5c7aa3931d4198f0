//! Timeliness over the doubles (issue 13): a security fix held back by link cost, the user's
//! postponements or a missing reboot still takes effect within bounded time; a fleet does
//! not move in lockstep.

use super::*;
use crate::config::{Dur, SpreadConfig};
use crate::engine::control::RebootPlan;
use crate::metadata::schema::Severity;

const DAY: u64 = 86_400;

fn at(s: &str) -> Timestamp {
    s.parse().unwrap()
}

/// The device's clock after `t0` plus what Tokio's paused time has advanced since.
fn elapsed_since(t0: tokio::time::Instant) -> SignedDuration {
    SignedDuration::try_from(t0.elapsed()).unwrap()
}

/// [`wait_for`] with a longer horizon (paused time: costs nothing).
async fn wait_days(handle: &Handle, days: u64, what: &str, f: impl Fn(&Status) -> bool) -> Status {
    let mut rx = handle.subscribe();
    let found = tokio::time::timeout(Duration::from_secs(days * DAY), async {
        loop {
            if f(&rx.borrow_and_update()) || rx.changed().await.is_err() {
                return;
            }
        }
    })
    .await;
    let st = handle.status();
    assert!(
        found.is_ok() && f(&st),
        "no {what} within {days} days: {st:#?}"
    );
    st
}

/// A metered-only device (NetworkManager guesses cellular links metered) offered a fix
/// rated high, below the default override severity (critical).
fn metered_high_fix() -> Setup {
    let mut setup = Setup::default();
    let mut b = bundle("1.0.1", "1.0", date(2026, 11, 1));
    b.meta.cves[0].severity = Severity::High;
    *setup.metadata.fallback.lock().unwrap() = Some(verified(vec![b]));
    setup.network = NetworkInfo {
        availability: Availability::Running,
        metered: Some(true),
    };
    setup
}

fn budget_used(rig: &Rig) -> Option<String> {
    Store::open(&rig.db).unwrap().state("link_budget").unwrap()
}

#[tokio::test(start_paused = true)]
async fn a_metered_only_device_installs_a_high_severity_fix_within_the_maximum_deferral() {
    let rig = start(metered_high_fix());
    let t0 = tokio::time::Instant::now();
    let mut notices = rig.handle.notices();
    rig.handle.check_now().await.unwrap();
    let st = wait_for(&rig.handle, "deferred", |s| {
        s.state == UpdateState::Deferred
    })
    .await;
    // Announced although deferred: why, until when, what taking it now costs.
    let offer = st.available.expect("a deferred update is on offer");
    assert!(
        offer.deferred.starts_with("metered connection"),
        "{offer:?}"
    );
    assert!(offer.deferred.contains("costs 4096 bytes"), "{offer:?}");
    let limit = at(START) + SignedDuration::from_hours(7 * 24);
    assert_eq!(offer.deferred_until, Some(limit));
    match notices.try_recv() {
        Ok(Notice::UpdateAvailable(o)) => assert_eq!(o.deferred, offer.deferred),
        other => panic!("expected UpdateAvailable, got {other:?}"),
    }
    assert!(rig.fetcher.fetched.lock().unwrap().is_empty());

    // Daily checks keep it deferred up to the limit, not a day longer.
    tokio::time::sleep(Duration::from_secs(7 * DAY - 3600)).await;
    assert!(rig.fetcher.fetched.lock().unwrap().is_empty());
    assert_eq!(rig.handle.status().state, UpdateState::Deferred);
    wait_days(&rig.handle, 1, "reboot-required", |s| {
        s.state == UpdateState::RebootRequired
    })
    .await;
    let took = elapsed_since(t0);
    assert!(
        took <= SignedDuration::from_hours(7 * 24) + SignedDuration::from_mins(1),
        "installed after {took:?}"
    );
    assert_eq!(rig.installs(), 1);
    // Over the metered link: the bytes count, and it was announced once.
    assert_eq!(
        budget_used(&rig).as_deref(),
        Some(r#"{"month":"2026-12","bytes":4096}"#)
    );
    while let Ok(n) = notices.try_recv() {
        assert!(
            !matches!(n, Notice::UpdateAvailable(_)),
            "announced twice: {n:?}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn the_maximum_deferral_survives_a_restart() {
    let rig = start(metered_high_fix());
    rig.handle.check_now().await.unwrap();
    wait_for(&rig.handle, "deferred", |s| {
        s.state == UpdateState::Deferred
    })
    .await;
    let db = rig.db.clone();
    let mut rig = rig;
    rig.stop().await;
    // Restarted (its clock starts at START again): the wait still ends at START + 7d.
    let rig = start(Setup {
        db: Some(db),
        ..metered_high_fix()
    });
    rig.handle.check_now().await.unwrap();
    let st = wait_for(&rig.handle, "deferred", |s| {
        s.state == UpdateState::Deferred
    })
    .await;
    assert_eq!(
        st.available.unwrap().deferred_until,
        Some(at(START) + SignedDuration::from_hours(7 * 24))
    );
}

#[tokio::test(start_paused = true)]
async fn install_takes_a_deferred_update_now_over_the_metered_link() {
    let rig = start(metered_high_fix());
    rig.handle.check_now().await.unwrap();
    wait_for(&rig.handle, "deferred", |s| {
        s.state == UpdateState::Deferred
    })
    .await;
    let t0 = tokio::time::Instant::now();
    rig.handle.control(Request::Install).await.unwrap();
    let st = wait_for(&rig.handle, "reboot-required", |s| {
        s.state == UpdateState::RebootRequired
    })
    .await;
    assert!(t0.elapsed() < Duration::from_secs(60));
    assert_eq!(rig.installs(), 1);
    assert_eq!(st.source.deferred, "");
    assert_eq!(
        budget_used(&rig).as_deref(),
        Some(r#"{"month":"2026-11","bytes":4096}"#)
    );
}

#[tokio::test(start_paused = true)]
async fn repeated_postpones_stop_at_the_bound() {
    // Rated high: the general bound (7 days) applies, not the critical one.
    let rig = start(Setup {
        network: NetworkInfo::default(),
        ..metered_high_fix()
    });
    let t0 = tokio::time::Instant::now();
    // Two more days, every day: allowed while within a week of the first postponement.
    let mut refused = None;
    for day in 0..7u64 {
        match rig.handle.control(Request::Postpone(2 * DAY)).await {
            Ok(()) => {}
            Err(EngineError::PolicyRefused(m)) => {
                refused = Some((day, m));
                break;
            }
            Err(e) => panic!("{e}"),
        }
        if day == 0 {
            rig.handle.check_now().await.unwrap();
            wait_for(&rig.handle, "deferred", |s| {
                s.state == UpdateState::Deferred
            })
            .await;
        }
        tokio::time::sleep(Duration::from_secs(DAY)).await;
        assert_eq!(rig.installs(), 0, "day {day}");
    }
    let (day, message) = refused.expect("a postponement was refused");
    assert_eq!(day, 6, "{message}");
    let limit = at(START) + SignedDuration::from_hours(7 * 24);
    assert!(message.contains(&limit.to_string()), "{message}");
    assert_eq!(rig.handle.status().postponed_until, Some(limit));
    // It installs at the bound.
    wait_for(&rig.handle, "reboot-required", |s| {
        s.state == UpdateState::RebootRequired
    })
    .await;
    let took = elapsed_since(t0);
    assert!(
        took <= SignedDuration::from_hours(7 * 24) + SignedDuration::from_mins(1),
        "{took:?}"
    );
    // The installation ended that postponement: the next update's starts afresh.
    assert_eq!(rig.handle.status().postponed_until, None);
    rig.handle.control(Request::Postpone(DAY)).await.unwrap();
}

/// The next RebootPending notice within 10 (paused) days; other notices are skipped.
async fn next_plan(notices: &mut broadcast::Receiver<Notice>) -> RebootPlan {
    let wait = async {
        loop {
            match notices.recv().await {
                Ok(Notice::RebootPending(p)) => return p,
                Ok(_) => continue,
                Err(e) => panic!("no RebootPending: {e}"),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10 * DAY), wait)
        .await
        .expect("no RebootPending within 10 days")
}

#[tokio::test(start_paused = true)]
async fn a_reboot_required_device_reboots_in_the_window_after_the_deadline() {
    let mut setup = with_update(date(2026, 11, 1));
    // auto_reboot stays off (the default): nobody will ever reboot this gateway by hand.
    setup.config.install.reboot_deadline = Dur(SignedDuration::from_hours(48));
    setup.config.install.maintenance_window = Some("02:00-04:00".into());
    let rig = start(setup);
    let mut notices = rig.handle.notices();
    rig.handle.check_now().await.unwrap();
    wait_for(&rig.handle, "reboot-required", |s| {
        s.state == UpdateState::RebootRequired
    })
    .await;
    // Installed at 10:00 on the 27th; deadline 10:00 on the 29th; the window after it opens
    // 02:00 on the 30th. Told now, days ahead (ETSI 5.3-12).
    let reboot_at = at("2026-11-30T02:00:00Z");
    let plan = next_plan(&mut notices).await;
    assert_eq!(plan.at, Some(reboot_at), "{plan:?}");
    assert_eq!(plan.waiting_for, ["deadline", "maintenance-window"]);
    assert_eq!(plan.version, "1.0.1");
    let reboots = || rig.system.reboots.load(Ordering::SeqCst);

    // Not in the windows before the deadline (the 28th and 29th at 02:00).
    tokio::time::sleep(Duration::from_secs(2 * DAY + 15 * 3600)).await;
    assert_eq!(
        reboots(),
        0,
        "rebooted before the window after the deadline"
    );
    // An inhibitor held at the opening still wins, and the UI is told.
    let driving = rig.handle.inhibit("driving".into()).await.unwrap();
    let plan = next_plan(&mut notices).await;
    assert_eq!(plan.waiting_for, ["inhibitor"]);
    tokio::time::sleep(Duration::from_secs(90 * 60)).await; // 02:30 on the 30th
    assert_eq!(reboots(), 0, "rebooted while inhibited");
    rig.handle.control(Request::Release(driving)).await.unwrap();
    let plan = next_plan(&mut notices).await;
    assert!(plan.waiting_for.is_empty(), "{plan:?}");
    assert_eq!(reboots(), 1);
}

#[tokio::test(start_paused = true)]
async fn the_deadline_reboot_is_announced_before_it_happens() {
    let mut setup = with_update(date(2026, 11, 1));
    setup.config.install.reboot_deadline = Dur(SignedDuration::from_hours(1));
    let rig = start(setup);
    let mut notices = rig.handle.notices();
    rig.handle.check_now().await.unwrap();
    let plan = next_plan(&mut notices).await;
    assert_eq!(plan.waiting_for, ["deadline"]);
    assert_eq!(plan.at, Some(at(START) + SignedDuration::from_hours(1)));
    assert_eq!(rig.system.reboots.load(Ordering::SeqCst), 0);
    // At the deadline (no window): announced as happening now, then rebooted.
    let plan = next_plan(&mut notices).await;
    assert!(plan.waiting_for.is_empty(), "{plan:?}");
    tokio::task::yield_now().await;
    assert_eq!(rig.system.reboots.load(Ordering::SeqCst), 1);
}

// ---- spread ---------------------------------------------------------------------------

fn spread_setup(seed: u64) -> Setup {
    let mut setup = Setup {
        seed,
        ..Setup::default()
    };
    setup.config.spread = SpreadConfig {
        first_check: Dur(SignedDuration::from_mins(10)),
        wave: Dur(SignedDuration::from_hours(6)),
        approval: Dur(SignedDuration::from_hours(1)),
        window: Dur(SignedDuration::from_hours(1)),
    };
    setup
}

/// When the first check ran, the rollout wave it waits for, and when its reboot is planned.
async fn offsets(seed: u64) -> (Timestamp, Timestamp, Timestamp) {
    let wave = at(START) + SignedDuration::from_hours(48);
    let mut setup = spread_setup(seed);
    setup.config.install.auto_reboot = true;
    setup.config.install.maintenance_window = Some("02:00-04:00".into());
    let mut v = verified(vec![bundle("1.0.1", "1.0", date(2026, 11, 1))]);
    v.devices = vec![crate::metadata::client::DeviceTarget {
        name: "devices/test-gw.json".into(),
        meta: crate::metadata::schema::DeviceMeta {
            hardware_id: "test-gw".into(),
            model: "Test Gateway".into(),
            launch_date: date(2022, 1, 1),
            support_end: date(2030, 1, 1),
            replacement: None,
            wave_start: Some(wave),
        },
    }];
    *setup.metadata.fallback.lock().unwrap() = Some(v);
    let rig = start(setup);
    let mut notices = rig.handle.notices();
    let st = wait_for(&rig.handle, "the first check", |s| {
        s.source.waiting_until.is_some()
    })
    .await;
    let first = st.last_check.unwrap().at;
    let wave_wait = st.source.waiting_until.unwrap();
    let plan = next_plan(&mut notices).await;
    (first, wave_wait, plan.at.unwrap())
}

#[tokio::test(start_paused = true)]
async fn two_devices_with_different_ids_get_different_bounded_offsets() {
    let a = offsets(1).await;
    let b = offsets(2).await;
    let wave = at(START) + SignedDuration::from_hours(48);
    for (first, wave_wait, reboot) in [a, b] {
        // First check: boot delay (2 min) plus up to 10 min.
        let boot = at(START) + SignedDuration::from_mins(2);
        assert!(
            first >= boot && first <= boot + SignedDuration::from_mins(10),
            "{first}"
        );
        // Wave start: up to 6 h after the signed time, never before.
        assert!(wave_wait >= wave && wave_wait <= wave + SignedDuration::from_hours(6));
        // Window opening: up to 1 h after 02:00, inside the window.
        let opening = at("2026-11-30T02:00:00Z");
        assert!(
            reboot >= opening && reboot <= opening + SignedDuration::from_hours(1),
            "{reboot}"
        );
    }
    assert_ne!(a.0, b.0, "first checks in lockstep");
    assert_ne!(a.1, b.1, "wave starts in lockstep");
    assert_ne!(a.2, b.2, "window openings in lockstep");
}

// ---- time ------------------------------------------------------------------------------

/// A device whose manufacturer server is reached over HTTPS (its `Date` is trusted time),
/// whose ratchet is at `ratchet` and whose server answers with `Date` = `server`.
fn https_device(ratchet: &str, server: Timestamp, expires: &str) -> Setup {
    let mut setup = with_update(date(2026, 11, 1));
    setup.config.manufacturer = Some(crate::config::SourceConfig {
        url: "https://updates.example.com/".parse().unwrap(),
        root: "/etc/ssu/root.json".into(),
    });
    let mut v = setup.metadata.fallback.lock().unwrap().take().unwrap();
    v.server_time = Some(server);
    v.expires = at(expires);
    *setup.metadata.fallback.lock().unwrap() = Some(v);
    let dir = tempfile::tempdir().unwrap().keep();
    let db = dir.join("agent.db");
    Store::open(&db)
        .unwrap()
        .set_state(LATEST_KNOWN_TIME_KEY, Some(ratchet))
        .unwrap();
    setup.db = Some(db);
    setup
}

fn ratchet(rig: &Rig) -> Timestamp {
    Store::open(&rig.db)
        .unwrap()
        .state(LATEST_KNOWN_TIME_KEY)
        .unwrap()
        .unwrap()
        .parse()
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn a_ratchet_moved_by_a_clock_that_ran_ahead_recovers_when_trusted_time_agrees() {
    // Three days ahead earlier; the clock (START) is right now and the server agrees.
    let ahead = "2026-11-30T10:00:00Z";
    let rig = start(https_device(ahead, at(START), "2027-01-01T00:00:00Z"));
    rig.handle.check_now().await.unwrap();
    let st = wait_for(&rig.handle, "verified", |s| {
        s.last_check.as_ref().is_some_and(|c| c.verified)
    })
    .await;
    assert_eq!(ratchet(&rig), at(START));
    assert!(st.available.is_some() || st.state != UpdateState::Idle);
}

#[tokio::test(start_paused = true)]
async fn until_trusted_time_agrees_the_message_says_what_is_wrong_and_what_fixes_it() {
    let ahead = "2026-11-30T10:00:00Z";
    // The server's Date does not agree with the clock either (it is a day off).
    let server = at(START) - SignedDuration::from_hours(24);
    let rig = start(https_device(ahead, server, "2027-01-01T00:00:00Z"));
    rig.handle.check_now().await.unwrap();
    let st = wait_for(&rig.handle, "checked", |s| s.last_check.is_some()).await;
    let check = st.last_check.unwrap();
    assert!(!check.verified);
    assert!(
        check.message.contains("behind the latest time"),
        "{}",
        check.message
    );
    assert!(check.message.contains("resume"), "{}", check.message);
    assert_eq!(
        ratchet(&rig),
        at(ahead),
        "never moved by a disagreeing source"
    );
    assert!(st.available.is_none());
}

#[tokio::test(start_paused = true)]
async fn a_device_whose_clock_starts_in_1970_still_checks_and_refuses_replayed_metadata() {
    // The ratchet from before the power cut; the clock starts at the epoch.
    let server = at("2026-11-27T10:00:00Z");
    let mut setup = https_device("2026-11-20T00:00:00Z", server, "2027-01-01T00:00:00Z");
    setup.clock = Some(at("1970-01-01T00:00:00Z"));
    let rig = start(setup);
    rig.handle.check_now().await.unwrap();
    let st = wait_for(&rig.handle, "verified", |s| {
        s.last_check.as_ref().is_some_and(|c| c.verified)
    })
    .await;
    assert!(
        st.last_check.unwrap().message.contains("1.0.1"),
        "it found the update"
    );
    assert_eq!(ratchet(&rig), server, "the ratchet follows trusted time");

    // Replayed metadata that expired before the trusted time: refused, although the
    // device's own clock (1970) would call it fresh.
    let mut setup = https_device("2026-11-20T00:00:00Z", server, "2026-11-25T00:00:00Z");
    setup.clock = Some(at("1970-01-01T00:00:00Z"));
    let rig = start(setup);
    replay_is_refused(&rig).await;
}

#[tokio::test(start_paused = true)]
async fn a_1970_clock_checks_by_the_cellular_networks_time() {
    let epoch = at("1970-01-01T00:00:00Z");
    let network = at("2026-11-27T10:00:00Z");
    // Plain HTTP (no trusted Date): only the modem can tell the time.
    let mut setup = with_update(date(2026, 11, 1));
    setup.clock = Some(epoch);
    setup.modem.network_time_offset_s = Some(network.duration_since(epoch).as_secs());
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("agent.db");
    Store::open(&db)
        .unwrap()
        .set_state(LATEST_KNOWN_TIME_KEY, Some("2026-11-20T00:00:00Z"))
        .unwrap();
    setup.db = Some(db);
    let rig = start(setup);
    rig.handle.check_now().await.unwrap();
    wait_for(&rig.handle, "verified", |s| {
        s.last_check.as_ref().is_some_and(|c| c.verified)
    })
    .await;
    assert_eq!(ratchet(&rig), network);
    // Without the modem's time the same device does not check at all.
    let mut setup = with_update(date(2026, 11, 1));
    setup.clock = Some(epoch);
    setup.db = Some(rig.db.clone());
    drop(rig);
    let rig = start(setup);
    rig.handle.check_now().await.unwrap();
    let st = wait_for(&rig.handle, "checked", |s| s.last_check.is_some()).await;
    assert!(!st.last_check.unwrap().verified);
    assert_eq!(rig.metadata.fetches.load(Ordering::SeqCst), 0);
}

/// A device that has never verified anything (no ratchet) and starts in 1970.
fn new_device_in_1970(network: Option<Timestamp>, expires: &str) -> Setup {
    let epoch = at("1970-01-01T00:00:00Z");
    let mut setup = with_update(date(2026, 11, 1));
    setup.clock = Some(epoch);
    setup.modem.network_time_offset_s = network.map(|n| n.duration_since(epoch).as_secs());
    let mut v = setup.metadata.fallback.lock().unwrap().take().unwrap();
    v.expires = at(expires);
    *setup.metadata.fallback.lock().unwrap() = Some(v);
    setup
}

#[tokio::test(start_paused = true)]
async fn a_new_device_in_1970_checks_by_the_networks_time_and_refuses_replayed_metadata() {
    let network = at("2026-11-27T10:00:00Z");
    let rig = start(new_device_in_1970(Some(network), "2027-01-01T00:00:00Z"));
    rig.handle.check_now().await.unwrap();
    wait_for(&rig.handle, "verified", |s| {
        s.last_check.as_ref().is_some_and(|c| c.verified)
    })
    .await;
    assert_eq!(
        ratchet(&rig),
        network,
        "the ratchet starts at the network's time"
    );

    // Metadata that expired before the network's time, fresh by the 1970 clock: a replay.
    let rig = start(new_device_in_1970(Some(network), "2026-11-20T00:00:00Z"));
    replay_is_refused(&rig).await;

    // No time from anywhere: nothing is fetched, and the message says what would fix it.
    let rig = start(new_device_in_1970(None, "2027-01-01T00:00:00Z"));
    rig.handle.check_now().await.unwrap();
    let st = wait_for(&rig.handle, "checked", |s| s.last_check.is_some()).await;
    let check = st.last_check.unwrap();
    assert!(!check.verified);
    assert!(
        check.message.contains("never been set"),
        "{}",
        check.message
    );
    assert!(check.message.contains("resume"), "{}", check.message);
    assert_eq!(rig.metadata.fetches.load(Ordering::SeqCst), 0);
    assert!(st.available.is_none());
}

/// A check of metadata that expired before the trusted time: not verified, nothing offered
/// or installed, and the message says why.
async fn replay_is_refused(rig: &Rig) {
    rig.handle.check_now().await.unwrap();
    let st = wait_for(&rig.handle, "checked", |s| s.last_check.is_some()).await;
    let check = st.last_check.unwrap();
    assert!(!check.verified);
    assert!(
        check.message.contains("replayed or stale"),
        "{}",
        check.message
    );
    assert!(st.available.is_none());
    assert_eq!(rig.installs(), 0);
}
