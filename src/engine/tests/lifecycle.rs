//! The update lifecycle over doubles: check → download → announce → install → reboot →
//! confirm (or roll back), its failure paths, and a restart of the engine in every phase.

use super::*;

#[tokio::test(start_paused = true)]
async fn happy_path_download_announce_install_reboot_confirm() {
    let rig = start(with_update(date(2026, 11, 1)));
    let mut notices = rig.handle.notices();
    rig.handle.check_now().await.unwrap();

    let st = wait_for(&rig.handle, "reboot-required", |s| {
        s.state == UpdateState::RebootRequired
    })
    .await;
    assert_eq!(st.progress, 100);
    assert_eq!(st.available.as_ref().unwrap().target.meta.version, "1.0.1");
    match notices.try_recv() {
        Ok(Notice::UpdateAvailable(offer)) => assert_eq!(offer.target.meta.version, "1.0.1"),
        other => panic!("expected UpdateAvailable, got {other:?}"),
    }
    assert_eq!(rig.installs(), 1);
    assert_eq!(rig.pending().unwrap().phase, Phase::Installed);
    assert!(
        rig.history().is_empty(),
        "nothing is recorded before the reboot confirms"
    );
    assert_eq!(
        rig.system.reboots.load(Ordering::SeqCst),
        0,
        "auto_reboot is off"
    );
    // Told at once when the reboot deadline will reboot it (7 days, no window configured).
    match notices.try_recv() {
        Ok(Notice::RebootPending(p)) => {
            assert_eq!(p.waiting_for, ["deadline"]);
            assert_eq!(
                p.at,
                Some(START.parse::<Timestamp>().unwrap() + SignedDuration::from_hours(7 * 24))
            );
        }
        other => panic!("expected RebootPending, got {other:?}"),
    }

    rig.reboot_into("B", "1.0.1");
    let st = wait_for(&rig.handle, "confirmed", |s| {
        s.installed.as_ref().is_some_and(|i| i.version == "1.0.1")
    })
    .await;
    let installed = st.installed.unwrap();
    assert_eq!(installed.security_patch_level, date(2026, 11, 1));
    assert_eq!(installed.feature_release, "1.0");
    // COM-0040: when it was applied here (the confirmation), not when it was released.
    let applied = installed.applied_at.unwrap();
    // (The sample update was released on 2026-11-20, a week before START.)
    assert!(applied >= START.parse::<Timestamp>().unwrap(), "{applied}");
    assert_eq!(st.state, UpdateState::Idle);
    assert!(st.available.is_none());
    assert!(
        rig.rauc
            .calls()
            .contains(&Call::Mark(crate::rauc::MarkState::Good, "booted".into()))
    );
    let h = rig.history();
    assert_eq!(h.len(), 1);
    assert_eq!(h[0].action, "installed");
    assert_eq!(h[0].cves, vec!["CVE-2026-4242".to_string()]);
    assert_eq!(rig.pending(), None);
    match notices.try_recv() {
        Ok(Notice::InstallFinished(f)) => assert_eq!(f.outcome, "installed"),
        other => panic!("expected InstallFinished, got {other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn auto_reboot_runs_the_reboot_command() {
    let mut setup = with_update(date(2026, 11, 1));
    setup.config.install.auto_reboot = true;
    let rig = start(setup);
    let mut notices = rig.handle.notices();
    rig.handle.check_now().await.unwrap();
    wait_for(&rig.handle, "reboot-required", |s| {
        s.state == UpdateState::RebootRequired
    })
    .await;
    assert_eq!(rig.system.reboots.load(Ordering::SeqCst), 1);
    // Nobody consented: the UI was told (ETSI 5.3-12), with what and how long.
    let plan = std::iter::from_fn(|| notices.try_recv().ok())
        .find_map(|n| match n {
            Notice::RebootPending(p) => Some(p),
            _ => None,
        })
        .expect("RebootPending before an automatic reboot");
    assert!(plan.waiting_for.is_empty(), "{plan:?}");
    assert_eq!(plan.version, "1.0.1");
    assert_eq!(plan.expected_downtime_s, 60);
}

#[tokio::test(start_paused = true)]
async fn the_last_verified_check_survives_a_restart() {
    let setup = Setup::default();
    *setup.metadata.fallback.lock().unwrap() = Some(verified(vec![]));
    let rig = start(setup);
    rig.handle.check_now().await.unwrap();
    wait_for(&rig.handle, "current", |s| {
        s.staleness == Staleness::Current
    })
    .await;
    let db = rig.db.clone();
    let mut rig = rig;
    rig.stop().await;
    // Restarted with the server gone: still current until the verification grows stale
    // (SEC-0020), not "unverified" because this process has not checked yet.
    let rig = start(Setup {
        db: Some(db),
        ..Setup::default()
    });
    assert_eq!(rig.handle.status().staleness, Staleness::Current);
    assert!(rig.handle.status().last_check.unwrap().verified);
}

#[tokio::test(start_paused = true)]
async fn failing_health_check_marks_bad_reboots_and_keeps_the_old_patch_level() {
    let rig = start(with_update(date(2026, 11, 1)));
    rig.handle.check_now().await.unwrap();
    wait_for(&rig.handle, "installed", |s| {
        s.state == UpdateState::RebootRequired
    })
    .await;
    *rig.system.health.lock().unwrap() = Err("health check `app-selftest` failed".into());

    rig.reboot_into("B", "1.0.1");
    let st = wait_for(&rig.handle, "rolled back", |s| {
        s.state == UpdateState::RolledBack
    })
    .await;
    assert_eq!(st.installed.unwrap().version, "1.0.0");
    assert!(st.last_error.contains("app-selftest"), "{}", st.last_error);
    assert!(
        rig.rauc
            .calls()
            .contains(&Call::Mark(crate::rauc::MarkState::Bad, "booted".into()))
    );
    assert_eq!(rig.system.reboots.load(Ordering::SeqCst), 1);
    let h = rig.history();
    assert_eq!(h.len(), 1);
    assert_eq!(h[0].action, "rolled-back");
    assert_eq!(rig.pending().unwrap().phase, Phase::RollingBack);

    // Back in the old slot: the attempt is settled.
    rig.reboot_into("A", "1.0.1");
    wait_for(&rig.handle, "settled", |s| {
        s.state == UpdateState::RolledBack
    })
    .await;
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(rig.pending(), None);
    assert_eq!(rig.history().len(), 1);

    // The same target is offered again: it is not installed a second time.
    rig.handle.check_now().await.unwrap();
    let st = wait_for(&rig.handle, "checked again", |s| {
        s.last_check.as_ref().is_some_and(|c| c.verified) && s.state != UpdateState::Checking
    })
    .await;
    assert!(st.available.is_none());
    assert_eq!(rig.installs(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_new_slot_that_never_boots_is_reported_rolled_back() {
    let rig = start(with_update(date(2026, 11, 1)));
    rig.handle.check_now().await.unwrap();
    wait_for(&rig.handle, "installed", |s| {
        s.state == UpdateState::RebootRequired
    })
    .await;
    rig.reboot_into("A", "1.0.1");
    let st = wait_for(&rig.handle, "rolled back", |s| {
        s.state == UpdateState::RolledBack
    })
    .await;
    assert_eq!(st.installed.unwrap().version, "1.0.0");
    let h = rig.history();
    assert_eq!(h[0].action, "rolled-back");
    assert!(h[0].detail.contains("did not boot"), "{}", h[0].detail);
}

#[tokio::test(start_paused = true)]
async fn rauc_install_failure_is_failed_with_raucs_message() {
    let rig = start(with_update(date(2026, 11, 1)));
    rig.rauc.script_install(Err(RaucError::InstallFailed {
        bundle: "/cache/1.0.1".into(),
        code: 1,
        message: "Failed mounting bundle: No space left".into(),
    }));
    rig.handle.check_now().await.unwrap();
    let st = wait_for(&rig.handle, "failed", |s| s.state == UpdateState::Failed).await;
    assert!(st.last_error.contains("No space left"), "{}", st.last_error);
    let h = rig.history();
    assert_eq!(h.len(), 1);
    assert_eq!(h[0].action, "failed");
    assert_eq!(rig.pending(), None);
}

#[tokio::test(start_paused = true)]
async fn a_bundle_whose_manifest_disagrees_with_the_metadata_is_not_installed() {
    let rig = start(with_update(date(2026, 11, 1)));
    rig.rauc.add_bundle(
        "/cache/1.0.1",
        BundleInfo {
            compatible: "other-board".into(),
            version: "1.0.1".into(),
            manifest_hash: String::new(),
        },
    );
    rig.handle.check_now().await.unwrap();
    let st = wait_for(&rig.handle, "failed", |s| s.state == UpdateState::Failed).await;
    assert!(
        st.last_error.contains("do not match the signed metadata"),
        "{}",
        st.last_error
    );
    assert_eq!(rig.installs(), 0);
}

#[tokio::test(start_paused = true)]
async fn refused_targets_are_recorded_once_and_never_downloaded() {
    let setup = Setup::default();
    let mut bad = verified(vec![
        bundle("2.0.0", "2.0", date(2026, 11, 1)),
        bundle("0.9.0", "1.0", date(2026, 1, 1)),
    ]);
    bad.refused.push(RefusedTarget {
        name: "bundles/ssu-sandbox/junk.raucb".into(),
        reason: "cves: a security update must list at least one CVE".into(),
    });
    *setup.metadata.fallback.lock().unwrap() = Some(bad);
    let rig = start(setup);
    rig.handle.check_now().await.unwrap();
    let st = wait_for(&rig.handle, "checked", |s| {
        s.last_check.as_ref().is_some_and(|c| c.verified)
    })
    .await;
    assert!(st.available.is_none());
    assert!(rig.fetcher.fetched.lock().unwrap().is_empty());
    assert!(st.last_check.unwrap().message.contains("refused"));
    rig.handle.check_now().await.unwrap();
    wait_for(&rig.handle, "second check", |s| {
        s.state == UpdateState::Idle
    })
    .await;
    let h = rig.history();
    assert_eq!(h.len(), 3, "{h:#?}");
    assert!(h.iter().all(|e| e.action == "refused"));
    assert!(h.iter().any(|e| e.detail.contains("scope violation")));
    assert!(h.iter().any(|e| e.detail.contains("rollback refused")));
}

/// A repository that still lists two bundles older than the installed patch level (the
/// factory image and an earlier fix, as a server keeps them).
fn with_old_bundles() -> Setup {
    let setup = Setup::default();
    *setup.metadata.fallback.lock().unwrap() = Some(verified(vec![
        bundle("0.9.0", "1.0", date(2026, 1, 1)),
        bundle("0.9.5", "1.0", date(2026, 5, 1)),
    ]));
    setup
}

#[tokio::test(start_paused = true)]
async fn old_bundles_are_recorded_as_refused_once_not_at_every_check_or_restart() {
    let mut rig = start(with_old_bundles());
    for _ in 0..3 {
        rig.handle.check_now().await.unwrap();
    }
    let h = rig.history();
    assert_eq!(h.len(), 2, "{h:#?}");
    assert!(h.iter().all(|e| e.detail.contains("rollback refused")));
    // Each restart (a reboot, an upgrade of the agent) and check after it adds nothing.
    for _ in 0..2 {
        rig = restart(rig, with_old_bundles()).await;
        rig.handle.check_now().await.unwrap();
        rig.handle.check_now().await.unwrap();
    }
    let h = rig.history();
    assert_eq!(h.len(), 2, "{h:#?}");
    // The last check still says what it refused.
    let st = rig.handle.status();
    assert!(st.last_check.unwrap().message.contains("refused"));
}

#[tokio::test(start_paused = true)]
async fn metadata_verified_while_rauc_is_away_is_judged_when_rauc_returns() {
    let mut setup = with_update(date(2026, 11, 1));
    setup.rauc = RaucInfo {
        availability: Availability::Unavailable,
        ..RaucInfo::default()
    };
    let rig = start(setup);
    rig.handle.check_now().await.unwrap();
    let st = rig.handle.status();
    assert!(
        st.last_check
            .unwrap()
            .message
            .contains("RAUC is unavailable")
    );
    assert!(rig.fetcher.fetched.lock().unwrap().is_empty());

    rig.rauc_tx.send_replace(rauc_view("A", ""));
    let st = wait_for(&rig.handle, "the update judged and installed", |s| {
        s.state == UpdateState::RebootRequired
    })
    .await;
    assert!(st.last_check.unwrap().message.contains("1.0.1"));
    assert_eq!(rig.installs(), 1);
}

#[tokio::test(start_paused = true)]
async fn unverifiable_metadata_leaves_status_unverified_with_the_reason() {
    let setup = Setup::default();
    setup
        .metadata
        .results
        .lock()
        .unwrap()
        .push_back(Err(MetadataError::Rollback {
            source_name: "manufacturer".into(),
            role: "timestamp",
            have: 3,
            floor: 5,
        }));
    let rig = start(setup);
    rig.handle.check_now().await.unwrap();
    let st = wait_for(&rig.handle, "checked", |s| s.last_check.is_some()).await;
    assert_eq!(st.staleness, Staleness::Unverified);
    assert!(
        st.last_error.contains("rollback refused"),
        "{}",
        st.last_error
    );
    assert!(st.available.is_none());
}

#[tokio::test(start_paused = true)]
async fn download_failure_installs_nothing() {
    let rig = start(with_update(date(2026, 11, 1)));
    rig.fetcher
        .results
        .lock()
        .unwrap()
        .push_back(Err(FetchFailure {
            message: "SHA-256 mismatch".into(),
            retryable: false,
            storage: false,
        }));
    let mut notices = rig.handle.notices();
    rig.handle.check_now().await.unwrap();
    let st = wait_for(&rig.handle, "failed", |s| s.state == UpdateState::Failed).await;
    assert!(st.last_error.contains("SHA-256 mismatch"));
    assert!(st.available.is_none());
    assert!(
        notices.try_recv().is_err(),
        "no UpdateAvailable for unverified bytes"
    );
    assert_eq!(rig.installs(), 0);
}

#[tokio::test(start_paused = true)]
async fn without_auto_install_the_update_waits_available() {
    let setup = with_update(date(2026, 11, 1));
    let rig = start(setup);
    Store::open(&rig.db)
        .unwrap()
        .set_setting(AUTO_INSTALL_KEY, "false")
        .unwrap();
    drop(rig);
    // A fresh engine reads the setting at start.
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("agent.db");
    Store::open(&db)
        .unwrap()
        .set_setting(AUTO_INSTALL_KEY, "false")
        .unwrap();
    let mut setup = with_update(date(2026, 11, 1));
    setup.db = Some(db);
    let rig = start(setup);
    rig.handle.check_now().await.unwrap();
    let st = wait_for(&rig.handle, "available", |s| {
        s.state == UpdateState::Available
    })
    .await;
    assert!(st.available.is_some());
    assert_eq!(rig.installs(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_clock_behind_the_latest_known_time_blocks_checks() {
    let rig = start(Setup::default());
    Store::open(&rig.db)
        .unwrap()
        .set_state(LATEST_KNOWN_TIME_KEY, Some("2027-06-01T00:00:00Z"))
        .unwrap();
    rig.handle.check_now().await.unwrap();
    let st = wait_for(&rig.handle, "checked", |s| s.last_check.is_some()).await;
    assert!(
        st.last_check
            .unwrap()
            .message
            .contains("behind the latest time this device has seen")
    );
    assert_eq!(rig.metadata.fetches.load(Ordering::SeqCst), 0);
}

// ---- restarts -------------------------------------------------------------------------

/// Runs to `phase`, stops the engine, and starts a new one on the same store.
async fn restart_in(phase: Phase) -> (Rig, Rig) {
    let mut first = start(with_update(date(2026, 11, 1)));
    first.handle.check_now().await.unwrap();
    wait_for(&first.handle, "installed", |s| {
        s.state == UpdateState::RebootRequired
    })
    .await;
    first.stop().await;
    let mut p = first.pending().unwrap();
    p.phase = phase;
    Store::open(&first.db)
        .unwrap()
        .set_state(pending::KEY, Some(&p.to_json()))
        .unwrap();
    let mut setup = with_update(date(2026, 11, 1));
    setup.db = Some(first.db.clone());
    setup.system = Some(first.system.clone());
    setup.rauc = rauc_view(
        "A",
        if phase == Phase::Installing {
            "1.0.1"
        } else {
            ""
        },
    );
    let second = start(setup);
    (first, second)
}

#[tokio::test(start_paused = true)]
async fn restart_before_the_reboot_does_not_install_again() {
    let (first, second) = restart_in(Phase::Installed).await;
    let st = wait_for(&second.handle, "reboot-required", |s| {
        s.state == UpdateState::RebootRequired
    })
    .await;
    assert_eq!(st.available.unwrap().target.meta.version, "1.0.1");
    assert_eq!(first.installs() + second.installs(), 1);
    second.reboot_into("B", "1.0.1");
    wait_for(&second.handle, "confirmed", |s| {
        s.installed.as_ref().is_some_and(|i| i.version == "1.0.1")
    })
    .await;
    assert_eq!(second.history().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn restart_during_install_finds_raucs_result_instead_of_installing_again() {
    let (first, second) = restart_in(Phase::Installing).await;
    wait_for(&second.handle, "reboot-required", |s| {
        s.state == UpdateState::RebootRequired
    })
    .await;
    assert_eq!(first.installs() + second.installs(), 1);
}

#[tokio::test(start_paused = true)]
async fn restart_during_download_resumes_it() {
    let (_first, second) = restart_in(Phase::Downloading).await;
    wait_for(&second.handle, "reboot-required", |s| {
        s.state == UpdateState::RebootRequired
    })
    .await;
    assert_eq!(second.fetcher.fetched.lock().unwrap().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn the_last_check_stops_saying_available_once_that_update_is_installed() {
    let rig = start(with_update(date(2026, 11, 1)));
    rig.handle.check_now().await.unwrap();
    let st = wait_for(&rig.handle, "installed", |s| {
        s.state == UpdateState::RebootRequired
    })
    .await;
    let said = st.last_check.unwrap().message;
    assert!(
        said.contains("1.0.1") && said.contains("available"),
        "{said}"
    );

    // The reboot: a new boot, the agent starting again in slot B.
    *rig.system.boot_id.lock().unwrap() = "boot-after-update".into();
    let mut setup = with_update(date(2026, 11, 1));
    setup.rauc = rauc_view("B", "1.0.1");
    let rig = restart(rig, setup).await;
    let st = wait_for(&rig.handle, "confirmed", |s| {
        s.installed.as_ref().is_some_and(|i| i.version == "1.0.1")
    })
    .await;
    let says = st.last_check.unwrap().message;
    assert!(!says.contains("available"), "{says}");
    assert_eq!(
        says,
        "verified; security update 1.0.1 (patch level 2026-11-01) installed"
    );
    // Also as the store keeps it, for the next start.
    let stored = Store::open(&rig.db).unwrap().last_check().unwrap().unwrap();
    assert_eq!(stored.message, says);
}
