//! Unit tests of the cluster operations, with no IO: each builds a cluster
//! through the same operations the controller calls.

use cairn_api::rc;
use cairn_api::resource::{Resource as WireRsc, ResourceCreate};
use cairn_api::resource_definition::{
    ResourceDefinition as WireRd, ResourceDefinitionCreate, VolumeDefinition as WireVd, VolumeDefinitionCreate, VolumeDefinitionModify,
};
use cairn_api::resource_group::{AutoSelectFilter, ResourceGroup as WireRg, ResourceGroupModify};

use crate::resource_group::merge_filter;
use crate::testing;
use crate::{Cluster, Ctx, OpError, Outcome};

struct T {
    c: Cluster,
    ctx: Ctx,
}

impl T {
    fn new() -> T {
        T { c: testing::seeded(), ctx: Ctx::deterministic() }
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
        let req = testing::satellite(name, &[]);
        self.run(|c, ctx| c.create_node(&req, ctx));
    }

    fn pool(&mut self, node: &str, name: &str) {
        let req = testing::pool(name, "FILE_THIN", "/srv/pool");
        self.run(|c, ctx| c.create_stor_pool(node, &req, ctx));
    }

    fn rd(&mut self, name: &str, size: i64) {
        let req =
            ResourceDefinitionCreate { resource_definition: WireRd { name: name.into(), ..Default::default() }, ..Default::default() };
        self.run(|c, ctx| c.create_rsc_dfn(&req, ctx));
        let vd = VolumeDefinitionCreate { volume_definition: WireVd { size_kib: Some(size), ..Default::default() }, ..Default::default() };
        self.run(|c, ctx| c.create_vlm_dfn(name, &vd, ctx));
    }

    /// A definition with one ENCRYPTED 4 MiB volume, over the STORAGE
    /// default stack (the flag adds LUKS to it).
    fn encrypted_rd(&mut self, name: &str) {
        self.c.ctrl_props.insert(crate::PROP_DEFAULT_LAYER_STACK.into(), "STORAGE".into());
        let rd = ResourceDefinitionCreate { resource_definition: WireRd { name: name.into(), ..Default::default() }, ..Default::default() };
        self.run(|c, ctx| c.create_rsc_dfn(&rd, ctx));
        let vd = VolumeDefinitionCreate {
            volume_definition: WireVd { size_kib: Some(4096), flags: vec!["ENCRYPTED".into()], ..Default::default() },
            ..Default::default()
        };
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

fn drbd_rd(t: &mut T, name: &str) {
    let rd = ResourceDefinitionCreate {
        resource_definition: WireRd {
            name: name.into(),
            layer_data: vec![
                cairn_api::resource_definition::LayerData { layer_type: "DRBD".into(), data: None },
                cairn_api::resource_definition::LayerData { layer_type: "STORAGE".into(), data: None },
            ],
            ..Default::default()
        },
        ..Default::default()
    };
    t.run(|c, ctx| c.create_rsc_dfn(&rd, ctx));
    let vd = VolumeDefinitionCreate { volume_definition: WireVd { size_kib: Some(1024), ..Default::default() }, ..Default::default() };
    t.run(|c, ctx| c.create_vlm_dfn(name, &vd, ctx));
}

fn drbd_of(t: &T, rd: &str, node: &str) -> crate::resource::DrbdRsc {
    t.c.resources[&(rd.to_ascii_uppercase(), node.to_ascii_uppercase())].drbd.expect("a DRBD resource has numbers")
}

#[test]
fn drbd_numbers_are_lowest_free_per_definition_node_and_cluster() {
    let mut t = T::new();
    for n in ["na", "nb", "nc"] {
        t.node(n);
        t.pool(n, "DfltStorPool");
    }
    drbd_rd(&mut t, "r1");
    drbd_rd(&mut t, "r2");
    assert_eq!(t.c.vlm_dfns[&("R1".to_string(), 0)].drbd_minor, Some(1000));
    assert_eq!(t.c.vlm_dfns[&("R2".to_string(), 0)].drbd_minor, Some(1001));
    t.run(|c, ctx| c.create_resources("r1", &[T::rsc("na", &[]), T::rsc("nb", &[]), T::rsc("nc", &["DRBD_DISKLESS"])], None, ctx));
    let ids: Vec<u8> = ["na", "nb", "nc"].iter().map(|n| drbd_of(&t, "r1", n).node_id).collect();
    assert_eq!(ids, vec![0, 1, 2]);
    assert!(["na", "nb", "nc"].iter().all(|n| drbd_of(&t, "r1", n).tcp_port == 7000), "ports are per node");
    t.run(|c, ctx| c.create_resources("r2", &[T::rsc("nb", &[]), T::rsc("na", &[])], None, ctx));
    assert_eq!((drbd_of(&t, "r2", "nb").node_id, drbd_of(&t, "r2", "nb").tcp_port), (0, 7001));
    // A delete frees the node id for the next replica.
    t.run(|c, _| c.delete_resource("r1", "nb"));
    t.run(|c, ctx| c.create_resources("r1", &[T::rsc("nb", &[])], None, ctx));
    assert_eq!(drbd_of(&t, "r1", "nb").node_id, 1);
    // The numbers reach each node's desired state consistently.
    let (_, rscs) = crate::desired::desired_for_node(&t.c, "NA");
    let d = rscs.iter().find(|r| r.name == "r1").and_then(|r| r.drbd.clone()).unwrap();
    assert_eq!((d.node_id, d.port, d.peer_slots, d.volumes[0].minor), (0, 7000, 7, 1000));
    assert_eq!(
        d.peers.iter().map(|p| (p.host.as_str(), p.node_id, p.port, p.diskless)).collect::<Vec<_>>(),
        [("nb", 1, 7000, false), ("nc", 2, 7000, true)],
        "nb got port 7000 back after the delete"
    );
    assert_eq!(d.secret.len(), 20);
}

#[test]
fn drbd_ranges_come_from_properties_and_run_out_cleanly() {
    let mut t = T::new();
    t.node("na");
    t.pool("na", "DfltStorPool");
    t.c.ctrl_props.insert("TcpPortAutoRange".into(), "7100-7100".into());
    t.c.ctrl_props.insert("MinorNrAutoRange".into(), "2000-2001".into());
    drbd_rd(&mut t, "r1");
    drbd_rd(&mut t, "r2");
    assert_eq!(t.c.vlm_dfns[&("R2".to_string(), 0)].drbd_minor, Some(2001));
    let vd = VolumeDefinitionCreate { volume_definition: WireVd { size_kib: Some(1024), ..Default::default() }, ..Default::default() };
    assert_eq!(t.fail(|c, ctx| c.create_vlm_dfn("r1", &vd, ctx)), 801, "minors exhausted");
    t.run(|c, ctx| c.create_resources("r1", &[T::rsc("na", &[])], None, ctx));
    assert_eq!(drbd_of(&t, "r1", "na").tcp_port, 7100);
    assert_eq!(t.fail(|c, ctx| c.create_resources("r2", &[T::rsc("na", &[])], None, ctx)), 802, "ports exhausted");
    let two_ports = ResourceCreate { drbd_tcp_port_count: Some(2), ..T::rsc("na", &[]) };
    assert_eq!(t.fail(|c, ctx| c.create_resources("r2", &[two_ports], None, ctx)), rc::FAIL_INVLD_TCP_PORT, "one port per replica");
    let taken = VolumeDefinitionCreate {
        volume_definition: WireVd { size_kib: Some(1024), volume_number: Some(5), ..Default::default() },
        drbd_minor_number: Some(2000),
        ..Default::default()
    };
    assert_eq!(t.fail(|c, ctx| c.create_vlm_dfn("r2", &taken, ctx)), rc::FAIL_INVLD_MINOR_NR, "a used minor cannot be requested");
}

#[test]
fn encrypted_volumes_need_the_master_key_and_get_a_sealed_secret() {
    let mut t = T::new();
    t.node("na");
    t.pool("na", "DfltStorPool");
    // An ENCRYPTED volume definition puts LUKS into the default stack.
    t.encrypted_rd("sec");
    assert_eq!(t.fail(|c, ctx| c.create_resources("sec", &[T::rsc("na", &[])], None, ctx)), rc::FAIL_NOT_FOUND_CRYPT_KEY, "locked");
    let mut n = 0;
    t.ctx = Ctx::deterministic().with_luks(move || {
        n += 1;
        Some(format!("sealed-{n}"))
    });
    t.run(|c, ctx| c.create_resources("sec", &[T::rsc("na", &[])], None, ctx));
    let r = &t.c.resources[&("SEC".to_string(), "NA".to_string())];
    assert_eq!(r.layer_stack, vec!["LUKS".to_string(), "STORAGE".to_string()]);
    assert_eq!(r.volumes[&0].luks_secret.as_deref(), Some("sealed-1"));
    // The satellite gets the opened secret, and the volume's options.
    t.c.ctrl_props.insert("StorDriver/LuksFormatOptions".into(), "--pbkdf pbkdf2".into());
    let (_, rscs) = crate::desired::desired_for_node_with(&t.c, "NA", &|s| Some(format!("open({s})")));
    let l = rscs[0].volumes[0].luks.clone().unwrap();
    assert_eq!(l.key.map(|k| k.0).as_deref(), Some("open(sealed-1)"));
    assert_eq!(l.format_options, vec!["--pbkdf".to_string(), "pbkdf2".to_string()]);
    let (_, locked) = crate::desired::desired_for_node(&t.c, "NA");
    assert!(locked[0].volumes[0].luks.as_ref().is_some_and(|l| l.key.is_none()));
}

#[test]
fn a_volume_definition_passphrase_replaces_every_replicas_key_and_keeps_the_old_ones() {
    let mut t = T::new();
    t.node("na");
    t.node("nb");
    t.pool("na", "DfltStorPool");
    t.pool("nb", "DfltStorPool");
    t.rd("plain", 4096);
    t.run(|c, ctx| c.create_resources("plain", &[T::rsc("na", &[])], None, ctx));
    // No LUKS layer: LINSTOR's warning, the passphrase is kept for later.
    let out = t.run(|c, _| c.modify_vlm_dfn_passphrase("plain", 0, "user-0"));
    let warn = out.replies[0].ret_code;
    assert!(warn & rc::MASK_WARN == rc::MASK_WARN && warn & rc::MASK_BITS_CODE == rc::WARN_NOT_FOUND, "{:?}", out.replies);
    assert!(out.replies[1].ret_code > 0);
    assert_eq!(t.fail(|c, _| c.modify_vlm_dfn_passphrase("plain", 7, "x")), rc::FAIL_NOT_FOUND_VLM_DFN);
    assert_eq!(t.fail(|c, _| c.modify_vlm_dfn_passphrase("nope", 0, "x")), rc::FAIL_NOT_FOUND_RSC_DFN);

    t.encrypted_rd("sec");
    let mut n = 0;
    t.ctx = Ctx::deterministic().with_luks(move || {
        n += 1;
        Some(format!("sealed-{n}"))
    });
    t.run(|c, ctx| c.create_resources("sec", &[T::rsc("na", &[])], None, ctx));
    let out = t.run(|c, _| c.modify_vlm_dfn_passphrase("sec", 0, "user-1"));
    assert!(out.replies.iter().all(|r| r.ret_code > 0 && r.ret_code & rc::MASK_WARN != rc::MASK_WARN), "{:?}", out.replies);
    let vol_nr = |t: &T, node: &str, nr: u32| t.c.resources[&("SEC".to_string(), node.to_string())].volumes[&nr].clone();
    let vol = |t: &T, node: &str| vol_nr(t, node, 0);
    assert_eq!(vol(&t, "NA").luks_secret.as_deref(), Some("user-1"));
    assert_eq!(vol(&t, "NA").luks_previous, vec!["sealed-1".to_string()]);
    // A replica made later starts with the definition's passphrase.
    t.run(|c, ctx| c.create_resources("sec", &[T::rsc("nb", &[])], None, ctx));
    assert_eq!(vol(&t, "NB").luks_secret.as_deref(), Some("user-1"));
    assert!(vol(&t, "NB").luks_previous.is_empty());
    // Changed again: every key the device may still hold, newest first.
    t.run(|c, _| c.modify_vlm_dfn_passphrase("sec", 0, "user-2"));
    assert_eq!(vol(&t, "NA").luks_previous, vec!["user-1".to_string(), "sealed-1".to_string()]);
    let (_, rscs) = crate::desired::desired_for_node_with(&t.c, "NA", &|s| Some(format!("open({s})")));
    let sec = rscs.iter().find(|r| r.name == "sec").expect("sec on NA");
    let l = sec.volumes[0].luks.clone().expect("a LUKS layer");
    assert_eq!(l.key.map(|k| k.0).as_deref(), Some("open(user-2)"));
    assert_eq!(l.previous_keys.iter().map(|k| k.0.as_str()).collect::<Vec<_>>(), ["open(user-1)", "open(sealed-1)"]);
    // A volume definition made with a (sealed) passphrase: its volumes
    // start with it.
    let given = VolumeDefinitionCreate {
        volume_definition: WireVd { size_kib: Some(4096), ..Default::default() },
        passphrase: Some("user-given".into()),
        ..Default::default()
    };
    t.run(|c, ctx| c.create_vlm_dfn("sec", &given, ctx));
    assert_eq!(vol_nr(&t, "NA", 1).luks_secret.as_deref(), Some("user-given"));
    // The sealed property is the endpoint's to set, not a property edit's.
    let edit = cairn_api::resource_definition::VolumeDefinitionModify {
        props: cairn_api::PropsModify {
            override_props: [(crate::resource_definition::PROP_VD_PASSPHRASE.to_string(), "plain".to_string())].into(),
            ..Default::default()
        },
        ..Default::default()
    };
    assert_eq!(t.fail(|c, _| c.modify_vlm_dfn("sec", 0, &edit)), rc::FAIL_INVLD_PROP);
}

#[test]
fn the_stored_master_key_is_out_of_reach_of_the_property_api() {
    let t = T::new();
    let set =
        cairn_api::PropsModify { override_props: [("encrypted/masterkey".to_string(), "x".to_string())].into(), ..Default::default() };
    assert_eq!(t.c.modify_ctrl_props(&set).unwrap_err().rc.ret_code & rc::MASK_BITS_CODE, rc::FAIL_INVLD_PROP);
    let del = cairn_api::PropsModify { delete_namespaces: vec!["encrypted".into()], ..Default::default() };
    assert!(t.c.modify_ctrl_props(&del).is_err());
    assert!(t.c.delete_ctrl_prop("/encrypted/masterhash").is_err());
    let o = t.c.set_crypt_props(&[("encrypted/masterkey".into(), "k".into())], true).unwrap();
    let mut c = t.c.clone();
    c.apply(o.changes);
    assert_eq!(
        c.set_crypt_props(&[], true).unwrap_err().rc.ret_code & rc::MASK_BITS_CODE,
        rc::FAIL_EXISTS_CRYPT_PASSPHRASE,
        "created once"
    );
    assert!(c.set_crypt_props(&[], false).is_ok());
}

#[test]
fn a_diskless_replica_ignores_the_definitions_pool_and_needs_a_diskless_layer() {
    let mut t = T::new();
    t.node("storage1");
    t.node("compute1");
    t.pool("storage1", "DfltStorPool");
    t.rd("cinder", 1024);
    let set_pool = cairn_api::resource_definition::ResourceDefinitionModify {
        props: cairn_api::PropsModify {
            override_props: [("StorPoolName".to_string(), "DfltStorPool".to_string())].into(),
            ..Default::default()
        },
        ..Default::default()
    };
    t.run(|c, _| c.modify_rsc_dfn("cinder", &set_pool));
    t.run(|c, ctx| c.create_resources("cinder", &[T::rsc("storage1", &[])], None, ctx));
    // compute1 has no DfltStorPool: the diskless replica goes to its
    // DfltDisklessStorPool, not to the definition's StorPoolName.
    t.run(|c, ctx| c.create_resources("cinder", &[T::rsc("compute1", &["DISKLESS"])], None, ctx));
    let r = &t.c.resources[&("CINDER".to_string(), "COMPUTE1".to_string())];
    assert_eq!(r.volumes[&0].storage_pool, "DfltDisklessStorPool");
    // Without a layer that can be diskless, LINSTOR's refusal.
    let plain = ResourceDefinitionCreate {
        resource_definition: WireRd {
            name: "plain".into(),
            layer_data: vec![cairn_api::resource_definition::LayerData { layer_type: "STORAGE".into(), ..Default::default() }],
            ..Default::default()
        },
        ..Default::default()
    };
    t.run(|c, ctx| c.create_rsc_dfn(&plain, ctx));
    let vd = VolumeDefinitionCreate { volume_definition: WireVd { size_kib: Some(1024), ..Default::default() }, ..Default::default() };
    t.run(|c, ctx| c.create_vlm_dfn("plain", &vd, ctx));
    assert_eq!(t.fail(|c, ctx| c.create_resources("plain", &[T::rsc("compute1", &["DISKLESS"])], None, ctx)), rc::FAIL_INVLD_LAYER_STACK);
    assert_eq!(
        t.fail(|c, ctx| c.create_resources("plain", &[T::rsc("compute1", &["DRBD_DISKLESS"])], None, ctx)),
        rc::FAIL_INVLD_LAYER_STACK
    );
}

#[test]
fn modify_replies_name_the_keys_set_before_the_modified_entry() {
    let mut t = T::new();
    t.node("na");
    let req = cairn_api::node::NodeModify {
        props: cairn_api::PropsModify { override_props: [("Aux/x".to_string(), "1".to_string())].into(), ..Default::default() },
        ..Default::default()
    };
    let out = t.run(|c, _| c.modify_node("na", &req));
    let msgs: Vec<&str> = out.replies.iter().map(|r| r.message.as_str()).collect();
    assert_eq!(msgs, ["Successfully set property key(s): Aux/x", "Node 'na' modified."]);
    assert_eq!(out.replies[0].ret_code, rc::MASK_NODE | rc::MASK_CRT | rc::CREATED);
}

#[test]
fn deleting_a_missing_definition_is_linstors_warning() {
    let mut t = T::new();
    let out = t.run(|c, _| c.delete_rsc_dfn("ghost"));
    assert!(out.changes.is_empty());
    assert_eq!(out.replies.len(), 1);
    let w = &out.replies[0];
    assert!(w.is_warning() && w.code() == rc::WARN_NOT_FOUND, "{w:?}");
    assert_eq!(w.message, "Resource definition: ghost not found.");
    assert_eq!(w.error_status(), None, "a warning keeps HTTP 200");
}

#[test]
fn nodes_record_their_active_connection_in_cur_stlt_conn_name() {
    let mut t = T::new();
    t.node("na");
    assert_eq!(t.c.nodes["NA"].props.get("CurStltConnName").map(String::as_str), Some("default"));
    let nif = cairn_api::node::NetInterface {
        name: "fast".into(),
        address: "10.0.0.2".into(),
        satellite_port: Some(3366),
        is_active: Some(true),
        ..Default::default()
    };
    t.run(|c, ctx| c.create_net_interface("na", &nif, ctx));
    assert_eq!(t.c.nodes["NA"].props.get("CurStltConnName").map(String::as_str), Some("fast"));
    t.run(|c, _| c.delete_net_interface("na", "fast"));
    assert_eq!(t.c.nodes["NA"].props.get("CurStltConnName").map(String::as_str), Some("default"));
}

#[test]
fn node_delete_follows_linstors_rules() {
    let mut t = T::new();
    t.node("na");
    t.node("nb");
    t.pool("na", "DfltStorPool");
    t.rd("r1", 1024);
    t.run(|c, ctx| c.create_resources("r1", &[T::rsc("na", &[]), T::rsc("nb", &["DRBD_DISKLESS"])], None, ctx));
    let never = |_: &crate::resource::Resource| false;
    // na holds the last disk of r1, which nb still uses: refused, nothing changes.
    let out = t.run(|c, _| c.delete_node_resources("na", &never));
    assert!(out.changes.is_empty());
    let codes: Vec<i64> = out.replies.iter().map(|r| r.code()).collect();
    assert_eq!(codes, [rc::FAIL_IN_USE, rc::FAIL_NODE_HAS_USED_RSC]);
    // A replica in use refuses too.
    let always = |_: &crate::resource::Resource| true;
    let out = t.run(|c, _| c.delete_node_resources("nb", &always));
    assert_eq!(out.replies.last().map(|r| r.code()), Some(rc::FAIL_NODE_HAS_USED_RSC));
    // nb's diskless replica is not needed: it goes, then the node.
    let out = t.run(|c, _| c.delete_node_resources("nb", &never));
    assert!(out.replies.iter().all(|r| !r.is_error()));
    assert!(!t.c.resources.contains_key(&("R1".to_string(), "NB".to_string())));
    t.run(|c, _| c.delete_node("nb"));
    assert!(!t.c.nodes.contains_key("NB"));
    // Now na's replica is the only one: it may go, and na with it.
    t.run(|c, _| c.delete_node_resources("na", &never));
    t.run(|c, _| c.delete_node("na"));
    assert!(t.c.nodes.is_empty() && t.c.resources.is_empty());
    // A node that is not there: a warning.
    let out = t.run(|c, _| c.delete_node_resources("na", &never));
    assert!(out.replies[0].is_warning() && out.replies[0].code() == rc::WARN_NOT_FOUND);
}

#[test]
fn a_backup_restore_registers_definition_snapshot_and_a_resource_restored_from_it() {
    use crate::backup::BackupRestorePlan;
    use crate::snapshot::VolumeSource;
    let mut t = T::new();
    t.node("n1");
    t.pool("n1", "thin");
    let req = testing::pool("thick", "FILE", "/srv/thick");
    t.run(|c, ctx| c.create_stor_pool("n1", &req, ctx));
    t.rd("taken", 1024);
    let plan = |target: &str, pool: &str| BackupRestorePlan {
        target: target.into(),
        snapshot: "back_20261126_170509".into(),
        node: "n1".into(),
        pool: pool.into(),
        layer_stack: vec!["STORAGE".into()],
        volumes: vec![(0, 4096), (1, 8192)],
        source_snap_uuid: None,
        luks_secrets: Default::default(),
    };
    // Refused before anything is downloaded: a definition that exists, a
    // pool that cannot hold a snapshot, a pool or node that is not there.
    assert_eq!(t.fail(|c, ctx| c.restore_backup(&plan("taken", "thin"), ctx)), rc::FAIL_EXISTS_RSC_DFN);
    assert_eq!(t.fail(|c, ctx| c.restore_backup(&plan("new", "thick"), ctx)), rc::FAIL_SNAPSHOTS_NOT_SUPPORTED);
    assert_eq!(t.fail(|c, ctx| c.restore_backup(&plan("new", "nope"), ctx)), rc::FAIL_NOT_FOUND_STOR_POOL);
    let mut elsewhere = plan("new", "thin");
    elsewhere.node = "n9".into();
    assert_eq!(t.fail(|c, ctx| c.restore_backup(&elsewhere, ctx)), rc::FAIL_NOT_FOUND_NODE);

    t.run(|c, ctx| c.restore_backup(&plan("new", "thin"), ctx));
    let sizes: Vec<(u32, i64)> = t.c.vlm_dfns_of("NEW").map(|v| (v.volume_number, v.size_kib)).collect();
    assert_eq!(sizes, vec![(0, 4096), (1, 8192)]);
    let s = &t.c.snapshots[&("NEW".to_string(), "BACK_20261126_170509".to_string())];
    assert_eq!(s.nodes.keys().collect::<Vec<_>>(), vec!["N1"]);
    let r = &t.c.resources[&("NEW".to_string(), "N1".to_string())];
    for v in r.volumes.values() {
        assert_eq!(v.storage_pool, "thin");
        assert_eq!(v.source, Some(VolumeSource { resource: "new".into(), snapshot: "back_20261126_170509".into() }));
    }
    assert_eq!(r.volumes.len(), 2);
}

#[test]
fn a_shipped_snapshot_restores_a_new_definition_and_sits_beside_an_existing_one() {
    use crate::backup::BackupRestorePlan;
    let mut t = T::new();
    t.node("n1");
    t.pool("n1", "thin");
    let plan = |snap: &str, volumes: Vec<(u32, i64)>| BackupRestorePlan {
        target: "dst".into(),
        snapshot: snap.into(),
        node: "n1".into(),
        pool: "thin".into(),
        layer_stack: vec!["STORAGE".into()],
        volumes,
        source_snap_uuid: Some(format!("uuid-of-{snap}")),
        luks_secrets: Default::default(),
    };
    // Download only into a new definition: definition and snapshot, no
    // resource.
    t.run(|c, ctx| c.receive_shipment(&plan("s1", vec![(0, 4096)]), true, ctx));
    assert!(t.c.snapshots.contains_key(&("DST".to_string(), "S1".to_string())));
    assert_eq!(t.c.resources_of("DST").count(), 0);
    // The definition exists now: the next snapshot is registered beside
    // it, nothing is restored; the same name or other volumes are refused.
    t.run(|c, ctx| c.receive_shipment(&plan("s2", vec![(0, 4096)]), false, ctx));
    assert!(t.c.snapshots.contains_key(&("DST".to_string(), "S2".to_string())));
    assert_eq!(t.c.resources_of("DST").count(), 0);
    // Each keeps the uuid of the source's snapshot it was shipped from.
    let src_uuid = |s: &str| t.c.snapshots[&("DST".to_string(), s.to_string())].props.get(crate::backup::SOURCE_SNAP_UUID_PROP).cloned();
    assert_eq!((src_uuid("S1"), src_uuid("S2")), (Some("uuid-of-s1".to_string()), Some("uuid-of-s2".to_string())));
    assert_eq!(t.fail(|c, ctx| c.receive_shipment(&plan("s2", vec![(0, 4096)]), false, ctx)), rc::FAIL_EXISTS_SNAPSHOT_DFN);
    assert_eq!(t.fail(|c, ctx| c.receive_shipment(&plan("s3", vec![(0, 4096), (1, 4096)]), false, ctx)), rc::FAIL_INVLD_BACKUP_CONFIG);
    // A new definition without download only gets its resource.
    let mut other = plan("s1", vec![(0, 4096)]);
    other.target = "dst2".into();
    t.run(|c, ctx| c.receive_shipment(&other, false, ctx));
    assert_eq!(t.c.resources_of("DST2").count(), 1);
    // A ZFS pool receives `zfs send` streams into a new definition too,
    // and backup restores (into the new resource's zvol); a thick LVM
    // pool takes no snapshots, so no restores.
    let req = testing::pool("zthin", "ZFS_THIN", "tank/thin");
    t.run(|c, ctx| c.create_stor_pool("n1", &req, ctx));
    let req = testing::pool("thick", "LVM", "vg0");
    t.run(|c, ctx| c.create_stor_pool("n1", &req, ctx));
    let mut zfs = plan("s1", vec![(0, 4096)]);
    (zfs.target, zfs.pool) = ("dst3".into(), "zthin".into());
    assert_eq!(t.c.check_shipment(&zfs).map_err(|e| e.rc.ret_code), Ok(cairn_proto::ProviderKind::ZfsThin));
    assert_eq!(t.c.check_backup_restore("dst3", "n1", "zthin").map_err(|e| e.rc.ret_code), Ok(cairn_proto::ProviderKind::ZfsThin));
    assert_eq!(
        t.c.check_backup_restore("dst3", "n1", "thick").map_err(|e| e.rc.ret_code & rc::MASK_BITS_CODE),
        Err(rc::FAIL_SNAPSHOTS_NOT_SUPPORTED)
    );
    t.run(|c, ctx| c.receive_shipment(&zfs, false, ctx));
    assert_eq!(t.c.resources_of("DST3").count(), 1);
}
