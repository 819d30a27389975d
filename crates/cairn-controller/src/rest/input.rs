//! Request input: bodies parsed as JSON whatever the Content-Type says (W1),
//! empty or `null` bodies meaning "defaults" (W2), and query strings.

use axum::body::Bytes;
use cairn_api::query::Query;
use serde::de::DeserializeOwned;

use super::error::ApiError;

/// Parses a JSON body; an empty, whitespace-only or `null` body gives the
/// type's default.
pub fn body<T: DeserializeOwned + Default>(bytes: &Bytes) -> Result<T, ApiError> {
    let text = std::str::from_utf8(bytes).map_err(|_| ApiError::parse("The request body is not UTF-8."))?;
    let trimmed = text.trim();
    if trimmed.is_empty() || trimmed == "null" {
        return Ok(T::default());
    }
    serde_json::from_str(trimmed).map_err(|e| ApiError::parse(format!("Invalid JSON body: {e}")))
}

/// Parses a JSON body that must be present.
pub fn required<T: DeserializeOwned>(bytes: &Bytes) -> Result<T, ApiError> {
    let text = std::str::from_utf8(bytes).map_err(|_| ApiError::parse("The request body is not UTF-8."))?;
    if text.trim().is_empty() {
        return Err(ApiError::parse("The request needs a JSON body."));
    }
    serde_json::from_str(text.trim()).map_err(|e| ApiError::parse(format!("Invalid JSON body: {e}")))
}

/// The parsed query string.
pub fn query(raw: Option<String>) -> Query {
    Query::parse(raw.as_deref())
}

/// A volume number from a path segment.
pub fn vlm_nr(s: &str) -> Result<i64, ApiError> {
    s.trim().parse().map_err(|_| ApiError::parse(format!("'{s}' is not a volume number.")))
}

/// Maps a query-parameter error to a 400.
pub fn param<T>(r: Result<T, String>) -> Result<T, ApiError> {
    r.map_err(ApiError::Parse)
}
