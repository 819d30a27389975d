//! Placement time for one 3-replica resource among 10, 100 and 1,000
//! candidate nodes (each with one pool, random-ish free space and rack
//! labels), with and without a replicas-on-different constraint. Pure: no
//! IO. Run with `cargo bench -p cairn-domain --bench placement`.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use cairn_api::node::{NetInterface, Node};
use cairn_api::placement::AutoPlaceRequest;
use cairn_api::resource_definition::{ResourceDefinition, ResourceDefinitionCreate, VolumeDefinition, VolumeDefinitionCreate};
use cairn_api::resource_group::AutoSelectFilter;
use cairn_api::storage_pool::StoragePool;
use cairn_domain::name::key;
use cairn_domain::placement::{NodeObs, Observer};
use cairn_domain::storage_pool::PoolCapacity;
use cairn_domain::{Cluster, Ctx};

struct Obs(BTreeMap<String, PoolCapacity>);

impl Observer for Obs {
    fn node(&self, _: &str) -> NodeObs {
        NodeObs {
            online: true,
            providers: ["FILE_THIN".to_string(), "DISKLESS".to_string()].into(),
            layers: ["STORAGE".to_string()].into(),
        }
    }
    fn capacity(&self, node_key: &str, _: &str) -> Option<PoolCapacity> {
        self.0.get(node_key).copied()
    }
}

fn cluster(n: usize) -> (Cluster, Obs, Ctx) {
    let mut ctx = Ctx::deterministic();
    let mut c = Cluster::default();
    let seed = c.seed(&mut || "s".into());
    c.apply(seed);
    let mut caps = BTreeMap::new();
    for i in 0..n {
        let name = format!("node-{i:04}");
        let req = Node {
            name: name.clone(),
            node_type: "SATELLITE".into(),
            props: [("Aux/rack".to_string(), format!("r{}", i % 20))].into(),
            net_interfaces: vec![NetInterface {
                name: "default".into(),
                address: "127.0.0.1".into(),
                satellite_port: Some(3366),
                ..Default::default()
            }],
            ..Default::default()
        };
        let o = c.create_node(&req, &mut ctx).expect("node");
        c.apply(o.changes);
        let sp = StoragePool {
            storage_pool_name: "DfltStorPool".into(),
            provider_kind: "FILE_THIN".into(),
            props: [("StorDriver/StorPoolName".to_string(), "/srv/p".to_string())].into(),
            ..Default::default()
        };
        let o = c.create_stor_pool(&name, &sp, &mut ctx).expect("pool");
        c.apply(o.changes);
        let free = 1_000_000 + ((i * 7919) % 1000) as i64 * 1000;
        caps.insert(key(&name), PoolCapacity { free_kib: free, total_kib: 2 * free, present_kib: 0 });
    }
    (c, Obs(caps), ctx)
}

fn main() {
    println!("| candidate nodes | filter | placement p50 | p99 |\n| --- | --- | --- | --- |");
    for n in [10usize, 100, 1000] {
        let (mut c, obs, mut ctx) = cluster(n);
        for (label, filter) in [
            ("place_count 3", AutoSelectFilter { place_count: Some(3), ..Default::default() }),
            (
                "place_count 3, replicas_on_different Aux/rack",
                AutoSelectFilter { place_count: Some(3), replicas_on_different: Some(vec!["Aux/rack".into()]), ..Default::default() },
            ),
        ] {
            let mut times: Vec<Duration> = Vec::new();
            for i in 0..50 {
                let name = format!("rsc-{}-{i}", label.len());
                let rd = ResourceDefinitionCreate {
                    resource_definition: ResourceDefinition { name: name.clone(), ..Default::default() },
                    ..Default::default()
                };
                let o = c.create_rsc_dfn(&rd, &mut ctx).expect("rd");
                c.apply(o.changes);
                let vd = VolumeDefinitionCreate {
                    volume_definition: VolumeDefinition { size_kib: Some(1024), ..Default::default() },
                    ..Default::default()
                };
                let o = c.create_vlm_dfn(&name, &vd, &mut ctx).expect("vd");
                c.apply(o.changes);
                let req = AutoPlaceRequest { select_filter: filter.clone(), ..Default::default() };
                let t = Instant::now();
                let o = c.autoplace(&name, &req, &obs, &mut ctx).expect("autoplace");
                times.push(t.elapsed());
                c.apply(o.changes);
            }
            times.sort();
            let p = |q: f64| times[((times.len() - 1) as f64 * q).round() as usize];
            println!("| {n} | {label} | {:.3} ms | {:.3} ms |", p(0.5).as_secs_f64() * 1000.0, p(0.99).as_secs_f64() * 1000.0);
        }
    }
}
