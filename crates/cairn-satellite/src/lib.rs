//! The Cairn satellite: receives desired state from the controller, makes
//! devices with real tools, and reports what it sees.
//!
//! The pool directories are its state: a restarted satellite finds its
//! volume files and their loop devices again when the controller's full
//! apply arrives, and adopts them instead of creating duplicates. Its data
//! directory keeps only small records: snapshots that failed, the newest
//! leader epoch, and the restores and shipments running ([`inflight`]),
//! whose leftovers a restart removes.

pub mod apply;
pub mod backup;
pub mod config;
pub mod drbd;
pub mod ext_files;
pub mod inflight;
pub mod pool_dirs;
pub mod reports;
pub mod server;
pub mod ship;
pub mod sim;
pub mod tls;
pub mod tools;

pub use config::SatelliteConfig;
pub use server::Satellite;

/// Errors that stop a satellite from starting.
#[derive(Debug, thiserror::Error)]
pub enum SatelliteError {
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: String, source: std::io::Error },
    #[error(
        "the satellite needs a cluster secret (--cluster-secret-file or CAIRN_CLUSTER_SECRET); copy it from the controller's data directory"
    )]
    NoSecret,
    #[error("cannot read the cluster secret from {path}: {source}")]
    Secret { path: String, source: std::io::Error },
    #[error("cannot create data directory {path}: {source}")]
    DataDir { path: String, source: std::io::Error },
    #[error(
        "cannot read the newest leader epoch from {path}: {source}; if the file is damaged, write the newest leader's epoch into it (the controllers' lease row in PostgreSQL shows it) or remove it to accept any leader once"
    )]
    Epoch { path: String, source: std::io::Error },
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    #[error("the satellite server failed: {0}")]
    Serve(std::io::Error),
}
