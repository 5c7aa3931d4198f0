//! Integrity probes on the sandbox device: the agent's `[integrity] root` is a copy of
//! `tests/data/integrity/clean-device` in the sandbox directory, RAUC is the real `rauc
//! service`. Each probe is broken in turn (and the device repaired after it): the agent
//! re-probes after `CheckNow` or a RAUC change, and real clients (gdbus monitor, busctl,
//! ssuctl) see `IntegrityChanged`, `IntegrityState` and the evidence in `IntegrityFindings`.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::{Options, Sandbox, repo_root};

const WAIT: Duration = Duration::from_secs(30);

const PROBES: [&str; 7] = [
    "rauc-slot",
    "rootfs-readonly",
    "dm-verity",
    "kernel-taint",
    "secure-boot",
    "setuid",
    "bootloader-unlock",
];

const EFI_SECURE_BOOT: &str =
    "sys/firmware/efi/efivars/SecureBoot-8be4df61-93ca-11d2-aa0d-00e098032b8c";

struct Device {
    sb: Sandbox,
}

impl Device {
    /// The sandbox (RAUC, no modem) with the agent probing a clean fixture device.
    fn start() -> Device {
        let sb = Sandbox::up_with(Options {
            agent: false,
            modem: false,
            ..Options::default()
        });
        let d = Device { sb };
        d.repair();
        let dir = d.sb.dir().display().to_string();
        let toml = format!(
            r#"[agent]
state_dir = "{dir}/state"
[device]
version = "1.0.0"
[install]
boot_id_file = "{dir}/boot/boot_id"
reboot_command = ["true"]
[integrity]
root = "{dir}/device"
require_verity = true
secure_boot_cmdline = "ssu.verifiedboot=green"
setuid_paths = ["/usr/bin", "/data"]
unlock_marker = "/var/lib/bootloader/unlocked"
"#
        );
        std::fs::create_dir_all(d.sb.dir().join("etc")).unwrap();
        std::fs::write(d.sb.agent_config(), toml).unwrap();
        d.sb.start("agent");
        d
    }

    fn root(&self) -> PathBuf {
        self.sb.dir().join("device")
    }

    /// Puts the clean fixture back.
    fn repair(&self) {
        let root = self.root();
        if root.exists() {
            std::fs::remove_dir_all(&root).unwrap();
        }
        let fixture = repo_root().join("tests/data/integrity/clean-device");
        let out = Command::new("cp")
            .arg("-a")
            .arg(&fixture)
            .arg(&root)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
    }

    fn put(&self, rel: &str, content: impl AsRef<[u8]>) {
        let path = self.root().join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, content).unwrap();
    }

    /// A property as busctl reads it (`--json`, so the D-Bus types show).
    fn property(&self, name: &str) -> serde_json::Value {
        self.sb.agent_property_json(name)
    }

    fn status(&self) -> serde_json::Value {
        let out = self.sb.ssuctl(&["status", "--json"]);
        assert!(out.status.success(), "{out:?}");
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// `CheckNow` (no update source: the check itself is instant); a probe run follows it.
    fn check_now(&self) {
        let out = self.sb.ssuctl(&["check"]);
        // Ran, verified nothing (no source): exit 4.
        assert_eq!(out.status.code(), Some(4), "{out:?}");
    }

    /// Waits until the agent shows `state` and exactly the probes in `failing` fail;
    /// returns the findings.
    fn wait_for(&self, state: &str, failing: &[&str]) -> Vec<serde_json::Value> {
        let mut findings = Vec::new();
        self.sb.wait_for(
            &format!("integrity {state}, failing {failing:?}"),
            WAIT,
            || {
                let st = self.status();
                findings = st["IntegrityFindings"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default();
                let failed: Vec<&str> = findings
                    .iter()
                    .filter(|f| f["outcome"] == "fail")
                    .filter_map(|f| f["probe"].as_str())
                    .collect();
                st["IntegrityState"] == state && failed == failing
            },
        );
        findings
    }

    fn restart_rauc(&self) {
        self.sb.stop("rauc");
        self.sb.start("rauc");
    }
}

fn evidence<'a>(findings: &'a [serde_json::Value], probe: &str) -> &'a str {
    findings
        .iter()
        .find(|f| f["probe"] == probe)
        .and_then(|f| f["evidence"].as_str())
        .unwrap_or_else(|| panic!("no finding for {probe}: {findings:#?}"))
}

fn setuid_su(root: &Path) {
    let su = root.join("usr/bin/su");
    std::fs::write(&su, "#!/bin/sh\nexec /bin/sh\n").unwrap();
    std::fs::set_permissions(&su, std::fs::Permissions::from_mode(0o4755)).unwrap();
}

#[test]
fn each_probe_passes_on_a_clean_device_and_fails_when_broken() {
    let d = Device::start();
    // The first run may come before RAUC's slot status (rauc-slot unknown): wait for it.
    d.sb.wait_for("every probe to pass on the clean device", WAIT, || {
        let findings = d.wait_for("trusted", &[]);
        let probes: Vec<&str> = findings
            .iter()
            .filter_map(|f| f["probe"].as_str())
            .collect();
        assert_eq!(probes, PROBES);
        findings.iter().all(|f| f["outcome"] == "pass")
    });
    let monitor = d.sb.monitor_agent();

    // (probe, how to break it, the evidence it must give). Each is repaired afterwards.
    type Break = Box<dyn Fn(&Device)>;
    let cases: Vec<(&str, Break, &str)> = vec![
        (
            "rootfs-readonly",
            Box::new(|d| {
                d.put(
                    "proc/1/mounts",
                    "/dev/root / squashfs ro 0 0\n/dev/root / squashfs rw,relatime 0 0\n",
                )
            }),
            "/ is /dev/root (squashfs) mounted rw,relatime",
        ),
        (
            "dm-verity",
            Box::new(|d| d.put("proc/1/mounts", "/dev/mmcblk0p2 / ext4 ro 0 0\n")),
            "/ is on /dev/mmcblk0p2, not a device-mapper device",
        ),
        (
            "kernel-taint",
            Box::new(|d| d.put("proc/sys/kernel/tainted", "12288\n")),
            "tainted=12288: O (out-of-tree module loaded), E (unsigned module loaded)",
        ),
        (
            "secure-boot",
            Box::new(|d| d.put(EFI_SECURE_BOOT, [6u8, 0, 0, 0, 0])),
            "EFI SecureBoot=0 (disabled)",
        ),
        (
            "setuid",
            Box::new(|d| setuid_su(&d.root())),
            "/usr/bin/su (named su, setuid, mode 4755, owner",
        ),
        (
            "bootloader-unlock",
            Box::new(|d| d.put("var/lib/bootloader/unlocked", "")),
            "unlock marker /var/lib/bootloader/unlocked exists",
        ),
    ];
    for (probe, break_it, want) in &cases {
        break_it(&d);
        d.check_now();
        let findings = d.wait_for("compromised", &[probe]);
        let got = evidence(&findings, probe);
        assert!(got.contains(want), "{probe}: {got:?} lacks {want:?}");
        assert_eq!(d.property("IntegrityState")["data"], "compromised");

        d.repair();
        d.check_now();
        d.wait_for("trusted", &[]);
    }

    // rauc-slot, through the real RAUC: the bootloader calls the booted slot bad.
    std::fs::write(d.sb.dir().join("boot/state.A"), "bad\n").unwrap();
    d.restart_rauc();
    let findings = d.wait_for("compromised", &["rauc-slot"]);
    let got = evidence(&findings, "rauc-slot");
    assert!(got.contains("rootfs.0 (A) is marked bad"), "{got}");
    std::fs::write(d.sb.dir().join("boot/state.A"), "good\n").unwrap();
    d.restart_rauc();
    // "trusted" can come while RAUC is still starting (rauc-slot then says unknown, which
    // does not make a device compromised): probe again until RAUC has answered.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let mut findings = d.wait_for("trusted", &[]);
    while !evidence(&findings, "rauc-slot").contains("boot status good")
        && std::time::Instant::now() < deadline
    {
        std::thread::sleep(std::time::Duration::from_millis(200));
        d.check_now();
        findings = d.wait_for("trusted", &[]);
    }
    assert!(
        evidence(&findings, "rauc-slot").contains("booted slot rootfs.0 (A), boot status good"),
        "{findings:#?}"
    );

    // Every change was announced (one to compromised, one back, per probe), with evidence.
    let changes = 2 * (cases.len() + 1);
    let signals = |text: &str| text.matches("org.ssu.Agent1.IntegrityChanged (").count();
    d.sb.wait_for("every IntegrityChanged", WAIT, || {
        signals(&monitor.text()) >= changes
    });
    let text = monitor.finish();
    assert_eq!(signals(&text), changes, "{text}");
    assert_eq!(
        text.matches("org.ssu.Agent1.IntegrityChanged ('compromised', [{")
            .count(),
        cases.len() + 1,
        "{text}"
    );
    assert!(text.contains("EFI SecureBoot=0 (disabled)"), "{text}");
    assert!(text.contains("/usr/bin/su (named su, setuid"), "{text}");
    let history = d.sb.ssuctl(&["history", "--json"]);
    let history: Vec<serde_json::Value> = serde_json::from_slice(&history.stdout).unwrap();
    let recorded = history
        .iter()
        .filter(|e| e["kind"] == "event" && e["action"] == "integrity-changed")
        .count();
    assert_eq!(recorded, changes, "{history:#?}");
}

#[test]
fn a_compromise_shows_on_dbus_in_ssuctl_and_in_the_history() {
    let d = Device::start();
    d.wait_for("trusted", &[]);
    let monitor = d.sb.monitor_agent();

    setuid_su(&d.root());
    d.put("proc/sys/kernel/tainted", "8192\n");
    d.check_now();

    let text = monitor.wait_for_text("IntegrityChanged", WAIT);
    assert!(
        text.contains("org.ssu.Agent1.IntegrityChanged ('compromised', "),
        "{text}"
    );
    assert!(text.contains("'outcome': <'fail'>"), "{text}");
    assert!(text.contains("/usr/bin/su (named su, setuid"), "{text}");
    assert_eq!(d.property("IntegrityState")["data"], "compromised");

    // The findings as a plain D-Bus client reads them (busctl's JSON keeps the types).
    let reply = d.property("IntegrityFindings");
    assert_eq!(reply["type"], "aa{sv}");
    let entry = |probe: &str| {
        reply["data"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["probe"]["data"] == probe)
            .cloned()
            .unwrap_or_else(|| panic!("no {probe} in {reply}"))
    };
    let taint = entry("kernel-taint");
    assert_eq!(taint["outcome"]["data"], "fail");
    assert_eq!(
        taint["evidence"]["data"],
        "tainted=8192: E (unsigned module loaded)"
    );
    let rootfs = entry("rootfs-readonly");
    assert_eq!(rootfs["outcome"]["data"], "pass");
    assert_eq!(
        rootfs["evidence"]["data"],
        "/ is /dev/root (squashfs) mounted ro,relatime"
    );

    let out = d.sb.ssuctl(&["status"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("Integrity:            compromised\n"),
        "{text}"
    );
    assert!(
        text.contains("kernel-taint: tainted=8192: E (unsigned module loaded)"),
        "{text}"
    );
    assert!(text.contains("setuid: unexpected: /usr/bin/su"), "{text}");
    assert!(
        !text.contains("rootfs-readonly"),
        "only failing probes: {text}"
    );

    let out = d.sb.ssuctl(&["history"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("event integrity-changed"), "{text}");
    assert!(
        text.contains("compromised (was trusted): kernel-taint"),
        "{text}"
    );

    // A restart re-probes but records nothing new: the verdict has not changed.
    d.sb.stop("agent");
    d.sb.start("agent");
    d.wait_for("compromised", &["kernel-taint", "setuid"]);
    let history = d.sb.ssuctl(&["history", "--json"]);
    let history: Vec<serde_json::Value> = serde_json::from_slice(&history.stdout).unwrap();
    assert_eq!(history.len(), 1, "{history:#?}");
}

#[test]
fn garbage_and_hostile_files_give_unknown_findings_not_a_crash() {
    let d = Device::start();
    d.wait_for("trusted", &[]);
    let agent = d.sb.pid("agent").unwrap();
    d.put("proc/sys/kernel/tainted", "\u{0}\u{1}not a number\n");
    d.put(EFI_SECURE_BOOT, [6u8, 0]);
    d.put("proc/1/mounts", vec![b'x'; 4 * 1024 * 1024]);
    d.check_now();
    // Nothing failed, the other probes still pass: trusted, with the unknowns explained.
    d.sb.wait_for("the unknown findings", WAIT, || {
        let st = d.status();
        let f = st["IntegrityFindings"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        f.iter().filter(|f| f["outcome"] == "unknown").count() == 4
    });
    let st = d.status();
    let findings = st["IntegrityFindings"].as_array().unwrap();
    assert_eq!(st["IntegrityState"], "trusted", "{findings:#?}");
    assert!(evidence(findings, "kernel-taint").contains("not a number"));
    assert!(evidence(findings, "secure-boot").contains("malformed (2 bytes, expected 5)"));
    assert!(evidence(findings, "rootfs-readonly").contains("larger than"));
    assert!(evidence(findings, "dm-verity").contains("larger than"));
    assert!(common::process_alive(agent));
}

#[test]
fn hostile_integrity_settings_stop_the_agent_before_it_starts() {
    let dir = tempfile::tempdir().unwrap();
    let main = dir.path().join("agent.toml");
    for (text, want) in [
        (
            "root = \"device\"",
            "integrity.root: device is not an absolute path",
        ),
        (
            "probes = [\"rootkit\"]",
            "integrity.probes[0]: unknown variant `rootkit`",
        ),
        (
            "allowed_taint = 0x200",
            "integrity.allowed_taint: 0x200 has bits the kernel-taint probe does not check",
        ),
        (
            "allowed_taint = -4096",
            "integrity.allowed_taint: invalid value",
        ),
        (
            "setuid_paths = [\"/usr/../../etc\"]",
            "integrity.setuid_paths: /usr/../../etc must be an absolute path without `..`",
        ),
    ] {
        std::fs::write(&main, format!("[integrity]\n{text}\n")).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_ssu-agent"))
            .arg("--config")
            .arg(&main)
            .arg("--check-config")
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{text}: {err}");
        assert!(err.contains(want), "{text}: {err}");
    }
}
