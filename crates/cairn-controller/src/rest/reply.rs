//! Responses: JSON bodies always, `application/json` always (wire rules W3
//! and W4).

use super::gzip;
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

/// Takes `n` of the [`LIST_THREADS`] places at once, or none.
fn reserve_list_threads(n: usize) -> bool {
    use std::sync::atomic::Ordering;
    let taken =
        LIST_THREADS_ALIVE.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |alive| (alive + n <= LIST_THREADS).then_some(alive + n));
    taken.is_ok()
}

/// Runs `work` on a thread of its own, `SCHED_IDLE` (or at [`LIST_NICE`]),
/// in a place [`reserve_list_threads`] took; the place is given back when
/// the thread ends, however `work` ends. Returns `work` when no thread
/// could be started (the place is given back then too).
fn spawn_list_thread<W: FnOnce() + Send + 'static>(work: W) -> Result<(), W> {
    use std::sync::atomic::Ordering;
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
        // Counted out however `work` ends, a panic included.
        struct Alive;
        impl Drop for Alive {
            fn drop(&mut self) {
                LIST_THREADS_ALIVE.fetch_sub(1, Ordering::SeqCst);
            }
        }
        let _alive = Alive;
        if let Some(work) = mine.lock().take() {
            work();
        }
    });
    match spawned {
        Ok(_) => Ok(()),
        Err(e) => {
            LIST_THREADS_ALIVE.fetch_sub(1, Ordering::SeqCst);
            tracing::warn!("cannot start a list thread: {e}");
            work.lock().take().map_or(Ok(()), Err)
        }
    }
}

/// Runs `work` on a list thread ([`spawn_list_thread`]), or on tokio's
/// blocking pool at normal priority when all places are taken or no
/// thread starts.
fn on_list_thread(work: impl FnOnce() + Send + 'static) {
    if !reserve_list_threads(1) {
        tokio::task::spawn_blocking(work);
        return;
    }
    if let Err(work) = spawn_list_thread(work) {
        tokio::task::spawn_blocking(work);
    }
}

/// How a streamed list goes to the client: plain, or gzip made by the
/// list's own threads ([`gzip`]) for clients that take it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Encoding {
    Plain,
    Gzip,
}

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Encoding {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(if gzip::accepted(&parts.headers) { Encoding::Gzip } else { Encoding::Plain })
    }
}

/// Where a list's items are written, one at a time.
pub trait Items {
    /// Appends one item. Fails once the client has gone: the producer
    /// then stops.
    fn item<T: Serialize + ?Sized>(&mut self, v: &T) -> std::io::Result<()>;
}

/// Writes the items of a JSON array into chunks sent to the connection as
/// they fill (see [`stream_array`]).
pub struct ArrayWriter {
    tx: Chunks,
    buf: Vec<u8>,
    first: bool,
    gzip: Option<gzip::Member>,
}

impl Items for ArrayWriter {
    fn item<T: Serialize + ?Sized>(&mut self, v: &T) -> std::io::Result<()> {
        if !std::mem::take(&mut self.first) {
            self.buf.push(b',');
        }
        serde_json::to_writer(&mut self.buf, v)?;
        if self.buf.len() >= CHUNK { self.send(false) } else { Ok(()) }
    }
}

impl ArrayWriter {
    /// Sends what is written so far (compressed with gzip), and with
    /// `last` the end of the reply's body.
    fn send(&mut self, last: bool) -> std::io::Result<()> {
        let raw = std::mem::replace(&mut self.buf, if last { Vec::new() } else { Vec::with_capacity(CHUNK) });
        let chunk = match &mut self.gzip {
            Some(member) => member.next(&raw, last)?,
            None => raw,
        };
        send_chunk(&self.tx, chunk.into())
    }
}

/// The channel a streamed reply's chunks go through to the connection.
type Chunks = tokio::sync::mpsc::Sender<std::io::Result<axum::body::Bytes>>;

/// Sends one chunk of a streamed reply (or one part's segment), waiting
/// while the connection is behind; a closed channel (the client went
/// away) is a `BrokenPipe`.
fn send_chunk<T>(tx: &tokio::sync::mpsc::Sender<std::io::Result<T>>, chunk: T) -> std::io::Result<()> {
    tx.blocking_send(Ok(chunk)).map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the client went away"))
}

/// Ends a producer of a streamed reply: a failure other than the client
/// going away is logged and sent on, so that the reply is aborted.
fn end_part<T>(tx: &tokio::sync::mpsc::Sender<std::io::Result<T>>, done: std::io::Result<()>) {
    if let Err(e) = done
        && e.kind() != std::io::ErrorKind::BrokenPipe
    {
        tracing::error!("a streamed reply failed: {e}");
        let _ = tx.blocking_send(Err(e));
    }
}

/// A 200 JSON reply whose body is `chunks`, encoded as `encoding` says.
/// Fused: a body may be polled again after its end, which an unfold
/// stream must never be.
fn json_stream(
    encoding: Encoding,
    chunks: impl futures_util::Stream<Item = std::io::Result<axum::body::Bytes>> + Send + 'static,
) -> Response {
    let mut r = Response::new(axum::body::Body::from_stream(futures_util::StreamExt::fuse(chunks)));
    let headers = r.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    if encoding == Encoding::Gzip {
        // The HTTP layer leaves a reply that has an encoding as it is.
        headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        headers.insert(header::VARY, HeaderValue::from_static("accept-encoding"));
    }
    r
}

/// A 200 JSON array that `produce` writes item by item on a blocking
/// thread, sent in chunks of [`CHUNK`] bytes as it is written: a list of
/// every resource is never held whole in memory, neither as objects nor
/// as text, and the producer works from its own snapshot of the cluster.
/// A failure half-way (it cannot happen with Cairn's wire types) aborts
/// the connection instead of ending a truncated array cleanly. With
/// [`Encoding::Gzip`] the same thread compresses the chunks.
pub fn stream_array(encoding: Encoding, produce: impl FnOnce(&mut ArrayWriter) -> std::io::Result<()> + Send + 'static) -> Response {
    let (tx, rx) = tokio::sync::mpsc::channel(2);
    on_list_thread(move || {
        let gzip = (encoding == Encoding::Gzip).then(gzip::Member::default);
        let mut w = ArrayWriter { tx, buf: Vec::with_capacity(CHUNK), first: true, gzip };
        w.buf.push(b'[');
        // An empty chunk after the last says the list is complete: a
        // thread that stops without it (a panic) aborts the reply instead
        // of ending it cleanly, short (or, with gzip, without its trailer).
        let done = produce(&mut w)
            .and_then(|()| {
                w.buf.push(b']');
                w.send(true)
            })
            .and_then(|()| send_chunk(&w.tx, axum::body::Bytes::new()));
        end_part(&w.tx, done);
    });
    json_stream(
        encoding,
        futures_util::stream::unfold(Some(rx), |rx| async move {
            let mut rx = rx?;
            match rx.recv().await {
                Some(Ok(chunk)) if chunk.is_empty() => None,
                Some(Ok(chunk)) => Some((Ok(chunk), Some(rx))),
                Some(Err(e)) => Some((Err(e), None)),
                None => Some((Err(std::io::Error::other("a list thread stopped before the end of the list")), None)),
            }
        }),
    )
}

/// Items in one segment of a list that several threads write (see
/// [`stream_array_split`]). A segment is held whole until its turn comes,
/// so it is small: with the satellites' DRBD state a resource is about
/// 1.7 KiB of JSON, a segment about 220 KiB.
const SEGMENT: usize = 128;

/// The threads that write one large list: a full list is bound by memory
/// latency (every resource is a few scattered heap objects), so each core
/// writing a share of it shortens it (on two cores shared with the
/// client: a 100k list by about a fifth, a 30k list with DRBD state by
/// about two fifths).
fn list_workers() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get()).clamp(1, 4)
}

/// One thread's share of a list that several threads write: every
/// `workers`-th segment of [`SEGMENT`] items, starting with segment `me`.
/// The producer offers every item in the list's order ([`PartWriter::mine`])
/// and writes those that are its own.
/// Every item [`PartWriter::mine`] gives must be written, once.
pub struct PartWriter {
    tx: tokio::sync::mpsc::Sender<std::io::Result<Part>>,
    buf: Vec<u8>,
    /// With gzip: every segment is compressed on its own (it is joined
    /// after another part's).
    gzip: Option<gzip::Deflater>,
    me: usize,
    workers: usize,
    /// Items offered so far.
    offered: usize,
    /// Items written so far (checked against those given, in debug builds).
    written: usize,
}

impl PartWriter {
    /// Offers the next item of the list: whether this writer writes it (a
    /// producer that gets `false` goes on to the next item).
    pub fn mine(&mut self) -> bool {
        let i = self.offered;
        self.offered += 1;
        let mine = (i / SEGMENT) % self.workers == self.me;
        debug_assert!(!mine || self.written == self.mine_before(i), "item {i} given before the last one given was written");
        mine
    }

    /// How many of the items before number `i` are this writer's.
    fn mine_before(&self, i: usize) -> usize {
        let (full, rest) = (i / SEGMENT, i % SEGMENT);
        let own_full = full / self.workers + usize::from(full % self.workers > self.me);
        own_full * SEGMENT + if full % self.workers == self.me { rest } else { 0 }
    }

    /// Sends the segment written so far.
    fn send(&mut self) -> std::io::Result<()> {
        let raw = std::mem::take(&mut self.buf);
        let segment = match &mut self.gzip {
            Some(d) => {
                let mut out = Vec::new();
                d.piece(&raw, true, &mut out)?;
                // The room the compressor had is not kept while it waits.
                out.shrink_to_fit();
                Part::Segment(out.into(), Some(gzip::Sum::of(&raw)))
            }
            None => Part::Segment(raw.into(), None),
        };
        send_chunk(&self.tx, segment)
    }
}

/// What a part of a split list sends to the reply.
pub enum Part {
    /// A segment, as it goes to the client; with gzip, the sum of its
    /// uncompressed bytes.
    Segment(axum::body::Bytes, Option<gzip::Sum>),
    /// The part is complete (a part whose channel closes without this
    /// failed).
    Done,
}

impl Items for PartWriter {
    /// Writes the item [`PartWriter::mine`] last offered (and said was
    /// this writer's).
    fn item<T: Serialize + ?Sized>(&mut self, v: &T) -> std::io::Result<()> {
        let i = self.offered.saturating_sub(1);
        debug_assert!(
            self.written == self.mine_before(i) && (i / SEGMENT) % self.workers == self.me,
            "item {i} written without being given"
        );
        self.written += 1;
        if i > 0 {
            self.buf.push(b',');
        }
        serde_json::to_writer(&mut self.buf, v)?;
        if (i + 1).is_multiple_of(SEGMENT) { self.send() } else { Ok(()) }
    }
}

/// A 200 JSON array written as [`stream_array`] writes it, by
/// [`list_workers`] threads at once: each runs `produce`, which offers
/// every item in order and writes its own share ([`PartWriter`]); the
/// reply takes their segments in turn, so the order is the list's. Each
/// thread holds at most two segments ahead of the connection.
/// With [`Encoding::Gzip`] each thread compresses its own segments.
pub fn stream_array_split(
    encoding: Encoding,
    produce: impl Fn(&mut PartWriter) -> std::io::Result<()> + Send + Sync + 'static,
) -> Response {
    let workers = list_workers();
    split_among(workers, workers > 1 && reserve_list_threads(workers), encoding, produce)
}

/// [`stream_array_split`] with `workers` threads, in places `reserved`
/// for them ([`reserve_list_threads`]). The parts wait on each other (the
/// reply takes their segments in turn), so all of them get list threads
/// of their own, or the list is written by one thread as [`stream_array`]
/// would: a part queued in tokio's blocking pool behind parts that wait
/// for it might never start.
fn split_among(
    workers: usize,
    reserved: bool,
    encoding: Encoding,
    produce: impl Fn(&mut PartWriter) -> std::io::Result<()> + Send + Sync + 'static,
) -> Response {
    let gz = encoding == Encoding::Gzip;
    let own_threads = reserved && workers > 1;
    let workers = if own_threads { workers } else { 1 };
    let produce = std::sync::Arc::new(produce);
    let mut parts = Vec::with_capacity(workers);
    for me in 0..workers {
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        parts.push(rx);
        let produce = produce.clone();
        let part = move || {
            let gzip = gz.then(gzip::Deflater::default);
            let mut w = PartWriter { tx, buf: Vec::new(), gzip, me, workers, offered: 0, written: 0 };
            // `Done` says this part is complete: a part whose channel
            // closes without it failed (a panic), and the reply is aborted
            // instead of ending early as a well-formed array.
            let done = produce(&mut w)
                .and_then(|()| if w.buf.is_empty() { Ok(()) } else { w.send() })
                .and_then(|()| send_chunk(&w.tx, Part::Done));
            end_part(&w.tx, done);
        };
        if !own_threads {
            on_list_thread(part);
        } else if spawn_list_thread(part).is_err() {
            // Its sender went with it: the reply ends with an error when
            // this part's turn comes.
            tracing::error!("a list lost one of its threads; the reply will be cut short with an error");
        }
    }
    // Segment `n` comes from part `n % workers`; the first part that is
    // complete ends the list (every later segment would be after it). With
    // gzip the brackets are stored blocks of the member, and the sums of
    // the segments make its trailer.
    let (open, sum) =
        if gz { ([gzip::HEADER.as_slice(), &gzip::stored(b"[")].concat(), Some(gzip::Sum::of(b"["))) } else { (b"[".to_vec(), None) };
    let open = futures_util::stream::once(async { Ok(axum::body::Bytes::from(open)) });
    let segments = futures_util::stream::unfold(Some((parts, 0usize, sum)), |state| async move {
        let (mut parts, n, mut sum) = state?;
        let k = n % parts.len();
        match parts[k].recv().await {
            Some(Ok(Part::Done)) => {
                let close = match &mut sum {
                    Some(sum) => {
                        sum.then(&gzip::Sum::of(b"]"));
                        [gzip::stored(b"]"), gzip::trailer(sum)].concat()
                    }
                    None => b"]".to_vec(),
                };
                Some((Ok(close.into()), None))
            }
            Some(Ok(Part::Segment(bytes, part))) => {
                if let (Some(sum), Some(part)) = (&mut sum, &part) {
                    sum.then(part);
                }
                Some((Ok(bytes), Some((parts, n + 1, sum))))
            }
            Some(Err(e)) => Some((Err(e), None)),
            None => Some((Err(std::io::Error::other("a list thread stopped before the end of its part")), None)),
        }
    });
    json_stream(encoding, futures_util::StreamExt::chain(open, segments))
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

    /// A reply's body as the client reads it: inflated when it says gzip
    /// (one gzip member, nothing after it).
    async fn body_of(r: Response) -> Vec<u8> {
        let gzip = r.headers().get(header::CONTENT_ENCODING).map(|v| v.as_bytes().to_vec());
        let body = axum::body::to_bytes(r.into_body(), usize::MAX).await.expect("the whole body").to_vec();
        match gzip.as_deref() {
            None => body,
            Some(b"gzip") => {
                let mut d = flate2::read::GzDecoder::new(body.as_slice());
                let mut out = Vec::new();
                std::io::Read::read_to_end(&mut d, &mut out).expect("a valid gzip member");
                assert!(d.into_inner().is_empty(), "bytes after the gzip member");
                out
            }
            Some(other) => panic!("encoding {other:?}"),
        }
    }

    /// Items 0..n written by `workers` threads, as the client reads them.
    async fn split_list(workers: usize, n: usize, encoding: Encoding) -> Vec<u8> {
        let reserved = workers > 1 && reserve_list_threads(workers);
        let r = split_among(workers, reserved, encoding, move |w| {
            for i in 0..n {
                if w.mine() {
                    w.item(&i)?;
                }
            }
            Ok(())
        });
        assert_eq!(r.headers().get(header::CONTENT_ENCODING).is_some(), encoding == Encoding::Gzip);
        body_of(r).await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_list_that_several_threads_write_keeps_its_order() {
        for encoding in [Encoding::Plain, Encoding::Gzip] {
            for workers in [1, 2, 3] {
                for n in [0, 1, SEGMENT - 1, SEGMENT, SEGMENT + 1, 7 * SEGMENT + 5] {
                    let expected: Vec<usize> = (0..n).collect();
                    let body = split_list(workers, n, encoding).await;
                    assert_eq!(body, serde_json::to_vec(&expected).expect("json"), "{encoding:?}, {workers} threads, {n} items");
                }
            }
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_list_that_one_thread_writes_is_one_gzip_member_across_its_chunks() {
        // Several chunks of CHUNK bytes.
        let n = 4 * CHUNK / 7;
        for encoding in [Encoding::Plain, Encoding::Gzip] {
            let r = stream_array(encoding, move |w| {
                for i in 0..n {
                    w.item(&i)?;
                }
                Ok(())
            });
            let body = body_of(r).await;
            assert_eq!(body, serde_json::to_vec(&(0..n).collect::<Vec<_>>()).expect("json"), "{encoding:?}");
        }
        let empty = stream_array(Encoding::Gzip, |_| Ok(()));
        assert_eq!(body_of(empty).await, b"[]");
    }

    /// Without places for all its threads a list is written by one.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_list_without_threads_for_every_part_is_written_by_one() {
        let parts = std::sync::Arc::new(std::sync::Mutex::new(std::collections::BTreeSet::new()));
        let seen = parts.clone();
        let r = split_among(3, false, Encoding::Plain, move |w| {
            seen.lock().expect("parts").insert(w.me);
            for i in 0..3 * SEGMENT {
                if w.mine() {
                    w.item(&i)?;
                }
            }
            Ok(())
        });
        let body = axum::body::to_bytes(r.into_body(), usize::MAX).await.expect("the whole body");
        assert_eq!(body.to_vec(), serde_json::to_vec(&(0..3 * SEGMENT).collect::<Vec<_>>()).expect("json"));
        assert_eq!(*parts.lock().expect("parts"), std::collections::BTreeSet::from([0]));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failure_half_way_aborts_a_split_list() {
        for encoding in [Encoding::Plain, Encoding::Gzip] {
            let r = split_among(2, reserve_list_threads(2), encoding, |w| {
                for i in 0..3 * SEGMENT {
                    if w.mine() {
                        if i == 2 * SEGMENT + 1 {
                            return Err(std::io::Error::other("broken"));
                        }
                        w.item(&i)?;
                    }
                }
                Ok(())
            });
            assert!(axum::body::to_bytes(r.into_body(), usize::MAX).await.is_err(), "{encoding:?}: a truncated array must not end cleanly");
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_thread_that_panics_aborts_a_split_list() {
        for encoding in [Encoding::Plain, Encoding::Gzip] {
            let r = split_among(2, reserve_list_threads(2), encoding, |w| {
                for i in 0..3 * SEGMENT {
                    if w.mine() {
                        assert!(i != SEGMENT + 1, "a bug in a producer");
                        w.item(&i)?;
                    }
                }
                Ok(())
            });
            assert!(axum::body::to_bytes(r.into_body(), usize::MAX).await.is_err(), "{encoding:?}: a truncated array must not end cleanly");
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_thread_that_panics_aborts_a_list_it_writes_alone() {
        // Past the first chunk, and before it.
        for (encoding, at) in [(Encoding::Plain, CHUNK), (Encoding::Gzip, CHUNK), (Encoding::Plain, 3), (Encoding::Gzip, 3)] {
            let r = stream_array(encoding, move |w| {
                for i in 0..2 * CHUNK {
                    assert!(i != at, "a bug in a producer");
                    w.item(&i)?;
                }
                Ok(())
            });
            assert!(axum::body::to_bytes(r.into_body(), usize::MAX).await.is_err(), "{encoding:?}, panic at {at}: must not end cleanly");
        }
    }
}
