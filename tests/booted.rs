//! The shipped package on a booted Debian 12 (`scripts/device`: systemd as PID 1 in
//! systemd-nspawn, RAUC on file slots with a custom bootloader, the real polkitd, nginx as
//! the update server). The unit and the package are the ones the project ships, unmodified;
//! only agent.d drop-ins vary. Nothing is started by hand: RAUC comes up through the unit's
//! `Wants=` and, when it left, through the agent's D-Bus activation; polkit through the
//! agent's activation — as on a device. docs/device.md describes the device.

mod common;

use std::fs;
use std::time::Duration;

use common::booted::Booted;
use common::device::{image, security_args};
use common::repo_root;

/// Generous for 2 busy cores: a boot takes a few seconds.
const WAIT: Duration = Duration::from_secs(120);

/// Waits until the shipped unit runs the agent: `active (running)`, ready (Type=notify).
fn wait_agent_running(d: &Booted) {
    d.wait_for("ssu-agent.service to be active (running)", WAIT, || {
        d.unit_property("ssu-agent.service", "ActiveState") == "active"
            && d.unit_property("ssu-agent.service", "SubState") == "running"
    });
}

/// The agent sees RAUC and the slot it booted from.
fn wait_boot_slot(d: &Booted, slot: &str) -> serde_json::Value {
    let mut last = serde_json::Value::Null;
    d.wait_for(
        &format!("the agent to report BootSlot {slot}"),
        WAIT,
        || {
            last = d.try_status().unwrap_or_default();
            last["BootSlot"] == slot
        },
    );
    last
}

/// "… Overall exposure level for ssu-agent.service: 1.4 OK …" → 1.4
fn exposure_in(s: &str) -> Option<f64> {
    let rest = s.split("exposure level for ssu-agent.service: ").nth(1)?;
    rest.split_whitespace().next()?.parse().ok()
}

/// How often dbus-daemon started `name`'s service on the agent's request in this boot
/// (its journal line names the requesting process).
fn activations_by_agent(d: &Booted, name: &str) -> usize {
    d.run(&["journalctl", "--no-pager", "-b", "-o", "cat"])
        .lines()
        .filter(|l| {
            l.contains("Activating via systemd")
                && l.contains(&format!("service name='{name}'"))
                && l.contains("comm=\"/usr/bin/ssu-agent")
        })
        .count()
}

#[test]
fn the_shipped_unit_runs_the_agent_with_rauc_and_polkit_started_on_demand() {
    let d = Booted::up(&[]);
    wait_agent_running(&d);

    // The unit is the shipped file, with no drop-in.
    let installed = d.run(&["cat", "/usr/lib/systemd/system/ssu-agent.service"]);
    let shipped = fs::read_to_string(repo_root().join("systemd/ssu-agent.service")).unwrap();
    assert_eq!(
        installed, shipped,
        "the installed unit is not the shipped one"
    );
    assert_eq!(d.unit_property("ssu-agent.service", "DropInPaths"), "");
    assert_eq!(d.unit_property("ssu-agent.service", "NRestarts"), "0");
    // The package installs the man pages the unit's Documentation= names.
    let verify = d.exec(&[
        "systemd-analyze",
        "verify",
        "/usr/lib/systemd/system/ssu-agent.service",
    ]);
    assert!(
        verify.status.success() && verify.stderr.is_empty(),
        "{verify:?}"
    );

    // Debian's rauc.service is not enabled (D-Bus activated, no [Install]). At boot the
    // agent's unit pulls it in (Wants=, ordered before the agent): no activation needed.
    assert_eq!(d.unit_property("rauc.service", "UnitFileState"), "static");
    let st = wait_boot_slot(&d, "A");
    assert_eq!(st["Compatible"], "ssu-device", "{st:#}");
    assert_eq!(d.unit_property("rauc.service", "ActiveState"), "active");
    assert_eq!(
        activations_by_agent(&d, "de.pengutronix.rauc"),
        0,
        "RAUC was not started by the unit's Wants= at boot"
    );
    // RAUC gone (stopped, crashed): the agent starts it again by D-Bus activation.
    d.run(&["systemctl", "stop", "rauc.service"]);
    d.wait_for("the agent to activate RAUC again", WAIT, || {
        activations_by_agent(&d, "de.pengutronix.rauc") == 1
            && d.unit_property("rauc.service", "ActiveState") == "active"
    });
    wait_boot_slot(&d, "A");

    // The real polkitd (activated on the first question) lets root check and refuses
    // `nobody`, saying so.
    let out = d.exec(&["ssuctl", "check"]);
    assert!(
        out.status.success(),
        "root's check failed: {out:?}\n{}",
        d.journal_tail(40)
    );
    // polkit is started by nothing else: the agent's question activated it.
    assert_eq!(d.unit_property("polkit.service", "UnitFileState"), "static");
    assert_eq!(
        activations_by_agent(&d, "org.freedesktop.PolicyKit1"),
        1,
        "polkit was not D-Bus activated by the agent\n{}",
        d.journal_tail(40)
    );
    assert_eq!(d.unit_property("polkit.service", "ActiveState"), "active");
    let out = d.exec_as("nobody", &["ssuctl", "check"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "nobody may check: {out:?}");
    assert!(
        err.contains("polkit refused org.ssu.agent.check"),
        "unclear refusal: {err}"
    );
    assert!(err.contains("hint: run as root"), "{err}");

    // The live hardening is the documented one.
    let report = d.run(&[
        "systemd-analyze",
        "security",
        "--no-pager",
        "ssu-agent.service",
    ]);
    let doc = fs::read_to_string(repo_root().join("docs/hardening.md")).unwrap();
    assert_eq!(
        exposure_in(&report),
        exposure_in(&doc),
        "docs/hardening.md records another figure than the booted device measures:\n{report}"
    );

    // The journal holds the agent's structured fields (tracing-journald).
    let json = d.run(&[
        "journalctl",
        "--no-pager",
        "-u",
        "ssu-agent.service",
        "-o",
        "json",
    ]);
    let entries: Vec<serde_json::Value> = json
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .filter(|e: &serde_json::Value| e["SYSLOG_IDENTIFIER"] == "ssu-agent")
        .collect();
    assert!(!entries.is_empty(), "no agent entries in:\n{json}");
    // An event's own fields (tracing-journald's F_ prefix) next to the source location.
    assert!(
        entries
            .iter()
            .any(|e| e["MESSAGE"] == "serving on the system bus"
                && e["F_NAME"] == "org.ssu.Agent1"
                && e["TARGET"] == "ssu_agent::daemon"
                && e["CODE_FILE"].is_string()),
        "no structured fields in the agent's entries:\n{json}"
    );
}

/// Publishes the security update 1.0.1 (patch level 2026-11-01) with ssu-repo on the host;
/// the device's nginx serves it. Returns the image written into the bundle.
fn publish_security_update(d: &Booted) -> Vec<u8> {
    let image = image(2 * 1024 * 1024, 0x5b);
    let bundle = d.bundle("1.0.1", &image);
    let repo = d.repo();
    let mut args = vec!["add", repo.to_str().unwrap(), bundle.to_str().unwrap()];
    args.extend(security_args("1.0", "2026-11-01"));
    d.ssu_repo(&args);
    image
}

/// `ssuctl check` as root inside; its text.
fn check(d: &Booted) -> String {
    let out = d.exec(&["ssuctl", "check"]);
    assert!(
        out.status.success(),
        "ssuctl check failed: {out:?}\n{}",
        d.journal_tail(60)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Reboots the agent plans itself (auto_reboot) after installing; the test only watches.
const AUTO_REBOOT: &str = "[install]\nauto_reboot = true\n";

#[test]
fn a_security_update_is_installed_and_confirmed_across_a_real_reboot() {
    let d = Booted::up(&[("50-test.toml", AUTO_REBOOT)]);
    wait_agent_running(&d);
    let before = wait_boot_slot(&d, "A");
    assert_eq!(before["SecurityPatchLevel"], "2026-09-01", "{before:#}");
    let image = publish_security_update(&d);

    let text = check(&d);
    assert!(text.contains("security update 1.0.1"), "{text}");
    // Downloaded, installed into B, then the agent reboots the container (systemctl reboot
    // through logind; nspawn exits 133 and boots it again).
    d.wait_for("the agent to reboot the device", WAIT, || d.boots() >= 2);
    d.wait_boot(2);
    assert_eq!(d.boot_file("booted.env"), "BOOTED_SLOT=B");

    // After the reboot the agent must reach RAUC again (activating it) and confirm B.
    let mut st = serde_json::Value::Null;
    d.wait_for("the update to be confirmed in slot B", WAIT, || {
        st = d.try_status().unwrap_or_default();
        st["InstalledVersion"] == "1.0.1" && st["State"] == "idle" && st["BootSlot"] == "B"
    });
    assert_eq!(st["SecurityPatchLevel"], "2026-11-01", "{st:#}");
    assert_ne!(st["PatchAppliedAt"], 0, "{st:#}");
    assert_eq!(d.boot_file("state.B"), "good");
    assert_eq!(d.boot_file("primary"), "B");
    let history = d.history();
    assert!(
        history
            .iter()
            .any(|e| e["action"] == "installed" && e["version"] == "1.0.1"),
        "{history:#?}"
    );
    let text = d.run(&["ssuctl", "status"]);
    assert!(
        text.contains("Security patch level: 1 November 2026\n"),
        "{text}"
    );
    // RAUC wrote the bundle's image into slot B's file.
    let slot_b = fs::read(d.dir().join("root/srv/slots/rootfs.1.img")).unwrap();
    assert_eq!(&slot_b[..image.len()], &image[..]);
    // One reboot, no restarts of the agent in either boot.
    assert_eq!(d.boots(), 2);
    assert_eq!(d.unit_property("ssu-agent.service", "NRestarts"), "0");
}

#[test]
fn a_failing_health_check_rolls_back_and_reboots_into_the_old_slot() {
    // Only the RAUC slot probe: the container's / is a writable overlay, which the other
    // probes rightly call compromised; this one must not mistake the agent's own bad mark
    // on B for a forced boot.
    let d = Booted::up(&[(
        "50-test.toml",
        "[install]\nauto_reboot = true\nhealth_checks = [[\"/bin/false\"]]\n\
         [integrity]\nprobes = [\"rauc-slot\"]\n",
    )]);
    wait_agent_running(&d);
    wait_boot_slot(&d, "A");
    publish_security_update(&d);
    check(&d);

    // Boot 2 runs B, whose health check fails: the agent marks B bad and reboots; the
    // bootloader falls back to A in boot 3.
    d.wait_for("the rollback reboot", Duration::from_secs(240), || {
        d.boots() >= 3
    });
    d.wait_boot(3);
    assert_eq!(d.boot_file("booted.env"), "BOOTED_SLOT=A");
    assert_eq!(d.boot_file("state.B"), "bad");
    let mut st = serde_json::Value::Null;
    d.wait_for("the agent to report the rollback in slot A", WAIT, || {
        st = d.try_status().unwrap_or_default();
        st["BootSlot"] == "A" && st["State"] == "rolled-back"
    });
    assert_eq!(st["InstalledVersion"], "1.0.0", "{st:#}");
    assert_eq!(st["SecurityPatchLevel"], "2026-09-01", "{st:#}");
    assert_eq!(st["IntegrityState"], "trusted", "{st:#}");
    // Nothing but the rollback: no integrity change while B was marked bad and running.
    let history = d.history();
    assert_eq!(history.len(), 1, "{history:#?}");
    assert_eq!(history[0]["action"], "rolled-back");
    assert!(
        history[0]["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("health check"),
        "{history:#?}"
    );
}

#[test]
fn an_agent_that_loses_the_system_bus_is_restarted_by_systemd() {
    let d = Booted::up(&[]);
    wait_agent_running(&d);
    let first = d.unit_property("ssu-agent.service", "MainPID");
    // A restarted dbus-daemon closes every connection: the agent must exit non-zero so that
    // Restart=on-failure brings it back on the new bus (not linger without its name).
    d.run(&["systemctl", "restart", "dbus.service"]);
    d.wait_for("systemd to restart the agent", WAIT, || {
        d.unit_property("ssu-agent.service", "NRestarts") == "1"
            && d.unit_property("ssu-agent.service", "SubState") == "running"
    });
    assert_ne!(d.unit_property("ssu-agent.service", "MainPID"), first);
    let journal = d.run(&[
        "journalctl",
        "--no-pager",
        "-u",
        "ssu-agent.service",
        "-o",
        "cat",
    ]);
    assert!(
        journal.contains("Main process exited, code=exited, status=1/FAILURE"),
        "{journal}"
    );
    // And it serves again.
    d.wait_for("the agent to answer on the new bus", WAIT, || {
        d.try_status().is_some()
    });
}
