//! `ssu-repo`, through the real binary, on real (plain) RAUC bundles built with the rauc CLI;
//! what it publishes is read back with tough's client from `file://` URLs, as a device would.
//! Every refusal is checked to leave the repository byte-for-byte unchanged.

mod ssu_repo_cli;

use ssu_repo_cli::work::{
    BUNDLE, Work, add_args, load, mode, p, read_target, s, security_flags, sha256_hex, target,
    versions,
};
use ssu_repo_cli::{files, ok, refused, run, text};
use std::fs;
use std::os::unix::fs::PermissionsExt;

use ssu_agent::metadata::schema::{BundleMeta, DeviceMeta, Kind, Severity};

// ---------------------------------------------------------------------------------------------
// init

#[tokio::test]
async fn init_makes_private_keys_and_a_signed_empty_repository() {
    let w = Work::new();
    let dir = w.path("acme");
    let out = ok(&[
        s("init"),
        p(&dir),
        s("--role"),
        s("manufacturer"),
        s("--name"),
        s("Acme"),
    ]);
    assert!(
        out.contains("initialized manufacturer repository \"Acme\""),
        "{out}"
    );

    assert_eq!(mode(&dir.join("keys")), 0o700);
    for role in ["root", "targets", "snapshot", "timestamp"] {
        assert_eq!(mode(&dir.join(format!("keys/{role}.pk8"))), 0o600, "{role}");
    }
    let metadata: Vec<_> = fs::read_dir(dir.join("public/metadata"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    assert_eq!(
        metadata,
        [
            "1.root.json",
            "1.snapshot.json",
            "1.targets.json",
            "timestamp.json"
        ]
    );
    assert!(dir.join("public/targets").is_dir());
    let toml = fs::read_to_string(dir.join("repo.toml")).unwrap();
    assert!(
        toml.contains("role = \"manufacturer\"") && toml.contains("timestamp = \"7d\""),
        "{toml}"
    );

    // root.json is self-signed and tough accepts the whole repository.
    let repo = load(&dir).await;
    let root = &repo.root().signed;
    assert!(root.consistent_snapshot);
    assert_eq!(root.version.get(), 1);
    assert_eq!(root.roles.len(), 4);
    for keys in root.roles.values() {
        assert_eq!((keys.threshold.get(), keys.keyids.len()), (1, 1));
    }
    assert!(
        root.keys
            .values()
            .all(|k| matches!(k, tough::schema::key::Key::Ed25519 { .. })),
        "Ed25519 keys"
    );
    assert_eq!(repo.root().signatures.len(), 1);
    assert!(repo.targets().signed.targets.is_empty());
    assert_eq!(versions(&repo), [1, 1, 1]);

    let out = ok(&[s("verify"), p(&dir)]);
    assert!(out.contains("ok: 0 targets verified"), "{out}");
}

#[test]
fn init_refuses_a_non_empty_directory_and_bad_expiries() {
    let w = Work::new();
    let dir = w.path("busy");
    fs::create_dir(&dir).unwrap();
    fs::write(dir.join("precious.txt"), "keep me").unwrap();
    let err = refused(&dir, &[s("init"), p(&dir), s("--role"), s("operator")]);
    assert!(err.contains("not empty"), "{err}");

    let fresh = w.path("fresh");
    let out = run(&[
        s("init"),
        p(&fresh),
        s("--role"),
        s("operator"),
        s("--root-expires"),
        s("3mo"),
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(!fresh.exists(), "nothing created on a refusal");
}

// ---------------------------------------------------------------------------------------------
// add

#[tokio::test]
async fn add_with_flags_publishes_the_bundle_with_its_fs25_fields() {
    let w = Work::new();
    let dir = w.init("m", "manufacturer");
    let bundle = w.bundle("ssu-sandbox", "1.0.1", &[7u8; 40_000]);
    let out = ok(&add_args(&dir, &bundle, &security_flags()));
    assert_eq!(
        out.trim(),
        "added bundles/ssu-sandbox/1.0.1.raucb (security, patch level 2026-11-01, 2 CVEs)"
    );

    let repo = load(&dir).await;
    assert_eq!(versions(&repo), [2, 2, 2]);
    let bytes = fs::read(&bundle).unwrap();
    let t = target(&repo, BUNDLE);
    assert_eq!(t.length, bytes.len() as u64);
    assert_eq!(hex::encode(&t.hashes.sha256), sha256_hex(&bytes));
    let meta = BundleMeta::from_custom(&t.custom["ssu"]).unwrap();
    assert_eq!(meta.kind, Kind::Security);
    assert_eq!(
        (meta.compatible.as_str(), meta.version.as_str()),
        ("ssu-sandbox", "1.0.1")
    );
    assert_eq!(meta.base_version, "1.0");
    assert_eq!(meta.security_patch_level, jiff::civil::date(2026, 11, 1));
    assert_eq!(
        meta.released,
        "2026-11-05T10:00:00Z".parse::<jiff::Timestamp>().unwrap()
    );
    assert_eq!((meta.requires_reboot, meta.expected_downtime_s), (true, 90));
    assert_eq!(meta.cves.len(), 2);
    assert_eq!(
        (meta.cves[0].severity, meta.cves[0].cvss),
        (Severity::High, Some(8.1))
    );
    assert_eq!(meta.cves[1].summary, "Information leak: build id");
    assert!(meta.hardware_ids.is_empty());
    assert_eq!(
        read_target(&repo, BUNDLE).await,
        bytes,
        "the served file is the bundle"
    );
    // Where tough fetches it from under consistent snapshots.
    let served = dir.join(format!("public/targets/{}.{BUNDLE}", sha256_hex(&bytes)));
    assert_eq!(fs::read(served).unwrap(), bytes);

    let out = ok(&[s("verify"), p(&dir)]);
    assert!(
        out.contains(BUNDLE) && out.contains("ok: 1 targets verified"),
        "{out}"
    );

    // The same again changes nothing and signs nothing.
    let before = files(&dir);
    let out = ok(&add_args(&dir, &bundle, &security_flags()));
    assert!(out.starts_with("unchanged "), "{out}");
    assert!(files(&dir) == before);
}

#[tokio::test]
async fn add_with_a_descriptor_and_overriding_flags() {
    let w = Work::new();
    let dir = w.init("m", "manufacturer");
    let bundle = w.bundle("ssu-sandbox", "1.0.1", &[1u8; 30_000]);
    let descriptor = w.path("1.0.1.toml");
    fs::write(
        &descriptor,
        r#"
kind = "security"
base_version = "1.0"
security_patch_level = 2026-10-01
released = 2026-11-05T10:00:00Z
hardware_ids = ["sandbox-gw-1", "sandbox-gw-2"]
notes_url = "https://example.com/notes/1.0.1"
requires_reboot = false
expected_downtime_s = 30

[[cves]]
id = "CVE-2026-1234"
severity = "critical"
cvss = 9.8
summary = "Remote code execution in the web UI"
"#,
    )
    .unwrap();
    let flags = [
        "--descriptor",
        descriptor.to_str().unwrap(),
        "--security-patch-level",
        "2026-11-01",
        "--hardware-id",
        "sandbox-gw-3",
    ]
    .map(s);
    let out = ok(&add_args(&dir, &bundle, &flags));
    assert!(out.contains("patch level 2026-11-01, 1 CVE)"), "{out}");

    let repo = load(&dir).await;
    let meta = BundleMeta::from_custom(&target(&repo, BUNDLE).custom["ssu"]).unwrap();
    assert_eq!(
        meta.security_patch_level,
        jiff::civil::date(2026, 11, 1),
        "flag wins"
    );
    assert_eq!(
        meta.hardware_ids,
        ["sandbox-gw-3"],
        "a list flag replaces the list"
    );
    assert_eq!(
        meta.notes_url.as_deref(),
        Some("https://example.com/notes/1.0.1")
    );
    assert_eq!(
        (meta.requires_reboot, meta.expected_downtime_s),
        (false, 30)
    );
    assert_eq!(
        (meta.cves[0].severity, meta.cves[0].cvss),
        (Severity::Critical, Some(9.8))
    );
    assert_eq!(meta.max_severity(), Some(Severity::Critical));
}

#[test]
fn compatible_and_version_come_from_the_bundle_only() {
    let w = Work::new();
    let dir = w.init("m", "manufacturer");
    let bundle = w.bundle("ssu-sandbox", "1.0.1", &[2u8; 20_000]);
    for key in ["version = \"9.9\"", "compatible = \"other\""] {
        let descriptor = w.path("override.toml");
        fs::write(&descriptor, format!("kind = \"feature\"\n{key}\n")).unwrap();
        let mut flags = security_flags();
        flags.extend(["--descriptor".into(), p(&descriptor)]);
        let err = refused(&dir, &add_args(&dir, &bundle, &flags));
        assert!(
            err.contains("read from the bundle's RAUC manifest"),
            "{err}"
        );
    }
    // And there is no flag for them either.
    let out = run(&add_args(&dir, &bundle, &[s("--version"), s("9.9")]));
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
}

#[test]
fn malformed_or_incomplete_bundle_fields_are_refused_unchanged() {
    let w = Work::new();
    let dir = w.init("m", "manufacturer");
    let bundle = w.bundle("ssu-sandbox", "1.0.1", &[3u8; 20_000]);
    // Something published first, so "unchanged" covers a non-trivial repository.
    ok(&add_args(&dir, &bundle, &security_flags()));

    let descriptor = w.path("bad.toml");
    let bundle2 = w.bundle("ssu-sandbox", "1.0.2", &[4u8; 20_000]);
    let cases: [(&str, &str); 5] = [
        (
            "kind = \"security\"\nreboot = true\n",
            "unknown field `reboot`",
        ),
        ("security_patch_level = 2026-13-01\n", "bad.toml"),
        (
            "security_patch_level = \"01/11/2026\"\n",
            "expected YYYY-MM-DD",
        ),
        (
            "[[cves]]\nid = \"CVE-1\"\nseverity = \"urgent\"\nsummary = \"x\"\n",
            "urgent",
        ),
        ("notes_url = \"http://example.com\"\n", "https"),
    ];
    for (body, want) in cases {
        fs::write(&descriptor, body).unwrap();
        let mut flags = security_flags();
        flags.extend(["--descriptor".into(), p(&descriptor)]);
        let err = refused(&dir, &add_args(&dir, &bundle2, &flags));
        assert!(err.contains(want), "{body}: {err}");
    }

    // A security update without CVEs (SEC-0010).
    let bundle3 = w.bundle("ssu-sandbox", "1.0.3", &[5u8; 20_000]);
    let flags = [
        "--kind",
        "security",
        "--base-version",
        "1.0",
        "--security-patch-level",
        "2026-11-01",
        "--downtime",
        "1m",
    ]
    .map(s);
    let err = refused(&dir, &add_args(&dir, &bundle3, &flags));
    assert!(err.contains("at least one CVE"), "{err}");
    // Required fields missing.
    let err = refused(
        &dir,
        &add_args(&dir, &bundle3, &[s("--kind"), s("maintenance")]),
    );
    assert!(err.contains("base_version: required"), "{err}");
    // Not a bundle.
    let err = refused(&dir, &add_args(&dir, &descriptor, &security_flags()));
    assert!(err.contains("rauc info"), "{err}");
}

#[tokio::test]
async fn different_content_under_a_published_name_needs_replace() {
    let w = Work::new();
    let dir = w.init("m", "manufacturer");
    let first = w.bundle("ssu-sandbox", "1.0.1", &[6u8; 20_000]);
    let second = w.bundle("ssu-sandbox", "1.0.1", &[6u8; 21_000]);
    ok(&add_args(&dir, &first, &security_flags()));
    let err = refused(&dir, &add_args(&dir, &second, &security_flags()));
    assert!(
        err.contains("already published with different content") && err.contains("--replace"),
        "{err}"
    );

    // Relabelling published bytes needs --replace too.
    let mut relabelled = security_flags();
    relabelled[1] = s("maintenance");
    let err = refused(&dir, &add_args(&dir, &first, &relabelled));
    assert!(
        err.contains("the same content but different fields"),
        "{err}"
    );
    relabelled.push(s("--replace"));
    let out = ok(&add_args(&dir, &first, &relabelled));
    assert!(
        out.starts_with("updated ") && out.contains("(maintenance,"),
        "{out}"
    );

    let mut flags = security_flags();
    flags.push(s("--replace"));
    let out = ok(&add_args(&dir, &second, &flags));
    assert!(out.starts_with("replaced "), "{out}");
    let repo = load(&dir).await;
    assert_eq!(read_target(&repo, BUNDLE).await, fs::read(&second).unwrap());
    assert_eq!(versions(&repo), [4, 4, 4]);
}

#[test]
fn signing_keys_readable_by_others_are_refused() {
    let w = Work::new();
    let dir = w.init("m", "manufacturer");
    let bundle = w.bundle("ssu-sandbox", "1.0.1", &[8u8; 20_000]);
    let key = dir.join("keys/targets.pk8");
    fs::set_permissions(&key, fs::Permissions::from_mode(0o644)).unwrap();
    let err = refused(&dir, &add_args(&dir, &bundle, &security_flags()));
    assert!(
        err.contains("targets.pk8") && err.contains("chmod 600"),
        "{err}"
    );
}

// ---------------------------------------------------------------------------------------------
// device

#[tokio::test]
async fn device_records_need_36_months_of_support() {
    let w = Work::new();
    let dir = w.init("m", "manufacturer");
    let args = |end: &str| {
        [
            "device",
            dir.to_str().unwrap(),
            "--hardware-id",
            "sandbox-gw-1",
            "--model",
            "Sandbox Gateway",
            "--launch-date",
            "2026-01-15",
            "--support-end",
            end,
            "--replacement-text",
            "Replace with Sandbox Gateway 2",
            "--replacement-url",
            "https://example.com/gw2",
            "--wave-start",
            "2026-12-01T00:00:00Z",
        ]
        .map(s)
    };
    let err = refused(&dir, &args("2029-01-14"));
    assert!(err.contains("earlier than launch + 36 months"), "{err}");

    let out = ok(&args("2029-01-15"));
    assert_eq!(
        out.trim(),
        "added devices/sandbox-gw-1.json (Sandbox Gateway, supported until 2029-01-15, \
         wave starts 2026-12-01T00:00:00Z)"
    );
    let repo = load(&dir).await;
    let name = "devices/sandbox-gw-1.json";
    let meta = DeviceMeta::from_custom(&target(&repo, name).custom["ssu"]).unwrap();
    assert_eq!(meta.support_end, jiff::civil::date(2029, 1, 15));
    assert_eq!(
        meta.replacement.as_ref().unwrap().url.as_deref(),
        Some("https://example.com/gw2")
    );
    let content: DeviceMeta = serde_json::from_slice(&read_target(&repo, name).await).unwrap();
    assert_eq!(content, meta, "the file is the same record");
    let out = ok(&[s("verify"), p(&dir)]);
    assert!(out.contains(name), "{out}");

    // A new wave start is an update of the record.
    let mut later = args("2029-01-15");
    later[15] = s("2026-12-15T00:00:00Z");
    ok(&later);
    let repo = load(&dir).await;
    let meta = DeviceMeta::from_custom(&target(&repo, name).custom["ssu"]).unwrap();
    assert_eq!(meta.wave_start.unwrap().to_string(), "2026-12-15T00:00:00Z");
}
