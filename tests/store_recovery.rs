//! A damaged store on the sandbox device: the agent moves it aside, starts afresh, says so on
//! D-Bus, in the history and in its log — and refuses a metadata rollback and a lower patch
//! level exactly as before, because no floor was lost.

mod common;

use std::path::{Path, PathBuf};

use common::device::*;

fn db(d: &Device) -> PathBuf {
    d.sb.dir().join("state/agent.db")
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_os_string();
    s.push(suffix);
    PathBuf::from(s)
}

fn truncate(path: &Path) {
    let len = std::fs::metadata(path).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .unwrap()
        .set_len(len / 3)
        .unwrap();
}

fn random_bytes(path: &Path) {
    std::fs::write(path, image(48 * 1024, 0x77)).unwrap();
}

fn wrong_page_size(path: &Path) {
    let mut bytes = std::fs::read(path).unwrap();
    // Big-endian page size at offset 16: the store's 4096 becomes 1024.
    bytes[16..18].copy_from_slice(&1024u16.to_be_bytes());
    std::fs::write(path, bytes).unwrap();
}

/// A WAL with committed frames of another SQLite database placed beside the store.
fn foreign_wal(path: &Path) {
    let dir = tempfile::tempdir().unwrap();
    let other = dir.path().join("other.db");
    let conn = rusqlite::Connection::open(&other).unwrap();
    conn.execute_batch(
        "PRAGMA journal_mode = WAL; PRAGMA wal_autocheckpoint = 0;
         CREATE TABLE contacts (name TEXT, note TEXT);",
    )
    .unwrap();
    for i in 0..200 {
        conn.execute(
            "INSERT INTO contacts VALUES (?1, hex(randomblob(200)))",
            [i.to_string()],
        )
        .unwrap();
    }
    std::fs::copy(dir.path().join("other.db-wal"), with_suffix(path, "-wal")).unwrap();
    drop(conn);
}

/// Damages the database file (with the agent stopped).
type Damage = fn(&Path);

#[test]
fn a_damaged_store_is_replaced_and_every_floor_still_holds() {
    let d = Device::new("");
    d.sb.start("agent");
    let metadata = d.repo.join("public/metadata");
    // What a replaying server will serve later: a timestamp that verifies on its own.
    let old_timestamp = std::fs::read(metadata.join("timestamp.json")).unwrap();

    // Raise every floor above the factory image: install and confirm 1.0.1 (2026-11-01),
    // verify newer metadata; then offer a release with a lower patch level.
    d.install_security_update_and_reboot();
    d.sb.wait_for("1.0.1 confirmed", WAIT, || {
        d.status()["InstalledVersion"] == "1.0.1" && d.status()["State"] == "idle"
    });
    d.publish(
        "1.0.2",
        &image(64 * 1024, 9),
        &security_args("1.0", "2026-10-01"),
    );
    ssu_repo(&["refresh", d.repo_dir()]);
    let text = d.check();
    assert!(text.contains("refused"), "{text}");
    let current_timestamp = std::fs::read(metadata.join("timestamp.json")).unwrap();

    let damages: [(&str, Damage); 4] = [
        ("truncated", truncate),
        ("random bytes", random_bytes),
        ("wrong page size", wrong_page_size),
        ("a WAL from another database", foreign_wal),
    ];
    for (round, (what, damage)) in damages.into_iter().enumerate() {
        d.sb.stop("agent");
        damage(&db(&d));
        let damaged = std::fs::read(db(&d)).unwrap();
        // tough's cache goes too: only the agent's own floors can refuse the replay below.
        std::fs::remove_dir_all(d.sb.dir().join("state/tuf")).ok();
        let monitor = d.sb.monitor_signal("StoreRecovered");
        d.sb.start("agent");

        // Reported on D-Bus, in the history and in the log; the old file is kept.
        let seen = monitor.wait_for_text("floors copy", WAIT);
        assert!(seen.contains("member=StoreRecovered"), "{what}: {seen}");
        assert!(seen.contains("\"moved_to\""), "{what}: {seen}");
        assert!(seen.contains("\"floors copy\""), "{what}: {seen}");
        let history = d.history();
        assert_eq!(history[0]["action"], "store-recovered", "{what}");
        let kept: Vec<PathBuf> = walk(&d.sb.dir().join("state"))
            .into_iter()
            .filter(|p| {
                let name = p.file_name().unwrap().to_string_lossy().into_owned();
                name.contains(".unusable-") && !name.ends_with("-wal") && !name.ends_with("-shm")
            })
            .collect();
        assert_eq!(kept.len(), round + 1, "{what}: {kept:?}");
        assert!(
            kept.iter().any(|p| std::fs::read(p).unwrap() == damaged),
            "{what}: the damaged file was not kept as it was"
        );
        let log = d.sb.agent_log();
        assert!(log.contains("store recovered"), "{what}");

        // The patch level floor: still 1.0.1's, and 1.0.2 is refused as lower.
        let st = d.status();
        assert_eq!(st["SecurityPatchLevel"], "2026-11-01", "{what}: {st:#}");
        assert_eq!(st["InstalledVersion"], "1.0.1", "{what}");

        // The metadata floor: a replayed older timestamp is refused as a rollback.
        std::fs::write(metadata.join("timestamp.json"), &old_timestamp).unwrap();
        let text = d.check();
        assert!(text.contains("rollback refused"), "{what}: {text}");
        std::fs::write(metadata.join("timestamp.json"), &current_timestamp).unwrap();
        let text = d.check();
        assert!(text.contains("verified; refused"), "{what}: {text}");
        assert!(
            d.history().iter().any(|e| e["version"] == "1.0.2"
                && e["detail"]
                    .as_str()
                    .is_some_and(|t| t.contains("lower than the installed"))),
            "{what}: {:#?}",
            d.history()
        );
        assert_eq!(d.installs_into_b(), 1, "{what}: nothing more installed");
        assert_eq!(d.status()["State"], "idle", "{what}");
    }
}
