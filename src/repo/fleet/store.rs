//! The hub's store of received reports: one directory per device key, the enrolled public key,
//! every accepted report exactly as received, the highest accepted counter.
//!
//! ```text
//! DIR/devices/<key id>/key.pub                     64 hex digits + newline (enrolment)
//! DIR/devices/<key id>/reports/<counter:020>.json  the envelope, byte for byte as received
//! DIR/devices/<key id>/latest.json                 {"counter": N, "received_at": "RFC 3339"}
//! DIR/devices/<key id>/.lock                       serialises accepts of one device
//! ```
//!
//! Pushed reports carry a nonce the device chose, so it shows nothing about freshness; what
//! does is the counter (each accepted report must be above the highest one accepted before)
//! and the report's own time. Every write is atomic (temporary file, fsync, rename), the
//! report before `latest.json`, so a crash between the two leaves a report that a retry
//! stores again.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::report::verify::{self, Expect};
use crate::report::{Envelope, key};

/// Largest envelope accepted, as `ssu-repo verify-report` reads: a report is a few KiB.
pub const MAX_ENVELOPE: usize = 1024 * 1024;
/// The directory under DIR holding one directory per device.
pub const DEVICES: &str = "devices";
/// The enrolled public key in a device's directory.
pub const KEY_FILE: &str = "key.pub";
/// The accepted reports in a device's directory.
pub const REPORTS: &str = "reports";
/// The highest accepted counter and when it arrived.
pub const LATEST_FILE: &str = "latest.json";
const LOCK_FILE: &str = ".lock";
/// Largest `key.pub` or `latest.json` read: both are under 100 bytes.
const MAX_SMALL_FILE: u64 = 4096;

/// The store could not be read or written (the fault is the hub's, not the device's).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {reason}")]
pub struct StoreError {
    pub path: PathBuf,
    pub reason: String,
}

impl StoreError {
    fn at(path: &Path) -> impl Fn(std::io::Error) -> StoreError + '_ {
        move |e| StoreError {
            path: path.to_owned(),
            reason: e.to_string(),
        }
    }
}

/// Why a delivered report was not stored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Refused {
    #[error("the report is {len} bytes, more than the {max} accepted")]
    TooLarge { len: usize, max: usize },
    #[error("not a signed report as `ssuctl report --json` writes it: {0}")]
    Malformed(String),
    #[error("device key {key_id} is not enrolled ({why})")]
    UnknownDevice { key_id: String, why: &'static str },
    #[error(transparent)]
    Verify(#[from] verify::Refused),
    #[error(
        "counter {counter} is not above {highest}, the highest accepted from this device: an old report replayed, or the device's counter went back"
    )]
    Replay { counter: u64, highest: u64 },
    #[error(
        "a different report with counter {counter} was accepted before: the device's counter repeated, or a forgery"
    )]
    Conflict { counter: u64 },
    /// The hub could not read or write its store: the report may be delivered again later.
    #[error("cannot store the report: {0}")]
    Storage(#[from] StoreError),
}

impl Refused {
    /// Whether the fault is the hub's (answer 5xx: the device keeps the report and retries)
    /// rather than the report's (4xx: sending the same bytes again cannot succeed).
    pub fn is_storage_fault(&self) -> bool {
        matches!(self, Refused::Storage(_))
    }
}

/// A stored report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Accepted {
    /// Stored now.
    New { key_id: String, counter: u64 },
    /// The same bytes were stored before (a retried delivery whose answer was lost): nothing
    /// changed; acknowledge it so the device drops it from its queue.
    Duplicate { key_id: String, counter: u64 },
}

impl std::fmt::Display for Accepted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Accepted::New { key_id, counter } => {
                write!(f, "stored report {counter} of device {key_id}")
            }
            Accepted::Duplicate { key_id, counter } => write!(
                f,
                "report {counter} of device {key_id} was stored before (unchanged)"
            ),
        }
    }
}

/// Result of [`enroll`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Enrolled {
    New { key_id: String },
    Already { key_id: String },
}

impl std::fmt::Display for Enrolled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Enrolled::New { key_id } => write!(f, "enrolled device {key_id}"),
            Enrolled::Already { key_id } => write!(f, "device {key_id} was enrolled before"),
        }
    }
}

/// `latest.json`: the highest accepted counter and when that report arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Latest {
    pub counter: u64,
    pub received_at: Timestamp,
}

/// A device's directory.
pub fn device_dir(dir: &Path, key_id: &str) -> PathBuf {
    dir.join(DEVICES).join(key_id)
}

/// The file of report `counter`: zero-padded, so names sort as numbers.
pub fn report_path(dir: &Path, key_id: &str, counter: u64) -> PathBuf {
    device_dir(dir, key_id)
        .join(REPORTS)
        .join(format!("{counter:020}.json"))
}

/// A key id as [`key::key_id`] writes it: 64 lowercase hex digits. Anything else is refused
/// before it becomes part of a path (a device chooses the envelope's key id).
pub fn is_key_id(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Enrols a device's public key (32 raw bytes): its reports are accepted from now on.
pub fn enroll(dir: &Path, public_key: &[u8]) -> Result<Enrolled, StoreError> {
    if public_key.len() != key::PUBLIC_KEY_LEN {
        return Err(StoreError {
            path: dir.to_owned(),
            reason: format!(
                "a device key is {} bytes, not {}",
                key::PUBLIC_KEY_LEN,
                public_key.len()
            ),
        });
    }
    let key_id = key::key_id(public_key);
    let _lock = lock(dir, &key_id)?;
    if write_key(dir, &key_id, public_key)? {
        Ok(Enrolled::New { key_id })
    } else {
        Ok(Enrolled::Already { key_id })
    }
}

/// Writes `key.pub` unless it holds this key already; true when written. Called under the
/// device's lock.
fn write_key(dir: &Path, key_id: &str, public_key: &[u8]) -> Result<bool, StoreError> {
    let path = device_dir(dir, key_id).join(KEY_FILE);
    if matches!(read_key(dir, key_id), Ok(Some(k)) if k == public_key) {
        return Ok(false);
    }
    // A key file that exists but does not hold this key (damaged, or edited) is replaced: the
    // key id is the key's hash, so this key is the only one the directory can be for.
    crate::fsutil::write_atomic(
        &path,
        format!("{}\n", hex::encode(public_key)).as_bytes(),
        0o644,
    )
    .map_err(StoreError::at(&path))?;
    Ok(true)
}

/// The enrolled key of `key_id`: `None` when not enrolled; an error when the file is
/// unreadable or does not hold the key whose id names the directory.
pub fn read_key(dir: &Path, key_id: &str) -> Result<Option<Vec<u8>>, StoreError> {
    let path = device_dir(dir, key_id).join(KEY_FILE);
    let Some(bytes) = read_small(&path)? else {
        return Ok(None);
    };
    let bad = |reason: &str| StoreError {
        path: path.clone(),
        reason: reason.to_owned(),
    };
    let text = std::str::from_utf8(&bytes).map_err(|_| bad("not text"))?;
    let pk = hex::decode(text.trim()).map_err(|_| bad("not a hex public key"))?;
    if pk.len() != key::PUBLIC_KEY_LEN || key::key_id(&pk) != key_id {
        return Err(bad("does not hold the key whose id names its directory"));
    }
    Ok(Some(pk))
}

/// `latest.json` of `key_id`, `None` before the first report.
pub fn read_latest(dir: &Path, key_id: &str) -> Result<Option<Latest>, StoreError> {
    let path = device_dir(dir, key_id).join(LATEST_FILE);
    read_small(&path)?
        .map(|bytes| {
            serde_json::from_slice(&bytes).map_err(|e| StoreError {
                path: path.clone(),
                reason: format!("damaged: {e}"),
            })
        })
        .transpose()
}

/// Checks a delivered report and stores it: see the module's description. `allow_unknown`
/// enrols an unknown device from the public key its first report carries (trust on first
/// use, for trying it out; a fleet enrols its devices with [`enroll`]). `now` is the hub's
/// time of receipt.
///
/// Blocking (file I/O, fsync, a file lock that waits for another delivery of the same
/// device): an async server calls it through `spawn_blocking`. A server answers
/// [`Refused::is_storage_fault`] with 5xx and every other refusal with 4xx.
pub fn accept(
    dir: &Path,
    envelope: &[u8],
    allow_unknown: bool,
    now: Timestamp,
) -> Result<Accepted, Refused> {
    if envelope.len() > MAX_ENVELOPE {
        return Err(Refused::TooLarge {
            len: envelope.len(),
            max: MAX_ENVELOPE,
        });
    }
    let env: Envelope =
        serde_json::from_slice(envelope).map_err(|e| Refused::Malformed(e.to_string()))?;
    if !is_key_id(&env.key_id) {
        return Err(Refused::Malformed(format!(
            "key id {:?} is not 64 lowercase hex digits",
            env.key_id.chars().take(80).collect::<String>()
        )));
    }
    let key_id = env.key_id;
    let (public_key, enrolled) = match read_key(dir, &key_id)? {
        Some(pk) => (pk, true),
        None if allow_unknown => (carried_key(&env.report, &key_id)?, false),
        None => {
            return Err(Refused::UnknownDevice {
                key_id,
                why: "enrol it with `ssu-repo enroll-device`, or accept unknown devices",
            });
        }
    };
    // Nothing about the report is believed, or written, before its signature verifies.
    let verified = verify::verify(envelope, &public_key, &Expect::default())?;
    let counter = verified.counter;

    let _lock = lock(dir, &key_id)?;
    if !enrolled {
        write_key(dir, &key_id, &public_key)?;
    }
    let path = report_path(dir, &key_id, counter);
    let highest = read_latest(dir, &key_id)?.map(|l| l.counter);
    if let Some(stored) = read_bounded(&path, MAX_ENVELOPE as u64)? {
        if stored != envelope {
            return Err(Refused::Conflict { counter });
        }
        // Stored before; if the hub stopped before recording it as the latest, do that now.
        if highest.is_none_or(|h| h < counter) {
            write_latest(dir, &key_id, counter, now)?;
        }
        return Ok(Accepted::Duplicate { key_id, counter });
    }
    if let Some(highest) = highest
        && counter <= highest
    {
        return Err(Refused::Replay { counter, highest });
    }
    let reports = device_dir(dir, &key_id).join(REPORTS);
    crate::fsutil::create_private_dir(&reports).map_err(StoreError::at(&reports))?;
    crate::fsutil::write_atomic(&path, envelope, 0o644).map_err(StoreError::at(&path))?;
    write_latest(dir, &key_id, counter, now)?;
    Ok(Accepted::New { key_id, counter })
}

fn write_latest(dir: &Path, key_id: &str, counter: u64, now: Timestamp) -> Result<(), StoreError> {
    let latest = Latest {
        counter,
        received_at: Timestamp::from_second(now.as_second()).unwrap_or(now),
    };
    let latest_path = device_dir(dir, key_id).join(LATEST_FILE);
    let text = serde_json::to_string(&latest).map_err(|e| StoreError {
        path: latest_path.clone(),
        reason: e.to_string(),
    })?;
    crate::fsutil::write_atomic(&latest_path, format!("{text}\n").as_bytes(), 0o644)
        .map_err(StoreError::at(&latest_path))
}

/// The public key an unknown device's report carries (`key.public_key`, signed with it),
/// checked against the key id. The signature is checked afterwards, with this key.
fn carried_key(report: &str, key_id: &str) -> Result<Vec<u8>, Refused> {
    let unknown = |why| Refused::UnknownDevice {
        key_id: key_id.to_owned(),
        why,
    };
    let v: serde_json::Value =
        serde_json::from_str(report).map_err(|e| Refused::Malformed(format!("report: {e}")))?;
    let pk = v["key"]["public_key"]
        .as_str()
        .and_then(|h| hex::decode(h).ok())
        .ok_or_else(|| {
            unknown("its report carries no public key to trust on first use; enrol it")
        })?;
    if pk.len() != key::PUBLIC_KEY_LEN || key::key_id(&pk) != key_id {
        return Err(unknown(
            "the public key its report carries does not match its key id",
        ));
    }
    Ok(pk)
}

/// Every device directory under `dir`, by key id (sorted); names that are not key ids are
/// skipped (nothing this module writes).
pub fn device_ids(dir: &Path) -> Result<Vec<String>, StoreError> {
    let devices = dir.join(DEVICES);
    let entries = match fs::read_dir(&devices) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(StoreError::at(&devices)(e)),
    };
    let mut ids = Vec::new();
    for entry in entries {
        let entry = entry.map_err(StoreError::at(&devices))?;
        if let Some(name) = entry.file_name().to_str()
            && is_key_id(name)
            && entry.path().is_dir()
        {
            ids.push(name.to_owned());
        }
    }
    ids.sort();
    Ok(ids)
}

/// The stored envelope of report `counter`, `None` when missing.
pub fn read_report(dir: &Path, key_id: &str, counter: u64) -> Result<Option<Vec<u8>>, StoreError> {
    read_bounded(&report_path(dir, key_id, counter), MAX_ENVELOPE as u64)
}

/// An exclusive lock on one device's directory (created if missing), so two deliveries of
/// the same device — two requests, or two server processes — cannot interleave their checks
/// and writes.
fn lock(dir: &Path, key_id: &str) -> Result<fs::File, StoreError> {
    let device = device_dir(dir, key_id);
    crate::fsutil::create_private_dir(&device).map_err(StoreError::at(&device))?;
    let path = device.join(LOCK_FILE);
    let file = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(StoreError::at(&path))?;
    file.lock().map_err(StoreError::at(&path))?;
    Ok(file)
}

fn read_small(path: &Path) -> Result<Option<Vec<u8>>, StoreError> {
    read_bounded(path, MAX_SMALL_FILE)
}

/// Reads `path`, at most `limit` bytes (a larger file is an error, not a truncation); `None`
/// when it does not exist.
fn read_bounded(path: &Path, limit: u64) -> Result<Option<Vec<u8>>, StoreError> {
    let file = match fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(StoreError::at(path)(e)),
    };
    let mut bytes = Vec::new();
    file.take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(StoreError::at(path))?;
    if bytes.len() as u64 > limit {
        return Err(StoreError {
            path: path.to_owned(),
            reason: format!("larger than {limit} bytes"),
        });
    }
    Ok(Some(bytes))
}
