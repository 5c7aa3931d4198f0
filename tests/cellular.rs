//! Cellular awareness end to end on the sandbox device: dbusmock ModemManager and
//! NetworkManager, a manufacturer repository and operator repositories published with
//! `ssu-repo`, all served by the harness's nginx (one server, one directory per repository).
//!
//! The sandbox SIM is on 26201 (profile `telenet`); `other` is 26202.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{Options, Sandbox};
use jiff::{SignedDuration, Timestamp};

const WAIT: Duration = Duration::from_secs(90);
const CRITICAL: &str = "CVE-2026-4242:critical:9.8:Remote code execution";
const HIGH: &str = "CVE-2026-5151:high:7.5:Denial of service";

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().expect("run command");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn ssu_repo(args: &[&str]) -> String {
    run(Command::new(env!("CARGO_BIN_EXE_ssu-repo")).args(args))
}

/// What a test device is configured with besides the defaults.
#[derive(Default)]
struct Setup<'a> {
    /// `telenet`'s repository URL; `None` serves it from nginx like the others.
    telenet_url: Option<&'a str>,
    telenet_extra: &'a str,
    /// Extra top-level TOML (e.g. `[link_cost]`).
    extra: &'a str,
}

struct Device {
    sb: Sandbox,
}

impl Device {
    /// Sandbox with ModemManager and NetworkManager mocks, the three repositories served, and
    /// the agent started (first check only on demand).
    fn up(setup: Setup<'_>) -> Device {
        let sb = Sandbox::up_with(Options {
            agent: false,
            network: true,
            ..Options::default()
        });
        let www = sb.dir().join("www");
        std::fs::create_dir_all(&www).unwrap();
        for (name, role) in [
            ("manufacturer", "manufacturer"),
            ("telenet", "operator"),
            ("other", "operator"),
        ] {
            let repo = sb.dir().join(format!("repo-{name}"));
            ssu_repo(&["init", repo.to_str().unwrap(), "--role", role]);
            std::os::unix::fs::symlink(repo.join("public"), www.join(name)).unwrap();
        }
        run(Command::new("bash")
            .arg(common::repo_root().join("scripts/sandbox"))
            .arg("http")
            .arg(sb.dir())
            .arg(&www));
        let base = std::fs::read_to_string(sb.dir().join("http/url")).unwrap();
        let base = base.trim();
        let dir = sb.dir().display().to_string();
        let root = |name: &str| format!("{dir}/repo-{name}/public/metadata/1.root.json");
        let telenet_url = setup
            .telenet_url
            .map_or_else(|| format!("{base}telenet/"), str::to_owned);
        let toml = format!(
            r#"{head}[install]
boot_id_file = "{dir}/boot/boot_id"
reboot_command = ["true"]
{extra}
[[operator]]
name = "telenet"
mcc_mnc = ["26201"]
url = "{telenet_url}"
root = "{troot}"
{telenet_extra}
[[operator]]
name = "other"
mcc_mnc = ["26202"]
url = "{base}other/"
root = "{oroot}"
"#,
            head =
                common::device_toml(&dir, &format!("{base}manufacturer/"), &root("manufacturer")),
            troot = root("telenet"),
            oroot = root("other"),
            extra = setup.extra,
            telenet_extra = setup.telenet_extra,
        );
        std::fs::create_dir_all(sb.dir().join("etc")).unwrap();
        std::fs::write(sb.agent_config(), toml).unwrap();
        sb.start("agent");
        Device { sb }
    }

    fn repo(&self, name: &str) -> String {
        self.sb
            .dir()
            .join(format!("repo-{name}"))
            .display()
            .to_string()
    }

    /// Builds and publishes a security update released `released_ago` before now.
    fn publish(&self, version: &str, level: &str, cve: &str, released_ago: SignedDuration) {
        let seed = version.bytes().map(u32::from).sum::<u32>();
        let image: Vec<u8> = (0..64 * 1024u32)
            .map(|i| (i.wrapping_mul(2_654_435_761).wrapping_add(seed) >> 13) as u8)
            .collect();
        let bundle = self.sb.build_bundle(version, &image);
        let released = (Timestamp::now() - released_ago).to_string();
        ssu_repo(&[
            "add",
            &self.repo("manufacturer"),
            bundle.to_str().unwrap(),
            "--kind",
            "security",
            "--base-version",
            "1.0",
            "--security-patch-level",
            level,
            "--cve",
            cve,
            "--downtime",
            "60s",
            "--released",
            &released,
        ]);
    }

    /// The operator `name` approves `version`.
    fn approve(&self, name: &str, version: &str) {
        let from = format!("{}/public", self.repo("manufacturer"));
        let target = format!("bundles/ssu-sandbox/{version}.raucb");
        ssu_repo(&["approve", &self.repo(name), "--from", &from, &target]);
    }

    fn status(&self) -> serde_json::Value {
        let out = self.sb.ssuctl(&["status", "--json"]);
        assert!(out.status.success(), "{out:?}");
        serde_json::from_slice(&out.stdout).unwrap()
    }

    fn history(&self) -> Vec<serde_json::Value> {
        let out = self.sb.ssuctl(&["history", "--json"]);
        assert!(out.status.success(), "{out:?}");
        serde_json::from_slice(&out.stdout).unwrap()
    }

    fn check(&self) {
        let out = self.sb.ssuctl(&["check"]);
        assert!(out.status.success(), "{out:?}\n{}", self.sb.agent_log());
    }

    fn wait_status(&self, what: &str, f: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
        let mut last = serde_json::Value::Null;
        self.sb.wait_for(what, WAIT, || {
            last = self.status();
            f(&last)
        });
        last
    }

    fn wait_state(&self, state: &str) -> serde_json::Value {
        self.wait_status(&format!("state {state}"), |st| st["State"] == state)
    }

    fn set_metered(&self, value: u32) {
        let out = self.sb.busctl(&[
            "call",
            "org.freedesktop.NetworkManager",
            "/org/freedesktop/NetworkManager",
            "org.freedesktop.DBus.Properties",
            "Set",
            "ssv",
            "org.freedesktop.NetworkManager",
            "Metered",
            "u",
            &value.to_string(),
        ]);
        assert!(out.status.success(), "{out:?}");
    }

    fn status_text(&self) -> String {
        let out = self.sb.ssuctl(&["status"]);
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

fn hours(h: i64) -> SignedDuration {
    SignedDuration::from_hours(h)
}

#[test]
fn approved_update_comes_from_the_operator_and_a_sim_swap_changes_the_subscription() {
    let d = Device::up(Setup::default());
    let st = d.wait_status("subscription telenet", |st| {
        st["Subscription"]["profile"] == "telenet" && st["Subscription"]["state"] == "known"
    });
    assert_eq!(st["UpdateSource"]["source"], "telenet", "{st:#}");

    d.publish("1.0.1", "2026-11-01", HIGH, hours(1));
    d.approve("telenet", "1.0.1");
    d.check();
    let st = d.wait_state("reboot-required");
    assert_eq!(st["Available"]["source"], "telenet", "{st:#}");
    assert_eq!(st["UpdateSource"]["source"], "telenet");
    assert_eq!(st["UpdateSource"]["reason"], "approved by operator telenet");
    // The bundle's bytes came from the operator's copy.
    let access = std::fs::read_to_string(d.sb.dir().join("http/access.log")).unwrap();
    assert!(
        access.contains("GET /telenet/targets/") && access.contains(".raucb"),
        "{access}"
    );
    assert!(!access.contains("GET /manufacturer/targets/"), "{access}");

    let monitor = d.sb.monitor_agent();
    // Another ICCID and IMSI of the same operator: the same subscription.
    d.sb.modem(&[
        "swap-sim",
        "26201",
        "8949000000000005678",
        "262010000005678",
    ]);
    d.wait_status("the new SIM read", |st| {
        st["Subscription"]["iccid"] == "…5678" && st["Subscription"]["state"] == "known"
    });
    // Another operator's SIM.
    d.sb.modem(&[
        "swap-sim",
        "26202",
        "8949020000000009999",
        "262020000009999",
    ]);
    monitor.wait_for_text("SubscriptionChanged", WAIT);
    let st = d.wait_status("subscription other", |st| {
        st["Subscription"]["profile"] == "other"
    });
    let text = monitor.finish();
    assert_eq!(
        text.matches("org.ssu.Agent1.SubscriptionChanged").count(),
        1,
        "{text}"
    );
    assert!(text.contains("'previous': <'telenet'>"), "{text}");
    assert!(text.contains("'profile': <'other'>"), "{text}");
    assert_eq!(st["UpdateSource"]["source"], "other", "{st:#}");
    let changes: Vec<_> = d
        .history()
        .into_iter()
        .filter(|h| h["action"] == "subscription-changed")
        .collect();
    assert_eq!(changes.len(), 1, "{changes:?}");
    assert_eq!(
        changes[0]["detail"],
        "subscription changed from telenet to other"
    );
    // No identifier leaves whole.
    let all = serde_json::to_string(&d.status()).unwrap();
    assert!(!all.contains("8949020000000009999") && !all.contains("262020000009999"));
    assert!(d.status_text().contains("Subscription:         other\n"));
}

#[test]
fn without_approval_it_waits_within_grace_and_times_out_to_the_manufacturer() {
    let d = Device::up(Setup {
        telenet_extra: r#"approval_grace = "2d""#,
        ..Setup::default()
    });
    // Released an hour ago: waits until released + 2 days.
    d.publish("1.0.1", "2026-11-01", HIGH, hours(1));
    d.check();
    let st = d.wait_state("deferred");
    let src = &st["UpdateSource"];
    assert_eq!(src["source"], "telenet", "{st:#}");
    assert_eq!(src["reason"], "waiting for operator telenet to approve");
    let until = src["waiting_until"].as_i64().expect("waiting_until");
    let expected = (Timestamp::now() + hours(47)).as_second();
    // Plus this device's spread of the approval end (`[spread] approval`, up to 1 h).
    assert!(
        (expected - 300..=expected + 3600 + 300).contains(&until),
        "{until} vs {expected}"
    );
    assert!(
        d.status_text().contains("Waiting until:"),
        "{}",
        d.status_text()
    );

    // A newer update released three days ago: its grace is over.
    d.publish("1.0.2", "2026-12-01", HIGH, hours(72));
    d.check();
    let st = d.wait_state("reboot-required");
    assert_eq!(st["Available"]["version"], "1.0.2", "{st:#}");
    assert_eq!(st["Available"]["source"], "manufacturer");
    let reason = st["UpdateSource"]["reason"].as_str().unwrap();
    assert!(
        reason.starts_with("operator approval timed out"),
        "{reason}"
    );
    let timeout = d
        .history()
        .into_iter()
        .find(|h| h["action"] == "operator-approval-timed-out")
        .expect("history entry");
    assert!(
        timeout["detail"]
            .as_str()
            .unwrap()
            .contains("operator approval timed out"),
        "{timeout}"
    );
}

#[test]
fn operator_server_down_past_its_limit_means_the_manufacturer_server() {
    // Nothing listens on port 1: the operator's server is unreachable.
    let d = Device::up(Setup {
        telenet_url: Some("http://127.0.0.1:1/"),
        telenet_extra: r#"fallback_after = "3s""#,
        ..Setup::default()
    });
    d.publish("1.0.1", "2026-11-01", HIGH, hours(1));
    d.check();
    // Either still waiting out the 3 s, or (on a slow machine) already past them.
    let st = d.wait_status("waiting or installing", |st| {
        st["State"] == "deferred" || st["State"] == "reboot-required"
    });
    if st["State"] == "deferred" {
        let reason = st["UpdateSource"]["reason"].as_str().unwrap();
        assert!(reason.contains("server unusable"), "{st:#}");
    }
    // The agent looks again by itself when the limit has passed.
    let st = d.wait_state("reboot-required");
    assert_eq!(st["Available"]["source"], "manufacturer", "{st:#}");
    let reason = st["UpdateSource"]["reason"].as_str().unwrap();
    assert!(reason.contains("telenet server unusable since"), "{reason}");
}

#[test]
fn metered_and_roaming_defer_non_critical_updates_but_not_critical_ones() {
    let d = Device::up(Setup::default());
    d.wait_status("NetworkManager running", |st| {
        st["Components"]["networkmanager"] == "running"
    });
    d.set_metered(3); // guess-yes
    d.publish("1.0.1", "2026-11-01", HIGH, hours(200));
    d.check();
    let st = d.wait_state("deferred");
    let deferred = st["UpdateSource"]["deferred"].as_str().unwrap();
    assert!(deferred.starts_with("metered connection"), "{st:#}");
    assert!(d.status_text().contains("Deferred:             metered"));

    // Unmetered now, but roaming: still deferred, for that reason.
    d.sb.modem(&["set-registration", "5"]);
    d.wait_status("roaming seen", |st| {
        st["Subscription"]["registration_state"] == 5
    });
    d.set_metered(2);
    let st = d.wait_status("deferred for roaming", |st| {
        st["UpdateSource"]["deferred"]
            .as_str()
            .is_some_and(|r| r.starts_with("roaming"))
    });
    assert_eq!(st["State"], "deferred");

    // A critical fix proceeds while roaming.
    d.publish("1.0.2", "2026-12-01", CRITICAL, hours(200));
    d.check();
    let st = d.wait_state("reboot-required");
    assert_eq!(st["Available"]["version"], "1.0.2", "{st:#}");
    assert!(st["UpdateSource"].get("deferred").is_none(), "{st:#}");
}

#[test]
fn an_exhausted_budget_defers_with_the_reason() {
    let d = Device::up(Setup {
        extra: "[link_cost]\ndefer_when_metered = false\nmonthly_budget_bytes = 1000\n",
        ..Setup::default()
    });
    d.wait_status("NetworkManager running", |st| {
        st["Components"]["networkmanager"] == "running"
    });
    d.set_metered(1);
    d.publish("1.0.1", "2026-11-01", HIGH, hours(200));
    d.check();
    let st = d.wait_state("deferred");
    let deferred = st["UpdateSource"]["deferred"].as_str().unwrap();
    assert!(deferred.contains("monthly budget"), "{st:#}");
    assert!(deferred.contains("0 of 1000 bytes used"), "{st:#}");
}

#[test]
fn modemmanager_restart_keeps_the_subscription_and_the_agent() {
    let d = Device::up(Setup::default());
    let agent = d.sb.pid("agent").expect("agent pid");
    d.wait_status("telenet known", |st| {
        st["Subscription"]["profile"] == "telenet" && st["Subscription"]["state"] == "known"
    });
    let monitor = d.sb.monitor_agent();
    d.sb.stop("modem");
    let st = d.wait_status("subscription unknown", |st| {
        st["Subscription"]["state"] == "unknown"
    });
    // The last known profile is kept; the source does not flip.
    assert_eq!(st["Subscription"]["profile"], "telenet", "{st:#}");
    assert_eq!(st["UpdateSource"]["source"], "telenet");
    assert!(d.status_text().contains("telenet (last known"));
    d.sb.start("modem");
    d.wait_status("subscription known again", |st| {
        st["Subscription"]["state"] == "known" && st["Subscription"]["profile"] == "telenet"
    });
    assert_eq!(d.sb.pid("agent"), Some(agent));
    assert!(common::process_alive(agent));
    let text = monitor.finish();
    assert!(!text.contains("SubscriptionChanged"), "{text}");
    assert!(
        d.history()
            .iter()
            .all(|h| h["action"] != "subscription-changed")
    );
}

#[test]
fn lost_integrity_drops_the_operator_channel_but_not_the_security_update() {
    let d = Device::up(Setup::default());
    d.wait_status("subscription telenet, device trusted", |st| {
        st["Subscription"]["profile"] == "telenet" && st["IntegrityState"] == "trusted"
    });
    // Approved by the operator, but the device is rooted before the check: a kernel that
    // loaded an unsigned module (taint bit E).
    d.publish("1.0.1", "2026-11-01", HIGH, hours(1));
    d.approve("telenet", "1.0.1");
    std::fs::write(d.sb.dir().join("device/proc/sys/kernel/tainted"), "8192\n").unwrap();
    let monitor = d.sb.monitor_agent();
    d.check();
    monitor.wait_for_text("IntegrityChanged", WAIT);
    let st = d.wait_state("reboot-required");
    assert_eq!(st["IntegrityState"], "compromised", "{st:#}");
    let taint = st["IntegrityFindings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["probe"] == "kernel-taint")
        .cloned()
        .unwrap();
    assert_eq!(taint["outcome"], "fail", "{taint}");
    // The security update still comes, from the manufacturer, and the reason says why.
    assert_eq!(st["Available"]["version"], "1.0.1", "{st:#}");
    assert_eq!(st["Available"]["source"], "manufacturer", "{st:#}");
    assert_eq!(st["UpdateSource"]["source"], "manufacturer", "{st:#}");
    let reason = st["UpdateSource"]["reason"].as_str().unwrap();
    assert!(reason.contains("integrity compromised"), "{reason}");
    let access = std::fs::read_to_string(d.sb.dir().join("http/access.log")).unwrap();
    assert!(!access.contains("GET /telenet/targets/"), "{access}");
    assert!(access.contains("GET /manufacturer/targets/"), "{access}");
}

/// A deferred update is still announced, with why it waits and what it costs; the user's
/// `ssuctl install` takes it over the metered link (issue 13).
#[test]
fn a_deferred_update_is_announced_with_its_cost_and_ssuctl_install_takes_it_now() {
    let d = Device::up(Setup::default());
    d.wait_status("NetworkManager running", |st| {
        st["Components"]["networkmanager"] == "running"
    });
    d.set_metered(3); // guess-yes: what NetworkManager says for a cellular link
    let signals = common::control::Signals::start(&d.sb);
    d.publish("1.0.1", "2026-11-01", HIGH, hours(200));
    d.check();
    let st = d.wait_state("deferred");
    let offer = &st["Available"];
    assert_eq!(offer["version"], "1.0.1", "{st:#}");
    let size = offer["size"].as_u64().unwrap();
    let deferred = offer["deferred"].as_str().unwrap();
    assert!(deferred.starts_with("metered connection"), "{deferred}");
    assert!(
        deferred.contains(&format!("costs {size} bytes")),
        "{deferred}"
    );
    // Downloads anyway after `[link_cost] max_deferral` (7 days).
    let until = offer["deferred_until"].as_i64().unwrap();
    let week = Timestamp::now().as_second() + 7 * 86_400;
    assert!((week - 120..=week).contains(&until), "{until} vs {week}");
    let announced = signals.wait_for("UpdateAvailable", WAIT, |a| a[0]["version"] == "1.0.1");
    assert_eq!(announced[0]["deferred"], deferred, "{announced:#?}");
    let access = std::fs::read_to_string(d.sb.dir().join("http/access.log")).unwrap();
    assert!(!access.contains(".raucb"), "downloaded while deferred");

    let out = d.sb.ssuctl(&["install", "--yes"]);
    assert!(out.status.success(), "{out:?}\n{}", d.sb.agent_log());
    let st = d.wait_state("reboot-required");
    assert!(st["UpdateSource"].get("deferred").is_none(), "{st:#}");
    let access = std::fs::read_to_string(d.sb.dir().join("http/access.log")).unwrap();
    assert!(access.contains("1.0.1.raucb"), "{access}");
    // Announced once, not again when it downloaded.
    assert_eq!(signals.all("UpdateAvailable").len(), 1);
}
