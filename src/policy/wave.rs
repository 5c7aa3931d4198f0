//! Rollout waves (FS.25 SEC-0021: the most popular models are patched first).
//!
//! `ssu-repo device --wave-start` gives each model a time before which its devices download
//! nothing, in descending order of installed base; the record is signed with the rest of the
//! metadata, so only the manufacturer's targets key can move a model's wave. A configured
//! severity lets updates that fix something at least that severe skip the wave (off by
//! default: the wave also protects the servers and the fleet from a bad update reaching every
//! model at once).

use jiff::Timestamp;

use crate::metadata::schema::Severity;

/// Until when a download waits for the model's wave; `None` when it may start now.
///
/// `wave_start` is the signed record's time (`None`: no wave for this model);
/// `max_severity` the highest severity the update fixes; `skip` the configured severity from
/// which updates do not wait.
pub fn wait_until(
    now: Timestamp,
    wave_start: Option<Timestamp>,
    max_severity: Option<Severity>,
    skip: Option<Severity>,
) -> Option<Timestamp> {
    let start = wave_start?;
    if now >= start {
        return None;
    }
    if let (Some(fixes), Some(skip)) = (max_severity, skip)
        && fixes >= skip
    {
        return None;
    }
    Some(start)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn wave_table() {
        let now = t("2026-11-27T10:00:00Z");
        let later = t("2026-12-01T00:00:00Z");
        let earlier = t("2026-11-01T00:00:00Z");
        use Severity::{Critical, High};
        // (what, wave start, fixes, skip from, expected)
        let cases = [
            ("no wave for this model", None, Some(High), None, None),
            ("wave started", Some(earlier), Some(High), None, None),
            ("wave starts exactly now", Some(now), Some(High), None, None),
            ("wave ahead", Some(later), Some(High), None, Some(later)),
            (
                "wave ahead, critical, no skip configured",
                Some(later),
                Some(Critical),
                None,
                Some(later),
            ),
            (
                "wave ahead, critical skips",
                Some(later),
                Some(Critical),
                Some(Critical),
                None,
            ),
            (
                "wave ahead, high below the skip severity",
                Some(later),
                Some(High),
                Some(Critical),
                Some(later),
            ),
            (
                "wave ahead, fixes no rated CVE",
                Some(later),
                None,
                Some(High),
                Some(later),
            ),
        ];
        for (what, wave, fixes, skip, want) in cases {
            assert_eq!(wait_until(now, wave, fixes, skip), want, "{what}");
        }
    }
}
