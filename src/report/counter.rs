//! The per-device report counter: every report carries a number larger than any report this
//! device signed before, across restarts and power cuts, so a hub can refuse an old report
//! replayed to it.
//!
//! It lives in its own small file in the state directory (not the SQLite store), written
//! atomically. Writing on every report would let any local caller (reading a report needs no
//! authorization) wear the flash, so the file holds a *reservation*: the counter hands out
//! numbers below the reserved one without writing, and reserves the next [`BLOCK`] before it
//! passes it. After a restart counting resumes at the reservation — numbers may be skipped,
//! never repeated.

use std::path::{Path, PathBuf};

/// File name in the state directory.
pub const FILE_NAME: &str = "report-counter";
/// How many numbers one write reserves.
pub const BLOCK: u64 = 64;

/// Why no counter value can be handed out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("report counter {path}: {reason}")]
pub struct CounterError {
    pub path: PathBuf,
    pub reason: String,
}

/// The counter as loaded from its file.
#[derive(Debug)]
pub struct Counter {
    path: PathBuf,
    /// The next number to hand out.
    next: u64,
    /// The file says: numbers from here on were never handed out.
    reserved: u64,
}

impl Counter {
    /// Loads the counter of `state_dir`. A missing file starts at 1; a damaged file is an
    /// error rather than a restart from 1, which would hand out numbers hubs have seen.
    pub fn open(state_dir: &Path) -> Result<Counter, CounterError> {
        let path = state_dir.join(FILE_NAME);
        let err = |reason: String| CounterError {
            path: path.clone(),
            reason,
        };
        let reserved = match std::fs::read_to_string(&path) {
            Ok(text) => text.trim().parse::<u64>().map_err(|_| {
                err(format!(
                    "holds {:?}, not a number; it must never go back, so it is not reset \
                     (remove the file to restart at 1, and tell the hubs)",
                    text.chars().take(40).collect::<String>()
                ))
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => 1,
            Err(e) => return Err(err(format!("cannot read: {e}"))),
        };
        Ok(Counter {
            path,
            next: reserved,
            reserved,
        })
    }

    /// The next number, persisted (as part of a reservation) before it is returned.
    pub fn take(&mut self) -> Result<u64, CounterError> {
        if self.next >= self.reserved {
            let reserve = self.next.checked_add(BLOCK).ok_or_else(|| CounterError {
                path: self.path.clone(),
                reason: "exhausted".into(),
            })?;
            crate::fsutil::write_atomic(&self.path, format!("{reserve}\n").as_bytes(), 0o600)
                .map_err(|e| CounterError {
                    path: self.path.clone(),
                    reason: format!("cannot write: {e}"),
                })?;
            self.reserved = reserve;
        }
        let n = self.next;
        self.next += 1;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_up_and_never_goes_back_across_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = Counter::open(dir.path()).unwrap();
        let first: Vec<u64> = (0..3).map(|_| c.take().unwrap()).collect();
        assert_eq!(first, [1, 2, 3]);
        drop(c);
        // A restart (or a power cut right after the last report) resumes above every number
        // handed out.
        let mut c = Counter::open(dir.path()).unwrap();
        let after = c.take().unwrap();
        assert!(after > 3, "{after}");
        // Past a reservation block too.
        let mut last = after;
        for _ in 0..(2 * BLOCK) {
            let n = c.take().unwrap();
            assert!(n > last);
            last = n;
        }
        drop(c);
        assert!(Counter::open(dir.path()).unwrap().take().unwrap() > last);
    }

    #[test]
    fn writes_once_per_block_not_once_per_report() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        let mut c = Counter::open(dir.path()).unwrap();
        c.take().unwrap();
        // Marked, so a rewrite shows.
        std::fs::write(&path, "1\n").unwrap();
        for _ in 1..BLOCK {
            c.take().unwrap();
        }
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "1\n");
        c.take().unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            format!("{}\n", 1 + 2 * BLOCK)
        );
    }

    #[test]
    fn a_damaged_file_is_an_error_not_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(FILE_NAME), "seven").unwrap();
        let e = Counter::open(dir.path()).unwrap_err().to_string();
        assert!(e.contains("not a number"), "{e}");
        std::fs::write(dir.path().join(FILE_NAME), format!("{}\n", u64::MAX)).unwrap();
        let mut c = Counter::open(dir.path()).unwrap();
        assert!(c.take().unwrap_err().to_string().contains("exhausted"));
    }

    #[test]
    fn an_unwritable_file_hands_out_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = Counter::open(&dir.path().join("missing-dir")).unwrap();
        assert!(c.take().is_err());
        assert!(c.take().is_err(), "no number without a reservation on disk");
    }
}
