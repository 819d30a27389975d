//! Controller configuration: defaults, overridden by a TOML file, then by
//! environment variables and command-line flags (the binary merges those).

use std::net::SocketAddr;
use std::path::PathBuf;

use cairn_store::{Location, StoreError};
use serde::Deserialize;

/// Default REST address: loopback only until an operator opens it up.
pub const DEFAULT_REST_BIND: &str = "127.0.0.1:3370";
/// LINSTOR's HTTPS port; the HTTPS listener's address defaults to the
/// plain listener's IP address with this port.
pub const DEFAULT_REST_SECURE_PORT: u16 = 3371;
/// Default data directory.
pub const DEFAULT_DATA_DIR: &str = "/var/lib/cairn";

/// Everything the controller needs to start.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ControllerConfig {
    /// Address of the plain-HTTP REST listener (LINSTOR's `--rest-bind`).
    pub rest_bind: SocketAddr,
    /// Address of the HTTPS REST listener (LINSTOR's `--rest-bind-secure`);
    /// default: `rest_bind`'s IP address, port 3371. HTTPS is on when
    /// `rest_tls_cert` and `rest_tls_key` are given; the plain listener
    /// then answers every `/v1/...` request with a 302 redirect to it.
    pub rest_bind_secure: Option<SocketAddr>,
    /// The HTTPS listener's certificate chain and private key (PEM).
    pub rest_tls_cert: Option<PathBuf>,
    pub rest_tls_key: Option<PathBuf>,
    /// With it, HTTPS clients must present a certificate signed by this CA
    /// (PEM); LINSTOR's truststore.
    pub rest_tls_client_ca: Option<PathBuf>,
    /// Users file (`NAME:ARGON2-PHC-HASH` lines, `cairn user add`); with
    /// it every REST request but `/health` and the version must sign in
    /// with HTTP Basic as one of them.
    pub rest_users_file: Option<PathBuf>,
    /// Directory for the database and controller state.
    pub data_dir: PathBuf,
    /// Database file; defaults to `<data_dir>/cairn.db`.
    pub db_path: Option<PathBuf>,
    /// The database as a URL instead: `postgres://USER:PASSWORD@HOST:PORT/DB`
    /// for PostgreSQL, `sqlite:PATH` for an SQLite file. Not with `db_path`.
    pub db_url: Option<String>,
    /// The secret satellites must present; defaults to
    /// `<data_dir>/cluster-secret`, created on first start.
    pub cluster_secret_file: Option<PathBuf>,
    /// Client certificate, key and CA for satellites whose interface uses
    /// `SSL` (mutual TLS). Without them such satellites stay unreachable.
    pub satellite_tls_cert: Option<PathBuf>,
    pub satellite_tls_key: Option<PathBuf>,
    pub satellite_tls_ca: Option<PathBuf>,
    /// Send LUKS volume keys to satellites whose link is PLAIN (not
    /// encrypted). Off: such satellites get no keys and report so.
    pub allow_plain_luks_keys: bool,
    /// A CA (PEM) trusted, besides the system's roots, for the
    /// certificates of other controllers reached over `https://` (the URLs
    /// of LINSTOR remotes, for `backup ship`).
    pub remote_tls_ca: Option<PathBuf>,
}

impl Default for ControllerConfig {
    fn default() -> Self {
        ControllerConfig {
            rest_bind: DEFAULT_REST_BIND.parse().unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 3370))),
            rest_bind_secure: None,
            rest_tls_cert: None,
            rest_tls_key: None,
            rest_tls_client_ca: None,
            rest_users_file: None,
            data_dir: PathBuf::from(DEFAULT_DATA_DIR),
            db_path: None,
            db_url: None,
            cluster_secret_file: None,
            satellite_tls_cert: None,
            satellite_tls_key: None,
            satellite_tls_ca: None,
            allow_plain_luks_keys: false,
            remote_tls_ca: None,
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

    /// Where the HTTPS listener binds, when HTTPS is on (see
    /// [`ControllerConfig::rest_bind_secure`]).
    pub fn https_bind(&self) -> Option<SocketAddr> {
        self.rest_tls_cert.as_ref()?;
        self.rest_tls_key.as_ref()?;
        Some(self.rest_bind_secure.unwrap_or_else(|| SocketAddr::new(self.rest_bind.ip(), DEFAULT_REST_SECURE_PORT)))
    }

    pub fn db_path(&self) -> PathBuf {
        self.db_path.clone().unwrap_or_else(|| self.data_dir.join("cairn.db"))
    }

    /// The database the controller opens: `db_url` when given, else the
    /// SQLite file [`ControllerConfig::db_path`].
    pub fn db_location(&self) -> Result<Location, StoreError> {
        match (&self.db_url, &self.db_path) {
            (Some(url), Some(_)) => Err(StoreError::Url {
                url: cairn_store::redact_url(url),
                reason: "give the database as a URL or as a file path (db_path), not both".into(),
            }),
            (Some(url), None) => Location::parse(url),
            (None, _) => Ok(Location::Sqlite(self.db_path())),
        }
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
    fn https_is_on_with_certificate_and_key_and_binds_beside_the_plain_listener() {
        let c = ConfigFile::parse("[controller]\nrest_bind = \"10.0.0.1:3370\"\nrest_tls_cert = \"/c.pem\"\n").unwrap().controller;
        assert_eq!(c.https_bind(), None, "a certificate without its key is not HTTPS");
        let c = ConfigFile::parse("[controller]\nrest_bind = \"10.0.0.1:3370\"\nrest_tls_cert = \"/c.pem\"\nrest_tls_key = \"/k.pem\"\n")
            .unwrap()
            .controller;
        assert_eq!(c.https_bind().map(|a| a.to_string()).as_deref(), Some("10.0.0.1:3371"));
        let c = ConfigFile::parse(
            "[controller]\nrest_bind_secure = \"[::]:4443\"\nrest_tls_cert = \"/c.pem\"\nrest_tls_key = \"/k.pem\"\nrest_tls_client_ca = \"/ca.pem\"\n",
        )
        .unwrap()
        .controller;
        assert_eq!(c.https_bind().map(|a| a.to_string()).as_deref(), Some("[::]:4443"));
        assert_eq!(c.rest_tls_client_ca, Some(PathBuf::from("/ca.pem")));
    }

    #[test]
    fn the_database_is_a_file_or_a_url_never_both() {
        let c = ConfigFile::parse("[controller]\ndb_url = \"postgres://cairn:pw@db:5432/cairn\"\n").unwrap().controller;
        assert_eq!(c.db_location().ok(), Some(Location::Postgres("postgres://cairn:pw@db:5432/cairn".into())));
        let c = ConfigFile::parse("[controller]\ndata_dir = \"/d\"\n").unwrap().controller;
        assert_eq!(c.db_location().ok(), Some(Location::Sqlite("/d/cairn.db".into())));
        let c = ConfigFile::parse("[controller]\ndb_url = \"sqlite:/x.db\"\ndb_path = \"/y.db\"\n").unwrap().controller;
        let e = c.db_location().err().map(|e| e.to_string()).unwrap_or_default();
        assert!(e.contains("not both"), "{e}");
        let c = ConfigFile::parse("[controller]\ndb_url = \"mysql://db\"\n").unwrap().controller;
        assert!(c.db_location().is_err());
    }

    #[test]
    fn unknown_keys_are_errors() {
        assert!(ConfigFile::parse("[controller]\nrest_bnd = \"0.0.0.0:1\"\n").is_err());
        assert!(ConfigFile::parse("[satellite]\nnode_name = \"x\"\n").is_ok());
        assert!(ConfigFile::parse("[controller]\nrest_bind = \"not an address\"\n").is_err());
    }
}
