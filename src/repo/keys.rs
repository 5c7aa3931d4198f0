//! Signing keys: Ed25519 keys as unencrypted PKCS#8 DER files in `DIR/keys/`, found by key
//! id (`init` names them `<role>.pk8`, rotations `<role>-<key id>.pk8`), and public keys as
//! TUF key JSON (`FILE.pub`, for the offline root flow).
//!
//! DER rather than PEM because tough's [`LocalKeySource`] hands the file's bytes straight to
//! `Ed25519KeyPair::from_pkcs8`, which takes DER; a PEM Ed25519 key is "unrecognized" (tough
//! decodes PEM only for RSA). With DER, tuftool and any other tough-based tool can use the
//! same files. They are PKCS#8 v1 (RFC 5208), which OpenSSL 3.0 reads
//! (`openssl pkey -inform DER -in keys/root.pk8`); it refuses aws-lc-rs's v2 documents.

use std::collections::HashSet;
use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::Ed25519KeyPair;
use tough::key_source::{KeySource, LocalKeySource};
use tough::schema::decoded::{Decoded, Hex};
use tough::schema::key::Key;
use tough::schema::{RoleType, Root};
use tough::sign::{Sign, parse_keypair};

use super::RepoError;

/// The four top-level roles, in the order keys are generated.
pub const ROLES: [RoleType; 4] = [
    RoleType::Root,
    RoleType::Targets,
    RoleType::Snapshot,
    RoleType::Timestamp,
];

/// What `init` generates.
pub const KEY_TYPE: &str = "ed25519";

/// `DIR/keys/<role>.pk8`.
pub fn key_path(keys_dir: &Path, role: RoleType) -> PathBuf {
    keys_dir.join(format!("{role}.pk8"))
}

/// Creates `keys_dir` (0700) and one key per role (0600); returns each role's public key.
pub fn generate(keys_dir: &Path) -> Result<Vec<(RoleType, Key)>, RepoError> {
    fs::DirBuilder::new()
        .mode(0o700)
        .create(keys_dir)
        .map_err(RepoError::io(keys_dir, "cannot create the key directory"))?;
    let rng = SystemRandom::new();
    let mut public = Vec::new();
    for role in ROLES {
        let path = key_path(keys_dir, role);
        let pkcs8 = Ed25519KeyPair::generate_pkcs8v1(&rng).map_err(|_| RepoError::Key {
            path: path.clone(),
            reason: "cannot generate an Ed25519 key".into(),
        })?;
        let key = tuf_key(&path, pkcs8.as_ref())?;
        write_secret(&path, pkcs8.as_ref())?;
        public.push((role, key));
    }
    Ok(public)
}

/// The TUF public key of a PKCS#8 private key, through the same parser tough signs with.
fn tuf_key(path: &Path, pkcs8: &[u8]) -> Result<Key, RepoError> {
    let pair = parse_keypair(pkcs8).map_err(|e| RepoError::Key {
        path: path.to_owned(),
        reason: format!("tough cannot use this key: {e}"),
    })?;
    Ok(pair.tuf_key())
}

/// A private key file: where it is, and its TUF public key and key id.
#[derive(Debug, Clone)]
pub struct PrivateKey {
    pub path: PathBuf,
    pub key: Key,
    pub id: Decoded<Hex>,
}

/// A key named on the command line: a private key (PKCS#8 DER) or a public key (TUF JSON,
/// as `keygen` writes to `FILE.pub` and root.json lists).
#[derive(Debug, Clone)]
pub enum KeyFile {
    Private(PrivateKey),
    Public { path: PathBuf, key: Key },
}

impl KeyFile {
    pub fn key(&self) -> &Key {
        match self {
            KeyFile::Private(k) => &k.key,
            KeyFile::Public { key, .. } => key,
        }
    }
}

/// The first 8 hex digits of a key id: enough to tell keys apart in messages and file names.
pub fn short_id(id: &Decoded<Hex>) -> String {
    hex::encode(id).chars().take(8).collect()
}

/// Key files are a few hundred bytes; anything much larger is not one.
const MAX_KEY_FILE: u64 = 64 * 1024;

/// Reads a private key (PKCS#8 DER, which must be private to its owner) or a public key
/// (TUF key JSON), telling which from the content.
pub fn read_key_file(path: &Path) -> Result<KeyFile, RepoError> {
    let fail = |reason: String| RepoError::Key {
        path: path.to_owned(),
        reason,
    };
    let mut bytes = Vec::new();
    fs::File::open(path)
        .and_then(|f| f.take(MAX_KEY_FILE + 1).read_to_end(&mut bytes))
        .map_err(|e| fail(format!("cannot read: {e}")))?;
    if bytes.len() as u64 > MAX_KEY_FILE {
        return Err(fail("too large to be a key file".into()));
    }
    if bytes.trim_ascii_start().starts_with(b"{") {
        let key: Key = serde_json::from_slice(&bytes)
            .map_err(|e| fail(format!("not a TUF public key (JSON): {e}")))?;
        key_id(path, &key)?;
        return Ok(KeyFile::Public {
            path: path.to_owned(),
            key,
        });
    }
    check_private(path)?;
    let key = tuf_key(path, &bytes).map_err(|_| {
        fail(
            "not a private key (PKCS#8 DER, as ssu-repo keygen writes) nor a TUF public key \
              (JSON)"
                .into(),
        )
    })?;
    let id = key_id(path, &key)?;
    Ok(KeyFile::Private(PrivateKey {
        path: path.to_owned(),
        key,
        id,
    }))
}

fn key_id(path: &Path, key: &Key) -> Result<Decoded<Hex>, RepoError> {
    key.key_id().map_err(|e| RepoError::Key {
        path: path.to_owned(),
        reason: format!("cannot compute the key id: {e}"),
    })
}

/// Every private key in `keys_dir` (`*.pk8`; `retired/` is not searched). Each must be
/// private to its owner, like ssh refuses a readable key.
pub fn ring(keys_dir: &Path) -> Result<Vec<PrivateKey>, RepoError> {
    let entries = match fs::read_dir(keys_dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(RepoError::io(keys_dir, "cannot list the keys")(e)),
    };
    let mut paths: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "pk8") && p.is_file())
        .collect();
    paths.sort();
    let mut out = Vec::new();
    for path in paths {
        match read_key_file(&path)? {
            KeyFile::Private(k) => out.push(k),
            KeyFile::Public { path, .. } => {
                return Err(RepoError::Key {
                    path,
                    reason: "a public key where a private key (.pk8) belongs".into(),
                });
            }
        }
    }
    Ok(out)
}

/// Key sources that sign `role` under `root`: the keys of `ring` that `root` lists for it,
/// each key once. Refused unless they reach the role's threshold, naming what is missing.
pub fn signers(
    keys_dir: &Path,
    ring: &[PrivateKey],
    root: &Root,
    role: RoleType,
) -> Result<Vec<Box<dyn KeySource>>, RepoError> {
    let Some(role_keys) = root.roles.get(&role) else {
        return Err(RepoError::Key {
            path: keys_dir.to_owned(),
            reason: format!("root v{} lists no {role} keys", root.version),
        });
    };
    let mut seen = HashSet::new();
    let found: Vec<&PrivateKey> = ring
        .iter()
        .filter(|k| role_keys.keyids.contains(&k.id) && seen.insert(k.id.clone()))
        .collect();
    let need = role_keys.threshold.get();
    if (found.len() as u64) < need {
        let ids: Vec<String> = role_keys.keyids.iter().map(short_id).collect();
        return Err(RepoError::Key {
            path: keys_dir.to_owned(),
            reason: format!(
                "the {role} key is needed here: {role} metadata needs {need} signature(s) of \
                 its keys ({}) under root v{}; found {} of them among the *.pk8 files",
                ids.join(", "),
                root.version,
                found.len()
            ),
        });
    }
    Ok(found
        .into_iter()
        .map(|k| {
            Box::new(LocalKeySource {
                path: k.path.clone(),
            }) as Box<dyn KeySource>
        })
        .collect())
}

/// Generates a new Ed25519 key in memory: its PKCS#8 v1 document and TUF public key.
pub fn new_key() -> Result<(Vec<u8>, Key), RepoError> {
    let pkcs8 =
        Ed25519KeyPair::generate_pkcs8v1(&SystemRandom::new()).map_err(|_| RepoError::Key {
            path: PathBuf::from("(new key)"),
            reason: "cannot generate an Ed25519 key".into(),
        })?;
    let key = tuf_key(Path::new("(new key)"), pkcs8.as_ref())?;
    Ok((pkcs8.as_ref().to_vec(), key))
}

/// `keygen`: writes a new private key to `path` (0600, never over an existing file) and its
/// public key to `path.pub`.
pub fn keygen(path: &Path) -> Result<PrivateKey, RepoError> {
    let public = public_path(path);
    for p in [path, public.as_path()] {
        if p.exists() {
            return Err(RepoError::Key {
                path: p.to_owned(),
                reason: "already exists; keygen never overwrites a key".into(),
            });
        }
    }
    let (pkcs8, key) = new_key()?;
    write_secret(path, &pkcs8)?;
    let mut json = serde_json::to_vec_pretty(&key).map_err(|e| RepoError::Key {
        path: public.clone(),
        reason: e.to_string(),
    })?;
    json.push(b'\n');
    if let Err(e) = fs::write(&public, json) {
        let _ = fs::remove_file(path);
        return Err(RepoError::io(&public, "cannot write")(e));
    }
    let id = key_id(path, &key)?;
    Ok(PrivateKey {
        path: path.to_owned(),
        key,
        id,
    })
}

/// `FILE.pub` of `FILE`.
pub fn public_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".pub");
    PathBuf::from(s)
}

/// Stores a private key in `keys_dir` as `<role>-<key id>.pk8` (a copy of `pkcs8`), where
/// later commands find it; returns the path.
pub fn store(keys_dir: &Path, role: RoleType, pkcs8: &[u8]) -> Result<PathBuf, RepoError> {
    let key = tuf_key(Path::new("(new key)"), pkcs8)?;
    let id = key_id(keys_dir, &key)?;
    let path = keys_dir.join(format!("{role}-{}.pk8", short_id(&id)));
    write_secret(&path, pkcs8)?;
    Ok(path)
}

/// Moves key files whose ids `root` no longer lists into `keys_dir/retired/` (kept, not
/// deleted: a key is evidence, and old metadata was signed with it). Returns what moved.
pub fn retire_unlisted(keys_dir: &Path, root: &Root) -> Result<Vec<PathBuf>, RepoError> {
    let retired = keys_dir.join("retired");
    let mut moved = Vec::new();
    for k in ring(keys_dir)? {
        if root.keys.contains_key(&k.id) {
            continue;
        }
        fs::DirBuilder::new()
            .mode(0o700)
            .recursive(true)
            .create(&retired)
            .map_err(RepoError::io(&retired, "cannot create"))?;
        let name = k.path.file_name().unwrap_or_default();
        let mut to = retired.join(name);
        if to.exists() {
            to = retired.join(format!("{}.{}", name.to_string_lossy(), short_id(&k.id)));
        }
        fs::rename(&k.path, &to).map_err(RepoError::io(&k.path, "cannot retire"))?;
        moved.push(to);
    }
    Ok(moved)
}

/// Writes a new file readable by its owner only (created 0600, never widened by the umask).
fn write_secret(path: &Path, bytes: &[u8]) -> Result<(), RepoError> {
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(RepoError::io(path, "cannot create key file"))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(RepoError::io(path, "cannot write key file"))
}

fn check_private(path: &Path) -> Result<(), RepoError> {
    let meta = fs::metadata(path).map_err(|e| RepoError::Key {
        path: path.to_owned(),
        reason: format!("cannot read: {e}"),
    })?;
    let mode = meta.permissions().mode();
    if mode & 0o077 != 0 {
        return Err(RepoError::Key {
            path: path.to_owned(),
            reason: format!(
                "permissions {:o} are too open; the key must be readable by its owner only \
                 (chmod 600)",
                mode & 0o777
            ),
        });
    }
    Ok(())
}
