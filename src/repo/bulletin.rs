//! `bulletin`: the website channel of FS.25 §3. A static security bulletin (one `index.html`,
//! inline CSS, no script, nothing fetched from elsewhere) rendered from the repository's
//! signed metadata: per model the newest security patch level, the updates with the
//! vulnerabilities they fix, the end of security support and the replacement plan.
//!
//! The metadata is loaded and checked by [`verify`] exactly as `ssu-repo verify` does (tough,
//! expiry enforced, every target's fields validated); a repository with any problem is refused
//! rather than half-rendered, so the page never shows text the devices would refuse.
//! [`render`] is pure: the same metadata and `generated_at` give the same bytes.

use std::collections::BTreeSet;
use std::fmt::{self, Write as _};
use std::path::{Path, PathBuf};

use jiff::Timestamp;
use jiff::civil::Date;
use jiff::tz::TimeZone;

use super::{Described, RepoError, verify};
use crate::metadata::schema::{BundleMeta, DeviceMeta, Kind};

/// The file written into the output directory.
pub const BULLETIN_FILE: &str = "index.html";

/// Why no bulletin was written.
#[derive(Debug, thiserror::Error)]
pub enum BulletinError {
    #[error(transparent)]
    Repo(#[from] RepoError),
    /// The repository loaded but some target failed its checks: the page would be built
    /// from metadata devices refuse.
    #[error(
        "{}: does not verify (see ssu-repo verify); no bulletin written:\n  {}",
        public.display(),
        problems.join("\n  ")
    )]
    Unverified {
        public: PathBuf,
        problems: Vec<String>,
    },
}

/// What the page shows: verified metadata only, plus the publisher's own repository name.
#[derive(Debug, Clone, Default)]
pub struct BulletinData {
    /// From `repo.toml` (the publisher's local file, next to its keys); `None` for a bare
    /// public directory.
    pub repository: Option<String>,
    pub targets_version: u64,
    pub devices: Vec<DeviceMeta>,
    pub bundles: Vec<BundleMeta>,
}

/// What `bulletin` wrote.
#[derive(Debug, Clone)]
pub struct Bulletin {
    pub path: PathBuf,
    pub models: usize,
    pub updates: usize,
    /// Distinct CVE (or advisory) ids.
    pub cves: usize,
}

impl fmt::Display for Bulletin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "wrote {} ({} models, {} updates, {} CVEs)",
            self.path.display(),
            self.models,
            self.updates,
            self.cves
        )
    }
}

/// Verifies the repository in `dir` (or a bare public directory) and writes
/// `out_dir/index.html`, replacing it atomically.
pub async fn bulletin(
    dir: &Path,
    out_dir: &Path,
    generated_at: Timestamp,
) -> Result<Bulletin, BulletinError> {
    let report = verify(dir).await?;
    if !report.is_ok() {
        return Err(BulletinError::Unverified {
            public: report.public,
            problems: report.problems,
        });
    }
    let targets = report.roles.iter().find(|r| r.role == "targets");
    let mut data = BulletinData {
        repository: report.name,
        targets_version: targets.map_or(0, |r| r.version),
        ..BulletinData::default()
    };
    for t in report.targets {
        match t.described {
            Some(Described::Device(d)) => data.devices.push(d),
            Some(Described::Bundle(b)) => data.bundles.push(b),
            None => {}
        }
    }
    let html = render(&data, generated_at);
    let path = write_page(out_dir, &html)?;
    let cves: BTreeSet<&str> = data
        .bundles
        .iter()
        .flat_map(|b| b.cves.iter().map(|c| c.id.as_str()))
        .collect();
    Ok(Bulletin {
        path,
        models: data.devices.len(),
        updates: data.bundles.len(),
        cves: cves.len(),
    })
}

/// Written under a temporary name and renamed, so a web server serving `out_dir` never sends
/// half a page.
fn write_page(out_dir: &Path, html: &str) -> Result<PathBuf, RepoError> {
    std::fs::create_dir_all(out_dir).map_err(RepoError::io(out_dir, "cannot create"))?;
    let path = out_dir.join(BULLETIN_FILE);
    let tmp = out_dir.join(format!(".{BULLETIN_FILE}.tmp-{}", std::process::id()));
    let result = std::fs::write(&tmp, html)
        .map_err(RepoError::io(&tmp, "cannot write"))
        .and_then(|()| std::fs::rename(&tmp, &path).map_err(RepoError::io(&path, "cannot write")));
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map(|()| path)
}

// ---------------------------------------------------------------------------------------------
// rendering

/// Text for HTML element content and double-quoted attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A link for an https URL; anything else (the schema allows only https, but `render` takes
/// any data) is shown as text, never as a `javascript:` or other live link.
fn link(url: &str, label: &str) -> String {
    if url.starts_with("https://") {
        format!(
            "<a href=\"{}\" rel=\"noopener noreferrer\">{}</a>",
            escape(url),
            escape(label)
        )
    } else {
        escape(url)
    }
}

const STYLE: &str = "\
:root{--fg:#1b1f24;--muted:#57606a;--line:#d0d7de;--bg:#fff;--panel:#f6f8fa}\
*{box-sizing:border-box}\
body{margin:0;font:15px/1.5 system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;color:var(--fg);background:var(--bg)}\
header,main{max-width:60rem;margin:0 auto;padding:1rem 1.5rem}\
header{border-bottom:1px solid var(--line)}\
h1{margin:.2rem 0;font-size:1.7rem}\
h2{margin:0 0 .5rem;font-size:1.35rem}\
h3{font-size:1.05rem;margin:1rem 0 .4rem}\
h4{margin:0;font-size:1rem}\
p,dd,td,h2,h4{overflow-wrap:anywhere}\
.muted,.hwid{color:var(--muted)}\
.hwid{font:.85rem ui-monospace,monospace;font-weight:normal;margin-left:.5rem}\
section{border:1px solid var(--line);border-radius:8px;padding:1rem 1.25rem;margin:1.25rem 0}\
dl.facts{display:grid;grid-template-columns:max-content 1fr;gap:.25rem 1rem;margin:0}\
dt{color:var(--muted)}dd{margin:0}\
.level{font-weight:600}\
.ended{color:#a40e26;font-weight:600}.soon{color:#9a6700}\
article{background:var(--panel);border-radius:6px;padding:.75rem 1rem;margin:.6rem 0}\
.meta{margin:.2rem 0 .5rem;color:var(--muted);font-size:.9rem}\
table{border-collapse:collapse;width:100%;font-size:.9rem;table-layout:fixed}\
th,td{text-align:left;padding:.3rem .5rem;border-top:1px solid var(--line);vertical-align:top}\
th:nth-child(1){width:11rem}th:nth-child(2){width:6rem}th:nth-child(3){width:4rem}\
td.id{font-family:ui-monospace,monospace;overflow-wrap:anywhere}\
.sev,.kind{display:inline-block;padding:0 .45rem;border-radius:1rem;font-size:.8rem;font-weight:600}\
.kind{background:#ddf4ff;color:#0a3069;margin-left:.4rem}\
.sev-critical{background:#a40e26;color:#fff}.sev-high{background:#d1242f;color:#fff}\
.sev-medium{background:#fb8f44;color:#1b1f24}.sev-low{background:#fff8c5;color:#4d2d00}\
.sev-none{background:#eaeef2;color:#1b1f24}";

/// The whole page. Pure and deterministic: models by hardware id, updates newest first.
pub fn render(data: &BulletinData, generated_at: Timestamp) -> String {
    let today = generated_at.to_zoned(TimeZone::UTC).date();
    let title = match &data.repository {
        Some(name) => format!("Security bulletin: {}", escape(name)),
        None => "Security bulletin".to_owned(),
    };
    let mut h = String::new();
    h.push_str("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n");
    // Belt and braces: even if some text escaped its escaping, the browser runs no script and
    // loads nothing.
    h.push_str(
        "<meta http-equiv=\"Content-Security-Policy\" \
         content=\"default-src 'none'; style-src 'unsafe-inline'\">\n",
    );
    h.push_str("<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n");
    let _ = writeln!(h, "<title>{title}</title>");
    let _ = writeln!(h, "<style>{STYLE}</style>\n</head>\n<body>\n<header>");
    let _ = writeln!(h, "<h1>{title}</h1>");
    // Not the metadata's expiry: it moves with every signing, and the page should change only
    // when what it says changes.
    let _ = writeln!(
        h,
        "<p class=\"muted\">Generated at {generated_at} from the signed update metadata \
         (targets version {}). Devices verify the same metadata before they install \
         anything.</p>",
        data.targets_version
    );
    h.push_str("</header>\n<main>\n");

    let mut devices: Vec<&DeviceMeta> = data.devices.iter().collect();
    devices.sort_by(|a, b| a.hardware_id.cmp(&b.hardware_id));
    let bundles = newest_first(&data.bundles);
    if devices.is_empty() && bundles.is_empty() {
        h.push_str("<p>Nothing is published yet.</p>\n");
    }
    for d in &devices {
        let updates: Vec<&BundleMeta> = bundles
            .iter()
            .copied()
            .filter(|b| applies_to(b, &d.hardware_id))
            .collect();
        model_section(&mut h, d, &updates, today);
    }
    let other: Vec<&BundleMeta> = bundles
        .iter()
        .copied()
        .filter(|b| !devices.iter().any(|d| applies_to(b, &d.hardware_id)))
        .collect();
    if !other.is_empty() {
        h.push_str("<section class=\"other\">\n<h2>Updates for hardware without a published model record</h2>\n");
        for b in other {
            update_article(&mut h, b, true);
        }
        h.push_str("</section>\n");
    }
    h.push_str("</main>\n</body>\n</html>\n");
    h
}

/// Newest release first; ties broken by the target name so the order never depends on input
/// order.
fn newest_first(bundles: &[BundleMeta]) -> Vec<&BundleMeta> {
    let mut v: Vec<&BundleMeta> = bundles.iter().collect();
    v.sort_by(|a, b| {
        (b.released, b.security_patch_level)
            .cmp(&(a.released, a.security_patch_level))
            .then_with(|| a.target_name().cmp(&b.target_name()))
    });
    v
}

/// A bundle that names no hardware is for every device with its compatible; model records do
/// not carry a compatible, so such a bundle is listed for every model.
fn applies_to(b: &BundleMeta, hardware_id: &str) -> bool {
    b.hardware_ids.is_empty() || b.hardware_ids.iter().any(|h| h == hardware_id)
}

fn model_section(h: &mut String, d: &DeviceMeta, updates: &[&BundleMeta], today: Date) {
    let _ = writeln!(
        h,
        "<section class=\"model\" id=\"model-{}\">",
        escape(&d.hardware_id)
    );
    let name = if d.model.is_empty() {
        &d.hardware_id
    } else {
        &d.model
    };
    let _ = writeln!(
        h,
        "<h2>{}<span class=\"hwid\">{}</span></h2>\n<dl class=\"facts\">",
        escape(name),
        escape(&d.hardware_id)
    );
    let _ = writeln!(
        h,
        "<dt>Security patch level</dt><dd class=\"level\">{}</dd>",
        patch_levels(updates)
    );
    let _ = writeln!(h, "<dt>Launched</dt><dd>{}</dd>", d.launch_date);
    if d.support_end < today {
        let _ = writeln!(
            h,
            "<dt>Security support</dt><dd class=\"ended\">Ended on {}: end of life, \
             no further security updates</dd>",
            d.support_end
        );
    } else {
        let _ = writeln!(
            h,
            "<dt>Security support</dt><dd>Until {}</dd>",
            d.support_end
        );
    }
    if let Some(r) = &d.replacement {
        let _ = write!(h, "<dt>Replacement</dt><dd>{}", escape(&r.text));
        if let Some(url) = &r.url {
            let _ = write!(h, " ({})", link(url, url));
        }
        h.push_str("</dd>\n");
    }
    h.push_str("</dl>\n<h3>Updates</h3>\n");
    if updates.is_empty() {
        h.push_str("<p class=\"muted\">No update published.</p>\n");
    }
    for b in updates {
        update_article(h, b, false);
    }
    h.push_str("</section>\n");
}

/// The newest patch level of each RAUC compatible among `updates` (usually one).
fn patch_levels(updates: &[&BundleMeta]) -> String {
    let mut newest: Vec<(&str, Date)> = Vec::new();
    for b in updates {
        match newest.iter_mut().find(|(c, _)| *c == b.compatible) {
            Some((_, level)) => *level = (*level).max(b.security_patch_level),
            None => newest.push((&b.compatible, b.security_patch_level)),
        }
    }
    newest.sort();
    match newest.as_slice() {
        [] => "none published".to_owned(),
        [(_, level)] => level.to_string(),
        many => many
            .iter()
            .map(|(c, level)| format!("{level} ({})", escape(c)))
            .collect::<Vec<_>>()
            .join(", "),
    }
}

fn kind_label(kind: Kind) -> &'static str {
    match kind {
        Kind::Security => "security update",
        Kind::Feature => "feature release",
        Kind::Maintenance => "maintenance update",
    }
}

fn update_article(h: &mut String, b: &BundleMeta, show_hardware: bool) {
    let released = b.released.to_zoned(TimeZone::UTC).date();
    let _ = writeln!(
        h,
        "<article class=\"update\">\n<h4>{}<span class=\"kind\">{}</span></h4>",
        escape(&b.version),
        kind_label(b.kind)
    );
    let _ = write!(
        h,
        "<p class=\"meta\">Released {released} · patch level {} · image {}",
        b.security_patch_level,
        escape(&b.compatible)
    );
    if show_hardware && !b.hardware_ids.is_empty() {
        let ids: Vec<String> = b.hardware_ids.iter().map(|i| escape(i)).collect();
        let _ = write!(h, " · for {}", ids.join(", "));
    }
    if let Some(url) = &b.notes_url {
        let _ = write!(h, " · {}", link(url, "release notes"));
    }
    h.push_str("</p>\n");
    if b.cves.is_empty() {
        h.push_str("<p class=\"muted\">Fixes no listed vulnerability.</p>\n");
    } else {
        h.push_str(
            "<table class=\"cves\">\n<thead><tr><th>CVE</th><th>Severity</th><th>CVSS</th>\
             <th>Summary</th></tr></thead>\n<tbody>\n",
        );
        for c in &b.cves {
            let cvss = c.cvss.map(|s| format!("{s:.1}")).unwrap_or_default();
            let _ = writeln!(
                h,
                "<tr><td class=\"id\">{}</td><td><span class=\"sev sev-{sev}\">{sev}</span></td>\
                 <td>{cvss}</td><td>{}</td></tr>",
                escape(&c.id),
                escape(&c.summary),
                sev = c.severity.as_str(),
            );
        }
        h.push_str("</tbody>\n</table>\n");
    }
    h.push_str("</article>\n");
}

#[cfg(test)]
mod tests;
