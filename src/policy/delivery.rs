//! Delivering signed reports to the fleet server: what the queue drops when it is full, how
//! long to wait after a failure, what the server's answer means, and whether a costly link
//! may carry a report now. The engine (`engine/delivery.rs`) acts on these; the HTTP adapter
//! (`report::deliver`) only moves bytes.

use jiff::{SignedDuration, Timestamp};

use crate::store::QueuedSize;
use crate::text::one_line;

/// The queue's bounds (`[report] max_queued`, `max_queued_bytes`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueLimits {
    pub max_count: u32,
    pub max_bytes: u64,
}

/// The queued reports to drop so that a new one of `new_bytes` fits: the oldest first, never
/// the new one (the latest state is what a hub most needs). `queue` is oldest first.
pub fn to_drop(queue: &[QueuedSize], new_bytes: u64, limits: QueueLimits) -> Vec<i64> {
    let mut count = queue.len() as u64 + 1;
    let mut bytes = queue
        .iter()
        .map(|q| q.bytes)
        .fold(new_bytes, u64::saturating_add);
    let mut out = Vec::new();
    for q in queue {
        if count <= u64::from(limits.max_count) && bytes <= limits.max_bytes {
            break;
        }
        out.push(q.id);
        count -= 1;
        bytes = bytes.saturating_sub(q.bytes);
    }
    out
}

/// Retry timing (`[report] retry_initial`, `retry_max`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub initial: SignedDuration,
    pub max: SignedDuration,
}

/// The wait after the `failures`-th failed delivery in a row (1 for the first): `initial`
/// doubled per further failure, capped at `max`, then spread over its upper half by `random`
/// (any `u64`, uniformly drawn) so that a fleet whose server comes back does not retry in
/// the same second.
pub fn retry_delay(failures: u32, b: Backoff, random: u64) -> SignedDuration {
    let doublings = failures.saturating_sub(1).min(40);
    let initial = b.initial.as_millis().max(1);
    let full = initial
        .saturating_mul(1i128 << doublings)
        .min(b.max.as_millis().max(initial));
    let half = full / 2;
    let spread = if half > 0 {
        i128::from(random % (half as u64 + 1))
    } else {
        0
    };
    SignedDuration::from_millis(i64::try_from(full - half + spread).unwrap_or(i64::MAX))
}

/// What the server's answer to one POST means for the queued report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// The server has the report: remove it from the queue. `duplicate`: it had it already
    /// (an earlier attempt arrived, but its answer did not).
    Delivered { duplicate: bool },
    /// The server will never take this report (malformed, too large, signature or counter
    /// refused): remove it, and log the reason as an error — retrying would block the queue
    /// behind it for good.
    Refused(String),
    /// Not delivered; keep it and try again after the backoff.
    Retry(String),
}

/// Longest answer body read from the server.
pub const MAX_ANSWER_BYTES: usize = 4096;

/// Longest piece of the server's answer quoted in a reason.
const MAX_REASON_CHARS: usize = 200;

/// Judges the server's answer `status` + `body` to a POST of the report with `counter`,
/// signed by `key_id`.
///
/// A 2xx acknowledges only with the receiver's JSON naming this report (`key_id` and
/// `counter`, see docs/report.md): a captive portal or a misconfigured proxy answering
/// `200 OK` with a web page must not make the agent forget reports it never delivered.
/// 409 is a duplicate by HTTP convention; 400, 413 and 422 say the report itself is refused;
/// every other answer — 5xx, 401/403 (device not enrolled yet), 404, 408, 429 — may change,
/// so the report stays queued.
pub fn classify(status: u16, body: &[u8], key_id: &str, counter: u64) -> Answer {
    // The server's words reach the log, D-Bus and terminals: one clean, short line.
    let text = || {
        let s = String::from_utf8_lossy(&body[..body.len().min(MAX_ANSWER_BYTES)]);
        let s = one_line(&s, MAX_REASON_CHARS);
        if s.is_empty() {
            "no reason given".to_owned()
        } else {
            s
        }
    };
    let reason = || -> String {
        serde_json::from_slice::<serde_json::Value>(body)
            .ok()
            .and_then(|v| v.get("reason").and_then(|r| r.as_str()).map(str::to_owned))
            .map(|r| one_line(&r, MAX_REASON_CHARS))
            .unwrap_or_else(text)
    };
    match status {
        200..=299 => {
            let ack = serde_json::from_slice::<serde_json::Value>(body).ok();
            let names_it = ack.as_ref().is_some_and(|v| {
                v.get("key_id").and_then(|k| k.as_str()) == Some(key_id)
                    && v.get("counter").and_then(serde_json::Value::as_u64) == Some(counter)
            });
            if names_it {
                let duplicate = ack
                    .as_ref()
                    .and_then(|v| v.get("result"))
                    .and_then(|r| r.as_str())
                    == Some("duplicate");
                Answer::Delivered { duplicate }
            } else {
                Answer::Retry(format!(
                    "the server answered {status} without acknowledging report {counter} \
                     (not the receiver's answer: {})",
                    text()
                ))
            }
        }
        409 => Answer::Delivered { duplicate: true },
        400 | 413 | 422 => {
            Answer::Refused(format!("the server refused it ({status}): {}", reason()))
        }
        _ => Answer::Retry(format!("the server answered {status}: {}", reason())),
    }
}

/// Whether a report of `bytes` may go out now over the current link: on a metered or roaming
/// link it counts against `[link_cost] monthly_budget_bytes` like a download; once that is
/// spent, reports wait in the queue for a cheaper link or the next month. `Err` says why.
pub fn may_send(costly: bool, budget: Option<u64>, used: u64, bytes: u64) -> Result<(), String> {
    match budget {
        Some(budget) if costly && used.saturating_add(bytes) > budget => Err(format!(
            "monthly budget for metered/roaming links exhausted ({used} of {budget} bytes \
             used); reports wait for a cheaper link"
        )),
        _ => Ok(()),
    }
}

/// When the next periodic report is due: one check interval after the last report queued,
/// or `first` after the start when none was ever queued.
pub fn next_periodic(
    last_queued: Option<Timestamp>,
    started: Timestamp,
    first: SignedDuration,
    interval: SignedDuration,
) -> Timestamp {
    match last_queued {
        Some(t) => t.saturating_add(interval).unwrap_or(t),
        None => started.saturating_add(first).unwrap_or(started),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(sizes: &[u64]) -> Vec<QueuedSize> {
        sizes
            .iter()
            .enumerate()
            .map(|(i, &bytes)| QueuedSize {
                id: i as i64 + 1,
                bytes,
            })
            .collect()
    }

    #[test]
    fn a_full_queue_drops_the_oldest_first_and_never_the_new_report() {
        let limits = QueueLimits {
            max_count: 3,
            max_bytes: 1000,
        };
        let cases: &[(&str, &[u64], u64, &[i64])] = &[
            ("room", &[100, 100], 100, &[]),
            ("exactly full", &[400, 400], 200, &[]),
            ("count", &[10, 10, 10], 10, &[1]),
            ("count, long over", &[10, 10, 10, 10, 10], 10, &[1, 2, 3]),
            ("bytes", &[600, 300], 200, &[1]),
            ("bytes, several", &[300, 300, 300], 900, &[1, 2, 3]),
            ("empty queue, huge report", &[], 5000, &[]),
            (
                "huge report drops everything else",
                &[10, 10],
                5000,
                &[1, 2],
            ),
        ];
        for (what, queue, new, want) in cases {
            assert_eq!(to_drop(&q(queue), *new, limits), *want, "{what}");
        }
    }

    #[test]
    fn backoff_doubles_with_jitter_in_its_upper_half_and_stops_at_the_cap() {
        let b = Backoff {
            initial: SignedDuration::from_secs(10),
            max: SignedDuration::from_secs(300),
        };
        let s = SignedDuration::from_secs;
        for (failures, full) in [(1, 10), (2, 20), (3, 40), (5, 160), (6, 300), (60, 300)] {
            let lo = retry_delay(failures, b, 0);
            let hi = retry_delay(failures, b, u64::MAX - 1);
            assert_eq!(lo, s(full) / 2, "failures {failures}");
            assert!(
                hi <= s(full) && hi >= s(full) / 2,
                "failures {failures}: {hi}"
            );
            for r in [1, 12345, 987_654_321] {
                let d = retry_delay(failures, b, r);
                assert!(d >= s(full) / 2 && d <= s(full), "{failures} {r}: {d}");
            }
        }
        // Different draws spread the fleet.
        assert_ne!(retry_delay(3, b, 1), retry_delay(3, b, 7777));
        assert_eq!(retry_delay(0, b, 0), s(5), "never a zero wait");
    }

    #[test]
    fn answers_are_judged_by_status_and_acknowledgement() {
        let key = "ab12";
        let ack = |result: &str, counter: u64| {
            format!(r#"{{"result":"{result}","key_id":"ab12","counter":{counter}}}"#).into_bytes()
        };
        let delivered = Answer::Delivered { duplicate: false };
        let dup = Answer::Delivered { duplicate: true };
        assert_eq!(classify(201, &ack("stored", 7), key, 7), delivered);
        assert_eq!(classify(200, &ack("duplicate", 7), key, 7), dup);
        assert_eq!(classify(409, b"", key, 7), dup);
        for (status, body) in [
            (200, b"<html>Welcome to the hotel wifi</html>".to_vec()),
            (200, ack("stored", 6)),
            (
                201,
                br#"{"result":"stored","key_id":"other","counter":7}"#.to_vec(),
            ),
            (204, Vec::new()),
        ] {
            assert!(
                matches!(classify(status, &body, key, 7), Answer::Retry(ref m) if m.contains("without acknowledging")),
                "{status} {body:?}"
            );
        }
        for status in [400, 413, 422] {
            let a = classify(
                status,
                br#"{"result":"refused","reason":"bad signature"}"#,
                key,
                7,
            );
            assert_eq!(
                a,
                Answer::Refused(format!("the server refused it ({status}): bad signature"))
            );
        }
        for status in [401, 403, 404, 408, 429, 500, 502, 503] {
            assert!(
                matches!(classify(status, b"oops\n", key, 7), Answer::Retry(ref m) if m.contains(&status.to_string()) && m.contains("oops")),
                "{status}"
            );
        }
        // Garbage in the reason is cut and cleaned.
        let long = vec![b'x'; 10_000];
        match classify(500, &long, key, 7) {
            Answer::Retry(m) => assert!(m.len() < 300, "{}", m.len()),
            other => panic!("{other:?}"),
        }
        // Terminal escapes go whole, in a body and in a JSON reason.
        let hostile = b"\x1b[2J\x1b]0;owned\x07busy\x1b[31m now\r\n";
        assert_eq!(
            classify(503, hostile, key, 7),
            Answer::Retry("the server answered 503: busy now".into())
        );
        let json = br#"{"reason":"\u001b[31mbad\u001b[0m signature\u202e"}"#;
        assert_eq!(
            classify(422, json, key, 7),
            Answer::Refused("the server refused it (422): bad signature".into())
        );
    }

    #[test]
    fn the_budget_holds_reports_only_on_costly_links() {
        assert!(may_send(false, Some(100), 100, 50).is_ok());
        assert!(may_send(true, None, u64::MAX, 50).is_ok());
        assert!(may_send(true, Some(100), 50, 50).is_ok());
        let e = may_send(true, Some(100), 60, 50).unwrap_err();
        assert!(e.contains("60 of 100"), "{e}");
    }

    #[test]
    fn periodic_reports_follow_the_last_one_by_an_interval() {
        let t = |s: &str| s.parse::<Timestamp>().unwrap();
        let day = SignedDuration::from_hours(24);
        let first = SignedDuration::from_mins(2);
        assert_eq!(
            next_periodic(None, t("2026-11-27T10:00:00Z"), first, day),
            t("2026-11-27T10:02:00Z")
        );
        assert_eq!(
            next_periodic(
                Some(t("2026-11-26T09:00:00Z")),
                t("2026-11-27T10:00:00Z"),
                first,
                day
            ),
            t("2026-11-27T09:00:00Z")
        );
    }
}
