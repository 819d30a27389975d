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
        if p.provider_kind != ProviderKind::FileThin {
            return Err(OpError::new(
                OP,
                rc::FAIL_SNAPSHOTS_NOT_SUPPORTED,
                format!("Storage pool '{pool}' on node '{node}' ({}) cannot receive a backup.", p.provider_kind.as_str()),
            )
            .cause("A backup is restored through a snapshot; this host restores into FILE_THIN pools.")
            .correction("Name a FILE_THIN pool on a file system with reflinks (stor_pool_map)."));
        }
        Ok(p.provider_kind)
    }

    /// Registers the restored definition and snapshot and restores the
    /// resource from it.
    pub fn restore_backup(&self, p: &BackupRestorePlan, ctx: &mut Ctx) -> OpResult<Outcome> {
        let kind = self.check_backup_restore(&p.target, &p.node, &p.pool)?;
        let mut c = self.clone();
        let mut out = Outcome::default();
        let take = |c: &mut Cluster, o: Outcome, out: &mut Outcome| {
            c.apply(o.changes.clone());
            out.changes.extend(o.changes);
            out.replies.extend(o.replies);
        };
        let rd = ResourceDefinitionCreate {
            resource_definition: ResourceDefinition { name: p.target.clone(), ..Default::default() },
            ..Default::default()
        };
        let o = c.create_rsc_dfn(&rd, ctx)?;
        take(&mut c, o, &mut out);
        for (nr, size) in &p.volumes {
            let vd = VolumeDefinitionCreate {
                volume_definition: VolumeDefinition { volume_number: Some(i64::from(*nr)), size_kib: Some(*size), ..Default::default() },
                ..Default::default()
            };
            let o = c.create_vlm_dfn(&p.target, &vd, ctx)?;
            take(&mut c, o, &mut out);
        }
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
                        luks_secret: None,
                    })
                    .collect(),
                drbd_node_id: None,
            },
        );
        let s = SnapshotDfn {
            resource_definition: p.target.clone(),
            name: p.snapshot.clone(),
            uuid: ctx.uuid(),
            flags: BTreeSet::new(),
            props: Default::default(),
            create_timestamp: ctx.now_ms,
            volumes: p.volumes.iter().map(|(nr, size)| SnapshotVlmDfn { volume_number: *nr, size_kib: *size }).collect(),
            nodes,
            phase: SnapshotPhase::Done,
        };
        let mut o = Outcome::default();
        o.put(Object::SnapDfn(s));
        take(&mut c, o, &mut out);
        let restore = SnapshotRestore { to_resource: p.target.clone(), nodes: vec![node], stor_pool_rename: BTreeMap::new() };
        let o = c.restore_resources(&p.target, &p.snapshot, &restore, ctx)?;
        take(&mut c, o, &mut out);
        Ok(out)
    }
}
