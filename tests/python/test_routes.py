"""The remaining LINSTOR routes through python-linstor and raw REST:
resource connections (down to the generated `.res` files), resource
activate/deactivate, resource-group adjust/adjustall, node reconnect,
controller and node config, and the stats endpoints."""

import os
import re
import shutil

import linstor
import pytest

from conftest import err, ok, run_cluster, wait_for
from test_drbd import dump, view

FAIL_NOT_FOUND_NODE = 300
FAIL_NOT_FOUND_RSC_DFN = 301
FAIL_NOT_FOUND_RSC = 302
FAIL_NOT_FOUND_RSC_CONN = 307
FAIL_NOT_FOUND_RSC_GRP = 317
FAIL_INVLD_PROP = 213
FAIL_INVLD_REQUEST = 234
FAIL_NOT_CONNECTED = 995
INFO_NOOP = 10007
WARN_NODE_EVICTED = 1017


@pytest.fixture
def drbd_cluster():
    if shutil.which("drbdadm") is None:
        raise RuntimeError("drbdadm not found: install drbd-utils (the test command does)")
    yield from run_cluster("cairn-routes-", {n: "FILE_THIN" for n in ("n1", "n2", "n3")}, extra_args=["--drbd-config-only"])


def connection_of(text, peer):
    """The `connection { ... }` section of a drbdadm dump that names `peer`."""
    for block in re.findall(r"connection \{.*?\n    \}", text, re.S):
        if re.search(rf"host {peer}\s", block):
            return block
    raise AssertionError(f"no connection to {peer} in {text}")


# Resource connections.

def test_resource_connections_list_every_pair_and_keep_properties(controller, lin):
    for n in ("rc-a", "rc-b", "rc-c"):
        ok(lin.node_create(n, "SATELLITE", "127.0.10.9"))
    ok(lin.resource_dfn_create("rcon", layer_list=["drbd", "storage"]))
    ok(lin.resource_create([linstor.ResourceData(n, "rcon", diskless=True) for n in ("rc-a", "rc-b", "rc-c")]))
    conns = lin.resource_conn_list_raise("rcon").resource_connections
    assert sorted((c.node_a, c.node_b) for c in conns) == [("rc-a", "rc-b"), ("rc-a", "rc-c"), ("rc-b", "rc-c")]
    assert all(not c.properties for c in conns)

    ok(lin.resource_conn_modify("rcon", "rc-c", "rc-a", {"DrbdOptions/Net/protocol": "A", "Aux/x": "1"}, []))
    one = lin.resource_conn_node_list_raise("rcon", "rc-a", "rc-c")
    assert (one.node_a, one.node_b) == ("rc-a", "rc-c")
    assert one.properties == {"DrbdOptions/Net/protocol": "A", "Aux/x": "1"}
    ok(lin.resource_conn_modify("rcon", "rc-a", "rc-c", {}, ["Aux/x"]))
    assert lin.resource_conn_node_list_raise("rcon", "rc-c", "rc-a").properties == {"DrbdOptions/Net/protocol": "A"}
    listed = {(c.node_a, c.node_b): c.properties for c in lin.resource_conn_list_raise("rcon").resource_connections}
    assert listed[("rc-a", "rc-c")] == {"DrbdOptions/Net/protocol": "A"} and listed[("rc-a", "rc-b")] == {}

    # The raw shape is LINSTOR's ResourceConnection.
    status, _, body = controller.request("GET", "/v1/resource-definitions/rcon/resource-connections/rc-a/rc-c")
    assert status == 200 and set(body) >= {"node_a", "node_b", "props", "flags"}, body

    # Refusals with LINSTOR's codes.
    err(lin.resource_conn_modify("rcon", "rc-a", "rc-b", {"Paths/p1/rc-c": "default"}, []), FAIL_INVLD_PROP)
    err(lin.resource_conn_modify("rcon", "rc-a", "rc-b", {"Paths/p1/rc-a": "nope"}, []), FAIL_INVLD_PROP)
    err(lin.resource_conn_modify("nope", "rc-a", "rc-b", {"Aux/x": "1"}, []), FAIL_NOT_FOUND_RSC_DFN)
    err(lin.resource_conn_modify("rcon", "rc-a", "rc-zz", {"Aux/x": "1"}, []), FAIL_NOT_FOUND_NODE)
    status, _, body = controller.request("GET", "/v1/resource-definitions/rcon/resource-connections/rc-a/rc-a")
    assert status == 404 and body[0]["ret_code"] & 0x7FFF == FAIL_NOT_FOUND_RSC_CONN, body
    status, _, body = controller.request("GET", "/v1/resource-definitions/nope/resource-connections")
    assert status == 200 and body == [], body

    # A connection goes with its resource.
    ok(lin.resource_delete("rc-c", "rcon"))
    assert [(c.node_a, c.node_b) for c in lin.resource_conn_list_raise("rcon").resource_connections] == [("rc-a", "rc-b")]
    err(lin.resource_conn_modify("rcon", "rc-a", "rc-c", {"Aux/x": "1"}, []), FAIL_NOT_FOUND_RSC)
    ok(lin.resource_create([linstor.ResourceData("rc-c", "rcon", diskless=True)]))
    assert lin.resource_conn_node_list_raise("rcon", "rc-a", "rc-c").properties == {}, "no stale properties come back"


def test_resource_connection_paths_and_options_reach_only_their_pair(drbd_cluster):
    c = drbd_cluster
    for i, n in enumerate(["n1", "n2"], start=1):
        ok(c.lin.netinterface_create(n, "repl", f"127.0.2.{i}"))
    ok(c.lin.resource_dfn_create("rcres", layer_list=["drbd", "storage"]))
    ok(c.lin.volume_dfn_create("rcres", 8192))
    ok(c.lin.resource_create([linstor.ResourceData(n, "rcres") for n in ("n1", "n2", "n3")]))
    ok(c.lin.resource_conn_modify("rcres", "n2", "n1", {
        "Paths/p1/n1": "repl", "Paths/p1/n2": "repl",
        "DrbdOptions/Net/protocol": "A", "DrbdOptions/PeerDevice/c-max-rate": "51200"}, []))
    for node, peer in (("n1", "n2"), ("n2", "n1")):
        conn = connection_of(dump(c, node, "rcres"), peer)
        assert conn.count("path {") == 1, conn
        assert re.search(r"host n1\s+address\s+ipv4 127\.0\.2\.1:\d+;", conn), conn
        assert re.search(r"host n2\s+address\s+ipv4 127\.0\.2\.2:\d+;", conn), conn
        assert re.search(r"protocol\s+A;", conn), conn
        assert re.search(r"c-max-rate\s+51200;", conn), conn
    # The pairs with n3 keep the plain connection.
    for node, peer in (("n1", "n3"), ("n3", "n2")):
        conn = connection_of(dump(c, node, "rcres"), peer)
        assert "path {" not in conn and "protocol" not in conn and "c-max-rate" not in conn, conn
    # Deleting the properties takes them out of the files again.
    ok(c.lin.resource_conn_modify("rcres", "n1", "n2", {}, ["DrbdOptions/Net/protocol", "Paths/p1/n1", "Paths/p1/n2"]))
    conn = connection_of(dump(c, "n1", "rcres"), "n2")
    assert "protocol" not in conn and "path {" not in conn and "c-max-rate" in conn, conn


# Activate / deactivate.

def test_deactivate_and_activate_a_drbd_resource(drbd_cluster):
    c = drbd_cluster
    ok(c.lin.resource_dfn_create("act", layer_list=["drbd", "storage"]))
    ok(c.lin.volume_dfn_create("act", 8192))
    ok(c.lin.resource_create([linstor.ResourceData(n, "act") for n in ("n1", "n2")]))
    res_file = os.path.join(c.root, "n2", "drbd.d", "act.res")
    assert os.path.exists(res_file)
    ok(c.lin.resource_deactivate("n2", "act"))
    assert "INACTIVE" in view(c, "act")["n2"]["flags"]
    assert "INACTIVE" not in view(c, "act")["n1"]["flags"]
    # The storage and the configuration stay; the peer still knows it.
    assert os.path.exists(res_file)
    assert "on n2" in dump(c, "n1", "act")
    assert view(c, "act")["n2"]["volumes"][0].get("device_path"), view(c, "act")["n2"]
    again = c.lin.resource_deactivate("n2", "act")
    assert any(r.ret_code & 0x7FFF == INFO_NOOP and not r.is_error() for r in again), [str(r) for r in again]
    ok(c.lin.resource_activate("n2", "act"))
    assert "INACTIVE" not in view(c, "act")["n2"]["flags"]
    err(c.lin.resource_activate("n9", "act"), FAIL_NOT_FOUND_NODE)


# Resource-group adjust.

def test_resource_group_adjust_and_adjustall(cluster):
    lin = cluster.lin
    ok(lin.resource_group_create("adj", place_count=1))
    ok(lin.volume_group_create("adj"))
    ok(lin.resource_group_create("adj2", place_count=1))
    ok(lin.volume_group_create("adj2"))
    ok(lin.resource_group_spawn("adj", "adj-a", ["4M"]))
    ok(lin.resource_group_spawn("adj2", "adj-b", ["4M"]))
    count = lambda rd: len(lin.resource_list_raise(filter_by_resources=[rd]).resources)
    assert (count("adj-a"), count("adj-b")) == (1, 1)
    ok(lin.resource_group_modify("adj", place_count=2))
    ok(lin.resource_group_modify("adj2", place_count=3))
    ok(lin.resource_group_adjust("adj"))
    assert (count("adj-a"), count("adj-b")) == (2, 1), "only the named group"
    ok(lin.resource_group_adjust(None))
    assert (count("adj-a"), count("adj-b")) == (2, 3)
    # The new replicas are real devices.
    vols = lin.volume_list_raise(filter_by_resources=["adj-b"]).resources
    assert all(v.volumes[0].device_path for v in vols), vols
    err(lin.resource_group_adjust("nope"), FAIL_NOT_FOUND_RSC_GRP)


# Node reconnect.

def test_node_reconnect_connects_again_and_sends_the_full_state(cluster):
    lin = cluster.lin
    ok(lin.resource_group_create("recon", place_count=1))
    ok(lin.volume_group_create("recon"))
    ok(lin.resource_group_spawn("recon", "recon-r", ["4M"]))
    node = lin.resource_list_raise(filter_by_resources=["recon-r"]).resources[0].node_name
    # The controller logs each link state change; a reconnect starts a new link.
    connects = lambda: len(re.findall(rf"satellite connection.*node={node.upper()}\b.*to=\"?CONNECTED", cluster.ctrl.log()))
    before = connects()
    assert before >= 1, cluster.ctrl.log()
    replies = ok(lin.node_reconnect([node]))
    assert any(f"Nodes [{node}] will be reconnected." == r.message for r in replies), [str(r) for r in replies]
    # The reply came once the node was ONLINE again, over a new connection.
    assert connects() > before, cluster.ctrl.log()
    assert lin.node_list_raise(filter_by_nodes=[node]).nodes[0].connection_status == "ONLINE"
    assert not any(r.is_warning() for r in replies), [str(r) for r in replies]
    assert lin.volume_list_raise(filter_by_resources=["recon-r"]).resources[0].volumes[0].device_path
    err(lin.node_reconnect(["nope"]), FAIL_NOT_FOUND_NODE)
    # A node whose satellite is not there: reconnected, but not online.
    ok(lin.node_create("recon-gone", "SATELLITE", "127.0.10.9", port=1))
    replies = ok(lin.node_reconnect(["recon-gone"]))
    assert any(r.is_warning() and "not connected again yet" in r.message for r in replies), [str(r) for r in replies]


# Config.

def test_controller_config_shape_and_log_level(controller, lin):
    status, _, cfg = controller.request("GET", "/v1/controller/config")
    assert status == 200, cfg
    assert cfg["http"] == {"enabled": True, "listen_address": "127.0.0.1", "port": controller.port}
    assert cfg["log"]["level"] == "INFO" and cfg["log"]["level_linstor"] == "INFO", cfg
    assert cfg["db"]["connection_url"].endswith("cairn.db"), cfg
    ok(lin.controller_set_log_level("DEBUG"))
    status, _, cfg = controller.request("GET", "/v1/controller/config")
    assert (cfg["log"]["level"], cfg["log"]["level_linstor"]) == ("INFO", "DEBUG"), cfg
    ok(lin.controller_set_log_level("WARN", library=True))
    status, _, cfg = controller.request("GET", "/v1/controller/config")
    assert (cfg["log"]["level"], cfg["log"]["level_linstor"]) == ("WARN", "DEBUG"), cfg
    # The new level is in effect: a debug line of the controller appears
    # (a change commits a batch, logged at debug level).
    ok(lin.resource_dfn_create("debug-line"))
    wait_for("a debug line", lambda: " DEBUG " in controller.log())
    # Global without satellites: the controller alone.
    replies = ok(lin.controller_set_log_level("INFO", glob=True))
    assert len(replies) == 1 and "Controller log level set to WARN (libraries) and INFO (Cairn)" in replies[0].message, replies
    # A satellite node that is not connected is said so.
    ok(lin.node_create("cfg-off", "SATELLITE", "127.0.10.9", port=3399))
    replies = ok(lin.controller_set_log_level("INFO", glob=True))
    assert any(r.is_warning() and "cfg-off" in r.message for r in replies), [str(r) for r in replies]
    # Refusals.
    # Refused input answers 500, as LINSTOR maps every error outside 300-499.
    status, _, body = controller.request("PUT", "/v1/controller/config", {"log": {"level": "LOUD"}})
    assert status == 500 and body[0]["ret_code"] & 0x7FFF == FAIL_INVLD_REQUEST, body
    status, _, body = controller.request("PUT", "/v1/controller/config", {"http": {"port": 1}})
    assert status == 500 and body[0]["ret_code"] & 0x7FFF == FAIL_INVLD_REQUEST and "http" in body[0]["message"], body
    status, _, body = controller.request("PUT", "/v1/controller/config", {})
    assert status == 500 and "changes nothing" in body[0]["message"], body
    status, _, body = controller.request("PUT", "/v1/controller/config", raw_body=b"{not json")
    assert status == 400, body


def test_node_config_shape_and_refusal(controller, lin):
    ok(lin.node_create("cfg-n", "SATELLITE", "127.0.10.9", port=3399))
    status, _, cfg = controller.request("GET", "/v1/nodes/cfg-n/config")
    assert status == 200, cfg
    assert cfg["net"] == {"bind_address": "127.0.10.9", "port": 3399, "com_type": "PLAIN"}, cfg
    assert cfg["stlt_override_node_name"] == "cfg-n"
    assert "log" not in cfg, "no satellite to ask"
    err(lin.node_set_log_level("cfg-n", "DEBUG"), FAIL_NOT_CONNECTED)
    status, _, body = controller.request("PUT", "/v1/nodes/cfg-n/config", {"net": {"port": 1}})
    assert status == 500 and body[0]["ret_code"] & 0x7FFF == FAIL_INVLD_REQUEST and "net" in body[0]["message"], body
    status, _, body = controller.request("GET", "/v1/nodes/nope/config")
    assert status == 404 and body[0]["ret_code"] & 0x7FFF == FAIL_NOT_FOUND_NODE, body


def test_satellite_log_levels_change_at_run_time(cluster):
    c = cluster
    for n in ("n1", "n2", "n3"):
        status, _, cfg = c.ctrl.request("GET", f"/v1/nodes/{n}/config")
        assert status == 200 and cfg["log"] == {"level": "INFO", "level_linstor": "INFO"}, cfg
    ok(c.lin.node_set_log_level("n2", "DEBUG"))
    status, _, cfg = c.ctrl.request("GET", "/v1/nodes/n2/config")
    assert cfg["log"] == {"level": "INFO", "level_linstor": "DEBUG"}, cfg
    status, _, cfg = c.ctrl.request("GET", "/v1/nodes/n1/config")
    assert cfg["log"]["level_linstor"] == "INFO", "only n2"
    # The satellite logs at debug level now (its commands, for one).
    ok(c.lin.resource_dfn_create("lvl-r"))
    ok(c.lin.volume_dfn_create("lvl-r", 4096))
    ok(c.lin.resource_create([linstor.ResourceData("n2", "lvl-r")]))
    wait_for("a debug line in n2's log", lambda: " DEBUG " in c.sats["n2"].log())
    assert " DEBUG " not in c.sats["n1"].log()
    # Global: the controller and every satellite.
    replies = ok(c.lin.controller_set_log_level("WARN", library=True, glob=True))
    assert sum("Satellite" in r.message for r in replies) == 3, [str(r) for r in replies]
    for n in ("n1", "n2", "n3"):
        assert c.ctrl.request("GET", f"/v1/nodes/{n}/config")[2]["log"]["level"] == "WARN"
    assert c.ctrl.request("GET", "/v1/controller/config")[2]["log"]["level"] == "WARN"
    err(c.lin.node_set_log_level("n1", "LOUD"), FAIL_INVLD_REQUEST)


# Stats.

def test_stats_count_the_objects(controller, lin):
    def stats(kind):
        status, _, body = controller.request("GET", f"/v1/stats/{kind}")
        assert status == 200, body
        return body["count"]

    base = {k: stats(k) for k in ("nodes", "resource-definitions", "resource-groups", "resources", "storage-pools")}
    assert base["resource-groups"] == 1, "DfltRscGrp"
    ok(lin.node_create("st-a", "SATELLITE", "127.0.10.9"))
    ok(lin.node_create("st-b", "SATELLITE", "127.0.10.9"))
    ok(lin.resource_group_create("st-rg"))
    ok(lin.resource_dfn_create("st-rd", resource_group="st-rg", layer_list=["drbd", "storage"]))
    ok(lin.resource_create([linstor.ResourceData(n, "st-rd", diskless=True) for n in ("st-a", "st-b")]))
    assert stats("nodes") == base["nodes"] + 2
    assert stats("resource-groups") == base["resource-groups"] + 1
    assert stats("resource-definitions") == base["resource-definitions"] + 1
    assert stats("resources") == base["resources"] + 2
    # Each node got its DfltDisklessStorPool for the diskless resources.
    status, _, pools = controller.request("GET", "/v1/view/storage-pools")
    assert stats("storage-pools") == len(pools)


def test_space_report_sums_the_pools_and_the_provisioned_volumes(cluster):
    """`GET /v1/space-report` (python-linstor's space_reporting_query, the
    upstream `linstor space-reporting query`, `cairn spr q`): a text with
    every pool's figures as the pool list shows them, the provisioned size
    of every diskful volume, and a SHA-256 that checks the text."""
    import hashlib
    import subprocess

    from conftest import BIN

    c = cluster
    ok(c.lin.resource_dfn_create("spr-r"))
    ok(c.lin.volume_dfn_create("spr-r", 8192))
    ok(c.lin.volume_dfn_create("spr-r", 4096))
    ok(c.lin.resource_create([linstor.ResourceData(n, "spr-r", storage_pool="DfltStorPool") for n in ("n1", "n3")]))
    pools = lambda: c.ctrl.request("GET", "/v1/view/storage-pools")[2]
    wait_for("capacities", lambda: all("total_capacity" in p for p in pools() if p["provider_kind"] != "DISKLESS"))
    reply = c.lin.space_reporting_query()
    text = reply[0].report
    lines = text.splitlines()
    assert lines[0] == "Cairn space report", text
    assert "Nodes: 3" in lines, text
    assert "Diskful replicas: 2" in lines and "Provisioned KiB (volume sizes x diskful replicas): 24576" in lines, text
    body, last = text.rsplit("SHA-256 of the lines above: ", 1)
    assert hashlib.sha256(body.encode()).hexdigest() == last.strip(), text
    # Each pool's line: provider and total as the pool list shows them
    # (diskless pools have no capacity: "-").
    for p in pools():
        row = next((ln.split() for ln in lines if ln.split()[:2] == [p["node_name"], p["storage_pool_name"]]), None)
        assert row is not None and row[2] == p["provider_kind"], (p, text)
        assert row[3] == str(p.get("total_capacity", "-")), (p, text)
    total = sum(p.get("total_capacity", 0) for p in pools())
    reported = int(next(ln for ln in lines if ln.startswith("Total capacity KiB: ")).split(": ")[1])
    assert reported == total and total > 0, (reported, total)
    env = dict(os.environ, LS_CONTROLLERS=c.ctrl.url)
    p = subprocess.run([BIN, "--no-color", "spr", "q"], capture_output=True, text=True, env=env, timeout=60)
    assert p.returncode == 0 and p.stdout.startswith("Cairn space report\n") and "Diskful replicas: 2" in p.stdout, (p.stdout, p.stderr)
