//! `ssu-repo approve`, `refresh` and `verify` through the real binary, on real (plain) RAUC
//! bundles: an operator approves what a manufacturer repository lists and verifies, refresh
//! re-signs only what it should, and verify reports expiry and missing files. Every refusal is
//! checked to leave the repository byte-for-byte unchanged (harness: tests/ssu_repo_cli/).

mod ssu_repo_cli;

use ssu_repo_cli::work::{
    BUNDLE, Work, add_args, load, p, read_target, s, security_flags, sha256_hex, target, versions,
};
use ssu_repo_cli::{ok, refused, run, text};
use std::fs;
use std::path::Path;

// ---------------------------------------------------------------------------------------------
// approve

#[tokio::test]
async fn an_operator_approves_by_listing_identical_length_and_hashes() {
    let w = Work::new();
    let m = w.init("m", "manufacturer");
    let o = w.init("o", "operator");
    let bundle = w.bundle("ssu-sandbox", "1.0.1", &[9u8; 50_000]);
    ok(&add_args(&m, &bundle, &security_flags()));
    let from = m.join("public");
    let approve =
        |dir: &Path, name: &str| [s("approve"), p(dir), s("--from"), p(&from), s(name)].to_vec();

    let err = refused(&m, &approve(&m, BUNDLE));
    assert!(
        err.contains("approve is for operator repositories"),
        "{err}"
    );
    let err = refused(&o, &approve(&o, "bundles/ssu-sandbox/9.9.raucb"));
    assert!(err.contains("not listed in"), "{err}");
    let err = refused(&o, &approve(&o, "bundles/../../etc/passwd"));
    assert!(err.contains("passwd"), "{err}");
    // Operators approve; they do not publish bundles of their own.
    let err = refused(&o, &add_args(&o, &bundle, &security_flags()));
    assert!(
        err.contains("add is for manufacturer repositories"),
        "{err}"
    );

    let out = ok(&approve(&o, BUNDLE));
    assert!(
        out.starts_with(&format!(
            "approved {BUNDLE} (security, patch level 2026-11-01, 2 CVEs) from "
        )),
        "{out}"
    );

    let (mrepo, orepo) = (load(&m).await, load(&o).await);
    assert_eq!(
        target(&orepo, BUNDLE),
        target(&mrepo, BUNDLE),
        "same length, hashes, custom"
    );
    assert_eq!(
        read_target(&orepo, BUNDLE).await,
        fs::read(&bundle).unwrap()
    );
    assert_eq!(orepo.targets().signed.targets.len(), 1);
    let out = ok(&[s("verify"), p(&o)]);
    assert!(
        out.contains("operator repository") && out.contains("ok: 1 targets"),
        "{out}"
    );
}

#[test]
fn approve_refuses_a_manufacturer_repository_that_does_not_verify() {
    let w = Work::new();
    let m = w.init("m", "manufacturer");
    let o = w.init("o", "operator");
    let bundle = w.bundle("ssu-sandbox", "1.0.1", &[10u8; 20_000]);
    ok(&add_args(&m, &bundle, &security_flags()));
    ok(&[
        s("refresh"),
        p(&m),
        s("--timestamp-expires"),
        s("-1h"),
        s("--allow-expired"),
    ]);
    let args = [
        s("approve"),
        p(&o),
        s("--from"),
        p(&m.join("public")),
        s(BUNDLE),
    ];
    let err = refused(&o, &args);
    assert!(err.contains("timestamp metadata is expired"), "{err}");

    // Pinning a different root: the manufacturer's metadata no longer verifies.
    ok(&[s("refresh"), p(&m)]);
    let other = w.init("other", "manufacturer");
    let mut pinned = args.to_vec();
    pinned.extend([s("--root"), p(&other.join("public/metadata/1.root.json"))]);
    let err = refused(&o, &pinned);
    assert!(err.contains("loading"), "{err}");
}

// ---------------------------------------------------------------------------------------------
// refresh, expiry

#[tokio::test]
async fn refresh_bumps_snapshot_and_timestamp_only() {
    let w = Work::new();
    let dir = w.init("m", "manufacturer");
    let bundle = w.bundle("ssu-sandbox", "1.0.1", &[11u8; 20_000]);
    ok(&add_args(&dir, &bundle, &security_flags()));
    let before = load(&dir).await;
    let out = ok(&[s("refresh"), p(&dir), s("--timestamp-expires"), s("1d")]);
    assert!(out.starts_with("refreshed snapshot v3"), "{out}");
    let after = load(&dir).await;
    assert_eq!(versions(&before), [2, 2, 2]);
    assert_eq!(versions(&after), [2, 3, 3]);
    let left = after.timestamp().signed.expires - jiff::Timestamp::now();
    assert!(
        left.total(jiff::Unit::Hour).unwrap() <= 24.0,
        "one-off expiry used"
    );
    assert_eq!(target(&after, BUNDLE), target(&before, BUNDLE));
    // Refreshing needs only the snapshot and timestamp keys.
    for offline in ["root", "targets"] {
        fs::remove_file(dir.join(format!("keys/{offline}.pk8"))).unwrap();
    }
    ok(&[s("refresh"), p(&dir)]);
    assert_eq!(versions(&load(&dir).await), [2, 4, 4]);
}

#[test]
fn an_expired_timestamp_fails_verify_until_refreshed() {
    let w = Work::new();
    let dir = w.init("m", "manufacturer");
    let err = refused(
        &dir,
        &[s("refresh"), p(&dir), s("--timestamp-expires"), s("-1d")],
    );
    assert!(err.contains("--allow-expired"), "{err}");

    ok(&[
        s("refresh"),
        p(&dir),
        s("--timestamp-expires"),
        s("-1d"),
        s("--allow-expired"),
    ]);
    let out = run(&[s("verify"), p(&dir)]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("timestamp metadata is expired"),
        "{}",
        text(&out)
    );

    ok(&[s("refresh"), p(&dir)]);
    ok(&[s("verify"), p(&dir)]);
}

#[test]
fn verify_reports_a_missing_target_file() {
    let w = Work::new();
    let dir = w.init("m", "manufacturer");
    let bundle = w.bundle("ssu-sandbox", "1.0.1", &[12u8; 20_000]);
    ok(&add_args(&dir, &bundle, &security_flags()));
    let bytes = fs::read(&bundle).unwrap();
    fs::remove_file(dir.join(format!("public/targets/{}.{BUNDLE}", sha256_hex(&bytes)))).unwrap();
    let out = run(&[s("verify"), p(&dir)]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(&format!("problem: {BUNDLE}: file")),
        "{}",
        text(&out)
    );
}
