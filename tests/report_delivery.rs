//! Delivery of signed reports to a fleet server on the sandbox device: the real agent queues
//! and POSTs, the real receiver (`ssu-repo serve-reports`) verifies and stores, and
//! `ssu-repo verify-report` checks what arrived as a hub would — after an install and a
//! rollback, across a server outage and agent restarts, and against a server that answers
//! 500, garbage or nothing, and a redirect that would take it out of https.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::device::*;
use common::http::{Fault, Nginx, Proxy};

/// `ssu-repo serve-reports DIR`, stopped on drop; its log in DIR.log.
struct Receiver {
    dir: PathBuf,
    port: u16,
    allow_unknown: bool,
    child: Option<Child>,
}

impl Receiver {
    /// Starts on `port` (0: any free port).
    fn start(dir: &Path, port: u16, allow_unknown: bool) -> Receiver {
        let mut r = Receiver {
            dir: dir.to_owned(),
            port,
            allow_unknown,
            child: None,
        };
        r.restart();
        r
    }

    fn log_path(&self) -> PathBuf {
        self.dir.with_extension("log")
    }

    fn restart(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_ssu-repo"));
        cmd.arg("serve-reports")
            .arg(&self.dir)
            .arg("--listen")
            .arg(format!("127.0.0.1:{}", self.port))
            .stdout(Stdio::piped())
            .stderr(log);
        if self.allow_unknown {
            cmd.arg("--allow-unknown");
        }
        let mut child = cmd.spawn().expect("start ssu-repo serve-reports");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let addr = line
            .trim()
            .strip_prefix("listening on http://")
            .unwrap_or_else(|| panic!("serve-reports said {line:?}: {}", self.log()));
        self.port = addr
            .trim_end_matches('/')
            .rsplit(':')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        self.child = Some(child);
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/reports", self.port)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Every stored report: (counter, the report's content), lowest counter first.
    fn reports(&self) -> Vec<(u64, serde_json::Value, PathBuf)> {
        let mut out = Vec::new();
        let Ok(devices) = std::fs::read_dir(self.dir.join("devices")) else {
            return out;
        };
        for dev in devices.flatten() {
            let Ok(files) = std::fs::read_dir(dev.path().join("reports")) else {
                continue;
            };
            // Only stored reports: the server writes `.<name>.tmp` first and renames it, so a
            // temporary file seen here may be gone by the time it is read (seen in CI).
            for f in files.flatten() {
                let name = f.file_name();
                let name = name.to_string_lossy();
                if name.starts_with('.') || !name.ends_with(".json") {
                    continue;
                }
                let bytes = std::fs::read(f.path()).unwrap();
                let env: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
                let report: serde_json::Value =
                    serde_json::from_str(env["report"].as_str().unwrap()).unwrap();
                out.push((report["counter"].as_u64().unwrap(), report, f.path()));
            }
        }
        out.sort_by_key(|r| r.0);
        out
    }

    /// How many times the log says report `counter` was stored / was a duplicate.
    fn logged(&self, result: &str, counter: u64) -> usize {
        let needle = format!("{result} report {counter} of device");
        self.log().matches(&needle).count()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A port nothing listens on (yet).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Points the agent at `url` (plain http is allowed, as the tests need), with short
/// timeouts and retries, and a first periodic report a second after start.
fn deliver_to(d: &Device, url: &str) {
    deliver_with(d, url, "allow_http = true\n", "");
}

/// [`deliver_to`] with `report` added to `[report]` and `dropin` to the drop-in.
fn deliver_with(d: &Device, url: &str, report: &str, dropin: &str) {
    let mut toml = std::fs::read_to_string(d.sb.agent_config()).unwrap();
    toml.push_str(&format!(
        "[report]\nurl = \"{url}\"\n{report}timeout = \"2s\"\n\
         retry_initial = \"1s\"\nretry_max = \"2s\"\n"
    ));
    std::fs::write(d.sb.agent_config(), toml).unwrap();
    let dropins = d.sb.dir().join("etc/agent.d");
    std::fs::create_dir_all(&dropins).unwrap();
    std::fs::write(
        dropins.join("50-report-test.toml"),
        format!("[check]\nboot_delay = \"1s\"\n{dropin}"),
    )
    .unwrap();
}

/// The device's public key file, enrolled in the receiver's store.
fn enroll(d: &Device, rx: &Receiver) -> PathBuf {
    let out = d.sb.ssuctl(&["report", "--public-key"]);
    assert!(out.status.success(), "{out:?}");
    let path = d.sb.dir().join("device.pub");
    std::fs::write(&path, &out.stdout).unwrap();
    ssu_repo(&[
        "enroll-device",
        rx.dir.to_str().unwrap(),
        "--device-key",
        path.to_str().unwrap(),
    ]);
    path
}

/// Reports in the agent's queue.
fn queued(d: &Device) -> i64 {
    let db = d.sb.dir().join("state/agent.db");
    let conn =
        rusqlite::Connection::open_with_flags(&db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .unwrap();
    conn.query_row("SELECT count(*) FROM report_queue", [], |r| r.get(0))
        .unwrap()
}

/// Waits for a stored report that satisfies `f`; returns it and its file.
fn wait_report(
    d: &Device,
    rx: &Receiver,
    what: &str,
    f: impl Fn(&serde_json::Value) -> bool,
) -> (serde_json::Value, PathBuf) {
    let mut found = None;
    d.sb.wait_for(what, WAIT, || {
        found = rx
            .reports()
            .into_iter()
            .rev()
            .find(|(_, r, _)| f(r))
            .map(|(_, r, p)| (r, p));
        found.is_some()
    });
    found.unwrap()
}

/// The delivered report verifies with the device's key, and says what `ssuctl status` says.
fn assert_verifies_and_matches_status(d: &Device, key: &Path, file: &Path, r: &serde_json::Value) {
    let out = Command::new(env!("CARGO_BIN_EXE_ssu-repo"))
        .args(["verify-report", "--device-key", key.to_str().unwrap()])
        .args(["--any-nonce", file.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    // A device-chosen nonce of 32 random bytes.
    assert_eq!(r["nonce"].as_str().unwrap().len(), 64);
    let st = d.status();
    assert_eq!(
        r["installed"]["security_patch_level"],
        st["SecurityPatchLevel"]
    );
    assert_eq!(r["installed"]["version"], st["InstalledVersion"]);
    assert_eq!(r["boot"]["booted_slot"], st["BootSlot"]);
    assert_eq!(r["update_state"], st["State"]);
    assert_eq!(r["device"]["hardware_id"], st["HardwareId"]);
}

#[test]
fn an_install_delivers_a_report_that_verifies_and_matches_ssuctl_status() {
    let d = Device::new("");
    let rx = Receiver::start(&d.sb.dir().join("fleet"), 0, false);
    deliver_to(&d, &rx.url());
    d.sb.start("agent");
    let key = enroll(&d, &rx);
    d.install_security_update_and_reboot();
    d.sb.wait_for("the update to be confirmed", WAIT, || {
        let st = d.status();
        st["InstalledVersion"] == "1.0.1" && st["State"] == "idle"
    });
    let (r, file) = wait_report(&d, &rx, "the install's report", |r| {
        r["installed"]["version"] == "1.0.1"
    });
    assert_eq!(r["installed"]["security_patch_level"], "2026-11-01");
    assert_eq!(r["boot"]["booted_slot"], "B");
    assert_verifies_and_matches_status(&d, &key, &file, &r);
    d.sb.wait_for("an empty queue", WAIT, || queued(&d) == 0);
}

#[test]
fn a_rollback_delivers_a_report_that_verifies_and_matches_ssuctl_status() {
    let d = Device::new("health_checks = [[\"false\"]]");
    let rx = Receiver::start(&d.sb.dir().join("fleet"), 0, false);
    deliver_to(&d, &rx.url());
    d.sb.start("agent");
    let key = enroll(&d, &rx);
    d.install_security_update_and_reboot();
    d.wait_rolled_back();
    let (r, file) = wait_report(&d, &rx, "the rollback's report from slot A", |r| {
        r["update_state"] == "rolled-back" && r["boot"]["booted_slot"] == "A"
    });
    assert_eq!(r["installed"]["version"], "1.0.0");
    assert_eq!(r["installed"]["security_patch_level"], "2026-09-01");
    assert_verifies_and_matches_status(&d, &key, &file, &r);
}

#[test]
fn reports_queued_while_the_server_is_down_arrive_once_each_after_it_returns_and_restarts() {
    let d = Device::new("");
    let port = free_port();
    deliver_to(&d, &format!("http://127.0.0.1:{port}/reports"));
    d.sb.start("agent");
    // The first periodic report, undeliverable.
    d.sb.wait_for("a report kept in the queue", WAIT, || {
        queued(&d) == 1
            && d.sb
                .agent_log()
                .contains("report not delivered, kept in the queue")
    });
    let log = d.sb.agent_log();
    assert!(log.contains("cannot POST to http://127.0.0.1"), "{log}");
    // An install while the server is down: its report queues behind the first, across the
    // agent restarts of the reboot.
    d.install_security_update_and_reboot();
    d.sb.wait_for("the install's report queued", WAIT, || {
        d.status()["InstalledVersion"] == "1.0.1" && queued(&d) == 2
    });
    // And once more across a plain restart, with the server still down.
    d.sb.stop("agent");
    assert_eq!(queued(&d), 2);
    let mut rx = Receiver::start(&d.sb.dir().join("fleet"), port, true);
    d.sb.start("agent");
    d.sb.wait_for("the queue delivered", WAIT, || {
        queued(&d) == 0 && rx.reports().len() == 2
    });
    let reports = rx.reports();
    assert!(reports[0].0 < reports[1].0, "in order");
    assert_eq!(reports[0].1["installed"]["version"], "1.0.0");
    assert_eq!(reports[1].1["installed"]["version"], "1.0.1");
    for (counter, _, _) in &reports {
        assert_eq!(rx.logged("stored", *counter), 1, "{}", rx.log());
    }
    assert!(!d.sb.agent_log().contains("report dropped"));
    // Nothing is sent again later.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(rx.reports().len(), 2);
    assert!(!rx.log().contains("duplicate report"), "{}", rx.log());
    rx.stop();
}

#[test]
fn a_server_answering_500_garbage_or_nothing_loses_no_report_and_stores_it_once() {
    let d = Device::new("");
    let mut rx = Receiver::start(&d.sb.dir().join("fleet"), 0, true);
    let proxy = Proxy::start(format!("127.0.0.1:{}", rx.port).parse().unwrap());
    proxy.script(
        [
            Fault::Status(500),
            Fault::Garbage,
            Fault::Status(200),
            // The receiver stores it, but its answer never comes back within the timeout.
            Fault::Stall {
                after: 0,
                pause: Duration::from_secs(4),
            },
        ],
        Fault::None,
    );
    deliver_to(&d, &format!("{}reports", proxy.url()));
    d.sb.start("agent");
    d.sb.wait_for("the report delivered", WAIT, || {
        d.sb.agent_log()
            .contains("report delivered to the fleet server")
    });
    // Nothing was lost on the way: the report reached the store.
    d.sb.wait_for("the report stored by the receiver", WAIT, || {
        rx.reports().len() == 1
    });
    let log = d.sb.agent_log();
    for clear in [
        "report not delivered, kept in the queue: the server answered 500",
        "cannot POST to http://127.0.0.1",
        "the server answered 200 without acknowledging report",
        "did not answer within 2s",
    ] {
        assert!(log.contains(clear), "missing {clear:?} in\n{log}");
    }
    let reports = rx.reports();
    assert_eq!(reports.len(), 1, "{reports:?}");
    let counter = reports[0].0;
    // Stored once; the retry after the lost answer was recognised as the same report.
    assert_eq!(rx.logged("stored", counter), 1, "{}", rx.log());
    assert_eq!(rx.logged("duplicate", counter), 1, "{}", rx.log());
    assert!(log.contains("duplicate=true"), "{log}");
    assert_eq!(queued(&d), 0);
    let attempts = proxy.exchanges();
    assert_eq!(attempts.len(), 5, "{attempts:?}");
    rx.stop();
}

#[test]
fn over_https_through_nginx_a_report_is_delivered_and_verifies() {
    let d = Device::new("");
    let rx = Receiver::start(&d.sb.dir().join("fleet"), 0, false);
    let www = d.sb.dir().join("www");
    std::fs::create_dir_all(&www).unwrap();
    let nginx = Nginx::start_tls_proxy(&www, "/reports", &format!("127.0.0.1:{}", rx.port));
    assert!(nginx.url().starts_with("https://"));
    // https, trusted through the agent's extra CA; no allow_http.
    let ca = nginx.ca_pem();
    deliver_with(
        &d,
        &format!("{}reports", nginx.url()),
        "",
        &format!("[download]\nca_file = \"{}\"\n", ca.display()),
    );
    d.sb.start("agent");
    let key = enroll(&d, &rx);
    let (r, file) = wait_report(&d, &rx, "a report over https", |_| true);
    assert_verifies_and_matches_status(&d, &key, &file, &r);
    assert!(
        nginx.access_log().contains("POST /reports"),
        "{}",
        nginx.access_log()
    );
}

#[test]
fn a_redirect_from_https_to_plain_http_is_not_followed_and_the_report_stays_queued() {
    let d = Device::new("");
    // It would store the report of any device: only the agent's refusal keeps it out.
    let rx = Receiver::start(&d.sb.dir().join("fleet"), 0, true);
    let www = d.sb.dir().join("www");
    std::fs::create_dir_all(&www).unwrap();
    // 307 keeps the method and the body: followed, the report would go out in clear text.
    let nginx = Nginx::start_tls_redirect(&www, "/reports", &rx.url());
    deliver_with(
        &d,
        &format!("{}reports", nginx.url()),
        "",
        &format!("[download]\nca_file = \"{}\"\n", nginx.ca_pem().display()),
    );
    d.sb.start("agent");
    d.sb.wait_for("the redirect refused", WAIT, || {
        d.sb.agent_log()
            .contains("refusing to leave https for http://127.0.0.1")
    });
    assert!(
        nginx
            .access_log()
            .contains("\"POST /reports HTTP/1.1\" 307"),
        "{}",
        nginx.access_log()
    );
    assert_eq!(queued(&d), 1);
    assert!(rx.reports().is_empty(), "{:?}", rx.reports());
    assert!(!rx.log().contains("report 1 of device"), "{}", rx.log());
}

#[test]
fn report_delivery_shows_the_queue_the_last_delivery_and_a_clean_last_error_across_restarts() {
    use std::io::{Read, Write};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    let d = Device::new("");
    let port = free_port();
    // First a hostile server on the fleet's port: 503, with terminal escapes (clear the
    // screen, set the window title, colours) and a flood of text in its answer.
    let stop = Arc::new(AtomicBool::new(false));
    let listener = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
    listener.set_nonblocking(true).unwrap();
    let hostile = std::thread::spawn({
        let stop = stop.clone();
        move || {
            let mut body =
                b"\x1b[2J\x1b]0;pwned title\x07overloaded\x1b[31m, retry later\x1b[0m\r\n".to_vec();
            body.extend_from_slice(&[b'z'; 3000]);
            while !stop.load(Ordering::SeqCst) {
                let Ok((mut conn, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(20));
                    continue;
                };
                conn.set_nonblocking(false).unwrap();
                conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                // The whole request, so that closing sends no reset.
                let mut request = Vec::new();
                let mut buf = [0u8; 8192];
                let complete = |r: &[u8]| {
                    let text = String::from_utf8_lossy(r);
                    let Some((head, rest)) = text.split_once("\r\n\r\n") else {
                        return false;
                    };
                    let length = head
                        .lines()
                        .find_map(|l| {
                            let (k, v) = l.split_once(':')?;
                            k.eq_ignore_ascii_case("content-length")
                                .then(|| v.trim().parse::<usize>().ok())?
                        })
                        .unwrap_or(0);
                    rest.len() >= length
                };
                while !complete(&request) {
                    match conn.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                let head = format!(
                    "HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\n\
                     Content-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                let _ = conn.write_all(head.as_bytes());
                let _ = conn.write_all(&body);
            }
        }
    });
    deliver_to(&d, &format!("http://127.0.0.1:{port}/reports"));
    d.sb.start("agent");
    let monitor = d.sb.monitor_agent();
    // `ReportDelivery` as a settings screen reads it: the property itself, not GetStatus.
    let delivery = || -> serde_json::Value {
        let v = d.sb.agent_property_json("ReportDelivery");
        assert_eq!(v["type"], "a{sv}", "{v}");
        let flat = v["data"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, x)| (k.clone(), x["data"].clone()))
            .collect();
        serde_json::Value::Object(flat)
    };
    let error_of = |v: &serde_json::Value| v["last_error"].as_str().unwrap().to_owned();

    let mut seen = serde_json::Value::Null;
    d.sb.wait_for("the hostile answer shown", WAIT, || {
        seen = delivery();
        error_of(&seen).contains("503")
    });
    assert_eq!(seen["configured"], true, "{seen}");
    assert!(seen["queued"].as_u64().unwrap() >= 1, "{seen}");
    assert_eq!(seen["last_delivered"], 0, "{seen}");
    // Not held back (no metered link here): the key is there, and empty.
    assert_eq!(seen["waiting"], "", "{seen}");
    let err = error_of(&seen);
    assert!(
        err.starts_with("the server answered 503: overloaded, retry later zzz"),
        "{err:?}"
    );
    assert!(!err.contains(['\u{1b}', '\u{7}', '\r', '\n']), "{err:?}");
    assert!(!err.contains("[31m") && !err.contains("pwned"), "{err:?}");
    assert!(err.chars().count() <= 240, "{}", err.chars().count());
    stop.store(true, Ordering::SeqCst);
    hostile.join().unwrap();

    // The server is down: the connection failure is shown, the report waits.
    let refused = format!("cannot POST to http://127.0.0.1:{port}/reports");
    d.sb.wait_for("the connection failure shown", WAIT, || {
        seen = delivery();
        let err = error_of(&seen);
        err.starts_with(&refused) && err.to_lowercase().contains("connection refused")
    });
    assert!(seen["queued"].as_u64().unwrap() >= 1, "{seen}");
    assert_eq!(seen["last_delivered"], 0, "{seen}");
    let out = d.sb.ssuctl(&["status"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!(
            "Fleet reports:        {} queued (never delivered; last error: {refused}",
            seen["queued"]
        )),
        "{text}"
    );
    assert_eq!(d.status()["ReportDelivery"]["configured"], true);

    // The receiver starts: the queue empties, the error clears, the delivery is dated.
    let before = jiff::Timestamp::now().as_second();
    let mut rx = Receiver::start(&d.sb.dir().join("fleet"), port, true);
    d.sb.wait_for("the queue delivered", WAIT, || {
        seen = delivery();
        seen["queued"] == 0 && seen["last_error"] == "" && seen["last_delivered"] != 0
    });
    let delivered = seen["last_delivered"].as_i64().unwrap();
    let after = jiff::Timestamp::now().as_second();
    assert!((before..=after).contains(&delivered), "{seen}");
    assert!(!rx.reports().is_empty());
    let signals = monitor.wait_for_text("'queued': <uint32 0>", Duration::from_secs(10));
    assert!(
        signals.contains("PropertiesChanged")
            && signals.contains("'ReportDelivery'")
            && signals.contains("'queued': <uint32 0>")
            && signals.contains("'last_error': <''>"),
        "{signals}"
    );
    let out = d.sb.ssuctl(&["status"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("Fleet reports:        none queued (last delivered "),
        "{text}"
    );

    // Kept across a restart of the agent.
    d.sb.stop("agent");
    d.sb.start("agent");
    let after_restart = delivery();
    assert_eq!(
        after_restart["last_delivered"], delivered,
        "{after_restart}"
    );
    assert_eq!(after_restart["queued"], 0, "{after_restart}");
    assert_eq!(after_restart["configured"], true, "{after_restart}");
    rx.stop();
}
