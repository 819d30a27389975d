"""Storage pools and storage pool definitions."""

import pytest

from conftest import err, ok


@pytest.fixture
def node(lin):
    ok(lin.node_create("spnode", "SATELLITE", "127.0.10.1"))
    return "spnode"


@pytest.mark.parametrize("kind,pool", [
    ("FILE", "/var/lib/cairn-file"),
    ("FILE_THIN", "/var/lib/cairn-thin"),
    ("LVM", "vg0"),
    ("LVM_THIN", "vg0/thin"),
    ("ZFS", "tank/cairn"),
    ("ZFS_THIN", "tank"),
])
def test_every_provider_kind_is_accepted(lin, node, kind, pool):
    ok(lin.storage_pool_create(node, "pool1", kind, pool))
    sp = [p for p in lin.storage_pool_list_raise(filter_by_stor_pools=["pool1"]).storage_pools][0]
    assert sp.provider_kind == kind
    assert sp.properties["StorDriver/StorPoolName"] == pool
    assert sp.static_traits["Provisioning"] == ("Thin" if kind.endswith("THIN") else "Fat")
    assert sp.free_space_mgr_name == f"{node};pool1"


def test_bad_pools_are_refused(controller, lin, node):
    status, _, body = controller.request("POST", f"/v1/nodes/{node}/storage-pools", {"storage_pool_name": "pool1", "provider_kind": "EXOS"})
    assert status == 500 and body[0]["ret_code"] & 0x7FFF == 221  # FAIL_INVLD_STOR_DRIVER
    status, _, body = controller.request("POST", f"/v1/nodes/{node}/storage-pools", {"storage_pool_name": "pool1", "provider_kind": "LVM"})
    assert status == 500 and body[0]["ret_code"] & 0x7FFF == 600  # FAIL_MISSING_PROPS
    for kind, value in [("FILE", "relative/dir"), ("FILE_THIN", "/a/../etc"), ("LVM", "--force"), ("LVM_THIN", "novolume"), ("ZFS", "-o x")]:
        status, _, body = controller.request("POST", f"/v1/nodes/{node}/storage-pools", {"storage_pool_name": "pool1", "provider_kind": kind, "props": {"StorDriver/StorPoolName": value}})
        assert status == 500 and body[0]["ret_code"] & 0x7FFF == 213, (kind, value, body)  # FAIL_INVLD_PROP
    err(lin.storage_pool_create(node, "p", "FILE", "/x"), 208)  # name too short
    err(lin.storage_pool_create("nonode", "pool", "FILE", "/x"), 300)
    ok(lin.storage_pool_create(node, "pool", "FILE", "/x"))
    err(lin.storage_pool_create(node, "POOL", "FILE", "/y"), 510)  # FAIL_EXISTS_STOR_POOL
    status, _, body = controller.request("GET", "/v1/view/storage-pools?storage_pools=pool")
    assert len(body) == 1


def test_pool_filters_and_definitions(controller, lin, node):
    ok(lin.node_create("spnode2", "SATELLITE", "127.0.10.2"))
    ok(lin.storage_pool_create(node, "data", "FILE_THIN", "/var/lib/a", property_dict={"Aux/tier": "fast"}))
    ok(lin.storage_pool_create("spnode2", "data", "FILE_THIN", "/var/lib/b"))
    pools = lin.storage_pool_list_raise(filter_by_stor_pools=["data"]).storage_pools
    assert sorted(p.node_name for p in pools) == ["spnode", "spnode2"]
    pools = lin.storage_pool_list_raise(filter_by_props=["Aux/tier=fast"]).storage_pools
    assert [p.node_name for p in pools] == ["spnode"]
    status, _, body = controller.request("GET", "/v1/nodes/spnode2/storage-pools")
    assert sorted(p["storage_pool_name"] for p in body) == ["DfltDisklessStorPool", "data"]
    names = [d["storage_pool_name"] for d in controller.request("GET", "/v1/storage-pool-definitions")[2]]
    assert sorted(names) == ["DfltDisklessStorPool", "DfltStorPool", "data"]
    # A definition with pools cannot go; the defaults never go.
    err(lin.storage_pool_dfn_delete("data"), 997)
    err(lin.storage_pool_dfn_delete("DfltStorPool"), 997)
    ok(lin.storage_pool_modify(node, "data", {"Aux/tier": "slow"}))
    assert lin.storage_pool_list_raise(filter_by_nodes=[node], filter_by_stor_pools=["data"]).storage_pools[0].properties["Aux/tier"] == "slow"
    ok(lin.storage_pool_delete(node, "data"))
    ok(lin.storage_pool_delete("spnode2", "data"))
    ok(lin.storage_pool_dfn_delete("data"))
    ok(lin.storage_pool_dfn_create("later"))
    ok(lin.storage_pool_dfn_modify("later", {"MaxOversubscriptionRatio": "3"}))
    status, _, body = controller.request("GET", "/v1/storage-pool-definitions/later")
    assert body["props"] == {"MaxOversubscriptionRatio": "3"}


def test_pool_in_use_cannot_be_deleted(controller, lin, node):
    ok(lin.storage_pool_create(node, "used", "FILE_THIN", "/var/lib/used"))
    ok(lin.resource_dfn_create("r-used"))
    ok(lin.volume_dfn_create("r-used", 4096))
    status, _, body = controller.request("POST", "/v1/resource-definitions/r-used/resources", [{"resource": {"node_name": node, "props": {"StorPoolName": "used"}}}])
    assert status == 201, body
    err(lin.storage_pool_delete(node, "used"), 997)
    ok(lin.resource_delete(node, "r-used"))
    ok(lin.storage_pool_delete(node, "used"))
