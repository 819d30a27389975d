"""Controller properties and key-value stores."""

import linstor

from conftest import err, ok


def test_controller_properties(controller, lin):
    ok(lin.controller_set_prop("Autoplacer/Weights/MaxFreeSpace", "2"))
    ok(lin.controller_set_prop("DrbdOptions/Net/max-buffers", "8000"))
    # python-linstor wraps the GET's object map into a ControllerProperties.
    props = lin.controller_props()[0].properties
    assert props["Autoplacer/Weights/MaxFreeSpace"] == "2"
    status, _, body = controller.request("GET", "/v1/controller/properties")
    assert status == 200 and isinstance(body, dict)  # an object map, not a list
    ok(lin.controller_del_prop("Autoplacer/Weights/MaxFreeSpace"))
    assert "Autoplacer/Weights/MaxFreeSpace" not in lin.controller_props()[0].properties
    status, _, body = controller.request("POST", "/v1/controller/properties", {"override_props": {"Aux/a": "1"}})
    assert status == 201  # upstream answers 201 here
    status, _, body = controller.request("POST", "/v1/controller/properties", {"delete_namespaces": ["DrbdOptions"]})
    assert "DrbdOptions/Net/max-buffers" not in controller.request("GET", "/v1/controller/properties")[2]


def test_key_value_store(controller, lin):
    replies = ok(lin.keyvaluestore_modify("proxmox", property_dict={"vm/100": "disk-1", "vm/101": "disk-2"}))
    # LINSTOR's CtrlKvsApiCallHandler entry.
    assert [(r.message, r.ret_code) for r in replies] == [("Successfully updated properties", 0x100000 | 0x2000000 | 3)]
    ok(lin.keyvaluestore_modify("proxmox", delete_props=["vm/101"]))
    kv = lin.keyvaluestore_list("proxmox")
    assert kv.properties == {"vm/100": "disk-1"}
    status, _, body = controller.request("GET", "/v1/key-value-store/PROXMOX")
    assert status == 200 and isinstance(body, list) and body[0]["name"] == "proxmox"  # W10
    status, _, body = controller.request("GET", "/v1/key-value-store/none")
    assert status == 404
    # The high-level KV class.
    k = linstor.KV("csi", uri=controller.url)
    k["snap/a"] = "1"
    assert linstor.KV("csi", uri=controller.url)["snap/a"] == "1"
    status, _, body = controller.request("DELETE", "/v1/key-value-store/csi")
    assert status == 200
    assert [i["name"] for i in controller.request("GET", "/v1/key-value-store")[2]] == ["proxmox"]
    # An instance whose last key goes is removed, as in LINSTOR.
    ok(lin.keyvaluestore_modify("emptied", property_dict={"a": "1"}))
    ok(lin.keyvaluestore_modify("emptied", delete_props=["a"]))
    assert controller.request("GET", "/v1/key-value-store/emptied")[0] == 404
