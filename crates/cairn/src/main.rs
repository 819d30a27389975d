//! `cairn`: the one binary. `cairn controller` runs the controller,
//! `cairn satellite` a satellite, `cairn up` both on one node for a first
//! try.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use anyhow::Context;
use cairn_controller::config::ConfigFile;
use cairn_controller::{Controller, ControllerConfig};
use cairn_satellite::config::{DEFAULT_PORT, DEFAULT_TLS_PORT, SatelliteToml};
use cairn_satellite::tls::TlsFiles;
use cairn_satellite::{Satellite, SatelliteConfig};
use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};

mod cli;
mod db;
mod generate;

use cli::controller::{ControllerVerb, ErrorReportsCmd, SosReportCmd};
use cli::kvs::KvCmd;
use cli::node::NodeCmd;
use cli::resource::{ResourceCmd, VolumeCmd};
use cli::resource_definition::{ResourceDefinitionCmd, VolumeDefinitionCmd};
use cli::resource_group::{ResourceGroupCmd, VolumeGroupCmd};
use cli::storage_pool::StoragePoolCmd;
use db::DbCmd;

#[derive(Parser)]
#[command(name = "cairn", version, about = "Replicated block storage for Linux clusters, LINSTOR-compatible")]
struct Cli {
    #[command(flatten)]
    global: cli::Global,
    #[command(subcommand)]
    command: Command,
}

/// `cairn controller` runs the controller; `cairn controller version`,
/// `list-properties` and `set-property` talk to one, as in LINSTOR.
#[derive(Args)]
#[command(args_conflicts_with_subcommands = true)]
struct ControllerCmd {
    #[command(subcommand)]
    verb: Option<ControllerVerb>,
    #[command(flatten)]
    daemon: ControllerArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Run the controller (the cluster database and the LINSTOR REST API), or query it.
    #[command(visible_alias = "c")]
    Controller(ControllerCmd),
    /// Run a satellite: turns the controller's desired state into devices on this node.
    Satellite(SatelliteArgs),
    /// A benchmarking tool: many simulated satellites in one process (node names PREFIX00000,
    /// PREFIX00001, ... on consecutive ports), speaking the real protocol; nothing is created,
    /// everything is reported healthy.
    #[command(name = "sim-satellites")]
    SimSatellites(SimArgs),
    /// Run Cairn on this machine for a first try: controller on 127.0.0.1:3370 and a satellite
    /// with a FILE_THIN pool, data in ./cairn-data.
    Up(UpArgs),
    /// Nodes.
    #[command(visible_alias = "n", subcommand)]
    Node(NodeCmd),
    /// Storage pools.
    #[command(visible_alias = "sp", subcommand)]
    StoragePool(StoragePoolCmd),
    /// Resource groups.
    #[command(visible_alias = "rg", subcommand)]
    ResourceGroup(ResourceGroupCmd),
    /// Volume groups.
    #[command(visible_alias = "vg", subcommand)]
    VolumeGroup(VolumeGroupCmd),
    /// Resource definitions.
    #[command(visible_alias = "rd", subcommand)]
    ResourceDefinition(ResourceDefinitionCmd),
    /// Volume definitions.
    #[command(visible_alias = "vd", subcommand)]
    VolumeDefinition(VolumeDefinitionCmd),
    /// Resources.
    #[command(visible_alias = "r", subcommand)]
    Resource(ResourceCmd),
    /// Volumes.
    #[command(visible_alias = "v", subcommand)]
    Volume(VolumeCmd),
    /// Resource connections: properties of the connection between two replicas (DRBD paths and options).
    #[command(visible_alias = "rc", subcommand)]
    ResourceConnection(cli::resource_connection::ResourceConnectionCmd),
    /// Node connections: properties of the connection between two nodes, for every resource they share.
    #[command(visible_alias = "nc", subcommand)]
    NodeConnection(cli::node_connection::NodeConnectionCmd),
    /// Key-value stores.
    #[command(visible_alias = "kv", subcommand)]
    KeyValueStore(KvCmd),
    /// External files: content kept by the controller, written by the satellites of a resource's nodes.
    #[command(visible_alias = "f", subcommand)]
    File(cli::file::FileCmd),
    /// Remotes backups can be shipped to: S3 buckets, other controllers.
    #[command(subcommand)]
    Remote(cli::remote::RemoteCmd),
    /// Backups to S3 remotes: create, list, info, restore, delete, abort.
    #[command(visible_alias = "b", subcommand)]
    Backup(cli::backup::BackupCmd),
    /// Backup schedules.
    #[command(subcommand)]
    Schedule(cli::schedule::ScheduleCmd),
    /// Error reports.
    #[command(visible_alias = "err", subcommand)]
    ErrorReports(ErrorReportsCmd),
    /// SOS reports: versions, error reports, DRBD status and the redacted database in a tar.gz.
    #[command(visible_alias = "sos", subcommand)]
    SosReport(SosReportCmd),
    /// The cluster's space report (capacities, what is provisioned), with its SHA-256.
    #[command(visible_alias = "spr", subcommand)]
    SpaceReporting(cli::controller::SpaceReportingCmd),
    /// Advice on the deployed resources, and on taking a node down for maintenance.
    #[command(visible_alias = "adv", subcommand)]
    Advise(cli::advise::AdviseCmd),
    /// Snapshots, restore and rollback.
    #[command(visible_alias = "s", subcommand)]
    Snapshot(cli::snapshot::SnapshotCmd),
    /// The master passphrase (LUKS volumes).
    #[command(visible_alias = "e", subcommand)]
    Encryption(cli::encryption::EncryptionCmd),
    /// Unused disks, and LVM pools made on them.
    #[command(name = "physical-storage", visible_alias = "ps", subcommand)]
    PhysicalStorage(cli::physical_storage::PhysicalStorageCmd),
    /// Move the controller's database: export every object as JSON, import such a file
    /// (SQLite to PostgreSQL and back). Works on the database itself, not through a controller.
    #[command(subcommand)]
    Db(DbCmd),
    /// Users of the REST API (the controller's --rest-users-file): add one, change a
    /// password, remove one. Works on the file; the controller sees changes at once.
    #[command(subcommand)]
    User(UserCmd),
    /// Print a shell completion script, e.g. `cairn completion bash > /etc/bash_completion.d/cairn`.
    Completion {
        /// The shell to complete for.
        shell: clap_complete::Shell,
    },
    /// Write the man pages: cairn.1 and one page per subcommand.
    #[command(hide = true)]
    Man {
        /// Directory to write the pages into (created if missing).
        #[arg(long, value_name = "DIR")]
        out_dir: PathBuf,
    },
}

#[derive(Subcommand)]
enum UserCmd {
    /// Add USER, or set a new password for them. The password comes from CAIRN_PASSWORD, or is
    /// asked for twice.
    Add {
        /// The users file (created, readable by its owner only).
        #[arg(long, env = "CAIRN_REST_USERS_FILE")]
        users_file: PathBuf,
        /// The user name.
        user: String,
    },
    /// Remove USER.
    Remove {
        /// The users file.
        #[arg(long, env = "CAIRN_REST_USERS_FILE")]
        users_file: PathBuf,
        /// The user name.
        user: String,
    },
}

fn run_user(cmd: UserCmd) -> anyhow::Result<()> {
    use cairn_controller::auth;
    match cmd {
        UserCmd::Add { users_file, user } => {
            auth::check_user_name(&user).map_err(anyhow::Error::msg)?;
            let password = match std::env::var("CAIRN_PASSWORD").ok() {
                Some(p) => p,
                None => {
                    let first = rpassword::prompt_password(format!("New password for {user}: ")).context("read the password")?;
                    let again = rpassword::prompt_password("Again: ").context("read the password")?;
                    if first != again {
                        anyhow::bail!("the passwords differ; nothing changed");
                    }
                    first
                }
            };
            if password.is_empty() {
                anyhow::bail!("an empty password is not accepted");
            }
            let hash = auth::hash_password(&password)?;
            let replaced = auth::write_user(&users_file, &user, Some(&hash))?;
            println!("{} {user} in {}", if replaced { "Changed the password of" } else { "Added" }, users_file.display());
        }
        UserCmd::Remove { users_file, user } => {
            if !auth::write_user(&users_file, &user, None)? {
                anyhow::bail!("{user} is not in {}", users_file.display());
            }
            println!("Removed {user} from {}", users_file.display());
        }
    }
    Ok(())
}

#[derive(Args)]
struct SatelliteArgs {
    /// TOML configuration file (`[satellite]` table).
    #[arg(long, env = "CAIRN_CONFIG")]
    config: Option<PathBuf>,
    /// The node name the controller knows this satellite by (default: the host name).
    #[arg(long, env = "CAIRN_NODE_NAME")]
    node_name: Option<String>,
    /// Listen address (default 0.0.0.0:3366).
    #[arg(long, env = "CAIRN_LISTEN")]
    listen: Option<SocketAddr>,
    /// Working directory of the satellite (default /var/lib/cairn-satellite; created at start,
    /// the satellite keeps no state of its own: its pool directories are its state).
    #[arg(long, env = "CAIRN_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// File holding the cluster secret (the controller's <data-dir>/cluster-secret).
    #[arg(long, env = "CAIRN_CLUSTER_SECRET_FILE")]
    cluster_secret_file: Option<PathBuf>,
    /// Time limit of every external command, in seconds (default 60).
    #[arg(long, env = "CAIRN_COMMAND_TIMEOUT")]
    command_timeout: Option<u64>,
    /// Mutual TLS with the controller: this satellite's certificate (PEM). With it the default port is 3367.
    #[arg(long, env = "CAIRN_TLS_CERT")]
    tls_cert: Option<PathBuf>,
    /// This satellite's private key (PEM).
    #[arg(long, env = "CAIRN_TLS_KEY")]
    tls_key: Option<PathBuf>,
    /// The CA that signed the controller's client certificate (PEM).
    #[arg(long, env = "CAIRN_TLS_CA")]
    tls_ca: Option<PathBuf>,
    /// Where DRBD `.res` files are written (default <data-dir>/drbd.d, with cairn.conf for drbdadm -c).
    #[arg(long, env = "CAIRN_DRBD_CONFIG_DIR")]
    drbd_config_dir: Option<PathBuf>,
    /// On a host without the DRBD 9 kernel module, run the DRBD layer config-only: write and
    /// check .res files and metadata, plan (drbdadm -d) but never run the kernel commands.
    #[arg(long, env = "CAIRN_DRBD_CONFIG_ONLY")]
    drbd_config_only: bool,
    /// Directories external files may be written into (comma-separated; LINSTOR's --allow-ext-files).
    /// A deployed file goes only into one of these exactly, never into a subdirectory.
    #[arg(long, env = "CAIRN_ALLOW_EXT_FILES", value_delimiter = ',')]
    allow_ext_files: Vec<String>,
    /// Directories FILE and FILE_THIN pools may be in, with everything below them (comma-separated;
    /// the data directory is always allowed). /, /dev, /proc, /sys, /boot, /etc and /usr never are.
    #[arg(long, env = "CAIRN_ALLOW_POOL_DIRS", value_delimiter = ',')]
    allow_pool_dirs: Vec<PathBuf>,
    /// Tests only: write external files below this directory instead of /.
    #[arg(long, env = "CAIRN_TEST_EXT_FILES_ROOT", hide = true)]
    ext_files_root: Option<PathBuf>,
    /// Log lines as text, or as one JSON object per line (for log collectors).
    #[arg(long, env = "CAIRN_LOG_FORMAT", value_enum, default_value_t)]
    log_format: LogFormat,
    /// Serve `GET /metrics` (DRBD resource, connection and device metrics, named as
    /// drbd-reactor's Prometheus exporter names them) on this address, plain HTTP without
    /// sign-in (drbd-reactor's port is 9942). Off by default.
    #[arg(long, env = "CAIRN_METRICS_BIND")]
    metrics_bind: Option<SocketAddr>,
}

#[derive(Args)]
struct SimArgs {
    /// How many satellites.
    #[arg(long, default_value_t = 1000)]
    count: usize,
    /// The address they listen on.
    #[arg(long, default_value = "127.0.0.1")]
    ip: std::net::IpAddr,
    /// Satellite i listens on BASE_PORT + i.
    #[arg(long)]
    base_port: u16,
    /// Satellite i is node PREFIX followed by i in five digits.
    #[arg(long, default_value = "node-")]
    name_prefix: String,
    /// File holding the cluster secret (the controller's <data-dir>/cluster-secret).
    #[arg(long)]
    cluster_secret_file: PathBuf,
    /// Size of every pool, GiB.
    #[arg(long, default_value_t = 10240)]
    pool_gib: i64,
    /// Mutual TLS as a real satellite's --tls-cert (all three or none; the nodes' interfaces are then SSL).
    #[arg(long)]
    tls_cert: Option<PathBuf>,
    /// This satellite's private key (PEM).
    #[arg(long)]
    tls_key: Option<PathBuf>,
    /// The CA that signed the controller's client certificate (PEM).
    #[arg(long)]
    tls_ca: Option<PathBuf>,
}

async fn run_sim(a: SimArgs) -> anyhow::Result<()> {
    let secret = std::fs::read_to_string(&a.cluster_secret_file)
        .with_context(|| format!("read cluster secret {}", a.cluster_secret_file.display()))?
        .trim()
        .to_string();
    let cfg = cairn_satellite::sim::SimConfig {
        count: a.count,
        ip: a.ip,
        base_port: a.base_port,
        name_prefix: a.name_prefix,
        secret,
        pool_kib: a.pool_gib.saturating_mul(1024 * 1024),
        tls: match (a.tls_cert, a.tls_key, a.tls_ca) {
            (Some(cert), Some(key), Some(ca)) => Some(TlsFiles { cert, key, ca }),
            (None, None, None) => None,
            _ => anyhow::bail!("TLS needs all three of --tls-cert, --tls-key and --tls-ca"),
        },
    };
    cairn_satellite::sim::run(&cfg, shutdown_signal()).await.context("simulated satellites")?;
    Ok(())
}

fn hostname() -> String {
    cairn_satellite::server::hostname().unwrap_or_else(|| "localhost".into())
}

impl SatelliteArgs {
    fn resolve(&self) -> anyhow::Result<SatelliteConfig> {
        let file = match &self.config {
            Some(path) => {
                let text = std::fs::read_to_string(path).with_context(|| format!("read config file {}", path.display()))?;
                SatelliteToml::parse(&text).with_context(|| format!("parse config file {}", path.display()))?
            }
            None => SatelliteToml::default(),
        };
        let secret = match std::env::var("CAIRN_CLUSTER_SECRET").ok().filter(|s| !s.is_empty()) {
            Some(s) => s,
            None => match self.cluster_secret_file.clone().or(file.cluster_secret_file.clone()) {
                Some(p) => std::fs::read_to_string(&p).with_context(|| format!("read cluster secret {}", p.display()))?.trim().to_string(),
                None => String::new(),
            },
        };
        let tls =
            match (self.tls_cert.clone().or(file.tls_cert), self.tls_key.clone().or(file.tls_key), self.tls_ca.clone().or(file.tls_ca)) {
                (Some(cert), Some(key), Some(ca)) => Some(TlsFiles { cert, key, ca }),
                (None, None, None) => None,
                _ => anyhow::bail!("TLS needs all three of --tls-cert, --tls-key and --tls-ca"),
            };
        let port = if tls.is_some() { DEFAULT_TLS_PORT } else { DEFAULT_PORT };
        Ok(SatelliteConfig {
            tls,
            node_name: self.node_name.clone().or(file.node_name).unwrap_or_else(hostname),
            listen: self.listen.or(file.listen).unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], port))),
            data_dir: self.data_dir.clone().or(file.data_dir).unwrap_or_else(|| PathBuf::from("/var/lib/cairn-satellite")),
            cluster_secret: secret,
            command_timeout: std::time::Duration::from_secs(self.command_timeout.or(file.command_timeout_secs).unwrap_or(60)),
            drbd_config_dir: self.drbd_config_dir.clone().or(file.drbd_config_dir),
            drbd_config_only: self.drbd_config_only || file.drbd_config_only.unwrap_or(false),
            allow_ext_files: if self.allow_ext_files.is_empty() {
                file.allow_ext_files.unwrap_or_default()
            } else {
                self.allow_ext_files.clone()
            },
            allow_pool_dirs: if self.allow_pool_dirs.is_empty() {
                file.allow_pool_dirs.unwrap_or_default()
            } else {
                self.allow_pool_dirs.clone()
            },
            ext_files_root: self.ext_files_root.clone(),
            metrics_bind: self.metrics_bind.or(file.metrics_bind),
        })
    }
}

#[derive(Args)]
struct UpArgs {
    #[command(flatten)]
    controller: ControllerArgs,
    /// The address this node's satellite listens on and is registered with (default 127.0.0.1).
    /// Give an address other machines reach, so satellites there can join this controller and
    /// DRBD can replicate to them.
    #[arg(long, env = "CAIRN_UP_LISTEN_ADDRESS")]
    listen_address: Option<IpAddr>,
    /// The port of this node's satellite (default 3366).
    #[arg(long, env = "CAIRN_UP_SATELLITE_PORT")]
    satellite_port: Option<u16>,
}

impl UpArgs {
    /// Where `cairn up`'s satellite is asked to listen, if the command
    /// line (or environment) says so; refuses addresses no peer can reach.
    fn satellite_listen(&self) -> anyhow::Result<Option<SocketAddr>> {
        if self.listen_address.is_none() && self.satellite_port.is_none() {
            return Ok(None);
        }
        let ip = self.listen_address.unwrap_or(IpAddr::from([127, 0, 0, 1]));
        if ip.is_unspecified() || ip.is_multicast() {
            anyhow::bail!("--listen-address {ip}: give the address other nodes reach this one at (it is registered as the node's address)");
        }
        Ok(Some(SocketAddr::new(ip, self.satellite_port.unwrap_or(DEFAULT_PORT))))
    }
}

#[derive(Args)]
struct ControllerArgs {
    /// TOML configuration file (`[controller]` table).
    #[arg(long, env = "CAIRN_CONFIG")]
    config: Option<PathBuf>,
    /// REST listen address, as LINSTOR's --rest-bind (default 127.0.0.1:3370).
    #[arg(long, env = "CAIRN_REST_BIND")]
    rest_bind: Option<SocketAddr>,
    /// HTTPS listen address, as LINSTOR's --rest-bind-secure (default: --rest-bind's IP, port 3371).
    /// HTTPS is on when --rest-tls-cert and --rest-tls-key are given; the plain listener then
    /// redirects /v1 requests to it.
    #[arg(long, env = "CAIRN_REST_BIND_SECURE")]
    rest_bind_secure: Option<SocketAddr>,
    /// Certificate chain (PEM) of the HTTPS REST listener.
    #[arg(long, env = "CAIRN_REST_TLS_CERT")]
    rest_tls_cert: Option<PathBuf>,
    /// Private key (PEM) of that certificate.
    #[arg(long, env = "CAIRN_REST_TLS_KEY")]
    rest_tls_key: Option<PathBuf>,
    /// Require HTTPS clients to present a certificate signed by this CA (PEM).
    #[arg(long, env = "CAIRN_REST_TLS_CLIENT_CA")]
    rest_tls_client_ca: Option<PathBuf>,
    /// Users file (`cairn user add`): REST clients must then sign in with HTTP Basic as one of
    /// its users (all but /health and the version request).
    #[arg(long, env = "CAIRN_REST_USERS_FILE")]
    rest_users_file: Option<PathBuf>,
    #[command(flatten)]
    database: db::DatabaseArgs,
    /// Client certificate (PEM) for satellites reached over SSL (mutual TLS).
    #[arg(long, env = "CAIRN_SATELLITE_TLS_CERT")]
    satellite_tls_cert: Option<PathBuf>,
    /// Private key (PEM) of that certificate.
    #[arg(long, env = "CAIRN_SATELLITE_TLS_KEY")]
    satellite_tls_key: Option<PathBuf>,
    /// The CA (PEM) that signed the satellites' certificates.
    #[arg(long, env = "CAIRN_SATELLITE_TLS_CA")]
    satellite_tls_ca: Option<PathBuf>,
    /// Send LUKS volume keys to satellites on PLAIN (unencrypted) links too; without it they go
    /// only over SSL links, and a LUKS volume on a PLAIN node reports that its key was kept back.
    #[arg(long, env = "CAIRN_ALLOW_PLAIN_LUKS_KEYS")]
    allow_plain_luks_keys: bool,
    /// A CA (PEM) trusted besides the system's roots for other controllers reached over https://
    /// (LINSTOR remotes' URLs, `backup ship`).
    #[arg(long, env = "CAIRN_REMOTE_TLS_CA")]
    remote_tls_ca: Option<PathBuf>,
    /// Log lines as text, or as one JSON object per line (for log collectors).
    #[arg(long, env = "CAIRN_LOG_FORMAT", value_enum, default_value_t)]
    log_format: LogFormat,
}

/// The `[controller]` table of a configuration file, or the defaults.
fn controller_config_file(path: Option<&PathBuf>) -> anyhow::Result<ControllerConfig> {
    Ok(match path {
        Some(path) => {
            let text = std::fs::read_to_string(path).with_context(|| format!("read config file {}", path.display()))?;
            ConfigFile::parse(&text).with_context(|| format!("parse config file {}", path.display()))?.controller
        }
        None => ControllerConfig::default(),
    })
}

impl ControllerArgs {
    /// Defaults, then the config file, then env and flags.
    fn resolve(&self, default_data_dir: Option<PathBuf>) -> anyhow::Result<ControllerConfig> {
        let mut cfg = controller_config_file(self.config.as_ref())?;
        if let (Some(d), None) = (default_data_dir, &self.config) {
            cfg.data_dir = d;
        }
        if let Some(b) = self.rest_bind {
            cfg.rest_bind = b;
        }
        if let Some(b) = self.rest_bind_secure {
            cfg.rest_bind_secure = Some(b);
        }
        for (flag, into) in [
            (&self.rest_tls_cert, &mut cfg.rest_tls_cert),
            (&self.rest_tls_key, &mut cfg.rest_tls_key),
            (&self.rest_tls_client_ca, &mut cfg.rest_tls_client_ca),
            (&self.rest_users_file, &mut cfg.rest_users_file),
            (&self.remote_tls_ca, &mut cfg.remote_tls_ca),
        ] {
            if let Some(p) = flag {
                *into = Some(p.clone());
            }
        }
        if cfg.rest_tls_cert.is_some() != cfg.rest_tls_key.is_some() {
            anyhow::bail!("HTTPS needs both --rest-tls-cert and --rest-tls-key");
        }
        if cfg.rest_tls_cert.is_none() && (cfg.rest_tls_client_ca.is_some() || cfg.rest_bind_secure.is_some()) {
            anyhow::bail!("--rest-tls-client-ca and --rest-bind-secure need HTTPS: give --rest-tls-cert and --rest-tls-key");
        }
        self.database.apply(&mut cfg);
        if let Some(p) = &self.satellite_tls_cert {
            cfg.satellite_tls_cert = Some(p.clone());
        }
        if let Some(p) = &self.satellite_tls_key {
            cfg.satellite_tls_key = Some(p.clone());
        }
        if let Some(p) = &self.satellite_tls_ca {
            cfg.satellite_tls_ca = Some(p.clone());
        }
        cfg.allow_plain_luks_keys |= self.allow_plain_luks_keys;
        let given = [&cfg.satellite_tls_cert, &cfg.satellite_tls_key, &cfg.satellite_tls_ca].iter().filter(|p| p.is_some()).count();
        if given != 0 && given != 3 {
            anyhow::bail!("satellite TLS needs all three of --satellite-tls-cert, --satellite-tls-key and --satellite-tls-ca");
        }
        Ok(cfg)
    }
}

/// How the daemons write their log lines.
#[derive(Clone, Copy, Default, clap::ValueEnum)]
enum LogFormat {
    /// One human-readable line per event.
    #[default]
    Text,
    /// One JSON object per line: `timestamp`, `level`, `target`, `message` and the event's
    /// fields beside them.
    Json,
}

/// Logs to stderr at `default` (or as `RUST_LOG` says), as `format` says.
/// Without `RUST_LOG` the levels can be changed while the process runs
/// (`PUT /v1/controller/config`, [`cairn_controller::logging`]).
fn init_logging(default: &str, format: LogFormat) {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let from_env = tracing_subscriber::EnvFilter::try_from_default_env().ok();
    let controllable = from_env.is_none();
    let filter = from_env.unwrap_or_else(|| tracing_subscriber::EnvFilter::new(default));
    let (filter, handle) = tracing_subscriber::reload::Layer::new(filter);
    // One of the two is Some; a None layer lets every event pass untouched.
    let (text, json) = match format {
        LogFormat::Text => (
            Some(
                tracing_subscriber::fmt::layer()
                    .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
                    .with_writer(std::io::stderr),
            ),
            None,
        ),
        LogFormat::Json => (None, Some(tracing_subscriber::fmt::layer().json().flatten_event(true).with_writer(std::io::stderr))),
    };
    tracing_subscriber::registry().with(filter).with(text).with(json).init();
    if controllable {
        let level = cairn_controller::logging::parse_level(default).unwrap_or("INFO");
        cairn_controller::logging::install(Box::new(LogLevels { handle, levels: std::sync::Mutex::new((level, level)) }));
    }
}

/// The run-time control of the log filter.
struct LogLevels {
    handle: tracing_subscriber::reload::Handle<tracing_subscriber::EnvFilter, tracing_subscriber::Registry>,
    /// (libraries, Cairn)
    levels: std::sync::Mutex<(&'static str, &'static str)>,
}

impl cairn_controller::logging::LogControl for LogLevels {
    fn levels(&self) -> (String, String) {
        let l = self.levels.lock().map(|g| *g).unwrap_or(("INFO", "INFO"));
        (l.0.to_string(), l.1.to_string())
    }

    fn set(&self, libraries: Option<&str>, cairn: Option<&str>) -> Result<(), String> {
        let mut g = self.levels.lock().map_err(|_| "the log level lock is poisoned".to_string())?;
        let parse = |l: Option<&str>, old: &'static str| match l {
            Some(l) => cairn_controller::logging::parse_level(l).ok_or_else(|| format!("'{l}' is not a log level")),
            None => Ok(old),
        };
        let next = (parse(libraries, g.0)?, parse(cairn, g.1)?);
        let filter =
            tracing_subscriber::EnvFilter::try_new(cairn_controller::logging::directives(next.0, next.1)).map_err(|e| e.to_string())?;
        self.handle.reload(filter).map_err(|e| e.to_string())?;
        *g = next;
        Ok(())
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(e) => {
                tracing::warn!("cannot listen for SIGTERM: {e}");
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
    tracing::info!("shutting down");
}

async fn run_controller(cfg: ControllerConfig) -> anyhow::Result<()> {
    let controller = Controller::start(&cfg).await.context("start controller")?;
    let addr = controller.rest_addr().context("read REST address")?;
    match controller.rest_secure_addr().transpose().context("read HTTPS address")? {
        Some(https) => tracing::info!(rest = %addr, https = %https, data_dir = %cfg.data_dir.display(), "controller ready"),
        None => tracing::info!(rest = %addr, data_dir = %cfg.data_dir.display(), "controller ready"),
    }
    controller.serve(shutdown_signal()).await.context("serve REST")?;
    Ok(())
}

async fn run_satellite(cfg: SatelliteConfig) -> anyhow::Result<()> {
    let sat = Satellite::start(&cfg).await.context("start satellite")?;
    let listen = sat.local_addr().context("read listen address")?;
    match sat.metrics_addr().transpose().context("read metrics address")? {
        Some(metrics) => tracing::info!(node = %cfg.node_name, listen = %listen, metrics = %metrics, "satellite ready"),
        None => tracing::info!(node = %cfg.node_name, listen = %listen, "satellite ready"),
    }
    sat.serve(shutdown_signal()).await.context("serve satellite")?;
    Ok(())
}

/// `cairn up`: the controller, a satellite for this host (127.0.0.1:3366
/// unless `--listen-address`/`--satellite-port` say otherwise), the node and
/// a FILE_THIN pool `DfltStorPool` under the data directory. The node's name
/// is kept in `<data-dir>/up-node`: other machines may join this controller,
/// and a restart must find this host's node, never one of theirs.
async fn run_up(mut cfg: ControllerConfig, asked: Option<SocketAddr>) -> anyhow::Result<()> {
    cfg.data_dir = std::path::absolute(&cfg.data_dir).context("resolve data directory")?;
    let controller = Controller::start(&cfg).await.context("start controller")?;
    let secret = std::fs::read_to_string(cfg.secret_path()).context("read cluster secret")?.trim().to_string();
    let state = controller.state().clone();
    let node_file = cfg.data_dir.join("up-node");
    let remembered = std::fs::read_to_string(&node_file).ok().map(|n| n.trim().to_string()).filter(|n| !n.is_empty());
    // Data directories from before up-node: the node named after this host.
    let wanted = remembered.clone().unwrap_or_else(hostname);
    let existing = state
        .read()
        .nodes
        .values()
        .find(|n| n.node_type.has_satellite() && n.name.eq_ignore_ascii_case(&wanted))
        .map(|n| (n.name.clone(), n.net_interfaces.first().map(|i| (i.name.clone(), i.address.to_string(), i.satellite_port))));
    if remembered.is_some() && existing.is_none() {
        tracing::warn!(node = %wanted, "the node this data directory registered is gone; registering it again");
    }
    let mut node = wanted;
    let listen = match (&existing, asked) {
        (Some((_, Some((_, addr, port)))), None) => {
            // Restarted without an address: stay where the node is registered.
            let ip: IpAddr = addr.parse().with_context(|| format!("node {node} is registered at '{addr}', not an IP address"))?;
            SocketAddr::new(ip, port.unwrap_or(DEFAULT_PORT))
        }
        (_, Some(a)) => a,
        (_, None) => SocketAddr::from(([127, 0, 0, 1], DEFAULT_PORT)),
    };
    let sat_cfg = |node: &str| SatelliteConfig {
        node_name: node.to_string(),
        listen,
        data_dir: cfg.data_dir.join("satellite"),
        cluster_secret: secret.clone(),
        command_timeout: std::time::Duration::from_secs(60),
        tls: None,
        drbd_config_dir: None,
        drbd_config_only: false,
        allow_ext_files: Vec::new(),
        // The pool `cairn up` makes lives beside the satellite's directory.
        allow_pool_dirs: vec![cfg.data_dir.join("pool")],
        ext_files_root: None,
        metrics_bind: None,
    };
    let interface = cairn_api::node::NetInterface {
        name: "default".into(),
        address: listen.ip().to_string(),
        satellite_port: Some(i64::from(listen.port())),
        ..Default::default()
    };
    if let Some((name, current)) = existing {
        node = name;
        // Restarted with another --listen-address: the node moves with it.
        if let Some((nif, address, port)) = current
            && (address != interface.address || port.map(i64::from) != interface.satellite_port)
        {
            tracing::info!(node = %node, from = %address, to = %listen, "moving this node to the address it was started with");
            state
                .mutate(200, |c, _| c.modify_net_interface(&node, &nif, &interface))
                .await
                .map_err(|e| anyhow::anyhow!("update the node's address: {e}"))?;
        }
    } else {
        let req = |name: &str| cairn_api::node::Node {
            name: name.to_string(),
            node_type: "SATELLITE".into(),
            net_interfaces: vec![interface.clone()],
            ..Default::default()
        };
        let r = state.mutate(201, |c, ctx| c.create_node(&req(&node), ctx)).await;
        if r.is_err() {
            node = "cairn-node".into();
            state.mutate(201, |c, ctx| c.create_node(&req(&node), ctx)).await.map_err(|e| anyhow::anyhow!("register node: {e}"))?;
        }
        let pool_dir = cfg.data_dir.join("pool").display().to_string();
        let sp = cairn_api::storage_pool::StoragePool {
            storage_pool_name: "DfltStorPool".into(),
            provider_kind: "FILE_THIN".into(),
            props: [("StorDriver/StorPoolName".to_string(), pool_dir)].into_iter().collect(),
            ..Default::default()
        };
        state.mutate(201, |c, ctx| c.create_stor_pool(&node, &sp, ctx)).await.map_err(|e| anyhow::anyhow!("create storage pool: {e}"))?;
    }
    if remembered.as_deref() != Some(node.as_str()) {
        std::fs::write(&node_file, format!("{node}\n")).with_context(|| format!("write {}", node_file.display()))?;
    }
    // A first try on a host without DRBD 9: unreplicated volumes by
    // default instead of refusing every resource.
    if let Err(missing) = cairn_satellite::drbd::probe(&cairn_exec::HostRunner, false).await {
        if !state.read().ctrl_props.contains_key(cairn_domain::PROP_DEFAULT_LAYER_STACK) {
            let req = cairn_api::PropsModify {
                override_props: [(cairn_domain::PROP_DEFAULT_LAYER_STACK.to_string(), "STORAGE".to_string())].into(),
                ..Default::default()
            };
            state.mutate(200, |c, _| c.modify_ctrl_props(&req)).await.map_err(|e| anyhow::anyhow!("set default layer stack: {e}"))?;
        }
        tracing::debug!(missing = %missing.join("; "), "no DRBD 9 here");
        tracing::info!(
            "no DRBD 9 on this host: new resources are not replicated (controller property {}=STORAGE; delete it once DRBD 9 is installed)",
            cairn_domain::PROP_DEFAULT_LAYER_STACK
        );
    }
    let sat = Satellite::start(&sat_cfg(&node)).await.context("start satellite")?;
    let addr = controller.rest_addr().context("read REST address")?;
    let snapshots = snapshot_support(&cfg.data_dir.join("pool")).await;
    tracing::info!(rest = %addr, node = %node, data_dir = %cfg.data_dir.display(), "cairn is up; {snapshots}");
    let (tx, rx) = tokio::sync::watch::channel(false);
    let sat_task = tokio::spawn(sat.serve({
        let mut rx = rx.clone();
        async move {
            let _ = rx.changed().await;
        }
    }));
    controller.serve(shutdown_signal()).await.context("serve REST")?;
    let _ = tx.send(true);
    drop(rx);
    sat_task.await.context("join satellite")?.context("serve satellite")?;
    Ok(())
}

/// What `cairn up` says about snapshots of its FILE_THIN pool: they are
/// reflink copies, so the pool directory's file system decides.
async fn snapshot_support(dir: &std::path::Path) -> String {
    let files = cairn_storage::file::Files::new(std::sync::Arc::new(cairn_exec::HostRunner), std::time::Duration::from_secs(10));
    let probe = match cairn_storage::file::FilePool::new("DfltStorPool", &dir.display().to_string(), true) {
        Ok(pool) => files.probe_reflink(&pool).await.map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    match probe {
        Ok(true) => "snapshots: yes (the pool's file system makes reflink copies)".into(),
        Ok(false) => format!(
            "snapshots: no ({} has no reflinks; put --data-dir on XFS (reflink=1, mkfs.xfs's default) or Btrfs for them)",
            dir.display()
        ),
        Err(e) => format!("snapshots: unknown ({e})"),
    }
}

/// Runs a client verb and exits with LINSTOR's exit codes.
fn client(global: &cli::Global, run: impl FnOnce(&cli::Ctx) -> i32) -> ! {
    init_logging("warn", LogFormat::Text);
    let code = match cli::Ctx::connect(global) {
        Ok(ctx) => run(&ctx),
        Err(code) => code,
    };
    std::process::exit(code)
}

fn daemon(run: impl std::future::Future<Output = anyhow::Result<()>>, format: LogFormat) -> anyhow::Result<()> {
    init_logging("info", format);
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("start async runtime")?;
    runtime.block_on(run)
}

/// Subcommands that talk to no controller: the client options (`-m`,
/// `--controllers`, ...) are hidden from their help, completions and man
/// pages. `controller`'s own client verbs (`cairn controller version`)
/// still show them.
const LOCAL_COMMANDS: [&str; 8] = ["controller", "satellite", "sim-satellites", "up", "db", "user", "completion", "man"];

/// The command tree as parsed, completed and documented. The client options
/// stay global, so `cairn -m node list` and `cairn node list -m` both work.
/// The local commands get hidden copies of them, which global propagation
/// then leaves alone; `controller`'s client verbs get visible ones.
fn command() -> clap::Command {
    let version = cairn_controller::build_info::describe(&cairn_controller::build_info::controller_version());
    let cmd = Cli::command().version(version);
    let client_options: Vec<clap::Arg> = cmd.get_arguments().filter(|a| a.is_global_set()).cloned().collect();
    let hidden = |sub: clap::Command| sub.args(client_options.iter().map(|a| a.clone().hide(true)));
    let mut cmd = cmd.mut_subcommands(|sub| match sub.get_name() {
        "controller" => hidden(sub.mut_subcommands(|verb| verb.args(client_options.iter().cloned()))),
        name if LOCAL_COMMANDS.contains(&name) => hidden(sub),
        _ => sub,
    });
    cmd.build();
    cmd
}

/// Errors end the program with one line (the chain of causes, no
/// backtrace), whatever RUST_BACKTRACE says.
fn main() -> std::process::ExitCode {
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run() -> anyhow::Result<()> {
    let mut cmd = command();
    let mut matches = cmd.get_matches_mut();
    let cli = Cli::from_arg_matches_mut(&mut matches).unwrap_or_else(|e| e.format(&mut cmd).exit());
    let g = &cli.global;
    match cli.command {
        Command::Controller(ControllerCmd { verb: Some(v), .. }) => client(g, |c| cli::controller::run(c, v)),
        Command::Controller(ControllerCmd { verb: None, daemon: args }) => {
            let format = args.log_format;
            daemon(run_controller(args.resolve(None)?), format)
        }
        Command::Satellite(args) => {
            let format = args.log_format;
            daemon(run_satellite(args.resolve()?), format)
        }
        Command::SimSatellites(args) => daemon(run_sim(args), LogFormat::Text),
        Command::Up(args) => {
            // Loop devices need root: say so now, not in a log line later.
            if !cairn_satellite::tools::is_root() {
                anyhow::bail!("cairn up needs root: its satellite makes loop devices (run it with sudo)");
            }
            let listen = args.satellite_listen()?;
            let format = args.controller.log_format;
            daemon(run_up(args.controller.resolve(Some(PathBuf::from("cairn-data")))?, listen), format)
        }
        Command::Node(cmd) => client(g, |c| cli::node::run(c, cmd)),
        Command::StoragePool(cmd) => client(g, |c| cli::storage_pool::run(c, cmd)),
        Command::ResourceGroup(cmd) => client(g, |c| cli::resource_group::run(c, cmd)),
        Command::VolumeGroup(cmd) => client(g, |c| cli::resource_group::run_vg(c, cmd)),
        Command::ResourceDefinition(cmd) => client(g, |c| cli::resource_definition::run(c, cmd)),
        Command::VolumeDefinition(cmd) => client(g, |c| cli::resource_definition::run_vd(c, cmd)),
        Command::Resource(cmd) => client(g, |c| cli::resource::run(c, cmd)),
        Command::Volume(cmd) => client(g, |c| cli::resource::run_volume(c, cmd)),
        Command::ResourceConnection(cmd) => client(g, |c| cli::resource_connection::run(c, cmd)),
        Command::NodeConnection(cmd) => client(g, |c| cli::node_connection::run(c, cmd)),
        Command::KeyValueStore(cmd) => client(g, |c| cli::kvs::run(c, cmd)),
        Command::File(cmd) => client(g, |c| cli::file::run(c, cmd)),
        Command::Remote(cmd) => client(g, |c| cli::remote::run(c, cmd)),
        Command::Advise(cmd) => client(g, |c| cli::advise::run(c, cmd)),
        Command::Schedule(cmd) => client(g, |c| cli::schedule::run(c, cmd)),
        Command::Backup(cmd) => client(g, |c| cli::backup::run(c, cmd)),
        Command::ErrorReports(cmd) => client(g, |c| cli::controller::run_error_reports(c, cmd)),
        Command::SosReport(cmd) => client(g, |c| cli::controller::run_sos_report(c, cmd)),
        Command::SpaceReporting(cmd) => client(g, |c| cli::controller::run_space_reporting(c, cmd)),
        Command::Snapshot(cmd) => client(g, |c| cli::snapshot::run(c, cmd)),
        Command::Encryption(cmd) => client(g, |c| cli::encryption::run(c, cmd)),
        Command::PhysicalStorage(cmd) => client(g, |c| cli::physical_storage::run(c, cmd)),
        Command::Db(cmd) => db::run(cmd),
        Command::User(cmd) => run_user(cmd),
        Command::Completion { shell } => {
            generate::completion(&mut command(), shell);
            Ok(())
        }
        Command::Man { out_dir } => generate::man_pages(&command(), &out_dir),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every subcommand, option and positional argument at every depth, as
    /// `cairn a b --opt`, that has no help text.
    fn undocumented(cmd: &clap::Command, path: &str, out: &mut Vec<String>) {
        for arg in cmd.get_arguments() {
            let auto = matches!(arg.get_id().as_str(), "help" | "version");
            if !auto && arg.get_help().is_none() && arg.get_long_help().is_none() {
                let name = arg.get_long().map(|l| format!("--{l}")).unwrap_or_else(|| arg.get_id().to_string().to_uppercase());
                out.push(format!("{path} {name}"));
            }
        }
        for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
            let sub_path = format!("{path} {}", sub.get_name());
            if sub.get_about().is_none() && sub.get_long_about().is_none() {
                out.push(sub_path.clone());
            }
            undocumented(sub, &sub_path, out);
        }
    }

    #[test]
    fn every_subcommand_and_argument_has_help() {
        let mut missing = Vec::new();
        undocumented(&command(), "cairn", &mut missing);
        assert!(missing.is_empty(), "{} without help text:\n{}", missing.len(), missing.join("\n"));
    }

    #[test]
    fn the_walk_finds_what_lacks_help() {
        let cmd = clap::Command::new("t").subcommand(clap::Command::new("bare").arg(clap::Arg::new("thing")));
        let mut missing = Vec::new();
        undocumented(&cmd, "t", &mut missing);
        assert_eq!(missing, ["t bare", "t bare THING"]);
    }
}
