//! A test double for [`Rauc`]: records every call and answers from a script.
//!
//! Always compiled rather than `#[cfg(test)]`: the engine's unit tests and the integration
//! tests under `tests/` (a separate crate, which never sees `cfg(test)` items of the library)
//! both need it, and the crate has no `test-doubles` feature to hide it behind. It is small,
//! does no I/O, and nothing in the binaries refers to it, so the linker drops it.
//!
//! Unscripted calls behave like a healthy RAUC 1.8: `info` returns the configured
//! [`RaucInfo`], installs succeed, `Mark` answers with RAUC's wording.

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use crate::status::RaucInfo;

use super::{BundleInfo, MarkState, Progress, Rauc, RaucError, Subject};

/// One call the fake received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    Info,
    Install(PathBuf),
    InstallAndWait(PathBuf),
    Mark(MarkState, String),
    Primary,
    BundleInfo(PathBuf),
}

/// Scripted RAUC. Share it with `Arc<FakeRauc>` to inspect calls after handing it over.
#[derive(Debug, Default)]
pub struct FakeRauc {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    info: RaucInfo,
    primary: Option<String>,
    bundles: HashMap<PathBuf, BundleInfo>,
    progress_steps: Vec<Progress>,
    info_results: VecDeque<Result<RaucInfo, RaucError>>,
    install_results: VecDeque<Result<(), RaucError>>,
    mark_results: VecDeque<Result<(String, String), RaucError>>,
    /// This many next installations report their progress, then never finish.
    hung_installs: usize,
    calls: Vec<Call>,
}

impl FakeRauc {
    /// A fake whose `info()` returns `info` until told otherwise.
    pub fn new(info: RaucInfo) -> FakeRauc {
        FakeRauc {
            inner: Mutex::new(Inner {
                info,
                ..Inner::default()
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Replace what unscripted `info()` calls return.
    pub fn set_info(&self, info: RaucInfo) {
        self.lock().info = info;
    }

    /// What `primary()` returns (default: the booted slot, else an error).
    pub fn set_primary(&self, slot: &str) {
        self.lock().primary = Some(slot.to_owned());
    }

    /// Make `bundle_info(path)` answer `info` (unknown paths are refused like RAUC 1.8 does).
    pub fn add_bundle(&self, path: impl Into<PathBuf>, info: BundleInfo) {
        self.lock().bundles.insert(path.into(), info);
    }

    /// Progress that `install_and_wait` reports before finishing.
    pub fn set_progress_steps(&self, steps: Vec<Progress>) {
        self.lock().progress_steps = steps;
    }

    /// The next `info()` returns `result` (queued; one per call).
    pub fn script_info(&self, result: Result<RaucInfo, RaucError>) {
        self.lock().info_results.push_back(result);
    }

    /// The next `install()` or `install_and_wait()` returns `result` (queued).
    pub fn script_install(&self, result: Result<(), RaucError>) {
        self.lock().install_results.push_back(result);
    }

    /// The next `n` calls of `install_and_wait` report their progress steps and then hang,
    /// like a RAUC that stopped mid-installation.
    pub fn hang_installs(&self, n: usize) {
        self.lock().hung_installs = n;
    }

    /// The next `mark()` returns `result` (queued).
    pub fn script_mark(&self, result: Result<(String, String), RaucError>) {
        self.lock().mark_results.push_back(result);
    }

    /// Every call so far, oldest first.
    pub fn calls(&self) -> Vec<Call> {
        self.lock().calls.clone()
    }

    /// Every call so far, forgetting them.
    pub fn take_calls(&self) -> Vec<Call> {
        std::mem::take(&mut self.lock().calls)
    }
}

impl Inner {
    fn booted(&self) -> Option<&str> {
        self.info
            .slots
            .iter()
            .find(|s| s.state == "booted")
            .map(|s| s.name.as_str())
    }

    /// Resolve `booted`/`other`/a name the way RAUC does for A/B systems.
    fn resolve(&self, slot: &str) -> Option<String> {
        let booted = self.booted();
        match slot {
            "booted" => booted.map(str::to_owned),
            "other" => self
                .info
                .slots
                .iter()
                .find(|s| Some(s.name.as_str()) != booted && !s.bootname.is_empty())
                .map(|s| s.name.clone()),
            name => self
                .info
                .slots
                .iter()
                .any(|s| s.name == name)
                .then(|| name.to_owned()),
        }
    }
}

fn refused(method: &'static str, subject: Subject, message: String) -> RaucError {
    RaucError::Rejected {
        method,
        subject,
        error_name: "org.gtk.GDBus.UnmappedGError.Quark._g_2dio_2derror_2dquark.Code30".into(),
        message,
    }
}

impl Rauc for FakeRauc {
    async fn info(&self) -> Result<RaucInfo, RaucError> {
        let mut inner = self.lock();
        inner.calls.push(Call::Info);
        match inner.info_results.pop_front() {
            Some(result) => result,
            None => Ok(inner.info.clone()),
        }
    }

    async fn install(&self, bundle: &Path) -> Result<(), RaucError> {
        let mut inner = self.lock();
        inner.calls.push(Call::Install(bundle.to_owned()));
        inner.install_results.pop_front().unwrap_or(Ok(()))
    }

    async fn install_and_wait(
        &self,
        bundle: &Path,
        mut on_progress: impl FnMut(Progress) + Send,
    ) -> Result<(), RaucError> {
        let (steps, result, hang) = {
            let mut inner = self.lock();
            inner.calls.push(Call::InstallAndWait(bundle.to_owned()));
            let result = inner.install_results.pop_front().unwrap_or(Ok(()));
            let hang = inner.hung_installs > 0;
            inner.hung_installs = inner.hung_installs.saturating_sub(1);
            (inner.progress_steps.clone(), result, hang)
        };
        if result.is_ok() {
            steps.into_iter().for_each(&mut on_progress);
        }
        if hang {
            std::future::pending::<()>().await;
        }
        result
    }

    async fn mark(&self, state: MarkState, slot: &str) -> Result<(String, String), RaucError> {
        let mut inner = self.lock();
        inner.calls.push(Call::Mark(state, slot.to_owned()));
        if let Some(result) = inner.mark_results.pop_front() {
            return result;
        }
        let Some(name) = inner.resolve(slot) else {
            return Err(refused(
                "Mark",
                Subject::Slot(slot.to_owned()),
                format!("Invalid slot name format: '{slot}'"),
            ));
        };
        let message = match state {
            MarkState::Active => {
                inner.primary = Some(name.clone());
                format!("activated slot {name}")
            }
            MarkState::Good | MarkState::Bad => format!("marked slot {name} as {state}"),
        };
        Ok((name, message))
    }

    async fn primary(&self) -> Result<String, RaucError> {
        let mut inner = self.lock();
        inner.calls.push(Call::Primary);
        match inner
            .primary
            .clone()
            .or_else(|| inner.booted().map(str::to_owned))
        {
            Some(slot) => Ok(slot),
            None => Err(refused(
                "GetPrimary",
                Subject::None,
                "Unable to obtain primary element".into(),
            )),
        }
    }

    async fn bundle_info(&self, bundle: &Path) -> Result<BundleInfo, RaucError> {
        let mut inner = self.lock();
        inner.calls.push(Call::BundleInfo(bundle.to_owned()));
        match inner.bundles.get(bundle) {
            Some(info) => Ok(info.clone()),
            None => Err(refused(
                "Info",
                Subject::Bundle(bundle.to_owned()),
                "rauc info error".into(),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::{Availability, SlotInfo};

    fn ab() -> RaucInfo {
        let slot = |name: &str, bootname: &str, state: &str| SlotInfo {
            name: name.into(),
            class: "rootfs".into(),
            state: state.into(),
            bootname: bootname.into(),
            boot_status: "good".into(),
            ..SlotInfo::default()
        };
        RaucInfo {
            availability: Availability::Running,
            compatible: "ssu-sandbox".into(),
            boot_slot: "A".into(),
            operation: "idle".into(),
            last_error: String::new(),
            slots: vec![
                slot("rootfs.0", "A", "booted"),
                slot("rootfs.1", "B", "inactive"),
            ],
        }
    }

    #[tokio::test]
    async fn records_calls_and_answers_like_rauc() {
        let fake = FakeRauc::new(ab());
        assert_eq!(fake.info().await.unwrap(), ab());
        assert_eq!(
            fake.mark(MarkState::Good, "booted").await.unwrap(),
            ("rootfs.0".into(), "marked slot rootfs.0 as good".into())
        );
        assert_eq!(
            fake.mark(MarkState::Active, "other").await.unwrap(),
            ("rootfs.1".into(), "activated slot rootfs.1".into())
        );
        assert_eq!(fake.primary().await.unwrap(), "rootfs.1");
        assert!(fake.mark(MarkState::Bad, "foo").await.is_err());
        assert_eq!(
            fake.take_calls(),
            vec![
                Call::Info,
                Call::Mark(MarkState::Good, "booted".into()),
                Call::Mark(MarkState::Active, "other".into()),
                Call::Primary,
                Call::Mark(MarkState::Bad, "foo".into()),
            ]
        );
        assert!(fake.calls().is_empty());
    }

    #[tokio::test]
    async fn scripted_results_come_first_then_defaults() {
        let fake = FakeRauc::new(ab());
        let gone = RaucError::Unavailable {
            method: "GetAll",
            subject: Subject::None,
            detail: "The name is not activatable".into(),
        };
        fake.script_info(Err(gone.clone()));
        assert_eq!(fake.info().await, Err(gone));
        assert!(fake.info().await.is_ok());

        let failed = RaucError::InstallFailed {
            bundle: "/b.raucb".into(),
            code: 1,
            message: "Installation error: Compatible mismatch".into(),
        };
        fake.script_install(Err(failed.clone()));
        fake.set_progress_steps(vec![Progress {
            percentage: 100,
            message: "Installing done.".into(),
            depth: 1,
        }]);
        let mut seen = Vec::new();
        let r = fake
            .install_and_wait(Path::new("/b.raucb"), |p| seen.push(p))
            .await;
        assert_eq!(r, Err(failed));
        assert!(seen.is_empty());
        fake.install_and_wait(Path::new("/b.raucb"), |p| seen.push(p))
            .await
            .unwrap();
        assert_eq!(seen.len(), 1);

        fake.add_bundle(
            "/b.raucb",
            BundleInfo {
                compatible: "ssu-sandbox".into(),
                version: "2".into(),
                manifest_hash: String::new(),
            },
        );
        assert_eq!(
            fake.bundle_info(Path::new("/b.raucb"))
                .await
                .unwrap()
                .version,
            "2"
        );
        assert!(fake.bundle_info(Path::new("/c.raucb")).await.is_err());
    }
}
