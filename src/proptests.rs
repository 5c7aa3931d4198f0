//! Property-based fuzzing of the parsers that read untrusted input: the configuration files,
//! `custom.ssu` of signed targets, RAUC's and ModemManager's D-Bus replies. (HTTP
//! `Content-Range` handling is fuzzed next to its private code in `download::response`.)
//!
//! Each property runs a fixed number of cases (`CASES`, raised with `PROPTEST_CASES` for a
//! longer local run), so CI spends a bounded, repeatable time. A failing case that proptest
//! finds is shrunk and written to `proptest-regressions/` (kept in git, replayed first on every
//! run); cases found while writing these tests are also kept as named tests at the end.

use std::collections::HashMap;
use std::path::PathBuf;

use proptest::prelude::*;
use zbus::fdo::ManagedObjects;
use zbus::names::OwnedInterfaceName;
use zbus::{OwnedObjectPath, OwnedVariant, Variant as Value};

use crate::config::from_sources;
use crate::metadata::schema::{BundleMeta, DeviceMeta, sample_security_bundle};
use crate::modem::{mask_identifier, modem_info_from};
use crate::rauc::{
    bundle_info_from_inspect, capabilities_from_introspection, info_from, progress_from, slots_from,
};
use crate::text::is_unsafe_char;

const CASES: u32 = 256;

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(CASES),
        ..ProptestConfig::default()
    }
}

/// Strings that favour what breaks parsers: empty, long, control, bidi, quotes, NUL.
fn nasty_string() -> impl Strategy<Value = String> {
    prop_oneof![
        ".{0,40}",
        "[a-z0-9._+~-]{1,12}",
        Just(String::new()),
        Just("\u{0}".to_owned()),
        Just("\u{1b}[31m".to_owned()),
        Just("a\u{202e}b".to_owned()),
        Just("x\u{2028}y".to_owned()),
        Just("../../etc/passwd".to_owned()),
        Just("\"'\\".to_owned()),
        "[0-9]{4}-[0-9]{2}-[0-9]{2}",
        (0usize..5000).prop_map(|n| "x".repeat(n)),
    ]
}

/// Any JSON value, nested a few levels.
fn json() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        any::<f64>().prop_map(serde_json::Value::from),
        nasty_string().prop_map(serde_json::Value::from),
    ];
    leaf.prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(serde_json::Value::from),
            prop::collection::btree_map(nasty_string(), inner, 0..6)
                .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A valid bundle `custom.ssu`, with `edits` applied: each replaces (or adds) a top-level
/// field, or a field of the first CVE, with an arbitrary value.
fn edited_bundle(edits: Vec<(bool, String, serde_json::Value)>) -> serde_json::Value {
    let level = jiff::civil::date(2026, 11, 1);
    let mut v = serde_json::to_value(sample_security_bundle("1.0.1", "1.0", level)).unwrap();
    for (in_cve, key, value) in edits {
        let target = if in_cve {
            v.get_mut("cves").and_then(|c| c.get_mut(0))
        } else {
            Some(&mut v)
        };
        if let Some(obj) = target.and_then(serde_json::Value::as_object_mut) {
            obj.insert(key, value);
        }
    }
    v
}

fn bundle_key() -> impl Strategy<Value = (bool, String)> {
    prop_oneof![
        prop::sample::select(vec![
            "kind",
            "version",
            "base_version",
            "security_patch_level",
            "compatible",
            "hardware_ids",
            "released",
            "cves",
            "notes_url",
            "requires_reboot",
            "expected_downtime_s",
        ])
        .prop_map(|k| (false, k.to_owned())),
        prop::sample::select(vec!["id", "severity", "cvss", "summary"])
            .prop_map(|k| (true, k.to_owned())),
        nasty_string().prop_map(|k| (false, k)),
    ]
}

/// Every string a parsed bundle hands on to D-Bus, the store and logs.
fn bundle_strings(m: &BundleMeta) -> Vec<String> {
    let mut all = vec![
        m.version.clone(),
        m.base_version.clone(),
        m.compatible.clone(),
        m.target_name(),
    ];
    all.extend(m.hardware_ids.iter().cloned());
    for c in &m.cves {
        all.push(c.id.clone());
        all.push(c.summary.clone());
    }
    all.extend(m.notes_url.iter().cloned());
    all
}

/// D-Bus values as RAUC or ModemManager might send them, hostile or not.
fn variant() -> impl Strategy<Value = OwnedVariant> {
    let owned = |v: Value<'static>| OwnedVariant::try_from(v).unwrap();
    prop_oneof![
        nasty_string()
            .prop_filter("D-Bus strings have no NUL", |s| !s.contains('\0'))
            .prop_map(move |s| owned(Value::from(s))),
        any::<u32>().prop_map(move |n| owned(Value::from(n))),
        any::<i32>().prop_map(move |n| owned(Value::from(n))),
        any::<u64>().prop_map(move |n| owned(Value::from(n))),
        any::<bool>().prop_map(move |b| owned(Value::from(b))),
        any::<f64>().prop_map(move |f| owned(Value::from(f))),
        (any::<i32>(), ".{0,20}", any::<i32>())
            .prop_map(move |(a, s, b)| owned(Value::from((a, s, b)))),
        (any::<u32>(), any::<bool>()).prop_map(move |t| owned(Value::from(t))),
        Just(owned(Value::from(
            OwnedObjectPath::try_from("/org/freedesktop/ModemManager1/SIM/2").unwrap()
        ))),
        Just(owned(Value::from(OwnedObjectPath::try_from("/").unwrap()))),
        prop::collection::vec(".{0,8}", 0..4).prop_map(move |v| owned(Value::from(v))),
    ]
}

const RAUC_KEYS: &[&str] = &[
    "Operation",
    "LastError",
    "Progress",
    "Compatible",
    "Variant",
    "BootSlot",
    "state",
    "class",
    "bootname",
    "boot-status",
    "bundle.version",
    "installed.timestamp",
    "installed.count",
    "update",
    "compatible",
    "version",
    "manifest-hash",
];

const MM_KEYS: &[&str] = &[
    "Sim",
    "SimSlots",
    "PrimarySimSlot",
    "Manufacturer",
    "Model",
    "State",
    "OperatorCode",
    "OperatorName",
    "RegistrationState",
    "OperatorIdentifier",
    "SimIdentifier",
    "Imsi",
    "Imei",
    "EquipmentIdentifier",
    "OwnNumbers",
    "Active",
];

fn properties(
    keys: &'static [&'static str],
) -> impl Strategy<Value = HashMap<String, OwnedVariant>> {
    prop::collection::hash_map(
        prop_oneof![
            prop::sample::select(keys.to_vec()).prop_map(str::to_owned),
            ".{0,12}"
        ],
        variant(),
        0..10,
    )
}

fn managed_objects() -> impl Strategy<Value = ManagedObjects> {
    let iface = prop::sample::select(vec![
        "org.freedesktop.ModemManager1.Modem",
        "org.freedesktop.ModemManager1.Modem.Modem3gpp",
        "org.freedesktop.ModemManager1.Sim",
        "org.freedesktop.ModemManager1.Modem.Voice",
    ])
    .prop_map(|s| OwnedInterfaceName::try_from(s).unwrap());
    let path = prop::sample::select(vec![
        "/org/freedesktop/ModemManager1/Modems/8",
        "/org/freedesktop/ModemManager1/Modems/0",
        "/org/freedesktop/ModemManager1/SIM/2",
        "/",
    ])
    .prop_map(|s| OwnedObjectPath::try_from(s).unwrap());
    prop::collection::hash_map(
        path,
        prop::collection::hash_map(iface, properties(MM_KEYS), 0..4),
        0..4,
    )
}

/// The annotated example configuration the package ships: every key with its default.
const EXAMPLE_CONFIG: &str = include_str!("../packaging/agent.toml");

/// Line edits of a valid configuration: drop a line, duplicate one, replace a value, add a
/// key, or insert arbitrary text.
#[derive(Debug, Clone)]
enum LineEdit {
    Drop(usize),
    Duplicate(usize),
    Value(usize, String),
    Insert(usize, String),
}

fn line_edit() -> impl Strategy<Value = LineEdit> {
    let value = prop_oneof![
        nasty_string().prop_map(|s| format!("{s:?}")),
        any::<i64>().prop_map(|n| n.to_string()),
        Just("0s".to_owned()),
        Just("\"-1h\"".to_owned()),
        Just("[]".to_owned()),
        Just("{}".to_owned()),
        Just("true".to_owned()),
        Just("1e400".to_owned()),
    ];
    let text = prop_oneof![
        ".{0,60}",
        Just("[check.a.b.c.d.e.f.g]".to_owned()),
        Just("[[operator]]".to_owned()),
        Just("x\u{85}y = 1".to_owned()),
        (1usize..300).prop_map(|n| format!("[{}]", vec!["a"; n].join("."))),
    ];
    prop_oneof![
        any::<usize>().prop_map(LineEdit::Drop),
        any::<usize>().prop_map(LineEdit::Duplicate),
        (any::<usize>(), value).prop_map(|(i, v)| LineEdit::Value(i, v)),
        (any::<usize>(), text).prop_map(|(i, t)| LineEdit::Insert(i, t)),
    ]
}

fn apply(text: &str, edits: &[LineEdit]) -> String {
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    for edit in edits {
        if lines.is_empty() {
            lines.push(String::new());
        }
        let at = |i: &usize| i % lines.len();
        match edit {
            LineEdit::Drop(i) => {
                let i = at(i);
                lines.remove(i);
            }
            LineEdit::Duplicate(i) => {
                let i = at(i);
                lines.insert(i, lines[i].clone());
            }
            LineEdit::Value(i, v) => {
                let i = at(i);
                if let Some((key, _)) = lines[i].split_once('=') {
                    lines[i] = format!("{key}= {v}");
                }
            }
            LineEdit::Insert(i, t) => {
                let i = at(i);
                lines.insert(i, t.clone());
            }
        }
    }
    lines.join("\n")
}

proptest! {
    #![proptest_config(config())]

    /// Any edit of a valid configuration is either accepted or refused with an error that
    /// names the file; never a panic.
    #[test]
    fn configuration_edits_never_panic(edits in prop::collection::vec(line_edit(), 1..6)) {
        let path = PathBuf::from("/etc/ssu-agent/agent.toml");
        let text = apply(EXAMPLE_CONFIG, &edits);
        if let Err(e) = from_sources(&[(path, text)]) {
            let message = e.to_string();
            prop_assert!(message.contains("/etc/ssu-agent/agent.toml"), "{message}");
        }
    }

    /// Arbitrary bytes as a configuration file (and as a drop-in over a valid one).
    #[test]
    fn configuration_text_never_panics(text in ".{0,200}") {
        let main = (PathBuf::from("/etc/ssu-agent/agent.toml"), EXAMPLE_CONFIG.to_owned());
        let dropin = (PathBuf::from("/etc/ssu-agent/agent.d/10-x.toml"), text.clone());
        let _ = from_sources(&[(main.0.clone(), text)]);
        let _ = from_sources(&[main, dropin]);
    }

    /// `custom.ssu` of a bundle: whatever a signer put there, parsing never panics, and what
    /// it accepts is safe to show and to use as a path.
    #[test]
    fn bundle_metadata_is_validated(
        edits in prop::collection::vec(
            (bundle_key(), json()).prop_map(|((c, k), v)| (c, k, v)), 0..4),
    ) {
        if let Ok(meta) = BundleMeta::from_custom(&edited_bundle(edits)) {
            for s in bundle_strings(&meta) {
                prop_assert!(!s.chars().any(is_unsafe_char), "{s:?}");
            }
            prop_assert!(!meta.target_name().contains(".."), "{}", meta.target_name());
        }
    }

    #[test]
    fn arbitrary_json_as_metadata_never_panics(v in json()) {
        let _ = BundleMeta::from_custom(&v);
        let _ = DeviceMeta::from_custom(&v);
    }

    /// RAUC's replies: properties, slot status, progress, InspectBundle, introspection.
    #[test]
    fn rauc_replies_never_panic(
        props in properties(RAUC_KEYS),
        slots in prop::collection::vec((".{0,12}", properties(RAUC_KEYS)), 0..4),
        progress in variant(),
        xml in ".{0,200}",
    ) {
        let _ = info_from(&props, slots_from(&slots));
        let _ = progress_from(&progress);
        let _ = bundle_info_from_inspect(&props);
        let _ = capabilities_from_introspection(&xml);
    }

    /// ModemManager's objects and SIM properties: never a panic, and the identifiers it
    /// reports are masked.
    #[test]
    fn modemmanager_replies_never_panic_and_stay_masked(
        objects in managed_objects(),
        sim in proptest::option::of(properties(MM_KEYS)),
    ) {
        let info = modem_info_from(&objects, sim.as_ref());
        prop_assert!(
            info.iccid_masked.is_empty() || info.iccid_masked.starts_with('…'),
            "{}", info.iccid_masked
        );
    }

    /// Masking keeps at most the last 4 characters of anything 8 or longer, nothing of less.
    #[test]
    fn masking_never_reveals_more_than_four_characters(s in ".{0,40}") {
        let masked = mask_identifier(&s);
        let kept = masked.trim_start_matches('…').chars().count();
        prop_assert!(kept <= 4, "{s:?} -> {masked:?}");
        if s.trim().chars().count() < 8 {
            prop_assert_eq!(kept, 0);
        }
    }
}
