"""The `cairn` CLI against a real controller and satellites: LINSTOR's
command tree, tables, machine output, errors and exit codes."""

import re
import json
import os
import subprocess

import linstor

from conftest import BIN, ok, wait_for


def cairn(c, *args):
    env = dict(os.environ, LS_CONTROLLERS=c.ctrl.url)
    env.pop("NO_COLOR", None)
    p = subprocess.run([BIN, *args], capture_output=True, text=True, env=env, timeout=120)
    return p.returncode, p.stdout, p.stderr


def test_node_list_golden_table(cluster):
    code, out, err = cairn(cluster, "--no-utf8", "--no-color", "node", "list")
    assert code == 0, err
    addrs = [f"127.0.10.{i}:{cluster.sats[f'n{i}'].port} (PLAIN)" for i in (1, 2, 3)]
    w = max(len(a) for a in addrs)
    rows = [f"| n{i}   | SATELLITE | {a:<{w}} | Online |" for i, a in enumerate(addrs, start=1)]
    rule = "+" + "-" * (len(rows[0]) - 2) + "+"
    header = f"| Node | NodeType  | {'Addresses':<{w}} | State  |"
    assert out == "\n".join([rule, header, "|" + "=" * (len(rule) - 2) + "|", *rows, rule]) + "\n"
    code, out, _ = cairn(cluster, "n", "l", "-n", "n2")  # aliases and filters
    assert code == 0 and "n2" in out and "n1" not in out
    assert "╭" in out, "UTF-8 borders by default"


def test_spawn_list_and_delete(cluster):
    c = cluster
    code, out, err = cairn(c, "rg", "c", "cli-rg", "--place-count", "2")
    assert code == 0 and "SUCCESS" in out, err
    code, out, err = cairn(c, "rg", "spawn", "cli-rg", "clivol", "16M")
    assert code == 0, err
    assert "autoplaced on 2 node(s)" in out
    code, out, _ = cairn(c, "--no-color", "r", "l", "-r", "clivol")
    rows = [l for l in out.splitlines() if "clivol" in l]
    assert len(rows) == 2 and all("UpToDate" in r and "Unused" in r for r in rows), out
    code, out, _ = cairn(c, "--no-color", "v", "l", "-r", "clivol")
    assert out.count("/dev/loop") == 2 and "0 KiB" in out, out
    code, out, _ = cairn(c, "vd", "l", "-r", "clivol")
    assert "16 MiB" in out
    code, out, err = cairn(c, "vd", "set-size", "clivol", "0", "32M")
    assert code == 0, err
    code, out, _ = cairn(c, "-m", "v", "l", "-r", "clivol")
    data = json.loads(out)
    assert {v["usable_size_kib"] for r in data for v in r["volumes"]} == {32 * 1024}
    code, out, err = cairn(c, "r", "d", "n1", "n2", "n3", "clivol")
    # One of the three has no replica: that delete is a not-found error.
    assert code == 10 and "not found" in err
    code, out, err = cairn(c, "rd", "d", "clivol")
    assert code == 0 and "deleted" in out, err
    code, out, _ = cairn(c, "r", "l", "-r", "clivol")
    assert code == 0 and "ResourceName" in out and "clivol" not in out


def test_errors_print_cause_and_correction_with_exit_code_10(cluster):
    code, out, err = cairn(cluster, "node", "create", "bad name", "127.0.10.9")
    assert code == 10
    assert "ERROR:" in err and "Cause:" in err and "Correction:" in err and "'bad name'" in err
    code, out, err = cairn(cluster, "rg", "spawn", "DfltRscGrp", "toolarge", "1P", "--place-count", "3")
    assert code == 10 and "Not enough available nodes" in err and "Cause:" in err


def test_connection_errors_exit_20():
    env = dict(os.environ, LS_CONTROLLERS="127.0.0.1:1")
    p = subprocess.run([BIN, "node", "list"], capture_output=True, text=True, env=env, timeout=60)
    assert p.returncode == 20
    assert "could not reach a controller" in p.stderr


def test_machine_readable_output_is_the_rest_json(cluster):
    code, out, _ = cairn(cluster, "-m", "sp", "l", "-s", "DfltStorPool")
    pools = json.loads(out)
    assert sorted(p["node_name"] for p in pools) == ["n1", "n2", "n3"]
    assert all(p["free_capacity"] > 0 for p in pools)
    # -m prints the replies as JSON and exits 0 even on API errors (upstream).
    code, out, _ = cairn(cluster, "-m", "rd", "d", "does-not-exist")
    assert code == 0 and json.loads(out)[0]["ret_code"] < 0


def test_properties_kv_and_controller(cluster):
    c = cluster
    assert cairn(c, "c", "sp", "Aux/cli", "yes")[0] == 0
    code, out, _ = cairn(c, "--no-utf8", "c", "lp")
    assert re.search(r"\| Aux/cli +\| yes +\|", out), out
    assert cairn(c, "c", "sp", "Aux/cli")[0] == 0  # no value deletes
    code, out, _ = cairn(c, "c", "lp")
    assert code == 0 and "Key" in out and "Aux/cli" not in out
    assert cairn(c, "n", "sp", "n1", "Aux/rack", "r1")[0] == 0
    assert "n1" in cairn(c, "n", "l", "--props", "Aux/rack=r1")[1]
    assert cairn(c, "kv", "m", "cli-kv", "a", "1")[0] == 0
    assert "| a   | 1     |" in cairn(c, "--no-utf8", "kv", "s", "cli-kv")[1]
    code, out, _ = cairn(c, "c", "v")
    assert code == 0 and "REST API 1.28.0" in out


def test_sort_by_a_column_and_empty_lists(cluster):
    c = cluster
    code, out, _ = cairn(c, "--no-color", "--sort-by", "Node", "--no-utf8", "sp", "l", "-s", "DfltStorPool")
    nodes = [l.split("|")[2].strip() for l in out.splitlines() if "DfltStorPool " in l]
    assert nodes == ["n1", "n2", "n3"], out
    code, out, err = cairn(c, "--sort-by", "Nope", "n", "l")
    assert code == 1 and "no column 'Nope'" in err
    # Cairn writes no error reports and keeps no remotes or schedules: the
    # lists are empty tables (and `-m` shows LINSTOR's empty shapes).
    code, out, err = cairn(c, "--no-utf8", "error-reports", "list")
    assert code == 0 and "| Id " in out and "Exception" in out and out.count("\n") == 4, (out, err)
    assert json.loads(cairn(c, "-m", "err", "l")[1]) == []
    code, out, err = cairn(c, "--no-utf8", "remote", "list")
    assert code == 0 and "| Name " in out and out.count("\n") == 4, (out, err)
    assert json.loads(cairn(c, "-m", "remote", "l")[1]) == {}
    code, out, err = cairn(c, "--no-utf8", "schedule", "list")
    assert code == 0 and "Incremental" in out and out.count("\n") == 4, (out, err)
    assert json.loads(cairn(c, "-m", "schedule", "l")[1]) == {}


def test_diskless_and_make_available_refusals_through_the_cli(cluster):
    # These satellites have no DRBD: a diskless replica has no layer to
    # live in, and LINSTOR says so; make-available then needs a diskful
    # pool, and without one answers the text OpenNebula's add-on matches.
    c = cluster
    ok(c.lin.resource_group_create("clinopool", storage_pool=["nosuchpool"]))
    ok(c.lin.resource_dfn_create("clidl", resource_group="clinopool"))
    ok(c.lin.volume_dfn_create("clidl", 4096))
    code, out, err = cairn(c, "r", "c", "--diskless", "n1", "clidl")
    assert code == 10, (out, err)
    assert "no layer from the given layer-list supports diskless storage pools" in err
    code, out, err = cairn(c, "r", "make-available", "n1", "clidl")
    assert code == 10, (out, err)
    assert "Autoplacer could not find diskful stor pool on node n1 matching resource-groups autoplace-settings" in err
    status, _, body = c.ctrl.request("GET", "/v1/view/resources?resources=clidl")
    assert body == []


def test_resource_connection_activate_adjust_reconnect_and_log_level_verbs(cluster):
    c = cluster
    code, out, err = cairn(c, "rg", "c", "cli-adj", "--place-count", "1")
    assert code == 0, err
    code, out, err = cairn(c, "rg", "spawn", "cli-adj", "cliadj", "8M")
    assert code == 0, err
    code, out, err = cairn(c, "rg", "modify", "cli-adj", "--place-count", "2")
    assert code == 0, err
    code, out, err = cairn(c, "rg", "adjust", "cli-adj")
    assert code == 0 and "autoplaced on 1 node(s)" in out, (out, err)
    nodes = sorted(r["node_name"] for r in json.loads(cairn(c, "-m", "r", "l", "-r", "cliadj")[1]))
    assert len(nodes) == 2, nodes
    code, out, err = cairn(c, "rg", "adjust")  # every group
    assert code == 0, err
    code, out, err = cairn(c, "rg", "adjust", "no-such-rg")
    assert code == 10 and "not found" in err.lower(), err

    # Resource connections.
    a, b = nodes
    code, out, err = cairn(c, "rc", "sp", a, b, "cliadj", "DrbdOptions/Net/protocol", "A")
    assert code == 0 and "SUCCESS" in out, (out, err)
    code, out, err = cairn(c, "--no-color", "--no-utf8", "resource-connection", "list", "cliadj")
    assert code == 0 and re.search(rf"\| {a}\s+\| {b}\s+\| DrbdOptions/Net/protocol=A", out), out
    code, out, err = cairn(c, "-m", "rc", "lp", b, a, "cliadj")
    assert code == 0 and json.loads(out) == {"DrbdOptions/Net/protocol": "A"}, out
    code, out, err = cairn(c, "rc", "sp", a, b, "cliadj", "DrbdOptions/Net/protocol")
    assert code == 0, err
    assert json.loads(cairn(c, "-m", "rc", "lp", a, b, "cliadj")[1]) == {}
    code, out, err = cairn(c, "rc", "path", "create", a, b, "cliadj", "p1", "default", "default")
    assert code == 0, err
    code, out, err = cairn(c, "--no-color", "--no-utf8", "rc", "path", "list", b, a, "cliadj")
    assert code == 0 and re.search(rf"\| p1\s+\| {a}:default, {b}:default", out), out
    code, out, err = cairn(c, "rc", "path", "create", a, b, "cliadj", "p2", "default", "nope")
    assert code == 10 and "NetInterface for node unknown" in err, err
    code, out, err = cairn(c, "rc", "path", "delete", a, b, "cliadj", "p1")
    assert code == 0, err
    assert json.loads(cairn(c, "-m", "rc", "path", "list", a, b, "cliadj")[1]) == {}

    # Deactivate / activate show in the state column.
    code, out, err = cairn(c, "r", "deactivate", a, "cliadj")
    assert code == 0, err
    code, out, _ = cairn(c, "--no-color", "--no-utf8", "r", "l", "-r", "cliadj")
    assert re.search(rf"\| cliadj\s+\| {a}\s+\|.*INACTIVE", out), out
    code, out, err = cairn(c, "r", "activate", a, "cliadj")
    assert code == 0, err
    code, out, _ = cairn(c, "--no-color", "--no-utf8", "r", "l", "-r", "cliadj")
    assert "INACTIVE" not in out, out

    # Node reconnect and the controller's log level.
    code, out, err = cairn(c, "node", "reconnect", a, b)
    assert code == 0 and f"Nodes [{a}] will be reconnected." in out and f"Nodes [{b}]" in out, (out, err)
    wait_for("nodes online again", lambda: json.loads(cairn(c, "-m", "n", "l")[1]) and all(
        n["connection_status"] == "ONLINE" for n in json.loads(cairn(c, "-m", "n", "l")[1])))
    code, out, err = cairn(c, "controller", "set-log-level", "DEBUG")
    assert code == 0, err
    status, _, cfg = c.ctrl.request("GET", "/v1/controller/config")
    assert cfg["log"]["level_linstor"] == "DEBUG", cfg
    code, out, err = cairn(c, "controller", "set-log-level", "LOUD")
    assert code == 10 and "not a log level" in err, err
    code, out, err = cairn(c, "node", "set-log-level", a, "TRACE")
    assert code == 0 and f"Satellite '{a}' log level set to INFO (libraries) and TRACE (Cairn)." in out, (out, err)
    assert c.ctrl.request("GET", f"/v1/nodes/{a}/config")[2]["log"]["level_linstor"] == "TRACE"


def test_node_connection_verbs(cluster):
    c = cluster
    code, out, err = cairn(c, "nc", "sp", "n2", "n1", "DrbdOptions/Net/protocol", "A")
    assert code == 0 and "SUCCESS" in out, (out, err)
    code, out, err = cairn(c, "--no-color", "--no-utf8", "node-connection", "list")
    assert code == 0 and re.search(r"\| n1\s+\| n2\s+\| DrbdOptions/Net/protocol=A", out), out
    assert [x["node_b"] for x in json.loads(cairn(c, "-m", "nc", "l", "n2")[1])] == ["n2"]
    assert json.loads(cairn(c, "-m", "nc", "l", "n3")[1]) == []
    code, out, err = cairn(c, "-m", "nc", "lp", "n1", "n2")
    assert code == 0 and json.loads(out) == {"DrbdOptions/Net/protocol": "A"}, out
    code, out, err = cairn(c, "nc", "path", "create", "n1", "n2", "p1", "default", "default")
    assert code == 0, err
    code, out, err = cairn(c, "--no-color", "--no-utf8", "nc", "path", "list", "n2", "n1")
    assert code == 0 and re.search(r"\| p1\s+\| n1:default, n2:default", out), out
    code, out, err = cairn(c, "nc", "path", "delete", "n1", "n2", "p1")
    assert code == 0, err
    code, out, err = cairn(c, "nc", "sp", "n1", "n2", "DrbdOptions/Net/protocol")
    assert code == 0, err
    assert json.loads(cairn(c, "-m", "nc", "lp", "n2", "n1")[1]) == {}
    code, out, err = cairn(c, "nc", "sp", "n1", "nx", "Aux/a", "1")
    assert code == 10 and "not found" in err.lower(), err


def machine(c, *args):
    code, out, err = cairn(c, "-m", *args)
    assert code == 0, (args, out, err)
    return json.loads(out)


def rest(c, path):
    status, _, body = c.ctrl.request("GET", path)
    assert status == 200, (path, body)
    return body


def test_list_and_set_property_on_every_object_kind(cluster):
    c = cluster
    ok(c.lin.resource_group_create("pg", place_count=1))
    ok(c.lin.volume_group_create("pg"))
    ok(c.lin.resource_group_spawn("pg", "pv", ["8M"]))
    (node,) = [r["node_name"] for r in rest(c, "/v1/view/resources?resources=pv")]
    objects = {
        "n": (["n1"], "/v1/nodes/n1"),
        "sp": (["n1", "DfltStorPool"], "/v1/nodes/n1/storage-pools/DfltStorPool"),
        "rd": (["pv"], "/v1/resource-definitions/pv"),
        "rg": (["pg"], "/v1/resource-groups/pg"),
        "vd": (["pv", "0"], "/v1/resource-definitions/pv/volume-definitions/0"),
        "vg": (["pg", "0"], "/v1/resource-groups/pg/volume-groups/0"),
        "r": ([node, "pv"], f"/v1/resource-definitions/pv/resources/{node}"),
        "v": ([node, "pv", "0"], f"/v1/resource-definitions/pv/resources/{node}/volumes/0"),
    }
    for kind, (names, path) in objects.items():
        code, out, err = cairn(c, kind, "set-property", *names, "Aux/cli", kind)
        assert code == 0 and "SUCCESS" in out, (kind, out, err)
        # On that object and no other.
        assert rest(c, path)["props"]["Aux/cli"] == kind, kind
        assert machine(c, kind, "list-properties", *names)["Aux/cli"] == kind
        code, out, _ = cairn(c, "--no-utf8", "--no-color", kind, "lp", *names)
        assert re.search(rf"\| Aux/cli +\| {kind} +\|", out), (kind, out)
        code, out, err = cairn(c, kind, "sp", *names, "Aux/cli")
        assert code == 0, (kind, err)
        assert "Aux/cli" not in machine(c, kind, "lp", *names) and "Aux/cli" not in rest(c, path)["props"], kind
    code, out, err = cairn(c, "vd", "lp", "pv", "7")
    assert code == 10, (out, err)


def test_drbd_options_and_max_volume_sizes(cluster):
    c = cluster
    ok(c.lin.resource_group_create("og", place_count=2))
    ok(c.lin.volume_group_create("og"))
    ok(c.lin.resource_group_spawn("og", "ov", ["8M"]))
    a, b = sorted(r["node_name"] for r in rest(c, "/v1/view/resources?resources=ov"))
    code, out, err = cairn(c, "rd", "drbd-options", "--protocol", "C", "--max-buffers=8000", "ov")
    assert code == 0 and "SUCCESS" in out, (out, err)
    props = rest(c, "/v1/resource-definitions/ov")["props"]
    assert props["DrbdOptions/Net/protocol"] == "C" and props["DrbdOptions/Net/max-buffers"] == "8000", props
    code, out, err = cairn(c, "rd", "opt", "ov", "--unset-protocol")
    assert code == 0, err
    assert "DrbdOptions/Net/protocol" not in rest(c, "/v1/resource-definitions/ov")["props"]
    code, out, err = cairn(c, "rg", "opt", "--verify-alg", "crc32c", "og")
    assert code == 0, err
    assert rest(c, "/v1/resource-groups/og")["props"]["DrbdOptions/Net/verify-alg"] == "crc32c"
    code, out, err = cairn(c, "vd", "opt", "--al-extents", "6007", "ov", "0")
    assert code == 0, err
    assert rest(c, "/v1/resource-definitions/ov/volume-definitions/0")["props"]["DrbdOptions/Disk/al-extents"] == "6007"
    code, out, err = cairn(c, "controller", "drbd-options", "--max-buffers", "9000")
    assert code == 0, err
    assert rest(c, "/v1/controller/properties")["DrbdOptions/Net/max-buffers"] == "9000"
    code, out, err = cairn(c, "controller", "opt", "--unset-max-buffers")
    assert code == 0, err
    assert "DrbdOptions/Net/max-buffers" not in rest(c, "/v1/controller/properties")
    code, out, err = cairn(c, "rc", "drbd-peer-options", "--protocol", "A", a, b, "ov")
    assert code == 0, err
    assert rest(c, f"/v1/resource-definitions/ov/resource-connections/{a}/{b}")["props"]["DrbdOptions/Net/protocol"] == "A"
    code, out, err = cairn(c, "r", "drbd-peer-options", "--unset-protocol", "--max-buffers", "4000", a, b, "ov")
    assert code == 0, err
    conn = rest(c, f"/v1/resource-definitions/ov/resource-connections/{a}/{b}")["props"]
    assert "DrbdOptions/Net/protocol" not in conn and conn["DrbdOptions/Net/max-buffers"] == "4000", conn
    code, out, err = cairn(c, "controller", "which")
    assert code == 0 and out.strip() == c.ctrl.url.rstrip("/"), (out, c.ctrl.url)
    code, out, err = cairn(c, "nc", "popt", "--protocol", "A", "n1", "n3")
    assert code == 0, err
    assert rest(c, "/v1/node-connections/n1/n3")["props"]["DrbdOptions/Net/protocol"] == "A"
    # Refusals before anything is sent: an option the object does not
    # have (a disk option on a connection), a missing value, a missing name.
    code, out, err = cairn(c, "rc", "popt", "--al-extents", "6007", a, b, "ov")
    assert code == 1 and "not a DRBD option" in err, (out, err)
    code, out, err = cairn(c, "rd", "opt", "ov", "--protocol")
    assert code == 1 and "needs a value" in err, (out, err)
    code, out, err = cairn(c, "rd", "opt", "--protocol", "C")
    assert code == 1, (out, err)
    # Max volume sizes: a group's filter, and the controller's for a count.
    code, out, err = cairn(c, "--no-color", "rg", "query-max-volume-size", "og")
    assert code == 0 and "StoragePool" in out and "DfltStorPool" in out and "Thin" in out, (out, err)
    code, out, err = cairn(c, "--no-color", "rg", "qsi", "og")
    assert code == 0 and "MaxVolumeSize" in out and " on " in out, (out, err)
    sizes = machine(c, "c", "qmvs", "3")
    assert {x["storage_pool"] for x in sizes["candidates"]} == {"DfltStorPool"}, sizes
    assert sizes["candidates"][0]["max_volume_size_kib"] > 0


def test_involved_list_volumes_describe_and_node_modify(cluster):
    c = cluster
    ok(c.lin.resource_dfn_create("both"))
    ok(c.lin.volume_dfn_create("both", 8 * 1024))
    ok(c.lin.resource_create([linstor.ResourceData(n, "both") for n in ("n1", "n2")]))
    ok(c.lin.resource_dfn_create("far"))
    ok(c.lin.volume_dfn_create("far", 8 * 1024))
    ok(c.lin.resource_create([linstor.ResourceData("n3", "far")]))
    wait_for("states reported", lambda: all("in_use" in r["state"] for r in rest(c, "/v1/view/resources")))
    inv = machine(c, "r", "involved", "n1")
    assert sorted((r["name"], r["node_name"]) for r in inv) == [("both", "n1"), ("both", "n2")], inv
    code, out, _ = cairn(c, "--no-color", "r", "inv", "n1")
    assert code == 0 and out.count("both") == 2 and "far" not in out, out
    assert machine(c, "r", "inv", "--inuse", "n1") == []
    assert len(machine(c, "r", "inv", "--min-diskful", "3", "n2")) == 2
    assert machine(c, "r", "inv", "--min-diskful", "2", "n2") == []
    assert [r["name"] for r in machine(c, "r", "inv", "n3")] == ["far"]
    # `r list-volumes` is `volume list`.
    code, lv, _ = cairn(c, "--no-color", "r", "lv", "-r", "both")
    code2, vl, _ = cairn(c, "--no-color", "v", "l", "-r", "both")
    assert code == code2 == 0 and lv == vl and lv.count("/dev/loop") == 2, lv
    # describe: the node's interfaces, pools, resources and volumes.
    code, out, err = cairn(c, "n", "describe", "n1")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].startswith("n1 (SATELLITE, ONLINE)"), out
    assert any("DfltStorPool (FILE_THIN)" in l for l in lines) and any(l.strip().startswith("└── both") for l in lines), out
    assert any("volume 0: DfltStorPool, /dev/loop" in l for l in lines) and "far" not in out, out
    d = machine(c, "n", "dsc")
    assert [x["node"]["name"] for x in d] == ["n1", "n2", "n3"] and [r["name"] for r in d[2]["resources"]] == ["far"]
    code, out, err = cairn(c, "n", "dsc", "nope")
    assert code != 0, out
    # modify: the node type.
    code, out, err = cairn(c, "n", "modify", "--node-type", "combined", "n3")
    assert code == 0, (out, err)
    assert rest(c, "/v1/nodes/n3")["type"] == "COMBINED"
    code, out, err = cairn(c, "n", "m", "--node-type", "satellite", "n3")
    assert code == 0 and rest(c, "/v1/nodes/n3")["type"] == "SATELLITE", (out, err)


def test_advise_resource_and_maintenance(cluster):
    c = cluster
    ok(c.lin.resource_group_create("adv3", place_count=3))
    ok(c.lin.resource_dfn_create("advfew", resource_group="adv3"))
    ok(c.lin.volume_dfn_create("advfew", 8 * 1024))
    ok(c.lin.resource_create([linstor.ResourceData(n, "advfew") for n in ("n1", "n2")]))
    ok(c.lin.resource_dfn_create("advone"))
    ok(c.lin.volume_dfn_create("advone", 8 * 1024))
    ok(c.lin.resource_create([linstor.ResourceData("n1", "advone")]))
    issues = machine(c, "advise", "resource")
    by = {i["resource"]: i for i in issues}
    assert by["advfew"]["what"] == "Resource expected to have 3 replicas, got only 2." and \
        by["advfew"]["fix"] == "cairn rd ap --place-count 3 advfew", issues
    # The default group places 2: one replica is too few as well.
    assert by["advone"]["fix"] == "cairn rd ap --place-count 2 advone", issues
    assert machine(c, "adv", "r", "-f", "no-tiebreaker") == []
    assert [i["resource"] for i in machine(c, "advise", "resource", "-r", "advone")] == ["advone"]
    issues = machine(c, "advise", "maintenance", "n1")
    assert {i["resource"]: i["what"] for i in issues} == {
        "advone": "Node hosts only replica of resource, would become unavailable.",
        "advfew": "Node hosts one of 2 replicas with no tiebreaker, may lead to split-brain.",
    }, issues
    assert machine(c, "advise", "maintenance", "n3") == []
    code, out, err = cairn(c, "--no-color", "advise", "m", "n1")
    assert code == 0 and "Possible fix" in out and "advone" in out, err
