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

/// The nice value of the threads that write streamed lists where
/// `SCHED_IDLE` is refused. A full list of a large cluster is hundreds of
/// milliseconds of CPU; at nice 0 two clients listing without pause took
/// both cores from the requests that change the cluster (an RD create's
/// p99 went from 0.7 to 10 ms). List threads run as `SCHED_IDLE`, which
/// any waking request thread preempts at once (an RD create's p99 while
/// two clients list: 1.8-2.9 ms, against 4.6-5.3 ms at nice 10); lists
/// still get every idle cycle.
const LIST_NICE: i32 = 10;

/// At most this many list threads at once; further lists run on tokio's
/// blocking pool at normal priority (a burst of lists, or clients that do
/// not read, must not grow the process without bound).
const LIST_THREADS: usize = 64;

static LIST_THREADS_ALIVE: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Runs `work` on a thread of its own, `SCHED_IDLE` (or at [`LIST_NICE`]).
fn on_list_thread(work: impl FnOnce() + Send + 'static) {
    use std::sync::atomic::Ordering;
    if LIST_THREADS_ALIVE.fetch_add(1, Ordering::SeqCst) >= LIST_THREADS {
        LIST_THREADS_ALIVE.fetch_sub(1, Ordering::SeqCst);
        tokio::task::spawn_blocking(work);
        return;
    }
    let work = std::sync::Arc::new(parking_lot::Mutex::new(Some(work)));
    let mine = work.clone();
    let spawned = std::thread::Builder::new().name("cairn-list".into()).spawn(move || {
        use thread_priority::{NormalThreadSchedulePolicy, ThreadPriority, ThreadSchedulePolicy};
        let idle = ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Idle);
        let native = thread_priority::thread_native_id();
        if let Err(e) = thread_priority::set_thread_priority_and_policy(native, ThreadPriority::Min, idle) {
            tracing::debug!("list thread is not SCHED_IDLE: {e:?}");
            // Linux keeps a nice value per thread; no pid (`who` 0) is
            // this thread.
            if let Err(e) = rustix::process::setpriority_process(None, LIST_NICE) {
                tracing::debug!("list thread keeps its priority: {e}");
            }
        }
        if let Some(work) = mine.lock().take() {
            work();
        }
        LIST_THREADS_ALIVE.fetch_sub(1, Ordering::SeqCst);
    });
    if let Err(e) = spawned {
        LIST_THREADS_ALIVE.fetch_sub(1, Ordering::SeqCst);
        tracing::warn!("cannot start a list thread, using the blocking pool: {e}");
        if let Some(work) = work.lock().take() {
            tokio::task::spawn_blocking(work);
        }
    }
}

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
    on_list_thread(move || {
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

    /// The scheduling policy and nice value of the thread that reads this
    /// (`/proc/thread-self/stat` fields 41 and 19).
    fn policy_and_nice() -> (u32, i32) {
        let stat = std::fs::read_to_string("/proc/thread-self/stat").expect("stat");
        let (_, after) = stat.rsplit_once(')').expect("comm");
        let fields: Vec<&str> = after.split_whitespace().collect(); // from field 3 on
        (fields[41 - 3].parse().expect("policy"), fields[19 - 3].parse().expect("nice"))
    }

    #[test]
    fn lists_are_written_by_threads_that_any_request_preempts() {
        const SCHED_IDLE: u32 = 5;
        let (tx, rx) = std::sync::mpsc::channel();
        on_list_thread(move || {
            let _ = tx.send(policy_and_nice());
        });
        let (policy, nice) = rx.recv_timeout(std::time::Duration::from_secs(10)).expect("the list thread ran");
        assert!(policy == SCHED_IDLE || nice == LIST_NICE, "policy {policy}, nice {nice}");
        // The caller's own thread is left as it was.
        assert_ne!(policy_and_nice().0, SCHED_IDLE);
    }
}
