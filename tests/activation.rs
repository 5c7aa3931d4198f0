//! The agent starts what it needs the way D-Bus expects, and goes when the bus goes.
//!
//! On the sandbox device with `--activate`: RAUC and polkit (dbusmock's `polkitd`) are not
//! running, only bus-activatable (a `<servicedir>` of the private system bus, as Debian
//! ships them), so they run only if the agent starts them. And an agent whose bus connection
//! closes exits non-zero, so that systemd's `Restart=on-failure` brings it back.

mod common;

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::control::{call, err_text, error_name};
use common::{Options, Sandbox, process_alive};

const WAIT: Duration = Duration::from_secs(30);

fn activated() -> Sandbox {
    Sandbox::up_with(Options {
        activate: true,
        ..Options::default()
    })
}

#[test]
fn rauc_not_running_is_started_by_activation_and_again_after_it_left() {
    let sb = activated();
    // Nothing but the agent asked for RAUC: it runs because the agent started it.
    sb.wait_for("the agent to show RAUC's boot slot", WAIT, || {
        sb.agent_property("BootSlot") == "A"
    });
    let first = sb.pid("rauc").expect("RAUC was started");
    assert!(process_alive(first));
    // The agent may see RAUC's properties before it logs how RAUC came.
    sb.wait_for("the agent to say it started RAUC", WAIT, || {
        sb.agent_log()
            .contains("RAUC (de.pengutronix.rauc) was not running; started it by D-Bus activation")
    });
    let rauc_log = std::fs::read_to_string(sb.dir().join("rauc.log")).unwrap();
    assert!(
        rauc_log.contains("rauc started by D-Bus activation"),
        "{rauc_log}"
    );

    // RAUC goes away (a crash, or a restart of its unit): the agent starts it again.
    sb.stop("rauc");
    sb.wait_for("RAUC to be started again", WAIT, || {
        sb.pid("rauc")
            .is_some_and(|p| p != first && process_alive(p))
            && sb.agent_property("BootSlot") == "A"
    });
}

#[test]
fn polkit_not_running_is_started_and_decides() {
    let sb = activated();
    // Nobody has asked polkit anything yet.
    assert_eq!(sb.pid("polkit"), None);

    // Root is in the sandbox's allowlist, so a polkit taken for absent would let this
    // through; the started polkit (which allows nothing yet) refuses it.
    let out = call(&sb, None, "CheckNow", &[]);
    assert_eq!(
        error_name(&out),
        "org.ssu.Agent1.Error.NotAuthorized",
        "{}",
        err_text(&out)
    );
    assert!(
        err_text(&out).contains("polkit refused org.ssu.agent.check"),
        "{}",
        err_text(&out)
    );
    let polkit = sb.pid("polkit").expect("polkit was started");
    assert!(process_alive(polkit));
    assert!(
        sb.agent_log()
            .contains("polkit was not running; started it by D-Bus activation")
    );

    // It is the started polkit that decides: allowing the action lets the call through.
    let out = sb.busctl(&[
        "call",
        "org.freedesktop.PolicyKit1",
        "/org/freedesktop/PolicyKit1/Authority",
        "org.freedesktop.DBus.Mock",
        "SetAllowed",
        "as",
        "1",
        "org.ssu.agent.check",
    ]);
    assert!(out.status.success(), "{out:?}");
    let out = call(&sb, None, "CheckNow", &[]);
    assert!(out.status.success(), "{}", err_text(&out));
}

#[test]
fn without_activation_files_rauc_and_polkit_count_as_absent() {
    // The plain sandbox: no RAUC, no polkit, nothing activatable. The agent waits for RAUC
    // and the allowlist decides (root is in it).
    let sb = Sandbox::up_with(Options {
        rauc: false,
        ..Options::default()
    });
    sb.wait_for("the agent to say RAUC is absent", WAIT, || {
        sb.agent_log().contains(
            "RAUC (de.pengutronix.rauc) is not on the bus and not activatable; waiting for it",
        )
    });
    let out = call(&sb, None, "CheckNow", &[]);
    assert!(out.status.success(), "{}", err_text(&out));
    assert_eq!(sb.pid("rauc"), None);
    assert_eq!(sb.pid("polkit"), None);
}

#[test]
fn an_agent_that_lost_the_bus_exits_non_zero() {
    let sb = Sandbox::up_with(Options {
        agent: false,
        ..Options::default()
    });
    // An agent this test starts itself, to see how it exits.
    let state = sb.dir().join("own");
    std::fs::create_dir_all(&state).unwrap();
    let config = state.join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "[agent]\nstate_dir = \"{}\"\n[device]\nmodel = \"Own\"\nversion = \"1.0.0\"\n",
            state.join("state").display()
        ),
    )
    .unwrap();
    let mut agent = sb
        .command(env!("CARGO_BIN_EXE_ssu-agent"))
        .arg("--config")
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    sb.wait_for("the agent on the bus", WAIT, || {
        sb.busctl(&["status", "org.ssu.Agent1"]).status.success()
    });

    // The bus daemon goes away (stopped, restarted, crashed): the connection closes.
    let bus = sb.pid("bus").expect("the sandbox bus runs");
    let killed = Command::new("kill")
        .args(["-TERM", &bus.to_string()])
        .status()
        .unwrap();
    assert!(killed.success());

    let bound = Duration::from_secs(10);
    let start = Instant::now();
    let status = loop {
        if let Some(status) = agent.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > bound {
            let _ = agent.kill();
            panic!("the agent was still running {bound:?} after its bus went away");
        }
        std::thread::sleep(common::POLL);
    };
    let mut err = String::new();
    agent
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(
        err.contains("lost the system bus: the bus connection closed"),
        "{err}"
    );
    eprintln!("agent exited {:?} after the bus went away", start.elapsed());
}
