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
        .route("/v1/space-report", get(space_report))
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

/// `GET /v1/space-report`: LINSTOR serves a space report from an optional
/// (commercial) service and answers "The SpaceTracking service is not
/// installed." without it; Cairn writes its own plain-text report of what
/// the cluster has and uses, closed by a SHA-256 of the text above it so a
/// copy passed on can be checked (`linstor space-reporting query` prints
/// `reportText` as it comes).
async fn space_report(State(s): State<AppState>) -> Response {
    let text = space_report_text(&s, &s.read(), crate::state::now_ms());
    ok(&serde_json::json!({ "reportText": text }))
}

fn space_report_text(s: &AppState, c: &cairn_domain::Cluster, now_ms: i64) -> String {
    use std::fmt::Write as _;
    let mut t = String::new();
    let _ = writeln!(t, "Cairn space report");
    let _ = writeln!(t, "Generated: {}", cairn_api::time::iso8601_utc(now_ms));
    let _ = writeln!(t, "Nodes: {}", c.nodes.len());
    let _ = writeln!(t);
    let _ = writeln!(t, "Storage pools (node, pool, provider, total KiB, free KiB; '-' when the satellite has not said):");
    let (mut total, mut free) = (0i64, 0i64);
    for ((n, _), p) in c.stor_pools.iter() {
        let api = super::storage_pools::api_pool(s, n, p);
        let show = |v: Option<i64>| v.map_or("-".to_string(), |v| v.to_string());
        let _ = writeln!(t, "  {} {} {} {} {}", p.node, p.name, api.provider_kind, show(api.total_capacity), show(api.free_capacity));
        total = total.saturating_add(api.total_capacity.unwrap_or(0));
        free = free.saturating_add(api.free_capacity.unwrap_or(0));
    }
    // Provisioned: every volume of every diskful replica at its definition's size.
    let mut provisioned = 0i64;
    let mut replicas = 0usize;
    for ((rd, _), r) in c.resources.iter() {
        if r.is_diskless() {
            continue;
        }
        replicas += 1;
        for vd in c.vlm_dfns_of(rd) {
            provisioned = provisioned.saturating_add(vd.size_kib);
        }
    }
    let _ = writeln!(t);
    let _ = writeln!(t, "Total capacity KiB: {total}");
    let _ = writeln!(t, "Free capacity KiB: {free}");
    let _ = writeln!(t, "Resource definitions: {}", c.rsc_dfns.len());
    let _ = writeln!(t, "Diskful replicas: {replicas}");
    let _ = writeln!(t, "Provisioned KiB (volume sizes x diskful replicas): {provisioned}");
    let digest = ring::digest::digest(&ring::digest::SHA256, t.as_bytes());
    let hex: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    let _ = writeln!(t, "SHA-256 of the lines above: {hex}");
    t
}
