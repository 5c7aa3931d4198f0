//! Who may change what the agent does, and the user's say over it, on the sandbox device:
//! polkit (dbusmock's `polkitd` template) or, without it, the configured allowlist decides
//! for every mutating method — checked with real callers of different uids (`setpriv`);
//! postponement bounds and persistence across an agent restart.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use common::control::{Holder, Mock, call, call_with_pid, err_text, error_name};
use common::{Sandbox, busctl_value};

const WAIT: Duration = Duration::from_secs(30);
const NOBODY: u32 = 65534;

/// Every mutating method with arguments gdbus accepts, and the polkit action it needs.
const MUTATING: [(&str, &[&str], &str); 7] = [
    ("CheckNow", &[], "org.ssu.agent.check"),
    ("SetAutoInstall", &["true"], "org.ssu.agent.configure"),
    ("Postpone", &["3600"], "org.ssu.agent.configure"),
    ("Install", &[], "org.ssu.agent.install"),
    ("Reboot", &[], "org.ssu.agent.install"),
    ("ScheduleReboot", &["0"], "org.ssu.agent.install"),
    ("Inhibit", &["'test'"], "org.ssu.agent.install"),
];

/// Lets other users reach the sandbox bus socket (the temporary directory is private).
fn open_bus_to_everyone(sb: &Sandbox) {
    for d in [sb.dir().to_path_buf(), sb.dir().join("bus")] {
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
}

/// Writes a config drop-in read after the sandbox's own (then restart the agent).
fn drop_in(sb: &Sandbox, text: &str) {
    let d = sb.dir().join("etc/agent.d");
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(d.join("50-test.toml"), text).unwrap();
}

fn restart_agent(sb: &Sandbox) {
    sb.stop("agent");
    sb.start("agent");
}

const AUTHORITY: &str = "/org/freedesktop/PolicyKit1/Authority";

/// dbusmock's polkitd template on the sandbox bus.
struct Polkit<'a>(Mock<'a>);

impl<'a> Polkit<'a> {
    fn start(sb: &'a Sandbox) -> Polkit<'a> {
        Polkit(Mock::start(sb, "polkitd", "org.freedesktop.PolicyKit1"))
    }

    fn set_allowed(&self, actions: &[&str]) {
        let n = actions.len().to_string();
        let mut args = vec!["as", n.as_str()];
        args.extend_from_slice(actions);
        self.0.call(AUTHORITY, "SetAllowed", &args);
    }

    /// The subjects of every CheckAuthorization call so far: (kind, bus name).
    fn subjects(&self) -> Vec<(String, String)> {
        self.0
            .calls(AUTHORITY, "CheckAuthorization")
            .iter()
            .map(|args| {
                let subject = &args[0]["data"];
                (
                    subject[0].as_str().unwrap_or("").to_owned(),
                    subject[1]["name"]["data"].as_str().unwrap_or("").to_owned(),
                )
            })
            .collect()
    }
}

/// Every mutating method, called as `uid`, is refused with `NotAuthorized` and a message
/// containing `says(action)`.
fn assert_all_refused(sb: &Sandbox, uid: Option<u32>, says: impl Fn(&str) -> String) {
    for (method, args, action) in MUTATING {
        let out = call(sb, uid, method, args);
        assert_eq!(
            error_name(&out),
            "org.ssu.Agent1.Error.NotAuthorized",
            "{method}: {}",
            err_text(&out)
        );
        let part = says(action);
        assert!(
            err_text(&out).contains(&part),
            "{method}: {}",
            err_text(&out)
        );
    }
}

#[test]
fn polkit_decides_every_mutating_method_for_the_caller() {
    let sb = Sandbox::up();
    let polkit = Polkit::start(&sb);

    // Nothing allowed: every mutating method is refused, whoever asks (root is in the
    // sandbox's allowlist, but polkit on the bus decides).
    polkit.set_allowed(&[]);
    assert_all_refused(&sb, None, |action| action.to_owned());
    // Reads need no authorization.
    let out = call(&sb, None, "GetStatus", &[]);
    assert!(out.status.success(), "{}", err_text(&out));

    // polkit was asked about the caller (its unique bus name), never about the agent.
    let agent = busctl_value(
        &sb.busctl(&[
            "call",
            "org.freedesktop.DBus",
            "/org/freedesktop/DBus",
            "org.freedesktop.DBus",
            "GetNameOwner",
            "s",
            "org.ssu.Agent1",
        ])
        .stdout,
    );
    let subjects = polkit.subjects();
    assert_eq!(subjects.len(), MUTATING.len(), "{subjects:?}");
    for (kind, name) in &subjects {
        assert_eq!(kind, "system-bus-name");
        assert!(name.starts_with(':') && *name != agent, "{name} vs {agent}");
    }

    // Each action allows exactly its methods.
    for allowed in [
        "org.ssu.agent.check",
        "org.ssu.agent.configure",
        "org.ssu.agent.install",
    ] {
        polkit.set_allowed(&[allowed]);
        for (method, args, action) in MUTATING {
            let out = call(&sb, None, method, args);
            let name = error_name(&out);
            if action == allowed {
                assert_ne!(name, "org.ssu.Agent1.Error.NotAuthorized", "{method}");
                // Without an update these two have nothing to act on; the rest succeed.
                if matches!(method, "Install" | "Reboot") {
                    assert_eq!(name, "org.ssu.Agent1.Error.NothingToInstall", "{method}");
                } else {
                    assert!(out.status.success(), "{method}: {}", err_text(&out));
                }
            } else {
                assert_eq!(name, "org.ssu.Agent1.Error.NotAuthorized", "{method}");
            }
        }
    }

    // An unprivileged caller is treated the same way: polkit decides.
    open_bus_to_everyone(&sb);
    polkit.set_allowed(&[]);
    let out = call(&sb, Some(NOBODY), "Postpone", &["60"]);
    assert_eq!(error_name(&out), "org.ssu.Agent1.Error.NotAuthorized");
    polkit.set_allowed(&["org.ssu.agent.configure"]);
    let out = call(&sb, Some(NOBODY), "Postpone", &["60"]);
    assert!(out.status.success(), "{}", err_text(&out));
}

/// Whether the agent logged `what` naming the caller: uid, pid, process and bus name.
fn logged_with_caller(sb: &Sandbox, what: &str, uid: u32, pid: u32) -> bool {
    sb.agent_log().lines().any(|l| {
        l.contains(what)
            && l.contains(&format!("uid={uid}"))
            && l.contains(&format!("pid={pid}"))
            && l.contains("process=\"gdbus\"")
            && l.contains("sender=:")
            && l.contains("org.ssu.agent.check")
    })
}

#[test]
fn a_refusal_is_logged_with_who_asked() {
    let sb = Sandbox::up();
    open_bus_to_everyone(&sb);
    let polkit = Polkit::start(&sb);
    polkit.set_allowed(&[]);
    // setpriv execs gdbus: the pid is the caller's.
    let (pid, out) = call_with_pid(&sb, Some(NOBODY), "CheckNow", &[]);
    assert_eq!(error_name(&out), "org.ssu.Agent1.Error.NotAuthorized");
    sb.wait_for("polkit's refusal in the log", WAIT, || {
        logged_with_caller(&sb, "refused by polkit", NOBODY, pid)
    });

    // Without polkit, the allowlist's refusal names the caller the same way.
    drop(polkit);
    let (pid, out) = call_with_pid(&sb, Some(NOBODY), "CheckNow", &[]);
    assert_eq!(error_name(&out), "org.ssu.Agent1.Error.NotAuthorized");
    sb.wait_for("the allowlist's refusal in the log", WAIT, || {
        logged_with_caller(&sb, "refused: not in the allowlist", NOBODY, pid)
    });
}

#[test]
fn without_polkit_the_allowlist_decides_by_user_and_group() {
    let sb = Sandbox::up();
    open_bus_to_everyone(&sb);

    // The sandbox allows root only.
    assert_all_refused(&sb, Some(NOBODY), |_| "allow_users".to_owned());
    for (method, args, _) in MUTATING {
        let out = call(&sb, None, method, args);
        assert_ne!(
            error_name(&out),
            "org.ssu.Agent1.Error.NotAuthorized",
            "{method}"
        );
    }
    // Reads stay open to everyone.
    assert!(call(&sb, Some(NOBODY), "GetStatus", &[]).status.success());

    // A group allowlist: nobody's primary group from /etc/passwd (setpriv cleared its
    // supplementary groups, which is not what counts).
    drop_in(
        &sb,
        "[authorization]\nallow_users = []\nallow_groups = [\"nogroup\"]\n",
    );
    restart_agent(&sb);
    let out = call(&sb, Some(NOBODY), "SetAutoInstall", &["false"]);
    assert!(out.status.success(), "{}", err_text(&out));
    let out = call(&sb, None, "SetAutoInstall", &["true"]);
    assert_eq!(error_name(&out), "org.ssu.Agent1.Error.NotAuthorized");
    let st = sb.ssuctl(&["status", "--json"]);
    let st: serde_json::Value = serde_json::from_slice(&st.stdout).unwrap();
    assert_eq!(
        st["AutoInstall"], false,
        "nobody's call took effect, root's did not"
    );
}

#[test]
fn without_polkit_and_without_an_allowlist_everything_mutating_is_refused() {
    let sb = Sandbox::up();
    drop_in(
        &sb,
        "[authorization]\nallow_users = []\nallow_groups = []\n",
    );
    restart_agent(&sb);
    assert_all_refused(&sb, None, |_| "no allowlist is configured".to_owned());
    // Turning polkit off in the configuration does not open anything either.
    drop_in(&sb, "[authorization]\npolkit = false\n");
    std::fs::write(
        sb.dir().join("etc/agent.d/00-sandbox-authorization.toml"),
        "",
    )
    .unwrap();
    restart_agent(&sb);
    let out = call(&sb, None, "CheckNow", &[]);
    assert_eq!(error_name(&out), "org.ssu.Agent1.Error.NotAuthorized");
    // And the CLI says what to do next.
    let out = sb.ssuctl(&["check"]);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("administrator"), "{text}");
}

fn postponed_until(sb: &Sandbox) -> u64 {
    sb.agent_property("PostponedUntil").parse().unwrap()
}

#[test]
fn postpone_is_bounded_and_survives_a_restart() {
    let sb = Sandbox::up();
    drop_in(
        &sb,
        "[install]\nmax_postpone = \"3d\"\nmax_postpone_critical = \"1d\"\n",
    );
    restart_agent(&sb);

    // Beyond the bound: refused, naming the bound; nothing changes.
    let out = call(&sb, None, "Postpone", &[&(3 * 86400 + 1).to_string()]);
    assert_eq!(error_name(&out), "org.ssu.Agent1.Error.PolicyRefused");
    assert!(err_text(&out).contains("259200s"), "{}", err_text(&out));
    assert_eq!(postponed_until(&sb), 0);
    for hostile in ["18446744073709551615", "9223372036854775808"] {
        let out = call(&sb, None, "Postpone", &[hostile]);
        assert_eq!(
            error_name(&out),
            "org.ssu.Agent1.Error.PolicyRefused",
            "{hostile}"
        );
    }

    // Within it: PostponedUntil is now + 2 days, and stays so across a restart.
    let before = jiff::Timestamp::now().as_second() as u64;
    let out = call(&sb, None, "Postpone", &["172800"]);
    assert!(out.status.success(), "{}", err_text(&out));
    let until = postponed_until(&sb);
    assert!(
        (before + 172800..=before + 172800 + 60).contains(&until),
        "{until} vs {before}"
    );
    restart_agent(&sb);
    assert_eq!(postponed_until(&sb), until);
    let text = String::from_utf8_lossy(&sb.ssuctl(&["status"]).stdout).into_owned();
    assert!(text.contains("Postponed until"), "{text}");

    // The same through ssuctl, with a hint when refused.
    let out = sb.ssuctl(&["postpone", "4d"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("PolicyRefused") && err.contains("hint:"),
        "{err}"
    );
    let out = sb.ssuctl(&["postpone", "1d"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.starts_with("Automatic installation postponed until "),
        "{out:?}"
    );
    let out = sb.ssuctl(&["postpone", "soon"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");

    // 0 clears it.
    let out = call(&sb, None, "Postpone", &["0"]);
    assert!(out.status.success(), "{}", err_text(&out));
    assert_eq!(postponed_until(&sb), 0);
}

#[test]
fn inhibitors_are_listed_while_held_and_released_on_close() {
    let sb = Sandbox::up();
    let inhibitors = || {
        let st = sb.ssuctl(&["status", "--json"]);
        let st: serde_json::Value = serde_json::from_slice(&st.stdout).unwrap();
        st["Inhibitors"].clone()
    };
    assert_eq!(inhibitors(), serde_json::json!([]));
    let a = Holder::take(&sb, "driving");
    let b = Holder::take(&sb, "call in progress\u{7}\n");
    sb.wait_for("two inhibitors", WAIT, || {
        inhibitors().as_array().unwrap().len() == 2
    });
    assert_eq!(
        inhibitors(),
        serde_json::json!(["driving", "call in progress"])
    );
    a.release();
    sb.wait_for("one inhibitor", WAIT, || {
        inhibitors() == serde_json::json!(["call in progress"])
    });
    b.release();
    sb.wait_for("no inhibitor", WAIT, || {
        inhibitors() == serde_json::json!([])
    });
    // A caller that takes one and exits at once leaves nothing held.
    let out = call(&sb, None, "Inhibit", &["'gone'"]);
    assert!(out.status.success(), "{}", err_text(&out));
    sb.wait_for("no inhibitor", WAIT, || {
        inhibitors() == serde_json::json!([])
    });
}

#[test]
fn completions_are_generated_without_an_agent() {
    for shell in ["bash", "zsh", "fish"] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_ssuctl"))
            .args(["completions", shell])
            .env("DBUS_SYSTEM_BUS_ADDRESS", "unix:path=/nonexistent/socket")
            .output()
            .unwrap();
        assert!(out.status.success(), "{shell}: {out:?}");
        let text = String::from_utf8_lossy(&out.stdout);
        for word in ["install", "postpone", "auto-install", "cves", "yes"] {
            assert!(text.contains(word), "{shell} completion lacks {word}");
        }
    }
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ssuctl"))
        .args(["completions", "cmd.exe"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}
