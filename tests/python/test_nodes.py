"""Nodes, net interfaces, node connections, through python-linstor."""

from conftest import err, ok


def make(lin, name, ip="127.0.10.1", props=None):
    return ok(lin.node_create(name, "SATELLITE", ip, property_dict=props))


def test_node_create_list_get(controller, lin):
    replies = make(lin, "Alpha", props={"Aux/site": "a"})
    # The keys set first (CtrlPropsHelper.fillProperties), then the node.
    assert [r.message for r in replies] == ["Successfully set property key(s): Aux/site", "New node 'Alpha' registered."]
    assert [r.ret_code for r in replies] == [20709377, 20709377]  # MASK_CRT | MASK_NODE | CREATED
    assert [r.message for r in make(lin, "Beta", ip="127.0.10.2")] == ["New node 'Beta' registered."]
    nodes = lin.node_list_raise(filter_by_nodes=["Alpha"]).nodes
    assert [n.name for n in nodes] == ["Alpha"]
    n = nodes[0]
    assert n.type == "SATELLITE"
    assert n.connection_status == "OFFLINE"
    assert n.props["Aux/site"] == "a"
    nif = n.net_interfaces[0]
    assert (nif.name, nif.address, nif.stlt_port, nif.stlt_encryption_type, nif.is_active) == (
        "default", "127.0.10.1", 3366, "PLAIN", True)
    # Case-insensitive lookup, original spelling echoed (W9).
    status, _, body = controller.request("GET", "/v1/nodes/ALPHA")
    assert status == 200 and body["name"] == "Alpha"


def test_every_satellite_gets_the_diskless_pool(lin):
    make(lin, "n1")
    pools = lin.storage_pool_list_raise(filter_by_nodes=["n1"]).storage_pools
    assert [(p.name, p.provider_kind) for p in pools] == [("DfltDisklessStorPool", "DISKLESS")]
    assert pools[0].free_space_mgr_name == "n1;DfltDisklessStorPool"


def test_duplicate_node_is_refused(lin):
    make(lin, "dup")
    err(lin.node_create("DUP", "SATELLITE", "127.0.10.1"), 500)  # FAIL_EXISTS_NODE


def test_bad_node_input_is_refused_with_linstor_codes(controller, lin):
    err(lin.node_create("bad name", "SATELLITE", "127.0.10.1"), 200)  # FAIL_INVLD_NODE_NAME
    err(lin.node_create("x", "SATELLITE", "127.0.10.1"), 200)
    err(lin.node_create("host-1", "SATELLITE", "not-an-ip"), 210)  # FAIL_INVLD_NET_ADDR
    status, _, body = controller.request("POST", "/v1/nodes", {"name": "t1", "type": "spaceship", "net_interfaces": [{"name": "default", "address": "127.0.10.1"}]})
    assert status == 500 and body[0]["ret_code"] & 0x7FFF == 201  # FAIL_INVLD_NODE_TYPE
    status, _, body = controller.request("POST", "/v1/nodes", {"name": "t2", "type": "satellite", "net_interfaces": [{"name": "default", "address": "127.0.10.1", "satellite_port": 70000}]})
    assert status == 500 and body[0]["ret_code"] & 0x7FFF == 211  # FAIL_INVLD_NET_PORT
    assert lin.node_list_raise().nodes == []


def test_node_type_is_case_insensitive(controller):
    status, _, body = controller.request("POST", "/v1/nodes", {"name": "gonode", "type": "Satellite", "net_interfaces": [{"name": "default", "address": "::1", "satellite_port": 3366, "satellite_encryption_type": "Plain"}]})
    assert status == 201, body
    status, _, node = controller.request("GET", "/v1/nodes/gonode")
    assert node["type"] == "SATELLITE"
    assert node["net_interfaces"][0]["address"] == "::1"


def test_node_modify_props_and_namespaces(lin):
    make(lin, "m1", props={"Aux/a": "1", "Aux/ns/x": "2", "Aux/ns/y": "3"})
    ok(lin.node_modify("m1", property_dict={"Aux/b": "2"}, delete_props=["Aux/a"]))
    props = lin.node_list_raise(filter_by_nodes=["m1"]).nodes[0].props
    assert props == {"Aux/b": "2", "Aux/ns/x": "2", "Aux/ns/y": "3", "CurStltConnName": "default"}


def test_node_delete_namespace_raw(controller, lin):
    make(lin, "m2", props={"Aux/ns/x": "2", "Aux/keep": "1"})
    status, _, _ = controller.request("PUT", "/v1/nodes/m2", {"delete_namespaces": ["Aux/ns"]})
    assert status == 200
    assert lin.node_list_raise(filter_by_nodes=["m2"]).nodes[0].props == {"Aux/keep": "1", "CurStltConnName": "default"}


def test_node_filters_are_server_side(controller, lin):
    make(lin, "f1", props={"Aux/zone": "a"})
    make(lin, "f2", props={"Aux/zone": "b"})
    make(lin, "f3")
    names = lambda resp: sorted(n.name for n in resp.nodes)
    assert names(lin.node_list_raise(filter_by_nodes=["f1", "F3"])) == ["f1", "f3"]
    assert names(lin.node_list_raise(filter_by_props=["Aux/zone"])) == ["f1", "f2"]
    assert names(lin.node_list_raise(filter_by_props=["Aux/zone=b"])) == ["f2"]
    status, _, body = controller.request("GET", "/v1/nodes?limit=2&offset=1")
    assert [n["name"] for n in body] == ["f2", "f3"]
    status, _, body = controller.request("GET", "/v1/nodes?limit=0&offset=2")
    assert len(body) == 3  # limit 0 = unlimited, offset ignored (W8)


def test_node_delete_and_missing(controller, lin):
    make(lin, "gone")
    ok(lin.node_delete("gone"))
    assert lin.node_list_raise().nodes == []
    # LINSTOR (CtrlNodeDeleteApiCallHandler): a warning, not an error.
    replies = lin.node_delete("gone")
    assert [r.ret_code & 0x7FFF for r in replies] == [3000] and replies[0].is_warning(), replies  # WARN_NOT_FOUND
    assert replies[0].message == "Deletion of node 'gone' had no effect."
    status, _, body = controller.request("DELETE", "/v1/nodes/gone")
    assert status == 200 and body[0]["cause"] == "Node 'gone' does not exist.", body


def test_node_delete_follows_linstors_rules_for_resources(controller, lin):
    make(lin, "busy")
    make(lin, "client", ip="127.0.10.2")
    ok(lin.storage_pool_create("busy", "sp1", "FILE_THIN", "/var/tmp/cairn-pool"))
    status, _, body = controller.request("POST", "/v1/resource-definitions", {"resource_definition": {"name": "r-busy", "layer_data": [{"type": "DRBD"}, {"type": "STORAGE"}]}})
    assert status == 201, body
    ok(lin.volume_dfn_create("r-busy", 1024))
    status, _, body = controller.request("POST", "/v1/resource-definitions/r-busy/resources/busy", {"resource": {"props": {"StorPoolName": "sp1"}}})
    assert status == 201, body
    status, _, body = controller.request("POST", "/v1/resource-definitions/r-busy/resources/client", {"resource": {"flags": ["DRBD_DISKLESS"]}})
    assert status == 201, body
    # The last diskful replica still serves a diskless one: refused, with
    # LINSTOR's entry for the resource and FAIL_NODE_HAS_USED_RSC.
    replies = lin.node_delete("busy")
    codes = [r.ret_code & 0x7FFF for r in replies if r.is_error()]
    assert codes == [997, 233], replies  # FAIL_IN_USE, FAIL_NODE_HAS_USED_RSC
    assert replies[0].message == "Last resource of 'r-busy' with disk still has diskless resources attached."
    assert replies[1].message == "Cannot delete node, because it has in use or last diskful resources."
    status, _, _ = controller.request("DELETE", "/v1/nodes/busy")
    assert status == 500
    assert sorted(n.name for n in lin.node_list_raise().nodes) == ["busy", "client"]
    # A node whose replicas are not needed any more goes with them.
    ok(lin.node_delete("client"))
    status, _, body = controller.request("GET", "/v1/view/resources?resources=r-busy")
    assert [(r["node_name"]) for r in body] == ["busy"]
    ok(lin.node_delete("busy"))
    assert lin.node_list_raise().nodes == []
    status, _, body = controller.request("GET", "/v1/view/resources")
    assert body == []
    status, _, body = controller.request("GET", "/v1/view/storage-pools")
    assert body == []
    assert [d.name for d in lin.resource_dfn_list_raise().resource_definitions] == ["r-busy"]


def test_node_lost_cascades(controller, lin):
    make(lin, "lostnode")
    ok(lin.storage_pool_create("lostnode", "sp1", "FILE_THIN", "/var/tmp/cairn-pool"))
    ok(lin.resource_dfn_create("r-lost"))
    ok(lin.volume_dfn_create("r-lost", 1024))
    status, _, body = controller.request("POST", "/v1/resource-definitions/r-lost/resources/lostnode", {"resource": {"props": {"StorPoolName": "sp1"}}})
    assert status == 201, body
    ok(lin.node_lost("lostnode"))
    assert lin.node_list_raise().nodes == []
    status, _, body = controller.request("GET", "/v1/view/resources")
    assert body == []


def test_setting_properties_answers_linstors_entries(controller, lin):
    make(lin, "propnode")
    replies = ok(lin.node_modify("propnode", property_dict={"Aux/b": "2", "Aux/a": "1"}))
    # CtrlPropsHelper.fillProperties' entry, then the "modified" entry; the
    # node is offline, and node changes warn about no connection (LINSTOR
    # updates only online satellites for them).
    assert [r.message for r in replies] == ["Successfully set property key(s): Aux/a,Aux/b", "Node 'propnode' modified."], replies
    assert replies[0].ret_code == 0x3C0000 | 0x1000000 | 1  # MASK_NODE | MASK_CRT | CREATED
    assert not [r for r in replies if r.is_warning()]
    # Deleting properties alone has no "set" entry.
    replies = ok(lin.node_modify("propnode", delete_props=["Aux/a"]))
    assert [r.message for r in replies] == ["Node 'propnode' modified."]
    ok(lin.netinterface_create("propnode", "second", "127.0.10.5", port=3367))
    assert not [r for r in lin.netinterface_modify("propnode", "second", ip="127.0.10.6") if r.is_warning()]

    ok(lin.storage_pool_create("propnode", "sp1", "FILE_THIN", "/var/tmp/cairn-pool"))
    ok(lin.resource_group_create("proprg"))
    ok(lin.volume_group_create("proprg"))
    ok(lin.resource_dfn_create("proprd", resource_group="proprg"))
    ok(lin.volume_dfn_create("proprd", 1024))
    status, _, body = controller.request("POST", "/v1/resource-definitions/proprd/resources/propnode", {"resource": {"props": {"StorPoolName": "sp1"}}})
    assert status == 201, body
    masks = {
        "resource definition": (lin.resource_dfn_modify("proprd", {"Aux/x": "1"}), 0x380000),
        "resource group": (lin.resource_group_modify("proprg", property_dict={"Aux/x": "1"}), 0x440000),
        "volume group": (lin.volume_group_modify("proprg", 0, property_dict={"Aux/x": "1"}), 0x480000),
        "volume definition": (lin.volume_dfn_modify("proprd", 0, set_properties={"Aux/x": "1"}), 0x300000),
        "resource": (lin.resource_modify("propnode", "proprd", {"Aux/x": "1"}), 0x340000),
        "storage pool": (lin.storage_pool_modify("propnode", "sp1", property_dict={"Aux/x": "1"}), 0x140000),
        "storage pool definition": (lin.storage_pool_dfn_modify("sp1", property_dict={"Aux/x": "1"}), 0x180000),
    }
    for what, (replies, mask) in masks.items():
        ok(replies)
        first = replies[0]
        assert first.message == "Successfully set property key(s): Aux/x", (what, replies)
        assert first.ret_code == mask | 0x1000000 | 1, (what, hex(first.ret_code))
        assert "modified" in replies[1].message, (what, replies)
    # Creates name the keys they set too.
    replies = ok(lin.storage_pool_create("propnode", "sp2", "FILE_THIN", "/var/tmp/cairn-pool2"))
    assert replies[0].message == "Successfully set property key(s): StorDriver/StorPoolName", replies  # as python-linstor sends it
    assert replies[0].ret_code == 0x140000 | 0x1000000 | 1
    status, _, body = controller.request("POST", "/v1/resource-definitions", {"resource_definition": {"name": "proprd2", "props": {"Aux/y": "2"}}})
    assert status == 201 and body[0]["message"] == "Successfully set property key(s): Aux/y", body
    replies = ok(lin.resource_group_create("proprg2", property_dict={"Aux/z": "3"}))
    assert replies[0].message == "Successfully set property key(s): Aux/z", replies
    replies = ok(lin.controller_set_prop("Aux/x", "1"))
    assert replies[0].message == "Successfully set property 'Aux/x' to value '1'"


def test_nodes_carry_cur_stlt_conn_name_and_linstors_type(controller, lin):
    make(lin, "connnode")
    n = lin.node_list_raise(filter_by_nodes=["connnode"]).nodes[0]
    assert n.props["CurStltConnName"] == "default"
    assert n.type == "SATELLITE"
    ok(lin.netinterface_create("connnode", "fast", "127.0.10.5", port=3366))
    status, _, body = controller.request("PUT", "/v1/nodes/connnode/net-interfaces/fast", {"is_active": True})
    assert status == 200, body
    status, _, node = controller.request("GET", "/v1/nodes/connnode")
    assert node["props"]["CurStltConnName"] == "fast"
    ok(lin.netinterface_delete("connnode", "fast"))
    assert lin.node_list_raise(filter_by_nodes=["connnode"]).nodes[0].props["CurStltConnName"] == "default"
    # Types as LINSTOR's Node.Type names them, whatever case was sent.
    for name, sent, shown in [("cmb1", "Combined", "COMBINED"), ("ctl1", "controller", "CONTROLLER"), ("aux1", "Auxiliary", "AUXILIARY")]:
        status, _, body = controller.request("POST", "/v1/nodes", {"name": name, "type": sent, "net_interfaces": [{"name": "default", "address": "127.0.10.9", "satellite_port": 3366}]})
        assert status == 201, body
        status, _, node = controller.request("GET", f"/v1/nodes/{name}")
        assert node["type"] == shown


def test_net_interfaces(controller, lin):
    make(lin, "nif1")
    ok(lin.netinterface_create("nif1", "second", "127.0.10.5", port=3367, com_type="SSL"))
    status, _, body = controller.request("GET", "/v1/nodes/nif1/net-interfaces")
    assert sorted(i["name"] for i in body) == ["default", "second"]
    assert [i["name"] for i in body if i["is_active"]] == ["default"]
    ok(lin.netinterface_modify("nif1", "second", ip="127.0.10.6"))
    status, _, body = controller.request("GET", "/v1/nodes/nif1/net-interfaces/second")
    assert body["address"] == "127.0.10.6" and body["satellite_port"] == 3367
    err(lin.netinterface_create("nif1", "second", "127.0.10.7"), 505)  # FAIL_EXISTS_NET_IF
    ok(lin.netinterface_delete("nif1", "second"))
    err(lin.netinterface_delete("nif1", "default"), 997)  # the last satellite connection stays
    err(lin.netinterface_delete("nif1", "nope"), 305)


def test_node_connections(controller, lin):
    make(lin, "ca")
    make(lin, "cb")
    ok(lin.node_conn_modify("cb", "ca", {"DrbdOptions/Net/protocol": "C"}, []))
    conns = lin.node_conn_list_raise().node_connections
    assert len(conns) == 1
    assert (conns[0].node_a, conns[0].node_b) == ("ca", "cb")
    assert conns[0].properties["DrbdOptions/Net/protocol"] == "C"
    status, _, body = controller.request("GET", "/v1/node-connections?node_a=cb")
    assert len(body) == 1
    status, _, body = controller.request("PUT", "/v1/node-connections/ca/nope", {"override_props": {"a": "b"}})
    assert status == 404
    # Deleting a node removes its connections.
    ok(lin.node_delete("cb"))
    status, _, body = controller.request("GET", "/v1/node-connections")
    assert body == []
