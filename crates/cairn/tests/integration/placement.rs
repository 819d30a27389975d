//! Placement with real satellites: three `cairn satellite` processes of
//! the real binary on 127.0.10.21-23, each with a FILE_THIN pool in a
//! temporary directory. Spawn and autoplace make real loop devices.

use std::collections::BTreeSet;

use cairn_api::placement::{AutoPlaceRequest, ResourceGroupSpawn};
use cairn_api::rc::{self, MASK_CRT, MASK_DEL, MASK_RSC_DFN, MASK_RSC_GRP};
use cairn_api::resource::ResourceWithVolumes;
use cairn_api::resource_definition::{ResourceDefinition, ResourceDefinitionCreate, VolumeDefinition, VolumeDefinitionCreate};
use cairn_api::resource_group::{AutoSelectFilter, ResourceGroup};
use cairn_client::ClientError;

use crate::shared::{POOL, Satellite, assert_success, client, satellites, wait_gone};

fn placed(rd: &str) -> Vec<ResourceWithVolumes> {
    client().get(&format!("/v1/view/resources?resources={rd}")).expect("view resources")
}

/// Every replica of `rd` is on a satellite, in the test pool, with a loop
/// device and its file in that satellite's pool directory; returns the nodes.
fn check_replicas(sats: &[Satellite], rd: &str, size_kib: i64) -> BTreeSet<String> {
    let mut nodes = BTreeSet::new();
    for r in placed(rd) {
        let node = r.resource.node_name.clone();
        let sat = sats.iter().find(|s| s.name == node).unwrap_or_else(|| panic!("{rd} placed on {node}, not a satellite"));
        assert!(nodes.insert(node.clone()), "two replicas of {rd} on {node}");
        assert_eq!(r.volumes.len(), 1, "{r:?}");
        let v = &r.volumes[0];
        assert_eq!((v.storage_pool_name.as_str(), v.provider_kind.as_str()), (POOL, "FILE_THIN"), "{r:?}");
        assert!(v.device_path.as_deref().is_some_and(|p| p.starts_with("/dev/loop")), "{r:?}");
        let files: Vec<_> = std::fs::read_dir(&sat.pool_dir)
            .expect("pool dir")
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().starts_with(&format!("{rd}_00000_")))
            .collect();
        assert_eq!(files.len(), 1, "the volume file of {rd} on {node}");
        let len = files[0].metadata().expect("stat").len();
        assert!(len >= size_kib as u64 * 1024, "{rd} on {node}: {len} bytes for {size_kib} KiB");
    }
    nodes
}

fn delete_and_check_clean(sats: &[Satellite], rd: &str) {
    assert_success(client().delete(&format!("/v1/resource-definitions/{rd}")), MASK_DEL | MASK_RSC_DFN | rc::DELETED);
    assert!(placed(rd).is_empty());
    for s in sats {
        let left = wait_gone(&s.pool_dir, &format!("{rd}_"));
        assert!(left.is_empty(), "{rd} left {left:?} on {}", s.name);
    }
}

#[test]
fn spawn_places_replicas_on_distinct_satellites() {
    let Some(sats) = satellites() else {
        eprintln!("skipped: satellites make loop devices, which needs root");
        return;
    };
    let c = client();
    let group = ResourceGroup {
        name: "it-place-rg".into(),
        select_filter: AutoSelectFilter { place_count: Some(2), storage_pool: Some(POOL.into()), ..Default::default() },
        ..Default::default()
    };
    assert_success(c.post("/v1/resource-groups", &group), MASK_CRT | MASK_RSC_GRP | rc::CREATED);
    let spawn = ResourceGroupSpawn { resource_definition_name: "it-place-sp".into(), volume_sizes: vec![8192], ..Default::default() };
    let rcs = c.post("/v1/resource-groups/it-place-rg/spawn", &spawn).unwrap_or_else(|e| panic!("spawn: {e}"));
    assert!(!rcs.iter().any(|r| r.is_error()), "{rcs:?}");
    let nodes = check_replicas(sats, "it-place-sp", 8192);
    assert_eq!(nodes.len(), 2, "place_count 2: {nodes:?}");
    let rd: ResourceDefinition = c.get("/v1/resource-definitions/it-place-sp").expect("definition");
    assert_eq!(rd.resource_group_name.as_deref(), Some("it-place-rg"));

    delete_and_check_clean(sats, "it-place-sp");
    assert_success(c.delete("/v1/resource-groups/it-place-rg"), MASK_DEL | MASK_RSC_GRP | rc::DELETED);
}

#[test]
fn autoplace_uses_every_satellite_and_refuses_more_than_there_are() {
    let Some(sats) = satellites() else {
        eprintln!("skipped: satellites make loop devices, which needs root");
        return;
    };
    let c = client();
    let create = ResourceDefinitionCreate {
        resource_definition: ResourceDefinition { name: "it-place-ap".into(), ..Default::default() },
        ..Default::default()
    };
    assert_success(c.create_rsc_dfn(&create), MASK_CRT | MASK_RSC_DFN | rc::CREATED);
    let vd =
        VolumeDefinitionCreate { volume_definition: VolumeDefinition { size_kib: Some(4096), ..Default::default() }, ..Default::default() };
    c.create_vlm_dfn("it-place-ap", &vd).expect("volume definition");

    // More replicas than nodes with the pool: refused, nothing placed.
    let too_many = AutoPlaceRequest {
        select_filter: AutoSelectFilter { place_count: Some(4), storage_pool: Some(POOL.into()), ..Default::default() },
        ..Default::default()
    };
    match c.post("/v1/resource-definitions/it-place-ap/autoplace", &too_many) {
        Err(ClientError::Api { status, replies, .. }) => {
            assert_eq!(status, 500, "{replies:?}");
            assert!(replies[0].is_error() && replies[0].code() == rc::FAIL_NOT_ENOUGH_NODES, "{replies:?}");
            assert!(replies[0].cause.is_some(), "says why: {replies:?}");
        }
        other => panic!("autoplace of 4 on 3 nodes: {other:?}"),
    }
    assert!(placed("it-place-ap").is_empty(), "a refused autoplace placed nothing");

    let all = AutoPlaceRequest {
        select_filter: AutoSelectFilter { place_count: Some(3), storage_pool: Some(POOL.into()), ..Default::default() },
        ..Default::default()
    };
    let rcs = c.post("/v1/resource-definitions/it-place-ap/autoplace", &all).unwrap_or_else(|e| panic!("autoplace: {e}"));
    assert!(!rcs.iter().any(|r| r.is_error()), "{rcs:?}");
    let nodes = check_replicas(sats, "it-place-ap", 4096);
    assert_eq!(nodes, sats.iter().map(|s| s.name.clone()).collect::<BTreeSet<_>>());

    delete_and_check_clean(sats, "it-place-ap");
}
