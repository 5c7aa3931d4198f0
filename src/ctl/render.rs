//! Human-readable output of `ssuctl`, written like a settings screen.
//!
//! Input is the JSON form of what the agent serves (`GetStatus`, `GetHistory`), so these
//! functions are pure and tested with literal values. Times are shown in the given time zone.
//!
//! Strings in that JSON may come from signed-but-hostile metadata (target names, reasons
//! that quote them) or from a history written by an older agent; a terminal must never see
//! their control characters raw (ESC sequences rewrite the screen or the window title). So
//! every entry point escapes them first ([`printable`]), whatever the agent already checked.

use std::fmt::Write;

use jiff::Timestamp;
use jiff::tz::TimeZone;
use serde_json::Value;

use crate::config::parse_date;

fn str_at<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or("")
}

/// `v` with every control character in its strings (keys too) escaped as `\u{1b}`.
pub fn printable(v: &Value) -> Value {
    fn text(s: &str) -> String {
        if !s.chars().any(char::is_control) {
            return s.to_owned();
        }
        s.chars()
            .map(|c| {
                if c.is_control() {
                    c.escape_unicode().to_string()
                } else {
                    c.to_string()
                }
            })
            .collect()
    }
    match v {
        Value::String(s) => Value::String(text(s)),
        Value::Array(a) => Value::Array(a.iter().map(printable).collect()),
        Value::Object(o) => Value::Object(o.iter().map(|(k, v)| (text(k), printable(v))).collect()),
        other => other.clone(),
    }
}

fn u64_at(v: &Value, key: &str) -> u64 {
    v.get(key).and_then(Value::as_u64).unwrap_or(0)
}

/// `"2026-11-01"` → `"1 November 2026"`; anything else is shown as given, or "unknown".
pub fn long_date(s: &str) -> String {
    if s.is_empty() {
        return "unknown".to_owned();
    }
    match parse_date(s) {
        Ok(d) => d.strftime("%-d %B %Y").to_string(),
        Err(_) => s.to_owned(),
    }
}

/// Seconds since the epoch → `"27 November 2026, 19:45 UTC"`; 0 → `None`.
pub fn long_time(secs: u64, tz: &TimeZone) -> Option<String> {
    if secs == 0 {
        return None;
    }
    let t = Timestamp::from_second(i64::try_from(secs).ok()?).ok()?;
    Some(
        t.to_zoned(tz.clone())
            .strftime("%-d %B %Y, %H:%M %Z")
            .to_string(),
    )
}

/// "Up to date" only with fresh verified metadata and nothing waiting to be installed.
fn update_status(st: &Value) -> String {
    let staleness = str_at(st, "Staleness");
    let pending = st.get("Available").and_then(|a| a.get("version")).is_some()
        || !matches!(str_at(st, "State"), "idle" | "checking" | "");
    if staleness == "current" && pending {
        return format!(
            "a security update is not installed yet ({})",
            str_at(st, "State")
        );
    }
    staleness_text(staleness).to_owned()
}

fn staleness_text(s: &str) -> &'static str {
    match s {
        "current" => "up to date (verified recently)",
        "overdue" => "overdue: the installed security patches are old",
        "unverified" => "unverified: could not confirm recently whether updates are available",
        _ => "unknown",
    }
}

/// The `ssuctl status` screen. `history` (newest first) supplies what the installed release
/// fixed.
pub fn status(st: &Value, history: &[Value], tz: &TimeZone) -> String {
    let st = &printable(st);
    let history: &[Value] = &history.iter().map(printable).collect::<Vec<_>>();
    let mut out = String::new();
    let mut line = |label: &str, value: &str| {
        let _ = writeln!(out, "{:<22}{}", format!("{label}:"), value);
    };
    line(
        "Security patch level",
        &long_date(str_at(st, "SecurityPatchLevel")),
    );
    line(
        "Applied on",
        &long_time(u64_at(st, "PatchAppliedAt"), tz).unwrap_or_else(|| "factory image".to_owned()),
    );
    let installed = str_at(st, "InstalledVersion");
    line("Installed version", or_unknown(installed));
    if let Some(ids) = fixed_by(history, installed) {
        line("Fixed by it", &ids);
    }
    line("Update state", or_unknown(str_at(st, "State")));
    line("Automatic install", &auto_install(st, tz));
    if let Some(held) = inhibitors(st) {
        line("Held by", &held);
    }
    if let Some(offer) = st.get("Available").filter(|a| a.get("version").is_some()) {
        line("Update available", &offer_line(offer));
    }
    line("Update status", &update_status(st));
    let last = match long_time(u64_at(st, "LastCheck"), tz) {
        Some(t) => {
            let result = str_at(st, "LastCheckResult");
            if result.is_empty() {
                t
            } else {
                format!("{t} ({result})")
            }
        }
        None => "never".to_owned(),
    };
    line("Last check", &last);
    let model = str_at(st, "Model");
    let hw = str_at(st, "HardwareId");
    line(
        "Model",
        &match (model.is_empty(), hw.is_empty()) {
            (false, false) => format!("{model} ({hw})"),
            (false, true) => model.to_owned(),
            (true, false) => hw.to_owned(),
            (true, true) => "unknown".to_owned(),
        },
    );
    line("Support", &support(st));
    if let Some(plan) = replacement(st) {
        line("Replacement", &plan);
    }
    line("Compatible", or_unknown(str_at(st, "Compatible")));
    line("Booted slot", or_unknown(str_at(st, "BootSlot")));
    line("Mobile network", &subscription(st));
    for (label, value) in cellular_lines(st, tz) {
        line(label, &value);
    }
    line("Integrity", &integrity(st));
    line("Components", &components(st));
    if let Some(reports) = fleet_reports(st, tz) {
        line("Fleet reports", &reports);
    }
    let err = str_at(st, "LastError");
    if !err.is_empty() {
        line("Last error", err);
    }
    let slots = st.get("Slots").and_then(Value::as_array);
    if let Some(slots) = slots.filter(|s| !s.is_empty()) {
        let _ = writeln!(out, "Slots:");
        for s in slots {
            let _ = writeln!(
                out,
                "  {:<12} {:<3} {:<9} {:<5} {}",
                str_at(s, "name"),
                str_at(s, "bootname"),
                str_at(s, "state"),
                str_at(s, "boot_status"),
                str_at(s, "bundle_version"),
            );
        }
    }
    out
}

/// The CVEs the installed release fixed, from its "installed" history entry.
fn fixed_by(history: &[Value], installed: &str) -> Option<String> {
    let entry = history
        .iter()
        .find(|e| str_at(e, "action") == "installed" && str_at(e, "version") == installed)?;
    let ids: Vec<&str> = entry
        .get("cves")?
        .as_array()?
        .iter()
        .filter_map(Value::as_str)
        .collect();
    (!ids.is_empty()).then(|| ids.join(", "))
}

/// One line for an offered update, and its CVEs.
fn offer_line(offer: &Value) -> String {
    let mut text = format!(
        "{} update {} (security patch level {})",
        str_at(offer, "kind"),
        str_at(offer, "version"),
        long_date(str_at(offer, "security_patch_level"))
    );
    if let Some(cves) = offer.get("cves").and_then(Value::as_array) {
        for c in cves {
            let _ = write!(
                text,
                "\n{:<22}{} ({}): {}",
                "",
                str_at(c, "id"),
                str_at(c, "severity"),
                str_at(c, "summary")
            );
        }
    }
    if offer.get("requires_reboot").and_then(Value::as_bool) == Some(true) {
        let downtime = u64_at(offer, "expected_downtime_s");
        let _ = write!(
            text,
            "\n{:<22}needs a reboot (about {downtime} s of downtime)",
            ""
        );
    }
    text
}

fn or_unknown(s: &str) -> &str {
    if s.is_empty() { "unknown" } else { s }
}

fn support(st: &Value) -> String {
    let end = str_at(st, "SupportEnd");
    let state = or_unknown(str_at(st, "SupportState"));
    let cannot = st
        .get("ReplacementInfo")
        .map_or("", |r| str_at(r, "cannot_update"));
    match state {
        "ended" if !cannot.is_empty() => {
            format!("END OF LIFE: this device can no longer be updated: {cannot}")
        }
        "ended" => format!(
            "END OF LIFE: security updates ended on {}; this device no longer gets security fixes",
            long_date(end)
        ),
        "ending-soon" => format!("ending soon: security updates until {}", long_date(end)),
        _ if end.is_empty() => state.to_owned(),
        _ => format!("{state}, security updates until {}", long_date(end)),
    }
}

/// The replacement plan (text, url), when the agent knows one.
fn replacement(st: &Value) -> Option<String> {
    let r = st.get("ReplacementInfo")?;
    let text = str_at(r, "text");
    let url = str_at(r, "url");
    match (text.is_empty(), url.is_empty()) {
        (true, true) => None,
        (false, true) => Some(text.to_owned()),
        (true, false) => Some(url.to_owned()),
        (false, false) => Some(format!("{text} ({url})")),
    }
}

/// Automatic installation: on/off, and a postponement.
fn auto_install(st: &Value, tz: &TimeZone) -> String {
    let on = st
        .get("AutoInstall")
        .and_then(Value::as_bool)
        .unwrap_or(true);
    let mut text = if on {
        "on"
    } else {
        "off (install with: ssuctl install)"
    }
    .to_owned();
    if let Some(t) = long_time(u64_at(st, "PostponedUntil"), tz) {
        let _ = write!(text, "; Postponed until {t}");
    }
    text
}

/// The host inhibitors held, if any.
fn inhibitors(st: &Value) -> Option<String> {
    let list: Vec<&str> = st
        .get("Inhibitors")?
        .as_array()?
        .iter()
        .filter_map(Value::as_str)
        .collect();
    (!list.is_empty()).then(|| {
        format!(
            "{} (installation and reboot wait until released)",
            list.join(", ")
        )
    })
}

fn subscription(st: &Value) -> String {
    let Some(sub) = st.get("Subscription") else {
        return "unknown".to_owned();
    };
    match str_at(sub, "modem") {
        "running" => {}
        "unavailable" => return "ModemManager not running".to_owned(),
        _ => return "unknown".to_owned(),
    }
    if u64_at(sub, "modems") == 0 {
        return "no modem".to_owned();
    }
    let mut parts = Vec::new();
    let name = str_at(sub, "operator_name");
    let home = str_at(sub, "home_mcc_mnc");
    match (name.is_empty(), home.is_empty()) {
        (false, false) => parts.push(format!("{name} ({home})")),
        (false, true) => parts.push(name.to_owned()),
        (true, false) => parts.push(home.to_owned()),
        (true, true) => parts.push("no SIM".to_owned()),
    }
    let iccid = str_at(sub, "iccid");
    if !iccid.is_empty() {
        parts.push(format!("SIM {iccid}"));
    }
    parts.join(", ")
}

/// Subscription profile, update source and why an update waits or is deferred.
fn cellular_lines(st: &Value, tz: &TimeZone) -> Vec<(&'static str, String)> {
    let mut lines = Vec::new();
    if let Some(sub) = st.get("Subscription") {
        let profile = str_at(sub, "profile");
        if !profile.is_empty() {
            let value = match str_at(sub, "state") {
                "known" => profile.to_owned(),
                _ => format!("{profile} (last known; SIM not readable now)"),
            };
            lines.push(("Subscription", value));
        }
    }
    let Some(src) = st.get("UpdateSource") else {
        return lines;
    };
    let source = str_at(src, "source");
    if source.is_empty() {
        return lines;
    }
    let reason = str_at(src, "reason");
    lines.push((
        "Update source",
        if reason.is_empty() {
            source.to_owned()
        } else {
            format!("{source} ({reason})")
        },
    ));
    if let Some(t) = long_time(u64_at(src, "waiting_until"), tz) {
        lines.push(("Waiting until", t));
    }
    let deferred = str_at(src, "deferred");
    if !deferred.is_empty() {
        lines.push(("Deferred", deferred.to_owned()));
    }
    lines
}

/// The integrity verdict, and the evidence of each failing probe on its own line.
fn integrity(st: &Value) -> String {
    let mut text = or_unknown(str_at(st, "IntegrityState")).to_owned();
    let findings = st.get("IntegrityFindings").and_then(Value::as_array);
    for f in findings.into_iter().flatten() {
        if str_at(f, "outcome") == "fail" {
            let _ = write!(
                text,
                "\n{:<22}{}: {}",
                "",
                str_at(f, "probe"),
                str_at(f, "evidence")
            );
        }
    }
    text
}

/// Delivery of signed reports to the fleet server, when it is configured: how many wait, when
/// one last arrived, why the last attempt failed, and why the queue waits (a spent budget).
fn fleet_reports(st: &Value, tz: &TimeZone) -> Option<String> {
    let d = st.get("ReportDelivery")?;
    if d.get("configured").and_then(Value::as_bool) != Some(true) {
        return None;
    }
    let mut text = match u64_at(d, "queued") {
        0 => "none queued".to_owned(),
        n => format!("{n} queued"),
    };
    let _ = match long_time(u64_at(d, "last_delivered"), tz) {
        Some(t) => write!(text, " (last delivered {t}"),
        None => write!(text, " (never delivered"),
    };
    let err = str_at(d, "last_error");
    if !err.is_empty() {
        let _ = write!(text, "; last error: {err}");
    }
    let waiting = str_at(d, "waiting");
    if !waiting.is_empty() {
        let _ = write!(text, "; waiting: {waiting}");
    }
    text.push(')');
    Some(text)
}

fn components(st: &Value) -> String {
    let Some(map) = st.get("Components").and_then(Value::as_object) else {
        return "unknown".to_owned();
    };
    map.iter()
        .map(|(k, v)| format!("{k} {}", v.as_str().unwrap_or("unknown")))
        .collect::<Vec<_>>()
        .join(", ")
}

/// What `ssuctl check` prints after the check ran.
pub fn check(st: &Value, tz: &TimeZone) -> String {
    let st = &printable(st);
    let when = long_time(u64_at(st, "LastCheck"), tz).unwrap_or_else(|| "never".to_owned());
    let result = or_unknown(str_at(st, "LastCheckResult"));
    format!(
        "Checked {when}: {result}\nUpdate status: {}\n",
        update_status(st)
    )
}

/// The `ssuctl history` list, newest first.
pub fn history(entries: &[Value], tz: &TimeZone) -> String {
    if entries.is_empty() {
        return "No updates recorded yet.\n".to_owned();
    }
    let entries: &[Value] = &entries.iter().map(printable).collect::<Vec<_>>();
    let mut out = String::new();
    for e in entries {
        let when = long_time(u64_at(e, "at"), tz).unwrap_or_else(|| "unknown time".to_owned());
        let _ = write!(out, "{when}  {} {}", str_at(e, "kind"), str_at(e, "action"));
        let version = str_at(e, "version");
        if !version.is_empty() {
            let _ = write!(out, " {version}");
        }
        let level = str_at(e, "security_patch_level");
        if !level.is_empty() {
            let _ = write!(out, " (security patch level {})", long_date(level));
        }
        let _ = writeln!(out);
        let detail = str_at(e, "detail");
        if !detail.is_empty() {
            let _ = writeln!(out, "    {detail}");
        }
        if let Some(cves) = e
            .get("cves")
            .and_then(Value::as_array)
            .filter(|c| !c.is_empty())
        {
            let ids: Vec<&str> = cves.iter().filter_map(Value::as_str).collect();
            let _ = writeln!(out, "    fixes {}", ids.join(", "));
        }
    }
    out
}

#[cfg(test)]
mod tests;
