//! The RAUC and ModemManager adapters against the sandbox's real services (no agent):
//! `rauc service` 1.8 with file-backed A/B slots and the dbusmock ModemManager, on the
//! sandbox's private system bus.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use common::{Options, Sandbox};
use ssu_agent::modem;
use ssu_agent::rauc::{self, MarkState, RaucClient, RaucError};
use ssu_agent::status::{Availability, ModemInfo, RaucInfo};
use tokio::sync::mpsc::{UnboundedReceiver, unbounded_channel};

/// How long a watcher may take to notice a change.
const NOTICE: Duration = Duration::from_secs(20);

/// The sandbox's default SIM (scripts/sandbox-modem.py).
const ICCID: &str = "8949000000000001234";
const IMSI: &str = "262010000001234";

fn sandbox() -> Arc<Sandbox> {
    Arc::new(Sandbox::up_with(Options {
        agent: false,
        ..Options::default()
    }))
}

async fn connect(sandbox: &Sandbox) -> zbus::Connection {
    // zbus 6 defers address errors to build().
    zbus::connection::Builder::address(sandbox.bus_address())
        .build()
        .await
        .expect("connect to the sandbox bus")
}

/// Run a (blocking) sandbox command without blocking the runtime the watchers run on.
async fn blocking(sandbox: &Arc<Sandbox>, f: impl FnOnce(&Sandbox) + Send + 'static) {
    let sandbox = sandbox.clone();
    tokio::task::spawn_blocking(move || f(&sandbox))
        .await
        .expect("sandbox command");
}

/// The next reported value that satisfies `want`, or a panic after [`NOTICE`].
async fn next_matching<T: std::fmt::Debug>(
    rx: &mut UnboundedReceiver<T>,
    what: &str,
    want: impl Fn(&T) -> bool,
) -> T {
    let deadline = tokio::time::Instant::now() + NOTICE;
    let mut seen = Vec::new();
    loop {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(v)) if want(&v) => return v,
            Ok(Some(v)) => seen.push(v),
            Ok(None) => panic!("watcher ended while waiting for {what}; saw {seen:#?}"),
            Err(_) => panic!("timed out waiting for {what}; saw {seen:#?}"),
        }
    }
}

#[tokio::test]
async fn rauc_client_reads_marks_and_installs() {
    let sandbox = sandbox();
    let rauc = RaucClient::new(connect(&sandbox).await);

    let info = rauc.info().await.expect("info");
    assert_eq!(info.availability, Availability::Running);
    assert_eq!(info.compatible, "ssu-sandbox");
    assert_eq!(info.boot_slot, "A");
    assert_eq!(info.operation, "idle");
    let names: Vec<_> = info.slots.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["rootfs.0", "rootfs.1"]);
    assert_eq!(info.slots[0].bootname, "A");
    assert_eq!(info.slots[0].state, "booted");
    assert_eq!(info.slots[1].bootname, "B");

    // Debian 12's RAUC 1.8 has InstallBundle but not InspectBundle.
    let caps = rauc.capabilities().await.expect("capabilities");
    assert!(caps.install_bundle);

    assert_eq!(rauc.primary().await.expect("primary"), "rootfs.0");
    let (slot, message) = rauc
        .mark(MarkState::Good, "booted")
        .await
        .expect("mark good");
    assert_eq!(slot, "rootfs.0");
    assert_eq!(message, "marked slot rootfs.0 as good");
    match rauc.mark(MarkState::Good, "nonsense").await {
        Err(e @ RaucError::Rejected { .. }) => assert!(!e.is_unavailable()),
        other => panic!("expected RAUC to refuse, got {other:?}"),
    }

    // A bundle for another device: RAUC reads it fine, then refuses to install it.
    let foreign = sandbox.build_bundle_for("other-device", "9.9", b"foreign");
    let bundle = rauc.bundle_info(&foreign).await.expect("bundle info");
    assert_eq!(bundle.compatible, "other-device");
    assert_eq!(bundle.version, "9.9");
    match rauc.install_and_wait(&foreign, |_| {}).await {
        Err(RaucError::InstallFailed { message, .. }) => {
            assert!(message.contains("Compatible mismatch"), "{message}")
        }
        other => panic!("expected InstallFailed, got {other:?}"),
    }

    // A good bundle installs into the other slot, with progress along the way.
    let good = sandbox.build_bundle("2026.12.1", &[7u8; 64 * 1024]);
    let mut progress = Vec::new();
    rauc.install_and_wait(&good, |p| progress.push(p.percentage))
        .await
        .expect("install");
    assert_eq!(progress.last(), Some(&100), "{progress:?}");
    let info = rauc.info().await.expect("info after install");
    assert_eq!(info.last_error, "");
    assert_eq!(info.slots[1].bundle_version, "2026.12.1");
    assert_eq!(rauc.primary().await.expect("primary"), "rootfs.1");

    assert!(matches!(
        rauc.install(Path::new("relative.raucb")).await,
        Err(RaucError::InvalidPath(_))
    ));
}

#[tokio::test]
async fn rauc_absent_is_unavailable() {
    let sandbox = Arc::new(Sandbox::up_with(Options {
        agent: false,
        rauc: false,
        modem: false,
        ..Options::default()
    }));
    let rauc = RaucClient::new(connect(&sandbox).await);
    let err = rauc.info().await.expect_err("no RAUC on the bus");
    assert!(err.is_unavailable(), "{err:?}");
    assert!(
        rauc.capabilities()
            .await
            .expect_err("no RAUC")
            .is_unavailable()
    );
}

#[tokio::test]
async fn rauc_watcher_follows_stop_and_start() {
    let sandbox = sandbox();
    let conn = connect(&sandbox).await;
    let (tx, mut rx) = unbounded_channel::<RaucInfo>();
    let watcher = tokio::spawn(rauc::watch(conn.clone(), move |info| {
        let _ = tx.send(info);
    }));

    let running = next_matching(&mut rx, "RAUC running", |i| {
        i.availability == Availability::Running
    })
    .await;
    assert_eq!(running.compatible, "ssu-sandbox");
    assert_eq!(running.slots.len(), 2);

    blocking(&sandbox, |s| s.stop("rauc")).await;
    next_matching(&mut rx, "RAUC unavailable", |i| {
        i.availability == Availability::Unavailable
    })
    .await;

    blocking(&sandbox, |s| s.start("rauc")).await;
    let back = next_matching(&mut rx, "RAUC running again", |i| {
        i.availability == Availability::Running
    })
    .await;
    assert_eq!(back.boot_slot, "A");
    assert_eq!(back.slots.len(), 2);

    // An installation by someone else shows up without polling.
    let bundle = sandbox.build_bundle("2026.12.2", b"image");
    blocking(&sandbox, move |s| s.rauc_install(&bundle).expect("install")).await;
    next_matching(&mut rx, "the installed version", |i| {
        i.operation == "idle" && i.slots.iter().any(|s| s.bundle_version == "2026.12.2")
    })
    .await;

    watcher.abort();
}

#[tokio::test]
async fn modem_snapshot_masks_identifiers() {
    let sandbox = sandbox();
    let conn = connect(&sandbox).await;
    let info = modem::snapshot(&conn).await.expect("snapshot");
    assert_eq!(info.availability, Availability::Running);
    assert_eq!(info.modems, 1);
    assert_eq!(info.home_mcc_mnc, "26201");
    assert_eq!(info.serving_mcc_mnc, "26201");
    assert_eq!(info.operator_name, "Sandbox Telecom");
    assert_eq!(info.registration_state, Some(1));
    assert_eq!(info.iccid_masked, "…1234");
    let shown = format!("{info:?}");
    assert!(!shown.contains(ICCID), "{shown}");
    assert!(!shown.contains(IMSI), "{shown}");
}

#[tokio::test]
async fn modem_watcher_follows_restart_and_sim_swap() {
    let sandbox = sandbox();
    let conn = connect(&sandbox).await;
    let (tx, mut rx) = unbounded_channel::<ModemInfo>();
    let watcher = tokio::spawn(modem::watch(conn.clone(), move |info| {
        let _ = tx.send(info);
    }));

    next_matching(&mut rx, "ModemManager running with the SIM", |i| {
        i.availability == Availability::Running && i.home_mcc_mnc == "26201"
    })
    .await;

    blocking(&sandbox, |s| {
        s.modem(&[
            "swap-sim",
            "23410",
            "8944000000000009999",
            "234100000009999",
        ]);
    })
    .await;
    let swapped = next_matching(&mut rx, "the swapped SIM", |i| i.home_mcc_mnc == "23410").await;
    assert_eq!(swapped.iccid_masked, "…9999");

    blocking(&sandbox, |s| s.stop("modem")).await;
    next_matching(&mut rx, "ModemManager unavailable", |i| {
        i.availability == Availability::Unavailable
    })
    .await;

    blocking(&sandbox, |s| s.start("modem")).await;
    // The mock (like a real ModemManager probing a modem) exports the modem before all of
    // the SIM's properties; the watcher follows until the whole SIM is there.
    let back = next_matching(
        &mut rx,
        "ModemManager running again with the whole SIM",
        |i| {
            i.availability == Availability::Running
                && i.home_mcc_mnc == "26201"
                && i.iccid_masked == "…1234"
        },
    )
    .await;
    assert_eq!(back.operator_name, "Sandbox Telecom");

    watcher.abort();
}
