//! Unit tests of the cluster operations, with no IO: each builds a cluster
//! through the same operations the controller calls.

use cairn_api::node::{NetInterface, Node as WireNode};
use cairn_api::rc;
use cairn_api::resource::{Resource as WireRsc, ResourceCreate};
use cairn_api::resource_definition::{
    ResourceDefinition as WireRd, ResourceDefinitionCreate, VolumeDefinition as WireVd, VolumeDefinitionCreate, VolumeDefinitionModify,
};
use cairn_api::resource_group::{AutoSelectFilter, ResourceGroup as WireRg, ResourceGroupModify};
use cairn_api::storage_pool::StoragePool as WireSp;

use crate::resource_group::merge_filter;
use crate::{Cluster, Ctx, OpError, Outcome, Props};

struct T {
    c: Cluster,
    ctx: Ctx,
}

impl T {
    fn new() -> T {
        let mut c = Cluster::default();
        let seed = c.seed(&mut || "seed".into());
        c.apply(seed);
        T { c, ctx: Ctx::deterministic() }
    }

    fn run(&mut self, f: impl FnOnce(&Cluster, &mut Ctx) -> Result<Outcome, OpError>) -> Outcome {
        let out = f(&self.c, &mut self.ctx).unwrap_or_else(|e| panic!("operation failed: {}", e.rc.message));
        self.c.apply(out.changes.clone());
        out
    }

    fn fail(&mut self, f: impl FnOnce(&Cluster, &mut Ctx) -> Result<Outcome, OpError>) -> i64 {
        let before = self.c.clone();
        let e = f(&self.c, &mut self.ctx).expect_err("operation should fail");
        assert_eq!(self.c, before);
        assert!(e.rc.is_error());
        e.rc.code()
    }

    fn node(&mut self, name: &str) {
        let req = WireNode {
            name: name.into(),
            node_type: "SATELLITE".into(),
            net_interfaces: vec![NetInterface {
                name: "default".into(),
                address: "127.0.0.1".into(),
                satellite_port: Some(3366),
                ..Default::default()
            }],
            ..Default::default()
        };
        self.run(|c, ctx| c.create_node(&req, ctx));
    }

    fn pool(&mut self, node: &str, name: &str) {
        let mut props = Props::new();
        props.insert("StorDriver/StorPoolName".into(), "/srv/pool".into());
        let req = WireSp { storage_pool_name: name.into(), provider_kind: "FILE_THIN".into(), props, ..Default::default() };
        self.run(|c, ctx| c.create_stor_pool(node, &req, ctx));
    }

    fn rd(&mut self, name: &str, size: i64) {
        let req =
            ResourceDefinitionCreate { resource_definition: WireRd { name: name.into(), ..Default::default() }, ..Default::default() };
        self.run(|c, ctx| c.create_rsc_dfn(&req, ctx));
        let vd = VolumeDefinitionCreate { volume_definition: WireVd { size_kib: Some(size), ..Default::default() }, ..Default::default() };
        self.run(|c, ctx| c.create_vlm_dfn(name, &vd, ctx));
    }

    fn rsc(node: &str, flags: &[&str]) -> ResourceCreate {
        ResourceCreate {
            resource: WireRsc { node_name: node.into(), flags: flags.iter().map(|f| f.to_string()).collect(), ..Default::default() },
            ..Default::default()
        }
    }
}

#[test]
fn seed_creates_default_group_and_pool_definitions_once() {
    let t = T::new();
    assert!(t.c.rsc_grps.contains_key("DFLTRSCGRP"));
    assert_eq!(t.c.rsc_grps["DFLTRSCGRP"].select_filter.place_count, Some(2));
    assert!(t.c.stor_pool_dfns.contains_key("DFLTSTORPOOL") && t.c.stor_pool_dfns.contains_key("DFLTDISKLESSSTORPOOL"));
    assert!(t.c.seed(&mut || "x".into()).is_empty());
}

#[test]
fn satellite_nodes_get_the_diskless_pool() {
    let mut t = T::new();
    t.node("alpha");
    let p = &t.c.stor_pools[&("ALPHA".to_string(), "DFLTDISKLESSSTORPOOL".to_string())];
    assert_eq!(p.provider_kind.as_str(), "DISKLESS");
}

#[test]
fn resources_land_in_the_default_pool_and_diskless_in_the_diskless_pool() {
    let mut t = T::new();
    t.node("na");
    t.node("nb");
    t.pool("na", "DfltStorPool");
    t.rd("r1", 1024);
    t.run(|c, ctx| c.create_resources("r1", &[T::rsc("na", &[]), T::rsc("nb", &["DRBD_DISKLESS"])], None, ctx));
    let a = &t.c.resources[&("R1".to_string(), "NA".to_string())];
    assert_eq!(a.volumes[&0].storage_pool, "DfltStorPool");
    let b = &t.c.resources[&("R1".to_string(), "NB".to_string())];
    assert!(b.flags.contains("DISKLESS") && b.flags.contains("DRBD_DISKLESS"));
    assert_eq!(b.volumes[&0].storage_pool, "DfltDisklessStorPool");
}

#[test]
fn missing_default_pool_is_linstors_dflt_stor_pool_error() {
    let mut t = T::new();
    t.node("na");
    t.rd("r1", 1024);
    assert_eq!(t.fail(|c, ctx| c.create_resources("r1", &[T::rsc("na", &[])], None, ctx)), rc::FAIL_NOT_FOUND_DFLT_STOR_POOL);
}

#[test]
fn a_multi_resource_create_is_all_or_nothing() {
    let mut t = T::new();
    t.node("na");
    t.node("nb");
    t.pool("na", "DfltStorPool");
    t.rd("r1", 1024);
    // nb has no diskful pool: the whole call fails, na gets nothing either.
    assert_eq!(
        t.fail(|c, ctx| c.create_resources("r1", &[T::rsc("na", &[]), T::rsc("nb", &[])], None, ctx)),
        rc::FAIL_NOT_FOUND_DFLT_STOR_POOL
    );
    assert_eq!(t.fail(|c, ctx| c.create_resources("r1", &[T::rsc("na", &[]), T::rsc("NA", &[])], None, ctx)), rc::FAIL_EXISTS_RSC);
}

#[test]
fn node_delete_refuses_while_resources_remain_and_lost_cascades() {
    let mut t = T::new();
    t.node("na");
    t.pool("na", "DfltStorPool");
    t.rd("r1", 1024);
    t.run(|c, ctx| c.create_resources("r1", &[T::rsc("na", &[])], None, ctx));
    assert_eq!(t.fail(|c, _| c.delete_node("na")), rc::FAIL_IN_USE);
    t.run(|c, _| c.lose_node("NA"));
    assert!(t.c.nodes.is_empty() && t.c.resources.is_empty() && t.c.stor_pools.is_empty());
    assert_eq!(t.c.rsc_dfns.len(), 1, "the definition stays");
}

#[test]
fn resource_definition_delete_cascades() {
    let mut t = T::new();
    t.node("na");
    t.pool("na", "DfltStorPool");
    t.rd("r1", 1024);
    t.run(|c, ctx| c.create_resources("r1", &[T::rsc("na", &[])], None, ctx));
    let out = t.run(|c, _| c.delete_rsc_dfn("R1"));
    assert_eq!(out.changes.len(), 3);
    assert!(t.c.rsc_dfns.is_empty() && t.c.vlm_dfns.is_empty() && t.c.resources.is_empty());
}

#[test]
fn resource_group_in_use_or_default_cannot_be_deleted() {
    let mut t = T::new();
    let rg = WireRg { name: "g1".into(), ..Default::default() };
    t.run(|c, ctx| c.create_rsc_grp(&rg, ctx));
    let rd = ResourceDefinitionCreate {
        resource_definition: WireRd { name: "r1".into(), resource_group_name: Some("G1".into()), ..Default::default() },
        ..Default::default()
    };
    t.run(|c, ctx| c.create_rsc_dfn(&rd, ctx));
    assert_eq!(t.c.rsc_dfns["R1"].resource_group, "g1");
    assert_eq!(t.fail(|c, _| c.delete_rsc_grp("g1")), rc::FAIL_EXISTS_RSC_DFN);
    assert_eq!(t.fail(|c, _| c.delete_rsc_grp("dfltrscgrp")), rc::FAIL_IN_USE);
}

#[test]
fn select_filter_merges_only_given_fields() {
    let cur = AutoSelectFilter { place_count: Some(3), storage_pool_list: Some(vec!["sp1".into()]), ..Default::default() };
    let m = AutoSelectFilter { diskless_on_remaining: Some(true), ..Default::default() };
    let merged = merge_filter(&cur, &m);
    assert_eq!(merged.place_count, Some(3));
    assert_eq!(merged.storage_pool_list, Some(vec!["sp1".to_string()]));
    assert_eq!(merged.diskless_on_remaining, Some(true));
    let clear = AutoSelectFilter { storage_pool_list: Some(vec![]), ..Default::default() };
    assert_eq!(merge_filter(&cur, &clear).storage_pool_list, None);
    let mut t = T::new();
    let rg = WireRg { name: "g1".into(), select_filter: cur, ..Default::default() };
    t.run(|c, ctx| c.create_rsc_grp(&rg, ctx));
    let bad =
        ResourceGroupModify { select_filter: Some(AutoSelectFilter { place_count: Some(0), ..Default::default() }), ..Default::default() };
    assert_eq!(t.fail(|c, _| c.modify_rsc_grp("g1", &bad)), rc::FAIL_INVLD_PLACE_COUNT);
}

#[test]
fn volume_definitions_grow_but_do_not_shrink_under_resources() {
    let mut t = T::new();
    t.node("na");
    t.pool("na", "DfltStorPool");
    t.rd("r1", 1024);
    t.run(|c, ctx| c.create_resources("r1", &[T::rsc("na", &[])], None, ctx));
    let grow = VolumeDefinitionModify { size_kib: Some(2048), ..Default::default() };
    t.run(|c, _| c.modify_vlm_dfn("r1", 0, &grow));
    assert_eq!(t.c.vlm_dfns[&("R1".to_string(), 0)].size_kib, 2048);
    let shrink = VolumeDefinitionModify { size_kib: Some(1000), ..Default::default() };
    assert_eq!(t.fail(|c, _| c.modify_vlm_dfn("r1", 0, &shrink)), rc::FAIL_INVLD_VLM_SIZE);
}

#[test]
fn external_names_must_be_unique() {
    let mut t = T::new();
    let rd = ResourceDefinitionCreate {
        resource_definition: WireRd { external_name: Some("my vol".into()), ..Default::default() },
        ..Default::default()
    };
    let out = t.run(|c, ctx| c.create_rsc_dfn(&rd, ctx));
    assert_eq!(out.replies[0].obj_refs["RscDfn"], "my_vol");
    assert_eq!(t.fail(|c, ctx| c.create_rsc_dfn(&rd, ctx)), rc::FAIL_EXISTS_EXT_NAME);
}
