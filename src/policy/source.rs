//! Which server a security update comes from: the manufacturer's or the subscription's
//! operator's (FS.25 TES-0010, TES-0020, TES-0030).
//!
//! - [`subscription`]: which operator profile the SIM belongs to — or `unknown` while the
//!   modem cannot say (ModemManager away, no SIM, locked SIM), which is never a change.
//! - [`decide`]: for one security target the manufacturer published, install it from the
//!   operator's channel (the operator lists the same target with identical length and hashes,
//!   TUF TAP-4 style), from the manufacturer's (no operator channel; operator approval timed
//!   out; operator server unusable beyond its limit; integrity lost), or wait (within the
//!   approval grace, or the operator server's outage is still within its limit).
//!
//! Nothing here lets an operator withhold an approved security update: approval only changes
//! where the bytes come from, and a missing approval only delays an update until the grace —
//! at most 7 days, enforced by the configuration — has passed.

use jiff::{SignedDuration, Timestamp};

use crate::config::OnIntegrityLoss;
use crate::config::OperatorProfile;
use crate::status::{Availability, IntegrityState, ModemInfo};

/// What the modem says about the subscription right now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Observed {
    /// The modem cannot tell now; keep whatever was known before.
    Unknown,
    /// The SIM belongs to this profile, or to none (`None`).
    Known(Option<String>),
}

/// Matches the SIM against the profiles: home MCC-MNC listed by the profile and, when the
/// profile names ICCID prefixes, an ICCID issuer starting with one of them.
pub fn subscription(modem: &ModemInfo, profiles: &[OperatorProfile]) -> Observed {
    // No SIM, a locked SIM (ModemManager cannot read OperatorIdentifier) and ModemManager
    // away all look like this: nothing to judge by, so nothing changes.
    if modem.availability != Availability::Running || modem.home_mcc_mnc.is_empty() {
        return Observed::Unknown;
    }
    let matched = profiles.iter().find(|p| {
        p.mcc_mnc.contains(&modem.home_mcc_mnc)
            && (p.iccid_prefixes.is_empty()
                || (!modem.iccid_issuer.is_empty()
                    && p.iccid_prefixes
                        .iter()
                        .any(|pre| modem.iccid_issuer.starts_with(pre.as_str()))))
    });
    Observed::Known(matched.map(|p| p.name.clone()))
}

/// The operator's channel as the engine last saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OperatorChannel<'a> {
    pub name: &'a str,
    pub approval_grace: SignedDuration,
    pub fallback_after: SignedDuration,
    /// The operator lists this very target (same name, length and hashes) in metadata that
    /// verified on the last check.
    pub approved: bool,
    /// Since when the operator's server has been unusable (unreachable, metadata invalid or
    /// expired, bundle missing); `None` while it works.
    pub unusable_since: Option<Timestamp>,
}

/// Inputs of [`decide`] besides the time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceInputs<'a> {
    /// The subscription's operator channel; `None` without a profile.
    pub operator: Option<OperatorChannel<'a>>,
    pub integrity: IntegrityState,
    pub on_integrity_loss: OnIntegrityLoss,
    /// When the manufacturer released the target (signed `released`).
    pub released: Timestamp,
}

/// Where the update comes from, or until when it waits, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Manufacturer { reason: String },
    Operator { name: String, reason: String },
    Wait { until: Timestamp, reason: String },
}

/// Reason recorded when the operator did not approve within the grace (TES-0010).
pub const APPROVAL_TIMED_OUT: &str = "operator approval timed out";

/// Decides the source for one manufacturer target; see the module docs.
pub fn decide(now: Timestamp, inputs: &SourceInputs<'_>) -> Decision {
    let Some(op) = &inputs.operator else {
        return Decision::Manufacturer {
            reason: "no operator channel for this subscription".to_owned(),
        };
    };
    if inputs.integrity == IntegrityState::Compromised
        && inputs.on_integrity_loss == OnIntegrityLoss::DropOperatorChannel
    {
        return Decision::Manufacturer {
            reason: format!(
                "device integrity compromised: operator {} channel dropped",
                op.name
            ),
        };
    }
    let outage_ends = op.unusable_since.map(|since| since + op.fallback_after);
    if let (Some(since), Some(limit)) = (op.unusable_since, outage_ends)
        && now >= limit
    {
        return Decision::Manufacturer {
            reason: format!(
                "operator {} server unusable since {since} (longer than {:#}): using the \
                 manufacturer's server",
                op.name, op.fallback_after
            ),
        };
    }
    if op.approved && op.unusable_since.is_none() {
        return Decision::Operator {
            name: op.name.to_owned(),
            reason: format!("approved by operator {}", op.name),
        };
    }
    let grace_ends = inputs.released + op.approval_grace;
    if now >= grace_ends {
        return Decision::Manufacturer {
            reason: format!(
                "{APPROVAL_TIMED_OUT}: {} did not approve within {:#} of the release",
                op.name, op.approval_grace
            ),
        };
    }
    match outage_ends {
        Some(limit) => Decision::Wait {
            until: limit.min(grace_ends),
            reason: format!("operator {} server unusable; retrying", op.name),
        },
        None => Decision::Wait {
            until: grace_ends,
            reason: format!("waiting for operator {} to approve", op.name),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn profile(name: &str, mcc: &[&str], prefixes: &[&str]) -> OperatorProfile {
        let text = format!(
            "[[operator]]\nname = \"{name}\"\nmcc_mnc = {mcc:?}\niccid_prefixes = {prefixes:?}\n\
             url = \"https://x.example/\"\nroot = \"/r.json\"\n"
        );
        crate::config::from_sources(&[("/a.toml".into(), text)])
            .unwrap()
            .operators
            .remove(0)
    }

    fn modem(avail: Availability, mcc: &str, issuer: &str) -> ModemInfo {
        ModemInfo {
            availability: avail,
            home_mcc_mnc: mcc.to_owned(),
            iccid_issuer: issuer.to_owned(),
            ..ModemInfo::default()
        }
    }

    #[test]
    fn subscription_table() {
        let profiles = vec![
            profile("telenet", &["26201", "26206"], &[]),
            profile("mvno", &["26207"], &["894907"]),
        ];
        let run = Availability::Running;
        let known = |n: &str| Observed::Known(Some(n.to_owned()));
        let cases: Vec<(&str, ModemInfo, Observed)> = vec![
            (
                "home network",
                modem(run, "26201", "8949000"),
                known("telenet"),
            ),
            (
                "second network of a profile (multi-IMSI)",
                modem(run, "26206", ""),
                known("telenet"),
            ),
            (
                "unlisted network",
                modem(run, "20801", "8933000"),
                Observed::Known(None),
            ),
            (
                "prefix matches",
                modem(run, "26207", "8949071"),
                known("mvno"),
            ),
            (
                "prefix differs",
                modem(run, "26207", "8949000"),
                Observed::Known(None),
            ),
            (
                "prefix needed, ICCID unknown",
                modem(run, "26207", ""),
                Observed::Known(None),
            ),
            (
                "ModemManager away",
                modem(Availability::Unavailable, "", ""),
                Observed::Unknown,
            ),
            (
                "not looked at yet",
                modem(Availability::Unknown, "26201", ""),
                Observed::Unknown,
            ),
            (
                "no SIM or locked SIM",
                modem(run, "", ""),
                Observed::Unknown,
            ),
        ];
        for (what, m, want) in cases {
            assert_eq!(subscription(&m, &profiles), want, "{what}");
        }
    }

    fn t(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn decision_table() {
        let released = t("2026-11-20T00:00:00Z");
        let op = |approved: bool, unusable: Option<&str>| OperatorChannel {
            name: "telenet",
            approval_grace: SignedDuration::from_hours(48),
            fallback_after: SignedDuration::from_hours(6),
            approved,
            unusable_since: unusable.map(t),
        };
        let inputs = |operator: Option<OperatorChannel<'static>>, integrity| SourceInputs {
            operator,
            integrity,
            on_integrity_loss: OnIntegrityLoss::DropOperatorChannel,
            released,
        };
        let ok = IntegrityState::Trusted;
        // (what, now, inputs, expected kind, expected wait-until, reason fragment)
        type Case = (
            &'static str,
            &'static str,
            SourceInputs<'static>,
            &'static str,
            Option<&'static str>,
            &'static str,
        );
        let cases: Vec<Case> = vec![
            (
                "no profile",
                "2026-11-20T01:00:00Z",
                inputs(None, ok),
                "manufacturer",
                None,
                "no operator channel",
            ),
            (
                "approved",
                "2026-11-20T01:00:00Z",
                inputs(Some(op(true, None)), ok),
                "operator",
                None,
                "approved by operator telenet",
            ),
            (
                "approved even long after the grace",
                "2026-12-20T01:00:00Z",
                inputs(Some(op(true, None)), IntegrityState::Unknown),
                "operator",
                None,
                "approved",
            ),
            (
                "not approved within grace",
                "2026-11-21T00:00:00Z",
                inputs(Some(op(false, None)), ok),
                "wait",
                Some("2026-11-22T00:00:00Z"),
                "waiting for operator telenet to approve",
            ),
            (
                "not approved, grace just over",
                "2026-11-22T00:00:00Z",
                inputs(Some(op(false, None)), ok),
                "manufacturer",
                None,
                APPROVAL_TIMED_OUT,
            ),
            (
                "server down, within its limit",
                "2026-11-20T03:00:00Z",
                inputs(Some(op(true, Some("2026-11-20T01:00:00Z"))), ok),
                "wait",
                Some("2026-11-20T07:00:00Z"),
                "server unusable; retrying",
            ),
            (
                "server down past its limit",
                "2026-11-20T07:00:00Z",
                inputs(Some(op(true, Some("2026-11-20T01:00:00Z"))), ok),
                "manufacturer",
                None,
                "server unusable since 2026-11-20T01:00:00Z",
            ),
            (
                "server down, grace ends before the limit",
                "2026-11-21T23:00:00Z",
                inputs(Some(op(false, Some("2026-11-21T22:00:00Z"))), ok),
                "wait",
                Some("2026-11-22T00:00:00Z"),
                "unusable",
            ),
            (
                "integrity lost drops the operator channel",
                "2026-11-20T01:00:00Z",
                inputs(Some(op(true, None)), IntegrityState::Compromised),
                "manufacturer",
                None,
                "integrity compromised",
            ),
        ];
        for (what, now, inp, kind, until, reason) in cases {
            let d = decide(t(now), &inp);
            let (k, u, r) = match &d {
                Decision::Manufacturer { reason } => ("manufacturer", None, reason),
                Decision::Operator { name, reason } => {
                    assert_eq!(name, "telenet", "{what}");
                    ("operator", None, reason)
                }
                Decision::Wait { until, reason } => ("wait", Some(*until), reason),
            };
            assert_eq!(k, kind, "{what}: {d:?}");
            assert_eq!(u, until.map(t), "{what}");
            assert!(r.contains(reason), "{what}: {r:?} lacks {reason:?}");
        }
    }

    #[test]
    fn report_only_keeps_the_operator_channel_when_compromised() {
        let inputs = SourceInputs {
            operator: Some(OperatorChannel {
                name: "telenet",
                approval_grace: SignedDuration::from_hours(1),
                fallback_after: SignedDuration::from_hours(1),
                approved: true,
                unusable_since: None,
            }),
            integrity: IntegrityState::Compromised,
            on_integrity_loss: OnIntegrityLoss::ReportOnly,
            released: t("2026-11-20T00:00:00Z"),
        };
        assert!(matches!(
            decide(t("2026-11-20T00:10:00Z"), &inputs),
            Decision::Operator { .. }
        ));
    }

    #[test]
    fn no_input_withholds_an_update_past_the_grace() {
        // TES-0030: whatever the operator's channel looks like, once the longest allowed grace
        // (7 days) and fallback have passed the decision is to install.
        let released = t("2026-11-20T00:00:00Z");
        let later = released + SignedDuration::from_hours(7 * 24);
        for approved in [false, true] {
            for unusable in [
                None,
                Some(released),
                Some(later - SignedDuration::from_secs(1)),
            ] {
                for integrity in [
                    IntegrityState::Unknown,
                    IntegrityState::Trusted,
                    IntegrityState::Compromised,
                ] {
                    let inputs = SourceInputs {
                        operator: Some(OperatorChannel {
                            name: "op",
                            approval_grace: crate::config::operator::MAX_APPROVAL_GRACE,
                            fallback_after: SignedDuration::from_hours(24),
                            approved,
                            unusable_since: unusable,
                        }),
                        integrity,
                        on_integrity_loss: OnIntegrityLoss::ReportOnly,
                        released,
                    };
                    let d = decide(later + SignedDuration::from_hours(24), &inputs);
                    assert!(!matches!(d, Decision::Wait { .. }), "{inputs:?} → {d:?}");
                }
            }
        }
    }
}
