//! The agent on the sandbox device: real dbus-daemon, real `rauc service`, dbusmock
//! ModemManager, and real clients (`busctl`, `gdbus`, `ssuctl`).

mod common;

use std::collections::BTreeMap;
use std::io::Read;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{Options, Sandbox, process_alive, repo_root};

const WAIT: Duration = Duration::from_secs(20);

/// A sandbox with the bus alone: no agent, RAUC or ModemManager.
fn bus_only() -> Sandbox {
    Sandbox::up_with(Options {
        agent: false,
        rauc: false,
        modem: false,
        ..Options::default()
    })
}

fn status_json(sb: &Sandbox) -> serde_json::Value {
    let out = sb.ssuctl(&["status", "--json"]);
    assert!(out.status.success(), "ssuctl status --json: {out:?}");
    serde_json::from_slice(&out.stdout).expect("ssuctl prints JSON")
}

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn owns_the_name_and_real_clients_read_the_properties() {
    let sb = Sandbox::up();

    assert_eq!(sb.agent_property("SecurityPatchLevel"), "2026-09-01");
    assert_eq!(sb.agent_property("InstalledVersion"), "1.0.0");
    assert_eq!(sb.agent_property("Model"), "Sandbox Gateway");
    assert_eq!(sb.agent_property("Staleness"), "unverified");

    // gdbus (GLib) reads the same through the standard Properties interface.
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
            "org.freedesktop.DBus.Properties.Get",
            "org.ssu.Agent1",
            "HardwareId",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(stdout(&out).trim(), "(<'sandbox-gw-1'>,)");

    // GetStatus carries every property with the same values as Get.
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
            "org.ssu.Agent1.GetStatus",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let text = stdout(&out);
    assert!(
        text.contains("'SecurityPatchLevel': <'2026-09-01'>"),
        "{text}"
    );
    assert!(text.contains("'Compatible': <'ssu-sandbox'>"), "{text}");
}

#[test]
fn ssuctl_shows_rauc_boot_slot_compatible_and_patch_level() {
    let sb = Sandbox::up();
    sb.wait_for("RAUC data in the status", WAIT, || {
        sb.agent_property("BootSlot") == "A"
    });

    let out = sb.ssuctl(&["status"]);
    assert!(out.status.success(), "{out:?}");
    let text = stdout(&out);
    for want in [
        "Security patch level: 1 September 2026\n",
        "Applied on:           factory image\n",
        "Installed version:    1.0.0\n",
        "Update state:         idle\n",
        "Compatible:           ssu-sandbox\n",
        "Booted slot:          A\n",
        "Sandbox Telecom (26201), SIM …1234",
        "  rootfs.0     A   booted",
        "  rootfs.1     B   inactive",
    ] {
        assert!(text.contains(want), "missing {want:?} in\n{text}");
    }
    // The ICCID never leaves the agent whole.
    assert!(!text.contains("8949000000000001234"), "{text}");

    let j = status_json(&sb);
    assert_eq!(j["Compatible"], "ssu-sandbox");
    assert_eq!(j["BootSlot"], "A");
    assert_eq!(j["Slots"].as_array().map(Vec::len), Some(2));
    // ETSI 5.3-1: which slot holds what — the class names the image kind.
    for slot in j["Slots"].as_array().unwrap() {
        assert_eq!(slot["class"], "rootfs", "{slot}");
    }
    assert_eq!(j["Components"]["rauc"], "running");
    assert_eq!(j["Subscription"]["home_mcc_mnc"], "26201");

    let out = sb.ssuctl(&["history"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(stdout(&out), "No updates recorded yet.\n");
    let out = sb.ssuctl(&["history", "--json"]);
    assert_eq!(stdout(&out).trim(), "[]");
}

#[test]
fn check_is_recorded_honestly_and_announced_with_properties_changed() {
    let sb = Sandbox::up();
    // A real client watching for the signal while the check runs.
    let monitor = sb.monitor_agent();

    let out = sb.ssuctl(&["check"]);
    // The check ran, and verified nothing: exit 4.
    assert_eq!(out.status.code(), Some(4), "{out:?}");
    let text = stdout(&out);
    assert!(text.contains("no update source configured"), "{text}");
    assert!(text.contains("unverified"), "{text}");
    assert_eq!(
        sb.agent_property("LastCheckResult"),
        "no update source configured"
    );
    assert_ne!(sb.agent_property("LastCheck"), "0");
    // Never "up to date" without verified metadata.
    assert_eq!(sb.agent_property("Staleness"), "unverified");

    let seen = monitor.wait_for_text("LastCheck", Duration::from_secs(10));
    assert!(
        seen.contains("org.freedesktop.DBus.Properties.PropertiesChanged")
            && seen.contains("'LastCheckResult': <'no update source configured'>"),
        "{seen}"
    );
}

#[test]
fn introspection_matches_the_shipped_xml() {
    let sb = Sandbox::up();
    let out = sb.busctl(&[
        "call",
        "org.ssu.Agent1",
        "/org/ssu/Agent1",
        "org.freedesktop.DBus.Introspectable",
        "Introspect",
        "--json=short",
    ]);
    assert!(out.status.success(), "{out:?}");
    let reply: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let served = reply["data"][0].as_str().unwrap();
    let shipped = std::fs::read_to_string(repo_root().join("dbus/org.ssu.Agent1.xml")).unwrap();
    assert_eq!(
        describe_interface(served),
        describe_interface(&shipped),
        "the served interface differs from dbus/org.ssu.Agent1.xml"
    );
    // The standard Properties interface (the agent's own, see src/dbus/properties.rs) is
    // described as the specification has it.
    let node = zbus_xml::Node::try_from(served).unwrap();
    let props = node
        .interfaces()
        .iter()
        .find(|i| i.name().as_str() == "org.freedesktop.DBus.Properties")
        .expect("Properties is described");
    let mut members: Vec<String> = props.methods().map(|m| m.name().to_string()).collect();
    members.extend(props.signals().map(|s| s.name().to_string()));
    members.sort();
    assert_eq!(members, ["Get", "GetAll", "PropertiesChanged", "Set"]);
}

/// The parts of `org.ssu.Agent1` that form the contract: members, argument names, types,
/// directions and property access. Comments and annotations are not part of it.
fn describe_interface(xml: &str) -> BTreeMap<String, String> {
    let node = zbus_xml::Node::try_from(xml).expect("valid introspection XML");
    let iface = node
        .interfaces()
        .iter()
        .find(|i| i.name().as_str() == "org.ssu.Agent1")
        .expect("org.ssu.Agent1 is described");
    let mut out = BTreeMap::new();
    let args = |args: &[zbus_xml::Arg]| {
        args.iter()
            .map(|a| format!("{}:{}:{:?}", a.name().unwrap_or("-"), a.ty(), a.direction()))
            .collect::<Vec<_>>()
            .join(", ")
    };
    for m in iface.methods() {
        out.insert(format!("method {}", m.name()), args(m.args()));
    }
    for s in iface.signals() {
        out.insert(format!("signal {}", s.name()), args(s.args()));
    }
    for p in iface.properties() {
        out.insert(
            format!("property {}", p.name()),
            format!("{}:{:?}", p.ty(), p.access()),
        );
    }
    out
}

#[test]
fn rauc_and_modemmanager_outages_leave_the_agent_up_and_it_recovers() {
    let sb = Sandbox::up();
    let agent = sb.pid("agent").expect("agent pid");
    sb.wait_for("RAUC running", WAIT, || {
        status_json(&sb)["Components"]["rauc"] == "running"
    });

    sb.stop("rauc");
    sb.wait_for("RAUC shown unavailable", WAIT, || {
        let j = status_json(&sb);
        j["Components"]["rauc"] == "unavailable" && j["BootSlot"] == "" && j["Compatible"] == ""
    });
    let text = stdout(&sb.ssuctl(&["status"]));
    assert!(text.contains("Booted slot:          unknown"), "{text}");
    assert!(text.contains("rauc unavailable"), "{text}");

    sb.stop("modem");
    sb.wait_for("ModemManager shown unavailable", WAIT, || {
        status_json(&sb)["Subscription"]["modem"] == "unavailable"
    });
    assert!(process_alive(agent), "the agent died: {}", sb.agent_log());

    sb.start("rauc");
    sb.start("modem");
    sb.wait_for("both back", WAIT, || {
        let j = status_json(&sb);
        j["BootSlot"] == "A"
            && j["Compatible"] == "ssu-sandbox"
            && j["Subscription"]["home_mcc_mnc"] == "26201"
    });
    assert_eq!(sb.pid("agent"), Some(agent), "the agent was not restarted");
}

#[test]
fn agent_starting_without_rauc_or_modemmanager_shows_them_unknown_then_recovers() {
    let sb = Sandbox::up_with(Options {
        rauc: false,
        modem: false,
        ..Options::default()
    });
    sb.wait_for("both unavailable", WAIT, || {
        let j = status_json(&sb);
        j["Components"]["rauc"] == "unavailable" && j["Subscription"]["modem"] == "unavailable"
    });
    let text = stdout(&sb.ssuctl(&["status"]));
    assert!(text.contains("Compatible:           unknown"), "{text}");
    assert!(
        text.contains("Mobile network:       ModemManager not running"),
        "{text}"
    );

    sb.start("rauc");
    sb.start("modem");
    sb.wait_for("both running", WAIT, || {
        let j = status_json(&sb);
        j["Compatible"] == "ssu-sandbox" && j["Subscription"]["operator_name"] == "Sandbox Telecom"
    });
}

#[test]
fn ssuctl_says_clearly_when_the_agent_is_not_running() {
    let sb = bus_only();
    for cmd in [
        &["status"][..],
        &["history"],
        &["check"],
        &["status", "--json"],
    ] {
        let out = sb.ssuctl(cmd);
        assert_eq!(out.status.code(), Some(3), "{cmd:?}: {out:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("ssu-agent is not running"), "{err}");
        assert!(out.stdout.is_empty());
    }

    // No bus at all.
    let out = Command::new(env!("CARGO_BIN_EXE_ssuctl"))
        .arg("status")
        .env("DBUS_SYSTEM_BUS_ADDRESS", "unix:path=/nonexistent/socket")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot connect to the system bus"));
}

/// An agent this test starts itself (to see its exit status and its notifications).
struct OwnAgent {
    child: Child,
    notify: UnixDatagram,
}

fn write_config(sb: &Sandbox) -> PathBuf {
    let dir = sb.dir().join("own");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("agent.toml");
    std::fs::write(
        &path,
        format!(
            "[agent]\nstate_dir = \"{}\"\n[device]\nmodel = \"Own\"\nversion = \"1.0.0\"\n\
             security_patch_level = \"2026-10-01\"\n",
            dir.join("state").display()
        ),
    )
    .unwrap();
    path
}

fn spawn_agent(sb: &Sandbox, config: &Path, watchdog_usec: Option<u64>) -> OwnAgent {
    let socket = sb.dir().join(format!(
        "notify-{}.sock",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    let notify = UnixDatagram::bind(&socket).unwrap();
    notify
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut cmd = sb.command(env!("CARGO_BIN_EXE_ssu-agent"));
    cmd.arg("--config")
        .arg(config)
        .env("NOTIFY_SOCKET", &socket)
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    if let Some(usec) = watchdog_usec {
        cmd.env("WATCHDOG_USEC", usec.to_string());
    }
    OwnAgent {
        child: cmd.spawn().unwrap(),
        notify,
    }
}

impl OwnAgent {
    fn next_notification(&self) -> String {
        let mut buf = [0u8; 4096];
        let n = self.notify.recv(&mut buf).expect("a notification");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }

    fn sigterm(&self) {
        let ok = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok);
    }
}

#[test]
fn notifies_systemd_ready_and_watchdog_and_exits_cleanly_on_sigterm() {
    let sb = Sandbox::up_with(Options {
        agent: false,
        ..Options::default()
    });
    let config = write_config(&sb);
    let mut agent = spawn_agent(&sb, &config, Some(400_000));

    let ready = agent.next_notification();
    assert!(ready.contains("READY=1"), "{ready}");
    assert!(
        ready.contains("STATUS=idle; security patch level 2026-10-01"),
        "{ready}"
    );
    // READY comes after the name is owned: a client can talk to the agent right away.
    assert_eq!(sb.agent_property("Model"), "Own");

    let mut saw_watchdog = false;
    for _ in 0..20 {
        if agent.next_notification().contains("WATCHDOG=1") {
            saw_watchdog = true;
            break;
        }
    }
    assert!(saw_watchdog, "no WATCHDOG=1 although WATCHDOG_USEC was set");

    agent.sigterm();
    let status = agent.child.wait().unwrap();
    let mut err = String::new();
    agent
        .child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(status.success(), "exit {status}: {err}");
    assert!(err.contains("SIGTERM: stopping"), "{err}");
    // The name is released with the process.
    let out = sb.busctl(&["status", "org.ssu.Agent1"]);
    assert!(!out.status.success(), "org.ssu.Agent1 still owned");
}

#[test]
fn sigterm_right_after_startup_still_exits_cleanly() {
    // The handlers are installed before the agent takes its name, so a `systemctl stop`
    // during boot takes the clean path too.
    let sb = bus_only();
    let config = write_config(&sb);
    for _ in 0..10 {
        let mut agent = spawn_agent(&sb, &config, None);
        let ready = agent.next_notification();
        assert!(ready.contains("READY=1"), "{ready}");
        agent.sigterm();
        let status = agent.child.wait().unwrap();
        assert!(status.success(), "exit {status}");
    }
}

/// Starts an agent of its own on `config`, waits until it is ready on the bus, stops it and
/// returns its log (stderr).
fn run_until_ready(sb: &Sandbox, config: &Path) -> String {
    let mut agent = spawn_agent(sb, config, None);
    let ready = agent.next_notification();
    assert!(ready.contains("READY=1"), "{ready}");
    // Ready means on the bus: clients reach it.
    assert_eq!(sb.agent_property("Model"), "Own");
    agent.sigterm();
    let status = agent.child.wait().unwrap();
    let mut err = String::new();
    agent
        .child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(status.success(), "exit {status}: {err}");
    err
}

/// The files beside the database whose names say they were moved aside, with their bytes.
fn moved_aside(db: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<(String, Vec<u8>)> = std::fs::read_dir(db.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_name().to_string_lossy().contains(".unusable-"))
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect();
    out.sort();
    out
}

#[test]
fn a_corrupt_or_incompatible_database_is_moved_aside_and_the_agent_starts_afresh() {
    let sb = bus_only();
    let config = write_config(&sb);
    let db = sb.dir().join("own/state/agent.db");
    std::fs::create_dir_all(db.parent().unwrap()).unwrap();

    // Corrupt: a file that is not a database. Kept as it was, under another name.
    let garbage: Vec<u8> = (0..64 * 1024u32).map(|i| (i * 7919 % 251) as u8).collect();
    std::fs::write(&db, &garbage).unwrap();
    let monitor = sb.monitor_signal("StoreRecovered");
    let err = run_until_ready(&sb, &config);
    assert!(err.contains("store recovered"), "{err}");
    assert!(err.contains("not an SQLite database"), "{err}");
    let seen = monitor.wait_for_text("not an SQLite database", WAIT);
    assert!(seen.contains("member=StoreRecovered"), "{seen}");
    assert!(seen.contains("not an SQLite database"), "{seen}");
    let kept = moved_aside(&db);
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert_eq!(kept[0].1, garbage, "the corrupt file was modified");
    let conn = rusqlite::Connection::open(&db).unwrap();
    let (action, detail): (String, String) = conn
        .query_row("SELECT action, detail FROM history", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap();
    assert_eq!(action, "store-recovered");
    assert!(detail.contains(&kept[0].0), "{detail}");
    drop(conn);

    // A newer agent's database that admits only agents of its own version (99).
    std::fs::remove_file(&db).unwrap();
    let conn = rusqlite::Connection::open(&db).unwrap();
    conn.execute_batch("CREATE TABLE future(x); PRAGMA user_version = 99;")
        .unwrap();
    drop(conn);
    let before = std::fs::read(&db).unwrap();
    let err = run_until_ready(&sb, &config);
    assert!(err.contains("schema version 99"), "{err}");
    let kept = moved_aside(&db);
    assert_eq!(kept.len(), 2, "{kept:?}");
    assert!(
        kept.iter().any(|(_, bytes)| *bytes == before),
        "the newer database was modified"
    );

    // A newer agent's database that admits this one (version 5, readable from 1): used as
    // it is, never moved, migrated or marked down.
    std::fs::remove_file(&db).unwrap();
    run_until_ready(&sb, &config);
    let conn = rusqlite::Connection::open(&db).unwrap();
    conn.execute_batch(
        "CREATE TABLE later(x); ALTER TABLE history ADD COLUMN later_note TEXT;
         PRAGMA user_version = 65541;",
    )
    .unwrap();
    drop(conn);
    let err = run_until_ready(&sb, &config);
    assert!(!err.contains("store recovered"), "{err}");
    assert!(err.contains("declares itself compatible"), "{err}");
    assert_eq!(moved_aside(&db).len(), 2);
    let conn = rusqlite::Connection::open(&db).unwrap();
    let version: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap();
    assert_eq!(version, 0x1_0005);
}
