//! `cairn db export` / `cairn db import`: the controller's database as a
//! JSON document (cairn_store::dump, the format of `POST
//! /v1/controller/database/export`), so an operator moves a cluster from
//! SQLite to PostgreSQL and back. As LINSTOR's `linstor-database
//! export-db`/`import-db` they work on the database itself, with the
//! controller's configuration, not through a running controller.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use cairn_controller::ControllerConfig;
use cairn_store::{Location, dump};
use clap::{Args, Subcommand};

/// The controller's database options, shared by `cairn controller`,
/// `cairn up` and `cairn db`.
#[derive(Args)]
pub struct DatabaseArgs {
    /// Directory for the database and state (default /var/lib/cairn; ./cairn-data for `up`).
    #[arg(long, env = "CAIRN_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Database file (default <data-dir>/cairn.db).
    #[arg(long, env = "CAIRN_DB_PATH", conflicts_with = "db_url")]
    db_path: Option<PathBuf>,
    /// The database as a URL instead of a file: postgres://USER:PASSWORD@HOST:PORT/DATABASE
    /// for PostgreSQL, sqlite:PATH for SQLite (the default is SQLite in the data directory).
    #[arg(long, env = "CAIRN_DB_URL")]
    db_url: Option<String>,
}

impl DatabaseArgs {
    /// Overrides the configuration file's: a database given here replaces
    /// the file's, whichever way the file gives it.
    pub fn apply(&self, cfg: &mut ControllerConfig) {
        if let Some(d) = &self.data_dir {
            cfg.data_dir = d.clone();
        }
        if let Some(p) = &self.db_path {
            cfg.db_path = Some(p.clone());
            cfg.db_url = None;
        }
        if let Some(u) = &self.db_url {
            cfg.db_url = Some(u.clone());
            cfg.db_path = None;
        }
    }
}

/// Where the database is: as the controller finds it.
#[derive(Args)]
pub struct DbArgs {
    /// The controller's TOML configuration file: its `[controller]` db_url, db_path or data_dir.
    #[arg(long, env = "CAIRN_CONFIG")]
    config: Option<PathBuf>,
    #[command(flatten)]
    database: DatabaseArgs,
}

#[derive(Subcommand)]
pub enum DbCmd {
    /// Write every object of the database to FILE as JSON (LINSTOR's `linstor-database export-db`).
    /// The file is created readable by its owner only (it holds the cluster's secrets) and never
    /// overwritten; `-` writes to standard output. Safe while the controller runs.
    Export {
        #[command(flatten)]
        db: DbArgs,
        /// The file to write.
        file: PathBuf,
    },
    /// Write the objects of an export FILE into the database in one transaction (LINSTOR's
    /// `linstor-database import-db`). Stop the controller first. A database that holds objects
    /// already is refused unless --replace.
    Import {
        #[command(flatten)]
        db: DbArgs,
        /// The export to read; `-` reads standard input.
        file: PathBuf,
        /// Delete what the database holds, in the same transaction.
        #[arg(long)]
        replace: bool,
    },
}

impl DbArgs {
    /// The database, and the controller's data directory when the
    /// database is the SQLite file in it.
    fn location(&self) -> anyhow::Result<(Location, PathBuf)> {
        let mut cfg = crate::controller_config_file(self.config.as_ref())?;
        self.database.apply(&mut cfg);
        Ok((cfg.db_location()?, cfg.data_dir))
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

pub fn run(cmd: DbCmd) -> anyhow::Result<()> {
    match cmd {
        DbCmd::Export { db, file } => export(&db, &file),
        DbCmd::Import { db, file, replace } => import(&db, &file, replace),
    }
}

fn export(db: &DbArgs, file: &PathBuf) -> anyhow::Result<()> {
    let (location, _) = db.location()?;
    let store = location.open().context("open the database")?;
    let objects = store.load().context("read the database")?;
    let doc = dump::export(&objects, store.describe(), now_ms())?;
    let mut bytes = serde_json::to_vec_pretty(&doc).context("encode the export")?;
    bytes.push(b'\n');
    if file.as_os_str() == "-" {
        std::io::stdout().write_all(&bytes).context("write the export")?;
        return Ok(());
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut f = options.open(file).with_context(|| format!("create {} (an existing file is never overwritten)", file.display()))?;
    f.write_all(&bytes).and_then(|()| f.sync_all()).with_context(|| format!("write {}", file.display()))?;
    eprintln!("exported {} objects from {} to {}", objects.len(), store.describe(), file.display());
    Ok(())
}

fn import(db: &DbArgs, file: &PathBuf, replace: bool) -> anyhow::Result<()> {
    let bytes = if file.as_os_str() == "-" {
        let mut b = Vec::new();
        std::io::Read::read_to_end(&mut std::io::stdin(), &mut b).context("read standard input")?;
        b
    } else {
        std::fs::read(file).with_context(|| format!("read {}", file.display()))?
    };
    let objects = dump::parse(&bytes).with_context(|| format!("read the export {}", file.display()))?;
    let (location, data_dir) = db.location()?;
    // A controller serving this data directory's SQLite file would never
    // see the import and would write over it: refused while it runs.
    let _lock = match &location {
        Location::Sqlite(_) => lock_data_dir(&data_dir)?,
        Location::Postgres(_) => None,
    };
    let store = location.open().context("open the database")?;
    let n = dump::import(store.as_ref(), objects, replace)?;
    eprintln!("imported {n} objects into {}", store.describe());
    Ok(())
}

/// Holds the controller's lock of its data directory, if there is one.
fn lock_data_dir(dir: &std::path::Path) -> anyhow::Result<Option<std::fs::File>> {
    let Ok(f) = std::fs::File::options().write(true).open(dir.join("controller.lock")) else {
        return Ok(None);
    };
    match f.try_lock() {
        Ok(()) => Ok(Some(f)),
        Err(std::fs::TryLockError::WouldBlock) => {
            anyhow::bail!("a controller is running on {}: stop it before importing", dir.display())
        }
        Err(std::fs::TryLockError::Error(e)) => Err(e).with_context(|| format!("lock {}", dir.display())),
    }
}
