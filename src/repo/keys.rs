//! Signing keys: one Ed25519 key per TUF role, as unencrypted PKCS#8 DER files.
//!
//! DER rather than PEM because tough's [`LocalKeySource`] hands the file's bytes straight to
//! `Ed25519KeyPair::from_pkcs8`, which takes DER; a PEM Ed25519 key is "unrecognized" (tough
//! decodes PEM only for RSA). With DER, tuftool and any other tough-based tool can use the
//! same files. They are PKCS#8 v1 (RFC 5208), which OpenSSL 3.0 reads
//! (`openssl pkey -inform DER -in keys/root.pk8`); it refuses aws-lc-rs's v2 documents.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::Ed25519KeyPair;
use tough::key_source::{KeySource, LocalKeySource};
use tough::schema::RoleType;
use tough::schema::key::Key;
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

/// Key sources for `roles`, after checking each file exists and is private to its owner
/// (like ssh, a key others can read is refused rather than used).
pub fn sources(keys_dir: &Path, roles: &[RoleType]) -> Result<Vec<Box<dyn KeySource>>, RepoError> {
    roles
        .iter()
        .map(|&role| {
            let path = key_path(keys_dir, role);
            check_private(&path, role)?;
            Ok(Box::new(LocalKeySource { path }) as Box<dyn KeySource>)
        })
        .collect()
}

fn check_private(path: &Path, role: RoleType) -> Result<(), RepoError> {
    let meta = fs::metadata(path).map_err(|e| RepoError::Key {
        path: path.to_owned(),
        reason: format!("the {role} key is needed here: {e}"),
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
