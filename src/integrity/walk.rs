//! `setuid`: unexpected setuid/setgid executables, or anything called `su`, in the configured
//! directories — what rooting kits leave behind.
//!
//! The walk is bounded (entries and depth), never follows a symbolic link (a link could lead
//! out of the configured root, or loop), and stays silent about nothing: a directory it could
//! not read, or a bound it hit, makes the result `unknown` unless it already found something.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::files::clean;
use super::{Ctx, Outcome, under};

/// A path on the device as evidence shows it.
fn shown(p: &Path) -> String {
    clean(&p.to_string_lossy())
}

/// Most directory entries one probe looks at (a whole /usr has tens of thousands).
pub const MAX_ENTRIES: usize = 200_000;
/// Deepest directory level below a configured path.
pub const MAX_DEPTH: usize = 32;
/// Offenders named in the evidence; the rest are counted.
const SHOWN: usize = 8;

struct Walk<'a> {
    root: &'a Path,
    allowed: &'a [PathBuf],
    entries: usize,
    found: Vec<String>,
    allowed_seen: usize,
    trouble: Vec<String>,
}

pub fn setuid(ctx: &Ctx<'_>) -> (Outcome, String) {
    let c = ctx.config;
    if c.setuid_paths.is_empty() {
        return (
            Outcome::Unknown,
            "not configured (setuid_paths is empty)".to_owned(),
        );
    }
    let mut w = Walk {
        root: &c.root,
        allowed: &c.setuid_allowed,
        entries: 0,
        found: Vec::new(),
        allowed_seen: 0,
        trouble: Vec::new(),
    };
    for p in &c.setuid_paths {
        w.walk(p);
    }
    let places = c
        .setuid_paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ");
    if !w.found.is_empty() {
        let mut shown: Vec<String> = w.found.iter().take(SHOWN).cloned().collect();
        if w.found.len() > SHOWN {
            shown.push(format!("and {} more", w.found.len() - SHOWN));
        }
        return (Outcome::Fail, format!("unexpected: {}", shown.join("; ")));
    }
    if !w.trouble.is_empty() {
        let mut shown: Vec<String> = w.trouble.iter().take(SHOWN).cloned().collect();
        if w.trouble.len() > SHOWN {
            shown.push(format!("and {} more", w.trouble.len() - SHOWN));
        }
        return (
            Outcome::Unknown,
            format!(
                "nothing unexpected in {} entries, but not everything was looked at: {}",
                w.entries,
                shown.join("; ")
            ),
        );
    }
    let mut evidence = format!(
        "no unexpected setuid/setgid executables or su in {places} ({} entries)",
        w.entries
    );
    if w.allowed_seen > 0 {
        evidence.push_str(&format!("; {} allowed by setuid_allowed", w.allowed_seen));
    }
    (Outcome::Pass, evidence)
}

impl Walk<'_> {
    /// Walks `top` (a path on the device) depth-first without recursion.
    fn walk(&mut self, top: &Path) {
        match std::fs::symlink_metadata(under(self.root, top)) {
            Ok(m) if m.is_dir() => {}
            Ok(m) if m.file_type().is_symlink() => {
                self.trouble.push(format!(
                    "{} is a symbolic link (not followed)",
                    top.display()
                ));
                return;
            }
            Ok(m) => {
                self.look_at(top, &m);
                return;
            }
            // A configured place that does not exist on this image holds nothing.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
            Err(e) => {
                self.trouble.push(format!("{}: {e}", shown(top)));
                return;
            }
        }
        let mut stack = vec![(top.to_path_buf(), 0usize)];
        while let Some((dir, depth)) = stack.pop() {
            let entries = match std::fs::read_dir(under(self.root, &dir)) {
                Ok(e) => e,
                Err(e) => {
                    self.trouble.push(format!("{}: {e}", shown(&dir)));
                    continue;
                }
            };
            for entry in entries {
                if self.entries >= MAX_ENTRIES {
                    self.trouble
                        .push(format!("stopped after {MAX_ENTRIES} entries"));
                    return;
                }
                self.entries += 1;
                let entry = match entry {
                    Ok(e) => e,
                    Err(e) => {
                        self.trouble.push(format!("{}: {e}", shown(&dir)));
                        continue;
                    }
                };
                let path = dir.join(entry.file_name());
                // DirEntry::metadata does not follow symbolic links.
                let meta = match entry.metadata() {
                    Ok(m) => m,
                    Err(e) => {
                        self.trouble.push(format!("{}: {e}", shown(&path)));
                        continue;
                    }
                };
                if meta.is_dir() {
                    if depth + 1 > MAX_DEPTH {
                        self.trouble.push(format!(
                            "{} is deeper than {MAX_DEPTH} levels (not looked at)",
                            shown(&path)
                        ));
                    } else {
                        stack.push((path, depth + 1));
                    }
                } else {
                    self.look_at(&path, &meta);
                }
            }
        }
    }

    /// Records `path` (on the device) if it is an unexpected `su` or setuid/setgid executable.
    fn look_at(&mut self, path: &Path, meta: &std::fs::Metadata) {
        let mode = meta.permissions().mode();
        let mut why = Vec::new();
        if path.file_name().is_some_and(|n| n == "su") {
            why.push(if meta.file_type().is_symlink() {
                "named su (symbolic link)"
            } else {
                "named su"
            });
        }
        // The set-id bits only take effect on an executable regular file.
        if meta.is_file() && mode & 0o111 != 0 {
            if mode & 0o4000 != 0 {
                why.push("setuid");
            }
            if mode & 0o2000 != 0 {
                why.push("setgid");
            }
        }
        if why.is_empty() {
            return;
        }
        if self.allowed.iter().any(|a| a == path) {
            self.allowed_seen += 1;
            return;
        }
        self.found.push(format!(
            "{} ({}, mode {:o}, owner {})",
            shown(path),
            why.join(", "),
            mode & 0o7777,
            meta.uid()
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::IntegrityConfig;
    use crate::integrity::testutil::{config, probe, put};

    fn check(c: &IntegrityConfig) -> (Outcome, String) {
        probe(c, setuid)
    }

    fn chmod(root: &Path, rel: &str, mode: u32) {
        std::fs::set_permissions(root.join(rel), std::fs::Permissions::from_mode(mode)).unwrap();
    }

    #[test]
    fn not_configured_is_unknown() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(check(&config(dir.path())).0, Outcome::Unknown);
    }

    #[test]
    fn clean_tree_passes_and_allowlisted_binaries_are_fine() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        put(root, "usr/bin/ls", "elf");
        chmod(root, "usr/bin/ls", 0o755);
        put(root, "usr/bin/passwd", "elf");
        chmod(root, "usr/bin/passwd", 0o4755);
        // Set-id bits on a non-executable file do nothing.
        put(root, "usr/share/doc/x", "text");
        chmod(root, "usr/share/doc/x", 0o4644);
        let mut c = config(root);
        c.setuid_paths = vec!["/usr".into(), "/data".into()];
        c.setuid_allowed = vec!["/usr/bin/passwd".into()];
        let (o, e) = check(&c);
        assert_eq!(o, Outcome::Pass, "{e}");
        assert!(e.contains("1 allowed"), "{e}");
    }

    #[test]
    fn su_and_setuid_binaries_fail_with_their_paths() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        put(root, "data/local/tmp/deep/er/su", "elf");
        chmod(root, "data/local/tmp/deep/er/su", 0o755);
        put(root, "usr/bin/rootshell", "elf");
        chmod(root, "usr/bin/rootshell", 0o2755);
        std::os::unix::fs::symlink("/bin/busybox", root.join("usr/bin/su")).unwrap();
        let mut c = config(root);
        c.setuid_paths = vec!["/usr/bin".into(), "/data".into()];
        let (o, e) = check(&c);
        assert_eq!(o, Outcome::Fail);
        for want in [
            "/data/local/tmp/deep/er/su (named su,",
            "/usr/bin/rootshell (setgid, mode 2755",
            "/usr/bin/su (named su (symbolic link)",
        ] {
            assert!(e.contains(want), "missing {want:?} in {e}");
        }
    }

    #[test]
    fn crafted_file_names_are_escaped_in_the_evidence() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        put(root, "data/evil\u{1b}[2J\nsu", "elf");
        chmod(root, "data/evil\u{1b}[2J\nsu", 0o4755);
        let mut c = config(root);
        c.setuid_paths = vec!["/data".into()];
        let (o, e) = check(&c);
        assert_eq!(o, Outcome::Fail);
        assert!(e.contains("/data/evil\\u{1b}[2J\\nsu (setuid"), "{e}");
        assert!(!e.contains('\u{1b}') && !e.contains('\n'), "{e}");
    }

    #[test]
    fn symlinks_are_not_followed_and_loops_do_not_hang() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let outside = tempfile::tempdir().unwrap();
        put(outside.path(), "evil", "elf");
        chmod(outside.path(), "evil", 0o4755);
        std::fs::create_dir_all(root.join("usr/bin")).unwrap();
        std::os::unix::fs::symlink(outside.path(), root.join("usr/bin/out")).unwrap();
        std::os::unix::fs::symlink("..", root.join("usr/bin/loop")).unwrap();
        let mut c = config(root);
        c.setuid_paths = vec!["/usr".into()];
        assert_eq!(check(&c).0, Outcome::Pass);
        // A configured path that is itself a link is not followed either, and says so.
        std::os::unix::fs::symlink(outside.path(), root.join("bin")).unwrap();
        c.setuid_paths = vec!["/bin".into()];
        let (o, e) = check(&c);
        assert_eq!(o, Outcome::Unknown);
        assert!(e.contains("symbolic link"), "{e}");
    }

    #[test]
    fn a_tree_deeper_than_the_bound_is_unknown_not_trusted() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let deep: String = (0..MAX_DEPTH + 2).map(|_| "d/").collect();
        std::fs::create_dir_all(root.join("data").join(&deep)).unwrap();
        let mut c = config(root);
        c.setuid_paths = vec!["/data".into()];
        let (o, e) = check(&c);
        assert_eq!(o, Outcome::Unknown);
        assert!(e.contains("deeper than"), "{e}");
    }
}
