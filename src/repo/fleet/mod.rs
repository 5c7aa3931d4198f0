//! The hub's side of delivered reports: a store of what each device sent ([`store`]) and a
//! static HTML page of what the newest verified report of each device says ([`page`], from
//! [`view`]).
//!
//! `ssu-repo enroll-device`, `accept-report` and `serve-reports` write the store through
//! [`accept`] and [`enroll`]; `ssu-repo fleet` renders the page with [`fleet`]. See
//! `docs/report.md`.

pub mod page;
pub mod store;
pub mod view;

use std::fmt;
use std::path::{Path, PathBuf};

pub use page::Options;
pub use store::{
    Accepted, Enrolled, Latest, MAX_ENVELOPE, Refused, StoreError, accept, enroll, is_key_id,
};

/// The file `fleet` writes into its output directory.
pub const PAGE_FILE: &str = "index.html";

/// What [`fleet`] wrote.
#[derive(Debug, Clone)]
pub struct FleetPage {
    pub path: PathBuf,
    pub devices: usize,
    pub verified: usize,
    pub attention: usize,
}

impl fmt::Display for FleetPage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "wrote {} ({} devices, {} with a verified report, {} needing attention)",
            self.path.display(),
            self.devices,
            self.verified,
            self.attention
        )
    }
}

/// Renders the store `dir` into `out_dir/index.html` (replaced atomically, so a web server
/// serving `out_dir` never sends half a page).
pub fn fleet(dir: &Path, out_dir: &Path, opts: &Options) -> Result<FleetPage, StoreError> {
    // A mistyped DIR should not give an empty page that looks like a fleet without devices.
    if !dir.is_dir() {
        return Err(StoreError {
            path: dir.to_owned(),
            reason: "no such directory (a report store is made by enroll-device or \
                     accept-report)"
                .into(),
        });
    }
    let devices = view::load(dir)?;
    let html = page::render(&devices, opts);
    std::fs::create_dir_all(out_dir).map_err(|e| StoreError {
        path: out_dir.to_owned(),
        reason: format!("cannot create: {e}"),
    })?;
    let path = out_dir.join(PAGE_FILE);
    crate::fsutil::write_atomic(&path, html.as_bytes(), 0o644).map_err(|e| StoreError {
        path: path.clone(),
        reason: format!("cannot write: {e}"),
    })?;
    Ok(FleetPage {
        path,
        devices: devices.len(),
        verified: devices.iter().filter(|d| d.verified().is_some()).count(),
        attention: devices
            .iter()
            .filter(|d| !page::attention(d, opts).is_empty())
            .count(),
    })
}

#[cfg(test)]
mod page_tests;
#[cfg(test)]
mod tests;
