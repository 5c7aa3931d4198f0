//! Tests of the sandbox harness itself (no agent needed): the private bus,
//! `rauc service` with its custom bootloader, and the ModemManager mock.

mod common;

use std::fs;

use common::{Options, Sandbox, process_alive};

fn without_agent() -> Sandbox {
    Sandbox::up_with(Options {
        agent: false,
        ..Options::default()
    })
}

fn sim_property(sandbox: &Sandbox, sim: &str, name: &str) -> String {
    let out = sandbox.busctl(&[
        "get-property",
        "org.freedesktop.ModemManager1",
        sim,
        "org.freedesktop.ModemManager1.Sim",
        name,
    ]);
    assert!(out.status.success(), "{out:?}");
    common::busctl_value(&out.stdout)
}

#[test]
fn rauc_and_modem_answer_and_down_stops_everything() {
    let sandbox = without_agent();

    assert_eq!(sandbox.rauc_property("Compatible"), "ssu-sandbox");
    assert_eq!(sandbox.rauc_property("BootSlot"), "A");
    assert_eq!(sandbox.rauc_property("Operation"), "idle");

    // One modem, listed by the ObjectManager of ModemManager's root object.
    let out = sandbox.busctl(&[
        "call",
        "org.freedesktop.ModemManager1",
        "/org/freedesktop/ModemManager1",
        "org.freedesktop.DBus.ObjectManager",
        "GetManagedObjects",
    ]);
    assert!(out.status.success(), "{out:?}");
    let objects = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        objects.starts_with("a{oa{sa{sv}}} 1 \"/org/freedesktop/ModemManager1/Modems/"),
        "{objects}"
    );
    assert!(objects.contains("\"RegistrationState\" u 1"), "{objects}");
    assert!(
        objects.contains("\"OperatorCode\" s \"26201\""),
        "{objects}"
    );
    assert!(
        objects.contains("\"Model\" s \"SandboxModem LTE\""),
        "{objects}"
    );

    // Its SIM carries what the template lacks.
    let modem = objects.split('"').nth(1).unwrap().to_string();
    let out = sandbox.busctl(&[
        "get-property",
        "org.freedesktop.ModemManager1",
        &modem,
        "org.freedesktop.ModemManager1.Modem",
        "Sim",
    ]);
    assert!(out.status.success(), "{out:?}");
    let sim = common::busctl_value(&out.stdout);
    assert_eq!(sim_property(&sandbox, &sim, "OperatorIdentifier"), "26201");
    assert_eq!(
        sim_property(&sandbox, &sim, "OperatorName"),
        "Sandbox Telecom"
    );
    assert_eq!(
        sim_property(&sandbox, &sim, "SimIdentifier"),
        "8949000000000001234"
    );
    assert_eq!(sim_property(&sandbox, &sim, "Imsi"), "262010000001234");

    let pids = sandbox.pids();
    assert_eq!(pids.len(), 3, "bus, rauc and modem pid files");
    assert!(pids.iter().all(|&p| process_alive(p)));
    drop(sandbox);
    for pid in pids {
        assert!(!process_alive(pid), "pid {pid} still alive after down");
    }
}

#[test]
fn modem_mock_swaps_sim_and_restarts() {
    let sandbox = without_agent();

    let swapped = sandbox.modem(&[
        "swap-sim",
        "23410",
        "8944000000000009999",
        "234100000009999",
    ]);
    let (modem, sim) = swapped
        .trim()
        .split_once(' ')
        .expect("new modem and SIM paths");
    assert_eq!(sim_property(&sandbox, sim, "OperatorIdentifier"), "23410");
    assert_eq!(
        sim_property(&sandbox, sim, "SimIdentifier"),
        "8944000000000009999"
    );
    sandbox.modem(&["set-registration", "5"]);
    let out = sandbox.busctl(&[
        "get-property",
        "org.freedesktop.ModemManager1",
        modem,
        "org.freedesktop.ModemManager1.Modem.Modem3gpp",
        "RegistrationState",
    ]);
    assert_eq!(common::busctl_value(&out.stdout), "5");

    // "ModemManager restarts": gone from the bus, then back with the default SIM.
    sandbox.stop("modem");
    let has_owner = || {
        let out = sandbox.busctl(&[
            "call",
            "org.freedesktop.DBus",
            "/org/freedesktop/DBus",
            "org.freedesktop.DBus",
            "NameHasOwner",
            "s",
            "org.freedesktop.ModemManager1",
        ]);
        String::from_utf8_lossy(&out.stdout).trim() == "b true"
    };
    assert!(!has_owner());
    sandbox.start("modem");
    assert!(has_owner());
    assert!(sandbox.modem(&["dump"]).contains("8949000000000001234"));
}

#[test]
fn plain_bundle_installs_into_other_slot_and_reboot_switches() {
    let sandbox = without_agent();
    let image: Vec<u8> = (0..256 * 1024u32).map(|i| (i * 7 + 3) as u8).collect();
    let bundle = sandbox.build_bundle("1.1.0", &image);

    sandbox.rauc_install(&bundle).expect("install");

    let slot_b = fs::read(sandbox.dir().join("slots/rootfs.1.img")).unwrap();
    assert_eq!(slot_b.len(), 16 << 20, "slot file keeps its size");
    assert!(slot_b.starts_with(&image), "slot B holds the image");
    let primary = fs::read_to_string(sandbox.dir().join("boot/primary")).unwrap();
    assert_eq!(primary.trim(), "B");

    sandbox.reboot();
    assert_eq!(sandbox.rauc_property("BootSlot"), "B");

    // RAUC can mark the new slot good through the custom bootloader backend.
    let out = sandbox.busctl(&[
        "call",
        "de.pengutronix.rauc",
        "/",
        "de.pengutronix.rauc.Installer",
        "Mark",
        "ss",
        "good",
        "booted",
    ]);
    assert!(out.status.success(), "{out:?}");
    let calls = fs::read_to_string(sandbox.dir().join("boot/calls.log")).unwrap();
    assert!(calls.ends_with("set-state B good\n"), "{calls}");
}

#[test]
fn reboot_falls_back_when_the_new_slot_is_bad() {
    let sandbox = without_agent();
    let bundle = sandbox.build_bundle("1.1.0", b"new rootfs");
    sandbox.rauc_install(&bundle).expect("install");

    // The new slot "fails to boot": the bootloader picks the other one.
    fs::write(sandbox.dir().join("boot/state.B"), "bad\n").unwrap();
    sandbox.reboot();
    assert_eq!(sandbox.rauc_property("BootSlot"), "A");
}

#[test]
fn incompatible_bundle_is_rejected() {
    let sandbox = Sandbox::up_with(Options {
        agent: false,
        modem: false,
        ..Options::default()
    });
    let bundle = sandbox.build_bundle_for("other-device", "9.9.9", b"x");
    let err = sandbox.rauc_install(&bundle).unwrap_err();
    assert!(err.contains("Compatible mismatch"), "{err}");
}
