//! `ssu-repo`'s key lifecycle through the real binary: thresholds above 1 for every role,
//! rotations, the offline-root flow, expiry warnings, and every refusal leaving the repository
//! byte-for-byte unchanged. What it publishes is read back with tough's client, as a device
//! would (tests/key_rotation.rs has the sandbox agent follow the same rotations).

mod ssu_repo_cli;

use ssu_repo_cli::{files, ok, refused, run, text};
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Output;

use tough::schema::RoleType;
use tough::{Repository, RepositoryLoader};
use url::Url;

struct Work {
    dir: tempfile::TempDir,
}

impl Work {
    fn new() -> Work {
        Work {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).to_str().unwrap().to_owned()
    }

    fn init(&self, extra: &[&str]) -> String {
        let dir = self.path("repo");
        let mut args = vec!["init", &dir, "--role", "manufacturer"];
        args.extend_from_slice(extra);
        ok(&args);
        dir
    }

    fn keygen(&self, names: &[&str]) -> Vec<String> {
        let paths: Vec<String> = names.iter().map(|n| self.path(n)).collect();
        let mut args = vec!["keygen"];
        args.extend(paths.iter().map(String::as_str));
        ok(&args);
        paths
    }
}

/// Publishes (or updates) the sandbox model's record: a targets change without a bundle.
fn publish_model(dir: &str, support_end: &str) -> Output {
    run(&[
        "device",
        dir,
        "--hardware-id",
        "gw-1",
        "--model",
        "Gateway",
        "--launch-date",
        "2026-01-15",
        "--support-end",
        support_end,
    ])
}

/// tough's client, trusting the shipped `1.root.json`, expiry enforced.
async fn load(dir: &str) -> Repository {
    let public = Path::new(dir).join("public");
    let root = fs::read(public.join("metadata/1.root.json")).unwrap();
    let url = |d: &str| Url::from_directory_path(public.join(d)).unwrap();
    RepositoryLoader::new(&root, url("metadata"), url("targets"))
        .load()
        .await
        .expect("tough loads the repository")
}

#[tokio::test]
async fn every_role_can_need_two_of_two_keys() {
    let w = Work::new();
    let dir = w.init(&[]);
    for role in ["root", "targets", "snapshot", "timestamp"] {
        let keys = w.keygen(&[&format!("{role}-a.pk8"), &format!("{role}-b.pk8")]);
        let out = ok(&[
            "rotate",
            &dir,
            role,
            "--key",
            &keys[0],
            "--key",
            &keys[1],
            "--threshold",
            "2",
            // Root keys stay outside keys/ once root is rotated.
            "--root-key",
            &w.path("root-a.pk8"),
            "--root-key",
            &w.path("root-b.pk8"),
        ]);
        assert!(out.starts_with("published root v"), "{out}");
    }
    assert!(publish_model(&dir, "2030-01-15").status.success());
    ok(&["refresh", &dir]);
    ok(&["verify", &dir]);

    let repo = load(&dir).await;
    let root = &repo.root().signed;
    assert_eq!(root.version.get(), 5);
    for role in [
        RoleType::Root,
        RoleType::Targets,
        RoleType::Snapshot,
        RoleType::Timestamp,
    ] {
        let keys = &root.roles[&role];
        assert_eq!((keys.threshold.get(), keys.keyids.len()), (2, 2), "{role}");
    }
    assert_eq!(repo.root().signatures.len(), 2);
    assert_eq!(repo.targets().signatures.len(), 2);
    assert_eq!(repo.snapshot().signatures.len(), 2);
    assert_eq!(repo.timestamp().signatures.len(), 2);
    // The original keys are retired (kept, out of the way); the online ones were stored.
    let retired = fs::read_dir(Path::new(&dir).join("keys/retired"))
        .unwrap()
        .count();
    assert_eq!(retired, 4);

    // One of the two targets keys missing: refused, nothing written.
    let stored: Vec<PathBuf> = fs::read_dir(Path::new(&dir).join("keys"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("targets-")
        })
        .collect();
    assert_eq!(stored.len(), 2, "{stored:?}");
    fs::rename(&stored[0], w.path("aside.pk8")).unwrap();
    let before = files(Path::new(&dir));
    let out = publish_model(&dir, "2031-01-15");
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("targets metadata needs 2 signature(s)") && err.contains("found 1"),
        "{err}"
    );
    assert!(files(Path::new(&dir)) == before);
}

#[test]
fn bad_keys_and_thresholds_are_refused_and_nothing_is_written() {
    let w = Work::new();
    let dir = w.init(&[]);
    let repo = Path::new(&dir);
    let keys = w.keygen(&["a.pk8", "b.pk8"]);

    let garbage = w.path("garbage.pk8");
    fs::write(&garbage, b"not a key").unwrap();
    fs::set_permissions(&garbage, fs::Permissions::from_mode(0o600)).unwrap();
    let err = refused(repo, &["rotate", &dir, "targets", "--key", &garbage]);
    assert!(err.contains("garbage.pk8: not a private key"), "{err}");
    let err = refused(
        repo,
        &["rotate", &dir, "targets", "--key", &w.path("missing.pk8")],
    );
    assert!(err.contains("missing.pk8: cannot read"), "{err}");
    let json = w.path("bad.pub");
    fs::write(&json, br#"{"keytype": "ed25519"}"#).unwrap();
    let err = refused(repo, &["rotate", &dir, "targets", "--key", &json]);
    assert!(err.contains("not a TUF public key"), "{err}");

    fs::set_permissions(&keys[0], fs::Permissions::from_mode(0o644)).unwrap();
    let err = refused(repo, &["rotate", &dir, "targets", "--key", &keys[0]]);
    assert!(err.contains("chmod 600"), "{err}");
    fs::set_permissions(&keys[0], fs::Permissions::from_mode(0o600)).unwrap();

    let err = refused(
        repo,
        &[
            "rotate",
            &dir,
            "snapshot",
            "--key",
            &keys[0],
            "--key",
            &keys[1],
            "--threshold",
            "3",
        ],
    );
    assert!(
        err.contains("3 is more than the 2 distinct snapshot key(s)"),
        "{err}"
    );
    let err = refused(
        repo,
        &[
            "rotate",
            &dir,
            "snapshot",
            "--key",
            &keys[0],
            "--key",
            &keys[0],
            "--threshold",
            "2",
        ],
    );
    assert!(err.contains("2 is more than the 1 distinct"), "{err}");

    // A key the current root does not list cannot sign as root.
    let err = refused(repo, &["renew-root", &dir, "--root-key", &keys[0]]);
    assert!(err.contains("is not a root key of root v1"), "{err}");
    // An online role rotated to a key given only as public: nothing can sign it.
    let err = refused(
        repo,
        &[
            "rotate",
            &dir,
            "timestamp",
            "--key",
            &format!("{}.pub", keys[1]),
        ],
    );
    assert!(
        err.contains("timestamp metadata needs 1 signature(s)"),
        "{err}"
    );
    // The same key set again changes nothing.
    let current = repo.join("keys/timestamp.pk8");
    let err = refused(
        repo,
        &[
            "rotate",
            &dir,
            "timestamp",
            "--key",
            current.to_str().unwrap(),
        ],
    );
    assert!(err.contains("current keys and threshold"), "{err}");

    // The root key kept offline: an online rotation cannot sign the new root.
    fs::rename(repo.join("keys/root.pk8"), w.path("root.pk8")).unwrap();
    let err = refused(repo, &["rotate", &dir, "targets", "--key", &keys[0]]);
    assert!(
        err.contains("must be signed by 1 of root v1's root keys; found 0"),
        "{err}"
    );
    // ... and no generated key was left behind.
    let err = refused(repo, &["rotate", &dir, "snapshot"]);
    assert!(err.contains("found 0"), "{err}");
    // With the key named, it works.
    ok(&[
        "rotate",
        &dir,
        "targets",
        "--key",
        &keys[0],
        "--root-key",
        &w.path("root.pk8"),
    ]);
    ok(&["verify", &dir]);
}

#[test]
fn an_offline_root_is_prepared_signed_elsewhere_and_imported() {
    let w = Work::new();
    let dir = w.init(&[]);
    let repo = Path::new(&dir);
    let offline = w.path("root.pk8");
    fs::rename(repo.join("keys/root.pk8"), &offline).unwrap();
    let stranger = w.keygen(&["stranger.pk8"]).remove(0);

    let next = w.path("next.json");
    let out = ok(&["renew-root", &dir, "--prepare", &next]);
    assert!(out.contains("wrote unsigned root v2"), "{out}");
    assert!(out.contains("ssu-repo sign-root"), "{out}");
    let err = refused(repo, &["renew-root", &dir, "--prepare", &next]);
    assert!(err.contains("it must not exist yet"), "{err}");

    // Unsigned, or signed by a key that is no root key: refused.
    let err = refused(repo, &["import-root", &dir, &next]);
    assert!(err.contains("signed by 0 of root v1's root keys"), "{err}");
    let unsigned = fs::read(&next).unwrap();
    let out = run(&["sign-root", &next, "--key", &stranger]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("is not a root key of root v2"),
        "{}",
        text(&out)
    );
    assert_eq!(
        fs::read(&next).unwrap(),
        unsigned,
        "sign-root wrote something"
    );
    let v1 = repo.join("public/metadata/1.root.json");
    let out = run(&[
        "sign-root",
        &next,
        "--key",
        &stranger,
        "--previous",
        v1.to_str().unwrap(),
    ]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("a root key of neither root v2 nor v1"),
        "{}",
        text(&out)
    );
    // A public key cannot sign.
    let out = run(&["sign-root", &next, "--key", &format!("{stranger}.pub")]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("signing needs the private key"),
        "{}",
        text(&out)
    );

    // Signed on "the other machine": the file and the key, nothing else.
    let out = ok(&[
        "sign-root",
        &next,
        "--key",
        &offline,
        "--previous",
        v1.to_str().unwrap(),
    ]);
    assert!(out.contains("v2's own root keys: 1 of 1"), "{out}");
    assert!(out.contains("v1's root keys: 1 of 1"), "{out}");
    let out = ok(&["import-root", &dir, &next]);
    assert!(out.starts_with("published root v2"), "{out}");
    ok(&["verify", &dir]);
    // The same root again, or one from the future: refused.
    let err = refused(repo, &["import-root", &dir, &next]);
    assert!(err.contains("only v3 can follow"), "{err}");

    // A tampered signed root (expiry pushed out after signing) fails its signatures.
    let next3 = w.path("next3.json");
    ok(&["renew-root", &dir, "--prepare", &next3]);
    ok(&["sign-root", &next3, "--key", &offline]);
    let mut root: serde_json::Value = serde_json::from_slice(&fs::read(&next3).unwrap()).unwrap();
    root["signed"]["expires"] = "2099-01-01T00:00:00Z".into();
    fs::write(&next3, serde_json::to_vec(&root).unwrap()).unwrap();
    let err = refused(repo, &["import-root", &dir, &next3]);
    assert!(err.contains("signed by 0 of root v2's root keys"), "{err}");
    fs::remove_file(&next3).unwrap();

    // A targets key rotation prepared with the public key only: importing needs the private
    // key (given with --key, stored into keys/), and re-signs targets under the new root.
    let targets = w.keygen(&["targets-2.pk8"]).remove(0);
    let public = format!("{targets}.pub");
    ok(&[
        "rotate",
        &dir,
        "targets",
        "--key",
        &public,
        "--prepare",
        &next3,
    ]);
    ok(&["sign-root", &next3, "--key", &offline]);
    let err = refused(repo, &["import-root", &dir, &next3]);
    assert!(err.contains("the targets key is needed here"), "{err}");
    let err = refused(repo, &["import-root", &dir, &next3, "--key", &stranger]);
    assert!(
        err.contains("is not a targets, snapshot or timestamp key of root v3"),
        "{err}"
    );
    let out = ok(&["import-root", &dir, &next3, "--key", &targets]);
    assert!(
        out.contains("signed targets v2, snapshot v2, timestamp v2"),
        "{out}"
    );
    assert!(out.contains("retired"), "{out}");
    assert!(!repo.join("keys/targets.pk8").exists());
    assert!(publish_model(&dir, "2030-01-15").status.success());
    ok(&["verify", &dir]);
}

#[test]
fn verify_warns_before_metadata_expires() {
    let w = Work::new();
    let dir = w.init(&["--timestamp-expires", "12h"]);
    let out = run(&["verify", &dir]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("ok: 0 targets verified"), "{stdout}");
    assert!(stdout.contains("warning: timestamp v1 expires"), "{stdout}");
    assert!(stdout.contains("ssu-repo refresh"), "{stdout}");
    assert!(!stdout.contains("warning: root"), "{stdout}");

    ok(&["verify", &dir, "--warn-within", "timestamp=1h"]);
    let out = run(&[
        "verify",
        &dir,
        "--warn-within",
        "timestamp=1h",
        "--warn-within",
        "root=2y",
    ]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("warning: root v1 expires"), "{stdout}");
    assert!(stdout.contains("renew-root"), "{stdout}");
    // renew-root moves the root's expiry out to repo.toml's root expiry from now.
    let out = run(&["verify", &dir, "--warn-within", "bogus=1d"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("expected root, targets, snapshot or timestamp"),
        "{}",
        text(&out)
    );
}
