//! A store the agent cannot use is moved aside, replaced, and every floor survives.

use super::*;
use crate::store::floors::{
    LATEST_KNOWN_TIME_KEY, METADATA_FLOOR_KEY, ROLLED_BACK_KEY, operator_floor_key,
};

const NOW: &str = "2026-11-30T12:00:00Z";
const METADATA: &str = r#"{"root":2,"timestamp":41,"snapshot":40,"targets":39}"#;
const OPERATOR: &str = r#"{"root":1,"timestamp":7,"snapshot":6,"targets":5}"#;
const LATEST_TIME: &str = "2027-01-02T03:04:05Z";
const ROLLED_BACK: &str = r#"["aa11","bb22"]"#;

fn recover(path: &Path) -> Store {
    recover_with(path, &FloorSources::default())
}

fn recover_with(path: &Path, sources: &FloorSources) -> Store {
    Store::open_or_recover(path, sources, ts(NOW)).unwrap()
}

fn patched() -> Installed {
    Installed {
        security_patch_level: date("2026-11-01"),
        ..installed("1.0.1")
    }
}

/// A store with every floor set (and some history), closed.
fn floored_db(dir: &Path) -> PathBuf {
    let path = dir.join(FILE_NAME);
    let store = Store::open(&path).unwrap();
    store.set_state(METADATA_FLOOR_KEY, Some(METADATA)).unwrap();
    store
        .set_state(&operator_floor_key("op1"), Some(OPERATOR))
        .unwrap();
    store
        .set_state(LATEST_KNOWN_TIME_KEY, Some(LATEST_TIME))
        .unwrap();
    store.set_state(ROLLED_BACK_KEY, Some(ROLLED_BACK)).unwrap();
    store.set_installed(&patched()).unwrap();
    for n in 0..50 {
        store.append_history(&entry(n)).unwrap();
    }
    drop(store);
    path
}

fn json(s: &str) -> serde_json::Value {
    serde_json::from_str(s).unwrap()
}

fn state_json(store: &Store, key: &str) -> serde_json::Value {
    json(
        &store
            .state(key)
            .unwrap()
            .unwrap_or_else(|| panic!("{key} lost")),
    )
}

/// Each floor, as the engine reads it, is at least what [`floored_db`] set.
fn assert_every_floor(store: &Store) {
    assert_eq!(state_json(store, METADATA_FLOOR_KEY), json(METADATA));
    assert_eq!(
        state_json(store, &operator_floor_key("op1")),
        json(OPERATOR)
    );
    assert_eq!(
        store.state(LATEST_KNOWN_TIME_KEY).unwrap().as_deref(),
        Some(LATEST_TIME)
    );
    assert_eq!(state_json(store, ROLLED_BACK_KEY), json(ROLLED_BACK));
    assert_eq!(store.installed().unwrap(), Some(patched()));
}

/// Damages the database at `path`; returns the bytes the moved-aside file must keep.
type Damage = fn(&Path);

fn random_bytes(path: &Path) {
    let mut x: u64 = 0x1234_5678_9ABC_DEF1;
    let bytes: Vec<u8> = (0..32768)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    fs::write(path, bytes).unwrap();
}

fn truncated(path: &Path) {
    let len = fs::metadata(path).unwrap().len();
    fs::OpenOptions::new()
        .write(true)
        .open(path)
        .unwrap()
        .set_len(len / 3)
        .unwrap();
}

fn wrong_page_size(path: &Path) {
    let mut bytes = fs::read(path).unwrap();
    // The header's page size (big-endian at offset 16): 4096 becomes 1024.
    bytes[16..18].copy_from_slice(&1024u16.to_be_bytes());
    fs::write(path, bytes).unwrap();
}

/// A WAL with committed frames of another SQLite database, next to ours.
fn foreign_wal(path: &Path) {
    let other = tempfile::tempdir().unwrap();
    let other_db = other.path().join("other.db");
    let conn = Connection::open(&other_db).unwrap();
    conn.execute_batch(
        "PRAGMA journal_mode = WAL; PRAGMA wal_autocheckpoint = 0;
         CREATE TABLE contacts (name TEXT, note TEXT);",
    )
    .unwrap();
    for i in 0..200 {
        conn.execute(
            "INSERT INTO contacts VALUES (?1, hex(randomblob(200)))",
            [i.to_string()],
        )
        .unwrap();
    }
    fs::copy(other.path().join("other.db-wal"), with_suffix(path, "-wal")).unwrap();
    drop(conn);
}

/// The WAL of another device's ssu-agent database: same schema, same page size.
fn wal_of_another_agent(path: &Path) {
    let other = tempfile::tempdir().unwrap();
    let other_db = other.path().join(FILE_NAME);
    let store = Store::open(&other_db).unwrap();
    store
        .conn
        .execute_batch("PRAGMA wal_autocheckpoint = 0;")
        .unwrap();
    store
        .set_state(
            METADATA_FLOOR_KEY,
            Some(r#"{"root":1,"timestamp":1,"snapshot":1,"targets":1}"#),
        )
        .unwrap();
    store.set_state(ROLLED_BACK_KEY, Some("[]")).unwrap();
    store
        .set_state(LATEST_KNOWN_TIME_KEY, Some("2020-01-01T00:00:00Z"))
        .unwrap();
    store.set_installed(&installed("0.1")).unwrap();
    fs::copy(other.path().join("agent.db-wal"), with_suffix(path, "-wal")).unwrap();
    drop(store);
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_os_string();
    s.push(suffix);
    PathBuf::from(s)
}

fn recovers_from(damage: Damage, what: &str) {
    let dir = tempfile::tempdir().unwrap();
    let path = floored_db(dir.path());
    damage(&path);
    let damaged = fs::read(&path).unwrap();
    let wal = fs::read(with_suffix(&path, "-wal")).ok();

    let mut store = recover(&path);
    let r = store
        .take_recovery()
        .unwrap_or_else(|| panic!("{what}: not recovered"));
    assert!(store.take_recovery().is_none(), "told once");
    assert_eq!(r.at, ts(NOW));
    // Kept, byte for byte, with its WAL beside it under the matching name.
    assert_eq!(fs::read(&r.moved_to).unwrap(), damaged, "{what}");
    assert_eq!(
        fs::read(with_suffix(&r.moved_to, "-wal")).ok(),
        wal,
        "{what}"
    );
    assert!(
        r.moved_to
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("agent.db.unusable-20261130T120000Z"),
        "{}",
        r.moved_to.display()
    );
    assert_eq!(r.sources, ["floors copy"], "{what}");
    assert_every_floor(&store);
    let history = store.history(10).unwrap();
    assert_eq!(history.len(), 1, "{what}: {history:?}");
    assert_eq!(history[0].action, "store-recovered");
    assert!(
        history[0].detail.contains(&r.reason),
        "{}",
        history[0].detail
    );
    assert!(
        history[0]
            .detail
            .contains(&r.moved_to.display().to_string()),
        "{}",
        history[0].detail
    );
    // The new store is an ordinary one from now on.
    drop(store);
    let mut again = recover(&path);
    assert!(again.take_recovery().is_none(), "{what}: recovered twice");
    assert_every_floor(&again);
}

#[test]
fn random_bytes_are_moved_aside_and_every_floor_survives() {
    recovers_from(random_bytes, "random bytes");
}

#[test]
fn a_truncated_database_is_moved_aside_and_every_floor_survives() {
    recovers_from(truncated, "truncated");
}

#[test]
fn a_wrong_page_size_is_moved_aside_and_every_floor_survives() {
    recovers_from(wrong_page_size, "wrong page size");
}

#[test]
fn a_wal_of_another_database_is_moved_aside_and_every_floor_survives() {
    recovers_from(foreign_wal, "foreign WAL");
}

#[test]
fn the_wal_of_another_agents_database_cannot_lower_a_floor() {
    // Same schema and page size: whether SQLite's replay yields a readable database or not,
    // no floor may end up below this device's.
    let dir = tempfile::tempdir().unwrap();
    let path = floored_db(dir.path());
    wal_of_another_agent(&path);
    let store = recover(&path);
    assert_every_floor(&store);
}

/// One floor at a time: set it alone, destroy the database, recover.
fn floor_survives(set: impl Fn(&Store), check: impl Fn(&Store)) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(FILE_NAME);
    let store = Store::open(&path).unwrap();
    set(&store);
    drop(store);
    random_bytes(&path);
    let mut store = recover(&path);
    assert!(store.take_recovery().is_some());
    check(&store);
}

#[test]
fn the_metadata_floor_survives_a_recovery() {
    floor_survives(
        |s| s.set_state(METADATA_FLOOR_KEY, Some(METADATA)).unwrap(),
        |s| assert_eq!(state_json(s, METADATA_FLOOR_KEY), json(METADATA)),
    );
}

#[test]
fn an_operator_metadata_floor_survives_a_recovery() {
    let key = operator_floor_key("op1");
    floor_survives(
        |s| s.set_state(&key, Some(OPERATOR)).unwrap(),
        |s| assert_eq!(state_json(s, &key), json(OPERATOR)),
    );
}

#[test]
fn the_installed_patch_level_survives_a_recovery() {
    floor_survives(
        |s| s.set_installed(&patched()).unwrap(),
        |s| assert_eq!(s.installed().unwrap(), Some(patched())),
    );
}

#[test]
fn the_rolled_back_targets_survive_a_recovery() {
    floor_survives(
        |s| {
            // Written inside a transaction, as the engine does when an attempt ends.
            let mut s2 = Store::open(s.path().unwrap()).unwrap();
            s2.transaction(|tx| tx.set_state(ROLLED_BACK_KEY, Some(ROLLED_BACK)))
                .unwrap();
        },
        |s| assert_eq!(state_json(s, ROLLED_BACK_KEY), json(ROLLED_BACK)),
    );
}

#[test]
fn the_clock_ratchet_survives_a_recovery() {
    floor_survives(
        |s| {
            s.set_state(LATEST_KNOWN_TIME_KEY, Some(LATEST_TIME))
                .unwrap()
        },
        |s| {
            assert_eq!(
                s.state(LATEST_KNOWN_TIME_KEY).unwrap().as_deref(),
                Some(LATEST_TIME)
            )
        },
    );
}

#[test]
fn lowering_a_floor_in_the_database_alone_is_undone_at_the_next_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = floored_db(dir.path());
    // What an attacker with the file (and sqlite3) but not the copy would do.
    let conn = Connection::open(&path).unwrap();
    conn.execute_batch(
        r#"UPDATE state SET value = '{"root":1,"timestamp":1,"snapshot":1,"targets":1}'
               WHERE key = 'metadata_floor';
           UPDATE state SET value = '2020-01-01T00:00:00Z' WHERE key = 'latest_known_time';
           UPDATE state SET value = '[]' WHERE key = 'rolled_back_targets';
           DELETE FROM state WHERE key LIKE 'metadata_floor.operator.%';
           UPDATE installed SET security_patch_level = '2020-01-01';"#,
    )
    .unwrap();
    drop(conn);
    let store = Store::open(&path).unwrap();
    assert_every_floor(&store);
}

#[test]
fn lowering_the_copy_alone_is_undone_at_the_next_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = floored_db(dir.path());
    let copy = floors::copy_path(&path);
    fs::write(&copy, "{}").unwrap();
    drop(Store::open(&path).unwrap());
    random_bytes(&path);
    let store = recover(&path);
    assert_every_floor(&store);
}

#[test]
fn without_a_copy_the_metadata_floors_come_from_toughs_cache() {
    let dir = tempfile::tempdir().unwrap();
    let path = floored_db(dir.path());
    fs::remove_file(floors::copy_path(&path)).unwrap();
    random_bytes(&path);
    let tuf = dir.path().join("tuf/manufacturer");
    fs::create_dir_all(&tuf).unwrap();
    for (role, version) in [
        ("root", 3),
        ("timestamp", 50),
        ("snapshot", 49),
        ("targets", 12),
    ] {
        fs::write(
            tuf.join(format!("{role}.json")),
            format!(r#"{{"signed":{{"_type":"{role}","version":{version}}},"signatures":[]}}"#),
        )
        .unwrap();
    }
    let op = dir.path().join("tuf/operator/op1");
    fs::create_dir_all(&op).unwrap();
    fs::write(op.join("timestamp.json"), "{ truncated by a power cut").unwrap();
    let sources = FloorSources {
        tuf: vec![
            (METADATA_FLOOR_KEY.to_owned(), tuf.clone()),
            (operator_floor_key("op1"), op),
        ],
    };
    let mut store = recover_with(&path, &sources);
    let r = store.take_recovery().unwrap();
    assert_eq!(r.sources, [format!("tough cache {}", tuf.display())]);
    assert_eq!(
        state_json(&store, METADATA_FLOOR_KEY),
        json(r#"{"root":3,"timestamp":50,"snapshot":49,"targets":12}"#)
    );
    // Nothing vouches for the operator's versions: no floor rather than an invented one.
    assert_eq!(store.state(&operator_floor_key("op1")).unwrap(), None);
    assert!(
        r.floors.contains("manufacturer metadata root 3"),
        "{}",
        r.floors
    );
}

#[test]
fn every_source_counts_and_the_highest_wins() {
    let dir = tempfile::tempdir().unwrap();
    let path = floored_db(dir.path());
    random_bytes(&path);
    let tuf = dir.path().join("tuf/manufacturer");
    fs::create_dir_all(&tuf).unwrap();
    // Ahead of the copy for timestamp, behind for the rest.
    fs::write(
        tuf.join("timestamp.json"),
        r#"{"signed":{"version":99},"signatures":[]}"#,
    )
    .unwrap();
    fs::write(
        tuf.join("targets.json"),
        r#"{"signed":{"version":1},"signatures":[]}"#,
    )
    .unwrap();
    let sources = FloorSources {
        tuf: vec![(METADATA_FLOOR_KEY.to_owned(), tuf)],
    };
    let store = recover_with(&path, &sources);
    assert_eq!(
        state_json(&store, METADATA_FLOOR_KEY),
        json(r#"{"root":2,"timestamp":99,"snapshot":40,"targets":39}"#)
    );
}

#[test]
fn an_incompatible_newer_database_is_moved_aside_and_its_floors_kept() {
    let dir = tempfile::tempdir().unwrap();
    let path = floored_db(dir.path());
    // Nothing but the old database knows these floors.
    fs::remove_file(floors::copy_path(&path)).unwrap();
    let conn = Connection::open(&path).unwrap();
    // A future agent's breaking step: version 99, readable only by agents of 99.
    conn.execute_batch("CREATE TABLE future (x); PRAGMA user_version = 99;")
        .unwrap();
    drop(conn);
    let before = fs::read(&path).unwrap();
    let mut store = recover(&path);
    let r = store.take_recovery().unwrap();
    assert!(r.reason.contains("schema version 99"), "{}", r.reason);
    assert_eq!(r.sources, ["the old database"]);
    assert_eq!(fs::read(&r.moved_to).unwrap(), before);
    assert_every_floor(&store);
}

#[test]
fn a_compatible_newer_database_is_used_as_it_is() {
    let dir = tempfile::tempdir().unwrap();
    let path = floored_db(dir.path());
    let conn = Connection::open(&path).unwrap();
    let raw = SchemaVersion {
        version: LATEST + 1,
        readable_from: 1,
    }
    .encode();
    conn.execute_batch(&format!(
        "CREATE TABLE later (x); ALTER TABLE history ADD COLUMN later_note TEXT;
         PRAGMA user_version = {raw};"
    ))
    .unwrap();
    drop(conn);
    let mut store = recover(&path);
    assert!(store.take_recovery().is_none());
    assert_every_floor(&store);
    assert_eq!(store.history(100).unwrap().len(), 50);
    store.append_history(&entry(99)).unwrap();
    assert_eq!(pragma_i64(&store, "user_version"), raw, "never marked down");
}

#[test]
fn other_errors_are_not_a_reason_to_start_afresh() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("missing-dir").join(FILE_NAME);
    let err = Store::open_or_recover(&path, &FloorSources::default(), ts(NOW)).unwrap_err();
    assert!(matches!(err, StoreError::Open { .. }), "{err:?}");
    assert!(!err.is_unusable_database());
}

#[test]
fn a_second_recovery_in_the_same_second_keeps_both_files() {
    let dir = tempfile::tempdir().unwrap();
    let path = floored_db(dir.path());
    random_bytes(&path);
    let first = recover(&path).take_recovery().unwrap().moved_to;
    fs::write(&path, b"garbage again").unwrap();
    let second = recover(&path).take_recovery().unwrap().moved_to;
    assert_ne!(first, second);
    assert!(first.exists() && second.exists());
    assert_eq!(fs::read(&second).unwrap(), b"garbage again");
}
