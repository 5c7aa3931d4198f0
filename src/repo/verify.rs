//! `verify`: load a published repository the way a device does (tough, `file://`, expiry
//! enforced), then check every target's FS.25 fields and file.

use std::fmt;
use std::path::{Path, PathBuf};

use futures_util::StreamExt;
use jiff::{SignedDuration, Timestamp};
use tough::schema::Target;
use tough::{ExpirationEnforcement, Repository, TargetName};

use super::layout::Layout;
use super::{RepoError, RepoRole, Settings, tuf};
use crate::metadata::schema::{
    BUNDLE_PREFIX, BundleMeta, CUSTOM_KEY, DEVICE_PREFIX, DeviceMeta, SchemaError,
};

/// The FS.25 fields of one target, parsed and validated as the device will.
#[derive(Debug, Clone, PartialEq)]
pub enum Described {
    Bundle(BundleMeta),
    Device(DeviceMeta),
}

impl fmt::Display for Described {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Described::Bundle(m) => {
                write!(
                    f,
                    "{}, patch level {}",
                    m.kind.as_str(),
                    m.security_patch_level
                )?;
                match m.cves.len() {
                    0 => Ok(()),
                    1 => write!(f, ", 1 CVE"),
                    n => write!(f, ", {n} CVEs"),
                }
            }
            Described::Device(d) => {
                if !d.model.is_empty() {
                    write!(f, "{}, ", d.model)?;
                }
                write!(f, "supported until {}", d.support_end)?;
                if let Some(w) = d.wave_start {
                    write!(f, ", wave starts {w}")?;
                }
                Ok(())
            }
        }
    }
}

/// Parses `custom.ssu` by the target's prefix and checks the name is the one the fields imply
/// (so `bundles/a/2.0.raucb` cannot carry the fields of version 1.0).
pub fn describe(name: &str, target: &Target) -> Result<Described, RepoError> {
    let invalid = |field: &str, reason: String| RepoError::Invalid {
        target: name.to_owned(),
        source: SchemaError {
            field: field.to_owned(),
            reason,
        },
    };
    let custom = target
        .custom
        .get(CUSTOM_KEY)
        .ok_or_else(|| invalid(CUSTOM_KEY, "custom.ssu is missing".into()))?;
    let (described, expected) = if name.starts_with(BUNDLE_PREFIX) {
        let m = BundleMeta::from_custom(custom).map_err(RepoError::invalid(name))?;
        let expected = m.target_name();
        (Described::Bundle(m), expected)
    } else if name.starts_with(DEVICE_PREFIX) {
        let d = DeviceMeta::from_custom(custom).map_err(RepoError::invalid(name))?;
        let expected = d.target_name();
        (Described::Device(d), expected)
    } else {
        return Err(invalid(
            "name",
            format!("not under {BUNDLE_PREFIX} or {DEVICE_PREFIX}"),
        ));
    };
    if expected != name {
        return Err(invalid(
            "name",
            format!("the fields in custom.ssu name this target {expected}"),
        ));
    }
    Ok(described)
}

/// One role's metadata as loaded.
#[derive(Debug, Clone)]
pub struct RoleStatus {
    pub role: &'static str,
    pub version: u64,
    pub expires: Timestamp,
}

/// One target as loaded and checked.
#[derive(Debug, Clone)]
pub struct TargetStatus {
    pub name: String,
    pub length: u64,
    pub sha256: String,
    /// `None` when its fields were refused (see the report's problems).
    pub described: Option<Described>,
}

/// What `verify` found. The repository is good when `problems` is empty.
#[derive(Debug, Clone)]
pub struct VerifyReport {
    pub public: PathBuf,
    /// From `repo.toml`, when `DIR` is a repository directory rather than a bare public one.
    pub role: Option<RepoRole>,
    pub name: Option<String>,
    pub roles: Vec<RoleStatus>,
    pub targets: Vec<TargetStatus>,
    pub problems: Vec<String>,
}

impl VerifyReport {
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty()
    }
}

impl fmt::Display for VerifyReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.role, &self.name) {
            (Some(role), Some(name)) => {
                writeln!(f, "{role} repository {name:?} ({})", self.public.display())?
            }
            _ => writeln!(f, "repository {}", self.public.display())?,
        }
        for r in &self.roles {
            writeln!(f, "  {:<9} v{:<4} expires {}", r.role, r.version, r.expires)?;
        }
        for t in &self.targets {
            write!(f, "  {}  {} bytes", t.name, t.length)?;
            match &t.described {
                Some(d) => writeln!(f, "  {d}")?,
                None => writeln!(f)?,
            }
        }
        for p in &self.problems {
            writeln!(f, "problem: {p}")?;
        }
        if self.is_ok() {
            write!(f, "ok: {} targets verified", self.targets.len())
        } else {
            write!(f, "FAILED: {} problems", self.problems.len())
        }
    }
}

/// The public directory of `dir`: `dir/public` for a repository directory, else `dir` itself
/// (a copy of someone's published site).
fn public_of(dir: &Path) -> (PathBuf, Option<Settings>) {
    let layout = Layout::new(dir);
    if layout.config.exists() {
        let settings = Settings::load(&layout.config).ok();
        (layout.public, settings)
    } else {
        (dir.to_owned(), None)
    }
}

/// Loads `DIR/public` trusting `DIR/public/metadata/1.root.json`, enforcing expiry; then
/// checks each target's `custom.ssu`, name and file. A repository that does not load at all
/// (bad signature, expired, missing file) is an `Err`; per-target problems are collected.
pub async fn verify(dir: &Path) -> Result<VerifyReport, RepoError> {
    let (public, settings) = public_of(dir);
    let root = public.join("metadata").join("1.root.json");
    let repo = tuf::load(&public, &root, ExpirationEnforcement::Safe).await?;
    let mut report = VerifyReport {
        roles: role_statuses(&repo),
        role: settings.as_ref().map(|s| s.role),
        name: settings.map(|s| s.name),
        public,
        targets: Vec::new(),
        problems: Vec::new(),
    };
    let mut names: Vec<&TargetName> = repo.targets().signed.targets.keys().collect();
    names.sort_by(|a, b| a.raw().cmp(b.raw()));
    for name in names {
        let target = &repo.targets().signed.targets[name];
        let (status, problems) = check_target(&repo, name, target).await;
        report.targets.push(status);
        report.problems.extend(problems);
    }
    Ok(report)
}

/// How long before each role's expiry `verify` warns: the default gives each role's owner the
/// time its renewal takes — root a quarter year (an offline signing ceremony), targets a month
/// (a release with the offline targets key), snapshot a week and timestamp a day (a
/// `refresh` timer that stopped).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WarnWindows {
    pub root: SignedDuration,
    pub targets: SignedDuration,
    pub snapshot: SignedDuration,
    pub timestamp: SignedDuration,
}

impl Default for WarnWindows {
    fn default() -> Self {
        let days = |d: i64| SignedDuration::from_hours(24 * d);
        WarnWindows {
            root: days(90),
            targets: days(30),
            snapshot: days(7),
            timestamp: days(1),
        }
    }
}

impl WarnWindows {
    /// Applies `--warn-within SPEC`: `DURATION` for every role, or `ROLE=DURATION`.
    pub fn set(&mut self, spec: &str) -> Result<(), RepoError> {
        let (role, text) = match spec.split_once('=') {
            Some((r, t)) => (Some(r.trim()), t),
            None => (None, spec),
        };
        let d = super::Expiry::parse("warning", text, false)?.duration();
        match role {
            None => {
                *self = WarnWindows {
                    root: d,
                    targets: d,
                    snapshot: d,
                    timestamp: d,
                }
            }
            Some("root") => self.root = d,
            Some("targets") => self.targets = d,
            Some("snapshot") => self.snapshot = d,
            Some("timestamp") => self.timestamp = d,
            Some(other) => {
                return Err(RepoError::bad_arg(
                    "--warn-within",
                    format!("{other:?}: expected root, targets, snapshot or timestamp"),
                ));
            }
        }
        Ok(())
    }

    fn of(&self, role: &str) -> SignedDuration {
        match role {
            "root" => self.root,
            "targets" => self.targets,
            "snapshot" => self.snapshot,
            _ => self.timestamp,
        }
    }
}

/// A warning for each role that expires within its window after `now`, saying what renews
/// it.
pub fn expiry_warnings(roles: &[RoleStatus], windows: &WarnWindows, now: Timestamp) -> Vec<String> {
    roles
        .iter()
        .filter_map(|r| {
            let left = r.expires.duration_since(now);
            if left > windows.of(r.role) {
                return None;
            }
            let days = left.as_secs() / 86_400;
            let hours = (left.as_secs() % 86_400) / 3600;
            let fix = match r.role {
                "root" => "ssu-repo renew-root (or a rotation) signs a new root",
                "targets" => "the next add/device/approve signs new targets",
                _ => "ssu-repo refresh signs a new snapshot and timestamp",
            };
            Some(format!(
                "{} v{} expires {} (in {days} d {hours} h); {fix}",
                r.role, r.version, r.expires
            ))
        })
        .collect()
}

fn role_statuses(repo: &Repository) -> Vec<RoleStatus> {
    let (root, targets) = (&repo.root().signed, &repo.targets().signed);
    let (snapshot, timestamp) = (&repo.snapshot().signed, &repo.timestamp().signed);
    vec![
        RoleStatus {
            role: "root",
            version: root.version.get(),
            expires: root.expires,
        },
        RoleStatus {
            role: "targets",
            version: targets.version.get(),
            expires: targets.expires,
        },
        RoleStatus {
            role: "snapshot",
            version: snapshot.version.get(),
            expires: snapshot.expires,
        },
        RoleStatus {
            role: "timestamp",
            version: timestamp.version.get(),
            expires: timestamp.expires,
        },
    ]
}

async fn check_target(
    repo: &Repository,
    name: &TargetName,
    target: &Target,
) -> (TargetStatus, Vec<String>) {
    let mut problems = Vec::new();
    let described = match describe(name.raw(), target) {
        Ok(d) => Some(d),
        Err(e) => {
            problems.push(e.to_string());
            None
        }
    };
    match read_whole_target(repo, name, target).await {
        Ok(bytes) => {
            if let (Some(Described::Device(d)), Some(bytes)) = (&described, bytes) {
                let content: Result<DeviceMeta, _> = serde_json::from_slice(&bytes);
                if content.as_ref().ok() != Some(d) {
                    problems.push(format!(
                        "{}: the file's JSON differs from custom.ssu",
                        name.raw()
                    ));
                }
            }
        }
        Err(e) => problems.push(e),
    }
    let status = TargetStatus {
        name: name.raw().to_owned(),
        length: target.length,
        sha256: hex::encode(&target.hashes.sha256),
        described,
    };
    (status, problems)
}

/// Fetches the target through tough (which checks length and hash); keeps the bytes of the
/// small per-model records only.
async fn read_whole_target(
    repo: &Repository,
    name: &TargetName,
    target: &Target,
) -> Result<Option<Vec<u8>>, String> {
    let fail =
        |e: &dyn std::error::Error| format!("{}: file: {}", name.raw(), crate::text::causes(e));
    let stream = repo
        .read_target(name)
        .await
        .map_err(|e| fail(&e))?
        .ok_or_else(|| format!("{}: listed but not found", name.raw()))?;
    let keep = name.raw().starts_with(DEVICE_PREFIX);
    let mut stream = Box::pin(stream);
    let mut bytes = Vec::new();
    let mut length = 0u64;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| fail(&e))?;
        length += chunk.len() as u64;
        if keep {
            bytes.extend_from_slice(&chunk);
        }
    }
    if length != target.length {
        return Err(format!(
            "{}: file is {length} bytes, listed as {}",
            name.raw(),
            target.length
        ));
    }
    Ok(keep.then_some(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(role: &'static str, expires: &str) -> RoleStatus {
        RoleStatus {
            role,
            version: 3,
            expires: expires.parse().unwrap(),
        }
    }

    #[test]
    fn warns_for_each_role_inside_its_window_only() {
        let now: Timestamp = "2030-01-01T00:00:00Z".parse().unwrap();
        let roles = [
            status("root", "2030-03-01T00:00:00Z"), // 59 days: inside 90
            status("targets", "2030-03-01T00:00:00Z"), // outside 30
            status("snapshot", "2030-01-07T12:00:00Z"), // 6.5 days: inside 7
            status("timestamp", "2030-01-02T06:00:00Z"), // 30 h: outside 1 day
        ];
        let w = expiry_warnings(&roles, &WarnWindows::default(), now);
        assert_eq!(w.len(), 2, "{w:?}");
        assert!(
            w[0].starts_with("root v3 expires 2030-03-01T00:00:00Z (in 59 d 0 h)"),
            "{w:?}"
        );
        assert!(w[0].contains("renew-root"), "{w:?}");
        assert!(
            w[1].starts_with("snapshot v3") && w[1].contains("refresh"),
            "{w:?}"
        );
    }

    #[test]
    fn windows_are_set_for_all_roles_or_one() {
        let mut w = WarnWindows::default();
        w.set("root=2y").unwrap();
        assert_eq!(w.root, SignedDuration::from_hours(2 * 365 * 24));
        assert_eq!(w.targets, WarnWindows::default().targets);
        w.set("10d").unwrap();
        assert_eq!(w.timestamp, SignedDuration::from_hours(240));
        assert_eq!(w.root, SignedDuration::from_hours(240));
        for bad in ["delegated=1d", "root=soon", "-1d", ""] {
            assert!(w.set(bad).is_err(), "{bad}");
        }
    }
}
