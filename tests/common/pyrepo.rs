//! A sandbox device whose update server holds a repository made by the reference TUF
//! implementation (python-tuf, `tests/data/tuf/pyrepo.py`) rather than by `ssu-repo`: the
//! attacks of tests/tuf_attacks.rs sign what ssu-repo never would.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::device::{Device, image, run};
use super::{Options, Sandbox, repo_root, venv_python};

/// The repository under DIR/pyrepo, driven through `pyrepo.py`.
pub struct PyRepo {
    pub dir: PathBuf,
}

impl PyRepo {
    pub fn run(&self, args: &[&str]) {
        let script = repo_root().join("tests/data/tuf/pyrepo.py");
        run(Command::new(venv_python())
            .arg(script)
            .arg(args[0])
            .arg(&self.dir)
            .args(&args[1..]));
    }

    /// Lists target `name` in `role` with `file`'s bytes and `custom`.
    pub fn target(&self, role: &str, name: &str, file: Option<&Path>, custom: &serde_json::Value) {
        let custom = custom.to_string();
        let mut args = vec!["target", role, name, "--custom", &custom];
        let file = file.map(|f| f.to_str().unwrap().to_owned());
        if let Some(f) = &file {
            args.extend(["--file", f]);
        }
        self.run(&args);
    }

    pub fn publish(&self, args: &[&str]) {
        let mut all = vec!["publish"];
        all.extend_from_slice(args);
        self.run(&all);
    }

    pub fn metadata(&self) -> PathBuf {
        self.dir.join("public/metadata")
    }
}

/// `custom` of a security bundle for the sandbox device (feature release 1.0).
pub fn security_custom(version: &str, level: &str) -> serde_json::Value {
    serde_json::json!({"ssu": {
        "kind": "security",
        "version": version,
        "base_version": "1.0",
        "security_patch_level": level,
        "compatible": "ssu-sandbox",
        "released": "2026-11-20T00:00:00Z",
        "cves": [{"id": "CVE-2026-4242", "severity": "critical", "cvss": "9.8",
                  "summary": "Remote code execution in the web UI"}],
        "requires_reboot": true,
        "expected_downtime_s": 90
    }})
}

/// A sandbox device (agent not started) served a fresh python-tuf repository (one publish:
/// every role at version 1) by nginx; `extra_toml` is appended to the agent's config.
pub fn py_device(extra_toml: &str) -> (Device, PyRepo) {
    let sb = Sandbox::up_with(Options {
        agent: false,
        modem: false,
        ..Options::default()
    });
    let repo = PyRepo {
        dir: sb.dir().join("pyrepo"),
    };
    let script = repo_root().join("tests/data/tuf/pyrepo.py");
    run(Command::new(venv_python())
        .arg(script)
        .arg("init")
        .arg(&repo.dir));
    run(Command::new("bash")
        .arg(repo_root().join("scripts/sandbox"))
        .arg("http")
        .arg(sb.dir())
        .arg(repo.dir.join("public")));
    let url = std::fs::read_to_string(sb.dir().join("http/url")).unwrap();
    let dir = sb.dir().display().to_string();
    let root = repo.metadata().join("1.root.json");
    let toml = format!(
        r#"{head}[install]
boot_id_file = "{dir}/boot/boot_id"
reboot_command = ["bash", "{script}", "reboot", "{dir}"]
{extra_toml}
"#,
        head = super::device_toml(&dir, url.trim(), &root.display().to_string()),
        script = repo_root().join("scripts/sandbox").display(),
    );
    std::fs::create_dir_all(sb.dir().join("etc")).unwrap();
    std::fs::write(sb.agent_config(), toml).unwrap();
    let device = Device {
        repo: repo.dir.clone(),
        sb,
        image: image(2 * 1024 * 1024, 0x5a),
        proxy: None,
    };
    (device, repo)
}

/// nginx's access log of the update server: one line per request
/// (`"GET /path HTTP/1.1" status bytes_sent body_bytes ...`).
pub struct AccessLog {
    path: PathBuf,
    seen: usize,
}

impl AccessLog {
    pub fn new(sb: &Sandbox) -> AccessLog {
        let path = sb.dir().join("http/access.log");
        let seen = std::fs::read_to_string(&path).map_or(0, |s| s.len());
        AccessLog { path, seen }
    }

    /// [`since`](Self::since), waiting (up to `timeout`) until `done` holds for what arrived:
    /// nginx writes a request's line only once the request ends, and a request the agent cut
    /// short ends when nginx notices (after the agent may already have answered).
    pub fn until(
        &mut self,
        timeout: std::time::Duration,
        done: impl Fn(&[(String, u16, u64)]) -> bool,
    ) -> Vec<(String, u16, u64)> {
        let end = std::time::Instant::now() + timeout;
        let mut all = self.since();
        while !done(&all) && std::time::Instant::now() < end {
            std::thread::sleep(super::POLL);
            all.extend(self.since());
        }
        all
    }

    /// (path, status, bytes sent) of the requests since the last call.
    pub fn since(&mut self) -> Vec<(String, u16, u64)> {
        let text = std::fs::read_to_string(&self.path).unwrap_or_default();
        let new = text[self.seen..].to_owned();
        self.seen = text.len();
        new.lines()
            .filter_map(|l| {
                let (_, rest) = l.split_once("\"GET ")?;
                let (path, rest) = rest.split_once(' ')?;
                let mut f = rest.split_once("\" ")?.1.split(' ');
                let status = f.next()?.parse().ok()?;
                let bytes = f.next()?.parse().ok()?;
                Some((path.to_owned(), status, bytes))
            })
            .collect()
    }
}
