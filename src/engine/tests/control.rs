//! The user's and host's say over the update, over the same doubles: postponement,
//! Install() and auto-install, inhibitors, reboot consent and the maintenance window, the
//! support period.

use super::*;
use crate::engine::control::RebootPlan;
use crate::metadata::client::DeviceTarget;
use crate::metadata::schema::{DeviceMeta, Replacement};

fn reboots(rig: &Rig) -> usize {
    rig.system.reboots.load(Ordering::SeqCst)
}

async fn wait_state(rig: &Rig, state: UpdateState) -> Status {
    wait_for(&rig.handle, state.as_str(), |s| s.state == state).await
}

/// The next RebootPending notice waiting for `what` (earlier plans are skipped).
async fn next_plan_for(notices: &mut broadcast::Receiver<Notice>, what: &str) -> RebootPlan {
    loop {
        let p = next_plan(notices).await;
        if p.waiting_for.contains(&what) {
            return p;
        }
    }
}

/// The next RebootPending notice.
async fn next_plan(notices: &mut broadcast::Receiver<Notice>) -> RebootPlan {
    loop {
        match notices.recv().await {
            Ok(Notice::RebootPending(p)) => return p,
            Ok(_) => continue,
            Err(e) => panic!("no RebootPending: {e}"),
        }
    }
}

#[tokio::test(start_paused = true)]
async fn nothing_to_install_or_reboot_into_is_an_error() {
    let rig = start(Setup::default());
    for req in [
        Request::Install,
        Request::Reboot,
        Request::ScheduleReboot(1),
    ] {
        match rig.handle.control(req.clone()).await {
            Err(EngineError::NothingToInstall(_)) => {}
            other => panic!("{req:?}: {other:?}"),
        }
    }
}

#[tokio::test(start_paused = true)]
async fn install_applies_the_update_when_auto_install_is_off() {
    let rig = start(with_update(date(2026, 11, 1)));
    rig.handle
        .control(Request::SetAutoInstall(false))
        .await
        .unwrap();
    rig.handle.check_now().await.unwrap();
    wait_state(&rig, UpdateState::Available).await;
    assert_eq!(rig.installs(), 0);
    rig.handle.control(Request::Install).await.unwrap();
    wait_state(&rig, UpdateState::RebootRequired).await;
    assert_eq!(rig.installs(), 1);
    // Installed: a second Install has nothing to do, and no reboot happened without consent.
    assert!(matches!(
        rig.handle.control(Request::Install).await,
        Err(EngineError::NothingToInstall(_))
    ));
    assert_eq!(reboots(&rig), 0);
}

#[tokio::test(start_paused = true)]
async fn a_postponed_update_installs_when_the_postponement_ends() {
    let rig = start(with_update(date(2026, 11, 1)));
    rig.handle.control(Request::Postpone(3600)).await.unwrap();
    let until = rig.handle.status().postponed_until.unwrap();
    assert_eq!(
        until,
        START.parse::<Timestamp>().unwrap() + SignedDuration::from_hours(1)
    );
    rig.handle.check_now().await.unwrap();
    let st = wait_state(&rig, UpdateState::Deferred).await;
    assert!(st.available.is_some());
    assert_eq!(rig.installs(), 0);
    wait_state(&rig, UpdateState::RebootRequired).await;
    assert_eq!(rig.installs(), 1);
    assert!(rig.handle.status().last_check.unwrap().at < until);
}

#[tokio::test(start_paused = true)]
async fn a_critical_fix_caps_a_postponement_made_before_it_arrived() {
    let mut setup = with_update(date(2026, 11, 1));
    setup.config.install.max_postpone_critical = crate::config::Dur(SignedDuration::from_hours(2));
    let rig = start(setup);
    let begin: Timestamp = START.parse().unwrap();
    // No update on offer yet: the general bound (7d) applies.
    rig.handle
        .control(Request::Postpone(3 * 86400))
        .await
        .unwrap();
    assert_eq!(
        rig.handle.status().postponed_until,
        Some(begin + SignedDuration::from_hours(72))
    );
    // The critical fix arrives: the three days shrink to the critical bound from now on.
    rig.handle.check_now().await.unwrap();
    let st = wait_state(&rig, UpdateState::Deferred).await;
    let arrived = st.last_check.unwrap().at;
    assert_eq!(
        st.postponed_until,
        Some(arrived + SignedDuration::from_hours(2))
    );
    match rig.handle.control(Request::Postpone(3 * 3600)).await {
        Err(EngineError::PolicyRefused(m)) => {
            assert!(m.contains("critical") && m.contains("7200s"), "{m}")
        }
        other => panic!("{other:?}"),
    }
    rig.handle.control(Request::Postpone(3600)).await.unwrap();
    // The cap survives a restart.
    let db = rig.db.clone();
    let mut rig = rig;
    rig.stop().await;
    let rig = start(Setup {
        db: Some(db),
        ..with_update(date(2026, 11, 1))
    });
    assert_eq!(
        rig.handle.status().postponed_until,
        Some(arrived + SignedDuration::from_hours(1))
    );
    // It installs when the capped postponement ends, not three days later. (The restarted
    // rig's clock starts at START again.)
    let t0 = tokio::time::Instant::now();
    rig.handle.check_now().await.unwrap();
    wait_state(&rig, UpdateState::Deferred).await;
    wait_state(&rig, UpdateState::RebootRequired).await;
    let elapsed = t0.elapsed();
    assert!(
        elapsed <= Duration::from_secs(3600 + 60),
        "installed after {elapsed:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_held_inhibitor_blocks_installation_and_reboot_until_released() {
    let rig = start(with_update(date(2026, 11, 1)));
    let mut notices = rig.handle.notices();
    let driving = rig.handle.inhibit("driving".into()).await.unwrap();
    assert_eq!(rig.handle.status().inhibitors, ["driving"]);
    rig.handle.check_now().await.unwrap();
    wait_state(&rig, UpdateState::Deferred).await;
    // Even the user's explicit Install waits.
    rig.handle.control(Request::Install).await.unwrap();
    tokio::time::sleep(Duration::from_secs(3600)).await;
    assert_eq!(rig.installs(), 0);
    assert_eq!(rig.handle.status().state, UpdateState::Deferred);

    rig.handle.control(Request::Release(driving)).await.unwrap();
    wait_state(&rig, UpdateState::RebootRequired).await;
    assert_eq!(rig.installs(), 1);

    // The reboot waits for a new inhibitor too, and the UI is told why.
    let parked = rig
        .handle
        .inhibit("parked, doors open".into())
        .await
        .unwrap();
    rig.handle.control(Request::Reboot).await.unwrap();
    let plan = next_plan_for(&mut notices, "inhibitor").await;
    assert_eq!(plan.waiting_for, ["inhibitor"]);
    assert_eq!(plan.at, None);
    assert_eq!(plan.inhibitors, ["parked, doors open"]);
    assert_eq!(plan.version, "1.0.1");
    assert_eq!(plan.expected_downtime_s, 60);
    tokio::time::sleep(Duration::from_secs(3600)).await;
    assert_eq!(reboots(&rig), 0);
    rig.handle.control(Request::Release(parked)).await.unwrap();
    let plan = next_plan(&mut notices).await;
    assert!(plan.waiting_for.is_empty() && plan.at.is_some(), "{plan:?}");
    assert_eq!(reboots(&rig), 1);
}

#[tokio::test(start_paused = true)]
async fn a_window_outside_now_defers_the_automatic_reboot_to_its_opening() {
    let mut setup = with_update(date(2026, 11, 1));
    setup.config.install.auto_reboot = true;
    // START is 10:00 UTC.
    setup.config.install.maintenance_window = Some("02:00-04:00".into());
    let rig = start(setup);
    let mut notices = rig.handle.notices();
    rig.handle.check_now().await.unwrap();
    wait_state(&rig, UpdateState::RebootRequired).await;
    let plan = next_plan(&mut notices).await;
    let opening: Timestamp = "2026-11-28T02:00:00Z".parse().unwrap();
    assert_eq!(plan.at, Some(opening));
    assert_eq!(plan.waiting_for, ["maintenance-window"]);
    assert_eq!(reboots(&rig), 0);
    // Consent beats the window.
    tokio::time::sleep(Duration::from_secs(3600)).await;
    assert_eq!(reboots(&rig), 0);
    rig.handle.control(Request::Reboot).await.unwrap();
    assert_eq!(reboots(&rig), 1);
}

#[tokio::test(start_paused = true)]
async fn the_window_opening_reboots_by_itself_and_scheduled_consent_waits_for_its_time() {
    let mut setup = with_update(date(2026, 11, 1));
    setup.config.install.auto_reboot = true;
    setup.config.install.maintenance_window = Some("02:00-04:00".into());
    let rig = start(setup);
    rig.handle.check_now().await.unwrap();
    wait_state(&rig, UpdateState::RebootRequired).await;
    let start: Timestamp = START.parse().unwrap();
    // 16 h later it is 02:00.
    tokio::time::sleep(Duration::from_secs(15 * 3600)).await;
    assert_eq!(reboots(&rig), 0);
    tokio::time::sleep(Duration::from_secs(3600 + 60)).await;
    assert_eq!(reboots(&rig), 1);
    drop(rig);

    // Without automatic reboots: only at the time the user gave.
    let rig = start_with_update_no_auto_reboot().await;
    let at = start + SignedDuration::from_hours(5);
    rig.handle
        .control(Request::ScheduleReboot(at.as_second() as u64))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(4 * 3600)).await;
    assert_eq!(reboots(&rig), 0);
    tokio::time::sleep(Duration::from_secs(2 * 3600)).await;
    assert_eq!(reboots(&rig), 1);
}

async fn start_with_update_no_auto_reboot() -> Rig {
    let rig = start(with_update(date(2026, 11, 1)));
    rig.handle.check_now().await.unwrap();
    wait_state(&rig, UpdateState::RebootRequired).await;
    rig
}

fn device(end: jiff::civil::Date) -> DeviceTarget {
    DeviceTarget {
        name: "devices/test-gw.json".into(),
        meta: DeviceMeta {
            hardware_id: "test-gw".into(),
            model: "Test Gateway".into(),
            launch_date: date(2022, 1, 1),
            support_end: end,
            replacement: Some(Replacement {
                text: "Test Gateway 2 replaces this model".into(),
                url: Some("https://example.com/eol".into()),
            }),
            wave_start: None,
        },
    }
}

#[tokio::test(start_paused = true)]
async fn the_support_period_comes_from_signed_metadata_else_configuration() {
    use crate::policy::support::SupportState;
    // Configuration only.
    let mut setup = Setup::default();
    setup.config.device.support_end = Some(PatchDate(date(2027, 1, 15)));
    setup.config.device.replacement_text = Some("ask your dealer".into());
    let mut v = verified(vec![]);
    v.devices = vec![device(date(2026, 6, 30))];
    *setup.metadata.fallback.lock().unwrap() = Some(v);
    let rig = start(setup);
    let st = rig.handle.status();
    assert_eq!(st.support.end, Some(date(2027, 1, 15)));
    assert_eq!(st.support.state, SupportState::EndingSoon);
    assert_eq!(st.support.origin, "configuration");
    assert_eq!(st.support.replacement_text, "ask your dealer");

    // Signed metadata wins: ended, with its replacement plan; kept across a restart.
    rig.handle.check_now().await.unwrap();
    let st = wait_for(&rig.handle, "ended", |s| {
        s.support.state == SupportState::Ended
    })
    .await;
    assert_eq!(st.support.end, Some(date(2026, 6, 30)));
    assert_eq!(st.support.origin, "signed-metadata");
    assert_eq!(
        st.support.replacement_text,
        "Test Gateway 2 replaces this model"
    );
    assert_eq!(st.support.replacement_url, "https://example.com/eol");
    let db = rig.db.clone();
    let mut rig = rig;
    rig.stop().await;
    let rig2 = start(Setup {
        db: Some(db),
        ..Setup::default()
    });
    assert_eq!(rig2.handle.status().support.state, SupportState::Ended);
    drop(rig);
}

#[tokio::test(start_paused = true)]
async fn metadata_for_another_model_is_not_taken_as_ours() {
    let setup = Setup::default();
    let mut v = verified(vec![]);
    let mut other = device(date(2020, 1, 1));
    other.meta.hardware_id = "other-gw".into();
    v.devices = vec![other];
    *setup.metadata.fallback.lock().unwrap() = Some(v);
    let rig = start(setup);
    rig.handle.check_now().await.unwrap();
    wait_for(&rig.handle, "check", |s| s.last_check.is_some()).await;
    let st = rig.handle.status();
    assert_eq!(st.support.end, None);
    assert_eq!(st.support.state.as_str(), "unknown");
}

#[tokio::test(start_paused = true)]
async fn hostile_reboot_times_neither_panic_nor_reboot_early() {
    let rig = start_with_update_no_auto_reboot().await;
    for at in [u64::MAX, i64::MAX as u64 + 1, 253_402_300_800] {
        rig.handle
            .control(Request::ScheduleReboot(at))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_secs(3600)).await;
        assert_eq!(reboots(&rig), 0, "{at}");
    }
    // A time in the past means now.
    rig.handle
        .control(Request::ScheduleReboot(1))
        .await
        .unwrap();
    assert_eq!(reboots(&rig), 1);
}

// ---- rollout waves (SEC-0021) -------------------------------------------------------------

fn with_wave(hours_ahead: i64) -> (Setup, Timestamp) {
    let setup = Setup::default();
    let wave = START.parse::<Timestamp>().unwrap() + SignedDuration::from_hours(hours_ahead);
    let mut v = verified(vec![bundle("1.0.1", "1.0", date(2026, 11, 1))]);
    let mut d = device(date(2030, 1, 1));
    d.meta.wave_start = Some(wave);
    v.devices = vec![d];
    *setup.metadata.fallback.lock().unwrap() = Some(v);
    (setup, wave)
}

#[tokio::test(start_paused = true)]
async fn nothing_downloads_before_the_models_rollout_wave() {
    let (setup, wave) = with_wave(48);
    let rig = start(setup);
    rig.handle.check_now().await.unwrap();
    let st = wait_state(&rig, UpdateState::Deferred).await;
    assert_eq!(st.source.waiting_until, Some(wave), "{:?}", st.source);
    assert!(st.source.reason.contains("rollout wave"), "{:?}", st.source);
    assert!(rig.fetcher.fetched.lock().unwrap().is_empty());
    // Even a critical fix waits: skipping the wave is the integrator's explicit choice.
    assert_eq!(
        st.source.source, "manufacturer",
        "the source is still named while waiting"
    );
    // The wave starts: the engine wakes by itself, downloads and installs.
    tokio::time::sleep(Duration::from_secs(49 * 3600)).await;
    wait_state(&rig, UpdateState::RebootRequired).await;
    assert_eq!(rig.installs(), 1);
    assert_eq!(rig.fetcher.fetched.lock().unwrap().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_configured_severity_skips_the_wave() {
    let (mut setup, _) = with_wave(48);
    setup.config.check.wave_skip_severity = Some(crate::metadata::schema::Severity::Critical);
    let rig = start(setup);
    rig.handle.check_now().await.unwrap();
    // The sample update fixes a critical CVE.
    wait_state(&rig, UpdateState::RebootRequired).await;
    assert_eq!(rig.installs(), 1);
}

// ---- what survives a restart ----------------------------------------------------------------

/// The sample update (see `with_update`) under `config`.
fn update_with(config: Config) -> Setup {
    let mut setup = with_update(date(2026, 11, 1));
    setup.config = config;
    setup
}

#[tokio::test(start_paused = true)]
async fn the_users_scheduled_reboot_survives_a_restart() {
    let rig = start_with_update_no_auto_reboot().await;
    let at = START.parse::<Timestamp>().unwrap() + SignedDuration::from_hours(5);
    rig.handle
        .control(Request::ScheduleReboot(at.as_second() as u64))
        .await
        .unwrap();
    let rig = restart(rig, update_with(config())).await;
    let mut notices = rig.handle.notices();
    // Announced again with the time the user gave, and kept.
    let plan = tokio::time::timeout(Duration::from_secs(60), next_plan(&mut notices))
        .await
        .expect("the scheduled reboot is announced again after the restart");
    assert_eq!(plan.at, Some(at));
    assert_eq!(plan.waiting_for, ["scheduled"]);
    tokio::time::sleep(Duration::from_secs(4 * 3600)).await;
    assert_eq!(reboots(&rig), 0);
    tokio::time::sleep(Duration::from_secs(2 * 3600)).await;
    assert_eq!(reboots(&rig), 1);
}

#[tokio::test(start_paused = true)]
async fn a_reboot_planned_for_the_maintenance_window_survives_a_restart() {
    let mut setup = with_update(date(2026, 11, 1));
    setup.config.install.auto_reboot = true;
    setup.config.install.maintenance_window = Some("02:00-04:00".into());
    let config = setup.config.clone();
    let rig = start(setup);
    rig.handle.check_now().await.unwrap();
    wait_state(&rig, UpdateState::RebootRequired).await;
    let rig = restart(rig, update_with(config)).await;
    let mut notices = rig.handle.notices();
    let plan = tokio::time::timeout(Duration::from_secs(60), next_plan(&mut notices))
        .await
        .expect("the window's reboot is announced again after the restart");
    let opening: Timestamp = "2026-11-28T02:00:00Z".parse().unwrap();
    assert_eq!(plan.at, Some(opening));
    assert_eq!(plan.waiting_for, ["maintenance-window"]);
    tokio::time::sleep(Duration::from_secs(15 * 3600)).await;
    assert_eq!(reboots(&rig), 0);
    tokio::time::sleep(Duration::from_secs(3600 + 60)).await;
    assert_eq!(reboots(&rig), 1);
}

#[tokio::test(start_paused = true)]
async fn withdrawn_or_used_consent_does_not_come_back_after_a_restart() {
    // Withdrawn (ScheduleReboot(0)): after a restart nothing reboots.
    let rig = start_with_update_no_auto_reboot().await;
    let at = START.parse::<Timestamp>().unwrap() + SignedDuration::from_hours(1);
    for secs in [at.as_second() as u64, 0] {
        rig.handle
            .control(Request::ScheduleReboot(secs))
            .await
            .unwrap();
    }
    let rig = restart(rig, update_with(config())).await;
    tokio::time::sleep(Duration::from_secs(3 * 3600)).await;
    assert_eq!(reboots(&rig), 0);

    // Used: the reboot it allowed happened (here the host did not go down); a restart does
    // not reboot again on the same consent.
    let rig = start_with_update_no_auto_reboot().await;
    rig.handle
        .control(Request::ScheduleReboot(1))
        .await
        .unwrap();
    assert_eq!(reboots(&rig), 1);
    let rig = restart(rig, update_with(config())).await;
    tokio::time::sleep(Duration::from_secs(3 * 3600)).await;
    assert_eq!(reboots(&rig), 1);
}

// ---- SEC-0040: cannot be updated any more ---------------------------------------------

#[tokio::test(start_paused = true)]
async fn a_model_the_manufacturer_stopped_publishing_for_is_shown_like_end_of_life() {
    use crate::policy::support::SupportState;
    let setup = Setup::default();
    let mut listed = verified(vec![]);
    listed.devices = vec![device(date(2030, 1, 1))];
    let mut other = device(date(2030, 1, 1));
    other.meta.hardware_id = "other-gw".into();
    let mut dropped = verified(vec![]);
    dropped.devices = vec![other];
    setup
        .metadata
        .results
        .lock()
        .unwrap()
        .extend([Ok(listed), Ok(dropped)]);
    let rig = start(setup);
    rig.handle.check_now().await.unwrap();
    let st = wait_for(&rig.handle, "supported", |s| {
        s.support.state == SupportState::Supported
    })
    .await;
    assert_eq!(st.support.cannot_update, "");
    rig.handle.check_now().await.unwrap();
    let st = wait_for(&rig.handle, "ended", |s| {
        s.support.state == SupportState::Ended
    })
    .await;
    assert!(
        st.support.cannot_update.contains("no longer publishes"),
        "{:?}",
        st.support
    );
    // The replacement plan stays the one last signed for this model.
    assert_eq!(
        st.support.replacement_text,
        "Test Gateway 2 replaces this model"
    );
    // Kept across a restart.
    let db = rig.db.clone();
    let mut rig = rig;
    rig.stop().await;
    let rig = start(Setup {
        db: Some(db),
        ..Setup::default()
    });
    assert_eq!(rig.handle.status().support.state, SupportState::Ended);
}

#[tokio::test(start_paused = true)]
async fn nothing_published_for_an_overdue_device_is_shown_like_end_of_life() {
    use crate::policy::support::SupportState;
    let mut setup = Setup::default();
    // Older than the 90 days of `overdue_after` at START.
    setup.config.device.security_patch_level = Some(PatchDate(date(2026, 6, 1)));
    let mut for_other_board = bundle("1.0.1", "1.0", date(2026, 11, 1));
    for_other_board.meta.compatible = "other-board".into();
    *setup.metadata.fallback.lock().unwrap() = Some(verified(vec![for_other_board]));
    let rig = start(setup);
    rig.handle.check_now().await.unwrap();
    let st = wait_for(&rig.handle, "ended", |s| {
        s.support.state == SupportState::Ended
    })
    .await;
    assert!(
        st.support
            .cannot_update
            .contains("no update for this device"),
        "{:?}",
        st.support
    );
}

#[tokio::test(start_paused = true)]
async fn concurrent_inhibitors_never_exceed_the_limit() {
    let rig = start(Setup::default());
    let calls = (0..MAX_INHIBITORS + 6).map(|i| rig.handle.inhibit(format!("holder {i}")));
    let answers = futures_util::future::join_all(calls).await;
    let granted = answers.iter().filter(|a| a.is_ok()).count();
    assert_eq!(granted, MAX_INHIBITORS);
    for a in answers.iter().filter(|a| a.is_err()) {
        assert!(
            matches!(a, Err(EngineError::PolicyRefused(m)) if m.contains("64 inhibitors")),
            "{a:?}"
        );
    }
    assert_eq!(rig.handle.status().inhibitors.len(), MAX_INHIBITORS);
    // A released place can be taken again.
    rig.handle.control(Request::Release(1)).await.unwrap();
    rig.handle.inhibit("again".into()).await.unwrap();
    assert!(rig.handle.inhibit("one too many".into()).await.is_err());
}
