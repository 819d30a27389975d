//! TLS to the PostgreSQL server. The database URL takes libpq's TLS
//! parameters: `sslmode` (`disable`, `prefer`, `require`, `verify-ca`,
//! `verify-full`), `sslrootcert` (the CA that signed the server's
//! certificate, PEM), and `sslcert`/`sslkey` (a client certificate, PEM).
//! tokio-postgres knows only `sslmode` up to `require`, so the others are
//! taken out of the URL here and become a rustls client configuration.
//!
//! Cairn always verifies the server when it uses TLS: the certificate must
//! chain to `sslrootcert` and name the host. `require`, `verify-ca` and
//! `verify-full` therefore all need `sslrootcert` (libpq's `require`
//! without a root certificate encrypts without checking who answers,
//! which a sniffer on the path can impersonate; Cairn refuses that).

use std::path::Path;
use std::sync::Arc;

use percent_encoding::percent_decode_str;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// The TLS parameters of a database URL.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct TlsParams {
    pub mode: Option<String>,
    pub root_cert: Option<String>,
    pub cert: Option<String>,
    pub key: Option<String>,
}

impl TlsParams {
    /// Whether the connection must be encrypted.
    pub fn required(&self) -> bool {
        matches!(self.mode.as_deref(), Some("require" | "verify-ca" | "verify-full"))
    }
}

/// Splits the TLS parameters tokio-postgres does not know off `url`
/// (either form: `postgres://…?k=v&…` or `k=v k=v`); `sslmode` stays, as
/// `require` for libpq's two `verify-*` modes.
pub fn split(url: &str) -> (String, TlsParams) {
    let mut params = TlsParams::default();
    let mut take = |k: &str, v: String| -> Option<String> {
        match k {
            "sslrootcert" => params.root_cert = Some(v),
            "sslcert" => params.cert = Some(v),
            "sslkey" => params.key = Some(v),
            "sslmode" => {
                let kept = if v.starts_with("verify-") { "require".to_string() } else { v.clone() };
                params.mode = Some(v);
                return Some(kept);
            }
            _ => return Some(v),
        }
        None
    };
    if url.contains("://") {
        let Some((base, query)) = url.split_once('?') else { return (url.to_string(), params) };
        let mut kept = Vec::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let key = percent_decode_str(k).decode_utf8_lossy().into_owned();
            let value = percent_decode_str(v).decode_utf8_lossy().into_owned();
            if let Some(value) = take(&key, value) {
                if value == percent_decode_str(v).decode_utf8_lossy() {
                    kept.push(pair.to_string());
                } else {
                    kept.push(format!("{k}={value}"));
                }
            }
        }
        let rest = if kept.is_empty() { base.to_string() } else { format!("{base}?{}", kept.join("&")) };
        (rest, params)
    } else {
        // libpq's key=value form: `key = value` with optional spaces around
        // '=', values in single quotes with backslash escapes. The pairs of
        // other keys are kept as written.
        let mut kept: Vec<String> = Vec::new();
        for (k, raw, value) in key_values(url) {
            match take(&k, value.clone()) {
                Some(v) if v == value => kept.push(raw),
                Some(v) => kept.push(format!("{k}={v}")),
                None => {}
            }
        }
        (kept.join(" "), params)
    }
}

/// The pairs of a key=value connection string: (key, the pair as written,
/// the value unquoted). Text that is no pair is kept as written.
fn key_values(s: &str) -> Vec<(String, String, String)> {
    let b: Vec<char> = s.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        while i < b.len() && b[i].is_whitespace() {
            i += 1;
        }
        if i >= b.len() {
            break;
        }
        let start = i;
        while i < b.len() && !b[i].is_whitespace() && b[i] != '=' {
            i += 1;
        }
        let key: String = b[start..i].iter().collect();
        while i < b.len() && b[i].is_whitespace() {
            i += 1;
        }
        if i >= b.len() || b[i] != '=' {
            out.push((key.clone(), key, String::new()));
            continue;
        }
        i += 1;
        while i < b.len() && b[i].is_whitespace() {
            i += 1;
        }
        let mut value = String::new();
        if i < b.len() && b[i] == '\'' {
            i += 1;
            while i < b.len() && b[i] != '\'' {
                if b[i] == '\\' && i + 1 < b.len() {
                    i += 1;
                }
                value.push(b[i]);
                i += 1;
            }
            i += 1;
        } else {
            while i < b.len() && !b[i].is_whitespace() {
                if b[i] == '\\' && i + 1 < b.len() {
                    i += 1;
                }
                value.push(b[i]);
                i += 1;
            }
        }
        let raw: String = b[start..i.min(b.len())].iter().collect();
        out.push((key, raw, value));
    }
    out
}

fn read_err(path: &str, e: impl std::fmt::Display) -> String {
    format!("cannot use {path}: {e}")
}

/// The rustls configuration for `params`, or None when the connection is
/// not to use TLS (no `sslrootcert`, and TLS not required).
pub fn client_config(params: &TlsParams) -> Result<Option<rustls::ClientConfig>, String> {
    if params.mode.as_deref() == Some("disable") {
        return Ok(None);
    }
    let Some(root) = &params.root_cert else {
        if params.required() {
            return Err(format!(
                "sslmode={} needs sslrootcert=FILE (the CA of the server's certificate): Cairn verifies the server it talks to",
                params.mode.as_deref().unwrap_or_default()
            ));
        }
        return Ok(None);
    };
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(Path::new(root)).map_err(|e| read_err(root, e))? {
        roots.add(cert.map_err(|e| read_err(root, e))?).map_err(|e| read_err(root, e))?;
    }
    if roots.is_empty() {
        return Err(read_err(root, "no certificate in it"));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots);
    let config = match (&params.cert, &params.key) {
        (Some(cert), Some(key)) => {
            let chain = CertificateDer::pem_file_iter(Path::new(cert))
                .map_err(|e| read_err(cert, e))?
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| read_err(cert, e))?;
            let key_der = PrivateKeyDer::from_pem_file(Path::new(key)).map_err(|e| read_err(key, e))?;
            builder.with_client_auth_cert(chain, key_der).map_err(|e| read_err(cert, e))?
        }
        (None, None) => builder.with_no_client_auth(),
        _ => return Err("sslcert and sslkey go together".to_string()),
    };
    Ok(Some(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_parameters_are_split_off_both_url_forms() {
        let (rest, p) = split("postgres://cairn:pw@db:5432/cairn?sslmode=verify-full&sslrootcert=%2Fetc%2Fca.pem&application_name=x");
        assert_eq!(rest, "postgres://cairn:pw@db:5432/cairn?sslmode=require&application_name=x");
        assert_eq!(p, TlsParams { mode: Some("verify-full".into()), root_cert: Some("/etc/ca.pem".into()), cert: None, key: None });
        assert!(p.required());
        let (rest, p) = split("host=db user=cairn sslmode=prefer sslrootcert=/ca.pem sslcert=/c.pem sslkey=/k.pem");
        assert_eq!(rest, "host=db user=cairn sslmode=prefer");
        // Quoted values with spaces and `key = value` spacing stay as written.
        let (rest, p2) = split("host = db password='a b\\'c' sslrootcert = '/my ca.pem' sslmode=verify-ca");
        assert_eq!(rest, "host = db password='a b\\'c' sslmode=require");
        assert_eq!(p2.root_cert.as_deref(), Some("/my ca.pem"));
        assert!(rest.parse::<tokio_postgres::Config>().is_ok(), "{rest}");
        assert_eq!(p.cert.as_deref(), Some("/c.pem"));
        assert!(!p.required());
        let (rest, p) = split("postgres://db/cairn");
        assert_eq!((rest.as_str(), p), ("postgres://db/cairn", TlsParams::default()));
        let (rest, _) = split("postgres://db/cairn?sslrootcert=/ca.pem");
        assert_eq!(rest, "postgres://db/cairn");
    }

    #[test]
    fn required_tls_without_a_root_certificate_is_refused() {
        let p = TlsParams { mode: Some("require".into()), ..Default::default() };
        assert!(client_config(&p).err().unwrap_or_default().contains("needs sslrootcert"));
        assert!(client_config(&TlsParams::default()).unwrap().is_none(), "no TLS asked for");
        let p = TlsParams { mode: Some("verify-full".into()), root_cert: Some("/nonexistent/ca.pem".into()), ..Default::default() };
        assert!(client_config(&p).err().unwrap_or_default().contains("/nonexistent/ca.pem"));
    }
}
