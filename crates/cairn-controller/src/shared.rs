//! The cluster as the controller's readers see it.
//!
//! Readers (REST lists, the satellite links computing desired states) take
//! an `Arc` of the current cluster and build their answer from it with no
//! lock held, however long that takes; the one writer (the committer,
//! under the order lock) applies each committed change in place when no
//! reader holds the cluster, else to a copy that replaces it. The cluster's maps are
//! persistent ordered maps (`cairn_domain::Map`), so a copy shares
//! everything the change did not touch: a change costs what it touches,
//! not the size of the cluster, and a long list never holds up a create or
//! a health check.

use std::sync::Arc;

use cairn_domain::{Change, Cluster};
use parking_lot::RwLock;

#[derive(Clone, Default)]
pub struct SharedCluster(Arc<RwLock<Arc<Cluster>>>);

impl SharedCluster {
    pub fn new(c: Cluster) -> SharedCluster {
        SharedCluster(Arc::new(RwLock::new(Arc::new(c))))
    }

    /// The current cluster; it never changes under the holder. The lock is
    /// held only to clone the `Arc`.
    pub fn get(&self) -> Arc<Cluster> {
        self.0.read().clone()
    }

    /// Applies committed changes. When no reader holds the current
    /// cluster, in place; otherwise to a copy that then replaces it (the
    /// readers keep theirs). Readers wait for the lock only while the
    /// changes are applied (microseconds), never while a list is built.
    pub fn apply(&self, changes: impl IntoIterator<Item = Change>) {
        let mut current = self.0.write();
        Arc::make_mut(&mut current).apply(changes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_domain::Object;

    #[test]
    fn a_reader_keeps_its_snapshot_while_changes_land() {
        let shared = SharedCluster::default();
        let seed = Cluster::default();
        let changes = seed.seed(&mut || "uuid".to_string());
        assert!(!changes.is_empty());
        shared.apply(changes.clone());
        let before = shared.get();
        let groups = before.rsc_grps.len();
        assert!(groups > 0);
        // Every group deleted: the reader's snapshot still has them.
        let deletes: Vec<Change> = changes
            .iter()
            .filter_map(|c| match c {
                Change::Put(o @ Object::RscGrp(_)) => Some(Change::Delete(o.key())),
                _ => None,
            })
            .collect();
        shared.apply(deletes);
        assert_eq!(before.rsc_grps.len(), groups);
        assert_eq!(shared.get().rsc_grps.len(), 0);
    }
}
