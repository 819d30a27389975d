//! Controller configuration: defaults, overridden by a TOML file, then by
//! environment variables and command-line flags (the binary merges those).

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;

/// Default REST address: loopback only until an operator opens it up.
pub const DEFAULT_REST_BIND: &str = "127.0.0.1:3370";
/// Default data directory.
pub const DEFAULT_DATA_DIR: &str = "/var/lib/cairn";

/// Everything the controller needs to start.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ControllerConfig {
    /// Address of the plain-HTTP REST listener (LINSTOR's `--rest-bind`).
    pub rest_bind: SocketAddr,
    /// Directory for the database and controller state.
    pub data_dir: PathBuf,
    /// Database file; defaults to `<data_dir>/cairn.db`.
    pub db_path: Option<PathBuf>,
    /// The secret satellites must present; defaults to
    /// `<data_dir>/cluster-secret`, created on first start.
    pub cluster_secret_file: Option<PathBuf>,
    /// Client certificate, key and CA for satellites whose interface uses
    /// `SSL` (mutual TLS). Without them such satellites stay unreachable.
    pub satellite_tls_cert: Option<PathBuf>,
    pub satellite_tls_key: Option<PathBuf>,
    pub satellite_tls_ca: Option<PathBuf>,
}

impl Default for ControllerConfig {
    fn default() -> Self {
        ControllerConfig {
            rest_bind: DEFAULT_REST_BIND.parse().unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 3370))),
            data_dir: PathBuf::from(DEFAULT_DATA_DIR),
            db_path: None,
            cluster_secret_file: None,
            satellite_tls_cert: None,
            satellite_tls_key: None,
            satellite_tls_ca: None,
        }
    }
}

/// The configuration file's shape: `[controller]` holds [`ControllerConfig`];
/// other tables (`[satellite]`) belong to other parts of the binary.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct ConfigFile {
    pub controller: ControllerConfig,
}

impl ConfigFile {
    pub fn parse(text: &str) -> Result<ConfigFile, toml::de::Error> {
        toml::from_str(text)
    }
}

impl ControllerConfig {
    pub fn secret_path(&self) -> PathBuf {
        self.cluster_secret_file.clone().unwrap_or_else(|| self.data_dir.join("cluster-secret"))
    }

    pub fn db_path(&self) -> PathBuf {
        self.db_path.clone().unwrap_or_else(|| self.data_dir.join("cairn.db"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_gives_defaults() {
        let c = ConfigFile::parse("").unwrap().controller;
        assert_eq!(c, ControllerConfig::default());
        assert_eq!(c.rest_bind.to_string(), "127.0.0.1:3370");
        assert_eq!(c.db_path(), PathBuf::from("/var/lib/cairn/cairn.db"));
    }

    #[test]
    fn file_values_override_defaults() {
        let c = ConfigFile::parse("[controller]\nrest_bind = \"0.0.0.0:4000\"\ndata_dir = \"/tmp/x\"\n").unwrap().controller;
        assert_eq!(c.rest_bind.port(), 4000);
        assert_eq!(c.db_path(), PathBuf::from("/tmp/x/cairn.db"));
    }

    #[test]
    fn unknown_keys_are_errors() {
        assert!(ConfigFile::parse("[controller]\nrest_bnd = \"0.0.0.0:1\"\n").is_err());
        assert!(ConfigFile::parse("[satellite]\nnode_name = \"x\"\n").is_ok());
        assert!(ConfigFile::parse("[controller]\nrest_bind = \"not an address\"\n").is_err());
    }
}
