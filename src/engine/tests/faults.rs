//! Every command is answered, whatever the store does: each kind of store failure the real
//! SQLite database can produce is injected into the running engine, then every command is
//! sent. A command that needed a write that failed answers with the store's error; the
//! check's outcome still shows in `LastCheckResult`; nothing hangs.

use super::*;

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
