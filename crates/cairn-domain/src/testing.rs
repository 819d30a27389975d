//! Request builders shared by the unit tests of this crate.

use cairn_api::node::{NetInterface, Node};
use cairn_api::storage_pool::StoragePool;

use crate::{Cluster, Props};

/// An empty cluster with the default objects.
pub(crate) fn seeded() -> Cluster {
    let mut c = Cluster::default();
    let seed = c.seed(&mut || "seed".into());
    c.apply(seed);
    c
}

/// A satellite node on 127.0.0.1:3366 with the given properties.
pub(crate) fn satellite(name: &str, props: &[(&str, &str)]) -> Node {
    Node {
        name: name.into(),
        node_type: "SATELLITE".into(),
        props: props.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        net_interfaces: vec![NetInterface {
            name: "default".into(),
            address: "127.0.0.1".into(),
            satellite_port: Some(3366),
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// A storage pool of `kind` backed by `backing`.
pub(crate) fn pool(name: &str, kind: &str, backing: &str) -> StoragePool {
    let mut props = Props::new();
    props.insert("StorDriver/StorPoolName".into(), backing.into());
    StoragePool { storage_pool_name: name.into(), provider_kind: kind.into(), props, ..Default::default() }
}
