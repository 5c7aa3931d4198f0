//! Desktop notifications (`[notify] desktop = true`): a new verified security update is
//! announced through `org.freedesktop.Notifications.Notify` on the agent's bus, titled as a
//! security update, its text built only from the verified metadata (FS.25 COM-0010/0020).
//!
//! The agent runs on the system bus; this suits devices whose one UI runs a notification
//! server there (kiosks, in-vehicle screens). Desktops with per-user sessions should rather
//! let a session agent listen to `UpdateAvailable`.

use std::collections::HashMap;

use tokio::sync::broadcast;
use zbus::Connection;
use zbus::Variant as Value;

use crate::engine::Notice;
use crate::metadata::schema::Severity;
use crate::status::Offer;

/// Client side of the freedesktop notification server.
#[zbus::proxy(
    interface = "org.freedesktop.Notifications",
    default_service = "org.freedesktop.Notifications",
    default_path = "/org/freedesktop/Notifications"
)]
pub trait Notifications {
    #[allow(clippy::too_many_arguments)]
    fn notify(
        &self,
        app_name: &str,
        replaces_id: u32,
        app_icon: &str,
        summary: &str,
        body: &str,
        actions: &[&str],
        hints: HashMap<&str, Value<'_>>,
        expire_timeout: i32,
    ) -> zbus::Result<u32>;
}

/// One notification's content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub summary: String,
    pub body: String,
    /// freedesktop urgency: 1 normal, 2 critical.
    pub urgency: u8,
}

/// Most CVEs listed by id in a body (the rest are counted).
const MAX_LISTED: usize = 5;

/// The notification for a verified offer. Metadata text is escaped: servers may render
/// the body as markup, and no text from a server may turn into a link or formatting.
pub fn message(offer: &Offer) -> Message {
    let m = &offer.target.meta;
    let sev = m.max_severity();
    let mut body = format!(
        "Version {} brings security patch level {}.",
        escape(&m.version),
        m.security_patch_level
    );
    if !m.cves.is_empty() {
        let ids: Vec<String> = m
            .cves
            .iter()
            .take(MAX_LISTED)
            .map(|c| format!("{} ({})", escape(&c.id), c.severity.as_str()))
            .collect();
        body.push_str(&format!(
            " It fixes {} vulnerabilit{}: {}",
            m.cves.len(),
            if m.cves.len() == 1 { "y" } else { "ies" },
            ids.join(", ")
        ));
        if m.cves.len() > MAX_LISTED {
            body.push_str(&format!(" and {} more", m.cves.len() - MAX_LISTED));
        }
        body.push('.');
    }
    if m.requires_reboot {
        body.push_str(&format!(
            " Installing needs a restart (about {} s of downtime).",
            m.expected_downtime_s
        ));
    }
    let summary = match sev {
        Some(s @ (Severity::Critical | Severity::High)) => {
            format!("Security update available ({})", s.as_str())
        }
        _ => "Security update available".to_owned(),
    };
    Message {
        summary,
        body,
        urgency: if sev == Some(Severity::Critical) {
            2
        } else {
            1
        },
    }
}

fn escape(s: &str) -> String {
    s.chars()
        .filter(|c| !c.is_control())
        .map(|c| match c {
            '&' => "&amp;".to_owned(),
            '<' => "&lt;".to_owned(),
            '>' => "&gt;".to_owned(),
            c => c.to_string(),
        })
        .collect()
}

/// Shows a notification for every new verified update; runs until the engine stops. A
/// missing notification server is logged, never fatal.
pub async fn run(conn: Connection, mut notices: broadcast::Receiver<Notice>) {
    loop {
        let offer = match notices.recv().await {
            Ok(Notice::UpdateAvailable(offer)) => offer,
            Ok(_) => continue,
            Err(broadcast::error::RecvError::Lagged(_)) => continue,
            Err(broadcast::error::RecvError::Closed) => return,
        };
        let msg = message(&offer);
        let result = async {
            let proxy = NotificationsProxy::new(&conn).await?;
            let hints = HashMap::from([
                ("urgency", Value::U8(msg.urgency)),
                ("category", Value::from("x-ssu.security-update")),
                ("desktop-entry", Value::from("ssu-agent")),
            ]);
            // The first call may start a notification server by D-Bus activation; a server
            // that never answers must not hold this task (and the notices behind it).
            let limit = crate::activation::START_TIMEOUT;
            let call = proxy.notify(
                "ssu-agent",
                0,
                "software-update-urgent",
                &msg.summary,
                &msg.body,
                &[],
                hints,
                -1,
            );
            match tokio::time::timeout(limit, call).await {
                Ok(result) => result,
                Err(_) => Err(zbus::Error::InputOutput(std::sync::Arc::new(
                    std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        format!("no answer within {} s", limit.as_secs()),
                    ),
                ))),
            }
        }
        .await;
        match result {
            Ok(id) => tracing::info!(id, "desktop notification shown"),
            Err(e) => tracing::warn!(error = %e, "cannot show a desktop notification"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metadata::client::BundleTarget;
    use crate::metadata::schema::{Cve, sample_security_bundle};

    fn offer() -> Offer {
        let meta = sample_security_bundle("1.0.1", "1.0", "2026-11-01".parse().unwrap());
        Offer::new(
            BundleTarget {
                name: "bundles/ssu-sandbox/1.0.1.raucb".into(),
                length: 4096,
                sha256: [0; 32],
                url: "https://example.com/x".parse().unwrap(),
                legacy_url: None,
                meta,
            },
            "manufacturer".into(),
        )
    }

    #[test]
    fn title_says_security_update_and_body_is_the_metadata() {
        let m = message(&offer());
        assert_eq!(m.summary, "Security update available (critical)");
        assert_eq!(
            m.body,
            "Version 1.0.1 brings security patch level 2026-11-01. It fixes 1 vulnerability: \
             CVE-2026-4242 (critical). Installing needs a restart (about 60 s of downtime)."
        );
        assert_eq!(m.urgency, 2);
    }

    #[test]
    fn hostile_metadata_text_is_escaped_and_long_lists_are_cut() {
        let mut o = offer();
        o.target.meta.version = "1.0.1<a href=\"https://evil\">click</a>\u{1b}[31m".into();
        o.target.meta.cves = (0..40)
            .map(|i| Cve {
                id: format!("CVE-2026-{i:04}&<b>"),
                severity: Severity::Low,
                cvss: None,
                summary: "x".into(),
            })
            .collect();
        let m = message(&o);
        assert!(
            !m.body.contains('<') && !m.body.contains('\u{1b}'),
            "{}",
            m.body
        );
        assert!(m.body.contains("&lt;a href"), "{}", m.body);
        assert!(m.body.contains("40 vulnerabilities"), "{}", m.body);
        assert!(m.body.contains("and 35 more"), "{}", m.body);
        assert_eq!(m.summary, "Security update available");
        assert_eq!(m.urgency, 1);
    }
}
