//! The outside world as the engine sees it: one trait per adapter, so the engine's whole
//! lifecycle runs in unit tests over test doubles, and the daemon plugs in the real ones
//! ([`crate::daemon`] wires them).

use std::future::Future;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use crate::metadata::client::{self, BundleTarget, MetadataError, RoleVersions, Verified};
use crate::status::Status;

/// Fetches and verifies the update source's metadata.
pub trait MetadataSource: Send + Sync + 'static {
    /// False when no update source is configured.
    fn configured(&self) -> bool;
    /// Verified metadata, refusing anything below `floor`.
    fn fetch(
        &self,
        floor: RoleVersions,
    ) -> impl Future<Output = Result<Verified, MetadataError>> + Send;
}

/// Why a bundle download failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct FetchFailure {
    pub message: String,
    /// True when trying again later may help (link trouble), false when the bytes are wrong.
    pub retryable: bool,
    /// The device's own storage failed (a full disk): not the bytes' fault, never a refusal.
    pub storage: bool,
}

/// Downloads a bundle target to a verified local file.
pub trait BundleFetcher: Send + Sync + 'static {
    /// The verified file (length and SHA-256 checked), resuming earlier partial downloads.
    /// `progress` gets (bytes done, bytes total).
    fn fetch(
        &self,
        target: &BundleTarget,
        progress: Box<dyn FnMut(u64, u64) + Send>,
    ) -> impl Future<Output = Result<PathBuf, FetchFailure>> + Send;
    /// Removes cached files of other targets than `keep`.
    fn cleanup(&self, keep: Option<&BundleTarget>);
}

/// The device itself: boot identity, reboots, health.
pub trait System: Send + Sync + 'static {
    /// Changes with every boot (the kernel's boot id on a device).
    fn boot_id(&self) -> String;
    /// Starts a reboot; returns once the command was started.
    fn reboot(&self) -> Result<(), String>;
    /// Runs the configured health checks after booting a new slot.
    fn health_check(&self) -> impl Future<Output = Result<(), String>> + Send;
}

/// A report signed for delivery: the envelope as it is POSTed, and what the server's
/// acknowledgement must name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signed {
    /// The [`crate::report::Envelope`] as JSON.
    pub body: String,
    pub key_id: String,
    pub counter: u64,
}

/// Signs reports and carries them to the fleet server (`[report] url`).
pub trait Courier: Send + Sync + 'static {
    /// False when no fleet server is configured: nothing is signed or queued.
    fn configured(&self) -> bool;
    /// A signed report of `status`, bound to a fresh random nonce the device chose.
    fn sign(&self, status: Status) -> impl Future<Output = Result<Signed, String>> + Send;
    /// POSTs `body` once: the answer's status and (at most
    /// [`crate::policy::delivery::MAX_ANSWER_BYTES` of) its body, or why there was none
    /// (no connection, timeout, not HTTP). Judging the answer is the policy's job.
    fn post(&self, body: String) -> impl Future<Output = Result<(u16, Vec<u8>), String>> + Send;
}

/// The real fetcher: resumable, verified HTTP(S) downloads.
impl BundleFetcher for crate::download::Downloader {
    async fn fetch(
        &self,
        t: &BundleTarget,
        mut progress: Box<dyn FnMut(u64, u64) + Send>,
    ) -> Result<PathBuf, FetchFailure> {
        let mut target = crate::download::Target {
            url: t.url.clone(),
            length: t.length,
            sha256: t.sha256,
        };
        let mut result =
            crate::download::Downloader::fetch(self, &target, &mut |p| progress(p.done, p.total))
                .await;
        if let (Err(crate::download::DownloadError::NotFound { .. }), Some(legacy)) =
            (&result, &t.legacy_url)
        {
            // A repository published before ssu-repo followed the TUF layout.
            tracing::info!(url = %legacy, "not at the TUF layout; trying tough's layout");
            target.url = legacy.clone();
            result = crate::download::Downloader::fetch(self, &target, &mut |p| {
                progress(p.done, p.total)
            })
            .await;
        }
        result.map_err(|e| FetchFailure {
            retryable: e.is_retryable(),
            storage: e.is_storage(),
            message: if e.is_storage() {
                let advice = e.storage_error().map_or(
                    "the disk is full: free space on it, then check again",
                    crate::fsutil::storage_advice,
                );
                format!("{e}; {advice}")
            } else {
                e.to_string()
            },
        })
    }

    fn cleanup(&self, keep: Option<&BundleTarget>) {
        let keep: Vec<[u8; 32]> = keep.map(|t| t.sha256).into_iter().collect();
        match crate::download::Downloader::cleanup(self, &keep) {
            Ok(removed) if !removed.is_empty() => {
                tracing::info!(files = removed.len(), "removed stale downloads");
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "cannot clean the download cache"),
        }
    }
}

/// The real metadata source: one TUF repository over HTTP(S).
pub struct TufSource {
    pub source: Option<client::Source>,
    pub client: reqwest::Client,
    /// tough's datastore for this source.
    pub datastore: PathBuf,
}

impl MetadataSource for TufSource {
    fn configured(&self) -> bool {
        self.source.is_some()
    }

    async fn fetch(&self, floor: RoleVersions) -> Result<Verified, MetadataError> {
        match &self.source {
            Some(s) => client::fetch(s, &self.client, &self.datastore, &floor).await,
            None => Err(MetadataError::Verify {
                source_name: "none".into(),
                message: "no update source configured".into(),
                retryable: false,
            }),
        }
    }
}

/// The real device: reads the boot id, runs configured commands.
pub struct HostSystem {
    pub boot_id_file: PathBuf,
    pub reboot_command: Vec<String>,
    pub health_checks: Vec<Vec<String>>,
    pub health_check_timeout: Duration,
}

impl System for HostSystem {
    fn boot_id(&self) -> String {
        std::fs::read_to_string(&self.boot_id_file)
            .map(|s| s.trim().to_owned())
            .unwrap_or_default()
    }

    fn reboot(&self) -> Result<(), String> {
        let Some((program, args)) = self.reboot_command.split_first() else {
            return Err("no reboot command configured".into());
        };
        // A process group of its own: a reboot that stops this agent must not stop itself.
        let mut child = tokio::process::Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .map_err(|e| format!("cannot run reboot command {program}: {e}"))?;
        // Reaped when it ends (if this agent is still running then), so no zombie lingers.
        tokio::spawn(async move {
            if let Ok(status) = child.wait().await
                && !status.success()
            {
                tracing::error!("reboot command failed ({status})");
            }
        });
        Ok(())
    }

    async fn health_check(&self) -> Result<(), String> {
        for argv in &self.health_checks {
            run_check(argv, self.health_check_timeout).await?;
        }
        Ok(())
    }
}

async fn run_check(argv: &[String], timeout: Duration) -> Result<(), String> {
    let Some((program, args)) = argv.split_first() else {
        return Ok(());
    };
    let shown = argv.join(" ");
    let mut child = tokio::process::Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("health check `{shown}` could not start: {e}"))?;
    match tokio::time::timeout(timeout, child.wait()).await {
        Ok(Ok(status)) if status.success() => Ok(()),
        Ok(Ok(status)) => Err(format!("health check `{shown}` failed ({status})")),
        Ok(Err(e)) => Err(format!("health check `{shown}`: {e}")),
        Err(_) => Err(format!(
            "health check `{shown}` did not finish within {}s",
            timeout.as_secs()
        )),
    }
}
