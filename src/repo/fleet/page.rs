//! The fleet page: one static HTML file (inline CSS, no script, nothing fetched) with a row
//! per device saying what its newest verified report says — patch level, last seen,
//! stale or unverified, rolled back, compromised, support — and which rows need attention.
//!
//! Every value in a report is the device's to choose (a rooted device can put markup in its
//! model name), so every one is escaped and cut to [`MAX_TEXT`] characters; a report that
//! does not verify shows why and nothing else. [`render`] is pure: the same store and
//! options give the same bytes.

use std::fmt::Write as _;

use jiff::{SignedDuration, Timestamp};
use serde_json::Value;

use super::view::{DeviceView, Shown};
use crate::repo::bulletin::escape;

/// Longest text shown of any one report value; the rest is cut (a report may be 1 MiB).
pub const MAX_TEXT: usize = 200;
/// Most integrity findings listed per device.
const MAX_FINDINGS: usize = 5;
/// A device clock further than this from the hub's time of receipt is pointed out.
const CLOCK_SKEW: SignedDuration = SignedDuration::from_mins(10);

/// How the page judges time.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// The page's "now": ages are measured to it.
    pub generated_at: Timestamp,
    /// A device whose newest report arrived longer ago than this is marked silent (the
    /// agent delivers at least once per check interval).
    pub silent_after: SignedDuration,
}

/// How bad a mark is: the row and the badge are coloured by it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Ok,
    Warn,
    Bad,
}

impl Level {
    fn class(self) -> &'static str {
        match self {
            Level::Ok => "ok",
            Level::Warn => "warn",
            Level::Bad => "bad",
        }
    }
}

/// What needs a person's attention on one device; empty when nothing does.
pub fn attention(d: &DeviceView, opts: &Options) -> Vec<(Level, String)> {
    let mut marks = Vec::new();
    let r = match &d.report {
        Shown::Verified(r) => r,
        Shown::NoReport => return vec![(Level::Warn, "no report yet".into())],
        Shown::Unverified(_) => return vec![(Level::Bad, "report does not verify".into())],
    };
    if let Some(at) = d.received_at
        && opts.generated_at.duration_since(at) > opts.silent_after
    {
        marks.push((
            Level::Warn,
            format!("silent for {}", span(opts.generated_at.duration_since(at))),
        ));
    }
    match r["staleness"].as_str() {
        Some("current") => {}
        Some("overdue") => marks.push((Level::Bad, "patch level overdue".into())),
        Some("unverified") => marks.push((Level::Bad, "updates unverified".into())),
        _ => marks.push((Level::Warn, "staleness unknown".into())),
    }
    if rolled_back(r) {
        marks.push((Level::Bad, "rolled back".into()));
    } else if r["update_state"] == "failed" {
        marks.push((Level::Warn, "update failed".into()));
    }
    match r["integrity"]["state"].as_str() {
        Some("trusted") => {}
        Some("compromised") => marks.push((Level::Bad, "compromised".into())),
        _ => marks.push((Level::Warn, "integrity unknown".into())),
    }
    match r["support"]["state"].as_str() {
        Some("ended") => marks.push((Level::Bad, "support ended".into())),
        Some("ending-soon") => marks.push((Level::Warn, "support ending soon".into())),
        _ => {}
    }
    marks
}

/// The report says the last install was rolled back, or a slot is marked bad (RAUC marks the
/// slot it fell back from).
fn rolled_back(r: &Value) -> bool {
    r["update_state"] == "rolled-back" || slots(r).any(|s| s["boot_status"] == "bad")
}

fn slots(r: &Value) -> impl Iterator<Item = &Value> {
    r["boot"]["slots"].as_array().into_iter().flatten()
}

/// A report value as text: strings as they are, `null` or `""` as "unknown", anything else
/// in its JSON form — cut to [`MAX_TEXT`] characters and escaped.
fn text(v: &Value) -> String {
    let s = match v {
        Value::String(s) if !s.is_empty() => s.clone(),
        Value::Null | Value::String(_) => "unknown".to_owned(),
        other => other.to_string(),
    };
    escape(&cut(&s))
}

fn cut(s: &str) -> String {
    if s.chars().count() > MAX_TEXT {
        let mut c: String = s.chars().take(MAX_TEXT).collect();
        c.push('…');
        c
    } else {
        s.to_owned()
    }
}

/// "3 h", "2 days": how long a span is, to the unit that matters.
fn span(d: SignedDuration) -> String {
    let s = d.as_secs().max(0);
    match s {
        0..60 => format!("{s} s"),
        60..3600 => format!("{} min", s / 60),
        3600..172_800 => format!("{} h", s / 3600),
        _ => format!("{} days", s / 86_400),
    }
}

/// "2026-11-30T07:00:00Z (1 h ago)" for a report time; the raw text when it is not a time.
fn time_ago(v: &Value, now: Timestamp) -> String {
    match v.as_str().and_then(|s| s.parse::<Timestamp>().ok()) {
        Some(t) => format!("{} ({})", escape(v.as_str().unwrap_or("")), ago(t, now)),
        None => text(v),
    }
}

fn ago(t: Timestamp, now: Timestamp) -> String {
    let d = now.duration_since(t);
    if d < -SignedDuration::from_mins(1) {
        format!("{} in the future", span(-d))
    } else {
        format!("{} ago", span(d))
    }
}

const STYLE: &str = "\
:root{--fg:#1b1f24;--muted:#57606a;--line:#d0d7de;--bg:#fff;--panel:#f6f8fa}\
*{box-sizing:border-box}\
body{margin:0;font:14px/1.45 system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;color:var(--fg);background:var(--bg)}\
header,main{max-width:110rem;margin:0 auto;padding:1rem 1.5rem}\
header{border-bottom:1px solid var(--line)}\
h1{margin:.2rem 0;font-size:1.6rem}\
.muted,.key{color:var(--muted)}\
.key{font:.8rem ui-monospace,monospace}\
table{border-collapse:collapse;width:100%}\
th,td{text-align:left;padding:.45rem .55rem;border-top:1px solid var(--line);vertical-align:top;overflow-wrap:anywhere}\
th{background:var(--panel);font-weight:600}\
tr.bad td:first-child{border-left:4px solid #d1242f}tr.warn td:first-child{border-left:4px solid #d4a72c}\
tr.ok td:first-child{border-left:4px solid #1a7f37}\
.level{font-weight:600;font-size:1.05rem}.model{font-weight:600}\
.mark{display:inline-block;margin:0 .25rem .2rem 0;padding:0 .45rem;border-radius:1rem;font-size:.8rem;font-weight:600}\
.mark.bad{background:#d1242f;color:#fff}.mark.warn{background:#fff8c5;color:#4d2d00}\
.mark.ok{background:#dafbe1;color:#116329}\
.v-bad{color:#a40e26;font-weight:600}.v-warn{color:#9a6700;font-weight:600}\
.finding{font-size:.85rem;color:var(--muted)}\
th:nth-child(1){width:10rem}th:nth-child(2){width:9rem}th:nth-child(3){width:9rem}\
th:nth-child(4),th:nth-child(5){width:17rem}th:nth-child(6){width:13rem}th:nth-child(8){width:9rem}";

/// The whole page: devices needing attention first (worst first), then by hardware id and
/// key id.
pub fn render(devices: &[DeviceView], opts: &Options) -> String {
    let mut rows: Vec<(&DeviceView, Vec<(Level, String)>)> =
        devices.iter().map(|d| (d, attention(d, opts))).collect();
    let worst = |marks: &[(Level, String)]| marks.iter().map(|m| m.0).max().unwrap_or(Level::Ok);
    let hw = |d: &DeviceView| {
        d.verified()
            .and_then(|r| r["device"]["hardware_id"].as_str().map(str::to_owned))
            .unwrap_or_default()
    };
    rows.sort_by(|(a, am), (b, bm)| {
        worst(bm)
            .cmp(&worst(am))
            .then_with(|| hw(a).cmp(&hw(b)))
            .then_with(|| a.key_id.cmp(&b.key_id))
    });
    let needing = rows.iter().filter(|(_, m)| !m.is_empty()).count();
    let verified = devices.iter().filter(|d| d.verified().is_some()).count();

    let mut h = String::new();
    h.push_str("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n");
    // Belt and braces: even if some text escaped its escaping, the browser runs no script and
    // loads nothing.
    h.push_str(
        "<meta http-equiv=\"Content-Security-Policy\" \
         content=\"default-src 'none'; style-src 'unsafe-inline'\">\n",
    );
    h.push_str("<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n");
    h.push_str("<title>Fleet patch status</title>\n");
    let _ = writeln!(h, "<style>{STYLE}</style>\n</head>\n<body>\n<header>");
    h.push_str("<h1>Fleet patch status</h1>\n");
    let _ = writeln!(
        h,
        "<p class=\"muted\" id=\"summary\">Generated at {} from the newest signed report of \
         each device: {} devices, {verified} with a verified report, {needing} needing \
         attention. Each report is verified again with the device's enrolled key; what a \
         verified report says is still the device's own word (integrity is self-reported).</p>",
        Timestamp::from_second(opts.generated_at.as_second()).unwrap_or(opts.generated_at),
        devices.len()
    );
    h.push_str("</header>\n<main>\n");
    if devices.is_empty() {
        h.push_str("<p>No device is enrolled and no report was received.</p>\n");
    } else {
        h.push_str(
            "<table>\n<thead><tr><th>Device</th><th>Attention</th><th>Security patch \
             level</th><th>Last seen</th><th>Update checks</th><th>Boot</th>\
             <th>Integrity</th><th>Support</th></tr></thead>\n<tbody>\n",
        );
        for (d, marks) in &rows {
            row(&mut h, d, marks, opts);
        }
        h.push_str("</tbody>\n</table>\n");
    }
    h.push_str("</main>\n</body>\n</html>\n");
    h
}

fn row(h: &mut String, d: &DeviceView, marks: &[(Level, String)], opts: &Options) {
    let level = marks.iter().map(|m| m.0).max().unwrap_or(Level::Ok);
    // The key id was checked to be hex when stored; escaped anyway.
    let id = escape(&d.key_id);
    let _ = write!(
        h,
        "<tr id=\"device-{id}\" class=\"{}\"><td class=\"device\">",
        level.class()
    );
    let r = d.verified();
    if let Some(r) = r {
        let _ = write!(
            h,
            "<div class=\"model\">{}</div><div>{}</div>",
            text(&r["device"]["model"]),
            text(&r["device"]["hardware_id"])
        );
    }
    let _ = write!(
        h,
        "<div class=\"key\" title=\"{id}\">key {}…</div></td><td class=\"attention\">",
        escape(&d.key_id.chars().take(12).collect::<String>())
    );
    if marks.is_empty() {
        h.push_str("<span class=\"mark ok\">ok</span>");
    }
    for (l, m) in marks {
        let _ = write!(h, "<span class=\"mark {}\">{}</span>", l.class(), escape(m));
    }
    h.push_str("</td>");
    match &d.report {
        Shown::Verified(r) => verified_cells(h, d, r, opts),
        Shown::NoReport => {
            h.push_str("<td colspan=\"6\" class=\"muted\">Enrolled; no report received yet.</td>");
        }
        Shown::Unverified(why) => {
            let _ = write!(
                h,
                "<td colspan=\"6\" class=\"unverified\"><div class=\"v-bad\">The newest \
                 report{} does not verify with the enrolled key; nothing in it is shown.</div>\
                 <div>{}</div>{}</td>",
                d.counter
                    .map(|c| format!(" (counter {c})"))
                    .unwrap_or_default(),
                escape(&cut(why)),
                d.received_at
                    .map(|t| format!("<div>Received {t} ({})</div>", ago(t, opts.generated_at)))
                    .unwrap_or_default()
            );
        }
    }
    h.push_str("</tr>\n");
}

fn verified_cells(h: &mut String, d: &DeviceView, r: &Value, opts: &Options) {
    let now = opts.generated_at;
    let inst = &r["installed"];
    let _ = write!(
        h,
        "<td class=\"patch\"><div class=\"level\">{}</div><div>version {}</div>",
        text(&inst["security_patch_level"]),
        text(&inst["version"])
    );
    if !inst["applied_at"].is_null() {
        let _ = write!(
            h,
            "<div class=\"muted\">applied {}</div>",
            text(&inst["applied_at"])
        );
    }
    if r["available"].is_object() {
        let _ = write!(
            h,
            "<div class=\"v-warn\">offered {} ({})</div>",
            text(&r["available"]["version"]),
            text(&r["available"]["security_patch_level"])
        );
    }
    let _ = write!(
        h,
        "</td><td class=\"seen\"><div>report {}</div>",
        time_ago(&r["time"], now)
    );
    if let Some(at) = d.received_at {
        let _ = write!(h, "<div>received {at} ({})</div>", ago(at, now));
        if let Some(t) = r["time"].as_str().and_then(|s| s.parse::<Timestamp>().ok()) {
            let skew = at.duration_since(t);
            if skew.abs() > CLOCK_SKEW {
                let _ = write!(
                    h,
                    "<div class=\"v-warn\">device clock {} {}</div>",
                    span(skew.abs()),
                    if skew.is_positive() {
                        "behind"
                    } else {
                        "ahead"
                    }
                );
            }
        }
    }
    let _ = write!(
        h,
        "<div class=\"muted\">counter {}</div></td>",
        d.counter.unwrap_or_default()
    );

    let staleness = &r["staleness"];
    let class = if staleness == "current" {
        ""
    } else {
        " class=\"v-bad\""
    };
    let m = &r["metadata"];
    let _ = write!(
        h,
        "<td class=\"checks\"><div{class}>{}</div><div>last verified {}</div>",
        text(staleness),
        if m["last_verified_at"].is_null() {
            "never".to_owned()
        } else {
            time_ago(&m["last_verified_at"], now)
        }
    );
    if m["last_check"]["verified"] == false {
        let _ = write!(
            h,
            "<div class=\"v-warn\">last check failed: {}</div>",
            text(&m["last_check"]["message"])
        );
    }
    let _ = write!(
        h,
        "<div class=\"muted\">metadata targets v{}, timestamp v{}</div></td>",
        text(&m["versions"]["targets"]),
        text(&m["versions"]["timestamp"])
    );

    let state = &r["update_state"];
    let class = if rolled_back(r) {
        " class=\"v-bad\""
    } else {
        ""
    };
    let _ = write!(
        h,
        "<td class=\"boot\"><div>booted {}</div><div{class}>{}</div>",
        text(&r["boot"]["booted_slot"]),
        text(state)
    );
    for s in slots(r) {
        let class = if s["boot_status"] == "bad" {
            "v-bad"
        } else {
            "muted"
        };
        let bundle = match &s["bundle_version"] {
            Value::String(v) if v.is_empty() => String::new(),
            v => format!(", bundle {}", text(v)),
        };
        let _ = write!(
            h,
            "<div class=\"{class}\">slot {} {}{bundle}, {}</div>",
            text(&s["bootname"]),
            text(&s["state"]),
            text(&s["boot_status"])
        );
    }
    if let Some(e) = r["last_error"].as_str()
        && !e.is_empty()
    {
        let _ = write!(h, "<div class=\"v-warn\">{}</div>", text(&r["last_error"]));
    }
    h.push_str("</td>");

    let integrity = &r["integrity"];
    let class = match integrity["state"].as_str() {
        Some("trusted") => "",
        Some("compromised") => " class=\"v-bad\"",
        _ => " class=\"v-warn\"",
    };
    let _ = write!(
        h,
        "<td class=\"integrity\"><div{class}>{}</div><div class=\"muted\">self-reported, \
         key in {}</div>",
        text(&integrity["state"]),
        text(&r["key"]["storage"])
    );
    let failing: Vec<&Value> = integrity["findings"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|f| f["outcome"] == "fail")
        .collect();
    for f in failing.iter().take(MAX_FINDINGS) {
        let _ = write!(
            h,
            "<div class=\"finding\">{} {}: {}</div>",
            text(&f["probe"]),
            text(&f["outcome"]),
            text(&f["evidence"])
        );
    }
    if failing.len() > MAX_FINDINGS {
        let _ = write!(h, "<div>and {} more</div>", failing.len() - MAX_FINDINGS);
    }
    let support = &r["support"];
    let _ = write!(
        h,
        "</td><td class=\"support\"><div>{}</div><div class=\"muted\">{}</div></td>",
        text(&support["state"]),
        if support["end"].is_null() {
            "no end date known".to_owned()
        } else {
            format!("until {}", text(&support["end"]))
        }
    );
}
