//! Placement: spawn, autoplace, make-available, and the size queries.

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::response::Response;
use axum::routing::{get, options, post};
use cairn_api::placement::{AutoPlaceRequest, QuerySizeInfoRequest, ResourceGroupAdjust, ResourceGroupSpawn, ResourceMakeAvailable};
use cairn_api::resource_group::AutoSelectFilter;
use cairn_domain::resource_group::{merge_filter, normalize_filter};

use super::error::ApiError;
use super::input;
use super::reply::{Reply, ok};
use crate::state::AppState;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/resource-groups/{rg}/spawn", post(spawn))
        .route("/v1/resource-groups/{rg}/adjust", post(adjust))
        .route("/v1/resource-groups/adjustall", post(adjust_all))
        .route("/v1/resource-definitions/{rd}/autoplace", post(autoplace))
        .route("/v1/resource-definitions/{rd}/resources/{node}/make-available", post(make_available))
        .route("/v1/resource-groups/{rg}/query-size-info", post(query_size_info))
        .route("/v1/resource-groups/{rg}/query-max-volume-size", get(rg_query_max_volume_size))
        .route("/v1/queries/resource-groups/query-all-size-info", post(query_all_size_info))
        .route("/v1/query-max-volume-size", options(query_max_volume_size))
}

async fn spawn(State(s): State<AppState>, Path(rg): Path<String>, body: Bytes) -> Result<Reply, ApiError> {
    let req: ResourceGroupSpawn = input::required(&body)?;
    s.mutate(201, |c, ctx| c.spawn(&rg, &req, s.links(), ctx)).await
}

/// An empty body is an empty request, as upstream reads it.
async fn adjust(State(s): State<AppState>, Path(rg): Path<String>, body: Bytes) -> Result<Reply, ApiError> {
    let req: ResourceGroupAdjust = input::body(&body)?;
    s.mutate(200, |c, ctx| c.adjust_rsc_grps(Some(&rg), &req, s.links(), ctx)).await
}

async fn adjust_all(State(s): State<AppState>, body: Bytes) -> Result<Reply, ApiError> {
    let req: ResourceGroupAdjust = input::body(&body)?;
    s.mutate(200, |c, ctx| c.adjust_rsc_grps(None, &req, s.links(), ctx)).await
}

async fn autoplace(State(s): State<AppState>, Path(rd): Path<String>, body: Bytes) -> Result<Reply, ApiError> {
    let req: AutoPlaceRequest = input::body(&body)?;
    s.mutate(201, |c, ctx| c.autoplace(&rd, &req, s.links(), ctx)).await
}

/// Answers 200, not 201, as upstream does.
async fn make_available(State(s): State<AppState>, Path((rd, node)): Path<(String, String)>, body: Bytes) -> Result<Reply, ApiError> {
    let req: ResourceMakeAvailable = input::body(&body)?;
    s.mutate(200, |c, ctx| c.make_available(&rd, &node, &req, s.links(), ctx)).await
}

async fn query_size_info(State(s): State<AppState>, Path(rg): Path<String>, body: Bytes) -> Result<Response, ApiError> {
    let req: QuerySizeInfoRequest = input::body(&body)?;
    Ok(ok(&s.read().query_size_info(&rg, &req.select_filter, s.links())?))
}

async fn query_all_size_info(State(s): State<AppState>, body: Bytes) -> Result<Response, ApiError> {
    let req: QuerySizeInfoRequest = input::body(&body)?;
    Ok(ok(&s.read().query_all_size_info(&req.select_filter, s.links())))
}

/// `OPTIONS /v1/query-max-volume-size` with an `AutoSelectFilter` body.
async fn query_max_volume_size(State(s): State<AppState>, body: Bytes) -> Result<Response, ApiError> {
    let filter: AutoSelectFilter = input::body(&body)?;
    Ok(ok(&s.read().query_max_volume_size(&filter, s.links())?))
}

/// The CLI's `resource-group query-max-volume-size`: the group's filter.
async fn rg_query_max_volume_size(State(s): State<AppState>, Path(rg): Path<String>) -> Result<Response, ApiError> {
    let c = s.read();
    let g = c.rsc_grp(&rg, cairn_api::rc::MASK_RSC_GRP)?;
    let filter = normalize_filter(&merge_filter(&g.select_filter, &AutoSelectFilter::default()), cairn_api::rc::MASK_RSC_GRP)?;
    Ok(ok(&c.query_max_volume_size(&filter, s.links())?))
}
