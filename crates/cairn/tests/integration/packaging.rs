//! The example configuration files shipped in the Debian package
//! (packaging/*.toml, installed as /etc/cairn/*.toml) document every key
//! with its default, commented out. Uncommented, each must parse with the
//! binary's own parsers, name every optional key, and show the real
//! defaults; so a renamed or added key cannot leave the examples behind.

use std::net::SocketAddr;
use std::path::PathBuf;

use cairn_controller::config::{ConfigFile, ControllerConfig};
use cairn_satellite::config::{DEFAULT_PORT, SatelliteToml};

const CONTROLLER: &str = include_str!("../../../../packaging/controller.toml");
const SATELLITE: &str = include_str!("../../../../packaging/satellite.toml");

/// `#key = value` lines become `key = value`; prose comments stay.
fn uncommented(text: &str) -> String {
    text.lines()
        .map(|l| match l.strip_prefix('#') {
            Some(rest)
                if rest.split_once(" = ").is_some_and(|(k, _)| !k.is_empty() && k.chars().all(|c| c.is_ascii_lowercase() || c == '_')) =>
            {
                rest
            }
            _ => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn controller_example_parses_as_shipped_and_shows_the_defaults() {
    let shipped = ConfigFile::parse(CONTROLLER).expect("shipped controller.toml parses").controller;
    assert_eq!(shipped, ControllerConfig::default(), "the shipped file sets nothing: every value in it is a commented default");

    let all = ConfigFile::parse(&uncommented(CONTROLLER)).expect("controller.toml with every key uncommented parses").controller;
    let d = ControllerConfig::default();
    assert_eq!(all.rest_bind, d.rest_bind);
    assert_eq!(all.data_dir, d.data_dir);
    assert_eq!(all.db_path.as_deref(), Some(d.db_path().as_path()));
    assert!(all.db_url.as_deref().is_some_and(|u| u.starts_with("postgres://")));
    assert_eq!(all.cluster_secret_file.as_deref(), Some(d.secret_path().as_path()));
    assert!(all.satellite_tls_cert.is_some() && all.satellite_tls_key.is_some() && all.satellite_tls_ca.is_some());
    assert!(all.remote_tls_ca.is_some());
    assert_eq!(all.rest_users_file.as_deref(), Some(std::path::Path::new("/etc/cairn/users")));
}

#[test]
fn satellite_example_parses_as_shipped_and_documents_every_key() {
    let shipped = SatelliteToml::parse(SATELLITE).expect("shipped satellite.toml parses");
    assert_eq!(shipped, SatelliteToml { cluster_secret_file: Some(PathBuf::from("/etc/cairn/cluster-secret")), ..Default::default() });

    let all = SatelliteToml::parse(&uncommented(SATELLITE)).expect("satellite.toml with every key uncommented parses");
    let data_dir = PathBuf::from("/var/lib/cairn-satellite");
    assert_eq!(all.listen, Some(SocketAddr::from(([0, 0, 0, 0], DEFAULT_PORT))));
    assert_eq!(all.data_dir.as_ref(), Some(&data_dir));
    assert_eq!(all.drbd_config_dir, Some(data_dir.join("drbd.d")));
    assert_eq!(all.command_timeout_secs, Some(60));
    assert_eq!(all.drbd_config_only, Some(false));
    assert_eq!(all.allow_ext_files, Some(vec!["/etc/app".to_string()]));
    assert!(all.node_name.is_some() && all.tls_cert.is_some() && all.tls_key.is_some() && all.tls_ca.is_some());
    assert_eq!(all.metrics_bind, Some(SocketAddr::from(([10, 0, 0, 11], 9942))));
}
