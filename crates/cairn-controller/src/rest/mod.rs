//! LINSTOR REST API v1: one module per object kind, thin handlers that
//! parse input, call the domain through [`AppState`], and shape the reply.

pub mod auth;
pub mod backups;
pub mod clone;
pub mod config;
pub mod controller;
pub mod database;
pub mod encryption;
pub mod error;
pub mod events;
pub mod files;
pub mod gzip;
pub mod http;
pub mod input;
pub mod kvs;
pub mod metrics;
pub mod node_connections;
pub mod nodes;
pub mod physical_storage;
pub mod placement;
pub mod props_info;
pub mod remotes;
pub mod reply;
pub mod reports;
pub mod resource_connections;
pub mod resource_definitions;
pub mod resource_groups;
pub mod resources;
mod schedules;
pub mod ship;
pub mod snapshots;
pub mod sos;
pub mod stats;
pub mod storage_pools;
pub mod unsupported;

use axum::Router;
use axum::extract::Request;
use axum::http::{Method, Uri};
use axum::response::Response;
use cairn_api::rc;
use tower::util::{MapRequest, MapResponse};
use tower_http::CompressionLevel;
use tower_http::compression::CompressionLayer;

use std::sync::Arc;

use crate::auth::Users;
use crate::state::AppState;
use error::ApiError;

/// The REST router (without path normalisation; see [`app`]). With
/// `https_port`, the plain listener's: `/v1` requests are redirected there
/// ([`http::to_https`], behind [`http::guard`] so that a redirected
/// request's body is read before the answer). Authentication
/// ([`crate::auth::authenticate`]) comes after the redirect, so a client
/// learns where HTTPS is before it sends any credential.
pub fn router(state: AppState, https_port: Option<u16>, users: Option<Arc<Users>>) -> Router {
    // The spec's `…/properties/info` paths would otherwise be taken by the
    // `{name}` routes beside them (static segments win over captures).
    let api = Router::new()
        .merge(props_info::routes())
        .merge(controller::routes())
        .merge(auth::routes())
        .merge(database::routes())
        .merge(config::routes())
        .merge(stats::routes())
        .merge(nodes::routes())
        .merge(storage_pools::routes())
        .merge(resource_groups::routes())
        .merge(resource_definitions::routes())
        .merge(resources::routes())
        .merge(placement::routes())
        .merge(remotes::routes())
        .merge(backups::routes())
        .merge(ship::routes())
        .merge(reports::routes())
        .merge(sos::routes())
        .merge(schedules::routes())
        .merge(kvs::routes())
        .merge(files::routes())
        .merge(node_connections::routes())
        .merge(resource_connections::routes())
        .merge(physical_storage::routes())
        .merge(encryption::routes())
        .merge(snapshots::routes())
        .merge(clone::routes())
        .merge(events::routes());
    let routes = metrics::install(api).fallback(unrouted).method_not_allowed_fallback(method_not_allowed);
    let routes = routes.layer(axum::middleware::from_fn_with_state(state.clone(), error::record_failures));
    let gate = crate::auth::Gate { state: state.clone(), users };
    let routes = routes.layer(axum::middleware::from_fn_with_state(gate, crate::auth::authenticate));
    let routes = match https_port {
        Some(port) => routes.layer(axum::middleware::from_fn_with_state(port, http::to_https)),
        None => routes,
    };
    // Replies go gzip-compressed to clients that accept it (python-linstor
    // asks for gzip on every call); at the fastest level, as lists are large
    // and compress well even so. Event streams and tiny replies stay plain
    // (tower-http's default predicate).
    let gzip = CompressionLayer::new().gzip(true).quality(CompressionLevel::Fastest);
    routes.layer(axum::middleware::from_fn(http::guard)).layer(axum::middleware::from_fn(http::access_log)).layer(gzip).with_state(state)
}

/// The service the controller serves: the router behind trailing-slash
/// normalisation (golinstor requests `/v1/physical-storage/`, W9), its
/// 405 answers completed with the `Allow` methods of LINSTOR's API.
pub type App = MapResponse<MapRequest<Router, fn(Request) -> Request>, fn(Response) -> Response>;

pub fn app(state: AppState, https_port: Option<u16>, users: Option<Arc<Users>>) -> App {
    MapResponse::new(
        MapRequest::new(router(state, https_port, users), strip_trailing_slash as fn(Request) -> Request),
        http::complete_allow as fn(Response) -> Response,
    )
}

fn strip_trailing_slash(mut req: Request) -> Request {
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

/// Answers requests for paths no route serves: 501 for what the spec
/// defines but Cairn does not serve (yet, or deliberately: see
/// [`unsupported`]), 405 for a known path with another method, 404 for
/// anything else. Always with an ApiCallRc body; the 405's
/// `Allow` header is added by [`http::guard`].
async fn unrouted(method: Method, uri: Uri) -> Response {
    refuse(&method, uri.path(), false)
}

/// Answers a method that no route of the path serves: 501 when LINSTOR's
/// API has it, 405 otherwise.
async fn method_not_allowed(method: Method, uri: Uri) -> Response {
    refuse(&method, uri.path(), true)
}

fn refuse(method: &Method, path: &str, path_served: bool) -> Response {
    use axum::response::IntoResponse;
    if let Some(u) = unsupported::feature_of(method, path) {
        return reply::Reply::new(501, vec![unsupported::entry(u)]).into_response();
    }
    let spec = http::spec_methods(path);
    let err = if spec.contains(method.as_str()) {
        ApiError::Status(
            501,
            format!("{method} {path} is part of the LINSTOR REST API but not implemented by Cairn yet."),
            rc::MASK_ERROR | rc::FAIL_IMPL_ERROR,
        )
    } else if path_served || !spec.is_empty() {
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
