//! Shared harness of the integration tests: the sandbox device of
//! `scripts/sandbox` (private system bus, `rauc service` on file-backed A/B
//! slots, dbusmock ModemManager, the agent) under a temporary directory.
//!
//! Set `SSU_KEEP_SANDBOX=1` to keep the directory (logs, state) after a test.
#![allow(dead_code)]

pub mod booted;
pub mod chromium;
pub mod control;
pub mod device;
pub mod http;
pub mod pyrepo;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

/// How often [`Sandbox::wait_for`] polls.
pub const POLL: Duration = Duration::from_millis(50);

/// What `Sandbox::up_with` starts, and an optional agent config.
pub struct Options {
    pub agent: bool,
    pub modem: bool,
    pub rauc: bool,
    /// A dbusmock NetworkManager (Metered = 2, no); off by default.
    pub network: bool,
    /// RAUC and polkit (dbusmock's polkitd) bus-activatable, not started (`up --activate`,
    /// as on Debian); off by default. Implies no RAUC at start.
    pub activate: bool,
    /// Written to DIR/etc/agent.toml before `up`; "@DIR@" becomes the sandbox dir.
    pub agent_toml: Option<String>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            agent: true,
            modem: true,
            rauc: true,
            network: false,
            activate: false,
            agent_toml: None,
        }
    }
}

pub struct Sandbox {
    dir: tempfile::TempDir,
    bus_address: String,
}

/// The repository root.
pub fn repo_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The python of the venv that has python-dbusmock (see scripts/deps).
pub fn venv_python() -> PathBuf {
    let venv = std::env::var_os("SSU_VENV").unwrap_or_else(|| "/opt/ssu-agent-venv".into());
    PathBuf::from(venv).join("bin/python")
}

/// Whether `pid` is a live process (zombies count as dead: nothing may reap them soon).
pub fn process_alive(pid: u32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state is the first field after the parenthesised command name.
        Ok(stat) => match stat.rsplit_once(") ") {
            Some((_, rest)) => !matches!(rest.chars().next(), Some('Z' | 'X')),
            None => true,
        },
        Err(_) => false,
    }
}

/// The value of a busctl reply such as `s "ssu-sandbox"` or `u 1`, without
/// its type and (for a single string) without quotes.
pub fn busctl_value(stdout: &[u8]) -> String {
    let text = String::from_utf8_lossy(stdout);
    let text = text.trim();
    let value = text.split_once(' ').map_or("", |(_, v)| v);
    match value.strip_prefix('"').and_then(|v| v.strip_suffix('"')) {
        Some(inner) if !inner.contains('"') => inner.to_string(),
        _ => value.to_string(),
    }
}

fn describe(what: &str, out: &Output) -> String {
    format!(
        "{what}: {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

impl Sandbox {
    /// Everything: bus, RAUC, ModemManager mock and the agent.
    pub fn up() -> Sandbox {
        Sandbox::up_with(Options::default())
    }

    pub fn up_with(opts: Options) -> Sandbox {
        let dir = tempfile::Builder::new()
            .prefix("ssu-sandbox.")
            .tempdir()
            .expect("create sandbox dir");
        let path = dir.path().to_path_buf();
        let bus_address = format!("unix:path={}/bus/system_bus_socket", path.display());
        if let Some(toml) = &opts.agent_toml {
            fs::create_dir_all(path.join("etc")).expect("create etc/");
            let toml = toml.replace("@DIR@", &path.to_string_lossy());
            fs::write(path.join("etc/agent.toml"), toml).expect("write agent.toml");
        }
        let sandbox = Sandbox { dir, bus_address };

        let mut args = vec!["up"];
        for (enabled, flag) in [
            (opts.agent, "--no-agent"),
            (opts.modem, "--no-modem"),
            (opts.rauc, "--no-rauc"),
        ] {
            if !enabled {
                args.push(flag);
            }
        }
        if opts.network {
            args.push("--network");
        }
        if opts.activate {
            args.push("--activate");
        }
        sandbox.script(&args);
        sandbox
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn bus_address(&self) -> &str {
        &self.bus_address
    }

    pub fn agent_config(&self) -> PathBuf {
        self.dir().join("etc/agent.toml")
    }

    /// A command with the sandbox's environment (as in DIR/env).
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new(program);
        cmd.env("DBUS_SYSTEM_BUS_ADDRESS", &self.bus_address)
            .env("SSU_SANDBOX", self.dir())
            .env("SSU_AGENT_CONFIG", self.agent_config());
        cmd
    }

    /// Runs `ssuctl ARGS` against the sandbox's agent.
    pub fn ssuctl(&self, args: &[&str]) -> Output {
        self.command(env!("CARGO_BIN_EXE_ssuctl"))
            .args(args)
            .output()
            .expect("run ssuctl")
    }

    /// A real client (`gdbus monitor`) watching the agent's signals.
    pub fn monitor_agent(&self) -> Monitor {
        Monitor::new(self.spawn_gdbus_monitor(), "is owned by")
    }

    /// A `dbus-monitor` for the agent's signal `member`, matched by interface and member
    /// only, so it also sees signals an agent sends right after taking its name (e.g. at
    /// startup). gdbus, matching by the well-known name, drops a signal that arrives before
    /// it has looked up the name's new owner (GLib's fix for CVE-2024-34397).
    pub fn monitor_signal(&self, member: &str) -> Monitor {
        let child = self
            .command("dbus-monitor")
            .arg("--address")
            .arg(&self.bus_address)
            .arg(format!(
                "type='signal',interface='org.ssu.Agent1',member='{member}'"
            ))
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("run dbus-monitor");
        // The bus greets every new connection with NameAcquired, after which the match is in
        // place (dbus-monitor adds it before reading anything).
        Monitor::new(child, "NameAcquired")
    }

    fn spawn_gdbus_monitor(&self) -> std::process::Child {
        self.command("gdbus")
            .args([
                "monitor",
                "--system",
                "--dest",
                "org.ssu.Agent1",
                "--object-path",
                "/org/ssu/Agent1",
            ])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("run gdbus monitor")
    }

    /// Runs `busctl --address=<sandbox bus> ARGS`.
    pub fn busctl(&self, args: &[&str]) -> Output {
        self.command("busctl")
            .arg(format!("--address={}", self.bus_address))
            .args(args)
            .output()
            .expect("run busctl")
    }

    /// A property of the agent's `org.ssu.Agent1`, as busctl prints its value ("A", "42").
    pub fn agent_property(&self, name: &str) -> String {
        busctl_value(&self.agent_property_output(name, &[]).stdout)
    }

    /// A property of the agent as busctl reads it with `--json=short`, so the D-Bus types show
    /// (`{"type": "a{sv}", "data": …}`).
    pub fn agent_property_json(&self, name: &str) -> serde_json::Value {
        let out = self.agent_property_output(name, &["--json=short"]);
        serde_json::from_slice(&out.stdout).expect("busctl --json output")
    }

    fn agent_property_output(&self, name: &str, options: &[&str]) -> Output {
        let mut args = options.to_vec();
        args.extend([
            "get-property",
            "org.ssu.Agent1",
            "/org/ssu/Agent1",
            "org.ssu.Agent1",
            name,
        ]);
        let out = self.busctl(&args);
        assert!(out.status.success(), "busctl get-property {name}: {out:?}");
        out
    }

    /// A property of RAUC's Installer interface, e.g. "BootSlot" → "A".
    pub fn rauc_property(&self, name: &str) -> String {
        let out = self.busctl(&[
            "get-property",
            "de.pengutronix.rauc",
            "/",
            "de.pengutronix.rauc.Installer",
            name,
        ]);
        assert!(
            out.status.success(),
            "{}",
            describe("busctl get-property", &out)
        );
        busctl_value(&out.stdout)
    }

    /// Installs a bundle through RAUC's D-Bus API (not through the agent) and
    /// waits for the installation to end; Err carries RAUC's LastError.
    pub fn rauc_install(&self, bundle: &Path) -> Result<(), String> {
        let bundle = bundle.to_string_lossy();
        let out = self.busctl(&[
            "call",
            "de.pengutronix.rauc",
            "/",
            "de.pengutronix.rauc.Installer",
            "InstallBundle",
            "sa{sv}",
            &bundle,
            "0",
        ]);
        if !out.status.success() {
            return Err(describe("InstallBundle", &out));
        }
        // RAUC sets Operation to "installing" before it replies, so "idle" means done.
        self.wait_for("RAUC to finish installing", Duration::from_secs(60), || {
            self.rauc_property("Operation") == "idle"
        });
        match self.rauc_property("LastError") {
            e if e.is_empty() => Ok(()),
            e => Err(e),
        }
    }

    /// Runs scripts/sandbox-modem.py (setup, swap-sim MCCMNC ICCID IMSI [NAME],
    /// set-registration N, dump) against the ModemManager mock; returns stdout.
    pub fn modem(&self, args: &[&str]) -> String {
        let out = self
            .command(venv_python())
            .arg(repo_root().join("scripts/sandbox-modem.py"))
            .args(args)
            .output()
            .expect("run sandbox-modem.py");
        assert!(
            out.status.success(),
            "{}",
            describe("sandbox-modem.py", &out)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Stops one part: "agent", "rauc", "modem" or "network".
    pub fn stop(&self, part: &str) {
        self.script(&["stop", part]);
    }

    /// (Re)starts one part and waits until it is ready.
    pub fn start(&self, part: &str) {
        self.script(&["start", part]);
    }

    /// Simulated reboot: the bootloader's choice of slot, then RAUC and the agent restart.
    pub fn reboot(&self) {
        self.script(&["reboot"]);
    }

    /// The pid of a running part ("bus", "rauc", "polkit", "modem", "agent").
    pub fn pid(&self, part: &str) -> Option<u32> {
        let text = fs::read_to_string(self.dir().join(format!("pids/{part}.pid"))).ok()?;
        text.trim().parse().ok()
    }

    /// Every pid recorded under DIR/pids.
    pub fn pids(&self) -> Vec<u32> {
        ["bus", "rauc", "polkit", "modem", "network", "agent"]
            .iter()
            .filter_map(|p| self.pid(p))
            .collect()
    }

    /// Environment variables for the agent from its next start on (DIR/agent.env), e.g.
    /// [`faketime_env`]'s.
    pub fn set_agent_env(&self, vars: &[(String, String)]) {
        let text: String = vars.iter().map(|(k, v)| format!("{k}={v}\n")).collect();
        fs::write(self.dir().join("agent.env"), text).expect("write agent.env");
    }

    /// The agent's stdout and stderr so far (across restarts).
    pub fn agent_log(&self) -> String {
        fs::read_to_string(self.dir().join("agent.log")).unwrap_or_default()
    }

    /// Polls `f` every 50 ms until it is true; panics after `timeout`.
    pub fn wait_for(&self, what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
        let deadline = Instant::now() + timeout;
        loop {
            if f() {
                return;
            }
            if Instant::now() >= deadline {
                panic!(
                    "timed out after {timeout:?} waiting for {what}\n--- agent.log (tail) ---\n{}",
                    tail(&self.agent_log(), 40)
                );
            }
            thread::sleep(POLL);
        }
    }

    /// Builds a plain bundle for this sandbox (compatible "ssu-sandbox") whose
    /// rootfs image is `image`, signed with DIR/pki. Bundles go to DIR/bundles.
    pub fn build_bundle(&self, version: &str, image: &[u8]) -> PathBuf {
        self.build_bundle_for("ssu-sandbox", version, image)
    }

    /// Like [`Sandbox::build_bundle`] with another compatible string.
    pub fn build_bundle_for(&self, compatible: &str, version: &str, image: &[u8]) -> PathBuf {
        static SERIAL: AtomicUsize = AtomicUsize::new(0);
        let n = SERIAL.fetch_add(1, Ordering::Relaxed);
        let bundles = self.dir().join("bundles");
        let input = bundles.join(format!("input-{version}-{n}"));
        fs::create_dir_all(&input).expect("create bundle input dir");
        fs::write(input.join("rootfs.img"), image).expect("write rootfs.img");
        let manifest = format!(
            "[update]\ncompatible={compatible}\nversion={version}\n\n\
             [bundle]\nformat=plain\n\n\
             [image.rootfs]\nfilename=rootfs.img\n"
        );
        fs::write(input.join("manifest.raucm"), manifest).expect("write manifest");
        let bundle = bundles.join(format!("ssu-{version}-{n}.raucb"));
        let pki = self.dir().join("pki");
        let out = Command::new("rauc")
            .arg("bundle")
            .arg(format!("--cert={}", pki.join("cert.pem").display()))
            .arg(format!("--key={}", pki.join("key.pem").display()))
            .arg(&input)
            .arg(&bundle)
            .output()
            .expect("run rauc bundle");
        assert!(out.status.success(), "{}", describe("rauc bundle", &out));
        fs::remove_dir_all(&input).ok();
        bundle
    }

    /// Runs `scripts/sandbox CMD DIR ARGS`; panics with its output and the agent log.
    fn script(&self, args: &[&str]) {
        let out = Command::new("bash")
            .arg(repo_root().join("scripts/sandbox"))
            .arg(args[0])
            .arg(self.dir())
            .args(&args[1..])
            .env("SSU_AGENT_BIN", env!("CARGO_BIN_EXE_ssu-agent"))
            .output()
            .expect("run scripts/sandbox");
        if !out.status.success() {
            panic!(
                "{}\n--- agent.log (tail) ---\n{}",
                describe(&format!("scripts/sandbox {}", args.join(" ")), &out),
                tail(&self.agent_log(), 40)
            );
        }
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        let out = Command::new("bash")
            .arg(repo_root().join("scripts/sandbox"))
            .arg("down")
            .arg(self.dir())
            .output();
        if let Ok(out) = &out
            && !out.status.success()
        {
            eprintln!("{}", describe("scripts/sandbox down", out));
        }
        if thread::panicking() {
            eprintln!(
                "--- sandbox {} agent.log (tail) ---\n{}",
                self.dir().display(),
                tail(&self.agent_log(), 40)
            );
        }
        if std::env::var_os("SSU_KEEP_SANDBOX").is_some_and(|v| v == "1") {
            eprintln!("keeping sandbox {}", self.dir().display());
            self.dir.disable_cleanup(true);
        }
    }
}

/// A `gdbus monitor` whose output is collected in the background.
pub struct Monitor {
    child: std::process::Child,
    text: std::sync::Arc<std::sync::Mutex<String>>,
}

impl Monitor {
    /// Collects the child's stdout and waits until gdbus says it follows the name (`ready`):
    /// it subscribes before printing that, so no later signal is missed.
    fn new(mut child: std::process::Child, ready: &str) -> Monitor {
        use std::io::Read;
        let text = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let mut out = child.stdout.take().expect("piped stdout");
        let sink = text.clone();
        thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = out.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        let monitor = Monitor { child, text };
        monitor.wait_for_text(ready, Duration::from_secs(20));
        monitor
    }

    /// Everything printed so far.
    pub fn text(&self) -> String {
        self.text.lock().unwrap().clone()
    }

    /// Waits until the output contains `needle` (or `timeout` passes); returns the output.
    pub fn wait_for_text(&self, needle: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let text = self.text();
            if text.contains(needle) || Instant::now() >= deadline {
                return text;
            }
            thread::sleep(POLL);
        }
    }

    /// Stops the monitor and returns everything it printed.
    pub fn finish(mut self) -> String {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // The reader thread ends with the pipe; give it a moment to append the tail.
        thread::sleep(Duration::from_millis(100));
        self.text()
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The environment that makes a process's clock start at `start` ("1970-01-02 00:00:00",
/// UTC) and run on from there: Debian's libfaketime (package `faketime`, see scripts/deps),
/// preloaded. Only the wall clock: a faked monotonic clock would move Tokio's timers too.
pub fn faketime_env(start: &str) -> Vec<(String, String)> {
    // The thread-safe build: the agent's runtime, zbus and SQLite call the clock from
    // several threads.
    let lib = fs::read_dir("/usr/lib")
        .expect("read /usr/lib")
        .flatten()
        .map(|e| e.path().join("faketime/libfaketimeMT.so.1"))
        .find(|p| p.exists())
        .expect("libfaketimeMT.so.1 under /usr/lib/<triplet>/faketime (run scripts/deps)");
    vec![
        ("LD_PRELOAD".into(), lib.display().to_string()),
        ("FAKETIME".into(), format!("@{start}")),
        ("FAKETIME_DONT_FAKE_MONOTONIC".into(), "1".into()),
        ("TZ".into(), "UTC".into()),
    ]
}

/// The start of the agent configuration the update tests share: the sandbox device's
/// identity (factory image 1.0.0, patch level 2026-09-01), one manufacturer server, no check
/// until a test asks, short network timeouts, and the integrity probes reading the sandbox's
/// clean device tree (DIR/device) rather than the host's writable /. Tests append
/// `[install]` and whatever else they need (or `[download]` keys: that table comes last).
pub fn device_toml(dir: &str, manufacturer_url: &str, root: &str) -> String {
    format!(
        r#"[agent]
state_dir = "{dir}/state"
[device]
model = "Sandbox Gateway"
hardware_id = "sandbox-gw-1"
version = "1.0.0"
feature_release = "1.0"
security_patch_level = "2026-09-01"
[check]
boot_delay = "1h"
[manufacturer]
url = "{manufacturer_url}"
root = "{root}"
[integrity]
root = "{dir}/device"
[download]
cache_dir = "{dir}/cache"
connect_timeout = "5s"
read_timeout = "10s"
"#
    )
}
