"""Snapshots on LVM_THIN in a VM: take (one and several at once), restore
into a new resource definition, roll back in place, delete; the data is
checked byte for byte."""

import linstor

from conftest import ok, req, sha, wait_for

MIB = 1024


def fill(c, dev):
    rc, out = c.vm.sh(f"dd if=/dev/urandom of={dev} bs=1M count=8 status=none && sync")
    assert rc == 0, out
    return sha(c, dev)


def lvs(c):
    rc, out = c.vm.sh("lvs --noheadings -o lv_name linstor_thin")
    assert rc == 0, out
    return sorted(out.split())


def successful(c, rd, snap):
    status, _, body = req(c, "GET", f"/v1/resource-definitions/{rd}/snapshots/{snap}")
    return status == 200 and "SUCCESSFUL" in body["flags"]


def test_snapshot_restore_rollback_and_delete(vm_cluster):
    c = vm_cluster
    for kind, dev, name, sp in (("LVM_THIN", "/dev/vda", "thin", "lvmthin"), ("LVM", "/dev/vdb", "thick", "lvm")):
        status, _, body = req(c, "POST", "/v1/physical-storage/vm1", {
            "provider_kind": kind, "device_paths": [dev], "pool_name": name, "with_storage_pool": {"name": sp}})
        assert status == 201, body
    ok(c.lin.resource_dfn_create("src"))
    ok(c.lin.volume_dfn_create("src", 32 * MIB, storage_pool="lvmthin"))
    ok(c.lin.resource_create([linstor.ResourceData("vm1", "src", storage_pool="lvmthin")]))
    src = "/dev/linstor_thin/src_00000"
    a = fill(c, src)

    # Take a snapshot; clients poll until SUCCESSFUL.
    status, _, body = req(c, "POST", "/v1/resource-definitions/src/snapshots", {"name": "s1"})
    assert status == 201, body
    wait_for("s1 successful", lambda: successful(c, "src", "s1"))
    assert "src_00000_s1" in lvs(c)
    status, _, view = req(c, "GET", "/v1/view/snapshots")
    assert [(s["resource_name"], s["name"], s["snapshots"][0]["node_name"]) for s in view] == [("src", "s1", "vm1")]
    assert view[0]["volume_definitions"] == [{"volume_number": 0, "size_kib": 32 * MIB}]
    b = fill(c, src)
    assert b != a

    # Restore into a new resource definition: the data of the snapshot.
    ok(c.lin.resource_dfn_create("copy"))
    status, _, body = req(c, "POST", "/v1/resource-definitions/src/snapshot-restore-volume-definition/s1", {"to_resource": "copy"})
    assert status == 200, body
    status, _, body = req(c, "POST", "/v1/resource-definitions/src/snapshot-restore-resource/s1", {"to_resource": "copy"})
    assert status == 200, body
    status, _, rv = req(c, "GET", "/v1/view/resources?resources=copy")
    assert rv[0]["volumes"][0]["device_path"] == "/dev/linstor_thin/copy_00000", rv
    assert sha(c, "/dev/linstor_thin/copy_00000") == a
    assert sha(c, src) == b, "the origin is untouched"

    # Roll the origin back.
    status, _, body = req(c, "POST", "/v1/resource-definitions/src/snapshot-rollback/s1", {})
    assert status == 200, body
    wait_for("rolled back", lambda: sha(c, src) == a)
    fill(c, src)  # still a normal writable volume

    # Several at once.
    status, _, body = req(c, "POST", "/v1/actions/snapshot/multi",
                          {"snapshots": [{"resource_name": "src", "name": "m1"}, {"resource_name": "copy", "name": "m1"}]})
    assert status == 201, body
    wait_for("m1 successful", lambda: successful(c, "src", "m1") and successful(c, "copy", "m1"))

    # Thick LVM cannot take snapshots; a definition with snapshots stays.
    ok(c.lin.resource_dfn_create("fat"))
    ok(c.lin.volume_dfn_create("fat", 8 * MIB, storage_pool="lvm"))
    ok(c.lin.resource_create([linstor.ResourceData("vm1", "fat", storage_pool="lvm")]))
    status, _, body = req(c, "POST", "/v1/resource-definitions/fat/snapshots", {"name": "x1"})
    assert status == 500 and body[0]["ret_code"] & 0x7FFF == 994, body
    status, _, body = req(c, "DELETE", "/v1/resource-definitions/src")
    assert status == 500 and "snapshots" in body[0]["message"], body

    # Delete snapshots, then everything: only the thin pool is left.
    for rd, snap in (("src", "s1"), ("src", "m1"), ("copy", "m1")):
        status, _, body = req(c, "DELETE", f"/v1/resource-definitions/{rd}/snapshots/{snap}")
        assert status == 200, body
    wait_for("snapshots gone", lambda: lvs(c) == ["copy_00000", "src_00000", "thin"])
    for rd in ("src", "copy", "fat"):
        ok(c.lin.resource_dfn_delete(rd))
    wait_for("volumes gone", lambda: lvs(c) == ["thin"])
