"""DRBD over ZFS: two VMs of the ZFS image, which carries LINBIT's DRBD 9
modules too (built by build-drbd.sh, cached), each with a ZFS_THIN pool on
a real zpool, one controller on the host. A two-replica DRBD,STORAGE
resource on zvols through python-linstor: UpToDate on both, data written on
one node read back on the other after the primary moved; snapshots (a zfs
snapshot of the zvol on each node), restored into a new definition (ZFS clones
under DRBD) and rolled back to an older snapshot (the zvol renamed aside, a
clone in its place) without a resync. Needs the DRBD source and Debian's
archive (or the cached ZFS build); skipped with one line otherwise."""

import os
import tempfile
import types

import linstor
import pytest

from conftest import CLIENT_TIMEOUT, PLAIN_LUKS, Controller, Vm, _teardown, bridge, ok, private_network, wait_for

from test_vm_drbd import disk_states, resync_received, synced, view, whole_sha  # skips without the DRBD source
from test_vm_zfs_ship import sh

MIB = 1024  # KiB
TAPS = {"zd1": 9, "zd2": 10}


def zvols(vm):
    """The zvols and snapshots of the pool's dataset."""
    return sorted(sh(vm, "zfs list -H -r -t volume,snapshot -o name tank/thin").split())


def wait_synced(c, rsc):
    wait_for(f"{rsc} UpToDate in REST", lambda: set(disk_states(c, rsc).values()) == {"UpToDate"}, timeout=180)
    for n, vm in c.vms.items():
        wait_for(f"{n}'s {rsc} connected and in sync", lambda: synced(vm, rsc, 1), timeout=120)


@pytest.fixture(scope="module")
def zfs_drbd(zfs_drbd_image):
    """A controller and VMs zd1, zd2 (10.99.0.9-10, booted at once) with
    DRBD 9 and OpenZFS loaded, a ZFS_THIN pool `zthin` on a zpool on each."""
    private_network()
    bridge(TAPS.values())
    root = tempfile.mkdtemp(prefix="cairn-zfsdrbd-")
    ctrl, lin, vms = Controller(root, extra_args=PLAIN_LUKS), None, {}
    try:
        ctrl.start()
        lin = linstor.Linstor(ctrl.url, timeout=CLIENT_TIMEOUT)
        lin.connect()
        for n, tap in TAPS.items():
            vms[n] = Vm(n, None, os.path.join(root, "cluster-secret"), disks=("1G",), mem=768, image=zfs_drbd_image,
                        tap=tap, zfs=True, drbd=True).launch()
        for n, vm in vms.items():
            vm.wait_ready()
            assert "CAIRN-VM-NO-ZFS" not in vm.log() and "CAIRN-VM-NO-DRBD" not in vm.log(), vm.log()[-3000:]
            assert sh(vm, "cat /sys/module/drbd/version").startswith("9."), n
            ok(lin.node_create(n, "SATELLITE", vm.ip))
            sh(vm, "zpool create -o ashift=12 -O mountpoint=none -O compression=off tank /dev/vda && zfs create tank/thin")
        wait_for("satellites online", lambda: all(x.connection_status == "ONLINE" for x in lin.node_list_raise().nodes), timeout=60)
        for n in TAPS:
            assert "DRBD" in lin.node_list_raise(filter_by_nodes=[n]).nodes[0].resource_layers
            ok(lin.storage_pool_create(n, "zthin", "ZFS_THIN", "tank/thin"))
        yield types.SimpleNamespace(ctrl=ctrl, lin=lin, vms=vms)
    finally:
        _teardown(lin, ctrl, vms.values(), root)


def test_drbd_over_zfs_thin_replicates_snapshots_restores_and_rolls_back(zfs_drbd):
    c = zfs_drbd
    zd1, zd2 = c.vms["zd1"], c.vms["zd2"]
    ok(c.lin.resource_dfn_create("zr"))
    ok(c.lin.volume_dfn_create("zr", 32 * MIB))
    ok(c.lin.resource_create([linstor.ResourceData(n, "zr", storage_pool="zthin") for n in TAPS]))
    wait_synced(c, "zr")
    for n, vm in c.vms.items():
        backing = sh(vm, "drbdsetup show zr")
        assert "/dev/zvol/tank/thin/zr_00000" in backing, (n, backing)
    dev = view(c, "zr")["zd1"]["volumes"][0]["device_path"]
    assert dev.startswith("/dev/drbd"), dev

    # Written on zd1 (primary while it writes), read on zd2; then written
    # on zd2 (the primary moves there), read on zd1.
    sh(zd1, f"dd if=/dev/urandom of={dev} bs=1M seek=1 count=8 oflag=direct conv=fsync status=none")
    one = whole_sha(zd1, dev)
    assert whole_sha(zd2, dev) == one
    sh(zd2, f"dd if=/dev/urandom of={dev} bs=1M seek=12 count=4 oflag=direct conv=fsync status=none")
    two = whole_sha(zd2, dev)
    assert two != one and whole_sha(zd1, dev) == two
    wait_for("no replica in use", lambda: not any(r["state"].get("in_use") for r in view(c, "zr").values()), timeout=30)

    # Snapshots on both nodes: zfs snapshots of each zvol, holding DRBD's
    # metadata with the data.
    ok(c.lin.snapshot_create([], "zr", "s1"))
    sh(zd1, f"dd if=/dev/urandom of={dev} bs=1M seek=20 count=2 oflag=direct conv=fsync status=none")
    three = whole_sha(zd1, dev)
    ok(c.lin.snapshot_create([], "zr", "s2"))
    for n, vm in c.vms.items():
        names = zvols(vm)
        assert {"tank/thin/zr_00000@s1", "tank/thin/zr_00000@s2"} <= set(names), (n, names)
    status, _, snap = c.ctrl.request("GET", "/v1/resource-definitions/zr/snapshots/s1")
    assert status == 200 and "SUCCESSFUL" in snap["flags"], snap

    # Restored into a new definition on both nodes: ZFS clones of s1 under
    # DRBD, UpToDate and connected, s1's data on both.
    ok(c.lin.resource_dfn_create("zrr"))
    ok(c.lin.snapshot_volume_definition_restore("zr", "s1", "zrr"))
    ok(c.lin.snapshot_resource_restore(list(TAPS), "zr", "s1", "zrr"))
    wait_synced(c, "zrr")
    rdev = view(c, "zrr")["zd1"]["volumes"][0]["device_path"]
    for n, vm in c.vms.items():
        origin = sh(vm, "zfs get -H -o value origin tank/thin/zrr_00000").strip()
        assert origin == "tank/thin/zr_00000@s1", (n, origin)
        assert whole_sha(vm, rdev) == two, n

    # Back to the older snapshot s1 while s2 exists: `zfs rollback` would
    # destroy s2, so each zvol goes aside with both snapshots and a clone
    # of s1 takes its place; the replicas come back in sync without a
    # resync, and both snapshots stay.
    sh(zd2, f"dd if=/dev/urandom of={dev} bs=1M seek=2 count=4 oflag=direct conv=fsync status=none")
    assert whole_sha(zd2, dev) not in (two, three)
    wait_for("no replica in use", lambda: not any(r["state"].get("in_use") for r in view(c, "zr").values()), timeout=30)
    ok(c.lin.snapshot_rollback("zr", "s1"))
    wait_synced(c, "zr")
    for n, vm in c.vms.items():
        assert whole_sha(vm, dev) == two, n
        assert resync_received(vm, "zr") == 0, n
        origin = sh(vm, "zfs get -H -o value origin tank/thin/zr_00000").strip()
        assert origin.endswith("@s1") and "_deleted_zr_00000_" in origin, (n, origin)
    assert sorted(s.snapshot_name for s in c.lin.snapshot_dfn_list_raise(filter_by_resources=["zr"]).snapshots) == ["s1", "s2"]

    # Deleting everything leaves nothing on the pools (the clones go first,
    # then the snapshots they came from, then the volumes aside).
    ok(c.lin.resource_dfn_delete("zrr"))
    for s in ("s1", "s2"):
        ok(c.lin.snapshot_delete("zr", s))
    ok(c.lin.resource_dfn_delete("zr"))
    for n, vm in c.vms.items():
        wait_for(f"{n}'s pool empty", lambda: zvols(vm) == [], timeout=120)
        assert "zr" not in sh(vm, "drbdsetup status"), n
