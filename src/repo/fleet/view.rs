//! What the fleet page shows of each device: its newest stored report, verified again with
//! the enrolled key — the page never trusts the store's earlier verdict (the files may have
//! been edited since, or written by something other than [`super::accept`]).

use std::path::Path;

use jiff::Timestamp;
use serde_json::Value;

use super::store::{self, StoreError};
use crate::report::verify::{self, Expect};

/// One device as the page shows it.
#[derive(Debug, Clone)]
pub struct DeviceView {
    pub key_id: String,
    /// The counter of the newest stored report (`latest.json`).
    pub counter: Option<u64>,
    /// When the hub received it.
    pub received_at: Option<Timestamp>,
    pub report: Shown,
}

/// The newest report, if it can be believed at all.
#[derive(Debug, Clone)]
pub enum Shown {
    /// Signed by the enrolled key; its content as signed.
    Verified(Value),
    /// Enrolled, nothing received yet.
    NoReport,
    /// The stored report (or the key) cannot be verified: nothing of it is shown.
    Unverified(String),
}

impl DeviceView {
    pub fn verified(&self) -> Option<&Value> {
        match &self.report {
            Shown::Verified(v) => Some(v),
            _ => None,
        }
    }
}

/// Every device in the store `dir`, by key id, each with its newest report verified again.
/// Only a store that cannot be listed is an error; a problem with one device shows on its row.
pub fn load(dir: &Path) -> Result<Vec<DeviceView>, StoreError> {
    let ids = store::device_ids(dir)?;
    Ok(ids.into_iter().map(|id| device(dir, id)).collect())
}

fn device(dir: &Path, key_id: String) -> DeviceView {
    let mut view = DeviceView {
        key_id,
        counter: None,
        received_at: None,
        report: Shown::NoReport,
    };
    let latest = match store::read_latest(dir, &view.key_id) {
        Ok(Some(l)) => l,
        Ok(None) => return view,
        Err(e) => return unverified(view, e.to_string()),
    };
    view.counter = Some(latest.counter);
    view.received_at = Some(latest.received_at);
    let key = match store::read_key(dir, &view.key_id) {
        Ok(Some(k)) => k,
        Ok(None) => return unverified(view, "no enrolled key for this device".into()),
        Err(e) => return unverified(view, format!("enrolled key: {e}")),
    };
    let bytes = match store::read_report(dir, &view.key_id, latest.counter) {
        Ok(Some(b)) => b,
        Ok(None) => {
            return unverified(view, format!("report {} is missing", latest.counter));
        }
        Err(e) => return unverified(view, e.to_string()),
    };
    let shown = match verify::verify(&bytes, &key, &Expect::default()) {
        Ok(v) if v.counter == latest.counter => Shown::Verified(v.report),
        Ok(v) => Shown::Unverified(format!(
            "the file of report {} holds report {}",
            latest.counter, v.counter
        )),
        Err(e) => Shown::Unverified(e.to_string()),
    };
    DeviceView {
        report: shown,
        ..view
    }
}

fn unverified(view: DeviceView, why: String) -> DeviceView {
    DeviceView {
        report: Shown::Unverified(why),
        ..view
    }
}
