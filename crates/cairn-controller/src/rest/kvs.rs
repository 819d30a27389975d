//! `/v1/key-value-store`.

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::response::Response;
use axum::routing::get;
use cairn_api::PropsModify;
use cairn_api::kvs::KeyValueStore;

use super::error::ApiError;
use super::input;
use super::reply::{Reply, ok};
use crate::state::AppState;

pub fn routes() -> Router<AppState> {
    Router::new().route("/v1/key-value-store", get(list)).route("/v1/key-value-store/{kv}", get(get_one).put(modify).delete(remove))
}

async fn list(State(s): State<AppState>) -> Response {
    ok(&s.read().kvs.values().map(|k| k.to_api()).collect::<Vec<KeyValueStore>>())
}

/// A one-element list, as upstream answers (W10).
async fn get_one(State(s): State<AppState>, Path(kv): Path<String>) -> Result<Response, ApiError> {
    Ok(ok(&[s.read().kvs_get(&kv)?.to_api()]))
}

async fn modify(State(s): State<AppState>, Path(kv): Path<String>, body: Bytes) -> Result<Reply, ApiError> {
    let req: PropsModify = input::body(&body)?;
    s.mutate(200, |c, _| c.modify_kvs(&kv, &req)).await
}

async fn remove(State(s): State<AppState>, Path(kv): Path<String>) -> Result<Reply, ApiError> {
    s.mutate(200, |c, _| c.delete_kvs(&kv)).await
}
