//! Satellite configuration.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Default satellite port (plain).
pub const DEFAULT_PORT: u16 = 3366;
/// Default satellite port (TLS).
pub const DEFAULT_TLS_PORT: u16 = 3367;

/// Everything a satellite needs to start.
#[derive(Debug, Clone, PartialEq)]
pub struct SatelliteConfig {
    /// The node name the controller knows this satellite by.
    pub node_name: String,
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    /// Shared secret the controller must present.
    pub cluster_secret: String,
    /// Time limit of every external command.
    pub command_timeout: Duration,
    /// Mutual TLS with the controller; plain HTTP when absent.
    pub tls: Option<crate::tls::TlsFiles>,
    /// Where the DRBD `.res` files go (default `<data_dir>/drbd.d`).
    pub drbd_config_dir: Option<PathBuf>,
    /// Without the DRBD 9 kernel module, still write and check DRBD
    /// configuration and metadata instead of refusing the layer.
    pub drbd_config_only: bool,
    /// Directories external files may be written into (LINSTOR's
    /// `--allow-ext-files`); none by default.
    pub allow_ext_files: Vec<String>,
    /// Directories FILE and FILE_THIN pools may be in (besides
    /// `data_dir`), with everything below them.
    pub allow_pool_dirs: Vec<PathBuf>,
    /// Test seam: external files are written below this directory instead
    /// of `/` (several satellites share one host in the tests).
    pub ext_files_root: Option<PathBuf>,
    /// Where `GET /metrics` (DRBD metrics in drbd-reactor's names) is
    /// served, plain HTTP without authentication; off when None.
    pub metrics_bind: Option<SocketAddr>,
}

impl SatelliteConfig {
    pub fn drbd_dir(&self) -> PathBuf {
        self.drbd_config_dir.clone().unwrap_or_else(|| self.data_dir.join("drbd.d"))
    }
}

/// The `[satellite]` table of a TOML configuration file. Every field is
/// optional; flags and environment variables override it.
#[derive(Debug, Clone, Default, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SatelliteToml {
    pub node_name: Option<String>,
    pub listen: Option<SocketAddr>,
    pub data_dir: Option<PathBuf>,
    pub cluster_secret_file: Option<PathBuf>,
    pub command_timeout_secs: Option<u64>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub tls_ca: Option<PathBuf>,
    pub drbd_config_dir: Option<PathBuf>,
    pub drbd_config_only: Option<bool>,
    pub allow_ext_files: Option<Vec<String>>,
    pub allow_pool_dirs: Option<Vec<PathBuf>>,
    pub metrics_bind: Option<SocketAddr>,
}

#[derive(Debug, Clone, Default, PartialEq, serde::Deserialize)]
#[serde(default)]
struct FileShape {
    satellite: SatelliteToml,
}

impl SatelliteToml {
    /// Reads the `[satellite]` table; other tables (`[controller]`) are
    /// left to their owners.
    pub fn parse(text: &str) -> Result<SatelliteToml, toml::de::Error> {
        toml::from_str::<FileShape>(text).map(|f| f.satellite)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn satellite_table_is_read_and_checked() {
        let t = SatelliteToml::parse(
            "[controller]\nrest_bind = \"127.0.0.1:1\"\n[satellite]\nnode_name = \"n1\"\nlisten = \"127.0.0.2:3366\"\n",
        )
        .unwrap();
        assert_eq!(t.node_name.as_deref(), Some("n1"));
        assert_eq!(t.listen.map(|l| l.port()), Some(DEFAULT_PORT));
        assert!(SatelliteToml::parse("[satellite]\nnode_nam = \"x\"\n").is_err());
        let t = SatelliteToml::parse("[satellite]\nallow_ext_files = [\"/etc/app\", \"/srv/conf\"]\n").unwrap();
        assert_eq!(t.allow_ext_files, Some(vec!["/etc/app".to_string(), "/srv/conf".to_string()]));
        let t = SatelliteToml::parse("[satellite]\nallow_pool_dirs = [\"/srv/pools\"]\n").unwrap();
        assert_eq!(t.allow_pool_dirs, Some(vec![PathBuf::from("/srv/pools")]));
    }
}
