//! A controller killed with SIGKILL during a burst of writes restarts with
//! every acknowledged object present and no half-written object.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cairn_api::node::{NetInterface, Node};
use cairn_api::resource::{Resource, ResourceCreate};
use cairn_api::resource_definition::{ResourceDefinition, ResourceDefinitionCreate, VolumeDefinition, VolumeDefinitionCreate};
use cairn_api::storage_pool::StoragePool;
use cairn_client::{Client, ClientError};

use crate::harness::ControllerProc;

/// What the clients saw acknowledged, per resource definition.
#[derive(Default, Debug, Clone)]
struct Acked {
    rd: bool,
    vds: BTreeSet<i64>,
    resources: BTreeSet<String>,
    /// The delete was sent: without its answer, either outcome is right.
    delete_sent: bool,
    deleted: bool,
}

const NODES: [&str; 3] = ["k1", "k2", "k3"];

fn setup(client: &Client) {
    for (i, n) in NODES.iter().enumerate() {
        client
            .create_node(&Node {
                name: n.to_string(),
                node_type: "SATELLITE".into(),
                net_interfaces: vec![NetInterface {
                    name: "default".into(),
                    address: format!("127.0.10.{}", i + 1),
                    satellite_port: Some(3366),
                    ..Default::default()
                }],
                ..Default::default()
            })
            .expect("create node");
        let mut props = BTreeMap::new();
        props.insert("StorDriver/StorPoolName".to_string(), "/var/lib/cairn-sigkill".to_string());
        client
            .create_stor_pool(
                n,
                &StoragePool { storage_pool_name: "DfltStorPool".into(), provider_kind: "FILE_THIN".into(), props, ..Default::default() },
            )
            .expect("create pool");
    }
}

/// One writer: creates definitions with two volumes and three resources,
/// and deletes every third definition again, recording each
/// acknowledgement. Stops at the first transport error (the kill).
fn writer(client: Client, id: usize, acked: Arc<Mutex<BTreeMap<String, Acked>>>, stop: Arc<AtomicBool>) {
    let record = |rd: &str, f: &dyn Fn(&mut Acked)| f(acked.lock().expect("lock").entry(rd.to_string()).or_default());
    let fatal = |e: &ClientError| e.status().is_none();
    for i in 0.. {
        if stop.load(Ordering::Relaxed) {
            return;
        }
        let rd = format!("w{id}-r{i}");
        let create = ResourceDefinitionCreate {
            resource_definition: ResourceDefinition { name: rd.clone(), ..Default::default() },
            ..Default::default()
        };
        match client.create_rsc_dfn(&create) {
            Ok(_) => record(&rd, &|a| a.rd = true),
            Err(e) if fatal(&e) => return,
            Err(e) => panic!("create {rd}: {e}"),
        }
        for nr in [0, 1] {
            let vd = VolumeDefinitionCreate {
                volume_definition: VolumeDefinition { volume_number: Some(nr), size_kib: Some(1024 * (nr + 1)), ..Default::default() },
                ..Default::default()
            };
            match client.create_vlm_dfn(&rd, &vd) {
                Ok(_) => record(&rd, &|a| {
                    a.vds.insert(nr);
                }),
                Err(e) if fatal(&e) => return,
                Err(e) => panic!("create vd {rd}/{nr}: {e}"),
            }
        }
        let rscs: Vec<ResourceCreate> = NODES
            .iter()
            .map(|n| ResourceCreate { resource: Resource { node_name: n.to_string(), ..Default::default() }, ..Default::default() })
            .collect();
        match client.create_resources(&rd, &rscs) {
            Ok(_) => record(&rd, &|a| a.resources.extend(NODES.iter().map(|n| n.to_string()))),
            Err(e) if fatal(&e) => return,
            Err(e) => panic!("create resources of {rd}: {e}"),
        }
        if i % 3 == 2 {
            record(&rd, &|a| a.delete_sent = true);
            match client.delete(&format!("/v1/resource-definitions/{rd}")) {
                Ok(_) => record(&rd, &|a| a.deleted = true),
                Err(e) if fatal(&e) => return,
                Err(e) => panic!("delete {rd}: {e}"),
            }
        }
    }
}

#[test]
fn sigkill_during_writes_loses_no_acknowledged_object() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut ctrl = ControllerProc::start(dir.path());
    setup(&ctrl.client());

    let acked = Arc::new(Mutex::new(BTreeMap::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let threads: Vec<_> = (0..4)
        .map(|id| {
            let (client, acked, stop) = (ctrl.client(), acked.clone(), stop.clone());
            std::thread::spawn(move || writer(client, id, acked, stop))
        })
        .collect();
    // Let the burst build up, then pull the plug while writes are in flight.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while acked.lock().expect("lock").len() < 200 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    ctrl.kill();
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().expect("writer thread");
    }
    let acked = acked.lock().expect("lock").clone();
    assert!(acked.len() >= 100, "the burst was too short to mean anything: {} definitions", acked.len());

    ctrl.restart();
    let client = ctrl.client();
    let rds = client.rsc_dfns().expect("list resource definitions");
    let view = client.view_resources("").expect("view resources");
    let stored: BTreeMap<String, &ResourceDefinition> = rds.iter().map(|d| (d.name.clone(), d)).collect();

    // Every acknowledged write is there; every acknowledged delete is gone.
    for (rd, a) in &acked {
        if a.deleted {
            assert!(!stored.contains_key(rd), "{rd} was deleted (acknowledged) but came back");
            continue;
        }
        if !a.rd || a.delete_sent {
            continue;
        }
        let d = stored.get(rd).unwrap_or_else(|| panic!("acknowledged {rd} is missing after the kill"));
        let vds: BTreeSet<i64> = d.volume_definitions.iter().flatten().filter_map(|v| v.volume_number).collect();
        assert!(a.vds.is_subset(&vds), "{rd}: acknowledged volumes {:?}, stored {:?}", a.vds, vds);
        let nodes: BTreeSet<String> = view.iter().filter(|r| &r.resource.name == rd).map(|r| r.resource.node_name.clone()).collect();
        assert!(a.resources.is_subset(&nodes), "{rd}: acknowledged resources {:?}, stored {:?}", a.resources, nodes);
    }

    // Nothing is half-written: every resource belongs to a stored definition
    // and carries exactly one volume per volume definition, and the three
    // resources of one create call are all there or none is.
    for r in &view {
        let d = stored
            .get(&r.resource.name)
            .unwrap_or_else(|| panic!("resource {} on {} has no definition", r.resource.name, r.resource.node_name));
        let vds: Vec<i64> = d.volume_definitions.iter().flatten().filter_map(|v| v.volume_number).collect();
        let vols: Vec<i64> = r.volumes.iter().map(|v| v.volume_number).collect();
        assert_eq!(vols, vds, "resource {} on {} is half-written", r.resource.name, r.resource.node_name);
    }
    for d in &rds {
        let n = view.iter().filter(|r| r.resource.name == d.name).count();
        assert!(n == 0 || n == NODES.len(), "{} has {n} of {} resources: a create call was split", d.name, NODES.len());
    }
}

/// Eight clients each create up to 100 definitions, each with its
/// resources on every node in one call, as fast as the controller answers
/// (so changes are committed in batches); the controller is killed half-way.
/// After the restart every acknowledged create is there, nothing appears
/// that no client sent, and no create call is split.
#[test]
fn sigkill_during_batched_creates_loses_no_acknowledged_create() {
    const CLIENTS: usize = 8;
    const EACH: usize = 100;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut ctrl = ControllerProc::start(dir.path());
    setup(&ctrl.client());

    // (definition, resources too) acknowledged.
    let acked: Arc<Mutex<BTreeMap<String, bool>>> = Arc::default();
    let threads: Vec<_> = (0..CLIENTS)
        .map(|id| {
            let (client, acked) = (ctrl.client(), acked.clone());
            std::thread::spawn(move || {
                let rscs: Vec<ResourceCreate> = NODES
                    .iter()
                    .map(|n| ResourceCreate { resource: Resource { node_name: n.to_string(), ..Default::default() }, ..Default::default() })
                    .collect();
                for i in 0..EACH {
                    let rd = format!("b{id}-{i}");
                    let create = ResourceDefinitionCreate {
                        resource_definition: ResourceDefinition { name: rd.clone(), ..Default::default() },
                        ..Default::default()
                    };
                    match client.create_rsc_dfn(&create) {
                        Ok(_) => acked.lock().expect("lock").insert(rd.clone(), false),
                        Err(e) if e.status().is_none() => return,
                        Err(e) => panic!("create {rd}: {e}"),
                    };
                    match client.create_resources(&rd, &rscs) {
                        Ok(_) => acked.lock().expect("lock").insert(rd.clone(), true),
                        Err(e) if e.status().is_none() => return,
                        Err(e) => panic!("create resources of {rd}: {e}"),
                    };
                }
            })
        })
        .collect();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while acked.lock().expect("lock").len() < CLIENTS * EACH / 2 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    ctrl.kill();
    for t in threads {
        t.join().expect("client thread");
    }
    let acked = acked.lock().expect("lock").clone();
    assert!(acked.len() >= CLIENTS * EACH / 4, "the burst was too short to mean anything: {} definitions", acked.len());
    assert!(acked.len() < CLIENTS * EACH, "the kill came after the last create: nothing was in flight");

    ctrl.restart();
    let client = ctrl.client();
    let stored: BTreeSet<String> = client.rsc_dfns().expect("list resource definitions").into_iter().map(|d| d.name).collect();
    let view = client.view_resources("").expect("view resources");
    let mut nodes_of: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for r in &view {
        nodes_of.entry(r.resource.name.clone()).or_default().insert(r.resource.node_name.clone());
    }
    for (rd, with_resources) in &acked {
        assert!(stored.contains(rd), "acknowledged {rd} is missing after the kill");
        if *with_resources {
            assert_eq!(nodes_of.get(rd).map_or(0, BTreeSet::len), NODES.len(), "acknowledged resources of {rd} are missing");
        }
    }
    let sent = |rd: &str| {
        rd.strip_prefix('b')
            .and_then(|r| r.split_once('-'))
            .is_some_and(|(id, i)| id.parse::<usize>().is_ok_and(|id| id < CLIENTS) && i.parse::<usize>().is_ok_and(|i| i < EACH))
    };
    for rd in &stored {
        assert!(sent(rd), "{rd} was never sent");
    }
    for (rd, nodes) in &nodes_of {
        assert!(stored.contains(rd), "resources of {rd} without their definition");
        assert_eq!(nodes.len(), NODES.len(), "{rd} has resources on {nodes:?} only: a create call was split");
    }
}
