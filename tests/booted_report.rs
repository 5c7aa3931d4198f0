//! Delivery of signed reports on the booted device of `scripts/device` (Debian 12, systemd
//! as PID 1, the shipped package and its hardened unit, unmodified): the agent signs with its
//! identity key in its StateDirectory, queues in SQLite and POSTs through the unit's sandbox
//! (RestrictAddressFamilies, ProtectSystem, PrivateUsers, …) to the real receiver,
//! `ssu-repo serve-reports`, run inside the container as a systemd unit of its own (the
//! container's network is private). The queue is proven across a real reboot: the receiver
//! starts only after it.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::booted::Booted;
use common::device::{image, security_args};

/// Generous for 2 busy cores: a boot takes a few seconds.
const WAIT: Duration = Duration::from_secs(120);
/// Where the receiver listens inside the container (its own network namespace).
const PORT: u16 = 8480;
/// The receiver's report store inside the container.
const FLEET: &str = "/var/lib/fleet";

/// The agent reports to the receiver inside over plain http with short timeouts and retries;
/// its first periodic report and first check come a second after the first start (no
/// spread); it reboots by itself after installing, as the install test in tests/booted.rs.
fn dropin() -> String {
    format!(
        "[install]\nauto_reboot = true\n\n\
         [check]\nboot_delay = \"1s\"\n\n\
         [spread]\nfirst_check = \"0s\"\n\n\
         [report]\nurl = \"http://127.0.0.1:{PORT}/reports\"\nallow_http = true\n\
         timeout = \"2s\"\nretry_initial = \"1s\"\nretry_max = \"2s\"\n"
    )
}

fn wait_agent_running(d: &Booted) {
    d.wait_for("ssu-agent.service to be active (running)", WAIT, || {
        d.unit_property("ssu-agent.service", "ActiveState") == "active"
            && d.unit_property("ssu-agent.service", "SubState") == "running"
    });
}

/// The journal entries of `unit`'s processes tagged `program` in every boot (the device's
/// journal is persistent), oldest first.
fn unit_journal(d: &Booted, unit: &str, program: &str) -> Vec<serde_json::Value> {
    d.run(&[
        "journalctl",
        "--no-pager",
        "-o",
        "json",
        &format!("_SYSTEMD_UNIT={unit}"),
        &format!("SYSLOG_IDENTIFIER={program}"),
    ])
    .lines()
    .filter_map(|l| serde_json::from_str(l).ok())
    .collect()
}

fn agent_journal(d: &Booted) -> Vec<serde_json::Value> {
    unit_journal(d, "ssu-agent.service", "ssu-agent")
}

/// A journal field as text (journalctl gives non-printable values as byte arrays).
fn field(e: &serde_json::Value, name: &str) -> String {
    match &e[name] {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Array(bytes) => {
            let bytes: Vec<u8> = bytes
                .iter()
                .filter_map(|b| b.as_u64())
                .map(|b| b as u8)
                .collect();
            String::from_utf8_lossy(&bytes).into_owned()
        }
        _ => String::new(),
    }
}

/// The agent's entries whose message starts with `message`.
fn entries<'a>(
    journal: &'a [serde_json::Value],
    message: &'a str,
) -> impl Iterator<Item = &'a serde_json::Value> + 'a {
    journal
        .iter()
        .filter(move |e| field(e, "MESSAGE").starts_with(message))
}

/// The agent's messages of every boot, one a line.
fn messages(journal: &[serde_json::Value]) -> String {
    journal.iter().map(|e| field(e, "MESSAGE") + "\n").collect()
}

/// The boot id the device runs now.
fn boot_id(d: &Booted) -> String {
    d.run(&["cat", "/proc/sys/kernel/random/boot_id"])
        .trim()
        .replace('-', "")
}

/// Copies the host's receiver into the device (the package does not ship ssu-repo: it is the
/// publisher's and the hub's tool).
fn install_receiver(d: &Booted) {
    let bin = d.dir().join("root/usr/local/bin/ssu-repo");
    fs::copy(env!("CARGO_BIN_EXE_ssu-repo"), &bin).unwrap();
    fs::set_permissions(&bin, fs::Permissions::from_mode(0o755)).unwrap();
}

/// Starts `ssu-repo serve-reports` inside as the transient unit fleet-receiver.service.
fn start_receiver(d: &Booted) {
    d.run(&[
        "systemd-run",
        "--unit=fleet-receiver",
        "/usr/local/bin/ssu-repo",
        "serve-reports",
        FLEET,
        "--listen",
        &format!("127.0.0.1:{PORT}"),
    ]);
    d.wait_for("the receiver to listen", WAIT, || {
        receiver_log(d).contains(&format!("listening on http://127.0.0.1:{PORT}"))
    });
}

/// The receiver's output (stdout and its log on stderr) in the journal.
fn receiver_log(d: &Booted) -> String {
    d.run(&[
        "journalctl",
        "--no-pager",
        "-o",
        "cat",
        "-u",
        "fleet-receiver.service",
    ])
}

/// The receiver's store as the host sees it (the device's root is an overlay under DIR).
fn fleet_dir(d: &Booted) -> PathBuf {
    d.dir().join(format!("root{FLEET}"))
}

/// Every stored report: (counter, the report, its file), lowest counter first. Only stored
/// files count: the receiver writes `.<name>.tmp` first and renames it.
fn stored(d: &Booted) -> Vec<(u64, serde_json::Value, PathBuf)> {
    let mut out = Vec::new();
    let Ok(devices) = fs::read_dir(fleet_dir(d).join("devices")) else {
        return out;
    };
    for dev in devices.flatten() {
        let Ok(files) = fs::read_dir(dev.path().join("reports")) else {
            continue;
        };
        for f in files.flatten() {
            let name = f.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') || !name.ends_with(".json") {
                continue;
            }
            let env: serde_json::Value = serde_json::from_slice(&fs::read(f.path()).unwrap())
                .unwrap_or_else(|e| panic!("{}: {e}", f.path().display()));
            let report: serde_json::Value =
                serde_json::from_str(env["report"].as_str().unwrap()).unwrap();
            out.push((report["counter"].as_u64().unwrap(), report, f.path()));
        }
    }
    out.sort_by_key(|r| r.0);
    out
}

/// `ssu-repo verify-report` as a hub runs it on a delivered file.
fn verify(key: &Path, file: &Path) {
    let out = Command::new(env!("CARGO_BIN_EXE_ssu-repo"))
        .args(["verify-report", "--device-key", key.to_str().unwrap()])
        .args(["--any-nonce", file.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}: {out:?}", file.display());
}

/// Publishes the security update 1.0.1 (patch level 2026-11-01); the device's nginx serves it.
fn publish_security_update(d: &Booted) {
    let bundle = d.bundle("1.0.1", &image(2 * 1024 * 1024, 0x5b));
    let repo = d.repo();
    let mut args = vec!["add", repo.to_str().unwrap(), bundle.to_str().unwrap()];
    args.extend(security_args("1.0", "2026-11-01"));
    d.ssu_repo(&args);
}

#[test]
fn reports_queued_before_a_real_reboot_reach_the_receiver_after_it_signed_and_once_each() {
    let d = Booted::up(&[("50-report.toml", &dropin())]);
    wait_agent_running(&d);
    install_receiver(&d);
    let first_boot = boot_id(&d);

    // Enrolment, as at manufacturing: the device's public key into the hub's store.
    let key = d.dir().join("device.pub");
    fs::write(&key, d.run(&["ssuctl", "report", "--public-key"])).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_ssu-repo"))
        .args(["enroll-device", fleet_dir(&d).to_str().unwrap()])
        .args(["--device-key", key.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");

    // No receiver yet: the first periodic report is signed, queued and kept.
    d.wait_for("a periodic report kept in the queue", WAIT, || {
        let j = agent_journal(&d);
        entries(&j, "report queued for the fleet server")
            .any(|e| field(e, "F_REASON") == "periodic")
            && entries(&j, "report not delivered, kept in the queue").count() > 0
    });
    // Refused by the kernel for want of a listener: the unit let the agent open an AF_INET
    // socket and connect (not "Address family not supported", not "Operation not permitted").
    let msgs = messages(&agent_journal(&d));
    let tried = format!("cannot POST to http://127.0.0.1:{PORT}/reports");
    assert!(
        msgs.lines()
            .any(|l| l.contains(&tried) && l.contains("Connection refused")),
        "the agent could not reach the network through its unit:\n{msgs}"
    );
    // The first check (a second after start, nothing published) is over.
    d.wait_for("the first check to finish", WAIT, || {
        let st = d.try_status().unwrap_or_default();
        st["LastCheck"].as_u64().is_some_and(|t| t > 0) && st["State"] == "idle"
    });

    publish_security_update(&d);
    let out = d.exec(&["ssuctl", "check"]);
    assert!(
        out.status.success(),
        "ssuctl check: {out:?}\n{}",
        d.journal_tail(60)
    );
    d.wait_for("the agent to reboot the device", WAIT, || d.boots() >= 2);
    d.wait_boot(2);
    assert_ne!(boot_id(&d), first_boot);
    let mut st = serde_json::Value::Null;
    d.wait_for("the update to be confirmed in slot B", WAIT, || {
        st = d.try_status().unwrap_or_default();
        st["InstalledVersion"] == "1.0.1" && st["State"] == "idle" && st["BootSlot"] == "B"
    });
    // The install's report joins the queue behind what the first boot left there.
    d.wait_for("the install's report queued", WAIT, || {
        entries(&agent_journal(&d), "report queued for the fleet server")
            .any(|e| field(e, "F_REASON") == "installed")
    });
    let journal = agent_journal(&d);
    let before: Vec<String> = entries(&journal, "report queued for the fleet server")
        .filter(|e| field(e, "_BOOT_ID") == first_boot)
        .map(|e| field(e, "F_COUNTER"))
        .collect();
    assert!(!before.is_empty(), "{}", messages(&journal));
    assert_eq!(
        entries(&journal, "report delivered to the fleet server").count(),
        0,
        "delivered with no receiver running:\n{}",
        messages(&journal)
    );

    // The receiver comes up only now: everything queued, before and after the reboot, arrives.
    start_receiver(&d);
    // Done when the install's report is stored and the agent's queue is empty.
    d.wait_for(
        "the install's report stored and the queue empty",
        WAIT,
        || {
            let j = agent_journal(&d);
            let last = j.iter().rev().find(|e| {
                let m = field(e, "MESSAGE");
                m.starts_with("report queued") || m.starts_with("report delivered")
            });
            last.is_some_and(|e| {
                field(e, "MESSAGE").starts_with("report delivered") && field(e, "F_QUEUED") == "0"
            }) && stored(&d)
                .iter()
                .any(|(_, r, _)| r["installed"]["version"] == "1.0.1")
        },
    );
    let journal = agent_journal(&d);
    let queued: Vec<u64> = entries(&journal, "report queued for the fleet server")
        .map(|e| field(e, "F_COUNTER").parse().unwrap())
        .collect();
    let reports = stored(&d);
    let counters: Vec<u64> = reports.iter().map(|r| r.0).collect();
    let mut want = queued.clone();
    want.sort();
    want.dedup();
    assert_eq!(
        want.len(),
        queued.len(),
        "a counter queued twice: {queued:?}"
    );
    assert_eq!(
        counters, want,
        "the receiver stored other reports than the agent queued (before the reboot: {before:?})"
    );
    assert_eq!(
        entries(&journal, "report delivered to the fleet server").count(),
        queued.len(),
        "{}",
        messages(&journal)
    );
    let log = receiver_log(&d);
    for c in &counters {
        let stored_n = log.matches(&format!("stored report {c} of device")).count();
        assert_eq!(stored_n, 1, "report {c} stored {stored_n} times:\n{log}");
    }
    assert!(!log.contains("duplicate report"), "{log}");
    assert!(!log.contains("refused"), "{log}");
    // Under its own name in the journal, not the agent's.
    assert_eq!(
        entries(
            &unit_journal(&d, "fleet-receiver.service", "ssu-repo"),
            "stored report"
        )
        .count(),
        counters.len(),
        "{log}"
    );

    // What the first boot queued was delivered by the second: the queue survived the reboot.
    for c in &before {
        let delivered_in: Vec<String> = entries(&journal, "report delivered to the fleet server")
            .filter(|e| field(e, "F_COUNTER") == *c)
            .map(|e| field(e, "_BOOT_ID"))
            .collect();
        assert_eq!(delivered_in.len(), 1, "report {c}: {delivered_in:?}");
        assert_ne!(delivered_in[0], first_boot, "report {c}");
    }
    eprintln!(
        "queued in boot 1: {before:?}; stored: {:?}",
        reports
            .iter()
            .map(|(c, r, _)| format!(
                "{c} ({} {})",
                r["installed"]["version"], r["boot"]["booted_slot"]
            ))
            .collect::<Vec<_>>()
    );
    let periodic = &reports[0].1;
    assert_eq!(periodic["installed"]["version"], "1.0.0", "{periodic:#}");
    assert_eq!(periodic["boot"]["booted_slot"], "A", "{periodic:#}");

    // The install's report verifies with the enrolled key and says what ssuctl status says.
    let (_, r, _) = reports
        .iter()
        .rev()
        .find(|(_, r, _)| r["installed"]["version"] == "1.0.1")
        .unwrap_or_else(|| panic!("no report of 1.0.1: {reports:#?}"));
    assert_eq!(r["boot"]["booted_slot"], "B", "{r:#}");
    for (_, _, f) in &reports {
        verify(&key, f);
    }
    let st = d.status();
    assert_eq!(r["installed"]["version"], st["InstalledVersion"]);
    assert_eq!(
        r["installed"]["security_patch_level"],
        st["SecurityPatchLevel"]
    );
    assert_eq!(r["installed"]["security_patch_level"], "2026-11-01");
    assert_eq!(r["boot"]["booted_slot"], st["BootSlot"]);
    assert_eq!(r["device"]["hardware_id"], st["HardwareId"]);

    // No restarts, no signing or queueing errors, nothing dropped, in either boot.
    assert_eq!(d.unit_property("ssu-agent.service", "NRestarts"), "0");
    let msgs = messages(&journal);
    for bad in [
        "cannot queue",
        "cannot sign",
        "cannot read the report queue",
        "report dropped",
    ] {
        assert!(
            !msgs.contains(bad),
            "{bad:?} in the agent's journal:\n{msgs}"
        );
    }
    let units = d.run(&[
        "journalctl",
        "--no-pager",
        "-o",
        "cat",
        "-u",
        "ssu-agent.service",
    ]);
    assert!(!units.contains("Scheduled restart job"), "{units}");
    assert_eq!(d.boots(), 2);
}
