//! What the benches with satellites share: waiting for the controller and
//! the satellites, registering a node with a FILE_THIN pool, and defining
//! a resource with one volume, all through LINSTOR's REST API.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use cairn_api::node::{NetInterface, Node};
use cairn_api::resource_definition::{ResourceDefinition, ResourceDefinitionCreate, VolumeDefinition, VolumeDefinitionCreate};
use cairn_api::storage_pool::StoragePool;
use cairn_client::Client;

/// Waits until the controller at `url` answers `/health`.
pub fn wait_http(url: &str) {
    let c = Client::new(url);
    let t = Instant::now();
    while !c.raw("GET", "/health", None).is_ok_and(|r| r.status == 200) {
        assert!(t.elapsed() < Duration::from_secs(60), "controller did not start");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Registers satellite `name` at `ip:port` with a FILE_THIN `DfltStorPool` in `pool_dir`.
pub fn register(c: &Client, name: &str, ip: &str, port: u16, pool_dir: &Path) {
    c.create_node(&Node {
        name: name.into(),
        node_type: "SATELLITE".into(),
        net_interfaces: vec![NetInterface {
            name: "default".into(),
            address: ip.into(),
            satellite_port: Some(i64::from(port)),
            ..Default::default()
        }],
        ..Default::default()
    })
    .expect("node");
    let mut props = BTreeMap::new();
    props.insert("StorDriver/StorPoolName".to_string(), pool_dir.display().to_string());
    c.create_stor_pool(
        name,
        &StoragePool { storage_pool_name: "DfltStorPool".into(), provider_kind: "FILE_THIN".into(), props, ..Default::default() },
    )
    .expect("pool");
}

/// Waits until every node is ONLINE, then half a second more.
pub fn wait_online(c: &Client) {
    let t = Instant::now();
    while c.nodes().expect("nodes").iter().any(|n| n.connection_status.as_deref() != Some("ONLINE")) {
        assert!(t.elapsed() < Duration::from_secs(30), "satellites did not come online");
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(500));
}

/// Creates resource definition `name` with one volume of `size_kib`.
pub fn define(c: &Client, name: &str, size_kib: i64) {
    c.create_rsc_dfn(&ResourceDefinitionCreate {
        resource_definition: ResourceDefinition { name: name.into(), ..Default::default() },
        ..Default::default()
    })
    .expect("rd");
    c.create_vlm_dfn(
        name,
        &VolumeDefinitionCreate {
            volume_definition: VolumeDefinition { size_kib: Some(size_kib), ..Default::default() },
            ..Default::default()
        },
    )
    .expect("vd");
}
