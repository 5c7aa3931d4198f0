//! The user's say over an update on the sandbox device (FS.25 COM-0010…0050, SEC-0021/0030/
//! 0040): what `UpdateAvailable` and a desktop notification tell, host inhibitors, the
//! maintenance window, end of life, `ssuctl install`, and the model's rollout wave.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::device::*;

const NOTES: &str = "https://example.com/notes/1.0.1";
const SECOND_CVE: &str = "CVE-2026-5001:medium:5.3:Information leak in the log viewer";

impl Device {
    /// A config drop-in read after agent.toml (start the agent afterwards).
    fn drop_in(&self, text: &str) {
        let d = self.sb.dir().join("etc/agent.d");
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("50-test.toml"), text).unwrap();
    }

    /// Reboots leave a marker file instead of rebooting the sandbox.
    fn reboot_marker(&self, install_extra: &str) -> PathBuf {
        let marker = self.sb.dir().join("rebooted");
        self.drop_in(&format!(
            "[install]\nreboot_command = [\"touch\", \"{}\"]\n{install_extra}",
            marker.display()
        ));
        marker
    }

    fn call(&self, method: &str, args: &[&str]) {
        let out = common::control::call(&self.sb, None, method, args);
        assert!(out.status.success(), "{method}: {out:?}");
    }
}

#[test]
fn update_available_and_available_carry_every_field_and_a_notification_says_security_update() {
    let d = Device::new("[notify]\ndesktop = true");
    let notifications = common::control::Mock::start(
        &d.sb,
        "notification_daemon",
        "org.freedesktop.Notifications",
    );
    d.sb.start("agent");
    // The update waits for the user, so Available is read while it is on offer.
    let out = d.sb.ssuctl(&["auto-install", "off"]);
    assert!(out.status.success(), "{out:?}");
    let mut args = security_args("1.0", "2026-11-01").to_vec();
    args.extend(["--cve", SECOND_CVE, "--notes-url", NOTES]);
    let bundle = d.publish("1.0.1", &d.image, &args);
    let size = std::fs::metadata(&bundle).unwrap().len();
    let signals = common::control::Signals::start(&d.sb);

    d.check();
    let st = d.wait_state("available");
    let payload = signals.wait("UpdateAvailable", WAIT)[0].clone();
    for (what, offer) in [
        ("UpdateAvailable", &payload),
        ("Available", &st["Available"]),
    ] {
        assert_eq!(offer["kind"], "security", "{what}: {offer:#}");
        assert_eq!(offer["version"], "1.0.1", "{what}");
        assert_eq!(offer["base_version"], "1.0", "{what}");
        assert_eq!(offer["security_patch_level"], "2026-11-01", "{what}");
        assert_eq!(offer["size"], size, "{what}");
        assert_eq!(offer["requires_reboot"], true, "{what}");
        assert_eq!(offer["expected_downtime_s"], 90, "{what}");
        assert_eq!(offer["notes_url"], NOTES, "{what}");
        assert_eq!(offer["max_severity"], "critical", "{what}");
        assert_eq!(offer["source"], "manufacturer", "{what}");
        assert!(offer["released"].as_u64().unwrap() > 0, "{what}");
        let cves = offer["cves"].as_array().unwrap();
        assert_eq!(cves.len(), 2, "{what}");
        assert_eq!(cves[0]["id"], "CVE-2026-4242", "{what}");
        assert_eq!(cves[0]["severity"], "critical", "{what}");
        assert_eq!(cves[0]["cvss"], 9.8, "{what}");
        assert_eq!(
            cves[0]["summary"], "Remote code execution in the web UI",
            "{what}"
        );
        assert_eq!(cves[1]["id"], "CVE-2026-5001", "{what}");
        assert_eq!(cves[1]["severity"], "medium", "{what}");
        assert_eq!(cves[1]["cvss"], 5.3, "{what}");
        assert_eq!(
            cves[1]["summary"], "Information leak in the log viewer",
            "{what}"
        );
    }
    assert_eq!(signals.all("UpdateAvailable").len(), 1, "announced once");

    let path = "/org/freedesktop/Notifications";
    d.sb.wait_for("a desktop notification", WAIT, || {
        !notifications.calls(path, "Notify").is_empty()
    });
    let calls = notifications.calls(path, "Notify");
    assert_eq!(calls.len(), 1);
    let summary = calls[0][3]["data"].as_str().unwrap();
    let body = calls[0][4]["data"].as_str().unwrap();
    assert_eq!(summary, "Security update available (critical)");
    for part in [
        "1.0.1",
        "2026-11-01",
        "CVE-2026-4242 (critical)",
        "CVE-2026-5001 (medium)",
    ] {
        assert!(body.contains(part), "{part} missing in {body}");
    }

    // `ssuctl cves` says the same.
    let out = d.sb.ssuctl(&["cves"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("CVE-2026-4242 (critical, CVSS 9.8): Remote code execution in the web UI"),
        "{text}"
    );
}

#[test]
fn a_held_inhibitor_blocks_install_and_reboot_until_released() {
    let d = Device::new("");
    let rebooted = d.reboot_marker("");
    d.sb.start("agent");
    d.publish_security_update();
    let held = common::control::Holder::take(&d.sb, "driving");
    d.check();
    let st = d.wait_state("deferred");
    assert_eq!(st["Inhibitors"], serde_json::json!(["driving"]));
    // The user's Install waits as well.
    d.call("Install", &[]);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(d.installs_into_b(), 0);
    assert_eq!(d.status()["State"], "deferred");
    let text = String::from_utf8_lossy(&d.sb.ssuctl(&["status"]).stdout).into_owned();
    assert!(text.contains("Held by:              driving"), "{text}");

    held.release();
    d.wait_state("reboot-required");
    assert_eq!(d.installs_into_b(), 1);

    let signals = common::control::Signals::start(&d.sb);
    let held = common::control::Holder::take(&d.sb, "parked, doors open");
    d.call("Reboot", &[]);
    // (The reboot deadline's plan, announced at installation, may arrive first.)
    let plan = signals.wait_for("RebootPending", WAIT, |a| {
        a[0]["waiting_for"] == serde_json::json!(["inhibitor"])
    })[0]
        .clone();
    assert_eq!(
        plan["inhibitors"],
        serde_json::json!(["parked, doors open"])
    );
    assert_eq!(plan["version"], "1.0.1");
    assert_eq!(plan["expected_downtime_s"], 90);
    assert_eq!(plan["reason"], "security-update");
    std::thread::sleep(Duration::from_secs(2));
    assert!(!rebooted.exists(), "rebooted while inhibited");

    held.release();
    d.sb.wait_for("the reboot", WAIT, || rebooted.exists());
    // Announced before it happened; the recorder may not have caught up yet: wait for it.
    let last = signals.wait_for("RebootPending", WAIT, |a| {
        a[0]["waiting_for"] == serde_json::json!([])
    });
    assert!(last[0]["at"].as_i64().is_some_and(|t| t > 0), "{last:#?}");
}

#[test]
fn a_maintenance_window_outside_now_defers_the_reboot() {
    let now = jiff::Zoned::now();
    let start = now
        .checked_add(jiff::SignedDuration::from_hours(2))
        .unwrap();
    let end = now
        .checked_add(jiff::SignedDuration::from_hours(3))
        .unwrap();
    let window = format!("{}-{}", start.strftime("%H:%M"), end.strftime("%H:%M"));
    let d = Device::new("");
    let rebooted = d.reboot_marker(&format!(
        "auto_reboot = true\nmaintenance_window = \"{window}\"\n"
    ));
    d.sb.start("agent");
    d.publish_security_update();
    let signals = common::control::Signals::start(&d.sb);
    d.check();
    d.wait_state("reboot-required");
    let plan = signals.wait_for("RebootPending", WAIT, |a| {
        a[0]["waiting_for"] == serde_json::json!(["maintenance-window"])
    })[0]
        .clone();
    let at = plan["at"].as_i64().unwrap();
    let opens = now.timestamp().as_second() + 2 * 3600;
    // This device's spread moves the opening later by at most half the window (30 min).
    assert!(
        (opens - 60..=opens + 30 * 60).contains(&at),
        "{at} vs {opens} ({window})"
    );
    std::thread::sleep(Duration::from_secs(2));
    assert!(!rebooted.exists(), "rebooted outside the window");
    assert_eq!(d.status()["State"], "reboot-required");

    // The user's consent does not wait for the window.
    d.call("Reboot", &[]);
    d.sb.wait_for("the reboot", WAIT, || rebooted.exists());
}

#[test]
fn a_support_end_in_the_past_is_end_of_life_on_dbus_and_in_ssuctl_status() {
    let d = Device::new("");
    d.publish_model(&[
        "--launch-date",
        "2021-01-01",
        "--support-end",
        "2024-12-31",
        "--replacement-text",
        "Sandbox Gateway 2 replaces this model; trade-in at your dealer",
        "--replacement-url",
        "https://example.com/eol/sandbox-gw",
    ]);
    d.sb.start("agent");
    d.check();
    let st = d.status();
    assert_eq!(st["SupportState"], "ended", "{st:#}");
    assert_eq!(st["SupportEnd"], "2024-12-31");
    assert_eq!(
        st["ReplacementInfo"]["text"],
        "Sandbox Gateway 2 replaces this model; trade-in at your dealer"
    );
    assert_eq!(
        st["ReplacementInfo"]["url"],
        "https://example.com/eol/sandbox-gw"
    );
    assert_eq!(d.sb.agent_property("SupportState"), "ended");
    let text = String::from_utf8_lossy(&d.sb.ssuctl(&["status"]).stdout).into_owned();
    assert!(
        text.contains(
            "Support:              END OF LIFE: security updates ended on 31 December 2024"
        ),
        "{text}"
    );
    assert!(
        text.contains("Replacement:          Sandbox Gateway 2 replaces this model; trade-in at your dealer (https://example.com/eol/sandbox-gw)"),
        "{text}"
    );
}

/// A device with the security update on offer and automatic installation off.
fn offering_device() -> Device {
    let d = Device::new("");
    d.sb.start("agent");
    let out = d.sb.ssuctl(&["auto-install", "off"]);
    assert!(out.status.success(), "{out:?}");
    d.publish_security_update();
    d.check();
    d.wait_state("available");
    d
}

#[test]
fn ssuctl_install_prints_plain_lines_when_not_a_terminal_and_needs_yes() {
    let d = offering_device();
    let out = d.sb.ssuctl(&["install"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("pass --yes"), "{err}");
    assert_eq!(d.installs_into_b(), 0);

    let out = d.sb.ssuctl(&["install", "--yes"]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{out:?}");
    assert!(!text.contains('\r'), "{text:?}");
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines.iter().any(|l| l.starts_with("Installing: ")),
        "{text}"
    );
    assert!(lines.contains(&"Installed: 100%"), "{text}");
    assert_eq!(
        *lines.last().unwrap(),
        "Installed 1.0.1. Restart to apply it: ssuctl reboot (or ssuctl reboot --at TIME)"
    );
    assert_eq!(d.installs_into_b(), 1);
    // Nothing left to install; the error says what to do next.
    let out = d.sb.ssuctl(&["install", "--yes"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("hint:"),
        "{out:?}"
    );
}

#[test]
fn ssuctl_install_draws_a_progress_bar_on_a_terminal_after_confirmation() {
    let d = offering_device();
    let mut child =
        d.sb.command("script")
            .args([
                "-qec",
                &format!("{} install", env!("CARGO_BIN_EXE_ssuctl")),
                "/dev/null",
            ])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("run script");
    use std::io::Write;
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"y\n").unwrap();
    // Kept open until ssuctl is done: `script` would end the session on EOF.
    let out = child.wait_with_output().expect("wait for script");
    drop(stdin);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{text}");
    assert!(text.contains("Install security update 1.0.1"), "{text}");
    assert!(text.contains("[y/N]"), "{text}");
    assert!(text.contains('\r'), "no redrawn bar: {text:?}");
    assert!(
        text.contains(&format!("[{}] 100%", "#".repeat(30))),
        "{text:?}"
    );
    assert!(text.contains("Installed 1.0.1."), "{text:?}");
    assert_eq!(d.installs_into_b(), 1);
}

/// SEC-0021: the model's signed rollout wave holds every download until it starts.
#[test]
fn nothing_downloads_before_the_models_signed_rollout_wave() {
    let d = Device::new("");
    let wave = |start: &str| {
        d.publish_model(&[
            "--launch-date",
            "2026-01-15",
            "--support-end",
            "2031-01-15",
            "--wave-start",
            start,
        ]);
    };
    let later = jiff::Timestamp::now() + jiff::SignedDuration::from_hours(48);
    wave(&later.to_string());
    d.sb.start("agent");
    d.publish_security_update();
    d.check();
    let st = d.wait_state("deferred");
    // This device's spread moves the signed start later by at most `[spread] wave` (6 h).
    let until = st["UpdateSource"]["waiting_until"].as_i64().unwrap();
    assert!(
        (later.as_second()..=later.as_second() + 6 * 3600).contains(&until),
        "{st:#}"
    );
    let reason = st["UpdateSource"]["reason"].as_str().unwrap();
    assert!(reason.contains("rollout wave"), "{reason}");
    let access = std::fs::read_to_string(d.sb.dir().join("http/access.log")).unwrap();
    assert!(
        !access.contains(".raucb"),
        "downloaded before the wave:\n{access}"
    );
    assert_eq!(d.installs_into_b(), 0);

    // The manufacturer moves the wave back past the spread: the next check downloads and
    // installs.
    wave(&(jiff::Timestamp::now() - jiff::SignedDuration::from_hours(7)).to_string());
    d.check();
    d.wait_state("reboot-required");
    assert_eq!(d.installs_into_b(), 1);
}
