//! `DIR/repo.toml`: whose repository this is and how long each role's metadata stays valid.

use std::fmt;
use std::path::Path;
use std::str::FromStr;

use serde::Deserialize;

use super::{Expiry, RepoError};

/// Whose update server a repository is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RepoRole {
    /// Publishes bundles and per-model records.
    Manufacturer,
    /// Approves the manufacturer's targets by listing them with identical length and hashes.
    Operator,
}

impl RepoRole {
    pub fn as_str(self) -> &'static str {
        match self {
            RepoRole::Manufacturer => "manufacturer",
            RepoRole::Operator => "operator",
        }
    }
}

impl fmt::Display for RepoRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for RepoRole {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "manufacturer" => Ok(RepoRole::Manufacturer),
            "operator" => Ok(RepoRole::Operator),
            _ => Err(format!("{s:?}: expected manufacturer or operator")),
        }
    }
}

/// Validity periods of the four roles' metadata, counted from each signing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expiries {
    pub root: Expiry,
    pub targets: Expiry,
    pub snapshot: Expiry,
    pub timestamp: Expiry,
}

impl Default for Expiries {
    /// Root 1 year (see docs/ssu-repo.md, "Root expiry"), targets 1 year, snapshot 30 days, timestamp 7 days.
    fn default() -> Self {
        let p = |role, s| Expiry::parse(role, s, false).expect("valid default expiry");
        Expiries {
            root: p("root", "1y"),
            targets: p("targets", "1y"),
            snapshot: p("snapshot", "30d"),
            timestamp: p("timestamp", "7d"),
        }
    }
}

/// The parsed `repo.toml`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub role: RepoRole,
    pub name: String,
    pub expires: Expiries,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSettings {
    role: RepoRole,
    name: String,
    expires: RawExpiries,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawExpiries {
    root: String,
    targets: String,
    snapshot: String,
    timestamp: String,
}

impl Settings {
    pub fn load(path: &Path) -> Result<Settings, RepoError> {
        let text = std::fs::read_to_string(path).map_err(|e| RepoError::Config {
            path: path.to_owned(),
            reason: format!("cannot read (is this an ssu-repo directory?): {e}"),
        })?;
        Settings::parse(&text).map_err(|reason| RepoError::Config {
            path: path.to_owned(),
            reason,
        })
    }

    fn parse(text: &str) -> Result<Settings, String> {
        let raw: RawSettings = toml::from_str(text).map_err(|e| e.to_string())?;
        let p = |role, s: &str| Expiry::parse(role, s, false).map_err(|e| e.to_string());
        Ok(Settings {
            role: raw.role,
            name: raw.name,
            expires: Expiries {
                root: p("root", &raw.expires.root)?,
                targets: p("targets", &raw.expires.targets)?,
                snapshot: p("snapshot", &raw.expires.snapshot)?,
                timestamp: p("timestamp", &raw.expires.timestamp)?,
            },
        })
    }

    /// The file's text. (Our `toml` has no serializer; a JSON string literal is also a valid
    /// TOML basic string, which covers any name.)
    pub fn to_toml(&self) -> String {
        let q = |s: &str| serde_json::Value::String(s.to_owned()).to_string();
        format!(
            "# ssu-repo repository settings (written by `ssu-repo init`).\n\
             # role: manufacturer publishes bundles; operator approves them.\n\
             role = {}\n\
             name = {}\n\
             \n\
             # How long metadata stays valid after each signing (d = days, y = 365 days).\n\
             [expires]\n\
             root = {}\n\
             targets = {}\n\
             snapshot = {}\n\
             timestamp = {}\n",
            q(self.role.as_str()),
            q(&self.name),
            q(self.expires.root.text()),
            q(self.expires.targets.text()),
            q(self.expires.snapshot.text()),
            q(self.expires.timestamp.text()),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_round_trip_through_toml_even_with_odd_names() {
        let s = Settings {
            role: RepoRole::Operator,
            name: "Tele \"Net\" \\ Ünï\ncode".into(),
            expires: Expiries::default(),
        };
        assert_eq!(Settings::parse(&s.to_toml()).unwrap(), s);
    }

    #[test]
    fn unknown_keys_and_bad_values_are_refused() {
        let good = Settings {
            role: RepoRole::Manufacturer,
            name: "acme".into(),
            expires: Expiries::default(),
        }
        .to_toml();
        assert!(Settings::parse(&format!("{good}extra = 1\n")).is_err());
        assert!(Settings::parse(&good.replace("\"manufacturer\"", "\"vendor\"")).is_err());
        assert!(Settings::parse(&good.replace("\"7d\"", "\"-7d\"")).is_err());
    }
}
