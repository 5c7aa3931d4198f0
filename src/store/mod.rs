//! The agent's persistent store: one SQLite database at `<state_dir>/agent.db` ([`FILE_NAME`]).
//!
//! What it holds, and why each must outlive the process:
//! - the installed release (version, security patch level, when it was applied): what the
//!   device reports as its patch level;
//! - the update history users and hubs are shown;
//! - the last check for updates, from which staleness is judged;
//! - user settings (`auto_install`, `postponed_until`, …);
//! - a small key/value `state` table for engine bookkeeping (pending install, metadata
//!   version floor, …): the engine records each lifecycle transition here *before* acting
//!   on it.
//!
//! Durability: the database runs in WAL mode with `synchronous=FULL`, so every commit is
//! fsynced to the WAL before the call returns: a transition the engine has committed survives
//! a power cut or `kill -9`. (WAL with `synchronous=NORMAL` stays consistent but may drop the
//! last commits on power loss, which would let the engine redo or forget a step.) WAL also
//! lets readers such as `ssuctl` run without blocking the daemon's writes.
//!
//! Safety of the file itself: [`Store::open`] inspects an existing database read-only before
//! writing anything. A corrupt file, someone else's SQLite file, or a newer agent's database
//! that does not declare this agent compatible is refused with an error naming the path, and
//! left exactly as it was. [`Store::open_or_recover`] (what the daemon uses) then moves it
//! aside and starts afresh without lowering any anti-rollback floor: those are also kept in a
//! second, atomically written file beside the database. See docs/store.md for the rules, and
//! `open.rs` for the procedure, `migrations.rs` for the schema and its compatibility across
//! the agents of both A/B slots, `floors.rs` for the floors, `recover.rs` for the recovery,
//! `records.rs` for the SQL shared by [`Store`] and [`Tx`].

pub mod floors;
mod migrations;
mod open;
mod queue;
mod records;
mod recover;

use std::path::{Path, PathBuf};

use jiff::Timestamp;
use jiff::civil::Date;
use rusqlite::{Connection, ErrorCode, TransactionBehavior};
use serde::Serialize;

use crate::status::{CheckRecord, Installed};
pub use queue::{QueuedReport, QueuedSize};
use records::Table;
pub use recover::{FloorSources, Recovery};

/// The database's file name inside the agent's state directory.
pub const FILE_NAME: &str = "agent.db";

/// One entry of the update history, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HistoryEntry {
    /// Increases with every entry and is never reused.
    pub id: i64,
    /// When it happened, by the device clock at the time.
    pub at: Timestamp,
    /// `security`, `feature`, `maintenance` or `event`.
    pub kind: String,
    /// What happened, e.g. `installed`, `rolled-back`, `failed`, `check`.
    pub action: String,
    /// Release version concerned, if any.
    pub version: Option<String>,
    /// Security patch level of that release, if any.
    pub security_patch_level: Option<Date>,
    /// Human-readable detail (failure reason, source, …).
    pub detail: String,
    /// CVE identifiers addressed by the release.
    pub cves: Vec<String>,
}

/// A history entry to append; the store assigns the id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NewHistoryEntry {
    /// See [`HistoryEntry::at`].
    pub at: Timestamp,
    /// `security`, `feature`, `maintenance` or `event`.
    pub kind: String,
    /// What happened, e.g. `installed`, `rolled-back`, `failed`, `check`.
    pub action: String,
    /// See [`HistoryEntry::version`].
    pub version: Option<String>,
    /// See [`HistoryEntry::security_patch_level`].
    pub security_patch_level: Option<Date>,
    /// See [`HistoryEntry::detail`].
    pub detail: String,
    /// See [`HistoryEntry::cves`].
    pub cves: Vec<String>,
}

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// SQLite could not open or set up the file (permissions, missing directory, locks, …).
    #[error("cannot open database {}: {source}", path.display())]
    Open {
        /// The database file.
        path: PathBuf,
        /// What SQLite said.
        #[source]
        source: rusqlite::Error,
    },
    /// A file operation around the database (inspecting, creating, syncing) failed.
    #[error("I/O error {context} {}: {source}", path.display())]
    Io {
        /// The file or directory the operation was on.
        path: PathBuf,
        /// What was being done, e.g. "reading".
        context: &'static str,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// The file is damaged or is not an ssu-agent database. It has not been modified.
    #[error("database {} is unusable: {reason}; refusing to touch it", path.display())]
    Corrupt {
        /// The database file.
        path: PathBuf,
        /// What is wrong with it, for the operator.
        reason: String,
    },
    /// The database was written by a newer agent that does not declare this one able to use
    /// it. It has not been modified.
    #[error(
        "database {} has schema version {found}, newer than this agent supports ({supported}); \
         refusing to touch it",
        path.display()
    )]
    NewerSchema {
        /// The database file.
        path: PathBuf,
        /// Schema version in the file.
        found: i64,
        /// Newest schema version this binary knows.
        supported: i64,
    },
    /// The platform cannot give the guarantees the store relies on (e.g. no WAL support).
    #[error("database {} cannot be used safely: {reason}", path.display())]
    Unsupported {
        /// The database file.
        path: PathBuf,
        /// Which guarantee is missing.
        reason: String,
    },
    /// A statement failed on an open database.
    #[error("database error while {context}: {source}")]
    Sql {
        /// What the store was doing, e.g. "appending to the update history".
        context: &'static str,
        /// What SQLite said.
        #[source]
        source: rusqlite::Error,
    },
    /// A value read back from the database does not parse, or a value to be written cannot
    /// be represented.
    #[error("invalid {what}: {value:?}")]
    Invalid {
        /// Which value, e.g. "installed security patch level".
        what: &'static str,
        /// The offending value as text.
        value: String,
    },
}

impl StoreError {
    /// True when trying again later may succeed: another connection held a lock for longer
    /// than the busy timeout. Everything else needs a code change or an operator; in
    /// particular a corrupt or newer database stays that way.
    pub fn is_retryable(&self) -> bool {
        match self {
            StoreError::Open { source, .. } | StoreError::Sql { source, .. } => matches!(
                source.sqlite_error_code(),
                Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked)
            ),
            _ => false,
        }
    }
}

fn sql(context: &'static str) -> impl FnOnce(rusqlite::Error) -> StoreError {
    move |source| StoreError::Sql { context, source }
}

/// The open database. Synchronous and cheap per call: the engine calls it directly.
#[derive(Debug)]
pub struct Store {
    conn: Connection,
    path: Option<PathBuf>,
    /// The floors copy ([`floors::FILE_NAME`] beside the file); `None` in memory.
    floors: Option<PathBuf>,
    recovery: Option<Recovery>,
}

impl Store {
    /// Opens the database at `path`, creating it when the file is missing or empty and
    /// migrating it to the current schema; a newer agent's database that admits this agent
    /// is used as it is. Refuses, without modifying the file, a database that is corrupt, not
    /// ours, or newer and not admitting this binary ([`StoreError::Corrupt`],
    /// [`StoreError::NewerSchema`]). Precisely: neither the file nor its WAL is written, and
    /// no file appears next to it, except that a database whose WAL still holds commits (after
    /// a crash) gets the `-shm` index SQLite needs to read that WAL, if it was missing.
    ///
    /// The floors are then reconciled with the floors copy beside the file: each side is
    /// raised to the other's (the copy is created if missing, e.g. after an update from an
    /// agent that kept none), so editing the database alone cannot lower a floor.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let store = Store {
            conn: open::open_file(path)?,
            path: Some(path.to_path_buf()),
            floors: Some(floors::copy_path(path)),
            recovery: None,
        };
        if let Err(e) = store.reconcile_floors() {
            // Not fatal: the database still holds its floors, and every floor write retries.
            tracing::warn!("cannot reconcile the floors with their copy: {e}");
        }
        Ok(store)
    }

    fn reconcile_floors(&self) -> Result<(), StoreError> {
        let Some(copy) = self.floors.as_deref() else {
            return Ok(());
        };
        let tx = rusqlite::Transaction::new_unchecked(&self.conn, TransactionBehavior::Immediate)
            .map_err(sql("starting a transaction"))?;
        let held = floors::Floors::from_db(&tx)?;
        let merged = floors::raise(copy, &held)?;
        if merged != held {
            tracing::warn!(
                "floors in the database were below the floors copy ({}); raised to: {}",
                copy.display(),
                merged.describe()
            );
            merged.restore(&tx)?;
        }
        tx.commit().map_err(sql("committing a transaction"))
    }

    /// A fresh database that lives as long as the value; for tests and dry runs.
    pub fn open_in_memory() -> Result<Store, StoreError> {
        Ok(Store {
            conn: open::open_memory()?,
            path: None,
            floors: None,
            recovery: None,
        })
    }

    /// The database file, `None` when in memory.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// The release running on the device, `None` before the first one was recorded.
    pub fn installed(&self) -> Result<Option<Installed>, StoreError> {
        records::installed(&self.conn)
    }

    /// Records the release running on the device, replacing the previous one. Its patch
    /// level is a floor: the floors copy is raised before the database commits.
    pub fn set_installed(&self, installed: &Installed) -> Result<(), StoreError> {
        self.with_floors(None, |conn| records::set_installed(conn, installed))
    }

    /// Appends to the update history and returns the entry with its id.
    pub fn append_history(&self, entry: &NewHistoryEntry) -> Result<HistoryEntry, StoreError> {
        records::append_history(&self.conn, entry)
    }

    /// Up to `limit` history entries, newest (highest id) first.
    pub fn history(&self, limit: usize) -> Result<Vec<HistoryEntry>, StoreError> {
        records::history(&self.conn, limit)
    }

    /// The most recent check for updates, `None` before the first.
    pub fn last_check(&self) -> Result<Option<CheckRecord>, StoreError> {
        records::last_check(&self.conn)
    }

    /// Records a check for updates, replacing the previous record.
    pub fn set_last_check(&self, record: &CheckRecord) -> Result<(), StoreError> {
        records::set_last_check(&self.conn, record)
    }

    /// A user setting, `None` when never set.
    pub fn setting(&self, key: &str) -> Result<Option<String>, StoreError> {
        records::get_value(&self.conn, Table::Settings, key)
    }

    /// Sets a user setting, replacing any previous value.
    pub fn set_setting(&self, key: &str, value: &str) -> Result<(), StoreError> {
        records::set_value(&self.conn, Table::Settings, key, Some(value))
    }

    /// An engine bookkeeping value, `None` when absent.
    pub fn state(&self, key: &str) -> Result<Option<String>, StoreError> {
        records::get_value(&self.conn, Table::State, key)
    }

    /// Sets an engine bookkeeping value; `None` removes it. When `key` is a floor
    /// ([`floors::is_floor_key`]) the floors copy is raised before the database commits, so
    /// the copy never holds less than the database.
    pub fn set_state(&self, key: &str, value: Option<&str>) -> Result<(), StoreError> {
        if floors::is_floor_key(key) {
            self.with_floors(Some(key), |conn| {
                records::set_value(conn, Table::State, key, value)
            })
        } else {
            records::set_value(&self.conn, Table::State, key, value)
        }
    }

    /// Runs `write` and raises the floors copy in one transaction; `written` is the floor
    /// key the agent itself just set, which the copy takes as it is (see [`mirror_floors`]).
    fn with_floors(
        &self,
        written: Option<&str>,
        write: impl FnOnce(&Connection) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        if self.floors.is_none() {
            return write(&self.conn);
        }
        let tx = rusqlite::Transaction::new_unchecked(&self.conn, TransactionBehavior::Immediate)
            .map_err(sql("starting a transaction"))?;
        write(&tx)?;
        mirror_floors(&tx, self.floors.as_deref(), written)?;
        tx.commit().map_err(sql("committing a transaction"))
    }

    /// Runs `sql` on the open connection. The engine's tests make the real database fail
    /// with it while the engine runs (`PRAGMA query_only`, a lock, a damaged schema).
    #[cfg(test)]
    pub(crate) fn execute_batch_for_test(&self, sql: &str) -> rusqlite::Result<()> {
        self.conn.execute_batch(sql)
    }

    /// Several writes as one transaction (e.g. "installed + history" when an update is
    /// confirmed): committed when `f` returns `Ok`, rolled back entirely when it returns
    /// `Err` or panics.
    pub fn transaction<T>(
        &mut self,
        f: impl FnOnce(&Tx<'_>) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        // IMMEDIATE takes the write lock up front, so a concurrent writer makes us wait
        // (busy timeout) at the start instead of failing half-way through `f`.
        let tx = Tx {
            tx: self
                .conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(sql("starting a transaction"))?,
            floors: self.floors.as_deref(),
        };
        let value = f(&tx)?;
        tx.tx.commit().map_err(sql("committing a transaction"))?;
        Ok(value)
    }
}

/// An open transaction; see [`Store::transaction`]. Offers the same methods as [`Store`],
/// which read and write inside the transaction.
pub struct Tx<'a> {
    tx: rusqlite::Transaction<'a>,
    floors: Option<&'a Path>,
}

impl Tx<'_> {
    /// [`Store::installed`], inside the transaction.
    pub fn installed(&self) -> Result<Option<Installed>, StoreError> {
        records::installed(&self.tx)
    }

    /// [`Store::set_installed`], inside the transaction (the floors copy is raised at once,
    /// before the transaction commits).
    pub fn set_installed(&self, installed: &Installed) -> Result<(), StoreError> {
        records::set_installed(&self.tx, installed)?;
        self.mirror_floors()
    }

    /// [`Store::append_history`], inside the transaction.
    pub fn append_history(&self, entry: &NewHistoryEntry) -> Result<HistoryEntry, StoreError> {
        records::append_history(&self.tx, entry)
    }

    /// [`Store::history`], inside the transaction.
    pub fn history(&self, limit: usize) -> Result<Vec<HistoryEntry>, StoreError> {
        records::history(&self.tx, limit)
    }

    /// [`Store::last_check`], inside the transaction.
    pub fn last_check(&self) -> Result<Option<CheckRecord>, StoreError> {
        records::last_check(&self.tx)
    }

    /// [`Store::set_last_check`], inside the transaction.
    pub fn set_last_check(&self, record: &CheckRecord) -> Result<(), StoreError> {
        records::set_last_check(&self.tx, record)
    }

    /// [`Store::setting`], inside the transaction.
    pub fn setting(&self, key: &str) -> Result<Option<String>, StoreError> {
        records::get_value(&self.tx, Table::Settings, key)
    }

    /// [`Store::set_setting`], inside the transaction.
    pub fn set_setting(&self, key: &str, value: &str) -> Result<(), StoreError> {
        records::set_value(&self.tx, Table::Settings, key, Some(value))
    }

    /// [`Store::state`], inside the transaction.
    pub fn state(&self, key: &str) -> Result<Option<String>, StoreError> {
        records::get_value(&self.tx, Table::State, key)
    }

    /// [`Store::set_state`], inside the transaction (a floor is copied at once, before the
    /// transaction commits).
    pub fn set_state(&self, key: &str, value: Option<&str>) -> Result<(), StoreError> {
        records::set_value(&self.tx, Table::State, key, value)?;
        if floors::is_floor_key(key) {
            mirror_floors(&self.tx, self.floors, Some(key))?;
        }
        Ok(())
    }

    fn mirror_floors(&self) -> Result<(), StoreError> {
        mirror_floors(&self.tx, self.floors, None)
    }
}

/// Raises the floors copy at `copy` to what `conn` holds (no-op in memory).
///
/// `written` is the floor key the agent itself has just set: the copy takes that one as the
/// database now holds it, even lower. Only the agent's own verified decisions lower a floor —
/// TUF's fast-forward recovery after a key rotation, a clock ratchet that a wrong clock had
/// pushed ahead, corrected by trusted time — and the copy must follow them, or the next start
/// would raise the floor again. Every other floor is merged by taking the maximum, so a
/// database edited behind the agent's back still cannot lower one.
fn mirror_floors(
    conn: &Connection,
    copy: Option<&Path>,
    written: Option<&str>,
) -> Result<(), StoreError> {
    match copy {
        Some(path) => {
            floors::raise_except(path, &floors::Floors::from_db(conn)?, written).map(drop)
        }
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests;
