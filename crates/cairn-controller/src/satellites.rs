//! Links to the satellites: one worker task per node that connects,
//! authenticates, sends the node's full desired state, then deltas in
//! order, and keeps the observed state the REST views show.
//!
//! Ordering: deltas are computed under the controller's writer lock
//! against what was last sent to the node, and queued to the node's worker,
//! which sends them one after the other. A (re)connect takes the same lock
//! to snapshot the full desired state, so no change falls between a full
//! apply and the deltas after it.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use cairn_api::rc::{self, ApiCallRc};
use cairn_domain::Cluster;
use cairn_domain::desired::desired_for_node_with;

use crate::crypto::MasterKey;
use cairn_domain::name::key;
use cairn_domain::placement::{NodeObs, Observer};
use cairn_domain::snapshot::NodeSnapState;
use cairn_domain::storage_pool::PoolCapacity;
use cairn_proto::{
    Apply, Hello, Observed, PATH_APPLY, PATH_HELLO, PATH_OBSERVE, PROTO_VERSION, PoolDesired, PoolObserved, ResourceDesired,
    ResourceObserved, VERSION_HEADER,
};
use serde::de::DeserializeOwned;
use tokio::sync::{Notify, mpsc, oneshot};

use crate::state::AppState;

/// How often a connected satellite is asked for its state.
pub const HEARTBEAT: Duration = Duration::from_secs(2);
/// Pause before reconnecting (doubled per failure up to MAX_RECONNECT).
pub const RECONNECT: Duration = Duration::from_secs(1);
pub const MAX_RECONNECT: Duration = Duration::from_secs(30);
/// Time a satellite may take to apply a change.
pub const APPLY_TIMEOUT: Duration = Duration::from_secs(300);
const SHORT_TIMEOUT: Duration = Duration::from_secs(10);

/// `connection_status` values (python-linstor's enum names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ConnStatus {
    #[default]
    Offline,
    Connected,
    Online,
    VersionMismatch,
    AuthenticationError,
    HostnameMismatch,
}

impl ConnStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ConnStatus::Offline => "OFFLINE",
            ConnStatus::Connected => "CONNECTED",
            ConnStatus::Online => "ONLINE",
            ConnStatus::VersionMismatch => "VERSION_MISMATCH",
            ConnStatus::AuthenticationError => "AUTHENTICATION_ERROR",
            ConnStatus::HostnameMismatch => "HOSTNAME_MISMATCH",
        }
    }
}

/// What the controller knows about a node's satellite (observed state).
#[derive(Debug, Default)]
struct View {
    status: ConnStatus,
    /// The last full apply succeeded: what the view holds is current.
    synced: bool,
    hello: Option<Hello>,
    /// by upper-case resource name
    resources: BTreeMap<String, ResourceObserved>,
    /// by upper-case pool name
    pools: BTreeMap<String, PoolObserved>,
}

impl View {
    fn absorb(&mut self, o: &Observed, full: bool) {
        if full {
            self.resources.clear();
        }
        for r in &o.resources {
            self.resources.insert(key(&r.name), r.clone());
        }
        for r in &o.removed {
            if r.error.is_none() {
                self.resources.remove(&key(&r.name));
            }
        }
        self.pools = o.pools.iter().map(|p| (key(&p.name), p.clone())).collect();
    }
}

/// What was last sent to a node.
#[derive(Debug, Default)]
struct Sent {
    generation: u64,
    pools: Vec<PoolDesired>,
    resources: BTreeMap<String, ResourceDesired>,
}

struct Job {
    apply: Apply,
    done: oneshot::Sender<Result<Observed, String>>,
}

/// One node's link.
pub struct Link {
    node_key: String,
    view: RwLock<View>,
    sent: Mutex<Sent>,
    tx: mpsc::UnboundedSender<Job>,
    stopped: AtomicBool,
    warned_tls: AtomicBool,
    /// Failed connection attempts in a row.
    failures: AtomicU32,
    wake: Notify,
}

/// All links, by node key.
pub struct Links {
    secret: String,
    tls: Option<ureq::tls::TlsConfig>,
    links: Mutex<BTreeMap<String, Arc<Link>>>,
    /// The unlocked master key (LUKS volume secrets), if entered.
    master: std::sync::RwLock<Option<MasterKey>>,
}

/// A change sent to a node, to wait for.
pub struct Pending {
    node: String,
    /// Snapshots (resource, snapshot) this change asks the node to take:
    /// only their failures are this change's errors.
    new_snapshots: BTreeSet<(String, String)>,
    rx: oneshot::Receiver<Result<Observed, String>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Links {
    pub fn new(secret: String, tls: Option<ureq::tls::TlsConfig>) -> Links {
        Links { secret, tls, links: Mutex::new(BTreeMap::new()), master: std::sync::RwLock::new(None) }
    }

    /// The master key, if the passphrase was created or entered.
    pub fn master(&self) -> Option<MasterKey> {
        self.master.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn set_master(&self, key: MasterKey) {
        *self.master.write().unwrap_or_else(|e| e.into_inner()) = Some(key);
    }

    /// A node's desired state, with LUKS keys while the master key is known.
    pub fn desired(&self, cluster: &Cluster, node_key: &str) -> (Vec<PoolDesired>, Vec<ResourceDesired>) {
        let master = self.master();
        let unseal = |sealed: &str| {
            master.as_ref().and_then(|m| m.open(sealed).map_err(|e| tracing::error!("cannot open a LUKS volume secret: {e}")).ok())
        };
        desired_for_node_with(cluster, node_key, &unseal)
    }

    fn get(&self, node_key: &str) -> Option<Arc<Link>> {
        lock(&self.links).get(node_key).cloned()
    }

    /// Starts a worker for every satellite node and stops those of deleted
    /// nodes.
    pub fn reconcile(&self, state: &AppState, cluster: &Cluster) {
        let wanted: BTreeSet<String> = cluster.nodes.iter().filter(|(_, n)| n.node_type.has_satellite()).map(|(k, _)| k.clone()).collect();
        let mut links = lock(&self.links);
        links.retain(|k, l| {
            let keep = wanted.contains(k);
            if !keep {
                l.stopped.store(true, Ordering::SeqCst);
                l.wake.notify_one();
            }
            keep
        });
        for k in wanted {
            if links.contains_key(&k) {
                continue;
            }
            let (tx, rx) = mpsc::unbounded_channel();
            let link = Arc::new(Link {
                node_key: k.clone(),
                view: RwLock::new(View::default()),
                sent: Mutex::new(Sent::default()),
                tx,
                stopped: AtomicBool::new(false),
                warned_tls: AtomicBool::new(false),
                failures: AtomicU32::new(0),
                wake: Notify::new(),
            });
            links.insert(k, link.clone());
            tokio::spawn(run(state.clone(), Peer { secret: self.secret.clone(), tls: self.tls.clone() }, link, rx));
        }
    }

    /// `ONLINE` only once the node's full state was applied; `CONNECTED`
    /// while that is under way.
    pub fn connection_status(&self, node_key: &str) -> &'static str {
        let Some(l) = self.get(node_key) else { return ConnStatus::Offline.as_str() };
        let v = l.view.read().unwrap_or_else(|e| e.into_inner());
        if v.status == ConnStatus::Online && !v.synced { ConnStatus::Connected.as_str() } else { v.status.as_str() }
    }

    pub fn hello(&self, node_key: &str) -> Option<Hello> {
        self.get(node_key).and_then(|l| l.view.read().unwrap_or_else(|e| e.into_inner()).hello.clone())
    }

    /// The observed state of one resource on a node.
    pub fn resource(&self, node_key: &str, rsc: &str) -> Option<ResourceObserved> {
        let l = self.get(node_key)?;
        let v = l.view.read().unwrap_or_else(|e| e.into_inner());
        if v.status != ConnStatus::Online || !v.synced {
            return None;
        }
        v.resources.get(&key(rsc)).cloned()
    }

    /// Whether the node's satellite found that the pool can take snapshots
    /// (FILE_THIN: reflinks); None while unknown.
    pub fn pool_snapshots(&self, node_key: &str, pool: &str) -> Option<bool> {
        let l = self.get(node_key)?;
        let v = l.view.read().unwrap_or_else(|e| e.into_inner());
        v.pools.get(&key(pool)).and_then(|p| p.supports_snapshots)
    }

    /// What the node's satellite reports of a snapshot of a resource.
    pub fn snapshot_state(&self, node_key: &str, rsc: &str, snap: &str) -> NodeSnapState {
        let Some(o) = self.resource(node_key, rsc) else { return NodeSnapState::Pending };
        if o.snapshots.iter().any(|s| s == snap) {
            return NodeSnapState::Taken;
        }
        match o.snapshot_errors.get(snap) {
            Some(e) => NodeSnapState::Failed(
                [Some(e.message.as_str()), e.cause.as_deref(), e.details.as_deref()].into_iter().flatten().collect::<Vec<_>>().join(" "),
            ),
            None => NodeSnapState::Pending,
        }
    }

    pub fn capacity(&self, node_key: &str, pool: &str) -> Option<PoolCapacity> {
        let l = self.get(node_key)?;
        // Copy what is needed and let go of the view before taking `sent`:
        // the worker takes them in the other order.
        let (free_kib, total_kib, created) = {
            let v = l.view.read().unwrap_or_else(|e| e.into_inner());
            let p = v.pools.get(&key(pool))?;
            let created: Vec<(String, u32, i64)> = v
                .resources
                .values()
                .flat_map(|r| {
                    r.volumes.iter().filter(|o| o.device_path.is_some()).filter_map(|o| Some((r.name.clone(), o.number, o.usable_kib?)))
                })
                .collect();
            (p.free_kib?, p.total_kib?, created)
        };
        // Volumes of this pool the satellite has reported as created.
        let sent = lock(&l.sent);
        let present_kib = created
            .iter()
            .filter(|(rsc, nr, _)| {
                sent.resources.get(rsc).is_some_and(|d| d.volumes.iter().any(|dv| dv.number == *nr && dv.pool.eq_ignore_ascii_case(pool)))
            })
            .fold(0i64, |acc, (_, _, kib)| acc.saturating_add(*kib));
        Some(PoolCapacity { free_kib, total_kib, present_kib })
    }

    /// Queues the delta of each node to its worker. Call under the writer
    /// lock, after the changes were applied to `cluster`. Offline nodes
    /// get nothing (their next full apply carries it) and a warning, unless
    /// they are `fresh` (registered by this very change).
    pub fn dispatch(&self, cluster: &Cluster, nodes: &BTreeSet<String>, fresh: &BTreeSet<String>) -> (Vec<Pending>, Vec<ApiCallRc>) {
        let mut pending = Vec::new();
        let mut warnings = Vec::new();
        for nk in nodes {
            let Some(node) = cluster.nodes.get(nk) else { continue };
            let (pools, rscs) = self.desired(cluster, nk);
            let link = self.get(nk);
            let online = link.as_ref().is_some_and(|l| l.view.read().unwrap_or_else(|e| e.into_inner()).status == ConnStatus::Online);
            let Some(link) = link.filter(|_| online) else {
                if fresh.contains(nk) {
                    continue;
                }
                warnings.push(
                    ApiCallRc::warning(
                        rc::MASK_NODE,
                        rc::WARN_NOT_CONNECTED,
                        format!("No active connection to satellite '{}'.", node.name),
                    )
                    .with_details("The change is stored and will be applied when the satellite connects.")
                    .with_ref("Node", &node.name),
                );
                continue;
            };
            let mut sent = lock(&link.sent);
            let mut apply =
                Apply { generation: 0, full: false, pools_set: false, pools: Vec::new(), resources: Vec::new(), removed: Vec::new() };
            if pools != sent.pools {
                apply.pools_set = true;
                apply.pools = pools.clone();
                sent.pools = pools;
            }
            let now: BTreeMap<String, ResourceDesired> = rscs.into_iter().map(|r| (r.name.clone(), r)).collect();
            let mut new_snapshots = BTreeSet::new();
            for (name, r) in &now {
                let before = sent.resources.get(name);
                if before != Some(r) {
                    apply.resources.push(r.clone());
                    let had = |s: &String| before.is_some_and(|b| b.snapshots.contains(s));
                    new_snapshots.extend(r.snapshots.iter().filter(|s| !had(s)).map(|s| (name.clone(), s.clone())));
                }
            }
            apply.removed = sent.resources.keys().filter(|n| !now.contains_key(*n)).cloned().collect();
            if !apply.pools_set && apply.resources.is_empty() && apply.removed.is_empty() {
                continue;
            }
            sent.resources = now;
            sent.generation += 1;
            apply.generation = sent.generation;
            let (done, rx) = oneshot::channel();
            if link.tx.send(Job { apply, done }).is_ok() {
                pending.push(Pending { node: node.name.clone(), new_snapshots, rx });
            }
        }
        (pending, warnings)
    }
}

impl Observer for Links {
    fn node(&self, node_key: &str) -> NodeObs {
        let Some(l) = self.get(node_key) else { return NodeObs::default() };
        let v = l.view.read().unwrap_or_else(|e| e.into_inner());
        let Some(h) = v.hello.as_ref().filter(|_| v.status == ConnStatus::Online && v.synced) else { return NodeObs::default() };
        NodeObs {
            online: true,
            providers: h.providers.iter().filter(|p| p.supported).map(|p| p.kind.as_str().to_string()).collect(),
            layers: h.layers.iter().cloned().collect(),
        }
    }

    fn capacity(&self, node_key: &str, pool: &str) -> Option<PoolCapacity> {
        Links::capacity(self, node_key, pool)
    }
}

/// Waits for the satellites' answers and turns failures into replies.
pub async fn collect(pending: Vec<Pending>) -> Vec<ApiCallRc> {
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + APPLY_TIMEOUT;
    for p in pending {
        let answer = tokio::time::timeout_at(deadline, p.rx).await;
        match answer {
            Ok(Ok(Ok(observed))) => {
                // A snapshot this change asked for and the node could not
                // take; older snapshot failures show on their snapshots.
                for r in &observed.resources {
                    for (snap, e) in r.snapshot_errors.iter().filter(|(s, _)| p.new_snapshots.contains(&(r.name.clone(), (*s).clone()))) {
                        let mut entry =
                            ApiCallRc::error(rc::MASK_SNAPSHOT, rc::FAIL_UNKNOWN_ERROR, format!("(Node: '{}') {}", p.node, e.message))
                                .with_ref("Node", &p.node)
                                .with_ref("RscDfn", &r.name)
                                .with_ref("Snapshot", snap);
                        entry.cause = e.cause.clone();
                        entry.details = e.details.clone();
                        entry.correction = Some(format!("Delete the snapshot ('{snap}') to clean it up; it is not taken again."));
                        out.push(entry);
                    }
                }
                for r in observed.resources.iter().chain(observed.removed.iter()) {
                    if let Some(e) = &r.error {
                        let mut entry =
                            ApiCallRc::error(rc::MASK_RSC, rc::FAIL_UNKNOWN_ERROR, format!("(Node: '{}') {}", p.node, e.message))
                                .with_ref("Node", &p.node)
                                .with_ref("RscDfn", &r.name);
                        entry.cause = e.cause.clone();
                        entry.details = e.details.clone();
                        out.push(entry);
                    }
                }
            }
            Ok(Ok(Err(e))) => out.push(
                ApiCallRc::warning(rc::MASK_NODE, rc::WARN_NOT_CONNECTED, format!("Satellite '{}' did not confirm the change.", p.node))
                    .with_cause(e)
                    .with_details("The change is stored and will be applied when the satellite reconnects.")
                    .with_ref("Node", &p.node),
            ),
            Ok(Err(_)) => out.push(
                ApiCallRc::warning(
                    rc::MASK_NODE,
                    rc::WARN_NOT_CONNECTED,
                    format!("The link to satellite '{}' closed before it answered.", p.node),
                )
                .with_ref("Node", &p.node),
            ),
            Err(_) => out.push(
                ApiCallRc::error(
                    rc::MASK_NODE,
                    rc::FAIL_UNKNOWN_ERROR,
                    format!("Satellite '{}' did not answer within {} s.", p.node, APPLY_TIMEOUT.as_secs()),
                )
                .with_correction("Check the satellite's log; the change is stored and is retried on reconnect.")
                .with_ref("Node", &p.node),
            ),
        }
    }
    out
}

enum CallError {
    Transport(String),
    Status(u16, String),
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallError::Transport(t) => f.write_str(t),
            CallError::Status(s, b) => write!(f, "HTTP {s}: {b}"),
        }
    }
}

/// How to reach satellites: the cluster secret, and the client side of
/// mutual TLS if configured.
#[derive(Clone)]
struct Peer {
    secret: String,
    tls: Option<ureq::tls::TlsConfig>,
}

/// Where a satellite listens.
#[derive(Debug, Clone, Copy)]
struct Target {
    addr: SocketAddr,
    ssl: bool,
}

/// Loads the controller's client certificate for satellites using SSL.
pub fn client_tls(config: &crate::ControllerConfig) -> Result<Option<ureq::tls::TlsConfig>, crate::ControllerError> {
    let (Some(cert), Some(key), Some(ca)) = (&config.satellite_tls_cert, &config.satellite_tls_key, &config.satellite_tls_ca) else {
        return Ok(None);
    };
    let tls_err = |p: &std::path::Path, reason: String| crate::ControllerError::Tls { path: p.display().to_string(), reason };
    let read = |p: &std::path::Path| std::fs::read(p).map_err(|e| tls_err(p, e.to_string()));
    let pem_certs = |p: &std::path::Path| -> Result<Vec<ureq::tls::Certificate<'static>>, crate::ControllerError> {
        let bytes = read(p)?;
        let certs: Vec<_> = ureq::tls::parse_pem(&bytes)
            .filter_map(|i| match i {
                Ok(ureq::tls::PemItem::Certificate(c)) => Some(c),
                _ => None,
            })
            .collect();
        if certs.is_empty() {
            return Err(tls_err(p, "no certificate in the file".into()));
        }
        Ok(certs)
    };
    let chain = pem_certs(cert)?;
    let roots = pem_certs(ca)?;
    let key = ureq::tls::PrivateKey::from_pem(&read(key)?).map_err(|e| tls_err(key, e.to_string()))?;
    Ok(Some(
        ureq::tls::TlsConfig::builder()
            .provider(ureq::tls::TlsProvider::Rustls)
            .client_cert(Some(ureq::tls::ClientCert::new_with_certs(&chain, key)))
            .root_certs(ureq::tls::RootCerts::new_with_certs(&roots))
            .build(),
    ))
}

impl Links {
    /// A request to a node's satellite outside the apply stream (physical
    /// storage): only when it is online. `Err` is a message for the user.
    pub async fn request<T: DeserializeOwned + Send + 'static>(
        &self,
        state: &AppState,
        node_key: &str,
        path: &'static str,
        body: Option<Vec<u8>>,
        timeout: Duration,
    ) -> Result<T, String> {
        if self.connection_status(node_key) != ConnStatus::Online.as_str() {
            return Err(format!("the satellite is {}", self.connection_status(node_key)));
        }
        let (_, target) = address(state, node_key).ok_or("the node has no satellite address")?;
        let peer = Peer { secret: self.secret.clone(), tls: self.tls.clone() };
        call::<T>(&peer, target, path, body, timeout).await.map_err(|e| e.to_string())
    }
}

/// One HTTP call to a satellite, on a blocking thread: POST with a body,
/// GET without.
async fn call<T: DeserializeOwned + Send + 'static>(
    peer: &Peer,
    target: Target,
    path: &'static str,
    body: Option<Vec<u8>>,
    timeout: Duration,
) -> Result<T, CallError> {
    let secret = peer.secret.clone();
    let tls = peer.tls.clone();
    let res = tokio::task::spawn_blocking(move || -> Result<(u16, Vec<u8>), String> {
        let mut builder = ureq::Agent::config_builder().http_status_as_error(false).timeout_global(Some(timeout));
        if let Some(tls) = tls {
            builder = builder.tls_config(tls);
        }
        let agent = ureq::Agent::new_with_config(builder.build());
        let addr = target.addr;
        let url = if target.ssl { format!("https://{addr}{path}") } else { format!("http://{addr}{path}") };
        let auth = format!("Bearer {secret}");
        let version = PROTO_VERSION.to_string();
        let resp = match body {
            Some(b) => agent
                .post(&url)
                .header("authorization", &auth)
                .header(VERSION_HEADER, &version)
                .header("content-type", "application/json")
                .send(&b[..]),
            None => agent.get(&url).header("authorization", &auth).header(VERSION_HEADER, &version).call(),
        };
        let mut resp = resp.map_err(|e| e.to_string())?;
        let status = resp.status().as_u16();
        let bytes = resp.body_mut().with_config().limit(256 << 20).read_to_vec().map_err(|e| e.to_string())?;
        Ok((status, bytes))
    })
    .await
    .map_err(|e| CallError::Transport(e.to_string()))?
    .map_err(CallError::Transport)?;
    match res {
        (200, bytes) => serde_json::from_slice(&bytes).map_err(|e| CallError::Transport(format!("bad reply: {e}"))),
        (status, bytes) => Err(CallError::Status(status, String::from_utf8_lossy(&bytes).into_owned())),
    }
}

/// The satellite address of a node: its active interface with a port.
fn address(state: &AppState, node_key: &str) -> Option<(String, Target)> {
    let c = state.read();
    let n = c.nodes.get(node_key)?;
    let nif = n
        .net_interfaces
        .iter()
        .find(|i| i.is_active && i.satellite_port.is_some())
        .or_else(|| n.net_interfaces.iter().find(|i| i.satellite_port.is_some()))?;
    let ssl = nif.satellite_encryption_type.as_deref() == Some("SSL");
    Some((n.name.clone(), Target { addr: SocketAddr::new(nif.address, nif.satellite_port?), ssl }))
}

fn set_status(link: &Link, status: ConnStatus, hello: Option<Hello>) {
    let mut v = link.view.write().unwrap_or_else(|e| e.into_inner());
    if v.status != status {
        tracing::info!(node = %link.node_key, from = v.status.as_str(), to = status.as_str(), "satellite connection");
    }
    v.status = status;
    if hello.is_some() {
        v.hello = hello;
    }
}

/// Merges queued deltas, in order, into one: a later upsert or removal of
/// a resource replaces an earlier one; the last pool list wins.
fn merge<'a>(applies: impl Iterator<Item = &'a Apply>) -> Apply {
    let mut out = Apply::default();
    let mut ops: BTreeMap<String, Option<ResourceDesired>> = BTreeMap::new();
    for a in applies {
        out.generation = a.generation;
        if a.pools_set {
            out.pools_set = true;
            out.pools = a.pools.clone();
        }
        for r in &a.resources {
            ops.insert(r.name.clone(), Some(r.clone()));
        }
        for n in &a.removed {
            ops.insert(n.clone(), None);
        }
    }
    for (name, op) in ops {
        match op {
            Some(r) => out.resources.push(r),
            None => out.removed.push(name),
        }
    }
    out
}

/// The part of a merged answer that concerns one of the merged deltas, so
/// each caller sees only its own objects' errors.
fn only_of(o: &Observed, a: &Apply) -> Observed {
    let mine: BTreeSet<&str> = a.resources.iter().map(|r| r.name.as_str()).chain(a.removed.iter().map(String::as_str)).collect();
    Observed {
        generation: o.generation,
        instance: o.instance.clone(),
        resources: o.resources.iter().filter(|r| mine.contains(r.name.as_str())).cloned().collect(),
        removed: o.removed.iter().filter(|r| mine.contains(r.name.as_str())).cloned().collect(),
        pools: o.pools.clone(),
    }
}

/// Fails every queued job: the node is not connected.
fn drain(rx: &mut mpsc::UnboundedReceiver<Job>, why: &str) {
    while let Ok(job) = rx.try_recv() {
        let _ = job.done.send(Err(why.to_string()));
    }
}

/// Waits before the next connection attempt: 1 s, doubling with every
/// failed attempt in a row up to 30 s, so unreachable nodes cost little.
async fn pause(link: &Link) {
    let failures = link.failures.fetch_add(1, Ordering::SeqCst).min(5);
    let delay = (RECONNECT * 2u32.pow(failures)).min(MAX_RECONNECT);
    tokio::select! {
        _ = tokio::time::sleep(delay) => {}
        _ = link.wake.notified() => {}
    }
}

/// The worker of one node's link.
/// Sends the node's whole desired state. The snapshot is taken under the
/// writer lock, so every later change is queued as a delta behind it; jobs
/// queued before it are answered with its result, which covers them.
async fn full_sync(
    state: &AppState,
    peer: &Peer,
    link: &Link,
    addr: Target,
    rx: &mut mpsc::UnboundedReceiver<Job>,
) -> Result<Observed, String> {
    let (apply, superseded) = {
        let _writer = state.writer().await;
        if link.stopped.load(Ordering::SeqCst) {
            return Err("the node was removed".into());
        }
        let c = state.read();
        let (pools, rscs) = state.links().desired(&c, &link.node_key);
        let generation = {
            let mut sent = lock(&link.sent);
            sent.generation += 1;
            sent.pools = pools.clone();
            sent.resources = rscs.iter().map(|r| (r.name.clone(), r.clone())).collect();
            sent.generation
        };
        // From now on changes to this node are queued to us.
        set_status(link, ConnStatus::Online, None);
        let mut superseded = Vec::new();
        while let Ok(job) = rx.try_recv() {
            superseded.push(job);
        }
        (Apply { generation, full: true, pools_set: true, pools, resources: rscs, removed: Vec::new() }, superseded)
    };
    let result = call::<Observed>(peer, addr, PATH_APPLY, serde_json::to_vec(&apply).ok(), APPLY_TIMEOUT).await;
    match result {
        Ok(o) => {
            {
                let mut v = link.view.write().unwrap_or_else(|e| e.into_inner());
                v.absorb(&o, true);
                v.synced = true;
            }
            for job in superseded {
                let _ = job.done.send(Ok(only_of(&o, &job.apply)));
            }
            Ok(o)
        }
        Err(e) => {
            let why = e.to_string();
            for job in superseded {
                let _ = job.done.send(Err(why.clone()));
            }
            Err(why)
        }
    }
}

/// Whether any object of an answer failed (the change is retried).
fn has_errors(o: &Observed) -> bool {
    o.resources.iter().chain(o.removed.iter()).any(|r| r.error.is_some()) || o.pools.iter().any(|p| p.error.is_some())
}

/// How long to wait before re-sending the full state after a failure;
/// doubled for every failed retry in a row, up to MAX_RETRY.
const RETRY: Duration = Duration::from_secs(10);
const MAX_RETRY: Duration = Duration::from_secs(300);

fn retry_after(failed_retries: u32) -> tokio::time::Instant {
    tokio::time::Instant::now() + (RETRY * 2u32.pow(failed_retries.min(5))).min(MAX_RETRY)
}

/// The worker of one node's link.
async fn run(state: AppState, peer: Peer, link: Arc<Link>, mut rx: mpsc::UnboundedReceiver<Job>) {
    while !link.stopped.load(Ordering::SeqCst) {
        let Some((name, addr)) = address(&state, &link.node_key) else {
            went_offline(&link, &mut rx, ConnStatus::Offline, "the node has no satellite interface");
            pause(&link).await;
            continue;
        };
        if addr.ssl && peer.tls.is_none() {
            if !link.warned_tls.swap(true, Ordering::SeqCst) {
                tracing::error!(node = %name, "the node's interface uses SSL but the controller has no satellite TLS certificate configured");
            }
            went_offline(&link, &mut rx, ConnStatus::Offline, "SSL interface without TLS configuration");
            pause(&link).await;
            continue;
        }
        let hello: Hello = match call(&peer, addr, PATH_HELLO, None, SHORT_TIMEOUT).await {
            Ok(h) => h,
            Err(e) => {
                let status = match e {
                    CallError::Status(401, _) => ConnStatus::AuthenticationError,
                    CallError::Status(409, _) => ConnStatus::VersionMismatch,
                    _ => ConnStatus::Offline,
                };
                went_offline(&link, &mut rx, status, status.as_str());
                pause(&link).await;
                continue;
            }
        };
        if !hello.node_name.eq_ignore_ascii_case(&name) {
            tracing::warn!(node = %name, satellite = %hello.node_name, addr = %addr.addr, "the satellite at this address is another node");
            went_offline(&link, &mut rx, ConnStatus::HostnameMismatch, "HOSTNAME_MISMATCH");
            set_status(&link, ConnStatus::HostnameMismatch, Some(hello));
            pause(&link).await;
            continue;
        }
        set_status(&link, ConnStatus::Connected, Some(hello.clone()));
        let mut failed_retries = 0u32;
        let mut retry_at = match full_sync(&state, &peer, &link, addr, &mut rx).await {
            Ok(o) => {
                link.failures.store(0, Ordering::SeqCst);
                has_errors(&o).then(|| retry_after(0))
            }
            Err(e) => {
                tracing::warn!(node = %name, "full apply failed: {e}");
                went_offline(&link, &mut rx, ConnStatus::Offline, "the full apply failed");
                pause(&link).await;
                continue;
            }
        };
        // Serve deltas and heartbeats until the link breaks.
        loop {
            if link.stopped.load(Ordering::SeqCst) {
                return;
            }
            tokio::select! {
                job = rx.recv() => {
                    let Some(job) = job else { return };
                    // Everything queued behind it goes in the same request:
                    // the satellite works on the resources in parallel.
                    let mut jobs = vec![job];
                    while let Ok(more) = rx.try_recv() {
                        jobs.push(more);
                    }
                    let apply = merge(jobs.iter().map(|j| &j.apply));
                    match call::<Observed>(&peer, addr, PATH_APPLY, serde_json::to_vec(&apply).ok(), APPLY_TIMEOUT).await {
                        Ok(o) if o.instance == hello.instance => {
                            link.view.write().unwrap_or_else(|e| e.into_inner()).absorb(&o, false);
                            if has_errors(&o) {
                                retry_at.get_or_insert(retry_after(failed_retries));
                            }
                            for j in jobs {
                                let _ = j.done.send(Ok(only_of(&o, &j.apply)));
                            }
                        }
                        other => {
                            let why = match other {
                                Ok(_) => "the satellite restarted".to_string(),
                                Err(e) => e.to_string(),
                            };
                            for j in jobs {
                                let _ = j.done.send(Err(why.clone()));
                            }
                            break;
                        }
                    }
                }
                _ = tokio::time::sleep(HEARTBEAT) => {
                    if retry_at.is_some_and(|t| t <= tokio::time::Instant::now()) {
                        // Something failed before: send everything again.
                        match full_sync(&state, &peer, &link, addr, &mut rx).await {
                            Ok(o) if has_errors(&o) => {
                                failed_retries += 1;
                                retry_at = Some(retry_after(failed_retries));
                            }
                            Ok(_) => {
                                failed_retries = 0;
                                retry_at = None;
                            }
                            Err(_) => break,
                        }
                        continue;
                    }
                    match call::<Observed>(&peer, addr, PATH_OBSERVE, None, SHORT_TIMEOUT).await {
                        Ok(o) if o.instance == hello.instance => link.view.write().unwrap_or_else(|e| e.into_inner()).absorb(&o, true),
                        Ok(_) => {
                            tracing::info!(node = %name, "satellite restarted; sending its full state again");
                            break;
                        }
                        Err(_) => break,
                    }
                }
                _ = link.wake.notified() => {}
            }
        }
        went_offline(&link, &mut rx, ConnStatus::Offline, "the satellite connection was lost");
    }
}

/// Marks the link down: nothing observed is trusted any more, and queued
/// jobs are answered (their changes go out with the next full apply).
fn went_offline(link: &Link, rx: &mut mpsc::UnboundedReceiver<Job>, status: ConnStatus, why: &str) {
    {
        let mut v = link.view.write().unwrap_or_else(|e| e.into_inner());
        v.synced = false;
        v.resources.clear();
        v.pools.clear();
    }
    set_status(link, status, None);
    drain(rx, why);
}

#[cfg(test)]
mod tests {
    use cairn_proto::VolumeDesired;

    use super::*;

    fn rd(name: &str, size: i64) -> ResourceDesired {
        ResourceDesired {
            name: name.into(),
            diskless: false,
            volumes: vec![VolumeDesired { number: 0, id: "ab".into(), size_kib: size, pool: "p".into(), ..Default::default() }],
            ..Default::default()
        }
    }

    #[test]
    fn merged_deltas_keep_the_last_word_per_resource() {
        let a1 = Apply { generation: 1, resources: vec![rd("a", 1), rd("b", 1)], ..Default::default() };
        let a2 = Apply { generation: 2, resources: vec![rd("a", 2)], removed: vec!["b".into()], ..Default::default() };
        let a3 = Apply { generation: 3, resources: vec![rd("b", 3)], removed: vec!["c".into()], ..Default::default() };
        let m = merge([&a1, &a2, &a3].into_iter());
        assert_eq!(m.generation, 3);
        assert_eq!(m.resources, vec![rd("a", 2), rd("b", 3)]);
        assert_eq!(m.removed, vec!["c".to_string()]);
        assert!(!m.full);
    }

    #[test]
    fn a_change_reports_only_the_snapshot_failures_it_asked_for() {
        let failed = |m: &str| cairn_proto::ObjectError { message: m.into(), cause: Some("cp failed".into()), details: None };
        let answer = Observed {
            resources: vec![ResourceObserved {
                name: "web".into(),
                snapshot_errors: [("old".to_string(), failed("old failed")), ("new".to_string(), failed("new failed"))].into(),
                ..Default::default()
            }],
            ..Default::default()
        };
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let ask = |new: &[&str]| {
            let (tx, rx) = oneshot::channel();
            tx.send(Ok(answer.clone())).unwrap();
            let new_snapshots = new.iter().map(|s| ("web".to_string(), s.to_string())).collect();
            rt.block_on(collect(vec![Pending { node: "n1".into(), new_snapshots, rx }]))
        };
        // A resize of web (no new snapshot): no error at all.
        assert!(ask(&[]).is_empty());
        // Taking "new": its failure, as a snapshot error, and nothing of "old".
        let out = ask(&["new"]);
        assert_eq!(out.len(), 1, "{out:?}");
        assert!(out[0].message.contains("new failed") && out[0].cause.as_deref() == Some("cp failed"), "{:?}", out[0]);
        assert_eq!(out[0].ret_code & rc::MASK_SNAPSHOT, rc::MASK_SNAPSHOT);
        assert!(out[0].ret_code < 0, "an error");
    }

    #[test]
    fn each_caller_sees_only_its_own_results() {
        let o = Observed {
            resources: vec![
                ResourceObserved { name: "a".into(), ..Default::default() },
                ResourceObserved { name: "b".into(), ..Default::default() },
            ],
            ..Default::default()
        };
        let mine = only_of(&o, &Apply { resources: vec![rd("b", 1)], ..Default::default() });
        assert_eq!(mine.resources.iter().map(|r| r.name.as_str()).collect::<Vec<_>>(), ["b"]);
    }
}
