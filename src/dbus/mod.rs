//! The `org.ssu.Agent1` service on the system bus.
//!
//! The interface object holds nothing but a [`Handle`] to the engine: property getters read
//! the engine's latest [`Status`] snapshot, methods send commands. A separate task
//! ([`forward_changes`], in `forward.rs`) turns each new snapshot into one `PropertiesChanged`
//! signal listing exactly the properties that changed. The introspection XML in `dbus/org.ssu.Agent1.xml` is
//! the contract; a test fails when the served interface and that file differ.

pub mod auth;
mod forward;
pub mod limits;
pub mod properties;
pub mod refusals;
pub mod reply;
pub mod view;

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::watch;
use zbus::Connection;
use zbus::fdo::{RequestNameFlags, RequestNameReply};
use zbus::object_server::SignalEmitter;

pub use forward::{forward_changes, forward_notices};

use crate::engine::{EngineError, HISTORY_LIMIT, Handle, Request};
use crate::report::Reporter;
use crate::status::Status;
use auth::{Action, Authorizer};
use limits::CallLimiter;
use reply::ReportReply;
use zbus::message::Header;

/// Well-known bus name.
pub const BUS_NAME: &str = "org.ssu.Agent1";
/// Object path of the one agent object.
pub const OBJECT_PATH: &str = "/org/ssu/Agent1";
/// Interface name.
pub const INTERFACE: &str = "org.ssu.Agent1";

/// Errors returned to D-Bus callers. The names (`org.ssu.Agent1.Error.<Variant>`) are a
/// stable contract: UIs match on them.
#[derive(Debug, zbus::DBusError)]
#[zbus(prefix = "org.ssu.Agent1.Error")]
#[non_exhaustive]
pub enum AgentError {
    #[zbus(error)]
    ZBus(zbus::Error),
    /// The caller may not do this.
    NotAuthorized(String),
    /// Another operation is running; try again later.
    Busy(String),
    /// There is no update to install.
    NothingToInstall(String),
    /// Policy forbids this (e.g. a scope violation).
    PolicyRefused(String),
    /// Update metadata or a bundle failed verification.
    VerificationFailed(String),
    /// The agent is shutting down or a part it needs is unavailable.
    Unavailable(String),
    /// An internal failure (e.g. the store); the message says what.
    Internal(String),
    /// The device's own storage failed (e.g. the disk is full); the message says where and
    /// what to do. Says nothing about the update itself.
    Storage(String),
}

impl From<EngineError> for AgentError {
    fn from(e: EngineError) -> AgentError {
        match e {
            EngineError::Busy(m) => AgentError::Busy(m),
            EngineError::Stopped => AgentError::Unavailable(e.to_string()),
            EngineError::NothingToInstall(m) => AgentError::NothingToInstall(m),
            EngineError::PolicyRefused(m) => AgentError::PolicyRefused(m),
            EngineError::Storage(m) => AgentError::Storage(m),
            other => AgentError::Internal(other.to_string()),
        }
    }
}

/// The served object.
pub struct Agent1 {
    engine: Handle,
    status: watch::Receiver<Status>,
    auth: Authorizer,
    /// Signs patch-status reports (`GetReport`).
    reporter: Arc<Reporter>,
    /// Calls in flight per caller (see `limits.rs`).
    calls: CallLimiter,
}

impl Agent1 {
    pub fn new(engine: Handle, auth: Authorizer, reporter: Arc<Reporter>) -> Agent1 {
        let status = engine.subscribe();
        Agent1 {
            engine,
            status,
            auth,
            reporter,
            calls: CallLimiter::default(),
        }
    }

    /// Authorizes the caller, then passes the request to the engine.
    async fn mutate(
        &self,
        conn: &Connection,
        header: &Header<'_>,
        action: Action,
        request: Request,
    ) -> Result<(), AgentError> {
        let _call = self.calls.enter(header)?;
        self.authorize(conn, header, action).await?;
        self.engine.control(request).await.map_err(AgentError::from)
    }

    /// [`Authorizer::authorize`] within [`limits::AUTHORIZATION_TIMEOUT`]: an answer the bus
    /// dropped (its queue to this agent full) must not keep the call, and its message, for
    /// ever.
    async fn authorize(
        &self,
        conn: &Connection,
        header: &Header<'_>,
        action: Action,
    ) -> Result<(), AgentError> {
        let limit = limits::AUTHORIZATION_TIMEOUT;
        match tokio::time::timeout(limit, self.auth.authorize(conn, header, action)).await {
            Ok(result) => result,
            Err(_) => Err(AgentError::NotAuthorized(format!(
                "authorization did not finish within {} s; try again",
                limit.as_secs()
            ))),
        }
    }

    fn with<T>(&self, f: impl FnOnce(&Status) -> T) -> T {
        f(&self.status.borrow())
    }
}

#[zbus::interface(name = "org.ssu.Agent1")]
impl Agent1 {
    /// Everything a hub needs in one call: every property, keyed by its name.
    #[zbus(out_args("status"))]
    async fn get_status(
        &self,
        #[zbus(header)] header: Header<'_>,
    ) -> Result<view::Dict, AgentError> {
        let _call = self.calls.enter(&header)?;
        Ok(self
            .with(view::properties)
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect())
    }

    /// Applied updates and other recorded events, newest first.
    #[zbus(out_args("entries"))]
    async fn get_history(
        &self,
        #[zbus(header)] header: Header<'_>,
    ) -> Result<Vec<view::Dict>, AgentError> {
        let _call = self.calls.enter(&header)?;
        let entries = self.engine.history(HISTORY_LIMIT).await?;
        Ok(entries.iter().map(view::history_entry).collect())
    }

    /// A patch-status report signed with the device identity key, bound to the caller's
    /// `nonce` (16 to 64 bytes, else InvalidArgs). Needs no authorization: it only says what
    /// `GetStatus` says, signed (docs/report.md).
    #[zbus(out_args("report", "signature", "key_id"))]
    async fn get_report(&self, nonce: Vec<u8>) -> Result<(String, Vec<u8>, String), ReportReply> {
        crate::report::check_nonce(&nonce)?;
        let st = self.with(Status::clone);
        let env = self.reporter.report(st, nonce).await?;
        let signature = hex::decode(&env.signature).map_err(|e| {
            ReportReply::Agent(AgentError::Internal(format!("signature encoding: {e}")))
        })?;
        Ok((env.report, signature, env.key_id))
    }

    /// The device identity key's public half and its stable id (reports carry the id).
    #[zbus(out_args("algorithm", "public_key", "key_id"))]
    async fn get_public_key(&self) -> Result<(String, Vec<u8>, String), ReportReply> {
        let (pk, id) = self.reporter.public_key()?;
        Ok((crate::report::key::ALGORITHM.to_owned(), pk.to_vec(), id))
    }

    /// Check for updates now. Returns when the check has run (not the download or
    /// installation it may start); its outcome shows in `LastCheck`, `LastCheckResult` and
    /// `Staleness`.
    async fn check_now(
        &self,
        #[zbus(connection)] conn: &Connection,
        #[zbus(header)] header: Header<'_>,
    ) -> Result<(), AgentError> {
        let _call = self.calls.enter(&header)?;
        self.authorize(conn, &header, Action::Check).await?;
        self.engine.check_now().await.map_err(AgentError::from)
    }

    /// Turns automatic installation of security updates on or off (persisted).
    async fn set_auto_install(
        &self,
        #[zbus(connection)] conn: &Connection,
        #[zbus(header)] header: Header<'_>,
        enabled: bool,
    ) -> Result<(), AgentError> {
        let req = Request::SetAutoInstall(enabled);
        self.mutate(conn, &header, Action::Configure, req).await
    }

    /// Postpones automatic installation by `seconds` (0 clears), within the configured
    /// bound (shorter for critical updates); persisted across restarts.
    async fn postpone(
        &self,
        #[zbus(connection)] conn: &Connection,
        #[zbus(header)] header: Header<'_>,
        seconds: u64,
    ) -> Result<(), AgentError> {
        let req = Request::Postpone(seconds);
        self.mutate(conn, &header, Action::Configure, req).await
    }

    /// Applies the available update now (waits while an inhibitor is held). Returns once
    /// started; progress shows in `State` and `Progress`.
    async fn install(
        &self,
        #[zbus(connection)] conn: &Connection,
        #[zbus(header)] header: Header<'_>,
    ) -> Result<(), AgentError> {
        self.mutate(conn, &header, Action::Install, Request::Install)
            .await
    }

    /// Consents to rebooting into the installed update now (waits for inhibitors).
    async fn reboot(
        &self,
        #[zbus(connection)] conn: &Connection,
        #[zbus(header)] header: Header<'_>,
    ) -> Result<(), AgentError> {
        self.mutate(conn, &header, Action::Install, Request::Reboot)
            .await
    }

    /// Consents to rebooting at `at` (seconds since the epoch; 0 withdraws consent).
    async fn schedule_reboot(
        &self,
        #[zbus(connection)] conn: &Connection,
        #[zbus(header)] header: Header<'_>,
        at: u64,
    ) -> Result<(), AgentError> {
        let req = Request::ScheduleReboot(at);
        self.mutate(conn, &header, Action::Install, req).await
    }

    /// Holds installation and reboot while the returned file descriptor stays open (e.g.
    /// while the vehicle drives). Closing it (or exiting) releases the inhibitor.
    #[zbus(out_args("fd"))]
    async fn inhibit(
        &self,
        #[zbus(connection)] conn: &Connection,
        #[zbus(header)] header: Header<'_>,
        reason: &str,
    ) -> Result<zbus::OwnedFd, AgentError> {
        let _call = self.calls.enter(&header)?;
        // Before anything that waits: an oversized message is dropped at once.
        limits::check_reason_size(reason)?;
        self.authorize(conn, &header, Action::Install).await?;
        let reason = limits::clean_reason(reason);
        let (reader, writer) = std::io::pipe()
            .map_err(|e| AgentError::Internal(format!("cannot create a pipe: {e}")))?;
        let reader = tokio::net::unix::pipe::Receiver::from_owned_fd(reader.into())
            .map_err(|e| AgentError::Internal(format!("cannot watch the pipe: {e}")))?;
        let id = self.engine.inhibit(reason).await?;
        tokio::spawn(release_on_close(self.engine.clone(), reader, id));
        Ok(std::os::fd::OwnedFd::from(writer).into())
    }

    /// Host inhibitors held now (their reasons).
    #[zbus(property)]
    fn inhibitors(&self) -> Vec<String> {
        self.with(view::inhibitors)
    }

    /// A reboot into an installed update is planned; sent before it happens. Keys: reason
    /// (s), version (s), expected_downtime_s (u), at (t; 0 while waiting for inhibitors),
    /// waiting_for (as: inhibitor|maintenance-window|scheduled; empty: now), inhibitors (as).
    #[zbus(signal)]
    async fn reboot_pending(emitter: &SignalEmitter<'_>, plan: view::Dict) -> zbus::Result<()>;

    /// The store was unusable and was replaced at startup: reason, moved_to, at, sources,
    /// floors.
    #[zbus(signal)]
    async fn store_recovered(emitter: &SignalEmitter<'_>, recovery: view::Dict)
    -> zbus::Result<()>;

    /// A verified security update was downloaded and checked and can be installed.
    #[zbus(signal)]
    async fn update_available(emitter: &SignalEmitter<'_>, update: view::Dict) -> zbus::Result<()>;

    /// An update attempt ended: `outcome` is installed, failed or rolled-back.
    #[zbus(signal)]
    async fn install_finished(emitter: &SignalEmitter<'_>, result: view::Dict) -> zbus::Result<()>;

    /// The SIM moved to another operator profile or to none: previous, profile.
    // Named explicitly: `subscription_changed` is zbus's notifier of the property.
    #[zbus(signal, name = "SubscriptionChanged")]
    async fn subscription_switched(
        emitter: &SignalEmitter<'_>,
        change: view::Dict,
    ) -> zbus::Result<()>;

    /// The integrity verdict changed (`trusted`, `compromised`, `unknown`), with every
    /// probe's finding (same dictionaries as `IntegrityFindings`).
    #[zbus(signal)]
    async fn integrity_changed(
        emitter: &SignalEmitter<'_>,
        state: &str,
        findings: Vec<view::Dict>,
    ) -> zbus::Result<()>;

    #[zbus(property)]
    fn security_patch_level(&self) -> String {
        self.with(view::security_patch_level)
    }

    #[zbus(property)]
    fn patch_applied_at(&self) -> u64 {
        self.with(view::patch_applied_at)
    }

    #[zbus(property)]
    fn installed_version(&self) -> String {
        self.with(view::installed_version)
    }

    #[zbus(property)]
    fn state(&self) -> String {
        self.with(view::state)
    }

    #[zbus(property)]
    fn progress(&self) -> u32 {
        self.with(view::progress)
    }

    #[zbus(property)]
    fn available(&self) -> view::Dict {
        self.with(view::available)
    }

    #[zbus(property)]
    fn last_check(&self) -> u64 {
        self.with(view::last_check)
    }

    #[zbus(property)]
    fn last_check_result(&self) -> String {
        self.with(view::last_check_result)
    }

    #[zbus(property)]
    fn last_check_verified(&self) -> bool {
        self.with(view::last_check_verified)
    }

    #[zbus(property)]
    fn staleness(&self) -> String {
        self.with(view::staleness)
    }

    #[zbus(property)]
    fn support_end(&self) -> String {
        self.with(view::support_end)
    }

    #[zbus(property)]
    fn support_state(&self) -> String {
        self.with(view::support_state)
    }

    #[zbus(property)]
    fn replacement_info(&self) -> view::Dict {
        self.with(view::replacement_info)
    }

    #[zbus(property)]
    fn integrity_state(&self) -> String {
        self.with(view::integrity_state)
    }

    #[zbus(property)]
    fn integrity_findings(&self) -> Vec<view::Dict> {
        self.with(view::integrity_findings)
    }

    #[zbus(property)]
    fn update_source(&self) -> view::Dict {
        self.with(view::update_source)
    }

    #[zbus(property)]
    fn subscription(&self) -> view::Dict {
        self.with(view::subscription)
    }

    #[zbus(property)]
    fn auto_install(&self) -> bool {
        self.with(view::auto_install)
    }

    #[zbus(property)]
    fn postponed_until(&self) -> u64 {
        self.with(view::postponed_until)
    }

    #[zbus(property)]
    fn model(&self) -> String {
        self.with(view::model)
    }

    #[zbus(property)]
    fn hardware_id(&self) -> String {
        self.with(view::hardware_id)
    }

    #[zbus(property)]
    fn compatible(&self) -> String {
        self.with(view::compatible)
    }

    #[zbus(property)]
    fn boot_slot(&self) -> String {
        self.with(view::boot_slot)
    }

    #[zbus(property)]
    fn slots(&self) -> Vec<view::Dict> {
        self.with(view::slots)
    }

    #[zbus(property)]
    fn components(&self) -> HashMap<String, String> {
        self.with(view::components)
    }

    #[zbus(property)]
    fn last_error(&self) -> String {
        self.with(view::last_error)
    }

    #[zbus(property)]
    fn report_delivery(&self) -> view::Dict {
        self.with(view::report_delivery)
    }
}

/// Why the service could not be started.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    #[error("cannot serve {OBJECT_PATH}: {0}")]
    Object(#[source] zbus::Error),
    #[error(
        "cannot own {BUS_NAME}: {0} (is the bus policy file org.ssu.Agent1.conf installed, and \
         does this process run as the user it names?)"
    )]
    Name(#[source] zbus::Error),
    #[error("{BUS_NAME} is already owned by another process (is another ssu-agent running?)")]
    NameTaken,
}

/// Serves the object, then takes the name — in that order, so no call arrives before the
/// object exists.
pub async fn serve(
    conn: &Connection,
    engine: Handle,
    auth: Authorizer,
    reporter: Arc<Reporter>,
) -> Result<(), ServeError> {
    let server = conn.object_server();
    server
        .at(OBJECT_PATH, Agent1::new(engine, auth, reporter))
        .await
        .map_err(ServeError::Object)?;
    // Our Properties, which answers Set with PropertyReadOnly (see `properties.rs`).
    server
        .remove::<zbus::fdo::Properties, _>(OBJECT_PATH)
        .await
        .map_err(ServeError::Object)?;
    server
        .at(OBJECT_PATH, properties::Properties)
        .await
        .map_err(ServeError::Object)?;
    match conn
        .request_name_with_flags(BUS_NAME, RequestNameFlags::DO_NOT_QUEUE)
        .await
    {
        Ok(RequestNameReply::PrimaryOwner | RequestNameReply::AlreadyOwner) => Ok(()),
        Ok(_) => Err(ServeError::NameTaken),
        Err(e) => Err(ServeError::Name(e)),
    }
}

/// Waits until every copy of the inhibitor's write end is closed, then releases it.
async fn release_on_close(engine: Handle, reader: tokio::net::unix::pipe::Receiver, id: u64) {
    let mut buf = [0u8; 64];
    loop {
        if reader.readable().await.is_err() {
            break;
        }
        match reader.try_read(&mut buf) {
            Ok(0) => break,
            // Whatever the holder writes means nothing; keep waiting for the close.
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(_) => break,
        }
    }
    if let Err(e) = engine.control(Request::Release(id)).await {
        tracing::debug!(error = %e, "inhibitor released after the engine stopped");
    }
}
