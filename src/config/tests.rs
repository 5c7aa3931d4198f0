//! Configuration parsing and validation, including hostile input.
use super::*;

fn one(text: &str) -> Result<Config, ConfigError> {
    from_sources(&[(PathBuf::from("/etc/ssu-agent/agent.toml"), text.to_owned())])
}

fn expect_invalid(text: &str, key: &str, reason_part: &str) {
    match one(text) {
        Err(ConfigError::Invalid {
            path,
            key: k,
            reason,
            ..
        }) => {
            assert_eq!(path, Path::new("/etc/ssu-agent/agent.toml"));
            assert_eq!(k, key, "reason was {reason}");
            assert!(
                reason.contains(reason_part),
                "reason {reason:?} lacks {reason_part:?}"
            );
        }
        other => panic!("expected an Invalid error for {text:?}, got {other:?}"),
    }
}

#[test]
fn empty_file_gives_documented_defaults() {
    let c = one("").unwrap();
    assert_eq!(c, Config::default());
    assert_eq!(c.agent.state_dir, Path::new("/var/lib/ssu-agent"));
    assert_eq!(c.check.interval.0, SignedDuration::from_hours(24));
}

#[test]
fn full_file_parses() {
    let c = one(r#"
        [agent]
        state_dir = "/data/ssu"
        log_level = "debug"
        [device]
        model = "Gateway 3000"
        hardware_id = "gw3000-revb"
        version = "1.4.0"
        security_patch_level = "2026-11-01"
        [check]
        boot_delay = "30s"
        interval = "12h"
        jitter = "30m"
        overdue_after = "60d"
        "#)
    .unwrap();
    assert_eq!(c.agent.log_level, LogLevel::Debug);
    assert_eq!(
        c.device.security_patch_level,
        Some(PatchDate(jiff::civil::date(2026, 11, 1)))
    );
    assert_eq!(c.check.overdue_after.0, SignedDuration::from_hours(60 * 24));
    assert_eq!(c.check.boot_delay.0, SignedDuration::from_secs(30));
}

#[test]
fn unknown_key_names_file_key_and_reason() {
    expect_invalid(
        "[check]\nintervall = \"1h\"\n",
        "check.intervall",
        "unknown field `intervall`",
    );
    expect_invalid("[nope]\n", "nope", "unknown field `nope`");
}

#[test]
fn wrong_type_names_key() {
    expect_invalid(
        "[check]\ninterval = 3600\n",
        "check.interval",
        "invalid type",
    );
    expect_invalid(
        "[agent]\nstate_dir = [1]\n",
        "agent.state_dir",
        "invalid type",
    );
}

#[test]
fn bad_dates_are_refused() {
    for bad in [
        "2026-13-01",
        "2026-02-30",
        "26-11-01",
        "2026-11-01T00:00:00Z",
        "",
        "yesterday",
    ] {
        expect_invalid(
            &format!("[device]\nsecurity_patch_level = {bad:?}\n"),
            "device.security_patch_level",
            "invalid date",
        );
    }
    // An unquoted TOML date is a different type: refused with a clear message too.
    expect_invalid(
        "[device]\nsecurity_patch_level = 2026-11-01\n",
        "device.security_patch_level",
        "invalid type",
    );
}

#[test]
fn bad_durations_are_refused() {
    expect_invalid(
        "[check]\ninterval = \"soon\"\n",
        "check.interval",
        "invalid duration",
    );
    expect_invalid(
        "[check]\ninterval = \"1 month\"\n",
        "check.interval",
        "months",
    );
    expect_invalid(
        "[check]\ninterval = \"-1h\"\n",
        "check.interval",
        "negative",
    );
    expect_invalid("[check]\ninterval = \"1m\"\n", "check.interval", "minimum");
    expect_invalid(
        "[check]\ninterval = \"1h\"\njitter = \"2h\"\n",
        "check.jitter",
        "shorter",
    );
}

#[test]
fn syntax_error_names_line() {
    match one("[agent]\nlog_level = \"info\"\nstate_dir = \n") {
        Err(ConfigError::Invalid { line, key, .. }) => {
            assert_eq!(line, 3);
            assert_eq!(key, "");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn invalid_values_are_refused() {
    expect_invalid(
        "[agent]\nstate_dir = \"var/lib\"\n",
        "agent.state_dir",
        "absolute",
    );
    expect_invalid(
        "[agent]\nlog_level = \"loud\"\n",
        "agent.log_level",
        "unknown variant",
    );
    expect_invalid(
        "[check]\nwave_skip_severity = \"urgent\"\n",
        "check.wave_skip_severity",
        "unknown variant",
    );
    expect_invalid(
        "[integrity]\non_loss = \"ignore\"\n",
        "integrity.on_loss",
        "unknown variant",
    );
    expect_invalid(
        "[device]\nhardware_id = \"gw 3000/../x\"\n",
        "device.hardware_id",
        "only letters",
    );
}

#[test]
fn later_files_override_and_errors_name_the_right_file() {
    let main = (
        PathBuf::from("/etc/ssu-agent/agent.toml"),
        "[device]\nmodel = \"A\"\nversion = \"1.0\"\n[check]\ninterval = \"24h\"\n".to_owned(),
    );
    let dropin = (
        PathBuf::from("/etc/ssu-agent/agent.d/10-image.toml"),
        "[device]\nversion = \"2.0\"\n".to_owned(),
    );
    let c = from_sources(&[main.clone(), dropin]).unwrap();
    assert_eq!(c.device.model, "A");
    assert_eq!(c.device.version, "2.0");

    // A drop-in whose value only fails cross-field validation is still named.
    let bad = (
        PathBuf::from("/etc/ssu-agent/agent.d/20-jitter.toml"),
        "[check]\njitter = \"30h\"\n".to_owned(),
    );
    match from_sources(&[main, bad]) {
        Err(ConfigError::Invalid { path, key, .. }) => {
            assert_eq!(path, Path::new("/etc/ssu-agent/agent.d/20-jitter.toml"));
            assert_eq!(key, "check.jitter");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn display_is_file_line_key_reason() {
    let e = one("[check]\ninterval = 5\n").unwrap_err().to_string();
    assert!(
        e.starts_with("/etc/ssu-agent/agent.toml:2: check.interval: invalid type"),
        "{e}"
    );
}

#[test]
fn load_reads_dropins_in_name_order_and_bounds_size() {
    let dir = tempfile::tempdir().unwrap();
    let main = dir.path().join("agent.toml");
    std::fs::write(&main, "[device]\nversion = \"1\"\n").unwrap();
    std::fs::create_dir(dir.path().join("agent.d")).unwrap();
    std::fs::write(
        dir.path().join("agent.d/20-b.toml"),
        "[device]\nversion = \"3\"\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("agent.d/10-a.toml"),
        "[device]\nversion = \"2\"\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("agent.d/README"), "not toml").unwrap();
    let loaded = load(&main).unwrap();
    assert_eq!(loaded.config.device.version, "3");
    assert_eq!(loaded.files.len(), 3);

    std::fs::write(
        dir.path().join("agent.d/30-huge.toml"),
        "#".repeat(300 * 1024),
    )
    .unwrap();
    assert!(matches!(load(&main), Err(ConfigError::Read { .. })));

    assert!(matches!(
        load(&dir.path().join("missing.toml")),
        Err(ConfigError::Read { .. })
    ));
}

#[test]
fn non_utf8_file_is_an_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let main = dir.path().join("agent.toml");
    std::fs::write(&main, [0xff, 0xfe, b'[', 0x00]).unwrap();
    assert!(matches!(load(&main), Err(ConfigError::Read { .. })));
}

#[test]
fn integrity_keys_parse_and_hostile_values_are_refused() {
    let c = one(r#"
        [integrity]
        root = "/run/fixture"
        probes = ["kernel-taint", "setuid"]
        require_verity = true
        allowed_taint = 0x1000
        secure_boot_cmdline = "androidboot.verifiedbootstate=green"
        secure_boot_dt_property = "chosen/secure-boot"
        setuid_paths = ["/usr/bin", "/data"]
        setuid_allowed = ["/usr/bin/passwd"]
        unlock_marker = "/var/lib/boot/unlocked"
        lock_variable = "/proc/device-tree/chosen/lock-state"
        lock_value = "locked"
        "#)
    .unwrap();
    let i = &c.integrity;
    assert_eq!(i.root, Path::new("/run/fixture"));
    assert_eq!(
        i.probes,
        [
            crate::integrity::ProbeId::KernelTaint,
            crate::integrity::ProbeId::Setuid
        ]
    );
    assert_eq!(i.allowed_taint, 0x1000);
    assert_eq!(one("").unwrap().integrity.root, Path::new("/"));
    assert_eq!(one("").unwrap().integrity.probes.len(), 7);

    let cases = [
        ("root = \"fixture\"", "integrity.root", "absolute"),
        (
            "probes = [\"rootkit-hunter\"]",
            "integrity.probes[0]",
            "unknown variant",
        ),
        (
            "probes = [\"setuid\", \"setuid\"]",
            "integrity.probes",
            "twice",
        ),
        ("probes = \"setuid\"", "integrity.probes", "sequence"),
        (
            "allowed_taint = -1",
            "integrity.allowed_taint",
            "invalid value",
        ),
        (
            "allowed_taint = 0x200",
            "integrity.allowed_taint",
            "does not check",
        ),
        ("allowed_taint = \"O\"", "integrity.allowed_taint", "u64"),
        (
            "secure_boot_cmdline = \"a b\"",
            "integrity.secure_boot_cmdline",
            "token",
        ),
        (
            "secure_boot_cmdline = \"=x\"",
            "integrity.secure_boot_cmdline",
            "token",
        ),
        (
            "secure_boot_dt_property = \"/proc/device-tree/x\"",
            "integrity.secure_boot_dt_property",
            "relative",
        ),
        (
            "secure_boot_dt_property = \"chosen/../../../etc\"",
            "integrity.secure_boot_dt_property",
            "..",
        ),
        (
            "secure_boot_dt_value = \"\"",
            "integrity.secure_boot_dt_value",
            "empty",
        ),
        (
            "setuid_paths = [\"usr/bin\"]",
            "integrity.setuid_paths",
            "absolute",
        ),
        (
            "setuid_allowed = [\"/usr/../../x\"]",
            "integrity.setuid_allowed",
            "..",
        ),
        (
            "unlock_marker = \"unlocked\"",
            "integrity.unlock_marker",
            "absolute",
        ),
        (
            "lock_variable = \"/a/../../b\"",
            "integrity.lock_variable",
            "..",
        ),
        ("lock_value = \"\"", "integrity.lock_value", "empty"),
        (
            "walk_everything = true",
            "integrity.walk_everything",
            "unknown field",
        ),
    ];
    for (line, key, reason) in cases {
        expect_invalid(&format!("[integrity]\n{line}\n"), key, reason);
    }
}

#[test]
fn consent_authorization_and_support_keys() {
    let c = one(r#"[install]
maintenance_window = "23:00-01:00"
max_postpone = "3d"
max_postpone_critical = "12h"
[authorization]
polkit = false
allow_users = ["root", "1000"]
allow_groups = ["ssu"]
[notify]
desktop = true
[device]
support_end = "2029-12-31"
support_warning = "30d"
replacement_text = "Model X2 replaces this model"
replacement_url = "https://example.com/eol"
"#)
    .unwrap();
    assert_eq!(c.install.maintenance_window.as_deref(), Some("23:00-01:00"));
    assert_eq!(c.install.max_postpone.0, SignedDuration::from_hours(72));
    assert!(!c.authorization.polkit);
    assert_eq!(c.authorization.allow_users, ["root", "1000"]);
    assert!(c.notify.desktop);
    assert_eq!(c.device.support_end.unwrap().0.to_string(), "2029-12-31");
    // Defaults: polkit decides, nobody else is allowed, no window, 7d/1d bounds.
    let d = Config::default();
    assert!(d.authorization.polkit && d.authorization.allow_users.is_empty());
    assert_eq!(d.install.max_postpone.0, SignedDuration::from_hours(168));
    assert_eq!(
        d.install.max_postpone_critical.0,
        SignedDuration::from_hours(24)
    );
    assert!(!d.notify.desktop);
}

#[test]
fn hostile_consent_values_are_refused() {
    expect_invalid(
        "[install]\nmaintenance_window = \"2am-4am\"\n",
        "install.maintenance_window",
        "HH:MM-HH:MM",
    );
    expect_invalid(
        "[install]\nmaintenance_window = \"02:00-02:00\"\n",
        "install.maintenance_window",
        "equal",
    );
    expect_invalid(
        "[install]\nmax_postpone = \"1d\"\nmax_postpone_critical = \"2d\"\n",
        "install.max_postpone_critical",
        "must not be longer",
    );
    expect_invalid(
        "[device]\nreplacement_url = \"javascript:alert(1)\"\n",
        "device.replacement_url",
        "scheme",
    );
    expect_invalid(
        "[authorization]\nallow_users = \"root\"\n",
        "authorization.allow_users",
        "",
    );
    expect_invalid(
        "[authorization]\nopen = true\n",
        "authorization.open",
        "unknown field",
    );
    expect_invalid(
        "[device]\nsupport_end = \"2029-13-01\"\n",
        "device.support_end",
        "invalid",
    );
}

#[test]
fn identity_key_is_an_absolute_path() {
    assert_eq!(one("").unwrap().device.identity_key, None);
    let c = one("[device]\nidentity_key = \"/etc/ssu-agent/identity.pk8\"\n").unwrap();
    assert_eq!(
        c.device.identity_key.as_deref(),
        Some(Path::new("/etc/ssu-agent/identity.pk8"))
    );
    expect_invalid(
        "[device]\nidentity_key = \"identity.pk8\"\n",
        "device.identity_key",
        "absolute",
    );
    expect_invalid(
        "[device]\nidentity_key = 42\n",
        "device.identity_key",
        "invalid type",
    );
    expect_invalid(
        "[device]\nidentity_keys = \"/k\"\n",
        "device.identity_keys",
        "unknown field",
    );
}

#[test]
fn zero_timeouts_are_refused() {
    for (table, key) in [
        ("download", "connect_timeout"),
        ("download", "read_timeout"),
        ("install", "health_check_timeout"),
        ("install", "rauc_timeout"),
    ] {
        expect_invalid(
            &format!("[{table}]\n{key} = \"0s\"\n"),
            &format!("{table}.{key}"),
            "0s is not a positive duration",
        );
    }
    // A rate of zero added time is fine: the fixed part still bounds the wait.
    one("[install]\ninstall_time_per_gib = \"0s\"\n").unwrap();
}

#[test]
fn errors_echo_keys_escaped_and_long_values_cut_short() {
    let e = one("[check]\n\"in\u{2028}ter\u{85}val\" = \"1h\"\n")
        .unwrap_err()
        .to_string();
    assert!(e.contains("\\u{2028}") && e.contains("\\u{85}"), "{e}");
    assert!(!e.contains('\u{2028}') && !e.contains('\u{85}'), "{e}");
    let long = "x".repeat(5000);
    let e = one(&format!("[check]\ninterval = \"{long}\"\n"))
        .unwrap_err()
        .to_string();
    assert!(e.len() < 1000, "{} bytes: {e}", e.len());
    assert!(e.contains("more characters)"), "{e}");
    assert!(e.contains(":2: check.interval"), "{e}");
}

#[test]
fn a_deeply_dotted_header_names_its_line() {
    let header = vec!["a"; 200].join(".");
    let e = one(&format!("# a comment\n[{header}]\nx = 1\n"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("agent.toml:2"), "{e}");
    assert!(e.len() < 1000, "{e}");
}
