//! How a [`Status`] looks on D-Bus: one function per property, used by both the property
//! getters and [`properties`] (which feeds `GetStatus` and `PropertiesChanged`), so the three
//! cannot disagree.
//!
//! Unknown values are explicit and documented (`docs/dbus.md`): empty strings, `0` for
//! times, `"unknown"` for states, empty dicts — never a made-up value.

use std::collections::{BTreeMap, HashMap};

use jiff::Timestamp;
use zbus::{OwnedVariant, Str, Variant};

use crate::engine::{Finished, RebootPlan};
use crate::metadata::schema::Cve;
use crate::status::{Availability, IntegrityFinding, Offer, SlotInfo, Status};
use crate::store::{HistoryEntry, Recovery};

/// A D-Bus `a{sv}` dictionary.
pub type Dict = HashMap<String, OwnedVariant>;

/// Seconds since the Unix epoch, 0 for "never/unknown" (times before 1970 do not occur).
fn secs(t: Option<Timestamp>) -> u64 {
    t.map(|t| t.as_second().max(0) as u64).unwrap_or(0)
}

/// Converts a value to an owned variant. Only file descriptors can fail to convert and the
/// views contain none.
fn ov<'a>(v: impl Into<Variant<'a>>) -> OwnedVariant {
    let v: Variant<'a> = v.into();
    OwnedVariant::try_from(v).unwrap_or_else(|_| OwnedVariant::from(false))
}

fn s(v: &str) -> OwnedVariant {
    OwnedVariant::from(Str::from(v.to_owned()))
}

fn put_nonempty(d: &mut Dict, key: &str, value: &str) {
    if !value.is_empty() {
        d.insert(key.to_owned(), s(value));
    }
}

pub fn security_patch_level(st: &Status) -> String {
    st.installed
        .as_ref()
        .map(|i| i.security_patch_level.to_string())
        .unwrap_or_default()
}

pub fn patch_applied_at(st: &Status) -> u64 {
    secs(st.installed.as_ref().and_then(|i| i.applied_at))
}

pub fn installed_version(st: &Status) -> String {
    st.installed
        .as_ref()
        .map(|i| i.version.clone())
        .unwrap_or_default()
}

pub fn state(st: &Status) -> String {
    st.state.as_str().to_owned()
}

pub fn progress(st: &Status) -> u32 {
    st.progress
}

/// The verified update on offer (downloaded and checked), empty when none.
pub fn available(st: &Status) -> Dict {
    st.available.as_ref().map(offer).unwrap_or_default()
}

/// An offer as `a{sv}`: what it is, what it fixes, what applying it costs (COM-0020/0030,
/// ETSI 5.3-11/5.3-12). Built only from verified metadata.
pub fn offer(o: &Offer) -> Dict {
    let m = &o.target.meta;
    let mut d = Dict::new();
    d.insert("kind".to_owned(), s(m.kind.as_str()));
    d.insert("name".to_owned(), s(&o.target.name));
    d.insert("source".to_owned(), s(&o.source));
    d.insert("version".to_owned(), s(&m.version));
    d.insert("base_version".to_owned(), s(&m.base_version));
    d.insert(
        "security_patch_level".to_owned(),
        s(&m.security_patch_level.to_string()),
    );
    d.insert("size".to_owned(), OwnedVariant::from(o.target.length));
    d.insert(
        "requires_reboot".to_owned(),
        OwnedVariant::from(m.requires_reboot),
    );
    d.insert(
        "expected_downtime_s".to_owned(),
        OwnedVariant::from(m.expected_downtime_s),
    );
    d.insert(
        "released".to_owned(),
        OwnedVariant::from(secs(Some(m.released))),
    );
    if let Some(u) = &m.notes_url {
        d.insert("notes_url".to_owned(), s(u));
    }
    if let Some(sev) = m.max_severity() {
        d.insert("max_severity".to_owned(), s(sev.as_str()));
    }
    let cves: Vec<Dict> = m.cves.iter().map(cve).collect();
    d.insert("cves".to_owned(), ov(cves));
    // A deferred update is announced too, with why it waits and what taking it now costs.
    put_nonempty(&mut d, "deferred", &o.deferred);
    if let Some(until) = o.deferred_until {
        d.insert(
            "deferred_until".to_owned(),
            OwnedVariant::from(secs(Some(until))),
        );
    }
    d
}

fn cve(c: &Cve) -> Dict {
    let mut d = Dict::new();
    d.insert("id".to_owned(), s(&c.id));
    d.insert("severity".to_owned(), s(c.severity.as_str()));
    if let Some(score) = c.cvss {
        d.insert("cvss".to_owned(), OwnedVariant::from(score));
    }
    d.insert("summary".to_owned(), s(&c.summary));
    d
}

/// The end of an update attempt as `a{sv}` (`InstallFinished`).
pub fn finished(f: &Finished) -> Dict {
    let mut d = Dict::new();
    d.insert("outcome".to_owned(), s(f.outcome));
    d.insert("version".to_owned(), s(&f.version));
    d.insert(
        "security_patch_level".to_owned(),
        s(&f.security_patch_level),
    );
    d.insert("detail".to_owned(), s(&f.detail));
    d.insert("cves".to_owned(), ov(f.cves.clone()));
    d
}

pub fn last_check(st: &Status) -> u64 {
    secs(st.last_check.as_ref().map(|c| c.at))
}

pub fn last_check_verified(st: &Status) -> bool {
    st.last_check.as_ref().is_some_and(|c| c.verified)
}

pub fn last_check_result(st: &Status) -> String {
    st.last_check
        .as_ref()
        .map(|c| c.message.clone())
        .unwrap_or_default()
}

pub fn staleness(st: &Status) -> String {
    st.staleness.as_str().to_owned()
}

/// Last day of security support (signed per-model metadata, else configuration); empty
/// when unknown.
pub fn support_end(st: &Status) -> String {
    st.support.end.map(|d| d.to_string()).unwrap_or_default()
}

pub fn support_state(st: &Status) -> String {
    st.support.state.as_str().to_owned()
}

/// The replacement plan: text, url (each only when known).
pub fn replacement_info(st: &Status) -> Dict {
    let mut d = Dict::new();
    put_nonempty(&mut d, "text", &st.support.replacement_text);
    put_nonempty(&mut d, "url", &st.support.replacement_url);
    // SEC-0040: why the device cannot be updated any more (with `SupportState` `ended`).
    put_nonempty(&mut d, "cannot_update", &st.support.cannot_update);
    d
}

/// Reasons of the held host inhibitors.
pub fn inhibitors(st: &Status) -> Vec<String> {
    st.inhibitors.clone()
}

/// A planned reboot as `a{sv}` (`RebootPending`).
pub fn recovery(r: &Recovery) -> Dict {
    let mut d = Dict::new();
    d.insert("reason".to_owned(), s(&r.reason));
    d.insert("moved_to".to_owned(), s(&r.moved_to.display().to_string()));
    d.insert("at".to_owned(), OwnedVariant::from(secs(Some(r.at))));
    d.insert("sources".to_owned(), ov(r.sources.clone()));
    d.insert("floors".to_owned(), s(&r.floors));
    d
}

pub fn reboot_plan(p: &RebootPlan) -> Dict {
    let mut d = Dict::new();
    d.insert("reason".to_owned(), s(p.reason));
    d.insert("version".to_owned(), s(&p.version));
    d.insert(
        "expected_downtime_s".to_owned(),
        OwnedVariant::from(p.expected_downtime_s),
    );
    d.insert("at".to_owned(), OwnedVariant::from(secs(p.at)));
    let waiting: Vec<String> = p.waiting_for.iter().map(|w| (*w).to_owned()).collect();
    d.insert("waiting_for".to_owned(), ov(waiting));
    d.insert("inhibitors".to_owned(), ov(p.inhibitors.clone()));
    d
}

pub fn integrity_state(st: &Status) -> String {
    st.integrity.state.as_str().to_owned()
}

/// Which server updates come from and why; empty while no server is configured.
pub fn update_source(st: &Status) -> Dict {
    let src = &st.source;
    let mut d = Dict::new();
    if src.source.is_empty() {
        return d;
    }
    d.insert("source".to_owned(), s(&src.source));
    put_nonempty(&mut d, "url", &src.url);
    put_nonempty(&mut d, "reason", &src.reason);
    if let Some(t) = src.waiting_until {
        d.insert(
            "waiting_until".to_owned(),
            OwnedVariant::from(secs(Some(t))),
        );
    }
    put_nonempty(&mut d, "deferred", &src.deferred);
    d
}

/// `SubscriptionChanged`'s dictionary.
pub fn subscription_change(c: &crate::engine::SubscriptionChange) -> Dict {
    let mut d = Dict::new();
    d.insert("previous".to_owned(), s(&c.previous));
    d.insert("profile".to_owned(), s(&c.profile));
    d
}

/// Every probe's finding, empty before the first probe run.
pub fn integrity_findings(st: &Status) -> Vec<Dict> {
    findings(&st.integrity.findings)
}

/// Integrity findings as `aa{sv}`: probe, outcome (pass|fail|unknown), evidence.
pub fn findings(findings: &[IntegrityFinding]) -> Vec<Dict> {
    findings
        .iter()
        .map(|f| {
            let mut d = Dict::new();
            d.insert("probe".to_owned(), s(&f.probe));
            d.insert("outcome".to_owned(), s(&f.outcome));
            d.insert("evidence".to_owned(), s(&f.evidence));
            d
        })
        .collect()
}

/// The subscription as the modem shows it; identifiers arrive masked from the adapter.
pub fn subscription(st: &Status) -> Dict {
    let m = &st.modem;
    let mut d = Dict::new();
    d.insert("modem".to_owned(), s(m.availability.as_str()));
    let sub = &st.subscription;
    put_nonempty(&mut d, "profile", &sub.profile);
    let state = if sub.known { "known" } else { "unknown" };
    d.insert("state".to_owned(), s(state));
    d.insert("modems".to_owned(), OwnedVariant::from(m.modems));
    put_nonempty(&mut d, "home_mcc_mnc", &m.home_mcc_mnc);
    put_nonempty(&mut d, "operator_name", &m.operator_name);
    put_nonempty(&mut d, "iccid", &m.iccid_masked);
    put_nonempty(&mut d, "serving_mcc_mnc", &m.serving_mcc_mnc);
    put_nonempty(&mut d, "modem_model", &m.model);
    if let Some(r) = m.registration_state {
        d.insert("registration_state".to_owned(), OwnedVariant::from(r));
    }
    d
}

pub fn auto_install(st: &Status) -> bool {
    st.auto_install
}

pub fn postponed_until(st: &Status) -> u64 {
    secs(st.postponed_until)
}

pub fn model(st: &Status) -> String {
    st.model.clone()
}

pub fn hardware_id(st: &Status) -> String {
    st.hardware_id.clone()
}

pub fn compatible(st: &Status) -> String {
    st.rauc.compatible.clone()
}

pub fn boot_slot(st: &Status) -> String {
    st.rauc.boot_slot.clone()
}

pub fn slots(st: &Status) -> Vec<Dict> {
    st.rauc.slots.iter().map(slot).collect()
}

fn slot(sl: &SlotInfo) -> Dict {
    let mut d = Dict::new();
    d.insert("name".to_owned(), s(&sl.name));
    put_nonempty(&mut d, "class", &sl.class);
    put_nonempty(&mut d, "state", &sl.state);
    put_nonempty(&mut d, "bootname", &sl.bootname);
    put_nonempty(&mut d, "boot_status", &sl.boot_status);
    put_nonempty(&mut d, "bundle_version", &sl.bundle_version);
    put_nonempty(&mut d, "installed_timestamp", &sl.installed_timestamp);
    d
}

pub fn components(st: &Status) -> HashMap<String, String> {
    let name = |a: Availability| a.as_str().to_owned();
    HashMap::from([
        ("rauc".to_owned(), name(st.rauc.availability)),
        ("modemmanager".to_owned(), name(st.modem.availability)),
        ("networkmanager".to_owned(), name(st.network.availability)),
    ])
}

pub fn last_error(st: &Status) -> String {
    st.last_error.clone()
}

/// Delivery of signed reports to the fleet server: every key always present, so a settings
/// screen can tell "not configured" from "nothing waiting".
pub fn report_delivery(st: &Status) -> Dict {
    let d = &st.delivery;
    Dict::from([
        ("configured".to_owned(), OwnedVariant::from(d.configured)),
        ("queued".to_owned(), OwnedVariant::from(d.queued)),
        (
            "last_delivered".to_owned(),
            OwnedVariant::from(secs(d.last_delivered)),
        ),
        ("last_error".to_owned(), s(&d.last_error)),
        ("waiting".to_owned(), s(&d.waiting)),
    ])
}

/// Every property by its D-Bus name. `GetStatus` returns exactly this, and the service
/// diffs two of these to emit `PropertiesChanged`.
pub fn properties(st: &Status) -> BTreeMap<&'static str, OwnedVariant> {
    BTreeMap::from([
        ("SecurityPatchLevel", s(&security_patch_level(st))),
        ("PatchAppliedAt", OwnedVariant::from(patch_applied_at(st))),
        ("InstalledVersion", s(&installed_version(st))),
        ("State", s(&state(st))),
        ("Progress", OwnedVariant::from(progress(st))),
        ("Available", OwnedVariant::from(available(st))),
        ("LastCheck", OwnedVariant::from(last_check(st))),
        ("LastCheckResult", s(&last_check_result(st))),
        (
            "LastCheckVerified",
            OwnedVariant::from(last_check_verified(st)),
        ),
        ("Staleness", s(&staleness(st))),
        ("SupportEnd", s(&support_end(st))),
        ("SupportState", s(&support_state(st))),
        ("ReplacementInfo", OwnedVariant::from(replacement_info(st))),
        ("IntegrityState", s(&integrity_state(st))),
        ("IntegrityFindings", ov(integrity_findings(st))),
        ("UpdateSource", OwnedVariant::from(update_source(st))),
        ("Subscription", OwnedVariant::from(subscription(st))),
        ("AutoInstall", OwnedVariant::from(auto_install(st))),
        ("PostponedUntil", OwnedVariant::from(postponed_until(st))),
        ("Model", s(&model(st))),
        ("HardwareId", s(&hardware_id(st))),
        ("Compatible", s(&compatible(st))),
        ("BootSlot", s(&boot_slot(st))),
        ("Slots", ov(slots(st))),
        ("Components", OwnedVariant::from(components(st))),
        ("LastError", s(&last_error(st))),
        ("Inhibitors", ov(inhibitors(st))),
        ("ReportDelivery", OwnedVariant::from(report_delivery(st))),
    ])
}

/// One history entry as `a{sv}`.
pub fn history_entry(e: &HistoryEntry) -> Dict {
    let mut d = Dict::new();
    d.insert("id".to_owned(), OwnedVariant::from(e.id));
    d.insert("at".to_owned(), OwnedVariant::from(secs(Some(e.at))));
    d.insert("kind".to_owned(), s(&e.kind));
    d.insert("action".to_owned(), s(&e.action));
    if let Some(v) = &e.version {
        d.insert("version".to_owned(), s(v));
    }
    if let Some(l) = e.security_patch_level {
        d.insert("security_patch_level".to_owned(), s(&l.to_string()));
    }
    put_nonempty(&mut d, "detail", &e.detail);
    d.insert("cves".to_owned(), ov(e.cves.clone()));
    d
}
