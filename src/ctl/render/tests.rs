use super::*;
use serde_json::json;

#[test]
fn patch_level_reads_like_a_settings_screen() {
    assert_eq!(long_date("2026-11-01"), "1 November 2026");
    assert_eq!(long_date(""), "unknown");
    assert_eq!(long_date("garbage"), "garbage");
}

#[test]
fn status_screen() {
    let st = json!({
        "SecurityPatchLevel": "2026-11-01",
        "PatchAppliedAt": 1_795_000_000u64,
        "InstalledVersion": "1.2.0",
        "State": "idle",
        "Staleness": "unverified",
        "LastCheck": 0,
        "Model": "Sandbox Gateway",
        "HardwareId": "sandbox-gw-1",
        "SupportState": "unknown",
        "Compatible": "ssu-sandbox",
        "BootSlot": "A",
        "Subscription": {"modem": "running", "modems": 1, "operator_name": "Sandbox Telecom",
                         "home_mcc_mnc": "26201", "iccid": "…1234"},
        "Components": {"modemmanager": "running", "rauc": "running"},
        "Slots": [{"name": "rootfs.0", "bootname": "A", "state": "booted", "boot_status": "good"}],
    });
    let history = vec![json!({"action": "installed", "version": "1.2.0",
        "cves": ["CVE-2026-1111", "CVE-2026-2222"]})];
    let text = status(&st, &history, &TimeZone::UTC);
    assert!(
        text.contains("Security patch level: 1 November 2026\n"),
        "{text}"
    );
    assert!(
        text.contains("Applied on:           18 November 2026, 11:06 UTC\n"),
        "{text}"
    );
    assert!(text.contains("Update status:        unverified"), "{text}");
    assert!(
        text.contains("Fixed by it:          CVE-2026-1111, CVE-2026-2222\n"),
        "{text}"
    );
    assert!(text.contains("Last check:           never"), "{text}");
    assert!(
        text.contains("Model:                Sandbox Gateway (sandbox-gw-1)"),
        "{text}"
    );
    assert!(text.contains("Booted slot:          A"), "{text}");
    assert!(
        text.contains("Sandbox Telecom (26201), SIM …1234"),
        "{text}"
    );
    assert!(
        text.contains("modemmanager running, rauc running"),
        "{text}"
    );
    assert!(text.contains("  rootfs.0     A   booted    good"), "{text}");
}

#[test]
fn cellular_lines_say_where_from_and_why_it_waits() {
    let st = json!({
        "Subscription": {"modem": "unavailable", "profile": "telenet", "state": "unknown"},
        "UpdateSource": {"source": "telenet", "reason": "waiting for operator telenet to approve",
                         "waiting_until": 1_795_000_000u64,
                         "deferred": "roaming: deferred until home network"},
    });
    let text = status(&st, &[], &TimeZone::UTC);
    assert!(
        text.contains("Subscription:         telenet (last known; SIM not readable now)\n"),
        "{text}"
    );
    assert!(
        text.contains("Update source:        telenet (waiting for operator telenet to approve)\n"),
        "{text}"
    );
    assert!(
        text.contains("Waiting until:        18 November 2026, 11:06 UTC\n"),
        "{text}"
    );
    assert!(text.contains("Deferred:             roaming"), "{text}");
    // Hostile shapes: nothing shown rather than a panic.
    let text = status(
        &json!({"Subscription": {"profile": 5}, "UpdateSource": {"source": [], "waiting_until": "x"}}),
        &[],
        &TimeZone::UTC,
    );
    assert!(!text.contains("Update source"), "{text}");
    assert!(!text.contains("Subscription:"), "{text}");
}

#[test]
fn control_characters_never_reach_the_terminal() {
    let evil = "bundles/x/\u{1b}]0;owned\u{7}\u{1b}[2J\0\u{9b}.raucb";
    let st = json!({"LastError": format!("refused {evil}"), "LastCheckResult": evil,
                    "Available": {"kind": "security", "version": evil}});
    let entry = json!({"at": 1, "kind": "event", "action": "refused", "version": evil,
                       "detail": evil});
    for text in [
        status(&st, std::slice::from_ref(&entry), &TimeZone::UTC),
        check(&st, &TimeZone::UTC),
        history(&[entry], &TimeZone::UTC),
    ] {
        assert!(
            !text.chars().any(|c| c.is_control() && c != '\n'),
            "{text:?}"
        );
        assert!(text.contains("\\u{1b}"), "{text}");
    }
}

#[test]
fn missing_and_hostile_fields_render_as_unknown() {
    let text = status(
        &json!({"PatchAppliedAt": "x", "Slots": 5, "Subscription": [], "Available": 3}),
        &[json!(null)],
        &TimeZone::UTC,
    );
    assert!(text.contains("Security patch level: unknown"), "{text}");
    assert!(
        text.contains("Applied on:           factory image"),
        "{text}"
    );
    assert!(text.contains("Mobile network:       unknown"), "{text}");
    assert!(long_time(u64::MAX, &TimeZone::UTC).is_none());
}

#[test]
fn an_offer_says_it_is_security_what_it_fixes_and_what_it_costs() {
    let st = json!({"Available": {"kind": "security", "version": "1.0.1",
        "security_patch_level": "2026-11-01", "requires_reboot": true,
        "expected_downtime_s": 90, "cves": [{"id": "CVE-2026-4242",
        "severity": "critical", "summary": "Remote code execution"}]}});
    let text = status(&st, &[], &TimeZone::UTC);
    assert!(
        text.contains(
            "Update available:     security update 1.0.1 (security patch level 1 November 2026)\n"
        ),
        "{text}"
    );
    assert!(
        text.contains("CVE-2026-4242 (critical): Remote code execution"),
        "{text}"
    );
    assert!(
        text.contains("needs a reboot (about 90 s of downtime)"),
        "{text}"
    );
}

#[test]
fn integrity_shows_the_state_and_failing_evidence_only() {
    let st = json!({"IntegrityState": "compromised", "IntegrityFindings": [
        {"probe": "kernel-taint", "outcome": "fail", "evidence": "tainted=8192: E (unsigned module loaded)"},
        {"probe": "rootfs-readonly", "outcome": "pass", "evidence": "/ is /dev/root (squashfs) mounted ro"},
        {"probe": "setuid", "outcome": "fail", "evidence": "unexpected: /usr/bin/su (named su)"},
    ]});
    let text = status(&st, &[], &TimeZone::UTC);
    assert!(
        text.contains(
            "Integrity:            compromised\n                      \
             kernel-taint: tainted=8192: E (unsigned module loaded)\n                      \
             setuid: unexpected: /usr/bin/su (named su)\n"
        ),
        "{text}"
    );
    assert!(!text.contains("rootfs-readonly"), "{text}");
    let text = status(
        &json!({"IntegrityState": 7, "IntegrityFindings": "x"}),
        &[],
        &TimeZone::UTC,
    );
    assert!(text.contains("Integrity:            unknown\n"), "{text}");
}

#[test]
fn history_lines() {
    let h = vec![
        json!({"at": 1_795_000_000u64, "kind": "security", "action": "installed",
        "version": "1.2.0", "security_patch_level": "2026-11-01", "cves": ["CVE-2026-1234"]}),
    ];
    let text = history(&h, &TimeZone::UTC);
    assert!(text.starts_with("18 November 2026, 11:06 UTC  security installed 1.2.0 (security patch level 1 November 2026)\n"), "{text}");
    assert!(text.contains("fixes CVE-2026-1234"), "{text}");
    assert_eq!(history(&[], &TimeZone::UTC), "No updates recorded yet.\n");
}

#[test]
fn fleet_reports_show_the_queue_the_last_delivery_and_the_last_error() {
    let with = |delivery: serde_json::Value| {
        let st = json!({"State": "idle", "ReportDelivery": delivery});
        status(&st, &[], &TimeZone::UTC)
    };
    let text = with(json!({"configured": true, "queued": 2u32,
        "last_delivered": 1_795_000_000u64,
        "last_error": "cannot POST to https://fleet.example/reports: connection refused"}));
    assert!(
        text.contains(
            "Fleet reports:        2 queued (last delivered 18 November 2026, 11:06 UTC; \
             last error: cannot POST to https://fleet.example/reports: connection refused)\n"
        ),
        "{text}"
    );
    let text = with(json!({"configured": true, "queued": 0u32,
        "last_delivered": 1_795_000_000u64, "last_error": ""}));
    assert!(
        text.contains(
            "Fleet reports:        none queued (last delivered 18 November 2026, 11:06 UTC)\n"
        ),
        "{text}"
    );
    let text = with(
        json!({"configured": true, "queued": 1u32, "last_delivered": 0u64,
        "last_error": "the server answered 503: busy"}),
    );
    assert!(
        text.contains(
            "Fleet reports:        1 queued (never delivered; last error: the server answered 503: busy)\n"
        ),
        "{text}"
    );
    let text = with(
        json!({"configured": true, "queued": 3u32, "last_delivered": 0u64,
        "last_error": "", "waiting": "monthly budget for metered/roaming links exhausted"}),
    );
    assert!(
        text.contains(
            "Fleet reports:        3 queued (never delivered; waiting: monthly budget for \
             metered/roaming links exhausted)\n"
        ),
        "{text}"
    );
    // Not configured, or an agent without the property: no line at all.
    for st in [
        json!({"State": "idle", "ReportDelivery": {"configured": false, "queued": 0u32,
            "last_delivered": 0u64, "last_error": ""}}),
        json!({"State": "idle"}),
    ] {
        let text = status(&st, &[], &TimeZone::UTC);
        assert!(!text.contains("Fleet reports"), "{text}");
    }
    // Whatever reached the agent's string, a terminal sees no escape.
    let text = with(
        json!({"configured": true, "queued": 1u32, "last_delivered": 0u64,
        "last_error": "\u{1b}]0;owned\u{7}"}),
    );
    assert!(!text.contains('\u{1b}'), "{text:?}");
    assert!(
        text.contains("last error: \\u{1b}]0;owned\\u{7})"),
        "{text}"
    );
}
