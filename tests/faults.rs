//! Bad luck and local adversaries on the sandbox device (issue 16): a full disk under the
//! store or the metadata cache during `CheckNow`, RAUC frozen mid-installation or before the
//! agent asks it anything, an `Inhibit` flood and a flood of refused calls from an
//! unprivileged user, an agent that does not answer `ssuctl`.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::device::*;
use common::{Options, Sandbox, venv_python};

/// A tmpfs mounted for a test; unmounted (lazily: the agent may still hold files) on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, size: &str) -> Tmpfs {
        fs::create_dir_all(at).unwrap();
        run(Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(at));
        Tmpfs(at.to_owned())
    }

    /// Fills the file system to the last byte with `fill`.
    fn fill(&self) {
        let out = Command::new("dd")
            .args(["if=/dev/zero", "bs=4096"])
            .arg(format!("of={}", self.0.join("fill").display()))
            .output()
            .unwrap();
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("No space left"),
            "{out:?}"
        );
    }

    fn free(&self) {
        fs::remove_file(self.0.join("fill")).unwrap();
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn text(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

// ---- a full disk under the store ----------------------------------------------------------

#[test]
fn check_now_with_a_full_store_answers_with_the_error_within_a_second() {
    let d = Device::new("");
    // The store's directory on a small file system of its own. tough's metadata cache lives
    // beside it (state/tuf): kept on the roomy disk, so that it is the store that is full.
    let state = d.sb.dir().join("state");
    let disk = Tmpfs::mount(&state, "2m");
    let tuf = d.sb.dir().join("tuf-cache");
    fs::create_dir_all(&tuf).unwrap();
    std::os::unix::fs::symlink(&tuf, state.join("tuf")).unwrap();
    d.sb.start("agent");
    let out = d.sb.ssuctl(&["check"]);
    assert!(out.status.success(), "{}", text(&out));

    disk.fill();
    d.publish_security_update();
    let started = Instant::now();
    let out = d.sb.ssuctl(&["check"]);
    let took = started.elapsed();
    let said = text(&out);
    assert!(
        took < Duration::from_secs(1),
        "answered after {took:?}: {said}"
    );
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(
        // SQLite's words, or the floors copy's (written first when a floor moves).
        (said.contains("database or disk is full") || said.contains("No space left on device"))
            && said.contains("Error.Internal"),
        "{said}"
    );
    let st = d.status();
    assert!(
        st["LastCheckResult"]
            .as_str()
            .unwrap()
            .starts_with("metadata verified but could not be recorded"),
        "{st:#}"
    );
    assert_eq!(st["LastCheckVerified"], false);
    assert_eq!(st["State"], "failed");
    let last_error = st["LastError"].as_str().unwrap();
    assert!(
        last_error.contains("database or disk is full")
            || last_error.contains("No space left on device"),
        "{st:#}"
    );
    assert_eq!(
        d.installs_into_b(),
        0,
        "nothing acted on what was not recorded"
    );

    // Room again: the next check finds the update and goes on.
    disk.free();
    let out = d.sb.ssuctl(&["check"]);
    assert!(out.status.success(), "{}", text(&out));
    let st = d.status();
    assert_eq!(st["LastCheckVerified"], true, "{st:#}");
    assert!(
        st["LastCheckResult"]
            .as_str()
            .unwrap()
            .contains("security update 1.0.1"),
        "{st:#}"
    );
    d.wait_state("reboot-required");
}

// ---- a full disk under the metadata cache ------------------------------------------------

#[test]
fn a_full_disk_under_the_metadata_cache_is_said_as_such_and_refuses_nothing() {
    let d = Device::new("");
    // tough's metadata cache (state/tuf) on a small file system of its own, full before the
    // agent ever writes to it; the store stays on the roomy disk.
    let disk = Tmpfs::mount(&d.sb.dir().join("state/tuf"), "1m");
    disk.fill();
    d.publish_security_update();
    d.sb.start("agent");
    let out = d.sb.ssuctl(&["check"]);
    let said = text(&out);
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(
        said.contains("org.ssu.Agent1.Error.Storage")
            && said.contains("No space left on device")
            && said.contains("the disk is full: free space on it")
            && said.contains("hint: the device's disk, not the update"),
        "{said}"
    );
    assert!(!said.contains("did not verify"), "{said}");
    let st = d.status();
    let result = st["LastCheckResult"].as_str().unwrap();
    assert!(
        result.starts_with("could not check for updates:") && result.contains("the disk is full"),
        "{st:#}"
    );
    assert!(!result.contains("did not verify"), "{st:#}");
    assert_eq!(st["LastCheckVerified"], false);
    let h = d.history();
    assert!(h.iter().all(|e| e["action"] != "refused"), "{h:#?}");

    // Room again: the same update verifies and installs.
    disk.free();
    let out = d.sb.ssuctl(&["check"]);
    assert!(out.status.success(), "{}", text(&out));
    d.wait_state("reboot-required");
    let h = d.history();
    assert!(h.iter().all(|e| e["action"] != "refused"), "{h:#?}");
}

// ---- RAUC stopped before the agent asks it anything ---------------------------------------

#[test]
fn a_rauc_that_does_not_answer_the_watcher_is_reported_unavailable() {
    let sb = Sandbox::up_with(Options {
        agent: false,
        modem: false,
        ..Options::default()
    });
    // On the bus, but frozen: the agent's GetAll/GetSlotStatus are queued, never answered.
    let rauc = sb.pid("rauc").unwrap().to_string();
    run(Command::new("kill").args(["-STOP", &rauc]));
    let started = Instant::now();
    sb.start("agent");
    let mut components = serde_json::Value::Null;
    sb.wait_for("RAUC reported unavailable", Duration::from_secs(60), || {
        let out = sb.ssuctl(&["status", "--json"]);
        let st: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        components = st["Components"].clone();
        components["rauc"] == "unavailable"
    });
    let took = started.elapsed();
    run(Command::new("kill").args(["-CONT", &rauc]));
    // The watcher's limit (30 s), not an error RAUC sent.
    assert!(took >= Duration::from_secs(25), "{took:?} {components}");
    let log = sb.agent_log();
    assert!(
        log.contains("RAUC did not answer") && log.contains("no answer within 30 s"),
        "{log}"
    );
}

// ---- a flood of refused calls ------------------------------------------------------------

#[test]
fn a_thousand_refused_calls_from_nobody_leave_a_few_lines_in_the_journal() {
    let sb = Sandbox::up_with(Options {
        rauc: false,
        modem: false,
        ..Options::default()
    });
    // nobody must reach the bus socket (as under /run/dbus).
    fs::set_permissions(sb.dir(), fs::Permissions::from_mode(0o711)).unwrap();
    const FLOOD: &str = r#"
import dbus
bus = dbus.SystemBus()
agent = bus.get_object("org.ssu.Agent1", "/org/ssu/Agent1", introspect=False)
refused = 0
for _ in range(1000):
    try:
        agent.SetAutoInstall(False, dbus_interface="org.ssu.Agent1")
    except dbus.exceptions.DBusException as e:
        if e.get_dbus_name() == "org.ssu.Agent1.Error.NotAuthorized":
            refused += 1
print(refused)
"#;
    let out = sb
        .command("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(venv_python())
        .args(["-c", FLOOD])
        .current_dir("/")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "1000");
    let log = sb.agent_log();
    let count = |needle: &str| log.lines().filter(|l| l.contains(needle)).count();
    // The first 5 in full (per caller and kind, per minute); the rest are summed up in one
    // line once the minute has passed ("suppressed 995 refusals from uid 65534 …").
    assert_eq!(count("refused: not in the allowlist"), 5, "{log}");
    assert!(count("suppressed") <= 1, "{log}");
    // Once the minute has passed, the rest are summed up — by a timer, not the next refusal.
    sb.wait_for("the summary line", Duration::from_secs(90), || {
        sb.agent_log().contains(
            "suppressed 995 refusals from uid 65534 in the last minute \
             (org.ssu.agent.configure: not in the allowlist)",
        )
    });
    let log = sb.agent_log();
    let count = |needle: &str| log.lines().filter(|l| l.contains(needle)).count();
    assert_eq!(count("WARN suppressed"), 1, "{log}");
    assert_eq!(count("refused: not in the allowlist"), 5, "{log}");
}

// ---- ssuctl: exit codes and a timeout ----------------------------------------------------

#[test]
fn ssuctl_check_exits_4_when_nothing_verified_and_3_when_the_agent_does_not_answer() {
    let sb = Sandbox::up_with(Options {
        rauc: false,
        modem: false,
        ..Options::default()
    });
    // No update source: the check runs and cannot verify anything.
    let out = sb.ssuctl(&["check"]);
    assert_eq!(out.status.code(), Some(4), "{}", text(&out));
    assert!(text(&out).contains("could not verify"), "{}", text(&out));

    // A frozen agent: ssuctl gives up after its timeout instead of hanging.
    let agent = sb.pid("agent").unwrap().to_string();
    run(Command::new("kill").args(["-STOP", &agent]));
    let started = Instant::now();
    let out = sb.ssuctl(&["--timeout", "1s", "status"]);
    let took = started.elapsed();
    run(Command::new("kill").args(["-CONT", &agent]));
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(
        text(&out).contains("did not answer in time"),
        "{}",
        text(&out)
    );
    assert!(took < Duration::from_secs(5), "{took:?}");
    let out = sb.ssuctl(&["--timeout", "0s", "status"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
}

// ---- RAUC frozen mid-installation --------------------------------------------------------

#[test]
fn rauc_frozen_mid_install_fails_the_install_within_its_limit_and_the_next_check_retries() {
    // 5 s for each RAUC operation, nothing added for the (2 MiB) bundle's size.
    let d = Device::new("rauc_timeout = \"5s\"\ninstall_time_per_gib = \"0s\"\n");
    d.sb.start("agent");
    d.publish_security_update();
    fs::write(d.sb.dir().join("boot/freeze-rauc"), "").unwrap();
    let started = Instant::now();
    let out = d.sb.ssuctl(&["check"]);
    assert!(out.status.success(), "{}", text(&out));

    let mut st = serde_json::Value::Null;
    d.sb.wait_for("the installation to fail", WAIT, || {
        st = d.status();
        st["State"] == "failed"
    });
    let took = started.elapsed();
    assert!(
        !d.sb.dir().join("boot/freeze-rauc").exists(),
        "RAUC was frozen mid-installation"
    );
    assert!(
        took >= Duration::from_secs(5) && took < Duration::from_secs(20),
        "{took:?}"
    );
    let error = st["LastError"].as_str().unwrap();
    assert!(
        error.contains("RAUC stopped answering: the installation did not finish within 5s"),
        "{st:#}"
    );
    assert_eq!(st["Components"]["rauc"], "unavailable", "{st:#}");
    let h = d.history();
    assert_eq!(h[0]["action"], "failed", "{h:#?}");
    assert!(
        h[0]["detail"]
            .as_str()
            .unwrap()
            .contains("RAUC stopped answering")
    );
    assert!(
        d.sb.agent_log().contains("RAUC stopped answering"),
        "the journal says it"
    );

    // RAUC goes on (it finishes the interrupted job); the next check installs again.
    let rauc = d.sb.pid("rauc").unwrap().to_string();
    run(Command::new("kill").args(["-CONT", &rauc]));
    d.sb.wait_for("RAUC to be idle and heard from", WAIT, || {
        d.sb.rauc_property("Operation") == "idle" && d.status()["Components"]["rauc"] == "running"
    });
    let out = d.sb.ssuctl(&["check"]);
    assert!(out.status.success(), "{}", text(&out));
    d.wait_state("reboot-required");
    assert_eq!(d.installs_into_b(), 2, "the interrupted job and the retry");
}

// ---- an Inhibit flood from an unprivileged user ----------------------------------------

fn vm_rss_kib(pid: u32) -> u64 {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[test]
fn an_inhibit_flood_from_nobody_leaves_the_agent_s_memory_where_it_was() {
    let sb = Sandbox::up_with(Options {
        rauc: false,
        modem: false,
        ..Options::default()
    });
    // nobody must reach the bus socket (as under /run/dbus).
    fs::set_permissions(sb.dir(), fs::Permissions::from_mode(0o711)).unwrap();
    let pid = sb.pid("agent").unwrap();
    // Idle: after start-up has settled.
    let mut idle = vm_rss_kib(pid);
    sb.wait_for("the agent to settle", Duration::from_secs(30), || {
        std::thread::sleep(Duration::from_millis(500));
        let now = vm_rss_kib(pid);
        let settled = now.abs_diff(idle) < 256;
        idle = now;
        settled
    });

    // 16 concurrent calls of 31 MiB each, from connections of nobody's.
    let flood = sb
        .command("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(venv_python())
        .arg(common::repo_root().join("tests/data/inhibit_flood.py"))
        .args(["16", &(31 << 20).to_string(), "60"])
        .current_dir("/")
        .output()
        .unwrap();
    assert!(flood.status.success(), "{}", text(&flood));
    let answers = String::from_utf8_lossy(&flood.stdout).into_owned();
    assert_eq!(answers.lines().count(), 16, "{answers}");
    for answer in answers.lines() {
        // Refused by the agent at once, or by the bus (the agent's queue was full); never
        // left unanswered (NoReply) or accepted.
        assert!(
            answer == "org.ssu.Agent1.Error.PolicyRefused"
                || answer == "org.freedesktop.DBus.Error.LimitsExceeded",
            "{answers}"
        );
    }
    assert!(answers.contains("PolicyRefused"), "{answers}");
    let ended = Instant::now();
    let mut rss = 0;
    sb.wait_for(
        "VmRSS back within 4 MiB of idle",
        Duration::from_secs(10),
        || {
            rss = vm_rss_kib(pid);
            rss <= idle + 4096
        },
    );
    eprintln!(
        "idle {idle} KiB, {rss} KiB {:?} after the flood",
        ended.elapsed()
    );
    // And the agent still serves.
    let out = sb.ssuctl(&["status"]);
    assert!(out.status.success(), "{}", text(&out));
}

// ---- a read-only state directory ---------------------------------------------------------

#[test]
fn a_read_only_state_directory_is_named_as_the_cause() {
    let sb = Sandbox::up_with(Options {
        agent: false,
        rauc: false,
        modem: false,
        ..Options::default()
    });
    let state = sb.dir().join("ro-state");
    let _disk = Tmpfs::mount(&state, "1m");
    run(Command::new("mount").args(["-o", "remount,ro"]).arg(&state));
    let config = sb.dir().join("etc/ro.toml");
    fs::create_dir_all(config.parent().unwrap()).unwrap();
    fs::write(
        &config,
        format!(
            "[agent]\nstate_dir = \"{}\"\n[device]\nmodel = \"m\"\nhardware_id = \"h\"\n",
            state.display()
        ),
    )
    .unwrap();
    let out = sb
        .command(env!("CARGO_BIN_EXE_ssu-agent"))
        .arg("--config")
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let said = text(&out);
    assert!(
        said.contains("is not writable") && said.contains("Read-only file system"),
        "{said}"
    );
    assert!(!said.contains("unable to open database file"), "{said}");
}
