//! `ssuctl`: the command-line client of `ssu-agent`, over the system bus.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use jiff::tz::TimeZone;
use ssu_agent::ctl::{self, Agent1Proxy, render};

/// Show and control this device's security updates (talks to ssu-agent on the system bus).
#[derive(Parser)]
#[command(version, about, after_help = EXIT_CODES)]
struct Cli {
    /// Print machine-readable JSON instead of text.
    #[arg(long, global = true)]
    json: bool,
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
}

const EXIT_CODES: &str = "Exit codes: 0 success; 1 the agent refused or failed the request; \
2 usage error; 3 the agent is not running or the system bus is unreachable.";

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
    let conn = zbus::Connection::system().await.map_err(|e| Failure {
        code: 3,
        message: format!(
            "cannot connect to the system bus: {e}\n\
             hint: is dbus running? DBUS_SYSTEM_BUS_ADDRESS selects another bus."
        ),
    })?;
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
        }
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
        zbus::Error::FDO(fdo) => match fdo.as_ref() {
            zbus::fdo::Error::ServiceUnknown(_) => {
                "org.freedesktop.DBus.Error.ServiceUnknown".into()
            }
            zbus::fdo::Error::NameHasNoOwner(_) => {
                "org.freedesktop.DBus.Error.NameHasNoOwner".into()
            }
            _ => String::new(),
        },
        _ => String::new(),
    };
    if name.ends_with(".ServiceUnknown") || name.ends_with(".NameHasNoOwner") {
        return Failure {
            code: 3,
            message: "ssu-agent is not running (nobody owns org.ssu.Agent1 on the system bus)\n\
                      hint: systemctl start ssu-agent; journalctl -u ssu-agent shows why it stopped"
                .to_owned(),
        };
    }
    let detail = match &e {
        zbus::Error::MethodError(name, Some(msg), _) => format!("{msg} ({name})"),
        other => other.to_string(),
    };
    Failure {
        code: 1,
        message: detail,
    }
}
