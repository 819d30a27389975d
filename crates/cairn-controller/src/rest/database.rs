//! `POST /v1/controller/backup/db` and `POST /v1/controller/database/export`
//! (LINSTOR's `DatabaseBackupRequest { backup_name }`).
//!
//! As in LINSTOR the name is a file name in the controller's data
//! directory (LINSTOR: `/var/lib/linstor/`), a time-stamped one when the
//! request names none, and the suffix is added when missing: `.json` for
//! the export, as LINSTOR; `.db` for the backup, which is an SQLite
//! database here (LINSTOR's is H2's `BACKUP TO` zip). Unlike LINSTOR, a
//! name with a path in it (`/`, `..`) is refused, and so is a file that
//! exists already: neither call ever writes outside the data directory or
//! over a file.

use std::path::{Path, PathBuf};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::routing::post;
use cairn_api::rc::{self, ApiCallRc};
use cairn_domain::OpError;
use serde::Deserialize;

use super::error::ApiError;
use super::input;
use super::reply::Reply;
use crate::state::{AppState, now_ms};

pub fn routes() -> Router<AppState> {
    Router::new().route("/v1/controller/backup/db", post(backup)).route("/v1/controller/database/export", post(export))
}

#[derive(Debug, Default, Deserialize)]
struct BackupRequest {
    #[serde(default)]
    backup_name: Option<String>,
}

/// The file a request names, in `dir`, with `suffix`.
fn target(dir: &Path, name: Option<&str>, suffix: &str, now_ms: i64) -> Result<PathBuf, OpError> {
    let invalid = |why: &str| {
        OpError::new(0, rc::FAIL_INVLD_DB_EXPORT_FILE, format!("The parameter '{}' is not a valid backup name.", name.unwrap_or("")))
            .cause(why.to_string())
            .correction("Give a plain file name; the file is made in the controller's data directory.")
    };
    let mut file = match name {
        None => {
            let stamp: String =
                cairn_api::time::iso8601_utc(now_ms).chars().take(19).map(|c| if c.is_ascii_digit() { c } else { '_' }).collect();
            format!("cairndb-backup-{stamp}")
        }
        Some(n) => {
            if n.is_empty() || n == "." || n == ".." {
                return Err(invalid("The name is empty or a directory."));
            }
            if n.contains('/') || n.contains('\0') {
                return Err(invalid("The name contains a path separator or a NUL character."));
            }
            n.to_string()
        }
    };
    if !file.ends_with(suffix) {
        file.push_str(suffix);
    }
    Ok(dir.join(file))
}

fn data_dir(s: &AppState) -> Result<PathBuf, ApiError> {
    s.settings().map(|c| c.data_dir.clone()).ok_or_else(|| ApiError::Internal("the controller's data directory is not known".into()))
}

/// Creates the target empty and private (the database holds the
/// cluster's secrets); an existing file is refused.
fn create_private(path: &Path) -> Result<(), OpError> {
    let mut o = std::fs::OpenOptions::new();
    o.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut o, 0o600);
    o.open(path).map(drop).map_err(|e| {
        let code = rc::FAIL_INVLD_DB_EXPORT_FILE;
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            OpError::new(0, code, format!("The file {} exists already.", path.display()))
                .correction("Choose another name, or move the existing file away.")
        } else {
            OpError::new(0, code, format!("Cannot create {}.", path.display())).cause(e.to_string())
        }
    })
}

/// A consistent copy of the database while the controller runs.
async fn backup(State(s): State<AppState>, body: Bytes) -> Result<Reply, ApiError> {
    let req: BackupRequest = input::body(&body)?;
    let path = target(&data_dir(&s)?, req.backup_name.as_deref(), ".db", now_ms())?;
    create_private(&path)?;
    let store = s.store();
    let p = path.clone();
    let done = tokio::task::spawn_blocking(move || store.backup_into(&p)).await.map_err(|e| ApiError::Internal(e.to_string()))?;
    match done {
        Ok(true) => {}
        Ok(false) => {
            let _ = std::fs::remove_file(&path);
            return Ok(Reply::new(
                500,
                vec![ApiCallRc::error(
                    0,
                    rc::FAIL_UNKNOWN_ERROR,
                    format!(
                        "Only an SQLite database can be backed up while the controller runs; this one is {}: back it up with PostgreSQL's pg_dump, or export it (controller exportdb, cairn db export).",
                        s.store().describe()
                    ),
                )],
            ));
        }
        Err(e) => {
            let _ = std::fs::remove_file(&path);
            return Err(e.into());
        }
    }
    let shown = path.display().to_string();
    let entry = ApiCallRc::success(rc::MASK_CRT, 0, format!("Database backup created: {shown}")).with_ref("backup_location", &shown);
    Ok(Reply::new(201, vec![entry]))
}

/// Every stored object as JSON, written to a file in the data directory.
async fn export(State(s): State<AppState>, body: Bytes) -> Result<Reply, ApiError> {
    let req: BackupRequest = input::body(&body)?;
    let now = now_ms();
    let path = target(&data_dir(&s)?, req.backup_name.as_deref(), ".json", now)?;
    let store = s.store();
    let described = store.describe();
    let objects = tokio::task::spawn_blocking(move || store.load()).await.map_err(|e| ApiError::Internal(e.to_string()))??;
    // The format `cairn db import` reads (cairn_store::dump).
    let doc = cairn_store::dump::export(&objects, described, now)?;
    let bytes = serde_json::to_vec_pretty(&doc).map_err(|e| ApiError::Internal(format!("cannot encode the export: {e}")))?;
    create_private(&path)?;
    let p = path.clone();
    let written = tokio::task::spawn_blocking(move || {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new().write(true).open(&p)?;
        f.write_all(&bytes)?;
        f.sync_all()
    })
    .await
    .map_err(|e| ApiError::Internal(e.to_string()))?;
    if let Err(e) = written {
        let _ = std::fs::remove_file(&path);
        return Err(OpError::new(0, rc::FAIL_INVLD_DB_EXPORT_FILE, format!("Cannot write {}.", path.display()))
            .cause(e.to_string())
            .into());
    }
    Ok(Reply::new(201, vec![ApiCallRc::success(0, 0, format!("Exported database to {}", path.display()))]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_stay_in_the_data_directory_and_get_their_suffix() {
        let d = Path::new("/var/lib/cairn");
        assert_eq!(target(d, Some("nightly"), ".json", 0).ok(), Some(d.join("nightly.json")));
        assert_eq!(target(d, Some("nightly.json"), ".json", 0).ok(), Some(d.join("nightly.json")));
        assert_eq!(target(d, Some("b"), ".db", 0).ok(), Some(d.join("b.db")));
        assert_eq!(target(d, None, ".db", 86_400_000).ok(), Some(d.join("cairndb-backup-1970_01_02_00_00_00.db")));
        for bad in ["../x", "a/b", "/etc/passwd", "..", ".", "", "a\0b"] {
            let e = target(d, Some(bad), ".db", 0).err().map(|e| e.rc.ret_code);
            assert_eq!(e, Some(rc::MASK_ERROR | rc::FAIL_INVLD_DB_EXPORT_FILE), "{bad:?}");
        }
    }
}
