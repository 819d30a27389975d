"""DRBD end to end: three satellites on real loop devices, resources placed
by a resource group, `.res` files checked by the real drbdadm parser.

These hosts have drbd-utils but no DRBD 9 kernel module, so the satellites
run with --drbd-config-only: storage with room for metadata, the .res file,
`drbdadm create-md` on the real backing device and `drbdadm -d adjust` all
happen for real; only the kernel commands are planned instead of run."""

import os
import re
import shutil
import stat
import subprocess

import pytest

from conftest import ok, run_cluster, wait_for

NODES = ["n1", "n2", "n3"]


@pytest.fixture
def drbd_cluster():
    if shutil.which("drbdadm") is None:
        raise RuntimeError("drbdadm not found: install drbd-utils (the test command does)")
    yield from run_cluster("cairn-drbd-", {n: "FILE_THIN" for n in NODES}, extra_args=["--drbd-config-only"])


def conf_dir(c, node):
    return os.path.join(c.root, node, "drbd.d")


def dump(c, node, rsc):
    """The resource as the real drbdadm parser reads this node's config."""
    out = subprocess.run(["drbdadm", "-c", os.path.join(conf_dir(c, node), "cairn.conf"), "dump", rsc],
                         capture_output=True, text=True, env={**os.environ, "__DRBD_NODE__": node})
    assert out.returncode == 0, f"drbdadm refused {node}'s {rsc}.res: {out.stderr}"
    return out.stdout


def parse(text):
    """{host: (node_id, {volume: (minor, disk)})} and {host: address:port}."""
    hosts = {}
    for m in re.finditer(r"on (\S+) \{\s*node-id (\d+);(.*?)\n    \}", text, re.S):
        vols = {int(v): (int(minor), disk) for v, minor, disk in
                re.findall(r"volume (\d+) \{\s*device\s+minor (\d+);\s*disk\s+(\S+);", m.group(3))}
        hosts[m.group(1)] = (int(m.group(2)), vols)
    addrs = dict(re.findall(r"host (\S+)\s+address\s+ipv4 (\S+);", text))
    return hosts, addrs


def view(c, rsc):
    status, _, body = c.ctrl.request("GET", f"/v1/view/resources?resources={rsc}")
    assert status == 200, body
    return {r["node_name"]: r for r in body}


def test_spawn_with_diskless_on_remaining_gives_agreeing_res_files(drbd_cluster):
    c = drbd_cluster
    status, _, nodes = c.ctrl.request("GET", "/v1/nodes")
    assert all(n["resource_layers"][:1] == ["DRBD"] for n in nodes), nodes
    ok(c.lin.resource_group_create("repl", place_count=2, diskless_on_remaining=True))
    ok(c.lin.volume_group_create("repl"))
    ok(c.lin.resource_group_spawn("repl", "web", ["32M"]))

    v = view(c, "web")
    assert sorted(v) == NODES
    diskless = [n for n, r in v.items() if "DISKLESS" in r["flags"]]
    assert len(diskless) == 1 and "TIE_BREAKER" not in v[diskless[0]]["flags"]
    rest_ids = {n: r["layer_object"]["drbd"]["node_id"] for n, r in v.items()}
    rest_ports = {n: r["layer_object"]["drbd"]["tcp_ports"][0] for n, r in v.items()}
    rest_minor = {r["volumes"][0]["layer_data_list"][0]["data"]["drbd_volume_definition"]["minor_number"] for r in v.values()}
    assert sorted(rest_ids.values()) == [0, 1, 2]
    assert len(rest_minor) == 1
    minor = rest_minor.pop()
    assert minor >= 1000

    views = {}
    for n in NODES:
        assert os.path.exists(os.path.join(conf_dir(c, n), "web.res"))
        # The .res file carries the shared secret: root's alone, in a private directory.
        assert stat.S_IMODE(os.stat(os.path.join(conf_dir(c, n), "web.res")).st_mode) == 0o600
        assert stat.S_IMODE(os.stat(conf_dir(c, n)).st_mode) == 0o700
        views[n] = parse(dump(c, n, "web"))
    # All three files describe the same cluster, and the REST view agrees.
    for n, (hosts, addrs) in views.items():
        assert {h: nid for h, (nid, _) in hosts.items()} == rest_ids, (n, hosts)
        assert all(vols[0][0] == minor for _, vols in hosts.values()), (n, hosts)
        for h, addr in addrs.items():
            assert addr == f"127.0.10.{NODES.index(h) + 1}:{rest_ports[h]}", (n, addrs)
    # Each node's own volume is its real backing device (or none).
    for n, (hosts, _) in views.items():
        disk = hosts[n][1][0][1]
        if n in diskless:
            assert disk == "none"
        else:
            loop = v[n]["layer_object"]["children"][0]["storage"]["storage_volumes"][0]["device_path"]
            assert disk == loop and loop.startswith("/dev/loop")
            # The backing device holds real DRBD metadata and has room for it.
            md = subprocess.run(["drbdmeta", "--force", str(minor), "v09", loop, "internal", "get-gi", "--node-id",
                                 str(rest_ids[n])], capture_output=True, text=True)
            assert md.returncode == 0, md.stderr
            size = int(subprocess.run(["blockdev", "--getsize64", loop], capture_output=True, text=True, check=True).stdout)
            assert size > 32 * 1024 * 1024, size

    # Two diskful replicas and a diskless one keep quorum.
    status, _, rd = c.ctrl.request("GET", "/v1/resource-definitions/web")
    assert rd["props"]["DrbdOptions/Resource/quorum"] == "majority", rd
    assert rd["layer_data"][0]["type"] == "DRBD"
    assert re.search(r"quorum\s+majority;", dump(c, "n1", "web"))
    assert re.search(r"on-no-quorum\s+io-error;", dump(c, "n1", "web"))
    # What the REST view says about a DRBD volume.
    vol = v[NODES[0]]["volumes"][0]
    assert vol["device_path"] == f"/dev/drbd{minor}"
    assert vol["state"]["disk_state"] == "Unknown"  # no kernel module: not brought up
    # Reported by the satellite: in_use is a bool, as clients OR it; a
    # device the kernel does not show is not in use.
    assert all(r["state"]["in_use"] is False for r in v.values()), v
    # python-linstor reads DRBD resources and volumes.
    rl = c.lin.resource_list_raise(filter_by_resources=["web"])
    assert len(rl.resources) == 3
    vl = c.lin.volume_list_raise(filter_by_resources=["web"])
    assert len(vl.resources) == 3

    ok(c.lin.resource_dfn_delete("web"))
    for n in NODES:
        assert not os.path.exists(os.path.join(conf_dir(c, n), "web.res")), n
        assert [f for f in os.listdir(os.path.join(c.root, n, "pool")) if f.startswith("web_")] == []


def test_two_replicas_get_a_tiebreaker_that_goes_with_a_third(drbd_cluster):
    c = drbd_cluster
    ok(c.lin.resource_group_create("pair", place_count=2))
    ok(c.lin.volume_group_create("pair"))
    replies = ok(c.lin.resource_group_spawn("pair", "db", ["16M"]))
    assert any("Tie breaker" in r.message for r in replies), [r.message for r in replies]
    v = view(c, "db")
    tb = [n for n, r in v.items() if "TIE_BREAKER" in r["flags"]]
    assert len(tb) == 1 and "DRBD_DISKLESS" in v[tb[0]]["flags"]
    hosts, _ = parse(dump(c, tb[0], "db"))
    assert hosts[tb[0]][1][0][1] == "none"
    # The user places a diskful replica on the tiebreaker's node: it takes
    # its place, and three diskful replicas need no tiebreaker.
    ok(c.lin.resource_create([__import__("linstor").ResourceData(tb[0], "db")]))
    v = view(c, "db")
    assert not any("TIE_BREAKER" in r["flags"] or "DISKLESS" in r["flags"] for r in v.values()), v
    hosts, _ = parse(dump(c, tb[0], "db"))
    assert hosts[tb[0]][1][0][1].startswith("/dev/loop")
    assert sorted(nid for nid, _ in hosts.values()) == sorted(r["layer_object"]["drbd"]["node_id"] for r in v.values())


def test_autoplace_and_adjust_turn_the_tiebreaker_into_the_third_diskful_replica(drbd_cluster):
    """As LINSTOR's autoplacer: the node of a diskless replica is a
    candidate; the chosen one gets its disk by toggle-disk."""
    c = drbd_cluster
    ok(c.lin.resource_group_create("two", place_count=2))
    ok(c.lin.volume_group_create("two"))
    for rd in ("ap", "adj"):
        ok(c.lin.resource_group_spawn("two", rd, ["16M"]))
    for rd, grow in (("ap", lambda: c.lin.resource_auto_place("ap", 3)),
                     ("adj", lambda: (ok(c.lin.resource_group_modify("two", place_count=3)),
                                      c.lin.resource_group_adjust("two"))[1])):
        v = view(c, rd)
        (tb,) = [n for n, r in v.items() if "TIE_BREAKER" in r["flags"]]
        node_id = v[tb]["layer_object"]["drbd"]["node_id"]
        replies = ok(grow())
        assert any(f"Addition of disk to resource '{rd}' on node '{tb}' registered" in r.message for r in replies), \
            [r.message for r in replies]
        v = view(c, rd)
        assert sorted(v) == NODES, v
        r = v[tb]
        assert not {"DISKLESS", "DRBD_DISKLESS", "TIE_BREAKER"} & set(r["flags"]), r["flags"]
        assert r["props"]["DiskfulBy"] == "auto-placer" and r["props"]["StorPoolName"] == "DfltStorPool", r["props"]
        assert r["volumes"][0]["storage_pool_name"] == "DfltStorPool"
        assert r["layer_object"]["drbd"]["node_id"] == node_id
        wait_for(f"{tb}'s {rd}.res with a disk", lambda: parse(dump(c, tb, rd))[0][tb][1][0][1].startswith("/dev/loop"))
    # Placed as asked: again, nothing to do.
    replies = c.lin.resource_auto_place("ap", 3)
    assert not any(r.is_error() for r in replies) and any(r.is_warning() for r in replies), replies


def test_a_drbd_option_change_reaches_every_res_file(drbd_cluster):
    c = drbd_cluster
    ok(c.lin.resource_dfn_create("opt"))
    ok(c.lin.volume_dfn_create("opt", 8192))
    ok(c.lin.resource_auto_place("opt", 2))
    ok(c.lin.resource_dfn_modify("opt", {"DrbdOptions/Net/max-buffers": "8000"}))
    for n in view(c, "opt"):
        assert re.search(r"max-buffers\s+8000;", dump(c, n, "opt")), n


def test_node_connection_paths_reach_both_res_files(drbd_cluster):
    c = drbd_cluster
    for i, n in enumerate(["n1", "n2"], start=1):
        ok(c.lin.netinterface_create(n, "repl", f"127.0.1.{i}"))
    ok(c.lin.resource_dfn_create("pth", layer_list=["drbd", "storage"]))
    ok(c.lin.volume_dfn_create("pth", 8192))
    ok(c.lin.resource_create([__import__("linstor").ResourceData(n, "pth") for n in ("n1", "n2")]))
    status, _, body = c.ctrl.request("PUT", "/v1/node-connections/n1/n2", {
        "override_props": {"Paths/p1/n1": "default", "Paths/p1/n2": "default", "Paths/p2/n1": "repl", "Paths/p2/n2": "repl"}})
    assert status == 200, body
    for n in ("n1", "n2"):
        text = dump(c, n, "pth")
        assert text.count("path {") == 2, text
        assert re.search(r"host n1\s+address\s+ipv4 127\.0\.1\.1:\d+;", text), text
        assert re.search(r"host n2\s+address\s+ipv4 127\.0\.1\.2:\d+;", text), text


def current_gi(c, node, rsc):
    """The current generation id in the metadata of volume 0 on `node`."""
    hosts, _ = parse(dump(c, node, rsc))
    node_id, vols = hosts[node]
    minor, disk = vols[0]
    out = subprocess.run(["drbdmeta", "--force", str(minor), "v09", disk, "internal", "get-gi", "--node-id", str(node_id)],
                         capture_output=True, text=True)
    assert out.returncode == 0, f"no metadata on {node}'s {rsc}: {out.stderr}"
    return disk, out.stdout.strip().split(":")[0]


def test_a_clone_copies_the_backing_data_and_gets_fresh_drbd_metadata(drbd_cluster):
    c = drbd_cluster
    ok(c.lin.resource_dfn_create("dcl-src", layer_list=["drbd", "storage"]))
    ok(c.lin.volume_dfn_create("dcl-src", 8192))
    ok(c.lin.resource_create([__import__("linstor").ResourceData(n, "dcl-src") for n in ("n1", "n2")]))
    pattern = os.urandom(1 << 20)
    for n in ("n1", "n2"):
        disk, _ = current_gi(c, n, "dcl-src")
        with open(disk, "r+b") as f:
            f.write(pattern)
            os.fsync(f.fileno())
    started = c.lin.resource_dfn_clone("dcl-src", "dcl-dst")
    assert not [m for m in started.messages if m.is_error()], started.messages
    assert c.lin.resource_dfn_clone_wait_complete("dcl-src", "dcl-dst", timeout=60)
    for n in ("n1", "n2"):
        src_disk, src_gi = current_gi(c, n, "dcl-src")
        dst_disk, dst_gi = current_gi(c, n, "dcl-dst")
        assert src_disk != dst_disk
        with open(dst_disk, "rb") as f:
            assert f.read(1 << 20) == pattern, n
        # Metadata of its own, not the source's copied along.
        assert dst_gi != src_gi, (n, src_gi, dst_gi)
    hosts, _ = parse(dump(c, "n1", "dcl-dst"))
    assert sorted(hosts) == ["n1", "n2", "n3"] or sorted(hosts) == ["n1", "n2"], hosts
    # Without the kernel module DRBD's disk state is unknown: not synced.
    assert not c.lin.resource_dfn_sync_status("dcl-dst").synced_on_all
    for rd in ("dcl-dst", "dcl-src"):
        ok(c.lin.resource_dfn_delete(rd))
