//! The HTTP layer under the handlers: every answer an ApiCallRc JSON body,
//! keep-alive connections that stay usable after every answer.
//!
//! * [`guard`] reads each request body (up to [`MAX_BODY`]) before routing,
//!   so an answer that never looks at the body (404, 405, 501, a refusal
//!   from a handler) leaves nothing unread on the connection: hyper would
//!   otherwise close a connection whose body it cannot drain at once, and
//!   a client's next request on it would fail with a broken pipe. A body
//!   over the limit is answered 413: it is read and dropped up to
//!   [`DRAIN_LIMIT`] (the connection stays open); a longer one (or one
//!   that declares a longer length) is answered at once with
//!   `Connection: close`. It also gives every 405 an `Allow` header
//!   naming the methods of the path (those Cairn serves and those LINSTOR's
//!   API defines).
//! * [`JsonErrorListener`] wraps the REST listener's connections: the
//!   answers hyper writes by itself for requests it cannot parse (414 URI
//!   too long, 431 headers too large, 400) have no body; they are replaced
//!   on the wire by the same answer with an ApiCallRc body.

use std::collections::BTreeSet;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use cairn_api::rc::{self, ApiCallRc};
use http_body_util::BodyExt;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

use super::reply::Reply;
use crate::spec_routes::SPEC_ROUTES;

/// Who a request was made by, as the access log names them: the Basic
/// user name, or `token:<id>` for a bearer token. Put on the response by
/// [`crate::auth::authenticate`]; a request that needed no sign-in has none.
#[derive(Clone, Debug)]
pub struct RequestUser(pub String);

/// The access log: one INFO line per request, once it is answered, with
/// the method, the path (never the query string: tokens and other
/// secrets may travel there), the status, the time to the answer's head
/// and the user ([`RequestUser`], `-` without one). Nothing from the
/// headers or the body is logged.
pub async fn access_log(req: Request, next: Next) -> Response {
    let start = std::time::Instant::now();
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let resp = next.run(req).await;
    let duration_ms = start.elapsed().as_secs_f64() * 1000.0;
    let user = resp.extensions().get::<RequestUser>().map_or("-", |u| u.0.as_str());
    tracing::info!(
        target: "cairn_controller::access",
        method = %method,
        path = %path,
        status = resp.status().as_u16(),
        duration_ms,
        user = %user,
        "REST request"
    );
    resp
}

/// Largest request body the REST API reads (axum's default limit, which
/// applied before this layer existed).
pub const MAX_BODY: usize = 2 * 1024 * 1024;

/// A refusal that ends the connection: the request was not read to its end.
fn closing(status: StatusCode, entry: ApiCallRc) -> Response {
    let mut r = Reply::new(status.as_u16(), vec![entry]).into_response();
    r.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
    r
}

fn too_large(len: Option<u64>) -> Response {
    let cause = match len {
        Some(n) => format!("The body has {n} bytes; at most {MAX_BODY} are accepted."),
        None => format!("The body is longer than {MAX_BODY} bytes."),
    };
    closing(StatusCode::PAYLOAD_TOO_LARGE, ApiCallRc::error(0, rc::FAIL_INVLD_REQUEST, "The request body is too large.").with_cause(cause))
}

/// How much of a body over [`MAX_BODY`] is read and thrown away so that
/// the 413 can keep the connection open; beyond it the connection closes.
pub const DRAIN_LIMIT: u64 = 32 * 1024 * 1024;

/// What reading a request body gave.
enum Read {
    Body(axum::body::Bytes),
    /// Longer than [`MAX_BODY`]; whether it was read to its end.
    TooLarge {
        drained: bool,
    },
    Failed(String),
}

/// Reads a body up to [`MAX_BODY`]; a longer one is read on and discarded
/// up to [`DRAIN_LIMIT`].
async fn read_body(body: Body) -> Read {
    let mut body = body;
    let mut buf: Vec<u8> = Vec::new();
    let mut seen: u64 = 0;
    loop {
        match body.frame().await {
            None => break,
            Some(Err(e)) => return Read::Failed(e.to_string()),
            Some(Ok(frame)) => {
                let Ok(data) = frame.into_data() else { continue };
                seen += data.len() as u64;
                if seen > DRAIN_LIMIT {
                    return Read::TooLarge { drained: false };
                }
                if seen <= MAX_BODY as u64 {
                    buf.extend_from_slice(&data);
                }
            }
        }
    }
    if seen > MAX_BODY as u64 { Read::TooLarge { drained: true } } else { Read::Body(buf.into()) }
}

/// The middleware in front of the router (see the module docs).
pub async fn guard(req: Request, next: Next) -> Response {
    let path = req.uri().path().to_string();
    let declared = req.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > DRAIN_LIMIT) {
        return too_large(declared);
    }
    let (parts, body) = req.into_parts();
    let bytes = match read_body(body).await {
        Read::Body(b) => b,
        Read::TooLarge { drained: false } => return too_large(declared),
        Read::TooLarge { drained: true } => {
            // All of it was read: the connection stays usable.
            let mut r = too_large(declared);
            r.headers_mut().remove(header::CONNECTION);
            return r;
        }
        Read::Failed(e) => {
            return closing(
                StatusCode::BAD_REQUEST,
                ApiCallRc::new(rc::API_CALL_PARSE_ERROR, "The request body could not be read.").with_cause(e),
            );
        }
    };
    let mut resp = next.run(Request::from_parts(parts, Body::from(bytes))).await;
    if resp.status() == StatusCode::METHOD_NOT_ALLOWED {
        resp.extensions_mut().insert(SpecAllow(spec_methods(&path)));
    }
    resp
}

/// In front of the routes of the plain listener while HTTPS is on (the
/// state is the HTTPS port): every request under `/v1` is answered with
/// LINSTOR's redirect, a 302 to the same path and query on the HTTPS port
/// of the host the client asked for (python-linstor's `has_linstor_https`
/// probe takes the port from `Location` and switches to HTTPS). Other
/// paths (`/health`) are served as they are.
pub async fn to_https(axum::extract::State(port): axum::extract::State<u16>, req: Request, next: Next) -> Response {
    let path = req.uri().path();
    if path != "/v1" && !path.starts_with("/v1/") {
        return next.run(req).await;
    }
    let host = req.headers().get(header::HOST).and_then(|h| h.to_str().ok()).and_then(host_of).unwrap_or("localhost");
    let target = format!("https://{host}:{port}{}", req.uri().path_and_query().map(|p| p.as_str()).unwrap_or(path));
    let entry = ApiCallRc::info(0, 0, format!("The REST API is served over HTTPS: {target}"))
        .with_correction("Connect with linstor+ssl:// or https:// and the HTTPS port.");
    let mut r = Reply::new(StatusCode::FOUND.as_u16(), vec![entry]).into_response();
    if let Ok(v) = HeaderValue::from_str(&target) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r
}

/// The host name of a `Host` header (`name`, `name:port`, `[v6]:port`),
/// if it is made of characters a host name or address can have.
fn host_of(header: &str) -> Option<&str> {
    let host = match header.strip_prefix('[') {
        Some(rest) => &header[..rest.find(']')? + 2],
        None => header.split(':').next()?,
    };
    let ok = !host.is_empty() && host.chars().all(|c| c.is_ascii_alphanumeric() || ".-_[]:".contains(c));
    ok.then_some(host)
}

/// The methods LINSTOR's API has for the path of a 405 answer, for
/// [`complete_allow`].
#[derive(Clone)]
struct SpecAllow(BTreeSet<&'static str>);

/// Gives a 405 answer an `Allow` header with the methods the router serves
/// on its path (axum's header, set after [`guard`] ran) and those of
/// LINSTOR's API.
pub fn complete_allow(mut resp: Response) -> Response {
    if resp.status() != StatusCode::METHOD_NOT_ALLOWED {
        return resp;
    }
    let mut allow: BTreeSet<String> = resp
        .headers()
        .get(header::ALLOW)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(',').map(|m| m.trim().to_string()).filter(|m| !m.is_empty()).collect())
        .unwrap_or_default();
    if let Some(SpecAllow(spec)) = resp.extensions_mut().remove::<SpecAllow>() {
        allow.extend(spec.into_iter().map(str::to_string));
    }
    if let Ok(v) = HeaderValue::from_str(&allow.into_iter().collect::<Vec<_>>().join(", ")) {
        resp.headers_mut().insert(header::ALLOW, v);
    }
    resp
}

/// The methods LINSTOR's API defines for a concrete path.
pub fn spec_methods(path: &str) -> BTreeSet<&'static str> {
    SPEC_ROUTES.iter().filter(|(_, t)| super::template_matches(t, path)).map(|(m, _)| *m).collect()
}

/// A REST listener (plain TCP, or TLS: [`cairn_proto::tls::TlsListener`])
/// whose connections are wrapped in [`JsonErrorIo`].
pub struct JsonErrorListener<L>(pub L);

/// The plain REST listener: TCP with TCP_NODELAY (a streamed reply goes
/// out in several writes: without it, its last small one waits for the
/// client's delayed ACK, 40 ms). The TLS listener sets it itself.
pub fn plain(listener: TcpListener) -> JsonErrorListener<impl axum::serve::Listener<Io = TcpStream, Addr = SocketAddr>> {
    JsonErrorListener(axum::serve::ListenerExt::tap_io(listener, |io: &mut TcpStream| {
        if let Err(e) = io.set_nodelay(true) {
            tracing::debug!("cannot set TCP_NODELAY on a REST connection: {e}");
        }
    }))
}

impl<L> axum::serve::Listener for JsonErrorListener<L>
where
    L: axum::serve::Listener<Addr = SocketAddr>,
{
    type Io = JsonErrorIo<L::Io>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        let (io, addr) = self.0.accept().await;
        (JsonErrorIo { inner: io, pending: None }, addr)
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.0.local_addr()
    }
}

/// The client's address, as handlers and layers see it
/// (`ConnectInfo<PeerAddr>`): a token with an IP filter is checked
/// against it.
#[derive(Debug, Clone, Copy)]
pub struct PeerAddr(pub SocketAddr);

impl<L> axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, JsonErrorListener<L>>> for PeerAddr
where
    L: axum::serve::Listener<Addr = SocketAddr>,
{
    fn connect_info(stream: axum::serve::IncomingStream<'_, JsonErrorListener<L>>) -> Self {
        PeerAddr(*stream.remote_addr())
    }
}

/// A connection whose bodiless automatic error answers from hyper are
/// replaced by ones with an ApiCallRc body.
pub struct JsonErrorIo<S> {
    inner: S,
    /// A replacement being written: its bytes, how many went out, and the
    /// length of the buffer it stands for.
    pending: Option<(Vec<u8>, usize, usize)>,
}

/// The answer to put on the wire instead of `head`, when `head` is one of
/// hyper's own bodiless error answers (it writes them with
/// `content-length: 0` and no content type; every answer of the REST
/// handlers has a JSON body and a content type).
pub fn replacement(head: &[u8]) -> Option<Vec<u8>> {
    let end = head.windows(4).position(|w| w == b"\r\n\r\n")?;
    if end + 4 != head.len() {
        return None;
    }
    let text = std::str::from_utf8(&head[..end]).ok()?.to_ascii_lowercase();
    let mut lines = text.split("\r\n");
    let status_line = lines.next()?;
    let code: u16 = status_line.strip_prefix("http/1.1 ").or_else(|| status_line.strip_prefix("http/1.0 "))?.get(..3)?.parse().ok()?;
    let headers: Vec<&str> = lines.collect();
    if !headers.iter().any(|h| h.replace(' ', "") == "content-length:0") || headers.iter().any(|h| h.starts_with("content-type:")) {
        return None;
    }
    let (reason, message) = match code {
        400 => ("Bad Request", "The request could not be parsed as HTTP/1.1."),
        414 => ("URI Too Long", "The request URI is too long."),
        431 => ("Request Header Fields Too Large", "The request headers are too large."),
        _ => return None,
    };
    let entry = if code == 400 {
        ApiCallRc::new(rc::API_CALL_PARSE_ERROR, message)
    } else {
        ApiCallRc::error(0, rc::FAIL_INVLD_REQUEST, message)
            .with_correction("Send a shorter request; filters with many names can be split.")
    };
    let body = serde_json::to_vec(&[entry]).ok()?;
    let mut out = format!(
        "HTTP/1.1 {code} {reason}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(&body);
    Some(out)
}

impl<S: AsyncRead + Unpin> AsyncRead for JsonErrorIo<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for JsonErrorIo<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        if self.pending.is_none()
            && buf.starts_with(b"HTTP/1.")
            && let Some(bytes) = replacement(buf)
        {
            self.pending = Some((bytes, 0, buf.len()));
        }
        let me = &mut *self;
        let Some((bytes, sent, stands_for)) = me.pending.as_mut() else {
            return Pin::new(&mut me.inner).poll_write(cx, buf);
        };
        while *sent < bytes.len() {
            let n = ready!(Pin::new(&mut me.inner).poll_write(cx, &bytes[*sent..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            *sent += n;
        }
        let n = *stands_for;
        me.pending = None;
        Poll::Ready(Ok(n))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    // Not vectored: hyper then writes each answer's head as one buffer of
    // its own, which is what `replacement` looks at.
    fn is_write_vectored(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hypers_bodiless_errors_get_a_json_body() {
        let head = b"HTTP/1.1 414 URI Too Long\r\ncontent-length: 0\r\ndate: Thu, 01 Jan 2026 00:00:00 GMT\r\n\r\n";
        let out = String::from_utf8(replacement(head).expect("replaced")).unwrap();
        assert!(out.starts_with("HTTP/1.1 414 URI Too Long\r\n"), "{out}");
        assert!(out.contains("content-type: application/json\r\n"));
        assert!(out.contains("connection: close\r\n"));
        let body = out.split("\r\n\r\n").nth(1).unwrap();
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(v[0]["message"], "The request URI is too long.");
        assert!(v[0]["ret_code"].as_i64().unwrap() < 0, "an error entry");
        assert!(replacement(b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\n\r\n").is_some());
        assert!(replacement(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n").is_some());
    }

    #[test]
    fn the_redirect_keeps_the_host_the_client_asked_for() {
        assert_eq!(host_of("ctrl.example:3370"), Some("ctrl.example"));
        assert_eq!(host_of("127.0.0.5"), Some("127.0.0.5"));
        assert_eq!(host_of("[::1]:3370"), Some("[::1]"));
        assert_eq!(host_of("[::1"), None);
        assert_eq!(host_of("evil/path:1"), None);
        assert_eq!(host_of(""), None);
    }

    #[test]
    fn answers_of_the_handlers_are_left_alone() {
        // A JSON answer of the same status, a head followed by its body in
        // the same buffer, and other statuses pass unchanged.
        assert!(replacement(b"HTTP/1.1 414 URI Too Long\r\ncontent-type: application/json\r\ncontent-length: 0\r\n\r\n").is_none());
        assert!(replacement(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\nextra").is_none());
        assert!(replacement(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n").is_none());
        assert!(replacement(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 12\r\n\r\n").is_none());
    }
}
