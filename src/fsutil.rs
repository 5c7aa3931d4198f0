//! Small filesystem helpers shared by the adapters.

use std::path::Path;

/// Creates `path` and its parents with mode 0700 (existing directories are left as they
/// are). The agent's state — history, trust records, the metadata cache — is for its own
/// user only.
pub fn create_private_dir(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
}

/// Replaces `path` with `bytes` so that a reader — or the agent after a power cut — sees the
/// old content or the new, never a torn mix: write a temporary file next to it (created with
/// `mode`, never widened by the umask), fsync it, rename it over `path`, fsync the directory.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path.file_name().ok_or_else(|| {
        std::io::Error::new(std::io::ErrorKind::InvalidInput, "path names no file")
    })?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(".tmp");
    let tmp = dir.join(tmp_name);
    // A leftover from an interrupted write is ours and stale.
    let _ = std::fs::remove_file(&tmp);
    let written = (|| {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)?;
        std::fs::File::open(dir)?.sync_all()
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

/// Whether a file can be created in the directory `path`: tried with a file of this
/// process's own, removed again. SQLite only says "unable to open database file" when it
/// cannot; this names the cause (a read-only file system, permissions).
pub fn check_writable(path: &Path) -> std::io::Result<()> {
    let probe = path.join(format!(".ssu-agent-write-test.{}", std::process::id()));
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&probe)?;
    std::fs::remove_file(&probe)
}

/// Whether `e` is the device's storage failing — full, read-only, not permitted, an I/O
/// error — rather than something a name or content could cause (a too long file name, say).
pub fn is_storage_failure(e: &std::io::Error) -> bool {
    use std::io::ErrorKind as K;
    matches!(
        e.kind(),
        K::StorageFull | K::QuotaExceeded | K::ReadOnlyFilesystem | K::PermissionDenied
    ) || e.raw_os_error() == Some(5) // EIO
}

/// What an operator can do about a failed write to the device's own storage, in words for
/// `LastError`, `LastCheckResult` and the journal: a full disk is not a bad update.
pub fn storage_advice(e: &std::io::Error) -> &'static str {
    use std::io::ErrorKind as K;
    match e.kind() {
        K::StorageFull | K::QuotaExceeded => "the disk is full: free space on it, then check again",
        K::ReadOnlyFilesystem => {
            "the file system is read-only: remount it read-write, then check again"
        }
        K::PermissionDenied => {
            "the agent may not write there: check the directory's owner and mode"
        }
        _ => "the disk failed: see the kernel log (journalctl -k), then check again",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn storage_advice_says_what_to_do_about_a_full_disk() {
        let full = std::io::Error::from_raw_os_error(28); // ENOSPC
        assert!(storage_advice(&full).starts_with("the disk is full"));
        let quota = std::io::Error::from_raw_os_error(122); // EDQUOT
        assert!(storage_advice(&quota).starts_with("the disk is full"));
        let ro = std::io::Error::from_raw_os_error(30); // EROFS
        assert!(storage_advice(&ro).contains("read-only"));
        let eio = std::io::Error::from_raw_os_error(5);
        assert!(storage_advice(&eio).contains("kernel log"));
        for e in [full, quota, ro, eio] {
            assert!(is_storage_failure(&e), "{e}");
        }
        // A name a repository chose (ENAMETOOLONG) is not the disk's fault.
        assert!(!is_storage_failure(&std::io::Error::from_raw_os_error(36)));
    }

    #[test]
    fn write_atomic_replaces_the_file_with_the_given_mode() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        write_atomic(&path, b"one", 0o600).unwrap();
        write_atomic(&path, b"two", 0o600).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        // Only the file itself is left: no temporary files.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
