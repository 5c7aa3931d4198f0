//! The basics over doubles: the first status, the store's record over the factory image, no
//! source meaning never "current", the check schedule, history, and shutdown.

use super::*;

#[tokio::test(start_paused = true)]
async fn initial_status_comes_from_the_factory_image_and_is_unverified() {
    let rig = start(Setup::default());
    let st = rig.handle.status();
    let installed = st.installed.unwrap();
    assert_eq!(installed.version, "1.0.0");
    assert_eq!(installed.feature_release, "1.0");
    assert_eq!(installed.security_patch_level, date(2026, 9, 1));
    assert_eq!(installed.applied_at, None);
    assert_eq!(st.state, UpdateState::Idle);
    assert_eq!(st.staleness, Staleness::Unverified);
    assert!(st.auto_install);
    assert_eq!(st.model, "Test Gateway");
}

#[tokio::test(start_paused = true)]
async fn the_store_record_beats_the_factory_image() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("agent.db");
    let store = Store::open(&db).unwrap();
    store
        .set_installed(&Installed {
            version: "1.1.0".into(),
            feature_release: "1.1".into(),
            security_patch_level: date(2026, 11, 15),
            applied_at: Some("2026-11-20T08:00:00Z".parse().unwrap()),
        })
        .unwrap();
    store.set_setting(AUTO_INSTALL_KEY, "false").unwrap();
    drop(store);
    let rig = start(Setup {
        db: Some(db),
        ..Setup::default()
    });
    let st = rig.handle.status();
    assert_eq!(st.installed.unwrap().version, "1.1.0");
    assert!(!st.auto_install);
}

#[tokio::test(start_paused = true)]
async fn without_a_source_the_check_says_so_and_never_claims_current() {
    let rig = start(Setup {
        metadata: FakeMetadata::default(),
        ..Setup::default()
    });
    rig.handle.check_now().await.unwrap();
    let st = wait_for(&rig.handle, "check", |s| s.last_check.is_some()).await;
    let check = st.last_check.unwrap();
    assert!(!check.verified);
    assert_eq!(check.message, "no update source configured");
    assert_eq!(st.staleness, Staleness::Unverified);
}

#[tokio::test(start_paused = true)]
async fn first_check_runs_after_the_boot_delay_then_every_interval() {
    let setup = Setup::default();
    *setup.metadata.fallback.lock().unwrap() = Some(verified(vec![]));
    let rig = start(setup);
    let st = wait_for(&rig.handle, "the boot check", |s| s.last_check.is_some()).await;
    let first = st.last_check.unwrap().at;
    assert_eq!(
        first,
        START.parse::<Timestamp>().unwrap() + SignedDuration::from_mins(2)
    );
    assert_eq!(st.staleness, Staleness::Current);

    let st = wait_for(&rig.handle, "the periodic check", |s| {
        s.last_check.as_ref().is_some_and(|c| c.at != first)
    })
    .await;
    let gap = st.last_check.unwrap().at.duration_since(first);
    assert!(
        gap >= SignedDuration::from_hours(23) && gap <= SignedDuration::from_hours(25),
        "{gap:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn history_comes_from_the_store_newest_first_and_bounded() {
    let rig = start(Setup::default());
    let store = Store::open(&rig.db).unwrap();
    for i in 0..3 {
        store
            .append_history(&NewHistoryEntry {
                at: START.parse().unwrap(),
                kind: "security".into(),
                action: "installed".into(),
                version: Some(format!("1.0.{i}")),
                security_patch_level: Some(date(2026, 11, 1)),
                detail: String::new(),
                cves: vec!["CVE-2026-0001".into()],
            })
            .unwrap();
    }
    let h = rig.handle.history(2).await.unwrap();
    assert_eq!(h.len(), 2);
    assert_eq!(h[0].version.as_deref(), Some("1.0.2"));
}

#[tokio::test(start_paused = true)]
async fn shutdown_stops_the_engine_and_handles_report_it() {
    let mut rig = start(Setup::default());
    rig.handle.ping().await.unwrap();
    rig.stop().await;
    assert!(matches!(rig.handle.ping().await, Err(EngineError::Stopped)));
    assert!(matches!(
        rig.handle.check_now().await,
        Err(EngineError::Stopped)
    ));
}
