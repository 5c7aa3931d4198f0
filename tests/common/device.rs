//! The update tests' device: the sandbox with a manufacturer repository made by `ssu-repo`,
//! served by nginx (optionally through a fault-injecting proxy), and an agent configured to
//! use it; plus the helpers that publish updates and read back what the agent and RAUC did.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use super::http::Proxy;
use super::{Monitor, Options, Sandbox};

pub const WAIT: Duration = Duration::from_secs(60);
pub const CVE: &str = "CVE-2026-4242:critical:9.8:Remote code execution in the web UI";

/// A sandbox with a manufacturer repository served over HTTP and an agent pointed at it.
pub struct Device {
    pub sb: Sandbox,
    pub repo: PathBuf,
    pub image: Vec<u8>,
    /// A fault-injecting proxy between agent and nginx, when the test asked for one.
    pub proxy: Option<Proxy>,
}

/// Deterministic, incompressible "rootfs" bytes (squashfs would shrink a pattern),
/// different per seed.
pub fn image(len: usize, seed: u8) -> Vec<u8> {
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

pub fn run(cmd: &mut Command) -> String {
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
pub fn security_args<'a>(base: &'a str, level: &'a str) -> [&'a str; 10] {
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
pub fn add_security(repo: &Path, bundle: &Path, base: &str, level: &str) {
    let mut args = vec!["add", repo.to_str().unwrap(), bundle.to_str().unwrap()];
    args.extend(security_args(base, level));
    ssu_repo(&args);
}

pub fn ssu_repo(args: &[&str]) -> String {
    run(Command::new(env!("CARGO_BIN_EXE_ssu-repo")).args(args))
}

/// `ssu-repo ARGS` as it ended, for tests that expect it to fail.
pub fn ssu_repo_output(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_ssu-repo"))
        .args(args)
        .output()
        .expect("run ssu-repo")
}

/// A finished command's status and output, for assertion messages.
pub fn show(out: &std::process::Output) -> String {
    format!(
        "{}\n--- stdout\n{}--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

impl Device {
    /// Sandbox + repository with no targets yet; the agent is not started.
    pub fn new(install_extra: &str) -> Device {
        Device::build(install_extra, false)
    }

    /// Like [`Device::new`], with the agent talking to nginx through a [`Proxy`].
    pub fn with_proxy() -> Device {
        Device::build("", true)
    }

    pub fn build(install_extra: &str, proxied: bool) -> Device {
        let sb = Sandbox::up_with(Options {
            agent: false,
            modem: false,
            ..Options::default()
        });
        let repo = sb.dir().join("repo");
        ssu_repo(&["init", repo.to_str().unwrap(), "--role", "manufacturer"]);
        run(Command::new("bash")
            .arg(super::repo_root().join("scripts/sandbox"))
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
            head = super::device_toml(&dir, url.trim(), &root.display().to_string()),
            script = super::repo_root().join("scripts/sandbox").display(),
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

    pub fn repo_dir(&self) -> &str {
        self.repo.to_str().unwrap()
    }

    /// Publishes this model's signed record with `ssu-repo device` (hardware id and model
    /// name of the sandbox device) plus `args` (launch, support end, wave, ...).
    pub fn publish_model(&self, args: &[&str]) {
        let mut all = vec![
            "device",
            self.repo_dir(),
            "--hardware-id",
            "sandbox-gw-1",
            "--model",
            "Sandbox Gateway",
        ];
        all.extend_from_slice(args);
        ssu_repo(&all);
    }

    /// Builds a bundle and publishes it with `ssu-repo add ARGS`.
    pub fn publish(&self, version: &str, image: &[u8], args: &[&str]) -> PathBuf {
        let bundle = self.sb.build_bundle(version, image);
        let mut all = vec!["add", self.repo_dir(), bundle.to_str().unwrap()];
        all.extend_from_slice(args);
        ssu_repo(&all);
        bundle
    }

    /// The security update of the happy path: 1.0.1 on feature release 1.0.
    pub fn publish_security_update(&self) -> PathBuf {
        self.publish("1.0.1", &self.image, &security_args("1.0", "2026-11-01"))
    }

    /// Publishes the security update, has the agent check and install it, and reboots the
    /// device into the new slot.
    pub fn install_security_update_and_reboot(&self) {
        self.publish_security_update();
        self.check();
        self.wait_state("reboot-required");
        self.sb.reboot();
    }

    /// Waits until the agent has rolled back: slot A booted again, the agent answering, its
    /// state `rolled-back`.
    pub fn wait_rolled_back(&self) {
        self.sb.wait_for("the rollback", WAIT, || {
            std::fs::read_to_string(self.sb.dir().join("boot/booted"))
                .is_ok_and(|b| b.trim() == "A")
                && self.sb.ssuctl(&["status", "--json"]).status.success()
                && self.status()["State"] == "rolled-back"
        });
    }

    /// Rewrites the published bytes of `name` on the server (the signed metadata stays).
    pub fn tamper_with(&self, name: &str, change: impl FnOnce(&mut Vec<u8>)) -> usize {
        let file = self.target_file(name);
        let mut bytes = std::fs::read(&file).unwrap();
        let signed_len = bytes.len();
        change(&mut bytes);
        std::fs::write(&file, &bytes).unwrap();
        signed_len
    }

    /// The published file of `name` under public/targets.
    pub fn target_file(&self, name: &str) -> PathBuf {
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

    pub fn status(&self) -> serde_json::Value {
        let out = self.sb.ssuctl(&["status", "--json"]);
        assert!(out.status.success(), "{out:?}");
        serde_json::from_slice(&out.stdout).unwrap()
    }

    pub fn history(&self) -> Vec<serde_json::Value> {
        let out = self.sb.ssuctl(&["history", "--json"]);
        assert!(out.status.success(), "{out:?}");
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// `ssuctl check`; returns its text. The check must have run: exit 0 (verified) or 4
    /// (ran, but verified nothing — what the refusal tests expect; they read the text).
    /// Starts the agent and waits until it knows RAUC's compatible, as a booted device does
    /// before its first check: a check before that verifies but cannot judge yet which
    /// updates apply (the agent judges them as soon as RAUC answers), so a test asserting on
    /// the check's words must not race RAUC's first answer.
    pub fn start_agent(&self) {
        self.sb.start("agent");
        let mut last = serde_json::Value::Null;
        self.sb
            .wait_for("the agent to know RAUC's compatible", WAIT, || {
                last = self.status();
                last["Compatible"] != ""
            });
    }

    pub fn check(&self) -> String {
        let out = self.sb.ssuctl(&["check"]);
        assert!(
            matches!(out.status.code(), Some(0 | 4)),
            "{out:?}\n{}",
            self.sb.agent_log()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn wait_state(&self, state: &str) -> serde_json::Value {
        let mut last = serde_json::Value::Null;
        self.sb.wait_for(&format!("state {state}"), WAIT, || {
            last = self.status();
            last["State"] == state
        });
        last
    }

    /// How many times RAUC has written slot `rootfs.1` (its own counter).
    pub fn installs_into_b(&self) -> u64 {
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
    pub fn monitor(&self) -> Monitor {
        self.sb.monitor_agent()
    }

    /// Asserts the device is untouched: factory patch level, nothing installed into B,
    /// no UpdateAvailable; returns the status for further checks.
    pub fn assert_nothing_installed(&self, monitor: Monitor) -> serde_json::Value {
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

pub fn walk(dir: &Path) -> Vec<PathBuf> {
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
