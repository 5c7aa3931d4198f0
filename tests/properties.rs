//! `org.freedesktop.DBus.Properties` of the agent on the sandbox bus, through gdbus: every
//! property is read-only, and `Set` says so (`PropertyReadOnly`, `src/dbus/properties.rs`);
//! `Get` and `GetAll` answer as zbus's own interface did.

mod common;

use common::{Options, Sandbox};

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `org.freedesktop.DBus.Properties` through gdbus; returns (success, text).
fn properties_call(sb: &Sandbox, method: &str, args: &[&str]) -> (bool, String) {
    let out = sb
        .command("gdbus")
        .args([
            "call",
            "--system",
            "--dest",
            "org.ssu.Agent1",
            "--object-path",
            "/org/ssu/Agent1",
            "--method",
            &format!("org.freedesktop.DBus.Properties.{method}"),
        ])
        .args(args)
        .output()
        .unwrap();
    let text = format!("{}{}", stdout(&out), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

#[test]
fn setting_a_property_answers_property_read_only_and_reads_still_work() {
    let sb = Sandbox::up_with(Options {
        rauc: false,
        modem: false,
        ..Options::default()
    });
    let (ok, text) = properties_call(&sb, "Set", &["org.ssu.Agent1", "AutoInstall", "<false>"]);
    assert!(!ok, "{text}");
    assert!(
        text.contains("org.freedesktop.DBus.Error.PropertyReadOnly")
            && text.contains("'AutoInstall' is read-only"),
        "{text}"
    );
    // Nothing changed.
    assert_eq!(sb.agent_property("AutoInstall"), "true");
    let (ok, text) = properties_call(&sb, "Set", &["org.ssu.Agent1", "NoSuchThing", "<1>"]);
    assert!(
        !ok && text.contains("org.freedesktop.DBus.Error.UnknownProperty"),
        "{text}"
    );
    let (ok, text) = properties_call(&sb, "Set", &["org.example.Nope", "AutoInstall", "<false>"]);
    assert!(
        !ok && text.contains("org.freedesktop.DBus.Error.UnknownInterface"),
        "{text}"
    );

    // Get and GetAll answer as before.
    let (ok, text) = properties_call(&sb, "Get", &["org.ssu.Agent1", "Model"]);
    assert!(ok && text.contains("'Sandbox Gateway'"), "{text}");
    let (ok, text) = properties_call(&sb, "Get", &["org.ssu.Agent1", "NoSuchThing"]);
    assert!(
        !ok && text.contains("org.freedesktop.DBus.Error.UnknownProperty"),
        "{text}"
    );
    let (ok, text) = properties_call(&sb, "GetAll", &["org.ssu.Agent1"]);
    assert!(
        ok && text.contains("'SecurityPatchLevel': <'2026-09-01'>"),
        "{text}"
    );
    let (ok, text) = properties_call(&sb, "GetAll", &["org.freedesktop.DBus.Peer"]);
    assert!(ok && text.contains("(@a{sv} {},)"), "{text}");
}
