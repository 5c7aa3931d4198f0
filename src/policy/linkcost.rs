//! Whether a download may start on the current link (SEC-0020's note on constrained links).
//!
//! A metered link (NetworkManager says `yes` or `guess-yes`) or a roaming modem
//! (registration state 5, 7 or 10) makes bytes expensive: updates below the configured
//! override severity wait for a cheaper link, and an optional monthly budget caps what
//! may still be downloaded over such links. Updates at or above the override severity always
//! proceed — a critical fix is worth the bytes.
//!
//! The wait is bounded: a device that only ever sees a metered link (a cellular gateway,
//! which NetworkManager guesses metered) would otherwise never get a non-critical security
//! fix. After `max_deferral` the update downloads over the costly link anyway, still within
//! the budget (SEC-0020 "timely", ETSI 5.3-8). The user may take it earlier: an explicit
//! `Install` is a decision to pay for the bytes, so it passes both the deferral and the
//! budget (the bytes still count against the budget).

use jiff::Timestamp;

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

/// How long the device has been waiting for a cheaper link, and whether the user asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Waiting {
    pub now: Timestamp,
    /// When a security update was first deferred for link cost (and nothing downloaded
    /// since); `None`: not deferred yet, the wait starts now.
    pub since: Option<Timestamp>,
    /// The user asked to install it now (`Install`).
    pub user_asked: bool,
}

/// Why a download waits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deferral {
    /// Shown in `UpdateSource.deferred` and in the announced offer: why, until when, and
    /// what taking it now would cost.
    pub reason: String,
    /// When it downloads anyway (end of the maximum deferral); `None` for the budget,
    /// which waits for next month or a cheaper link.
    pub until: Option<Timestamp>,
}

/// The verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkDecision {
    Proceed,
    Defer(Deferral),
}

/// Judges one download. `used_this_month` is what was already downloaded over costly links in
/// the current calendar month.
pub fn judge(
    cfg: &LinkCostConfig,
    link: Link,
    download: Download,
    used_this_month: u64,
    waiting: Waiting,
) -> LinkDecision {
    if !link.costly() || waiting.user_asked {
        return LinkDecision::Proceed;
    }
    if download
        .max_severity
        .is_some_and(|s| s >= cfg.override_severity)
    {
        return LinkDecision::Proceed;
    }
    let since = waiting.since.unwrap_or(waiting.now).min(waiting.now);
    let until = since
        .checked_add(cfg.max_deferral.0)
        .unwrap_or(Timestamp::MAX);
    let cost = format!(
        "taking it now (Install) costs {} bytes over this link",
        download.bytes
    );
    let below = format!(
        "fixes nothing rated {} or higher",
        cfg.override_severity.as_str()
    );
    if waiting.now < until {
        let defer = |what: &str| {
            LinkDecision::Defer(Deferral {
                reason: format!(
                    "{what} until a cheaper link or at most until {until} ({below}); {cost}"
                ),
                until: Some(until),
            })
        };
        if link.roaming && cfg.defer_when_roaming {
            return defer("roaming: deferred");
        }
        if link.metered && cfg.defer_when_metered {
            return defer("metered connection: deferred");
        }
    }
    if let Some(budget) = cfg.monthly_budget_bytes
        && used_this_month.saturating_add(download.bytes) > budget
    {
        return LinkDecision::Defer(Deferral {
            reason: format!(
                "monthly budget for metered/roaming downloads exhausted: {used_this_month} of \
                 {budget} bytes used, this update needs {}; {cost}",
                download.bytes
            ),
            until: None,
        });
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
        let fresh = Waiting {
            now: t("2026-11-27T10:00:00Z"),
            since: None,
            user_asked: false,
        };
        for (what, cfg, link, d, used, reason) in cases {
            match judge(cfg, link, d, used, fresh) {
                LinkDecision::Proceed => assert_eq!(reason, "", "{what}: proceeded"),
                LinkDecision::Defer(Deferral { reason: r, .. }) => {
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
            judge(&lowered, metered, dl(10, high), 0, fresh),
            LinkDecision::Proceed
        );
    }

    fn t(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn the_deferral_for_link_cost_is_bounded_and_the_user_may_pay_now() {
        let cfg = LinkCostConfig::default(); // max_deferral 7d
        let budget = LinkCostConfig {
            monthly_budget_bytes: Some(1000),
            ..LinkCostConfig::default()
        };
        let metered = Link {
            metered: true,
            roaming: false,
        };
        let roaming = Link {
            metered: false,
            roaming: true,
        };
        let high = Download {
            bytes: 500,
            max_severity: Some(Severity::High),
        };
        let critical = Download {
            bytes: 5000,
            max_severity: Some(Severity::Critical),
        };
        let since = t("2026-11-01T00:00:00Z");
        let limit = t("2026-11-08T00:00:00Z");
        let w = |now: &str, since: Option<Timestamp>, user_asked| Waiting {
            now: t(now),
            since,
            user_asked,
        };
        // (what, config, link, download, used, waiting) → deferred until (Some(None) =
        // deferred by the budget), or None to proceed
        type Want = Option<Option<Timestamp>>;
        let cases: Vec<(&str, &LinkCostConfig, Link, Download, u64, Waiting, Want)> = vec![
            (
                "first deferral: the wait starts now",
                &cfg,
                metered,
                high,
                0,
                w("2026-11-01T00:00:00Z", None, false),
                Some(Some(limit)),
            ),
            (
                "a second before the limit",
                &cfg,
                metered,
                high,
                0,
                w("2026-11-07T23:59:59Z", Some(since), false),
                Some(Some(limit)),
            ),
            (
                "at the limit it downloads over the metered link",
                &cfg,
                metered,
                high,
                0,
                w("2026-11-08T00:00:00Z", Some(since), false),
                None,
            ),
            (
                "roaming: the same limit",
                &cfg,
                roaming,
                high,
                0,
                w("2026-11-09T00:00:00Z", Some(since), false),
                None,
            ),
            (
                "past the limit the budget still counts",
                &budget,
                metered,
                high,
                600,
                w("2026-11-20T00:00:00Z", Some(since), false),
                Some(None),
            ),
            (
                "past the limit within the budget",
                &budget,
                metered,
                high,
                500,
                w("2026-11-20T00:00:00Z", Some(since), false),
                None,
            ),
            (
                "critical overrides at once",
                &budget,
                metered,
                critical,
                1000,
                w("2026-11-01T00:00:00Z", None, false),
                None,
            ),
            (
                "the user's Install pays for the bytes",
                &cfg,
                metered,
                high,
                0,
                w("2026-11-01T00:00:00Z", Some(since), true),
                None,
            ),
            (
                "the user's Install passes the budget",
                &budget,
                roaming,
                high,
                1000,
                w("2026-11-01T00:00:00Z", Some(since), true),
                None,
            ),
            (
                "a wait recorded in the future (clock stepped back) counts from now",
                &cfg,
                metered,
                high,
                0,
                w(
                    "2026-11-01T00:00:00Z",
                    Some(t("2027-01-01T00:00:00Z")),
                    false,
                ),
                Some(Some(limit)),
            ),
            (
                "no overflow at the end of time",
                &cfg,
                metered,
                high,
                0,
                w("9999-12-30T00:00:00Z", None, false),
                Some(Some(Timestamp::MAX)),
            ),
        ];
        for (what, cfg, link, d, used, waiting, want) in cases {
            match (judge(cfg, link, d, used, waiting), want) {
                (LinkDecision::Proceed, None) => {}
                (LinkDecision::Defer(got), Some(until)) => {
                    assert_eq!(got.until, until, "{what}: {}", got.reason);
                    assert!(
                        got.reason.contains(&format!("costs {} bytes", d.bytes)),
                        "{what}: the cost is shown: {}",
                        got.reason
                    );
                }
                (got, want) => panic!("{what}: got {got:?}, want {want:?}"),
            }
        }
    }
}
