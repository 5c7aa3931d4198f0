//! The update channel against repositories made by an independent TUF implementation
//! (python-tuf, `tests/data/tuf/pyrepo.py`), signed the way an attacker holding some of the
//! keys would sign them (issue 12). Each test drives the sandbox agent end to end and judges
//! it by what a user or operator sees: `ssuctl status`, the history, RAUC's slots, and the
//! bytes the update server's log says were read.

mod common;

use common::device::*;
use common::pyrepo::*;
use std::time::Duration;

/// The largest TUF version number.
const MAX_VERSION: &str = "18446744073709551615";

fn settled(d: &Device) -> serde_json::Value {
    let mut st = serde_json::Value::Null;
    d.sb.wait_for("the check to settle", WAIT, || {
        st = d.status();
        st["State"] != "checking"
    });
    st
}

// ---- 1. delegations ---------------------------------------------------------------------

#[test]
fn a_delegated_role_cannot_override_or_reach_past_its_paths() {
    let (d, repo) = py_device("");
    let bundle = d.sb.build_bundle("0.9", &d.image);
    let old = "bundles/ssu-sandbox/0.9.raucb";
    // The real, old bundle, listed by the top-level targets role with its real level.
    repo.target(
        "targets",
        old,
        Some(&bundle),
        &security_custom("0.9", "2026-03-01"),
    );
    // A role trusted only for devices/* lists the same name claiming a newer level ...
    repo.run(&["delegate", "models", "--paths", "devices/*"]);
    repo.target(
        "models",
        old,
        Some(&bundle),
        &security_custom("0.9", "2026-12-01"),
    );
    // A terminating delegation for bundles/* with nothing in it: the search for any bundle
    // ends there, so what the role after it lists is not trusted.
    repo.run(&["delegate", "stop", "--paths", "bundles/*", "--terminating"]);
    repo.run(&["delegate", "late", "--paths", "bundles/*"]);
    repo.target(
        "late",
        "bundles/ssu-sandbox/0.9.2.raucb",
        Some(&bundle),
        &security_custom("0.9.2", "2026-12-03"),
    );
    repo.publish(&[]);
    d.start_agent();
    let monitor = d.monitor();

    let text = d.check();
    // The top-level entry is the one TUF's search picks: the old level, refused as such.
    assert!(
        text.contains("verified; refused: security patch level 2026-03-01"),
        "{text}"
    );
    assert!(!text.contains("available"), "{text}");
    let st = settled(&d);
    assert_eq!(st["State"], "idle", "{st:#}");
    assert_ne!(st["Staleness"], "unverified", "{st:#}");
    d.assert_nothing_installed(monitor);
}

// ---- 2. fast-forward recovery and the persisted root ------------------------------------

fn verified(d: &Device) -> String {
    let text = d.check();
    assert!(text.contains("verified"), "{text}\n{}", d.sb.agent_log());
    text
}

fn refused(d: &Device) -> String {
    let text = d.check();
    assert!(text.contains("could not verify"), "{text}");
    text
}

#[test]
fn the_device_recovers_from_a_fast_forward_once_the_keys_rotate() {
    let (d, repo) = py_device("");
    d.start_agent();
    verified(&d);

    // A stolen timestamp key signs the largest version there is.
    repo.publish(&["--timestamp-version", MAX_VERSION]);
    verified(&d);
    // The repository's own next timestamp is refused as a rollback, as TUF wants ...
    repo.publish(&["--timestamp-version", "3"]);
    let text = refused(&d);
    assert!(text.contains("previously fetched version"), "{text}");
    // ... until root rotates the timestamp key (spec 5.3.11): then it verifies again.
    repo.run(&["rotate", "timestamp"]);
    repo.publish(&["--timestamp-version", "4"]);
    verified(&d);
    // Also after a restart (the floor in the store agrees).
    d.sb.stop("agent");
    d.start_agent();
    repo.publish(&["--timestamp-version", "5"]);
    verified(&d);

    // The same for the snapshot: fast-forwarded, then its key rotated.
    repo.publish(&["--timestamp-version", "6", "--snapshot-version", "1000"]);
    verified(&d);
    repo.publish(&["--timestamp-version", "7", "--snapshot-version", "8"]);
    refused(&d);
    repo.run(&["rotate", "snapshot"]);
    repo.publish(&["--timestamp-version", "8", "--snapshot-version", "9"]);
    verified(&d);
    let st = d.status();
    assert_ne!(st["Staleness"], "unverified", "{st:#}");

    // The next check starts from the persisted root (version 3 now): it asks only for
    // 4.root.json, not for the chain from the shipped 1.root.json.
    let mut log = AccessLog::new(&d.sb);
    repo.publish(&["--timestamp-version", "9", "--snapshot-version", "10"]);
    verified(&d);
    let roots: Vec<String> = log
        .since()
        .into_iter()
        .map(|(p, _, _)| p)
        .filter(|p| p.ends_with("root.json"))
        .collect();
    assert_eq!(roots, ["/metadata/4.root.json"], "{roots:?}");
}

#[test]
fn a_failed_check_keeps_the_verified_metadata_cache() {
    let (d, repo) = py_device("");
    d.start_agent();
    repo.publish(&[]);
    verified(&d);
    let ts = repo.metadata().join("timestamp.json");
    let good = std::fs::read(&ts).unwrap();
    // A timestamp that does not parse: the check fails as a bad repository ...
    std::fs::write(&ts, b"{\"signed\": 1}").unwrap();
    refused(&d);
    // ... and once the good one is back, the verified snapshot and targets are not
    // fetched again.
    std::fs::write(&ts, good).unwrap();
    let mut log = AccessLog::new(&d.sb);
    verified(&d);
    let fetched: Vec<String> = log.since().into_iter().map(|(p, _, _)| p).collect();
    assert!(
        !fetched
            .iter()
            .any(|p| p.contains("snapshot") || p.contains("targets")),
        "{fetched:?}"
    );
}

// ---- 3. hostile target names ------------------------------------------------------------

#[test]
fn control_characters_in_a_target_name_fail_that_target_only() {
    let (d, repo) = py_device("");
    let bundle = d.sb.build_bundle("1.0.1", &d.image);
    repo.target(
        "targets",
        "\"bundles/ssu-sandbox/\\u0000.raucb\"",
        None,
        &security_custom("1.0.2", "2026-11-02"),
    );
    repo.target(
        "targets",
        "\"bundles/ssu-sandbox/\\u001b[2J\\u001b]0;owned\\u0007.raucb\"",
        None,
        &security_custom("1.0.3", "2026-11-03"),
    );
    repo.target(
        "targets",
        "bundles/ssu-sandbox/1.0.1.raucb",
        Some(&bundle),
        &security_custom("1.0.1", "2026-11-01"),
    );
    repo.publish(&[]);
    d.start_agent();

    let text = d.check();
    assert!(text.contains("security update 1.0.1"), "{text}");
    d.wait_state("reboot-required");
    // Still on the bus (a NUL sent over D-Bus makes dbus-daemon drop the connection).
    let st = d.status();
    assert_eq!(st["Available"]["version"], "1.0.1", "{st:#}");
    let history = d.history();
    let refusals: Vec<&str> = history
        .iter()
        .filter(|e| e["action"] == "refused")
        .map(|e| e["detail"].as_str().unwrap())
        .collect();
    assert_eq!(refusals.len(), 2, "{history:#?}");
    assert!(
        refusals.iter().any(|r| r.contains("\\u{0}")),
        "{refusals:?}"
    );
    for args in [&["status"][..], &["history"][..]] {
        let out = d.sb.ssuctl(args);
        assert!(out.status.success(), "{out:?}");
        assert!(
            !out.stdout.iter().any(|&b| b == 0x1b || b == 0 || b == 7),
            "raw control bytes in ssuctl {args:?}: {:?}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
    // A restart re-reads the history and is still fine.
    d.sb.stop("agent");
    d.start_agent();
    assert_eq!(d.history().len(), history.len());
}

// ---- 4. bytes bounded against signed lengths --------------------------------------------

#[test]
fn a_declared_snapshot_length_does_not_lift_the_byte_limit() {
    let (d, repo) = py_device("");
    d.start_agent();
    verified(&d);
    // A timestamp signed by a stolen key declares a 100 MiB snapshot, and the server
    // serves that much.
    const SERVED: u64 = 100 * 1024 * 1024;
    repo.publish(&["--snapshot-length", &SERVED.to_string()]);
    let snapshot = repo.metadata().join("2.snapshot.json");
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&snapshot)
        .unwrap();
    f.set_len(SERVED).unwrap();
    let mut log = AccessLog::new(&d.sb);
    let text = d.check();
    let is_snapshot = |r: &(String, u16, u64)| r.0.contains("snapshot");
    let mut requests = log.until(Duration::from_secs(30), |r| r.iter().any(is_snapshot));
    // A retry would be logged within moments of the first request ending.
    requests.extend(log.until(Duration::from_secs(2), |r| r.iter().any(is_snapshot)));
    let snaps: Vec<_> = requests
        .iter()
        .filter(|(p, _, _)| p.contains("snapshot"))
        .collect();
    assert_eq!(snaps.len(), 1, "one request, no retry: {requests:?}");
    // nginx counts what it wrote into the socket; kernel buffers hold a few MiB of it.
    let sent: u64 = snaps.iter().map(|(_, _, b)| b).sum();
    assert!(sent < 16 * 1024 * 1024, "{sent} bytes sent");
    let rss = peak_rss_kib(d.sb.pid("agent").unwrap());
    eprintln!("snapshot bytes sent: {sent}, agent peak RSS: {rss} KiB");
    assert!(rss < 64 * 1024, "agent peak RSS {rss} KiB");
    assert!(
        text.contains("more metadata than the agent accepts (262144 bytes per file)"),
        "{text}"
    );
    let st = d.status();
    assert_eq!(st["Staleness"], "unverified", "{st:#}");
}

#[test]
fn a_check_reads_no_more_than_the_configured_metadata_bytes() {
    let (d, repo) = py_device("");
    let config = std::fs::read_to_string(d.sb.agent_config()).unwrap();
    let config = config.replace("[check]\n", "[check]\nmax_metadata_bytes = 65536\n");
    std::fs::write(d.sb.agent_config(), config).unwrap();
    // Each file is within its own bound (targets.json about 100 KB of 4 MiB), the check is not.
    let pad = serde_json::json!({"pad": "x".repeat(100_000)});
    repo.target("targets", "notes/padding.txt", None, &pad);
    repo.publish(&[]);
    d.start_agent();
    let mut log = AccessLog::new(&d.sb);
    let text = refused(&d);
    assert!(
        text.contains("more metadata than the agent accepts (65536 bytes per check)"),
        "{text}"
    );
    let sent: u64 = log.since().iter().map(|(_, _, b)| b).sum();
    assert!(sent < 1024 * 1024, "{sent}");
}

fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

// ---- 5. smaller ones --------------------------------------------------------------------

#[test]
fn metadata_of_another_spec_version_is_refused() {
    let (d, repo) = py_device("");
    d.start_agent();
    for bad in ["2.0.0", "banana"] {
        repo.publish(&["--spec-version", bad]);
        let text = refused(&d);
        assert!(text.contains("specification version"), "{text}");
    }
}

#[test]
fn a_repeated_signature_is_reported_in_words() {
    let (d, repo) = py_device("");
    d.start_agent();
    repo.publish(&[]);
    // The timestamp's one signature, twice.
    let ts = repo.metadata().join("timestamp.json");
    let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(&ts).unwrap()).unwrap();
    let sig = v["signatures"][0].clone();
    v["signatures"].as_array_mut().unwrap().push(sig);
    std::fs::write(&ts, serde_json::to_vec(&v).unwrap()).unwrap();
    refused(&d);
    let st = d.status();
    let result = st["LastCheckResult"].as_str().unwrap();
    assert!(
        result.contains("the same key signed more than once"),
        "{result}"
    );
    for dump in ["Decoded", "bytes:", "original:"] {
        assert!(!result.contains(dump), "{result}");
    }
}

#[test]
fn a_length_mismatch_is_a_bad_repository_not_network_trouble() {
    let (d, repo) = py_device("");
    d.start_agent();
    verified(&d);
    assert_ne!(d.status()["Staleness"], "unverified");
    repo.publish(&[]);
    // Longer than the timestamp's signed length for it (still valid JSON).
    let snapshot = repo.metadata().join("2.snapshot.json");
    let mut bytes = std::fs::read(&snapshot).unwrap();
    bytes.extend_from_slice(&[b' '; 64]);
    std::fs::write(&snapshot, bytes).unwrap();
    refused(&d);
    let st = d.status();
    assert_eq!(st["Staleness"], "unverified", "{st:#}");
}

/// A bundle published for the sandbox at `layout`; the agent must install it.
fn installs_from(layout: &str) {
    let (d, repo) = py_device("");
    let bundle = d.sb.build_bundle("1.0.1", &d.image);
    repo.target(
        "targets",
        "bundles/ssu-sandbox/1.0.1.raucb",
        Some(&bundle),
        &security_custom("1.0.1", "2026-11-01"),
    );
    repo.publish(&["--layout", layout]);
    d.start_agent();
    let text = d.check();
    assert!(text.contains("security update 1.0.1"), "{text}");
    d.wait_state("reboot-required");
    assert_eq!(d.installs_into_b(), 1);
}

#[test]
fn targets_at_the_spec_layout_install() {
    installs_from("spec");
}

#[test]
fn targets_only_at_toughs_layout_still_install() {
    // Repositories published by ssu-repo before it followed the specification.
    installs_from("tough");
}
