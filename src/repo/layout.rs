//! Where things live in a repository directory, and how files get there without a web server
//! ever serving half of one.
//!
//! ```text
//! DIR/repo.toml                  role, name, expiries
//! DIR/keys/*.pk8                 signing keys (dir 0700, files 0600), found by key id:
//!                                <role>.pk8 from init, <role>-<key id>.pk8 from rotations;
//!                                keys/retired/ holds the keys rotations replaced
//! DIR/public/metadata/           N.root.json, N.targets.json, N.snapshot.json, timestamp.json
//! DIR/public/targets/            <dir>/<sha256>.<base name>, e.g. bundles/c/<sha256>.1.0.1.raucb
//!                                (the TUF specification's layout), and hard links at tough's
//!                                <sha256>.<target name>, e.g. <sha256>.bundles/c/1.0.1.raucb
//! ```
//!
//! Every file is written under a temporary name in its final directory and renamed into place;
//! metadata is published with `timestamp.json` last, so a client that fetches during a publish
//! sees either the old repository or the new one.

use std::fs;
use std::path::{Path, PathBuf};

use futures_util::StreamExt;
use tokio::io::AsyncWriteExt;
use tough::schema::Target;

use super::RepoError;

/// Paths of one repository directory.
#[derive(Debug, Clone)]
pub struct Layout {
    pub dir: PathBuf,
    pub config: PathBuf,
    pub keys: PathBuf,
    pub public: PathBuf,
    pub metadata: PathBuf,
    pub targets: PathBuf,
}

impl Layout {
    pub fn new(dir: &Path) -> Layout {
        let public = dir.join("public");
        Layout {
            dir: dir.to_owned(),
            config: dir.join("repo.toml"),
            keys: dir.join("keys"),
            metadata: public.join("metadata"),
            targets: public.join("targets"),
            public,
        }
    }

    /// The trust root devices ship: version 1 of root.json.
    pub fn trusted_root(&self) -> PathBuf {
        self.metadata.join("1.root.json")
    }
}

/// The file tough's client fetches for `name` under consistent snapshots: tough prefixes the
/// whole target name with the hex SHA-256 (`<sha>.bundles/c/1.0.raucb`), not just the last
/// path component as the TUF specification describes. `ssu-repo verify` reads this one, and
/// so do agents released before the agent followed the specification; [`link_spec_layout`]
/// puts each file at the specification's place too.
pub fn target_file(targets_dir: &Path, name: &str, target: &Target) -> PathBuf {
    targets_dir.join(format!("{}.{name}", hex::encode(&target.hashes.sha256)))
}

/// Hard-links every target file stored at tough's layout (`<sha>.<dir>/<base>`) to the TUF
/// specification's (`<dir>/<sha>.<base>`), where devices and other TUF clients fetch it.
/// Idempotent; run before each metadata publish, so it also brings repositories published
/// before this layout up to date.
pub fn link_spec_layout(targets_dir: &Path) -> Result<usize, RepoError> {
    let mut linked = 0;
    let Ok(entries) = fs::read_dir(targets_dir) else {
        return Ok(0);
    };
    for e in entries.flatten() {
        let top = e.file_name().to_string_lossy().into_owned();
        let Some((sha, first)) = top.split_once('.') else {
            continue;
        };
        let is_sha = sha.len() == 64 && sha.bytes().all(|b| b.is_ascii_hexdigit());
        if !is_sha || !e.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        for file in files_below(&e.path()) {
            let Ok(rest) = file.strip_prefix(e.path()) else {
                continue;
            };
            let rel = Path::new(first).join(rest);
            let (Some(dir), Some(base)) = (rel.parent(), rel.file_name()) else {
                continue;
            };
            let spec = targets_dir
                .join(dir)
                .join(format!("{sha}.{}", base.to_string_lossy()));
            if spec.exists() {
                continue;
            }
            let parent = spec.parent().unwrap_or(targets_dir);
            fs::create_dir_all(parent).map_err(RepoError::io(parent, "cannot create"))?;
            let tmp = temp_sibling(&spec);
            let _ = fs::remove_file(&tmp);
            fs::hard_link(&file, &tmp)
                .or_else(|_| fs::copy(&file, &tmp).map(drop))
                .map_err(RepoError::io(&tmp, "cannot link a target file"))?;
            fs::rename(&tmp, &spec).map_err(RepoError::io(&spec, "cannot publish"))?;
            linked += 1;
        }
    }
    Ok(linked)
}

fn files_below(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir).into_iter().flatten().flatten() {
        let Ok(t) = e.file_type() else { continue };
        let name = e.file_name();
        if name.to_string_lossy().starts_with('.') {
            continue; // temporary files of a publish in progress
        }
        if t.is_dir() {
            out.extend(files_below(&e.path()));
        } else if t.is_file() {
            out.push(e.path());
        }
    }
    out
}

/// An exclusive lock on the repository (held on `repo.toml`) for the life of the value, so two
/// publishers cannot interleave versions.
#[derive(Debug)]
pub struct RepoLock(#[allow(dead_code)] fs::File);

impl RepoLock {
    pub fn acquire(config: &Path) -> Result<RepoLock, RepoError> {
        let file = fs::File::open(config).map_err(|e| RepoError::Config {
            path: config.to_owned(),
            reason: format!("cannot open (is this an ssu-repo directory?): {e}"),
        })?;
        file.lock()
            .map_err(RepoError::io(config, "cannot lock the repository"))?;
        Ok(RepoLock(file))
    }
}

/// A scratch directory removed when dropped (on success it is empty by then).
#[derive(Debug)]
pub struct Staging(PathBuf);

impl Staging {
    /// Creates `parent/.staging-<pid>`; `parent` is the directory its files are renamed into,
    /// so the renames never cross a filesystem.
    pub fn new(parent: &Path) -> Result<Staging, RepoError> {
        let path = parent.join(format!(".staging-{}", std::process::id()));
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path).map_err(RepoError::io(&path, "cannot create"))?;
        Ok(Staging(path))
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Moves the metadata files tough wrote into `staging` to `metadata_dir`, `timestamp.json`
/// last. A file that already exists with the same bytes (1.root.json) is left alone.
pub fn publish_metadata(staging: &Staging, metadata_dir: &Path) -> Result<Vec<String>, RepoError> {
    let mut names: Vec<String> = fs::read_dir(staging.path())
        .map_err(RepoError::io(staging.path(), "cannot list"))?
        .map(|e| {
            e.map(|e| e.file_name().to_string_lossy().into_owned())
                .map_err(RepoError::io(staging.path(), "cannot list"))
        })
        .collect::<Result<_, _>>()?;
    names.sort_by_key(|n| (n == "timestamp.json", n.clone()));
    let mut written = Vec::new();
    for name in names {
        let from = staging.path().join(&name);
        let to = metadata_dir.join(&name);
        if same_bytes(&from, &to) {
            continue;
        }
        sync_file(&from)?;
        fs::rename(&from, &to).map_err(RepoError::io(&to, "cannot publish"))?;
        written.push(name);
    }
    Ok(written)
}

fn same_bytes(a: &Path, b: &Path) -> bool {
    match (fs::read(a), fs::read(b)) {
        (Ok(x), Ok(y)) => x == y,
        _ => false,
    }
}

fn sync_file(path: &Path) -> Result<(), RepoError> {
    fs::File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(RepoError::io(path, "cannot sync"))
}

/// Copies `source` to its content-addressed place under `targets_dir`, checking that the bytes
/// copied are the ones `target` describes (the source may change between hashing and copying).
pub async fn install_target_file(
    source: &Path,
    targets_dir: &Path,
    name: &str,
    target: &Target,
) -> Result<PathBuf, RepoError> {
    let dest = target_file(targets_dir, name, target);
    let parent = dest.parent().unwrap_or(targets_dir).to_owned();
    tokio::fs::create_dir_all(&parent)
        .await
        .map_err(RepoError::io(&parent, "cannot create"))?;
    let tmp = temp_sibling(&dest);
    tokio::fs::copy(source, &tmp)
        .await
        .map_err(RepoError::io(source, "cannot copy into the repository"))?;
    finish_target_file(&tmp, &dest, name, target).await?;
    Ok(dest)
}

/// Writes a stream of verified bytes (tough's `read_target`) to `name`'s place under
/// `targets_dir`; nothing is left behind if the stream fails its length or hash check.
pub async fn install_target_stream<S>(
    mut stream: S,
    targets_dir: &Path,
    name: &str,
    target: &Target,
) -> Result<PathBuf, RepoError>
where
    S: futures_util::Stream<Item = Result<tough::Bytes, tough::error::Error>> + Unpin,
{
    let dest = target_file(targets_dir, name, target);
    let parent = dest.parent().unwrap_or(targets_dir).to_owned();
    tokio::fs::create_dir_all(&parent)
        .await
        .map_err(RepoError::io(&parent, "cannot create"))?;
    let tmp = temp_sibling(&dest);
    let result = async {
        let mut file = tokio::fs::File::create(&tmp)
            .await
            .map_err(RepoError::io(&tmp, "cannot create"))?;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(RepoError::tuf(format!("{name}: reading")))?;
            file.write_all(&chunk)
                .await
                .map_err(RepoError::io(&tmp, "cannot write"))?;
        }
        file.flush()
            .await
            .map_err(RepoError::io(&tmp, "cannot write"))
    }
    .await;
    if let Err(e) = result {
        let _ = tokio::fs::remove_file(&tmp).await;
        return Err(e);
    }
    finish_target_file(&tmp, &dest, name, target).await?;
    Ok(dest)
}

fn temp_sibling(dest: &Path) -> PathBuf {
    let file = dest
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    dest.with_file_name(format!(".{file}.tmp-{}", std::process::id()))
}

/// Re-hashes the copy, then renames it into place (or removes it on a mismatch).
async fn finish_target_file(
    tmp: &Path,
    dest: &Path,
    name: &str,
    want: &Target,
) -> Result<(), RepoError> {
    let got = match Target::from_path(tmp).await {
        Ok(t) => t,
        Err(e) => {
            let _ = tokio::fs::remove_file(tmp).await;
            return Err(RepoError::tuf(format!("{name}: hashing the copy"))(e));
        }
    };
    if got.length != want.length || got.hashes.sha256 != want.hashes.sha256 {
        let _ = tokio::fs::remove_file(tmp).await;
        return Err(RepoError::bad_arg(
            name,
            "the file changed while it was being copied; try again",
        ));
    }
    sync_file(tmp)?;
    tokio::fs::rename(tmp, dest)
        .await
        .map_err(RepoError::io(dest, "cannot publish"))
}
