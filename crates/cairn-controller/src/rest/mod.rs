//! LINSTOR REST API v1: one module per object kind, thin handlers that
//! parse input, call the domain through [`AppState`], and shape the reply.

pub mod config;
pub mod controller;
pub mod encryption;
pub mod error;
pub mod input;
pub mod kvs;
pub mod node_connections;
pub mod nodes;
pub mod physical_storage;
pub mod placement;
pub mod props_info;
pub mod reply;
pub mod resource_connections;
pub mod resource_definitions;
pub mod resource_groups;
pub mod resources;
pub mod snapshots;
pub mod stats;
pub mod storage_pools;

use axum::Router;
use axum::extract::Request;
use axum::http::{Method, Uri};
use axum::response::Response;
use cairn_api::rc;
use tower::util::MapRequest;

use crate::spec_routes::SPEC_ROUTES;
use crate::state::AppState;
use error::ApiError;

/// The REST router (without path normalisation; see [`app`]).
pub fn router(state: AppState) -> Router {
    // The spec's `…/properties/info` paths would otherwise be taken by the
    // `{name}` routes beside them (static segments win over captures).
    Router::new()
        .merge(props_info::routes())
        .merge(controller::routes())
        .merge(config::routes())
        .merge(stats::routes())
        .merge(nodes::routes())
        .merge(storage_pools::routes())
        .merge(resource_groups::routes())
        .merge(resource_definitions::routes())
        .merge(resources::routes())
        .merge(placement::routes())
        .merge(kvs::routes())
        .merge(node_connections::routes())
        .merge(resource_connections::routes())
        .merge(physical_storage::routes())
        .merge(encryption::routes())
        .merge(snapshots::routes())
        .fallback(unrouted)
        .method_not_allowed_fallback(unrouted)
        .with_state(state)
}

/// The service the controller serves: the router behind trailing-slash
/// normalisation (golinstor requests `/v1/physical-storage/`, W9).
pub type App = MapRequest<Router, fn(Request) -> Request>;

pub fn app(state: AppState) -> App {
    MapRequest::new(router(state), strip_trailing_slash as fn(Request) -> Request)
}

fn strip_trailing_slash(mut req: Request) -> Request {
    tracing::debug!(method = %req.method(), path = %req.uri().path(), "REST request");
    let path = req.uri().path();
    if path.len() > 1 && path.ends_with('/') {
        let trimmed = path.trim_end_matches('/');
        let trimmed = if trimmed.is_empty() { "/" } else { trimmed };
        let pq = match req.uri().query() {
            Some(q) => format!("{trimmed}?{q}"),
            None => trimmed.to_string(),
        };
        let mut parts = req.uri().clone().into_parts();
        if let Ok(p) = pq.parse() {
            parts.path_and_query = Some(p);
            if let Ok(uri) = Uri::from_parts(parts) {
                *req.uri_mut() = uri;
            }
        }
    }
    req
}

/// Whether a concrete path matches a spec template (`{x}` matches one
/// segment).
fn template_matches(template: &str, path: &str) -> bool {
    let t: Vec<&str> = template.trim_matches('/').split('/').collect();
    let p: Vec<&str> = path.trim_matches('/').split('/').collect();
    t.len() == p.len() && t.iter().zip(&p).all(|(t, p)| (t.starts_with('{') && t.ends_with('}') && !p.is_empty()) || t == p)
}

/// Answers requests no handler took: 501 for what the spec defines but
/// Cairn does not serve yet, 405 for a known path with another method, 404
/// for anything else. Always with an ApiCallRc body.
async fn unrouted(method: Method, uri: Uri) -> Response {
    use axum::response::IntoResponse;
    let path = uri.path();
    let templates: Vec<&(&str, &str)> = SPEC_ROUTES.iter().filter(|(_, t)| template_matches(t, path)).collect();
    let err = if templates.iter().any(|(m, _)| *m == method.as_str()) {
        ApiError::Status(
            501,
            format!("{method} {path} is part of the LINSTOR REST API but not implemented by Cairn yet."),
            rc::MASK_ERROR | rc::FAIL_IMPL_ERROR,
        )
    } else if !templates.is_empty() {
        ApiError::Status(405, format!("Method {method} is not allowed on {path}."), rc::MASK_ERROR | rc::FAIL_UNKNOWN_ERROR)
    } else {
        ApiError::Status(404, format!("There is no REST endpoint at {path}."), rc::UNKNOWN_API_CALL)
    };
    err.into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_match_one_segment_per_placeholder() {
        assert!(template_matches("/v1/nodes/{node}/lost", "/v1/nodes/alpha/lost"));
        assert!(!template_matches("/v1/nodes/{node}/lost", "/v1/nodes/alpha"));
        assert!(!template_matches("/v1/nodes/{node}", "/v1/nodes/a/b"));
        assert!(template_matches("/v1/files/{extFileName}", "/v1/files/%2Fetc%2Fx"));
    }
}
