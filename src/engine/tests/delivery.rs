//! Delivery to the fleet server over the courier double: reports after an install and a
//! rollback, the queue kept across failures and restarts, its bounds, the backoff, and the
//! byte budget on costly links, and what the status shows of it — in Tokio's paused time.

use super::*;
use crate::config::Dur;
use crate::status::ReportDelivery;

type Posts = Vec<(u64, tokio::time::Instant, serde_json::Value)>;

/// Waits (in paused time) until the courier saw `n` POSTs; returns them all.
async fn posts(c: &FakeCourier, n: usize) -> Posts {
    posts_within(c, n, 200_000).await
}

/// [`posts`], failing after `secs` seconds (so a periodic report cannot stand in for the
/// one a change must send).
async fn posts_within(c: &FakeCourier, n: usize, secs: u64) -> Posts {
    for _ in 0..secs {
        if c.posted.lock().unwrap().len() >= n {
            return c.posted.lock().unwrap().clone();
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    panic!("fewer than {n} POSTs: {:#?}", c.posted.lock().unwrap());
}

/// The counters in the store's queue, oldest first.
fn queued(rig: &Rig) -> Vec<u64> {
    let store = Store::open(&rig.db).unwrap();
    let mut out = Vec::new();
    let mut ids = store.report_queue().unwrap();
    ids.sort_by_key(|q| q.id);
    // Read every body through a throwaway copy of the queue order.
    let conn = rusqlite::Connection::open(&rig.db).unwrap();
    for q in ids {
        let body: String = conn
            .query_row("SELECT body FROM report_queue WHERE id = ?1", [q.id], |r| {
                r.get(0)
            })
            .unwrap();
        out.push(crate::report::identify(&body).unwrap().1);
    }
    out
}

fn secs(n: i64) -> Dur {
    Dur(SignedDuration::from_secs(n))
}

fn delivering(courier: &Arc<FakeCourier>) -> Setup {
    let mut setup = Setup {
        courier: Some(courier.clone()),
        ..Setup::default()
    };
    setup.config.check.boot_delay = secs(60);
    setup
}

/// A periodic report every 5 minutes into a queue of at most 3, to a server that refuses the
/// connection for the next 200 attempts; retried every 2 minutes, so its return is seen
/// before the next periodic report.
fn a_small_queue_and_the_server_down(courier: &Arc<FakeCourier>) -> Setup {
    *courier.answers.lock().unwrap() = (0..200)
        .map(|_| Err("cannot POST: connection refused".to_owned()))
        .collect();
    let mut setup = delivering(courier);
    setup.config.check.interval = secs(300);
    setup.config.report.max_queued = 3;
    setup.config.report.retry_initial = secs(120);
    setup.config.report.retry_max = secs(120);
    setup
}

#[tokio::test(start_paused = true)]
async fn without_a_fleet_server_nothing_is_signed_or_queued() {
    let courier = Arc::new(FakeCourier::default());
    let rig = start(delivering(&courier));
    tokio::time::sleep(Duration::from_secs(3 * 86_400)).await;
    assert_eq!(courier.counter.load(Ordering::SeqCst), 0);
    assert!(courier.posted.lock().unwrap().is_empty());
    assert!(queued(&rig).is_empty());
    assert_eq!(rig.handle.status().delivery, ReportDelivery::default());
}

#[tokio::test(start_paused = true)]
async fn an_install_and_a_rollback_each_send_a_report_of_the_status_after_them() {
    let courier = FakeCourier::on();
    let mut setup = with_update(date(2026, 11, 1));
    setup.courier = Some(courier.clone());
    // No periodic report within the test: each report seen is the change's.
    setup.config.check.boot_delay = secs(86_400);
    let rig = start(setup);
    rig.handle.check_now().await.unwrap();
    wait_for(&rig.handle, "installed", |s| {
        s.state == UpdateState::RebootRequired
    })
    .await;
    rig.reboot_into("B", "1.0.1");
    wait_for(&rig.handle, "confirmed", |s| {
        s.installed.as_ref().is_some_and(|i| i.version == "1.0.1")
    })
    .await;
    let all = posts_within(&courier, 1, 60).await;
    let (_, _, report) = all.last().unwrap();
    assert_eq!(report["version"], "1.0.1");
    assert_eq!(report["booted_slot"], "B");
    assert_eq!(report["state"], "idle");
    assert!(
        queued(&rig).is_empty(),
        "acknowledged reports leave the queue"
    );

    // A second update that fails its health check: one report when it is rejected (still on
    // B), one once the old slot runs again.
    let mut v = verified(vec![bundle("1.0.2", "1.0", date(2026, 12, 1))]);
    v.versions.timestamp = 3;
    v.versions.snapshot = 3;
    v.versions.targets = 3;
    *rig.metadata.fallback.lock().unwrap() = Some(v);
    rig.rauc.add_bundle(
        "/cache/1.0.2",
        BundleInfo {
            compatible: "ssu-sandbox".into(),
            version: "1.0.2".into(),
            manifest_hash: String::new(),
        },
    );
    rig.handle.check_now().await.unwrap();
    wait_for(&rig.handle, "installed", |s| {
        s.state == UpdateState::RebootRequired
    })
    .await;
    *rig.system.health.lock().unwrap() = Err("health check `app-selftest` failed".into());
    rig.reboot_into("A", "1.0.2");
    wait_for(&rig.handle, "rolled back", |s| {
        s.state == UpdateState::RolledBack
    })
    .await;
    rig.reboot_into("B", "1.0.2");
    let before = all.len();
    let all = posts_within(&courier, before + 2, 60).await;
    let last = &all.last().unwrap().2;
    assert_eq!(last["state"], "rolled-back");
    assert_eq!(last["booted_slot"], "B");
    assert_eq!(last["version"], "1.0.1");
    let counters: Vec<u64> = all.iter().map(|p| p.0).collect();
    let mut unique = counters.clone();
    unique.dedup();
    assert_eq!(unique, counters, "each report sent once: {counters:?}");
}

#[tokio::test(start_paused = true)]
async fn a_subscription_change_and_an_integrity_change_each_send_a_report() {
    use crate::config::OperatorProfile;
    use crate::status::IntegrityState;
    let fixture = tempfile::tempdir().unwrap();
    let tainted = fixture.path().join("proc/sys/kernel/tainted");
    std::fs::create_dir_all(tainted.parent().unwrap()).unwrap();
    std::fs::write(&tainted, "0\n").unwrap();
    let courier = FakeCourier::on();
    let mut setup = delivering(&courier);
    setup.config.integrity = crate::config::IntegrityConfig {
        root: fixture.path().to_owned(),
        ..Default::default()
    };
    let profile = |name: &str, mcc: &str| OperatorProfile {
        name: name.into(),
        mcc_mnc: vec![mcc.into()],
        iccid_prefixes: vec![],
        url: format!("https://{name}.example.com/").parse().unwrap(),
        root: "/etc/ssu/op.json".into(),
        approval_grace: secs(3600),
        fallback_after: secs(3600),
    };
    setup.config.operators = vec![profile("telenet", "26201"), profile("other", "26202")];
    let sim = |mcc: &str| ModemInfo {
        availability: crate::status::Availability::Running,
        modems: 1,
        home_mcc_mnc: mcc.into(),
        registration_state: Some(1),
        ..ModemInfo::default()
    };
    setup.modem = sim("26201");
    let rig = start(setup);
    // The first periodic report (the first SIM and the first verdict are no changes).
    let first = posts(&courier, 1).await;
    assert_eq!(first[0].2["subscription"], "telenet");
    tokio::time::sleep(Duration::from_secs(600)).await;
    assert_eq!(courier.posted.lock().unwrap().len(), 1);

    rig.modem_tx.send_replace(sim("26202"));
    let all = posts_within(&courier, 2, 60).await;
    assert_eq!(all[1].2["subscription"], "other");

    std::fs::write(&tainted, "8192\n").unwrap();
    rig.handle.check_now().await.unwrap();
    wait_for(&rig.handle, "compromised", |s| {
        s.integrity.state == IntegrityState::Compromised
    })
    .await;
    let all = posts_within(&courier, 3, 60).await;
    assert_eq!(all[2].2["integrity"], "compromised");
    assert_eq!(all.len(), 3, "{all:#?}");
}

#[tokio::test(start_paused = true)]
async fn a_failed_delivery_stays_queued_and_is_retried_with_growing_waits() {
    let courier = FakeCourier::on();
    *courier.answers.lock().unwrap() = VecDeque::from([
        Ok((500, b"internal error".to_vec())),
        Err("https://fleet.example/ did not answer within 30s".into()),
        Ok((200, b"<html>captive portal</html>".to_vec())),
        Ok((403, b"device not enrolled".to_vec())),
    ]);
    let mut setup = delivering(&courier);
    setup.config.report.retry_initial = secs(60);
    setup.config.report.retry_max = secs(180);
    let rig = start(setup);
    let first = posts(&courier, 1).await;
    assert_eq!(queued(&rig), [1], "kept after a 500");
    let all = posts(&courier, 5).await;
    assert!(all.iter().all(|p| p.0 == 1), "the same report every time");
    // Each wait is in the upper half of initial·2^n, capped.
    let gaps: Vec<u64> = all
        .windows(2)
        .map(|w| (w[1].1 - w[0].1).as_secs())
        .collect();
    for (gap, (lo, hi)) in gaps.iter().zip([(30, 60), (60, 120), (90, 180), (90, 180)]) {
        assert!((lo..=hi).contains(gap), "gaps {gaps:?}");
    }
    drop(first);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(queued(&rig).is_empty(), "delivered at the fifth attempt");
    // Delivered means no more attempts.
    tokio::time::sleep(Duration::from_secs(3600)).await;
    assert_eq!(courier.posted.lock().unwrap().len(), 5);
}

#[tokio::test(start_paused = true)]
async fn a_refused_report_is_dropped_and_the_next_one_goes_out() {
    let courier = FakeCourier::on();
    *courier.answers.lock().unwrap() =
        VecDeque::from([Ok((422, br#"{"reason":"bad signature"}"#.to_vec()))]);
    let mut setup = delivering(&courier);
    setup.config.check.interval = secs(300);
    let rig = start(setup);
    let all = posts(&courier, 2).await;
    assert_eq!((all[0].0, all[1].0), (1, 2), "refused once, not retried");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(queued(&rig).is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_full_queue_drops_the_oldest_and_delivers_the_rest_in_order_once() {
    let courier = FakeCourier::on();
    let rig = start(a_small_queue_and_the_server_down(&courier));
    // Periodic reports at 1, 6, 11, 16, 21 and 26 minutes; the server is down.
    tokio::time::sleep(Duration::from_secs(27 * 60)).await;
    assert_eq!(courier.counter.load(Ordering::SeqCst), 6);
    assert_eq!(queued(&rig), [4, 5, 6], "the oldest went first");

    // The server is back: what is queued arrives in order, each once.
    let seen = courier.posted.lock().unwrap().len();
    courier.answers.lock().unwrap().clear();
    let all = posts(&courier, seen + 3).await;
    let after: Vec<u64> = all[seen..].iter().map(|p| p.0).collect();
    assert_eq!(&after[..3], [4, 5, 6]);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut delivered: Vec<u64> = courier.posted.lock().unwrap()[seen..]
        .iter()
        .map(|p| p.0)
        .collect();
    let n = delivered.len();
    delivered.dedup();
    assert_eq!(delivered.len(), n, "no report sent twice once acknowledged");
}

#[tokio::test(start_paused = true)]
async fn the_queue_survives_a_restart_and_is_delivered_after_it() {
    let courier = FakeCourier::on();
    *courier.answers.lock().unwrap() = (0..50)
        .map(|_| Err("connection refused".to_owned()))
        .collect();
    let rig = start(delivering(&courier));
    posts(&courier, 1).await;
    assert_eq!(queued(&rig), [1]);

    let back = FakeCourier::on();
    back.counter.store(100, Ordering::SeqCst);
    let rig = restart(rig, delivering(&back)).await;
    let all = posts(&back, 1).await;
    assert_eq!(all[0].0, 1, "the report queued before the restart");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(queued(&rig).is_empty());
    // No new periodic report right after the restart: the interval counts from the last.
    assert_eq!(back.counter.load(Ordering::SeqCst), 100);
}

#[tokio::test(start_paused = true)]
async fn on_a_costly_link_reports_count_against_the_budget_and_wait_when_it_is_spent() {
    let metered = NetworkInfo {
        availability: crate::status::Availability::Running,
        metered: Some(true),
    };
    let courier = FakeCourier::on();
    let mut setup = delivering(&courier);
    setup.network = metered.clone();
    setup.config.link_cost.monthly_budget_bytes = Some(100);
    let rig = start(setup);
    tokio::time::sleep(Duration::from_secs(3600)).await;
    assert_eq!(
        courier.counter.load(Ordering::SeqCst),
        1,
        "signed and queued"
    );
    assert!(
        courier.posted.lock().unwrap().is_empty(),
        "held for the budget"
    );
    assert_eq!(queued(&rig), [1]);
    // Shown as the reason the queue waits, not as an error: nothing was attempted.
    let d = rig.handle.status().delivery;
    assert_eq!(d.queued, 1);
    assert!(d.waiting.starts_with("monthly budget"), "{d:?}");
    assert!(
        d.waiting.contains("reports wait for a cheaper link"),
        "{d:?}"
    );
    assert_eq!(d.last_error, "");
    rig.network_tx.send_replace(NetworkInfo {
        metered: Some(false),
        ..metered.clone()
    });
    posts(&courier, 1).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(queued(&rig).is_empty());
    let d = rig.handle.status().delivery;
    assert_eq!((d.queued, d.waiting.as_str()), (0, ""), "{d:?}");

    // Within the budget a costly link carries it, and the bytes are counted.
    let courier = FakeCourier::on();
    let mut setup = delivering(&courier);
    setup.network = metered;
    setup.config.link_cost.monthly_budget_bytes = Some(1_000_000);
    let rig = start(setup);
    posts(&courier, 1).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let budget = Store::open(&rig.db)
        .unwrap()
        .state("link_budget")
        .unwrap()
        .unwrap();
    let used: serde_json::Value = serde_json::from_str(&budget).unwrap();
    assert!(used["bytes"].as_u64().unwrap() > 100, "{budget}");
}

#[tokio::test(start_paused = true)]
async fn the_status_shows_the_queue_the_last_delivery_and_a_clean_last_error() {
    let courier = FakeCourier::on();
    *courier.answers.lock().unwrap() = VecDeque::from([
        Err("cannot POST to https://fleet.example/reports: connection refused".into()),
        // A hostile or broken server: terminal escapes and a flood of text.
        Ok((
            503,
            [
                &b"\x1b[2J\x1b]0;owned\x07overloaded\x1b[31m,\r\ntry later "[..],
                &[b'z'; 3000][..],
            ]
            .concat(),
        )),
    ]);
    let mut setup = delivering(&courier);
    setup.config.report.retry_initial = secs(60);
    setup.config.report.retry_max = secs(60);
    let rig = start(setup);
    assert_eq!(
        rig.handle.status().delivery,
        ReportDelivery {
            configured: true,
            ..ReportDelivery::default()
        }
    );

    let st = wait_for(&rig.handle, "the connection failure shown", |s| {
        !s.delivery.last_error.is_empty()
    })
    .await;
    assert_eq!(
        st.delivery.last_error,
        "cannot POST to https://fleet.example/reports: connection refused"
    );
    assert_eq!((st.delivery.queued, st.delivery.last_delivered), (1, None));

    let st = wait_for(&rig.handle, "the server's answer shown", |s| {
        s.delivery.last_error.contains("503")
    })
    .await;
    let shown = &st.delivery.last_error;
    assert!(
        shown.starts_with("the server answered 503: overloaded, try later zzz"),
        "{shown:?}"
    );
    assert!(
        !shown.contains(['\u{1b}', '\u{7}', '\n', '\r']),
        "{shown:?}"
    );
    assert!(
        !shown.contains("[31m") && !shown.contains("owned"),
        "{shown:?}"
    );
    assert!(
        shown.chars().count() <= MAX_SHOWN,
        "{}",
        shown.chars().count()
    );
    assert_eq!(st.delivery.queued, 1);

    let st = wait_for(&rig.handle, "the report delivered", |s| {
        s.delivery.last_delivered.is_some()
    })
    .await;
    assert_eq!(st.delivery.queued, 0, "{:?}", st.delivery);
    assert_eq!(
        st.delivery.last_error, "",
        "a delivery clears the last error"
    );
    let delivered = st.delivery.last_delivered.unwrap();
    let start: Timestamp = START.parse().unwrap();
    // Two failed attempts, each followed by a wait of 30 to 60 s, after the first report.
    assert!(
        delivered >= start + SignedDuration::from_secs(60 + 2 * 30)
            && delivered <= start + SignedDuration::from_secs(60 + 2 * 60 + 5),
        "{delivered}"
    );

    // Kept across a restart (the new engine's clock starts at START again).
    let rig = restart(rig, delivering(&FakeCourier::on())).await;
    assert_eq!(
        rig.handle.status().delivery,
        ReportDelivery {
            configured: true,
            queued: 0,
            last_delivered: Some(delivered),
            last_error: String::new(),
            waiting: String::new(),
        }
    );
}

/// The longest last error the status shows (characters).
const MAX_SHOWN: usize = 240;

#[tokio::test(start_paused = true)]
async fn the_status_counts_queued_reports_through_drops_refusals_and_restarts() {
    let courier = FakeCourier::on();
    let rig = start(a_small_queue_and_the_server_down(&courier));
    // Periodic reports at 1, 6, 11, 16 and 21 minutes; the server is down.
    wait_for(&rig.handle, "two reports queued", |s| {
        s.delivery.queued == 2
    })
    .await;
    assert_eq!(queued(&rig).len(), 2);
    // Five into a queue of three: the oldest dropped, the count right.
    tokio::time::sleep(Duration::from_secs(16 * 60)).await;
    assert_eq!(courier.counter.load(Ordering::SeqCst), 5);
    assert_eq!(rig.handle.status().delivery.queued, 3);

    // After a restart the count comes from the store. The server refuses them all for good:
    // they leave the queue, none counts as delivered, and the last refusal is shown.
    let back = FakeCourier::on();
    let refused = Ok((422, br#"{"reason":"bad signature"}"#.to_vec()));
    *back.answers.lock().unwrap() = VecDeque::from(vec![refused; 3]);
    let rig = restart(rig, delivering(&back)).await;
    assert_eq!(rig.handle.status().delivery.queued, 3);
    let st = wait_for(&rig.handle, "the refusals shown", |s| {
        s.delivery.queued == 0 && !s.delivery.last_error.is_empty()
    })
    .await;
    assert_eq!(
        st.delivery.last_error,
        "report 5 dropped: the server refused it (422): bad signature"
    );
    assert_eq!(st.delivery.last_delivered, None, "a refusal is no delivery");
    assert!(queued(&rig).is_empty());
    // The next periodic report is taken.
    let st = wait_for(&rig.handle, "a delivery", |s| {
        s.delivery.last_delivered.is_some()
    })
    .await;
    assert_eq!(
        (st.delivery.queued, st.delivery.last_error.as_str()),
        (0, "")
    );
}
