//! `cairn`: the one binary. `cairn controller` runs the controller,
//! `cairn up` runs a single-node Cairn for a first try.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use cairn_controller::config::ConfigFile;
use cairn_controller::{Controller, ControllerConfig};
use clap::{Args, Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "cairn",
    version,
    about = "Replicated block storage for Linux clusters, LINSTOR-compatible"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the controller: the cluster database and the LINSTOR REST API.
    Controller(ControllerArgs),
    /// Run Cairn on this machine for a first try (controller on 127.0.0.1:3370, data in ./cairn-data).
    Up(ControllerArgs),
}

#[derive(Args)]
struct ControllerArgs {
    /// TOML configuration file (`[controller]` table).
    #[arg(long, env = "CAIRN_CONFIG")]
    config: Option<PathBuf>,
    /// REST listen address, as LINSTOR's --rest-bind (default 127.0.0.1:3370).
    #[arg(long, env = "CAIRN_REST_BIND")]
    rest_bind: Option<SocketAddr>,
    /// Directory for the database and state (default /var/lib/cairn; ./cairn-data for `up`).
    #[arg(long, env = "CAIRN_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Database file (default <data-dir>/cairn.db).
    #[arg(long, env = "CAIRN_DB_PATH")]
    db_path: Option<PathBuf>,
}

impl ControllerArgs {
    /// Defaults, then the config file, then env and flags.
    fn resolve(&self, default_data_dir: Option<PathBuf>) -> anyhow::Result<ControllerConfig> {
        let mut cfg = match &self.config {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("read config file {}", path.display()))?;
                ConfigFile::parse(&text)
                    .with_context(|| format!("parse config file {}", path.display()))?
                    .controller
            }
            None => ControllerConfig::default(),
        };
        if let (Some(d), None) = (default_data_dir, &self.config) {
            cfg.data_dir = d;
        }
        if let Some(b) = self.rest_bind {
            cfg.rest_bind = b;
        }
        if let Some(d) = &self.data_dir {
            cfg.data_dir = d.clone();
        }
        if let Some(p) = &self.db_path {
            cfg.db_path = Some(p.clone());
        }
        Ok(cfg)
    }
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
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
    tracing::info!(rest = %addr, data_dir = %cfg.data_dir.display(), "controller ready");
    controller
        .serve(shutdown_signal())
        .await
        .context("serve REST")?;
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    init_logging();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("start async runtime")?;
    match cli.command {
        Command::Controller(args) => runtime.block_on(run_controller(args.resolve(None)?)),
        Command::Up(args) => runtime.block_on(run_controller(
            args.resolve(Some(PathBuf::from("cairn-data")))?,
        )),
    }
}
