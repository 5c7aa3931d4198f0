//! The bulletin page from fixed metadata: what each model shows, deterministic bytes, hostile
//! text escaped.

use super::*;
use crate::metadata::schema::{Cve, Replacement, Severity, sample_security_bundle};

fn date(s: &str) -> Date {
    s.parse().unwrap()
}

fn at(s: &str) -> Timestamp {
    s.parse().unwrap()
}

fn device(hw: &str, model: &str, end: &str) -> DeviceMeta {
    DeviceMeta {
        hardware_id: hw.into(),
        model: model.into(),
        launch_date: date("2022-01-15"),
        support_end: date(end),
        replacement: Some(Replacement {
            text: "Replace with Gateway 2".into(),
            url: Some("https://example.com/gw2".into()),
        }),
        wave_start: None,
    }
}

fn data() -> BulletinData {
    let mut newer = sample_security_bundle("1.0.2", "1.0", date("2026-11-01"));
    newer.released = at("2026-11-20T00:00:00Z");
    let mut older = sample_security_bundle("1.0.1", "1.0", date("2026-10-01"));
    older.released = at("2026-10-05T00:00:00Z");
    older.cves[0].id = "CVE-2026-1111".into();
    older.cves[0].severity = Severity::Medium;
    older.cves[0].cvss = None;
    let mut only_b = sample_security_bundle("2.0.1", "2.0", date("2026-11-15"));
    only_b.compatible = "other".into();
    only_b.hardware_ids = vec!["gw-b".into()];
    BulletinData {
        repository: Some("Acme Devices".into()),
        targets_version: 3,
        devices: vec![
            device("gw-b", "Gateway B", "2025-06-30"),
            device("gw-a", "Gateway A", "2029-01-15"),
        ],
        bundles: vec![older, only_b, newer],
    }
}

const NOW: &str = "2026-11-27T12:00:00Z";

/// The part of `html` between `from` and the next `to`.
fn between<'a>(html: &'a str, from: &str, to: &str) -> &'a str {
    let start = html
        .find(from)
        .unwrap_or_else(|| panic!("{from} in {html}"));
    let rest = &html[start..];
    &rest[..rest.find(to).unwrap_or(rest.len())]
}

#[test]
fn each_model_shows_its_patch_level_updates_cves_support_and_replacement() {
    let html = render(&data(), at(NOW));
    assert!(html.contains("<title>Security bulletin: Acme Devices</title>"));
    assert!(html.contains("Generated at 2026-11-27T12:00:00Z"));
    assert!(html.contains("(targets version 3)"));

    let a = between(&html, "id=\"model-gw-a\"", "</section>");
    assert!(a.contains("Gateway A"), "{a}");
    assert!(a.contains("<dd class=\"level\">2026-11-01</dd>"), "{a}");
    assert!(a.contains("<dd>Until 2029-01-15</dd>"), "{a}");
    assert!(a.contains("Replace with Gateway 2"), "{a}");
    assert!(a.contains("<a href=\"https://example.com/gw2\""), "{a}");
    // Newest first, with the CVE rows of each.
    let (p102, p101) = (a.find("1.0.2<span").unwrap(), a.find("1.0.1<span").unwrap());
    assert!(p102 < p101, "{a}");
    assert!(
        a.contains("Released 2026-11-20 · patch level 2026-11-01"),
        "{a}"
    );
    assert!(a.contains(
        "<td class=\"id\">CVE-2026-4242</td><td><span class=\"sev sev-critical\">critical</span></td><td>9.8</td><td>Remote code execution</td>"
    ), "{a}");
    assert!(a.contains(
        "<td class=\"id\">CVE-2026-1111</td><td><span class=\"sev sev-medium\">medium</span></td><td></td>"
    ), "{a}");
    assert!(!a.contains("2.0.1"), "gw-b's update listed for gw-a: {a}");

    // gw-b: its own update plus the ones for every device, patch level per compatible,
    // and support ended before NOW.
    let b = between(&html, "id=\"model-gw-b\"", "</section>");
    assert!(b.contains("2.0.1<span"), "{b}");
    assert!(b.contains("1.0.2<span"), "{b}");
    assert!(
        b.contains("<dd class=\"level\">2026-11-15 (other), 2026-11-01 (ssu-sandbox)</dd>"),
        "{b}"
    );
    assert!(
        b.contains("class=\"ended\">Ended on 2025-06-30: end of life"),
        "{b}"
    );
    // Models in hardware id order.
    assert!(html.find("model-gw-a").unwrap() < html.find("model-gw-b").unwrap());
    assert!(!html.contains("without a published model record"));
}

#[test]
fn same_metadata_gives_the_same_bytes_whatever_the_input_order() {
    let one = render(&data(), at(NOW));
    let mut shuffled = data();
    shuffled.devices.reverse();
    shuffled.bundles.rotate_left(1);
    assert_eq!(render(&shuffled, at(NOW)), one);
    assert_eq!(render(&data(), at(NOW)), one);
    // generated_at is the only other input.
    let later = render(&data(), at("2026-11-28T00:00:00Z"));
    assert_ne!(later, one);
    assert_eq!(
        later.replace("2026-11-28T00:00:00Z", NOW),
        one,
        "generated_at changed more than its line"
    );
}

#[test]
fn hostile_metadata_is_escaped_everywhere() {
    let evil = "<script>alert(\"x\")</script> & 'quote' \"dq\" <img src=x onerror=y>";
    let long = format!("{}<b>{}", "&".repeat(50_000), "x".repeat(50_000));
    let mut d = data();
    d.repository = Some(evil.into());
    d.devices[0].hardware_id = evil.into();
    d.devices[0].model = evil.into();
    d.devices[0].replacement = Some(Replacement {
        text: evil.into(),
        url: Some("javascript:alert(1)".into()),
    });
    d.bundles[0].hardware_ids = vec![evil.into()];
    d.bundles[0].version = evil.into();
    d.bundles[0].compatible = evil.into();
    d.bundles[0].notes_url = Some(format!("https://x.example/\"><script>{evil}"));
    d.bundles[0].cves = vec![Cve {
        id: evil.into(),
        severity: Severity::High,
        cvss: Some(7.5),
        summary: long.clone(),
    }];
    let html = render(&d, at(NOW));

    // The only markup is ours: no script element, no injected attribute, no live
    // javascript: link.
    assert!(!html.contains("<script"), "unescaped <script>");
    assert!(!html.contains("<img"));
    assert!(!html.contains("<b>"));
    assert!(!html.contains("href=\"javascript:"));
    assert!(!html.contains("\"dq\""));
    assert!(!html.contains("'quote'"));
    let escaped = "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &#39;quote&#39; \
                   &quot;dq&quot; &lt;img src=x onerror=y&gt;";
    assert!(html.contains(&format!("<title>Security bulletin: {escaped}</title>")));
    assert!(html.contains(&format!("<td class=\"id\">{escaped}</td>")));
    assert!(html.contains(&format!("id=\"model-{escaped}\"")));
    assert!(html.contains("javascript:alert(1)"), "shown as text");
    assert!(html.contains("href=\"https://x.example/&quot;&gt;&lt;script&gt;"));
    // The long summary is there in full, escaped.
    assert!(html.contains(&format!(
        "<td>{}&lt;b&gt;{}</td>",
        "&amp;".repeat(50_000),
        "x".repeat(50_000)
    )));
    // Every `<` left starts one of the page's own tags.
    for tag in html.split('<').skip(1) {
        let name: String = tag
            .trim_start_matches('/')
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '!')
            .collect();
        assert!(
            [
                "!DOCTYPE", "html", "head", "meta", "title", "style", "body", "header", "h1", "h2",
                "h3", "h4", "p", "main", "section", "span", "dl", "dt", "dd", "a", "article",
                "table", "thead", "tbody", "tr", "th", "td"
            ]
            .contains(&name.as_str()),
            "unexpected tag <{name}"
        );
    }
}

#[test]
fn updates_without_a_model_record_are_listed_apart() {
    let d = BulletinData {
        bundles: vec![{
            let mut b = sample_security_bundle("1.0.1", "1.0", date("2026-11-01"));
            b.hardware_ids = vec!["gw-x".into()];
            b
        }],
        ..BulletinData::default()
    };
    let html = render(&d, at(NOW));
    let other = between(&html, "without a published model record", "</section>");
    assert!(other.contains("1.0.1<span"), "{other}");
    assert!(other.contains("· for gw-x"), "{other}");
    assert!(html.contains("<title>Security bulletin</title>"));

    let empty = render(&BulletinData::default(), at(NOW));
    assert!(empty.contains("Nothing is published yet."));
}

#[test]
fn escape_covers_the_five_html_specials() {
    assert_eq!(escape("a&b<c>d\"e'f"), "a&amp;b&lt;c&gt;d&quot;e&#39;f");
    assert_eq!(escape("ünïcödé — ok"), "ünïcödé — ok");
}
