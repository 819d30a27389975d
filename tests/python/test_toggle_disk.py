"""Toggle-disk and migrate-disk against the real controller and three
config-only DRBD satellites (real loop devices, real drbdadm/drbdmeta; the
kernel part is planned, not run): flags, properties, pool choice, the
backing volume made and removed, the .res files, and LINSTOR's refusals."""

import os
import subprocess

from conftest import BIN, err, ok
from test_drbd import current_gi, drbd_cluster, dump, parse, view  # noqa: F401 (fixture)

FAIL_INSUFFICIENT_REPLICA_COUNT = 991
FAIL_INSUFFICIENT_PEER_SLOTS = 993
FAIL_NOT_FOUND_DFLT_STOR_POOL = 311
FAIL_INVLD_STOR_POOL_NAME = 208
FAIL_INVLD_LAYER_STACK = 225
FAIL_NOT_FOUND_RSC = 302
INFO_NOOP = 10007


def spawn_two_and_a_diskless(c, rsc):
    ok(c.lin.resource_group_create(f"rg-{rsc}", place_count=2, diskless_on_remaining=True))
    ok(c.lin.volume_group_create(f"rg-{rsc}"))
    ok(c.lin.resource_group_spawn(f"rg-{rsc}", rsc, ["16M"]))
    v = view(c, rsc)
    diskless = [n for n, r in v.items() if "DISKLESS" in r["flags"]]
    assert len(diskless) == 1, v
    return diskless[0], sorted(n for n in v if n not in diskless)


def own_disk(c, node, rsc):
    hosts, _ = parse(dump(c, node, rsc))
    return hosts[node][1][0][1]


def codes(replies):
    return [r.ret_code & 0x7FFF for r in replies]


def test_a_diskless_replica_gets_a_disk_unstamped_and_gives_it_back(drbd_cluster):
    c = drbd_cluster
    dl, diskful = spawn_two_and_a_diskless(c, "tgl")
    assert own_disk(c, dl, "tgl") == "none"
    status, _, vd = c.ctrl.request("GET", "/v1/resource-definitions/tgl/volume-definitions/0")
    day0 = vd["props"]["DrbdCurrentGi"]
    # A replica made with the definition on FILE_THIN starts at day 0 (the
    # one chosen for the initial sync at a random id of its own).
    assert day0.upper() in {current_gi(c, n, "tgl")[1].upper() for n in diskful}

    replies = ok(c.lin.resource_toggle_disk(dl, "tgl"))
    assert any("Addition of disk to resource 'tgl' on node '%s' registered" % dl in r.message for r in replies), replies
    r = view(c, "tgl")[dl]
    assert "DISKLESS" not in r["flags"] and "DRBD_DISKLESS" not in r["flags"], r["flags"]
    # Until its first sync is reported done (never, without the kernel).
    assert "DISK_ADDING" in r["flags"], r["flags"]
    assert r["props"].get("DiskfulBy") == "user" and "StorPoolName" not in r["props"], r["props"]
    assert r["volumes"][0]["storage_pool_name"] == "DfltStorPool"
    assert r["volumes"][0]["provider_kind"] == "FILE_THIN"
    disk = own_disk(c, dl, "tgl")
    assert disk.startswith("/dev/loop"), disk
    # Fresh metadata, not stamped with day 0: it joins data that exists.
    _, gi = current_gi(c, dl, "tgl")
    assert gi.upper() != day0.upper(), gi
    # The peers' files now give it that disk too.
    for n in diskful:
        hosts, _ = parse(dump(c, n, "tgl"))
        assert hosts[dl][1][0][1] != "none", hosts
    backing = os.path.realpath(open(f"/sys/block/{os.path.basename(disk)}/loop/backing_file").read().strip())
    assert os.path.exists(backing)

    again = c.lin.resource_toggle_disk(dl, "tgl")
    assert INFO_NOOP in codes(again) and not [x for x in again if x.is_error()], again
    assert "is already diskful" in again[0].message

    ok(c.lin.resource_toggle_disk(dl, "tgl", diskless=True))
    r = view(c, "tgl")[dl]
    assert {"DISKLESS", "DRBD_DISKLESS"} <= set(r["flags"]) and "DISK_ADDING" not in r["flags"], r["flags"]
    assert r["props"].get("StorPoolName") == "DfltDisklessStorPool" and "DiskfulBy" not in r["props"], r["props"]
    assert r["volumes"][0]["storage_pool_name"] == "DfltDisklessStorPool"
    assert own_disk(c, dl, "tgl") == "none"
    # The backing volume is gone; the replica is still everybody's peer.
    assert not os.path.exists(backing), backing
    for n in diskful:
        hosts, _ = parse(dump(c, n, "tgl"))
        assert dl in hosts and hosts[dl][1][0][1] == "none", hosts
    again = c.lin.resource_toggle_disk(dl, "tgl", diskless=True)
    assert INFO_NOOP in codes(again) and "is already diskless" in again[0].message, again

    # One diskful replica may go; the last one may not.
    ok(c.lin.resource_toggle_disk(diskful[0], "tgl", diskless=True))
    err(c.lin.resource_toggle_disk(diskful[1], "tgl", diskless=True), FAIL_INSUFFICIENT_REPLICA_COUNT)
    assert "DISKLESS" not in view(c, "tgl")[diskful[1]]["flags"]
    ok(c.lin.resource_dfn_delete("tgl"))


def test_pool_choice_and_refusals(drbd_cluster):
    c = drbd_cluster
    dl, diskful = spawn_two_and_a_diskless(c, "tgp")
    # A named pool must exist on the node and have storage.
    err(c.lin.resource_toggle_disk(dl, "tgp", storage_pool="nosuch"), FAIL_NOT_FOUND_DFLT_STOR_POOL)
    err(c.lin.resource_toggle_disk(dl, "tgp", storage_pool="DfltDisklessStorPool"), FAIL_INVLD_STOR_POOL_NAME)
    err(c.lin.resource_toggle_disk(diskful[0], "tgp", diskless=True, storage_pool="DfltStorPool"), FAIL_INVLD_STOR_POOL_NAME)
    assert "DISKLESS" in view(c, "tgp")[dl]["flags"], "a refused toggle changes nothing"
    # A second pool on the node, named in the path: the volume goes there.
    ok(c.lin.storage_pool_create(dl, "other", "FILE_THIN", os.path.join(c.root, dl, "other")))
    ok(c.lin.resource_toggle_disk(dl, "tgp", storage_pool="other"))
    r = view(c, "tgp")[dl]
    assert r["props"]["StorPoolName"] == "other" and r["volumes"][0]["storage_pool_name"] == "other", r
    assert os.path.realpath(open(f"/sys/block/{os.path.basename(own_disk(c, dl, 'tgp'))}/loop/backing_file").read().strip()
                            ).startswith(os.path.join(c.root, dl, "other") + "/")
    ok(c.lin.resource_dfn_delete("tgp"))

    # make-available --diskful on a diskless replica gives it a disk, as
    # LINSTOR does it: by toggle-disk.
    dl, _ = spawn_two_and_a_diskless(c, "tgm")
    status, _, body = c.ctrl.request("POST", f"/v1/resource-definitions/tgm/resources/{dl}/make-available", {"diskful": True})
    assert status == 200, body
    r = view(c, "tgm")[dl]
    assert "DISKLESS" not in r["flags"] and r["props"]["DiskfulBy"] == "make-available", r
    assert own_disk(c, dl, "tgm").startswith("/dev/loop")
    ok(c.lin.resource_dfn_delete("tgm"))

    # Without DRBD there is nothing to toggle.
    ok(c.lin.resource_dfn_create("plain", layer_list=["storage"]))
    ok(c.lin.volume_dfn_create("plain", 8192))
    ok(c.lin.resource_create([__import__("linstor").ResourceData(n, "plain") for n in ("n1", "n2")]))
    err(c.lin.resource_toggle_disk("n1", "plain", diskless=True), FAIL_INVLD_LAYER_STACK)
    err(c.lin.resource_toggle_disk("n3", "plain"), FAIL_NOT_FOUND_RSC)
    ok(c.lin.resource_dfn_delete("plain"))

    # Every diskful replica needs a bitmap slot for the new disk.
    status, _, body = c.ctrl.request("POST", "/v1/resource-definitions",
                                     {"resource_definition": {"name": "slots"}, "drbd_peer_slots": 1})
    assert status == 201, body
    ok(c.lin.volume_dfn_create("slots", 8192))
    ok(c.lin.resource_create([__import__("linstor").ResourceData("n1", "slots"), __import__("linstor").ResourceData("n2", "slots"),
                              __import__("linstor").ResourceData("n3", "slots", diskless=True)]))
    replies = err(c.lin.resource_toggle_disk("n3", "slots"), FAIL_INSUFFICIENT_PEER_SLOTS)
    assert any("insufficient peer slots" in (r.details or "") for r in replies if r.is_error()), replies
    ok(c.lin.resource_dfn_delete("slots"))


def test_the_unified_toggle_disk_body_and_migrate_disk(drbd_cluster):
    c = drbd_cluster
    dl, diskful = spawn_two_and_a_diskless(c, "tgu")
    base = f"/v1/resource-definitions/tgu/resources/{dl}/toggle-disk"
    status, _, body = c.ctrl.request("PUT", base, {"operation": "INTO_SOMETHING"})
    assert status == 400 and "Could not parse 'INTO_SOMETHING'" in body[0]["message"], body
    status, _, body = c.ctrl.request("PUT", base, {})
    assert status == 400 and "No toggle operation type was specified" in body[0]["message"], body
    status, _, body = c.ctrl.request("PUT", base, {"operation": "into_drbd_diskful", "storage_pool": "DfltStorPool"})
    assert status == 200, body
    assert view(c, "tgu")[dl]["props"]["StorPoolName"] == "DfltStorPool"
    status, _, body = c.ctrl.request("PUT", base, {"operation": "INTO_DRBD_CLIENT"})
    assert status == 200, body
    assert "DRBD_DISKLESS" in view(c, "tgu")[dl]["flags"]

    # migrate-disk: the new replica records where it migrates from; the old
    # one goes once the new one is UpToDate (never, without the kernel).
    src = diskful[0]
    status, _, body = c.ctrl.request("PUT", f"/v1/resource-definitions/tgu/resources/{dl}/migrate-disk/nosuch")
    assert status == 404, body
    replies = ok(c.lin.resource_toggle_disk(dl, "tgu", migrate_from=src))
    r = view(c, "tgu")
    assert r[dl]["props"]["MigrateFrom"] == src and "DISK_ADDING" in r[dl]["flags"], r[dl]
    assert src in r, "the source stays until the new replica is UpToDate"
    assert own_disk(c, dl, "tgu").startswith("/dev/loop")
    ok(c.lin.resource_dfn_delete("tgu"))


def test_toggle_disk_through_the_cli(drbd_cluster):
    c = drbd_cluster
    dl, diskful = spawn_two_and_a_diskless(c, "tgc")
    env = dict(os.environ, LS_CONTROLLERS=c.ctrl.url)

    def cairn(*args):
        p = subprocess.run([BIN, *args], capture_output=True, text=True, env=env, timeout=120)
        return p.returncode, p.stdout, p.stderr

    code, out, err_ = cairn("r", "td", "--help")
    assert code == 0 and all(o in out for o in ("--storage-pool", "--diskless", "--migrate-from", "--default-storage-pool")), out
    code, out, err_ = cairn("r", "td", "--storage-pool", "DfltStorPool", dl, "tgc")
    assert code == 0, (out, err_)
    assert "Addition of disk to resource 'tgc'" in out, out
    r = view(c, "tgc")[dl]
    assert "DISKLESS" not in r["flags"] and r["props"]["StorPoolName"] == "DfltStorPool", r
    code, out, err_ = cairn("--no-color", "--no-utf8", "r", "l", "-r", "tgc", "-n", dl)
    assert code == 0 and "Unknown, Adding Disk" in out, out
    code, out, err_ = cairn("resource", "toggle-disk", "--diskless", dl, "tgc")
    assert code == 0, (out, err_)
    assert "DISKLESS" in view(c, "tgc")[dl]["flags"]
    code, out, err_ = cairn("r", "td", "-d", "--storage-pool", "x", dl, "tgc")
    assert code != 0 and "cannot be used with" in err_, (out, err_)
    assert cairn("r", "td", "-d", diskful[0], "tgc")[0] == 0
    code, out, err_ = cairn("r", "td", "-d", diskful[1], "tgc")
    assert code == 10 and "Cannot remove the disk from the only online resource with a disk" in err_, (out, err_)
    code, out, err_ = cairn("r", "td", "--migrate-from", "n9", dl, "tgc")
    assert code == 10, (out, err_)
    code, out, err_ = cairn("r", "td", "--migrate-from", diskful[1], dl, "tgc")
    assert code == 0, (out, err_)
    assert view(c, "tgc")[dl]["props"]["MigrateFrom"] == diskful[1]
    ok(c.lin.resource_dfn_delete("tgc"))
