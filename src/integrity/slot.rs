//! `rauc-slot`: the system booted from a slot RAUC manages, and RAUC's view of it is
//! consistent.
//!
//! "Consistent" means, from RAUC's own slot status:
//! 1. exactly one slot has state `booted` (none: the system did not boot from a RAUC slot —
//!    a USB stick, a netboot, a hand-flashed partition; more than one is nonsense);
//! 2. when RAUC reports `BootSlot`, it is that slot's bootname (the bootloader and RAUC
//!    agree on what was booted);
//! 3. the bootloader does not call that slot `bad` (a bad slot only runs when something
//!    forced it) — unless this agent is judging that slot: after an update it marks the new
//!    slot bad itself when the health checks fail, and the mark stands until the reboot back.
//!
//! A slot without installation records passes: the factory image was not installed by RAUC,
//! and that is no sign of tampering. Unknown while RAUC is unavailable.

use super::Outcome;
use crate::status::{Availability, RaucInfo};

pub fn rauc_slot(rauc: &RaucInfo, judging_booted_slot: bool) -> (Outcome, String) {
    if rauc.availability != Availability::Running {
        return (
            Outcome::Unknown,
            format!("RAUC is {}", rauc.availability.as_str()),
        );
    }
    let booted: Vec<_> = rauc.slots.iter().filter(|s| s.state == "booted").collect();
    let slot = match booted.as_slice() {
        [one] => *one,
        [] => {
            return (
                Outcome::Fail,
                format!(
                    "no RAUC slot is booted (BootSlot {:?}, {} slots): the system did not \
                     boot from a slot RAUC manages",
                    rauc.boot_slot,
                    rauc.slots.len()
                ),
            );
        }
        many => {
            let names: Vec<&str> = many.iter().map(|s| s.name.as_str()).collect();
            return (
                Outcome::Fail,
                format!("several slots claim to be booted: {}", names.join(", ")),
            );
        }
    };
    if !rauc.boot_slot.is_empty() && rauc.boot_slot != slot.bootname {
        return (
            Outcome::Fail,
            format!(
                "RAUC's BootSlot is {:?} but the booted slot {} has bootname {:?}",
                rauc.boot_slot, slot.name, slot.bootname
            ),
        );
    }
    if slot.boot_status == "bad" && judging_booted_slot {
        return (
            Outcome::Pass,
            format!(
                "booted slot {} ({}) is marked bad by this agent's health check: rolling back",
                slot.name, slot.bootname
            ),
        );
    }
    if slot.boot_status == "bad" {
        return (
            Outcome::Fail,
            format!(
                "booted slot {} ({}) is marked bad by the bootloader",
                slot.name, slot.bootname
            ),
        );
    }
    let installed = if slot.bundle_version.is_empty() {
        "no RAUC installation recorded (factory image)".to_owned()
    } else {
        format!("bundle {}", slot.bundle_version)
    };
    let status = if slot.boot_status.is_empty() {
        "unknown"
    } else {
        &slot.boot_status
    };
    (
        Outcome::Pass,
        format!(
            "booted slot {} ({}), boot status {status}, {installed}",
            slot.name, slot.bootname
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::SlotInfo;

    fn slot(name: &str, bootname: &str, state: &str, status: &str) -> SlotInfo {
        SlotInfo {
            name: name.into(),
            class: "rootfs".into(),
            bootname: bootname.into(),
            state: state.into(),
            boot_status: status.into(),
            ..SlotInfo::default()
        }
    }

    fn info(boot_slot: &str, slots: Vec<SlotInfo>) -> RaucInfo {
        RaucInfo {
            availability: Availability::Running,
            boot_slot: boot_slot.into(),
            slots,
            ..RaucInfo::default()
        }
    }

    #[test]
    fn table() {
        use Outcome::*;
        let a_booted = || slot("rootfs.0", "A", "booted", "good");
        let b_idle = || slot("rootfs.1", "B", "inactive", "good");
        let cases = [
            (info("A", vec![a_booted(), b_idle()]), Pass, "factory image"),
            (
                info("B", vec![a_booted(), b_idle()]),
                Fail,
                "BootSlot is \"B\"",
            ),
            (info("", vec![a_booted(), b_idle()]), Pass, "rootfs.0 (A)"),
            (
                info("A", vec![slot("rootfs.0", "A", "booted", ""), b_idle()]),
                Pass,
                "boot status unknown",
            ),
            (
                info("A", vec![slot("rootfs.0", "A", "booted", "bad"), b_idle()]),
                Fail,
                "marked bad",
            ),
            (info("A", vec![b_idle()]), Fail, "no RAUC slot is booted"),
            (info("A", vec![]), Fail, "no RAUC slot is booted"),
            (
                info(
                    "A",
                    vec![a_booted(), slot("rootfs.1", "B", "booted", "good")],
                ),
                Fail,
                "several slots",
            ),
            (RaucInfo::default(), Unknown, "RAUC is unknown"),
            (
                RaucInfo {
                    availability: Availability::Unavailable,
                    ..RaucInfo::default()
                },
                Unknown,
                "RAUC is unavailable",
            ),
        ];
        for (rauc, want, needle) in cases {
            let (o, e) = rauc_slot(&rauc, false);
            assert_eq!(o, want, "{rauc:?}: {e}");
            assert!(e.contains(needle), "{e}");
        }
        let mut later = info("B", vec![a_booted()]);
        later.slots[0] = slot("rootfs.1", "B", "booted", "good");
        later.slots[0].bundle_version = "1.0.1".into();
        let (o, e) = rauc_slot(&later, false);
        assert_eq!(o, Pass);
        assert!(e.contains("bundle 1.0.1"), "{e}");
    }

    /// A bad mark is the agent's own while it judges the booted slot; everything else that is
    /// wrong still fails then.
    #[test]
    fn the_agents_own_bad_mark_is_no_finding() {
        let a_idle = || slot("rootfs.0", "A", "inactive", "good");
        let bad = info("B", vec![a_idle(), slot("rootfs.1", "B", "booted", "bad")]);
        assert_eq!(rauc_slot(&bad, false).0, Outcome::Fail);
        let (o, e) = rauc_slot(&bad, true);
        assert_eq!(o, Outcome::Pass, "{e}");
        assert!(e.contains("this agent's health check"), "{e}");
        let (o, e) = rauc_slot(&info("B", vec![a_idle()]), true);
        assert_eq!(o, Outcome::Fail, "{e}");
        let mismatch = info("A", vec![a_idle(), slot("rootfs.1", "B", "booted", "bad")]);
        assert_eq!(rauc_slot(&mismatch, true).0, Outcome::Fail);
    }
}
