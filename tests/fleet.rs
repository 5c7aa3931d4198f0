//! The hub view: two sandbox devices (two state directories, two identity keys) — one that
//! installed the security update, one whose health check failed and rolled it back — hand
//! their signed reports (`ssuctl report --json`) to a hub store through `ssu-repo
//! enroll-device` and `accept-report`; `ssu-repo fleet` renders the page, opened in headless
//! Chromium, whose DOM shows each device at its patch level.
//!
//! The screenshot goes to `docs/fleet.png` when that file is missing or
//! `SSU_UPDATE_SCREENSHOT=1` is set: the page carries real times and fresh keys, so every run
//! draws a slightly different picture and the checkout should not change on each run.

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use common::chromium::{assert_has, chromium, screenshot, text_lines};
use common::device::{Device, WAIT};
use common::device::{show, ssu_repo as ok, ssu_repo_output as ssu_repo};

const SCREENSHOT_SIZE: (u32, u32) = (1600, 540);

/// What the hub got from one device: its public key as printed for enrolment, one report.
struct Collected {
    key_id: String,
    public_key: PathBuf,
    report: PathBuf,
}

fn collect(d: &Device, work: &Path, name: &str) -> Collected {
    let ctl = |args: &[&str]| {
        let out = d.sb.ssuctl(args);
        assert!(out.status.success(), "ssuctl {args:?}: {out:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    let line = ctl(&["report", "--public-key"]);
    let public_key = work.join(format!("{name}.pub"));
    fs::write(&public_key, &line).unwrap();
    let report = work.join(format!("{name}.json"));
    fs::write(&report, ctl(&["report", "--json"])).unwrap();
    Collected {
        key_id: line.split_whitespace().nth(2).unwrap().to_owned(),
        public_key,
        report,
    }
}

/// A sandbox device offered the security update 1.0.1 (patch level 2026-11-01); with a
/// failing health check it rolls back to 1.0.0 (2026-09-01).
fn device_after_update(work: &Path, name: &str, health_fails: bool) -> Collected {
    let d = Device::new(if health_fails {
        "health_checks = [[\"false\"]]"
    } else {
        ""
    });
    d.sb.start("agent");
    d.install_security_update_and_reboot();
    // Rolling back, the agent reboots the sandbox once more, into A.
    let (want, slot) = if health_fails {
        ("rolled-back", "A")
    } else {
        ("idle", "B")
    };
    d.sb.wait_for(&format!("state {want} in slot {slot}"), WAIT, || {
        fs::read_to_string(d.sb.dir().join("boot/booted")).is_ok_and(|b| b.trim() == slot)
            && d.sb.ssuctl(&["status", "--json"]).status.success()
            && d.status()["State"] == want
    });
    let st = d.status();
    let level = if health_fails {
        "2026-09-01"
    } else {
        "2026-11-01"
    };
    assert_eq!(st["SecurityPatchLevel"], level, "{st:#}");
    collect(&d, work, name)
}

/// The text lines of the `<tr>` of device `key_id` in the DOM.
fn row(dom: &str, key_id: &str) -> Vec<String> {
    let start = dom
        .find(&format!("<tr id=\"device-{key_id}\""))
        .unwrap_or_else(|| panic!("no row for {key_id} in\n{dom}"));
    let end = start + dom[start..].find("</tr>").unwrap();
    text_lines(&dom[start..end])
}

#[test]
fn the_fleet_page_shows_two_sandbox_devices_at_their_patch_levels() {
    let work = tempfile::tempdir().unwrap();
    let work = work.path();
    // One after the other: each sandbox is torn down before the next starts.
    let updated = device_after_update(work, "updated", false);
    let rolled = device_after_update(work, "rolled", true);
    assert_ne!(updated.key_id, rolled.key_id, "two devices, two keys");

    let hub = work.join("hub");
    let hub_arg = hub.to_str().unwrap();
    let arg = |p: &Path| p.to_str().unwrap().to_owned();
    // The first device is enrolled with its public key, as a fleet would at the factory.
    assert_eq!(
        ok(&[
            "enroll-device",
            hub_arg,
            "--device-key",
            &arg(&updated.public_key)
        ])
        .trim(),
        format!("enrolled device {}", updated.key_id)
    );
    let stored = ok(&["accept-report", hub_arg, &arg(&updated.report)]);
    assert!(stored.starts_with("stored report "), "{stored}");
    // Delivered again (its acknowledgement lost): stored once, acknowledged.
    let again = ok(&["accept-report", hub_arg, &arg(&updated.report)]);
    assert!(again.contains("was stored before (unchanged)"), "{again}");

    // The second device is unknown: refused, unless trusted on first use.
    let out = ssu_repo(&["accept-report", hub_arg, &arg(&rolled.report)]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("is not enrolled"),
        "{}",
        show(&out)
    );
    // A copy whose patch level was "improved" on the way does not verify, even on first use.
    let text = fs::read_to_string(&rolled.report).unwrap();
    let forged = work.join("forged.json");
    fs::write(
        &forged,
        text.replace(
            "\\\"security_patch_level\\\":\\\"2026-09-01\\\"",
            "\\\"security_patch_level\\\":\\\"2026-11-01\\\"",
        ),
    )
    .unwrap();
    assert_ne!(
        fs::read_to_string(&forged).unwrap(),
        text,
        "the forgery changed nothing"
    );
    let out = ssu_repo(&["accept-report", hub_arg, &arg(&forged), "--allow-unknown"]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("REFUSED"),
        "{}",
        show(&out)
    );
    let stored = ok(&[
        "accept-report",
        hub_arg,
        &arg(&rolled.report),
        "--allow-unknown",
    ]);
    assert!(stored.contains(&rolled.key_id), "{stored}");

    let site = work.join("site");
    let written = ok(&["fleet", hub_arg, "--out", site.to_str().unwrap()]);
    let page = site.join("index.html");
    assert!(
        written.starts_with(&format!(
            "wrote {} (2 devices, 2 with a verified report, ",
            page.display()
        )),
        "{written}"
    );
    let html = fs::read_to_string(&page).unwrap();
    for needle in [
        "<script", "<link", "<img", "<iframe", "src=", "url(", "@import",
    ] {
        assert!(!html.contains(needle), "the page contains {needle}");
    }

    let dom = chromium(work, &page, &["--dump-dom".into()]);
    let lines = text_lines(&dom);
    assert_has(&lines, &["Fleet patch status"]);
    let short = |id: &str| format!("key {}…", &id[..12]);

    let a = row(&dom, &updated.key_id);
    assert_has(
        &a,
        &["Sandbox Gateway", "sandbox-gw-1", &short(&updated.key_id)],
    );
    assert_has(&a, &["2026-11-01", "version 1.0.1"]);
    assert_has(&a, &["booted B", "idle"]);
    assert!(!a.iter().any(|l| l == "rolled back"), "{a:#?}");
    assert!(
        a.iter()
            .any(|l| l.starts_with("report 20") && l.ends_with(" ago)")),
        "{a:#?}"
    );
    assert!(a.iter().any(|l| l.starts_with("received 20")), "{a:#?}");
    assert!(a.iter().any(|l| l == "current"), "{a:#?}");
    // Both devices probe a clean device tree: trusted, and the updated one needs nothing.
    assert_has(&a, &["ok"]);
    assert_has(&a, &["trusted"]);

    let b = row(&dom, &rolled.key_id);
    assert_has(
        &b,
        &["Sandbox Gateway", "sandbox-gw-1", &short(&rolled.key_id)],
    );
    assert_has(&b, &["2026-09-01", "version 1.0.0"]);
    assert_has(&b, &["booted A", "rolled-back"]);
    assert!(b.iter().any(|l| l == "rolled back"), "{b:#?}");
    // Its rollback was the agent's own verdict, not a compromise.
    assert_has(&b, &["trusted"]);
    assert!(!b.iter().any(|l| l == "compromised"), "{b:#?}");
    assert!(
        b.iter().any(|l| l == "slot B inactive, bundle 1.0.1, bad"),
        "{b:#?}"
    );
    // Needing attention, the rolled-back device is listed first.
    assert!(
        dom.find(&rolled.key_id).unwrap() < dom.find(&updated.key_id).unwrap(),
        "{lines:#?}"
    );

    // The picture for the docs.
    let png = screenshot(work, &page, SCREENSHOT_SIZE);
    let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/fleet.png");
    if !docs.exists() || std::env::var_os("SSU_UPDATE_SCREENSHOT").is_some() {
        fs::write(&docs, &png).unwrap();
    }
}
