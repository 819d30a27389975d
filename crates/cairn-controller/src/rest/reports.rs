//! `/v1/error-reports`: the controller's reports (in its store) and the
//! satellites' (fetched from each online satellite), as LINSTOR's
//! `ErrorReports` and `CtrlErrorListApiCallHandler` answer them.
//!
//! Query filters `node`, `since`, `to` (ms), `withContent` (default false
//! for the list, true for one id) and `limit` (default 1000); `offset` is
//! read and ignored, as LINSTOR ignores it. An unknown id is an empty list,
//! a delete that matches nothing `No error reports deleted.` (LINSTOR's
//! replies). A satellite that is not online is left out.

use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::response::Response;
use axum::routing::get;
use cairn_api::rc::{self, ApiCallRc};
use cairn_domain::name::key;
use cairn_proto::{ErrorReport, ErrorReportFilter, ErrorReportsDeleted, PATH_ERROR_REPORTS, PATH_ERROR_REPORTS_DELETE};
use serde::Deserialize;
use serde_json::json;

use super::error::ApiError;
use super::input;
use super::reply::{Reply, ok};
use crate::reporter::CONTROLLER_NODE;
use crate::state::AppState;

/// How long a satellite may take to list or delete its reports.
const SATELLITE_TIMEOUT: Duration = Duration::from_secs(20);

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/error-reports", get(list).patch(delete_matching))
        .route("/v1/error-reports/{id}", get(show).delete(delete_one))
        .route("/v1/stats/error-reports", get(count))
}

/// Whose reports: the controller's, and which satellites'.
pub struct Scope {
    pub controller: bool,
    /// Node keys of the satellites to ask.
    pub satellites: Vec<String>,
}

impl Scope {
    /// `names` empty: the controller and every satellite node.
    pub fn of(s: &AppState, names: &[String]) -> Scope {
        let c = s.read();
        let all: Vec<String> = c.nodes.iter().filter(|(_, n)| n.node_type.has_satellite()).map(|(k, _)| k.clone()).collect();
        if names.is_empty() {
            return Scope { controller: true, satellites: all };
        }
        Scope {
            controller: names.iter().any(|n| n.eq_ignore_ascii_case(CONTROLLER_NODE)),
            satellites: all.into_iter().filter(|k| names.iter().any(|n| key(n) == *k)).collect(),
        }
    }
}

/// Every report in `scope` that `f` matches, newest first.
pub async fn collect(s: &AppState, scope: &Scope, f: &ErrorReportFilter) -> Vec<ErrorReport> {
    collect_within(s, scope, f, SATELLITE_TIMEOUT).await
}

/// [`collect`], giving each satellite (asked all at once) `timeout`.
pub async fn collect_within(s: &AppState, scope: &Scope, f: &ErrorReportFilter, timeout: Duration) -> Vec<ErrorReport> {
    let mut out: Vec<ErrorReport> = Vec::new();
    if scope.controller {
        out.extend(s.read().error_reports_matching(f).into_iter().map(|r| f.shown(r)));
    }
    let body = serde_json::to_vec(f).unwrap_or_default();
    let asks = scope.satellites.iter().map(|node| {
        let body = body.clone();
        async move {
            match s.links().request::<Vec<ErrorReport>>(node, PATH_ERROR_REPORTS, Some(body), timeout).await {
                Ok(v) => v,
                Err(e) => {
                    tracing::debug!(node = %node, "no error reports from the satellite: {e}");
                    Vec::new()
                }
            }
        }
    });
    for v in futures_util::future::join_all(asks).await {
        out.extend(v.into_iter().filter(|r| f.matches(r)).map(|r| f.shown(&r)));
    }
    out.sort_by(|a, b| b.error_time.cmp(&a.error_time).then_with(|| b.id.cmp(&a.id)));
    out
}

fn filter_of(q: &cairn_api::query::Query, with_content: bool) -> Result<ErrorReportFilter, ApiError> {
    Ok(ErrorReportFilter {
        since: input::param(q.int("since"))?,
        to: input::param(q.int("to"))?,
        with_content: match q.get("withContent") {
            Some(_) => input::param(q.flag("withContent"))?,
            None => with_content,
        },
        ..Default::default()
    })
}

async fn answer(s: &AppState, q: &cairn_api::query::Query, f: ErrorReportFilter) -> Result<Response, ApiError> {
    let limit = input::param(q.int("limit"))?.unwrap_or(1000);
    let _offset = input::param(q.int("offset"))?;
    let nodes: Vec<String> = q.get("node").filter(|n| !n.is_empty()).map(|n| vec![n.to_string()]).unwrap_or_default();
    let mut reports = collect(s, &Scope::of(s, &nodes), &f).await;
    if limit > 0 {
        reports.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
    }
    Ok(ok(&reports))
}

async fn list(State(s): State<AppState>, RawQuery(q): RawQuery) -> Result<Response, ApiError> {
    let q = input::query(q);
    let f = filter_of(&q, false)?;
    answer(&s, &q, f).await
}

async fn show(State(s): State<AppState>, Path(id): Path<String>, RawQuery(q): RawQuery) -> Result<Response, ApiError> {
    let q = input::query(q);
    let mut f = filter_of(&q, true)?;
    f.ids = vec![id];
    answer(&s, &q, f).await
}

/// LINSTOR's `ErrorReportDelete`.
#[derive(Debug, Default, Deserialize)]
struct DeleteRequest {
    since: Option<i64>,
    to: Option<i64>,
    #[serde(default)]
    nodes: Option<Vec<String>>,
    exception: Option<String>,
    version: Option<String>,
    #[serde(default)]
    ids: Option<Vec<String>>,
}

async fn delete_matching(State(s): State<AppState>, body: Bytes) -> Result<Reply, ApiError> {
    let req: DeleteRequest = input::body(&body)?;
    let f = ErrorReportFilter {
        since: req.since,
        to: req.to,
        ids: req.ids.unwrap_or_default(),
        exception: req.exception,
        version: req.version,
        with_content: false,
    };
    delete(&s, &req.nodes.unwrap_or_default(), &f).await
}

async fn delete_one(State(s): State<AppState>, Path(id): Path<String>) -> Result<Reply, ApiError> {
    delete(&s, &[], &ErrorReportFilter { ids: vec![id], ..Default::default() }).await
}

/// Deletes on the controller (when `nodes` is empty or names it) and on
/// the named satellites (all when `nodes` is empty).
pub async fn delete(s: &AppState, nodes: &[String], f: &ErrorReportFilter) -> Result<Reply, ApiError> {
    let scope = Scope::of(s, nodes);
    let mut entries = Vec::new();
    if scope.controller {
        entries.extend(s.delete_reports(f).await?);
    }
    let body = serde_json::to_vec(f).map_err(|e| ApiError::Internal(e.to_string()))?;
    // Every satellite at once, answers in the order of the nodes.
    let asks = scope.satellites.iter().map(|node| {
        let name = s.read().nodes.get(node).map_or_else(|| node.clone(), |n| n.name.clone());
        let body = body.clone();
        async move {
            let answer = s.links().request::<ErrorReportsDeleted>(node, PATH_ERROR_REPORTS_DELETE, Some(body), SATELLITE_TIMEOUT).await;
            (name, answer)
        }
    });
    for (name, answer) in futures_util::future::join_all(asks).await {
        match answer {
            Ok(d) if d.ids.is_empty() => {}
            Ok(d) => entries.push(
                ApiCallRc::new(rc::DELETED, format!("{name}: Deleted {} error-report(s)", d.ids.len())).with_ref("Node", name.clone()),
            ),
            Err(e) if nodes.is_empty() => tracing::debug!(node = %name, "error reports not deleted on the satellite: {e}"),
            Err(e) => entries.push(
                ApiCallRc::warning(0, rc::WARN_NOT_CONNECTED, format!("Error reports of node '{name}' were not deleted."))
                    .with_cause(e.to_string())
                    .with_ref("Node", name.clone()),
            ),
        }
    }
    if entries.is_empty() {
        entries.push(ApiCallRc::info(0, rc::INFO_NOOP, "No error reports deleted."));
    }
    Ok(Reply::new(200, entries))
}

/// All reports, the satellites' included (LINSTOR's `ErrorReportStats`).
async fn count(State(s): State<AppState>) -> Response {
    let n = collect(&s, &Scope::of(&s, &[]), &ErrorReportFilter::default()).await.len();
    ok(&json!({ "count": n }))
}
