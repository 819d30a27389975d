//! Responses: JSON bodies always, `application/json` always (wire rules W3
//! and W4).

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use cairn_api::ApiCallRc;
use serde::Serialize;

/// A list of ApiCallRc entries with its HTTP status.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub entries: Vec<ApiCallRc>,
}

impl Reply {
    pub fn new(status: u16, entries: Vec<ApiCallRc>) -> Self {
        Reply { status, entries }
    }
}

impl IntoResponse for Reply {
    fn into_response(self) -> Response {
        json(StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR), &self.entries)
    }
}

/// Serialises `body` as a JSON response with the given status.
pub fn json<T: Serialize + ?Sized>(status: StatusCode, body: &T) -> Response {
    match serde_json::to_vec(body) {
        Ok(bytes) => {
            let mut r = (status, bytes).into_response();
            r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
            r
        }
        Err(e) => {
            tracing::error!("cannot serialise a reply: {e}");
            let body = format!(
                r#"[{{"ret_code":{},"message":"Internal error: the reply could not be encoded."}}]"#,
                cairn_api::rc::MASK_ERROR | cairn_api::rc::FAIL_IMPL_ERROR
            );
            let mut r = (StatusCode::INTERNAL_SERVER_ERROR, body).into_response();
            r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
            r
        }
    }
}

/// A 200 JSON response.
pub fn ok<T: Serialize + ?Sized>(body: &T) -> Response {
    json(StatusCode::OK, body)
}
