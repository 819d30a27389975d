//! `/v1/events/*`: LINSTOR's server-sent event streams (see
//! [`crate::events`]).
//!
//! As in LINSTOR: the promotion stream starts with one `may-promote-change`
//! per DRBD resource (its current value) only when the request carries
//! `Last-Event-ID: current`, else with nothing; the node stream never
//! starts with the current state.

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::Response;
use axum::routing::get;
use cairn_domain::name::key;

use crate::events::{MayPromoteChange, Stream, frame};
use crate::state::AppState;

pub fn routes() -> Router<AppState> {
    Router::new().route("/v1/events/drbd/promotion", get(promotion)).route("/v1/events/nodes", get(nodes))
}

fn stream(body: axum::body::Body) -> Response {
    let mut r = Response::new(body);
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    r
}

async fn promotion(State(s): State<AppState>, headers: HeaderMap) -> Response {
    let current = headers.get("last-event-id").is_some_and(|v| v.as_bytes() == b"current");
    let events = s.links().events().clone();
    stream(events.body(Stream::Promotion, || if current { current_promotion(&s) } else { Vec::new() }))
}

/// One frame per resource whose top layer is DRBD, with what its node's
/// satellite last reported (null while unknown).
fn current_promotion(s: &AppState) -> Vec<Bytes> {
    let c = s.read();
    c.resources
        .values()
        .filter(|r| r.layer_stack.first().is_some_and(|l| l == "DRBD"))
        .filter_map(|r| {
            let node_name = c.nodes.get(&key(&r.node)).map_or_else(|| r.node.clone(), |n| n.name.clone());
            let rd_name = c.rsc_dfns.get(&key(&r.resource_definition)).map_or_else(|| r.resource_definition.clone(), |d| d.name.clone());
            let may_promote = s.links().may_promote(&key(&r.node), &r.resource_definition);
            frame("may-promote-change", &MayPromoteChange { resource_name: rd_name, node_name, may_promote })
        })
        .collect()
}

async fn nodes(State(s): State<AppState>) -> Response {
    stream(s.links().events().body(Stream::Nodes, Vec::new))
}
