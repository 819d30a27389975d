//! How the controller reaches a satellite: one HTTP request per call,
//! JSON bodies, the protocol version in [`VERSION_HEADER`], and a session
//! per satellite opened by challenge and response, every request and
//! answer MACed under its key (`cairn_proto::auth`: the cluster secret
//! never travels). A satellite that forgot the session (it restarted)
//! answers 401; the call then opens a new session and is sent once more.
//!
//! [`HttpTransport`] is hyper's pooled client: the connection to a
//! satellite stays open between calls (the heartbeat keeps it busy, TCP
//! keepalive finds a vanished peer), plain
//! HTTP or mutual TLS with rustls (our client certificate, the satellites'
//! CA pinned, the certificate checked against the satellite's IP address).
//! The links only see the [`Transport`] trait, so tests answer with a fake.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use cairn_proto::auth::{self, ClientSession, MAC_HEADER, SessionKey};
use cairn_proto::{PROTO_VERSION, VERSION_HEADER};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper::{Method, Request, Uri, header};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls_pki_types::ServerName;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// A future a [`Transport`] returns.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The largest answer read from a satellite.
const MAX_REPLY: usize = 256 << 20;
/// An idle pooled connection is closed after this long.
const POOL_IDLE: Duration = Duration::from_secs(60);
/// Each connection's read buffer, fixed: hyper's adaptive one grows to the
/// largest answer read (up to 400 KiB) and keeps that while the connection
/// waits in the pool, one per satellite.
const READ_BUF: usize = 8 * 1024;
/// TCP keepalive on every connection to a satellite: the first probe after
/// this long without traffic, then one every [`KEEPALIVE_INTERVAL`]; after
/// [`KEEPALIVE_PROBES`] unanswered ones the connection fails (a vanished
/// node is noticed about 11 s after it last answered).
const KEEPALIVE_IDLE: Duration = Duration::from_secs(5);
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(2);
const KEEPALIVE_PROBES: u32 = 3;

/// Where a satellite listens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Target {
    pub addr: SocketAddr,
    /// Mutual TLS (the node's interface is `SSL`).
    pub ssl: bool,
}

/// Why a call to a satellite failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CallError {
    #[error("the node's interface uses SSL but the controller has no satellite TLS certificate configured")]
    NoTls,
    #[error("cannot build the request: {0}")]
    Request(String),
    #[error("{addr}: {reason}")]
    Unreachable { addr: SocketAddr, reason: String },
    #[error("{addr} did not answer within {} s", timeout.as_secs())]
    Timeout { addr: SocketAddr, timeout: Duration },
    #[error("HTTP {status}: {body}")]
    Status { status: u16, body: String },
    #[error("bad reply: {0}")]
    BadReply(String),
}

/// One request to a satellite: `POST` with a body, `GET` without. `Ok` is
/// the body of a 200 answer; any other status is [`CallError::Status`].
pub trait Transport: Send + Sync + 'static {
    fn call(&self, target: Target, path: &'static str, body: Option<Vec<u8>>, timeout: Duration)
    -> BoxFuture<'_, Result<Bytes, CallError>>;

    /// Whether this transport can reach `SSL` interfaces.
    fn tls(&self) -> bool;
}

/// Decodes a satellite's JSON answer.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CallError> {
    serde_json::from_slice(bytes).map_err(|e| CallError::BadReply(e.to_string()))
}

/// `GET` and decode.
pub async fn get<T: DeserializeOwned>(t: &dyn Transport, target: Target, path: &'static str, timeout: Duration) -> Result<T, CallError> {
    decode(&t.call(target, path, None, timeout).await?)
}

/// `POST` a JSON body and decode the answer.
pub async fn post<B: Serialize, T: DeserializeOwned>(
    t: &dyn Transport,
    target: Target,
    path: &'static str,
    body: &B,
    timeout: Duration,
) -> Result<T, CallError> {
    let bytes = serde_json::to_vec(body).map_err(|e| CallError::Request(e.to_string()))?;
    decode(&t.call(target, path, Some(bytes), timeout).await?)
}

/// The HTTP client of the links (see the module comment).
pub struct HttpTransport {
    secret: String,
    /// The open session of each satellite.
    sessions: parking_lot::Mutex<std::collections::HashMap<Target, Arc<ClientSession>>>,
    tls: bool,
    client: Client<Connector, Full<Bytes>>,
    /// The leader's lease, on PostgreSQL: checked before every request,
    /// its epoch sent with it ([`cairn_proto::EPOCH_HEADER`]).
    fence: Option<Arc<crate::leader::Fence>>,
}

impl HttpTransport {
    /// `tls`: the client side of mutual TLS, for `SSL` interfaces.
    pub fn new(secret: String, tls: Option<Arc<rustls::ClientConfig>>) -> HttpTransport {
        let has_tls = tls.is_some();
        let connector = Connector { tls: tls.map(TlsConnector::from) };
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(POOL_IDLE)
            .http1_read_buf_exact_size(READ_BUF)
            .build(connector);
        HttpTransport { secret, sessions: Default::default(), tls: has_tls, client, fence: None }
    }

    /// Sends nothing once `fence` says the lease is gone, and its epoch
    /// with every request before.
    pub fn with_fence(mut self, fence: Arc<crate::leader::Fence>) -> HttpTransport {
        self.fence = Some(fence);
        self
    }
}

/// An error with its causes, `: `-separated (hyper's own message names
/// only the stage that failed).
pub(crate) fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        out.push_str(": ");
        out.push_str(&s.to_string());
        cur = s.source();
    }
    out
}

/// An answer: status, MAC header, body.
struct Answer {
    status: u16,
    mac: Option<String>,
    body: Bytes,
}

impl Answer {
    /// The body of a 200 answer, else the status error.
    fn ok(self) -> Result<Bytes, CallError> {
        if self.status == 200 {
            Ok(self.body)
        } else {
            Err(CallError::Status { status: self.status, body: String::from_utf8_lossy(&self.body).into_owned() })
        }
    }

    /// Checks the answer's MAC (a 401 carries none: the satellite did not
    /// accept the session).
    fn verified(self, key: &SessionKey, session: &str, seq: u64) -> Result<Answer, CallError> {
        if self.status == 401 {
            return Ok(self);
        }
        let mac = self.mac.as_deref().unwrap_or("");
        if key.verify_response(session, seq, self.status, &self.body, mac) {
            Ok(self)
        } else {
            Err(CallError::BadReply(format!("the answer (HTTP {}) does not carry a valid MAC of the session", self.status)))
        }
    }
}

impl HttpTransport {
    /// The protocol version and epoch headers every request carries.
    fn context(&self) -> Result<(String, Option<String>), CallError> {
        let epoch = match &self.fence {
            Some(fence) => {
                fence.check().map_err(|e| CallError::Request(e.to_string()))?;
                Some(fence.epoch().to_string())
            }
            None => None,
        };
        Ok((PROTO_VERSION.to_string(), epoch))
    }

    /// One HTTP exchange.
    async fn exchange(
        &self,
        target: Target,
        path: &str,
        headers: Vec<(&'static str, String)>,
        body: Option<Bytes>,
        timeout: Duration,
    ) -> Result<Answer, CallError> {
        let addr = target.addr;
        let scheme = if target.ssl { "https" } else { "http" };
        let mut builder = Request::builder().uri(format!("{scheme}://{addr}{path}"));
        for (name, value) in headers {
            builder = builder.header(name, value);
        }
        let request = match body {
            Some(b) => builder.method(Method::POST).header(header::CONTENT_TYPE, "application/json").body(Full::new(b)),
            None => builder.method(Method::GET).body(Full::new(Bytes::new())),
        }
        .map_err(|e| CallError::Request(e.to_string()))?;
        let unreachable = |reason: String| CallError::Unreachable { addr, reason };
        let exchange = async {
            let response = self.client.request(request).await.map_err(|e| unreachable(chain(&e)))?;
            let status = response.status().as_u16();
            let mac = response.headers().get(MAC_HEADER).and_then(|v| v.to_str().ok()).map(String::from);
            let body = Limited::new(response.into_body(), MAX_REPLY).collect().await.map_err(|e| unreachable(chain(&*e)))?;
            Ok::<_, CallError>(Answer { status, mac, body: body.to_bytes() })
        };
        tokio::time::timeout(timeout, exchange).await.map_err(|_| CallError::Timeout { addr, timeout })?
    }

    /// Opens a session: the satellite's challenge, our proof, its MACed
    /// answer.
    async fn open(&self, target: Target, timeout: Duration) -> Result<Arc<ClientSession>, CallError> {
        let challenge: auth::Challenge = decode(&self.exchange(target, auth::PATH_CHALLENGE, vec![], None, timeout).await?.ok()?)?;
        let ours = auth::nonce().map_err(|e| CallError::Request(e.to_string()))?;
        let (version, epoch) = self.context()?;
        let cx = auth::Context { version: Some(&version), epoch: epoch.as_deref() };
        let open = auth::SessionOpen {
            proof: auth::proof(self.secret.as_bytes(), &challenge.nonce, &ours, cx),
            satellite_nonce: challenge.nonce.clone(),
            controller_nonce: ours.clone(),
        };
        let body = serde_json::to_vec(&open).map_err(|e| CallError::Request(e.to_string()))?;
        let answer = self.exchange(target, auth::PATH_SESSION, headers(version, epoch), Some(Bytes::from(body)), timeout).await?;
        let key = SessionKey::derive(self.secret.as_bytes(), &challenge.nonce, &ours);
        // The session id is known only from the answer; its MAC is checked
        // with the id it names (a refusal names none).
        let id = match answer.status {
            200 => decode::<auth::SessionOpened>(&answer.body)?.session,
            _ => String::new(),
        };
        let answer = answer.verified(&key, &id, 0)?;
        let opened: auth::SessionOpened = decode(&answer.ok()?)?;
        let session = Arc::new(ClientSession::new(opened.session, key));
        self.sessions.lock().insert(target, session.clone());
        Ok(session)
    }

    /// One request of a session.
    async fn send(
        &self,
        target: Target,
        session: &ClientSession,
        path: &'static str,
        body: Option<Bytes>,
        timeout: Duration,
    ) -> Result<Answer, CallError> {
        let (version, epoch) = self.context()?;
        let seq = session.next_seq();
        let head = auth::RequestHead {
            session: &session.id,
            seq,
            method: if body.is_some() { "POST" } else { "GET" },
            path,
            cx: auth::Context { version: Some(&version), epoch: epoch.as_deref() },
        };
        let mac = session.key.sign_request(&head, body.as_deref().unwrap_or(&[]));
        let mut hs = headers(version, epoch);
        hs.extend([(auth::SESSION_HEADER, session.id.clone()), (auth::SEQ_HEADER, seq.to_string()), (MAC_HEADER, mac)]);
        self.exchange(target, path, hs, body, timeout).await?.verified(&session.key, &session.id, seq)
    }
}

/// The protocol version and epoch headers.
fn headers(version: String, epoch: Option<String>) -> Vec<(&'static str, String)> {
    let mut out = vec![(VERSION_HEADER, version)];
    if let Some(e) = epoch {
        out.push((cairn_proto::EPOCH_HEADER, e));
    }
    out
}

impl Transport for HttpTransport {
    fn call(
        &self,
        target: Target,
        path: &'static str,
        body: Option<Vec<u8>>,
        timeout: Duration,
    ) -> BoxFuture<'_, Result<Bytes, CallError>> {
        Box::pin(async move {
            if target.ssl && !self.tls {
                return Err(CallError::NoTls);
            }
            let body = body.map(Bytes::from);
            let cached = self.sessions.lock().get(&target).cloned();
            let (session, fresh) = match cached {
                Some(s) => (s, false),
                None => (self.open(target, timeout).await?, true),
            };
            let answer = self.send(target, &session, path, body.clone(), timeout).await?;
            if answer.status != 401 || fresh {
                return answer.ok();
            }
            // The satellite no longer knows the session: a new one, once.
            tracing::debug!(addr = %target.addr, "the satellite refused the session; opening a new one");
            {
                let mut sessions = self.sessions.lock();
                if sessions.get(&target).is_some_and(|s| Arc::ptr_eq(s, &session)) {
                    sessions.remove(&target);
                }
            }
            let session = self.open(target, timeout).await?;
            self.send(target, &session, path, body, timeout).await?.ok()
        })
    }

    fn tls(&self) -> bool {
        self.tls
    }
}

/// Opens connections for the pool: TCP, then TLS for `https` (the server
/// name is the satellite's IP address).
#[derive(Clone)]
struct Connector {
    tls: Option<TlsConnector>,
}

impl tower::Service<Uri> for Connector {
    type Response = TokioIo<Stream>;
    type Error = io::Error;
    type Future = BoxFuture<'static, io::Result<TokioIo<Stream>>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let tls = self.tls.clone();
        Box::pin(async move {
            let invalid = |why: &str| io::Error::new(io::ErrorKind::InvalidInput, format!("{why}: {uri}"));
            // The links always address satellites as IP:port.
            let addr: SocketAddr =
                uri.authority().map(|a| a.as_str()).ok_or_else(|| invalid("no address"))?.parse().map_err(|_| invalid("not IP:port"))?;
            let tcp = TcpStream::connect(addr).await?;
            tcp.set_nodelay(true)?;
            // An observation request may be held for a while (long poll):
            // a node that vanishes meanwhile (power, network) sends no
            // reset, and the kernel's probes find out within seconds.
            let probes =
                socket2::TcpKeepalive::new().with_time(KEEPALIVE_IDLE).with_interval(KEEPALIVE_INTERVAL).with_retries(KEEPALIVE_PROBES);
            socket2::SockRef::from(&tcp).set_tcp_keepalive(&probes)?;
            let stream = match uri.scheme_str() {
                Some("https") => {
                    let tls = tls.ok_or_else(|| invalid("no TLS configuration"))?;
                    Stream::Tls(Box::new(tls.connect(ServerName::from(addr.ip()), tcp).await?))
                }
                _ => Stream::Plain(tcp),
            };
            Ok(TokioIo::new(stream))
        })
    }
}

/// A connection to a satellite.
enum Stream {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl Connection for Stream {
    fn connected(&self) -> Connected {
        Connected::new()
    }
}

impl AsyncRead for Stream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// Loads the controller's client certificate for satellites using SSL:
/// our chain and key, and the CA the satellites' certificates must be
/// signed by (the only root trusted).
pub fn client_tls(config: &crate::ControllerConfig) -> Result<Option<Arc<rustls::ClientConfig>>, crate::ControllerError> {
    use cairn_proto::tls;
    let (Some(cert), Some(key), Some(ca)) = (&config.satellite_tls_cert, &config.satellite_tls_key, &config.satellite_tls_ca) else {
        return Ok(None);
    };
    let err = |p: &std::path::Path, reason: String| crate::ControllerError::Tls { path: p.display().to_string(), reason };
    let config = rustls::ClientConfig::builder_with_provider(tls::provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| err(cert, e.to_string()))?
        .with_root_certificates(tls::load_roots(ca)?)
        .with_client_auth_cert(tls::load_certs(cert)?, tls::load_key(key)?)
        .map_err(|e| err(key, e.to_string()))?;
    Ok(Some(Arc::new(config)))
}
