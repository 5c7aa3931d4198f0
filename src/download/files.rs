//! The cache directory: `<sha256hex>.partial` while a target is being written,
//! `<sha256hex>.verified` once its length and SHA-256 matched. Nothing here follows a symlink:
//! entries are inspected with `lstat`, the partial file is opened with `O_NOFOLLOW`, and a
//! symlink found under one of our names is removed (the link, never its target).

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use aws_lc_rs::digest;
use tracing::{info, warn};
use url::Url;

use super::error::DownloadError;

/// Received bytes are hashed and written in batches of this size, off the async runtime.
const FLUSH_BYTES: usize = 1 << 20;

/// The read size when re-hashing a partial file after a restart.
const REHASH_BYTES: usize = 256 * 1024;

/// `<dir>/<sha256hex>.partial` and `<dir>/<sha256hex>.verified`.
#[derive(Debug, Clone)]
pub(super) struct Paths {
    pub partial: PathBuf,
    pub verified: PathBuf,
}

impl Paths {
    pub fn new(dir: &Path, sha256: &[u8; 32]) -> Paths {
        let name = hex::encode(sha256);
        Paths {
            partial: dir.join(format!("{name}.partial")),
            verified: dir.join(format!("{name}.verified")),
        }
    }
}

/// Whether a verified file of `length` bytes is at `path`. Anything else under that name (a
/// symlink, a file of another length) is removed.
pub(super) fn verified_exists(path: &Path, length: u64) -> Result<bool, DownloadError> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_file() && m.len() == length => Ok(true),
        Ok(_) => {
            warn!(path = %path.display(), "removing an unexpected entry under a verified name");
            fs::remove_file(path).map_err(|e| DownloadError::io(path, e))?;
            Ok(false)
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(DownloadError::io(path, e)),
    }
}

/// The length of the partial file at `path`, if there is a regular file. Does not modify
/// anything.
pub(super) fn partial_len(path: &Path) -> Result<Option<u64>, DownloadError> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_file() => Ok(Some(m.len())),
        Ok(_) => Ok(None),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(DownloadError::io(path, e)),
    }
}

/// Bytes available to us on the filesystem holding `dir` (`f_bavail`: without the blocks
/// reserved for root, so the check stays honest when the agent runs as root).
pub(super) fn free_space(dir: &Path) -> Result<u64, DownloadError> {
    let st = rustix::fs::statvfs(dir).map_err(|e| DownloadError::io(dir, e.into()))?;
    Ok(st.f_bavail.saturating_mul(st.f_frsize))
}

/// The partial file of one target, open, locked and hashed up to what it holds.
///
/// Received bytes collect in `buf`; each full batch is hashed and written by a blocking job
/// while the next batch is being received (a write can also stall for long when the kernel
/// throttles dirty pages on slow flash, and must not stall the runtime). One job at a time,
/// so the hasher sees the bytes in file order.
///
/// Invariant: the hasher has seen (or the job in flight will feed it) exactly the bytes on
/// disk, then `buf` follows; so [`Partial::accepted`] is where the next request starts and the
/// digest needs no second pass over the data.
pub(super) struct Partial {
    path: PathBuf,
    /// File and hasher while no job is in flight; `None` after a failed job (the partial is
    /// then unusable and the fetch ends).
    idle: Option<(File, digest::Context)>,
    /// The job in flight and how many bytes it writes; it hands file and hasher back.
    job: Option<(u64, tokio::task::JoinHandle<Job>)>,
    /// Received, not yet handed to a job.
    buf: Vec<u8>,
    /// The previous job's buffer, for reuse.
    spare: Vec<u8>,
    /// Bytes written by finished jobs.
    written: u64,
}

/// What a hash-and-write job hands back.
type Job = (File, digest::Context, Vec<u8>, io::Result<()>);

impl Partial {
    /// Opens (or creates) the partial file at `path` for a target of `length` bytes, takes an
    /// exclusive lock on it, starts it over if it is longer than `length`, and hashes what it
    /// holds — the one re-read of a resumed download.
    pub async fn open(path: &Path, length: u64) -> Result<Partial, DownloadError> {
        let io_err = |e| DownloadError::io(path, e);
        if fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink()) {
            warn!(path = %path.display(), "removing a symlink planted under the partial name");
            fs::remove_file(path).map_err(io_err)?;
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .mode(0o644)
            // Never write through a symlink planted under our name.
            .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
            .open(path)
            .map_err(io_err)?;
        let (file, locked) = tokio::task::spawn_blocking(move || {
            let locked = lock(&file);
            (file, locked)
        })
        .await
        .map_err(|e| io_err(io::Error::other(e)))?;
        if !locked.map_err(io_err)? || !same_file(&file, path) {
            return Err(DownloadError::Busy {
                path: path.to_path_buf(),
            });
        }
        let meta = file.metadata().map_err(io_err)?;
        if !meta.is_file() {
            return Err(io_err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "not a regular file",
            )));
        }
        let mut have = meta.len();
        if have > length {
            info!(path = %path.display(), have, length, "partial file longer than the target; starting over");
            file.set_len(0).map_err(io_err)?;
            have = 0;
        }
        let (file, hasher) = tokio::task::spawn_blocking(move || hash_prefix(file, have))
            .await
            .map_err(|e| io_err(io::Error::other(e)))?
            .map_err(io_err)?;
        Ok(Partial {
            path: path.to_path_buf(),
            idle: Some((file, hasher)),
            job: None,
            buf: Vec::with_capacity(FLUSH_BYTES),
            spare: Vec::with_capacity(FLUSH_BYTES),
            written: have,
        })
    }

    /// Bytes received and hashed so far (on disk, being written, or about to be).
    pub fn accepted(&self) -> u64 {
        self.written + self.job.as_ref().map_or(0, |(n, _)| *n) + self.buf.len() as u64
    }

    /// Appends received bytes; hands a full batch to a job (after the previous one is done).
    pub async fn push(&mut self, data: &[u8]) -> Result<(), DownloadError> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= FLUSH_BYTES {
            self.start_job().await?;
        }
        Ok(())
    }

    /// Writes out everything received.
    pub async fn flush(&mut self) -> Result<(), DownloadError> {
        self.start_job().await?;
        self.wait().await
    }

    /// Waits for the job in flight, if any.
    async fn wait(&mut self) -> Result<(), DownloadError> {
        let Some((n, job)) = self.job.take() else {
            return Ok(());
        };
        let (file, hasher, mut buf, result) = job
            .await
            .map_err(|e| DownloadError::io(&self.path, io::Error::other(e)))?;
        result.map_err(|e| DownloadError::io(&self.path, e))?;
        self.written += n;
        buf.clear();
        self.spare = buf;
        self.idle = Some((file, hasher));
        Ok(())
    }

    /// Hands `buf` to a new job, once the previous one is done.
    async fn start_job(&mut self) -> Result<(), DownloadError> {
        self.wait().await?;
        if self.buf.is_empty() {
            return Ok(());
        }
        let Some((file, mut hasher)) = self.idle.take() else {
            return Err(self.unusable());
        };
        let buf = std::mem::replace(&mut self.buf, std::mem::take(&mut self.spare));
        let offset = self.written;
        let n = buf.len() as u64;
        let job = tokio::task::spawn_blocking(move || {
            hasher.update(&buf);
            let result = file.write_all_at(&buf, offset);
            (file, hasher, buf, result)
        });
        self.job = Some((n, job));
        Ok(())
    }

    /// Empties the partial file: the server sent the whole file again.
    pub async fn restart(&mut self) -> Result<(), DownloadError> {
        self.wait().await?;
        let Some((file, _)) = self.idle.take() else {
            return Err(self.unusable());
        };
        file.set_len(0)
            .map_err(|e| DownloadError::io(&self.path, e))?;
        self.idle = Some((file, digest::Context::new(&digest::SHA256)));
        self.buf.clear();
        self.written = 0;
        Ok(())
    }

    /// Checks the digest of everything received against `sha256`; on a match makes the file
    /// durable and renames it to `verified` (then syncs the directory, so the rename survives
    /// a power cut). On a mismatch the partial file is deleted.
    pub async fn finish(
        mut self,
        url: &Url,
        verified: &Path,
        sha256: &[u8; 32],
    ) -> Result<(), DownloadError> {
        self.flush().await?;
        let Some((file, hasher)) = self.idle.take() else {
            return Err(self.unusable());
        };
        let actual = hasher.finish();
        if actual.as_ref() != sha256 {
            self.discard();
            return Err(DownloadError::HashMismatch {
                url: url.to_string(),
                path: self.path.clone(),
                expected: hex::encode(sha256),
                actual: hex::encode(actual.as_ref()),
            });
        }
        let partial = self.path.clone();
        let verified = verified.to_path_buf();
        tokio::task::spawn_blocking(move || -> Result<(), DownloadError> {
            file.sync_all()
                .map_err(|e| DownloadError::io(&partial, e))?;
            fs::rename(&partial, &verified).map_err(|e| DownloadError::io(&partial, e))?;
            let dir = verified.parent().unwrap_or(Path::new("."));
            File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(|e| DownloadError::io(dir, e))
        })
        .await
        .map_err(|e| DownloadError::io(&self.path, io::Error::other(e)))?
    }

    /// Keeps what was received for a later fetch: writes the buffer out (best effort) and
    /// removes the file if it holds nothing.
    pub async fn keep(mut self) {
        if let Err(e) = self.flush().await {
            warn!(path = %self.path.display(), error = %e, "could not save received bytes");
        }
        if self.written == 0 {
            self.discard();
        }
    }

    /// Deletes the partial file.
    pub fn discard(&self) {
        match fs::remove_file(&self.path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => warn!(path = %self.path.display(), error = %e, "cannot remove partial file"),
        }
    }

    fn unusable(&self) -> DownloadError {
        DownloadError::io(
            &self.path,
            io::Error::other("partial file unusable after an earlier failure"),
        )
    }
}

/// How long to wait for the lock of a partial file. A fetch that was cancelled may still
/// have one batch being written (milliseconds); a download running elsewhere holds it for its
/// whole length, and waiting that out would be pointless.
const LOCK_WAIT: Duration = Duration::from_secs(2);

/// Takes `file`'s exclusive lock, waiting up to [`LOCK_WAIT`]; `Ok(false)` if it stayed
/// taken. Blocking.
fn lock(file: &File) -> io::Result<bool> {
    let deadline = Instant::now() + LOCK_WAIT;
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(true),
            Err(fs::TryLockError::WouldBlock) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(fs::TryLockError::WouldBlock) => return Ok(false),
            Err(fs::TryLockError::Error(e)) => return Err(e),
        }
    }
}

/// Whether `path` still names the file we opened and locked (a download that held the lock
/// may have renamed it to `.verified` meanwhile).
fn same_file(file: &File, path: &Path) -> bool {
    match (file.metadata(), fs::symlink_metadata(path)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

/// Hashes the first `len` bytes of `file`.
fn hash_prefix(file: File, len: u64) -> io::Result<(File, digest::Context)> {
    let mut hasher = digest::Context::new(&digest::SHA256);
    let mut buf = vec![0u8; REHASH_BYTES.min(len.try_into().unwrap_or(usize::MAX))];
    let mut pos = 0u64;
    while pos < len {
        let want = buf.len().min((len - pos).try_into().unwrap_or(usize::MAX));
        let n = file.read_at(&mut buf[..want], pos)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("partial file shrank to {pos} bytes while being hashed"),
            ));
        }
        hasher.update(&buf[..n]);
        pos += n as u64;
    }
    Ok((file, hasher))
}

/// `<64 lowercase hex>.partial` or `.verified` → the SHA-256 it names.
fn parse_name(name: &str) -> Option<[u8; 32]> {
    let stem = name
        .strip_suffix(".partial")
        .or_else(|| name.strip_suffix(".verified"))?;
    if stem.len() != 64 || !stem.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return None;
    }
    let mut sha = [0u8; 32];
    hex::decode_to_slice(stem, &mut sha).ok()?;
    Some(sha)
}

/// Removes every `*.partial` and `*.verified` in `dir` whose SHA-256 is not in `keep`.
/// Symlinks under such names are removed as links; directories and other names are foreign
/// and left alone; a partial file locked by a running download is skipped.
pub(super) fn cleanup(dir: &Path, keep: &[[u8; 32]]) -> Result<Vec<PathBuf>, DownloadError> {
    let mut removed = Vec::new();
    let entries = fs::read_dir(dir).map_err(|e| DownloadError::io(dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| DownloadError::io(dir, e))?;
        let name = entry.file_name();
        let Some(sha) = name.to_str().and_then(parse_name) else {
            continue;
        };
        if keep.contains(&sha) {
            continue;
        }
        let path = entry.path();
        // DirEntry::file_type does not follow symlinks.
        let kind = entry.file_type().map_err(|e| DownloadError::io(&path, e))?;
        if kind.is_dir() {
            continue;
        }
        if kind.is_file() && in_use(&path) {
            info!(path = %path.display(), "not removing a file in use by a download");
            continue;
        }
        match fs::remove_file(&path) {
            Ok(()) => removed.push(path),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(DownloadError::io(&path, e)),
        }
    }
    if !removed.is_empty() {
        info!(dir = %dir.display(), count = removed.len(), "removed stale downloads");
    }
    Ok(removed)
}

/// Whether a download holds the lock on `path`.
fn in_use(path: &Path) -> bool {
    let Ok(file) = OpenOptions::new()
        .read(true)
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
        .open(path)
    else {
        return false;
    };
    matches!(file.try_lock(), Err(fs::TryLockError::WouldBlock))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_64_lowercase_hex_with_our_suffixes() {
        let hex = "ab".repeat(32);
        assert_eq!(parse_name(&format!("{hex}.partial")), Some([0xab; 32]));
        assert_eq!(parse_name(&format!("{hex}.verified")), Some([0xab; 32]));
        for foreign in [
            format!("{hex}.tmp"),
            format!("{}.partial", "AB".repeat(32)),
            format!("{}.partial", "ab".repeat(31)),
            format!("{hex}x.partial"),
            "notes.txt".to_string(),
            ".partial".to_string(),
        ] {
            assert_eq!(parse_name(&foreign), None, "{foreign}");
        }
    }

    #[tokio::test]
    async fn a_partial_is_hashed_once_across_flushes_and_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.partial");
        let data: Vec<u8> = (0..3 * FLUSH_BYTES + 17)
            .map(|i| (i * 7 % 251) as u8)
            .collect();
        let sha: [u8; 32] = digest::digest(&digest::SHA256, &data)
            .as_ref()
            .try_into()
            .unwrap();
        let url = Url::parse("http://127.0.0.1/x").unwrap();

        // First run: some garbage, a restart, then the first half.
        let mut p = Partial::open(&path, data.len() as u64).await.unwrap();
        p.push(b"garbage").await.unwrap();
        p.restart().await.unwrap();
        let half = data.len() / 2;
        for piece in data[..half].chunks(10_000) {
            p.push(piece).await.unwrap();
        }
        assert_eq!(p.accepted(), half as u64);
        p.keep().await;
        assert_eq!(fs::read(&path).unwrap(), &data[..half]);

        // Second run: resumes from disk, the digest covers both halves.
        let mut p = Partial::open(&path, data.len() as u64).await.unwrap();
        assert_eq!(p.accepted(), half as u64);
        p.push(&data[half..]).await.unwrap();
        let verified = dir.path().join("p.verified");
        p.finish(&url, &verified, &sha).await.unwrap();
        assert_eq!(fs::read(&verified).unwrap(), data);
        assert!(!path.exists());
    }

    #[tokio::test]
    async fn a_second_writer_is_refused_while_the_first_holds_the_lock() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.partial");
        let first = Partial::open(&path, 10).await.unwrap();
        let err = Partial::open(&path, 10).await.err().unwrap();
        assert!(matches!(err, DownloadError::Busy { .. }), "{err}");
        assert!(err.is_retryable());
        drop(first);
        Partial::open(&path, 10).await.unwrap();
    }

    #[tokio::test]
    async fn a_symlink_under_the_partial_name_is_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let outside = dir.path().join("outside");
        fs::write(&outside, b"precious").unwrap();
        let path = dir.path().join("p.partial");
        std::os::unix::fs::symlink(&outside, &path).unwrap();
        let mut p = Partial::open(&path, 100).await.unwrap();
        assert_eq!(
            p.accepted(),
            0,
            "the link's target was not taken as a partial"
        );
        p.push(b"new").await.unwrap();
        p.keep().await;
        assert_eq!(fs::read(&outside).unwrap(), b"precious");
        assert!(fs::symlink_metadata(&path).unwrap().is_file());
        assert_eq!(fs::read(&path).unwrap(), b"new");
    }
}
