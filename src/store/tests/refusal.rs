//! A file that is not this agent's database, or is damaged, or has a newer schema, is refused
//! with a clear error and left byte-for-byte alone.

use super::*;

/// Opens `path`, expects `Corrupt`, and checks the directory is byte-for-byte as before:
/// the file is not modified and no -wal/-shm/-journal is left behind.
fn assert_refused_as_corrupt(dir: &Path, path: &Path) -> String {
    let before = snapshot(dir);
    let err = Store::open(path).unwrap_err();
    let StoreError::Corrupt { path: p, reason } = &err else {
        panic!("expected Corrupt, got {err:?}");
    };
    assert_eq!(p, path);
    assert!(
        err.to_string().contains(&path.display().to_string()),
        "{err}"
    );
    assert!(!err.is_retryable());
    assert_same_files(&snapshot(dir), &before);
    reason.clone()
}

#[test]
fn random_bytes_are_refused_and_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(FILE_NAME);
    // A fixed xorshift sequence: deterministic "random" bytes without a rand dependency.
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let bytes: Vec<u8> = (0..16384)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    fs::write(&path, &bytes).unwrap();
    let reason = assert_refused_as_corrupt(dir.path(), &path);
    assert!(reason.contains("not an SQLite database"), "{reason}");
}

#[test]
fn a_text_file_is_refused_and_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(FILE_NAME);
    fs::write(&path, "auto_install = true\n").unwrap();
    assert_refused_as_corrupt(dir.path(), &path);
}

#[test]
fn a_database_truncated_to_half_is_refused_and_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let path = populated_db(dir.path());
    let len = fs::metadata(&path).unwrap().len();
    assert!(
        len >= 4 * 4096,
        "big enough for halving to cut pages: {len}"
    );
    fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    assert_refused_as_corrupt(dir.path(), &path);
}

#[test]
fn a_truncated_header_is_refused_and_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let path = populated_db(dir.path());
    let bytes = fs::read(&path).unwrap();
    fs::write(&path, &bytes[..60]).unwrap();
    let reason = assert_refused_as_corrupt(dir.path(), &path);
    assert!(reason.contains("truncated"), "{reason}");
}

#[test]
fn a_garbage_page_is_refused_and_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let path = populated_db(dir.path());
    let mut bytes = fs::read(&path).unwrap();
    let page_size = usize::from(u16::from_be_bytes([bytes[16], bytes[17]]));
    let last = bytes.len() - page_size;
    bytes[last..].fill(0xA5);
    fs::write(&path, &bytes).unwrap();
    let reason = assert_refused_as_corrupt(dir.path(), &path);
    assert!(reason.contains("SQLite"), "{reason}");
}

#[test]
fn a_foreign_sqlite_database_is_refused_and_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(FILE_NAME);
    let conn = Connection::open(&path).unwrap();
    conn.execute_batch("CREATE TABLE contacts (name TEXT); INSERT INTO contacts VALUES ('x');")
        .unwrap();
    drop(conn);
    let reason = assert_refused_as_corrupt(dir.path(), &path);
    assert!(reason.contains("not an ssu-agent database"), "{reason}");

    let conn = Connection::open(&path).unwrap();
    conn.execute_batch("PRAGMA application_id = 1234; PRAGMA user_version = 1;")
        .unwrap();
    drop(conn);
    let reason = assert_refused_as_corrupt(dir.path(), &path);
    assert!(reason.contains("application_id"), "{reason}");
}

#[test]
fn a_directory_at_the_path_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(FILE_NAME);
    fs::create_dir(&path).unwrap();
    assert_refused_as_corrupt(dir.path(), &path);
}

#[test]
fn a_hot_rollback_journal_is_refused_and_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let path = populated_db(dir.path());
    let conn = Connection::open(&path).unwrap();
    conn.execute_batch("PRAGMA journal_mode = DELETE;").unwrap();
    // A small cache makes SQLite spill changed pages into the main file before commit, which
    // is the state a crash mid-transaction leaves behind.
    conn.execute_batch(
        "PRAGMA cache_size = 1; BEGIN; UPDATE history SET detail = hex(randomblob(600));",
    )
    .unwrap();
    let crashed = tempfile::tempdir().unwrap();
    let copy = crashed.path().join(FILE_NAME);
    fs::copy(&path, &copy).unwrap();
    fs::copy(
        dir.path().join("agent.db-journal"),
        crashed.path().join("agent.db-journal"),
    )
    .unwrap();
    conn.execute_batch("ROLLBACK;").unwrap();
    let reason = assert_refused_as_corrupt(crashed.path(), &copy);
    assert!(reason.contains("rollback journal"), "{reason}");
}

#[test]
fn a_newer_schema_is_refused_and_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let path = populated_db(dir.path());
    let conn = Connection::open(&path).unwrap();
    conn.pragma_update(None, "user_version", 99).unwrap();
    drop(conn);
    assert_eq!(names(dir.path()), [FILE_NAME, floors::FILE_NAME]);

    let before = snapshot(dir.path());
    let err = Store::open(&path).unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::NewerSchema {
                found: 99,
                supported: LATEST,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        format!(
            "database {} has schema version 99, newer than this agent supports ({LATEST}); \
             refusing to touch it",
            path.display()
        )
    );
    // Exactly the same files with the same bytes: no WAL switch, no -wal/-shm, no migration.
    assert_same_files(&snapshot(dir.path()), &before);
}

#[test]
fn a_newer_schema_recorded_only_in_the_wal_is_refused_and_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let path = populated_db(dir.path());
    let conn = Connection::open(&path).unwrap();
    conn.execute_batch("PRAGMA wal_autocheckpoint = 0; PRAGMA user_version = 99;")
        .unwrap();
    // Copy the files while the writer still holds them: the state a crash leaves behind,
    // with the new version committed in the WAL but not yet in the main file.
    let crashed = tempfile::tempdir().unwrap();
    let copy = crashed.path().join(FILE_NAME);
    for name in [FILE_NAME, "agent.db-wal"] {
        fs::copy(dir.path().join(name), crashed.path().join(name)).unwrap();
    }
    drop(conn);
    let main = fs::read(&copy).unwrap();
    let current = pragma_i64(&Store::open_in_memory().unwrap(), "user_version");
    assert_eq!(
        i64::from(u32::from_be_bytes(main[60..64].try_into().unwrap())),
        current,
        "main file still has this agent's version"
    );

    let before = snapshot(crashed.path());
    let err = Store::open(&copy).unwrap_err();
    assert!(
        matches!(err, StoreError::NewerSchema { found: 99, .. }),
        "{err:?}"
    );
    // Reading the WAL needs SQLite's shared-memory index, which a read-only open creates
    // when missing; that is the one file that appears. The database and its WAL are intact.
    let mut after = snapshot(crashed.path());
    assert!(after.remove("agent.db-shm").is_some());
    assert_same_files(&after, &before);
}
