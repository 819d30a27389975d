//! Applying desired state. Each resource reconciles on its own: its own
//! task and its own lock, against the newest desired state of that
//! resource, so a slow or hung command holds up only the resource it
//! belongs to. The state lock guards the desired and observed maps only
//! and is never held across a command; observations never wait for an
//! apply. Storage goes through [`Provider`]s resolved once per pool
//! configuration: a pool that cannot be used fails only the resources
//! placed in it, with its reason on the pool.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use cairn_proto::{
    Apply, ObjectError, Observed, PoolDesired, PoolObserved, ProviderSupport, ResourceDesired, ResourceObserved, VolumeDesired,
    VolumeObserved,
};
use cairn_storage::drbd::gross_size_kib;
use cairn_storage::luks::{LUKS2_HEADER_KIB, Luks, LuksError};
use cairn_storage::provider::{CloneFrom, Provider, ResolveError, Tools, VolumeRef, VolumeSpec};
use cairn_storage::{Kib, Name, StorageError};

use crate::drbd::DrbdLayer;

/// A pool as configured, resolved into its provider (or why it cannot be).
#[derive(Clone)]
struct Pool {
    desired: PoolDesired,
    provider: Result<Arc<dyn Provider>, ObjectError>,
}

type Pools = BTreeMap<String, Pool>;

/// The satellite's desired state and what it last saw.
#[derive(Default)]
struct Desired {
    /// A full apply arrived since this process started.
    synced: bool,
    pools: Arc<Pools>,
    resources: BTreeMap<String, ResourceDesired>,
    /// The generation of the request that last set each resource (desired
    /// or removed): an older request that arrives late changes nothing.
    since: BTreeMap<String, u64>,
    /// The generation of the request that last set the pool list.
    pools_since: u64,
    /// The generation of the last full apply: the baseline for names
    /// `since` has no entry for (a delayed delta from before it changes
    /// nothing).
    full_since: u64,
    /// The volume ids each resource was last made with: other ids for a
    /// volume number mean a new incarnation (deleted and created again),
    /// and the old one is taken down completely first.
    made: BTreeMap<String, BTreeMap<u32, String>>,
    /// The rollback each resource last carried out: its token stays in
    /// the desired state, and is not checked (`lvs`, `zfs get`) again on
    /// every later apply. Forgotten at restart (checked once then).
    rolled_back: BTreeMap<String, String>,
    observed: BTreeMap<String, ResourceObserved>,
    /// The DRBD host name of each resource as last desired (a removal
    /// needs it).
    hosts: BTreeMap<String, String>,
    /// Pools that may hold volumes of each resource: those of its desired
    /// volumes, and those where a scan found it. A removal touches these
    /// only, never every pool.
    placed: BTreeMap<String, BTreeSet<String>>,
    generation: u64,
}

/// The storage tools and the LUKS layer, each running its commands.
pub struct Storage {
    pub tools: Tools,
    pub luks: Luks,
}

impl Storage {
    pub fn new(runner: Arc<dyn cairn_exec::CommandRunner>, timeout: std::time::Duration) -> Storage {
        use cairn_storage::{file::Files, lvm::Lvm, zfs::Zfs};
        Storage {
            tools: Tools {
                files: Files::new(runner.clone(), timeout),
                lvm: Lvm::new(runner.clone(), timeout),
                zfs: Zfs::new(runner.clone(), timeout),
            },
            luks: Luks::new(runner, timeout),
        }
    }
}

/// What one resource's reconciliation ended with.
enum Reconciled {
    Present(ResourceObserved),
    Removed(ResourceObserved),
}

/// Applies desired state with the storage providers and layers.
pub struct Applier {
    pub node_name: String,
    pub instance: String,
    tools: Tools,
    luks: Luks,
    providers: Vec<ProviderSupport>,
    /// The DRBD layer, or why this node cannot run it.
    drbd: Result<Arc<DrbdLayer>, Vec<String>>,
    /// Held only to read or change the maps, never across a command.
    state: parking_lot::Mutex<Desired>,
    /// One lock per resource, held while it reconciles.
    resource_locks: parking_lot::Mutex<BTreeMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Snapshots that could not be taken: not tried again while desired,
    /// not even after a restart (a snapshot taken later would hold other
    /// data than asked for); forgotten when the snapshot goes.
    failed_snapshots: parking_lot::Mutex<FailedSnapshots>,
    /// Capacities and allocated sizes as last measured, and the
    /// measurement under way: an observation waits for it at most
    /// [`MEASURE_WAIT`], so a slow or hung `vgs`/`lvs`/`df` never keeps the
    /// controller's heartbeat waiting.
    measured: parking_lot::Mutex<Measured>,
    measuring: tokio::sync::Mutex<Option<tokio::task::JoinHandle<Measured>>>,
    /// Applies under way: while there are any, observations answer with a
    /// measurement up to [`MEASURE_DEFER`] old rather than start one.
    applying: std::sync::atomic::AtomicUsize,
    /// Applies ended so far: a measurement older than the last one is
    /// renewed after [`MEASURE_AFTER_CHANGE`] instead of [`MEASURE_EVERY`].
    applied: std::sync::atomic::AtomicU64,
    /// External files the resources' definitions deploy.
    pub files: crate::ext_files::ExtFiles,
    /// Where FILE and FILE_THIN pools may be.
    pool_dirs: crate::pool_dirs::PoolDirs,
}

/// Counts an apply under way while it lives, and one more ended when it
/// goes.
struct Applying<'a>(&'a std::sync::atomic::AtomicUsize, &'a std::sync::atomic::AtomicU64);

impl<'a> Applying<'a> {
    fn new(n: &'a std::sync::atomic::AtomicUsize, ended: &'a std::sync::atomic::AtomicU64) -> Self {
        n.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Applying(n, ended)
    }
}

impl Drop for Applying<'_> {
    fn drop(&mut self) {
        self.1.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.0.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

/// How old a measurement may be that answers while applies are under
/// way (their LVM commands would otherwise queue behind `vgs`/`lvs` on the
/// volume group's lock).
const MEASURE_DEFER: std::time::Duration = std::time::Duration::from_secs(10);

/// How long an observation waits for fresh capacities before it answers
/// with the last ones.
const MEASURE_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// What the pools' commands said: capacity per pool, allocated KiB per
/// (resource, volume).
#[derive(Debug, Clone, Default)]
struct Measured {
    pools: BTreeMap<String, PoolObserved>,
    allocated: BTreeMap<(String, u32), i64>,
    /// When this measurement finished.
    at: Option<std::time::Instant>,
    /// How many applies had ended when it started.
    applied: u64,
}

/// How often observations measure the pools while nothing was applied
/// since the last measurement: what changes then is a thin volume filling
/// as it is written, or something done outside Cairn. Each `vgs`/`lvs`
/// takes LVM's lock and scans the devices (seconds in the test VMs,
/// where measuring every 2 s kept the VM's processor busy).
const MEASURE_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

/// How old a measurement may be when an apply ended after it started: the
/// figures after a create, grow or delete come with the next heartbeat.
const MEASURE_AFTER_CHANGE: std::time::Duration = std::time::Duration::from_secs(2);

/// Failed snapshots by (resource, snapshot), each also kept as a file
/// `<rsc>@<snap>` (the error as JSON) in a directory of the satellite's, so
/// a restart remembers them. Names are checked names (letters, digits,
/// `_`, `-`), so `@` separates them.
#[derive(Default)]
struct FailedSnapshots {
    map: BTreeMap<(String, String), ObjectError>,
    dir: Option<std::path::PathBuf>,
}

impl FailedSnapshots {
    fn load(dir: Option<std::path::PathBuf>) -> FailedSnapshots {
        let mut map = BTreeMap::new();
        if let Some(entries) = dir.as_deref().and_then(|d| std::fs::read_dir(d).ok()) {
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                let Some((rsc, snap)) = name.split_once('@') else { continue };
                match std::fs::read_to_string(entry.path()).ok().and_then(|t| serde_json::from_str::<ObjectError>(&t).ok()) {
                    Some(e) => {
                        map.insert((rsc.to_string(), snap.to_string()), e);
                    }
                    None => tracing::warn!(file = %entry.path().display(), "unreadable record of a failed snapshot; ignored"),
                }
            }
        }
        FailedSnapshots { map, dir }
    }

    fn get(&self, rsc: &str, snap: &str) -> Option<&ObjectError> {
        self.map.get(&(rsc.to_string(), snap.to_string()))
    }

    fn insert(&mut self, rsc: &str, snap: &str, e: ObjectError) {
        if let Some(dir) = &self.dir {
            let written = cairn_storage::create_private_dir(dir).and_then(|()| {
                let text = serde_json::to_string(&e).map_err(std::io::Error::other)?;
                let mut f = cairn_storage::create_private_file(&dir.join(format!("{rsc}@{snap}")))?;
                std::io::Write::write_all(&mut f, text.as_bytes())
            });
            if let Err(err) = written {
                tracing::warn!(rsc, snap, "cannot record the failed snapshot (a restart will try it again): {err}");
            }
        }
        self.map.insert((rsc.to_string(), snap.to_string()), e);
    }

    /// Forgets the failures of `rsc` that `keep` does not name.
    fn retain(&mut self, rsc: &str, keep: impl Fn(&str) -> bool) {
        let gone: Vec<(String, String)> = self.map.keys().filter(|(r, s)| r == rsc && !keep(s)).cloned().collect();
        for key in gone {
            self.map.remove(&key);
            if let Some(dir) = &self.dir
                && let Err(e) = std::fs::remove_file(dir.join(format!("{}@{}", key.0, key.1)))
                && e.kind() != std::io::ErrorKind::NotFound
            {
                tracing::warn!(rsc = %key.0, snap = %key.1, "cannot remove the record of a failed snapshot: {e}");
            }
        }
    }
}

/// The size of a backing volume: the usable size, plus DRBD's internal
/// metadata when a DRBD layer sits on top, plus the LUKS2 header when the
/// volume is encrypted.
fn backing_kib(v: &VolumeDesired, drbd_peer_slots: Option<u8>) -> i64 {
    let net = match drbd_peer_slots {
        Some(slots) => i64::try_from(gross_size_kib(u64::try_from(v.size_kib).unwrap_or(0), slots)).unwrap_or(i64::MAX),
        None => v.size_kib,
    };
    if v.luks.is_some() { net.saturating_add(LUKS2_HEADER_KIB) } else { net }
}

fn luks_err(message: String, e: &LuksError) -> ObjectError {
    match e {
        LuksError::Storage(s) => err(message, s),
        LuksError::HoldsData(..) | LuksError::Withheld(..) | LuksError::NoMatchingKey(..) => {
            ObjectError { message, cause: Some(e.to_string()), details: None }
        }
        LuksError::NoKey => ObjectError {
            message,
            cause: Some(e.to_string()),
            details: Some("Enter the master passphrase on the controller (PATCH /v1/encryption/passphrase).".into()),
        },
    }
}

fn err(message: String, e: &StorageError) -> ObjectError {
    ObjectError { message, cause: Some(e.to_string()), details: e.details() }
}

fn vref(rsc: &Name, v: &VolumeDesired) -> VolumeRef {
    VolumeRef { rsc: rsc.clone(), nr: v.number, id: v.id.clone() }
}

/// A name from the controller, checked once: an unusable one fails its
/// resource before any command runs.
fn checked(name: &str) -> Result<Name, ObjectError> {
    Name::new(name).map_err(|e| err(format!("Refusing the name '{name}'."), &e))
}

fn failed_volume(nr: u32) -> VolumeObserved {
    VolumeObserved { number: nr, disk_state: "Failed".into(), ..Default::default() }
}

impl Applier {
    pub fn new(
        node_name: String,
        instance: String,
        storage: Storage,
        providers: Vec<ProviderSupport>,
        drbd: Result<Arc<DrbdLayer>, Vec<String>>,
        state_dir: Option<std::path::PathBuf>,
    ) -> Applier {
        Applier {
            node_name,
            instance,
            tools: storage.tools,
            luks: storage.luks,
            providers,
            drbd,
            state: parking_lot::Mutex::new(Desired::default()),
            resource_locks: parking_lot::Mutex::new(BTreeMap::new()),
            failed_snapshots: parking_lot::Mutex::new(FailedSnapshots::load(state_dir.map(|d| d.join("failed-snapshots")))),
            measured: parking_lot::Mutex::new(Measured::default()),
            measuring: tokio::sync::Mutex::new(None),
            applying: Default::default(),
            applied: Default::default(),
            files: crate::ext_files::ExtFiles::new(Vec::new(), None),
            pool_dirs: crate::pool_dirs::PoolDirs::unrestricted(),
        }
    }

    /// With external files allowed in `dirs` (and, in tests, taken below
    /// `root`).
    pub fn with_ext_files(mut self, files: crate::ext_files::ExtFiles) -> Applier {
        self.files = files;
        self
    }

    /// With FILE and FILE_THIN pools only where `dirs` allows.
    pub fn with_pool_dirs(mut self, dirs: crate::pool_dirs::PoolDirs) -> Applier {
        self.pool_dirs = dirs;
        self
    }

    /// Resolves a pool into its provider, or the reason it cannot serve.
    fn resolve(&self, p: &PoolDesired) -> Pool {
        let is_file = matches!(p.kind, cairn_proto::ProviderKind::File | cairn_proto::ProviderKind::FileThin);
        let refused = if is_file { self.pool_dirs.check(p.backing.as_deref().unwrap_or_default()).err() } else { None };
        if let Some(r) = refused {
            let message = format!("Storage pool '{}' ({}) on satellite '{}': {}", p.name, p.kind, self.node_name, r.message);
            let provider = Err(ObjectError { message, cause: Some(r.cause).filter(|c| !c.is_empty()), details: None });
            return Pool { desired: p.clone(), provider };
        }
        let provider = match self.providers.iter().find(|s| s.kind == p.kind) {
            Some(s) if !s.supported => Err(ObjectError {
                message: format!("Storage pool '{}' ({}) cannot be served by satellite '{}'.", p.name, p.kind, self.node_name),
                cause: Some(format!("Missing: {}", s.missing.join("; "))),
                details: None,
            }),
            None => Err(ObjectError {
                message: format!("Unknown provider kind '{}' for storage pool '{}'.", p.kind, p.name),
                cause: None,
                details: None,
            }),
            Some(_) => cairn_storage::provider::resolve(&self.tools, p).map_err(|e| match e {
                ResolveError::Backing(e) => err(format!("Storage pool '{}' has an unusable backing ({}).", p.name, p.kind), &e),
                ResolveError::NotImplemented(k) => {
                    ObjectError { message: format!("Provider {k} is not implemented yet."), cause: None, details: None }
                }
            }),
        };
        Pool { desired: p.clone(), provider }
    }

    fn resource_lock(&self, name: &str) -> Arc<tokio::sync::Mutex<()>> {
        self.resource_locks.lock().entry(name.to_string()).or_default().clone()
    }

    /// Whether a full apply arrived since this process started; deltas
    /// before that would be applied to an empty pool list.
    pub fn synced(&self) -> bool {
        self.state.lock().synced
    }

    /// Applies a full or delta request: records it as the desired state,
    /// then reconciles every resource it names, each in a task of its own,
    /// and answers with their results.
    pub async fn apply(self: &Arc<Self>, req: Apply) -> Observed {
        let _applying = Applying::new(&self.applying, &self.applied);
        let pools = {
            let mut st = self.state.lock();
            if req.full || (req.pools_set && req.generation >= st.pools_since) {
                st.pools_since = req.generation;
                // A pool configured anew (every pool, on a full apply) is
                // resolved anew, so its properties are probed again.
                let old = st.pools.clone();
                let pools: Pools = req
                    .pools
                    .iter()
                    .map(|p| {
                        let kept = old.get(&p.name).filter(|o| !req.full && o.desired == *p).cloned();
                        (p.name.clone(), kept.unwrap_or_else(|| self.resolve(p)))
                    })
                    .collect();
                st.pools = Arc::new(pools);
            }
            st.pools.clone()
        };
        // What exists here but is not desired (a full apply only): how
        // deletes missed while the satellite was away are caught up.
        // Every name found is placed where it was found (a desired
        // resource's leftovers in another pool go with its next removal).
        let mut found: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        if req.full {
            self.tools.files.forget_loops();
            let keep: BTreeSet<&str> = req.resources.iter().map(|r| r.name.as_str()).collect();
            for pool in pools.values() {
                let Ok(p) = &pool.provider else { continue };
                match p.resources().await {
                    Ok(names) => {
                        for n in names {
                            found.entry(n).or_default().insert(pool.desired.name.clone());
                        }
                    }
                    Err(e) => tracing::warn!(pool = %pool.desired.name, "cannot list the pool: {e}"),
                }
            }
            if let Ok(layer) = &self.drbd {
                for n in layer.configured().into_iter().filter(|n| !keep.contains(n.as_str())) {
                    found.entry(n).or_default();
                }
            }
        }
        let targets: Vec<String> = {
            let mut st = self.state.lock();
            let mut targets = Vec::new();
            if req.full {
                let keep: BTreeSet<String> = req.resources.iter().map(|r| r.name.clone()).collect();
                let mut gone: BTreeSet<String> = st.resources.keys().filter(|n| !keep.contains(*n)).cloned().collect();
                gone.extend(found.keys().filter(|n| !keep.contains(*n)).cloned());
                st.resources = req.resources.iter().map(|r| (r.name.clone(), r.clone())).collect();
                st.observed.retain(|n, _| keep.contains(n));
                // A full apply is the new baseline (also from a restarted
                // controller, whose generations start over).
                st.since.clear();
                st.full_since = req.generation;
                st.generation = req.generation;
                for r in &req.resources {
                    self.record_placement(&mut st, r);
                }
                targets.extend(req.resources.iter().map(|r| r.name.clone()));
                targets.extend(gone);
            } else {
                let current = |st: &Desired, n: &str| st.since.get(n).copied().unwrap_or(st.full_since) <= req.generation;
                for r in &req.resources {
                    if current(&st, &r.name) {
                        st.resources.insert(r.name.clone(), r.clone());
                        st.since.insert(r.name.clone(), req.generation);
                        self.record_placement(&mut st, r);
                    }
                    targets.push(r.name.clone());
                }
                for n in &req.removed {
                    if current(&st, n) {
                        st.resources.remove(n);
                        st.since.insert(n.clone(), req.generation);
                    }
                    targets.push(n.clone());
                }
            }
            for (n, in_pools) in found {
                st.placed.entry(n).or_default().extend(in_pools);
            }
            st.generation = st.generation.max(req.generation);
            st.synced |= req.full;
            targets
        };
        let tasks: Vec<_> = targets
            .into_iter()
            .map(|name| {
                let me = self.clone();
                let task_name = name.clone();
                (name, tokio::spawn(async move { me.reconcile(&task_name).await }))
            })
            .collect();
        let mut out = Observed { generation: req.generation, instance: self.instance.clone(), ..Default::default() };
        for (name, task) in tasks {
            match task.await {
                Ok(Reconciled::Present(o)) => out.resources.push(o),
                Ok(Reconciled::Removed(o)) => out.removed.push(o),
                Err(e) => {
                    tracing::error!(rsc = %name, "a reconcile task panicked: {e}");
                    out.resources.push(ResourceObserved {
                        name,
                        error: Some(ObjectError {
                            message: format!("An apply task on node '{}' failed: {e}", self.node_name),
                            cause: None,
                            details: None,
                        }),
                        ..Default::default()
                    });
                }
            }
        }
        // Capacities come with answers that set the pools; otherwise the
        // controller's heartbeat reads them (a create does not wait for df).
        if req.full || req.pools_set {
            out.pools = self.pool_capacity(&pools).await;
        }
        out
    }

    /// Remembers where a desired resource is placed and its DRBD host name
    /// (a removal needs both).
    fn record_placement(&self, st: &mut Desired, r: &ResourceDesired) {
        if let Some(d) = &r.drbd {
            st.hosts.insert(r.name.clone(), d.host.clone());
        }
        st.placed.entry(r.name.clone()).or_default().extend(r.volumes.iter().map(|v| v.pool.clone()));
    }

    /// Makes one resource what is desired of it now (or removes it), under
    /// its own lock, and records what it saw.
    async fn reconcile(&self, name: &str) -> Reconciled {
        let lock = self.resource_lock(name);
        let _one_at_a_time = lock.lock().await;
        let (desired, pools, host, placed, made, rolled_back) = {
            let st = self.state.lock();
            (
                st.resources.get(name).cloned(),
                st.pools.clone(),
                st.hosts.get(name).cloned().unwrap_or_else(|| self.node_name.clone()),
                st.placed.get(name).cloned().unwrap_or_default(),
                st.made.get(name).cloned(),
                st.rolled_back.get(name).cloned(),
            )
        };
        let n = match checked(name) {
            Ok(n) => n,
            Err(e) => {
                let o = ResourceObserved { name: name.to_string(), error: Some(e), ..Default::default() };
                return if desired.is_some() { Reconciled::Present(o) } else { Reconciled::Removed(o) };
            }
        };
        match desired {
            Some(r) => {
                let ids: BTreeMap<u32, String> = r.volumes.iter().map(|v| (v.number, v.id.clone())).collect();
                // Volumes kept only for their snapshots are no new
                // incarnation: their snapshots stay.
                let reborn = !r.snapshots_only && made.is_some_and(|m| m.iter().any(|(nr, id)| ids.get(nr).is_some_and(|now| now != id)));
                if reborn {
                    // Deleted and created again before the removal ran:
                    // the old incarnation goes completely (DRBD metadata
                    // and markers too) before the new one is made.
                    tracing::info!(rsc = %name, "a new incarnation: taking the old one down first");
                    let gone = self.remove(&pools, &n, &host, &placed).await;
                    if gone.error.is_some() {
                        return Reconciled::Present(ResourceObserved { volumes: vec![], ..gone });
                    }
                    self.state.lock().made.remove(name);
                }
                let mut o = if r.snapshots_only {
                    self.keep_only_snapshots(&pools, &r, &n, &host, &placed).await
                } else if r.rollback.as_ref().is_some_and(|rb| rolled_back.as_ref() == Some(&rb.id)) {
                    self.ensure(&pools, &ResourceDesired { rollback: None, ..r.clone() }, &n, &placed).await
                } else {
                    self.ensure(&pools, &r, &n, &placed).await
                };
                // External files follow the resource once it stands (LINSTOR
                // handles them after the layers).
                if o.error.is_none()
                    && let Err(e) = self.files.handle(name, &r.files)
                {
                    o.error = Some(e);
                }
                let mut st = self.state.lock();
                let current = st.resources.get(name) == Some(&r);
                if st.resources.contains_key(name) {
                    st.observed.insert(name.to_string(), o.clone());
                }
                if o.error.is_none() && current {
                    // Pools it no longer uses were cleaned up.
                    let used: BTreeSet<String> = r.volumes.iter().map(|v| v.pool.clone()).collect();
                    st.placed.insert(name.to_string(), used);
                }
                if o.error.is_none() && r.snapshots_only {
                    st.made.remove(name);
                } else if o.error.is_none() {
                    st.made.insert(name.to_string(), ids);
                    if let Some(rb) = &r.rollback {
                        st.rolled_back.insert(name.to_string(), rb.id.clone());
                    }
                }
                Reconciled::Present(o)
            }
            None => {
                let mut o = self.remove(&pools, &n, &host, &placed).await;
                // No snapshot of it is wanted here any more either.
                if o.error.is_none() {
                    for p in Self::providers_of(&pools, placed.iter()) {
                        if let Err(e) = p.forget(&n).await {
                            o.error.get_or_insert(err(
                                format!("Failed to delete the snapshots of '{name}' on node '{}'.", self.node_name),
                                &e,
                            ));
                        }
                    }
                }
                if let Err(e) = self.files.handle(name, &[]) {
                    o.error.get_or_insert(e);
                }
                {
                    let mut st = self.state.lock();
                    if !st.resources.contains_key(name) {
                        st.observed.remove(name);
                        if o.error.is_none() {
                            st.placed.remove(name);
                            st.hosts.remove(name);
                            st.made.remove(name);
                            st.rolled_back.remove(name);
                        }
                    }
                }
                // Its lock goes too, unless someone else waits for it
                // (only `resource_lock` hands out clones, under this map's
                // lock: the map's and ours are then the only ones).
                let mut locks = self.resource_locks.lock();
                if locks.get(name).is_some_and(|l| Arc::strong_count(l) == 2) {
                    locks.remove(name);
                }
                Reconciled::Removed(o)
            }
        }
    }

    /// The providers of the named pools that resolved; the others are
    /// skipped (they hold nothing Cairn could reach).
    fn providers_of<'a>(pools: &'a Pools, names: impl IntoIterator<Item = &'a String>) -> Vec<&'a Arc<dyn Provider>> {
        let names: BTreeSet<&String> = names.into_iter().collect();
        names.into_iter().filter_map(|n| pools.get(n)?.provider.as_ref().ok()).collect()
    }

    /// A resource deleted from this node whose snapshots stay (ZFS): DRBD
    /// and LUKS go, then its volumes (ZFS renames them aside with their
    /// snapshots), then the snapshots no longer listed.
    async fn keep_only_snapshots(
        &self,
        pools: &Pools,
        r: &ResourceDesired,
        n: &Name,
        host: &str,
        placed: &BTreeSet<String>,
    ) -> ResourceObserved {
        let mut out = ResourceObserved { name: r.name.clone(), ..Default::default() };
        if let Err(e) = self.layers_down(n, host).await {
            out.error = Some(e);
            return out;
        }
        for p in Self::providers_of(pools, placed.iter().chain(r.volumes.iter().map(|v| &v.pool))) {
            if let Err(e) = p.remove_others(n, &[]).await {
                out.error.get_or_insert(err(format!("Failed to delete the volumes of '{n}' on node '{}'.", self.node_name), &e));
            }
        }
        if out.error.is_none() {
            self.snapshots(pools, r, n, &mut out).await;
        }
        out
    }

    /// Makes one resource exist: its storage, then its DRBD layer.
    async fn ensure(&self, pools: &Pools, r: &ResourceDesired, n: &Name, placed: &BTreeSet<String>) -> ResourceObserved {
        if r.inactive {
            // Deactivated: the volumes stay as they are, DRBD goes down and
            // is not brought up again until the resource is activated.
            let mut out = self.ensure_storage(pools, r, n, r.drbd.as_ref().map(|d| d.peer_slots), None).await;
            if r.drbd.is_some()
                && let Ok(layer) = &self.drbd
                && let Err(e) = layer.down(&r.name).await
            {
                out.error.get_or_insert(e);
            }
            return out;
        }
        let Some(d) = &r.drbd else { return self.ensure_storage(pools, r, n, None, Some(placed)).await };
        let layer = match &self.drbd {
            Ok(l) => l.clone(),
            Err(reasons) => {
                // Refuse before touching storage: nothing is half-created.
                return ResourceObserved {
                    name: r.name.clone(),
                    error: Some(ObjectError {
                        message: format!(
                            "Satellite '{}' does not support the following layers: [DRBD]; resource '{}' was not created.",
                            self.node_name, r.name
                        ),
                        cause: Some(reasons.join("; ")),
                        details: Some("Load the DRBD 9 kernel module and install drbd-utils 9, then restart the satellite.".into()),
                    }),
                    volumes: r.volumes.iter().map(|v| failed_volume(v.number)).collect(),
                    ..Default::default()
                };
            }
        };
        // I/O is suspended before a snapshot is taken on every node of the
        // resource (the controller asks for the snapshot once all nodes
        // confirmed the suspension), and resumed first thing after: a
        // failure further on must not leave it suspended.
        let suspension = layer.set_io_suspended(&r.name, &d.host, d.suspend_io).await;
        // A rollback, as LINSTOR does it: DRBD goes down, the storage goes
        // back to the snapshot (DRBD's internal metadata with it), DRBD
        // comes up again. Every diskful node does the same; their
        // snapshots were taken with I/O suspended everywhere, so they hold
        // the same data and generation ids and no resync follows.
        // The storage goes back only once DRBD let go of it in this very
        // pass, never under an attached device (the kernel would go on
        // serving the old volume renamed aside): a rollback not found
        // pending here is not carried out below either, and a failed check
        // is an error (retried), never a "no".
        let pending = match self.rollback_pending(pools, r, n).await {
            Ok(true) => layer.down(&r.name).await.map(|()| true),
            other => other,
        };
        let rolled;
        let r = match pending {
            Ok(false) if r.rollback.is_some() => {
                rolled = ResourceDesired { rollback: None, ..r.clone() };
                &rolled
            }
            Ok(_) => r,
            Err(e) => {
                let mut out = ResourceObserved { name: r.name.clone(), error: Some(e), ..Default::default() };
                out.drbd = Some(layer.observed(&r.name, d));
                return out;
            }
        };
        // Volumes that go are removed only after DRBD let go of them.
        let mut out = self.ensure_storage(pools, r, n, Some(d.peer_slots), None).await;
        if let Err(e) = suspension {
            out.error.get_or_insert(e);
        }
        if out.error.is_some() {
            return out;
        }
        let disks: BTreeMap<u32, String> = if r.diskless {
            BTreeMap::new()
        } else {
            out.volumes.iter().filter_map(|v| Some((v.number, v.luks_device_path.clone().or(v.device_path.clone())?))).collect()
        };
        let net: BTreeMap<u32, i64> = r.volumes.iter().map(|v| (v.number, v.size_kib)).collect();
        // Volumes whose device reads zeros until written (thin or ZFS, no
        // LUKS between: decrypted zeros differ from node to node).
        let zeroed: BTreeSet<u32> = r
            .volumes
            .iter()
            .filter(|v| v.luks.is_none())
            .filter(|v| {
                pools.get(&v.pool).and_then(|p| p.provider.as_ref().ok()).is_some_and(|p| {
                    let k = p.kind();
                    k.is_thin() && !k.is_diskless() || matches!(k, cairn_proto::ProviderKind::Zfs)
                })
            })
            .map(|v| v.number)
            .collect();
        match layer.ensure(&r.name, d, &disks, &net, &zeroed).await {
            Ok(o) => {
                out.drbd = Some(o);
                self.remove_unwanted(pools, r, n, placed, &mut out).await;
            }
            Err(e) => {
                out.drbd = Some(layer.observed(&r.name, d));
                out.error = Some(e);
            }
        }
        out
    }

    /// Whether some volume of the resource still has to go back to the
    /// snapshot of its rollback.
    async fn rollback_pending(&self, pools: &Pools, r: &ResourceDesired, n: &Name) -> Result<bool, ObjectError> {
        let Some(rb) = &r.rollback else { return Ok(false) };
        let fail = |nr: u32, e: &StorageError| {
            err(format!("Cannot check whether volume {nr} of '{}' still has to be rolled back on node '{}'.", r.name, self.node_name), e)
        };
        for v in &r.volumes {
            let snap = Name::new(&rb.snapshot).map_err(|e| fail(v.number, &e))?;
            let Some(Ok(p)) = pools.get(&v.pool).map(|p| p.provider.as_ref()) else { continue };
            if p.needs_rollback(&vref(n, v), &snap, &rb.id).await.map_err(|e| fail(v.number, &e))? {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Removes volumes of the resource that are not wanted any more (other
    /// numbers, or an earlier incarnation of a wanted one) from the pools
    /// it is or was placed in, closing their LUKS mappings first.
    /// A diskless resource wants no backing volume at all (toggle-disk
    /// into diskless leaves its volumes with the same ids in a diskless
    /// pool).
    async fn remove_unwanted(&self, pools: &Pools, r: &ResourceDesired, n: &Name, placed: &BTreeSet<String>, out: &mut ResourceObserved) {
        let backed: Vec<&VolumeDesired> = r.volumes.iter().filter(|_| !r.diskless).collect();
        let keep: Vec<u32> = backed.iter().map(|v| v.number).collect();
        if let Err(e) = self.luks.close_all_except(&r.name, &keep).await {
            out.error.get_or_insert(luks_err(format!("Cannot close the encrypted volumes of '{}' that go.", r.name), &e));
            return;
        }
        let wanted: Vec<(u32, String)> = backed.iter().map(|v| (v.number, v.id.clone())).collect();
        for p in Self::providers_of(pools, placed.iter().chain(r.volumes.iter().map(|v| &v.pool))) {
            if let Err(e) = p.remove_others(n, &wanted).await {
                out.error.get_or_insert(err(format!("Failed to remove unwanted volumes of '{}' from pool '{}'.", r.name, p.pool()), &e));
            }
        }
    }

    /// Makes one resource's volumes exist. With `drbd_peer_slots`, each
    /// volume gets room for DRBD's internal metadata. With `placed`,
    /// volumes of it that are no longer desired are removed first.
    async fn ensure_storage(
        &self,
        pools: &Pools,
        r: &ResourceDesired,
        n: &Name,
        drbd_peer_slots: Option<u8>,
        placed: Option<&BTreeSet<String>>,
    ) -> ResourceObserved {
        let mut out = ResourceObserved { name: r.name.clone(), ..Default::default() };
        if let Some(placed) = placed {
            self.remove_unwanted(pools, r, n, placed, &mut out).await;
        }
        for v in &r.volumes {
            let observed = match pools.get(&v.pool) {
                None => Err(ObjectError {
                    message: format!("Storage pool '{}' is not configured on node '{}'.", v.pool, self.node_name),
                    cause: None,
                    details: None,
                }),
                Some(Pool { provider: Err(e), .. }) => Err(e.clone()),
                Some(Pool { provider: Ok(p), .. }) if r.diskless || !p.has_storage() => {
                    Ok(VolumeObserved { number: v.number, disk_state: "Diskless".into(), ..Default::default() })
                }
                Some(Pool { provider: Ok(p), .. }) => self.ensure_volume(p.as_ref(), r, n, v, drbd_peer_slots).await,
            };
            match observed {
                Ok(o) => out.volumes.push(o),
                Err(e) => {
                    out.volumes.push(failed_volume(v.number));
                    out.error.get_or_insert(e);
                }
            }
        }
        if out.error.is_none() && !r.diskless {
            self.snapshots(pools, r, n, &mut out).await;
        }
        out
    }

    /// One volume: rolled back first when asked (closing its LUKS mapping
    /// before), created (from a snapshot when restored) or grown, then its
    /// LUKS layer opened.
    async fn ensure_volume(
        &self,
        p: &dyn Provider,
        r: &ResourceDesired,
        n: &Name,
        v: &VolumeDesired,
        slots: Option<u8>,
    ) -> Result<VolumeObserved, ObjectError> {
        let fail = |what: &str, e: &StorageError| {
            err(format!("Failed to {what} volume {} of '{}' on node '{}'.", v.number, r.name, self.node_name), e)
        };
        let vr = vref(n, v);
        let rollback = match &r.rollback {
            Some(rb) => Some((Name::new(&rb.snapshot).map_err(|e| fail("roll back", &e))?, rb.id.as_str(), rb.zfs)),
            None => None,
        };
        let source = match &v.source {
            Some(s) => {
                Some((Name::new(&s.resource).map_err(|e| fail("restore", &e))?, Name::new(&s.snapshot).map_err(|e| fail("restore", &e))?))
            }
            None => None,
        };
        let size = Kib::new(backing_kib(v, slots)).map_err(|e| fail("create", &e))?;
        if let Some((snap, id, zfs)) = &rollback
            && p.needs_rollback(&vr, snap, id).await.map_err(|e| fail("check", &e))?
        {
            // Only an encrypted volume has a mapping to close: a plain one
            // must not need cryptsetup (hosts without it roll back too).
            if v.luks.is_some()
                && let Err(e) = self.luks.close(&r.name, v.number).await
            {
                return Err(luks_err(format!("Cannot close encrypted volume {} of '{}' for the rollback.", v.number, r.name), &e));
            }
            p.rollback(&vr, snap, id, *zfs).await.map_err(|e| fail("roll back", &e))?;
        }
        let clone_src = match &v.clone_from {
            Some(c) => Some(Name::new(&c.resource).map_err(|e| fail("clone", &e))?),
            None => None,
        };
        let clone_from = match (&v.clone_from, &clone_src) {
            (Some(c), Some(src)) => Some(CloneFrom { rsc: src, id: &c.id, zfs_clone: c.zfs_clone, fresh_drbd_md: r.drbd.is_some() }),
            _ => None,
        };
        let spec = VolumeSpec { rsc: n, nr: v.number, id: &v.id, size, source: source.as_ref().map(|(r, s)| (r, s)), clone_from };
        let mut o = p.ensure(spec).await.map_err(|e| fail("create", &e))?;
        if let (Some(l), Some(dev)) = (&v.luks, o.device_path.clone()) {
            match self.luks.ensure(&dev, &r.name, v.number, l).await {
                Ok(mapped) => o.luks_device_path = Some(mapped),
                Err(e) => {
                    return Err(luks_err(
                        format!("Cannot open the encrypted volume {} of '{}' on node '{}'.", v.number, r.name, self.node_name),
                        &e,
                    ));
                }
            }
        }
        Ok(o)
    }

    /// Makes the snapshots of a resource on this node what is desired;
    /// records the ones present.
    async fn snapshots(&self, pools: &Pools, r: &ResourceDesired, n: &Name, out: &mut ResourceObserved) {
        let provider_of = |nr: u32| -> Option<&Arc<dyn Provider>> {
            let v = r.volumes.iter().find(|v| v.number == nr)?;
            pools.get(&v.pool)?.provider.as_ref().ok()
        };
        let mut present: BTreeMap<String, Vec<u32>> = BTreeMap::new();
        for p in Self::providers_of(pools, r.volumes.iter().map(|v| &v.pool)) {
            match p.snapshots(n).await {
                Ok(s) => {
                    for (name, nrs) in s {
                        present.entry(name).or_default().extend(nrs);
                    }
                }
                Err(e) => {
                    out.error.get_or_insert(err(format!("Cannot list the snapshots of '{}'.", r.name), &e));
                    return;
                }
            }
        }
        // Failures of a snapshot belong to that snapshot (`snapshot_errors`),
        // never to the resource: its later changes must not report them.
        self.failed_snapshots.lock().retain(&r.name, |snap| r.snapshots.iter().any(|s| s == snap));
        for snap in &r.snapshots {
            let failed = self.failed_snapshots.lock().get(&r.name, snap).cloned();
            if let Some(e) = failed {
                out.snapshot_errors.insert(snap.clone(), e);
                continue;
            }
            let snap_name = match Name::new(snap) {
                Ok(s) => s,
                Err(e) => {
                    self.snapshot_failed(&r.name, snap, err(format!("Refusing the snapshot name '{snap}'."), &e), out);
                    continue;
                }
            };
            for v in &r.volumes {
                if present.get(snap).is_some_and(|n| n.contains(&v.number)) {
                    continue;
                }
                let cannot = |cause: String| ObjectError {
                    message: format!("Storage pool '{}' on node '{}' cannot take snapshots.", v.pool, self.node_name),
                    cause: Some(cause),
                    details: None,
                };
                let Some(p) = provider_of(v.number) else {
                    self.snapshot_failed(&r.name, snap, cannot(format!("Storage pool '{}' is not usable here.", v.pool)), out);
                    break;
                };
                // Shipped here from another cluster: it arrived already.
                // A snapshot taken here never takes over what a shipment of
                // the same name left (never registered): that goes.
                let adopted = if r.received_snapshots.contains(snap) {
                    p.adopt_received(&vref(n, v), &snap_name).await
                } else {
                    p.discard_received(&vref(n, v), &snap_name).await.map(|()| false)
                };
                match adopted {
                    Ok(true) => {
                        present.entry(snap.clone()).or_default().push(v.number);
                        continue;
                    }
                    Ok(false) => {}
                    Err(e) => {
                        out.error.get_or_insert(err(format!("Failed to take over the received snapshot '{snap}' of '{}'.", r.name), &e));
                        break;
                    }
                }
                // Without its volumes nothing can be taken any more.
                if r.snapshots_only {
                    continue;
                }
                if let Some(why) = p.snapshots_refused().await {
                    self.snapshot_failed(&r.name, snap, cannot(why), out);
                    break;
                }
                match p.create_snapshot(&vref(n, v), &snap_name).await {
                    Ok(()) => present.entry(snap.clone()).or_default().push(v.number),
                    Err(e) => {
                        let e = err(
                            format!(
                                "Failed to take snapshot '{snap}' of volume {} of '{}' on node '{}'.",
                                v.number, r.name, self.node_name
                            ),
                            &e,
                        );
                        self.snapshot_failed(&r.name, snap, e, out);
                        break;
                    }
                }
            }
        }
        for (snap, nrs) in present.clone() {
            if r.snapshots.contains(&snap) {
                continue;
            }
            // Listed by the provider, so it passed the name check there.
            let Ok(snap_name) = Name::new(&snap) else { continue };
            for nr in nrs {
                let Some(p) = provider_of(nr) else { continue };
                match p.delete_snapshot(n, nr, &snap_name).await {
                    Ok(()) => {
                        present.remove(&snap);
                    }
                    Err(e) => {
                        out.error.get_or_insert(err(format!("Failed to delete snapshot '{snap}' of '{}'.", r.name), &e));
                    }
                }
            }
        }
        let all: BTreeSet<u32> = r.volumes.iter().map(|v| v.number).collect();
        out.snapshots = present.into_iter().filter(|(_, n)| all.iter().all(|x| n.contains(x))).map(|(s, _)| s).collect();
    }

    /// Records a snapshot that could not be taken: reported with the
    /// snapshot, and not tried again while it is desired.
    fn snapshot_failed(&self, rsc: &str, snap: &str, e: ObjectError, out: &mut ResourceObserved) {
        tracing::warn!(rsc, snap, "snapshot failed: {}{}", e.message, e.cause.as_deref().map(|c| format!(" ({c})")).unwrap_or_default());
        self.failed_snapshots.lock().insert(rsc, snap, e.clone());
        out.snapshot_errors.insert(snap.to_string(), e);
    }

    /// Takes a resource's DRBD layer down and closes its LUKS mappings:
    /// the storage below stays while either may still use it.
    async fn layers_down(&self, name: &Name, host: &str) -> Result<(), ObjectError> {
        if let Ok(layer) = &self.drbd {
            layer.remove(name, host).await?;
        }
        self.luks
            .close_all(name)
            .await
            .map_err(|e| luks_err(format!("Cannot close the encrypted volumes of '{name}' on node '{}'.", self.node_name), &e))
    }

    /// Takes the DRBD layer down, then removes every volume of a resource
    /// from the pools it may be in. `host` is its DRBD host name.
    async fn remove(&self, pools: &Pools, name: &Name, host: &str, placed: &BTreeSet<String>) -> ResourceObserved {
        let mut out = ResourceObserved { name: name.to_string(), ..Default::default() };
        self.failed_snapshots.lock().retain(name, |_| false);
        if let Err(e) = self.layers_down(name, host).await {
            out.error = Some(e);
            return out;
        }
        for p in Self::providers_of(pools, placed) {
            if let Err(e) = p.remove_others(name, &[]).await {
                out.error.get_or_insert(err(format!("Failed to delete the volumes of '{name}' on node '{}'.", self.node_name), &e));
            }
        }
        // A pool that cannot be used here holds nothing Cairn can reach;
        // what it may hold of the resource is said, not hidden.
        for pool in placed.iter().filter_map(|n| pools.get(n)).filter(|p| p.provider.is_err()) {
            tracing::warn!(rsc = %name, pool = %pool.desired.name, "the pool is not usable here; volumes of the resource it may hold were not removed");
        }
        out
    }

    /// Each pool's capacity, or its error; read in parallel, one task per
    /// pool, so a slow pool holds up no other pool's answer longer than it
    /// takes.
    async fn pool_capacity(&self, pools: &Pools) -> Vec<PoolObserved> {
        let out = capacities(pools).await;
        let mut m = self.measured.lock();
        m.pools = out.iter().map(|p| (p.name.clone(), p.clone())).collect();
        out
    }

    /// Wakes when what [`Applier::observe`] finds may have changed without
    /// a request: DRBD's events (None without the DRBD layer).
    pub fn changes(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        self.drbd.as_ref().ok().map(|l| l.changes())
    }

    /// Everything the satellite currently knows. Never waits for an apply;
    /// capacities and allocated sizes are measured anew (a thin volume
    /// grows as data is written, without any request), but waited for at
    /// most [`MEASURE_WAIT`]: a measurement still running then goes on in
    /// the background and the last one answers.
    pub async fn observe(&self) -> Observed {
        let (mut observed, pools, resources, generation) = {
            let st = self.state.lock();
            (st.observed.values().cloned().collect::<Vec<_>>(), st.pools.clone(), st.resources.clone(), st.generation)
        };
        let m = self.measure(&pools, &resources, &observed).await;
        // DRBD state changes without any request: read it fresh, after
        // the measurement (which may take up to MEASURE_WAIT): the answer
        // carries the state of its moment, not of its start (a spawn's
        // replicas connecting while `lvs` ran took one more round).
        if let Ok(layer) = &self.drbd {
            for o in observed.iter_mut().filter(|o| o.drbd.is_some()) {
                if let Some(d) = resources.get(&o.name).and_then(|r| r.drbd.as_ref()) {
                    o.drbd = Some(layer.observed(&o.name, d));
                }
            }
        }
        for o in observed.iter_mut() {
            for ov in o.volumes.iter_mut().filter(|v| v.device_path.is_some()) {
                if let Some(now) = m.allocated.get(&(o.name.clone(), ov.number)) {
                    ov.allocated_kib = Some(*now);
                }
            }
        }
        Observed {
            generation,
            instance: self.instance.clone(),
            resources: observed,
            removed: Vec::new(),
            // Pools not measured yet are listed without figures.
            pools: pools
                .keys()
                .map(|name| m.pools.get(name).cloned().unwrap_or_else(|| PoolObserved { name: name.clone(), ..Default::default() }))
                .collect(),
        }
    }

    /// Starts a measurement unless one runs, and waits for it at most
    /// [`MEASURE_WAIT`]; answers with the newest measurement there is.
    async fn measure(&self, pools: &Arc<Pools>, resources: &BTreeMap<String, ResourceDesired>, observed: &[ResourceObserved]) -> Measured {
        let mut slot = self.measuring.lock().await;
        // Observations come every 0.5 s while DRBD states move; the pools'
        // tools (each `vgs`/`lvs` takes LVM's lock) run at most every
        // MEASURE_EVERY, or MEASURE_AFTER_CHANGE once an apply ended since
        // the last measurement began, and while an apply is under way only
        // when the last figures are older than MEASURE_DEFER, so they never
        // crowd out a create.
        let busy = self.applying.load(std::sync::atomic::Ordering::SeqCst) > 0;
        let applied = self.applied.load(std::sync::atomic::Ordering::SeqCst);
        let recent = {
            let m = self.measured.lock();
            let max_age = if busy {
                MEASURE_DEFER
            } else if m.applied < applied {
                MEASURE_AFTER_CHANGE
            } else {
                MEASURE_EVERY
            };
            m.at.is_some_and(|at| at.elapsed() < max_age)
        };
        if slot.is_none() && recent {
            return self.measured.lock().clone();
        }
        if slot.is_none() {
            let mut by_pool: BTreeMap<String, Vec<VolumeRef>> = BTreeMap::new();
            for o in observed {
                let Some(r) = resources.get(&o.name) else { continue };
                for ov in o.volumes.iter().filter(|v| v.device_path.is_some()) {
                    if let Some(v) = r.volumes.iter().find(|v| v.number == ov.number)
                        && let Ok(n) = Name::new(&r.name)
                    {
                        by_pool.entry(v.pool.clone()).or_default().push(vref(&n, v));
                    }
                }
            }
            let pools = pools.clone();
            *slot = Some(tokio::spawn(async move {
                let caps = capacities(&pools).await;
                let allocated = allocated(&pools, by_pool).await;
                Measured {
                    pools: caps.into_iter().map(|p| (p.name.clone(), p)).collect(),
                    allocated,
                    at: Some(std::time::Instant::now()),
                    applied,
                }
            }));
        }
        let Some(task) = slot.as_mut() else { return self.measured.lock().clone() };
        match tokio::time::timeout(MEASURE_WAIT, task).await {
            Ok(Ok(m)) => {
                *slot = None;
                *self.measured.lock() = m.clone();
                m
            }
            Ok(Err(e)) => {
                *slot = None;
                tracing::warn!("measuring the pools failed: {e}");
                self.measured.lock().clone()
            }
            Err(_) => {
                tracing::debug!("the pools' measurement is still running; answering with the last one");
                self.measured.lock().clone()
            }
        }
    }
}

/// Every pool's capacity, the pools at once.
async fn capacities(pools: &Pools) -> Vec<PoolObserved> {
    let tasks: Vec<_> = pools
        .values()
        .cloned()
        .map(|pool| {
            tokio::spawn(async move {
                let name = pool.desired.name.clone();
                match &pool.provider {
                    Err(e) => PoolObserved { name, error: Some(e.clone()), ..Default::default() },
                    Ok(p) if !p.has_storage() => PoolObserved { name, ..Default::default() },
                    Ok(p) => match p.capacity().await {
                        Ok(c) => PoolObserved {
                            name,
                            total_kib: Some(c.total_kib),
                            free_kib: Some(c.free_kib),
                            supports_snapshots: c.supports_snapshots,
                            error: None,
                        },
                        Err(e) => {
                            let message = format!("Cannot read the capacity of '{name}'.");
                            PoolObserved { name, error: Some(err(message, &e)), ..Default::default() }
                        }
                    },
                }
            })
        })
        .collect();
    let mut out = Vec::new();
    for (t, name) in tasks.into_iter().zip(pools.keys()) {
        out.push(t.await.unwrap_or_else(|e| PoolObserved {
            name: name.clone(),
            error: Some(ObjectError { message: format!("Reading pool '{name}' failed: {e}"), cause: None, details: None }),
            ..Default::default()
        }));
    }
    out
}

/// What each volume takes from its pool: one call per pool.
async fn allocated(pools: &Pools, by_pool: BTreeMap<String, Vec<VolumeRef>>) -> BTreeMap<(String, u32), i64> {
    let mut sizes = BTreeMap::new();
    for (pool, volumes) in by_pool {
        let Some(Ok(p)) = pools.get(&pool).map(|p| &p.provider) else { continue };
        match p.allocated(&volumes).await {
            Ok(s) => sizes.extend(s),
            Err(e) => tracing::debug!(pool = %pool, "cannot read the allocated sizes: {e}"),
        }
    }
    sizes
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_exec::{CommandRunner, FakeRunner};
    use cairn_proto::ProviderKind;
    use cairn_storage::file::Files;
    use std::time::Duration;

    const NO_LOOPS: &str = r#"{"loopdevices":[]}"#;
    const DF: &str = "1K-blocks Avail\n 1000000 900000\n";

    /// An applier on FILE_THIN pools (no DRBD here), its commands answered
    /// by `fake`: no loop devices at first, each attach gets /dev/loop7.
    fn applier(fake: &Arc<FakeRunner>, timeout: Duration) -> Arc<Applier> {
        applier_with(fake, timeout, Err(vec!["no DRBD in unit tests".into()]))
    }

    /// Like [`applier`], with the given DRBD layer.
    fn applier_with(fake: &Arc<FakeRunner>, timeout: Duration, drbd: Result<Arc<DrbdLayer>, Vec<String>>) -> Arc<Applier> {
        Arc::new(build_applier(fake, timeout, drbd))
    }

    fn build_applier(fake: &Arc<FakeRunner>, timeout: Duration, drbd: Result<Arc<DrbdLayer>, Vec<String>>) -> Applier {
        fake.answer(&["losetup", "--json", "--list"], NO_LOOPS)
            .answer(&["df"], DF)
            .answer(&["losetup", "--find", "--show"], "/dev/loop7\n")
            .answer(&["wipefs"], "")
            .answer(&["cp", "--reflink=always"], "")
            .answer(&["losetup", "--detach"], "");
        let runner: Arc<dyn CommandRunner> = fake.clone();
        let mut storage = Storage::new(runner.clone(), timeout);
        storage.tools.files = Files::new(runner, timeout).with_sysfs(None);
        let supported = |kind| ProviderSupport { kind, supported: true, missing: vec![] };
        Applier::new(
            "n1".into(),
            "i1".into(),
            storage,
            vec![supported(ProviderKind::Diskless), supported(ProviderKind::FileThin)],
            drbd,
            None,
        )
    }

    fn pool(name: &str, dir: &std::path::Path) -> PoolDesired {
        PoolDesired { name: name.into(), kind: ProviderKind::FileThin, backing: Some(dir.display().to_string()) }
    }

    fn rsc(name: &str, pool: &str) -> ResourceDesired {
        ResourceDesired {
            name: name.into(),
            volumes: vec![VolumeDesired { number: 0, id: "ab".into(), size_kib: 1024, pool: pool.into(), ..Default::default() }],
            ..Default::default()
        }
    }

    fn full(generation: u64, pools: Vec<PoolDesired>, resources: Vec<ResourceDesired>) -> Apply {
        Apply { generation, full: true, pools_set: true, pools, resources, removed: vec![] }
    }

    fn delta(generation: u64, resources: Vec<ResourceDesired>, removed: &[&str]) -> Apply {
        Apply { generation, resources, removed: removed.iter().map(|s| s.to_string()).collect(), ..Default::default() }
    }

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime")
    }

    fn count(fake: &FakeRunner, prefix: &[&str]) -> usize {
        fake.calls().iter().filter(|c| c.starts_with(&prefix.iter().map(|s| s.to_string()).collect::<Vec<_>>())).count()
    }

    #[test]
    fn an_inactive_drbd_resource_keeps_its_storage_and_is_taken_down_not_up() {
        let dir = tempfile::tempdir().expect("tempdir");
        let fake = Arc::new(FakeRunner::new());
        let runner: Arc<dyn CommandRunner> = fake.clone();
        let layer = crate::drbd::DrbdLayer::new(runner, dir.path().join("drbd.d"), crate::drbd::DrbdMode::Kernel, Duration::from_secs(5))
            .expect("drbd layer");
        // The kernel has the resource up.
        layer.feed_events("exists resource name:web role:Secondary\nexists -\n");
        let a = applier_with(&fake, Duration::from_secs(5), Ok(Arc::new(layer)));
        let mut r = rsc("web", "p");
        r.drbd = Some(cairn_proto::DrbdDesired {
            port: 7000,
            peer_slots: 7,
            secret: "s".into(),
            address: "127.0.0.1".into(),
            host: "n1".into(),
            volumes: vec![cairn_proto::DrbdVolumeDesired { number: 0, minor: 1000, ..Default::default() }],
            ..Default::default()
        });
        r.inactive = true;
        fake.answer(&["drbdsetup", "down", "web"], "");
        rt().block_on(async {
            let o = a.apply(full(1, vec![pool("p", dir.path().join("pool").as_path())], vec![r.clone()])).await;
            assert_eq!(o.resources.len(), 1);
            assert!(o.resources[0].error.is_none(), "{:?}", o.resources[0].error);
            assert!(o.resources[0].volumes[0].device_path.is_some(), "the volume stays");
        });
        assert_eq!(count(&fake, &["drbdsetup", "down", "web"]), 1);
        assert_eq!(count(&fake, &["drbdadm"]), 0, "nothing brings it up: {:?}", fake.calls());
    }

    #[test]
    fn applying_twice_changes_nothing_the_second_time_and_a_delete_cleans_up() {
        let dir = tempfile::tempdir().expect("tempdir");
        let fake = Arc::new(FakeRunner::new());
        let a = applier(&fake, Duration::from_secs(5));
        rt().block_on(async {
            let o = a.apply(full(1, vec![pool("p", dir.path())], vec![rsc("web", "p")])).await;
            assert_eq!(o.resources.len(), 1);
            assert!(o.resources[0].error.is_none(), "{:?}", o.resources[0].error);
            assert_eq!(o.resources[0].volumes[0].device_path.as_deref(), Some("/dev/loop7"));
            assert_eq!(o.resources[0].volumes[0].usable_kib, Some(1024));
            let file = dir.path().join("web_00000_ab.img");
            assert!(file.is_file());
            let before = fake.calls().len();
            let o = a.apply(delta(2, vec![rsc("web", "p")], &[])).await;
            assert!(o.resources[0].error.is_none());
            let again: Vec<_> = fake.calls()[before..].to_vec();
            assert!(again.is_empty(), "a second apply of the same state runs no command: {again:?}");
            // One host-wide listing for the whole run, not one per volume.
            assert_eq!(count(&fake, &["losetup", "--json", "--list"]), 1);
            let o = a.apply(delta(3, vec![], &["web"])).await;
            assert_eq!((o.removed.len(), o.removed[0].error.as_ref()), (1, None));
            assert!(!file.exists());
            assert_eq!(count(&fake, &["losetup", "--detach", "/dev/loop7"]), 1);
            assert!(a.observe().await.resources.is_empty());
        });
    }

    #[test]
    fn external_files_come_with_their_resource_and_go_with_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("root");
        std::fs::create_dir_all(root.join("etc/app/sub")).expect("dirs");
        let fake = Arc::new(FakeRunner::new());
        let files = crate::ext_files::ExtFiles::new(vec!["/etc/app".into()], Some(root.clone()));
        let a = Arc::new(build_applier(&fake, Duration::from_secs(5), Err(vec![])).with_ext_files(files));
        let file = |path: &str| cairn_proto::ExtFileDesired { path: path.into(), content: "aGkK".into(), alt_suffixes: vec![] };
        let web = ResourceDesired { files: vec![file("/etc/app/web.conf")], ..rsc("web", "p") };
        let db = ResourceDesired { files: vec![file("/etc/app/sub/db.conf")], ..rsc("db", "p") };
        rt().block_on(async {
            let o = a.apply(full(1, vec![pool("p", dir.path())], vec![web.clone(), db])).await;
            let err = |n: &str| o.resources.iter().find(|r| r.name == n).and_then(|r| r.error.clone());
            assert_eq!(err("web"), None);
            assert_eq!(std::fs::read(root.join("etc/app/web.conf")).expect("written"), b"hi\n");
            // Not allowed: that resource fails, with LINSTOR's message.
            let e = err("db").expect("refused");
            assert!(e.message.starts_with("The path /etc/app/sub/db.conf does not have a whitelisted parent"), "{e:?}");
            assert!(!root.join("etc/app/sub/db.conf").exists());
            // A full apply without the resource removes it and its file.
            let o = a.apply(full(2, vec![pool("p", dir.path())], vec![])).await;
            assert!(o.removed.iter().all(|r| r.error.is_none()), "{:?}", o.removed);
            assert!(!root.join("etc/app/web.conf").exists());
        });
    }

    #[test]
    fn a_rollback_carried_out_is_not_checked_again_while_its_token_stays() {
        let dir = tempfile::tempdir().expect("tempdir");
        let fake = Arc::new(FakeRunner::new());
        let a = applier(&fake, Duration::from_secs(5));
        let snap = dir.path().join("web_00000@s1.snap");
        let marker = dir.path().join(".web_00000.rollback-r1");
        let mut r = rsc("web", "p");
        r.rollback = Some(cairn_proto::RollbackDesired { snapshot: "s1".into(), id: "r1".into(), ..Default::default() });
        let from = snap.display().to_string();
        let rollbacks = || count(&fake, &["cp", "--reflink=always", &from]);
        rt().block_on(async {
            let o = a.apply(full(1, vec![pool("p", dir.path())], vec![rsc("web", "p")])).await;
            assert!(o.resources[0].error.is_none(), "{:?}", o.resources[0].error);
            std::fs::write(&snap, b"snapshot").expect("snapshot file");
            // The fake `cp` copies nothing: the copy it would make is put
            // where it would land.
            std::fs::write(dir.path().join(".web_00000_ab.img.cairn-tmp"), b"snapshot").expect("copy");
            let o = a.apply(delta(2, vec![r.clone()], &[])).await;
            assert!(o.resources[0].error.is_none(), "{:?}", o.resources[0].error);
            assert_eq!(rollbacks(), 1, "{:?}", fake.calls());
            assert!(marker.is_file(), "the rollback is recorded on disk");
            // Were the token checked again, the volume would be rolled
            // back a second time without its marker.
            std::fs::remove_file(&marker).expect("remove marker");
            let o = a.apply(delta(3, vec![r.clone()], &[])).await;
            assert!(o.resources[0].error.is_none(), "{:?}", o.resources[0].error);
            assert_eq!(rollbacks(), 1, "{:?}", fake.calls());
            // A new rollback token is carried out.
            std::fs::write(dir.path().join(".web_00000_ab.img.cairn-tmp"), b"snapshot").expect("copy");
            r.rollback = Some(cairn_proto::RollbackDesired { snapshot: "s1".into(), id: "r2".into(), ..Default::default() });
            let o = a.apply(delta(4, vec![r.clone()], &[])).await;
            assert!(o.resources[0].error.is_none(), "{:?}", o.resources[0].error);
            assert_eq!(rollbacks(), 2);
        });
    }

    #[test]
    fn a_broken_pool_fails_only_the_resources_placed_in_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let not_a_dir = dir.path().join("plain-file");
        std::fs::write(&not_a_dir, b"x").expect("write");
        let good = dir.path().join("good");
        let fake = Arc::new(FakeRunner::new());
        let a = applier(&fake, Duration::from_secs(5));
        rt().block_on(async {
            let pools = vec![pool("good", &good), pool("bad", &not_a_dir)];
            let o = a.apply(full(1, pools, vec![rsc("x", "good"), rsc("y", "bad")])).await;
            let by_name = |n: &str| o.resources.iter().find(|r| r.name == n).cloned().expect("reported");
            assert!(by_name("x").error.is_none(), "{:?}", by_name("x").error);
            assert!(by_name("y").error.is_some());
            let bad = o.pools.iter().find(|p| p.name == "bad").expect("bad pool");
            assert!(bad.error.is_some(), "the pool carries its reason");
            assert!(o.pools.iter().find(|p| p.name == "good").is_some_and(|p| p.error.is_none() && p.total_kib.is_some()));
            // Deleting and creating resources in the good pool never
            // touches the bad one and succeeds.
            let o = a.apply(delta(2, vec![rsc("z", "good")], &["x"])).await;
            assert!(o.resources[0].error.is_none() && o.removed[0].error.is_none(), "{o:?}");
        });
    }

    #[test]
    fn a_hung_command_holds_up_only_its_own_resource() {
        let dir = tempfile::tempdir().expect("tempdir");
        let fake = Arc::new(FakeRunner::new());
        let slow = dir.path().join("slow_00000_ab.img");
        // Rules match in order: the hang comes before the general answer.
        fake.hang(&["losetup", "--find", "--show", slow.to_str().expect("utf-8")]);
        let a = applier(&fake, Duration::from_secs(3));
        rt().block_on(async {
            let o = a.apply(full(1, vec![pool("p", dir.path())], vec![])).await;
            assert!(o.resources.is_empty());
            let me = a.clone();
            let hung = tokio::spawn(async move { me.apply(delta(2, vec![rsc("slow", "p")], &[])).await });
            // Wait until the hung command runs.
            while count(&fake, &["losetup", "--find", "--show", slow.to_str().expect("utf-8")]) == 0 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            let others: Vec<_> = (0..5)
                .map(|i| {
                    let me = a.clone();
                    tokio::spawn(async move { me.apply(delta(3 + i, vec![rsc(&format!("fast{i}"), "p")], &[])).await })
                })
                .collect();
            for t in others {
                let o = t.await.expect("task");
                assert!(o.resources[0].error.is_none(), "{:?}", o.resources[0].error);
            }
            // Observing does not wait either.
            let seen = a.observe().await;
            assert!(seen.resources.iter().filter(|r| r.name.starts_with("fast")).count() == 5);
            assert!(!hung.is_finished(), "the other resources were done while the hung command still ran");
            let o = hung.await.expect("task");
            let e = o.resources[0].error.as_ref().expect("the hung resource fails with the timeout");
            assert!(e.cause.as_deref().is_some_and(|c| c.contains("did not finish")), "{e:?}");
        });
    }

    #[test]
    fn a_hung_capacity_command_never_keeps_an_observation_waiting() {
        let dir = tempfile::tempdir().expect("tempdir");
        let fake = Arc::new(FakeRunner::new());
        // Rules match in order: df hangs (until the 3 s command timeout).
        fake.hang(&["df"]);
        let a = applier(&fake, Duration::from_secs(3));
        rt().block_on(async {
            // The full apply measures the pool itself: it waits out df.
            let o = a.apply(full(1, vec![pool("p", dir.path())], vec![])).await;
            assert!(o.pools[0].error.is_some(), "{:?}", o.pools);
            // An observation starts a new measurement (df hangs again) and
            // answers after at most MEASURE_WAIT with the last figures.
            let t = std::time::Instant::now();
            let seen = a.observe().await;
            assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
            assert_eq!(seen.pools.len(), 1);
            assert!(seen.pools[0].error.is_some(), "the last measurement: {:?}", seen.pools);
            // The measurement still runs: the next one does not start another.
            let dfs = count(&fake, &["df"]);
            let t = std::time::Instant::now();
            a.observe().await;
            assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
            assert_eq!(count(&fake, &["df"]), dfs, "one measurement at a time");
        });
    }

    #[test]
    fn pools_are_measured_again_soon_after_an_apply_and_seldom_without() {
        let dir = tempfile::tempdir().expect("tempdir");
        let fake = Arc::new(FakeRunner::new());
        let a = applier(&fake, Duration::from_secs(5));
        rt().block_on(async {
            a.apply(full(1, vec![pool("p", dir.path())], vec![])).await;
            a.observe().await;
            let dfs = count(&fake, &["df"]);
            assert!(dfs > 0);
            // Nothing applied since: past MEASURE_AFTER_CHANGE, the figures
            // are still recent enough.
            tokio::time::sleep(MEASURE_AFTER_CHANGE + Duration::from_millis(100)).await;
            a.observe().await;
            assert_eq!(count(&fake, &["df"]), dfs, "measured again with nothing applied");
            // An apply ended after that measurement began: the next
            // observation measures.
            let o = a.apply(delta(2, vec![rsc("web", "p")], &[])).await;
            assert!(o.resources[0].error.is_none(), "{o:?}");
            let dfs = count(&fake, &["df"]);
            a.observe().await;
            assert!(count(&fake, &["df"]) > dfs, "not measured after the apply");
            // And not again right after.
            let dfs = count(&fake, &["df"]);
            a.observe().await;
            assert_eq!(count(&fake, &["df"]), dfs);
        });
    }

    #[test]
    fn a_late_older_request_does_not_undo_a_newer_one() {
        let dir = tempfile::tempdir().expect("tempdir");
        let fake = Arc::new(FakeRunner::new());
        let a = applier(&fake, Duration::from_secs(5));
        rt().block_on(async {
            a.apply(full(1, vec![pool("p", dir.path())], vec![])).await;
            // Generation 3 removes what generation 2 (arriving late) creates.
            let o = a.apply(delta(3, vec![], &["web"])).await;
            assert!(o.removed[0].error.is_none());
            let o = a.apply(delta(2, vec![rsc("web", "p")], &[])).await;
            assert_eq!(o.removed.len(), 1, "the resource stays removed: {o:?}");
            assert!(!dir.path().join("web_00000_ab.img").exists());
            // A delta from before a full apply (delayed on an old
            // connection) does not bring back what the full apply left out.
            a.apply(full(10, vec![pool("p", dir.path())], vec![])).await;
            let o = a.apply(delta(8, vec![rsc("old", "p")], &[])).await;
            assert_eq!(o.removed.len(), 1, "{o:?}");
            assert!(!dir.path().join("old_00000_ab.img").exists());
            // A restarted controller starts over at generation 1: its full
            // apply is the new baseline.
            let o = a.apply(full(1, vec![pool("p", dir.path())], vec![rsc("web", "p")])).await;
            assert!(o.resources[0].error.is_none(), "{o:?}");
            let o = a.apply(delta(2, vec![rsc("db", "p")], &[])).await;
            assert!(o.resources[0].error.is_none() && dir.path().join("db_00000_ab.img").exists(), "{o:?}");
        });
    }

    fn failure(why: &str) -> ObjectError {
        ObjectError { message: format!("Failed to take snapshot: {why}"), cause: Some(why.into()), details: None }
    }

    #[test]
    fn failed_snapshots_survive_a_restart_and_go_with_their_snapshot() {
        let dir = tempfile::tempdir().expect("tempdir");
        let at = Some(dir.path().join("failed-snapshots"));
        let mut f = FailedSnapshots::load(at.clone());
        f.insert("web", "s1", failure("no space"));
        f.insert("web", "s2", failure("busy"));
        f.insert("db", "s1", failure("gone"));
        // A restart reads them back.
        let mut again = FailedSnapshots::load(at.clone());
        assert_eq!(again.get("web", "s1"), Some(&failure("no space")));
        assert_eq!(again.get("db", "s1"), Some(&failure("gone")));
        // s2 is no longer desired: forgotten, also on disk; db is untouched.
        again.retain("web", |s| s == "s1");
        assert!(again.get("web", "s2").is_none());
        let third = FailedSnapshots::load(at.clone());
        assert!(third.get("web", "s2").is_none() && third.get("web", "s1").is_some() && third.get("db", "s1").is_some());
        let mut files: Vec<String> = std::fs::read_dir(dir.path().join("failed-snapshots"))
            .expect("dir")
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        files.sort();
        assert_eq!(files, ["db@s1", "web@s1"]);
        // Without a directory (unit tests of the applier) it still works in memory.
        let mut mem = FailedSnapshots::load(None);
        mem.insert("x", "y", failure("z"));
        assert!(mem.get("x", "y").is_some());
    }
}
