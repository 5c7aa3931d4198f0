//! `ssuctl install`: what it prints while the agent downloads, verifies and installs.
//!
//! [`Progress`] turns the agent's `State`/`Progress` changes into output: on a terminal one
//! redrawn bar, otherwise one plain line per state and per 10 % step, so a log stays short
//! and readable. Pure: the caller feeds it what the signals said and writes what it returns.

/// Width of the bar in cells.
const BAR: usize = 30;

/// How an install attempt ended, from the states the agent went through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Still running.
    Running,
    /// Installed; a reboot applies it.
    Installed,
    /// failed / rolled-back.
    Failed,
}

/// The outcome a state means.
pub fn outcome(state: &str) -> Outcome {
    match state {
        "reboot-required" => Outcome::Installed,
        "failed" | "rolled-back" => Outcome::Failed,
        _ => Outcome::Running,
    }
}

/// The output state of one `ssuctl install`.
#[derive(Debug)]
pub struct Progress {
    tty: bool,
    state: String,
    pct: u32,
    /// A bar is drawn on the current line (a newline must end it before other text).
    open_line: bool,
}

impl Progress {
    pub fn new(tty: bool) -> Progress {
        Progress {
            tty,
            state: String::new(),
            pct: u32::MAX,
            open_line: false,
        }
    }

    /// What to print for the agent's current `state` and `progress` (possibly nothing).
    pub fn update(&mut self, state: &str, progress: u32) -> String {
        let progress = progress.min(100);
        let changed_state = state != self.state;
        let step = |p: u32| if p == u32::MAX { None } else { Some(p / 10) };
        let changed_step = step(progress) != step(self.pct);
        let changed_pct = progress != self.pct;
        let mut out = String::new();
        if self.tty {
            if changed_state || changed_pct {
                if changed_state && self.open_line {
                    out.push('\n');
                }
                let filled = (progress as usize * BAR) / 100;
                out.push_str(&format!(
                    "\r{:<16}[{}{}] {:>3}%",
                    label(state),
                    "#".repeat(filled),
                    ".".repeat(BAR - filled),
                    progress
                ));
                self.open_line = true;
            }
        } else if changed_state || (changed_step && running_with_progress(state)) {
            out.push_str(&format!("{}: {progress}%\n", label(state)));
        }
        self.state = state.to_owned();
        self.pct = progress;
        out
    }

    /// The last words: ends an open bar line, then says how it ended and what comes next.
    pub fn finish(&mut self, outcome: Outcome, version: &str, detail: &str) -> String {
        let mut out = String::new();
        if self.open_line {
            out.push('\n');
            self.open_line = false;
        }
        match outcome {
            Outcome::Installed => out.push_str(&format!(
                "Installed {version}. Restart to apply it: ssuctl reboot (or ssuctl reboot --at TIME)\n"
            )),
            Outcome::Failed => out.push_str(&format!("Installation failed: {detail}\n")),
            Outcome::Running => {}
        }
        out
    }
}

fn running_with_progress(state: &str) -> bool {
    matches!(state, "downloading" | "installing")
}

fn label(state: &str) -> &str {
    match state {
        "downloading" => "Downloading",
        "verifying" => "Verifying",
        "installing" => "Installing",
        "deferred" => "Waiting (held)",
        "reboot-required" => "Installed",
        "available" => "Starting",
        "checking" => "Checking",
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_lines_per_state_and_ten_percent_step() {
        let mut p = Progress::new(false);
        let mut out = String::new();
        for (s, pct) in [
            ("available", 0),
            ("downloading", 0),
            ("downloading", 3),
            ("downloading", 9),
            ("downloading", 10),
            ("downloading", 55),
            ("downloading", 100),
            ("installing", 0),
            ("installing", 100),
            ("reboot-required", 100),
        ] {
            out.push_str(&p.update(s, pct));
        }
        out.push_str(&p.finish(Outcome::Installed, "1.0.1", ""));
        assert_eq!(
            out,
            "Starting: 0%\nDownloading: 0%\nDownloading: 10%\nDownloading: 55%\n\
             Downloading: 100%\nInstalling: 0%\nInstalling: 100%\nInstalled: 100%\n\
             Installed 1.0.1. Restart to apply it: ssuctl reboot (or ssuctl reboot --at TIME)\n"
        );
        assert!(!out.contains('\r'));
    }

    #[test]
    fn a_terminal_gets_one_redrawn_bar_per_state() {
        let mut p = Progress::new(true);
        let a = p.update("downloading", 50);
        assert_eq!(
            a,
            format!(
                "\rDownloading     [{}{}]  50%",
                "#".repeat(15),
                ".".repeat(15)
            )
        );
        assert_eq!(p.update("downloading", 50), "");
        let b = p.update("installing", 200);
        assert!(b.starts_with("\n\rInstalling      [#####"), "{b:?}");
        assert!(b.ends_with("100%"), "{b:?}");
        let end = p.finish(Outcome::Failed, "1.0.1", "RAUC said no");
        assert_eq!(end, "\nInstallation failed: RAUC said no\n");
    }

    #[test]
    fn outcomes() {
        assert_eq!(outcome("reboot-required"), Outcome::Installed);
        assert_eq!(outcome("rolled-back"), Outcome::Failed);
        assert_eq!(outcome("failed"), Outcome::Failed);
        for s in ["downloading", "deferred", "", "\u{0}garbage"] {
            assert_eq!(outcome(s), Outcome::Running);
        }
    }
}
