//! The store of delivered reports: enrolment, acceptance, and every kind of bad delivery.
use super::store::*;
use crate::report::key::{self, FileSigner, Signer};
use crate::report::{Envelope, FORMAT, canonical};
use jiff::Timestamp;
use serde_json::{Value, json};
use std::fs;
use std::path::Path;

pub(super) const NOW: &str = "2026-11-30T08:00:00Z";

pub(super) fn now() -> Timestamp {
    NOW.parse().unwrap()
}

/// A device key in its own temporary state directory.
pub(super) fn device() -> (tempfile::TempDir, FileSigner) {
    let dir = tempfile::tempdir().unwrap();
    let signer = FileSigner::open(dir.path(), None).unwrap();
    (dir, signer)
}

/// A report shaped as `report::build` writes it (the fields the page reads), with `extra`
/// merged over it.
pub(super) fn report(signer: &FileSigner, counter: u64, extra: Value) -> Value {
    let pk = signer.public_key();
    let mut r = json!({
        "format": FORMAT,
        "key": {"id": key::key_id(&pk), "public_key": hex::encode(pk),
                "algorithm": "ed25519", "storage": "file"},
        "nonce": "07".repeat(16),
        "counter": counter,
        "boot_id": "b00t",
        "time": "2026-11-30T07:59:00Z",
        "device": {"hardware_id": "sandbox-gw-1", "model": "Sandbox Gateway"},
        "installed": {"version": "1.0.1", "feature_release": "1.0",
                      "security_patch_level": "2026-10-01", "applied_at": "2026-10-03T04:05:06Z"},
        "boot": {"compatible": "ssu-sandbox", "booted_slot": "A", "slots": [
            {"name": "rootfs.0", "class": "rootfs", "state": "booted", "bootname": "A",
             "boot_status": "good", "bundle_version": "1.0.1", "installed_timestamp": ""},
            {"name": "rootfs.1", "class": "rootfs", "state": "inactive", "bootname": "B",
             "boot_status": "good", "bundle_version": "1.0.0", "installed_timestamp": ""}]},
        "metadata": {"versions": {"root": 1, "timestamp": 3, "snapshot": 2, "targets": 2},
                     "last_verified_at": "2026-11-30T07:00:00Z",
                     "last_check": {"at": "2026-11-30T07:00:00Z", "verified": true,
                                    "message": "up to date"}},
        "staleness": "current",
        "update_state": "idle",
        "available": null,
        "last_error": "",
        "support": {"state": "supported", "end": "2029-01-15"},
        "integrity": {"state": "trusted", "findings": []},
        "subscription": {},
    });
    merge(&mut r, extra);
    r
}

fn merge(base: &mut Value, extra: Value) {
    match (base, extra) {
        (Value::Object(b), Value::Object(e)) => {
            for (k, v) in e {
                merge(b.entry(k).or_insert(Value::Null), v);
            }
        }
        (b, e) => *b = e,
    }
}

/// The envelope of `report` signed by `signer`, as `ssuctl report --json` writes it.
pub(super) fn signed(signer: &FileSigner, report: &Value) -> Vec<u8> {
    let report = canonical(report).unwrap();
    let env = Envelope {
        signature: hex::encode(signer.sign(report.as_bytes()).unwrap()),
        report,
        key_id: key::key_id(&signer.public_key()),
    };
    serde_json::to_vec(&env).unwrap()
}

fn id(signer: &FileSigner) -> String {
    key::key_id(&signer.public_key())
}

/// Every file under `dir`, relative, sorted: what a refusal must leave unchanged.
fn tree(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = fs::read_dir(&d) else {
            continue;
        };
        for e in entries {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let rel = p.strip_prefix(dir).unwrap().display().to_string();
                out.push((rel, fs::read(&p).unwrap()));
            }
        }
    }
    out.sort();
    out
}

#[test]
fn an_enrolled_device_s_reports_are_stored_as_received_with_the_highest_counter() {
    let hub = tempfile::tempdir().unwrap();
    let (_d, dev) = device();
    let kid = id(&dev);
    assert_eq!(
        enroll(hub.path(), &dev.public_key()).unwrap(),
        Enrolled::New {
            key_id: kid.clone()
        }
    );
    assert_eq!(
        enroll(hub.path(), &dev.public_key()).unwrap(),
        Enrolled::Already {
            key_id: kid.clone()
        }
    );
    let key_file = hub.path().join("devices").join(&kid).join("key.pub");
    assert_eq!(
        fs::read_to_string(&key_file).unwrap(),
        format!("{}\n", hex::encode(dev.public_key()))
    );

    let first = signed(&dev, &report(&dev, 3, json!({})));
    assert_eq!(
        accept(hub.path(), &first, false, now()).unwrap(),
        Accepted::New {
            key_id: kid.clone(),
            counter: 3
        }
    );
    let stored = hub
        .path()
        .join("devices")
        .join(&kid)
        .join("reports/00000000000000000003.json");
    assert_eq!(fs::read(&stored).unwrap(), first);
    let later: Timestamp = "2026-11-30T09:00:00.25Z".parse().unwrap();
    let second = signed(&dev, &report(&dev, 70, json!({})));
    assert_eq!(
        accept(hub.path(), &second, false, later).unwrap(),
        Accepted::New {
            key_id: kid.clone(),
            counter: 70
        }
    );
    assert_eq!(
        read_latest(hub.path(), &kid).unwrap(),
        Some(Latest {
            counter: 70,
            received_at: "2026-11-30T09:00:00Z".parse().unwrap()
        })
    );
    assert_eq!(read_report(hub.path(), &kid, 70).unwrap().unwrap(), second);
    assert_eq!(read_report(hub.path(), &kid, 3).unwrap().unwrap(), first);
    assert_eq!(device_ids(hub.path()).unwrap(), [kid]);
}

#[test]
fn a_retried_delivery_is_stored_once_and_acknowledged() {
    let hub = tempfile::tempdir().unwrap();
    let (_d, dev) = device();
    enroll(hub.path(), &dev.public_key()).unwrap();
    let five = signed(&dev, &report(&dev, 5, json!({})));
    let six = signed(&dev, &report(&dev, 6, json!({})));
    accept(hub.path(), &five, false, now()).unwrap();
    let before = tree(hub.path());
    assert_eq!(
        accept(hub.path(), &five, false, now()).unwrap(),
        Accepted::Duplicate {
            key_id: id(&dev),
            counter: 5
        }
    );
    assert_eq!(tree(hub.path()), before, "a duplicate changed the store");
    // Still a duplicate after a newer report arrived: its bytes are stored.
    accept(hub.path(), &six, false, now()).unwrap();
    assert!(matches!(
        accept(hub.path(), &five, false, now()).unwrap(),
        Accepted::Duplicate { counter: 5, .. }
    ));
    assert_eq!(
        read_latest(hub.path(), &id(&dev)).unwrap().unwrap().counter,
        6
    );
}

#[test]
fn a_crash_between_the_report_and_latest_is_repaired_by_the_retry() {
    let hub = tempfile::tempdir().unwrap();
    let (_d, dev) = device();
    enroll(hub.path(), &dev.public_key()).unwrap();
    accept(
        hub.path(),
        &signed(&dev, &report(&dev, 1, json!({}))),
        false,
        now(),
    )
    .unwrap();
    let two = signed(&dev, &report(&dev, 2, json!({})));
    // The hub stopped after writing the report, before latest.json.
    let path = report_path(hub.path(), &id(&dev), 2);
    fs::write(&path, &two).unwrap();
    assert!(matches!(
        accept(hub.path(), &two, false, now()).unwrap(),
        Accepted::Duplicate { counter: 2, .. }
    ));
    assert_eq!(
        read_latest(hub.path(), &id(&dev)).unwrap().unwrap().counter,
        2
    );
}

#[test]
fn replays_repeats_and_other_keys_are_refused_and_change_nothing() {
    let hub = tempfile::tempdir().unwrap();
    let (_d, dev) = device();
    let (_o, other) = device();
    enroll(hub.path(), &dev.public_key()).unwrap();
    enroll(hub.path(), &other.public_key()).unwrap();
    let old = signed(&dev, &report(&dev, 4, json!({})));
    accept(
        hub.path(),
        &signed(&dev, &report(&dev, 9, json!({}))),
        false,
        now(),
    )
    .unwrap();
    let before = tree(hub.path());
    let refuse = |bytes: &[u8]| accept(hub.path(), bytes, false, now()).unwrap_err();

    // A lower counter never seen (an old report replayed).
    assert_eq!(
        refuse(&old),
        Refused::Replay {
            counter: 4,
            highest: 9
        }
    );
    // The same counter with other content.
    let forked = signed(&dev, &report(&dev, 9, json!({"staleness": "overdue"})));
    assert_eq!(refuse(&forked), Refused::Conflict { counter: 9 });
    // Another enrolled device's key signing a report in this device's name.
    let mut env: Envelope =
        serde_json::from_slice(&signed(&other, &report(&dev, 10, json!({})))).unwrap();
    env.key_id = id(&dev);
    let e = refuse(&serde_json::to_vec(&env).unwrap());
    assert!(
        matches!(
            e,
            Refused::Verify(crate::report::verify::Refused::BadSignature)
        ),
        "{e}"
    );
    // A changed byte.
    let good = String::from_utf8(signed(&dev, &report(&dev, 10, json!({})))).unwrap();
    let changed = good.replace("2026-10-01", "2026-11-01");
    assert_ne!(changed, good);
    assert!(matches!(refuse(changed.as_bytes()), Refused::Verify(_)));
    // A report whose signed key id is another's, under this envelope key id.
    let mut env: Envelope =
        serde_json::from_slice(&signed(&dev, &report(&other, 10, json!({})))).unwrap();
    env.key_id = id(&dev);
    assert!(matches!(
        refuse(&serde_json::to_vec(&env).unwrap()),
        Refused::Verify(_)
    ));
    assert_eq!(
        tree(hub.path()),
        before,
        "a refused report changed the store"
    );
    // None of it was a storage fault: retrying cannot help.
    assert!(!refuse(&old).is_storage_fault());
    // The highest counter again, its stored file gone: cannot be told from a replay.
    fs::remove_file(report_path(hub.path(), &id(&dev), 9)).unwrap();
    assert_eq!(
        refuse(&forked),
        Refused::Replay {
            counter: 9,
            highest: 9
        }
    );
}

#[test]
fn an_unknown_device_is_refused_unless_trusted_on_first_use() {
    let hub = tempfile::tempdir().unwrap();
    let (_d, dev) = device();
    let env = signed(&dev, &report(&dev, 1, json!({})));
    let e = accept(hub.path(), &env, false, now()).unwrap_err();
    assert!(
        matches!(e, Refused::UnknownDevice { ref key_id, .. } if *key_id == id(&dev)),
        "{e}"
    );
    assert!(e.to_string().contains("enroll-device"), "{e}");
    assert!(tree(hub.path()).is_empty(), "an unknown device left files");

    assert!(matches!(
        accept(hub.path(), &env, true, now()).unwrap(),
        Accepted::New { counter: 1, .. }
    ));
    assert_eq!(
        read_key(hub.path(), &id(&dev)).unwrap().unwrap(),
        dev.public_key()
    );
    // From now on it is known: no trust on first use needed.
    let two = signed(&dev, &report(&dev, 2, json!({})));
    assert!(matches!(
        accept(hub.path(), &two, false, now()).unwrap(),
        Accepted::New { counter: 2, .. }
    ));

    // Trust on first use still needs a report signed by the key it carries.
    let (_o, other) = device();
    let (_t, thief) = device();
    let mut carried = report(&other, 1, json!({}));
    carried["key"]["public_key"] = hex::encode(thief.public_key()).into();
    let e = accept(hub.path(), &signed(&thief, &carried), true, now()).unwrap_err();
    assert!(
        matches!(e, Refused::UnknownDevice { .. } | Refused::Verify(_)),
        "{e}"
    );
    let e = accept(hub.path(), &signed(&other, &carried), true, now()).unwrap_err();
    assert!(e.to_string().contains("does not match its key id"), "{e}");
    // A report without a public key (an older agent) cannot be trusted on first use.
    let mut bare = report(&other, 1, json!({}));
    bare["key"].as_object_mut().unwrap().remove("public_key");
    let e = accept(hub.path(), &signed(&other, &bare), true, now()).unwrap_err();
    assert!(e.to_string().contains("no public key"), "{e}");
    // And a valid-looking key with a forged signature creates nothing.
    let forged = String::from_utf8(signed(&other, &report(&other, 1, json!({}))))
        .unwrap()
        .replace("sandbox-gw-1", "sandbox-gw-2");
    assert!(matches!(
        accept(hub.path(), forged.as_bytes(), true, now()),
        Err(Refused::Verify(_))
    ));
    assert_eq!(device_ids(hub.path()).unwrap(), [id(&dev)]);
}

#[test]
fn garbage_huge_and_hostile_deliveries_are_refused_without_touching_the_store() {
    let hub = tempfile::tempdir().unwrap();
    let (_d, dev) = device();
    enroll(hub.path(), &dev.public_key()).unwrap();
    let before = tree(hub.path());
    let refuse = |bytes: &[u8]| accept(hub.path(), bytes, true, now()).unwrap_err();

    for garbage in [
        &b""[..],
        b"\xff\xfe",
        b"null",
        b"[]",
        b"{}",
        b"{\"report\": 1}",
        &[b'{'; 5000],
    ] {
        assert!(
            matches!(refuse(garbage), Refused::Malformed(_)),
            "{garbage:?}"
        );
    }
    let huge = vec![b' '; MAX_ENVELOPE + 1];
    assert_eq!(
        refuse(&huge),
        Refused::TooLarge {
            len: MAX_ENVELOPE + 1,
            max: MAX_ENVELOPE
        }
    );
    // Unknown fields in the envelope.
    let mut v: Value = serde_json::from_slice(&signed(&dev, &report(&dev, 1, json!({})))).unwrap();
    v["extra"] = "x".into();
    assert!(matches!(
        refuse(&serde_json::to_vec(&v).unwrap()),
        Refused::Malformed(_)
    ));
    // A key id that would leave the store directory, or is not one.
    for bad in [
        "../../etc",
        "../devices/x",
        "",
        "ABCDEF",
        &"A".repeat(64),
        &format!("{}/..", "a".repeat(61)),
    ] {
        let mut env: Envelope =
            serde_json::from_slice(&signed(&dev, &report(&dev, 1, json!({})))).unwrap();
        env.key_id = bad.to_owned();
        let e = refuse(&serde_json::to_vec(&env).unwrap());
        assert!(
            matches!(e, Refused::Malformed(ref m) if m.contains("key id")),
            "{bad}: {e}"
        );
    }
    // Signed garbage: not JSON, no counter, another format.
    for r in ["not json", "{\"format\":\"ssu-agent-report/1\"}"] {
        let env = Envelope {
            signature: hex::encode(dev.sign(r.as_bytes()).unwrap()),
            report: r.into(),
            key_id: id(&dev),
        };
        assert!(
            matches!(
                refuse(&serde_json::to_vec(&env).unwrap()),
                Refused::Verify(_)
            ),
            "{r}"
        );
    }
    let other_format = report(&dev, 1, json!({"format": "ssu-agent-report/0"}));
    assert!(matches!(
        refuse(&signed(&dev, &other_format)),
        Refused::Verify(_)
    ));
    // A signature that is not hex, or the wrong length.
    for sig in ["zz", "00", ""] {
        let mut env: Envelope =
            serde_json::from_slice(&signed(&dev, &report(&dev, 1, json!({})))).unwrap();
        env.signature = sig.into();
        assert!(
            matches!(
                refuse(&serde_json::to_vec(&env).unwrap()),
                Refused::Verify(_)
            ),
            "{sig}"
        );
    }
    assert_eq!(tree(hub.path()), before);
}

#[test]
fn a_damaged_store_is_a_storage_fault_not_a_verdict() {
    let hub = tempfile::tempdir().unwrap();
    let (_d, dev) = device();
    enroll(hub.path(), &dev.public_key()).unwrap();
    let kid = id(&dev);
    let env = signed(&dev, &report(&dev, 1, json!({})));
    // A key file holding another key: never trusted, never silently replaced by a delivery.
    let (_o, other) = device();
    let key_file = hub.path().join("devices").join(&kid).join("key.pub");
    fs::write(&key_file, hex::encode(other.public_key())).unwrap();
    let e = accept(hub.path(), &env, true, now()).unwrap_err();
    assert!(e.is_storage_fault(), "{e}");
    assert!(e.to_string().contains("does not hold the key"), "{e}");
    // Enrolling the right key again repairs it.
    assert!(matches!(
        enroll(hub.path(), &dev.public_key()).unwrap(),
        Enrolled::New { .. }
    ));
    accept(hub.path(), &env, false, now()).unwrap();
    fs::write(
        hub.path().join("devices").join(&kid).join("latest.json"),
        "{",
    )
    .unwrap();
    let e = accept(
        hub.path(),
        &signed(&dev, &report(&dev, 2, json!({}))),
        false,
        now(),
    )
    .unwrap_err();
    assert!(
        e.is_storage_fault() && e.to_string().contains("damaged"),
        "{e}"
    );
    assert!(enroll(hub.path(), &[1, 2, 3]).is_err());
}

#[test]
fn concurrent_deliveries_of_one_device_store_each_report_once() {
    let hub = tempfile::tempdir().unwrap();
    let (_d, dev) = device();
    enroll(hub.path(), &dev.public_key()).unwrap();
    let envs: Vec<Vec<u8>> = (1..=20)
        .map(|c| signed(&dev, &report(&dev, c, json!({}))))
        .collect();
    let results: Vec<Result<Accepted, Refused>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|_| {
                s.spawn(|| {
                    envs.iter()
                        .map(|e| accept(hub.path(), e, false, now()))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    let mut new: Vec<u64> = results
        .iter()
        .filter_map(|r| match r {
            Ok(Accepted::New { counter, .. }) => Some(*counter),
            _ => None,
        })
        .collect();
    new.sort();
    let distinct = {
        let mut d = new.clone();
        d.dedup();
        d
    };
    assert_eq!(new, distinct, "a counter stored twice");
    // Every outcome is New, Duplicate or (a lower counter after a higher one) Replay; no
    // storage fault, and never two News for one counter.
    assert!(
        results
            .iter()
            .all(|r| matches!(r, Ok(_) | Err(Refused::Replay { .. }))),
        "{results:?}"
    );
    assert!(new.contains(&20), "{new:?}");
    assert_eq!(
        read_latest(hub.path(), &id(&dev)).unwrap().unwrap().counter,
        20
    );
}
