//! The engine over test inputs: a real in-memory SQLite store, watch channels standing in for
//! the adapters' watchers, and a clock that follows Tokio's paused time.

use std::sync::Arc;
use std::time::Duration;

use jiff::civil::date;
use jiff::{SignedDuration, Timestamp};
use tokio::sync::watch;

use super::*;
use crate::clock::Clock;
use crate::config::{Config, PatchDate};
use crate::status::{Availability, SlotInfo};
use crate::store::NewHistoryEntry;

/// Wall-clock time that moves with `tokio::time`, so a paused runtime drives both.
struct TokioClock {
    base: Timestamp,
    start: tokio::time::Instant,
}

impl Clock for TokioClock {
    fn now(&self) -> Timestamp {
        let elapsed = SignedDuration::try_from(self.start.elapsed()).unwrap();
        self.base + elapsed
    }
}

const START: &str = "2026-11-27T10:00:00Z";

fn config() -> Config {
    let mut c = Config::default();
    c.device.model = "Test Gateway".into();
    c.device.hardware_id = "test-gw".into();
    c.device.version = "1.0.0".into();
    c.device.security_patch_level = Some(PatchDate(date(2026, 11, 1)));
    c
}

struct Rig {
    handle: Handle,
    rauc: watch::Sender<RaucInfo>,
    modem: watch::Sender<ModemInfo>,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

fn start_with(config: Config, store: Store) -> Rig {
    let clock = TokioClock {
        base: START.parse().unwrap(),
        start: tokio::time::Instant::now(),
    };
    let (rauc, rauc_rx) = watch::channel(RaucInfo::default());
    let (modem, modem_rx) = watch::channel(ModemInfo::default());
    let inputs = Inputs {
        rauc: rauc_rx,
        modem: modem_rx,
    };
    let (engine, handle) = Engine::new(Arc::new(config), store, clock, inputs, 42).unwrap();
    let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(engine.run(async move {
        let _ = stop_rx.await;
    }));
    Rig {
        handle,
        rauc,
        modem,
        stop,
        task,
    }
}

fn start() -> Rig {
    start_with(config(), Store::open_in_memory().unwrap())
}

/// Waits (in paused time, so instantly) until the published status satisfies `f`.
async fn wait_for(handle: &Handle, what: &str, f: impl Fn(&Status) -> bool) -> Status {
    let mut rx = handle.subscribe();
    let found = tokio::time::timeout(Duration::from_secs(2 * 86_400), async {
        loop {
            if f(&rx.borrow_and_update()) {
                return;
            }
            if rx.changed().await.is_err() {
                return;
            }
        }
    })
    .await;
    assert!(found.is_ok(), "timed out waiting for {what}");
    let st = handle.status();
    assert!(f(&st), "engine stopped before {what}");
    st
}

#[tokio::test(start_paused = true)]
async fn initial_status_comes_from_the_factory_image_and_is_unverified() {
    let rig = start();
    let st = rig.handle.status();
    let installed = st.installed.unwrap();
    assert_eq!(installed.version, "1.0.0");
    assert_eq!(installed.security_patch_level, date(2026, 11, 1));
    assert_eq!(installed.applied_at, None);
    assert_eq!(st.state, UpdateState::Idle);
    assert_eq!(st.staleness, Staleness::Unverified);
    assert!(st.auto_install);
    assert_eq!(st.model, "Test Gateway");
    assert_eq!(st.rauc.availability, Availability::Unknown);
}

#[tokio::test(start_paused = true)]
async fn the_store_record_beats_the_factory_image() {
    let store = Store::open_in_memory().unwrap();
    store
        .set_installed(&Installed {
            version: "1.1.0".into(),
            security_patch_level: date(2026, 11, 15),
            applied_at: Some("2026-11-20T08:00:00Z".parse().unwrap()),
        })
        .unwrap();
    store.set_setting(AUTO_INSTALL_KEY, "false").unwrap();
    let rig = start_with(config(), store);
    let st = rig.handle.status();
    assert_eq!(st.installed.unwrap().version, "1.1.0");
    assert!(!st.auto_install);
}

#[tokio::test(start_paused = true)]
async fn without_a_patch_level_nothing_is_made_up() {
    let mut c = config();
    c.device.security_patch_level = None;
    let rig = start_with(c, Store::open_in_memory().unwrap());
    assert_eq!(rig.handle.status().installed, None);
}

#[tokio::test(start_paused = true)]
async fn check_now_records_an_unverified_check_and_never_claims_current() {
    let rig = start();
    rig.handle.check_now().await.unwrap();
    let st = rig.handle.status();
    let check = st.last_check.expect("check recorded");
    assert!(!check.verified);
    assert_eq!(check.message, "no update source configured");
    assert_eq!(check.at, START.parse::<Timestamp>().unwrap());
    assert_eq!(st.staleness, Staleness::Unverified);
    assert_eq!(st.state, UpdateState::Idle);
}

#[tokio::test(start_paused = true)]
async fn first_check_runs_after_the_boot_delay_then_every_interval() {
    let rig = start();
    assert!(rig.handle.status().last_check.is_none());
    let st = wait_for(&rig.handle, "the boot check", |s| s.last_check.is_some()).await;
    let first = st.last_check.unwrap().at;
    assert_eq!(
        first,
        START.parse::<Timestamp>().unwrap() + SignedDuration::from_mins(2)
    );

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
async fn adapter_changes_reach_the_status() {
    let rig = start();
    let info = RaucInfo {
        availability: Availability::Running,
        compatible: "ssu-sandbox".into(),
        boot_slot: "A".into(),
        slots: vec![SlotInfo {
            name: "rootfs.0".into(),
            ..Default::default()
        }],
        ..Default::default()
    };
    rig.rauc.send_replace(info.clone());
    let st = wait_for(&rig.handle, "rauc info", |s| s.rauc == info).await;
    assert_eq!(st.rauc.boot_slot, "A");

    let modem = ModemInfo {
        availability: Availability::Unavailable,
        ..Default::default()
    };
    rig.modem.send_replace(modem.clone());
    wait_for(&rig.handle, "modem info", |s| s.modem == modem).await;
}

#[tokio::test(start_paused = true)]
async fn history_comes_from_the_store_newest_first_and_bounded() {
    let store = Store::open_in_memory().unwrap();
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
    let rig = start_with(config(), store);
    let h = rig.handle.history(2).await.unwrap();
    assert_eq!(h.len(), 2);
    assert_eq!(h[0].version.as_deref(), Some("1.0.2"));
    assert_eq!(h[1].version.as_deref(), Some("1.0.1"));
}

#[tokio::test(start_paused = true)]
async fn shutdown_stops_the_engine_and_handles_report_it() {
    let rig = start();
    rig.handle.ping().await.unwrap();
    rig.stop.send(()).unwrap();
    rig.task.await.unwrap();
    assert!(matches!(rig.handle.ping().await, Err(EngineError::Stopped)));
    assert!(matches!(
        rig.handle.check_now().await,
        Err(EngineError::Stopped)
    ));
}
