//! # ssu-agent
//!
//! The device-side daemon that keeps a Linux cellular device patched the way GSMA FS.25 asks,
//! and proves it. The parts, and how a request flows through them:
//!
//! - [`config`]: `/etc/ssu-agent/agent.toml` + `agent.d/*.toml`, validated once at start.
//! - [`policy`]: pure decisions (staleness, check schedule, …); takes `now` as an argument.
//! - [`engine`]: one task owning all state, fed by an event channel (D-Bus commands, timers,
//!   RAUC and modem changes); persists every transition in [`store`] before acting.
//! - adapters behind traits ([`engine::ports`]): [`metadata`] (TUF via tough),
//!   [`download`] (resumable, verified bundles), [`rauc`] (RAUC's D-Bus API), [`modem`]
//!   (ModemManager), [`store`] (SQLite), [`clock`].
//! - [`integrity`]: rooting / modification probes (fwupd-HSI style) reading under a
//!   configurable root; the engine runs them off its task.
//! - [`repo`]: the publisher side (`ssu-repo`), building the repositories devices verify.
//! - [`dbus`]: the `org.ssu.Agent1` service; it reads the engine's [`status::Status`]
//!   snapshot and sends commands, nothing more.
//! - [`daemon`]: wires the parts together for the `ssu-agent` binary; [`ctl`] renders what
//!   `ssuctl` prints.

pub mod activation;
mod buswatch;
pub mod clock;
pub mod config;
pub mod ctl;
pub mod daemon;
pub mod dbus;
pub mod download;
pub mod engine;
pub mod fsutil;
pub mod integrity;
pub mod logging;
pub mod manpage;
pub mod memory;
pub mod metadata;
pub mod modem;
pub mod network;
pub mod notify;
pub mod policy;
#[cfg(test)]
mod proptests;
pub mod rauc;
pub mod repo;
pub mod report;
pub mod status;
pub mod store;
pub mod text;
