//! Storage pool definitions, storage pools and provider kinds.

use std::collections::BTreeMap;

use cairn_api::rc::{self, ApiCallRc};
use cairn_api::{PropsModify, storage_pool as wire};
use serde::{Deserialize, Serialize};

use crate::cluster::{Cluster, ObjKey, Object, Outcome};
use crate::error::{OpError, OpResult};
use crate::name::{self, NameKind, key};
use crate::whitelist::PropsObj;
use crate::{Ctx, DEFAULT_DISKLESS_STOR_POOL, DEFAULT_STOR_POOL, Props, props};

pub use cairn_proto::ProviderKind;

/// The property that names the backing object (VG, thin pool, zpool,
/// directory), with its legacy spelling.
fn backing_prop(kind: ProviderKind) -> Option<(&'static str, &'static str)> {
    match kind {
        ProviderKind::Lvm => Some(("StorDriver/StorPoolName", "StorDriver/LvmVg")),
        ProviderKind::LvmThin => Some(("StorDriver/StorPoolName", "StorDriver/ThinPool")),
        ProviderKind::Zfs => Some(("StorDriver/StorPoolName", "StorDriver/ZPool")),
        ProviderKind::ZfsThin => Some(("StorDriver/StorPoolName", "StorDriver/ZPoolThin")),
        ProviderKind::File | ProviderKind::FileThin => Some(("StorDriver/StorPoolName", "StorDriver/FileDir")),
        _ => None,
    }
}

/// Checks the backing-object property of a new pool: present, and of a
/// shape that can never smuggle options or paths into a storage command.
fn check_backing(kind: ProviderKind, props: &Props, op: i64) -> OpResult<()> {
    let Some((main, legacy)) = backing_prop(kind) else {
        return Ok(());
    };
    let Some(value) = props.get(main).or_else(|| props.get(legacy)) else {
        return Err(OpError::new(op, rc::FAIL_MISSING_PROPS, format!("A {} storage pool needs the property '{main}'.", kind.as_str()))
            .correction(match kind {
                ProviderKind::Lvm => "Set StorDriver/StorPoolName to the volume group, e.g. 'vg0'.",
                ProviderKind::LvmThin => "Set StorDriver/StorPoolName to 'volumegroup/thinpool'.",
                ProviderKind::Zfs | ProviderKind::ZfsThin => "Set StorDriver/StorPoolName to the zpool or dataset, e.g. 'tank/linstor'.",
                _ => "Set StorDriver/StorPoolName to an absolute directory path.",
            }));
    };
    let lvm_ok = |s: &str| !s.is_empty() && !s.starts_with('-') && s.chars().all(|c| c.is_ascii_alphanumeric() || "+_.-".contains(c));
    let ok = match kind {
        ProviderKind::Lvm => lvm_ok(value),
        ProviderKind::LvmThin => value.split_once('/').is_some_and(|(vg, lv)| lvm_ok(vg) && lvm_ok(lv)),
        ProviderKind::Zfs | ProviderKind::ZfsThin => {
            !value.starts_with('-')
                && value.split('/').all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_alphanumeric() || "_-.:".contains(c)))
        }
        _ => value.starts_with('/') && !value.split('/').any(|p| p == "..") && !value.chars().any(|c| c.is_control()),
    };
    if ok {
        Ok(())
    } else {
        Err(OpError::new(op, rc::FAIL_INVLD_PROP, format!("'{value}' is not a valid backing object for a {} storage pool.", kind.as_str()))
            .cause(format!("The value of '{main}' must name a volume group, thin pool, zpool dataset or absolute directory without '..'."))
            .correction("Fix the property value."))
    }
}

/// A storage pool definition: a name shared by pools on many nodes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StorPoolDfn {
    pub name: String,
    pub props: Props,
    pub uuid: String,
}

/// A storage pool on one node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StorPool {
    pub node: String,
    pub name: String,
    pub provider_kind: ProviderKind,
    pub props: Props,
    pub free_space_mgr_name: String,
    pub external_locking: bool,
    pub uuid: String,
}

/// Capacity of a pool as a satellite last reported it (observed state).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PoolCapacity {
    pub free_kib: i64,
    pub total_kib: i64,
    /// Size of the cluster's volumes in this pool that the satellite had
    /// created when it measured `free_kib`: volumes placed since then are
    /// not in that number yet.
    pub present_kib: i64,
}

impl StorPool {
    pub fn new(
        node: &str,
        name: &str,
        kind: ProviderKind,
        props: Props,
        free_space_mgr_name: Option<String>,
        external_locking: bool,
        uuid: String,
    ) -> StorPool {
        StorPool {
            node: node.to_string(),
            name: name.to_string(),
            provider_kind: kind,
            props,
            free_space_mgr_name: free_space_mgr_name.unwrap_or_else(|| format!("{node};{name}")),
            external_locking,
            uuid,
        }
    }

    /// The wire form, with capacity if a satellite reported it.
    /// `snapshots` is what the satellite found out about the pool (a
    /// FILE_THIN directory: whether its file system makes reflinks); a
    /// FILE_THIN pool not probed yet does not claim snapshots.
    pub fn to_api(&self, capacity: Option<PoolCapacity>, snapshots: Option<bool>) -> wire::StoragePool {
        let kind = self.provider_kind;
        let supports_snapshots = kind.supports_snapshots() && snapshots.unwrap_or(kind != ProviderKind::FileThin);
        let mut traits = BTreeMap::new();
        traits.insert("Provisioning".to_string(), if kind.is_thin() { "Thin" } else { "Fat" }.to_string());
        traits.insert("SupportsSnapshots".to_string(), supports_snapshots.to_string());
        wire::StoragePool {
            storage_pool_name: self.name.clone(),
            node_name: self.node.clone(),
            provider_kind: self.provider_kind.as_str().to_string(),
            props: self.props.clone(),
            static_traits: Some(traits),
            free_capacity: capacity.map(|c| c.free_kib),
            total_capacity: capacity.map(|c| c.total_kib),
            free_space_mgr_name: Some(self.free_space_mgr_name.clone()),
            uuid: Some(self.uuid.clone()),
            reports: Vec::new(),
            supports_snapshots: Some(supports_snapshots),
            shared_space: None,
            external_locking: Some(self.external_locking),
        }
    }
}

impl StorPoolDfn {
    pub fn to_api(&self) -> wire::StoragePoolDefinition {
        wire::StoragePoolDefinition { storage_pool_name: self.name.clone(), props: self.props.clone() }
    }
}

fn sp_not_found(op: i64, node: &str, sp: &str) -> OpError {
    OpError::new(op, rc::FAIL_NOT_FOUND_STOR_POOL, format!("Storage pool '{sp}' on node '{node}' not found."))
        .correction("Create the storage pool first or use an existing one.")
        .obj_ref("Node", node)
        .obj_ref("StorPool", sp)
}

fn spd_not_found(op: i64, sp: &str) -> OpError {
    OpError::new(op, rc::FAIL_NOT_FOUND_STOR_POOL_DFN, format!("Storage pool definition '{sp}' not found."))
        .correction("Use an existing storage pool definition.")
}

impl Cluster {
    pub fn stor_pool(&self, node: &str, sp: &str, op: i64) -> OpResult<&StorPool> {
        self.stor_pools.get(&(key(node), key(sp))).ok_or_else(|| sp_not_found(op, node, sp))
    }

    /// Volumes (as "resource/volume") that live in a pool.
    fn volumes_in_pool(&self, node: &str, sp: &str) -> Vec<String> {
        let nk = key(node);
        self.resources_on(&nk)
            .flat_map(|r| {
                r.volumes
                    .values()
                    .filter(|v| v.storage_pool.eq_ignore_ascii_case(sp))
                    .map(move |v| format!("{}/{}", r.resource_definition, v.volume_number))
            })
            .collect()
    }

    /// `POST /v1/nodes/{node}/storage-pools`.
    pub fn create_stor_pool(&self, node: &str, req: &wire::StoragePool, ctx: &mut Ctx) -> OpResult<Outcome> {
        const OP: i64 = rc::MASK_CRT | rc::MASK_STOR_POOL;
        let n = self.node(node, OP)?;
        name::check(NameKind::StoragePool, &req.storage_pool_name, OP)?;
        let kind = ProviderKind::parse(&req.provider_kind).ok_or_else(|| {
            OpError::new(OP, rc::FAIL_INVLD_STOR_DRIVER, format!("The provider kind '{}' is invalid.", req.provider_kind))
                .correction(format!("Use one of {}.", ProviderKind::ALL.map(ProviderKind::as_str).join(", ")))
        })?;
        if !n.node_type.allows(kind) {
            return Err(OpError::new(
                OP,
                rc::FAIL_INVLD_STOR_DRIVER,
                format!("A {} node cannot have a {} storage pool.", n.node_type.as_str(), kind.as_str()),
            )
            .correction("Use a provider kind the node type supports."));
        }
        let sp_key = key(&req.storage_pool_name);
        if let Some(p) = self.stor_pools.get(&(key(&n.name), sp_key.clone())) {
            return Err(OpError::new(
                OP,
                rc::FAIL_EXISTS_STOR_POOL,
                format!("Storage pool '{}' already exists on node '{}'.", p.name, n.name),
            )
            .correction("Use another name or modify the existing pool."));
        }
        if sp_key == key(DEFAULT_DISKLESS_STOR_POOL) && !kind.is_diskless() {
            return Err(OpError::new(OP, rc::FAIL_INVLD_STOR_DRIVER, format!("'{DEFAULT_DISKLESS_STOR_POOL}' must be a DISKLESS pool.")));
        }
        let new_props = props::checked(PropsObj::StorPool, &req.props, OP)?;
        check_backing(kind, &new_props, OP)?;
        let fsm = match &req.free_space_mgr_name {
            Some(f) if !f.trim().is_empty() => {
                if f.contains(char::is_whitespace) {
                    return Err(OpError::new(OP, rc::FAIL_INVLD_FREE_SPACE_MGR_NAME, format!("The shared space name '{f}' is invalid.")));
                }
                Some(f.clone())
            }
            _ => None,
        };
        let mut out = Outcome::default();
        // LINSTOR (CtrlPropsHelper.fillProperties) names the keys it set first.
        if let Some(e) = crate::props::created_entry(rc::MASK_STOR_POOL, &req.props) {
            out.reply(e);
        }
        // The definition keeps the spelling of the first pool of that name.
        let display = match self.stor_pool_dfns.get(&sp_key) {
            Some(d) => d.name.clone(),
            None => {
                out.put(Object::StorPoolDfn(StorPoolDfn { name: req.storage_pool_name.clone(), props: Props::new(), uuid: ctx.uuid() }));
                req.storage_pool_name.clone()
            }
        };
        let pool = StorPool::new(&n.name, &display, kind, new_props, fsm, req.external_locking.unwrap_or(false), ctx.uuid());
        out.reply(
            ApiCallRc::success(OP, rc::CREATED, format!("Storage pool '{}' on node '{}' registered.", pool.name, pool.node))
                .with_details(format!("Storage pool '{}' on node '{}' UUID is: {}", pool.name, pool.node, pool.uuid))
                .with_ref("Node", &pool.node)
                .with_ref("StorPool", &pool.name),
        );
        out.put(Object::StorPool(pool));
        Ok(out)
    }

    /// `PUT /v1/nodes/{node}/storage-pools/{sp}`.
    pub fn modify_stor_pool(&self, node: &str, sp: &str, req: &PropsModify) -> OpResult<Outcome> {
        const OP: i64 = rc::MASK_MOD | rc::MASK_STOR_POOL;
        self.node(node, OP)?;
        let mut p = self.stor_pool(node, sp, OP)?.clone();
        let new_props = props::apply(PropsObj::StorPool, &p.props, req, OP)?;
        check_backing(p.provider_kind, &new_props, OP)?;
        let driver = |props: &Props| {
            props.iter().filter(|(k, _)| k.starts_with("StorDriver/")).map(|(k, v)| (k.clone(), v.clone())).collect::<Vec<_>>()
        };
        if driver(&new_props) != driver(&p.props) {
            let used = self.volumes_in_pool(&p.node, &p.name);
            if !used.is_empty() {
                return Err(OpError::new(
                    OP,
                    rc::FAIL_IN_USE,
                    format!("The backing storage of pool '{}' on node '{}' cannot change while volumes live in it.", p.name, p.node),
                )
                .cause(format!("Volumes in the pool: {}", used.join(", ")))
                .correction("Delete those resources first, or create a new pool."));
            }
        }
        p.props = new_props;
        let mut out = Outcome::default();
        // LINSTOR answers the keys it set before the 'modified' entry.
        if let Some(e) = crate::props::set_entry(rc::MASK_STOR_POOL, req) {
            out.reply(e);
        }
        out.reply(
            ApiCallRc::success(OP, rc::MODIFIED, format!("Storage pool '{}' on node '{}' modified.", p.name, p.node))
                .with_ref("Node", &p.node)
                .with_ref("StorPool", &p.name),
        );
        out.put(Object::StorPool(p));
        Ok(out)
    }

    /// `DELETE /v1/nodes/{node}/storage-pools/{sp}`: refused while volumes
    /// live in it.
    pub fn delete_stor_pool(&self, node: &str, sp: &str) -> OpResult<Outcome> {
        const OP: i64 = rc::MASK_DEL | rc::MASK_STOR_POOL;
        self.node(node, OP)?;
        let p = self.stor_pool(node, sp, OP)?;
        let used = self.volumes_in_pool(&p.node, &p.name);
        if !used.is_empty() {
            return Err(OpError::new(OP, rc::FAIL_IN_USE, format!("Storage pool '{}' on node '{}' is still in use.", p.name, p.node))
                .cause(format!("Volumes in the pool: {}", used.join(", ")))
                .correction("Delete those resources first."));
        }
        let mut out = Outcome::default();
        out.delete(ObjKey::StorPool(key(&p.node), key(&p.name)));
        out.reply(
            ApiCallRc::success(OP, rc::DELETED, format!("Storage pool '{}' on node '{}' deleted.", p.name, p.node))
                .with_ref("Node", &p.node)
                .with_ref("StorPool", &p.name),
        );
        Ok(out)
    }

    pub fn stor_pool_dfn(&self, sp: &str, op: i64) -> OpResult<&StorPoolDfn> {
        self.stor_pool_dfns.get(&key(sp)).ok_or_else(|| spd_not_found(op, sp))
    }

    /// `POST /v1/storage-pool-definitions`.
    pub fn create_stor_pool_dfn(&self, req: &wire::StoragePoolDefinition, ctx: &mut Ctx) -> OpResult<Outcome> {
        const OP: i64 = rc::MASK_CRT | rc::MASK_STOR_POOL_DFN;
        name::check(NameKind::StoragePool, &req.storage_pool_name, OP)?;
        if let Some(d) = self.stor_pool_dfns.get(&key(&req.storage_pool_name)) {
            return Err(OpError::new(OP, rc::FAIL_EXISTS_STOR_POOL_DFN, format!("Storage pool definition '{}' already exists.", d.name)));
        }
        let dfn_props = props::checked(PropsObj::StorPoolDfn, &req.props, OP)?;
        let d = StorPoolDfn { name: req.storage_pool_name.clone(), props: dfn_props, uuid: ctx.uuid() };
        let mut out = Outcome::default();
        // LINSTOR (CtrlPropsHelper.fillProperties) names the keys it set first.
        if let Some(e) = crate::props::created_entry(rc::MASK_STOR_POOL_DFN, &req.props) {
            out.reply(e);
        }
        out.reply(
            ApiCallRc::success(OP, rc::CREATED, format!("New storage pool definition '{}' created.", d.name))
                .with_ref("StorPoolDfn", &d.name),
        );
        out.put(Object::StorPoolDfn(d));
        Ok(out)
    }

    /// `PUT /v1/storage-pool-definitions/{sp}`.
    pub fn modify_stor_pool_dfn(&self, sp: &str, req: &PropsModify) -> OpResult<Outcome> {
        const OP: i64 = rc::MASK_MOD | rc::MASK_STOR_POOL_DFN;
        let mut d = self.stor_pool_dfn(sp, OP)?.clone();
        d.props = props::apply(PropsObj::StorPoolDfn, &d.props, req, OP)?;
        let mut out = Outcome::default();
        // LINSTOR answers the keys it set before the 'modified' entry.
        if let Some(e) = crate::props::set_entry(rc::MASK_STOR_POOL_DFN, req) {
            out.reply(e);
        }
        out.reply(ApiCallRc::success(OP, rc::MODIFIED, format!("Storage pool definition '{}' modified.", d.name)));
        out.put(Object::StorPoolDfn(d));
        Ok(out)
    }

    /// `DELETE /v1/storage-pool-definitions/{sp}`: refused while pools of
    /// that name exist, and for the two default definitions.
    pub fn delete_stor_pool_dfn(&self, sp: &str) -> OpResult<Outcome> {
        const OP: i64 = rc::MASK_DEL | rc::MASK_STOR_POOL_DFN;
        let d = self.stor_pool_dfn(sp, OP)?;
        let k = key(&d.name);
        if k == key(DEFAULT_STOR_POOL) || k == key(DEFAULT_DISKLESS_STOR_POOL) {
            return Err(OpError::new(OP, rc::FAIL_IN_USE, format!("The default storage pool definition '{}' cannot be deleted.", d.name)));
        }
        let nodes: Vec<&str> = self.stor_pools.values().filter(|p| key(&p.name) == k).map(|p| p.node.as_str()).collect();
        if !nodes.is_empty() {
            return Err(OpError::new(OP, rc::FAIL_IN_USE, format!("Storage pool definition '{}' still has storage pools.", d.name))
                .cause(format!("Nodes with a pool of that name: {}", nodes.join(", ")))
                .correction("Delete those storage pools first."));
        }
        let mut out = Outcome::default();
        out.delete(ObjKey::StorPoolDfn(k));
        out.reply(ApiCallRc::success(OP, rc::DELETED, format!("Storage pool definition '{}' deleted.", d.name)));
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(kind: ProviderKind) -> StorPool {
        StorPool::new("n1", "p", kind, Props::new(), None, false, "u".into())
    }

    #[test]
    fn snapshot_support_is_what_the_satellite_found() {
        let says = |kind, probed| {
            let w = pool(kind).to_api(None, probed);
            let t = w.static_traits.unwrap_or_default();
            assert_eq!(t.get("SupportsSnapshots").map(|v| v == "true"), w.supports_snapshots, "{kind:?}");
            w.supports_snapshots.unwrap_or_default()
        };
        // FILE_THIN: only where reflinks were found; unknown is no.
        assert!(says(ProviderKind::FileThin, Some(true)));
        assert!(!says(ProviderKind::FileThin, Some(false)));
        assert!(!says(ProviderKind::FileThin, None));
        for k in [ProviderKind::LvmThin, ProviderKind::Zfs, ProviderKind::ZfsThin] {
            assert!(says(k, None), "{k:?}");
        }
        for k in [ProviderKind::File, ProviderKind::Lvm, ProviderKind::Diskless] {
            assert!(!says(k, None) && !says(k, Some(true)), "{k:?}");
        }
    }
}
