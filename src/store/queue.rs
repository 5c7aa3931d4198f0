//! The report queue (schema 2): signed reports waiting for delivery to the fleet server, so
//! none is lost across restarts, power cuts and link outages. What to drop when it is full is
//! the policy's decision (`policy::delivery`); this only stores.

use jiff::Timestamp;
use rusqlite::{OptionalExtension, TransactionBehavior, params};

use super::{Store, StoreError, sql};

/// A queued report's size, for the queue's bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueuedSize {
    pub id: i64,
    /// Bytes of the body as it is POSTed.
    pub bytes: u64,
}

/// A queued report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuedReport {
    /// Increases with every report queued; never reused.
    pub id: i64,
    pub queued_at: Timestamp,
    /// What made the agent send it (`installed`, `periodic`, …), for logs.
    pub reason: String,
    /// The envelope as JSON, exactly as it is POSTed.
    pub body: String,
}

impl Store {
    /// Every queued report's id and size, oldest first.
    pub fn report_queue(&self) -> Result<Vec<QueuedSize>, StoreError> {
        const CONTEXT: &str = "reading the report queue";
        let mut stmt = self
            .conn
            .prepare_cached("SELECT id, length(CAST(body AS BLOB)) FROM report_queue ORDER BY id")
            .map_err(sql(CONTEXT))?;
        let rows = stmt
            .query_map([], |r| {
                Ok(QueuedSize {
                    id: r.get(0)?,
                    bytes: r.get::<_, i64>(1)?.max(0) as u64,
                })
            })
            .map_err(sql(CONTEXT))?;
        rows.collect::<Result<_, _>>().map_err(sql(CONTEXT))
    }

    /// Queues a report and removes the reports in `drop`, in one transaction: a power cut
    /// leaves either the old queue or the new one. Returns the new report's id.
    pub fn enqueue_report(
        &self,
        queued_at: Timestamp,
        reason: &str,
        body: &str,
        drop: &[i64],
    ) -> Result<i64, StoreError> {
        let tx = rusqlite::Transaction::new_unchecked(&self.conn, TransactionBehavior::Immediate)
            .map_err(sql("starting a transaction"))?;
        for id in drop {
            tx.execute("DELETE FROM report_queue WHERE id = ?1", [id])
                .map_err(sql("dropping a queued report"))?;
        }
        tx.execute(
            "INSERT INTO report_queue (queued_at, reason, body) VALUES (?1, ?2, ?3)",
            params![queued_at.to_string(), reason, body],
        )
        .map_err(sql("queueing a report"))?;
        let id = tx.last_insert_rowid();
        tx.commit().map_err(sql("committing a transaction"))?;
        Ok(id)
    }

    /// The oldest queued report, the next to deliver.
    pub fn next_report(&self) -> Result<Option<QueuedReport>, StoreError> {
        const CONTEXT: &str = "reading the report queue";
        let row = self
            .conn
            .prepare_cached(
                "SELECT id, queued_at, reason, body FROM report_queue ORDER BY id LIMIT 1",
            )
            .and_then(|mut stmt| {
                stmt.query_row([], |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, String>(2)?,
                        r.get::<_, String>(3)?,
                    ))
                })
                .optional()
            })
            .map_err(sql(CONTEXT))?;
        let Some((id, at, reason, body)) = row else {
            return Ok(None);
        };
        let queued_at = at.parse().map_err(|_| StoreError::Invalid {
            what: "queued report time",
            value: at,
        })?;
        Ok(Some(QueuedReport {
            id,
            queued_at,
            reason,
            body,
        }))
    }

    /// Removes a delivered (or refused) report; false when it was not queued (any more).
    pub fn remove_report(&self, id: i64) -> Result<bool, StoreError> {
        let n = self
            .conn
            .execute("DELETE FROM report_queue WHERE id = ?1", [id])
            .map_err(sql("removing a delivered report"))?;
        Ok(n > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn reports_queue_in_order_survive_a_reopen_and_leave_when_removed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.db");
        let store = Store::open(&path).unwrap();
        assert_eq!(store.next_report().unwrap(), None);
        let a = store
            .enqueue_report(at("2026-11-27T10:00:00Z"), "installed", "{\"a\":1}", &[])
            .unwrap();
        let b = store
            .enqueue_report(at("2026-11-27T11:00:00Z"), "periodic", "{\"b\":22}", &[])
            .unwrap();
        assert!(b > a);
        drop(store);
        let store = Store::open(&path).unwrap();
        assert_eq!(
            store.report_queue().unwrap(),
            [
                QueuedSize { id: a, bytes: 7 },
                QueuedSize { id: b, bytes: 8 }
            ]
        );
        let next = store.next_report().unwrap().unwrap();
        assert_eq!(
            (next.id, next.reason.as_str(), next.body.as_str()),
            (a, "installed", "{\"a\":1}")
        );
        assert_eq!(next.queued_at, at("2026-11-27T10:00:00Z"));
        assert!(store.remove_report(a).unwrap());
        assert!(!store.remove_report(a).unwrap(), "removed once");
        assert_eq!(store.next_report().unwrap().unwrap().id, b);
        // Dropping and queueing are one step; ids are never reused.
        let c = store
            .enqueue_report(at("2026-11-27T12:00:00Z"), "periodic", "é", &[b])
            .unwrap();
        assert!(c > b);
        assert_eq!(
            store.report_queue().unwrap(),
            [QueuedSize { id: c, bytes: 2 }]
        );
        assert!(store.remove_report(c).unwrap());
        let d = store
            .enqueue_report(at("2026-11-27T12:00:00Z"), "periodic", "x", &[])
            .unwrap();
        assert!(d > c);
    }

    #[test]
    fn a_failed_enqueue_keeps_the_queue_as_it_was() {
        let store = Store::open_in_memory().unwrap();
        let a = store
            .enqueue_report(at("2026-11-27T10:00:00Z"), "periodic", "a", &[])
            .unwrap();
        store
            .execute_batch_for_test("PRAGMA query_only = 1")
            .unwrap();
        assert!(
            store
                .enqueue_report(at("2026-11-27T10:00:00Z"), "periodic", "b", &[a])
                .is_err()
        );
        store
            .execute_batch_for_test("PRAGMA query_only = 0")
            .unwrap();
        assert_eq!(store.report_queue().unwrap().len(), 1);
        assert_eq!(store.next_report().unwrap().unwrap().id, a);
    }

    #[test]
    fn a_damaged_time_is_an_error_not_a_panic() {
        let store = Store::open_in_memory().unwrap();
        store
            .enqueue_report(at("2026-11-27T10:00:00Z"), "periodic", "a", &[])
            .unwrap();
        store
            .execute_batch_for_test("UPDATE report_queue SET queued_at = 'soon'")
            .unwrap();
        assert!(matches!(
            store.next_report(),
            Err(StoreError::Invalid { .. })
        ));
    }
}
