//! The device identity key: what signs patch-status reports.
//!
//! Key access goes through the [`Signer`] trait so that a key which never leaves a TPM or a
//! secure element can replace the file-backed [`FileSigner`] (`docs/report.md`, "Hardware-backed
//! keys"). The file key is Ed25519 as unencrypted PKCS#8 DER, the format `ssu-repo` uses for
//! its TUF keys and `openssl genpkey -algorithm ED25519 -outform DER` writes.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ED25519, Ed25519KeyPair, KeyPair, UnparsedPublicKey};

/// The one signature algorithm reports use.
pub const ALGORITHM: &str = "ed25519";
/// Length of an Ed25519 public key.
pub const PUBLIC_KEY_LEN: usize = 32;
/// File name of the generated key in the state directory.
pub const FILE_NAME: &str = "identity.pk8";
/// Largest key file read: a PKCS#8 Ed25519 key is under 100 bytes.
const MAX_KEY_FILE: u64 = 4096;

/// Why the identity key cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    #[error("identity key {path}: {reason}")]
    File { path: PathBuf, reason: String },
    #[error("the identity key cannot sign: {0}")]
    Sign(String),
}

/// Whatever holds the device's private key. Signing is the only use of the private key; it
/// never has to leave the implementation.
///
/// A hardware-backed implementation (TPM 2.0 via tss-esapi, a PKCS#11 secure element) keeps
/// the key in the chip, returns the public key it reports, signs inside the chip and says
/// `"tpm"` or similar in [`Signer::storage`]. It may block (a TPM takes tens of
/// milliseconds): callers run [`Signer::sign`] off the async threads.
pub trait Signer: Send + Sync {
    /// The raw Ed25519 public key (32 bytes).
    fn public_key(&self) -> [u8; PUBLIC_KEY_LEN];
    /// An Ed25519 signature over `message`.
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, KeyError>;
    /// Where the private key lives, as the report states it: `file` for [`FileSigner`].
    fn storage(&self) -> &'static str;
}

/// The stable id of a public key: lowercase hex SHA-256 of its 32 raw bytes. It changes only
/// when the key does, so a hub can index devices by it.
pub fn key_id(public_key: &[u8]) -> String {
    hex::encode(aws_lc_rs::digest::digest(
        &aws_lc_rs::digest::SHA256,
        public_key,
    ))
}

/// Checks an Ed25519 `signature` of `message` by `public_key`.
pub fn verify(public_key: &[u8], message: &[u8], signature: &[u8]) -> bool {
    UnparsedPublicKey::new(&ED25519, public_key)
        .verify(message, signature)
        .is_ok()
}

/// An Ed25519 key in a PKCS#8 file.
pub struct FileSigner {
    pair: Ed25519KeyPair,
}

impl std::fmt::Debug for FileSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "FileSigner({})", key_id(&self.public_key()))
    }
}

impl Signer for FileSigner {
    fn public_key(&self) -> [u8; PUBLIC_KEY_LEN] {
        let mut out = [0u8; PUBLIC_KEY_LEN];
        out.copy_from_slice(self.pair.public_key().as_ref());
        out
    }

    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, KeyError> {
        self.pair
            .try_sign(message)
            .map(|s| s.as_ref().to_vec())
            .map_err(|_| KeyError::Sign("Ed25519 signing failed".into()))
    }

    fn storage(&self) -> &'static str {
        "file"
    }
}

impl FileSigner {
    /// Loads the integrator's key from `provisioned`, or else the key generated into
    /// `state_dir` — generating it on first use.
    pub fn open(state_dir: &Path, provisioned: Option<&Path>) -> Result<FileSigner, KeyError> {
        match provisioned {
            Some(path) => FileSigner::load(path),
            None => FileSigner::load_or_generate(&state_dir.join(FILE_NAME)),
        }
    }

    /// Loads a PKCS#8 Ed25519 key, refusing one that others may read (like ssh does): a key
    /// anyone on the device can copy identifies nothing.
    pub fn load(path: &Path) -> Result<FileSigner, KeyError> {
        use std::io::Read;
        let err = |reason: String| KeyError::File {
            path: path.to_owned(),
            reason,
        };
        let file = std::fs::File::open(path).map_err(|e| err(format!("cannot open: {e}")))?;
        let meta = file.metadata().map_err(|e| err(e.to_string()))?;
        if !meta.is_file() {
            return Err(err("is not a regular file".into()));
        }
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(err(format!(
                "permissions {mode:o} are too open; the key must be readable by its owner \
                 only (chmod 600)"
            )));
        }
        let mut bytes = Vec::new();
        file.take(MAX_KEY_FILE + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| err(format!("cannot read: {e}")))?;
        if bytes.len() as u64 > MAX_KEY_FILE {
            return Err(err(format!("larger than {MAX_KEY_FILE} bytes")));
        }
        let pair = Ed25519KeyPair::from_pkcs8(&bytes).map_err(|e| {
            err(format!(
                "not an Ed25519 private key in PKCS#8 DER ({e}); convert one with \
                 `openssl pkey -in KEY.pem -outform DER -out KEY.pk8`"
            ))
        })?;
        Ok(FileSigner { pair })
    }

    /// The generated key at `path`; created (0600, atomically) when there is none. An
    /// existing but unreadable or damaged key is an error, never silently replaced: a new key
    /// would be a new device identity to every hub that knows this one.
    fn load_or_generate(path: &Path) -> Result<FileSigner, KeyError> {
        match std::fs::symlink_metadata(path) {
            Ok(_) => FileSigner::load(path),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let pkcs8 =
                    Ed25519KeyPair::generate_pkcs8v1(&SystemRandom::new()).map_err(|_| {
                        KeyError::File {
                            path: path.to_owned(),
                            reason: "cannot generate an Ed25519 key".into(),
                        }
                    })?;
                crate::fsutil::write_atomic(path, pkcs8.as_ref(), 0o600).map_err(|e| {
                    KeyError::File {
                        path: path.to_owned(),
                        reason: format!("cannot write: {e}"),
                    }
                })?;
                tracing::info!(path = %path.display(), "generated the device identity key");
                FileSigner::load(path)
            }
            Err(e) => Err(KeyError::File {
                path: path.to_owned(),
                reason: e.to_string(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_once_private_and_stable() {
        let dir = tempfile::tempdir().unwrap();
        let a = FileSigner::open(dir.path(), None).unwrap();
        let path = dir.path().join(FILE_NAME);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let b = FileSigner::open(dir.path(), None).unwrap();
        assert_eq!(
            a.public_key(),
            b.public_key(),
            "the key is kept, not regenerated"
        );
        assert_eq!(key_id(&a.public_key()).len(), 64);
    }

    #[test]
    fn signatures_verify_with_the_public_key_only() {
        let dir = tempfile::tempdir().unwrap();
        let a = FileSigner::open(dir.path(), None).unwrap();
        let other = tempfile::tempdir().unwrap();
        let b = FileSigner::open(other.path(), None).unwrap();
        let sig = a.sign(b"report").unwrap();
        assert!(verify(&a.public_key(), b"report", &sig));
        assert!(!verify(&a.public_key(), b"reporT", &sig));
        assert!(!verify(&b.public_key(), b"report", &sig));
        let mut bad = sig.clone();
        bad[0] ^= 1;
        assert!(!verify(&a.public_key(), b"report", &bad));
        assert!(!verify(&a.public_key(), b"report", &sig[..63]));
    }

    fn write_mode(path: &Path, bytes: &[u8], mode: u32) {
        std::fs::write(path, bytes).unwrap();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    #[test]
    fn provisioned_keys_are_used_and_bad_ones_refused_with_the_reason() {
        let dir = tempfile::tempdir().unwrap();
        let pkcs8 = Ed25519KeyPair::generate_pkcs8v1(&SystemRandom::new()).unwrap();
        let good = dir.path().join("good.pk8");
        write_mode(&good, pkcs8.as_ref(), 0o600);
        let state = dir.path().join("state");
        let s = FileSigner::open(&state, Some(&good)).unwrap();
        let expected = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
        assert_eq!(&s.public_key()[..], expected.public_key().as_ref());
        assert!(!state.join(FILE_NAME).exists(), "nothing generated");

        let cases: [(&str, &[u8], u32, &str); 4] = [
            ("open.pk8", pkcs8.as_ref(), 0o644, "too open"),
            (
                "garbage.pk8",
                b"-----BEGIN PRIVATE KEY-----\n",
                0o600,
                "PKCS#8",
            ),
            ("empty.pk8", b"", 0o600, "PKCS#8"),
            ("huge.pk8", &[0u8; 5000], 0o600, "larger than"),
        ];
        for (name, bytes, mode, want) in cases {
            let p = dir.path().join(name);
            write_mode(&p, bytes, mode);
            let e = FileSigner::open(&state, Some(&p)).unwrap_err().to_string();
            assert!(e.contains(want) && e.contains(name), "{name}: {e}");
        }
        let e = FileSigner::open(&state, Some(&dir.path().join("missing")))
            .unwrap_err()
            .to_string();
        assert!(e.contains("cannot open"), "{e}");
        let e = FileSigner::open(&state, Some(dir.path()))
            .unwrap_err()
            .to_string();
        assert!(e.contains("regular file"), "{e}");
    }

    #[test]
    fn a_damaged_generated_key_is_not_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        write_mode(&path, b"damaged", 0o600);
        assert!(FileSigner::open(dir.path(), None).is_err());
        assert_eq!(std::fs::read(&path).unwrap(), b"damaged");
    }
}
