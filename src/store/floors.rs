//! The anti-rollback floors, and their second copy outside the database.
//!
//! Four records only ever move up, and each one lowered would let an attacker roll the device
//! back: the highest verified version of each TUF role per update source (a rollback or
//! freeze of the metadata), the highest security patch level installed (an older, vulnerable
//! release), the targets that were rolled back on this device (a boot loop), and the latest
//! time the device is sure has passed (expired metadata looking fresh). They live in the
//! database like everything else; [`Floors`] is the same four in one small JSON file,
//! [`FILE_NAME`] beside it, rewritten atomically whenever one of them moves (see
//! [`Store::set_state`](super::Store::set_state)). It only ever goes up: every write merges
//! the database's values with the file's by taking the maximum.
//!
//! When the database has to be replaced (`recover.rs`), the floors are rebuilt from this copy,
//! from tough's cached verified metadata, and (for an intact newer database) from the old
//! file itself, again by taking the maximum of every source: a damaged or deleted database
//! cannot lower a floor.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use jiff::Timestamp;
use rusqlite::Connection;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::records::{self, Table};
use super::{StoreError, sql};
use crate::status::Installed;

/// The copy's file name, beside the database.
pub const FILE_NAME: &str = "floors.json";
/// State key of the manufacturer repository's role versions.
pub const METADATA_FLOOR_KEY: &str = "metadata_floor";
/// State key prefix of an operator repository's role versions (`…operator.<profile>`).
pub const OPERATOR_FLOOR_PREFIX: &str = "metadata_floor.operator.";
/// State key of the clock ratchet (RFC 3339).
pub const LATEST_KNOWN_TIME_KEY: &str = "latest_known_time";
/// State key of the rolled-back targets (JSON array of SHA-256 hex strings).
pub const ROLLED_BACK_KEY: &str = "rolled_back_targets";
/// The top-level TUF roles, as the metadata floors name them.
pub const ROLES: [&str; 4] = ["root", "timestamp", "snapshot", "targets"];

/// The state key of operator profile `name`'s metadata floor.
pub fn operator_floor_key(name: &str) -> String {
    format!("{OPERATOR_FLOOR_PREFIX}{name}")
}

/// Whether writing state `key` moves a floor.
pub fn is_floor_key(key: &str) -> bool {
    key == METADATA_FLOOR_KEY
        || key.starts_with(OPERATOR_FLOOR_PREFIX)
        || key == LATEST_KNOWN_TIME_KEY
        || key == ROLLED_BACK_KEY
}

/// The floors, as kept in [`FILE_NAME`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Floors {
    /// Each metadata floor's JSON object by state key (numbers are versions).
    #[serde(default)]
    pub metadata: BTreeMap<String, Value>,
    #[serde(default)]
    pub latest_known_time: Option<Timestamp>,
    #[serde(default)]
    pub rolled_back_targets: BTreeSet<String>,
    /// The installed release with the highest security patch level.
    #[serde(default)]
    pub installed: Option<Installed>,
}

impl Floors {
    /// The floors the database holds. A value that does not parse is left out (and logged):
    /// the copy keeps the last good one.
    pub fn from_db(conn: &Connection) -> Result<Floors, StoreError> {
        const CONTEXT: &str = "reading the floors";
        let mut floors = Floors::default();
        let mut stmt = conn
            .prepare_cached(
                "SELECT key, value FROM state WHERE key = ?1 OR key = ?2 OR key = ?3
                 OR substr(key, 1, length(?4)) = ?4",
            )
            .map_err(sql(CONTEXT))?;
        let rows = stmt
            .query_map(
                [
                    METADATA_FLOOR_KEY,
                    LATEST_KNOWN_TIME_KEY,
                    ROLLED_BACK_KEY,
                    OPERATOR_FLOOR_PREFIX,
                ],
                |row| Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?)),
            )
            .map_err(sql(CONTEXT))?;
        for row in rows {
            let (key, value) = row.map_err(sql(CONTEXT))?;
            floors.absorb(&key, &value);
        }
        floors.installed = records::installed(conn)?;
        Ok(floors)
    }

    /// Takes in one state value; ignores (and logs) one that does not parse.
    fn absorb(&mut self, key: &str, value: &str) {
        let ok = match key {
            LATEST_KNOWN_TIME_KEY => value
                .parse::<Timestamp>()
                .map(|t| self.latest_known_time = max_opt(self.latest_known_time, Some(t)))
                .is_ok(),
            ROLLED_BACK_KEY => serde_json::from_str::<Vec<String>>(value)
                .map(|list| self.rolled_back_targets.extend(list))
                .is_ok(),
            _ => match serde_json::from_str::<Value>(value) {
                Ok(v @ Value::Object(_)) => {
                    let merged = match self.metadata.remove(key) {
                        Some(old) => merge_versions(&v, &old),
                        None => v,
                    };
                    self.metadata.insert(key.to_owned(), merged);
                    true
                }
                _ => false,
            },
        };
        if !ok {
            tracing::warn!(key, value, "floor value does not parse; not copied");
        }
    }

    /// Raises every floor of `self` to at least `other`'s.
    pub fn merge(&mut self, other: &Floors) {
        for (key, theirs) in &other.metadata {
            let merged = match self.metadata.get(key) {
                Some(ours) => merge_versions(ours, theirs),
                None => theirs.clone(),
            };
            self.metadata.insert(key.clone(), merged);
        }
        self.latest_known_time = max_opt(self.latest_known_time, other.latest_known_time);
        self.rolled_back_targets
            .extend(other.rolled_back_targets.iter().cloned());
        if let Some(theirs) = &other.installed
            && self
                .installed
                .as_ref()
                .is_none_or(|ours| theirs.security_patch_level > ours.security_patch_level)
        {
            self.installed = Some(theirs.clone());
        }
    }

    /// Writes the floors into a database (recovery): the state keys and the installed
    /// release, exactly as the engine reads them.
    pub fn restore(&self, conn: &Connection) -> Result<(), StoreError> {
        for (key, value) in &self.metadata {
            let mut value = value.clone();
            if let Value::Object(map) = &mut value {
                // The engine reads a floor with a role missing as no floor at all.
                for role in ROLES {
                    map.entry(role).or_insert(Value::from(0u64));
                }
            }
            records::set_value(conn, Table::State, key, Some(&value.to_string()))?;
        }
        if let Some(t) = self.latest_known_time {
            records::set_value(
                conn,
                Table::State,
                LATEST_KNOWN_TIME_KEY,
                Some(&t.to_string()),
            )?;
        }
        if !self.rolled_back_targets.is_empty() {
            let list: Vec<&String> = self.rolled_back_targets.iter().collect();
            let json = serde_json::to_string(&list).map_err(|e| StoreError::Invalid {
                what: "rolled-back targets",
                value: e.to_string(),
            })?;
            records::set_value(conn, Table::State, ROLLED_BACK_KEY, Some(&json))?;
        }
        if let Some(i) = &self.installed {
            records::set_installed(conn, i)?;
        }
        Ok(())
    }

    /// Short list of what is set, for the history entry and the log.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        for (key, value) in &self.metadata {
            let source = key
                .strip_prefix(OPERATOR_FLOOR_PREFIX)
                .unwrap_or("manufacturer");
            let versions: Vec<String> = ROLES
                .iter()
                .map(|r| format!("{r} {}", value.get(r).and_then(Value::as_u64).unwrap_or(0)))
                .collect();
            parts.push(format!("{source} metadata {}", versions.join(", ")));
        }
        if let Some(i) = &self.installed {
            parts.push(format!(
                "patch level {} ({})",
                i.security_patch_level, i.version
            ));
        }
        if !self.rolled_back_targets.is_empty() {
            parts.push(format!(
                "{} rolled-back target(s)",
                self.rolled_back_targets.len()
            ));
        }
        if let Some(t) = self.latest_known_time {
            parts.push(format!("latest known time {t}"));
        }
        if parts.is_empty() {
            "none".to_owned()
        } else {
            parts.join("; ")
        }
    }
}

/// Role-wise maximum of two metadata floor objects; fields that are not versions are taken
/// from `ours` (the newer write) — except where TUF's fast-forward recovery gave a floor up.
///
/// A floor knows the keys its timestamp and snapshot versions were verified under
/// (`keys.timestamp`, `keys.snapshot`; see `metadata::floor`). When the two records name
/// different keys for a role, they are not comparable: the keys rotated, and TUF releases the
/// old version (spec 5.3.11). Then the record verified under the newer root (the higher
/// `root`, which itself only goes up) decides that role — the snapshot decides the targets
/// version too. A record an attacker wrote with other keys and a higher root version lowers
/// nothing the device can use: its root floor then refuses every repository until one
/// really reaches that root version.
fn merge_versions(ours: &Value, theirs: &Value) -> Value {
    let (Value::Object(a), Value::Object(b)) = (ours, theirs) else {
        return ours.clone();
    };
    let mut out = a.clone();
    for (k, v) in b {
        match (out.get(k).and_then(Value::as_u64), v.as_u64()) {
            (Some(x), Some(y)) => {
                out.insert(k.clone(), Value::from(x.max(y)));
            }
            (None, _) if !out.contains_key(k) => {
                out.insert(k.clone(), v.clone());
            }
            _ => {}
        }
    }
    let root = |m: &serde_json::Map<String, Value>| m.get("root").and_then(Value::as_u64);
    let key = |m: &serde_json::Map<String, Value>, role: &str| {
        m.get("keys")
            .and_then(|k| k.get(role))
            .and_then(Value::as_str)
            .filter(|f| !f.is_empty())
            .map(str::to_owned)
    };
    // Under the same root, keys cannot differ legitimately: keep the maximum then.
    let newer_root = match root(b).cmp(&root(a)) {
        std::cmp::Ordering::Greater => Some(b),
        std::cmp::Ordering::Less => Some(a),
        std::cmp::Ordering::Equal => None,
    };
    let mut keys = a
        .get("keys")
        .cloned()
        .unwrap_or_else(|| Value::Object(Default::default()));
    for (role, versions) in [
        ("timestamp", &["timestamp"][..]),
        ("snapshot", &["snapshot", "targets"][..]),
    ] {
        match (key(a, role), key(b, role)) {
            (Some(ka), Some(kb)) if ka != kb => {
                let Some(newer_root) = newer_root else {
                    continue;
                };
                for v in versions {
                    if let Some(n) = newer_root.get(*v) {
                        out.insert((*v).to_owned(), n.clone());
                    }
                }
                if let (Some(map), Some(f)) = (keys.as_object_mut(), key(newer_root, role)) {
                    map.insert(role.to_owned(), Value::from(f));
                }
            }
            (None, Some(kb)) => {
                if let Some(map) = keys.as_object_mut() {
                    map.insert(role.to_owned(), Value::from(kb));
                }
            }
            _ => {}
        }
    }
    if keys.as_object().is_some_and(|m| !m.is_empty()) {
        out.insert("keys".to_owned(), keys);
    }
    Value::Object(out)
}

fn max_opt(a: Option<Timestamp>, b: Option<Timestamp>) -> Option<Timestamp> {
    match (a, b) {
        (Some(x), Some(y)) => Some(x.max(y)),
        (x, y) => x.or(y),
    }
}

/// The copy beside database `db`.
pub fn copy_path(db: &Path) -> PathBuf {
    db.with_file_name(FILE_NAME)
}

/// Reads the copy; `Ok(None)` when there is none yet.
pub fn load(path: &Path) -> Result<Option<Floors>, String> {
    match fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| format!("{} does not parse: {e}", path.display())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("cannot read {}: {e}", path.display())),
    }
}

/// Makes the copy at `path` at least `floors` (merged with what it already holds) and
/// returns what it now holds. Atomic: a temporary file, fsynced, renamed over the old one,
/// then the directory fsynced; a crash leaves the old copy or the new one, never half.
pub fn raise(path: &Path, floors: &Floors) -> Result<Floors, StoreError> {
    raise_except(path, floors, None)
}

/// [`raise`], except that the floor stored under state key `exact` (if any) is taken from
/// `floors` as it is, even when lower than the copy's: the agent itself just set it.
pub fn raise_except(
    path: &Path,
    floors: &Floors,
    exact: Option<&str>,
) -> Result<Floors, StoreError> {
    let mut merged = floors.clone();
    match load(path) {
        Ok(Some(old)) => {
            merged.merge(&old);
            match exact {
                Some(LATEST_KNOWN_TIME_KEY) => merged.latest_known_time = floors.latest_known_time,
                Some(key) if floors.metadata.contains_key(key) => {
                    merged
                        .metadata
                        .insert(key.to_owned(), floors.metadata[key].clone());
                }
                _ => {}
            }
            if merged == old {
                return Ok(merged);
            }
        }
        // Nothing to keep yet (a new store): no file until a floor is set.
        Ok(None) if merged == Floors::default() => return Ok(merged),
        Ok(None) => {}
        // Replaced by what the database holds now, which is every floor it ever had unless
        // the database was replaced too.
        Err(e) => tracing::warn!("floors copy unusable, rewriting it: {e}"),
    }
    write_atomic(path, &merged)?;
    Ok(merged)
}

fn write_atomic(path: &Path, floors: &Floors) -> Result<(), StoreError> {
    use std::os::unix::fs::OpenOptionsExt;
    let io_err = |context| {
        move |source| StoreError::Io {
            path: path.to_path_buf(),
            context,
            source,
        }
    };
    let mut bytes = serde_json::to_vec_pretty(floors).map_err(|e| StoreError::Invalid {
        what: "floors",
        value: e.to_string(),
    })?;
    bytes.push(b'\n');
    let tmp = path.with_file_name(format!("{FILE_NAME}.new"));
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io_err("writing the floors copy"))?;
    file.write_all(&bytes)
        .and_then(|()| file.sync_all())
        .map_err(io_err("writing the floors copy"))?;
    fs::rename(&tmp, path).map_err(io_err("replacing the floors copy"))?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err("syncing the directory of the floors copy"))
}

/// The role versions in one of tough's datastores (`root.json`, `timestamp.json`, … as last
/// verified), as a metadata floor object; `None` when it holds none. Read without checking
/// signatures (tough did when it stored them): whatever is found is only ever merged by
/// taking the maximum, so a file an attacker wrote can raise a floor but never lower one.
pub fn from_tuf_datastore(dir: &Path) -> Option<Value> {
    let mut map = serde_json::Map::new();
    for role in ROLES {
        let Ok(bytes) = fs::read(dir.join(format!("{role}.json"))) else {
            continue;
        };
        let version = serde_json::from_slice::<Value>(&bytes)
            .ok()
            .and_then(|v| v.get("signed")?.get("version")?.as_u64());
        if let Some(version) = version {
            map.insert(role.to_owned(), Value::from(version));
        }
    }
    (!map.is_empty()).then_some(Value::Object(map))
}

#[cfg(test)]
mod tests;
