//! Shared by tests/ssu_repo.rs, tests/ssu_repo_verify.rs and tests/ssu_repo_keys.rs: run the
//! `ssu-repo` binary, expect success or a refusal that leaves the repository byte for byte as it
//! was. `work` is the bundle-building harness of the first two.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fmt::Debug;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub mod work;

pub fn text(out: &Output) -> String {
    format!(
        "status {}\n--- stdout\n{}--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

pub fn run<S: AsRef<OsStr>>(args: &[S]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ssu-repo"))
        .args(args)
        .output()
        .expect("run ssu-repo")
}

/// Runs ssu-repo, expects success, returns stdout.
pub fn ok<S: AsRef<OsStr> + Debug>(args: &[S]) -> String {
    let out = run(args);
    assert!(out.status.success(), "ssu-repo {args:?}\n{}", text(&out));
    String::from_utf8(out.stdout).unwrap()
}

/// Runs ssu-repo expecting a refusal (exit 1) that leaves `repo` unchanged; returns stderr.
pub fn refused<S: AsRef<OsStr> + Debug>(repo: &Path, args: &[S]) -> String {
    let before = files(repo);
    let out = run(args);
    assert_eq!(
        out.status.code(),
        Some(1),
        "ssu-repo {args:?}\n{}",
        text(&out)
    );
    let after = files(repo);
    assert_eq!(
        after.keys().collect::<Vec<_>>(),
        before.keys().collect::<Vec<_>>(),
        "ssu-repo {args:?} added or removed files"
    );
    assert!(after == before, "ssu-repo {args:?} changed a file");
    String::from_utf8(out.stderr).unwrap()
}

/// Every file under `dir`, with its bytes.
pub fn files(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let path = e.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                out.insert(path.clone(), fs::read(&path).unwrap());
            }
        }
    }
    out
}
