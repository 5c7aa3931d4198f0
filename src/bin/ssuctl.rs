//! `ssuctl`: the command-line client of `ssu-agent`, over the system bus.

use std::process::ExitCode;

use std::io::{IsTerminal, Write};
use std::time::Duration;

use clap::{CommandFactory, Parser, Subcommand};
use futures_util::StreamExt;
use jiff::tz::TimeZone;
use ssu_agent::ctl::install::{Outcome, Progress, outcome};
use ssu_agent::ctl::{self, Agent1Proxy, cves, render};

/// Show and control this device's security updates (talks to ssu-agent on the system bus).
#[derive(Parser)]
#[command(version, about, after_help = EXIT_CODES)]
struct Cli {
    /// Print machine-readable JSON instead of text.
    #[arg(long, global = true)]
    json: bool,
    /// How long to wait for each answer of the agent (`30s`, `2m`); default 25s, for
    /// `check` 5m.
    #[arg(long, global = true, value_name = "DURATION")]
    timeout: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Security patch level, installed version, update state, slots.
    Status,
    /// Applied updates and other recorded events, newest first.
    History,
    /// Check for updates now and show the outcome.
    Check,
    /// Install the available security update now, showing progress.
    Install {
        /// Do not ask for confirmation (for scripts; required without a terminal).
        #[arg(long, short)]
        yes: bool,
    },
    /// Postpone automatic installation, e.g. `3d`, `12h`; `off` clears a postponement.
    Postpone {
        /// A duration (`90m`, `12h`, `3d`) or `off`.
        duration: String,
    },
    /// Turn automatic installation of security updates on or off.
    AutoInstall {
        #[arg(value_parser = ["on", "off"])]
        setting: String,
    },
    /// Restart into an installed update now, or at a later time.
    Reboot {
        /// When, as RFC 3339 (`2026-11-28T02:30:00Z`).
        #[arg(long, conflicts_with = "in", value_name = "TIME")]
        at: Option<jiff::Timestamp>,
        /// When, from now (`2h`, `30m`).
        #[arg(long = "in", id = "in", value_name = "DURATION")]
        within: Option<String>,
        /// Withdraw a scheduled reboot.
        #[arg(long, conflicts_with_all = ["at", "in"])]
        cancel: bool,
    },
    /// The vulnerabilities the pending update fixes and the installed ones fixed.
    Cves,
    /// A patch-status report signed with the device identity key, for a hub to verify
    /// (`--json` writes what `ssu-repo verify-report` reads).
    Report {
        /// The hub's nonce, 16 to 64 bytes in hex [default: 32 random bytes].
        #[arg(long, value_name = "HEX")]
        nonce: Option<String>,
        /// Print the device's public key and key id instead.
        #[arg(long, conflicts_with = "nonce")]
        public_key: bool,
    },
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions { shell: clap_complete::Shell },
}

const EXIT_CODES: &str = "Exit codes: 0 success (check: metadata verified); 1 the agent \
refused or failed the request; 2 usage error; 3 the agent is not running, did not answer in \
time, or the system bus is unreachable; 4 check ran but could not verify update metadata.";

/// How long a call waits for the agent's answer, unless `--timeout` says otherwise.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(25);
/// The same for `check`, which answers once the check has run (metadata fetched over a
/// possibly slow link).
const DEFAULT_CHECK_TIMEOUT: Duration = Duration::from_secs(300);

/// A failure with the exit code it maps to.
struct Failure {
    code: u8,
    message: String,
}

fn main() -> ExitCode {
    if ssu_agent::manpage::requested() {
        return ssu_agent::manpage::print(<Cli as clap::CommandFactory>::command(), "ssuctl", "1");
    }
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build();
    let result = match runtime {
        Ok(rt) => rt.block_on(run(&cli)),
        Err(e) => Err(Failure {
            code: 1,
            message: format!("cannot start: {e}"),
        }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            eprintln!("ssuctl: {}", f.message);
            ExitCode::from(f.code)
        }
    }
}

async fn run(cli: &Cli) -> Result<(), Failure> {
    if let Command::Completions { shell } = cli.command {
        // Needs no agent: works at build time (packaging) and without a bus.
        clap_complete::generate(shell, &mut Cli::command(), "ssuctl", &mut std::io::stdout());
        return Ok(());
    }
    let timeout = match &cli.timeout {
        Some(t) => ssu_agent::config::parse_duration(t)
            .ok()
            .filter(|d| d.is_positive())
            .map(|d| d.unsigned_abs())
            .ok_or_else(|| usage(format!("--timeout {t}: expected a duration such as 30s")))?,
        None if matches!(cli.command, Command::Check) => DEFAULT_CHECK_TIMEOUT,
        None => DEFAULT_TIMEOUT,
    };
    let conn = zbus::connection::Builder::system()
        .method_timeout(timeout)
        .build()
        .await
        .map_err(bus_failure)?;
    let agent = Agent1Proxy::new(&conn).await.map_err(call_failure)?;
    let tz = TimeZone::try_system().unwrap_or(TimeZone::UTC);
    match cli.command {
        Command::Status => {
            let st = status(&agent).await?;
            let history = history(&agent).await?;
            print_json_or(cli.json, &st, || render::status(&st, &history, &tz));
        }
        Command::History => {
            let h = history(&agent).await?;
            let j = serde_json::Value::Array(h.clone());
            print_json_or(cli.json, &j, || render::history(&h, &tz));
        }
        Command::Check => {
            // Returns once the check has run.
            agent.check_now().await.map_err(call_failure)?;
            let st = status(&agent).await?;
            print_json_or(cli.json, &st, || render::check(&st, &tz));
            if st["LastCheckVerified"] != true {
                return Err(Failure {
                    code: 4,
                    message: "the check could not verify update metadata: this device cannot \
                              tell whether it is up to date\n\
                              hint: the result above says why; journalctl -u ssu-agent says more"
                        .to_owned(),
                });
            }
        }
        Command::Install { yes } => install(&conn, &agent, yes, cli.json).await?,
        Command::Postpone { ref duration } => {
            let seconds = match duration.as_str() {
                "off" | "0" => 0,
                d => ssu_agent::config::parse_duration(d)
                    .map_err(|e| usage(format!("{e}\nhint: e.g. ssuctl postpone 3d")))?
                    .as_secs()
                    .max(1) as u64,
            };
            agent.postpone(seconds).await.map_err(call_failure)?;
            let st = status(&agent).await?;
            print_json_or(cli.json, &st, || {
                match render::long_time(st["PostponedUntil"].as_u64().unwrap_or(0), &tz) {
                    Some(t) => format!("Automatic installation postponed until {t}.\n"),
                    None => "Automatic installation is not postponed.\n".to_owned(),
                }
            });
        }
        Command::AutoInstall { ref setting } => {
            agent
                .set_auto_install(setting == "on")
                .await
                .map_err(call_failure)?;
            let st = status(&agent).await?;
            print_json_or(cli.json, &st, || {
                format!("Automatic installation of security updates is {setting}.\n")
            });
        }
        Command::Reboot {
            at,
            ref within,
            cancel,
        } => {
            let when = match (at, within) {
                (Some(t), _) => Some(t),
                (None, Some(d)) => {
                    let d = ssu_agent::config::parse_duration(d).map_err(usage)?;
                    Some(jiff::Timestamp::now() + d)
                }
                (None, None) => None,
            };
            let text = if cancel {
                agent.schedule_reboot(0).await.map_err(call_failure)?;
                "Scheduled reboot withdrawn.\n".to_owned()
            } else if let Some(t) = when {
                let secs = t.as_second().max(1) as u64;
                agent.schedule_reboot(secs).await.map_err(call_failure)?;
                format!(
                    "Reboot scheduled for {} (it waits while an inhibitor is held).\n",
                    render::long_time(secs, &tz).unwrap_or_default()
                )
            } else {
                agent.reboot().await.map_err(call_failure)?;
                "Rebooting into the installed update (unless an inhibitor holds it).\n".to_owned()
            };
            let st = status(&agent).await?;
            print_json_or(cli.json, &st, || text);
        }
        Command::Cves => {
            let st = status(&agent).await?;
            let h = history(&agent).await?;
            let c = cves::collect(&st, &h);
            print_json_or(cli.json, &c, || cves::render(&c, &tz));
        }
        Command::Report {
            ref nonce,
            public_key,
        } => report(&agent, nonce.as_deref(), public_key, cli.json).await?,
        Command::Completions { .. } => {}
    }
    Ok(())
}

fn usage(message: String) -> Failure {
    Failure { code: 2, message }
}

fn bus_failure(e: zbus::Error) -> Failure {
    Failure {
        code: 3,
        message: format!(
            "cannot connect to the system bus: {e}\n\
             hint: is dbus running? DBUS_SYSTEM_BUS_ADDRESS selects another bus."
        ),
    }
}

/// `ssuctl install`: confirm, ask the agent, follow its signals until installed or failed.
async fn install(
    conn: &zbus::Connection,
    agent: &Agent1Proxy<'_>,
    yes: bool,
    json: bool,
) -> Result<(), Failure> {
    let st = status(agent).await?;
    let offer = st
        .get("Available")
        .filter(|a| a.get("version").is_some())
        .cloned();
    let Some(offer) = offer else {
        return Err(Failure {
            code: 1,
            message: "no verified security update is available\n\
                      hint: ssuctl check looks for one; ssuctl status shows the state"
                .to_owned(),
        });
    };
    let version = offer["version"].as_str().unwrap_or("").to_owned();
    if !yes {
        if !std::io::stdin().is_terminal() {
            return Err(usage(
                "ssuctl install asks for confirmation, and there is no terminal to ask on\n\
                 hint: pass --yes to install without asking (for scripts)"
                    .to_owned(),
            ));
        }
        let cves = offer["cves"].as_array().map_or(0, Vec::len);
        // Taking a deferred update now costs the user: say what before asking.
        if let Some(why) = offer["deferred"].as_str().filter(|s| !s.is_empty()) {
            println!("Deferred: {why}");
        }
        print!(
            "Install security update {version} (patch level {}, fixes {cves} CVE{})? \
             It needs a restart afterwards. [y/N] ",
            offer["security_patch_level"].as_str().unwrap_or(""),
            if cves == 1 { "" } else { "s" },
        );
        let _ = std::io::stdout().flush();
        let mut answer = String::new();
        let _ = std::io::stdin().read_line(&mut answer);
        if !matches!(answer.trim(), "y" | "Y" | "yes" | "Yes") {
            return Err(Failure {
                code: 1,
                message: "not installed (cancelled)".to_owned(),
            });
        }
    }
    // Subscribed before asking, so no change is missed.
    let props = zbus::fdo::PropertiesProxy::builder(conn)
        .destination(ctl::BUS_NAME)
        .path(ctl::OBJECT_PATH)
        .build()
        .await
        .map_err(call_failure)?;
    let mut changes = props
        .receive_properties_changed()
        .await
        .map_err(call_failure)?;
    agent.install().await.map_err(call_failure)?;
    let st = status(agent).await?;
    let mut state = st["State"].as_str().unwrap_or("").to_owned();
    let mut pct = st["Progress"].as_u64().unwrap_or(0) as u32;
    let mut view = Progress::new(std::io::stdout().is_terminal() && !json);
    let emit = |text: String| {
        if !json && !text.is_empty() {
            print!("{text}");
            let _ = std::io::stdout().flush();
        }
    };
    emit(view.update(&state, pct));
    while outcome(&state) == Outcome::Running {
        match tokio::time::timeout(Duration::from_secs(5), changes.next()).await {
            Ok(Some(signal)) => {
                let Ok(args) = signal.args() else { continue };
                for (name, value) in args.changed_properties() {
                    match *name {
                        "State" => {
                            if let Ok(s) = <&str>::try_from(value) {
                                state = s.to_owned();
                            }
                        }
                        "Progress" => {
                            if let Ok(p) = u32::try_from(value) {
                                pct = p;
                            }
                        }
                        _ => {}
                    }
                }
            }
            Ok(None) => {
                return Err(Failure {
                    code: 3,
                    message: "the agent went away during the installation\n\
                              hint: ssuctl status shows where it stands"
                        .to_owned(),
                });
            }
            // No signal for a while: read the state, so a missed signal cannot hang us.
            Err(_) => {
                let st = status(agent).await?;
                state = st["State"].as_str().unwrap_or("").to_owned();
                pct = st["Progress"].as_u64().unwrap_or(0) as u32;
            }
        }
        emit(view.update(&state, pct));
    }
    let st = status(agent).await?;
    let detail = st["LastError"].as_str().unwrap_or("").to_owned();
    let end = outcome(&state);
    emit(view.finish(end, &version, &detail));
    if json {
        println!("{st:#}");
    }
    if end == Outcome::Failed {
        return Err(Failure {
            code: 1,
            message: format!(
                "the update was not installed: {detail}\nhint: ssuctl history and \
                 journalctl -u ssu-agent say more"
            ),
        });
    }
    Ok(())
}

/// `ssuctl report`: a signed report, or the public key to check reports with.
async fn report(
    agent: &Agent1Proxy<'_>,
    nonce: Option<&str>,
    public_key: bool,
    json: bool,
) -> Result<(), Failure> {
    use ssu_agent::ctl::report as r;
    if public_key {
        let (alg, key, id) = agent.get_public_key().await.map_err(call_failure)?;
        print_json_or(json, &r::public_key_json(&alg, &key, &id), || {
            r::public_key_line(&alg, &key, &id)
        });
        return Ok(());
    }
    let nonce = match nonce {
        Some(hex) => r::parse_nonce(hex).map_err(usage)?,
        None => r::random_nonce().map_err(|message| Failure { code: 1, message })?,
    };
    let (report, signature, key_id) = agent.get_report(&nonce).await.map_err(call_failure)?;
    let env = r::envelope(report, &signature, key_id);
    if json {
        // The report stays a string: its bytes are what was signed.
        let j = serde_json::to_value(&env).unwrap_or_default();
        println!("{j:#}");
    } else {
        print!("{}", r::render(&env));
    }
    Ok(())
}

/// `GetStatus` as JSON.
async fn status(agent: &Agent1Proxy<'_>) -> Result<serde_json::Value, Failure> {
    let dict = agent.get_status().await.map_err(call_failure)?;
    Ok(ctl::dict_to_json(&dict))
}

/// `GetHistory` as JSON, newest first.
async fn history(agent: &Agent1Proxy<'_>) -> Result<Vec<serde_json::Value>, Failure> {
    let entries = agent.get_history().await.map_err(call_failure)?;
    Ok(entries.iter().map(ctl::dict_to_json).collect())
}

fn print_json_or(json: bool, value: &serde_json::Value, text: impl FnOnce() -> String) {
    if json {
        println!("{value:#}");
    } else {
        print!("{}", text());
    }
}

/// Maps a failed call to a message that says what to do next.
fn call_failure(e: zbus::Error) -> Failure {
    let name = match &e {
        zbus::Error::MethodError(name, _, _) => name.as_str().to_owned(),
        // Standard errors (ServiceUnknown, InvalidArgs, ...) arrive converted to fdo::Error.
        zbus::Error::FDO(fdo) => zbus::DBusError::name(fdo.as_ref()).to_string(),
        _ => String::new(),
    };
    if let zbus::Error::InputOutput(io) = &e
        && io.kind() == std::io::ErrorKind::TimedOut
    {
        return Failure {
            code: 3,
            message: "ssu-agent did not answer in time\n\
                      hint: --timeout waits longer; journalctl -u ssu-agent shows what it does"
                .to_owned(),
        };
    }
    if name.ends_with(".ServiceUnknown") || name.ends_with(".NameHasNoOwner") {
        return Failure {
            code: 3,
            message: "ssu-agent is not running (nobody owns org.ssu.Agent1 on the system bus)\n\
                      hint: systemctl start ssu-agent; journalctl -u ssu-agent shows why it stopped"
                .to_owned(),
        };
    }
    let mut detail = match &e {
        zbus::Error::MethodError(name, Some(msg), _) => format!("{msg} ({name})"),
        other => other.to_string(),
    };
    if let Some(hint) = hint_for(&name) {
        detail.push_str("\nhint: ");
        detail.push_str(hint);
    }
    Failure {
        code: 1,
        message: detail,
    }
}

/// What to do next after an agent error.
fn hint_for(error_name: &str) -> Option<&'static str> {
    Some(match error_name.rsplit('.').next()? {
        "NotAuthorized" => {
            "run as root or ask your administrator (polkit actions org.ssu.agent.*, or \
             [authorization] allow_users/allow_groups in agent.toml)"
        }
        "NothingToInstall" => "ssuctl check looks for updates; ssuctl status shows the state",
        "Busy" => "another operation is running; try again when ssuctl status shows it ended",
        "PolicyRefused" => "the message names the limit; ask for less",
        "InvalidArgs" => "a report nonce is 16 to 64 bytes: 32 to 128 hex digits",
        "Unavailable" => "the agent is shutting down or misses a part; see journalctl -u ssu-agent",
        "Storage" => {
            "the device's disk, not the update: free space there (df -h on the path named), \
             then ssuctl check again"
        }
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_command_line_definition_is_consistent() {
        use clap::CommandFactory;
        super::Cli::command().debug_assert();
    }
}
