//! Snapshots: a snapshot definition per resource definition and name,
//! holding the snapshot of each node's volumes; restore into a new
//! resource definition; rollback in place.
//!
//! LVM_THIN (thin snapshots) and FILE_THIN (reflink copies, on XFS or
//! Btrfs) take snapshots; other providers are refused with LINSTOR's
//! FAIL_SNAPSHOTS_NOT_SUPPORTED.

use std::collections::{BTreeMap, BTreeSet};

use cairn_api::rc::{self, ApiCallRc};
use cairn_api::snapshot as wire;
use cairn_proto::ZfsRollback;
use serde::{Deserialize, Serialize};

use crate::cluster::{Cluster, ObjKey, Object, Outcome};
use crate::error::{OpError, OpResult};
use crate::name::{NameKind, check, key};
use crate::resource::{PROP_STOR_POOL_NAME, Resource};
use crate::resource_definition::VolumeDefinition;
use crate::storage_pool::ProviderKind;
use crate::{Ctx, Props};

/// Set when every node took its snapshot.
pub const SUCCESSFUL: &str = "SUCCESSFUL";
/// Set (on the snapshot and on the node's entry) when a node could not
/// take it (LINSTOR's flag; python-linstor and the client show "Failed").
pub const FAILED_DEPLOYMENT: &str = "FAILED_DEPLOYMENT";
/// The reason a node could not take the snapshot, in the props of that
/// node's snapshot volumes (observed, never stored).
pub const PROP_FAILURE_REASON: &str = "Cairn/FailureReason";

/// What a node's satellite reports of its snapshot (observed state).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeSnapState {
    /// Not reported yet (or the node is not connected).
    Pending,
    Taken,
    /// The satellite could not take it: why.
    Failed(String),
}

/// One volume of a node's snapshot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SnapshotVolume {
    pub volume_number: u32,
    pub storage_pool: String,
    pub provider_kind: ProviderKind,
    pub uuid: String,
    /// The origin volume's LUKS secret: a restored volume opens with it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub luks_secret: Option<String>,
}

/// The snapshot on one node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeSnapshot {
    pub node: String,
    pub uuid: String,
    pub create_timestamp: i64,
    pub layer_stack: Vec<String>,
    pub volumes: Vec<SnapshotVolume>,
    /// The DRBD node id of the resource the snapshot was taken of: DRBD's
    /// internal metadata in the snapshot belongs to it, so a resource
    /// restored from the snapshot on this node gets the same one (as
    /// LINSTOR does).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drbd_node_id: Option<u8>,
}

/// A volume definition as it was when the snapshot was taken.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SnapshotVlmDfn {
    pub volume_number: u32,
    pub size_kib: i64,
}

/// A snapshot definition with its per-node snapshots.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SnapshotDfn {
    pub resource_definition: String,
    pub name: String,
    pub uuid: String,
    pub flags: BTreeSet<String>,
    pub props: Props,
    pub create_timestamp: i64,
    pub volumes: Vec<SnapshotVlmDfn>,
    /// By node key.
    pub nodes: BTreeMap<String, NodeSnapshot>,
    /// Where the taking of a snapshot of a DRBD resource stands (LINSTOR's
    /// SUSPEND and TAKE_SNAPSHOT steps); `Done` for every other one.
    #[serde(default, skip_serializing_if = "SnapshotPhase::is_done")]
    pub phase: SnapshotPhase,
}

/// The steps of a crash-consistent snapshot of a replicated resource, as
/// LINSTOR takes them: I/O is suspended on every node of the resource,
/// then every node takes its snapshot, then I/O resumes. All nodes'
/// snapshots then hold the same data (and the same DRBD generation ids),
/// which a rollback without a resync needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum SnapshotPhase {
    /// Every node of the resource suspends I/O; no snapshot is taken yet.
    Suspend,
    /// I/O stays suspended while every node takes its snapshot.
    Take,
    /// Taken (or being taken) with I/O running.
    #[default]
    Done,
}

impl SnapshotPhase {
    pub fn is_done(&self) -> bool {
        *self == SnapshotPhase::Done
    }
}

impl SnapshotDfn {
    /// The wire form; `state` says what a node reported of its snapshot.
    pub fn to_api(&self, state: &dyn Fn(&str) -> NodeSnapState) -> wire::Snapshot {
        let states: BTreeMap<&str, NodeSnapState> = self.nodes.values().map(|n| (n.node.as_str(), state(&n.node))).collect();
        let of = |node: &str| states.get(node).cloned().unwrap_or(NodeSnapState::Pending);
        let mut flags = self.flags.clone();
        if !states.is_empty() && states.values().all(|s| *s == NodeSnapState::Taken) {
            flags.insert(SUCCESSFUL.into());
        }
        if states.values().any(|s| matches!(s, NodeSnapState::Failed(_))) {
            flags.insert(FAILED_DEPLOYMENT.into());
        }
        let node_flags = |node: &str| match of(node) {
            NodeSnapState::Taken => vec![SUCCESSFUL.to_string()],
            NodeSnapState::Failed(_) => vec![FAILED_DEPLOYMENT.to_string()],
            NodeSnapState::Pending => Vec::new(),
        };
        let vol = |node: &str| match of(node) {
            NodeSnapState::Taken => ("Successful", Props::new()),
            NodeSnapState::Failed(why) => ("Failed", Props::from([(PROP_FAILURE_REASON.to_string(), why)])),
            NodeSnapState::Pending => ("Pending", Props::new()),
        };
        wire::Snapshot {
            name: self.name.clone(),
            resource_name: self.resource_definition.clone(),
            nodes: self.nodes.values().map(|n| n.node.clone()).collect(),
            props: self.props.clone(),
            flags: flags.into_iter().collect(),
            volume_definitions: self
                .volumes
                .iter()
                .map(|v| wire::SnapshotVolumeDefinition { volume_number: i64::from(v.volume_number), size_kib: v.size_kib })
                .collect(),
            uuid: Some(self.uuid.clone()),
            snapshots: self
                .nodes
                .values()
                .map(|n| {
                    let (state, props) = vol(&n.node);
                    wire::SnapshotNode {
                        snapshot_name: self.name.clone(),
                        node_name: n.node.clone(),
                        create_timestamp: n.create_timestamp,
                        flags: node_flags(&n.node),
                        uuid: n.uuid.clone(),
                        snapshot_volumes: n
                            .volumes
                            .iter()
                            .map(|v| wire::SnapshotVolumeNode {
                                uuid: v.uuid.clone(),
                                vlm_nr: i64::from(v.volume_number),
                                props: props.clone(),
                                state: Some(state.into()),
                            })
                            .collect(),
                    }
                })
                .collect(),
        }
    }
}

/// Where a restored volume comes from: a snapshot of another resource.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeSource {
    pub resource: String,
    pub snapshot: String,
}

/// A rollback a resource's satellite has to carry out once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rollback {
    pub snapshot: String,
    /// Identifies this rollback (the satellite marks volumes with it).
    pub id: String,
    /// How ZFS volumes go back (LINSTOR's `StorDriver/Zfs/RollbackStrategy`
    /// or the client's choice for the call).
    #[serde(default, skip_serializing_if = "ZfsRollback::is_dynamic")]
    pub zfs: ZfsRollback,
    /// ZFS: snapshots of this node taken before this time (ms) are on
    /// zvols renamed aside, not on the resource's (a rollback by clone
    /// did that; carried over by later rollbacks), so `zfs rollback` to
    /// them is impossible.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub aside_before: i64,
}

fn is_zero(v: &i64) -> bool {
    *v == 0
}

fn snap_not_found(op: i64, rd: &str, snap: &str) -> OpError {
    OpError::new(op, rc::FAIL_NOT_FOUND_SNAPSHOT_DFN, format!("Snapshot '{snap}' of resource definition '{rd}' not found."))
        .correction("Use an existing snapshot (GET /v1/view/snapshots).")
        .obj_ref("RscDfn", rd)
        .obj_ref("Snapshot", snap)
}

impl Cluster {
    pub fn snapshots_of<'a>(&'a self, rd_key: &'a str) -> impl Iterator<Item = &'a SnapshotDfn> + 'a {
        self.snapshots.range((rd_key.to_string(), String::new())..).take_while(move |((rd, _), _)| rd == rd_key).map(|(_, s)| s)
    }

    pub fn snapshot(&self, rd: &str, snap: &str, op: i64) -> OpResult<&SnapshotDfn> {
        let d = self.rsc_dfn(rd, op)?;
        self.snapshots.get(&(key(&d.name), key(snap))).ok_or_else(|| snap_not_found(op, &d.name, snap))
    }

    /// `POST …/snapshots` and one entry of `/v1/actions/snapshot/multi`.
    /// `pool_snapshots(node, pool)` is what the node's satellite found out
    /// about the pool (a FILE_THIN directory without reflinks: false), None
    /// while unknown.
    pub fn create_snapshot(
        &self,
        rd: &str,
        req: &wire::Snapshot,
        pool_snapshots: &dyn Fn(&str, &str) -> Option<bool>,
        ctx: &mut Ctx,
    ) -> OpResult<Outcome> {
        const OP: i64 = rc::MASK_CRT | rc::MASK_SNAPSHOT;
        let d = self.rsc_dfn(rd, OP)?;
        let rd_key = key(&d.name);
        check(NameKind::Snapshot, &req.name, OP)?;
        if self.snapshots.contains_key(&(rd_key.clone(), key(&req.name))) {
            return Err(OpError::new(
                OP,
                rc::FAIL_EXISTS_SNAPSHOT_DFN,
                format!("Snapshot '{}' of resource definition '{}' already exists.", req.name, d.name),
            )
            .correction("Use another snapshot name."));
        }
        let wanted: Vec<String> = req.nodes.iter().map(|n| key(n)).collect();
        let rscs: Vec<&Resource> =
            self.resources_of(&rd_key).filter(|r| !r.is_diskless() && (wanted.is_empty() || wanted.contains(&key(&r.node)))).collect();
        if let Some(missing) = wanted.iter().find(|n| !rscs.iter().any(|r| key(&r.node) == **n)) {
            return Err(OpError::new(
                OP,
                rc::FAIL_NOT_FOUND_RSC,
                format!("Resource definition '{}' has no diskful resource on node '{missing}'.", d.name),
            ));
        }
        if rscs.is_empty() {
            return Err(OpError::new(
                OP,
                rc::FAIL_NOT_FOUND_RSC,
                format!("Resource definition '{}' has no diskful resource to snapshot.", d.name),
            )
            .correction("Create a diskful resource first."));
        }
        let volumes = || rscs.iter().flat_map(|r| r.volumes.values().map(move |v| (r, v)));
        if let Some((r, v)) = volumes().find(|(_, v)| !v.provider_kind.supports_snapshots()) {
            return Err(OpError::new(
                OP,
                rc::FAIL_SNAPSHOTS_NOT_SUPPORTED,
                format!("Storage pool '{}' on node '{}' ({}) cannot take snapshots.", v.storage_pool, r.node, v.provider_kind.as_str()),
            )
            .cause("Cairn takes snapshots of LVM_THIN volumes, and of FILE_THIN volumes on file systems with reflinks.")
            .correction("Place the resource in an LVM_THIN (or reflink-capable FILE_THIN) pool."));
        }
        if let Some((r, v)) = volumes().find(|(r, v)| pool_snapshots(&r.node, &v.storage_pool) == Some(false)) {
            return Err(OpError::new(
                OP,
                rc::FAIL_SNAPSHOTS_NOT_SUPPORTED,
                format!("Storage pool '{}' on node '{}' ({}) cannot take snapshots.", v.storage_pool, r.node, v.provider_kind.as_str()),
            )
            .cause(format!("Satellite '{}' found that the pool's file system has no reflinks (cp --reflink=always fails there).", r.node))
            .correction("FILE_THIN snapshots need a pool directory on XFS (reflink=1) or Btrfs; or use an LVM_THIN pool."));
        }
        let mut nodes = BTreeMap::new();
        for r in &rscs {
            nodes.insert(
                key(&r.node),
                NodeSnapshot {
                    node: r.node.clone(),
                    uuid: ctx.uuid(),
                    create_timestamp: ctx.now_ms,
                    layer_stack: r.layer_stack.clone(),
                    volumes: r
                        .volumes
                        .values()
                        .map(|v| SnapshotVolume {
                            volume_number: v.volume_number,
                            storage_pool: v.storage_pool.clone(),
                            provider_kind: v.provider_kind,
                            uuid: ctx.uuid(),
                            luks_secret: v.luks_secret.clone(),
                        })
                        .collect(),
                    drbd_node_id: r.drbd.as_ref().map(|d| d.node_id),
                },
            );
        }
        let s = SnapshotDfn {
            resource_definition: d.name.clone(),
            name: req.name.clone(),
            uuid: ctx.uuid(),
            flags: BTreeSet::new(),
            props: crate::props::checked(crate::whitelist::PropsObj::SnapDfn, &req.props, OP)?,
            create_timestamp: ctx.now_ms,
            volumes: self.vlm_dfns_of(&rd_key).map(|v| SnapshotVlmDfn { volume_number: v.volume_number, size_kib: v.size_kib }).collect(),
            nodes,
            // Replicated: I/O is suspended everywhere first (the caller
            // moves the phases on as the satellites confirm each one).
            phase: if self.resources_of(&rd_key).any(|r| r.drbd.is_some()) { SnapshotPhase::Suspend } else { SnapshotPhase::Done },
        };
        let mut out = Outcome::default();
        out.reply(
            ApiCallRc::success(OP, rc::CREATED, format!("New snapshot '{}' of resource '{}' registered.", s.name, d.name))
                .with_details(format!("Snapshot '{}' of resource '{}' UUID is: {}", s.name, d.name, s.uuid))
                .with_ref("RscDfn", &d.name)
                .with_ref("Snapshot", &s.name),
        );
        out.put(Object::SnapDfn(s));
        Ok(out)
    }

    /// `POST /v1/actions/snapshot/multi`: all or nothing.
    pub fn create_snapshots(
        &self,
        reqs: &[wire::Snapshot],
        pool_snapshots: &dyn Fn(&str, &str) -> Option<bool>,
        ctx: &mut Ctx,
    ) -> OpResult<Outcome> {
        let mut out = Outcome::default();
        let mut seen = BTreeSet::new();
        for r in reqs {
            if !seen.insert((key(&r.resource_name), key(&r.name))) {
                return Err(OpError::new(
                    rc::MASK_CRT | rc::MASK_SNAPSHOT,
                    rc::FAIL_EXISTS_SNAPSHOT_DFN,
                    format!("Snapshot '{}' of '{}' is asked for twice.", r.name, r.resource_name),
                ));
            }
            let o = self.create_snapshot(&r.resource_name, r, pool_snapshots, ctx)?;
            out.changes.extend(o.changes);
            out.replies.extend(o.replies);
        }
        Ok(out)
    }

    /// `DELETE …/snapshots/{snap}` (optionally only on `nodes`).
    pub fn delete_snapshot(&self, rd: &str, snap: &str, nodes: &[String]) -> OpResult<Outcome> {
        const OP: i64 = rc::MASK_DEL | rc::MASK_SNAPSHOT;
        let s = self.snapshot(rd, snap, OP)?;
        let mut out = Outcome::default();
        let k = ObjKey::SnapDfn(key(&s.resource_definition), key(&s.name));
        let mut left = s.clone();
        left.nodes.retain(|n, _| !nodes.is_empty() && !nodes.iter().any(|x| key(x) == *n));
        if left.nodes.is_empty() {
            out.delete(k);
        } else {
            out.put(Object::SnapDfn(left));
        }
        out.reply(
            ApiCallRc::success(OP, rc::DELETED, format!("Snapshot '{}' of resource '{}' deleted.", s.name, s.resource_definition))
                .with_ref("RscDfn", &s.resource_definition)
                .with_ref("Snapshot", &s.name),
        );
        Ok(out)
    }

    /// Moves a snapshot of a replicated resource to its next step (see
    /// [`SnapshotPhase`]); nothing happens when it is gone or already
    /// there. No reply entries: the create call answers for the steps.
    pub fn snapshot_phase(&self, rd: &str, snap: &str, phase: SnapshotPhase) -> OpResult<Outcome> {
        let mut out = Outcome::default();
        if let Some(s) = self.snapshots.get(&(key(rd), key(snap)))
            && s.phase != phase
        {
            let mut s = s.clone();
            s.phase = phase;
            out.put(Object::SnapDfn(s));
        }
        Ok(out)
    }

    /// Snapshots whose taking was cut short (a controller restart between
    /// the steps): one still suspending was never taken and goes; one
    /// being taken is finished with I/O resumed. Either way no resource
    /// stays suspended.
    pub fn finish_interrupted_snapshots(&self) -> Outcome {
        let mut out = Outcome::default();
        for s in self.snapshots.values() {
            match s.phase {
                SnapshotPhase::Done => {}
                SnapshotPhase::Suspend => out.delete(ObjKey::SnapDfn(key(&s.resource_definition), key(&s.name))),
                SnapshotPhase::Take => {
                    let mut s = s.clone();
                    s.phase = SnapshotPhase::Done;
                    out.put(Object::SnapDfn(s));
                }
            }
        }
        out
    }

    /// Whether I/O of the definition's DRBD resources is to be suspended
    /// now (a snapshot of it is being taken).
    pub fn io_suspended(&self, rd_key: &str) -> bool {
        self.snapshots_of(rd_key).any(|s| !s.phase.is_done())
    }

    /// `PUT …/snapshots/{snap}`: properties.
    pub fn modify_snapshot(&self, rd: &str, snap: &str, req: &cairn_api::PropsModify) -> OpResult<Outcome> {
        const OP: i64 = rc::MASK_MOD | rc::MASK_SNAPSHOT;
        let mut s = self.snapshot(rd, snap, OP)?.clone();
        s.props = crate::props::apply(crate::whitelist::PropsObj::SnapDfn, &s.props, req, OP)?;
        let mut out = Outcome::default();
        // LINSTOR answers the keys it set before the 'modified' entry.
        if let Some(e) = crate::props::set_entry(rc::MASK_SNAPSHOT, req) {
            out.reply(e);
        }
        out.reply(ApiCallRc::success(OP, rc::MODIFIED, format!("Snapshot '{}' of resource '{}' modified.", s.name, s.resource_definition)));
        out.put(Object::SnapDfn(s));
        Ok(out)
    }

    /// `POST …/snapshot-restore-volume-definition/{snap}`: the target
    /// definition gets the snapshot's volume definitions.
    pub fn restore_vlm_dfns(&self, rd: &str, snap: &str, req: &wire::SnapshotRestore, ctx: &mut Ctx) -> OpResult<Outcome> {
        const OP: i64 = rc::MASK_CRT | rc::MASK_VLM_DFN;
        let s = self.snapshot(rd, snap, OP)?;
        let to = self.rsc_dfn(&req.to_resource, OP)?;
        let to_key = key(&to.name);
        if self.vlm_dfns_of(&to_key).next().is_some() {
            return Err(OpError::new(
                OP,
                rc::FAIL_EXISTS_VLM_DFN,
                format!("Resource definition '{}' already has volume definitions.", to.name),
            )
            .correction("Restore into an empty resource definition."));
        }
        let uses_drbd = self.rd_uses_drbd(to);
        let mut taken = crate::numbers::Taken::default();
        let mut out = Outcome::default();
        for v in &s.volumes {
            let minor = if uses_drbd { Some(self.alloc_minor(None, &mut taken, OP)?) } else { None };
            let vd = VolumeDefinition {
                resource_definition: to.name.clone(),
                volume_number: v.volume_number,
                size_kib: v.size_kib,
                props: Props::from([(
                    crate::resource_definition::PROP_DRBD_CURRENT_GI.to_string(),
                    crate::resource_definition::new_day0_gi(ctx),
                )]),
                flags: BTreeSet::new(),
                uuid: ctx.uuid(),
                drbd_minor: minor,
            };
            out.put(Object::VlmDfn(vd));
        }
        out.reply(ApiCallRc::success(
            OP,
            rc::CREATED,
            format!("Volume definitions of snapshot '{}' of '{}' restored into '{}'.", s.name, s.resource_definition, to.name),
        ));
        Ok(out)
    }

    /// `POST …/snapshot-restore-resource/{snap}`: resources of the target
    /// definition whose volumes start as copies of the snapshot.
    pub fn restore_resources(&self, rd: &str, snap: &str, req: &wire::SnapshotRestore, ctx: &mut Ctx) -> OpResult<Outcome> {
        const OP: i64 = rc::MASK_CRT | rc::MASK_RSC;
        let s = self.snapshot(rd, snap, OP)?;
        let to = self.rsc_dfn(&req.to_resource, OP)?;
        let to_key = key(&to.name);
        let vds: Vec<&VolumeDefinition> = self.vlm_dfns_of(&to_key).collect();
        if vds.is_empty() {
            return Err(OpError::new(
                OP,
                rc::FAIL_NOT_FOUND_VLM_DFN,
                format!("Resource definition '{}' has no volume definitions.", to.name),
            )
            .correction("Restore the volume definitions first (snapshot-restore-volume-definition)."));
        }
        let nodes: Vec<&NodeSnapshot> =
            s.nodes.values().filter(|n| req.nodes.is_empty() || req.nodes.iter().any(|x| key(x) == key(&n.node))).collect();
        if nodes.is_empty() {
            return Err(OpError::new(OP, rc::FAIL_NOT_FOUND_NODE, "None of the given nodes holds the snapshot."));
        }
        let mut out = Outcome::default();
        let mut taken = crate::numbers::Taken::default();
        for n in nodes {
            if self.resources.contains_key(&(to_key.clone(), key(&n.node))) {
                return Err(OpError::new(OP, rc::FAIL_EXISTS_RSC, format!("Resource '{}' already exists on node '{}'.", to.name, n.node)));
            }
            let snap_pool = n.volumes.first().map(|v| v.storage_pool.clone()).unwrap_or_default();
            let pool = req.stor_pool_rename.get(&snap_pool).cloned().unwrap_or_else(|| snap_pool.clone());
            // Only pools that copy a snapshot cheaply can restore one; a
            // ZFS clone lives in the snapshot's own pool.
            match self.stor_pools.get(&(key(&n.node), key(&pool))).map(|p| p.provider_kind) {
                Some(ProviderKind::LvmThin | ProviderKind::FileThin) => {}
                Some(ProviderKind::Zfs | ProviderKind::ZfsThin) if key(&pool) == key(&snap_pool) => {}
                other => {
                    return Err(OpError::new(
                        OP,
                        rc::FAIL_SNAPSHOTS_NOT_SUPPORTED,
                        format!("Storage pool '{pool}' on node '{}' cannot hold a restored snapshot.", n.node),
                    )
                    .cause(match other {
                        Some(k @ (ProviderKind::Zfs | ProviderKind::ZfsThin)) => {
                            format!(
                                "It is a {} pool other than the snapshot's; a ZFS snapshot is restored as a clone in its own pool.",
                                k.as_str()
                            )
                        }
                        Some(k) => {
                            format!("It is a {} pool; restores need LVM_THIN, FILE_THIN, or the ZFS pool of the snapshot.", k.as_str())
                        }
                        None => "The node has no such pool.".into(),
                    }));
                }
            }
            let mut props = Props::new();
            props.insert(PROP_STOR_POOL_NAME.into(), pool);
            let create = cairn_api::resource::ResourceCreate {
                resource: cairn_api::resource::Resource { node_name: n.node.clone(), props, ..Default::default() },
                layer_list: Some(n.layer_stack.clone()),
                drbd_node_id: n.drbd_node_id.map(i64::from),
                ..Default::default()
            };
            let mut r = self.build_resource(to, &vds, &n.node, &create, &mut taken, OP, ctx)?;
            for v in r.volumes.iter_mut().map(|(_, v)| v) {
                let src = n.volumes.iter().find(|sv| sv.volume_number == v.volume_number);
                v.source = src.map(|_| VolumeSource { resource: s.resource_definition.clone(), snapshot: s.name.clone() });
                // An encrypted snapshot opens with its origin's key.
                if let Some(secret) = src.and_then(|sv| sv.luks_secret.clone()) {
                    v.luks_secret = Some(secret);
                }
            }
            r.props.insert("RestoreFromResource".into(), s.resource_definition.clone());
            r.props.insert("RestoreFromSnapshot".into(), s.name.clone());
            out.reply(crate::resource::created_reply(&r));
            out.put(Object::Rsc(r));
        }
        Ok(out)
    }

    /// `POST …/snapshot-rollback/{snap}`: every resource that has the
    /// snapshot goes back to it; volume definitions get its sizes. ZFS
    /// snapshots go back by LINSTOR's strategy (`strategy`: the client's
    /// for this call, else `StorDriver/Zfs/RollbackStrategy`): `Rollback`
    /// is `zfs rollback`, refused as LINSTOR refuses it unless the snapshot
    /// is the definition's newest and still on the resources' zvols.
    pub fn rollback(
        &self,
        rd: &str,
        snap: &str,
        strategy: Option<&str>,
        in_use: &dyn Fn(&Resource) -> bool,
        ctx: &mut Ctx,
    ) -> OpResult<Outcome> {
        const OP: i64 = rc::MASK_MOD | rc::MASK_RSC;
        let s = self.snapshot(rd, snap, OP)?;
        let rd_key = key(&s.resource_definition);
        let on_zfs = self.is_zfs_snapshot(s);
        let zfs = if on_zfs {
            let d = self.rsc_dfn(rd, OP)?;
            self.zfs_rollback_strategy(d, strategy)
        } else {
            ZfsRollback::Dynamic
        };
        let newest = self.is_newest_snapshot(s);
        let aside = self.zfs_snapshot_aside(s);
        if zfs == ZfsRollback::Rollback && !newest {
            return Err(OpError::new(
                OP,
                rc::FAIL_DEPENDEND_BACKUP,
                format!("'{}' is not the most recent snapshot. Cannot 'zfs rollback ...' to the given snapshot!", s.name),
            )
            .cause("ZFS rolls a zvol back only to its newest snapshot (or destroys the newer ones).")
            .correction("Delete the newer snapshots, or use the 'clone' or 'dynamic' strategy."));
        }
        if zfs == ZfsRollback::Rollback && aside {
            return Err(OpError::new(
                OP,
                rc::FAIL_DEPENDEND_BACKUP,
                format!(
                    "'{}' was already rolled back using 'Clone' strategy. Cairn cannot switch to 'Rollback' strategy in this case!",
                    s.resource_definition
                ),
            )
            .cause(format!(
                "Snapshot '{}' is on a zvol renamed aside (by a rollback by clone, or a delete of its resource), not on the resource's.",
                s.name
            ))
            .correction("Use the 'clone' or 'dynamic' strategy."));
        }
        let rscs: Vec<&Resource> = self.resources_of(&rd_key).collect();
        if let Some(r) = rscs.iter().find(|r| in_use(r)) {
            return Err(OpError::new(OP, rc::FAIL_IN_USE, format!("Resource '{}' is in use on node '{}'.", r.resource_definition, r.node))
                .correction("Stop using the volume on every node before a rollback."));
        }
        if let Some(r) = rscs.iter().find(|r| !r.is_diskless() && !s.nodes.contains_key(&key(&r.node))) {
            return Err(OpError::new(
                OP,
                rc::FAIL_NOT_FOUND_SNAPSHOT_DFN,
                format!("Snapshot '{}' does not exist on node '{}'.", s.name, r.node),
            )
            .correction("Delete that resource or take the snapshot on every node."));
        }
        let id = ctx.uuid().chars().filter(char::is_ascii_hexdigit).take(12).collect::<String>();
        // A rollback by clone renames the zvols aside with every snapshot
        // they hold (`Dynamic` clones unless `zfs rollback` can do it).
        let clones = match zfs {
            ZfsRollback::Clone => true,
            ZfsRollback::Rollback => false,
            ZfsRollback::Dynamic => !newest || aside,
        };
        let now = ctx.now_ms;
        let mut out = Outcome::default();
        for r in rscs.into_iter().filter(|r| !r.is_diskless()) {
            let mut r = r.clone();
            let before = r.rollback.as_ref().map_or(0, |b| b.aside_before);
            let aside_before = if clones && on_zfs { now } else { before };
            r.rollback = Some(Rollback { snapshot: s.name.clone(), id: id.clone(), zfs, aside_before });
            out.put(Object::Rsc(r));
        }
        for v in &s.volumes {
            if let Some(vd) = self.vlm_dfns.get(&(rd_key.clone(), v.volume_number))
                && vd.size_kib != v.size_kib
            {
                let mut vd = vd.clone();
                vd.size_kib = v.size_kib;
                out.put(Object::VlmDfn(vd));
            }
        }
        out.reply(ApiCallRc::success(
            OP,
            rc::MODIFIED,
            format!("Resource '{}' rolled back to snapshot '{}'.", s.resource_definition, s.name),
        ));
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use cairn_api::resource::{Resource as WireRsc, ResourceCreate};
    use cairn_api::resource_definition::{
        ResourceDefinition as WireRd, ResourceDefinitionCreate, VolumeDefinition as WireVd, VolumeDefinitionCreate,
    };

    use super::*;
    use crate::testing;

    fn cluster() -> (Cluster, Ctx) {
        let mut ctx = Ctx::deterministic();
        let mut c = testing::seeded();
        c.ctrl_props.insert(crate::PROP_DEFAULT_LAYER_STACK.into(), "STORAGE".into());
        for (n, kind, backing) in [("n1", "LVM_THIN", "vg/thin"), ("n2", "LVM", "vg")] {
            let o = c.create_node(&testing::satellite(n, &[]), &mut ctx).unwrap();
            c.apply(o.changes);
            let o = c.create_stor_pool(n, &testing::pool("DfltStorPool", kind, backing), &mut ctx).unwrap();
            c.apply(o.changes);
        }
        for rd in ["src", "dst"] {
            let req =
                ResourceDefinitionCreate { resource_definition: WireRd { name: rd.into(), ..Default::default() }, ..Default::default() };
            let o = c.create_rsc_dfn(&req, &mut ctx).unwrap();
            c.apply(o.changes);
        }
        let vd = VolumeDefinitionCreate { volume_definition: WireVd { size_kib: Some(4096), ..Default::default() }, ..Default::default() };
        let o = c.create_vlm_dfn("src", &vd, &mut ctx).unwrap();
        c.apply(o.changes);
        (c, ctx)
    }

    fn rsc(c: &mut Cluster, ctx: &mut Ctx, node: &str) {
        let r = ResourceCreate { resource: WireRsc { node_name: node.into(), ..Default::default() }, ..Default::default() };
        let o = c.create_resources("src", &[r], None, ctx).unwrap();
        c.apply(o.changes);
    }

    fn unknown(_: &str, _: &str) -> Option<bool> {
        None
    }

    fn snap(name: &str) -> wire::Snapshot {
        wire::Snapshot { name: name.into(), ..Default::default() }
    }

    #[test]
    fn snapshots_need_thin_volumes_and_unique_names() {
        let (mut c, mut ctx) = cluster();
        rsc(&mut c, &mut ctx, "n1");
        let o = c.create_snapshot("src", &snap("s1"), &unknown, &mut ctx).unwrap();
        c.apply(o.changes);
        let s = c.snapshots[&("SRC".to_string(), "S1".to_string())].clone();
        assert_eq!(s.nodes.keys().collect::<Vec<_>>(), ["N1"]);
        assert_eq!(s.volumes, vec![SnapshotVlmDfn { volume_number: 0, size_kib: 4096 }]);
        assert_eq!(
            c.create_snapshot("src", &snap("S1"), &unknown, &mut ctx).unwrap_err().rc.ret_code & rc::MASK_BITS_CODE,
            rc::FAIL_EXISTS_SNAPSHOT_DFN
        );
        assert_eq!(
            c.create_snapshot("src", &snap("-bad"), &unknown, &mut ctx).unwrap_err().rc.ret_code & rc::MASK_BITS_CODE,
            rc::FAIL_INVLD_SNAPSHOT_NAME
        );
        // A thick replica cannot take part.
        rsc(&mut c, &mut ctx, "n2");
        assert_eq!(
            c.create_snapshot("src", &snap("s2"), &unknown, &mut ctx).unwrap_err().rc.ret_code & rc::MASK_BITS_CODE,
            rc::FAIL_SNAPSHOTS_NOT_SUPPORTED
        );
        let only_n1 = wire::Snapshot { nodes: vec!["n1".into()], ..snap("s2") };
        assert!(c.create_snapshot("src", &only_n1, &unknown, &mut ctx).is_ok());
        // A pool its satellite found without reflinks is refused up front.
        let no_reflinks = |node: &str, pool: &str| (node == "n1" && pool == "DfltStorPool").then_some(false);
        let e = c.create_snapshot("src", &wire::Snapshot { nodes: vec!["n1".into()], ..snap("s3") }, &no_reflinks, &mut ctx).unwrap_err();
        assert_eq!(e.rc.ret_code & rc::MASK_BITS_CODE, rc::FAIL_SNAPSHOTS_NOT_SUPPORTED);
        assert!(e.rc.cause.as_deref().is_some_and(|c| c.contains("no reflinks")), "{:?}", e.rc);
        // The node's desired state lists it; SUCCESSFUL when reported.
        let (_, rscs) = crate::desired::desired_for_node(&c, "N1");
        assert_eq!(rscs[0].snapshots, vec!["s1".to_string()]);
        assert!(!s.to_api(&|_| NodeSnapState::Pending).flags.contains(&SUCCESSFUL.to_string()));
        assert!(s.to_api(&|_| NodeSnapState::Taken).flags.contains(&SUCCESSFUL.to_string()));
        // A node that could not take it: the snapshot says so, and why.
        let failed = s.to_api(&|_| NodeSnapState::Failed("no reflinks".into()));
        assert_eq!(failed.flags, vec![FAILED_DEPLOYMENT.to_string()]);
        assert_eq!(failed.snapshots[0].flags, vec![FAILED_DEPLOYMENT.to_string()]);
        let vol = &failed.snapshots[0].snapshot_volumes[0];
        assert_eq!((vol.state.as_deref(), vol.props.get(PROP_FAILURE_REASON).map(String::as_str)), (Some("Failed"), Some("no reflinks")));
        // Its resource and definition stay while it exists.
        assert_eq!(c.delete_resource("src", "n1").unwrap_err().rc.ret_code & rc::MASK_BITS_CODE, rc::FAIL_IN_USE);
        assert_eq!(c.delete_rsc_dfn("src").unwrap_err().rc.ret_code & rc::MASK_BITS_CODE, rc::FAIL_EXISTS_SNAPSHOT_DFN);
        let o = c.delete_snapshot("src", "s1", &[]).unwrap();
        c.apply(o.changes);
        assert!(c.snapshots.is_empty());
    }

    #[test]
    fn a_zfs_resource_goes_while_its_snapshots_stay_as_in_linstor() {
        let (mut c, mut ctx) = cluster();
        let o = c.create_node(&testing::satellite("z1", &[]), &mut ctx).unwrap();
        c.apply(o.changes);
        let o = c.create_stor_pool("z1", &testing::pool("DfltStorPool", "ZFS_THIN", "tank/thin"), &mut ctx).unwrap();
        c.apply(o.changes);
        rsc(&mut c, &mut ctx, "z1");
        for s in ["s1", "s2"] {
            let o = c.create_snapshot("src", &snap(s), &unknown, &mut ctx).unwrap();
            c.apply(o.changes);
        }
        let o = c.delete_resource("src", "z1").unwrap();
        c.apply(o.changes);
        assert!(c.resources.is_empty());
        assert_eq!(c.snapshots.len(), 2, "the snapshots stay");
        // The node keeps them: an entry with only the snapshots.
        let (_, rscs) = crate::desired::desired_for_node(&c, "Z1");
        assert_eq!(rscs.len(), 1);
        assert!(rscs[0].snapshots_only);
        assert_eq!(rscs[0].snapshots, ["s1", "s2"]);
        assert_eq!(rscs[0].volumes.iter().map(|v| (v.number, v.pool.as_str())).collect::<Vec<_>>(), [(0, "DfltStorPool")]);
        // Its definition stays while they exist (LINSTOR's code and text).
        let e = c.delete_rsc_dfn("src").unwrap_err();
        assert_eq!(e.rc.ret_code & rc::MASK_BITS_CODE, rc::FAIL_EXISTS_SNAPSHOT_DFN);
        assert_eq!(e.rc.message, "Cannot delete resource definition 'src' because it has snapshots.");
        for s in ["s1", "s2"] {
            let o = c.delete_snapshot("src", s, &[]).unwrap();
            c.apply(o.changes);
        }
        assert!(crate::desired::desired_for_node(&c, "Z1").1.is_empty(), "nothing left to keep");
        assert!(c.delete_rsc_dfn("src").is_ok());
    }

    #[test]
    fn zfs_rollback_and_delete_strategies_as_in_linstor() {
        use crate::zfs_strategy::{PROP_ZFS_DELETE_STRATEGY, PROP_ZFS_ROLLBACK_STRATEGY};
        let (mut c, mut ctx) = cluster();
        let o = c.create_node(&testing::satellite("z1", &[]), &mut ctx).unwrap();
        c.apply(o.changes);
        let o = c.create_stor_pool("z1", &testing::pool("DfltStorPool", "ZFS_THIN", "tank/thin"), &mut ctx).unwrap();
        c.apply(o.changes);
        ctx.now_ms = 1_000;
        rsc(&mut c, &mut ctx, "z1");
        for (t, s) in [(2_000, "s1"), (3_000, "s2")] {
            ctx.now_ms = t;
            let o = c.create_snapshot("src", &snap(s), &unknown, &mut ctx).unwrap();
            c.apply(o.changes);
        }
        ctx.now_ms = 4_000;
        let code = |e: OpError| (e.rc.ret_code & rc::MASK_BITS_CODE, e.rc.message);
        let rb = |c: &Cluster| c.resources[&("SRC".to_string(), "Z1".to_string())].rollback.clone().unwrap();
        // 'Rollback' (the controller's property): only to the newest.
        c.ctrl_props.insert(PROP_ZFS_ROLLBACK_STRATEGY.into(), "Rollback".into());
        assert_eq!(
            code(c.rollback("src", "s1", None, &|_| false, &mut ctx).unwrap_err()),
            (rc::FAIL_DEPENDEND_BACKUP, "'s1' is not the most recent snapshot. Cannot 'zfs rollback ...' to the given snapshot!".into())
        );
        c.apply(c.rollback("src", "s2", None, &|_| false, &mut ctx).unwrap().changes);
        assert_eq!((rb(&c).zfs, rb(&c).aside_before), (ZfsRollback::Rollback, 0));
        // The satellite is told.
        let (_, rscs) = crate::desired::desired_for_node(&c, "Z1");
        assert_eq!(rscs[0].rollback.as_ref().map(|r| r.zfs), Some(ZfsRollback::Rollback));
        // The client's strategy for the call wins over the properties; the
        // group's over the controller's, the definition's over both.
        ctx.now_ms = 5_000;
        c.apply(c.rollback("src", "s1", Some("clone"), &|_| false, &mut ctx).unwrap().changes);
        assert_eq!((rb(&c).zfs, rb(&c).aside_before), (ZfsRollback::Clone, 5_000));
        let rg = c.rsc_dfns["SRC"].resource_group.clone();
        c.rsc_grps.get_mut(&key(&rg)).unwrap().props.insert(PROP_ZFS_ROLLBACK_STRATEGY.into(), "Clone".into());
        let d = &c.rsc_dfns["SRC"];
        assert_eq!(c.zfs_rollback_strategy(d, None), ZfsRollback::Clone);
        assert_eq!(c.zfs_rollback_strategy(d, Some("bogus")), ZfsRollback::Dynamic, "LINSTOR's parseStrat");
        c.rsc_dfns.get_mut("SRC").unwrap().props.insert(PROP_ZFS_ROLLBACK_STRATEGY.into(), "rollback".into());
        assert_eq!(c.zfs_rollback_strategy(&c.rsc_dfns["SRC"], None), ZfsRollback::Rollback);
        // After that clone both snapshots are on the zvol renamed aside:
        // 'Rollback' even to the newest is refused as LINSTOR refuses it.
        let (code_aside, text) = code(c.rollback("src", "s2", None, &|_| false, &mut ctx).unwrap_err());
        assert_eq!(code_aside, rc::FAIL_DEPENDEND_BACKUP);
        assert!(text.contains("was already rolled back using 'Clone' strategy"), "{text}");
        // A snapshot taken since is on the new zvol: `zfs rollback` to it;
        // the time of the clone is kept.
        ctx.now_ms = 6_000;
        let o = c.create_snapshot("src", &snap("s3"), &unknown, &mut ctx).unwrap();
        c.apply(o.changes);
        ctx.now_ms = 7_000;
        c.apply(c.rollback("src", "s3", None, &|_| false, &mut ctx).unwrap().changes);
        assert_eq!((rb(&c).zfs, rb(&c).aside_before), (ZfsRollback::Rollback, 5_000));
        // 'Dynamic' to an older snapshot clones: its time is recorded.
        ctx.now_ms = 8_000;
        c.apply(c.rollback("src", "s3", Some("dynamic"), &|_| false, &mut ctx).unwrap().changes);
        assert_eq!((rb(&c).zfs, rb(&c).aside_before), (ZfsRollback::Dynamic, 5_000), "the newest, in place");
        c.apply(c.rollback("src", "s1", Some("dynamic"), &|_| false, &mut ctx).unwrap().changes);
        assert_eq!((rb(&c).zfs, rb(&c).aside_before), (ZfsRollback::Dynamic, 8_000));

        // 'Delete': neither the resource nor a volume definition goes while
        // the definition has snapshots (LINSTOR's code and text).
        c.rsc_dfns.get_mut("SRC").unwrap().props.insert(PROP_ZFS_DELETE_STRATEGY.into(), "Delete".into());
        let refused =
            (rc::FAIL_EXISTS_SNAPSHOT, "Cannot use DELETE strategy since the resource definition 'src' still has snapshots".into());
        assert_eq!(code(c.delete_resource_keeping_quorum("src", "z1", false).unwrap_err()), refused);
        assert_eq!(code(c.delete_vlm_dfn("src", 0).unwrap_err()), refused);
        // A node's delete or evacuation removes its resources anyway, as
        // LINSTOR's do (they never ask the strategy).
        assert!(c.delete_resource("src", "z1").is_ok());
        // 'Rename' (as 'Dynamic'): the resource goes, its snapshots stay.
        c.rsc_dfns.get_mut("SRC").unwrap().props.insert(PROP_ZFS_DELETE_STRATEGY.into(), "Rename".into());
        c.apply(c.delete_resource("src", "z1").unwrap().changes);
        assert_eq!(c.snapshots.len(), 3);
        // 'Delete' again, the snapshots gone: the definition's volume goes.
        c.rsc_dfns.get_mut("SRC").unwrap().props.insert(PROP_ZFS_DELETE_STRATEGY.into(), "Delete".into());
        for s in ["s1", "s2", "s3"] {
            c.apply(c.delete_snapshot("src", s, &[]).unwrap().changes);
        }
        assert!(c.delete_vlm_dfn("src", 0).is_ok());
    }

    #[test]
    fn zfs_strategies_leave_other_providers_alone() {
        let (mut c, mut ctx) = cluster();
        rsc(&mut c, &mut ctx, "n1");
        for (t, s) in [(2_000, "s1"), (3_000, "s2")] {
            ctx.now_ms = t;
            let o = c.create_snapshot("src", &snap(s), &unknown, &mut ctx).unwrap();
            c.apply(o.changes);
        }
        // An LVM_THIN rollback to an older snapshot whatever the strategy
        // (LINSTOR's isZfsSnapshot is false).
        let o = c.rollback("src", "s1", Some("rollback"), &|_| false, &mut ctx).unwrap();
        c.apply(o.changes);
        let r = c.resources[&("SRC".to_string(), "N1".to_string())].rollback.clone().unwrap();
        assert_eq!((r.zfs, r.aside_before), (ZfsRollback::Dynamic, 0));
    }

    #[test]
    fn restore_and_rollback() {
        let (mut c, mut ctx) = cluster();
        rsc(&mut c, &mut ctx, "n1");
        let o = c.create_snapshot("src", &snap("s1"), &unknown, &mut ctx).unwrap();
        c.apply(o.changes);
        let to = wire::SnapshotRestore { to_resource: "dst".into(), ..Default::default() };
        assert_eq!(
            c.restore_resources("src", "s1", &to, &mut ctx).unwrap_err().rc.ret_code & rc::MASK_BITS_CODE,
            rc::FAIL_NOT_FOUND_VLM_DFN
        );
        let o = c.restore_vlm_dfns("src", "s1", &to, &mut ctx).unwrap();
        c.apply(o.changes);
        assert_eq!(c.vlm_dfns[&("DST".to_string(), 0)].size_kib, 4096);
        assert!(c.restore_vlm_dfns("src", "s1", &to, &mut ctx).is_err(), "only into an empty definition");
        let o = c.restore_resources("src", "s1", &to, &mut ctx).unwrap();
        c.apply(o.changes);
        let r = &c.resources[&("DST".to_string(), "N1".to_string())];
        assert_eq!(r.volumes[&0].source, Some(VolumeSource { resource: "src".into(), snapshot: "s1".into() }));
        let (_, rscs) = crate::desired::desired_for_node(&c, "N1");
        let dst = rscs.iter().find(|r| r.name == "dst").unwrap();
        assert_eq!(dst.volumes[0].source.as_ref().map(|s| s.snapshot.as_str()), Some("s1"));
        // Rollback: refused while in use; otherwise a one-time token.
        assert_eq!(c.rollback("src", "s1", None, &|_| true, &mut ctx).unwrap_err().rc.ret_code & rc::MASK_BITS_CODE, rc::FAIL_IN_USE);
        let o = c.rollback("src", "s1", None, &|_| false, &mut ctx).unwrap();
        c.apply(o.changes);
        let rb = c.resources[&("SRC".to_string(), "N1".to_string())].rollback.clone().unwrap();
        assert_eq!(rb.snapshot, "s1");
        let (_, rscs) = crate::desired::desired_for_node(&c, "N1");
        assert_eq!(rscs.iter().find(|r| r.name == "src").and_then(|r| r.rollback.clone()).map(|r| r.id), Some(rb.id));
    }

    #[test]
    fn a_replicated_resource_is_snapshotted_in_steps_with_io_suspended() {
        let (mut c, mut ctx) = cluster();
        c.ctrl_props.insert(crate::PROP_DEFAULT_LAYER_STACK.into(), "DRBD,STORAGE".into());
        let req =
            ResourceDefinitionCreate { resource_definition: WireRd { name: "rep".into(), ..Default::default() }, ..Default::default() };
        c.apply(c.create_rsc_dfn(&req, &mut ctx).unwrap().changes);
        let vd = VolumeDefinitionCreate { volume_definition: WireVd { size_kib: Some(4096), ..Default::default() }, ..Default::default() };
        c.apply(c.create_vlm_dfn("rep", &vd, &mut ctx).unwrap().changes);
        // Node id 5: not the one a new definition would hand out first.
        let r = ResourceCreate {
            resource: WireRsc { node_name: "n1".into(), ..Default::default() },
            drbd_node_id: Some(5),
            ..Default::default()
        };
        c.apply(c.create_resources("rep", &[r], None, &mut ctx).unwrap().changes);
        assert!(c.resources[&("REP".to_string(), "N1".to_string())].drbd.is_some(), "the test needs a DRBD resource");
        let desired = |c: &Cluster| {
            let (_, rscs) = crate::desired::desired_for_node(c, "N1");
            let r = rscs.into_iter().find(|r| r.name == "rep").unwrap();
            (r.snapshots.clone(), r.drbd.map(|d| d.suspend_io))
        };
        assert_eq!(desired(&c), (vec![], Some(false)));
        // Registered: I/O suspended, nothing taken yet.
        c.apply(c.create_snapshot("rep", &snap("s1"), &unknown, &mut ctx).unwrap().changes);
        let at = |c: &Cluster| c.snapshots[&("REP".to_string(), "S1".to_string())].phase;
        assert_eq!(at(&c), SnapshotPhase::Suspend);
        // It remembers the DRBD node id its metadata belongs to, and a
        // restore on that node takes it again.
        let id = c.resources[&("REP".to_string(), "N1".to_string())].drbd.as_ref().map(|d| d.node_id);
        assert_eq!(id, Some(5));
        assert_eq!(c.snapshots[&("REP".to_string(), "S1".to_string())].nodes["N1"].drbd_node_id, id);
        assert_eq!(desired(&c), (vec![], Some(true)));
        // Taken while suspended, then resumed.
        c.apply(c.snapshot_phase("rep", "s1", SnapshotPhase::Take).unwrap().changes);
        assert_eq!(desired(&c), (vec!["s1".to_string()], Some(true)));
        assert!(c.snapshot_phase("rep", "s1", SnapshotPhase::Take).unwrap().changes.is_empty(), "no change twice");
        c.apply(c.snapshot_phase("rep", "s1", SnapshotPhase::Done).unwrap().changes);
        assert_eq!(desired(&c), (vec!["s1".to_string()], Some(false)));
        assert!(c.snapshot_phase("rep", "gone", SnapshotPhase::Done).unwrap().changes.is_empty());
        // A non-replicated definition's snapshot needs no steps.
        rsc(&mut c, &mut ctx, "n1");
        c.apply(c.create_snapshot("src", &snap("plain"), &unknown, &mut ctx).unwrap().changes);
        assert_eq!(c.snapshots[&("SRC".to_string(), "PLAIN".to_string())].phase, SnapshotPhase::Done);
        // Cut short by a restart: one never taken goes, one being taken
        // is finished; no I/O stays suspended.
        c.apply(c.create_snapshot("rep", &snap("s2"), &unknown, &mut ctx).unwrap().changes);
        c.apply(c.create_snapshot("rep", &snap("s3"), &unknown, &mut ctx).unwrap().changes);
        c.apply(c.snapshot_phase("rep", "s3", SnapshotPhase::Take).unwrap().changes);
        c.apply(c.finish_interrupted_snapshots().changes);
        assert!(!c.snapshots.contains_key(&("REP".to_string(), "S2".to_string())));
        assert_eq!(at(&c), SnapshotPhase::Done);
        assert_eq!(c.snapshots[&("REP".to_string(), "S3".to_string())].phase, SnapshotPhase::Done);
        assert_eq!(desired(&c), (vec!["s1".to_string(), "s3".to_string()], Some(false)));
        assert!(c.finish_interrupted_snapshots().changes.is_empty());
        let req =
            ResourceDefinitionCreate { resource_definition: WireRd { name: "back".into(), ..Default::default() }, ..Default::default() };
        c.apply(c.create_rsc_dfn(&req, &mut ctx).unwrap().changes);
        let to = wire::SnapshotRestore { to_resource: "back".into(), ..Default::default() };
        c.apply(c.restore_vlm_dfns("rep", "s1", &to, &mut ctx).unwrap().changes);
        c.apply(c.restore_resources("rep", "s1", &to, &mut ctx).unwrap().changes);
        assert_eq!(c.resources[&("BACK".to_string(), "N1".to_string())].drbd.as_ref().map(|d| d.node_id), id);
        // A replicated resource rolls back like any other (not in use).
        c.apply(c.rollback("rep", "s1", None, &|_| false, &mut ctx).unwrap().changes);
        assert!(c.resources[&("REP".to_string(), "N1".to_string())].rollback.is_some());
    }
}
