//! LINSTOR's ZFS strategies (`ZfsRollbackStrategy`, `ZfsDeleteStrategy`,
//! `ZfsChecks`): how a rollback of ZFS volumes is done and whether a ZFS
//! resource with snapshots may be deleted. Both are properties of the
//! resource definition, its group or the controller (the first that has
//! it), read without regard to case; a value LINSTOR does not know counts
//! as its default, `Dynamic` (setting one is refused by the whitelist).

use cairn_api::rc;
use cairn_proto::ZfsRollback;

use crate::cluster::Cluster;
use crate::error::OpError;
use crate::name::key;
use crate::resource::Resource;
use crate::resource_definition::ResourceDefinition;
use crate::snapshot::SnapshotDfn;
use crate::storage_pool::ProviderKind;

/// `Rollback`, `Clone` or `Dynamic` (the default).
pub const PROP_ZFS_ROLLBACK_STRATEGY: &str = "StorDriver/Zfs/RollbackStrategy";
/// `Delete`, `Rename` or `Dynamic` (the default).
pub const PROP_ZFS_DELETE_STRATEGY: &str = "StorDriver/Zfs/DeleteStrategy";

/// LINSTOR's `ZfsRollbackStrategy.parseStrat`: a known name in any case,
/// else (or without a value) `Dynamic`.
pub fn parse_rollback(value: Option<&str>) -> ZfsRollback {
    match value.map(str::to_ascii_lowercase).as_deref() {
        Some("rollback") => ZfsRollback::Rollback,
        Some("clone") => ZfsRollback::Clone,
        _ => ZfsRollback::Dynamic,
    }
}

/// LINSTOR's `ZfsDeleteStrategy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ZfsDelete {
    /// A resource (or volume definition) of a definition with snapshots
    /// cannot be deleted.
    Delete,
    /// The zvols of a deleted resource are renamed aside while snapshots
    /// of them remain (`zfs destroy` otherwise), as with `Dynamic`.
    Rename,
    Dynamic,
}

impl ZfsDelete {
    /// `ZfsDeleteStrategy.parseStrat`.
    pub fn parse(value: Option<&str>) -> ZfsDelete {
        match value.map(str::to_ascii_lowercase).as_deref() {
            Some("delete") => ZfsDelete::Delete,
            Some("rename") => ZfsDelete::Rename,
            _ => ZfsDelete::Dynamic,
        }
    }
}

fn is_zfs(k: ProviderKind) -> bool {
    matches!(k, ProviderKind::Zfs | ProviderKind::ZfsThin)
}

impl Cluster {
    /// The definition's rollback strategy: the client's (for this call)
    /// when it sent one, else the property.
    pub fn zfs_rollback_strategy(&self, d: &ResourceDefinition, from_client: Option<&str>) -> ZfsRollback {
        parse_rollback(from_client.or_else(|| self.rd_prop(d, PROP_ZFS_ROLLBACK_STRATEGY).map(String::as_str)))
    }

    pub fn zfs_delete_strategy(&self, d: &ResourceDefinition) -> ZfsDelete {
        ZfsDelete::parse(self.rd_prop(d, PROP_ZFS_DELETE_STRATEGY).map(String::as_str))
    }

    /// LINSTOR's `ZfsChecks.getDeleteStrategy` when deleting a resource
    /// or volume definition of `d`: with `Delete`, refused while the
    /// definition has snapshots (FAIL_EXISTS_SNAPSHOT, whatever the
    /// provider, as LINSTOR).
    pub fn check_zfs_delete(&self, d: &ResourceDefinition, op: i64) -> Result<(), OpError> {
        if self.zfs_delete_strategy(d) != ZfsDelete::Delete {
            return Ok(());
        }
        match self.snapshots_of(&key(&d.name)).next() {
            None => Ok(()),
            Some(s) => Err(OpError::new(
                op,
                rc::FAIL_EXISTS_SNAPSHOT,
                format!("Cannot use DELETE strategy since the resource definition '{}' still has snapshots", d.name),
            )
            .cause(format!("'{PROP_ZFS_DELETE_STRATEGY}' is 'Delete' and snapshot '{}' exists.", s.name))
            .correction(format!("Delete the snapshots first, or set '{PROP_ZFS_DELETE_STRATEGY}' to 'Rename' or 'Dynamic'."))),
        }
    }

    /// LINSTOR's `ZfsChecks.isZfsSnapshot`: every node's snapshot of it and
    /// every diskful resource of the definition is ZFS / ZFS_THIN.
    pub fn is_zfs_snapshot(&self, s: &SnapshotDfn) -> bool {
        let snaps = s.nodes.values().all(|n| n.volumes.iter().all(|v| is_zfs(v.provider_kind)));
        let rscs = self
            .resources_of(&key(&s.resource_definition))
            .filter(|r| !r.is_diskless())
            .all(|r| r.volumes.values().all(|v| is_zfs(v.provider_kind)));
        snaps && rscs
    }

    /// Whether `s` is the definition's newest snapshot (LINSTOR compares
    /// their sequence numbers; Cairn their creation times).
    pub fn is_newest_snapshot(&self, s: &SnapshotDfn) -> bool {
        !self.snapshots_of(&key(&s.resource_definition)).any(|o| o.create_timestamp > s.create_timestamp)
    }

    /// Whether some node's snapshot `s` is no longer on the zvol of that
    /// node's resource (LINSTOR's `isZvolAlreadyDeleted`): the resource was
    /// deleted (its zvols renamed aside with their snapshots) or made anew
    /// since, or a rollback by clone renamed the zvol aside after the
    /// snapshot was taken.
    pub fn zfs_snapshot_aside(&self, s: &SnapshotDfn) -> bool {
        let rd = key(&s.resource_definition);
        s.nodes.iter().any(|(node, ns)| match self.resources.get(&(rd.clone(), node.clone())) {
            None => true,
            Some(r) => ns.create_timestamp < replaced_at(r),
        })
    }
}

/// Since when the resource's zvols are the ones it has now: its creation,
/// or the last rollback that put clones in their place.
fn replaced_at(r: &Resource) -> i64 {
    r.rollback.as_ref().map_or(r.create_timestamp, |b| b.aside_before.max(r.create_timestamp))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strategies_parse_as_linstor_does() {
        assert_eq!(parse_rollback(Some("Rollback")), ZfsRollback::Rollback);
        assert_eq!(parse_rollback(Some("rollback")), ZfsRollback::Rollback);
        assert_eq!(parse_rollback(Some("CLONE")), ZfsRollback::Clone);
        assert_eq!(parse_rollback(Some("dynamic")), ZfsRollback::Dynamic);
        assert_eq!(parse_rollback(Some("bogus")), ZfsRollback::Dynamic);
        assert_eq!(parse_rollback(None), ZfsRollback::Dynamic);
        assert_eq!(ZfsDelete::parse(Some("Delete")), ZfsDelete::Delete);
        assert_eq!(ZfsDelete::parse(Some("rename")), ZfsDelete::Rename);
        assert_eq!(ZfsDelete::parse(Some("x")), ZfsDelete::Dynamic);
        assert_eq!(ZfsDelete::parse(None), ZfsDelete::Dynamic);
    }
}
