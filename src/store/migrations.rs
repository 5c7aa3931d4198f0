//! The schema, as an ordered list of steps, and the runner that applies them.
//!
//! `PRAGMA user_version` holds how many steps a database has had, and the oldest agent that
//! may still use it ([`SchemaVersion`]). Each step runs in its own `BEGIN IMMEDIATE`
//! transaction together with the `user_version` bump, so a crash between steps leaves a
//! database at a clean earlier version that the next start continues from. Steps are
//! append-only: never edit one that has shipped, add a new one — under the rule of
//! docs/store.md, which lets the agent of the other A/B slot keep using the store.

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

/// Schema version 2 (additive: agents of schema 1 keep using the database, ignoring it).
///
/// - `report_queue`: signed reports waiting for delivery to the fleet server, oldest = lowest
///   id (`AUTOINCREMENT`: an id is never reused, so a delivery that answers late cannot remove
///   a newer report that took its id). `body` is the envelope exactly as it is POSTed.
const V2: &str = "
CREATE TABLE report_queue (
    id        INTEGER PRIMARY KEY AUTOINCREMENT,
    queued_at TEXT NOT NULL,
    reason    TEXT NOT NULL,
    body      TEXT NOT NULL
);
";

/// One schema step.
#[derive(Debug, Clone, Copy)]
pub(super) struct Migration {
    /// Run in the step's transaction.
    pub sql: &'static str,
    /// The oldest schema version whose agent can still read and write a database after this
    /// step: the previous step's value for an additive step (see docs/store.md), the step's
    /// own version for one that changes or removes anything an older agent uses.
    pub readable_from: i64,
}

/// Test only: an additive step after the real ones, for the tests that run an agent with a newer schema
/// against an older one (`tests/self_update.rs` builds the agent with this feature).
#[cfg(feature = "test-extra-migration")]
const TEST_EXTRA: &str = "
CREATE TABLE test_extra (
    id   INTEGER PRIMARY KEY,
    note TEXT NOT NULL
);
ALTER TABLE history ADD COLUMN test_extra_note TEXT;
INSERT INTO test_extra (note) VALUES ('written by the test-extra-migration build');
";

/// Schema steps, oldest first: step `i` takes a database from version `i` to `i + 1`.
/// Append-only; each new step must follow the rule in docs/store.md.
pub(super) const MIGRATIONS: &[Migration] = &[
    Migration {
        sql: V1,
        readable_from: 1,
    },
    Migration {
        sql: V2,
        readable_from: 1,
    },
    #[cfg(feature = "test-extra-migration")]
    Migration {
        sql: TEST_EXTRA,
        readable_from: 1,
    },
];

/// The schema versions that shipped in a release: their schema is frozen (checked against
/// `src/store/schema/`), and every later version must stay readable by the readers its
/// `readable_from` promises.
#[cfg(test)]
pub(super) const RELEASED: &[i64] = &[1];

/// The schema version this binary writes and understands.
#[cfg(test)]
pub(super) const LATEST: i64 = MIGRATIONS.len() as i64;

/// `PRAGMA user_version` holds two numbers, like the read and write version bytes of SQLite's
/// own file header: the low 16 bits are the schema version, the next 15 the oldest schema
/// version whose agent may still use the database (0: only agents that know this version).
/// Version 1 is plain `1`, as every agent has always written it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct SchemaVersion {
    pub version: i64,
    pub readable_from: i64,
}

const VERSION_BITS: u32 = 16;
const VERSION_MASK: i64 = (1 << VERSION_BITS) - 1;

impl SchemaVersion {
    /// Decodes `PRAGMA user_version`; `None` for a negative value, which no agent writes.
    pub fn decode(raw: i64) -> Option<SchemaVersion> {
        if raw < 0 {
            return None;
        }
        let version = raw & VERSION_MASK;
        let readable_from = match raw >> VERSION_BITS {
            0 => version,
            from => from,
        };
        Some(SchemaVersion {
            version,
            readable_from,
        })
    }

    pub fn encode(self) -> i64 {
        if self.readable_from < self.version {
            (self.readable_from << VERSION_BITS) | self.version
        } else {
            self.version
        }
    }

    /// Whether an agent that knows schema versions up to `supported` may use this database.
    pub fn readable_by(self, supported: i64) -> bool {
        self.version <= supported || self.readable_from <= supported
    }
}

/// What [`migrate`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Outcome {
    /// The database is at this binary's version (perhaps after migrating it).
    Current,
    /// A newer agent's database that declares itself usable by this one: used as it is,
    /// neither migrated nor marked down.
    Newer(SchemaVersion),
}

/// Brings `conn` up to [`LATEST`], or accepts a newer database that this binary may use.
pub(super) fn migrate(conn: &mut Connection, path: &Path) -> Result<Outcome, StoreError> {
    migrate_with(conn, path, MIGRATIONS)
}

pub(super) fn migrate_with(
    conn: &mut Connection,
    path: &Path,
    steps: &[Migration],
) -> Result<Outcome, StoreError> {
    let supported = steps.len() as i64;
    loop {
        // IMMEDIATE takes the write lock before reading the version, so two processes
        // starting at once cannot both run the same step.
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sql("starting a schema migration"))?;
        let raw = user_version(&tx)?;
        let Some(found) = SchemaVersion::decode(raw) else {
            return Err(StoreError::Corrupt {
                path: path.to_path_buf(),
                reason: format!("schema version {raw} is negative"),
            });
        };
        if found.version > supported {
            if found.readable_by(supported) {
                return Ok(Outcome::Newer(found));
            }
            return Err(StoreError::NewerSchema {
                path: path.to_path_buf(),
                found: found.version,
                supported,
            });
        }
        if found.version == supported {
            return Ok(Outcome::Current);
        }
        let Some(step) = usize::try_from(found.version)
            .ok()
            .and_then(|i| steps.get(i))
        else {
            return Err(StoreError::Corrupt {
                path: path.to_path_buf(),
                reason: format!("schema version {} has no migration step", found.version),
            });
        };
        let next = SchemaVersion {
            version: found.version + 1,
            readable_from: step.readable_from.max(found.readable_from),
        };
        tx.execute_batch(step.sql)
            .map_err(sql("applying a schema migration"))?;
        tx.pragma_update(None, "user_version", next.encode())
            .map_err(sql("recording the schema version"))?;
        tx.commit().map_err(sql("committing a schema migration"))?;
        tracing::info!(
            path = %path.display(),
            from = found.version,
            to = next.version,
            readable_from = next.readable_from,
            "migrated store schema"
        );
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

    fn step(sql: &'static str, readable_from: i64) -> Migration {
        Migration { sql, readable_from }
    }

    fn schema(conn: &Connection) -> SchemaVersion {
        SchemaVersion::decode(user_version(conn).unwrap()).unwrap()
    }

    #[test]
    fn v1_creates_every_table_and_marks_the_database_as_ours() {
        let mut conn = Connection::open_in_memory().unwrap();
        migrate_with(&mut conn, Path::new(":memory:"), &MIGRATIONS[..1]).unwrap();
        // Plain 1, as agents before the compatibility rule wrote and expect it.
        assert_eq!(user_version(&conn).unwrap(), 1);
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
    fn every_step_promises_only_readers_that_exist() {
        let mut previous = 1;
        for (i, m) in MIGRATIONS.iter().enumerate() {
            let version = i as i64 + 1;
            assert!(
                (1..=version).contains(&m.readable_from),
                "step to {version}: readable_from {}",
                m.readable_from
            );
            assert!(
                m.readable_from >= previous,
                "step to {version} promises older readers than the step before it"
            );
            previous = m.readable_from;
        }
        for v in RELEASED {
            assert!((1..=LATEST).contains(v), "released version {v} unknown");
        }
    }

    #[test]
    fn schema_versions_round_trip_through_user_version() {
        for (version, readable_from, raw) in
            [(1, 1, 1), (2, 1, 0x1_0002), (3, 3, 3), (5, 2, 0x2_0005)]
        {
            let v = SchemaVersion {
                version,
                readable_from,
            };
            assert_eq!(v.encode(), raw);
            assert_eq!(SchemaVersion::decode(raw), Some(v));
        }
        assert_eq!(SchemaVersion::decode(-1), None);
        let v = SchemaVersion::decode(0x1_0003).unwrap();
        assert!(v.readable_by(1) && v.readable_by(2) && v.readable_by(3) && v.readable_by(9));
        assert!(!v.readable_by(0));
        let breaking = SchemaVersion::decode(3).unwrap();
        assert!(!breaking.readable_by(2) && breaking.readable_by(3));
    }

    #[test]
    fn migrating_twice_is_a_no_op() {
        let mut conn = Connection::open_in_memory().unwrap();
        migrate(&mut conn, Path::new(":memory:")).unwrap();
        conn.execute("INSERT INTO state (key, value) VALUES ('k', 'v')", [])
            .unwrap();
        assert_eq!(
            migrate(&mut conn, Path::new(":memory:")).unwrap(),
            Outcome::Current
        );
        let v: String = conn
            .query_row("SELECT value FROM state WHERE key = 'k'", [], |r| r.get(0))
            .unwrap();
        assert_eq!(v, "v");
    }

    #[test]
    fn a_failing_step_leaves_the_previous_version_and_nothing_of_itself() {
        let mut conn = Connection::open_in_memory().unwrap();
        let steps = [
            step("CREATE TABLE a (x);", 1),
            step("CREATE TABLE b (y); THIS IS NOT SQL;", 1),
        ];
        let err = migrate_with(&mut conn, Path::new(":memory:"), &steps).unwrap_err();
        assert!(matches!(err, StoreError::Sql { .. }), "{err:?}");
        assert_eq!(user_version(&conn).unwrap(), 1);
        assert_eq!(tables(&conn), ["a"]);
    }

    #[test]
    fn a_later_step_keeps_existing_data() {
        let mut conn = Connection::open_in_memory().unwrap();
        migrate_with(
            &mut conn,
            Path::new(":memory:"),
            &[step("CREATE TABLE a (x);", 1)],
        )
        .unwrap();
        conn.execute("INSERT INTO a (x) VALUES (42)", []).unwrap();
        let steps = [
            step("CREATE TABLE a (x);", 1),
            step("ALTER TABLE a ADD COLUMN y DEFAULT 7;", 1),
        ];
        migrate_with(&mut conn, Path::new(":memory:"), &steps).unwrap();
        assert_eq!(
            schema(&conn),
            SchemaVersion {
                version: 2,
                readable_from: 1
            }
        );
        let row: (i64, i64) = conn
            .query_row("SELECT x, y FROM a", [], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap();
        assert_eq!(row, (42, 7));
    }

    #[test]
    fn an_older_agent_uses_a_newer_database_that_allows_it_and_leaves_its_version() {
        let steps = [
            step("CREATE TABLE a (x);", 1),
            step("CREATE TABLE b (y);", 1),
            step("ALTER TABLE a ADD COLUMN z;", 1),
        ];
        let mut conn = Connection::open_in_memory().unwrap();
        migrate_with(&mut conn, Path::new(":memory:"), &steps).unwrap();
        let newer = schema(&conn);
        for older in 1..=2 {
            let outcome = migrate_with(&mut conn, Path::new(":memory:"), &steps[..older]);
            assert_eq!(outcome.unwrap(), Outcome::Newer(newer));
            assert_eq!(schema(&conn), newer, "never marked down");
        }
    }

    #[test]
    fn a_breaking_step_shuts_out_exactly_the_older_agents() {
        let steps = [
            step("CREATE TABLE a (x);", 1),
            step("CREATE TABLE b (y);", 1),
            step("DROP TABLE a;", 3),
            step("CREATE TABLE c (z);", 3),
        ];
        let mut conn = Connection::open_in_memory().unwrap();
        migrate_with(&mut conn, Path::new(":memory:"), &steps).unwrap();
        assert_eq!(user_version(&conn).unwrap(), 0x3_0004);
        for older in 1..=2 {
            let err = migrate_with(&mut conn, Path::new("x.db"), &steps[..older]).unwrap_err();
            assert!(
                matches!(err, StoreError::NewerSchema { found: 4, supported, .. } if supported == older as i64),
                "{err:?}"
            );
        }
        assert!(matches!(
            migrate_with(&mut conn, Path::new("x.db"), &steps[..3]),
            Ok(Outcome::Newer(_))
        ));
        // A later additive step cannot reopen the door the breaking step closed.
        let mut sloppy = steps.to_vec();
        sloppy.push(step("CREATE TABLE d (w);", 1));
        migrate_with(&mut conn, Path::new("x.db"), &sloppy).unwrap();
        assert_eq!(schema(&conn).readable_from, 3);
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
