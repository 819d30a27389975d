//! Storage pools (per node and the cluster-wide view) and storage pool
//! definitions.

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::response::Response;
use axum::routing::get;
use cairn_api::PropsModify;
use cairn_api::query::{NameFilter, Query};
use cairn_api::rc;
use cairn_api::storage_pool::{StoragePool, StoragePoolDefinition};
use cairn_domain::Cluster;
use cairn_domain::name::key;

use super::error::ApiError;
use super::input;
use super::reply::{Reply, ok};
use crate::state::AppState;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/view/storage-pools", get(view))
        .route("/v1/nodes/{node}/storage-pools", get(list_on_node).post(create))
        .route("/v1/nodes/{node}/storage-pools/{sp}", get(get_one).put(modify).delete(remove))
        .route("/v1/storage-pool-definitions", get(list_dfns).post(create_dfn))
        .route("/v1/storage-pool-definitions/{sp}", get(get_dfn).put(modify_dfn).delete(delete_dfn))
}

/// A pool as the REST API shows it: with what its satellite observes
/// (capacity, snapshot support) and what it says is wrong with it.
pub(super) fn api_pool(s: &AppState, node_key: &str, p: &cairn_domain::storage_pool::StorPool) -> StoragePool {
    let mut sp = p.to_api(s.links().capacity(node_key, &p.name), s.links().pool_snapshots(node_key, &p.name));
    if let Some(e) = s.links().pool_error(node_key, &p.name) {
        let mut report = rc::ApiCallRc::error(rc::MASK_STOR_POOL, rc::FAIL_UNKNOWN_ERROR, e.message)
            .with_ref("Node", &p.node)
            .with_ref("StorPool", &p.name);
        report.cause = e.cause;
        report.details = e.details;
        sp.reports.push(report);
    }
    sp
}

/// Pools matching the query's `nodes`, `storage_pools` and `props`.
fn filtered(s: &AppState, c: &Cluster, q: &Query, only_node: Option<&str>) -> Result<Vec<StoragePool>, ApiError> {
    let nodes = NameFilter::new(&q.all("nodes"));
    let pools = NameFilter::new(&q.all("storage_pools"));
    let props = q.props_filter();
    let page = input::param(q.page())?;
    let only = only_node.map(key);
    let out = c
        .stor_pools
        .iter()
        .filter(|((n, _), p)| {
            only.as_ref().is_none_or(|o| o == n) && nodes.matches(&p.node) && pools.matches(&p.name) && props.matches(&p.props)
        })
        .map(|((n, _), p)| api_pool(s, n, p))
        .collect();
    Ok(page.apply(out))
}

async fn view(State(s): State<AppState>, RawQuery(q): RawQuery) -> Result<Response, ApiError> {
    let q = input::query(q);
    Ok(ok(&filtered(&s, &s.read(), &q, None)?))
}

async fn list_on_node(State(s): State<AppState>, Path(node): Path<String>, RawQuery(q): RawQuery) -> Result<Response, ApiError> {
    let q = input::query(q);
    let c = s.read();
    let n = c.node(&node, rc::MASK_STOR_POOL)?;
    Ok(ok(&filtered(&s, &c, &q, Some(&n.name))?))
}

async fn get_one(State(s): State<AppState>, Path((node, sp)): Path<(String, String)>) -> Result<Response, ApiError> {
    let c = s.read();
    c.node(&node, rc::MASK_STOR_POOL)?;
    let p = c.stor_pool(&node, &sp, rc::MASK_STOR_POOL)?;
    Ok(ok(&api_pool(&s, &key(&p.node), p)))
}

async fn create(State(s): State<AppState>, Path(node): Path<String>, body: Bytes) -> Result<Reply, ApiError> {
    let req: StoragePool = input::required(&body)?;
    s.mutate(201, |c, ctx| c.create_stor_pool(&node, &req, ctx)).await
}

async fn modify(State(s): State<AppState>, Path((node, sp)): Path<(String, String)>, body: Bytes) -> Result<Reply, ApiError> {
    let req: PropsModify = input::body(&body)?;
    s.mutate(200, |c, _| c.modify_stor_pool(&node, &sp, &req)).await
}

async fn remove(State(s): State<AppState>, Path((node, sp)): Path<(String, String)>) -> Result<Reply, ApiError> {
    s.mutate(200, |c, _| c.delete_stor_pool(&node, &sp)).await
}

async fn list_dfns(State(s): State<AppState>, RawQuery(q): RawQuery) -> Result<Response, ApiError> {
    let q = input::query(q);
    let names = NameFilter::new(&q.all("storage_pools"));
    let props = q.props_filter();
    let page = input::param(q.page())?;
    let c = s.read();
    let out: Vec<StoragePoolDefinition> =
        c.stor_pool_dfns.values().filter(|d| names.matches(&d.name) && props.matches(&d.props)).map(|d| d.to_api()).collect();
    Ok(ok(&page.apply(out)))
}

async fn get_dfn(State(s): State<AppState>, Path(sp): Path<String>) -> Result<Response, ApiError> {
    Ok(ok(&s.read().stor_pool_dfn(&sp, rc::MASK_STOR_POOL_DFN)?.to_api()))
}

async fn create_dfn(State(s): State<AppState>, body: Bytes) -> Result<Reply, ApiError> {
    let req: StoragePoolDefinition = input::required(&body)?;
    s.mutate(201, |c, ctx| c.create_stor_pool_dfn(&req, ctx)).await
}

async fn modify_dfn(State(s): State<AppState>, Path(sp): Path<String>, body: Bytes) -> Result<Reply, ApiError> {
    let req: PropsModify = input::body(&body)?;
    s.mutate(200, |c, _| c.modify_stor_pool_dfn(&sp, &req)).await
}

async fn delete_dfn(State(s): State<AppState>, Path(sp): Path<String>) -> Result<Reply, ApiError> {
    s.mutate(200, |c, _| c.delete_stor_pool_dfn(&sp)).await
}
