//! Fetching and verifying one update source's TUF repository.
//!
//! tough does the TUF client workflow (root rotation, signatures, thresholds, expiry,
//! version rollback against its datastore, size limits). Two things it does not do for us,
//! which this module adds:
//! - tough's datastore writes files in place without fsync, so after a power cut it may be
//!   empty or truncated. The agent therefore keeps its own record of the highest verified
//!   version of each role in the store ([`RoleVersions`], the "floor"); a repository that
//!   verifies but is older than the floor is refused as a rollback, and a broken datastore
//!   is simply wiped and re-synced from the shipped root without losing that protection.
//! - Targets are turned into typed FS.25 records ([`schema`]); a target whose `custom.ssu`
//!   does not parse is refused on its own (with the reason) and never offered.

use std::path::{Path, PathBuf};
use std::time::Duration;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use tough::{ExpirationEnforcement, Limits, RepositoryLoader};
use url::Url;

use super::schema::{self, BUNDLE_PREFIX, BundleMeta, CUSTOM_KEY, DEVICE_PREFIX, DeviceMeta};
use super::transport::HttpTransport;

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
}

/// The highest verified version of each top-level role.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoleVersions {
    pub root: u64,
    pub timestamp: u64,
    pub snapshot: u64,
    pub targets: u64,
}

impl RoleVersions {
    /// The first role whose version is below `floor`'s, if any.
    pub fn below(&self, floor: &RoleVersions) -> Option<(&'static str, u64, u64)> {
        [
            ("root", self.root, floor.root),
            ("timestamp", self.timestamp, floor.timestamp),
            ("snapshot", self.snapshot, floor.snapshot),
            ("targets", self.targets, floor.targets),
        ]
        .into_iter()
        .find(|(_, have, min)| have < min)
    }

    /// The role-wise maximum.
    pub fn max(&self, other: &RoleVersions) -> RoleVersions {
        RoleVersions {
            root: self.root.max(other.root),
            timestamp: self.timestamp.max(other.timestamp),
            snapshot: self.snapshot.max(other.snapshot),
            targets: self.targets.max(other.targets),
        }
    }
}

/// A bundle target that verified and parsed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BundleTarget {
    pub name: String,
    pub length: u64,
    #[serde(with = "hex_sha")]
    pub sha256: [u8; 32],
    /// Where to download it from.
    pub url: Url,
    pub meta: BundleMeta,
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
}

/// Size limits for metadata files. Ours are small; these bound a hostile server.
fn limits() -> Limits {
    Limits {
        max_root_size: 64 * 1024,
        max_targets_size: 4 * 1024 * 1024,
        max_timestamp_size: 16 * 1024,
        max_snapshot_size: 256 * 1024,
        max_root_updates: 64,
    }
}

/// Loads and verifies `source`'s repository, refusing versions below `floor`.
///
/// `datastore` is tough's cache for this source (under the state directory, so freeze and
/// rollback protection survive reboots). If loading fails with the datastore present, the
/// datastore is wiped and loading is tried once more from the shipped root: a datastore left
/// truncated by a power cut must not lock the device out of updates; `floor` still guards
/// against rollback.
pub async fn fetch(
    source: &Source,
    client: &reqwest::Client,
    datastore: &Path,
    floor: &RoleVersions,
) -> Result<Verified, MetadataError> {
    let root = std::fs::read(&source.root).map_err(|e| MetadataError::Root {
        path: source.root.clone(),
        source: e,
    })?;
    crate::fsutil::create_private_dir(datastore).map_err(|e| MetadataError::Verify {
        source_name: source.name.clone(),
        message: format!(
            "cannot create the metadata cache {}: {e}",
            datastore.display()
        ),
        retryable: false,
    })?;
    // Verified versioned metadata, so unchanged snapshot and targets are not fetched again.
    let transport = HttpTransport::new(client.clone(), Duration::from_secs(60))
        .with_cache(datastore.join("versioned"));
    let repo = match load(source, &root, &transport, datastore).await {
        Ok(repo) => repo,
        Err(first) if datastore.exists() && !is_network(&first) => {
            tracing::warn!(
                source = %source.name,
                error = %first,
                "metadata cache unusable; re-syncing from the shipped root"
            );
            let _ = std::fs::remove_dir_all(datastore);
            let _ = crate::fsutil::create_private_dir(datastore);
            load(source, &root, &transport, datastore)
                .await
                .map_err(|e| verify_error(source, &e))?
        }
        Err(e) => return Err(verify_error(source, &e)),
    };

    transport.keep_fetched();

    let versions = RoleVersions {
        root: repo.root().signed.version.get(),
        timestamp: repo.timestamp().signed.version.get(),
        snapshot: repo.snapshot().signed.version.get(),
        targets: repo.targets().signed.version.get(),
    };
    if let Some((role, have, floor)) = versions.below(floor) {
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
    let mut out = Verified {
        source: source.name.clone(),
        versions,
        expires,
        bundles: Vec::new(),
        devices: Vec::new(),
        refused: Vec::new(),
        server_time: transport.server_date(),
    };
    for (name, target) in repo.targets().signed.targets_iter() {
        let name = name.raw().to_owned();
        let custom = target.custom.get(CUSTOM_KEY);
        if name.starts_with(BUNDLE_PREFIX) {
            let parsed = custom
                .ok_or_else(|| "no custom.ssu".to_owned())
                .and_then(|c| BundleMeta::from_custom(c).map_err(|e| e.to_string()));
            match parsed {
                Ok(meta) => {
                    let sha256: [u8; 32] = match target.hashes.sha256.as_ref().try_into() {
                        Ok(s) => s,
                        Err(_) => {
                            out.refused.push(RefusedTarget {
                                name,
                                reason: "sha256 is not 32 bytes".into(),
                            });
                            continue;
                        }
                    };
                    let url = target_url(source, &name, &sha256, consistent)?;
                    out.bundles.push(BundleTarget {
                        name,
                        length: target.length,
                        sha256,
                        url,
                        meta,
                    });
                }
                Err(reason) => out.refused.push(RefusedTarget { name, reason }),
            }
        } else if name.starts_with(DEVICE_PREFIX) {
            match custom
                .ok_or_else(|| "no custom.ssu".to_owned())
                .and_then(|c| DeviceMeta::from_custom(c).map_err(|e| e.to_string()))
            {
                Ok(meta) => out.devices.push(DeviceTarget { name, meta }),
                Err(reason) => out.refused.push(RefusedTarget { name, reason }),
            }
        }
    }
    Ok(out)
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

/// Where tough's layout puts a target: `<targets>/<sha256>.<name>` with consistent
/// snapshots, `<targets>/<name>` without. The result must stay below the base URL.
fn target_url(
    source: &Source,
    name: &str,
    sha256: &[u8; 32],
    consistent: bool,
) -> Result<Url, MetadataError> {
    let file = if consistent {
        format!("{}.{name}", hex::encode(sha256))
    } else {
        name.to_owned()
    };
    let bad = || MetadataError::TargetUrl {
        source_name: source.name.clone(),
        name: name.to_owned(),
    };
    let base = if source.targets_url.as_str().ends_with('/') {
        source.targets_url.clone()
    } else {
        Url::parse(&format!("{}/", source.targets_url)).map_err(|_| bad())?
    };
    let url = base.join(&file).map_err(|_| bad())?;
    if url.as_str().starts_with(base.as_str()) && !file.split('/').any(|s| s == ".." || s == ".") {
        Ok(url)
    } else {
        Err(bad())
    }
}

/// Transport failures are worth retrying later; they say nothing about the datastore.
fn is_network(e: &tough::error::Error) -> bool {
    matches!(e, tough::error::Error::Transport { .. })
}

fn verify_error(source: &Source, e: &tough::error::Error) -> MetadataError {
    // tough's messages name the role and the check that failed; keep the whole chain.
    let mut message = e.to_string();
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        let text = c.to_string();
        if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        cause = c.source();
    }
    MetadataError::Verify {
        source_name: source.name.clone(),
        message,
        retryable: is_network(e),
    }
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
pub use schema::SchemaError;

#[cfg(test)]
mod tests {
    use super::*;

    fn source(targets: &str) -> Source {
        Source {
            name: "manufacturer".into(),
            metadata_url: Url::parse("https://updates.example.com/metadata/").unwrap(),
            targets_url: Url::parse(targets).unwrap(),
            root: PathBuf::from("/nonexistent"),
        }
    }

    #[test]
    fn target_urls_follow_toughs_layout_and_stay_below_the_base() {
        let sha = [0xab; 32];
        let s = source("https://updates.example.com/targets");
        let u = target_url(&s, "bundles/gw/1.0.1.raucb", &sha, true).unwrap();
        assert_eq!(
            u.as_str(),
            format!(
                "https://updates.example.com/targets/{}.bundles/gw/1.0.1.raucb",
                "ab".repeat(32)
            )
        );
        let u = target_url(&s, "bundles/gw/1.0.1.raucb", &sha, false).unwrap();
        assert_eq!(
            u.as_str(),
            "https://updates.example.com/targets/bundles/gw/1.0.1.raucb"
        );
        for hostile in [
            "bundles/../../etc/passwd",
            "/etc/passwd",
            "bundles/./x",
            "https://evil.example.com/x",
            "//evil.example.com/x",
        ] {
            assert!(target_url(&s, hostile, &sha, false).is_err(), "{hostile}");
        }
    }

    #[test]
    fn floor_comparison_names_the_role() {
        let floor = RoleVersions {
            root: 1,
            timestamp: 5,
            snapshot: 3,
            targets: 3,
        };
        let older = RoleVersions {
            timestamp: 4,
            ..floor
        };
        assert_eq!(older.below(&floor), Some(("timestamp", 4, 5)));
        assert_eq!(floor.below(&floor), None);
        assert_eq!(older.max(&floor), floor);
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
}
