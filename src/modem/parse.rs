//! Pure conversion from ModemManager's objects to [`ModemInfo`], and identifier masking.
//! Missing or wrong-typed properties leave the field empty; nothing here panics on input.

use std::collections::HashMap;

use zbus::fdo::ManagedObjects;
use zbus::names::OwnedInterfaceName;
use zbus::{OwnedObjectPath, OwnedVariant, Variant};

use crate::status::{Availability, ModemInfo};

use super::proxy::{MODEM_3GPP_INTERFACE, MODEM_INTERFACE};

type Properties = HashMap<String, OwnedVariant>;

/// Mask an identifier that names a subscriber or device (IMSI, ICCID, IMEI): keep the last 4
/// characters behind `…`, e.g. `89490200001234` → `…1234`.
///
/// Inputs under 8 characters are masked completely (`…`): keeping 4 of them would reveal half
/// or more (real IMSIs/IMEIs have 15 digits, ICCIDs 19–20). An empty input stays empty, so
/// "unknown" stays distinguishable from "hidden". Counts characters, not bytes.
pub fn mask_identifier(s: &str) -> String {
    const KEEP: usize = 4;
    const MIN_LEN_TO_KEEP: usize = 8;
    let s = s.trim();
    let len = s.chars().count();
    if len == 0 {
        String::new()
    } else if len < MIN_LEN_TO_KEEP {
        "…".to_owned()
    } else {
        let tail: String = s.chars().skip(len - KEEP).collect();
        format!("…{tail}")
    }
}

/// The issuer part of an ICCID: its first 7 digits ("89", country code, issuer), or empty
/// when the ICCID is not all digits or too short to contain more than its issuer (so a short
/// test value never leaks whole).
pub fn iccid_issuer(iccid: &str) -> String {
    const ISSUER: usize = crate::config::operator::MAX_ICCID_PREFIX;
    let iccid = iccid.trim();
    if iccid.len() < 2 * ISSUER || !iccid.bytes().all(|b| b.is_ascii_digit()) {
        return String::new();
    }
    iccid[..ISSUER].to_owned()
}

fn as_str<'a>(v: &'a Variant<'_>) -> Option<&'a str> {
    match v {
        Variant::Str(s) => Some(s.as_str()),
        Variant::ObjectPath(p) => Some(p.as_str()),
        Variant::Variant(inner) => as_str(inner),
        _ => None,
    }
}

fn as_u32(v: &Variant<'_>) -> Option<u32> {
    match v {
        Variant::U32(u) => Some(*u),
        Variant::Variant(inner) => as_u32(inner),
        _ => None,
    }
}

fn string_of(props: Option<&Properties>, key: &str) -> String {
    props
        .and_then(|p| p.get(key))
        .and_then(|v| as_str(v))
        .unwrap_or_default()
        .to_owned()
}

fn interface<'a>(
    interfaces: &'a HashMap<OwnedInterfaceName, Properties>,
    name: &str,
) -> Option<&'a Properties> {
    interfaces
        .iter()
        .find(|(k, _)| k.as_str() == name)
        .map(|(_, v)| v)
}

/// The modems (objects with the Modem interface), in ModemManager's numbering order
/// (`…/Modems/8` before `…/Modems/10`).
fn modems(
    objects: &ManagedObjects,
) -> Vec<(&OwnedObjectPath, &HashMap<OwnedInterfaceName, Properties>)> {
    let mut modems: Vec<_> = objects
        .iter()
        .filter(|(_, ifaces)| interface(ifaces, MODEM_INTERFACE).is_some())
        .collect();
    modems.sort_by_key(|(path, _)| (path.as_str().len(), path.as_str()));
    modems
}

/// The SIM object of the first modem; `None` without modem, without SIM (`Sim` is `/`) or
/// when `Sim` is missing or not an object path.
pub fn sim_path_of(objects: &ManagedObjects) -> Option<OwnedObjectPath> {
    let (_, ifaces) = modems(objects).into_iter().next()?;
    let sim = interface(ifaces, MODEM_INTERFACE)?.get("Sim")?;
    let path = match &**sim {
        Variant::ObjectPath(p) => p.as_str(),
        Variant::Variant(inner) => match &**inner {
            Variant::ObjectPath(p) => p.as_str(),
            _ => return None,
        },
        _ => return None,
    };
    if path == "/" {
        return None;
    }
    OwnedObjectPath::try_from(path).ok()
}

/// A [`ModemInfo`] (availability `Running`) from ModemManager's `GetManagedObjects` reply and
/// the properties of the first modem's SIM (`None` when there is none or they could not be
/// read). IMSI and IMEI are not carried at all; the ICCID only masked.
pub fn modem_info_from(objects: &ManagedObjects, sim: Option<&Properties>) -> ModemInfo {
    let modems = modems(objects);
    let first = modems.first().map(|(_, ifaces)| *ifaces);
    let modem = first.and_then(|i| interface(i, MODEM_INTERFACE));
    let gpp = first.and_then(|i| interface(i, MODEM_3GPP_INTERFACE));
    ModemInfo {
        availability: Availability::Running,
        modems: u32::try_from(modems.len()).unwrap_or(u32::MAX),
        model: string_of(modem, "Model"),
        home_mcc_mnc: string_of(sim, "OperatorIdentifier"),
        operator_name: string_of(sim, "OperatorName"),
        iccid_masked: mask_identifier(&string_of(sim, "SimIdentifier")),
        iccid_issuer: iccid_issuer(&string_of(sim, "SimIdentifier")),
        serving_mcc_mnc: string_of(gpp, "OperatorCode"),
        registration_state: gpp
            .and_then(|p| p.get("RegistrationState"))
            .and_then(|v| as_u32(v)),
        network_time_offset_s: None,
    }
}

/// The first modem's object path (the one [`modem_info_from`] describes).
pub fn first_modem(objects: &ManagedObjects) -> Option<&OwnedObjectPath> {
    modems(objects).first().map(|(path, _)| *path)
}

/// `GetNetworkTime`'s answer (ISO 8601 with an offset, e.g. `2026-11-30T08:00:00+01:00`).
pub fn network_time(s: &str) -> Option<jiff::Timestamp> {
    s.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use zbus::ObjectPath;
    use zbus::fdo::ManagedObjects;

    const SIM_IFACE: &str = "org.freedesktop.ModemManager1.Sim";

    fn ov<'a>(v: impl Into<Variant<'a>>) -> OwnedVariant {
        OwnedVariant::try_from(v.into()).unwrap()
    }

    fn props(entries: Vec<(&str, OwnedVariant)>) -> Properties {
        entries
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect()
    }

    fn object(ifaces: Vec<(&str, Properties)>) -> HashMap<OwnedInterfaceName, Properties> {
        ifaces
            .into_iter()
            .map(|(name, p)| (OwnedInterfaceName::try_from(name).unwrap(), p))
            .collect()
    }

    fn path(p: &str) -> OwnedObjectPath {
        OwnedObjectPath::try_from(p).unwrap()
    }

    /// The modem python-dbusmock's `AddSimpleModem` creates, plus what our sandbox adds.
    fn sandbox_modem(sim: &str) -> HashMap<OwnedInterfaceName, Properties> {
        object(vec![
            (
                MODEM_INTERFACE,
                props(vec![
                    ("State", ov(6i32)),
                    ("Model", ov("E1750")),
                    ("Sim", ov(ObjectPath::try_from(sim).unwrap())),
                ]),
            ),
            (
                MODEM_3GPP_INTERFACE,
                props(vec![
                    ("Imei", ov("356938035643809")),
                    ("OperatorName", ov("TheOperator")),
                    ("OperatorCode", ov("00101")),
                    ("RegistrationState", ov(1u32)),
                ]),
            ),
        ])
    }

    fn sandbox_sim() -> Properties {
        props(vec![
            ("Active", ov(true)),
            ("Imsi", ov("262011234567890")),
            ("OperatorIdentifier", ov("26201")),
            ("OperatorName", ov("Telekom.de")),
            ("SimIdentifier", ov("89490200001234")),
        ])
    }

    #[test]
    fn masking() {
        assert_eq!(mask_identifier("89490200001234"), "…1234");
        assert_eq!(mask_identifier("262011234567890"), "…7890");
        assert_eq!(mask_identifier(" 12345678 "), "…5678");
        assert_eq!(mask_identifier("1234567"), "…");
        assert_eq!(mask_identifier("1234"), "…");
        assert_eq!(mask_identifier("1"), "…");
        assert_eq!(mask_identifier(""), "");
        // Multi-byte characters are counted, not split.
        assert_eq!(mask_identifier("ääääääää1234"), "…1234");
        assert_eq!(mask_identifier("äöüäöüäöü"), "…üäöü");
    }

    #[test]
    fn issuer_digits_only() {
        for (iccid, issuer) in [
            ("8949000000000001234", "8949000"),
            (" 89490200001234 ", "8949020"),
            // Too short to hold more than its issuer: nothing, rather than most of it.
            ("8949020000123", ""),
            ("", ""),
            ("89490F0000000001234", ""),
            ("８９４９０００００００００１２３４", ""),
        ] {
            assert_eq!(iccid_issuer(iccid), issuer, "{iccid:?}");
        }
    }

    #[test]
    fn no_modem() {
        let info = modem_info_from(&ManagedObjects::new(), None);
        assert_eq!(
            info,
            ModemInfo {
                availability: Availability::Running,
                ..ModemInfo::default()
            }
        );
        assert_eq!(sim_path_of(&ManagedObjects::new()), None);
    }

    #[test]
    fn modem_with_sim() {
        let objects: ManagedObjects = HashMap::from([(
            path("/org/freedesktop/ModemManager1/Modems/8"),
            sandbox_modem("/org/freedesktop/ModemManager1/SIM/2"),
        )]);
        assert_eq!(
            sim_path_of(&objects),
            Some(path("/org/freedesktop/ModemManager1/SIM/2"))
        );
        let info = modem_info_from(&objects, Some(&sandbox_sim()));
        assert_eq!(
            info,
            ModemInfo {
                availability: Availability::Running,
                modems: 1,
                model: "E1750".into(),
                home_mcc_mnc: "26201".into(),
                operator_name: "Telekom.de".into(),
                iccid_masked: "…1234".into(),
                iccid_issuer: "8949020".into(),
                serving_mcc_mnc: "00101".into(),
                registration_state: Some(1),
                network_time_offset_s: None,
            }
        );
        // No identifier leaves whole, in any field.
        let shown = format!("{info:?}");
        for secret in ["89490200001234", "262011234567890", "356938035643809"] {
            assert!(!shown.contains(secret), "{secret} leaked: {shown}");
        }
    }

    #[test]
    fn modem_without_sim() {
        let objects: ManagedObjects = HashMap::from([(
            path("/org/freedesktop/ModemManager1/Modems/0"),
            sandbox_modem("/"),
        )]);
        assert_eq!(sim_path_of(&objects), None);
        let info = modem_info_from(&objects, None);
        assert_eq!(info.modems, 1);
        assert_eq!(info.model, "E1750");
        assert_eq!(info.home_mcc_mnc, "");
        assert_eq!(info.iccid_masked, "");
        assert_eq!(info.serving_mcc_mnc, "00101");
    }

    #[test]
    fn sim_with_missing_properties() {
        // The bare dbusmock SIM: no OperatorIdentifier, SimIdentifier or OperatorName.
        let sim = props(vec![("Active", ov(true)), ("Imsi", ov("doesnotmatter"))]);
        let objects: ManagedObjects = HashMap::from([(
            path("/org/freedesktop/ModemManager1/Modems/8"),
            sandbox_modem("/org/freedesktop/ModemManager1/SIM/2"),
        )]);
        let info = modem_info_from(&objects, Some(&sim));
        assert_eq!(info.home_mcc_mnc, "");
        assert_eq!(info.operator_name, "");
        assert_eq!(info.iccid_masked, "");
        assert_eq!(info.model, "E1750");
    }

    #[test]
    fn wrong_typed_properties_are_empty() {
        let modem = object(vec![
            (
                MODEM_INTERFACE,
                props(vec![
                    ("Model", ov(5u32)),
                    ("Sim", ov("/org/freedesktop/ModemManager1/SIM/2")),
                ]),
            ),
            (
                MODEM_3GPP_INTERFACE,
                props(vec![
                    ("OperatorCode", ov(26201u32)),
                    ("RegistrationState", ov("home")),
                ]),
            ),
        ]);
        let sim = props(vec![
            ("OperatorIdentifier", ov(26201u32)),
            ("OperatorName", ov(vec!["a", "b"])),
            ("SimIdentifier", ov((1i32, 2i32))),
        ]);
        let objects: ManagedObjects =
            HashMap::from([(path("/org/freedesktop/ModemManager1/Modems/8"), modem)]);
        // `Sim` as a string instead of an object path: no SIM.
        assert_eq!(sim_path_of(&objects), None);
        let info = modem_info_from(&objects, Some(&sim));
        assert_eq!(
            info,
            ModemInfo {
                availability: Availability::Running,
                modems: 1,
                ..ModemInfo::default()
            }
        );
        // A registration state of the wrong width is unknown, not truncated.
        let gpp = object(vec![
            (MODEM_INTERFACE, Properties::new()),
            (
                MODEM_3GPP_INTERFACE,
                props(vec![("RegistrationState", ov(1i32))]),
            ),
        ]);
        let objects: ManagedObjects = HashMap::from([(path("/m/1"), gpp)]);
        assert_eq!(modem_info_from(&objects, None).registration_state, None);
    }

    #[test]
    fn first_modem_in_numbering_order_and_non_modems_ignored() {
        let mut ten = sandbox_modem("/");
        ten.get_mut(&OwnedInterfaceName::try_from(MODEM_INTERFACE).unwrap())
            .unwrap()
            .insert("Model".into(), ov("Ten"));
        let objects: ManagedObjects = HashMap::from([
            (path("/org/freedesktop/ModemManager1/Modems/10"), ten),
            (
                path("/org/freedesktop/ModemManager1/Modems/8"),
                sandbox_modem("/org/freedesktop/ModemManager1/SIM/2"),
            ),
            (
                path("/org/freedesktop/ModemManager1/SIM/2"),
                object(vec![(SIM_IFACE, sandbox_sim())]),
            ),
        ]);
        let info = modem_info_from(&objects, None);
        assert_eq!(info.modems, 2);
        assert_eq!(info.model, "E1750");
    }

    #[test]
    fn network_time_parses_with_its_offset_and_refuses_garbage() {
        assert_eq!(
            network_time("2026-11-30T08:00:00+01:00"),
            Some("2026-11-30T07:00:00Z".parse().unwrap())
        );
        for bad in ["", "now", "2026-11-30T08:00:00", "2026-13-01T00:00:00Z"] {
            assert_eq!(network_time(bad), None, "{bad:?}");
        }
    }
}
