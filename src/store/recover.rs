//! Starting again from a database the agent cannot use, without losing it or any floor.
//!
//! A corrupt file, someone else's file, or a newer agent's database that does not declare
//! this agent compatible would otherwise stop the agent for good — and a device whose agent
//! does not run is never updated again. So [`Store::open_or_recover`] moves the file (and its
//! -wal/-shm/-journal) aside under a new name, never deleting it, starts a fresh database,
//! rebuilds the floors from every source that can still vouch for them (see `floors.rs`), and
//! records what it did in the new history. The engine announces it (`StoreRecovered`).

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use jiff::Timestamp;

use super::floors::{self, Floors};
use super::{NewHistoryEntry, Store, StoreError, open};

/// What [`Store::open_or_recover`] did with a database it could not use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recovery {
    pub at: Timestamp,
    /// Why the old database could not be used.
    pub reason: String,
    /// Where it is now, intact, with its sidecar files beside it.
    pub moved_to: PathBuf,
    /// The sources the floors were rebuilt from (`floors copy`, `tough cache manufacturer`, …).
    pub sources: Vec<String>,
    /// The floors the new database starts with, in words.
    pub floors: String,
}

/// Where floors can be found besides the database: tough's datastore of each update source,
/// with the state key of that source's metadata floor.
#[derive(Debug, Clone, Default)]
pub struct FloorSources {
    pub tuf: Vec<(String, PathBuf)>,
}

impl StoreError {
    /// Whether the database itself is unusable by this agent (as opposed to the file system
    /// or a lock): the cases [`Store::open_or_recover`] replaces it for.
    pub fn is_unusable_database(&self) -> bool {
        matches!(
            self,
            StoreError::Corrupt { .. } | StoreError::NewerSchema { .. }
        )
    }
}

impl Store {
    /// Like [`Store::open`], but a database this agent cannot use is moved aside and replaced
    /// by a new one whose floors are rebuilt from the floors copy, `sources` and (for an
    /// intact newer database) the old file; [`Store::take_recovery`] then says so. Other
    /// errors (permissions, a full disk, locks) are returned as they are: replacing the
    /// database would not help with them.
    pub fn open_or_recover(
        path: &Path,
        sources: &FloorSources,
        now: Timestamp,
    ) -> Result<Store, StoreError> {
        match Store::open(path) {
            Ok(store) => Ok(store),
            Err(e) if e.is_unusable_database() => recover(path, &e, sources, now),
            Err(e) => Err(e),
        }
    }

    /// The recovery this handle was opened with, once.
    pub fn take_recovery(&mut self) -> Option<Recovery> {
        self.recovery.take()
    }
}

fn recover(
    path: &Path,
    error: &StoreError,
    sources: &FloorSources,
    now: Timestamp,
) -> Result<Store, StoreError> {
    let reason = match error {
        StoreError::Corrupt { reason, .. } => reason.clone(),
        other => other.to_string(),
    };
    let mut floors = Floors::default();
    let mut used = Vec::new();
    // An intact database of an incompatible newer agent still holds its floors; a corrupt
    // one is not read, since damaged values could be anything.
    if matches!(error, StoreError::NewerSchema { .. })
        && let Some(old) = open::open_read_only(path)
            .ok()
            .and_then(|conn| Floors::from_db(&conn).ok())
    {
        floors.merge(&old);
        used.push("the old database".to_owned());
    }
    let copy = floors::copy_path(path);
    match floors::load(&copy) {
        Ok(Some(saved)) => {
            floors.merge(&saved);
            used.push("floors copy".to_owned());
        }
        Ok(None) => tracing::warn!(path = %copy.display(), "no floors copy to recover from"),
        Err(e) => tracing::warn!("floors copy unusable: {e}"),
    }
    for (key, dir) in &sources.tuf {
        if let Some(versions) = floors::from_tuf_datastore(dir) {
            floors.merge(&Floors {
                metadata: [(key.clone(), versions)].into(),
                ..Floors::default()
            });
            used.push(format!("tough cache {}", dir.display()));
        }
    }

    let moved_to = move_aside(path, now)?;
    let mut store = Store::open(path)?;
    let described = floors.describe();
    let detail = format!(
        "the store was unusable ({reason}); kept as {}; started a new one with floors from {}: {described}",
        moved_to.display(),
        if used.is_empty() {
            "no source".to_owned()
        } else {
            used.join(", ")
        },
    );
    let entry = NewHistoryEntry {
        at: now,
        kind: "event".to_owned(),
        action: "store-recovered".to_owned(),
        version: None,
        security_patch_level: None,
        detail: detail.clone(),
        cves: Vec::new(),
    };
    store.transaction(|tx| {
        floors.restore(&tx.tx)?;
        tx.mirror_floors()?;
        tx.append_history(&entry).map(drop)
    })?;
    tracing::error!(
        path = %path.display(),
        moved_to = %moved_to.display(),
        "store recovered: {detail}"
    );
    store.recovery = Some(Recovery {
        at: now,
        reason,
        moved_to,
        sources: used,
        floors: described,
    });
    Ok(store)
}

/// Renames `path` and its sidecars to `<name>.unusable-<time>[-n]` (plus the same suffixes,
/// so SQLite still finds the WAL of the moved file) and makes the renames durable.
fn move_aside(path: &Path, now: Timestamp) -> Result<PathBuf, StoreError> {
    let io_err = |p: &Path, source| StoreError::Io {
        path: p.to_path_buf(),
        context: "moving aside",
        source,
    };
    let name = path
        .file_name()
        .map_or_else(|| "agent.db".into(), |n| n.to_string_lossy().into_owned());
    let stamp = now.strftime("%Y%m%dT%H%M%SZ").to_string();
    let mut target = path.with_file_name(format!("{name}.unusable-{stamp}"));
    let mut n = 1;
    while fs::symlink_metadata(&target).is_ok() {
        target = path.with_file_name(format!("{name}.unusable-{stamp}-{n}"));
        n += 1;
    }
    for suffix in ["-wal", "-shm", "-journal"] {
        let from = with_suffix(path, suffix);
        match fs::rename(&from, with_suffix(&target, suffix)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err(&from, e)),
        }
    }
    // The main file last: until it moves, a crash leaves it where the next start looks.
    fs::rename(path, &target).map_err(|e| io_err(path, e))?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_err(dir, e))?;
    Ok(target)
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_os_string();
    s.push(suffix);
    PathBuf::from(s)
}
