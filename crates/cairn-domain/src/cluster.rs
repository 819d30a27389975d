//! The whole cluster as the controller holds it, and the changes that move
//! it from one state to the next.

use cairn_api::ApiCallRc;
use serde::{Deserialize, Serialize};

use crate::Props;
use crate::auth_token::AuthToken;
use crate::ext_file::ExternalFile;
use crate::kvs::KeyValueStore;
use crate::name::key;
use crate::node::Node;
use crate::node_connection::NodeConnection;
use crate::remote::Remote;
use crate::resource::Resource;
use crate::resource_connection::ResourceConnection;
use crate::resource_definition::{ResourceDefinition, VolumeDefinition};
use crate::resource_group::{ResourceGroup, VolumeGroup};
use crate::schedule::Schedule;
use crate::snapshot::SnapshotDfn;
use crate::storage_pool::{StorPool, StorPoolDfn};

/// Every object the controller persists.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Object {
    Node(Node),
    StorPoolDfn(StorPoolDfn),
    StorPool(StorPool),
    RscGrp(ResourceGroup),
    VlmGrp(VolumeGroup),
    RscDfn(ResourceDefinition),
    VlmDfn(VolumeDefinition),
    Rsc(Resource),
    Kvs(KeyValueStore),
    NodeConn(NodeConnection),
    CtrlProps(Props),
    SnapDfn(SnapshotDfn),
    RscConn(ResourceConnection),
    ExtFile(ExternalFile),
    Remote(Remote),
    AuthToken(AuthToken),
    Schedule(Schedule),
    /// Not desired state: a record of an unexpected failure, kept with
    /// the cluster's objects so it outlives a restart.
    ErrorReport(cairn_proto::ErrorReport),
}

/// The kind of an object: the table (or key prefix) it is stored under.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    Node,
    StorPoolDfn,
    StorPool,
    RscGrp,
    VlmGrp,
    RscDfn,
    VlmDfn,
    Rsc,
    Kvs,
    NodeConn,
    CtrlProps,
    SnapDfn,
    RscConn,
    ExtFile,
    Remote,
    AuthToken,
    Schedule,
    ErrorReport,
}

impl Kind {
    pub const ALL: [Kind; 18] = [
        Kind::Node,
        Kind::StorPoolDfn,
        Kind::StorPool,
        Kind::RscGrp,
        Kind::VlmGrp,
        Kind::RscDfn,
        Kind::VlmDfn,
        Kind::Rsc,
        Kind::Kvs,
        Kind::NodeConn,
        Kind::CtrlProps,
        Kind::SnapDfn,
        Kind::RscConn,
        Kind::ExtFile,
        Kind::Remote,
        Kind::AuthToken,
        Kind::Schedule,
        Kind::ErrorReport,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Node => "node",
            Kind::StorPoolDfn => "stor_pool_dfn",
            Kind::StorPool => "stor_pool",
            Kind::RscGrp => "rsc_grp",
            Kind::VlmGrp => "vlm_grp",
            Kind::RscDfn => "rsc_dfn",
            Kind::VlmDfn => "vlm_dfn",
            Kind::Rsc => "rsc",
            Kind::Kvs => "kvs",
            Kind::NodeConn => "node_conn",
            Kind::CtrlProps => "ctrl_props",
            Kind::SnapDfn => "snapshot_dfn",
            Kind::RscConn => "rsc_conn",
            Kind::ExtFile => "ext_file",
            Kind::Remote => "remote",
            Kind::AuthToken => "auth_token",
            Kind::Schedule => "schedule",
            Kind::ErrorReport => "error_report",
        }
    }

    pub fn parse(s: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// The identity of an object: upper-case name keys.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ObjKey {
    Node(String),
    StorPoolDfn(String),
    StorPool(String, String),
    RscGrp(String),
    VlmGrp(String, u32),
    RscDfn(String),
    VlmDfn(String, u32),
    Rsc(String, String),
    Kvs(String),
    NodeConn(String, String),
    CtrlProps,
    /// (resource definition, snapshot)
    SnapDfn(String, String),
    /// (resource definition, node a, node b), nodes sorted
    RscConn(String, String, String),
    /// The file's path, as given (paths are case-sensitive).
    ExtFile(String),
    Remote(String),
    /// The token's id.
    AuthToken(u32),
    Schedule(String),
    /// The report's id.
    ErrorReport(String),
}

impl ObjKey {
    pub fn kind(&self) -> Kind {
        match self {
            ObjKey::Node(_) => Kind::Node,
            ObjKey::StorPoolDfn(_) => Kind::StorPoolDfn,
            ObjKey::StorPool(..) => Kind::StorPool,
            ObjKey::RscGrp(_) => Kind::RscGrp,
            ObjKey::VlmGrp(..) => Kind::VlmGrp,
            ObjKey::RscDfn(_) => Kind::RscDfn,
            ObjKey::VlmDfn(..) => Kind::VlmDfn,
            ObjKey::Rsc(..) => Kind::Rsc,
            ObjKey::Kvs(_) => Kind::Kvs,
            ObjKey::NodeConn(..) => Kind::NodeConn,
            ObjKey::CtrlProps => Kind::CtrlProps,
            ObjKey::SnapDfn(..) => Kind::SnapDfn,
            ObjKey::RscConn(..) => Kind::RscConn,
            ObjKey::ExtFile(_) => Kind::ExtFile,
            ObjKey::Remote(_) => Kind::Remote,
            ObjKey::AuthToken(_) => Kind::AuthToken,
            ObjKey::Schedule(_) => Kind::Schedule,
            ObjKey::ErrorReport(_) => Kind::ErrorReport,
        }
    }

    /// The key as one string, unique within its kind. Names never contain
    /// ':', so it is an unambiguous separator.
    pub fn key_string(&self) -> String {
        match self {
            ObjKey::Node(a)
            | ObjKey::StorPoolDfn(a)
            | ObjKey::RscGrp(a)
            | ObjKey::RscDfn(a)
            | ObjKey::Kvs(a)
            | ObjKey::ExtFile(a)
            | ObjKey::Remote(a)
            | ObjKey::Schedule(a)
            | ObjKey::ErrorReport(a) => a.clone(),
            ObjKey::StorPool(a, b) | ObjKey::Rsc(a, b) | ObjKey::NodeConn(a, b) | ObjKey::SnapDfn(a, b) => {
                format!("{a}:{b}")
            }
            ObjKey::VlmGrp(a, n) | ObjKey::VlmDfn(a, n) => format!("{a}:{n}"),
            ObjKey::CtrlProps => "CTRL".into(),
            ObjKey::RscConn(rd, a, b) => format!("{rd}:{a}:{b}"),
            ObjKey::AuthToken(id) => id.to_string(),
        }
    }
}

impl Object {
    pub fn key(&self) -> ObjKey {
        match self {
            Object::Node(n) => ObjKey::Node(key(&n.name)),
            Object::StorPoolDfn(d) => ObjKey::StorPoolDfn(key(&d.name)),
            Object::StorPool(p) => ObjKey::StorPool(key(&p.node), key(&p.name)),
            Object::RscGrp(g) => ObjKey::RscGrp(key(&g.name)),
            Object::VlmGrp(v) => ObjKey::VlmGrp(key(&v.resource_group), v.volume_number),
            Object::RscDfn(d) => ObjKey::RscDfn(key(&d.name)),
            Object::VlmDfn(v) => ObjKey::VlmDfn(key(&v.resource_definition), v.volume_number),
            Object::Rsc(r) => ObjKey::Rsc(key(&r.resource_definition), key(&r.node)),
            Object::Kvs(k) => ObjKey::Kvs(key(&k.name)),
            Object::NodeConn(c) => {
                let (a, b) = NodeConnection::sorted_keys(&c.node_a, &c.node_b);
                ObjKey::NodeConn(a, b)
            }
            Object::CtrlProps(_) => ObjKey::CtrlProps,
            Object::SnapDfn(s) => ObjKey::SnapDfn(key(&s.resource_definition), key(&s.name)),
            Object::RscConn(c) => {
                let (rd, a, b) = ResourceConnection::map_key(&c.resource_definition, &c.node_a, &c.node_b);
                ObjKey::RscConn(rd, a, b)
            }
            Object::ExtFile(f) => ObjKey::ExtFile(f.path.clone()),
            Object::Remote(r) => ObjKey::Remote(key(&r.name)),
            Object::AuthToken(t) => ObjKey::AuthToken(t.id),
            Object::Schedule(o) => ObjKey::Schedule(key(&o.name)),
            Object::ErrorReport(o) => ObjKey::ErrorReport(o.id.to_ascii_uppercase()),
        }
    }

    /// This object as a `Put` change.
    pub fn into_put(self) -> Change {
        Change::Put(self)
    }

    /// The object's own JSON document (without the kind tag).
    pub fn to_json(&self) -> Result<String, serde_json::Error> {
        match self {
            Object::Node(o) => serde_json::to_string(o),
            Object::StorPoolDfn(o) => serde_json::to_string(o),
            Object::StorPool(o) => serde_json::to_string(o),
            Object::RscGrp(o) => serde_json::to_string(o),
            Object::VlmGrp(o) => serde_json::to_string(o),
            Object::RscDfn(o) => serde_json::to_string(o),
            Object::VlmDfn(o) => serde_json::to_string(o),
            Object::Rsc(o) => serde_json::to_string(o),
            Object::Kvs(o) => serde_json::to_string(o),
            Object::NodeConn(o) => serde_json::to_string(o),
            Object::CtrlProps(o) => serde_json::to_string(o),
            Object::SnapDfn(o) => serde_json::to_string(o),
            Object::RscConn(o) => serde_json::to_string(o),
            Object::ExtFile(o) => serde_json::to_string(o),
            Object::Remote(o) => serde_json::to_string(o),
            Object::AuthToken(o) => serde_json::to_string(o),
            Object::Schedule(o) => serde_json::to_string(o),
            Object::ErrorReport(o) => serde_json::to_string(o),
        }
    }

    /// Reads an object back from its kind and JSON document.
    pub fn from_json(kind: Kind, data: &str) -> Result<Object, serde_json::Error> {
        Ok(match kind {
            Kind::Node => Object::Node(serde_json::from_str(data)?),
            Kind::StorPoolDfn => Object::StorPoolDfn(serde_json::from_str(data)?),
            Kind::StorPool => Object::StorPool(serde_json::from_str(data)?),
            Kind::RscGrp => Object::RscGrp(serde_json::from_str(data)?),
            Kind::VlmGrp => Object::VlmGrp(serde_json::from_str(data)?),
            Kind::RscDfn => Object::RscDfn(serde_json::from_str(data)?),
            Kind::VlmDfn => Object::VlmDfn(serde_json::from_str(data)?),
            Kind::Rsc => Object::Rsc(serde_json::from_str(data)?),
            Kind::Kvs => Object::Kvs(serde_json::from_str(data)?),
            Kind::NodeConn => Object::NodeConn(serde_json::from_str(data)?),
            Kind::CtrlProps => Object::CtrlProps(serde_json::from_str(data)?),
            Kind::SnapDfn => Object::SnapDfn(serde_json::from_str(data)?),
            Kind::RscConn => Object::RscConn(serde_json::from_str(data)?),
            Kind::ExtFile => Object::ExtFile(serde_json::from_str(data)?),
            Kind::Remote => Object::Remote(serde_json::from_str(data)?),
            Kind::AuthToken => Object::AuthToken(serde_json::from_str(data)?),
            Kind::Schedule => Object::Schedule(serde_json::from_str(data)?),
            Kind::ErrorReport => Object::ErrorReport(serde_json::from_str(data)?),
        })
    }
}

/// One persisted change.
#[expect(clippy::large_enum_variant, reason = "a request produces a handful of changes")]
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    Put(Object),
    Delete(ObjKey),
}

impl Change {
    pub fn key(&self) -> ObjKey {
        match self {
            Change::Put(o) => o.key(),
            Change::Delete(k) => k.clone(),
        }
    }
}

/// What a mutating operation decided: changes to persist, replies to send.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Outcome {
    pub changes: Vec<Change>,
    pub replies: Vec<ApiCallRc>,
}

impl Outcome {
    pub fn put(&mut self, o: Object) {
        self.changes.push(Change::Put(o));
    }

    pub fn delete(&mut self, k: ObjKey) {
        self.changes.push(Change::Delete(k));
    }

    pub fn reply(&mut self, rc: ApiCallRc) {
        self.replies.push(rc);
    }
}

/// The maps the cluster is made of: persistent (structurally shared)
/// ordered maps, so a clone costs O(1) and the controller can hand readers
/// an immutable snapshot while the next change is made on a copy.
pub type Map<K, V> = imbl::OrdMap<K, V>;

/// The cluster's objects, keyed by upper-case names.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Cluster {
    pub nodes: Map<String, Node>,
    pub stor_pool_dfns: Map<String, StorPoolDfn>,
    /// (node, pool)
    pub stor_pools: Map<(String, String), StorPool>,
    pub rsc_grps: Map<String, ResourceGroup>,
    /// (resource group, volume number)
    pub vlm_grps: Map<(String, u32), VolumeGroup>,
    pub rsc_dfns: Map<String, ResourceDefinition>,
    /// (resource definition, volume number)
    pub vlm_dfns: Map<(String, u32), VolumeDefinition>,
    /// (resource definition, node)
    pub resources: Map<(String, String), Resource>,
    pub kvs: Map<String, KeyValueStore>,
    /// (node a, node b), sorted
    pub node_conns: Map<(String, String), NodeConnection>,
    pub ctrl_props: Props,
    /// (resource definition, snapshot)
    pub snapshots: Map<(String, String), SnapshotDfn>,
    /// (resource definition, node a, node b), nodes sorted
    pub rsc_conns: Map<(String, String, String), ResourceConnection>,
    /// External files by path.
    pub ext_files: Map<String, ExternalFile>,
    /// Remotes (S3 buckets, other controllers) by upper-case name.
    pub remotes: Map<String, Remote>,
    /// REST API tokens by id, revoked ones included.
    pub auth_tokens: Map<u32, AuthToken>,
    /// Backup schedules by upper-case name.
    pub schedules: Map<String, Schedule>,
    /// The controller's error reports by upper-case id.
    pub error_reports: Map<String, cairn_proto::ErrorReport>,
    /// Index: node key -> keys of the resource definitions placed on it,
    /// each with its resource's DRBD TCP port there. A new resource's port
    /// is found from it alone: looking up every resource of the node in
    /// [`Cluster::resources`] was 7 % of the controller's time in bulk
    /// creates at 100,000 resources.
    pub(crate) rscs_by_node: Map<String, imbl::OrdMap<String, Option<u16>>>,
    /// Index: DRBD minor -> how many volume definitions hold it.
    pub(crate) minors: Map<u32, u32>,
    /// Index: the held minors as runs of consecutive numbers, first ->
    /// last (both held). The lowest free minor is then a look-up, where a
    /// walk over the held minors took a step per volume definition.
    pub(crate) minor_runs: Map<u32, u32>,
    /// Index: (node key, pool key) -> KiB of the volumes placed there (by
    /// their definitions' sizes) and how many resources have a volume
    /// there. Placement reads it for every pool of the cluster; summing
    /// every resource for each request was most of a spawn's time at
    /// 30,000 resources.
    pool_usage: Map<(String, String), (i64, i64)>,
    /// Index: node key -> TCP port -> how many deleted replicas, not yet
    /// forgotten by every peer, held it there (`freed_ports` of the
    /// definitions).
    freed_ports: Map<String, Map<u16, u32>>,
}

/// Counts one more (`up`) or one less holder of `k` in a counting index.
fn count<K: Ord + Clone>(m: &mut Map<K, u32>, k: K, up: bool) {
    let n = m.get(&k).copied().unwrap_or(0);
    match (up, n) {
        (true, _) => {
            m.insert(k, n + 1);
        }
        (false, 0 | 1) => {
            m.remove(&k);
        }
        (false, _) => {
            m.insert(k, n - 1);
        }
    }
}

impl Cluster {
    /// Counts one more (`up`) or one less volume definition that holds DRBD
    /// minor `m`, and keeps [`Cluster::minor_runs`] with it.
    fn hold_minor(&mut self, m: u32, up: bool) {
        let held = self.minors.contains_key(&m);
        count(&mut self.minors, m, up);
        match (held, self.minors.contains_key(&m)) {
            (false, true) => {
                // Joins the runs that end right before `m` and start right after.
                let first = m
                    .checked_sub(1)
                    .and_then(|before| self.minor_runs.range(..=before).next_back().filter(|(_, last)| **last == before))
                    .map_or(m, |(first, _)| *first);
                let last = m.checked_add(1).and_then(|after| self.minor_runs.remove(&after)).unwrap_or(m);
                self.minor_runs.insert(first, last);
            }
            (true, false) => {
                let Some((first, last)) = self.minor_runs.range(..=m).next_back().map(|(f, l)| (*f, *l)) else {
                    debug_assert!(false, "minor {m} was held but is in no run");
                    return;
                };
                if last < m {
                    debug_assert!(false, "minor {m} was held but is in no run");
                    return;
                }
                self.minor_runs.remove(&first);
                if first < m {
                    self.minor_runs.insert(first, m - 1);
                }
                if m < last {
                    self.minor_runs.insert(m + 1, last);
                }
            }
            _ => {}
        }
    }

    /// The lowest minor from `from` on that no volume definition holds
    /// (`None` past `u32::MAX`).
    pub(crate) fn free_minor_from(&self, from: u32) -> Option<u32> {
        match self.minor_runs.range(..=from).next_back() {
            Some((_, last)) if *last >= from => last.checked_add(1),
            _ => Some(from),
        }
    }

    /// Counts resource `r` (definition key `rd`, node key `node`) into
    /// [`Cluster::pool_usage`] (`up`) or out of it, with the volume
    /// definitions' sizes as they are now.
    fn index_usage(&mut self, rd: &str, node: &str, r: &Resource, up: bool) {
        let sign = if up { 1 } else { -1 };
        let mut counted: Vec<String> = Vec::new();
        for v in r.volumes.values() {
            let pool = key(&v.storage_pool);
            let size = self.vlm_dfns.get(&(rd.to_string(), v.volume_number)).map_or(0, |vd| vd.size_kib);
            let first = !counted.contains(&pool);
            if first {
                counted.push(pool.clone());
            }
            self.adjust_usage(node, pool, size.wrapping_mul(sign), if first { sign } else { 0 });
        }
    }

    /// A volume definition's size changed by `by` KiB (or it came or
    /// went): every resource of it with that volume reserves that much more.
    fn index_vd_size(&mut self, rd: &str, nr: u32, by: i64) {
        if by == 0 {
            return;
        }
        let touched: Vec<(String, String)> = self
            .resources
            .range((rd.to_string(), String::new())..)
            .take_while(|((d, _), _)| d == rd)
            .filter_map(|((_, node), r)| r.volumes.get(&nr).map(|v| (node.clone(), key(&v.storage_pool))))
            .collect();
        for (node, pool) in touched {
            self.adjust_usage(&node, pool, by, 0);
        }
    }

    fn adjust_usage(&mut self, node: &str, pool: String, kib: i64, rscs: i64) {
        let k = (node.to_string(), pool);
        let (had_kib, had_rscs) = self.pool_usage.get(&k).copied().unwrap_or((0, 0));
        let now = (had_kib.wrapping_add(kib), had_rscs + rscs);
        if now == (0, 0) {
            self.pool_usage.remove(&k);
        } else {
            self.pool_usage.insert(k, now);
        }
    }

    /// KiB placed in a pool of a node (by the volume definitions' sizes)
    /// and how many resources use it, from the index.
    pub fn pool_usage(&self, node_key: &str, pool_key: &str) -> (i64, usize) {
        self.pool_usage
            .get(&(node_key.to_string(), pool_key.to_string()))
            .map_or((0, 0), |(kib, n)| (*kib, usize::try_from(*n).unwrap_or(0)))
    }

    /// Builds a cluster from stored objects.
    pub fn from_objects(objects: impl IntoIterator<Item = Object>) -> Cluster {
        let mut c = Cluster::default();
        c.apply(objects.into_iter().map(Change::Put));
        c
    }

    /// Applies committed changes.
    pub fn apply(&mut self, changes: impl IntoIterator<Item = Change>) {
        for change in changes {
            match change {
                Change::Put(o) => self.put(o),
                Change::Delete(k) => self.remove(&k),
            }
        }
    }

    fn put(&mut self, o: Object) {
        match (o.key(), o) {
            (ObjKey::Node(k), Object::Node(v)) => {
                self.nodes.insert(k, v);
            }
            (ObjKey::StorPoolDfn(k), Object::StorPoolDfn(v)) => {
                self.stor_pool_dfns.insert(k, v);
            }
            (ObjKey::StorPool(a, b), Object::StorPool(v)) => {
                self.stor_pools.insert((a, b), v);
            }
            (ObjKey::RscGrp(k), Object::RscGrp(v)) => {
                self.rsc_grps.insert(k, v);
            }
            (ObjKey::VlmGrp(a, n), Object::VlmGrp(v)) => {
                self.vlm_grps.insert((a, n), v);
            }
            (ObjKey::RscDfn(k), Object::RscDfn(v)) => {
                self.index_freed_ports(&v, true);
                if let Some(old) = self.rsc_dfns.insert(k, v) {
                    self.index_freed_ports(&old, false);
                }
            }
            (ObjKey::VlmDfn(a, n), Object::VlmDfn(v)) => {
                if let Some(m) = v.drbd_minor {
                    self.hold_minor(m, true);
                }
                let size = v.size_kib;
                let old = self.vlm_dfns.insert((a.clone(), n), v);
                let grown = size.wrapping_sub(old.as_ref().map_or(0, |o| o.size_kib));
                self.index_vd_size(&a, n, grown);
                if let Some(m) = old.and_then(|old| old.drbd_minor) {
                    self.hold_minor(m, false);
                }
            }
            (ObjKey::Rsc(a, b), Object::Rsc(v)) => {
                self.rscs_by_node.entry(b.clone()).or_default().insert(a.clone(), v.drbd.as_ref().map(|d| d.tcp_port));
                self.index_usage(&a, &b, &v, true);
                if let Some(old) = self.resources.insert((a.clone(), b.clone()), v) {
                    self.index_usage(&a, &b, &old, false);
                }
            }
            (ObjKey::Kvs(k), Object::Kvs(v)) => {
                self.kvs.insert(k, v);
            }
            (ObjKey::NodeConn(a, b), Object::NodeConn(v)) => {
                self.node_conns.insert((a, b), v);
            }
            (ObjKey::CtrlProps, Object::CtrlProps(v)) => self.ctrl_props = v,
            (ObjKey::SnapDfn(a, b), Object::SnapDfn(v)) => {
                self.snapshots.insert((a, b), v);
            }
            (ObjKey::RscConn(rd, a, b), Object::RscConn(v)) => {
                self.rsc_conns.insert((rd, a, b), v);
            }
            (ObjKey::ExtFile(k), Object::ExtFile(v)) => {
                self.ext_files.insert(k, v);
            }
            (ObjKey::Remote(k), Object::Remote(v)) => {
                self.remotes.insert(k, v);
            }
            (ObjKey::AuthToken(k), Object::AuthToken(v)) => {
                self.auth_tokens.insert(k, v);
            }
            (ObjKey::Schedule(k), Object::Schedule(v)) => {
                self.schedules.insert(k, v);
            }
            (ObjKey::ErrorReport(k), Object::ErrorReport(v)) => {
                self.error_reports.insert(k, v);
            }
            _ => unreachable!("Object::key returns the key variant of the object's own kind"),
        }
    }

    fn remove(&mut self, k: &ObjKey) {
        match k {
            ObjKey::Node(k) => {
                self.nodes.remove(k);
            }
            ObjKey::StorPoolDfn(k) => {
                self.stor_pool_dfns.remove(k);
            }
            ObjKey::StorPool(a, b) => {
                self.stor_pools.remove(&(a.clone(), b.clone()));
            }
            ObjKey::RscGrp(k) => {
                self.rsc_grps.remove(k);
            }
            ObjKey::VlmGrp(a, n) => {
                self.vlm_grps.remove(&(a.clone(), *n));
            }
            ObjKey::RscDfn(k) => {
                if let Some(old) = self.rsc_dfns.remove(k) {
                    self.index_freed_ports(&old, false);
                }
            }
            ObjKey::VlmDfn(a, n) => {
                let old = self.vlm_dfns.remove(&(a.clone(), *n));
                if let Some(o) = &old {
                    self.index_vd_size(a, *n, o.size_kib.wrapping_neg());
                }
                if let Some(m) = old.and_then(|old| old.drbd_minor) {
                    self.hold_minor(m, false);
                }
            }
            ObjKey::Rsc(a, b) => {
                if let Some(old) = self.resources.remove(&(a.clone(), b.clone())) {
                    self.index_usage(a, b, &old, false);
                }
                if let Some(set) = self.rscs_by_node.get_mut(b) {
                    set.remove(a);
                    if set.is_empty() {
                        self.rscs_by_node.remove(b);
                    }
                }
            }
            ObjKey::Kvs(k) => {
                self.kvs.remove(k);
            }
            ObjKey::NodeConn(a, b) => {
                self.node_conns.remove(&(a.clone(), b.clone()));
            }
            ObjKey::CtrlProps => self.ctrl_props.clear(),
            ObjKey::SnapDfn(a, b) => {
                self.snapshots.remove(&(a.clone(), b.clone()));
            }
            ObjKey::RscConn(rd, a, b) => {
                self.rsc_conns.remove(&(rd.clone(), a.clone(), b.clone()));
            }
            ObjKey::ExtFile(k) => {
                self.ext_files.remove(k);
            }
            ObjKey::Remote(k) => {
                self.remotes.remove(k);
            }
            ObjKey::AuthToken(k) => {
                self.auth_tokens.remove(k);
            }
            ObjKey::Schedule(k) => {
                self.schedules.remove(k);
            }
            ObjKey::ErrorReport(k) => {
                self.error_reports.remove(k);
            }
        }
    }

    fn index_freed_ports(&mut self, d: &ResourceDefinition, up: bool) {
        for (node, port) in d.drbd.freed_ports.values() {
            let mut ports = self.freed_ports.get(node).cloned().unwrap_or_default();
            count(&mut ports, *port, up);
            if ports.is_empty() {
                self.freed_ports.remove(node);
            } else {
                self.freed_ports.insert(node.clone(), ports);
            }
        }
    }

    /// TCP ports on a node that deleted replicas held and some peer may
    /// still have configured.
    pub fn freed_ports_on(&self, node_key: &str) -> impl Iterator<Item = u16> + '_ {
        self.freed_ports.get(node_key).into_iter().flat_map(|m| m.keys().copied())
    }

    /// The objects that must always exist (`DfltRscGrp`, the default storage
    /// pool definitions), as changes to commit when they are missing.
    pub fn seed(&self, new_uuid: &mut dyn FnMut() -> String) -> Vec<Change> {
        let mut out = Vec::new();
        if !self.rsc_grps.contains_key(&key(crate::DEFAULT_RSC_GRP)) {
            out.push(Change::Put(Object::RscGrp(ResourceGroup::default_group(new_uuid()))));
        }
        for sp in [crate::DEFAULT_STOR_POOL, crate::DEFAULT_DISKLESS_STOR_POOL] {
            if !self.stor_pool_dfns.contains_key(&key(sp)) {
                out.push(Change::Put(Object::StorPoolDfn(StorPoolDfn { name: sp.to_string(), props: Props::new(), uuid: new_uuid() })));
            }
        }
        out
    }

    /// The volume definitions of one resource definition, by number.
    pub fn vlm_dfns_of<'a>(&'a self, rd_key: &str) -> impl Iterator<Item = &'a VolumeDefinition> + 'a {
        self.vlm_dfns.range((rd_key.to_string(), 0)..=(rd_key.to_string(), u32::MAX)).map(|(_, v)| v)
    }

    /// The resources of one resource definition.
    pub fn resources_of<'a>(&'a self, rd_key: &'a str) -> impl Iterator<Item = &'a Resource> + 'a {
        self.resources.range((rd_key.to_string(), String::new())..).take_while(move |((rd, _), _)| rd == rd_key).map(|(_, r)| r)
    }

    /// The volume groups of one resource group.
    pub fn vlm_grps_of<'a>(&'a self, rg_key: &str) -> impl Iterator<Item = &'a VolumeGroup> + 'a {
        self.vlm_grps.range((rg_key.to_string(), 0)..=(rg_key.to_string(), u32::MAX)).map(|(_, v)| v)
    }

    /// The storage pools of one node.
    pub fn stor_pools_of<'a>(&'a self, node_key: &'a str) -> impl Iterator<Item = &'a StorPool> + 'a {
        self.stor_pools.range((node_key.to_string(), String::new())..).take_while(move |((n, _), _)| n == node_key).map(|(_, p)| p)
    }

    /// The resources placed on one node (through an index, not a scan).
    pub fn resources_on<'a>(&'a self, node_key: &'a str) -> impl Iterator<Item = &'a Resource> + 'a {
        self.rscs_by_node
            .get(node_key)
            .into_iter()
            .flat_map(|rds| rds.keys())
            .filter_map(move |rd| self.resources.get(&(rd.clone(), node_key.to_string())))
    }

    /// The DRBD TCP ports that resources on a node use (from the index).
    pub fn ports_on(&self, node_key: &str) -> impl Iterator<Item = u16> + '_ {
        self.rscs_by_node.get(node_key).into_iter().flat_map(|rds| rds.values().flatten().copied())
    }
}

#[cfg(test)]
mod pool_usage_tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::resource::{Resource, Volume, Volumes};
    use crate::resource_definition::VolumeDefinition;
    use crate::storage_pool::ProviderKind;

    /// What the index must say: every resource summed afresh.
    fn recount(c: &Cluster) -> BTreeMap<(String, String), (i64, i64)> {
        let mut out: BTreeMap<(String, String), (i64, i64)> = BTreeMap::new();
        for ((rd, node), r) in &c.resources {
            let mut counted = Vec::new();
            for v in r.volumes.values() {
                let size = c.vlm_dfns.get(&(rd.clone(), v.volume_number)).map_or(0, |vd| vd.size_kib);
                let e = out.entry((node.clone(), key(&v.storage_pool))).or_default();
                e.0 += size;
                if !counted.contains(&key(&v.storage_pool)) {
                    counted.push(key(&v.storage_pool));
                    e.1 += 1;
                }
            }
        }
        out.retain(|_, v| *v != (0, 0));
        out
    }

    fn rsc(rd: &str, node: &str, vols: &[(u32, &str)]) -> Resource {
        let mut volumes = Volumes::new();
        for (nr, pool) in vols {
            volumes.insert(
                *nr,
                Volume {
                    volume_number: *nr,
                    storage_pool: pool.to_string(),
                    provider_kind: ProviderKind::FileThin,
                    props: Props::new(),
                    flags: Default::default(),
                    uuid: String::new(),
                    luks_secret: None,
                    luks_previous: Vec::new(),
                    source: None,
                    clone_of: None,
                },
            );
        }
        Resource {
            resource_definition: rd.to_string(),
            node: node.to_string(),
            props: Props::new(),
            flags: Default::default(),
            layer_stack: vec!["STORAGE".into()],
            create_timestamp: 0,
            volumes,
            uuid: String::new(),
            drbd: None,
            rollback: None,
        }
    }

    fn vd(rd: &str, nr: u32, size_kib: i64) -> VolumeDefinition {
        VolumeDefinition {
            resource_definition: rd.to_string(),
            volume_number: nr,
            size_kib,
            props: Props::new(),
            flags: Default::default(),
            drbd_minor: None,
            uuid: String::new(),
        }
    }

    #[test]
    fn the_pool_usage_index_matches_a_recount_through_puts_resizes_and_removals() {
        let mut c = Cluster::default();
        // A fixed pseudo-random walk (no seed from outside: the same every run).
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = |n: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % n
        };
        let (rds, nodes, pools) = (["RA", "RB", "RC"], ["N1", "N2", "N3"], ["pool", "POOL", "other"]);
        for step in 0..3000 {
            let rd = rds[next(3) as usize];
            let node = nodes[next(3) as usize];
            let nr = next(3) as u32;
            let change = match next(5) {
                0 | 1 => {
                    let vols: Vec<(u32, &str)> = (0..next(4) as u32).map(|n| (n, pools[next(3) as usize])).collect();
                    Change::Put(Object::Rsc(rsc(rd, node, &vols)))
                }
                2 => Change::Delete(ObjKey::Rsc(rd.into(), node.into())),
                3 => Change::Put(Object::VlmDfn(vd(rd, nr, 1024 * (1 + next(100) as i64)))),
                _ => Change::Delete(ObjKey::VlmDfn(rd.into(), nr)),
            };
            c.apply([change]);
            let want = recount(&c);
            let have: BTreeMap<(String, String), (i64, i64)> = c.pool_usage.iter().map(|(k, v)| (k.clone(), *v)).collect();
            assert_eq!(have, want, "after step {step}");
        }
        // The walk reached every kind of state it is about.
        assert!(!c.resources.is_empty() && !c.vlm_dfns.is_empty());
        assert_eq!(c.pool_usage("N1", "POOL"), recount(&c).get(&("N1".into(), "POOL".into())).map_or((0, 0), |(k, n)| (*k, *n as usize)));
    }
}
