"""Resource definitions, volume definitions, resources and the views."""

import http.client
import json
import zlib

import pytest
import linstor

from conftest import err, ok


@pytest.fixture
def cluster(lin):
    for i, n in enumerate(["n1", "n2", "n3"]):
        ok(lin.node_create(n, "SATELLITE", f"127.0.10.{i + 1}"))
        ok(lin.storage_pool_create(n, "DfltStorPool", "FILE_THIN", "/var/lib/cairn-pool"))
    return lin


def test_definitions_and_manual_placement(controller, cluster):
    lin = cluster
    ok(lin.resource_dfn_create("web", resource_group="DfltRscGrp"))
    ok(lin.volume_dfn_create("web", 1048576))
    ok(lin.volume_dfn_create("web", 2048, volume_nr=3))
    replies = ok(lin.resource_create([linstor.ResourceData("n1", "web"), linstor.ResourceData("n2", "web")]))
    assert sum(1 for r in replies if r.is_success()) == 2
    ok(lin.resource_create([linstor.ResourceData("n3", "web", diskless=True)]))

    status, _, body = controller.request("GET", "/v1/view/resources")
    assert status == 200 and len(body) == 3
    by_node = {r["node_name"]: r for r in body}
    for n in ("n1", "n2"):
        r = by_node[n]
        assert r["name"] == "web"
        # W12: always present; LINSTOR's default stack is DRBD over STORAGE.
        assert r["layer_object"]["type"] == "DRBD" and r["layer_object"]["children"][0]["type"] == "STORAGE"
        # No satellite has reported it: LINSTOR sends no state then; Cairn
        # an empty one (CSI needs the object), without in_use.
        assert r["state"] == {}, r["state"]
        assert isinstance(r["create_timestamp"], int)
        assert [v["volume_number"] for v in r["volumes"]] == [0, 3]  # W11: 0 present
        assert {v["storage_pool_name"] for v in r["volumes"]} == {"DfltStorPool"}
        assert {v["provider_kind"] for v in r["volumes"]} == {"FILE_THIN"}
        assert r["volumes"][0]["layer_data_list"][-1]["type"] == "STORAGE"
    d = by_node["n3"]
    assert "DISKLESS" in d["flags"]
    assert {v["storage_pool_name"] for v in d["volumes"]} == {"DfltDisklessStorPool"}

    # The CLI's resource list goes through python-linstor's classes.
    rl = lin.resource_list_raise(filter_by_resources=["web"])
    assert sorted(r.node_name for r in rl.resources) == ["n1", "n2", "n3"]
    vl = lin.volume_list_raise(filter_by_nodes=["n1"])
    assert len(vl.resources[0].volumes) == 2

    rds = lin.resource_dfn_list_raise(query_volume_definitions=True).resource_definitions
    web = [d for d in rds if d.name == "web"][0]
    assert web.resource_group_name == "DfltRscGrp"
    assert sorted((v.number, v.size) for v in web.volume_definitions) == [(0, 1048576), (3, 2048)]


def test_a_long_list_written_by_several_threads_is_the_list_in_order(controller, cluster):
    # The whole list (no filter, no page) is written in segments of 128
    # resources by a thread per core; 390 resources make four segments.
    # Pages and filters are written by one thread: they must agree.
    lin = cluster
    for i in range(130):
        rd = f"long{i:03}"
        ok(lin.resource_dfn_create(rd))
        ok(lin.volume_dfn_create(rd, 1024))
        ok(lin.resource_create([linstor.ResourceData(n, rd) for n in ("n1", "n2", "n3")]))

    def names(query):
        status, _, body = controller.request("GET", "/v1/view/resources" + query)
        assert status == 200
        return [(r["name"], r["node_name"]) for r in body]

    everything = names("")
    assert everything == [(f"long{i:03}", n) for i in range(130) for n in ("n1", "n2", "n3")]
    # Each resource as its own definition's list shows it.
    status, _, one = controller.request("GET", "/v1/resource-definitions/long077/resources")
    assert status == 200 and len(one) == 3
    status, _, view = controller.request("GET", "/v1/view/resources")
    assert status == 200 and [r for r in view if r["name"] == "long077"] == one
    # Pages across the segments' edges; filters that leave gaps.
    assert names("?limit=50&offset=100") == everything[100:150]
    assert names("?limit=0&offset=0") == everything
    assert names("?limit=10&offset=385") == everything[385:]
    status, _, none = controller.request("GET", "/v1/view/resources?limit=5&offset=500")
    assert status == 200 and none == []
    ok(lin.resource_modify("n3", "long129", property_dict={"Aux/last": "1"}))
    assert names("?props=Aux/last") == [("long129", "n3")]
    # python-linstor asks for gzip: the list threads compress what they
    # write, and the segments of several threads make one gzip member.
    assert len(lin.resource_list_raise().resources) == 390
    for path in ("/v1/view/resources", "/v1/view/resources?limit=50&offset=100",
                 "/v1/resource-definitions/long077/resources", "/v1/resource-definitions"):
        status, _, plain = controller.request("GET", path)
        conn = http.client.HTTPConnection("127.0.0.1", controller.port, timeout=30)
        conn.request("GET", path, headers={"Accept-Encoding": "gzip"})
        r = conn.getresponse()
        packed = r.read()
        conn.close()
        assert r.status == 200 and r.getheader("Content-Encoding") == "gzip", (path, r.getheader("Content-Encoding"))
        assert r.getheader("Vary", "").lower() == "accept-encoding"
        one = zlib.decompressobj(16 + zlib.MAX_WBITS)
        assert json.loads(one.decompress(packed)) == plain, path
        assert one.eof and one.unused_data == b"", path


def test_view_filters(controller, cluster):
    lin = cluster
    for rd in ("fa", "fb"):
        ok(lin.resource_dfn_create(rd))
        ok(lin.volume_dfn_create(rd, 1024))
    ok(lin.resource_create([linstor.ResourceData("n1", "fa"), linstor.ResourceData("n2", "fa")]))
    ok(lin.resource_create([linstor.ResourceData("n2", "fb"), linstor.ResourceData("n3", "fb", diskless=True)]))
    ok(lin.resource_modify("n2", "fb", property_dict={"Aux/tag": "x"}))

    def q(query):
        status, _, body = controller.request("GET", "/v1/view/resources" + query)
        assert status == 200
        return sorted((r["name"], r["node_name"]) for r in body)

    assert q("?nodes=n2") == [("fa", "n2"), ("fb", "n2")]
    assert q("?nodes=n1&nodes=N3") == [("fa", "n1"), ("fb", "n3")]
    assert q("?resources=FB") == [("fb", "n2"), ("fb", "n3")]
    assert q("?storage_pools=DfltDisklessStorPool") == [("fb", "n3")]
    assert q("?props=Aux/tag=x") == [("fb", "n2")]
    assert q("?props=Aux/tag=y") == []
    assert q("?limit=2&offset=0&cached=true") == [("fa", "n1"), ("fa", "n2")]
    assert len(q("?limit=0&offset=0")) == 4
    # Named nodes or definitions are looked up through indexes; the answer
    # keeps the full list's order and names each resource once.
    def order(query):
        return [(r["name"], r["node_name"]) for r in controller.request("GET", "/v1/view/resources" + query)[2]]

    everything = order("")
    assert len(everything) == 4
    for query, want in [
        ("?nodes=n3&nodes=n2&nodes=N2", lambda r: r[1] in ("n2", "n3")),
        ("?resources=fb&resources=fa&resources=FA", lambda r: True),
        ("?resources=fb&nodes=n3&nodes=n1", lambda r: r == ("fb", "n3")),
        ("?nodes=n2&storage_pools=DfltDisklessStorPool", lambda r: False),
        ("?nodes=n2&props=Aux/tag=x", lambda r: r == ("fb", "n2")),
        ("?nodes=n2&nodes=n3&limit=1&offset=1", lambda r: r == ("fb", "n2")),
        ("?resources=nope&nodes=n1", lambda r: False),
    ]:
        assert order(query) == [r for r in everything if want(r)], query
    status, _, body = controller.request("GET", "/v1/resource-definitions/fa/resources")
    assert sorted(r["node_name"] for r in body) == ["n1", "n2"]
    status, _, body = controller.request("GET", "/v1/resource-definitions?resource_definitions=fa&resource_definitions=fb")
    assert sorted(d["name"] for d in body) == ["fa", "fb"]
    assert "volume_definitions" not in body[0]
    status, _, body = controller.request("GET", "/v1/resource-definitions?with_volume_definitions=True")
    assert all(d["volume_definitions"][0]["volume_number"] == 0 for d in body)


def test_external_name_gives_derived_name_in_obj_refs(controller, lin):
    replies = ok(lin.resource_dfn_create("", external_name="pvc-Ünïcode volume/1"))
    name = replies[0].object_refs["RscDfn"]
    assert name == "pvc-_n_code_volume_1"
    rd = [d for d in lin.resource_dfn_list_raise().resource_definitions if d.name == name][0]
    assert rd.external_name == "pvc-Ünïcode volume/1"
    err(lin.resource_dfn_create("", external_name="pvc-Ünïcode volume/1"), 517)  # FAIL_EXISTS_EXT_NAME


def test_missing_parents_and_duplicates(controller, cluster):
    lin = cluster
    err(lin.resource_dfn_create("bad name"), 202)  # FAIL_INVLD_RSC_NAME
    err(lin.resource_dfn_create("orphan", resource_group="nope"), 317)  # FAIL_NOT_FOUND_RSC_GRP
    err(lin.volume_dfn_create("missing", 1024), 301)  # FAIL_NOT_FOUND_RSC_DFN
    err(lin.resource_create([linstor.ResourceData("n1", "missing")]), 301)
    ok(lin.resource_dfn_create("dup"))
    err(lin.resource_dfn_create("DUP"), 501)
    ok(lin.volume_dfn_create("dup", 1024, volume_nr=0))
    err(lin.volume_dfn_create("dup", 1024, volume_nr=0), 503)  # FAIL_EXISTS_VLM_DFN
    err(lin.resource_create([linstor.ResourceData("nope", "dup")]), 300)  # FAIL_NOT_FOUND_NODE
    ok(lin.resource_create([linstor.ResourceData("n1", "dup")]))
    err(lin.resource_create([linstor.ResourceData("n1", "dup")]), 502)  # FAIL_EXISTS_RSC
    err(lin.resource_create([linstor.ResourceData("n2", "dup", storage_pool="nosuchpool")]), 310)
    status, _, body = controller.request("GET", "/v1/resource-definitions/missing/volume-definitions")
    assert status == 404  # W10: child collection of a missing parent
    status, _, body = controller.request("GET", "/v1/resource-definitions/dup/resources/n3")
    assert status == 404 and body[0]["ret_code"] & 0x7FFF == 302
    err(lin.resource_delete("n3", "dup"), 302)


def test_volume_sizes_are_checked(controller, lin):
    ok(lin.resource_dfn_create("sz"))
    for bad in (0, -5, 1 << 54):
        status, _, body = controller.request("POST", "/v1/resource-definitions/sz/volume-definitions", {"volume_definition": {"size_kib": bad}})
        assert status == 500 and body[0]["ret_code"] & 0x7FFF == 206, (bad, body)
    status, _, body = controller.request("POST", "/v1/resource-definitions/sz/volume-definitions", {"volume_definition": {"size_kib": "4096"}})
    assert status == 200, body  # VD create answers 200 upstream
    status, _, body = controller.request("POST", "/v1/resource-definitions/sz/volume-definitions", {"volume_definition": {"size_kib": "lots"}})
    assert status == 400


def test_volume_definition_grow_and_shrink_rules(controller, cluster):
    lin = cluster
    ok(lin.resource_dfn_create("grow"))
    ok(lin.volume_dfn_create("grow", 1024))
    ok(lin.volume_dfn_modify("grow", 0, size=512))  # no resources yet: any size
    ok(lin.resource_create([linstor.ResourceData("n1", "grow")]))
    ok(lin.volume_dfn_modify("grow", 0, size=4096))
    err(lin.volume_dfn_modify("grow", 0, size=1024), 206)  # shrinking deployed data is refused
    status, _, body = controller.request("PUT", "/v1/resource-definitions/grow/volume-definitions/0", {"override_props": {"Aux/x": "1"}})
    assert status == 200
    status, _, vd = controller.request("GET", "/v1/resource-definitions/grow/volume-definitions/0")
    # W: missing size = unchanged; the day-0 DRBD generation id is LINSTOR's too.
    assert vd["size_kib"] == 4096 and vd["props"] == {"Aux/x": "1", "DrbdCurrentGi": vd["props"]["DrbdCurrentGi"]}
    assert int(vd["props"]["DrbdCurrentGi"], 16) % 2 == 0
    # A new volume definition appears on existing resources; deleting one removes it.
    ok(lin.volume_dfn_create("grow", 2048, volume_nr=1))
    status, _, r = controller.request("GET", "/v1/resource-definitions/grow/resources/n1")
    assert [v["volume_number"] for v in r["volumes"]] == [0, 1]
    ok(lin.volume_dfn_delete("grow", 1))
    status, _, r = controller.request("GET", "/v1/resource-definitions/grow/resources/n1")
    assert [v["volume_number"] for v in r["volumes"]] == [0]


def test_delete_definition_takes_its_resources(controller, cluster):
    lin = cluster
    ok(lin.resource_dfn_create("cascade"))
    ok(lin.volume_dfn_create("cascade", 1024))
    ok(lin.resource_create([linstor.ResourceData("n1", "cascade"), linstor.ResourceData("n2", "cascade")]))
    ok(lin.resource_dfn_delete("cascade"))
    status, _, body = controller.request("GET", "/v1/view/resources?resources=cascade")
    assert body == []
    status, _, _ = controller.request("GET", "/v1/resource-definitions/cascade")
    assert status == 404
    # LINSTOR (CtrlRscDfnDeleteApiCallHandler): WARN_NOT_FOUND, HTTP 200.
    replies = lin.resource_dfn_delete("cascade")
    assert len(replies) == 1 and replies[0].is_warning() and replies[0].ret_code & 0x7FFF == 3000, replies
    assert replies[0].message == "Resource definition: cascade not found."
    status, _, body = controller.request("DELETE", "/v1/resource-definitions/cascade")
    assert status == 200 and body[0]["obj_refs"]["RscDfn"] == "cascade", body


def test_diskless_resources_go_to_the_diskless_pool(controller, lin):
    # OpenStack Cinder's initialize_connection: a compute node with only
    # its DfltDisklessStorPool, a definition that names DfltStorPool.
    ok(lin.node_create("storage1", "SATELLITE", "127.0.10.1"))
    ok(lin.storage_pool_create("storage1", "DfltStorPool", "FILE_THIN", "/var/lib/cairn-pool"))
    ok(lin.node_create("compute1", "SATELLITE", "127.0.10.2"))
    ok(lin.resource_dfn_create("cinder-vol", layer_list=["drbd", "storage"]))
    ok(lin.resource_dfn_modify("cinder-vol", {"StorPoolName": "DfltStorPool"}))
    ok(lin.volume_dfn_create("cinder-vol", 1024))
    ok(lin.resource_create([linstor.ResourceData("storage1", "cinder-vol")]))
    ok(lin.resource_create([linstor.ResourceData("compute1", "cinder-vol", diskless=True)]))
    status, _, body = controller.request("GET", "/v1/view/resources?resources=cinder-vol&nodes=compute1")
    r = body[0]
    assert "DISKLESS" in r["flags"], r
    assert r["volumes"][0]["storage_pool_name"] == "DfltDisklessStorPool"
    # A diskless pool the request names is taken.
    ok(lin.storage_pool_create("compute1", "clients", "DISKLESS", None))
    ok(lin.node_create("compute2", "SATELLITE", "127.0.10.3"))
    ok(lin.storage_pool_create("compute2", "clients", "DISKLESS", None))
    status, _, body = controller.request("POST", "/v1/resource-definitions/cinder-vol/resources/compute2", {"resource": {"flags": ["DRBD_DISKLESS"], "props": {"StorPoolName": "clients"}}})
    assert status == 201, body
    assert body[0]["message"] == "Successfully set property key(s): StorPoolName", body
    status, _, body = controller.request("GET", "/v1/view/resources?resources=cinder-vol&nodes=compute2")
    assert body[0]["volumes"][0]["storage_pool_name"] == "clients"


def test_diskless_needs_a_layer_that_can_be_diskless(controller, lin):
    ok(lin.node_create("plain1", "SATELLITE", "127.0.10.1"))
    ok(lin.resource_dfn_create("plainrd", layer_list=["storage"]))
    ok(lin.volume_dfn_create("plainrd", 1024))
    replies = lin.resource_create([linstor.ResourceData("plain1", "plainrd", diskless=True)])
    err(replies, 225)  # FAIL_INVLD_LAYER_STACK
    assert "no layer from the given layer-list supports diskless storage pools" in replies[0].message
    status, _, body = controller.request("POST", "/v1/resource-definitions/plainrd/resources/plain1", {"resource": {"flags": ["DRBD_DISKLESS"]}})
    assert status == 500 and body[0]["ret_code"] & 0x7FFF == 225, body
    status, _, body = controller.request("GET", "/v1/view/resources?resources=plainrd")
    assert body == []


def test_resource_object_form_and_props(controller, cluster):
    lin = cluster
    # A diskless replica needs a layer that can be diskless (DRBD).
    ok(lin.resource_dfn_create("obj", layer_list=["drbd", "storage"]))
    ok(lin.volume_dfn_create("obj", 1024))
    status, _, body = controller.request("POST", "/v1/resource-definitions/obj/resources/n2", {"resource": {"flags": ["DRBD_DISKLESS"]}, "layer_list": ["DRBD", "STORAGE"]})
    assert status == 201, body
    status, _, r = controller.request("GET", "/v1/resource-definitions/obj/resources/N2")
    assert r["node_name"] == "n2" and set(r["flags"]) == {"DISKLESS", "DRBD_DISKLESS"}
    ok(lin.resource_modify("n2", "obj", property_dict={"Aux/a": "1"}))
    status, _, body = controller.request("PUT", "/v1/resource-definitions/obj/resources/n2/volumes/0", {"override_props": {"Aux/v": "2"}})
    assert status == 200
    status, _, vols = controller.request("GET", "/v1/resource-definitions/obj/resources/n2/volumes")
    assert vols[0]["props"] == {"Aux/v": "2"}
    status, _, body = controller.request("DELETE", "/v1/resource-definitions/obj/resources/n2?keep_tiebreaker=True")
    assert status == 200
    status, _, body = controller.request("POST", "/v1/resource-definitions/obj/resources/n1", {"resource": {"flags": ["BOGUS"]}})
    assert status == 500


def test_rd_modify(controller, lin):
    ok(lin.resource_group_create("other"))
    ok(lin.resource_dfn_create("mod", port=7100))
    ok(lin.resource_dfn_modify("mod", {"Aux/pm/vmid": "100", "DrbdOptions/Net/protocol": "C"}, resource_group="other"))
    rd = controller.request("GET", "/v1/resource-definitions/mod")[2]
    assert rd["resource_group_name"] == "other"
    assert rd["props"]["Aux/pm/vmid"] == "100"
    # Proxmox sends numbers as property values (W7).
    status, _, _ = controller.request("PUT", "/v1/resource-definitions/mod", {"override_props": {"Aux/pm/vmid": 101}})
    assert status == 200
    assert controller.request("GET", "/v1/resource-definitions/mod")[2]["props"]["Aux/pm/vmid"] == "101"
    err(lin.resource_dfn_modify("mod", {"bad key": "x"}), 213)  # FAIL_INVLD_PROP
    status, _, body = controller.request("POST", "/v1/resource-definitions", {"resource_definition": {"name": "badport"}, "drbd_port": 70000})
    assert status == 500 and body[0]["ret_code"] & 0x7FFF == 203


def test_a_long_list_streams_and_a_client_leaving_midway_costs_nothing(controller, cluster):
    import json
    import socket

    lin = cluster
    for i in range(60):
        ok(lin.resource_dfn_create(f"st{i:03}"))
        ok(lin.volume_dfn_create(f"st{i:03}", 1024))
        ok(lin.resource_create([linstor.ResourceData(n, f"st{i:03}") for n in ("n1", "n2", "n3")]))

    def get(read_all):
        s = socket.create_connection(("127.0.0.1", controller.port), timeout=30)
        s.sendall(b"GET /v1/view/resources HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = s.recv(4096)
        while read_all:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
        s.close()
        return data

    # Clients that hang up after the first bytes: the controller stops
    # writing for them and keeps serving.
    for _ in range(20):
        head = get(False)
        assert head.startswith(b"HTTP/1.1 200"), head[:200]
        assert b"transfer-encoding: chunked" in head.lower(), head[:400]
    raw = get(True)
    header, _, body = raw.partition(b"\r\n\r\n")
    # De-chunk by hand: the array is whole and valid.
    text, rest = b"", body
    while True:
        size, _, rest = rest.partition(b"\r\n")
        n = int(size, 16)
        if n == 0:
            break
        text, rest = text + rest[:n], rest[n + 2:]
    assert len(text) > 64 * 1024, len(text)
    listed = json.loads(text)
    assert len(listed) == 180
    assert [(r["name"], r["node_name"]) for r in listed] == sorted((r["name"], r["node_name"]) for r in listed)
    status, _, body = controller.request("GET", "/v1/view/resources?resources=st007")
    assert status == 200 and [r["node_name"] for r in body] == ["n1", "n2", "n3"]
    status, _, _ = controller.request("GET", "/health")
    assert status == 200
