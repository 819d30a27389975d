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

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
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
        Reply::new(status.as_u16(), vec![entry]).into_response()
    }
}
