//! The autoplacer scenarios of LINSTOR's own suite (RscAutoPlaceApiTest),
//! as pure unit tests against an observed cluster that the test describes.

use std::collections::{BTreeMap, BTreeSet};

use cairn_api::placement::{AutoPlaceRequest, ResourceGroupSpawn, ResourceMakeAvailable};
use cairn_api::rc;
use cairn_api::resource_definition::{
    ResourceDefinition as WireRd, ResourceDefinitionCreate, VolumeDefinition as WireVd, VolumeDefinitionCreate,
};
use cairn_api::resource_group::{AutoSelectFilter, ResourceGroup as WireRg, VolumeGroup as WireVg};
use cairn_api::storage_pool::StoragePool as WireSp;

use crate::name::key;
use crate::placement::{NodeObs, Observer};
use crate::storage_pool::PoolCapacity;
use crate::testing;
use crate::{Cluster, Ctx, OpError, Outcome, Props};

const GIB: i64 = 1024 * 1024;

#[derive(Default)]
struct Obs {
    offline: BTreeSet<String>,
    cap: BTreeMap<(String, String), PoolCapacity>,
    no_providers: BTreeSet<String>,
    /// Satellites without the DRBD layer.
    storage_only: bool,
}

impl Observer for Obs {
    fn node(&self, node_key: &str) -> NodeObs {
        let mut providers: BTreeSet<String> =
            ["DISKLESS", "FILE", "FILE_THIN", "LVM", "LVM_THIN", "ZFS", "ZFS_THIN"].iter().map(|s| s.to_string()).collect();
        if self.no_providers.contains(node_key) {
            providers.retain(|p| p == "DISKLESS");
        }
        let layers = if self.storage_only { vec!["STORAGE".to_string()] } else { vec!["DRBD".to_string(), "STORAGE".to_string()] };
        NodeObs { online: !self.offline.contains(node_key), providers, layers: layers.into_iter().collect() }
    }

    fn capacity(&self, node_key: &str, pool: &str) -> Option<PoolCapacity> {
        self.cap.get(&(node_key.to_string(), key(pool))).copied()
    }
}

struct T {
    c: Cluster,
    ctx: Ctx,
    obs: Obs,
}

impl T {
    fn new() -> T {
        T { c: testing::seeded(), ctx: Ctx::deterministic(), obs: Obs::default() }
    }

    fn run(&mut self, f: impl FnOnce(&Cluster, &Obs, &mut Ctx) -> Result<Outcome, OpError>) -> Outcome {
        let out = f(&self.c, &self.obs, &mut self.ctx).unwrap_or_else(|e| panic!("{}: {:?}", e.rc.message, e.rc.cause));
        self.c.apply(out.changes.clone());
        out
    }

    fn fail(&mut self, f: impl FnOnce(&Cluster, &Obs, &mut Ctx) -> Result<Outcome, OpError>) -> OpError {
        f(&self.c, &self.obs, &mut self.ctx).expect_err("placement should fail")
    }

    /// A satellite node with properties and pools (name, kind, free GiB;
    /// total = 2 x free).
    fn node(&mut self, name: &str, props: &[(&str, &str)], pools: &[(&str, &str, i64)]) {
        let req = testing::satellite(name, props);
        self.run(|c, _, ctx| c.create_node(&req, ctx));
        for (pool, kind, free_gib) in pools {
            let backing = match *kind {
                "LVM" => "vg0".to_string(),
                "LVM_THIN" => "vg0/thin".to_string(),
                "ZFS" | "ZFS_THIN" => "tank".to_string(),
                _ => format!("/srv/{pool}"),
            };
            let sp = testing::pool(pool, kind, &backing);
            self.run(|c, _, ctx| c.create_stor_pool(name, &sp, ctx));
            self.obs
                .cap
                .insert((key(name), key(pool)), PoolCapacity { free_kib: free_gib * GIB, total_kib: 2 * free_gib * GIB, present_kib: 0 });
        }
    }

    fn rd(&mut self, name: &str, rg: Option<&str>, size_gib: i64) {
        let rd = ResourceDefinitionCreate {
            resource_definition: WireRd { name: name.into(), resource_group_name: rg.map(String::from), ..Default::default() },
            ..Default::default()
        };
        self.run(|c, _, ctx| c.create_rsc_dfn(&rd, ctx));
        let vd = VolumeDefinitionCreate {
            volume_definition: WireVd { size_kib: Some(size_gib * GIB), ..Default::default() },
            ..Default::default()
        };
        self.run(|c, _, ctx| c.create_vlm_dfn(name, &vd, ctx));
    }

    fn autoplace(&mut self, rd: &str, f: AutoSelectFilter) -> Outcome {
        let req = AutoPlaceRequest { select_filter: f, ..Default::default() };
        self.run(|c, o, ctx| c.autoplace(rd, &req, o, ctx))
    }

    fn autoplace_err(&mut self, rd: &str, f: AutoSelectFilter) -> OpError {
        let req = AutoPlaceRequest { select_filter: f, ..Default::default() };
        self.fail(|c, o, ctx| c.autoplace(rd, &req, o, ctx))
    }

    /// (node, pool, diskless) of the resources of `rd`, sorted.
    fn placed(&self, rd: &str) -> Vec<(String, String, bool)> {
        self.c
            .resources_of(&key(rd))
            .map(|r| (r.node.clone(), r.volumes.values().next().map(|v| v.storage_pool.clone()).unwrap_or_default(), r.is_diskless()))
            .collect()
    }

    fn nodes_of(&self, rd: &str) -> Vec<String> {
        self.placed(rd).into_iter().filter(|p| !p.2).map(|p| p.0).collect()
    }
}

fn count(n: i64) -> AutoSelectFilter {
    AutoSelectFilter { place_count: Some(n), ..Default::default() }
}

fn strings(v: &[&str]) -> Option<Vec<String>> {
    Some(v.iter().map(|s| s.to_string()).collect())
}

#[test]
fn basic_placement_uses_distinct_nodes_and_the_named_pool() {
    let mut t = T::new();
    for n in ["a1", "a2", "a3"] {
        t.node(n, &[], &[("DfltStorPool", "FILE_THIN", 100)]);
    }
    t.rd("r1", None, 1);
    t.autoplace("r1", count(2));
    let placed = t.placed("r1");
    assert_eq!(placed.len(), 2);
    assert!(placed.iter().all(|(_, pool, diskless)| pool == "DfltStorPool" && !diskless));
    let nodes: BTreeSet<_> = placed.iter().map(|p| p.0.clone()).collect();
    assert_eq!(nodes.len(), 2, "two replicas never share a node");
    let r = t.c.resources_of("R1").next().unwrap();
    assert_eq!(r.props.get("StorPoolName").map(String::as_str), Some("DfltStorPool"));
}

#[test]
fn larger_free_pool_wins() {
    let mut t = T::new();
    t.node("small", &[], &[("pool", "LVM", 10)]);
    t.node("large", &[], &[("pool", "LVM", 500)]);
    t.node("medium", &[], &[("pool", "LVM", 100)]);
    t.rd("r1", None, 1);
    t.autoplace("r1", count(2));
    assert_eq!(t.nodes_of("r1"), vec!["large", "medium"]);
}

#[test]
fn not_enough_nodes_names_the_constraint() {
    let mut t = T::new();
    t.node("n1", &[], &[("pool", "LVM", 100)]);
    t.node("n2", &[], &[("pool", "LVM", 1)]);
    t.node("n3", &[], &[("pool", "LVM", 100)]);
    t.obs.offline.insert("N3".into());
    t.rd("r1", None, 10);
    let e = t.autoplace_err("r1", count(3));
    assert_eq!(e.rc.code(), rc::FAIL_NOT_ENOUGH_NODES);
    assert_eq!(e.rc.message, "Not enough available nodes");
    let cause = e.rc.cause.clone().unwrap();
    assert!(cause.contains("node offline: n3/pool"), "{cause}");
    assert!(cause.contains("not enough free space (need 10485760 KiB): n2/pool"), "{cause}");
    assert!(t.placed("r1").is_empty(), "nothing is placed when the whole request cannot be");
}

#[test]
fn do_not_place_with_and_its_regex() {
    let mut t = T::new();
    for n in ["n1", "n2", "n3", "n4"] {
        t.node(n, &[], &[("pool", "FILE_THIN", 100)]);
    }
    t.rd("db", None, 1);
    t.autoplace("db", AutoSelectFilter { place_count: Some(2), node_name_list: strings(&["n1", "n2"]), ..Default::default() });
    t.rd("web", None, 1);
    t.autoplace("web", AutoSelectFilter { place_count: Some(2), not_place_with_rsc: strings(&["db"]), ..Default::default() });
    assert_eq!(t.nodes_of("web"), vec!["n3", "n4"]);
    t.rd("cache", None, 1);
    let e = t.autoplace_err(
        "cache",
        AutoSelectFilter { place_count: Some(1), not_place_with_rsc_regex: Some("^(DB|we.)$".into()), ..Default::default() },
    );
    assert_eq!(e.rc.code(), rc::FAIL_NOT_ENOUGH_NODES);
    assert!(e.rc.cause.unwrap().contains("not_place_with_rsc"));
}

#[test]
fn replicas_on_same_and_different_with_values() {
    let mut t = T::new();
    t.node("r1a", &[("Aux/rack", "1"), ("Aux/site", "x")], &[("pool", "LVM", 100)]);
    t.node("r1b", &[("Aux/rack", "1"), ("Aux/site", "x")], &[("pool", "LVM", 90)]);
    t.node("r2a", &[("Aux/rack", "2"), ("Aux/site", "x")], &[("pool", "LVM", 80)]);
    t.node("r3a", &[("Aux/rack", "3"), ("Aux/site", "y")], &[("pool", "LVM", 200)]);
    // Different racks: never both rack-1 nodes.
    t.rd("diff", None, 1);
    t.autoplace("diff", AutoSelectFilter { place_count: Some(3), replicas_on_different: strings(&["Aux/rack"]), ..Default::default() });
    assert_eq!(t.nodes_of("diff"), vec!["r1a", "r2a", "r3a"]);
    // Same site: the biggest pool is on site y alone, so site x wins with two.
    t.rd("same", None, 1);
    t.autoplace("same", AutoSelectFilter { place_count: Some(2), replicas_on_same: strings(&["Aux/site"]), ..Default::default() });
    assert_eq!(t.nodes_of("same"), vec!["r1a", "r1b"]);
    // A fixed value.
    t.rd("samey", None, 1);
    t.autoplace("samey", AutoSelectFilter { place_count: Some(1), replicas_on_same: strings(&["Aux/site=x"]), ..Default::default() });
    assert_eq!(t.nodes_of("samey"), vec!["r1a"]);
    // key=value on different forbids that value.
    t.rd("notx", None, 1);
    t.autoplace("notx", AutoSelectFilter { place_count: Some(1), replicas_on_different: strings(&["Aux/site=y"]), ..Default::default() });
    assert_eq!(t.nodes_of("notx"), vec!["r1a"]);
}

#[test]
fn x_replicas_on_different_allows_n_per_value() {
    let mut t = T::new();
    t.node("a1", &[("Aux/zone", "a")], &[("pool", "LVM", 100)]);
    t.node("a2", &[("Aux/zone", "a")], &[("pool", "LVM", 99)]);
    t.node("a3", &[("Aux/zone", "a")], &[("pool", "LVM", 98)]);
    t.node("b1", &[("Aux/zone", "b")], &[("pool", "LVM", 10)]);
    t.rd("rr", None, 1);
    let mut f = count(3);
    f.x_replicas_on_different_map = Some([("Aux/zone".to_string(), 2)].into());
    t.autoplace("rr", f);
    assert_eq!(t.nodes_of("rr"), vec!["a1", "a2", "b1"]);
}

#[test]
fn diskless_on_remaining_covers_every_other_satellite() {
    let mut t = T::new();
    for n in ["d1", "d2", "d3", "d4"] {
        t.node(n, &[], &[("pool", "FILE_THIN", 100)]);
    }
    t.rd("rr", None, 1);
    let req = AutoPlaceRequest { select_filter: count(2), diskless_on_remaining: Some(true), ..Default::default() };
    t.run(|c, o, ctx| c.autoplace("rr", &req, o, ctx));
    let placed = t.placed("rr");
    assert_eq!(placed.len(), 4);
    assert_eq!(placed.iter().filter(|p| p.2).count(), 2);
    assert!(placed.iter().filter(|p| p.2).all(|p| p.1 == "DfltDisklessStorPool"));
}

#[test]
fn autoplace_is_idempotent_and_extends_a_placement() {
    let mut t = T::new();
    for n in ["e1", "e2", "e3", "e4"] {
        t.node(n, &[], &[("pool", "FILE_THIN", 100)]);
    }
    t.rd("rr", None, 1);
    t.autoplace("rr", count(2));
    let again = t.autoplace("rr", count(2));
    assert!(again.changes.is_empty());
    assert_eq!(again.replies[0].code(), 1006);
    assert!(again.replies[0].is_warning());
    t.autoplace("rr", count(3));
    assert_eq!(t.nodes_of("rr").len(), 3);
    t.autoplace("rr", AutoSelectFilter { additional_place_count: Some(1), ..Default::default() });
    assert_eq!(t.nodes_of("rr").len(), 4);
}

#[test]
fn provider_and_layer_filters() {
    let mut t = T::new();
    t.node("lvm", &[], &[("pool", "LVM", 100)]);
    t.node("lvm2", &[], &[("pool", "LVM", 50)]);
    t.node("zfs", &[], &[("pool", "ZFS", 500)]);
    t.node("nosat", &[], &[("pool", "FILE", 900)]);
    t.obs.no_providers.insert("NOSAT".into());
    t.rd("rr", None, 1);
    t.autoplace("rr", AutoSelectFilter { place_count: Some(1), provider_list: strings(&["LVM"]), ..Default::default() });
    assert_eq!(t.nodes_of("rr"), vec!["lvm"]);
    t.rd("r2", None, 1);
    t.obs.storage_only = true;
    let e =
        t.autoplace_err("r2", AutoSelectFilter { place_count: Some(1), layer_stack: strings(&["DRBD", "STORAGE"]), ..Default::default() });
    assert!(e.rc.cause.unwrap().contains("does not support layer DRBD"));
    // The default stack is DRBD over STORAGE: no DRBD, no placement...
    let e = t.autoplace_err("r2", count(1));
    assert!(e.rc.cause.unwrap().contains("does not support layer DRBD"));
    // ...unless the request asks for STORAGE alone.
    t.autoplace("r2", AutoSelectFilter { place_count: Some(1), layer_stack: strings(&["STORAGE"]), ..Default::default() });
    t.obs.storage_only = false;
    t.rd("r3", None, 1);
    t.autoplace("r3", count(2));
    assert_eq!(t.nodes_of("r3"), vec!["lvm", "lvm2"], "a satellite that cannot serve FILE is skipped, ZFS does not mix with LVM");
}

#[test]
fn strategy_weights_change_the_choice() {
    let mut t = T::new();
    t.node("busy", &[], &[("pool", "FILE_THIN", 1000)]);
    t.node("idle", &[], &[("pool", "FILE_THIN", 900)]);
    for i in 0..3 {
        let rd = format!("filler{i}");
        t.rd(&rd, None, 1);
        t.autoplace(&rd, AutoSelectFilter { place_count: Some(1), node_name_list: strings(&["busy"]), ..Default::default() });
    }
    t.rd("aa", None, 1);
    t.autoplace("aa", count(1));
    assert_eq!(t.nodes_of("aa"), vec!["busy"], "MaxFreeSpace decides by default");
    t.c.ctrl_props.insert("Autoplacer/Weights/MaxFreeSpace".into(), "0".into());
    t.c.ctrl_props.insert("Autoplacer/Weights/MinRscCount".into(), "1".into());
    t.rd("bb", None, 1);
    t.autoplace("bb", count(1));
    assert_eq!(t.nodes_of("bb"), vec!["idle"], "MinRscCount prefers the emptier pool");
}

#[test]
fn thick_pools_are_never_overcommitted() {
    let mut t = T::new();
    t.node("t1", &[], &[("pool", "LVM", 5)]);
    t.node("t2", &[], &[("pool", "LVM", 5)]);
    t.rd("v1", None, 4);
    t.autoplace("v1", count(2));
    // The satellites have not reported since: their free space (5 GiB)
    // does not include v1 yet. What the cluster placed counts anyway.
    t.rd("v2", None, 4);
    let e = t.autoplace_err("v2", count(1));
    assert_eq!(e.rc.code(), rc::FAIL_NOT_ENOUGH_NODES, "4 of the 5 free GiB are taken by v1 already");
    // After the satellites report v1 as created, the numbers agree.
    for n in ["T1", "T2"] {
        t.obs.cap.insert((n.into(), "POOL".into()), PoolCapacity { free_kib: GIB, total_kib: 10 * GIB, present_kib: 4 * GIB });
    }
    let e = t.autoplace_err("v2", count(1));
    assert_eq!(e.rc.code(), rc::FAIL_NOT_ENOUGH_NODES);
    t.rd("v3", None, 1);
    t.autoplace("v3", count(2));
    assert_eq!(t.nodes_of("v3").len(), 2, "the last GiB fits");
}

#[test]
fn shared_space_counts_once() {
    let mut t = T::new();
    t.node("s1", &[], &[]);
    t.node("s2", &[], &[]);
    for n in ["s1", "s2"] {
        let mut p = Props::new();
        p.insert("StorDriver/StorPoolName".into(), "vgshared".into());
        let sp = WireSp {
            storage_pool_name: "shared".into(),
            provider_kind: "LVM".into(),
            props: p,
            free_space_mgr_name: Some("san1".into()),
            ..Default::default()
        };
        t.run(|c, _, ctx| c.create_stor_pool(n, &sp, ctx));
        t.obs.cap.insert((key(n), key("shared")), PoolCapacity { free_kib: 100 * GIB, total_kib: 100 * GIB, present_kib: 0 });
    }
    t.rd("rr", None, 1);
    let e = t.autoplace_err("rr", count(2));
    assert_eq!(e.rc.code(), rc::FAIL_NOT_ENOUGH_NODES, "two pools on the same shared storage are one replica");
}

#[test]
fn spawn_creates_definitions_from_volume_groups_and_places() {
    let mut t = T::new();
    for n in ["p1", "p2", "p3"] {
        t.node(n, &[], &[("fast", "FILE_THIN", 100)]);
    }
    let rg = WireRg {
        name: "rg".into(),
        select_filter: AutoSelectFilter { place_count: Some(2), storage_pool_list: strings(&["fast"]), ..Default::default() },
        ..Default::default()
    };
    t.run(|c, _, ctx| c.create_rsc_grp(&rg, ctx));
    let vg = WireVg { props: [("Aux/vg".to_string(), "yes".to_string())].into(), ..Default::default() };
    t.run(|c, _, ctx| c.create_vlm_grp("rg", &vg, ctx));
    let req = ResourceGroupSpawn { resource_definition_name: "pvc-1".into(), volume_sizes: vec![GIB], ..Default::default() };
    t.run(|c, o, ctx| c.spawn("rg", &req, o, ctx));
    assert_eq!(t.c.rsc_dfns["PVC-1"].resource_group, "rg");
    let vd = &t.c.vlm_dfns[&("PVC-1".to_string(), 0)];
    assert_eq!((vd.size_kib, vd.props.get("Aux/vg").map(String::as_str)), (GIB, Some("yes")));
    assert_eq!(t.nodes_of("pvc-1").len(), 2);
    // Wrong number of sizes without `partial`.
    let bad = ResourceGroupSpawn { resource_definition_name: "pvc-2".into(), volume_sizes: vec![GIB, GIB], ..Default::default() };
    assert_eq!(t.fail(|c, o, ctx| c.spawn("rg", &bad, o, ctx)).rc.code(), rc::FAIL_INVLD_VLM_SIZES);
    // definitions_only places nothing; a failed placement creates nothing.
    let defs = ResourceGroupSpawn {
        resource_definition_name: "pvc-3".into(),
        volume_sizes: vec![GIB],
        definitions_only: true,
        ..Default::default()
    };
    t.run(|c, o, ctx| c.spawn("rg", &defs, o, ctx));
    assert!(t.placed("pvc-3").is_empty());
    let huge = ResourceGroupSpawn { resource_definition_name: "pvc-4".into(), volume_sizes: vec![10_000 * GIB], ..Default::default() };
    assert_eq!(t.fail(|c, o, ctx| c.spawn("rg", &huge, o, ctx)).rc.code(), rc::FAIL_NOT_ENOUGH_NODES);
    assert!(!t.c.rsc_dfns.contains_key("PVC-4"));
}

#[test]
fn make_available_adds_a_diskless_or_diskful_replica_once() {
    let mut t = T::new();
    for n in ["m1", "m2", "m3"] {
        t.node(n, &[], &[("pool", "FILE_THIN", 100)]);
    }
    t.rd("rr", None, 1);
    t.autoplace("rr", AutoSelectFilter { place_count: Some(1), node_name_list: strings(&["m1"]), ..Default::default() });
    t.run(|c, o, ctx| c.make_available("rr", "m2", &ResourceMakeAvailable::default(), o, ctx));
    assert!(t.placed("rr").contains(&("m2".into(), "DfltDisklessStorPool".into(), true)));
    let again = t.run(|c, o, ctx| c.make_available("rr", "m2", &ResourceMakeAvailable::default(), o, ctx));
    assert!(again.changes.is_empty() && again.replies[0].ret_code == 0, "{:?}", again.replies);
    assert_eq!(again.replies[0].message, "Resource already deployed as requested");
    t.run(|c, o, ctx| c.make_available("rr", "m3", &ResourceMakeAvailable { diskful: true, ..Default::default() }, o, ctx));
    assert!(t.placed("rr").contains(&("m3".into(), "pool".into(), false)));
}

#[test]
fn size_queries_match_the_pools() {
    let mut t = T::new();
    t.node("q1", &[], &[("pool", "LVM", 100)]);
    t.node("q2", &[], &[("pool", "LVM", 60)]);
    t.node("q3", &[], &[("pool", "LVM", 30)]);
    let info = t.c.query_size_info("DfltRscGrp", &AutoSelectFilter::default(), &t.obs).unwrap();
    let s = info.space_info.unwrap();
    assert_eq!(s.max_vlm_size_in_kib, 60 * GIB, "two replicas: the second-largest pool limits");
    assert_eq!(s.available_size_in_kib, Some((100 + 60 + 30) * GIB / 2));
    assert_eq!(s.next_spawn_result.iter().map(|r| r.node_name.as_str()).collect::<Vec<_>>(), ["q1", "q2"]);
    let three = t.c.query_size_info("DfltRscGrp", &count(3), &t.obs).unwrap();
    assert_eq!(three.space_info.unwrap().max_vlm_size_in_kib, 30 * GIB);
    let four = t.c.query_size_info("DfltRscGrp", &count(4), &t.obs).unwrap();
    assert_eq!(four.space_info.unwrap().max_vlm_size_in_kib, 0);
    assert!(!four.reports.is_empty());
    let all = t.c.query_all_size_info(&AutoSelectFilter::default(), &t.obs);
    assert!(all.result.contains_key("DfltRscGrp"));
    let max = t.c.query_max_volume_size(&count(2), &t.obs).unwrap();
    assert_eq!(max.candidates.len(), 1);
    assert_eq!((max.candidates[0].storage_pool.as_str(), max.candidates[0].max_volume_size_kib), ("pool", 60 * GIB));
}

#[test]
fn mixed_providers_are_not_combined_unless_allowed() {
    let mut t = T::new();
    t.node("lv1", &[], &[("pool", "LVM", 100)]);
    t.node("zf1", &[], &[("pool", "ZFS", 500)]);
    t.node("fi1", &[], &[("pool", "FILE_THIN", 900)]);
    t.rd("mix", None, 1);
    // The FILE pool is the largest, but FILE never mixes with LVM or ZFS,
    // and LVM with ZFS needs AllowMixingStoragePoolDriver.
    let e = t.autoplace_err("mix", count(2));
    assert_eq!(e.rc.code(), rc::FAIL_NOT_ENOUGH_NODES);
    t.c.ctrl_props.insert("AllowMixingStoragePoolDriver".into(), "true".into());
    t.autoplace("mix", count(2));
    assert_eq!(t.nodes_of("mix"), vec!["lv1", "zf1"]);
    // Extending: the existing LVM/ZFS replicas keep FILE out.
    let e = t.autoplace_err("mix", count(3));
    assert_eq!(e.rc.code(), rc::FAIL_NOT_ENOUGH_NODES);
    assert!(crate::placement::mixable(crate::storage_pool::ProviderKind::File, crate::storage_pool::ProviderKind::FileThin, false));
}

#[test]
fn make_available_without_a_pool_is_linstors_not_found_and_storage_only_means_diskful() {
    let mut t = T::new();
    t.node("m1", &[], &[("pool", "FILE_THIN", 100)]);
    t.node("m2", &[], &[]);
    t.rd("na", None, 1);
    t.autoplace("na", AutoSelectFilter { place_count: Some(1), node_name_list: strings(&["m1"]), ..Default::default() });
    let e = t.fail(|c, o, ctx| c.make_available("na", "m2", &ResourceMakeAvailable { diskful: true, ..Default::default() }, o, ctx));
    assert_eq!(e.rc.code(), rc::FAIL_NOT_FOUND_STOR_POOL);
    assert_eq!(e.rc.message, "Autoplacer could not find diskful stor pool on node m2 matching resource-groups autoplace-settings");
    assert_eq!(e.rc.error_status(), Some(404));
    // STORAGE only: no diskless replica is possible, so `diskful: false`
    // asks for a diskful one too (LINSTOR's make-available).
    let storage = ResourceMakeAvailable { diskful: false, layer_list: Some(vec!["STORAGE".into()]) };
    let e = t.fail(|c, o, ctx| c.make_available("na", "m2", &storage, o, ctx));
    assert_eq!(e.rc.code(), rc::FAIL_NOT_FOUND_STOR_POOL);
    t.node("m3", &[], &[("pool", "FILE_THIN", 100)]);
    t.run(|c, o, ctx| c.make_available("na", "m3", &storage, o, ctx));
    assert!(t.placed("na").contains(&("m3".into(), "pool".into(), false)));
}

#[test]
fn a_diskless_make_available_falls_back_to_the_default_diskless_pool() {
    let mut t = T::new();
    t.node("d1", &[], &[("pool", "FILE_THIN", 100)]);
    t.node("d2", &[], &[]);
    let rg = WireRg {
        name: "clients".into(),
        select_filter: AutoSelectFilter { storage_pool_diskless_list: strings(&["nosuchpool"]), ..Default::default() },
        ..Default::default()
    };
    t.run(|c, _, ctx| c.create_rsc_grp(&rg, ctx));
    t.rd("dl", Some("clients"), 1);
    t.autoplace("dl", AutoSelectFilter { place_count: Some(1), node_name_list: strings(&["d1"]), ..Default::default() });
    // d2 lacks the group's diskless pool: LINSTOR places without the
    // group's restriction, in the node's DfltDisklessStorPool.
    t.run(|c, o, ctx| c.make_available("dl", "d2", &ResourceMakeAvailable::default(), o, ctx));
    assert!(t.placed("dl").contains(&("d2".into(), "DfltDisklessStorPool".into(), true)));
}

#[test]
fn adjust_brings_every_definition_of_the_group_back_to_its_place_count() {
    use cairn_api::placement::ResourceGroupAdjust;
    let mut t = T::new();
    for n in ["n1", "n2", "n3"] {
        t.node(n, &[], &[("DfltStorPool", "FILE_THIN", 100)]);
    }
    let rg = WireRg { name: "web".into(), select_filter: count(2), ..Default::default() };
    t.run(|c, _, ctx| c.create_rsc_grp(&rg, ctx));
    let other = WireRg { name: "other".into(), select_filter: count(1), ..Default::default() };
    t.run(|c, _, ctx| c.create_rsc_grp(&other, ctx));
    t.rd("r1", Some("web"), 1);
    t.rd("r2", Some("web"), 1);
    t.rd("r3", Some("other"), 1);
    t.autoplace("r1", count(1));
    assert_eq!(t.placed("r1").len(), 1);
    // One group: both of its definitions get two replicas, the other group's stays bare.
    let out = t.run(|c, o, ctx| c.adjust_rsc_grps(Some("WEB"), &ResourceGroupAdjust::default(), o, ctx));
    assert_eq!(t.placed("r1").len(), 2);
    assert_eq!(t.placed("r2").len(), 2);
    assert!(t.placed("r3").is_empty());
    assert!(out.replies.iter().all(|r| !r.is_error()), "{:?}", out.replies);
    // Again: nothing to do.
    let out = t.run(|c, o, ctx| c.adjust_rsc_grps(Some("web"), &ResourceGroupAdjust::default(), o, ctx));
    assert!(out.changes.is_empty(), "{:?}", out.changes);
    // All groups: the other group's definition too; a request filter goes over the group's.
    let req = ResourceGroupAdjust { select_filter: count(3), ..Default::default() };
    t.run(|c, o, ctx| c.adjust_rsc_grps(None, &req, o, ctx));
    assert_eq!(t.placed("r3").len(), 3);
    assert_eq!(t.placed("r1").len(), 3);
    // A definition that cannot be placed is reported; the others still are.
    t.rd("r4", Some("other"), 1);
    t.rd("r5", Some("other"), 1_000_000);
    let out = t.run(|c, o, ctx| c.adjust_rsc_grps(Some("other"), &ResourceGroupAdjust::default(), o, ctx));
    assert_eq!(t.placed("r4").len(), 1);
    assert!(t.placed("r5").is_empty());
    let err = out.replies.iter().find(|r| r.is_error()).expect("r5 is reported");
    assert_eq!(err.code(), rc::FAIL_NOT_ENOUGH_NODES);
    assert_eq!(err.obj_refs.get("RscDfn").map(String::as_str), Some("r5"));
    // Unknown group; snapshot copying is refused.
    let e = t.fail(|c, o, ctx| c.adjust_rsc_grps(Some("nope"), &ResourceGroupAdjust::default(), o, ctx));
    assert_eq!(e.rc.code(), rc::FAIL_NOT_FOUND_RSC_GRP);
    let snaps = ResourceGroupAdjust { copy_all_snaps: Some(true), ..Default::default() };
    let e = t.fail(|c, o, ctx| c.adjust_rsc_grps(Some("web"), &snaps, o, ctx));
    assert_eq!(e.rc.code(), rc::FAIL_INVLD_REQUEST);
}

#[test]
fn a_tiebreakers_node_takes_the_new_diskful_replica() {
    use cairn_api::resource::{Resource as WireRsc, ResourceCreate};
    let mut t = T::new();
    for n in ["t1", "t2", "t3"] {
        t.node(n, &[], &[("pool", "FILE_THIN", 100)]);
    }
    t.rd("rr", None, 1);
    t.autoplace("rr", AutoSelectFilter { place_count: Some(2), node_name_list: strings(&["t1", "t2"]), ..Default::default() });
    let tb = ResourceCreate {
        resource: WireRsc { node_name: "t3".into(), flags: vec!["DRBD_DISKLESS".into(), "TIE_BREAKER".into()], ..Default::default() },
        ..Default::default()
    };
    t.run(|c, _, ctx| c.create_resources("rr", &[tb], None, ctx));
    assert!(t.placed("rr").contains(&("t3".into(), "DfltDisklessStorPool".into(), true)));
    // Three replicas on three nodes: the tiebreaker's node is the only
    // candidate; its replica gets the disk, keeping its node id.
    let id_before = t.c.resources[&(key("rr"), key("t3"))].drbd.map(|d| d.node_id);
    let out = t.autoplace("rr", count(3));
    assert!(out.replies.iter().any(|r| r.message == "Addition of disk to resource 'rr' on node 't3' registered"), "{:?}", out.replies);
    assert_eq!(t.nodes_of("rr"), ["t1", "t2", "t3"]);
    let r = &t.c.resources[&(key("rr"), key("t3"))];
    assert!(!r.flags.contains("TIE_BREAKER") && !r.flags.contains("DRBD_DISKLESS"), "{:?}", r.flags);
    assert!(r.flags.contains("DISK_ADDING"), "{:?}", r.flags);
    assert_eq!(r.props.get("DiskfulBy").map(String::as_str), Some("auto-placer"));
    assert_eq!(r.volumes.values().next().map(|v| v.storage_pool.as_str()), Some("pool"));
    assert_eq!(r.drbd.map(|d| d.node_id), id_before);
    // A diskless replica that skips its disk is not taken over.
    t.rd("sk", None, 1);
    t.autoplace("sk", AutoSelectFilter { place_count: Some(2), node_name_list: strings(&["t1", "t2"]), ..Default::default() });
    let mut props = Props::new();
    props.insert("DrbdOptions/SkipDisk".into(), "True".into());
    let skip = ResourceCreate {
        resource: WireRsc { node_name: "t3".into(), flags: vec!["DRBD_DISKLESS".into()], props, ..Default::default() },
        ..Default::default()
    };
    t.run(|c, _, ctx| c.create_resources("sk", &[skip], None, ctx));
    let e = t.autoplace_err("sk", count(3));
    assert_eq!(e.rc.code(), rc::FAIL_NOT_ENOUGH_NODES);
}
