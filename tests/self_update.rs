//! The agent updating itself on the sandbox device: slot B's root file system carries a newer
//! agent (this crate built by the test with `--features test-extra-migration`, which adds an
//! additive schema step), slot A the current one. The newer agent migrates the shared store;
//! after falling back to slot A the older agent must keep using it — floors included — and
//! keep updating the device. See docs/store.md and docs/update.md.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Instant;

use common::device::*;
use common::repo_root;

/// `ssu-agent-extra-migration`, built once per test process into the same target directory
/// as the tests (cargo reuses every dependency: only this crate is compiled again).
fn newer_agent() -> &'static Path {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| {
        let current = Path::new(env!("CARGO_BIN_EXE_ssu-agent"));
        let profile_dir = current.parent().unwrap();
        let target_dir = profile_dir.parent().unwrap();
        let mut cmd = Command::new(env!("CARGO"));
        cmd.current_dir(repo_root())
            .args(["build", "--offline", "--bin", "ssu-agent-extra-migration"])
            .args(["--features", "test-extra-migration", "--target-dir"])
            .arg(target_dir);
        if profile_dir.file_name().is_some_and(|n| n == "release") {
            cmd.arg("--release");
        }
        let started = Instant::now();
        run(&mut cmd);
        eprintln!("built the newer agent in {:.1?}", started.elapsed());
        profile_dir.join("ssu-agent-extra-migration")
    })
}

/// `PRAGMA user_version` of the device's store (schema version and oldest admitted agent).
fn store_version(d: &Device) -> i64 {
    store(d)
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap()
}

fn store(d: &Device) -> rusqlite::Connection {
    rusqlite::Connection::open_with_flags(
        d.sb.dir().join("state/agent.db"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap()
}

/// The note the newer agent's extra step wrote; `None` when the table is gone.
fn extra_note(d: &Device) -> Option<String> {
    store(d)
        .query_row("SELECT note FROM test_extra", [], |r| r.get(0))
        .ok()
}

fn agent_binary(d: &Device) -> PathBuf {
    let pid = d.sb.pid("agent").expect("agent running");
    std::fs::read_link(format!("/proc/{pid}/exe")).unwrap()
}

fn metadata_floor(d: &Device) -> serde_json::Value {
    let value: String = store(d)
        .query_row(
            "SELECT value FROM state WHERE key = 'metadata_floor'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    serde_json::from_str(&value).unwrap()
}

#[test]
fn after_falling_back_to_an_older_agent_it_keeps_the_newer_store_its_floors_and_updating() {
    let newer = newer_agent();
    let d = Device::new("");
    // Slot B's root file system carries the newer agent; A keeps the current one.
    std::fs::write(
        d.sb.dir().join("slots/agent.B"),
        newer.display().to_string(),
    )
    .unwrap();
    d.sb.start("agent");
    let older = agent_binary(&d);
    assert_eq!(older, Path::new(env!("CARGO_BIN_EXE_ssu-agent")));
    // Schema 2 (the report queue, additive: readable_from 1 << 16).
    assert_eq!(store_version(&d), 0x1_0002);

    // Update to the newer agent: 1.0.1 goes into B, the reboot starts B's agent, which
    // migrates the store and confirms the slot.
    d.publish("1.0.1", &d.image, &security_args("1.0", "2026-11-01"));
    d.check();
    d.wait_state("reboot-required");
    d.sb.reboot();
    d.sb.wait_for("the newer agent to confirm 1.0.1", WAIT, || {
        let st = d.status();
        st["InstalledVersion"] == "1.0.1" && st["State"] == "idle"
    });
    assert_eq!(agent_binary(&d), newer);
    // Schema 3 (the test step after the report queue), declaring agents of schema 1 able to
    // use it (readable_from 1 << 16).
    assert_eq!(store_version(&d), 0x1_0003);
    assert!(extra_note(&d).is_some());
    let floor = metadata_floor(&d);

    // Fall back to A (the bootloader gave up on B): the older agent meets the newer store.
    std::fs::write(d.sb.dir().join("boot/state.B"), "bad\n").unwrap();
    d.sb.reboot();
    assert_eq!(d.sb.rauc_property("BootSlot"), "A");
    assert_eq!(agent_binary(&d), older, "the older agent runs");
    let log = d.sb.agent_log();
    assert!(
        log.contains("using a newer agent's store, which declares itself compatible"),
        "{log}"
    );
    assert!(!log.contains("store recovered"), "{log}");
    // Its floors are the newer agent's: patch level, metadata versions.
    let st = d.status();
    assert_eq!(st["SecurityPatchLevel"], "2026-11-01", "{st:#}");
    assert_eq!(metadata_floor(&d), floor);

    // A lower patch level is still refused; the next update installs.
    d.publish(
        "1.0.2",
        &image(64 * 1024, 3),
        &security_args("1.0", "2026-10-15"),
    );
    let text = d.check();
    assert!(text.contains("refused"), "{text}");
    assert!(
        d.history().iter().any(|e| e["version"] == "1.0.2"
            && e["detail"]
                .as_str()
                .is_some_and(|t| t.contains("lower than the installed"))),
        "{:#?}",
        d.history()
    );
    d.publish(
        "1.0.3",
        &image(2 * 1024 * 1024, 4),
        &security_args("1.0", "2026-12-01"),
    );
    let text = d.check();
    assert!(text.contains("security update 1.0.3"), "{text}");
    d.wait_state("reboot-required");
    assert_eq!(d.installs_into_b(), 2);
    // The older agent wrote into the newer store without marking it down or dropping
    // anything the newer agent added.
    assert_eq!(store_version(&d), 0x1_0003);
    assert_eq!(
        extra_note(&d).as_deref(),
        Some("written by the test-extra-migration build")
    );
    assert!(metadata_floor(&d)["targets"].as_u64() > floor["targets"].as_u64());

    // And back to the newer agent, which takes the store as the older one left it.
    d.sb.reboot();
    d.sb.wait_for("the newer agent to confirm 1.0.3", WAIT, || {
        let st = d.status();
        st["InstalledVersion"] == "1.0.3" && st["State"] == "idle"
    });
    assert_eq!(agent_binary(&d), newer);
    assert_eq!(d.status()["SecurityPatchLevel"], "2026-12-01");
    let actions: Vec<String> = d
        .history()
        .iter()
        .map(|e| format!("{} {}", e["action"], e["version"]))
        .collect();
    assert!(
        actions.contains(&r#""installed" "1.0.1""#.to_owned())
            && actions.contains(&r#""installed" "1.0.3""#.to_owned()),
        "{actions:?}"
    );
}

#[test]
fn a_rollback_from_the_newer_agent_is_finished_by_the_older_one_on_the_newer_store() {
    let newer = newer_agent();
    // Every new slot fails its health check: the newer agent in B rolls back at once.
    let d = Device::new("health_checks = [[\"false\"]]");
    let slots = d.sb.dir().join("slots");
    std::fs::write(slots.join("agent.A"), env!("CARGO_BIN_EXE_ssu-agent")).unwrap();
    std::fs::write(slots.join("agent.B"), newer.display().to_string()).unwrap();
    d.sb.start("agent");
    d.install_security_update_and_reboot();
    // B's newer agent migrates the store, rejects the slot and reboots into A, whose older
    // agent finishes the rollback in the newer store.
    d.wait_rolled_back();
    assert_eq!(agent_binary(&d), Path::new(env!("CARGO_BIN_EXE_ssu-agent")));
    assert!(
        d.sb.agent_log()
            .lines()
            .any(|l| l.contains("migrated store schema") && l.contains("from=2 to=3")),
        "the newer agent ran on the store"
    );
    assert_eq!(store_version(&d), 0x1_0003);
    assert!(extra_note(&d).is_some());
    let rolled_back: String = store(&d)
        .query_row(
            "SELECT value FROM state WHERE key = 'rolled_back_targets'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    let rolled_back: Vec<String> = serde_json::from_str(&rolled_back).unwrap();
    assert_eq!(rolled_back.len(), 1);
    let st = d.status();
    assert_eq!(st["SecurityPatchLevel"], "2026-09-01");

    // The rolled-back target stays refused; the next update installs.
    d.check();
    assert_eq!(d.installs_into_b(), 1);
    d.publish(
        "1.0.2",
        &image(2 * 1024 * 1024, 5),
        &security_args("1.0", "2026-12-01"),
    );
    let text = d.check();
    assert!(text.contains("security update 1.0.2"), "{text}");
    d.wait_state("reboot-required");
    assert_eq!(d.installs_into_b(), 2);
    assert_eq!(store_version(&d), 0x1_0003);
}
