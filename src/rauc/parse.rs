//! Pure conversions from RAUC's D-Bus data to our types. No I/O: every function here takes
//! what came off the bus and is unit-tested with hand-built values, including malformed ones.
//! Missing or wrong-typed entries become empty fields, never a panic.

use std::collections::HashMap;

use zbus::{OwnedVariant, Variant};

use crate::status::{Availability, RaucInfo, SlotInfo};

use super::proxy::{Progress, SlotStatusArray};

/// What the running RAUC service offers beyond RAUC 1.8's interface, found by introspecting
/// its object once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Capabilities {
    /// `InstallBundle(s, a{sv})` (RAUC ≥ 1.3; otherwise only the deprecated `Install(s)`).
    pub install_bundle: bool,
    /// `InspectBundle(s, a{sv}) -> a{sv}` (RAUC ≥ 1.9; 1.8 only has `Info(s) -> (s, s)`).
    pub inspect_bundle: bool,
    /// `GetArtifactStatus() -> aa{sv}` (artifact repositories, newer upstream).
    pub artifact_status: bool,
}

/// What a bundle says about itself, from `Info` (RAUC 1.8) or `InspectBundle` (≥ 1.9).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BundleInfo {
    /// The manifest's `[update] compatible`.
    pub compatible: String,
    /// The manifest's `[update] version`, empty when the manifest has none.
    pub version: String,
    /// SHA-256 over the manifest (only from `InspectBundle`; empty otherwise). `InstallBundle`
    /// on newer RAUC can require it (`require-manifest-hash`) to pin the inspected bundle.
    pub manifest_hash: String,
}

/// A string out of a variant, looking through one level of `v` nesting.
pub(crate) fn as_str<'a>(v: &'a Variant<'_>) -> Option<&'a str> {
    match v {
        Variant::Str(s) => Some(s.as_str()),
        Variant::ObjectPath(p) => Some(p.as_str()),
        Variant::Variant(inner) => as_str(inner),
        _ => None,
    }
}

/// A string entry of a property/status dict; empty when missing or not a string.
pub(crate) fn string_entry(dict: &HashMap<String, OwnedVariant>, key: &str) -> String {
    dict.get(key)
        .and_then(|v| as_str(v))
        .unwrap_or_default()
        .to_owned()
}

/// Look up `key` in a `a{sv}` dict that arrived nested inside a variant.
fn dict_entry<'d>(v: &'d Variant<'_>, key: &str) -> Option<&'d Variant<'d>> {
    match v {
        Variant::Dict(d) => d
            .iter()
            .find(|(k, _)| as_str(k) == Some(key))
            .map(|(_, v)| v),
        Variant::Variant(inner) => dict_entry(inner, key),
        _ => None,
    }
}

/// One `GetSlotStatus` entry as a [`SlotInfo`].
///
/// Keys RAUC 1.8 sends (seen on a live service): always `class`, `type`, `device`, `state`,
/// `bootname` (bootable slots), `boot-status` (`good`/`bad`, when the bootloader answers);
/// after an installation also `bundle.compatible`, `bundle.version`, `status`, `sha256`,
/// `size` (t), `installed.timestamp`, `installed.count` (u), `activated.timestamp`,
/// `activated.count` (u).
pub fn slot_from(name: &str, dict: &HashMap<String, OwnedVariant>) -> SlotInfo {
    SlotInfo {
        name: name.to_owned(),
        class: string_entry(dict, "class"),
        state: string_entry(dict, "state"),
        bootname: string_entry(dict, "bootname"),
        boot_status: string_entry(dict, "boot-status"),
        bundle_version: string_entry(dict, "bundle.version"),
        installed_timestamp: string_entry(dict, "installed.timestamp"),
    }
}

/// All slots from a `GetSlotStatus` reply, sorted by name.
///
/// RAUC returns its slots in hash-table order (1.8 lists `rootfs.1` before `rootfs.0`), which
/// may differ between service runs; sorting keeps equal states equal.
pub fn slots_from(status: &SlotStatusArray) -> Vec<SlotInfo> {
    let mut slots: Vec<SlotInfo> = status
        .iter()
        .map(|(name, dict)| slot_from(name, dict))
        .collect();
    slots.sort_by(|a, b| a.name.cmp(&b.name));
    slots
}

/// A [`RaucInfo`] (availability `Running`) from the installer's properties (`GetAll`) and its
/// slots.
pub fn info_from(properties: &HashMap<String, OwnedVariant>, slots: Vec<SlotInfo>) -> RaucInfo {
    RaucInfo {
        availability: Availability::Running,
        compatible: string_entry(properties, "Compatible"),
        boot_slot: string_entry(properties, "BootSlot"),
        operation: string_entry(properties, "Operation"),
        last_error: string_entry(properties, "LastError"),
        slots,
    }
}

/// The `Progress` property value `(isi)` from a `PropertiesChanged` or `Get`; `None` when it
/// has another shape.
pub fn progress_from(v: &Variant<'_>) -> Option<Progress> {
    match v {
        Variant::Structure(s) => match s.fields() {
            [Variant::I32(percentage), message, Variant::I32(depth)] => Some(Progress {
                percentage: *percentage,
                message: as_str(message)?.to_owned(),
                depth: *depth,
            }),
            _ => None,
        },
        Variant::Variant(inner) => progress_from(inner),
        _ => None,
    }
}

/// `InspectBundle`'s reply as a [`BundleInfo`]: `update.compatible`, `update.version` and
/// `manifest-hash`.
pub fn bundle_info_from_inspect(info: &HashMap<String, OwnedVariant>) -> BundleInfo {
    let update = info.get("update");
    let update_str = |key: &str| {
        update
            .and_then(|u| dict_entry(u, key))
            .and_then(as_str)
            .unwrap_or_default()
            .to_owned()
    };
    BundleInfo {
        compatible: update_str("compatible"),
        version: update_str("version"),
        manifest_hash: string_entry(info, "manifest-hash"),
    }
}

/// The names of the methods of `interface` in an introspection document.
///
/// A deliberately small scanner rather than an XML parser (zbus 6 has no `zbus::xml`; that
/// lives in the separate `zbus_xml` crate): it skips comments, `<!DOCTYPE>` and `<?xml?>`,
/// tracks which `<interface>` it is in, and reads `name` attributes in either quote style.
/// Anything it does not understand is ignored, so malformed input yields fewer methods, not
/// an error.
pub fn methods_of(xml: &str, interface: &str) -> Vec<String> {
    let mut methods = Vec::new();
    let mut in_interface = false;
    let mut rest = xml;
    while let Some(start) = rest.find('<') {
        rest = &rest[start..];
        if let Some(after) = rest.strip_prefix("<!--") {
            rest = match after.find("-->") {
                Some(end) => &after[end + 3..],
                None => "",
            };
            continue;
        }
        let Some(end) = tag_end(rest) else { break };
        let tag = &rest[1..end];
        rest = &rest[end + 1..];
        if tag.starts_with('!') || tag.starts_with('?') {
            continue;
        }
        if let Some(closing) = tag.strip_prefix('/') {
            if closing.trim() == "interface" {
                in_interface = false;
            }
            continue;
        }
        let tag = tag.strip_suffix('/').unwrap_or(tag);
        let (element, attrs) = tag.split_once(char::is_whitespace).unwrap_or((tag, ""));
        match element {
            "interface" => in_interface = attribute(attrs, "name") == Some(interface),
            "method" if in_interface => {
                if let Some(name) = attribute(attrs, "name") {
                    methods.push(name.to_owned());
                }
            }
            _ => {}
        }
    }
    methods
}

/// Index of the `>` that ends the tag `s` starts with, skipping quoted attribute values
/// (upstream's interface file has `value="QList&lt;QVariantMap>"`).
fn tag_end(s: &str) -> Option<usize> {
    let mut quote = None;
    for (i, c) in s.char_indices() {
        match (quote, c) {
            (None, '"' | '\'') => quote = Some(c),
            (Some(q), c) if c == q => quote = None,
            (None, '>') => return Some(i),
            _ => {}
        }
    }
    None
}

/// The value of attribute `key` in the attribute part of a start tag.
fn attribute<'a>(mut attrs: &'a str, key: &str) -> Option<&'a str> {
    loop {
        attrs = attrs.trim_start();
        let eq = attrs.find('=')?;
        let name = attrs[..eq].trim();
        let after = attrs[eq + 1..].trim_start();
        let quote = after.chars().next().filter(|c| *c == '"' || *c == '\'')?;
        let value_and_rest = &after[1..];
        let close = value_and_rest.find(quote)?;
        if name == key {
            return Some(&value_and_rest[..close]);
        }
        attrs = &value_and_rest[close + 1..];
    }
}

/// [`Capabilities`] from the introspection XML of RAUC's object.
pub fn capabilities_from_introspection(xml: &str) -> Capabilities {
    let methods = methods_of(xml, super::proxy::INTERFACE);
    let has = |m: &str| methods.iter().any(|x| x == m);
    Capabilities {
        install_bundle: has("InstallBundle"),
        inspect_bundle: has("InspectBundle"),
        artifact_status: has("GetArtifactStatus"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use zbus::Str;

    fn ov<'a>(v: impl Into<Variant<'a>>) -> OwnedVariant {
        OwnedVariant::try_from(v.into()).unwrap()
    }

    fn dict(entries: Vec<(&str, OwnedVariant)>) -> HashMap<String, OwnedVariant> {
        entries
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect()
    }

    /// The booted slot as RAUC 1.8 reports it before any installation.
    fn fresh_slot() -> HashMap<String, OwnedVariant> {
        dict(vec![
            ("class", ov("rootfs")),
            ("boot-status", ov("good")),
            ("type", ov("raw")),
            ("bootname", ov("A")),
            ("device", ov("/tmp/x/slotA.img")),
            ("state", ov("booted")),
        ])
    }

    /// The other slot after an installation, as RAUC 1.8 reports it.
    fn installed_slot() -> HashMap<String, OwnedVariant> {
        dict(vec![
            ("activated.count", ov(1u32)),
            ("activated.timestamp", ov("2026-11-27T19:23:19Z")),
            ("boot-status", ov("good")),
            ("bundle.compatible", ov("ssu-sandbox")),
            ("sha256", ov("823f98")),
            ("state", ov("inactive")),
            ("size", ov(1048576u64)),
            ("installed.count", ov(1u32)),
            ("class", ov("rootfs")),
            ("device", ov("/tmp/x/slotB.img")),
            ("type", ov("raw")),
            ("bootname", ov("B")),
            ("bundle.version", ov("2026.11.1")),
            ("installed.timestamp", ov("2026-11-27T19:23:19Z")),
            ("status", ov("ok")),
        ])
    }

    #[test]
    fn slots_are_parsed_and_sorted() {
        let status: SlotStatusArray = vec![
            ("rootfs.1".into(), installed_slot()),
            ("rootfs.0".into(), fresh_slot()),
        ];
        let slots = slots_from(&status);
        assert_eq!(
            slots,
            vec![
                SlotInfo {
                    name: "rootfs.0".into(),
                    class: "rootfs".into(),
                    state: "booted".into(),
                    bootname: "A".into(),
                    boot_status: "good".into(),
                    bundle_version: String::new(),
                    installed_timestamp: String::new(),
                },
                SlotInfo {
                    name: "rootfs.1".into(),
                    class: "rootfs".into(),
                    state: "inactive".into(),
                    bootname: "B".into(),
                    boot_status: "good".into(),
                    bundle_version: "2026.11.1".into(),
                    installed_timestamp: "2026-11-27T19:23:19Z".into(),
                },
            ]
        );
    }

    #[test]
    fn missing_and_wrong_typed_entries_become_empty() {
        let d = dict(vec![
            ("class", ov(7u32)),
            ("state", ov(true)),
            ("bootname", ov(vec!["A", "B"])),
            ("boot-status", ov(Variant::new(Variant::from("bad")))),
            ("bundle.version", ov((1i32, "x"))),
        ]);
        let slot = slot_from("rootfs.0", &d);
        assert_eq!(slot.name, "rootfs.0");
        assert_eq!(slot.class, "");
        assert_eq!(slot.state, "");
        assert_eq!(slot.bootname, "");
        // A string wrapped in one more variant level is still a string.
        assert_eq!(slot.boot_status, "bad");
        assert_eq!(slot.bundle_version, "");
        assert_eq!(slot.installed_timestamp, "");

        assert_eq!(slots_from(&vec![]), vec![]);
        assert_eq!(
            slots_from(&vec![(String::new(), HashMap::new())]),
            vec![SlotInfo::default()]
        );
    }

    #[test]
    fn properties_become_running_info() {
        let props = dict(vec![
            ("Operation", ov("idle")),
            ("LastError", ov("")),
            ("Progress", ov((0i32, "", 0i32))),
            ("Compatible", ov("ssu-sandbox")),
            ("Variant", ov("")),
            ("BootSlot", ov("A")),
        ]);
        let info = info_from(&props, vec![]);
        assert_eq!(
            info,
            RaucInfo {
                availability: Availability::Running,
                compatible: "ssu-sandbox".into(),
                boot_slot: "A".into(),
                operation: "idle".into(),
                last_error: String::new(),
                slots: vec![],
            }
        );
        let info = info_from(&dict(vec![("Compatible", ov(1i32))]), vec![]);
        assert_eq!(info.availability, Availability::Running);
        assert_eq!(info.compatible, "");
    }

    #[test]
    fn progress_values() {
        assert_eq!(
            progress_from(&Variant::from((90i32, "Copying image to rootfs.1", 3i32))),
            Some(Progress {
                percentage: 90,
                message: "Copying image to rootfs.1".into(),
                depth: 3,
            })
        );
        assert_eq!(progress_from(&Variant::from((90u32, "x", 3i32))), None);
        assert_eq!(progress_from(&Variant::from((90i32, "x"))), None);
        assert_eq!(progress_from(&Variant::from("100%")), None);
    }

    #[test]
    fn inspect_bundle_reply() {
        let mut update: HashMap<&str, Variant<'_>> = HashMap::new();
        update.insert("compatible", Variant::from("ssu-sandbox"));
        update.insert("version", Variant::from("2026.11.2"));
        update.insert("description", Variant::from("security update"));
        let info = dict(vec![
            ("manifest-hash", ov("abc123")),
            ("update", ov(Variant::from(update))),
            (
                "bundle",
                ov(Variant::from(HashMap::from([("format", "plain")]))),
            ),
        ]);
        assert_eq!(
            bundle_info_from_inspect(&info),
            BundleInfo {
                compatible: "ssu-sandbox".into(),
                version: "2026.11.2".into(),
                manifest_hash: "abc123".into(),
            }
        );
    }

    #[test]
    fn inspect_bundle_reply_malformed() {
        assert_eq!(
            bundle_info_from_inspect(&HashMap::new()),
            BundleInfo::default()
        );
        // `update` is not a dict.
        let info = dict(vec![("update", ov("ssu-sandbox"))]);
        assert_eq!(bundle_info_from_inspect(&info), BundleInfo::default());
        // `update` has wrong-typed entries.
        let update = HashMap::from([("compatible", Variant::from(5u32))]);
        let info = dict(vec![
            ("update", ov(Variant::from(update))),
            ("manifest-hash", ov(Str::from("h"))),
        ]);
        assert_eq!(
            bundle_info_from_inspect(&info),
            BundleInfo {
                manifest_hash: "h".into(),
                ..BundleInfo::default()
            }
        );
    }

    #[test]
    fn capabilities_of_rauc_1_8() {
        // Captured from `rauc service` 1.8 (Debian 12) with `gdbus introspect --xml` on `/`.
        let xml = include_str!("testdata/introspect-rauc-1.8.xml");
        assert_eq!(
            capabilities_from_introspection(xml),
            Capabilities {
                install_bundle: true,
                inspect_bundle: false,
                artifact_status: false,
            }
        );
        let methods = methods_of(xml, "de.pengutronix.rauc.Installer");
        assert_eq!(
            methods,
            [
                "Install",
                "InstallBundle",
                "Info",
                "Mark",
                "GetSlotStatus",
                "GetPrimary"
            ]
        );
        // Methods of the standard interfaces don't leak in.
        assert!(!methods.iter().any(|m| m == "GetAll"));
    }

    #[test]
    fn capabilities_of_newer_rauc() {
        // RAUC's interface as upstream has it after 1.9 (InspectBundle) and with artifact
        // repositories (GetArtifactStatus), in GDBus's introspection layout.
        let xml = include_str!("testdata/introspect-rauc-upstream.xml");
        assert_eq!(
            capabilities_from_introspection(xml),
            Capabilities {
                install_bundle: true,
                inspect_bundle: true,
                artifact_status: true,
            }
        );
    }

    #[test]
    fn scanner_agrees_with_a_real_xml_parser() {
        // zbus_xml is only a dev-dependency; the scanner keeps it out of the daemon.
        for xml in [
            include_str!("testdata/introspect-rauc-1.8.xml"),
            include_str!("testdata/introspect-rauc-upstream.xml"),
            include_str!("../../tests/data/rauc/de.pengutronix.rauc.Installer.xml"),
        ] {
            let node = zbus_xml::Node::try_from(xml).expect("valid introspection XML");
            for iface in node.interfaces() {
                let parsed: Vec<String> = iface.methods().map(|m| m.name().to_string()).collect();
                assert_eq!(methods_of(xml, iface.name().as_str()), parsed);
            }
        }
    }

    #[test]
    fn capability_scanner_edge_cases() {
        // Our interface file (Debian's) has comments mentioning `<bundle>`; single quotes;
        // self-closing tags; a method of another interface with the same name.
        let xml = r#"<?xml version="1.0"?>
            <!DOCTYPE node PUBLIC "-//freedesktop//DTD D-BUS Object Introspection 1.0//EN" "x">
            <node>
              <interface name='org.example.Other'>
                <method name="InspectBundle"/>
              </interface>
              <interface  name = "de.pengutronix.rauc.Installer" >
                <!-- Info: D-Bus variant of rauc info <bundle> <method name="GetArtifactStatus"> -->
                <method name='InspectBundle'><arg type="s" name="source" direction="in"/></method>
                <method xname="Nope" />
              </interface>
            </node>"#;
        assert_eq!(
            methods_of(xml, "de.pengutronix.rauc.Installer"),
            ["InspectBundle"]
        );
        assert_eq!(
            capabilities_from_introspection(xml),
            Capabilities {
                install_bundle: false,
                inspect_bundle: true,
                artifact_status: false,
            }
        );
        // Our own interface file parses too.
        let file = include_str!("../../tests/data/rauc/de.pengutronix.rauc.Installer.xml");
        assert!(capabilities_from_introspection(file).install_bundle);
        assert!(!capabilities_from_introspection(file).inspect_bundle);
        // Garbage never panics.
        for junk in [
            "",
            "<",
            "<interface name=",
            "<interface name=\"de.pengutronix.rauc.Installer\"><method name=\"X",
            "<!-- unterminated",
            "<<<>>>",
            "<interface name=\"de.pengutronix.rauc.Installer\"><method name=\"Ä\"/>",
        ] {
            let _ = capabilities_from_introspection(junk);
        }
        assert_eq!(
            capabilities_from_introspection("garbage"),
            Capabilities::default()
        );
    }
}
