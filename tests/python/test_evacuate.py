"""Node evacuate, restore and auto-evict against the real controller and
three config-only DRBD satellites (the kernel part is planned, not run, so
no replica ever reports UpToDate: a replacement keeps DISK_ADDING and the
evacuated replica stays; tests/vm covers the finished evacuation)."""

import os
import subprocess
import time

import linstor

from conftest import BIN, ok, wait_for
from test_drbd import drbd_cluster, view  # noqa: F401 (fixture)

WARN_NOT_EVACUATING = 1020
FAIL_NOT_ENOUGH_NODES = 996


def node(c, name):
    status, _, body = c.ctrl.request("GET", f"/v1/nodes/{name}")
    assert status == 200, body
    return body


def spawn(c, rsc, place_count=2, **kw):
    ok(c.lin.resource_group_create(f"rg-{rsc}", place_count=place_count, **kw))
    ok(c.lin.volume_group_create(f"rg-{rsc}"))
    ok(c.lin.resource_group_spawn(f"rg-{rsc}", rsc, ["16M"]))
    return view(c, rsc)


def diskful(v):
    return sorted(n for n, r in v.items() if "DISKLESS" not in r["flags"] and "DRBD_DISKLESS" not in r["flags"])


def test_evacuate_replaces_each_replica_and_restore_stops_it(drbd_cluster):
    c = drbd_cluster
    v = spawn(c, "evac")
    src, keep = diskful(v)
    (tb,) = [n for n in v if n not in (src, keep)]
    assert "TIE_BREAKER" in v[tb]["flags"], v

    replies = ok(c.lin.node_evacuate(src))
    # The tiebreaker is the diskless peer LINSTOR turns diskful first.
    assert any(f"Addition of disk to resource 'evac' on node '{tb}' registered" in r.message for r in replies), replies
    assert "EVACUATE" in node(c, src)["flags"]
    v = view(c, "evac")
    assert "EVACUATE" in v[src]["flags"], v[src]
    new = v[tb]
    assert "DISKLESS" not in new["flags"] and "TIE_BREAKER" not in new["flags"] and "DISK_ADDING" in new["flags"], new
    assert new["props"]["MigrateFrom"] == src and new["props"]["DiskfulBy"] == "auto-placer", new["props"]
    assert new["volumes"][0]["storage_pool_name"] == "DfltStorPool"
    # Not UpToDate yet (never, without the kernel): the source stays.
    time.sleep(2)
    assert src in view(c, "evac")
    # Asked again, nothing more is placed for a replica being replaced.
    before = view(c, "evac")
    replies = c.lin.node_evacuate(src)
    assert not [r for r in replies if "'evac'" in r.message], replies
    after = view(c, "evac")
    assert sorted(after) == sorted(before) and after[tb]["flags"] == before[tb]["flags"], (before, after)

    # No new placement on an evacuating node: 3 replicas cannot be placed.
    ok(c.lin.resource_group_create("rg-three", place_count=3))
    ok(c.lin.volume_group_create("rg-three"))
    replies = c.lin.resource_group_spawn("rg-three", "three", ["16M"])
    assert any(r.is_error() and r.ret_code & 0x7FFF == FAIL_NOT_ENOUGH_NODES for r in replies), replies
    ok(c.lin.resource_dfn_delete("three"))
    # Two can, on the other nodes.
    v2 = spawn(c, "two")
    assert src not in v2, v2

    # Restore: the flags go; the replacement stays but no longer removes
    # the node's replica.
    replies = ok(c.lin.node_restore(src))
    assert any(f"Successfully restored node {src}" in r.message for r in replies), replies
    assert "EVACUATE" not in node(c, src)["flags"]
    v = view(c, "evac")
    assert "EVACUATE" not in v[src]["flags"], v[src]
    assert "MigrateFrom" not in v[tb]["props"] and "DISKLESS" not in v[tb]["flags"], v[tb]
    # Restoring a node that is neither evacuated nor evicted: LINSTOR's
    # plain MASK_ERROR entry.
    status, _, body = c.ctrl.request("PUT", f"/v1/nodes/{src}/restore")
    assert status == 500 and body[0]["message"] == f"Node '{src}' is neither evicted nor evacuated.", body
    assert body[0]["ret_code"] == -(1 << 62), body
    status, _, body = c.ctrl.request("PUT", "/v1/nodes/nosuch/evacuate")
    assert status == 404, body
    for rd in ("evac", "two"):
        ok(c.lin.resource_dfn_delete(rd))


def test_evacuate_places_a_new_replica_deletes_diskless_ones_and_warns(drbd_cluster):
    c = drbd_cluster
    # One diskful replica, a diskless one on each other node.
    v = spawn(c, "solo", place_count=1, diskless_on_remaining=True)
    (src,) = diskful(v)
    others = sorted(n for n in v if n != src)
    # A diskless replica on an evacuated node is simply deleted.
    replies = ok(c.lin.node_evacuate(others[0]))
    assert any(f"Resource 'solo' on node '{others[0]}' deleted" in r.message for r in replies), replies
    assert others[0] not in view(c, "solo")
    status, _, rscs = c.ctrl.request("GET", f"/v1/view/resources?nodes={others[0]}")
    assert rscs == [], rscs
    # --target limits where the replacement goes: the only allowed node
    # is the evacuated one's, so nothing qualifies (a warning, not an error).
    replies = ok(c.lin.node_evacuate(src, target=[others[0]]))
    warn = [r for r in replies if r.is_warning()]
    assert any(r.ret_code & 0x7FFF == WARN_NOT_EVACUATING and "cannot be evacuated as no available storage pool was found"
               in r.message for r in warn), replies
    assert "EVACUATE" in node(c, src)["flags"]
    ok(c.lin.node_restore(src))
    # target and do_not_target together are refused.
    status, _, body = c.ctrl.request("PUT", f"/v1/nodes/{src}/evacuate", {"target": ["x"], "do_not_target": ["y"]})
    assert status >= 400 and "must not be used together" in body[0]["message"], body
    ok(c.lin.node_restore(others[0]))
    ok(c.lin.resource_dfn_delete("solo"))

    # No diskless peer: the autoplacer places a new replica.
    v = spawn(c, "fresh", place_count=1)
    (src,) = diskful(v)
    replies = ok(c.lin.node_evacuate(src))
    v = view(c, "fresh")
    (new,) = [n for n in diskful(v) if n != src]
    assert "DISK_ADDING" in v[new]["flags"] and v[new]["props"]["MigrateFrom"] == src, v[new]
    assert any(f"successfully autoplaced on 1 node" in r.message for r in replies), replies
    ok(c.lin.node_restore(src))
    ok(c.lin.resource_dfn_delete("fresh"))


def test_the_cli_evacuates_and_restores(drbd_cluster):
    c = drbd_cluster
    v = spawn(c, "evcli", place_count=1)
    (src,) = diskful(v)
    env = dict(os.environ, LS_CONTROLLERS=c.ctrl.url)

    def cairn(*args):
        p = subprocess.run([BIN, "--no-color", "--no-utf8", *args], capture_output=True, text=True, env=env, timeout=120)
        return p.returncode, p.stdout, p.stderr

    code, out, err_ = cairn("n", "evacuate", "--help")
    assert code == 0 and "--target" in out and "--do-not-target" in out, out
    code, out, err_ = cairn("n", "evac", src)
    assert code == 0, (out, err_)
    assert "EVACUATE" in node(c, src)["flags"]
    code, out, err_ = cairn("n", "l")
    assert code == 0 and any(src in line and "EVACUATE" in line for line in out.splitlines()), out
    code, out, err_ = cairn("n", "restore", src)
    assert code == 0 and f"Successfully restored node {src}" in out, (out, err_)
    code, out, err_ = cairn("n", "rst", src)
    assert code != 0 and "neither evicted nor evacuated" in (out + err_), (out, err_)
    ok(c.lin.resource_dfn_delete("evcli"))


def test_auto_evict_within_linstors_limits(drbd_cluster, xfs_dir):
    c = drbd_cluster
    v = spawn(c, "ae")
    src, keep = diskful(v)
    (tb,) = [n for n in v if n not in (src, keep)]
    # A second definition on the same nodes that only needs one replica to stay.
    ok(c.lin.resource_dfn_create("aemin"))
    ok(c.lin.volume_dfn_create("aemin", 16 * 1024))
    ok(c.lin.resource_create([linstor.ResourceData(n, "aemin") for n in (src, keep)]))
    ok(c.lin.resource_dfn_modify("aemin", {"DrbdOptions/AutoEvictMinReplicaCount": "1"}))
    # A snapshot kept on the node (restore may delete the node's part), and
    # a replica there that was inactive before the eviction (it stays so).
    for n in (src, keep):
        ok(c.lin.storage_pool_create(n, "reflink", "FILE_THIN", os.path.join(xfs_dir, n)))
    ok(c.lin.resource_dfn_create("aesnap"))
    ok(c.lin.volume_dfn_create("aesnap", 16 * 1024))
    ok(c.lin.resource_create([linstor.ResourceData(n, "aesnap", storage_pool="reflink") for n in (src, keep)]))
    ok(c.lin.snapshot_create([src, keep], "aesnap", "before"))
    ok(c.lin.resource_deactivate(src, "aemin"))
    # LINSTOR's AutoEvictAfterTime is in minutes and accepts 0.
    ok(c.lin.controller_set_prop("DrbdOptions/AutoEvictAfterTime", "0"))
    # 10 % of 3 nodes: no node may be offline for eviction.
    ok(c.lin.controller_set_prop("DrbdOptions/AutoEvictMaxDisconnectedNodes", "10"))
    c.sats[src].stop()
    wait_for("node offline", lambda: node(c, src)["connection_status"] != "ONLINE")
    time.sleep(3)
    assert "EVICTED" not in node(c, src)["flags"]
    # The node itself forbids it.
    ok(c.lin.node_modify(src, property_dict={"DrbdOptions/AutoEvictAllowEviction": "false"}))
    ok(c.lin.controller_set_prop("DrbdOptions/AutoEvictMaxDisconnectedNodes", "34"))
    time.sleep(3)
    assert "EVICTED" not in node(c, src)["flags"]
    ok(c.lin.node_modify(src, property_dict={"DrbdOptions/AutoEvictAllowEviction": "true"}))
    wait_for("node evicted", lambda: "EVICTED" in node(c, src)["flags"], timeout=15)
    v = view(c, "ae")
    assert "EVICTED" in v[src]["flags"] and "INACTIVE" in v[src]["flags"], v[src]
    # Its replica is replaced: the tiebreaker got a disk.
    assert "DISKLESS" not in v[tb]["flags"] and "TIE_BREAKER" not in v[tb]["flags"], v[tb]
    # aemin keeps its one replica on the node that is left: no new one.
    v2 = view(c, "aemin")
    assert "EVICTED" in v2[src]["flags"] and "INACTIVE_BEFORE_EVICTION" in v2[src]["flags"], v2[src]
    assert [n for n, r in v2.items() if "DISKLESS" not in r["flags"] and n != src] == [keep], v2
    # A reconnect is refused while evicted; restore brings it back.
    c.sats[src].start()
    replies = c.lin.node_reconnect([src])
    assert any(r.ret_code & 0x7FFF == 1017 for r in replies), replies
    ok(c.lin.controller_set_prop("DrbdOptions/AutoEvictAfterTime", "720"))
    ok(c.lin.node_restore(src, delete_snapshots=True))
    n = node(c, src)
    assert "EVICTED" not in n["flags"], n
    v = view(c, "ae")
    assert "EVICTED" not in v[src]["flags"] and "INACTIVE" not in v[src]["flags"], v[src]
    v2 = view(c, "aemin")
    assert "INACTIVE" in v2[src]["flags"] and "INACTIVE_BEFORE_EVICTION" not in v2[src]["flags"], v2[src]
    # The snapshot is kept on the other node only.
    status, _, snap = c.ctrl.request("GET", "/v1/resource-definitions/aesnap/snapshots/before")
    assert status == 200 and snap["nodes"] == [keep], snap
    wait_for("node online again", lambda: node(c, src)["connection_status"] == "ONLINE", timeout=30)
