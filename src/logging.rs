//! Logging: to the journal when systemd started us with its journal on stderr, to stderr
//! otherwise. `RUST_LOG` overrides the configured level.

use tracing_subscriber::EnvFilter;
use tracing_subscriber::prelude::*;

use crate::config::LogLevel;

/// Installs the global subscriber. Call once, early in `main`. `program` is the journal's
/// SYSLOG_IDENTIFIER (`journalctl -t PROGRAM`): the agent's, or ssu-repo's when its receiver
/// runs as a service next to (or instead of) an agent.
pub fn init(program: &str, level: LogLevel) {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(format!("{},zbus=warn", level.as_str())));
    if under_journald()
        && let Ok(journald) = tracing_journald::layer()
    {
        tracing_subscriber::registry()
            .with(filter)
            .with(journald.with_syslog_identifier(program.to_owned()))
            .init();
        return;
    }
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .init();
}

/// systemd sets `JOURNAL_STREAM=dev:inode` for the stream it connected to stderr; comparing
/// it with stderr itself tells a service from a shell that merely inherited the variable.
fn under_journald() -> bool {
    use std::os::unix::fs::MetadataExt;
    let Some(value) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = value.to_str().and_then(|v| v.split_once(':')) else {
        return false;
    };
    let Ok(meta) = std::fs::metadata("/proc/self/fd/2") else {
        return false;
    };
    dev.parse() == Ok(meta.dev()) && ino.parse() == Ok(meta.ino())
}
