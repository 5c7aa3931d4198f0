//! Shared by tests/yocto.rs: bitbake run through scripts/yocto (as the unprivileged build
//! user), its `bitbake -e` output, and the recipes' expanded shell functions run on the host.
#![allow(dead_code)]

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

pub fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

pub fn text(out: &Output) -> String {
    format!(
        "status {:?}\n--- stdout\n{}\n--- stderr\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// scripts/yocto ARGS (bitbake as the unprivileged build user, one at a time).
pub fn yocto(args: &[&str]) -> Output {
    Command::new("bash")
        .arg(repo().join("scripts/yocto"))
        .args(args)
        .output()
        .expect("run scripts/yocto")
}

/// `bitbake -e TARGET`: the raw text and its variables (`VAR="value"`, also exported ones).
pub struct Env {
    pub raw: String,
    pub vars: HashMap<String, String>,
}

impl Env {
    pub fn get(&self, var: &str) -> &str {
        self.vars
            .get(var)
            .unwrap_or_else(|| panic!("bitbake -e has no {var}"))
    }

    pub fn words(&self, var: &str) -> Vec<&str> {
        self.get(var).split_whitespace().collect()
    }

    /// The shell function `name() {` … `}` as bitbake expanded it.
    pub fn shell_function(&self, name: &str) -> &str {
        let start = self
            .raw
            .find(&format!("\n{name}() {{\n"))
            .unwrap_or_else(|| panic!("bitbake -e has no shell function {name}"))
            + 1;
        let len = self.raw[start..].find("\n}\n").unwrap() + 3;
        &self.raw[start..start + len]
    }
}

pub fn bitbake_env(target: &str) -> Env {
    let out = yocto(&["bitbake", "-e", target]);
    assert!(out.status.success(), "bitbake -e {target}: {}", text(&out));
    let raw = String::from_utf8(out.stdout).unwrap();
    let mut vars = HashMap::new();
    for line in raw.lines() {
        let line = line.strip_prefix("export ").unwrap_or(line);
        if let Some((name, value)) = line.split_once("=\"")
            && !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_:-${}.+/".contains(c))
            && let Some(value) = value.strip_suffix('"')
        {
            vars.insert(name.to_owned(), value.replace("\\\"", "\""));
        }
    }
    Env { raw, vars }
}

pub fn agent_env() -> &'static Env {
    static ENV: OnceLock<Env> = OnceLock::new();
    ENV.get_or_init(|| bitbake_env("ssu-agent"))
}

pub fn conf_env() -> &'static Env {
    static ENV: OnceLock<Env> = OnceLock::new();
    ENV.get_or_init(|| bitbake_env("ssu-agent-conf"))
}

pub fn build_dir() -> PathBuf {
    let out = yocto(&["--path"]);
    assert!(out.status.success(), "{}", text(&out));
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

/// SHA-256 over the tools' copy (its name is its content key), the build configuration and
/// every file of the layer.
pub fn dry_run_key(build: &Path) -> String {
    use aws_lc_rs::digest::{Context, SHA256};
    let mut ctx = Context::new(&SHA256);
    let tools = yocto(&["--tools"]);
    ctx.update(&tools.stdout);
    for conf in ["conf/bblayers.conf", "conf/local.conf"] {
        ctx.update(&fs::read(build.join(conf)).unwrap());
    }
    let mut files = Vec::new();
    all_files(&repo().join("yocto-layer/meta-ssu"), &mut files);
    files.sort();
    for f in files {
        ctx.update(f.to_string_lossy().as_bytes());
        ctx.update(&fs::read(&f).unwrap());
    }
    hex::encode(ctx.finish())
}

pub fn all_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            all_files(&path, out);
        } else {
            out.push(path);
        }
    }
}

/// Files are created as root by the test; bitbake (ssu-yocto) must own what it clones.
pub fn chown_to_build_user(path: &Path) {
    if rustix::process::geteuid().is_root() {
        let out = Command::new("chown")
            .args(["-R", "ssu-yocto:"])
            .arg(path)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", text(&out));
    }
}

/// Runs the recipe's own expanded `do_install` under `sh -e`, as bitbake's run.do_install
/// does: with the shell functions it calls (bbfatal, bbwarn, cargo_do_install, …) as bitbake
/// defined them, and WORKDIR moved to `workdir`.
pub fn run_do_install(env: &Env, workdir: &Path, vars: &[(&str, &str)]) -> Output {
    run_function(env, "do_install", ("WORKDIR", workdir), vars)
}

/// Runs the expanded shell function `name` the same way, with the directory in variable
/// `moved.0` moved to `moved.1`.
pub fn run_function(env: &Env, name: &str, moved: (&str, &Path), vars: &[(&str, &str)]) -> Output {
    // Every shell function in the environment: "name() {" … "}" at the line start.
    let mut functions: HashMap<&str, &str> = HashMap::new();
    let mut rest = env.raw.as_str();
    while let Some(pos) = rest.find("() {\n") {
        let line_start = rest[..pos].rfind('\n').map_or(0, |i| i + 1);
        let name = &rest[line_start..pos];
        let end = rest[pos..]
            .find("\n}\n")
            .map_or(rest.len(), |e| pos + e + 3);
        if !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            functions.insert(name, &rest[line_start..end]);
        }
        rest = &rest[end..];
    }
    // The ones the function reaches, as bitbake emits only those.
    let mut needed = vec![name];
    let mut script = String::from("set -e\n");
    while let Some(name) = needed.pop() {
        let body = functions[name];
        script.push_str(body);
        for word in body.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
            if functions.contains_key(word)
                && !needed.contains(&word)
                && !script.contains(&format!("\n{word}() {{"))
                && !script.starts_with(&format!("{word}() {{"))
            {
                needed.push(word);
            }
        }
    }
    script.push_str(name);
    script.push('\n');
    let script = script.replace(env.get(moved.0), moved.1.to_str().unwrap());
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(script)
        .env_clear()
        .env("PATH", "/usr/bin:/bin");
    for (k, v) in vars {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

/// `cp -a` of what the recipe's default SRC_URI takes from a checkout (no target/).
pub fn copy_tree(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for entry in fs::read_dir(from).unwrap().flatten() {
        let name = entry.file_name();
        if name == "target" || name == ".git" {
            continue;
        }
        let path = entry.path();
        if path.is_dir() {
            copy_tree(&path, &to.join(&name));
        } else {
            fs::copy(&path, to.join(&name)).unwrap();
        }
    }
}
