//! Why `ssu-repo` refused or failed: one enum, each variant naming the file, target or role.

use std::path::PathBuf;

use crate::metadata::schema::SchemaError;

/// Everything [`crate::repo`] can refuse or fail with.
///
/// Refusals (`NotEmpty`, `Descriptor`, `Invalid`, `TargetConflict`, `WrongRole`, `NotListed`,
/// `BadArgument`, `Expiry`) are detected before anything is written, so the repository is
/// unchanged; the others are I/O or signing failures.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RepoError {
    /// A file or directory could not be read or written.
    #[error("{}: {action}: {source}", path.display())]
    Io {
        path: PathBuf,
        action: &'static str,
        #[source]
        source: std::io::Error,
    },
    /// `init` into a directory that already has something in it.
    #[error("{}: not empty; init refuses to touch an existing directory", dir.display())]
    NotEmpty { dir: PathBuf },
    /// `repo.toml` is missing or malformed.
    #[error("{}: {reason}", path.display())]
    Config { path: PathBuf, reason: String },
    /// A signing key could not be created, read or used.
    #[error("{}: {reason}", path.display())]
    Key { path: PathBuf, reason: String },
    /// `rauc info` failed or printed something unexpected.
    #[error("{}: rauc info: {reason}", bundle.display())]
    Rauc { bundle: PathBuf, reason: String },
    /// The bundle descriptor (TOML) is malformed.
    #[error("{}: {reason}", path.display())]
    Descriptor { path: PathBuf, reason: String },
    /// A command-line value is malformed or missing.
    #[error("{arg}: {reason}")]
    BadArgument { arg: String, reason: String },
    /// An expiry duration is malformed.
    #[error("{role} expiry {value:?}: {reason}")]
    Expiry {
        role: &'static str,
        value: String,
        reason: String,
    },
    /// The FS.25 fields of a target break the schema (the same check the device makes).
    #[error("{target}: {source}")]
    Invalid {
        target: String,
        #[source]
        source: SchemaError,
    },
    /// The target name is already published with other content or other fields.
    #[error("{target}: already published with {difference}; pass --replace to replace it")]
    TargetConflict { target: String, difference: String },
    /// The command does not apply to this kind of repository.
    #[error("{}: {action} is for {wanted} repositories; this one is a {actual} repository", dir.display())]
    WrongRole {
        dir: PathBuf,
        action: &'static str,
        wanted: &'static str,
        actual: &'static str,
    },
    /// `approve` of a target the manufacturer does not list.
    #[error("{target}: not listed in {}", repo.display())]
    NotListed { target: String, repo: PathBuf },
    /// tough failed to load, sign or write metadata.
    #[error("{context}: {}", crate::text::causes(source.as_ref()))]
    Tuf {
        context: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync + 'static>,
    },
}

impl RepoError {
    pub(crate) fn io(
        path: impl Into<PathBuf>,
        action: &'static str,
    ) -> impl FnOnce(std::io::Error) -> RepoError {
        let path = path.into();
        move |source| RepoError::Io {
            path,
            action,
            source,
        }
    }

    /// Wraps an error of tough (`tough::error::Error`, `tough::schema::Error`).
    pub(crate) fn tuf<E>(context: impl Into<String>) -> impl FnOnce(E) -> RepoError
    where
        E: std::error::Error + Send + Sync + 'static,
    {
        let context = context.into();
        move |source| RepoError::Tuf {
            context,
            source: Box::new(source),
        }
    }

    pub(crate) fn invalid(target: impl Into<String>) -> impl FnOnce(SchemaError) -> RepoError {
        let target = target.into();
        move |source| RepoError::Invalid { target, source }
    }

    pub(crate) fn bad_arg(arg: impl Into<String>, reason: impl Into<String>) -> RepoError {
        RepoError::BadArgument {
            arg: arg.into(),
            reason: reason.into(),
        }
    }
}
