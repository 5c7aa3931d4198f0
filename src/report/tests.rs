//! Reports: canonical form, content, signing and the hub's verification.
use super::verify::{Expect, Refused, verify};
use super::*;
use crate::metadata::client::RoleVersions;
use crate::status::*;
use jiff::civil::date;

fn status() -> Status {
    Status {
        state: UpdateState::Idle,
        progress: 0,
        installed: Some(Installed {
            version: "1.0.1".into(),
            feature_release: "1.0".into(),
            security_patch_level: date(2026, 10, 1),
            applied_at: Some("2026-10-03T04:05:06.789Z".parse().unwrap()),
        }),
        last_check: Some(CheckRecord {
            at: "2026-11-30T06:00:00Z".parse().unwrap(),
            verified: true,
            message: "up to date".into(),
        }),
        staleness: Staleness::Current,
        available: None,
        model: "Sandbox Gateway".into(),
        hardware_id: "sandbox-gw-1".into(),
        auto_install: true,
        postponed_until: None,
        last_error: String::new(),
        rauc: RaucInfo {
            availability: Availability::Running,
            compatible: "ssu-sandbox".into(),
            boot_slot: "B".into(),
            slots: vec![SlotInfo {
                name: "rootfs.1".into(),
                state: "booted".into(),
                bootname: "B".into(),
                boot_status: "good".into(),
                bundle_version: "1.0.1".into(),
                ..SlotInfo::default()
            }],
            ..RaucInfo::default()
        },
        modem: ModemInfo {
            availability: Availability::Running,
            modems: 1,
            home_mcc_mnc: "26201".into(),
            iccid_masked: "…1234".into(),
            iccid_issuer: "8949000".into(),
            ..ModemInfo::default()
        },
        integrity: Integrity {
            state: IntegrityState::Compromised,
            findings: vec![IntegrityFinding {
                probe: "setuid".into(),
                outcome: "fail".into(),
                evidence: "su found\nin /usr/bin\u{0}".into(),
            }],
        },
        network: NetworkInfo::default(),
        subscription: Subscription {
            profile: "sandbox-telecom".into(),
            known: true,
        },
        source: UpdateSource::default(),
        inhibitors: Vec::new(),
        support: Support::default(),
        verified: VerifiedMetadata {
            at: Some("2026-11-30T06:00:00Z".parse().unwrap()),
            versions: RoleVersions {
                root: 1,
                timestamp: 9,
                snapshot: 4,
                targets: 3,
                keys: Default::default(),
            },
        },
        delivery: Default::default(),
    }
}

const NONCE: [u8; 16] = [7; 16];

fn ctx(counter: u64) -> Context<'static> {
    Context {
        nonce: &NONCE,
        counter,
        boot_id: "0123abcd",
        now: "2026-11-30T07:00:00.5Z".parse().unwrap(),
        key_id: "kid",
        public_key: &[0x11; 32],
        key_storage: "file",
    }
}

#[test]
fn canonical_form_is_sorted_compact_and_stable() {
    let v = json!({"b": 1, "a": {"d": [true, null], "c": "é"}});
    assert_eq!(
        canonical(&v).unwrap(),
        "{\"a\":{\"c\":\"é\",\"d\":[true,null]},\"b\":1}"
    );
    // Floats have no canonical form: refused, not rounded.
    assert!(canonical(&json!({"x": 0.5})).is_err());
    // The same status gives the same bytes.
    let a = canonical(&build(&status(), &ctx(1))).unwrap();
    let b = canonical(&build(&status(), &ctx(1))).unwrap();
    assert_eq!(a, b);
    // And parses back as JSON, to the value it came from.
    let back: Value = serde_json::from_str(&a).unwrap();
    assert_eq!(back, build(&status(), &ctx(1)));
}

#[test]
fn the_report_carries_what_a_hub_needs() {
    let r = build(&status(), &ctx(42));
    assert_eq!(r["format"], FORMAT);
    assert_eq!(r["device"]["hardware_id"], "sandbox-gw-1");
    assert_eq!(r["device"]["model"], "Sandbox Gateway");
    assert_eq!(r["installed"]["version"], "1.0.1");
    assert_eq!(r["installed"]["security_patch_level"], "2026-10-01");
    assert_eq!(r["installed"]["applied_at"], "2026-10-03T04:05:06Z");
    assert_eq!(r["boot"]["booted_slot"], "B");
    assert_eq!(r["boot"]["slots"][0]["state"], "booted");
    assert_eq!(r["metadata"]["versions"]["timestamp"], 9);
    assert_eq!(r["metadata"]["last_verified_at"], "2026-11-30T06:00:00Z");
    assert_eq!(r["staleness"], "current");
    assert_eq!(r["support"]["state"], "unknown");
    assert_eq!(r["support"]["end"], Value::Null);
    assert_eq!(r["integrity"]["state"], "compromised");
    assert_eq!(r["integrity"]["findings"][0]["probe"], "setuid");
    // Control characters are dropped, so the canonical form stays parseable JSON.
    assert_eq!(
        r["integrity"]["findings"][0]["evidence"],
        "su foundin /usr/bin"
    );
    assert_eq!(r["subscription"]["iccid"], "…1234");
    assert_eq!(r["subscription"]["profile"], "sandbox-telecom");
    assert_eq!(r["nonce"], hex::encode(NONCE));
    assert_eq!(r["counter"], 42);
    assert_eq!(r["boot_id"], "0123abcd");
    assert_eq!(r["time"], "2026-11-30T07:00:00Z");
    assert_eq!(r["key"]["id"], "kid");
    assert_eq!(r["key"]["public_key"], "11".repeat(32));
    // Masked as on D-Bus: the issuer digits used for profile matching never leave.
    assert!(!canonical(&r).unwrap().contains("8949000"));

    // Unknown is null, never made up.
    let mut st = status();
    st.installed = None;
    st.verified = VerifiedMetadata::default();
    let r = build(&st, &ctx(1));
    assert_eq!(r["installed"]["security_patch_level"], Value::Null);
    assert_eq!(r["metadata"]["last_verified_at"], Value::Null);
}

#[test]
fn nonce_bounds() {
    assert_eq!(check_nonce(&[]), Err(ReportError::Nonce(0)));
    assert_eq!(check_nonce(&[0; 15]), Err(ReportError::Nonce(15)));
    assert_eq!(check_nonce(&[0; 16]), Ok(()));
    assert_eq!(check_nonce(&[0; 64]), Ok(()));
    assert_eq!(check_nonce(&[0; 65]), Err(ReportError::Nonce(65)));
}

/// A device: its signer and a signed report.
fn device() -> (tempfile::TempDir, key::FileSigner) {
    let dir = tempfile::tempdir().unwrap();
    let signer = key::FileSigner::open(dir.path(), None).unwrap();
    (dir, signer)
}

fn signed(signer: &key::FileSigner, counter: u64) -> (Vec<u8>, String) {
    let id = key::key_id(&signer.public_key());
    let pk = signer.public_key();
    let c = Context {
        key_id: &id,
        public_key: &pk,
        ..ctx(counter)
    };
    let env = sign(signer, &status(), &c).unwrap();
    (serde_json::to_vec(&env).unwrap(), id)
}

fn expect(min_counter: u64) -> Expect {
    Expect {
        nonce: Some(NONCE.to_vec()),
        min_counter: Some(min_counter),
    }
}

#[test]
fn a_signed_report_verifies_with_the_device_key() {
    let (_d, signer) = device();
    let (env, id) = signed(&signer, 5);
    let v = verify(&env, &signer.public_key(), &expect(5)).unwrap();
    assert_eq!(v.counter, 5);
    assert_eq!(v.key_id, id);
    assert_eq!(v.report["device"]["hardware_id"], "sandbox-gw-1");
    // Without expectations, only the signature is checked.
    verify(&env, &signer.public_key(), &Expect::default()).unwrap();
}

#[test]
fn verification_refuses_every_kind_of_forgery() {
    let (_d, signer) = device();
    let (_e, other) = device();
    let (env, _) = signed(&signer, 5);
    let pk = signer.public_key();

    // Another device's key.
    assert!(matches!(
        verify(&env, &other.public_key(), &expect(0)),
        Err(Refused::OtherKey { .. })
    ));
    // Another device's report, relabelled with this device's key id.
    let (other_env, _) = signed(&other, 5);
    let mut e: Envelope = serde_json::from_slice(&other_env).unwrap();
    e.key_id = key::key_id(&pk);
    let relabelled = serde_json::to_vec(&e).unwrap();
    assert_eq!(
        verify(&relabelled, &pk, &expect(0)).unwrap_err(),
        Refused::BadSignature
    );

    // Any changed byte of the report.
    let e: Envelope = serde_json::from_slice(&env).unwrap();
    for i in [0, e.report.len() / 2, e.report.len() - 1] {
        let mut bytes = e.report.clone().into_bytes();
        bytes[i] ^= 0x01;
        let changed = Envelope {
            report: String::from_utf8(bytes).unwrap(),
            ..e.clone()
        };
        assert_eq!(
            verify(&serde_json::to_vec(&changed).unwrap(), &pk, &expect(0)).unwrap_err(),
            Refused::BadSignature,
            "byte {i}"
        );
    }
    // A changed signature.
    let mut sig = hex::decode(&e.signature).unwrap();
    sig[10] ^= 0x80;
    let changed = Envelope {
        signature: hex::encode(sig),
        ..e.clone()
    };
    assert_eq!(
        verify(&serde_json::to_vec(&changed).unwrap(), &pk, &expect(0)).unwrap_err(),
        Refused::BadSignature
    );

    // A replayed report: the hub chose another nonce this time.
    let fresh = Expect {
        nonce: Some(vec![8; 16]),
        ..expect(0)
    };
    assert!(matches!(
        verify(&env, &pk, &fresh),
        Err(Refused::Nonce { .. })
    ));
    // A counter lower than one accepted before.
    assert_eq!(
        verify(&env, &pk, &expect(6)).unwrap_err(),
        Refused::Counter { found: 5, min: 6 }
    );
    // Not an envelope at all.
    assert!(matches!(
        verify(b"{\"report\": 1}", &pk, &expect(0)),
        Err(Refused::Malformed(_))
    ));
    assert!(matches!(
        verify(b"", &pk, &expect(0)),
        Err(Refused::Malformed(_))
    ));
}

#[test]
fn a_signed_report_of_another_format_is_refused() {
    let (_d, signer) = device();
    let report = canonical(&json!({"format": "something-else", "counter": 1})).unwrap();
    let env = Envelope {
        signature: hex::encode(signer.sign(report.as_bytes()).unwrap()),
        report,
        key_id: key::key_id(&signer.public_key()),
    };
    let e = verify(
        &serde_json::to_vec(&env).unwrap(),
        &signer.public_key(),
        &Expect::default(),
    )
    .unwrap_err();
    assert!(
        matches!(e, Refused::Malformed(ref m) if m.contains("format")),
        "{e}"
    );
}

#[tokio::test]
async fn the_reporter_counts_up_and_refuses_bad_nonces_without_counting() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("boot_id"), "boot-7\n").unwrap();
    let signer = Arc::new(key::FileSigner::open(dir.path(), None).unwrap());
    let pk = signer.public_key();
    let reporter = Reporter::new(
        signer,
        Counter::open(dir.path()).unwrap(),
        dir.path().join("boot_id"),
    );
    let a = reporter.report(status(), vec![1; 16]).await.unwrap();
    for bad in [vec![], vec![1; 15], vec![1; 65]] {
        let n = bad.len();
        assert_eq!(
            reporter.report(status(), bad).await.unwrap_err(),
            ReportError::Nonce(n)
        );
    }
    let b = reporter.report(status(), vec![2; 64]).await.unwrap();
    let parse = |e: &Envelope| serde_json::from_str::<Value>(&e.report).unwrap();
    assert_eq!(parse(&a)["counter"], 1);
    assert_eq!(parse(&b)["counter"], 2, "refused nonces use no number");
    assert_eq!(parse(&a)["boot_id"], "boot-7");
    let env = serde_json::to_vec(&b).unwrap();
    let exp = Expect {
        nonce: Some(vec![2; 64]),
        min_counter: Some(2),
    };
    verify(&env, &pk, &exp).unwrap();

    let broken = Reporter {
        identity: Err("identity key /k: cannot open".into()),
    };
    assert!(matches!(
        broken.report(status(), vec![1; 16]).await,
        Err(ReportError::NoKey(_))
    ));
    assert!(broken.public_key().is_err());
}

/// A token in `[report] url` (user, password or query) never reaches the messages the
/// journal and `ReportDelivery` show; the request itself still goes to the full URL.
#[tokio::test]
async fn a_failed_post_names_the_server_without_the_urls_secrets() {
    use crate::engine::ports::Courier;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("boot_id"), "boot-7\n").unwrap();
    let signer = Arc::new(key::FileSigner::open(dir.path(), None).unwrap());
    let reporter = Reporter::new(
        signer,
        Counter::open(dir.path()).unwrap(),
        dir.path().join("boot_id"),
    );
    // A port nothing listens on: the connection is refused at once.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://fleet:s3cret-pw@127.0.0.1:{port}/reports?token=s3cret-tok#x");
    let courier = deliver::HttpCourier {
        reporter: Arc::new(reporter),
        client: reqwest::Client::new(),
        url: Some(url.parse().unwrap()),
        timeout: std::time::Duration::from_secs(5),
    };
    let e = courier.post("{}".into()).await.unwrap_err();
    assert!(
        e.starts_with(&format!("cannot POST to http://127.0.0.1:{port}/reports: ")),
        "{e}"
    );
    assert!(!e.contains("s3cret") && !e.contains("fleet:"), "{e}");
}
