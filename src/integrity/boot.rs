//! Probes of the boot chain: `secure-boot` and `bootloader-unlock`.
//!
//! A source the integrator configured (a command line token, a device-tree property, a marker,
//! a lock variable) is a promise that this device exposes it: when it is absent, that is
//! itself evidence (a replaced or downgraded bootloader does not set it) and fails the probe.
//! Otherwise an attacker who controls the bootloader could drop it and turn `fail` into
//! `unknown`, and the other probes would still make the device look trusted. Only the EFI
//! variable, which exists on EFI machines alone, counts as "not exposed" when missing.

use std::path::Path;

use super::files::{self, CMDLINE, ReadError, SMALL, shown};
use super::{Ctx, Outcome};

/// The EFI global variable `SecureBoot`: 4 attribute bytes, then 1 data byte (1 = enforcing).
pub const EFI_SECURE_BOOT: &str =
    "/sys/firmware/efi/efivars/SecureBoot-8be4df61-93ca-11d2-aa0d-00e098032b8c";

/// What one source says.
#[derive(Debug, PartialEq, Eq)]
enum Says {
    On(String),
    Off(String),
    /// Exposed but unreadable or malformed.
    Unclear(String),
}

/// `secure-boot`: any exposed source saying "off" fails; an unclear one makes it unknown;
/// otherwise a source saying "on" passes; no source at all is unknown.
pub fn secure_boot(ctx: &Ctx<'_>) -> (Outcome, String) {
    let c = ctx.config;
    let mut said = Vec::new();
    if let Some(s) = efi_secure_boot(ctx) {
        said.push(s);
    }
    if let Some(token) = &c.secure_boot_cmdline {
        said.push(cmdline_token(ctx, token));
    }
    if let Some(prop) = &c.secure_boot_dt_property {
        said.push(dt_property(ctx, prop, &c.secure_boot_dt_value));
    }
    if said.is_empty() {
        return (
            Outcome::Unknown,
            "not exposed: no EFI SecureBoot variable, and neither secure_boot_cmdline nor \
             secure_boot_dt_property is configured"
                .to_owned(),
        );
    }
    combine(said)
}

fn combine(said: Vec<Says>) -> (Outcome, String) {
    let outcome = if said.iter().any(|s| matches!(s, Says::Off(_))) {
        Outcome::Fail
    } else if said.iter().any(|s| matches!(s, Says::Unclear(_))) {
        Outcome::Unknown
    } else {
        Outcome::Pass
    };
    let evidence = said
        .into_iter()
        .map(|s| match s {
            Says::On(e) | Says::Off(e) | Says::Unclear(e) => e,
        })
        .collect::<Vec<_>>()
        .join("; ");
    (outcome, evidence)
}

fn efi_secure_boot(ctx: &Ctx<'_>) -> Option<Says> {
    let bytes = match files::read(&ctx.under(EFI_SECURE_BOOT), SMALL) {
        Ok(b) => b,
        Err(ReadError::Missing(_)) => return None,
        Err(e) => return Some(Says::Unclear(e.to_string())),
    };
    Some(match bytes.as_slice() {
        [_, _, _, _, 1] => Says::On("EFI SecureBoot=1".to_owned()),
        [_, _, _, _, 0] => Says::Off("EFI SecureBoot=0 (disabled)".to_owned()),
        [_, _, _, _, v] => Says::Unclear(format!("EFI SecureBoot has unexpected value {v}")),
        other => Says::Unclear(format!(
            "EFI SecureBoot variable is malformed ({} bytes, expected 5)",
            other.len()
        )),
    })
}

/// `key=value` (or a bare `key`) on the kernel command line.
fn cmdline_token(ctx: &Ctx<'_>, token: &str) -> Says {
    let bytes = match files::read(&ctx.under("/proc/cmdline"), CMDLINE) {
        Ok(b) => b,
        Err(e) => return Says::Unclear(e.to_string()),
    };
    let params = files::cmdline_params(&bytes);
    let (key, want) = match token.split_once('=') {
        Some((k, v)) => (k, Some(v)),
        None => (token, None),
    };
    match (files::cmdline_value(&params, key), want) {
        (None, _) => Says::Off(format!("{token} is not on the kernel command line")),
        (Some(_), None) => Says::On(format!("{token} is on the kernel command line")),
        (Some(v), Some(w)) if v == w => Says::On(format!("{token} is on the kernel command line")),
        (Some(v), Some(_)) => Says::Off(format!(
            "kernel command line has {key}={}, expected {token}",
            shown(v.as_bytes())
        )),
    }
}

/// A device-tree property under /proc/device-tree: its value (trailing NULs and whitespace
/// removed) equals `want`, or, for a 4-byte cell, its big-endian number written in decimal
/// equals `want`.
fn dt_property(ctx: &Ctx<'_>, prop: &Path, want: &str) -> Says {
    let path = ctx.under(Path::new("/proc/device-tree").join(prop));
    let bytes = match files::read(&path, SMALL) {
        Ok(b) => b,
        Err(ReadError::Missing(_)) => {
            return Says::Off(format!(
                "device-tree property {} is missing",
                prop.display()
            ));
        }
        Err(e) => return Says::Unclear(e.to_string()),
    };
    let text = String::from_utf8_lossy(&bytes);
    let trimmed = text.trim_end_matches(['\0', '\n', ' ']);
    let cell = <[u8; 4]>::try_from(bytes.as_slice())
        .ok()
        .map(|b| u32::from_be_bytes(b).to_string());
    if trimmed == want || cell.as_deref() == Some(want) {
        Says::On(format!("device-tree {} = {want}", prop.display()))
    } else {
        let got = cell.unwrap_or_else(|| shown(trimmed.as_bytes()));
        Says::Off(format!(
            "device-tree {} = {got}, expected {want}",
            prop.display()
        ))
    }
}

/// `bootloader-unlock`: the configured marker must not exist; the configured lock variable
/// must read `lock_value`. Unknown when neither is configured.
pub fn bootloader_unlock(ctx: &Ctx<'_>) -> (Outcome, String) {
    let c = ctx.config;
    let mut said = Vec::new();
    if let Some(marker) = &c.unlock_marker {
        said.push(match std::fs::symlink_metadata(ctx.under(marker)) {
            Ok(_) => Says::Off(format!("unlock marker {} exists", marker.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Says::On(format!("no unlock marker {}", marker.display()))
            }
            Err(e) => Says::Unclear(format!("cannot look at {}: {e}", marker.display())),
        });
    }
    if let Some(var) = &c.lock_variable {
        let want = &c.lock_value;
        said.push(match files::read(&ctx.under(var), SMALL) {
            Ok(bytes) => {
                let text = String::from_utf8_lossy(&bytes);
                let got = text.trim_matches(|ch: char| ch == '\0' || ch.is_whitespace());
                if got == want {
                    Says::On(format!("{} = {want}", var.display()))
                } else {
                    Says::Off(format!(
                        "{} = {}, expected {want:?}",
                        var.display(),
                        shown(got.as_bytes())
                    ))
                }
            }
            Err(ReadError::Missing(_)) => {
                Says::Off(format!("lock variable {} is missing", var.display()))
            }
            Err(e) => Says::Unclear(e.to_string()),
        });
    }
    if said.is_empty() {
        return (
            Outcome::Unknown,
            "not configured (unlock_marker, lock_variable)".to_owned(),
        );
    }
    combine(said)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::integrity::testutil::{config, probe as check, put};

    const EFI: &str = "sys/firmware/efi/efivars/SecureBoot-8be4df61-93ca-11d2-aa0d-00e098032b8c";

    #[test]
    fn efi_variable_on_off_and_malformed() {
        let dir = tempfile::tempdir().unwrap();
        let c = config(dir.path());
        let (o, e) = check(&c, secure_boot);
        assert_eq!(o, Outcome::Unknown);
        assert!(e.contains("not exposed"), "{e}");

        put(dir.path(), EFI, [6u8, 0, 0, 0, 1]);
        assert_eq!(
            check(&c, secure_boot),
            (Outcome::Pass, "EFI SecureBoot=1".into())
        );
        put(dir.path(), EFI, [6u8, 0, 0, 0, 0]);
        assert_eq!(check(&c, secure_boot).0, Outcome::Fail);

        for junk in [
            &[6u8, 0, 0][..],
            &[][..],
            &[6, 0, 0, 0, 7][..],
            &[6, 0, 0, 0, 1, 1][..],
        ] {
            put(dir.path(), EFI, junk);
            let (o, e) = check(&c, secure_boot);
            assert_eq!(o, Outcome::Unknown, "{junk:?}: {e}");
            assert!(e.contains("EFI SecureBoot"), "{e}");
        }
        put(dir.path(), EFI, vec![1u8; 100_000]);
        let (o, e) = check(&c, secure_boot);
        assert_eq!(o, Outcome::Unknown);
        assert!(e.contains("larger than"), "{e}");
    }

    #[test]
    fn cmdline_token_present_passes_other_value_or_absent_fails() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = config(dir.path());
        c.secure_boot_cmdline = Some("androidboot.verifiedbootstate=green".into());
        let cmdline = |s: &str| put(dir.path(), "proc/cmdline", s);

        cmdline("console=ttyS0 androidboot.verifiedbootstate=green ro\n");
        assert_eq!(check(&c, secure_boot).0, Outcome::Pass);
        cmdline("androidboot.verifiedbootstate=orange\n");
        let (o, e) = check(&c, secure_boot);
        assert_eq!(o, Outcome::Fail);
        assert!(e.contains("\"orange\""), "{e}");
        cmdline("console=ttyS0\n");
        let (o, e) = check(&c, secure_boot);
        assert_eq!(o, Outcome::Fail);
        assert!(e.contains("not on the kernel command line"), "{e}");

        // A bare flag.
        c.secure_boot_cmdline = Some("secureboot".into());
        cmdline("quiet secureboot\n");
        assert_eq!(check(&c, secure_boot).0, Outcome::Pass);

        // Unreadable: unknown.
        std::fs::remove_file(dir.path().join("proc/cmdline")).unwrap();
        assert_eq!(check(&c, secure_boot).0, Outcome::Unknown);
    }

    #[test]
    fn device_tree_property_as_cell_or_string() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = config(dir.path());
        c.secure_boot_dt_property = Some("chosen/secure-boot".into());
        let prop = |v: &[u8]| put(dir.path(), "proc/device-tree/chosen/secure-boot", v);

        prop(&[0, 0, 0, 1]);
        assert_eq!(check(&c, secure_boot).0, Outcome::Pass);
        prop(b"1\0");
        assert_eq!(check(&c, secure_boot).0, Outcome::Pass);
        prop(&[0, 0, 0, 0]);
        let (o, e) = check(&c, secure_boot);
        assert_eq!(o, Outcome::Fail);
        assert!(e.contains("= 0, expected 1"), "{e}");
        prop(b"\xff\xfe garbage");
        assert_eq!(check(&c, secure_boot).0, Outcome::Fail);

        c.secure_boot_dt_value = "okay".into();
        prop(b"okay\0");
        assert_eq!(check(&c, secure_boot).0, Outcome::Pass);
        std::fs::remove_file(dir.path().join("proc/device-tree/chosen/secure-boot")).unwrap();
        let (o, e) = check(&c, secure_boot);
        assert_eq!(o, Outcome::Fail);
        assert!(e.contains("missing"), "{e}");
    }

    #[test]
    fn any_source_saying_off_wins() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = config(dir.path());
        c.secure_boot_cmdline = Some("sb=1".into());
        put(dir.path(), EFI, [6u8, 0, 0, 0, 1]);
        put(dir.path(), "proc/cmdline", "sb=0\n");
        let (o, e) = check(&c, secure_boot);
        assert_eq!(o, Outcome::Fail);
        assert!(e.contains("EFI SecureBoot=1; "), "{e}");
    }

    #[test]
    fn unlock_marker_and_lock_variable() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = config(dir.path());
        let (o, e) = check(&c, bootloader_unlock);
        assert_eq!(o, Outcome::Unknown);
        assert!(e.contains("not configured"), "{e}");

        c.unlock_marker = Some("/var/lib/boot/unlocked".into());
        assert_eq!(check(&c, bootloader_unlock).0, Outcome::Pass);
        put(dir.path(), "var/lib/boot/unlocked", "");
        let (o, e) = check(&c, bootloader_unlock);
        assert_eq!(o, Outcome::Fail);
        assert!(e.contains("exists"), "{e}");
        std::fs::remove_file(dir.path().join("var/lib/boot/unlocked")).unwrap();

        c.lock_variable = Some("/proc/device-tree/chosen/lock-state".into());
        let var = |v: &[u8]| put(dir.path(), "proc/device-tree/chosen/lock-state", v);
        var(b"locked\0");
        assert_eq!(check(&c, bootloader_unlock).0, Outcome::Pass);
        var(b"unlocked\n");
        let (o, e) = check(&c, bootloader_unlock);
        assert_eq!(o, Outcome::Fail);
        assert!(e.contains("\"unlocked\""), "{e}");
        var(&[0xffu8; 10_000]);
        assert_eq!(check(&c, bootloader_unlock).0, Outcome::Unknown);
        std::fs::remove_file(dir.path().join("proc/device-tree/chosen/lock-state")).unwrap();
        assert_eq!(check(&c, bootloader_unlock).0, Outcome::Fail);
    }
}
