//! The key lifecycle of `ssu-repo` followed by a device end to end (issue 12, finding 6):
//! every rotation `ssu-repo` publishes — root (online and with an offline root key), targets
//! with threshold 2, snapshot, timestamp, a fast-forwarded timestamp — is followed by the
//! sandbox agent, across restarts, without its state directory ever being wiped; and a root
//! short of its threshold is refused by `import-root` and by the device alike.

mod common;

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::device::*;

/// The largest TUF version number.
const MAX_VERSION: &str = "18446744073709551615";

fn verified(d: &Device) -> String {
    let text = d.check();
    assert!(text.contains(": verified"), "{text}\n{}", d.sb.agent_log());
    text
}

fn refused(d: &Device) -> String {
    let text = d.check();
    assert!(text.contains("could not verify"), "{text}");
    text
}

/// `ssu-repo ARGS` expected to fail: its stderr.
fn ssu_repo_refused(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_ssu-repo"))
        .args(args)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{args:?}: {out:?}");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The version of the root the agent persisted as the start of its next check.
fn persisted_root_version(d: &Device) -> u64 {
    let found: Vec<PathBuf> = walk(&d.sb.dir().join("state"))
        .into_iter()
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy();
            name.starts_with("trusted-root.") && name.ends_with(".json")
        })
        .collect();
    assert_eq!(found.len(), 1, "{found:?}");
    let root: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&found[0]).unwrap()).unwrap();
    root["signed"]["version"].as_u64().unwrap()
}

/// Inodes of the state directory and everything in it: a wipe (or a re-created store)
/// changes them.
fn state_inodes(d: &Device) -> Vec<(PathBuf, u64)> {
    let state = d.sb.dir().join("state");
    let mut out = vec![(state.clone(), std::fs::metadata(&state).unwrap().ino())];
    for p in walk(&state) {
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        if name.ends_with(".db") {
            out.push((p.clone(), std::fs::metadata(&p).unwrap().ino()));
        }
    }
    out
}

fn metadata_files(repo: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<(String, Vec<u8>)> = walk(&repo.join("public/metadata"))
        .into_iter()
        .map(|p| (p.display().to_string(), std::fs::read(&p).unwrap()))
        .collect();
    files.sort();
    files
}

#[test]
fn a_device_follows_a_key_change_at_every_root_version() {
    let d = Device::new("");
    let dir = d.repo_dir().to_owned();
    let work = d.sb.dir().join("offline");
    std::fs::create_dir(&work).unwrap();
    let w = |name: &str| work.join(name).display().to_string();
    d.start_agent();
    verified(&d);
    let state = state_inodes(&d);
    assert!(state.len() >= 2, "{state:?}");

    // v2: a new root key, generated online (both the old and the new key sign).
    ssu_repo(&["rotate", &dir, "root"]);
    verified(&d);
    assert_eq!(persisted_root_version(&d), 2);

    // v3: two targets keys, both needed.
    ssu_repo(&["keygen", &w("t1.pk8"), &w("t2.pk8")]);
    ssu_repo(&[
        "rotate",
        &dir,
        "targets",
        "--key",
        &w("t1.pk8"),
        "--key",
        &w("t2.pk8"),
        "--threshold",
        "2",
    ]);
    verified(&d);

    // v4: a new snapshot key; the agent restarts in between.
    d.sb.stop("agent");
    ssu_repo(&["rotate", &dir, "snapshot"]);
    d.start_agent();
    verified(&d);

    // v5: a new timestamp key.
    ssu_repo(&["rotate", &dir, "timestamp"]);
    verified(&d);
    assert_eq!(persisted_root_version(&d), 5);

    // v6: the root key moves offline, two keys with threshold 2: prepared online, signed
    // on "another machine" with nothing but the root keys and the file, imported.
    ssu_repo(&["keygen", &w("root-a.pk8"), &w("root-b.pk8")]);
    let next = w("6.root.json");
    ssu_repo(&[
        "rotate",
        &dir,
        "root",
        "--key",
        &w("root-a.pk8.pub"),
        "--key",
        &w("root-b.pk8.pub"),
        "--threshold",
        "2",
        "--prepare",
        &next,
    ]);
    let online_root: Vec<PathBuf> = walk(&d.repo.join("keys"))
        .into_iter()
        .filter(|p| {
            p.parent().unwrap().ends_with("keys")
                && p.file_name()
                    .unwrap()
                    .to_string_lossy()
                    .starts_with("root-")
        })
        .collect();
    assert_eq!(online_root.len(), 1, "{online_root:?}");
    let previous = d.repo.join("public/metadata/5.root.json");
    ssu_repo(&[
        "sign-root",
        &next,
        "--key",
        online_root[0].to_str().unwrap(),
        "--key",
        &w("root-a.pk8"),
        "--key",
        &w("root-b.pk8"),
        "--previous",
        previous.to_str().unwrap(),
    ]);
    let out = ssu_repo(&["import-root", &dir, &next]);
    assert!(out.contains("published root v6"), "{out}");
    verified(&d);
    assert_eq!(persisted_root_version(&d), 6);
    // The online root key was retired: nothing in keys/ signs root any more.
    assert!(!online_root[0].exists());

    // An update signed under the v6 keys installs, on the state the device kept all along.
    d.sb.stop("agent");
    d.start_agent();
    d.publish_security_update();
    let text = d.check();
    assert!(text.contains("security update 1.0.1"), "{text}");
    d.wait_state("reboot-required");
    assert_eq!(d.installs_into_b(), 1);
    assert_eq!(state_inodes(&d), state, "the state directory was replaced");
    let st = d.status();
    assert_ne!(st["Staleness"], "unverified", "{st:#}");
}

#[test]
fn a_root_short_of_its_threshold_is_refused_by_import_and_by_the_device() {
    let d = Device::new("");
    let dir = d.repo_dir().to_owned();
    let work = d.sb.dir().join("offline");
    std::fs::create_dir(&work).unwrap();
    let w = |name: &str| work.join(name).display().to_string();
    ssu_repo(&["keygen", &w("a.pk8"), &w("b.pk8")]);
    // v2: root keys a and b, threshold 2 (the online root key signs as the old one).
    ssu_repo(&[
        "rotate",
        &dir,
        "root",
        "--key",
        &w("a.pk8"),
        "--key",
        &w("b.pk8"),
        "--threshold",
        "2",
    ]);
    d.start_agent();
    verified(&d);
    d.publish_security_update();

    // v3 signed by a only.
    let next = w("3.root.json");
    ssu_repo(&["renew-root", &dir, "--prepare", &next]);
    let out = ssu_repo(&["sign-root", &next, "--key", &w("a.pk8")]);
    assert!(out.contains("1 of 2 signatures"), "{out}");
    let before = metadata_files(&d.repo);
    let err = ssu_repo_refused(&["import-root", &dir, &next]);
    assert!(err.contains("signed by 1 of root v2's root keys"), "{err}");
    assert_eq!(
        metadata_files(&d.repo),
        before,
        "import-root wrote something"
    );

    // Served anyway (a publisher copying files by hand): the device refuses it, and with it
    // the update published meanwhile.
    let served = d.repo.join("public/metadata/3.root.json");
    std::fs::copy(&next, &served).unwrap();
    let monitor = d.monitor();
    let text = refused(&d);
    assert!(
        text.contains("Signature threshold of 2 not met for role root (1 valid signatures)"),
        "{text}"
    );
    d.assert_nothing_installed(monitor);
    let st = d.status();
    assert_eq!(st["Staleness"], "unverified", "{st:#}");

    // Signed by b too: imported, followed, and the update installs.
    std::fs::remove_file(&served).unwrap();
    ssu_repo(&["sign-root", &next, "--key", &w("b.pk8")]);
    ssu_repo(&["import-root", &dir, &next]);
    let text = d.check();
    assert!(text.contains("security update 1.0.1"), "{text}");
    d.wait_state("reboot-required");
}

#[test]
fn a_device_recovers_from_a_timestamp_at_the_largest_version_once_the_key_rotates() {
    let d = Device::new("");
    let dir = d.repo_dir().to_owned();
    d.start_agent();
    verified(&d);
    let state = state_inodes(&d);

    // An attacker with the online keys (a copy of the repository) signs the largest
    // timestamp version there is and serves it.
    let attacker = d.sb.dir().join("attacker");
    run(Command::new("cp").arg("-a").arg(&d.repo).arg(&attacker));
    ssu_repo(&[
        "refresh",
        attacker.to_str().unwrap(),
        "--timestamp-version",
        MAX_VERSION,
    ]);
    let served = d.repo.join("public/metadata");
    let own = std::fs::read(served.join("timestamp.json")).unwrap();
    for f in ["2.snapshot.json", "timestamp.json"] {
        std::fs::copy(attacker.join("public/metadata").join(f), served.join(f)).unwrap();
    }
    verified(&d);
    // The server is cleaned up: the publisher's own files are back.
    std::fs::write(served.join("timestamp.json"), own).unwrap();
    std::fs::remove_file(served.join("2.snapshot.json")).unwrap();

    // The publisher's own next timestamp is now a rollback, as TUF wants ...
    ssu_repo(&["refresh", &dir]);
    let text = refused(&d);
    assert!(
        text.contains(
            "Found version 2 of timestamp metadata when we had previously fetched \
             version 18446744073709551615"
        ),
        "{text}"
    );
    // ... until it rotates the timestamp key (spec 5.3.11).
    let out = ssu_repo(&["rotate", &dir, "timestamp"]);
    assert!(out.contains("published root v2"), "{out}");
    verified(&d);

    // Across a restart, the device keeps checking (floor and trusted root persisted) and
    // installs what is published next.
    d.sb.stop("agent");
    d.start_agent();
    ssu_repo(&["refresh", &dir]);
    verified(&d);
    d.publish_security_update();
    let text = d.check();
    assert!(text.contains("security update 1.0.1"), "{text}");
    d.wait_state("reboot-required");
    assert_eq!(state_inodes(&d), state, "the state directory was replaced");
}
