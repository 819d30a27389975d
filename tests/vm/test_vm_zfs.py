"""ZFS and ZFS_THIN end to end on a real OpenZFS (Debian's zfs-dkms built
for the VM's kernel, Debian's zfsutils-linux): one VM with a zpool on its
disk, pools `zfs` (dataset tank/thick) and `zfsthin` (tank/thin), driven
through python-linstor. Volumes are created, grown and deleted; snapshots
are taken, restored as ZFS clones, rolled back and deleted, the data
compared by sha256; a snapshot deleted while a clone of it lives is renamed
aside as LINSTOR does, and goes with that clone; a resource deleted while
snapshots of it exist goes aside with them (restorable, its definition
refused until they go); a rollback to an older snapshot keeps the newer
ones."""

import linstor
import pytest

from conftest import ok, req, single_vm, wait_for

MIB = 1024


@pytest.fixture(scope="module")
def zfs(zfs_image):
    for c in single_vm("zvm", "127.0.10.53", disks=("1G",), mem=768, image=zfs_image, zfs=True):
        assert "CAIRN-VM-NO-ZFS" not in c.vm.log(), c.vm.log()[-3000:]
        # Whole-disk `zpool create` waits for udev to see the partition.
        sh(c, "zpool create -o ashift=12 -O mountpoint=none -O compression=off tank /dev/vda && "
              "zfs create tank/thick && zfs create tank/thin")
        ok(c.lin.storage_pool_create("zvm", "zfs", "ZFS", "tank/thick"))
        ok(c.lin.storage_pool_create("zvm", "zfsthin", "ZFS_THIN", "tank/thin"))
        yield c


def sh(c, cmd):
    rc, out = c.vm.sh(cmd)
    assert rc == 0, f"{cmd}: {out}"
    return out


def prop(c, ds, name):
    return sh(c, f"zfs get -H -p -o value {name} {ds}").strip()


def datasets(c, under):
    """Volumes and snapshots under a dataset, as `zfs list` names them."""
    return sorted(sh(c, f"zfs list -H -r -t volume,snapshot -o name {under}").split())


def sha(c, dev):
    """sha256 of the first 8 MiB, read past the page cache (a rollback
    changes the zvol under it)."""
    out = sh(c, f"set -o pipefail; udevadm settle -t 20; blockdev --flushbufs {dev} && "
                f"dd if={dev} bs=1M count=8 iflag=direct status=none | sha256sum")
    return out.split()[0]


def fill(c, dev):
    sh(c, f"dd if=/dev/urandom of={dev} bs=1M count=8 oflag=direct conv=fsync status=none")
    return sha(c, dev)


def pool(c, name):
    status, _, body = req(c, "GET", f"/v1/nodes/zvm/storage-pools/{name}")
    assert status == 200, body
    return body


def capacity_matches(c, name, ds):
    """The pool's figures are the zpool's size and the dataset's
    `available`, KiB."""
    total = int(sh(c, "zpool get -H -p -o value size tank").strip()) // 1024
    free = int(prop(c, ds, "available")) // 1024
    p = pool(c, name)
    return p.get("total_capacity") == total and p.get("free_capacity") == free


def successful(c, rd, snap):
    status, _, body = req(c, "GET", f"/v1/resource-definitions/{rd}/snapshots/{snap}")
    return status == 200 and "SUCCESSFUL" in body["flags"]


def test_thick_and_sparse_volumes_grow_delete_and_capacity(zfs):
    c = zfs
    assert pool(c, "zfs")["provider_kind"] == "ZFS" and pool(c, "zfsthin")["provider_kind"] == "ZFS_THIN"
    wait_for("zfs capacity", lambda: capacity_matches(c, "zfs", "tank/thick"))
    wait_for("zfsthin capacity", lambda: capacity_matches(c, "zfsthin", "tank/thin"))
    free_before = int(prop(c, "tank/thick", "available"))
    for rd, sp in (("fat", "zfs"), ("lean", "zfsthin")):
        ok(c.lin.resource_dfn_create(rd))
        ok(c.lin.volume_dfn_create(rd, 64 * MIB, storage_pool=sp))
        ok(c.lin.resource_create([linstor.ResourceData("zvm", rd, storage_pool=sp)]))
    vols = {v.name: v for v in c.lin.volume_list_raise().resources}
    assert vols["fat"].volumes[0].device_path == "/dev/zvol/tank/thick/fat_00000"
    assert vols["lean"].volumes[0].device_path == "/dev/zvol/tank/thin/lean_00000"
    # Thick reserves the whole volume (and its metadata); sparse nothing.
    assert int(prop(c, "tank/thick/fat_00000", "volsize")) == 64 * 1024 * 1024
    assert int(prop(c, "tank/thick/fat_00000", "refreservation")) >= 64 * 1024 * 1024
    assert int(prop(c, "tank/thin/lean_00000", "volsize")) == 64 * 1024 * 1024
    assert int(prop(c, "tank/thin/lean_00000", "refreservation")) == 0
    assert int(prop(c, "tank/thick", "available")) < free_before - 64 * 1024 * 1024
    sh(c, "test -b /dev/zvol/tank/thick/fat_00000 && test -b /dev/zvol/tank/thin/lean_00000")
    a = fill(c, "/dev/zvol/tank/thick/fat_00000")
    wait_for("zfs capacity after create", lambda: capacity_matches(c, "zfs", "tank/thick"))
    wait_for("zfsthin capacity after create", lambda: capacity_matches(c, "zfsthin", "tank/thin"))

    # Grow both; the data stays.
    ok(c.lin.volume_dfn_modify("fat", 0, size=96 * MIB))
    ok(c.lin.volume_dfn_modify("lean", 0, size=128 * MIB))
    assert int(prop(c, "tank/thick/fat_00000", "volsize")) == 96 * 1024 * 1024
    assert int(prop(c, "tank/thin/lean_00000", "volsize")) == 128 * 1024 * 1024
    wait_for("grown device", lambda: sh(c, "blockdev --getsize64 /dev/zvol/tank/thick/fat_00000").strip() == str(96 * 1024 * 1024))
    assert sha(c, "/dev/zvol/tank/thick/fat_00000") == a

    # Too big for the pool: LINSTOR's error, nothing made.
    ok(c.lin.resource_dfn_create("huge"))
    ok(c.lin.volume_dfn_create("huge", 4 * 1024 * MIB, storage_pool="zfs"))
    replies = c.lin.resource_create([linstor.ResourceData("zvm", "huge", storage_pool="zfs")])
    assert any(r.is_error() or r.is_warning() for r in replies), [str(r) for r in replies]
    assert "tank/thick/huge_00000" not in datasets(c, "tank/thick")
    ok(c.lin.resource_dfn_delete("huge"))

    for rd in ("fat", "lean"):
        ok(c.lin.resource_dfn_delete(rd))
    wait_for("volumes gone", lambda: datasets(c, "tank") == [])
    wait_for("zfs capacity after delete", lambda: capacity_matches(c, "zfs", "tank/thick"))
    # ZFS frees in the background and keeps some metadata: within 1 MiB.
    wait_for("space back", lambda: int(prop(c, "tank/thick", "available")) >= free_before - 1024 * 1024)


@pytest.mark.parametrize("sp,ds", [("zfs", "tank/thick"), ("zfsthin", "tank/thin")])
def test_snapshots_restore_rollback_and_rename_aside(zfs, sp, ds):
    c = zfs
    src, copy = f"src{sp}", f"copy{sp}"
    ok(c.lin.resource_dfn_create(src))
    ok(c.lin.volume_dfn_create(src, 32 * MIB, storage_pool=sp))
    ok(c.lin.resource_create([linstor.ResourceData("zvm", src, storage_pool=sp)]))
    dev = f"/dev/zvol/{ds}/{src}_00000"
    a = fill(c, dev)

    status, _, body = req(c, "POST", f"/v1/resource-definitions/{src}/snapshots", {"name": "s1"})
    assert status == 201, body
    wait_for("s1 successful", lambda: successful(c, src, "s1"))
    assert f"{ds}/{src}_00000@s1" in datasets(c, ds)
    status, _, view = req(c, "GET", f"/v1/view/snapshots?resources={src}")
    assert [(s["name"], s["snapshots"][0]["node_name"]) for s in view] == [("s1", "zvm")], view
    b = fill(c, dev)
    assert b != a

    # Rollback in place: the data of s1 again.
    status, _, body = req(c, "POST", f"/v1/resource-definitions/{src}/snapshot-rollback/s1", {})
    assert status == 200, body
    wait_for("rolled back", lambda: sha(c, dev) == a)
    assert prop(c, f"{ds}/{src}_00000", "cairn:rb") not in ("", "-")
    b = fill(c, dev)  # writable again

    # Restore into a new definition: a ZFS clone of the snapshot.
    ok(c.lin.resource_dfn_create(copy))
    status, _, body = req(c, "POST", f"/v1/resource-definitions/{src}/snapshot-restore-volume-definition/s1", {"to_resource": copy})
    assert status == 200, body
    status, _, body = req(c, "POST", f"/v1/resource-definitions/{src}/snapshot-restore-resource/s1", {"to_resource": copy})
    assert status == 200, body
    assert prop(c, f"{ds}/{copy}_00000", "origin") == f"{ds}/{src}_00000@s1"
    assert sha(c, f"/dev/zvol/{ds}/{copy}_00000") == a
    assert sha(c, dev) == b, "the origin is untouched"

    # The snapshot goes while its clone lives: renamed aside, then gone
    # with the clone.
    status, _, body = req(c, "DELETE", f"/v1/resource-definitions/{src}/snapshots/s1")
    assert status == 200, body
    wait_for("s1 aside", lambda: f"{ds}/{src}_00000@_deleted_s1_0" in datasets(c, ds))
    assert f"{ds}/{src}_00000@s1" not in datasets(c, ds)
    assert sha(c, f"/dev/zvol/{ds}/{copy}_00000") == a
    ok(c.lin.resource_dfn_delete(copy))
    wait_for("clone and its snapshot gone", lambda: datasets(c, ds) == [f"{ds}/{src}_00000"])

    # LINSTOR's ZFS delete: the resource goes while its snapshot stays;
    # the zvol is renamed aside with it, the definition cannot go yet.
    status, _, body = req(c, "POST", f"/v1/resource-definitions/{src}/snapshots", {"name": "s2"})
    assert status == 201, body
    wait_for("s2 successful", lambda: successful(c, src, "s2"))
    ok(c.lin.resource_delete("zvm", src))
    aside = wait_for("zvol aside", lambda: next((d for d in datasets(c, ds) if d.startswith(f"{ds}/_deleted_{src}_00000_") and "@" not in d), None))
    assert datasets(c, ds) == [aside, f"{aside}@s2"]
    assert c.lin.resource_list_raise(filter_by_resources=[src]).resources == []
    assert successful(c, src, "s2"), "the snapshot is still there"
    replies = c.lin.resource_dfn_delete(src)
    assert [r.ret_code & 0xFFFF for r in replies if r.is_error()] == [514], [str(r) for r in replies]  # FAIL_EXISTS_SNAPSHOT_DFN
    assert "because it has snapshots" in replies[0].message
    # Restored from the snapshot of the deleted resource: its data.
    ok(c.lin.resource_dfn_create(copy))
    for what in ("snapshot-restore-volume-definition", "snapshot-restore-resource"):
        status, _, body = req(c, "POST", f"/v1/resource-definitions/{src}/{what}/s2", {"to_resource": copy})
        assert status == 200, body
    assert prop(c, f"{ds}/{copy}_00000", "origin") == f"{aside}@s2"
    assert sha(c, f"/dev/zvol/{ds}/{copy}_00000") == b
    # The snapshot goes (aside while the copy lives), then the copy takes
    # it and the zvol aside along; then the definition can go.
    status, _, body = req(c, "DELETE", f"/v1/resource-definitions/{src}/snapshots/s2")
    assert status == 200, body
    wait_for("s2 aside", lambda: f"{aside}@_deleted_s2_0" in datasets(c, ds))
    ok(c.lin.resource_dfn_delete(src))
    ok(c.lin.resource_dfn_delete(copy))
    wait_for("all gone", lambda: datasets(c, ds) == [])


def snapshot_names(c, rd):
    status, _, body = req(c, "GET", f"/v1/resource-definitions/{rd}/snapshots")
    assert status == 200, body
    return sorted(s["name"] for s in body)


def zvol_with_snapshots(c, rd, sp, ds):
    """A 32 MiB volume of `rd` in pool `sp` (dataset `ds`) with snapshots
    s1 and s2 of new data each, then new data again: (zvol, device, the
    data of each snapshot, the data now)."""
    ok(c.lin.resource_dfn_create(rd))
    ok(c.lin.volume_dfn_create(rd, 32 * MIB, storage_pool=sp))
    ok(c.lin.resource_create([linstor.ResourceData("zvm", rd, storage_pool=sp)]))
    zvol = f"{ds}/{rd}_00000"
    dev = f"/dev/zvol/{zvol}"
    data = {}
    for snap in ("s1", "s2"):
        data[snap] = fill(c, dev)
        status, _, body = req(c, "POST", f"/v1/resource-definitions/{rd}/snapshots", {"name": snap})
        assert status == 201, body
        wait_for(f"{snap} successful", lambda: successful(c, rd, snap))
    return zvol, dev, data, fill(c, dev)


@pytest.mark.parametrize("sp,ds", [("zfs", "tank/thick"), ("zfsthin", "tank/thin")])
def test_rollback_to_an_older_snapshot_keeps_the_newer_ones(zfs, sp, ds):
    """`zfs rollback` refuses past newer snapshots (`-r` would destroy
    them); LINSTOR's default (DYNAMIC) then rolls back by restoring: the
    zvol goes aside with every snapshot and a clone of the older one takes
    its place, so the snapshot list stays what is on the pool."""
    c = zfs
    rd = f"old{sp}"
    zvol, dev, data, latest = zvol_with_snapshots(c, rd, sp, ds)
    assert len({latest, *data.values()}) == 3

    status, _, body = req(c, "POST", f"/v1/resource-definitions/{rd}/snapshot-rollback/s1", {})
    assert status == 200, body
    wait_for("rolled back to s1", lambda: sha(c, dev) == data["s1"])
    aside = prop(c, zvol, "origin").split("@")[0]
    assert aside.startswith(f"{ds}/_deleted_{rd}_00000_"), aside
    assert datasets(c, ds) == sorted([zvol, aside, f"{aside}@s1", f"{aside}@s2"])
    assert snapshot_names(c, rd) == ["s1", "s2"] and successful(c, rd, "s1") and successful(c, rd, "s2")
    # A thick zvol stays thick: the clone in its place reserves its size.
    reserved = int(prop(c, zvol, "refreservation"))
    assert reserved >= 32 * MIB * 1024 if sp == "zfs" else reserved == 0, reserved
    # Rolled back once: a later pass leaves the new data alone.
    after = fill(c, dev)
    ok(c.lin.resource_dfn_modify(rd, {"Aux/touch": "1"}))
    assert sha(c, dev) == after

    # Forward to the newer snapshot, which lives on the zvol aside.
    status, _, body = req(c, "POST", f"/v1/resource-definitions/{rd}/snapshot-rollback/s2", {})
    assert status == 200, body
    wait_for("rolled back to s2", lambda: sha(c, dev) == data["s2"])
    assert prop(c, zvol, "origin") == f"{aside}@s2"
    assert snapshot_names(c, rd) == ["s1", "s2"]
    assert (int(prop(c, zvol, "refreservation")) > 0) == (sp == "zfs")

    # Deleting the snapshots and the definition leaves nothing behind.
    for snap in ("s1", "s2"):
        status, _, body = req(c, "DELETE", f"/v1/resource-definitions/{rd}/snapshots/{snap}")
        assert status == 200, body
    wait_for("s1 gone, s2 aside under its clone", lambda: datasets(c, ds) == sorted([zvol, aside, f"{aside}@_deleted_s2_0"]))
    assert snapshot_names(c, rd) == []
    ok(c.lin.resource_dfn_delete(rd))
    wait_for("all gone", lambda: datasets(c, ds) == [])


def errors(replies):
    """(code, message) of the error entries of a reply."""
    return [(r.ret_code & 0xFFFF, r.message) for r in replies if r.is_error()]


def test_linstors_rollback_and_delete_strategies(zfs):
    """LINSTOR's `StorDriver/Zfs/RollbackStrategy` 'Rollback': a real `zfs
    rollback` to the newest snapshot (the zvol stays, no clone, both
    snapshots stay on it), refused as LINSTOR refuses it for an older one
    (FAIL_DEPENDEND_BACKUP) and, after a rollback by clone (the client's
    'clone' for one call), for any snapshot on the zvol renamed aside.
    `StorDriver/Zfs/DeleteStrategy` 'Delete': the resource cannot go while
    snapshots exist; without them its zvol is destroyed."""
    c = zfs
    ds, rd = "tank/thin", "strat"
    zvol, dev, data, latest = zvol_with_snapshots(c, rd, "zfsthin", ds)
    ok(c.lin.resource_dfn_modify(rd, {"StorDriver/Zfs/RollbackStrategy": "Rollback"}))

    # Not the newest snapshot: refused, nothing touched.
    got = errors(c.lin.snapshot_rollback(rd, "s1"))
    assert got == [(977, "'s1' is not the most recent snapshot. Cannot 'zfs rollback ...' to the given snapshot!")], got
    assert sha(c, dev) == latest
    # The newest: `zfs rollback` on the zvol itself.
    replies = c.lin.snapshot_rollback(rd, "s2")
    assert not errors(replies), [str(r) for r in replies]
    wait_for("rolled back to s2", lambda: sha(c, dev) == data["s2"])
    assert prop(c, zvol, "origin") == "-", "rolled back in place, not cloned"
    assert datasets(c, ds) == [zvol, f"{zvol}@s1", f"{zvol}@s2"]
    assert snapshot_names(c, rd) == ["s1", "s2"]
    assert prop(c, zvol, "cairn:rb") not in ("", "-")
    after = fill(c, dev)
    ok(c.lin.resource_dfn_modify(rd, {"Aux/touch": "1"}))
    assert sha(c, dev) == after, "rolled back once"

    # The client's 'clone' for this call: the zvol goes aside with both
    # snapshots, a clone of s1 takes its place.
    replies = c.lin.snapshot_rollback(rd, "s1", zfs_rollback_strategy="clone")
    assert not errors(replies), [str(r) for r in replies]
    wait_for("rolled back to s1", lambda: sha(c, dev) == data["s1"])
    aside = prop(c, zvol, "origin").split("@")[0]
    assert aside.startswith(f"{ds}/_deleted_{rd}_00000_"), aside
    # s2 is on the zvol aside now: 'Rollback' cannot reach it.
    got = errors(c.lin.snapshot_rollback(rd, "s2"))
    assert len(got) == 1 and got[0][0] == 977 and "already rolled back using 'Clone' strategy" in got[0][1], got

    # 'Delete': no delete while the definition has snapshots.
    ok(c.lin.resource_dfn_modify(rd, {"StorDriver/Zfs/DeleteStrategy": "Delete"}))
    got = errors(c.lin.resource_delete("zvm", rd))
    assert got == [(516, f"Cannot use DELETE strategy since the resource definition '{rd}' still has snapshots")], got
    assert zvol in datasets(c, ds)
    for snap in ("s1", "s2"):
        status, _, body = req(c, "DELETE", f"/v1/resource-definitions/{rd}/snapshots/{snap}")
        assert status == 200, body
    # s1 waits aside for its clone (the zvol); the resource can go now,
    # and takes them along.
    wait_for("snapshots gone", lambda: snapshot_names(c, rd) == [])
    ok(c.lin.resource_delete("zvm", rd))
    wait_for("all gone", lambda: datasets(c, ds) == [])
    ok(c.lin.resource_dfn_delete(rd))
