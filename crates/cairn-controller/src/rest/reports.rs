//! `/v1/error-reports` and `/v1/schedules`: lists Cairn answers empty.
//!
//! Cairn writes no error reports: a failure is told in the ApiCallRc reply
//! of the request that met it and in the controller's or satellite's log,
//! never in a report file, so the list (and a lookup by id, which LINSTOR
//! answers with an empty list too) is empty and the count is 0. Backup
//! schedules are not kept either (creating one answers 501); LINSTOR's
//! `ScheduleList` leaves an empty `data` out, so the list is `{}`.

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
        .route("/v1/schedules", get(schedules))
}

async fn none() -> Response {
    ok(&Vec::<Value>::new())
}

async fn count() -> Response {
    ok(&json!({ "count": 0 }))
}

async fn schedules() -> Response {
    ok(&json!({}))
}
