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

use jiff::Timestamp;

use super::ports::{Courier, Signed};
use super::{Clock, Engine, Internal, Notice, Ports};
use crate::policy::delivery::{self, Answer, Backoff, QueueLimits};

/// Store key of when the last report was queued (RFC 3339): the periodic report counts from
/// it, across restarts.
const LAST_QUEUED_KEY: &str = "report_last_queued_at";

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
    /// Reports in the queue (as last seen in the store).
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
        self.delivery.queued = self.store.report_queue().map(|q| q.len()).unwrap_or(0);
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
                self.delivery.queued = queue.len() + 1 - drop.len();
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
            Err(e) => tracing::error!(error = %e, %reason, "cannot queue a report"),
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
                self.delivery.queued = 0;
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
            self.forget_report(next.id);
            return self.send_next(now);
        };
        let bytes = next.body.len() as u64;
        let link = self.link();
        let budget = self.config.link_cost.monthly_budget_bytes;
        match delivery::may_send(link.costly(), budget, self.budget_used(now), bytes) {
            Ok(()) => {
                self.delivery.held = None;
            }
            Err(why) => {
                if self.delivery.held.as_ref() != Some(&why) {
                    tracing::info!(queued = self.delivery.queued, "{why}");
                }
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
            }
        }
        self.send_next(now);
    }

    fn forget_report(&mut self, id: i64) {
        match self.store.remove_report(id) {
            Ok(_) => self.delivery.queued = self.delivery.queued.saturating_sub(1),
            Err(e) => {
                // Sent again later; the server answers "duplicate".
                tracing::error!(error = %e, "cannot remove a delivered report from the queue");
                self.delivery.retry_at = Some(self.retry_after(self.clock.now(), id));
            }
        }
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

fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}
