//! Signed patch-status reports for a hub (a vehicle gateway, a home or industrial gateway,
//! a fleet backend): `GetReport(nonce)` on D-Bus, `ssuctl report`, `ssu-repo verify-report`.
//!
//! The parts:
//! - [`key`]: the device identity key behind the [`key::Signer`] trait (a file today, a TPM
//!   or secure element later).
//! - [`counter`]: the per-device counter that never goes back (its own file in the state
//!   directory).
//! - [`build`]: the report as canonical JSON (OLPC canonical JSON, as TUF signs), from the
//!   engine's [`Status`] snapshot — pure, with time, nonce, counter and boot id as inputs.
//! - [`Reporter`]: what the D-Bus service holds: the key and the counter.
//! - [`deliver`]: signing for the fleet server and POSTing (`[report] url`); the queue and
//!   its retries are the engine's (`engine/delivery.rs`), the decisions `policy::delivery`'s.
//! - [`serve`]: `ssu-repo serve-reports`, the HTTP receiver storing through `repo::fleet`.
//! - [`verify`]: the hub's side — signature, key, nonce, counter — and what a verified
//!   report proves and what it cannot (`docs/report.md`).

pub mod counter;
pub mod deliver;
pub mod key;
pub mod serve;
pub mod verify;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::status::Status;
use counter::{Counter, CounterError};
use key::{KeyError, Signer};

/// The report's `format`: what a verifier checks before reading any other field.
pub const FORMAT: &str = "ssu-agent-report/1";
/// Shortest nonce a caller may pass: 128 bits cannot be guessed ahead of time.
pub const MIN_NONCE: usize = 16;
/// Longest nonce: enough for any hash or random value a hub may use.
pub const MAX_NONCE: usize = 64;

/// Why no report was produced.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReportError {
    /// The caller's nonce is out of bounds (D-Bus `InvalidArgs`).
    #[error("the nonce must be {MIN_NONCE} to {MAX_NONCE} bytes, got {0}")]
    Nonce(usize),
    /// No identity key is available (D-Bus `Unavailable`); the reason says why.
    #[error("no device identity key: {0}")]
    NoKey(String),
    #[error(transparent)]
    Counter(#[from] CounterError),
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error("cannot encode the report: {0}")]
    Encode(String),
}

/// Checks a caller's nonce.
pub fn check_nonce(nonce: &[u8]) -> Result<(), ReportError> {
    if (MIN_NONCE..=MAX_NONCE).contains(&nonce.len()) {
        Ok(())
    } else {
        Err(ReportError::Nonce(nonce.len()))
    }
}

/// What a report binds besides the status: the values that make it fresh and unique.
#[derive(Debug, Clone)]
pub struct Context<'a> {
    pub nonce: &'a [u8],
    pub counter: u64,
    /// Empty when the boot id cannot be read.
    pub boot_id: &'a str,
    /// The device's time when it signed.
    pub now: Timestamp,
    pub key_id: &'a str,
    /// The raw public key: carried in the report so that a hub that trusts on first use
    /// (`ssu-repo serve-reports --allow-unknown`) can enrol the device from its first report.
    pub public_key: &'a [u8],
    /// [`Signer::storage`].
    pub key_storage: &'a str,
}

/// A signed report as `GetReport` returns it and `ssuctl report --json` writes it: the
/// report exactly as signed (a string, so its bytes survive any JSON re-encoding), the
/// signature in hex and the signing key's id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Envelope {
    pub report: String,
    pub signature: String,
    pub key_id: String,
}

fn time(t: Option<Timestamp>) -> Value {
    match t {
        // Whole seconds: sub-second digits say nothing a hub can use.
        Some(t) => Value::from(
            Timestamp::from_second(t.as_second())
                .unwrap_or(t)
                .to_string(),
        ),
        None => Value::Null,
    }
}

/// The report for `st` as a JSON value; [`canonical`] turns it into the signed bytes.
///
/// Unknown values are `null` or empty, as on D-Bus, never made up. The subscription is
/// masked exactly as on D-Bus (it is built by the same function).
pub fn build(st: &Status, ctx: &Context<'_>) -> Value {
    let installed = st.installed.as_ref();
    let slots: Vec<Value> = st
        .rauc
        .slots
        .iter()
        .map(|s| {
            json!({
                "name": s.name,
                "class": s.class,
                "state": s.state,
                "bootname": s.bootname,
                "boot_status": s.boot_status,
                "bundle_version": s.bundle_version,
                "installed_timestamp": s.installed_timestamp,
            })
        })
        .collect();
    let findings: Vec<Value> = st
        .integrity
        .findings
        .iter()
        .map(|f| json!({"probe": f.probe, "outcome": f.outcome, "evidence": f.evidence}))
        .collect();
    let v = &st.verified.versions;
    let report = json!({
        "format": FORMAT,
        "key": {
            "id": ctx.key_id, "public_key": hex::encode(ctx.public_key),
            "algorithm": key::ALGORITHM, "storage": ctx.key_storage,
        },
        "nonce": hex::encode(ctx.nonce),
        "counter": ctx.counter,
        "boot_id": ctx.boot_id,
        "time": time(Some(ctx.now)),
        "device": {"hardware_id": st.hardware_id, "model": st.model},
        "installed": {
            "version": installed.map(|i| i.version.as_str()),
            "feature_release": installed.map(|i| i.feature_release.as_str()),
            "security_patch_level": installed.map(|i| i.security_patch_level.to_string()),
            "applied_at": time(installed.and_then(|i| i.applied_at)),
        },
        "boot": {
            "compatible": st.rauc.compatible,
            "booted_slot": st.rauc.boot_slot,
            "slots": slots,
        },
        "metadata": {
            "versions": {
                "root": v.root, "timestamp": v.timestamp,
                "snapshot": v.snapshot, "targets": v.targets,
            },
            "last_verified_at": time(st.verified.at),
            "last_check": st.last_check.as_ref().map(|c| json!({
                "at": time(Some(c.at)), "verified": c.verified, "message": c.message,
            })),
        },
        "staleness": st.staleness.as_str(),
        "update_state": st.state.as_str(),
        "available": st.available.as_ref().map(|o| json!({
            "version": o.target.meta.version,
            "security_patch_level": o.target.meta.security_patch_level.to_string(),
        })),
        "last_error": st.last_error,
        "support": {
            "state": st.support.state.as_str(),
            "end": st.support.end.map(|d| d.to_string()),
        },
        "integrity": {"state": st.integrity.state.as_str(), "findings": findings},
        "subscription": crate::ctl::dict_to_json(&crate::dbus::view::subscription(st)),
    });
    without_control_chars(report)
}

/// OLPC canonical JSON prints control characters raw, which is not JSON any parser reads;
/// they carry nothing a hub needs (evidence and messages are single-line text), so they go.
fn without_control_chars(v: Value) -> Value {
    let clean = |s: String| -> String {
        if s.chars().any(char::is_control) {
            s.chars().filter(|c| !c.is_control()).collect()
        } else {
            s
        }
    };
    match v {
        Value::String(s) => Value::String(clean(s)),
        Value::Array(a) => Value::Array(a.into_iter().map(without_control_chars).collect()),
        Value::Object(o) => Value::Object(
            o.into_iter()
                .map(|(k, v)| (clean(k), without_control_chars(v)))
                .collect(),
        ),
        other => other,
    }
}

/// `v` as OLPC canonical JSON (sorted keys, no whitespace, NFC strings, no floats) — the
/// form TUF signs, through the formatter tough uses.
pub fn canonical(v: &Value) -> Result<String, ReportError> {
    let mut out = Vec::new();
    let mut ser =
        serde_json::Serializer::with_formatter(&mut out, olpc_cjson::CanonicalFormatter::new());
    v.serialize(&mut ser)
        .map_err(|e| ReportError::Encode(e.to_string()))?;
    String::from_utf8(out).map_err(|e| ReportError::Encode(e.to_string()))
}

/// The identity key and the counter: what the D-Bus service needs to sign reports.
pub struct Reporter {
    identity: Result<Arc<Identity>, String>,
}

struct Identity {
    signer: Arc<dyn Signer>,
    key_id: String,
    counter: Mutex<Counter>,
    boot_id_file: PathBuf,
}

impl Reporter {
    /// Opens the key (`[device] identity_key`, else the generated one) and the counter. A
    /// failure does not stop the agent — installing security updates matters more than
    /// reporting on them — but every report request returns it.
    pub fn open(config: &crate::config::Config) -> Reporter {
        let state_dir = &config.agent.state_dir;
        let opened = key::FileSigner::open(state_dir, config.device.identity_key.as_deref())
            .map_err(|e| e.to_string())
            .and_then(|signer| {
                let counter = Counter::open(state_dir).map_err(|e| e.to_string())?;
                Ok((signer, counter))
            });
        match opened {
            Ok((signer, counter)) => Reporter::new(
                Arc::new(signer),
                counter,
                config.install.boot_id_file.clone(),
            ),
            Err(e) => {
                tracing::error!("signed reports are unavailable: {e}");
                Reporter { identity: Err(e) }
            }
        }
    }

    /// A reporter over any signer (tests, hardware-backed keys).
    pub fn new(signer: Arc<dyn Signer>, counter: Counter, boot_id_file: PathBuf) -> Reporter {
        let key_id = key::key_id(&signer.public_key());
        tracing::info!(key_id = %key_id, storage = signer.storage(), "device identity key");
        Reporter {
            identity: Ok(Arc::new(Identity {
                signer,
                key_id,
                counter: Mutex::new(counter),
                boot_id_file,
            })),
        }
    }

    fn identity(&self) -> Result<&Arc<Identity>, ReportError> {
        self.identity
            .as_ref()
            .map_err(|e| ReportError::NoKey(e.clone()))
    }

    /// The public key and its id.
    pub fn public_key(&self) -> Result<([u8; key::PUBLIC_KEY_LEN], String), ReportError> {
        let id = self.identity()?;
        Ok((id.signer.public_key(), id.key_id.clone()))
    }

    /// A signed report of `st` bound to `nonce`. The counter is persisted before the report
    /// exists; signing runs off the async threads (a hardware signer may block).
    pub async fn report(&self, st: Status, nonce: Vec<u8>) -> Result<Envelope, ReportError> {
        check_nonce(&nonce)?;
        let id = self.identity()?.clone();
        tokio::task::spawn_blocking(move || {
            let counter = id
                .counter
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .take()?;
            let boot_id = std::fs::read_to_string(&id.boot_id_file)
                .map(|s| s.trim().to_owned())
                .unwrap_or_default();
            let public_key = id.signer.public_key();
            let ctx = Context {
                nonce: &nonce,
                counter,
                boot_id: &boot_id,
                now: Timestamp::now(),
                key_id: &id.key_id,
                public_key: &public_key,
                key_storage: id.signer.storage(),
            };
            sign(&*id.signer, &st, &ctx)
        })
        .await
        .map_err(|e| ReportError::Encode(format!("the signing task failed: {e}")))?
    }
}

/// The key id and counter of an envelope as JSON (what the server's acknowledgement names);
/// `None` when it is not one.
pub fn identify(envelope_json: &str) -> Option<(String, u64)> {
    let envelope: Envelope = serde_json::from_str(envelope_json).ok()?;
    let report: Value = serde_json::from_str(&envelope.report).ok()?;
    Some((envelope.key_id, report.get("counter")?.as_u64()?))
}

/// Builds, encodes and signs one report.
pub fn sign(signer: &dyn Signer, st: &Status, ctx: &Context<'_>) -> Result<Envelope, ReportError> {
    let report = canonical(&build(st, ctx))?;
    let signature = signer.sign(report.as_bytes())?;
    Ok(Envelope {
        report,
        signature: hex::encode(signature),
        key_id: ctx.key_id.to_owned(),
    })
}

#[cfg(test)]
mod tests;
