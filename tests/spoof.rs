//! Spoofed signals from another local user (issue 16): a process running as nobody sends the
//! agent signals that look like RAUC's, ModemManager's and NetworkManager's — addressed to the
//! agent itself, which the bus delivers whatever the agent's match rules say. The agent must
//! believe only the current owner of each service's name (`buswatch::OwnedSignals`).
//!
//! The spoofer is `gdbus emit` (or dbus-python) run through `setpriv` as nobody (uid/gid 65534,
//! no groups). A forged polkit *reply* is the last test: dbus-daemon refuses it.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::time::Duration;

use common::device::{Device, WAIT};
use common::{Options, Sandbox};

const NOBODY: &str = "65534";
/// How long the agent is given to act on a spoofed signal before the test concludes it did not:
/// it acts on a real RAUC `Completed` within milliseconds.
const GRACE: Duration = Duration::from_secs(3);

/// Lets nobody reach the sandbox's bus socket: a real system bus lives in a directory everyone
/// may traverse (/run/dbus). Traverse only: nobody needs to list it.
fn open_bus_to_others(sb: &Sandbox) {
    fs::set_permissions(sb.dir(), fs::Permissions::from_mode(0o711)).unwrap();
}

/// `gdbus emit` of `signal` on `path` as nobody, addressed to the agent; `args` are GVariant
/// texts. Asserts that gdbus sent it.
fn spoof(sb: &Sandbox, path: &str, signal: &str, args: &[&str]) {
    // gdbus emit addresses unique names only: the agent's, as the bus knows it.
    let owner = sb.busctl(&[
        "call",
        "org.freedesktop.DBus",
        "/org/freedesktop/DBus",
        "org.freedesktop.DBus",
        "GetNameOwner",
        "s",
        "org.ssu.Agent1",
    ]);
    assert!(owner.status.success(), "{owner:?}");
    let agent = common::busctl_value(&owner.stdout);
    let out = sb
        .command("setpriv")
        .args([
            &format!("--reuid={NOBODY}"),
            &format!("--regid={NOBODY}"),
            "--clear-groups",
            "gdbus",
            "emit",
            "--system",
            "--dest",
            &agent,
            "--object-path",
            path,
            "--signal",
            signal,
        ])
        .args(args)
        .current_dir("/")
        .output()
        .expect("run gdbus emit");
    assert!(out.status.success(), "spoofing {signal} failed: {out:?}");
}

/// As nobody, on one connection: announce that connection as the new owner of RAUC's name (a
/// forged `NameOwnerChanged`, "from the bus"), then send `Completed(0)` from it — all addressed
/// to the agent. Only the bus daemon's own `NameOwnerChanged` may move the agent's idea of
/// RAUC's owner.
fn spoof_rauc_owner_then_completed(sb: &Sandbox) {
    const SPOOFER: &str = r#"
import sys, dbus, dbus.lowlevel as ll
bus = dbus.SystemBus()
agent = bus.get_name_owner("org.ssu.Agent1")
me = bus.get_unique_name()
owner = ll.SignalMessage("/org/freedesktop/DBus", "org.freedesktop.DBus", "NameOwnerChanged")
owner.append("de.pengutronix.rauc", "", me, signature="sss")
done = ll.SignalMessage("/", "de.pengutronix.rauc.Installer", "Completed")
done.append(0, signature="i")
for msg in (owner, done):
    msg.set_destination(agent)
    bus.send_message(msg)
bus.flush()
"#;
    let out = sb
        .command("setpriv")
        .args([
            &format!("--reuid={NOBODY}"),
            &format!("--regid={NOBODY}"),
            "--clear-groups",
            "/usr/bin/python3",
            "-c",
            SPOOFER,
        ])
        .current_dir("/")
        .output()
        .expect("run python3");
    assert!(out.status.success(), "the spoofer failed: {out:?}");
}

fn signal_process(pid: u32, signal: &str) {
    let status = Command::new("kill")
        .args([signal, &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill {signal} {pid}");
}

/// Holds RAUC mid-installation: the sandbox's bootloader backend waits in `set-primary` (after
/// the slot is written, before the installation completes) while DIR/boot/hold exists.
fn hold_rauc_before_set_primary(sb: &Sandbox) {
    let script = sb.dir().join("rauc/bootloader.sh");
    let text = fs::read_to_string(&script).unwrap();
    let held = text.replacen(
        "    set-primary) ",
        "    set-primary) while [ -e \"$B/hold\" ]; do sleep 0.1; done; ",
        1,
    );
    assert_ne!(held, text, "the bootloader script has no set-primary case");
    fs::write(sb.dir().join("boot/hold"), "").unwrap();
    fs::write(&script, held).unwrap();
}

#[test]
fn a_spoofed_rauc_completed_does_not_end_an_installation_rauc_has_not_finished() {
    let d = Device::new("");
    open_bus_to_others(&d.sb);
    hold_rauc_before_set_primary(&d.sb);
    d.sb.start("agent");
    d.publish_security_update();
    let monitor = d.monitor();
    d.check();

    // RAUC is mid-installation: it has asked the bootloader to switch, which is held. Freeze it
    // outright too, so nothing RAUC sends can explain what the agent does next.
    d.sb.wait_for("RAUC to reach set-primary", WAIT, || {
        fs::read_to_string(d.sb.dir().join("boot/calls.log"))
            .is_ok_and(|log| log.contains("set-primary"))
    });
    let rauc = d.sb.pid("rauc").expect("rauc pid");
    signal_process(rauc, "-STOP");
    assert_eq!(d.status()["State"], "installing");

    // "Installation finished, success" — from nobody, addressed to the agent and broadcast.
    spoof(
        &d.sb,
        "/",
        "de.pengutronix.rauc.Installer.Completed",
        &["0"],
    );
    spoof(
        &d.sb,
        "/",
        "org.freedesktop.DBus.Properties.PropertiesChanged",
        &[
            "'de.pengutronix.rauc.Installer'",
            "{'Operation': <'idle'>, 'Progress': <(100, 'Installing done.', 1)>}",
            "@as []",
        ],
    );
    spoof_rauc_owner_then_completed(&d.sb);
    std::thread::sleep(GRACE);
    let st = d.status();
    assert_eq!(st["State"], "installing", "{st:#}\n{}", d.sb.agent_log());
    let seen = monitor.text();
    assert!(!seen.contains("<'reboot-required'>"), "{seen}");

    // RAUC goes on and really finishes: now the agent moves on, having installed once.
    signal_process(rauc, "-CONT");
    fs::remove_file(d.sb.dir().join("boot/hold")).unwrap();
    d.wait_state("reboot-required");
    assert_eq!(d.installs_into_b(), 1);
    let seen = monitor.finish();
    assert_eq!(seen.matches("<'reboot-required'>").count(), 1, "{seen}");
}

/// A sandbox with the dbusmock ModemManager and NetworkManager, the agent, and the bus open to
/// nobody.
fn cellular_sandbox() -> Sandbox {
    let sb = Sandbox::up_with(Options {
        network: true,
        ..Options::default()
    });
    open_bus_to_others(&sb);
    sb
}

fn status(sb: &Sandbox) -> serde_json::Value {
    let out = sb.ssuctl(&["status", "--json"]);
    assert!(out.status.success(), "{out:?}");
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn a_spoofed_sim_change_changes_nothing() {
    let sb = cellular_sandbox();
    let mut before = serde_json::Value::Null;
    sb.wait_for("the SIM", WAIT, || {
        before = status(&sb);
        before["Subscription"]["home_mcc_mnc"].as_str().is_some()
            && before["Components"]["modemmanager"] == "running"
    });
    let monitor = sb.monitor_agent();

    // The SIM and the modem "go away", then a SIM of another operator "arrives".
    let modem = "/org/freedesktop/ModemManager1/Modems/8";
    spoof(
        &sb,
        "/org/freedesktop/ModemManager1",
        "org.freedesktop.DBus.ObjectManager.InterfacesRemoved",
        &[
            &format!("objectpath '{modem}'"),
            "['org.freedesktop.ModemManager1.Modem']",
        ],
    );
    spoof(
        &sb,
        "/org/freedesktop/ModemManager1/SIM/2",
        "org.freedesktop.DBus.Properties.PropertiesChanged",
        &[
            "'org.freedesktop.ModemManager1.Sim'",
            "{'OperatorIdentifier': <'99999'>, 'OperatorName': <'Spoofed'>, \
             'Imsi': <'999990000000001'>}",
            "@as []",
        ],
    );
    std::thread::sleep(GRACE);
    let after = status(&sb);
    assert_eq!(after["Subscription"], before["Subscription"], "{after:#}");
    let seen = monitor.finish();
    assert!(!seen.contains("SubscriptionChanged"), "{seen}");
    assert!(!seen.contains("Spoofed"), "{seen}");
}

#[test]
fn a_spoofed_metered_link_defers_nothing() {
    // A non-critical update on an unmetered link (NetworkManager says Metered = no) installs;
    // nobody claiming "metered" must not defer it.
    let d = Device::new("");
    open_bus_to_others(&d.sb);
    d.sb.start("network");
    d.sb.start("agent");
    d.sb.wait_for("NetworkManager to be followed", WAIT, || {
        d.status()["Components"]["networkmanager"] == "running"
    });
    spoof(
        &d.sb,
        "/org/freedesktop/NetworkManager",
        "org.freedesktop.DBus.Properties.PropertiesChanged",
        &[
            "'org.freedesktop.NetworkManager'",
            "{'Metered': <uint32 1>}",
            "@as []",
        ],
    );
    let image = common::device::image(256 * 1024, 0x33);
    d.publish(
        "1.0.1",
        &image,
        &[
            "--kind",
            "security",
            "--base-version",
            "1.0",
            "--security-patch-level",
            "2026-11-01",
            "--cve",
            "CVE-2026-4243:medium:5.0:A medium issue",
            "--downtime",
            "90s",
        ],
    );
    d.check();
    let st = d.wait_state("reboot-required");
    assert_eq!(st["Available"]["version"], "1.0.1", "{st:#}");
    assert_eq!(d.installs_into_b(), 1);
}

/// As nobody: a method return addressed to the agent, answering its call number `serial`
/// with polkit's "authorized" (`(bba{ss})` = (true, false, {})), as if polkit had sent it.
fn spoof_polkit_reply(sb: &Sandbox, serial: u32) -> std::process::Output {
    // GDBus: dbus-python 1.3's Message.set_reply_serial smashes its own stack.
    const SPOOFER: &str = r#"
import sys
import gi
gi.require_version("Gio", "2.0")
from gi.repository import Gio, GLib
bus = Gio.bus_get_sync(Gio.BusType.SYSTEM, None)
agent = bus.call_sync("org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus",
                      "GetNameOwner", GLib.Variant("(s)", ("org.ssu.Agent1",)),
                      GLib.VariantType("(s)"), Gio.DBusCallFlags.NONE, -1, None).unpack()[0]
reply = Gio.DBusMessage.new()
reply.set_message_type(Gio.DBusMessageType.METHOD_RETURN)
reply.set_destination(agent)
reply.set_reply_serial(int(sys.argv[1]))
reply.set_body(GLib.Variant("((bba{ss}))", ((True, False, {}),)))
bus.send_message(reply, Gio.DBusSendMessageFlags.NONE)
bus.flush_sync(None)
print(bus.get_unique_name())
"#;
    sb.command("setpriv")
        .args([
            &format!("--reuid={NOBODY}"),
            &format!("--regid={NOBODY}"),
            "--clear-groups",
        ])
        .arg(common::venv_python())
        .args(["-c", SPOOFER, &serial.to_string()])
        .current_dir("/")
        .output()
        .expect("run the spoofer")
}

/// What a forged-answer test runs: the sandbox (bus open to nobody), dbusmock's polkitd
/// (authorizes nothing unless told) and a monitor of the whole bus writing to `wire`.
struct PolkitScene {
    sb: Sandbox,
    polkit: std::process::Child,
    monitor: std::process::Child,
    wire: std::path::PathBuf,
}

impl PolkitScene {
    fn up() -> PolkitScene {
        let sb = Sandbox::up_with(Options {
            rauc: false,
            modem: false,
            ..Options::default()
        });
        open_bus_to_others(&sb);
        let polkit = sb
            .command(common::venv_python())
            .args(["-m", "dbusmock", "--system", "--template", "polkitd"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        sb.wait_for("polkit on the bus", WAIT, || {
            sb.busctl(&["status", "org.freedesktop.PolicyKit1"])
                .status
                .success()
        });
        let wire = sb.dir().join("wire.log");
        let monitor = sb
            .command("dbus-monitor")
            .arg("--address")
            .arg(sb.bus_address())
            .stdout(fs::File::create(&wire).unwrap())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        sb.wait_for("the monitor", WAIT, || {
            fs::read_to_string(&wire).is_ok_and(|w| w.contains("NameAcquired"))
        });
        PolkitScene {
            sb,
            polkit,
            monitor,
            wire,
        }
    }

    fn wire(&self) -> String {
        fs::read_to_string(&self.wire).unwrap_or_default()
    }

    /// With polkit frozen, nobody calls `SetAutoInstall(false)`; returns that call (gdbus) and
    /// the serial of the agent's `CheckAuthorization` for it, read off the wire.
    fn nobody_calls_while_polkit_is_frozen(&self) -> (std::process::Child, u32) {
        signal_process(self.polkit.id(), "-STOP");
        let call = self
            .sb
            .command("setpriv")
            .args([
                &format!("--reuid={NOBODY}"),
                &format!("--regid={NOBODY}"),
                "--clear-groups",
                "gdbus",
                "call",
                "--system",
                "--dest",
                "org.ssu.Agent1",
                "--object-path",
                "/org/ssu/Agent1",
                "--method",
                "org.ssu.Agent1.SetAutoInstall",
                "false",
            ])
            .current_dir("/")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut serial = None;
        self.sb.wait_for("the agent asking polkit", WAIT, || {
            serial = self
                .wire()
                .lines()
                .filter(|l| l.contains("member=CheckAuthorization"))
                .find_map(|l| l.split_whitespace().find_map(|f| f.strip_prefix("serial=")))
                .and_then(|s| s.parse::<u32>().ok());
            serial.is_some()
        });
        (call, serial.unwrap())
    }

    /// Forges polkit's "authorized" for call `serial`; returns the forger's unique name.
    fn forge(&self, serial: u32) -> String {
        let out = spoof_polkit_reply(&self.sb, serial);
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }
}

impl Drop for PolkitScene {
    fn drop(&mut self) {
        signal_process(self.polkit.id(), "-CONT");
        for child in [&mut self.monitor, &mut self.polkit] {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn text_of(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The agent acts on no logind or polkit *signal* (it takes no inhibitor locks and follows no
/// `PrepareForShutdown`); polkit is asked with a method call, and only its reply counts. zbus
/// hands a reply to the pending call its reply serial names, whoever sent it — and another
/// user can read that serial off the wire's order. On the system bus, dbus-daemon is what
/// stops a forged one: its policy lets a method return or error through only as the answer to
/// a call the recipient made to that sender (`send_requested_reply`). This test forges
/// polkit's "authorized" for the very call the agent is waiting on, from nobody, and watches
/// the bus refuse it.
#[test]
fn a_forged_polkit_answer_from_another_user_is_refused_by_the_bus() {
    let scene = PolkitScene::up();
    let (call, serial) = scene.nobody_calls_while_polkit_is_frozen();
    let forger = scene.forge(serial);
    scene
        .sb
        .wait_for("the bus to refuse the forged reply", WAIT, || {
            scene.wire().lines().any(|l| {
                l.starts_with("error ")
                    && l.contains("sender=org.freedesktop.DBus")
                    && l.contains(&format!("destination={forger}"))
                    && l.contains("error_name=org.freedesktop.DBus.Error.AccessDenied")
            })
        });
    let w = scene.wire();
    assert!(w.contains("requested_reply=\"0\""), "{w}");

    // polkit answers for real: refused; nothing changed.
    signal_process(scene.polkit.id(), "-CONT");
    let out = call.wait_with_output().unwrap();
    assert!(!out.status.success(), "{}", text_of(&out));
    assert!(
        text_of(&out).contains("org.ssu.Agent1.Error.NotAuthorized"),
        "{}",
        text_of(&out)
    );
    assert_eq!(status(&scene.sb)["AutoInstall"], true);
}

/// The same forgery on a bus whose policy lets unrequested replies through (a misconfigured
/// system bus): the bus delivers it, zbus takes it for polkit's answer — and the agent refuses
/// it, because it did not come from polkit's current owner (`auth::from_polkit`).
#[test]
fn a_forged_polkit_answer_that_the_bus_delivers_authorizes_nothing() {
    let scene = PolkitScene::up();
    // Loosen the policy: any method return may be sent and received.
    let conf = scene.sb.dir().join("bus/system.conf");
    let text = fs::read_to_string(&conf).unwrap();
    let loose = text
        .replace(
            r#"<allow send_requested_reply="true" send_type="method_return"/>"#,
            r#"<allow send_requested_reply="false" send_type="method_return"/>"#,
        )
        .replace(
            r#"<allow receive_type="method_return"/>"#,
            r#"<allow receive_requested_reply="false" receive_type="method_return"/>"#,
        );
    assert_ne!(loose, text);
    fs::write(&conf, loose).unwrap();
    let out = scene.sb.busctl(&[
        "call",
        "org.freedesktop.DBus",
        "/org/freedesktop/DBus",
        "org.freedesktop.DBus",
        "ReloadConfig",
    ]);
    assert!(out.status.success(), "{out:?}");

    let (call, serial) = scene.nobody_calls_while_polkit_is_frozen();
    let forger = scene.forge(serial);
    // Delivered this time: nobody's call is answered at once, while polkit is still frozen.
    let out = call.wait_with_output().unwrap();
    let said = text_of(&out);
    assert!(!out.status.success(), "{said}");
    assert!(
        said.contains("org.ssu.Agent1.Error.NotAuthorized")
            && said.contains("did not come from polkit"),
        "{said}"
    );
    let w = scene.wire();
    assert!(
        w.lines()
            .any(|l| l.starts_with("method return") && l.contains(&format!("sender={forger}"))),
        "the bus delivered the forged reply: {w}"
    );
    assert_eq!(status(&scene.sb)["AutoInstall"], true);
    assert!(
        scene.sb.agent_log().contains("did not come from polkit"),
        "the journal says it"
    );
}
