//! The fleet page: what it shows per device, what it marks, and that nothing a device sends
//! is trusted or run.
use super::page::{Level, Options, attention, render};
use super::tests::{device, now, report, signed};
use super::view::{Shown, load};
use super::{accept, enroll, fleet, store};
use crate::report::key::{FileSigner, Signer};
use jiff::{SignedDuration, Timestamp};
use serde_json::{Value, json};
use std::fs;
use std::path::Path;

fn opts() -> Options {
    Options {
        generated_at: "2026-11-30T09:00:00Z".parse().unwrap(),
        silent_after: SignedDuration::from_hours(48),
    }
}

fn deliver(hub: &Path, dev: &FileSigner, counter: u64, extra: Value) {
    enroll(hub, &dev.public_key()).unwrap();
    accept(
        hub,
        &signed(dev, &report(dev, counter, extra)),
        false,
        now(),
    )
    .unwrap();
}

fn page(hub: &Path) -> String {
    render(&load(hub).unwrap(), &opts())
}

/// The `<tr>` of one device.
fn row<'a>(html: &'a str, dev: &FileSigner) -> &'a str {
    let id = crate::report::key::key_id(&dev.public_key());
    let start = html
        .find(&format!("<tr id=\"device-{id}\""))
        .unwrap_or_else(|| panic!("no row for {id} in\n{html}"));
    let end = start + html[start..].find("</tr>").unwrap();
    &html[start..end]
}

fn marks(hub: &Path, dev: &FileSigner) -> Vec<(Level, String)> {
    let id = crate::report::key::key_id(&dev.public_key());
    let views = load(hub).unwrap();
    attention(views.iter().find(|v| v.key_id == id).unwrap(), &opts())
}

#[test]
fn each_device_shows_its_patch_level_version_last_seen_and_freshness() {
    let hub = tempfile::tempdir().unwrap();
    let (_a, a) = device();
    let (_b, b) = device();
    deliver(hub.path(), &a, 3, json!({}));
    deliver(
        hub.path(),
        &b,
        8,
        json!({"device": {"hardware_id": "sandbox-gw-2"},
               "installed": {"version": "1.0.2", "security_patch_level": "2026-11-01"}}),
    );
    let html = page(hub.path());
    let ra = row(&html, &a);
    for want in [
        "<div class=\"model\">Sandbox Gateway</div><div>sandbox-gw-1</div>",
        "<div class=\"level\">2026-10-01</div><div>version 1.0.1</div>",
        "report 2026-11-30T07:59:00Z (1 h ago)",
        "received 2026-11-30T08:00:00Z (1 h ago)",
        "counter 3",
        "last verified 2026-11-30T07:00:00Z (2 h ago)",
        "<span class=\"mark ok\">ok</span>",
        "booted A",
        "trusted",
        "supported",
        "until 2029-01-15",
    ] {
        assert!(ra.contains(want), "{want:?} not in\n{ra}");
    }
    let rb = row(&html, &b);
    assert!(
        rb.contains("<div class=\"level\">2026-11-01</div><div>version 1.0.2</div>"),
        "{rb}"
    );
    assert!(rb.contains("sandbox-gw-2"), "{rb}");
    assert!(
        html.contains("2 devices, 2 with a verified report, 0 needing attention"),
        "{html}"
    );
    // Deterministic.
    assert_eq!(page(hub.path()), html);
}

#[test]
fn stale_unverified_rolled_back_compromised_and_ended_devices_are_marked() {
    let hub = tempfile::tempdir().unwrap();
    let cases: Vec<(Value, Vec<(Level, &str)>)> = vec![
        (
            json!({"staleness": "overdue"}),
            vec![(Level::Bad, "patch level overdue")],
        ),
        (
            json!({"staleness": "unverified", "metadata": {"last_verified_at": null}}),
            vec![(Level::Bad, "updates unverified")],
        ),
        (
            json!({"update_state": "rolled-back"}),
            vec![(Level::Bad, "rolled back")],
        ),
        (
            json!({"boot": {"slots": [{"name": "rootfs.1", "bootname": "B", "state": "inactive",
                                     "boot_status": "bad", "bundle_version": "1.0.2"}]}}),
            vec![(Level::Bad, "rolled back")],
        ),
        (
            json!({"update_state": "failed"}),
            vec![(Level::Warn, "update failed")],
        ),
        (
            json!({"integrity": {"state": "compromised", "findings": [
            {"probe": "setuid", "outcome": "fail", "evidence": "/usr/bin/su"}]}}),
            vec![(Level::Bad, "compromised")],
        ),
        (
            json!({"integrity": {"state": "unknown"}}),
            vec![(Level::Warn, "integrity unknown")],
        ),
        (
            json!({"support": {"state": "ended", "end": "2025-01-01"}}),
            vec![(Level::Bad, "support ended")],
        ),
        (
            json!({"support": {"state": "ending-soon"}}),
            vec![(Level::Warn, "support ending soon")],
        ),
        (
            json!({"staleness": 7}),
            vec![(Level::Warn, "staleness unknown")],
        ),
    ];
    for (extra, want) in cases {
        let (_d, dev) = device();
        deliver(hub.path(), &dev, 1, extra.clone());
        let got = marks(hub.path(), &dev);
        let want: Vec<(Level, String)> = want.into_iter().map(|(l, s)| (l, s.to_owned())).collect();
        assert_eq!(got, want, "{extra}");
    }
    let html = page(hub.path());
    assert!(
        html.contains("<div class=\"finding\">setuid fail: /usr/bin/su</div>"),
        "{html}"
    );
    assert!(
        html.contains("<div class=\"v-bad\">slot B inactive, bundle 1.0.2, bad</div>"),
        "{html}"
    );
    assert!(html.contains("last verified never"), "{html}");
    // Devices needing attention come first, the worst first.
    let first_row = &html[html.find("<tbody>").unwrap()..];
    assert!(
        first_row.starts_with("<tbody>\n<tr id=\"device-")
            && first_row[..200].contains("class=\"bad\"")
    );
}

#[test]
fn silent_devices_skewed_clocks_and_devices_without_reports_are_marked() {
    let hub = tempfile::tempdir().unwrap();
    let (_d, dev) = device();
    enroll(hub.path(), &dev.public_key()).unwrap();
    assert_eq!(
        marks(hub.path(), &dev),
        [(Level::Warn, "no report yet".to_owned())]
    );
    assert!(page(hub.path()).contains("Enrolled; no report received yet."));

    // Received three days before the page, by a device whose clock is 5 h behind.
    let received: Timestamp = "2026-11-27T08:00:00Z".parse().unwrap();
    let r = report(&dev, 1, json!({"time": "2026-11-27T03:00:00Z"}));
    accept(hub.path(), &signed(&dev, &r), false, received).unwrap();
    assert_eq!(
        marks(hub.path(), &dev),
        [(Level::Warn, "silent for 3 days".to_owned())]
    );
    let html = page(hub.path());
    assert!(html.contains("device clock 5 h behind"), "{html}");
    assert!(
        html.contains("received 2026-11-27T08:00:00Z (3 days ago)"),
        "{html}"
    );
}

#[test]
fn a_stored_report_that_no_longer_verifies_is_shown_as_such_and_nothing_of_it_trusted() {
    let hub = tempfile::tempdir().unwrap();
    let (_d, dev) = device();
    deliver(hub.path(), &dev, 4, json!({}));
    let id = crate::report::key::key_id(&dev.public_key());
    // Someone with access to the hub's disk "improves" the device's patch level.
    let path = store::report_path(hub.path(), &id, 4);
    let text = fs::read_to_string(&path).unwrap();
    fs::write(&path, text.replace("2026-10-01", "2026-12-01")).unwrap();
    let views = load(hub.path()).unwrap();
    assert!(
        matches!(&views[0].report, Shown::Unverified(why) if why.contains("signature")),
        "{views:?}"
    );
    let html = page(hub.path());
    assert!(
        !html.contains("2026-12-01"),
        "a changed report was shown:\n{html}"
    );
    assert!(!html.contains("Sandbox Gateway</div>"), "{html}");
    assert!(
        html.contains("The newest report (counter 4) does not verify"),
        "{html}"
    );
    assert_eq!(
        marks(hub.path(), &dev),
        [(Level::Bad, "report does not verify".to_owned())]
    );
    assert!(
        html.contains("1 devices, 0 with a verified report, 1 needing attention"),
        "{html}"
    );

    // A report signed by another key, put in this device's place (with its own key id).
    let (_o, other) = device();
    let theirs = signed(
        &other,
        &report(
            &other,
            4,
            json!({"installed": {"security_patch_level": "2026-12-01"}}),
        ),
    );
    fs::write(&path, &theirs).unwrap();
    assert!(matches!(
        &load(hub.path()).unwrap()[0].report,
        Shown::Unverified(_)
    ));
    // The device's own report 9, stored under the name of report 4.
    fs::write(&path, signed(&dev, &report(&dev, 9, json!({})))).unwrap();
    assert!(
        matches!(&load(hub.path()).unwrap()[0].report, Shown::Unverified(w) if w.contains("holds report 9"))
    );
    // The enrolled key replaced, or removed.
    fs::write(&path, &text).unwrap();
    assert!(load(hub.path()).unwrap()[0].verified().is_some());
    let key_file = hub.path().join("devices").join(&id).join("key.pub");
    fs::write(&key_file, format!("{}\n", hex::encode(other.public_key()))).unwrap();
    assert!(
        matches!(&load(hub.path()).unwrap()[0].report, Shown::Unverified(w) if w.contains("enrolled key"))
    );
    fs::remove_file(&key_file).unwrap();
    assert!(
        matches!(&load(hub.path()).unwrap()[0].report, Shown::Unverified(w) if w.contains("no enrolled key"))
    );
}

/// What a rooted device can put in any field of its (validly signed) report.
const HOSTILE: &str = "<script>document.title='owned'</script>\"><img src=x onerror=alert(1)>&amp;";
const HOSTILE_ESCAPED: &str = "&lt;script&gt;document.title=&#39;owned&#39;&lt;/script&gt;&quot;&gt;&lt;img src=x onerror=alert(1)&gt;&amp;amp;";

#[test]
fn hostile_report_fields_are_escaped_everywhere() {
    let hub = tempfile::tempdir().unwrap();
    let (_d, dev) = device();
    let h = HOSTILE;
    deliver(
        hub.path(),
        &dev,
        1,
        json!({
            "device": {"hardware_id": h, "model": h},
            "installed": {"version": h, "security_patch_level": h, "applied_at": h},
            "time": h, "staleness": h, "update_state": h, "last_error": h,
            "boot": {"booted_slot": h, "slots": [{"bootname": h, "state": h, "bundle_version": h, "boot_status": h}]},
            "metadata": {"last_verified_at": h, "last_check": {"verified": false, "message": h},
                         "versions": {"targets": h, "timestamp": h}},
            "available": {"version": h, "security_patch_level": h},
            "integrity": {"state": h, "findings": [{"probe": h, "outcome": "fail", "evidence": h}]},
            "support": {"state": h, "end": h},
            "key": {"storage": h},
        }),
    );
    let html = page(hub.path());
    for needle in ["<script", "<img", "onerror=alert(1)>", "'owned'"] {
        assert!(!html.contains(needle), "unescaped {needle:?} in\n{html}");
    }
    // Every field is on the page, escaped (21 values above).
    assert!(html.matches(HOSTILE_ESCAPED).count() >= 21, "{html}");
    assert!(html.contains("content=\"default-src 'none'; style-src 'unsafe-inline'\""));
}

#[test]
fn over_long_values_are_cut() {
    let hub = tempfile::tempdir().unwrap();
    let (_d, dev) = device();
    let long = "x".repeat(50_000);
    let findings: Vec<Value> = (0..40)
        .map(|i| json!({"probe": format!("p{i}"), "outcome": "fail", "evidence": &long[..5000]}))
        .collect();
    deliver(
        hub.path(),
        &dev,
        1,
        json!({"device": {"model": long}, "integrity": {"state": "compromised", "findings": findings}}),
    );
    let html = page(hub.path());
    assert!(html.len() < 20_000, "{} bytes", html.len());
    assert!(html.contains(&format!("{}…", "x".repeat(super::page::MAX_TEXT))));
    assert!(html.contains("<div>and 35 more</div>"), "{html}");
}

#[test]
fn fleet_writes_the_page_atomically_and_counts() {
    let hub = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let (_a, a) = device();
    let (_b, b) = device();
    deliver(hub.path(), &a, 1, json!({}));
    deliver(hub.path(), &b, 1, json!({"update_state": "rolled-back"}));
    let written = fleet(hub.path(), &out.path().join("site"), &opts()).unwrap();
    assert_eq!(
        (written.devices, written.verified, written.attention),
        (2, 2, 1)
    );
    let names: Vec<_> = fs::read_dir(out.path().join("site"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["index.html"]);
    assert_eq!(fs::read_to_string(&written.path).unwrap(), page(hub.path()));
    // An empty store renders a page saying so.
    let empty = tempfile::tempdir().unwrap();
    let w = fleet(empty.path(), empty.path(), &opts()).unwrap();
    assert!(
        fs::read_to_string(w.path)
            .unwrap()
            .contains("No device is enrolled")
    );
    let e = fleet(&empty.path().join("typo"), empty.path(), &opts()).unwrap_err();
    assert!(e.to_string().contains("no such directory"), "{e}");
}
