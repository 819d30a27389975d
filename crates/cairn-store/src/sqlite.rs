//! The embedded SQLite store.
//!
//! WAL journal with `synchronous=FULL`: a commit is on disk before the call
//! that made it returns, so neither a killed controller nor a power cut
//! loses an acknowledged write, and a half-written transaction is rolled
//! back on the next open.

use parking_lot::Mutex;
use std::path::{Path, PathBuf};

use cairn_domain::{Change, Object};
use rusqlite::{Connection, OpenFlags, params};

use crate::{Store, StoreError, decode, encode};

/// Schema migrations, applied in order; `PRAGMA user_version` records how
/// many ran. Never edit a released entry: append a new one.
const MIGRATIONS: &[&str] = &[
    // 1: one table of JSON documents keyed by kind and upper-case name.
    "CREATE TABLE objects (
        kind TEXT NOT NULL,
        key  TEXT NOT NULL,
        data TEXT NOT NULL,
        PRIMARY KEY (kind, key)
    ) WITHOUT ROWID;",
];

/// SQLite-backed [`Store`].
pub struct SqliteStore {
    path: PathBuf,
    pub(crate) conn: Mutex<Connection>,
}

fn db(operation: &'static str) -> impl FnOnce(rusqlite::Error) -> StoreError {
    move |source| StoreError::Db { operation, source }
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path` and migrates it.
    pub fn open(path: &Path) -> Result<SqliteStore, StoreError> {
        create_private(path)?;
        let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE)
            .map_err(db("open database"))?;
        conn.pragma_update(None, "journal_mode", "WAL").map_err(db("set journal mode"))?;
        conn.pragma_update(None, "synchronous", "FULL").map_err(db("set synchronous"))?;
        conn.busy_timeout(std::time::Duration::from_secs(10)).map_err(db("set busy timeout"))?;
        migrate(&conn)?;
        Ok(SqliteStore { path: path.to_path_buf(), conn: Mutex::new(conn) })
    }

    /// The schema version this build writes.
    pub fn schema_version() -> i64 {
        MIGRATIONS.len() as i64
    }
}

/// Makes the database file readable by its owner only: created so, or
/// narrowed if an older version left it wider (it holds DRBD secrets and
/// sealed LUKS keys). SQLite gives its -wal and -shm files the database's
/// mode when it creates them; existing ones are narrowed too.
fn create_private(path: &Path) -> Result<(), StoreError> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    match options.open(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            #[cfg(unix)]
            for suffix in ["", "-wal", "-shm"] {
                use std::os::unix::fs::PermissionsExt;
                let file = std::path::PathBuf::from(format!("{}{suffix}", path.display()));
                match std::fs::metadata(&file) {
                    Ok(m) if m.permissions().mode() & 0o077 != 0 => {
                        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600))
                            .map_err(|source| StoreError::Io { operation: "narrow the database file's mode", source })?;
                    }
                    _ => {}
                }
            }
            Ok(())
        }
        Err(source) => Err(StoreError::Io { operation: "create database file", source }),
    }
}

fn migrate(conn: &Connection) -> Result<(), StoreError> {
    let found: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0)).map_err(db("read schema version"))?;
    let supported = MIGRATIONS.len() as i64;
    if found > supported {
        return Err(StoreError::TooNew { found, supported });
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(found as usize) {
        let tx = conn.unchecked_transaction().map_err(db("begin migration"))?;
        tx.execute_batch(sql).map_err(db("migrate schema"))?;
        tx.pragma_update(None, "user_version", (i + 1) as i64).map_err(db("record schema version"))?;
        tx.commit().map_err(db("commit migration"))?;
    }
    Ok(())
}

impl Store for SqliteStore {
    fn load(&self) -> Result<Vec<Object>, StoreError> {
        let conn = self.conn.lock();
        let mut stmt = conn.prepare("SELECT kind, key, data FROM objects ORDER BY kind, key").map_err(db("prepare load"))?;
        let rows = stmt
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, String>(2)?)))
            .map_err(db("load objects"))?;
        let mut out = Vec::new();
        for row in rows {
            let (kind, key, data) = row.map_err(db("read object row"))?;
            out.push(decode(&kind, &key, &data)?);
        }
        Ok(out)
    }

    /// `VACUUM INTO`: one read transaction copies every page, so the copy
    /// is the database as of one commit (commits wait for the connection
    /// meanwhile); SQLite refuses a target that exists.
    fn backup_into(&self, target: &Path) -> Result<bool, StoreError> {
        let Some(t) = target.to_str() else {
            return Err(StoreError::Io {
                operation: "name the backup file",
                source: std::io::Error::new(std::io::ErrorKind::InvalidInput, "the path is not UTF-8"),
            });
        };
        let conn = self.conn.lock();
        conn.execute("VACUUM INTO ?1", params![t]).map_err(db("copy the database"))?;
        Ok(true)
    }

    fn commit(&self, changes: &[Change]) -> Result<(), StoreError> {
        if changes.is_empty() {
            return Ok(());
        }
        let mut conn = self.conn.lock();
        let tx = conn.transaction().map_err(db("begin transaction"))?;
        {
            let mut put = tx
                .prepare_cached(
                    "INSERT INTO objects (kind, key, data) VALUES (?1, ?2, ?3) ON CONFLICT (kind, key) DO UPDATE SET data = excluded.data",
                )
                .map_err(db("prepare put"))?;
            let mut del = tx.prepare_cached("DELETE FROM objects WHERE kind = ?1 AND key = ?2").map_err(db("prepare delete"))?;
            for c in changes {
                match c {
                    Change::Put(o) => {
                        let (kind, key, data) = encode(o)?;
                        put.execute(params![kind, key, data]).map_err(db("write object"))?;
                    }
                    Change::Delete(k) => {
                        del.execute(params![k.kind().as_str(), k.key_string()]).map_err(db("delete object"))?;
                    }
                }
            }
        }
        tx.commit().map_err(db("commit transaction"))
    }

    fn describe(&self) -> String {
        format!("sqlite:{}", self.path.display())
    }
}
