//! `/health`, `/v1/controller/version` and controller properties.

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::response::Response;
use axum::routing::{delete, get};
use cairn_api::PropsModify;

use super::error::ApiError;
use super::input;
use super::reply::{Reply, ok};
use crate::state::AppState;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/health", get(health))
        .route("/v1/controller/version", get(version))
        .route("/v1/controller/properties", get(list_props).post(set_props))
        .route("/v1/controller/properties/{*key}", delete(delete_prop))
}

async fn health(State(s): State<AppState>) -> Response {
    let nodes = s.read().nodes.len();
    ok(&serde_json::json!({ "status": "ok", "nodes": nodes }))
}

async fn version() -> Response {
    ok(&crate::build_info::controller_version())
}

/// The stored (encrypted) master key stays out of the listing.
async fn list_props(State(s): State<AppState>) -> Response {
    let c = s.read();
    let props: std::collections::BTreeMap<&String, &String> = c.ctrl_props.iter().filter(|(k, _)| !k.starts_with("encrypted/")).collect();
    ok(&props)
}

/// `POST /v1/controller/properties` answers 201, as upstream does.
async fn set_props(State(s): State<AppState>, body: Bytes) -> Result<Reply, ApiError> {
    let req: PropsModify = input::body(&body)?;
    s.mutate(201, |c, _| c.modify_ctrl_props(&req)).await
}

async fn delete_prop(State(s): State<AppState>, Path(key): Path<String>) -> Result<Reply, ApiError> {
    s.mutate(200, |c, _| c.delete_ctrl_prop(&key)).await
}
