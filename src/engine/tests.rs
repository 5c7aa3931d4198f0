//! The engine over test doubles of its adapters: a real SQLite store (in a temporary
//! directory, so restarts can be simulated), the RAUC fake, scripted metadata, fetcher and
//! system, watch channels standing in for the watchers, and a clock that follows Tokio's
//! paused time.

use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jiff::civil::date;
use jiff::{SignedDuration, Timestamp};
use tokio::sync::watch;

use super::pending::Phase;
use super::ports::{BundleFetcher, FetchFailure, MetadataSource, System};
use super::*;
use crate::clock::Clock;
use crate::config::{Config, PatchDate};
use crate::metadata::client::{BundleTarget, MetadataError, RefusedTarget, Verified};
use crate::metadata::schema::sample_security_bundle;
use crate::rauc::fake::{Call, FakeRauc};
use crate::rauc::{BundleInfo, RaucError};
use crate::status::{Availability, NetworkInfo, SlotInfo};
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
    c.device.feature_release = Some("1.0".into());
    c.device.security_patch_level = Some(PatchDate(date(2026, 9, 1)));
    // The host running the tests is no device: its writable / would read as compromised.
    // The integrity tests below point the probes at fixture trees instead.
    c.integrity.probes.clear();
    c
}

// ---- doubles ------------------------------------------------------------------------

#[derive(Default)]
struct FakeMetadata {
    configured: bool,
    results: Mutex<VecDeque<Result<Verified, MetadataError>>>,
    /// Returned when the queue is empty.
    fallback: Mutex<Option<Verified>>,
    fetches: AtomicUsize,
}

impl MetadataSource for FakeMetadata {
    fn configured(&self) -> bool {
        self.configured
    }

    async fn fetch(&self, _floor: RoleVersions) -> Result<Verified, MetadataError> {
        self.fetches.fetch_add(1, Ordering::SeqCst);
        if let Some(r) = self.results.lock().unwrap().pop_front() {
            return r;
        }
        self.fallback
            .lock()
            .unwrap()
            .clone()
            .ok_or_else(|| MetadataError::Verify {
                source_name: "manufacturer".into(),
                message: "unreachable".into(),
                retryable: true,
            })
    }
}

#[derive(Default)]
struct FakeFetcher {
    results: Mutex<VecDeque<Result<PathBuf, FetchFailure>>>,
    fetched: Mutex<Vec<String>>,
}

impl BundleFetcher for FakeFetcher {
    async fn fetch(
        &self,
        target: &BundleTarget,
        mut progress: Box<dyn FnMut(u64, u64) + Send>,
    ) -> Result<PathBuf, FetchFailure> {
        self.fetched.lock().unwrap().push(target.name.clone());
        progress(target.length / 2, target.length);
        progress(target.length, target.length);
        self.results
            .lock()
            .unwrap()
            .pop_front()
            .unwrap_or_else(|| Ok(PathBuf::from(format!("/cache/{}", target.meta.version))))
    }

    fn cleanup(&self, _keep: Option<&BundleTarget>) {}
}

struct FakeSystem {
    boot_id: Mutex<String>,
    reboots: AtomicUsize,
    health: Mutex<Result<(), String>>,
}

impl Default for FakeSystem {
    fn default() -> Self {
        FakeSystem {
            boot_id: Mutex::new("boot-1".into()),
            reboots: AtomicUsize::new(0),
            health: Mutex::new(Ok(())),
        }
    }
}

impl System for FakeSystem {
    fn boot_id(&self) -> String {
        self.boot_id.lock().unwrap().clone()
    }

    fn reboot(&self) -> Result<(), String> {
        self.reboots.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    async fn health_check(&self) -> Result<(), String> {
        self.health.lock().unwrap().clone()
    }
}

struct Fakes;

impl Ports for Fakes {
    type Rauc = FakeRauc;
    type Metadata = FakeMetadata;
    type Fetcher = FakeFetcher;
    type System = FakeSystem;
}

// ---- rig ----------------------------------------------------------------------------

fn slot(name: &str, bootname: &str, state: &str, version: &str) -> SlotInfo {
    SlotInfo {
        name: name.into(),
        class: "rootfs".into(),
        state: state.into(),
        bootname: bootname.into(),
        boot_status: "good".into(),
        bundle_version: version.into(),
        installed_timestamp: String::new(),
    }
}

/// RAUC's view with `booted` (A or B) running and slot B holding `b_version`.
fn rauc_view(booted: &str, b_version: &str) -> RaucInfo {
    let (a, b) = if booted == "A" {
        ("booted", "inactive")
    } else {
        ("inactive", "booted")
    };
    RaucInfo {
        availability: Availability::Running,
        compatible: "ssu-sandbox".into(),
        boot_slot: booted.into(),
        operation: "idle".into(),
        last_error: String::new(),
        slots: vec![
            slot("rootfs.0", "A", a, "1.0.0"),
            slot("rootfs.1", "B", b, b_version),
        ],
    }
}

fn bundle(version: &str, base: &str, level: jiff::civil::Date) -> BundleTarget {
    BundleTarget {
        name: format!("bundles/ssu-sandbox/{version}.raucb"),
        length: 4096,
        sha256: [7; 32],
        url: "https://updates.example.com/targets/x".parse().unwrap(),
        meta: sample_security_bundle(version, base, level),
    }
}

fn verified(bundles: Vec<BundleTarget>) -> Verified {
    Verified {
        source: "manufacturer".into(),
        versions: RoleVersions {
            root: 1,
            timestamp: 2,
            snapshot: 2,
            targets: 2,
        },
        expires: "2027-01-01T00:00:00Z".parse().unwrap(),
        bundles,
        devices: vec![],
        refused: vec![],
    }
}

struct Rig {
    handle: Handle,
    rauc_tx: watch::Sender<RaucInfo>,
    modem_tx: watch::Sender<ModemInfo>,
    network_tx: watch::Sender<NetworkInfo>,
    operators: BTreeMap<String, Arc<FakeMetadata>>,
    rauc: Arc<FakeRauc>,
    metadata: Arc<FakeMetadata>,
    fetcher: Arc<FakeFetcher>,
    system: Arc<FakeSystem>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
    db: PathBuf,
    _dir: Option<tempfile::TempDir>,
}

struct Setup {
    config: Config,
    metadata: FakeMetadata,
    rauc: RaucInfo,
    db: Option<PathBuf>,
    system: Option<Arc<FakeSystem>>,
    /// Operator repositories by profile name (see `cellular` tests).
    operators: Vec<(String, FakeMetadata)>,
    modem: ModemInfo,
    network: NetworkInfo,
}

impl Default for Setup {
    fn default() -> Self {
        Setup {
            config: config(),
            metadata: FakeMetadata {
                configured: true,
                ..FakeMetadata::default()
            },
            rauc: rauc_view("A", ""),
            db: None,
            system: None,
            operators: Vec::new(),
            modem: ModemInfo::default(),
            network: NetworkInfo::default(),
        }
    }
}

fn start(setup: Setup) -> Rig {
    let (dir, db) = match setup.db {
        Some(db) => (None, db),
        None => {
            let dir = tempfile::tempdir().unwrap();
            let db = dir.path().join("agent.db");
            (Some(dir), db)
        }
    };
    let store = Store::open(&db).unwrap();
    let clock = TokioClock {
        base: START.parse().unwrap(),
        start: tokio::time::Instant::now(),
    };
    let rauc = Arc::new(FakeRauc::new(setup.rauc.clone()));
    rauc.add_bundle(
        "/cache/1.0.1",
        BundleInfo {
            compatible: "ssu-sandbox".into(),
            version: "1.0.1".into(),
            manifest_hash: String::new(),
        },
    );
    let metadata = Arc::new(setup.metadata);
    let fetcher = Arc::new(FakeFetcher::default());
    let system = setup.system.unwrap_or_default();
    let (rauc_tx, rauc_rx) = watch::channel(setup.rauc);
    let (modem_tx, modem_rx) = watch::channel(setup.modem);
    let (network_tx, network_rx) = watch::channel(setup.network);
    let operators: BTreeMap<String, Arc<FakeMetadata>> = setup
        .operators
        .into_iter()
        .map(|(name, m)| (name, Arc::new(m)))
        .collect();
    let ports = Adapters::<Fakes> {
        rauc: rauc.clone(),
        metadata: metadata.clone(),
        operators: operators.clone(),
        fetcher: fetcher.clone(),
        system: system.clone(),
    };
    let inputs = Inputs {
        rauc: rauc_rx,
        modem: modem_rx,
        network: network_rx,
    };
    let (mut engine, handle) =
        Engine::new(Arc::new(setup.config), store, clock, ports, inputs, 42).unwrap();
    // Maintenance windows are local time: the tests' is UTC, whatever the machine's is.
    engine.set_time_zone(jiff::tz::TimeZone::UTC);
    let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(engine.run(async move {
        let _ = stop_rx.await;
    }));
    Rig {
        handle,
        rauc_tx,
        modem_tx,
        network_tx,
        operators,
        rauc,
        metadata,
        fetcher,
        system,
        stop: Some(stop),
        task: Some(task),
        db,
        _dir: dir,
    }
}

impl Rig {
    /// Stops the engine (like SIGKILL after the last write: the store is what survives).
    async fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.unwrap();
        }
    }

    fn history(&self) -> Vec<HistoryEntry> {
        Store::open(&self.db).unwrap().history(100).unwrap()
    }

    fn pending(&self) -> Option<Pending> {
        Store::open(&self.db)
            .unwrap()
            .state(pending::KEY)
            .unwrap()
            .map(|s| Pending::from_json(&s).unwrap())
    }

    fn installs(&self) -> usize {
        self.rauc
            .calls()
            .iter()
            .filter(|c| matches!(c, Call::InstallAndWait(_) | Call::Install(_)))
            .count()
    }

    /// Simulates a reboot into `booted` with slot B holding `b_version`.
    fn reboot_into(&self, booted: &str, b_version: &str) {
        *self.system.boot_id.lock().unwrap() = format!("boot-{}", uuid_like());
        self.rauc_tx.send_replace(rauc_view(booted, b_version));
    }
}

fn uuid_like() -> u64 {
    static N: AtomicUsize = AtomicUsize::new(2);
    N.fetch_add(1, Ordering::SeqCst) as u64
}

/// Waits (in paused time) until the published status satisfies `f`.
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
    let st = handle.status();
    assert!(
        found.is_ok() && f(&st),
        "timed out waiting for {what}; status: {st:#?}"
    );
    st
}

fn with_update(level: jiff::civil::Date) -> Setup {
    let setup = Setup::default();
    *setup.metadata.fallback.lock().unwrap() = Some(verified(vec![bundle("1.0.1", "1.0", level)]));
    setup
}

// ---- the basics -----------------------------------------------------------------------

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

// ---- the update lifecycle ------------------------------------------------------------

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

    rig.reboot_into("B", "1.0.1");
    let st = wait_for(&rig.handle, "confirmed", |s| {
        s.installed.as_ref().is_some_and(|i| i.version == "1.0.1")
    })
    .await;
    let installed = st.installed.unwrap();
    assert_eq!(installed.security_patch_level, date(2026, 11, 1));
    assert_eq!(installed.feature_release, "1.0");
    assert!(installed.applied_at.is_some());
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
    rig.handle.check_now().await.unwrap();
    wait_for(&rig.handle, "reboot-required", |s| {
        s.state == UpdateState::RebootRequired
    })
    .await;
    assert_eq!(rig.system.reboots.load(Ordering::SeqCst), 1);
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
            .contains("behind the latest known time")
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

// ---- integrity -----------------------------------------------------------------------

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
mod cellular;
// The user's and host's say: `control.rs`.
mod control;
