//! The schema, as an ordered list of steps, and the runner that applies them.
//!
//! `PRAGMA user_version` holds how many steps a database has had. Each step runs in its own
//! `BEGIN IMMEDIATE` transaction together with the `user_version` bump, so a crash between
//! steps leaves a database at a clean earlier version that the next start continues from.
//! Steps are append-only: never edit one that has shipped, add a new one.

use std::path::Path;

use rusqlite::{Connection, TransactionBehavior};

use super::{StoreError, sql};

/// `PRAGMA application_id` of an ssu-agent database ("SSUA"); tells our database apart from
/// any other SQLite file that ends up at the same path.
pub(super) const APPLICATION_ID: i32 = 0x5353_5541;

/// Schema version 1.
///
/// - `installed`: at most one row (id 1): the release running on the device.
/// - `history`: update history, newest = highest id. `id` is the rowid, so "newest N" is a
///   reverse walk of the table's own b-tree and needs no extra index. `AUTOINCREMENT` keeps ids
///   from ever being reused once old entries are pruned, because clients see these ids.
/// - `last_check`: at most one row (id 1): the most recent check for updates.
/// - `settings`: user choices (`auto_install`, `postponed_until`, …).
/// - `state`: engine bookkeeping (pending install, metadata version floor, …).
///
/// Timestamps are RFC 3339 text, dates `YYYY-MM-DD`, `cves` a JSON array of strings: readable
/// with the `sqlite3` shell on a device, and checked when read back.
const V1: &str = "
CREATE TABLE installed (
    id                   INTEGER PRIMARY KEY CHECK (id = 1),
    version              TEXT NOT NULL,
    feature_release      TEXT NOT NULL,
    security_patch_level TEXT NOT NULL,
    applied_at           TEXT
);
CREATE TABLE history (
    id                   INTEGER PRIMARY KEY AUTOINCREMENT,
    at                   TEXT NOT NULL,
    kind                 TEXT NOT NULL,
    action               TEXT NOT NULL,
    version              TEXT,
    security_patch_level TEXT,
    detail               TEXT NOT NULL,
    cves                 TEXT NOT NULL DEFAULT '[]'
);
CREATE TABLE last_check (
    id       INTEGER PRIMARY KEY CHECK (id = 1),
    at       TEXT NOT NULL,
    verified INTEGER NOT NULL CHECK (verified IN (0, 1)),
    message  TEXT NOT NULL
);
CREATE TABLE settings (
    key   TEXT PRIMARY KEY NOT NULL,
    value TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE state (
    key   TEXT PRIMARY KEY NOT NULL,
    value TEXT NOT NULL
) WITHOUT ROWID;
PRAGMA application_id = 1397970241;
";

/// Schema steps, oldest first: step `i` takes a database from version `i` to `i + 1`.
pub(super) const MIGRATIONS: &[&str] = &[V1];

/// The schema version this binary writes and understands.
pub(super) const LATEST: i64 = MIGRATIONS.len() as i64;

/// Brings `conn` up to [`LATEST`].
pub(super) fn migrate(conn: &mut Connection, path: &Path) -> Result<(), StoreError> {
    migrate_with(conn, path, MIGRATIONS)
}

fn migrate_with(conn: &mut Connection, path: &Path, steps: &[&str]) -> Result<(), StoreError> {
    let supported = steps.len() as i64;
    loop {
        // IMMEDIATE takes the write lock before reading the version, so two processes
        // starting at once cannot both run the same step.
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sql("starting a schema migration"))?;
        let version = user_version(&tx)?;
        if version > supported {
            return Err(StoreError::NewerSchema {
                path: path.to_path_buf(),
                found: version,
                supported,
            });
        }
        if version == supported {
            return Ok(());
        }
        let Some(step) = usize::try_from(version).ok().and_then(|i| steps.get(i)) else {
            return Err(StoreError::Corrupt {
                path: path.to_path_buf(),
                reason: format!("schema version {version} is negative"),
            });
        };
        tx.execute_batch(step)
            .map_err(sql("applying a schema migration"))?;
        tx.pragma_update(None, "user_version", version + 1)
            .map_err(sql("recording the schema version"))?;
        tx.commit().map_err(sql("committing a schema migration"))?;
        tracing::info!(path = %path.display(), from = version, to = version + 1, "migrated store schema");
    }
}

pub(super) fn user_version(conn: &Connection) -> Result<i64, StoreError> {
    conn.pragma_query_one(None, "user_version")
        .map_err(sql("reading the schema version"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tables(conn: &Connection) -> Vec<String> {
        let mut stmt = conn
            .prepare("SELECT name FROM sqlite_schema WHERE type = 'table' ORDER BY name")
            .unwrap();
        stmt.query_map([], |row| row.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    }

    #[test]
    fn v1_creates_every_table_and_marks_the_database_as_ours() {
        let mut conn = Connection::open_in_memory().unwrap();
        migrate(&mut conn, Path::new(":memory:")).unwrap();
        assert_eq!(user_version(&conn).unwrap(), LATEST);
        let app_id: i32 = conn.pragma_query_one(None, "application_id").unwrap();
        assert_eq!(app_id, APPLICATION_ID);
        assert_eq!(
            tables(&conn),
            [
                "history",
                "installed",
                "last_check",
                "settings",
                "sqlite_sequence",
                "state"
            ]
        );
    }

    #[test]
    fn application_id_literal_matches_the_constant() {
        assert!(V1.contains(&format!("application_id = {APPLICATION_ID};")));
    }

    #[test]
    fn migrating_twice_is_a_no_op() {
        let mut conn = Connection::open_in_memory().unwrap();
        migrate(&mut conn, Path::new(":memory:")).unwrap();
        conn.execute("INSERT INTO state (key, value) VALUES ('k', 'v')", [])
            .unwrap();
        migrate(&mut conn, Path::new(":memory:")).unwrap();
        let v: String = conn
            .query_row("SELECT value FROM state WHERE key = 'k'", [], |r| r.get(0))
            .unwrap();
        assert_eq!(v, "v");
    }

    #[test]
    fn a_failing_step_leaves_the_previous_version_and_nothing_of_itself() {
        let mut conn = Connection::open_in_memory().unwrap();
        let steps = [
            "CREATE TABLE a (x);",
            "CREATE TABLE b (y); THIS IS NOT SQL;",
        ];
        let err = migrate_with(&mut conn, Path::new(":memory:"), &steps).unwrap_err();
        assert!(matches!(err, StoreError::Sql { .. }), "{err:?}");
        assert_eq!(user_version(&conn).unwrap(), 1);
        assert_eq!(tables(&conn), ["a"]);
    }

    #[test]
    fn a_later_step_keeps_existing_data() {
        let mut conn = Connection::open_in_memory().unwrap();
        migrate_with(&mut conn, Path::new(":memory:"), &["CREATE TABLE a (x);"]).unwrap();
        conn.execute("INSERT INTO a (x) VALUES (42)", []).unwrap();
        let steps = [
            "CREATE TABLE a (x);",
            "ALTER TABLE a ADD COLUMN y DEFAULT 7;",
        ];
        migrate_with(&mut conn, Path::new(":memory:"), &steps).unwrap();
        assert_eq!(user_version(&conn).unwrap(), 2);
        let row: (i64, i64) = conn
            .query_row("SELECT x, y FROM a", [], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap();
        assert_eq!(row, (42, 7));
    }

    #[test]
    fn a_newer_version_is_refused_without_running_anything() {
        let mut conn = Connection::open_in_memory().unwrap();
        conn.pragma_update(None, "user_version", 5).unwrap();
        let err = migrate(&mut conn, Path::new("x.db")).unwrap_err();
        assert!(
            matches!(
                err,
                StoreError::NewerSchema {
                    found: 5,
                    supported: LATEST,
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(tables(&conn).is_empty());
    }
}
