//! `/v1/stats/*`: object counts, as LINSTOR's `Stats` endpoints
//! (`/v1/stats/error-reports` is served with the reports, in `reports.rs`).

use axum::Router;
use axum::extract::State;
use axum::response::Response;
use axum::routing::get;
use cairn_api::controller::Stats;

use super::reply::ok;
use crate::state::AppState;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/stats/nodes", get(nodes))
        .route("/v1/stats/resource-definitions", get(rsc_dfns))
        .route("/v1/stats/resource-groups", get(rsc_grps))
        .route("/v1/stats/resources", get(resources))
        .route("/v1/stats/storage-pools", get(stor_pools))
}

fn count(n: usize) -> Response {
    ok(&Stats { count: i64::try_from(n).unwrap_or(i64::MAX) })
}

async fn nodes(State(s): State<AppState>) -> Response {
    count(s.read().nodes.len())
}

async fn rsc_dfns(State(s): State<AppState>) -> Response {
    count(s.read().rsc_dfns.len())
}

async fn rsc_grps(State(s): State<AppState>) -> Response {
    count(s.read().rsc_grps.len())
}

async fn resources(State(s): State<AppState>) -> Response {
    count(s.read().resources.len())
}

async fn stor_pools(State(s): State<AppState>) -> Response {
    count(s.read().stor_pools.len())
}
