//! The compatibility rule of docs/store.md, enforced for every schema version this binary
//! knows: the schema of a released version never changes, a newer schema keeps everything the
//! older agents it admits use, and every such older agent opens and uses it.
//!
//! Built normally, the versions are 1 and 2 (the report queue, additive), so a real pair is
//! checked; `cargo test --lib --features test-extra-migration store::` (run by scripts/test)
//! adds the additive test step 3.

use super::*;
use crate::store::migrations::{MIGRATIONS, RELEASED, migrate_with, user_version};
use crate::store::open::open_file_with;

/// A database that had the first `v` steps.
fn db_at(v: i64) -> Connection {
    let mut conn = Connection::open_in_memory().unwrap();
    migrate_with(&mut conn, Path::new(":memory:"), &MIGRATIONS[..v as usize]).unwrap();
    conn
}

/// The schema as SQL text, one object per line, sorted: what a released version froze.
fn schema_dump(conn: &Connection) -> String {
    let mut stmt = conn
        .prepare("SELECT sql FROM sqlite_schema WHERE sql IS NOT NULL ORDER BY type, name")
        .unwrap();
    let objects: Vec<String> = stmt
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let app_id: i32 = conn.pragma_query_one(None, "application_id").unwrap();
    let mut out = String::new();
    for sql in objects {
        out.push_str(&sql);
        out.push_str(";\n");
    }
    out.push_str(&format!(
        "PRAGMA application_id = {app_id};\nPRAGMA user_version = {};\n",
        user_version(conn).unwrap()
    ));
    out
}

fn tables(conn: &Connection) -> Vec<String> {
    let mut stmt = conn
        .prepare(
            "SELECT name FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite_%'
             ORDER BY name",
        )
        .unwrap();
    stmt.query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

/// (name, declared type, not null, default, primary key position) of each column.
type Column = (String, String, bool, Option<String>, i64);

fn columns(conn: &Connection, table: &str) -> Vec<Column> {
    let mut stmt = conn
        .prepare(&format!("PRAGMA table_xinfo({table})"))
        .unwrap();
    stmt.query_map([], |r| {
        Ok((r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?))
    })
    .unwrap()
    .collect::<Result<_, _>>()
    .unwrap()
}

fn triggers(conn: &Connection) -> Vec<String> {
    let mut stmt = conn
        .prepare("SELECT name FROM sqlite_schema WHERE type = 'trigger' ORDER BY name")
        .unwrap();
    stmt.query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

#[test]
fn released_schemas_never_change() {
    for &v in RELEASED {
        let file = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("src/store/schema/v{v}.sql"));
        let frozen = fs::read_to_string(&file).unwrap_or_else(|e| {
            panic!("{}: {e} (every released version is frozen)", file.display())
        });
        assert_eq!(
            schema_dump(&db_at(v)),
            frozen,
            "schema version {v} has shipped: never edit its step, add a new one (docs/store.md)"
        );
    }
}

#[test]
fn a_newer_schema_keeps_everything_its_admitted_readers_use() {
    for v in 1..=LATEST {
        let newer = db_at(v);
        let declared = SchemaVersion::decode(user_version(&newer).unwrap()).unwrap();
        assert_eq!(declared.version, v);
        for r in declared.readable_from..v {
            let older = db_at(r);
            for table in tables(&older) {
                let had = columns(&older, &table);
                let has = columns(&newer, &table);
                assert!(
                    !has.is_empty(),
                    "v{v} dropped table {table}, which agents of v{r} use"
                );
                for col in &had {
                    assert!(
                        has.contains(col),
                        "v{v} changed column {table}.{} that agents of v{r} use: {col:?}",
                        col.0
                    );
                }
                for col in has.iter().filter(|c| !had.iter().any(|o| o.0 == c.0)) {
                    // An older agent's INSERT does not name the column.
                    assert!(
                        !col.2 || col.3.is_some(),
                        "v{v} adds {table}.{} NOT NULL without a default: agents of v{r} \
                         cannot insert",
                        col.0
                    );
                }
            }
            // A trigger could refuse or rewrite an older agent's writes behind its back.
            assert_eq!(
                triggers(&newer),
                triggers(&older),
                "v{v} adds triggers that agents of v{r} would run into"
            );
        }
    }
}

/// Everything the store offers, written and read back: what an agent does with its store.
fn exercise(store: &mut Store, n: u32) {
    store.set_installed(&installed("2.0")).unwrap();
    assert_eq!(store.installed().unwrap(), Some(installed("2.0")));
    let e = store.append_history(&entry(n)).unwrap();
    assert_eq!(store.history(1).unwrap(), [e]);
    store.set_last_check(&check("ok")).unwrap();
    assert_eq!(store.last_check().unwrap(), Some(check("ok")));
    store.set_setting("auto_install", "false").unwrap();
    assert_eq!(
        store.setting("auto_install").unwrap().as_deref(),
        Some("false")
    );
    store
        .transaction(|tx| {
            tx.set_state(floors::LATEST_KNOWN_TIME_KEY, Some("2027-01-01T00:00:00Z"))?;
            tx.set_state("pending", None)
        })
        .unwrap();
    assert!(
        store
            .state(floors::LATEST_KNOWN_TIME_KEY)
            .unwrap()
            .is_some()
    );
}

fn store_on(conn: Connection, path: &Path) -> Store {
    Store {
        conn,
        path: Some(path.to_path_buf()),
        floors: Some(floors::copy_path(path)),
        recovery: None,
    }
}

#[test]
fn every_version_opens_with_every_older_agent_the_rule_admits() {
    let mut pairs = 0;
    for v in 1..=LATEST {
        for r in 1..=v {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join(FILE_NAME);
            // Written by the agent of version v ...
            let mut newer = store_on(
                open_file_with(&path, &MIGRATIONS[..v as usize]).unwrap(),
                &path,
            );
            exercise(&mut newer, 1);
            drop(newer);
            let raw = {
                let conn = Connection::open(&path).unwrap();
                user_version(&conn).unwrap()
            };
            // What the steps promise, independently of the code that decides.
            let promised = MIGRATIONS[..v as usize]
                .iter()
                .map(|m| m.readable_from)
                .max()
                .unwrap();
            let admitted = r == v || r >= promised;
            // ... opened by the agent of version r.
            match open_file_with(&path, &MIGRATIONS[..r as usize]) {
                Ok(conn) => {
                    assert!(admitted, "v{r} opened v{v}, which does not admit it");
                    let mut older = store_on(conn, &path);
                    exercise(&mut older, 2);
                    assert_eq!(older.history(10).unwrap().len(), 2);
                    drop(older);
                    pairs += 1;
                }
                Err(StoreError::NewerSchema {
                    found, supported, ..
                }) => {
                    assert!(!admitted, "v{r} refused v{v}, which admits it");
                    assert_eq!((found, supported), (v, r));
                }
                Err(e) => panic!("v{r} opening v{v}: {e}"),
            }
            // Never marked down, never migrated by the older agent.
            let conn = Connection::open(&path).unwrap();
            assert_eq!(
                user_version(&conn).unwrap(),
                raw,
                "v{r} changed v{v}'s version"
            );
            // And the newer agent takes it back as it was.
            drop(conn);
            let mut again = store_on(
                open_file_with(&path, &MIGRATIONS[..v as usize]).unwrap(),
                &path,
            );
            exercise(&mut again, 3);
        }
    }
    let promised_pairs: i64 = (1..=LATEST)
        .map(|v| {
            let from = MIGRATIONS[..v as usize]
                .iter()
                .map(|m| m.readable_from)
                .max()
                .unwrap();
            v - from.min(v) + 1
        })
        .sum();
    assert_eq!(pairs, promised_pairs, "every admitted pair was opened");
}
