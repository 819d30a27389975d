//! `/v1/node-connections`.

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::response::Response;
use axum::routing::get;
use cairn_api::PropsModify;
use cairn_api::node_connection::NodeConnection;
use cairn_api::query::NameFilter;

use super::error::ApiError;
use super::input;
use super::reply::{Reply, ok};
use crate::state::AppState;

pub fn routes() -> Router<AppState> {
    Router::new().route("/v1/node-connections", get(list)).route("/v1/node-connections/{a}/{b}", get(get_one).put(modify))
}

/// `node_a`/`node_b` filter on either end of the pair.
async fn list(State(s): State<AppState>, RawQuery(q): RawQuery) -> Result<Response, ApiError> {
    let q = input::query(q);
    let a = NameFilter::new(&q.all("node_a"));
    let b = NameFilter::new(&q.all("node_b"));
    let page = input::param(q.page())?;
    let c = s.read();
    let out: Vec<NodeConnection> = c
        .node_conns
        .values()
        .filter(|n| (a.matches(&n.node_a) && b.matches(&n.node_b)) || (a.matches(&n.node_b) && b.matches(&n.node_a)))
        .map(|n| n.to_api())
        .collect();
    Ok(ok(&page.apply(out)))
}

async fn get_one(State(s): State<AppState>, Path((a, b)): Path<(String, String)>) -> Result<Response, ApiError> {
    let c = s.read();
    let na = c.node(&a, cairn_api::rc::MASK_NODE_CONN)?;
    let nb = c.node(&b, cairn_api::rc::MASK_NODE_CONN)?;
    let conn = c
        .node_conns
        .get(&cairn_domain::node_connection::NodeConnection::sorted_keys(&na.name, &nb.name))
        .map(|n| n.to_api())
        .unwrap_or_else(|| NodeConnection { node_a: na.name.clone(), node_b: nb.name.clone(), props: Default::default() });
    Ok(ok(&conn))
}

async fn modify(State(s): State<AppState>, Path((a, b)): Path<(String, String)>, body: Bytes) -> Result<Reply, ApiError> {
    let req: PropsModify = input::body(&body)?;
    s.mutate(200, |c, _| c.modify_node_conn(&a, &b, &req)).await
}
