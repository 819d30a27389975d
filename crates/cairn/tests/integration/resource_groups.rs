//! Resource groups through the REST API of the shared controller: create,
//! modify (merging the select filter), spawn of definitions, delete, and
//! the refusals around them.

use cairn_api::placement::ResourceGroupSpawn;
use cairn_api::rc::{self, MASK_CRT, MASK_DEL, MASK_ERROR, MASK_MOD, MASK_RSC_DFN, MASK_RSC_GRP};
use cairn_api::resource::ResourceWithVolumes;
use cairn_api::resource_definition::{ResourceDefinition, VolumeDefinition};
use cairn_api::resource_group::{AutoSelectFilter, ResourceGroup, ResourceGroupModify};

use crate::shared::{assert_refused, assert_success, client};

fn rg(name: &str, place_count: i64) -> ResourceGroup {
    ResourceGroup {
        name: name.into(),
        select_filter: AutoSelectFilter { place_count: Some(place_count), storage_pool: Some("it-rg-pool".into()), ..Default::default() },
        ..Default::default()
    }
}

fn get_rg(name: &str) -> ResourceGroup {
    client().get(&format!("/v1/resource-groups/{name}")).unwrap_or_else(|e| panic!("get {name}: {e}"))
}

#[test]
fn create_modify_spawn_delete() {
    let c = client();
    assert_success(c.post("/v1/resource-groups", &rg("it-rg-a", 2)), MASK_CRT | MASK_RSC_GRP | rc::CREATED);
    let got = get_rg("IT-RG-A");
    assert_eq!(got.name, "it-rg-a");
    assert_eq!(got.select_filter.place_count, Some(2));
    let listed: Vec<ResourceGroup> = c.get("/v1/resource-groups?resource_groups=it-rg-a&resource_groups=DfltRscGrp").expect("list");
    let mut names: Vec<&str> = listed.iter().map(|g| g.name.as_str()).collect();
    names.sort();
    assert_eq!(names, ["DfltRscGrp", "it-rg-a"]);

    // Modify merges the filter: only the fields sent change.
    let modify = ResourceGroupModify {
        description: Some("integration".into()),
        select_filter: Some(AutoSelectFilter { place_count: Some(3), ..Default::default() }),
        ..Default::default()
    };
    assert_success(c.put("/v1/resource-groups/it-rg-a", &modify), MASK_MOD | MASK_RSC_GRP | rc::MODIFIED);
    let got = get_rg("it-rg-a");
    assert_eq!(got.select_filter.place_count, Some(3));
    // `storage_pool` is stored as `storage_pool_list`, as in LINSTOR.
    assert_eq!(got.select_filter.storage_pool_list, Some(vec!["it-rg-pool".to_string()]), "kept");
    assert_eq!(got.description.as_deref(), Some("integration"));

    // Spawn the definitions only (no satellites involved).
    let spawn = ResourceGroupSpawn {
        resource_definition_name: "it-rg-spawned".into(),
        volume_sizes: vec![4096, 8192],
        definitions_only: true,
        ..Default::default()
    };
    let rcs = assert_success(c.post("/v1/resource-groups/it-rg-a/spawn", &spawn), MASK_CRT | MASK_RSC_DFN | rc::CREATED);
    assert!(rcs.iter().any(|r| r.message.contains("it-rg-spawned")), "{rcs:?}");
    let rd: ResourceDefinition = c.get("/v1/resource-definitions/it-rg-spawned").expect("the spawned definition");
    assert_eq!(rd.resource_group_name.as_deref(), Some("it-rg-a"));
    let vds: Vec<VolumeDefinition> = c.get("/v1/resource-definitions/it-rg-spawned/volume-definitions").expect("volume definitions");
    let sizes: Vec<(Option<i64>, Option<i64>)> = vds.iter().map(|v| (v.volume_number, v.size_kib)).collect();
    assert_eq!(sizes, [(Some(0), Some(4096)), (Some(1), Some(8192))]);
    let placed: Vec<ResourceWithVolumes> = c.get("/v1/view/resources?resources=it-rg-spawned").expect("view");
    assert!(placed.is_empty(), "definitions only: {placed:?}");

    // A spawn of an existing definition is refused and changes nothing.
    assert_refused(
        c.post("/v1/resource-groups/it-rg-a/spawn", &spawn),
        500,
        MASK_ERROR | MASK_CRT | MASK_RSC_DFN | rc::FAIL_EXISTS_RSC_DFN,
    );

    // The group cannot go while a definition uses it.
    assert_refused(c.delete("/v1/resource-groups/it-rg-a"), 500, MASK_ERROR | MASK_DEL | MASK_RSC_GRP | rc::FAIL_EXISTS_RSC_DFN);
    assert_success(c.delete("/v1/resource-definitions/it-rg-spawned"), MASK_DEL | MASK_RSC_DFN | rc::DELETED);
    assert_success(c.delete("/v1/resource-groups/it-rg-a"), MASK_DEL | MASK_RSC_GRP | rc::DELETED);
    assert_refused(
        c.get::<ResourceGroup>("/v1/resource-groups/it-rg-a").map(|_| vec![]),
        404,
        MASK_ERROR | MASK_RSC_GRP | rc::FAIL_NOT_FOUND_RSC_GRP,
    );
}

#[test]
fn duplicates_unknown_groups_and_bad_input_are_refused() {
    let c = client();
    assert_success(c.post("/v1/resource-groups", &rg("it-rg-dup", 1)), MASK_CRT | MASK_RSC_GRP | rc::CREATED);
    assert_refused(c.post("/v1/resource-groups", &rg("IT-RG-DUP", 3)), 500, MASK_ERROR | MASK_CRT | MASK_RSC_GRP | rc::FAIL_EXISTS_RSC_GRP);
    assert_eq!(get_rg("it-rg-dup").select_filter.place_count, Some(1), "the refused create changed nothing");

    let spawn = ResourceGroupSpawn { resource_definition_name: "it-rg-orphan".into(), volume_sizes: vec![1024], ..Default::default() };
    assert_refused(
        c.post("/v1/resource-groups/it-rg-nope/spawn", &spawn),
        404,
        MASK_ERROR | MASK_CRT | MASK_RSC_GRP | rc::FAIL_NOT_FOUND_RSC_GRP,
    );
    assert_refused(
        c.put("/v1/resource-groups/it-rg-nope", &ResourceGroupModify::default()),
        404,
        MASK_ERROR | MASK_MOD | MASK_RSC_GRP | rc::FAIL_NOT_FOUND_RSC_GRP,
    );
    assert_refused(
        c.post("/v1/resource-groups", &rg("bad name", 1)),
        500,
        MASK_ERROR | MASK_CRT | MASK_RSC_GRP | rc::FAIL_INVLD_RSC_GRP_NAME,
    );
    assert_refused(
        c.post("/v1/resource-groups", &rg("it-rg-neg", -1)),
        500,
        MASK_ERROR | MASK_CRT | MASK_RSC_GRP | rc::FAIL_INVLD_PLACE_COUNT,
    );
    // The default group is there from the start and can never go.
    assert_eq!(get_rg("DfltRscGrp").name, "DfltRscGrp");
    let r = c.delete("/v1/resource-groups/DfltRscGrp");
    assert!(r.is_err(), "{r:?}");
    assert_success(c.delete("/v1/resource-groups/it-rg-dup"), MASK_DEL | MASK_RSC_GRP | rc::DELETED);
}
