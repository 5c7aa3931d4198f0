//! The engine after its store was replaced: the recovery is announced, and the patch-level
//! floor comes back from what RAUC's booted slot holds.

use super::*;

#[tokio::test(start_paused = true)]
async fn a_recovered_store_is_announced_once_when_the_engine_runs() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("agent.db");
    std::fs::write(&db, b"not a database at all").unwrap();
    let rig = start(Setup {
        db: Some(db.clone()),
        ..Setup::default()
    });
    let mut notices = rig.handle.notices();
    let notice = tokio::time::timeout(Duration::from_secs(5), notices.recv())
        .await
        .expect("a notice")
        .unwrap();
    let Notice::StoreRecovered(r) = notice else {
        panic!("expected StoreRecovered, got {notice:?}");
    };
    assert!(r.reason.contains("not an SQLite database"), "{}", r.reason);
    assert_eq!(
        std::fs::read(&r.moved_to).unwrap(),
        b"not a database at all"
    );
    let h = rig.history();
    assert_eq!(h.len(), 1);
    assert_eq!(h[0].action, "store-recovered");
    // Once: nothing more about it.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(notices.try_recv().is_err());
}

#[tokio::test(start_paused = true)]
async fn the_booted_release_raises_a_patch_level_the_store_lost() {
    // The store fell back to the factory image (1.0.0, 2026-09-01), but RAUC booted slot B,
    // which holds 1.0.1: verified metadata says 1.0.1 is 2026-11-01.
    let setup = Setup {
        rauc: rauc_view("B", "1.0.1"),
        ..Setup::default()
    };
    *setup.metadata.fallback.lock().unwrap() = Some(verified(vec![
        bundle("1.0.1", "1.0", date(2026, 11, 1)),
        BundleTarget {
            sha256: [8; 32],
            ..bundle("1.0.5", "1.0", date(2026, 10, 1))
        },
    ]));
    let rig = start(setup);
    rig.handle.check_now().await.unwrap();
    let st = wait_for(&rig.handle, "the booted release recorded", |s| {
        s.installed.as_ref().is_some_and(|i| i.version == "1.0.1")
    })
    .await;
    assert_eq!(
        st.installed.unwrap().security_patch_level,
        date(2026, 11, 1)
    );
    // The older patch level is refused exactly as if the record had never been lost.
    assert!(st.available.is_none(), "{:?}", st.available);
    assert_eq!(rig.installs(), 0);
    let h = rig.history();
    assert!(h.iter().any(|e| e.action == "release-recognised"), "{h:?}");
    assert!(
        h.iter()
            .any(|e| e.action == "refused" && e.version.as_deref() == Some("1.0.5")),
        "{h:?}"
    );
    let stored = Store::open(&rig.db).unwrap().installed().unwrap().unwrap();
    assert_eq!(stored.version, "1.0.1");
}

#[tokio::test(start_paused = true)]
async fn the_booted_release_never_lowers_the_record() {
    // Booted A holds the factory 1.0.0 whose metadata claims an older level: kept as is.
    let setup = Setup::default();
    *setup.metadata.fallback.lock().unwrap() =
        Some(verified(vec![bundle("1.0.0", "1.0", date(2026, 1, 1))]));
    let rig = start(setup);
    rig.handle.check_now().await.unwrap();
    let st = rig.handle.status();
    assert_eq!(st.installed.unwrap().security_patch_level, date(2026, 9, 1));
    assert!(
        !rig.history()
            .iter()
            .any(|e| e.action == "release-recognised")
    );
}
