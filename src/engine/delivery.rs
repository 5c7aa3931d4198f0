//! Delivering signed reports to the fleet server (`[report] url`; docs/report.md).
//!
//! After every install, rollback and failure, subscription change and integrity change, and
//! once per check interval, the engine asks the courier to sign a report of the status as it
//! stands once the change has been handled, and queues it in the store
//! ([`crate::store::QueuedReport`]) before any attempt to send it — so a report survives
//! restarts, power cuts and link outages. The oldest report is POSTed, one at a time (a
//! server that checks counters sees them in order); the answer is judged by
//! [`crate::policy::delivery::classify`]. A failure keeps the report and waits
//! ([`crate::policy::delivery::retry_delay`]); on a costly link each report counts against
//! the monthly budget like a download. None of this makes the engine busy: updates never wait
//! for reports.
//!
//! What a user needs to see of it — configured, queue length, last delivery, last error — is
//! kept in the status ([`crate::status::ReportDelivery`], D-Bus `ReportDelivery`), updated on
//! every enqueue, answer, failure and drop.

use jiff::Timestamp;

use super::ports::{Courier, Signed};
use super::{Clock, Engine, Internal, Notice, Ports};
use crate::policy::delivery::{self, Answer, Backoff, QueueLimits};

/// Store key of when the last report was queued (RFC 3339): the periodic report counts from
/// it, across restarts.
const LAST_QUEUED_KEY: &str = "report_last_queued_at";

/// Store key of when the server last acknowledged a report (RFC 3339): shown, across restarts.
const LAST_DELIVERED_KEY: &str = "report_last_delivered_at";

/// Longest last error shown (characters): a settings screen's line, not a log.
const MAX_ERROR_CHARS: usize = 240;

/// What the engine tracks for delivery.
#[derive(Debug, Default)]
pub(super) struct DeliveryState {
    /// Why a report is wanted, not yet signed (several changes in one turn make one report).
    wanted: Vec<&'static str>,
    /// A report is being signed.
    signing: bool,
    /// The queued report being POSTed: (id, key id, counter, bytes).
    posting: Option<(i64, String, u64, u64)>,
    /// Failed attempts in a row.
    failures: u32,
    /// No attempt before this (backoff).
    retry_at: Option<Timestamp>,
    /// When the next periodic report is due.
    periodic_at: Option<Timestamp>,
    /// Reports in the queue (as last seen in the store); changed only by
    /// [`Engine::set_queued`], which shows it.
    queued: usize,
    /// Why delivery waits for a cheaper link (logged once per change).
    held: Option<String>,
}

impl<C: Clock, P: Ports> Engine<C, P> {
    /// Loads the queue's length and the periodic schedule (at start).
    pub(super) fn load_delivery(&mut self) {
        if !self.ports.courier.configured() {
            return;
        }
        self.status.delivery.configured = true;
        self.status.delivery.last_delivered = self
            .store
            .state(LAST_DELIVERED_KEY)
            .ok()
            .flatten()
            .and_then(|s| s.parse().ok());
        let now = self.clock.now();
        let last = self
            .store
            .state(LAST_QUEUED_KEY)
            .ok()
            .flatten()
            .and_then(|s| s.parse().ok());
        self.delivery.periodic_at = Some(delivery::next_periodic(
            last,
            now,
            self.config.check.boot_delay.0,
            self.config.check.interval.0,
        ));
        let queued = self.store.report_queue().map(|q| q.len()).unwrap_or(0);
        self.set_queued(queued);
        if self.delivery.queued > 0 {
            tracing::info!(
                queued = self.delivery.queued,
                "reports from before the restart wait for delivery"
            );
        }
    }

    /// A notice that the fleet server should hear about.
    pub(super) fn report_notice(&mut self, notice: &Notice) {
        match notice {
            Notice::InstallFinished(f) => self.want_report(f.outcome),
            Notice::SubscriptionChanged(_) => self.want_report("subscription-changed"),
            Notice::IntegrityChanged(_) => self.want_report("integrity-changed"),
            _ => {}
        }
    }

    /// Asks for a report of the status as it will stand after the current input.
    pub(super) fn want_report(&mut self, reason: &'static str) {
        if self.ports.courier.configured() && !self.delivery.wanted.contains(&reason) {
            self.delivery.wanted.push(reason);
        }
    }

    /// When the delivery side next needs the engine's attention: a periodic report or a
    /// retry. `None`: nothing to wake for.
    pub(super) fn delivery_deadline(&self) -> Option<Timestamp> {
        let d = &self.delivery;
        let retry = (d.queued > 0 && d.posting.is_none() && d.held.is_none())
            .then_some(d.retry_at)
            .flatten();
        match (retry, d.periodic_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Called by the run loop after every input, once the status is up to date: signs what is
    /// wanted, queues periodic reports, sends the next queued one when it may.
    pub(super) fn tend_delivery(&mut self) {
        if !self.ports.courier.configured() {
            return;
        }
        let now = self.clock.now();
        if self.delivery.periodic_at.is_some_and(|t| t <= now) {
            self.delivery.periodic_at = None;
            self.want_report("periodic");
        }
        if !self.delivery.wanted.is_empty() && !self.delivery.signing {
            let reasons = std::mem::take(&mut self.delivery.wanted).join(",");
            self.delivery.signing = true;
            let courier = self.ports.courier.clone();
            let status = self.status.clone();
            let tx = self.internal_tx.clone();
            tokio::spawn(async move {
                let result = courier.sign(status).await;
                let _ = tx.send(Internal::ReportSigned(reasons, result));
            });
        }
        self.send_next(now);
    }

    /// A report was signed: queue it (dropping the oldest if the queue is full).
    pub(super) fn on_report_signed(&mut self, reason: String, result: Result<Signed, String>) {
        self.delivery.signing = false;
        let now = self.clock.now();
        let signed = match result {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(%reason, "cannot sign a report for the fleet server: {e}");
                self.delivery_failed(&format!("cannot sign a report: {e}"));
                self.schedule_periodic(now);
                return;
            }
        };
        let limits = QueueLimits {
            max_count: self.config.report.max_queued,
            max_bytes: self.config.report.max_queued_bytes,
        };
        let queue = match self.store.report_queue() {
            Ok(q) => q,
            Err(e) => {
                tracing::error!(error = %e, "cannot read the report queue; report not queued");
                self.delivery_failed(&format!("cannot read the report queue: {e}"));
                return;
            }
        };
        let drop = delivery::to_drop(&queue, signed.body.len() as u64, limits);
        // The report being sent stays: its answer is on the way.
        let drop: Vec<i64> = drop
            .into_iter()
            .filter(|id| self.delivery.posting.as_ref().is_none_or(|p| p.0 != *id))
            .collect();
        match self.store.enqueue_report(now, &reason, &signed.body, &drop) {
            Ok(id) => {
                self.set_queued(queue.len() + 1 - drop.len());
                if !drop.is_empty() {
                    tracing::warn!(
                        dropped = drop.len(),
                        queued = self.delivery.queued,
                        "report queue full: dropped the oldest undelivered reports"
                    );
                }
                tracing::info!(
                    id,
                    counter = signed.counter,
                    %reason,
                    queued = self.delivery.queued,
                    "report queued for the fleet server"
                );
                if let Err(e) = self
                    .store
                    .set_state(LAST_QUEUED_KEY, Some(&now.to_string()))
                {
                    tracing::warn!(error = %e, "cannot record when the last report was queued");
                }
            }
            Err(e) => {
                tracing::error!(error = %e, %reason, "cannot queue a report");
                self.delivery_failed(&format!("cannot queue a report: {e}"));
            }
        }
        self.schedule_periodic(now);
    }

    fn schedule_periodic(&mut self, now: Timestamp) {
        self.delivery.periodic_at = Some(delivery::next_periodic(
            Some(now),
            now,
            self.config.check.boot_delay.0,
            self.config.check.interval.0,
        ));
    }

    /// POSTs the oldest queued report unless one is on its way, the backoff runs, or the
    /// link's budget is spent.
    fn send_next(&mut self, now: Timestamp) {
        if self.delivery.posting.is_some()
            || self.delivery.queued == 0
            || self.delivery.retry_at.is_some_and(|t| t > now)
        {
            return;
        }
        let next = match self.store.next_report() {
            Ok(Some(r)) => r,
            Ok(None) => {
                self.set_queued(0);
                return;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot read the report queue");
                self.delivery.retry_at = Some(self.retry_after(now, 0));
                return;
            }
        };
        let Some((key_id, counter)) = crate::report::identify(&next.body) else {
            // Nothing could ever acknowledge it; it would block the queue behind it.
            tracing::error!(id = next.id, "queued report is unreadable; dropped");
            self.delivery_failed("a queued report was unreadable and was dropped");
            self.forget_report(next.id);
            return self.send_next(now);
        };
        let bytes = next.body.len() as u64;
        let link = self.link();
        let budget = self.config.link_cost.monthly_budget_bytes;
        match delivery::may_send(link.costly(), budget, self.budget_used(now), bytes) {
            Ok(()) => {
                self.delivery.held = None;
                self.status.delivery.waiting.clear();
            }
            Err(why) => {
                if self.delivery.held.as_ref() != Some(&why) {
                    tracing::info!(queued = self.delivery.queued, "{why}");
                }
                self.status.delivery.waiting = why.clone();
                self.delivery.held = Some(why);
                return;
            }
        }
        tracing::debug!(id = next.id, counter, reason = %next.reason, "sending report");
        self.delivery.posting = Some((next.id, key_id, counter, bytes));
        let courier = self.ports.courier.clone();
        let tx = self.internal_tx.clone();
        let costly = link.costly();
        tokio::spawn(async move {
            let answer = courier.post(next.body).await;
            let _ = tx.send(Internal::ReportPosted(answer, costly));
        });
    }

    /// The server answered (or did not).
    pub(super) fn on_report_posted(
        &mut self,
        answer: Result<(u16, Vec<u8>), String>,
        costly: bool,
    ) {
        let Some((id, key_id, counter, bytes)) = self.delivery.posting.take() else {
            return;
        };
        let now = self.clock.now();
        if costly {
            let answered = answer.as_ref().map(|(_, b)| b.len() as u64).unwrap_or(0);
            self.count_costly_bytes(now, bytes.saturating_add(answered));
        }
        let answer = match answer {
            Ok((status, body)) => delivery::classify(status, &body, &key_id, counter),
            Err(e) => Answer::Retry(e),
        };
        match answer {
            Answer::Delivered { duplicate } => {
                self.forget_report(id);
                self.delivery.failures = 0;
                self.delivery.retry_at = None;
                self.delivered(now);
                tracing::info!(
                    counter,
                    duplicate,
                    queued = self.delivery.queued,
                    "report delivered to the fleet server"
                );
            }
            Answer::Refused(why) => {
                self.forget_report(id);
                self.delivery.failures = 0;
                self.delivery.retry_at = None;
                tracing::error!(
                    counter,
                    queued = self.delivery.queued,
                    "report dropped: {why}"
                );
                self.delivery_failed(&format!("report {counter} dropped: {why}"));
            }
            Answer::Retry(why) => {
                self.delivery.failures = self.delivery.failures.saturating_add(1);
                let at = self.retry_after(now, id);
                self.delivery.retry_at = Some(at);
                tracing::warn!(
                    counter,
                    queued = self.delivery.queued,
                    attempt = self.delivery.failures,
                    next_attempt = %at,
                    "report not delivered, kept in the queue: {why}"
                );
                self.delivery_failed(&why);
            }
        }
        self.send_next(now);
    }

    fn forget_report(&mut self, id: i64) {
        match self.store.remove_report(id) {
            Ok(_) => self.set_queued(self.delivery.queued.saturating_sub(1)),
            Err(e) => {
                // Sent again later; the server answers "duplicate".
                tracing::error!(error = %e, "cannot remove a delivered report from the queue");
                self.delivery.retry_at = Some(self.retry_after(self.clock.now(), id));
            }
        }
    }

    /// The queue's length, in the engine's state and in the status.
    fn set_queued(&mut self, n: usize) {
        self.delivery.queued = n;
        self.status.delivery.queued = u32::try_from(n).unwrap_or(u32::MAX);
        if n == 0 {
            // Nothing left to wait.
            self.delivery.held = None;
            self.status.delivery.waiting.clear();
        }
    }

    /// The server acknowledged a report at `now`: shown, and kept for after a restart.
    fn delivered(&mut self, now: Timestamp) {
        self.status.delivery.last_delivered = Some(now);
        self.status.delivery.last_error.clear();
        if let Err(e) = self
            .store
            .set_state(LAST_DELIVERED_KEY, Some(&now.to_string()))
        {
            tracing::warn!(error = %e, "cannot record when the last report was delivered");
        }
    }

    /// Shows why delivery failed. `why` may quote the server and names the URL: one clean
    /// line, and the URL's credentials (user, password, query) left out — the property is
    /// readable by every local user.
    fn delivery_failed(&mut self, why: &str) {
        self.status.delivery.last_error =
            shown_error(why, self.config.report.url.as_ref(), MAX_ERROR_CHARS);
    }

    fn retry_after(&self, now: Timestamp, salt: i64) -> Timestamp {
        let r = &self.config.report;
        let backoff = Backoff {
            initial: r.retry_initial.0,
            max: r.retry_max.0,
        };
        // Per device and attempt, so a fleet spreads out; no global randomness needed.
        let random =
            splitmix(self.seed ^ (u64::from(self.delivery.failures) << 32) ^ salt.unsigned_abs());
        let wait = delivery::retry_delay(self.delivery.failures.max(1), backoff, random);
        now.saturating_add(wait).unwrap_or(now)
    }
}

/// `why` as [`Engine::delivery_failed`] shows it: `url` without its credentials, then one
/// clean line of at most `max` characters.
fn shown_error(why: &str, url: Option<&url::Url>, max: usize) -> String {
    let mut why = why.to_owned();
    if let Some(url) = url.filter(|u| has_secrets(u)) {
        let bare = crate::report::deliver::without_secrets(url);
        why = why.replace(url.as_str(), bare.as_str());
    }
    crate::text::one_line(&why, max)
}

fn has_secrets(u: &url::Url) -> bool {
    !u.username().is_empty() || u.password().is_some() || u.query().is_some()
}

fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shown_error_is_one_clean_bounded_line_without_the_urls_secrets() {
        let url: url::Url = "https://dev:s3cret@fleet.example/reports?token=abc"
            .parse()
            .unwrap();
        let why = format!(
            "cannot POST to {url}: error sending request for url ({url}): connection refused"
        );
        let shown = shown_error(&why, Some(&url), 240);
        assert_eq!(
            shown,
            "cannot POST to https://fleet.example/reports: error sending request for url \
             (https://fleet.example/reports): connection refused"
        );
        let plain: url::Url = "https://fleet.example/reports".parse().unwrap();
        let hostile = "the server answered 503: \u{1b}[31mdown\u{1b}[0m\n\u{1b}]0;title\u{7}";
        assert_eq!(
            shown_error(hostile, Some(&plain), 240),
            "the server answered 503: down"
        );
        let long = "y".repeat(5000);
        let shown = shown_error(&long, None, 240);
        assert_eq!(shown.chars().count(), 240);
        assert!(shown.ends_with('…'));
    }
}
