//! Calling the agent's methods as a real client would (gdbus, as any uid) and holding host
//! inhibitors, for the tests of user control.

use std::process::{Child, Output, Stdio};

use super::{Sandbox, venv_python};

/// Calls `org.ssu.Agent1.METHOD ARGS` with gdbus as `uid` (root when `None`).
pub fn call(sb: &Sandbox, uid: Option<u32>, method: &str, args: &[&str]) -> Output {
    let gdbus_args = [
        "call",
        "--system",
        "--dest",
        "org.ssu.Agent1",
        "--object-path",
        "/org/ssu/Agent1",
        "--method",
    ];
    let method = format!("org.ssu.Agent1.{method}");
    let mut cmd = match uid {
        None => sb.command("gdbus"),
        Some(uid) => {
            let mut c = sb.command("setpriv");
            c.arg(format!("--reuid={uid}"))
                .arg(format!("--regid={uid}"))
                .arg("--clear-groups")
                .arg("gdbus");
            c
        }
    };
    cmd.args(gdbus_args)
        .arg(method)
        .args(args)
        .output()
        .expect("run gdbus")
}

/// The D-Bus error name of a failed call ("" when it succeeded).
pub fn error_name(out: &Output) -> String {
    if out.status.success() {
        return String::new();
    }
    let err = String::from_utf8_lossy(&out.stderr);
    err.split("GDBus.Error:")
        .nth(1)
        .and_then(|rest| rest.split(':').next())
        .unwrap_or(&err)
        .trim()
        .to_owned()
}

pub fn err_text(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A process holding an inhibitor taken with `Inhibit` until it is killed.
pub struct Holder(Child);

impl Holder {
    pub fn take(sb: &Sandbox, reason: &str) -> Holder {
        let script = "import dbus, os, sys\n\
            bus = dbus.bus.BusConnection(os.environ['DBUS_SYSTEM_BUS_ADDRESS'])\n\
            agent = bus.get_object('org.ssu.Agent1', '/org/ssu/Agent1')\n\
            fd = agent.Inhibit(sys.argv[1], dbus_interface='org.ssu.Agent1').take()\n\
            print('held', flush=True)\n\
            sys.stdin.read()\n";
        let mut child = sb
            .command(venv_python())
            .args(["-c", script, reason])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("run the inhibitor holder");
        use std::io::BufRead;
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.as_mut().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "held");
        Holder(child)
    }

    pub fn release(mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

