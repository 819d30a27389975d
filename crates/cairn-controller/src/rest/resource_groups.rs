//! `/v1/resource-groups` and volume groups.

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::response::Response;
use axum::routing::get;
use cairn_api::query::NameFilter;
use cairn_api::rc;
use cairn_api::resource_group::{ResourceGroup, ResourceGroupModify, VolumeGroup, VolumeGroupModify};
use cairn_domain::name::key;

use super::error::ApiError;
use super::input;
use super::reply::{Reply, ok};
use crate::state::AppState;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/resource-groups", get(list).post(create))
        .route("/v1/resource-groups/{rg}", get(get_one).put(modify).delete(remove))
        .route("/v1/resource-groups/{rg}/volume-groups", get(list_vgs).post(create_vg))
        .route("/v1/resource-groups/{rg}/volume-groups/{nr}", get(get_vg).put(modify_vg).delete(delete_vg))
}

async fn list(State(s): State<AppState>, RawQuery(q): RawQuery) -> Result<Response, ApiError> {
    let q = input::query(q);
    let names = NameFilter::new(&q.all("resource_groups"));
    let props = q.props_filter();
    let page = input::param(q.page())?;
    let c = s.read();
    let out: Vec<ResourceGroup> =
        c.rsc_grps.values().filter(|g| names.matches(&g.name) && props.matches(&g.props)).map(|g| g.to_api()).collect();
    Ok(ok(&page.apply(out)))
}

async fn get_one(State(s): State<AppState>, Path(rg): Path<String>) -> Result<Response, ApiError> {
    Ok(ok(&s.read().rsc_grp(&rg, rc::MASK_RSC_GRP)?.to_api()))
}

async fn create(State(s): State<AppState>, body: Bytes) -> Result<Reply, ApiError> {
    let req: ResourceGroup = input::required(&body)?;
    s.mutate(201, |c, ctx| c.create_rsc_grp(&req, ctx)).await
}

async fn modify(State(s): State<AppState>, Path(rg): Path<String>, body: Bytes) -> Result<Reply, ApiError> {
    let req: ResourceGroupModify = input::body(&body)?;
    s.mutate(200, |c, _| c.modify_rsc_grp(&rg, &req)).await
}

async fn remove(State(s): State<AppState>, Path(rg): Path<String>) -> Result<Reply, ApiError> {
    s.mutate(200, |c, _| c.delete_rsc_grp(&rg)).await
}

async fn list_vgs(State(s): State<AppState>, Path(rg): Path<String>) -> Result<Response, ApiError> {
    let c = s.read();
    let g = c.rsc_grp(&rg, rc::MASK_VLM_GRP)?;
    Ok(ok(&c.vlm_grps_of(&key(&g.name)).map(|v| v.to_api()).collect::<Vec<VolumeGroup>>()))
}

async fn get_vg(State(s): State<AppState>, Path((rg, nr)): Path<(String, String)>) -> Result<Response, ApiError> {
    let nr = input::vlm_nr(&nr)?;
    Ok(ok(&s.read().vlm_grp(&rg, nr, rc::MASK_VLM_GRP)?.to_api()))
}

async fn create_vg(State(s): State<AppState>, Path(rg): Path<String>, body: Bytes) -> Result<Reply, ApiError> {
    let req: VolumeGroup = input::body(&body)?;
    s.mutate(201, |c, ctx| c.create_vlm_grp(&rg, &req, ctx)).await
}

async fn modify_vg(State(s): State<AppState>, Path((rg, nr)): Path<(String, String)>, body: Bytes) -> Result<Reply, ApiError> {
    let nr = input::vlm_nr(&nr)?;
    let req: VolumeGroupModify = input::body(&body)?;
    s.mutate(200, |c, _| c.modify_vlm_grp(&rg, nr, &req)).await
}

async fn delete_vg(State(s): State<AppState>, Path((rg, nr)): Path<(String, String)>) -> Result<Reply, ApiError> {
    let nr = input::vlm_nr(&nr)?;
    s.mutate(200, |c, _| c.delete_vlm_grp(&rg, nr)).await
}
