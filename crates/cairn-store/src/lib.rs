//! Persistence for the controller.
//!
//! What is persisted: every object of the cluster's desired state (nodes,
//! storage pool definitions and pools, resource groups and volume groups,
//! resource and volume definitions, resources with their volumes, key-value
//! stores, node connections, controller properties), one JSON document per
//! object, keyed by kind and upper-case name. What is not: anything a
//! satellite reports (connection state, capacities, device paths); that is
//! rebuilt from the satellites after a restart.
//!
//! The [`Store`] trait is deliberately narrow: load everything at start-up,
//! commit a batch of changes atomically. SQLite (the default, embedded)
//! and PostgreSQL (a server several controllers can share) implement it
//! with the same one table; [`Location`] says which a controller opens.

pub mod dump;
mod location;
mod mem;
mod pg;
mod pg_tls;
mod sqlite;

pub use location::Location;
pub use mem::MemStore;
pub use pg::{PgStore, redact as redact_url};
pub use sqlite::SqliteStore;

use cairn_domain::{Change, Object};

/// Errors of the persistence layer.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error during {operation}: {source}")]
    Db { operation: &'static str, source: rusqlite::Error },
    #[error("PostgreSQL error during {operation}: {reason}")]
    Pg { operation: &'static str, reason: String },
    #[error("invalid database URL '{url}': {reason}")]
    Url { url: String, reason: String },
    #[error("{0}")]
    Import(String),
    #[error("stored {kind} '{key}' cannot be read: {reason}")]
    Corrupt { kind: String, key: String, reason: String },
    #[error("cannot encode {kind} '{key}': {reason}")]
    Encode { kind: String, key: String, reason: String },
    #[error("the database schema version {found} is newer than this build understands ({supported}); refusing to touch it")]
    TooNew { found: i64, supported: i64 },
    #[error("this controller's leader lease (epoch {epoch}) has expired or passed to another controller; nothing was written")]
    Fenced { epoch: i64 },
    #[error("cannot {operation}: {source}")]
    Io { operation: &'static str, source: std::io::Error },
}

/// A transactional store of the cluster's objects.
pub trait Store: Send + Sync {
    /// Every stored object.
    fn load(&self) -> Result<Vec<Object>, StoreError>;
    /// Applies all changes in one transaction: all of them or none.
    fn commit(&self, changes: &[Change]) -> Result<(), StoreError>;
    /// A short description for logs ("sqlite:/var/lib/cairn/cairn.db").
    fn describe(&self) -> String;
    /// Writes a consistent copy of the whole database to `target`, a file
    /// that must not exist yet, while the store stays in use. False when
    /// the store has no database file to copy (the in-memory store).
    fn backup_into(&self, target: &std::path::Path) -> Result<bool, StoreError> {
        let _ = target;
        Ok(false)
    }
}

/// Encodes a `Put` as (kind, key, json).
fn encode(o: &Object) -> Result<(&'static str, String, String), StoreError> {
    let k = o.key();
    let data =
        o.to_json().map_err(|e| StoreError::Encode { kind: k.kind().as_str().into(), key: k.key_string(), reason: e.to_string() })?;
    Ok((k.kind().as_str(), k.key_string(), data))
}

/// Decodes a stored row.
fn decode(kind: &str, key: &str, data: &str) -> Result<Object, StoreError> {
    let corrupt = |reason: String| StoreError::Corrupt { kind: kind.into(), key: key.into(), reason };
    let k = cairn_domain::Kind::parse(kind).ok_or_else(|| corrupt("unknown object kind".into()))?;
    let o = Object::from_json(k, data).map_err(|e| corrupt(e.to_string()))?;
    if o.key().key_string() != key {
        return Err(corrupt(format!("the document belongs to key '{}'", o.key().key_string())));
    }
    Ok(o)
}

#[cfg(test)]
mod pg_server;
#[cfg(test)]
mod suite;
#[cfg(test)]
mod suite_pg;
