//! What one caller can make the agent hold: a bounded number of calls in flight, arguments
//! refused early when oversized, and inhibitor reasons cleaned of what could mislead a UI.
//!
//! A method call's message stays in memory until its handler returns, and the bus lets a
//! message be up to its `max_message_size` (32 MiB by default). So an oversized argument is
//! refused before anything that waits (authorization asks the bus or polkit), and each
//! caller has at most [`MAX_CALLS_PER_CALLER`] calls in flight: a flood of large calls from
//! one unprivileged connection costs at most that many messages, for as long as it takes to
//! refuse them. Authorization has a limit ([`AUTHORIZATION_TIMEOUT`]), so no handler waits
//! for ever for an answer the bus dropped.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use zbus::message::Header;

use super::AgentError;

/// Most method calls one connection may have in flight at once. A client needs one at a time;
/// a few allow for a UI that checks and reads history at once.
pub const MAX_CALLS_PER_CALLER: usize = 4;

/// Longest inhibitor reason accepted, in bytes (longer ones are refused, not truncated, and
/// not kept); [`MAX_REASON`] of it is shown.
pub const MAX_REASON_INPUT: usize = 4096;

/// Longest an authorization may take: polkit may ask the user for a password, but an answer
/// the bus dropped must not keep a call waiting for ever.
pub const AUTHORIZATION_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(120);

/// Longest inhibitor reason kept (a UI shows it), in bytes.
pub const MAX_REASON: usize = 200;

/// Counts the calls in flight per sender.
#[derive(Debug, Clone, Default)]
pub struct CallLimiter {
    inflight: Arc<Mutex<HashMap<String, usize>>>,
}

/// One call in flight; dropping it (the handler returning) frees its place.
#[derive(Debug)]
pub struct CallPermit {
    inflight: Arc<Mutex<HashMap<String, usize>>>,
    sender: String,
}

impl CallLimiter {
    /// A place for one more call from the sender of `header`, or `PolicyRefused` when it has
    /// [`MAX_CALLS_PER_CALLER`] already.
    pub fn enter(&self, header: &Header<'_>) -> Result<CallPermit, AgentError> {
        let sender = header
            .sender()
            .map(|s| s.as_str().to_owned())
            .unwrap_or_default();
        self.enter_as(sender)
    }

    fn enter_as(&self, sender: String) -> Result<CallPermit, AgentError> {
        let mut inflight = self.inflight.lock().unwrap_or_else(|e| e.into_inner());
        let n = inflight.entry(sender.clone()).or_insert(0);
        if *n >= MAX_CALLS_PER_CALLER {
            return Err(AgentError::PolicyRefused(format!(
                "this connection has {MAX_CALLS_PER_CALLER} calls to the agent in flight \
                 already; wait for their answers"
            )));
        }
        *n += 1;
        Ok(CallPermit {
            inflight: self.inflight.clone(),
            sender,
        })
    }

    /// Senders with calls in flight (tests).
    #[cfg(test)]
    fn callers(&self) -> usize {
        self.inflight.lock().unwrap().len()
    }
}

impl Drop for CallPermit {
    fn drop(&mut self) {
        let mut inflight = self.inflight.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = inflight.get_mut(&self.sender) {
            *n -= 1;
            if *n == 0 {
                inflight.remove(&self.sender);
            }
        }
    }
}

/// Refuses a reason longer than [`MAX_REASON_INPUT`] bytes: checked before anything waits,
/// so the message is dropped at once.
pub fn check_reason_size(reason: &str) -> Result<(), AgentError> {
    if reason.len() > MAX_REASON_INPUT {
        return Err(AgentError::PolicyRefused(format!(
            "the inhibitor reason is {} bytes long; at most {MAX_REASON_INPUT} are accepted",
            reason.len()
        )));
    }
    Ok(())
}

/// The reason as `Inhibitors` shows it: without control characters, invisible formatting
/// and direction overrides (U+202E would make a UI show text reversed), at most
/// [`MAX_REASON`] bytes, never empty.
pub fn clean_reason(reason: &str) -> String {
    let mut clean: String = reason.chars().filter(|c| !hidden(*c)).collect();
    if clean.len() > MAX_REASON {
        let mut end = MAX_REASON;
        while !clean.is_char_boundary(end) {
            end -= 1;
        }
        clean.truncate(end);
    }
    if clean.trim().is_empty() {
        return "(no reason given)".to_owned();
    }
    clean
}

/// Control characters (Cc), line and paragraph separators (Zl, Zp) and the format
/// characters (Cf) that change how text around them is shown: bidirectional embeddings,
/// overrides and isolates, zero-width characters, invisible operators, tags.
fn hidden(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{00AD}'
                | '\u{0600}'..='\u{0605}'
                | '\u{061C}'
                | '\u{06DD}'
                | '\u{070F}'
                | '\u{180E}'
                | '\u{200B}'..='\u{200F}'
                | '\u{2028}'..='\u{202E}'
                | '\u{2060}'..='\u{2064}'
                | '\u{2066}'..='\u{206F}'
                | '\u{FEFF}'
                | '\u{FFF9}'..='\u{FFFB}'
                | '\u{E0001}'
                | '\u{E0020}'..='\u{E007F}'
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_caller_gets_a_bounded_number_of_calls_and_its_places_back() {
        let limiter = CallLimiter::default();
        let permits: Vec<CallPermit> = (0..MAX_CALLS_PER_CALLER)
            .map(|_| limiter.enter_as(":1.7".into()).unwrap())
            .collect();
        let refused = limiter.enter_as(":1.7".into()).unwrap_err();
        assert!(
            matches!(refused, AgentError::PolicyRefused(_)),
            "{refused:?}"
        );
        // Another caller is not affected.
        let other = limiter.enter_as(":1.8".into()).unwrap();
        drop(permits);
        drop(other);
        assert_eq!(
            limiter.callers(),
            0,
            "nothing is kept for callers that left"
        );
        limiter.enter_as(":1.7".into()).unwrap();
    }

    #[test]
    fn oversized_reasons_are_refused_and_long_ones_cut() {
        assert!(check_reason_size(&"x".repeat(MAX_REASON_INPUT)).is_ok());
        let e = check_reason_size(&"x".repeat(MAX_REASON_INPUT + 1)).unwrap_err();
        assert!(matches!(e, AgentError::PolicyRefused(ref m) if m.contains("4097 bytes")));
        let cut = clean_reason(&"é".repeat(150));
        assert!(cut.len() <= MAX_REASON && cut.len() >= MAX_REASON - 1);
        assert!(cut.chars().all(|c| c == 'é'));
    }

    #[test]
    fn direction_overrides_and_invisible_characters_are_removed() {
        // "driving" shown reversed as "gnivird" would mislead whoever reads the list.
        assert_eq!(clean_reason("\u{202E}gnivird"), "gnivird");
        assert_eq!(
            clean_reason("a\u{202A}b\u{2066}c\u{2069}d\u{200B}e\u{FEFF}f\u{061C}g"),
            "abcdefg"
        );
        assert_eq!(
            clean_reason("line\u{2028}sep\u{2029}\u{0085}x\n\t"),
            "linesepx"
        );
        assert_eq!(clean_reason("tag\u{E0041}\u{E007F}"), "tag");
        assert_eq!(clean_reason("\u{202E}\u{200B} \n"), "(no reason given)");
        // Visible text of any script stays.
        assert_eq!(
            clean_reason("Fahrt nach Köln, 東京"),
            "Fahrt nach Köln, 東京"
        );
    }
}
