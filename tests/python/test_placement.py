"""Placement end to end: spawn, autoplace, make-available and size
queries through python-linstor, on real satellites and loop devices."""

import concurrent.futures
import os

import linstor

from conftest import SatelliteProc, err, loops_under, ok, wait_for
from test_satellites import MiB, blocksize, view


def test_spawn_places_three_replicas_with_devices(cluster):
    c = cluster
    ok(c.lin.resource_group_create("rg3", place_count=3))
    ok(c.lin.volume_group_create("rg3"))
    replies = ok(c.lin.resource_group_spawn("rg3", "pvc-a", [32 * 1024]))
    assert any("autoplaced on 3" in r.message for r in replies), [str(r) for r in replies]
    v = view(c, "pvc-a")
    assert sorted(v) == ["n1", "n2", "n3"]
    for r in v.values():
        dev = r["volumes"][0]["device_path"]
        assert dev and blocksize(dev) == 32 * MiB
        assert r["props"]["StorPoolName"] == "DfltStorPool"


def test_autoplace_is_idempotent_and_respects_the_group(cluster):
    c = cluster
    ok(c.lin.resource_group_create("rg2", place_count=2))
    ok(c.lin.resource_dfn_create("auto", resource_group="rg2"))
    ok(c.lin.volume_dfn_create("auto", 4096))
    status, _, body = c.ctrl.request("POST", "/v1/resource-definitions/auto/autoplace", {"select_filter": {}})
    assert status == 201, body
    assert len(view(c, "auto")) == 2
    status, _, body = c.ctrl.request("POST", "/v1/resource-definitions/auto/autoplace", {"select_filter": {}})
    assert status == 201, body  # a warning keeps the 2xx status (W6)
    assert any(r["ret_code"] & 0x7FFF == 1006 and r["ret_code"] < 0 for r in body), body
    assert len(view(c, "auto")) == 2
    ok(c.lin.resource_auto_place("auto", 3))
    assert len(view(c, "auto")) == 3


def test_make_available_without_drbd_is_diskful_or_linstors_refusal(cluster):
    # These resources are STORAGE only: no layer can serve a diskless
    # replica, so LINSTOR's make-available places a diskful one whatever
    # `diskful` says, and without a pool on the node answers
    # FAIL_NOT_FOUND_STOR_POOL with the text OpenNebula's add-on matches.
    c = cluster
    s4 = SatelliteProc("n4", "127.0.10.4", os.path.join(c.root, "n4"), c.ctrl.data_dir + "/cluster-secret").start()
    try:
        ok(c.lin.node_create("n4", "SATELLITE", "127.0.10.4", port=s4.port))
        wait_for("n4 online", lambda: [n for n in c.lin.node_list_raise(filter_by_nodes=["n4"]).nodes if n.connection_status == "ONLINE"])
        ok(c.lin.resource_group_spawn("DfltRscGrp", "ma", [4096]))
        assert len(view(c, "ma")) == 2
        for diskful in (False, True):
            status, _, body = c.ctrl.request("POST", "/v1/resource-definitions/ma/resources/n4/make-available", {"diskful": diskful})
            assert status == 404, body
            assert body[0]["ret_code"] & 0x7FFF == 310 and body[0]["ret_code"] < 0, body  # FAIL_NOT_FOUND_STOR_POOL
            assert body[0]["message"] == "Autoplacer could not find diskful stor pool on node n4 matching resource-groups autoplace-settings"
        err(c.lin.resource_make_available("n4", "ma", diskful=True), 310)
        assert "n4" not in view(c, "ma") and len(view(c, "ma")) == 2
        ok(c.lin.storage_pool_create("n4", "DfltStorPool", "FILE_THIN", os.path.join(c.root, "n4", "pool")))
        status, _, body = c.ctrl.request("POST", "/v1/resource-definitions/ma/resources/n4/make-available", {"diskful": False})
        assert status == 200, body
        r = view(c, "ma")["n4"]
        assert "DISKLESS" not in r["flags"] and r["volumes"][0]["storage_pool_name"] == "DfltStorPool"
        assert r["volumes"][0]["device_path"]
        ok(c.lin.resource_make_available("n4", "ma"))  # again: nothing to do
        assert len(view(c, "ma")) == 3
    finally:
        s4.stop()


def test_size_queries_match_the_pools(cluster):
    c = cluster
    pools = {p.node_name: p for p in c.lin.storage_pool_list_raise(filter_by_stor_pools=["DfltStorPool"]).storage_pools}
    frees = sorted((p.free_space.free_capacity for p in pools.values()), reverse=True)
    info = c.lin.resource_group_query_size_info("DfltRscGrp")
    assert info.space_info.max_vlm_size_in_kib > 0
    # Two replicas: at most the second-largest pool's effective free space.
    # FILE_THIN pools are oversubscribed 20x, the FILE pool (n2) is not.
    n2_free = pools["n2"].free_space.free_capacity
    assert info.space_info.max_vlm_size_in_kib <= 20 * frees[0]
    assert len(info.space_info.next_spawn_result) == 2
    status, _, body = c.ctrl.request("POST", "/v1/queries/resource-groups/query-all-size-info", {})
    assert status == 200 and "DfltRscGrp" in body["result"]
    status, _, body = c.ctrl.request("OPTIONS", "/v1/query-max-volume-size", {"place_count": 3})
    assert status == 200, body
    cand = body["candidates"][0]
    assert cand["storage_pool"] == "DfltStorPool" and sorted(cand["node_names"]) == ["n1", "n2", "n3"]
    assert cand["max_volume_size_kib"] <= n2_free  # three replicas include the thick pool
    assert cand["all_thin"] is False


def test_clear_errors_when_constraints_cannot_be_met(cluster):
    c = cluster
    replies = c.lin.resource_group_spawn("DfltRscGrp", "toomany", [4096], place_count=4)
    e = [r for r in replies if r.is_error()]
    assert e and e[0].ret_code & 0x7FFF == 996, [str(r) for r in replies]  # FAIL_NOT_ENOUGH_NODES
    status, _, body = c.ctrl.request("POST", "/v1/resource-groups/DfltRscGrp/spawn",
                                     {"resource_definition_name": "huge", "volume_sizes": [1 << 50], "select_filter": {"place_count": 1}})
    assert status == 500
    assert "not enough free space" in body[0]["cause"], body
    status, _, _ = c.ctrl.request("GET", "/v1/resource-definitions/huge")
    assert status == 404, "a failed spawn leaves no definition behind"
    status, _, body = c.ctrl.request("POST", "/v1/resource-groups/DfltRscGrp/spawn",
                                     {"resource_definition_name": "rackless", "volume_sizes": [1024],
                                      "select_filter": {"place_count": 2, "replicas_on_same": ["Aux/rack"]}})
    assert status == 500 and "replicas_on_same" in body[0]["cause"], body


def test_a_burst_of_spawns_never_doubles_up(cluster):
    c = cluster
    def spawn(i):
        lin = linstor.Linstor(c.ctrl.url)
        lin.connect()
        try:
            return lin.resource_group_spawn("DfltRscGrp", f"burst{i}", [2048])
        finally:
            lin.disconnect()
    with concurrent.futures.ThreadPoolExecutor(8) as ex:
        for replies in ex.map(spawn, range(20)):
            ok(replies)
    status, _, body = c.ctrl.request("GET", "/v1/view/resources")
    per_rd = {}
    for r in body:
        if r["name"].startswith("burst"):
            per_rd.setdefault(r["name"], []).append(r["node_name"])
            assert r["volumes"][0]["device_path"], r
    assert len(per_rd) == 20
    for rd, nodes in per_rd.items():
        assert len(nodes) == 2 and len(set(nodes)) == 2, (rd, nodes)
    assert len([d for d in loops_under(c.root) if "burst" in d["back-file"]]) == 40
