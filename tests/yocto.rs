//! The Yocto layer yocto-layer/meta-ssu checked by bitbake itself (openembedded-core wrynose,
//! bitbake 2.18 and meta-rauc from ../shared/third-party, run by scripts/yocto): parse, dry
//! run, the expanded variables, fetch + unpack of this checkout, the crate-list check of a
//! pinned source, and the recipes' own expanded do_install run against this build's binaries.
//! The lint, crate-list and licence-list checks that need no bitbake are in yocto_files.rs.
//!
//! The first run copies the tools and parses oe-core (minutes); later runs reuse bitbake's
//! parse cache and the downloaded crates in /var/cache/ssu-agent-yocto (scripts/yocto).

mod bitbake;

use bitbake::*;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

#[test]
fn bitbake_parses_the_layer_and_plans_a_build_of_ssu_agent() {
    let out = yocto(&["bitbake", "-p"]);
    let log = text(&out);
    assert!(out.status.success(), "{log}");
    assert!(!log.contains("ERROR:"), "{log}");
    assert!(
        !log.contains("ssu-agent"),
        "a warning about the layer: {log}"
    );

    // The dry run walks all ~2400 tasks (minutes): its result is kept per content of
    // everything it depends on, and a change to any of it runs it again.
    let build = build_dir();
    let done = build.with_extension("dry-run").join(dry_run_key(&build));
    if let Ok(summary) = fs::read_to_string(&done) {
        eprintln!("bitbake -n: same layer, tools and configuration as a passed run: {summary}");
        return;
    }
    let out = yocto(&["bitbake", "-n", "ssu-agent", "ssu-agent-conf"]);
    let log = text(&out);
    assert!(out.status.success(), "{log}");
    let summary = log
        .lines()
        .find(|l| l.contains("Tasks Summary"))
        .unwrap_or_else(|| panic!("{log}"));
    assert!(summary.contains("all succeeded"), "{summary}");
    fs::create_dir_all(done.parent().unwrap()).unwrap();
    fs::write(&done, summary).unwrap();
}

#[test]
fn ssu_agent_depends_on_what_it_links_and_needs_at_run_time() {
    let env = agent_env();
    // rusqlite links the system SQLite (found with pkg-config).
    let depends = env.words("DEPENDS");
    for dep in ["sqlite3", "pkgconf-native", "rust-native"] {
        assert!(depends.contains(&dep), "DEPENDS lacks {dep}: {depends:?}");
    }
    let rdepends = env.words("RDEPENDS:ssu-agent");
    for dep in [
        "dbus",
        "rauc-service",
        "ca-certificates",
        "virtual-ssu-agent-conf",
    ] {
        assert!(
            rdepends.contains(&dep),
            "RDEPENDS lacks {dep}: {rdepends:?}"
        );
    }
    // `rauc` is the command line; the D-Bus service the agent talks to is rauc-service.
    assert!(!rdepends.contains(&"rauc"), "{rdepends:?}");
    assert_eq!(env.words("RCONFLICTS:ssu-agent"), ["rauc-mark-good"]);
    assert_eq!(env.get("REQUIRED_DISTRO_FEATURES"), "systemd");

    // Per architecture: the machine's values live in ssu-agent-conf.
    assert_eq!(env.get("PACKAGE_ARCH"), env.get("TUNE_PKGARCH"));
    assert_ne!(env.get("PACKAGE_ARCH"), env.get("MACHINE_ARCH"));
    let conf = conf_env();
    assert_eq!(conf.get("PACKAGE_ARCH"), conf.get("MACHINE_ARCH"));
    assert_eq!(
        conf.words("RPROVIDES:ssu-agent-conf"),
        ["virtual-ssu-agent-conf"]
    );
    assert_eq!(
        conf.get("SSU_IMAGE_VERSION"),
        "",
        "no default firmware version"
    );

    assert_eq!(
        env.words("SYSTEMD_SERVICE:ssu-agent"),
        ["ssu-agent.service"]
    );
    assert_eq!(
        env.words("CONFFILES:ssu-agent"),
        ["/etc/ssu-agent/agent.toml"]
    );
    assert_eq!(
        conf.words("CONFFILES:ssu-agent-conf"),
        ["/etc/ssu-agent/agent.d/00-image.toml"]
    );
    let files = env.get("FILES:ssu-agent");
    for f in [
        "/usr/share/dbus-1/system.d/org.ssu.Agent1.conf",
        "/usr/share/polkit-1/actions/org.ssu.agent.policy",
    ] {
        assert!(files.contains(f), "FILES lacks {f}: {files}");
    }
    assert!(
        env.get("FILES:ssu-agent-repo")
            .contains("/usr/bin/ssu-repo")
    );
    for var in ["HOMEPAGE", "BUGTRACKER"] {
        let value = env.vars.get(var).map(String::as_str).unwrap_or("");
        assert!(!value.contains("example.invalid"), "{var} = {value}");
    }

    // LICENSE is the generated list of every linked crate's licence (scripts/crate-licenses).
    let inc = fs::read_to_string(
        repo().join("yocto-layer/meta-ssu/recipes-core/ssu-agent/ssu-agent-licenses.inc"),
    )
    .unwrap();
    let generated = inc.split("LICENSE = \"").nth(1).unwrap();
    let generated: String = generated
        .split('"')
        .next()
        .unwrap()
        .replace("\\\n", " ")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    assert_eq!(env.words("LICENSE").join(" "), generated);
    for lic in [
        "MIT",
        "Apache-2.0",
        "ISC",
        "BSD-3-Clause",
        "Unicode-3.0",
        "Zlib",
    ] {
        assert!(env.words("LICENSE").contains(&lic), "{lic}");
    }
    let chksum = env.get("LIC_FILES_CHKSUM");
    assert!(
        chksum.contains("file://LICENSE-MIT;md5=") && chksum.contains("file://LICENSE-APACHE;md5="),
        "{chksum}"
    );
}

/// The source this checkout holds, as the recipe's default SRC_URI lists it.
#[test]
fn fetch_and_unpack_take_this_checkout_and_the_locked_crates() {
    let env = agent_env();
    let src_uri = env.words("SRC_URI");
    assert!(
        src_uri.contains(&"file://Cargo.lock;subdir=ssu-agent-0.1.0"),
        "{src_uri:?}"
    );
    assert!(
        !src_uri.iter().any(|u| u.starts_with("git://")),
        "{src_uri:?}"
    );
    assert_eq!(
        Path::new(env.get("SSU_SRCDIR")).canonicalize().unwrap(),
        repo().canonicalize().unwrap()
    );

    // -f: run unpack (and its crate check) again even when nothing changed.
    let out = yocto(&["bitbake", "-f", "-c", "unpack", "ssu-agent"]);
    assert!(out.status.success(), "{}", text(&out));
    let s = PathBuf::from(env.get("S"));
    for f in [
        "Cargo.lock",
        "Cargo.toml",
        "systemd/ssu-agent.service",
        "LICENSE-MIT",
    ] {
        assert_eq!(
            fs::read(s.join(f)).unwrap(),
            fs::read(repo().join(f)).unwrap(),
            "{f} differs from the checkout"
        );
    }
    assert!(s.join("src/lib.rs").is_file());
    // The crates are unpacked for cargo's --frozen build (cargo_common's vendoring directory).
    let vendor = PathBuf::from(env.get("CARGO_VENDORING_DIRECTORY"));
    assert!(vendor.join("zbus-6.0.0").is_dir() || fs::read_dir(&vendor).unwrap().count() > 200);
}

/// A product pins a release (README.md): SSU_SRC_URI to a git tag, SRCREV. When the layer's
/// crate list is not that source's Cargo.lock, do_unpack stops the build.
#[test]
fn a_pinned_source_whose_lock_disagrees_with_the_crate_list_stops_unpack() {
    let build = build_dir();
    // A fixed path and a reproducible commit: the same configuration each run, so bitbake's
    // parse cache for it is reused.
    let fixture = build.with_extension("pin-fixture");
    let _ = fs::remove_dir_all(&fixture);
    let src = fixture.join("ssu-agent.git");
    fs::create_dir_all(&src).unwrap();
    for f in ["Cargo.toml", "README.md", "LICENSE-MIT", "LICENSE-APACHE"] {
        fs::copy(repo().join(f), src.join(f)).unwrap();
    }
    // A release whose lock moved on: zbus 6 → 7.
    let lock = fs::read_to_string(repo().join("Cargo.lock")).unwrap();
    let drifted = lock.replacen(
        "name = \"zbus\"\nversion = \"6.",
        "name = \"zbus\"\nversion = \"7.",
        1,
    );
    assert_ne!(drifted, lock, "fixture: zbus 6 not in Cargo.lock");
    fs::write(src.join("Cargo.lock"), drifted).unwrap();
    let git = |args: &[&str]| {
        let out = Command::new("git")
            .args([
                "-c",
                "user.name=t",
                "-c",
                "user.email=t@t",
                "-c",
                "init.defaultBranch=main",
            ])
            .args(args)
            .current_dir(&src)
            .env("GIT_AUTHOR_DATE", "2026-01-01T00:00:00Z")
            .env("GIT_COMMITTER_DATE", "2026-01-01T00:00:00Z")
            .output()
            .unwrap();
        assert!(out.status.success(), "git {args:?}: {}", text(&out));
        String::from_utf8(out.stdout).unwrap()
    };
    git(&["init", "-q"]);
    git(&["add", "."]);
    git(&["commit", "-q", "-m", "release"]);
    git(&["tag", "v0.1.0"]);
    let rev = git(&["rev-parse", "HEAD"]);
    chown_to_build_user(&fixture);
    let conf = fixture.join("pin.conf");
    fs::write(
        &conf,
        format!(
            "SSU_SRC_URI:pn-ssu-agent = \"git://{};protocol=file;branch=main;tag=v0.1.0\"\n\
             SRCREV:pn-ssu-agent = \"{}\"\n",
            src.display(),
            rev.trim()
        ),
    )
    .unwrap();

    let conf_arg = conf.to_str().unwrap();
    let out = yocto(&["--conf", conf_arg, "bitbake", "-c", "unpack", "ssu-agent"]);
    let log = text(&out);
    assert!(!out.status.success(), "{log}");
    assert!(
        log.contains("does not match") && log.contains("zbus 7."),
        "no clear message: {log}"
    );
    assert!(log.contains("scripts/crates-inc"), "{log}");
}

#[test]
fn do_install_for_each_combination_of_the_integrator_variables() {
    let agent = agent_env();
    let conf = conf_env();
    assert!(conf.shell_function("do_install").contains("bbfatal"));
    let tmp = tempfile::tempdir().unwrap();

    // ssu-agent's do_install (cargo_do_install + the recipe's append) on this build's binaries.
    let work = tmp.path().join("agent");
    let rel = |var: &str, env: &Env| {
        env.get(var)
            .strip_prefix(env.get("WORKDIR"))
            .unwrap_or_else(|| panic!("{var} outside WORKDIR"))
            .trim_start_matches('/')
            .to_owned()
    };
    let bins = work
        .join(rel("B", agent))
        .join("target")
        .join(agent.get("CARGO_TARGET_SUBDIR"));
    fs::create_dir_all(&bins).unwrap();
    for (name, path) in [
        ("ssu-agent", env!("CARGO_BIN_EXE_ssu-agent")),
        ("ssuctl", env!("CARGO_BIN_EXE_ssuctl")),
        ("ssu-repo", env!("CARGO_BIN_EXE_ssu-repo")),
    ] {
        fs::copy(path, bins.join(name)).unwrap();
    }
    copy_tree(repo(), &work.join(rel("S", agent)));
    let out = run_do_install(agent, &work, &[]);
    assert!(out.status.success(), "{}", text(&out));
    let image = work.join(rel("D", agent));
    for f in [
        "usr/bin/ssu-agent",
        "usr/bin/ssuctl",
        "usr/bin/ssu-repo",
        "usr/lib/systemd/system/ssu-agent.service",
        "usr/share/dbus-1/system.d/org.ssu.Agent1.conf",
        "usr/share/dbus-1/interfaces/org.ssu.Agent1.xml",
        "usr/share/polkit-1/actions/org.ssu.agent.policy",
        "etc/ssu-agent/agent.toml",
        "usr/share/man/man8/ssu-agent.8",
        "usr/share/man/man1/ssuctl.1",
        "usr/share/man/man1/ssu-repo.1",
        "usr/share/doc/ssu-agent/README.md",
    ] {
        assert!(image.join(f).is_file(), "{f} not installed");
    }
    // The man pages the unit's Documentation= names are installed.
    let unit = fs::read_to_string(image.join("usr/lib/systemd/system/ssu-agent.service")).unwrap();
    for page in ["ssu-agent(8)", "ssuctl(1)"] {
        assert!(unit.contains(&format!("man:{page}")), "{page}");
    }

    // ssu-agent-conf's do_install for every combination of root, server and version.
    let root_json = "{\"signed\": {}}\n";
    let cases: [(&str, &str, &str, Option<&str>); 8] = [
        ("", "", "", Some("SSU_IMAGE_VERSION is not set")),
        ("gw-root.json", "", "", Some("SSU_IMAGE_VERSION is not set")),
        (
            "",
            "https://updates.example.com/gw/",
            "",
            Some("SSU_IMAGE_VERSION is not set"),
        ),
        (
            "gw-root.json",
            "https://updates.example.com/gw/",
            "",
            Some("SSU_IMAGE_VERSION is not set"),
        ),
        ("", "", "3.1.0", None),
        // The combination that once wrote url = "" and exited 0.
        (
            "gw-root.json",
            "",
            "3.1.0",
            Some("SSU_MANUFACTURER_ROOT is set but SSU_MANUFACTURER_URL is not"),
        ),
        (
            "",
            "https://updates.example.com/gw/",
            "3.1.0",
            Some("SSU_MANUFACTURER_URL is set but SSU_MANUFACTURER_ROOT is not"),
        ),
        (
            "gw-root.json",
            "https://updates.example.com/gw/",
            "3.1.0",
            None,
        ),
    ];
    for (i, (root, url, version, fails_with)) in cases.into_iter().enumerate() {
        let case = format!("root={root:?} url={url:?} version={version:?}");
        let work = tmp.path().join(format!("conf-{i}"));
        let unpack = work.join(rel("UNPACKDIR", conf));
        fs::create_dir_all(&unpack).unwrap();
        fs::write(unpack.join("gw-root.json"), root_json).unwrap();
        let out = run_do_install(
            conf,
            &work,
            &[
                ("SSU_MANUFACTURER_ROOT", root),
                ("SSU_MANUFACTURER_URL", url),
                ("SSU_IMAGE_VERSION", version),
                ("SSU_DEVICE_MODEL", "GW \"3000\""),
                ("SSU_HARDWARE_ID", "gw3000"),
                ("SSU_AGENT_DROPINS", ""),
            ],
        );
        let log = text(&out);
        let dropin = work
            .join(rel("D", conf))
            .join("etc/ssu-agent/agent.d/00-image.toml");
        if let Some(message) = fails_with {
            assert!(!out.status.success(), "{case}: {log}");
            assert!(log.contains(&format!("ERROR: {message}")), "{case}: {log}");
            assert!(!dropin.exists(), "{case}: wrote a drop-in before failing");
            continue;
        }
        assert!(out.status.success(), "{case}: {log}");
        let written = fs::read_to_string(&dropin).unwrap();
        assert!(written.contains("version = \"3.1.0\""), "{case}: {written}");
        assert!(
            written.contains("model = \"GW \\\"3000\\\"\""),
            "{case}: {written}"
        );
        let installed_root = work
            .join(rel("D", conf))
            .join("usr/share/ssu-agent/manufacturer-root.json");
        if root.is_empty() {
            assert!(!written.contains("[manufacturer]"), "{case}: {written}");
            assert!(
                log.contains("WARNING: SSU_MANUFACTURER_ROOT is not set"),
                "{case}: {log}"
            );
            assert!(!installed_root.exists());
        } else {
            assert!(
                written.contains("url = \"https://updates.example.com/gw/\"")
                    && written.contains("root = \"/usr/share/ssu-agent/manufacturer-root.json\""),
                "{case}: {written}"
            );
            assert_eq!(fs::read_to_string(&installed_root).unwrap(), root_json);
        }
        // The agent accepts the image's configuration: agent.toml plus this drop-in.
        let etc = tmp.path().join(format!("etc-{i}"));
        copy_tree(&image.join("etc/ssu-agent"), &etc);
        fs::copy(&dropin, etc.join("agent.d/00-image.toml")).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_ssu-agent"))
            .arg("--config")
            .arg(etc.join("agent.toml"))
            .arg("--check-config")
            .output()
            .unwrap();
        let log = text(&out);
        assert!(out.status.success(), "{case}: {log}");
        assert!(
            log.contains("agent.d/00-image.toml") && log.contains("configuration OK"),
            "{case}: {log}"
        );
    }
}

/// meta-rauc's `rauc` recommends rauc-mark-good, which marks every boot good and so defeats
/// the agent's health check and rollback: an image with `inherit ssu_image` (the layer's
/// example image) keeps it out, and its root file system check refuses it if it got in.
#[test]
fn an_ssu_image_leaves_rauc_mark_good_out_and_refuses_a_root_file_system_with_it() {
    let image = bitbake_env("ssu-image-minimal");
    assert!(
        image
            .words("BAD_RECOMMENDATIONS")
            .contains(&"rauc-mark-good"),
        "BAD_RECOMMENDATIONS={}",
        image.get("BAD_RECOMMENDATIONS")
    );
    assert!(image.words("IMAGE_INSTALL").contains(&"ssu-agent"));
    let check = "ssu_image_refuse_mark_good";
    assert!(
        image.words("ROOTFS_POSTPROCESS_COMMAND").contains(&check),
        "ROOTFS_POSTPROCESS_COMMAND={}",
        image.get("ROOTFS_POSTPROCESS_COMMAND")
    );

    let unit_dir = image.get("systemd_system_unitdir").to_owned();
    let init_dir = format!("{}/init.d", image.get("sysconfdir"));
    let tmp = tempfile::tempdir().unwrap();
    let rootfs = tmp.path().join("rootfs");
    for dir in [&unit_dir, &init_dir] {
        fs::create_dir_all(rootfs.join(dir.trim_start_matches('/'))).unwrap();
    }
    // A root file system with RAUC's own service and ssu-agent's passes.
    fs::write(
        rootfs
            .join(unit_dir.trim_start_matches('/'))
            .join("rauc.service"),
        "",
    )
    .unwrap();
    fs::write(
        rootfs
            .join(unit_dir.trim_start_matches('/'))
            .join("ssu-agent.service"),
        "",
    )
    .unwrap();
    let out = run_function(&image, check, ("IMAGE_ROOTFS", &rootfs), &[]);
    assert!(out.status.success(), "{}", text(&out));

    // Either form of rauc-mark-good (systemd unit, SysV script) fails the image, naming it.
    for file in [
        format!("{unit_dir}/rauc-mark-good.service"),
        format!("{init_dir}/rauc-mark-good"),
    ] {
        let path = rootfs.join(file.trim_start_matches('/'));
        fs::write(&path, "").unwrap();
        let out = run_function(&image, check, ("IMAGE_ROOTFS", &rootfs), &[]);
        let log = text(&out);
        assert!(!out.status.success(), "{file}: {log}");
        assert!(log.contains(&file) && log.contains("rollback"), "{log}");
        fs::remove_file(&path).unwrap();
    }
}
