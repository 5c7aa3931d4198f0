//! Benchmarks of the release agent on the sandbox device.
//!
//! `scripts/bench` builds the release binaries, copies them aside, starts the sandbox
//! (`scripts/sandbox up DIR --no-agent`: private bus, `rauc service`, ModemManager mock) and
//! runs this with
//!
//! ```text
//! cargo bench --bench agent -- --sandbox DIR --bin-dir DIR/bin
//! ```
//!
//! Foundation (issue 2): exec → `org.ssu.Agent1` owned, idle VmRSS / Private_Dirty, voluntary
//! context switches while idle, `GetStatus` latency against `Peer.Ping` on the same
//! connection, binary sizes. Update (issue 3): bytes one check costs when nothing changed,
//! from nginx's access log. Every figure is printed with the method that produced it, and
//! same-run references (`rauc service`, `Peer.Ping`) next to it.
//!
//! Without `--sandbox` (e.g. `cargo test --all-targets`) it prints how to run it and exits 0.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use futures_util::StreamExt;
use ssu_agent::ctl::{self, Agent1Proxy, Dict};
use zbus::fdo::{DBusProxy, NameOwnerChangedStream};

const BUS_NAME: &str = "org.ssu.Agent1";
const OBJECT_PATH: &str = "/org/ssu/Agent1";
/// How long the agent gets to take its name (or to exit after SIGTERM).
const START_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a check (and whatever install it starts) gets to settle.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(180);
/// States in which the agent is still working on something.
const BUSY_STATES: &[&str] = &[
    "checking",
    "downloading",
    "verifying",
    "installing",
    "confirming",
];
const CVE: &str = "CVE-2026-4242:critical:9.8:Remote code execution in the web UI";

struct Args {
    sandbox: PathBuf,
    bin_dir: PathBuf,
    /// Start-time runs per mode (fresh and reused state directory).
    runs: usize,
    /// Idle time before RSS is read.
    settle: Duration,
    /// Window over which context switches are counted.
    window: Duration,
    /// Calls of each method in the latency measurement.
    calls: usize,
}

const USAGE: &str = "usage: cargo bench --bench agent -- --sandbox DIR [--bin-dir DIR] \
[--runs N] [--settle SECS] [--window SECS] [--calls N]   (scripts/bench runs it)";

/// `None` when there is no sandbox to measure (run by `cargo test --all-targets` or a bare
/// `cargo bench`).
fn parse_args() -> Result<Option<Args>> {
    let mut sandbox = None;
    let mut bin_dir = None;
    let mut runs = 10;
    let mut settle = 10;
    let mut window = 30;
    let mut calls = 1000;
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = || {
            it.next()
                .with_context(|| format!("{arg} needs a value\n{USAGE}"))
        };
        match arg.as_str() {
            // cargo bench passes --bench to harness = false targets.
            "--bench" => {}
            "--sandbox" => sandbox = Some(PathBuf::from(value()?)),
            "--bin-dir" => bin_dir = Some(PathBuf::from(value()?)),
            "--runs" => runs = value()?.parse()?,
            "--settle" => settle = value()?.parse()?,
            "--window" => window = value()?.parse()?,
            "--calls" => calls = value()?.parse()?,
            other => bail!("unknown argument {other}\n{USAGE}"),
        }
    }
    let Some(sandbox) = sandbox else {
        return Ok(None);
    };
    let bin_dir = bin_dir.unwrap_or_else(|| {
        Path::new(env!("CARGO_BIN_EXE_ssu-agent"))
            .parent()
            .expect("binary has a directory")
            .to_owned()
    });
    if runs == 0 || calls == 0 {
        bail!("--runs and --calls must be at least 1");
    }
    Ok(Some(Args {
        sandbox,
        bin_dir,
        runs,
        settle: Duration::from_secs(settle),
        window: Duration::from_secs(window),
        calls,
    }))
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    let Some(args) = parse_args()? else {
        println!("benches/agent: no sandbox given, nothing measured; run `bash scripts/bench`");
        println!("{USAGE}");
        return Ok(());
    };
    let mut bench = Bench::new(args)?;
    bench.print_machine("start");
    let result = bench.run().await;
    if let Some(agent) = bench.agent.take() {
        let _ = agent.stop().await;
    }
    bench.print_machine("end");
    bench.report.print();
    result
}

// --- the report ----------------------------------------------------------------------------

struct Row {
    section: &'static str,
    figure: String,
    value: String,
    method: String,
}

#[derive(Default)]
struct Report {
    rows: Vec<Row>,
    /// Extra tables printed after the main one (title, lines).
    details: Vec<(String, Vec<String>)>,
}

impl Report {
    fn add(&mut self, section: &'static str, figure: &str, value: String, method: &str) {
        println!("  {figure}: {value}");
        self.rows.push(Row {
            section,
            figure: figure.to_owned(),
            value,
            method: method.to_owned(),
        });
    }

    fn detail(&mut self, title: &str, lines: Vec<String>) {
        for l in &lines {
            println!("    {l}");
        }
        self.details.push((title.to_owned(), lines));
    }

    fn print(&self) {
        println!();
        println!("## Results");
        let mut section = "";
        for r in &self.rows {
            if r.section != section {
                section = r.section;
                println!();
                println!("### {section}");
                println!();
                println!("| figure | value | method |");
                println!("|---|---|---|");
            }
            println!("| {} | {} | {} |", r.figure, r.value, r.method);
        }
        for (title, lines) in &self.details {
            println!();
            println!("### {title}");
            println!();
            for l in lines {
                println!("{l}");
            }
        }
    }
}

// --- the benchmark ---------------------------------------------------------------------------

struct Bench {
    args: Args,
    /// DIR/bench: configs, state directories, logs of this run.
    work: PathBuf,
    bus_address: String,
    report: Report,
    agent: Option<Agent>,
}

const FOUNDATION: &str = "Foundation (issue 2)";
const UPDATE: &str = "Update (issue 3)";

impl Bench {
    fn new(args: Args) -> Result<Bench> {
        let sandbox = fs::canonicalize(&args.sandbox)
            .with_context(|| format!("sandbox {}", args.sandbox.display()))?;
        let socket = sandbox.join("bus/system_bus_socket");
        if !socket.exists() {
            bail!(
                "{} has no bus socket: is the sandbox up?",
                sandbox.display()
            );
        }
        let work = sandbox.join("bench");
        fs::create_dir_all(&work)?;
        // A binary copied just before the run has dirty page-cache pages until writeback,
        // and /proc counts a dirty file page mapped by one process as Private_Dirty: the
        // agent's text would show up as ~5 MiB of private dirty memory. Flush them first.
        for name in ["ssu-agent", "ssuctl", "ssu-repo"] {
            let bin = args.bin_dir.join(name);
            fs::File::open(&bin)
                .and_then(|f| f.sync_all())
                .with_context(|| format!("sync {}", bin.display()))?;
        }
        Ok(Bench {
            args: Args { sandbox, ..args },
            work,
            bus_address: format!("unix:path={}", socket.display()),
            report: Report::default(),
            agent: None,
        })
    }

    fn dir(&self) -> &Path {
        &self.args.sandbox
    }

    fn bin(&self, name: &str) -> PathBuf {
        self.args.bin_dir.join(name)
    }

    fn print_machine(&self, when: &str) {
        let load = fs::read_to_string("/proc/loadavg").unwrap_or_default();
        let load: Vec<&str> = load.split_whitespace().take(3).collect();
        println!(
            "machine at {when}: {} UTC, nproc {}, load average {}, kernel {}, cpu {}",
            jiff::Timestamp::now().strftime("%Y-%m-%d %H:%M:%S"),
            std::thread::available_parallelism().map_or(0, |n| n.get()),
            load.join(" "),
            fs::read_to_string("/proc/sys/kernel/osrelease")
                .unwrap_or_default()
                .trim(),
            cpu_model(),
        );
    }

    async fn run(&mut self) -> Result<()> {
        let conn = zbus::connection::Builder::address(self.bus_address.as_str())
            .build()
            .await
            .context("connect to the sandbox bus")?;
        let dbus = DBusProxy::new(&conn).await?;
        // Subscribed before any agent is spawned, so no acquisition can be missed.
        let mut owners = dbus
            .receive_name_owner_changed_with_args(&[(0, BUS_NAME)])
            .await?;
        if dbus.name_has_owner(BUS_NAME.try_into()?).await? {
            bail!("{BUS_NAME} is already owned on the sandbox bus (started with --no-agent?)");
        }

        println!("== {FOUNDATION}");
        self.start_times(&mut owners).await?;
        self.idle(&mut owners).await?;
        self.latency(&conn).await?;
        self.flood().await?;
        if let Some(agent) = self.agent.take() {
            agent.stop().await?;
        }
        self.sizes()?;

        println!("== {UPDATE}");
        self.check_bytes(&conn, &mut owners).await?;
        Ok(())
    }

    /// The config `scripts/sandbox` writes (`write_agent_conf`), plus `extra`.
    fn write_config(
        &self,
        name: &str,
        state_dir: &Path,
        version: &str,
        security_patch_level: &str,
        extra: &str,
    ) -> Result<PathBuf> {
        let dir = self.dir().display().to_string();
        let etc = self.work.join(format!("etc-{name}"));
        fs::create_dir_all(&etc)?;
        let path = etc.join("agent.toml");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/sandbox");
        fs::write(
            &path,
            format!(
                r#"[agent]
state_dir = "{state}"

[device]
model = "Sandbox Gateway"
hardware_id = "sandbox-gw-1"
version = "{version}"
feature_release = "1.0"
security_patch_level = "{security_patch_level}"

[authorization]
allow_users = ["root"]

[install]
boot_id_file = "{dir}/boot/boot_id"
reboot_command = ["bash", "{script}", "reboot", "{dir}"]
{extra}"#,
                state = state_dir.display(),
                script = script.display(),
            ),
        )?;
        Ok(path)
    }

    async fn spawn_agent(
        &self,
        config: &Path,
        owners: &mut NameOwnerChangedStream,
    ) -> Result<(Agent, Duration)> {
        let log = self.work.join("agent.log");
        Agent::start(
            &self.bin("ssu-agent"),
            config,
            &log,
            &self.bus_address,
            owners,
        )
        .await
    }

    /// 1. exec → name owned, N runs with a fresh state directory, N with the same one.
    async fn start_times(&mut self, owners: &mut NameOwnerChangedStream) -> Result<()> {
        let state = self.work.join("state");
        let config = self.write_config("idle", &state, "1.0.0", "2026-09-01", "")?;
        let n = self.args.runs;
        for fresh in [true, false] {
            let mut starts = Vec::with_capacity(n);
            let mut stops = Vec::with_capacity(n);
            let mut killed = 0;
            for _ in 0..n {
                if fresh && state.exists() {
                    fs::remove_dir_all(&state)?;
                }
                let (agent, started) = self.spawn_agent(&config, owners).await?;
                starts.push(started);
                let stop = agent.stop().await?;
                stops.push(stop.elapsed);
                killed += usize::from(stop.by_signal);
            }
            let (figure, how) = if fresh {
                (
                    "exec → name owned, fresh state dir",
                    "state dir removed before each run: creates agent.db",
                )
            } else {
                (
                    "exec → name owned, existing state dir",
                    "same state dir every run: opens the existing agent.db",
                )
            };
            self.report.add(
                FOUNDATION,
                figure,
                format!("median {}", ms_stats(&starts)),
                &format!(
                    "{n} runs of `ssu-agent --config {}`; clock starts before spawn (fork+exec \
                     included) and stops at NameOwnerChanged(org.ssu.Agent1, new owner), \
                     subscribed before spawn; {how}; SIGTERM between runs",
                    config.display()
                ),
            );
            self.report.add(
                FOUNDATION,
                &format!(
                    "SIGTERM → exit ({})",
                    if fresh { "fresh" } else { "existing" }
                ),
                format!(
                    "median {}; {killed} of {n} died of the signal itself (no handler yet)",
                    ms_stats(&stops)
                ),
                "SIGTERM sent right after the name was owned; clock starts before `kill -TERM \
                 PID` is spawned, stops when waitpid returns; \"died of the signal\" = waitpid \
                 reports termination by SIGTERM instead of exit 0",
            );
        }
        Ok(())
    }

    /// 2. and 3.: RSS after `settle`, context switches over `window`.
    async fn idle(&mut self, owners: &mut NameOwnerChangedStream) -> Result<()> {
        let config = self.work.join("etc-idle/agent.toml");
        let (agent, _) = self.spawn_agent(&config, owners).await?;
        let pid = agent.pid;
        self.agent = Some(agent);
        let rauc = read_pid(&self.dir().join("pids/rauc.pid"));
        let settle = self.args.settle.as_secs();
        println!("  idling {settle} s …");
        tokio::time::sleep(self.args.settle).await;

        let mem = Memory::of(pid)?;
        self.report.add(
            FOUNDATION,
            "idle VmRSS",
            format!(
                "{} (RssAnon {}, RssFile {})",
                mib(mem.rss),
                mib(mem.anon),
                mib(mem.file)
            ),
            &format!("/proc/PID/status VmRSS, {settle} s after the name was owned"),
        );
        self.report.add(
            FOUNDATION,
            "idle private dirty",
            mib(mem.private_dirty),
            &format!("/proc/PID/smaps_rollup Private_Dirty, {settle} s after the name was owned"),
        );
        if let Some(rpid) = rauc {
            let r = Memory::of(rpid)?;
            self.report.add(
                FOUNDATION,
                "reference: `rauc service` VmRSS / private dirty",
                format!("{} / {}", mib(r.rss), mib(r.private_dirty)),
                "same run, same files, the sandbox's `rauc service` (pid from DIR/pids/rauc.pid)",
            );
        }

        let window = self.args.window;
        let before = threads(pid)?;
        let rauc_before = rauc.map(threads).transpose()?;
        println!("  counting context switches over {} s …", window.as_secs());
        tokio::time::sleep(window).await;
        let after = threads(pid)?;
        let rauc_after = rauc.map(threads).transpose()?;

        let (vol, invol, lines) = switches(&before, &after);
        self.report.add(
            FOUNDATION,
            &format!("voluntary context switches in {} s idle", window.as_secs()),
            format!(
                "{vol} ({:.2}/s; involuntary {invol}) over {} threads",
                vol as f64 / window.as_secs_f64(),
                after.len()
            ),
            &format!(
                "sum over /proc/PID/task/*/status voluntary_ctxt_switches, after − before, \
                 window starting {settle} s after the name was owned"
            ),
        );
        self.report
            .detail("Agent threads over the idle window", lines);
        if let (Some(b), Some(a)) = (rauc_before, rauc_after) {
            let (rvol, rinvol, _) = switches(&b, &a);
            self.report.add(
                FOUNDATION,
                "reference: `rauc service` voluntary context switches, same window",
                format!("{rvol} (involuntary {rinvol}) over {} threads", a.len()),
                "same method, same window, on the sandbox's `rauc service`",
            );
        }
        Ok(())
    }

    /// 5. An unprivileged flood (issue 16): 16 concurrent `Inhibit("x" × 31 MiB)` calls
    ///    from nobody (`tests/data/inhibit_flood.py`); VmRSS before, at its peak, and after.
    async fn flood(&mut self) -> Result<()> {
        use std::os::unix::fs::PermissionsExt;
        let Some(pid) = self.agent.as_ref().map(|a| a.pid) else {
            return Ok(());
        };
        // nobody must reach the bus socket, as under /run/dbus.
        fs::set_permissions(self.dir(), fs::Permissions::from_mode(0o711))?;
        let before = Memory::of(pid)?.rss;
        let venv = std::env::var_os("SSU_VENV").unwrap_or_else(|| "/opt/ssu-agent-venv".into());
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/inhibit_flood.py");
        let size = 31u64 << 20;
        let mut child = std::process::Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(PathBuf::from(venv).join("bin/python"))
            .arg(&script)
            .args(["16", &size.to_string(), "60"])
            .env("DBUS_SYSTEM_BUS_ADDRESS", &self.bus_address)
            .current_dir("/")
            .stdout(Stdio::piped())
            .spawn()
            .context("run the flood as nobody (setpriv)")?;
        println!("  flooding: 16 × Inhibit(31 MiB) from nobody …");
        let started = Instant::now();
        let mut peak = before;
        while child.try_wait()?.is_none() {
            peak = peak.max(Memory::of(pid)?.rss);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let took = started.elapsed();
        let out = child.wait_with_output()?;
        let answers = String::from_utf8_lossy(&out.stdout).into_owned();
        let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
        for a in answers.lines() {
            *counts.entry(a).or_default() += 1;
        }
        let mut after = Vec::new();
        for at in [1u64, 10] {
            let since = started.elapsed().saturating_sub(took);
            tokio::time::sleep(Duration::from_secs(at).saturating_sub(since)).await;
            after.push(Memory::of(pid)?.rss);
        }
        self.report.add(
            FOUNDATION,
            "VmRSS under an unprivileged Inhibit flood",
            format!(
                "idle {}, peak {}, {} 1 s and {} 10 s after it ended; flood took {}",
                mib(before),
                mib(peak),
                mib(after[0]),
                mib(after[1]),
                ms(took)
            ),
            "16 concurrent `Inhibit(\"x\" × 31 MiB)` calls, one connection each, from uid \
             65534 (tests/data/inhibit_flood.py via setpriv); VmRSS sampled every 50 ms while \
             it ran",
        );
        self.report.add(
            FOUNDATION,
            "answers to the flood",
            counts
                .iter()
                .map(|(k, v)| format!("{v} × {}", k.rsplit('.').next().unwrap_or(k)))
                .collect::<Vec<_>>()
                .join(", "),
            "PolicyRefused: the agent refused the oversized reason before authorizing; \
             LimitsExceeded: the bus refused to queue more for the agent",
        );
        Ok(())
    }

    /// 4. GetStatus vs Peer.Ping on one connection, interleaved.
    async fn latency(&mut self, conn: &zbus::Connection) -> Result<()> {
        let n = self.args.calls;
        let ping = || {
            conn.call_method(
                Some(BUS_NAME),
                OBJECT_PATH,
                Some("org.freedesktop.DBus.Peer"),
                "Ping",
                &(),
            )
        };
        let get_status = || async {
            let reply = conn
                .call_method(
                    Some(BUS_NAME),
                    OBJECT_PATH,
                    Some("org.ssu.Agent1"),
                    "GetStatus",
                    &(),
                )
                .await?;
            let dict: Dict = reply.body().deserialize()?;
            anyhow::Ok((reply.body().len(), dict.len()))
        };
        // Warm-up: connection buffers, the agent's first serialisation.
        for _ in 0..20 {
            ping().await?;
            get_status().await?;
        }
        let mut pings = Vec::with_capacity(n);
        let mut statuses = Vec::with_capacity(n);
        let mut reply = (0, 0);
        for _ in 0..n {
            let t = Instant::now();
            ping().await?;
            pings.push(t.elapsed());
            let t = Instant::now();
            reply = get_status().await?;
            statuses.push(t.elapsed());
        }
        let method = format!(
            "{n} calls on one zbus connection (this process, current-thread tokio), \
             interleaved with {n} Peer.Ping calls, after 20 warm-up calls each; \
             wall time per call until the reply is received and decoded"
        );
        self.report.add(
            FOUNDATION,
            "GetStatus latency",
            format!(
                "{} (reply body {} bytes, {} entries)",
                percentiles(&mut statuses),
                reply.0,
                reply.1
            ),
            &method,
        );
        self.report.add(
            FOUNDATION,
            "reference: Peer.Ping on the agent",
            percentiles(&mut pings),
            "same connection, same loop: the bus round trip without the agent's work",
        );
        Ok(())
    }

    /// 5. Binary sizes, unstripped and `strip -o`.
    fn sizes(&mut self) -> Result<()> {
        let out = self.work.join("stripped");
        fs::create_dir_all(&out)?;
        for name in ["ssu-agent", "ssuctl", "ssu-repo"] {
            let bin = self.bin(name);
            let stripped = out.join(name);
            run(std::process::Command::new("strip")
                .arg("-o")
                .arg(&stripped)
                .arg(&bin))?;
            let full = fs::metadata(&bin)?.len();
            let small = fs::metadata(&stripped)?.len();
            self.report.add(
                FOUNDATION,
                &format!("{name} size, stripped (unstripped)"),
                format!("{} ({})", bytes_mib(small), bytes_mib(full)),
                "`cargo build --release --bins` (opt-level s, thin LTO, panic abort), then \
                 `strip -o COPY BIN`; sizes from stat",
            );
        }
        Ok(())
    }

    /// 6. Bytes of one check when nothing changed, from nginx's access log.
    async fn check_bytes(
        &mut self,
        conn: &zbus::Connection,
        owners: &mut NameOwnerChangedStream,
    ) -> Result<()> {
        let dir = self.dir().to_owned();
        let repo = self.work.join("repo");
        let ssu_repo = self.bin("ssu-repo");
        let repo_arg = repo.to_str().context("repo path is not UTF-8")?;
        run(std::process::Command::new(&ssu_repo).args([
            "init",
            repo_arg,
            "--role",
            "manufacturer",
            "--name",
            "Bench Devices",
        ]))?;
        let image = deterministic_image(1024 * 1024);
        let bundle = self.build_bundle("1.0.1", &image)?;
        run(std::process::Command::new(&ssu_repo)
            .args(["add", repo_arg])
            .arg(&bundle)
            .args([
                "--kind",
                "security",
                "--base-version",
                "1.0",
                "--security-patch-level",
                "2026-11-01",
                "--cve",
                CVE,
                "--downtime",
                "90s",
            ]))?;
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/sandbox");
        run(std::process::Command::new("bash")
            .arg(&script)
            .arg("http")
            .arg(&dir)
            .arg(repo.join("public")))?;
        let url = fs::read_to_string(dir.join("http/url"))?.trim().to_owned();

        let root = repo.join("public/metadata/1.root.json");
        let pending = Scenario {
            name: "pending",
            title: "device on 1.0.0, update 1.0.1 published",
            version: "1.0.0",
            security_patch_level: "2026-09-01",
        };
        let current = Scenario {
            name: "current",
            title: "device already on 1.0.1",
            version: "1.0.1",
            security_patch_level: "2026-11-01",
        };
        for (scenario, first_run) in [(pending, true), (current, false)] {
            self.two_checks(&scenario, first_run, &url, &root, conn, owners)
                .await?;
        }
        Ok(())
    }

    /// Starts an agent with a fresh state dir pointed at the repository, runs `ssuctl check`
    /// twice and reports what nginx sent for each.
    async fn two_checks(
        &mut self,
        sc: &Scenario,
        report_rauc_wait: bool,
        url: &str,
        root: &Path,
        conn: &zbus::Connection,
        owners: &mut NameOwnerChangedStream,
    ) -> Result<()> {
        let access_log = self.dir().join("http/access.log");
        let state = self.work.join(format!("state-{}", sc.name));
        let cache = self.work.join(format!("cache-{}", sc.name));
        let config = self.write_config(
            sc.name,
            &state,
            sc.version,
            sc.security_patch_level,
            &format!(
                r#"
[check]
boot_delay = "1h"

[manufacturer]
url = "{url}"
root = "{root}"

[download]
cache_dir = "{cache}"
"#,
                root = root.display(),
                cache = cache.display(),
            ),
        )?;
        if let Some(old) = self.agent.take() {
            old.stop().await?;
        }
        let (agent, _) = self.spawn_agent(&config, owners).await?;
        let (pid, owned_at) = (agent.pid, agent.owned_at);
        self.agent = Some(agent);
        let proxy = Agent1Proxy::new(conn).await?;

        // A check before the agent has read RAUC's state cannot tell which bundles apply
        // ("RAUC is unavailable"); a device checks `boot_delay` after start, so wait for it.
        let rauc_known = loop {
            let st = ctl::dict_to_json(&proxy.get_status().await?);
            if st["Components"]["rauc"] == "running" && st["Compatible"] != "" {
                break owned_at.elapsed();
            }
            if owned_at.elapsed() > START_TIMEOUT {
                bail!("the agent did not see RAUC within {START_TIMEOUT:?}: {st}");
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        if report_rauc_wait {
            self.report.add(
                UPDATE,
                "name owned → RAUC's state known to the agent",
                ms(rauc_known),
                "GetStatus polled every 5 ms from NameOwnerChanged until Components.rauc = \
                 running and Compatible is set; a CheckNow before that reports \"RAUC is \
                 unavailable\" and offers nothing",
            );
        }

        // First check: an empty metadata cache; fetches whatever applies.
        fs::OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .open(&access_log)?;
        let first = self.ssuctl_check().await?;
        let first_state = settle(&proxy, conn).await?;
        let first_requests = parse_access_log(&fs::read_to_string(&access_log)?)?;
        let mem = Memory::of(pid)?;
        let nthreads = threads(pid)?.len();

        // The check that matters: nothing changed on the server.
        fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(&access_log)?;
        let second = self.ssuctl_check().await?;
        let second_state = settle(&proxy, conn).await?;
        // nginx writes each line when the request ends; give it a moment anyway.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let requests = parse_access_log(&fs::read_to_string(&access_log)?)?;

        let download_module = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("src/download")
            .exists();
        let fetched_bundle = first_requests
            .iter()
            .any(|r| r.path.starts_with("/targets/"));
        self.report.add(
            UPDATE,
            &format!("{}: first check (empty metadata cache)", sc.title),
            format!(
                "{}; `ssuctl check` {} in {}; then {first_state}",
                request_sum(&first_requests),
                first.status,
                ms(first.elapsed),
            ),
            &format!(
                "fresh state dir; `ssuctl check` with DBUS_SYSTEM_BUS_ADDRESS of the sandbox, \
                 then wait until State is not busy and RAUC's Operation is idle for 1 s; \
                 repository from `ssu-repo init` + `ssu-repo add` of one plain bundle, served \
                 by `scripts/sandbox http` (nginx, plain HTTP on loopback); sum of $bytes_sent \
                 in DIR/http/access.log; src/download/ {}; the agent {} the bundle",
                if download_module { "present" } else { "absent" },
                if fetched_bundle {
                    "downloaded"
                } else {
                    "did not request"
                }
            ),
        );
        self.report.detail(
            &format!("Requests, {}: first check", sc.title),
            request_table(&first_requests),
        );
        self.report.add(
            UPDATE,
            &format!("{}: one check when nothing changed", sc.title),
            format!(
                "{}; `ssuctl check` {} in {}; then {second_state}",
                request_sum(&requests),
                second.status,
                ms(second.elapsed),
            ),
            "access log truncated after the first check settled, then one more `ssuctl \
             check`; sum of nginx $bytes_sent (status line + headers + body) per request. Not \
             counted: request bytes from the device, TCP/IP and TLS overhead",
        );
        self.report.detail(
            &format!("Requests, {}: check when nothing changed", sc.title),
            request_table(&requests),
        );
        self.report.add(
            UPDATE,
            &format!("{}: VmRSS / private dirty after the first check", sc.title),
            format!(
                "{} / {}, {nthreads} threads",
                mib(mem.rss),
                mib(mem.private_dirty)
            ),
            "/proc/PID/status and smaps_rollup of the agent once the first check settled",
        );
        Ok(())
    }

    /// A plain RAUC bundle for the sandbox (compatible "ssu-sandbox"), signed with DIR/pki,
    /// as `tests/common/mod.rs` builds them.
    fn build_bundle(&self, version: &str, image: &[u8]) -> Result<PathBuf> {
        let input = self.work.join(format!("bundle-input-{version}"));
        fs::create_dir_all(&input)?;
        fs::write(input.join("rootfs.img"), image)?;
        fs::write(
            input.join("manifest.raucm"),
            format!(
                "[update]\ncompatible=ssu-sandbox\nversion={version}\n\n\
                 [bundle]\nformat=plain\n\n\
                 [image.rootfs]\nfilename=rootfs.img\n"
            ),
        )?;
        let bundle = self.work.join(format!("ssu-{version}.raucb"));
        let pki = self.dir().join("pki");
        run(std::process::Command::new("rauc")
            .arg("bundle")
            .arg(format!("--cert={}", pki.join("cert.pem").display()))
            .arg(format!("--key={}", pki.join("key.pem").display()))
            .arg(&input)
            .arg(&bundle))?;
        fs::remove_dir_all(&input)?;
        Ok(bundle)
    }

    async fn ssuctl_check(&self) -> Result<CtlRun> {
        let t = Instant::now();
        let out = tokio::process::Command::new(self.bin("ssuctl"))
            .arg("check")
            .env("DBUS_SYSTEM_BUS_ADDRESS", &self.bus_address)
            .output()
            .await?;
        let elapsed = t.elapsed();
        let status = match out.status.code() {
            Some(0) => "exit 0".to_owned(),
            Some(c) => {
                println!(
                    "  ssuctl check exited {c}: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                );
                format!("exit {c}")
            }
            None => "killed".to_owned(),
        };
        Ok(CtlRun { status, elapsed })
    }
}

/// What the device believes it runs, for one pair of checks.
struct Scenario {
    name: &'static str,
    title: &'static str,
    version: &'static str,
    security_patch_level: &'static str,
}

struct CtlRun {
    status: String,
    elapsed: Duration,
}

/// Waits until the agent is in no busy state and RAUC is idle, for a whole second; returns
/// "State=…, LastCheckResult=…" as it then is.
async fn settle(proxy: &Agent1Proxy<'_>, conn: &zbus::Connection) -> Result<String> {
    let rauc = zbus::Proxy::new(
        conn,
        "de.pengutronix.rauc",
        "/",
        "de.pengutronix.rauc.Installer",
    )
    .await?;
    let deadline = Instant::now() + SETTLE_TIMEOUT;
    let mut quiet_since: Option<Instant> = None;
    loop {
        let st = ctl::dict_to_json(&proxy.get_status().await?);
        let state = st["State"].as_str().unwrap_or("").to_owned();
        let op: String = rauc
            .get_property("Operation")
            .await
            .unwrap_or_else(|_| "unknown".into());
        let quiet = !BUSY_STATES.contains(&state.as_str()) && op == "idle";
        match (quiet, quiet_since) {
            (true, None) => quiet_since = Some(Instant::now()),
            (true, Some(t)) if t.elapsed() >= Duration::from_secs(1) => {
                let mut s = format!(
                    "State={state}, LastCheckResult={:?}",
                    st["LastCheckResult"].as_str().unwrap_or("")
                );
                if let Some(e) = st["LastError"].as_str().filter(|e| !e.is_empty()) {
                    s.push_str(&format!(", LastError={e:?}"));
                }
                return Ok(s);
            }
            (true, Some(_)) => {}
            (false, _) => quiet_since = None,
        }
        if Instant::now() >= deadline {
            bail!("the agent did not settle within {SETTLE_TIMEOUT:?} (State={state}, RAUC {op})");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

// --- the agent process -----------------------------------------------------------------------

struct Agent {
    child: tokio::process::Child,
    pid: u32,
    /// When NameOwnerChanged announced it.
    owned_at: Instant,
}

impl Agent {
    /// Spawns the agent and waits for its name; returns the time from before the spawn until
    /// `NameOwnerChanged` announced a new owner.
    async fn start(
        bin: &Path,
        config: &Path,
        log: &Path,
        bus_address: &str,
        owners: &mut NameOwnerChangedStream,
    ) -> Result<(Agent, Duration)> {
        let log_file = fs::OpenOptions::new().create(true).append(true).open(log)?;
        let t0 = Instant::now();
        let mut child = tokio::process::Command::new(bin)
            .arg("--config")
            .arg(config)
            .env("DBUS_SYSTEM_BUS_ADDRESS", bus_address)
            .env_remove("NOTIFY_SOCKET")
            .stdin(Stdio::null())
            .stdout(log_file.try_clone()?)
            .stderr(log_file)
            .spawn()
            .with_context(|| format!("spawn {}", bin.display()))?;
        let pid = child.id().context("agent has no pid")?;
        let owned = async {
            while let Some(signal) = owners.next().await {
                if signal.args()?.new_owner().is_some() {
                    return anyhow::Ok(());
                }
            }
            bail!("NameOwnerChanged stream ended")
        };
        tokio::select! {
            r = owned => r?,
            status = child.wait() => bail!(
                "the agent exited before owning {BUS_NAME}: {}; see {}",
                status?, log.display()
            ),
            _ = tokio::time::sleep(START_TIMEOUT) => {
                let _ = child.start_kill();
                bail!("the agent did not own {BUS_NAME} within {START_TIMEOUT:?}; see {}",
                    log.display());
            }
        }
        let owned_at = Instant::now();
        Ok((
            Agent {
                child,
                pid,
                owned_at,
            },
            owned_at - t0,
        ))
    }

    /// SIGTERM, then waits for the exit.
    async fn stop(mut self) -> Result<Stopped> {
        let t0 = Instant::now();
        let status = std::process::Command::new("kill")
            .args(["-TERM", &self.pid.to_string()])
            .status()?;
        if !status.success() {
            bail!("kill -TERM {} failed", self.pid);
        }
        match tokio::time::timeout(START_TIMEOUT, self.child.wait()).await {
            Ok(status) => {
                let elapsed = t0.elapsed();
                let status = status?;
                let by_signal = status.signal().is_some();
                if !status.success() && !by_signal {
                    println!(
                        "  note: agent {} exited with {status} after SIGTERM",
                        self.pid
                    );
                }
                Ok(Stopped { elapsed, by_signal })
            }
            Err(_) => {
                self.child.kill().await?;
                bail!(
                    "the agent {} ignored SIGTERM for {START_TIMEOUT:?}",
                    self.pid
                );
            }
        }
    }
}

struct Stopped {
    elapsed: Duration,
    /// Terminated by the signal's default action rather than exiting.
    by_signal: bool,
}

// --- /proc -----------------------------------------------------------------------------------

/// Memory figures of a process, in KiB.
struct Memory {
    rss: u64,
    anon: u64,
    file: u64,
    private_dirty: u64,
}

impl Memory {
    fn of(pid: u32) -> Result<Memory> {
        let status = fs::read_to_string(format!("/proc/{pid}/status"))?;
        let rollup = fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))?;
        Ok(Memory {
            rss: kib_field(&status, "VmRSS")?,
            anon: kib_field(&status, "RssAnon")?,
            file: kib_field(&status, "RssFile")?,
            private_dirty: kib_field(&rollup, "Private_Dirty")?,
        })
    }
}

/// `Name:   1234 kB` → 1234.
fn kib_field(text: &str, name: &str) -> Result<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .with_context(|| format!("no {name} field"))
}

/// One thread's counters.
struct Thread {
    comm: String,
    voluntary: u64,
    involuntary: u64,
}

fn threads(pid: u32) -> Result<BTreeMap<u32, Thread>> {
    let mut out = BTreeMap::new();
    for entry in fs::read_dir(format!("/proc/{pid}/task"))? {
        let entry = entry?;
        let Some(tid) = entry.file_name().to_str().and_then(|s| s.parse().ok()) else {
            continue;
        };
        // A thread may exit between read_dir and the reads.
        let Ok(status) = fs::read_to_string(entry.path().join("status")) else {
            continue;
        };
        let field = |name: &str| -> u64 {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0)
        };
        let comm = fs::read_to_string(entry.path().join("comm")).unwrap_or_default();
        out.insert(
            tid,
            Thread {
                comm: comm.trim().to_owned(),
                voluntary: field("voluntary_ctxt_switches"),
                involuntary: field("nonvoluntary_ctxt_switches"),
            },
        );
    }
    Ok(out)
}

/// Sums of voluntary and involuntary switches over the threads, and one line per thread.
/// A thread that started during the window counts from zero; one that ended is listed.
fn switches(
    before: &BTreeMap<u32, Thread>,
    after: &BTreeMap<u32, Thread>,
) -> (u64, u64, Vec<String>) {
    let (mut vol, mut invol, mut lines) = (0, 0, Vec::new());
    for (tid, a) in after {
        let (bv, bi, note) = match before.get(tid) {
            Some(b) => (b.voluntary, b.involuntary, ""),
            None => (0, 0, " (started during the window)"),
        };
        let (dv, di) = (a.voluntary - bv, a.involuntary - bi);
        vol += dv;
        invol += di;
        lines.push(format!(
            "- tid {tid} `{}`: +{dv} voluntary, +{di} involuntary{note}",
            a.comm
        ));
    }
    for (tid, b) in before {
        if !after.contains_key(tid) {
            lines.push(format!(
                "- tid {tid} `{}`: ended during the window (its switches are not counted)",
                b.comm
            ));
        }
    }
    (vol, invol, lines)
}

fn read_pid(path: &Path) -> Option<u32> {
    fs::read_to_string(path).ok()?.trim().parse().ok()
}

fn cpu_model() -> String {
    fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find_map(|l| l.strip_prefix("model name")?.split_once(':'))
                .map(|(_, m)| m.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".into())
}

// --- nginx's access log ----------------------------------------------------------------------

struct Request {
    path: String,
    status: u16,
    bytes_sent: u64,
    body_bytes_sent: u64,
}

/// Parses scripts/sandbox's `bytes` format:
/// `$remote_addr [$time_local] "$request" $status $bytes_sent $body_bytes_sent "$http_range"
/// $request_time`.
fn parse_access_log(text: &str) -> Result<Vec<Request>> {
    let mut out = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let parse = || -> Option<Request> {
            let (_, rest) = line.split_once('"')?;
            let (request, rest) = rest.split_once('"')?;
            let mut fields = rest.split_whitespace();
            let status = fields.next()?.parse().ok()?;
            let bytes_sent = fields.next()?.parse().ok()?;
            let body_bytes_sent = fields.next()?.parse().ok()?;
            let path = request.split(' ').nth(1).unwrap_or(request).to_owned();
            Some(Request {
                path,
                status,
                bytes_sent,
                body_bytes_sent,
            })
        };
        out.push(parse().with_context(|| format!("unexpected access log line: {line}"))?);
    }
    Ok(out)
}

/// "N requests, B bytes sent (b body, h headers)".
fn request_sum(requests: &[Request]) -> String {
    let total: u64 = requests.iter().map(|r| r.bytes_sent).sum();
    let body: u64 = requests.iter().map(|r| r.body_bytes_sent).sum();
    format!(
        "{} requests, {total} bytes sent by the server ({body} body, {} headers)",
        requests.len(),
        total - body
    )
}

fn request_table(requests: &[Request]) -> Vec<String> {
    let mut lines = vec![
        "| path | status | bytes sent | of which body |".to_owned(),
        "|---|---|---|---|".to_owned(),
    ];
    let mut counts: HashMap<u16, usize> = HashMap::new();
    for r in requests {
        *counts.entry(r.status).or_default() += 1;
        lines.push(format!(
            "| `{}` | {} | {} | {} |",
            r.path, r.status, r.bytes_sent, r.body_bytes_sent
        ));
    }
    lines.push(format!(
        "| **total** ({} requests) | | **{}** | {} |",
        requests.len(),
        requests.iter().map(|r| r.bytes_sent).sum::<u64>(),
        requests.iter().map(|r| r.body_bytes_sent).sum::<u64>()
    ));
    lines
}

// --- helpers ---------------------------------------------------------------------------------

fn run(cmd: &mut std::process::Command) -> Result<()> {
    let out = cmd.output().with_context(|| format!("run {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?}: {}\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// Deterministic "rootfs" bytes (periodic: the bundle's squashfs compresses them well).
fn deterministic_image(len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u32).wrapping_mul(2_654_435_761).to_le_bytes()[1])
        .collect()
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

fn us(d: Duration) -> String {
    format!("{:.0} µs", d.as_secs_f64() * 1e6)
}

/// `median X ms (min …, max …)` for a handful of runs.
fn ms_stats(samples: &[Duration]) -> String {
    let mut s = samples.to_vec();
    s.sort();
    let n = s.len();
    let median = if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2
    };
    format!(
        "{} (min {}, max {}, n={n})",
        ms(median),
        ms(s[0]),
        ms(s[n - 1])
    )
}

/// Nearest-rank percentiles.
fn percentiles(samples: &mut [Duration]) -> String {
    samples.sort();
    let n = samples.len();
    let rank = |p: f64| samples[((p * n as f64).ceil() as usize).clamp(1, n) - 1];
    format!(
        "p50 {}, p99 {}, max {} (n={n})",
        us(rank(0.50)),
        us(rank(0.99)),
        us(samples[n - 1])
    )
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB ({kib} kB)", kib as f64 / 1024.0)
}

fn bytes_mib(bytes: u64) -> String {
    format!("{:.2} MiB ({bytes} B)", bytes as f64 / (1024.0 * 1024.0))
}
