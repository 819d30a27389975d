//! Which database a controller (or `cairn db`) opens.

use std::path::PathBuf;
use std::sync::Arc;

use crate::{PgStore, SqliteStore, Store, StoreError};

/// A database: an SQLite file or a PostgreSQL server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    Sqlite(PathBuf),
    /// A libpq-style URL (`postgres://` or `postgresql://`).
    Postgres(String),
}

impl Location {
    /// `postgres://…` and `postgresql://…` name a PostgreSQL database,
    /// `sqlite:PATH` (LINSTOR's way to show an SQLite URL) a file.
    pub fn parse(url: &str) -> Result<Location, StoreError> {
        let url = url.trim();
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            return Ok(Location::Postgres(url.to_string()));
        }
        if let Some(path) = url.strip_prefix("sqlite:") {
            let path = path.strip_prefix("//").unwrap_or(path);
            if path.is_empty() {
                return Err(StoreError::Url { url: url.into(), reason: "it names no file".into() });
            }
            return Ok(Location::Sqlite(PathBuf::from(path)));
        }
        Err(StoreError::Url {
            url: crate::pg::redact(url),
            reason: "give postgres://USER:PASSWORD@HOST:PORT/DATABASE or sqlite:PATH".into(),
        })
    }

    /// Opens (creating and migrating as needed) the database. Blocks:
    /// call it from a thread that may block.
    pub fn open(&self) -> Result<Arc<dyn Store>, StoreError> {
        Ok(match self {
            Location::Sqlite(path) => Arc::new(SqliteStore::open(path)?),
            Location::Postgres(url) => Arc::new(PgStore::open(url)?),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_name_their_backend() {
        assert_eq!(Location::parse("postgres://c:pw@db/cairn").ok(), Some(Location::Postgres("postgres://c:pw@db/cairn".into())));
        assert_eq!(Location::parse("postgresql://db/cairn").ok(), Some(Location::Postgres("postgresql://db/cairn".into())));
        assert_eq!(Location::parse("sqlite:/var/lib/cairn/cairn.db").ok(), Some(Location::Sqlite("/var/lib/cairn/cairn.db".into())));
        assert_eq!(Location::parse("sqlite:///var/lib/x.db").ok(), Some(Location::Sqlite("/var/lib/x.db".into())));
        for bad in ["mysql://db/x", "/var/lib/cairn.db", "sqlite:", ""] {
            assert!(Location::parse(bad).is_err(), "{bad}");
        }
        let e = Location::parse("mysql://u:secret@db/x").err().map(|e| e.to_string()).unwrap_or_default();
        assert!(!e.contains("secret") && e.contains("postgres://"), "{e}");
    }
}
