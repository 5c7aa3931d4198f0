//! The device's own storage failing (a full disk) is said as such: never "did not verify",
//! never a refusal of the update in the history, and what verified before still stands.

use super::*;

fn disk_full(path: &str) -> MetadataError {
    MetadataError::Storage {
        source_name: "manufacturer".into(),
        path: PathBuf::from(path),
        source: std::io::Error::from_raw_os_error(28), // ENOSPC
    }
}

#[tokio::test(start_paused = true)]
async fn a_full_disk_under_the_metadata_cache_is_a_storage_error_not_a_verification_failure() {
    let setup = with_update(date(2026, 11, 1));
    setup
        .metadata
        .results
        .lock()
        .unwrap()
        .push_back(Err(disk_full("/var/lib/ssu-agent/tuf/timestamp.json")));
    let rig = start(setup);
    rig.handle
        .control(Request::SetAutoInstall(false))
        .await
        .unwrap();

    // The caller hears it at once, under its own name, with what to do.
    let r = rig.handle.check_now().await;
    let Err(EngineError::Storage(message)) = &r else {
        panic!("{r:?}");
    };
    assert!(message.contains("No space left on device"), "{message}");
    assert!(
        message.contains("the disk is full: free space"),
        "{message}"
    );
    assert!(!message.contains("did not verify"), "{message}");
    let st = rig.handle.status();
    let check = st.last_check.clone().unwrap();
    assert!(!check.verified);
    assert!(
        check.message.starts_with("could not check for updates:")
            && check.message.contains("the disk is full"),
        "{check:?}"
    );
    assert!(!check.message.contains("did not verify"), "{check:?}");
    assert!(
        rig.history().iter().all(|e| e.action != "refused"),
        "{:?}",
        rig.history()
    );

    // Room again: the next check verifies and offers the update.
    rig.handle.check_now().await.unwrap();
    let st = rig.handle.status();
    assert!(st.last_check.unwrap().verified);
    assert!(st.available.is_some());
}

#[tokio::test(start_paused = true)]
async fn a_full_disk_keeps_what_verified_before() {
    let setup = with_update(date(2026, 11, 1));
    let rig = start(setup);
    rig.handle
        .control(Request::SetAutoInstall(false))
        .await
        .unwrap();
    rig.handle.check_now().await.unwrap();
    let before = rig.handle.status();
    assert_eq!(before.staleness, Staleness::Current);

    rig.metadata
        .results
        .lock()
        .unwrap()
        .push_back(Err(disk_full("/var/lib/ssu-agent/tuf")));
    let r = rig.handle.check_now().await;
    assert!(matches!(r, Err(EngineError::Storage(_))), "{r:?}");
    let st = rig.handle.status();
    // Not the repository's fault: the last verification still stands (a failed check
    // withdraws an offer, whatever the cause, as for network trouble).
    assert_eq!(st.verified, before.verified);
    assert_eq!(st.staleness, Staleness::Current);
}

#[tokio::test(start_paused = true)]
async fn a_download_that_fills_the_disk_is_no_refusal_and_the_next_check_resumes() {
    let rig = start(with_update(date(2026, 11, 1)));
    rig.fetcher
        .results
        .lock()
        .unwrap()
        .push_back(Err(FetchFailure {
            message: "/var/cache/ssu-agent/x.part: No space left on device (os error 28); the \
                      disk is full: free space on it, then check again"
                .into(),
            retryable: false,
            storage: true,
        }));
    rig.handle.check_now().await.unwrap();
    let st = wait_for(&rig.handle, "failed", |s| s.state == UpdateState::Failed).await;
    assert!(st.last_error.contains("No space left on device"), "{st:?}");
    assert!(!st.last_error.starts_with("refused"), "{st:?}");
    let h = rig.history();
    assert!(h.iter().all(|e| e.action != "refused"), "{h:?}");
    assert_eq!(rig.installs(), 0);

    // The next check downloads (resumes) and installs.
    rig.handle.check_now().await.unwrap();
    wait_for(&rig.handle, "reboot-required", |s| {
        s.state == UpdateState::RebootRequired
    })
    .await;
    assert_eq!(rig.installs(), 1);
}
