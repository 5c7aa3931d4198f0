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
