//! External files: `/v1/files` and their deployment with a resource
//! definition (`/v1/resource-definitions/{rd}/files/{path}`). The path is
//! one URL-encoded segment (`%2Fetc%2Fx.conf`), decoded by the extractor.

use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use cairn_api::ext_file::{ExtFileCheckResult, ExtFileStatusResult, ExternalFile};
use cairn_api::rc::{self, ApiCallRc};
use cairn_domain::ext_file;
use cairn_domain::name::key;
use cairn_proto::{ExtFileDesired, ExtFileStatus, PATH_EXT_FILE_STATUS};

use super::error::ApiError;
use super::input;
use super::reply::{Reply, json, ok};
use crate::state::AppState;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/files", get(list))
        .route("/v1/files/{path}", get(get_one).put(set).delete(remove))
        .route("/v1/files/{path}/check/{node}", get(check))
        .route("/v1/files/{path}/status/{node}", get(status))
        .route("/v1/resource-definitions/{rd}/files/{path}", post(deploy).delete(undeploy))
}

/// Every file, without content unless `?content=true`.
async fn list(State(s): State<AppState>, RawQuery(q): RawQuery) -> Response {
    // Jersey reads anything but "true" as false.
    let with_content = input::query(q).get("content").is_some_and(|v| v.eq_ignore_ascii_case("true"));
    ok(&s.read().ext_files.values().map(|f| f.to_api(with_content)).collect::<Vec<ExternalFile>>())
}

/// One file with its content, as an object (LINSTOR's query reply for a
/// named object); an unknown one is LINSTOR's 404 "not found" entry.
async fn get_one(State(s): State<AppState>, Path(path): Path<String>) -> Response {
    // LINSTOR matches the name ignoring case here (and only here).
    let c = s.read();
    let found = c.ext_files.get(&path).or_else(|| c.ext_files.values().find(|f| f.path.eq_ignore_ascii_case(&path)));
    match found {
        Some(f) => ok(&f.to_api(true)),
        None => {
            Reply::new(404, vec![ApiCallRc::error(0, rc::FAIL_UNKNOWN_ERROR, format!("External file '{path}' not found."))]).into_response()
        }
    }
}

async fn set(State(s): State<AppState>, Path(path): Path<String>, body: Bytes) -> Result<Reply, ApiError> {
    let req: ExternalFile = input::body(&body)?;
    s.mutate(200, |c, ctx| c.set_ext_file(&path, req.content.as_deref(), req.alt_suffixes.as_deref(), ctx)).await
}

async fn remove(State(s): State<AppState>, Path(path): Path<String>) -> Result<Reply, ApiError> {
    s.mutate(200, |c, _| c.delete_ext_file(&path)).await
}

/// Whether the node's satellite allows the file's directory; false for an
/// unknown node, an invalid name or a satellite not connected (it has not
/// told its allowed directories), as LINSTOR answers.
async fn check(State(s): State<AppState>, Path((path, node)): Path<(String, String)>) -> Response {
    let known = s.read().nodes.contains_key(&key(&node)) && ext_file::check_path(&path, 0).is_ok();
    let allowed = known && s.links().hello(&key(&node)).is_some_and(|h| ext_file::allowed(&path, &h.ext_file_dirs));
    ok(&ExtFileCheckResult { allowed })
}

/// Where the file is on the node and whether its content is current,
/// asked of the satellite; 503 when it is not connected.
async fn status(State(s): State<AppState>, Path((path, node)): Path<(String, String)>) -> Result<Response, ApiError> {
    let (node_key, req) = {
        let c = s.read();
        let n = c.node(&node, rc::MASK_EXT_FILES)?;
        let f = c.ext_file(&path, rc::MASK_EXT_FILES)?;
        (key(&n.name), ExtFileDesired { path: f.path.clone(), content: f.content.clone(), alt_suffixes: f.alt_suffixes.clone() })
    };
    let body = serde_json::to_vec(&req).map_err(|e| ApiError::Internal(e.to_string()))?;
    let answer: ExtFileStatus = match s.links().request(&node_key, PATH_EXT_FILE_STATUS, Some(body), Duration::from_secs(30)).await {
        Ok(a) => a,
        Err(e) => {
            tracing::debug!(node = %node, "external file status: {e}");
            return Ok(json(StatusCode::SERVICE_UNAVAILABLE, &serde_json::json!({"message": "Satellite not connected"})));
        }
    };
    if let Some(e) = answer.error {
        return Err(ApiError::Op(cairn_domain::OpError::new(rc::MASK_EXT_FILES, rc::FAIL_UNKNOWN_ERROR, format!("(Node: '{node}') {e}"))));
    }
    Ok(ok(&ExtFileStatusResult { actual_path: answer.actual_path, content_match: answer.content_match }))
}

async fn deploy(State(s): State<AppState>, Path((rd, path)): Path<(String, String)>) -> Result<Reply, ApiError> {
    s.mutate(200, |c, _| c.deploy_ext_file(&rd, &path, true)).await.map(per_node)
}

async fn undeploy(State(s): State<AppState>, Path((rd, path)): Path<(String, String)>) -> Result<Reply, ApiError> {
    s.mutate(200, |c, _| c.deploy_ext_file(&rd, &path, false)).await.map(per_node)
}

/// A node's "Deployed …" entry stands only if its satellite did not fail
/// (LINSTOR adds it after the node's own answers, on success).
fn per_node(mut reply: Reply) -> Reply {
    let failed: Vec<String> = reply
        .entries
        .iter()
        .filter(|e| e.is_error() || e.is_warning())
        .filter_map(|e| e.obj_refs.get("Node").map(|n| n.to_ascii_uppercase()))
        .collect();
    reply
        .entries
        .retain(|e| e.is_error() || e.is_warning() || !e.obj_refs.get("Node").is_some_and(|n| failed.contains(&n.to_ascii_uppercase())));
    reply
}
