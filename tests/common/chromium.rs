//! Headless Chromium (Debian's `chromium`) for the static pages' tests: the page's DOM as
//! the browser built it, its text, and screenshots.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

/// Chromium's cold start on a loaded 2-core machine can take many seconds.
pub const CHROMIUM_TIMEOUT: Duration = Duration::from_secs(180);

fn show(out: &std::process::Output) -> String {
    format!(
        "{}\n--- stdout\n{}--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Runs Debian's chromium headless on `page` with `args`; returns stdout. Polls for the exit
/// (no fixed sleep) and kills it after [`CHROMIUM_TIMEOUT`].
pub fn chromium(work: &Path, page: &Path, args: &[String]) -> String {
    let profile = work.join("chromium-profile");
    let mut cmd = Command::new("chromium");
    cmd.args(["--headless", "--disable-gpu", "--no-first-run"])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .arg(format!("file://{}", page.display()))
        // Its own HOME and no session bus: nothing of the machine's user leaks in.
        .env("HOME", work)
        .env_remove("DBUS_SESSION_BUS_ADDRESS")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // Chromium's sandbox refuses to run as root.
    if fs::metadata("/proc/self").unwrap().uid() == 0 {
        cmd.arg("--no-sandbox");
    }
    let child = cmd
        .spawn()
        .expect("run chromium (scripts/deps installs it)");
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let out = match rx.recv_timeout(CHROMIUM_TIMEOUT) {
        Ok(out) => out.expect("wait for chromium"),
        Err(_) => {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
            panic!("chromium {args:?} did not finish in {CHROMIUM_TIMEOUT:?}");
        }
    };
    assert!(out.status.success(), "chromium {args:?}: {}", show(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The text of a serialized DOM, one line per text node (tags are line breaks, entities
/// decoded), empty lines dropped. Only `<style>`'s content is skipped.
pub fn text_lines(dom: &str) -> Vec<String> {
    let body = dom.split("</style>").last().unwrap_or(dom);
    let mut lines = Vec::new();
    for chunk in body.split('<').skip(1) {
        let text = chunk.split_once('>').map_or("", |(_, t)| t);
        let text = text
            .replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&quot;", "\"")
            .replace("&#39;", "'")
            .replace("&nbsp;", " ")
            .replace("&amp;", "&");
        let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
        if !text.is_empty() {
            lines.push(text);
        }
    }
    lines
}

/// `lines` has `want` as consecutive lines (e.g. a label and its value, or a table row).
pub fn assert_has(lines: &[String], want: &[&str]) {
    let found = lines
        .windows(want.len())
        .any(|w| w.iter().zip(want).all(|(a, b)| a == b));
    assert!(
        found,
        "{want:?} not in the rendered text:\n{}",
        lines.join("\n")
    );
}

/// A screenshot of `page` at `size` (width, height) as PNG bytes, checked to have that size.
pub fn screenshot(work: &Path, page: &Path, size: (u32, u32)) -> Vec<u8> {
    let png_path = work.join("screenshot.png");
    let (w, h) = size;
    chromium(
        work,
        page,
        &[
            format!("--screenshot={}", png_path.display()),
            format!("--window-size={w},{h}"),
            "--hide-scrollbars".into(),
        ],
    );
    let png = std::fs::read(&png_path).unwrap();
    assert_eq!(png_size(&png), size);
    png
}

/// Width and height from a PNG's IHDR chunk.
pub fn png_size(png: &[u8]) -> (u32, u32) {
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");
    let be = |at: usize| u32::from_be_bytes(png[at..at + 4].try_into().unwrap());
    (be(16), be(20))
}
