"""Property changes are checked against LINSTOR's whitelist on every object
kind: unknown keys are refused outside `Aux/` (and the few namespaces
LINSTOR leaves open on some kinds), values by type (boolean, range, symbol,
regex), keys with empty, `.` or `..` path elements always; refused with
LINSTOR's FAIL_INVLD_PROP entry, and nothing is stored."""

import linstor

from conftest import err, ok

FAIL_INVLD_PROP = 213
MASK_ERROR = -(1 << 62)  # 0xC000... as a signed 64-bit number
MASK_CRT, MASK_MOD = 0x1000000, 0x2000000
MASK_CTRL_CONF, MASK_NODE, MASK_RSC_DFN = 0x100000, 0x3C0000, 0x380000


def refused(replies, message=None):
    """The one error entry of a refusal, checked for LINSTOR's code."""
    errors = [r for r in replies if r.is_error()]
    assert len(errors) == 1 and errors[0].ret_code & 0x7FFF == FAIL_INVLD_PROP, [str(r) for r in replies]
    if message is not None:
        assert errors[0].message == message, errors[0].message
    return errors[0]


def props_of(controller, path):
    status, _, body = controller.request("GET", path)
    assert status == 200, body
    return (body[0] if isinstance(body, list) else body).get("props", {})


def test_controller_properties_follow_the_whitelist(controller, lin):
    ok(lin.controller_set_prop("DrbdOptions/Net/protocol", "C"))
    ok(lin.controller_set_prop("Aux/anything/goes", "x"))
    ok(lin.controller_set_prop("Cairn/DefaultLayerStack", "STORAGE"))
    # Booleans are stored the way LINSTOR stores them.
    replies = ok(lin.controller_set_prop("DrbdOptions/AutoEvictAllowEviction", "Yes"))
    assert "to value 'true'" in replies[0].message, replies[0].message
    e = refused(lin.controller_set_prop("NoSuchKey", "1"), "The key 'NoSuchKey' is not whitelisted")
    assert e.ret_code == MASK_ERROR | MASK_CTRL_CONF | MASK_CRT | FAIL_INVLD_PROP, hex(e.ret_code)
    e = refused(lin.controller_set_prop("DrbdOptions/Net/protocol", "D"), "The value 'D' is not valid.")
    assert e.details == "This value has to match (?:A|B|C).", e.details
    refused(lin.controller_set_prop("DrbdOptions/Net/max-buffers", "many"))
    refused(lin.controller_set_prop("Aux/../x", "1"), "Invalid key: Aux/../x")
    refused(lin.controller_del_prop("NoSuchKey"))
    props = lin.controller_props()[0].properties
    assert props["DrbdOptions/Net/protocol"] == "C" and props["DrbdOptions/AutoEvictAllowEviction"] == "true"
    assert "NoSuchKey" not in props and props["Aux/anything/goes"] == "x"
    ok(lin.controller_del_prop("DrbdOptions/Net/protocol"))


def test_definitions_groups_nodes_and_pools_follow_their_whitelists(controller, lin):
    ok(lin.node_create("pn1", "SATELLITE", "127.0.10.250"))
    ok(lin.node_create("pn2", "SATELLITE", "127.0.10.251"))
    ok(lin.storage_pool_dfn_create("ppool"))
    ok(lin.resource_group_create("prg"))
    ok(lin.volume_group_create("prg"))
    ok(lin.resource_dfn_create("prd"))
    ok(lin.volume_dfn_create("prd", 1024))

    # Node: its own keys, Aux/, EBS tags; not a definition's.
    ok(lin.node_modify("pn1", property_dict={"PrefNic": "default", "Aux/rack": "r1", "EBS/Tags/k": "v"}))
    e = refused(lin.node_modify("pn1", property_dict={"Bogus": "1"}), "Invalid property key: Bogus")
    assert e.ret_code == MASK_ERROR | MASK_MOD | MASK_NODE | FAIL_INVLD_PROP, hex(e.ret_code)
    assert e.cause == "The key 'Bogus' is not whitelisted."
    refused(lin.node_modify("pn1", property_dict={"DrbdOptions/Net/protocol": "C"}))
    refused(lin.node_modify("pn1", property_dict={"PrefNic": "x"}))  # PrefNic names an interface: 3-48 characters
    # Deleting a key LINSTOR does not know is refused too.
    refused(lin.node_modify("pn1", delete_props=["Bogus"]), "Invalid property key")
    ok(lin.node_modify("pn1", delete_props=["Aux/rack"]))
    node = lin.node_list_raise(filter_by_nodes=["pn1"]).nodes[0]
    assert node.props.get("PrefNic") == "default" and "Aux/rack" not in node.props and "Bogus" not in node.props

    # Node connection: DRBD net options.
    ok(lin.node_conn_modify("pn1", "pn2", {"DrbdOptions/Net/protocol": "B"}, []))
    refused(lin.node_conn_modify("pn1", "pn2", {"DrbdOptions/Net/protocol": "Z"}, []))
    refused(lin.node_conn_modify("pn1", "pn2", {"PrefNic": "default"}, []))

    # Storage pool definition: ranges of floats.
    ok(lin.storage_pool_dfn_modify("ppool", {"MaxOversubscriptionRatio": "2.5"}))
    refused(lin.storage_pool_dfn_modify("ppool", {"MaxOversubscriptionRatio": "lots"}))
    refused(lin.storage_pool_dfn_modify("ppool", {"DrbdOptions/Net/protocol": "C"}))

    # Resource group and resource definition: the definitions' rules.
    for modify in (lambda p: lin.resource_group_modify("prg", property_dict=p),
                   lambda p: lin.resource_dfn_modify("prd", p)):
        ok(modify({"DrbdOptions/Resource/quorum": "majority", "DrbdOptions/Net/allow-two-primaries": "YES"}))
        ok(modify({"DrbdOptions/Resource/quorum": "2"}))
        refused(modify({"DrbdOptions/Resource/quorum": "most"}))
        refused(modify({"DrbdOptions/Resource/quorum": "33"}))
        refused(modify({"DrbdOptions/Net/allow-two-primaries": "true"}))
        refused(modify({"PeerSlotsNewResource": "32"}))
        refused(modify({"Unknown/Key": "1"}))
        refused(modify({"Aux//x": "1"}))
    e = refused(lin.resource_dfn_modify("prd", {"DrbdOptions/Net/protocol": "D"}),
                "Invalid property(DrbdOptions/Net/protocol) value: D")
    assert e.ret_code == MASK_ERROR | MASK_MOD | MASK_RSC_DFN | FAIL_INVLD_PROP, hex(e.ret_code)
    assert e.cause == "The value 'D' is not valid for the key 'DrbdOptions/Net/protocol'"
    assert e.details == "This value has to match (?:A|B|C)."
    rd = props_of(controller, "/v1/resource-definitions/prd")
    assert rd["DrbdOptions/Resource/quorum"] == "2" and rd["DrbdOptions/Net/allow-two-primaries"] == "yes"
    assert "Unknown/Key" not in rd and "PeerSlotsNewResource" not in rd

    # Volume group and volume definition: the volume definitions' rules.
    for modify in (lambda p: lin.volume_group_modify("prg", 0, property_dict=p),
                   lambda p: lin.volume_dfn_modify("prd", 0, set_properties=p)):
        ok(modify({"DrbdOptions/Disk/resync-after": "other/0", "Aux/x": "1"}))
        refused(modify({"DrbdOptions/Net/protocol": "C"}))
        refused(modify({"Bogus": "1"}))

    # Creates check their properties the same way.
    refused(lin.resource_group_create("prg2", property_dict={"Bogus": "1"}))
    refused(lin.volume_group_create("prg", volume_nr=1, property_dict={"Bogus": "1"}))
    assert [g.name for g in lin.resource_group_list_raise().resource_groups if g.name == "prg2"] == []
    status, _, body = controller.request("POST", "/v1/resource-definitions",
                                         {"resource_definition": {"name": "prd2", "props": {"DrbdOptions/Net/protocol": "D"}}})
    assert status == 500 and body[0]["ret_code"] & 0x7FFF == FAIL_INVLD_PROP, body
    assert controller.request("GET", "/v1/resource-definitions/prd2")[0] == 404
    status, _, body = controller.request("POST", "/v1/resource-definitions",
                                         {"resource_definition": {"name": "prd2", "props": {"DrbdOptions/Net/protocol": "c"}}})
    assert status == 500, body  # symbols are case-sensitive, as in LINSTOR
    status, _, body = controller.request("POST", "/v1/nodes", {"name": "pn3", "type": "SATELLITE", "props": {"Nope": "1"},
                                                               "net_interfaces": [{"name": "default", "address": "127.0.10.252"}]})
    assert status == 500 and body[0]["ret_code"] & 0x7FFF == FAIL_INVLD_PROP, body
    status, _, body = controller.request("POST", "/v1/storage-pool-definitions",
                                         {"storage_pool_name": "ppool2", "props": {"Nope": "1"}})
    assert status == 500 and body[0]["ret_code"] & 0x7FFF == FAIL_INVLD_PROP, body


def test_zfs_strategy_properties_take_linstors_values_on_controller_groups_and_definitions(controller, lin):
    """`StorDriver/Zfs/RollbackStrategy` (Rollback, Clone, Dynamic) and
    `StorDriver/Zfs/DeleteStrategy` (Delete, Rename, Dynamic): LINSTOR's
    whitelist regexes on the controller, resource groups and definitions;
    other values are refused with FAIL_INVLD_PROP and not stored."""
    ok(lin.resource_group_create("zrg"))
    ok(lin.resource_dfn_create("zrd", resource_group="zrg"))
    rollback, delete = "StorDriver/Zfs/RollbackStrategy", "StorDriver/Zfs/DeleteStrategy"
    for v in ("Rollback", "Clone", "Dynamic"):
        ok(lin.controller_set_prop(rollback, v))
    for v in ("Delete", "Rename", "Dynamic"):
        ok(lin.controller_set_prop(delete, v))
    e = refused(lin.controller_set_prop(rollback, "Snapshot"), "The value 'Snapshot' is not valid.")
    assert e.details == "This value has to match (?:Rollback|Clone|Dynamic).", e.details
    refused(lin.controller_set_prop(delete, "Destroy"), "The value 'Destroy' is not valid.")
    refused(lin.controller_set_prop(delete, "delete"))  # the regex is case-sensitive, as LINSTOR's
    props = lin.controller_props()[0].properties
    assert props[rollback] == "Dynamic" and props[delete] == "Dynamic", props
    for modify in (lambda p: lin.resource_group_modify("zrg", property_dict=p),
                   lambda p: lin.resource_dfn_modify("zrd", p)):
        ok(modify({rollback: "Rollback", delete: "Delete"}))
        refused(modify({rollback: "rollback-please"}))
        refused(modify({delete: "Sometimes"}))
    e = refused(lin.resource_dfn_modify("zrd", {delete: "Never"}), f"Invalid property({delete}) value: Never")
    assert e.details == "This value has to match (?:Delete|Rename|Dynamic).", e.details
    for path in ("/v1/resource-groups/zrg", "/v1/resource-definitions/zrd"):
        p = props_of(controller, path)
        assert p[rollback] == "Rollback" and p[delete] == "Delete", (path, p)
    # Nodes and pools do not take them (LINSTOR's whitelist).
    ok(lin.node_create("zn1", "SATELLITE", "127.0.10.249"))
    refused(lin.node_modify("zn1", property_dict={rollback: "Clone"}))


def test_resources_volumes_and_their_connections_follow_their_whitelists(cluster):
    c = cluster
    ok(c.lin.resource_dfn_create("prsc"))
    ok(c.lin.volume_dfn_create("prsc", 4096))
    # A create's properties are checked before anything is made.
    status, _, body = c.ctrl.request("POST", "/v1/resource-definitions/prsc/resources",
                                     [{"resource": {"node_name": "n1", "props": {"Bogus": "1"}}}])
    assert status == 500 and body[0]["ret_code"] & 0x7FFF == FAIL_INVLD_PROP, body
    assert c.ctrl.request("GET", "/v1/resource-definitions/prsc/resources/n1")[0] == 404
    ok(c.lin.resource_create([linstor.ResourceData(n, "prsc") for n in ("n1", "n2")]))

    # Resource.
    ok(c.lin.resource_modify("n1", "prsc", property_dict={"FileSystem/Type": "xfs", "Aux/x": "1"}))
    refused(c.lin.resource_modify("n1", "prsc", property_dict={"FileSystem/Type": "btrfs"}))
    refused(c.lin.resource_modify("n1", "prsc", property_dict={"DrbdOptions/Net/protocol": "C"}))
    refused(c.lin.resource_modify("n1", "prsc", property_dict={"Aux/./x": "1"}), "Invalid key: Aux/./x")
    rsc = props_of(c.ctrl, "/v1/resource-definitions/prsc/resources/n1")
    assert rsc["FileSystem/Type"] == "xfs" and "Aux/./x" not in rsc

    # Volume.
    ok(c.lin.volume_modify("n1", "prsc", 0, {"DrbdOptions/Disk/resync-after": "prsc/0"}))
    refused(c.lin.volume_modify("n1", "prsc", 0, {"Bogus": "1"}))
    refused(c.lin.volume_modify("n1", "prsc", 0, {"FileSystem/Type": "xfs"}))

    # Resource connection: DRBD net options and Paths/.
    ok(c.lin.resource_conn_modify("prsc", "n1", "n2", {"DrbdOptions/Net/max-buffers": "8000"}, []))
    refused(c.lin.resource_conn_modify("prsc", "n1", "n2", {"DrbdOptions/Net/max-buffers": "8"}, []))
    refused(c.lin.resource_conn_modify("prsc", "n1", "n2", {"FileSystem/Type": "xfs"}, []))
    refused(c.lin.resource_conn_modify("prsc", "n1", "n2", {}, ["Bogus"]), "Invalid property key")

    # The storage pool: its own keys, SED/; the backing object still checked.
    ok(c.lin.storage_pool_modify("n1", "DfltStorPool", {"MaxOversubscriptionRatio": "3", "SED/x": "1"}))
    refused(c.lin.storage_pool_modify("n1", "DfltStorPool", {"Bogus": "1"}))
    refused(c.lin.storage_pool_modify("n1", "DfltStorPool", {"StorDriver/WaitTimeoutAfterCreate": "soon"}))

    # Key-value stores take any key (python-linstor's KV, linstor-csi).
    ok(c.lin.keyvaluestore_modify("pkv", property_dict={"any/key": "1", "Bogus": "2"}))
    assert c.lin.keyvaluestore_list("pkv").properties == {"any/key": "1", "Bogus": "2"}
