//! The TUF project's client conformance suite (tuf-conformance v2.4.0, vendored unchanged in
//! ../shared/third-party) against the agent's metadata path: `examples/tuf-conformance-client.rs`
//! implements the suite's client CLI with the daemon's own check (tough over the agent's
//! transport, floors in a real store, the persisted root, the agent's downloader).
//!
//! Every test must pass except those in `tests/data/tuf/conformance.xfails`, each with its
//! reason; the suite marks those strict, so one that starts passing fails the run too (and
//! the list must shrink). The counts are the ones docs/update.md states.
//!
//! Needs the suite's own Python environment (`scripts/deps`: /opt/ssu-agent-conformance-venv
//! with its pinned tuf 6.0.0 and pytest; `SSU_CONFORMANCE_VENV` overrides) and Debian's
//! `faketime`. About a minute.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The vendored suite, found as scripts/yocto finds ../shared/third-party.
fn suite() -> PathBuf {
    let candidates = [
        std::env::var_os("SSU_THIRD_PARTY").map(PathBuf::from),
        Some(repo().join("../shared/third-party")),
        Some(repo().join("../../shared/third-party")),
    ];
    candidates
        .into_iter()
        .flatten()
        .map(|d| d.join("tuf-conformance"))
        .find(|d| d.join("tuf_conformance/conftest.py").is_file())
        .expect("no tuf-conformance in ../shared/third-party (set SSU_THIRD_PARTY)")
}

fn venv() -> PathBuf {
    let venv = std::env::var_os("SSU_CONFORMANCE_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/opt/ssu-agent-conformance-venv"));
    assert!(
        venv.join("bin/pytest").is_file(),
        "{}: no pytest; run scripts/deps",
        venv.display()
    );
    venv
}

/// The client, built into the tests' own target directory (only the example is compiled).
fn client() -> PathBuf {
    let current = Path::new(env!("CARGO_BIN_EXE_ssu-agent"));
    let profile_dir = current.parent().unwrap();
    let target_dir = profile_dir.parent().unwrap();
    let mut cmd = Command::new(env!("CARGO"));
    cmd.current_dir(repo())
        .args(["build", "--offline", "--example", "tuf-conformance-client"])
        .arg("--target-dir")
        .arg(target_dir);
    if profile_dir.file_name().is_some_and(|n| n == "release") {
        cmd.arg("--release");
    }
    let status = cmd.status().expect("run cargo build");
    assert!(status.success(), "building the conformance client failed");
    profile_dir.join("examples/tuf-conformance-client")
}

/// The xfails file's entries; an entry without a reason comment right above it is an error.
fn xfails(text: &str) -> Result<Vec<String>, String> {
    let mut entries = Vec::new();
    let mut reason = false;
    for line in text.lines().map(str::trim) {
        if line.is_empty() {
            reason = false;
        } else if let Some(comment) = line.strip_prefix('#') {
            reason = !comment.trim().is_empty();
        } else if reason {
            entries.push(line.to_owned());
            reason = false;
        } else {
            return Err(format!("conformance.xfails: {line} has no reason above it"));
        }
    }
    Ok(entries)
}

/// `N word` from pytest's last line (`93 passed, 15 xfailed in 61.73s`).
fn count(summary: &str, word: &str) -> u32 {
    summary
        .split([',', ' '])
        .collect::<Vec<_>>()
        .windows(2)
        .find(|w| w[1] == word)
        .and_then(|w| w[0].parse().ok())
        .unwrap_or(0)
}

#[test]
fn the_agents_metadata_path_passes_the_tuf_conformance_suite() {
    let venv = venv();
    assert!(
        Command::new("faketime")
            .args(["2030-01-01 00:00:00", "true"])
            .status()
            .is_ok_and(|s| s.success()),
        "faketime is missing; run scripts/deps"
    );
    let xfail_text = fs::read_to_string(repo().join("tests/data/tuf/conformance.xfails")).unwrap();
    let expected_failures = xfails(&xfail_text).unwrap();
    let client = client();

    // The suite is read-only where it is vendored, and pytest writes beside it; the suite
    // reads its xfails from `<entrypoint>.xfails`.
    let work = tempfile::tempdir().unwrap();
    let copy = work.path().join("tuf-conformance");
    let cp = Command::new("cp")
        .arg("-r")
        .arg(suite())
        .arg(&copy)
        .status()
        .unwrap();
    assert!(cp.success());
    Command::new("chmod")
        .arg("-R")
        .arg("u+w")
        .arg(&copy)
        .status()
        .unwrap();
    let entrypoint = work.path().join("ssu-agent-client");
    std::os::unix::fs::symlink(&client, &entrypoint).unwrap();
    fs::write(work.path().join("ssu-agent-client.xfails"), &xfail_text).unwrap();

    let started = Instant::now();
    let out = Command::new(venv.join("bin/pytest"))
        .current_dir(&copy)
        .args(["-q", "-rfEX", "-p", "no:cacheprovider", "tuf_conformance"])
        .arg("--entrypoint")
        .arg(&entrypoint)
        .output()
        .expect("run pytest");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let summary = stdout
        .lines()
        .rev()
        .find(|l| l.contains(" in ") && l.contains("passed"))
        .unwrap_or("")
        .trim_matches('=')
        .trim()
        .to_owned();
    eprintln!(
        "tuf-conformance: {summary} (wall {:.1?})",
        started.elapsed()
    );
    assert!(
        out.status.success(),
        "the conformance suite failed (a test not in tests/data/tuf/conformance.xfails \
         failed, or one listed there passed):\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let (passed, xfailed) = (count(&summary, "passed"), count(&summary, "xfailed"));
    assert_eq!(
        xfailed as usize,
        expected_failures.len(),
        "every listed failure happened: {summary}"
    );
    // docs/update.md states these numbers; keep them true.
    let docs = fs::read_to_string(repo().join("docs/update.md")).unwrap();
    let stated = format!(
        "{passed} passed, {xfailed} expected failures, {} tests",
        passed + xfailed
    );
    assert!(
        docs.contains(&stated),
        "docs/update.md should say \"{stated}\""
    );
    for entry in &expected_failures {
        assert!(
            docs.contains(&format!("`{entry}`")),
            "docs/update.md should list the expected failure `{entry}`"
        );
    }
}

#[test]
fn an_xfail_entry_needs_a_reason() {
    let ok = "# header\n\n# why\ntest_a\n# why b\ntest_b[x y]\n";
    assert_eq!(xfails(ok).unwrap(), ["test_a", "test_b[x y]"]);
    assert!(xfails("# why\ntest_a\ntest_b\n").is_err());
    assert!(xfails("# why\n\ntest_a\n").is_err());
    assert_eq!(count("93 passed, 15 xfailed in 61.73s", "passed"), 93);
    assert_eq!(count("93 passed, 15 xfailed in 61.73s", "xfailed"), 15);
    assert_eq!(count("108 passed in 1.0s", "xfailed"), 0);
}
