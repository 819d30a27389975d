//! `/v1/resource-definitions/{rd}/resource-connections`.

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::response::Response;
use axum::routing::get;
use cairn_api::PropsModify;

use super::error::ApiError;
use super::input;
use super::reply::{Reply, ok};
use crate::state::AppState;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/resource-definitions/{rd}/resource-connections", get(list))
        .route("/v1/resource-definitions/{rd}/resource-connections/{a}/{b}", get(get_one).put(modify))
}

/// Every pair of the definition's replicas; an unknown definition has
/// none (an empty list, as LINSTOR answers).
async fn list(State(s): State<AppState>, Path(rd): Path<String>) -> Response {
    ok(&s.read().rsc_conns_of(&rd))
}

async fn get_one(State(s): State<AppState>, Path((rd, a, b)): Path<(String, String, String)>) -> Result<Response, ApiError> {
    Ok(ok(&s.read().rsc_conn_of(&rd, &a, &b)?))
}

async fn modify(State(s): State<AppState>, Path((rd, a, b)): Path<(String, String, String)>, body: Bytes) -> Result<Reply, ApiError> {
    let req: PropsModify = input::body(&body)?;
    s.mutate(200, |c, _| c.modify_rsc_conn(&rd, &a, &b, &req)).await
}
