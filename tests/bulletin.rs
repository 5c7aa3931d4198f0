//! The website channel: `ssu-repo bulletin` on a repository built with the real `ssu-repo`
//! and real RAUC bundles, the page opened in headless Chromium (Debian's `chromium`): its
//! rendered text carries each model's patch level, the updates' CVEs and severities, the
//! support end and the replacement plan; hostile text stays text. The screenshot is saved as
//! `docs/bulletin.png`.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::chromium::{assert_has, chromium, screenshot, text_lines};
use common::device::{show, ssu_repo as ok, ssu_repo_output as ssu_repo};

const GENERATED_AT: &str = "2026-11-27T12:00:00Z";
/// A CVE summary that would run script if the page did not escape it (the schema allows
/// `<`, quotes and `&` in summaries: they are printable).
const HOSTILE: &str = "<script>document.title='owned'</script> & \"quoted\" <b>bold</b>";
const SCREENSHOT_SIZE: (u32, u32) = (1100, 1250);

/// A plain RAUC bundle with one image, signed by a throw-away key made on first use.
fn rauc_bundle(work: &Path, compatible: &str, version: &str) -> PathBuf {
    let (cert, key) = (work.join("cert.pem"), work.join("key.pem"));
    if !cert.exists() {
        let out = Command::new("openssl")
            .args([
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "30",
            ])
            .args(["-subj", "/CN=bulletin-test"])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .output()
            .expect("run openssl");
        assert!(out.status.success(), "openssl: {}", show(&out));
    }
    let input = work.join(format!("bundle-{compatible}-{version}"));
    fs::create_dir_all(&input).unwrap();
    fs::write(input.join("rootfs.img"), version.repeat(1000)).unwrap();
    fs::write(
        input.join("manifest.raucm"),
        format!(
            "[update]\ncompatible={compatible}\nversion={version}\n[bundle]\nformat=plain\n\
             [image.rootfs]\nfilename=rootfs.img\n"
        ),
    )
    .unwrap();
    let bundle = work.join(format!("{compatible}-{version}.raucb"));
    let out = Command::new("rauc")
        .arg("bundle")
        .arg(format!("--cert={}", cert.display()))
        .arg(format!("--key={}", key.display()))
        .arg(&input)
        .arg(&bundle)
        .output()
        .expect("run rauc bundle");
    assert!(out.status.success(), "rauc bundle: {}", show(&out));
    bundle
}

/// One published update: compatible, version, patch level, released, hardware id, CVE flags.
type Update<'a> = (&'a str, &'a str, &'a str, &'a str, &'a str, &'a [&'a str]);

/// A manufacturer repository with two models: the current one with two security updates (one
/// CVE summary hostile), and one past its support end with its last update.
fn publish(work: &Path) -> PathBuf {
    let repo = work.join("acme");
    let dir = repo.to_str().unwrap();
    ok(&[
        "init",
        dir,
        "--role",
        "manufacturer",
        "--name",
        "Acme Devices",
    ]);
    let hostile = format!("CVE-2026-2345:low:{HOSTILE}");
    let updates: [Update; 3] = [
        (
            "ssu-sandbox",
            "1.0.1",
            "2026-10-01",
            "2026-10-06T09:00:00Z",
            "sandbox-gw-1",
            &["CVE-2026-1111:medium:5.3:Denial of service in the DHCP client"],
        ),
        (
            "ssu-sandbox",
            "1.0.2",
            "2026-11-01",
            "2026-11-05T10:00:00Z",
            "sandbox-gw-1",
            &[
                "CVE-2026-4242:critical:9.8:Remote code execution in the web UI",
                &hostile,
            ],
        ),
        (
            "legacy-gw",
            "3.9.7",
            "2022-12-01",
            "2022-12-20T08:00:00Z",
            "legacy-gw-0",
            &["CVE-2022-0042:high:7.5:Authentication bypass in the SSH server"],
        ),
    ];
    for (compatible, version, level, released, hardware_id, cves) in updates {
        let bundle = rauc_bundle(work, compatible, version);
        let mut args = vec![
            "add",
            dir,
            bundle.to_str().unwrap(),
            "--kind",
            "security",
            "--base-version",
            "1.0",
            "--security-patch-level",
            level,
            "--released",
            released,
            "--hardware-id",
            hardware_id,
            "--downtime",
            "90s",
            "--notes-url",
            "https://example.com/notes",
        ];
        for c in cves {
            args.extend(["--cve", c]);
        }
        ok(&args);
    }
    for (id, model, launch, end, replacement) in [
        (
            "sandbox-gw-1",
            "Sandbox Gateway",
            "2026-01-15",
            "2029-01-15",
            "Replace with Sandbox Gateway 2",
        ),
        (
            "legacy-gw-0",
            "Legacy Gateway",
            "2020-01-15",
            "2023-01-15",
            "Trade in for a Sandbox Gateway at half price",
        ),
    ] {
        ok(&[
            "device",
            dir,
            "--hardware-id",
            id,
            "--model",
            model,
            "--launch-date",
            launch,
            "--support-end",
            end,
            "--replacement-text",
            replacement,
            "--replacement-url",
            "https://example.com/replace",
        ]);
    }
    repo
}

fn bulletin(repo: &Path, out: &Path) -> Output {
    ssu_repo(&[
        "bulletin",
        repo.to_str().unwrap(),
        out.to_str().unwrap(),
        "--generated-at",
        GENERATED_AT,
    ])
}

/// The lines of the section that starts with `heading`, up to the next model.
fn section<'a>(lines: &'a [String], heading: &str) -> &'a [String] {
    let start = lines
        .iter()
        .position(|l| l == heading)
        .unwrap_or_else(|| panic!("no {heading:?} in\n{}", lines.join("\n")));
    let end = lines[start + 1..]
        .iter()
        .position(|l| l.ends_with("Gateway"))
        .map_or(lines.len(), |i| start + 1 + i);
    &lines[start..end]
}

#[test]
fn the_bulletin_renders_in_chromium_with_every_models_security_facts() {
    let work = tempfile::tempdir().unwrap();
    let work = work.path();
    let repo = publish(work);
    let site = work.join("site");
    let out = bulletin(&repo, &site);
    assert!(out.status.success(), "{}", show(&out));
    let page = site.join("index.html");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("wrote {} (2 models, 3 updates, 4 CVEs)", page.display())
    );

    // Self-contained and static: one file, no script, nothing loaded from anywhere.
    let names: Vec<_> = fs::read_dir(&site)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["index.html"]);
    let html = fs::read_to_string(&page).unwrap();
    for needle in [
        "<script", "<link", "<img", "<iframe", "src=", "url(", "@import",
    ] {
        assert!(!html.contains(needle), "the page contains {needle}");
    }
    // Deterministic: the same metadata renders the same bytes.
    let again = work.join("again");
    assert!(bulletin(&repo, &again).status.success());
    assert_eq!(fs::read(again.join("index.html")).unwrap(), html.as_bytes());

    let dom = chromium(work, &page, &["--dump-dom".into()]);
    // The hostile summary became text, not an element: no script ran and the title is ours.
    assert!(!dom.contains("<script"), "{dom}");
    assert!(!dom.contains("<b>"), "{dom}");
    let lines = text_lines(&dom);
    assert_has(&lines, &["Security bulletin: Acme Devices"]);
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with(&format!("Generated at {GENERATED_AT}"))),
        "{lines:#?}"
    );

    let current = section(&lines, "Sandbox Gateway");
    assert_has(current, &["Sandbox Gateway", "sandbox-gw-1"]);
    assert_has(current, &["Security patch level", "2026-11-01"]);
    assert_has(current, &["Launched", "2026-01-15"]);
    assert_has(current, &["Security support", "Until 2029-01-15"]);
    assert_has(
        current,
        &[
            "Replacement",
            "Replace with Sandbox Gateway 2 (",
            "https://example.com/replace",
            ")",
        ],
    );
    // Updates newest first, each with its CVE rows: id, severity, CVSS, summary.
    assert_has(current, &["1.0.2", "security update"]);
    assert_has(
        current,
        &[
            "CVE-2026-4242",
            "critical",
            "9.8",
            "Remote code execution in the web UI",
        ],
    );
    assert_has(current, &["CVE-2026-2345", "low", HOSTILE]);
    assert_has(
        current,
        &[
            "CVE-2026-1111",
            "medium",
            "5.3",
            "Denial of service in the DHCP client",
        ],
    );
    let pos = |v: &str| current.iter().position(|l| l == v).unwrap();
    assert!(pos("1.0.2") < pos("1.0.1"), "{current:#?}");
    assert!(
        !current.iter().any(|l| l.contains("CVE-2022-0042")),
        "{current:#?}"
    );
    assert!(
        current
            .iter()
            .any(|l| l.starts_with("Released 2026-11-05 · patch level 2026-11-01")),
        "{current:#?}"
    );

    let ended = section(&lines, "Legacy Gateway");
    assert_has(ended, &["Security patch level", "2022-12-01"]);
    assert_has(
        ended,
        &[
            "CVE-2022-0042",
            "high",
            "7.5",
            "Authentication bypass in the SSH server",
        ],
    );
    assert!(!ended.iter().any(|l| l.contains("CVE-2026")), "{ended:#?}");
    assert_has(
        ended,
        &[
            "Security support",
            "Ended on 2023-01-15: end of life, no further security updates",
        ],
    );
    assert_has(
        ended,
        &[
            "Replacement",
            "Trade in for a Sandbox Gateway at half price (",
            "https://example.com/replace",
            ")",
        ],
    );

    // The picture for the docs.
    let png = screenshot(work, &page, SCREENSHOT_SIZE);
    let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/bulletin.png");
    // Rewritten only when it changed, so an unchanged page leaves the checkout clean.
    if fs::read(&docs).ok().as_deref() != Some(&png[..]) {
        fs::write(&docs, &png).unwrap();
    }
}

#[test]
fn a_repository_that_does_not_verify_gets_no_bulletin() {
    let work = tempfile::tempdir().unwrap();
    let work = work.path();
    let repo = publish(work);
    let site = work.join("site");
    assert!(bulletin(&repo, &site).status.success());
    let before = fs::read(site.join("index.html")).unwrap();

    // Someone edits a published model record behind the signatures' back.
    let targets = repo.join("public/targets");
    // Stored as <sha256>.devices/legacy-gw-0.json (one directory per record's hash).
    let record = fs::read_dir(&targets)
        .unwrap()
        .map(|e| e.unwrap().path().join("legacy-gw-0.json"))
        .find(|p| p.is_file())
        .expect("the published legacy-gw-0 record");
    let text = fs::read_to_string(&record).unwrap();
    fs::write(&record, text.replace("2023-01-15", "2033-01-15")).unwrap();

    let out = bulletin(&repo, &site);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("does not verify"), "{err}");
    assert!(err.contains("devices/legacy-gw-0.json"), "{err}");
    assert_eq!(
        fs::read(site.join("index.html")).unwrap(),
        before,
        "the published bulletin was replaced"
    );
    let fresh = work.join("fresh");
    assert_eq!(bulletin(&repo, &fresh).status.code(), Some(1));
    assert!(!fresh.join("index.html").exists());
}
