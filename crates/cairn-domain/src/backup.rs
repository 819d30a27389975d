//! Restoring a backup: the definition, its volume definitions and the
//! downloaded snapshot are registered, and the resource is restored from
//! that snapshot on the chosen node, in one outcome.

use std::collections::{BTreeMap, BTreeSet};

use crate::storage_pool::ProviderKind;
use cairn_api::rc;
use cairn_api::resource_definition::{ResourceDefinition, ResourceDefinitionCreate, VolumeDefinition, VolumeDefinitionCreate};
use cairn_api::snapshot::SnapshotRestore;

use crate::cluster::{Cluster, Object, Outcome};
use crate::ctx::Ctx;
use crate::error::{OpError, OpResult};
use crate::name::key;
use crate::snapshot::{NodeSnapshot, SnapshotDfn, SnapshotPhase, SnapshotVlmDfn, SnapshotVolume};

/// The property of a snapshot definition received from another cluster
/// that holds the uuid of the source's snapshot definition (LINSTOR's
/// `InternalApiConsts.KEY_BACKUP_L2L_SRC_SNAP_DFN_UUID`): the base of a
/// later incremental is the snapshot whose source uuid the source still
/// holds, never one that merely has the same name.
pub const SOURCE_SNAP_UUID_PROP: &str = "Backup/Target/SourceSnapDfnUUID";

/// What a backup restore registers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupRestorePlan {
    pub target: String,
    /// The snapshot the satellite downloaded the backup into.
    pub snapshot: String,
    pub node: String,
    pub pool: String,
    pub layer_stack: Vec<String>,
    /// (volume number, size in KiB)
    pub volumes: Vec<(u32, i64)>,
    /// A shipment's source snapshot definition uuid, kept as
    /// [`SOURCE_SNAP_UUID_PROP`] on the registered snapshot.
    pub source_snap_uuid: Option<String>,
    /// volume number -> the LUKS passphrase of an encrypted volume, sealed
    /// with this cluster's master key (re-sealed from the backup's or the
    /// shipment's key by the controller); the restored volume opens with
    /// it.
    pub luks_secrets: BTreeMap<u32, String>,
}

impl Cluster {
    /// Checks that a restore can go ahead before anything is downloaded:
    /// the target is new, the node and a snapshot-capable pool exist.
    pub fn check_backup_restore(&self, target: &str, node: &str, pool: &str) -> OpResult<ProviderKind> {
        const OP: i64 = rc::MASK_CRT | rc::MASK_BACKUP;
        if self.rsc_dfns.contains_key(&key(target)) {
            return Err(OpError::new(OP, rc::FAIL_EXISTS_RSC_DFN, format!("Resource definition '{target}' already exists."))
                .correction("Restore into a new resource definition."));
        }
        self.node(node, OP)?;
        let Some(p) = self.stor_pools.get(&(key(node), key(pool))) else {
            return Err(OpError::new(OP, rc::FAIL_NOT_FOUND_STOR_POOL, format!("Storage pool '{pool}' on node '{node}' not found.")));
        };
        if !matches!(p.provider_kind, ProviderKind::FileThin | ProviderKind::LvmThin | ProviderKind::Zfs | ProviderKind::ZfsThin) {
            return Err(OpError::new(
                OP,
                rc::FAIL_SNAPSHOTS_NOT_SUPPORTED,
                format!("Storage pool '{pool}' on node '{node}' ({}) cannot receive a backup.", p.provider_kind.as_str()),
            )
            .cause("A backup is restored through a snapshot; Cairn restores into LVM_THIN, FILE_THIN, ZFS and ZFS_THIN pools.")
            .correction("Name an LVM_THIN, ZFS or ZFS_THIN pool, or a FILE_THIN pool on a file system with reflinks (stor_pool_map)."));
        }
        Ok(p.provider_kind)
    }

    /// Registers the restored definition and snapshot and restores the
    /// resource from it.
    pub fn restore_backup(&self, p: &BackupRestorePlan, ctx: &mut Ctx) -> OpResult<Outcome> {
        let kind = self.check_backup_restore(&p.target, &p.node, &p.pool)?;
        self.register_received(p, kind, true, ctx)
    }

    /// Checks that a snapshot shipped from another cluster can be
    /// received (LINSTOR's target side of a shipment): into a new
    /// definition (restored from it unless `download_only`), or, when the
    /// definition exists, as a new snapshot of it beside its resources
    /// (LINSTOR's download-only default then), with the same volumes.
    pub fn check_shipment(&self, p: &BackupRestorePlan) -> OpResult<ProviderKind> {
        const OP: i64 = rc::MASK_CRT | rc::MASK_BACKUP;
        let Some(d) = self.rsc_dfns.get(&key(&p.target)) else {
            // A ZFS pool receives the `zfs send` stream itself (no
            // snapshot copy of a file is needed).
            let zfs = self.stor_pools.get(&(key(&p.node), key(&p.pool))).map(|sp| sp.provider_kind);
            if let Some(kind @ (ProviderKind::Zfs | ProviderKind::ZfsThin)) = zfs {
                self.node(&p.node, OP)?;
                return Ok(kind);
            }
            return self.check_backup_restore(&p.target, &p.node, &p.pool);
        };
        if self.snapshots.contains_key(&(key(&d.name), key(&p.snapshot))) {
            return Err(OpError::new(
                OP,
                rc::FAIL_EXISTS_SNAPSHOT_DFN,
                format!("Snapshot '{}' of resource definition '{}' already exists.", p.snapshot, d.name),
            ));
        }
        let have: Vec<(u32, i64)> = self.vlm_dfns_of(&key(&d.name)).map(|v| (v.volume_number, v.size_kib)).collect();
        if have.iter().map(|(nr, _)| *nr).collect::<Vec<_>>() != p.volumes.iter().map(|(nr, _)| *nr).collect::<Vec<_>>() {
            return Err(OpError::new(
                OP,
                rc::FAIL_INVLD_BACKUP_CONFIG,
                format!("Resource definition '{}' has other volumes than the shipped snapshot.", d.name),
            )
            .correction("Ship into a new resource definition."));
        }
        self.node(&p.node, OP)?;
        let Some(sp) = self.stor_pools.get(&(key(&p.node), key(&p.pool))) else {
            return Err(OpError::new(
                OP,
                rc::FAIL_NOT_FOUND_STOR_POOL,
                format!("Storage pool '{}' on node '{}' not found.", p.pool, p.node),
            ));
        };
        Ok(sp.provider_kind)
    }

    /// Registers a snapshot shipped from another cluster (see
    /// [`Cluster::check_shipment`]).
    pub fn receive_shipment(&self, p: &BackupRestorePlan, download_only: bool, ctx: &mut Ctx) -> OpResult<Outcome> {
        let kind = self.check_shipment(p)?;
        let exists = self.rsc_dfns.contains_key(&key(&p.target));
        self.register_received(p, kind, !exists && !download_only, ctx)
    }

    fn register_received(&self, p: &BackupRestorePlan, kind: ProviderKind, restore: bool, ctx: &mut Ctx) -> OpResult<Outcome> {
        let mut c = self.clone();
        let mut out = Outcome::default();
        let take = |c: &mut Cluster, o: Outcome, out: &mut Outcome| {
            c.apply(o.changes.clone());
            out.changes.extend(o.changes);
            out.replies.extend(o.replies);
        };
        if !c.rsc_dfns.contains_key(&key(&p.target)) {
            let rd = ResourceDefinitionCreate {
                resource_definition: ResourceDefinition { name: p.target.clone(), ..Default::default() },
                ..Default::default()
            };
            let o = c.create_rsc_dfn(&rd, ctx)?;
            take(&mut c, o, &mut out);
            for (nr, size) in &p.volumes {
                let vd = VolumeDefinitionCreate {
                    volume_definition: VolumeDefinition {
                        volume_number: Some(i64::from(*nr)),
                        size_kib: Some(*size),
                        ..Default::default()
                    },
                    ..Default::default()
                };
                let o = c.create_vlm_dfn(&p.target, &vd, ctx)?;
                take(&mut c, o, &mut out);
            }
        }
        let target = c.rsc_dfn(&p.target, rc::MASK_CRT | rc::MASK_BACKUP)?.name.clone();
        let node = c.node(&p.node, rc::MASK_CRT | rc::MASK_BACKUP)?.name.clone();
        let mut nodes = BTreeMap::new();
        nodes.insert(
            key(&node),
            NodeSnapshot {
                node: node.clone(),
                uuid: ctx.uuid(),
                create_timestamp: ctx.now_ms,
                layer_stack: p.layer_stack.clone(),
                volumes: p
                    .volumes
                    .iter()
                    .map(|(nr, _)| SnapshotVolume {
                        volume_number: *nr,
                        storage_pool: p.pool.clone(),
                        provider_kind: kind,
                        uuid: ctx.uuid(),
                        luks_secret: p.luks_secrets.get(nr).cloned(),
                    })
                    .collect(),
                drbd_node_id: None,
            },
        );
        let s = SnapshotDfn {
            resource_definition: target.clone(),
            name: p.snapshot.clone(),
            uuid: ctx.uuid(),
            flags: BTreeSet::new(),
            props: p.source_snap_uuid.iter().map(|u| (SOURCE_SNAP_UUID_PROP.to_string(), u.clone())).collect(),
            create_timestamp: ctx.now_ms,
            volumes: p.volumes.iter().map(|(nr, size)| SnapshotVlmDfn { volume_number: *nr, size_kib: *size }).collect(),
            nodes,
            phase: SnapshotPhase::Done,
        };
        let mut o = Outcome::default();
        o.put(Object::SnapDfn(s));
        take(&mut c, o, &mut out);
        if restore {
            let restore = SnapshotRestore { to_resource: target.clone(), nodes: vec![node], stor_pool_rename: BTreeMap::new() };
            let o = c.restore_resources(&target, &p.snapshot, &restore, ctx)?;
            take(&mut c, o, &mut out);
        }
        Ok(out)
    }
}
