//! The booted device of `scripts/device`: Debian 12 with systemd as PID 1 in
//! systemd-nspawn, the `.deb` of this build installed with dpkg, RAUC, polkitd and nginx
//! started only by their units and D-Bus activation. Commands run inside through
//! `scripts/device exec` (nsenter).
//!
//! Set `SSU_KEEP_DEVICE=1` to keep a test's directory (console log, overlay upper layer).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::thread;
use std::time::{Duration, Instant};

use super::{POLL, describe, repo_root, tail};

/// The package under test, built once per test process from the binaries `cargo test`
/// built (as tests/packaging.rs does; lintian runs there, not here).
pub fn deb() -> &'static Path {
    static DEB: OnceLock<PathBuf> = OnceLock::new();
    DEB.get_or_init(|| {
        let out_dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("booted-deb");
        let _ = fs::remove_dir_all(&out_dir);
        fs::create_dir_all(&out_dir).unwrap();
        let out = Command::new("bash")
            .arg(repo_root().join("scripts/deb"))
            .args(["--profile", "dev", "--no-build", "--no-lintian", "--output"])
            .arg(&out_dir)
            .output()
            .expect("run scripts/deb");
        assert!(out.status.success(), "{}", describe("scripts/deb", &out));
        fs::read_dir(&out_dir)
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .find(|p| p.extension().is_some_and(|e| e == "deb"))
            .unwrap_or_else(|| panic!("no .deb in {}", out_dir.display()))
    })
}

pub struct Booted {
    dir: tempfile::TempDir,
}

impl Booted {
    /// A device booted from the cached rootfs with the package installed; `dropins` are
    /// (file name, TOML) pairs for /etc/ssu-agent/agent.d/, written before the first boot.
    pub fn up(dropins: &[(&str, &str)]) -> Booted {
        let dir = tempfile::Builder::new()
            .prefix("ssu-device.")
            .tempdir_in("/var/tmp")
            .expect("create device dir");
        let device = Booted { dir };
        let mut args: Vec<String> = vec!["--deb".into(), deb().display().to_string()];
        let configs = device.dir().join("configs");
        fs::create_dir_all(&configs).unwrap();
        for (name, toml) in dropins {
            let path = configs.join(name);
            fs::write(&path, toml).unwrap();
            args.extend(["--config".into(), path.display().to_string()]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = device.script("up", &args);
        if !out.status.success() {
            panic!("{}", describe("scripts/device up", &out));
        }
        device
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The manufacturer repository (ssu-repo) the device's nginx serves.
    pub fn repo(&self) -> PathBuf {
        self.dir().join("repo")
    }

    fn script(&self, cmd: &str, args: &[&str]) -> Output {
        Command::new("bash")
            .arg(repo_root().join("scripts/device"))
            .arg(cmd)
            .arg(self.dir())
            .args(args)
            .env("SSU_REPO_BIN", env!("CARGO_BIN_EXE_ssu-repo"))
            .output()
            .expect("run scripts/device")
    }

    /// Runs `args` inside the device as root.
    pub fn exec(&self, args: &[&str]) -> Output {
        let mut all = vec!["--"];
        all.extend_from_slice(args);
        self.script("exec", &all)
    }

    /// Runs `args` inside the device as `user` (no login session).
    pub fn exec_as(&self, user: &str, args: &[&str]) -> Output {
        let mut all = vec!["--user", user, "--"];
        all.extend_from_slice(args);
        self.script("exec", &all)
    }

    /// Runs `args` inside as root; panics (with the journal) unless it succeeds; stdout.
    pub fn run(&self, args: &[&str]) -> String {
        let out = self.exec(args);
        if !out.status.success() {
            panic!(
                "{}\n{}",
                describe(&args.join(" "), &out),
                self.journal_tail(60)
            );
        }
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `ssuctl status --json` inside, or None while the agent does not answer (booting).
    pub fn try_status(&self) -> Option<serde_json::Value> {
        let out = self.exec(&["ssuctl", "status", "--json"]);
        if !out.status.success() {
            return None;
        }
        serde_json::from_slice(&out.stdout).ok()
    }

    pub fn status(&self) -> serde_json::Value {
        serde_json::from_str(&self.run(&["ssuctl", "status", "--json"])).unwrap()
    }

    pub fn history(&self) -> Vec<serde_json::Value> {
        serde_json::from_str(&self.run(&["ssuctl", "history", "--json"])).unwrap()
    }

    /// A property of the agent's unit (`systemctl show -P`).
    pub fn unit_property(&self, unit: &str, property: &str) -> String {
        self.run(&["systemctl", "show", "-P", property, unit])
            .trim()
            .to_owned()
    }

    /// How many times the container has booted (1 = the first boot).
    pub fn boots(&self) -> u32 {
        fs::read_to_string(self.dir().join("boot/boots"))
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0)
    }

    /// The bootloader's file `name` under DIR/boot (primary, state.A, booted.env, calls.log).
    pub fn boot_file(&self, name: &str) -> String {
        fs::read_to_string(self.dir().join("boot").join(name))
            .unwrap_or_default()
            .trim()
            .to_owned()
    }

    /// Waits until boot number `n` reached its default target.
    pub fn wait_boot(&self, n: u32) {
        let out = self.script("wait", &[&n.to_string()]);
        if !out.status.success() {
            panic!("{}", describe(&format!("scripts/device wait {n}"), &out));
        }
    }

    /// The last `lines` lines of the device's journal (empty while it is not running).
    pub fn journal_tail(&self, lines: usize) -> String {
        let out = self.exec(&["journalctl", "--no-pager", "-n", &lines.to_string()]);
        format!(
            "--- device journal (last {lines} lines) ---\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    }

    /// Polls `f` until it is true; panics after `timeout` with the device's journal.
    pub fn wait_for(&self, what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
        let deadline = Instant::now() + timeout;
        loop {
            if f() {
                return;
            }
            if Instant::now() >= deadline {
                panic!(
                    "timed out after {timeout:?} waiting for {what}\n{}",
                    self.journal_tail(60)
                );
            }
            thread::sleep(POLL * 4);
        }
    }

    /// A RAUC bundle for this device (compatible "ssu-device") holding `image` as its
    /// rootfs, signed with the key whose certificate the device's keyring holds.
    pub fn bundle(&self, version: &str, image: &[u8]) -> PathBuf {
        let input = self.dir().join(format!("image-{version}.img"));
        fs::write(&input, image).unwrap();
        let bundle = self.dir().join(format!("ssu-{version}.raucb"));
        let out = self.script(
            "bundle",
            &[version, input.to_str().unwrap(), bundle.to_str().unwrap()],
        );
        assert!(out.status.success(), "{}", describe("device bundle", &out));
        bundle
    }

    /// `ssu-repo ARGS` on the host's repository; the device's nginx serves it at once (its
    /// public/ is bind-mounted) once the files are world-readable (nginx runs as www-data).
    pub fn ssu_repo(&self, args: &[&str]) -> String {
        let out = Command::new(env!("CARGO_BIN_EXE_ssu-repo"))
            .args(args)
            .output()
            .expect("run ssu-repo");
        assert!(out.status.success(), "{}", describe("ssu-repo", &out));
        let chmod = Command::new("chmod")
            .args(["-R", "a+rX"])
            .arg(self.repo().join("public"))
            .output()
            .unwrap();
        assert!(chmod.status.success(), "{}", describe("chmod", &chmod));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Booted {
    fn drop(&mut self) {
        if thread::panicking() {
            eprintln!(
                "--- device {} ---\n{}\n--- console (tail) ---\n{}",
                self.dir().display(),
                self.journal_tail(80),
                tail(
                    &fs::read_to_string(self.dir().join("console.log")).unwrap_or_default(),
                    30
                )
            );
        }
        let out = self.script("down", &[]);
        if !out.status.success() {
            eprintln!("{}", describe("scripts/device down", &out));
        }
        if std::env::var_os("SSU_KEEP_DEVICE").is_some_and(|v| v == "1") {
            eprintln!("keeping device {}", self.dir().display());
            self.dir.disable_cleanup(true);
        }
    }
}
