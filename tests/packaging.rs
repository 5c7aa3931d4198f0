//! Packaging: the hardened unit (systemd-analyze), the man pages, and the Debian package
//! built, installed with dpkg, checked and purged again. The Yocto layer: yocto_files.rs
//! (lint, generated lists) and yocto.rs (bitbake itself).

use std::fs;
use std::path::Path;
use std::process::{Command, Output};

/// The exposure limit `docs/hardening.md` promises (issue 6: ≤ 1.5).
const EXPOSURE_LIMIT: f64 = 1.5;

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

fn text(out: &Output) -> String {
    format!(
        "status {:?}\n--- stdout\n{}\n--- stderr\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// "… Overall exposure level for ssu-agent.service: 1.4 OK …" → 1.4
fn exposure_in(s: &str) -> Option<f64> {
    let rest = s.split("exposure level for ssu-agent.service: ").nth(1)?;
    rest.split_whitespace().next()?.parse().ok()
}

#[test]
fn unit_exposure_is_within_the_documented_limit() {
    let unit = repo().join("systemd/ssu-agent.service");
    let out = run(Command::new("systemd-analyze")
        .args(["security", "--offline=true", "--no-pager"])
        .arg(&unit));
    let report = text(&out);
    let measured = exposure_in(&report).unwrap_or_else(|| panic!("no figure in:\n{report}"));
    assert!(
        measured <= EXPOSURE_LIMIT,
        "exposure {measured} > {EXPOSURE_LIMIT}:\n{report}"
    );
    // The recorded figure must be the measured one, so the document cannot go stale.
    let doc = fs::read_to_string(repo().join("docs/hardening.md")).unwrap();
    assert_eq!(
        exposure_in(&doc),
        Some(measured),
        "docs/hardening.md records another figure than systemd-analyze measures"
    );
    let unit_text = fs::read_to_string(&unit).unwrap();
    for line in [
        "Type=notify",
        "Restart=on-failure",
        "WatchdogSec=",
        "Documentation=",
        "ProtectSystem=strict",
        "StateDirectory=ssu-agent",
        "CacheDirectory=ssu-agent",
        "NoNewPrivileges=yes",
        "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6",
        "SystemCallFilter=@system-service",
        "CapabilityBoundingSet=\n",
    ] {
        assert!(unit_text.contains(line), "unit lacks {line:?}");
    }
}

#[test]
fn unit_passes_systemd_analyze_verify() {
    // verify wants the ExecStart= binaries to exist: point them at this build's binary.
    let dir = tempfile::tempdir().unwrap();
    let unit = fs::read_to_string(repo().join("systemd/ssu-agent.service"))
        .unwrap()
        .replace("/usr/bin/ssu-agent", env!("CARGO_BIN_EXE_ssu-agent"));
    let path = dir.path().join("ssu-agent.service");
    fs::write(&path, unit).unwrap();
    // --man=no: the man pages exist only once the package is installed.
    let out = run(Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&path));
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "{}",
        text(&out)
    );

    // And it does fail on a broken unit (the check is real).
    fs::write(
        &path,
        "[Service]\nType=notify\nExecStart=/nonexistent/ssu-agent\n",
    )
    .unwrap();
    let out = run(Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&path));
    assert!(!out.status.success(), "{}", text(&out));
}

#[test]
fn binaries_print_their_man_pages() {
    for (bin, name, section) in [
        (env!("CARGO_BIN_EXE_ssu-agent"), "ssu-agent", "8"),
        (env!("CARGO_BIN_EXE_ssuctl"), "ssuctl", "1"),
        (env!("CARGO_BIN_EXE_ssu-repo"), "ssu-repo", "1"),
    ] {
        let out = run(Command::new(bin).arg("--man"));
        assert!(out.status.success(), "{name}: {}", text(&out));
        let page = String::from_utf8(out.stdout).unwrap();
        assert!(
            page.contains(&format!(".TH {name} {section} ")),
            "{name}: {page}"
        );
        assert!(page.contains(".SH SYNOPSIS"), "{name}: {page}");
        // Hidden: not offered in --help, and only on its own.
        let help = run(Command::new(bin).arg("--help"));
        assert!(!String::from_utf8_lossy(&help.stdout).contains("--man"));
        let out = run(Command::new(bin).args(["--man", "extra"]));
        assert_eq!(out.status.code(), Some(2), "{name}: {}", text(&out));
    }
}

fn dpkg_status(package: &str) -> Option<String> {
    let out = run(Command::new("dpkg-query").args(["-W", "-f=${db:Status-Status}", package]));
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
        .filter(|s| s != "not-installed")
}

/// Processes running `exe` (by /proc/PID/exe), to prove the package started no agent. Only
/// this mount namespace's: an agent in a booted test device (systemd-nspawn) also runs
/// "/usr/bin/ssu-agent", of its own root.
fn pids_of(exe: &Path) -> Vec<u32> {
    let ours = fs::read_link("/proc/self/ns/mnt").unwrap();
    let mut pids = Vec::new();
    for entry in fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if fs::read_link(entry.path().join("exe")).is_ok_and(|p| p == exe)
            && fs::read_link(entry.path().join("ns/mnt")).is_ok_and(|ns| ns == ours)
        {
            pids.push(pid);
        }
    }
    pids
}

/// Purges the test's installation again, also when an assertion fails.
struct Purge;

impl Drop for Purge {
    fn drop(&mut self) {
        let out = apt(&["purge", "-y", "ssu-agent"]);
        if !out.status.success() {
            eprintln!("purging ssu-agent failed: {}", text(&out));
        }
    }
}

/// apt-get (not bare dpkg) for the dpkg lock timeout: other jobs may be installing at once.
fn apt(args: &[&str]) -> Output {
    run(Command::new("apt-get")
        .args([
            "-o",
            "DPkg::Lock::Timeout=600",
            "--no-install-recommends",
            "-q",
        ])
        .args(args)
        .env("DEBIAN_FRONTEND", "noninteractive"))
}

#[test]
fn deb_builds_installs_passes_check_config_and_purges() {
    use std::os::unix::fs::MetadataExt;
    assert!(
        fs::metadata("/proc/self").unwrap().uid() == 0,
        "installing the .deb needs root (CI runs as root)"
    );
    // Worktrees on one machine share its dpkg database: one install test at a time.
    let lock = fs::File::create("/run/lock/ssu-agent-packaging-test.lock").unwrap();
    rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockExclusive).unwrap();
    assert_eq!(
        dpkg_status("ssu-agent"),
        None,
        "ssu-agent is already installed on this machine; this test installs and purges its own"
    );

    // Package the binaries this `cargo test` built; a release build is `bash scripts/deb`.
    let out_dir = tempfile::tempdir().unwrap();
    let out = run(Command::new("bash")
        .arg(repo().join("scripts/deb"))
        .args(["--profile", "dev", "--no-build", "--output"])
        .arg(out_dir.path()));
    let log = text(&out);
    assert!(out.status.success(), "scripts/deb failed:\n{log}");
    assert!(log.contains("lintian found no errors"), "{log}");
    let deb = fs::read_dir(out_dir.path())
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "deb"))
        .unwrap_or_else(|| panic!("no .deb in the output:\n{log}"));

    let purge = Purge;
    let out = apt(&["install", "-y", deb.to_str().unwrap()]);
    assert!(out.status.success(), "install failed: {}", text(&out));
    assert_eq!(dpkg_status("ssu-agent").as_deref(), Some("installed"));

    for f in [
        "/usr/bin/ssu-agent",
        "/usr/bin/ssuctl",
        "/usr/bin/ssu-repo",
        "/usr/lib/systemd/system/ssu-agent.service",
        "/usr/share/dbus-1/system.d/org.ssu.Agent1.conf",
        "/usr/share/dbus-1/interfaces/org.ssu.Agent1.xml",
        "/usr/share/polkit-1/actions/org.ssu.agent.policy",
        "/etc/ssu-agent/agent.toml",
        "/usr/share/man/man8/ssu-agent.8.gz",
        "/usr/share/man/man1/ssuctl.1.gz",
        "/usr/share/man/man1/ssu-repo.1.gz",
        "/usr/share/doc/ssu-agent/copyright",
        "/usr/share/doc/ssu-agent/integration.md",
        "/var/lib/ssu-agent",
        "/var/cache/ssu-agent",
        // enabled (deb-systemd-helper), although not started: no systemd as PID 1 here.
        "/etc/systemd/system/multi-user.target.wants/ssu-agent.service",
    ] {
        assert!(Path::new(f).exists(), "{f} did not land");
    }
    let conffiles = run(Command::new("dpkg-query").args(["-W", "-f=${Conffiles}", "ssu-agent"]));
    assert!(
        String::from_utf8_lossy(&conffiles.stdout).contains("/etc/ssu-agent/agent.toml"),
        "agent.toml is not a conffile: {}",
        text(&conffiles)
    );

    // The installed binary accepts the installed default configuration (its default path).
    let out = run(Command::new("/usr/bin/ssu-agent").arg("--check-config"));
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("/etc/ssu-agent/agent.toml") && stdout.contains("configuration OK"),
        "{stdout}"
    );
    // The unit as installed also verifies, now that binaries and man pages are there.
    let out = run(Command::new("systemd-analyze").args([
        "verify",
        "--man=no",
        "/usr/lib/systemd/system/ssu-agent.service",
    ]));
    assert!(out.status.success(), "{}", text(&out));

    // postinst must not have started a real agent (no systemd as PID 1: deb-systemd-invoke
    // skips the start).
    assert_eq!(pids_of(Path::new("/usr/bin/ssu-agent")), Vec::<u32>::new());

    drop(purge);
    assert_eq!(dpkg_status("ssu-agent"), None, "purge left the package");
    for f in [
        "/usr/bin/ssu-agent",
        "/etc/ssu-agent/agent.toml",
        "/var/lib/ssu-agent",
        "/etc/systemd/system/multi-user.target.wants/ssu-agent.service",
    ] {
        assert!(!Path::new(f).exists(), "{f} left after purge");
    }
}

#[test]
fn integration_guide_lists_every_dbus_property() {
    let xml = fs::read_to_string(repo().join("dbus/org.ssu.Agent1.xml")).unwrap();
    let guide = fs::read_to_string(repo().join("docs/integration.md")).unwrap();
    let names: Vec<&str> = xml
        .split("<property name=\"")
        .skip(1)
        .filter_map(|s| s.split('"').next())
        .collect();
    assert!(names.len() > 20, "{names:?}");
    for name in names {
        assert!(
            guide.contains(&format!("`{name}`")),
            "docs/integration.md does not list the property {name}"
        );
    }
    assert!(guide.contains("gdbus call --system --dest org.ssu.Agent1"));
}
