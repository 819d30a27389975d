//! Links to the satellites: one worker task per node that connects,
//! authenticates, sends the node's full desired state, then deltas in
//! order, and keeps what the satellite acknowledged and what it reports.
//!
//! Three states per node:
//! * desired: computed from the cluster (`cairn_domain::desired`) when
//!   needed, never stored here;
//! * acknowledged ([`ack::Ledger`]): per resource and for the pool list,
//!   the version the satellite answered for without an error, and what was
//!   handed to it and is not confirmed yet;
//! * observed ([`view::View`]): connection status, hello, and what the
//!   satellite last reported of its resources and pools (REST views,
//!   placement).
//!
//! Ordering: deltas are computed under the controller's order lock (held
//! by its committer while it applies committed changes and dispatches
//! them) against the ledger and queued to the node's worker, which sends
//! them one after the other. A (re)connect takes the same lock to snapshot
//! the full desired state (committed state only), so no change falls between a full apply and the
//! deltas after it; the worker's retries are computed under that lock too
//! and queued behind the deltas already waiting.
//!
//! Modules: `transport` (the HTTP client), `worker` (the per-node task),
//! `dispatch` (deltas of a change and the answers for its request), `ack`,
//! `view`. The links never see `AppState`: they get the two handles they
//! need of it (the cluster and the order lock) when they are made.

mod ack;
mod dispatch;
pub mod transport;
mod view;
mod worker;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use parking_lot::{Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use cairn_domain::Cluster;
use cairn_domain::desired::desired_of_node;
use cairn_domain::name::key;
use cairn_domain::placement::{NodeObs, Observer};
use cairn_domain::snapshot::NodeSnapState;
use cairn_domain::storage_pool::PoolCapacity;
use cairn_proto::{Hello, Observed, PoolDesired, ResourceDesired, ResourceObserved};
use serde::de::DeserializeOwned;
use tokio::sync::{Notify, mpsc, oneshot};

use crate::crypto::MasterKey;
use crate::events::Events;
use crate::shared::SharedCluster;
pub use dispatch::{Pending, collect};
pub use transport::{CallError, HttpTransport, Target, Transport, client_tls};
pub use view::ConnStatus;

/// How often a connected satellite is asked for its state, at most.
pub const HEARTBEAT: Duration = Duration::from_secs(2);
/// How long a satellite may hold an observation request while nothing
/// changes (see `worker::serve`).
pub const OBSERVE_HOLD: Duration = Duration::from_secs(10);
/// Time a satellite may take to apply a change.
pub const APPLY_TIMEOUT: Duration = Duration::from_secs(300);
/// Time a satellite may take for a hello or an observation.
pub const SHORT_TIMEOUT: Duration = Duration::from_secs(10);

/// Exponential back-off, the one policy of the links: `first`, doubled
/// for every failure in a row, never more than `max`. Reconnects use it
/// (1 s to 30 s: unreachable nodes cost little) and so do retries of
/// what a satellite failed to apply (10 s to 5 min: a failing command is
/// not run in a tight loop). No jitter: each node has one worker, and
/// failures of different nodes do not come in lockstep.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    first: Duration,
    max: Duration,
    failures: u32,
}

impl Backoff {
    pub const fn new(first: Duration, max: Duration) -> Backoff {
        Backoff { first, max, failures: 0 }
    }

    /// The pause after the failures counted so far.
    pub fn delay(&self) -> Duration {
        self.first.saturating_mul(1 << self.failures.min(16)).min(self.max)
    }

    /// Counts a failure.
    pub fn bump(&mut self) {
        self.failures = self.failures.saturating_add(1);
    }

    /// The pause after this failure, counted for the next one.
    pub fn failed(&mut self) -> Duration {
        let d = self.delay();
        self.bump();
        d
    }

    pub fn reset(&mut self) {
        self.failures = 0;
    }
}

/// The links' clocks.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    pub heartbeat: Duration,
    /// The longest a satellite may hold an observation request.
    pub hold: Duration,
    pub reconnect: Backoff,
    pub retry: Backoff,
}

impl Default for Timing {
    fn default() -> Timing {
        Timing {
            heartbeat: HEARTBEAT,
            hold: OBSERVE_HOLD,
            reconnect: Backoff::new(Duration::from_secs(1), Duration::from_secs(30)),
            retry: Backoff::new(Duration::from_secs(10), Duration::from_secs(300)),
        }
    }
}

/// Why a change did not reach a satellite, or a request failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum LinkError {
    #[error("the node was removed")]
    Removed,
    #[error("the satellite restarted")]
    Restarted,
    #[error("the satellite is {}", .0.as_str())]
    NotOnline(ConnStatus),
    #[error("the node has no satellite interface")]
    NoInterface,
    #[error("the full apply failed: {0}")]
    FullApply(CallError),
    #[error("the satellite connection was lost: {0}")]
    Lost(CallError),
    #[error(transparent)]
    Call(#[from] CallError),
}

/// A change queued to a node's worker.
struct Job {
    apply: cairn_proto::Apply,
    /// Where the answer goes; None for the worker's own retries.
    done: Option<oneshot::Sender<Result<Observed, LinkError>>>,
}

/// One node's link.
struct Link {
    node_key: String,
    /// The node's name as created (for events).
    node_name: String,
    events: Arc<Events>,
    view: RwLock<View>,
    ledger: Mutex<Ledger>,
    tx: mpsc::UnboundedSender<Job>,
    stopped: AtomicBool,
    warned_tls: AtomicBool,
    wake: Notify,
    /// Shared by all links: bumped whenever a view changes.
    changes: Arc<AtomicU64>,
}

use ack::Ledger;
use view::View;

impl Link {
    fn view(&self) -> RwLockReadGuard<'_, View> {
        self.view.read()
    }

    /// What the satellite reported of a resource (upper-case key), while
    /// the view is current.
    fn observed(&self, rsc_key: &str) -> Option<Arc<ResourceObserved>> {
        let v = self.view();
        if !v.current() {
            return None;
        }
        v.resources.get(rsc_key).cloned()
    }

    /// The view to change; when the guard goes, the may-promote values
    /// that changed are published (LINSTOR's `may-promote-change`).
    fn view_mut(&self) -> ViewMut<'_> {
        let guard = self.view.write();
        let before = guard.may_promote();
        ViewMut { link: self, guard, before }
    }
}

/// A write guard of a link's view that publishes may-promote changes
/// when it goes (publishing never waits for subscribers).
struct ViewMut<'a> {
    link: &'a Link,
    guard: RwLockWriteGuard<'a, View>,
    before: crate::events::PromoteView,
}

impl std::ops::Deref for ViewMut<'_> {
    type Target = View;
    fn deref(&self) -> &View {
        &self.guard
    }
}

impl std::ops::DerefMut for ViewMut<'_> {
    fn deref_mut(&mut self) -> &mut View {
        &mut self.guard
    }
}

impl Drop for ViewMut<'_> {
    fn drop(&mut self) {
        self.link.changes.fetch_add(1, Ordering::Relaxed);
        let after = self.guard.may_promote();
        for c in crate::events::promotion_changes(&self.link.node_name, &self.before, &after) {
            self.link.events.may_promote(c);
        }
    }
}

/// What the workers need of the controller: the cluster (to compute a
/// node's desired state and find its address), the order lock (taken to
/// snapshot a full state or a retry, so no change falls between), the
/// master key (LUKS secrets in the desired state), the transport.
struct Host {
    cluster: SharedCluster,
    order: Arc<tokio::sync::Mutex<()>>,
    master: RwLock<Option<MasterKey>>,
    /// LUKS keys go to satellites on PLAIN links too (the operator's
    /// `--allow-plain-luks-keys`); else only over SSL.
    plain_luks_keys: AtomicBool,
    transport: Arc<dyn Transport>,
    timing: Timing,
    events: Arc<Events>,
    /// How many times any link's view changed (see [`Links::changes`]).
    changes: Arc<AtomicU64>,
}

impl Host {
    fn read(&self) -> Arc<Cluster> {
        self.cluster.get()
    }

    fn master(&self) -> Option<MasterKey> {
        self.master.read().clone()
    }

    /// A node's desired state, with LUKS keys while the master key is known.
    fn desired(&self, cluster: &Cluster, node_key: &str) -> (Vec<PoolDesired>, Vec<ResourceDesired>) {
        self.desired_of(cluster, node_key, None)
    }

    /// The pools and, with `only`, just the resources of those
    /// definitions (upper-case keys).
    fn desired_of(&self, cluster: &Cluster, node_key: &str, only: Option<&BTreeSet<String>>) -> (Vec<PoolDesired>, Vec<ResourceDesired>) {
        let master = self.master();
        let unseal = |sealed: &str| {
            master.as_ref().and_then(|m| m.open(sealed).map_err(|e| tracing::error!("cannot open a LUKS volume secret: {e}")).ok())
        };
        let (pools, mut rscs) = desired_of_node(cluster, node_key, only, &unseal);
        let plain = !self.target(node_key).is_some_and(|(_, t)| t.ssl);
        if plain && !self.plain_luks_keys.load(Ordering::SeqCst) {
            withhold_luks_keys(&mut rscs);
        }
        (pools, rscs)
    }

    /// The node's name and where its satellite listens: its active
    /// interface with a satellite port, else any with one.
    fn target(&self, node_key: &str) -> Option<(String, Target)> {
        let c = self.read();
        let n = c.nodes.get(node_key)?;
        let nif = n
            .net_interfaces
            .iter()
            .find(|i| i.is_active && i.satellite_port.is_some())
            .or_else(|| n.net_interfaces.iter().find(|i| i.satellite_port.is_some()))?;
        let ssl = nif.satellite_encryption_type.as_deref() == Some("SSL");
        Some((n.name.clone(), Target { addr: std::net::SocketAddr::new(nif.address, nif.satellite_port?), ssl }))
    }
}

/// Why a LUKS key is not sent over a PLAIN link (the satellite reports it
/// as the volume's error).
pub const LUKS_KEY_WITHHELD: &str = "the controller did not send the volume's LUKS passphrase: the link to this satellite is PLAIN (not \
     encrypted). Give the node an SSL interface (mutual TLS, --satellite-tls-cert/-key/-ca on the controller), or start the \
     controller with --allow-plain-luks-keys to send keys over PLAIN links";

/// Takes the LUKS keys out of a desired state bound for a PLAIN link,
/// saying why in their place.
pub fn withhold_luks_keys(rscs: &mut [ResourceDesired]) {
    for l in rscs.iter_mut().flat_map(|r| r.volumes.iter_mut()).filter_map(|v| v.luks.as_mut()) {
        let previous = std::mem::take(&mut l.previous_keys);
        if l.key.take().is_some() || !previous.is_empty() {
            l.withheld = Some(LUKS_KEY_WITHHELD.to_string());
        }
    }
}

/// All links, by node key.
pub struct Links {
    host: Arc<Host>,
    /// Copied on write: a reader of many resources takes the whole map
    /// once ([`Links::snapshot`]) instead of the lock per resource.
    links: Mutex<Arc<BTreeMap<String, Arc<Link>>>>,
}

/// The links as they were when taken ([`Links::snapshot`]): a list of
/// many resources reads their observed state through it, with no lock
/// shared with other readers or the links' changes but each view's own
/// (briefly, to clone an `Arc`).
pub struct LinksSnapshot(Arc<BTreeMap<String, Arc<Link>>>);

impl LinksSnapshot {
    /// The observed state of a resource (upper-case key) on a node (key).
    pub fn resource(&self, node_key: &str, rsc_key: &str) -> Option<Arc<ResourceObserved>> {
        self.0.get(node_key)?.observed(rsc_key)
    }
}

impl Links {
    /// `cluster` and `order` are the controller's own (see [`Host`]).
    pub fn new(cluster: SharedCluster, order: Arc<tokio::sync::Mutex<()>>, transport: Arc<dyn Transport>, timing: Timing) -> Links {
        let events = Arc::new(Events::default());
        Links {
            host: Arc::new(Host {
                cluster,
                order,
                master: RwLock::new(None),
                plain_luks_keys: AtomicBool::new(false),
                transport,
                timing,
                events,
                changes: Arc::new(AtomicU64::new(0)),
            }),
            links: Mutex::new(Arc::new(BTreeMap::new())),
        }
    }

    /// A number that grows whenever what any satellite reported (or its
    /// connection state) changes in the controller's view; equal numbers
    /// mean nothing observed changed in between. Lets the once-a-second
    /// follow-ups skip their scans of the cluster when idle.
    pub fn changes(&self) -> u64 {
        self.host.changes.load(Ordering::Relaxed)
    }

    /// The event streams' hub.
    pub fn events(&self) -> &Arc<Events> {
        &self.host.events
    }

    /// Every resource's may-promote value on a node as the controller sees
    /// it (null while unknown).
    pub fn may_promote(&self, node_key: &str, rsc: &str) -> Option<bool> {
        self.resource(node_key, rsc).and_then(|o| o.drbd.as_ref().and_then(|d| d.may_promote))
    }

    /// The master key, if the passphrase was created or entered.
    pub fn master(&self) -> Option<MasterKey> {
        self.host.master()
    }

    /// Whether LUKS keys may go to satellites whose link is not
    /// encrypted (see [`withhold_luks_keys`]).
    pub fn allow_plain_luks_keys(&self, allow: bool) {
        self.host.plain_luks_keys.store(allow, Ordering::SeqCst);
    }

    pub fn set_master(&self, key: MasterKey) {
        *self.host.master.write() = Some(key);
    }

    fn get(&self, node_key: &str) -> Option<Arc<Link>> {
        self.links.lock().get(node_key).cloned()
    }

    /// Starts a worker for every satellite node and stops those of deleted
    /// nodes. Call within the runtime.
    pub fn reconcile(&self, cluster: &Cluster) {
        let wanted: BTreeSet<String> = cluster.nodes.iter().filter(|(_, n)| n.node_type.has_satellite()).map(|(k, _)| k.clone()).collect();
        let mut guard = self.links.lock();
        let links = Arc::make_mut(&mut guard);
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
            let node_name = cluster.nodes.get(&k).map(|n| n.name.clone()).unwrap_or_else(|| k.clone());
            let link = Arc::new(Link {
                node_key: k.clone(),
                node_name,
                events: self.host.events.clone(),
                view: RwLock::new(View::default()),
                ledger: Mutex::new(Ledger::default()),
                tx,
                stopped: AtomicBool::new(false),
                warned_tls: AtomicBool::new(false),
                wake: Notify::new(),
                changes: self.host.changes.clone(),
            });
            links.insert(k, link.clone());
            tokio::spawn(worker::run(self.host.clone(), link, rx));
        }
    }

    /// Drops a node's link and starts a fresh one, which connects anew
    /// (hello, full state) as after a controller restart. False when the
    /// node has no link (no satellite). Call within the runtime.
    pub fn reconnect(&self, cluster: &Cluster, node_key: &str) -> bool {
        let Some(old) = Arc::make_mut(&mut self.links.lock()).remove(node_key) else { return false };
        old.stopped.store(true, Ordering::SeqCst);
        old.wake.notify_one();
        self.reconcile(cluster);
        true
    }

    /// `ONLINE` only once the node's full state was applied; `CONNECTED`
    /// while that is under way.
    pub fn connection_status(&self, node_key: &str) -> &'static str {
        self.status(node_key).as_str()
    }

    fn status(&self, node_key: &str) -> ConnStatus {
        let Some(l) = self.get(node_key) else { return ConnStatus::Offline };
        let v = l.view();
        if v.status == ConnStatus::Online && !v.synced { ConnStatus::Connected } else { v.status }
    }

    pub fn hello(&self, node_key: &str) -> Option<Hello> {
        self.get(node_key).and_then(|l| l.view().hello.clone())
    }

    /// The observed state of one resource on a node.
    pub fn resource(&self, node_key: &str, rsc: &str) -> Option<Arc<ResourceObserved>> {
        self.get(node_key)?.observed(&key(rsc))
    }

    /// Every link as it is now, for replies that read many resources.
    pub fn snapshot(&self) -> LinksSnapshot {
        LinksSnapshot(self.links.lock().clone())
    }

    /// The sizes (KiB, by volume number) of the version of a resource
    /// the node's satellite acknowledged.
    pub fn acknowledged_sizes(&self, node_key: &str, rsc: &str) -> Option<Vec<(u32, i64)>> {
        let l = self.get(node_key)?;
        l.ledger.lock().acked(rsc).map(|v| v.volumes.iter().map(|v| (v.number, v.size_kib)).collect())
    }

    /// Whether the node's satellite found that the pool can take snapshots
    /// (FILE_THIN: reflinks); None while unknown.
    /// Why the node's satellite cannot use a pool, if it reported so.
    pub fn pool_error(&self, node_key: &str, pool: &str) -> Option<cairn_proto::ObjectError> {
        let l = self.get(node_key)?;
        let v = l.view();
        v.pools.get(&key(pool)).and_then(|p| p.error.clone())
    }

    pub fn pool_snapshots(&self, node_key: &str, pool: &str) -> Option<bool> {
        let l = self.get(node_key)?;
        let v = l.view();
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
        // Copy what is needed and let go of the view before taking the
        // ledger: the two are never held together.
        let (free_kib, total_kib, created) = {
            let v = l.view();
            let p = v.pools.get(&key(pool))?;
            // Shared handles, not copies: placement asks this of every
            // pool in the cluster for each request.
            let created: Vec<Arc<ResourceObserved>> = v
                .resources
                .values()
                .filter(|r| r.volumes.iter().any(|o| o.device_path.is_some() && o.usable_kib.is_some()))
                .cloned()
                .collect();
            (p.free_kib?, p.total_kib?, created)
        };
        // Volumes of this pool the satellite has reported as created.
        let ledger = l.ledger.lock();
        let mut present_kib = 0i64;
        for r in &created {
            let Some(d) = ledger.latest(&r.name) else { continue };
            for o in r.volumes.iter().filter(|o| o.device_path.is_some()) {
                if let Some(kib) = o.usable_kib
                    && d.volumes.iter().any(|dv| dv.number == o.number && dv.pool.eq_ignore_ascii_case(pool))
                {
                    present_kib = present_kib.saturating_add(kib);
                }
            }
        }
        Some(PoolCapacity { free_kib, total_kib, present_kib })
    }

    /// A request to a node's satellite outside the apply stream (physical
    /// storage): only while it is online.
    pub async fn request<T: DeserializeOwned>(
        &self,
        node_key: &str,
        path: &'static str,
        body: Option<Vec<u8>>,
        timeout: Duration,
    ) -> Result<T, LinkError> {
        let status = self.status(node_key);
        if status != ConnStatus::Online {
            return Err(LinkError::NotOnline(status));
        }
        let (_, target) = self.host.target(node_key).ok_or(LinkError::NoInterface)?;
        let bytes = self.host.transport.call(target, path, body, timeout).await?;
        Ok(transport::decode(&bytes)?)
    }
}

impl Observer for Links {
    fn node(&self, node_key: &str) -> NodeObs {
        let Some(l) = self.get(node_key) else { return NodeObs::default() };
        let v = l.view();
        let Some(h) = v.hello.as_ref().filter(|_| v.current()) else { return NodeObs::default() };
        NodeObs {
            online: true,
            providers: h.providers.iter().filter(|p| p.supported).map(|p| p.kind.as_str().to_string()).collect(),
            layers: h.layers.iter().cloned().collect(),
        }
    }

    fn capacity(&self, node_key: &str, pool: &str) -> Option<PoolCapacity> {
        Links::capacity(self, node_key, pool)
    }

    fn capacity_figures(&self, node_key: &str, pool: &str) -> Option<PoolCapacity> {
        let l = self.get(node_key)?;
        let v = l.view();
        let p = v.pools.get(&key(pool))?;
        Some(PoolCapacity { free_kib: p.free_kib?, total_kib: p.total_kib?, present_kib: 0 })
    }

    fn in_use(&self, node_key: &str, rd: &str) -> bool {
        self.resource(node_key, rd).and_then(|o| o.drbd.clone()).is_some_and(|d| d.kernel && d.role == "Primary")
    }
}
