//! Cairn's pure domain: names, the cluster's objects, and the rules that
//! turn a request into a set of changes. No IO happens here.
//!
//! The controller keeps one [`Cluster`] in memory. A mutating request is
//! validated against it and produces an [`Outcome`]: the [`Change`]s to
//! persist and the `ApiCallRc` replies. The controller commits the changes to
//! the store in one transaction and only then applies them to memory with
//! [`Cluster::apply`], the same function that rebuilds the cluster from the
//! store at start-up, so memory and database cannot disagree.

pub mod auth_token;
pub mod autoplace;
pub mod backup;
pub mod clone;
pub mod cluster;
pub mod ctx;
pub mod desired;
pub mod drbd_auto;
pub mod error;
pub mod error_report;
pub mod evacuate;
pub mod ext_file;
pub mod kvs;
pub mod name;
pub mod node;
pub mod node_connection;
pub mod numbers;
pub mod placement;
pub mod props;
pub mod remote;
pub mod resource;
pub mod resource_connection;
pub mod resource_definition;
pub mod resource_group;
pub mod resource_json;
pub mod schedule;
pub mod snapshot;
pub mod storage_pool;
pub mod toggle_disk;
pub mod whitelist;
pub mod zfs_strategy;

pub use cairn_api::time;
pub use cluster::{Change, Cluster, Kind, ObjKey, Object, Outcome};
pub use ctx::Ctx;
pub use error::OpError;

/// Property map of a domain object.
pub type Props = std::collections::BTreeMap<String, String>;

/// Name of the resource group that always exists.
pub const DEFAULT_RSC_GRP: &str = "DfltRscGrp";
/// Name of the diskful storage pool used when nothing else is said.
pub const DEFAULT_STOR_POOL: &str = "DfltStorPool";
/// The layer stack of a resource when nobody names one (LINSTOR's
/// `createDefaultStack`).
pub fn default_layer_stack() -> Vec<String> {
    vec!["DRBD".to_string(), "STORAGE".to_string()]
}

/// Controller property overriding [`default_layer_stack`] (a Cairn
/// extension, e.g. `STORAGE` on hosts without DRBD; `cairn up` sets it
/// there).
pub const PROP_DEFAULT_LAYER_STACK: &str = "Cairn/DefaultLayerStack";

impl Cluster {
    /// The default layer stack: [`PROP_DEFAULT_LAYER_STACK`] if it holds
    /// a valid stack, else DRBD over STORAGE.
    pub fn default_stack(&self) -> Vec<String> {
        self.ctrl_props
            .get(PROP_DEFAULT_LAYER_STACK)
            .map(|v| v.split(',').map(|l| l.trim().to_ascii_uppercase()).filter(|l| !l.is_empty()).collect::<Vec<_>>())
            .and_then(|l| resource_definition::check_layer_stack(&l, 0).ok())
            .filter(|l| !l.is_empty())
            .unwrap_or_else(default_layer_stack)
    }

    /// The default stack for replicas of one definition: with LUKS above
    /// STORAGE when a volume definition is `ENCRYPTED` (LINSTOR's rule).
    pub fn default_stack_for(&self, d: &resource_definition::ResourceDefinition) -> Vec<String> {
        let mut stack = self.default_stack();
        let encrypted = self.vlm_dfns_of(&name::key(&d.name)).any(|v| v.flags.contains("ENCRYPTED"));
        if encrypted && !stack.iter().any(|l| l == "LUKS") {
            let at = stack.iter().position(|l| l == "STORAGE").unwrap_or(stack.len());
            stack.insert(at, "LUKS".into());
        }
        stack
    }
}

/// Name of the diskless pool every satellite gets.
pub const DEFAULT_DISKLESS_STOR_POOL: &str = "DfltDisklessStorPool";

#[cfg(test)]
mod tests;

#[cfg(test)]
mod autoplace_tests;
#[cfg(test)]
mod testing;
