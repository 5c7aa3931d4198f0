//! The engine's cellular side over doubles: subscription settling, operator approvals and
//! their grace, the operator server's outage limit, and link-cost deferral — with Tokio's
//! paused time standing in for days.

use super::*;
use crate::config::{Dur, OperatorProfile};
use crate::metadata::schema::Severity;

const OPERATOR: &str = "telenet";

fn profile(name: &str, mcc: &str, grace_h: i64, fallback_h: i64) -> OperatorProfile {
    OperatorProfile {
        name: name.into(),
        mcc_mnc: vec![mcc.into()],
        iccid_prefixes: vec![],
        url: format!("https://{name}.example.com/").parse().unwrap(),
        root: "/etc/ssu/op.json".into(),
        approval_grace: Dur(SignedDuration::from_hours(grace_h)),
        fallback_after: Dur(SignedDuration::from_hours(fallback_h)),
    }
}

fn sim(mcc: &str) -> ModemInfo {
    ModemInfo {
        availability: Availability::Running,
        modems: 1,
        home_mcc_mnc: mcc.into(),
        registration_state: Some(1),
        ..ModemInfo::default()
    }
}

/// The manufacturer's 1.0.1, released `released_ago` before START, with `severity`.
fn target(released_ago_h: i64, severity: Severity) -> BundleTarget {
    let mut b = bundle("1.0.1", "1.0", date(2026, 11, 1));
    b.meta.released =
        START.parse::<Timestamp>().unwrap() - SignedDuration::from_hours(released_ago_h);
    b.meta.cves[0].severity = severity;
    b
}

/// The operator's approval of `t`: same name, length and hash, its own URL.
fn approval(t: &BundleTarget) -> BundleTarget {
    let mut a = t.clone();
    a.url = "https://telenet.example.com/targets/x".parse().unwrap();
    a
}

fn operator_repo(bundles: Option<Vec<BundleTarget>>) -> FakeMetadata {
    let m = FakeMetadata {
        configured: true,
        ..FakeMetadata::default()
    };
    *m.fallback.lock().unwrap() = bundles.map(|b| Verified {
        source: OPERATOR.into(),
        ..verified(b)
    });
    m
}

/// A device on telenet's SIM with the manufacturer offering `t`.
fn on_telenet(t: BundleTarget, operator: FakeMetadata, grace_h: i64, fallback_h: i64) -> Setup {
    let mut setup = Setup::default();
    *setup.metadata.fallback.lock().unwrap() = Some(verified(vec![t]));
    setup.config.operators = vec![
        profile(OPERATOR, "26201", grace_h, fallback_h),
        profile("other", "26202", 168, 24),
    ];
    setup.operators = vec![
        (OPERATOR.into(), operator),
        ("other".into(), operator_repo(Some(vec![]))),
    ];
    setup.modem = sim("26201");
    setup
}

fn actions(rig: &Rig) -> Vec<String> {
    rig.history().iter().map(|h| h.action.clone()).collect()
}

#[tokio::test(start_paused = true)]
async fn approved_updates_come_from_the_operator_channel() {
    let t = target(1, Severity::High);
    let rig = start(on_telenet(
        t.clone(),
        operator_repo(Some(vec![approval(&t)])),
        168,
        24,
    ));
    rig.handle.check_now().await.unwrap();
    let st = wait_for(&rig.handle, "installed", |s| {
        s.state == UpdateState::RebootRequired
    })
    .await;
    assert_eq!(st.available.as_ref().unwrap().source, OPERATOR);
    assert_eq!(st.source.source, OPERATOR);
    assert!(
        st.source.reason.contains("approved by operator telenet"),
        "{:?}",
        st.source
    );
    assert_eq!(st.source.url, "https://telenet.example.com/");
    assert_eq!(rig.operators[OPERATOR].fetches.load(Ordering::SeqCst), 1);
    assert_eq!(
        rig.pending().unwrap().target.url.host_str(),
        Some("telenet.example.com")
    );
}

#[tokio::test(start_paused = true)]
async fn a_differing_operator_listing_is_no_approval() {
    let t = target(1, Severity::High);
    let mut other_bytes = approval(&t);
    other_bytes.sha256 = [9; 32];
    let rig = start(on_telenet(
        t,
        operator_repo(Some(vec![other_bytes])),
        168,
        24,
    ));
    rig.handle.check_now().await.unwrap();
    let st = wait_for(&rig.handle, "waiting", |s| s.state == UpdateState::Deferred).await;
    assert!(
        st.source.reason.contains("waiting for operator telenet"),
        "{:?}",
        st.source
    );
    assert!(rig.fetcher.fetched.lock().unwrap().is_empty());
}

#[tokio::test(start_paused = true)]
async fn without_approval_it_waits_out_the_grace_then_uses_the_manufacturer() {
    // Released an hour ago, 24 h grace: waits until 23 h from now.
    let rig = start(on_telenet(
        target(1, Severity::High),
        operator_repo(Some(vec![])),
        24,
        24,
    ));
    rig.handle.check_now().await.unwrap();
    let st = wait_for(&rig.handle, "waiting", |s| s.state == UpdateState::Deferred).await;
    let until = START.parse::<Timestamp>().unwrap() + SignedDuration::from_hours(23);
    assert_eq!(st.source.waiting_until, Some(until));
    assert_eq!(st.source.source, OPERATOR);
    assert!(rig.fetcher.fetched.lock().unwrap().is_empty());

    // The engine looks again when the grace ends, without any command.
    let st = wait_for(&rig.handle, "installed", |s| {
        s.state == UpdateState::RebootRequired
    })
    .await;
    assert_eq!(st.available.as_ref().unwrap().source, "manufacturer");
    assert_eq!(st.source.source, "manufacturer");
    assert!(
        st.source.reason.starts_with("operator approval timed out"),
        "{:?}",
        st.source
    );
    assert_eq!(st.source.waiting_until, None);
    let timeout = rig
        .history()
        .into_iter()
        .find(|h| h.action == "operator-approval-timed-out")
        .expect("history entry");
    assert!(
        timeout.detail.contains("operator approval timed out"),
        "{}",
        timeout.detail
    );
    assert!(rig.handle.status().last_check.unwrap().at >= until);
}

/// The end of the approval grace is spread per device (issue 13): a fleet does not fall back
/// to the manufacturer in the same minute, and none before the grace ends.
#[tokio::test(start_paused = true)]
async fn two_devices_end_the_approval_grace_at_different_bounded_times() {
    let grace_end = START.parse::<Timestamp>().unwrap() + SignedDuration::from_hours(23);
    let mut ends = Vec::new();
    for seed in [1, 2] {
        let mut setup = on_telenet(
            target(1, Severity::High),
            operator_repo(Some(vec![])),
            24,
            24,
        );
        setup.seed = seed;
        setup.config.spread.approval = Dur(SignedDuration::from_hours(1));
        let rig = start(setup);
        rig.handle.check_now().await.unwrap();
        let st = wait_for(&rig.handle, "waiting", |s| s.state == UpdateState::Deferred).await;
        let until = st.source.waiting_until.unwrap();
        assert!(
            until >= grace_end && until <= grace_end + SignedDuration::from_hours(1),
            "{until}"
        );
        ends.push(until);
    }
    assert_ne!(ends[0], ends[1], "approval grace ends in lockstep");
}

#[tokio::test(start_paused = true)]
async fn past_the_grace_the_manufacturer_is_used_at_once() {
    let rig = start(on_telenet(
        target(72, Severity::High),
        operator_repo(Some(vec![])),
        48,
        24,
    ));
    rig.handle.check_now().await.unwrap();
    let st = wait_for(&rig.handle, "installed", |s| {
        s.state == UpdateState::RebootRequired
    })
    .await;
    assert_eq!(st.available.unwrap().source, "manufacturer");
    assert!(actions(&rig).contains(&"operator-approval-timed-out".to_owned()));
}

#[tokio::test(start_paused = true)]
async fn operator_server_down_past_its_limit_falls_back_to_the_manufacturer() {
    // Approval grace of 7 days would hold it long; the outage limit (1 h) is what ends the wait.
    let rig = start(on_telenet(
        target(1, Severity::High),
        operator_repo(None),
        168,
        1,
    ));
    rig.handle.check_now().await.unwrap();
    let st = wait_for(&rig.handle, "waiting", |s| s.state == UpdateState::Deferred).await;
    assert!(
        st.source.reason.contains("server unusable"),
        "{:?}",
        st.source
    );
    let until = st.source.waiting_until.unwrap();
    assert_eq!(
        until,
        START.parse::<Timestamp>().unwrap() + SignedDuration::from_hours(1)
    );
    let st = wait_for(&rig.handle, "installed", |s| {
        s.state == UpdateState::RebootRequired
    })
    .await;
    assert_eq!(st.available.unwrap().source, "manufacturer");
    assert!(
        st.source.reason.contains("telenet server unusable since"),
        "{:?}",
        st.source
    );
    assert!(st.source.reason.contains("manufacturer"), "{:?}", st.source);
}

#[tokio::test(start_paused = true)]
async fn the_outage_clock_survives_a_restart() {
    let setup = on_telenet(target(1, Severity::High), operator_repo(None), 168, 1);
    let mut rig = start(setup);
    rig.handle.check_now().await.unwrap();
    wait_for(&rig.handle, "waiting", |s| s.state == UpdateState::Deferred).await;
    rig.stop().await;
    tokio::time::advance(Duration::from_secs(2 * 3600)).await;
    let mut setup = on_telenet(target(1, Severity::High), operator_repo(None), 168, 1);
    setup.db = Some(rig.db.clone());
    let rig2 = start(setup);
    rig2.handle.check_now().await.unwrap();
    // The outage began before the restart: the limit has passed, no new wait.
    let st = wait_for(&rig2.handle, "installed", |s| {
        s.state == UpdateState::RebootRequired
    })
    .await;
    assert_eq!(st.available.unwrap().source, "manufacturer");
}

#[tokio::test(start_paused = true)]
async fn sim_swap_to_another_profile_is_a_subscription_change() {
    let rig = start(on_telenet(
        target(1, Severity::High),
        operator_repo(Some(vec![])),
        168,
        24,
    ));
    let mut notices = rig.handle.notices();
    let st = wait_for(&rig.handle, "subscription", |s| s.subscription.known).await;
    assert_eq!(st.subscription.profile, OPERATOR);
    // First SIM ever seen: recorded, not a change.
    assert!(actions(&rig).is_empty());

    // IMSI/ICCID change within the profile (same home network): nothing changes.
    rig.modem_tx.send_replace(ModemInfo {
        iccid_masked: "…9999".into(),
        ..sim("26201")
    });
    // ModemManager away: unknown meanwhile, the profile kept.
    rig.modem_tx.send_replace(ModemInfo {
        availability: Availability::Unavailable,
        ..ModemInfo::default()
    });
    let st = wait_for(&rig.handle, "unknown", |s| !s.subscription.known).await;
    assert_eq!(st.subscription.profile, OPERATOR);
    rig.modem_tx.send_replace(sim("26201"));
    wait_for(&rig.handle, "known again", |s| s.subscription.known).await;
    assert!(actions(&rig).is_empty(), "{:?}", actions(&rig));

    rig.modem_tx.send_replace(sim("26202"));
    let st = wait_for(&rig.handle, "other", |s| s.subscription.profile == "other").await;
    assert!(st.subscription.known);
    match notices.recv().await.unwrap() {
        Notice::SubscriptionChanged(c) => {
            assert_eq!(
                (c.previous.as_str(), c.profile.as_str()),
                (OPERATOR, "other")
            );
        }
        other => panic!("unexpected notice {other:?}"),
    }
    rig.modem_tx.send_replace(sim("20801"));
    wait_for(&rig.handle, "none", |s| s.subscription.profile == "none").await;
    let h = rig.history();
    assert_eq!(h[0].detail, "subscription changed from other to none");
    assert_eq!(h[1].detail, "subscription changed from telenet to other");
    let stored = Store::open(&rig.db).unwrap().state("subscription").unwrap();
    assert_eq!(stored.as_deref(), Some("none"));
    // The new channel is looked at straight away.
    wait_for(&rig.handle, "a check on the new channel", |s| {
        s.last_check.is_some()
    })
    .await;
    assert_eq!(rig.operators["other"].fetches.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn metered_defers_non_critical_until_the_link_is_cheap() {
    let mut setup = on_telenet(target(1, Severity::High), operator_repo(None), 168, 24);
    setup.config.operators.clear();
    setup.network = NetworkInfo {
        availability: Availability::Running,
        metered: Some(true),
    };
    let rig = start(setup);
    rig.handle.check_now().await.unwrap();
    let st = wait_for(&rig.handle, "deferred", |s| {
        s.state == UpdateState::Deferred
    })
    .await;
    assert!(
        st.source.deferred.starts_with("metered connection"),
        "{:?}",
        st.source
    );
    assert!(rig.fetcher.fetched.lock().unwrap().is_empty());
    rig.network_tx.send_replace(NetworkInfo {
        availability: Availability::Running,
        metered: Some(false),
    });
    let st = wait_for(&rig.handle, "installed", |s| {
        s.state == UpdateState::RebootRequired
    })
    .await;
    assert_eq!(st.source.deferred, "");
}

#[tokio::test(start_paused = true)]
async fn roaming_lets_critical_through() {
    let mut setup = on_telenet(target(1, Severity::Critical), operator_repo(None), 168, 24);
    setup.config.operators.clear();
    setup.modem.registration_state = Some(5);
    let rig = start(setup);
    rig.handle.check_now().await.unwrap();
    wait_for(&rig.handle, "installed", |s| {
        s.state == UpdateState::RebootRequired
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn the_monthly_budget_counts_costly_bytes_and_defers_when_spent() {
    let mut setup = on_telenet(target(1, Severity::High), operator_repo(None), 168, 24);
    setup.config.operators.clear();
    setup.config.link_cost.defer_when_metered = false;
    setup.config.link_cost.monthly_budget_bytes = Some(5000);
    setup.network = NetworkInfo {
        availability: Availability::Running,
        metered: Some(true),
    };
    // 4096 bytes of the 5000 were used this month already.
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("agent.db");
    Store::open(&db)
        .unwrap()
        .set_state("link_budget", Some(r#"{"month":"2026-11","bytes":4096}"#))
        .unwrap();
    setup.db = Some(db);
    let rig = start(setup);
    rig.handle.check_now().await.unwrap();
    let st = wait_for(&rig.handle, "deferred", |s| {
        s.state == UpdateState::Deferred
    })
    .await;
    assert!(st.source.deferred.contains("budget"), "{:?}", st.source);
    assert!(
        st.source.deferred.contains("4096 of 5000"),
        "{:?}",
        st.source
    );
}

#[tokio::test(start_paused = true)]
async fn a_costly_download_is_counted() {
    let mut setup = on_telenet(target(1, Severity::High), operator_repo(None), 168, 24);
    setup.config.operators.clear();
    setup.config.link_cost.defer_when_roaming = false;
    setup.modem.registration_state = Some(7);
    let rig = start(setup);
    rig.handle.check_now().await.unwrap();
    wait_for(&rig.handle, "installed", |s| {
        s.state == UpdateState::RebootRequired
    })
    .await;
    let budget = Store::open(&rig.db).unwrap().state("link_budget").unwrap();
    assert_eq!(
        budget.as_deref(),
        Some(r#"{"month":"2026-11","bytes":4096}"#)
    );
}

#[tokio::test(start_paused = true)]
async fn a_bundle_missing_on_the_operator_server_counts_as_an_outage() {
    let t = target(1, Severity::High);
    let rig = start(on_telenet(
        t.clone(),
        operator_repo(Some(vec![approval(&t)])),
        168,
        1,
    ));
    // The operator's metadata verifies, but its copy of the bundle is not there.
    rig.fetcher
        .results
        .lock()
        .unwrap()
        .push_back(Err(FetchFailure {
            message: "404 Not Found".into(),
            retryable: true,
            storage: false,
        }));
    rig.handle.check_now().await.unwrap();
    wait_for(&rig.handle, "failed", |s| s.state == UpdateState::Failed).await;
    // Metadata verifying again does not end the outage: the next check waits for its limit,
    // then the manufacturer's server is used.
    rig.handle.check_now().await.unwrap();
    let st = wait_for(&rig.handle, "waiting", |s| s.state == UpdateState::Deferred).await;
    assert!(st.source.reason.contains("unusable"), "{:?}", st.source);
    let st = wait_for(&rig.handle, "installed", |s| {
        s.state == UpdateState::RebootRequired
    })
    .await;
    assert_eq!(st.available.unwrap().source, "manufacturer");
    let fetched = rig.fetcher.fetched.lock().unwrap().len();
    assert_eq!(fetched, 2);
}

#[tokio::test(start_paused = true)]
async fn a_failing_check_after_the_wake_time_does_not_spin() {
    let rig = start(on_telenet(
        target(1, Severity::High),
        operator_repo(Some(vec![])),
        2,
        24,
    ));
    rig.handle.check_now().await.unwrap();
    wait_for(&rig.handle, "waiting", |s| s.state == UpdateState::Deferred).await;
    // From now on the manufacturer's server is unreachable too.
    rig.metadata.results.lock().unwrap().extend((0..3).map(|_| {
        Err(MetadataError::Verify {
            source_name: "manufacturer".into(),
            message: "unreachable".into(),
            retryable: true,
        })
    }));
    *rig.metadata.fallback.lock().unwrap() = None;
    tokio::time::sleep(Duration::from_secs(6 * 3600)).await;
    // One check at the wake time, then the ordinary retry back-off (5, 10, 20, … minutes) —
    // not a check per tick.
    let fetches = rig.metadata.fetches.load(Ordering::SeqCst);
    assert!((3..=10).contains(&fetches), "{fetches} checks in 6 hours");
}
