//! The hub's side of delivered reports: a store of what each device sent ([`store`]) and a
//! static HTML page of what the newest verified report of each device says ([`page`]).
//!
//! `ssu-repo enroll-device`, `accept-report` and `serve-reports` write the store through
//! [`accept`] and [`enroll`]; `ssu-repo fleet` renders the page. See `docs/report.md`.

pub mod store;

pub use store::{
    Accepted, Enrolled, Latest, MAX_ENVELOPE, Refused, StoreError, accept, enroll, is_key_id,
};

#[cfg(test)]
mod tests;
