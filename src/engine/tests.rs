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
use crate::status::{Availability, Installed, NetworkInfo, SlotInfo, Staleness};
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
    // Exact times in these tests; the per-device spread has its own tests (`spread.rs`).
    let zero = crate::config::Dur(SignedDuration::ZERO);
    c.spread = crate::config::SpreadConfig {
        first_check: zero,
        wave: zero,
        approval: zero,
        window: zero,
    };
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
    /// Health checks never end.
    health_hangs: std::sync::atomic::AtomicBool,
}

impl Default for FakeSystem {
    fn default() -> Self {
        FakeSystem {
            boot_id: Mutex::new("boot-1".into()),
            reboots: AtomicUsize::new(0),
            health: Mutex::new(Ok(())),
            health_hangs: Default::default(),
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
        if self.health_hangs.load(Ordering::SeqCst) {
            std::future::pending::<()>().await;
        }
        self.health.lock().unwrap().clone()
    }
}

/// The fleet server and the device key, scripted: signs "reports" carrying the status's
/// installed version, state and booted slot with a counting counter; answers each POST with
/// the next scripted answer, else as the receiver does (201 naming the report).
/// What the courier's POST returns: the server's status and body, or why there was none.
type PostResult = Result<(u16, Vec<u8>), String>;

#[derive(Default)]
struct FakeCourier {
    configured: bool,
    counter: std::sync::atomic::AtomicU64,
    answers: Mutex<VecDeque<PostResult>>,
    /// Every POST: (counter, when, the report's JSON).
    posted: Mutex<Vec<(u64, tokio::time::Instant, serde_json::Value)>>,
}

impl FakeCourier {
    fn on() -> Arc<FakeCourier> {
        Arc::new(FakeCourier {
            configured: true,
            ..FakeCourier::default()
        })
    }
}

impl ports::Courier for FakeCourier {
    fn configured(&self) -> bool {
        self.configured
    }

    async fn sign(&self, status: Status) -> Result<ports::Signed, String> {
        let counter = self.counter.fetch_add(1, Ordering::SeqCst) + 1;
        let report = serde_json::json!({
            "counter": counter,
            "version": status.installed.map(|i| i.version),
            "state": status.state.as_str(),
            "booted_slot": status.rauc.boot_slot,
            "subscription": status.subscription.profile,
            "integrity": status.integrity.state.as_str(),
        });
        let envelope = crate::report::Envelope {
            report: report.to_string(),
            signature: "00".into(),
            key_id: "k1".into(),
        };
        Ok(ports::Signed {
            body: serde_json::to_string(&envelope).unwrap(),
            key_id: "k1".into(),
            counter,
        })
    }

    async fn post(&self, body: String) -> PostResult {
        let (key_id, counter) = crate::report::identify(&body).unwrap();
        let envelope: crate::report::Envelope = serde_json::from_str(&body).unwrap();
        let report = serde_json::from_str(&envelope.report).unwrap();
        self.posted
            .lock()
            .unwrap()
            .push((counter, tokio::time::Instant::now(), report));
        if let Some(a) = self.answers.lock().unwrap().pop_front() {
            return a;
        }
        let ack = serde_json::json!({"result": "stored", "key_id": key_id, "counter": counter});
        Ok((201, ack.to_string().into_bytes()))
    }
}

struct Fakes;

impl Ports for Fakes {
    type Rauc = FakeRauc;
    type Metadata = FakeMetadata;
    type Fetcher = FakeFetcher;
    type System = FakeSystem;
    type Courier = FakeCourier;
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
        legacy_url: None,
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
            ..RoleVersions::default()
        },
        expires: "2027-01-01T00:00:00Z".parse().unwrap(),
        bundles,
        devices: vec![],
        refused: vec![],
        server_time: None,
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
    /// The per-device seed (machine id) that spreads the fleet.
    seed: u64,
    /// The system clock at the start (default START).
    clock: Option<Timestamp>,
    /// Delivery to a fleet server (off by default).
    courier: Option<Arc<FakeCourier>>,
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
            seed: 42,
            clock: None,
            courier: None,
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
    let store = Store::open_or_recover(
        &db,
        &crate::store::FloorSources::default(),
        START.parse().unwrap(),
    )
    .unwrap();
    let clock = TokioClock {
        base: setup.clock.unwrap_or_else(|| START.parse().unwrap()),
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
        courier: setup.courier.unwrap_or_default(),
    };
    let inputs = Inputs {
        rauc: rauc_rx,
        modem: modem_rx,
        network: network_rx,
    };
    let (mut engine, handle) = Engine::new(
        Arc::new(setup.config),
        store,
        clock,
        ports,
        inputs,
        setup.seed,
    )
    .unwrap();
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

/// Stops `rig` (as a crash would: the store is what survives) and starts the engine again
/// from `setup` on the same store and host. The new engine's clock starts at `START` again.
async fn restart(mut rig: Rig, mut setup: Setup) -> Rig {
    rig.stop().await;
    setup.db = Some(rig.db.clone());
    setup.system = Some(rig.system.clone());
    let mut rig2 = start(setup);
    // The database lives in the first rig's temporary directory.
    rig2._dir = rig._dir.take();
    rig2
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

// The first status, the check schedule, history, shutdown: `basics.rs`.
mod basics;
// The update lifecycle and restarts in every phase: `lifecycle.rs`.
mod lifecycle;
// Integrity probing: `integrity.rs`.
mod cellular;
mod integrity;
mod recovery;
// The user's and host's say: `control.rs`.
mod control;
// No security fix waits forever; fleets do not move in lockstep: `timely.rs`.
mod timely;
// Store failures under every command: `faults.rs`.
mod faults;
// The device's own disk failing under the metadata cache or a download: `storage.rs`.
mod storage;
// Reports to the fleet server: `delivery.rs`.
mod delivery;
