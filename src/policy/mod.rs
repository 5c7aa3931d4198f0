//! Pure decisions. Nothing in here does I/O or reads a clock: `now`, seeds and every other
//! input are arguments, so each rule is a table-driven unit test away from being proven.
//!
//! - [`schedule`]: when to check for updates next (SEC-0020, ETSI 5.3-5).
//! - [`select`]: which verified target this device installs (SEC-0010, anti-rollback).
//! - [`source`]: manufacturer or operator channel, or wait (TES-0010/0020/0030).
//! - [`linkcost`]: whether a metered or roaming link defers a download.
//! - [`staleness`]: whether the device may say it is current (SEC-0020, ETSI 5.3-8).
//! - [`consent`]: postponement bounds, install and reboot gates (COM-0040/0050).
//! - [`support`]: the security support period (SEC-0030/0040).
//! - [`wave`]: the model's rollout wave (SEC-0021).
//! - [`spread`]: per-device offsets so a fleet does not move in lockstep.
//! - [`time`]: which time to trust when the clock and the ratchet disagree.
//! - [`delivery`]: the report queue's bounds, retry backoff and the server's answers.

pub mod consent;
pub mod delivery;
pub mod linkcost;
pub mod schedule;
pub mod select;
pub mod source;
pub mod spread;
pub mod staleness;
pub mod support;
pub mod time;
pub mod wave;

pub use schedule::{Cadence, next_check};
pub use staleness::staleness;
