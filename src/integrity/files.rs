//! Bounded reads and the parsers the probes share (`/proc/1/mounts`, `/proc/cmdline`).

use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Limit for one-value files (`tainted`, an EFI variable, a device-tree property, a lock
/// variable): real ones are a few bytes.
pub const SMALL: u64 = 4096;
/// Limit for `/proc/cmdline` (COMMAND_LINE_SIZE is at most a few KiB on every architecture).
pub const CMDLINE: u64 = 64 * 1024;
/// Limit for `/proc/1/mounts`: hosts with many containers have long tables.
pub const MOUNTS: u64 = 1024 * 1024;

/// Why a file could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReadError {
    #[error("{} does not exist", .0.display())]
    Missing(PathBuf),
    #[error("{} is larger than {limit} bytes", path.display())]
    TooLarge { path: PathBuf, limit: u64 },
    #[error("{} is not a regular file", .0.display())]
    NotAFile(PathBuf),
    #[error("cannot read {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The contents of `path`, at most `limit` bytes. Symlinks are followed (`/proc/self` is
/// one); anything but a regular file is refused, and the open does not block, so a FIFO
/// planted in a fixture cannot hang the probe.
pub fn read(path: &Path, limit: u64) -> Result<Vec<u8>, ReadError> {
    let io = |source: std::io::Error| ReadError::Io {
        path: path.to_owned(),
        source,
    };
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(ReadError::Missing(path.to_owned()));
        }
        Err(e) => return Err(io(e)),
    };
    if !meta.is_file() {
        return Err(ReadError::NotAFile(path.to_owned()));
    }
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(rustix::fs::OFlags::NONBLOCK.bits() as i32)
        .open(path)
        .map_err(io)?;
    let mut bytes = Vec::new();
    file.take(limit + 1).read_to_end(&mut bytes).map_err(io)?;
    if bytes.len() as u64 > limit {
        return Err(ReadError::TooLarge {
            path: path.to_owned(),
            limit,
        });
    }
    Ok(bytes)
}

/// Bytes shown in evidence: escaped, and cut after 64 characters so a hostile file cannot
/// flood D-Bus or the history.
pub fn shown(bytes: &[u8]) -> String {
    const MAX: usize = 64;
    let text = String::from_utf8_lossy(bytes);
    let cut: String = text.chars().take(MAX).collect();
    if text.chars().count() > MAX {
        format!("{cut:?}…")
    } else {
        format!("{cut:?}")
    }
}

/// Text from the device (a file name, a mount's device) as evidence shows it: control
/// characters escaped, so a crafted name cannot drive the terminal of whoever runs `ssuctl`,
/// and at most 128 characters.
pub fn clean(s: &str) -> String {
    const MAX: usize = 128;
    let mut out = String::new();
    for c in s.chars().take(MAX) {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    if s.chars().nth(MAX).is_some() {
        out.push('…');
    }
    out
}

/// One line of `/proc/1/mounts`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    pub device: String,
    pub fstype: String,
    pub options: Vec<String>,
}

/// The mount of `/` that is in effect: the last line whose mount point is `/` (later mounts
/// cover earlier ones, e.g. an initramfs root under the real one). `None` when there is none.
pub fn root_mount(mounts: &[u8]) -> Option<Mount> {
    String::from_utf8_lossy(mounts)
        .lines()
        .rev()
        .find_map(|line| {
            let mut f = line.split_ascii_whitespace();
            let device = unescape(f.next()?);
            let point = unescape(f.next()?);
            let fstype = unescape(f.next()?);
            let options = f.next()?.split(',').map(str::to_owned).collect();
            (point == "/").then_some(Mount {
                device,
                fstype,
                options,
            })
        })
}

/// Undoes the kernel's octal escapes in mount fields (`\040` for a space).
fn unescape(field: &str) -> String {
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|d| (b'0'..=b'7').contains(d))
        {
            let v = u32::from(b[i + 1] - b'0') * 64
                + u32::from(b[i + 2] - b'0') * 8
                + u32::from(b[i + 3] - b'0');
            // Three octal digits can exceed a byte; the kernel only writes bytes.
            out.push(v as u8);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Kernel command line parameters as `(key, value)`, the way the kernel splits them: on
/// whitespace outside double quotes, quotes removed, stopping at `--` (the rest is init's).
pub fn cmdline_params(cmdline: &[u8]) -> Vec<(String, Option<String>)> {
    let text = String::from_utf8_lossy(cmdline);
    let mut params = Vec::new();
    let mut current = String::new();
    let mut quoted = false;
    let push = |token: &mut String, params: &mut Vec<(String, Option<String>)>| {
        if !token.is_empty() {
            let t = std::mem::take(token);
            params.push(match t.split_once('=') {
                Some((k, v)) => (k.to_owned(), Some(v.to_owned())),
                None => (t, None),
            });
        }
    };
    for ch in text.chars() {
        match ch {
            '"' => quoted = !quoted,
            c if c.is_whitespace() && !quoted => {
                if current == "--" {
                    return params;
                }
                push(&mut current, &mut params);
            }
            c => current.push(c),
        }
    }
    if current != "--" {
        push(&mut current, &mut params);
    }
    params
}

/// The value of the last `key=` on the command line (the kernel lets later ones win).
pub fn cmdline_value<'a>(params: &'a [(String, Option<String>)], key: &str) -> Option<&'a str> {
    params
        .iter()
        .rev()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_deref().unwrap_or(""))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::integrity::testutil::put;

    #[test]
    fn reads_are_bounded_and_refuse_non_files() {
        let dir = tempfile::tempdir().unwrap();
        put(dir.path(), "small", "42\n");
        assert_eq!(read(&dir.path().join("small"), 8).unwrap(), b"42\n");
        put(dir.path(), "huge", vec![b'1'; 10_000]);
        assert!(matches!(
            read(&dir.path().join("huge"), SMALL),
            Err(ReadError::TooLarge { .. })
        ));
        assert!(matches!(
            read(&dir.path().join("nope"), SMALL),
            Err(ReadError::Missing(_))
        ));
        assert!(matches!(
            read(dir.path(), SMALL),
            Err(ReadError::NotAFile(_))
        ));
        // A FIFO would block a plain open/read forever.
        let fifo = dir.path().join("fifo");
        rustix::fs::mknodat(
            rustix::fs::CWD,
            &fifo,
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
        assert!(matches!(read(&fifo, SMALL), Err(ReadError::NotAFile(_))));
    }

    #[test]
    fn evidence_is_escaped_and_cut() {
        assert_eq!(shown(b"ok"), "\"ok\"");
        assert_eq!(shown(b"a\nb\x00"), "\"a\\nb\\0\"");
        let long = shown(&[b'x'; 1000]);
        assert!(long.len() < 80 && long.ends_with('…'), "{long}");
    }

    #[test]
    fn device_text_cannot_drive_a_terminal() {
        assert_eq!(clean("/dev/vda"), "/dev/vda");
        assert_eq!(clean("a\u{1b}[2Jb\n"), "a\\u{1b}[2Jb\\n");
        assert_eq!(clean(&"x".repeat(500)).chars().count(), 129);
    }

    #[test]
    fn the_last_root_mount_wins_and_escapes_are_undone() {
        let text = b"rootfs / rootfs rw 0 0\n\
            proc /proc proc rw 0 0\n\
            /dev/root / squashfs ro,relatime 0 0\n\
            /dev/my\\040disk /mnt ext4 rw 0 0\n";
        let m = root_mount(text).unwrap();
        assert_eq!(m.device, "/dev/root");
        assert_eq!(m.fstype, "squashfs");
        assert_eq!(m.options, ["ro", "relatime"]);
        assert_eq!(unescape("/dev/my\\040disk"), "/dev/my disk");
        assert_eq!(unescape("trailing\\04"), "trailing\\04");
        assert_eq!(unescape("\\"), "\\");
        assert!(root_mount(b"proc /proc proc rw 0 0\n").is_none());
        assert!(root_mount(b"garbage\n\xff\xfe / \n/ /\n").is_none());
        assert!(root_mount(&[0u8; 100]).is_none());
    }

    #[test]
    fn cmdline_is_split_like_the_kernel_does() {
        let p = cmdline_params(
            b"console=ttyS0 ro dm-mod.create=\"vroot,,,ro,0 8 verity 1 a b\" root=/dev/dm-0 -- single x=y\n",
        );
        assert_eq!(cmdline_value(&p, "console"), Some("ttyS0"));
        assert_eq!(cmdline_value(&p, "ro"), Some(""));
        assert_eq!(
            cmdline_value(&p, "dm-mod.create"),
            Some("vroot,,,ro,0 8 verity 1 a b")
        );
        assert_eq!(cmdline_value(&p, "root"), Some("/dev/dm-0"));
        assert_eq!(cmdline_value(&p, "x"), None, "after -- belongs to init");
        let p = cmdline_params(b"a=1 a=2 \"unterminated");
        assert_eq!(cmdline_value(&p, "a"), Some("2"));
        assert!(cmdline_params(b"").is_empty());
        assert!(cmdline_params(&[0xff, 0xfe]).len() == 1);
    }
}
