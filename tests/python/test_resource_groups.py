"""Resource groups, select filters and volume groups."""

import linstor

from conftest import err, ok


def rg(controller, name):
    status, _, body = controller.request("GET", f"/v1/resource-groups/{name}")
    assert status == 200, body
    return body


def test_default_group_always_exists(controller, lin):
    groups = lin.resource_group_list_raise().resource_groups
    assert [g.name for g in groups] == ["DfltRscGrp"]
    assert groups[0].select_filter.place_count == 2
    err(lin.resource_group_delete("DfltRscGrp"), 997)


def test_create_modify_with_partial_filter_merge(controller, lin):
    ok(lin.resource_group_create("rg1", description="first", place_count=3, storage_pool=["pool1", "pool2"],
                                 replicas_on_different=["Aux/rack"], diskless_on_remaining=True))
    g = rg(controller, "rg1")
    assert g["description"] == "first"
    f = g["select_filter"]
    assert f["place_count"] == 3
    assert f["storage_pool_list"] == ["pool1", "pool2"]
    assert "storage_pool" not in f  # LINSTOR fills it only for a one-pool list
    assert f["replicas_on_different"] == ["Aux/rack"]
    assert f["diskless_on_remaining"] is True
    # The CLI's set-property sends "select_filter": {} meaning "no change".
    status, _, _ = controller.request("PUT", "/v1/resource-groups/rg1", {"select_filter": {}, "override_props": {"Aux/x": "1"}})
    assert status == 200
    g = rg(controller, "rg1")
    assert g["select_filter"]["place_count"] == 3 and g["props"] == {"Aux/x": "1"}
    # A partial filter changes only what it names; a string count is fine (W7).
    status, _, _ = controller.request("PUT", "/v1/resource-groups/rg1", {"select_filter": {"place_count": "2"}})
    g = rg(controller, "rg1")
    assert g["select_filter"]["place_count"] == 2
    assert g["select_filter"]["storage_pool_list"] == ["pool1", "pool2"]
    # An empty list clears (python's high-level ResourceGroup sends it).
    status, _, _ = controller.request("PUT", "/v1/resource-groups/rg1", {"select_filter": {"storage_pool_list": [], "diskless_on_remaining": False}})
    g = rg(controller, "rg1")
    assert "storage_pool_list" not in g["select_filter"]
    assert g["select_filter"]["diskless_on_remaining"] is False


def test_invalid_groups_are_refused(controller, lin):
    err(lin.resource_group_create("r"), 237)  # FAIL_INVLD_RSC_GRP_NAME
    status, _, body = controller.request("POST", "/v1/resource-groups", {"name": "pc0", "select_filter": {"place_count": 0}})
    assert status == 500 and body[0]["ret_code"] & 0x7FFF == 219  # FAIL_INVLD_PLACE_COUNT
    status, _, body = controller.request("POST", "/v1/resource-groups", {"name": "ls1", "select_filter": {"layer_stack": ["STORAGE", "DRBD"]}})
    assert status == 500 and body[0]["ret_code"] & 0x7FFF == 225  # FAIL_INVLD_LAYER_STACK
    status, _, body = controller.request("POST", "/v1/resource-groups", {"name": "pl1", "select_filter": {"provider_list": ["FLOPPY"]}})
    assert status == 500 and body[0]["ret_code"] & 0x7FFF == 227
    ok(lin.resource_group_create("twice"))
    err(lin.resource_group_create("TWICE"), 522)  # FAIL_EXISTS_RSC_GRP
    err(lin.resource_group_modify("nope", description="x"), 317)


def test_group_with_definitions_cannot_be_deleted(lin):
    ok(lin.resource_group_create("rg-used"))
    ok(lin.resource_dfn_create("rd-in-group", resource_group="rg-used"))
    err(lin.resource_group_delete("rg-used"), 501)  # FAIL_EXISTS_RSC_DFN
    ok(lin.resource_dfn_modify("rd-in-group", {}, resource_group="DfltRscGrp"))
    ok(lin.resource_group_delete("rg-used"))


def test_volume_groups(controller, lin):
    ok(lin.resource_group_create("vgrg"))
    ok(lin.volume_group_create("vgrg"))
    ok(lin.volume_group_create("vgrg", volume_nr=5, property_dict={"Aux/a": "b"}, gross=True))
    vgs = lin.volume_group_list_raise("vgrg").volume_groups
    assert [v.number for v in vgs] == [0, 5]
    assert vgs[1].properties == {"Aux/a": "b"} and "GROSS_SIZE" in vgs[1].flags
    err(lin.volume_group_create("vgrg", volume_nr=5), 523)  # FAIL_EXISTS_VLM_GRP
    err(lin.volume_group_create("vgrg", volume_nr=70000), 205)  # FAIL_INVLD_VLM_NR
    ok(lin.volume_group_modify("vgrg", 5, property_dict={"Aux/c": "d"}, delete_props=["Aux/a"]))
    status, _, body = controller.request("GET", "/v1/resource-groups/vgrg/volume-groups/5")
    assert body["props"] == {"Aux/c": "d"}
    ok(lin.volume_group_delete("vgrg", 5))
    err(lin.volume_group_delete("vgrg", 5), 318)
    ok(lin.resource_group_delete("vgrg"))
    status, _, _ = controller.request("GET", "/v1/resource-groups/vgrg/volume-groups")
    assert status == 404


def test_high_level_resource_group_api(controller):
    # python-linstor's ResourceGroup class: list with a filter, create with
    # an empty filter, add volume group 0, then resend the whole group on
    # every setter (client-wire-rules.md §2.5).
    g = linstor.ResourceGroup("hlgroup", uri=controller.url)
    g.redundancy = 3
    g.description = "from the high-level API"
    g2 = linstor.ResourceGroup("hlgroup", uri=controller.url)
    assert g2.redundancy == 3
    assert g2.description == "from the high-level API"
    status, _, vgs = controller.request("GET", "/v1/resource-groups/hlgroup/volume-groups")
    assert [v["volume_number"] for v in vgs] == [0]


def test_select_filter_shows_the_one_storage_pool_beside_the_list(controller, lin):
    # LINSTOR's Json.apiToResourceGroup: `storage_pool` is the list's only
    # entry, whether it was sent as `storage_pool` or as a list.
    ok(lin.resource_group_create("onepool", storage_pool="pool1"))
    f = rg(controller, "onepool")["select_filter"]
    assert f["storage_pool"] == "pool1" and f["storage_pool_list"] == ["pool1"]
    status, _, body = controller.request("POST", "/v1/resource-groups", {"name": "onelist", "select_filter": {"storage_pool_list": ["pool2"]}})
    assert status == 201, body
    f = rg(controller, "onelist")["select_filter"]
    assert f["storage_pool"] == "pool2" and f["storage_pool_list"] == ["pool2"]
    g = [x for x in lin.resource_group_list_raise().resource_groups if x.name == "onelist"][0]
    assert g.select_filter.storage_pool == "pool2"
