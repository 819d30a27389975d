//! Shared controller state: the in-memory cluster, the store, and the one
//! place where mutations are committed.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};

use std::time::{SystemTime, UNIX_EPOCH};

use cairn_domain::desired::{affected_nodes, resource_scope};
use cairn_domain::{Change, Cluster, Ctx, ObjKey, OpError, Outcome, time};
use cairn_store::{Store, StoreError};
use tokio::sync::{mpsc, oneshot};

use crate::links::{self, Links, Timing, Transport};
use crate::rest::error::ApiError;
use crate::rest::reply::Reply;
use crate::shared::SharedCluster;

/// Cheap to clone; every handler gets one.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

/// An [`AppState`] that ends with the controller.
#[derive(Clone)]
pub struct WeakState(std::sync::Weak<Inner>);

impl WeakState {
    pub fn upgrade(&self) -> Option<AppState> {
        self.0.upgrade().map(|inner| AppState { inner })
    }
}

struct Inner {
    /// Shared with the links, which read it to compute desired states.
    cluster: SharedCluster,
    store: Arc<dyn Store>,
    /// Serialises validation: each mutation is validated against the
    /// committed cluster plus every change queued before it.
    writer: tokio::sync::Mutex<Speculative>,
    /// Validated changes, in order, for the committer.
    queue: mpsc::UnboundedSender<Queued>,
    /// How many queued requests the committer has answered (applied or
    /// failed). Equal to [`Speculative::queued`] when nothing is in flight.
    settled: AtomicU64,
    /// Held by the committer while it applies a committed batch and
    /// dispatches it. Shared with the links: full applies and retries are
    /// snapshotted under it, so they see committed state and every later
    /// change reaches them as a delta behind the snapshot.
    order: Arc<tokio::sync::Mutex<()>>,
    links: Links,
    /// How the controller was started (for `GET /v1/controller/config`).
    settings: std::sync::OnceLock<crate::config::ControllerConfig>,
    /// Backup shipments running or failed since the controller started.
    backups: crate::rest::backups::Shipments,
    /// Shipments from other clusters this controller agreed to receive.
    receives: crate::rest::ship::Receives,
    /// The target resource definitions of restores running.
    restores: crate::rest::backups::Restores,
    /// How other controllers are reached over HTTPS (LINSTOR remotes):
    /// the system's roots and `--remote-tls-ca`.
    remote_tls: std::sync::OnceLock<Arc<rustls::ClientConfig>>,
    /// The backup scheduler's plan: next run of each enabled shipping.
    scheduler: crate::scheduler::Plan,
    /// The leader's lease (PostgreSQL): no write once it is gone.
    fence: std::sync::OnceLock<Arc<crate::leader::Fence>>,
    /// Numbers the controller's error reports.
    reporter: crate::reporter::Reporter,
}

/// What the writer lock guards.
#[derive(Default)]
struct Speculative {
    /// The committed cluster with every queued change applied; meaningful
    /// only while something is queued (`queued` ahead of `settled`).
    speculative: Option<Arc<Cluster>>,
    /// How many requests were queued, ever.
    queued: u64,
}

/// What a validated change needs on its way: the changes to commit and
/// apply, the nodes to send them to, and which of those it registers.
struct Work {
    changes: Vec<Change>,
    nodes: BTreeSet<String>,
    fresh: BTreeSet<String>,
}

/// The deltas queued to the satellites, and warnings for nodes offline.
type Dispatched = (Vec<links::Pending>, Vec<cairn_api::rc::ApiCallRc>);

/// One request in the committer's queue: its validated change, or the
/// error validation gave (answered in turn: it was validated against
/// changes queued before it, which must be durable first).
struct Queued {
    work: Result<Work, ApiError>,
    done: oneshot::Sender<Result<Dispatched, ApiError>>,
}

pub fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

fn new_ctx(master: Option<crate::crypto::MasterKey>) -> Ctx {
    let ctx = Ctx::new(now_ms(), || uuid::Uuid::new_v4().to_string());
    match master {
        Some(m) => ctx.with_luks(move || m.new_volume_secret().map_err(|e| tracing::error!("cannot make a LUKS secret: {e}")).ok()),
        None => ctx,
    }
}

impl AppState {
    /// Loads the cluster from the store and commits the default objects
    /// (`DfltRscGrp`, default pool definitions) if they are missing.
    /// `transport` reaches the satellites; `timing` is the links' clocks.
    pub async fn load(store: Arc<dyn Store>, transport: Arc<dyn Transport>, timing: Timing) -> Result<AppState, StoreError> {
        let s = store.clone();
        let cluster = tokio::task::spawn_blocking(move || -> Result<Cluster, StoreError> {
            let mut cluster = Cluster::from_objects(s.load()?);
            let seed = cluster.seed(&mut || uuid::Uuid::new_v4().to_string());
            s.commit(&seed)?;
            cluster.apply(seed);
            // A snapshot cut short by a stop between its steps leaves no
            // DRBD resource with its I/O suspended.
            let unfinished = cluster.finish_interrupted_snapshots().changes;
            if !unfinished.is_empty() {
                tracing::warn!(snapshots = unfinished.len(), "finishing snapshots whose taking was interrupted");
                s.commit(&unfinished)?;
                cluster.apply(unfinished);
            }
            Ok(cluster)
        })
        .await
        .map_err(|e| StoreError::Encode { kind: "cluster".into(), key: "load".into(), reason: e.to_string() })??;
        tracing::info!(store = %store.describe(), nodes = cluster.nodes.len(), resource_definitions = cluster.rsc_dfns.len(), resources = cluster.resources.len(), "cluster loaded");
        let cluster = SharedCluster::new(cluster);
        let order = Arc::new(tokio::sync::Mutex::new(()));
        let links = Links::new(cluster.clone(), order.clone(), transport, timing);
        let (queue, rx) = mpsc::unbounded_channel();
        let inner = Arc::new(Inner {
            cluster,
            store,
            writer: tokio::sync::Mutex::new(Speculative::default()),
            queue,
            settled: AtomicU64::new(0),
            order,
            links,
            settings: std::sync::OnceLock::new(),
            backups: Default::default(),
            receives: Default::default(),
            restores: Default::default(),
            remote_tls: std::sync::OnceLock::new(),
            scheduler: Default::default(),
            fence: std::sync::OnceLock::new(),
            reporter: crate::reporter::Reporter::new(now_ms()),
        });
        tokio::spawn(Inner::committer(Arc::downgrade(&inner), rx));
        let state = AppState { inner };
        // Start a link to every satellite node.
        state.inner.links.reconcile(&state.read());
        state.record_drbd_initialization();
        Ok(state)
    }

    /// Follows what satellites report about DRBD, checked every second
    /// (the task ends with the state):
    /// - the replicas chosen to make new DRBD volumes UpToDate: once one
    ///   reports its volume UpToDate, the volume definition gets
    ///   `DRBD_INITIALIZED`;
    /// - the node ids of deleted replicas: once a peer reports one
    ///   forgotten, it no longer waits for that peer.
    fn record_drbd_initialization(&self) {
        let weak = Arc::downgrade(&self.inner);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut offline_since = std::collections::BTreeMap::new();
            // The view's change count and the cluster the last complete
            // round saw: while neither moves, the round would find what it
            // found then (at 1,000 nodes a round walks every volume
            // definition), so it is skipped.
            let mut seen: Option<(u64, Arc<Cluster>)> = None;
            loop {
                tick.tick().await;
                let Some(inner) = weak.upgrade() else { return };
                let me = AppState { inner };
                let changes = me.links().changes();
                let c = me.read();
                if !seen.as_ref().is_some_and(|(n, last)| *n == changes && Arc::ptr_eq(last, &c)) {
                    seen = me.follow_drbd(&c).await.then_some((changes, c));
                }
                me.auto_evict(&mut offline_since).await;
            }
        });
    }

    /// One round of [`Self::record_drbd_initialization`] on the cluster
    /// `c`; false when a change could not be recorded (the next round
    /// tries again).
    async fn follow_drbd(&self, c: &Cluster) -> bool {
        let mut ok = true;
        let done: Vec<(String, u32)> = c
            .awaiting_drbd_init()
            .into_iter()
            .filter(|a| {
                self.links()
                    .resource(&a.node, &a.rd)
                    .and_then(|o| o.drbd.clone())
                    .is_some_and(|d| d.volumes.iter().any(|v| v.number == a.volume && v.disk == "UpToDate"))
            })
            .map(|a| (a.rd, a.volume))
            .collect();
        if !done.is_empty()
            && let Err(e) = self.mutate(200, move |c, _| Ok(c.drbd_initialized(&done))).await
        {
            tracing::warn!("cannot record initialized DRBD volumes: {e:?}");
            ok = false;
        }
        let forgot: Vec<cairn_domain::drbd_auto::Forget> = c
            .pending_forgets()
            .into_iter()
            .filter(|(rd, id, node)| self.links().resource(node, rd).and_then(|o| o.drbd.clone()).is_some_and(|d| d.forgotten.contains(id)))
            .collect();
        if !forgot.is_empty()
            && let Err(e) = self.mutate(200, move |c, _| Ok(c.peers_forgot(&forgot))).await
        {
            tracing::warn!("cannot record forgotten DRBD peers: {e:?}");
            ok = false;
        }
        self.record_disks_added(c).await && ok
    }

    /// Replicas that got a disk by toggle-disk and now report every volume
    /// UpToDate lose `DISK_ADDING`; one migrated from another node has that
    /// node's replica deleted once it is not Primary there.
    async fn record_disks_added(&self, c: &Cluster) -> bool {
        let waiting = c.awaiting_disk_added();
        let done: Vec<(String, String)> = waiting
            .into_iter()
            .filter(|(rd, node, vols)| {
                self.links()
                    .resource(node, rd)
                    .and_then(|o| o.drbd.clone())
                    .is_some_and(|d| d.kernel && vols.iter().all(|nr| d.volumes.iter().any(|v| v.number == *nr && v.disk == "UpToDate")))
            })
            .map(|(rd, node, _)| (rd, node))
            .collect();
        if done.is_empty() {
            return true;
        }
        let links = self.links();
        let in_use = |rd: &str, node: &str| links.resource(node, rd).and_then(|o| o.drbd.clone()).is_some_and(|d| d.role == "Primary");
        if let Err(e) = self.mutate(200, |c, _| Ok(c.disk_added(&done, &in_use))).await {
            tracing::warn!("cannot record disks added by toggle-disk: {e:?}");
            return false;
        }
        true
    }

    /// Auto-evict: notes since when each satellite node is offline (from
    /// the controller's start at the earliest, as LINSTOR's reconnector)
    /// and declares evicted those the domain's rules pick.
    async fn auto_evict(&self, offline_since: &mut std::collections::BTreeMap<String, i64>) {
        let now = now_ms();
        let evict = {
            let c = self.read();
            let offline: std::collections::BTreeSet<String> = c
                .nodes
                .iter()
                .filter(|(k, n)| n.node_type.has_satellite() && self.links().connection_status(k) != "ONLINE")
                .map(|(k, _)| k.clone())
                .collect();
            offline_since.retain(|k, _| offline.contains(k));
            for k in offline {
                offline_since.entry(k).or_insert(now);
            }
            c.nodes_to_evict(offline_since, now)
        };
        for node in evict {
            tracing::warn!(node = %node, "node offline for too long: declaring it evicted and replacing its replicas");
            match self.mutate(200, |c, ctx| c.declare_evicted(&node, self.links(), ctx)).await {
                Ok(r) => {
                    for e in r.entries.iter().filter(|e| e.is_error()) {
                        tracing::warn!(node = %node, "auto-evict: {}", e.message);
                    }
                }
                Err(e) => tracing::warn!(node = %node, "cannot evict: {e:?}"),
            }
        }
    }

    /// Records how the controller was started; the first call stays.
    pub fn set_settings(&self, cfg: crate::config::ControllerConfig) {
        let _ = self.inner.settings.set(cfg);
    }

    /// Refuses every write once `fence` says the leader lease is gone
    /// (active/standby controllers on PostgreSQL); the first call stays.
    pub fn set_fence(&self, fence: Arc<crate::leader::Fence>) {
        let _ = self.inner.fence.set(fence);
    }

    /// How the controller was started, when known.
    pub fn settings(&self) -> Option<&crate::config::ControllerConfig> {
        self.inner.settings.get()
    }

    /// The database.
    pub fn store(&self) -> Arc<dyn Store> {
        self.inner.store.clone()
    }

    /// Backup shipments running or failed since the controller started.
    pub fn backups(&self) -> &crate::rest::backups::Shipments {
        &self.inner.backups
    }

    /// The target resource definitions of restores running.
    pub fn restores(&self) -> &crate::rest::backups::Restores {
        &self.inner.restores
    }

    /// Shipments from other clusters this controller waits for.
    pub fn receives(&self) -> &crate::rest::ship::Receives {
        &self.inner.receives
    }

    /// Sets how other controllers are reached over HTTPS; the first call
    /// stays.
    pub fn set_remote_tls(&self, config: Arc<rustls::ClientConfig>) {
        let _ = self.inner.remote_tls.set(config);
    }

    /// How other controllers are reached over HTTPS: as set at start, else
    /// the system's roots alone.
    pub fn remote_tls(&self) -> Arc<rustls::ClientConfig> {
        self.inner
            .remote_tls
            .get_or_init(|| {
                crate::rest::ship::remote_tls_config(None).unwrap_or_else(|e| {
                    tracing::warn!("no system roots for HTTPS to other controllers: {e}");
                    crate::rest::ship::empty_tls_config()
                })
            })
            .clone()
    }

    pub fn scheduler(&self) -> &crate::scheduler::Plan {
        &self.inner.scheduler
    }

    /// A handle that does not keep the state alive (background tasks).
    pub fn downgrade(&self) -> WeakState {
        WeakState(Arc::downgrade(&self.inner))
    }

    /// The satellite links (observed state).
    pub fn links(&self) -> &Links {
        &self.inner.links
    }

    /// Records an error report of `p`, committed with the cluster's
    /// objects; its id. When the store fails (the failure reported may be
    /// the store's own) the report is kept in memory only, until the
    /// controller stops, and the log says so.
    pub async fn report(&self, p: cairn_proto::error_report::Problem) -> Option<String> {
        let r = self.inner.reporter.make(now_ms(), &p);
        let id = r.id.clone();
        tracing::error!(report = %id, exception = %p.exception, "{}", cairn_proto::error_report::redact(&p.message));
        let store = self.inner.store.clone();
        let changes = self.read().add_error_report(r).changes;
        // Straight to the store, not through the committer: a report is no
        // desired state, and the failure it records may be the committer's.
        let committed = {
            let changes = changes.clone();
            tokio::task::spawn_blocking(move || store.commit(&changes)).await
        };
        match committed {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!(report = %id, "cannot store the error report, keeping it in memory only: {e}"),
            Err(e) => tracing::error!(report = %id, "cannot store the error report, keeping it in memory only: {e}"),
        }
        self.inner.cluster.apply(changes);
        Some(id)
    }

    /// Deletes the controller's reports that `f` matches; LINSTOR's
    /// entries for the answer (none when nothing matched).
    pub async fn delete_reports(&self, f: &cairn_proto::ErrorReportFilter) -> Result<Vec<cairn_api::rc::ApiCallRc>, ApiError> {
        let out = self.read().delete_error_reports(f);
        if out.changes.is_empty() {
            return Ok(out.replies);
        }
        let store = self.inner.store.clone();
        let changes = out.changes.clone();
        tokio::task::spawn_blocking(move || store.commit(&changes))
            .await
            .map_err(|e| ApiError::Internal(e.to_string()))?
            .map_err(|e| ApiError::Store(Arc::new(e)))?;
        self.inner.cluster.apply(out.changes);
        Ok(out.replies)
    }

    /// The cluster as it is now: an immutable snapshot, held by the
    /// caller without blocking anyone (see [`SharedCluster`]). It holds
    /// committed changes only: a change is applied here after its batch is
    /// durable, never before.
    pub fn read(&self) -> Arc<Cluster> {
        self.inner.cluster.get()
    }

    /// Runs one mutation: compute the outcome against the cluster (the
    /// committed one plus every change queued before), commit it durably
    /// (in a batch with the changes queued alongside), then apply it in
    /// memory. Nothing is applied if the commit fails. Replies carry
    /// `created_at`.
    ///
    /// Then the change goes to the satellites of the nodes it touches, and
    /// the call waits for their answers (wire rule W13: a resource's device
    /// path is known when its create returns). Their failures are folded
    /// into the replies; the stored intent stays and is retried on the next
    /// full apply.
    pub async fn mutate(&self, success: u16, op: impl FnOnce(&Cluster, &mut Ctx) -> Result<Outcome, OpError>) -> Result<Reply, ApiError> {
        let (mut replies, pending, stamp) = self.mutate_begin(op).await?;
        replies.extend(pending.await);
        for r in &mut replies {
            r.created_at = Some(stamp.clone());
        }
        Ok(Reply::new(cairn_api::rc::status_for(&replies, success), replies))
    }

    /// Like [`AppState::mutate`], but returns once the change is committed
    /// and handed to the links: the domain's replies, and a future of the
    /// satellites' answers to await later (a clone answers at once and
    /// follows the copies in the background).
    pub async fn mutate_detached(
        &self,
        op: impl FnOnce(&Cluster, &mut Ctx) -> Result<Outcome, OpError>,
    ) -> Result<(Vec<cairn_api::rc::ApiCallRc>, impl Future<Output = Vec<cairn_api::rc::ApiCallRc>> + Send + 'static), ApiError> {
        let (mut replies, pending, stamp) = self.mutate_begin(op).await?;
        for r in &mut replies {
            r.created_at = Some(stamp.clone());
        }
        Ok((replies, pending))
    }

    /// Requests queued and not answered by the committer yet.
    #[cfg(test)]
    pub(crate) fn in_flight(&self) -> u64 {
        let queued = self.inner.writer.try_lock().map(|w| w.queued).unwrap_or(u64::MAX);
        queued.saturating_sub(self.inner.settled.load(Ordering::SeqCst))
    }

    /// Validate and queue under the writer lock, then wait for the
    /// committer: the replies so far, the satellites' answers to come, the
    /// time stamp of the change.
    async fn mutate_begin(
        &self,
        op: impl FnOnce(&Cluster, &mut Ctx) -> Result<Outcome, OpError>,
    ) -> Result<(Vec<cairn_api::rc::ApiCallRc>, impl Future<Output = Vec<cairn_api::rc::ApiCallRc>> + Send + 'static, String), ApiError>
    {
        if let Some(fence) = self.inner.fence.get() {
            fence
                .check()
                .map_err(|e| ApiError::Status(503, e.to_string(), cairn_api::rc::MASK_ERROR | cairn_api::rc::FAIL_UNKNOWN_ERROR))?;
        }
        let mut ctx = new_ctx(self.inner.links.master());
        // No await between taking the lock and queueing: a client that goes
        // away cancels before validation or not at all, and what is queued
        // is the committer's to finish.
        let (answer, replies) = {
            let mut w = self.inner.writer.lock().await;
            let idle = w.queued == self.inner.settled.load(Ordering::SeqCst);
            let base = match w.speculative.take() {
                Some(s) if !idle => s,
                _ => self.read(),
            };
            let validated = self.validate(&base, op, &mut ctx);
            if idle && validated.as_ref().map_or(true, |(work, _)| work.changes.is_empty()) {
                // Nothing queued decided this answer, and there is nothing
                // to commit: answer at once.
                let (_, replies) = validated?;
                return Ok((replies, links::collect(Vec::new()), time::iso8601_utc(ctx.now_ms)));
            }
            let (work, replies) = match validated {
                Ok((work, replies)) => (Ok(work), replies),
                Err(e) => (Err(e), Vec::new()),
            };
            let mut next = base;
            if let Ok(work) = &work {
                Arc::make_mut(&mut next).apply(work.changes.iter().cloned());
            }
            let (done, answer) = oneshot::channel();
            self.inner.queue.send(Queued { work, done }).map_err(|_| ApiError::Internal("the committer is gone".into()))?;
            w.speculative = Some(next);
            w.queued += 1;
            (answer, replies)
        };
        let (pending, warnings) = answer.await.map_err(|_| ApiError::Internal("the committer dropped the change".into()))??;
        let mut replies = replies;
        replies.extend(warnings);
        Ok((replies, links::collect(pending), time::iso8601_utc(ctx.now_ms)))
    }

    /// Runs the operation and its follow-ups against `c`: what to commit
    /// and dispatch, and the domain's replies.
    fn validate(
        &self,
        c: &Cluster,
        op: impl FnOnce(&Cluster, &mut Ctx) -> Result<Outcome, OpError>,
        ctx: &mut Ctx,
    ) -> Result<(Work, Vec<cairn_api::rc::ApiCallRc>), ApiError> {
        let mut outcome = op(c, ctx)?;
        // DRBD bookkeeping (layer support, tiebreaker, quorum) joins the
        // same transaction.
        let follow = c.drbd_follow_up(&outcome, &self.inner.links, ctx)?;
        outcome.changes.extend(follow.changes);
        outcome.replies.extend(follow.replies);
        // Resource connections go with their resources.
        let cascade = c.rsc_conn_cascade(&outcome.changes);
        outcome.changes.extend(cascade);
        let nodes = affected_nodes(c, &outcome.changes);
        // Nodes this change registers: no satellite can be connected yet,
        // so there is nothing to warn about. A change of nodes alone
        // (properties, type, net interfaces) goes to the online
        // satellites only, without a warning for offline ones, as
        // LINSTOR's CtrlSatelliteUpdateCaller does for node updates.
        let node_level = !outcome.changes.is_empty() && outcome.changes.iter().all(|ch| matches!(ch.key(), ObjKey::Node(_)));
        let fresh: BTreeSet<String> = outcome
            .changes
            .iter()
            .filter_map(|ch| match ch.key() {
                ObjKey::Node(k) if !c.nodes.contains_key(&k) => Some(k),
                _ => None,
            })
            .chain(if node_level { nodes.clone() } else { BTreeSet::new() })
            .collect();
        let Outcome { changes, replies } = outcome;
        Ok((Work { changes, nodes, fresh }, replies))
    }
}

/// Most requests one transaction carries; more wait for the next one.
const MAX_BATCH: usize = 256;

impl Inner {
    /// The committer: takes what is queued, up to [`MAX_BATCH`] requests at
    /// a time, and commits, applies and dispatches it. Ends with the
    /// controller (when the queue's sender goes).
    async fn committer(weak: Weak<Inner>, mut rx: mpsc::UnboundedReceiver<Queued>) {
        while let Some(first) = rx.recv().await {
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(q) => batch.push(q),
                    Err(_) => break,
                }
            }
            let Some(inner) = weak.upgrade() else { return };
            inner.commit_batch(batch, &mut rx).await;
        }
    }

    /// One transaction for the whole batch. Then, in queue order: apply
    /// each change, dispatch it, answer its request. If the commit fails,
    /// every request of the batch and every one queued behind it (validated
    /// on top of it) fails with the store's error, and the next mutation is
    /// validated against the committed cluster again.
    async fn commit_batch(&self, mut batch: Vec<Queued>, rx: &mut mpsc::UnboundedReceiver<Queued>) {
        let mut all = Vec::new();
        let mut lens = Vec::with_capacity(batch.len());
        for q in &mut batch {
            lens.push(q.work.as_mut().map_or(0, |w| {
                let n = w.changes.len();
                all.append(&mut w.changes);
                n
            }));
        }
        let store = self.store.clone();
        let failure = match tokio::task::spawn_blocking(move || store.commit(&all).map(|()| all)).await {
            Ok(Ok(mut all)) => {
                for (q, n) in batch.iter_mut().zip(&lens).rev() {
                    if let Ok(w) = &mut q.work {
                        w.changes = all.split_off(all.len() - n);
                    }
                }
                None
            }
            Ok(Err(e)) => Some(Failure::Store(Arc::new(e))),
            Err(e) => Some(Failure::Internal(format!("commit task failed: {e}"))),
        };
        let Some(failure) = failure else {
            tracing::debug!(requests = batch.len(), changes = lens.iter().sum::<usize>(), "committed a batch");
            // The links snapshot a node's state under this lock: what they
            // see is committed and every later change reaches them as a
            // delta behind it.
            let _order = self.order.lock().await;
            for q in batch {
                let answer = q.work.map(|w| self.apply_and_dispatch(w));
                self.settled.fetch_add(1, Ordering::SeqCst);
                let _ = q.done.send(answer);
            }
            return;
        };
        tracing::error!(
            requests = batch.len(),
            "a batch of changes could not be committed; failing it and everything queued behind it: {}",
            failure.error()
        );
        for q in batch {
            self.settled.fetch_add(1, Ordering::SeqCst);
            let _ = q.done.send(Err(failure.error()));
        }
        // Under the writer lock nothing more is queued: drain what was,
        // and forget the speculative cluster they were validated against.
        let mut w = self.writer.lock().await;
        while let Ok(q) = rx.try_recv() {
            self.settled.fetch_add(1, Ordering::SeqCst);
            let _ = q.done.send(Err(failure.error()));
        }
        w.speculative = None;
    }

    /// Applies one committed change in memory and queues its deltas to the
    /// satellites. Call under the order lock, in queue order.
    fn apply_and_dispatch(&self, w: Work) -> Dispatched {
        let Work { changes, mut nodes, fresh } = w;
        let node_changed = changes.iter().any(|c| matches!(c.key(), ObjKey::Node(_)));
        let touched = changes.clone();
        let scope = resource_scope(&touched);
        self.cluster.apply(changes);
        let c = self.cluster.get();
        nodes.extend(affected_nodes(&c, &touched));
        if node_changed {
            self.links.reconcile(&c);
        }
        self.links.dispatch(&c, &nodes, &fresh, scope.as_ref())
    }
}

/// Why a batch failed; every request in it gets the same error.
enum Failure {
    Store(Arc<StoreError>),
    Internal(String),
}

impl Failure {
    fn error(&self) -> ApiError {
        match self {
            Failure::Store(e) => ApiError::Store(e.clone()),
            Failure::Internal(m) => ApiError::Internal(m.clone()),
        }
    }
}

impl AppState {
    /// Sends every online node what changed in its desired state without a
    /// stored change (the master passphrase was entered: LUKS keys can go
    /// out now) and waits for the answers.
    pub async fn redispatch_all(&self) -> Vec<cairn_api::rc::ApiCallRc> {
        let pending = {
            let _order = self.inner.order.lock().await;
            let c = self.read();
            let nodes: BTreeSet<String> = c.nodes.keys().cloned().collect();
            self.inner.links.dispatch(&c, &nodes, &nodes, None).0
        };
        // Waited for without the order lock: a link's retry may need it.
        links::collect(pending).await
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        ApiError::Store(Arc::new(e))
    }
}
