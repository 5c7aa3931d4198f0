//! End-to-end security updates on the sandbox device: real RAUC bundles built here, a
//! manufacturer repository published with `ssu-repo`, served by nginx, installed by the
//! agent through the real `rauc service`, confirmed after a simulated reboot — and every
//! attack the issue lists, each of which must install nothing, announce nothing, and say why.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::http::{Fault, Proxy};
use common::{Monitor, Options, Sandbox, busctl_value};

const WAIT: Duration = Duration::from_secs(60);
const CVE: &str = "CVE-2026-4242:critical:9.8:Remote code execution in the web UI";

/// A sandbox with a manufacturer repository served over HTTP and an agent pointed at it.
struct Device {
    sb: Sandbox,
    repo: PathBuf,
    image: Vec<u8>,
    /// A fault-injecting proxy between agent and nginx, when the test asked for one.
    proxy: Option<Proxy>,
}

/// Deterministic, incompressible "rootfs" bytes (squashfs would shrink a pattern),
/// different per seed.
fn image(len: usize, seed: u8) -> Vec<u8> {
    let mut x = 0x9E37_79B9_7F4A_7C15u64 ^ u64::from(seed);
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        // xorshift64
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().expect("run command");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `ssu-repo add` arguments for a security update built on feature release `base`.
fn security_args<'a>(base: &'a str, level: &'a str) -> [&'a str; 10] {
    [
        "--kind",
        "security",
        "--base-version",
        base,
        "--security-patch-level",
        level,
        "--cve",
        CVE,
        "--downtime",
        "90s",
    ]
}

/// Publishes `bundle` in `repo` as a security update.
fn add_security(repo: &Path, bundle: &Path, base: &str, level: &str) {
    let mut args = vec!["add", repo.to_str().unwrap(), bundle.to_str().unwrap()];
    args.extend(security_args(base, level));
    ssu_repo(&args);
}

fn ssu_repo(args: &[&str]) -> String {
    run(Command::new(env!("CARGO_BIN_EXE_ssu-repo")).args(args))
}

impl Device {
    /// Sandbox + repository with no targets yet; the agent is not started.
    fn new(install_extra: &str) -> Device {
        Device::build(install_extra, false)
    }

    /// Like [`Device::new`], with the agent talking to nginx through a [`Proxy`].
    fn with_proxy() -> Device {
        Device::build("", true)
    }

    fn build(install_extra: &str, proxied: bool) -> Device {
        let sb = Sandbox::up_with(Options {
            agent: false,
            modem: false,
            ..Options::default()
        });
        let repo = sb.dir().join("repo");
        ssu_repo(&["init", repo.to_str().unwrap(), "--role", "manufacturer"]);
        run(Command::new("bash")
            .arg(common::repo_root().join("scripts/sandbox"))
            .arg("http")
            .arg(sb.dir())
            .arg(repo.join("public")));
        let mut url = std::fs::read_to_string(sb.dir().join("http/url")).unwrap();
        let proxy = proxied.then(|| {
            let addr = url
                .trim()
                .trim_start_matches("http://")
                .trim_end_matches('/');
            Proxy::start(addr.parse().unwrap())
        });
        if let Some(p) = &proxy {
            url = p.url();
        }
        let dir = sb.dir().display().to_string();
        let root = repo.join("public/metadata/1.root.json");
        let toml = format!(
            r#"{head}[install]
boot_id_file = "{dir}/boot/boot_id"
reboot_command = ["bash", "{script}", "reboot", "{dir}"]
{install_extra}
"#,
            head = common::device_toml(&dir, url.trim(), &root.display().to_string()),
            script = common::repo_root().join("scripts/sandbox").display(),
        );
        std::fs::create_dir_all(sb.dir().join("etc")).unwrap();
        std::fs::write(sb.agent_config(), toml).unwrap();
        Device {
            sb,
            repo,
            image: image(2 * 1024 * 1024, 0x5a),
            proxy,
        }
    }

    fn repo_dir(&self) -> &str {
        self.repo.to_str().unwrap()
    }

    /// Builds a bundle and publishes it with `ssu-repo add ARGS`.
    fn publish(&self, version: &str, image: &[u8], args: &[&str]) -> PathBuf {
        let bundle = self.sb.build_bundle(version, image);
        let mut all = vec!["add", self.repo_dir(), bundle.to_str().unwrap()];
        all.extend_from_slice(args);
        ssu_repo(&all);
        bundle
    }

    /// The security update of the happy path: 1.0.1 on feature release 1.0.
    fn publish_security_update(&self) -> PathBuf {
        self.publish("1.0.1", &self.image, &security_args("1.0", "2026-11-01"))
    }

    /// Rewrites the published bytes of `name` on the server (the signed metadata stays).
    fn tamper_with(&self, name: &str, change: impl FnOnce(&mut Vec<u8>)) -> usize {
        let file = self.target_file(name);
        let mut bytes = std::fs::read(&file).unwrap();
        let signed_len = bytes.len();
        change(&mut bytes);
        std::fs::write(&file, &bytes).unwrap();
        signed_len
    }

    /// The published file of `name` under public/targets.
    fn target_file(&self, name: &str) -> PathBuf {
        let file_name = Path::new(name)
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .to_owned();
        walk(&self.repo.join("public/targets"))
            .into_iter()
            .find(|p| p.to_str().unwrap().ends_with(&file_name))
            .unwrap_or_else(|| panic!("no published file for {name}"))
    }

    fn status(&self) -> serde_json::Value {
        let out = self.sb.ssuctl(&["status", "--json"]);
        assert!(out.status.success(), "{out:?}");
        serde_json::from_slice(&out.stdout).unwrap()
    }

    fn history(&self) -> Vec<serde_json::Value> {
        let out = self.sb.ssuctl(&["history", "--json"]);
        assert!(out.status.success(), "{out:?}");
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// `ssuctl check`; returns its text.
    fn check(&self) -> String {
        let out = self.sb.ssuctl(&["check"]);
        assert!(out.status.success(), "{out:?}\n{}", self.sb.agent_log());
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn wait_state(&self, state: &str) -> serde_json::Value {
        let mut last = serde_json::Value::Null;
        self.sb.wait_for(&format!("state {state}"), WAIT, || {
            last = self.status();
            last["State"] == state
        });
        last
    }

    /// How many times RAUC has written slot `rootfs.1` (its own counter).
    fn installs_into_b(&self) -> u64 {
        let out = self.sb.busctl(&[
            "call",
            "de.pengutronix.rauc",
            "/",
            "de.pengutronix.rauc.Installer",
            "GetSlotStatus",
            "--json=short",
        ]);
        assert!(out.status.success(), "{out:?}");
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        v["data"][0]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s[0] == "rootfs.1")
            .and_then(|s| s[1]["installed.count"]["data"].as_u64())
            .unwrap_or(0)
    }

    /// A `gdbus monitor` of the agent, to see which signals it sent.
    fn monitor(&self) -> Monitor {
        self.sb.monitor_agent()
    }

    /// Asserts the device is untouched: factory patch level, nothing installed into B,
    /// no UpdateAvailable; returns the status for further checks.
    fn assert_nothing_installed(&self, monitor: Monitor) -> serde_json::Value {
        let st = self.status();
        assert_eq!(st["SecurityPatchLevel"], "2026-09-01", "{st:#}");
        assert_eq!(st["InstalledVersion"], "1.0.0");
        assert_eq!(self.installs_into_b(), 0, "RAUC wrote slot B");
        assert!(
            st["Available"].as_object().is_none_or(|a| a.is_empty()),
            "{st:#}"
        );
        let seen = monitor.finish();
        assert!(!seen.contains("UpdateAvailable"), "{seen}");
        assert!(!self.history().iter().any(|e| e["action"] == "installed"));
        st
    }
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

// ---- the happy path ---------------------------------------------------------------------

#[test]
fn a_security_update_from_publish_to_confirmed() {
    let d = Device::new("");
    d.sb.start("agent");
    let before = d.status();
    assert_eq!(before["SecurityPatchLevel"], "2026-09-01");
    d.publish_security_update();
    let monitor = d.monitor();

    let text = d.check();
    assert!(text.contains("security update 1.0.1"), "{text}");
    let st = d.wait_state("reboot-required");
    assert_eq!(st["Available"]["kind"], "security");
    assert_eq!(st["Available"]["version"], "1.0.1");
    assert_eq!(st["Available"]["cves"][0]["id"], "CVE-2026-4242");
    assert_eq!(st["Available"]["cves"][0]["severity"], "critical");
    assert_eq!(st["Available"]["requires_reboot"], true);
    assert_eq!(st["Available"]["expected_downtime_s"], 90);
    assert_eq!(d.installs_into_b(), 1);
    // The inactive slot holds the image byte for byte.
    let slot_b = std::fs::read(d.sb.dir().join("slots/rootfs.1.img")).unwrap();
    assert_eq!(&slot_b[..d.image.len()], &d.image[..]);

    d.sb.reboot();
    d.sb.wait_for("the update to be confirmed", WAIT, || {
        let st = d.status();
        st["InstalledVersion"] == "1.0.1" && st["State"] == "idle"
    });
    let st = d.status();
    assert_eq!(st["SecurityPatchLevel"], "2026-11-01");
    assert_ne!(st["PatchAppliedAt"], 0);
    assert_eq!(st["BootSlot"], "B");
    assert_eq!(d.sb.rauc_property("BootSlot"), "B");
    let history = d.history();
    assert_eq!(history.len(), 1, "{history:#?}");
    assert_eq!(history[0]["action"], "installed");
    assert_eq!(history[0]["cves"][0], "CVE-2026-4242");

    let text = String::from_utf8_lossy(&d.sb.ssuctl(&["status"]).stdout).into_owned();
    assert!(
        text.contains("Security patch level: 1 November 2026\n"),
        "{text}"
    );
    assert!(
        text.contains("Fixed by it:          CVE-2026-4242\n"),
        "{text}"
    );
    assert!(
        !text.contains("Applied on:           factory image"),
        "{text}"
    );

    let seen = monitor.finish();
    assert!(seen.contains(".UpdateAvailable"), "{seen}");
    assert!(seen.contains("'kind': <'security'>"), "{seen}");
    assert!(
        seen.contains(".InstallFinished") && seen.contains("'outcome': <'installed'>"),
        "{seen}"
    );
    // The new slot is confirmed: RAUC's bootloader state says good.
    let state_b = std::fs::read_to_string(d.sb.dir().join("boot/state.B")).unwrap();
    assert_eq!(state_b.trim(), "good");
}

// ---- attacks ----------------------------------------------------------------------------

#[test]
fn a_tampered_bundle_is_not_installed() {
    let d = Device::new("");
    d.sb.start("agent");
    d.publish_security_update();
    d.tamper_with("1.0.1.raucb", |bytes| {
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0xff;
    });
    let monitor = d.monitor();
    d.check();
    d.wait_state("failed");
    let st = d.assert_nothing_installed(monitor);
    let err = st["LastError"].as_str().unwrap();
    assert!(
        err.contains("1.0.1") && err.to_lowercase().contains("sha-256"),
        "{err}"
    );
    assert!(d.sb.agent_log().to_lowercase().contains("sha-256"));
}

#[test]
fn metadata_signed_with_a_wrong_key_is_refused() {
    let d = Device::new("");
    d.sb.start("agent");
    // An impostor repository with its own keys, served in place of the real one.
    let impostor = d.sb.dir().join("impostor");
    ssu_repo(&["init", impostor.to_str().unwrap(), "--role", "manufacturer"]);
    let bundle = d.sb.build_bundle("1.0.1", &d.image);
    add_security(&impostor, &bundle, "1.0", "2026-11-01");
    let public = d.repo.join("public/metadata");
    for f in ["timestamp.json", "2.snapshot.json", "2.targets.json"] {
        std::fs::copy(impostor.join("public/metadata").join(f), public.join(f)).unwrap();
    }
    let monitor = d.monitor();
    let text = d.check();
    assert!(text.contains("could not verify"), "{text}");
    let st = d.assert_nothing_installed(monitor);
    assert_eq!(st["Staleness"], "unverified");
    assert!(
        st["LastCheckResult"]
            .as_str()
            .unwrap()
            .contains("Signature"),
        "{st:#}"
    );
}

#[test]
fn an_expired_timestamp_is_refused_as_freeze() {
    let d = Device::new("");
    d.sb.start("agent");
    d.publish_security_update();
    ssu_repo(&[
        "refresh",
        d.repo_dir(),
        "--timestamp-expires",
        "-1d",
        "--allow-expired",
    ]);
    let monitor = d.monitor();
    let text = d.check();
    assert!(text.contains("could not verify"), "{text}");
    let st = d.assert_nothing_installed(monitor);
    assert_eq!(st["Staleness"], "unverified");
    assert!(
        st["LastCheckResult"].as_str().unwrap().contains("expired"),
        "{st:#}"
    );
}

#[test]
fn rolled_back_timestamp_and_snapshot_are_refused_even_after_the_cache_is_lost() {
    let d = Device::new("");
    d.sb.start("agent");
    let metadata = d.repo.join("public/metadata");
    let old_timestamp = std::fs::read(metadata.join("timestamp.json")).unwrap();
    ssu_repo(&["refresh", d.repo_dir()]);
    ssu_repo(&["refresh", d.repo_dir()]);
    let text = d.check();
    assert!(
        text.contains("verified; no newer security update"),
        "{text}"
    );

    // The server replays an older timestamp (which still verifies on its own).
    std::fs::write(metadata.join("timestamp.json"), &old_timestamp).unwrap();
    let monitor = d.monitor();
    let text = d.check();
    assert!(text.contains("could not verify"), "{text}");

    // A power cut wiped tough's cache: the agent's own floor still refuses the replay.
    d.sb.stop("agent");
    std::fs::remove_dir_all(d.sb.dir().join("state/tuf")).unwrap();
    d.sb.start("agent");
    let text = d.check();
    assert!(text.contains("rollback refused"), "{text}");
    let st = d.assert_nothing_installed(monitor);
    assert_eq!(st["Staleness"], "unverified");
}

#[test]
fn a_lower_patch_level_and_a_mislabelled_security_update_are_refused() {
    let d = Device::new("");
    d.sb.start("agent");
    d.publish(
        "0.9.9",
        &image(64 * 1024, 1),
        &security_args("1.0", "2026-08-01"),
    );
    d.publish(
        "2.0.0",
        &image(64 * 1024, 2),
        &security_args("2.0", "2026-11-01"),
    );
    let monitor = d.monitor();
    let text = d.check();
    assert!(text.contains("refused"), "{text}");
    d.assert_nothing_installed(monitor);
    let history = d.history();
    let details: Vec<&str> = history
        .iter()
        .filter_map(|e| e["detail"].as_str())
        .collect();
    assert!(
        details
            .iter()
            .any(|t| t.contains("scope violation") && t.contains("SEC-0010")),
        "{details:?}"
    );
    assert!(
        details
            .iter()
            .any(|t| t.contains("lower than the installed")),
        "{details:?}"
    );
    // Nothing was downloaded for refused targets.
    assert!(!d.sb.dir().join("cache").exists() || walk(&d.sb.dir().join("cache")).is_empty());
}

#[test]
fn a_bundle_for_another_compatible_is_not_installed() {
    let d = Device::new("");
    d.sb.start("agent");
    let bundle = d.sb.build_bundle_for("other-board", "1.0.1", &d.image);
    add_security(&d.repo, &bundle, "1.0", "2026-11-01");
    let monitor = d.monitor();
    let text = d.check();
    assert!(text.contains("no newer security update"), "{text}");
    d.assert_nothing_installed(monitor);
}

#[test]
fn a_bundle_longer_than_its_target_is_cut_off() {
    let d = Device::new("");
    d.sb.start("agent");
    d.publish_security_update();
    // The server sends endless data: the published file grows far past the signed length.
    let signed_len = d.tamper_with("1.0.1.raucb", |bytes| {
        bytes.extend(std::iter::repeat_n(0u8, 32 * 1024 * 1024));
    });
    let monitor = d.monitor();
    d.check();
    d.wait_state("failed");
    let st = d.assert_nothing_installed(monitor);
    let err = st["LastError"].as_str().unwrap();
    assert!(err.contains("longer") || err.contains("too long"), "{err}");
    // nginx's log shows how much it pushed into the socket; the agent stopped reading at
    // the signed length (plus at most what the kernel buffered), far below 32 MiB.
    let sent = nginx_bytes_sent(&d.sb);
    assert!(
        sent >= signed_len as u64,
        "the log must count the bundle: {sent}"
    );
    assert!(
        sent < signed_len as u64 + 8 * 1024 * 1024,
        "nginx sent {sent} bytes"
    );
}

/// One line of the sandbox nginx's access log (format `bytes` in scripts/sandbox:
/// `ADDR [TIME] "REQUEST" STATUS BYTES_SENT BODY_BYTES "RANGE" REQUEST_TIME`).
struct Logged {
    path: String,
    status: u16,
    bytes_sent: u64,
}

fn nginx_log(sb: &Sandbox) -> Vec<Logged> {
    let log = std::fs::read_to_string(sb.dir().join("http/access.log")).unwrap_or_default();
    log.lines()
        .map(|line| {
            let parts: Vec<&str> = line.split('"').collect();
            let request: Vec<&str> = parts[1].split_whitespace().collect();
            let numbers: Vec<&str> = parts[2].split_whitespace().collect();
            Logged {
                path: request[1].to_owned(),
                status: numbers[0].parse().unwrap(),
                bytes_sent: numbers[1].parse().unwrap(),
            }
        })
        .collect()
}

/// Total `$bytes_sent` in the sandbox nginx's access log.
fn nginx_bytes_sent(sb: &Sandbox) -> u64 {
    nginx_log(sb).iter().map(|l| l.bytes_sent).sum()
}

#[test]
fn a_check_that_finds_nothing_new_fetches_only_the_timestamp() {
    let d = Device::new("");
    d.sb.start("agent");
    d.publish_security_update();
    ssu_repo(&["refresh", d.repo_dir()]);
    let text = d.check();
    assert!(text.contains("verified"), "{text}");
    d.wait_state("reboot-required");
    std::fs::write(d.sb.dir().join("http/access.log"), "").unwrap();

    let text = d.check();
    assert!(text.contains("verified"), "{text}");
    let paths: Vec<(String, u16)> = nginx_log(&d.sb)
        .into_iter()
        .map(|l| (l.path, l.status))
        .collect();
    assert_eq!(
        paths,
        vec![
            ("/metadata/2.root.json".to_owned(), 404),
            ("/metadata/timestamp.json".to_owned(), 200)
        ],
        "unchanged snapshot and targets come from the verified cache"
    );
    assert!(nginx_bytes_sent(&d.sb) < 2000);

    // A new publication is still seen: new versions are fetched and verified.
    ssu_repo(&["refresh", d.repo_dir()]);
    std::fs::write(d.sb.dir().join("http/access.log"), "").unwrap();
    d.check();
    let paths: Vec<String> = nginx_log(&d.sb).into_iter().map(|l| l.path).collect();
    assert!(
        paths.iter().any(|p| p.ends_with(".snapshot.json")),
        "{paths:?}"
    );
}

// ---- failures and interruptions ------------------------------------------------------------

#[test]
fn a_rauc_failure_is_reported_with_raucs_message() {
    let d = Device::new("");
    d.sb.start("agent");
    // Signed by a key RAUC's keyring does not trust.
    let other = d.sb.dir().join("other-pki");
    std::fs::create_dir_all(&other).unwrap();
    run(Command::new("openssl").args([
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "30",
        "-subj",
        "/CN=other",
        "-keyout",
        other.join("key.pem").to_str().unwrap(),
        "-out",
        other.join("cert.pem").to_str().unwrap(),
    ]));
    let input = d.sb.dir().join("other-input");
    std::fs::create_dir_all(&input).unwrap();
    std::fs::write(input.join("rootfs.img"), &d.image).unwrap();
    std::fs::write(
        input.join("manifest.raucm"),
        "[update]\ncompatible=ssu-sandbox\nversion=1.0.1\n[bundle]\nformat=plain\n[image.rootfs]\nfilename=rootfs.img\n",
    )
    .unwrap();
    let bundle = d.sb.dir().join("untrusted.raucb");
    run(Command::new("rauc").args([
        "bundle",
        &format!("--cert={}", other.join("cert.pem").display()),
        &format!("--key={}", other.join("key.pem").display()),
        input.to_str().unwrap(),
        bundle.to_str().unwrap(),
    ]));
    add_security(&d.repo, &bundle, "1.0", "2026-11-01");
    d.check();
    let st = d.wait_state("failed");
    let err = st["LastError"].as_str().unwrap();
    assert!(err.contains("RAUC"), "{err}");
    assert!(
        err.to_lowercase().contains("signature") || err.contains("verif"),
        "{err}"
    );
    assert_eq!(st["SecurityPatchLevel"], "2026-09-01");
    let history = d.history();
    assert_eq!(history[0]["action"], "failed");
}

#[test]
fn a_failing_health_check_rolls_back_and_keeps_the_old_patch_level() {
    let d = Device::new("health_checks = [[\"false\"]]");
    d.sb.start("agent");
    d.publish_security_update();
    d.check();
    d.wait_state("reboot-required");
    d.sb.reboot();
    // The agent marks B bad and runs the reboot command; the sandbox boots A again.
    d.sb.wait_for("the rollback", WAIT, || {
        std::fs::read_to_string(d.sb.dir().join("boot/booted")).is_ok_and(|b| b.trim() == "A")
            && d.sb.ssuctl(&["status", "--json"]).status.success()
            && d.status()["State"] == "rolled-back"
    });
    let st = d.status();
    assert_eq!(st["SecurityPatchLevel"], "2026-09-01");
    assert_eq!(st["InstalledVersion"], "1.0.0");
    assert_eq!(st["BootSlot"], "A");
    let state_b = std::fs::read_to_string(d.sb.dir().join("boot/state.B")).unwrap();
    assert_eq!(state_b.trim(), "bad");
    let history = d.history();
    assert_eq!(history.len(), 1, "{history:#?}");
    assert_eq!(history[0]["action"], "rolled-back");
    assert!(
        history[0]["detail"]
            .as_str()
            .unwrap()
            .contains("health check"),
        "{history:#?}"
    );
    // It is not installed again at the next check.
    d.check();
    assert_eq!(d.status()["State"], "rolled-back");
    assert_eq!(d.installs_into_b(), 1);
}

/// SIGKILLs the agent once `State` reaches `state`, restarts it, and checks the update
/// still ends with exactly one install and one history entry.
fn killed_in(state: &str) {
    let d = Device::new("");
    d.sb.start("agent");
    d.publish_security_update();
    d.check();
    d.sb.wait_for(&format!("state {state}"), WAIT, || {
        let st = d.status();
        st["State"] == state || (state == "installing" && st["State"] == "reboot-required")
    });
    let pid = d.sb.pid("agent").unwrap();
    run(Command::new("kill").args(["-KILL", &pid.to_string()]));
    d.sb.wait_for("the agent to die", WAIT, || !common::process_alive(pid));
    d.sb.start("agent");
    if state == "downloading" {
        d.check();
    }
    d.wait_state("reboot-required");
    d.sb.reboot();
    d.sb.wait_for("the update to be confirmed", WAIT, || {
        d.status()["InstalledVersion"] == "1.0.1"
    });
    assert_eq!(d.installs_into_b(), 1, "installed more than once");
    let history = d.history();
    assert_eq!(history.len(), 1, "{history:#?}");
    assert_eq!(history[0]["action"], "installed");
}

#[test]
fn sigkill_during_install_installs_once() {
    killed_in("installing");
}

#[test]
fn sigkill_between_install_and_reboot_installs_once() {
    killed_in("reboot-required");
}

#[test]
fn link_dropped_five_times_mid_download_still_completes_without_refetching() {
    let d = Device::with_proxy();
    d.sb.start("agent");
    let bundle = d.publish_security_update();
    let size = std::fs::metadata(&bundle).unwrap().len();
    let proxy = d.proxy.as_ref().unwrap();
    // Every response breaks after 400 kB (metadata is far smaller): the 2 MiB bundle needs
    // five drops and six resumed attempts.
    proxy.always(Fault::DropAfter(400_000));
    d.check();
    d.wait_state("reboot-required");
    assert_eq!(d.installs_into_b(), 1);
    let exchanges = proxy.exchanges();
    let dropped = exchanges.iter().filter(|e| e.sent == 400_000).count();
    assert!(dropped >= 5, "{exchanges:#?}");
    let resumed = exchanges.iter().filter(|e| e.status == 206).count();
    assert!(resumed >= 5, "{exchanges:#?}");
    // Everything on the wire, metadata included, stays within 2 % of the bundle plus the
    // few kB of metadata: nothing was downloaded twice.
    let metadata: u64 = exchanges
        .iter()
        .filter(|e| e.status == 200 && e.sent < 64 * 1024)
        .map(|e| e.sent)
        .sum();
    let total = proxy.bytes_sent();
    assert!(
        total - metadata <= size * 102 / 100,
        "{total} bytes sent for a {size}-byte bundle ({metadata} of metadata)"
    );
}

#[test]
fn sigkill_during_download_resumes_and_installs_once() {
    let mut d = Device::with_proxy();
    d.image = image(6 * 1024 * 1024, 0x33);
    d.sb.start("agent");
    d.publish_security_update();
    let proxy = d.proxy.as_ref().unwrap();
    // The bundle's response stalls half-way, long enough to kill the agent mid-download
    // (metadata responses are far smaller and pass).
    proxy.always(Fault::Stall {
        after: 3 * 1024 * 1024,
        pause: Duration::from_secs(30),
    });
    d.check();
    let partial = || {
        walk(&d.sb.dir().join("cache"))
            .into_iter()
            .find(|p| p.extension().is_some_and(|e| e == "partial"))
            .and_then(|p| std::fs::metadata(p).ok())
            .map_or(0, |m| m.len())
    };
    d.sb.wait_for("part of the bundle on disk", WAIT, || partial() > 0);
    assert_eq!(d.status()["State"], "downloading");
    let pid = d.sb.pid("agent").unwrap();
    run(Command::new("kill").args(["-KILL", &pid.to_string()]));
    d.sb.wait_for("the agent to die", WAIT, || !common::process_alive(pid));
    let kept = partial();
    assert!(kept > 0);

    // Restarted, the agent resumes from the partial file by itself.
    proxy.always(Fault::None);
    d.sb.start("agent");
    d.wait_state("reboot-required");
    let ranges: Vec<String> = proxy
        .exchanges()
        .into_iter()
        .filter_map(|e| e.range)
        .collect();
    assert!(
        ranges
            .iter()
            .any(|r| r.starts_with("bytes=") && r != "bytes=0-"),
        "no resumed request: {ranges:?}"
    );
    d.sb.reboot();
    d.sb.wait_for("the update to be confirmed", WAIT, || {
        d.status()["InstalledVersion"] == "1.0.1"
    });
    assert_eq!(d.installs_into_b(), 1);
    assert_eq!(d.history().len(), 1);
}

#[test]
fn the_installed_count_helper_reads_raucs_slot_status() {
    // Guards the helper the crash tests rely on: it must see RAUC's own counter move.
    let d = Device::new("");
    assert_eq!(d.installs_into_b(), 0);
    let bundle = d.sb.build_bundle("1.0.1", &d.image);
    d.sb.rauc_install(&bundle).unwrap();
    assert_eq!(d.installs_into_b(), 1);
    assert_eq!(
        busctl_value(
            &d.sb
                .busctl(&[
                    "get-property",
                    "de.pengutronix.rauc",
                    "/",
                    "de.pengutronix.rauc.Installer",
                    "Operation"
                ])
                .stdout
        ),
        "idle"
    );
}

// ---- telling the user and letting them decide -------------------------------------------

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
    let plan = signals.wait("RebootPending", WAIT)[0].clone();
    assert_eq!(
        plan["waiting_for"],
        serde_json::json!(["inhibitor"]),
        "{plan:#}"
    );
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
    let plans = signals.all("RebootPending");
    let last = &plans.last().unwrap()[0];
    assert_eq!(last["waiting_for"], serde_json::json!([]), "{plans:#?}");
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
    let plan = signals.wait("RebootPending", WAIT)[0].clone();
    assert_eq!(
        plan["waiting_for"],
        serde_json::json!(["maintenance-window"]),
        "{plan:#}"
    );
    let at = plan["at"].as_i64().unwrap();
    let opens = now.timestamp().as_second() + 2 * 3600;
    assert!(
        (opens - 60..=opens).contains(&at),
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
    ssu_repo(&[
        "device",
        d.repo_dir(),
        "--hardware-id",
        "sandbox-gw-1",
        "--model",
        "Sandbox Gateway",
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
    let prop = d.sb.busctl(&[
        "get-property",
        "org.ssu.Agent1",
        "/org/ssu/Agent1",
        "org.ssu.Agent1",
        "SupportState",
    ]);
    assert_eq!(busctl_value(&prop.stdout), "ended");
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
        ssu_repo(&[
            "device",
            d.repo_dir(),
            "--hardware-id",
            "sandbox-gw-1",
            "--model",
            "Sandbox Gateway",
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
    assert_eq!(
        st["UpdateSource"]["waiting_until"].as_i64(),
        Some(later.as_second()),
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

    // The manufacturer moves the wave to now: the next check downloads and installs.
    wave(&jiff::Timestamp::now().to_string());
    d.check();
    d.wait_state("reboot-required");
    assert_eq!(d.installs_into_b(), 1);
}
