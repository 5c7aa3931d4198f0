//! Signed patch-status reports on the sandbox device: `ssuctl report` against the real agent
//! on a real bus, checked by `ssu-repo verify-report` as a hub would.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use common::Sandbox;

const NONCE_A: &str = "000102030405060708090a0b0c0d0e0f";
const NONCE_B: &str = "f0e1d2c3b4a5968778695a4b3c2d1e0ff0e1d2c3b4a5968778695a4b3c2d1e0f";

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn ssuctl_ok(sb: &Sandbox, args: &[&str]) -> String {
    let out = sb.ssuctl(args);
    assert!(out.status.success(), "ssuctl {args:?}: {out:?}");
    stdout(&out)
}

/// `ssuctl report --nonce NONCE --json` written to `DIR/NAME`.
fn fetch_report(sb: &Sandbox, nonce: &str, name: &str) -> PathBuf {
    let text = ssuctl_ok(sb, &["report", "--nonce", nonce, "--json"]);
    let path = sb.dir().join(name);
    std::fs::write(&path, text).unwrap();
    path
}

fn verify_report(args: &[&str], report: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ssu-repo"))
        .arg("verify-report")
        .args(args)
        .arg(report)
        .output()
        .expect("run ssu-repo")
}

fn envelope(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).expect("ssuctl report --json is JSON")
}

fn content(path: &Path) -> serde_json::Value {
    serde_json::from_str(envelope(path)["report"].as_str().unwrap()).unwrap()
}

fn refused(out: &Output, why: &str) {
    assert!(!out.status.success(), "accepted: {}", stdout(out));
    let err = stderr(out);
    assert!(err.contains("REFUSED") && err.contains(why), "{err}");
}

#[test]
fn a_report_verifies_with_the_device_key_and_forgeries_are_refused() {
    let sb = Sandbox::up();
    let dir = sb.dir().to_path_buf();
    sb.wait_for("RAUC data in the status", Duration::from_secs(20), || {
        let out = sb.ssuctl(&["status", "--json"]);
        serde_json::from_slice::<serde_json::Value>(&out.stdout).is_ok_and(|j| j["BootSlot"] == "A")
    });

    // The key was generated at first start, readable by the agent's user only.
    let key_file = dir.join("state/identity.pk8");
    let mode = std::fs::metadata(&key_file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);

    // The public key as a hub records it at enrolment.
    let line = ssuctl_ok(&sb, &["report", "--public-key"]);
    let pub_file = dir.join("device.pub");
    std::fs::write(&pub_file, &line).unwrap();
    let pk = ssuctl_ok(&sb, &["report", "--public-key", "--json"]);
    let pk: serde_json::Value = serde_json::from_str(&pk).unwrap();
    assert_eq!(pk["algorithm"], "ed25519");
    assert_eq!(
        line,
        format!(
            "ed25519 {} {}\n",
            pk["public_key"].as_str().unwrap(),
            pk["key_id"].as_str().unwrap()
        )
    );
    let key_id = pk["key_id"].as_str().unwrap().to_owned();

    // A report verifies with that key, nonce and a fresh counter state.
    let seen = dir.join("seen.json");
    let seen_arg = seen.to_str().unwrap();
    let pub_arg = pub_file.to_str().unwrap();
    let report_a = fetch_report(&sb, NONCE_A, "a.json");
    let out = verify_report(
        &[
            "--device-key",
            pub_arg,
            "--nonce",
            NONCE_A,
            "--state",
            seen_arg,
        ],
        &report_a,
    );
    assert!(out.status.success(), "{out:?}");
    let text = stdout(&out);
    for want in [
        "Report verified: signed by device key",
        "sandbox-gw-1 (Sandbox Gateway)",
        "Security patch level: 2026-09-01 (installed version 1.0.0)",
        "Booted slot:          A",
        "What this proves:",
        "What it cannot prove:",
    ] {
        assert!(text.contains(want), "missing {want:?} in\n{text}");
    }
    let flat = text.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(
        flat.contains("a device that is rooted and holds its own key can still lie"),
        "{text}"
    );

    // What it says is what `ssuctl status` says.
    let status: serde_json::Value =
        serde_json::from_str(&ssuctl_ok(&sb, &["status", "--json"])).unwrap();
    let a = content(&report_a);
    assert_eq!(
        a["installed"]["security_patch_level"],
        status["SecurityPatchLevel"]
    );
    assert_eq!(a["installed"]["version"], status["InstalledVersion"]);
    assert_eq!(a["boot"]["booted_slot"], status["BootSlot"]);
    assert_eq!(a["device"]["hardware_id"], status["HardwareId"]);
    assert_eq!(a["staleness"], status["Staleness"]);
    assert_eq!(a["integrity"]["state"], status["IntegrityState"]);
    assert_eq!(a["subscription"]["iccid"], status["Subscription"]["iccid"]);
    assert_eq!(a["key"]["id"], key_id.as_str());
    assert_eq!(a["nonce"], NONCE_A);
    let boot_id = std::fs::read_to_string(dir.join("boot/boot_id")).unwrap();
    assert_eq!(a["boot_id"], boot_id.trim());
    // The ICCID never leaves the agent whole.
    assert!(
        !envelope(&report_a)["report"]
            .as_str()
            .unwrap()
            .contains("8949000000000001234")
    );

    // A changed byte: the device "claims" a newer patch level.
    let mut forged = envelope(&report_a);
    let report = forged["report"]
        .as_str()
        .unwrap()
        .replace("2026-09-01", "2026-11-01");
    forged["report"] = report.into();
    let forged_path = dir.join("forged.json");
    std::fs::write(&forged_path, forged.to_string()).unwrap();
    refused(
        &verify_report(&["--device-key", pub_arg, "--nonce", NONCE_A], &forged_path),
        "signature does not verify",
    );

    // A replay: the hub asked with another nonce and got the old report.
    refused(
        &verify_report(&["--device-key", pub_arg, "--nonce", NONCE_B], &report_a),
        "nonce",
    );

    // A lower counter: a newer report was accepted, then the older one comes again.
    let report_b = fetch_report(&sb, NONCE_B, "b.json");
    let b = content(&report_b);
    assert!(b["counter"].as_u64() > a["counter"].as_u64(), "{a} {b}");
    let out = verify_report(
        &[
            "--device-key",
            pub_arg,
            "--nonce",
            NONCE_B,
            "--state",
            seen_arg,
        ],
        &report_b,
    );
    assert!(out.status.success(), "{out:?}");
    refused(
        &verify_report(
            &[
                "--device-key",
                pub_arg,
                "--nonce",
                NONCE_A,
                "--state",
                seen_arg,
            ],
            &report_a,
        ),
        "counter",
    );
    let min = (b["counter"].as_u64().unwrap() + 1).to_string();
    refused(
        &verify_report(
            &[
                "--device-key",
                pub_arg,
                "--nonce",
                NONCE_B,
                "--min-counter",
                &min,
            ],
            &report_b,
        ),
        "counter",
    );

    // Another device's key.
    let other = tempfile::tempdir().unwrap();
    let signer = ssu_agent::report::key::FileSigner::open(other.path(), None).unwrap();
    use ssu_agent::report::key::Signer;
    let other_pub = hex::encode(signer.public_key());
    refused(
        &verify_report(&["--device-key", &other_pub, "--nonce", NONCE_B], &report_b),
        "not by the device key given",
    );

    // A restart keeps the key and never lets the counter go back.
    sb.stop("agent");
    sb.start("agent");
    assert_eq!(ssuctl_ok(&sb, &["report", "--public-key"]), line);
    let report_c = fetch_report(&sb, NONCE_A, "c.json");
    let out = verify_report(
        &[
            "--device-key",
            pub_arg,
            "--nonce",
            NONCE_A,
            "--state",
            seen_arg,
        ],
        &report_c,
    );
    assert!(out.status.success(), "{out:?}");
    assert!(content(&report_c)["counter"].as_u64() > b["counter"].as_u64());
}

/// The D-Bus error name of a `GetReport(nonce)` call, or `None` when it succeeded.
fn get_report_error(sb: &Sandbox, nonce: Vec<u8>) -> Option<String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let conn = zbus::connection::Builder::address(sb.bus_address())
            .build()
            .await
            .unwrap();
        let reply = conn
            .call_method(
                Some("org.ssu.Agent1"),
                "/org/ssu/Agent1",
                Some("org.ssu.Agent1"),
                "GetReport",
                &(nonce,),
            )
            .await;
        match reply {
            Ok(_) => None,
            Err(zbus::Error::MethodError(name, _, _)) => Some(name.to_string()),
            // zbus turns the bus's standard error names into fdo::Error.
            Err(zbus::Error::FDO(e)) => Some(zbus::DBusError::name(e.as_ref()).to_string()),
            Err(e) => Some(format!("other error: {e}")),
        }
    })
}

#[test]
fn nonces_out_of_bounds_are_invalid_args() {
    let sb = Sandbox::up_with(common::Options {
        rauc: false,
        modem: false,
        ..common::Options::default()
    });
    let invalid = Some("org.freedesktop.DBus.Error.InvalidArgs".to_owned());
    assert_eq!(get_report_error(&sb, vec![]), invalid);
    assert_eq!(get_report_error(&sb, vec![1; 15]), invalid);
    assert_eq!(get_report_error(&sb, vec![1; 65]), invalid);
    assert_eq!(get_report_error(&sb, vec![1; 16]), None);
    assert_eq!(get_report_error(&sb, vec![1; 64]), None);

    // ssuctl says what is wrong and what to do.
    for nonce in ["", "00", &"ab".repeat(65)] {
        let out = sb.ssuctl(&["report", "--nonce", nonce]);
        assert_eq!(out.status.code(), Some(1), "{out:?}");
        let err = stderr(&out);
        assert!(
            err.contains("InvalidArgs") && err.contains("16 to 64 bytes"),
            "{err}"
        );
    }
    let out = sb.ssuctl(&["report", "--nonce", "not-hex"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
}

#[test]
fn a_provisioned_key_is_used_and_a_broken_one_makes_reports_unavailable_not_the_agent() {
    // A key the integrator provisioned (PKCS#8 DER, 0600).
    let keys = tempfile::tempdir().unwrap();
    let signer = ssu_agent::report::key::FileSigner::open(keys.path(), None).unwrap();
    use ssu_agent::report::key::Signer;
    let provisioned = keys.path().join(ssu_agent::report::key::FILE_NAME);
    let toml = format!(
        "[agent]\nstate_dir = \"@DIR@/state\"\n[device]\nmodel = \"Sandbox Gateway\"\n\
         hardware_id = \"sandbox-gw-1\"\nidentity_key = \"{}\"\n[install]\n\
         boot_id_file = \"@DIR@/boot/boot_id\"\n[integrity]\nroot = \"@DIR@/device\"\n",
        provisioned.display()
    );
    let sb = Sandbox::up_with(common::Options {
        rauc: false,
        modem: false,
        agent_toml: Some(toml.clone()),
        ..common::Options::default()
    });
    let line = ssuctl_ok(&sb, &["report", "--public-key"]);
    assert!(line.contains(&hex::encode(signer.public_key())), "{line}");
    assert!(
        !sb.dir().join("state/identity.pk8").exists(),
        "nothing generated"
    );
    let report = fetch_report(&sb, NONCE_A, "r.json");
    let out = verify_report(
        &[
            "--device-key",
            &hex::encode(signer.public_key()),
            "--nonce",
            NONCE_A,
        ],
        &report,
    );
    assert!(out.status.success(), "{out:?}");
    drop(sb);

    // Readable by others: refused like ssh refuses such a key; the agent keeps serving.
    std::fs::set_permissions(&provisioned, std::fs::Permissions::from_mode(0o644)).unwrap();
    let sb = Sandbox::up_with(common::Options {
        rauc: false,
        modem: false,
        agent_toml: Some(toml),
        ..common::Options::default()
    });
    ssuctl_ok(&sb, &["status"]);
    let out = sb.ssuctl(&["report"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = stderr(&out);
    assert!(
        err.contains("Unavailable") && err.contains("too open") && err.contains("identity.pk8"),
        "{err}"
    );
}
