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

/// Items per segment of [`ArrayWriter::items_parallel`].
const SEGMENT: usize = 256;

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

    /// Appends items already serialised and joined by commas.
    fn raw_items(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        if bytes.is_empty() {
            return Ok(());
        }
        if !std::mem::take(&mut self.first) {
            self.buf.push(b',');
        }
        self.buf.extend_from_slice(bytes);
        if self.buf.len() >= CHUNK { self.send() } else { Ok(()) }
    }

    /// Appends `render` of every item, in order, serialising on this
    /// thread and one more: segments of [`SEGMENT`] items alternate
    /// between the two, the helper's waiting (at most two at a time) until
    /// their turn. A long list takes about half the time on two cores; at
    /// most three segments' text is held besides the chunk being sent.
    pub fn items_parallel<I: Sync, T: Serialize>(&mut self, items: &[I], render: impl Fn(&I) -> T + Sync) -> std::io::Result<()> {
        if items.len() < 2 * SEGMENT {
            for i in items {
                self.item(&render(i))?;
            }
            return Ok(());
        }
        let segments: Vec<&[I]> = items.chunks(SEGMENT).collect();
        let render = &render;
        let theirs = &segments;
        std::thread::scope(|scope| {
            let (tx, rx) = std::sync::mpsc::sync_channel::<std::io::Result<Vec<u8>>>(1);
            scope.spawn(move || {
                for segment in theirs.iter().skip(1).step_by(2) {
                    let mut buf = Vec::with_capacity(CHUNK);
                    let mut done = Ok(());
                    for (k, i) in segment.iter().enumerate() {
                        if k > 0 {
                            buf.push(b',');
                        }
                        if let Err(e) = serde_json::to_writer(&mut buf, &render(i)) {
                            done = Err(e.into());
                            break;
                        }
                    }
                    // The consumer stopped (the client went away): so do we.
                    if tx.send(done.map(|()| buf)).is_err() {
                        return;
                    }
                }
            });
            for (n, segment) in segments.iter().enumerate() {
                if n % 2 == 0 {
                    for i in *segment {
                        self.item(&render(i))?;
                    }
                } else {
                    let bytes = rx.recv().map_err(|_| std::io::Error::other("the serialising thread ended early"))??;
                    self.raw_items(&bytes)?;
                }
            }
            Ok(())
        })
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

#[cfg(test)]
mod tests {
    use super::*;

    fn written(n: usize, fail_at: Option<usize>) -> (std::io::Result<()>, Vec<u8>) {
        let (tx, mut rx) = tokio::sync::mpsc::channel(1_000_000);
        let mut w = ArrayWriter { tx, buf: Vec::new(), first: true };
        w.buf.push(b'[');
        let items: Vec<usize> = (0..n).collect();
        let r = w.items_parallel(&items, |i| {
            if Some(*i) == fail_at {
                // A map with a non-string key: serde_json refuses it.
                let mut bad = BTreeMap::new();
                bad.insert(vec![1u8], 1);
                return Err(bad);
            }
            Ok(format!("item {i}"))
        });
        let r = r.and_then(|()| {
            w.buf.push(b']');
            w.send()
        });
        drop(w);
        let mut out = Vec::new();
        while let Ok(Ok(chunk)) = rx.try_recv() {
            out.extend_from_slice(&chunk);
        }
        (r, out)
    }

    use std::collections::BTreeMap;

    #[test]
    fn parallel_items_come_out_in_order_and_equal_to_one_thread() {
        for n in [0, 1, 2 * SEGMENT - 1, 2 * SEGMENT, 7 * SEGMENT + 13] {
            let (r, out) = written(n, None);
            r.expect("written");
            let got: Vec<Result<String, BTreeMap<Vec<u8>, i32>>> = serde_json::from_slice(&out).expect("one JSON array");
            let want: Vec<Result<String, BTreeMap<Vec<u8>, i32>>> = (0..n).map(|i| Ok(format!("item {i}"))).collect();
            assert_eq!(got, want, "n = {n}");
        }
    }

    #[test]
    fn an_item_that_cannot_be_serialised_fails_the_whole_list_on_either_thread() {
        // In a segment of this thread, then of the helper's.
        for at in [3, SEGMENT + 3] {
            let (r, _) = written(4 * SEGMENT, Some(at));
            assert!(r.is_err(), "failure at {at} must fail the list");
        }
    }
}
