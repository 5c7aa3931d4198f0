//! `ssuctl cves`: what the pending update fixes and what the installed ones fixed, from
//! `Available` and `GetHistory` (JSON forms, so this is pure).

use std::fmt::Write;

use jiff::tz::TimeZone;
use serde_json::{Value, json};

use super::render::long_time;

fn s<'a>(v: &'a Value, k: &str) -> &'a str {
    v.get(k).and_then(Value::as_str).unwrap_or("")
}

/// `{"pending": {version, cves: [...]}|null, "installed": [{version, at, cves: [ids]}]}`.
pub fn collect(status: &Value, history: &[Value]) -> Value {
    let pending = status
        .get("Available")
        .filter(|a| a.get("version").is_some())
        .map(|a| {
            json!({
                "version": s(a, "version"),
                "security_patch_level": s(a, "security_patch_level"),
                "cves": a.get("cves").cloned().unwrap_or_else(|| json!([])),
            })
        });
    let installed: Vec<Value> = history
        .iter()
        .filter(|e| s(e, "action") == "installed")
        .map(|e| {
            json!({
                "version": s(e, "version"),
                "at": e.get("at").cloned().unwrap_or(json!(0)),
                "cves": e.get("cves").cloned().unwrap_or_else(|| json!([])),
            })
        })
        .collect();
    json!({ "pending": pending, "installed": installed })
}

/// The text form of [`collect`].
pub fn render(c: &Value, tz: &TimeZone) -> String {
    let mut out = String::new();
    match c.get("pending").filter(|p| !p.is_null()) {
        Some(p) => {
            let _ = writeln!(out, "Pending update {} fixes:", s(p, "version"));
            let cves = p
                .get("cves")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            if cves.is_empty() {
                let _ = writeln!(out, "  (no CVEs listed)");
            }
            for cve in cves {
                let cvss = cve
                    .get("cvss")
                    .and_then(Value::as_f64)
                    .map(|x| format!(", CVSS {x:.1}"))
                    .unwrap_or_default();
                let _ = writeln!(
                    out,
                    "  {} ({}{cvss}): {}",
                    s(&cve, "id"),
                    s(&cve, "severity"),
                    s(&cve, "summary")
                );
            }
        }
        None => {
            let _ = writeln!(out, "No update is pending.");
        }
    }
    let installed = c
        .get("installed")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if installed.is_empty() {
        let _ = writeln!(out, "No installed update recorded.");
    } else {
        let _ = writeln!(out, "Installed updates fixed:");
        for e in installed {
            let when = long_time(e.get("at").and_then(Value::as_u64).unwrap_or(0), tz)
                .unwrap_or_else(|| "unknown time".into());
            let ids: Vec<&str> = e
                .get("cves")
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            let ids = if ids.is_empty() {
                "no CVEs listed".to_owned()
            } else {
                ids.join(", ")
            };
            let _ = writeln!(out, "  {} ({when}): {ids}", s(&e, "version"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pending_and_installed() {
        let st = json!({"Available": {"version": "1.0.2", "security_patch_level": "2026-12-01",
            "cves": [{"id": "CVE-2026-1", "severity": "high", "cvss": 8.1, "summary": "overflow"}]}});
        let h = vec![
            json!({"action": "refused", "version": "9", "cves": ["CVE-X"]}),
            json!({"action": "installed", "version": "1.0.1", "at": 1_795_000_000u64,
                   "cves": ["CVE-2026-4242"]}),
        ];
        let c = collect(&st, &h);
        assert_eq!(c["pending"]["cves"][0]["id"], "CVE-2026-1");
        assert_eq!(c["installed"].as_array().unwrap().len(), 1);
        let text = render(&c, &TimeZone::UTC);
        assert!(
            text.contains("Pending update 1.0.2 fixes:\n  CVE-2026-1 (high, CVSS 8.1): overflow\n"),
            "{text}"
        );
        assert!(
            text.contains("Installed updates fixed:\n  1.0.1 ("),
            "{text}"
        );
        assert!(text.contains("): CVE-2026-4242\n"), "{text}");
        assert!(!text.contains("CVE-X"));
    }

    #[test]
    fn empty_or_malformed_input_says_so() {
        for (st, h) in [
            (json!({}), vec![]),
            (
                json!({"Available": {}}),
                vec![json!("junk"), json!({"action": 5})],
            ),
            (
                json!({"Available": "x"}),
                vec![json!({"action": "installed"})],
            ),
        ] {
            let text = render(&collect(&st, &h), &TimeZone::UTC);
            assert!(text.contains("No update is pending."), "{text}");
        }
    }
}
