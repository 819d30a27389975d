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

/// How much of a streamed reply is written before it is handed to the
/// connection.
const CHUNK: usize = 64 * 1024;

/// Writes the items of a JSON array into chunks sent to the connection as
/// they fill (see [`stream_array`]).
pub struct ArrayWriter {
    tx: tokio::sync::mpsc::Sender<std::io::Result<axum::body::Bytes>>,
    buf: Vec<u8>,
    first: bool,
}

impl ArrayWriter {
    /// Appends one item. Fails once the client has gone: the producer
    /// then stops.
    pub fn item<T: Serialize + ?Sized>(&mut self, v: &T) -> std::io::Result<()> {
        if !std::mem::take(&mut self.first) {
            self.buf.push(b',');
        }
        serde_json::to_writer(&mut self.buf, v)?;
        if self.buf.len() >= CHUNK { self.send() } else { Ok(()) }
    }

    fn send(&mut self) -> std::io::Result<()> {
        let chunk = axum::body::Bytes::from(std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK)));
        self.tx.blocking_send(Ok(chunk)).map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the client went away"))
    }
}

/// A 200 JSON array that `produce` writes item by item on a blocking
/// thread, sent in chunks of [`CHUNK`] bytes as it is written: a list of
/// every resource is never held whole in memory, neither as objects nor
/// as text, and the producer works from its own snapshot of the cluster.
/// A failure half-way (it cannot happen with Cairn's wire types) aborts
/// the connection instead of ending a truncated array cleanly.
pub fn stream_array(produce: impl FnOnce(&mut ArrayWriter) -> std::io::Result<()> + Send + 'static) -> Response {
    let (tx, rx) = tokio::sync::mpsc::channel(2);
    tokio::task::spawn_blocking(move || {
        let mut w = ArrayWriter { tx, buf: Vec::with_capacity(CHUNK), first: true };
        w.buf.push(b'[');
        let done = produce(&mut w).and_then(|()| {
            w.buf.push(b']');
            w.send()
        });
        if let Err(e) = done
            && e.kind() != std::io::ErrorKind::BrokenPipe
        {
            tracing::error!("a streamed reply failed: {e}");
            let _ = w.tx.blocking_send(Err(e));
        }
    });
    // Fused: a body may be polled again after its end (the gzip layer's
    // encoder does), which an unfold stream must never be.
    let chunks =
        futures_util::StreamExt::fuse(futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|chunk| (chunk, rx)) }));
    let mut r = Response::new(axum::body::Body::from_stream(chunks));
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}
