//! Fetching and verifying one update source's TUF repository.
//!
//! tough does the TUF client workflow (root rotation, signatures, thresholds, expiry,
//! version rollback against its datastore, the delegation search). What this module adds:
//! - tough's datastore writes files in place without fsync, so after a power cut it may be
//!   empty or truncated. The agent therefore keeps its own record of the highest verified
//!   version of each role in the store ([`RoleVersions`], the "floor", see [`super::floor`]);
//!   a repository that verifies but is older than the floor is refused as a rollback.
//! - The trusted root is persisted here (fsync'd, [`super::trust`]) and the next check
//!   starts from it, not from the shipped `1.root.json`: tough only ever starts from the
//!   root it is handed, and walking the whole chain on every check costs a request per root
//!   version and ends at tough's cap on root updates.
//! - Byte bounds that hold against signed-but-hostile metadata ([`super::transport`]).
//! - Targets are resolved through TUF's delegation search and turned into typed FS.25
//!   records ([`super::targets`]); a target whose name or `custom.ssu` is unacceptable is
//!   refused on its own (with the reason) and never offered.

use std::path::{Path, PathBuf};
use std::time::Duration;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use tough::{ExpirationEnforcement, Limits, RepositoryLoader};
use url::Url;

pub use super::floor::{RoleKeys, RoleVersions};
use super::schema::{BundleMeta, DeviceMeta};
use super::transport::HttpTransport;
use super::{targets, trust};
use tough_errors::{classify, is_datastore};

mod tough_errors;

/// Default for [`Source::max_metadata_bytes`]: a check of our repositories reads a few KiB;
/// root rotations and a 4 MiB targets file fit well below this.
pub const DEFAULT_MAX_METADATA_BYTES: u64 = 8 * 1024 * 1024;

/// Where one source's repository lives and what the device trusts it with.
#[derive(Debug, Clone)]
pub struct Source {
    /// `manufacturer`, or an operator profile's name.
    pub name: String,
    /// Base URL of the `metadata/` directory.
    pub metadata_url: Url,
    /// Base URL of the `targets/` directory.
    pub targets_url: Url,
    /// The shipped root of trust (`1.root.json` of that repository).
    pub root: PathBuf,
    /// The most metadata bytes one check reads from the network, whatever the signed
    /// metadata declares.
    pub max_metadata_bytes: u64,
}

/// A bundle target that verified and parsed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BundleTarget {
    pub name: String,
    pub length: u64,
    #[serde(with = "hex_sha")]
    pub sha256: [u8; 32],
    /// Where to download it from (the TUF specification's layout).
    pub url: Url,
    /// Where tough's layout has it (`<sha256>.<whole name>`), which repositories published
    /// by older `ssu-repo` versions have only: tried when `url` is not found.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub legacy_url: Option<Url>,
    pub meta: BundleMeta,
}

/// Any target that verified, by name: its length, hash and download places (see
/// [`fetch_target`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetFile {
    pub name: String,
    pub length: u64,
    pub sha256: [u8; 32],
    /// The TUF specification's layout.
    pub url: Url,
    /// tough's layout, tried when `url` is not found (as for [`BundleTarget::legacy_url`]).
    pub legacy_url: Option<Url>,
}

/// A per-model record that verified and parsed.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceTarget {
    pub name: String,
    pub meta: DeviceMeta,
}

/// A target listed in signed metadata that the agent will not use, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefusedTarget {
    pub name: String,
    pub reason: String,
}

/// One source's verified repository, reduced to what the agent uses.
#[derive(Debug, Clone)]
pub struct Verified {
    pub source: String,
    pub versions: RoleVersions,
    /// The earliest expiry among the roles: the metadata is fresh until then.
    pub expires: Timestamp,
    pub bundles: Vec<BundleTarget>,
    pub devices: Vec<DeviceTarget>,
    pub refused: Vec<RefusedTarget>,
    /// The `Date` of the server's HTTPS responses during this load (trusted time once the
    /// metadata verified; `None` over plain HTTP or files).
    pub server_time: Option<Timestamp>,
}

/// Why a source's metadata could not be verified. Every variant means "do not trust
/// anything from this source now".
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MetadataError {
    #[error("cannot read the trusted root {path}: {source}")]
    Root {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{source_name}: metadata did not verify: {message}")]
    Verify {
        source_name: String,
        message: String,
        /// True when retrying later may help (network trouble), false for a bad repository.
        retryable: bool,
    },
    #[error(
        "{source_name}: {role} metadata version {have} is older than the {floor} already \
         verified (rollback refused)"
    )]
    Rollback {
        source_name: String,
        role: &'static str,
        have: u64,
        floor: u64,
    },
    #[error("{source_name}: the targets base URL cannot hold target {name}")]
    TargetUrl { source_name: String, name: String },
    #[error("{source_name}: target {name} refused: {reason}")]
    TargetRefused {
        source_name: String,
        /// Escaped (see [`targets::escape`]).
        name: String,
        reason: String,
    },
    /// The device's own storage failed while keeping the metadata cache (a full disk, a
    /// read-only file system): nothing is known about the repository, for or against it.
    #[error(
        "{source_name}: cannot keep update metadata in {}: {source}; {}",
        path.display(),
        crate::fsutil::storage_advice(source)
    )]
    Storage {
        source_name: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl MetadataError {
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            MetadataError::Verify {
                retryable: true,
                ..
            }
        )
    }

    /// The device's storage failed, not the repository: no reason to distrust what verified
    /// before, and never a refusal of an update.
    pub fn is_storage(&self) -> bool {
        matches!(self, MetadataError::Storage { .. })
    }
}

/// Size limits for metadata files whose length is not declared. Ours are small; these bound
/// a hostile server (the transport applies them to declared lengths too).
fn limits() -> Limits {
    Limits {
        max_root_size: 64 * 1024,
        max_targets_size: 4 * 1024 * 1024,
        max_timestamp_size: 16 * 1024,
        max_snapshot_size: 256 * 1024,
        max_root_updates: 64,
    }
}

/// Loads and verifies `source`'s repository, refusing versions below `floor` (as far as
/// key rotations leave it standing, see [`RoleVersions::released_by`]).
///
/// `datastore` is tough's cache for this source (under the state directory, so freeze and
/// rollback protection survive reboots). If loading fails because of the datastore itself
/// (unreadable, or a clock that stepped back behind its latest known time), tough's files are
/// removed and loading is tried once more: that state must not lock the device out; `floor`
/// still guards against rollback. Any other failure is the repository's, and the cache of
/// verified metadata and the persisted root stay as they are.
pub async fn fetch(
    source: &Source,
    client: &reqwest::Client,
    datastore: &Path,
    floor: &RoleVersions,
) -> Result<Verified, MetadataError> {
    check(source, client, datastore, floor)
        .await
        .map(|(verified, _)| verified)
}

/// [`fetch`], and then the one target named `name`, looked up the way [`fetch`] resolves
/// bundles (TUF's delegation search, the same name and URL rules): `None` when no role
/// trusted for the name lists it. For a client that downloads a target by name rather than
/// the agent's typed records (the TUF conformance suite's client,
/// `examples/tuf-conformance-client.rs`).
pub async fn fetch_target(
    source: &Source,
    client: &reqwest::Client,
    datastore: &Path,
    floor: &RoleVersions,
    name: &str,
) -> Result<(Verified, Option<TargetFile>), MetadataError> {
    let (verified, repo) = check(source, client, datastore, floor).await?;
    let consistent = repo.root().signed.consistent_snapshot;
    let found = targets::locate(repo.targets(), source, consistent, name).map_err(|reason| {
        MetadataError::TargetRefused {
            source_name: source.name.clone(),
            name: targets::escape(name),
            reason,
        }
    })?;
    Ok((verified, found))
}

/// The whole check: the verified repository, and what the agent takes from it.
async fn check(
    source: &Source,
    client: &reqwest::Client,
    datastore: &Path,
    floor: &RoleVersions,
) -> Result<(Verified, tough::Repository), MetadataError> {
    let shipped = std::fs::read(&source.root).map_err(|e| MetadataError::Root {
        path: source.root.clone(),
        source: e,
    })?;
    crate::fsutil::create_private_dir(datastore).map_err(|e| MetadataError::Storage {
        source_name: source.name.clone(),
        path: datastore.to_owned(),
        source: e,
    })?;
    let start = trust::start_root(datastore, &shipped);
    // Verified versioned metadata, so unchanged snapshot and targets are not fetched again.
    let transport = HttpTransport::new(client.clone(), Duration::from_secs(60))
        .with_cache(datastore.join("versioned"))
        .with_budget(source.max_metadata_bytes);
    let repo = match load(source, &start.bytes, &transport, datastore).await {
        Err(first) if is_datastore(&first) => {
            tracing::warn!(
                source = %source.name,
                error = %first,
                "metadata datastore unusable; clearing it and loading again"
            );
            trust::clear_tough_files(datastore);
            load(source, &start.bytes, &transport, datastore).await
        }
        other => other,
    };
    let repo = match repo {
        Ok(repo) => repo,
        Err(e) => {
            // The roots verified before the failure are trusted from now on (see
            // `trust::newest_chained`).
            if let Some(root) = trust::newest_chained(&start.bytes, &transport.fetched_roots()) {
                trust::persist_root(datastore, &shipped, &root);
            }
            return Err(classify(source, datastore, e));
        }
    };

    transport.keep_fetched();
    // tough verified the root chain: that holds whatever the other roles turn out to be.
    if repo.root().signed.version.get() > start.version
        && supported_spec_version(&repo.root().signed.spec_version)
    {
        trust::persist_root(datastore, &shipped, repo.root());
    }
    check_spec_versions(source, &repo)?;

    let keys = RoleKeys::of(repo.root());
    let versions = RoleVersions {
        root: repo.root().signed.version.get(),
        timestamp: repo.timestamp().signed.version.get(),
        snapshot: repo.snapshot().signed.version.get(),
        targets: repo.targets().signed.version.get(),
        keys: keys.clone(),
    };
    let standing = floor.released_by(&start.keys, &keys);
    if floor.released_in(&standing) {
        tracing::info!(
            source = %source.name,
            "timestamp or snapshot keys rotated: their version floors start again (TUF 5.3.11)"
        );
    }
    if let Some((role, have, floor)) = versions.below(&standing) {
        return Err(MetadataError::Rollback {
            source_name: source.name.clone(),
            role,
            have,
            floor,
        });
    }
    let expires = [
        repo.root().signed.expires,
        repo.timestamp().signed.expires,
        repo.snapshot().signed.expires,
        repo.targets().signed.expires,
    ]
    .into_iter()
    .min()
    .unwrap_or(Timestamp::MIN);

    let consistent = repo.root().signed.consistent_snapshot;
    let reduced = targets::reduce(repo.targets(), source, consistent);
    let verified = Verified {
        source: source.name.clone(),
        versions,
        expires,
        bundles: reduced.bundles,
        devices: reduced.devices,
        refused: reduced.refused,
        server_time: transport.server_date(),
    };
    Ok((verified, repo))
}

async fn load(
    source: &Source,
    root: &[u8],
    transport: &HttpTransport,
    datastore: &Path,
) -> Result<tough::Repository, tough::error::Error> {
    RepositoryLoader::new(
        &root,
        source.metadata_url.clone(),
        source.targets_url.clone(),
    )
    .transport(transport.clone())
    .limits(limits())
    .datastore(datastore)
    .expiration_enforcement(ExpirationEnforcement::Safe)
    .load()
    .await
}

/// TUF metadata states the specification version it follows; a client must not interpret
/// metadata of another major version (spec 4.2, "spec_version").
fn check_spec_versions(source: &Source, repo: &tough::Repository) -> Result<(), MetadataError> {
    let mut all = vec![
        ("root", repo.root().signed.spec_version.as_str()),
        ("timestamp", repo.timestamp().signed.spec_version.as_str()),
        ("snapshot", repo.snapshot().signed.spec_version.as_str()),
        ("targets", repo.targets().signed.spec_version.as_str()),
    ];
    let mut stack = vec![&repo.targets().signed];
    while let Some(t) = stack.pop() {
        for role in t.delegations.iter().flat_map(|d| &d.roles) {
            if let Some(signed) = &role.targets {
                all.push((role.name.as_str(), signed.signed.spec_version.as_str()));
                stack.push(&signed.signed);
            }
        }
    }
    match all.into_iter().find(|(_, v)| !supported_spec_version(v)) {
        None => Ok(()),
        Some((role, v)) => Err(MetadataError::Verify {
            source_name: source.name.clone(),
            message: format!(
                "{} metadata follows TUF specification version \"{}\"; this agent reads 1.x",
                targets::escape(role),
                targets::escape(v)
            ),
            retryable: false,
        }),
    }
}

/// `1.<minor>.<patch>` or `1.<minor>`, numbers only. The short form is what python-tuf
/// accepts too, and what real repositories state (sigstore's root says `1.0`).
pub(super) fn supported_spec_version(v: &str) -> bool {
    let parts: Vec<&str> = v.split('.').collect();
    (2..=3).contains(&parts.len())
        && parts[0] == "1"
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.len() <= 9 && p.bytes().all(|b| b.is_ascii_digit()))
}

mod hex_sha {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(v))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 32], D::Error> {
        let s = String::deserialize(d)?;
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out).map_err(serde::de::Error::custom)?;
        Ok(out)
    }
}

/// Re-exported for callers that only need the schema error type.
pub use super::schema::SchemaError;

#[cfg(test)]
mod tests {
    use super::*;

    fn source(targets: &str) -> Source {
        Source {
            name: "manufacturer".into(),
            metadata_url: Url::parse("https://updates.example.com/metadata/").unwrap(),
            targets_url: Url::parse(targets).unwrap(),
            root: PathBuf::from("/nonexistent"),
            max_metadata_bytes: DEFAULT_MAX_METADATA_BYTES,
        }
    }

    #[test]
    fn spec_versions_of_another_major_are_refused() {
        for ok in ["1.0.0", "1.0.31", "1.10.2", "1.0"] {
            assert!(supported_spec_version(ok), "{ok}");
        }
        for bad in [
            "2.0.0", "banana", "1", "2.0", "", "1.0.0.0", "0.9.0", "1..0", "1.0.x", "1.",
        ] {
            assert!(!supported_spec_version(bad), "{bad}");
        }
    }

    /// A check that rotates root and then fails (here: no timestamp at all) still moves the
    /// trusted root on (TUF 5.3.8); the next check starts from version 2 even when the
    /// server then withholds `2.root.json`.
    #[tokio::test]
    async fn roots_verified_before_a_failure_are_kept() {
        const V1: &[u8] = include_bytes!("../../tests/data/tuf/roots/1.root.json");
        const V2: &[u8] = include_bytes!("../../tests/data/tuf/roots/2.root.json");
        let dir = tempfile::tempdir().unwrap();
        let metadata = dir.path().join("metadata");
        std::fs::create_dir(&metadata).unwrap();
        std::fs::write(metadata.join("2.root.json"), V2).unwrap();
        std::fs::write(dir.path().join("shipped.json"), V1).unwrap();
        let src = Source {
            metadata_url: Url::from_directory_path(&metadata).unwrap(),
            root: dir.path().join("shipped.json"),
            ..source("file:///nonexistent/targets/")
        };
        let datastore = dir.path().join("tuf");
        let client = reqwest::Client::new();
        let err = fetch(&src, &client, &datastore, &RoleVersions::default())
            .await
            .unwrap_err();
        assert_eq!(trust::start_root(&datastore, V1).version, 2, "{err}");

        std::fs::remove_file(metadata.join("2.root.json")).unwrap();
        fetch(&src, &client, &datastore, &RoleVersions::default())
            .await
            .unwrap_err();
        assert_eq!(trust::start_root(&datastore, V1).version, 2);
    }

    #[tokio::test]
    async fn a_missing_root_is_a_clear_error() {
        let client = reqwest::Client::new();
        let err = fetch(
            &source("https://x.example/targets/"),
            &client,
            Path::new("/nonexistent/datastore"),
            &RoleVersions::default(),
        )
        .await
        .unwrap_err();
        assert!(
            err.to_string()
                .contains("cannot read the trusted root /nonexistent"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn a_cache_that_cannot_be_written_is_the_device_s_storage_not_the_repository() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("1.root.json");
        std::fs::write(&root, b"{}").unwrap();
        let mut s = source("https://x.example/targets/");
        s.root = root.clone();
        // Under a regular file, no directory can be created (ENOTDIR), as on a broken disk.
        let err = fetch(
            &s,
            &reqwest::Client::new(),
            &root.join("tuf"),
            &RoleVersions::default(),
        )
        .await
        .unwrap_err();
        assert!(err.is_storage(), "{err:?}");
        assert!(!err.is_retryable());
        let text = err.to_string();
        assert!(text.contains("cannot keep update metadata in"), "{text}");
        assert!(!text.contains("did not verify"), "{text}");
    }
}
