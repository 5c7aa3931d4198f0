//! Impostors (FS.25 §3's phishing note): on a real dbus-daemon that includes the shipped
//! `dbus/org.ssu.Agent1.conf`, a process of another user cannot own `org.ssu.Agent1` — not
//! while the name is free, not while the agent holds it — yet that user still reads the real
//! agent. Root owning the free name shows the bus works and the denial is the policy's.
//!
//! The impostor is `gdbus` run through `setpriv` as nobody (uid/gid 65534, no groups).

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Output};

use common::{Options, Sandbox};

const NAME: &str = "org.ssu.Agent1";
const PATH: &str = "/org/ssu/Agent1";
const NOBODY: &str = "65534";

/// The sandbox's bus (and the agent when `agent`), nothing else; its directory opened so that
/// another user can reach the bus socket.
fn sandbox(agent: bool) -> Sandbox {
    let sb = Sandbox::up_with(Options {
        agent,
        rauc: false,
        modem: false,
        ..Options::default()
    });
    // The temporary directory is created 0700; a real system bus socket lives in a directory
    // everyone may traverse (/run/dbus). Traverse only: nobody needs to list it.
    fs::set_permissions(sb.dir(), fs::Permissions::from_mode(0o711)).unwrap();
    sb
}

/// `PROGRAM` run as nobody, in the sandbox's environment.
fn as_nobody(sb: &Sandbox, program: &str) -> Command {
    let mut cmd = sb.command("setpriv");
    cmd.args([
        &format!("--reuid={NOBODY}"),
        &format!("--regid={NOBODY}"),
        "--clear-groups",
        program,
    ]);
    // nobody may not enter the test's working directory.
    cmd.current_dir("/");
    cmd
}

/// `gdbus call` on the sandbox's system bus, as root (`nobody` false) or as nobody; each call
/// is a fresh connection (a name it owned is released when gdbus exits).
fn call(sb: &Sandbox, nobody: bool, dest: &str, path: &str, method: &str, args: &[&str]) -> Output {
    let mut cmd = if nobody {
        as_nobody(sb, "gdbus")
    } else {
        sb.command("gdbus")
    };
    cmd.args([
        "call",
        "--system",
        "--dest",
        dest,
        "--object-path",
        path,
        "--method",
        method,
    ])
    .args(args)
    .output()
    .expect("run gdbus")
}

/// RequestName(org.ssu.Agent1, DO_NOT_QUEUE).
fn request_name(sb: &Sandbox, nobody: bool) -> Output {
    call(
        sb,
        nobody,
        "org.freedesktop.DBus",
        "/org/freedesktop/DBus",
        "org.freedesktop.DBus.RequestName",
        &[NAME, "4"],
    )
}

fn name_owner(sb: &Sandbox) -> Option<String> {
    let out = sb.busctl(&[
        "call",
        "org.freedesktop.DBus",
        "/org/freedesktop/DBus",
        "org.freedesktop.DBus",
        "GetNameOwner",
        "s",
        NAME,
    ]);
    out.status
        .success()
        .then(|| common::busctl_value(&out.stdout))
}

fn text(out: &Output) -> String {
    format!(
        "{}\n--- stdout ---\n{}--- stderr ---\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The impostor's request failed with the bus's AccessDenied (not, say, a connection error:
/// that would pass for a denial while proving nothing).
fn assert_access_denied(out: &Output) {
    assert!(!out.status.success(), "nobody owned {NAME}: {}", text(out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("org.freedesktop.DBus.Error.AccessDenied"),
        "{}",
        text(out)
    );
    assert!(err.contains(NAME), "{}", text(out));
}

#[test]
fn another_user_cannot_own_the_free_name_but_root_can() {
    let sb = sandbox(false);
    assert_eq!(name_owner(&sb), None);

    // The wrapper really drops to nobody.
    let id = as_nobody(&sb, "id").arg("-u").output().unwrap();
    assert_eq!(String::from_utf8_lossy(&id.stdout).trim(), NOBODY);

    assert_access_denied(&request_name(&sb, true));
    assert_eq!(name_owner(&sb), None);

    // The same call as root: 1 = DBUS_REQUEST_NAME_REPLY_PRIMARY_OWNER.
    let out = request_name(&sb, false);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "(uint32 1,)");
}

#[test]
fn another_user_cannot_take_the_name_from_the_running_agent_but_can_read_it() {
    let sb = sandbox(true);
    let owner = name_owner(&sb).expect("the agent owns the name");

    assert_access_denied(&request_name(&sb, true));
    assert_eq!(name_owner(&sb).as_ref(), Some(&owner), "the owner changed");

    // Reads need no privilege: GetStatus and a property, as nobody, from the real agent.
    let status = call(&sb, true, NAME, PATH, "org.ssu.Agent1.GetStatus", &[]);
    assert!(status.status.success(), "{}", text(&status));
    let reply = String::from_utf8_lossy(&status.stdout);
    assert!(
        reply.contains("'SecurityPatchLevel': <'2026-09-01'>"),
        "{reply}"
    );
    assert!(reply.contains("'Model': <'Sandbox Gateway'>"), "{reply}");

    let property = call(
        &sb,
        true,
        NAME,
        PATH,
        "org.freedesktop.DBus.Properties.Get",
        &[NAME, "InstalledVersion"],
    );
    assert!(property.status.success(), "{}", text(&property));
    assert_eq!(
        String::from_utf8_lossy(&property.stdout).trim(),
        "(<'1.0.0'>,)"
    );
    assert_eq!(name_owner(&sb), Some(owner));
}
