//! A device without a clock on the sandbox (issue 13, ETSI 5.3-8, TUF freeze protection):
//! the agent runs with its system clock starting in 1970 (libfaketime, only the agent's
//! process), the dbusmock modem is the only one that knows the time, and the update server
//! is plain HTTP (no trusted `Date`).

mod common;

use common::device::*;

/// What `LastCheckResult` and `ssuctl check` say about the last check.
fn last_result(d: &Device) -> String {
    d.status()["LastCheckResult"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

#[test]
fn a_device_whose_clock_starts_in_1970_checks_by_the_networks_time_and_refuses_replayed_metadata() {
    let d = Device::new("");
    d.publish_security_update();
    // A modem registered on its home network that has not sent the time (yet).
    d.sb.start("modem");
    d.sb.set_agent_env(&common::faketime_env("1970-01-02 00:00:00"));
    d.sb.start("agent");
    // The update waits for the user: this test is about checking, not installing.
    let out = d.sb.ssuctl(&["auto-install", "off"]);
    assert!(out.status.success(), "{out:?}");
    assert!(
        d.sb.agent_log().contains("1970-01-02T"),
        "the agent's clock is not in 1970:\n{}",
        d.sb.agent_log()
    );

    // No time from anywhere: by a 1970 clock every expired repository looks fresh, so the
    // device does not check, and says why and what would fix it.
    let said = d.check();
    assert!(said.contains("never been set"), "{said}");
    let st = d.status();
    assert_eq!(st["LastCheckVerified"], false, "{st:#}");
    assert_eq!(st["Staleness"], "unverified", "{st:#}");
    assert!(
        st["Available"].as_object().is_none_or(|a| a.is_empty()),
        "{st:#}"
    );

    // The network sends its time (NITZ): the next check verifies by it. The agent reads it
    // when ModemManager says it changed, so ask until a check has seen it.
    d.sb.modem(&["network-time", "now"]);
    d.sb.wait_for("a check verified by the network's time", WAIT, || {
        d.sb.ssuctl(&["check"]).status.code() == Some(0)
    });
    // It downloads first, then offers the update to the user.
    let st = d.wait_state("available");
    assert_eq!(st["LastCheckVerified"], true, "{st:#}");
    assert_eq!(st["Available"]["version"], "1.0.1", "{st:#}");
    assert_ne!(st["Staleness"], "unverified", "{st:#}");
    let out = d.sb.ssuctl(&["status"]);
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("1.0.1"), "{text}");
    // Records keep the device's own clock (what its journal and ssuctl show), not a mix.
    let last = st["LastCheck"].as_u64().unwrap();
    assert!((86_400..2 * 86_400).contains(&last), "LastCheck {last}");

    // A replay: validly signed metadata, at a version above what the device has verified (so
    // the version floor does not catch it), whose timestamp expired a day ago. The 1970 clock
    // (and tough, which judges by it) calls it fresh; the network's time refuses it.
    ssu_repo(&[
        "refresh",
        d.repo_dir(),
        "--timestamp-expires",
        "-1d",
        "--allow-expired",
    ]);
    let said = d.check();
    assert!(said.contains("replayed or stale"), "{said}");
    let st = d.status();
    assert_eq!(st["LastCheckVerified"], false, "{st:#}");
    assert!(
        last_result(&d).contains("replayed or stale"),
        "{}",
        last_result(&d)
    );
    assert!(
        st["Available"].as_object().is_none_or(|a| a.is_empty()),
        "nothing from the refused check stands: {st:#}"
    );
    assert_eq!(d.installs_into_b(), 0, "RAUC wrote slot B");
}

/// Without the network's time an HTTPS server cannot give the time either: by a 1970 clock
/// its certificate is not valid yet, so no `Date` is ever authenticated. The device does not
/// check, and says it is the clock.
#[test]
fn a_1970_clock_without_the_networks_time_does_not_check_over_https_either() {
    let sb = common::Sandbox::up_with(common::Options {
        agent: false,
        ..common::Options::default()
    });
    let repo = sb.dir().join("repo");
    ssu_repo(&["init", repo.to_str().unwrap(), "--role", "manufacturer"]);
    let https = common::http::Nginx::start_tls(&repo.join("public"));
    let dir = sb.dir().display().to_string();
    let root = repo.join("public/metadata/1.root.json");
    let toml = format!(
        "{}ca_file = \"{}\"\n",
        common::device_toml(&dir, https.url(), &root.display().to_string()),
        https.ca_pem().display()
    );
    std::fs::create_dir_all(sb.dir().join("etc")).unwrap();
    std::fs::write(sb.agent_config(), toml).unwrap();
    sb.set_agent_env(&common::faketime_env("1970-01-02 00:00:00"));
    sb.start("agent");

    let out = sb.ssuctl(&["check"]);
    let said = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(4), "{out:?}");
    assert!(said.contains("never been set"), "{said}");
    assert!(said.contains("certificate not valid yet"), "{said}");
    let out = sb.ssuctl(&["status", "--json"]);
    let st: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(st["Staleness"], "unverified", "{st:#}");
    assert_eq!(st["LastCheckVerified"], false, "{st:#}");
}
