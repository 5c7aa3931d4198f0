//! Opening the database file without ever harming one we do not understand.
//!
//! The order matters: an existing file is first inspected read-only (header, `quick_check`,
//! `application_id`, `user_version`); only a file that passes is reopened read-write, switched
//! to WAL and migrated. A newer agent's file that declares this agent compatible (see
//! `migrations.rs`) is used as it is, never migrated down. Corrupt, foreign and incompatible
//! newer files are refused before anything could write to them; `recover.rs` then moves them
//! aside, intact, for an operator or a newer agent.
//!
//! A missing or empty file is built under a temporary name and renamed into place, so `path`
//! never holds a half-created database, whatever moment the process dies at.

use std::fs::{self, File};
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, ErrorCode, OpenFlags, ffi};

use super::StoreError;
use super::migrations::{self, APPLICATION_ID, MIGRATIONS, Migration, SchemaVersion};

/// How long a statement waits for another connection's lock (e.g. `ssuctl` reading while the
/// daemon writes) before failing with a retryable error.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

const SQLITE_MAGIC: &[u8; 16] = b"SQLite format 3\0";
const SQLITE_HEADER_LEN: u64 = 100;

pub(super) fn open_file(path: &Path) -> Result<Connection, StoreError> {
    open_file_with(path, MIGRATIONS)
}

/// [`open_file`] as an agent that knows only `steps` would (the compatibility tests play
/// older agents with it).
pub(super) fn open_file_with(path: &Path, steps: &[Migration]) -> Result<Connection, StoreError> {
    if probe(path, steps)? == Probe::Missing {
        create(path, steps)?;
    }
    // No CREATE flag: the file was just checked or created; if it vanished meanwhile, that is
    // an error, not a reason to start from scratch.
    let mut conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|source| open_error(path, source))?;
    configure(&conn, path, Journal::Wal)?;
    if let migrations::Outcome::Newer(found) = migrations::migrate_with(&mut conn, path, steps)? {
        tracing::info!(
            path = %path.display(),
            schema = found.version,
            readable_from = found.readable_from,
            supported = steps.len(),
            "using a newer agent's store, which declares itself compatible"
        );
    }
    Ok(conn)
}

pub(super) fn open_memory() -> Result<Connection, StoreError> {
    let path = Path::new(":memory:");
    let mut conn = Connection::open_in_memory().map_err(|source| open_error(path, source))?;
    configure(&conn, path, Journal::Memory)?;
    migrations::migrate(&mut conn, path)?;
    Ok(conn)
}

#[derive(Clone, Copy, PartialEq)]
enum Journal {
    Wal,
    /// In-memory databases have no WAL; SQLite keeps their journal in memory.
    Memory,
}

fn configure(conn: &Connection, path: &Path, journal: Journal) -> Result<(), StoreError> {
    set_busy_timeout(conn, path)?;
    conn.execute_batch("PRAGMA foreign_keys = ON; PRAGMA synchronous = FULL;")
        .map_err(|source| open_error(path, source))?;
    if journal == Journal::Wal {
        let mode: String = conn
            .pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))
            .map_err(|source| open_error(path, source))?;
        // SQLite silently keeps the old mode where WAL is impossible (no shared memory, e.g.
        // some network file systems); our durability argument assumes WAL, so say so.
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::Unsupported {
                path: path.to_path_buf(),
                reason: format!("SQLite kept journal_mode {mode:?} instead of WAL"),
            });
        }
    }
    Ok(())
}

#[derive(Debug, PartialEq)]
enum Probe {
    /// No database yet (no file, or an empty one): create it.
    Missing,
    /// An ssu-agent database this binary can open (perhaps after migrating it).
    Usable,
}

fn probe(path: &Path, steps: &[Migration]) -> Result<Probe, StoreError> {
    let meta = match fs::metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Probe::Missing),
        Err(source) => return Err(io_error(path, "inspecting", source)),
    };
    if !meta.is_file() {
        return Err(corrupt(path, "it is not a regular file"));
    }
    // SQLite itself treats an empty file as an empty database: nothing in it to lose.
    if meta.len() == 0 {
        return Ok(Probe::Missing);
    }
    check_header(path)?;
    let conn = open_read_only(path)?;
    check_contents(&conn, path, steps.len() as i64)?;
    Ok(Probe::Usable)
}

/// Catches files that are not SQLite at all (text, random bytes, a truncated header) before
/// handing them to SQLite, with a reason an operator can act on.
fn check_header(path: &Path) -> Result<(), StoreError> {
    let mut header = Vec::with_capacity(SQLITE_HEADER_LEN as usize);
    File::open(path)
        .and_then(|f| f.take(SQLITE_HEADER_LEN).read_to_end(&mut header))
        .map_err(|source| io_error(path, "reading", source))?;
    if !header.starts_with(SQLITE_MAGIC) {
        return Err(corrupt(
            path,
            "it is not an SQLite database (wrong file header)",
        ));
    }
    if header.len() < SQLITE_HEADER_LEN as usize {
        return Err(corrupt(
            path,
            format!(
                "it is truncated ({} bytes, shorter than the SQLite header)",
                header.len()
            ),
        ));
    }
    Ok(())
}

pub(super) fn open_read_only(path: &Path) -> Result<Connection, StoreError> {
    let wal = sidecar(path, "-wal")?;
    let journal = sidecar(path, "-journal")?;
    let conn = if is_empty_or_missing(&wal)? && is_empty_or_missing(&journal)? {
        // Nothing outside the main file can change what it says, so open it as immutable:
        // SQLite then reads without locks and creates no -wal/-shm files at all. (A plain
        // read-only open of a WAL database creates both and leaves them behind.)
        Connection::open_with_flags(
            immutable_uri(path),
            OpenFlags::SQLITE_OPEN_READ_ONLY
                | OpenFlags::SQLITE_OPEN_URI
                | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
    } else {
        // Committed transactions may still live only in the WAL (after a crash or while
        // another process has the database open); reading them needs SQLite's normal path.
        // It writes neither the main file nor the WAL, but creates the -shm index if missing.
        Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
    };
    let conn = conn.map_err(|source| classify(path, source))?;
    set_busy_timeout(&conn, path)?;
    Ok(conn)
}

/// Through the pragma rather than `Connection::busy_timeout`: rusqlite 0.43 implements that
/// with `sqlite3_set_clientdata`, which needs SQLite 3.44 and does not link against older
/// system libraries (Debian 12 ships 3.40).
fn set_busy_timeout(conn: &Connection, path: &Path) -> Result<(), StoreError> {
    let ms = i64::try_from(BUSY_TIMEOUT.as_millis()).unwrap_or(i64::MAX);
    conn.pragma_update(None, "busy_timeout", ms)
        .map_err(|source| open_error(path, source))
}

fn check_contents(conn: &Connection, path: &Path, supported: i64) -> Result<(), StoreError> {
    let mut problems = Vec::new();
    conn.pragma_query(None, "quick_check", |row| {
        problems.push(row.get::<_, String>(0)?);
        Ok(())
    })
    .map_err(|source| classify(path, source))?;
    if problems != ["ok"] {
        problems.truncate(3);
        return Err(corrupt(
            path,
            format!("SQLite quick_check failed: {}", problems.join("; ")),
        ));
    }

    let read_err = |source| classify(path, source);
    let application_id: i32 = conn
        .pragma_query_one(None, "application_id")
        .map_err(read_err)?;
    let raw: i64 = conn
        .pragma_query_one(None, "user_version")
        .map_err(read_err)?;
    let objects: i64 = conn
        .query_row("SELECT count(*) FROM sqlite_schema", [], |row| row.get(0))
        .map_err(read_err)?;

    if application_id != 0 && application_id != APPLICATION_ID {
        return Err(corrupt(
            path,
            format!("application_id is {application_id:#010x}: not an ssu-agent database"),
        ));
    }
    let Some(found) = SchemaVersion::decode(raw) else {
        return Err(corrupt(path, format!("schema version {raw} is negative")));
    };
    if !found.readable_by(supported) {
        return Err(StoreError::NewerSchema {
            path: path.to_path_buf(),
            found: found.version,
            supported,
        });
    }
    let version = found.version;
    if version == 0 && objects > 0 {
        return Err(corrupt(
            path,
            "it has tables but no schema version: not an ssu-agent database",
        ));
    }
    if version > 0 && application_id != APPLICATION_ID {
        return Err(corrupt(
            path,
            "it has a schema version but no ssu-agent application_id: not an ssu-agent database",
        ));
    }
    Ok(())
}

/// Builds the database next to `path` and renames it into place.
fn create(path: &Path, steps: &[Migration]) -> Result<(), StoreError> {
    let tmp = sidecar(path, ".new")?;
    // Left over from a creation that died half-way; ours by name, never holding data.
    remove_with_sidecars(&tmp)?;
    let mut conn = Connection::open_with_flags(
        &tmp,
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|source| open_error(path, source))?;
    // Errors name `path`, the file the caller asked for, rather than our temporary name.
    configure(&conn, path, Journal::Wal)?;
    migrations::migrate_with(&mut conn, path, steps)?;
    conn.close()
        .map_err(|(_, source)| open_error(path, source))?;
    // Closing the last connection checkpoints the WAL into the main file and deletes it, so
    // the renamed file alone must be the whole database. Check rather than assume.
    if !is_empty_or_missing(&sidecar(&tmp, "-wal")?)? {
        return Err(StoreError::Unsupported {
            path: tmp,
            reason: "SQLite left a WAL behind after creating the database".to_owned(),
        });
    }
    File::open(&tmp)
        .and_then(|f| f.sync_all())
        .map_err(|source| io_error(&tmp, "syncing", source))?;
    // `path` is missing or empty, so its sidecars belong to no data; a stale WAL must not be
    // replayed into the new file (SQLite drops a WAL next to an empty database for the same
    // reason).
    for suffix in ["-wal", "-shm", "-journal"] {
        remove_if_present(&sidecar(path, suffix)?)?;
    }
    fs::rename(&tmp, path).map_err(|source| io_error(path, "creating", source))?;
    sync_parent(path)?;
    tracing::info!(path = %path.display(), schema = steps.len(), "created store database");
    Ok(())
}

/// `<path><suffix>`, the way SQLite names its -wal/-shm/-journal files.
fn sidecar(path: &Path, suffix: &str) -> Result<PathBuf, StoreError> {
    let Some(name) = path.file_name() else {
        return Err(StoreError::Invalid {
            what: "database path",
            value: path.display().to_string(),
        });
    };
    let mut name = name.to_os_string();
    name.push(suffix);
    Ok(path.with_file_name(name))
}

fn is_empty_or_missing(path: &Path) -> Result<bool, StoreError> {
    match fs::metadata(path) {
        Ok(meta) => Ok(meta.len() == 0),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(true),
        Err(source) => Err(io_error(path, "inspecting", source)),
    }
}

fn remove_with_sidecars(path: &Path) -> Result<(), StoreError> {
    remove_if_present(path)?;
    for suffix in ["-wal", "-shm", "-journal"] {
        remove_if_present(&sidecar(path, suffix)?)?;
    }
    Ok(())
}

fn remove_if_present(path: &Path) -> Result<(), StoreError> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(io_error(path, "removing", source)),
    }
}

/// Makes the rename itself durable: without it a power cut can bring back the directory
/// without the new name.
fn sync_parent(path: &Path) -> Result<(), StoreError> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|source| io_error(dir, "syncing directory", source))
}

/// `file:` URI with `immutable=1`. Bytes outside the unreserved set are percent-encoded so
/// that `?`, `#`, `%` and non-UTF-8 names in the path survive.
fn immutable_uri(path: &Path) -> String {
    use std::os::unix::ffi::OsStrExt;
    let mut uri = String::from(if path.is_absolute() {
        "file://"
    } else {
        "file:"
    });
    for &b in path.as_os_str().as_bytes() {
        if b.is_ascii_alphanumeric() || b"/-._~".contains(&b) {
            uri.push(char::from(b));
        } else {
            uri.push_str(&format!("%{b:02X}"));
        }
    }
    uri.push_str("?immutable=1");
    uri
}

/// Maps what SQLite says about a file we only read into "corrupt" or "could not open".
fn classify(path: &Path, source: rusqlite::Error) -> StoreError {
    match source.sqlite_error() {
        Some(e) if matches!(e.code, ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase) => {
            corrupt(path, format!("SQLite reports: {source}"))
        }
        // Our databases always use WAL, so a hot rollback journal means another program
        // wrote the file; rolling it back would be writing to a database we do not own.
        Some(e) if e.extended_code == ffi::SQLITE_READONLY_ROLLBACK => corrupt(
            path,
            "it has a hot rollback journal; ssu-agent databases use WAL, so another program \
             wrote it",
        ),
        _ => open_error(path, source),
    }
}

fn corrupt(path: &Path, reason: impl Into<String>) -> StoreError {
    StoreError::Corrupt {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

fn open_error(path: &Path, source: rusqlite::Error) -> StoreError {
    StoreError::Open {
        path: path.to_path_buf(),
        source,
    }
}

fn io_error(path: &Path, context: &'static str, source: io::Error) -> StoreError {
    StoreError::Io {
        path: path.to_path_buf(),
        context,
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn immutable_uri_escapes_what_sqlite_would_misread() {
        assert_eq!(
            immutable_uri(Path::new("/var/lib/ssu-agent/agent.db")),
            "file:///var/lib/ssu-agent/agent.db?immutable=1"
        );
        assert_eq!(
            immutable_uri(Path::new("//odd/a?b#c%d e.db")),
            "file:////odd/a%3Fb%23c%25d%20e.db?immutable=1"
        );
        assert_eq!(immutable_uri(Path::new("x.db")), "file:x.db?immutable=1");
    }

    #[test]
    fn immutable_open_works_with_awkward_names() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a?b#c%d e.db");
        Connection::open(&path)
            .unwrap()
            .execute_batch("PRAGMA journal_mode = WAL; CREATE TABLE t (x);")
            .unwrap();
        let conn = open_read_only(&path).unwrap();
        let n: i64 = conn
            .query_row("SELECT count(*) FROM sqlite_schema", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 1);
    }
}
