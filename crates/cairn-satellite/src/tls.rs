//! Mutual TLS for the satellite's endpoint: the satellite presents its
//! certificate and accepts only controllers whose client certificate is
//! signed by the configured CA (the machinery is `cairn_proto::tls`).

use std::path::PathBuf;
use std::sync::Arc;

pub use cairn_proto::tls::{TlsError, TlsListener};

/// PEM files of one side of the link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// This side's certificate chain.
    pub cert: PathBuf,
    /// This side's private key.
    pub key: PathBuf,
    /// The CA that signed the other side's certificate.
    pub ca: PathBuf,
}

/// The server side: our certificate, client certificates required.
pub fn server_config(files: &TlsFiles) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    cairn_proto::tls::server_config(&files.cert, &files.key, Some(&files.ca))
}
