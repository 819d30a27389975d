//! The satellite's HTTP endpoint for the controller.

use std::future::Future;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use cairn_exec::{CommandRunner, HostRunner};
use cairn_proto::auth::{
    Authority, Context, MAC_HEADER, PATH_CHALLENGE, PATH_SESSION, Refusal, RequestHead, SEQ_HEADER, SESSION_HEADER, SessionKey,
    SessionOpen, SessionOpened,
};
use cairn_proto::{
    Apply, BackupAbort, BackupDiscard, BackupReceive, BackupReceived, BackupSend, Hello, LogLevels, ObjectError, Observation, ObserveSince,
    PATH_APPLY, PATH_BACKUP_ABORT, PATH_BACKUP_DISCARD, PATH_BACKUP_RECEIVE, PATH_BACKUP_SEND, PATH_CONFIG, PATH_EXT_FILE_STATUS,
    PATH_HELLO, PATH_OBSERVE, PATH_PHYSICAL, PATH_SHIP_LISTEN, PATH_SHIP_RESULT, PATH_SHIP_SEND, PROTO_VERSION, PhysicalCreate,
    PhysicalCreated, ProviderSupport, ShipListen, ShipSend, ShipToken, VERSION_HEADER,
};
use cairn_storage::physical::Physical;
use tokio::net::TcpListener;

use crate::apply::Applier;
use crate::{SatelliteConfig, SatelliteError, tools};

struct Shared {
    /// Authentication, protocol version (or `CAIRN_TEST_PROTO_VERSION`),
    /// leader epoch.
    gate: Gate,
    applier: Arc<Applier>,
    physical: Physical,
    /// One physical-storage create at a time (pvcreate/vgcreate/lvcreate
    /// on disks of this node). Applies do not wait for it: a new pool is
    /// used only after the controller configured it.
    physical_lock: tokio::sync::Mutex<()>,
    /// Backup uploads and downloads running, for aborts.
    transfers: Arc<crate::backup::Transfers>,
    /// Shipments from other clusters this node listens for or receives.
    ships: Arc<crate::ship::Ships>,
    /// Records of the restores and shipments running (see
    /// [`crate::inflight`]).
    inflight: Arc<crate::inflight::Inflight>,
    /// With `--tls-cert`: the shipment listeners speak TLS with it.
    ship_tls: Option<Arc<crate::ship::ShipTls>>,
    /// This node's error reports.
    reports: Arc<crate::reports::Reports>,
    /// Runs the commands of a SOS report.
    runner: Arc<dyn CommandRunner>,
    command_timeout: std::time::Duration,
    /// Set when the server stops (see [`Wake::stop`]).
    stop: tokio::sync::watch::Sender<bool>,
}

/// A satellite that is bound and ready to serve.
pub struct Satellite {
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    shared: Arc<Shared>,
    /// The `--metrics-bind` listener, if any.
    metrics: Option<(TcpListener, Arc<Metrics>)>,
}

/// What `GET /metrics` needs: a fresh `drbdsetup events2 --now
/// --statistics` per scrape (the counters change with every write; the
/// followed stream carries them only when DRBD's statistics events fire).
struct Metrics {
    runner: Arc<dyn CommandRunner>,
    timeout: std::time::Duration,
    /// The DRBD 9 module is loaded and the layer runs in kernel mode.
    kernel: bool,
    /// The last rendering and when it was made: scrapes within
    /// [`METRICS_FRESH`] of it get it again, and concurrent scrapes wait
    /// for the one `drbdsetup` running (the port is unauthenticated: a
    /// flood of scrapes must not start a flood of root processes).
    last: tokio::sync::Mutex<Option<(std::time::Instant, String)>>,
}

/// How long one `drbdsetup events2` answers scrapes.
const METRICS_FRESH: std::time::Duration = std::time::Duration::from_secs(1);

/// This machine's host name (`uname -n`), if it can be read.
pub fn hostname() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname").ok().map(|h| h.trim().to_string())
}

/// One line on what this node can serve: the providers and layers it has,
/// and those it lacks (their reasons go to the debug log and to the
/// node's `unsupported_providers` / `unsupported_layers`).
pub fn summary(
    providers: &[ProviderSupport],
    layers: &[String],
    unsupported_layers: &std::collections::BTreeMap<String, Vec<String>>,
    drbd_config_only: bool,
) -> String {
    let known = |p: &&ProviderSupport| !p.missing.iter().any(|m| m.contains("not implemented"));
    let have: Vec<&str> = providers.iter().filter(|p| p.supported).map(|p| p.kind.as_str()).collect();
    let lack: Vec<&str> = providers.iter().filter(|p| !p.supported).filter(known).map(|p| p.kind.as_str()).collect();
    let layers: Vec<String> =
        layers.iter().map(|l| if l == "DRBD" && drbd_config_only { "DRBD (config-only)".to_string() } else { l.clone() }).collect();
    let mut line = format!("storage {}; layers {}", list_or_none(&have), layers.join(", "));
    let lack_layers: Vec<&str> = unsupported_layers.keys().map(String::as_str).collect();
    if !lack.is_empty() || !lack_layers.is_empty() {
        let mut missing = lack;
        missing.extend(lack_layers);
        line.push_str(&format!(
            "; not available here: {} (reasons: RUST_LOG=debug, or the node's unsupported_providers and unsupported_layers)",
            missing.join(", ")
        ));
    }
    line
}

fn list_or_none(items: &[&str]) -> String {
    if items.is_empty() { "none".into() } else { items.join(", ") }
}

impl Satellite {
    /// Probes tools, binds the listener.
    pub async fn start(config: &SatelliteConfig) -> Result<Satellite, SatelliteError> {
        Satellite::start_with(config, Arc::new(HostRunner)).await
    }

    pub async fn start_with(config: &SatelliteConfig, runner: Arc<dyn CommandRunner>) -> Result<Satellite, SatelliteError> {
        if config.cluster_secret.is_empty() {
            return Err(SatelliteError::NoSecret);
        }
        cairn_storage::create_private_dir(&config.data_dir)
            .map_err(|source| SatelliteError::DataDir { path: config.data_dir.display().to_string(), source })?;
        let providers = tools::probe(runner.as_ref()).await;
        for p in providers.iter().filter(|p| !p.supported && !p.missing.iter().any(|m| m.contains("not implemented"))) {
            tracing::debug!(kind = %p.kind, missing = %p.missing.join("; "), "provider unavailable on this node");
        }
        let mut unsupported_layers = std::collections::BTreeMap::new();
        let drbd = match crate::drbd::probe(runner.as_ref(), config.drbd_config_only).await {
            Ok(mode) => {
                let dir = config.drbd_dir();
                let layer = crate::drbd::DrbdLayer::new(runner.clone(), dir.clone(), mode, config.command_timeout)
                    .map_err(|source| SatelliteError::DataDir { path: dir.display().to_string(), source })?;
                Ok(Arc::new(layer))
            }
            Err(reasons) => {
                tracing::debug!(missing = %reasons.join("; "), "DRBD layer unavailable on this node");
                unsupported_layers.insert("DRBD".to_string(), reasons.clone());
                Err(reasons)
            }
        };
        if let Ok(layer) = &drbd {
            layer.follow_events();
            layer.watch_stalls();
        }
        let mut layers = vec!["STORAGE".to_string()];
        if drbd.is_ok() {
            layers.insert(0, "DRBD".into());
        }
        match tools::luks_support(runner.as_ref()).await {
            Ok(()) => layers.insert(layers.len() - 1, "LUKS".into()),
            Err(missing) => {
                tracing::debug!(missing = %missing.join("; "), "LUKS layer unavailable on this node");
                unsupported_layers.insert("LUKS".to_string(), missing);
            }
        }
        let config_only = drbd.as_ref().is_ok_and(|l| l.mode == crate::drbd::DrbdMode::ConfigOnly);
        let kernel = drbd.as_ref().is_ok_and(|l| l.mode == crate::drbd::DrbdMode::Kernel);
        let metrics = match config.metrics_bind {
            Some(addr) => {
                let l = TcpListener::bind(addr).await.map_err(|source| SatelliteError::Bind { addr: addr.to_string(), source })?;
                Some((l, Arc::new(Metrics { runner: runner.clone(), timeout: config.command_timeout, kernel, last: Default::default() })))
            }
            None => None,
        };
        tracing::info!(node = %config.node_name, "{}", summary(&providers, &layers, &unsupported_layers, config_only));
        let instance = uuid::Uuid::new_v4().to_string();
        let proto = std::env::var("CAIRN_TEST_PROTO_VERSION").ok().and_then(|v| v.parse().ok()).unwrap_or(PROTO_VERSION);
        let hello = Hello {
            proto_version: proto,
            node_name: config.node_name.clone(),
            hostname: hostname().unwrap_or_default(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            instance: instance.clone(),
            providers: providers.clone(),
            layers,
            unsupported_layers,
            ext_file_dirs: config.allow_ext_files.clone(),
            os_variant: Some(cairn_proto::os_variant(std::fs::read_to_string("/etc/os-release").ok().as_deref())),
        };
        let start_secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
        let reports = crate::reports::Reports::open(&config.data_dir, &config.node_name, start_secs)
            .map_err(|source| SatelliteError::DataDir { path: config.data_dir.join("error-reports").display().to_string(), source })?;
        // What restores and shipments cut off by the last stop placed goes
        // before anything new can start.
        let (inflight, left) = crate::inflight::Inflight::open(&config.data_dir)
            .map_err(|source| SatelliteError::DataDir { path: config.data_dir.join("inflight").display().to_string(), source })?;
        if !left.is_empty() {
            crate::inflight::clean_up(&crate::apply::Storage::new(runner.clone(), config.command_timeout).tools, left).await;
        }
        let sos_runner = runner.clone();
        let physical = Physical::new(runner.clone(), config.command_timeout);
        let storage = crate::apply::Storage::new(runner, config.command_timeout);
        let files = crate::ext_files::ExtFiles::new(config.allow_ext_files.clone(), config.ext_files_root.clone());
        let applier = Arc::new(
            Applier::new(config.node_name.clone(), instance, storage, providers, drbd, Some(config.data_dir.clone()))
                .with_ext_files(files)
                .with_pool_dirs(crate::pool_dirs::PoolDirs::new(&config.data_dir, &config.allow_pool_dirs)),
        );
        let tls = match &config.tls {
            Some(files) => Some(tokio_rustls::TlsAcceptor::from(crate::tls::server_config(files)?)),
            None => None,
        };
        let ship_tls = match &config.tls {
            Some(files) => Some(Arc::new(crate::ship::ShipTls::new(&files.cert, &files.key)?)),
            None => None,
        };
        let listener =
            TcpListener::bind(config.listen).await.map_err(|source| SatelliteError::Bind { addr: config.listen.to_string(), source })?;
        let epoch_file = config.data_dir.join("leader-epoch");
        let epochs = cairn_proto::EpochGate::persistent(epoch_file.clone())
            .map_err(|source| SatelliteError::Epoch { path: epoch_file.display().to_string(), source })?;
        Ok(Satellite {
            listener,
            tls,
            shared: Arc::new(Shared {
                gate: Gate { epochs, ..Gate::new(&config.cluster_secret, proto, hello) },
                applier,
                physical,
                physical_lock: tokio::sync::Mutex::new(()),
                transfers: Arc::default(),
                ships: Arc::default(),
                inflight: Arc::new(inflight),
                ship_tls,
                reports: Arc::new(reports),
                runner: sos_runner,
                command_timeout: config.command_timeout,
                stop: tokio::sync::watch::Sender::new(false),
            }),
            metrics,
        })
    }

    pub fn local_addr(&self) -> std::io::Result<std::net::SocketAddr> {
        self.listener.local_addr()
    }

    /// Where `/metrics` is served, if anywhere.
    pub fn metrics_addr(&self) -> Option<std::io::Result<std::net::SocketAddr>> {
        self.metrics.as_ref().map(|(l, _)| l.local_addr())
    }

    pub async fn serve(self, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<(), SatelliteError> {
        let shared = self.shared.clone();
        // Held observation requests are answered before the graceful
        // shutdown waits for the requests in progress.
        let shutdown = async move {
            shutdown.await;
            shared.stop.send_replace(true);
        };
        let app = router(self.shared);
        // The metrics listener lives as long as the main one.
        let _metrics = self.metrics.map(|(listener, m)| {
            let app = Router::new().route("/metrics", get(metrics)).with_state(m);
            AbortOnDrop(tokio::spawn(async move {
                if let Err(e) = axum::serve(listener, app).await {
                    tracing::error!("the metrics listener failed: {e}");
                }
            }))
        });
        match self.tls {
            Some(acceptor) => axum::serve(crate::tls::TlsListener::new(self.listener, acceptor).map_err(SatelliteError::Serve)?, app)
                .with_graceful_shutdown(shutdown)
                .await
                .map_err(SatelliteError::Serve),
            None => axum::serve(self.listener, app).with_graceful_shutdown(shutdown).await.map_err(SatelliteError::Serve),
        }
    }
}

/// Stops a task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// `GET /metrics`: the DRBD resources of this node in drbd-reactor's
/// names. Without the DRBD 9 module there are none (a count of 0); a
/// failing `drbdsetup` is a 500 with its error.
async fn metrics(State(m): State<Arc<Metrics>>) -> Response {
    let mut last = m.last.lock().await;
    let text = match last.as_ref().filter(|(at, _)| at.elapsed() < METRICS_FRESH) {
        Some((_, text)) => text.clone(),
        None => {
            let resources = if m.kernel {
                let cmd = cairn_storage::drbd::adm::Adm::events2(true).timeout(m.timeout);
                match m.runner.run(&cmd).await {
                    Ok(out) => cairn_storage::drbd::metrics::parse_snapshot(&out.stdout),
                    Err(e) => return (StatusCode::INTERNAL_SERVER_ERROR, format!("cannot read DRBD's state: {e}\n")).into_response(),
                }
            } else {
                Default::default()
            };
            let text = cairn_storage::drbd::metrics::render(&resources);
            *last = Some((std::time::Instant::now(), text.clone()));
            text
        }
    };
    drop(last);
    ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], text).into_response()
}

fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route(PATH_HELLO, get(hello))
        .route(PATH_CHALLENGE, get(|| async { StatusCode::NOT_FOUND }))
        .route(PATH_SESSION, post(|| async { StatusCode::NOT_FOUND }))
        .route(PATH_APPLY, post(apply).layer(axum::extract::DefaultBodyLimit::disable()))
        .route(PATH_OBSERVE, post(observe))
        .route(PATH_PHYSICAL, get(physical_list).post(physical_create))
        .route(PATH_CONFIG, get(log_levels).post(set_log_levels))
        .route(PATH_EXT_FILE_STATUS, post(ext_file_status))
        .route(PATH_BACKUP_SEND, post(backup_send))
        .route(PATH_BACKUP_RECEIVE, post(backup_receive))
        .route(PATH_BACKUP_ABORT, post(backup_abort))
        .route(PATH_BACKUP_DISCARD, post(backup_discard))
        .route(PATH_SHIP_LISTEN, post(ship_listen))
        .route(PATH_SHIP_RESULT, post(ship_result))
        .route(PATH_SHIP_SEND, post(ship_send))
        .route(cairn_proto::PATH_ERROR_REPORTS, post(error_reports))
        .route(cairn_proto::PATH_ERROR_REPORTS_DELETE, post(error_reports_delete))
        .route(cairn_proto::PATH_SOS, get(sos))
        .layer(middleware::from_fn_with_state(shared.clone(), guard))
        .with_state(shared)
}

/// What every request to a satellite (real or simulated) passes: the
/// session of a controller that proved it knows the cluster secret
/// ([`cairn_proto::auth`]), then the protocol version (a mismatch answers
/// with the hello), then the leader epoch.
pub(crate) struct Gate {
    pub auth: Authority,
    pub proto: u32,
    pub hello: Hello,
    pub epochs: cairn_proto::EpochGate,
    /// Bodies read before their MAC is checked, at most this many at once:
    /// a session id and a fresh sequence number are all it takes to make
    /// the satellite read one, and both can be seen on a PLAIN link.
    pub unverified: tokio::sync::Semaphore,
}

/// The largest request body read (an apply of a whole node).
const MAX_REQUEST: usize = 128 << 20;
/// Request bodies read at once before their MAC is checked (with
/// [`MAX_REQUEST`], the most memory a stranger can make the satellite hold).
const MAX_UNVERIFIED: usize = 4;

fn refuse(why: impl std::fmt::Display) -> Response {
    (StatusCode::UNAUTHORIZED, why.to_string()).into_response()
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

impl Gate {
    pub(crate) fn new(secret: &str, proto: u32, hello: Hello) -> Gate {
        Gate {
            auth: Authority::new(secret),
            proto,
            hello,
            epochs: Default::default(),
            unverified: tokio::sync::Semaphore::new(MAX_UNVERIFIED),
        }
    }

    /// The protocol version, then the epoch: the answer refusing the
    /// request, if any.
    fn version_and_epoch(&self, headers: &HeaderMap) -> Option<Response> {
        let version = header(headers, VERSION_HEADER).and_then(|v| v.parse::<u32>().ok());
        if version != Some(self.proto) {
            return Some((StatusCode::CONFLICT, Json(self.hello.clone())).into_response());
        }
        fenced(&self.epochs, headers)
    }

    /// Serves the challenge and the session opening, and lets through
    /// only requests of an open session whose MAC verifies and whose
    /// sequence number is new; their answers are MACed.
    pub(crate) async fn check(&self, req: Request, next: Next) -> Response {
        let path = req.uri().path().to_string();
        if path == PATH_CHALLENGE {
            return match self.auth.challenge() {
                Ok(c) => Json(c).into_response(),
                Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
            };
        }
        let (parts, body) = req.into_parts();
        let version = header(&parts.headers, VERSION_HEADER).map(String::from);
        let epoch = header(&parts.headers, cairn_proto::EPOCH_HEADER).map(String::from);
        let context = Context { version: version.as_deref(), epoch: epoch.as_deref() };
        if path == PATH_SESSION {
            let Ok(bytes) = axum::body::to_bytes(body, 64 << 10).await else { return refuse("session request too large") };
            let open: SessionOpen = match serde_json::from_slice(&bytes) {
                Ok(o) => o,
                Err(e) => return (StatusCode::BAD_REQUEST, format!("bad session request: {e}")).into_response(),
            };
            let (id, key) = match self.auth.open(&open, context) {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!("refused a controller: {e}");
                    return refuse(e);
                }
            };
            // A refusal names no session (its MAC is taken with an empty id).
            return match self.version_and_epoch(&parts.headers) {
                Some(r) => signed(r, &key, "", 0).await,
                None => signed(Json(SessionOpened { session: id.clone() }).into_response(), &key, &id, 0).await,
            };
        }
        let session = header(&parts.headers, SESSION_HEADER).map(String::from);
        let seq = header(&parts.headers, SEQ_HEADER).and_then(|v| v.parse::<u64>().ok());
        let mac = header(&parts.headers, MAC_HEADER).map(String::from);
        let (Some(session), Some(seq), Some(mac)) = (session, seq, mac) else { return refuse(Refusal::NoSession) };
        let key = match self.auth.key(&session, seq) {
            Ok(k) => k,
            Err(e) => return refuse(e),
        };
        let Ok(permit) = self.unverified.acquire().await else { return refuse("the satellite is stopping") };
        // A body that trickles in must not hold its permit for long.
        let read = tokio::time::timeout(std::time::Duration::from_secs(30), axum::body::to_bytes(body, MAX_REQUEST)).await;
        let Ok(Ok(bytes)) = read else { return refuse("request body too large, cut off or too slow") };
        let target = parts.uri.path_and_query().map_or(path.as_str(), |p| p.as_str());
        let head = RequestHead { session: &session, seq, method: parts.method.as_str(), path: target, cx: context };
        if !key.verify_request(&head, &bytes, &mac) {
            tracing::warn!(%path, "refused a request whose MAC does not match");
            return refuse(Refusal::BadMac);
        }
        drop(permit);
        if let Err(e) = self.auth.admit(&session, seq) {
            tracing::warn!(%path, "{e}");
            return refuse(e);
        }
        let answer = match self.version_and_epoch(&parts.headers) {
            Some(r) => r,
            None => next.run(Request::from_parts(parts, axum::body::Body::from(bytes))).await,
        };
        signed(answer, &key, &session, seq).await
    }
}

/// An answer with its MAC (see [`cairn_proto::auth`]).
async fn signed(answer: Response, key: &SessionKey, session: &str, seq: u64) -> Response {
    let (mut parts, body) = answer.into_parts();
    let bytes = match axum::body::to_bytes(body, usize::MAX).await {
        Ok(b) => b,
        Err(e) => return (StatusCode::INTERNAL_SERVER_ERROR, format!("cannot read the answer: {e}")).into_response(),
    };
    let mac = key.sign_response(session, seq, parts.status.as_u16(), &bytes);
    if let Ok(v) = axum::http::HeaderValue::from_str(&mac) {
        parts.headers.insert(MAC_HEADER, v);
    }
    Response::from_parts(parts, axum::body::Body::from(bytes))
}

/// Authenticates the controller and checks the protocol version.
async fn guard(State(s): State<Arc<Shared>>, req: Request, next: Next) -> Response {
    s.gate.check(req, next).await
}

/// Checks the leader epoch a request carries ([`cairn_proto::EPOCH_HEADER`]):
/// `Some` 403 answer for a request of a deposed leader (an epoch older than
/// the newest seen). Checked after the secret, so only the cluster's
/// controllers move the epoch.
pub(crate) fn fenced(gate: &cairn_proto::EpochGate, headers: &HeaderMap) -> Option<Response> {
    let value = headers.get(cairn_proto::EPOCH_HEADER).map(|v| v.to_str().unwrap_or(""));
    match gate.admit_header(value) {
        Ok(()) => None,
        Err(e) => {
            tracing::warn!("{e}");
            Some((StatusCode::FORBIDDEN, e.to_string()).into_response())
        }
    }
}

async fn hello(State(s): State<Arc<Shared>>) -> Json<Hello> {
    Json(s.gate.hello.clone())
}

/// Applies in a task of its own: if the controller gives up waiting, the
/// work still finishes (each resource under its own lock) instead of
/// being cut off half-way.
async fn apply(State(s): State<Arc<Shared>>, body: Bytes) -> Response {
    let req: Apply = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return (StatusCode::BAD_REQUEST, format!("bad apply request: {e}")).into_response(),
    };
    if !req.full && !s.applier.synced() {
        return (StatusCode::PRECONDITION_REQUIRED, "this satellite needs a full apply first").into_response();
    }
    let applier = s.applier.clone();
    let reports = s.reports.clone();
    match tokio::spawn(async move {
        let o = applier.apply(req).await;
        reports.note_in_background(&o);
        o
    })
    .await
    {
        Ok(o) => Json(o).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("apply failed: {e}")).into_response(),
    }
}

/// This process's log levels (None when they are not Cairn's to know).
fn current_levels() -> LogLevels {
    let (level, level_linstor) = cairn_proto::logging::control().map(|c| c.levels()).map_or((None, None), |(a, b)| (Some(a), Some(b)));
    LogLevels { level, level_linstor, error: None }
}

async fn log_levels() -> Json<LogLevels> {
    Json(current_levels())
}

/// Changes the log levels; the answer carries the levels now in effect, or
/// why they could not be changed.
async fn set_log_levels(body: Bytes) -> Response {
    let req: LogLevels = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return (StatusCode::BAD_REQUEST, format!("bad config request: {e}")).into_response(),
    };
    let result = match cairn_proto::logging::control() {
        Some(c) => c.set(req.level.as_deref(), req.level_linstor.as_deref()),
        None => Err("the satellite's log filter comes from RUST_LOG (or it was not started by the cairn binary)".to_string()),
    };
    let mut out = current_levels();
    if let Err(e) = result {
        out.error = Some(e);
    }
    Json(out).into_response()
}

/// Where an external file is here and whether it is current.
async fn ext_file_status(State(s): State<Arc<Shared>>, body: Bytes) -> Response {
    match serde_json::from_slice::<cairn_proto::ExtFileDesired>(&body) {
        Ok(f) => Json(s.applier.files.status(&f)).into_response(),
        Err(e) => (StatusCode::BAD_REQUEST, format!("bad external file status request: {e}")).into_response(),
    }
}

/// How often a held observation request looks again at what the node
/// observes when nothing woke it (sizes, pools' figures; DRBD's events wake
/// it at once): the old heartbeat's pace, so a held request costs the node
/// no more than the heartbeats did.
const OBSERVE_STEP: std::time::Duration = std::time::Duration::from_secs(2);

async fn observe(State(s): State<Arc<Shared>>, body: Bytes) -> Response {
    let wake = Wake { changes: s.applier.changes(), every: OBSERVE_STEP, stop: s.stop.subscribe() };
    let answer = observation(&body, || s.applier.observe(), wake).await;
    if let Ok(Observation { observed: Some(o), .. }) = &answer {
        s.reports.note_in_background(o);
    }
    reply(answer)
}

/// The reports an [`cairn_proto::ErrorReportFilter`] matches.
async fn error_reports(State(s): State<Arc<Shared>>, body: Bytes) -> Response {
    match serde_json::from_slice::<cairn_proto::ErrorReportFilter>(&body) {
        Ok(f) => {
            let reports = s.reports.clone();
            match tokio::task::spawn_blocking(move || reports.list(&f)).await {
                Ok(v) => Json(v).into_response(),
                Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("cannot list the error reports: {e}")).into_response(),
            }
        }
        Err(e) => (StatusCode::BAD_REQUEST, format!("bad error report filter: {e}")).into_response(),
    }
}

/// Deletes the reports an [`cairn_proto::ErrorReportFilter`] matches.
async fn error_reports_delete(State(s): State<Arc<Shared>>, body: Bytes) -> Response {
    match serde_json::from_slice::<cairn_proto::ErrorReportFilter>(&body) {
        Ok(f) => {
            let reports = s.reports.clone();
            match tokio::task::spawn_blocking(move || reports.delete(&f)).await {
                Ok(ids) => Json(cairn_proto::ErrorReportsDeleted { ids }).into_response(),
                Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("cannot delete the error reports: {e}")).into_response(),
            }
        }
        Err(e) => (StatusCode::BAD_REQUEST, format!("bad error report filter: {e}")).into_response(),
    }
}

/// This node's part of a SOS report: its version, `drbdsetup status` and
/// `drbdadm --version` (or why they could not be had).
async fn sos(State(s): State<Arc<Shared>>) -> Json<cairn_proto::SosInfo> {
    let run = |program: &str, args: &[&str]| {
        let cmd = cairn_exec::Cmd::new(program).args(args.iter().copied()).timeout(s.command_timeout);
        let runner = s.runner.clone();
        async move {
            match runner.run(&cmd).await {
                Ok(o) => o.stdout,
                Err(e) => format!("not available: {e}\n"),
            }
        }
    };
    let drbdsetup_status = run("drbdsetup", &["status", "--verbose", "--statistics"]).await;
    let drbd_version = run("drbdadm", &["--version"]).await;
    Json(cairn_proto::SosInfo { version: format!("cairn {}", env!("CARGO_PKG_VERSION")), drbdsetup_status, drbd_version })
}

/// What ends the wait of a held observation request early.
pub(crate) struct Wake {
    /// Bumped when the state may have changed.
    pub(crate) changes: Option<tokio::sync::watch::Receiver<u64>>,
    /// Looked at again this often whatever `changes` says.
    pub(crate) every: std::time::Duration,
    /// Set when the server stops: held requests are answered at once, so
    /// a graceful shutdown does not wait for their holds.
    pub(crate) stop: tokio::sync::watch::Receiver<bool>,
}

/// The answer to an observe request: the whole observed state, or
/// "unchanged" when the controller holds it (see [`Observation`]). While
/// it is unchanged and the request allows a wait, the answer is held
/// until the state changes or the wait is over: the state is looked at
/// again whenever `wake.changes` says it may have changed and every
/// `wake.every`.
pub(crate) async fn observation<F, O>(body: &[u8], observe: F, wake: Wake) -> Result<Observation, String>
where
    F: Fn() -> O,
    O: Future<Output = cairn_proto::Observed>,
{
    let req = serde_json::from_slice::<ObserveSince>(body).map_err(|e| format!("bad observe request: {e}"))?;
    let wait = std::time::Duration::from_millis(req.wait_ms.unwrap_or(0).min(cairn_proto::MAX_OBSERVE_WAIT_MS));
    let until = tokio::time::Instant::now() + wait;
    let Wake { mut changes, every, mut stop } = wake;
    loop {
        // Marked seen before looking, so a change while looking is not missed.
        if let Some(rx) = changes.as_mut() {
            rx.borrow_and_update();
        }
        let answer = Observation::answer(observe().await, req.since.as_deref());
        if answer.observed.is_some() || tokio::time::Instant::now() >= until || *stop.borrow() {
            return Ok(answer);
        }
        let changed = async {
            match changes.as_mut() {
                // A closed channel: nothing wakes but time.
                Some(rx) => {
                    if rx.changed().await.is_err() {
                        std::future::pending::<()>().await;
                    }
                }
                None => std::future::pending::<()>().await,
            }
        };
        let next = async {
            tokio::select! {
                _ = changed => {}
                _ = tokio::time::sleep(every) => {}
                // A dropped sender stops nothing.
                _ = async { if stop.wait_for(|s| *s).await.is_err() { std::future::pending::<()>().await } } => {}
            }
        };
        if tokio::time::timeout_at(until, next).await.is_err() {
            return Ok(answer);
        }
    }
}

/// An observation as the HTTP answer.
pub(crate) fn reply(answer: Result<Observation, String>) -> Response {
    match answer {
        Ok(a) => Json(a).into_response(),
        Err(e) => (StatusCode::BAD_REQUEST, e).into_response(),
    }
}

async fn physical_list(State(s): State<Arc<Shared>>) -> Response {
    match s.physical.devices().await {
        Ok(d) => Json(d).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("cannot list the disks: {e}")).into_response(),
    }
}

/// Creates a volume group or thin pool, one at a time.
async fn physical_create(State(s): State<Arc<Shared>>, body: Bytes) -> Response {
    let req: PhysicalCreate = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return (StatusCode::BAD_REQUEST, format!("bad physical-storage request: {e}")).into_response(),
    };
    // In a task of its own, like an apply: a controller that stops waiting
    // must not cut pvcreate/vgcreate/lvcreate off half-way.
    let shared = s.clone();
    let task = tokio::spawn(async move {
        let _one_at_a_time = shared.physical_lock.lock().await;
        match shared.physical.create(&req).await {
            Ok(backing) => PhysicalCreated { backing: Some(backing), error: None },
            Err(e) => PhysicalCreated {
                backing: None,
                error: Some(ObjectError {
                    message: format!("Creating the {} pool '{}' failed.", req.provider_kind, req.pool_name),
                    cause: Some(e.to_string()),
                    details: e.details(),
                }),
            },
        }
    });
    match task.await {
        Ok(r) => Json(r).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("physical storage task failed: {e}")).into_response(),
    }
}

/// Uploads a snapshot to S3, in a task of its own (a controller that stops
/// waiting does not cut the multipart upload off half-way; an abort does).
async fn backup_send(State(s): State<Arc<Shared>>, body: Bytes) -> Response {
    let req: BackupSend = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return (StatusCode::BAD_REQUEST, format!("bad backup request: {e}")).into_response(),
    };
    let transfers = s.transfers.clone();
    let tools = crate::apply::Storage::new(s.runner.clone(), s.command_timeout).tools;
    match tokio::spawn(async move { crate::backup::send(&transfers, &tools, &req).await }).await {
        Ok(sent) => Json(sent).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("backup task failed: {e}")).into_response(),
    }
}

/// Downloads a backup into a snapshot of a new resource.
async fn backup_receive(State(s): State<Arc<Shared>>, body: Bytes) -> Response {
    let req: BackupReceive = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return (StatusCode::BAD_REQUEST, format!("bad restore request: {e}")).into_response(),
    };
    let (transfers, inflight) = (s.transfers.clone(), s.inflight.clone());
    let tools = crate::apply::Storage::new(s.runner.clone(), s.command_timeout).tools;
    let task = tokio::spawn(async move {
        match crate::backup::receive(&transfers, &tools, &inflight, &req).await {
            Ok(()) => BackupReceived { error: None },
            Err(e) => {
                tracing::warn!(resource = %req.resource, "backup download failed: {e}");
                BackupReceived {
                    error: Some(ObjectError {
                        message: format!("Restoring the backup into '{}' failed.", req.resource),
                        cause: Some(e.to_string()),
                        details: None,
                    }),
                }
            }
        }
    });
    match task.await {
        Ok(r) => Json(r).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("restore task failed: {e}")).into_response(),
    }
}

/// Removes what a restore downloaded that the controller did not register.
async fn backup_discard(State(s): State<Arc<Shared>>, body: Bytes) -> Response {
    let req: BackupDiscard = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return (StatusCode::BAD_REQUEST, format!("bad discard request: {e}")).into_response(),
    };
    let transfers = s.transfers.clone();
    let tools = crate::apply::Storage::new(s.runner.clone(), s.command_timeout).tools;
    let task = tokio::spawn(async move {
        match crate::backup::discard(&transfers, &tools, &req).await {
            Ok(()) => BackupReceived { error: None },
            Err(e) => {
                tracing::warn!(resource = %req.resource, "removing a restore that was not registered failed: {e}");
                BackupReceived {
                    error: Some(ObjectError {
                        message: format!("Removing the restore of '{}' failed.", req.resource),
                        cause: Some(e.to_string()),
                        details: None,
                    }),
                }
            }
        }
    });
    match task.await {
        Ok(r) => Json(r).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("discard task failed: {e}")).into_response(),
    }
}

fn received(resource: &str, r: Result<(), String>) -> BackupReceived {
    match r {
        Ok(()) => BackupReceived { error: None },
        Err(why) => BackupReceived {
            error: Some(ObjectError {
                message: format!("Receiving the shipment of '{resource}' failed."),
                cause: Some(why),
                details: None,
            }),
        },
    }
}

/// Starts listening for a snapshot shipped from another cluster.
async fn ship_listen(State(s): State<Arc<Shared>>, body: Bytes) -> Response {
    let req: ShipListen = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return (StatusCode::BAD_REQUEST, format!("bad ship request: {e}")).into_response(),
    };
    let resource = req.resource.clone();
    let tools = crate::apply::Storage::new(s.runner.clone(), s.command_timeout).tools;
    match crate::ship::listen(s.ships.clone(), s.transfers.clone(), &s.inflight, tools, req, s.ship_tls.clone()).await {
        Ok(listening) => Json(listening).into_response(),
        Err(e) => (StatusCode::CONFLICT, format!("cannot receive a shipment of '{resource}': {e}")).into_response(),
    }
}

/// Waits for (or cancels) a shipment this node receives.
async fn ship_result(State(s): State<Arc<Shared>>, body: Bytes) -> Response {
    let req: ShipToken = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return (StatusCode::BAD_REQUEST, format!("bad ship request: {e}")).into_response(),
    };
    Json(received("the snapshot", s.ships.result(&req.token.0, req.cancel).await)).into_response()
}

/// Streams a snapshot to a satellite of another cluster.
async fn ship_send(State(s): State<Arc<Shared>>, body: Bytes) -> Response {
    let req: ShipSend = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return (StatusCode::BAD_REQUEST, format!("bad ship request: {e}")).into_response(),
    };
    let transfers = s.transfers.clone();
    let tools = crate::apply::Storage::new(s.runner.clone(), s.command_timeout).tools;
    match tokio::spawn(async move { crate::ship::send(&transfers, &tools, &req).await }).await {
        Ok(sent) => Json(sent).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("ship task failed: {e}")).into_response(),
    }
}

/// Raises the abort flag of a resource's transfers; answers how many.
async fn backup_abort(State(s): State<Arc<Shared>>, body: Bytes) -> Response {
    match serde_json::from_slice::<BackupAbort>(&body) {
        Ok(a) => Json(s.transfers.abort(&a.resource, a.snapshot.as_deref())).into_response(),
        Err(e) => (StatusCode::BAD_REQUEST, format!("bad abort request: {e}")).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    fn state(free: i64) -> cairn_proto::Observed {
        cairn_proto::Observed {
            instance: "i".into(),
            pools: vec![cairn_proto::PoolObserved { name: "p".into(), free_kib: Some(free), ..Default::default() }],
            ..Default::default()
        }
    }

    /// Woken by `changes`, or every `every`; never stopped (its stop
    /// channel is closed at once, which must not end a hold).
    fn wake(changes: Option<tokio::sync::watch::Receiver<u64>>, every: Duration) -> Wake {
        Wake { changes, every, stop: tokio::sync::watch::channel(false).1 }
    }

    fn ask(since: &cairn_proto::Observed, wait_ms: u64) -> Vec<u8> {
        serde_json::to_vec(&ObserveSince { since: Some(since.digest()), wait_ms: Some(wait_ms) }).expect("json")
    }

    #[tokio::test]
    async fn an_unchanged_state_is_held_for_the_wait_then_answered_unchanged() {
        let now = state(1);
        let t = Instant::now();
        let a = observation(&ask(&now, 150), || std::future::ready(now.clone()), wake(None, Duration::from_millis(40)))
            .await
            .expect("an answer");
        assert!(a.observed.is_none(), "unchanged");
        assert!(t.elapsed() >= Duration::from_millis(150), "held for the wait");
        // Without a wait: at once.
        let body = serde_json::to_vec(&ObserveSince { since: Some(now.digest()), wait_ms: None }).expect("json");
        let t = Instant::now();
        assert!(
            observation(&body, || std::future::ready(now.clone()), wake(None, Duration::from_secs(2)))
                .await
                .expect("an answer")
                .observed
                .is_none()
        );
        assert!(t.elapsed() < Duration::from_millis(150));
    }

    #[tokio::test]
    async fn a_change_ends_the_hold_with_the_new_state() {
        let current = Arc::new(parking_lot::Mutex::new(state(1)));
        let held = current.lock().clone();
        let (tx, rx) = tokio::sync::watch::channel(0u64);
        let changer = {
            let current = current.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(50)).await;
                *current.lock() = state(2);
                tx.send_modify(|g| *g += 1);
                tx
            })
        };
        let t = Instant::now();
        let a = observation(&ask(&held, 20_000), || std::future::ready(current.lock().clone()), wake(Some(rx), Duration::from_secs(60)))
            .await
            .expect("an answer");
        assert_eq!(a.observed.map(|o| o.pools[0].free_kib), Some(Some(2)));
        assert!(t.elapsed() < Duration::from_secs(10), "answered on the change, not after the 20 s hold");
        drop(changer.await);
        // Looking every 50 ms (no channel) finds a change too.
        let current = Arc::new(parking_lot::Mutex::new(state(1)));
        let held = current.lock().clone();
        let c = current.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            *c.lock() = state(3);
        });
        let a = observation(&ask(&held, 20_000), || std::future::ready(current.lock().clone()), wake(None, Duration::from_millis(50)))
            .await
            .expect("an answer");
        assert_eq!(a.observed.map(|o| o.pools[0].free_kib), Some(Some(3)));
    }

    #[tokio::test]
    async fn another_state_than_the_one_asked_with_is_answered_at_once_and_bad_requests_are_refused() {
        let a = observation(&ask(&state(1), 20_000), || std::future::ready(state(2)), wake(None, Duration::from_secs(2)))
            .await
            .expect("an answer");
        assert!(a.observed.is_some());
        assert!(observation(b"{not json", || std::future::ready(state(2)), wake(None, Duration::from_secs(2))).await.is_err());
    }

    #[tokio::test]
    async fn a_stopping_server_answers_its_held_requests_at_once() {
        let now = state(1);
        let (stop, rx) = tokio::sync::watch::channel(false);
        let stopper = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            stop.send_replace(true);
            stop
        });
        let t = Instant::now();
        let wake = Wake { changes: None, every: Duration::from_secs(60), stop: rx };
        let a = observation(&ask(&now, 20_000), || std::future::ready(now.clone()), wake).await.expect("an answer");
        assert!(a.observed.is_none(), "unchanged");
        assert!(t.elapsed() < Duration::from_secs(10), "answered on the stop, not after the 20 s hold");
        drop(stopper.await);
    }
}
