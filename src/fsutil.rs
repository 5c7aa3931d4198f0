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
