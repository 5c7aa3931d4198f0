//! The hub's side of a signed report (`ssu-repo verify-report`): is it signed by the key the
//! hub knows for this device, bound to the nonce the hub chose, newer than every report the
//! hub accepted before — and what does that prove.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::{Envelope, FORMAT, key};

/// What a verified report proves; `docs/report.md` uses the same words.
pub const PROVES: &str = "The report was signed with the private key of the device whose \
public key you gave, over exactly these bytes. The nonce shows it was signed after you chose \
that nonce (it is not a replay of an older report), and the counter shows it is newer than \
every report of this device you accepted before.";

/// What it cannot prove; `docs/report.md` uses the same words.
pub const CANNOT_PROVE: &str = "It does not prove that what the report says is true. The \
device's own software wrote it: a device that is rooted and holds its own key can still lie, \
and the integrity verdict is self-reported unless the key is hardware-backed (kept in a TPM or \
secure element that signs only for software the boot chain measured). A stale time or an old \
metadata version in a verified report is the device telling you it is behind.";

/// Why a report is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Refused {
    #[error("not a signed report as `ssuctl report --json` writes it: {0}")]
    Malformed(String),
    #[error("signed by key {found}, not by the device key given ({expected})")]
    OtherKey { found: String, expected: String },
    #[error(
        "the signature does not verify with the device key: the report was changed or not signed by this device"
    )]
    BadSignature,
    #[error(
        "the report's nonce {found} is not the one expected ({expected}): a replayed or foreign report"
    )]
    Nonce { found: String, expected: String },
    #[error(
        "counter {found} is lower than {min}: an old report replayed, or the device's counter went back"
    )]
    Counter { found: u64, min: u64 },
}

/// What the hub expects.
#[derive(Debug, Clone, Default)]
pub struct Expect {
    /// The nonce the hub passed to `GetReport`; `None` skips the check (then freshness is
    /// not shown).
    pub nonce: Option<Vec<u8>>,
    /// The lowest counter accepted; `None` skips the check.
    pub min_counter: Option<u64>,
}

/// A report that passed.
#[derive(Debug, Clone)]
pub struct Verified {
    pub key_id: String,
    pub counter: u64,
    /// The report's content (as signed).
    pub report: Value,
}

/// Checks `envelope` (the JSON of `ssuctl report --json`) against the device's public key and
/// the hub's expectations. The signature is checked before any field is believed.
pub fn verify(envelope: &[u8], public_key: &[u8], expect: &Expect) -> Result<Verified, Refused> {
    let env: Envelope =
        serde_json::from_slice(envelope).map_err(|e| Refused::Malformed(e.to_string()))?;
    let expected_id = key::key_id(public_key);
    if env.key_id != expected_id {
        return Err(Refused::OtherKey {
            found: env.key_id,
            expected: expected_id,
        });
    }
    let signature =
        hex::decode(&env.signature).map_err(|e| Refused::Malformed(format!("signature: {e}")))?;
    if !key::verify(public_key, env.report.as_bytes(), &signature) {
        return Err(Refused::BadSignature);
    }
    let report: Value = serde_json::from_str(&env.report)
        .map_err(|e| Refused::Malformed(format!("report: {e}")))?;
    if report["format"] != FORMAT {
        return Err(Refused::Malformed(format!(
            "format {} is not {FORMAT}",
            report["format"]
        )));
    }
    // The signed key id must agree with the envelope's (which is unsigned).
    if report["key"]["id"] != expected_id.as_str() {
        return Err(Refused::OtherKey {
            found: report["key"]["id"].to_string(),
            expected: expected_id,
        });
    }
    let found_nonce = report["nonce"].as_str().unwrap_or_default();
    if let Some(nonce) = &expect.nonce {
        let expected = hex::encode(nonce);
        if found_nonce != expected {
            return Err(Refused::Nonce {
                found: found_nonce.to_owned(),
                expected,
            });
        }
    }
    let counter = report["counter"]
        .as_u64()
        .ok_or_else(|| Refused::Malformed("counter: not a number".into()))?;
    if let Some(min) = expect.min_counter
        && counter < min
    {
        return Err(Refused::Counter {
            found: counter,
            min,
        });
    }
    Ok(Verified {
        key_id: expected_id,
        counter,
        report,
    })
}

/// Reads a device public key: 64 hex digits, or `ed25519 HEX [KEY_ID]` as `ssuctl report
/// --public-key` prints it, or its `--json` form — given directly or in a file.
pub fn parse_public_key(arg: &str) -> Result<[u8; key::PUBLIC_KEY_LEN], String> {
    let text = if is_hex_key(arg.trim()) {
        arg.to_owned()
    } else {
        std::fs::read_to_string(arg)
            .map_err(|e| format!("{arg}: not a hex public key, and cannot read it: {e}"))?
    };
    let hex_key = if text.trim_start().starts_with('{') {
        serde_json::from_str::<Value>(&text)
            .ok()
            .and_then(|j| j["public_key"].as_str().map(str::to_owned))
            .unwrap_or_default()
    } else {
        let mut words = text.split_whitespace();
        match (words.next(), words.next()) {
            (Some(k), None) => k.to_owned(),
            (Some(key::ALGORITHM), Some(k)) => k.to_owned(),
            _ => String::new(),
        }
    };
    if !is_hex_key(&hex_key) {
        return Err(format!(
            "{arg}: expected an Ed25519 public key as 64 hex digits (ssuctl report --public-key)"
        ));
    }
    let mut out = [0u8; key::PUBLIC_KEY_LEN];
    hex::decode_to_slice(&hex_key, &mut out).map_err(|e| format!("{arg}: {e}"))?;
    Ok(out)
}

fn is_hex_key(s: &str) -> bool {
    s.len() == 2 * key::PUBLIC_KEY_LEN && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The hub's memory of the highest counter accepted per device key, in a small JSON file.
#[derive(Debug)]
pub struct CounterState {
    path: PathBuf,
    seen: BTreeMap<String, u64>,
}

impl CounterState {
    /// Loads `path`; a missing file means no report was accepted yet.
    pub fn load(path: &Path) -> Result<CounterState, String> {
        let seen = match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| format!("{}: not a counter state file: {e}", path.display()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => return Err(format!("{}: {e}", path.display())),
        };
        Ok(CounterState {
            path: path.to_owned(),
            seen,
        })
    }

    /// The lowest counter the next report of `key_id` may carry.
    pub fn min_counter(&self, key_id: &str) -> Option<u64> {
        self.seen.get(key_id).map(|c| c.saturating_add(1))
    }

    /// Records an accepted report (atomically).
    pub fn accept(&mut self, key_id: &str, counter: u64) -> Result<(), String> {
        self.seen.insert(key_id.to_owned(), counter);
        let text = serde_json::to_string_pretty(&self.seen).map_err(|e| e.to_string())?;
        crate::fsutil::write_atomic(&self.path, text.as_bytes(), 0o644)
            .map_err(|e| format!("{}: cannot write: {e}", self.path.display()))
    }
}

/// The verdict as `ssu-repo verify-report` prints it.
pub fn describe(v: &Verified, expect: &Expect) -> String {
    let r = &v.report;
    let text = |v: &Value| match v {
        Value::String(s) if !s.is_empty() => s.clone(),
        Value::Null => "unknown".to_owned(),
        Value::String(_) => "unknown".to_owned(),
        other => other.to_string(),
    };
    let mut out = format!(
        "Report verified: signed by device key {}.\n\
         Device:               {} ({})\n\
         Security patch level: {} (installed version {})\n\
         Booted slot:          {}\n\
         Staleness:            {}; metadata last verified {}\n\
         Integrity:            {} (self-reported)\n\
         Signed at:            {} (device time), counter {}\n",
        v.key_id,
        text(&r["device"]["hardware_id"]),
        text(&r["device"]["model"]),
        text(&r["installed"]["security_patch_level"]),
        text(&r["installed"]["version"]),
        text(&r["boot"]["booted_slot"]),
        text(&r["staleness"]),
        match &r["metadata"]["last_verified_at"] {
            Value::Null => "never".to_owned(),
            other => text(other),
        },
        text(&r["integrity"]["state"]),
        text(&r["time"]),
        v.counter,
    );
    out.push_str(match (&expect.nonce, expect.min_counter) {
        (Some(_), Some(_)) => "Nonce matches; counter is above every one accepted before.\n",
        (Some(_), None) => "Nonce matches. Counter NOT checked (no --min-counter or --state).\n",
        (None, Some(_)) => {
            "Counter is above every one accepted before. Nonce NOT checked: this may be a \
             replay.\n"
        }
        (None, None) => "Nonce and counter NOT checked: this may be a replay.\n",
    });
    out.push_str(&format!(
        "\n{}\n{}",
        wrap(&format!("What this proves: {PROVES}"), 90),
        wrap(&format!("What it cannot prove: {CANNOT_PROVE}"), 90)
    ));
    out
}

/// `text` broken into lines of at most `width` characters at spaces, each line ending in a
/// newline.
fn wrap(text: &str, width: usize) -> String {
    let mut out = String::new();
    let mut line = String::new();
    for word in text.split_whitespace() {
        if !line.is_empty() && line.chars().count() + 1 + word.chars().count() > width {
            out.push_str(&line);
            out.push('\n');
            line.clear();
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    if !line.is_empty() {
        out.push_str(&line);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docs_use_the_same_words() {
        let doc = include_str!("../../docs/report.md");
        let flat = doc.split_whitespace().collect::<Vec<_>>().join(" ");
        for words in [PROVES, CANNOT_PROVE] {
            let words = words.split_whitespace().collect::<Vec<_>>().join(" ");
            assert!(flat.contains(&words), "docs/report.md lacks: {words}");
        }
    }

    #[test]
    fn public_keys_parse_in_every_printed_form() {
        let hex_key = "11".repeat(32);
        let want = [0x11u8; 32];
        assert_eq!(parse_public_key(&hex_key).unwrap(), want);
        let dir = tempfile::tempdir().unwrap();
        for (name, text) in [
            ("plain", format!("{hex_key}\n")),
            ("line", format!("ed25519 {hex_key} abcd\n")),
            ("json", format!("{{\"public_key\": \"{hex_key}\"}}")),
        ] {
            let p = dir.path().join(name);
            std::fs::write(&p, text).unwrap();
            assert_eq!(
                parse_public_key(p.to_str().unwrap()).unwrap(),
                want,
                "{name}"
            );
        }
        for bad in ["11", "rsa 1111", "zz"] {
            let p = dir.path().join("bad");
            std::fs::write(&p, bad).unwrap();
            assert!(parse_public_key(p.to_str().unwrap()).is_err(), "{bad}");
        }
        assert!(parse_public_key("/nonexistent/key").is_err());
    }

    #[test]
    fn wrapping_keeps_every_word_within_the_width() {
        let w = wrap(PROVES, 40);
        assert!(w.lines().all(|l| l.chars().count() <= 40), "{w}");
        assert_eq!(
            w.split_whitespace().collect::<Vec<_>>(),
            PROVES.split_whitespace().collect::<Vec<_>>()
        );
    }

    #[test]
    fn counter_state_remembers_per_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("seen.json");
        let mut s = CounterState::load(&path).unwrap();
        assert_eq!(s.min_counter("a"), None);
        s.accept("a", 7).unwrap();
        let s = CounterState::load(&path).unwrap();
        assert_eq!(s.min_counter("a"), Some(8));
        assert_eq!(s.min_counter("b"), None);
        std::fs::write(&path, "garbage").unwrap();
        assert!(CounterState::load(&path).is_err());
    }
}
