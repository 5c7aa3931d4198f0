use std::collections::BTreeMap;
use std::fs;
use std::panic::{AssertUnwindSafe, catch_unwind};

use super::*;
use crate::store::migrations::{LATEST, SchemaVersion};

mod compat;
mod recovery;
mod refusal;

fn ts(s: &str) -> Timestamp {
    s.parse().unwrap()
}

fn date(s: &str) -> Date {
    s.parse().unwrap()
}

fn installed(version: &str) -> Installed {
    Installed {
        version: version.to_owned(),
        feature_release: "1.0".to_owned(),
        security_patch_level: date("2024-05-05"),
        applied_at: Some(ts("2024-05-20T10:11:12.5Z")),
    }
}

fn entry(n: u32) -> NewHistoryEntry {
    NewHistoryEntry {
        at: ts("2024-06-01T00:00:00Z") + jiff::SignedDuration::from_secs(n.into()),
        kind: "security".to_owned(),
        action: "installed".to_owned(),
        version: Some(format!("1.{n}")),
        security_patch_level: Some(date("2024-06-05")),
        detail: format!("entry {n}"),
        cves: vec![format!("CVE-2024-{n:04}"), "CVE-2023-0001".to_owned()],
    }
}

fn check(message: &str) -> CheckRecord {
    CheckRecord {
        at: ts("2024-06-02T03:04:05Z"),
        verified: true,
        message: message.to_owned(),
    }
}

/// Every file in `dir` with its bytes: compared before and after an open that must not write.
fn snapshot(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let contents = if e.file_type().unwrap().is_dir() {
                b"<directory>".to_vec()
            } else {
                fs::read(e.path()).unwrap()
            };
            (e.file_name().to_string_lossy().into_owned(), contents)
        })
        .collect()
}

/// Like `assert_eq!` on two snapshots, but reports names and sizes instead of every byte.
#[track_caller]
fn assert_same_files(after: &BTreeMap<String, Vec<u8>>, before: &BTreeMap<String, Vec<u8>>) {
    if after != before {
        let summary = |m: &BTreeMap<String, Vec<u8>>| -> Vec<(String, usize)> {
            m.iter().map(|(k, v)| (k.clone(), v.len())).collect()
        };
        let changed: Vec<&String> = after
            .iter()
            .filter(|(k, v)| before.get(*k).is_some_and(|b| b != *v))
            .map(|(k, _)| k)
            .collect();
        panic!(
            "files differ\n before: {:?}\n after:  {:?}\n changed contents: {changed:?}",
            summary(before),
            summary(after)
        );
    }
}

fn names(dir: &Path) -> Vec<String> {
    snapshot(dir).into_keys().collect()
}

/// A store on disk with some data in it, closed again so that only the main file remains.
fn populated_db(dir: &Path) -> PathBuf {
    let path = dir.join(FILE_NAME);
    let store = Store::open(&path).unwrap();
    store.set_installed(&installed("1.0")).unwrap();
    for n in 0..100 {
        store.append_history(&entry(n)).unwrap();
    }
    drop(store);
    assert_eq!(
        names(dir),
        [FILE_NAME, floors::FILE_NAME],
        "closing checkpoints and removes the WAL"
    );
    path
}

fn pragma_i64(store: &Store, name: &str) -> i64 {
    store.conn.pragma_query_one(None, name).unwrap()
}

fn schema(store: &Store) -> SchemaVersion {
    SchemaVersion::decode(pragma_i64(store, "user_version")).unwrap()
}

#[test]
fn installed_round_trips() {
    let store = Store::open_in_memory().unwrap();
    assert_eq!(store.installed().unwrap(), None);
    store.set_installed(&installed("1.0")).unwrap();
    assert_eq!(store.installed().unwrap(), Some(installed("1.0")));
    let factory = Installed {
        applied_at: None,
        ..installed("0.9")
    };
    store.set_installed(&factory).unwrap();
    assert_eq!(store.installed().unwrap(), Some(factory));
}

#[test]
fn history_round_trips_newest_first() {
    let store = Store::open_in_memory().unwrap();
    assert!(store.history(10).unwrap().is_empty());
    let first = store.append_history(&entry(1)).unwrap();
    let bare = NewHistoryEntry {
        kind: "event".to_owned(),
        action: "check".to_owned(),
        version: None,
        security_patch_level: None,
        cves: Vec::new(),
        ..entry(2)
    };
    let second = store.append_history(&bare).unwrap();
    let third = store.append_history(&entry(3)).unwrap();
    assert!(first.id < second.id && second.id < third.id);
    assert_eq!(first.detail, "entry 1");
    assert_eq!(second.version, None);

    assert_eq!(
        store.history(10).unwrap(),
        [third.clone(), second.clone(), first]
    );
    assert_eq!(store.history(2).unwrap(), [third, second]);
    assert!(store.history(0).unwrap().is_empty());
    assert_eq!(store.history(usize::MAX).unwrap().len(), 3);
}

#[test]
fn history_limit_walks_the_primary_key_backwards() {
    let store = Store::open_in_memory().unwrap();
    let plan: Vec<String> = store
        .conn
        .prepare(
            "EXPLAIN QUERY PLAN SELECT id, at, kind, action, version, security_patch_level,
             detail, cves FROM history ORDER BY id DESC LIMIT 5",
        )
        .unwrap()
        .query_map([], |row| row.get(3))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(plan, ["SCAN history"], "no sort, no temporary b-tree");
}

#[test]
fn last_check_round_trips() {
    let store = Store::open_in_memory().unwrap();
    assert_eq!(store.last_check().unwrap(), None);
    store.set_last_check(&check("ok")).unwrap();
    assert_eq!(store.last_check().unwrap(), Some(check("ok")));
    let failed = CheckRecord {
        verified: false,
        ..check("no update source configured")
    };
    store.set_last_check(&failed).unwrap();
    assert_eq!(store.last_check().unwrap(), Some(failed));
}

#[test]
fn settings_and_state_round_trip_separately() {
    let store = Store::open_in_memory().unwrap();
    assert_eq!(store.setting("auto_install").unwrap(), None);
    store.set_setting("auto_install", "true").unwrap();
    store.set_setting("auto_install", "false").unwrap();
    assert_eq!(
        store.setting("auto_install").unwrap().as_deref(),
        Some("false")
    );
    assert_eq!(store.state("auto_install").unwrap(), None);

    store.set_state("pending", Some("1.2")).unwrap();
    assert_eq!(store.state("pending").unwrap().as_deref(), Some("1.2"));
    assert_eq!(store.setting("pending").unwrap(), None);
    store.set_state("pending", None).unwrap();
    assert_eq!(store.state("pending").unwrap(), None);
    store.set_state("pending", None).unwrap();
}

#[test]
fn transaction_commits_every_write() {
    let mut store = Store::open_in_memory().unwrap();
    let id = store
        .transaction(|tx| {
            tx.set_installed(&installed("2.0"))?;
            tx.set_state("pending", None)?;
            tx.set_setting("postponed_until", "2024-07-01T00:00:00Z")?;
            tx.set_last_check(&check("ok"))?;
            let e = tx.append_history(&entry(7))?;
            // Reads inside the transaction see its own writes.
            assert_eq!(tx.installed()?, Some(installed("2.0")));
            assert_eq!(tx.history(1)?, std::slice::from_ref(&e));
            Ok(e.id)
        })
        .unwrap();
    assert_eq!(store.installed().unwrap(), Some(installed("2.0")));
    assert_eq!(store.history(5).unwrap()[0].id, id);
    assert_eq!(store.last_check().unwrap(), Some(check("ok")));
    assert!(store.setting("postponed_until").unwrap().is_some());
}

#[test]
fn transaction_error_keeps_nothing() {
    let mut store = Store::open_in_memory().unwrap();
    store.set_state("pending", Some("1.0")).unwrap();
    let err = store
        .transaction(|tx| -> Result<(), StoreError> {
            tx.set_installed(&installed("2.0"))?;
            tx.append_history(&entry(1))?;
            tx.set_state("pending", None)?;
            tx.set_setting("auto_install", "true")?;
            tx.set_last_check(&check("ok"))?;
            Err(StoreError::Invalid {
                what: "test",
                value: "abort".to_owned(),
            })
        })
        .unwrap_err();
    assert!(matches!(err, StoreError::Invalid { what: "test", .. }));
    assert_eq!(store.installed().unwrap(), None);
    assert!(store.history(10).unwrap().is_empty());
    assert_eq!(store.state("pending").unwrap().as_deref(), Some("1.0"));
    assert_eq!(store.setting("auto_install").unwrap(), None);
    assert_eq!(store.last_check().unwrap(), None);
}

#[test]
fn transaction_panic_keeps_nothing_and_the_store_stays_usable() {
    let mut store = Store::open_in_memory().unwrap();
    let result = catch_unwind(AssertUnwindSafe(|| {
        store.transaction(|tx| -> Result<(), StoreError> {
            tx.append_history(&entry(1))?;
            panic!("engine bug");
        })
    }));
    assert!(result.is_err());
    assert!(store.history(10).unwrap().is_empty());
    store.append_history(&entry(2)).unwrap();
    assert_eq!(store.history(10).unwrap().len(), 1);
}

#[test]
fn invalid_stored_values_are_errors_not_panics() {
    type Read = fn(&Store) -> Result<(), StoreError>;
    let cases: &[(&str, Read)] = &[
        (
            "UPDATE installed SET security_patch_level = '2024-13-01'",
            |s| s.installed().map(drop),
        ),
        (
            "UPDATE installed SET security_patch_level = '2024-05-05T00:00:00'",
            |s| s.installed().map(drop),
        ),
        ("UPDATE installed SET applied_at = 'yesterday'", |s| {
            s.installed().map(drop)
        }),
        ("UPDATE installed SET version = x'ff00'", |s| {
            s.installed().map(drop)
        }),
        ("UPDATE history SET at = 42", |s| s.history(10).map(drop)),
        ("UPDATE history SET cves = 'not json'", |s| {
            s.history(10).map(drop)
        }),
        ("UPDATE history SET cves = '[1, 2]'", |s| {
            s.history(10).map(drop)
        }),
        (
            "UPDATE history SET security_patch_level = '2024-02-30'",
            |s| s.history(10).map(drop),
        ),
        ("UPDATE history SET detail = CAST(x'c328' AS TEXT)", |s| {
            s.history(10).map(drop)
        }),
        ("UPDATE last_check SET verified = 7", |s| {
            s.last_check().map(drop)
        }),
        ("UPDATE last_check SET verified = 'yes'", |s| {
            s.last_check().map(drop)
        }),
        ("UPDATE last_check SET at = ''", |s| {
            s.last_check().map(drop)
        }),
        ("UPDATE settings SET value = x'00'", |s| {
            s.setting("auto_install").map(drop)
        }),
        ("UPDATE state SET value = x'0102'", |s| {
            s.state("pending").map(drop)
        }),
    ];
    for (damage, read) in cases {
        let store = Store::open_in_memory().unwrap();
        store.set_installed(&installed("1.0")).unwrap();
        store.append_history(&entry(1)).unwrap();
        store.set_last_check(&check("ok")).unwrap();
        store.set_setting("auto_install", "true").unwrap();
        store.set_state("pending", Some("1.1")).unwrap();
        read(&store).unwrap();
        // Stands in for a file edited or damaged outside the agent; the schema's CHECK
        // constraints would refuse some of these.
        store
            .conn
            .execute_batch(&format!("PRAGMA ignore_check_constraints = ON; {damage}"))
            .unwrap_or_else(|e| panic!("{damage}: {e}"));
        match read(&store) {
            Err(StoreError::Invalid { .. }) => {}
            other => panic!("{damage}: expected Invalid, got {other:?}"),
        }
    }
}

#[test]
fn dates_outside_four_digit_years_are_refused_on_write() {
    let store = Store::open_in_memory().unwrap();
    let odd = Installed {
        security_patch_level: Date::MIN,
        ..installed("1.0")
    };
    assert!(matches!(
        store.set_installed(&odd),
        Err(StoreError::Invalid { .. })
    ));
    assert_eq!(store.installed().unwrap(), None);
}

#[test]
fn a_new_file_gets_wal_full_sync_foreign_keys_and_the_schema() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(FILE_NAME);
    let store = Store::open(&path).unwrap();
    assert_eq!(store.path(), Some(path.as_path()));
    let mode: String = store.conn.pragma_query_one(None, "journal_mode").unwrap();
    assert_eq!(mode, "wal");
    assert_eq!(pragma_i64(&store, "synchronous"), 2, "FULL");
    assert_eq!(pragma_i64(&store, "foreign_keys"), 1);
    assert_eq!(schema(&store).version, LATEST);
    assert!(
        !names(dir.path()).iter().any(|n| n.contains(".new")),
        "{:?}",
        names(dir.path())
    );
    assert_eq!(Store::open_in_memory().unwrap().path(), None);
}

#[test]
fn an_empty_file_counts_as_new() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(FILE_NAME);
    fs::write(&path, b"").unwrap();
    // A WAL next to an empty database cannot belong to it; it must not be replayed.
    fs::write(dir.path().join("agent.db-wal"), [0x37u8; 4096]).unwrap();
    let store = Store::open(&path).unwrap();
    assert_eq!(schema(&store).version, LATEST);
    store.append_history(&entry(1)).unwrap();
    drop(store);
    assert_eq!(Store::open(&path).unwrap().history(5).unwrap().len(), 1);
}

#[test]
fn a_leftover_from_an_interrupted_creation_is_replaced() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("agent.db.new"), b"half-written junk").unwrap();
    fs::write(dir.path().join("agent.db.new-journal"), b"junk").unwrap();
    let path = dir.path().join(FILE_NAME);
    Store::open(&path)
        .unwrap()
        .set_state("k", Some("v"))
        .unwrap();
    assert_eq!(names(dir.path()), [FILE_NAME]);
    assert_eq!(
        Store::open(&path).unwrap().state("k").unwrap().as_deref(),
        Some("v")
    );
}

#[test]
fn an_empty_sqlite_database_is_adopted() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(FILE_NAME);
    let conn = Connection::open(&path).unwrap();
    conn.execute_batch("CREATE TABLE t (x); DROP TABLE t;")
        .unwrap();
    drop(conn);
    assert!(fs::metadata(&path).unwrap().len() > 0);
    let store = Store::open(&path).unwrap();
    assert_eq!(schema(&store).version, LATEST);
}

#[test]
fn reopening_keeps_every_record() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(FILE_NAME);
    let store = Store::open(&path).unwrap();
    store.set_installed(&installed("1.0")).unwrap();
    let e = store.append_history(&entry(1)).unwrap();
    store.set_last_check(&check("ok")).unwrap();
    store.set_setting("auto_install", "true").unwrap();
    store.set_state("floor", Some("42")).unwrap();
    drop(store);

    let store = Store::open(&path).unwrap();
    assert_eq!(store.installed().unwrap(), Some(installed("1.0")));
    assert_eq!(store.history(10).unwrap(), std::slice::from_ref(&e));
    assert_eq!(store.last_check().unwrap(), Some(check("ok")));
    assert_eq!(
        store.setting("auto_install").unwrap().as_deref(),
        Some("true")
    );
    assert_eq!(store.state("floor").unwrap().as_deref(), Some("42"));
    // Ids continue after a reopen; they are never reused.
    assert!(store.append_history(&entry(2)).unwrap().id > e.id);
}

#[test]
fn two_handles_on_one_file_see_each_other() {
    // e.g. `ssuctl` linking the store while the daemon runs.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(FILE_NAME);
    let a = Store::open(&path).unwrap();
    a.set_state("k", Some("a")).unwrap();
    // The WAL now has content, so this open takes the normal read-only path for its probe.
    let b = Store::open(&path).unwrap();
    assert_eq!(b.state("k").unwrap().as_deref(), Some("a"));
    b.set_state("k", Some("b")).unwrap();
    assert_eq!(a.state("k").unwrap().as_deref(), Some("b"));
}

#[test]
fn a_missing_directory_is_an_error_naming_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("no-such-dir").join(FILE_NAME);
    let err = Store::open(&path).unwrap_err();
    assert!(matches!(err, StoreError::Open { .. }), "{err:?}");
    assert!(
        err.to_string().contains(&path.display().to_string()),
        "{err}"
    );
}

#[test]
fn only_lock_contention_is_retryable() {
    let busy = StoreError::Sql {
        context: "test",
        source: rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_BUSY),
            None,
        ),
    };
    assert!(busy.is_retryable());
    let full = StoreError::Sql {
        context: "test",
        source: rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_FULL),
            None,
        ),
    };
    assert!(!full.is_retryable());
}

#[test]
fn a_store_can_move_to_another_thread() {
    // The engine owns the store inside its task (or hands it to a blocking thread).
    fn assert_send<T: Send>() {}
    assert_send::<Store>();
}
