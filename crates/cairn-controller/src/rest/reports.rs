//! `/v1/error-reports`: a list Cairn answers empty.
//!
//! Cairn writes no error reports: a failure is told in the ApiCallRc reply
//! of the request that met it and in the controller's or satellite's log,
//! never in a report file, so the list (and a lookup by id, which LINSTOR
//! answers with an empty list too) is empty and the count is 0.

use axum::Router;
use axum::response::Response;
use axum::routing::get;
use serde_json::{Value, json};

use super::reply::ok;
use crate::state::AppState;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/error-reports", get(none))
        .route("/v1/error-reports/{id}", get(none))
        .route("/v1/stats/error-reports", get(count))
}

async fn none() -> Response {
    ok(&Vec::<Value>::new())
}

async fn count() -> Response {
    ok(&json!({ "count": 0 }))
}
