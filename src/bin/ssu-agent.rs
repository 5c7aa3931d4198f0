//! `ssu-agent`: the daemon. See the library docs for how it is put together.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use ssu_agent::{config, daemon, logging};

/// Keeps this device's software security updates current (GSMA FS.25).
#[derive(Parser)]
#[command(version, about)]
struct Args {
    /// Main configuration file; drop-ins are read from `agent.d/` beside it.
    #[arg(long, value_name = "PATH", default_value = config::DEFAULT_CONFIG_PATH)]
    config: PathBuf,
    /// Validate the configuration, print the files read, and exit.
    #[arg(long)]
    check_config: bool,
}

/// Exit codes: 0 clean exit, 1 runtime failure, 2 invalid configuration or usage.
pub fn main() -> ExitCode {
    ssu_agent::memory::tune_allocator();
    if ssu_agent::manpage::requested() {
        return ssu_agent::manpage::print(
            <Args as clap::CommandFactory>::command(),
            "ssu-agent",
            "8",
        );
    }
    let args = Args::parse();
    let loaded = match config::load(&args.config) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("ssu-agent: invalid configuration: {e}");
            return ExitCode::from(2);
        }
    };
    if args.check_config {
        for f in &loaded.files {
            println!("{}", f.display());
        }
        println!("configuration OK");
        return ExitCode::SUCCESS;
    }
    logging::init("ssu-agent", loaded.config.agent.log_level);
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!("cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        // Handlers first: a SIGTERM that arrives while the agent is still starting must stop
        // it cleanly, not kill it with the default action.
        let shutdown = shutdown_signal();
        daemon::run(loaded.config, shutdown).await
    });
    match result {
        Ok(()) => {
            tracing::info!("stopped");
            ExitCode::SUCCESS
        }
        Err(e) => {
            tracing::error!("{e}");
            ExitCode::FAILURE
        }
    }
}

/// Installs the SIGTERM (systemd stop) and SIGINT (Ctrl-C) handlers now and returns a
/// future that completes on either.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{SignalKind, signal};
    let handlers = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    );
    async move {
        let (Ok(mut term), Ok(mut int)) = handlers else {
            tracing::error!("cannot install signal handlers; stop with SIGKILL");
            return std::future::pending().await;
        };
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: stopping"),
            _ = int.recv() => tracing::info!("SIGINT: stopping"),
        }
    }
}
