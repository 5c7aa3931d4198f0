//! Calling the agent's methods as a real client would (gdbus, as any uid) and holding host
//! inhibitors, for the tests of user control.

use std::process::{Child, Output, Stdio};
use std::time::Duration;

use super::{Sandbox, venv_python};

/// Calls `org.ssu.Agent1.METHOD ARGS` with gdbus as `uid` (root when `None`).
pub fn call(sb: &Sandbox, uid: Option<u32>, method: &str, args: &[&str]) -> Output {
    call_with_pid(sb, uid, method, args).1
}

/// [`call`], also returning the pid of the calling process (gdbus).
pub fn call_with_pid(sb: &Sandbox, uid: Option<u32>, method: &str, args: &[&str]) -> (u32, Output) {
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
    let child = cmd
        .args(gdbus_args)
        .arg(method)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run gdbus");
    let pid = child.id();
    (pid, child.wait_with_output().expect("wait for gdbus"))
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

/// A dbusmock template on the sandbox bus (polkitd, notification_daemon); stopped on drop.
pub struct Mock<'a> {
    sb: &'a Sandbox,
    name: &'static str,
    child: Child,
}

impl<'a> Mock<'a> {
    pub fn start(sb: &'a Sandbox, template: &str, name: &'static str) -> Mock<'a> {
        let child = sb
            .command(venv_python())
            .args(["-m", "dbusmock", "--system", "--template", template])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start dbusmock");
        let m = Mock { sb, name, child };
        sb.wait_for(name, Duration::from_secs(30), || {
            sb.busctl(&["status", name]).status.success()
        });
        m
    }

    /// Calls a method of the mock's control interface (org.freedesktop.DBus.Mock).
    pub fn call(&self, path: &str, method: &str, signature_and_args: &[&str]) {
        let mut args = vec!["call", self.name, path, "org.freedesktop.DBus.Mock", method];
        args.extend_from_slice(signature_and_args);
        let out = self.sb.busctl(&args);
        assert!(out.status.success(), "{out:?}");
    }

    /// The arguments (busctl JSON) of every call of `method` the mock received.
    pub fn calls(&self, path: &str, method: &str) -> Vec<serde_json::Value> {
        let out = self.sb.busctl(&[
            "call",
            self.name,
            path,
            "org.freedesktop.DBus.Mock",
            "GetCalls",
            "--json=short",
        ]);
        assert!(out.status.success(), "{out:?}");
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        v["data"][0]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .filter(|c| c[1] == method)
            .map(|c| c[2].clone())
            .collect()
    }
}

impl Drop for Mock<'_> {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Every org.ssu.Agent1 signal as JSON lines (`{"signal": NAME, "args": [...]}`), recorded
/// by a real client (dbus-python) in the background.
pub struct Signals {
    child: Child,
    lines: std::sync::Arc<std::sync::Mutex<Vec<serde_json::Value>>>,
}

impl Signals {
    pub fn start(sb: &Sandbox) -> Signals {
        let script = r#"
import dbus, json, os
from dbus.mainloop.glib import DBusGMainLoop
from gi.repository import GLib
DBusGMainLoop(set_as_default=True)
bus = dbus.bus.BusConnection(os.environ['DBUS_SYSTEM_BUS_ADDRESS'])
def conv(v):
    if isinstance(v, dbus.Boolean): return bool(v)
    if isinstance(v, dict): return {str(k): conv(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)): return [conv(x) for x in v]
    if isinstance(v, float): return float(v)
    if isinstance(v, int): return int(v)
    return str(v)
def got(*args, member=None):
    print(json.dumps({'signal': member, 'args': [conv(a) for a in args]}), flush=True)
bus.add_signal_receiver(got, dbus_interface='org.ssu.Agent1', member_keyword='member')
bus.get_object('org.freedesktop.DBus', '/org/freedesktop/DBus').GetId(dbus_interface='org.freedesktop.DBus')
print(json.dumps({'signal': 'ready'}), flush=True)
GLib.MainLoop().run()
"#;
        let mut child = sb
            .command(venv_python())
            .args(["-c", script])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("run the signal recorder");
        let out = child.stdout.take().unwrap();
        let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = lines.clone();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
                if let Ok(v) = serde_json::from_str(&line) {
                    sink.lock().unwrap().push(v);
                }
            }
        });
        let s = Signals { child, lines };
        s.wait("ready", Duration::from_secs(30));
        s
    }

    /// The args of every `name` signal so far.
    pub fn all(&self, name: &str) -> Vec<Vec<serde_json::Value>> {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l["signal"] == name)
            .map(|l| l["args"].as_array().cloned().unwrap_or_default())
            .collect()
    }

    /// Waits for a `name` signal; returns its args.
    pub fn wait(&self, name: &str, timeout: Duration) -> Vec<serde_json::Value> {
        self.wait_for(name, timeout, |_| true)
    }

    /// Waits until a `name` signal whose args satisfy `f` has been recorded (the recorder
    /// runs in another process: what the agent sent may not have arrived yet); returns the
    /// latest such args.
    pub fn wait_for(
        &self,
        name: &str,
        timeout: Duration,
        f: impl Fn(&[serde_json::Value]) -> bool,
    ) -> Vec<serde_json::Value> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if let Some(args) = self.all(name).into_iter().rev().find(|a| f(a)) {
                return args;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no matching {name} signal within {timeout:?}: {:#?}",
                self.all(name)
            );
            std::thread::sleep(super::POLL);
        }
    }
}

impl Drop for Signals {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
