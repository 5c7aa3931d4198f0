//! The binaries' command lines, without a bus: configuration checking and usage.

use std::path::Path;
use std::process::Command;

fn check_config(path: &Path) -> (Option<i32>, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_ssu-agent"))
        .arg("--config")
        .arg(path)
        .arg("--check-config")
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn the_shipped_example_configuration_is_valid() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging/agent.toml");
    let (code, out, err) = check_config(&example);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("configuration OK"), "{out}");
}

#[test]
fn malformed_configuration_exits_2_naming_file_line_key_and_reason() {
    let dir = tempfile::tempdir().unwrap();
    let main = dir.path().join("agent.toml");
    std::fs::write(&main, "[device]\nmodel = \"ok\"\n").unwrap();
    std::fs::create_dir(dir.path().join("agent.d")).unwrap();
    let dropin = dir.path().join("agent.d/50-test.toml");
    let cases = [
        (
            "unknown key",
            "[check]\ninterval = \"24h\"\nintervall = \"1h\"\n",
            ":3: check.intervall: unknown field `intervall`",
        ),
        (
            "wrong type",
            "[check]\ninterval = 86400\n",
            ":2: check.interval: invalid type: integer `86400`",
        ),
        (
            "bad date",
            "[device]\n\nsecurity_patch_level = \"2026-02-30\"\n",
            ":3: device.security_patch_level: invalid date \"2026-02-30\"",
        ),
        (
            "cross-field rule",
            "[check]\ninterval = \"1h\"\njitter = \"2h\"\n",
            ": check.jitter: must be shorter than check.interval",
        ),
    ];
    for (what, text, want) in cases {
        std::fs::write(&dropin, text).unwrap();
        let (code, _, err) = check_config(&main);
        assert_eq!(code, Some(2), "{what}: {err}");
        let expected = format!("{}{want}", dropin.display());
        assert!(
            err.contains(&expected),
            "{what}: want {expected:?} in {err:?}"
        );
    }

    // A valid drop-in is listed and accepted.
    std::fs::write(&dropin, "[device]\nsecurity_patch_level = \"2026-11-01\"\n").unwrap();
    let (code, out, err) = check_config(&main);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("50-test.toml"), "{out}");
}

#[test]
fn missing_configuration_is_a_clear_error() {
    let (code, _, err) = check_config(Path::new("/nonexistent/agent.toml"));
    assert_eq!(code, Some(2));
    assert!(
        err.contains("/nonexistent/agent.toml: cannot read"),
        "{err}"
    );
}

#[test]
fn ssuctl_help_documents_exit_codes() {
    let out = Command::new(env!("CARGO_BIN_EXE_ssuctl"))
        .arg("--help")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(text.contains("3 the agent is not running"), "{text}");
    let out = Command::new(env!("CARGO_BIN_EXE_ssuctl"))
        .arg("frobnicate")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}
