//! The one place where errors become HTTP responses.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use cairn_api::rc::{self, ApiCallRc};
use cairn_domain::OpError;
use cairn_store::StoreError;

use super::reply::Reply;

/// Everything a handler can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The domain refused the request; carries LINSTOR's entry.
    #[error(transparent)]
    Op(#[from] OpError),
    /// The request body or a parameter could not be parsed (400).
    #[error("{0}")]
    Parse(String),
    /// The database failed; nothing was applied.
    #[error(transparent)]
    Store(std::sync::Arc<StoreError>),
    /// A bug or a failed task; nothing was applied.
    #[error("{0}")]
    Internal(String),
    /// A response with an explicit status (unknown path, 405, 501).
    #[error("{1}")]
    Status(u16, String, i64),
}

impl ApiError {
    pub fn parse(what: impl Into<String>) -> Self {
        ApiError::Parse(what.into())
    }
}

/// Marks a 5xx reply of an unexpected failure (the database, a bug): the
/// error-report layer ([`record_failures`]) makes a report of it and names
/// the report in the reply's `error_report_ids`.
#[derive(Debug, Clone)]
pub struct Unexpected {
    pub exception: &'static str,
    pub message: String,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let unexpected = match &self {
            ApiError::Store(e) => Some(Unexpected { exception: "StoreError", message: e.to_string() }),
            ApiError::Internal(m) => Some(Unexpected { exception: "InternalError", message: m.clone() }),
            _ => None,
        };
        let (status, entry) = match self {
            ApiError::Op(e) => (e.rc.error_status().unwrap_or(500), *e.rc),
            ApiError::Parse(msg) => (
                400,
                ApiCallRc::new(rc::API_CALL_PARSE_ERROR, "Could not parse the request.")
                    .with_cause(msg)
                    .with_correction("Send a JSON body of the shape the LINSTOR REST API v1 documents."),
            ),
            ApiError::Store(e) => {
                tracing::error!("database failure: {e}");
                (
                    500,
                    ApiCallRc::error(0, rc::FAIL_SQL, "The database failed; the request was not applied.")
                        .with_cause(e.to_string())
                        .with_correction("Check the controller's data directory and log, then retry."),
                )
            }
            ApiError::Internal(msg) => {
                tracing::error!("internal error: {msg}");
                (500, ApiCallRc::error(0, rc::FAIL_IMPL_ERROR, "Internal error; the request was not applied.").with_cause(msg))
            }
            ApiError::Status(status, msg, code) => (status, ApiCallRc::new(code, msg)),
        };
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut r = Reply::new(status.as_u16(), vec![entry]).into_response();
        if let Some(u) = unexpected {
            r.extensions_mut().insert(u);
        }
        r
    }
}

/// The largest reply body [`record_failures`] rewrites.
const REPLY_LIMIT: usize = 1 << 20;

/// The answer for a handler that panicked (marked [`Unexpected`]).
fn panicked(line: &str, panic: &(dyn std::any::Any + Send)) -> Response {
    let what = panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_string());
    let entry = ApiCallRc::new(rc::MASK_ERROR | rc::FAIL_IMPL_ERROR, format!("Cairn failed unexpectedly while answering {line}: {what}"));
    let mut resp = Reply::new(500, vec![entry]).into_response();
    resp.extensions_mut().insert(Unexpected { exception: "Panic", message: what });
    resp
}

/// Makes an error report of every reply marked [`Unexpected`] (the request
/// line, the peer, the error) and adds its id to the reply's error
/// entries, as LINSTOR's `error_report_ids`.
pub async fn record_failures(
    axum::extract::State(s): axum::extract::State<crate::state::AppState>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let line = format!("{} {}", req.method(), req.uri().path());
    let peer = req.extensions().get::<axum::extract::ConnectInfo<super::http::PeerAddr>>().map(|c| c.0.0.to_string());
    // A handler that panics answers 500 with an implementation error and
    // becomes a report, as LINSTOR reports its ImplementationErrors; the
    // connection and the process carry on.
    let resp = match futures_util::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(next.run(req))).await {
        Ok(resp) => resp,
        Err(panic) => panicked(&line, panic.as_ref()),
    };
    let Some(u) = resp.extensions().get::<Unexpected>().cloned() else {
        return resp;
    };
    let problem = cairn_proto::error_report::Problem {
        exception: u.exception.to_string(),
        message: u.message,
        details: Some(format!("While answering {line}")),
        origin: Some((file!().to_string(), line.clone(), line!() as i32)),
        peer,
        ..Default::default()
    };
    let Some(id) = s.report(problem).await else {
        return resp;
    };
    let (mut parts, body) = resp.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, REPLY_LIMIT).await else {
        return (parts.status, "error reply lost").into_response();
    };
    let body = match serde_json::from_slice::<Vec<ApiCallRc>>(&bytes) {
        Ok(mut entries) => {
            for e in entries.iter_mut().filter(|e| e.is_error()) {
                e.error_report_ids.push(id.clone());
            }
            serde_json::to_vec(&entries).map(axum::body::Bytes::from).unwrap_or(bytes)
        }
        Err(_) => bytes,
    };
    parts.headers.remove(axum::http::header::CONTENT_LENGTH);
    Response::from_parts(parts, axum::body::Body::from(body))
}
