//! Integrity probing in the engine over doubles: the first verdict is a quiet baseline,
//! changes are recorded and announced, probes run on checks and RAUC changes.

use super::*;

#[tokio::test(start_paused = true)]
async fn integrity_baseline_is_quiet_and_changes_are_recorded_and_announced() {
    use crate::status::IntegrityState;
    let fixture = tempfile::tempdir().unwrap();
    let tainted = fixture.path().join("proc/sys/kernel/tainted");
    std::fs::create_dir_all(tainted.parent().unwrap()).unwrap();
    std::fs::write(&tainted, "0\n").unwrap();
    let mut config = config();
    config.integrity = crate::config::IntegrityConfig {
        root: fixture.path().to_owned(),
        ..Default::default()
    };
    let rig = start(Setup {
        config,
        ..Setup::default()
    });
    let mut notices = rig.handle.notices();

    // Probed at start: kernel-taint and rauc-slot pass, the rest cannot tell.
    let st = wait_for(&rig.handle, "the first verdict", |s| {
        s.integrity.state == IntegrityState::Trusted
    })
    .await;
    assert_eq!(st.integrity.findings.len(), 7, "{:#?}", st.integrity);
    assert!(
        rig.history().is_empty(),
        "the first verdict is the baseline"
    );

    // Probed again after a check.
    std::fs::write(&tainted, "8192\n").unwrap();
    rig.handle.check_now().await.unwrap();
    let st = wait_for(&rig.handle, "compromised", |s| {
        s.integrity.state == IntegrityState::Compromised
    })
    .await;
    let taint = st
        .integrity
        .findings
        .iter()
        .find(|f| f.probe == "kernel-taint")
        .unwrap();
    assert_eq!(taint.outcome, "fail");
    match tokio::time::timeout(Duration::from_secs(5), notices.recv()).await {
        Ok(Ok(Notice::IntegrityChanged(i))) => {
            assert_eq!(i.state, IntegrityState::Compromised);
            assert_eq!(i.findings, st.integrity.findings);
        }
        other => panic!("expected IntegrityChanged, got {other:?}"),
    }
    let h = rig.history();
    assert_eq!(h.len(), 1, "{h:#?}");
    assert_eq!(
        (h[0].kind.as_str(), h[0].action.as_str()),
        ("event", "integrity-changed")
    );
    assert!(
        h[0].detail
            .starts_with("compromised (was trusted): kernel-taint: tainted=8192: E"),
        "{}",
        h[0].detail
    );

    // Probed again when RAUC's view changes.
    std::fs::write(&tainted, "0\n").unwrap();
    rig.rauc_tx.send_replace(rauc_view("A", "1.0.1"));
    wait_for(&rig.handle, "trusted again", |s| {
        s.integrity.state == IntegrityState::Trusted
    })
    .await;
    assert_eq!(rig.history().len(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_restart_with_the_same_verdict_records_nothing() {
    use crate::status::IntegrityState;
    let fixture = tempfile::tempdir().unwrap();
    let tainted = fixture.path().join("proc/sys/kernel/tainted");
    std::fs::create_dir_all(tainted.parent().unwrap()).unwrap();
    std::fs::write(&tainted, "1\n").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("agent.db");
    for _ in 0..2 {
        let mut config = config();
        config.integrity = crate::config::IntegrityConfig {
            root: fixture.path().to_owned(),
            ..Default::default()
        };
        let mut rig = start(Setup {
            config,
            db: Some(db.clone()),
            ..Setup::default()
        });
        wait_for(&rig.handle, "compromised", |s| {
            s.integrity.state == IntegrityState::Compromised
        })
        .await;
        rig.stop().await;
        assert!(rig.history().is_empty());
    }
}

/// `unknown` (RAUC not answering, as after every boot until it is activated) is shown but is
/// no change: trusted → unknown → trusted records and announces nothing.
#[tokio::test(start_paused = true)]
async fn a_verdict_that_cannot_tell_is_shown_but_records_no_change() {
    use crate::status::IntegrityState;
    let mut config = config();
    config.integrity.probes = vec![crate::integrity::ProbeId::RaucSlot];
    let rig = start(Setup {
        config,
        ..Setup::default()
    });
    let mut notices = rig.handle.notices();
    wait_for(&rig.handle, "trusted", |s| {
        s.integrity.state == IntegrityState::Trusted
    })
    .await;
    rig.rauc_tx.send_replace(RaucInfo {
        availability: Availability::Unavailable,
        ..RaucInfo::default()
    });
    wait_for(&rig.handle, "unknown", |s| {
        s.integrity.state == IntegrityState::Unknown
    })
    .await;
    rig.rauc_tx.send_replace(rauc_view("A", "1.0.0"));
    wait_for(&rig.handle, "trusted again", |s| {
        s.integrity.state == IntegrityState::Trusted
    })
    .await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(rig.history().is_empty(), "{:#?}", rig.history());
    while let Ok(n) = notices.try_recv() {
        assert!(!matches!(n, Notice::IntegrityChanged(_)), "{n:?}");
    }
}
