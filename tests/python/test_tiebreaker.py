"""The auto-tiebreaker through the request sequences of real clients.

A definition with two diskful replicas keeps quorum only with a third,
diskless voter: LINSTOR's automatic tiebreaker, or a diskless replica a
client asked for. linstor-csi (ControllerPublish/Unpublish) and the Proxmox
plugin (activate/deactivate) attach a volume to a node with make-available
and detach it with `DELETE ...?keep_tiebreaker=true`; these tests replay
their requests, as their sources send them (linstor-csi's
pkg/client/linstor.go, the plugin's LINSTORPlugin.pm), against a
controller with four config-only DRBD satellites, and check every
replica's flags and the definition's quorum after every request. Last,
what a delete leaves behind for the replicas that stay: the deleted
replica's DRBD node id, not reused until they have forgotten it."""

import os
import shutil
import subprocess

import linstor
import pytest

from conftest import BIN, ok, run_cluster, wait_for

NODES = ["n1", "n2", "n3", "n4"]
TB = ["DISKLESS", "DRBD_DISKLESS", "TIE_BREAKER"]
CLIENT = ["DISKLESS", "DRBD_DISKLESS"]


@pytest.fixture
def tb_cluster():
    if shutil.which("drbdadm") is None:
        raise RuntimeError("drbdadm not found: install drbd-utils (the test command does)")
    yield from run_cluster("cairn-tb-", {n: "FILE_THIN" for n in NODES}, extra_args=["--drbd-config-only"])


def call(c, method, path, body=None, want=200):
    status, _, reply = c.ctrl.request(method, path, body)
    assert status == want, (method, path, status, reply)
    return reply


def flags(c, rd):
    """{node: sorted flags} of every replica of `rd` (the view CSI reads)."""
    view = call(c, "GET", f"/v1/view/resources?resources={rd}")
    return {r["node_name"]: sorted(r.get("flags", [])) for r in view}


def codes(replies):
    return [r["ret_code"] & 0x7FFF for r in replies]


def spawn_pair(c, rd):
    """Two diskful replicas; the controller adds the tiebreaker. Returns
    (the diskful nodes, the tiebreaker's node, a node without a replica)."""
    call(c, "POST", "/v1/resource-groups", {"name": "pair", "select_filter": {"place_count": 2}}, want=201)
    call(c, "POST", "/v1/resource-groups/pair/volume-groups", {}, want=201)
    call(c, "POST", "/v1/resource-groups/pair/spawn", {"resource_definition_name": rd, "volume_sizes": [16384]}, want=201)
    f = flags(c, rd)
    diskful = sorted(n for n, fl in f.items() if fl == [])
    tb = [n for n, fl in f.items() if fl == TB]
    assert len(diskful) == 2 and len(tb) == 1 and len(f) == 3, f
    free = next(n for n in NODES if n not in f)
    return diskful, tb[0], free


def expect(c, rd, diskful, diskless):
    """The replicas are exactly `diskful` (no flags) and `diskless` (node ->
    flags), and the definition keeps majority quorum."""
    want = {n: [] for n in diskful}
    want.update(diskless)
    assert flags(c, rd) == want
    rd_props = call(c, "GET", f"/v1/resource-definitions/{rd}")["props"]
    assert rd_props["DrbdOptions/Resource/quorum"] == "majority", rd_props


def device_path(c, rd, node):
    view = call(c, "GET", f"/v1/view/resources?resources={rd}&nodes={node}")
    assert len(view) == 1, view
    return view[0]["volumes"][0]["device_path"]


def csi_publish(c, rd, node):
    """linstor-csi 1.12 ControllerPublishVolume: FindByID, the replicas,
    make-available `{}` (golinstor drops `diskful: false`), the replicas
    again for the device path it hands to Kubernetes."""
    call(c, "GET", f"/v1/resource-definitions/{rd}")
    call(c, "GET", f"/v1/resource-definitions/{rd}/volume-definitions")
    call(c, "GET", "/v1/view/resources?limit=0&offset=0")
    call(c, "POST", f"/v1/resource-definitions/{rd}/resources/{node}/make-available", {})
    path = device_path(c, rd, node)
    assert path.startswith("/dev/drbd"), path


def csi_unpublish(c, rd, node):
    """linstor-csi 1.12 ControllerUnpublishVolume: only a replica whose
    volume is DISKLESS goes, with keep_tiebreaker=true."""
    view = call(c, "GET", "/v1/view/resources?limit=0&offset=0")
    mine = [r for r in view if r["name"] == rd and r["node_name"] == node]
    if mine and mine[0]["volumes"][0]["provider_kind"] == "DISKLESS":
        return call(c, "DELETE", f"/v1/resource-definitions/{rd}/resources/{node}?keep_tiebreaker=true")
    return None


def pve_activate(c, rd, node):
    """The Proxmox plugin's activate_volume: ExactSize (best effort), the
    definition (layer check), make-available `{"diskful": false}`."""
    call(c, "PUT", f"/v1/resource-definitions/{rd}", {"override_props": {"DrbdOptions/ExactSize": "False"}})
    call(c, "GET", f"/v1/resource-definitions/{rd}")
    call(c, "POST", f"/v1/resource-definitions/{rd}/resources/{node}/make-available", {"diskful": False})
    assert device_path(c, rd, node).startswith("/dev/drbd")


def pve_deactivate(c, rd, node):
    """The Proxmox plugin's deactivate_volume: a DISKLESS local replica is
    deleted with keep_tiebreaker=True (python's spelling)."""
    view = call(c, "GET", f"/v1/view/resources?resources={rd}")
    mine = [r for r in view if r["node_name"] == node]
    if mine and mine[0]["volumes"][0]["provider_kind"] == "DISKLESS":
        return call(c, "DELETE", f"/v1/resource-definitions/{rd}/resources/{node}?keep_tiebreaker=True")
    return None


def test_csi_publish_and_unpublish_keep_a_tiebreaker_at_every_step(tb_cluster):
    c = tb_cluster
    (d1, d2), tb, free = spawn_pair(c, "pvc-1")
    expect(c, "pvc-1", [d1, d2], {tb: TB})

    # Published on the tiebreaker's node: it becomes a diskless replica the
    # pod uses (LINSTOR clears TIE_BREAKER); no other tiebreaker appears.
    csi_publish(c, "pvc-1", tb)
    expect(c, "pvc-1", [d1, d2], {tb: CLIENT})
    # Unpublished: it turns back into the tiebreaker instead of going.
    replies = csi_unpublish(c, "pvc-1", tb)
    assert codes(replies) == [10006], replies
    expect(c, "pvc-1", [d1, d2], {tb: TB})

    # Published on a node without a replica: a diskless client there, and
    # the tiebreaker is no longer needed.
    csi_publish(c, "pvc-1", free)
    expect(c, "pvc-1", [d1, d2], {free: CLIENT})
    # Unpublished: the client stays as the tiebreaker.
    csi_unpublish(c, "pvc-1", free)
    expect(c, "pvc-1", [d1, d2], {free: TB})

    # Published on a diskful node: nothing changes; unpublish leaves it.
    csi_publish(c, "pvc-1", d1)
    expect(c, "pvc-1", [d1, d2], {free: TB})
    assert csi_unpublish(c, "pvc-1", d1) is None
    expect(c, "pvc-1", [d1, d2], {free: TB})

    # Published twice in a row (a retried RPC) changes nothing either.
    csi_publish(c, "pvc-1", free)
    csi_publish(c, "pvc-1", free)
    expect(c, "pvc-1", [d1, d2], {free: CLIENT})
    csi_unpublish(c, "pvc-1", free)
    expect(c, "pvc-1", [d1, d2], {free: TB})


def test_newer_csi_attach_leaves_an_existing_tiebreaker_alone_and_removes_only_its_own_replica(tb_cluster):
    """linstor-csi after 1.12 (Attach/Detach in pkg/client/linstor.go):
    make-available only where no replica exists, the new replica marked
    Aux/csi-created-for=temporary-diskless-attach on volume 0, and Detach
    deletes only such a replica (no keep_tiebreaker)."""
    c = tb_cluster
    (d1, d2), tb, free = spawn_pair(c, "pvc-2")

    def attach(node):
        existing = [r for r in call(c, "GET", "/v1/resource-definitions/pvc-2/resources") if r["node_name"] == node]
        if not existing or "INACTIVE" in existing[0].get("flags", []):
            call(c, "POST", f"/v1/resource-definitions/pvc-2/resources/{node}/make-available", {})
            if not existing:
                call(c, "PUT", f"/v1/resource-definitions/pvc-2/resources/{node}/volumes/0",
                     {"override_props": {"Aux/csi-created-for": "temporary-diskless-attach"}})
        vol = call(c, "GET", f"/v1/resource-definitions/pvc-2/resources/{node}/volumes/0")
        assert vol["device_path"].startswith("/dev/drbd"), vol

    def detach(node):
        vol = call(c, "GET", f"/v1/resource-definitions/pvc-2/resources/{node}/volumes/0")
        if vol.get("props", {}).get("Aux/csi-created-for") == "temporary-diskless-attach" and vol["provider_kind"] == "DISKLESS":
            call(c, "DELETE", f"/v1/resource-definitions/pvc-2/resources/{node}?keep_tiebreaker=false")

    attach(tb)
    expect(c, "pvc-2", [d1, d2], {tb: TB})
    detach(tb)
    expect(c, "pvc-2", [d1, d2], {tb: TB})
    attach(free)
    expect(c, "pvc-2", [d1, d2], {free: CLIENT})
    # Deleted without keep_tiebreaker, it still becomes the tiebreaker, as
    # in LINSTOR: the definition needs one and this replica is diskless.
    detach(free)
    expect(c, "pvc-2", [d1, d2], {free: TB})


def test_proxmox_activate_and_deactivate_keep_a_tiebreaker_at_every_step(tb_cluster):
    c = tb_cluster
    (d1, d2), tb, free = spawn_pair(c, "vm-100-disk-1")
    for node in [tb, free, tb]:
        pve_activate(c, "vm-100-disk-1", node)
        expect(c, "vm-100-disk-1", [d1, d2], {node: CLIENT})
        pve_deactivate(c, "vm-100-disk-1", node)
        expect(c, "vm-100-disk-1", [d1, d2], {node: TB})
    # Activated where the data is: nothing to do, nothing to undo.
    pve_activate(c, "vm-100-disk-1", d2)
    assert pve_deactivate(c, "vm-100-disk-1", d2) is None
    expect(c, "vm-100-disk-1", [d1, d2], {tb: TB})


def test_deleting_the_tiebreaker(tb_cluster):
    c = tb_cluster
    (d1, d2), tb, free = spawn_pair(c, "tbdel")
    # keep_tiebreaker: it stays.
    replies = call(c, "DELETE", f"/v1/resource-definitions/tbdel/resources/{tb}?keep_tiebreaker=True")
    assert codes(replies) == [10006], replies
    expect(c, "tbdel", [d1, d2], {tb: TB})
    # So it does through the CLI (`linstor r d --keep-tiebreaker`).
    cli = subprocess.run([BIN, "r", "d", "--keep-tiebreaker", tb, "tbdel"], capture_output=True, text=True,
                         env=dict(os.environ, LS_CONTROLLERS=c.ctrl.url), timeout=120)
    assert cli.returncode == 0 and "tiebreaker" in cli.stdout + cli.stderr, (cli.stdout, cli.stderr)
    expect(c, "tbdel", [d1, d2], {tb: TB})
    # Without: it goes, and the definition's auto-tiebreaker is switched
    # off so that it does not come back (LINSTOR's INFO_PROP_SET).
    replies = call(c, "DELETE", f"/v1/resource-definitions/tbdel/resources/{tb}")
    assert codes(replies)[0] == 10002 and "Disabling auto-tiebreaker" in replies[0]["message"], replies
    assert flags(c, "tbdel") == {d1: [], d2: []}
    props = call(c, "GET", "/v1/resource-definitions/tbdel")["props"]
    assert props["DrbdOptions/auto-add-quorum-tiebreaker"] == "False"
    assert props["DrbdOptions/Resource/quorum"] == "off"
    # keep_tiebreaker on a client being deleted switches it on again and
    # keeps the client as the tiebreaker.
    call(c, "POST", f"/v1/resource-definitions/tbdel/resources/{free}/make-available", {})
    expect(c, "tbdel", [d1, d2], {free: CLIENT})
    replies = call(c, "DELETE", f"/v1/resource-definitions/tbdel/resources/{free}?keep_tiebreaker=true")
    assert codes(replies) == [10002, 10006], replies
    expect(c, "tbdel", [d1, d2], {free: TB})
    assert call(c, "GET", "/v1/resource-definitions/tbdel")["props"]["DrbdOptions/auto-add-quorum-tiebreaker"] == "True"


def test_resource_modify_sets_and_clears_the_tiebreaker_flag(tb_cluster):
    """REST API 1.28's `drbd_tiebreaker` of a resource modify, as LINSTOR's
    DrbdLayerUtils.setTiebreaker."""
    c = tb_cluster
    (d1, d2), tb, free = spawn_pair(c, "tbmod")
    path = f"/v1/resource-definitions/tbmod/resources/{tb}"
    call(c, "PUT", path, {"drbd_tiebreaker": False})
    # A diskless replica the user keeps: it still gives quorum, and no
    # other tiebreaker appears.
    expect(c, "tbmod", [d1, d2], {tb: CLIENT})
    call(c, "PUT", path, {"drbd_tiebreaker": True})
    expect(c, "tbmod", [d1, d2], {tb: TB})
    status, _, replies = c.ctrl.request("PUT", path, {"drbd_tiebreaker": True, "drbd_client": True})
    assert status == 500 and codes(replies) == [230], (status, replies)
    status, _, replies = c.ctrl.request("PUT", f"/v1/resource-definitions/tbmod/resources/{d1}", {"drbd_tiebreaker": True})
    assert status == 500 and codes(replies) == [230], (status, replies)
    expect(c, "tbmod", [d1, d2], {tb: TB})


def test_a_deleted_replicas_node_id_waits_for_every_peer_to_forget_it(tb_cluster):
    """A node id freed by a delete is handed out again only once every
    diskful replica left has forgotten it (`drbdsetup forget-peer`; a
    config-only satellite has nothing to forget and reports it when it
    applies the delete). While n2 is offline it cannot, so id 2 stays
    taken: not chosen for a new replica, refused when asked for."""
    c = tb_cluster
    call(c, "POST", "/v1/resource-definitions", {"resource_definition": {"name": "ids"}}, want=201)
    call(c, "POST", "/v1/resource-definitions/ids/volume-definitions", {"volume_definition": {"size_kib": 16384}})
    call(c, "POST", "/v1/resource-definitions/ids/resources",
         [{"resource": {"node_name": n}} for n in ["n1", "n2", "n3"]], want=201)

    def node_ids():
        view = call(c, "GET", "/v1/view/resources?resources=ids")
        return {r["node_name"]: r["layer_object"]["drbd"]["node_id"] for r in view}

    assert node_ids() == {"n1": 0, "n2": 1, "n3": 2}
    c.sats["n2"].stop()
    wait_for("n2 offline", lambda: any(n.name == "n2" and n.connection_status != "ONLINE" for n in c.lin.node_list_raise().nodes))
    status, _, replies = c.ctrl.request("DELETE", "/v1/resource-definitions/ids/resources/n3")
    assert status == 200, replies
    # Two diskful replicas left: the tiebreaker on n4 does not get id 2.
    assert node_ids() == {"n1": 0, "n2": 1, "n4": 3}, node_ids()
    ask = [{"resource": {"node_name": "n3"}, "drbd_node_id": 2}]
    status, _, replies = c.ctrl.request("POST", "/v1/resource-definitions/ids/resources", ask)
    assert status == 500 and "not forgotten yet" in replies[0]["message"], replies
    # n2 returns, applies its state and reports id 2 forgotten.
    c.sats["n2"].start()
    wait_for("n2 online", lambda: all(n.connection_status == "ONLINE" for n in c.lin.node_list_raise().nodes))

    def created():
        status, _, replies = c.ctrl.request("POST", "/v1/resource-definitions/ids/resources", ask)
        return status == 201
    wait_for("node id 2 free again", created)
    assert node_ids() == {"n1": 0, "n2": 1, "n3": 2}, node_ids()


def test_drbd_client_through_python_linstor(tb_cluster):
    """REST API 1.28's DRBD client: python-linstor's drbd_client on create,
    modify and toggle-disk. A client is a diskless replica with the DRBD
    CLIENT flag; it is no tiebreaker, so the tiebreaker of a pair stays
    beside it, and goes once the replica is a plain diskless one."""
    c = tb_cluster
    (d1, d2), tb, free = spawn_pair(c, "cl")

    def drbd_flags(node):
        view = call(c, "GET", f"/v1/view/resources?resources=cl&nodes={node}")
        return view[0]["layer_object"]["drbd"]["flags"]

    ok(c.lin.resource_create([linstor.ResourceData(free, "cl", drbd_client=True)]))
    expect(c, "cl", [d1, d2], {tb: TB, free: CLIENT})
    assert drbd_flags(free) == ["DISKLESS", "CLIENT"]
    # No longer a client: it takes the tiebreaker's place.
    ok(c.lin.resource_modify(free, "cl", drbd_client=False))
    expect(c, "cl", [d1, d2], {free: CLIENT})
    assert drbd_flags(free) == ["DISKLESS"]
    # Toggled into a client (flags only, it is diskless already): a
    # tiebreaker comes back on the last node.
    ok(c.lin.resource_toggle_disk(free, "cl", drbd_client=True))
    expect(c, "cl", [d1, d2], {tb: TB, free: CLIENT})
    assert drbd_flags(free) == ["DISKLESS", "CLIENT"]
    replies = c.lin.resource_toggle_disk(free, "cl", drbd_client=True)
    assert replies[0].ret_code & 0x7FFF == 10007 and replies[0].message.endswith("is already a diskless client"), replies
    # A replica with a disk cannot be one.
    status, _, replies = c.ctrl.request("PUT", f"/v1/resource-definitions/cl/resources/{d1}", {"drbd_client": True})
    assert status == 500 and codes(replies) == [230], (status, replies)


def test_nodes_report_platform_and_os_variant(tb_cluster):
    with open("/etc/os-release") as f:
        pretty = next(line.split("=", 1)[1].strip().strip('"') for line in f if line.startswith("PRETTY_NAME="))
    nodes = call(tb_cluster, "GET", "/v1/nodes")
    assert {(n["name"], n.get("platform"), n.get("os_variant")) for n in nodes} == {(n, "LINUX", pretty) for n in NODES}
