//! Probes of the running kernel's view: the root mount (`rootfs-readonly`, `dm-verity`) and
//! the taint flags (`kernel-taint`).

use super::files::{self, CMDLINE, MOUNTS, Mount, ReadError, SMALL, clean, shown};
use super::{Ctx, Outcome};

/// The taint bits that say the kernel runs code nobody vouched for: (bit, letter, meaning).
/// Other bits (warnings, staging drivers, livepatches, …) say nothing about tampering.
pub const CHECKED_TAINT_BITS: [(u32, char, &str); 5] = [
    (0, 'P', "proprietary module loaded"),
    (1, 'F', "module force-loaded"),
    (3, 'R', "module force-unloaded"),
    (12, 'O', "out-of-tree module loaded"),
    (13, 'E', "unsigned module loaded"),
];

/// [`CHECKED_TAINT_BITS`] as a mask.
pub fn checked_mask() -> u64 {
    CHECKED_TAINT_BITS
        .iter()
        .fold(0, |m, (bit, _, _)| m | 1 << bit)
}

fn letters(mask: u64) -> Vec<String> {
    CHECKED_TAINT_BITS
        .iter()
        .filter(|(bit, _, _)| mask & 1 << bit != 0)
        .map(|(_, letter, what)| format!("{letter} ({what})"))
        .collect()
}

/// `kernel-taint`: fails when a checked bit is set that `allowed_taint` does not allow.
pub fn kernel_taint(ctx: &Ctx<'_>) -> (Outcome, String) {
    let path = ctx.under("/proc/sys/kernel/tainted");
    let bytes = match files::read(&path, SMALL) {
        Ok(b) => b,
        Err(e) => return (Outcome::Unknown, e.to_string()),
    };
    let Some(value) = std::str::from_utf8(&bytes)
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
    else {
        return (
            Outcome::Unknown,
            format!("{} is not a number: {}", path.display(), shown(&bytes)),
        );
    };
    let allowed = ctx.config.allowed_taint;
    let bad = value & checked_mask() & !allowed;
    let tolerated = value & checked_mask() & allowed;
    let mut evidence = format!("tainted={value}");
    if bad != 0 {
        evidence.push_str(&format!(": {}", letters(bad).join(", ")));
    }
    if tolerated != 0 {
        evidence.push_str(&format!(
            "; allowed by allowed_taint: {}",
            letters(tolerated).join(", ")
        ));
    }
    if bad != 0 {
        (Outcome::Fail, evidence)
    } else {
        (Outcome::Pass, evidence)
    }
}

fn root_mount(ctx: &Ctx<'_>) -> Result<Mount, String> {
    // Init's mount table, not our own: the agent's unit (ProtectSystem=strict) gives the
    // agent a private, read-only view of `/`, which says nothing about the device's `/`.
    let path = ctx.under("/proc/1/mounts");
    let bytes = files::read(&path, MOUNTS).map_err(|e| e.to_string())?;
    files::root_mount(&bytes).ok_or_else(|| format!("{} lists no mount of /", path.display()))
}

/// `rootfs-readonly`: `/` is mounted `ro`.
pub fn rootfs_readonly(ctx: &Ctx<'_>) -> (Outcome, String) {
    let m = match root_mount(ctx) {
        Ok(m) => m,
        Err(e) => return (Outcome::Unknown, e),
    };
    let what = format!(
        "/ is {} ({}) mounted {}",
        clean(&m.device),
        clean(&m.fstype),
        clean(&m.options.join(","))
    );
    if m.options.iter().any(|o| o == "ro") {
        (Outcome::Pass, what)
    } else if m.options.iter().any(|o| o == "rw") {
        (Outcome::Fail, what)
    } else {
        (Outcome::Unknown, format!("{what}: neither ro nor rw"))
    }
}

/// `dm-verity` (only with `require_verity`): the root filesystem's device is a device-mapper
/// device backed by a verity target. Evidence, either suffices:
/// - its dm uuid starts with `CRYPT-VERITY-` (what `veritysetup` and systemd-veritysetup
///   give the devices they open), or
/// - the kernel created it at boot from `dm-mod.create=` with a `verity` table (the device's
///   name matches).
///
/// sysfs does not name a dm device's target type, so these two are how a verity root shows.
pub fn dm_verity(ctx: &Ctx<'_>) -> (Outcome, String) {
    if !ctx.config.require_verity {
        return (
            Outcome::Unknown,
            "not required on this device (require_verity = false)".to_owned(),
        );
    }
    let m = match root_mount(ctx) {
        Ok(m) => m,
        Err(e) => return (Outcome::Unknown, e),
    };
    let cmdline = match files::read(&ctx.under("/proc/cmdline"), CMDLINE) {
        Ok(b) => Some(files::cmdline_params(&b)),
        Err(ReadError::Missing(_)) => None,
        Err(e) => return (Outcome::Unknown, e.to_string()),
    };
    // Without an initramfs the kernel names the device it mounted from `root=` /dev/root.
    let device = match (m.device.as_str(), &cmdline) {
        ("/dev/root", Some(p)) => files::cmdline_value(p, "root").unwrap_or("/dev/root"),
        (d, _) => d,
    }
    .to_owned();
    let Some(dm) = dm_device(ctx, &device) else {
        return (
            Outcome::Fail,
            format!("/ is on {}, not a device-mapper device", clean(&device)),
        );
    };
    let read_attr = |attr: &str| {
        files::read(&ctx.under(format!("/sys/block/{dm}/dm/{attr}")), SMALL)
            .map(|b| String::from_utf8_lossy(&b).trim().to_owned())
    };
    let name = read_attr("name").unwrap_or_default();
    let uuid = read_attr("uuid").unwrap_or_default();
    let shown_dev = format!("/ is on {dm} (name {name:?}, uuid {uuid:?})");
    if uuid.starts_with("CRYPT-VERITY-") {
        return (Outcome::Pass, format!("{shown_dev}: a verity device"));
    }
    if let Some(p) = &cmdline
        && !name.is_empty()
        && created_as_verity(
            files::cmdline_value(p, "dm-mod.create").unwrap_or(""),
            &name,
        )
    {
        return (
            Outcome::Pass,
            format!("{shown_dev}: created by dm-mod.create with a verity table"),
        );
    }
    (
        Outcome::Fail,
        format!("{shown_dev}: no sign of a verity target"),
    )
}

/// The `dm-N` block device behind `device` (`/dev/dm-N` or `/dev/mapper/NAME`), if it is one.
fn dm_device(ctx: &Ctx<'_>, device: &str) -> Option<String> {
    if let Some(n) = device.strip_prefix("/dev/dm-")
        && !n.is_empty()
        && n.bytes().all(|b| b.is_ascii_digit())
    {
        return Some(format!("dm-{n}"));
    }
    let wanted = device.strip_prefix("/dev/mapper/")?;
    // A device has a handful of dm devices; the bound keeps a hostile tree cheap.
    let entries = std::fs::read_dir(ctx.under("/sys/block")).ok()?;
    entries
        .take(1024)
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("dm-"))
        .find(|n| {
            files::read(&ctx.under(format!("/sys/block/{n}/dm/name")), SMALL)
                .is_ok_and(|b| String::from_utf8_lossy(&b).trim() == wanted)
        })
}

/// Whether `dm-mod.create=` (`name,uuid,minor,flags,table[,table…][;device…]`) creates `name`
/// with a verity table (`start length verity …`).
fn created_as_verity(spec: &str, name: &str) -> bool {
    spec.split(';').any(|dev| {
        let mut fields = dev.split(',');
        fields.next().map(str::trim) == Some(name)
            && fields
                .skip(3)
                .any(|table| table.split_ascii_whitespace().nth(2) == Some("verity"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::integrity::testutil::{config, probe as check, put};

    #[test]
    fn taint_passes_when_clean_or_allowed_and_fails_with_letters() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = config(dir.path());
        let taint = |v: &str| put(dir.path(), "proc/sys/kernel/tainted", v);

        taint("0\n");
        assert_eq!(check(&c, kernel_taint), (Outcome::Pass, "tainted=0".into()));
        // W (bit 9, a warning) is not a sign of tampering.
        taint("512\n");
        assert_eq!(check(&c, kernel_taint).0, Outcome::Pass);

        taint("12289\n"); // P + O + E
        let (o, e) = check(&c, kernel_taint);
        assert_eq!(o, Outcome::Fail);
        assert!(
            e.contains("P (proprietary")
                && e.contains("O (out-of-tree")
                && e.contains("E (unsigned"),
            "{e}"
        );
        for (v, letter) in [("2", "F"), ("8", "R")] {
            taint(v);
            let (o, e) = check(&c, kernel_taint);
            assert_eq!(o, Outcome::Fail);
            assert!(e.contains(letter), "{e}");
        }

        // A vendor shipping out-of-tree modules allows O; E still fails.
        c.allowed_taint = 0x1000;
        taint("4096");
        let (o, e) = check(&c, kernel_taint);
        assert_eq!(o, Outcome::Pass);
        assert!(e.contains("allowed by allowed_taint: O"), "{e}");
        taint("12288");
        assert_eq!(check(&c, kernel_taint).0, Outcome::Fail);
    }

    #[test]
    fn garbage_taint_is_unknown_with_what_was_read() {
        let dir = tempfile::tempdir().unwrap();
        let c = config(dir.path());
        assert_eq!(check(&c, kernel_taint).0, Outcome::Unknown, "missing");
        for junk in [
            &b"tainted!\n"[..],
            b"-1",
            b"99999999999999999999999",
            b"\xff\xfe",
            b"",
        ] {
            put(dir.path(), "proc/sys/kernel/tainted", junk);
            let (o, e) = check(&c, kernel_taint);
            assert_eq!(o, Outcome::Unknown, "{junk:?}");
            assert!(e.contains("not a number"), "{e}");
        }
        put(dir.path(), "proc/sys/kernel/tainted", vec![b'1'; 100_000]);
        let (o, e) = check(&c, kernel_taint);
        assert_eq!(o, Outcome::Unknown);
        assert!(e.contains("larger than"), "{e}");
    }

    #[test]
    fn rootfs_readonly_follows_the_last_root_mount() {
        let dir = tempfile::tempdir().unwrap();
        let c = config(dir.path());
        let mounts = |m: &str| put(dir.path(), "proc/1/mounts", m);

        mounts("/dev/root / squashfs ro,relatime 0 0\n");
        let (o, e) = check(&c, rootfs_readonly);
        assert_eq!(o, Outcome::Pass);
        assert_eq!(e, "/ is /dev/root (squashfs) mounted ro,relatime");

        // Remounted read-write later: the last line wins.
        mounts("/dev/root / ext4 ro 0 0\n/dev/root / ext4 rw,relatime 0 0\n");
        assert_eq!(check(&c, rootfs_readonly).0, Outcome::Fail);

        mounts("proc /proc proc rw 0 0\n");
        assert_eq!(check(&c, rootfs_readonly).0, Outcome::Unknown);
        mounts("/dev/root / ext4 defaults 0 0\n");
        assert_eq!(check(&c, rootfs_readonly).0, Outcome::Unknown);
        put(dir.path(), "proc/1/mounts", vec![b' '; 2 * 1024 * 1024]);
        let (o, e) = check(&c, rootfs_readonly);
        assert_eq!(o, Outcome::Unknown);
        assert!(e.contains("larger than"), "{e}");
    }

    #[test]
    fn verity_is_skipped_unless_required() {
        let dir = tempfile::tempdir().unwrap();
        let c = config(dir.path());
        let (o, e) = check(&c, dm_verity);
        assert_eq!(o, Outcome::Unknown);
        assert!(e.contains("require_verity = false"), "{e}");
    }

    /// A root mount, a kernel command line and dm devices `(dm-N, name, uuid)`.
    struct DmCase<'a> {
        mounts: &'a str,
        cmdline: &'a str,
        dm: &'a [(&'a str, &'a str, &'a str)],
        want: Outcome,
        evidence: &'a str,
    }

    #[test]
    fn verity_needs_a_dm_root_with_verity_evidence() {
        // Root dm-0 created as `vroot` with a verity table, after a linear device (so the
        // name has to be matched).
        let create_verity = "root=/dev/dm-0 dm-mod.create=\"lroot,,,ro,0 4096 linear 8:2 0;\
            vroot,,,ro,0 2048 verity 1 8:3 8:4 4096 4096 256 1 sha256 ab cd\" ro\n";
        let cases = [
            DmCase {
                // Opened by veritysetup / systemd-veritysetup (initramfs), by mapper name.
                mounts: "/dev/mapper/root / erofs ro 0 0\n",
                cmdline: "quiet\n",
                dm: &[
                    ("dm-0", "other", ""),
                    ("dm-1", "root", "CRYPT-VERITY-0123abcd-root"),
                ],
                want: Outcome::Pass,
                evidence: "dm-1 (name \"root\", uuid \"CRYPT-VERITY-0123abcd-root\"): a verity",
            },
            DmCase {
                // Created by the kernel from the command line, no initramfs (/dev/root).
                mounts: "/dev/root / squashfs ro 0 0\n",
                cmdline: create_verity,
                dm: &[("dm-0", "vroot", "")],
                want: Outcome::Pass,
                evidence: "created by dm-mod.create with a verity table",
            },
            DmCase {
                mounts: "/dev/mmcblk0p2 / ext4 ro 0 0\n",
                cmdline: create_verity,
                dm: &[("dm-0", "vroot", "")],
                want: Outcome::Fail,
                evidence: "/ is on /dev/mmcblk0p2, not a device-mapper device",
            },
            DmCase {
                // A dm device, but a linear one (the verity layer was swapped out).
                mounts: "/dev/root / ext4 ro 0 0\n",
                cmdline: "root=/dev/dm-0 dm-mod.create=\"vroot,,,ro,0 4096 linear 8:2 0\"\n",
                dm: &[("dm-0", "vroot", "CRYPT-LUKS2-1234-vroot")],
                want: Outcome::Fail,
                evidence: "no sign of a verity target",
            },
            DmCase {
                // The verity table names another device than the root.
                mounts: "/dev/dm-1 / ext4 ro 0 0\n",
                cmdline: create_verity,
                dm: &[("dm-0", "vroot", ""), ("dm-1", "plain", "")],
                want: Outcome::Fail,
                evidence: "no sign of a verity target",
            },
            DmCase {
                mounts: "/dev/mapper/ghost / ext4 ro 0 0\n",
                cmdline: "",
                dm: &[("dm-0", "vroot", "")],
                want: Outcome::Fail,
                evidence: "not a device-mapper device",
            },
            DmCase {
                mounts: "\u{0}\u{1}garbage",
                cmdline: create_verity,
                dm: &[],
                want: Outcome::Unknown,
                evidence: "lists no mount of /",
            },
        ];
        for case in cases {
            let dir = tempfile::tempdir().unwrap();
            let root = dir.path();
            let mut c = config(root);
            c.require_verity = true;
            put(root, "proc/1/mounts", case.mounts);
            put(root, "proc/cmdline", case.cmdline);
            for (dev, name, uuid) in case.dm {
                put(
                    root,
                    &format!("sys/block/{dev}/dm/name"),
                    format!("{name}\n"),
                );
                put(
                    root,
                    &format!("sys/block/{dev}/dm/uuid"),
                    format!("{uuid}\n"),
                );
            }
            let (o, e) = check(&c, dm_verity);
            assert_eq!(o, case.want, "{}: {e}", case.mounts);
            assert!(e.contains(case.evidence), "{e}");
        }
    }

    #[test]
    fn dm_mod_create_parsing_is_strict_about_the_name() {
        assert!(created_as_verity("v,,,ro,0 8 verity 1 a", "v"));
        assert!(!created_as_verity("v,,,ro,0 8 verity 1 a", "w"));
        assert!(!created_as_verity("v,,,ro", "v"));
        assert!(!created_as_verity("", "v"));
        assert!(!created_as_verity(",,,,,,;;;", ""));
        assert!(created_as_verity(
            "a,,,ro,0 8 linear x;v,u,1,ro,0 8 verity",
            "v"
        ));
    }
}
