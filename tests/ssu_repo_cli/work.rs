//! The harness of tests/ssu_repo.rs and tests/ssu_repo_verify.rs: a work directory that makes
//! real RAUC bundles and repositories, and tough's client to read what was published.

use super::{ok, text};
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use tough::{Repository, RepositoryLoader, TargetName};
use url::Url;

/// A temporary directory with a RAUC signing key/cert pair.
pub struct Work {
    dir: tempfile::TempDir,
}

impl Work {
    pub fn new() -> Work {
        let dir = tempfile::tempdir().unwrap();
        let out = Command::new("openssl")
            .args([
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "365",
            ])
            .args([
                "-subj", "/CN=test", "-keyout", "key.pem", "-out", "cert.pem",
            ])
            .current_dir(dir.path())
            .output()
            .expect("run openssl");
        assert!(out.status.success(), "{}", text(&out));
        Work { dir }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `rauc bundle` of a plain bundle with one rootfs image.
    pub fn bundle(&self, compatible: &str, version: &str, image: &[u8]) -> PathBuf {
        let input = self.path(&format!("in-{compatible}-{version}-{}", image.len()));
        fs::create_dir_all(&input).unwrap();
        fs::write(input.join("rootfs.img"), image).unwrap();
        fs::write(
            input.join("manifest.raucm"),
            format!(
                "[update]\ncompatible={compatible}\nversion={version}\n\
                 [bundle]\nformat=plain\n[image.rootfs]\nfilename=rootfs.img\n"
            ),
        )
        .unwrap();
        let bundle = self.path(&format!("{compatible}-{version}-{}.raucb", image.len()));
        let out = Command::new("rauc")
            .arg("bundle")
            .arg("--cert")
            .arg(self.path("cert.pem"))
            .arg("--key")
            .arg(self.path("key.pem"))
            .arg(&input)
            .arg(&bundle)
            .output()
            .expect("run rauc bundle");
        assert!(out.status.success(), "{}", text(&out));
        bundle
    }

    /// `ssu-repo init` of a new repository `name` with `role`.
    pub fn init(&self, name: &str, role: &str) -> PathBuf {
        let dir = self.path(name);
        ok(&[s("init"), p(&dir), s("--role"), s(role)]);
        dir
    }
}

pub fn s(v: &str) -> String {
    v.to_owned()
}

pub fn p(v: &Path) -> String {
    v.to_str().unwrap().to_owned()
}

pub fn mode(path: &Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o777
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes))
}

/// tough's client on `public/`, trusting `public/metadata/1.root.json`, expiry enforced.
pub async fn load(repo_dir: &Path) -> Repository {
    let public = repo_dir.join("public");
    let root = fs::read(public.join("metadata/1.root.json")).unwrap();
    let url = |d: &str| Url::from_directory_path(public.join(d)).unwrap();
    RepositoryLoader::new(&root, url("metadata"), url("targets"))
        .load()
        .await
        .expect("tough loads the repository")
}

pub async fn read_target(repo: &Repository, name: &str) -> Vec<u8> {
    use tough::IntoVec;
    let name = TargetName::new(name).unwrap();
    repo.read_target(&name)
        .await
        .unwrap()
        .expect("target listed")
        .into_vec()
        .await
        .unwrap()
}

pub fn target(repo: &Repository, name: &str) -> tough::schema::Target {
    repo.targets().signed.targets[&TargetName::new(name).unwrap()].clone()
}

pub fn versions(repo: &Repository) -> [u64; 3] {
    [
        repo.targets().signed.version.get(),
        repo.snapshot().signed.version.get(),
        repo.timestamp().signed.version.get(),
    ]
}

/// Flags that make a valid security bundle.
pub fn security_flags() -> Vec<String> {
    [
        "--kind",
        "security",
        "--base-version",
        "1.0",
        "--security-patch-level",
        "2026-11-01",
        "--cve",
        "CVE-2026-1234:high:8.1:Remote code execution in the web UI",
        "--cve",
        "CVE-2026-2345:low:Information leak: build id",
        "--downtime",
        "90s",
        "--released",
        "2026-11-05T10:00:00Z",
    ]
    .map(s)
    .to_vec()
}

pub fn add_args(dir: &Path, bundle: &Path, extra: &[String]) -> Vec<String> {
    let mut args = vec![s("add"), p(dir), p(bundle)];
    args.extend_from_slice(extra);
    args
}

pub const BUNDLE: &str = "bundles/ssu-sandbox/1.0.1.raucb";
