//! Wires the parts together for the `ssu-agent` binary: store, bus connection, adapters'
//! watchers, engine, D-Bus service and systemd notifications.
//!
//! Order matters: the store opens first (a database the agent cannot use is moved aside and
//! replaced before anything else runs, floors rebuilt; see `store::recover`), the engine
//! exists before the object is served, and the name is taken only
//! once the object answers. `READY=1` follows the name, so `systemctl start` returns when
//! clients can talk to the agent.

use std::future::Future;
use std::hash::{Hash, Hasher};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use sd_notify::NotifyState;
use tokio::sync::watch;

use crate::clock::SystemClock;
use crate::config::Config;
use crate::download::{self, Downloader};
use crate::engine::ports::{HostSystem, TufSource};
use crate::engine::{Adapters, Engine, EngineError, Handle, Inputs, Ports};
use crate::metadata::client;
use crate::status::{ModemInfo, NetworkInfo, RaucInfo, Status};
use crate::store::{FloorSources, Store, StoreError};
use crate::{dbus, modem, network, rauc};

/// Why the daemon could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DaemonError {
    #[error("cannot create state directory {path}: {source}")]
    StateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "state directory {path} is not writable: {source}; the agent records every step \
         there (is its file system mounted read-only? StateDirectory= in the unit)"
    )]
    StateDirNotWritable {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot connect to the system bus: {0}")]
    Bus(#[source] zbus::Error),
    #[error(transparent)]
    Serve(#[from] dbus::ServeError),
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error("cannot set up downloads: {0}")]
    Download(String),
    /// The bus connection closed, or the bus took the agent's name away: nobody can reach
    /// the agent any more, so it exits with an error and systemd (`Restart=on-failure`)
    /// starts it again on a fresh connection.
    #[error("lost the system bus: {0}; exiting so that the service manager restarts the agent")]
    BusLost(&'static str),
}

/// Runs the agent until `shutdown` completes.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> Result<(), DaemonError> {
    let config = Arc::new(config);
    let state_dir = &config.agent.state_dir;
    crate::fsutil::create_private_dir(state_dir).map_err(|source| DaemonError::StateDir {
        path: state_dir.clone(),
        source,
    })?;
    crate::fsutil::check_writable(state_dir).map_err(|source| {
        DaemonError::StateDirNotWritable {
            path: state_dir.clone(),
            source,
        }
    })?;
    let store = Store::open_or_recover(
        &state_dir.join(crate::store::FILE_NAME),
        &floor_sources(&config),
        jiff::Timestamp::now(),
    )?;

    let conn = zbus::Connection::system().await.map_err(DaemonError::Bus)?;

    let (rauc_tx, rauc_rx) = watch::channel(RaucInfo::default());
    let (modem_tx, modem_rx) = watch::channel(ModemInfo::default());
    let rauc_refresh = Arc::new(tokio::sync::Notify::new());
    tokio::spawn(rauc::watch_with_refresh(
        conn.clone(),
        rauc_refresh.clone(),
        move |info| {
            rauc_tx.send_replace(info);
        },
    ));
    tokio::spawn(modem::watch(conn.clone(), move |info| {
        modem_tx.send_replace(info);
    }));
    let (network_tx, network_rx) = watch::channel(NetworkInfo::default());
    tokio::spawn(network::watch(conn.clone(), move |info| {
        network_tx.send_replace(info);
    }));

    let inputs = Inputs {
        rauc: rauc_rx,
        modem: modem_rx,
        network: network_rx,
    };
    // One reporter for the bus and the fleet server: one key, one counter.
    let reporter = Arc::new(crate::report::Reporter::open(&config));
    let ports = adapters(&config, conn.clone(), rauc_refresh, reporter.clone())?;
    let (engine, handle) = Engine::new(
        config.clone(),
        store,
        SystemClock,
        ports,
        inputs,
        device_seed(&config),
    )?;
    tokio::spawn(dbus::forward_changes(conn.clone(), handle.subscribe()));
    tokio::spawn(dbus::forward_notices(conn.clone(), handle.notices()));
    if config.notify.desktop {
        tokio::spawn(crate::notify::run(conn.clone(), handle.notices()));
    }
    let auth = dbus::auth::Authorizer::new(config.authorization.clone());
    // Subscribed before the name is taken, so losing it right away is seen too.
    let name_lost = name_lost_stream(&conn).await.map_err(DaemonError::Bus)?;
    dbus::serve(&conn, handle.clone(), auth, reporter).await?;

    tracing::info!(name = dbus::BUS_NAME, "serving on the system bus");
    notify(&[
        NotifyState::Ready,
        NotifyState::Status(&summary(&handle.status())),
    ]);
    tokio::spawn(report_status(handle.subscribe()));
    if let Some(period) = sd_notify::watchdog_enabled() {
        tokio::spawn(watchdog(handle.clone(), period));
    }

    let lost = std::cell::Cell::new(None);
    engine
        .run(async {
            tokio::select! {
                () = shutdown => {}
                why = bus_lost(&conn, name_lost) => {
                    tracing::error!("{why}; stopping");
                    lost.set(Some(why));
                }
            }
        })
        .await;
    notify(&[NotifyState::Stopping]);
    // Dropping the connection releases the name; clients see the agent go.
    drop(conn);
    match lost.into_inner() {
        Some(why) => Err(DaemonError::BusLost(why)),
        None => Ok(()),
    }
}

/// `NameLost` for the agent's name, which the bus sends to the agent alone.
async fn name_lost_stream(conn: &zbus::Connection) -> zbus::Result<zbus::MessageStream> {
    let rule = zbus::MatchRule::builder()
        .msg_type(zbus::message::Type::Signal)
        .sender("org.freedesktop.DBus")
        .interface("org.freedesktop.DBus")
        .member("NameLost")
        .arg(0, dbus::BUS_NAME)
        .build()?;
    zbus::MessageStream::for_match_rule(rule, conn, std::num::NonZeroUsize::new(4)).await
}

/// Completes when the agent can no longer be reached on the bus: the connection closed (the
/// bus daemon stopped, restarted or dropped the agent) or the bus took its name away. Either
/// way a process left running would serve nobody and systemd would never restart it.
async fn bus_lost(conn: &zbus::Connection, mut name_lost: zbus::MessageStream) -> &'static str {
    use futures_util::StreamExt;
    loop {
        tokio::select! {
            () = conn.closed() => return "the bus connection closed",
            msg = name_lost.next() => match msg {
                // The stream ends with the connection.
                None | Some(Err(_)) => return "the bus connection closed",
                // zbus cannot check a well-known sender, but only the bus daemon can send
                // as org.freedesktop.DBus (it stamps every peer's message with its unique name).
                Some(Ok(m)) if is_name_lost_from_bus(&m) => {
                    return "the bus took the name org.ssu.Agent1 away";
                }
                Some(Ok(_)) => {}
            },
        }
    }
}

/// The real adapters.
struct Real;

impl Ports for Real {
    type Rauc = rauc::RaucClient;
    type Metadata = TufSource;
    type Fetcher = Downloader;
    type System = HostSystem;
    type Courier = crate::report::deliver::HttpCourier;
}

fn adapters(
    config: &Config,
    conn: zbus::Connection,
    rauc_refresh: Arc<tokio::sync::Notify>,
    reporter: Arc<crate::report::Reporter>,
) -> Result<Adapters<Real>, DaemonError> {
    let d = &config.download;
    let mut download = download::DownloadConfig::new(&d.cache_dir);
    download.connect_timeout = d.connect_timeout.0.unsigned_abs();
    download.read_timeout = d.read_timeout.0.unsigned_abs();
    download.max_attempts = d.max_attempts;
    download.extra_root_ca = d.ca_file.clone();
    let downloader = Downloader::new(download).map_err(|e| DaemonError::Download(e.to_string()))?;
    // One client for metadata and bundles: one TLS configuration, one connection pool.
    let client = downloader.client().clone();
    let tuf = |name: &str, url: &url::Url, root: &std::path::Path, datastore: &str| TufSource {
        source: Some(client::Source {
            name: name.to_owned(),
            metadata_url: join_dir(url, "metadata/"),
            targets_url: join_dir(url, "targets/"),
            root: root.to_owned(),
            max_metadata_bytes: config.check.max_metadata_bytes,
        }),
        client: client.clone(),
        datastore: config.agent.state_dir.join(datastore),
    };
    let metadata = match &config.manufacturer {
        Some(m) => tuf("manufacturer", &m.url, &m.root, "tuf/manufacturer"),
        None => TufSource {
            source: None,
            client: client.clone(),
            datastore: config.agent.state_dir.join("tuf/manufacturer"),
        },
    };
    // One repository (and tough datastore) per operator profile; the subscription picks one.
    let operators = config
        .operators
        .iter()
        .map(|p| {
            let datastore = format!("tuf/operator/{}", p.name);
            let source = tuf(&p.name, &p.url, &p.root, &datastore);
            (p.name.clone(), Arc::new(source))
        })
        .collect();
    let install = &config.install;
    Ok(Adapters {
        rauc: Arc::new(rauc::RaucClient::new(conn).with_refresh(rauc_refresh)),
        metadata: Arc::new(metadata),
        operators,
        fetcher: Arc::new(downloader),
        system: Arc::new(HostSystem {
            boot_id_file: install.boot_id_file.clone(),
            reboot_command: install.reboot_command.clone(),
            health_checks: install.health_checks.clone(),
            health_check_timeout: install.health_check_timeout.0.unsigned_abs(),
        }),
        courier: Arc::new(crate::report::deliver::HttpCourier {
            reporter,
            client,
            url: config.report.url.clone(),
            timeout: config.report.timeout.0.unsigned_abs(),
        }),
    })
}

/// Where the floors can be rebuilt from besides the floors copy: tough's datastore of each
/// update source (the same directories `adapters` gives tough).
fn floor_sources(config: &Config) -> FloorSources {
    use crate::store::floors;
    let state_dir = &config.agent.state_dir;
    let mut tuf = vec![(
        floors::METADATA_FLOOR_KEY.to_owned(),
        state_dir.join("tuf/manufacturer"),
    )];
    for p in &config.operators {
        tuf.push((
            floors::operator_floor_key(&p.name),
            state_dir.join(format!("tuf/operator/{}", p.name)),
        ));
    }
    FloorSources { tuf }
}

/// `base` + `dir`, treating `base` as a directory whether or not it ends in `/`.
fn join_dir(base: &url::Url, dir: &str) -> url::Url {
    let mut base = base.clone();
    if !base.path().ends_with('/') {
        let path = format!("{}/", base.path());
        base.set_path(&path);
    }
    base.join(dir).unwrap_or(base)
}

fn is_name_lost_from_bus(msg: &zbus::Message) -> bool {
    msg.header()
        .sender()
        .is_some_and(|s| s.as_str() == "org.freedesktop.DBus")
        && msg
            .body()
            .deserialize::<&str>()
            .is_ok_and(|name| name == dbus::BUS_NAME)
}

/// A per-device seed for the check jitter: stable across restarts (so the schedule does not
/// drift) and different between devices (so a fleet spreads out).
fn device_seed(config: &Config) -> u64 {
    let mut h = std::hash::DefaultHasher::new();
    config.device.hardware_id.hash(&mut h);
    if let Ok(id) = std::fs::read_to_string("/etc/machine-id") {
        id.trim().hash(&mut h);
    }
    h.finish()
}

/// One line for `systemctl status`.
pub fn summary(st: &Status) -> String {
    let level = st
        .installed
        .as_ref()
        .map(|i| i.security_patch_level.to_string())
        .unwrap_or_else(|| "unknown".to_owned());
    format!(
        "{}; security patch level {level}; {}",
        st.state.as_str(),
        st.staleness.as_str()
    )
}

async fn report_status(mut rx: watch::Receiver<Status>) {
    let mut last = String::new();
    while rx.changed().await.is_ok() {
        let line = summary(&rx.borrow_and_update());
        if line != last {
            notify(&[NotifyState::Status(&line)]);
            last = line;
        }
    }
}

/// Pings systemd only when the engine answers, so a wedged engine gets the agent restarted.
async fn watchdog(engine: Handle, period: Duration) {
    let every = period / 2;
    loop {
        tokio::time::sleep(every).await;
        match tokio::time::timeout(every, engine.ping()).await {
            Ok(Ok(())) => notify(&[NotifyState::Watchdog]),
            // The loop runs but gets nowhere: let systemd's watchdog restart the agent.
            Ok(Err(EngineError::Stalled(why))) => {
                tracing::error!("{why}; not pinging the watchdog");
            }
            Ok(Err(_)) => return,
            Err(_) => tracing::warn!("engine did not answer the watchdog ping in time"),
        }
    }
}

fn notify(state: &[NotifyState<'_>]) {
    // Outside systemd there is no socket; that is not an error worth a log line.
    if std::env::var_os("NOTIFY_SOCKET").is_some()
        && let Err(e) = sd_notify::notify(state)
    {
        tracing::warn!(error = %e, "sd_notify failed");
    }
}
