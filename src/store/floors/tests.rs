use super::*;
use crate::store::Store;

fn installed(version: &str, level: &str) -> Installed {
    Installed {
        version: version.to_owned(),
        feature_release: "1.0".to_owned(),
        security_patch_level: level.parse().unwrap(),
        applied_at: None,
    }
}

fn versions(root: u64, timestamp: u64, snapshot: u64, targets: u64) -> Value {
    serde_json::json!({"root": root, "timestamp": timestamp, "snapshot": snapshot, "targets": targets})
}

#[test]
fn merge_takes_the_highest_of_every_floor() {
    let mut a = Floors {
        metadata: [(METADATA_FLOOR_KEY.to_owned(), versions(1, 9, 9, 2))].into(),
        latest_known_time: Some("2027-01-01T00:00:00Z".parse().unwrap()),
        rolled_back_targets: ["aa".to_owned()].into(),
        installed: Some(installed("1.0.2", "2026-10-01")),
    };
    let b = Floors {
        metadata: [
            (METADATA_FLOOR_KEY.to_owned(), versions(2, 3, 3, 8)),
            (operator_floor_key("x"), versions(1, 1, 1, 1)),
        ]
        .into(),
        latest_known_time: Some("2026-01-01T00:00:00Z".parse().unwrap()),
        rolled_back_targets: ["bb".to_owned()].into(),
        installed: Some(installed("1.0.9", "2026-11-01")),
    };
    a.merge(&b);
    assert_eq!(a.metadata[METADATA_FLOOR_KEY], versions(2, 9, 9, 8));
    assert_eq!(a.metadata[&operator_floor_key("x")], versions(1, 1, 1, 1));
    assert_eq!(
        a.latest_known_time,
        Some("2027-01-01T00:00:00Z".parse().unwrap())
    );
    assert_eq!(a.rolled_back_targets.len(), 2);
    assert_eq!(a.installed.as_ref().unwrap().version, "1.0.9");
    // A lower patch level never replaces a higher one; an equal one keeps ours.
    a.merge(&Floors {
        installed: Some(installed("0.1", "2026-11-01")),
        ..Floors::default()
    });
    assert_eq!(a.installed.as_ref().unwrap().version, "1.0.9");
}

#[test]
fn fields_a_later_agent_adds_to_a_metadata_floor_are_kept() {
    let ours =
        serde_json::json!({"root": 2, "timestamp": 5, "snapshot": 5, "targets": 5, "keys": "new"});
    let theirs =
        serde_json::json!({"root": 3, "timestamp": 4, "snapshot": 4, "targets": 4, "keys": "old"});
    assert_eq!(
        merge_versions(&ours, &theirs),
        serde_json::json!({"root": 3, "timestamp": 5, "snapshot": 5, "targets": 5, "keys": "new"})
    );
}

#[test]
fn raise_never_lowers_the_copy_and_leaves_no_temporary_file() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(FILE_NAME);
    let high = Floors {
        metadata: [(METADATA_FLOOR_KEY.to_owned(), versions(3, 30, 30, 30))].into(),
        ..Floors::default()
    };
    raise(&path, &high).unwrap();
    let low = Floors {
        metadata: [(METADATA_FLOOR_KEY.to_owned(), versions(1, 1, 1, 1))].into(),
        ..Floors::default()
    };
    assert_eq!(raise(&path, &low).unwrap(), high);
    assert_eq!(load(&path).unwrap(), Some(high));
    let names: Vec<_> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names, [FILE_NAME]);
    let mode = fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
}

#[test]
fn an_unreadable_copy_is_rewritten_from_what_the_database_holds() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(FILE_NAME);
    fs::write(&path, b"\0\0 half a write").unwrap();
    assert!(load(&path).is_err());
    let f = Floors {
        rolled_back_targets: ["aa".to_owned()].into(),
        ..Floors::default()
    };
    assert_eq!(raise(&path, &f).unwrap(), f);
    assert_eq!(load(&path).unwrap(), Some(f));
}

#[test]
fn the_store_copies_a_floor_when_it_moves_and_only_then() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join(crate::store::FILE_NAME);
    let copy = copy_path(&db);
    let mut store = Store::open(&db).unwrap();
    store.set_state("pending", Some("x")).unwrap();
    store.set_setting("auto_install", "false").unwrap();
    assert!(!copy.exists(), "no floor set yet");

    store
        .set_state(LATEST_KNOWN_TIME_KEY, Some("2027-01-01T00:00:00Z"))
        .unwrap();
    assert_eq!(
        load(&copy).unwrap().unwrap().latest_known_time,
        Some("2027-01-01T00:00:00Z".parse().unwrap())
    );
    store
        .set_installed(&installed("1.0.1", "2026-11-01"))
        .unwrap();
    assert_eq!(
        load(&copy).unwrap().unwrap().installed,
        Some(installed("1.0.1", "2026-11-01"))
    );
    // Inside a transaction, the copy is written before the commit: even a transaction that
    // then fails leaves the copy at least where the database is.
    let _ = store.transaction(|tx| {
        tx.set_state(ROLLED_BACK_KEY, Some(r#"["cc"]"#))?;
        assert!(
            load(&copy)
                .unwrap()
                .unwrap()
                .rolled_back_targets
                .contains("cc")
        );
        Err::<(), _>(StoreError::Invalid {
            what: "test",
            value: "abort".to_owned(),
        })
    });
    assert_eq!(store.state(ROLLED_BACK_KEY).unwrap(), None);
}

#[test]
fn a_floor_write_that_cannot_reach_the_copy_fails_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join(crate::store::FILE_NAME);
    let store = Store::open(&db).unwrap();
    // A directory where the copy's temporary file must go: the write cannot happen.
    fs::create_dir(dir.path().join(format!("{FILE_NAME}.new"))).unwrap();
    let err = store
        .set_state(LATEST_KNOWN_TIME_KEY, Some("2027-01-01T00:00:00Z"))
        .unwrap_err();
    assert!(matches!(err, StoreError::Io { .. }), "{err:?}");
    assert_eq!(store.state(LATEST_KNOWN_TIME_KEY).unwrap(), None);
}

#[test]
fn toughs_datastore_gives_each_role_it_holds() {
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(from_tuf_datastore(dir.path()), None);
    fs::write(
        dir.path().join("root.json"),
        r#"{"signed":{"version":4},"signatures":[]}"#,
    )
    .unwrap();
    fs::write(dir.path().join("timestamp.json"), "not json").unwrap();
    fs::write(
        dir.path().join("snapshot.json"),
        r#"{"signed":{"version":"7"}}"#,
    )
    .unwrap();
    assert_eq!(
        from_tuf_datastore(dir.path()),
        Some(serde_json::json!({"root": 4}))
    );
}

#[test]
fn restore_writes_floors_the_engine_can_read() {
    let store = Store::open_in_memory().unwrap();
    let partial = Floors {
        metadata: [(
            METADATA_FLOOR_KEY.to_owned(),
            serde_json::json!({"timestamp": 5}),
        )]
        .into(),
        rolled_back_targets: ["bb".to_owned(), "aa".to_owned()].into(),
        ..Floors::default()
    };
    partial.restore(&store.conn).unwrap();
    // The engine's own type, which needs every role.
    let v: crate::metadata::client::RoleVersions =
        serde_json::from_str(&store.state(METADATA_FLOOR_KEY).unwrap().unwrap()).unwrap();
    assert_eq!((v.root, v.timestamp), (0, 5));
    let list: Vec<String> =
        serde_json::from_str(&store.state(ROLLED_BACK_KEY).unwrap().unwrap()).unwrap();
    assert_eq!(list, ["aa", "bb"]);
    assert_eq!(
        Floors::from_db(&store.conn)
            .unwrap()
            .rolled_back_targets
            .len(),
        2
    );
}

fn keyed(
    root: u64,
    timestamp: u64,
    snapshot: u64,
    targets: u64,
    ts_key: &str,
    snap_key: &str,
) -> Value {
    serde_json::json!({"root": root, "timestamp": timestamp, "snapshot": snapshot,
        "targets": targets, "keys": {"timestamp": ts_key, "snapshot": snap_key}})
}

/// TUF's fast-forward recovery (spec 5.3.11) gives a timestamp floor up when root rotates
/// the timestamp keys: the copy must follow, or a restart would bring back 2^64−1 and lock
/// the device out after the repository recovered.
#[test]
fn a_key_rotation_under_a_newer_root_releases_the_rotated_roles_floor() {
    let max = u64::MAX;
    // Fast-forwarded timestamp under root 2's keys (the copy) …
    let copy = keyed(2, max, 7, 7, "t1", "s1");
    // … and what verified after root 3 rotated the timestamp key (the database).
    let rotated = keyed(3, 4, 8, 8, "t2", "s1");
    assert_eq!(
        merge_versions(&rotated, &copy),
        keyed(3, 4, 8, 8, "t2", "s1")
    );
    assert_eq!(
        merge_versions(&copy, &rotated),
        keyed(3, 4, 8, 8, "t2", "s1")
    );
    // A snapshot rotation releases the snapshot and targets versions.
    let copy = keyed(3, 4, 1000, 1000, "t2", "s1");
    let rotated = keyed(4, 5, 9, 9, "t2", "s2");
    assert_eq!(
        merge_versions(&copy, &rotated),
        keyed(4, 5, 9, 9, "t2", "s2")
    );
    // Same keys: the maximum, whichever root is newer.
    assert_eq!(
        merge_versions(
            &keyed(4, 5, 9, 9, "t2", "s2"),
            &keyed(3, 6, 1, 1, "t2", "s2")
        ),
        keyed(4, 6, 9, 9, "t2", "s2")
    );
    // Other keys under the same root version decide nothing: the maximum stays.
    assert_eq!(
        merge_versions(
            &keyed(4, 5, 9, 9, "tX", "s2"),
            &keyed(4, max, 9, 9, "t2", "s2")
        ),
        keyed(4, max, 9, 9, "tX", "s2")
    );
}

/// Only the agent's own write lowers a floor (a corrected clock ratchet, TUF's fast-forward
/// recovery), and the copy follows it across a restart; a lower value edited into the
/// database behind the agent's back is raised again at the next open.
#[test]
fn the_agents_own_lowering_survives_a_restart_an_edit_does_not() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join(crate::store::FILE_NAME);
    let ahead = "2026-12-03T00:00:00Z";
    let corrected = "2026-11-30T00:00:00Z";
    {
        let store = Store::open(&db).unwrap();
        store.set_state(LATEST_KNOWN_TIME_KEY, Some(ahead)).unwrap();
        store
            .set_state(
                METADATA_FLOOR_KEY,
                Some(&keyed(2, u64::MAX, 7, 7, "t1", "s1").to_string()),
            )
            .unwrap();
        // Trusted time corrected the ratchet; a key rotation released the timestamp.
        store
            .set_state(LATEST_KNOWN_TIME_KEY, Some(corrected))
            .unwrap();
        store
            .set_state(
                METADATA_FLOOR_KEY,
                Some(&keyed(3, 4, 8, 8, "t2", "s1").to_string()),
            )
            .unwrap();
    }
    let store = Store::open(&db).unwrap();
    assert_eq!(
        store.state(LATEST_KNOWN_TIME_KEY).unwrap().as_deref(),
        Some(corrected)
    );
    let floor: Value =
        serde_json::from_str(&store.state(METADATA_FLOOR_KEY).unwrap().unwrap()).unwrap();
    assert_eq!(floor["timestamp"], 4);
    drop(store);

    // An edit of the database alone, not through the agent.
    let conn = rusqlite::Connection::open(&db).unwrap();
    conn.execute(
        "UPDATE state SET value = '2026-01-01T00:00:00Z' WHERE key = ?1",
        [LATEST_KNOWN_TIME_KEY],
    )
    .unwrap();
    drop(conn);
    let store = Store::open(&db).unwrap();
    assert_eq!(
        store.state(LATEST_KNOWN_TIME_KEY).unwrap().as_deref(),
        Some(corrected)
    );
}
