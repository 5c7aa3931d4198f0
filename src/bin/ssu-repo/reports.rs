//! `ssu-repo`'s commands for devices' signed patch-status reports: check one
//! (`verify-report`), enrol devices and store their reports (`enroll-device`,
//! `accept-report`), receive them over HTTP (`serve-reports`) and show the fleet (`fleet`).
//! The work is done by `ssu_agent::report` and `ssu_agent::repo::fleet`.

use std::path::PathBuf;

use clap::Args;
use jiff::Timestamp;
use ssu_agent::repo::fleet;

#[derive(Args)]
pub struct ServeReportsArgs {
    /// The report store (as for accept-report; created if missing).
    dir: PathBuf,
    /// Address to listen on, e.g. 127.0.0.1:8443 (port 0: any free port). The address
    /// bound is printed as `listening on http://ADDR/`.
    #[arg(long, value_name = "ADDR")]
    listen: std::net::SocketAddr,
    /// Enrol an unknown device from the public key its first report carries (trust on
    /// first use, for trying it out).
    #[arg(long)]
    allow_unknown: bool,
}

#[derive(Args)]
pub struct FleetArgs {
    /// The report store.
    dir: PathBuf,
    /// Where index.html goes (created if missing) [default: DIR].
    #[arg(long, value_name = "OUT_DIR")]
    out: Option<PathBuf>,
    /// RFC 3339 time shown on the page and ages are measured to [default: now].
    #[arg(long)]
    generated_at: Option<Timestamp>,
    /// Mark a device silent when its newest report is older than this (d, h, m, s).
    #[arg(long, default_value = "2d")]
    silent_after: String,
}

#[derive(Args)]
pub struct EnrollDeviceArgs {
    /// The report store (created if missing).
    dir: PathBuf,
    /// The device's public key: 64 hex digits, or a file holding what `ssuctl report
    /// --public-key` (or `--json`) prints.
    #[arg(long, value_name = "PUB")]
    device_key: String,
}

#[derive(Args)]
pub struct AcceptReportArgs {
    /// The report store.
    dir: PathBuf,
    /// The report as `ssuctl report --json` wrote it.
    report: PathBuf,
    /// Enrol an unknown device from the public key its report carries (trust on first use).
    #[arg(long)]
    allow_unknown: bool,
}

#[derive(Args)]
pub struct VerifyReportArgs {
    /// The device's public key: 64 hex digits, or a file holding what `ssuctl report
    /// --public-key` (or `--json`) prints.
    #[arg(long, value_name = "PUB")]
    device_key: String,
    /// The nonce the hub passed to the device (hex); a report with another nonce is refused.
    #[arg(long, value_name = "HEX", required_unless_present = "any_nonce")]
    nonce: Option<String>,
    /// Accept any nonce (the report may then be a replay).
    #[arg(long, conflicts_with = "nonce")]
    any_nonce: bool,
    /// Refuse a report whose counter is below N.
    #[arg(long, value_name = "N", conflicts_with = "state")]
    min_counter: Option<u64>,
    /// A file remembering the highest counter accepted per device key: a report must be
    /// above it, and an accepted report raises it (created if missing).
    #[arg(long, value_name = "FILE")]
    state: Option<PathBuf>,
    /// The report as `ssuctl report --json` wrote it.
    report: PathBuf,
}

pub async fn serve_reports(a: ServeReportsArgs) -> Result<(), String> {
    use ssu_agent::report::serve;
    ssu_agent::logging::init("ssu-repo", ssu_agent::config::LogLevel::Info);
    std::fs::create_dir_all(&a.dir).map_err(|e| format!("{}: {e}", a.dir.display()))?;
    let listener = tokio::net::TcpListener::bind(a.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", a.listen))?;
    let bound = listener.local_addr().map_err(|e| e.to_string())?;
    // The line a script (or a test) waits for.
    println!("listening on http://{bound}/");
    let mut opts = serve::ServeOptions::new(a.dir);
    opts.allow_unknown = a.allow_unknown;
    let shutdown = async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate());
        match &mut term {
            Ok(t) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = t.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    };
    serve::run(listener, opts, shutdown).await;
    Ok(())
}

pub fn verify_report(a: VerifyReportArgs) -> Result<(), String> {
    use ssu_agent::report::verify;
    let key = verify::parse_public_key(&a.device_key)?;
    let nonce = a
        .nonce
        .as_deref()
        .map(|n| hex::decode(n.trim()).map_err(|e| format!("--nonce {n:?}: not hex ({e})")))
        .transpose()?;
    // Bounded: a report is a few KiB; a huge file is not one.
    let bytes = read_bounded(&a.report, 1024 * 1024)?;
    let mut state = a
        .state
        .as_deref()
        .map(verify::CounterState::load)
        .transpose()?;
    let key_id = ssu_agent::report::key::key_id(&key);
    let expect = verify::Expect {
        nonce,
        min_counter: a
            .min_counter
            .or_else(|| state.as_ref().map(|s| s.min_counter(&key_id).unwrap_or(0))),
    };
    let verified = verify::verify(&bytes, &key, &expect)
        .map_err(|e| format!("{}: REFUSED: {e}", a.report.display()))?;
    if let Some(state) = &mut state {
        state.accept(&verified.key_id, verified.counter)?;
    }
    print!("{}", verify::describe(&verified, &expect));
    Ok(())
}

pub fn read_bounded(path: &std::path::Path, limit: u64) -> Result<Vec<u8>, String> {
    use std::io::Read;
    let file = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut bytes = Vec::new();
    file.take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if bytes.len() as u64 > limit {
        return Err(format!("{}: larger than {limit} bytes", path.display()));
    }
    Ok(bytes)
}

pub fn enroll_device(a: EnrollDeviceArgs) -> Result<(), String> {
    let key = ssu_agent::report::verify::parse_public_key(&a.device_key)?;
    let done = fleet::enroll(&a.dir, &key).map_err(|e| e.to_string())?;
    println!("{done}");
    Ok(())
}

pub fn fleet_page(a: FleetArgs, now: Timestamp) -> Result<(), String> {
    let silent = ssu_agent::config::parse_duration(&a.silent_after)
        .map_err(|e| format!("--silent-after: {e}"))?;
    let opts = fleet::Options {
        generated_at: a.generated_at.unwrap_or(now),
        silent_after: silent,
    };
    let out = a.out.as_deref().unwrap_or(&a.dir);
    let written = fleet::fleet(&a.dir, out, &opts).map_err(|e| e.to_string())?;
    println!("{written}");
    Ok(())
}

pub fn accept_report(a: AcceptReportArgs, now: Timestamp) -> Result<(), String> {
    let bytes = read_bounded(&a.report, fleet::MAX_ENVELOPE as u64)?;
    let done = fleet::accept(&a.dir, &bytes, a.allow_unknown, now)
        .map_err(|e| format!("{}: REFUSED: {e}", a.report.display()))?;
    println!("{done}");
    Ok(())
}
