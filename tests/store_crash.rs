//! SIGKILL during a burst of history writes loses no committed entry.
//!
//! The test re-executes its own binary as a child (selected by [`CHILD_ENV`]) that appends
//! history entries in a tight loop and prints each id only after `append_history` (or the
//! enclosing transaction) returned. The parent kills the child with SIGKILL mid-burst, reopens
//! the store — which runs the full corruption probe — and checks that every reported entry is
//! there with its content. Several rounds share one database, so each round also starts from
//! a file recovered after a kill.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use ssu_agent::store::{HistoryEntry, NewHistoryEntry, Store};

const TEST_NAME: &str = "sigkill_during_a_history_burst_loses_no_committed_entry";
/// Set in the child to the database path; its presence selects child mode.
const CHILD_ENV: &str = "SSU_STORE_CRASH_CHILD";
const ROUND_ENV: &str = "SSU_STORE_CRASH_ROUND";
const ROUNDS: u32 = 3;
/// The child stops by itself after this many entries, in case nobody kills it.
const CHILD_MAX_ENTRIES: u32 = 100_000;
/// How long the parent waits for the child's next line before declaring it stuck.
const LINE_DEADLINE: Duration = Duration::from_secs(30);

fn entry(round: u32, n: u32) -> NewHistoryEntry {
    let at: Timestamp = "2024-06-01T00:00:00Z".parse().unwrap();
    NewHistoryEntry {
        at: at + SignedDuration::from_millis(i64::from(round) * 1_000_000 + i64::from(n)),
        kind: if n.is_multiple_of(2) {
            "security"
        } else {
            "event"
        }
        .to_owned(),
        action: "installed".to_owned(),
        version: Some(format!("{round}.{n}")),
        security_patch_level: Some("2024-06-05".parse().unwrap()),
        detail: format!("round {round} entry {n}"),
        cves: vec![format!("CVE-2024-{n:05}")],
    }
}

fn state_key(round: u32) -> String {
    format!("crash-test.round-{round}.last-transaction")
}

/// `(round, n)` from an entry this test wrote.
fn origin(e: &HistoryEntry) -> (u32, u32) {
    let rest = e
        .detail
        .strip_prefix("round ")
        .expect("entry from this test");
    let (round, n) = rest.split_once(" entry ").expect("entry from this test");
    (round.parse().unwrap(), n.parse().unwrap())
}

#[test]
fn sigkill_during_a_history_burst_loses_no_committed_entry() {
    if let Some(path) = std::env::var_os(CHILD_ENV) {
        let round = std::env::var(ROUND_ENV).unwrap().parse().unwrap();
        child(Path::new(&path), round);
        return;
    }

    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let path = dir.path().join("agent.db");
    // Every entry any child reported as committed: id -> (round, n).
    let mut reported: BTreeMap<i64, (u32, u32)> = BTreeMap::new();

    for round in 0..ROUNDS {
        // Vary the moment of the kill a little from round to round.
        let wanted = 200 + 37 * round as usize;
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", TEST_NAME, "--nocapture", "--quiet"])
            .env(CHILD_ENV, &path)
            .env(ROUND_ENV, round.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();

        // A reader thread turns the child's stdout into a channel, so the parent can wait
        // for each line with a deadline instead of blocking forever on a stuck child.
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        let reader = thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                // libtest prints its own lines too; ours carry a prefix.
                let Some(rest) = line.strip_prefix("committed ") else {
                    continue;
                };
                let (id, n) = rest.split_once(' ').unwrap();
                let _ = tx.send((id.parse::<i64>().unwrap(), n.parse::<u32>().unwrap()));
            }
        });

        let mut ids = Vec::new();
        while ids.len() < wanted {
            match rx.recv_timeout(LINE_DEADLINE) {
                Ok(line) => ids.push(line),
                Err(e) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!(
                        "round {round}: child stopped after {} entries: {e}",
                        ids.len()
                    );
                }
            }
        }
        child.kill().unwrap(); // SIGKILL on Unix
        let status = child.wait().unwrap();
        assert_eq!(status.signal(), Some(9), "round {round}: {status}");
        // Lines still in the pipe were also printed after their commit: check them too.
        reader.join().unwrap();
        ids.extend(rx.try_iter());

        for window in ids.windows(2) {
            assert!(window[0].0 < window[1].0, "ids increase: {window:?}");
        }
        for &(id, n) in &ids {
            assert!(reported.insert(id, (round, n)).is_none(), "id {id} reused");
        }

        let store = Store::open(&path)
            .unwrap_or_else(|e| panic!("round {round}: store does not reopen cleanly: {e}"));
        let stored: BTreeMap<i64, HistoryEntry> = store
            .history(usize::MAX)
            .unwrap()
            .into_iter()
            .map(|e| (e.id, e))
            .collect();

        for (id, &(r, n)) in &reported {
            let e = stored
                .get(id)
                .unwrap_or_else(|| panic!("committed entry {id} (round {r}, n {n}) lost"));
            let expected = entry(r, n);
            let got = NewHistoryEntry {
                at: e.at,
                kind: e.kind.clone(),
                action: e.action.clone(),
                version: e.version.clone(),
                security_patch_level: e.security_patch_level,
                detail: e.detail.clone(),
                cves: e.cves.clone(),
            };
            assert_eq!(got, expected, "entry {id}");
        }

        // This round's entries are a gap-free prefix 0..=last: the child commits one after
        // another, so a hole would be a commit lost while a later one survived.
        let ns: Vec<u32> = stored
            .values()
            .map(origin)
            .filter(|&(r, _)| r == round)
            .map(|(_, n)| n)
            .collect();
        let last = *ns.last().unwrap();
        assert_eq!(ns, (0..=last).collect::<Vec<_>>(), "round {round}");
        assert!(last as usize + 1 >= ids.len());

        // Odd entries were written in a transaction together with a state value: both or
        // neither survived.
        let last_odd = ns.iter().rev().find(|n| !n.is_multiple_of(2)).unwrap();
        assert_eq!(
            store.state(&state_key(round)).unwrap(),
            Some(last_odd.to_string()),
            "round {round}"
        );
    }
}

/// Appends entries as fast as it can and reports each one once it is committed.
fn child(path: &Path, round: u32) {
    let mut store = Store::open(path).unwrap();
    let mut out = std::io::stdout().lock();
    for n in 0..CHILD_MAX_ENTRIES {
        let e = if n.is_multiple_of(2) {
            store.append_history(&entry(round, n)).unwrap()
        } else {
            store
                .transaction(|tx| {
                    let e = tx.append_history(&entry(round, n))?;
                    tx.set_state(&state_key(round), Some(&n.to_string()))?;
                    Ok(e)
                })
                .unwrap()
        };
        // The parent is gone when the pipe breaks; nothing left to report to.
        if writeln!(out, "committed {} {n}", e.id)
            .and_then(|()| out.flush())
            .is_err()
        {
            return;
        }
    }
}
