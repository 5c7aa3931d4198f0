//! What a failure of tough means for the agent: the device's storage under tough's datastore,
//! the datastore itself (cleared and tried again), the network (retry later), or the
//! repository (refused, with tough's reasons in words).

use std::path::Path;

use super::{MetadataError, Source};
use crate::metadata::targets;
use crate::metadata::transport::TooLarge;

/// Failures of tough's datastore rather than of the repository.
pub(super) fn is_datastore(e: &tough::error::Error) -> bool {
    use tough::error::Error as E;
    matches!(
        e,
        E::DatastoreInit { .. }
            | E::DatastoreCreate { .. }
            | E::DatastoreOpen { .. }
            | E::DatastoreRemove { .. }
            | E::DatastoreSerialize { .. }
            | E::SystemTimeSteppedBackward { .. }
    )
}

/// A failure of the device's storage under tough's datastore (reading, writing or removing
/// its files: a full disk, a read-only file system, [`crate::fsutil::is_storage_failure`]) is
/// [`MetadataError::Storage`]; anything else is the repository's ([`verify_error`]) — also a
/// file name that a delegated role's name made too long.
pub(super) fn classify(source: &Source, datastore: &Path, e: tough::error::Error) -> MetadataError {
    use tough::error::Error as E;
    let (path, io) = match e {
        E::DatastoreCreate { path, source, .. }
        | E::DatastoreOpen { path, source, .. }
        | E::DatastoreRemove { path, source, .. }
            if crate::fsutil::is_storage_failure(&source) =>
        {
            (path, source)
        }
        E::DatastoreInit { source, .. } => (datastore.to_owned(), source),
        other => return verify_error(source, &other),
    };
    MetadataError::Storage {
        source_name: source.name.clone(),
        path,
        source: io,
    }
}

/// Transport failures are worth retrying later, unless what failed was the bytes: a hash or
/// length that does not match signed metadata, or more bytes than the agent accepts, say
/// the repository is bad, and "up to date" must not be claimed on their account.
fn is_network(e: &tough::error::Error) -> bool {
    if !matches!(e, tough::error::Error::Transport { .. }) {
        return false;
    }
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        if c.is::<TooLarge>() {
            return false;
        }
        if let Some(inner) = c.downcast_ref::<tough::error::Error>()
            && matches!(
                inner,
                tough::error::Error::HashMismatch { .. }
                    | tough::error::Error::MaxSizeExceeded { .. }
            )
        {
            return false;
        }
        cause = c.source();
    }
    true
}

/// Longest failure message kept (it goes to D-Bus, the store and the journal).
const MAX_MESSAGE: usize = 600;

fn verify_error(source: &Source, e: &tough::error::Error) -> MetadataError {
    // tough's messages name the role and the check that failed; keep the whole chain, but in
    // words: a few of tough's messages embed Rust debug dumps.
    let mut message = e.to_string();
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        let text = c.to_string();
        if let Some(tough::schema::Error::DuplicateKeyId { .. }) =
            c.downcast_ref::<tough::schema::Error>()
        {
            // Its text is the key id's Rust debug dump, also repeated by the levels above.
            message = message.replace(&text, "the same key signed more than once");
        } else if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        cause = c.source();
    }
    let message = targets::escape_long(&message, MAX_MESSAGE);
    MetadataError::Verify {
        source_name: source.name.clone(),
        message,
        retryable: is_network(e),
    }
}
