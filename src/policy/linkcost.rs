//! Whether a download may start on the current link (SEC-0020's note on constrained links).
//!
//! A metered link (NetworkManager says `yes` or `guess-yes`) or a roaming modem
//! (registration state 5, 7 or 10) makes bytes expensive: updates below the configured
//! override severity wait for a cheaper link, and an optional monthly budget caps what
//! may still be downloaded over such links. Updates at or above the override severity always
//! proceed — a critical fix is worth the bytes.

use crate::config::LinkCostConfig;
use crate::metadata::schema::Severity;

/// MMModem3gppRegistrationState values that mean roaming: roaming, roaming SMS-only,
/// roaming CSFB-not-preferred.
pub const ROAMING_STATES: [u32; 3] = [5, 7, 10];

/// Whether a registration state is roaming.
pub fn is_roaming(registration_state: Option<u32>) -> bool {
    registration_state.is_some_and(|r| ROAMING_STATES.contains(&r))
}

/// The link as the adapters see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Link {
    pub metered: bool,
    pub roaming: bool,
}

impl Link {
    /// Bytes over this link count against the monthly budget.
    pub fn costly(&self) -> bool {
        self.metered || self.roaming
    }
}

/// What one download would be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Download {
    pub bytes: u64,
    /// Highest CVE severity it fixes, `None` when it lists none.
    pub max_severity: Option<Severity>,
}

/// The verdict; `Defer` carries the reason shown in the status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkDecision {
    Proceed,
    Defer(String),
}

/// Judges one download. `used_this_month` is what was already downloaded over costly links in
/// the current calendar month.
pub fn judge(
    cfg: &LinkCostConfig,
    link: Link,
    download: Download,
    used_this_month: u64,
) -> LinkDecision {
    if !link.costly() {
        return LinkDecision::Proceed;
    }
    if download
        .max_severity
        .is_some_and(|s| s >= cfg.override_severity)
    {
        return LinkDecision::Proceed;
    }
    let below = format!(
        "fixes nothing rated {} or higher",
        cfg.override_severity.as_str()
    );
    if link.roaming && cfg.defer_when_roaming {
        return LinkDecision::Defer(format!("roaming: deferred until home network ({below})"));
    }
    if link.metered && cfg.defer_when_metered {
        return LinkDecision::Defer(format!(
            "metered connection: deferred until an unmetered one ({below})"
        ));
    }
    if let Some(budget) = cfg.monthly_budget_bytes
        && used_this_month.saturating_add(download.bytes) > budget
    {
        return LinkDecision::Defer(format!(
            "monthly budget for metered/roaming downloads exhausted: {used_this_month} of \
             {budget} bytes used, this update needs {}",
            download.bytes
        ));
    }
    LinkDecision::Proceed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roaming_states() {
        for (r, roaming) in [
            (None, false),
            (Some(1), false),
            (Some(5), true),
            (Some(6), false),
            (Some(7), true),
            (Some(10), true),
            (Some(u32::MAX), false),
        ] {
            assert_eq!(is_roaming(r), roaming, "{r:?}");
        }
    }

    #[test]
    fn table() {
        let defaults = LinkCostConfig::default();
        let budget = LinkCostConfig {
            defer_when_metered: false,
            defer_when_roaming: false,
            monthly_budget_bytes: Some(1000),
            ..LinkCostConfig::default()
        };
        let home = Link::default();
        let metered = Link {
            metered: true,
            roaming: false,
        };
        let roaming = Link {
            metered: false,
            roaming: true,
        };
        let dl = |bytes, sev| Download {
            bytes,
            max_severity: sev,
        };
        let high = Some(Severity::High);
        let critical = Some(Severity::Critical);
        // (what, config, link, download, used, deferred reason fragment or "" to proceed)
        type Case<'a> = (&'a str, &'a LinkCostConfig, Link, Download, u64, &'a str);
        let cases: Vec<Case<'_>> = vec![
            ("home, unmetered", &defaults, home, dl(10, high), 0, ""),
            (
                "metered, high",
                &defaults,
                metered,
                dl(10, high),
                0,
                "metered connection",
            ),
            (
                "metered, no CVE severity",
                &defaults,
                metered,
                dl(10, None),
                0,
                "metered",
            ),
            (
                "metered, critical",
                &defaults,
                metered,
                dl(10, critical),
                0,
                "",
            ),
            (
                "roaming, high",
                &defaults,
                roaming,
                dl(10, high),
                0,
                "roaming",
            ),
            (
                "roaming, critical",
                &defaults,
                roaming,
                dl(10, critical),
                0,
                "",
            ),
            ("budget left", &budget, metered, dl(400, high), 600, ""),
            (
                "budget exhausted",
                &budget,
                metered,
                dl(401, high),
                600,
                "budget",
            ),
            (
                "budget exhausted roaming",
                &budget,
                roaming,
                dl(1, high),
                1000,
                "exhausted",
            ),
            (
                "budget ignores home",
                &budget,
                home,
                dl(5000, high),
                5000,
                "",
            ),
            (
                "budget spares critical",
                &budget,
                metered,
                dl(5000, critical),
                5000,
                "",
            ),
            (
                "budget never overflows",
                &budget,
                metered,
                dl(u64::MAX, high),
                u64::MAX,
                "budget",
            ),
        ];
        for (what, cfg, link, d, used, reason) in cases {
            match judge(cfg, link, d, used) {
                LinkDecision::Proceed => assert_eq!(reason, "", "{what}: proceeded"),
                LinkDecision::Defer(r) => {
                    assert!(!reason.is_empty(), "{what}: deferred: {r}");
                    assert!(r.contains(reason), "{what}: {r:?} lacks {reason:?}");
                }
            }
        }
        let lowered = LinkCostConfig {
            override_severity: Severity::High,
            ..LinkCostConfig::default()
        };
        assert_eq!(
            judge(&lowered, metered, dl(10, high), 0),
            LinkDecision::Proceed
        );
    }
}
