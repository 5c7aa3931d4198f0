//! Integrity probes: is this device still running what its manufacturer shipped, or has it
//! been rooted or modified (FS.25 TES-0030's exception)?
//!
//! Modelled on fwupd's Host Security ID: each probe has a stable id, reads a few well-known
//! places and reports `pass`, `fail` or `unknown` with evidence a human can check. The probes:
//!
//! | id | reads (under `[integrity] root`) |
//! |---|---|
//! | `rauc-slot` | RAUC's slot status (from the engine, not the filesystem) |
//! | `rootfs-readonly` | `proc/1/mounts` |
//! | `dm-verity` | `proc/1/mounts`, `sys/block/dm-*/dm/{name,uuid}`, `proc/cmdline` |
//! | `kernel-taint` | `proc/sys/kernel/tainted` |
//! | `secure-boot` | the EFI `SecureBoot` variable, a configured command line token, a configured device-tree property |
//! | `setuid` | a bounded walk of the configured directories |
//! | `bootloader-unlock` | a configured marker file or lock variable |
//!
//! Every read is bounded in size, nothing follows a symlink it did not have to, and garbage
//! gives `unknown` with evidence saying what was wrong, never a panic. The probes do blocking
//! file I/O: the engine runs [`run`] on a blocking thread (`src/engine/integrity.rs`).
//!
//! The verdict ([`verdict`]): any `fail` → compromised; otherwise trusted when at least one
//! probe passed; otherwise unknown. `docs/integrity.md` explains each probe's rule.

mod boot;
mod files;
mod kernel;
mod slot;
mod walk;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::config::IntegrityConfig;
use crate::status::{Integrity, IntegrityFinding, IntegrityState, RaucInfo};

pub use kernel::CHECKED_TAINT_BITS;

/// The probes, by their stable ids (config `[integrity] probes`, D-Bus `IntegrityFindings`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ProbeId {
    RaucSlot,
    RootfsReadonly,
    DmVerity,
    KernelTaint,
    SecureBoot,
    Setuid,
    BootloaderUnlock,
}

impl ProbeId {
    /// Every probe, in the order findings are reported.
    pub const ALL: [ProbeId; 7] = [
        ProbeId::RaucSlot,
        ProbeId::RootfsReadonly,
        ProbeId::DmVerity,
        ProbeId::KernelTaint,
        ProbeId::SecureBoot,
        ProbeId::Setuid,
        ProbeId::BootloaderUnlock,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ProbeId::RaucSlot => "rauc-slot",
            ProbeId::RootfsReadonly => "rootfs-readonly",
            ProbeId::DmVerity => "dm-verity",
            ProbeId::KernelTaint => "kernel-taint",
            ProbeId::SecureBoot => "secure-boot",
            ProbeId::Setuid => "setuid",
            ProbeId::BootloaderUnlock => "bootloader-unlock",
        }
    }
}

/// What one probe concluded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Pass,
    Fail,
    /// The probe could not tell (not exposed, not configured, unreadable, malformed).
    Unknown,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Pass => "pass",
            Outcome::Fail => "fail",
            Outcome::Unknown => "unknown",
        }
    }
}

/// What a probe sees: the configuration, the directory standing for `/`, RAUC's view.
pub struct Ctx<'a> {
    pub config: &'a IntegrityConfig,
    pub rauc: &'a RaucInfo,
    /// This agent is confirming the booted slot, or rolling back from it: a `bad` mark on it
    /// is (or is about to be) the agent's own verdict, not a sign of a forced boot.
    pub judging_booted_slot: bool,
}

impl Ctx<'_> {
    /// `path` (absolute on the device, or relative to its `/`) under the configured root.
    pub fn under(&self, path: impl AsRef<Path>) -> PathBuf {
        under(&self.config.root, path.as_ref())
    }
}

/// `path` resolved under `root`: `/proc/cmdline` under `/tmp/x` is `/tmp/x/proc/cmdline`.
pub fn under(root: &Path, path: &Path) -> PathBuf {
    root.join(path.strip_prefix("/").unwrap_or(path))
}

/// Runs every configured probe (in [`ProbeId::ALL`] order) and judges the result. Blocking.
/// `judging_booted_slot`: see [`Ctx::judging_booted_slot`].
pub fn run(config: &IntegrityConfig, rauc: &RaucInfo, judging_booted_slot: bool) -> Integrity {
    let ctx = Ctx {
        config,
        rauc,
        judging_booted_slot,
    };
    let findings: Vec<IntegrityFinding> = ProbeId::ALL
        .into_iter()
        .filter(|p| config.probes.contains(p))
        .map(|p| {
            let (outcome, evidence) = probe(p, &ctx);
            IntegrityFinding {
                probe: p.as_str().to_owned(),
                outcome: outcome.as_str().to_owned(),
                evidence,
            }
        })
        .collect();
    Integrity {
        state: verdict(&findings),
        findings,
    }
}

fn probe(id: ProbeId, ctx: &Ctx<'_>) -> (Outcome, String) {
    match id {
        ProbeId::RaucSlot => slot::rauc_slot(ctx.rauc, ctx.judging_booted_slot),
        ProbeId::RootfsReadonly => kernel::rootfs_readonly(ctx),
        ProbeId::DmVerity => kernel::dm_verity(ctx),
        ProbeId::KernelTaint => kernel::kernel_taint(ctx),
        ProbeId::SecureBoot => boot::secure_boot(ctx),
        ProbeId::Setuid => walk::setuid(ctx),
        ProbeId::BootloaderUnlock => boot::bootloader_unlock(ctx),
    }
}

/// Any failure → compromised; otherwise trusted if at least one probe passed; else unknown.
pub fn verdict(findings: &[IntegrityFinding]) -> IntegrityState {
    if findings.iter().any(|f| f.outcome == Outcome::Fail.as_str()) {
        IntegrityState::Compromised
    } else if findings.iter().any(|f| f.outcome == Outcome::Pass.as_str()) {
        IntegrityState::Trusted
    } else {
        IntegrityState::Unknown
    }
}

/// Checks the probe settings; `Err((key, reason))` names the offending `[integrity]` key.
pub fn validate(c: &IntegrityConfig) -> Result<(), (&'static str, String)> {
    if !c.root.is_absolute() {
        return Err((
            "integrity.root",
            format!("{} is not an absolute path", c.root.display()),
        ));
    }
    for (i, p) in c.probes.iter().enumerate() {
        if c.probes[..i].contains(p) {
            return Err((
                "integrity.probes",
                format!("{} is listed twice", p.as_str()),
            ));
        }
    }
    let stray = c.allowed_taint & !kernel::checked_mask();
    if stray != 0 {
        return Err((
            "integrity.allowed_taint",
            format!(
                "{:#x} has bits the kernel-taint probe does not check ({stray:#x}); allowed are \
                 P=0x1, F=0x2, R=0x8, O=0x1000, E=0x2000",
                c.allowed_taint
            ),
        ));
    }
    if let Some(t) = &c.secure_boot_cmdline
        && (t.is_empty() || t.starts_with('=') || t.contains(|ch: char| ch.is_whitespace()))
    {
        return Err((
            "integrity.secure_boot_cmdline",
            "must be one command line token, `key` or `key=value`, without spaces".to_owned(),
        ));
    }
    if let Some(p) = &c.secure_boot_dt_property
        && (p.as_os_str().is_empty() || p.is_absolute() || escapes(p))
    {
        return Err((
            "integrity.secure_boot_dt_property",
            "must be a path relative to /proc/device-tree without `..`".to_owned(),
        ));
    }
    if c.secure_boot_dt_value.is_empty() {
        return Err((
            "integrity.secure_boot_dt_value",
            "must not be empty".to_owned(),
        ));
    }
    if c.lock_value.is_empty() {
        return Err(("integrity.lock_value", "must not be empty".to_owned()));
    }
    let device_paths: [(&'static str, &[PathBuf]); 4] = [
        ("integrity.setuid_paths", &c.setuid_paths),
        ("integrity.setuid_allowed", &c.setuid_allowed),
        ("integrity.unlock_marker", c.unlock_marker.as_slice()),
        ("integrity.lock_variable", c.lock_variable.as_slice()),
    ];
    for (key, paths) in device_paths {
        if let Some(p) = paths.iter().find(|p| !p.is_absolute() || escapes(p)) {
            return Err((
                key,
                format!(
                    "{} must be an absolute path without `..` (it is read under integrity.root)",
                    p.display()
                ),
            ));
        }
    }
    Ok(())
}

/// Whether `p` has a `..` component (which could leave the configured root).
fn escapes(p: &Path) -> bool {
    p.components()
        .any(|c| matches!(c, std::path::Component::ParentDir))
}

#[cfg(test)]
pub(crate) mod testutil {
    //! Fixture trees for the probes' tests.
    use std::path::Path;

    use super::{Ctx, Outcome};
    use crate::config::IntegrityConfig;
    use crate::status::RaucInfo;

    /// Runs one filesystem probe with configuration `c` (RAUC unknown).
    pub fn probe(c: &IntegrityConfig, f: fn(&Ctx<'_>) -> (Outcome, String)) -> (Outcome, String) {
        f(&Ctx {
            config: c,
            rauc: &RaucInfo::default(),
            judging_booted_slot: false,
        })
    }

    /// Writes `content` at `rel` under `root`, creating directories.
    pub fn put(root: &Path, rel: &str, content: impl AsRef<[u8]>) {
        let path = root.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, content).unwrap();
    }

    /// A configuration whose root is `root`, all probes enabled.
    pub fn config(root: &Path) -> IntegrityConfig {
        IntegrityConfig {
            root: root.to_owned(),
            ..IntegrityConfig::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::testutil::{config, put};
    use super::*;
    use crate::status::{Availability, SlotInfo};

    fn finding(outcome: &str) -> IntegrityFinding {
        IntegrityFinding {
            probe: "x".into(),
            outcome: outcome.into(),
            evidence: String::new(),
        }
    }

    #[test]
    fn verdict_rules() {
        use IntegrityState::*;
        let cases: [(&[&str], IntegrityState); 6] = [
            (&[], Unknown),
            (&["unknown", "unknown"], Unknown),
            (&["pass"], Trusted),
            (&["pass", "unknown"], Trusted),
            (&["pass", "fail", "unknown"], Compromised),
            (&["unknown", "fail"], Compromised),
        ];
        for (outcomes, want) in cases {
            let f: Vec<_> = outcomes.iter().map(|o| finding(o)).collect();
            assert_eq!(verdict(&f), want, "{outcomes:?}");
        }
    }

    fn rauc_ok() -> RaucInfo {
        RaucInfo {
            availability: Availability::Running,
            boot_slot: "A".into(),
            slots: vec![SlotInfo {
                name: "rootfs.0".into(),
                bootname: "A".into(),
                state: "booted".into(),
                boot_status: "good".into(),
                ..SlotInfo::default()
            }],
            ..RaucInfo::default()
        }
    }

    /// A clean device tree, then one change at a time makes it compromised.
    #[test]
    fn a_clean_tree_is_trusted_and_one_bad_fact_makes_it_compromised() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        put(
            root,
            "proc/1/mounts",
            "/dev/root / squashfs ro,relatime 0 0\n",
        );
        put(root, "proc/sys/kernel/tainted", "0\n");
        put(root, "proc/cmdline", "root=/dev/mmcblk0p2 ro\n");
        std::fs::create_dir_all(root.join("usr/bin")).unwrap();
        let mut c = config(root);
        c.setuid_paths = vec!["/usr/bin".into()];
        let got = run(&c, &rauc_ok(), false);
        assert_eq!(got.state, IntegrityState::Trusted, "{got:#?}");
        let ids: Vec<&str> = got.findings.iter().map(|f| f.probe.as_str()).collect();
        assert_eq!(
            ids,
            [
                "rauc-slot",
                "rootfs-readonly",
                "dm-verity",
                "kernel-taint",
                "secure-boot",
                "setuid",
                "bootloader-unlock"
            ]
        );

        put(root, "proc/sys/kernel/tainted", "8192\n");
        let got = run(&c, &rauc_ok(), false);
        assert_eq!(got.state, IntegrityState::Compromised);
        let taint = got.findings.iter().find(|f| f.probe == "kernel-taint");
        assert!(taint.unwrap().evidence.contains('E'), "{got:#?}");
    }

    #[test]
    fn only_configured_probes_run_and_none_means_unknown() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = config(dir.path());
        c.probes = vec![ProbeId::KernelTaint];
        put(dir.path(), "proc/sys/kernel/tainted", "0");
        let got = run(&c, &RaucInfo::default(), false);
        assert_eq!(got.findings.len(), 1);
        assert_eq!(got.state, IntegrityState::Trusted);
        c.probes.clear();
        let got = run(&c, &RaucInfo::default(), false);
        assert!(got.findings.is_empty());
        assert_eq!(got.state, IntegrityState::Unknown);
    }

    #[test]
    fn an_empty_root_is_unknown_not_trusted() {
        let dir = tempfile::tempdir().unwrap();
        let got = run(&config(dir.path()), &RaucInfo::default(), false);
        assert_eq!(got.state, IntegrityState::Unknown, "{got:#?}");
        assert!(got.findings.iter().all(|f| f.outcome == "unknown"));
    }

    #[test]
    fn validation_refuses_hostile_settings() {
        let ok = IntegrityConfig::default();
        assert_eq!(validate(&ok), Ok(()));
        let cases: Vec<(IntegrityConfig, &str)> = vec![
            (
                IntegrityConfig {
                    root: "relative/root".into(),
                    ..ok.clone()
                },
                "integrity.root",
            ),
            (
                IntegrityConfig {
                    probes: vec![ProbeId::Setuid, ProbeId::Setuid],
                    ..ok.clone()
                },
                "integrity.probes",
            ),
            (
                IntegrityConfig {
                    allowed_taint: 1 << 9,
                    ..ok.clone()
                },
                "integrity.allowed_taint",
            ),
            (
                IntegrityConfig {
                    secure_boot_cmdline: Some("a b".into()),
                    ..ok.clone()
                },
                "integrity.secure_boot_cmdline",
            ),
            (
                IntegrityConfig {
                    secure_boot_dt_property: Some("../../etc/shadow".into()),
                    ..ok.clone()
                },
                "integrity.secure_boot_dt_property",
            ),
            (
                IntegrityConfig {
                    setuid_paths: vec!["/usr/../../bin".into()],
                    ..ok.clone()
                },
                "integrity.setuid_paths",
            ),
            (
                IntegrityConfig {
                    unlock_marker: Some("relative".into()),
                    ..ok.clone()
                },
                "integrity.unlock_marker",
            ),
            (
                IntegrityConfig {
                    lock_value: String::new(),
                    ..ok.clone()
                },
                "integrity.lock_value",
            ),
        ];
        for (c, key) in cases {
            assert_eq!(validate(&c).map_err(|e| e.0), Err(key), "{c:?}");
        }
    }
}
