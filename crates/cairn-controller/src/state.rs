//! Shared controller state: the in-memory cluster, the store, and the one
//! place where mutations are committed.

use std::collections::BTreeSet;
use std::sync::Arc;

use std::time::{SystemTime, UNIX_EPOCH};

use cairn_domain::desired::{affected_nodes, resource_scope};
use cairn_domain::{Cluster, Ctx, ObjKey, OpError, Outcome, time};
use cairn_store::{Store, StoreError};

use crate::links::{self, Links, Timing, Transport};
use crate::rest::error::ApiError;
use crate::rest::reply::Reply;
use crate::shared::SharedCluster;

/// Cheap to clone; every handler gets one.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

struct Inner {
    /// Shared with the links, which read it to compute desired states.
    cluster: SharedCluster,
    store: Arc<dyn Store>,
    /// Serialises writers: validate, commit, apply happen as one step.
    /// Shared with the links (full applies and retries are snapshotted
    /// under it).
    writer: Arc<tokio::sync::Mutex<()>>,
    links: Links,
    /// How the controller was started (for `GET /v1/controller/config`).
    settings: std::sync::OnceLock<crate::config::ControllerConfig>,
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
        let writer = Arc::new(tokio::sync::Mutex::new(()));
        let links = Links::new(cluster.clone(), writer.clone(), transport, timing);
        let state = AppState { inner: Arc::new(Inner { cluster, store, writer, links, settings: std::sync::OnceLock::new() }) };
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
            loop {
                tick.tick().await;
                let Some(inner) = weak.upgrade() else { return };
                let me = AppState { inner };
                let done: Vec<(String, u32)> = me
                    .read()
                    .awaiting_drbd_init()
                    .into_iter()
                    .filter(|a| {
                        me.links()
                            .resource(&a.node, &a.rd)
                            .and_then(|o| o.drbd)
                            .is_some_and(|d| d.volumes.iter().any(|v| v.number == a.volume && v.disk == "UpToDate"))
                    })
                    .map(|a| (a.rd, a.volume))
                    .collect();
                if !done.is_empty()
                    && let Err(e) = me.mutate(200, move |c, _| Ok(c.drbd_initialized(&done))).await
                {
                    tracing::warn!("cannot record initialized DRBD volumes: {e:?}");
                }
                let forgot: Vec<cairn_domain::drbd_auto::Forget> = me
                    .read()
                    .pending_forgets()
                    .into_iter()
                    .filter(|(rd, id, node)| me.links().resource(node, rd).and_then(|o| o.drbd).is_some_and(|d| d.forgotten.contains(id)))
                    .collect();
                if !forgot.is_empty()
                    && let Err(e) = me.mutate(200, move |c, _| Ok(c.peers_forgot(&forgot))).await
                {
                    tracing::warn!("cannot record forgotten DRBD peers: {e:?}");
                }
                me.record_disks_added().await;
                me.auto_evict(&mut offline_since).await;
            }
        });
    }

    /// Replicas that got a disk by toggle-disk and now report every volume
    /// UpToDate lose `DISK_ADDING`; one migrated from another node has that
    /// node's replica deleted once it is not Primary there.
    async fn record_disks_added(&self) {
        let waiting = self.read().awaiting_disk_added();
        let done: Vec<(String, String)> = waiting
            .into_iter()
            .filter(|(rd, node, vols)| {
                self.links()
                    .resource(node, rd)
                    .and_then(|o| o.drbd)
                    .is_some_and(|d| d.kernel && vols.iter().all(|nr| d.volumes.iter().any(|v| v.number == *nr && v.disk == "UpToDate")))
            })
            .map(|(rd, node, _)| (rd, node))
            .collect();
        if done.is_empty() {
            return;
        }
        let links = self.links();
        let in_use = |rd: &str, node: &str| links.resource(node, rd).and_then(|o| o.drbd).is_some_and(|d| d.role == "Primary");
        if let Err(e) = self.mutate(200, |c, _| Ok(c.disk_added(&done, &in_use))).await {
            tracing::warn!("cannot record disks added by toggle-disk: {e:?}");
        }
    }

    /// Auto-evict: notes since when each satellite node is offline (from
    /// the controller's start at the earliest, as LINSTOR's reconnector)
    /// and declares evicted those the domain's rules pick.
    async fn auto_evict(&self, offline_since: &mut std::collections::BTreeMap<String, i64>) {
        let now = now_ms();
        let evict = {
            let c = self.read();
            let offline: Vec<String> = c
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

    /// How the controller was started, when known.
    pub fn settings(&self) -> Option<&crate::config::ControllerConfig> {
        self.inner.settings.get()
    }

    /// The database.
    pub fn store(&self) -> Arc<dyn Store> {
        self.inner.store.clone()
    }

    /// The satellite links (observed state).
    pub fn links(&self) -> &Links {
        &self.inner.links
    }

    /// The writer lock: held while a change is validated, committed and
    /// applied, and while a satellite link snapshots a node's full state.
    pub async fn writer(&self) -> tokio::sync::OwnedMutexGuard<()> {
        self.inner.writer.clone().lock_owned().await
    }

    /// The cluster as it is now: an immutable snapshot, held by the
    /// caller without blocking anyone (see [`SharedCluster`]).
    pub fn read(&self) -> Arc<Cluster> {
        self.inner.cluster.get()
    }

    /// Runs one mutation: compute the outcome against the current cluster,
    /// commit it durably, then apply it in memory. Nothing is applied if the
    /// commit fails. Replies carry `created_at`.
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

    /// Validate, commit, apply, dispatch: the replies so far, the
    /// satellites' answers to come, the time stamp of the change.
    async fn mutate_begin(
        &self,
        op: impl FnOnce(&Cluster, &mut Ctx) -> Result<Outcome, OpError>,
    ) -> Result<(Vec<cairn_api::rc::ApiCallRc>, impl Future<Output = Vec<cairn_api::rc::ApiCallRc>> + Send + 'static, String), ApiError>
    {
        let writer = self.writer().await;
        let mut ctx = new_ctx(self.inner.links.master());
        let (outcome, mut nodes, fresh) = {
            let c = self.read();
            let mut outcome = op(&c, &mut ctx)?;
            // DRBD bookkeeping (layer support, tiebreaker, quorum) joins the
            // same transaction.
            let follow = c.drbd_follow_up(&outcome, &self.inner.links, &mut ctx)?;
            outcome.changes.extend(follow.changes);
            outcome.replies.extend(follow.replies);
            // Resource connections go with their resources.
            let cascade = c.rsc_conn_cascade(&outcome.changes);
            outcome.changes.extend(cascade);
            let nodes = affected_nodes(&c, &outcome.changes);
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
            (outcome, nodes, fresh)
        };
        let Outcome { changes, mut replies } = outcome;
        // Commit, apply and dispatch run in a task of their own that owns the
        // writer lock: if the client goes away mid-way, the change still
        // lands in memory exactly as it landed in the database.
        let me = self.clone();
        let committed = tokio::spawn(async move {
            let _writer = writer;
            let store = me.inner.store.clone();
            let changes = tokio::task::spawn_blocking(move || store.commit(&changes).map(|()| changes))
                .await
                .map_err(|e| ApiError::Internal(format!("commit task failed: {e}")))??;
            let node_changed = changes.iter().any(|c| matches!(c.key(), ObjKey::Node(_)));
            let touched = changes.clone();
            let scope = resource_scope(&touched);
            me.inner.cluster.apply(changes);
            let c = me.read();
            nodes.extend(affected_nodes(&c, &touched));
            if node_changed {
                me.inner.links.reconcile(&c);
            }
            Ok::<_, ApiError>(me.inner.links.dispatch(&c, &nodes, &fresh, scope.as_ref()))
        });
        let (pending, warnings) = committed.await.map_err(|e| ApiError::Internal(format!("commit task failed: {e}")))??;
        replies.extend(warnings);
        Ok((replies, links::collect(pending), time::iso8601_utc(ctx.now_ms)))
    }
}

impl AppState {
    /// Sends every online node what changed in its desired state without a
    /// stored change (the master passphrase was entered: LUKS keys can go
    /// out now) and waits for the answers.
    pub async fn redispatch_all(&self) -> Vec<cairn_api::rc::ApiCallRc> {
        let pending = {
            let _writer = self.writer().await;
            let c = self.read();
            let nodes: BTreeSet<String> = c.nodes.keys().cloned().collect();
            self.inner.links.dispatch(&c, &nodes, &nodes, None).0
        };
        // Waited for without the writer lock: a link's retry may need it.
        links::collect(pending).await
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        ApiError::Store(e)
    }
}
