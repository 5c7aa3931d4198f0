//! What `ssuctl` needs besides argument parsing: the client proxy for `org.ssu.Agent1`,
//! conversion of D-Bus values to JSON, and the human rendering ([`render`]).
//!
//! `ssuctl` works only from what the agent serves on the bus — the same data a settings
//! screen or a hub gets — so the CLI doubles as a check of the D-Bus contract.

pub mod cves;
pub mod install;
pub mod render;
pub mod report;

use std::collections::HashMap;

use zbus::{OwnedVariant, Variant};

/// The agent's bus name and object path.
pub const BUS_NAME: &str = crate::dbus::BUS_NAME;
pub const OBJECT_PATH: &str = crate::dbus::OBJECT_PATH;

/// A D-Bus `a{sv}` as received.
pub type Dict = HashMap<String, OwnedVariant>;

/// Client side of `org.ssu.Agent1`.
#[zbus::proxy(
    interface = "org.ssu.Agent1",
    default_service = "org.ssu.Agent1",
    default_path = "/org/ssu/Agent1"
)]
pub trait Agent1 {
    fn get_status(&self) -> zbus::Result<Dict>;
    fn get_history(&self) -> zbus::Result<Vec<Dict>>;
    fn check_now(&self) -> zbus::Result<()>;
    fn set_auto_install(&self, enabled: bool) -> zbus::Result<()>;
    fn postpone(&self, seconds: u64) -> zbus::Result<()>;
    fn install(&self) -> zbus::Result<()>;
    fn reboot(&self) -> zbus::Result<()>;
    fn schedule_reboot(&self, at: u64) -> zbus::Result<()>;
    fn get_report(&self, nonce: &[u8]) -> zbus::Result<(String, Vec<u8>, String)>;
    fn get_public_key(&self) -> zbus::Result<(String, Vec<u8>, String)>;
}

/// Converts a D-Bus value to JSON: integers and strings as themselves, dicts with string keys
/// as objects, arrays and structs as arrays.
pub fn to_json(v: &Variant<'_>) -> serde_json::Value {
    use serde_json::Value as J;
    match v {
        Variant::U8(x) => J::from(*x),
        Variant::Bool(x) => J::from(*x),
        Variant::I16(x) => J::from(*x),
        Variant::U16(x) => J::from(*x),
        Variant::I32(x) => J::from(*x),
        Variant::U32(x) => J::from(*x),
        Variant::I64(x) => J::from(*x),
        Variant::U64(x) => J::from(*x),
        Variant::F64(x) => J::from(*x),
        Variant::Str(s) => J::from(s.as_str()),
        Variant::Signature(s) => J::from(s.to_string()),
        Variant::ObjectPath(p) => J::from(p.as_str()),
        Variant::Variant(inner) => to_json(inner),
        Variant::Array(a) => J::Array(a.inner().iter().map(to_json).collect()),
        Variant::Dict(d) => J::Object(
            d.iter()
                .map(|(k, v)| {
                    let key = match k {
                        Variant::Str(s) => s.as_str().to_owned(),
                        other => to_json(other).to_string(),
                    };
                    (key, to_json(v))
                })
                .collect(),
        ),
        Variant::Structure(s) => J::Array(s.fields().iter().map(to_json).collect()),
        #[allow(unreachable_patterns)]
        _ => J::Null,
    }
}

/// A dict as a JSON object.
pub fn dict_to_json(d: &Dict) -> serde_json::Value {
    serde_json::Value::Object(d.iter().map(|(k, v)| (k.clone(), to_json(v))).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use zbus::Str;

    #[test]
    fn nested_values_convert() {
        let mut inner = Dict::new();
        inner.insert("name".into(), OwnedVariant::from(Str::from("rootfs.0")));
        let mut d = Dict::new();
        d.insert("Progress".into(), OwnedVariant::from(42u32));
        d.insert("AutoInstall".into(), OwnedVariant::from(true));
        d.insert(
            "Slots".into(),
            OwnedVariant::try_from(Variant::from(vec![inner])).unwrap(),
        );
        let j = dict_to_json(&d);
        assert_eq!(j["Progress"], 42);
        assert_eq!(j["AutoInstall"], true);
        assert_eq!(j["Slots"][0]["name"], "rootfs.0");
    }
}
