//! Refused calls in the journal, bounded per caller: an unprivileged user calling in a loop
//! must not fill the journal (and push out what an operator needs) with one WARN per call.
//!
//! Per caller (uid) and kind of refusal, the first [`BURST`] refusals in a [`WINDOW`] are
//! logged each; the rest are counted, and once the window has passed one line says how many
//! were left out ("suppressed K refusals from uid U in the last minute"). The decision is
//! pure ([`RefusalLog::note`], [`RefusalLog::flush`], time passed in); [`Refusals`] wraps it
//! for the service and schedules the summary line.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Refusals logged one by one per caller and kind in each window.
pub const BURST: u32 = 5;

/// How long a window lasts; its suppressed refusals are summed up in one line at its end.
pub const WINDOW: Duration = Duration::from_secs(60);

/// Most (caller, kind) pairs followed at once. Beyond it (a flood from very many uids) the
/// rest share one entry, so the memory stays bounded.
const MAX_KEYS: usize = 256;

/// Who was refused what: the caller's uid (`None` when the bus would not say) and the kind
/// of refusal (e.g. `org.ssu.agent.check: not in the allowlist`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Key {
    pub uid: Option<u32>,
    pub what: String,
}

/// Refusals left out of the journal in a window that has ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    pub key: Key,
    pub suppressed: u64,
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let who = match self.key.uid {
            Some(uid) => format!("uid {uid}"),
            None => "callers the bus did not name".to_owned(),
        };
        write!(
            f,
            "suppressed {} refusals from {who} in the last minute ({})",
            self.suppressed, self.key.what
        )
    }
}

/// What to do with one refusal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Noted {
    /// Log this refusal in full.
    pub log: bool,
    /// The first refusal suppressed in its window: flush at this time to log the summary.
    pub flush_at: Option<Instant>,
    /// Windows that ended before `now`, with refusals left out.
    pub summaries: Vec<Summary>,
}

#[derive(Debug)]
struct Window {
    since: Instant,
    logged: u32,
    suppressed: u64,
}

/// The per-caller counts (pure: every method takes `now`).
#[derive(Debug, Default)]
pub struct RefusalLog {
    windows: HashMap<Key, Window>,
}

impl RefusalLog {
    /// Notes one refusal of `key` at `now`.
    pub fn note(&mut self, now: Instant, key: Key) -> Noted {
        let summaries = self.flush(now);
        let key = if self.windows.len() >= MAX_KEYS && !self.windows.contains_key(&key) {
            Key {
                uid: None,
                what: "other callers".to_owned(),
            }
        } else {
            key
        };
        let w = self.windows.entry(key).or_insert(Window {
            since: now,
            logged: 0,
            suppressed: 0,
        });
        if w.logged < BURST {
            w.logged += 1;
            return Noted {
                log: true,
                flush_at: None,
                summaries,
            };
        }
        w.suppressed += 1;
        Noted {
            log: false,
            flush_at: (w.suppressed == 1).then(|| w.since + WINDOW),
            summaries,
        }
    }

    /// Ends every window that has lasted [`WINDOW`] by `now`: their suppressed refusals, if
    /// any, in one summary each.
    pub fn flush(&mut self, now: Instant) -> Vec<Summary> {
        let mut summaries = Vec::new();
        self.windows.retain(|key, w| {
            if now.saturating_duration_since(w.since) < WINDOW {
                return true;
            }
            if w.suppressed > 0 {
                summaries.push(Summary {
                    key: key.clone(),
                    suppressed: w.suppressed,
                });
            }
            false
        });
        summaries.sort_by(|a, b| (a.key.uid, &a.key.what).cmp(&(b.key.uid, &b.key.what)));
        summaries
    }
}

/// [`RefusalLog`] shared by the service's handlers, logging through `tracing`.
#[derive(Debug, Clone, Default)]
pub struct Refusals(Arc<Mutex<RefusalLog>>);

impl Refusals {
    /// Notes a refusal; true when the caller should log it in full. Summaries of ended
    /// windows are logged here, and one is scheduled for this window if it suppressed.
    pub fn note(&self, uid: Option<u32>, what: &str) -> bool {
        let noted = self.lock().note(
            Instant::now(),
            Key {
                uid,
                what: what.to_owned(),
            },
        );
        log(&noted.summaries);
        if let Some(at) = noted.flush_at {
            let this = self.clone();
            tokio::spawn(async move {
                tokio::time::sleep_until(at.into()).await;
                let summaries = this.lock().flush(Instant::now());
                log(&summaries);
            });
        }
        noted.log
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, RefusalLog> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn log(summaries: &[Summary]) {
    for s in summaries {
        tracing::warn!(uid = s.key.uid, suppressed = s.suppressed, "{s}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(uid: u32, what: &str) -> Key {
        Key {
            uid: Some(uid),
            what: what.to_owned(),
        }
    }

    #[test]
    fn the_first_refusals_are_logged_then_counted_then_summed_up_once() {
        let t0 = Instant::now();
        let mut log = RefusalLog::default();
        let mut logged = 0;
        let mut flush_at = Vec::new();
        for i in 0..1000u64 {
            let n = log.note(t0 + Duration::from_millis(i), key(65534, "check"));
            assert!(n.summaries.is_empty());
            logged += u32::from(n.log);
            flush_at.extend(n.flush_at);
        }
        assert_eq!(logged, BURST);
        // One flush is scheduled, at the window's end.
        assert_eq!(flush_at, vec![t0 + WINDOW]);
        assert!(log.flush(t0 + WINDOW - Duration::from_millis(1)).is_empty());
        let s = log.flush(t0 + WINDOW);
        assert_eq!(
            s,
            vec![Summary {
                key: key(65534, "check"),
                suppressed: 1000 - u64::from(BURST),
            }]
        );
        assert_eq!(
            s[0].to_string(),
            "suppressed 995 refusals from uid 65534 in the last minute (check)"
        );
        // Said once; a new window logs again.
        assert!(log.flush(t0 + WINDOW * 2).is_empty());
        assert!(log.note(t0 + WINDOW * 2, key(65534, "check")).log);
    }

    #[test]
    fn callers_and_kinds_are_counted_apart() {
        let t0 = Instant::now();
        let mut log = RefusalLog::default();
        for _ in 0..BURST {
            assert!(log.note(t0, key(1000, "check")).log);
        }
        assert!(!log.note(t0, key(1000, "check")).log);
        // Another user, or another refusal of the same user, is news.
        assert!(log.note(t0, key(1001, "check")).log);
        assert!(log.note(t0, key(1000, "install")).log);
    }

    #[test]
    fn a_later_refusal_brings_the_summary_of_an_ended_window() {
        let t0 = Instant::now();
        let mut log = RefusalLog::default();
        for _ in 0..BURST + 3 {
            log.note(t0, key(7, "check"));
        }
        let n = log.note(t0 + WINDOW + Duration::from_secs(1), key(8, "check"));
        assert!(n.log);
        assert_eq!(n.summaries.len(), 1);
        assert_eq!(n.summaries[0].suppressed, 3);
    }

    #[test]
    fn a_quiet_window_ends_without_a_line() {
        let t0 = Instant::now();
        let mut log = RefusalLog::default();
        log.note(t0, key(7, "check"));
        assert!(log.flush(t0 + WINDOW).is_empty());
        assert!(log.windows.is_empty(), "forgotten");
    }

    #[test]
    fn very_many_callers_share_one_bounded_entry() {
        let t0 = Instant::now();
        let mut log = RefusalLog::default();
        let mut logged = 0;
        for uid in 0..10_000 {
            logged += u32::from(log.note(t0, key(uid, "check")).log);
        }
        assert!(log.windows.len() <= MAX_KEYS + 1);
        // Each of the first MAX_KEYS - ... callers logs once; the rest share BURST lines.
        assert!(logged <= MAX_KEYS as u32 + BURST, "{logged}");
        let s = log.flush(t0 + WINDOW);
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].key.what, "other callers");
    }
}
