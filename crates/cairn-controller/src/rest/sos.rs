//! `GET /v1/sos-report` and `/v1/sos-report/download` (LINSTOR's
//! `SosReport`, `CtrlSosReportApiCallHandler`): a `sos_<time>.tar.gz` of
//! what support needs, made in memory; the first writes it to
//! `<data dir>/sos-reports/` and answers 201 `SOS Report created on
//! Controller: <path>`, the second sends it as an attachment.
//!
//! Contents, under `sos_<time>/`: `controller/` (`version.txt`, `log.txt`
//! saying where the log is, `database.json` — the export `controller
//! exportdb` writes with every secret replaced by `<redacted>` — and the
//! controller's `error-reports/`), and per satellite node `<node>/`
//! (`version.txt`, `drbdsetup-status.txt`, `drbd-version.txt`,
//! `error-reports/`). Query parameters: `nodes`, `rscs` (nodes holding
//! any of these resources), `exclude`, `since` (ms; reports from then on,
//! default 7 days back, as LINSTOR), `include-ctrl` (default true).

use std::time::Duration;

use axum::Router;
use axum::extract::{RawQuery, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use cairn_api::rc::{self, ApiCallRc};
use cairn_domain::name::key;
use cairn_proto::{ErrorReport, ErrorReportFilter, PATH_SOS, SosInfo};
use serde_json::Value;

use super::error::ApiError;
use super::input;
use super::reply::Reply;
use super::reports::{Scope, collect};
use crate::state::{AppState, now_ms};

const SATELLITE_TIMEOUT: Duration = Duration::from_secs(30);
/// LINSTOR's default look-back for a SOS report.
const DEFAULT_DAYS: i64 = 7;
const REDACTED: &str = "<redacted>";

pub fn routes() -> Router<AppState> {
    Router::new().route("/v1/sos-report", get(create)).route("/v1/sos-report/download", get(download))
}

/// The values of a list parameter, given repeated or comma-separated.
fn list(q: &cairn_api::query::Query, name: &str) -> Vec<String> {
    q.all(name).iter().flat_map(|v| v.split(',')).map(str::trim).filter(|v| !v.is_empty()).map(str::to_string).collect()
}

/// Builds the archive: its file name and bytes.
async fn build(s: &AppState, raw: Option<String>) -> Result<(String, Vec<u8>), ApiError> {
    let q = input::query(raw);
    let now = now_ms();
    let since = input::param(q.int("since"))?.unwrap_or(now - DEFAULT_DAYS * 86_400_000);
    let include_ctrl = match q.get("include-ctrl") {
        Some(_) => input::param(q.flag("include-ctrl"))?,
        None => true,
    };
    let (nodes, rscs, exclude) = (list(&q, "nodes"), list(&q, "rscs"), list(&q, "exclude"));
    let c = s.read();
    let satellites: Vec<(String, String)> = c
        .nodes
        .iter()
        .filter(|(_, n)| n.node_type.has_satellite())
        .filter(|(k, _)| nodes.is_empty() || nodes.iter().any(|n| key(n) == **k))
        .filter(|(k, _)| rscs.is_empty() || rscs.iter().any(|r| c.resources.contains_key(&(key(r), (*k).clone()))))
        .filter(|(k, _)| !exclude.iter().any(|n| key(n) == **k))
        .map(|(k, n)| (k.clone(), n.name.clone()))
        .collect();
    drop(c);
    let stamp = cairn_api::time::iso8601_utc(now).replace([':', '.'], "-");
    let base = format!("sos_{}", stamp.split('+').next().unwrap_or(&stamp));
    let mut files: Vec<(String, Vec<u8>)> = Vec::new();
    let filter = ErrorReportFilter { since: Some(since), with_content: true, ..Default::default() };
    if include_ctrl {
        let v = crate::build_info::controller_version();
        files.push(("controller/version.txt".into(), format!("{}\n{}\n", crate::reporter::version(), json_text(&v)).into_bytes()));
        files.push((
            "controller/log.txt".into(),
            b"The Cairn controller keeps no log file: it logs to stderr (the journal, when it runs as a systemd service: \
              journalctl -u cairn-controller).\n"
                .to_vec(),
        ));
        files.push(("controller/database.json".into(), database(s, now).await?));
        for r in collect(s, &Scope { controller: true, satellites: Vec::new() }, &filter).await {
            files.push(report_file("controller", &r));
        }
    }
    // Every satellite at once: one slow node costs its timeouts once, not
    // once per node before it.
    let filter = &filter;
    let per_node = satellites.iter().map(|(node_key, name)| async move {
        let mut files = Vec::new();
        let info: Result<SosInfo, _> = s.links().request(node_key, PATH_SOS, None, SATELLITE_TIMEOUT).await;
        match info {
            Ok(i) => {
                files.push((format!("{name}/version.txt"), format!("{}\n", i.version).into_bytes()));
                files.push((format!("{name}/drbdsetup-status.txt"), i.drbdsetup_status.into_bytes()));
                files.push((format!("{name}/drbd-version.txt"), i.drbd_version.into_bytes()));
            }
            Err(e) => files.push((format!("{name}/unreachable.txt"), format!("The satellite did not answer: {e}\n").into_bytes())),
        }
        for r in collect(s, &Scope { controller: false, satellites: vec![node_key.clone()] }, filter).await {
            files.push(report_file(name, &r));
        }
        files
    });
    files.extend(futures_util::future::join_all(per_node).await.into_iter().flatten());
    let bytes = tokio::task::spawn_blocking({
        let base = base.clone();
        move || archive(&base, &files, now)
    })
    .await
    .map_err(|e| ApiError::Internal(e.to_string()))?
    .map_err(|e| ApiError::Internal(format!("cannot write the SOS archive: {e}")))?;
    Ok((format!("{base}.tar.gz"), bytes))
}

fn json_text<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string_pretty(v).unwrap_or_default()
}

fn report_file(dir: &str, r: &ErrorReport) -> (String, Vec<u8>) {
    (format!("{dir}/error-reports/{}", r.filename), r.text.clone().unwrap_or_default().into_bytes())
}

/// The database export with every secret replaced.
async fn database(s: &AppState, now: i64) -> Result<Vec<u8>, ApiError> {
    let store = s.store();
    let described = store.describe();
    let objects = tokio::task::spawn_blocking(move || store.load()).await.map_err(|e| ApiError::Internal(e.to_string()))??;
    let doc = cairn_store::dump::export(&objects, described, now)?;
    let mut v = serde_json::to_value(&doc).map_err(|e| ApiError::Internal(e.to_string()))?;
    redact(&mut v);
    Ok(serde_json::to_vec_pretty(&v).unwrap_or_default())
}

/// Whether a field or property name holds a secret: DRBD shared secrets,
/// LUKS keys, sealed remote keys and passphrases, token hashes, the
/// master key's stored forms.
fn secret_name(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    ["secret", "passphrase", "password", "access_key", "masterkey", "masterhash", "token_hash", "encrypted/", "luks"]
        .iter()
        .any(|w| n.contains(w))
}

/// Replaces the values of secret-named fields and properties, anywhere.
fn redact(v: &mut Value) {
    match v {
        Value::Object(m) => {
            for (k, val) in m.iter_mut() {
                if secret_name(k) && !val.is_null() && !val.is_boolean() {
                    *val = Value::String(REDACTED.into());
                } else {
                    redact(val);
                }
            }
        }
        Value::Array(a) => a.iter_mut().for_each(redact),
        _ => {}
    }
}

/// A gzip-compressed tar of `files` under `base/`.
fn archive(base: &str, files: &[(String, Vec<u8>)], now_ms: i64) -> std::io::Result<Vec<u8>> {
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    let mut tar = tar::Builder::new(gz);
    for (path, data) in files {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o600);
        h.set_mtime(u64::try_from(now_ms / 1000).unwrap_or(0));
        h.set_entry_type(tar::EntryType::Regular);
        tar.append_data(&mut h, format!("{base}/{path}"), data.as_slice())?;
    }
    tar.into_inner()?.finish()
}

async fn create(State(s): State<AppState>, RawQuery(q): RawQuery) -> Result<Reply, ApiError> {
    let (name, bytes) = build(&s, q).await?;
    let dir = s
        .settings()
        .map(|c| c.data_dir.join("sos-reports"))
        .ok_or_else(|| ApiError::Internal("the controller's data directory is not known".into()))?;
    let path = dir.join(&name);
    let p = path.clone();
    tokio::task::spawn_blocking(move || -> std::io::Result<()> {
        std::fs::create_dir_all(&dir)?;
        let mut o = std::fs::OpenOptions::new();
        o.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut o, 0o600);
        std::io::Write::write_all(&mut o.open(&p)?, &bytes)
    })
    .await
    .map_err(|e| ApiError::Internal(e.to_string()))?
    .map_err(|e| ApiError::Internal(format!("cannot write {}: {e}", path.display())))?;
    let shown = path.display().to_string();
    Ok(Reply::new(
        201,
        vec![ApiCallRc::success(0, rc::CREATED, format!("SOS Report created on Controller: {shown}")).with_ref("path", shown)],
    ))
}

async fn download(State(s): State<AppState>, RawQuery(q): RawQuery) -> Result<Response, ApiError> {
    let (name, bytes) = build(&s, q).await?;
    Ok((
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_string()),
            (header::CONTENT_DISPOSITION, format!("attachment; filename={name}")),
        ],
        bytes,
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_redacted_wherever_they_are() {
        let mut v = serde_json::json!({"tables": [{"name": "rsc_dfn", "data": [{"name": "r", "secret": "s3cr3t",
            "props": {"DrbdOptions/Net/shared-secret": "x1", "Aux/a": "keep"}}]},
            {"name": "remote", "data": [{"target": {"S3": {"access_key": "AK", "secret_key": "SK", "bucket": "b"}}}]},
            {"name": "auth_token", "data": [{"token_hash": "h"}]},
            {"name": "ctrl_props", "data": [{"encrypted/masterkey": "k", "encrypted/passphrasesalt": "s"}]}]});
        redact(&mut v);
        let text = v.to_string();
        for secret in ["s3cr3t", "x1", "\"AK\"", "\"SK\"", "\"h\"", "\"k\"", "\"s\""] {
            assert!(!text.contains(secret), "{secret} in {text}");
        }
        assert!(text.contains("keep") && text.contains("\"b\""), "{text}");
    }
}
