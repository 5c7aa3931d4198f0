//! Every command is answered, whatever the store does: each kind of store failure the real
//! SQLite database can produce is injected into the running engine, then every command is
//! sent. A command that needed a write that failed answers with the store's error; the
//! check's outcome still shows in `LastCheckResult`; nothing hangs.

use super::*;
use crate::engine::stall;

/// Longest a command may take to be answered (paused time: only a hang reaches it).
const ANSWER: Duration = Duration::from_secs(1);

/// A real way for the database to fail under the running engine. (A full disk is tested on
/// the sandbox with a real full file system, `tests/faults.rs`: SQLite's `max_page_count`
/// only fails writes that need a new page, so it cannot stand in for it here.)
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    /// Every write refused (SQLITE_READONLY), as on a file system remounted read-only.
    ReadOnly,
    /// Another process holds the write lock past the busy timeout (SQLITE_BUSY).
    Locked,
    /// The schema is damaged: the tables the engine reads and writes are gone.
    Damaged,
}

const FAULTS: [Fault; 3] = [Fault::ReadOnly, Fault::Locked, Fault::Damaged];

/// Holds whatever keeps a fault in place (the other connection's lock).
struct Injected(#[allow(dead_code)] Option<rusqlite::Connection>);

async fn inject(rig: &Rig, fault: Fault) -> Injected {
    let sql = match fault {
        Fault::ReadOnly => "PRAGMA query_only = ON;",
        // Waits 1 ms for the lock instead of the store's seconds.
        Fault::Locked => "PRAGMA busy_timeout = 1;",
        Fault::Damaged => {
            "DROP TABLE state; DROP TABLE settings; DROP TABLE last_check; \
                           DROP TABLE history;"
        }
    };
    let (tx, rx) = tokio::sync::oneshot::channel();
    rig.handle
        .with_store(move |store| {
            let _ = tx.send(store.execute_batch_for_test(sql));
        })
        .await;
    let result = rx.await.unwrap();
    result.unwrap();
    if fault == Fault::Locked {
        let other = rusqlite::Connection::open(&rig.db).unwrap();
        other.execute_batch("BEGIN IMMEDIATE;").unwrap();
        return Injected(Some(other));
    }
    Injected(None)
}

async fn answered<T: std::fmt::Debug>(
    what: &str,
    fault: impl Into<Option<Fault>>,
    call: impl Future<Output = Result<T, EngineError>>,
) -> Result<T, EngineError> {
    let fault = fault.into();
    match tokio::time::timeout(ANSWER, call).await {
        Ok(r) => r,
        Err(_) => panic!("{what} under {fault:?}: no answer within {ANSWER:?}"),
    }
}

fn is_store_error<T: std::fmt::Debug>(r: &Result<T, EngineError>) -> bool {
    matches!(r, Err(EngineError::Store(_) | EngineError::StoreFailed(_)))
}

/// An engine with an update verified and waiting for the user (auto-install off).
async fn offering() -> Rig {
    let rig = start(with_update(date(2026, 11, 1)));
    rig.handle
        .control(Request::SetAutoInstall(false))
        .await
        .unwrap();
    answered("CheckNow", None, rig.handle.check_now())
        .await
        .unwrap();
    wait_for(&rig.handle, "the offer", |s| {
        s.state == UpdateState::Available
    })
    .await;
    rig
}

#[tokio::test(start_paused = true)]
async fn check_now_answers_with_the_store_error_and_shows_the_new_check() {
    for fault in FAULTS {
        let rig = start(with_update(date(2026, 11, 1)));
        rig.handle
            .control(Request::SetAutoInstall(false))
            .await
            .unwrap();
        let _held = inject(&rig, fault).await;
        let before = rig.handle.status().last_check;
        assert_eq!(before, None);

        let r = answered("CheckNow", fault, rig.handle.check_now()).await;
        assert!(is_store_error(&r), "{fault:?}: {r:?}");
        let message = r.unwrap_err().to_string();
        assert!(message.contains("cannot record"), "{fault:?}: {message}");

        let st = rig.handle.status();
        let check = st.last_check.expect("the new check shows");
        assert!(!check.verified, "{fault:?}: not recorded, so not claimed");
        assert!(
            check.message.contains("could not be recorded")
                || check.message.contains("cannot record"),
            "{fault:?}: {}",
            check.message
        );
        assert_eq!(st.state, UpdateState::Failed, "{fault:?}");
        assert!(st.last_error.contains("cannot record"), "{fault:?}");
        // Nothing acted on what could not be recorded.
        assert!(st.available.is_none(), "{fault:?}");
        assert!(rig.fetcher.fetched.lock().unwrap().is_empty(), "{fault:?}");
        assert_ne!(st.staleness, Staleness::Current, "{fault:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn every_command_is_answered_under_every_store_failure() {
    for fault in FAULTS {
        let rig = offering().await;
        let fetched = rig.fetcher.fetched.lock().unwrap().len();
        let _held = inject(&rig, fault).await;

        let r = answered("History", fault, rig.handle.history(10)).await;
        if fault == Fault::Damaged {
            assert!(is_store_error(&r), "History {fault:?}: {r:?}");
        } else {
            // Reading still works under the other faults.
            assert!(r.is_ok(), "History {fault:?}: {r:?}");
        }

        for req in [
            Request::SetAutoInstall(true),
            Request::Postpone(3600),
            Request::Postpone(0),
        ] {
            let r = answered("Control", fault, rig.handle.control(req.clone())).await;
            assert!(is_store_error(&r), "{req:?} {fault:?}: {r:?}");
        }
        // Install starts the download, which is recorded first: it cannot start.
        let r = answered("Install", fault, rig.handle.control(Request::Install)).await;
        assert!(is_store_error(&r), "Install {fault:?}: {r:?}");
        assert_eq!(
            rig.fetcher.fetched.lock().unwrap().len(),
            fetched,
            "{fault:?}"
        );

        // What needs no write is answered as usual.
        let id = answered("Inhibit", fault, rig.handle.inhibit("test".into()))
            .await
            .unwrap();
        answered("Release", fault, rig.handle.control(Request::Release(id)))
            .await
            .unwrap();
        let r = answered("Reboot", fault, rig.handle.control(Request::Reboot)).await;
        assert!(
            matches!(r, Err(EngineError::NothingToInstall(_))),
            "{fault:?}: {r:?}"
        );
        answered(
            "ScheduleReboot",
            fault,
            rig.handle.control(Request::ScheduleReboot(0)),
        )
        .await
        .unwrap();
        answered("Ping", fault, rig.handle.ping()).await.unwrap();

        // A check with the update still on offer: the verified metadata cannot be recorded.
        let r = answered("CheckNow", fault, rig.handle.check_now()).await;
        assert!(is_store_error(&r), "CheckNow {fault:?}: {r:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn checks_work_again_once_the_store_does() {
    let rig = start(with_update(date(2026, 11, 1)));
    rig.handle
        .control(Request::SetAutoInstall(false))
        .await
        .unwrap();
    let held = inject(&rig, Fault::Locked).await;
    let fault = Some(Fault::Locked);
    let r = answered("CheckNow", fault, rig.handle.check_now()).await;
    assert!(is_store_error(&r), "{r:?}");
    drop(held);
    answered("CheckNow", None, rig.handle.check_now())
        .await
        .unwrap();
    let st = wait_for(&rig.handle, "the offer", |s| {
        s.state == UpdateState::Available
    })
    .await;
    let check = st.last_check.unwrap();
    assert!(check.verified, "{check:?}");
    assert!(check.message.contains("1.0.1"), "{}", check.message);
    assert_eq!(st.staleness, Staleness::Current);
}

#[tokio::test(start_paused = true)]
async fn a_check_without_a_source_or_with_bad_metadata_answers_store_failures_too() {
    for fault in FAULTS {
        // No source: the check ends at once, on the command's own turn.
        let rig = start(Setup {
            metadata: FakeMetadata::default(),
            ..Setup::default()
        });
        let _held = inject(&rig, fault).await;
        let r = answered("CheckNow", fault, rig.handle.check_now()).await;
        assert!(is_store_error(&r), "{fault:?}: {r:?}");
        let check = rig.handle.status().last_check.unwrap();
        assert_eq!(check.message, "no update source configured");

        // Metadata that fails verification: forgetting the last verification must be stored.
        let setup = Setup::default();
        setup
            .metadata
            .results
            .lock()
            .unwrap()
            .push_back(Err(MetadataError::Verify {
                source_name: "manufacturer".into(),
                message: "signature threshold not met".into(),
                retryable: false,
            }));
        let rig = start(setup);
        let _held = inject(&rig, fault).await;
        let r = answered("CheckNow", fault, rig.handle.check_now()).await;
        assert!(is_store_error(&r), "{fault:?}: {r:?}");
        let check = rig.handle.status().last_check.unwrap();
        assert!(!check.verified);
        assert!(check.message.contains("signature threshold"), "{check:?}");
    }
}

// ---- a RAUC that stops answering ---------------------------------------------------------

/// An update on offer with short RAUC limits: 10 s per call, nothing added per GiB.
fn with_short_rauc_limits() -> Setup {
    let mut setup = with_update(date(2026, 11, 1));
    setup.config.install.rauc_timeout = crate::config::Dur(SignedDuration::from_secs(10));
    setup.config.install.install_time_per_gib = crate::config::Dur(SignedDuration::ZERO);
    setup
}

#[tokio::test(start_paused = true)]
async fn a_hung_installation_fails_within_its_limit_is_reported_and_retried() {
    let rig = start(with_short_rauc_limits());
    rig.rauc.set_progress_steps(vec![crate::rauc::Progress {
        percentage: 20,
        message: "Copying image to rootfs.1".into(),
        depth: 2,
    }]);
    rig.rauc.hang_installs(1);
    let mut notices = rig.handle.notices();
    let started = tokio::time::Instant::now();
    answered("CheckNow", None, rig.handle.check_now())
        .await
        .unwrap();
    let st = wait_for(&rig.handle, "installing", |s| {
        s.state == UpdateState::Installing && s.progress == 20
    })
    .await;
    assert_eq!(st.rauc.availability, Availability::Running);

    let st = wait_for(&rig.handle, "the installation to fail", |s| {
        s.state == UpdateState::Failed
    })
    .await;
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(10) && took < Duration::from_secs(12),
        "{took:?}"
    );
    assert!(
        st.last_error.contains("RAUC stopped answering")
            && st.last_error.contains("10s")
            && st.last_error.contains("last progress: 20 %"),
        "{}",
        st.last_error
    );
    assert_eq!(
        st.rauc.availability,
        Availability::Unavailable,
        "Components shows RAUC is not answering"
    );
    let h = rig.history();
    assert_eq!(h[0].action, "failed");
    assert!(h[0].detail.contains("RAUC stopped answering"), "{:?}", h[0]);
    loop {
        match notices.recv().await.unwrap() {
            Notice::InstallFinished(f) => {
                assert_eq!(f.outcome, "failed");
                break;
            }
            _ => continue,
        }
    }
    assert_eq!(rig.pending(), None);
    // The engine is idle again: the watchdog is answered.
    rig.handle.ping().await.unwrap();

    // RAUC is heard from again (a restart), and the next check installs the update.
    rig.rauc_tx.send_replace(rauc_view("A", ""));
    wait_for(&rig.handle, "RAUC running again", |s| {
        s.rauc.availability == Availability::Running
    })
    .await;
    answered("CheckNow", None, rig.handle.check_now())
        .await
        .unwrap();
    wait_for(&rig.handle, "reboot-required", |s| {
        s.state == UpdateState::RebootRequired
    })
    .await;
    assert_eq!(rig.installs(), 2);
}

#[tokio::test(start_paused = true)]
async fn the_watchdog_is_not_answered_once_a_step_outlives_its_limit() {
    let rig = start(with_short_rauc_limits());
    answered("CheckNow", None, rig.handle.check_now())
        .await
        .unwrap();
    wait_for(&rig.handle, "reboot-required", |s| {
        s.state == UpdateState::RebootRequired
    })
    .await;
    // A health check that never ends and nothing that stops it (the double does not apply
    // `health_check_timeout`, as a forgotten limit would not): the step's limit is 0 checks
    // × the check timeout + one Mark (10 s); the loop keeps running throughout.
    rig.system.health_hangs.store(true, Ordering::SeqCst);
    rig.reboot_into("B", "1.0.1");
    wait_for(&rig.handle, "confirming", |s| {
        s.state == UpdateState::Confirming
    })
    .await;
    let started = tokio::time::Instant::now();
    rig.handle.ping().await.unwrap();
    tokio::time::sleep(Duration::from_secs(10) + stall::WATCHDOG_GRACE - Duration::from_secs(1))
        .await;
    rig.handle.ping().await.unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    match rig.handle.ping().await {
        Err(EngineError::Stalled(why)) => assert!(why.contains("confirming"), "{why}"),
        other => panic!("after {:?}: {other:?}", started.elapsed()),
    }
}
