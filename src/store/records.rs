//! The SQL behind each [`Store`](super::Store) method, written once over `&Connection` so that
//! [`Store`](super::Store) and [`Tx`](super::Tx) (whose transaction derefs to a connection)
//! share it; and the text encodings of the values we store.
//!
//! Everything read back is checked: a value that does not parse is a
//! [`StoreError::Invalid`], never a panic and never a silently defaulted value.

use jiff::Timestamp;
use jiff::civil::Date;
use rusqlite::types::ValueRef;
use rusqlite::{Connection, Row, params};

use super::{HistoryEntry, NewHistoryEntry, StoreError, sql};
use crate::status::{CheckRecord, Installed};

pub(super) fn installed(conn: &Connection) -> Result<Option<Installed>, StoreError> {
    const CONTEXT: &str = "reading the installed release";
    let mut stmt = conn
        .prepare_cached(
            "SELECT version, feature_release, security_patch_level, applied_at FROM installed WHERE id = 1",
        )
        .map_err(sql(CONTEXT))?;
    let mut rows = stmt.query([]).map_err(sql(CONTEXT))?;
    let Some(row) = rows.next().map_err(sql(CONTEXT))? else {
        return Ok(None);
    };
    Ok(Some(Installed {
        version: text(row, 0, "installed version")?,
        feature_release: text(row, 1, "installed feature release")?,
        security_patch_level: parse_date(
            &text(row, 2, "installed security patch level")?,
            "installed security patch level",
        )?,
        applied_at: opt_text(row, 3, "installed applied_at")?
            .map(|s| parse_timestamp(&s, "installed applied_at"))
            .transpose()?,
    }))
}

pub(super) fn set_installed(conn: &Connection, installed: &Installed) -> Result<(), StoreError> {
    let patch_level = format_date(installed.security_patch_level, "security patch level")?;
    let applied_at = installed.applied_at.map(|t| t.to_string());
    conn.prepare_cached(
        "INSERT INTO installed (id, version, feature_release, security_patch_level, applied_at)
         VALUES (1, ?1, ?2, ?3, ?4)
         ON CONFLICT (id) DO UPDATE SET
             version = excluded.version,
             feature_release = excluded.feature_release,
             security_patch_level = excluded.security_patch_level,
             applied_at = excluded.applied_at",
    )
    .and_then(|mut stmt| {
        stmt.execute(params![
            installed.version,
            installed.feature_release,
            patch_level,
            applied_at
        ])
    })
    .map_err(sql("recording the installed release"))?;
    Ok(())
}

pub(super) fn append_history(
    conn: &Connection,
    entry: &NewHistoryEntry,
) -> Result<HistoryEntry, StoreError> {
    let patch_level = entry
        .security_patch_level
        .map(|d| format_date(d, "history security patch level"))
        .transpose()?;
    let cves = serde_json::to_string(&entry.cves).map_err(|e| StoreError::Invalid {
        what: "history CVE list",
        value: e.to_string(),
    })?;
    let id = conn
        .prepare_cached(
            "INSERT INTO history (at, kind, action, version, security_patch_level, detail, cves)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        )
        .and_then(|mut stmt| {
            stmt.insert(params![
                entry.at.to_string(),
                entry.kind,
                entry.action,
                entry.version,
                patch_level,
                entry.detail,
                cves,
            ])
        })
        .map_err(sql("appending to the update history"))?;
    Ok(HistoryEntry {
        id,
        at: entry.at,
        kind: entry.kind.clone(),
        action: entry.action.clone(),
        version: entry.version.clone(),
        security_patch_level: entry.security_patch_level,
        detail: entry.detail.clone(),
        cves: entry.cves.clone(),
    })
}

pub(super) fn history(conn: &Connection, limit: usize) -> Result<Vec<HistoryEntry>, StoreError> {
    const CONTEXT: &str = "reading the update history";
    // Newest first by id, not by `at`: the clock may have stepped back between entries.
    let mut stmt = conn
        .prepare_cached(
            "SELECT id, at, kind, action, version, security_patch_level, detail, cves
             FROM history ORDER BY id DESC LIMIT ?1",
        )
        .map_err(sql(CONTEXT))?;
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let mut rows = stmt.query([limit]).map_err(sql(CONTEXT))?;
    let mut entries = Vec::new();
    while let Some(row) = rows.next().map_err(sql(CONTEXT))? {
        entries.push(history_entry(row)?);
    }
    Ok(entries)
}

fn history_entry(row: &Row<'_>) -> Result<HistoryEntry, StoreError> {
    let cves = text(row, 7, "history CVE list")?;
    Ok(HistoryEntry {
        id: integer(row, 0, "history id")?,
        at: parse_timestamp(&text(row, 1, "history time")?, "history time")?,
        kind: text(row, 2, "history kind")?,
        action: text(row, 3, "history action")?,
        version: opt_text(row, 4, "history version")?,
        security_patch_level: opt_text(row, 5, "history security patch level")?
            .map(|s| parse_date(&s, "history security patch level"))
            .transpose()?,
        detail: text(row, 6, "history detail")?,
        cves: serde_json::from_str(&cves).map_err(|_| StoreError::Invalid {
            what: "history CVE list",
            value: cves.clone(),
        })?,
    })
}

pub(super) fn last_check(conn: &Connection) -> Result<Option<CheckRecord>, StoreError> {
    const CONTEXT: &str = "reading the last check";
    let mut stmt = conn
        .prepare_cached("SELECT at, verified, message FROM last_check WHERE id = 1")
        .map_err(sql(CONTEXT))?;
    let mut rows = stmt.query([]).map_err(sql(CONTEXT))?;
    let Some(row) = rows.next().map_err(sql(CONTEXT))? else {
        return Ok(None);
    };
    Ok(Some(CheckRecord {
        at: parse_timestamp(&text(row, 0, "last check time")?, "last check time")?,
        verified: match integer(row, 1, "last check verified flag")? {
            0 => false,
            1 => true,
            other => {
                return Err(StoreError::Invalid {
                    what: "last check verified flag",
                    value: other.to_string(),
                });
            }
        },
        message: text(row, 2, "last check message")?,
    }))
}

pub(super) fn set_last_check(conn: &Connection, record: &CheckRecord) -> Result<(), StoreError> {
    conn.prepare_cached(
        "INSERT INTO last_check (id, at, verified, message) VALUES (1, ?1, ?2, ?3)
         ON CONFLICT (id) DO UPDATE SET
             at = excluded.at, verified = excluded.verified, message = excluded.message",
    )
    .and_then(|mut stmt| {
        stmt.execute(params![
            record.at.to_string(),
            record.verified,
            record.message
        ])
    })
    .map_err(sql("recording the last check"))?;
    Ok(())
}

/// The two key/value tables. Kept apart because they have different owners: `settings` are
/// the user's choices, `state` is the engine's bookkeeping.
#[derive(Clone, Copy)]
pub(super) enum Table {
    Settings,
    State,
}

pub(super) fn get_value(
    conn: &Connection,
    table: Table,
    key: &str,
) -> Result<Option<String>, StoreError> {
    let (query, context, what) = match table {
        Table::Settings => (
            "SELECT value FROM settings WHERE key = ?1",
            "reading a setting",
            "setting value",
        ),
        Table::State => (
            "SELECT value FROM state WHERE key = ?1",
            "reading engine state",
            "state value",
        ),
    };
    let mut stmt = conn.prepare_cached(query).map_err(sql(context))?;
    let mut rows = stmt.query([key]).map_err(sql(context))?;
    match rows.next().map_err(sql(context))? {
        Some(row) => Ok(Some(text(row, 0, what)?)),
        None => Ok(None),
    }
}

pub(super) fn set_value(
    conn: &Connection,
    table: Table,
    key: &str,
    value: Option<&str>,
) -> Result<(), StoreError> {
    let (upsert, delete, context) = match table {
        Table::Settings => (
            "INSERT INTO settings (key, value) VALUES (?1, ?2)
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            "DELETE FROM settings WHERE key = ?1",
            "writing a setting",
        ),
        Table::State => (
            "INSERT INTO state (key, value) VALUES (?1, ?2)
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            "DELETE FROM state WHERE key = ?1",
            "writing engine state",
        ),
    };
    match value {
        Some(value) => conn
            .prepare_cached(upsert)
            .and_then(|mut stmt| stmt.execute([key, value])),
        None => conn
            .prepare_cached(delete)
            .and_then(|mut stmt| stmt.execute([key])),
    }
    .map_err(sql(context))?;
    Ok(())
}

/// `YYYY-MM-DD`. Years outside 0..=9999 would print with a sign and six digits, which no
/// reader of a patch level expects, so they are refused.
fn format_date(date: Date, what: &'static str) -> Result<String, StoreError> {
    if !(0..=9999).contains(&date.year()) {
        return Err(StoreError::Invalid {
            what,
            value: date.to_string(),
        });
    }
    Ok(date.to_string())
}

/// Only the exact form [`format_date`] writes: jiff alone would also take a date-time.
fn parse_date(s: &str, what: &'static str) -> Result<Date, StoreError> {
    s.parse::<Date>()
        .ok()
        .filter(|d| s.len() == 10 && d.to_string() == s)
        .ok_or_else(|| StoreError::Invalid {
            what,
            value: s.to_owned(),
        })
}

fn parse_timestamp(s: &str, what: &'static str) -> Result<Timestamp, StoreError> {
    s.parse().map_err(|_| StoreError::Invalid {
        what,
        value: s.to_owned(),
    })
}

fn text(row: &Row<'_>, idx: usize, what: &'static str) -> Result<String, StoreError> {
    opt_text(row, idx, what)?.ok_or(StoreError::Invalid {
        what,
        value: "NULL".to_owned(),
    })
}

fn opt_text(row: &Row<'_>, idx: usize, what: &'static str) -> Result<Option<String>, StoreError> {
    match row.get_ref(idx).map_err(sql("reading a column"))? {
        ValueRef::Null => Ok(None),
        ValueRef::Text(bytes) => match std::str::from_utf8(bytes) {
            Ok(s) => Ok(Some(s.to_owned())),
            Err(_) => Err(StoreError::Invalid {
                what,
                value: String::from_utf8_lossy(bytes).into_owned(),
            }),
        },
        other => Err(invalid_type(what, other)),
    }
}

fn integer(row: &Row<'_>, idx: usize, what: &'static str) -> Result<i64, StoreError> {
    match row.get_ref(idx).map_err(sql("reading a column"))? {
        ValueRef::Integer(i) => Ok(i),
        other => Err(invalid_type(what, other)),
    }
}

fn invalid_type(what: &'static str, value: ValueRef<'_>) -> StoreError {
    let value = match value {
        ValueRef::Null => "NULL".to_owned(),
        ValueRef::Integer(i) => format!("integer {i}"),
        ValueRef::Real(f) => format!("real {f}"),
        ValueRef::Text(t) => format!("text {:?}", String::from_utf8_lossy(t)),
        ValueRef::Blob(b) => format!("{}-byte blob", b.len()),
    };
    StoreError::Invalid { what, value }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_round_trip_only_in_canonical_form() {
        let d = parse_date("2024-03-05", "d").unwrap();
        assert_eq!(format_date(d, "d").unwrap(), "2024-03-05");
        for bad in [
            "2024-3-5",
            "2024-03-05T00:00:00",
            "2024-02-30",
            "20240305",
            "",
            " 2024-03-05",
        ] {
            assert!(
                matches!(parse_date(bad, "d"), Err(StoreError::Invalid { .. })),
                "{bad:?}"
            );
        }
        assert!(format_date(Date::MIN, "d").is_err());
    }

    #[test]
    fn timestamps_keep_nanoseconds() {
        let t: Timestamp = "2024-03-05T06:07:08.123456789Z".parse().unwrap();
        assert_eq!(parse_timestamp(&t.to_string(), "t").unwrap(), t);
        assert!(parse_timestamp("yesterday", "t").is_err());
    }
}
