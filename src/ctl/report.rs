//! `ssuctl report`: a signed patch-status report and the device's public key, as printed.

use serde_json::{Value, json};

use crate::report::Envelope;

/// A fresh random nonce for `ssuctl report` without `--nonce` (32 bytes).
pub fn random_nonce() -> Result<Vec<u8>, String> {
    use aws_lc_rs::rand::SecureRandom;
    let mut nonce = vec![0u8; 32];
    aws_lc_rs::rand::SystemRandom::new()
        .fill(&mut nonce)
        .map_err(|_| "cannot draw a random nonce".to_owned())?;
    Ok(nonce)
}

/// Parses `--nonce HEX`.
pub fn parse_nonce(text: &str) -> Result<Vec<u8>, String> {
    hex::decode(text.trim()).map_err(|e| format!("--nonce {text:?}: not hex ({e})"))
}

/// What `GetReport` returned, as `ssuctl report --json` writes it (`ssu-repo verify-report`
/// reads exactly this).
pub fn envelope(report: String, signature: &[u8], key_id: String) -> Envelope {
    Envelope {
        report,
        signature: hex::encode(signature),
        key_id,
    }
}

/// `ssuctl report --public-key`: `ed25519 HEX KEY_ID`, like an OpenSSH public key line.
pub fn public_key_line(algorithm: &str, public_key: &[u8], key_id: &str) -> String {
    format!("{algorithm} {} {key_id}\n", hex::encode(public_key))
}

/// `ssuctl report --public-key --json`.
pub fn public_key_json(algorithm: &str, public_key: &[u8], key_id: &str) -> Value {
    json!({"algorithm": algorithm, "public_key": hex::encode(public_key), "key_id": key_id})
}

/// The report for people: the main facts, then how to check it.
pub fn render(env: &Envelope) -> String {
    let r: Value = serde_json::from_str(&env.report).unwrap_or(Value::Null);
    let text = |v: &Value| match v {
        Value::String(s) if !s.is_empty() => s.clone(),
        Value::String(_) | Value::Null => "unknown".to_owned(),
        other => other.to_string(),
    };
    format!(
        "Signed patch-status report\n\
         Device:               {} ({})\n\
         Security patch level: {}\n\
         Installed version:    {}\n\
         Booted slot:          {}\n\
         Staleness:            {}\n\
         Integrity:            {}\n\
         Device time:          {}\n\
         Counter:              {}\n\
         Nonce:                {}\n\
         Key id:               {}\n\
         \n\
         A hub checks it with: ssuctl report --nonce NONCE --json > report.json;\n\
         ssu-repo verify-report --device-key KEY --nonce NONCE report.json\n",
        text(&r["device"]["hardware_id"]),
        text(&r["device"]["model"]),
        text(&r["installed"]["security_patch_level"]),
        text(&r["installed"]["version"]),
        text(&r["boot"]["booted_slot"]),
        text(&r["staleness"]),
        text(&r["integrity"]["state"]),
        text(&r["time"]),
        text(&r["counter"]),
        text(&r["nonce"]),
        env.key_id,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nonces_parse_and_are_random() {
        assert_eq!(parse_nonce("00ff").unwrap(), [0, 255]);
        assert!(parse_nonce("xyz").is_err());
        let a = random_nonce().unwrap();
        assert_eq!(a.len(), 32);
        assert_ne!(a, random_nonce().unwrap());
    }

    #[test]
    fn the_public_key_line_parses_back() {
        let line = public_key_line("ed25519", &[0xab; 32], "kid");
        assert_eq!(line, format!("ed25519 {} kid\n", "ab".repeat(32)));
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k");
        std::fs::write(&p, &line).unwrap();
        assert_eq!(
            crate::report::verify::parse_public_key(p.to_str().unwrap()).unwrap(),
            [0xab; 32]
        );
    }
}
