//! Toggle-disk: a diskless DRBD replica gets backing storage (and is
//! synced from its peers), a diskful one drops it and stays a diskless
//! peer; migrate-disk is toggle-disk with a replica to delete once the new
//! one is UpToDate (LINSTOR's `CtrlRscToggleDiskApiCallHandler`).
//!
//! LINSTOR walks through flags (`DISK_ADD_REQUESTED`, `DISK_ADDING`, ...)
//! in several transactions while it updates the satellites step by step.
//! Cairn's satellites reconcile declarative state, so one change does it:
//! the replica's flags, its `StorPoolName` and its volumes' pools change
//! together, the volumes keep their UUIDs (no new incarnation on the
//! satellite, DRBD stays up and only attaches or detaches).
//! `DISK_ADDING` stays on a replica that got a disk until it reported all
//! its volumes UpToDate: while it is set the satellite never stamps the
//! new metadata with the day-0 generation id (the replica joins data that
//! exists and needs a full sync).

use cairn_api::rc::{self, ApiCallRc};

use crate::cluster::{Cluster, ObjKey, Object, Outcome};
use crate::error::{OpError, OpResult};
use crate::name::key;
use crate::placement::Observer;
use crate::resource::{PROP_STOR_POOL_NAME, Resource};
use crate::resource_definition::check_layer_stack;
use crate::{Ctx, DEFAULT_DISKLESS_STOR_POOL, DEFAULT_STOR_POOL, Props};

/// A replica that got its disk by toggle-disk and has not been UpToDate
/// yet.
pub const FLAG_DISK_ADDING: &str = "DISK_ADDING";
/// LINSTOR's `KEY_RSC_DISKFUL_BY`: who made a replica diskful.
pub const PROP_DISKFUL_BY: &str = "DiskfulBy";
/// LINSTOR's `KEY_RSC_MIGRATE_FROM`: the node whose replica is deleted
/// once this one is UpToDate.
pub const PROP_MIGRATE_FROM: &str = "MigrateFrom";
/// The flags that make a replica diskless.
const DISKLESS_FLAGS: &[&str] = &["DISKLESS", "DRBD_DISKLESS", "TIE_BREAKER"];

/// What to turn a replica into (LINSTOR's `ToggleOp`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ToggleOp {
    Diskful,
    Diskless,
    /// A diskless replica with LINSTOR's DRBD `CLIENT` flag (no tiebreaker).
    Client,
}

impl ToggleOp {
    /// The `operation` of a `ToggleDiskRequest`, with LINSTOR's refusal.
    pub fn parse(s: Option<&str>) -> OpResult<ToggleOp> {
        let Some(s) = s else {
            return Err(OpError::new(0, rc::API_CALL_PARSE_ERROR, "No toggle operation type was specified"));
        };
        match s.to_ascii_lowercase().as_str() {
            "into_drbd_diskful" => Ok(ToggleOp::Diskful),
            "into_drbd_diskless" => Ok(ToggleOp::Diskless),
            "into_drbd_client" => Ok(ToggleOp::Client),
            _ => Err(OpError::new(
                0,
                rc::API_CALL_PARSE_ERROR,
                format!("Could not parse '{s}'. Valid operations: INTO_DRBD_DISKFUL, INTO_DRBD_CLIENT, INTO_DRBD_DISKLESS"),
            )),
        }
    }

    fn removes_disk(self) -> bool {
        self != ToggleOp::Diskful
    }
}

/// One toggle-disk request.
#[derive(Debug, Clone, Default)]
pub struct ToggleDisk {
    pub op: Option<ToggleOp>,
    /// The pool to toggle into (diskful or diskless).
    pub storage_pool: Option<String>,
    /// The node whose replica goes once this one is UpToDate.
    pub migrate_from: Option<String>,
    pub layer_list: Option<Vec<String>>,
    /// `DiskfulBy` of a replica made diskful (LINSTOR: `user` for the REST
    /// calls, `make-available` for make-available); `user` when unset.
    pub diskful_by: Option<&'static str>,
}

const OP: i64 = rc::MASK_MOD | rc::MASK_RSC;

impl Cluster {
    /// `PUT …/resources/{node}/toggle-disk[...]` and `…/migrate-disk/...`.
    /// `in_use` tells whether a node's replica of this definition is
    /// Primary (as its satellite reported).
    pub fn toggle_disk(
        &self,
        rd: &str,
        node: &str,
        req: &ToggleDisk,
        obs: &dyn Observer,
        in_use: &dyn Fn(&str) -> bool,
        ctx: &mut Ctx,
    ) -> OpResult<Outcome> {
        let op = req.op.unwrap_or(ToggleOp::Diskful);
        let r = self.resource(rd, node, OP)?;
        let mut out = Outcome::default();
        // Already so: nothing to do, as LINSTOR answers; between the kinds
        // of diskless replica only the flags change (LINSTOR's
        // handleNoopAction, which hands over to a resource modify).
        if r.is_diskless() == op.removes_disk() {
            let client = r.is_drbd_client();
            let tiebreaker = r.flags.contains(crate::drbd_auto::FLAG_TIE_BREAKER);
            let change = match op {
                ToggleOp::Client => !client,
                ToggleOp::Diskless => client || tiebreaker,
                ToggleOp::Diskful => false,
            };
            if change && r.drbd.is_some() {
                let mut next = r.clone();
                if next.flags.remove(crate::drbd_auto::FLAG_TIE_BREAKER) {
                    next.flags.insert("DRBD_DISKLESS".into());
                }
                next.set_drbd_client(op == ToggleOp::Client);
                out.reply(
                    ApiCallRc::success(OP, rc::MODIFIED, format!("Resource '{}' on node '{}' modified.", r.resource_definition, r.node))
                        .with_ref("RscDfn", &r.resource_definition)
                        .with_ref("Node", &r.node),
                );
                out.put(Object::Rsc(next));
                return Ok(out);
            }
            let state = match op {
                ToggleOp::Diskful => "diskful",
                ToggleOp::Client => "a diskless client",
                ToggleOp::Diskless => "diskless",
            };
            out.reply(
                ApiCallRc::info(OP, rc::INFO_NOOP, format!("Resource '{}' on node '{}' is already {state}", r.resource_definition, r.node))
                    .with_ref("RscDfn", &r.resource_definition)
                    .with_ref("Node", &r.node),
            );
            return Ok(out);
        }
        if !r.has_drbd() {
            return Err(OpError::new(OP, rc::FAIL_INVLD_LAYER_STACK, "Toggle disk is only supported in combination with DRBD")
                .cause(format!(
                    "The layer stack of resource '{}' on node '{}' is {}.",
                    r.resource_definition,
                    r.node,
                    r.layer_stack.join(",")
                ))
                .obj_ref("RscDfn", &r.resource_definition)
                .obj_ref("Node", &r.node));
        }
        let mut next =
            if op.removes_disk() { self.toggled_diskless(r, req, obs)? } else { self.toggled_diskful(r, req, obs, in_use, ctx)? };
        next.set_drbd_client(op == ToggleOp::Client);
        let action = if op.removes_disk() { "Removal of disk from" } else { "Addition of disk to" };
        out.reply(
            ApiCallRc::success(
                OP,
                rc::MODIFIED,
                format!("{action} resource '{}' on node '{}' registered", next.resource_definition, next.node),
            )
            .with_ref("RscDfn", &next.resource_definition)
            .with_ref("Node", &next.node),
        );
        out.put(Object::Rsc(next));
        Ok(out)
    }

    /// Diskful replicas of the definition on online nodes.
    fn online_diskful(&self, rd_key: &str, obs: &dyn Observer) -> usize {
        self.resources_of(rd_key).filter(|p| !p.is_diskless() && obs.node(&key(&p.node)).online).count()
    }

    fn toggled_diskless(&self, r: &Resource, req: &ToggleDisk, obs: &dyn Observer) -> OpResult<Resource> {
        let rd_key = key(&r.resource_definition);
        if self.online_diskful(&rd_key, obs) <= 1 {
            return Err(OpError::new(
                OP,
                rc::FAIL_INSUFFICIENT_REPLICA_COUNT,
                "Cannot remove the disk from the only online resource with a disk",
            )
            .cause(format!(
                "Resource '{}' on node '{}' is the only replica of its definition with a disk on an online node.",
                r.resource_definition, r.node
            ))
            .correction("Add a diskful replica on another node (and let it sync) first.")
            .obj_ref("RscDfn", &r.resource_definition)
            .obj_ref("Node", &r.node));
        }
        // The backing volumes go, and with them what is kept on them.
        if let Some(s) = self.snapshots_of(&rd_key).find(|s| s.nodes.contains_key(&key(&r.node))) {
            return Err(OpError::new(
                OP,
                rc::FAIL_IN_USE,
                format!("Resource '{}' on node '{}' has snapshots.", r.resource_definition, r.node),
            )
            .cause(format!("Snapshot '{}' is kept on this node with the volumes that would be removed.", s.name))
            .correction("Delete the snapshots on this node first."));
        }
        let pool_name = req.storage_pool.clone().filter(|p| !p.trim().is_empty()).unwrap_or_else(|| DEFAULT_DISKLESS_STOR_POOL.to_string());
        let pool = self.stor_pools.get(&(key(&r.node), key(&pool_name))).ok_or_else(|| pool_not_deployed(r, &pool_name))?;
        if !pool.provider_kind.is_diskless() {
            return Err(OpError::new(
                OP,
                rc::FAIL_INVLD_STOR_POOL_NAME,
                "Storage pool with backing disk not allowed with diskless resource.",
            )
            .cause(format!(
                "Resource '{}' on node '{}' flagged as diskless, but a storage pool '{}' with backing disk was specified.",
                r.resource_definition, r.node, pool.name
            ))
            .correction("Use a storage pool with a diskless driver or remove the diskless flag."));
        }
        let mut next = r.clone();
        next.flags.insert("DRBD_DISKLESS".into());
        next.flags.insert("DISKLESS".into());
        next.flags.remove(FLAG_DISK_ADDING);
        next.props.insert(PROP_STOR_POOL_NAME.into(), pool.name.clone());
        next.props.remove(PROP_DISKFUL_BY);
        next.props.remove(PROP_MIGRATE_FROM);
        for v in next.volumes.iter_mut().map(|(_, v)| v) {
            v.storage_pool = pool.name.clone();
            v.provider_kind = pool.provider_kind;
            v.luks_secret = None;
        }
        Ok(next)
    }

    fn toggled_diskful(
        &self,
        r: &Resource,
        req: &ToggleDisk,
        obs: &dyn Observer,
        in_use: &dyn Fn(&str) -> bool,
        ctx: &mut Ctx,
    ) -> OpResult<Resource> {
        let rd_key = key(&r.resource_definition);
        let d = self.rsc_dfn(&r.resource_definition, OP)?;
        // Every diskful replica needs a bitmap slot for the new one.
        let diskful: Vec<&Resource> = self.resources_of(&rd_key).filter(|p| !p.is_diskless()).collect();
        let slots = self.peer_slots(&rd_key);
        if usize::from(slots) < diskful.len() {
            return Err(OpError::new(OP, rc::FAIL_INSUFFICIENT_PEER_SLOTS, "Existing resources do not have enough peer slots").details(
                format!(
                    "Resources with insufficient peer slots ({} required): \n{}",
                    diskful.len(),
                    diskful
                        .iter()
                        .map(|p| format!(" * Node: '{}', Rsc: '{}' has peer slots: {slots}", p.node, p.resource_definition))
                        .collect::<Vec<_>>()
                        .join("\n")
                ),
            ));
        }
        let mut next = r.clone();
        for f in DISKLESS_FLAGS {
            next.flags.remove(*f);
        }
        next.flags.insert(FLAG_DISK_ADDING.into());
        match req.storage_pool.as_deref().filter(|p| !p.trim().is_empty()) {
            Some(p) => next.props.insert(PROP_STOR_POOL_NAME.into(), p.to_string()),
            None => next.props.remove(PROP_STOR_POOL_NAME),
        };
        next.props.insert(PROP_DISKFUL_BY.into(), req.diskful_by.unwrap_or("user").into());
        if let Some(from) = req.migrate_from.as_deref().filter(|f| !f.is_empty()) {
            let src = self.resource(&r.resource_definition, from, OP)?;
            if key(&src.node) == key(&r.node) {
                return Err(OpError::new(OP, rc::FAIL_INVLD_REQUEST, "A resource cannot migrate its disk from itself.")
                    .correction("Name the node whose replica should go."));
            }
            if in_use(&key(&src.node)) {
                return Err(OpError::new(
                    OP,
                    rc::FAIL_IN_USE,
                    format!("Resource '{}' on node '{}' is still in use.", src.resource_definition, src.node),
                )
                .cause("Its DRBD device is Primary; a migration deletes it once the new replica is UpToDate.")
                .correction("Stop what uses the device (unmount it, stop the VM) first."));
            }
            next.props.insert(PROP_MIGRATE_FROM.into(), src.node.clone());
        }
        if let Some(l) = req.layer_list.as_ref().filter(|l| !l.is_empty()) {
            let stack = check_layer_stack(l, OP)?;
            if !stack.iter().any(|x| x == "DRBD") {
                return Err(OpError::new(OP, rc::FAIL_INVLD_LAYER_STACK, "Toggle disk is only supported in combination with DRBD"));
            }
            next.layer_stack = stack;
        }
        let node_obs = obs.node(&key(&r.node));
        if node_obs.online
            && let Some(l) = next.layer_stack.iter().find(|l| *l != "STORAGE" && !node_obs.layers.contains(*l))
        {
            return Err(OpError::new(
                OP,
                rc::FAIL_STLT_DOES_NOT_SUPPORT_LAYER,
                format!("Satellite '{}' does not support the following layers: [{l}]", r.node),
            ));
        }
        let vds: Vec<_> = self.vlm_dfns_of(&rd_key).collect();
        let rg = self.rsc_grps.get(&key(&d.resource_group));
        let node = self.nodes.get(&key(&r.node));
        for vd in vds {
            let named = [Some(&next.props), Some(&vd.props), Some(&d.props), rg.map(|g| &g.props), node.map(|n| &n.props)]
                .into_iter()
                .flatten()
                .find_map(|p: &Props| p.get(PROP_STOR_POOL_NAME).filter(|v| !v.is_empty()).cloned());
            let candidates: Vec<String> = match &named {
                Some(p) => vec![p.clone()],
                // LINSTOR tries the pools the diskful peers use, then the
                // default pool.
                None => diskful
                    .iter()
                    .filter_map(|p| p.volumes.get(&vd.volume_number))
                    .filter(|v| !v.provider_kind.is_diskless())
                    .map(|v| v.storage_pool.clone())
                    .chain([DEFAULT_STOR_POOL.to_string()])
                    .collect(),
            };
            let pool = candidates
                .iter()
                .find_map(|p| self.stor_pools.get(&(key(&r.node), key(p))))
                .ok_or_else(|| pool_not_deployed_for(r, named.as_deref().unwrap_or(DEFAULT_STOR_POOL), vd.volume_number))?;
            if pool.provider_kind.is_diskless() {
                return Err(OpError::new(
                    OP,
                    rc::FAIL_INVLD_STOR_POOL_NAME,
                    format!(
                        "Storage pool '{}' on node '{}' is {}; a diskful resource needs a pool with storage.",
                        pool.name,
                        pool.node,
                        pool.provider_kind.as_str()
                    ),
                )
                .correction("Name a storage pool with backing storage."));
            }
            if !pool.provider_kind.is_thin()
                && let Some(cap) = obs.capacity(&key(&r.node), &pool.name)
                && cap.free_kib < vd.size_kib
            {
                return Err(OpError::new(
                    OP,
                    rc::FAIL_INVLD_VLM_SIZE,
                    format!("Not enough free space available for volume {} of resource '{}'.", vd.volume_number, r.resource_definition),
                )
                .cause(format!(
                    "Storage pool '{}' on node '{}' has {} KiB free; the volume needs {} KiB.",
                    pool.name, pool.node, cap.free_kib, vd.size_kib
                )));
            }
            let luks = next.layer_stack.iter().any(|l| l == "LUKS");
            let Some(v) = next.volumes.get_mut(&vd.volume_number) else { continue };
            v.storage_pool = pool.name.clone();
            v.provider_kind = pool.provider_kind;
            if luks && v.luks_secret.is_none() {
                v.luks_secret = Some(crate::resource_definition::new_luks_secret(vd, ctx).ok_or_else(|| {
                    OpError::new(
                        OP,
                        rc::FAIL_NOT_FOUND_CRYPT_KEY,
                        "Cannot create an encrypted volume: the master passphrase is not available.",
                    )
                    .correction("Create or enter the master passphrase, e.g. `linstor encryption create-passphrase` / `enter-passphrase`.")
                })?);
            }
        }
        Ok(next)
    }

    /// Replicas that got a disk by toggle-disk and still wait for their
    /// first sync: (definition key, node key, volume numbers).
    pub fn awaiting_disk_added(&self) -> Vec<(String, String, Vec<u32>)> {
        self.resources
            .iter()
            .filter(|(_, r)| r.flags.contains(FLAG_DISK_ADDING))
            .map(|((rd, node), r)| (rd.clone(), node.clone(), r.volumes.keys().copied().collect()))
            .collect()
    }

    /// Records that these replicas are UpToDate: `DISK_ADDING` goes, and a
    /// replica migrated from another node has that node's replica deleted
    /// (unless it is in use now; then it is tried again later).
    pub fn disk_added(&self, done: &[(String, String)], in_use: &dyn Fn(&str, &str) -> bool) -> Outcome {
        let mut out = Outcome::default();
        for (rd, node) in done {
            let Some(r) = self.resources.get(&(key(rd), key(node))).filter(|r| r.flags.contains(FLAG_DISK_ADDING)) else { continue };
            let from = r.props.get(PROP_MIGRATE_FROM).map(|f| key(f));
            if let Some(f) = &from
                && in_use(&key(rd), f)
            {
                continue;
            }
            let mut next = r.clone();
            next.flags.remove(FLAG_DISK_ADDING);
            next.props.remove(PROP_MIGRATE_FROM);
            if let Some(f) = from
                && let Some(src) = self.resources.get(&(key(rd), f.clone()))
            {
                out.delete(ObjKey::Rsc(key(rd), f));
                out.reply(
                    ApiCallRc::success(
                        rc::MASK_DEL | rc::MASK_RSC,
                        rc::DELETED,
                        format!("Resource '{}' on node '{}' deleted.", src.resource_definition, src.node),
                    )
                    .with_details(format!("Its disk migrated to node '{}'.", r.node)),
                );
            }
            out.put(Object::Rsc(next));
        }
        out
    }
}

fn pool_not_deployed(r: &Resource, pool: &str) -> OpError {
    OpError::new(
        OP,
        rc::FAIL_NOT_FOUND_DFLT_STOR_POOL,
        format!("The storage pool '{pool}' for resource '{}' is not deployed on node '{}'.", r.resource_definition, r.node),
    )
    .correction("Create that storage pool on the node, or name an existing one.")
    .obj_ref("Node", &r.node)
    .obj_ref("StorPool", pool)
}

fn pool_not_deployed_for(r: &Resource, pool: &str, nr: u32) -> OpError {
    OpError::new(
        OP,
        rc::FAIL_NOT_FOUND_DFLT_STOR_POOL,
        format!(
            "The storage pool '{pool}' for resource '{}' for volume number '{nr}' is not deployed on node '{}'.",
            r.resource_definition, r.node
        ),
    )
    .details("The storage pool name for this volume was looked for, in order, in: the properties of the resource, volume definition, resource definition, resource group and node, then in the pools of the diskful peers, and finally the default storage pool.")
    .obj_ref("Node", &r.node)
    .obj_ref("StorPool", pool)
}
